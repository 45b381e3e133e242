//! The demo's figures, computed from the recorded series alone (pure; hand-computed series in
//! the tests):
//!
//! - work lost by a VM over a window: its guest's cumulative counters at the last samples at
//!   or before the window's ends, `degradation = 100 x (1 - Δops / Δdemanded_ops)` and
//!   `lost_s = degradation / 100 x window`: seconds of the VM's full throughput. The guest
//!   counts the work it asks for by its own clock, which QEMU stops while the guest is paused,
//!   so a stop-and-copy pause is under-counted (pre-copy's downtime, at most a few hundred ms
//!   here);
//! - `onset`: the first sample that starts [`RELIEF_SAMPLES`] samples in a row in which a
//!   host's CPU demand exceeds its capacity (a one-sample blip, which the manager rightly
//!   ignores, is no overload);
//! - `relief`: the first sample after the onset that starts [`RELIEF_SAMPLES`] samples in a row
//!   at or under capacity (or runs at or under it to the window's end);
//! - energy: each sample's draw (core's [`HostPower`] at the host's CPU use over its capacity,
//!   nothing in standby) held until the next sample, in Wh;
//! - hosts on over time: hosts not in standby, weighted by time.

use crate::series::{Power, Sample};
use drover_core::control::HostPower;
use serde::{Deserialize, Serialize};

/// Consecutive samples over capacity that make an overload, and at or under it that make a
/// host relieved: as many as the manager's default `hot_samples`, so one busy or quiet second
/// counts as neither.
pub const RELIEF_SAMPLES: usize = 3;

/// A VM's work over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmLoss {
    pub vm: String,
    /// Whether its demand was raised (the memory-intensive VMs the degradation is about).
    pub raised: bool,
    pub ops: u64,
    pub demanded_ops: u64,
    /// 100 x (1 - ops / demanded_ops); negative when the guest did more than it measured
    /// as its full speed (noise).
    pub degradation_pct: f64,
    /// Work lost, seconds of the VM's full throughput.
    pub lost_s: f64,
}

/// The last sample at or before `t_s`.
fn at_or_before(series: &[Sample], t_s: f64) -> Option<&Sample> {
    series.iter().take_while(|s| s.t_s <= t_s).last()
}

/// VM `vm`'s counters (time, ops, demanded ops) at the last sample at or before `t_s` that
/// has it.
fn counters(series: &[Sample], vm: &str, t_s: f64) -> Option<(f64, u64, u64)> {
    series
        .iter()
        .take_while(|s| s.t_s <= t_s)
        .filter_map(|s| {
            let v = s.vm(vm)?;
            Some((s.t_s, v.ops, v.demanded_ops?))
        })
        .last()
}

/// VM `vm`'s work from `from_s` to `to_s` (None without counters at both ends, or when no
/// work was asked for in between).
pub fn vm_loss(
    series: &[Sample],
    vm: &str,
    from_s: f64,
    to_s: f64,
    raised: bool,
) -> Option<VmLoss> {
    let (t0, ops0, dem0) = counters(series, vm, from_s)?;
    let (t1, ops1, dem1) = counters(series, vm, to_s)?;
    let ops = ops1.checked_sub(ops0)?;
    let demanded_ops = dem1.checked_sub(dem0)?;
    if demanded_ops == 0 || t1 <= t0 {
        return None;
    }
    let degradation_pct = 100.0 * (1.0 - ops as f64 / demanded_ops as f64);
    Some(VmLoss {
        vm: vm.to_string(),
        raised,
        ops,
        demanded_ops,
        degradation_pct,
        lost_s: degradation_pct / 100.0 * (t1 - t0),
    })
}

/// Mean degradation of the raised VMs (None when none was measured).
pub fn mean_degradation(losses: &[VmLoss]) -> Option<f64> {
    let raised: Vec<f64> = losses
        .iter()
        .filter(|l| l.raised)
        .map(|l| l.degradation_pct)
        .collect();
    if raised.is_empty() {
        None
    } else {
        Some(raised.iter().sum::<f64>() / raised.len() as f64)
    }
}

fn over_cap(s: &Sample, host: &str) -> Option<bool> {
    s.host(host)
        .filter(|h| h.power != Power::Unknown)
        .map(|h| h.demand_cores > h.cpus)
}

/// The first sample from `from_s` to `to_s` that starts [`RELIEF_SAMPLES`] in a row in which
/// `host` wants more CPU than it has (see the module doc).
pub fn onset(series: &[Sample], host: &str, from_s: f64, to_s: f64) -> Option<f64> {
    let window: Vec<&Sample> = series
        .iter()
        .filter(|s| s.t_s >= from_s && s.t_s <= to_s)
        .collect();
    first_run(&window, host, true)
}

/// When `host`, overloaded from `onset_s`, was relieved (see the module doc), up to `to_s`.
pub fn relieved(series: &[Sample], host: &str, onset_s: f64, to_s: f64) -> Option<f64> {
    let window: Vec<&Sample> = series
        .iter()
        .filter(|s| s.t_s > onset_s && s.t_s <= to_s)
        .collect();
    first_run(&window, host, false)
}

/// The first sample of `window` that starts [`RELIEF_SAMPLES`] samples in a row with `host`
/// over its cap (`over`) or at or under it (`!over`), or such a run to the window's end.
fn first_run(window: &[&Sample], host: &str, over: bool) -> Option<f64> {
    (0..window.len()).find_map(|i| {
        let run: Vec<Option<bool>> = window[i..]
            .iter()
            .take(RELIEF_SAMPLES)
            .map(|s| over_cap(s, host))
            .collect();
        let held = run.iter().all(|o| *o == Some(over));
        let long_enough = run.len() == RELIEF_SAMPLES || i + run.len() == window.len();
        (held && long_enough).then(|| window[i].t_s)
    })
}

/// Energy drawn by all hosts from `from_s` to `to_s`, Wh.
pub fn energy_wh(series: &[Sample], power: &HostPower, from_s: f64, to_s: f64) -> f64 {
    let window: Vec<&Sample> = series
        .iter()
        .filter(|s| s.t_s >= from_s && s.t_s <= to_s)
        .collect();
    window
        .windows(2)
        .map(|pair| {
            let watts: f64 = pair[0]
                .hosts
                .iter()
                .filter(|h| h.power.is_on())
                .map(|h| power.watts(h.utilisation()))
                .sum();
            watts * (pair[1].t_s - pair[0].t_s) / 3600.0
        })
        .sum()
}

/// Hosts on (not in standby) at each sample: (time, count).
pub fn hosts_on(series: &[Sample]) -> Vec<(f64, usize)> {
    series
        .iter()
        .map(|s| (s.t_s, s.hosts.iter().filter(|h| h.power.is_on()).count()))
        .collect()
}

/// Time-weighted mean of the hosts on from `from_s` to `to_s` (None with under two samples).
pub fn mean_hosts_on(series: &[Sample], from_s: f64, to_s: f64) -> Option<f64> {
    let on: Vec<(f64, usize)> = hosts_on(series)
        .into_iter()
        .filter(|(t, _)| *t >= from_s && *t <= to_s)
        .collect();
    let span = on.last()?.0 - on.first()?.0;
    if span <= 0.0 {
        return None;
    }
    let area: f64 = on
        .windows(2)
        .map(|p| p[0].1 as f64 * (p[1].0 - p[0].0))
        .sum();
    Some(area / span)
}

/// Hosts in standby at the last sample at or before `t_s`.
pub fn standby_at(series: &[Sample], t_s: f64) -> usize {
    at_or_before(series, t_s)
        .map(|s| s.hosts.iter().filter(|h| h.power == Power::Standby).count())
        .unwrap_or(0)
}

/// The most hosts on at any sample from `from_s` to `to_s`.
pub fn peak_hosts_on(series: &[Sample], from_s: f64, to_s: f64) -> usize {
    hosts_on(series)
        .into_iter()
        .filter(|(t, _)| *t >= from_s && *t <= to_s)
        .map(|(_, n)| n)
        .max()
        .unwrap_or(0)
}

/// Integrity errors over the whole series: each VM's largest cumulative count, summed.
pub fn integrity_errors(series: &[Sample]) -> u64 {
    let mut worst: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for v in series.iter().flat_map(|s| &s.vms) {
        let e = worst.entry(v.name.as_str()).or_default();
        *e = (*e).max(v.integrity_errors);
    }
    worst.values().sum()
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
