//! The forecast as the operator reads it: per VM, its numbers and why its technique, naming
//! its traffic and the NIC side it spares; for the group, the order and the comparison with the
//! alternatives.

use super::model::{evaluate, location, stall_beyond, Ctx, Outcome};
use super::search::{bar_concurrency, traffic_order, Origin};
use super::{Alternative, Coverage, GroupPlan, Schedule, SearchStats, VmForecast};
use crate::migration::cost::choose;
use crate::migration::cost::LinkProfile;
use crate::migration::technique::Technique;

fn mb(bps: f64) -> f64 {
    bps / 1e6
}

/// The plan for `schedule`, evaluated as `outcome`.
pub(super) fn plan(
    ctx: &Ctx,
    schedule: Schedule,
    outcome: &Outcome,
    alternatives: Vec<Alternative>,
    origin: Origin,
) -> GroupPlan {
    let search = match origin {
        Origin::Searched { stats, .. } => Some(stats),
        Origin::Given => None,
    };
    let window = outcome.evacuation_s.max(ctx.params.cost.window_min_s);
    let vms: Vec<VmForecast> = schedule
        .order
        .iter()
        .map(|&v| forecast(ctx, &schedule, outcome, v, window, origin))
        .collect();
    let reason = group_reason(ctx, &schedule, outcome, &alternatives, search, &vms);
    GroupPlan {
        schedule,
        vms,
        evacuation_s: outcome.evacuation_s,
        lost_work_s: outcome.group_lost_s(),
        residents_lost_s: outcome.residents_lost_s,
        objective: outcome.objective,
        alternatives,
        search,
        reason,
    }
}

/// `origin`: whether the search chose the schedule (then a VM's reason may say why it did not
/// take another technique) or it was given to forecast.
fn forecast(
    ctx: &Ctx,
    s: &Schedule,
    o: &Outcome,
    v: usize,
    window: f64,
    origin: Origin,
) -> VmForecast {
    let vm = &ctx.group.vms[v];
    let leg = &o.legs[v];
    let total = vm.traffic.total_bps();
    let peak = o.peak_lost_bps[v];
    let share = if total > 0.0 {
        (peak / total).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let degradation_pct = if window > 0.0 {
        (100.0 * o.lost_s[v] / window).clamp(0.0, 100.0)
    } else {
        0.0
    };
    VmForecast {
        name: vm.name.clone(),
        destination: vm.destination.clone(),
        technique: leg.technique,
        start_s: leg.start_s,
        migration_s: leg.prediction.total_s,
        bandwidth_bps: leg.bandwidth_bps,
        app_lost_bps: peak,
        app_lost_share: share,
        app_lost_during: during(ctx, o, v),
        app_lost_bytes: o.lost_bytes[v],
        lost_work_s: o.lost_s[v],
        degradation_pct,
        prediction: leg.prediction,
        reason: vm_reason(ctx, s, o, v, share, origin),
    }
}

/// Why VM `v` moves the way it does: its traffic, the NIC side its technique spares, what its
/// migration gets and what its application loses.
fn vm_reason(ctx: &Ctx, s: &Schedule, o: &Outcome, v: usize, share: f64, origin: Origin) -> String {
    let vm = &ctx.group.vms[v];
    let leg = &o.legs[v];
    let (rx, tx) = (mb(vm.traffic.rx_bps), mb(vm.traffic.tx_bps));
    let (src, dst) = (&ctx.group.source.host, &vm.destination);
    let bw = mb(leg.bandwidth_bps);
    let head = if ctx.idle(v) {
        idle_reason(ctx, v, leg.bandwidth_bps, leg.unthrottled_bps)
    } else {
        match (leg.technique, tx > rx) {
            (Technique::Postcopy, true) => format!(
                "{} sends {tx:.1} MB/s (receives {rx:.1}): post-copy runs it on {dst} at once, so its outbound traffic leaves {dst}'s transmit side and stays off {src}'s, where its migration gets {bw:.1} MB/s",
                vm.name
            ),
            (Technique::Precopy, false) => format!(
                "{} receives {rx:.1} MB/s (sends {tx:.1}): pre-copy keeps it on {src} until switchover, so its inbound traffic stays off {dst}'s receive side, where its migration arrives at {bw:.1} MB/s",
                vm.name
            ),
            (t, _) => against_rule(ctx, s, o, v, t, origin),
        }
    };
    let loss = if o.peak_lost_bps[v] > 0.0 {
        let total = vm.traffic.total_bps();
        format!(
            "; its application loses up to {:.1} MB/s ({:.0}%), while {}, {:.1} MB in all ({:.2} s of its {:.1} MB/s)",
            mb(o.peak_lost_bps[v]),
            100.0 * share,
            migrating(&during(ctx, o, v)),
            mb(o.lost_bytes[v]),
            o.lost_bytes[v] / total.max(1.0),
            mb(total)
        )
    } else {
        "; its application loses nothing to the migrations".to_string()
    };
    let stall = stall_beyond(ctx.params, &leg.prediction);
    let stall = if stall > 0.0 {
        format!(
            "; waiting on its pages over the link for {:.1} s of post-copy costs it {stall:.2} s more",
            leg.prediction.postcopy_s
        )
    } else {
        String::new()
    };
    format!(
        "{head}{}; predicted {:.1} s{loss}{stall}",
        sharing(ctx, o, v),
        leg.prediction.total_s
    )
}

/// What VM `v`'s migration shares its two links with: the traffic (above
/// `idle_traffic_bps`) that runs on the source's transmit side and on its destination's
/// receive side while it migrates.
fn sharing(ctx: &Ctx, o: &Outcome, v: usize) -> String {
    let Some(w) = o.waves.iter().position(|m| m.contains(&v)) else {
        return String::new();
    };
    let wave_of = |u: usize| o.waves.iter().position(|m| m.contains(&u));
    let g = ctx.group;
    let (mut on_tx, mut on_rx) = (Vec::new(), Vec::new());
    let floor = ctx.params.idle_traffic_bps;
    let note = |list: &mut Vec<String>, who: &str, rate: f64| {
        if rate > floor {
            list.push(format!("{who} {:.1}", mb(rate)));
        }
    };
    for (u, vm) in g.vms.iter().enumerate() {
        let at_source = match wave_of(u) {
            Some(x) if x < w => 0.0,
            Some(x) if x == w => location(ctx, u, o.legs[u].technique),
            _ => 1.0,
        };
        let who = if u == v { "its own" } else { vm.name.as_str() };
        note(&mut on_tx, who, at_source * vm.traffic.tx_bps);
        if ctx.dest[u] == ctx.dest[v] {
            note(&mut on_rx, who, (1.0 - at_source) * vm.traffic.rx_bps);
        }
    }
    let residents = |h: &super::HostNic, rate: fn(&super::Traffic) -> f64| {
        h.residents.iter().map(rate).sum::<f64>()
    };
    note(&mut on_tx, "other VMs", residents(&g.source, |t| t.tx_bps));
    let dst = &g.destinations[ctx.dest[v] - 1];
    note(&mut on_rx, "other VMs", residents(dst, |t| t.rx_bps));
    let side = |list: &[String], what: String| {
        (!list.is_empty()).then(|| format!("{what} with {} MB/s", list.join(", ")))
    };
    let parts: Vec<String> = [
        side(&on_tx, format!("{}'s transmit side", g.source.host)),
        side(&on_rx, format!("{}'s receive side", dst.host)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("; it shares {}", parts.join(" and "))
    }
}

/// `a migrates`, `a, b migrate`.
fn migrating(names: &[String]) -> String {
    match names {
        [one] => format!("{one} migrates"),
        many => format!("{} migrate", many.join(", ")),
    }
}

/// The VMs migrating when VM `v` loses the most.
fn during(ctx: &Ctx, o: &Outcome, v: usize) -> Vec<String> {
    o.peak_wave[v]
        .and_then(|w| o.waves.get(w))
        .map(|members| {
            members
                .iter()
                .map(|&m| ctx.group.vms[m].name.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn idle_reason(ctx: &Ctx, v: usize, bw: f64, unthrottled_bps: f64) -> String {
    let vm = &ctx.group.vms[v];
    let link = LinkProfile { bandwidth_bps: bw };
    let cost = ctx.cost_at(unthrottled_bps);
    let single = choose(&ctx.profiles[v], &link, &cost, &ctx.allowed);
    format!(
        "{} has no traffic to speak of ({:.2} MB/s in, {:.2} out), so the direction of its migration spares nobody: the single-VM choice at the {:.1} MB/s it gets ({})",
        vm.name,
        mb(vm.traffic.rx_bps),
        mb(vm.traffic.tx_bps),
        mb(bw),
        single.reason
    )
}

/// A VM moved against the paper's rule: what the rule's technique would have done.
fn against_rule(
    ctx: &Ctx,
    s: &Schedule,
    o: &Outcome,
    v: usize,
    t: Technique,
    origin: Origin,
) -> String {
    let vm = &ctx.group.vms[v];
    let (rx, tx) = (mb(vm.traffic.rx_bps), mb(vm.traffic.tx_bps));
    let (dominant, wanted) = if tx > rx {
        (
            format!("sends {tx:.1} MB/s (receives {rx:.1})"),
            Technique::Postcopy,
        )
    } else {
        (
            format!("receives {rx:.1} MB/s (sends {tx:.1})"),
            Technique::Precopy,
        )
    };
    let how = match t {
        Technique::Hybrid => format!(
            "hybrid (a pre-copy pass while it runs on {}, then post-copy once it runs on {})",
            ctx.group.source.host, vm.destination
        ),
        other => other.to_string(),
    };
    let cost = if ctx.allowed.contains(&wanted) {
        let mut other = s.clone();
        other.techniques[v] = wanted;
        rule_would(ctx, o, &evaluate(ctx, &other), v, wanted, origin)
    } else {
        format!("{wanted} is not allowed")
    };
    format!(
        "{} {dominant}, yet {how}: {cost}; its migration gets {:.1} MB/s",
        vm.name,
        mb(o.legs[v].bandwidth_bps)
    )
}

/// What the schedule `alt` (VM `v` on the rule's technique `wanted`) does against `o`.
fn rule_would(
    ctx: &Ctx,
    o: &Outcome,
    alt: &Outcome,
    v: usize,
    wanted: Technique,
    origin: Origin,
) -> String {
    let leg = &alt.legs[v];
    if !leg.prediction.converges {
        return format!(
            "{wanted} would not converge at the {:.1} MB/s it would get",
            mb(leg.bandwidth_bps)
        );
    }
    let params = ctx.params;
    let figures = format!(
        "evacuation {:.1} s instead of {:.1} s, lost work {:.2} s instead of {:.2} s, risk (pauses, memory split between hosts) {:.1} points instead of {:.1}",
        alt.evacuation_s,
        o.evacuation_s,
        alt.lost_total_s(),
        o.lost_total_s(),
        alt.risk(params),
        o.risk(params),
    );
    let more = alt.objective - o.objective;
    let bar = match origin {
        Origin::Given => None,
        Origin::Searched { bar, .. } => bar,
    };
    if more >= 0.0 {
        format!("{wanted} would cost the group {more:.1} points more ({figures})")
    } else if matches!(origin, Origin::Given) {
        // A schedule given to forecast (a uniform plan, the paper's rule): no search chose it.
        format!(
            "{wanted} would cost the group {:.1} points less ({figures}); this schedule was given, not chosen",
            -more
        )
    } else if bar.is_some_and(|b| b.beaten_by(o) && !b.beaten_by(alt)) {
        format!(
            "{wanted} would cost the group {:.1} points less ({figures}), but would not beat both all pre-copy and all post-copy on evacuation time and lost work, as this plan does",
            -more
        )
    } else {
        format!(
            "{wanted} would cost the group {:.1} points less ({figures}), but the search's budget ran out before trying it",
            -more
        )
    }
}

/// The capacities the migrations cross: the source's transmit side, each destination's
/// receive side.
fn capacities(ctx: &Ctx) -> String {
    let g = ctx.group;
    let mut parts = vec![format!(
        "{} transmits up to {:.1} MB/s",
        g.source.host,
        mb(g.source.tx_capacity_bps)
    )];
    for (i, d) in g.destinations.iter().enumerate() {
        if ctx.dest.contains(&(i + 1)) {
            parts.push(format!(
                "{} receives up to {:.1} MB/s",
                d.host,
                mb(d.rx_capacity_bps)
            ));
        }
    }
    parts.join(", ")
}

fn searched(ctx: &Ctx, stats: Option<SearchStats>) -> String {
    let Some(st) = stats else {
        return String::new();
    };
    let how = match st.coverage {
        Coverage::Full => "every technique in every order",
        Coverage::Techniques => "every technique in the traffic order, then local search",
        Coverage::Local => "local search from the baselines",
    };
    let uniform = format!(
        "all pre-copy and all post-copy ({}) on both evacuation time and lost work",
        at_a_time(bar_concurrency(ctx))
    );
    let verdict = match st.beats_uniform {
        Some(true) => format!("; forecast to beat {uniform}"),
        Some(false) => {
            format!("; no schedule found that beats {uniform}, so the lowest objective")
        }
        None => String::new(),
    };
    format!("; searched {how} ({} schedules){verdict}", st.evaluations)
}

fn at_a_time(concurrency: u32) -> String {
    match concurrency {
        1 => "one at a time".to_string(),
        k => format!("{k} at a time"),
    }
}

fn group_reason(
    ctx: &Ctx,
    s: &Schedule,
    o: &Outcome,
    alternatives: &[Alternative],
    stats: Option<SearchStats>,
    vms: &[VmForecast],
) -> String {
    let names: Vec<&str> = vms.iter().map(|f| f.name.as_str()).collect();
    let order_why = if s.order == traffic_order(ctx.group) {
        format!(
            "net senders first (once gone, their outbound traffic no longer competes for {}'s transmit side), net receivers last (until they arrive, their inbound traffic stays off the destinations' receive side)",
            ctx.group.source.host
        )
    } else {
        "the traffic order (net senders first) refined by local search".to_string()
    };
    let at_a_time = at_a_time(s.concurrency);
    let compare: Vec<String> = alternatives
        .iter()
        .map(|a| {
            format!(
                "{} {:.1} s / {:.2} s lost",
                a.label, a.evacuation_s, a.lost_work_s
            )
        })
        .collect();
    let compare = if compare.is_empty() {
        String::new()
    } else {
        format!(" (against {})", compare.join(", "))
    };
    let per_vm: Vec<&str> = vms.iter().map(|f| f.reason.as_str()).collect();
    format!(
        "{} VM(s) leave {} ({}): {}, {at_a_time}: {order_why}; evacuation {:.1} s, lost work {:.2} s{compare}{}. {}",
        vms.len(),
        ctx.group.source.host,
        capacities(ctx),
        names.join(", "),
        o.evacuation_s,
        o.lost_total_s(),
        searched(ctx, stats),
        per_vm.join(". ")
    )
}
