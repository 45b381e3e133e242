//! VMs on the wire: what a client asks for ([`VmConfig`], which is also what the agent stores
//! and what a migration's destination is started from) and what the agent reports.

use crate::names::{self, ShapeError};
use drover_core::wire;
use drover_guest::fit::{FitError, GUEST_OVERHEAD_BYTES};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most vCPUs a VM may have (the guest's own rule).
pub const MAX_VCPUS: u32 = drover_guest::fit::MAX_VCPUS;

/// Most memory a VM may have, bytes (the guest's own rule).
pub const MAX_MEMORY_BYTES: u64 = drover_guest::fit::MAX_GUEST_MEMORY_BYTES;

/// A VM's virtio-net NIC on its host's VM network (the agent's `--vm-net`): the client names
/// only the guest's address; the MAC and the host's tap device are derived from it
/// ([`NicConfig::mac`], [`NicConfig::tap`]), so a migration's destination, started from the same
/// configuration, gives the guest the same address and MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NicConfig {
    /// The guest's IPv4 address, inside the host's VM network (409 otherwise), set by the
    /// guest's init from the kernel command line.
    #[schemars(regex(pattern = names::GUEST_ADDRESS))]
    pub address: String,
}

impl NicConfig {
    /// The address's four octets (None when it is not an IPv4 address: `validate` refuses it).
    pub fn octets(&self) -> Option<[u8; 4]> {
        self.address
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .map(|a| a.octets())
    }

    /// The NIC's MAC: `02:44:` (locally administered, unicast; 0x44 for Drover) and the address's
    /// four octets, so it is unique wherever the address is.
    pub fn mac(&self) -> Option<String> {
        let [a, b, c, d] = self.octets()?;
        Some(format!("02:44:{a:02x}:{b:02x}:{c:02x}:{d:02x}"))
    }

    /// The host's tap device for it: `dvn` and the address in hex (11 characters, under
    /// Linux's 15).
    pub fn tap(&self) -> Option<String> {
        let [a, b, c, d] = self.octets()?;
        Some(format!("dvn{a:02x}{b:02x}{c:02x}{d:02x}"))
    }
}

fn one() -> u32 {
    1
}

fn idle() -> String {
    "idle".to_string()
}

/// What a VM is: the body of `POST /v1/vms`, the stored configuration, and what a migration
/// destination is started from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Unique on its host.
    #[schemars(regex(pattern = names::VM_NAME))]
    pub name: String,
    #[serde(default = "one", deserialize_with = "wire::whole")]
    #[schemars(range(min = 1, max = 64))]
    pub vcpus: u32,
    /// Guest memory, bytes (at least 128 MiB: the guest's kernel and initramfs need about 76 MiB to boot).
    #[serde(deserialize_with = "wire::whole")]
    #[schemars(range(min = 134_217_728u64, max = 1_099_511_627_776u64))]
    pub memory_bytes: u64,
    /// Guest workload spec; see [`workload_fit_rule`] for the rules the schema cannot state.
    #[serde(default = "idle")]
    #[schemars(regex(pattern = names::WORKLOAD), description = workload_fit_rule())]
    pub workload: String,
    /// A qcow2 disk image: a file name inside the agent's storage directory (never a path).
    /// Without `disk_size_bytes` and `disk_base` it is the operator's file, which must exist
    /// there (409 otherwise) and is never deleted by the agent. With either, it is the name of
    /// the disk the agent creates (default `<name>.qcow2`), which must not exist yet (409).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = names::DISK_NAME))]
    pub disk: Option<String>,
    /// Create the VM's disk, of this virtual size in bytes (1 MiB to 16 TiB; qcow2 rounds it
    /// up to whole 512-byte sectors): the agent creates it in its storage directory and owns
    /// it (deleting the VM deletes it). It must fit the directory's free space (409). With
    /// `disk_base`, at least the base's size (409); without, the base's size.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "wire::whole_opt"
    )]
    #[schemars(range(min = 1_048_576u64, max = 17_592_186_044_416u64))]
    pub disk_size_bytes: Option<u64>,
    /// Create the VM's disk as a qcow2 copy-on-write overlay of this image, a file name in the
    /// agent's storage directory (it must exist, be qcow2 and not be a VM's disk: 409). The
    /// agent owns the overlay, never the base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = names::DISK_NAME))]
    pub disk_base: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic: Option<NicConfig>,
}

/// The schema's description of `workload`, stating the one rule of a VM configuration that
/// JSON Schema cannot (it compares two fields), with the refusal it gets, word for word as
/// [`VmConfig::validate`] words it: clients and schema-driven testers can tell this 422 from a
/// rejection of schema-valid data.
pub fn workload_fit_rule() -> String {
    let overhead_mib = GUEST_OVERHEAD_BYTES >> 20;
    format!(
        "Guest workload spec. One rule is not in this schema, because it compares two fields: \
         a memtouch working set (alone or memtouch+disk's) plus {overhead_mib} MiB (what the \
         guest itself needs) must not exceed memory_bytes. A configuration that breaks it is \
         answered 422 with the error \"workload '<spec>': working set <W> MiB does not fit a \
         <M> MiB guest (the guest itself needs about {overhead_mib} MiB)\", W and M being the \
         working set and memory_bytes in whole MiB, <spec> the spec's first 80 characters \
         (all of a shorter one), and the field named by its path \
         (config.workload in an incoming request). No other schema-valid configuration is \
         refused with 422. A disk working set (alone or memtouch+disk's) must lie within the \
         VM's disk (the guest sees the qcow2's virtual size as a raw device): since that size \
         is the host's file's, not the request's, a VM without a disk \
         or with one too small for it is answered 409."
    )
}

/// Why a VM configuration is refused (all 422: well-formed but not acceptable). Every message
/// starts with the field's name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VmConfigError {
    /// A string of the wrong shape (name, disk, nic, a workload outside the agent's pattern).
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// A size rule, the guest's own ([`drover_guest::fit`]): vCPUs, memory, workload grammar,
    /// working set that fits.
    #[error(transparent)]
    Fit(#[from] FitError),
}

impl VmConfigError {
    /// The field at fault, as the API names it (`nic.mac`, `memory_bytes`).
    pub fn field(&self) -> &'static str {
        match self {
            VmConfigError::Shape(s) => s.field,
            VmConfigError::Fit(f) => f.setting().field(),
        }
    }
}

impl VmConfig {
    /// Checks every rule that does not depend on the host: shapes, ranges, and that the
    /// workload fits the guest (the guest's own rules, [`drover_guest::fit::check_vm`]).
    ///
    /// A workload goes through the guest's grammar first, whose refusal says which part is
    /// wrong, then through the agent's stricter pattern: the spec goes onto the kernel
    /// command line, so nothing outside the pattern ever passes.
    ///
    /// # Errors
    /// The first rule broken, naming the field.
    pub fn validate(&self) -> Result<(), VmConfigError> {
        names::VM_NAME_SHAPE.check(&self.name)?;
        // The guest's rule first (its refusals are the precise ones: `read` above 100, a set
        // that does not fit), then the wire's shape. But the guest reads size spellings the
        // wire does not (`4K`, `16MB`): a size it refuses for its spelling is refused by the
        // shape's rule, or the guest's list of units would offer what the shape then refuses.
        let shape = names::WORKLOAD_SHAPE.check(&self.workload);
        match drover_guest::fit::check_vm(self.vcpus, self.memory_bytes, &self.workload) {
            Err(FitError::Spec { error, .. }) if error.is_size_spelling() && shape.is_err() => {
                shape?;
            }
            fit => {
                fit?;
                shape?;
            }
        }
        if let Some(disk) = &self.disk {
            names::DISK_SHAPE.check(disk)?;
        }
        if let Some(size) = self.disk_size_bytes {
            drover_guest::fit::check_disk_size(size)?;
        }
        if let Some(base) = &self.disk_base {
            names::DISK_BASE_SHAPE.check(base)?;
        }
        if let Some(nic) = &self.nic {
            names::GUEST_ADDRESS_SHAPE.check(&nic.address)?;
        }
        Ok(())
    }

    /// Whether the agent creates the VM's disk (and owns it): `disk_size_bytes` or
    /// `disk_base` is given.
    pub fn creates_disk(&self) -> bool {
        self.disk_size_bytes.is_some() || self.disk_base.is_some()
    }

    /// The disk's file name in the storage directory: `disk`, or `<name>.qcow2` for a disk the
    /// agent creates unnamed; None without a disk.
    pub fn disk_file(&self) -> Option<String> {
        match &self.disk {
            Some(d) => Some(d.clone()),
            None if self.creates_disk() => Some(format!("{}.qcow2", self.name)),
            None => None,
        }
    }
}

/// Checks that the VM's workload fits its disk of `disk_bytes` virtual bytes (None: no disk),
/// the rule [`workload_fit_rule`] states (409: the size is the host's file's).
///
/// # Errors
/// [`FitError::NoDiskRoom`] (and [`FitError::Spec`] for a spec the guest does not read).
pub fn check_disk_workload(config: &VmConfig, disk_bytes: Option<u64>) -> Result<(), FitError> {
    let workload =
        drover_guest::spec::parse_workload(&config.workload).map_err(|error| FitError::Spec {
            spec: config.workload.clone(),
            error,
        })?;
    drover_guest::fit::check_disk_fits(&config.workload, &workload, disk_bytes)
}

/// A VM's state as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmStatus {
    /// QEMU runs and answers QMP.
    Running,
    /// An incoming migration destination.
    Incoming,
    /// The source of a migration whose post-copy has started: the guest runs on the
    /// destination, and this QEMU holds the rest of its memory until the migration ends (it can
    /// be neither deleted nor migrated meanwhile; `migration` names it).
    Moved,
    /// Its QEMU is gone (found dead at re-attach or since); never restarted behind your back.
    Lost,
}

/// The guest workload's latest report. For a workload of several parts (`memtouch+disk`) the
/// top-level figures are the whole workload's (ops, ops asked for and integrity errors summed
/// over its parts, its demand on its one thread) and `parts` has each part's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, JsonSchema)]
pub struct WorkloadView {
    /// Operations done since the workload started (cumulative; all parts').
    pub ops: u64,
    /// Operations per second over the last ~2 s of reports.
    pub ops_per_s: f64,
    /// Integrity errors the workload found (cumulative; a lost or stale page counts; all
    /// parts').
    pub integrity_errors: u64,
    /// Milliseconds since the last report (None: no report yet).
    pub last_report_age_ms: Option<u64>,
    /// The spec the guest reports running (canonical form; None from a guest that does not
    /// say).
    #[serde(default)]
    pub spec: Option<String>,
    /// Percent of one vCPU the workload tries to use (its one thread): the demand it asks for,
    /// met or not.
    #[serde(default)]
    pub demand_pct: Option<f64>,
    /// Operations asked for since the workload started (cumulative): over a window,
    /// `1 - Δops / Δdemanded_ops` is the share of the work the guest could not do.
    #[serde(default)]
    pub demanded_ops: Option<u64>,
    /// The workload's full speed, operations per second of busy vCPU time: its own estimate
    /// (the best rate over short windows of work, see the guest's `speed` module). A paced
    /// workload's `demand_pct` is its rate over this.
    #[serde(default)]
    pub full_ops_per_s: Option<f64>,
    /// The last control line the guest handled (its sequence number).
    #[serde(default)]
    pub control_seq: Option<u64>,
    /// Why the guest refused the last workload change sent to it (a short code), if it did.
    #[serde(default)]
    pub refused: Option<String>,
    /// Each part of a workload of several (`memtouch+disk`: memtouch, then disk), from the
    /// guest's latest report; empty (and left out) for a workload of one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<WorkloadPartView>,
}

/// One part of a workload of several, from the guest's latest report: the same figures as
/// [`WorkloadView`]'s for that part alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, JsonSchema)]
pub struct WorkloadPartView {
    /// The part's kind: `memtouch` (ops are page touches) or `disk` (4 KiB block operations).
    pub workload: String,
    /// Operations done since the workload started (cumulative).
    pub ops: u64,
    /// Operations per second over the guest's last second.
    pub ops_per_s: f64,
    /// Integrity errors this part found (cumulative).
    pub integrity_errors: u64,
    /// Percent of the workload's one vCPU this part tries to use.
    pub demand_pct: f64,
    /// Operations asked for since the workload started (cumulative).
    pub demanded_ops: u64,
    /// This part's full speed, operations per second of busy vCPU time (0: not measured yet).
    pub full_ops_per_s: f64,
}

/// A VM as `GET /v1/vms[/{name}]` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VmView {
    pub name: String,
    pub status: VmStatus,
    pub vcpus: u32,
    /// Guest memory, bytes.
    pub memory_bytes: u64,
    pub workload: String,
    /// The guest reports running another workload than `workload`: a change not applied yet,
    /// or refused (`workload_report.refused` says why).
    #[serde(default)]
    pub workload_pending: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic: Option<NicConfig>,
    /// The QEMU daemon's pid on its host.
    pub pid: u32,
    /// QEMU's run state (`running`, `inmigrate`, `paused`, ...) when it answered.
    #[serde(default)]
    pub qemu_status: Option<String>,
    /// The migration this VM is the source or destination of, if one is under way.
    #[serde(default)]
    pub migration: Option<String>,
    #[serde(default)]
    pub workload_report: WorkloadView,
    /// Why the VM is lost.
    #[serde(default)]
    pub error: Option<String>,
}

/// A workload report with its wall-clock arrival time (agents compare series across hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WallSample {
    /// Arrival on the host, ms since the Unix epoch.
    pub unix_ms: u64,
    /// Cumulative operations.
    pub ops: u64,
    /// Cumulative integrity errors.
    pub integrity_errors: u64,
    /// Cumulative operations asked for (None from a guest that does not say).
    #[serde(default)]
    pub demanded_ops: Option<u64>,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// Always `ok` when the agent answers.
    pub status: String,
    /// This agent's identity: random, made once and kept in its state directory, so a host
    /// reached under two addresses is still recognised as one.
    pub agent_id: String,
    /// VMs registered here.
    pub vms: u64,
    /// The agent's version.
    pub version: String,
    /// The host's power state.
    #[serde(default)]
    pub power: crate::power::PowerState,
}

/// The reply to deleting a VM or an incoming VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Deleted {
    /// The VM's name.
    pub deleted: String,
    /// The disk file (in the agent's storage directory) kept rather than deleted with the VM:
    /// an incoming VM aborted after its migration switched and its QEMU died (the file may
    /// hold what only that guest wrote). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_disk: Option<String>,
}

/// The reply to committing an incoming VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Committed {
    /// The VM's name.
    pub committed: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_guest::fit::{MAX_DISK_BYTES, MIN_DISK_BYTES};

    fn vm(json: &str) -> Result<VmConfig, String> {
        let c: VmConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_and_whole_number_floats() {
        let c = vm(r#"{"name":"a","memory_bytes":268435456.0,"vcpus":2.0}"#).expect("valid");
        assert_eq!((c.vcpus, c.workload.as_str()), (2, "idle"));
        assert!(vm(r#"{"name":"a","memory_bytes":268435456,"vcpus":1.5}"#).is_err());
        assert!(vm(r#"{"name":"a","memory":"256M"}"#).is_err());
    }

    #[test]
    fn one_rule_one_message_for_memory() {
        let err = vm(r#"{"name":"a","memory_bytes":50331648}"#).unwrap_err();
        assert_eq!(
            err,
            "memory_bytes 50331648: expected 128 MiB to 1 TiB (134217728 to 1099511627776 bytes)"
        );
        let err = vm(r#"{"name":"a","memory_bytes":134217728,"workload":"memtouch:wss=128M"}"#)
            .unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
    }

    /// The schema states the cross-field rule and quotes its refusal exactly as `validate`
    /// words it (schemathesis' hook in the contract test tells this 422 apart by it).
    #[test]
    fn the_workload_fit_rule_is_documented_as_enforced() {
        let err = vm(r#"{"name":"a","memory_bytes":134217728,"workload":"memtouch:wss=100M"}"#)
            .unwrap_err();
        assert_eq!(
            err,
            "workload 'memtouch:wss=100M': working set 100 MiB does not fit a 128 MiB guest \
             (the guest itself needs about 96 MiB)"
        );
        let doc = workload_fit_rule();
        let quoted = "workload '<spec>': working set <W> MiB does not fit a <M> MiB guest (the \
                      guest itself needs about 96 MiB)";
        assert!(doc.contains(quoted), "{doc}");
        assert!(doc.contains("plus 96 MiB"), "{doc}");
        // The boundary: exactly the working set plus 96 MiB fits.
        assert!(
            vm(r#"{"name":"a","memory_bytes":201326592,"workload":"memtouch:wss=96M"}"#).is_ok()
        );
        assert!(
            vm(r#"{"name":"a","memory_bytes":201326591,"workload":"memtouch:wss=96M"}"#).is_err()
        );
    }

    #[test]
    fn a_nic_is_its_address_and_the_rest_is_derived() {
        let c = vm(r#"{"name":"a","memory_bytes":268435456,"nic":{"address":"198.18.0.200"}}"#)
            .expect("valid");
        let nic = c.nic.expect("a nic");
        assert_eq!(nic.mac().as_deref(), Some("02:44:c6:12:00:c8"));
        assert_eq!(nic.tap().as_deref(), Some("dvnc61200c8"));
        for bad in ["198.18.0", "0.0.0.0", "224.0.0.1", "198.18.0.1 x", "::1"] {
            let body =
                format!(r#"{{"name":"a","memory_bytes":268435456,"nic":{{"address":"{bad}"}}}}"#);
            let err = vm(&body).unwrap_err();
            assert!(err.contains("nic.address"), "{err}");
        }
        assert!(vm(r#"{"name":"a","memory_bytes":268435456,"nic":{"tap":"t0"}}"#).is_err());
    }

    #[test]
    fn created_disks_have_a_size_range_and_a_base_name() {
        let c = vm(r#"{"name":"a","memory_bytes":268435456,"disk_size_bytes":268435456}"#)
            .expect("valid");
        assert!(c.creates_disk());
        assert_eq!(c.disk_file().as_deref(), Some("a.qcow2"));
        let c = vm(r#"{"name":"a","memory_bytes":268435456,"disk":"d1","disk_base":"base.qcow2"}"#)
            .expect("valid");
        assert_eq!(c.disk_file().as_deref(), Some("d1"));
        // A fraction is no byte count (the request parser names the field's path).
        assert!(
            vm(r#"{"name":"a","memory_bytes":268435456,"disk_size_bytes":1048576.5}"#).is_err()
        );
        for size in ["0", "4096", "17592186044417"] {
            let body =
                format!(r#"{{"name":"a","memory_bytes":268435456,"disk_size_bytes":{size}}}"#);
            let err = vm(&body).unwrap_err();
            assert!(err.contains("disk_size_bytes"), "{size}: {err}");
        }
        let err = vm(r#"{"name":"a","memory_bytes":268435456,"disk_base":"../b"}"#).unwrap_err();
        assert!(err.starts_with("disk_base '../b' is not valid"), "{err}");
        assert_eq!(MIN_DISK_BYTES, 1_048_576);
        assert_eq!(MAX_DISK_BYTES, 17_592_186_044_416);
    }

    #[test]
    fn a_disk_workload_fits_its_disk() {
        let c = vm(r#"{"name":"a","memory_bytes":268435456,"workload":"disk:wss=16M,rate=200","disk_size_bytes":67108864}"#)
            .expect("valid: the fit is the agent's check");
        assert!(check_disk_workload(&c, Some(64 << 20)).is_ok());
        let err = check_disk_workload(&c, Some(8 << 20)).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not fit the VM's 8388608 byte disk"),
            "{err}"
        );
        let err = check_disk_workload(&c, None).unwrap_err();
        assert!(err.to_string().contains("needs a disk"), "{err}");
        assert!(workload_fit_rule().contains("answered 409"));
        // A workload with a disk part by the same rule: its disk part's working set.
        let mixed = vm(r#"{"name":"a","memory_bytes":268435456,"workload":"memtouch:wss=64M,rate=9+disk:wss=16M,rate=200"}"#)
            .expect("valid");
        assert!(check_disk_workload(&mixed, Some(16 << 20)).is_ok());
        let err = check_disk_workload(&mixed, None).unwrap_err();
        assert!(err.to_string().contains("needs a disk"), "{err}");
        let err = check_disk_workload(&mixed, Some(8 << 20)).unwrap_err();
        assert!(err.to_string().contains("16777216"), "{err}");
    }

    #[test]
    fn disks_are_names_not_paths() {
        assert!(vm(r#"{"name":"a","memory_bytes":268435456,"disk":"a.qcow2"}"#).is_ok());
        for d in ["/etc/shadow", "../x", "a/b"] {
            let body = format!(r#"{{"name":"a","memory_bytes":268435456,"disk":"{d}"}}"#);
            let err = vm(&body).unwrap_err();
            assert!(err.contains("disk"), "{err}");
        }
    }
}
