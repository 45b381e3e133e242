//! The single-VM model's choice where traffic changes nothing, and properties over random
//! groups: the chosen plan is never predicted worse than a uniform plan (all pre-copy, all
//! post-copy, all hybrid), in the objective the search minimises, under the same model.

use super::*;
use crate::migration::cost::{choose, predict, CostParams, LinkProfile};
use proptest::prelude::*;

const ALL: [Technique; 3] = Technique::CONCRETE;
const MIB: u64 = 1 << 20;

/// A group of one VM without traffic is the single-VM problem: the same technique and the same
/// forecast as [`choose`] at the narrower of the source's transmit and the destination's
/// receive capacity, for every profile, path and set of allowed techniques tried.
#[test]
fn a_single_vm_gets_the_single_vm_choice() {
    let profiles = [
        (GB, 0, 0.0),
        (GB, 64 * MIB, 5e6),
        (2 * GB, 256 * MIB, 40e6),
        (4 * GB, GB, 110e6),
        (GB, 512 * MIB, 500e6),
        (8 * GB, 8 * GB, 2e9),
    ];
    let paths = [
        (GBIT, GBIT),
        (GBIT / 10.0, GBIT),
        (10.0 * GBIT, GBIT),
        (GBIT, 2.5e6),
    ];
    let allowed: [&[Technique]; 4] = [
        &ALL,
        &[Technique::Precopy, Technique::Postcopy],
        &[Technique::Postcopy, Technique::Hybrid],
        &[Technique::Precopy],
    ];
    let params = single_vm_weights();
    let mut seen = Vec::new();
    for (memory, wss, dirty) in profiles {
        for (tx, rx) in paths {
            for &pool in &allowed {
                let mut v = quiet("solo", 0.0, 0.0, "dst");
                v.profile = VmProfile {
                    memory_bytes: memory,
                    wss_bytes: wss,
                    dirty_rate_bps: dirty,
                };
                let g = Group {
                    source: nic("src", tx, GBIT),
                    destinations: vec![nic("dst", GBIT, rx)],
                    vms: vec![v.clone()],
                };
                let plan = choose_group(&g, &params, pool).expect("plan");
                let link = LinkProfile {
                    bandwidth_bps: tx.min(rx),
                };
                let single = choose(&v.profile, &link, &params.cost, pool);
                let f = &plan.vms[0];
                let what = format!("{memory} {wss} {dirty} {tx} {rx} {pool:?}");
                assert_eq!(f.technique, single.technique, "{what}: {}", plan.reason);
                assert_eq!(
                    f.prediction,
                    predict(single.technique, &v.profile, &link, &params.cost),
                    "{what}"
                );
                close(f.bandwidth_bps, tx.min(rx), &what);
                close(plan.evacuation_s, f.prediction.total_s, &what);
                assert!(f.reason.contains(&single.reason), "{what}: {}", f.reason);
                seen.push(single.technique);
            }
        }
    }
    // The grid reaches every technique, so the match is not one answer repeated.
    for t in ALL {
        assert!(seen.contains(&t), "{t} never chosen");
    }
}

/// A VM that fills its own transmit side: alone, the single-VM model (blind to traffic) picks
/// pre-copy; the group model sees its 125 MB/s on the source's transmit side and picks
/// post-copy. Traffic changes the choice only through the contention it causes.
#[test]
fn traffic_is_what_makes_a_single_vm_differ() {
    let g = Group {
        source: nic("src", GBIT, GBIT),
        destinations: vec![nic("dst", GBIT, GBIT)],
        vms: vec![quiet("vm-full", 0.0, 125.0, "dst")],
    };
    let params = single_vm_weights();
    let link = LinkProfile {
        bandwidth_bps: GBIT,
    };
    let blind = choose(&g.vms[0].profile, &link, &params.cost, &ALL);
    assert_eq!(blind.technique, Technique::Precopy);
    let plan = choose_group(&g, &params, &ALL).expect("plan");
    assert_eq!(
        plan.vms[0].technique,
        Technique::Postcopy,
        "{}",
        plan.reason
    );
}

fn mb() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 0.0f64..150.0].prop_map(|x| x * 1e6)
}

fn capacity() -> impl Strategy<Value = f64> {
    (5.0f64..1500.0).prop_map(|x| x * 1e6)
}

fn leaving(i: usize, destinations: usize) -> impl Strategy<Value = LeavingVm> {
    (
        mb(),
        mb(),
        256u64..4096,
        0.0f64..=1.0,
        prop_oneof![Just(0.0), 0.0f64..300.0],
        0..destinations,
    )
        .prop_map(move |(rx, tx, memory_mib, wss_share, dirty_mb, d)| {
            let memory = memory_mib * MIB;
            LeavingVm {
                name: format!("vm{i}"),
                profile: VmProfile {
                    memory_bytes: memory,
                    wss_bytes: (memory as f64 * wss_share) as u64,
                    dirty_rate_bps: dirty_mb * 1e6,
                },
                moved_bytes: None,
                traffic: Traffic {
                    rx_bps: rx,
                    tx_bps: tx,
                },
                destination: format!("d{d}"),
            }
        })
}

fn host(name: String) -> impl Strategy<Value = HostNic> {
    (
        capacity(),
        capacity(),
        prop::collection::vec((mb(), mb()), 0..2),
    )
        .prop_map(move |(tx, rx, residents)| HostNic {
            host: name.clone(),
            tx_capacity_bps: tx,
            rx_capacity_bps: rx,
            residents: residents
                .into_iter()
                .map(|(rx_bps, tx_bps)| Traffic { rx_bps, tx_bps })
                .collect(),
        })
}

fn group() -> impl Strategy<Value = Group> {
    (1usize..=4, 1usize..=2).prop_flat_map(|(n, d)| {
        let vms: Vec<_> = (0..n).map(|i| leaving(i, d)).collect();
        let dests: Vec<_> = (0..d).map(|i| host(format!("d{i}"))).collect();
        (host("src".into()), dests, vms).prop_map(|(source, destinations, vms)| Group {
            source,
            destinations,
            vms,
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Under the same model, the chosen plan either is forecast to beat all pre-copy and all
    /// post-copy (at the highest concurrency allowed) on both evacuation time and lost work, or
    /// its objective is never above a uniform plan's, at any concurrency the settings allow;
    /// every number it reports is finite.
    #[test]
    fn the_choice_is_never_worse_than_a_uniform_plan(g in group(), k in 1u32..=2) {
        let params = GroupParams { max_concurrent: k, ..GroupParams::default() };
        let plan = choose_group(&g, &params, &ALL).expect("a valid group");
        prop_assert!(plan.objective.is_finite() && plan.evacuation_s.is_finite());
        for v in &plan.vms {
            prop_assert!(v.lost_work_s.is_finite() && v.bandwidth_bps > 0.0, "{:?}", v);
            prop_assert!((0.0..=100.0).contains(&v.degradation_pct));
        }
        let beats = plan.search.and_then(|s| s.beats_uniform);
        prop_assert!(beats.is_some(), "the bar is forecast with the defaults");
        let lost = plan.lost_work_s + plan.residents_lost_s;
        let top = k.min(g.vms.len() as u32);
        for t in ALL {
            for c in 1..=k {
                let s = Schedule { concurrency: c, ..everyone(&g, t) };
                let other = predict_group(&g, &params, &s, &ALL).expect("uniform");
                let uniform_bar = t != Technique::Hybrid && c == top;
                if beats == Some(true) {
                    if uniform_bar {
                        prop_assert!(plan.evacuation_s < other.evacuation_s, "{t} x{c}\n{}", plan.reason);
                        prop_assert!(lost < other.lost_work_s + other.residents_lost_s, "{t} x{c}\n{}", plan.reason);
                    }
                    prop_assert!(plan.vms.iter().all(|v| v.prediction.converges), "{}", plan.reason);
                } else {
                    prop_assert!(
                        plan.objective <= other.objective + 1e-9 * other.objective.abs().max(1.0),
                        "{t} x{c}: {} < {}\n{}", other.objective, plan.objective, plan.reason
                    );
                }
            }
        }
    }

    /// A group without traffic: each VM gets exactly its single-VM choice at the bandwidth its
    /// migration gets.
    #[test]
    fn without_traffic_each_vm_gets_its_single_vm_choice(g in group(), k in 1u32..=2) {
        let mut g = g;
        for v in &mut g.vms {
            v.traffic = Traffic::default();
        }
        for h in std::iter::once(&mut g.source).chain(&mut g.destinations) {
            h.residents.clear();
        }
        let params = GroupParams { max_concurrent: k, ..single_vm_weights() };
        let plan = choose_group(&g, &params, &ALL).expect("a valid group");
        for f in &plan.vms {
            let v = g.vms.iter().find(|v| v.name == f.name).expect("listed");
            let link = LinkProfile { bandwidth_bps: f.bandwidth_bps };
            let cost = CostParams { unthrottled_bps: Some(f.bandwidth_bps), ..params.cost };
            let single = choose(&v.profile, &link, &cost, &ALL);
            prop_assert_eq!(f.technique, single.technique, "{}", f.reason);
        }
    }
}
