//! Consolidation: empty cold hosts into the others and put them in standby, only when it pays
//! (the same rules as the simulator's Drover policy, in the manager's units).
//!
//! Every `consolidate_every_s`, when `standby` is on. A host is a candidate when it is running
//! (reachable, active), usable, not drained, not hot (no hot sample in its current streak), its
//! load (counting what is arriving or promised) is below `cold`, it has been active for
//! `min_on_s`, no live move goes to or from it, it runs at most `max_moves_per_host` VMs, none of
//! which ended a move within `vm_cooldown_s`, and its idle draw (what standby saves) is at least
//! `min_gain_w`. Candidates go fewest VMs first (each standby costs the fewest moves), then
//! least loaded. All or nothing per host: every unit must find a running destination under
//! `target` (rules, memory, no return within the cooldown; never a host emptied in this look),
//! else nothing of that host moves. A host that receives VMs in this look is not emptied in the
//! same look, and no VM is moved twice in one plan (a VM in a live move is never picked). The
//! plan lists the host for standby, asked once it is empty.
//!
//! **Idle hosts.** At the same interval, a running host that lists no VM, has no live move,
//! has been active for `min_on_s` and is not needed goes to standby by a plan of its own (so
//! recommend mode asks first, and dry-run records it). *Not needed*: no host is hot this look,
//! and the other running hosts' cores, at `target`, still cover everything the running hosts
//! carry or were promised. A drained host that is empty goes to standby at once, every look:
//! the operator wants it out.

use super::explain::{add_unit, commit, Draft};
use super::ledger::{Booking, Ledger};
use super::place::{cooling, find, movable_units, Ctx, Terms, Unit};
use super::plan::PlanKind;
use super::relieve::recorded_recently_kind;
use super::state::ControlState;
use super::step::StepOutput;
use super::technique::Prices;
use super::view::View;

/// One consolidation round: empties what pays, then idle hosts to standby.
pub(crate) fn consolidate(
    state: &mut ControlState,
    ctx: Ctx,
    ledger: &mut Ledger,
    prices: &mut Prices,
    any_hot: bool,
    out: &mut StepOutput,
) {
    let mut order: Vec<usize> = (0..ctx.view.hosts.len())
        .filter(|&h| candidate(state, ctx, ledger, h))
        .collect();
    order.sort_by(|&a, &b| {
        let count = |h: usize| ctx.view.running_on(h).count();
        count(a)
            .cmp(&count(b))
            .then(ctx.view.hosts[a].load.total_cmp(&ctx.view.hosts[b].load))
            .then(a.cmp(&b))
    });
    for h in order {
        // Earlier plans of this look may have made it a destination.
        if ledger.receiving[h] || ledger.in_live[h] > 0 {
            continue;
        }
        if let Some(draft) = empty_host(state, ctx, ledger, prices, h) {
            commit(state, ctx.view, ledger, ctx.settings, draft, ctx.now_s, out);
        }
    }
    if !any_hot {
        standby_idle(state, ctx, ledger, false, out);
    }
}

fn candidate(state: &ControlState, ctx: Ctx, ledger: &Ledger, h: usize) -> bool {
    let (view, s) = (ctx.view, ctx.settings);
    let host = &view.hosts[h];
    let Some(mem) = state.hosts.get(host.name()) else {
        return false;
    };
    let vms = view.running_on(h).count();
    let listed = host
        .vms
        .clone()
        .filter(|&i| view.vms[i].obs.presence != super::observe::VmPresence::Lost)
        .count();
    let on_long_enough = mem
        .active_since_s
        .is_some_and(|t| ctx.now_s - t >= s.min_on_s);
    host.running()
        && host.usable()
        && !ledger.drained[h]
        && mem.hot_streak == 0
        && ledger.load_planning(view, h, 0.0) < s.cold
        && on_long_enough
        && ledger.out_live[h] == 0
        && ledger.in_live[h] == 0
        && vms > 0
        && vms == listed
        && vms <= s.max_moves_per_host as usize
        && s.power_of(host.name()).idle_w >= s.min_gain_w
        && !recorded_recently_kind(ctx, ledger, PlanKind::Consolidation, h)
}

/// Places every unit of host `h` or nothing; the draft when all found a destination.
fn empty_host(
    state: &ControlState,
    ctx: Ctx,
    ledger: &mut Ledger,
    prices: &mut Prices,
    h: usize,
) -> Option<Draft> {
    let view = ctx.view;
    let (mut units, blocked) = movable_units(ctx, ledger, h);
    if !blocked.is_empty() || units.iter().any(|u| cooling(ctx, state, u)) {
        return None;
    }
    units.sort_by(|a, b| b.cpu.total_cmp(&a.cpu).then(a.from.cmp(&b.from)));
    let summary = format!(
        "{} is cold (load {:.2} < cold {:.2}) and its {} VM(s) fit elsewhere under target {:.2}: empty it and put it in standby, saving {:.0} W idle",
        view.hosts[h].name(),
        view.hosts[h].load,
        ctx.settings.cold,
        units.iter().map(|u| u.members.len()).sum::<usize>(),
        ctx.settings.target,
        ctx.settings.power_of(view.hosts[h].name()).idle_w,
    );
    let mut draft = Draft::new(PlanKind::Consolidation, h, summary);
    ledger.emptying[h] = true;
    let mut undo: Vec<(Vec<Booking>, usize, bool)> = Vec::new();
    let terms = Terms {
        no_return: true,
        may_wake: false,
    };
    for unit in &units {
        let Ok(spot) = find(ctx, state, ledger, unit, terms) else {
            rollback(ledger, &undo);
            ledger.emptying[h] = false;
            return None;
        };
        let was_receiving = ledger.receiving[spot.to];
        let why = why_vm(view, unit, h);
        let bookings = add_unit(ctx, ledger, prices, &mut draft, unit, &spot, &why);
        undo.push((bookings, spot.to, was_receiving));
    }
    draft.samples = newest_loads(state, view, h);
    draft.threshold = Some(ctx.settings.cold);
    draft.standby = vec![h];
    Some(draft)
}

fn rollback(ledger: &mut Ledger, undo: &[(Vec<Booking>, usize, bool)]) {
    for (bookings, to, was_receiving) in undo.iter().rev() {
        for b in bookings {
            ledger.unbook(*b);
        }
        ledger.receiving[*to] = *was_receiving;
    }
}

fn why_vm(view: &View, unit: &Unit, h: usize) -> String {
    format!(
        "{} runs on {}, which is emptied: {:.2} cores, {:.1} GiB",
        unit.names(view),
        view.hosts[h].name(),
        unit.cpu,
        super::explain::gib(unit.mem),
    )
}

fn newest_loads(state: &ControlState, view: &View, h: usize) -> Vec<f64> {
    state
        .hosts
        .get(view.hosts[h].name())
        .map(|m| m.loads.iter().rev().take(10).rev().copied().collect())
        .unwrap_or_default()
}

/// Puts idle hosts in standby by plans of their own (`only_drained`: only drained ones, which
/// need no reason beyond being empty).
pub(crate) fn standby_idle(
    state: &mut ControlState,
    ctx: Ctx,
    ledger: &mut Ledger,
    only_drained: bool,
    out: &mut StepOutput,
) {
    if !ctx.settings.standby {
        return;
    }
    let view = ctx.view;
    // Cores of the running hosts that stay (not those on their way to standby), and the load
    // all running hosts carry: what standby may not eat into.
    let pool = |h: usize| {
        let host = &view.hosts[h];
        host.running() && host.usable() && !ledger.drained[h]
    };
    let mut cores: f64 = (0..view.hosts.len())
        .filter(|&h| pool(h) && !ledger.emptying[h] && !ledger.standby_planned[h])
        .map(|h| view.hosts[h].cpus)
        .sum();
    let carried: f64 = (0..view.hosts.len())
        .filter(|&h| pool(h))
        .map(|h| ledger.live_cpu[h] + ledger.plan_cpu[h])
        .sum();
    for h in 0..view.hosts.len() {
        let drained = ledger.drained[h];
        if (only_drained && !drained) || !idle(state, ctx, ledger, h) {
            continue;
        }
        let kind = if drained {
            PlanKind::Drain
        } else {
            PlanKind::Consolidation
        };
        if recorded_recently_kind(ctx, ledger, kind, h) {
            continue;
        }
        let name = view.hosts[h].name();
        let summary = if drained {
            format!("{name} is drained and empty: standby")
        } else {
            let left = cores - view.hosts[h].cpus;
            let needed = !on_long_enough(state, ctx, h) || carried > ctx.settings.target * left;
            if needed {
                continue;
            }
            cores = left;
            format!(
                "{name} runs no VM and is not needed: the other running hosts carry {carried:.2} of {left:.2} cores (at most {:.0}% by target): standby",
                ctx.settings.target * 100.0
            )
        };
        let mut draft = Draft::new(kind, h, summary);
        draft.standby = vec![h];
        ledger.standby_planned[h] = true;
        commit(state, view, ledger, ctx.settings, draft, ctx.now_s, out);
    }
}

fn on_long_enough(state: &ControlState, ctx: Ctx, h: usize) -> bool {
    state
        .hosts
        .get(ctx.view.hosts[h].name())
        .and_then(|m| m.active_since_s)
        .is_some_and(|t| ctx.now_s - t >= ctx.settings.min_on_s)
}

/// Running, empty, nothing moving to or from it, not already on its way to standby.
fn idle(state: &ControlState, ctx: Ctx, ledger: &Ledger, h: usize) -> bool {
    let host = &ctx.view.hosts[h];
    let asked = state
        .hosts
        .get(host.name())
        .is_some_and(|m| standby_pending(m.standby_asked_s, m.active_since_s));
    host.running()
        && ctx.view.empty(h)
        && ledger.out_live[h] == 0
        && ledger.in_live[h] == 0
        && !ledger.standby_planned[h]
        && !ledger.receiving[h]
        && !asked
}

/// Standby was asked since the host last became active (so it is on its way down).
pub(crate) fn standby_pending(asked_s: Option<f64>, active_since_s: Option<f64>) -> bool {
    match (asked_s, active_since_s) {
        (Some(asked), Some(since)) => asked >= since,
        (Some(_), None) => true,
        (None, _) => false,
    }
}
