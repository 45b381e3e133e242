//! The demo's I/O: for each technique and repetition, a fresh lab and manager, the phases
//! (settle, raise, hold, fall, repack), the sampler, and what the manager and the agents
//! recorded; then the summary. Everything a run made is removed when its [`LabRun`] drops: at
//! its end, on an error, and when the caller drops the future (on a signal).

use crate::agent_call::agent_err;
use crate::config::DemoConfig;
use crate::lab_guard::{LabRun, LabRunError};
use crate::phase::{PhaseError, Timeline};
use crate::sampler::{unix_now_s, Sampler};
use crate::series::{Power, Sample};
use crate::summary::{summarize, MigrationSeen, Phases, PlanSeen, RunInputs, RunSummary};
use drover_api::{AgentClient, AgentUrl, ClientError, MigrationRecord, VmConfig};
use drover_core::migration::Technique;
use drover_manager::api::client::ManagerClient;
use drover_manager::store::PlanQuery;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Why a run stopped.
#[derive(Debug, Error)]
pub enum DemoError {
    #[error(transparent)]
    Lab(#[from] LabRunError),
    #[error(transparent)]
    Agent(#[from] crate::agent_call::AgentCall),
    #[error("{0}")]
    Scenario(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("demo phases: {0}")]
    Phase(#[from] PhaseError),
    #[error("guest image: {0}")]
    Image(#[from] drover_qemu::image::ImageError),
}

/// One run's summary and series.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub summary: RunSummary,
    pub series: Vec<Sample>,
}

/// How the runner reports progress (one line at a time; the CLI prints them on stderr).
pub type Say<'a> = &'a (dyn Fn(&str) + Sync);

/// Runs `technique`'s repetition `run`; its manager's configuration and log go in `workdir`.
///
/// # Errors
/// [`DemoError`]: the lab, a VM, the manager or an agent failed; the lab is down again.
pub async fn run_once(
    config: &DemoConfig,
    technique: Technique,
    run: u32,
    workdir: &Path,
    say: Say<'_>,
) -> Result<RunOutcome, DemoError> {
    let tag = format!("{}-{run}", technique.as_str());
    say(&format!(
        "[{tag}] lab {}: {} hosts of {} cores, link {}",
        config.lab,
        config.hosts,
        config.host_cpus,
        drover_core::units::format_rate(config.link_bps)
    ));
    let mut lab = LabRun::up(config)?;
    boot_vms(config, &lab, &tag, say).await?;
    wait_quiet(config, &lab, &tag, say).await?;
    for (host, agent) in &lab.agents[1..] {
        agent
            .standby()
            .await
            .map_err(agent_err(format!("standby {host}")))?;
    }
    let toml = config
        .manager_toml(technique)
        .map_err(|e| DemoError::Scenario(format!("manager configuration: {e}")))?;
    let toml_path = workdir.join(format!("manager-{tag}.toml"));
    write(&toml_path, toml.as_bytes())?;
    let url = lab
        .start_manager(&toml_path, &workdir.join(format!("manager-{tag}.log")))
        .await?;
    let manager = ManagerClient::new(
        AgentUrl::parse(&url).map_err(|e| DemoError::Scenario(format!("manager {url}: {e}")))?,
        &lab.token,
    );
    wait_manager(&manager, config.hosts as usize).await?;
    let sampler = Sampler::start(
        lab.agents.clone(),
        config.vm_names(),
        Duration::from_secs(1),
    );
    let phases = phases(config, &lab, &sampler, &tag, say).await?;
    let series = sampler.finish().await;
    let plans = plans(&manager, phases.start_s).await?;
    let migrations = migrations(&lab, &plans).await?;
    for f in lab.teardown() {
        say(&format!("[{tag}] teardown: {f}"));
    }
    drop(lab);
    // The raised VMs' host at the raise (h1 unless something moved them before).
    let host = series
        .iter()
        .take_while(|s| s.t_s <= phases.raised_s)
        .filter_map(|s| s.vm("d1").map(|v| v.host.clone()))
        .last()
        .unwrap_or_else(|| "h1".into());
    let summary = summarize(&RunInputs {
        technique,
        run,
        host: &host,
        vms: config
            .vm_names()
            .into_iter()
            .map(|v| {
                let raised = config.is_raised(&v);
                (v, raised)
            })
            .collect(),
        phases,
        series: &series,
        plans: &plans.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        migrations: &migrations,
        power: config.control(technique).default_power,
        floor_s: config.floor_s(),
    });
    Ok(RunOutcome { summary, series })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), DemoError> {
    std::fs::write(path, bytes).map_err(|source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates the VMs on h1 at low demand and waits until each guest reports its workload.
async fn boot_vms(
    config: &DemoConfig,
    lab: &LabRun,
    tag: &str,
    say: Say<'_>,
) -> Result<(), DemoError> {
    let (_, h1) = &lab.agents[0];
    for name in config.vm_names() {
        let vm = VmConfig {
            name: name.clone(),
            vcpus: 1,
            memory_bytes: config.memory_bytes,
            workload: config.low_workload(),
            disk: None,
            disk_size_bytes: None,
            disk_base: None,
            nic: None,
        };
        h1.create_vm(&vm)
            .await
            .map_err(agent_err(format!("creating {name} on h1")))?;
    }
    for name in config.vm_names() {
        let v = h1
            .wait_workload(&name, Duration::from_secs(180))
            .await
            .map_err(agent_err(format!("waiting for {name} to report")))?;
        if v.workload_pending || v.workload_report.spec.is_none() {
            return Err(DemoError::Scenario(format!(
                "{name} did not report its workload within 180 s: {v:?}"
            )));
        }
    }
    say(&format!(
        "[{tag}] {} VMs of {} on h1 running {}; other hosts to standby",
        config.vms,
        drover_core::units::format_size(config.memory_bytes),
        config.low_workload()
    ));
    Ok(())
}

/// Waits (up to 120 s) until h1's CPU demand has stayed under the manager's relief target
/// for 3 samples: a guest that has just booted fills its working set and measures its speed
/// flat out, and a manager started then would relieve h1 before the experiment begins.
async fn wait_quiet(
    config: &DemoConfig,
    lab: &LabRun,
    tag: &str,
    say: Say<'_>,
) -> Result<(), DemoError> {
    let (_, h1) = &lab.agents[0];
    let target = config.control(Technique::Auto).target;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut quiet = 0;
    let mut last = 0.0;
    while quiet < 3 {
        if tokio::time::Instant::now() >= deadline {
            return Err(DemoError::Scenario(format!(
                "h1 stayed busy for 120 s after its VMs reported (load {last:.2}, target \
                 {target}): the VMs' low demand does not fit it"
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let m = h1.metrics().await.map_err(agent_err("metrics of h1"))?;
        last = if m.host.cpus > 0.0 {
            m.host.cpu_demand_cores / m.host.cpus
        } else {
            0.0
        };
        quiet = if last < target { quiet + 1 } else { 0 };
    }
    say(&format!("[{tag}] h1 quiet (load {last:.2})"));
    Ok(())
}

/// Waits until the manager has looked at every host twice.
async fn wait_manager(manager: &ManagerClient, hosts: usize) -> Result<(), DemoError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = manager.status().await {
            if s.reachable == hosts && s.looks >= 2 {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(DemoError::Scenario(
                "the manager did not see every host within 60 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Settle, raise, hold, fall, then wait (bounded) for the repack.
async fn phases(
    config: &DemoConfig,
    lab: &LabRun,
    sampler: &Sampler,
    tag: &str,
    say: Say<'_>,
) -> Result<Phases, DemoError> {
    let mut timeline = Timeline::default();
    timeline.settle(unix_now_s())?;
    say(&format!("[{tag}] settle {} s", config.settle_s));
    tokio::time::sleep(Duration::from_secs(config.settle_s)).await;
    let raised: Vec<String> = config
        .vm_names()
        .into_iter()
        .filter(|v| config.is_raised(v))
        .collect();
    // Each raised VM's rate comes from its own full speed, read before anything changes.
    let mut high = Vec::new();
    for vm in &raised {
        high.push((vm, config.high_workload(full_speed(sampler, vm)?)));
    }
    timeline.raise(unix_now_s())?;
    for (vm, spec) in &high {
        set_workload(lab, sampler, vm, spec).await?;
    }
    let specs: Vec<String> = high.iter().map(|(v, s)| format!("{v} {s}")).collect();
    say(&format!(
        "[{tag}] raised {} ({}); holding {} s",
        specs.join(", "),
        config.high_label(),
        config.hold_s
    ));
    watch(sampler, config.hold_s, tag, say, |_| false).await;
    let fell_s = unix_now_s();
    timeline.fall(fell_s)?;
    for vm in &raised {
        set_workload(lab, sampler, vm, &config.low_workload()).await?;
    }
    say(&format!(
        "[{tag}] fell to {}; waiting up to {} s for the repack",
        config.low_workload(),
        config.repack_wait_s
    ));
    let packed = config.hosts as usize - 1;
    let done = |s: &Sample| {
        s.hosts.iter().filter(|h| h.power == Power::Standby).count() >= packed
            && s.t_s > fell_s + 2.0
    };
    watch(sampler, config.repack_wait_s, tag, say, done).await;
    Ok(timeline.finish(unix_now_s())?)
}

/// `vm`'s full speed, ops/s, from its latest report that gives one.
///
/// # Errors
/// [`DemoError::Scenario`] when its guest has not said (a guest image older than the demand
/// reports): the raise would have no rate to aim at.
fn full_speed(sampler: &Sampler, vm: &str) -> Result<f64, DemoError> {
    sampler.latest_of(vm, |x| x.full_ops_per_s).ok_or_else(|| {
        DemoError::Scenario(format!(
            "{vm} has not reported its full speed, which the raise is a share of \
                 (rebuild the guest image, or --high-demand max)"
        ))
    })
}

/// Sleeps up to `secs`, printing a line every 5 s, and returns early once `done` holds for
/// the latest sample.
async fn watch(
    sampler: &Sampler,
    secs: u64,
    tag: &str,
    say: Say<'_>,
    done: impl Fn(&Sample) -> bool,
) {
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut next_line = start + Duration::from_secs(5);
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let last = sampler.series.lock().ok().and_then(|v| v.last().cloned());
        let Some(last) = last else { continue };
        if done(&last) {
            return;
        }
        if tokio::time::Instant::now() >= next_line {
            next_line += Duration::from_secs(5);
            say(&format!("[{tag}] {}", describe(&last)));
        }
    }
}

/// One line about a sample: each host's power and load, and where each VM runs.
fn describe(s: &Sample) -> String {
    let hosts: Vec<String> = s
        .hosts
        .iter()
        .map(|h| match h.power {
            Power::Active => format!("{} load {:.2}", h.name, h.load()),
            p => format!("{} {p:?}", h.name).to_lowercase(),
        })
        .collect();
    let vms: Vec<String> = s
        .vms
        .iter()
        .map(|v| format!("{}@{} {:.0} ops/s", v.name, v.host, v.ops_per_s))
        .collect();
    format!("{}; {}", hosts.join(", "), vms.join(", "))
}

/// Changes `vm`'s workload on whichever host runs it, retrying for 30 s while it is between
/// hosts (a migration refuses workload changes until it ends).
async fn set_workload(
    lab: &LabRun,
    sampler: &Sampler,
    vm: &str,
    spec: &str,
) -> Result<(), DemoError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let host = sampler
            .latest_of(vm, |x| Some(x.host.clone()))
            .unwrap_or_else(|| "h1".into());
        let mut last = None;
        for (name, agent) in order(&lab.agents, &host) {
            match agent.set_workload(vm, spec).await {
                Ok(_) => return Ok(()),
                Err(e) => last = Some((name, e)),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let (name, e) =
                last.unwrap_or_else(|| ("-".into(), ClientError::Invalid("no host".into())));
            return Err(
                agent_err(format!("setting {vm} to {spec} (last tried on {name})"))(e).into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The agents with `first` first.
fn order<'a>(agents: &'a [(String, AgentClient)], first: &str) -> Vec<(String, &'a AgentClient)> {
    let mut v: Vec<(String, &AgentClient)> = agents.iter().map(|(n, a)| (n.clone(), a)).collect();
    v.sort_by_key(|(n, _)| n != first);
    v
}

fn wire_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// The manager's plans since `since_s`, each with its moves' ids.
async fn plans(
    manager: &ManagerClient,
    since_s: f64,
) -> Result<Vec<(PlanSeen, Vec<String>)>, DemoError> {
    let q = PlanQuery {
        state: None,
        since_s: Some(since_s - 1.0),
        limit: 1000,
    };
    let list = manager
        .plans(&q)
        .await
        .map_err(agent_err("listing the manager's plans"))?;
    let mut out = Vec::new();
    for p in list {
        let moves = manager
            .plan_moves(&p.id)
            .await
            .map_err(agent_err(format!("moves of plan {}", p.id)))?;
        out.push((
            PlanSeen {
                id: p.id.clone(),
                kind: wire_name(&p.kind),
                state: p.state.name().to_string(),
                created_s: p.created_s,
                wake: p.wake.clone(),
            },
            moves.into_iter().map(|m| m.id).collect(),
        ));
    }
    Ok(out)
}

/// Every migration the agents recorded, with the kind of the plan whose move it ran.
async fn migrations(
    lab: &LabRun,
    plans: &[(PlanSeen, Vec<String>)],
) -> Result<Vec<MigrationSeen>, DemoError> {
    let mut out: Vec<MigrationSeen> = Vec::new();
    for (host, agent) in &lab.agents {
        let records = agent
            .migrations()
            .await
            .map_err(agent_err(format!("migrations on {host}")))?;
        for r in records {
            if out.iter().any(|m| m.id == r.id) {
                continue;
            }
            out.push(seen(lab, host, &r, plans));
        }
    }
    out.sort_by(|a, b| a.started_s.total_cmp(&b.started_s));
    Ok(out)
}

fn seen(
    lab: &LabRun,
    host: &str,
    r: &MigrationRecord,
    plans: &[(PlanSeen, Vec<String>)],
) -> MigrationSeen {
    let move_id = r.request.id.as_deref().unwrap_or(&r.id);
    let kind = plans
        .iter()
        .find(|(_, moves)| moves.iter().any(|m| m == move_id))
        .map(|(p, _)| p.kind.clone());
    let technique = r
        .result
        .as_ref()
        .map(|x| x.chosen)
        .or(r.plan.as_ref().map(|p| p.technique))
        .unwrap_or(r.request.technique);
    let to = r.request.to.to_string();
    MigrationSeen {
        id: r.id.clone(),
        vm: r.vm.clone(),
        from: host.to_string(),
        to: lab.host_of(&to).unwrap_or(&to).to_string(),
        kind,
        technique: technique.as_str().to_string(),
        state: wire_name(&r.state),
        started_s: r.started_unix_ms as f64 / 1000.0,
        ended_s: r.ended_unix_ms.map(|ms| ms as f64 / 1000.0),
        switchover_s: r
            .result
            .as_ref()
            .and_then(|x| x.switchover_ms)
            .map(|ms| ms as f64 / 1000.0),
        downtime_ms: r.result.as_ref().and_then(|x| x.downtime_ms),
        transferred_bytes: r.result.as_ref().map(|x| x.transferred_bytes),
        error: r.error.clone(),
    }
}

/// What the demo did: every run that ended, and the failure that stopped it, if one did.
#[derive(Debug)]
pub struct DemoOutcome {
    pub runs: Vec<RunOutcome>,
    /// The failed run's error, naming its technique and repetition (its lab already down);
    /// the runs before it are in `runs`.
    pub failure: Option<DemoError>,
}

/// Every technique's runs in order, each handed to `done` as it ends (for the report and the
/// table); the first failure stops the demo, keeping the runs before it.
///
/// # Errors
/// Before any run: the guest image cannot be built, or the machine has too little memory for
/// the VMs ([`DemoError::Scenario`] naming `--vms` and `--memory`).
pub async fn run_all(
    config: &DemoConfig,
    workdir: &Path,
    say: Say<'_>,
    mut done: impl FnMut(&RunOutcome),
) -> Result<DemoOutcome, DemoError> {
    check_memory(config, mem_available_bytes())?;
    say("guest image: building if needed");
    drover_qemu::image::ensure_image(&drover_qemu::image::NoProgress)?;
    let mut runs = Vec::new();
    for run in 1..=config.repeat {
        for &t in &config.techniques {
            match run_once(config, t, run, workdir, say).await {
                Ok(outcome) => {
                    done(&outcome);
                    runs.push(outcome);
                }
                Err(e) => {
                    let failure = DemoError::Scenario(format!("{} run {run}: {e}", t.as_str()));
                    return Ok(DemoOutcome {
                        runs,
                        failure: Some(failure),
                    });
                }
            }
        }
    }
    Ok(DemoOutcome {
        runs,
        failure: None,
    })
}

/// The machine's available memory, bytes (`MemAvailable` in /proc/meminfo; None when it
/// cannot be read: the agents' admission still refuses a VM that does not fit).
fn mem_available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Refuses a demo whose VMs cannot all be in memory at once: every VM on h1 (guest RAM plus
/// its QEMU, as the agents charge it) and, during a migration, one more copy on its
/// destination.
///
/// # Errors
/// [`DemoError::Scenario`] naming `--vms` and `--memory`, with what is needed and available.
pub fn check_memory(config: &DemoConfig, available: Option<u64>) -> Result<(), DemoError> {
    let Some(available) = available else {
        return Ok(());
    };
    let each = drover_guest::fit::vm_cost(config.memory_bytes, 1);
    let need = each.saturating_mul(u64::from(config.vms) + 1);
    if need <= available {
        return Ok(());
    }
    Err(DemoError::Scenario(format!(
        "--vms {} --memory {} MiB: the VMs and one migration's copy need {} MiB with QEMU's \
         overhead, and this machine has {} MiB available",
        config.vms,
        config.memory_bytes >> 20,
        need >> 20,
        available >> 20
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_for_every_vm_and_one_copy_is_checked() {
        let demo = DemoConfig {
            memory_bytes: 256 << 20,
            ..DemoConfig::default()
        };
        // 2 VMs of 256 MiB: (256 + 96 + 8 + 4) MiB each, three copies: 1092 MiB.
        let need = 3 * drover_guest::fit::vm_cost(256 << 20, 1);
        assert_eq!(need >> 20, 1092);
        assert!(check_memory(&demo, Some(need)).is_ok());
        assert!(check_memory(&demo, None).is_ok());
        let e = check_memory(&demo, Some(need - 1))
            .expect_err("one byte short")
            .to_string();
        assert!(e.starts_with("--vms 2 --memory 256 MiB: "), "{e}");
        assert!(e.contains("need 1092 MiB"), "{e}");
        assert!(mem_available_bytes().is_some_and(|b| b > 0));
    }
}
