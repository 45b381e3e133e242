//! The cluster manager's decisions, as a pure control step (kube-rs' `reconcile -> Action`):
//! the manager crate observes its agents, calls [`step()`] with what it saw, its memory
//! ([`ControlState`]), its [`ControlSettings`] and the time, persists the new memory, carries
//! out the returned [`Action`]s, feeds their [`Outcome`]s back with [`record`], and sleeps
//! until the next look. The same step, fed by the simulator instead of agents, drives a
//! trace without QEMU; fed a recorded observation, it replays a decision: the step reads no
//! clock, no randomness and no I/O, and iterates only in inventory or id order.
//!
//! # One look
//!
//! ```text
//!  Observation ──> view (sane, indexed) ──> upkeep: loads, hot streaks, active since, energy
//!                                      ──> track: moves in flight from the agents' reports
//!                                      ──> ledger: what each host carries, is promised, its slots
//!                                      ──> expire proposals whose premises vanished
//!                                      ──> decide: relief, drain, consolidation, balance -> plans
//!                                      ──> schedule: wake, start moves, standby -> actions
//!                                      ──> finish plans whose moves are all final
//!                                      ──> StepOutput { actions, next_look_s, journal, new_plans }
//! ```
//!
//! Types (the contract with the manager crate):
//! - [`observe`]: the input, in cores, bytes and names;
//! - [`moves`]: one migration as a state machine (planned, requested, running, done, failed,
//!   cancelled, skipped, lost);
//! - [`plan`]: a decision with its moves, power actions and explanation, and its state
//!   machine (proposed, approved, recorded, done, failed, cancelled, expired);
//! - [`settings`]: thresholds, mode, technique policy, rules, power model (defaults and why);
//! - [`state`]: the memory between looks;
//! - [`mod@step`]: actions, outcomes and the step's output;
//! - [`decision`]: one look's inputs and output, replayable.
//!
//! What each decision module decides (docs/manager-policy.md has the whole policy):
//! - `view`: what the observation says, made sane once (NaN, negative, duplicate names);
//! - `upkeep`: each host's recent loads, hot streak and activity; the energy account;
//! - `track`: how each move in flight stands (and which to ask again); plans that are over;
//! - `ledger`: what each host carries, what moves in flight and plans promise it, its slots;
//! - `detect`: which hosts are hot (reactive streak, optional forecast);
//! - `relieve`: which VMs leave a hot host;
//! - `place`: where a unit of VMs goes (shared by every kind of plan), and which host to wake;
//! - `rules`: what affinity, anti-affinity and VM-to-host rules allow; which VMs move together;
//! - `technique`: which technique each move uses and what it is predicted to cost;
//! - `group`: when a plan moves several VMs off one host, their techniques and order from
//!   core's traffic-sensitive group choice;
//! - `consolidate`: which cold hosts are emptied, which idle hosts go to standby;
//! - `drain`: how a drained host is evacuated;
//! - `balance`: the one move that evens loads out (optional);
//! - `premise`: whether a planned move, or a proposal, still makes sense;
//! - `schedule`: which moves start now, which wait, which are skipped; wakes and standbys;
//! - `explain`: a decision made a plan, with its explanation and journal;
//! - `ops`: approve, cancel, drain, undrain, and outcomes fed back ([`record`]).
//!
//! Cost of a look: O(hosts + VMs + live moves + plans kept) to index and track, plus
//! O(candidate units x hosts) only when a decision is planned (relief, consolidation, drain,
//! balance). Nothing quadratic is allocated. The manager should prune final plans and moves it
//! has stored ([`ControlState::prune`]) so that the plans kept stay few.

pub mod decision;
pub mod moves;
pub mod observe;
pub mod plan;
pub mod settings;
pub mod state;
pub mod step;

mod balance;
mod consolidate;
mod detect;
mod drain;
mod explain;
mod group;
mod ledger;
mod ops;
mod place;
mod premise;
mod relieve;
mod rules;
mod schedule;
mod technique;
mod track;
mod upkeep;
mod view;

#[cfg(test)]
mod tests;

pub use decision::{check_inputs, Decision, InputError, DECISION_FORMAT, MAX_TIME_S};
pub use detect::{PREDICT_MIN_SAMPLES, PREDICT_WINDOW};
pub use moves::{Move, MoveEnd, MoveError, MoveEvent, MoveId, MoveState, TechniqueChoice};
pub use observe::{
    HostObs, MigrationObs, MigrationPhase, Observation, ObservationError, PowerState, VmObs,
    VmPresence,
};
pub use ops::{approve, cancel_plan, drain, record, undrain, ControlError, OpOutput};
pub use plan::{
    Explanation, MoveWhy, Plan, PlanError, PlanId, PlanKind, PlanState, TechniqueForecast,
};
pub use premise::{WAKE_RETRY_S, WAKE_TIMEOUT_S};
pub use settings::{
    Balance, ControlSettings, HostPower, Mode, PlacementRule, SettingsError, TechniqueChooser,
};
pub use state::{ControlState, HostMemory, VmMemory};
pub use step::{Action, JournalEntry, Outcome, StepOutput};

use ledger::Ledger;
use place::Ctx;
use rules::Rules;
use technique::Prices;
use view::View;

/// How soon to look again while anything is under way (moves in flight or waiting, a hot
/// streak building, a host waking), s: the manager's sampling interval.
pub const BUSY_LOOK_S: f64 = 1.0;

/// One look: folds `obs` into `state` and decides, at manager time `now_s` (seconds).
///
/// Call it once per collected observation: each call is one sample of every host's load.
/// A `now_s` that is not a finite number is refused silently: nothing changes, no action, and
/// the next look is due in [`BUSY_LOOK_S`] of the last good one.
pub fn step(
    state: &mut ControlState,
    obs: &Observation,
    settings: &ControlSettings,
    now_s: f64,
) -> StepOutput {
    let mut out = StepOutput::default();
    if !now_s.is_finite() {
        out.next_look_s = state.last_step_s.unwrap_or(0.0) + BUSY_LOOK_S;
        return out;
    }
    let view = View::new(obs);
    upkeep::upkeep(state, &view, settings, now_s);
    state.last_step_s = Some(now_s);
    track::track(state, &view, settings, now_s, &mut out);
    let mut ledger = Ledger::new(&view, state);
    schedule::expire_stale(state, &view, &mut ledger, settings, now_s, &mut out);
    decide(state, &view, &mut ledger, settings, now_s, &mut out);
    schedule::schedule(state, &view, &mut ledger, settings, now_s, &mut out);
    track::finish_plans(state, now_s, &mut out);
    out.next_look_s = next_look(state, settings, now_s);
    out
}

/// New plans: relief first (a hotspot hurts now), then drain (an operator asked), then, when
/// due, consolidation and balance.
fn decide(
    state: &mut ControlState,
    view: &View,
    ledger: &mut Ledger,
    settings: &ControlSettings,
    now_s: f64,
    out: &mut StepOutput,
) {
    let rules = Rules::new(&settings.rules);
    let ctx = Ctx {
        view,
        rules: &rules,
        settings,
        now_s,
    };
    let mut prices = Prices::default();
    let any_hot = relieve::relieve(state, ctx, ledger, &mut prices, out);
    let consolidation_due = due(
        state.last_consolidation_s,
        settings.consolidate_every_s,
        now_s,
    );
    if consolidation_due {
        state.last_consolidation_s = Some(now_s);
    }
    drain::drain_hosts(state, ctx, ledger, &mut prices, consolidation_due, out);
    if consolidation_due && settings.standby {
        consolidate::consolidate(state, ctx, ledger, &mut prices, any_hot, out);
    }
    if let Some(b) = settings.balance {
        if due(state.last_balance_s, b.every_s, now_s) {
            state.last_balance_s = Some(now_s);
            if !any_hot {
                balance::balance(state, ctx, ledger, &mut prices, out);
            }
        }
    }
}

/// Whether something done every `every_s` (last at `last_s`) is due; never for a period that
/// is not a positive number.
fn due(last_s: Option<f64>, every_s: f64, now_s: f64) -> bool {
    if !(every_s.is_finite() && every_s > 0.0) {
        return false;
    }
    last_s.is_none_or(|t| now_s - t >= every_s || now_s < t)
}

/// When to look again at the latest: in [`BUSY_LOOK_S`] while anything is under way (a move
/// requested, running or planned in an approved plan, a hot streak building, a wake asked);
/// otherwise when the next consolidation or balance round is due, and never later than one
/// consolidation interval.
fn next_look(state: &ControlState, settings: &ControlSettings, now_s: f64) -> f64 {
    let busy = state.moves.values().any(|m| {
        m.state.in_flight()
            || (m.state == MoveState::Planned
                && state
                    .plans
                    .get(&m.plan)
                    .is_some_and(|p| p.state == PlanState::Approved))
    }) || state
        .hosts
        .values()
        .any(|h| h.hot_streak > 0 || h.wake_asked_s.is_some());
    if busy {
        return now_s + BUSY_LOOK_S;
    }
    let every = if settings.consolidate_every_s.is_finite() && settings.consolidate_every_s > 0.0 {
        settings.consolidate_every_s
    } else {
        60.0
    };
    let mut next = now_s + every;
    if settings.standby {
        if let Some(t) = state.last_consolidation_s {
            next = next.min(t + every);
        }
    }
    if let (Some(b), Some(t)) = (settings.balance, state.last_balance_s) {
        if b.every_s.is_finite() && b.every_s > 0.0 {
            next = next.min(t + b.every_s);
        }
    }
    next.max(now_s + BUSY_LOOK_S)
}
