//! Host and VM metrics: a sampler task turns counters (CPU ticks, tap bytes, block stats, guest
//! ops) into rates every few seconds; `/v1/metrics` returns the last snapshot as JSON and
//! `/metrics` as Prometheus text.
//!
//! CPU demand (use plus what the VM could not get) is worked out by [`crate::demand`] from the
//! guest's own report, its QEMU's run delay or the host cgroup's throttling.
//!
//! The dirty page rate comes from QEMU's `calc-dirty-rate` in page-sampling mode: it hashes 4096
//! sampled pages per GiB over a short window instead of write-protecting guest memory, so the
//! guest barely notices. It runs every `dirty_interval` per VM, and sooner when the VM's pace
//! (its guest's reported share of a vCPU, else its QEMU's CPU use) has moved by
//! [`DIRTY_RECHECK_CORES`] since the last measurement ([`dirty_due`]): a manager
//! prices a move from the latest rate, and with the default 30 s interval it priced a VM raised
//! 5 s before by its rate at low demand (pre-copy for a VM no pre-copy could move). Never during
//! a migration (QEMU's own dirty tracking is busy then).

use crate::demand::{self, DemandInputs, Throttling};
use crate::lock;
use crate::procfs::{self, Capacity, CpuStat};
use crate::vms::Vms;
use drover_api::metrics::{HostMetrics, Metrics, VmMetrics};
use drover_api::PowerState;
use drover_qemu::profile::{parse_blockstats, BlockStats};
use drover_qemu::qmp::{Qmp, QmpError};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
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
    /// Run delay of its QEMU's threads, ns.
    wait_ns: Option<u64>,
    tap: Option<(u64, u64)>,
    block: Option<BlockStats>,
    dirty_at: Option<tokio::time::Instant>,
    /// Its pace (the guest's share of a vCPU, or its QEMU's use, cores) in the sample that
    /// last measured the dirty rate.
    dirty_cpu: Option<f64>,
    /// Its QEMU's use while the guest asks for nearly nothing, cores (`demand::learn_idle`).
    idle_cores: Option<f64>,
}

/// The host cgroup's throttling: the last reading and what the last interval showed.
#[derive(Debug, Clone, Copy, Default)]
struct HostCounters {
    cpu_stat: Option<(tokio::time::Instant, CpuStat)>,
    throttling: Option<Throttling>,
}

/// A change in a VM's pace (its guest's share of a vCPU, or its QEMU's CPU use), cores, since
/// its dirty rate was measured that makes the rate stale: a workload that changed its pace
/// changed how fast it dirties memory too. 0.15 of a core is over the sample-to-sample noise
/// of an idle TCG guest's use here (about 0.05 on a quiet machine) and under what a raised
/// demo VM adds (0.4).
pub const DIRTY_RECHECK_CORES: f64 = 0.15;

/// The shortest time between two measurements of one VM's dirty rate, however its use moves:
/// a ramp would otherwise be measured every sample.
pub const DIRTY_RECHECK_MIN: Duration = Duration::from_secs(2);

/// Whether a VM's dirty rate is due for a measurement: never measured, `interval` since the
/// last (`since`), or its pace (`cpu_now`, cores) moved by [`DIRTY_RECHECK_CORES`] from the
/// pace in the sample that measured it (`cpu_then`) and [`DIRTY_RECHECK_MIN`] has passed.
pub fn dirty_due(
    since: Option<Duration>,
    interval: Duration,
    cpu_now: f64,
    cpu_then: Option<f64>,
) -> bool {
    let Some(since) = since else {
        return true;
    };
    let moved = cpu_then.is_some_and(|then| (cpu_now - then).abs() >= DIRTY_RECHECK_CORES);
    since >= interval || (moved && since >= DIRTY_RECHECK_MIN)
}

/// Keeps the last snapshot of every VM's metrics.
pub struct MetricsHub {
    state: Mutex<HashMap<String, (VmMetrics, Counters)>>,
    host: Mutex<HostCounters>,
    capacity: Capacity,
    dirty_interval: Duration,
}

fn rate(now: u64, before: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    now.saturating_sub(before) as f64 / secs
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
            host: Mutex::new(HostCounters::default()),
            capacity,
            dirty_interval,
        }
    }

    /// One sampling pass over every live VM.
    pub async fn sample(&self, vms: &Vms) {
        vms.reap_exited();
        vms.check_liveness();
        vms.watch_arrivals().await;
        vms.reconcile_workloads();
        let live = vms.live();
        let now = tokio::time::Instant::now();
        self.sample_cgroup(now, procfs::cgroup_cpu_stat());
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
                dirty_cpu: prev.dirty_cpu,
                idle_cores: prev.idle_cores,
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
            c.wait_ns = procfs::run_delay_ns(vm.pid);
            m.cpu_wait_cores = match (prev.wait_ns, c.wait_ns, prev.at) {
                (Some(before), Some(after), Some(_)) => demand::wait_cores(before, after, secs),
                _ => None,
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
                    m.disk_read_bps = rate(b.read_bytes, p.read_bytes, secs);
                    m.disk_write_bps = rate(b.write_bytes, p.write_bytes, secs);
                    m.disk_read_iops = rate(b.read_ops, p.read_ops, secs);
                    m.disk_write_iops = rate(b.write_ops, p.write_ops, secs);
                }
            }
            if let Ok(view) = vms.get(&vm.name).await {
                let report = &view.workload_report;
                m.ops_per_s = report.ops_per_s;
                m.integrity_errors = report.integrity_errors;
                m.workload_demand_pct = demand::guest_share(
                    report.demand_pct,
                    report.last_report_age_ms,
                    vm.guest_away,
                );
            }
            // The guest's own share when it reports one: it moves the moment the workload
            // changes (use averages the last interval, part of it at the old pace).
            let pace = m.workload_demand_pct.map_or(m.cpu_cores, |pct| pct / 100.0);
            let due = dirty_due(
                prev.dirty_at.map(|t| now.duration_since(t)),
                self.dirty_interval,
                pace,
                prev.dirty_cpu,
            );
            if due && !vm.migrating && !vm.incoming {
                c.dirty_at = Some(now);
                c.dirty_cpu = Some(pace);
                match measure_dirty_rate(vm.qmp.as_ref(), 250).await {
                    Ok(mb_s) => m.dirty_rate_bps = Some(mb_s * 1e6),
                    Err(e) => tracing::debug!(vm = %vm.name, error = %e, "dirty rate not measured"),
                }
            }
            m.dirty_rate_age_s = c.dirty_at.map(|t| now.duration_since(t).as_secs());
            lock(&self.state).insert(vm.name.clone(), (m, c));
        }
        lock(&self.state).retain(|k, _| seen.contains(k));
        self.estimate_demand();
    }

    /// Reads the host cgroup's throttling counters (None: not visible here).
    fn sample_cgroup(&self, now: tokio::time::Instant, stat: Option<CpuStat>) {
        let mut host = lock(&self.host);
        host.throttling = match (host.cpu_stat, stat) {
            (Some((at, before)), Some(after)) => {
                demand::throttling(before, after, now.duration_since(at).as_secs_f64())
            }
            _ => None,
        };
        host.cpu_stat = stat.map(|s| (now, s));
    }

    /// Every VM's demand from this pass's measurements (the throttling factor needs every
    /// VM's use first).
    fn estimate_demand(&self) {
        let throttling = lock(&self.host).throttling;
        let mut state = lock(&self.state);
        let used: f64 = state.values().map(|(m, _)| m.cpu_cores).sum();
        let factor = throttling.map(|t| demand::throttle_factor(t.cores, used));
        for (m, c) in state.values_mut() {
            c.idle_cores = demand::learn_idle(c.idle_cores, m.cpu_cores, m.workload_demand_pct);
            let (cores, source) = demand::vm_demand(&DemandInputs {
                used_cores: m.cpu_cores,
                vcpus: m.vcpus,
                guest_demand_pct: m.workload_demand_pct,
                wait_cores: m.cpu_wait_cores,
                throttle_factor: factor,
                idle_cores: c.idle_cores,
            });
            m.cpu_demand_cores = cores;
            m.cpu_demand_source = source;
        }
    }

    /// The last snapshot, with the host in power state `power`.
    pub fn snapshot(&self, power: PowerState) -> (HostMetrics, Vec<VmMetrics>) {
        let mut vms: Vec<VmMetrics> = lock(&self.state).values().map(|(m, _)| m.clone()).collect();
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        let throttling = lock(&self.host).throttling;
        let host = HostMetrics {
            cpus: self.capacity.cpus,
            memory_bytes: self.capacity.memory_bytes,
            power,
            vms: vms.len() as u64,
            vcpus_allocated: vms.iter().map(|v| u64::from(v.vcpus)).sum(),
            memory_allocated_bytes: vms.iter().map(|v| v.memory_bytes).sum(),
            cpu_used_cores: vms.iter().map(|v| v.cpu_cores).sum(),
            cpu_demand_cores: vms.iter().map(|v| v.cpu_demand_cores).sum(),
            cpu_throttled_cores: throttling.map(|t| t.cores),
            cpu_throttled_periods_pct: throttling.map(|t| t.periods_pct),
            memory_used_bytes: vms.iter().map(|v| v.rss_bytes).sum(),
        };
        (host, vms)
    }

    /// `/v1/metrics`.
    pub fn json(&self, power: PowerState) -> Metrics {
        let (host, vms) = self.snapshot(power);
        Metrics { host, vms }
    }

    /// `/metrics`: Prometheus text exposition.
    pub fn prometheus(&self, power: PowerState) -> Result<String, MetricsError> {
        let (host, vms) = self.snapshot(power);
        render_prometheus(&host, &vms)
    }
}

type GaugeF = Gauge<f64, AtomicU64>;
type Labels = Vec<(String, String)>;

/// Renders a snapshot in Prometheus text format (pure, for tests).
pub fn render_prometheus(host: &HostMetrics, vms: &[VmMetrics]) -> Result<String, MetricsError> {
    let mut reg = <Registry>::default();
    let host_gauges: [(&str, &str, Option<f64>); 10] = [
        (
            "drover_host_cpus",
            "CPUs this host may use",
            Some(host.cpus),
        ),
        (
            "drover_host_memory_bytes",
            "Memory this host may use",
            Some(host.memory_bytes as f64),
        ),
        ("drover_host_vms", "VMs on this host", Some(host.vms as f64)),
        (
            "drover_host_vcpus_allocated",
            "vCPUs allocated to VMs",
            Some(host.vcpus_allocated as f64),
        ),
        (
            "drover_host_memory_allocated_bytes",
            "Memory allocated to VMs",
            Some(host.memory_allocated_bytes as f64),
        ),
        (
            "drover_host_cpu_used_cores",
            "CPU used by VMs, cores",
            Some(host.cpu_used_cores),
        ),
        (
            "drover_host_cpu_demand_cores",
            "CPU wanted by VMs (use plus what they could not get), cores",
            Some(host.cpu_demand_cores),
        ),
        (
            "drover_host_cpu_throttled_cores",
            "Time the host's cgroup spent throttled by its CPU cap, cores",
            host.cpu_throttled_cores,
        ),
        (
            "drover_host_cpu_throttled_periods_percent",
            "Percent of the cgroup's CPU periods in which it was throttled",
            host.cpu_throttled_periods_pct,
        ),
        (
            "drover_host_memory_used_bytes",
            "Resident memory of VMs",
            Some(host.memory_used_bytes as f64),
        ),
    ];
    for (name, help, v) in host_gauges {
        // Unknown: no sample rather than a misleading zero.
        let Some(v) = v else { continue };
        let g = GaugeF::default();
        g.set(v);
        reg.register(name, help, g);
    }
    let power = Family::<Labels, GaugeF>::default();
    for state in [PowerState::Active, PowerState::Standby, PowerState::Waking] {
        let on = if state == host.power { 1.0 } else { 0.0 };
        power
            .get_or_create(&vec![("state".to_string(), state.as_str().to_string())])
            .set(on);
    }
    reg.register(
        "drover_host_power_state",
        "The host's power state (1 for the current one)",
        power,
    );
    type Pick = fn(&VmMetrics) -> Option<f64>;
    let per_vm: [(&str, &str, Pick); 14] = [
        ("drover_vm_cpu_cores", "QEMU CPU use, cores", |m| {
            Some(m.cpu_cores)
        }),
        (
            "drover_vm_cpu_demand_cores",
            "CPU the VM wants (use plus what it could not get), cores",
            |m| Some(m.cpu_demand_cores),
        ),
        (
            "drover_vm_cpu_wait_cores",
            "Time its QEMU's threads were runnable but not running, cores",
            |m| m.cpu_wait_cores,
        ),
        (
            "drover_vm_workload_demand_percent",
            "Percent of one vCPU the guest workload tries to use",
            |m| m.workload_demand_pct,
        ),
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
    use drover_api::metrics::DemandSource;

    #[test]
    fn the_dirty_rate_is_measured_on_schedule_and_when_the_cpu_use_moves() {
        let s = Duration::from_secs;
        let every_30 = s(30);
        assert!(dirty_due(None, every_30, 0.3, None), "never measured");
        assert!(!dirty_due(Some(s(10)), every_30, 0.3, Some(0.3)));
        assert!(
            dirty_due(Some(s(30)), every_30, 0.3, Some(0.3)),
            "on schedule"
        );
        // Raised: 0.3 -> 0.7 of a core, measured again without waiting for the schedule.
        assert!(dirty_due(Some(s(5)), every_30, 0.7, Some(0.3)));
        assert!(dirty_due(Some(s(5)), every_30, 0.3, Some(0.7)), "fell");
        // Noise does not count, and a ramp is not measured every sample.
        assert!(!dirty_due(Some(s(5)), every_30, 0.35, Some(0.3)));
        assert!(!dirty_due(
            Some(Duration::from_millis(1500)),
            every_30,
            0.9,
            Some(0.3)
        ));
        assert!(!dirty_due(Some(s(5)), every_30, f64::NAN, Some(0.3)));
    }

    #[test]
    fn demand_per_vm_from_the_best_source_and_summed_for_the_host() {
        let hub = MetricsHub::new(
            Duration::from_secs(30),
            Capacity {
                cpus: 1.0,
                memory_bytes: 1 << 30,
            },
        );
        let vm = |name: &str, used, pct, wait| VmMetrics {
            name: name.into(),
            cpu_cores: used,
            vcpus: 1,
            workload_demand_pct: pct,
            cpu_wait_cores: wait,
            ..VmMetrics::default()
        };
        for m in [
            vm("a", 0.3, Some(90.0), Some(0.1)),
            vm("b", 0.2, None, Some(0.5)),
            vm("c", 0.1, None, None),
        ] {
            lock(&hub.state).insert(m.name.clone(), (m, Counters::default()));
        }
        // The host cgroup: 1.2 s throttled over 2 s = 0.6 cores; its VMs used 0.6, so they
        // wanted twice what they got.
        let t0 = tokio::time::Instant::now();
        let stat = |periods, throttled, ns| CpuStat {
            nr_periods: periods,
            nr_throttled: throttled,
            throttled_ns: ns,
        };
        hub.sample_cgroup(t0, Some(stat(10, 1, 100_000_000)));
        hub.sample_cgroup(
            t0 + Duration::from_secs(2),
            Some(stat(30, 16, 1_300_000_000)),
        );
        hub.estimate_demand();
        let (host, vms) = hub.snapshot(PowerState::Standby);
        let got: Vec<(&str, f64, DemandSource)> = vms
            .iter()
            .map(|m| (m.name.as_str(), m.cpu_demand_cores, m.cpu_demand_source))
            .collect();
        assert_eq!(got[0], ("a", 0.9, DemandSource::Guest));
        assert_eq!(got[1].2, DemandSource::RunDelay);
        assert!((got[1].1 - 0.7).abs() < 1e-9, "{got:?}");
        assert_eq!(got[2].2, DemandSource::Throttling);
        assert!((got[2].1 - 0.2).abs() < 1e-9, "{got:?}");
        assert!((host.cpu_demand_cores - 1.8).abs() < 1e-9, "{host:?}");
        assert!((host.cpu_used_cores - 0.6).abs() < 1e-9, "{host:?}");
        assert!(host
            .cpu_throttled_cores
            .is_some_and(|c| (c - 0.6).abs() < 1e-9));
        assert_eq!(host.cpu_throttled_periods_pct, Some(75.0));
        assert_eq!(host.power, PowerState::Standby);
        // A cgroup no longer visible: throttling unknown, not zero.
        hub.sample_cgroup(t0 + Duration::from_secs(4), None);
        assert_eq!(hub.snapshot(PowerState::Active).0.cpu_throttled_cores, None);
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
            text.contains("drover_host_power_state{state=\"active\"} 1.0"),
            "{text}"
        );
        assert!(
            text.contains("drover_host_power_state{state=\"standby\"} 0.0"),
            "{text}"
        );
        assert!(text.contains("drover_host_cpu_demand_cores 0.0"), "{text}");
        assert!(!text.contains("drover_host_cpu_throttled_cores"), "{text}");
        assert!(
            !text.contains("drover_vm_workload_demand_percent{"),
            "{text}"
        );
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
