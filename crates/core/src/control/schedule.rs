//! Carrying plans out: proposals whose premises vanished expire; approved plans, oldest first,
//! wake their hosts, start their moves within the slot limits, and put emptied hosts in
//! standby.
//!
//! **Starting a move.** For each approved plan in creation order, each planned move in the
//! plan's order: its premises are checked right before it starts ([`super::premise`]); gone:
//! skipped with the reason; waiting (destination waking, or full until a VM leaves it): left
//! planned; holding: it starts if its source has fewer than `max_out_per_host` and its
//! destination fewer than `max_in_per_host` moves in flight. Starting means the move becomes
//! requested (persisted by the manager before the request goes out) and a `Migrate` action is
//! emitted. A started move counts at once at its destination, so the next move checked sees
//! it: a destination's load, with everything in flight to it, never passes `hot` on the way.
//!
//! **Wakes.** An approved plan's standby hosts to wake are asked once (`wake_asked_s`). A wake
//! the agent refused (see [`super::record`]) is asked again [`WAKE_RETRY_S`] later. A host
//! still not active [`WAKE_TIMEOUT_S`] after the plan was made counts as failed: the moves
//! waiting for it are skipped (their plan ends and relief plans afresh) and no new plan
//! chooses it to wake for [`WAKE_RETRY_S`].
//!
//! **Standby.** An approved plan's host to put in standby is asked once it lists no VM and has
//! no live move, once per activation (`standby_asked_s`).

use super::consolidate::standby_pending;
use super::explain::entry;
use super::ledger::Ledger;
use super::moves::{MoveEvent, MoveState};
use super::observe::PowerState;
use super::plan::{Plan, PlanState};
use super::premise::{of_move, of_proposal, Extra, Premise, WAKE_RETRY_S, WAKE_TIMEOUT_S};
use super::settings::ControlSettings;
use super::state::ControlState;
use super::step::{Action, StepOutput};
use super::track::{describe, migrate_action};
use super::view::View;

/// The trailing counter of an id (`p-3f-12` -> 12), for creation order among equal times.
fn counter(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Ids of the plans in `wanted` state, oldest first.
pub(crate) fn in_order(state: &ControlState, wanted: PlanState) -> Vec<String> {
    let mut plans: Vec<&Plan> = state.plans.values().filter(|p| p.state == wanted).collect();
    plans.sort_by(|a, b| {
        a.created_s
            .total_cmp(&b.created_s)
            .then(counter(&a.id).cmp(&counter(&b.id)))
            .then(a.id.cmp(&b.id))
    });
    plans.into_iter().map(|p| p.id.clone()).collect()
}

/// Expires a plan and skips its planned moves; returns the journal lines.
pub(crate) fn expire(
    state: &mut ControlState,
    view: &View,
    ledger: &mut Ledger,
    id: &str,
    why: &str,
    now_s: f64,
) -> Vec<super::step::JournalEntry> {
    let mut journal = Vec::new();
    let Some(plan) = state.plans.get_mut(id) else {
        return journal;
    };
    if plan.expire(why).is_err() {
        return journal;
    }
    journal.push(entry(now_s, "plan", id, format!("expired: {why}")));
    let moves = plan.moves.clone();
    for mid in moves {
        let Some(m) = state.moves.get_mut(&mid) else {
            continue;
        };
        if m.state != MoveState::Planned {
            continue;
        }
        ledger.release(view, m);
        let skip = MoveEvent::Skip {
            now_s,
            reason: format!("plan expired: {why}"),
        };
        if m.apply(skip).is_ok() {
            journal.push(entry(now_s, "move", &mid, describe(m)));
        }
    }
    journal
}

/// Expires every proposal whose premises no longer hold.
pub(crate) fn expire_stale(
    state: &mut ControlState,
    view: &View,
    ledger: &mut Ledger,
    settings: &ControlSettings,
    now_s: f64,
    out: &mut StepOutput,
) {
    for id in in_order(state, PlanState::Proposed) {
        let verdict = match state.plans.get(&id) {
            Some(p) => of_proposal(state, view, ledger, p, settings.hot, settings.target, now_s),
            None => continue,
        };
        if let Err(why) = verdict {
            let journal = expire(state, view, ledger, &id, &why, now_s);
            out.journal.extend(journal);
        }
    }
}

/// Wakes, starts and standbys for every approved plan.
pub(crate) fn schedule(
    state: &mut ControlState,
    view: &View,
    ledger: &mut Ledger,
    settings: &ControlSettings,
    now_s: f64,
    out: &mut StepOutput,
) {
    let approved = in_order(state, PlanState::Approved);
    for id in &approved {
        wake(state, view, id, now_s, out);
    }
    for id in &approved {
        start(state, view, ledger, settings, id, now_s, out);
    }
    for id in &approved {
        standby(state, view, ledger, settings, id, now_s, out);
    }
}

fn wake(state: &mut ControlState, view: &View, id: &str, now_s: f64, out: &mut StepOutput) {
    let Some(plan) = state.plans.get(id) else {
        return;
    };
    let created = plan.created_s;
    for host in plan.wake.clone() {
        let Some(h) = view.host_index(&host) else {
            continue;
        };
        let power = view.hosts[h].obs.power;
        let Some(mem) = state.hosts.get_mut(&host) else {
            continue;
        };
        if power == PowerState::Active {
            continue;
        }
        let late = now_s - created > WAKE_TIMEOUT_S;
        let retry = mem.wake_failed_s.is_none_or(|f| now_s - f >= WAKE_RETRY_S);
        match mem.wake_asked_s {
            Some(_) if late => {
                mem.wake_asked_s = None;
                mem.wake_failed_s = Some(now_s);
                out.journal.push(entry(
                    now_s,
                    "host",
                    &host,
                    format!("did not wake within {WAKE_TIMEOUT_S:.0} s (plan {id})"),
                ));
            }
            None if power == PowerState::Standby && retry && !late => {
                mem.wake_asked_s = Some(now_s);
                out.actions.push(Action::Wake { host: host.clone() });
                out.journal.push(entry(
                    now_s,
                    "host",
                    &host,
                    format!("wake asked (plan {id})"),
                ));
            }
            _ => {}
        }
    }
}

fn start(
    state: &mut ControlState,
    view: &View,
    ledger: &mut Ledger,
    settings: &ControlSettings,
    id: &str,
    now_s: f64,
    out: &mut StepOutput,
) {
    let Some(plan) = state.plans.get(id) else {
        return;
    };
    let moves = plan.moves.clone();
    for mid in moves {
        let (Some(plan), Some(m)) = (state.plans.get(id), state.moves.get(&mid)) else {
            continue;
        };
        if m.state != MoveState::Planned {
            continue;
        }
        let premise = of_move(view, ledger, plan, m, settings.hot, Extra::default(), now_s);
        let event = match premise {
            Premise::Wait(_) => continue,
            Premise::Gone(reason) => MoveEvent::Skip { now_s, reason },
            Premise::Holds => {
                let (Some(from), Some(to)) = (view.host_index(&m.from), view.host_index(&m.to))
                else {
                    continue;
                };
                let free = ledger.out_flight[from] < settings.max_out_per_host.max(1)
                    && ledger.in_flight[to] < settings.max_in_per_host.max(1);
                if !free {
                    continue;
                }
                ledger.start(view, m, from, to);
                MoveEvent::Request { now_s }
            }
        };
        let Some(m) = state.moves.get_mut(&mid) else {
            continue;
        };
        if matches!(event, MoveEvent::Skip { .. }) {
            ledger.release(view, m);
        }
        if m.apply(event).is_err() {
            continue;
        }
        if m.state.in_flight() {
            out.actions.push(migrate_action(m, settings));
        }
        out.journal.push(entry(now_s, "move", &mid, describe(m)));
    }
}

fn standby(
    state: &mut ControlState,
    view: &View,
    ledger: &Ledger,
    settings: &ControlSettings,
    id: &str,
    now_s: f64,
    out: &mut StepOutput,
) {
    if !settings.standby {
        return;
    }
    let Some(plan) = state.plans.get(id) else {
        return;
    };
    for host in plan.standby.clone() {
        let Some(h) = view.host_index(&host) else {
            continue;
        };
        let ready = view.hosts[h].running()
            && view.empty(h)
            && ledger.out_live[h] == 0
            && ledger.in_live[h] == 0;
        let Some(mem) = state.hosts.get_mut(&host) else {
            continue;
        };
        if !ready || standby_pending(mem.standby_asked_s, mem.active_since_s) {
            continue;
        }
        mem.standby_asked_s = Some(now_s);
        out.actions.push(Action::Standby { host: host.clone() });
        out.journal.push(entry(
            now_s,
            "host",
            &host,
            format!("standby asked (plan {id})"),
        ));
    }
}
