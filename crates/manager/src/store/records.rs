//! The control loop's records: what one step persists ([`StepRecord`], made from core's typed
//! control values), and what is read back (plans, moves, their transitions, the journal,
//! settings, results, decisions).
//!
//! Plans, moves, the step's memory, the settings and decisions are core's `control` types:
//! the store keeps each as JSON and indexes the few columns it is queried by, which
//! [`PlanRow::of`] and [`MoveRow::of`] derive from the typed value in one place.

use super::types::Json;
use drover_core::control::{ControlSettings, ControlState, Decision, Move, MoveState, Plan};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub use drover_core::control::JournalEntry;

/// The most rows one read returns, whatever limit the caller asks for.
pub const MAX_READ: u32 = 10_000;

/// A journal line as stored: its place in the journal and the line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JournalRow {
    /// Increases with every line appended (a cursor for paging).
    pub seq: u64,
    #[serde(flatten)]
    pub entry: JournalEntry,
}

/// Which journal lines to read. Every filter is optional; the result is bounded by `limit` and
/// by [`MAX_READ`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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

/// A plan, as stored: the columns it is queried by, and the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRow {
    pub id: String,
    /// `relief`, `consolidation`, `drain`, `balance`.
    pub kind: String,
    /// `proposed`, `approved`, `recorded`, `done`, ...
    pub state: String,
    /// The host the plan is about.
    pub host: Option<String>,
    /// When it was made, s (manager clock).
    pub created_s: f64,
    /// Core's plan, explanation included.
    pub body: Plan,
}

impl PlanRow {
    /// The row of `plan`: its columns are read off the plan.
    pub fn of(plan: &Plan) -> PlanRow {
        PlanRow {
            id: plan.id.clone(),
            kind: plan_kind(plan),
            state: plan.state.name().to_string(),
            host: plan.explanation.host.clone(),
            created_s: plan.created_s,
            body: plan.clone(),
        }
    }
}

/// A plan kind's name, as serde spells it (the `plan.kind` column).
fn plan_kind(plan: &Plan) -> String {
    serde_json::to_value(plan.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
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
    /// Core's move.
    pub body: Move,
}

impl MoveRow {
    /// The row of `m`: its columns, and the transition's detail, are read off the move.
    pub fn of(m: &Move) -> MoveRow {
        let detail = match &m.state {
            MoveState::Failed { error, .. } => Some(error.clone()),
            MoveState::Cancelled { reason, .. }
            | MoveState::Skipped { reason, .. }
            | MoveState::Lost { reason, .. } => Some(reason.clone()),
            MoveState::Planned
            | MoveState::Requested { .. }
            | MoveState::Running { .. }
            | MoveState::Done { .. } => None,
        };
        MoveRow {
            id: m.id.clone(),
            plan_id: m.plan.clone(),
            vm: m.vm.clone(),
            from_host: m.from.clone(),
            to_host: m.to.clone(),
            state: m.state.name().to_string(),
            detail,
            body: m.clone(),
        }
    }
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

/// Everything one step changed, stored in one transaction: all of it or none of it.
///
/// The manager stores one after every step and every operation on the control state (approve,
/// cancel, drain, an outcome recorded), and before it carries out any action the step returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's time, s (manager clock).
    pub at_s: f64,
    /// The step's memory after the step.
    pub state: ControlState,
    /// The step's journal lines, appended in order.
    pub journal: Vec<JournalEntry>,
    /// Plans made or changed by the step (stored plans are replaced).
    pub plans: Vec<PlanRow>,
    /// Moves made or changed; a state other than the stored one records a [`Transition`].
    pub moves: Vec<MoveRow>,
    /// When the step made plans: what it decided from and what it returned. Stored once,
    /// shared by the plans its output names (`output.new_plans`), each of which must be among
    /// the step's plans or already stored.
    pub decision: Option<Decision>,
}

impl StepRecord {
    /// The record of a step (or an operation) that took the memory from `before` to `after`
    /// at `at_s`: every plan and move that is new or differs from `before` (plans pruned from
    /// `after` stay stored as they were), the journal lines, and the decision when the step
    /// made plans.
    pub fn changes(
        at_s: f64,
        before: &ControlState,
        after: &ControlState,
        journal: Vec<JournalEntry>,
        decision: Option<Decision>,
    ) -> StepRecord {
        StepRecord::changed_to(at_s, before, after.clone(), journal, decision)
    }

    /// [`StepRecord::changes`], keeping `after` itself (the loop takes it back from the record
    /// once it is stored, instead of copying the memory once more).
    pub fn changed_to(
        at_s: f64,
        before: &ControlState,
        after: ControlState,
        journal: Vec<JournalEntry>,
        decision: Option<Decision>,
    ) -> StepRecord {
        let plans = after
            .plans
            .values()
            .filter(|p| before.plans.get(&p.id) != Some(*p))
            .map(PlanRow::of)
            .collect();
        let moves = after
            .moves
            .values()
            .filter(|m| before.moves.get(&m.id) != Some(*m))
            .map(MoveRow::of)
            .collect();
        StepRecord {
            at_s,
            state: after,
            journal,
            plans,
            moves,
            decision: decision.filter(|d| !d.output.new_plans.is_empty()),
        }
    }

    /// The plans the decision names, in order, without repeats.
    pub(crate) fn decision_plans(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.decision
            .iter()
            .flat_map(|d| &d.output.new_plans)
            .map(String::as_str)
            .filter(|p| seen.insert(*p))
            .collect()
    }
}

/// The step's memory as last stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    /// The time of the step that stored it, s.
    pub at_s: f64,
    pub state: ControlState,
}

/// The current settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SettingsRecord {
    /// 1 for the first settings stored, then one more per change.
    pub version: u64,
    pub updated_s: f64,
    pub settings: ControlSettings,
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

/// A stored migration result as read back: the agent's record with the move it belongs to
/// (what `GET /v1/migrations` lists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MigrationRow {
    /// The move's id, which is also the migration's id on its source agent.
    pub move_id: String,
    pub plan_id: String,
    pub vm: String,
    pub from_host: String,
    pub to_host: String,
    /// The move's state now (`done`, `failed`, `lost`, ...).
    pub move_state: String,
    /// When the result was stored, s (manager clock).
    pub at_s: f64,
    /// The source agent's final record, as it sent it (the agent API's `MigrationRecord`:
    /// state, plan, error, and the result record with times, bytes and downtime).
    #[schemars(schema_with = "agent_record")]
    pub record: Json,
}

fn agent_record(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "The source agent's migration record as it sent it (see the agent API's MigrationRecord)"
    })
}

/// Which migration results to list: newest first (by the time stored, then by move id
/// descending), at most `limit` (and [`MAX_READ`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationQuery {
    /// Only migrations of this VM.
    pub vm: Option<String>,
    pub limit: u32,
}

/// Which plans to list: newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanQuery {
    pub state: Option<String>,
    /// Plans made at or after this time, s.
    pub since_s: Option<f64>,
    pub limit: u32,
}

/// Which moves to list: in the order they were first stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
