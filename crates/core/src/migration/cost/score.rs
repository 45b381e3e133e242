//! Ranking forecasts and picking a technique: [`Prediction::score`] (lost work, pause,
//! post-copy exposure, duration), [`choose`] with its one-line reason, [`pick`] without it.

use super::forecast::predict;
use super::{CostParams, LinkProfile, Prediction, VmProfile};
use crate::migration::technique::Technique;
use serde::{Deserialize, Serialize};

impl Prediction {
    /// One number to rank techniques by: a migration that never converges is ruled out; then
    /// lost work, the pause (counted again: latency-sensitive services feel it beyond its share
    /// of throughput), and the post-copy phase's exposure; duration breaks ties.
    pub fn score(&self, params: &CostParams) -> f64 {
        self.risk(params) + self.degradation_pct + 0.01 * self.total_s
    }

    /// The part of [`Prediction::score`] that is neither lost work nor duration, in the same
    /// points: 1000 if pre-copy never converges, 10 a second of pause, and
    /// `postcopy_exposure_weight` a second of post-copy. A group plan (`migration::group`)
    /// counts work and time over the whole group and adds this per VM, so both rankings price
    /// risk alike.
    pub fn risk(&self, params: &CostParams) -> f64 {
        let failure = if self.converges { 0.0 } else { 1000.0 };
        failure + 10.0 * self.downtime_s + params.postcopy_exposure_weight * self.postcopy_s
    }

    /// Work lost, seconds of the VM's full throughput: `degradation_pct` is a share of the
    /// window `max(total_s, window_min_s)`, so this undoes it (infinite if the window is).
    pub fn lost_work_s(&self, params: &CostParams) -> f64 {
        let window = self.total_s.max(params.window_min_s);
        if window.is_finite() {
            self.degradation_pct / 100.0 * window
        } else {
            f64::INFINITY
        }
    }
}

/// The cost model's pick and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub technique: Technique,
    pub reason: String,
    pub predictions: Vec<Prediction>,
}

/// Picks the technique with the lowest predicted score among `allowed` (concrete ones only) and
/// explains the pick in one line.
pub fn choose(
    vm: &VmProfile,
    link: &LinkProfile,
    params: &CostParams,
    allowed: &[Technique],
) -> Choice {
    let predictions = forecasts(vm, link, params, allowed);
    let best = best_of(&predictions, vm, link, params);
    let reason = explain(&best, &predictions, vm, link);
    Choice {
        technique: best.technique,
        reason,
        predictions,
    }
}

/// The lowest score among `predictions`; post-copy's forecast if there is none.
fn best_of(
    predictions: &[Prediction],
    vm: &VmProfile,
    link: &LinkProfile,
    params: &CostParams,
) -> Prediction {
    predictions
        .iter()
        .min_by(|a, b| a.score(params).total_cmp(&b.score(params)))
        .copied()
        .unwrap_or_else(|| predict(Technique::Postcopy, vm, link, params))
}

/// What [`choose`] picks, forecast, without the explanation (for callers that pick many
/// times, like the group search).
pub fn pick(
    vm: &VmProfile,
    link: &LinkProfile,
    params: &CostParams,
    allowed: &[Technique],
) -> Prediction {
    best_of(&forecasts(vm, link, params, allowed), vm, link, params)
}

/// Each concrete technique of `allowed`, forecast, in `allowed`'s order.
fn forecasts(
    vm: &VmProfile,
    link: &LinkProfile,
    params: &CostParams,
    allowed: &[Technique],
) -> Vec<Prediction> {
    allowed
        .iter()
        .filter(|t| **t != Technique::Auto)
        .map(|t| predict(*t, vm, link, params))
        .collect()
}

fn explain(best: &Prediction, all: &[Prediction], vm: &VmProfile, link: &LinkProfile) -> String {
    let ratio = vm.dirty_rate_bps / link.bandwidth_bps.max(1.0);
    let precopy_converges = all
        .iter()
        .find(|p| p.technique == Technique::Precopy)
        .map(|p| p.converges);
    // A technique that would lose less work but ranked lower: say what outweighed it.
    let less_lossy = all
        .iter()
        .filter(|p| p.converges && p.degradation_pct < best.degradation_pct - 0.05)
        .min_by(|a, b| a.degradation_pct.total_cmp(&b.degradation_pct));
    let verdict = match (best.technique, precopy_converges, less_lossy) {
        (Technique::Precopy, _, None) => "pre-copy converges with the least lost work",
        (Technique::Precopy, _, Some(_)) => "pre-copy converges",
        (_, Some(false), _) => "pre-copy would not converge",
        (_, _, None) => "least predicted lost work",
        (_, _, Some(_)) => "lowest predicted cost",
    };
    let trade_off = less_lossy.map_or(String::new(), |other| {
        format!(
            "; {} would lose {:.1} points less work, but its {:.0}ms pause and {:.1}s with memory split between hosts weigh more",
            other.technique,
            best.degradation_pct - other.degradation_pct,
            other.downtime_s * 1000.0,
            other.postcopy_s,
        )
    });
    let why = format!("{verdict}{trade_off}");
    format!(
        "{why}: dirty rate {:.1}MB/s is {:.2}x the {:.1}MB/s link, wss {:.0}MiB of {:.0}MiB; predicted degradation {:.1}%, downtime {:.0}ms, total {:.1}s",
        vm.dirty_rate_bps / 1e6,
        ratio,
        link.bandwidth_bps / 1e6,
        vm.wss_bytes as f64 / 1048576.0,
        vm.memory_bytes as f64 / 1048576.0,
        best.degradation_pct,
        best.downtime_s * 1000.0,
        best.total_s,
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{capped_by_qemu, link, vm, MIB};
    use super::*;

    #[test]
    fn auto_picks_precopy_for_idle_and_post_or_hybrid_for_hot() {
        let params = CostParams::default();
        let idle = choose(&vm(256, 0, 0.0), &link(50.0), &params, &Technique::CONCRETE);
        assert_eq!(idle.technique, Technique::Precopy, "{}", idle.reason);
        let hot = choose(
            &vm(256, 128, 500.0),
            &link(50.0),
            &params,
            &Technique::CONCRETE,
        );
        assert_ne!(hot.technique, Technique::Precopy, "{}", hot.reason);
        assert!(hot.reason.contains("would not converge"), "{}", hot.reason);
        assert_eq!(hot.predictions.len(), 3);
    }

    #[test]
    fn pick_is_choose_without_the_words() {
        let params = capped_by_qemu();
        for v in [vm(256, 0, 0.0), vm(256, 64, 5.0), vm(256, 128, 500.0)] {
            for mb_s in [50.0, 1000.0] {
                for allowed in [
                    &Technique::CONCRETE[..],
                    &[Technique::Hybrid, Technique::Precopy],
                ] {
                    let c = choose(&v, &link(mb_s), &params, allowed);
                    let p = pick(&v, &link(mb_s), &params, allowed);
                    assert_eq!(p.technique, c.technique);
                    assert_eq!(
                        Some(&p),
                        c.predictions.iter().find(|q| q.technique == p.technique)
                    );
                }
            }
        }
    }

    #[test]
    fn auto_respects_allowed_list() {
        let params = CostParams::default();
        let c = choose(
            &vm(256, 128, 500.0),
            &link(50.0),
            &params,
            &[Technique::Precopy],
        );
        assert_eq!(c.technique, Technique::Precopy);
    }

    #[test]
    fn auto_on_the_bench_rows() {
        // Profiles as the bench measures them (two dirty-rate windows, MB/s) on a 256 MiB guest;
        // "uncapped" is the assumed 1 GB/s local link. See BENCHMARKS.md.
        let params = capped_by_qemu();
        let moderate = VmProfile::from_dirty_rates(256 * MIB, 10.0, 10.0);
        let hot = VmProfile::from_dirty_rates(256 * MIB, 640.0, 134.0);
        let pick = |v: &VmProfile, mb_s: f64| {
            choose(v, &link(mb_s), &params, &Technique::CONCRETE).technique
        };
        // Uncapped, pre-copy stops with ~170 MB still to send (measured: 150 ms pause, 1.5%
        // lost); post-copy's pause is a few ms and the guest barely faults.
        assert_eq!(pick(&moderate, 1000.0), Technique::Postcopy);
        // Over 50 MB/s pre-copy converges with a 15 ms stop; post-copy would split the VM for 5 s.
        assert_eq!(pick(&moderate, 50.0), Technique::Precopy);
        // A hot set over a slow link: pre-copy never converges.
        assert_ne!(pick(&hot, 50.0), Technique::Precopy);
        // Uncapped, the whole hot set would fault in post-copy; pre-copy's stop is cheaper.
        assert_eq!(pick(&hot, 1000.0), Technique::Precopy);
    }

    #[test]
    fn exposure_weight_is_what_keeps_idle_vms_on_precopy() {
        let idle = vm(256, 0, 0.0);
        let safe = choose(
            &idle,
            &link(50.0),
            &CostParams::default(),
            &Technique::CONCRETE,
        );
        assert_eq!(safe.technique, Technique::Precopy);
        // Priced at nothing, post-copy's 50 ms pause beats pre-copy's 300 ms stop.
        let reckless = CostParams {
            postcopy_exposure_weight: 0.0,
            ..CostParams::default()
        };
        let c = choose(&idle, &link(50.0), &reckless, &Technique::CONCRETE);
        assert_eq!(c.technique, Technique::Postcopy, "{}", c.reason);
        assert!(
            safe.reason.contains("memory split between hosts"),
            "{}",
            safe.reason
        );
    }
}
