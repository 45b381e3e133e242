use super::*;
use crate::migration::progress::RamProgress;
use crate::migration::watchdog::{ThrottleKind, WatchdogPolicy};

const MIB: u64 = 1 << 20;

fn progress(
    now_ms: u64,
    status: MigrationStatus,
    sync: u64,
    transferred: u64,
    remaining: u64,
) -> SourceEvent {
    SourceEvent::Progress(Progress {
        now_ms,
        status: Some(status),
        ram: Some(RamProgress {
            transferred,
            remaining,
            total: 256 * MIB,
            dirty_sync_count: sync,
            postcopy_requests: 0,
        }),
        ..Progress::default()
    })
}

fn started(plan: MigrationPlan) -> SourceMachine {
    let mut m = SourceMachine::new(plan);
    assert_eq!(
        m.handle(SourceEvent::Configured),
        Ok(vec![SourceAction::Migrate])
    );
    m
}

fn status(m: &SourceMachine) -> EndStatus {
    m.outcome().expect("done").status
}

#[test]
fn precopy_normal_path_converges() {
    let mut m = started(MigrationPlan::fixed(Technique::Precopy));
    assert_eq!(
        m.handle(SourceEvent::MigrateIssued { now_ms: 0 }),
        Ok(vec![])
    );
    assert_eq!(
        m.handle(progress(
            50,
            MigrationStatus::Active,
            1,
            10 * MIB,
            246 * MIB
        )),
        Ok(vec![])
    );
    assert_eq!(
        m.handle(progress(900, MigrationStatus::Active, 2, 256 * MIB, MIB)),
        Ok(vec![])
    );
    assert_eq!(
        m.handle(progress(950, MigrationStatus::Completed, 3, 257 * MIB, 0)),
        Ok(vec![])
    );
    let o = m.outcome().expect("done");
    assert_eq!(o.status, EndStatus::Completed);
    assert!(o.converged && o.vm_on_destination);
    assert_eq!(o.ended_ms - o.started_ms, 950);
}

#[test]
fn postcopy_asks_to_switch_at_once_and_completes() {
    let mut m = started(MigrationPlan::fixed(Technique::Postcopy));
    assert_eq!(
        m.handle(SourceEvent::MigrateIssued { now_ms: 10 }),
        Ok(vec![SourceAction::StartPostcopy])
    );
    assert_eq!(
        m.handle(progress(
            60,
            MigrationStatus::PostcopyActive,
            2,
            MIB,
            200 * MIB
        )),
        Ok(vec![])
    );
    assert_eq!(m.state().name(), "postcopy");
    assert_eq!(
        m.handle(progress(600, MigrationStatus::Completed, 2, 256 * MIB, 0)),
        Ok(vec![])
    );
    let o = m.outcome().expect("done");
    assert_eq!(o.postcopy_started_ms, Some(60));
    assert!(o.vm_on_destination);
}

#[test]
fn hybrid_switches_after_configured_rounds() {
    let mut m = started(MigrationPlan::fixed(Technique::Hybrid));
    assert_eq!(
        m.handle(SourceEvent::MigrateIssued { now_ms: 0 }),
        Ok(vec![])
    );
    assert_eq!(
        m.handle(progress(
            100,
            MigrationStatus::Active,
            1,
            100 * MIB,
            156 * MIB
        )),
        Ok(vec![])
    );
    // First pass done (second sync): switch.
    assert_eq!(
        m.handle(progress(
            200,
            MigrationStatus::Active,
            2,
            256 * MIB,
            120 * MIB
        )),
        Ok(vec![SourceAction::StartPostcopy])
    );
    // Asked once only.
    assert_eq!(
        m.handle(progress(
            250,
            MigrationStatus::Active,
            2,
            260 * MIB,
            110 * MIB
        )),
        Ok(vec![])
    );
}

#[test]
fn hybrid_switches_at_ram_fraction() {
    let mut plan = MigrationPlan::fixed(Technique::Hybrid);
    plan.hybrid.ram_fraction = 0.5;
    plan.hybrid.max_rounds = 10;
    let mut m = started(plan);
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    assert_eq!(
        m.handle(progress(
            100,
            MigrationStatus::Active,
            1,
            100 * MIB,
            156 * MIB
        )),
        Ok(vec![])
    );
    assert_eq!(
        m.handle(progress(
            200,
            MigrationStatus::Active,
            1,
            130 * MIB,
            126 * MIB
        )),
        Ok(vec![SourceAction::StartPostcopy])
    );
}

fn escalate(plan: MigrationPlan) -> (SourceMachine, Vec<SourceAction>) {
    let mut m = started(plan);
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    let mut all = Vec::new();
    for sync in 1..=12u64 {
        let actions = m
            .handle(progress(
                sync * 1000,
                MigrationStatus::Active,
                sync,
                sync * 100 * MIB,
                128 * MIB,
            ))
            .expect("valid");
        all.extend(actions);
    }
    (m, all)
}

#[test]
fn watchdog_escalates_in_order_then_cancels_at_deadline() {
    let mut plan = MigrationPlan::fixed(Technique::Precopy);
    plan.watchdog.switch_to_postcopy = true;
    plan.watchdog.deadline_ms = 100_000;
    let (_, actions) = escalate(plan.clone());
    let expected_throttle = plan.throttle_parameters(ThrottleKind::AutoConverge);
    assert_eq!(
        actions,
        vec![
            SourceAction::SetParameters(ParameterUpdate {
                downtime_limit_ms: Some(1000),
                ..ParameterUpdate::default()
            }),
            SourceAction::SetParameters(expected_throttle),
            SourceAction::StartPostcopy,
        ]
    );
}

#[test]
fn deadline_cancels_and_vm_stays_on_source() {
    let mut plan = MigrationPlan::fixed(Technique::Precopy);
    plan.watchdog = WatchdogPolicy {
        deadline_ms: 5_500,
        ..WatchdogPolicy::default()
    };
    let (mut m, actions) = escalate(plan);
    assert_eq!(actions.last(), Some(&SourceAction::Cancel));
    assert_eq!(m.state().name(), "cancelling");
    m.handle(progress(13_000, MigrationStatus::Cancelled, 12, 0, 0))
        .expect("valid");
    let o = m.outcome().expect("done");
    assert_eq!(o.status, EndStatus::Cancelled);
    assert!(!o.vm_on_destination && !o.converged);
    assert_eq!(o.watchdog_actions.last(), Some(&WatchdogAction::Cancel));
    assert!(o.error.as_deref().unwrap_or("").contains("deadline"));
}

#[test]
fn completion_after_escalation_is_not_converged() {
    let mut plan = MigrationPlan::fixed(Technique::Precopy);
    plan.watchdog.deadline_ms = 100_000;
    let (mut m, _) = escalate(plan);
    m.handle(progress(13_000, MigrationStatus::Completed, 13, 0, 0))
        .expect("valid");
    let o = m.outcome().expect("done");
    assert_eq!(o.status, EndStatus::Completed);
    assert!(!o.converged);
    assert!(!o.watchdog_actions.is_empty());
}

#[test]
fn cancel_on_request_in_precopy() {
    let mut m = started(MigrationPlan::fixed(Technique::Precopy));
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    assert_eq!(
        m.handle(SourceEvent::CancelRequested { now_ms: 5 }),
        Ok(vec![SourceAction::Cancel])
    );
    assert_eq!(
        m.handle(SourceEvent::CancelRequested { now_ms: 6 }),
        Ok(vec![])
    );
    m.handle(progress(100, MigrationStatus::Cancelling, 1, 0, 0))
        .expect("valid");
    m.handle(progress(150, MigrationStatus::Cancelled, 1, 0, 0))
        .expect("valid");
    assert_eq!(status(&m), EndStatus::Cancelled);
}

#[test]
fn cancel_racing_completion_reports_completion() {
    let mut m = started(MigrationPlan::fixed(Technique::Precopy));
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    m.handle(SourceEvent::CancelRequested { now_ms: 5 })
        .expect("valid");
    m.handle(progress(100, MigrationStatus::Completed, 2, 0, 0))
        .expect("valid");
    assert_eq!(status(&m), EndStatus::Completed);
}

#[test]
fn cannot_cancel_in_postcopy() {
    let mut m = started(MigrationPlan::fixed(Technique::Postcopy));
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    m.handle(progress(50, MigrationStatus::PostcopyActive, 2, MIB, MIB))
        .expect("valid");
    assert_eq!(
        m.handle(SourceEvent::CancelRequested { now_ms: 60 }),
        Err(SourceError::CannotCancelInPostcopy)
    );
    assert_eq!(m.state().name(), "postcopy");
}

#[test]
fn postcopy_pause_asks_for_recovery_then_resumes() {
    let mut m = started(MigrationPlan::fixed(Technique::Postcopy));
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    m.handle(progress(50, MigrationStatus::PostcopyActive, 2, MIB, MIB))
        .expect("valid");
    assert_eq!(
        m.handle(progress(80, MigrationStatus::PostcopyPaused, 2, MIB, MIB)),
        Ok(vec![SourceAction::Recover])
    );
    assert_eq!(m.state().name(), "postcopy-paused");
    m.handle(SourceEvent::RecoveryIssued { now_ms: 90 })
        .expect("valid");
    // QEMU still says paused right after: no second recovery yet.
    assert_eq!(
        m.handle(progress(100, MigrationStatus::PostcopyPaused, 2, MIB, MIB)),
        Ok(vec![])
    );
    m.handle(progress(120, MigrationStatus::PostcopyRecover, 2, MIB, MIB))
        .expect("valid");
    m.handle(progress(200, MigrationStatus::PostcopyActive, 2, MIB, MIB))
        .expect("valid");
    m.handle(progress(400, MigrationStatus::Completed, 2, MIB, 0))
        .expect("valid");
    assert_eq!(status(&m), EndStatus::Completed);
}

#[test]
fn recovery_gives_up_after_max_and_never_claims_vm_on_source() {
    let mut plan = MigrationPlan::fixed(Technique::Postcopy);
    plan.max_recoveries = 1;
    let mut m = started(plan);
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    m.handle(progress(50, MigrationStatus::PostcopyPaused, 2, MIB, MIB))
        .expect("valid");
    m.handle(SourceEvent::RecoveryIssued { now_ms: 60 })
        .expect("valid");
    m.handle(progress(70, MigrationStatus::PostcopyPaused, 2, MIB, MIB))
        .expect("valid");
    assert!(m.outcome().is_none(), "within the grace period");
    m.handle(progress(
        60 + RECOVERY_GRACE_MS,
        MigrationStatus::PostcopyPaused,
        2,
        MIB,
        MIB,
    ))
    .expect("valid");
    let o = m.outcome().expect("done");
    assert_eq!(o.status, EndStatus::Paused);
    assert!(o.vm_on_destination);
    assert!(o.error.as_deref().unwrap_or("").contains("recover"));
}

#[test]
fn failure_in_precopy_leaves_vm_on_source() {
    let mut m = started(MigrationPlan::fixed(Technique::Precopy));
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    let mut p = Progress {
        now_ms: 100,
        status: Some(MigrationStatus::Failed),
        ..Progress::default()
    };
    p.error = Some("Unable to write to socket: Broken pipe".into());
    m.handle(SourceEvent::Progress(p)).expect("valid");
    let o = m.outcome().expect("done");
    assert_eq!(o.status, EndStatus::Failed);
    assert!(!o.vm_on_destination);
    assert!(o.error.as_deref().unwrap_or("").contains("Broken pipe"));
}

#[test]
fn failed_commands_at_every_step() {
    // Before start: nothing to undo.
    let mut m = SourceMachine::new(MigrationPlan::fixed(Technique::Precopy));
    let failed = |c: &str| SourceEvent::CommandFailed {
        command: c.into(),
        message: "boom".into(),
        now_ms: 1,
    };
    assert_eq!(m.handle(failed("migrate-set-capabilities")), Ok(vec![]));
    assert_eq!(status(&m), EndStatus::Failed);
    // `migrate` refused.
    let mut m = started(MigrationPlan::fixed(Technique::Precopy));
    assert_eq!(m.handle(failed("migrate")), Ok(vec![]));
    assert_eq!(status(&m), EndStatus::Failed);
    // A parameter tweak failing mid-way is tolerated.
    let mut m = started(MigrationPlan::fixed(Technique::Precopy));
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    assert_eq!(m.handle(failed("migrate-set-parameters")), Ok(vec![]));
    assert_eq!(m.state().name(), "precopy");
    // Start-postcopy refused: cancel so the VM stays home.
    assert_eq!(
        m.handle(failed("migrate-start-postcopy")),
        Ok(vec![SourceAction::Cancel])
    );
    assert_eq!(status(&m), EndStatus::Failed);
    // Recovery failing in post-copy: failed, VM on destination.
    let mut m = started(MigrationPlan::fixed(Technique::Postcopy));
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    m.handle(progress(50, MigrationStatus::PostcopyPaused, 2, MIB, MIB))
        .expect("valid");
    m.handle(failed("migrate-recover")).expect("valid");
    let o = m.outcome().expect("done");
    assert!(o.vm_on_destination);
    assert_eq!(
        o.status,
        EndStatus::Paused,
        "QEMU is still paused, so recoverable"
    );
}

#[test]
fn invalid_transitions_are_typed_and_leave_state_alone() {
    let mut m = SourceMachine::new(MigrationPlan::fixed(Technique::Precopy));
    assert_eq!(
        m.handle(SourceEvent::MigrateIssued { now_ms: 0 }),
        Err(SourceError::InvalidTransition {
            state: "ready",
            event: "migrate-issued"
        })
    );
    assert_eq!(m.state().name(), "ready");
    assert!(m
        .handle(progress(1, MigrationStatus::Active, 1, 0, 0))
        .is_err());
    m.handle(SourceEvent::CancelRequested { now_ms: 1 })
        .expect("valid");
    assert_eq!(
        m.handle(SourceEvent::Configured),
        Err(SourceError::AlreadyEnded)
    );
}

/// A poll as QEMU 10 answers once a migration has ended badly: a status and no RAM block.
fn bare(now_ms: u64, status: MigrationStatus) -> SourceEvent {
    SourceEvent::Progress(Progress {
        now_ms,
        status: Some(status),
        ..Progress::default()
    })
}

/// The record a finished machine gives.
fn record(m: &SourceMachine) -> crate::migration::MigrationResult {
    let outcome = m.outcome().expect("done");
    crate::migration::MigrationResult::assemble(&crate::migration::RunFacts {
        requested: Technique::Precopy,
        chosen: Technique::Precopy,
        reason: "test",
        outcome,
        dest_running_ms: None,
        pause_ms: None,
        samples: &[],
    })
}

#[test]
fn every_end_keeps_the_last_figures_qemu_reported() {
    type Ending = fn(&mut SourceMachine);
    let endings: [(EndStatus, Ending); 4] = [
        (EndStatus::Cancelled, |m| {
            m.handle(SourceEvent::CancelRequested { now_ms: 3_100 })
                .expect("valid");
            m.handle(bare(3_150, MigrationStatus::Cancelling))
                .expect("valid");
            m.handle(bare(3_200, MigrationStatus::Cancelled))
                .expect("valid");
        }),
        (EndStatus::Cancelled, |m| {
            // Past the watchdog's deadline: it cancels, QEMU then reports no figures.
            let actions = m
                .handle(progress(
                    70_000,
                    MigrationStatus::Active,
                    3,
                    900 * MIB,
                    90 * MIB,
                ))
                .expect("valid");
            assert_eq!(actions, vec![SourceAction::Cancel]);
            m.handle(bare(70_100, MigrationStatus::Cancelled))
                .expect("valid");
        }),
        (EndStatus::Failed, |m| {
            m.handle(bare(3_200, MigrationStatus::Failed))
                .expect("valid");
        }),
        (EndStatus::Completed, |m| {
            m.handle(bare(3_200, MigrationStatus::Completed))
                .expect("valid");
        }),
    ];
    for (end, ending) in endings {
        let mut m = started(MigrationPlan::fixed(Technique::Precopy));
        m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
            .expect("issued");
        for (t, sync, sent) in [(1_000, 1, 300), (2_000, 2, 600), (3_000, 3, 900)] {
            m.handle(progress(
                t,
                MigrationStatus::Active,
                sync,
                sent * MIB,
                100 * MIB,
            ))
            .expect("valid");
        }
        ending(&mut m);
        assert_eq!(status(&m), end);
        let r = record(&m);
        assert!(r.transferred_bytes >= 900 * MIB, "{end:?}: {r:?}");
        assert_eq!(r.precopy_rounds, 3, "{end:?}");
    }
}

#[test]
fn a_smaller_counter_from_qemu_does_not_lower_the_record() {
    let mut m = started(MigrationPlan::fixed(Technique::Postcopy));
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    m.handle(progress(
        50,
        MigrationStatus::PostcopyActive,
        2,
        200 * MIB,
        MIB,
    ))
    .expect("valid");
    m.handle(progress(90, MigrationStatus::Completed, 1, 10 * MIB, 0))
        .expect("valid");
    let r = record(&m);
    assert_eq!((r.transferred_bytes, r.precopy_rounds), (200 * MIB, 2));
}

#[test]
fn no_escalation_lowers_the_operators_downtime_limit() {
    let knobs = crate::migration::PlanKnobs {
        downtime_limit_ms: 5_000,
        deadline_s: 100,
        ..crate::migration::PlanKnobs::default()
    };
    let plan = MigrationPlan::build(
        Technique::Precopy,
        &knobs,
        None,
        &crate::migration::CostParams::default(),
    );
    let (m, actions) = escalate(plan.clone());
    for a in &actions {
        if let SourceAction::SetParameters(p) = a {
            assert!(p.downtime_limit_ms.is_none_or(|ms| ms >= 5_000), "{a:?}");
        }
    }
    // The skipped step is not spent: the first stall throttles.
    assert_eq!(
        actions.first(),
        Some(&SourceAction::SetParameters(
            plan.throttle_parameters(ThrottleKind::AutoConverge)
        ))
    );
    assert_eq!(m.state().name(), "precopy");
}

fn lost(now_ms: u64) -> SourceEvent {
    SourceEvent::SourceLost {
        message: "QMP command 'query-migrate' timed out after 10000 ms".into(),
        now_ms,
    }
}

/// The reviewer's case: the source QEMU stops answering in the middle of a post-copy. The
/// guest runs on the destination, so the run ends with it there (both QEMUs kept), never as
/// a failure that would send the destination's copy away; a pre-copy that never asked to
/// switch leaves it home.
#[test]
fn a_lost_source_keeps_the_guest_wherever_it_may_run() {
    // Pre-copy, no switch asked for: QEMU cannot have moved the guest.
    let mut m = started(MigrationPlan::fixed(Technique::Precopy));
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    m.handle(progress(50, MigrationStatus::Active, 1, MIB, 200 * MIB))
        .expect("valid");
    assert_eq!(m.handle(lost(80)), Ok(vec![]));
    let o = m.outcome().expect("done");
    assert_eq!((o.status, o.vm_on_destination), (EndStatus::Failed, false));
    assert!(
        o.error.as_deref().unwrap_or("").contains("timed out"),
        "{o:?}"
    );

    // Post-copy asked for, its start not seen yet: the guest may be on the destination.
    let mut m = started(MigrationPlan::fixed(Technique::Postcopy));
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    assert_eq!(m.handle(lost(30)), Ok(vec![]));
    let o = m.outcome().expect("done");
    assert_eq!((o.status, o.vm_on_destination), (EndStatus::Failed, true));
    assert!(
        o.error.as_deref().unwrap_or("").contains("may run"),
        "{o:?}"
    );

    // In post-copy: failed, on the destination, both kept; and still settled as completed
    // once the destination says it has every page.
    let mut m = started(MigrationPlan::fixed(Technique::Postcopy));
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    m.handle(progress(50, MigrationStatus::PostcopyActive, 2, MIB, MIB))
        .expect("valid");
    assert_eq!(m.handle(lost(90)), Ok(vec![]), "no cancel, no resume");
    let o = m.outcome().expect("done");
    assert_eq!((o.status, o.vm_on_destination), (EndStatus::Failed, true));
    assert_eq!(o.postcopy_started_ms, Some(50));
    assert!(o
        .error
        .as_deref()
        .unwrap_or("")
        .contains("both QEMUs are kept"));
    m.handle(SourceEvent::DestinationCompleted { now_ms: 400 })
        .expect("settled");
    assert_eq!(status(&m), EndStatus::Completed);

    // Paused post-copy: stays paused (recoverable).
    let mut m = started(MigrationPlan::fixed(Technique::Postcopy));
    m.handle(SourceEvent::MigrateIssued { now_ms: 0 })
        .expect("issued");
    m.handle(progress(50, MigrationStatus::PostcopyPaused, 2, MIB, MIB))
        .expect("valid");
    m.handle(lost(90)).expect("valid");
    let o = m.outcome().expect("done");
    assert_eq!((o.status, o.vm_on_destination), (EndStatus::Paused, true));

    // Nothing to lose before `migrate`, or after the end.
    let mut m = started(MigrationPlan::fixed(Technique::Postcopy));
    assert!(m.handle(lost(5)).is_err());
    assert_eq!(m.state().name(), "configured");
}
