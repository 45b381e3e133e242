//! Picking the fractions: a grid of `(m, s)`, the lowest agility within the time budget, and
//! a one-line explanation naming the figures (the style of `cost::score`'s).

use super::model::{forecast, FractionPrediction};
use super::profile::{WanLink, WanProfile};
use super::{FractionParams, WanError};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Agilities closer than this (seconds) are a tie, broken by post-copy time then total time.
const AGILITY_TIE_S: f64 = 1e-6;

/// Candidates whose agility is within this share of the lowest count as equally agile (Drover's:
/// near its optimum agility is flat, and a profile's noise moved the strict minimum between
/// storage fractions 20% and 70% from one run to the next on a steady guest); among them the
/// least post-copy, then the fastest, wins.
pub const AGILITY_TIE_SHARE: f64 = 0.05;

/// The fractions picked and why, with the pure techniques for comparison.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FractionChoice {
    pub chosen: FractionPrediction,
    /// The total-time budget, seconds (None: no budget, so the record stays finite on the
    /// wire).
    pub budget_s: Option<f64>,
    /// False when no candidate fits the budget (then `chosen` is the fastest).
    pub within_budget: bool,
    pub reason: String,
    /// Everything ahead (`m = s = 1`).
    pub pure_precopy: FractionPrediction,
    /// Nothing ahead (`m = s = 0`).
    pub pure_postcopy: FractionPrediction,
}

/// The grid's fractions: `0, 1/n, ..., 1` (exact ends).
fn grid(steps: u32) -> impl Iterator<Item = f64> + Clone {
    (0..=steps).map(move |i| i as f64 / steps as f64)
}

/// Lower agility first; among ties less post-copy (the VM split between hosts), then faster.
fn better(a: &FractionPrediction, b: &FractionPrediction) -> Ordering {
    if (a.agility_s - b.agility_s).abs() > AGILITY_TIE_S {
        return a.agility_s.total_cmp(&b.agility_s);
    }
    a.postcopy_s
        .total_cmp(&b.postcopy_s)
        .then(a.total_s.total_cmp(&b.total_s))
}

/// Forecasts every `(m, s)` of the grid (steps of `1 / params.grid_steps`) and picks the one
/// with the lowest restoration agility among those whose total time is at most `budget_s`
/// seconds (`f64::INFINITY`: no budget), agilities within [`AGILITY_TIE_SHARE`] of the lowest
/// counting as equal (then the least post-copy, then the fastest); when none fits, the one with the shortest total time,
/// and the reason says so. Errors: an invalid profile, link or params, or a budget that is
/// NaN or not positive (`budget_s`).
pub fn choose_fractions(
    vm: &WanProfile,
    link: &WanLink,
    params: &FractionParams,
    budget_s: f64,
) -> Result<FractionChoice, WanError> {
    vm.validate()?;
    link.validate()?;
    params.validate()?;
    if budget_s.is_nan() || budget_s <= 0.0 {
        return Err(WanError::Invalid {
            field: "budget_s".into(),
            expected: "seconds > 0 (infinite for no budget)",
            got: budget_s.to_string(),
        });
    }
    let axis = grid(params.grid_steps);
    let candidates: Vec<FractionPrediction> = axis
        .clone()
        .flat_map(|m| axis.clone().map(move |s| (m, s)))
        .map(|(m, s)| forecast(vm, link, params, m, s))
        .collect();
    let fastest = |c: &&FractionPrediction| c.total_s;
    let fits = || candidates.iter().filter(|c| c.total_s <= budget_s);
    let lowest = fits().map(|c| c.agility_s).fold(f64::INFINITY, f64::min);
    let band = lowest + (AGILITY_TIE_SHARE * lowest).max(AGILITY_TIE_S);
    let feasible = fits()
        .filter(|c| c.agility_s <= band)
        .min_by(|a, b| better(a, b));
    let (chosen, within_budget) = match feasible {
        Some(c) => (*c, true),
        None => {
            let c = candidates
                .iter()
                .min_by(|a, b| fastest(a).total_cmp(&fastest(b)))
                .copied()
                .unwrap_or_else(|| forecast(vm, link, params, 0.0, 0.0));
            (c, false)
        }
    };
    let pure_precopy = forecast(vm, link, params, 1.0, 1.0);
    let pure_postcopy = forecast(vm, link, params, 0.0, 0.0);
    let reason = explain(
        &chosen,
        within_budget,
        budget_s,
        &pure_precopy,
        &pure_postcopy,
        link,
        params.restored_share,
    );
    // Where the rate and working set came from, so a plan that moves can be traced to them.
    let reason = format!("{reason}; {}", vm.memory.explain());
    Ok(FractionChoice {
        chosen,
        budget_s: budget_s.is_finite().then_some(budget_s),
        within_budget,
        reason,
        pure_precopy,
        pure_postcopy,
    })
}

/// What a pick is called: a pure technique or the hybrid's fractions.
fn name(p: &FractionPrediction) -> String {
    match (p.memory_fraction, p.storage_fraction) {
        (m, s) if m == 1.0 && s == 1.0 => "pure pre-copy".into(),
        (m, s) if m == 0.0 && s == 0.0 => "pure post-copy".into(),
        (m, s) => format!(
            "hybrid with memory {:.0}% and storage {:.0}% ahead",
            m * 100.0,
            s * 100.0
        ),
    }
}

fn figures(p: &FractionPrediction) -> String {
    format!(
        "agility {:.2}s, downtime {:.0}ms, total {:.1}s, {:.0} remote waits",
        p.agility_s,
        p.downtime_s * 1000.0,
        p.total_s,
        p.remote_waits
    )
}

fn explain(
    chosen: &FractionPrediction,
    within_budget: bool,
    budget_s: f64,
    pre: &FractionPrediction,
    post: &FractionPrediction,
    link: &WanLink,
    restored_share: f64,
) -> String {
    let tie = AGILITY_TIE_SHARE * 100.0;
    let verdict = if !within_budget {
        format!("no fractions fit the {budget_s:.1}s budget, so the fastest")
    } else if budget_s.is_finite() {
        format!("lowest restoration agility within the {budget_s:.1}s budget (within {tie:.0}%, then least post-copy)")
    } else {
        format!("lowest restoration agility (within {tie:.0}%, then least post-copy)")
    };
    let converge = if chosen.converges {
        String::new()
    } else {
        format!(
            "; its ahead rounds do not converge, the freeze copies what is dirty after {} rounds",
            chosen.rounds
        )
    };
    format!(
        "{}: {verdict}: agility {:.2}s (downtime {:.0}ms, throughput back to {:.0}% at {:.1}s), total {:.1}s, {:.0} remote waits ({:.2}% of accesses in post-copy){converge}; pure pre-copy: {}; pure post-copy: {}; link {:.1}MB/s, {:.0}ms RTT",
        name(chosen),
        chosen.agility_s,
        chosen.downtime_s * 1000.0,
        restored_share * 100.0,
        chosen.restored_s,
        chosen.total_s,
        chosen.remote_waits,
        chosen.remote_wait_share * 100.0,
        figures(pre),
        figures(post),
        link.bandwidth_bps() / 1e6,
        link.rtt_s * 1000.0,
    )
}
