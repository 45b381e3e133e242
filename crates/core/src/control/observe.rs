//! What the manager saw at one instant, in the live system's units (cores, bytes, names): the
//! input of the control step. The manager builds it from its agents in one place; the
//! simulator-backed fleet builds it from its model; a recorded one replays a decision.

use serde::{Deserialize, Serialize};

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
