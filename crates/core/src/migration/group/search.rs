//! The search over schedules: the paper's rule and the traffic order as baselines, an
//! exhaustive pass over techniques for small groups, a bounded local search for the rest and
//! for the order. Bounds and costs are in the module doc of [`super`].

use super::model::{evaluate, Ctx, Outcome};
use super::{Alternative, Coverage, Group, Schedule, SearchStats};
use crate::migration::technique::Technique;
use std::collections::HashSet;

/// The order the traffic suggests: net senders first, net receivers last (tx - rx, bytes/s,
/// descending; ties in input order).
///
/// Why (an exchange argument on the paper's §1 model): with `a` just before `b`, `b`'s
/// outbound traffic is still on the source during `a`'s migration and `a`'s inbound traffic
/// already on the destination during `b`'s; swapped, it is `a`'s outbound and `b`'s inbound.
/// So `a` goes first when `tx_a + rx_b < tx_b + rx_a`, i.e. `tx_a - rx_a > tx_b - rx_b`,
/// whatever their techniques. Exact when contention is linear; the local search corrects the
/// rest (fair shares are not linear, and VMs to different destinations do not meet there).
pub fn traffic_order(group: &Group) -> Vec<usize> {
    let net = |v: usize| {
        let t = group.vms[v].traffic;
        t.tx_bps - t.rx_bps
    };
    let mut order: Vec<usize> = (0..group.vms.len()).collect();
    order.sort_by(|&a, &b| net(b).total_cmp(&net(a)).then(a.cmp(&b)));
    order
}

/// The paper's rule (abstract, §1): a VM that mostly sends goes post-copy (its outbound
/// traffic then leaves the destination, not the source's transmit side its migration uses); one
/// that mostly receives goes pre-copy (its inbound traffic stays at the source, off the
/// destination's receive side). A VM without traffic, or whose technique is not allowed, gets
/// `Auto`: the single-VM choice at the bandwidth it gets.
pub(super) fn rule(ctx: &Ctx) -> Vec<Technique> {
    (0..ctx.group.vms.len())
        .map(|v| {
            let t = ctx.group.vms[v].traffic;
            let want = if t.tx_bps > t.rx_bps {
                Technique::Postcopy
            } else {
                Technique::Precopy
            };
            if ctx.idle(v) || !ctx.allowed.contains(&want) {
                Technique::Auto
            } else {
                want
            }
        })
        .collect()
}

/// What the chosen plan should beat ([`GroupParams::beat_uniform`](super::GroupParams)): the
/// shorter evacuation and the smaller lost work (group and residents, seconds of full
/// throughput) of all pre-copy and all post-copy, each in the traffic order at the highest
/// concurrency allowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Bar {
    pub evacuation_s: f64,
    pub lost_s: f64,
}

impl Bar {
    /// Whether `o` is forecast strictly better than both baselines on both figures, with
    /// every migration converging (a pre-copy that never ends beats nothing, whatever its
    /// figures say).
    pub fn beaten_by(&self, o: &Outcome) -> bool {
        o.evacuation_s < self.evacuation_s
            && o.lost_total_s() < self.lost_s
            && o.legs.iter().all(|l| l.prediction.converges)
    }
}

/// The uniform baselines' bar, or None when the preference is off, neither technique is
/// allowed, or the search's budget leaves no room for a schedule after the bar's forecasts
/// (one per baseline, counted against it).
fn uniform_bar(ctx: &Ctx) -> Option<Bar> {
    let n = ctx.group.vms.len();
    let cost = uniform_techniques(ctx).len();
    if !ctx.params.beat_uniform || ctx.params.evaluation_budget(n) <= cost {
        return None;
    }
    let concurrency = bar_concurrency(ctx);
    let order = traffic_order(ctx.group);
    uniform_techniques(ctx)
        .into_iter()
        .map(|t| {
            evaluate(
                ctx,
                &Schedule {
                    techniques: vec![t; n],
                    order: order.clone(),
                    concurrency,
                },
            )
        })
        .map(|o| Bar {
            evacuation_s: o.evacuation_s,
            lost_s: o.lost_total_s(),
        })
        .reduce(|a, b| Bar {
            evacuation_s: a.evacuation_s.min(b.evacuation_s),
            lost_s: a.lost_s.min(b.lost_s),
        })
}

/// Migrations at a time of the uniform baselines in the bar: the most allowed (at most the
/// group's size).
pub(super) fn bar_concurrency(ctx: &Ctx) -> u32 {
    let n = ctx.group.vms.len().max(1) as u32;
    ctx.params.max_concurrent.min(n).max(1)
}

/// The uniform baselines' techniques the bar is made of: pre-copy and post-copy, where allowed.
fn uniform_techniques(ctx: &Ctx) -> Vec<Technique> {
    [Technique::Precopy, Technique::Postcopy]
        .into_iter()
        .filter(|t| ctx.allowed.contains(t))
        .collect()
}

/// How the explained schedule was come by.
#[derive(Debug, Clone, Copy)]
pub(super) enum Origin {
    /// Given to forecast ([`super::predict_group`]): no search chose it.
    Given,
    /// The search's choice, with how much it searched and the uniform plans' bar it preferred
    /// beating (None: not asked, or no room in the budget).
    Searched {
        stats: SearchStats,
        bar: Option<Bar>,
    },
}

/// Evaluates schedules within the budget and keeps the best.
struct Searcher<'c, 'a> {
    ctx: &'c Ctx<'a>,
    evaluations: usize,
    budget: usize,
    /// The uniform baselines to beat, if preferred.
    bar: Option<Bar>,
    best: Option<(Schedule, Outcome)>,
}

impl Searcher<'_, '_> {
    fn spent(&self) -> bool {
        self.evaluations >= self.budget
    }

    /// Whether `o` beats the bar (false without one).
    fn beats(&self, o: &Outcome) -> bool {
        self.bar.is_some_and(|b| b.beaten_by(o))
    }

    /// Evaluates `s` (if the budget allows) and keeps it if strictly better: one that beats
    /// the uniform baselines before one that does not, then a lower objective, then the same
    /// with a shorter evacuation; returns whether it was kept. Other ties keep the earlier, so
    /// the result follows the order of the search.
    fn consider(&mut self, s: Schedule) -> bool {
        if self.spent() {
            return false;
        }
        self.evaluations += 1;
        let o = evaluate(self.ctx, &s);
        let better = self.best.as_ref().is_none_or(|(_, b)| {
            let (new, old) = (self.beats(&o), self.beats(b));
            (new && !old)
                || (new == old
                    && (o.objective < b.objective
                        || (o.objective == b.objective && o.evacuation_s < b.evacuation_s)))
        });
        if better {
            self.best = Some((s, o));
        }
        better
    }
}

/// The VMs whose technique is searched (those with traffic); the rest stay `Auto`.
fn movable(ctx: &Ctx) -> Vec<usize> {
    (0..ctx.group.vms.len()).filter(|v| !ctx.idle(*v)).collect()
}

fn concurrencies(ctx: &Ctx) -> Vec<u32> {
    let n = ctx.group.vms.len().max(1) as u32;
    (1..=ctx.params.max_concurrent.min(n)).collect()
}

/// Every VM with traffic on `t`, the others `Auto`.
fn all(ctx: &Ctx, t: Technique) -> Vec<Technique> {
    (0..ctx.group.vms.len())
        .map(|v| if ctx.idle(v) { Technique::Auto } else { t })
        .collect()
}

/// The technique vectors to try and the tier of the search that fits the limit (the smaller
/// of [`GroupParams::exhaustive_limit`](super::GroupParams) and the budget): the baselines
/// and every assignment in every order and concurrency (`Full`), or in the traffic order
/// (`Techniques`), else the baselines alone (`Local`).
fn starts(
    ctx: &Ctx,
    baselines: Vec<Vec<Technique>>,
    moving: &[usize],
    levels: usize,
    budget: usize,
) -> (Vec<Vec<Technique>>, Coverage) {
    let limit = ctx.params.exhaustive_limit.min(budget);
    let combos = ctx.allowed.len().checked_pow(moving.len() as u32);
    if combos.is_none_or(|c| c > limit) {
        return (baselines, Coverage::Local);
    }
    let mut every = baselines.clone();
    every.extend(assignments(ctx, moving));
    distinct(&mut every);
    let per_order = every.len().saturating_mul(levels);
    let orders = (1..=ctx.group.vms.len()).try_fold(1usize, |acc, k| acc.checked_mul(k));
    if orders
        .and_then(|o| o.checked_mul(per_order))
        .is_some_and(|all| all <= limit)
    {
        (every, Coverage::Full)
    } else if per_order <= limit {
        (every, Coverage::Techniques)
    } else {
        (baselines, Coverage::Local)
    }
}

/// The best schedule found, its forecast, and how it was searched (always
/// [`Origin::Searched`]).
pub(super) fn search(ctx: &Ctx) -> (Schedule, Outcome, Origin) {
    let n = ctx.group.vms.len();
    let budget = ctx.params.evaluation_budget(n);
    // The bar's forecasts count against the budget.
    let bar = uniform_bar(ctx);
    let mut s = Searcher {
        ctx,
        evaluations: bar.map_or(0, |_| uniform_techniques(ctx).len()),
        budget,
        bar,
        best: None,
    };
    let moving = movable(ctx);
    let ks = concurrencies(ctx);
    let order = traffic_order(ctx.group);
    // Seeds first, so that even the smallest budget compares the baselines: the paper's rule,
    // every VM on one technique (idle ones too: what an operator would run), every VM with
    // traffic on one technique, each VM's single-VM choice.
    let mut baselines: Vec<Vec<Technique>> = vec![rule(ctx)];
    baselines.extend(ctx.allowed.iter().map(|t| vec![*t; n]));
    baselines.extend(ctx.allowed.iter().map(|t| all(ctx, *t)));
    baselines.push(vec![Technique::Auto; n]);
    distinct(&mut baselines);
    let (starts, coverage) = starts(ctx, baselines, &moving, ks.len(), budget);
    let orders = if coverage == Coverage::Full {
        permutations(&order)
    } else {
        vec![order.clone()]
    };
    for &k in &ks {
        for o in &orders {
            for techniques in &starts {
                s.consider(Schedule {
                    techniques: techniques.clone(),
                    order: o.clone(),
                    concurrency: k,
                });
            }
        }
    }
    if coverage != Coverage::Full {
        local_search(&mut s, &moving, &ks);
    }
    let evaluations = s.evaluations;
    let (schedule, outcome) = s.best.unwrap_or_else(|| {
        // Unreachable: the budget is at least one and the first seed is always considered.
        let rule = Schedule {
            techniques: rule(ctx),
            order,
            concurrency: 1,
        };
        let o = evaluate(ctx, &rule);
        (rule, o)
    });
    let stats = SearchStats {
        evaluations,
        budget,
        coverage,
        beats_uniform: bar.map(|b| b.beaten_by(&outcome)),
    };
    (schedule, outcome, Origin::Searched { stats, bar })
}

/// Drops repeated technique vectors, keeping the first of each.
fn distinct(starts: &mut Vec<Vec<Technique>>) {
    let mut seen = HashSet::with_capacity(starts.len());
    starts.retain(|t| seen.insert(t.clone()));
}

/// Every order of `first`'s VMs, `first` itself first (lexicographic over positions in it, so
/// that ties keep the traffic order).
fn permutations(first: &[usize]) -> Vec<Vec<usize>> {
    let mut pos: Vec<usize> = (0..first.len()).collect();
    let mut out = vec![first.to_vec()];
    loop {
        // Next lexicographic permutation of `pos`.
        let Some(i) = (1..pos.len()).rev().find(|&i| pos[i - 1] < pos[i]) else {
            return out;
        };
        let j = (i..pos.len())
            .rev()
            .find(|&j| pos[j] > pos[i - 1])
            .unwrap_or(i);
        pos.swap(i - 1, j);
        pos[i..].reverse();
        out.push(pos.iter().map(|&p| first[p]).collect());
    }
}

/// Every assignment of the allowed techniques to the VMs with traffic (odometer order, the
/// first VM fastest), the others `Auto`.
fn assignments(ctx: &Ctx, moving: &[usize]) -> Vec<Vec<Technique>> {
    let opts = &ctx.allowed;
    let mut digits = vec![0usize; moving.len()];
    let mut out = Vec::new();
    loop {
        let mut t = vec![Technique::Auto; ctx.group.vms.len()];
        for (d, &v) in digits.iter().zip(moving) {
            t[v] = opts[*d];
        }
        out.push(t);
        let Some(i) = digits.iter().position(|d| d + 1 < opts.len()) else {
            return out;
        };
        digits[i] += 1;
        for d in &mut digits[..i] {
            *d = 0;
        }
    }
}

/// Best-improvement local search from the best schedule so far: one VM's technique changed,
/// two neighbours in the order swapped, or another concurrency. Stops at a local optimum or
/// when the budget is spent.
fn local_search(s: &mut Searcher, moving: &[usize], ks: &[u32]) {
    while !s.spent() {
        let Some((current, _)) = s.best.clone() else {
            return;
        };
        let mut improved = false;
        for n in neighbours(s.ctx, &current, moving, ks) {
            improved |= s.consider(n);
        }
        if !improved {
            return;
        }
    }
}

fn neighbours(ctx: &Ctx, cur: &Schedule, moving: &[usize], ks: &[u32]) -> Vec<Schedule> {
    let mut out = Vec::new();
    for &v in moving {
        for &t in ctx.allowed.iter().filter(|t| **t != cur.techniques[v]) {
            let mut n = cur.clone();
            n.techniques[v] = t;
            out.push(n);
        }
    }
    for i in 1..cur.order.len() {
        let mut n = cur.clone();
        n.order.swap(i - 1, i);
        out.push(n);
    }
    for &k in ks.iter().filter(|k| **k != cur.concurrency) {
        out.push(Schedule {
            concurrency: k,
            ..cur.clone()
        });
    }
    out
}

/// The schedules an operator would compare with, in the chosen concurrency and the traffic
/// order: every VM on one technique, the paper's rule, and each VM's single-VM choice
/// (traffic-blind, what the control step does today).
pub(super) fn alternatives(ctx: &Ctx, concurrency: u32) -> Vec<Alternative> {
    let n = ctx.group.vms.len();
    let order = traffic_order(ctx.group);
    let candidates = [
        ("all pre-copy", vec![Technique::Precopy; n]),
        ("all post-copy", vec![Technique::Postcopy; n]),
        ("paper rule", rule(ctx)),
        ("single-VM choice", vec![Technique::Auto; n]),
    ];
    candidates
        .into_iter()
        .map(|(label, techniques)| {
            let schedule = Schedule {
                techniques,
                order: order.clone(),
                concurrency,
            };
            let o = evaluate(ctx, &schedule);
            Alternative {
                label: label.to_string(),
                schedule,
                evacuation_s: o.evacuation_s,
                lost_work_s: o.lost_total_s(),
                objective: o.objective,
            }
        })
        .collect()
}
