//! Changing a running VM's workload (`POST /v1/vms/{name}/workload`): the request, and the rule
//! a change must keep against the VM it is for.
//!
//! The agent sends the new spec to the guest as a control line on the VM's metrics port and the
//! guest switches its running workload's parameters in place (protocol and switching rule:
//! `drover_guest::control`). The change is accepted (202) once checked and recorded in the VM's
//! configuration; the guest's reports say when it runs it (`VmView.workload_pending` turns
//! false, `workload_report.spec` names it).

use crate::names;
use crate::vm::VmConfig;
use drover_guest::control::check_switch;
use drover_guest::fit::{check_fits, FitError};
use drover_guest::spec::{parse_workload, Workload};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The body of `POST /v1/vms/{name}/workload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadChange {
    /// The new workload spec.
    #[schemars(regex(pattern = names::WORKLOAD), description = change_rule())]
    pub workload: String,
}

/// The schema's description of `workload`: the rules a change keeps against the VM (not
/// stated by the schema, since they compare the request with the VM), and their answer.
pub fn change_rule() -> String {
    "The new workload spec. It must be of the same kind as the VM's running workload (cpu \
     stays cpu, memtouch stays memtouch, disk stays disk, memtouch+disk stays memtouch+disk, \
     idle stays idle; only the parameters change: a cpu demand, a memtouch or disk rate or \
     pattern, a disk read share, a memtouch or disk working set that shrinks or stays; a \
     memtouch+disk workload's parts each by that rule), and \
     fit the VM's memory as VmConfig.workload must. A change that breaks these rules is \
     answered 409 (it conflicts with the VM's state), never 422."
        .to_string()
}

/// Why a change is refused for the VM it is for (409: the VM's state decides).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WorkloadChangeError {
    /// The spec does not fit the VM's memory: the guest's own rule, worded as for a new VM
    /// (`workload '<spec>': working set ... does not fit ...`).
    #[error(transparent)]
    DoesNotFit(#[from] FitError),
    /// The VM's stored spec does not parse (a configuration saved by an older agent).
    #[error("the VM's workload '{spec}': {reason}")]
    Stored { spec: String, reason: String },
    /// The running workload cannot become this one.
    #[error("VM '{vm}' runs '{running}': {reason}")]
    Switch {
        vm: String,
        running: String,
        reason: String,
    },
}

/// Checks that VM `config` may switch from its workload to `spec` (shape-checked already):
/// the fit rule of [`VmConfig::validate`] and the guest's switching rule.
///
/// # Errors
/// [`WorkloadChangeError`] naming the rule.
pub fn check_change(config: &VmConfig, spec: &str) -> Result<Workload, WorkloadChangeError> {
    let next = check_fits(spec, config.memory_bytes)?;
    let running = parse_workload(&config.workload).map_err(|e| WorkloadChangeError::Stored {
        spec: config.workload.clone(),
        reason: e.to_string(),
    })?;
    check_switch(&running, &next).map_err(|e| WorkloadChangeError::Switch {
        vm: config.name.clone(),
        running: config.workload.clone(),
        reason: e.to_string(),
    })?;
    Ok(next)
}

/// Whether two specs are the same workload (however spelled: `64M` and `64MiB`, defaults
/// omitted or not).
pub fn same_workload(a: &str, b: &str) -> bool {
    matches!((parse_workload(a), parse_workload(b)), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(workload: &str) -> VmConfig {
        VmConfig {
            name: "a".into(),
            vcpus: 1,
            memory_bytes: 256 << 20,
            workload: workload.into(),
            disk: None,
            disk_size_bytes: None,
            disk_base: None,
            nic: None,
        }
    }

    #[test]
    fn a_change_keeps_the_kind_the_memory_and_never_grows_the_set() {
        assert!(check_change(&vm("cpu:demand=10"), "cpu:demand=90").is_ok());
        assert!(check_change(&vm("memtouch:wss=64M"), "memtouch:wss=32M,rate=100").is_ok());
        assert!(check_change(&vm("idle"), "idle").is_ok());
        assert!(check_change(&vm("disk:wss=16M,rate=5"), "disk:wss=8M,rate=50,read=0").is_ok());
        let e = check_change(&vm("disk:wss=16M,rate=5"), "disk:wss=32M,rate=5").unwrap_err();
        assert!(matches!(e, WorkloadChangeError::Switch { .. }), "{e}");
        let e = check_change(&vm("cpu:demand=10"), "memtouch:wss=8M").unwrap_err();
        assert_eq!(
            e.to_string(),
            "VM 'a' runs 'cpu:demand=10': a running cpu workload cannot become memtouch: only \
             its parameters may change"
        );
        // Both at once: each part by its own rule, the part named; the kind stays.
        let mixed = vm("memtouch:wss=64M,rate=2000+disk:wss=16M,rate=200");
        assert!(check_change(&mixed, "memtouch:wss=32M,rate=10+disk:wss=8M,rate=5,read=0").is_ok());
        let e = check_change(&mixed, "memtouch:wss=64M,rate=1+disk:wss=32M,rate=1").unwrap_err();
        assert!(
            e.to_string().contains("the disk working set may shrink"),
            "{e}"
        );
        let e = check_change(&mixed, "memtouch:wss=64M,rate=1").unwrap_err();
        assert!(
            e.to_string()
                .contains("a running memtouch+disk workload cannot become memtouch"),
            "{e}"
        );
        let e = check_change(&mixed, "memtouch:wss=200M,rate=1+disk:wss=1M,rate=1").unwrap_err();
        assert!(matches!(e, WorkloadChangeError::DoesNotFit(_)), "{e}");
        let e = check_change(&vm("memtouch:wss=64M"), "memtouch:wss=80M").unwrap_err();
        assert!(matches!(e, WorkloadChangeError::Switch { .. }), "{e}");
        // The fit rule, worded as for a new VM.
        let e = check_change(&vm("memtouch:wss=64M"), "memtouch:wss=200M").unwrap_err();
        assert_eq!(
            e.to_string(),
            "workload 'memtouch:wss=200M': working set 200 MiB does not fit a 256 MiB guest \
             (the guest itself needs about 96 MiB)"
        );
    }

    #[test]
    fn sameness_ignores_spelling() {
        assert!(same_workload(
            "memtouch:wss=64M",
            "memtouch:wss=64MiB,rate=max,pattern=random"
        ));
        assert!(!same_workload("cpu:demand=10", "cpu:demand=11"));
        assert!(!same_workload("bogus", "bogus"));
    }
}
