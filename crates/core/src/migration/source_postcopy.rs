//! The source machine once post-copy has started: the guest runs on the destination, so every
//! way out keeps it there (completed, paused and recoverable, or failed with the guest split),
//! never a restart on the source. Also a source QEMU lost from sight, whose answer depends on
//! whether post-copy had been asked for.

use super::{
    EndStatus, Next, PauseReason, Running, SourceAction, SourceMachine, SourceState, LEFT_PAUSED,
    RECOVERY_GRACE_MS,
};
use crate::migration::progress::{MigrationStatus, Progress};

/// `state` with `why`'s pause among its outcome's watchdog actions, when it is an end.
fn with_pause(state: SourceState, why: PauseReason) -> SourceState {
    match state {
        SourceState::Done(mut o) => {
            o.watchdog_actions.push(why.action());
            SourceState::Done(o)
        }
        s => s,
    }
}

impl SourceMachine {
    pub(super) fn postcopy_progress(&self, mut run: Running, p: Progress) -> Next {
        let p = run.record(p);
        let now = p.now_ms;
        run.postcopy_started_ms.get_or_insert(now);
        match p.status {
            Some(MigrationStatus::Completed) => (
                SourceState::Done(self.finish(run, EndStatus::Completed, now, None, true)),
                Ok(vec![]),
            ),
            Some(MigrationStatus::Failed) => {
                let err = p.error.or_else(|| Some("post-copy failed".to_string()));
                (
                    SourceState::Done(self.finish(run, EndStatus::Failed, now, err, true)),
                    Ok(vec![]),
                )
            }
            Some(MigrationStatus::PostcopyPaused) => self.paused_progress(run, p),
            _ if run
                .stall
                .observe(now, p.transferred(), p.ram.map(|r| r.remaining)) =>
            {
                let stall_ms = run.stall.stall_ms();
                (
                    SourceState::Pausing(run, PauseReason::Stalled { stall_ms }),
                    Ok(vec![SourceAction::Pause]),
                )
            }
            _ => (SourceState::Postcopy(run), Ok(vec![])),
        }
    }

    /// Post-copy paused by a network failure: recover, a bounded number of times, then leave it
    /// paused (still recoverable) and say so.
    pub(super) fn paused_progress(&self, mut run: Running, p: Progress) -> Next {
        let p = run.record(p);
        let now = p.now_ms;
        if p.status != Some(MigrationStatus::PostcopyPaused) {
            return self.postcopy_progress(run, p);
        }
        if run
            .last_recovery_ms
            .is_some_and(|t| now.saturating_sub(t) < RECOVERY_GRACE_MS)
        {
            return (SourceState::PostcopyPaused(run), Ok(vec![]));
        }
        if run.recoveries >= self.plan.max_recoveries {
            let err = format!(
                "post-copy paused and {} recoveries failed; {LEFT_PAUSED}",
                run.recoveries
            );
            let o = self.finish(run, EndStatus::Paused, now, Some(err), true);
            return (SourceState::Done(o), Ok(vec![]));
        }
        (
            SourceState::PostcopyPaused(run),
            Ok(vec![SourceAction::Recover]),
        )
    }

    /// `migrate-pause` asked for: QEMU's `postcopy-paused` ends the run paused. Whatever it
    /// ends in, the record's watchdog actions name the pause the driver asked for.
    pub(super) fn pausing_progress(&self, mut run: Running, why: PauseReason, p: Progress) -> Next {
        let p = run.record(p);
        let now = p.now_ms;
        let (status, error) = match p.status {
            Some(MigrationStatus::PostcopyPaused) => (
                EndStatus::Paused,
                format!("{}; paused (migrate-pause) and {LEFT_PAUSED}", why.cause()),
            ),
            // Completion won the race with the pause.
            Some(MigrationStatus::Completed) => {
                let (next, step) = self.postcopy_progress(run, p);
                return (with_pause(next, why), step);
            }
            // QEMU took our pause as a failure: it does so when the pause catches the
            // migration past its last page (its error then reads "Postcopy migration is paused
            // by the user"). A failed migration cannot be recovered; the driver asks the
            // destination whether it has the whole guest anyway.
            Some(MigrationStatus::Failed) => (
                EndStatus::Failed,
                format!(
                    "{}; migrate-pause was asked and QEMU failed the migration instead of pausing \
                     it ({}); the guest is on the destination",
                    why.cause(),
                    p.error.as_deref().unwrap_or("no reason given")
                ),
            ),
            _ => return (SourceState::Pausing(run, why), Ok(vec![])),
        };
        let mut o = self.finish(run, status, now, Some(error), true);
        o.watchdog_actions.push(why.action());
        (SourceState::Done(o), Ok(vec![]))
    }

    /// A command failed after post-copy started. The guest stays where it is in every case.
    pub(super) fn command_failed_postcopy(
        &self,
        state: SourceState,
        command: String,
        message: String,
        now_ms: u64,
    ) -> Next {
        let error = format!("{command}: {message}");
        match state {
            // The pause was refused: post-copy goes on, watched afresh (the budget still holds).
            SourceState::Pausing(mut run, _) => {
                run.stall.rearm();
                (SourceState::Postcopy(run), Ok(vec![]))
            }
            // A recovery command failed: QEMU is still paused, so still recoverable.
            SourceState::PostcopyPaused(run) => {
                let error = format!("{error}; {LEFT_PAUSED}");
                let o = self.finish(run, EndStatus::Paused, now_ms, Some(error), true);
                (SourceState::Done(o), Ok(vec![]))
            }
            SourceState::Postcopy(run) => {
                let o = self.finish(run, EndStatus::Failed, now_ms, Some(error), true);
                (SourceState::Done(o), Ok(vec![]))
            }
            s => (s, Ok(vec![])),
        }
    }

    /// The source QEMU stopped answering (see the module doc of `source`): what the guest's
    /// whereabouts allow. Only a run that never asked QEMU to switch may leave the guest to the
    /// source; any other keeps both QEMUs, the destination's being the one that may run it.
    pub(super) fn source_lost(&self, state: SourceState, message: String, now_ms: u64) -> Next {
        let lost = format!("the source QEMU stopped answering ({message})");
        let (run, status, moved, error) = match state {
            SourceState::Precopy(run) | SourceState::Cancelling(run, _)
                if run.postcopy_requested_ms.is_none() =>
            {
                let error = format!("{lost} in pre-copy; the guest stays on the source");
                (run, EndStatus::Failed, false, error)
            }
            SourceState::Precopy(run) | SourceState::Cancelling(run, _) => {
                let error = format!(
                    "{lost} after post-copy was asked for: the guest may run on the destination, \
                     so both QEMUs are kept"
                );
                (run, EndStatus::Failed, true, error)
            }
            SourceState::Postcopy(run) | SourceState::Pausing(run, _) => {
                let error = format!(
                    "{lost} in post-copy: the guest runs on the destination and the rest of its \
                     memory is on the source; both QEMUs are kept"
                );
                (run, EndStatus::Failed, true, error)
            }
            SourceState::PostcopyPaused(run) => {
                let error = format!("{lost} while post-copy was paused; {LEFT_PAUSED}");
                (run, EndStatus::Paused, true, error)
            }
            s => return (s, Ok(vec![])),
        };
        let mut o = self.finish(run, status, now_ms, Some(error), moved);
        // `finish` claims the destination only once QEMU was seen switching; here a switch
        // asked for and never confirmed must count too, or the destination's copy (perhaps
        // the only running one) would be thrown away and the source's guest resumed.
        o.vm_on_destination = moved;
        (SourceState::Done(o), Ok(vec![]))
    }
}
