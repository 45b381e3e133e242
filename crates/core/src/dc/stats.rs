//! The statistics the detectors and selectors need, computed exactly the way CloudSim 3.0.3's
//! `MathUtil` (over Apache Commons Math) computes them, so that the published policies decide
//! the same way here as in the reference runs. Quirks are kept on purpose and called out.

use super::snapshot::HISTORY_LEN;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum StatsError {
    #[error("regression needs more samples ({samples}) than parameters ({params})")]
    NotEnoughData { samples: usize, params: usize },
    #[error("regression matrix is singular")]
    Singular,
}

/// Apache Commons Math's default (legacy) percentile estimate, `p` in (0, 100].
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = p * (n as f64 + 1.0) / 100.0;
    if pos < 1.0 {
        return sorted[0];
    }
    if pos >= n as f64 {
        return sorted[n - 1];
    }
    let int_pos = pos.floor() as usize;
    let lower = sorted[int_pos - 1];
    let upper = sorted[int_pos];
    lower + (pos - pos.floor()) * (upper - lower)
}

/// Calls `f` with a scratch copy of `data` it may reorder, kept on the stack for series no
/// longer than a history: the detectors run this for every host they test (a heap copy and a
/// full sort per test were most of IQR's and MAD's cost at 100,000 VMs).
fn with_scratch<R>(data: &[f64], f: impl FnOnce(&mut [f64]) -> R) -> R {
    if data.len() <= HISTORY_LEN {
        let mut buf = [0.0; HISTORY_LEN];
        let s = &mut buf[..data.len()];
        s.copy_from_slice(data);
        f(s)
    } else {
        f(&mut data.to_vec())
    }
}

/// The `k`-th smallest of `buf` (0-based, by `total_cmp`), leaving the `k` smaller ones before
/// it: the value a sort would put at `k` (`total_cmp` only ties identical bits, so the order of
/// ties cannot change a value).
fn select(buf: &mut [f64], k: usize) -> f64 {
    *buf.select_nth_unstable_by(k, f64::total_cmp).1
}

/// [`percentile`] without sorting: only the one or two order statistics it reads are selected.
fn percentile_unsorted(buf: &mut [f64], p: f64) -> f64 {
    let n = buf.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = p * (n as f64 + 1.0) / 100.0;
    if pos < 1.0 {
        return select(buf, 0);
    }
    if pos >= n as f64 {
        return select(buf, n - 1);
    }
    let int_pos = pos.floor() as usize;
    let upper = select(buf, int_pos);
    // Everything before `int_pos` is no larger: the largest of it is the one just below.
    let lower = buf[..int_pos]
        .iter()
        .copied()
        .max_by(f64::total_cmp)
        .unwrap_or(upper);
    lower + (pos - pos.floor()) * (upper - lower)
}

pub fn median(data: &[f64]) -> f64 {
    with_scratch(data, |s| percentile_unsorted(s, 50.0))
}

/// Median absolute deviation from the median.
pub fn mad(data: &[f64]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    with_scratch(data, |s| {
        let m = percentile_unsorted(s, 50.0);
        for x in s.iter_mut() {
            *x = (m - *x).abs();
        }
        percentile_unsorted(s, 50.0)
    })
}

/// Interquartile range with CloudSim's rounding of the quartile positions.
pub fn iqr(data: &[f64]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let n = data.len() as f64;
    // Java's Math.round rounds halves up.
    let last = data.len() - 1;
    let q1 = (((0.25 * (n + 1.0) + 0.5).floor() as usize).saturating_sub(1)).min(last);
    let q3 = (((0.75 * (n + 1.0) + 0.5).floor() as usize).saturating_sub(1)).min(last);
    with_scratch(data, |s| {
        let hi = select(s, q3);
        // The q3 smallest now lie before q3, and q1 <= q3.
        let lo = if q1 < q3 {
            select(&mut s[..q3], q1)
        } else {
            hi
        };
        hi - lo
    })
}

/// `max(data) - min(data)` when every sample is finite, NaN otherwise (0 for no samples). IQR
/// and MAD are never negative and never wider than this (each is a difference of two samples,
/// or of a sample and a median lying between samples; up to one rounding, so callers keep a
/// margin): the detectors use it to settle most tests without sorting.
pub fn range(data: &[f64]) -> f64 {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &x in data {
        if !x.is_finite() {
            return f64::NAN;
        }
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if data.is_empty() {
        0.0
    } else {
        hi - lo
    }
}

/// Length of `data` once its trailing zeros are cut, with CloudSim's quirk that an all-zero (or
/// empty) series still counts as length 1. Detectors compare this with their minimum history.
pub fn count_non_zero_beginning(data: &[f64]) -> usize {
    match data.iter().rposition(|&x| x != 0.0) {
        Some(i) => i + 1,
        None => 1,
    }
}

/// Ordinary least squares of `y` against x = 1, 2, ..., n: returns (intercept, slope).
///
/// CloudSim's "local regression" nominally weights points with a tricube kernel, but its weights
/// are never zero, and it only applies them when at least 40% are, so the fit it actually makes,
/// and the one the reference results come from, is this plain OLS.
pub fn ols_on_index(y: &[f64]) -> (f64, f64) {
    // Unit weights on the stack for any history-sized series (fitted for every VM every round).
    const ONES: [f64; HISTORY_LEN] = [1.0; HISTORY_LEN];
    match ONES.get(..y.len()) {
        Some(w) => weighted_on_index(y, w),
        None => weighted_on_index(y, &vec![1.0; y.len()]),
    }
}

/// Weighted least squares of `y` against x = 1..n: returns (intercept, slope).
pub fn weighted_on_index(y: &[f64], w: &[f64]) -> (f64, f64) {
    let (mut sw, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (i, (&yi, &wi)) in y.iter().zip(w).enumerate() {
        let x = (i + 1) as f64;
        sw += wi;
        sx += wi * x;
        sy += wi * yi;
    }
    if sw <= 0.0 {
        return (f64::NAN, f64::NAN);
    }
    let (mx, my) = (sx / sw, sy / sw);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, (&yi, &wi)) in y.iter().zip(w).enumerate() {
        let dx = (i + 1) as f64 - mx;
        sxy += wi * dx * (yi - my);
        sxx += wi * dx * dx;
    }
    if sxx == 0.0 {
        return (my, 0.0);
    }
    let slope = sxy / sxx;
    (my - slope * mx, slope)
}

/// Robust fit: OLS, then one bisquare reweighting pass on its residuals (Cleveland's robustness
/// step, as the LRR detector is published). Outliers beyond six median absolute residuals get no
/// weight; if every point would, the plain fit is kept.
pub fn robust_on_index(y: &[f64]) -> (f64, f64) {
    let (a, b) = ols_on_index(y);
    let residuals: Vec<f64> = y
        .iter()
        .enumerate()
        .map(|(i, yi)| yi - (a + b * (i + 1) as f64))
        .collect();
    let abs: Vec<f64> = residuals.iter().map(|r| r.abs()).collect();
    let s6 = 6.0 * median(&abs);
    if s6 <= 0.0 {
        return (a, b);
    }
    let w: Vec<f64> = residuals
        .iter()
        .map(|r| {
            let u = r / s6;
            if u.abs() < 1.0 {
                (1.0 - u * u).powi(2)
            } else {
                0.0
            }
        })
        .collect();
    let (ra, rb) = weighted_on_index(y, &w);
    if ra.is_finite() && rb.is_finite() {
        (ra, rb)
    } else {
        (a, b)
    }
}

/// LRR's robust step as a correction to a least-squares line, from that line's residuals over
/// a window at x = 1..=n (`res`, oldest first, n <= [`HISTORY_LEN`]): the weighted
/// least-squares line of the residuals under [`robust_on_index`]'s bisquare weights, returned as
/// (intercept, slope). Weighted least squares reproduces a line, so the robust line of the data
/// is the OLS line plus this one, up to rounding.
///
/// For LRR's placement, which knows a host's and a VM's OLS lines and residuals (linear in the
/// data: the combined history's are their weighted sums) and so skips the OLS passes; its
/// answer is an estimate that the caller trusts only away from the threshold. `None` when the
/// residuals' scale (six times their median magnitude) is under `min_scale` (the weights would
/// then amplify rounding) or anything is not finite.
pub fn robust_correction(res: &[f64], min_scale: f64) -> Option<(f64, f64)> {
    let n = res.len();
    if !(2..=HISTORY_LEN).contains(&n) {
        return None;
    }
    let mut abs = [0.0; HISTORY_LEN];
    for (m, r) in abs.iter_mut().zip(res) {
        *m = r.abs();
    }
    let abs = &mut abs[..n];
    sort_short(abs);
    let s6 = 6.0 * percentile(abs, 50.0);
    if !(s6 >= min_scale && s6.is_finite()) {
        return None;
    }
    // One pass of raw weighted sums (x = 1..=n): an estimate needs no centring, and at least
    // half the weights are near 1 (the residuals under the median), so the normal equations
    // stay well conditioned.
    let inv = 1.0 / s6;
    let (mut sw, mut sx, mut sxx, mut sr, mut sxr) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (i, r) in res.iter().enumerate() {
        let u = r * inv;
        let v = (1.0 - u * u).max(0.0);
        let w = v * v;
        let x = (i + 1) as f64;
        sw += w;
        sx += w * x;
        sxx += w * x * x;
        sr += w * r;
        sxr += w * x * r;
    }
    let det = sw * sxx - sx * sx;
    let b = (sw * sxr - sx * sr) / det;
    let a = (sr - b * sx) / sw;
    (a.is_finite() && b.is_finite()).then_some((a, b))
}

/// Sorts a short slice of magnitudes (no negative values; the order `total_cmp` gives): by a
/// sorting network when it is a regression window's ten values and none is NaN (branch-free:
/// the branchy sort's mispredictions were half of LRR's fit), otherwise by insertion.
fn sort_short(buf: &mut [f64]) {
    if buf.iter().any(|x| x.is_nan()) {
        insertion_sort(buf);
    } else if let Ok(ten) = <&mut [f64; 10]>::try_from(&mut *buf) {
        for &(i, j) in &NETWORK_10 {
            let (lo, hi) = (ten[i].min(ten[j]), ten[i].max(ten[j]));
            ten[i] = lo;
            ten[j] = hi;
        }
    } else {
        insertion_sort(buf);
    }
}

/// A sorting network for ten inputs (29 compare-exchanges; checked on all 1024 inputs of zeros
/// and ones in the tests, which by the 0-1 principle sorts every input).
#[rustfmt::skip]
const NETWORK_10: [(usize, usize); 29] = [
    (4, 9), (3, 8), (2, 7), (1, 6), (0, 5), (1, 4), (6, 9), (0, 3), (5, 8), (0, 2),
    (3, 6), (7, 9), (0, 1), (2, 4), (5, 7), (8, 9), (1, 2), (4, 6), (7, 8), (3, 5),
    (2, 5), (6, 8), (1, 3), (4, 7), (2, 3), (6, 7), (3, 4), (5, 6), (4, 5),
];

/// Sorts a short slice by `total_cmp` (a history's window: ten values, where a general sort's
/// or selection's set-up costs more than the comparisons).
fn insertion_sort(buf: &mut [f64]) {
    for i in 1..buf.len() {
        let x = buf[i];
        let mut j = i;
        while j > 0 && buf[j - 1].total_cmp(&x).is_gt() {
            buf[j] = buf[j - 1];
            j -= 1;
        }
        buf[j] = x;
    }
}

/// How a [`Trend`] is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFit {
    /// Ordinary least squares ([`ols_on_index`]): LR, and Drover's forecast.
    Ols,
    /// OLS plus one bisquare pass ([`robust_on_index`]): LRR.
    Robust,
}

/// A straight line through the newest `window` samples of a most-recent-first series (a VM's or
/// a host's utilization history), the samples put back in time order at x = 1 (oldest) ..=
/// `window` (newest). The one place the regression detectors, the placement index and Drover's
/// forecast fit and extrapolate a history, so they always agree on the same line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// Value at x = 0, in the series' unit (utilization, 0..=1).
    pub intercept: f64,
    /// Change per sampling interval.
    pub slope: f64,
    /// Samples fitted; the newest sits at x = `window`.
    pub window: usize,
}

impl Trend {
    /// Fits the newest `window` samples of `recent_first` (most recent first). `None` when the
    /// series is shorter than `window`, or `window` is under 2 (no line) or over
    /// [`HISTORY_LEN`] (longer than any history).
    pub fn fit(recent_first: &[f64], window: usize, how: LineFit) -> Option<Trend> {
        if !(2..=HISTORY_LEN).contains(&window) || recent_first.len() < window {
            return None;
        }
        // On the stack: the placement index fits every host it touches, every round.
        let mut buf = [0.0; HISTORY_LEN];
        let y = &mut buf[..window];
        for (slot, &v) in y.iter_mut().zip(recent_first[..window].iter().rev()) {
            *slot = v;
        }
        let (intercept, slope) = match how {
            LineFit::Ols => ols_on_index(y),
            LineFit::Robust => robust_on_index(y),
        };
        Some(Trend {
            intercept,
            slope,
            window,
        })
    }

    /// The line's value `intervals` sampling intervals after the newest sample.
    pub fn ahead(&self, intervals: f64) -> f64 {
        self.intercept + self.slope * (self.window as f64 + intervals)
    }
}

/// R² of the least-squares regression of `y` on the columns of `x` plus an intercept, as Apache's
/// `OLSMultipleLinearRegression` computes it (Householder QR). Errors like Apache's: not enough
/// samples for the regressors, or a singular design (e.g. an all-zero column).
pub fn r_squared(x_cols: &[&[f64]], y: &[f64]) -> Result<f64, StatsError> {
    let m = y.len();
    let p = x_cols.len() + 1;
    if m < p + 1 || x_cols.is_empty() {
        return Err(StatsError::NotEnoughData {
            samples: m,
            params: p,
        });
    }
    // Column-major design matrix with the intercept first.
    let mut a: Vec<Vec<f64>> = Vec::with_capacity(p);
    a.push(vec![1.0; m]);
    for c in x_cols {
        a.push(c[..m].to_vec());
    }
    let mut qty = y.to_vec();
    for j in 0..p {
        let norm = a[j][j..].iter().map(|v| v * v).sum::<f64>().sqrt();
        let scale = a[j].iter().map(|v| v.abs()).fold(0.0, f64::max).max(1.0);
        if norm <= 1e-12 * scale {
            return Err(StatsError::Singular);
        }
        let alpha = if a[j][j] > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = a[j][j..].to_vec();
        v[0] -= alpha;
        let vnorm2: f64 = v.iter().map(|x| x * x).sum();
        if vnorm2 == 0.0 {
            continue;
        }
        let reflect = |col: &mut [f64]| {
            let dot: f64 = v.iter().zip(col.iter()).map(|(a, b)| a * b).sum();
            let f = 2.0 * dot / vnorm2;
            for (c, vi) in col.iter_mut().zip(&v) {
                *c -= f * vi;
            }
        };
        for col in a.iter_mut().skip(j) {
            reflect(&mut col[j..]);
        }
        reflect(&mut qty[j..]);
    }
    let ssr: f64 = qty[p..].iter().map(|v| v * v).sum();
    let mean = y.iter().sum::<f64>() / m as f64;
    let sst: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    Ok(1.0 - ssr / sst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_apache_legacy_estimate() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&s, 50.0), 2.5);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(percentile(&[7.0], 50.0), 7.0);
    }

    #[test]
    fn selected_statistics_match_sorting() {
        // Lengths up to past a history (the heap path), with ties and negative zeros: every
        // statistic must be the sorted reference's, bit for bit.
        let mut rng = crate::dc::rng::SplitMix64::new(3);
        for case in 0..3000 {
            let n = 1 + case % 40;
            let data: Vec<f64> = (0..n)
                .map(|_| match rng.below(5) {
                    0 => 0.0,
                    1 => -0.0,
                    2 => rng.below(4) as f64 / 4.0,
                    _ => rng.next_f64(),
                })
                .collect();
            let sorted = |d: &[f64]| {
                let mut v = d.to_vec();
                v.sort_by(f64::total_cmp);
                v
            };
            let med = percentile(&sorted(&data), 50.0);
            assert_eq!(median(&data).to_bits(), med.to_bits(), "{data:?}");
            let dev: Vec<f64> = data.iter().map(|x| (med - x).abs()).collect();
            let want_mad = percentile(&sorted(&dev), 50.0);
            assert_eq!(mad(&data).to_bits(), want_mad.to_bits(), "{data:?}");
            let s = sorted(&data);
            let nf = n as f64;
            let q1 = ((0.25 * (nf + 1.0) + 0.5).floor() as usize).saturating_sub(1);
            let q3 = ((0.75 * (nf + 1.0) + 0.5).floor() as usize).saturating_sub(1);
            let want_iqr = s[q3.min(n - 1)] - s[q1.min(n - 1)];
            assert_eq!(iqr(&data).to_bits(), want_iqr.to_bits(), "{data:?}");
        }
    }

    #[test]
    fn mad_by_hand() {
        // median 3, deviations 2,1,0,1,6 -> median 1
        assert_eq!(mad(&[1.0, 2.0, 3.0, 4.0, 9.0]), 1.0);
    }

    #[test]
    fn iqr_uses_cloudsim_quartile_positions() {
        // n = 12: q1 index round(3.25)-1 = 2, q3 index round(9.75)-1 = 9.
        let data: Vec<f64> = (1..=12).map(|v| v as f64).collect();
        assert_eq!(iqr(&data), 10.0 - 3.0);
        // n = 5: q1 round(1.5)-1 = 1, q3 round(4.5)-1 = 4.
        assert_eq!(iqr(&[10.0, 20.0, 30.0, 40.0, 50.0]), 50.0 - 20.0);
    }

    #[test]
    fn non_zero_beginning_keeps_cloudsim_quirk() {
        assert_eq!(count_non_zero_beginning(&[0.5, 0.2, 0.0, 0.0]), 2);
        assert_eq!(count_non_zero_beginning(&[0.0, 0.3, 0.0]), 2);
        assert_eq!(count_non_zero_beginning(&[0.0, 0.0]), 1);
        assert_eq!(count_non_zero_beginning(&[]), 1);
    }

    #[test]
    fn ols_recovers_a_line() {
        let y: Vec<f64> = (1..=10).map(|x| 0.1 + 0.05 * x as f64).collect();
        let (a, b) = ols_on_index(&y);
        assert!((a - 0.1).abs() < 1e-12 && (b - 0.05).abs() < 1e-12);
    }

    #[test]
    fn trend_fits_the_newest_window_in_time_order() {
        // Most recent first: 0.80, 0.75, ..., 0.35, then older samples that must be ignored.
        let mut recent_first: Vec<f64> = (0..10).map(|i| 0.80 - 0.05 * i as f64).collect();
        recent_first.extend([5.0; 5]);
        let t = Trend::fit(&recent_first, 10, LineFit::Ols).unwrap();
        assert!((t.slope - 0.05).abs() < 1e-12, "{t:?}");
        assert!((t.ahead(0.0) - 0.80).abs() < 1e-12);
        assert!((t.ahead(1.0) - 0.85).abs() < 1e-12);
        assert_eq!(Trend::fit(&recent_first[..9], 10, LineFit::Ols), None);
        assert_eq!(Trend::fit(&recent_first, 1, LineFit::Ols), None);
        assert_eq!(Trend::fit(&[0.0; 40], 31, LineFit::Ols), None);
    }

    #[test]
    fn the_ten_input_network_sorts_every_input() {
        for bits in 0u32..1024 {
            let mut v: [f64; 10] = std::array::from_fn(|i| f64::from((bits >> i) & 1));
            sort_short(&mut v);
            assert!(v.windows(2).all(|p| p[0] <= p[1]), "{bits:#b}: {v:?}");
        }
    }

    #[test]
    fn ols_line_plus_the_correction_is_the_robust_line() {
        let mut rng = crate::dc::rng::SplitMix64::new(11);
        for case in 0..20_000 {
            let n = if case % 7 == 0 { 9 } else { 10 };
            let y: Vec<f64> = (0..n)
                .map(|i| match case % 4 {
                    0 => rng.next_f64(),
                    1 if rng.below(3) == 0 => rng.next_f64() * 5.0,
                    2 => 0.5 + 0.03 * i as f64 + rng.next_f64() * 0.01,
                    _ => (rng.next_f64() * 4.0).floor() / 4.0,
                })
                .collect();
            let (a, b) = ols_on_index(&y);
            let res: Vec<f64> = y
                .iter()
                .enumerate()
                .map(|(i, yi)| yi - (a + b * (i + 1) as f64))
                .collect();
            let (ra, rb) = robust_on_index(&y);
            match robust_correction(&res, 1e-6) {
                Some((ca, cb)) => {
                    for x0 in [n as f64, n as f64 + 1.0, n as f64 + 3.0] {
                        let exact = ra + rb * x0;
                        let estimate = (a + ca) + (b + cb) * x0;
                        assert!((exact - estimate).abs() < 1e-11, "{y:?} at {x0}");
                    }
                }
                // Only an (almost) exact line has no scale.
                None => assert!(res.iter().all(|r| r.abs() < 1e-6), "{y:?}"),
            }
        }
    }

    #[test]
    fn robust_fit_ignores_a_spike() {
        let mut y: Vec<f64> = (1..=10).map(|x| 0.2 + 0.01 * x as f64).collect();
        y[4] = 0.9;
        let (_, plain) = ols_on_index(&y);
        let (a, b) = robust_on_index(&y);
        assert!((b - 0.01).abs() < 1e-9, "robust slope {b}, plain {plain}");
        assert!((a - 0.2).abs() < 1e-9);
    }

    #[test]
    fn r_squared_of_exact_and_unrelated_fits() {
        let x1 = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [3.0, 5.0, 7.0, 9.0, 11.0];
        assert!((r_squared(&[&x1], &y).unwrap() - 1.0).abs() < 1e-12);
        // y symmetric around x's mean: no linear relation.
        let y2 = [1.0, 0.0, -1.0, 0.0, 1.0];
        assert!(r_squared(&[&x1], &y2).unwrap().abs() < 1e-12);
        assert_eq!(r_squared(&[&[0.0; 5]], &y), Err(StatsError::Singular));
        assert!(matches!(
            r_squared(&[&x1, &x1, &x1, &x1], &y),
            Err(StatsError::NotEnoughData { .. })
        ));
    }
}
