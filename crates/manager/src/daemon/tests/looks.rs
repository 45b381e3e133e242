//! The loop against the scripted fleet with the in-memory store.

use super::*;
use crate::clock::Clock;
use crate::fleet::Fleet;
use crate::store::{JournalQuery, MemoryStore};
use drover_core::control::{Mode, MoveState, Outcome, PlanKind};

fn memory_rig() -> (Rig, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    (cluster(store.clone()), store)
}

fn journal(rig: &Rig, subject: &str, id: &str) -> Vec<String> {
    let q = JournalQuery {
        subject: Some(subject.into()),
        id: Some(id.into()),
        limit: 1000,
        ..JournalQuery::default()
    };
    let rows = rig.store.journal(&q).expect("journal");
    rows.into_iter().map(|r| r.entry.what).collect()
}

#[tokio::test]
async fn an_overload_is_relieved_by_one_migration_with_the_moves_id() {
    let (rig, _) = memory_rig();
    let (mut daemon, manager) = rig.start();
    let first = next_look(&rig, &mut daemon).await.expect("look");
    assert!(first.actions.is_empty(), "h1 is busy, not hot");
    rig.fleet.set_demand("a", 2.5); // h1 wants 4 of its 4 cores
    let reports = looks_until(&rig, &mut daemon, |r| !r.plans().is_empty()).await;
    let made = reports.last().expect("a look made the plan");
    assert_eq!(made.new_plans.len(), 1);
    let plan = &rig.plans()[0];
    assert_eq!(plan.kind, PlanKind::Relief);
    assert_eq!(plan.explanation.host.as_deref(), Some("h1"));
    let asked = migrates(made);
    assert_eq!(asked.len(), 1, "{asked:?}");
    let (move_id, vm, to) = &asked[0];
    assert_eq!(
        plan.moves.as_slice(),
        std::slice::from_ref(move_id),
        "the migration's id is the move's"
    );
    assert_ne!(to, "h1");
    assert_eq!(
        made.outcomes,
        [Outcome::MigrateAccepted {
            move_id: move_id.clone()
        }]
    );
    let started = rig.fleet.migrations();
    assert_eq!(started[move_id].vm, *vm);
    assert!(
        matches!(
            daemon.state().moves[move_id].state,
            MoveState::Running { .. }
        ),
        "the outcome is recorded in the memory held"
    );

    looks_until(&rig, &mut daemon, all_final).await;
    let plan = &rig.plans()[0];
    assert_eq!(plan.state, PlanState::Done, "{:?}", plan.note);
    assert_eq!(rig.fleet.host_of(vm).as_deref(), Some(to.as_str()));
    assert_eq!(rig.fleet.migrations()[move_id].requests, 1);
    assert_eq!(rig.states(move_id), ["requested", "running", "done"]);
    assert!(rig.store.migration(move_id).expect("result").is_some());
    let decision = manager.decision(&plan.id).await.expect("decision");
    assert!(decision.reproduces(), "the stored decision replays");
    let status = manager.status().await;
    assert_eq!((status.moves_in_flight, status.plans_active), (0, 0));
    assert!(status.looks > 3);
}

#[tokio::test]
async fn an_agent_that_stops_answering_is_unreachable_after_three_misses_and_comes_back() {
    let (rig, _) = memory_rig();
    let (mut daemon, manager) = rig.start();
    next_look(&rig, &mut daemon).await.expect("look");
    rig.fleet.set_answering("h2", false);
    for miss in 1..=3 {
        next_look(&rig, &mut daemon).await.expect("look");
        let h2 = manager.hosts().await.into_iter().find(|h| h.name == "h2");
        let h2 = h2.expect("h2 is listed");
        assert_eq!((h2.answered, h2.misses), (false, miss));
        assert_eq!(h2.reachable, miss < 3, "miss {miss}");
        assert_eq!(h2.vms, ["d"], "its VMs are kept as last seen");
    }
    // h1 gets hot: h2 (with d, the best fit) takes nothing while unreachable.
    rig.fleet.set_demand("a", 2.5);
    let reports = looks_until(&rig, &mut daemon, |r| !r.plans().is_empty()).await;
    let asked = migrates(reports.last().expect("plan made"));
    assert!(asked.iter().all(|(_, _, to)| to == "h3"), "{asked:?}");
    assert_eq!(rig.fleet.host_of("d").as_deref(), Some("h2"));
    looks_until(&rig, &mut daemon, all_final).await;
    assert!(
        rig.moves().iter().all(|m| m.vm != "d"),
        "d is not presumed dead nor moved"
    );
    let vms = manager.vms().await;
    assert!(vms.iter().any(|v| v.name == "d" && v.host == "h2"));

    rig.fleet.set_answering("h2", true);
    next_look(&rig, &mut daemon).await.expect("look");
    let h2 = manager.hosts().await.into_iter().find(|h| h.name == "h2");
    assert!(h2.is_some_and(|h| h.reachable && h.answered));
    let lines = journal(&rig, "host", "h2");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("unreachable: 3 poll(s) missed")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "reachable again"), "{lines:?}");
}

#[tokio::test]
async fn recommend_mode_waits_for_approval_through_the_handle() {
    let (mut rig, _) = memory_rig();
    rig.settings.mode = Mode::Recommend;
    let (mut daemon, manager) = rig.start();
    rig.fleet.set_demand("a", 2.5);
    looks_until(&rig, &mut daemon, |r| !r.plans().is_empty()).await;
    for _ in 0..5 {
        let r = next_look(&rig, &mut daemon).await.expect("look");
        assert!(migrates(&r).is_empty(), "nothing moves before approval");
    }
    let proposed = manager
        .plans(PlanQuery {
            state: Some("proposed".into()),
            limit: 10,
            ..PlanQuery::default()
        })
        .await
        .expect("plans");
    assert_eq!(proposed.len(), 1);
    let id = proposed[0].id.clone();
    assert!(rig.fleet.migrations().is_empty());

    approve(&mut daemon, &manager, &id).await.expect("approved");
    assert_eq!(
        manager.plan(&id).await.expect("plan").state,
        PlanState::Approved
    );
    let again = approve(&mut daemon, &manager, &id).await;
    assert!(matches!(again, Err(ManagerError::Plan(_))), "{again:?}");
    let unknown = approve(&mut daemon, &manager, "p-none").await;
    assert!(matches!(unknown, Err(ManagerError::UnknownPlan(_))));

    let r = next_look(&rig, &mut daemon).await.expect("look");
    assert_eq!(migrates(&r).len(), 1, "the approved plan's move starts");
    looks_until(&rig, &mut daemon, all_final).await;
    assert_eq!(
        manager.plan(&id).await.expect("plan").state,
        PlanState::Done
    );
    let lines = journal(&rig, "plan", &id);
    assert!(lines.iter().any(|l| l == "approved"), "{lines:?}");
}

#[tokio::test]
async fn a_proposal_whose_premises_vanished_is_expired_not_approved() {
    let (mut rig, _) = memory_rig();
    rig.settings.mode = Mode::Recommend;
    let (mut daemon, manager) = rig.start();
    rig.fleet.set_demand("a", 2.5);
    looks_until(&rig, &mut daemon, |r| !r.plans().is_empty()).await;
    let id = rig.plans()[0].id.clone();
    let vm = rig.moves()[0].vm.clone();
    rig.fleet.remove_vm(&vm);
    next_look(&rig, &mut daemon).await.expect("look");
    let answer = approve(&mut daemon, &manager, &id).await;
    // The look saw the VM gone and expired the proposal, or the approval's own check did.
    assert!(
        matches!(
            answer,
            Err(ManagerError::Expired { .. }) | Err(ManagerError::Plan(_))
        ),
        "{answer:?}"
    );
    let plan = manager.plan(&id).await.expect("plan");
    assert_eq!(plan.state, PlanState::Expired, "stored expired");
    assert!(plan.note.is_some(), "the reason is kept");
    assert!(rig.fleet.migrations().is_empty());
}

#[tokio::test]
async fn drain_undrain_wake_and_settings_go_through_the_loop() {
    let (rig, _) = memory_rig();
    let (mut daemon, manager) = rig.start();
    next_look(&rig, &mut daemon).await.expect("look");
    let h = manager.clone();
    call(&mut daemon, async move { h.drain("h2").await })
        .await
        .expect("drain");
    looks_until(&rig, &mut daemon, |r| {
        r.fleet.host_of("d").as_deref() != Some("h2")
    })
    .await;
    assert!(manager
        .hosts()
        .await
        .iter()
        .any(|h| h.name == "h2" && h.drained));
    let h = manager.clone();
    call(&mut daemon, async move { h.undrain("h2").await })
        .await
        .expect("undrain");
    let h = manager.clone();
    let unknown = call(&mut daemon, async move { h.drain("h9").await }).await;
    assert!(matches!(unknown, Err(ManagerError::UnknownHost(_))));

    rig.fleet.set_standby("h3");
    let h = manager.clone();
    call(&mut daemon, async move { h.wake("h3").await })
        .await
        .expect("wake");
    assert!(rig.fleet.calls().contains(&"wake h3".to_string()));
    let h = manager.clone();
    let refused = call(&mut daemon, async move { h.wake("h9").await }).await;
    assert!(matches!(refused, Err(ManagerError::UnknownHost(_))));

    let h = manager.clone();
    let patched = call(&mut daemon, async move {
        h.patch_settings(serde_json::json!({"mode": "dry-run", "hot": 0.95}), Some(1))
            .await
    })
    .await
    .expect("patched");
    assert_eq!((patched.version, patched.settings.mode), (2, Mode::DryRun));
    let h = manager.clone();
    let stale = call(&mut daemon, async move {
        h.patch_settings(serde_json::json!({"hot": 0.8}), Some(1))
            .await
    })
    .await;
    assert!(matches!(
        stale,
        Err(ManagerError::SettingsConflict { found: 2, .. })
    ));
    let h = manager.clone();
    let auto = call(
        &mut daemon,
        async move { h.set_mode(Mode::Recommend).await },
    )
    .await
    .expect("mode");
    assert_eq!(
        (auto.version, auto.settings.mode, auto.settings.hot),
        (3, Mode::Recommend, 0.95)
    );
    let h = manager.clone();
    call(&mut daemon, async move { h.set_mode(Mode::DryRun).await })
        .await
        .expect("mode");
    for bad in [
        serde_json::json!({"hot": 5.0}),
        serde_json::json!({"hott": 1}),
    ] {
        let h = manager.clone();
        let r = call(
            &mut daemon,
            async move { h.patch_settings(bad, None).await },
        )
        .await;
        // A value out of range (422 over the API) or an unknown key (400): nothing changes.
        assert!(
            matches!(
                r,
                Err(ManagerError::Settings(_) | ManagerError::SettingsShape(_))
            ),
            "{r:?}"
        );
    }
    let stored = rig.store.settings().expect("settings").expect("stored");
    assert_eq!((stored.version, stored.settings.hot), (4, 0.95));
    assert_eq!(manager.status().await.mode, Some(Mode::DryRun));
}

#[tokio::test]
async fn a_store_write_failure_means_nothing_is_acted_on_that_look() {
    let (rig, store) = memory_rig();
    let (mut daemon, manager) = rig.start();
    rig.fleet.set_demand("a", 2.5);
    for _ in 0..2 {
        next_look(&rig, &mut daemon).await.expect("look");
    }
    // The third hot sample would make the plan: the store fails.
    store.fail_writes(true);
    let before = rig.clock.now_s();
    for n in 1..=3u32 {
        let err = next_look(&rig, &mut daemon).await.expect_err("write fails");
        assert!(matches!(err, super::super::LookError::Store(_)), "{err}");
        assert!(rig.fleet.calls().is_empty(), "nothing asked of the fleet");
        assert!(daemon.state().moves.is_empty(), "nothing unstored held");
        let wait = daemon.wake_at() - rig.clock.now_s();
        assert_eq!(wait, f64::from(1u32 << (n - 1)), "backoff doubles");
        assert_eq!(manager.status().await.store.failures_in_a_row, n);
    }
    assert!(rig.clock.now_s() > before);
    store.fail_writes(false);
    let reports = looks_until(&rig, &mut daemon, |r| !r.fleet.migrations().is_empty()).await;
    assert_eq!(migrates(reports.last().expect("look")).len(), 1);
    assert_eq!(manager.status().await.store.failures_in_a_row, 0);
    looks_until(&rig, &mut daemon, all_final).await;
    assert!(rig.fleet.migrations().values().all(|m| m.requests == 1));
}

#[tokio::test]
async fn an_outcome_that_cannot_be_stored_is_read_back_from_the_agent() {
    let (rig, store) = memory_rig();
    let (mut daemon, _manager) = rig.start();
    let failing = store.clone();
    // The step is stored and the migration asked; then the store fails before the outcome
    // is stored.
    daemon.crash_at(Box::new(move |stage, actions| {
        if stage == super::super::Stage::Persisted && !actions.is_empty() {
            failing.fail_writes(true);
        }
        false
    }));
    rig.fleet.set_demand("a", 2.5);
    let mut failed = false;
    for _ in 0..10 {
        if next_look(&rig, &mut daemon).await.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the outcome's write failed");
    let (id, m) = daemon
        .state()
        .moves
        .iter()
        .next()
        .expect("the move is held");
    assert!(matches!(m.state, MoveState::Requested { .. }), "as stored");
    let id = id.clone();
    daemon.crash = None;
    store.fail_writes(false);
    next_look(&rig, &mut daemon).await.expect("look");
    assert!(matches!(
        daemon.state().moves[&id].state,
        MoveState::Running { .. } | MoveState::Done { .. }
    ));
    looks_until(&rig, &mut daemon, all_final).await;
    assert_eq!(rig.fleet.migrations()[&id].requests, 1, "asked once");
}

#[tokio::test]
async fn the_loop_runs_on_its_own_until_shut_down() {
    let (rig, _) = memory_rig();
    let (daemon, manager) = rig.start();
    rig.fleet.set_demand("a", 2.5);
    let run = tokio::spawn(daemon.run());
    let mut done = false;
    for _ in 0..10_000 {
        tokio::task::yield_now().await;
        if all_final(&rig) {
            done = true;
            break;
        }
    }
    assert!(done, "the plan ends while the loop runs");
    manager.shutdown().await.expect("shutdown");
    run.await.expect("the loop ends");
    assert!(matches!(
        manager.approve("p").await,
        Err(ManagerError::Stopped)
    ));
    assert_eq!(rig.plans()[0].state, PlanState::Done);
    assert_eq!(rig.fleet.hosts().len(), 3);
}
