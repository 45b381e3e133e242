//! The placer's index of destination hosts: buckets by (host type, band of `r`, segment of the
//! utilization by allocation), each ordered by `g`, the host's power over its measured power.
//! Hosts unchanged since the snapshot live in dense arrays read front to back; a host changed
//! this round moves to its bucket's ordered set. The search that reads it, and what `g`, `r`
//! and the bounds mean, are in the parent module.

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

    /// Orders each dense bucket by (`g`, host) and records where each host went.
    pub fn seal(&mut self) {
        for (b, d) in self.dense.iter_mut().enumerate() {
            d.entries
                .sort_by(|x, y| x.g.total_cmp(&y.g).then(x.h.cmp(&y.h)));
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
                    d.head = 0;
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

    /// The first live dense entry of `bucket` (skipping the dead ones for good).
    pub fn dense_front(&mut self, bucket: usize) -> Option<Entry> {
        let d = &mut self.dense[bucket];
        while d.head < d.entries.len() && !d.entries[d.head].live {
            d.head += 1;
        }
        d.entries.get(d.head).copied()
    }

    /// Where the live part of `bucket`'s dense entries starts.
    pub fn dense_head(&self, bucket: usize) -> usize {
        self.dense[bucket].head
    }

    /// The `i`th dense entry of `bucket`, dead or alive.
    pub fn dense_entry(&self, bucket: usize, i: usize) -> Option<Entry> {
        self.dense[bucket].entries.get(i).copied()
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

/// The least power increase `P(a + delta) - P(a)` (W) of a step of `delta` (utilization) for
/// a host of power model `p` whose utilization `a` lies in segment `seg` and that fits the
/// step (`a <= 1 - delta`); `None` when no host of the segment can fit it. The increase is
/// piecewise linear in `a`, with kinks only where `a + delta` crosses a segment edge (or
/// full load, where `P` stops), so its least value over the segment is at one of its ends or
/// one of those kinks.
pub(super) fn increase_floor(p: &PowerModel, seg: usize, delta: f64) -> Option<f64> {
    let n = SEGMENTS as f64;
    let lo = seg as f64 / n;
    let hi = ((seg + 1) as f64 / n).min(1.0 - delta + FIT_SLACK);
    if hi.is_nan() || hi < lo {
        return None;
    }
    let f = |a: f64| p.power(a + delta) - p.power(a);
    let mut m = f(lo).min(f(hi));
    for k in 1..=SEGMENTS {
        let a = k as f64 / n - delta;
        if a > lo && a < hi {
            m = m.min(f(a));
        }
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increase_floor_is_under_every_fitting_step() {
        // Random utilizations and steps on both benchmark power models: the floor of the
        // segment is never above the increase `find_host` computes for a host that fits, and
        // a segment said to fit nothing holds no host that fits.
        use crate::dc::model::HostType;
        use crate::dc::rng::SplitMix64;
        let mut rng = SplitMix64::new(9);
        for t in [HostType::hp_ml110_g4(), HostType::hp_ml110_g5()] {
            let total = t.total_mips();
            for _ in 0..20000 {
                let alloc = (rng.next_f64() * total).floor();
                let demand = (rng.next_f64() * total * 0.6).floor();
                if alloc + demand > total {
                    continue;
                }
                let a = (alloc / total).min(1.0);
                let after = ((alloc + demand) / total).min(1.0);
                let inc = t.power.power(after) - t.power.power(a);
                match increase_floor(&t.power, segment(a), demand / total) {
                    Some(m) => assert!(m <= inc + 1e-12, "{m} > {inc}: a {a} after {after}"),
                    None => panic!("a {a} fits {demand} but its segment says none does"),
                }
            }
        }
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
