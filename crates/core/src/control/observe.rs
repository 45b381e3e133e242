//! What the manager saw at one instant, in the live system's units (cores, bytes, names): the
//! input of the control step. The manager builds it from its agents in one place; the
//! simulator-backed fleet builds it from its model; a recorded one replays a decision.

use crate::units::shown;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// A host's power state, as its agent reports it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// Runs VMs and accepts new ones.
    Active,
    /// Powered down (or standing in for it): runs nothing, accepts nothing, draws no power.
    Standby,
    /// Told to wake; becomes active after its wake delay.
    Waking,
}

/// A VM's state on its host, as its agent reports it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmPresence {
    /// Runs here.
    Running,
    /// A migration destination waiting for (or receiving) the VM.
    Incoming,
    /// Its QEMU is gone.
    Lost,
}

/// One VM as its host's agent measured it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmObs {
    pub name: String,
    pub presence: VmPresence,
    pub vcpus: u32,
    /// Guest memory, bytes.
    pub memory_bytes: u64,
    /// CPU the VM wants, cores: what it used plus what its host's cap kept from it.
    pub cpu_demand_cores: f64,
    /// Measured page dirty rate, bytes/s (None until measured).
    pub dirty_rate_bps: Option<f64>,
    /// Writable working set, bytes (None until measured).
    pub wss_bytes: Option<u64>,
    /// NIC receive rate, bytes/s.
    pub net_rx_bps: f64,
    /// NIC transmit rate, bytes/s.
    pub net_tx_bps: f64,
    /// The agent's migration this VM takes part in, if one is under way.
    pub migration: Option<String>,
}

/// One host as its agent reported it (or failed to).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostObs {
    /// The host's name in the manager's inventory.
    pub name: String,
    /// False once the agent has missed enough polls in a row: its VMs are neither moved to
    /// nor presumed dead.
    pub reachable: bool,
    pub power: PowerState,
    /// CPU capacity, cores.
    pub cpus: f64,
    /// Memory capacity, bytes.
    pub memory_bytes: u64,
    /// CPU its VMs want, cores (used plus throttled); may exceed `cpus` when the host is
    /// overloaded.
    pub cpu_demand_cores: f64,
    /// The VMs it runs or receives (when unreachable: as last seen).
    pub vms: Vec<VmObs>,
}

impl HostObs {
    /// Demand over capacity (0 when the host has no capacity).
    pub fn load(&self) -> f64 {
        if self.cpus > 0.0 {
            self.cpu_demand_cores / self.cpus
        } else {
            0.0
        }
    }

    /// Memory given to the VMs registered here, bytes.
    pub fn memory_allocated(&self) -> u64 {
        self.vms
            .iter()
            .filter(|v| v.presence != VmPresence::Lost)
            .map(|v| v.memory_bytes)
            .sum()
    }
}

/// How a migration the manager asked for stands, as the source agent reports it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationPhase {
    /// The source agent has no such migration.
    Unknown,
    /// Preparing, running or measuring.
    Running,
    /// The VM runs on the destination.
    Completed,
    Failed,
    Cancelled,
    /// Post-copy left paused: the guest is on the destination, recoverable, not lost.
    Paused,
    /// The source agent restarted and could not establish the outcome.
    Interrupted,
}

/// One migration the manager started, as its source agent reports it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationObs {
    /// The migration's id (the manager chooses it: it is the move's id).
    pub id: String,
    pub phase: MigrationPhase,
    /// Where the VM is now: true once it runs on the destination.
    pub vm_on_destination: bool,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Bytes it moved, once completed (its result's `transferred_bytes`): about what the VM's
    /// next migration moves (its non-zero memory), which the group choice prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferred_bytes: Option<u64>,
}

/// Everything the control step looks at, besides its own memory and the settings.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Hosts in inventory order.
    pub hosts: Vec<HostObs>,
    /// The migrations of moves in flight, as their source agents report them.
    pub migrations: Vec<MigrationObs>,
}

impl Observation {
    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&HostObs> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The host running VM `vm` (not counting incoming copies) and the VM.
    pub fn locate(&self, vm: &str) -> Option<(&HostObs, &VmObs)> {
        self.hosts.iter().find_map(|h| {
            h.vms
                .iter()
                .find(|v| v.name == vm && v.presence == VmPresence::Running)
                .map(|v| (h, v))
        })
    }
}

/// A figure of an observation that no agent can report, named by its path in the observation
/// (`hosts[1].cpu_demand_cores`).
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{field} = {value}: {expected}")]
pub struct ObservationError {
    pub field: String,
    pub value: String,
    pub expected: String,
}

/// `Err` naming `field` unless `ok`.
fn need(
    ok: bool,
    field: impl FnOnce() -> String,
    value: impl std::fmt::Display,
    expected: &str,
) -> Result<(), ObservationError> {
    if ok {
        return Ok(());
    }
    Err(ObservationError {
        field: field(),
        value: value.to_string(),
        expected: expected.to_string(),
    })
}

/// A count or rate: finite and not negative.
fn amount(field: impl FnOnce() -> String, v: f64, unit: &str) -> Result<(), ObservationError> {
    need(
        v.is_finite() && v >= 0.0,
        field,
        shown(v),
        &format!("expected a finite number of {unit}, at least 0"),
    )
}

/// `name` is not empty and not yet in `seen` (names to their index), where it is then put:
/// refused as "expected a {kind} name", or as "expected a name {among}[first] has it)" (e.g.
/// `among` = "no other host has (hosts").
fn named_once<'a>(
    seen: &mut BTreeMap<&'a str, usize>,
    name: &'a str,
    index: usize,
    field: impl Fn() -> String,
    kind: &str,
    among: &str,
) -> Result<(), ObservationError> {
    need(
        !name.is_empty(),
        &field,
        "\"\"",
        &format!("expected a {kind} name"),
    )?;
    match seen.insert(name, index) {
        Some(first) => Err(ObservationError {
            field: field(),
            value: format!("{name:?}"),
            expected: format!("expected a name {among}[{first}] has it)"),
        }),
        None => Ok(()),
    }
}

impl Observation {
    /// Checks what the step takes for granted: hosts named once and not empty, VMs named and
    /// listed once per host, and every count and rate finite and not negative (a host that
    /// was never reached has 0 CPUs, which is valid). A VM running on two hosts is not an
    /// error: the agents are polled concurrently, so a look can catch a migration's source
    /// before its end and its destination after ([`Observation::running_twice`]).
    ///
    /// # Errors
    /// The first figure that is wrong, named by its path.
    pub fn validate(&self) -> Result<(), ObservationError> {
        let mut hosts: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let at = |f: &str| format!("hosts[{i}].{f}");
            named_once(
                &mut hosts,
                &h.name,
                i,
                || at("name"),
                "host",
                "no other host has (hosts",
            )?;
            amount(|| at("cpus"), h.cpus, "cores")?;
            amount(|| at("cpu_demand_cores"), h.cpu_demand_cores, "cores")?;
            let mut vms: BTreeMap<&str, usize> = BTreeMap::new();
            for (j, v) in h.vms.iter().enumerate() {
                let at = |f: &str| format!("hosts[{i}].vms[{j}].{f}");
                let among = format!("no other VM of host {} has (vms", h.name);
                named_once(&mut vms, &v.name, j, || at("name"), "VM", &among)?;
                amount(|| at("cpu_demand_cores"), v.cpu_demand_cores, "cores")?;
                if let Some(d) = v.dirty_rate_bps {
                    amount(|| at("dirty_rate_bps"), d, "bytes/s")?;
                }
                amount(|| at("net_rx_bps"), v.net_rx_bps, "bytes/s")?;
                amount(|| at("net_tx_bps"), v.net_tx_bps, "bytes/s")?;
            }
        }
        for (k, m) in self.migrations.iter().enumerate() {
            need(
                !m.id.is_empty(),
                || format!("migrations[{k}].id"),
                "\"\"",
                "expected a migration id",
            )?;
        }
        Ok(())
    }

    /// VMs reported running on more than one host, with those hosts in inventory order: the
    /// step takes the first ([`Observation::locate`]). Legitimate for one look around a
    /// migration's end; worth a warning when a stored observation is replayed.
    pub fn running_twice(&self) -> Vec<(String, Vec<String>)> {
        let mut on: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for h in &self.hosts {
            for v in h.vms.iter().filter(|v| v.presence == VmPresence::Running) {
                on.entry(&v.name).or_default().push(h.name.clone());
            }
        }
        on.into_iter()
            .filter(|(_, hosts)| hosts.len() > 1)
            .map(|(vm, hosts)| (vm.to_string(), hosts))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{check_inputs, ControlSettings, InputError};

    fn vm(name: &str) -> VmObs {
        VmObs {
            name: name.into(),
            presence: VmPresence::Running,
            vcpus: 1,
            memory_bytes: 1 << 30,
            cpu_demand_cores: 0.5,
            dirty_rate_bps: Some(1e6),
            wss_bytes: None,
            net_rx_bps: 0.0,
            net_tx_bps: 0.0,
            migration: None,
        }
    }

    fn host(name: &str, vms: Vec<VmObs>) -> HostObs {
        HostObs {
            name: name.into(),
            reachable: true,
            power: PowerState::Active,
            cpus: 4.0,
            memory_bytes: 16 << 30,
            cpu_demand_cores: 0.5,
            vms,
        }
    }

    fn obs() -> Observation {
        Observation {
            hosts: vec![host("h1", vec![vm("a")]), host("h2", vec![])],
            migrations: vec![],
        }
    }

    fn refusal(o: &Observation) -> String {
        o.validate().expect_err("refused").to_string()
    }

    #[test]
    fn impossible_figures_are_named_by_their_path() {
        assert_eq!(obs().validate(), Ok(()));
        let mut o = obs();
        o.hosts[1].name = "h1".into();
        assert_eq!(
            refusal(&o),
            "hosts[1].name = \"h1\": expected a name no other host has (hosts[0] has it)"
        );
        let mut o = obs();
        o.hosts[0].cpu_demand_cores = -5.0;
        assert_eq!(
            refusal(&o),
            "hosts[0].cpu_demand_cores = -5: expected a finite number of cores, at least 0"
        );
        let mut o = obs();
        o.hosts[0].cpus = f64::INFINITY;
        assert!(refusal(&o).starts_with("hosts[0].cpus = inf"));
        let mut o = obs();
        o.hosts[0].vms[0].dirty_rate_bps = Some(f64::NAN);
        assert!(refusal(&o).starts_with("hosts[0].vms[0].dirty_rate_bps = NaN"));
        let mut o = obs();
        o.hosts[0].vms.push(vm("a"));
        assert!(refusal(&o).contains("vms[1].name = \"a\": expected a name no other VM of host h1"));
        let mut o = obs();
        o.hosts[0].name.clear();
        assert!(refusal(&o).starts_with("hosts[0].name"));
        // A host never reached: no capacity, and valid.
        let mut o = obs();
        o.hosts[1].cpus = 0.0;
        o.hosts[1].reachable = false;
        assert_eq!(o.validate(), Ok(()));
    }

    #[test]
    fn a_vm_running_on_two_hosts_is_reported_not_refused() {
        let mut o = obs();
        assert!(o.running_twice().is_empty());
        o.hosts[1].vms.push(vm("a"));
        assert_eq!(o.validate(), Ok(()));
        assert_eq!(
            o.running_twice(),
            vec![("a".to_string(), vec!["h1".to_string(), "h2".to_string()])]
        );
        // An incoming copy is not a second location.
        o.hosts[1].vms[0].presence = VmPresence::Incoming;
        assert!(o.running_twice().is_empty());
    }

    #[test]
    fn a_steps_inputs_are_checked_as_the_managers_settings_are() {
        let s = ControlSettings::default();
        assert_eq!(check_inputs("now_s", 10.0, &obs(), &s), Ok(()));
        let e = check_inputs("now_s", 1e308, &obs(), &s).expect_err("time");
        assert_eq!(
            e.to_string(),
            "now_s = 1e308: expected a time from 0 to 1e10 s"
        );
        let e = check_inputs("at_s", f64::NAN, &obs(), &s).expect_err("time");
        assert!(matches!(e, InputError::Time { field: "at_s", .. }));
        for (bad, want) in [
            (
                ControlSettings {
                    hot: -1.0,
                    ..s.clone()
                },
                "settings.hot = -1: expected a load share above 0 and at most 2",
            ),
            (
                ControlSettings {
                    hot_samples: 0,
                    ..s.clone()
                },
                "settings.hot_samples = 0: expected 1 to 3600 samples",
            ),
            (
                ControlSettings {
                    link_bps: Some(1),
                    ..s.clone()
                },
                "settings.link_bps = 1: expected at least 125000 bytes/s",
            ),
        ] {
            let e = check_inputs("now_s", 10.0, &obs(), &bad).expect_err("settings");
            assert!(e.to_string().starts_with(want), "{e}");
        }
        let mut o = obs();
        o.hosts[0].cpu_demand_cores = -5.0;
        let e = check_inputs("now_s", 10.0, &o, &s).expect_err("observation");
        assert!(
            e.to_string()
                .starts_with("observation.hosts[0].cpu_demand_cores = -5"),
            "{e}"
        );
        assert!(
            std::error::Error::source(&e).is_none(),
            "no chain to repeat"
        );
    }
}
