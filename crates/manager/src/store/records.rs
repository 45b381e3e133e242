//! The control loop's records: what one step persists ([`StepRecord`]), and what is read back
//! (plans, moves, their transitions, the journal, settings, results, decisions).
//!
//! Field names follow core's control types (`JournalEntry` is core's, field for field), so
//! that once those types are in this crate's dependencies each row is made from its typed value
//! in one place.

use super::types::Json;
use serde::{Deserialize, Serialize};

/// The most rows one read returns, whatever limit the caller asks for.
pub const MAX_READ: u32 = 10_000;

/// One line of the event journal (core's `control::JournalEntry`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Manager clock, s.
    pub at_s: f64,
    /// `plan`, `move`, `host`, `settings`, ...
    pub subject: String,
    /// The plan's, move's or host's id.
    pub id: String,
    /// What happened, one line.
    pub what: String,
}

/// A journal line as stored: its place in the journal and the line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRow {
    /// Increases with every line appended (a cursor for paging).
    pub seq: u64,
    #[serde(flatten)]
    pub entry: JournalEntry,
}

/// Which journal lines to read. Every filter is optional; the result is bounded by `limit` and
/// by [`MAX_READ`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JournalQuery {
    /// Lines at or after this time, s.
    pub since_s: Option<f64>,
    /// Lines before this time, s.
    pub until_s: Option<f64>,
    pub subject: Option<String>,
    pub id: Option<String>,
    /// Lines after this one (paging forward).
    pub after_seq: Option<u64>,
    /// Lines before this one (paging backward).
    pub before_seq: Option<u64>,
    /// Newest first (the latest events) instead of oldest first.
    pub newest_first: bool,
    pub limit: u32,
}

/// A plan, as stored: the columns it is queried by, and the whole plan as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRow {
    pub id: String,
    /// `relief`, `consolidation`, `drain`, `balance`.
    pub kind: String,
    /// `proposed`, `approved`, `recorded`, `done`, ...
    pub state: String,
    /// The host the plan is about.
    pub host: Option<String>,
    pub created_s: f64,
    /// Core's `control::Plan`, explanation included.
    pub body: Json,
}

/// A move, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveRow {
    pub id: String,
    /// Its plan (stored before it, or in the same step).
    pub plan_id: String,
    pub vm: String,
    pub from_host: String,
    pub to_host: String,
    /// `planned`, `requested`, `running`, `done`, `failed`, ...
    pub state: String,
    /// Why it is in this state (the error, the reason), for the transition's record.
    pub detail: Option<String>,
    /// Core's `control::Move`.
    pub body: Json,
}

/// One change of a move's state, recorded by the store whenever a step stores a move in a state
/// other than the one stored before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub move_id: String,
    /// None when the move first appears.
    pub from_state: Option<String>,
    pub to_state: String,
    pub at_s: f64,
    pub detail: Option<String>,
}

/// What a step decided from, stored once per step for every plan the step made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionInput {
    /// The plans made in this step (core's `StepOutput::new_plans`); each must be among the
    /// step's plans or already stored.
    pub plans: Vec<String>,
    /// Core's `control::Observation` the step saw.
    pub observation: Json,
    /// Core's `control::ControlState` before the step.
    pub state_before: Json,
    /// Core's `control::ControlSettings` the step read.
    pub settings: Json,
}

/// Everything one step changed, stored in one transaction: all of it or none of it.
///
/// The manager stores one after every step and every operation on the control state (approve,
/// cancel, drain, an outcome recorded), and before it carries out any action the step returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's time, s (manager clock).
    pub at_s: f64,
    /// Core's `control::ControlState` after the step (the step's memory).
    pub state: Json,
    /// The step's journal lines, appended in order.
    pub journal: Vec<JournalEntry>,
    /// Plans made or changed by the step (stored plans are replaced).
    pub plans: Vec<PlanRow>,
    /// Moves made or changed; a state other than the stored one records a [`Transition`].
    pub moves: Vec<MoveRow>,
    /// When the step made plans: what it decided from.
    pub decision: Option<DecisionInput>,
}

/// The step's memory as last stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    /// The time of the step that stored it, s.
    pub at_s: f64,
    /// Core's `control::ControlState`.
    pub state: Json,
}

/// A plan's decision, as exported: enough to run the same step again
/// (`drover sim replay FILE`) and get the same plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub plan_id: String,
    /// The step's time, s: the `now_s` to replay it at.
    pub at_s: f64,
    pub observation: Json,
    pub state_before: Json,
    pub settings: Json,
}

/// The current settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingsRecord {
    /// 1 for the first settings stored, then one more per change.
    pub version: u64,
    pub updated_s: f64,
    /// Core's `control::ControlSettings`.
    pub body: Json,
}

/// An agent's migration result record, keyed by the move (and migration) id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationResult {
    pub move_id: String,
    /// When it was stored, s.
    pub at_s: f64,
    /// The agent's result record, as it sent it.
    pub body: Json,
}

/// Which plans to list: newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanQuery {
    pub state: Option<String>,
    /// Plans made at or after this time, s.
    pub since_s: Option<f64>,
    pub limit: u32,
}

/// Which moves to list: in the order they were first stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MoveQuery {
    pub plan_id: Option<String>,
    pub vm: Option<String>,
    pub state: Option<String>,
    pub limit: u32,
}

/// The effective limit of a read.
pub(crate) fn bounded(limit: u32) -> u32 {
    limit.min(MAX_READ)
}

/// The journal line of a settings change.
pub(crate) fn settings_event(at_s: f64, version: u64) -> JournalEntry {
    JournalEntry {
        at_s,
        subject: "settings".into(),
        id: version.to_string(),
        what: format!("settings changed to version {version}"),
    }
}

/// The journal line of an inventory change.
pub(crate) fn host_event(at_s: f64, name: &str, what: String) -> JournalEntry {
    JournalEntry {
        at_s,
        subject: "host".into(),
        id: name.to_string(),
        what,
    }
}
