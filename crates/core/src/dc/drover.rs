//! Drover's own consolidation policy. See docs/sim-policy.md for the design and every parameter;
//! the short version:
//!
//! - **Forecast, with hysteresis.** Each VM's demand one interval ahead is forecast by a line
//!   through its last `window` samples (never below what it asks for now); a host's forecast is the
//!   sum of its VMs'. A host is *hot* when its forecast or its demand passes `hot`; it is relieved
//!   down to `target`, and destinations are filled only up to `target`. The gap between the two
//!   is what stops the ping-pong of a single threshold.
//! - **Few, cheap moves off hot hosts.** If one VM's departure is enough, the cheapest such VM goes
//!   (cost: predicted migration time from the cost model, so memory, dirty rate and the technique
//!   all count); otherwise the biggest movers go first, so that few moves suffice.
//! - **Placement keeps running hosts busy and leaves headroom.** Best fit among running hosts by
//!   forecast; a VM's peak must fit one core; a host is woken only when nothing running fits, and
//!   then the type with the most capacity per idle watt.
//! - **Consolidation only when it pays.** A host is emptied only if it is cold, has been on for
//!   `min_on_s`, needs at most `max_moves_per_host` moves, none of its VMs moved in the last
//!   `cooldown_s`, and every VM fits elsewhere under `target`. Hosts with fewest VMs go first: each
//!   switched-off host costs the fewest migrations.
//! - **Technique per VM** from the migration cost model (pre-copy when it converges cheaply,
//!   post-copy or hybrid otherwise).

use super::bestfit::FitIndex;
use super::cluster::Cluster;
use super::model::{HostId, VmId};
use super::plan::{Move, MoveReason, Plan};
use super::snapshot::{Snapshot, VmState};
use super::stats::{LineFit, Trend};
use crate::migration::{choose, CostParams, Technique};
use serde::{Deserialize, Serialize};

/// Drover's tunables (defaults are the ones the benchmark was run with).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroverParams {
    /// Forecast or demand above this share of a host's capacity makes it hot.
    pub hot: f64,
    /// Hot hosts are relieved, and destinations filled, up to this share.
    pub target: f64,
    /// Hosts whose forecast is below this share may be emptied.
    pub cold: f64,
    /// Samples in the forecast's fitted line.
    pub window: usize,
    /// A host is not emptied until it has been on this long, seconds.
    pub min_on_s: f64,
    /// A VM that finished a migration this recently is not moved to consolidate, seconds.
    pub cooldown_s: f64,
    /// Most migrations spent to switch one host off.
    pub max_moves_per_host: usize,
    /// Cost model used to choose techniques and rank VMs.
    pub cost: CostParams,
}

impl Default for DroverParams {
    fn default() -> Self {
        DroverParams {
            hot: 0.95,
            target: 0.85,
            cold: 0.5,
            window: 10,
            min_on_s: 900.0,
            cooldown_s: 1800.0,
            max_moves_per_host: 5,
            cost: CostParams::default(),
        }
    }
}

/// Plans one round.
pub fn decide(snap: &Snapshot, p: &DroverParams) -> Plan {
    let mut w = Work::new(snap, p);
    let mut plan = Plan::default();
    let hot: Vec<HostId> =
        w.c.active_hosts()
            .iter()
            .copied()
            .filter(|&h| w.is_hot(h))
            .collect();
    let mut source = vec![false; w.c.len()];
    for &h in &hot {
        source[h] = true;
    }
    let mut leaving = Vec::new();
    for &h in &hot {
        for vm in w.relieve(h) {
            leaving.push((vm, h));
        }
    }
    leaving.sort_by(|a, b| {
        snap.vms[b.0]
            .demand_mips
            .total_cmp(&snap.vms[a.0].demand_mips)
    });
    for (vm, from) in leaving {
        if let Some(to) = w.destination(vm, &source, true) {
            w.add(to, vm);
            // Filled this round: consolidation must not empty it (and move this VM again).
            w.receiving[to] = true;
            plan.moves.push(w.mv(vm, from, to, MoveReason::Overload));
        } else {
            // Nowhere to go: it stays (the host remains hot and is retried next round).
            w.add(from, vm);
        }
    }
    w.consolidate(&mut source, &mut plan);
    plan
}

/// The working allocation plus each host's forecast demand.
struct Work<'s> {
    c: Cluster<'s>,
    p: &'s DroverParams,
    /// Forecast demand per VM, MIPS.
    vm_pred: Vec<f64>,
    /// Sum of `vm_pred` per host in the working allocation.
    host_pred: Vec<f64>,
    /// Hosts that received VMs this round (not emptied in the same round).
    receiving: Vec<bool>,
    /// The hosts running VMs in the working allocation, by forecast (for best fit).
    fit: FitIndex,
}

impl<'s> Work<'s> {
    fn new(snap: &'s Snapshot, p: &'s DroverParams) -> Work<'s> {
        let vm_pred: Vec<f64> = snap.vms.iter().map(|v| forecast(v, p.window)).collect();
        let host_pred: Vec<f64> = snap
            .hosts
            .iter()
            .map(|h| h.vms.iter().map(|&v| vm_pred[v]).sum())
            .collect();
        let fit = FitIndex::new(
            snap.host_types.len(),
            snap.hosts
                .iter()
                .zip(&host_pred)
                .map(|(host, &pred)| (host.kind, pred, !host.vms.is_empty())),
        );
        Work {
            // Drover reads no host's utilization history (its forecast is per VM).
            c: Cluster::without_histories(snap),
            p,
            vm_pred,
            host_pred,
            receiving: vec![false; snap.hosts.len()],
            fit,
        }
    }

    fn capacity(&self, h: HostId) -> f64 {
        self.c.host_type(h).total_mips()
    }

    /// Share of capacity the host is forecast to need (never below its current demand).
    fn pressure(&self, h: HostId) -> f64 {
        self.host_pred[h].max(self.c.host(h).req_mips) / self.capacity(h)
    }

    fn is_hot(&self, h: HostId) -> bool {
        self.pressure(h) > self.p.hot
    }

    fn add(&mut self, h: HostId, vm: VmId) {
        self.c.add(h, vm);
        self.host_pred[h] += self.vm_pred[vm];
        self.reindex(h);
    }

    fn remove(&mut self, h: HostId, vm: VmId) {
        self.c.remove(h, vm);
        self.host_pred[h] -= self.vm_pred[vm];
        self.reindex(h);
    }

    fn reindex(&mut self, h: HostId) {
        let running = !self.c.host(h).vms.is_empty();
        let kind = self.c.snap.hosts[h].kind;
        self.fit.set(h, kind, self.host_pred[h], running);
    }

    /// Removes VMs from a hot host until its pressure is at most `target`; returns them.
    fn relieve(&mut self, h: HostId) -> Vec<VmId> {
        let mut out = Vec::new();
        while self.pressure(h) > self.p.target && !self.c.host(h).vms.is_empty() {
            let excess = (self.pressure(h) - self.p.target) * self.capacity(h);
            let vms = self.c.host(h).vms.clone();
            // One move that suffices, the cheapest; else the biggest mover.
            // Each candidate is priced once (the cost model is the expensive part of a round).
            let single = vms
                .iter()
                .copied()
                .filter(|&v| self.vm_pred[v].max(self.c.vm(v).demand_mips) >= excess)
                .map(|v| (v, self.cost(v, h)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(v, _)| v);
            let vm = single.or_else(|| {
                vms.iter()
                    .copied()
                    .max_by(|&a, &b| self.vm_pred[a].total_cmp(&self.vm_pred[b]))
            });
            let Some(vm) = vm else { break };
            self.remove(h, vm);
            out.push(vm);
        }
        out
    }

    /// Seconds the cost model expects this VM's migration off `h` to take, scaled up by the share
    /// of its work at risk meanwhile. The destination is not known yet, so the link is the
    /// source's own (no destination link is faster in the model: the slower end sets the pace).
    fn cost(&self, vm: VmId, h: HostId) -> f64 {
        let (_, pred) = self.technique(vm, self.c.host_type(h).migration_bytes_per_s());
        let v = self.c.vm(vm);
        pred * (1.0 + v.demand_mips / v.total_mips())
    }

    /// Best technique for a VM over a link of `link_bytes_per_s` bytes/s, and its predicted
    /// duration, seconds.
    fn technique(&self, vm: VmId, link_bytes_per_s: f64) -> (Technique, f64) {
        let (profile, link) = self.c.vm(vm).cost_inputs(link_bytes_per_s);
        let choice = choose(&profile, &link, &self.p.cost, &Technique::CONCRETE);
        let total = choice
            .predictions
            .iter()
            .find(|pr| pr.technique == choice.technique)
            .map_or(f64::INFINITY, |pr| pr.total_s);
        (choice.technique, total)
    }

    /// The move, with the technique priced on the link the simulator (or a manager) will use.
    fn mv(&self, vm: VmId, from: HostId, to: HostId, reason: MoveReason) -> Move {
        let from = self.c.snap.vms[vm].host.unwrap_or(from);
        Move {
            vm,
            from,
            to,
            reason,
            technique: self.technique(vm, self.c.snap.link_bytes_per_s(from, to)).0,
        }
    }

    /// The VM's peak demand over its history and now, MIPS (it must fit one core).
    fn peak(&self, vm: VmId) -> f64 {
        let v = self.c.vm(vm);
        v.history
            .as_slice()
            .iter()
            .copied()
            .fold(v.demand_mips / v.total_mips(), f64::max)
            * v.mips
    }

    /// Whether `vm` can go to `h` and leave it at most `target` busy, its peak fitting a core.
    fn accepts(&self, h: HostId, vm: VmId) -> bool {
        let t = self.c.host_type(h);
        let v = self.c.vm(vm);
        let cap = self.capacity(h) * self.p.target;
        self.c.fits(h, vm)
            && self.peak(vm) <= t.mips_per_pe
            && self.host_pred[h] + self.vm_pred[vm] <= cap
            && self.c.host(h).req_mips + v.demand_mips <= cap
    }

    /// Whether a running host may be a destination at all (not in `skip`, not off).
    fn open(&self, h: HostId, skip: &[bool]) -> bool {
        !skip[h] && (!self.c.snap.is_off(h) || self.c.host(h).touched)
    }

    /// Best fit among running hosts (not in `skip`): the highest [`Work::after`], ties to the
    /// lowest number, read through the index (see [`super::bestfit`]).
    fn best_running(&self, vm: VmId, skip: &[bool]) -> Option<HostId> {
        let peak = self.peak(vm);
        let mut best: Option<(f64, HostId)> = None;
        for (kind, t) in self.c.snap.host_types.iter().enumerate() {
            // `accepts` refuses every host of the type.
            if peak > t.mips_per_pe {
                continue;
            }
            let max_pred = t.total_mips() * self.p.target - self.vm_pred[vm];
            for h in self.fit.fullest_below(kind, max_pred) {
                let a = self.after(h, vm);
                if best.is_some_and(|(ba, _)| a < ba) {
                    break;
                }
                if !self.open(h, skip) || !self.accepts(h, vm) {
                    continue;
                }
                if best.is_none_or(|(ba, bh)| a > ba || h < bh) {
                    best = Some((a, h));
                }
            }
        }
        best.map(|(_, h)| h)
    }

    /// Best fit among running hosts (not in `skip`); if none and `may_wake`, an off host of the
    /// type with the most capacity per idle watt.
    fn destination(&self, vm: VmId, skip: &[bool], may_wake: bool) -> Option<HostId> {
        let running = self.best_running(vm, skip);
        if running.is_some() || !may_wake {
            return running;
        }
        self.c
            .candidates(|h| skip[h], true)
            .into_iter()
            .filter(|&h| self.c.host(h).vms.is_empty() && self.accepts(h, vm))
            .max_by(|&a, &b| {
                let eff = |h: HostId| self.capacity(h) / self.c.host_type(h).power.idle();
                eff(a).total_cmp(&eff(b)).then(b.cmp(&a))
            })
    }

    /// Pressure on `h` if `vm` joined.
    fn after(&self, h: HostId, vm: VmId) -> f64 {
        (self.host_pred[h] + self.vm_pred[vm]) / self.capacity(h)
    }

    /// Empties cold hosts that are cheap to empty, fewest VMs first.
    fn consolidate(&mut self, source: &mut [bool], plan: &mut Plan) {
        let mut order: Vec<HostId> = self
            .c
            .active_hosts()
            .iter()
            .copied()
            .filter(|&h| !source[h] && !self.receiving[h] && self.may_empty(h))
            .collect();
        order.sort_by(|&a, &b| {
            let (na, nb) = (self.c.host(a).vms.len(), self.c.host(b).vms.len());
            na.cmp(&nb)
                .then(self.pressure(a).total_cmp(&self.pressure(b)))
                .then(a.cmp(&b))
        });
        for h in order {
            if self.receiving[h] || !self.may_empty(h) {
                continue;
            }
            source[h] = true;
            let mut vms = self.c.host(h).vms.clone();
            vms.sort_by(|&a, &b| self.vm_pred[b].total_cmp(&self.vm_pred[a]));
            let mut placed: Vec<(VmId, HostId)> = Vec::new();
            for &vm in &vms {
                self.remove(h, vm);
                match self.destination(vm, source, false) {
                    Some(to) => {
                        self.add(to, vm);
                        placed.push((vm, to));
                    }
                    None => {
                        self.add(h, vm);
                        break;
                    }
                }
            }
            if placed.len() < vms.len() {
                for (vm, to) in placed {
                    self.remove(to, vm);
                    self.add(h, vm);
                }
                continue;
            }
            for (vm, to) in placed {
                self.receiving[to] = true;
                plan.moves.push(self.mv(vm, h, to, MoveReason::Underload));
            }
        }
    }

    fn may_empty(&self, h: HostId) -> bool {
        let snap = self.c.snap;
        let host = self.c.host(h);
        let on_long_enough = snap.hosts[h]
            .on_since_s
            .is_none_or(|t| snap.time_s - t >= self.p.min_on_s);
        let settled = host.vms.iter().all(|&v| {
            snap.vms[v]
                .last_migration_s
                .is_none_or(|t| snap.time_s - t >= self.p.cooldown_s)
        });
        !host.vms.is_empty()
            && !snap.is_off(h)
            && host.vms.len() <= self.p.max_moves_per_host
            && self.pressure(h) < self.p.cold
            && on_long_enough
            && settled
    }
}

/// Demand one interval ahead, MIPS: a line through the last `window` samples, never below the
/// current demand (falling loads are not trusted until they have fallen).
fn forecast(v: &VmState, window: usize) -> f64 {
    if v.host.is_none() {
        return v.demand_mips;
    }
    let Some(line) = Trend::fit(v.history.as_slice(), window, LineFit::Ols) else {
        return v.demand_mips;
    };
    let next = line.ahead(1.0).clamp(0.0, 1.0) * v.total_mips();
    next.max(v.demand_mips)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dc::cluster::tests::snapshot;

    #[test]
    fn hot_host_sheds_one_cheap_vm_to_a_running_host() {
        // Host 0 (G5 5320) at 2500 + 2000 + 500 = 5000 MIPS: 94% > hot? use hot 0.9.
        // Excess over target 0.85: 5000 - 4522 = 478: the 500-MIPS VM (613 MB) suffices and is the
        // cheapest. Host 1 (G5) runs at 20%: it takes it. Host 2 is off and stays off.
        let s = snapshot(
            &[1, 1, 1],
            &[
                (Some(0), 2500.0, 1.0, 870),
                (Some(0), 2000.0, 1.0, 1740),
                (Some(0), 500.0, 1.0, 613),
                (Some(1), 2000.0, 0.532, 1740),
            ],
            1,
        );
        let p = DroverParams {
            hot: 0.9,
            min_on_s: 0.0,
            ..DroverParams::default()
        };
        let plan = decide(&s, &p);
        assert_eq!(plan.moves.len(), 1, "{plan:?}");
        assert_eq!(
            (plan.moves[0].vm, plan.moves[0].from, plan.moves[0].to),
            (2, 0, 1)
        );
        assert_eq!(plan.moves[0].technique, Technique::Precopy);
    }

    #[test]
    fn technique_is_priced_on_the_slower_end_of_the_link() {
        // As in the test above, host 0 sheds a VM to host 1, but host 1 is now a G5 on a
        // 100 Mbit/s NIC (6.25 MB/s for migrations) and every VM on host 0 dirties 30 MB/s:
        // pre-copy cannot converge on that link, though it would on the source's 62.5 MB/s.
        let mut s = snapshot(
            &[1, 1, 1],
            &[
                (Some(0), 2500.0, 1.0, 870),
                (Some(0), 2000.0, 1.0, 1740),
                (Some(0), 500.0, 1.0, 613),
                (Some(1), 2000.0, 0.532, 1740),
            ],
            1,
        );
        let mut slow = s.host_types[1].clone();
        slow.bw_mbps = 100.0;
        s.host_types.push(slow);
        s.hosts[1].kind = 2;
        for v in &mut s.vms[..3] {
            v.dirty_rate_bps = 30e6;
            v.wss_bytes = 300 << 20;
        }
        let p = DroverParams {
            hot: 0.9,
            min_on_s: 0.0,
            ..DroverParams::default()
        };
        let plan = decide(&s, &p);
        assert_eq!(plan.moves.len(), 1, "{plan:?}");
        let m = plan.moves[0];
        assert_eq!((m.from, m.to), (0, 1));
        let (profile, link) = s.vms[m.vm].cost_inputs(s.link_bytes_per_s(0, 1));
        assert_eq!(link.bandwidth_bps, 6.25e6);
        let want = choose(&profile, &link, &p.cost, &Technique::CONCRETE).technique;
        assert_eq!(m.technique, want);
        assert_ne!(m.technique, Technique::Precopy);
        // Priced on the source's link alone, the same VM would have gone by pre-copy.
        let (profile, link) = s.vms[m.vm].cost_inputs(s.host_type(0).migration_bytes_per_s());
        let naive = choose(&profile, &link, &p.cost, &Technique::CONCRETE).technique;
        assert_eq!(naive, Technique::Precopy);
    }

    #[test]
    fn cold_host_is_emptied_only_within_the_move_budget() {
        // Host 0 runs 4 small VMs (cold, but 4 > 3 moves); host 1 runs 1 (cold): host 1 is emptied
        // onto host 0 (best fit), host 0 stays.
        let mut vms = vec![(Some(0), 500.0, 0.5, 613); 4];
        vms.push((Some(1), 500.0, 0.5, 613));
        let s = snapshot(&[1, 1], &vms, 1);
        let p = DroverParams {
            min_on_s: 0.0,
            ..DroverParams::default()
        };
        let plan = decide(&s, &p);
        assert_eq!(plan.moves.len(), 1, "{plan:?}");
        assert_eq!(
            (plan.moves[0].vm, plan.moves[0].to, plan.moves[0].reason),
            (4, 0, MoveReason::Underload)
        );
    }

    #[test]
    fn a_relief_destination_is_not_emptied_in_the_same_round() {
        // Host 0 (G5, 5320 MIPS) is hot at 5000 MIPS (hot 0.9) and sheds its 500-MIPS VM. Best
        // fit sends it to host 1 (1000 + 500 MIPS: 28%) rather than host 2 (200 + 500: 13%).
        // Host 1 is then still cold (under 0.5) with two VMs, and both would fit on host 2
        // (four small VMs: too many moves to empty it itself, at `max_moves_per_host` 3);
        // emptying host 1 would move the relieved VM a second time and switch off the host it
        // was just sent to.
        let mut vms = vec![
            (Some(0), 2500.0, 1.0, 870),
            (Some(0), 2000.0, 1.0, 1740),
            (Some(0), 500.0, 1.0, 613),
            (Some(1), 2000.0, 0.5, 1740),
        ];
        vms.extend([(Some(2), 500.0, 0.1, 613); 4]);
        let s = snapshot(&[1, 1, 1], &vms, 1);
        let p = DroverParams {
            hot: 0.9,
            min_on_s: 0.0,
            max_moves_per_host: 3,
            ..DroverParams::default()
        };
        let plan = decide(&s, &p);
        let moves: Vec<_> = plan
            .moves
            .iter()
            .map(|m| (m.vm, m.from, m.to, m.reason))
            .collect();
        assert_eq!(moves, vec![(2, 0, 1, MoveReason::Overload)]);
    }

    /// Best fit as first written: every running host read.
    fn best_running_full_scan(w: &Work, vm: VmId, skip: &[bool]) -> Option<HostId> {
        w.c.candidates(|h| !w.open(h, skip), false)
            .into_iter()
            .filter(|&h| !w.c.host(h).vms.is_empty() && w.accepts(h, vm))
            .max_by(|&a, &b| w.after(a, vm).total_cmp(&w.after(b, vm)).then(b.cmp(&a)))
    }

    #[test]
    fn indexed_best_fit_matches_the_full_scan() {
        // Random clusters of both types with whole-MIPS VMs (so forecasts tie often), random
        // moves in between, random skips: the index must pick the host the full scan picks.
        let mut rng = crate::dc::rng::SplitMix64::new(13);
        let mut picked = 0;
        for round in 0..40 {
            let hosts = 20 + rng.below(30);
            let kinds: Vec<usize> = (0..hosts).map(|_| rng.below(2)).collect();
            let vms: Vec<(Option<usize>, f64, f64, u32)> = (0..hosts * 2)
                .map(|_| {
                    let host = (rng.below(4) > 0).then(|| rng.below(hosts));
                    let mips = [500.0, 1000.0, 2000.0, 2500.0][rng.below(4)];
                    let u = rng.below(11) as f64 / 10.0;
                    (host, mips, u, 613)
                })
                .collect();
            let mut s = snapshot(&kinds, &vms, 12);
            for (i, v) in s.vms.iter_mut().enumerate() {
                if i % 3 == 0 {
                    v.history.push(rng.next_f64());
                }
            }
            let p = DroverParams::default();
            let mut w = Work::new(&s, &p);
            for _ in 0..60 {
                let vm = rng.below(s.vms.len());
                let skip: Vec<bool> = (0..hosts).map(|_| rng.below(5) == 0).collect();
                let want = best_running_full_scan(&w, vm, &skip);
                assert_eq!(w.best_running(vm, &skip), want, "round {round} vm {vm}");
                picked += usize::from(want.is_some());
                // Move it there (or drop it from its host) to change the working allocation.
                let at = (0..hosts).find(|&h| w.c.host(h).vms.contains(&vm));
                if let Some(h) = at {
                    w.remove(h, vm);
                }
                if let Some(to) = want.or(at) {
                    w.add(to, vm);
                }
            }
        }
        assert!(picked > 500, "{picked}");
    }

    #[test]
    fn recently_moved_vms_hold_their_host() {
        let mut s = snapshot(
            &[1, 1],
            &[(Some(0), 500.0, 0.5, 613), (Some(1), 500.0, 0.5, 613)],
            1,
        );
        s.vms[0].last_migration_s = Some(s.time_s - 60.0);
        s.vms[1].last_migration_s = Some(s.time_s - 60.0);
        let p = DroverParams {
            min_on_s: 0.0,
            ..DroverParams::default()
        };
        assert!(decide(&s, &p).is_empty());
    }

    #[test]
    fn forecast_follows_a_rising_line_but_not_a_falling_one() {
        let mut s = snapshot(&[1], &[(Some(0), 1000.0, 0.5, 613)], 0);
        let v = &mut s.vms[0];
        for i in 0..10 {
            v.history.push(0.1 + 0.05 * i as f64); // ... 0.55 most recent
        }
        v.demand_mips = 550.0;
        assert!((forecast(v, 10) - 600.0).abs() < 1e-9);
        let mut h = crate::dc::snapshot::History::default();
        for i in 0..10 {
            h.push(0.9 - 0.05 * i as f64);
        }
        v.history = h;
        v.demand_mips = 450.0;
        assert_eq!(forecast(v, 10), 450.0);
    }
}
