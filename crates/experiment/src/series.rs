//! What the sampler records: one [`Sample`] a second of every host and every VM, plain data
//! (one JSON line each in the report's `series-*.jsonl`), and the pure merge of the agents'
//! views of a VM into one row ([`merge_vm`]): during a migration a VM shows on two hosts.

use serde::{Deserialize, Serialize};

/// A host's power state as the demo counts it (the agent's `active`, `standby`, `waking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Power {
    Active,
    Standby,
    Waking,
    /// The agent did not answer this sample.
    Unknown,
}

impl Power {
    /// Whether the host draws power (everything but standby; an unanswered host is counted
    /// on, the pessimistic reading).
    pub fn is_on(self) -> bool {
        self != Power::Standby
    }
}

impl From<drover_api::PowerState> for Power {
    fn from(p: drover_api::PowerState) -> Self {
        match p {
            drover_api::PowerState::Active => Power::Active,
            drover_api::PowerState::Standby => Power::Standby,
            drover_api::PowerState::Waking => Power::Waking,
        }
    }
}

/// One host at one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    pub name: String,
    pub power: Power,
    /// Capacity, cores (the lab's cap).
    pub cpus: f64,
    /// What its VMs want, cores (the agent's estimate: see drover-api's metrics module).
    pub demand_cores: f64,
    /// What its VMs got, cores.
    pub used_cores: f64,
    /// VMs it runs (a migration's source and destination both count it).
    pub vms: u64,
}

impl HostSample {
    /// Demand over capacity (0 without capacity).
    pub fn load(&self) -> f64 {
        if self.cpus > 0.0 {
            self.demand_cores / self.cpus
        } else {
            0.0
        }
    }

    /// Use over capacity, clamped to 0..=1: what the power model reads.
    pub fn utilisation(&self) -> f64 {
        if self.cpus > 0.0 {
            (self.used_cores / self.cpus).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// One VM at one sample: its guest's cumulative counters, which travel with its memory, so
/// they continue across a migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSample {
    pub name: String,
    /// Where its guest runs (the host whose copy reported last).
    pub host: String,
    /// Work done since boot, ops.
    pub ops: u64,
    /// Work asked for since boot, ops (None: the guest has not said).
    pub demanded_ops: Option<u64>,
    /// Throughput over the guest's last ~2 s, ops/s.
    pub ops_per_s: f64,
    /// Cumulative integrity errors the guest found.
    pub integrity_errors: u64,
    /// The guest's own estimate of its full speed, ops/s (None: it has not said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_ops_per_s: Option<f64>,
}

/// Every host and VM at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix time, s.
    pub t_s: f64,
    pub hosts: Vec<HostSample>,
    pub vms: Vec<VmSample>,
}

impl Sample {
    pub fn host(&self, name: &str) -> Option<&HostSample> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn vm(&self, name: &str) -> Option<&VmSample> {
        self.vms.iter().find(|v| v.name == name)
    }
}

/// One agent's view of a VM: the host asked and what it reports.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSeen<'a> {
    pub host: &'a str,
    pub view: &'a drover_api::VmView,
}

/// Merges the views of one VM from every host into one sample: the guest's counters are
/// cumulative since its boot and move with it, so the largest `ops` is the latest report
/// wherever it came from (a migration's source keeps its last report before the switch; the
/// destination's next one is larger). None when no view has reported yet.
pub fn merge_vm(name: &str, seen: &[VmSeen<'_>]) -> Option<VmSample> {
    let best = seen
        .iter()
        .filter(|s| s.view.name == name && s.view.workload_report.last_report_age_ms.is_some())
        .max_by_key(|s| {
            (
                s.view.workload_report.ops,
                // Equal counters: the fresher report.
                std::cmp::Reverse(s.view.workload_report.last_report_age_ms),
            )
        })?;
    let r = &best.view.workload_report;
    Some(VmSample {
        name: name.to_string(),
        host: best.host.to_string(),
        ops: r.ops,
        demanded_ops: r.demanded_ops,
        ops_per_s: r.ops_per_s,
        full_ops_per_s: r.full_ops_per_s.filter(|f| f.is_finite() && *f > 0.0),
        // Errors are cumulative too; a stale copy never has more.
        integrity_errors: seen
            .iter()
            .filter(|s| s.view.name == name)
            .map(|s| s.view.workload_report.integrity_errors)
            .max()
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::{VmStatus, VmView, WorkloadView};

    fn view(ops: u64, age: Option<u64>, errors: u64) -> VmView {
        VmView {
            name: "d1".into(),
            status: VmStatus::Running,
            vcpus: 1,
            memory_bytes: 256 << 20,
            workload: "idle".into(),
            workload_pending: false,
            disk: None,
            nic: None,
            pid: 1,
            qemu_status: None,
            migration: None,
            workload_report: WorkloadView {
                ops,
                ops_per_s: 10.0,
                integrity_errors: errors,
                last_report_age_ms: age,
                spec: None,
                demand_pct: None,
                demanded_ops: Some(ops + 5),
                full_ops_per_s: None,
                control_seq: None,
                refused: None,
                parts: Vec::new(),
            },
            error: None,
        }
    }

    #[test]
    fn the_latest_copy_of_a_migrating_vm_wins() {
        let source = view(1000, Some(900), 0);
        let dest = view(1500, Some(100), 0);
        let silent = view(0, None, 0);
        let seen = [
            VmSeen {
                host: "h1",
                view: &source,
            },
            VmSeen {
                host: "h2",
                view: &dest,
            },
            VmSeen {
                host: "h3",
                view: &silent,
            },
        ];
        let s = merge_vm("d1", &seen).expect("merged");
        assert_eq!(
            (s.host.as_str(), s.ops, s.demanded_ops),
            ("h2", 1500, Some(1505))
        );
        assert_eq!(merge_vm("d9", &seen), None);
        assert_eq!(merge_vm("d1", &seen[2..]), None, "no report yet");
    }

    #[test]
    fn errors_seen_anywhere_count() {
        let source = view(1000, Some(900), 2);
        let dest = view(1500, Some(100), 0);
        let seen = [
            VmSeen {
                host: "h1",
                view: &source,
            },
            VmSeen {
                host: "h2",
                view: &dest,
            },
        ];
        assert_eq!(merge_vm("d1", &seen).map(|s| s.integrity_errors), Some(2));
    }

    #[test]
    fn load_and_utilisation() {
        let h = HostSample {
            name: "h1".into(),
            power: Power::Active,
            cpus: 1.0,
            demand_cores: 1.25,
            used_cores: 1.1,
            vms: 3,
        };
        assert_eq!(h.load(), 1.25);
        assert_eq!(h.utilisation(), 1.0);
        assert!(!Power::Standby.is_on() && Power::Waking.is_on());
    }
}
