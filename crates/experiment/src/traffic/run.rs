//! The traffic experiment's I/O: for each repetition and strategy, a fresh 2-host lab with its
//! peer, the VMs on h1 with their flows, a baseline, the evacuation to h2 driven through the
//! agents wave by wave as the schedule says, and the figures. Everything a run made is removed
//! when its [`LabRun`] and [`Peer`] drop: at its end, on an error, and when the caller drops
//! the future (on a signal).

use super::config::{Strategy, TrafficConfig};
use super::peer::Peer;
use super::series::{tap_means, LinkCounters, PeerSample, TapSample, TrafficSample};
use super::summary::{learn_moved_bytes, summarize, MigrationDone, RunRecord, RunResult, VmSeen};
use crate::agent_call::agent_err;
use crate::lab_guard::{LabRun, LabRunError};
use crate::runner::Say;
use crate::sampler::unix_now_s;
use drover_api::{AgentClient, AgentUrl, MigrationRecord, MigrationRequest, VmConfig};
use drover_core::migration::group::{
    choose_group, paper_rule, predict_group, traffic_order, Group, GroupParams, GroupPlan, HostNic,
    LeavingVm, Schedule, Traffic,
};
use drover_core::migration::{PlanKnobs, Technique, VmProfile};
use drover_lab::{AgentLaunch, LabSpec};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

/// Why a run stopped.
#[derive(Debug, Error)]
pub enum TrafficError {
    #[error(transparent)]
    Lab(#[from] LabRunError),
    #[error("lab spec: {0}")]
    Spec(#[from] drover_lab::plan::PlanError),
    #[error(transparent)]
    Agent(#[from] crate::agent_call::AgentCall),
    #[error("{0}")]
    Scenario(String),
    #[error("the traffic peer: {0}")]
    Peer(std::io::Error),
    #[error("group choice: {0}")]
    Group(#[from] drover_core::migration::group::GroupError),
    #[error("guest image: {0}")]
    Image(#[from] drover_qemu::image::ImageError),
}

/// One run's figures and what they came from.
#[derive(Debug, Clone)]
pub struct TrafficOutcome {
    pub result: RunResult,
    pub series: Vec<TrafficSample>,
    pub peer: Vec<PeerSample>,
    pub vms: Vec<VmSeen>,
    pub migrations: Vec<MigrationDone>,
    /// The baseline's start, Unix s (the plots' zero).
    pub t0_s: f64,
}

/// Runs `strategy`'s repetition `run`; `moved` holds what one pass over each guest's memory
/// moved in earlier runs ([`learn_moved_bytes`]; empty: the model takes all of memory).
///
/// # Errors
/// [`TrafficError`]: the lab, a VM, the peer or an agent failed; the lab is down again.
pub async fn run_once(
    config: &TrafficConfig,
    strategy: Strategy,
    run: u32,
    moved: &BTreeMap<String, u64>,
    say: Say<'_>,
) -> Result<TrafficOutcome, TrafficError> {
    let tag = format!("{}-{run}", strategy.as_str());
    say(&format!(
        "[{tag}] lab {}: 2 hosts, links {} each way",
        config.lab,
        drover_core::units::format_rate(config.link_bps)
    ));
    let agent = AgentLaunch::drover(&config.drover_bin, Duration::from_secs(60))
        .dirty_interval(config.dirty_interval_s);
    let spec = LabSpec::new(&config.lab, 2)?
        .link_rate(config.link_bps)?
        .agent(agent);
    let mut lab = LabRun::up_spec(&spec, &config.drover_bin)?;
    let peer_state = lab
        .state
        .peer
        .clone()
        .ok_or_else(|| TrafficError::Scenario("the lab has no traffic peer".into()))?;
    let mut peer = Peer::start(&config.drover_bin, &config.lab, &peer_state.netns, 1800)
        .map_err(TrafficError::Peer)?;
    let vms = boot(config, &lab, peer_state.address, &tag, say).await?;
    let sampler = TrafficSampler::start(&lab);
    wait_flows(&vms, &mut peer, &sampler, &tag, say).await?;
    tokio::time::sleep(Duration::from_secs(config.settle_s)).await;
    let t0_s = unix_now_s();
    say(&format!("[{tag}] baseline {} s", config.baseline_s));
    tokio::time::sleep(Duration::from_secs(config.baseline_s)).await;
    let group = group(config, &sampler.snapshot(), &vms, t0_s, moved)?;
    say(&format!(
        "[{tag}] bytes a pass moves: {}",
        moved_note(&group)
    ));
    let params = GroupParams {
        max_concurrent: config.concurrency,
        ..GroupParams::default()
    };
    let plan = schedule(strategy, &group, &params, config.concurrency)?;
    say(&format!(
        "[{tag}] schedule: {} (predicted evacuation {:.1} s)",
        plan.vms
            .iter()
            .map(|v| format!("{} {}", v.name, v.technique.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
        plan.evacuation_s
    ));
    let migrations = evacuate(config, &lab, &plan, &tag, say).await?;
    tokio::time::sleep(Duration::from_secs(config.after_s)).await;
    let series = sampler.finish().await;
    let peer_reports = peer.reports();
    drop(peer);
    for f in lab.teardown() {
        say(&format!("[{tag}] teardown: {f}"));
    }
    let hosts: Vec<String> = lab.state.hosts.iter().map(|h| h.name.clone()).collect();
    drop(lab);
    let result = summarize(&RunRecord {
        strategy,
        run,
        vms: &vms,
        series: &series,
        peer: &peer_reports,
        migrations: &migrations,
        predicted: &plan,
        baseline_s: config.baseline_s as f64,
        link_bps: config.link_bps as f64,
        window_min_s: params.cost.window_min_s,
        hosts: &hosts,
    });
    Ok(TrafficOutcome {
        result,
        series,
        peer: peer_reports,
        vms,
        migrations,
        t0_s,
    })
}

/// Creates the VMs on h1 with a NIC each and their flows, and waits for each guest to report.
async fn boot(
    config: &TrafficConfig,
    lab: &LabRun,
    peer: std::net::Ipv4Addr,
    tag: &str,
    say: Say<'_>,
) -> Result<Vec<VmSeen>, TrafficError> {
    let (_, h1) = &lab.agents[0];
    let subnet = drover_lab::name::Subnet::containing(peer)
        .ok_or_else(|| TrafficError::Scenario(format!("peer {peer} is not a lab address")))?;
    let mut seen = Vec::new();
    for (i, vm) in config.vms().iter().enumerate() {
        let ip = subnet
            .vm_addr(i as u32)
            .ok_or_else(|| TrafficError::Scenario(format!("no address for VM {i}")))?
            .to_string();
        let cfg = VmConfig {
            name: vm.name.clone(),
            vcpus: 1,
            memory_bytes: config.memory_bytes,
            workload: vm.workload(peer),
            disk: None,
            disk_size_bytes: None,
            disk_base: None,
            nic: Some(drover_api::NicConfig {
                address: ip.clone(),
            }),
        };
        h1.create_vm(&cfg)
            .await
            .map_err(agent_err(format!("creating {} on h1", vm.name)))?;
        seen.push(VmSeen {
            name: vm.name.clone(),
            role: vm.role,
            ip,
        });
    }
    for vm in &seen {
        let v = h1
            .wait_workload(&vm.name, Duration::from_secs(180))
            .await
            .map_err(agent_err(format!("waiting for {} to report", vm.name)))?;
        if v.workload_pending || v.workload_report.spec.is_none() {
            return Err(TrafficError::Scenario(format!(
                "{} did not report its workload within 180 s",
                vm.name
            )));
        }
    }
    say(&format!(
        "[{tag}] {} VMs of {} on h1: {}",
        seen.len(),
        drover_core::units::format_size(config.memory_bytes),
        config
            .vms()
            .iter()
            .map(|v| format!("{} {}", v.name, v.workload(peer)))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    Ok(seen)
}

/// Waits (up to 120 s) until the peer carries every VM's flow and the agent has measured every
/// VM's dirty rate and traffic.
async fn wait_flows(
    vms: &[VmSeen],
    peer: &mut Peer,
    sampler: &TrafficSampler,
    tag: &str,
    say: Say<'_>,
) -> Result<(), TrafficError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = peer.exited() {
            return Err(TrafficError::Scenario(format!(
                "the traffic peer stopped ({status})"
            )));
        }
        let reports = peer.reports();
        let flowing = |ip: &str| {
            let at = |s: &PeerSample| {
                s.conns
                    .iter()
                    .filter(|c| c.ip == ip)
                    .map(|c| c.rx_bytes + c.tx_bytes)
                    .sum::<u64>()
            };
            reports.len() > 4 && at(&reports[reports.len() - 1]) > at(&reports[reports.len() - 5])
        };
        let last = sampler.snapshot().last().cloned();
        let measured = |name: &str| {
            last.as_ref().is_some_and(|s| {
                s.vms.iter().any(|v| {
                    v.vm == name && v.dirty_rate_bps.is_some() && v.rx_bps + v.tx_bps > 0.0
                })
            })
        };
        if vms.iter().all(|v| flowing(&v.ip) && measured(&v.name)) {
            say(&format!("[{tag}] every flow runs"));
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let missing: Vec<&str> = vms
                .iter()
                .filter(|v| !flowing(&v.ip) || !measured(&v.name))
                .map(|v| v.name.as_str())
                .collect();
            return Err(TrafficError::Scenario(format!(
                "no flow, or no measurement, within 120 s for {}",
                missing.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The group leaving h1 for h2, as the agents measured it over the baseline.
fn group(
    config: &TrafficConfig,
    series: &[TrafficSample],
    vms: &[VmSeen],
    from_s: f64,
    moved: &BTreeMap<String, u64>,
) -> Result<Group, TrafficError> {
    let link = config.link_bps as f64;
    let nic = |host: &str| HostNic {
        host: host.into(),
        tx_capacity_bps: link,
        rx_capacity_bps: link,
        residents: vec![],
    };
    let leaving = vms
        .iter()
        .map(|v| {
            let (rx, tx, dirty) = tap_means(series, &v.name, from_s, f64::INFINITY)
                .ok_or_else(|| TrafficError::Scenario(format!("no sample of {}", v.name)))?;
            Ok(LeavingVm {
                name: v.name.clone(),
                // Memory as the working set, as the manager does (no agent measures it); a
                // pass moves what this guest's migrations moved in earlier runs, if any.
                profile: VmProfile {
                    memory_bytes: config.memory_bytes,
                    wss_bytes: config.memory_bytes,
                    dirty_rate_bps: dirty.unwrap_or(0.0),
                },
                moved_bytes: moved.get(&v.name).copied(),
                traffic: Traffic {
                    rx_bps: rx,
                    tx_bps: tx,
                },
                destination: "h2".into(),
            })
        })
        .collect::<Result<Vec<_>, TrafficError>>()?;
    Ok(Group {
        source: nic("h1"),
        destinations: vec![nic("h2")],
        vms: leaving,
    })
}

/// `out1 92.5MiB, ...` as learned, or that all of memory is assumed.
fn moved_note(group: &Group) -> String {
    let learned: Vec<String> = group
        .vms
        .iter()
        .filter_map(|v| {
            v.moved_bytes
                .map(|b| format!("{} {}", v.name, drover_core::units::format_size(b)))
        })
        .collect();
    if learned.is_empty() {
        "all of memory (no earlier migration measured)".into()
    } else {
        format!("{} (least of earlier runs)", learned.join(", "))
    }
}

/// The strategy's schedule and its forecast: a uniform one or the paper's rule in the traffic
/// order at `concurrency`, or the group choice's.
fn schedule(
    strategy: Strategy,
    group: &Group,
    params: &GroupParams,
    concurrency: u32,
) -> Result<GroupPlan, TrafficError> {
    let techniques = match (strategy, strategy.uniform()) {
        (_, Some(t)) => vec![t; group.vms.len()],
        (Strategy::PaperRule, None) => paper_rule(group, params, &Technique::CONCRETE)?,
        (_, None) => return Ok(choose_group(group, params, &Technique::CONCRETE)?),
    };
    let schedule = Schedule {
        techniques,
        order: traffic_order(group),
        concurrency,
    };
    Ok(predict_group(
        group,
        params,
        &schedule,
        &Technique::CONCRETE,
    )?)
}

/// Runs the plan's migrations from h1 to h2 in waves of its concurrency, each wave once the one
/// before has ended; a migration that fails, is refused, or is still running at
/// `migration_timeout_s` (it goes on until the lab is taken down) is recorded without an end,
/// and the evacuation goes on: the run then has no evacuation time.
async fn evacuate(
    config: &TrafficConfig,
    lab: &LabRun,
    plan: &GroupPlan,
    tag: &str,
    say: Say<'_>,
) -> Result<Vec<MigrationDone>, TrafficError> {
    let (_, h1) = &lab.agents[0];
    let to = lab.state.hosts[1]
        .agent_url
        .as_deref()
        .and_then(|u| AgentUrl::parse(u).ok())
        .ok_or_else(|| TrafficError::Scenario("h2 has no agent".into()))?;
    let width = plan.schedule.concurrency.max(1) as usize;
    let timeout = Duration::from_secs(config.migration_timeout_s);
    let mut done = Vec::new();
    for wave in plan.vms.chunks(width) {
        let mut running = Vec::new();
        for f in wave {
            let req = MigrationRequest {
                id: None,
                to: to.clone(),
                technique: f.technique,
                measure: false,
                // The agent's own pre-copy deadline (60 s) would cancel a pre-copy the run is
                // still willing to wait for: all pre-copy with senders at 88% of h1's link took
                // 44-52 s a migration on a quiet machine, more under load.
                knobs: PlanKnobs {
                    deadline_s: config.migration_timeout_s,
                    ..PlanKnobs::default()
                },
            };
            let started_s = unix_now_s();
            match h1.migrate(&f.name, &req).await {
                Ok(r) => {
                    let agent = h1.clone();
                    running.push(tokio::spawn(async move {
                        agent.wait_migration(&r.id, timeout).await
                    }));
                }
                Err(e) => done.push(MigrationDone {
                    vm: f.name.clone(),
                    technique: f.technique,
                    state: "refused".into(),
                    started_s,
                    ended_s: None,
                    downtime_ms: None,
                    transferred_bytes: None,
                    error: Some(e.to_string()),
                }),
            }
        }
        for task in running {
            let record = task
                .await
                .map_err(|e| TrafficError::Scenario(format!("waiting for a migration: {e}")))?
                .map_err(agent_err("waiting for a migration"))?;
            let m = migration_done(&record);
            // Why a migration did not complete (the agent's record: a deadline, QEMU's error).
            let why = m
                .error
                .as_deref()
                .map_or_else(String::new, |e| format!(": {e}"));
            say(&format!(
                "[{tag}] {} {} {} in {}{why}",
                m.vm,
                m.technique.as_str(),
                m.state,
                m.duration_s()
                    .map_or_else(|| "-".into(), |d| format!("{d:.1} s"))
            ));
            done.push(m);
        }
    }
    Ok(done)
}

fn migration_done(r: &MigrationRecord) -> MigrationDone {
    let state = match serde_json::to_value(r.state) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{:?}", r.state).to_lowercase(),
    };
    MigrationDone {
        vm: r.vm.clone(),
        technique: r
            .result
            .as_ref()
            .map(|x| x.chosen)
            .unwrap_or(r.request.technique),
        state,
        started_s: r.started_unix_ms as f64 / 1000.0,
        ended_s: r
            .ended_unix_ms
            .filter(|_| r.state.is_final())
            .map(|ms| ms as f64 / 1000.0),
        downtime_ms: r.result.as_ref().and_then(|x| x.downtime_ms),
        transferred_bytes: r.result.as_ref().map(|x| x.transferred_bytes),
        error: r.error.clone(),
    }
}

/// Every second: each host's link counters (its veth's, in the root namespace) and each VM's
/// tap rates and dirty rate from the agents.
struct TrafficSampler {
    series: Arc<Mutex<Vec<TrafficSample>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TrafficSampler {
    fn start(lab: &LabRun) -> TrafficSampler {
        let hosts: Vec<(String, String, AgentClient)> = lab
            .state
            .hosts
            .iter()
            .zip(&lab.agents)
            .map(|(h, (_, a))| (h.name.clone(), h.veth.clone(), a.clone()))
            .collect();
        let series: Arc<Mutex<Vec<TrafficSample>>> = Arc::default();
        let out = series.clone();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                let s = sample(&hosts).await;
                if let Ok(mut v) = out.lock() {
                    v.push(s);
                }
            }
        });
        TrafficSampler { series, stop, task }
    }

    fn snapshot(&self) -> Vec<TrafficSample> {
        self.series.lock().map(|v| v.clone()).unwrap_or_default()
    }

    async fn finish(self) -> Vec<TrafficSample> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.series.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// A counter of the host-side veth end (in the root namespace).
fn veth_counter(veth: &str, which: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{veth}/statistics/{which}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

async fn sample(hosts: &[(String, String, AgentClient)]) -> TrafficSample {
    let t_s = unix_now_s();
    let mut links = Vec::new();
    let mut vms: Vec<TapSample> = Vec::new();
    for (host, veth, agent) in hosts {
        // The host-side end receives what the host sends, and sends what it receives.
        links.push(LinkCounters {
            host: host.clone(),
            tx_bytes: veth_counter(veth, "rx_bytes"),
            rx_bytes: veth_counter(veth, "tx_bytes"),
        });
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(900), agent.metrics()).await
        else {
            continue;
        };
        for v in m.vms {
            let tap = TapSample {
                vm: v.name.clone(),
                host: host.clone(),
                rx_bps: v.net_rx_bps,
                tx_bps: v.net_tx_bps,
                dirty_rate_bps: v.dirty_rate_bps,
            };
            // A VM on two hosts (mid-migration): the copy that carries its traffic.
            match vms.iter_mut().find(|x| x.vm == tap.vm) {
                Some(x) if x.rx_bps + x.tx_bps < tap.rx_bps + tap.tx_bps => *x = tap,
                Some(_) => {}
                None => vms.push(tap),
            }
        }
    }
    TrafficSample { t_s, links, vms }
}

/// Every repetition of every strategy in order, each handed to `done` as it ends; the first
/// failure stops the experiment (its lab already down).
///
/// # Errors
/// The failed run's [`TrafficError`], naming the strategy and repetition.
pub async fn run_all(
    config: &TrafficConfig,
    say: Say<'_>,
    mut done: impl FnMut(&TrafficOutcome),
) -> Result<Vec<TrafficOutcome>, TrafficError> {
    say("guest image: building if needed");
    drover_qemu::image::ensure_image(&drover_qemu::image::NoProgress)?;
    let mut all = Vec::new();
    let mut moved = BTreeMap::new();
    for run in 1..=config.repeat {
        for &s in &config.strategies {
            let outcome = run_once(config, s, run, &moved, say)
                .await
                .map_err(|e| TrafficError::Scenario(format!("{} run {run}: {e}", s.as_str())))?;
            learn_moved_bytes(&mut moved, &outcome.migrations);
            done(&outcome);
            all.push(outcome);
        }
    }
    Ok(all)
}
