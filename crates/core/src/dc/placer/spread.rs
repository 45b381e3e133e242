//! IQR's and MAD's test for "host plus VM" settled from what is known of each alone.
//!
//! Both detectors call a host overloaded when `u > 1 - s * spread(h)`, the spread (interquartile
//! range or median absolute deviation) taken over the combined history `h = a + w b` of the host
//! (`a`) and the VM scaled to the host (`w b`, `w` = VM size over host size). Computing it
//! selects order statistics of a fresh 30-sample series for every host the placement tries, which
//! was most of these policies' time at scale. Both spreads are 1-Lipschitz in the largest
//! change of one sample (order statistics are, and so is the interpolation between two; MAD's
//! deviations move by at most the median's move plus the sample's), and `w b` moves each sample
//! of `a` by between `w min(b)` and `w max(b)`; subtracting the common shift leaves at most
//! `R = w (max(b) - min(b))` per sample, so
//!
//! `spread(a) - R <= spread(a + w b) <= spread(a) + R`.
//!
//! With the host's own `spread(a)` computed once per host state and the VM's range once per
//! round, most tests are settled with a handful of operations, and the placer bands hosts by
//! `r = u(a) + s * spread(a)` to skip whole buckets the VM would certainly overload (see
//! [`cut`]). The bounds are used only when the combined history is as long as a history can be
//! (the host's is: its oldest sample is non-zero and none is negative), so the detector reads
//! all of it and never falls back to its short-history rule; the exact test decides the rest.

use crate::dc::detect::Detector;
use crate::dc::snapshot::HISTORY_LEN;
use crate::dc::stats;

/// Margin, in utilization per unit of `1 + safety`, by which a bound must settle a test (the
/// bounds hold up to a few roundings of values near 1, about 1e-15).
const MARGIN: f64 = 1e-9;

/// The spread of a host's history when the bounds apply to it (NaN otherwise): every sample
/// finite and non-negative, the oldest non-zero (so any non-negative VM history added to it
/// keeps all `HISTORY_LEN` samples in the detector's view).
pub(super) fn host_spread(det: &Detector, hist: &[f64; HISTORY_LEN]) -> f64 {
    let usable = hist[HISTORY_LEN - 1] > 0.0 && hist.iter().all(|&x| x.is_finite() && x >= 0.0);
    match det.spread(hist) {
        Some(s) if usable => s,
        _ => f64::NAN,
    }
}

/// The range of a VM's (padded) history when every sample is finite and non-negative (NaN
/// otherwise).
pub(super) fn vm_range(hist: &[f64; HISTORY_LEN]) -> f64 {
    if hist.iter().all(|&x| x >= 0.0) {
        stats::range(hist)
    } else {
        f64::NAN
    }
}

/// The safety parameter when the bounds apply to the detector (IQR or MAD with a finite,
/// non-negative safety).
pub(super) fn safety(det: &Detector) -> Option<f64> {
    det.spread_safety().filter(|s| s.is_finite() && *s >= 0.0)
}

/// A host's band value `r = u + s * spread(a)` (NaN when the bounds do not apply).
pub(super) fn band_value(safety: f64, utilization: f64, host_spread: f64) -> f64 {
    utilization + safety * host_spread
}

/// The `r` from which a host is certainly overloaded by a VM adding `delta_u` to its utilization
/// and whose scaled range is `range` (`w (max(b) - min(b))`): then
/// `u + delta_u > 1 - s * (spread(a) - range)`. `+inf` (never) when the VM's range is unusable.
pub(super) fn cut(safety: f64, delta_u: f64, range: f64, over_margin: f64) -> f64 {
    let c = 1.0 + over_margin - delta_u + safety * range;
    if c.is_nan() {
        f64::INFINITY
    } else {
        c
    }
}

/// The test's answer for a combined utilization `u` when the bounds settle it, `None` when the
/// exact spread must decide (or a figure is unusable, NaN).
pub(super) fn settle(safety: f64, u: f64, host_spread: f64, range: f64) -> Option<bool> {
    if !(u.is_finite() && host_spread.is_finite() && range.is_finite()) {
        return None;
    }
    let m = MARGIN * (1.0 + safety);
    if u > 1.0 - safety * (host_spread - range) + m {
        Some(true)
    } else if u < 1.0 - safety * (host_spread + range) - m {
        Some(false)
    } else {
        None
    }
}

/// Samples at each end of a full history IQR's quartiles leave out: its first quartile is the
/// 8th smallest of 30, its third the 8th largest (CloudSim's rounding of the positions).
const IQR_TAIL: usize = 8;

/// Positions of a full history's `IQR_TAIL` smallest samples, then of its `IQR_TAIL` largest.
pub(super) type Tails = [u8; 2 * IQR_TAIL];

/// [`Tails`] of a host's history (by `total_cmp`, ties by position).
pub(super) fn tails(hist: &[f64; HISTORY_LEN]) -> Tails {
    let mut order: [u8; HISTORY_LEN] = std::array::from_fn(|i| i as u8);
    order.sort_by(|&x, &y| {
        hist[x as usize]
            .total_cmp(&hist[y as usize])
            .then(x.cmp(&y))
    });
    let mut t = [0u8; 2 * IQR_TAIL];
    t[..IQR_TAIL].copy_from_slice(&order[..IQR_TAIL]);
    t[IQR_TAIL..].copy_from_slice(&order[HISTORY_LEN - IQR_TAIL..]);
    t
}

/// A floor under the IQR of the combined history `host + vm * weight` (each sample computed as
/// `Cluster::load_with` computes it, so these are exactly the detector's samples) that follows
/// how the two line up, where [`settle`]'s bound assumes the worst: the third quartile is the
/// 8th largest sample, so at least the smallest of any 8 samples, and the first quartile at
/// most the largest of any 8; taking the host's own top and bottom 8 positions (`tails`) keeps
/// the floor close while the VM does not reorder the host's history. Exact (no rounding
/// margin): both sides are samples of the combined history. Only for full host histories
/// (then the detector reads all 30 samples).
pub(super) fn iqr_floor(
    host: &[f64; HISTORY_LEN],
    tails: &Tails,
    vm: &[f64; HISTORY_LEN],
    weight: f64,
) -> f64 {
    let at = |i: u8| host[i as usize] + vm[i as usize] * weight;
    let (bottom, top) = tails.split_at(IQR_TAIL);
    let hi = top.iter().map(|&i| at(i)).fold(f64::INFINITY, f64::min);
    let lo = bottom
        .iter()
        .map(|&i| at(i))
        .fold(f64::NEG_INFINITY, f64::max);
    hi - lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dc::cluster::Load;
    use crate::dc::detect::Overload;
    use crate::dc::rng::SplitMix64;

    /// A history of whole percents, some zeros, some bursts (as the traces are).
    fn random_hist(rng: &mut SplitMix64, scale: f64) -> [f64; HISTORY_LEN] {
        let base = rng.next_f64() * 0.5;
        let mut h = [0.0; HISTORY_LEN];
        for x in h.iter_mut() {
            let u = match rng.below(6) {
                0 => 0.0,
                1 => base + 0.3,
                _ => base + rng.next_f64() * 0.2,
            };
            *x = (u.min(1.0) * 100.0).round() / 100.0 * scale;
        }
        h
    }

    #[test]
    fn bounds_never_contradict_the_exact_test() {
        // Random host and VM histories, utilizations around the exact threshold: whenever the
        // bounds settle the test they give the detector's own answer, and they settle most
        // of the ones far from the threshold.
        let mut rng = SplitMix64::new(11);
        let mut settled = 0;
        let mut tried = 0;
        for case in 0..3000 {
            let kind = if case % 2 == 0 {
                Overload::Iqr { safety: 1.5 }
            } else {
                Overload::Mad { safety: 2.5 }
            };
            let det = Detector::new(kind, 300.0);
            let s = safety(&det).unwrap();
            let scale = 0.5 + rng.next_f64();
            let mut a = random_hist(&mut rng, scale);
            a[HISTORY_LEN - 1] = a[HISTORY_LEN - 1].max(0.01);
            let b = random_hist(&mut rng, 1.0);
            let w = 0.05 + 0.5 * rng.next_f64();
            let mut both = [0.0; HISTORY_LEN];
            for i in 0..HISTORY_LEN {
                both[i] = a[i] + b[i] * w;
            }
            let exact = 1.0 - s * det.spread(&both).unwrap();
            let (sa, rb) = (host_spread(&det, &a), vm_range(&b));
            assert!(sa.is_finite() && rb.is_finite());
            for u in [
                exact,
                exact + 1e-12,
                exact - 1e-12,
                rng.next_f64() * 1.5,
                exact + 0.3 * rng.next_f64(),
                exact - 0.3 * rng.next_f64(),
            ] {
                let load = Load {
                    req_mips: u * 1000.0,
                    total_mips: 1000.0,
                    hist: &both,
                    max_migration_s: 10.0,
                };
                let want = det.is_overloaded(&load);
                tried += 1;
                if let Some(got) = settle(s, load.utilization(), sa, w * rb) {
                    settled += 1;
                    assert_eq!(got, want, "{kind:?} u {u} a {a:?} b {b:?} w {w}");
                }
                // The band rule: a host at or past the cut is overloaded.
                let r = band_value(s, u - 0.1, sa);
                if r >= cut(s, 0.1, w * rb, 1e-6) {
                    assert!(want, "{kind:?} doomed but not overloaded: u {u}");
                }
            }
        }
        assert!(settled * 6 > tried, "{settled} of {tried}");
    }

    #[test]
    fn iqr_floor_is_under_the_exact_iqr() {
        let mut rng = SplitMix64::new(5);
        let mut tight = 0;
        for _ in 0..3000 {
            let scale = 0.5 + rng.next_f64();
            let mut a = random_hist(&mut rng, scale);
            a[HISTORY_LEN - 1] = a[HISTORY_LEN - 1].max(0.01);
            let b = random_hist(&mut rng, 1.0);
            let w = 0.05 * rng.next_f64();
            let mut both = [0.0; HISTORY_LEN];
            for i in 0..HISTORY_LEN {
                both[i] = a[i] + b[i] * w;
            }
            let exact = stats::iqr(&both);
            let floor = iqr_floor(&a, &tails(&a), &b, w);
            assert!(
                floor <= exact,
                "floor {floor} over {exact}: {a:?} {b:?} {w}"
            );
            if exact - floor < 0.2 * exact {
                tight += 1;
            }
        }
        // With a small VM the floor is close most of the time (otherwise it is dead weight).
        assert!(tight > 1500, "{tight}");
    }

    #[test]
    fn unusable_histories_turn_the_bounds_off() {
        let det = Detector::new(Overload::Iqr { safety: 1.5 }, 300.0);
        let mut a = [0.2; HISTORY_LEN];
        a[HISTORY_LEN - 1] = 0.0;
        assert!(host_spread(&det, &a).is_nan(), "short history");
        a[HISTORY_LEN - 1] = 0.2;
        assert_eq!(host_spread(&det, &a), 0.0);
        a[3] = f64::NAN;
        assert!(host_spread(&det, &a).is_nan(), "NaN sample");
        let mut b = [0.1; HISTORY_LEN];
        b[0] = -0.1;
        assert!(vm_range(&b).is_nan(), "negative sample");
        assert_eq!(settle(1.5, 0.5, f64::NAN, 0.1), None);
        assert_eq!(cut(1.5, 0.1, f64::NAN, 1e-6), f64::INFINITY);
        let thr = Detector::new(Overload::Thr { threshold: 0.8 }, 300.0);
        assert_eq!(safety(&thr), None);
        assert!(host_spread(&thr, &[0.2; HISTORY_LEN]).is_nan());
    }
}
