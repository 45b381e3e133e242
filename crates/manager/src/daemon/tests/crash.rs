//! Crash safety on the SQLite store: the manager killed between stored and acted, between
//! acted and recorded, after recorded, and at every stage of a longer plan, then restarted
//! from the same file (opened again) with the same agents; an agent that vanishes mid-move;
//! a command whose write fails.

use super::*;
use crate::daemon::{LookError, Stage};
use crate::store::{Retention, SqliteStore};
use drover_core::control::{MoveState, PlanKind};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use tempfile::TempDir;

fn open(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open_in(dir, Retention::default()).expect("open the store"))
}

/// The three-host cluster on a SQLite file in a temporary directory.
fn sqlite_rig() -> (Rig, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = cluster(open(dir.path()));
    (rig, dir)
}

/// A manager that dies: its loop and handle are dropped, the file is opened afresh (what a
/// new process finds), the agents and the clock go on.
fn restart(
    rig: &mut Rig,
    dir: &TempDir,
    dead: (Daemon<FakeFleet>, Manager),
) -> (Daemon<FakeFleet>, Manager) {
    drop(dead);
    rig.store = open(dir.path());
    rig.start()
}

/// Dies at `stage` of the first look that asks for a migration not asked before (by id),
/// once per id, across restarts.
fn die_once_per_move(stage: Stage, seen: Arc<Mutex<BTreeSet<String>>>) -> super::super::CrashHook {
    Box::new(move |at, actions| {
        if at != stage {
            return false;
        }
        let mut seen = seen.lock().expect("seen");
        let mut fresh = false;
        for a in actions {
            if let Action::Migrate { move_id, .. } = a {
                fresh |= seen.insert(move_id.clone());
            }
        }
        fresh
    })
}

fn migrate_calls(rig: &Rig) -> usize {
    rig.fleet
        .calls()
        .iter()
        .filter(|c| c.starts_with("migrate "))
        .count()
}

/// Looks until a plan is made and its migration is asked for; the crash hook decides
/// whether the look that asks dies.
async fn until_killed(rig: &Rig, daemon: &mut Daemon<FakeFleet>) -> Stage {
    for _ in 0..MAX_LOOKS {
        match next_look(rig, daemon).await {
            Ok(_) => {}
            Err(LookError::Crashed(stage)) => return stage,
            Err(e) => panic!("look: {e}"),
        }
    }
    panic!("the manager was never killed");
}

#[tokio::test]
async fn killed_after_storing_the_move_before_asking_it_is_asked_once_after_restart() {
    let (mut rig, dir) = sqlite_rig();
    let mut running = rig.start();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    running
        .0
        .crash_at(die_once_per_move(Stage::Persisted, seen));
    rig.fleet.set_demand("a", 2.5);
    assert_eq!(until_killed(&rig, &mut running.0).await, Stage::Persisted);
    assert!(rig.fleet.migrations().is_empty(), "died before asking");
    let stored = rig.moves();
    assert_eq!(stored.len(), 1);
    assert!(
        matches!(stored[0].state, MoveState::Requested { .. }),
        "stored requested"
    );
    let id = stored[0].id.clone();

    let (mut daemon, manager) = restart(&mut rig, &dir, running);
    assert!(
        matches!(daemon.state().moves[&id].state, MoveState::Requested { .. }),
        "the memory is read back from the file"
    );
    let first = next_look(&rig, &mut daemon).await.expect("look");
    assert_eq!(
        migrates(&first).len(),
        1,
        "the requested move is asked again"
    );
    assert_eq!(migrates(&first)[0].0, id, "with the same id");
    looks_until(&rig, &mut daemon, all_final).await;

    let plans = rig.plans();
    assert_eq!(plans.len(), 1, "no second plan for the same overload");
    assert_eq!(plans[0].state, PlanState::Done);
    let started = rig.fleet.migrations();
    assert_eq!(started.len(), 1);
    assert_eq!(started[&id].requests, 1, "started once");
    assert_eq!(rig.states(&id), ["requested", "running", "done"]);
    let history = manager.vm_history("a", 0.0).await.expect("history");
    assert!(
        history.seconds.len() > 3,
        "the samples from before the crash are kept"
    );
}

#[tokio::test]
async fn killed_after_asking_before_recording_the_running_migration_is_found_not_restarted() {
    let (mut rig, dir) = sqlite_rig();
    rig.fleet.set_migration_time(10.0);
    let mut running = rig.start();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    running.0.crash_at(die_once_per_move(Stage::Acted, seen));
    rig.fleet.set_demand("a", 2.5);
    assert_eq!(until_killed(&rig, &mut running.0).await, Stage::Acted);
    let asked = migrate_calls(&rig);
    assert_eq!(asked, 1);
    let id = rig.moves()[0].id.clone();
    assert!(
        matches!(rig.moves()[0].state, MoveState::Requested { .. }),
        "outcome not stored"
    );

    let (mut daemon, _manager) = restart(&mut rig, &dir, running);
    let first = next_look(&rig, &mut daemon).await.expect("look");
    assert!(
        migrates(&first).is_empty(),
        "the agent reports it running: not asked again"
    );
    assert!(matches!(
        daemon.state().moves[&id].state,
        MoveState::Running { .. }
    ));
    looks_until(&rig, &mut daemon, all_final).await;
    assert_eq!(migrate_calls(&rig), 1, "never asked twice");
    assert_eq!(rig.fleet.migrations()[&id].requests, 1);
    assert_eq!(rig.plans()[0].state, PlanState::Done);
}

#[tokio::test]
async fn down_while_the_migration_ended_the_restarted_manager_records_it_done() {
    let (mut rig, dir) = sqlite_rig();
    let mut running = rig.start();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    running.0.crash_at(die_once_per_move(Stage::Acted, seen));
    rig.fleet.set_demand("a", 2.5);
    until_killed(&rig, &mut running.0).await;
    let m = rig.moves()[0].clone();
    // The manager stays down for a minute; the migration (3 s) ends meanwhile.
    rig.clock.advance(60.0);
    let (mut daemon, _manager) = restart(&mut rig, &dir, running);
    let first = next_look(&rig, &mut daemon).await.expect("look");
    assert!(migrates(&first).is_empty());
    assert!(matches!(
        daemon.state().moves[&m.id].state,
        MoveState::Done { .. }
    ));
    assert!(
        rig.store.migration(&m.id).expect("result").is_some(),
        "the agent's record is kept"
    );
    assert_eq!(rig.fleet.host_of(&m.vm).as_deref(), Some(m.to.as_str()));
    looks_until(&rig, &mut daemon, all_final).await;
    assert_eq!(rig.fleet.migrations()[&m.id].requests, 1);
}

/// Drains h1 (three VMs, one migration out of it at a time) while the manager is killed at
/// `stage` of each look that first asks for a move; every VM leaves exactly once.
async fn drain_killed_at(stage: Stage) {
    let (mut rig, dir) = sqlite_rig();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let mut running = rig.start();
    next_look(&rig, &mut running.0).await.expect("look");
    let h = running.1.clone();
    call(&mut running.0, async move { h.drain("h1").await })
        .await
        .expect("drain");
    running.0.crash_at(die_once_per_move(stage, seen.clone()));
    let mut crashes = 0;
    for _ in 0..MAX_LOOKS {
        if all_final(&rig) && rig.fleet.host_of("a").as_deref() != Some("h1") {
            break;
        }
        match next_look(&rig, &mut running.0).await {
            Ok(_) => {}
            Err(LookError::Crashed(at)) => {
                assert_eq!(at, stage);
                crashes += 1;
                running = restart(&mut rig, &dir, running);
                running.0.crash_at(die_once_per_move(stage, seen.clone()));
            }
            Err(e) => panic!("look: {e}"),
        }
    }
    let moves = rig.moves();
    assert_eq!(crashes, moves.len(), "killed once per move ({stage:?})");
    assert!(moves.len() >= 3, "{moves:?}");
    for vm in ["a", "b", "c"] {
        let host = rig.fleet.host_of(vm).expect("the VM runs");
        assert_ne!(host, "h1", "{vm} left the drained host ({stage:?})");
        let done: Vec<_> = moves
            .iter()
            .filter(|m| m.vm == vm && matches!(m.state, MoveState::Done { .. }))
            .collect();
        assert_eq!(done.len(), 1, "{vm} moved once ({stage:?}): {moves:?}");
    }
    let started = rig.fleet.migrations();
    assert_eq!(started.len(), moves.len(), "one migration per move");
    assert!(
        started.values().all(|m| m.requests == 1),
        "nothing started twice ({stage:?}): {started:?}"
    );
    assert!(rig.plans().iter().all(|p| p.kind == PlanKind::Drain));
    assert!(rig.plans().iter().all(|p| p.state == PlanState::Done));
}

#[tokio::test]
async fn a_drain_killed_after_each_move_is_stored_moves_each_vm_once() {
    drain_killed_at(Stage::Persisted).await;
}

#[tokio::test]
async fn a_drain_killed_after_each_move_is_asked_moves_each_vm_once() {
    drain_killed_at(Stage::Acted).await;
}

#[tokio::test]
async fn a_drain_killed_after_each_outcome_is_stored_moves_each_vm_once() {
    drain_killed_at(Stage::Recorded).await;
}

/// A relief whose migration (30 s) is under way when its source agent stops answering.
async fn source_goes_dark(rig: &Rig, daemon: &mut Daemon<FakeFleet>) -> drover_core::control::Move {
    rig.fleet.set_migration_time(30.0);
    rig.fleet.set_demand("a", 2.5);
    looks_until(rig, daemon, |r| !r.fleet.migrations().is_empty()).await;
    next_look(rig, daemon).await.expect("look");
    let m = rig.moves()[0].clone();
    assert!(matches!(
        daemon.state().moves[&m.id].state,
        MoveState::Running { .. }
    ));
    rig.fleet.set_answering("h1", false);
    let asked = migrate_calls(rig);
    for _ in 0..5 {
        next_look(rig, daemon).await.expect("look");
    }
    assert!(
        matches!(daemon.state().moves[&m.id].state, MoveState::Running { .. }),
        "a move whose source is unreachable waits: neither lost nor done"
    );
    assert_eq!(migrate_calls(rig), asked, "nothing asked of a dark agent");
    assert_eq!(rig.plans().len(), 1, "no new plan for the dark host's VMs");
    m
}

#[tokio::test]
async fn an_agent_that_vanishes_mid_move_and_returns_with_it_finished_is_recorded_done() {
    let (mut rig, dir) = sqlite_rig();
    let mut running = rig.start();
    let m = source_goes_dark(&rig, &mut running.0).await;
    // The manager restarts meanwhile, too.
    let (mut daemon, manager) = restart(&mut rig, &dir, running);
    next_look(&rig, &mut daemon).await.expect("look");
    let h1 = manager.hosts().await.into_iter().find(|h| h.name == "h1");
    assert!(h1.is_some_and(|h| !h.reachable));
    rig.clock.advance(40.0);
    rig.fleet.set_answering("h1", true);
    next_look(&rig, &mut daemon).await.expect("look");
    assert!(matches!(
        daemon.state().moves[&m.id].state,
        MoveState::Done { .. }
    ));
    looks_until(&rig, &mut daemon, all_final).await;
    assert_eq!(rig.plans()[0].state, PlanState::Done);
    assert_eq!(rig.fleet.migrations()[&m.id].requests, 1);
}

#[tokio::test]
async fn an_agent_that_vanishes_mid_move_and_returns_without_its_outcome_loses_the_move() {
    let (rig, _dir) = sqlite_rig();
    let (mut daemon, manager) = rig.start();
    let m = source_goes_dark(&rig, &mut daemon).await;
    rig.fleet.restart_agent("h1");
    rig.fleet.set_answering("h1", true);
    next_look(&rig, &mut daemon).await.expect("look");
    let lost = &daemon.state().moves[&m.id].state;
    assert!(matches!(lost, MoveState::Lost { .. }), "{lost:?}");
    let plan = manager.plan(&m.plan).await.expect("plan");
    assert_eq!(plan.state, PlanState::Failed, "a lost move fails its plan");
    assert_eq!(
        rig.fleet.host_of(&m.vm).as_deref(),
        Some("h1"),
        "the VM stayed"
    );
    // h1 is still hot: the next looks plan afresh, with a new move and a new migration id.
    looks_until(&rig, &mut daemon, |r| r.fleet.migrations().len() == 2).await;
    looks_until(&rig, &mut daemon, all_final).await;
    let moves = rig.moves();
    assert_eq!(moves.len(), 2);
    assert_ne!(moves[0].id, moves[1].id);
    assert!(matches!(moves[1].state, MoveState::Done { .. }));
    assert!(rig.fleet.migrations().values().all(|m| m.requests == 1));
    assert_eq!(rig.states(&m.id), ["requested", "running", "lost"]);
}

#[tokio::test]
async fn a_cancel_that_cannot_be_stored_asks_nothing_and_changes_nothing() {
    let store = Arc::new(crate::store::MemoryStore::new());
    let rig = cluster(store.clone());
    rig.fleet.set_migration_time(30.0);
    let (mut daemon, manager) = rig.start();
    rig.fleet.set_demand("a", 2.5);
    looks_until(&rig, &mut daemon, |r| !r.fleet.migrations().is_empty()).await;
    let plan = rig.plans()[0].clone();
    let before = daemon.state().clone();
    store.fail_writes(true);
    let h = manager.clone();
    let id = plan.id.clone();
    let refused = call(&mut daemon, async move { h.cancel_plan(&id).await }).await;
    assert!(
        matches!(refused, Err(ManagerError::Store(_))),
        "{refused:?}"
    );
    assert!(
        !rig.fleet.calls().iter().any(|c| c.starts_with("cancel ")),
        "no cancel went out"
    );
    assert_eq!(daemon.state(), &before, "the memory held is the stored one");
    assert_eq!(rig.plans()[0].state, PlanState::Approved);

    store.fail_writes(false);
    let h = manager.clone();
    let id = plan.id.clone();
    call(&mut daemon, async move { h.cancel_plan(&id).await })
        .await
        .expect("cancelled");
    assert!(rig.fleet.calls().iter().any(|c| c.starts_with("cancel ")));
    assert_eq!(rig.plans()[0].state, PlanState::Cancelled);
    next_look(&rig, &mut daemon).await.expect("look");
    let m = &rig.moves()[0];
    assert!(
        matches!(m.state, MoveState::Cancelled { .. }),
        "{:?}",
        m.state
    );
    assert_eq!(rig.fleet.host_of(&m.vm).as_deref(), Some("h1"));
}
