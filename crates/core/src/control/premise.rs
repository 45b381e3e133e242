//! A plan's premises: what must still hold for its moves to make sense. Checked right before
//! each move starts (a move whose premise vanished is skipped with the reason, not failed), and
//! in recommend mode for every proposed plan at each look and at approval (a proposal whose
//! premise vanished expires with the reason, and approving it is refused).
//!
//! A move's premises: its VM still runs (only) on `from`; `from` is reachable and active;
//! `to` is known, usable, not drained, and reachable and active, or else in standby or waking
//! for this plan (then the move waits for it, at most [`WAKE_TIMEOUT_S`] after the plan was
//! made); and `to` has
//! room: memory for the VM over what it lists and what is arriving, and a load with the VM, and
//! what is arriving, at most `hot`. Plans are made under `target`; they stay valid while
//! the destination stays under `hot`, the same hysteresis band, so a proposal does not expire
//! from one busy second. When `to` lacks room but a VM is leaving it (a move in flight out of
//! it), the move waits for that departure instead of being skipped: that is the order that
//! never overloads a destination on the way.
//!
//! A plan's own premises (proposals only): a relief plan's host is still above `target`; a
//! consolidation or drain plan's host runs nothing the plan does not move (and a drain's host is
//! still drained, a consolidation's host is not above `target` again); a standby-only plan's
//! host is still running and empty.

use super::ledger::Ledger;
use super::moves::{Move, MoveState};
use super::observe::PowerState;
use super::plan::{Plan, PlanKind};
use super::state::ControlState;
use super::view::View;

/// Seconds after its plan was made that a move waits for its destination to wake before it is
/// skipped (a server's boot, firmware included, takes minutes; ten is generous). A proposal
/// that needs a wake expires after as long: the crowding that called for it has changed.
pub const WAKE_TIMEOUT_S: f64 = 600.0;

/// Seconds after a failed wake before it is asked again, and during which no new plan chooses
/// that host to wake (a transient error heals; a broken host is not asked every second).
pub const WAKE_RETRY_S: f64 = 60.0;

/// Whether a premise holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Premise {
    Holds,
    /// Not yet: the move waits (its destination wakes, or a VM is leaving it).
    Wait(String),
    /// Gone, and why.
    Gone(String),
}

/// Extra load and memory the same plan's other moves bring to a destination (proposals are
/// checked as a whole; started moves are already in the ledger).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Extra {
    pub cpu: f64,
    pub mem: u64,
}

fn host_gone(view: &View, name: &str) -> Option<String> {
    let Some(h) = view.host_index(name) else {
        return Some(format!("{name} left the inventory"));
    };
    let host = &view.hosts[h];
    if !host.obs.reachable {
        Some(format!("{name} is unreachable"))
    } else if host.obs.power != PowerState::Active {
        Some(format!("{name} is not active"))
    } else {
        None
    }
}

/// The premises of move `m` of `plan`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn of_move(
    view: &View,
    ledger: &Ledger,
    plan: &Plan,
    m: &Move,
    hot: f64,
    extra: Extra,
    now_s: f64,
) -> Premise {
    match view.locate(&m.vm) {
        Some(i) if view.hosts[view.vms[i].host].name() == m.from => {}
        Some(i) => {
            let now_on = view.hosts[view.vms[i].host].name();
            return Premise::Gone(format!("{} left {}: it runs on {now_on}", m.vm, m.from));
        }
        None if view.ambiguous(&m.vm) => {
            return Premise::Gone(format!("{} runs in two places", m.vm));
        }
        None => return Premise::Gone(format!("{} is not seen running anywhere", m.vm)),
    }
    if let Some(why) = host_gone(view, &m.from) {
        return Premise::Gone(why);
    }
    let Some(to) = view.host_index(&m.to) else {
        return Premise::Gone(format!("{} left the inventory", m.to));
    };
    if ledger.drained[to] {
        return Premise::Gone(format!("{} is being drained", m.to));
    }
    if let Some(why) = host_gone(view, &m.to) {
        let wakes = plan.wake.contains(&m.to);
        let sleeping = matches!(
            view.hosts[to].obs.power,
            PowerState::Standby | PowerState::Waking
        );
        if !(wakes && sleeping) {
            return Premise::Gone(why);
        }
        if now_s - plan.created_s > WAKE_TIMEOUT_S {
            return Premise::Gone(format!(
                "{} did not wake within {WAKE_TIMEOUT_S:.0} s",
                m.to
            ));
        }
        return Premise::Wait(format!("waiting for {} to wake", m.to));
    }
    room(view, ledger, m, to, hot, extra)
}

fn room(view: &View, ledger: &Ledger, m: &Move, to: usize, hot: f64, extra: Extra) -> Premise {
    let cpu = super::view::clean(m.demand_cores) + extra.cpu;
    let mem = m.memory_bytes.saturating_add(extra.mem);
    let load = ledger.load_live(view, to, cpu);
    let fits = ledger.mem_fits_live(view, to, mem);
    if fits && load <= hot {
        return Premise::Holds;
    }
    let why = if fits {
        format!("{} would reach load {load:.2} > hot {hot:.2}", m.to)
    } else {
        format!("{} has no memory left for {}", m.to, m.vm)
    };
    if ledger.out_flight[to] > 0 {
        Premise::Wait(format!("{why}; a VM is leaving it first"))
    } else {
        Premise::Gone(format!("{why}: no room any more"))
    }
}

/// The premises of a proposed plan as a whole: its own, then each planned move's with the
/// plan's other moves to the same destination counted.
pub(crate) fn of_proposal(
    state: &ControlState,
    view: &View,
    ledger: &Ledger,
    plan: &Plan,
    hot: f64,
    target: f64,
    now_s: f64,
) -> Result<(), String> {
    of_plan(state, view, ledger, plan, target)?;
    if !plan.wake.is_empty() && now_s - plan.created_s > WAKE_TIMEOUT_S {
        return Err(format!(
            "it wakes {} and was proposed more than {WAKE_TIMEOUT_S:.0} s ago",
            plan.wake.join(", ")
        ));
    }
    let mut counted: Vec<(&str, Extra)> = Vec::new();
    for m in plan.moves.iter().filter_map(|id| state.moves.get(id)) {
        if m.state != MoveState::Planned {
            continue;
        }
        let extra = counted
            .iter()
            .find(|(to, _)| *to == m.to)
            .map_or(Extra::default(), |(_, e)| *e);
        if let Premise::Gone(why) = of_move(view, ledger, plan, m, hot, extra, now_s) {
            return Err(why);
        }
        let e = Extra {
            cpu: extra.cpu + super::view::clean(m.demand_cores),
            mem: extra.mem.saturating_add(m.memory_bytes),
        };
        match counted.iter_mut().find(|(to, _)| *to == m.to) {
            Some(slot) => slot.1 = e,
            None => counted.push((m.to.as_str(), e)),
        }
    }
    Ok(())
}

fn of_plan(
    state: &ControlState,
    view: &View,
    ledger: &Ledger,
    plan: &Plan,
    target: f64,
) -> Result<(), String> {
    let Some(name) = plan.explanation.host.as_deref() else {
        return Ok(());
    };
    let Some(h) = view.host_index(name) else {
        return Err(format!("{name} left the inventory"));
    };
    let host = &view.hosts[h];
    let moved = |vm: &str| {
        plan.moves
            .iter()
            .filter_map(|id| state.moves.get(id))
            .any(|m| m.vm == vm)
    };
    match plan.kind {
        PlanKind::Relief => {
            let load = ledger.load_live(view, h, 0.0);
            if load <= target {
                return Err(format!(
                    "{name} is no longer hot: load {load:.2} <= target {target:.2}"
                ));
            }
        }
        PlanKind::Drain if !ledger.drained[h] => {
            return Err(format!("{name} is no longer drained"));
        }
        PlanKind::Consolidation | PlanKind::Drain => {
            let stray = host
                .vms
                .clone()
                .map(|i| &view.vms[i])
                .filter(|v| v.obs.presence != super::observe::VmPresence::Lost)
                .find(|v| !moved(v.name()));
            if let Some(v) = stray {
                return Err(format!(
                    "{name} runs {}, which the plan does not move",
                    v.name()
                ));
            }
            if plan.moves.is_empty() && !host.running() {
                return Err(format!("{name} is no longer running"));
            }
            let load = ledger.load_live(view, h, 0.0);
            if plan.kind == PlanKind::Consolidation && load > target {
                return Err(format!(
                    "{name} is busy again: load {load:.2} > target {target:.2}"
                ));
            }
        }
        PlanKind::Balance => {}
    }
    Ok(())
}
