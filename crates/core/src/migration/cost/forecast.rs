//! The model's forecast for one technique: pre-copy's passes and QEMU's switch rule, post-copy's
//! remote faults, hybrid's switch point (formulas in the parent module's doc).

use super::score::choose;
use super::{CostParams, LinkProfile, Prediction, VmProfile};
use crate::migration::technique::{HybridSwitch, Technique};

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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{capped_by_qemu, link, vm, MIB};
    use super::*;

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
