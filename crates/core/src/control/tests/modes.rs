//! Modes (auto, recommend, dry-run), approval, expiry, cancellation.

use super::rig::{migrations, quiet, Cluster, Rig};
use crate::control::{
    approve, cancel_plan, Action, ControlError, ControlSettings, Mode, MoveState, PlanState,
};

fn hot_pair() -> Cluster {
    Cluster::new()
        .host("h1", 4.0, 32)
        .host("h2", 4.0, 32)
        .vm("h1", "a", 2.0, 4)
        .vm("h1", "c", 1.9, 4)
        .vm("h2", "d", 1.0, 4)
}

fn mode(m: Mode) -> ControlSettings {
    ControlSettings { mode: m, ..quiet() }
}

#[test]
fn recommend_then_approve() {
    let mut rig = Rig::new(hot_pair(), mode(Mode::Recommend));
    let before = rig.looks(10);
    assert!(migrations(&before).is_empty(), "nothing runs unapproved");
    let proposed = rig.plans(PlanState::Proposed);
    assert_eq!(proposed.len(), 1, "one proposal, not one a look");
    let id = proposed[0].id.clone();
    let obs = rig.observation();
    let journal = approve(&mut rig.state, &id, &obs, &rig.settings, rig.now).expect("approve");
    assert_eq!(journal[0].what, "approved");
    let out = rig.look();
    assert_eq!(
        migrations(&out.actions),
        vec![("c".into(), "h1".into(), "h2".into())]
    );
    let again = approve(&mut rig.state, &id, &obs, &rig.settings, rig.now);
    assert!(matches!(again, Err(ControlError::Plan(_))), "{again:?}");
    assert!(matches!(
        approve(&mut rig.state, "p-nope", &obs, &rig.settings, rig.now),
        Err(ControlError::UnknownPlan(_))
    ));
}

#[test]
fn a_stale_proposal_expires_and_approving_it_is_refused() {
    let mut rig = Rig::new(hot_pair(), mode(Mode::Recommend));
    rig.looks(3);
    let id = rig.plans(PlanState::Proposed)[0].id.clone();
    // The host cools down by itself: the next look expires the proposal.
    rig.cluster.v("a").cpu_demand_cores = 0.5;
    let out = rig.look();
    assert!(out
        .journal
        .iter()
        .any(|j| j.id == id && j.what.contains("expired") && j.what.contains("no longer hot")));
    let plan = &rig.state.plans[&id];
    assert_eq!(plan.state, PlanState::Expired);
    assert!(matches!(
        rig.state.moves[&plan.moves[0]].state,
        MoveState::Skipped { .. }
    ));
    let obs = rig.observation();
    let err = approve(&mut rig.state, &id, &obs, &rig.settings, rig.now).expect_err("expired");
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn approving_a_proposal_whose_premise_vanished_expires_it() {
    let mut rig = Rig::new(hot_pair(), mode(Mode::Recommend));
    rig.looks(3);
    let id = rig.plans(PlanState::Proposed)[0].id.clone();
    // The destination's agent stops answering before the next look.
    rig.cluster.h("h2").reachable = false;
    let obs = rig.observation();
    let err = approve(&mut rig.state, &id, &obs, &rig.settings, rig.now).expect_err("stale");
    match err {
        ControlError::Expired { why, journal, .. } => {
            assert!(why.contains("h2 is unreachable"), "{why}");
            assert!(!journal.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.state.plans[&id].state, PlanState::Expired);
}

#[test]
fn dry_run_records_and_never_acts() {
    let cluster = hot_pair().host("h3", 4.0, 32);
    let settings = ControlSettings {
        mode: Mode::DryRun,
        min_on_s: 0.0,
        ..ControlSettings::default()
    };
    let mut rig = Rig::new(cluster, settings);
    let actions = rig.looks(130);
    assert!(actions.is_empty(), "{actions:?}");
    let recorded = rig.plans(PlanState::Recorded);
    let relief = recorded
        .iter()
        .filter(|p| p.kind == crate::control::PlanKind::Relief)
        .count();
    // Recorded at t=3, then again once a consolidation interval while it stays hot.
    assert_eq!(relief, 3, "t=3, 63, 123");
    for p in &recorded {
        for m in &p.moves {
            assert_eq!(rig.state.moves[m].state, MoveState::Planned);
        }
    }
    // h2 (0.25) is cold: its consolidation into h3 is recorded too, with its standby.
    assert!(recorded.iter().any(|p| p.standby == vec!["h2".to_string()]));
}

#[test]
fn cancelling_a_plan_cancels_planned_moves_and_asks_to_cancel_running_ones() {
    // h1 must shed two VMs; migrations are slow, so the second waits for the first.
    let mut cluster = Cluster::new().host("h1", 4.0, 64).host("h2", 8.0, 64);
    for i in 0..6 {
        cluster = cluster.vm("h1", &format!("v{i}"), 0.7, 2);
    }
    let mut rig = Rig::new(cluster, quiet());
    rig.migrate_looks = 20;
    rig.looks(4);
    let id = rig.plans(PlanState::Approved)[0].id.clone();
    let out = cancel_plan(&mut rig.state, &id, rig.now).expect("cancel");
    assert!(matches!(out.actions.as_slice(), [Action::Cancel { .. }]));
    let plan = &rig.state.plans[&id];
    assert_eq!(plan.state, PlanState::Cancelled);
    let states: Vec<&str> = plan
        .moves
        .iter()
        .map(|m| rig.state.moves[m].state.name())
        .collect();
    assert_eq!(states, vec!["running", "cancelled"]);
    assert!(cancel_plan(&mut rig.state, &id, rig.now).is_err(), "final");
    assert!(matches!(
        cancel_plan(&mut rig.state, "p-none", rig.now),
        Err(ControlError::UnknownPlan(_))
    ));
}
