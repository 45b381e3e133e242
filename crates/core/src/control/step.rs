//! The reconcile step: from what the manager saw, what it remembers and its settings, to the
//! actions to take now and when to look again. Pure: the clock is an argument.

use super::moves::MoveId;
use crate::migration::{PlanKnobs, Technique};
use serde::{Deserialize, Serialize};

/// Something the manager must do. Every action's move or plan is already in the state the
/// action implies (a `Migrate`'s move is `Requested`), and the manager persists the state before
/// carrying any action out.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Ask `from`'s agent to migrate `vm` to `to`, as migration `move_id` (idempotent: an agent
    /// refuses a second migration with the same id, which counts as accepted).
    Migrate {
        move_id: MoveId,
        vm: String,
        from: String,
        to: String,
        technique: Technique,
        knobs: PlanKnobs,
    },
    /// Ask `from`'s agent to cancel migration `move_id` (refused once post-copy started).
    Cancel { move_id: MoveId, from: String },
    /// Put an empty host in standby.
    Standby { host: String },
    /// Wake a standby host.
    Wake { host: String },
}

/// What carrying out an action came to; fed back with [`super::record`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The source agent accepted (or already had) the migration.
    MigrateAccepted {
        move_id: MoveId,
    },
    /// The source agent refused it; `error` says why.
    MigrateRefused {
        move_id: MoveId,
        error: String,
    },
    /// The agent could not be reached; the move stays requested and is asked again.
    MigrateUnreachable {
        move_id: MoveId,
        error: String,
    },
    Standby {
        host: String,
        error: Option<String>,
    },
    Wake {
        host: String,
        error: Option<String>,
    },
    Cancel {
        move_id: MoveId,
        error: Option<String>,
    },
}

/// One line of the journal: what the step decided or saw, for the event log.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Manager clock, s.
    pub at_s: f64,
    /// One of [`JournalEntry::SUBJECTS`].
    pub subject: String,
    /// The plan's, move's or host's id.
    pub id: String,
    /// What happened, one line.
    pub what: String,
}

impl JournalEntry {
    /// What a journal line can be about: core's plans, moves and hosts, and the manager's
    /// settings changes.
    pub const SUBJECTS: [&'static str; 4] = ["plan", "move", "host", "settings"];
}

/// The step's result.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepOutput {
    pub actions: Vec<Action>,
    /// When to look again at the latest, s (the manager may look earlier: its collection
    /// interval).
    pub next_look_s: f64,
    pub journal: Vec<JournalEntry>,
    /// Plans made in this step (their ids; their snapshot is worth storing for replay).
    pub new_plans: Vec<String>,
}
