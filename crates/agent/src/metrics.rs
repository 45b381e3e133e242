//! Host and VM metrics: a sampler task turns counters (CPU ticks, tap bytes, block stats, guest
//! ops) into rates every few seconds; `/v1/metrics` returns the last snapshot as JSON and
//! `/metrics` as Prometheus text.
//!
//! The dirty page rate comes from QEMU's `calc-dirty-rate` in page-sampling mode: it hashes 4096
//! sampled pages per GiB over a short window instead of write-protecting guest memory, so the
//! guest barely notices. It runs every `dirty_interval` per VM and never during a migration
//! (QEMU's own dirty tracking is busy then).

use crate::lock;
use crate::procfs::{self, Capacity};
use crate::vms::Vms;
use drover_api::metrics::{HostMetrics, Metrics, VmMetrics};
use drover_qemu::qmp::{Qmp, QmpError};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("dirty-rate measurement: {0}")]
    DirtyRate(QmpError),
    #[error("Prometheus encoding: {0}")]
    Encode(String),
}

/// Counters from the previous sample, to turn into rates.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    at: Option<tokio::time::Instant>,
    cpu_ticks: u64,
    tap: Option<(u64, u64)>,
    block: Option<[u64; 4]>,
    dirty_at: Option<tokio::time::Instant>,
}

/// Keeps the last snapshot of every VM's metrics.
pub struct MetricsHub {
    state: Mutex<HashMap<String, (VmMetrics, Counters)>>,
    capacity: Capacity,
    dirty_interval: Duration,
}

fn rate(now: u64, before: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    now.saturating_sub(before) as f64 / secs
}

/// Sums `query-blockstats` over devices: [rd_bytes, wr_bytes, rd_ops, wr_ops].
pub fn parse_blockstats(v: &Value) -> Option<[u64; 4]> {
    let mut sum = [0u64; 4];
    for dev in v.as_array()? {
        let s = dev.get("stats")?;
        for (i, k) in ["rd_bytes", "wr_bytes", "rd_operations", "wr_operations"]
            .iter()
            .enumerate()
        {
            sum[i] += s.get(k).and_then(Value::as_u64).unwrap_or(0);
        }
    }
    Some(sum)
}

/// Measures the dirty rate over `ms` milliseconds; MB/s.
pub async fn measure_dirty_rate(qmp: &dyn Qmp, ms: u64) -> Result<f64, MetricsError> {
    drover_qemu::profile::measure_dirty_rate(qmp, ms)
        .await
        .map_err(MetricsError::DirtyRate)
}

impl MetricsHub {
    /// A hub reporting `capacity` as the host's.
    pub fn new(dirty_interval: Duration, capacity: Capacity) -> Self {
        MetricsHub {
            state: Mutex::new(HashMap::new()),
            capacity,
            dirty_interval,
        }
    }

    /// One sampling pass over every live VM.
    pub async fn sample(&self, vms: &Vms) {
        vms.reap_exited();
        vms.check_liveness();
        let live = vms.live();
        let now = tokio::time::Instant::now();
        let hz = procfs::clock_ticks_per_s() as f64;
        let mut seen = Vec::new();
        for vm in live {
            seen.push(vm.name.clone());
            let prev = lock(&self.state)
                .get(&vm.name)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            let secs = prev
                .at
                .map(|t| now.duration_since(t).as_secs_f64())
                .unwrap_or(0.0);
            let mut m = lock(&self.state)
                .get(&vm.name)
                .map(|(m, _)| m.clone())
                .unwrap_or_default();
            let mut c = Counters {
                at: Some(now),
                dirty_at: prev.dirty_at,
                ..Counters::default()
            };
            m.name = vm.name.clone();
            m.vcpus = vm.vcpus;
            m.memory_bytes = vm.memory_bytes;
            c.cpu_ticks = procfs::cpu_ticks(vm.pid).unwrap_or(prev.cpu_ticks);
            m.cpu_cores = if prev.at.is_some() {
                rate(c.cpu_ticks, prev.cpu_ticks, secs) / hz
            } else {
                0.0
            };
            m.rss_bytes = procfs::rss_bytes(vm.pid).unwrap_or(0);
            if let Some(tap) = &vm.tap {
                c.tap = procfs::tap_bytes(tap);
                if let (Some((rx, tx)), Some((prx, ptx))) = (c.tap, prev.tap) {
                    // The tap's rx is what the guest sent.
                    m.net_tx_bps = rate(rx, prx, secs);
                    m.net_rx_bps = rate(tx, ptx, secs);
                }
            }
            if vm.has_disk {
                c.block = vm
                    .qmp
                    .execute("query-blockstats", None)
                    .await
                    .ok()
                    .and_then(|v| parse_blockstats(&v));
                if let (Some(b), Some(p)) = (c.block, prev.block) {
                    m.disk_read_bps = rate(b[0], p[0], secs);
                    m.disk_write_bps = rate(b[1], p[1], secs);
                    m.disk_read_iops = rate(b[2], p[2], secs);
                    m.disk_write_iops = rate(b[3], p[3], secs);
                }
            }
            if let Ok(view) = vms.get(&vm.name).await {
                m.ops_per_s = view.workload_report.ops_per_s;
                m.integrity_errors = view.workload_report.integrity_errors;
            }
            let due =
                !matches!(prev.dirty_at, Some(t) if now.duration_since(t) < self.dirty_interval);
            if due && !vm.migrating && !vm.incoming {
                c.dirty_at = Some(now);
                match measure_dirty_rate(vm.qmp.as_ref(), 250).await {
                    Ok(mb_s) => m.dirty_rate_bps = Some(mb_s * 1e6),
                    Err(e) => tracing::debug!(vm = %vm.name, error = %e, "dirty rate not measured"),
                }
            }
            m.dirty_rate_age_s = c.dirty_at.map(|t| now.duration_since(t).as_secs());
            lock(&self.state).insert(vm.name.clone(), (m, c));
        }
        lock(&self.state).retain(|k, _| seen.contains(k));
    }

    /// The last snapshot.
    pub fn snapshot(&self) -> (HostMetrics, Vec<VmMetrics>) {
        let mut vms: Vec<VmMetrics> = lock(&self.state).values().map(|(m, _)| m.clone()).collect();
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        let host = HostMetrics {
            cpus: self.capacity.cpus,
            memory_bytes: self.capacity.memory_bytes,
            vms: vms.len() as u64,
            vcpus_allocated: vms.iter().map(|v| u64::from(v.vcpus)).sum(),
            memory_allocated_bytes: vms.iter().map(|v| v.memory_bytes).sum(),
            cpu_used_cores: vms.iter().map(|v| v.cpu_cores).sum(),
            memory_used_bytes: vms.iter().map(|v| v.rss_bytes).sum(),
        };
        (host, vms)
    }

    /// `/v1/metrics`.
    pub fn json(&self) -> Metrics {
        let (host, vms) = self.snapshot();
        Metrics { host, vms }
    }

    /// `/metrics`: Prometheus text exposition.
    pub fn prometheus(&self) -> Result<String, MetricsError> {
        let (host, vms) = self.snapshot();
        render_prometheus(&host, &vms)
    }
}

type GaugeF = Gauge<f64, AtomicU64>;
type Labels = Vec<(String, String)>;

/// Renders a snapshot in Prometheus text format (pure, for tests).
pub fn render_prometheus(host: &HostMetrics, vms: &[VmMetrics]) -> Result<String, MetricsError> {
    let mut reg = <Registry>::default();
    let host_gauges: [(&str, &str, f64); 7] = [
        ("drover_host_cpus", "CPUs this host may use", host.cpus),
        (
            "drover_host_memory_bytes",
            "Memory this host may use",
            host.memory_bytes as f64,
        ),
        ("drover_host_vms", "VMs on this host", host.vms as f64),
        (
            "drover_host_vcpus_allocated",
            "vCPUs allocated to VMs",
            host.vcpus_allocated as f64,
        ),
        (
            "drover_host_memory_allocated_bytes",
            "Memory allocated to VMs",
            host.memory_allocated_bytes as f64,
        ),
        (
            "drover_host_cpu_used_cores",
            "CPU used by VMs, cores",
            host.cpu_used_cores,
        ),
        (
            "drover_host_memory_used_bytes",
            "Resident memory of VMs",
            host.memory_used_bytes as f64,
        ),
    ];
    for (name, help, v) in host_gauges {
        let g = GaugeF::default();
        g.set(v);
        reg.register(name, help, g);
    }
    type Pick = fn(&VmMetrics) -> Option<f64>;
    let per_vm: [(&str, &str, Pick); 11] = [
        ("drover_vm_cpu_cores", "QEMU CPU use, cores", |m| {
            Some(m.cpu_cores)
        }),
        ("drover_vm_rss_bytes", "QEMU resident memory", |m| {
            Some(m.rss_bytes as f64)
        }),
        (
            "drover_vm_dirty_rate_bytes_per_second",
            "Guest dirty page rate",
            |m| m.dirty_rate_bps,
        ),
        (
            "drover_vm_net_rx_bytes_per_second",
            "Guest NIC receive rate",
            |m| Some(m.net_rx_bps),
        ),
        (
            "drover_vm_net_tx_bytes_per_second",
            "Guest NIC transmit rate",
            |m| Some(m.net_tx_bps),
        ),
        (
            "drover_vm_disk_read_bytes_per_second",
            "Disk read rate",
            |m| Some(m.disk_read_bps),
        ),
        (
            "drover_vm_disk_write_bytes_per_second",
            "Disk write rate",
            |m| Some(m.disk_write_bps),
        ),
        (
            "drover_vm_disk_read_iops",
            "Disk read operations per second",
            |m| Some(m.disk_read_iops),
        ),
        (
            "drover_vm_disk_write_iops",
            "Disk write operations per second",
            |m| Some(m.disk_write_iops),
        ),
        (
            "drover_vm_workload_ops_per_second",
            "Guest workload operations per second",
            |m| Some(m.ops_per_s),
        ),
        (
            "drover_vm_workload_integrity_errors",
            "Guest workload integrity errors",
            |m| Some(m.integrity_errors as f64),
        ),
    ];
    for (name, help, pick) in per_vm {
        let fam = Family::<Labels, GaugeF>::default();
        for m in vms {
            if let Some(v) = pick(m) {
                fam.get_or_create(&vec![("vm".to_string(), m.name.clone())])
                    .set(v);
            }
        }
        reg.register(name, help, fam);
    }
    let mut out = String::new();
    encode(&mut out, &reg).map_err(|e| MetricsError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blockstats_sum_over_devices() {
        let v = serde_json::json!([
            {"device": "a", "stats": {"rd_bytes": 10, "wr_bytes": 20, "rd_operations": 1, "wr_operations": 2}},
            {"device": "b", "stats": {"rd_bytes": 5}}
        ]);
        assert_eq!(parse_blockstats(&v), Some([15, 20, 1, 2]));
        assert_eq!(parse_blockstats(&serde_json::json!({})), None);
    }

    #[test]
    fn prometheus_text_has_host_and_vm_series() {
        let host = HostMetrics {
            cpus: 2.0,
            memory_bytes: 1 << 30,
            vms: 1,
            ..HostMetrics::default()
        };
        let vm = VmMetrics {
            name: "vm1".into(),
            cpu_cores: 0.5,
            dirty_rate_bps: None,
            ops_per_s: 123.0,
            ..VmMetrics::default()
        };
        let text = render_prometheus(&host, &[vm]).expect("encode");
        assert!(text.contains("drover_host_cpus 2.0"), "{text}");
        assert!(
            text.contains("drover_vm_cpu_cores{vm=\"vm1\"} 0.5"),
            "{text}"
        );
        assert!(
            text.contains("drover_vm_workload_ops_per_second{vm=\"vm1\"} 123.0"),
            "{text}"
        );
        // Not measured yet: no sample rather than a misleading zero.
        assert!(
            !text.contains("drover_vm_dirty_rate_bytes_per_second{"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
