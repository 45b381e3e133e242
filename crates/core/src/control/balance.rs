//! Load balancing (optional, `settings.balance`): every `every_s`, when the most and the least
//! loaded running hosts differ by more than `spread`, one move that best evens them out.
//!
//! Kept simple on purpose: one move a round, from the most loaded running host, of the unit
//! and to the destination that leave the lower peak of the two hosts' loads, provided the peak
//! really falls. Everything else holds as for any move: destinations under `target` with the
//! memory, hard rules kept, soft rules preferred, no VM that moved within `vm_cooldown_s` and
//! no return to a host a VM left within it, never a drained host, nothing while a host is hot
//! (relief comes first) or while the busiest host has live moves.

use super::explain::{add_unit, commit, Draft};
use super::ledger::Ledger;
use super::place::{admits_unit, cooling, movable_units, Ctx, Spot, Terms, Tier, Unit};
use super::plan::PlanKind;
use super::relieve::recorded_recently_kind;
use super::state::ControlState;
use super::step::StepOutput;
use super::technique::Prices;

/// One balancing move, if the spread calls for it.
pub(crate) fn balance(
    state: &mut ControlState,
    ctx: Ctx,
    ledger: &mut Ledger,
    prices: &mut Prices,
    out: &mut StepOutput,
) {
    let Some(b) = ctx.settings.balance else {
        return;
    };
    let view = ctx.view;
    let running: Vec<usize> = (0..view.hosts.len())
        .filter(|&h| {
            let host = &view.hosts[h];
            host.running() && host.usable() && !ledger.drained[h] && !ledger.emptying[h]
        })
        .collect();
    let load = |h: usize| ledger.load_planning(view, h, 0.0);
    let by_load = |a: &usize, b: &usize| load(*a).total_cmp(&load(*b)).then(b.cmp(a));
    let extremes = (
        running.iter().copied().max_by(by_load),
        running.iter().copied().min_by(by_load),
    );
    let (Some(max), Some(min)) = extremes else {
        return;
    };
    let spread = load(max) - load(min);
    if spread.is_nan()
        || spread <= b.spread
        || ledger.out_live[max] > 0
        || ledger.in_live[max] > 0
        || recorded_recently_kind(ctx, ledger, PlanKind::Balance, max)
    {
        return;
    }
    let Some((unit, to, peak)) = best_move(state, ctx, ledger, &running, max) else {
        return;
    };
    let name = view.hosts[max].name();
    let summary = format!(
        "loads differ by {spread:.2} > spread {:.2} ({name} {:.2}, {} {:.2}): one move brings the higher of the two to {peak:.2}",
        b.spread,
        load(max),
        view.hosts[min].name(),
        load(min),
    );
    let spot = Spot {
        to,
        tier: Tier::Running,
        why: format!(
            "{}: load {:.2} -> {:.2} (target {:.2}); the move that leaves the lowest peak",
            view.hosts[to].name(),
            load(to),
            ledger.load_planning(view, to, unit.cpu),
            ctx.settings.target
        ),
    };
    let why_vm = format!(
        "on the busiest running host {name}: {:.2} cores; moving it evens the loads best",
        unit.cpu
    );
    let mut draft = Draft::new(PlanKind::Balance, max, summary);
    draft.threshold = Some(b.spread);
    add_unit(ctx, ledger, prices, &mut draft, &unit, &spot, &why_vm);
    commit(state, view, ledger, ctx.settings, draft, ctx.now_s, out);
}

/// The unit on `max` and the destination that leave the lowest peak of the two hosts' loads
/// (fewest soft rules broken first); None unless the peak falls.
fn best_move(
    state: &ControlState,
    ctx: Ctx,
    ledger: &Ledger,
    running: &[usize],
    max: usize,
) -> Option<(Unit, usize, f64)> {
    let view = ctx.view;
    let terms = Terms {
        no_return: true,
        may_wake: false,
    };
    let from_load = ledger.load_planning(view, max, 0.0);
    let (units, _) = movable_units(ctx, ledger, max);
    let mut best: Option<(u32, f64, usize, usize)> = None;
    for (u, unit) in units.iter().enumerate() {
        if unit.cpu <= 0.0 || cooling(ctx, state, unit) {
            continue;
        }
        let src_after = from_load - unit.cpu / view.hosts[max].cpus;
        for &h in running.iter().filter(|&&h| h != max) {
            let Some(soft) = admits_unit(ctx, state, ledger, unit, h, terms) else {
                continue;
            };
            let peak = src_after.max(ledger.load_planning(view, h, unit.cpu));
            if peak >= from_load - 1e-9 {
                continue;
            }
            if best.is_none_or(|(s, p, _, _)| (soft, peak) < (s, p)) {
                best = Some((soft, peak, u, h));
            }
        }
    }
    let (_, peak, u, to) = best?;
    Some((units[u].clone(), to, peak))
}
