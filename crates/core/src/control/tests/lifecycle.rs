//! Moves in flight: asking again, waiting for unreachable agents, skipped premises, slots,
//! outcomes; energy and the next look.

use super::rig::{migrations, quiet, Cluster, Rig};
use crate::control::{
    record, step, Action, ControlSettings, ControlState, MoveState, Observation, Outcome,
    PlanState, BUSY_LOOK_S,
};

/// h1 must shed two VMs (6 x 0.7 = 4.2 of 4 cores) to roomy h2.
fn two_moves() -> Cluster {
    let mut cluster = Cluster::new().host("h1", 4.0, 64).host("h2", 8.0, 64);
    for i in 0..6 {
        cluster = cluster.vm("h1", &format!("v{i}"), 0.7, 2);
    }
    cluster
}

#[test]
fn a_requested_move_its_agent_does_not_know_is_asked_again_once_a_look() {
    let mut rig = Rig::new(two_moves(), quiet());
    rig.accept_migrations = false;
    let first = rig.looks(3);
    let id = match first.as_slice() {
        [Action::Migrate { move_id, .. }] => move_id.clone(),
        other => panic!("{other:?}"),
    };
    for _ in 0..4 {
        let out = rig.look();
        let asks = out
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Migrate { move_id, .. } if *move_id == id))
            .count();
        assert_eq!(asks, 1, "{:?}", out.actions);
        assert_eq!(out.actions.len(), 1, "the second move waits for the slot");
        assert!(out.journal.iter().any(|j| j.what.contains("asked again")));
    }
    // Once the agent has it, nothing is asked twice.
    rig.accept_migrations = true;
    rig.look();
    let later = rig.look();
    assert!(!later
        .actions
        .iter()
        .any(|a| matches!(a, Action::Migrate { move_id, .. } if *move_id == id)));
}

#[test]
fn a_running_move_waits_while_its_source_is_unreachable() {
    let mut rig = Rig::new(two_moves(), quiet());
    rig.migrate_looks = 10;
    rig.looks(4);
    let id = rig.plans(PlanState::Approved)[0].moves[0].clone();
    assert!(matches!(
        rig.state.moves[&id].state,
        MoveState::Running { .. }
    ));
    rig.cluster.h("h1").reachable = false;
    let quiet_looks = rig.looks(5);
    assert!(quiet_looks.is_empty(), "{quiet_looks:?}");
    assert!(matches!(
        rig.state.moves[&id].state,
        MoveState::Running { .. }
    ));
    rig.cluster.h("h1").reachable = true;
    rig.looks(6);
    assert!(matches!(rig.state.moves[&id].state, MoveState::Done { .. }));
}

#[test]
fn a_move_whose_premise_vanished_is_skipped_with_the_reason() {
    let mut rig = Rig::new(two_moves(), quiet());
    rig.migrate_looks = 5;
    rig.looks(3);
    let plan = rig.plans(PlanState::Approved)[0].id.clone();
    let second = rig.state.plans[&plan].moves[1].clone();
    let vm = rig.state.moves[&second].vm.clone();
    // The second VM is deleted by its owner while the first move runs.
    rig.cluster.h("h1").vms.retain(|v| v.name != vm);
    rig.looks(8);
    match &rig.state.moves[&second].state {
        MoveState::Skipped { reason, .. } => {
            assert!(reason.contains("not seen running"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        rig.state.plans[&plan].state,
        PlanState::Done,
        "skips do not fail a plan"
    );
}

#[test]
fn one_migration_out_and_one_in_per_host() {
    // h1 and h2 are both hot and h3 is the only host with room: their moves take turns.
    let cluster = Cluster::new()
        .host("h1", 4.0, 32)
        .host("h2", 4.0, 32)
        .host("h3", 16.0, 64)
        .vm("h1", "a", 2.0, 4)
        .vm("h1", "b", 1.9, 4)
        .vm("h2", "c", 2.0, 4)
        .vm("h2", "d", 1.9, 4);
    let mut rig = Rig::new(cluster, quiet());
    rig.migrate_looks = 3;
    for _ in 0..20 {
        rig.look();
        let into_h3 = rig.state.in_flight().filter(|m| m.to == "h3").count();
        assert!(into_h3 <= 1, "at t={}: {into_h3} moves into h3", rig.now);
    }
    assert_eq!(rig.plans(PlanState::Done).len(), 2);
    let moved: usize = rig
        .outputs
        .iter()
        .map(|o| migrations(&o.actions).len())
        .sum();
    assert_eq!(moved, 2);
}

#[test]
fn a_refused_migration_fails_its_plan() {
    let mut rig = Rig::new(two_moves(), quiet());
    rig.accept_migrations = false;
    let actions = rig.looks(3);
    let Some(Action::Migrate { move_id, .. }) = actions.first() else {
        panic!("{actions:?}");
    };
    let journal = record(
        &mut rig.state,
        Outcome::MigrateRefused {
            move_id: move_id.clone(),
            error: "no such VM".into(),
        },
        rig.now,
    );
    assert!(journal
        .iter()
        .any(|j| j.what.contains("failed (no such VM)")));
    assert!(journal
        .iter()
        .any(|j| j.what.contains("cancelled (plan failed")));
    rig.look();
    let plan = &rig.state.plans[&rig.state.moves[move_id].plan];
    assert_eq!(plan.state, PlanState::Failed);
}

#[test]
fn a_failed_wake_is_noted_and_asked_again_later() {
    let mut state = ControlState::default();
    state.hosts.insert("h3".into(), Default::default());
    state.hosts.get_mut("h3").expect("h3").wake_asked_s = Some(5.0);
    let j = record(
        &mut state,
        Outcome::Wake {
            host: "h3".into(),
            error: Some("BMC timeout".into()),
        },
        6.0,
    );
    assert!(j[0].what.contains("BMC timeout"));
    let h3 = &state.hosts["h3"];
    assert_eq!((h3.wake_asked_s, h3.wake_failed_s), (None, Some(6.0)));
}

#[test]
fn energy_is_integrated_between_looks() {
    let cluster = Cluster::new()
        .host("h1", 4.0, 32)
        .host("h2", 4.0, 32)
        .standby_host("h3", 4.0, 32)
        .vm("h1", "a", 2.0, 4);
    let mut rig = Rig::new(cluster, quiet());
    rig.looks(11);
    // Ten seconds between the first and the eleventh look: h1 at 0.5 (175 W), h2 idle
    // (100 W), h3 in standby (0 W).
    let expected = (175.0 + 100.0) * 10.0 / 3600.0;
    assert!(
        (rig.state.energy_wh - expected).abs() < 1e-9,
        "{}",
        rig.state.energy_wh
    );
}

#[test]
fn the_next_look_is_soon_while_busy_and_later_when_idle() {
    let idle = Cluster::new()
        .host("h1", 4.0, 32)
        .host("h2", 4.0, 32)
        .vm("h1", "a", 2.0, 4)
        .vm("h2", "b", 2.0, 4);
    let mut rig = Rig::new(idle, ControlSettings::default());
    let out = rig.look();
    assert_eq!(out.next_look_s, 1.0 + 60.0, "next consolidation round");
    rig.cluster.v("a").cpu_demand_cores = 3.8;
    let out = rig.look();
    assert_eq!(
        out.next_look_s,
        rig.now + BUSY_LOOK_S,
        "a hot streak is building"
    );
}

#[test]
fn a_clock_that_is_not_a_number_changes_nothing() {
    let mut state = ControlState::default();
    let settings = ControlSettings::default();
    let obs = two_moves().observe(vec![]);
    step(&mut state, &obs, &settings, 1.0);
    let before = state.clone();
    let out = step(&mut state, &obs, &settings, f64::NAN);
    assert_eq!(state, before);
    assert!(out.actions.is_empty());
    assert_eq!(out.next_look_s, 1.0 + BUSY_LOOK_S);
    let empty = step(&mut state, &Observation::default(), &settings, 2.0);
    assert!(empty.actions.is_empty());
}
