//! Placement rules during relief.

use super::rig::{migrations, quiet, Cluster, Rig};
use crate::control::{ControlSettings, PlacementRule};

/// h1 hot (3.9 of 4); h2 the best fit; h3 emptier.
fn cluster() -> Cluster {
    Cluster::new()
        .host("h1", 4.0, 32)
        .host("h2", 4.0, 32)
        .host("h3", 4.0, 32)
        .vm("h1", "a", 1.0, 4)
        .vm("h1", "b", 1.0, 4)
        .vm("h1", "c", 1.9, 4)
        .vm("h2", "d", 1.8, 4)
        .vm("h3", "e", 0.2, 4)
}

fn with(rules: Vec<PlacementRule>) -> ControlSettings {
    ControlSettings { rules, ..quiet() }
}

#[test]
fn without_rules_the_best_fit_wins() {
    let mut rig = Rig::new(cluster(), quiet());
    // Excess 0.9: a (1.0) suffices; h2 reaches 0.70, h3 0.30: h2.
    assert_eq!(
        migrations(&rig.looks(3)),
        vec![("a".into(), "h1".into(), "h2".into())]
    );
}

#[test]
fn hard_anti_affinity_keeps_vms_apart() {
    let rules = vec![PlacementRule::AntiAffinity {
        vms: vec!["a".into(), "d".into()],
        hard: true,
    }];
    let mut rig = Rig::new(cluster(), with(rules));
    assert_eq!(
        migrations(&rig.looks(3)),
        vec![("a".into(), "h1".into(), "h3".into())]
    );
}

#[test]
fn hard_affinity_with_a_vm_elsewhere_pins_the_destination() {
    let rules = vec![PlacementRule::Affinity {
        vms: vec!["a".into(), "e".into()],
        hard: true,
    }];
    let mut rig = Rig::new(cluster(), with(rules));
    let moved = migrations(&rig.looks(3));
    assert_eq!(moved, vec![("a".into(), "h1".into(), "h3".into())]);
}

#[test]
fn hard_affinity_on_the_same_host_moves_the_vms_together() {
    // a and b must stay together and c is pinned to h1: the pair is the only way out, and it
    // leaves as one unit (2.8 cores) to one host.
    let rules = vec![
        PlacementRule::Affinity {
            vms: vec!["a".into(), "b".into()],
            hard: true,
        },
        PlacementRule::VmHost {
            vms: vec!["c".into()],
            hosts: vec!["h1".into()],
            allow: true,
            hard: true,
        },
    ];
    let mut cluster = cluster();
    cluster.v("a").cpu_demand_cores = 1.4;
    cluster.v("b").cpu_demand_cores = 1.4;
    cluster.v("c").cpu_demand_cores = 1.0;
    let mut rig = Rig::new(cluster, with(rules));
    rig.looks(3);
    let plan = rig.state.plans.values().next().expect("a plan");
    let pairs: Vec<_> = plan
        .moves
        .iter()
        .map(|m| (rig.state.moves[m].vm.clone(), rig.state.moves[m].to.clone()))
        .collect();
    assert_eq!(
        pairs,
        vec![("a".into(), "h3".into()), ("b".into(), "h3".into())],
        "2.8 cores fit h3 (0.05 -> 0.75), not h2 (0.45 -> 1.15)"
    );
    assert!(plan.explanation.moves[0].why_vm.contains("hard affinity"));
    // They start one after the other (one out of h1 at a time) and end together.
    rig.looks(8);
    assert_eq!(rig.cluster.where_is("a"), Some("h3"));
    assert_eq!(rig.cluster.where_is("b"), Some("h3"));
}

#[test]
fn vm_to_host_rules_hard_and_soft() {
    // Hard: a only on h3.
    let only_h3 = vec![PlacementRule::VmHost {
        vms: vec!["a".into()],
        hosts: vec!["h3".into()],
        allow: true,
        hard: true,
    }];
    let mut rig = Rig::new(cluster(), with(only_h3));
    assert_eq!(
        migrations(&rig.looks(3)),
        vec![("a".into(), "h1".into(), "h3".into())]
    );
    // Hard: never on h2 nor h3: a cannot move; b (same size, as cheap) goes instead.
    let never = vec![PlacementRule::VmHost {
        vms: vec!["a".into()],
        hosts: vec!["h2".into(), "h3".into()],
        allow: false,
        hard: true,
    }];
    let mut rig = Rig::new(cluster(), with(never));
    assert_eq!(
        migrations(&rig.looks(3)),
        vec![("b".into(), "h1".into(), "h2".into())]
    );
    // Soft: preferably not on h2: h3 is taken although h2 fits better.
    let soft = vec![PlacementRule::VmHost {
        vms: vec!["a".into()],
        hosts: vec!["h2".into()],
        allow: false,
        hard: false,
    }];
    let mut rig = Rig::new(cluster(), with(soft));
    assert_eq!(
        migrations(&rig.looks(3)),
        vec![("a".into(), "h1".into(), "h3".into())]
    );
    // Soft, and the preferred host is full: the rule gives way.
    let soft_full = vec![PlacementRule::VmHost {
        vms: vec!["a".into()],
        hosts: vec!["h1".into()],
        allow: true,
        hard: false,
    }];
    let mut rig = Rig::new(cluster(), with(soft_full));
    assert_eq!(
        migrations(&rig.looks(3)),
        vec![("a".into(), "h1".into(), "h2".into())]
    );
}

#[test]
fn a_vm_whose_every_destination_breaks_a_hard_rule_stays() {
    // Every VM of h1 is pinned there: no plan, however hot.
    let pinned = vec![PlacementRule::VmHost {
        vms: vec!["a".into(), "b".into(), "c".into()],
        hosts: vec!["h1".into()],
        allow: true,
        hard: true,
    }];
    let mut rig = Rig::new(cluster(), with(pinned));
    assert!(migrations(&rig.looks(5)).is_empty());
    assert!(rig.state.plans.is_empty());
}
