//! The working allocation a policy edits while it plans one round: which VMs each host would run,
//! and what that does to its CPU share, free capacity and utilization history.
//!
//! CPU is shared the way CloudSim's time-shared over-subscription scheduler shares it (so the
//! baselines see the same "free MIPS" as in the reference runs): a VM gets at most one physical
//! core per virtual core; if the capped demands fit, everyone gets theirs and the rest is free;
//! otherwise every VM is scaled down by the same factor (rounded down to whole MIPS) and nothing is
//! free. A host is recomputed from scratch when a VM leaves it, because the detectors test
//! histories for exact zeros and subtracting would leave rounding residue. A VM joining is
//! added to the sums in place: the sums run in VM order from zero and the newcomer is last,
//! so adding it to the previous sums performs the very same floating-point operations as a
//! recompute (bit for bit the same host). Undoing tentative joins puts back the saved state
//! (see [`Cluster::restore`]), which is what a recompute would give for the same reason.
//!
//! The hosts' utilization histories are what the published policies' detectors read; Drover's
//! policy never reads them, so [`Cluster::without_histories`] leaves them zero and skips summing
//! 30 samples per VM for every running host every round (most of the cost of building the
//! working allocation at 100,000 VMs).

use super::model::{HostId, HostType, VmId};
use super::snapshot::{Snapshot, VmState, HISTORY_LEN};

/// CPU a VM can get on a host whose cores have `pe_mips` each: at most one core per virtual core.
#[inline]
pub fn capped_demand(vm: &VmState, pe_mips: f64) -> f64 {
    capped_mips(vm.demand_mips, vm.pes, pe_mips)
}

/// [`capped_demand`] from a VM's demand (MIPS) and virtual cores alone, for callers that keep
/// those apart from the VM's record (the simulator's per-event pass): the same operations.
#[inline]
pub fn capped_mips(demand_mips: f64, pes: u32, pe_mips: f64) -> f64 {
    let pes = pes.max(1) as f64;
    (demand_mips / pes).min(pe_mips) * pes
}

/// The over-subscription rule: (allocated MIPS in total, free MIPS) for capped demands summing to
/// `need` on a host of `total` MIPS. `floor_sum` is the sum of each VM's scaled, floored share,
/// needed only when `need > total`.
pub fn share(need: f64, total: f64, floor_sum: impl FnOnce(f64) -> f64) -> (f64, f64) {
    if need <= total {
        (need, total - need)
    } else {
        (floor_sum(total / need), 0.0)
    }
}

/// One host in the working allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct HostWork {
    pub vms: Vec<VmId>,
    /// Sum of the VMs' demands, MIPS (uncapped: what detectors compare with capacity).
    pub req_mips: f64,
    /// Sum of the VMs' capped demands ([`capped_demand`]), MIPS: what the sharing rule reads.
    pub need_mips: f64,
    /// Sum of what the VMs are allocated, MIPS.
    pub alloc_mips: f64,
    /// Free CPU a newcomer could be given, MIPS.
    pub avail_mips: f64,
    pub ram_used_mb: u64,
    /// Largest resident VM's memory (the longest migration off this host).
    pub max_ram_mb: u32,
    /// Host utilization history: sum of VM histories weighted by VM size over host size (all
    /// zero in a cluster built [`Cluster::without_histories`]).
    pub hist: [f64; HISTORY_LEN],
    /// Whether this round changed its VM set.
    pub touched: bool,
}

impl HostWork {
    /// A host of type `t` running nothing (what [`recompute`] gives for no VMs).
    fn empty(t: &HostType) -> HostWork {
        HostWork {
            vms: Vec::new(),
            req_mips: 0.0,
            need_mips: 0.0,
            alloc_mips: 0.0,
            avail_mips: t.total_mips(),
            ram_used_mb: 0,
            max_ram_mb: 0,
            hist: [0.0; HISTORY_LEN],
            touched: false,
        }
    }
}

/// What a detector looks at for one host (current or hypothetical).
#[derive(Debug, Clone, Copy)]
pub struct Load<'a> {
    pub req_mips: f64,
    pub total_mips: f64,
    pub hist: &'a [f64; HISTORY_LEN],
    /// Seconds the longest migration off the host takes.
    pub max_migration_s: f64,
}

impl Load<'_> {
    pub fn utilization(&self) -> f64 {
        self.req_mips / self.total_mips
    }
}

/// The working allocation for one planning round.
#[derive(Debug, Clone)]
pub struct Cluster<'s> {
    pub snap: &'s Snapshot,
    hosts: Vec<HostWork>,
    /// Hosts that ran VMs at the snapshot or were changed since.
    active: Vec<HostId>,
    /// Hosts empty at the snapshot, per host type, ascending.
    empties: Vec<Vec<HostId>>,
    /// Whether [`HostWork::hist`] is kept (see [`Cluster::without_histories`]).
    histories: bool,
}

impl<'s> Cluster<'s> {
    /// The snapshot's allocation, with every running host's utilization history.
    pub fn new(snap: &'s Snapshot) -> Cluster<'s> {
        Cluster::build(snap, true)
    }

    /// The snapshot's allocation for a policy that never reads hosts' utilization histories
    /// ([`HostWork::hist`] stays zero; [`Cluster::load`] and [`Cluster::load_with`] must not
    /// be called): every other figure is the same, bit for bit, as [`Cluster::new`]'s.
    pub fn without_histories(snap: &'s Snapshot) -> Cluster<'s> {
        Cluster::build(snap, false)
    }

    fn build(snap: &'s Snapshot, histories: bool) -> Cluster<'s> {
        let mut empties = vec![Vec::new(); snap.host_types.len()];
        let mut active = Vec::new();
        // Built in place (most hosts of a large datacenter are empty: written once each).
        let mut hosts = Vec::with_capacity(snap.hosts.len());
        for (h, hs) in snap.hosts.iter().enumerate() {
            let t = &snap.host_types[hs.kind];
            hosts.push(HostWork::empty(t));
            if hs.vms.is_empty() {
                empties[hs.kind].push(h);
            } else {
                active.push(h);
                let w = &mut hosts[h];
                w.vms.clone_from(&hs.vms);
                recompute(snap, t, w, histories);
            }
        }
        Cluster {
            snap,
            hosts,
            active,
            empties,
            histories,
        }
    }

    pub fn host(&self, h: HostId) -> &HostWork {
        &self.hosts[h]
    }

    pub fn host_type(&self, h: HostId) -> &HostType {
        self.snap.host_type(h)
    }

    pub fn vm(&self, v: VmId) -> &VmState {
        &self.snap.vms[v]
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Hosts worth evaluating as destinations: every host that runs or ran VMs this round, plus
    /// the lowest-numbered untouched empty host of each type that `skip` does not rule out (all
    /// untouched empty hosts of a type are interchangeable, and ties go to the lowest number).
    pub fn candidates(&self, skip: impl Fn(HostId) -> bool, include_empty: bool) -> Vec<HostId> {
        let mut out: Vec<HostId> = self.active.iter().copied().filter(|&h| !skip(h)).collect();
        if include_empty {
            for list in &self.empties {
                let pristine = list
                    .iter()
                    .copied()
                    .find(|&h| !self.hosts[h].touched && !skip(h));
                out.extend(pristine);
            }
        }
        out
    }

    /// The lowest-numbered untouched empty host of type `kind` that `skip` does not rule out (the
    /// one [`Cluster::candidates`] offers for that type).
    pub fn first_pristine_empty(
        &self,
        kind: usize,
        skip: impl Fn(HostId) -> bool,
    ) -> Option<HostId> {
        self.empties
            .get(kind)?
            .iter()
            .copied()
            .find(|&h| !self.hosts[h].touched && !skip(h))
    }

    /// Hosts that ran VMs at the snapshot or were changed since.
    pub fn active_hosts(&self) -> &[HostId] {
        &self.active
    }

    /// The detector's view of a host as it stands.
    pub fn load(&self, h: HostId) -> Load<'_> {
        debug_assert!(self.histories, "no detector view without histories");
        let w = &self.hosts[h];
        let t = self.host_type(h);
        Load {
            req_mips: w.req_mips,
            total_mips: t.total_mips(),
            hist: &w.hist,
            max_migration_s: if w.vms.is_empty() {
                0.0
            } else {
                t.migration_time_s(w.max_ram_mb)
            },
        }
    }

    /// The detector's view of a host if `vm` joined it; `buf` holds the combined history.
    pub fn load_with<'b>(&self, h: HostId, vm: VmId, buf: &'b mut [f64; HISTORY_LEN]) -> Load<'b> {
        debug_assert!(self.histories, "no detector view without histories");
        let w = &self.hosts[h];
        let t = self.host_type(h);
        let v = self.vm(vm);
        let weight = v.total_mips() / t.total_mips();
        for (i, slot) in buf.iter_mut().enumerate() {
            *slot = w.hist[i] + v.history.padded()[i] * weight;
        }
        Load {
            req_mips: w.req_mips + v.demand_mips,
            total_mips: t.total_mips(),
            hist: buf,
            max_migration_s: t.migration_time_s(w.max_ram_mb.max(v.ram_mb)),
        }
    }

    /// Whether `vm` fits on `h` now: a core big enough for its per-core demand, enough free CPU,
    /// and memory when the snapshot enforces it.
    pub fn fits(&self, h: HostId, vm: VmId) -> bool {
        let t = self.host_type(h);
        let v = self.vm(vm);
        let w = &self.hosts[h];
        t.mips_per_pe >= v.demand_per_pe()
            && w.avail_mips >= v.demand_mips
            && (!self.snap.enforce_memory || w.ram_used_mb + v.ram_mb as u64 <= t.ram_mb as u64)
    }

    /// Host CPU utilization (0..=1) if `vm` joined, by allocated MIPS.
    pub fn utilization_after(&self, h: HostId, vm: VmId) -> f64 {
        ((self.hosts[h].alloc_mips + self.vm(vm).demand_mips) / self.host_type(h).total_mips())
            .min(1.0)
    }

    pub fn add(&mut self, h: HostId, vm: VmId) {
        // Hosts that ran VMs at the snapshot are listed already; a pristine empty one joins now.
        if self.snap.hosts[h].vms.is_empty() && !self.hosts[h].touched {
            self.active.push(h);
        }
        let snap = self.snap;
        join(
            snap,
            &snap.host_types[snap.hosts[h].kind],
            &mut self.hosts[h],
            vm,
            self.histories,
        );
    }

    /// Puts back the state of `h` saved before VMs joined it this round ([`Cluster::host`]
    /// cloned then), when those VMs leave again, newest first: the same host a recompute
    /// would give (the sums run in VM order from zero), without re-summing every history.
    /// The host stays touched (and listed among the active ones).
    pub fn restore(&mut self, h: HostId, saved: HostWork) {
        self.hosts[h] = HostWork {
            touched: true,
            ..saved
        };
    }

    pub fn remove(&mut self, h: HostId, vm: VmId) {
        let w = &mut self.hosts[h];
        if let Some(i) = w.vms.iter().position(|&v| v == vm) {
            w.vms.remove(i);
        }
        w.touched = true;
        let snap = self.snap;
        recompute(
            snap,
            &snap.host_types[snap.hosts[h].kind],
            &mut self.hosts[h],
            self.histories,
        );
    }
}

/// `vm` joins `w`: each sum takes one more term, exactly as [`recompute`] would add it last
/// (the history only when `histories`).
fn join(snap: &Snapshot, t: &HostType, w: &mut HostWork, vm: VmId, histories: bool) {
    let total = t.total_mips();
    let v = &snap.vms[vm];
    w.vms.push(vm);
    w.touched = true;
    w.req_mips += v.demand_mips;
    w.need_mips += capped_demand(v, t.mips_per_pe);
    w.ram_used_mb += v.ram_mb as u64;
    w.max_ram_mb = w.max_ram_mb.max(v.ram_mb);
    if histories {
        add_history(&mut w.hist, v, total);
    }
    settle_share(snap, t, w);
}

/// The allocation and free CPU from `w.need_mips` (the sharing rule).
fn settle_share(snap: &Snapshot, t: &HostType, w: &mut HostWork) {
    let (alloc, avail) = share(w.need_mips, t.total_mips(), |scale| {
        w.vms
            .iter()
            .map(|&v| (capped_demand(&snap.vms[v], t.mips_per_pe) * scale).floor())
            .sum()
    });
    w.alloc_mips = alloc;
    w.avail_mips = avail;
}

/// Adds `v`'s history, weighted by its size over the host's `total_mips`, to the host's `hist`.
#[inline]
fn add_history(hist: &mut [f64; HISTORY_LEN], v: &VmState, total_mips: f64) {
    let weight = v.total_mips() / total_mips;
    for (slot, u) in hist.iter_mut().zip(v.history.padded()) {
        *slot += u * weight;
    }
}

/// `w`'s sums from its VM list, from zero in VM order (its history only when `histories`).
fn recompute(snap: &Snapshot, t: &HostType, w: &mut HostWork, histories: bool) {
    let total = t.total_mips();
    if w.vms.is_empty() {
        // What the sums below come to with no VMs (most hosts of a large datacenter are empty).
        *w = HostWork {
            vms: std::mem::take(&mut w.vms),
            touched: w.touched,
            ..HostWork::empty(t)
        };
        return;
    }
    let (mut req, mut need, mut ram, mut max_ram) = (0.0, 0.0, 0u64, 0u32);
    w.hist = [0.0; HISTORY_LEN];
    for &v in &w.vms {
        let vm = &snap.vms[v];
        req += vm.demand_mips;
        need += capped_demand(vm, t.mips_per_pe);
        ram += vm.ram_mb as u64;
        max_ram = max_ram.max(vm.ram_mb);
        if histories {
            add_history(&mut w.hist, vm, total);
        }
    }
    w.req_mips = req;
    w.need_mips = need;
    w.ram_used_mb = ram;
    w.max_ram_mb = max_ram;
    settle_share(snap, t, w);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dc::model::HostType;
    use crate::dc::snapshot::{History, HostState};

    /// A small snapshot: hosts of the benchmark's two types; VMs given as (host, mips, demand
    /// fraction, ram) with a flat history at the same fraction.
    pub(crate) fn snapshot(
        host_kinds: &[usize],
        vms: &[(Option<usize>, f64, f64, u32)],
        hist_len: usize,
    ) -> Snapshot {
        let host_types = vec![HostType::hp_ml110_g4(), HostType::hp_ml110_g5()];
        let mut hosts: Vec<HostState> = host_kinds
            .iter()
            .map(|&kind| HostState {
                kind,
                vms: vec![],
                util_mips: 0.0,
                on_since_s: None,
            })
            .collect();
        let vms = vms
            .iter()
            .enumerate()
            .map(|(i, &(host, mips, u, ram))| {
                let mut history = History::default();
                for _ in 0..hist_len {
                    history.push(u);
                }
                if let Some(h) = host {
                    hosts[h].vms.push(i);
                    hosts[h].util_mips += u * mips;
                }
                VmState {
                    mips,
                    pes: 1,
                    ram_mb: ram,
                    host,
                    demand_mips: u * mips,
                    history,
                    dirty_rate_bps: 0.0,
                    wss_bytes: 0,
                    last_migration_s: None,
                }
            })
            .collect();
        Snapshot {
            time_s: 3000.0,
            interval_s: 300.0,
            host_types,
            hosts,
            vms,
            enforce_memory: false,
        }
    }

    #[test]
    fn shares_fit_or_scale_down() {
        // G4: 2 x 1860 = 3720 MIPS. Two VMs asking 1000 and 1500 fit; 2220 MIPS free.
        let s = snapshot(
            &[0],
            &[(Some(0), 2000.0, 0.5, 870), (Some(0), 2500.0, 0.6, 870)],
            1,
        );
        let c = Cluster::new(&s);
        assert_eq!(c.host(0).alloc_mips, 2500.0);
        assert_eq!(c.host(0).avail_mips, 1220.0);
        // Three VMs asking 2500 capped at one 1860 core each: need 5580 > 3720, scale 2/3.
        let s = snapshot(&[0], &[(Some(0), 2500.0, 1.0, 870); 3], 1);
        let c = Cluster::new(&s);
        assert_eq!(c.host(0).req_mips, 7500.0);
        assert_eq!(c.host(0).alloc_mips, 3.0 * 1240.0);
        assert_eq!(c.host(0).avail_mips, 0.0);
    }

    #[test]
    fn host_history_is_size_weighted_sum() {
        let s = snapshot(
            &[1],
            &[(Some(0), 2660.0, 0.5, 870), (Some(0), 532.0, 1.0, 613)],
            3,
        );
        let c = Cluster::new(&s);
        let h = c.host(0).hist;
        assert!((h[0] - (0.25 + 0.1)).abs() < 1e-12);
        assert_eq!(h[3], 0.0);
    }

    /// Every figure of a host, floats by their bits.
    fn bits(w: &HostWork) -> Vec<u64> {
        let mut out = vec![
            w.req_mips.to_bits(),
            w.need_mips.to_bits(),
            w.alloc_mips.to_bits(),
            w.avail_mips.to_bits(),
            w.ram_used_mb,
            w.max_ram_mb as u64,
            w.touched as u64,
        ];
        out.extend(w.vms.iter().map(|&v| v as u64));
        out.extend(w.hist.iter().map(|x| x.to_bits()));
        out
    }

    /// `lean` (from a cluster without histories) has `full`'s figures and a zero history.
    fn assert_same_but_history(lean: &HostWork, full: &HostWork) {
        let (a, b) = (bits(lean), bits(full));
        let n = a.len() - HISTORY_LEN;
        assert_eq!(a[..n], b[..n]);
        assert!(lean.hist.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn joins_and_restores_are_bit_for_bit_recomputes() {
        // Random VMs (histories of arbitrary fractions, demands past a core and past the
        // host) join random hosts one at a time; after each join the host equals a recompute
        // of its VM list, and restoring the saved states in reverse equals recomputing after
        // the removals. A cluster without histories, put through the same steps, has every
        // other figure the same and its histories zero.
        use crate::dc::rng::SplitMix64;
        let mut rng = SplitMix64::new(3);
        for _ in 0..200 {
            let hosts = 1 + rng.below(4);
            let kinds: Vec<usize> = (0..hosts).map(|_| rng.below(2)).collect();
            let vms: Vec<(Option<usize>, f64, f64, u32)> = (0..12)
                .map(|_| {
                    let host = (rng.below(3) == 0).then(|| rng.below(hosts));
                    (
                        host,
                        500.0 + 2500.0 * rng.next_f64(),
                        1.2 * rng.next_f64(),
                        613,
                    )
                })
                .collect();
            let mut s = snapshot(&kinds, &vms, 0);
            for vm in s.vms.iter_mut() {
                for _ in 0..rng.below(HISTORY_LEN + 5) {
                    vm.history.push(rng.next_f64());
                }
            }
            let mut c = Cluster::new(&s);
            let mut lean = Cluster::without_histories(&s);
            let mut saved = Vec::new();
            for v in 0..vms.len() {
                if s.vms[v].host.is_some() {
                    continue;
                }
                let h = rng.below(hosts);
                saved.push((h, v, c.host(h).clone(), lean.host(h).clone()));
                c.add(h, v);
                lean.add(h, v);
                let mut fresh = c.host(h).clone();
                recompute(&s, c.host_type(h), &mut fresh, true);
                assert_eq!(bits(c.host(h)), bits(&fresh));
                assert_same_but_history(lean.host(h), c.host(h));
            }
            let mut undone = c.clone();
            let mut lean_undone = lean.clone();
            for (h, v, w, lean_w) in saved.into_iter().rev() {
                c.restore(h, w);
                lean.restore(h, lean_w);
                undone.remove(h, v);
                lean_undone.remove(h, v);
                assert_eq!(bits(c.host(h)), bits(undone.host(h)));
                assert_same_but_history(lean.host(h), c.host(h));
                assert_same_but_history(lean_undone.host(h), undone.host(h));
            }
            for h in 0..hosts {
                assert_same_but_history(lean.host(h), c.host(h));
            }
        }
    }

    #[test]
    fn candidates_collapse_interchangeable_empty_hosts() {
        let s = snapshot(&[0, 1, 0, 1, 1], &[(Some(3), 1000.0, 0.5, 613)], 1);
        let mut c = Cluster::new(&s);
        assert_eq!(c.candidates(|_| false, true), vec![3, 0, 1]);
        c.add(1, 0);
        assert_eq!(c.candidates(|_| false, true), vec![3, 1, 0, 4]);
        assert_eq!(c.candidates(|h| h == 0, true), vec![3, 1, 2, 4]);
        assert_eq!(c.candidates(|_| false, false), vec![3, 1]);
    }
}
