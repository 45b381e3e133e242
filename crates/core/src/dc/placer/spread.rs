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
//!
//! The range bound assumes the worst alignment of the two histories, which is too loose to
//! prove most "overloaded" answers (the ones failing searches need for every host they try).
//! Floors that follow the alignment settle them: [`iqr_floor`] and [`mad_floor`] read the
//! combined samples only at positions fixed per host state, where the host's own order
//! statistics came from.

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

/// A history's positions from its smallest sample to its largest (by `total_cmp`, ties by
/// position).
fn by_value(hist: &[f64; HISTORY_LEN]) -> [u8; HISTORY_LEN] {
    let mut order: [u8; HISTORY_LEN] = std::array::from_fn(|i| i as u8);
    order.sort_by(|&x, &y| {
        hist[x as usize]
            .total_cmp(&hist[y as usize])
            .then(x.cmp(&y))
    });
    order
}

/// [`Tails`] of a host's history (by `total_cmp`, ties by position).
pub(super) fn tails(hist: &[f64; HISTORY_LEN]) -> Tails {
    let order = by_value(hist);
    let mut t = [0u8; 2 * IQR_TAIL];
    t[..IQR_TAIL].copy_from_slice(&order[..IQR_TAIL]);
    t[IQR_TAIL..].copy_from_slice(&order[HISTORY_LEN - IQR_TAIL..]);
    t
}

/// The smallest and the largest combined sample `host + vm * weight` at `positions`
/// (computed as `Cluster::load_with` computes each).
fn min_max_at(
    host: &[f64; HISTORY_LEN],
    vm: &[f64; HISTORY_LEN],
    weight: f64,
    positions: &[u8],
) -> (f64, f64) {
    positions
        .iter()
        .map(|&i| host[i as usize] + vm[i as usize] * weight)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        })
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
    let (bottom, top) = tails.split_at(IQR_TAIL);
    let (hi, _) = min_max_at(host, vm, weight, top);
    let (_, lo) = min_max_at(host, vm, weight, bottom);
    hi - lo
}

/// Samples of a full history at or above MAD's median (the legacy percentile of 30 reads the
/// 15th and 16th smallest; 16 samples lie at or above the 15th, 16 at or below the 16th).
const MAD_HALF: usize = 16;

/// Where a full host history's MAD comes from, by position: the 16 smallest samples, the 16
/// largest, and the 16 farthest from the host's own median (farthest first).
#[derive(Debug, Clone, Copy)]
pub(super) struct MadShape {
    bottom: [u8; MAD_HALF],
    top: [u8; MAD_HALF],
    far: [u8; MAD_HALF],
}

/// [`MadShape`] of a host's history (by `total_cmp`, ties by position).
pub(super) fn mad_shape(hist: &[f64; HISTORY_LEN]) -> MadShape {
    let mut order = by_value(hist);
    let mut bottom = [0u8; MAD_HALF];
    let mut top = [0u8; MAD_HALF];
    bottom.copy_from_slice(&order[..MAD_HALF]);
    top.copy_from_slice(&order[HISTORY_LEN - MAD_HALF..]);
    let m = stats::median(hist);
    let dev = |i: u8| (hist[i as usize] - m).abs();
    order.sort_by(|&x, &y| dev(y).total_cmp(&dev(x)).then(x.cmp(&y)));
    let mut far = [0u8; MAD_HALF];
    far.copy_from_slice(&order[..MAD_HALF]);
    MadShape { bottom, top, far }
}

/// A floor under the MAD of the combined history `host + vm * weight` of a full host history
/// (samples computed as `Cluster::load_with` computes them), following how the two histories
/// line up as [`iqr_floor`] does; no sorting. Write `c` for the combined samples, `c(k)` for
/// the k-th smallest, `m` for their median and `d(k)` for the k-th smallest deviation
/// `|c_i - m|`. With 30 samples the legacy percentile reads `m` between `c(15)` and `c(16)`
/// and the MAD between `d(15)` and `d(16)` (`x + (y - x) / 2`).
///
/// 1. Any 16 samples hold one at most `c(15)`'s rank from the top, so `c(15) >= min` over
///    them, and likewise `c(16) <= max` over any 16: with the host's own 16 largest and 16
///    smallest positions, `m` lies in `[lo, hi] = [min(c at top), max(c at bottom)]`.
/// 2. Then each deviation is at least `e_i`, the distance from `c_i` to `[lo, hi]`.
/// 3. If 16 samples all deviate by at least `x`, at most 14 deviate by less, so
///    `d(15) >= x`; if 15 do, `d(16) >= x`. Taking the host's 16 (and 15) positions farthest
///    from its own median, `d(15) >= min e` over the 16 and `d(16) >= min e` over the 15.
/// 4. The MAD, between `d(15)` and `d(16)` and averaging them, is at least the average of
///    the two floors.
///
/// Every step is a comparison between samples or a monotone rounding except the averages,
/// which may round differently from the detector's; callers keep a margin (see
/// [`over_by_floor`]). Close when the VM is small or follows the host: then the combined
/// history ranks its samples as the host's does and the floor is the host's MAD less the
/// VM's contribution.
pub(super) fn mad_floor(
    host: &[f64; HISTORY_LEN],
    shape: &MadShape,
    vm: &[f64; HISTORY_LEN],
    weight: f64,
) -> f64 {
    let at = |i: u8| host[i as usize] + vm[i as usize] * weight;
    let (lo, _) = min_max_at(host, vm, weight, &shape.top);
    let (_, hi) = min_max_at(host, vm, weight, &shape.bottom);
    let e = |i: u8| {
        let x = at(i);
        (lo - x).max(x - hi).max(0.0)
    };
    // `far` is farthest first: its first 15 are the 15 farthest.
    let x16 = shape.far[..MAD_HALF - 1]
        .iter()
        .map(|&i| e(i))
        .fold(f64::INFINITY, f64::min);
    let x15 = x16.min(e(shape.far[MAD_HALF - 1]));
    (x15 + x16) / 2.0
}

/// Whether a combined utilization `u` is over the threshold `1 - safety * floor` by more
/// than the bounds' margin (then it is over the detector's exact threshold, the floor being
/// under the exact spread up to a few roundings).
pub(super) fn over_by_floor(safety: f64, u: f64, floor: f64) -> bool {
    u > 1.0 - safety * floor + MARGIN * (1.0 + safety)
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

    /// A full host history (its oldest sample non-zero) at a random scale.
    fn full_host(rng: &mut SplitMix64) -> [f64; HISTORY_LEN] {
        let scale = 0.5 + rng.next_f64();
        let mut a = random_hist(rng, scale);
        a[HISTORY_LEN - 1] = a[HISTORY_LEN - 1].max(0.01);
        a
    }

    /// The combined history as `Cluster::load_with` computes it.
    fn combined(a: &[f64; HISTORY_LEN], b: &[f64; HISTORY_LEN], w: f64) -> [f64; HISTORY_LEN] {
        std::array::from_fn(|i| a[i] + b[i] * w)
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
            let a = full_host(&mut rng);
            let b = random_hist(&mut rng, 1.0);
            let w = 0.05 * rng.next_f64();
            let exact = stats::iqr(&combined(&a, &b, w));
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
    fn mad_floor_is_under_the_exact_mad() {
        // Random hosts and VMs of every size the traces give, including VMs that reorder the
        // host's history: the floor never exceeds the detector's MAD (beyond the margin the
        // callers keep, which it never needs here), and proves most tests the range cannot.
        let mut rng = SplitMix64::new(7);
        let mut tight = 0;
        for case in 0..5000 {
            let mut a = full_host(&mut rng);
            if case % 10 == 0 {
                // Ties: a flat host.
                a = [0.3; HISTORY_LEN];
            }
            let b = random_hist(&mut rng, 1.0);
            let w = if case % 3 == 0 {
                0.6 * rng.next_f64()
            } else {
                0.05 * rng.next_f64()
            };
            let exact = stats::mad(&combined(&a, &b, w));
            let floor = mad_floor(&a, &mad_shape(&a), &b, w);
            assert!(
                floor <= exact,
                "floor {floor} over {exact}: {a:?} {b:?} {w}"
            );
            assert!(floor >= 0.0);
            if exact - floor < 0.2 * exact {
                tight += 1;
            }
            // What the placer asks: over the floor's threshold is over the exact one.
            let s = 2.5;
            for u in [
                1.0 - s * floor,
                1.0 - s * floor + 1e-9,
                rng.next_f64() * 1.2,
            ] {
                if over_by_floor(s, u, floor) {
                    assert!(u > 1.0 - s * exact, "u {u} floor {floor} exact {exact}");
                }
            }
        }
        assert!(tight > 2000, "{tight}");
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
