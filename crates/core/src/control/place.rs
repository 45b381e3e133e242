//! Where a unit of VMs goes: the destination search every kind of plan shares.
//!
//! A destination must be usable (known capacity), not drained, not emptied by this look's
//! plans nor listed for standby by an active plan, not the unit's own host; its memory must hold the unit (capacity minus what its VMs
//! have, what moves in flight bring and what other plans promised); its load after the unit
//! arrives, counted the same way, must stay at or under `target`; no hard rule may break; and
//! (anti-churn, all but drain) no VM of the unit may go back to a host it left within
//! `vm_cooldown_s`.
//!
//! Among those, in tiers: running hosts first; then hosts already waking (or that an active plan
//! wakes), since their boot is already paid; then, only when the caller allows it, a standby
//! host to wake, the one with the most cores per idle watt (the cheapest capacity to keep on).
//! Within a tier: fewest soft rules broken, then best fit, the highest load after the move
//! (keeps hosts packed and leaves the emptier ones to be emptied), then inventory order.
//!
//! The search is O(hosts) per unit; it allocates only the few names the explanation keeps.

use super::ledger::{Booking, Ledger};
use super::observe::PowerState;
use super::rules::Rules;
use super::settings::ControlSettings;
use super::state::ControlState;
use super::view::View;

/// Everything a decision reads this look besides the ledger and the memory.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub view: &'a View<'a>,
    pub rules: &'a Rules<'a>,
    pub settings: &'a ControlSettings,
    pub now_s: f64,
}

/// VMs that move together from one host (see [`super::rules`]).
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    /// Indices into the view's VMs.
    pub members: Vec<usize>,
    pub from: usize,
    /// Their demand, cores.
    pub cpu: f64,
    /// Their memory, bytes.
    pub mem: u64,
}

impl Unit {
    pub fn new(view: &View, members: Vec<usize>) -> Unit {
        let from = view.vms[members[0]].host;
        let cpu = members.iter().map(|&i| view.vms[i].demand).sum();
        let mem = members
            .iter()
            .fold(0u64, |a, &i| a.saturating_add(view.vms[i].obs.memory_bytes));
        Unit {
            members,
            from,
            cpu,
            mem,
        }
    }

    /// The members' names, joined.
    pub fn names(&self, view: &View) -> String {
        let names: Vec<&str> = self.members.iter().map(|&i| view.vms[i].name()).collect();
        names.join("+")
    }
}

/// How a destination is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Running,
    /// Waking already, or woken by an active plan.
    Waking,
    /// A standby host this plan wakes.
    Wake,
}

/// What the caller allows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terms {
    /// Refuse hosts a member left within the cooldown (all plans but drain).
    pub no_return: bool,
    /// A standby host may be woken.
    pub may_wake: bool,
}

/// A destination found.
#[derive(Debug, Clone)]
pub(crate) struct Spot {
    pub to: usize,
    pub tier: Tier,
    /// Why this one, one line.
    pub why: String,
}

/// Hosts ruled out and why, for the explanation (counts, and the first few names).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    reasons: Vec<(&'static str, u32, Vec<String>)>,
}

impl Tally {
    fn add(&mut self, reason: &'static str, example: impl FnOnce() -> String) {
        let slot = match self.reasons.iter().position(|r| r.0 == reason) {
            Some(i) => &mut self.reasons[i],
            None => {
                self.reasons.push((reason, 0, Vec::new()));
                let last = self.reasons.len() - 1;
                &mut self.reasons[last]
            }
        };
        slot.1 += 1;
        if slot.2.len() < 3 {
            slot.2.push(example());
        }
    }

    /// "ruled out: 2 by memory (h3, h4); 1 by a hard rule (h5: anti-affinity: a never with b)".
    pub fn describe(&self) -> String {
        if self.reasons.is_empty() {
            return "no host ruled out".into();
        }
        let parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(why, n, ex)| {
                let more = if *n as usize > ex.len() { ", ..." } else { "" };
                format!("{n} by {why} ({}{more})", ex.join(", "))
            })
            .collect();
        format!("ruled out: {}", parts.join("; "))
    }
}

fn tier_of(view: &View, ledger: &Ledger, h: usize) -> Option<Tier> {
    let host = &view.hosts[h];
    if host.running() {
        Some(Tier::Running)
    } else if ledger.waking[h] && host.obs.power != PowerState::Active {
        Some(Tier::Waking)
    } else if host.obs.power == PowerState::Standby {
        Some(Tier::Wake)
    } else {
        None
    }
}

/// What bars a unit from hosts beyond room, worked out once per search: the hosts its VMs
/// left within the cooldown (when returning is refused), and whether any rule names them (so
/// that a unit no rule names skips the rule check on every host).
struct Bars {
    left: Vec<usize>,
    ruled: bool,
}

impl Bars {
    fn new(ctx: Ctx, state: &ControlState, unit: &Unit, terms: Terms) -> Bars {
        let view = ctx.view;
        let left = if terms.no_return {
            unit.members
                .iter()
                .filter_map(|&i| state.vms.get(view.vms[i].name())?.left.as_ref())
                .filter(|(_, t)| ctx.now_s - t < ctx.settings.vm_cooldown_s)
                .filter_map(|(h, _)| view.host_index(h))
                .collect()
        } else {
            Vec::new()
        };
        let ruled = unit
            .members
            .iter()
            .any(|&i| ctx.rules.names(view.vms[i].name()));
        Bars { left, ruled }
    }
}

/// Whether host `h` may take `unit` at all, with the reason when not.
fn admits(
    ctx: Ctx,
    ledger: &Ledger,
    unit: &Unit,
    bars: &Bars,
    h: usize,
    tally: &mut Tally,
) -> Option<u32> {
    let view = ctx.view;
    let name = view.hosts[h].name();
    if !ledger.mem_fits_planning(view, h, unit.mem) {
        tally.add("memory", || name.to_string());
        return None;
    }
    let after = ledger.load_planning(view, h, unit.cpu);
    if after > ctx.settings.target || after.is_nan() {
        tally.add("load over target", || format!("{name} {after:.2}"));
        return None;
    }
    if bars.left.contains(&h) {
        tally.add("a VM left it within the cooldown", || name.to_string());
        return None;
    }
    if !bars.ruled {
        return Some(0);
    }
    let verdict = ctx.rules.check(view, ledger, &unit.members, h);
    if let Some(why) = verdict.hard {
        tally.add("a hard rule", || format!("{name}: {why}"));
        return None;
    }
    Some(verdict.soft)
}

/// Whether running host `h` takes `unit` (memory, target, rules, no return); the soft rules it
/// would break when it does.
pub(crate) fn admits_unit(
    ctx: Ctx,
    state: &ControlState,
    ledger: &Ledger,
    unit: &Unit,
    h: usize,
    terms: Terms,
) -> Option<u32> {
    let host = &ctx.view.hosts[h];
    let eligible = h != unit.from
        && host.usable()
        && host.running()
        && !ledger.drained[h]
        && !ledger.emptying[h]
        && !ledger.standby_planned[h];
    if !eligible {
        return None;
    }
    let bars = Bars::new(ctx, state, unit, terms);
    admits(ctx, ledger, unit, &bars, h, &mut Tally::default())
}

fn wake_failed_recently(ctx: Ctx, state: &ControlState, h: usize) -> bool {
    state
        .hosts
        .get(ctx.view.hosts[h].name())
        .and_then(|m| m.wake_failed_s)
        .is_some_and(|t| ctx.now_s - t < super::premise::WAKE_RETRY_S)
}

/// The best destination for `unit`, or the tally of why there is none.
pub(crate) fn find(
    ctx: Ctx,
    state: &ControlState,
    ledger: &Ledger,
    unit: &Unit,
    terms: Terms,
) -> Result<Spot, Tally> {
    let view = ctx.view;
    let mut tally = Tally::default();
    // Best per tier: (soft rules broken, -fit or -efficiency, index).
    let mut best: [Option<(u32, f64, usize)>; 3] = [None; 3];
    let mut fitting = 0u32;
    let bars = Bars::new(ctx, state, unit, terms);
    for h in 0..view.hosts.len() {
        let host = &view.hosts[h];
        if h == unit.from || !host.usable() || ledger.drained[h] || ledger.emptying[h] {
            continue;
        }
        if ledger.standby_planned[h] {
            tally.add("being emptied for standby", || host.name().to_string());
            continue;
        }
        let Some(tier) = tier_of(view, ledger, h) else {
            continue;
        };
        if tier == Tier::Wake && !terms.may_wake {
            continue;
        }
        if tier == Tier::Wake && wake_failed_recently(ctx, state, h) {
            tally.add("a recent failed wake", || host.name().to_string());
            continue;
        }
        let Some(soft) = admits(ctx, ledger, unit, &bars, h, &mut tally) else {
            continue;
        };
        fitting += 1;
        let rank = match tier {
            Tier::Wake => -(host.cpus / ctx.settings.power_of(host.name()).idle_w.max(1e-9)),
            _ => -ledger.load_planning(view, h, unit.cpu),
        };
        let slot = &mut best[tier as usize];
        let better = slot.is_none_or(|(s, r, _)| (soft, rank) < (s, r));
        if better {
            *slot = Some((soft, rank, h));
        }
    }
    let (tier, (soft, _, to)) = [Tier::Running, Tier::Waking, Tier::Wake]
        .into_iter()
        .zip(best)
        .find_map(|(t, b)| b.map(|b| (t, b)))
        .ok_or_else(|| std::mem::take(&mut tally))?;
    let found = Found {
        to,
        tier,
        soft,
        fitting,
    };
    Ok(Spot {
        to,
        tier,
        why: why_here(ctx, ledger, unit, &found, &tally),
    })
}

struct Found {
    to: usize,
    tier: Tier,
    soft: u32,
    fitting: u32,
}

fn why_here(ctx: Ctx, ledger: &Ledger, unit: &Unit, f: &Found, tally: &Tally) -> String {
    let view = ctx.view;
    let (to, soft) = (f.to, f.soft);
    let host = &view.hosts[to];
    let before = ledger.load_planning(view, to, 0.0);
    let after = ledger.load_planning(view, to, unit.cpu);
    let free_after = host
        .mem_cap
        .saturating_sub(ledger.live_mem[to].saturating_add(ledger.plan_mem[to]))
        .saturating_sub(unit.mem);
    let how = match f.tier {
        Tier::Running => "best fit among the running hosts that fit",
        Tier::Waking => "no running host fits; it is already waking",
        Tier::Wake => "no running or waking host fits; woken: the most cores per idle watt",
    };
    let soft = if soft > 0 {
        format!("; breaks {soft} soft rule(s), the fewest possible")
    } else {
        String::new()
    };
    format!(
        "{}: load {before:.2} -> {after:.2} (target {:.2}), {:.1} GiB free after; {how} ({} did){soft}; {}",
        host.name(),
        ctx.settings.target,
        free_after as f64 / (1u64 << 30) as f64,
        f.fitting,
        tally.describe(),
    )
}

/// Books `unit`'s move to `to` in the ledger, one booking per member (kept for undo).
pub(crate) fn book(view: &View, ledger: &mut Ledger, unit: &Unit, to: usize) -> Vec<Booking> {
    let bookings: Vec<Booking> = unit
        .members
        .iter()
        .map(|&vm| Booking {
            vm,
            from: unit.from,
            to,
            cpu: view.vms[vm].demand,
            mem: view.vms[vm].obs.memory_bytes,
        })
        .collect();
    for b in &bookings {
        ledger.book(*b);
    }
    bookings
}

/// The tally's full sentence when nothing fits.
pub(crate) fn nowhere(view: &View, unit: &Unit, tally: &Tally) -> String {
    format!(
        "no destination for {} ({:.2} cores, {:.1} GiB): {}",
        unit.names(view),
        unit.cpu,
        unit.mem as f64 / (1u64 << 30) as f64,
        tally.describe()
    )
}

/// The units that may move off host `h` this look (each VM once), and why others may not.
pub(crate) fn movable_units(ctx: Ctx, ledger: &Ledger, h: usize) -> (Vec<Unit>, Vec<String>) {
    let view = ctx.view;
    let mut units = Vec::new();
    let mut blocked = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for vm in view.running_on(h) {
        if seen.contains(&vm) {
            continue;
        }
        match ctx.rules.unit(view, vm) {
            Err(why) => {
                seen.insert(vm);
                blocked.push(format!("{}: {why}", view.vms[vm].name()));
            }
            Ok(members) => {
                seen.extend(members.iter().copied());
                let unit = Unit::new(view, members);
                if unit.members.iter().any(|&m| ledger.busy[m]) {
                    blocked.push(format!("{}: already in a move", unit.names(view)));
                } else {
                    units.push(unit);
                }
            }
        }
    }
    (units, blocked)
}

/// Whether any VM of `unit` ended a move within the cooldown.
pub(crate) fn cooling(ctx: Ctx, state: &ControlState, unit: &Unit) -> bool {
    unit.members.iter().any(|&i| {
        state
            .vms
            .get(ctx.view.vms[i].name())
            .and_then(|m| m.last_moved_s)
            .is_some_and(|t| ctx.now_s - t < ctx.settings.vm_cooldown_s)
    })
}

/// The most room any host a unit could go to has: cores under `target` and free bytes. An
/// upper bound (rules and cooldowns are not counted), so a unit bigger than it is refused
/// without searching every host: once destinations fill up, the units left are turned down
/// in O(1) each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Room {
    cpu: f64,
    mem: u64,
}

impl Room {
    pub fn admits(&self, unit: &Unit) -> bool {
        unit.cpu <= self.cpu + 1e-9 && unit.mem <= self.mem
    }

    pub fn refusal(&self, view: &View, unit: &Unit) -> String {
        format!(
            "no destination for {} ({:.2} cores, {:.1} GiB): no host has more than {:.2} cores under target or {:.1} GiB free",
            unit.names(view),
            unit.cpu,
            super::explain::gib(unit.mem),
            self.cpu.max(0.0),
            super::explain::gib(self.mem),
        )
    }
}

/// The room bound over every host that could be a destination (O(hosts)).
pub(crate) fn room_bound(ctx: Ctx, ledger: &Ledger, may_wake: bool) -> Room {
    let view = ctx.view;
    let mut room = Room { cpu: 0.0, mem: 0 };
    for (h, host) in view.hosts.iter().enumerate() {
        let open = host.usable()
            && !ledger.drained[h]
            && !ledger.emptying[h]
            && !ledger.standby_planned[h];
        let reachable = match tier_of(view, ledger, h) {
            Some(Tier::Wake) => may_wake,
            Some(_) => true,
            None => false,
        };
        if !(open && reachable) {
            continue;
        }
        let taken = ledger.live_cpu[h] + ledger.plan_cpu[h];
        room.cpu = room.cpu.max(ctx.settings.target * host.cpus - taken);
        let used = ledger.live_mem[h].saturating_add(ledger.plan_mem[h]);
        room.mem = room.mem.max(host.mem_cap.saturating_sub(used));
    }
    room
}
