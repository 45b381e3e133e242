//! Relief: VMs off a hot host until its load is at most `target` (hysteresis: a host is hot
//! above `hot`, relieved to `target`, and destinations are filled only to `target`, so the VM
//! that left does not make its destination hot in turn).
//!
//! **Which VMs.** The load to shed is the host's load (counting arrivals in flight and
//! promised; or its forecast, if the prediction made it hot) minus `target`. If one unit's
//! departure is enough, the cheapest such by the cost model's predicted lost work goes: one
//! move, the least work lost. Otherwise the biggest demand goes first (fewest moves), and the
//! search repeats on what is left. VMs that ended a move within `vm_cooldown_s` are tried only
//! after all others (a hot host always gets relief, but not by moving the same VM again and
//! again), VMs already in a move never, and VMs that want no CPU never (they relieve nothing).
//! A unit no destination accepts stays; the plan is made with the units that found one, and
//! says what could not be moved and why.
//!
//! **No relief** for a host that an active relief plan is about, or that has live moves out of
//! it (they will change its load: the next plan waits for their outcome); in dry-run, not again
//! within `consolidate_every_s` of the last recorded one, so a host that stays hot is recorded
//! once a consolidation interval, not once a second.

use super::detect::{hotspots, Hotspot};
use super::explain::{add_unit, commit, entry, Draft};
use super::ledger::Ledger;
use super::place::{cooling, find, movable_units, nowhere, room_bound, Ctx, Spot, Terms, Unit};
use super::plan::PlanKind;
use super::settings::Mode;
use super::state::ControlState;
use super::step::StepOutput;
use super::technique::Prices;

/// Makes a relief plan for every hot host that needs one; returns whether any host is hot.
pub(crate) fn relieve(
    state: &mut ControlState,
    ctx: Ctx,
    ledger: &mut Ledger,
    prices: &mut Prices,
    out: &mut StepOutput,
) -> bool {
    let hot = hotspots(ctx.view, state, ledger, ctx.settings);
    for spot in &hot {
        let h = spot.host;
        if ledger.relief_active[h] || ledger.out_live[h] > 0 || recorded_recently(ctx, ledger, h) {
            continue;
        }
        match plan(state, ctx, ledger, prices, spot) {
            Ok(draft) => {
                commit(state, ctx.view, ledger, ctx.settings, draft, ctx.now_s, out);
            }
            Err(why) => note_no_relief(state, ctx, spot, &why, out),
        }
    }
    !hot.is_empty()
}

/// In dry-run, a decision that still stands is recorded again only once a consolidation
/// interval.
pub(crate) fn recorded_recently_kind(ctx: Ctx, ledger: &Ledger, kind: PlanKind, h: usize) -> bool {
    ctx.settings.mode == Mode::DryRun
        && ledger
            .recorded_at(kind, h)
            .is_some_and(|t| ctx.now_s - t < ctx.settings.consolidate_every_s)
}

fn recorded_recently(ctx: Ctx, ledger: &Ledger, h: usize) -> bool {
    recorded_recently_kind(ctx, ledger, PlanKind::Relief, h)
}

/// Says once per hot episode (when the streak first reaches `hot_samples`) that nothing could
/// be moved, so the journal is not written every second.
fn note_no_relief(state: &ControlState, ctx: Ctx, spot: &Hotspot, why: &str, out: &mut StepOutput) {
    let name = ctx.view.hosts[spot.host].name();
    let streak = state.hosts.get(name).map_or(0, |m| m.hot_streak);
    let first = spot.forecast.is_none() && streak == ctx.settings.hot_samples.max(1);
    if first {
        out.journal.push(entry(
            ctx.now_s,
            "host",
            name,
            format!(
                "{}; no relief possible: {why}",
                spot.why(ctx.view, ctx.settings)
            ),
        ));
    }
}

/// A candidate unit with what relief ranks it by.
struct Candidate {
    unit: Unit,
    /// Predicted lost work, s; priced only when it competes as a single move (pricing runs the
    /// cost model, the expensive part of planning).
    cost_s: Option<f64>,
    cooling: bool,
    /// Found no destination this look (rooms only fill up as the look goes on).
    failed: bool,
}

/// Why units found no destination: the first few said in full, the rest counted.
#[derive(Default)]
struct Failures {
    shown: Vec<String>,
    more: usize,
}

impl Failures {
    fn push(&mut self, why: impl FnOnce() -> String) {
        if self.shown.len() < 3 {
            self.shown.push(why());
        } else {
            self.more += 1;
        }
    }

    fn text(&self) -> String {
        let more = if self.more > 0 {
            format!("; and {} more", self.more)
        } else {
            String::new()
        };
        format!("{}{more}", self.shown.join("; "))
    }
}

fn plan(
    state: &ControlState,
    ctx: Ctx,
    ledger: &mut Ledger,
    prices: &mut Prices,
    spot: &Hotspot,
) -> Result<Draft, String> {
    let view = ctx.view;
    let h = spot.host;
    let cpus = view.hosts[h].cpus;
    let start = ledger
        .load_planning(view, h, 0.0)
        .max(spot.forecast.unwrap_or(0.0));
    let (units, blocked) = movable_units(ctx, ledger, h);
    let mut pool: Vec<Candidate> = units
        .into_iter()
        .filter(|u| u.cpu > 0.0)
        .map(|unit| Candidate {
            cost_s: None,
            cooling: cooling(ctx, state, &unit),
            failed: false,
            unit,
        })
        .collect();
    let mut draft = Draft::new(PlanKind::Relief, h, String::new());
    let mut load = start;
    let mut failures = Failures::default();
    for b in blocked {
        failures.push(|| b);
    }
    let terms = Terms {
        no_return: true,
        may_wake: ctx.settings.standby,
    };
    while load > ctx.settings.target && pool.iter().any(|c| !c.failed) {
        let excess = (load - ctx.settings.target) * cpus;
        let mut search = Search {
            state,
            ctx,
            ledger,
            prices,
            terms,
        };
        let Some((i, spot_found, single)) = search.pick(&mut pool, excess, &mut failures) else {
            break;
        };
        let c = pool.swap_remove(i);
        let after = load - c.unit.cpu / cpus;
        let why_vm = why_vm(ctx, &c, h, load, after, single);
        add_unit(
            ctx,
            ledger,
            prices,
            &mut draft,
            &c.unit,
            &spot_found,
            &why_vm,
        );
        load = after;
    }
    if draft.picks.is_empty() {
        return Err(if failures.shown.is_empty() {
            "no VM on it can move".into()
        } else {
            failures.text()
        });
    }
    draft.samples = spot.samples.clone();
    draft.threshold = Some(ctx.settings.hot);
    draft.summary = summary(ctx, spot, start, load, draft.picks.len(), &failures);
    Ok(draft)
}

/// What one choice of the next unit reads.
struct Search<'a, 'c> {
    state: &'a ControlState,
    ctx: Ctx<'c>,
    ledger: &'a Ledger,
    prices: &'a mut Prices,
    terms: Terms,
}

impl Search<'_, '_> {
    fn cost(&mut self, c: &mut Candidate) -> f64 {
        if let Some(cost) = c.cost_s {
            return cost;
        }
        let (view, settings) = (self.ctx.view, self.ctx.settings);
        let cost = c
            .unit
            .members
            .iter()
            .map(|&vm| self.prices.get(view, vm, settings).cost_s)
            .sum();
        c.cost_s = Some(cost);
        cost
    }

    /// The unit to move next: the cheapest that suffices alone, else the biggest; each must
    /// find a destination. Returns its index in `pool`, its destination, and whether it
    /// sufficed alone.
    fn pick(
        &mut self,
        pool: &mut [Candidate],
        excess: f64,
        failures: &mut Failures,
    ) -> Option<(usize, Spot, bool)> {
        let mut singles: Vec<(bool, f64, f64, usize)> = Vec::new();
        for (i, c) in pool.iter_mut().enumerate() {
            if !c.failed && c.unit.cpu >= excess {
                singles.push((c.cooling, self.cost(c), c.unit.cpu, i));
            }
        }
        singles.sort_by(|a, b| {
            (a.0.cmp(&b.0))
                .then(a.1.total_cmp(&b.1))
                .then(a.2.total_cmp(&b.2))
                .then(a.3.cmp(&b.3))
        });
        let mut biggest: Vec<usize> = (0..pool.len()).filter(|&i| !pool[i].failed).collect();
        biggest.sort_by(|&a, &b| {
            let (x, y) = (&pool[a], &pool[b]);
            x.cooling
                .cmp(&y.cooling)
                .then(y.unit.cpu.total_cmp(&x.unit.cpu))
                .then(a.cmp(&b))
        });
        let room = room_bound(self.ctx, self.ledger, self.terms.may_wake);
        let tries = singles
            .into_iter()
            .map(|s| (s.3, true))
            .chain(biggest.into_iter().map(|i| (i, false)));
        for (i, single) in tries {
            let c = &mut pool[i];
            if c.failed {
                continue;
            }
            // The first refusal is searched in full, so the explanation says why host by host.
            if !failures.shown.is_empty() && !room.admits(&c.unit) {
                c.failed = true;
                failures.push(|| room.refusal(self.ctx.view, &c.unit));
                continue;
            }
            match find(self.ctx, self.state, self.ledger, &c.unit, self.terms) {
                Ok(spot) => return Some((i, spot, single)),
                Err(tally) => {
                    c.failed = true;
                    failures.push(|| nowhere(self.ctx.view, &c.unit, &tally));
                }
            }
        }
        None
    }
}

fn why_vm(ctx: Ctx, c: &Candidate, h: usize, before: f64, after: f64, single: bool) -> String {
    let name = ctx.view.hosts[h].name();
    let target = ctx.settings.target;
    let head = if single {
        format!("the cheapest VM whose departure alone brings {name} from {before:.2} to {after:.2} (target {target:.2})")
    } else {
        format!("no single VM suffices: the biggest demand goes first; {name} from {before:.2} to {after:.2} (target {target:.2})")
    };
    let cooling = if c.cooling {
        "; it moved within the cooldown, but no other VM would do"
    } else {
        ""
    };
    let cost = match c.cost_s {
        Some(cost) => format!(", predicted lost work {cost:.2} s"),
        None => String::new(),
    };
    format!("{head}: {:.2} cores{cost}{cooling}", c.unit.cpu)
}

fn summary(
    ctx: Ctx,
    spot: &Hotspot,
    start: f64,
    end: f64,
    moves: usize,
    failures: &Failures,
) -> String {
    let target = ctx.settings.target;
    let partly = if end > target {
        format!(
            "; only to {end:.2}, still above target {target:.2}: {}",
            failures.text()
        )
    } else {
        String::new()
    };
    format!(
        "{}; relieve it from {start:.2} to {end:.2} with {moves} move(s){partly}",
        spot.why(ctx.view, ctx.settings)
    )
}
