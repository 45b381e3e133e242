//! A migration record's life, as an explicit state machine: the source agent's run and its
//! restart reconciliation change a record only through [`apply`], and an event that makes no
//! sense in the record's state is a typed [`TransitionError`] that leaves it as it was.
//!
//! ```text
//!  preparing ──started──> running ──ended (measure)──> measuring ──measured──> completed
//!      │                  │  │  └──ended──────────────────────────────────────> | failed
//!      └──failed──> failed│  └──failed──> failed                                | cancelled
//!                         └──switched──> running (vm_on_destination)            | paused
//!  preparing | running ──reconciled (after a restart)──> any final state
//!  measuring ──measure cut (after a restart)──> the outcome's final state
//!  (`ended` with a failed or paused outcome is final at once, measured or not: a pause is
//!  never hidden behind `measuring`, so its resume starts at once)
//!  failed | paused (vm_on_destination) ──settled──> completed
//!  failed | paused (vm_on_destination) ──abandoned (the operator)──> abandoned
//! ```
//!
//! `settled`: a post-copy that ended failed or paused here, whose destination QEMU then said
//! its incoming side completed and runs the guest (every page arrived): the migration did
//! complete, and the source's end becomes a note.
//!
//! `abandoned`: a split post-copy whose destination QEMU died, given up by the operator
//! (`abandon.rs`): the guest is lost, `error` says why and what was kept; the earlier error
//! becomes a note. Final: it holds the VM no more.
//!
//! Invariants kept here: once post-copy has started (`switched`) the record says the guest is
//! on the destination, and nothing later says otherwise; `error` is set only on a migration
//! that did not complete (an error seen along the way of one that did is a note).
//! Notes (clean-up problems, restarts) are not transitions: they may be added in any state.

use drover_api::{MigrationRecord, MigrationState, MigrationUri};
use drover_core::migration::{EndStatus, MigrationPlan, MigrationResult};
use thiserror::Error;

/// What happens to a migration record.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordEvent {
    /// The destination is ready: QEMU migrates over `uri` following `plan`; `recover_uri`
    /// is where the destination listens to recover a paused post-copy.
    Started {
        plan: MigrationPlan,
        uri: MigrationUri,
        recover_uri: MigrationUri,
    },
    /// Preparing or driving failed before QEMU reported an outcome; the VM stays on the source.
    Failed { error: String },
    /// The source QEMU's migration entered post-copy: from now on the guest runs on the
    /// destination (persisted at once, not only at the end).
    Switched,
    /// The driver finished. With `measure`, the workload is sampled for the after-window
    /// before the record is final (not after a failure: there is nothing to compare).
    Ended {
        status: EndStatus,
        vm_on_destination: bool,
        plan: MigrationPlan,
        error: Option<String>,
        result: MigrationResult,
        measure: bool,
    },
    /// The after-window is over: the record's final result.
    Measured { result: MigrationResult },
    /// After an agent restart: what became of a migration that was preparing or running.
    Reconciled {
        state: MigrationState,
        vm_on_destination: bool,
        error: Option<String>,
    },
    /// After an agent restart during measuring: the windows are cut short.
    MeasureCut,
    /// A post-copy that ended failed or paused here was completed by the destination (its
    /// QEMU says the incoming migration completed and the guest runs): `how` says what was
    /// seen, for the notes. `completed_now`: it was seen completing just now (a resumed
    /// post-copy), so the record's end and total time move to now; otherwise (settled later,
    /// on a delete) the end stays when QEMU first stopped. `transferred_bytes`: the source
    /// QEMU's final count, which covers what a resumed post-copy sent after the pause.
    Settled {
        how: String,
        completed_now: bool,
        transferred_bytes: Option<u64>,
    },
    /// A split post-copy given up: its destination QEMU died, the guest is lost. `reason`
    /// becomes the record's error (what died, what was kept).
    Abandoned { reason: String },
}

impl RecordEvent {
    fn name(&self) -> &'static str {
        match self {
            RecordEvent::Started { .. } => "started",
            RecordEvent::Failed { .. } => "failed",
            RecordEvent::Switched => "switched",
            RecordEvent::Ended { .. } => "ended",
            RecordEvent::Measured { .. } => "measured",
            RecordEvent::Reconciled { .. } => "reconciled",
            RecordEvent::MeasureCut => "measure-cut",
            RecordEvent::Settled { .. } => "settled",
            RecordEvent::Abandoned { .. } => "abandoned",
        }
    }
}

/// An event that makes no sense in the record's state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("migration {id}: event '{event}' is not valid in state '{state:?}'")]
pub struct TransitionError {
    pub id: String,
    pub state: MigrationState,
    pub event: &'static str,
}

/// The record state an end status leaves.
pub fn final_state(s: EndStatus) -> MigrationState {
    match s {
        EndStatus::Completed => MigrationState::Completed,
        EndStatus::Failed => MigrationState::Failed,
        EndStatus::Cancelled => MigrationState::Cancelled,
        EndStatus::Paused => MigrationState::Paused,
    }
}

/// Whether the migration still has its VM on the source: while it runs, and after a post-copy
/// that did not complete (paused part-way, or failed after the switch): the source QEMU then
/// holds the rest of the guest's memory and must be neither deleted nor migrated again.
pub fn holds_vm(r: &MigrationRecord) -> bool {
    let released = matches!(
        r.state,
        MigrationState::Completed | MigrationState::Abandoned
    );
    !r.state.is_final() || r.state == MigrationState::Paused || (r.vm_on_destination && !released)
}

/// Puts `error` where it belongs: on the record of a migration that did not complete, in the
/// notes of one that did.
fn place_error(r: &mut MigrationRecord, error: Option<String>) {
    match (r.state, error) {
        (MigrationState::Completed | MigrationState::Measuring, Some(e)) => {
            let completed = r
                .result
                .as_ref()
                .is_none_or(|res| res.status == EndStatus::Completed);
            if completed {
                r.notes
                    .push(format!("seen during the migration, which completed: {e}"));
                r.error = None;
            } else {
                r.error = Some(e);
            }
        }
        (_, error) => r.error = error,
    }
}

/// Applies `event` to `r` at `now_unix_ms`; on error `r` is unchanged.
///
/// # Errors
/// [`TransitionError`] when the event is not valid in `r`'s state.
pub fn apply(
    r: &mut MigrationRecord,
    event: RecordEvent,
    now_unix_ms: u64,
) -> Result<(), TransitionError> {
    use MigrationState as S;
    use RecordEvent as E;
    let refuse = |r: &MigrationRecord, e: &RecordEvent| TransitionError {
        id: r.id.clone(),
        state: r.state,
        event: e.name(),
    };
    match (r.state, event) {
        (
            S::Preparing,
            E::Started {
                plan,
                uri,
                recover_uri,
            },
        ) => {
            r.state = S::Running;
            r.plan = Some(plan);
            r.uri = Some(uri);
            r.recover_uri = Some(recover_uri);
        }
        (S::Running, E::Switched) => r.vm_on_destination = true,
        (S::Preparing | S::Running, E::Failed { error }) => {
            r.state = S::Failed;
            r.error = Some(error);
            r.ended_unix_ms = Some(now_unix_ms);
        }
        (
            S::Running,
            E::Ended {
                status,
                vm_on_destination,
                plan,
                error,
                result,
                measure,
            },
        ) => {
            // A pause is never hidden behind `measuring`: the record says `paused` at once, so
            // the run's resume (and an operator) see it (`run.rs`).
            r.state = if measure && !matches!(status, EndStatus::Failed | EndStatus::Paused) {
                S::Measuring
            } else {
                final_state(status)
            };
            r.plan = Some(plan);
            r.vm_on_destination |= vm_on_destination;
            r.ended_unix_ms = Some(now_unix_ms);
            r.result = Some(result);
            place_error(r, error);
        }
        (S::Measuring, E::Measured { result }) => {
            r.state = final_state(result.status);
            r.result = Some(result);
        }
        (S::Measuring, E::MeasureCut) => {
            r.state = r
                .result
                .as_ref()
                .map_or(S::Interrupted, |res| final_state(res.status));
        }
        (
            S::Preparing | S::Running,
            E::Reconciled {
                state,
                vm_on_destination,
                error,
            },
        ) if state.is_final() => {
            r.state = state;
            r.vm_on_destination |= vm_on_destination;
            r.ended_unix_ms = Some(now_unix_ms);
            let error = error.or(r.error.take());
            place_error(r, error);
        }
        (
            S::Failed | S::Paused,
            E::Settled {
                how,
                completed_now,
                transferred_bytes,
            },
        ) if r.vm_on_destination => {
            let ended = r.state;
            r.state = S::Completed;
            if completed_now {
                r.ended_unix_ms = Some(now_unix_ms);
            }
            let total_ms = now_unix_ms.saturating_sub(r.started_unix_ms);
            if let Some(res) = r.result.as_mut() {
                res.status = EndStatus::Completed;
                res.converged = false;
                res.error = None;
                if completed_now {
                    res.total_ms = total_ms;
                }
                if let Some(bytes) = transferred_bytes {
                    res.transferred_bytes = bytes;
                }
            }
            let ended = format!("{ended:?}").to_lowercase();
            r.notes
                .push(format!("ended {ended} here, then settled: {how}"));
            let error = r.error.take();
            place_error(r, error);
        }
        (S::Failed | S::Paused, E::Abandoned { reason }) if r.vm_on_destination => {
            let ended = format!("{:?}", r.state).to_lowercase();
            if let Some(before) = r.error.take() {
                r.notes.push(format!("ended {ended} here with: {before}"));
            }
            r.state = S::Abandoned;
            r.error = Some(reason);
        }
        (_, event) => return Err(refuse(r, &event)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::migration::Technique;

    fn record() -> MigrationRecord {
        super::super::test_record(MigrationState::Preparing, false)
    }

    fn result(status: EndStatus) -> MigrationResult {
        MigrationResult {
            technique: Technique::Postcopy,
            chosen: Technique::Postcopy,
            reason: "requested".into(),
            status,
            converged: true,
            total_ms: 500,
            downtime_ms: Some(5),
            switchover_ms: Some(40),
            transferred_bytes: 1,
            precopy_rounds: 1,
            postcopy_requests: 0,
            throughput_before: None,
            throughput_during: None,
            throughput_after: None,
            degradation_pct: None,
            restored_ms: None,
            agility_s: None,
            integrity_errors: 0,
            watchdog_action: "none".into(),
            error: None,
        }
    }

    fn started() -> RecordEvent {
        RecordEvent::Started {
            plan: MigrationPlan::fixed(Technique::Postcopy),
            uri: "tcp:198.18.0.3:4000".parse().expect("uri"),
            recover_uri: "tcp:198.18.0.3:4001".parse().expect("uri"),
        }
    }

    fn ended(status: EndStatus, measure: bool) -> RecordEvent {
        RecordEvent::Ended {
            status,
            vm_on_destination: status == EndStatus::Completed,
            plan: MigrationPlan::fixed(Technique::Postcopy),
            error: None,
            result: result(status),
            measure,
        }
    }

    #[test]
    fn a_measured_migration_goes_through_every_state() {
        let mut r = record();
        apply(&mut r, started(), 2).expect("started");
        assert_eq!(r.state, MigrationState::Running);
        apply(&mut r, ended(EndStatus::Completed, true), 3).expect("ended");
        assert_eq!(r.state, MigrationState::Measuring);
        assert_eq!(r.ended_unix_ms, Some(3));
        apply(
            &mut r,
            RecordEvent::Measured {
                result: result(EndStatus::Completed),
            },
            9,
        )
        .expect("measured");
        assert_eq!(r.state, MigrationState::Completed);
        assert_eq!(
            r.ended_unix_ms,
            Some(3),
            "the migration ended when QEMU said so"
        );
    }

    #[test]
    fn a_failure_is_final_at_once_and_a_pause_is_kept() {
        let mut r = record();
        apply(&mut r, started(), 2).expect("started");
        apply(&mut r, ended(EndStatus::Failed, true), 3).expect("ended");
        assert_eq!(r.state, MigrationState::Failed, "nothing to measure");
        // The user's measured post-copy cut after the switch: paused at once, not measuring.
        let mut m = record();
        apply(&mut m, started(), 2).expect("started");
        apply(&mut m, ended(EndStatus::Paused, true), 3).expect("ended");
        assert_eq!(m.state, MigrationState::Paused, "a pause is not measured");
        let mut p = record();
        apply(&mut p, started(), 2).expect("started");
        apply(&mut p, ended(EndStatus::Paused, false), 3).expect("ended");
        assert_eq!(p.state, MigrationState::Paused);
    }

    #[test]
    fn bad_transitions_are_typed_and_change_nothing() {
        let mut r = record();
        let before = r.clone();
        let err = apply(&mut r, ended(EndStatus::Completed, false), 2).expect_err("not running");
        assert_eq!((err.state, err.event), (MigrationState::Preparing, "ended"));
        assert_eq!(r, before);
        apply(
            &mut r,
            RecordEvent::Failed {
                error: "destination unreachable".into(),
            },
            2,
        )
        .expect("failed");
        for e in [started(), RecordEvent::MeasureCut] {
            assert!(apply(&mut r, e, 3).is_err());
        }
        let mut r = record();
        let err = apply(
            &mut r,
            RecordEvent::Reconciled {
                state: MigrationState::Running,
                vm_on_destination: false,
                error: None,
            },
            2,
        )
        .expect_err("a reconciliation ends the record");
        assert_eq!(err.event, "reconciled");
    }

    /// The reviewer's record: `completed` with a top-level "QMP I/O error" from a link blip
    /// on the destination. The error is kept, as a note.
    #[test]
    fn a_completed_migration_has_no_error_only_notes() {
        for measure in [true, false] {
            let mut r = record();
            apply(&mut r, started(), 2).expect("started");
            let RecordEvent::Ended {
                status,
                vm_on_destination,
                plan,
                result,
                ..
            } = ended(EndStatus::Completed, measure)
            else {
                unreachable!()
            };
            let blip = "QMP I/O error: connection reset by peer".to_string();
            let event = RecordEvent::Ended {
                status,
                vm_on_destination,
                plan,
                error: Some(blip.clone()),
                result,
                measure,
            };
            apply(&mut r, event, 3).expect("ended");
            assert_eq!(r.error, None, "measure {measure}");
            assert!(r.notes.iter().any(|n| n.contains(&blip)), "{:?}", r.notes);
        }
        // A migration that did not complete keeps its error where it was.
        let mut r = record();
        apply(&mut r, started(), 2).expect("started");
        let mut failed = ended(EndStatus::Failed, true);
        if let RecordEvent::Ended { error, .. } = &mut failed {
            *error = Some("destination died".into());
        }
        apply(&mut r, failed, 3).expect("ended");
        assert_eq!(r.error.as_deref(), Some("destination died"));
        // After a restart too.
        let mut r = record();
        apply(&mut r, started(), 2).expect("started");
        let event = RecordEvent::Reconciled {
            state: MigrationState::Completed,
            vm_on_destination: true,
            error: Some("lost sight of the destination once".into()),
        };
        apply(&mut r, event, 3).expect("reconciled");
        assert_eq!(
            (r.state, r.error.as_deref()),
            (MigrationState::Completed, None)
        );
        assert_eq!(r.notes.len(), 1);
    }

    /// Post-copy started: the record says so at once, and no later event takes it back.
    #[test]
    fn the_switch_is_recorded_when_it_happens_and_holds_the_vm() {
        let mut r = record();
        assert!(
            apply(&mut r, RecordEvent::Switched, 1).is_err(),
            "not running yet"
        );
        apply(&mut r, started(), 2).expect("started");
        assert!(!r.vm_on_destination && holds_vm(&r));
        apply(&mut r, RecordEvent::Switched, 3).expect("switched");
        assert!(r.vm_on_destination);
        assert_eq!(r.state, MigrationState::Running);
        apply(&mut r, RecordEvent::Switched, 4).expect("idempotent");
        let mut paused = ended(EndStatus::Paused, false);
        if let RecordEvent::Ended {
            vm_on_destination, ..
        } = &mut paused
        {
            *vm_on_destination = false;
        }
        apply(&mut r, paused, 5).expect("ended");
        assert_eq!(r.state, MigrationState::Paused);
        assert!(r.vm_on_destination, "the guest did switch");
        assert!(holds_vm(&r), "a paused post-copy keeps the source VM");
        let mut done = record();
        apply(&mut done, started(), 2).expect("started");
        apply(&mut done, ended(EndStatus::Completed, false), 3).expect("ended");
        assert!(!holds_vm(&done));
        let mut cancelled = record();
        apply(&mut cancelled, started(), 2).expect("started");
        apply(&mut cancelled, ended(EndStatus::Cancelled, false), 3).expect("ended");
        assert!(!holds_vm(&cancelled));
    }

    /// The reviewer's record: failed with "paused by the user" after the switch, the guest
    /// whole on the destination. Settled, it is completed and no longer holds the source VM;
    /// a migration whose guest never left cannot be settled.
    #[test]
    fn a_split_record_the_destination_completed_settles_completed() {
        for end in [EndStatus::Failed, EndStatus::Paused] {
            let mut r = record();
            apply(&mut r, started(), 2).expect("started");
            apply(&mut r, RecordEvent::Switched, 3).expect("switched");
            let mut ev = ended(end, false);
            if let RecordEvent::Ended { error, .. } = &mut ev {
                *error = Some("Postcopy migration is paused by the user".into());
            }
            apply(&mut r, ev, 4).expect("ended");
            assert!(holds_vm(&r));
            let how = RecordEvent::Settled {
                how: "the destination's QEMU completed".into(),
                completed_now: false,
                transferred_bytes: None,
            };
            apply(&mut r, how, 5).expect("settled");
            assert_eq!(
                (r.state, r.error.as_deref()),
                (MigrationState::Completed, None)
            );
            assert_eq!(
                r.result.as_ref().map(|x| x.status),
                Some(EndStatus::Completed)
            );
            assert!(
                r.notes.iter().any(|n| n.contains("paused by the user")),
                "{:?}",
                r.notes
            );
            assert!(!holds_vm(&r));
            assert_eq!(
                r.ended_unix_ms,
                Some(4),
                "the migration ended when QEMU said so"
            );
        }
        let mut home = record();
        apply(&mut home, started(), 2).expect("started");
        apply(&mut home, ended(EndStatus::Failed, false), 3).expect("ended");
        let before = home.clone();
        let settled = RecordEvent::Settled {
            how: "x".into(),
            completed_now: false,
            transferred_bytes: None,
        };
        let err = apply(&mut home, settled, 4).expect_err("the guest never left");
        assert_eq!(err.event, "settled");
        assert_eq!(home, before);
    }

    /// A post-copy resumed after its pause and seen completing: the record's end, total time
    /// and bytes are the whole migration's, not the first run's.
    #[test]
    fn a_resumed_postcopy_settles_with_the_whole_migrations_figures() {
        let mut r = record();
        r.started_unix_ms = 1_000;
        apply(&mut r, started(), 1_000).expect("started");
        apply(&mut r, RecordEvent::Switched, 1_500).expect("switched");
        apply(&mut r, ended(EndStatus::Paused, false), 9_000).expect("ended");
        let settled = RecordEvent::Settled {
            how: "resumed and completed".into(),
            completed_now: true,
            transferred_bytes: Some(268_435_456),
        };
        apply(&mut r, settled, 61_000).expect("settled");
        assert_eq!(r.ended_unix_ms, Some(61_000));
        let res = r.result.as_ref().expect("result");
        assert_eq!((res.total_ms, res.transferred_bytes), (60_000, 268_435_456));
        assert_eq!(res.status, EndStatus::Completed);
    }

    /// A split post-copy given up: final, its VM released, the reason the record's error, the
    /// error before it a note; a migration whose guest never left cannot be abandoned.
    #[test]
    fn a_split_record_can_be_abandoned_and_then_holds_nothing() {
        let mut r = record();
        apply(&mut r, started(), 2).expect("started");
        apply(&mut r, RecordEvent::Switched, 3).expect("switched");
        let mut ev = ended(EndStatus::Paused, false);
        if let RecordEvent::Ended { error, .. } = &mut ev {
            *error = Some("stream stalled".into());
        }
        apply(&mut r, ev, 4).expect("ended");
        let abandon = |why: &str| RecordEvent::Abandoned {
            reason: why.to_string(),
        };
        apply(&mut r, abandon("the destination's QEMU died"), 5).expect("abandoned");
        assert_eq!(r.state, MigrationState::Abandoned);
        assert!(r.state.is_final() && !holds_vm(&r));
        assert_eq!(r.error.as_deref(), Some("the destination's QEMU died"));
        assert!(r
            .notes
            .iter()
            .any(|n| n == "ended paused here with: stream stalled"));
        let err = apply(&mut r, abandon("again"), 6).expect_err("once");
        assert_eq!(
            (err.state, err.event),
            (MigrationState::Abandoned, "abandoned")
        );
        let mut home = record();
        apply(&mut home, started(), 2).expect("started");
        apply(&mut home, ended(EndStatus::Failed, false), 3).expect("ended");
        let before = home.clone();
        assert!(
            apply(&mut home, abandon("x"), 4).is_err(),
            "the guest never left"
        );
        assert_eq!(home, before);
    }

    #[test]
    fn a_restart_while_measuring_keeps_the_outcome() {
        let mut r = record();
        apply(&mut r, started(), 2).expect("started");
        apply(&mut r, ended(EndStatus::Cancelled, true), 3).expect("ended");
        apply(&mut r, RecordEvent::MeasureCut, 4).expect("cut");
        assert_eq!(r.state, MigrationState::Cancelled);
    }
}
