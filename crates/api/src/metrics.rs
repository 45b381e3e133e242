//! `GET /v1/metrics`: the host's capacity and use, and every VM's rates, as the agent's sampler
//! last measured them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One VM's rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VmMetrics {
    pub name: String,
    /// CPU time used by its QEMU, in cores (1.0 = one core busy).
    pub cpu_cores: f64,
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

/// The host: capacity (cgroup limits when set) and use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostMetrics {
    /// CPUs this host may use (cores).
    pub cpus: f64,
    /// Memory this host may use, bytes.
    pub memory_bytes: u64,
    /// VMs measured.
    pub vms: u64,
    pub vcpus_allocated: u64,
    /// Sum of the VMs' guest memory, bytes.
    pub memory_allocated_bytes: u64,
    /// Sum of the VMs' CPU use, cores.
    pub cpu_used_cores: f64,
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
