//! What an operator (or the manager, on an agent's answer) does to the step's memory between
//! looks, purely: approve or cancel a plan, drain or undrain a host, and feed back what
//! carrying out an action came to. Each returns its journal lines; the manager persists the
//! memory and the lines together.

use super::explain::entry;
use super::ledger::Ledger;
use super::moves::{MoveEvent, MoveState};
use super::observe::Observation;
use super::plan::{PlanError, PlanKind, PlanState};
use super::premise::of_proposal;
use super::schedule::expire;
use super::settings::ControlSettings;
use super::state::ControlState;
use super::step::{Action, JournalEntry, Outcome};
use super::track::{cancel_planned, transition};
use super::view::View;
use thiserror::Error;

/// An operator command that cannot be carried out; nothing changed unless the variant says so.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ControlError {
    #[error("no plan {0}")]
    UnknownPlan(String),
    #[error("no host {0} (a host is known once an observation listed it)")]
    UnknownHost(String),
    /// The plan's state does not allow the operation.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The proposal's premises no longer hold: it *was* expired (its planned moves skipped),
    /// and `journal` says so.
    #[error("plan {plan} no longer holds: {why}")]
    Expired {
        plan: String,
        why: String,
        journal: Vec<JournalEntry>,
    },
}

/// Actions to carry out and journal lines, from an operator command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpOutput {
    pub actions: Vec<Action>,
    pub journal: Vec<JournalEntry>,
}

/// Approves a proposed plan after checking its premises against `obs`; its moves start at the
/// next look.
///
/// # Errors
/// [`ControlError::UnknownPlan`]; [`ControlError::Plan`] when it is not proposed;
/// [`ControlError::Expired`] when its premises vanished (it is then expired in `state`).
pub fn approve(
    state: &mut ControlState,
    plan_id: &str,
    obs: &Observation,
    settings: &ControlSettings,
    now_s: f64,
) -> Result<Vec<JournalEntry>, ControlError> {
    let plan = state
        .plans
        .get(plan_id)
        .ok_or_else(|| ControlError::UnknownPlan(plan_id.into()))?;
    if plan.state != PlanState::Proposed {
        return Err(PlanError {
            id: plan.id.clone(),
            state: plan.state.name(),
            operation: "approve",
        }
        .into());
    }
    let view = View::new(obs);
    let mut ledger = Ledger::new(&view, state);
    let verdict = of_proposal(
        state,
        &view,
        &ledger,
        plan,
        settings.hot,
        settings.target,
        now_s,
    );
    if let Err(why) = verdict {
        let journal = expire(state, &view, &mut ledger, plan_id, &why, now_s);
        return Err(ControlError::Expired {
            plan: plan_id.into(),
            why,
            journal,
        });
    }
    let plan = state
        .plans
        .get_mut(plan_id)
        .ok_or_else(|| ControlError::UnknownPlan(plan_id.into()))?;
    plan.approve()?;
    Ok(vec![entry(now_s, "plan", plan_id, "approved".into())])
}

/// Cancels a proposed or approved plan: its planned moves are cancelled, and a `Cancel` is
/// returned for each move already asked of an agent (a post-copy past its switch cannot be
/// taken back and finishes; the journal says how each ends).
///
/// # Errors
/// [`ControlError::UnknownPlan`]; [`ControlError::Plan`] when the plan is already final.
pub fn cancel_plan(
    state: &mut ControlState,
    plan_id: &str,
    now_s: f64,
) -> Result<OpOutput, ControlError> {
    let plan = state
        .plans
        .get_mut(plan_id)
        .ok_or_else(|| ControlError::UnknownPlan(plan_id.into()))?;
    plan.cancel("cancelled by an operator")?;
    let moves = plan.moves.clone();
    let mut out = OpOutput {
        actions: Vec::new(),
        journal: vec![entry(
            now_s,
            "plan",
            plan_id,
            "cancelled by an operator".into(),
        )],
    };
    out.journal.extend(cancel_planned(
        state,
        plan_id,
        "plan cancelled by an operator",
        now_s,
    ));
    for m in moves.iter().filter_map(|id| state.moves.get(id)) {
        if m.state.in_flight() {
            out.actions.push(Action::Cancel {
                move_id: m.id.clone(),
                from: m.from.clone(),
            });
            out.journal.push(entry(
                now_s,
                "move",
                &m.id,
                format!("{} {} -> {}: cancel asked", m.vm, m.from, m.to),
            ));
        }
    }
    Ok(out)
}

/// Marks `host` drained: the next looks evacuate it and keep it empty until [`undrain`].
///
/// # Errors
/// [`ControlError::UnknownHost`] when no observation ever listed it.
pub fn drain(
    state: &mut ControlState,
    host: &str,
    now_s: f64,
) -> Result<Vec<JournalEntry>, ControlError> {
    if !state.hosts.contains_key(host) {
        return Err(ControlError::UnknownHost(host.into()));
    }
    let what = if state.drained.insert(host.to_string()) {
        "drained by an operator: its VMs leave and none arrive"
    } else {
        "already drained"
    };
    Ok(vec![entry(now_s, "host", host, what.into())])
}

/// Ends a drain: the host takes VMs again; its active drain plans are cancelled (moves already
/// under way finish).
///
/// # Errors
/// [`ControlError::UnknownHost`] when no observation ever listed it.
pub fn undrain(
    state: &mut ControlState,
    host: &str,
    now_s: f64,
) -> Result<Vec<JournalEntry>, ControlError> {
    if !state.hosts.contains_key(host) && !state.drained.contains(host) {
        return Err(ControlError::UnknownHost(host.into()));
    }
    if !state.drained.remove(host) {
        return Ok(vec![entry(now_s, "host", host, "was not drained".into())]);
    }
    let mut journal = vec![entry(
        now_s,
        "host",
        host,
        "undrained by an operator".into(),
    )];
    let plans: Vec<String> = state
        .plans
        .values()
        .filter(|p| p.kind == PlanKind::Drain && !p.state.is_final())
        .filter(|p| p.explanation.host.as_deref() == Some(host))
        .map(|p| p.id.clone())
        .collect();
    for id in plans {
        if let Some(p) = state.plans.get_mut(&id) {
            if p.cancel("the host was undrained").is_ok() {
                journal.push(entry(now_s, "plan", &id, "cancelled: undrained".into()));
            }
        }
        journal.extend(cancel_planned(state, &id, "the host was undrained", now_s));
    }
    Ok(journal)
}

/// Feeds back what carrying out an action came to.
///
/// - `MigrateAccepted`: the move runs. `MigrateRefused`: it failed, and its plan fails (its
///   moves not started yet are cancelled). `MigrateUnreachable`: it stays requested and is
///   asked again at the next look whose observation shows its source reachable.
/// - `Standby` / `Wake`: noted. A failed standby is asked again at a later consolidation round;
///   a failed wake clears `wake_asked_s` and is asked again
///   [`super::premise::WAKE_RETRY_S`] later.
/// - `Cancel`: noted (a refused cancel means the migration runs to its end).
pub fn record(state: &mut ControlState, outcome: Outcome, now_s: f64) -> Vec<JournalEntry> {
    let nothing = Observation::default();
    let view = View::new(&nothing);
    match outcome {
        Outcome::MigrateAccepted { move_id } => {
            let running = state
                .moves
                .get(&move_id)
                .is_some_and(|m| matches!(m.state, MoveState::Running { .. }));
            if running {
                return Vec::new();
            }
            transition(state, &view, &move_id, MoveEvent::Accepted { now_s }, now_s)
        }
        Outcome::MigrateRefused { move_id, error } => {
            let event = MoveEvent::Refused { now_s, error };
            transition(state, &view, &move_id, event, now_s)
        }
        Outcome::MigrateUnreachable { move_id, error } => vec![entry(
            now_s,
            "move",
            &move_id,
            format!("source agent unreachable ({error}): stays requested, asked again"),
        )],
        Outcome::Standby { host, error } => standby_outcome(state, &host, error, now_s),
        Outcome::Wake { host, error } => wake_outcome(state, &host, error, now_s),
        Outcome::Cancel { move_id, error } => {
            let what = match error {
                None => "cancel accepted".to_string(),
                Some(e) => format!("cancel refused ({e}): the migration runs to its end"),
            };
            vec![entry(now_s, "move", &move_id, what)]
        }
    }
}

fn standby_outcome(
    state: &mut ControlState,
    host: &str,
    error: Option<String>,
    now_s: f64,
) -> Vec<JournalEntry> {
    let what = match error {
        None => "standby accepted".to_string(),
        Some(e) => {
            if let Some(m) = state.hosts.get_mut(host) {
                m.standby_asked_s = None;
            }
            format!("standby failed ({e}): asked again at a later consolidation round")
        }
    };
    vec![entry(now_s, "host", host, what)]
}

fn wake_outcome(
    state: &mut ControlState,
    host: &str,
    error: Option<String>,
    now_s: f64,
) -> Vec<JournalEntry> {
    let what = match error {
        None => "wake accepted".to_string(),
        Some(e) => {
            if let Some(m) = state.hosts.get_mut(host) {
                m.wake_asked_s = None;
                m.wake_failed_s = Some(now_s);
            }
            format!(
                "wake failed ({e}): asked again in {:.0} s",
                super::premise::WAKE_RETRY_S
            )
        }
    };
    vec![entry(now_s, "host", host, what)]
}
