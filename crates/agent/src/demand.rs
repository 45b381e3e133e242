//! CPU demand: what a VM wants, including what its host could not give it. Pure arithmetic
//! over what the sampler measured (`metrics`), so every rule is unit-tested.
//!
//! Use (CPU time QEMU got) cannot show an overload: on a host capped at 2 cores by its cgroup,
//! use never exceeds 2, however much the VMs want. Demand adds what they could not get. Per VM,
//! from the best source available ([`DemandSource`], best first):
//! 1. the guest's own report: its workload knows the share of its vCPU it tries to use
//!    (`demand_pct`; the workloads run one thread, so one vCPU at most). Demand is that share
//!    of a core, never less than the measured use (QEMU's own threads count too), and only
//!    while the reports are fresh ([`GUEST_REPORT_MAX_AGE_MS`]);
//! 2. run delay: the time its QEMU's threads were runnable but not running (schedstat),
//!    added to its use. It counts every wait for a core, throttling by the cgroup's quota
//!    included, and is per VM. It is preferred over the cgroup's own counters because it is
//!    exact per thread and readable where the cgroup is not (an agent under `ip netns exec`
//!    sees a fresh /sys without the cgroup mounts) and because `throttled_time` counts per
//!    run queue: one busy thread capped at 0.2 cores for 2 s showed 1.54 s of run delay (the
//!    truth: 1.56 s) but 1.12 s of throttled time;
//! 3. the host cgroup's throttling: its use scaled by `(used + throttled) / used`, where
//!    `throttled` is the time per second the host's cgroup spent throttled (cores) and `used`
//!    the sum of its VMs' use, so throttling is shared out in proportion to use;
//! 4. use alone.
//!
//! A host's demand is the sum of its VMs'. All of it is an estimate: a guest's share is what it
//! asks for, not what emulating it costs QEMU; run delay also counts waits caused by other
//! processes; throttling shares are proportional, not measured.

use crate::procfs::CpuStat;
use drover_api::metrics::DemandSource;

/// A guest's demand counts only if its last report is younger than this, ms.
pub const GUEST_REPORT_MAX_AGE_MS: u64 = 5_000;

/// Threads a guest workload runs (its demand is a share of one vCPU).
pub const WORKLOAD_THREADS: f64 = 1.0;

/// What is known about one VM's CPU over the last sampling interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DemandInputs {
    /// CPU its QEMU used, cores.
    pub used_cores: f64,
    pub vcpus: u32,
    /// The guest's own demand, percent of one vCPU (None: not reported, or stale).
    pub guest_demand_pct: Option<f64>,
    /// Its QEMU's threads' run delay, cores.
    pub wait_cores: Option<f64>,
    /// The host's throttling factor, `(used + throttled) / used` (None: unknown).
    pub throttle_factor: Option<f64>,
}

/// A VM's CPU demand, cores, and where it comes from.
pub fn vm_demand(i: &DemandInputs) -> (f64, DemandSource) {
    let used = finite(i.used_cores);
    if let Some(pct) = i.guest_demand_pct.filter(|p| p.is_finite()) {
        let asked = (pct.clamp(0.0, 100.0) / 100.0 * WORKLOAD_THREADS).min(f64::from(i.vcpus));
        return (asked.max(used), DemandSource::Guest);
    }
    if let Some(wait) = i.wait_cores.filter(|w| w.is_finite()) {
        return (used + wait.max(0.0), DemandSource::RunDelay);
    }
    if let Some(f) = i.throttle_factor.filter(|f| f.is_finite() && *f >= 1.0) {
        return (used * f, DemandSource::Throttling);
    }
    (used, DemandSource::Use)
}

/// A cgroup's throttling over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttling {
    /// Time spent throttled per second, cores.
    pub cores: f64,
    /// Percent of the enforcement periods in which it was throttled.
    pub periods_pct: f64,
}

/// The throttling between two readings `secs` apart (None over no time, or when the counters
/// went back: the cgroup was made anew).
pub fn throttling(before: CpuStat, after: CpuStat, secs: f64) -> Option<Throttling> {
    // NaN seconds are no interval either.
    let no_time = secs.is_nan() || secs <= 0.0;
    if no_time
        || after.nr_periods < before.nr_periods
        || after.nr_throttled < before.nr_throttled
        || after.throttled_ns < before.throttled_ns
    {
        return None;
    }
    let periods = after.nr_periods - before.nr_periods;
    let throttled = after.nr_throttled - before.nr_throttled;
    Some(Throttling {
        cores: (after.throttled_ns - before.throttled_ns) as f64 / 1e9 / secs,
        periods_pct: if periods == 0 {
            0.0
        } else {
            100.0 * throttled as f64 / periods as f64
        },
    })
}

/// `(used + throttled) / used`: how much more CPU the host's VMs wanted than they got (1 when
/// they used none: nothing to scale).
pub fn throttle_factor(throttled_cores: f64, used_cores: f64) -> f64 {
    if used_cores > 1e-6 && throttled_cores.is_finite() {
        (used_cores + throttled_cores.max(0.0)) / used_cores
    } else {
        1.0
    }
}

/// Run delay between two readings `secs` apart, cores (0 when it went back: a thread exited).
pub fn wait_cores(before_ns: u64, after_ns: u64, secs: f64) -> Option<f64> {
    (secs > 0.0).then(|| after_ns.saturating_sub(before_ns) as f64 / 1e9 / secs)
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x.max(0.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(used: f64) -> DemandInputs {
        DemandInputs {
            used_cores: used,
            vcpus: 1,
            ..DemandInputs::default()
        }
    }

    #[test]
    fn the_guest_knows_best_but_never_below_use() {
        let guest = |pct, used| {
            vm_demand(&DemandInputs {
                guest_demand_pct: Some(pct),
                wait_cores: Some(5.0),
                ..inputs(used)
            })
        };
        // Capped host: the guest asks for 90% of its vCPU, got 30%.
        assert_eq!(guest(90.0, 0.3), (0.9, DemandSource::Guest));
        // QEMU's overhead shows in use: use wins.
        assert_eq!(guest(10.0, 0.15), (0.15, DemandSource::Guest));
        assert_eq!(guest(250.0, 0.0), (1.0, DemandSource::Guest));
        assert_eq!(guest(-5.0, 0.0), (0.0, DemandSource::Guest));
        // A NaN report is no report.
        assert_eq!(
            vm_demand(&DemandInputs {
                guest_demand_pct: Some(f64::NAN),
                ..inputs(0.2)
            }),
            (0.2, DemandSource::Use)
        );
    }

    #[test]
    fn then_run_delay_then_throttling_then_use() {
        let with = |wait, factor| {
            vm_demand(&DemandInputs {
                wait_cores: wait,
                throttle_factor: factor,
                ..inputs(0.4)
            })
        };
        assert_eq!(with(Some(0.5), Some(3.0)), (0.9, DemandSource::RunDelay));
        assert_eq!(with(None, Some(2.5)), (1.0, DemandSource::Throttling));
        assert_eq!(
            with(None, Some(0.5)),
            (0.4, DemandSource::Use),
            "a factor < 1 is bogus"
        );
        assert_eq!(with(None, None), (0.4, DemandSource::Use));
    }

    #[test]
    fn throttling_arithmetic() {
        let before = CpuStat {
            nr_periods: 100,
            nr_throttled: 10,
            throttled_ns: 1_000_000_000,
        };
        let after = CpuStat {
            nr_periods: 120,
            nr_throttled: 28,
            throttled_ns: 2_600_000_000,
        };
        // 1.6 s throttled over 2 s: 0.8 cores wanted and not served; 18 of 20 periods.
        let t = throttling(before, after, 2.0).expect("an interval");
        assert!((t.cores - 0.8).abs() < 1e-12, "{t:?}");
        assert!((t.periods_pct - 90.0).abs() < 1e-12, "{t:?}");
        assert_eq!(throttling(after, before, 2.0), None, "counters reset");
        assert_eq!(throttling(before, after, 0.0), None);
        let idle = throttling(before, before, 1.0).expect("an interval");
        assert_eq!((idle.cores, idle.periods_pct), (0.0, 0.0));
        // A host capped at 0.2 cores whose VMs used 0.2: they wanted 0.2 + 0.8 = 5 times more.
        assert!((throttle_factor(0.8, 0.2) - 5.0).abs() < 1e-12);
        assert_eq!(throttle_factor(0.8, 0.0), 1.0);
        assert_eq!(throttle_factor(f64::NAN, 1.0), 1.0);
    }

    #[test]
    fn run_delay_rates() {
        assert_eq!(wait_cores(1_000_000_000, 2_500_000_000, 2.0), Some(0.75));
        assert_eq!(wait_cores(5, 1, 2.0), Some(0.0), "a thread exited");
        assert_eq!(wait_cores(0, 1, 0.0), None);
    }
}
