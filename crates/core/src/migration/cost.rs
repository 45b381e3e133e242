//! The migration cost model: predicts, for each technique, how long a migration takes, how long
//! the VM is paused, how many bytes cross the link and how much the workload suffers.
//!
//! It is deliberately simple and closed-form so that both `auto` (choosing a technique for one VM,
//! in the bench and the agent) and the simulator (thousands of migrations a step) can call it.
//!
//! Model, for a VM with RAM `M`, writable working set `W`, page dirty rate `D` (bytes/s of
//! distinct pages newly dirtied) and a link of bandwidth `B`:
//! - **pre-copy**, as QEMU runs it: passes over memory at `B`, each resending what the guest
//!   dirtied during the one before (at most `W`). QEMU stops the guest as soon as what is still
//!   pending (the rest of the current pass plus what was dirtied since its start) fits
//!   `B * downtime_limit`, which can happen part-way through a pass, but not before its first
//!   bandwidth sample (`bandwidth_sample_s`). The stop-and-copy then sends all of that pending
//!   data with QEMU's rate limit lifted, so the pause is `pending / unthrottled_bps` where QEMU's
//!   own cap is the only limit, and about `downtime_limit` on a link that is really that slow.
//!   It does not converge when passes stop shrinking (`D >= B`) or after `max_rounds`. While
//!   dirty logging is on, the workload pays `tracking_overhead` of its throughput per unit of
//!   write intensity (`min(1, D/B)`).
//! - **post-copy**: the VM moves after a short switchover (`postcopy_switchover_s`); RAM follows at
//!   `B`. Until its working set has arrived the guest stalls on remote page faults: for each page
//!   of the working set it touches meanwhile (at most `W`, at most `D` times the post-copy time)
//!   it loses that page's transfer time on the fault path (the link, or `unthrottled_bps`) plus
//!   `fault_latency_s`.
//! - **hybrid**: pre-copy until `ram_fraction` of RAM has been sent or `max_rounds` rounds, then
//!   post-copy whatever is left: the pages not yet sent plus what the working set dirtied since.
//!   Like QEMU, it still completes by stop-and-copy if the pending data fits the threshold before
//!   the switch point.
//!
//! Degradation is reported as the benchmark measures it: the share of workload throughput lost
//! over the window from migration start to `max(end, start + window_min_s)`.
//!
//! Ranking ([`Prediction::score`]) weighs lost work and pause against the post-copy phase's
//! exposure: while post-copy runs the VM's memory is split between two hosts, and losing either
//! host or the link loses the VM. `postcopy_exposure_weight` prices a second of that in points of
//! degradation, so an idle VM keeps pre-copy's safety unless post-copy saves real work.

use super::knobs::PlanKnobs;
use super::technique::{HybridSwitch, Technique};
use serde::{Deserialize, Serialize};

/// What the cost model needs to know about a VM.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VmProfile {
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// Bytes of memory the guest keeps rewriting (its writable working set).
    pub wss_bytes: u64,
    /// Rate at which distinct pages get dirtied, bytes per second.
    pub dirty_rate_bps: f64,
}

impl VmProfile {
    /// Builds a profile from two page-sampling dirty-rate measurements (MB/s): a short window,
    /// which sees how fast pages get dirtied, and a one-second window, which sees how much
    /// memory is hot. When the long window's rate falls well below the short one's, the guest
    /// keeps rewriting the same pages: the working set is what the long window saw. Otherwise
    /// the working set is larger than a second of dirtying shows, and is taken as all of memory
    /// (the model only uses it as a cap on what a round can dirty).
    pub fn from_dirty_rates(memory_bytes: u64, short_mb_s: f64, long_mb_s: f64) -> Self {
        let short = short_mb_s.max(0.0) * 1e6;
        let long = long_mb_s.max(0.0) * 1e6;
        let saturated = long < 0.7 * short;
        let wss = if saturated {
            long.min(memory_bytes as f64)
        } else {
            memory_bytes as f64
        };
        VmProfile {
            memory_bytes,
            wss_bytes: wss as u64,
            dirty_rate_bps: short.max(long),
        }
    }
}

/// The path a migration takes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkProfile {
    /// Usable bandwidth for migration traffic, bytes per second.
    pub bandwidth_bps: f64,
}

/// Tunables of the model. Defaults are calibrated on this project's QEMU/TCG measurements (see
/// BENCHMARKS.md); real hosts may override them from their own history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostParams {
    /// Pause allowed for pre-copy's final stop-and-copy, seconds.
    pub downtime_limit_s: f64,
    /// Rounds after which pre-copy is declared non-convergent.
    pub max_rounds: u32,
    /// Time pre-copy may run before the watchdog's deadline cancels it, seconds.
    pub precopy_deadline_s: f64,
    /// Throughput lost while dirty logging is on, at full write intensity (0..1).
    pub tracking_overhead: f64,
    /// Pause at post-copy's switchover (device state, CPU state, discard bitmap), seconds.
    pub postcopy_switchover_s: f64,
    /// Extra stall per demand-faulted page, seconds (round trip on the migration channel).
    pub fault_latency_s: f64,
    /// Bandwidth of the traffic QEMU's `max-bandwidth` does not limit, bytes/s: pre-copy's
    /// stop-and-copy (QEMU lifts its rate limit once the guest is stopped) and demand-faulted
    /// pages on postcopy-preempt's channel. None: the link's, for a link that is really that
    /// slow. Where the cap is QEMU's rather than the network's, this is the network's speed.
    pub unthrottled_bps: Option<f64>,
    /// QEMU measures the migration's bandwidth over intervals of this length, seconds, and
    /// cannot switch to stop-and-copy before the first measurement.
    pub bandwidth_sample_s: f64,
    /// Points of score charged per second that a VM spends in post-copy, its memory split
    /// between two hosts (see [`Prediction::score`]).
    pub postcopy_exposure_weight: f64,
    /// Guest page size, bytes.
    pub page_bytes: u64,
    /// Shortest window over which degradation is measured, seconds.
    pub window_min_s: f64,
    /// Hybrid's switch point.
    pub hybrid: HybridSwitch,
}

impl Default for CostParams {
    fn default() -> Self {
        let knobs = PlanKnobs::default();
        CostParams {
            downtime_limit_s: knobs.downtime_limit_ms as f64 / 1000.0,
            max_rounds: 30,
            precopy_deadline_s: knobs.deadline_s as f64,
            tracking_overhead: 0.05,
            postcopy_switchover_s: 0.05,
            fault_latency_s: 0.000_02,
            unthrottled_bps: None,
            bandwidth_sample_s: 0.1,
            postcopy_exposure_weight: 1.0,
            page_bytes: 4096,
            window_min_s: 10.0,
            hybrid: knobs.hybrid(),
        }
    }
}

/// The model's forecast for one technique.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub technique: Technique,
    /// False when pre-copy would never reach the downtime limit (hybrid and post-copy always end).
    pub converges: bool,
    /// Start to completion, seconds (the deadline when pre-copy does not converge).
    pub total_s: f64,
    /// Time the guest is paused, seconds.
    pub downtime_s: f64,
    /// Start until the guest runs on the destination, seconds (infinite if never).
    pub switchover_s: f64,
    pub transferred_bytes: f64,
    /// Pre-copy rounds including the first pass (a pass cut short by the switch counts).
    pub rounds: u32,
    /// Share of workload throughput lost over the measurement window, percent.
    pub degradation_pct: f64,
    /// Seconds in post-copy: the VM runs on the destination while part of its memory is still
    /// on the source.
    pub postcopy_s: f64,
}

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

fn intensity(vm: &VmProfile, link: &LinkProfile) -> f64 {
    if link.bandwidth_bps <= 0.0 {
        return 1.0;
    }
    (vm.dirty_rate_bps / link.bandwidth_bps).clamp(0.0, 1.0)
}

fn degradation_pct(lost_work_s: f64, total_s: f64, params: &CostParams) -> f64 {
    let window = total_s.max(params.window_min_s);
    if !window.is_finite() || window <= 0.0 {
        return 100.0;
    }
    (100.0 * lost_work_s / window).clamp(0.0, 100.0)
}

/// What pre-copy's passes did before they stopped.
struct Rounds {
    count: u32,
    seconds: f64,
    bytes: f64,
    /// Bytes still pending when the passes stopped: the stop-and-copy's when converged,
    /// otherwise what post-copy must fetch (hybrid) or nobody sends (a cancelled pre-copy).
    remaining: f64,
    converged: bool,
}

#[derive(Clone, Copy)]
enum RoundStop {
    Converge,
    Hybrid(HybridSwitch),
}

/// Bandwidth of what QEMU does not rate-limit (stop-and-copy, faulted pages): never below the
/// link's.
fn unthrottled_bw(link: &LinkProfile, params: &CostParams) -> f64 {
    params
        .unthrottled_bps
        .unwrap_or(link.bandwidth_bps)
        .max(link.bandwidth_bps)
        .max(1.0)
}

fn wss(vm: &VmProfile) -> f64 {
    vm.wss_bytes.min(vm.memory_bytes) as f64
}

/// Bytes pending `tau` seconds into a pass that started with `pending0`: the pass's unsent
/// bytes, plus the bytes it already sent that the guest has dirtied again (at most `W`).
fn pending_at(vm: &VmProfile, bw: f64, pending0: f64, tau: f64) -> f64 {
    (pending0 - bw * tau).max(0.0) + (vm.dirty_rate_bps * tau).min(wss(vm))
}

/// Seconds into a pass (starting with `pending0` bytes, `elapsed` seconds into the migration)
/// at which the pending bytes first fit QEMU's threshold `B * downtime_limit`; None if not
/// during this pass. Pending is piecewise linear with one kink (where the re-dirtied bytes reach
/// `W`), so the first crossing is the earliest allowed time or a root of one of the two pieces.
fn threshold_crossing(
    vm: &VmProfile,
    bw: f64,
    params: &CostParams,
    pending0: f64,
    elapsed: f64,
) -> Option<f64> {
    let pass_s = pending0 / bw;
    let threshold = bw * params.downtime_limit_s;
    // A pass that ends before the first bandwidth sample is checked at its end.
    let earliest = (params.bandwidth_sample_s - elapsed).clamp(0.0, pass_s);
    let d = vm.dirty_rate_bps;
    let before_kink = if d < bw {
        (pending0 - threshold) / (bw - d)
    } else {
        f64::NAN
    };
    let after_kink = (pending0 + wss(vm) - threshold) / bw;
    [earliest, before_kink, after_kink]
        .into_iter()
        .filter(|t| (earliest..=pass_s).contains(t))
        .filter(|t| pending_at(vm, bw, pending0, *t) <= threshold * (1.0 + 1e-9))
        .min_by(f64::total_cmp)
}

fn precopy_rounds(
    vm: &VmProfile,
    link: &LinkProfile,
    params: &CostParams,
    stop: RoundStop,
) -> Rounds {
    let bw = link.bandwidth_bps.max(1.0);
    let mut to_send = vm.memory_bytes as f64;
    let mut r = Rounds {
        count: 0,
        seconds: 0.0,
        bytes: 0.0,
        remaining: to_send,
        converged: false,
    };
    loop {
        let limit = match stop {
            RoundStop::Converge => params.max_rounds,
            RoundStop::Hybrid(h) => h.max_rounds.max(1),
        };
        let fraction_done = r.bytes / (vm.memory_bytes.max(1) as f64);
        let hybrid_done = matches!(stop, RoundStop::Hybrid(h) if fraction_done >= h.ram_fraction);
        if r.count >= limit || hybrid_done || r.seconds > params.precopy_deadline_s {
            r.remaining = to_send;
            return r;
        }
        let mut send = to_send;
        if let RoundStop::Hybrid(h) = stop {
            // A fractional first pass stops part-way through memory.
            let budget = h.ram_fraction * vm.memory_bytes as f64 - r.bytes;
            if budget > 0.0 && budget < send {
                send = budget;
            }
        }
        let crossing = threshold_crossing(vm, bw, params, to_send, r.seconds);
        if let Some(tau) = crossing.filter(|tau| *tau <= send / bw) {
            r.seconds += tau;
            r.bytes += bw * tau;
            r.count += 1;
            r.remaining = pending_at(vm, bw, to_send, tau);
            r.converged = true;
            return r;
        }
        let t = send / bw;
        r.seconds += t;
        r.bytes += send;
        r.count += 1;
        let unsent = to_send - send;
        to_send = unsent + (vm.dirty_rate_bps * t).min(wss(vm));
        // Rounds that stop shrinking will never fit the downtime limit.
        if matches!(stop, RoundStop::Converge)
            && r.count > 2
            && to_send >= send
            && vm.dirty_rate_bps >= bw
        {
            r.remaining = to_send;
            return r;
        }
    }
}

/// The prediction for passes that ended in a stop-and-copy: the pending bytes cross with QEMU's
/// rate limit lifted, the guest paused meanwhile.
fn stop_and_copy(
    technique: Technique,
    rounds: &Rounds,
    vm: &VmProfile,
    link: &LinkProfile,
    params: &CostParams,
) -> Prediction {
    let downtime = rounds.remaining / unthrottled_bw(link, params);
    let total = rounds.seconds + downtime;
    let lost = rounds.seconds * params.tracking_overhead * intensity(vm, link) + downtime;
    Prediction {
        technique,
        converges: true,
        total_s: total,
        downtime_s: downtime,
        switchover_s: total,
        transferred_bytes: rounds.bytes + rounds.remaining,
        rounds: rounds.count,
        degradation_pct: degradation_pct(lost, total, params),
        postcopy_s: 0.0,
    }
}

fn predict_precopy(vm: &VmProfile, link: &LinkProfile, params: &CostParams) -> Prediction {
    let bw = link.bandwidth_bps.max(1.0);
    let rounds = precopy_rounds(vm, link, params, RoundStop::Converge);
    if rounds.converged {
        return stop_and_copy(Technique::Precopy, &rounds, vm, link, params);
    }
    // Runs until the deadline, then is cancelled: the VM never moves.
    let total = params.precopy_deadline_s;
    let write = intensity(vm, link);
    Prediction {
        technique: Technique::Precopy,
        converges: false,
        total_s: total,
        downtime_s: 0.0,
        switchover_s: f64::INFINITY,
        transferred_bytes: bw * total,
        rounds: rounds
            .count
            .max((total / (vm.memory_bytes as f64 / bw).max(1e-3)) as u32),
        degradation_pct: degradation_pct(total * params.tracking_overhead * write, total, params),
        postcopy_s: 0.0,
    }
}

/// Lost work while post-copying for `window_s`: every page of the working set that the guest
/// touches before it has arrived blocks it for a fault's round trip and the page's transfer on
/// the fault path. At most `missing_wss` can fault; a slow writer touches only `D * window_s`.
fn postcopy_stall_s(
    vm: &VmProfile,
    link: &LinkProfile,
    params: &CostParams,
    missing_wss: f64,
    window_s: f64,
) -> f64 {
    let fault_bw = unthrottled_bw(link, params);
    let page = params.page_bytes.max(1) as f64;
    let touched = missing_wss.min(vm.dirty_rate_bps * window_s);
    (touched / page) * (params.fault_latency_s + page / fault_bw)
}

fn predict_postcopy(vm: &VmProfile, link: &LinkProfile, params: &CostParams) -> Prediction {
    let bw = link.bandwidth_bps.max(1.0);
    let memory = vm.memory_bytes as f64;
    let post_s = memory / bw;
    let total = params.postcopy_switchover_s + post_s;
    let lost = params.postcopy_switchover_s + postcopy_stall_s(vm, link, params, wss(vm), post_s);
    Prediction {
        technique: Technique::Postcopy,
        converges: true,
        total_s: total,
        downtime_s: params.postcopy_switchover_s,
        switchover_s: params.postcopy_switchover_s,
        transferred_bytes: memory,
        rounds: 0,
        degradation_pct: degradation_pct(lost, total, params),
        postcopy_s: post_s,
    }
}

fn predict_hybrid(vm: &VmProfile, link: &LinkProfile, params: &CostParams) -> Prediction {
    let bw = link.bandwidth_bps.max(1.0);
    let memory = vm.memory_bytes as f64;
    let rounds = precopy_rounds(vm, link, params, RoundStop::Hybrid(params.hybrid));
    if rounds.converged {
        // Reached QEMU's threshold before the switch point: completes like pre-copy.
        return stop_and_copy(Technique::Hybrid, &rounds, vm, link, params);
    }
    let write = intensity(vm, link);
    // The part of the working set that is missing at the switch: what was dirtied since it was
    // sent, plus its share of the pages never sent.
    let unsent_share = ((memory - rounds.bytes) / memory.max(1.0)).clamp(0.0, 1.0);
    let set = wss(vm);
    let missing_wss = ((vm.dirty_rate_bps * rounds.seconds).min(set) + unsent_share * set).min(set);
    let post_s = rounds.remaining / bw;
    let switchover = rounds.seconds + params.postcopy_switchover_s;
    let total = switchover + post_s;
    let lost = rounds.seconds * params.tracking_overhead * write
        + params.postcopy_switchover_s
        + postcopy_stall_s(vm, link, params, missing_wss, post_s);
    Prediction {
        technique: Technique::Hybrid,
        converges: true,
        total_s: total,
        downtime_s: params.postcopy_switchover_s,
        switchover_s: switchover,
        transferred_bytes: rounds.bytes + rounds.remaining,
        rounds: rounds.count,
        degradation_pct: degradation_pct(lost, total, params),
        postcopy_s: post_s,
    }
}

/// Forecast for one concrete technique (`Auto` forecasts what it would pick).
pub fn predict(
    technique: Technique,
    vm: &VmProfile,
    link: &LinkProfile,
    params: &CostParams,
) -> Prediction {
    match technique {
        Technique::Precopy => predict_precopy(vm, link, params),
        Technique::Postcopy => predict_postcopy(vm, link, params),
        Technique::Hybrid => predict_hybrid(vm, link, params),
        Technique::Auto => {
            let choice = choose(vm, link, params, &Technique::CONCRETE);
            let mut p = predict(choice.technique, vm, link, params);
            p.technique = Technique::Auto;
            p
        }
    }
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
        .unwrap_or_else(|| predict_postcopy(vm, link, params))
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
    use super::*;

    const MIB: u64 = 1 << 20;

    fn vm(memory_mib: u64, wss_mib: u64, dirty_mb_s: f64) -> VmProfile {
        VmProfile {
            memory_bytes: memory_mib * MIB,
            wss_bytes: wss_mib * MIB,
            dirty_rate_bps: dirty_mb_s * 1e6,
        }
    }

    fn link(mb_s: f64) -> LinkProfile {
        LinkProfile {
            bandwidth_bps: mb_s * 1e6,
        }
    }

    /// The bench's situation: QEMU's cap is the only limit, the network itself is fast.
    fn capped_by_qemu() -> CostParams {
        CostParams {
            unthrottled_bps: Some(1e9),
            ..CostParams::default()
        }
    }

    #[test]
    fn idle_vm_precopy_is_one_pass_ending_in_a_stop_of_the_downtime_limit() {
        let one_pass = 256.0 * MIB as f64 / 50e6;
        let p = predict(
            Technique::Precopy,
            &vm(256, 0, 0.0),
            &link(50.0),
            &CostParams::default(),
        );
        assert!(p.converges);
        assert_eq!(p.rounds, 1);
        assert!((p.total_s - one_pass).abs() < 1e-9, "{p:?}");
        // QEMU stops the guest once the rest fits 300 ms of the link, and sends that rest paused.
        assert!((p.downtime_s - 0.3).abs() < 1e-6, "{p:?}");
        assert_eq!(p.postcopy_s, 0.0);
        // Where the cap is QEMU's, the same 15 MB cross at local speed once it lifts the cap.
        let q = predict(
            Technique::Precopy,
            &vm(256, 0, 0.0),
            &link(50.0),
            &capped_by_qemu(),
        );
        assert!((q.downtime_s - 0.015).abs() < 1e-6, "{q:?}");
    }

    #[test]
    fn fast_link_switches_to_stop_and_copy_at_the_first_bandwidth_sample() {
        // 1 GB/s: the threshold (300 MB) exceeds what is pending as soon as QEMU has measured the
        // bandwidth (100 ms in), so the rest of the first pass is sent with the guest stopped.
        // Measured here: 130-170 ms pauses for a busy 256 MiB guest.
        let v = vm(256, 128, 10.0);
        let p = predict(Technique::Precopy, &v, &link(1000.0), &capped_by_qemu());
        assert_eq!(p.rounds, 1);
        let pending = 256.0 * MIB as f64 - 100e6 + 1e6;
        assert!((p.downtime_s - pending / 1e9).abs() < 1e-6, "{p:?}");
        // Hybrid has not reached its switch point by then, so QEMU completes it the same way.
        let h = predict(Technique::Hybrid, &v, &link(1000.0), &capped_by_qemu());
        assert_eq!(h.downtime_s, p.downtime_s);
        assert_eq!(h.postcopy_s, 0.0);
    }

    #[test]
    fn hot_vm_with_a_small_working_set_converges_within_the_first_pass() {
        // Pending = unsent + the 8 MiB set, dirtied again at once: it fits 15 MB near the end.
        let p = predict(
            Technique::Precopy,
            &vm(256, 8, 500.0),
            &link(50.0),
            &CostParams::default(),
        );
        assert!(p.converges);
        assert_eq!(p.rounds, 1);
        let tau = (256.0 * MIB as f64 + 8.0 * MIB as f64 - 15e6) / 50e6;
        assert!((p.total_s - tau - 0.3).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn hot_vm_faster_than_link_never_converges_with_precopy() {
        let params = CostParams::default();
        let p = predict(
            Technique::Precopy,
            &vm(256, 128, 500.0),
            &link(50.0),
            &params,
        );
        assert!(!p.converges);
        assert_eq!(p.total_s, params.precopy_deadline_s);
        assert!(p.switchover_s.is_infinite());
    }

    #[test]
    fn moderate_dirty_rate_converges_in_a_few_rounds() {
        // 5 MB/s of dirtying against a 50 MB/s link: each round is ~10x smaller.
        let p = predict(
            Technique::Precopy,
            &vm(256, 64, 5.0),
            &link(50.0),
            &CostParams::default(),
        );
        assert!(p.converges);
        assert!((2..=4).contains(&p.rounds), "{p:?}");
        assert!(p.downtime_s <= 0.3 + 1e-9, "{p:?}");
    }

    #[test]
    fn postcopy_time_is_bounded_by_memory_over_bandwidth() {
        let params = CostParams::default();
        let p = predict(
            Technique::Postcopy,
            &vm(256, 128, 500.0),
            &link(50.0),
            &params,
        );
        let expected = params.postcopy_switchover_s + 256.0 * MIB as f64 / 50e6;
        assert!((p.total_s - expected).abs() < 1e-9);
        assert_eq!(p.downtime_s, params.postcopy_switchover_s);
        assert!(p.degradation_pct > 0.0 && p.degradation_pct < 100.0);
    }

    #[test]
    fn hybrid_sits_between() {
        let params = CostParams::default();
        let v = vm(256, 128, 500.0);
        let h = predict(Technique::Hybrid, &v, &link(50.0), &params);
        let post = predict(Technique::Postcopy, &v, &link(50.0), &params);
        assert!(h.converges);
        assert_eq!(h.rounds, 1);
        assert!(h.total_s > post.total_s);
        assert!(h.switchover_s > post.switchover_s);
    }

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

    #[test]
    fn profile_from_two_windows() {
        // A hot 128 MiB set rewritten constantly: the 1 s window saturates at the set's size.
        let hot = VmProfile::from_dirty_rates(256 * MIB, 640.0, 134.0);
        assert_eq!(hot.wss_bytes, 134_000_000);
        assert_eq!(hot.dirty_rate_bps, 640e6);
        // A slow writer over a big set: both windows agree, the set is not bounded by them.
        let slow = VmProfile::from_dirty_rates(256 * MIB, 11.0, 10.5);
        assert_eq!(slow.wss_bytes, 256 * MIB);
        assert_eq!(slow.dirty_rate_bps, 11e6);
        let idle = VmProfile::from_dirty_rates(256 * MIB, 0.0, 0.0);
        assert_eq!(idle.dirty_rate_bps, 0.0);
    }

    #[test]
    fn zero_bandwidth_does_not_divide_by_zero() {
        let p = predict(
            Technique::Postcopy,
            &vm(64, 8, 1.0),
            &link(0.0),
            &CostParams::default(),
        );
        assert!(p.total_s.is_finite());
    }
}
