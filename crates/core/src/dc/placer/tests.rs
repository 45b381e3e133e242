//! The placer against the full scan (`place::find_host`) on random clusters.

use super::*;
use crate::dc::cluster::tests::snapshot;
use crate::dc::model::HostType;
use crate::dc::place::{find_host, Exclusions};
use crate::dc::rng::SplitMix64;
use crate::dc::snapshot::{History, HostState, Snapshot, VmState};

/// A random cluster: hosts of both benchmark types, some empty; VMs with random histories
/// (whole percents, many zeros, some flat, some trending), most placed; the measured
/// utilization is what the VMs ask for, as at a decision instant. `full`: every history is as
/// long as a history can be, its oldest sample non-zero (as late in a day: what IQR's and MAD's
/// bounds need).
fn random_snapshot(
    rng: &mut SplitMix64,
    hosts: usize,
    vms: usize,
    memory: bool,
    full: bool,
) -> Snapshot {
    let host_types = vec![HostType::hp_ml110_g4(), HostType::hp_ml110_g5()];
    let mut hs: Vec<HostState> = (0..hosts)
        .map(|_| HostState {
            kind: rng.below(2),
            vms: vec![],
            util_mips: 0.0,
            on_since_s: None,
        })
        .collect();
    let sizes = [(2500.0, 870), (2000.0, 1740), (1000.0, 1740), (500.0, 613)];
    let mut out = Vec::new();
    for i in 0..vms {
        let (mips, ram) = sizes[rng.below(4)];
        let mut history = History::default();
        let len = if full {
            HISTORY_LEN
        } else {
            rng.below(HISTORY_LEN + 1)
        };
        let base = rng.next_f64() * 0.6;
        let slope = (rng.next_f64() - 0.5) * 0.05;
        for k in 0..len {
            let u = match rng.below(4) {
                0 => 0.0,
                1 => base,
                _ => ((base + slope * k as f64 + rng.next_f64() * 0.2) * 100.0).round() / 100.0,
            };
            let u = if full && k == 0 { u.max(0.01) } else { u };
            history.push(u.clamp(0.0, 1.0));
        }
        // Some exact repeats of demand, some arbitrary.
        let u = if rng.below(2) == 0 {
            (rng.below(40) as f64) / 100.0
        } else {
            rng.next_f64() * 0.5
        };
        let host = if rng.below(8) == 0 {
            None
        } else {
            Some(rng.below(hosts))
        };
        if let Some(h) = host {
            hs[h].vms.push(i);
        }
        out.push(VmState {
            mips,
            pes: 1,
            ram_mb: ram,
            host,
            demand_mips: u * mips,
            history,
            dirty_rate_bps: 0.0,
            wss_bytes: 0,
            last_migration_s: None,
        });
    }
    let mut snap = Snapshot {
        time_s: 3000.0,
        interval_s: 300.0,
        host_types,
        hosts: hs,
        vms: out,
        enforce_memory: memory,
    };
    let c = Cluster::new(&snap);
    let util: Vec<f64> = (0..hosts).map(|h| c.host(h).alloc_mips).collect();
    for (h, u) in util.into_iter().enumerate() {
        snap.hosts[h].util_mips = u;
    }
    snap
}

fn detectors() -> Vec<Detector> {
    [
        Overload::Thr { threshold: 0.8 },
        Overload::Thr { threshold: 1.0 },
        Overload::Lr { safety: 1.2 },
        Overload::Lr { safety: 1.0 },
        Overload::Lrr { safety: 1.2 },
        Overload::Iqr { safety: 1.5 },
        Overload::Mad { safety: 2.5 },
    ]
    .into_iter()
    .map(|k| Detector::new(k, 300.0))
    .collect()
}

/// Drives the placer and the full scan through the same edits and compares every choice.
fn check(seed: u64, hosts: usize, vms: usize, memory: bool, full: bool) -> usize {
    let mut rng = SplitMix64::new(seed);
    let snap = random_snapshot(&mut rng, hosts, vms, memory, full);
    let mut found = 0;
    for det in detectors() {
        let mut c = Cluster::new(&snap);
        let excluded: Vec<bool> = (0..hosts).map(|_| rng.below(10) == 0).collect();
        let mut ex = Exclusions {
            hosts: excluded.clone(),
            off_hosts: rng.below(2) == 0,
        };
        let mut p = Placer::new(&c, &det, excluded, ex.off_hosts);
        let mut placed: Vec<(VmId, HostId)> = Vec::new();
        for step in 0..3 * vms {
            let vm = rng.below(vms);
            let want = find_host(&c, &det, vm, &ex);
            assert_eq!(
                p.find(&c, vm),
                want,
                "{:?} seed {seed} step {step}",
                det.kind
            );
            match rng.below(6) {
                0..=2 => {
                    if let Some(h) = want {
                        p.add(&mut c, h, vm);
                        placed.push((vm, h));
                        found += 1;
                    }
                }
                3 => {
                    if let Some((v, h)) = placed.pop() {
                        p.remove(&mut c, h, v);
                    }
                }
                4 => {
                    let h = rng.below(hosts);
                    ex.hosts[h] = true;
                    p.exclude(h);
                }
                _ => {
                    ex.off_hosts = !ex.off_hosts;
                    p.set_off_hosts(ex.off_hosts);
                }
            }
        }
    }
    found
}

#[test]
fn same_choices_as_the_full_scan() {
    let mut found = 0;
    for seed in 0..12 {
        found += check(seed, 60, 90, seed % 3 == 0, seed % 2 == 0);
    }
    found += check(99, 400, 500, false, false);
    found += check(98, 400, 500, false, true);
    // Busier hosts (five VMs each on average): full dense buckets in the upper segments,
    // where unchanged hosts tie up to rounding and are read by stretches of utilization.
    found += check(97, 300, 1500, false, true);
    found += check(96, 300, 1500, true, false);
    assert!(found > 1000, "{found}");
}

#[test]
fn place_all_is_all_or_nothing_and_place_each_best_effort() {
    // Two 1500-MIPS VMs, one G4 host with 2000 free: the second does not fit, so neither
    // moves with `place_all`; `place_each` still places the first.
    let s = snapshot(
        &[0, 0],
        &[
            (Some(0), 1720.0, 1.0, 870),
            (None, 1500.0, 1.0, 870),
            (None, 1500.0, 1.0, 870),
        ],
        1,
    );
    let det = Detector::new(Overload::Thr { threshold: 1.0 }, 300.0);
    let mut c = Cluster::new(&s);
    let mut p = Placer::new(&c, &det, vec![false, true], true);
    assert_eq!(p.place_all(&mut c, &[1, 2]), None);
    assert_eq!(c.host(0).vms, vec![0]);
    assert_eq!(p.place_each(&mut c, &[1, 2]), vec![(1, 0)]);
    assert_eq!(c.host(0).vms, vec![0, 1]);
}

/// LR's and LRR's answers from the cached lines agree with the detector on the combined
/// history for every host and VM pair they settle, and settle most of them.
#[test]
fn shortcut_from_the_lines_agrees_with_the_detector() {
    let mut rng = SplitMix64::new(5);
    for full in [false, true] {
        let snap = random_snapshot(&mut rng, 200, 600, false, full);
        for kind in [Overload::Lr { safety: 1.2 }, Overload::Lrr { safety: 1.2 }] {
            let det = Detector::new(kind, 300.0);
            let c = Cluster::new(&snap);
            let mut p = Placer::new(&c, &det, vec![false; 200], false);
            let (mut settled, mut tried) = (0, 0);
            for h in 0..200 {
                for vm in (0..600).step_by(7) {
                    tried += 1;
                    let Some(answer) = p.settled_by_lines(&c, h, vm) else {
                        continue;
                    };
                    settled += 1;
                    let mut buf = [0.0; HISTORY_LEN];
                    let exact = det.is_overloaded(&c.load_with(h, vm, &mut buf));
                    assert_eq!(answer, exact, "{kind:?} host {h} vm {vm}");
                }
            }
            // Full histories are all settled but for the near-threshold few; short ones fall
            // back to the exact test far more often.
            if full {
                assert!(
                    settled * 100 >= tried * 95,
                    "{kind:?}: {settled} of {tried}"
                );
            } else {
                assert!(settled > 0, "{kind:?}");
            }
        }
    }
}
