//! Hotspot detection and relief.

use super::rig::{migrations, quiet, Cluster, Rig, GIB};
use crate::control::{ControlSettings, MoveState, PlanKind, PlanState, TechniqueChooser};
use crate::migration::Technique;

/// h1 at 3.9 of 4 cores (0.975 > hot 0.9); h2 at 1 of 4.
fn hot_pair() -> Cluster {
    Cluster::new()
        .host("h1", 4.0, 32)
        .host("h2", 4.0, 32)
        .vm("h1", "a", 2.0, 4)
        .vm("h1", "b", 1.0, 4)
        .vm("h1", "c", 0.9, 4)
        .vm("h2", "d", 1.0, 4)
}

#[test]
fn an_overload_is_relieved_after_exactly_k_samples() {
    for k in [1u32, 3, 5] {
        let settings = ControlSettings {
            hot_samples: k,
            ..quiet()
        };
        let mut rig = Rig::new(hot_pair(), settings);
        for i in 1..k {
            let out = rig.look();
            assert!(out.actions.is_empty(), "k={k}: nothing at sample {i}");
            assert!(out.new_plans.is_empty());
        }
        let out = rig.look();
        assert_eq!(out.new_plans.len(), 1, "k={k}: relief at sample {k}");
        let moved = migrations(&out.actions);
        // Excess (0.975 - 0.75) x 4 = 0.9 cores: each VM suffices alone and all cost the same
        // (idle), so the smallest that suffices goes, to the only other host.
        assert_eq!(moved, vec![("c".into(), "h1".into(), "h2".into())], "k={k}");
        let plan = &rig.state.plans[&out.new_plans[0]];
        assert_eq!(plan.kind, PlanKind::Relief);
        assert_eq!(plan.state, PlanState::Approved);
        assert_eq!(plan.explanation.samples.len(), k as usize);
        assert_eq!(plan.explanation.threshold, Some(0.9));
    }
}

#[test]
fn a_relieved_move_runs_ends_and_is_remembered() {
    let mut rig = Rig::new(hot_pair(), quiet());
    rig.looks(3);
    let plan_id = rig.plans(PlanState::Approved)[0].id.clone();
    rig.looks(3);
    assert_eq!(rig.cluster.where_is("c"), Some("h2"));
    let plan = &rig.state.plans[&plan_id];
    assert_eq!(plan.state, PlanState::Done, "{plan:?}");
    let m = &rig.state.moves[&plan.moves[0]];
    assert!(matches!(m.state, MoveState::Done { .. }), "{m:?}");
    let vm = &rig.state.vms["c"];
    assert_eq!(vm.left.as_ref().map(|l| l.0.as_str()), Some("h1"));
    assert!(vm.last_moved_s.is_some());
    // h1 is at 0.75 now: no more plans.
    let later = rig.looks(10);
    assert!(migrations(&later).is_empty());
}

#[test]
fn relief_picks_the_cheap_vm_and_a_destination_under_target() {
    let mut cluster = Cluster::new()
        .host("h1", 8.0, 64)
        .host("h2", 8.0, 64)
        .host("h3", 8.0, 64)
        .host("h4", 8.0, 64)
        .vm("h1", "big", 2.0, 16)
        .vm("h1", "small", 2.0, 2)
        .vm("h1", "base", 3.6, 4)
        .vm("h2", "x", 3.6, 4)
        .vm("h3", "y", 0.8, 4)
        .vm("h4", "z", 4.4, 4);
    cluster.v("big").dirty_rate_bps = Some(200e6);
    cluster.v("big").wss_bytes = Some(8 * GIB);
    cluster.v("base").dirty_rate_bps = Some(50e6);
    cluster.v("base").wss_bytes = Some(GIB);
    let mut rig = Rig::new(cluster, quiet());
    let actions = rig.looks(3);
    // h1: 7.6/8 = 0.95; 1.6 cores must go. Each VM suffices alone; "small" (idle, 2 GiB)
    // loses the least work. Destinations: h2 reaches 0.70, h3 0.35, h4 would reach 0.80 >
    // target 0.75: best fit is h2.
    assert_eq!(
        migrations(&actions),
        vec![("small".into(), "h1".into(), "h2".into())]
    );
    let plan = rig.plans(PlanState::Approved)[0];
    let why = &plan.explanation.moves[0];
    assert!(why.why_vm.contains("cheapest"), "{}", why.why_vm);
    assert!(
        why.why_destination.starts_with("h2"),
        "{}",
        why.why_destination
    );
    assert!(
        why.why_destination.contains("load over target (h4 0.80)"),
        "{}",
        why.why_destination
    );
    assert_eq!(why.forecasts.len(), 3, "every technique's forecast is kept");
    assert!(why.predicted_cost_s.is_finite());
    // The cost model chose (over a 1 GB/s link even an idle VM goes by post-copy: pre-copy
    // would stop-and-copy most of its memory at the first bandwidth sample).
    assert!(
        why.why_technique.contains("predicted degradation"),
        "{}",
        why.why_technique
    );
    assert_ne!(
        rig.state.moves[&why.move_id].technique.technique,
        Technique::Auto
    );
}

#[test]
fn several_moves_biggest_first_when_no_single_vm_suffices() {
    // h1: 6 x 0.7 = 4.2 of 4 cores (1.05); to reach 0.75 it must shed 1.2 cores: two VMs.
    let mut cluster = Cluster::new().host("h1", 4.0, 64).host("h2", 8.0, 64);
    for i in 0..6 {
        cluster = cluster.vm("h1", &format!("v{i}"), 0.7, 2);
    }
    let mut rig = Rig::new(cluster, quiet());
    rig.looks(3);
    let plan = rig.plans(PlanState::Approved)[0];
    assert_eq!(plan.moves.len(), 2, "{:?}", plan.explanation);
    assert!(plan.explanation.moves[0]
        .why_vm
        .contains("no single VM suffices"));
}

#[test]
fn no_room_is_said_once_and_no_plan_is_made() {
    // h2 is already at target: nothing fits; standby is off, so nothing wakes.
    let cluster = Cluster::new()
        .host("h1", 4.0, 32)
        .host("h2", 4.0, 32)
        .vm("h1", "a", 3.9, 4)
        .vm("h2", "b", 3.0, 4);
    let mut rig = Rig::new(cluster, quiet());
    rig.looks(10);
    assert!(rig.state.plans.is_empty());
    let notes: Vec<_> = rig
        .outputs
        .iter()
        .flat_map(|o| o.journal.iter())
        .filter(|j| j.what.contains("no relief possible"))
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].what.contains("load over target"),
        "{}",
        notes[0].what
    );
}

#[test]
fn prediction_relieves_a_rising_host_before_it_passes_hot() {
    let cluster = Cluster::new()
        .host("h1", 10.0, 64)
        .host("h2", 10.0, 64)
        .vm("h1", "a", 5.0, 4)
        .vm("h1", "b", 1.0, 4);
    let settings = ControlSettings {
        predictive: true,
        ..quiet()
    };
    let mut rig = Rig::new(cluster, settings);
    // a rises 0.5 core a second: h1 at 0.60, 0.65, 0.70, 0.75, 0.80 (never above hot 0.9),
    // but the line says 0.85 ... then 0.9+.
    let mut planned_at = None;
    for i in 0..8 {
        rig.cluster.v("a").cpu_demand_cores = 5.0 + 0.5 * i as f64;
        let out = rig.look();
        if !out.new_plans.is_empty() {
            planned_at = Some(i);
            let plan = &rig.state.plans[&out.new_plans[0]];
            assert!(
                plan.explanation.summary.contains("forecast"),
                "{}",
                plan.explanation.summary
            );
            break;
        }
    }
    let at = planned_at.expect("the forecast made it hot");
    let load_then = (6.0 + 0.5 * at as f64) / 10.0;
    assert!(
        load_then <= 0.9,
        "relieved at load {load_then}, before it passed hot"
    );
}

#[test]
fn an_unmeasured_vm_goes_by_postcopy_and_says_why() {
    let mut cluster = hot_pair();
    for v in ["a", "b", "c"] {
        cluster.v(v).dirty_rate_bps = None;
    }
    let mut rig = Rig::new(cluster, quiet());
    rig.looks(3);
    let plan = rig.plans(PlanState::Approved)[0];
    let why = &plan.explanation.moves[0];
    assert!(why.why_technique.contains("no dirty-rate measurement"));
    assert!(why.forecasts.is_empty());
    assert_eq!(
        rig.state.moves[&why.move_id].technique.technique,
        Technique::Postcopy
    );
}

#[test]
fn the_agent_may_choose_and_a_restriction_is_obeyed() {
    for (settings, want) in [
        (
            ControlSettings {
                technique_chooser: TechniqueChooser::Agent,
                ..quiet()
            },
            Technique::Auto,
        ),
        (
            ControlSettings {
                techniques: vec![Technique::Hybrid],
                ..quiet()
            },
            Technique::Hybrid,
        ),
    ] {
        let mut rig = Rig::new(hot_pair(), settings);
        let actions = rig.looks(3);
        let t = actions
            .iter()
            .find_map(|a| match a {
                crate::control::Action::Migrate { technique, .. } => Some(*technique),
                _ => None,
            })
            .expect("a migration");
        assert_eq!(t, want);
    }
}
