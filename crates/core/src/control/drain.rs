//! Drain: an operator empties a host for maintenance ([`super::drain`] marks it) and it stays
//! empty until undrained.
//!
//! Every look, a drained host that is running, has movable VMs, no active drain plan and no
//! live move out of it gets a drain plan: every unit, biggest first, to a destination under
//! `target` that keeps the hard rules and has the memory, waking standby hosts when nothing
//! running fits (if `standby` is on). Forced: no cold, gain, cooldown or move-count condition,
//! and a VM may go back to a host it left recently. Units that fit nowhere stay, and the next
//! plan tries them again once this one has ended. A drained host is never a destination, never
//! relieved (the drain moves everything), never consolidated or balanced; once empty it may go
//! to standby (see [`super::consolidate`]).
//!
//! A drained host whose VMs fit nowhere is journaled at consolidation looks only, so the
//! journal says so once a minute rather than every second.

use super::consolidate::standby_idle;
use super::explain::{add_unit, commit, entry, Draft};
use super::ledger::Ledger;
use super::place::{find, movable_units, nowhere, Ctx, Terms};
use super::plan::PlanKind;
use super::relieve::recorded_recently_kind;
use super::state::ControlState;
use super::step::StepOutput;
use super::technique::Prices;

/// Drain plans for drained hosts, then standby for the drained hosts that are empty.
pub(crate) fn drain_hosts(
    state: &mut ControlState,
    ctx: Ctx,
    ledger: &mut Ledger,
    prices: &mut Prices,
    loud: bool,
    out: &mut StepOutput,
) {
    for h in 0..ctx.view.hosts.len() {
        let host = &ctx.view.hosts[h];
        let wanted = ledger.drained[h]
            && host.running()
            && !ledger.drain_active[h]
            && ledger.out_live[h] == 0
            && !recorded_recently_kind(ctx, ledger, PlanKind::Drain, h);
        if !wanted {
            continue;
        }
        match plan(state, ctx, ledger, prices, h) {
            Ok(Some(draft)) => {
                commit(state, ctx.view, ledger, ctx.settings, draft, ctx.now_s, out);
            }
            Ok(None) => {}
            Err(why) if loud => out.journal.push(entry(
                ctx.now_s,
                "host",
                host.name(),
                format!("drained, but nothing can leave it: {why}"),
            )),
            Err(_) => {}
        }
    }
    standby_idle(state, ctx, ledger, true, out);
}

/// The drain plan of host `h`: Ok(None) when nothing is left to move, Err when nothing can.
fn plan(
    state: &ControlState,
    ctx: Ctx,
    ledger: &mut Ledger,
    prices: &mut Prices,
    h: usize,
) -> Result<Option<Draft>, String> {
    let view = ctx.view;
    let (mut units, mut failures) = movable_units(ctx, ledger, h);
    if units.is_empty() && failures.is_empty() {
        return Ok(None);
    }
    units.sort_by(|a, b| b.cpu.total_cmp(&a.cpu));
    ledger.emptying[h] = true;
    let name = view.hosts[h].name();
    let mut draft = Draft::new(PlanKind::Drain, h, String::new());
    let terms = Terms {
        no_return: false,
        may_wake: ctx.settings.standby,
    };
    for unit in &units {
        match find(ctx, state, ledger, unit, terms) {
            Ok(spot) => {
                let why = format!(
                    "{name} is drained by an operator: every VM leaves ({:.2} cores, {:.1} GiB)",
                    unit.cpu,
                    super::explain::gib(unit.mem)
                );
                add_unit(ctx, ledger, prices, &mut draft, unit, &spot, &why);
            }
            Err(tally) => failures.push(nowhere(view, unit, &tally)),
        }
    }
    if draft.picks.is_empty() {
        return Err(failures.join("; "));
    }
    let left = if failures.is_empty() {
        String::new()
    } else {
        format!("; left for a later plan: {}", failures.join("; "))
    };
    draft.summary = format!(
        "drain {name} (operator): {} move(s){left}",
        draft.picks.len()
    );
    if ctx.settings.standby {
        draft.standby = vec![h];
    }
    Ok(Some(draft))
}
