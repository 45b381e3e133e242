//! The record a migration run produces, and the workload-throughput arithmetic behind it.
//!
//! Throughput is measured from the guest's cumulative operation counter, time-stamped on the
//! host when each report arrives. Host time matters: the guest's own clock stops while it is
//! paused, so guest-computed rates would hide the very downtime we measure. Between reports the
//! counter is interpolated linearly.
//!
//! # Times
//!
//! Every time in the record comes from one [`Span`], stamped on the driver's clock (the host's
//! monotonic clock, the same one the guest's reports are stamped with):
//! - **start**: QEMU accepted `migrate`.
//! - **switched**: the destination was first seen running the guest (polled with the source).
//!   Only when the guest ended on the destination.
//! - **over**: the migration is over once the source QEMU has reported its end (completed,
//!   failed, cancelled, or paused by Drover) *and*, if the guest moved, the guest runs on the
//!   destination, whichever is later. A pre-copy's source reports completion a moment before the
//!   destination resumes the guest; a post-copy's guest runs on the destination long before the
//!   source completes. Either way the migration is not over until both are true.
//!
//! `total_ms = over - start` and `switchover_ms = switched - start`. Since `over` is the later
//! of the source's end and `switched`, `switchover_ms <= total_ms` holds by construction.
//! (The pause, `downtime_ms`, comes from QEMU's own STOP/RESUME event stamps instead.)
//!
//! # Windows
//!
//! With `start` and `over` from the span:
//! - before: `[start - 3 s, start]`
//! - during: `[start, max(over, start + 10 s)]` (degradation is judged over this one)
//! - after:  `[max(over, start + 10 s), +3 s]`

use super::source::{EndStatus, SourceOutcome};
use super::technique::Technique;
use super::watchdog::WatchdogAction;
use serde::{Deserialize, Serialize};

/// Length of the "before" and "after" windows.
pub const SIDE_WINDOW_MS: u64 = 3_000;
/// Shortest "during" window.
pub const MIN_DURING_MS: u64 = 10_000;

/// A run's instants on the driver's clock (see the module doc). Built by [`Span::of`] only, so
/// `switched <= over` always holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// QEMU accepted `migrate`, ms.
    started_ms: u64,
    /// The guest first seen running on the destination, ms; None unless it ended there.
    switched_ms: Option<u64>,
    /// The migration was over, ms.
    over_ms: u64,
}

impl Span {
    /// The span of a finished run, from the source's outcome and the moment the destination was
    /// first seen running the guest (same clock).
    pub fn of(outcome: &SourceOutcome, dest_running_ms: Option<u64>) -> Span {
        let switched_ms = dest_running_ms.filter(|_| outcome.vm_on_destination);
        let source_end = outcome.ended_ms.max(outcome.started_ms);
        Span {
            started_ms: outcome.started_ms,
            switched_ms,
            over_ms: switched_ms.map_or(source_end, |t| source_end.max(t)),
        }
    }

    /// When the migration started, ms (driver clock).
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// When the migration was over, ms (driver clock).
    pub fn over_ms(&self) -> u64 {
        self.over_ms
    }

    /// Start to over, ms.
    pub fn total_ms(&self) -> u64 {
        self.over_ms - self.started_ms
    }

    /// Start until the guest first ran on the destination, ms; never more than
    /// [`Span::total_ms`].
    pub fn switchover_ms(&self) -> Option<u64> {
        self.switched_ms.map(|t| t.saturating_sub(self.started_ms))
    }

    /// End of the "during" window, ms (driver clock).
    pub fn during_end_ms(&self) -> u64 {
        self.over_ms.max(self.started_ms + MIN_DURING_MS)
    }

    /// End of the "after" window: guest reports are needed until then, ms (driver clock).
    pub fn samples_until_ms(&self) -> u64 {
        self.during_end_ms() + SIDE_WINDOW_MS
    }
}

/// One guest report as the host received it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OpsSample {
    /// Host clock, ms (same clock as the migration's start and end).
    pub host_ms: u64,
    /// Cumulative operations done by the workload.
    pub ops: u64,
    /// Cumulative integrity errors seen by the workload.
    pub integrity_errors: u64,
}

/// Cumulative ops at `t`, interpolated; None outside the samples' span.
fn ops_at(samples: &[OpsSample], t: u64) -> Option<f64> {
    let after = samples.partition_point(|s| s.host_ms < t);
    let hi = samples.get(after)?;
    if hi.host_ms == t {
        return Some(hi.ops as f64);
    }
    let lo = samples.get(after.checked_sub(1)?)?;
    let span = (hi.host_ms - lo.host_ms) as f64;
    let frac = (t - lo.host_ms) as f64 / span;
    Some(lo.ops as f64 + frac * (hi.ops as f64 - lo.ops as f64))
}

/// Mean ops/s over `[from, to]`; None when the samples do not cover it.
pub fn mean_rate(samples: &[OpsSample], from: u64, to: u64) -> Option<f64> {
    if to <= from {
        return None;
    }
    let a = ops_at(samples, from)?;
    let b = ops_at(samples, to)?;
    Some((b - a).max(0.0) * 1000.0 / (to - from) as f64)
}

/// Throughput before, during and after a migration, and the degradation it implies. Each is
/// None when unknown, never a made-up zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Throughput {
    /// Mean ops/s over the before window; None when the reports do not cover it.
    pub before: Option<f64>,
    /// Mean ops/s over the during window; None when the reports do not cover it.
    pub during: Option<f64>,
    /// Mean ops/s over the after window; None when the reports do not cover it.
    pub after: Option<f64>,
    /// Work lost during the migration, percent of the before rate; see [`degradation_pct`].
    pub degradation_pct: Option<f64>,
}

/// `100 * (1 - during / before)`, or None when there is no baseline: either rate unknown, or
/// a before window with no work at all (a workload that had not started yet, or an idle one:
/// nothing to lose, so no percentage of it).
pub fn degradation_pct(before: Option<f64>, during: Option<f64>) -> Option<f64> {
    match (before, during) {
        (Some(b), Some(d)) if b > 0.0 => Some(100.0 * (1.0 - d / b)),
        _ => None,
    }
}

/// Computes the three windows (samples sorted by `host_ms`). A window the reports do not cover
/// is unknown, not zero: the reports may not be in yet (the agent writes the record when the
/// migration ends and again after measuring) or may be lost with a host, and neither says the
/// guest did no work.
pub fn throughput(samples: &[OpsSample], span: &Span) -> Throughput {
    let start_ms = span.started_ms();
    let window_end = span.during_end_ms();
    let before = mean_rate(samples, start_ms.saturating_sub(SIDE_WINDOW_MS), start_ms);
    let during = mean_rate(samples, start_ms, window_end);
    let after = mean_rate(samples, window_end, span.samples_until_ms());
    let degradation_pct = degradation_pct(before, during);
    Throughput {
        before,
        during,
        after,
        degradation_pct,
    }
}

/// Largest cumulative integrity error count reported (the guest never lowers it).
pub fn integrity_errors(samples: &[OpsSample]) -> u64 {
    samples
        .iter()
        .map(|s| s.integrity_errors)
        .max()
        .unwrap_or(0)
}

/// One migration run, as `migrate-bench` and the agent report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MigrationResult {
    /// As requested (may be `auto`).
    pub technique: Technique,
    /// What ran: auto's pick, or the requested technique.
    pub chosen: Technique,
    pub reason: String,
    pub status: EndStatus,
    /// Completed within its own parameters, without watchdog escalation.
    pub converged: bool,
    /// Start until the migration was over, ms (see the module doc's "Times").
    pub total_ms: u64,
    /// The guest's pause at switchover, ms (QEMU's STOP/RESUME stamps).
    pub downtime_ms: Option<u64>,
    /// Start until the guest first ran on the destination, ms (None if it never did); never
    /// more than `total_ms`.
    pub switchover_ms: Option<u64>,
    pub transferred_bytes: u64,
    /// Dirty-bitmap syncs, i.e. passes over memory.
    pub precopy_rounds: u64,
    pub postcopy_requests: u64,
    /// Workload ops/s before the migration (null: unknown).
    pub throughput_before: Option<f64>,
    /// Workload ops/s while it ran (null: unknown).
    pub throughput_during: Option<f64>,
    /// Workload ops/s after it (null: unknown).
    pub throughput_after: Option<f64>,
    /// Work lost while it ran, percent of the before rate (null: unknown, or no work before
    /// to compare with).
    pub degradation_pct: Option<f64>,
    /// Start until the workload's throughput stayed at 90% or more of its before rate, ms
    /// (null: unknown, or not restored within the reports; see `migration::agility`).
    #[serde(default)]
    pub restored_ms: Option<u64>,
    /// Performance restoration agility measured: work lost from the start until `restored_ms`,
    /// seconds of the before rate, the pause included (null as `restored_ms`; the definition
    /// the WAN fraction model predicts, `migration::agility`).
    #[serde(default)]
    pub agility_s: Option<f64>,
    pub integrity_errors: u64,
    /// Watchdog escalations in order, comma-separated, or "none".
    pub watchdog_action: String,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
}

/// Formats the watchdog's actions for the record.
pub fn watchdog_summary(actions: &[WatchdogAction]) -> String {
    if actions.is_empty() {
        return "none".to_string();
    }
    actions
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run from `start` whose source ended at `end`, the guest staying on the source.
    fn span(start: u64, end: u64) -> Span {
        Span {
            started_ms: start,
            switched_ms: None,
            over_ms: end,
        }
    }

    /// A guest doing `rate` ops/s, reporting every 100 ms, paused over `[pause_from, pause_to)`.
    fn samples(rate: u64, until: u64, pause_from: u64, pause_to: u64) -> Vec<OpsSample> {
        let mut out = Vec::new();
        let mut ops = 0;
        let mut t = 0;
        while t <= until {
            out.push(OpsSample {
                host_ms: t,
                ops,
                integrity_errors: 0,
            });
            if !(pause_from..pause_to).contains(&t) {
                ops += rate / 10;
            }
            t += 100;
        }
        out
    }

    #[test]
    fn steady_workload_has_no_degradation() {
        let s = samples(1000, 20_000, u64::MAX, u64::MAX);
        let t = throughput(&s, &span(5_000, 6_000));
        for rate in [t.before, t.during, t.after] {
            assert!((rate.expect("covered") - 1000.0).abs() < 1e-9, "{t:?}");
        }
        assert!(t.degradation_pct.expect("known").abs() < 1e-9);
    }

    #[test]
    fn one_second_pause_in_ten_second_window_is_ten_percent() {
        let s = samples(1000, 20_000, 6_000, 7_000);
        let t = throughput(&s, &span(5_000, 5_500));
        assert!(
            (t.degradation_pct.expect("known") - 10.0).abs() < 1e-6,
            "{t:?}"
        );
    }

    #[test]
    fn long_migration_extends_the_window() {
        let s = samples(1000, 40_000, 6_000, 8_000);
        let t = throughput(&s, &span(5_000, 25_000));
        // 2 s lost over 20 s.
        assert!(
            (t.degradation_pct.expect("known") - 10.0).abs() < 1e-6,
            "{t:?}"
        );
    }

    #[test]
    fn uncovered_windows_are_unknown_not_zero() {
        // Reports end at 8 s: the during window [5 s, 15 s] and the after window are unknown.
        let s = samples(1000, 8_000, u64::MAX, u64::MAX);
        let t = throughput(&s, &span(5_000, 5_100));
        assert!(t.before.is_some());
        assert_eq!((t.during, t.after, t.degradation_pct), (None, None, None));
    }

    #[test]
    fn no_work_before_means_no_degradation_figure() {
        // Idle throughout: nothing to lose.
        let idle = samples(0, 30_000, u64::MAX, u64::MAX);
        let t = throughput(&idle, &span(5_000, 6_000));
        assert_eq!((t.before, t.degradation_pct), (Some(0.0), None));
        // A workload that starts only after the migration began (e.g. after a link cut during
        // post-copy): the before window saw no work, so its degradation is unknown, not 0 %.
        let late: Vec<OpsSample> = (0..=300)
            .map(|i| OpsSample {
                host_ms: i * 100,
                ops: (i * 100).saturating_sub(12_000),
                integrity_errors: 0,
            })
            .collect();
        let t = throughput(&late, &span(5_000, 6_000));
        assert_eq!(t.before, Some(0.0));
        assert!(t.during.is_some_and(|d| d > 0.0), "{t:?}");
        assert_eq!(t.degradation_pct, None);
    }

    #[test]
    fn interpolation_between_reports() {
        let s = vec![
            OpsSample {
                host_ms: 0,
                ops: 0,
                integrity_errors: 0,
            },
            OpsSample {
                host_ms: 1000,
                ops: 100,
                integrity_errors: 2,
            },
        ];
        assert_eq!(mean_rate(&s, 0, 500), Some(100.0));
        assert_eq!(mean_rate(&s, 0, 2000), None);
        assert_eq!(integrity_errors(&s), 2);
    }

    #[test]
    fn watchdog_summary_lists_in_order() {
        assert_eq!(watchdog_summary(&[]), "none");
        assert_eq!(
            watchdog_summary(&[
                WatchdogAction::RaiseDowntime { downtime_ms: 1 },
                WatchdogAction::Cancel
            ]),
            "raise-downtime,cancel"
        );
    }
}

/// Everything a run's record is made from.
#[derive(Debug, Clone)]
pub struct RunFacts<'a> {
    pub requested: Technique,
    pub chosen: Technique,
    pub reason: &'a str,
    pub outcome: &'a super::source::SourceOutcome,
    /// When the destination first ran the guest (same clock as the outcome).
    pub dest_running_ms: Option<u64>,
    /// Pause measured from QEMU's STOP/RESUME events, preferred over QEMU's own downtime
    /// figure (which, in post-copy, spans the whole post-copy phase).
    pub pause_ms: Option<u64>,
    pub samples: &'a [OpsSample],
}

/// The guest's pause: QEMU's STOP/RESUME stamps when present. Without them, QEMU's own figure
/// is only trusted for pre-copy; in post-copy it spans the whole post-copy phase, so it is
/// better to report nothing than a pause the guest never had.
fn downtime_ms(f: &RunFacts<'_>) -> Option<u64> {
    let o = f.outcome;
    if !o.vm_on_destination {
        return None;
    }
    match (f.pause_ms, o.postcopy_started_ms) {
        (Some(pause), _) => Some(pause),
        (None, None) => o.last.downtime_ms,
        (None, Some(_)) => None,
    }
}

impl MigrationResult {
    /// Builds the record from what the driver and the metrics reader saw.
    pub fn assemble(f: &RunFacts<'_>) -> Self {
        let o = f.outcome;
        let span = Span::of(o, f.dest_running_ms);
        let t = throughput(f.samples, &span);
        let restored = super::agility::restoration(
            f.samples,
            span.started_ms(),
            span.samples_until_ms(),
            t.before,
        );
        MigrationResult {
            technique: f.requested,
            chosen: f.chosen,
            reason: f.reason.to_string(),
            status: o.status,
            converged: o.converged,
            total_ms: span.total_ms(),
            downtime_ms: downtime_ms(f),
            switchover_ms: span.switchover_ms(),
            transferred_bytes: o.last.transferred(),
            precopy_rounds: o.last.ram.map_or(0, |r| r.dirty_sync_count),
            postcopy_requests: o.last.ram.map_or(0, |r| r.postcopy_requests),
            throughput_before: t.before,
            throughput_during: t.during,
            throughput_after: t.after,
            degradation_pct: t.degradation_pct,
            restored_ms: restored.map(|r| r.restored_ms),
            agility_s: restored.map(|r| r.agility_s),
            integrity_errors: integrity_errors(f.samples),
            watchdog_action: watchdog_summary(&o.watchdog_actions),
            error: o.error.clone(),
        }
    }
}

#[cfg(test)]
mod assemble_tests {
    use super::*;
    use crate::migration::progress::{Progress, RamProgress};

    fn outcome(started_ms: u64, ended_ms: u64, vm_on_destination: bool) -> SourceOutcome {
        SourceOutcome {
            status: EndStatus::Completed,
            converged: true,
            vm_on_destination,
            started_ms,
            ended_ms,
            postcopy_started_ms: None,
            watchdog_actions: vec![],
            error: None,
            last: Progress::default(),
        }
    }

    #[test]
    fn precopy_is_over_when_the_destination_runs_the_guest() {
        // The source reports completion at 950; the destination is seen running at 980.
        let span = Span::of(&outcome(0, 950, true), Some(980));
        assert_eq!((span.total_ms(), span.switchover_ms()), (980, Some(980)));
    }

    #[test]
    fn postcopy_is_over_when_the_source_completes() {
        let span = Span::of(&outcome(5_000, 5_600, true), Some(5_120));
        assert_eq!((span.total_ms(), span.switchover_ms()), (600, Some(120)));
    }

    #[test]
    fn a_guest_that_stayed_has_no_switchover() {
        let span = Span::of(&outcome(0, 700, false), Some(300));
        assert_eq!((span.total_ms(), span.switchover_ms()), (700, None));
    }

    #[test]
    fn switchover_never_exceeds_total() {
        for ended in (0..2_000).step_by(97) {
            for seen in (0..3_000).step_by(89) {
                for moved in [true, false] {
                    let span = Span::of(&outcome(100, 100 + ended, moved), Some(seen));
                    let sw = span.switchover_ms().unwrap_or(0);
                    assert!(sw <= span.total_ms(), "{span:?}");
                    assert!(span.over_ms() <= span.samples_until_ms());
                }
            }
        }
    }

    #[test]
    fn record_from_a_completed_postcopy_run() {
        let outcome = SourceOutcome {
            status: EndStatus::Completed,
            converged: true,
            vm_on_destination: true,
            started_ms: 5_000,
            ended_ms: 5_600,
            postcopy_started_ms: Some(5_050),
            watchdog_actions: vec![],
            error: None,
            last: Progress {
                ram: Some(RamProgress {
                    transferred: 300,
                    remaining: 0,
                    total: 256,
                    dirty_sync_count: 2,
                    postcopy_requests: 9,
                }),
                downtime_ms: Some(45),
                ..Progress::default()
            },
        };
        let samples: Vec<OpsSample> = (0..200)
            .map(|i| OpsSample {
                host_ms: i * 100,
                ops: i * 10,
                integrity_errors: 0,
            })
            .collect();
        let r = MigrationResult::assemble(&RunFacts {
            requested: Technique::Auto,
            chosen: Technique::Postcopy,
            reason: "why",
            outcome: &outcome,
            dest_running_ms: Some(5_120),
            pause_ms: Some(45),
            samples: &samples,
        });
        assert_eq!(r.switchover_ms, Some(120));
        assert_eq!(r.total_ms, 600);
        assert_eq!(r.downtime_ms, Some(45));
        assert_eq!(
            (r.precopy_rounds, r.postcopy_requests, r.transferred_bytes),
            (2, 9, 300)
        );
        assert_eq!(r.watchdog_action, "none");
        assert!(r.degradation_pct.expect("known").abs() < 1e-9);
        // The guest never slowed: restored at once, nothing lost.
        assert_eq!((r.restored_ms, r.agility_s), (Some(0), Some(0.0)));
        let json = serde_json::to_value(&r).expect("json");
        for field in [
            "technique",
            "chosen",
            "reason",
            "status",
            "converged",
            "total_ms",
            "downtime_ms",
            "switchover_ms",
            "transferred_bytes",
            "precopy_rounds",
            "postcopy_requests",
            "throughput_before",
            "throughput_during",
            "throughput_after",
            "degradation_pct",
            "integrity_errors",
            "watchdog_action",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(json["technique"], "auto");
        // Without reports the figures are null on the wire, not 0.
        let r = MigrationResult::assemble(&RunFacts {
            samples: &[],
            requested: Technique::Auto,
            chosen: Technique::Postcopy,
            reason: "why",
            outcome: &outcome,
            dest_running_ms: Some(5_120),
            pause_ms: Some(45),
        });
        let json = serde_json::to_value(&r).expect("json");
        for field in ["throughput_before", "throughput_during", "degradation_pct"] {
            assert!(json[field].is_null(), "{field}: {json}");
        }
        assert_eq!(json["status"], "completed");
    }
}
