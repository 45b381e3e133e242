//! The WAN experiment's I/O: for each repetition and strategy, a fresh 2-host lab whose h1-h2
//! path is the WAN (tbf and the delay line), the VM with its disk on h1, a WAN plan of it
//! (`POST /v1/vms/{name}/wan-plan`: the model's prediction before the run), a baseline, the
//! migration to h2 through h1's agent, an observation after it, and the figures. Everything a
//! run made is removed when its [`LabRun`] drops: at its end, on an error, and when the caller
//! drops the future (on a signal).

use super::config::{Strategy, WanConfig};
use super::figures::{summarize, Asked, Migrated, RunRecord, RunResult};
use crate::agent_call::agent_err;
use crate::lab_guard::{LabRun, LabRunError};
use crate::runner::Say;
use crate::sampler::Sampler;
use crate::series::Sample;
use drover_api::wan::WanPlan;
use drover_api::{AgentClient, AgentUrl, ClientError, MigrationRecord, VmConfig};
use drover_lab::{AgentLaunch, LabSpec};
use std::time::Duration;
use thiserror::Error;

/// The experiment's VM.
pub const VM: &str = "w1";
/// How often the sampler reads the guest's counters: four times a second, so a pause of a
/// few hundred ms shows and the 1 s restoration window holds several samples.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Why a run stopped.
#[derive(Debug, Error)]
pub enum WanRunError {
    #[error(transparent)]
    Lab(#[from] LabRunError),
    #[error("lab spec: {0}")]
    Spec(#[from] drover_lab::plan::PlanError),
    #[error(transparent)]
    Agent(#[from] crate::agent_call::AgentCall),
    #[error("{0}")]
    Scenario(String),
    #[error("guest image: {0}")]
    Image(#[from] drover_qemu::image::ImageError),
}

/// One run's figures and what they came from.
#[derive(Debug, Clone)]
pub struct WanOutcome {
    pub result: RunResult,
    pub vm: String,
    pub series: Vec<Sample>,
    /// The plan made before the run (the prediction).
    pub plan: WanPlan,
    /// The source agent's record (None: refused).
    pub record: Option<MigrationRecord>,
}

/// Whether an answer to a migration request is a refusal of the request (a 4xx from the
/// agent, or the contract's own check in the client), rather than an agent that failed.
pub fn is_refusal(e: &ClientError) -> bool {
    match e {
        ClientError::Invalid(_) => true,
        ClientError::Api { status, .. } => (400..500).contains(status),
        _ => false,
    }
}

/// Runs `strategy`'s repetition `run`.
///
/// # Errors
/// [`WanRunError`]: the lab, the VM or an agent failed (a refused migration is a result, not
/// an error); the lab is down again.
pub async fn run_once(
    config: &WanConfig,
    strategy: Strategy,
    run: u32,
    say: Say<'_>,
) -> Result<WanOutcome, WanRunError> {
    let tag = format!("{}-{run}", strategy.as_str());
    say(&format!(
        "[{tag}] lab {}: 2 hosts, WAN h1-h2 {} each way, {} ms one way",
        config.lab,
        drover_core::units::format_rate(config.wan.rate.rate_bytes_per_sec),
        config.wan.delay_us / 1000
    ));
    let agent = AgentLaunch::drover(&config.drover_bin, Duration::from_secs(60));
    let line = vec![
        config.drover_bin.display().to_string(),
        "lab".into(),
        "delay-line".into(),
    ];
    let spec = LabSpec::new(&config.lab, 2)?
        .agent(agent)
        .wan(vec![config.wan], line);
    let mut lab = LabRun::up_spec(&spec, &config.drover_bin)?;
    boot(config, &lab, &tag, say).await?;
    let sampler = Sampler::start(lab.agents.clone(), vec![VM.into()], SAMPLE_EVERY);
    let (_, h1) = &lab.agents[0];
    let plan = plan(config, h1, &tag, say).await?;
    let predicted = strategy.predicted(&plan.choice);
    say(&format!("[{tag}] plan: {}", plan.choice.reason));
    tokio::time::sleep(Duration::from_secs(config.baseline_s)).await;
    let to = dest_url(&lab)?;
    let req = strategy.request(&predicted, to, config.migration_timeout_s);
    let asked = Asked {
        technique: req.technique,
        storage: req.knobs.storage,
        memory_fraction: predicted.memory_fraction,
        storage_fraction: predicted.storage_fraction,
    };
    let (migrated, record) = migrate(config, h1, &req, &tag, say).await?;
    if matches!(migrated, Migrated::Ran { .. }) {
        tokio::time::sleep(Duration::from_secs(config.after_s)).await;
    }
    let series = sampler.finish().await;
    for f in lab.teardown() {
        say(&format!("[{tag}] teardown: {f}"));
    }
    drop(lab);
    let result = summarize(&RunRecord {
        strategy,
        run,
        vm: VM,
        dest: "h2",
        asked,
        predicted: &predicted,
        reason: &plan.choice.reason,
        migrated: &migrated,
        series: &series,
        baseline_s: config.baseline_s as f64,
        has_postcopy: strategy.has_postcopy(&predicted),
    });
    Ok(WanOutcome {
        result,
        vm: VM.into(),
        series,
        plan,
        record,
    })
}

/// Creates the VM on h1 with a disk the agent makes, and waits for its guest to report.
async fn boot(
    config: &WanConfig,
    lab: &LabRun,
    tag: &str,
    say: Say<'_>,
) -> Result<(), WanRunError> {
    let (_, h1) = &lab.agents[0];
    let cfg = VmConfig {
        name: VM.into(),
        vcpus: 1,
        memory_bytes: config.memory_bytes,
        workload: config.workload.clone(),
        disk: None,
        disk_size_bytes: Some(config.disk_bytes),
        disk_base: None,
        nic: None,
    };
    h1.create_vm(&cfg)
        .await
        .map_err(agent_err(format!("creating {VM} on h1")))?;
    let v = h1
        .wait_workload(VM, Duration::from_secs(180))
        .await
        .map_err(agent_err(format!("waiting for {VM} to report")))?;
    if v.workload_pending || v.workload_report.spec.is_none() {
        return Err(WanRunError::Scenario(format!(
            "{VM} did not report its workload within 180 s"
        )));
    }
    say(&format!(
        "[{tag}] {VM} on h1: {} of memory, a {} disk, {}",
        drover_core::units::format_size(config.memory_bytes),
        drover_core::units::format_size(config.disk_bytes),
        config.workload
    ));
    Ok(())
}

/// Tries to plan this often: the agent's own periodic dirty-rate measurement can hold QEMU's
/// (`calc-dirty-rate`: "the dirty rate is already being measured"), and the profile is then
/// answered 500; a few seconds later it is free.
const PLAN_ATTEMPTS: u32 = 3;

/// The WAN plan of the VM over the lab's WAN, asked again after a 500 (see [`PLAN_ATTEMPTS`]).
async fn plan(
    config: &WanConfig,
    h1: &AgentClient,
    tag: &str,
    say: Say<'_>,
) -> Result<WanPlan, WanRunError> {
    let mut attempt = 1;
    loop {
        match h1.wan_plan(VM, &config.plan_request()).await {
            Ok(plan) => return Ok(plan),
            Err(ClientError::Api {
                status: 500,
                message,
                ..
            }) if attempt < PLAN_ATTEMPTS => {
                say(&format!(
                    "[{tag}] plan attempt {attempt} failed ({message}); again in 3 s"
                ));
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            Err(e) => return Err(agent_err("planning the WAN migration on h1")(e).into()),
        }
    }
}

fn dest_url(lab: &LabRun) -> Result<AgentUrl, WanRunError> {
    lab.state
        .hosts
        .get(1)
        .and_then(|h| h.agent_url.as_deref())
        .and_then(|u| AgentUrl::parse(u).ok())
        .ok_or_else(|| WanRunError::Scenario("h2 has no agent".into()))
}

/// Sends the request and waits for the record's end; a refusal is a result.
async fn migrate(
    config: &WanConfig,
    h1: &AgentClient,
    req: &drover_api::MigrationRequest,
    tag: &str,
    say: Say<'_>,
) -> Result<(Migrated, Option<MigrationRecord>), WanRunError> {
    let started = match h1.migrate(VM, req).await {
        Ok(r) => r,
        Err(e) if is_refusal(&e) => {
            let message = e.to_string();
            say(&format!("[{tag}] refused: {message}"));
            return Ok((Migrated::Refused { message }, None));
        }
        Err(e) => return Err(agent_err("starting the migration on h1")(e).into()),
    };
    // The wait outlasts the pre-copy's deadline, so a run that hits it ends `failed` here.
    let timeout = Duration::from_secs(config.migration_timeout_s + 60);
    let record = h1
        .wait_migration(&started.id, timeout)
        .await
        .map_err(agent_err("waiting for the migration"))?;
    let m = migrated(&record);
    if let Migrated::Ran { state, ended_s, .. } = &m {
        let took = ended_s.map_or_else(
            || "-".into(),
            |e| format!("{:.1} s", e - record.started_unix_ms as f64 / 1e3),
        );
        say(&format!("[{tag}] migration {state} in {took}"));
    }
    Ok((m, Some(record)))
}

fn migrated(r: &MigrationRecord) -> Migrated {
    let state = match serde_json::to_value(r.state) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{:?}", r.state).to_lowercase(),
    };
    Migrated::Ran {
        state,
        started_s: r.started_unix_ms as f64 / 1e3,
        ended_s: r
            .ended_unix_ms
            .filter(|_| r.state.is_final())
            .map(|ms| ms as f64 / 1e3),
        downtime_ms: r.result.as_ref().and_then(|x| x.downtime_ms),
        transferred_bytes: r.result.as_ref().map(|x| x.transferred_bytes),
        error: r.error.clone(),
        notes: r.notes.clone(),
    }
}

/// Every repetition of every strategy in order, each handed to `done` as it ends; the first
/// failure stops the experiment (its lab already down). A refused strategy is a result: the
/// others still run.
///
/// # Errors
/// The failed run's [`WanRunError`], naming the strategy and repetition.
pub async fn run_all(
    config: &WanConfig,
    say: Say<'_>,
    mut done: impl FnMut(&WanOutcome),
) -> Result<Vec<WanOutcome>, WanRunError> {
    say("guest image: building if needed");
    drover_qemu::image::ensure_image(&drover_qemu::image::NoProgress)?;
    let mut all = Vec::new();
    for run in 1..=config.repeat {
        for s in Strategy::ALL {
            let outcome = run_once(config, s, run, say)
                .await
                .map_err(|e| WanRunError::Scenario(format!("{} run {run}: {e}", s.as_str())))?;
            done(&outcome);
            all.push(outcome);
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_the_requests_not_the_agents_failures() {
        let api = |status| ClientError::Api {
            peer: drover_api::transport::Peer::Agent,
            url: "http://198.18.0.1:7700/v1/vms/w1/migrations".into(),
            status,
            message: "storage 'hybrid' is not valid".into(),
            qmp_class: None,
            qmp_desc: None,
        };
        assert!(is_refusal(&api(422)));
        assert!(is_refusal(&api(409)));
        assert!(!is_refusal(&api(500)));
        assert!(is_refusal(&ClientError::Invalid("storage: hybrid".into())));
    }
}
