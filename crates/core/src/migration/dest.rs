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
//! sight of the destination later (a QMP error over a blipping link) does not undo the fact
//! that the guest ran there.

use super::progress::MigrationStatus;
use thiserror::Error;

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
    /// The destination QEMU exited or its QMP connection broke.
    Died {
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

/// Tracks the destination's side of one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestMachine {
    state: DestState,
}

impl Default for DestMachine {
    fn default() -> Self {
        DestMachine {
            state: DestState::Launched,
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
            ) => self.observe(o),
            (state, event) => {
                return Err(DestError::InvalidTransition {
                    state: state.name(),
                    event: match event {
                        DestEvent::ListenIssued => "listen-issued",
                        DestEvent::Observed(_) => "observed",
                        DestEvent::Died { .. } => "died",
                    },
                })
            }
        };
        self.state = next;
        Ok(())
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

    #[test]
    fn observing_before_listening_is_an_error() {
        let mut d = DestMachine::default();
        assert!(d.handle(seen(1, MigrationStatus::Active, false)).is_err());
        d.handle(DestEvent::ListenIssued).expect("valid");
        assert!(d.handle(DestEvent::ListenIssued).is_err());
    }
}
