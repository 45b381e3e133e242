//! The cluster manager's decisions, as a pure control step (kube-rs' `reconcile -> Action`):
//! the manager crate observes its agents, calls [`step`] with what it saw, its memory
//! ([`ControlState`]), its [`ControlSettings`] and the time, persists the new memory, carries
//! out the returned [`Action`]s, feeds their [`Outcome`]s back with [`record`], and sleeps
//! until the next look. The same step, fed by the simulator instead of agents, drives a
//! trace without QEMU; fed a recorded observation, it replays a decision.
//!
//! - [`observe`]: the input, in cores, bytes and names;
//! - [`moves`]: one migration as a state machine (planned, requested, running, done, failed,
//!   cancelled, skipped, lost);
//! - [`plan`]: a decision with its moves, power actions and explanation, and its state
//!   machine (proposed, approved, recorded, done, failed, cancelled, expired);
//! - [`settings`]: thresholds, mode, technique policy, rules, power model (defaults and why);
//! - [`state`]: the memory between looks;
//! - [`step`]: actions, outcomes and the step's output.

pub mod moves;
pub mod observe;
pub mod plan;
pub mod settings;
pub mod state;
pub mod step;

pub use moves::{Move, MoveEnd, MoveError, MoveEvent, MoveId, MoveState, TechniqueChoice};
pub use observe::{
    HostObs, MigrationObs, MigrationPhase, Observation, PowerState, VmObs, VmPresence,
};
pub use plan::{
    Explanation, MoveWhy, Plan, PlanError, PlanId, PlanKind, PlanState, TechniqueForecast,
};
pub use settings::{
    Balance, ControlSettings, HostPower, Mode, PlacementRule, SettingsError, TechniqueChooser,
};
pub use state::{ControlState, HostMemory, VmMemory};
pub use step::{Action, JournalEntry, Outcome, StepOutput};
