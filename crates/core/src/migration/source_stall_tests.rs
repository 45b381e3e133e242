//! The post-copy stall watchdog and the run's time budget, through the source machine.

use super::*;
use crate::migration::progress::RamProgress;

const MIB: u64 = 1 << 20;

fn poll(now_ms: u64, status: MigrationStatus, transferred: u64) -> SourceEvent {
    SourceEvent::Progress(Progress {
        now_ms,
        status: Some(status),
        ram: Some(RamProgress {
            transferred,
            remaining: 100 * MIB,
            total: 256 * MIB,
            dirty_sync_count: 2,
            postcopy_requests: 0,
        }),
        ..Progress::default()
    })
}

/// A post-copy plan with a 10 s stall limit, past `migrate` and into post-copy at 100 ms.
fn in_postcopy() -> SourceMachine {
    let mut plan = MigrationPlan::fixed(Technique::Postcopy);
    plan.postcopy_stall_ms = 10_000;
    let mut m = SourceMachine::new(plan);
    m.handle(SourceEvent::Configured).expect("configured");
    assert_eq!(
        m.handle(SourceEvent::MigrateIssued { now_ms: 0 }),
        Ok(vec![SourceAction::StartPostcopy])
    );
    m.handle(poll(100, MigrationStatus::PostcopyActive, 10 * MIB))
        .expect("valid");
    assert_eq!(m.state().name(), "postcopy");
    m
}

fn outcome(m: &SourceMachine) -> &SourceOutcome {
    m.outcome().expect("done")
}

#[test]
fn a_stalled_postcopy_is_paused_and_reported_paused() {
    let mut m = in_postcopy();
    let active = MigrationStatus::PostcopyActive;
    assert_eq!(m.handle(poll(5_000, active, 20 * MIB)), Ok(vec![]));
    assert_eq!(m.handle(poll(14_999, active, 20 * MIB)), Ok(vec![]));
    assert_eq!(
        m.handle(poll(15_000, active, 20 * MIB)),
        Ok(vec![SourceAction::Pause])
    );
    assert_eq!(m.state().name(), "pausing");
    assert_eq!(
        m.handle(SourceEvent::CancelRequested { now_ms: 15_010 }),
        Err(SourceError::CannotCancelInPostcopy)
    );
    // QEMU has not switched yet: wait, ask nothing more.
    assert_eq!(m.handle(poll(15_020, active, 20 * MIB)), Ok(vec![]));
    // Our own pause: no recovery asked for, the run ends paused.
    assert_eq!(
        m.handle(poll(15_050, MigrationStatus::PostcopyPaused, 20 * MIB)),
        Ok(vec![])
    );
    let o = outcome(&m);
    assert_eq!(o.status, EndStatus::Paused);
    assert!(o.vm_on_destination && !o.converged);
    let error = o.error.as_deref().unwrap_or("");
    assert!(error.contains("moved no byte for 10 s"), "{error}");
    assert!(error.contains("migrate-recover"), "{error}");
    assert_eq!(o.last.transferred(), 20 * MIB);
    assert_eq!(o.watchdog_actions, vec![WatchdogAction::PauseStalled]);
}

#[test]
fn a_slow_but_moving_postcopy_is_never_paused() {
    let mut m = in_postcopy();
    // One page a minute for an hour: slow, but moving.
    for minute in 1..=60u64 {
        let actions = m
            .handle(poll(
                minute * 60_000,
                MigrationStatus::PostcopyActive,
                10 * MIB + minute * 4096,
            ))
            .expect("valid");
        assert!(actions.is_empty(), "minute {minute}: {actions:?}");
    }
    assert_eq!(m.state().name(), "postcopy");
}

#[test]
fn a_refused_pause_goes_back_to_postcopy_under_a_fresh_window() {
    let mut m = in_postcopy();
    let active = MigrationStatus::PostcopyActive;
    assert_eq!(
        m.handle(poll(10_100, active, 10 * MIB)),
        Ok(vec![SourceAction::Pause])
    );
    assert_eq!(
        m.handle(SourceEvent::CommandFailed {
            command: "migrate-pause".into(),
            message: "not in post-copy".into(),
            now_ms: 10_110,
        }),
        Ok(vec![])
    );
    assert_eq!(m.state().name(), "postcopy");
    assert_eq!(m.handle(poll(10_200, active, 10 * MIB)), Ok(vec![]));
    assert_eq!(m.handle(poll(20_199, active, 10 * MIB)), Ok(vec![]));
    assert_eq!(
        m.handle(poll(20_200, active, 10 * MIB)),
        Ok(vec![SourceAction::Pause])
    );
}

#[test]
fn completion_wins_a_race_with_the_pause() {
    let mut m = in_postcopy();
    m.handle(poll(10_100, MigrationStatus::PostcopyActive, 10 * MIB))
        .expect("valid");
    assert_eq!(m.state().name(), "pausing");
    m.handle(poll(10_150, MigrationStatus::Completed, 256 * MIB))
        .expect("valid");
    assert_eq!(outcome(&m).status, EndStatus::Completed);
}

#[test]
fn a_recovery_restarts_the_stall_window() {
    let mut m = in_postcopy();
    assert_eq!(
        m.handle(poll(9_000, MigrationStatus::PostcopyPaused, 10 * MIB)),
        Ok(vec![SourceAction::Recover])
    );
    m.handle(SourceEvent::RecoveryIssued { now_ms: 9_500 })
        .expect("valid");
    let active = MigrationStatus::PostcopyActive;
    // 10 s after the start of post-copy, but not 10 s after the recovery.
    assert_eq!(m.handle(poll(12_000, active, 10 * MIB)), Ok(vec![]));
    assert_eq!(m.handle(poll(21_999, active, 10 * MIB)), Ok(vec![]));
    assert_eq!(
        m.handle(poll(22_000, active, 10 * MIB)),
        Ok(vec![SourceAction::Pause])
    );
}

#[test]
fn a_spent_budget_cancels_a_precopy_and_the_guest_stays() {
    let mut m = SourceMachine::new(MigrationPlan::fixed(Technique::Hybrid));
    m.handle(SourceEvent::Configured).expect("configured");
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    assert_eq!(
        m.handle(SourceEvent::BudgetSpent { now_ms: 200_000 }),
        Ok(vec![SourceAction::Cancel])
    );
    // Spent again while cancelling: nothing new.
    assert_eq!(
        m.handle(SourceEvent::BudgetSpent { now_ms: 200_010 }),
        Ok(vec![])
    );
    m.handle(poll(200_050, MigrationStatus::Cancelled, 5 * MIB))
        .expect("valid");
    let o = outcome(&m);
    assert_eq!(o.status, EndStatus::Cancelled);
    assert!(!o.vm_on_destination);
    assert!(o.error.as_deref().unwrap_or("").contains("time budget"));
}

#[test]
fn a_spent_budget_pauses_a_postcopy_and_never_cancels_it() {
    let mut m = in_postcopy();
    assert_eq!(
        m.handle(SourceEvent::BudgetSpent { now_ms: 1_000 }),
        Ok(vec![SourceAction::Pause])
    );
    m.handle(poll(1_050, MigrationStatus::PostcopyPaused, 10 * MIB))
        .expect("valid");
    let o = outcome(&m);
    assert_eq!(o.status, EndStatus::Paused);
    assert!(o.vm_on_destination);
    assert!(o.error.as_deref().unwrap_or("").contains("time budget"));

    // Already paused by a network failure: left paused, no recovery, no cancel.
    let mut m = in_postcopy();
    m.handle(poll(500, MigrationStatus::PostcopyPaused, 10 * MIB))
        .expect("valid");
    assert_eq!(
        m.handle(SourceEvent::BudgetSpent { now_ms: 1_000 }),
        Ok(vec![])
    );
    assert_eq!(outcome(&m).status, EndStatus::Paused);
}

#[test]
fn an_unconfirmed_stop_fails_with_the_guest_where_it_was() {
    let mut m = in_postcopy();
    m.handle(SourceEvent::BudgetSpent { now_ms: 1_000 })
        .expect("valid");
    m.handle(SourceEvent::StopUnconfirmed { now_ms: 11_000 })
        .expect("valid");
    let o = outcome(&m);
    assert_eq!(o.status, EndStatus::Failed);
    assert!(
        o.vm_on_destination,
        "post-copy: the guest is on the destination"
    );

    let mut m = SourceMachine::new(MigrationPlan::fixed(Technique::Precopy));
    m.handle(SourceEvent::Configured).expect("configured");
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    m.handle(SourceEvent::BudgetSpent { now_ms: 1_000 })
        .expect("valid");
    m.handle(SourceEvent::StopUnconfirmed { now_ms: 11_000 })
        .expect("valid");
    let o = outcome(&m);
    assert_eq!(o.status, EndStatus::Failed);
    assert!(!o.vm_on_destination);
    // A refused pause sent post-copy back to work: still ends, still on the destination.
    let mut m = in_postcopy();
    m.handle(SourceEvent::StopUnconfirmed { now_ms: 1 })
        .expect("valid");
    let o = outcome(&m);
    assert_eq!(o.status, EndStatus::Failed);
    assert!(o.vm_on_destination);
    // Before `migrate` there is nothing to stop.
    let mut m = SourceMachine::new(MigrationPlan::fixed(Technique::Precopy));
    assert!(matches!(
        m.handle(SourceEvent::StopUnconfirmed { now_ms: 1 }),
        Err(SourceError::InvalidTransition { .. })
    ));
}

#[test]
fn the_budget_deadline_follows_qemus_ram_size() {
    let mut m = SourceMachine::new(MigrationPlan::fixed(Technique::Precopy));
    assert_eq!(m.budget_deadline_ms(), None);
    assert_eq!(m.handle(SourceEvent::BudgetSpent { now_ms: 5 }), Ok(vec![]));
    assert_eq!(outcome(&m).status, EndStatus::Failed, "never started");

    let mut m = SourceMachine::new(MigrationPlan::fixed(Technique::Precopy));
    m.handle(SourceEvent::Configured).expect("configured");
    m.handle(SourceEvent::MigrateIssued { now_ms: 1_000 })
        .expect("issued");
    let plan = m.plan().clone();
    assert_eq!(m.budget_deadline_ms(), Some(1_000 + plan.time_budget_ms(0)));
    m.handle(poll(1_100, MigrationStatus::Active, MIB))
        .expect("valid");
    assert_eq!(
        m.budget_deadline_ms(),
        Some(1_000 + plan.time_budget_ms(256 * MIB))
    );
    m.handle(poll(1_200, MigrationStatus::Completed, 300 * MIB))
        .expect("valid");
    assert_eq!(m.budget_deadline_ms(), None);
}

/// A poll with `remaining` as given.
fn poll_left(now_ms: u64, transferred: u64, remaining: u64) -> SourceEvent {
    let SourceEvent::Progress(mut p) = poll(now_ms, MigrationStatus::PostcopyActive, transferred)
    else {
        unreachable!()
    };
    if let Some(r) = p.ram.as_mut() {
        r.remaining = remaining;
    }
    SourceEvent::Progress(p)
}

/// The reviewer's run, after the link came back: every page sent (`remaining` 0), QEMU
/// completing with its counter flat for longer than the stall limit. No pause: it completes.
#[test]
fn a_postcopy_with_nothing_left_to_send_is_never_paused() {
    let mut m = in_postcopy();
    assert_eq!(m.handle(poll_left(5_000, 200 * MIB, 0)), Ok(vec![]));
    assert_eq!(m.handle(poll_left(30_000, 200 * MIB, 0)), Ok(vec![]));
    assert_eq!(m.state().name(), "postcopy");
    m.handle(poll(30_100, MigrationStatus::Completed, 200 * MIB))
        .expect("valid");
    let o = outcome(&m);
    assert_eq!(o.status, EndStatus::Completed);
    assert!(o.watchdog_actions.is_empty());
}

/// A pause that catches QEMU past its last page: QEMU fails the migration with "paused by
/// the user". Failed (QEMU cannot recover a failed migration), the guest on the destination,
/// the stall named as the cause and in the watchdog actions, never QEMU's words alone.
#[test]
fn a_pause_qemu_turns_into_a_failure_names_the_stall() {
    let mut m = in_postcopy();
    assert_eq!(
        m.handle(poll(10_100, MigrationStatus::PostcopyActive, 10 * MIB)),
        Ok(vec![SourceAction::Pause])
    );
    let SourceEvent::Progress(mut failed) = poll(10_200, MigrationStatus::Failed, 10 * MIB) else {
        unreachable!()
    };
    failed.error = Some("Postcopy migration is paused by the user".into());
    m.handle(SourceEvent::Progress(failed)).expect("valid");
    let o = outcome(&m).clone();
    assert_eq!(o.status, EndStatus::Failed);
    assert!(o.vm_on_destination);
    assert_eq!(o.watchdog_actions, vec![WatchdogAction::PauseStalled]);
    let error = o.error.as_deref().unwrap_or("");
    assert!(error.contains("moved no byte for 10 s"), "{error}");
    assert!(error.contains("paused by the user"), "{error}");
    // The destination then says it completed: the migration did.
    assert_eq!(
        m.handle(SourceEvent::DestinationCompleted { now_ms: 11_000 }),
        Ok(vec![])
    );
    let done = outcome(&m);
    assert_eq!(done.status, EndStatus::Completed);
    assert!(done.vm_on_destination && !done.converged);
    assert_eq!(done.ended_ms, 11_000);
    let note = done.error.as_deref().unwrap_or("");
    assert!(note.contains("ended the migration failed"), "{note}");
    assert!(note.contains("paused by the user"), "{note}");
    // Once only, and never for a run whose guest did not switch.
    assert_eq!(
        m.handle(SourceEvent::DestinationCompleted { now_ms: 12_000 }),
        Err(SourceError::NotSplit)
    );
}

#[test]
fn a_destination_cannot_complete_a_migration_that_never_switched() {
    let mut m = SourceMachine::new(MigrationPlan::fixed(Technique::Precopy));
    m.handle(SourceEvent::Configured).expect("configured");
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("started");
    m.handle(poll(100, MigrationStatus::Failed, MIB))
        .expect("valid");
    let before = outcome(&m).clone();
    assert_eq!(
        m.handle(SourceEvent::DestinationCompleted { now_ms: 200 }),
        Err(SourceError::NotSplit)
    );
    assert_eq!(outcome(&m), &before);
    // And while running it is no event at all.
    let mut r = in_postcopy();
    assert!(matches!(
        r.handle(SourceEvent::DestinationCompleted { now_ms: 200 }),
        Err(SourceError::InvalidTransition { .. })
    ));
}
