//! Overload detection: is a host (or would it be, with one more VM) too hot to leave as is?
//!
//! The published detectors (Beloglazov & Buyya, CCPE 2012), with CloudSim 3.0.3's semantics:
//! - **THR**: current demand over capacity above a static threshold.
//! - **IQR** / **MAD**: adaptive threshold `1 - s * spread`, the spread (interquartile range or
//!   median absolute deviation) taken over the host's utilization history; needs 12 non-zero
//!   samples, else falls back to THR at 0.7.
//! - **LR** / **LRR**: a line fitted to the last 10 history samples, extrapolated by one interval
//!   plus the time the host's longest migration takes (rounded up to whole intervals), scaled by
//!   the safety parameter; overloaded when that reaches 100%. Needs 10 samples, else THR at 0.7.
//!   LR fits by OLS (what CloudSim's code computes); LRR adds a bisquare robustness pass.
//!
//! A host's history is the size-weighted sum of its current VMs' histories, so a host that just
//! received VMs carries their past with it.

use super::cluster::Load;
use super::snapshot::HISTORY_LEN;
use super::stats::{self, LineFit, Trend};
use serde::{Deserialize, Serialize};

/// Which detector, with its safety parameter (or threshold for THR).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Overload {
    Thr { threshold: f64 },
    Iqr { safety: f64 },
    Mad { safety: f64 },
    Lr { safety: f64 },
    Lrr { safety: f64 },
}

/// Samples LR and LRR fit (CloudSim: "10 to make the regression responsive enough").
pub const LR_WINDOW: usize = 10;
/// Non-zero samples IQR and MAD need ("12 has been suggested as a safe value").
pub const SPREAD_MIN_SAMPLES: usize = 12;

/// A detector ready to use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    pub kind: Overload,
    /// THR threshold used while the history is too short for the adaptive detectors.
    pub fallback_threshold: f64,
    /// Decision interval, seconds (LR's horizon is counted in intervals).
    pub interval_s: f64,
}

impl Detector {
    pub fn new(kind: Overload, interval_s: f64) -> Detector {
        Detector {
            kind,
            fallback_threshold: 0.7,
            interval_s,
        }
    }

    pub fn is_overloaded(&self, load: &Load) -> bool {
        let data = trimmed(load.hist);
        match self.kind {
            Overload::Thr { threshold } => load.utilization() > threshold,
            Overload::Iqr { safety } | Overload::Mad { safety } => {
                if stats::count_non_zero_beginning(data) < SPREAD_MIN_SAMPLES {
                    return self.fallback(load);
                }
                let u = load.utilization();
                if let Some(answer) = settled_by_range(u, safety, data) {
                    return answer;
                }
                u > 1.0 - safety * self.spread(data).unwrap_or(f64::NAN)
            }
            Overload::Lr { safety } | Overload::Lrr { safety } => match self.predict(load) {
                Some(p) => p * safety >= 1.0,
                None => self.fallback(load),
            },
        }
    }

    /// IQR's or MAD's safety parameter (`None` for the other detectors).
    pub fn spread_safety(&self) -> Option<f64> {
        match self.kind {
            Overload::Iqr { safety } | Overload::Mad { safety } => Some(safety),
            _ => None,
        }
    }

    /// The spread IQR or MAD puts in its threshold `1 - safety * spread`, over `data` as given
    /// (already trimmed); `None` for the other detectors.
    pub fn spread(&self, data: &[f64]) -> Option<f64> {
        match self.kind {
            Overload::Iqr { .. } => Some(stats::iqr(data)),
            Overload::Mad { .. } => Some(stats::mad(data)),
            _ => None,
        }
    }

    /// LR/LRR's forecast of the host's utilization once a migration started now would be done;
    /// `None` when the history is too short (or the detector is not a regression).
    pub fn predict(&self, load: &Load) -> Option<f64> {
        let how = match self.kind {
            Overload::Lr { .. } => LineFit::Ols,
            Overload::Lrr { .. } => LineFit::Robust,
            _ => return None,
        };
        let line = Trend::fit(trimmed(load.hist), LR_WINDOW, how)?;
        Some(line.ahead(self.lr_horizon(load.max_migration_s)))
    }

    /// How far past the newest sample LR and LRR forecast, in sampling intervals: the time the
    /// longest migration off the host takes (`migration_s`, seconds), rounded up to whole
    /// intervals, so one interval for any migration shorter than an interval.
    pub fn lr_horizon(&self, migration_s: f64) -> f64 {
        (migration_s / self.interval_s).ceil()
    }

    fn fallback(&self, load: &Load) -> bool {
        load.utilization() > self.fallback_threshold
    }
}

/// How far inside the range bound a utilization must be before [`settled_by_range`] answers
/// "not overloaded" (the bound holds up to one rounding, about 1e-16).
const SPREAD_MARGIN: f64 = 1e-9;

/// IQR's or MAD's answer when the spread's bounds settle it without computing it (sorting the
/// history is most of the test's cost, and the placement runs it for many hosts per VM): the
/// spread `s` lies in `[0, range]`, so the threshold `1 - safety * s` lies in
/// `[1 - safety * range, 1]`. `None` when the utilization falls between (or the bounds do not
/// apply: a negative safety, a non-finite sample); then the exact test decides.
fn settled_by_range(u: f64, safety: f64, data: &[f64]) -> Option<bool> {
    if safety.is_nan() || safety < 0.0 || !u.is_finite() {
        return None;
    }
    let range = stats::range(data);
    if !range.is_finite() {
        return None;
    }
    if u > 1.0 {
        return Some(true);
    }
    if u < 1.0 - safety * range - SPREAD_MARGIN {
        return Some(false);
    }
    None
}

/// The history with trailing zeros cut (length at least 1, as in CloudSim).
fn trimmed(hist: &[f64; HISTORY_LEN]) -> &[f64] {
    &hist[..stats::count_non_zero_beginning(hist)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(req: f64, hist: &[f64; HISTORY_LEN]) -> Load<'_> {
        Load {
            req_mips: req,
            total_mips: 1000.0,
            hist,
            max_migration_s: 27.84,
        }
    }

    fn hist(values: &[f64]) -> [f64; HISTORY_LEN] {
        let mut h = [0.0; HISTORY_LEN];
        h[..values.len()].copy_from_slice(values);
        h
    }

    #[test]
    fn thr_is_strictly_above() {
        let d = Detector::new(Overload::Thr { threshold: 0.8 }, 300.0);
        let h = hist(&[]);
        assert!(!d.is_overloaded(&load(800.0, &h)));
        assert!(d.is_overloaded(&load(800.1, &h)));
    }

    #[test]
    fn adaptive_detectors_fall_back_to_thr_07_on_short_history() {
        let h = hist(&[0.5; 11]);
        for kind in [
            Overload::Iqr { safety: 1.5 },
            Overload::Mad { safety: 2.5 },
            Overload::Lr { safety: 1.2 },
            Overload::Lrr { safety: 1.2 },
        ] {
            let d = Detector::new(kind, 300.0);
            let short = if matches!(kind, Overload::Lr { .. } | Overload::Lrr { .. }) {
                hist(&[0.5; 9])
            } else {
                h
            };
            assert!(!d.is_overloaded(&load(700.0, &short)), "{kind:?}");
            assert!(d.is_overloaded(&load(701.0, &short)), "{kind:?}");
        }
    }

    #[test]
    fn iqr_threshold_by_hand() {
        // 12 samples 0.1..=1.2 step 0.1 (most recent first does not matter for IQR):
        // q1 = 0.3, q3 = 1.0, IQR 0.7, threshold 1 - 0.5 * 0.7 = 0.65.
        let values: Vec<f64> = (1..=12).map(|i| i as f64 / 10.0).collect();
        let h = hist(&values);
        let d = Detector::new(Overload::Iqr { safety: 0.5 }, 300.0);
        assert!(!d.is_overloaded(&load(650.0, &h)));
        assert!(d.is_overloaded(&load(651.0, &h)));
    }

    #[test]
    fn mad_threshold_by_hand() {
        // Values 0.4 x6 and 0.6 x6: median 0.5, deviations all 0.1, MAD 0.1; s = 2.5 -> 0.75.
        let mut values = vec![0.4; 6];
        values.extend([0.6; 6]);
        let h = hist(&values);
        let d = Detector::new(Overload::Mad { safety: 2.5 }, 300.0);
        assert!(!d.is_overloaded(&load(750.0, &h)));
        assert!(d.is_overloaded(&load(760.0, &h)));
    }

    /// The spreads as first written: sort a heap copy, take the positions (the reference the
    /// stack-sorted statistics and the range shortcut must agree with bit for bit).
    fn reference_spread(kind: Overload, data: &[f64]) -> f64 {
        let sorted = |d: &[f64]| {
            let mut v = d.to_vec();
            v.sort_by(f64::total_cmp);
            v
        };
        let median = |d: &[f64]| stats::percentile(&sorted(d), 50.0);
        match kind {
            Overload::Iqr { .. } => {
                let s = sorted(data);
                let n = s.len() as f64;
                let q1 = ((0.25 * (n + 1.0) + 0.5).floor() as usize).saturating_sub(1);
                let q3 = ((0.75 * (n + 1.0) + 0.5).floor() as usize).saturating_sub(1);
                s[q3.min(s.len() - 1)] - s[q1.min(s.len() - 1)]
            }
            _ => {
                let m = median(data);
                let dev: Vec<f64> = data.iter().map(|x| (m - x).abs()).collect();
                median(&dev)
            }
        }
    }

    #[test]
    fn adaptive_detectors_agree_with_the_sorted_reference() {
        // Random histories (some with ties, some flat, some short), utilizations spread around
        // each threshold and exactly on it: the answer must be the reference's every time,
        // whether the range settles it or the spread is computed.
        let mut rng = crate::dc::rng::SplitMix64::new(7);
        let mut settled = 0;
        for case in 0..4000 {
            let n = 12 + rng.below(HISTORY_LEN - 11);
            let values: Vec<f64> = (0..n)
                .map(|_| match case % 4 {
                    0 => 0.05 + rng.next_f64(),
                    1 => 0.1 + 0.05 * rng.below(4) as f64,
                    2 => 0.5,
                    _ => 0.3 + 0.2 * rng.next_f64(),
                })
                .collect();
            let h = hist(&values);
            for kind in [Overload::Iqr { safety: 1.5 }, Overload::Mad { safety: 2.5 }] {
                let (Overload::Iqr { safety } | Overload::Mad { safety }) = kind else {
                    unreachable!()
                };
                let d = Detector::new(kind, 300.0);
                let threshold = 1.0 - safety * reference_spread(kind, &values);
                for u in [
                    threshold,
                    threshold - 1e-12,
                    threshold + 1e-12,
                    rng.next_f64() * 1.2,
                    1.0,
                    1.0 + 1e-12,
                ] {
                    let l = load(u * 1000.0, &h);
                    let want = l.utilization() > threshold;
                    assert_eq!(d.is_overloaded(&l), want, "{kind:?} {values:?} u {u}");
                    if settled_by_range(l.utilization(), safety, &values).is_some() {
                        settled += 1;
                    }
                }
            }
        }
        // The shortcut does settle a share of them (otherwise it would be dead weight).
        assert!(settled > 4000, "{settled}");
    }

    #[test]
    fn lr_extrapolates_one_interval_past_the_window() {
        // Chronological 0.35, 0.40, ..., 0.80 (most recent first in the history): slope 0.05 per
        // interval, value at x=10 is 0.80; a 27.84 s migration rounds up to one interval, so
        // the forecast is at x = 11: 0.85. Safety 1.2 -> 1.02 >= 1: overloaded.
        let chrono: Vec<f64> = (0..10).map(|i| 0.35 + 0.05 * i as f64).collect();
        let recent_first: Vec<f64> = chrono.iter().rev().copied().collect();
        let h = hist(&recent_first);
        let d = Detector::new(Overload::Lr { safety: 1.2 }, 300.0);
        let p = d.predict(&load(0.0, &h)).unwrap();
        assert!((p - 0.85).abs() < 1e-9, "{p}");
        assert!(d.is_overloaded(&load(0.0, &h)));
        let relaxed = Detector::new(Overload::Lr { safety: 1.1 }, 300.0);
        assert!(!relaxed.is_overloaded(&load(0.0, &h)));
    }

    #[test]
    fn lr_uses_only_the_last_ten_samples() {
        let mut values = vec![0.5; 10];
        values.extend([0.0001; 20]);
        let h = hist(&values);
        let d = Detector::new(Overload::Lr { safety: 1.0 }, 300.0);
        assert!((d.predict(&load(0.0, &h)).unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn lrr_shrugs_off_a_spike_that_trips_lr() {
        // A gentle rise 0.60, 0.62, ..., 0.78 with one spike to 1.3 at x = 9. LR's line is
        // dragged up (forecast 0.98, x1.2 >= 1); LRR's bisquare pass drops the spike and follows
        // the rise (forecast 0.80, x1.2 < 1).
        let mut chrono: Vec<f64> = (0..10).map(|i| 0.6 + 0.02 * i as f64).collect();
        chrono[8] = 1.3;
        let recent_first: Vec<f64> = chrono.iter().rev().copied().collect();
        let h = hist(&recent_first);
        let lr = Detector::new(Overload::Lr { safety: 1.2 }, 300.0);
        let lrr = Detector::new(Overload::Lrr { safety: 1.2 }, 300.0);
        assert!((lr.predict(&load(0.0, &h)).unwrap() - 0.98).abs() < 1e-9);
        assert!((lrr.predict(&load(0.0, &h)).unwrap() - 0.80).abs() < 1e-9);
        assert!(lr.is_overloaded(&load(0.0, &h)));
        assert!(!lrr.is_overloaded(&load(0.0, &h)));
    }
}
