//! Moves in flight, brought up to date from what their source agents report (matched by id: a
//! move's id is its migration's id), and plans finished once all their moves are.
//!
//! | source agent reports | requested move | running move |
//! |---|---|---|
//! | running | running | - |
//! | completed | done | done |
//! | failed, cancelled | failed, cancelled | failed, cancelled |
//! | paused (post-copy left paused) | failed, VM on the destination | failed, VM on the destination |
//! | interrupted | lost | lost |
//! | unknown, or no report | asked again (its `Migrate` re-emitted, once a look) | lost: the agent forgot it |
//! | (source unreachable) | waits | waits |
//!
//! Two refinements: a requested move of a cancelled plan that its agent never had is cancelled
//! instead of asked again; a requested move whose VM no host lists any more (both hosts
//! answering) is lost.
//!
//! When a move ends, its VM's memory records the time (`last_moved_s`: cooldowns) and, if the
//! VM really left, the host it left (`left`: no return within the cooldown) and the source's hot
//! streak restarts: its samples from before the departure no longer describe it. A move that
//! failed or was lost fails its plan: the plan's moves not started yet are cancelled (they were
//! planned assuming all of them), and the next looks plan afresh.

use super::explain::entry;
use super::moves::{MoveEnd, MoveEvent, MoveState};
use super::observe::MigrationPhase;
use super::plan::PlanState;
use super::settings::ControlSettings;
use super::state::ControlState;
use super::step::{Action, JournalEntry, StepOutput};
use super::view::View;

/// What to do with one move in flight.
enum Next {
    Event(MoveEvent),
    AskAgain,
    Wait,
}

/// Brings every move in flight up to date; re-asks requested moves their agent does not know.
pub(crate) fn track(
    state: &mut ControlState,
    view: &View,
    settings: &ControlSettings,
    now_s: f64,
    out: &mut StepOutput,
) {
    let flying: Vec<String> = state.in_flight().map(|m| m.id.clone()).collect();
    for id in flying {
        match next(state, view, &id, now_s) {
            Next::Wait => {}
            Next::AskAgain => ask_again(state, settings, &id, now_s, out),
            Next::Event(event) => {
                let journal = transition(state, view, &id, event, now_s);
                out.journal.extend(journal);
            }
        }
    }
}

fn next(state: &ControlState, view: &View, id: &str, now_s: f64) -> Next {
    let Some(m) = state.moves.get(id) else {
        return Next::Wait;
    };
    let requested = matches!(m.state, MoveState::Requested { .. });
    let report = view.migration(id);
    let phase = report.map_or(MigrationPhase::Unknown, |r| r.phase);
    let error = report.and_then(|r| r.error.clone());
    let on_dest = report.is_some_and(|r| r.vm_on_destination);
    let ended = |outcome, vm_on_destination, error| {
        Next::Event(MoveEvent::Ended {
            now_s,
            outcome,
            vm_on_destination,
            error,
        })
    };
    match phase {
        MigrationPhase::Running if requested => Next::Event(MoveEvent::Accepted { now_s }),
        MigrationPhase::Running => Next::Wait,
        MigrationPhase::Completed => ended(MoveEnd::Completed, true, error),
        MigrationPhase::Failed => ended(MoveEnd::Failed, on_dest, error),
        MigrationPhase::Cancelled => ended(MoveEnd::Cancelled, on_dest, error),
        MigrationPhase::Paused => ended(
            MoveEnd::Failed,
            true,
            Some(error.unwrap_or_else(|| {
                "post-copy left paused: the VM is on the destination, recoverable".into()
            })),
        ),
        MigrationPhase::Interrupted => Next::Event(MoveEvent::Vanished {
            now_s,
            reason: "the source agent restarted and could not establish the outcome".into(),
        }),
        MigrationPhase::Unknown => unknown(state, view, id, requested, now_s),
    }
}

/// The source agent has no record of the migration (or did not report it).
fn unknown(state: &ControlState, view: &View, id: &str, requested: bool, now_s: f64) -> Next {
    let Some(m) = state.moves.get(id) else {
        return Next::Wait;
    };
    let reachable = |h: &str| {
        view.host_index(h)
            .is_some_and(|i| view.hosts[i].obs.reachable)
    };
    if !reachable(&m.from) {
        return Next::Wait;
    }
    let cancelled = state
        .plans
        .get(&m.plan)
        .is_some_and(|p| p.state == PlanState::Cancelled);
    if requested && cancelled {
        return Next::Event(MoveEvent::Ended {
            now_s,
            outcome: MoveEnd::Cancelled,
            vm_on_destination: false,
            error: Some("plan cancelled before the source agent started it".into()),
        });
    }
    if requested && reachable(&m.to) && !view.listed_anywhere(&m.vm) {
        return Next::Event(MoveEvent::Vanished {
            now_s,
            reason: format!("{} is listed on no host", m.vm),
        });
    }
    if requested {
        return Next::AskAgain;
    }
    let where_now = match view.locate(&m.vm) {
        Some(i) => format!("{} runs on {}", m.vm, view.hosts[view.vms[i].host].name()),
        None => format!("{} is not seen running anywhere", m.vm),
    };
    Next::Event(MoveEvent::Vanished {
        now_s,
        reason: format!("the source agent no longer reports migration {id}; {where_now}"),
    })
}

fn ask_again(
    state: &ControlState,
    settings: &ControlSettings,
    id: &str,
    now_s: f64,
    out: &mut StepOutput,
) {
    let Some(m) = state.moves.get(id) else {
        return;
    };
    let already = out
        .actions
        .iter()
        .any(|a| matches!(a, Action::Migrate { move_id, .. } if move_id == id));
    if already {
        return;
    }
    out.actions.push(migrate_action(m, settings));
    out.journal.push(entry(
        now_s,
        "move",
        id,
        format!(
            "{} {} -> {}: the source agent does not know it yet; asked again",
            m.vm, m.from, m.to
        ),
    ));
}

/// The action that asks a move's source agent to run it.
pub(crate) fn migrate_action(m: &super::moves::Move, settings: &ControlSettings) -> Action {
    Action::Migrate {
        move_id: m.id.clone(),
        vm: m.vm.clone(),
        from: m.from.clone(),
        to: m.to.clone(),
        technique: m.technique.technique,
        knobs: settings.knobs.clone(),
    }
}

/// Applies `event` to move `id` and everything that follows from it; returns the journal.
pub(crate) fn transition(
    state: &mut ControlState,
    view: &View,
    id: &str,
    event: MoveEvent,
    now_s: f64,
) -> Vec<JournalEntry> {
    let Some(m) = state.moves.get_mut(id) else {
        return vec![entry(now_s, "move", id, "no such move".into())];
    };
    let was_flying = m.state.in_flight();
    if let Err(e) = m.apply(event) {
        return vec![entry(now_s, "move", id, format!("ignored: {e}"))];
    }
    let m = m.clone();
    let mut journal = vec![entry(now_s, "move", id, describe(&m))];
    if !m.state.is_final() {
        return journal;
    }
    if was_flying {
        note_vm(state, view, &m, now_s);
    }
    if matches!(m.state, MoveState::Failed { .. } | MoveState::Lost { .. }) {
        let why = format!("plan failed: move {id} {}", m.state.name());
        journal.extend(cancel_planned(state, &m.plan, &why, now_s));
    }
    journal
}

/// The VM's memory after its move ended.
fn note_vm(state: &mut ControlState, view: &View, m: &super::moves::Move, now_s: f64) {
    let left = match &m.state {
        MoveState::Done { .. } => true,
        MoveState::Failed {
            vm_on_destination, ..
        } => *vm_on_destination,
        MoveState::Lost { .. } => view
            .locate(&m.vm)
            .is_some_and(|i| view.hosts[view.vms[i].host].name() == m.to),
        _ => false,
    };
    let moved_bytes = view
        .migration(&m.id)
        .filter(|r| r.phase == MigrationPhase::Completed)
        .and_then(|r| r.transferred_bytes);
    let vm = state.vms.entry(m.vm.clone()).or_default();
    vm.last_moved_s = Some(now_s);
    if moved_bytes.is_some() {
        vm.moved_bytes = moved_bytes;
    }
    if left {
        vm.left = Some((m.from.clone(), now_s));
        if let Some(h) = state.hosts.get_mut(&m.from) {
            h.hot_streak = 0;
        }
    }
}

/// Cancels the moves of plan `plan` that have not started; returns the journal.
pub(crate) fn cancel_planned(
    state: &mut ControlState,
    plan: &str,
    why: &str,
    now_s: f64,
) -> Vec<JournalEntry> {
    let ids = state
        .plans
        .get(plan)
        .map(|p| p.moves.clone())
        .unwrap_or_default();
    let mut journal = Vec::new();
    for id in ids {
        let Some(m) = state.moves.get_mut(&id) else {
            continue;
        };
        if m.state != MoveState::Planned {
            continue;
        }
        let cancel = MoveEvent::Cancel {
            now_s,
            reason: why.to_string(),
        };
        if m.apply(cancel).is_ok() {
            journal.push(entry(now_s, "move", &id, describe(m)));
        }
    }
    journal
}

/// One line for a move's state.
pub(crate) fn describe(m: &super::moves::Move) -> String {
    let head = format!("{} {} -> {}", m.vm, m.from, m.to);
    match &m.state {
        MoveState::Planned => format!("{head}: planned"),
        MoveState::Requested { .. } => format!("{head}: requested ({})", m.technique.technique),
        MoveState::Running { .. } => format!("{head}: running"),
        MoveState::Done { .. } => format!("{head}: done"),
        MoveState::Failed {
            error,
            vm_on_destination,
            ..
        } => {
            let side = if *vm_on_destination {
                "the VM is on the destination"
            } else {
                "the VM stayed on the source"
            };
            format!("{head}: failed ({error}); {side}")
        }
        MoveState::Cancelled { reason, .. } => format!("{head}: cancelled ({reason})"),
        MoveState::Skipped { reason, .. } => format!("{head}: skipped ({reason})"),
        MoveState::Lost { reason, .. } => format!("{head}: lost ({reason})"),
    }
}

/// Finishes every approved plan whose moves are all final.
pub(crate) fn finish_plans(state: &mut ControlState, now_s: f64, out: &mut StepOutput) {
    let ready: Vec<String> = state
        .plans
        .values()
        .filter(|p| p.state == PlanState::Approved)
        .filter(|p| {
            p.moves
                .iter()
                .all(|id| state.moves.get(id).is_none_or(|m| m.state.is_final()))
        })
        .map(|p| p.id.clone())
        .collect();
    for id in ready {
        let (mut done, mut failed, mut other) = (0, 0, 0);
        let mut unasked = Vec::new();
        if let Some(p) = state.plans.get(&id) {
            for m in p.moves.iter().filter_map(|m| state.moves.get(m)) {
                match m.state {
                    MoveState::Done { .. } => done += 1,
                    MoveState::Failed { .. } | MoveState::Lost { .. } => failed += 1,
                    _ => other += 1,
                }
            }
            unasked = p
                .standby
                .iter()
                .filter(|h| {
                    state
                        .hosts
                        .get(h.as_str())
                        .and_then(|m| m.standby_asked_s)
                        .is_none_or(|t| t < p.created_s)
                })
                .cloned()
                .collect();
        }
        let Some(p) = state.plans.get_mut(&id) else {
            continue;
        };
        if p.finish(failed > 0).is_err() {
            continue;
        }
        let mut what = format!(
            "{}: {done} move(s) done, {failed} failed or lost, {other} skipped or cancelled",
            p.state.name()
        );
        if !unasked.is_empty() {
            let note = format!(
                "not put in standby: {} (not empty or not idle when the plan ended; consolidation asks again once it is)",
                unasked.join(", ")
            );
            what = format!("{what}; {note}");
            p.note = Some(note);
        }
        out.journal.push(entry(now_s, "plan", &id, what));
    }
}
