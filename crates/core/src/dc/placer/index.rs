//! The placer's index of destination hosts: buckets by (host type, band of `r`, segment of the
//! utilization by allocation). Hosts unchanged since the snapshot live in dense arrays ordered
//! by that utilization (their `g`, the host's power over its measured power, is 0 or close to
//! it, so it would not order them usefully), read over the stretches where a host could still
//! win ([`stretches`]); a host changed this round moves to its bucket's set ordered by `g`. The
//! search that reads it, and what `g`, `r` and the bounds mean, are in the parent module.

use crate::dc::model::{HostId, PowerModel};
use std::collections::BTreeSet;

/// Segments of the power models (each 10% of utilization).
pub(super) const SEGMENTS: usize = 10;
/// Lower edges of the bands of `r` (a host's own forecast or utilization).
pub(super) const BAND_EDGES: [f64; 13] = [
    f64::NEG_INFINITY,
    0.3,
    0.4,
    0.5,
    0.6,
    0.65,
    0.7,
    0.75,
    0.8,
    0.85,
    0.9,
    0.95,
    1.0,
];
/// Bands: one per edge, plus the never-skipped band.
pub(super) const BANDS: usize = BAND_EDGES.len() + 1;
pub(super) const UNBANDED: usize = BAND_EDGES.len();
/// Dead dense entries tolerated before a bucket is compacted (and then only when they are
/// over half of it): compaction rewrites every entry's location.
const COMPACT_AFTER: usize = 64;

/// A host unchanged since the snapshot, with what the search needs inline.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    /// Utilization by allocation (`alloc` over capacity, at most 1): the dense order.
    pub a: f64,
    pub g: f64,
    pub r: f64,
    /// Measured power.
    pub pm: f64,
    pub h: HostId,
    pub alloc: f64,
    pub avail: f64,
    pub ram: u64,
    pub live: bool,
}

#[derive(Debug, Clone, Default)]
struct Dense {
    entries: Vec<Entry>,
    dead: usize,
    /// The least `g` of the entries at sealing (a floor for the live ones ever after).
    g_min: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Loc {
    Out,
    Dense(usize, usize),
    Sorted(usize, u64),
}

/// The buckets and where each host is in them.
#[derive(Debug, Clone)]
pub(super) struct Index {
    loc: Vec<Loc>,
    dense: Vec<Dense>,
    sorted: Vec<BTreeSet<(u64, HostId)>>,
}

impl Index {
    /// An empty index of `hosts` hosts of `host_types` types.
    pub fn new(hosts: usize, host_types: usize) -> Self {
        let buckets = host_types * BANDS * SEGMENTS;
        Index {
            loc: vec![Loc::Out; hosts],
            dense: vec![Dense::default(); buckets],
            sorted: vec![BTreeSet::new(); buckets],
        }
    }

    /// Adds a host as the snapshot has it; [`Index::seal`] once all are in.
    pub fn push_dense(&mut self, bucket: usize, e: Entry) {
        self.dense[bucket].entries.push(e);
    }

    /// Orders each dense bucket by (utilization, host) and records where each host went.
    pub fn seal(&mut self) {
        for (b, d) in self.dense.iter_mut().enumerate() {
            d.entries
                .sort_by(|x, y| x.a.total_cmp(&y.a).then(x.h.cmp(&y.h)));
            d.g_min = d.entries.iter().map(|e| e.g).fold(f64::INFINITY, f64::min);
            for (i, e) in d.entries.iter().enumerate() {
                self.loc[e.h] = Loc::Dense(b, i);
            }
        }
    }

    /// Takes `h` out of the index, wherever it is.
    pub fn remove(&mut self, h: HostId) {
        match std::mem::replace(&mut self.loc[h], Loc::Out) {
            Loc::Out => {}
            Loc::Sorted(b, k) => {
                self.sorted[b].remove(&(k, h));
            }
            Loc::Dense(b, i) => {
                let d = &mut self.dense[b];
                d.entries[i].live = false;
                d.dead += 1;
                if d.dead > COMPACT_AFTER && d.dead * 2 > d.entries.len() {
                    d.entries.retain(|e| e.live);
                    d.dead = 0;
                    for (i, e) in d.entries.iter().enumerate() {
                        self.loc[e.h] = Loc::Dense(b, i);
                    }
                }
            }
        }
    }

    /// Puts a changed host in `bucket`'s ordered set with its `g`.
    pub fn insert_sorted(&mut self, bucket: usize, g: f64, h: HostId) {
        let k = key(g);
        self.sorted[bucket].insert((k, h));
        self.loc[h] = Loc::Sorted(bucket, k);
    }

    /// A floor under the `g` of `bucket`'s live dense entries; `None` when it has none.
    pub fn dense_g_min(&self, bucket: usize) -> Option<f64> {
        let d = &self.dense[bucket];
        (d.entries.len() > d.dead).then_some(d.g_min)
    }

    /// `bucket`'s dense entries (dead or alive, by utilization), taken out while they are
    /// read (see [`Index::put_dense`]).
    pub fn take_dense(&mut self, bucket: usize) -> Vec<Entry> {
        std::mem::take(&mut self.dense[bucket].entries)
    }

    pub fn put_dense(&mut self, bucket: usize, entries: Vec<Entry>) {
        self.dense[bucket].entries = entries;
    }

    /// The smallest `g` in `bucket`'s ordered set.
    pub fn sorted_front(&self, bucket: usize) -> Option<f64> {
        self.sorted[bucket].first().map(|&(k, _)| unkey(k))
    }

    /// `bucket`'s ordered set, taken out while it is read (see [`Index::put_sorted`]).
    pub fn take_sorted(&mut self, bucket: usize) -> BTreeSet<(u64, HostId)> {
        std::mem::take(&mut self.sorted[bucket])
    }

    pub fn put_sorted(&mut self, bucket: usize, set: BTreeSet<(u64, HostId)>) {
        self.sorted[bucket] = set;
    }
}

/// The bucket of a host of type `kind` in band `band` and segment `segment`.
pub(super) fn bucket(kind: usize, band: usize, segment: usize) -> usize {
    (kind * BANDS + band) * SEGMENTS + segment
}

/// The host type of a bucket.
pub(super) fn kind_of(bucket: usize) -> usize {
    bucket / (BANDS * SEGMENTS)
}

/// `f64` to `u64` preserving `total_cmp` order, and back.
pub(crate) fn key(g: f64) -> u64 {
    let b = g.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

pub(super) fn unkey(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// The power segment of utilization `a`.
pub(super) fn segment(a: f64) -> usize {
    ((a * SEGMENTS as f64).floor().max(0.0) as usize).min(SEGMENTS - 1)
}

/// The band of `r` (NaN: the never-skipped band).
pub(super) fn band(r: f64) -> usize {
    if r.is_nan() {
        return UNBANDED;
    }
    BAND_EDGES.iter().rposition(|&e| r >= e).unwrap_or(UNBANDED)
}

/// How far past full a host that fits a step may appear, in utilization: a host fits `delta`
/// when its free CPU covers it, so its utilization by allocation is at most `1 - delta` up to
/// rounding (about 1e-16).
const FIT_SLACK: f64 = 1e-9;

/// Where the power increase of a step of `delta` (utilization) is linear over segment `seg`:
/// the segment's lower end, the kinks inside it (where `a + delta` crosses a segment edge, or
/// full load, where `P` stops) and its upper end, which is at most `1 - delta` (a host must fit
/// the step), ascending, in the array's first `.1` places; `None` when no host of the segment
/// can fit the step.
fn cuts(seg: usize, delta: f64) -> Option<([f64; SEGMENTS + 2], usize)> {
    let n = SEGMENTS as f64;
    let lo = seg as f64 / n;
    let hi = ((seg + 1) as f64 / n).min(1.0 - delta + FIT_SLACK);
    if hi.is_nan() || hi < lo {
        return None;
    }
    let mut out = [0.0; SEGMENTS + 2];
    out[0] = lo;
    let mut len = 1;
    // In increasing k, so ascending.
    for k in 1..=SEGMENTS {
        let a = k as f64 / n - delta;
        if a > lo && a < hi {
            out[len] = a;
            len += 1;
        }
    }
    out[len] = hi;
    Some((out, len + 1))
}

/// The least power increase `P(a + delta) - P(a)` (W) of a step of `delta` (utilization) for
/// a host of power model `p` whose utilization `a` lies in segment `seg` and that fits the
/// step (`a <= 1 - delta`); `None` when no host of the segment can fit it. The increase is
/// piecewise linear in `a` ([`cuts`]), so its least value over the segment is at one of its
/// ends or kinks.
pub(super) fn increase_floor(p: &PowerModel, seg: usize, delta: f64) -> Option<f64> {
    let (cuts, len) = cuts(seg, delta)?;
    let f = |a: f64| p.power(a + delta) - p.power(a);
    Some(cuts[1..len].iter().fold(f(cuts[0]), |m, &a| m.min(f(a))))
}

/// How far (in utilization) a stretch from [`stretch_below`] is widened on each side, for the
/// rounding of the utilizations it is compared with and of its own ends (about 1e-16): the
/// increase moves by at most about 60 W per unit of utilization, so the widening adds under
/// 1e-7 W, far below any difference the bounds separate.
const STRETCH_SLACK: f64 = 1e-9;

/// Pieces of the power increase over segment `seg` for a step of `delta` (utilization):
/// `(from, to, increase at from, increase at to)`, the increase linear in between ([`cuts`]),
/// ordered by their least increase; at most `SEGMENTS + 1` of them in the array's first `.1`
/// places. `None` when no host of the segment can fit the step (as for [`increase_floor`]).
pub(super) fn pieces(
    p: &PowerModel,
    seg: usize,
    delta: f64,
) -> Option<([Piece; SEGMENTS + 1], usize)> {
    let (cuts, len) = cuts(seg, delta)?;
    let f = |a: f64| p.power(a + delta) - p.power(a);
    let mut out = [(0.0, 0.0, 0.0, 0.0); SEGMENTS + 1];
    for i in 0..len - 1 {
        out[i] = (cuts[i], cuts[i + 1], f(cuts[i]), f(cuts[i + 1]));
    }
    out[..len - 1].sort_by(|x, y| x.2.min(x.3).total_cmp(&y.2.min(y.3)));
    Some((out, len - 1))
}

/// A piece of [`pieces`]: (from, to, increase at from, increase at to).
pub(super) type Piece = (f64, f64, f64, f64);

/// The part of `piece` where the increase is at most `x` W, widened by [`STRETCH_SLACK`] on
/// each side; `None` when it is above `x` all along. Every host of the piece outside the
/// part has an increase above `x` (the piece's ends are computed, so the interpolation is
/// within rounding of the increase; callers keep a margin of `EPS_W` over it).
pub(super) fn stretch_below(piece: Piece, x: f64) -> Option<(f64, f64)> {
    let (a0, a1, f0, f1) = piece;
    let (from, to) = if f0 <= x && f1 <= x {
        (a0, a1)
    } else if f0 <= x {
        (a0, a0 + (a1 - a0) * ((x - f0) / (f1 - f0)))
    } else if f1 <= x {
        (a1 - (a1 - a0) * ((x - f1) / (f0 - f1)), a1)
    } else if x.is_nan() {
        (a0, a1)
    } else {
        return None;
    };
    Some((from - STRETCH_SLACK, to + STRETCH_SLACK))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random steps that fit, on both benchmark power models, seeded: (power model,
    /// utilization by allocation before, step as a share of capacity, the increase computed
    /// as `find_host` computes it).
    fn fitting_steps(seed: u64, per_type: usize) -> Vec<(PowerModel, f64, f64, f64)> {
        use crate::dc::model::HostType;
        use crate::dc::rng::SplitMix64;
        let mut rng = SplitMix64::new(seed);
        let mut out = Vec::new();
        for t in [HostType::hp_ml110_g4(), HostType::hp_ml110_g5()] {
            let total = t.total_mips();
            for _ in 0..per_type {
                let alloc = (rng.next_f64() * total).floor();
                let demand = (rng.next_f64() * total * 0.6).floor();
                if alloc + demand > total {
                    continue;
                }
                let a = (alloc / total).min(1.0);
                let after = ((alloc + demand) / total).min(1.0);
                let inc = t.power.power(after) - t.power.power(a);
                out.push((t.power, a, demand / total, inc));
            }
        }
        out
    }

    #[test]
    fn increase_floor_is_under_every_fitting_step() {
        // The floor of the segment is never above the increase of a host that fits, and a
        // segment said to fit nothing holds no host that fits.
        for (p, a, delta, inc) in fitting_steps(9, 20000) {
            match increase_floor(&p, segment(a), delta) {
                Some(m) => assert!(m <= inc + 1e-12, "{m} > {inc}: a {a} delta {delta}"),
                None => panic!("a {a} fits {delta} but its segment says none does"),
            }
        }
    }

    #[test]
    fn stretches_hold_every_host_that_can_beat_a_bound() {
        // Random bounds around each host's increase: a host that fits the step and whose
        // increase is at most `x` lies in the stretch of one of its segment's pieces at `x`
        // plus the search's margin; the pieces come cheapest first, their least increase is
        // the segment's floor, and a piece above `x` has no stretch.
        use crate::dc::rng::SplitMix64;
        let mut rng = SplitMix64::new(17);
        let margin = 1e-9;
        let mut inside = 0;
        for (p, a, delta, inc) in fitting_steps(17, 40000) {
            let seg = segment(a);
            let (ps, n) = pieces(&p, seg, delta).expect("a fitting host's segment");
            let floor = increase_floor(&p, seg, delta).expect("same");
            let least: Vec<f64> = ps[..n].iter().map(|p| p.2.min(p.3)).collect();
            assert!(least.windows(2).all(|w| w[0] <= w[1]), "{least:?}");
            assert_eq!(least[0], floor);
            // Bounds around the host's own increase, some just under it.
            let x = inc + (rng.next_f64() - 0.3) * 2.0;
            let found = ps[..n]
                .iter()
                .any(|&p| stretch_below(p, x + margin).is_some_and(|(lo, hi)| lo <= a && a <= hi));
            if inc <= x {
                inside += 1;
                assert!(found, "a {a} delta {delta} inc {inc} x {x}: {:?}", &ps[..n]);
            }
            for p in &ps[..n] {
                if p.2.min(p.3) > x + margin {
                    assert!(stretch_below(*p, x + margin).is_none());
                }
            }
        }
        assert!(inside > 10000, "{inside}");
    }

    #[test]
    fn ordered_keys_round_trip() {
        let xs = [
            -3.5,
            -0.0,
            0.0,
            1e-300,
            2.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for &x in &xs {
            assert_eq!(unkey(key(x)).to_bits(), x.to_bits());
        }
        for w in [-3.5, -1e-9, 0.0, 1e-9, 7.0].windows(2) {
            assert!(key(w[0]) < key(w[1]));
        }
        assert_eq!(band(f64::NAN), UNBANDED);
        assert_eq!(band(-5.0), 0);
        assert_eq!(band(0.85), 9);
        assert_eq!(band(3.0), BAND_EDGES.len() - 1);
    }
}
