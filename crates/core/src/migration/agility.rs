//! Performance restoration agility as measured on a run, from the guest's own reports: the same
//! definition the WAN fraction model predicts (`wan`'s module doc), so a prediction can be
//! judged by what the guest did rather than by the model that made it.
//!
//! **Agility** = the guest's work lost, in seconds of its pre-migration throughput `θ₀`, from
//! the migration's start until the instant `t_r` after which its throughput stays at or above
//! [`RESTORED_SHARE`] of `θ₀`:
//! `agility = (t_r - start) - (ops(t_r) - ops(start)) / θ₀`, at least 0 (a pause counts in
//! full: no ops while it lasts).
//!
//! Throughput "at" a time is the mean over a sliding window of [`WINDOW_MS`] (reports come every
//! 100 ms, so a shorter window would read report jitter as slowdowns); `t_r` is the end of the
//! last window, stepped by [`STEP_MS`] from the start to the end of the reports, whose mean is
//! below the share (the start itself when none is). "Stays" can only be judged up to the last
//! report: the span the record's windows cover ([`super::result::Span::samples_until_ms`]).

use super::result::{mean_rate, OpsSample};

/// Share of the pre-migration throughput that counts as restored (the model's default).
pub const RESTORED_SHARE: f64 = 0.9;
/// Width of the sliding window throughput is judged over, ms.
pub const WINDOW_MS: u64 = 1_000;
/// Step of the sliding window, ms.
pub const STEP_MS: u64 = 100;

/// A run's measured restoration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Restoration {
    /// Start until throughput stayed restored, ms.
    pub restored_ms: u64,
    /// Work lost until then, seconds of `θ₀`.
    pub agility_s: f64,
}

/// The restoration of a run that started at `start_ms` with throughput `before` ops/s, judged on
/// `samples` (sorted by `host_ms`) up to `until_ms`. None when there is no baseline (`before`
/// unknown or 0), the reports do not cover the span, or throughput is still below the share in
/// the last window (not restored within what was measured).
pub fn restoration(
    samples: &[OpsSample],
    start_ms: u64,
    until_ms: u64,
    before: Option<f64>,
) -> Option<Restoration> {
    let base = before.filter(|b| *b > 0.0 && b.is_finite())?;
    if until_ms < start_ms + WINDOW_MS {
        return None;
    }
    mean_rate(samples, start_ms, until_ms)?;
    let mut restored_at = start_ms;
    let mut end = start_ms + WINDOW_MS;
    let mut last_ok = true;
    while end <= until_ms {
        let rate = mean_rate(samples, end - WINDOW_MS, end)?;
        last_ok = rate >= RESTORED_SHARE * base;
        if !last_ok {
            restored_at = end;
        }
        end += STEP_MS;
    }
    if !last_ok {
        return None;
    }
    let span_s = (restored_at - start_ms) as f64 / 1e3;
    let done_s = match restored_at > start_ms {
        true => mean_rate(samples, start_ms, restored_at)? * span_s / base,
        false => 0.0,
    };
    Some(Restoration {
        restored_ms: restored_at - start_ms,
        agility_s: (span_s - done_s).max(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports every 100 ms from `from` to `to` of a guest doing `rate(t)` ops/s.
    fn series(from: u64, to: u64, rate: impl Fn(u64) -> f64) -> Vec<OpsSample> {
        let mut ops = 0.0;
        let mut out = vec![];
        let mut t = from;
        while t <= to {
            out.push(OpsSample {
                host_ms: t,
                ops: ops as u64,
                integrity_errors: 0,
            });
            ops += rate(t) * 0.1;
            t += 100;
        }
        out
    }

    #[test]
    fn a_pause_counts_in_full_and_restores_at_once() {
        // 1000 ops/s, paused 500 ms from 10 s on.
        let s = series(7_000, 25_000, |t| {
            if (10_000..10_500).contains(&t) {
                0.0
            } else {
                1000.0
            }
        });
        let r = restoration(&s, 10_000, 25_000, Some(1000.0)).unwrap();
        // The last window holding any of the pause ends just before 11.5 s.
        assert!((1_000..=1_500).contains(&r.restored_ms), "{r:?}");
        assert!((r.agility_s - 0.5).abs() < 0.02, "{r:?}");
    }

    #[test]
    fn a_slow_post_copy_counts_until_it_recovers() {
        // Half speed for 4 s after a 100 ms pause, then full speed.
        let rate = |t: u64| match t {
            10_000..=10_099 => 0.0,
            10_100..=14_099 => 500.0,
            _ => 1000.0,
        };
        let s = series(7_000, 25_000, rate);
        let r = restoration(&s, 10_000, 25_000, Some(1000.0)).unwrap();
        assert!((r.agility_s - 2.1).abs() < 0.05, "{r:?}");
        assert!((4_000..=5_100).contains(&r.restored_ms), "{r:?}");
    }

    #[test]
    fn unknown_without_baseline_coverage_or_recovery() {
        let s = series(7_000, 25_000, |_| 1000.0);
        assert!(restoration(&s, 10_000, 25_000, None).is_none());
        assert!(restoration(&s, 10_000, 25_000, Some(0.0)).is_none());
        assert!(
            restoration(&s, 10_000, 30_000, Some(1000.0)).is_none(),
            "reports end at 25 s"
        );
        let r = restoration(&s, 10_000, 25_000, Some(1000.0)).unwrap();
        assert_eq!((r.restored_ms, r.agility_s), (0, 0.0), "never slowed");
        let slow_to_the_end = series(7_000, 25_000, |t| if t < 10_000 { 1000.0 } else { 100.0 });
        assert!(restoration(&slow_to_the_end, 10_000, 25_000, Some(1000.0)).is_none());
    }
}
