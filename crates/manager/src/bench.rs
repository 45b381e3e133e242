//! The whole manager's benchmark (issue 9, `drover manager bench`): the control loop
//! ([`Daemon::look`]: observe, store the look, step, store the step, act, record and store the
//! outcomes, prune, compact, publish for the handle) on the SQLite store in a fresh directory,
//! over [`SimFleet`] with the datacenter of `drover sim manager-bench` (1,000 hosts and 10,000
//! VMs by default, a sudden overload a minute), one look a simulated second for an hour.
//!
//! - **Timed**, per look: each stage ([`LookTimes`]) and the whole look, wall clock. The
//!   simulated world's own progress between looks (demand, migrations, wakes:
//!   [`SimFleet::catch_up`]) is not timed: agents do that work, not the manager. Building the
//!   observation is timed, standing for the fleet's polling.
//! - **Not measured**: HTTP (the agents' polling over the network and the manager's API;
//!   nothing calls the API during the run), and real time (the clock is virtual: a look
//!   follows the last one at once, so the store gets no idle time to checkpoint in).
//! - **CPU**: each look's CPU time on the loop's thread too (`/proc/thread-self/schedstat`,
//!   Linux), which other processes on a shared machine do not inflate; the wall time also
//!   counts waiting for the disk (each look's commit is synced).
//! - **Memory**: the process's peak resident set (`VmHWM`) after the run; the store's size on
//!   disk at the end.

use crate::clock::{Clock, VirtualClock};
use crate::daemon::{DaemonError, LookError, LookTimes};
use crate::fleet::SimFleet;
use crate::store::{sqlite, Retention, SqliteStore, Store, StoreError};
use crate::{Daemon, LoopConfig, Parts};
use drover_core::control::{ControlSettings, PowerState};
use drover_sim::live::{LiveError, Measures};
use drover_sim::manager_bench::{self as sim_bench, BenchError as ModelError, Surges};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

pub use drover_sim::manager_bench::{peak_rss_kib, BenchSpec as ModelSpec, Timing};

/// What the benchmark runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BenchSpec {
    /// The simulated datacenter, its workload and overloads, and how long, as
    /// `drover sim manager-bench` has them.
    pub model: ModelSpec,
    /// Where the store's temporary directory is made (None: the system's temporary
    /// directory). It is removed after the run.
    pub state_parent: Option<PathBuf>,
}

/// A benchmark that could not run to its end.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error("manager bench: cannot make a temporary state directory in {parent}: {source}")]
    StateDir {
        parent: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manager bench: {0}")]
    Store(#[from] StoreError),
    #[error("manager bench: {0}")]
    Start(#[from] DaemonError),
    #[error("manager bench: the look at {at_s} s failed: {source}")]
    Look {
        at_s: f64,
        #[source]
        source: LookError,
    },
}

/// Each stage's pass times ([`LookTimes`]), ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stages {
    pub observe: Timing,
    pub step: Timing,
    pub store: Timing,
    pub act: Timing,
    pub upkeep: Timing,
}

/// What the benchmark measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub hosts: usize,
    pub vms: usize,
    pub seed: u64,
    /// Simulated time, s.
    pub simulated_s: f64,
    /// Looks the loop took (one a simulated second, as often as its step asks).
    pub looks: usize,
    /// The whole look, ms.
    pub look: Timing,
    /// The whole look's CPU time on the loop's thread, ms (None off Linux).
    pub look_cpu: Option<Timing>,
    /// Each stage, ms.
    pub stages: Stages,
    /// The slowest look: when (s of simulated time) and where its time went.
    pub slowest_at_s: f64,
    pub slowest: SlowLook,
    /// Peak resident memory of the process after the run, MiB (None off Linux).
    pub peak_rss_mib: Option<f64>,
    /// The store's files (database and write-ahead log) at the end, MiB.
    pub store_mib: f64,
    /// Plans made, by kind.
    pub plans: BTreeMap<String, u64>,
    /// Overloads started.
    pub surges: u64,
    /// Hosts active at the end.
    pub active_hosts_end: usize,
    /// The model's measures (energy, SLA, migrations by technique and outcome).
    pub measures: Measures,
    /// Wall time of the whole run, s (the model's progress and the set-up included).
    pub wall_s: f64,
}

/// Where the slowest look's time went, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SlowLook {
    pub observe_ms: f64,
    pub step_ms: f64,
    pub store_ms: f64,
    pub act_ms: f64,
    pub upkeep_ms: f64,
    pub total_ms: f64,
}

impl From<LookTimes> for SlowLook {
    fn from(t: LookTimes) -> SlowLook {
        SlowLook {
            observe_ms: t.observe_ms,
            step_ms: t.step_ms,
            store_ms: t.store_ms,
            act_ms: t.act_ms,
            upkeep_ms: t.upkeep_ms,
            total_ms: t.total_ms,
        }
    }
}

/// Progress callback: (simulated seconds done, total).
pub type Progress<'a> = &'a mut dyn FnMut(f64, f64);

/// Runs the benchmark (see the module doc).
///
/// # Errors
/// [`BenchError`]: a spec out of range, a store that cannot be made or written, a look that
/// failed (the run stops there).
pub async fn run(
    spec: &BenchSpec,
    mut progress: Option<Progress<'_>>,
) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    let (sim, passes) = sim_bench::model(&spec.model)?;
    let end_s = passes as f64;
    let parent = spec.state_parent.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("drover-manager-bench-")
        .tempdir_in(&parent)
        .map_err(|source| BenchError::StateDir { parent, source })?;
    let clock = Arc::new(VirtualClock::at(0.0));
    let fleet = Arc::new(SimFleet::new(sim, clock.clone()));
    let store = Arc::new(SqliteStore::open_in(dir.path(), Retention::default())?);
    let (mut daemon, _manager) = Daemon::start(Parts {
        fleet: fleet.clone(),
        store: store.clone() as Arc<dyn Store>,
        clock: clock.clone(),
        inventory: fleet.inventory(),
        settings: fleet.control_settings(ControlSettings::default()),
        config: LoopConfig::default(),
    })?;
    let mut surges = Surges::new(&spec.model);
    let mut times: Vec<(f64, LookTimes)> = Vec::with_capacity(passes + passes / 10);
    let mut cpu_ms: Option<Vec<f64>> = thread_cpu_ns().map(|_| Vec::with_capacity(passes));
    let mut plans: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let now = clock.now_s();
        if now >= end_s {
            break;
        }
        fleet.with(|sim| surges.due(sim, now))?;
        fleet.catch_up();
        let cpu_before = thread_cpu_ns();
        let report = daemon
            .look()
            .await
            .map_err(|source| BenchError::Look { at_s: now, source })?;
        if let (Some(v), Some(a), Some(b)) = (cpu_ms.as_mut(), cpu_before, thread_cpu_ns()) {
            v.push(b.saturating_sub(a) as f64 / 1e6);
        }
        times.push((now, report.times));
        for id in &report.new_plans {
            if let Some(p) = daemon.state().plans.get(id) {
                *plans.entry(sim_bench::kind(p.kind).into()).or_default() += 1;
            }
        }
        let next = daemon.wake_at();
        // The loop never asks for a look sooner than now; if it did, a second later.
        clock.set(if next > now { next } else { now + 1.0 });
        if let Some(p) = progress.as_mut() {
            p(now, end_s);
        }
    }
    let store_mib = store_bytes(dir.path()) as f64 / (1 << 20) as f64;
    let (measures, active_hosts_end) = fleet.with(|sim| {
        let active = sim
            .host_names()
            .filter(|h| sim.power_state(h) == Some(PowerState::Active))
            .count();
        (sim.measures().clone(), active)
    });
    let (slowest_at_s, slowest) = times
        .iter()
        .max_by(|a, b| a.1.total_ms.total_cmp(&b.1.total_ms))
        .map_or((0.0, SlowLook::default()), |(at, t)| (*at, (*t).into()));
    let col = |f: fn(&LookTimes) -> f64| -> Timing {
        let mut v: Vec<f64> = times.iter().map(|(_, t)| f(t)).collect();
        Timing::of(&mut v)
    };
    let stages = Stages {
        observe: col(|t| t.observe_ms),
        step: col(|t| t.step_ms),
        store: col(|t| t.store_ms),
        act: col(|t| t.act_ms),
        upkeep: col(|t| t.upkeep_ms),
    };
    let report = BenchReport {
        hosts: spec.model.hosts,
        vms: spec.model.vms,
        seed: spec.model.seed,
        simulated_s: end_s,
        looks: times.len(),
        look: col(|t| t.total_ms),
        look_cpu: cpu_ms.as_mut().map(|v| Timing::of(v)),
        stages,
        slowest_at_s,
        slowest,
        peak_rss_mib: peak_rss_kib().map(|k| k as f64 / 1024.0),
        store_mib,
        plans,
        surges: surges.started,
        active_hosts_end,
        measures,
        wall_s: started.elapsed().as_secs_f64(),
    };
    drop(daemon);
    drop(store);
    // The temporary directory goes with `dir`; a failure to remove it is not the run's.
    let _ = dir.close();
    Ok(report)
}

/// CPU time this thread has run, ns (the first field of `/proc/thread-self/schedstat`);
/// None where there is no such file.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Bytes of the store's files in `dir` (the database, its write-ahead log and shared memory).
fn store_bytes(dir: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let path = dir.join(format!("{}{suffix}", sqlite::FILE_NAME));
            std::fs::metadata(path).ok().map(|m| m.len())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_small_bench_runs_the_whole_manager() {
        let spec = BenchSpec {
            model: ModelSpec {
                hosts: 20,
                vms: 150,
                hours: 0.1,
                ..ModelSpec::default()
            },
            state_parent: None,
        };
        let r = run(&spec, None).await.expect("runs");
        assert!(r.looks >= 360, "{} looks", r.looks);
        assert_eq!(r.simulated_s, 360.0);
        assert!(
            r.plans.get("relief").copied().unwrap_or(0) > 0,
            "{:?}",
            r.plans
        );
        assert!(r.measures.ended().completed > 0, "{:?}", r.measures);
        assert_eq!(r.measures.refused, 0);
        assert!(r.look.max_ms >= r.look.median_ms && r.look.median_ms > 0.0);
        assert!(r.store_mib > 0.0);
        let bad = BenchSpec {
            model: ModelSpec {
                hours: 0.0,
                ..spec.model
            },
            state_parent: None,
        };
        let e = run(&bad, None).await.expect_err("no time");
        assert!(e.to_string().contains("hours = 0"), "{e}");
    }
}
