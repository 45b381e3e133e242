//! PABFD without the full scan: an index over the destination hosts that finds the same host as
//! [`place::find_host`](super::place::find_host) while looking only at hosts that can win.
//!
//! PABFD picks, among the hosts that fit the VM and would not be overloaded with it, the one
//! whose power grows least, `P(after) - P(measured)`, ties to the lowest number. CloudSim scans
//! every host for every VM, which is quadratic in the running hosts per round (100,000 VMs: about
//! 3e9 host evaluations in the first round alone). The answer is the minimum of (increase, host
//! number) over the qualifying hosts, whatever the scan order, so a search that provably evaluates
//! every host that could be that minimum, exactly as `find_host` evaluates it, makes the same
//! choice:
//!
//! - **Power bound.** The power models are piecewise linear over ten 10% segments. A host whose
//!   utilization by allocation is `a` has `g = P(a) - P(measured)` (constant while its VMs do not
//!   change), and adding `d` MIPS raises `P` by at least the least increase of that step over
//!   `a`'s segment (`index::increase_floor`: piecewise linear, so taken at the segment's ends
//!   and kinks). A host fits the step only when `a <= 1 - d / capacity`, so segments above
//!   that hold no candidate and are not read at all (packed hosts are most of them at
//!   scale, and were read for every VM). Hosts are bucketed by (type, band, segment of `a`);
//!   buckets are visited by increasing bound and each is read while its bound does not exceed
//!   the best increase found. The margin, 1e-9 W, is far above floating-point noise (1e-13 W)
//!   and far below what the bound separates. Changed hosts are ordered by `g` in a bucket.
//!   Unchanged hosts all have `g` of 0 or nearly (their allocation is what was measured), so
//!   they are ordered by `a` instead, and a bucket is read only over the stretches of `a`
//!   where the bucket's least `g` plus the increase at `a` (linear between the kinks) can
//!   still reach the best found, cheapest stretch first (`index::pieces`): a bucket whose
//!   cheapest increase is only reached where the step crosses into a cheaper segment is read
//!   near that edge, not whole. Hosts whose increases tie up to rounding must all be read
//!   (rounding decides between them, as in the full scan).
//! - **Overload bound.** For LR the forecast of "host plus VM" is the host's forecast plus the
//!   VM's, weighted (least squares is linear in the data); for THR the utilization is a sum. A
//!   host's own forecast (LR), utilization (THR) or `u + s * spread` (IQR, MAD: see
//!   `spread.rs`), `r`, sets its band; a bucket whose band starts where the VM could only
//!   overload it, by a margin of 1e-6, is skipped, and so is such a host. Hosts whose test is
//!   not of that form (LRR, short histories, idle hosts) are in a band that is never skipped.
//!   IQR's and MAD's exact test is also settled from bounds when it can be (`spread.rs`).
//! - **Same tests.** The hosts read are tested exactly as `find_host` tests them, and the
//!   overload test runs, as there, only for hosts that would improve on the best so far. LR's
//!   test is first answered from the two fits (computed once per round and host state); only
//!   within 1e-9 of the threshold does the exact test run on the combined history.
//! - Hosts unchanged since the snapshot (most of them) live in dense arrays read sequentially;
//!   hosts changed this round move to ordered sets.
//!
//! The unit tests compare it with `find_host` on random clusters; the five PlanetLab days give
//! bit-identical results with either.
//!
//! Files: `index.rs` is the index (the buckets, their dense arrays and ordered sets, where each
//! host is); `spread.rs` the bounds on IQR's and MAD's test; this file is the search over it (bounds, the same tests as `find_host`) and the
//! two ways of placing a set of VMs ([`Placer::place_each`]: best effort; [`Placer::place_all`]:
//! all or nothing); `tests.rs` checks the search against the full scan.

mod index;
mod spread;
#[cfg(test)]
mod tests;

use super::cluster::{Cluster, HostWork};
use super::detect::{Detector, Overload, LR_WINDOW};
use super::model::{HostId, VmId};
use super::place::sort_decreasing;
use super::snapshot::HISTORY_LEN;
use super::stats::{self, LineFit, Trend};
pub(crate) use index::key as order_key;
use index::{
    band, bucket, increase_floor, kind_of, pieces, segment, stretch_below, Entry, Index, BANDS,
    BAND_EDGES, SEGMENTS,
};

/// Watts by which a bound must exceed the best increase before hosts are skipped.
const EPS_W: f64 = 1e-9;
/// How far from LR's threshold the linear shortcut is trusted (relative).
const LR_MARGIN: f64 = 1e-9;
/// How far from LRR's threshold its estimate from the cached lines is trusted (relative): the
/// estimate differs from the exact robust fit by rounding amplified through the weights, about
/// 1e-12 at worst in the tests, so this is a wide berth.
const LRR_MARGIN: f64 = 1e-6;
/// Residual scale (six median magnitudes) under which LRR's estimate is not used: the bisquare
/// weights of an almost exact line amplify rounding without bound.
const ROBUST_MIN_SCALE: f64 = 1e-6;
/// How far past the overload threshold a bound must be before hosts are skipped.
const OVER_MARGIN: f64 = 1e-6;
/// A history's least-squares line over its last `LR_WINDOW` samples, for LR's shortcut.
#[derive(Debug, Clone, Copy)]
struct Fit {
    line: Trend,
    /// `count_non_zero_beginning` of the history.
    len: usize,
    /// All samples are >= 0 (then a sum of histories is zero exactly where both are).
    nonneg: bool,
    /// The line's residuals over the window, oldest first (x = 1..=`LR_WINDOW`), for LRR.
    res: [f64; LR_WINDOW],
}

fn fit(hist: &[f64; HISTORY_LEN]) -> Fit {
    // A padded history always holds LR_WINDOW samples; a NaN line would only turn the shortcut
    // off (every use checks for a finite forecast or falls back to the exact test).
    let line = Trend::fit(hist, LR_WINDOW, LineFit::Ols).unwrap_or(Trend {
        intercept: f64::NAN,
        slope: f64::NAN,
        window: LR_WINDOW,
    });
    // Oldest first, x = 1..=LR_WINDOW, as `Trend::fit` puts the newest samples.
    let res = std::array::from_fn(|i| {
        hist[LR_WINDOW - 1 - i] - (line.intercept + line.slope * (i + 1) as f64)
    });
    Fit {
        line,
        len: stats::count_non_zero_beginning(hist),
        nonneg: hist.iter().all(|&x| x >= 0.0),
        res,
    }
}

/// Whether a host whose own forecast or utilization is `r` is certainly overloaded by a VM whose
/// cut is `cut` (`r` is NaN for unbanded hosts: never).
fn doomed(r: f64, cut: f64) -> bool {
    r >= cut
}

/// A bucket worth reading for one VM.
#[derive(Debug, Clone, Copy)]
struct Visit {
    bound: f64,
    bucket: usize,
    dense: bool,
    /// The bucket's bound minus its smallest `g`.
    off: f64,
    /// Hosts with `r` at least this are overloaded by the VM.
    cut: f64,
}

/// PABFD placement over a working allocation, with the destinations indexed. Every change to the
/// cluster must go through [`Placer::add`] and [`Placer::remove`] while it is in use.
#[derive(Debug, Clone)]
pub struct Placer<'d> {
    det: &'d Detector,
    excluded: Vec<bool>,
    off_hosts: bool,
    /// Measured power per host (fixed for the round).
    pm: Vec<f64>,
    /// Each indexed host's `r` (NaN: unbanded).
    r: Vec<f64>,
    index: Index,
    /// LR's horizon (intervals past the newest sample) when it is the same for every host and
    /// VM (banding needs it).
    lr_ahead: Option<f64>,
    host_fit: Vec<Option<Fit>>,
    vm_fit: Vec<Option<Fit>>,
    /// IQR's or MAD's safety when their bounds apply (`spread`).
    spread_safety: Option<f64>,
    /// Each host's own spread for the bounds (NaN: unusable), computed once per host state.
    host_spread: Vec<Option<f64>>,
    /// Each host's IQR tails (`spread::tails`), computed once per host state.
    host_tails: Vec<Option<spread::Tails>>,
    /// Each host's MAD positions (`spread::mad_shape`), computed once per host state.
    host_mad: Vec<Option<spread::MadShape>>,
    /// Each VM's history range for the bounds (NaN: unusable).
    vm_range: Vec<Option<f64>>,
    visits: Vec<Visit>,
}

impl<'d> Placer<'d> {
    /// Indexes the active hosts of `c` that `excluded` does not rule out. `off_hosts`: never use
    /// a host that is empty and untouched (otherwise the lowest-numbered one per type competes).
    pub fn new(c: &Cluster, det: &'d Detector, excluded: Vec<bool>, off_hosts: bool) -> Self {
        let snap = c.snap;
        let n = c.len();
        // LR's horizon depends on the longest migration off the host; when it is the same for
        // every host type and VM memory, it is the same for every host-VM pair.
        let mut xs = snap.host_types.iter().flat_map(|t| {
            snap.vms
                .iter()
                .map(move |v| det.lr_horizon(t.migration_time_s(v.ram_mb)))
        });
        let first = xs.next();
        let lr_ahead = match first {
            Some(x) if xs.all(|y| y == x) => Some(x),
            _ => None,
        };
        let mut p = Placer {
            det,
            excluded,
            off_hosts,
            pm: (0..n).map(|h| snap.host_power(h)).collect(),
            r: vec![f64::NAN; n],
            index: Index::new(n, snap.host_types.len()),
            lr_ahead,
            host_fit: vec![None; n],
            vm_fit: vec![None; snap.vms.len()],
            spread_safety: spread::safety(det),
            host_spread: vec![None; n],
            host_tails: vec![None; n],
            host_mad: vec![None; n],
            vm_range: vec![None; snap.vms.len()],
            visits: Vec::new(),
        };
        for &h in c.active_hosts() {
            if p.excluded[h] {
                continue;
            }
            let (b, g, r) = p.bucket(c, h);
            p.r[h] = r;
            let w = c.host(h);
            p.index.push_dense(
                b,
                Entry {
                    a: (w.alloc_mips / c.host_type(h).total_mips()).min(1.0),
                    g,
                    r,
                    pm: p.pm[h],
                    h,
                    alloc: w.alloc_mips,
                    avail: w.avail_mips,
                    ram: w.ram_used_mb,
                    live: true,
                },
            );
        }
        p.index.seal();
        p
    }

    /// (bucket, g, r) of a host as it stands.
    fn bucket(&mut self, c: &Cluster, h: HostId) -> (usize, f64, f64) {
        let t = c.host_type(h);
        let w = c.host(h);
        let a = (w.alloc_mips / t.total_mips()).min(1.0);
        let kind = c.snap.hosts[h].kind;
        let r = if w.alloc_mips == 0.0 {
            f64::NAN
        } else {
            match self.det.kind {
                Overload::Thr { .. } => w.req_mips / t.total_mips(),
                Overload::Lr { safety } => match self.lr_ahead {
                    Some(x) => {
                        let f = *self.host_fit[h].get_or_insert_with(|| fit(&w.hist));
                        if f.nonneg && f.len >= LR_WINDOW {
                            f.line.ahead(x) * safety
                        } else {
                            f64::NAN
                        }
                    }
                    None => f64::NAN,
                },
                Overload::Iqr { .. } | Overload::Mad { .. } => match self.spread_safety {
                    Some(s) => {
                        let sp = self.host_spread(c, h);
                        spread::band_value(s, w.req_mips / t.total_mips(), sp)
                    }
                    None => f64::NAN,
                },
                _ => f64::NAN,
            }
        };
        let b = bucket(kind, band(r), segment(a));
        (b, t.power.power(a) - self.pm[h], r)
    }

    /// Rules `h` out as a destination from now on.
    pub fn exclude(&mut self, h: HostId) {
        self.excluded[h] = true;
        self.index.remove(h);
    }

    /// From now on, whether empty untouched hosts are ruled out.
    pub fn set_off_hosts(&mut self, off_hosts: bool) {
        self.off_hosts = off_hosts;
    }

    /// Re-indexes a host whose VM set changed (it is active now).
    fn changed(&mut self, c: &Cluster, h: HostId) {
        self.index.remove(h);
        self.host_fit[h] = None;
        self.host_spread[h] = None;
        self.host_tails[h] = None;
        self.host_mad[h] = None;
        if !self.excluded[h] {
            let (b, g, r) = self.bucket(c, h);
            self.r[h] = r;
            self.index.insert_sorted(b, g, h);
        }
    }

    pub fn add(&mut self, c: &mut Cluster, h: HostId, vm: VmId) {
        c.add(h, vm);
        self.changed(c, h);
    }

    pub fn remove(&mut self, c: &mut Cluster, h: HostId, vm: VmId) {
        c.remove(h, vm);
        self.changed(c, h);
    }

    /// Whether `h` would be overloaded with `vm` (exactly `Detector::is_overloaded` on
    /// `load_with`).
    fn overloaded(&mut self, c: &Cluster, h: HostId, vm: VmId) -> bool {
        if let Some(answer) = self.settled_by_lines(c, h, vm) {
            return answer;
        }
        if let Some(s) = self.spread_safety {
            let sp = self.host_spread(c, h);
            let t = c.host_type(h);
            let v = c.vm(vm);
            let range = self.vm_range(c, vm) * (v.total_mips() / t.total_mips());
            // The same utilization `load_with` gives the detector.
            let u = (c.host(h).req_mips + v.demand_mips) / t.total_mips();
            if let Some(answer) = spread::settle(s, u, sp, range) {
                return answer;
            }
            if sp.is_finite() && matches!(self.det.kind, Overload::Iqr { .. }) {
                let a = &c.host(h).hist;
                let tails = *self.host_tails[h].get_or_insert_with(|| spread::tails(a));
                let weight = v.total_mips() / t.total_mips();
                // Never above the exact IQR, so over this threshold is over the exact one.
                if u > 1.0 - s * spread::iqr_floor(a, &tails, v.history.padded(), weight) {
                    return true;
                }
            }
            // The VM's history must be usable too (finite, non-negative: the combined history
            // is then full and every sample enters the floor).
            if sp.is_finite() && range.is_finite() && matches!(self.det.kind, Overload::Mad { .. })
            {
                let a = &c.host(h).hist;
                let shape = *self.host_mad[h].get_or_insert_with(|| spread::mad_shape(a));
                let weight = v.total_mips() / t.total_mips();
                let floor = spread::mad_floor(a, &shape, v.history.padded(), weight);
                if spread::over_by_floor(s, u, floor) {
                    return true;
                }
            }
        }
        let mut buf = [0.0; HISTORY_LEN];
        self.det.is_overloaded(&c.load_with(h, vm, &mut buf))
    }

    /// LR's and LRR's answer from the host's and the VM's cached least-squares fits, when they
    /// settle it: least squares is linear in the data, so the combined history's line is the
    /// host's plus the VM's weighted, and so are its residuals; LR's forecast is that line's,
    /// LRR's that line plus the robust correction of those residuals
    /// (`stats::robust_correction`, skipping both OLS passes and the combined history). `None`
    /// within the margin of the threshold, or when a history is short or negative somewhere
    /// (the detector then reads other samples or falls back to THR): the exact test decides.
    fn settled_by_lines(&mut self, c: &Cluster, h: HostId, vm: VmId) -> Option<bool> {
        let (safety, robust) = match self.det.kind {
            Overload::Lr { safety } => (safety, false),
            Overload::Lrr { safety } => (safety, true),
            _ => return None,
        };
        let hf = *self.host_fit[h].get_or_insert_with(|| fit(&c.host(h).hist));
        let vf = *self.vm_fit[vm].get_or_insert_with(|| fit(c.vm(vm).history.padded()));
        if !(hf.nonneg && vf.nonneg && hf.len.max(vf.len) >= LR_WINDOW) {
            return None;
        }
        let t = c.host_type(h);
        let v = c.vm(vm);
        let weight = v.total_mips() / t.total_mips();
        let mig = t.migration_time_s(c.host(h).max_ram_mb.max(v.ram_mb));
        let ahead = self.det.lr_horizon(mig);
        let both = Trend {
            intercept: hf.line.intercept + weight * vf.line.intercept,
            slope: hf.line.slope + weight * vf.line.slope,
            window: LR_WINDOW,
        };
        let x0 = LR_WINDOW as f64 + ahead;
        let (s, margin) = if robust {
            // The combined residuals are the host's plus the VM's weighted (rounding aside).
            let res: [f64; LR_WINDOW] = std::array::from_fn(|i| hf.res[i] + weight * vf.res[i]);
            let (ca, cb) = stats::robust_correction(&res, ROBUST_MIN_SCALE)?;
            let robust = (both.intercept + ca) + (both.slope + cb) * x0;
            (robust * safety, LRR_MARGIN)
        } else {
            (both.ahead(ahead) * safety, LR_MARGIN)
        };
        if s.is_finite() && (s - 1.0).abs() > margin * (1.0 + s.abs()) {
            Some(s >= 1.0)
        } else {
            None
        }
    }

    /// `h`'s own spread for IQR's and MAD's bounds (NaN: unusable).
    fn host_spread(&mut self, c: &Cluster, h: HostId) -> f64 {
        let det = self.det;
        *self.host_spread[h].get_or_insert_with(|| spread::host_spread(det, &c.host(h).hist))
    }

    /// `vm`'s history range for IQR's and MAD's bounds (NaN: unusable).
    fn vm_range(&mut self, c: &Cluster, vm: VmId) -> f64 {
        *self.vm_range[vm].get_or_insert_with(|| spread::vm_range(c.vm(vm).history.padded()))
    }

    /// `find_host`'s improvement step for one host that fits, whose increase is `diff`.
    #[inline]
    fn consider(
        &mut self,
        c: &Cluster,
        vm: VmId,
        h: HostId,
        alloc: f64,
        diff: f64,
        best: &mut Option<(f64, HostId)>,
    ) {
        if best.is_some_and(|(bd, bh)| diff > bd || (diff == bd && h > bh)) {
            return;
        }
        if alloc != 0.0 && self.overloaded(c, h, vm) {
            return;
        }
        *best = Some((diff, h));
    }

    /// The `r` from which a host of type `kind` is certainly overloaded by `vm` (+inf: none).
    fn cut(&mut self, c: &Cluster, vm: VmId, kind: usize) -> f64 {
        let v = c.vm(vm);
        let total = c.snap.host_types[kind].total_mips();
        match self.det.kind {
            Overload::Thr { threshold } => threshold + OVER_MARGIN - v.demand_mips / total,
            Overload::Lr { safety } => match self.lr_ahead {
                Some(x) => {
                    let f = *self.vm_fit[vm].get_or_insert_with(|| fit(v.history.padded()));
                    let pv = f.line.ahead(x) * safety * (v.total_mips() / total);
                    if f.nonneg && pv.is_finite() {
                        1.0 + OVER_MARGIN - pv
                    } else {
                        f64::INFINITY
                    }
                }
                None => f64::INFINITY,
            },
            Overload::Iqr { .. } | Overload::Mad { .. } => match self.spread_safety {
                Some(s) => {
                    let range = self.vm_range(c, vm) * (v.total_mips() / total);
                    spread::cut(s, v.demand_mips / total, range, OVER_MARGIN)
                }
                None => f64::INFINITY,
            },
            _ => f64::INFINITY,
        }
    }

    /// PABFD's pick for `vm` (the same as `place::find_host` with these exclusions).
    pub fn find(&mut self, c: &Cluster, vm: VmId) -> Option<HostId> {
        let snap = c.snap;
        let v = c.vm(vm);
        let demand = v.demand_mips;
        let per_pe = v.demand_per_pe();
        let mut best: Option<(f64, HostId)> = None;
        if !self.off_hosts {
            for kind in 0..snap.host_types.len() {
                let ex = &self.excluded;
                if let Some(h) = c.first_pristine_empty(kind, |h| ex[h]) {
                    if c.fits(h, vm) {
                        let alloc = c.host(h).alloc_mips;
                        let diff = self.diff(c, h, alloc, demand);
                        self.consider(c, vm, h, alloc, diff, &mut best);
                    }
                }
            }
        }
        let mut visits = std::mem::take(&mut self.visits);
        visits.clear();
        for (kind, t) in snap.host_types.iter().enumerate() {
            if t.mips_per_pe < per_pe {
                continue;
            }
            let cut = self.cut(c, vm, kind);
            let delta = demand / t.total_mips();
            // Per segment: the least increase a host there can see, or none fits the VM.
            let offs: [Option<f64>; SEGMENTS] =
                std::array::from_fn(|seg| increase_floor(&t.power, seg, delta));
            for bd in 0..BANDS {
                if BAND_EDGES.get(bd).is_some_and(|&edge| edge >= cut) {
                    continue;
                }
                for (seg, off) in offs.iter().enumerate() {
                    let Some(off) = *off else { continue };
                    let b = bucket(kind, bd, seg);
                    if let Some(g_min) = self.index.dense_g_min(b) {
                        visits.push(Visit {
                            bound: g_min + off,
                            bucket: b,
                            dense: true,
                            off,
                            cut,
                        });
                    }
                    if let Some(g) = self.index.sorted_front(b) {
                        visits.push(Visit {
                            bound: g + off,
                            bucket: b,
                            dense: false,
                            off,
                            cut,
                        });
                    }
                }
            }
        }
        visits.sort_by(|x, y| x.bound.total_cmp(&y.bound));
        for visit in &visits {
            if best.is_some_and(|(bd, _)| visit.bound - EPS_W > bd) {
                break;
            }
            if visit.dense {
                self.scan_dense(c, vm, visit, &mut best);
            } else {
                self.scan_sorted(c, vm, visit, &mut best);
            }
        }
        self.visits = visits;
        best.map(|(_, h)| h)
    }

    fn diff(&self, c: &Cluster, h: HostId, alloc: f64, demand: f64) -> f64 {
        let t = c.host_type(h);
        let after = ((alloc + demand) / t.total_mips()).min(1.0);
        t.power.power(after) - self.pm[h]
    }

    /// Reads a dense bucket over the stretches of utilization where a host could still beat
    /// the best so far (its `g` is at least the bucket's floor; its increase is the one of its
    /// utilization, linear between kinks: `index::pieces`), cheapest stretch first.
    fn scan_dense(
        &mut self,
        c: &Cluster,
        vm: VmId,
        visit: &Visit,
        best: &mut Option<(f64, HostId)>,
    ) {
        let snap = c.snap;
        let b = visit.bucket;
        let t = &snap.host_types[kind_of(b)];
        let total = t.total_mips();
        let v = c.vm(vm);
        let demand = v.demand_mips;
        let mem = snap.enforce_memory;
        let ram_cap = t.ram_mb as u64;
        let Some(g_min) = self.index.dense_g_min(b) else {
            return;
        };
        let Some((pieces, n)) = pieces(&t.power, b % SEGMENTS, demand / total) else {
            return;
        };
        // Taken out while read (`consider` does not touch the index).
        let entries = self.index.take_dense(b);
        for &piece in &pieces[..n] {
            let x = best.map_or(f64::INFINITY, |(bd, _)| bd + EPS_W - g_min);
            if piece.2.min(piece.3) > x {
                break;
            }
            let Some((from, to)) = stretch_below(piece, x) else {
                continue;
            };
            let start = entries.partition_point(|e| e.a < from);
            // `consider`'s first test, here to spare the call for most hosts (no best yet:
            // nothing is rejected, as with these sentinels).
            let (mut bd, mut bh) = best.unwrap_or((f64::INFINITY, HostId::MAX));
            for e in &entries[start..] {
                if e.a > to {
                    break;
                }
                if !e.live
                    || doomed(e.r, visit.cut)
                    || e.avail < demand
                    || (mem && e.ram + v.ram_mb as u64 > ram_cap)
                {
                    continue;
                }
                let after = ((e.alloc + demand) / total).min(1.0);
                let diff = t.power.power(after) - e.pm;
                if diff > bd || (diff == bd && e.h > bh) {
                    continue;
                }
                self.consider(c, vm, e.h, e.alloc, diff, best);
                (bd, bh) = best.unwrap_or((f64::INFINITY, HostId::MAX));
            }
        }
        self.index.put_dense(b, entries);
    }

    fn scan_sorted(
        &mut self,
        c: &Cluster,
        vm: VmId,
        visit: &Visit,
        best: &mut Option<(f64, HostId)>,
    ) {
        let b = visit.bucket;
        // Every host of the bucket is of its type: `Cluster::fits` and `diff` without looking
        // the type up host by host.
        let t = &c.snap.host_types[kind_of(b)];
        let total = t.total_mips();
        let v = c.vm(vm);
        let demand = v.demand_mips;
        let fits_core = t.mips_per_pe >= v.demand_per_pe();
        let mem = c.snap.enforce_memory;
        // Taken out while read (`consider` does not touch the index).
        let set = self.index.take_sorted(b);
        for &(k, h) in &set {
            if best.is_some_and(|(bd, _)| index::unkey(k) + visit.off - EPS_W > bd) {
                break;
            }
            if doomed(self.r[h], visit.cut) || !fits_core {
                continue;
            }
            let w = c.host(h);
            if w.avail_mips < demand || (mem && w.ram_used_mb + v.ram_mb as u64 > t.ram_mb as u64) {
                continue;
            }
            let after = ((w.alloc_mips + demand) / total).min(1.0);
            let diff = t.power.power(after) - self.pm[h];
            self.consider(c, vm, h, w.alloc_mips, diff, best);
        }
        self.index.put_sorted(b, set);
    }

    /// Places as many of `vms` as possible, in decreasing order of demand (best effort, as for
    /// VMs leaving overloaded hosts); returns where each placed VM went.
    pub fn place_each(&mut self, c: &mut Cluster, vms: &[VmId]) -> Vec<(VmId, HostId)> {
        let mut sorted = vms.to_vec();
        sort_decreasing(c, &mut sorted);
        let mut out = Vec::new();
        for vm in sorted {
            if let Some(h) = self.find(c, vm) {
                self.add(c, h, vm);
                out.push((vm, h));
            }
        }
        out
    }

    /// Places all of `vms` or none (as for evacuating an underloaded host): on the first VM that
    /// finds no host, earlier tentative placements are undone.
    pub fn place_all(&mut self, c: &mut Cluster, vms: &[VmId]) -> Option<Vec<(VmId, HostId)>> {
        let mut sorted = vms.to_vec();
        sort_decreasing(c, &mut sorted);
        let mut out: Vec<(VmId, HostId)> = Vec::new();
        // Each destination as it was before this call's first VM joined it.
        let mut saved: Vec<(HostId, HostWork)> = Vec::new();
        for vm in sorted {
            match self.find(c, vm) {
                Some(h) => {
                    if saved.iter().all(|&(s, _)| s != h) {
                        saved.push((h, c.host(h).clone()));
                    }
                    self.add(c, h, vm);
                    out.push((vm, h));
                }
                None => {
                    // Undone as removing them newest first would (see `Cluster::restore`).
                    for (h, w) in saved.into_iter().rev() {
                        c.restore(h, w);
                        self.changed(c, h);
                    }
                    return None;
                }
            }
        }
        Some(out)
    }
}
