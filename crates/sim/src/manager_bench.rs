//! The manager's benchmark (issue 9): the control step run every simulated second against the
//! live simulation of a datacenter (1,000 hosts and 10,000 VMs by default) for an hour, timing
//! each pass.
//!
//! - **Workload**: a seeded synthetic day ([`crate::synth`]), plus sudden overloads so that
//!   plans happen: every `surge_every_s` a random active host's first VMs (one more than it has
//!   cores, in arrival order) are held at full CPU for `surge_s`.
//! - **Timed**: the control step alone, and a whole pass: observe, step, every action applied
//!   and its outcome recorded, and (once a minute) pruning plans over ten minutes old, as the
//!   manager does once it has stored them. A pass stands for the manager's in-process work
//!   without I/O; the model's own progress between looks ([`LiveSim::advance`]), the world
//!   the manager watches, is not timed.
//! - **Memory**: the process's peak resident set (`VmHWM` in /proc/self/status) after the run.

use crate::limits::{self, LimitError};
use crate::live::{HostSpec, LiveError, LiveSim, LiveSpec, Measures, Surge};
use crate::synth::{generate, SynthSpec};
use drover_core::control::{
    record, step, ControlSettings, ControlState, HostPower, PlanKind, PowerState,
};
use drover_core::dc::rng::SplitMix64;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;
use thiserror::Error;

/// Longest simulated run, hours: a week of one-second looks at most, so the synthetic day's
/// samples stay well in limits.
pub const MAX_HOURS: f64 = 168.0;

/// What `hours` must be, as every refusal words it.
pub const HOURS_EXPECTED: &str =
    "above 0 and at most 168, and at least one simulated second (0.000278)";

/// Whether `hours` is a run length the bench takes: at least one simulated second (the bench
/// looks once a simulated second, so less would silently be rounded up to one look), at most
/// [`MAX_HOURS`] (NaN is not).
pub fn hours_ok(hours: f64) -> bool {
    hours * 3600.0 >= 1.0 && hours <= MAX_HOURS
}

/// What the benchmark runs.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchSpec {
    /// Hosts, all alike.
    pub hosts: usize,
    /// VMs of the synthetic workload.
    pub vms: usize,
    /// Simulated time, hours.
    pub hours: f64,
    /// Seeds the workload, the dirty rates and the overloads.
    pub seed: u64,
    /// Cores per host.
    pub host_cpus: f64,
    /// Memory per host, bytes.
    pub host_memory_bytes: u64,
    /// Seconds between surges.
    pub surge_every_s: f64,
    /// How long a surge lasts, s.
    pub surge_s: f64,
}

impl Default for BenchSpec {
    /// Issue 9's benchmark: 1,000 hosts of 8 cores and 32 GiB, 10,000 VMs (the benchmark's VM
    /// types), one hour, a surge a minute lasting 40 s: a new hotspot to relieve every minute,
    /// and moments with no host hot, when the manager may put idle hosts in standby (it does
    /// not while any host is hot).
    fn default() -> Self {
        BenchSpec {
            hosts: 1000,
            vms: 10_000,
            hours: 1.0,
            seed: 1,
            host_cpus: 8.0,
            host_memory_bytes: 32 << 30,
            surge_every_s: 60.0,
            surge_s: 40.0,
        }
    }
}

/// A benchmark that cannot run.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error("manager bench: {0}")]
    Limit(LimitError),
    #[error("manager bench: {field} = {value}: expected {expected}")]
    Spec {
        field: &'static str,
        value: f64,
        expected: &'static str,
    },
}

// Not `#[from]`: that would also make the cause a `source()`, printed twice in a chain.
impl From<LimitError> for BenchError {
    fn from(e: LimitError) -> Self {
        BenchError::Limit(e)
    }
}

/// Pass times, ms (nearest rank: the median and p99 are times some pass took).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timing {
    /// Fastest pass, ms.
    pub min_ms: f64,
    /// Median pass, ms.
    pub median_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest pass, ms.
    pub max_ms: f64,
    /// Mean pass, ms.
    pub mean_ms: f64,
}

impl Timing {
    /// Nearest-rank statistics of `ms` (sorted in place).
    pub fn of(ms: &mut [f64]) -> Timing {
        if ms.is_empty() {
            return Timing::default();
        }
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Timing {
            min_ms: ms[0],
            median_ms: rank(0.5),
            p99_ms: rank(0.99),
            max_ms: ms[ms.len() - 1],
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
        }
    }
}

/// What the benchmark measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub hosts: usize,
    pub vms: usize,
    /// Simulated time, s.
    pub simulated_s: f64,
    /// Control passes run (one a simulated second).
    pub passes: usize,
    pub seed: u64,
    /// The control step alone.
    pub step: Timing,
    /// Observe, step, apply and record, prune.
    pub pass: Timing,
    /// When the slowest pass ran, s of simulated time.
    pub slowest_pass_at_s: f64,
    /// Peak resident memory of the process after the run, MiB (None off Linux).
    pub peak_rss_mib: Option<f64>,
    /// Plans made, by kind.
    pub plans: BTreeMap<String, u64>,
    /// Overloads started.
    pub surges: u64,
    /// Hosts active at the end.
    pub active_hosts_end: usize,
    /// The model's measures (energy, SLA, migrations by technique and outcome).
    pub measures: Measures,
    /// Wall time of the whole run, s (model and untimed work included).
    pub wall_s: f64,
}

/// Progress callback: (passes done, total).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// The benchmark's datacenter at time 0 for `spec`, and the number of passes to run (one a
/// simulated second). The manager crate's whole-manager benchmark runs the same one.
///
/// # Errors
/// [`BenchError`] for sizes past [`crate::limits`] or numbers that are not sane.
pub fn model(spec: &BenchSpec) -> Result<(LiveSim, usize), BenchError> {
    let passes = validate(spec)?;
    let samples = (passes as f64 / 300.0).ceil() as usize + 2;
    let work = generate(&SynthSpec {
        vms: spec.vms,
        samples,
        seed: spec.seed,
    })?;
    let live = LiveSpec {
        seed: spec.seed,
        ..LiveSpec::new(vec![HostSpec {
            count: spec.hosts,
            cpus: spec.host_cpus,
            memory_bytes: spec.host_memory_bytes,
            power: HostPower::default(),
        }])
    };
    Ok((LiveSim::new(live, work)?, passes))
}

/// The benchmark's sudden overloads: every `surge_every_s` a random active host's first VMs
/// (one more than it has cores, in arrival order) are held at full CPU for `surge_s`. Seeded,
/// so two runs with the same seed and the same decisions surge alike.
#[derive(Debug, Clone)]
pub struct Surges {
    rng: SplitMix64,
    next_s: f64,
    every_s: f64,
    last_s: f64,
    take: usize,
    /// Overloads started so far.
    pub started: u64,
}

impl Surges {
    /// The overloads of `spec`, the first at `surge_every_s`.
    pub fn new(spec: &BenchSpec) -> Surges {
        Surges {
            rng: SplitMix64::new(spec.seed ^ 0x5E26_E5E5),
            next_s: spec.surge_every_s,
            every_s: spec.surge_every_s,
            last_s: spec.surge_s,
            take: spec.host_cpus.ceil() as usize + 1,
            started: 0,
        }
    }

    /// Starts the overload due at `now_s`, if one is (call it before the model advances to
    /// `now_s`).
    ///
    /// # Errors
    /// [`LiveError::Surge`] if the model refuses it (it cannot for the model's own VMs).
    pub fn due(&mut self, sim: &mut LiveSim, now_s: f64) -> Result<(), LiveError> {
        if now_s < self.next_s {
            return Ok(());
        }
        self.next_s += self.every_s;
        let busy: Vec<String> = sim
            .host_names()
            .filter(|h| sim.power_state(h) == Some(PowerState::Active) && !sim.vms_on(h).is_empty())
            .map(str::to_string)
            .collect();
        if busy.is_empty() {
            return Ok(());
        }
        let host = &busy[self.rng.below(busy.len())];
        let vms = sim
            .vms_on(host)
            .into_iter()
            .take(self.take)
            .map(str::to_string)
            .collect();
        sim.add_surge(&Surge {
            vms,
            level: 1.0,
            start_s: now_s,
            end_s: now_s + self.last_s,
        })?;
        self.started += 1;
        Ok(())
    }
}

/// Runs the benchmark.
///
/// # Errors
/// [`BenchError`] for sizes past [`crate::limits`] or numbers that are not sane.
pub fn run(spec: &BenchSpec, mut progress: Option<Progress>) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    let (mut sim, passes) = model(spec)?;
    let settings = sim.control_settings(ControlSettings::default());
    let mut state = ControlState::default();
    let mut surges = Surges::new(spec);
    let (mut step_ms, mut pass_ms) = (Vec::with_capacity(passes), Vec::with_capacity(passes));
    let mut plans: BTreeMap<String, u64> = BTreeMap::new();
    for t in 1..=passes {
        let now = t as f64;
        surges.due(&mut sim, now)?;
        sim.advance(now);
        let t0 = Instant::now();
        let obs = sim.observe(now);
        let t1 = Instant::now();
        let out = step(&mut state, &obs, &settings, now);
        let t2 = Instant::now();
        for a in &out.actions {
            let outcome = sim.apply(a, now);
            record(&mut state, outcome, now);
        }
        if t.is_multiple_of(60) {
            state.prune(now - 600.0);
        }
        let t3 = Instant::now();
        step_ms.push((t2 - t1).as_secs_f64() * 1000.0);
        pass_ms.push((t3 - t0).as_secs_f64() * 1000.0);
        for id in &out.new_plans {
            if let Some(p) = state.plans.get(id) {
                *plans.entry(kind(p.kind).into()).or_default() += 1;
            }
        }
        if let Some(p) = progress.as_mut() {
            p(t, passes);
        }
    }
    let active_hosts_end = sim
        .host_names()
        .filter(|h| sim.power_state(h) == Some(PowerState::Active))
        .count();
    let slowest_pass_at_s = pass_ms
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0.0, |(i, _)| (i + 1) as f64);
    Ok(BenchReport {
        hosts: spec.hosts,
        vms: spec.vms,
        simulated_s: passes as f64,
        passes,
        seed: spec.seed,
        step: Timing::of(&mut step_ms),
        pass: Timing::of(&mut pass_ms),
        slowest_pass_at_s,
        peak_rss_mib: peak_rss_kib().map(|k| k as f64 / 1024.0),
        plans,
        surges: surges.started,
        active_hosts_end,
        measures: sim.measures().clone(),
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Checks the spec; returns the number of passes (one a simulated second).
fn validate(spec: &BenchSpec) -> Result<usize, BenchError> {
    limits::check("hosts", spec.hosts, &limits::HOSTS)?;
    limits::check("VMs", spec.vms, &limits::VMS)?;
    let bad = |field, value, expected| {
        Err(BenchError::Spec {
            field,
            value,
            expected,
        })
    };
    if !hours_ok(spec.hours) {
        return bad("hours", spec.hours, HOURS_EXPECTED);
    }
    if !(spec.surge_every_s.is_finite() && spec.surge_every_s >= 1.0) {
        return bad("surge_every_s", spec.surge_every_s, "at least 1");
    }
    if !(spec.surge_s.is_finite() && spec.surge_s > 0.0) {
        return bad("surge_s", spec.surge_s, "above 0");
    }
    Ok(((spec.hours * 3600.0).round() as usize).max(1))
}

/// A plan kind's name, as the store and the reports spell it.
pub fn kind(k: PlanKind) -> &'static str {
    match k {
        PlanKind::Relief => "relief",
        PlanKind::Consolidation => "consolidation",
        PlanKind::Drain => "drain",
        PlanKind::Balance => "balance",
    }
}

/// Peak resident memory of this process, KiB, from /proc (Linux only).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_is_nearest_rank() {
        let mut ms: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        let t = Timing::of(&mut ms);
        assert_eq!(
            (t.min_ms, t.median_ms, t.p99_ms, t.max_ms),
            (1.0, 100.0, 198.0, 200.0)
        );
        assert_eq!(t.mean_ms, 100.5);
        assert_eq!(Timing::of(&mut []), Timing::default());
    }

    #[test]
    fn a_small_bench_makes_plans_and_moves_vms() {
        let spec = BenchSpec {
            hosts: 20,
            vms: 150,
            hours: 0.25,
            ..BenchSpec::default()
        };
        let r = run(&spec, None).expect("runs");
        assert_eq!(r.passes, 900);
        assert!(
            r.plans.get("relief").copied().unwrap_or(0) > 0,
            "{:?}",
            r.plans
        );
        assert!(
            r.measures.ended().completed > 0,
            "{:?}",
            r.measures.migrations
        );
        assert_eq!(r.surges, 15);
        let bad = BenchSpec { hours: 0.0, ..spec };
        let e = run(&bad, None).expect_err("no time");
        assert!(e.to_string().contains("hours = 0"), "{e}");
    }

    #[test]
    fn a_run_shorter_than_one_look_is_refused() {
        assert!(!hours_ok(1e-9));
        assert!(!hours_ok(0.9 / 3600.0));
        assert!(hours_ok(1.0 / 3600.0));
        assert!(hours_ok(MAX_HOURS));
        assert!(!hours_ok(f64::NAN));
    }
}
