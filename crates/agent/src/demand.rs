//! CPU demand: what a VM wants, including what its host could not give it. Pure arithmetic
//! over what the sampler measured (`metrics`), so every rule is unit-tested.
//!
//! Use (CPU time QEMU got) cannot show an overload: on a host capped at 2 cores by its cgroup,
//! use never exceeds 2, however much the VMs want. Demand adds what they could not get. Per VM,
//! from the best source available ([`DemandSource`], best first):
//! 1. the guest's own report: its workload knows the share `p` of its vCPU it tries to use
//!    (`demand_pct`; the workloads run one thread, so one vCPU at most: `memtouch+disk`
//!    interleaves its two parts on that thread and reports their shares' sum). Demand is
//!    `p + (1 - p) x idle`, where `idle` is what this VM's QEMU uses while its guest asks for
//!    nearly nothing ([`learn_idle`]): the vCPU costs a core while busy and QEMU's idle cost
//!    for the rest (about 0.28 of a core for an idle guest under TCG here, about nothing
//!    under KVM, where this is the share itself). Never less than the measured use (QEMU's
//!    own threads count too), and only while the reports are fresh
//!    ([`GUEST_REPORT_MAX_AGE_MS`]). Without the idle term a guest paced at 50% read as 0.5
//!    of a core while its QEMU used 0.66 to do that work, and a host of two such guests
//!    read under its cap when it was not (BENCHMARKS.md, the demo's paced raise);
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
    /// What its QEMU uses while the guest asks for nearly nothing, cores (None: not learnt).
    pub idle_cores: Option<f64>,
}

/// A guest asking for less than this share of its vCPU, percent, counts as idle for
/// [`learn_idle`].
pub const IDLE_SHARE_PCT: f64 = 1.0;

/// The guest's own demand, percent of one vCPU, if it may stand for this VM's demand here:
/// its last report is younger than [`GUEST_REPORT_MAX_AGE_MS`] (`report_age_ms`) and its
/// guest still runs on this host. Once a post-copy has switched over (`guest_away`) the guest
/// runs on the destination and this QEMU only serves its pages: its last report, still fresh
/// for a few seconds, would count the guest on both hosts and keep a relieved source reading
/// as overloaded (the demo saw h1 at 1.33 of 1.2 cores for 4 s after d2 had left), so such a
/// VM's demand is what its QEMU uses.
pub fn guest_share(
    demand_pct: Option<f64>,
    report_age_ms: Option<u64>,
    guest_away: bool,
) -> Option<f64> {
    let fresh = report_age_ms.is_some_and(|a| a < GUEST_REPORT_MAX_AGE_MS);
    demand_pct.filter(|_| fresh && !guest_away)
}

/// Weight of a new sample in the idle cost's moving average.
const IDLE_WEIGHT: f64 = 0.2;

/// The VM's idle cost after this sample: a moving average of its use over the samples in
/// which its guest asked for under [`IDLE_SHARE_PCT`]; other samples leave it as it was.
/// A sample in which the VM waited for a core (a busy machine) lowers it, never raises it
/// past what idling costs, so the demand it feeds errs low, as before it was learnt. Clamped
/// to one core (a vCPU idles on one thread).
pub fn learn_idle(
    prev: Option<f64>,
    used_cores: f64,
    guest_demand_pct: Option<f64>,
) -> Option<f64> {
    let idle = guest_demand_pct.is_some_and(|p| p.is_finite() && p < IDLE_SHARE_PCT);
    if !(idle && used_cores.is_finite()) {
        return prev;
    }
    let used = used_cores.clamp(0.0, 1.0);
    Some(match prev {
        Some(old) => old + IDLE_WEIGHT * (used - old),
        None => used,
    })
}

/// A VM's CPU demand, cores, and where it comes from.
pub fn vm_demand(i: &DemandInputs) -> (f64, DemandSource) {
    let used = finite(i.used_cores);
    if let Some(pct) = i.guest_demand_pct.filter(|p| p.is_finite()) {
        let share = pct.clamp(0.0, 100.0) / 100.0;
        let idle = i.idle_cores.map_or(0.0, |c| finite(c).min(1.0));
        let asked = ((share + (1.0 - share) * idle) * WORKLOAD_THREADS).min(f64::from(i.vcpus));
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

    #[test]
    fn a_guest_report_counts_while_fresh_and_while_the_guest_runs_here() {
        assert_eq!(guest_share(Some(60.0), Some(900), false), Some(60.0));
        assert_eq!(
            guest_share(Some(60.0), Some(GUEST_REPORT_MAX_AGE_MS), false),
            None
        );
        assert_eq!(guest_share(Some(60.0), None, false), None);
        assert_eq!(guest_share(None, Some(900), false), None);
        // Post-copy switched: the fresh report belongs to the guest now on the destination.
        assert_eq!(guest_share(Some(60.0), Some(900), true), None);
        let (cores, source) = vm_demand(&DemandInputs {
            used_cores: 0.3,
            vcpus: 1,
            guest_demand_pct: guest_share(Some(60.0), Some(900), true),
            idle_cores: Some(0.28),
            ..DemandInputs::default()
        });
        assert_eq!((cores, source), (0.3, DemandSource::Use));
    }

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
    fn a_guest_share_adds_its_qemu_idle_cost_for_the_rest() {
        let guest = |pct, idle, used| {
            vm_demand(&DemandInputs {
                guest_demand_pct: Some(pct),
                idle_cores: idle,
                ..inputs(used)
            })
            .0
        };
        // 60% busy at a core, 40% idle at 0.25 of one: 0.7.
        assert!((guest(60.0, Some(0.25), 0.5) - 0.7).abs() < 1e-12);
        // Flat out the idle cost does not count; idle, it is all there is.
        assert_eq!(guest(100.0, Some(0.25), 0.5), 1.0);
        assert!((guest(0.0, Some(0.25), 0.1) - 0.25).abs() < 1e-12);
        // Not learnt, or nonsense: the share alone, as before.
        assert_eq!(guest(60.0, None, 0.0), 0.6);
        assert_eq!(guest(60.0, Some(f64::NAN), 0.0), 0.6);
        assert_eq!(guest(50.0, Some(7.0), 0.0), 1.0);
    }

    #[test]
    fn the_idle_cost_is_learnt_only_while_idle() {
        assert_eq!(learn_idle(None, 0.3, Some(0.1)), Some(0.3));
        let next = learn_idle(Some(0.3), 0.2, Some(0.1)).expect("learnt");
        assert!((next - 0.28).abs() < 1e-12, "{next}");
        // Busy, unreported or nonsense: unchanged.
        assert_eq!(learn_idle(Some(0.3), 0.9, Some(50.0)), Some(0.3));
        assert_eq!(learn_idle(None, 0.1, None), None);
        assert_eq!(learn_idle(Some(0.3), f64::NAN, Some(0.1)), Some(0.3));
        assert_eq!(learn_idle(Some(0.3), 0.3, Some(f64::NAN)), Some(0.3));
        assert_eq!(learn_idle(None, 3.0, Some(0.0)), Some(1.0));
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
