//! One round of the published dynamic consolidation (CloudSim's `optimizeAllocation`).
//!
//! 1. Every host the detector calls overloaded gives up VMs, chosen by the selector one at a
//!    time, until the detector is satisfied with what is left.
//! 2. Those VMs are placed by PABFD anywhere except on the overloaded hosts; a VM that fits
//!    nowhere stays where it is.
//! 3. Underload consolidation: hosts are visited from the least to the most utilized (measured),
//!    skipping overloaded and switched-off ones and hosts that already received VMs from an
//!    evacuation; each visited host is evacuated if *all* its VMs can be placed on other hosts
//!    (not overloaded, not off, not visited), otherwise it is left alone. Every running host gets
//!    its chance, not only the least loaded one.
//!
//! Kept from CloudSim on purpose: a host that received a VM in step 2 may still be evacuated in
//! step 3, which moves that VM twice in one round (both moves count as migrations). A manager that
//! executes plans may coalesce such moves; the simulator executes them as CloudSim does.

use super::cluster::Cluster;
use super::detect::Detector;
use super::model::{HostId, VmId};
use super::placer::Placer;
use super::plan::{Move, MoveReason, Plan};
use super::rng::SplitMix64;
use super::select::Selector;
use super::snapshot::Snapshot;
use crate::migration::Technique;

/// Plans one round; `technique` is recorded on every move.
pub fn optimize(
    snap: &Snapshot,
    det: &Detector,
    sel: Selector,
    rng: &mut SplitMix64,
    technique: Technique,
) -> Plan {
    let mut c = Cluster::new(snap);
    let n = c.len();
    let over: Vec<HostId> = c
        .active_hosts()
        .iter()
        .copied()
        .filter(|&h| det.is_overloaded(&c.load(h)))
        .collect();
    let mut is_over = vec![false; n];
    for &h in &over {
        is_over[h] = true;
    }
    let leaving = select_from_overloaded(&mut c, det, sel, rng, &over);
    let mut plan = Plan::default();
    // From here on every change to `c` goes through the placer, which keeps its index current.
    let mut placer = Placer::new(&c, det, is_over.clone(), false);
    for (vm, to) in placer.place_each(&mut c, &leaving) {
        plan.moves
            .push(mv(snap, vm, to, MoveReason::Overload, technique));
    }
    consolidate_underloaded(&mut c, &mut placer, &is_over, &mut plan, technique);
    plan
}

fn mv(snap: &Snapshot, vm: VmId, to: HostId, reason: MoveReason, technique: Technique) -> Move {
    Move {
        vm,
        from: snap.vms[vm].host.unwrap_or(to),
        to,
        reason,
        technique,
    }
}

/// Step 1: VMs to move off the overloaded hosts (removed from them in `c`).
fn select_from_overloaded(
    c: &mut Cluster,
    det: &Detector,
    sel: Selector,
    rng: &mut SplitMix64,
    over: &[HostId],
) -> Vec<VmId> {
    let mut leaving = Vec::new();
    for &h in over {
        while let Some(vm) = sel.select(c, h, rng) {
            leaving.push(vm);
            c.remove(h, vm);
            if !det.is_overloaded(&c.load(h)) {
                break;
            }
        }
    }
    leaving
}

/// Step 3: evacuate hosts from the least utilized up, all-or-nothing each.
fn consolidate_underloaded(
    c: &mut Cluster,
    placer: &mut Placer,
    is_over: &[bool],
    plan: &mut Plan,
    technique: Technique,
) {
    let snap = c.snap;
    let n = c.len();
    // Not sources: overloaded, off, already visited, or targets of an evacuation.
    let mut no_source: Vec<bool> = (0..n).map(|h| is_over[h] || snap.is_off(h)).collect();
    // Not destinations: overloaded, off, already visited.
    placer.set_off_hosts(true);
    for (h, &ruled_out) in no_source.iter().enumerate() {
        if ruled_out {
            placer.exclude(h);
        }
    }
    let mut order: Vec<HostId> = c
        .active_hosts()
        .iter()
        .copied()
        .filter(|&h| !no_source[h])
        .collect();
    // Least utilized first; CloudSim's strict "<" scan breaks ties towards the lower number.
    order.sort_by(|&a, &b| {
        snap.host_utilization(a)
            .total_cmp(&snap.host_utilization(b))
            .then(a.cmp(&b))
    });
    for h in order {
        if no_source[h] {
            continue;
        }
        no_source[h] = true;
        placer.exclude(h);
        let vms = c.host(h).vms.clone();
        if vms.is_empty() {
            continue;
        }
        if let Some(placed) = placer.place_all(c, &vms) {
            for (vm, to) in placed {
                no_source[to] = true;
                plan.moves
                    .push(mv(snap, vm, to, MoveReason::Underload, technique));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dc::cluster::tests::snapshot;
    use crate::dc::detect::Overload;

    fn thr(t: f64) -> Detector {
        Detector::new(Overload::Thr { threshold: t }, 300.0)
    }

    fn run(s: &Snapshot, t: f64) -> Vec<(VmId, HostId, HostId, MoveReason)> {
        optimize(
            s,
            &thr(t),
            Selector::Mmt,
            &mut SplitMix64::new(1),
            Technique::Precopy,
        )
        .moves
        .iter()
        .map(|m| (m.vm, m.from, m.to, m.reason))
        .collect()
    }

    #[test]
    fn overloaded_host_sheds_smallest_vms_until_below_threshold() {
        // Host 0 (G5, 5320): VMs of 2000 MIPS at 100% (1740 MB) and 2500 at 100% (870 MB):
        // 84.6% > 80%. MMT takes the 870 MB VM; 2000/5320 = 37.6% is fine. Host 1 (G5) runs a
        // 500-MIPS VM at 50%; host 2 (G5) is off. PABFD sends the 2500-MIPS VM to host 2 (off ->
        // 47%: +20.5 W) rather than host 1 (4.7% -> 51.7%: +21.6 W).
        // Underload: host 1 (4.7%) could only go to host 0 (overloaded) or host 2 (off at the
        // snapshot): it stays. Host 2 was off: not a source.
        let s = snapshot(
            &[1, 1, 1],
            &[
                (Some(0), 2000.0, 1.0, 1740),
                (Some(0), 2500.0, 1.0, 870),
                (Some(1), 500.0, 0.5, 613),
            ],
            1,
        );
        assert_eq!(run(&s, 0.8), vec![(1, 0, 2, MoveReason::Overload)]);
    }

    #[test]
    fn underloaded_hosts_are_emptied_all_or_nothing() {
        // Three G5 hosts at 10%, 20% and 30%: host 0 goes first; its VM costs +4 W on host 1
        // (20% -> 30%) and +5 W on host 2 (30% -> 40%): host 1. Host 1 received a VM, so it is
        // not a source. Host 2 (30%) is evacuated onto host 1 (60%, under the 80% threshold).
        let s = snapshot(
            &[1, 1, 1],
            &[
                (Some(0), 532.0, 1.0, 613),
                (Some(1), 1064.0, 1.0, 613),
                (Some(2), 1596.0, 1.0, 613),
            ],
            1,
        );
        let moves = run(&s, 0.8);
        assert_eq!(moves[0], (0, 0, 1, MoveReason::Underload));
        assert_eq!(moves.len(), 2, "{moves:?}");
        assert_eq!(moves[1], (2, 2, 1, MoveReason::Underload));
    }

    #[test]
    fn nothing_to_do_on_a_balanced_packed_cluster() {
        // One host at 33% (below 80%) and nowhere to put its VM: no moves.
        let s = snapshot(&[1], &[(Some(0), 2500.0, 0.7, 870)], 1);
        assert!(run(&s, 0.8).is_empty());
    }
}
