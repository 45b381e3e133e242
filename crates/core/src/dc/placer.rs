//! PABFD without the full scan: an index over the destination hosts that finds the same host as
//! [`place::find_host`] while looking only at the hosts that can win.
//!
//! PABFD picks, among the hosts that fit the VM and would not be overloaded with it, the one
//! whose power grows least, `P(after) - P(measured)`, ties to the lowest number. CloudSim scans
//! every host for every VM, which is quadratic in the running hosts per round (100,000 VMs: about
//! 3e9 host evaluations in the first round alone). The answer depends only on that minimum, not on
//! the scan order, so any search that provably looks at every host that could be the minimum gives
//! the same choice:
//!
//! - The power models are piecewise linear over ten 10% segments. A host whose utilization by
//!   allocation is `a` has `g = P(a) - P(measured)` (constant while its VMs do not change) and
//!   adding a VM of `d` MIPS raises `P` by at least `d / capacity` times the smallest slope of the
//!   segments the step can cross. So `g + smallest slope x d / capacity` bounds a host's increase
//!   from below.
//! - Hosts are bucketed by (host type, segment of `a`) and ordered by `g` within a bucket; buckets
//!   are visited by increasing bound and each is read in increasing `g` until the bound exceeds the
//!   best increase found (with a margin of 1e-9 W, far above floating-point noise and far below any
//!   difference the bound separates). Every host the full scan could choose is therefore evaluated
//!   exactly as `find_host` evaluates it, with the same tie-break, and the overload test runs, as
//!   there, only for hosts that would improve on the best so far.
//! - Hosts unchanged since the snapshot (most of them) live in dense arrays read sequentially;
//!   hosts changed this round move to ordered sets.
//! - LR's overload test is linear in the history (least squares), so "host plus VM" is predicted
//!   from the host's and the VM's fits (each computed once per round and host state); only when
//!   that prediction is within 1e-9 of the threshold does the exact test run on the combined
//!   history. Other detectors always run the exact test.
//!
//! `tests` and the five PlanetLab days check that the choices are those of the full scan.

use super::cluster::Cluster;
use super::detect::{Detector, Overload, LR_WINDOW};
use super::model::{HostId, PowerModel, VmId};
use super::place::sort_decreasing;
use super::snapshot::HISTORY_LEN;
use super::stats;
use std::collections::BTreeSet;

/// Watts by which a bound must exceed the best increase before hosts are skipped.
const EPS_W: f64 = 1e-9;
/// How far from LR's threshold the linear shortcut is trusted.
const LR_MARGIN: f64 = 1e-9;
const SEGMENTS: usize = 10;
pub static CNT: [std::sync::atomic::AtomicU64; 8] = [const { std::sync::atomic::AtomicU64::new(0) }; 8];
fn bump(i: usize) { CNT[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed); }

/// A history's least-squares line over its last `LR_WINDOW` samples, for LR's shortcut.
#[derive(Debug, Clone, Copy)]
struct Fit {
    a: f64,
    b: f64,
    /// `count_non_zero_beginning` of the history.
    len: usize,
    /// All samples are >= 0 (then a sum of histories is zero exactly where both are).
    nonneg: bool,
}

fn fit(hist: &[f64; HISTORY_LEN]) -> Fit {
    let mut y = [0.0; LR_WINDOW];
    for (i, slot) in y.iter_mut().enumerate() {
        *slot = hist[LR_WINDOW - 1 - i];
    }
    let (a, b) = stats::ols_on_index(&y);
    Fit {
        a,
        b,
        len: stats::count_non_zero_beginning(hist),
        nonneg: hist.iter().all(|&x| x >= 0.0),
    }
}

/// A host unchanged since the snapshot, with what the search needs inline.
#[derive(Debug, Clone, Copy)]
struct Entry {
    g: f64,
    h: HostId,
    alloc: f64,
    avail: f64,
    ram: u64,
    live: bool,
}

#[derive(Debug, Clone, Default)]
struct Dense {
    entries: Vec<Entry>,
    /// Entries before `head` are all dead.
    head: usize,
    dead: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Loc {
    Out,
    Dense(usize, usize),
    Sorted(usize, u64),
}

/// `f64` to `u64` preserving `total_cmp` order.
fn key(g: f64) -> u64 {
    let b = g.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

fn unkey(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// PABFD placement over a working allocation, with the destinations indexed.
#[derive(Debug, Clone)]
pub struct Placer<'d> {
    det: &'d Detector,
    excluded: Vec<bool>,
    off_hosts: bool,
    /// Measured power per host (fixed for the round).
    pm: Vec<f64>,
    loc: Vec<Loc>,
    dense: Vec<Dense>,
    sorted: Vec<BTreeSet<(u64, HostId)>>,
    /// Per host type: smallest slope (W per unit utilization) over segments `i..=j`.
    smin: Vec<[[f64; SEGMENTS]; SEGMENTS]>,
    host_fit: Vec<Option<Fit>>,
    vm_fit: Vec<Option<Fit>>,
    /// Scratch for `find`.
    order: Vec<(f64, usize, bool, f64)>,
}

fn segment(a: f64) -> usize {
    ((a * SEGMENTS as f64).floor().max(0.0) as usize).min(SEGMENTS - 1)
}

fn slopes(p: &PowerModel) -> [[f64; SEGMENTS]; SEGMENTS] {
    let mut s = [[f64::INFINITY; SEGMENTS]; SEGMENTS];
    for i in 0..SEGMENTS {
        let mut m = f64::INFINITY;
        for j in i..SEGMENTS {
            m = m.min((p.watts[j + 1] - p.watts[j]) * SEGMENTS as f64);
            s[i][j] = m;
        }
    }
    s
}

impl<'d> Placer<'d> {
    /// Indexes the active hosts of `c` that `excluded` does not rule out. `off_hosts`: never use
    /// a host that is empty and untouched (otherwise the lowest-numbered one per type competes).
    pub fn new(c: &Cluster, det: &'d Detector, excluded: Vec<bool>, off_hosts: bool) -> Self {
        let snap = c.snap;
        let n = c.len();
        let nb = snap.host_types.len() * SEGMENTS;
        let mut p = Placer {
            det,
            excluded,
            off_hosts,
            pm: (0..n).map(|h| snap.host_power(h)).collect(),
            loc: vec![Loc::Out; n],
            dense: vec![Dense::default(); nb],
            sorted: vec![BTreeSet::new(); nb],
            smin: snap.host_types.iter().map(|t| slopes(&t.power)).collect(),
            host_fit: vec![None; n],
            vm_fit: vec![None; snap.vms.len()],
            order: Vec::new(),
        };
        for &h in c.active_hosts() {
            if p.excluded[h] {
                continue;
            }
            let (b, g) = p.bucket(c, h);
            let w = c.host(h);
            p.dense[b].entries.push(Entry {
                g,
                h,
                alloc: w.alloc_mips,
                avail: w.avail_mips,
                ram: w.ram_used_mb,
                live: true,
            });
        }
        for (b, d) in p.dense.iter_mut().enumerate() {
            d.entries
                .sort_by(|x, y| x.g.total_cmp(&y.g).then(x.h.cmp(&y.h)));
            for (i, e) in d.entries.iter().enumerate() {
                p.loc[e.h] = Loc::Dense(b, i);
            }
        }
        p
    }

    /// (bucket, g) of a host as it stands.
    fn bucket(&self, c: &Cluster, h: HostId) -> (usize, f64) {
        let t = c.host_type(h);
        let a = (c.host(h).alloc_mips / t.total_mips()).min(1.0);
        let kind = c.snap.hosts[h].kind;
        (kind * SEGMENTS + segment(a), t.power.power(a) - self.pm[h])
    }

    fn unindex(&mut self, h: HostId) {
        match std::mem::replace(&mut self.loc[h], Loc::Out) {
            Loc::Out => {}
            Loc::Sorted(b, k) => {
                self.sorted[b].remove(&(k, h));
            }
            Loc::Dense(b, i) => {
                let d = &mut self.dense[b];
                d.entries[i].live = false;
                d.dead += 1;
                if d.dead > 64 && d.dead * 2 > d.entries.len() {
                    d.entries.retain(|e| e.live);
                    d.head = 0;
                    d.dead = 0;
                    for (i, e) in d.entries.iter().enumerate() {
                        self.loc[e.h] = Loc::Dense(b, i);
                    }
                }
            }
        }
    }

    /// Rules `h` out as a destination from now on.
    pub fn exclude(&mut self, h: HostId) {
        self.excluded[h] = true;
        self.unindex(h);
    }

    /// From now on, whether empty untouched hosts are ruled out.
    pub fn set_off_hosts(&mut self, off_hosts: bool) {
        self.off_hosts = off_hosts;
    }

    /// Re-indexes a host whose VM set changed (it is active now).
    fn changed(&mut self, c: &Cluster, h: HostId) {
        self.unindex(h);
        self.host_fit[h] = None;
        if !self.excluded[h] {
            let (b, g) = self.bucket(c, h);
            let k = key(g);
            self.sorted[b].insert((k, h));
            self.loc[h] = Loc::Sorted(b, k);
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
        if let Overload::Lr { safety } = self.det.kind {
            let hf = *self.host_fit[h].get_or_insert_with(|| fit(&c.host(h).hist));
            let vf = *self.vm_fit[vm].get_or_insert_with(|| fit(c.vm(vm).history.padded()));
            if hf.nonneg && vf.nonneg && hf.len.max(vf.len) >= LR_WINDOW {
                let t = c.host_type(h);
                let v = c.vm(vm);
                let weight = v.total_mips() / t.total_mips();
                let mig = t.migration_time_s(c.host(h).max_ram_mb.max(v.ram_mb));
                let x = LR_WINDOW as f64 + (mig / self.det.interval_s).ceil();
                let p = (hf.a + weight * vf.a) + (hf.b + weight * vf.b) * x;
                let s = p * safety;
                if s.is_finite() && (s - 1.0).abs() > LR_MARGIN * (1.0 + s.abs()) {
                    return s >= 1.0;
                }
            }
        }
        bump(4);
        let mut buf = [0.0; HISTORY_LEN];
        self.det.is_overloaded(&c.load_with(h, vm, &mut buf))
    }

    /// `find_host`'s improvement step for one host whose increase is `diff`.
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
        bump(3);
        if alloc != 0.0 && self.overloaded(c, h, vm) {
            return;
        }
        *best = Some((diff, h));
    }

    /// PABFD's pick for `vm` (the same as `place::find_host` with these exclusions).
    pub fn find(&mut self, c: &Cluster, vm: VmId) -> Option<HostId> {
        bump(0);
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
                        let diff = self.diff(c, h, c.host(h).alloc_mips, demand);
                        self.consider(c, vm, h, c.host(h).alloc_mips, diff, &mut best);
                    }
                }
            }
        }
        // Buckets by increasing lower bound: (bound, bucket, dense?, bound minus the bucket's g).
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        for (kind, t) in snap.host_types.iter().enumerate() {
            if t.mips_per_pe < per_pe {
                continue;
            }
            let delta = demand / t.total_mips();
            let span = (delta * SEGMENTS as f64).ceil() as usize + 1;
            for seg in 0..SEGMENTS {
                let b = kind * SEGMENTS + seg;
                let s = self.smin[kind][seg][(seg + span).min(SEGMENTS - 1)];
                let off = if s >= 0.0 { s * delta } else { s * (delta + 1e-9) };
                let d = &mut self.dense[b];
                while d.head < d.entries.len() && !d.entries[d.head].live {
                    d.head += 1;
                }
                if let Some(e) = d.entries.get(d.head) {
                    order.push((e.g + off, b, true, off));
                }
                if let Some(&(k, _)) = self.sorted[b].first() {
                    order.push((unkey(k) + off, b, false, off));
                }
            }
        }
        order.sort_by(|x, y| x.0.total_cmp(&y.0));
        for &(lb, b, dense, off) in &order {
            if best.is_some_and(|(bd, _)| lb - EPS_W > bd) {
                break;
            }
            if dense {
                self.scan_dense(c, vm, b, b / SEGMENTS, off, &mut best);
            } else {
                self.scan_sorted(c, vm, b, off, &mut best);
            }
        }
        self.order = order;
        best.map(|(_, h)| h)
    }

    fn diff(&self, c: &Cluster, h: HostId, alloc: f64, demand: f64) -> f64 {
        let t = c.host_type(h);
        let after = ((alloc + demand) / t.total_mips()).min(1.0);
        t.power.power(after) - self.pm[h]
    }

    fn scan_dense(
        &mut self,
        c: &Cluster,
        vm: VmId,
        b: usize,
        kind: usize,
        off: f64,
        best: &mut Option<(f64, HostId)>,
    ) {
        let snap = c.snap;
        let t = &snap.host_types[kind];
        let total = t.total_mips();
        let v = c.vm(vm);
        let demand = v.demand_mips;
        let mem = snap.enforce_memory;
        let ram_cap = t.ram_mb as u64;
        let mut i = self.dense[b].head;
        while i < self.dense[b].entries.len() {
            let e = self.dense[b].entries[i];
            i += 1;
            bump(1);
            if best.is_some_and(|(bd, _)| e.g + off - EPS_W > bd) {
                break;
            }
            if !e.live || e.avail < demand || (mem && e.ram + v.ram_mb as u64 > ram_cap) {
                continue;
            }
            let after = ((e.alloc + demand) / total).min(1.0);
            let diff = t.power.power(after) - self.pm[e.h];
            self.consider(c, vm, e.h, e.alloc, diff, best);
        }
    }

    fn scan_sorted(
        &mut self,
        c: &Cluster,
        vm: VmId,
        b: usize,
        off: f64,
        best: &mut Option<(f64, HostId)>,
    ) {
        let demand = c.vm(vm).demand_mips;
        let mut from = (0u64, 0usize);
        loop {
            let next = self.sorted[b].range(from..).next().copied();
            let Some((k, h)) = next else { break };
            bump(2);
            if best.is_some_and(|(bd, _)| unkey(k) + off - EPS_W > bd) {
                break;
            }
            if c.fits(h, vm) {
                let alloc = c.host(h).alloc_mips;
                let diff = self.diff(c, h, alloc, demand);
                self.consider(c, vm, h, alloc, diff, best);
            }
            match h.checked_add(1) {
                Some(n) => from = (k, n),
                None => break,
            }
        }
    }

    /// Places as many of `vms` as possible (`place::place_each`).
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

    /// Places all of `vms` or none (`place::place_all`).
    pub fn place_all(&mut self, c: &mut Cluster, vms: &[VmId]) -> Option<Vec<(VmId, HostId)>> {
        let mut sorted = vms.to_vec();
        sort_decreasing(c, &mut sorted);
        let mut out: Vec<(VmId, HostId)> = Vec::new();
        for vm in sorted {
            match self.find(c, vm) {
                Some(h) => {
                    self.add(c, h, vm);
                    out.push((vm, h));
                }
                None => {
                    for &(v, h) in out.iter().rev() {
                        self.remove(c, h, v);
                    }
                    return None;
                }
            }
        }
        Some(out)
    }
}
