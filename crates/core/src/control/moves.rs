//! One move: a VM's migration from one host to another, as an explicit state machine.
//!
//! ```text
//!  Planned ──request──> Requested ──accepted──> Running ──observed end──> Done | Failed | Cancelled
//!     │                     │  └──refused──> Failed        │
//!     ├──skip──> Skipped     └──vanished──> Lost            └──vanished──> Lost
//!     └──cancel──> Cancelled
//! ```
//!
//! - **Planned**: decided, waiting for its plan's approval and a free slot on both hosts.
//! - **Requested**: the manager is about to ask (or has asked) the source agent. It is
//!   persisted *before* the request goes out, so a manager that dies in between finds the move
//!   here on restart and asks again; the migration's id is the move's id and an agent refuses a
//!   second migration with the same id, so nothing is started twice.
//! - **Running**: the source agent accepted it; its record (found by the same id) says how it
//!   ends.
//! - **Skipped**: its premise vanished before it started (the VM left or was lost, a host became
//!   unreachable, the destination no longer has room); the reason is kept.
//! - **Lost**: nobody can say what became of it (the source agent restarted mid-migration and
//!   reported it interrupted, or the VM disappeared from every host).
//!
//! Every other event in a state is a typed [`MoveError`], and the move is left as it was.

use crate::migration::Technique;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A move's id; also the id of the migration the source agent runs for it.
pub type MoveId = String;

/// Where a move is in its life. Times are the manager's clock, seconds.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum MoveState {
    Planned,
    Requested {
        at_s: f64,
    },
    Running {
        since_s: f64,
    },
    Done {
        at_s: f64,
    },
    Failed {
        at_s: f64,
        error: String,
        /// True when the VM ended up (part-way) on the destination, e.g. a post-copy left
        /// paused: recoverable, never restarted on the source.
        vm_on_destination: bool,
    },
    Cancelled {
        at_s: f64,
        reason: String,
    },
    Skipped {
        at_s: f64,
        reason: String,
    },
    Lost {
        at_s: f64,
        reason: String,
    },
}

impl MoveState {
    /// Every state's [`MoveState::name`] (lists that filter by state name the allowed values
    /// from it; `name` answers from it).
    pub const NAMES: [&'static str; 8] = [
        "planned",
        "requested",
        "running",
        "done",
        "failed",
        "cancelled",
        "skipped",
        "lost",
    ];

    /// The state's name, for messages and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            MoveState::Planned => Self::NAMES[0],
            MoveState::Requested { .. } => Self::NAMES[1],
            MoveState::Running { .. } => Self::NAMES[2],
            MoveState::Done { .. } => Self::NAMES[3],
            MoveState::Failed { .. } => Self::NAMES[4],
            MoveState::Cancelled { .. } => Self::NAMES[5],
            MoveState::Skipped { .. } => Self::NAMES[6],
            MoveState::Lost { .. } => Self::NAMES[7],
        }
    }

    /// No further transition will happen.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            MoveState::Planned | MoveState::Requested { .. } | MoveState::Running { .. }
        )
    }

    /// The source agent has (or may have) been asked: the move holds a slot on both hosts.
    pub fn in_flight(&self) -> bool {
        matches!(
            self,
            MoveState::Requested { .. } | MoveState::Running { .. }
        )
    }
}

/// What happens to a move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum MoveEvent {
    /// The scheduler starts it (its plan is approved, both hosts have a slot, premises hold).
    Request { now_s: f64 },
    /// The source agent accepted the migration (or already had it, after a manager restart).
    Accepted { now_s: f64 },
    /// The source agent refused it before it started.
    Refused { now_s: f64, error: String },
    /// The source agent reports the migration over.
    Ended {
        now_s: f64,
        outcome: MoveEnd,
        vm_on_destination: bool,
        error: Option<String>,
    },
    /// Its premise vanished before it started.
    Skip { now_s: f64, reason: String },
    /// An operator or a plan's cancellation stops it before it started.
    Cancel { now_s: f64, reason: String },
    /// Its outcome cannot be established.
    Vanished { now_s: f64, reason: String },
}

impl MoveEvent {
    fn name(&self) -> &'static str {
        match self {
            MoveEvent::Request { .. } => "request",
            MoveEvent::Accepted { .. } => "accepted",
            MoveEvent::Refused { .. } => "refused",
            MoveEvent::Ended { .. } => "ended",
            MoveEvent::Skip { .. } => "skip",
            MoveEvent::Cancel { .. } => "cancel",
            MoveEvent::Vanished { .. } => "vanished",
        }
    }
}

/// How a started migration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MoveEnd {
    Completed,
    Failed,
    Cancelled,
}

/// An event that makes no sense in the move's state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("move {id}: event '{event}' is not valid in state '{state}'")]
pub struct MoveError {
    pub id: MoveId,
    pub state: &'static str,
    pub event: &'static str,
}

/// How a move's technique was chosen.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TechniqueChoice {
    /// What the agent is asked for (`Auto` when the agent's own cost model chooses).
    pub technique: Technique,
    /// Why (the cost model's explanation, or "the agent chooses", or "restricted to ...").
    pub reason: String,
}

/// One VM's migration, with what was assumed when it was planned.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Move {
    pub id: MoveId,
    /// The plan it belongs to.
    pub plan: String,
    pub vm: String,
    pub from: String,
    pub to: String,
    pub technique: TechniqueChoice,
    /// The VM's CPU demand when planned, cores (counted on the destination while in flight).
    pub demand_cores: f64,
    /// The VM's memory, bytes (reserved on the destination while in flight).
    pub memory_bytes: u64,
    pub state: MoveState,
}

impl Move {
    /// Applies `event`; on error the move is unchanged.
    ///
    /// # Errors
    /// [`MoveError`] when the event is not valid in the current state.
    pub fn apply(&mut self, event: MoveEvent) -> Result<(), MoveError> {
        use MoveEvent as E;
        use MoveState as S;
        let next = match (&self.state, &event) {
            (S::Planned, E::Request { now_s }) => S::Requested { at_s: *now_s },
            (S::Planned, E::Skip { now_s, reason }) => S::Skipped {
                at_s: *now_s,
                reason: reason.clone(),
            },
            (S::Planned, E::Cancel { now_s, reason }) => S::Cancelled {
                at_s: *now_s,
                reason: reason.clone(),
            },
            (S::Requested { .. }, E::Accepted { now_s }) => S::Running { since_s: *now_s },
            (S::Requested { .. }, E::Refused { now_s, error }) => S::Failed {
                at_s: *now_s,
                error: error.clone(),
                vm_on_destination: false,
            },
            (
                S::Requested { .. } | S::Running { .. },
                E::Ended {
                    now_s,
                    outcome,
                    vm_on_destination,
                    error,
                },
            ) => ended(*now_s, *outcome, *vm_on_destination, error.clone()),
            (S::Requested { .. } | S::Running { .. }, E::Vanished { now_s, reason }) => S::Lost {
                at_s: *now_s,
                reason: reason.clone(),
            },
            (state, event) => {
                return Err(MoveError {
                    id: self.id.clone(),
                    state: state.name(),
                    event: event.name(),
                })
            }
        };
        self.state = next;
        Ok(())
    }
}

fn ended(now_s: f64, outcome: MoveEnd, on_dest: bool, error: Option<String>) -> MoveState {
    match outcome {
        MoveEnd::Completed => MoveState::Done { at_s: now_s },
        MoveEnd::Failed => MoveState::Failed {
            at_s: now_s,
            error: error.unwrap_or_else(|| "the migration failed".into()),
            vm_on_destination: on_dest,
        },
        MoveEnd::Cancelled => MoveState::Cancelled {
            at_s: now_s,
            reason: error.unwrap_or_else(|| "cancelled".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv() -> Move {
        Move {
            id: "m1".into(),
            plan: "p1".into(),
            vm: "vm1".into(),
            from: "h1".into(),
            to: "h2".into(),
            technique: TechniqueChoice {
                technique: Technique::Postcopy,
                reason: "test".into(),
            },
            demand_cores: 1.0,
            memory_bytes: 1 << 30,
            state: MoveState::Planned,
        }
    }

    #[test]
    fn the_normal_path() {
        let mut m = mv();
        m.apply(MoveEvent::Request { now_s: 1.0 }).expect("request");
        assert!(m.state.in_flight());
        m.apply(MoveEvent::Accepted { now_s: 1.1 })
            .expect("accepted");
        m.apply(MoveEvent::Ended {
            now_s: 3.0,
            outcome: MoveEnd::Completed,
            vm_on_destination: true,
            error: None,
        })
        .expect("ended");
        assert_eq!(m.state, MoveState::Done { at_s: 3.0 });
        assert!(m.state.is_final());
    }

    #[test]
    fn bad_transitions_are_typed_and_change_nothing() {
        let mut m = mv();
        let err = m
            .apply(MoveEvent::Accepted { now_s: 1.0 })
            .expect_err("not requested yet");
        assert_eq!((err.state, err.event), ("planned", "accepted"));
        assert_eq!(m.state, MoveState::Planned);
        m.apply(MoveEvent::Request { now_s: 1.0 }).expect("request");
        let err = m
            .apply(MoveEvent::Skip {
                now_s: 2.0,
                reason: "x".into(),
            })
            .expect_err("too late to skip");
        assert_eq!(err.state, "requested");
        m.apply(MoveEvent::Vanished {
            now_s: 9.0,
            reason: "source agent interrupted".into(),
        })
        .expect("lost");
        assert!(m.apply(MoveEvent::Request { now_s: 10.0 }).is_err());
    }

    #[test]
    fn a_paused_postcopy_is_a_failure_with_the_vm_on_the_destination() {
        let mut m = mv();
        m.apply(MoveEvent::Request { now_s: 1.0 }).expect("request");
        m.apply(MoveEvent::Ended {
            now_s: 70.0,
            outcome: MoveEnd::Failed,
            vm_on_destination: true,
            error: Some("post-copy stalled".into()),
        })
        .expect("ended");
        assert!(matches!(
            m.state,
            MoveState::Failed {
                vm_on_destination: true,
                ..
            }
        ));
    }
}
