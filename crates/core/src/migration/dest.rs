//! The destination side of a live migration as an explicit state machine.
//!
//! ```text
//!  Launched --ListenIssued--> Listening --(incoming active)--> Receiving
//!      |                          |                               |
//!      |                          +----------(guest running)------+--> Running   (pre-copy done, or
//!      |                                                          |               post-copy started)
//!      +------------------(QEMU died / incoming failed)-----------+--> Failed
//! ```
//!
//! `Running` records when the guest first ran here: that instant, minus the migration's start,
//! is the switchover time. In post-copy the guest runs while pages still arrive, so `Running`
//! also carries whether the incoming side has completed. `Failed` keeps that instant: losing
//! sight of the destination later does not undo the fact that the guest ran there.
//!
//! What fails it: QEMU saying its incoming migration failed, or QEMU gone (`Died`: its QMP
//! connection closed, or its agent says the VM is no more), at once. A look that merely failed
//! (`LookFailed`: a QMP timeout, an HTTP error between agents, a link that blipped) is not
//! news about QEMU: only [`LOOKS_BEFORE_LOST`] failed looks in a row, spanning at least
//! [`LOST_AFTER_MS`], fail it, and any answer in between starts the count again.

use super::progress::MigrationStatus;
use thiserror::Error;

/// Failed looks in a row after which the destination counts as lost. The driver looks every
/// 25 ms by default, and between agents a look is an HTTP call: a reset connection or an agent
/// busy for a moment fails one or two, while a dead destination fails every one. Counting
/// several keeps one bad answer from marking a healthy destination failed for the rest of the
/// run (which stops the wait for its guest and puts a false error in the record).
pub const LOOKS_BEFORE_LOST: u32 = 5;

/// How long, ms, looks must have been failing (from the first failure of the row) before the
/// destination counts as lost: an agent restarting on the destination host refuses connections
/// for a second or two while its QEMU, detached, goes on receiving.
pub const LOST_AFTER_MS: u64 = 3_000;

/// One look at the destination: its incoming migration status and whether the guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestObservation {
    pub now_ms: u64,
    pub status: Option<MigrationStatus>,
    pub vm_running: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestEvent {
    /// `migrate-incoming` was accepted: the destination listens.
    ListenIssued,
    Observed(DestObservation),
    /// The destination QEMU exited or its QMP connection closed (locally), or its agent says the
    /// VM is gone: no later look can bring it back.
    Died {
        message: String,
    },
    /// A look got no answer that says anything about QEMU (a timeout, an I/O or HTTP error):
    /// counted, see [`LOOKS_BEFORE_LOST`].
    LookFailed {
        now_ms: u64,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestState {
    Launched,
    Listening,
    Receiving,
    Running {
        since_ms: u64,
        incoming_done: bool,
    },
    Failed {
        error: String,
        /// When the guest had first run here, if it had.
        ran_since_ms: Option<u64>,
    },
}

impl DestState {
    pub fn name(&self) -> &'static str {
        match self {
            DestState::Launched => "launched",
            DestState::Listening => "listening",
            DestState::Receiving => "receiving",
            DestState::Running { .. } => "running",
            DestState::Failed { .. } => "failed",
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DestError {
    #[error("destination event '{event}' is not valid in state '{state}'")]
    InvalidTransition {
        state: &'static str,
        event: &'static str,
    },
}

/// Looks that failed in a row, since the last answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FailedLooks {
    count: u32,
    since_ms: u64,
}

/// Tracks the destination's side of one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestMachine {
    state: DestState,
    failing: Option<FailedLooks>,
}

impl Default for DestMachine {
    fn default() -> Self {
        DestMachine {
            state: DestState::Launched,
            failing: None,
        }
    }
}

impl DestMachine {
    pub fn state(&self) -> &DestState {
        &self.state
    }

    /// When the guest first ran on the destination, ms (driver clock), even if the
    /// destination was lost from sight afterwards.
    pub fn running_since_ms(&self) -> Option<u64> {
        match self.state {
            DestState::Running { since_ms, .. } => Some(since_ms),
            DestState::Failed { ran_since_ms, .. } => ran_since_ms,
            _ => None,
        }
    }

    pub fn handle(&mut self, event: DestEvent) -> Result<(), DestError> {
        let next = match (&self.state, event) {
            (DestState::Launched, DestEvent::ListenIssued) => DestState::Listening,
            (DestState::Failed { .. }, _) => return Ok(()),
            (_, DestEvent::Died { message }) => DestState::Failed {
                error: message,
                ran_since_ms: self.running_since_ms(),
            },
            (
                DestState::Listening | DestState::Receiving | DestState::Running { .. },
                DestEvent::Observed(o),
            ) => {
                self.failing = None;
                self.observe(o)
            }
            (
                DestState::Listening | DestState::Receiving | DestState::Running { .. },
                DestEvent::LookFailed { now_ms, message },
            ) => match self.look_failed(now_ms, message) {
                Some(failed) => failed,
                None => return Ok(()),
            },
            (state, event) => {
                return Err(DestError::InvalidTransition {
                    state: state.name(),
                    event: match event {
                        DestEvent::ListenIssued => "listen-issued",
                        DestEvent::Observed(_) => "observed",
                        DestEvent::Died { .. } => "died",
                        DestEvent::LookFailed { .. } => "look-failed",
                    },
                })
            }
        };
        self.state = next;
        Ok(())
    }

    /// Counts a failed look; the failed state once they are too many for too long.
    fn look_failed(&mut self, now_ms: u64, message: String) -> Option<DestState> {
        let row = self.failing.get_or_insert(FailedLooks {
            count: 0,
            since_ms: now_ms,
        });
        row.count += 1;
        let (count, span_ms) = (row.count, now_ms.saturating_sub(row.since_ms));
        let lost = count >= LOOKS_BEFORE_LOST && span_ms >= LOST_AFTER_MS;
        lost.then(|| DestState::Failed {
            error: format!(
                "the destination did not answer {count} looks in a row over {span_ms} ms; \
                 the last: {message}"
            ),
            ran_since_ms: self.running_since_ms(),
        })
    }

    fn observe(&self, o: DestObservation) -> DestState {
        let incoming_done = o.status == Some(MigrationStatus::Completed);
        if o.status == Some(MigrationStatus::Failed) {
            return DestState::Failed {
                error: "incoming migration failed".to_string(),
                ran_since_ms: self.running_since_ms(),
            };
        }
        match (&self.state, o.vm_running) {
            (DestState::Running { since_ms, .. }, _) => DestState::Running {
                since_ms: *since_ms,
                incoming_done,
            },
            (_, true) => DestState::Running {
                since_ms: o.now_ms,
                incoming_done,
            },
            (_, false) if o.status.is_some_and(|s| s.is_precopy() || s.is_postcopy()) => {
                DestState::Receiving
            }
            (state, false) => state.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(now_ms: u64, status: MigrationStatus, vm_running: bool) -> DestEvent {
        DestEvent::Observed(DestObservation {
            now_ms,
            status: Some(status),
            vm_running,
        })
    }

    #[test]
    fn precopy_path_records_first_running_time() {
        let mut d = DestMachine::default();
        d.handle(DestEvent::ListenIssued).expect("valid");
        d.handle(seen(10, MigrationStatus::Active, false))
            .expect("valid");
        assert_eq!(d.state().name(), "receiving");
        d.handle(seen(900, MigrationStatus::Completed, true))
            .expect("valid");
        d.handle(seen(950, MigrationStatus::Completed, true))
            .expect("valid");
        assert_eq!(d.running_since_ms(), Some(900));
    }

    #[test]
    fn postcopy_runs_before_incoming_completes() {
        let mut d = DestMachine::default();
        d.handle(DestEvent::ListenIssued).expect("valid");
        d.handle(seen(120, MigrationStatus::PostcopyActive, true))
            .expect("valid");
        assert_eq!(
            d.state(),
            &DestState::Running {
                since_ms: 120,
                incoming_done: false
            }
        );
        d.handle(seen(700, MigrationStatus::Completed, true))
            .expect("valid");
        assert_eq!(d.running_since_ms(), Some(120));
    }

    #[test]
    fn death_and_failure_are_terminal() {
        let mut d = DestMachine::default();
        d.handle(DestEvent::ListenIssued).expect("valid");
        d.handle(DestEvent::Died {
            message: "qemu exited".into(),
        })
        .expect("valid");
        assert_eq!(d.state().name(), "failed");
        d.handle(seen(1, MigrationStatus::Completed, true))
            .expect("ignored");
        assert_eq!(d.state().name(), "failed");
        let mut d = DestMachine::default();
        d.handle(DestEvent::ListenIssued).expect("valid");
        d.handle(seen(5, MigrationStatus::Failed, false))
            .expect("valid");
        assert_eq!(d.state().name(), "failed");
    }

    #[test]
    fn losing_sight_of_the_destination_keeps_when_the_guest_ran_there() {
        let mut d = DestMachine::default();
        d.handle(DestEvent::ListenIssued).expect("valid");
        d.handle(seen(120, MigrationStatus::PostcopyActive, true))
            .expect("valid");
        d.handle(DestEvent::Died {
            message: "QMP timed out".into(),
        })
        .expect("valid");
        assert_eq!(d.state().name(), "failed");
        assert_eq!(d.running_since_ms(), Some(120));
    }

    fn look_failed(now_ms: u64) -> DestEvent {
        DestEvent::LookFailed {
            now_ms,
            message: "QMP command 'query-status' timed out after 1000 ms".into(),
        }
    }

    /// The reviewer's case: one failed look marked the destination failed for the rest of the
    /// run. A few failed looks, even over seconds, change nothing; an answer starts the count
    /// again; only many in a row over `LOST_AFTER_MS` fail it, keeping when the guest ran.
    #[test]
    fn failed_looks_fail_the_destination_only_in_a_long_enough_row() {
        let mut d = DestMachine::default();
        d.handle(DestEvent::ListenIssued).expect("valid");
        d.handle(seen(100, MigrationStatus::PostcopyActive, true))
            .expect("valid");
        for t in 1..LOOKS_BEFORE_LOST {
            d.handle(look_failed(100 + 2_000 * u64::from(t)))
                .expect("valid");
            assert_eq!(d.state().name(), "running", "{t} failed looks");
        }
        d.handle(seen(9_000, MigrationStatus::PostcopyActive, true))
            .expect("an answer");
        // Many failures, but within a blip: still running.
        for t in 0..20 {
            d.handle(look_failed(10_000 + 25 * t)).expect("valid");
        }
        assert_eq!(d.state().name(), "running");
        assert_eq!(d.running_since_ms(), Some(100));
        // The same row, long enough: failed, with the guest's first run kept.
        d.handle(look_failed(10_000 + LOST_AFTER_MS))
            .expect("valid");
        match d.state() {
            DestState::Failed {
                error,
                ran_since_ms,
            } => {
                assert_eq!(*ran_since_ms, Some(100));
                assert!(
                    error.contains("21 looks in a row over 3000 ms") && error.contains("timed out"),
                    "{error}"
                );
            }
            other => panic!("expected failed, got {other:?}"),
        }
        d.handle(seen(20_000, MigrationStatus::Completed, true))
            .expect("ignored");
        assert_eq!(d.state().name(), "failed", "failed stays failed");
    }

    #[test]
    fn a_failed_look_before_listening_is_an_error() {
        let mut d = DestMachine::default();
        assert!(d.handle(look_failed(1)).is_err());
    }

    #[test]
    fn observing_before_listening_is_an_error() {
        let mut d = DestMachine::default();
        assert!(d.handle(seen(1, MigrationStatus::Active, false)).is_err());
        d.handle(DestEvent::ListenIssued).expect("valid");
        assert!(d.handle(DestEvent::ListenIssued).is_err());
    }
}
