//! `GET /v1/metrics`: the host's capacity, power state, use and demand, and every VM's rates,
//! as the agent's sampler last measured them.
//!
//! # CPU demand
//! Use is what a VM got; demand is what it wanted, including what the host could not give it
//! (a cgroup's CPU cap, other processes on the cores). A host is hot when its demand, not its
//! use, reaches its capacity: a capped host's use never exceeds the cap. Each VM's
//! `cpu_demand_cores` comes from the best source available ([`DemandSource`]):
//! 1. `guest`: the guest's workload reports the share of its vCPU it tries to use
//!    (`demand_pct`; the workloads run one thread): demand = that share of one core, but never
//!    less than the VM's measured use (QEMU's own threads count too);
//! 2. `run_delay`: otherwise the time its QEMU's threads spent runnable but not running (the
//!    kernel's schedstat: waiting for a core, or throttled by the cgroup's cap) is added to its
//!    use;
//! 3. `throttling`: without schedstat, its use is scaled by the host cgroup's throttling (time
//!    the cgroup spent throttled per second, over its use: cgroup v1 `throttled_time`, v2
//!    `throttled_usec`);
//! 4. `use`: nothing else is known.
//!
//! The host's demand is the sum of its VMs'. All of it is an estimate: the guest's figure is
//! what it asks for, not what QEMU would need to emulate it; run delay counts any wait for a
//! core; throttling is shared out in proportion to use. See the agent's `demand` module.

use crate::power::PowerState;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a VM's CPU demand figure comes from (best first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DemandSource {
    /// The guest workload's own report of the share of its vCPU it tries to use.
    Guest,
    /// Use plus the time its QEMU's threads waited to run.
    RunDelay,
    /// Use scaled by the host cgroup's throttling.
    Throttling,
    /// Use alone.
    #[default]
    Use,
}

/// One VM's rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VmMetrics {
    pub name: String,
    /// CPU time used by its QEMU, in cores (1.0 = one core busy).
    pub cpu_cores: f64,
    /// CPU it wants, in cores: use plus what it could not get (see the module doc).
    #[serde(default)]
    pub cpu_demand_cores: f64,
    /// Where `cpu_demand_cores` comes from.
    #[serde(default)]
    pub cpu_demand_source: DemandSource,
    /// Time its QEMU's threads spent runnable but not running, in cores (None without
    /// schedstat).
    #[serde(default)]
    pub cpu_wait_cores: Option<f64>,
    /// The guest workload's own demand: percent of one vCPU it tries to use (None when the
    /// guest does not say, or has not reported for 5 s).
    #[serde(default)]
    pub workload_demand_pct: Option<f64>,
    /// Resident memory of its QEMU, bytes.
    pub rss_bytes: u64,
    pub vcpus: u32,
    /// Guest memory, bytes.
    pub memory_bytes: u64,
    /// Last measured dirty page rate, bytes/s (None until measured).
    pub dirty_rate_bps: Option<f64>,
    /// Age of that measurement, s.
    pub dirty_rate_age_s: Option<u64>,
    /// Guest view: bytes/s received on its NIC.
    pub net_rx_bps: f64,
    /// Guest view: bytes/s sent on its NIC.
    pub net_tx_bps: f64,
    /// Disk bytes/s read.
    pub disk_read_bps: f64,
    /// Disk bytes/s written.
    pub disk_write_bps: f64,
    /// Disk reads per second.
    pub disk_read_iops: f64,
    /// Disk writes per second.
    pub disk_write_iops: f64,
    /// The guest workload's operations per second.
    pub ops_per_s: f64,
    /// The guest workload's cumulative integrity errors.
    pub integrity_errors: u64,
}

/// The host: capacity (cgroup limits when set), power state, use and demand.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostMetrics {
    /// CPUs this host may use (cores).
    pub cpus: f64,
    /// Memory this host may use, bytes.
    pub memory_bytes: u64,
    /// The host's power state.
    #[serde(default)]
    pub power: PowerState,
    /// VMs measured.
    pub vms: u64,
    pub vcpus_allocated: u64,
    /// Sum of the VMs' guest memory, bytes.
    pub memory_allocated_bytes: u64,
    /// Sum of the VMs' CPU use, cores.
    pub cpu_used_cores: f64,
    /// Sum of the VMs' CPU demand, cores (at least `cpu_used_cores`; above `cpus` when the
    /// host cannot serve its VMs).
    #[serde(default)]
    pub cpu_demand_cores: f64,
    /// Time the host's cgroup spent throttled by its CPU cap, in cores (None when the agent
    /// cannot read its cgroup's `cpu.stat`, e.g. under `ip netns exec`).
    #[serde(default)]
    pub cpu_throttled_cores: Option<f64>,
    /// Percent of the cgroup's CPU periods in which it was throttled (None likewise).
    #[serde(default)]
    pub cpu_throttled_periods_pct: Option<f64>,
    /// Sum of the VMs' resident memory, bytes.
    pub memory_used_bytes: u64,
}

/// The reply of `GET /v1/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Metrics {
    pub host: HostMetrics,
    /// Sorted by name.
    pub vms: Vec<VmMetrics>,
}
