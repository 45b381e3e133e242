//! One WAN run's figures, from plain data: the sampler's series of the guest's cumulative
//! work, the source agent's migration record (or its refusal) and the model's forecast made
//! before the run. Pure.
//!
//! # The figures, measured
//! - **Downtime**: the record's `downtime_ms` (QEMU's STOP and RESUME stamps), ms; when the
//!   record has none (a post-copy whose RESUME came on the destination: the agent then reports
//!   nothing rather than QEMU's figure, which spans the whole post-copy), the longest stall in
//!   the series from the start to the switchover instead (`downtime_from` says which): the
//!   pause ends when the guest runs on the destination, so a stall after that is post-copy's
//!   degradation, not downtime.
//! - **Longest stall**: the longest run of samples from the start to the end in which the
//!   guest's work counter did not move, s: a lower bound of the guest's longest pause (or
//!   stretch of blocking on remote pages or blocks) within one sampling interval (250 ms).
//! - **Total time**: the record's start (the request accepted) to its end (every byte of
//!   memory and disk on the destination: the agent ends a storage post-copy's record once its
//!   stream has concluded), s. It includes preparing the destination (launching its QEMU),
//!   which the model leaves out, so the model under-predicts it by that much.
//! - **Degradation during the post-copy phase**: the guest's work rate from the switchover (the
//!   first sample in which the guest reports from the destination) to the record's end, against
//!   its rate over the `baseline_s` before the start: `100 · (1 - during/before)`, percent.
//!   Predicted: `100 · postcopy_lost_s / postcopy_s`. A strategy that leaves nothing for after
//!   the switchover has no such phase (None on both sides).
//! - **Restoration agility**: [`drover_core::migration::agility::restoration`] on the series
//!   (the same definition the model predicts: work lost, in seconds of the baseline rate, from
//!   the start until throughput stays at or above 90% of it), s.
//! - **Prediction error** of each figure: `100 · (measured - predicted) / predicted`, percent
//!   (None when either is missing or the prediction is 0).
//!
//! The guest's work is the `memtouch+disk` workload's `ops`: pages written plus disk blocks
//! read or written, so the memory part, at ten times the disk's rate by default, weighs most.

use super::config::Strategy;
use crate::series::Sample;
use drover_core::migration::agility::restoration;
use drover_core::migration::result::{mean_rate, OpsSample};
use drover_core::migration::wan::FractionPrediction;
use drover_core::migration::{StorageMode, Technique};
use serde::{Deserialize, Serialize};

/// A figure predicted before the run, measured on it, and the error between them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub predicted: Option<f64>,
    pub measured: Option<f64>,
    /// `100 · (measured - predicted) / predicted`, percent.
    pub error_pct: Option<f64>,
}

impl Figure {
    /// The figure with its error (None when either side is missing or the prediction is 0).
    pub fn new(predicted: Option<f64>, measured: Option<f64>) -> Figure {
        let error_pct = match (predicted, measured) {
            (Some(p), Some(m)) if p != 0.0 && p.is_finite() && m.is_finite() => {
                Some(100.0 * (m - p) / p)
            }
            _ => None,
        };
        Figure {
            predicted,
            measured,
            error_pct,
        }
    }
}

/// How the source agent answered and ended the migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Migrated {
    /// The request was refused (the agent's answer, or the contract's check in its client).
    Refused { message: String },
    /// It ran; the record's final state and figures.
    Ran {
        /// `completed`, `failed`, `paused`...
        state: String,
        started_s: f64,
        ended_s: Option<f64>,
        downtime_ms: Option<u64>,
        transferred_bytes: Option<u64>,
        error: Option<String>,
        notes: Vec<String>,
    },
}

/// What was asked of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Asked {
    pub technique: Technique,
    pub storage: StorageMode,
    /// The model's fractions (the pure strategies' are 1 and 1, or 0 and 0).
    pub memory_fraction: f64,
    pub storage_fraction: f64,
}

/// Everything one run recorded.
#[derive(Debug, Clone)]
pub struct RunRecord<'a> {
    pub strategy: Strategy,
    pub run: u32,
    pub vm: &'a str,
    /// The host the VM moves to.
    pub dest: &'a str,
    pub asked: Asked,
    pub predicted: &'a FractionPrediction,
    /// The plan's reason (why the model picked its fractions).
    pub reason: &'a str,
    pub migrated: &'a Migrated,
    pub series: &'a [Sample],
    pub baseline_s: f64,
    pub has_postcopy: bool,
}

/// One run's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub strategy: Strategy,
    pub run: u32,
    /// `refused`, or the record's final state.
    pub state: String,
    /// The refusal's or the failure's message.
    pub error: Option<String>,
    pub technique: Technique,
    pub storage: StorageMode,
    pub memory_fraction: f64,
    pub storage_fraction: f64,
    pub downtime_ms: Figure,
    pub total_s: Figure,
    pub postcopy_degradation_pct: Figure,
    pub agility_s: Figure,
    /// Start until throughput stayed restored, s (measured; predicted `restored_s`).
    pub restored_s: Figure,
    /// The post-copy phase measured: switchover to end, s.
    pub postcopy_s: Option<f64>,
    /// Where the measured downtime comes from: `record` (QEMU's stamps), `series` (the
    /// longest stall), or `-` (none).
    pub downtime_from: String,
    /// The longest stall in the series from start to end, s (see the module doc).
    pub longest_stall_s: Option<f64>,
    /// Work rate over the baseline, ops/s.
    pub before_ops_s: Option<f64>,
    pub integrity_errors: u64,
    pub transferred_bytes: Option<u64>,
    /// Start of the migration, Unix s (None: refused).
    pub start_s: Option<f64>,
    pub switch_s: Option<f64>,
    pub end_s: Option<f64>,
    pub reason: String,
    pub notes: Vec<String>,
}

impl RunResult {
    pub fn refused(&self) -> bool {
        self.state == "refused"
    }
}

/// The VM's cumulative work in `series`, stamped with the sampler's clock in ms.
pub fn ops_samples(series: &[Sample], vm: &str) -> Vec<OpsSample> {
    let mut out: Vec<OpsSample> = Vec::new();
    for s in series {
        let Some(v) = s.vm(vm) else { continue };
        let host_ms = (s.t_s * 1000.0).max(0.0) as u64;
        // One stamp a time, and the counter never goes back (a stale copy's report).
        if out
            .last()
            .is_some_and(|l| host_ms <= l.host_ms || v.ops < l.ops)
        {
            continue;
        }
        out.push(OpsSample {
            host_ms,
            ops: v.ops,
            integrity_errors: v.integrity_errors,
        });
    }
    out
}

/// The first sample at or after `from_s` in which the VM reports from `dest`, Unix s.
pub fn switch_time(series: &[Sample], vm: &str, dest: &str, from_s: f64) -> Option<f64> {
    series
        .iter()
        .filter(|s| s.t_s >= from_s)
        .find(|s| s.vm(vm).is_some_and(|v| v.host == dest))
        .map(|s| s.t_s)
}

/// The longest run of samples within `from_ms..=to_ms` whose counter did not move, s (first
/// to last sample of the run; 0 when it always moved; None without two samples there).
pub fn longest_stall_s(ops: &[OpsSample], from_ms: u64, to_ms: u64) -> Option<f64> {
    let inside: Vec<&OpsSample> = ops
        .iter()
        .filter(|s| (from_ms..=to_ms).contains(&s.host_ms))
        .collect();
    if inside.len() < 2 {
        return None;
    }
    let mut longest = 0;
    let mut since = inside[0];
    for s in &inside[1..] {
        if s.ops != since.ops {
            since = s;
        } else {
            longest = longest.max(s.host_ms - since.host_ms);
        }
    }
    Some(longest as f64 / 1000.0)
}

fn ms(t_s: f64) -> u64 {
    (t_s * 1000.0).max(0.0) as u64
}

/// The measured side of a run that ran: (before, post-copy phase and its degradation,
/// restoration).
struct Measured {
    before: Option<f64>,
    switch_s: Option<f64>,
    postcopy_s: Option<f64>,
    degradation_pct: Option<f64>,
    agility_s: Option<f64>,
    restored_s: Option<f64>,
    longest_stall_s: Option<f64>,
    /// The longest stall from the start to the switchover, s.
    stall_to_switch_s: Option<f64>,
}

fn measure(r: &RunRecord<'_>, start_s: f64, end_s: Option<f64>) -> Measured {
    let ops = ops_samples(r.series, r.vm);
    let start = ms(start_s);
    let before = mean_rate(&ops, ms(start_s - r.baseline_s), start);
    let switch_s = switch_time(r.series, r.vm, r.dest, start_s);
    let phase = match (r.has_postcopy, switch_s, end_s) {
        (true, Some(s), Some(e)) if e > s => Some((s, e)),
        _ => None,
    };
    let degradation_pct = phase.and_then(|(s, e)| {
        let during = mean_rate(&ops, ms(s), ms(e))?;
        before
            .filter(|b| *b > 0.0)
            .map(|b| 100.0 * (1.0 - during / b))
    });
    let until = ops.last().map_or(start, |l| l.host_ms);
    let stall = end_s.and_then(|e| longest_stall_s(&ops, start, ms(e)));
    let stall_to_switch_s = switch_s.and_then(|sw| longest_stall_s(&ops, start, ms(sw)));
    let rest = end_s.and_then(|_| restoration(&ops, start, until, before));
    Measured {
        before,
        switch_s,
        postcopy_s: phase.map(|(s, e)| e - s),
        degradation_pct,
        agility_s: rest.map(|x| x.agility_s),
        restored_s: rest.map(|x| x.restored_ms as f64 / 1000.0),
        longest_stall_s: stall,
        stall_to_switch_s,
    }
}

/// The run's figures (see the module doc).
pub fn summarize(r: &RunRecord<'_>) -> RunResult {
    let p = r.predicted;
    let predicted_degradation =
        (r.has_postcopy && p.postcopy_s > 0.0).then(|| 100.0 * p.postcopy_lost_s / p.postcopy_s);
    let integrity_errors = ops_samples(r.series, r.vm)
        .iter()
        .map(|s| s.integrity_errors)
        .max()
        .unwrap_or(0);
    let mut result = RunResult {
        strategy: r.strategy,
        run: r.run,
        state: "refused".into(),
        error: None,
        technique: r.asked.technique,
        storage: r.asked.storage,
        memory_fraction: r.asked.memory_fraction,
        storage_fraction: r.asked.storage_fraction,
        downtime_ms: Figure::new(Some(p.downtime_s * 1000.0), None),
        total_s: Figure::new(Some(p.total_s), None),
        postcopy_degradation_pct: Figure::new(predicted_degradation, None),
        agility_s: Figure::new(Some(p.agility_s), None),
        restored_s: Figure::new(Some(p.restored_s), None),
        postcopy_s: None,
        downtime_from: "-".into(),
        longest_stall_s: None,
        before_ops_s: None,
        integrity_errors,
        transferred_bytes: None,
        start_s: None,
        switch_s: None,
        end_s: None,
        reason: r.reason.to_string(),
        notes: Vec::new(),
    };
    match r.migrated {
        Migrated::Refused { message } => result.error = Some(message.clone()),
        Migrated::Ran {
            state,
            started_s,
            ended_s,
            downtime_ms,
            transferred_bytes,
            error,
            notes,
        } => {
            // A migration that did not complete (failed, paused) has no figures to compare
            // with the model's: the VM did not move as predicted.
            let completed = state == "completed";
            let m = measure(r, *started_s, ended_s.filter(|_| completed));
            let f = |x: &Figure, measured| Figure::new(x.predicted, measured);
            result.state = state.clone();
            result.error = error.clone();
            let (downtime, from) = match (downtime_ms, m.stall_to_switch_s) {
                _ if !completed => (None, "-"),
                (Some(d), _) => (Some(*d as f64), "record"),
                (None, Some(stall)) => (Some(stall * 1000.0), "series"),
                (None, None) => (None, "-"),
            };
            let downtime = downtime.filter(|_| completed);
            result.downtime_ms = f(&result.downtime_ms, downtime);
            result.downtime_from = from.into();
            result.longest_stall_s = m.longest_stall_s;
            let total = ended_s.filter(|_| completed).map(|e| e - started_s);
            result.total_s = f(&result.total_s, total);
            result.postcopy_degradation_pct =
                f(&result.postcopy_degradation_pct, m.degradation_pct);
            result.agility_s = f(&result.agility_s, m.agility_s);
            result.restored_s = f(&result.restored_s, m.restored_s);
            result.postcopy_s = m.postcopy_s;
            result.before_ops_s = m.before;
            result.transferred_bytes = *transferred_bytes;
            result.start_s = Some(*started_s);
            result.switch_s = m.switch_s;
            result.end_s = *ended_s;
            result.notes = notes.clone();
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::VmSample;

    /// A guest at 1000 ops/s on h1 until 20 s, paused 0.5 s, then on h2 at 500 ops/s until
    /// 24 s and 1000 ops/s after; samples every 250 ms from 0 to 40 s.
    fn series() -> Vec<Sample> {
        let rate = |t: f64| match t {
            t if t < 20.0 => 1000.0,
            t if t < 20.5 => 0.0,
            t if t < 24.0 => 500.0,
            _ => 1000.0,
        };
        let mut ops = 0.0;
        (0..=160)
            .map(|i| {
                let t = f64::from(i) * 0.25;
                let s = Sample {
                    t_s: t,
                    hosts: vec![],
                    vms: vec![VmSample {
                        name: "w1".into(),
                        host: if t < 20.5 { "h1" } else { "h2" }.into(),
                        ops: ops as u64,
                        demanded_ops: None,
                        ops_per_s: rate(t),
                        integrity_errors: 0,
                        full_ops_per_s: None,
                    }],
                };
                ops += rate(t) * 0.25;
                s
            })
            .collect()
    }

    fn predicted() -> FractionPrediction {
        FractionPrediction {
            memory_fraction: 0.0,
            storage_fraction: 0.0,
            converges: true,
            rounds: 0,
            ahead_s: 0.0,
            downtime_s: 0.4,
            postcopy_s: 4.0,
            total_s: 5.0,
            transferred_bytes: 1e8,
            remote_waits: 100.0,
            remote_wait_share: 0.1,
            postcopy_lost_s: 1.0,
            restored_s: 4.0,
            agility_s: 2.5,
        }
    }

    fn record<'a>(
        migrated: &'a Migrated,
        series: &'a [Sample],
        p: &'a FractionPrediction,
    ) -> RunRecord<'a> {
        RunRecord {
            strategy: Strategy::PurePostcopy,
            run: 1,
            vm: "w1",
            dest: "h2",
            asked: Asked {
                technique: Technique::Postcopy,
                storage: StorageMode::Postcopy,
                memory_fraction: 0.0,
                storage_fraction: 0.0,
            },
            predicted: p,
            reason: "why",
            migrated,
            series,
            baseline_s: 5.0,
            has_postcopy: true,
        }
    }

    #[test]
    fn errors_are_relative_to_the_prediction() {
        let f = Figure::new(Some(2.0), Some(3.0));
        assert_eq!(f.error_pct, Some(50.0));
        assert_eq!(Figure::new(Some(4.0), Some(3.0)).error_pct, Some(-25.0));
        assert_eq!(Figure::new(Some(0.0), Some(3.0)).error_pct, None);
        assert_eq!(Figure::new(None, Some(3.0)).error_pct, None);
        assert_eq!(Figure::new(Some(1.0), None).error_pct, None);
    }

    #[test]
    fn a_post_copy_run_measured_by_hand() {
        let s = series();
        let p = predicted();
        let ran = Migrated::Ran {
            state: "completed".into(),
            started_s: 19.0,
            ended_s: Some(24.0),
            downtime_ms: Some(500),
            transferred_bytes: Some(100),
            error: None,
            notes: vec![],
        };
        let r = summarize(&record(&ran, &s, &p));
        assert_eq!(r.state, "completed");
        assert_eq!(r.before_ops_s, Some(1000.0));
        assert_eq!(r.downtime_ms.measured, Some(500.0));
        assert!(
            (r.downtime_ms.error_pct.unwrap() - 25.0).abs() < 1e-9,
            "{r:?}"
        );
        assert_eq!(r.total_s.measured, Some(5.0));
        assert_eq!(r.total_s.error_pct, Some(0.0));
        // Switch seen at 20.5 s; 20.5 to 24 s at 500 ops/s: half the work lost.
        assert_eq!(r.switch_s, Some(20.5));
        assert_eq!(r.postcopy_s, Some(3.5));
        let d = r.postcopy_degradation_pct;
        assert!((d.measured.unwrap() - 50.0).abs() < 1.0, "{d:?}");
        assert_eq!(d.predicted, Some(25.0));
        // Lost: 0.5 s paused + 3.5 s at half speed = 2.25 s of the baseline's work.
        let a = r.agility_s.measured.expect("agility");
        assert!((a - 2.25).abs() < 0.1, "{a}");
        let restored = r.restored_s.measured.expect("restored");
        assert!((4.5..=6.0).contains(&restored), "{restored}");
        assert_eq!(r.integrity_errors, 0);
        assert_eq!(r.downtime_from, "record");
        // The pause from 20 to 20.5 s: the samples at 20, 20.25 and 20.5 s read the same.
        assert_eq!(r.longest_stall_s, Some(0.5));
    }

    #[test]
    fn without_the_records_downtime_the_longest_stall_stands_in() {
        let s = series();
        let p = predicted();
        let ran = Migrated::Ran {
            state: "completed".into(),
            started_s: 19.0,
            ended_s: Some(24.0),
            downtime_ms: None,
            transferred_bytes: None,
            error: None,
            notes: vec![],
        };
        let r = summarize(&record(&ran, &s, &p));
        assert_eq!(r.downtime_from, "series");
        assert_eq!(r.downtime_ms.measured, Some(500.0));
        let flat = |t: u64, ops: u64| OpsSample {
            host_ms: t,
            ops,
            integrity_errors: 0,
        };
        let ops = [
            flat(0, 1),
            flat(250, 2),
            flat(500, 2),
            flat(750, 2),
            flat(1000, 3),
        ];
        assert_eq!(longest_stall_s(&ops, 0, 1000), Some(0.5));
        // A stall after the switchover (20.5 s) is post-copy's, not the pause.
        let mut blocked = series();
        let at_21 = blocked
            .iter()
            .find(|x| x.t_s == 21.0)
            .map_or(0, |x| x.vms[0].ops);
        for x in blocked
            .iter_mut()
            .filter(|x| (21.0..=23.0).contains(&x.t_s))
        {
            x.vms[0].ops = at_21;
        }
        let r = summarize(&record(&ran, &blocked, &p));
        assert_eq!(r.downtime_ms.measured, Some(500.0));
        assert_eq!(r.longest_stall_s, Some(2.0));
        assert_eq!(longest_stall_s(&ops, 0, 250), Some(0.0));
        assert_eq!(longest_stall_s(&ops, 0, 100), None);
    }

    #[test]
    fn a_refused_run_keeps_its_prediction_and_the_message() {
        let s = series();
        let p = predicted();
        let refused = Migrated::Refused {
            message: "storage 'hybrid': expected precopy or postcopy".into(),
        };
        let r = summarize(&record(&refused, &s, &p));
        assert!(r.refused());
        assert_eq!(
            r.error.as_deref(),
            Some("storage 'hybrid': expected precopy or postcopy")
        );
        assert_eq!(r.agility_s, Figure::new(Some(2.5), None));
        assert_eq!((r.start_s, r.postcopy_s), (None, None));
    }

    #[test]
    fn a_pre_copy_has_no_post_copy_phase_and_an_unended_run_no_restoration() {
        let s = series();
        let p = predicted();
        let ran = Migrated::Ran {
            state: "failed".into(),
            started_s: 19.0,
            ended_s: None,
            downtime_ms: None,
            transferred_bytes: None,
            error: Some("deadline".into()),
            notes: vec![],
        };
        let mut rec = record(&ran, &s, &p);
        rec.has_postcopy = false;
        let r = summarize(&rec);
        assert_eq!(r.postcopy_degradation_pct, Figure::new(None, None));
        assert_eq!((r.agility_s.measured, r.total_s.measured), (None, None));
        assert_eq!(r.error.as_deref(), Some("deadline"));
    }

    #[test]
    fn samples_are_monotonic_and_the_switch_is_the_first_report_from_the_destination() {
        let mut s = series();
        // A stale copy's lower counter is skipped.
        s[10].vms[0].ops = 0;
        let ops = ops_samples(&s, "w1");
        assert!(ops
            .windows(2)
            .all(|w| w[0].ops <= w[1].ops && w[0].host_ms < w[1].host_ms));
        assert_eq!(ops.len(), s.len() - 1);
        assert_eq!(switch_time(&s, "w1", "h2", 0.0), Some(20.5));
        assert_eq!(switch_time(&s, "w1", "h3", 0.0), None);
        assert!(ops_samples(&s, "w9").is_empty());
    }
}
