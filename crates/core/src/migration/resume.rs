//! Resuming a post-copy that a run left paused, once its link returns.
//!
//! A run ends `paused` when its post-copy stalled (a cut link: the stall watchdog paused it) or
//! could not be recovered within the run (every `migrate-recover` failed while the link was
//! down). The guest then runs on the destination with part of its memory still on the source,
//! and it stays so, never lost, until someone resumes it. The source's agent does, by looking at
//! both QEMUs every second or so for a bounded window and doing what [`ResumeMachine`] says:
//!
//! ```text
//!             ┌───────────── source paused, destination unreachable ─────────────┐
//!             v                                                                  │
//!  waiting ──source paused, destination postcopy-active──> [pause destination] ──┘
//!     │      (the destination has not noticed the cut: make both sides agree)
//!     ├──source paused, destination paused──> [recover destination, resume source] ──> recovering
//!     ├──source paused, destination listening (recover asked before)──> [resume source] ──> recovering
//!     ├──source paused, destination's agent answers but its QEMU does not──>
//!     │      [pause destination (a refusal is fine), recover it, resume source] ──> recovering
//!  recovering ──source postcopy-active | postcopy-recover*──> resumed
//!  recovering ──source still paused after the grace──> waiting (the next attempt)
//!  resumed ──no byte moved for the stall limit──> [pause source] ──> waiting
//!  any ──source completed──> [settle] ──> done (completed)
//!  any ──source failed | cancelled | none──> [settle] ──> done (not resumable: the settle
//!        step still checks whether the destination has the whole guest)
//!  waiting | recovering ──window over, or attempts used up──> done (left paused)
//!  any ──destination failed──> done (left paused: both QEMUs are kept, nothing is stopped)
//! ```
//!
//! A destination whose QEMU does not answer `query-migrate` while its agent does is the common
//! case, not an odd one: a device model or vCPU waiting for a page that never comes can hold
//! QEMU's main loop, and with it every in-band QMP command, until the post-copy is recovered.
//! Only `migrate-pause` and `migrate-recover` run out-of-band, so they are sent blind: pause
//! (refused when it is paused already, which is fine), then recover.
//!
//! A resumed post-copy that makes progress is never abandoned for the window: only its own
//! stall limit sends it back to waiting. A look that finds the source QEMU silent changes
//! nothing (the window bounds it). An event after `done` is a [`ResumeError`].

use super::progress::{MigrationStatus, Progress};
use super::source::RECOVERY_GRACE_MS;
use super::stall::StallWatch;
use thiserror::Error;

/// How long and how often a paused post-copy is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeParams {
    /// From the first look, ms: how long the link may stay away before the migration is left
    /// paused for good (reported, both QEMUs kept).
    pub window_ms: u64,
    /// Most recover attempts (each `migrate-recover` plus `migrate` resume).
    pub max_attempts: u32,
    /// A resumed post-copy that moves no byte for this long is paused again, ms (the plan's
    /// `postcopy_stall_ms`).
    pub stall_ms: u64,
    /// After a recover attempt, how long a still-paused source is given to leave that state
    /// before the next attempt, ms.
    pub grace_ms: u64,
}

impl Default for ResumeParams {
    fn default() -> Self {
        ResumeParams {
            window_ms: 600_000,
            max_attempts: 30,
            stall_ms: 10_000,
            grace_ms: RECOVERY_GRACE_MS,
        }
    }
}

/// One look at both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeLook {
    /// The looker's clock, ms.
    pub now_ms: u64,
    /// The source QEMU's `query-migrate`; None when it did not answer.
    pub source: Option<Progress>,
    /// What the destination said.
    pub dest: DestAnswer,
}

/// The destination's answer to one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestAnswer {
    /// Its agent could not be reached (the link is still down).
    Unreachable,
    /// Its agent answers, its QEMU does not (in-band QMP held by a missing page).
    Silent,
    /// Its QEMU's incoming migration status (None: it reported none).
    Migration(Option<MigrationStatus>),
}

/// What to do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeAction {
    /// `migrate-pause` on the destination (out-of-band): it still waits on the dead connection.
    PauseDest,
    /// `migrate-recover` on the destination, at the URI it made for recovery.
    RecoverDest,
    /// `migrate` with `resume` on the source, towards that URI.
    ResumeSource,
    /// `migrate-pause` on the source: the resumed post-copy stalled again.
    PauseSource,
    /// Hand the VM over if the destination has the whole guest (it checks).
    Settle,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeEnd {
    /// The source QEMU completed the migration.
    Completed,
    /// The source's migration ended otherwise (failed, cancelled): it cannot be resumed;
    /// the reason names the status.
    NotResumable(String),
    /// Given up: the migration stays paused (both QEMUs kept, the source VM held).
    LeftPaused(String),
}

/// Where the resumption is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeState {
    /// Both sides paused, or the destination out of reach.
    Waiting,
    /// A recover attempt was made at `asked_ms`; `blind` when it was sent to a destination
    /// whose QEMU did not answer (its pause may then be refused: it was paused already).
    Recovering {
        asked_ms: u64,
        blind: bool,
    },
    /// Post-copy runs again.
    Resumed {
        stall: StallWatch,
    },
    Done(ResumeEnd),
}

/// An event the machine cannot take.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResumeError {
    #[error("the resumption is over ({0:?}): no further event is taken")]
    Finished(ResumeEnd),
}

/// The resumption of one paused post-copy (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeMachine {
    params: ResumeParams,
    state: ResumeState,
    started_ms: Option<u64>,
    attempts: u32,
}

impl ResumeMachine {
    /// A machine in `waiting`, its window starting at the first look.
    pub fn new(params: ResumeParams) -> Self {
        ResumeMachine {
            params,
            state: ResumeState::Waiting,
            started_ms: None,
            attempts: 0,
        }
    }

    pub fn state(&self) -> &ResumeState {
        &self.state
    }

    /// Recover attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Takes one look and says what to do.
    ///
    /// # Errors
    /// [`ResumeError::Finished`] once done.
    pub fn observe(&mut self, look: &ResumeLook) -> Result<Vec<ResumeAction>, ResumeError> {
        if let ResumeState::Done(end) = &self.state {
            return Err(ResumeError::Finished(end.clone()));
        }
        let now = look.now_ms;
        let started = *self.started_ms.get_or_insert(now);
        let Some(source) = &look.source else {
            return Ok(self.unless_over(now, started, "the source QEMU does not answer"));
        };
        use MigrationStatus as S;
        match source.status {
            Some(S::Completed) => self.finish(ResumeEnd::Completed, vec![ResumeAction::Settle]),
            Some(S::PostcopyPaused) => Ok(self.source_paused(now, started, look.dest)),
            Some(S::PostcopyActive | S::PostcopyRecover | S::PostcopyRecoverSetup) => {
                Ok(self.running(now, source))
            }
            other => {
                let status = other.map_or("unknown".to_string(), |s| format!("{s:?}"));
                self.finish(
                    ResumeEnd::NotResumable(format!(
                        "the source QEMU's migration is {}, which cannot be resumed",
                        status.to_lowercase()
                    )),
                    vec![ResumeAction::Settle],
                )
            }
        }
    }

    /// A command the machine asked for failed; true when the actions after it are still to be
    /// carried out (a blind attempt's pause, refused because the destination is paused
    /// already). Otherwise a recover attempt counts as made, and the next look decides again
    /// (the link may still be down).
    pub fn command_failed(&mut self, action: ResumeAction) -> bool {
        match (&self.state, action) {
            (ResumeState::Recovering { blind: true, .. }, ResumeAction::PauseDest) => true,
            (
                ResumeState::Recovering { .. },
                ResumeAction::RecoverDest | ResumeAction::ResumeSource,
            ) => {
                self.state = ResumeState::Waiting;
                false
            }
            _ => false,
        }
    }

    fn finish(
        &mut self,
        end: ResumeEnd,
        actions: Vec<ResumeAction>,
    ) -> Result<Vec<ResumeAction>, ResumeError> {
        self.state = ResumeState::Done(end);
        Ok(actions)
    }

    /// Waiting or recovering with nothing to do: over once the window or the attempts are.
    fn unless_over(&mut self, now: u64, started: u64, why: &str) -> Vec<ResumeAction> {
        let window = now.saturating_sub(started) >= self.params.window_ms;
        if window || self.attempts >= self.params.max_attempts {
            let limit = if window {
                format!(
                    "the link did not return within {} s",
                    self.params.window_ms / 1000
                )
            } else {
                format!("{} recover attempts failed", self.attempts)
            };
            self.state = ResumeState::Done(ResumeEnd::LeftPaused(format!(
                "{limit} ({why}); left paused: the guest on the destination, the rest of its \
                 memory on the source, both QEMUs kept"
            )));
        }
        vec![]
    }

    fn source_paused(&mut self, now: u64, started: u64, dest: DestAnswer) -> Vec<ResumeAction> {
        use MigrationStatus as S;
        if let ResumeState::Recovering { asked_ms, .. } = self.state {
            if now.saturating_sub(asked_ms) < self.params.grace_ms {
                return vec![];
            }
        }
        self.state = ResumeState::Waiting;
        let attempt = |m: &mut Self, actions: Vec<ResumeAction>| {
            if m.attempts >= m.params.max_attempts {
                return m.unless_over(now, started, "the source stays paused");
            }
            m.attempts += 1;
            let blind = actions.first() == Some(&ResumeAction::PauseDest);
            m.state = ResumeState::Recovering {
                asked_ms: now,
                blind,
            };
            actions
        };
        let dest = match dest {
            DestAnswer::Unreachable => {
                return self.unless_over(now, started, "the destination cannot be reached")
            }
            DestAnswer::Silent => {
                return attempt(
                    self,
                    vec![
                        ResumeAction::PauseDest,
                        ResumeAction::RecoverDest,
                        ResumeAction::ResumeSource,
                    ],
                )
            }
            DestAnswer::Migration(status) => status,
        };
        match dest {
            None => self.unless_over(now, started, "the destination reports no migration"),
            Some(S::PostcopyActive) => {
                let mut a = self.unless_over(now, started, "the destination never paused");
                if a.is_empty() && !matches!(self.state, ResumeState::Done(_)) {
                    a.push(ResumeAction::PauseDest);
                }
                a
            }
            Some(S::PostcopyPaused) => attempt(
                self,
                vec![ResumeAction::RecoverDest, ResumeAction::ResumeSource],
            ),
            Some(S::PostcopyRecoverSetup | S::PostcopyRecover) => {
                attempt(self, vec![ResumeAction::ResumeSource])
            }
            // The destination has every page although the source paused past its last one.
            Some(S::Completed) => {
                self.state = ResumeState::Done(ResumeEnd::Completed);
                vec![ResumeAction::Settle]
            }
            Some(other) => {
                self.state = ResumeState::Done(ResumeEnd::LeftPaused(format!(
                    "the destination's incoming migration is {}: left paused, both QEMUs kept",
                    format!("{other:?}").to_lowercase()
                )));
                vec![]
            }
        }
    }

    fn running(&mut self, now: u64, p: &Progress) -> Vec<ResumeAction> {
        let mut stall = match std::mem::replace(&mut self.state, ResumeState::Waiting) {
            ResumeState::Resumed { stall } => stall,
            _ => StallWatch::new(self.params.stall_ms),
        };
        // A recovery handshake that hangs moves no byte either: QEMU takes `migrate-pause` in
        // `postcopy-recover` too, so it is judged alike.
        if stall.observe(now, p.transferred(), p.ram.map(|r| r.remaining)) {
            return vec![ResumeAction::PauseSource];
        }
        self.state = ResumeState::Resumed { stall };
        vec![]
    }
}

#[cfg(test)]
#[path = "resume_tests.rs"]
mod tests;
