//! The sampler: every second, every agent's metrics and VMs, merged into one [`Sample`]
//! appended to a shared series, until told to stop.

use crate::series::{merge_vm, HostSample, Power, Sample, VmSample, VmSeen};
use drover_api::{AgentClient, VmView};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest wait for one agent's answer: a sample must not stall on one slow agent.
const CALL_TIMEOUT: Duration = Duration::from_millis(900);

/// The series a running sampler appends to.
pub type Shared = Arc<Mutex<Vec<Sample>>>;

/// A running sampler.
pub struct Sampler {
    pub series: Shared,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Unix time now, s (the series' clock, and the manager's).
pub fn unix_now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Sampler {
    /// Starts sampling `agents` (host name, client) for the VMs `vms` every `every`.
    pub fn start(agents: Vec<(String, AgentClient)>, vms: Vec<String>, every: Duration) -> Sampler {
        let series: Shared = Arc::default();
        let (stop, mut stopped) = watch::channel(false);
        let out = series.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                let s = sample(&agents, &vms).await;
                if let Ok(mut v) = out.lock() {
                    v.push(s);
                }
            }
        });
        Sampler { series, stop, task }
    }

    /// From the newest sample back, the first value `f` finds for VM `vm` (None: no sample
    /// has one, or the series is unreadable).
    pub fn latest_of<T>(&self, vm: &str, f: impl Fn(&VmSample) -> Option<T>) -> Option<T> {
        let series = self.series.lock().ok()?;
        series.iter().rev().find_map(|s| s.vm(vm).and_then(&f))
    }

    /// A copy of the series so far.
    pub fn snapshot(&self) -> Vec<Sample> {
        self.series.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Stops sampling and returns the series.
    pub async fn finish(self) -> Vec<Sample> {
        let _ = self.stop.send(true);
        let series = self.series;
        let _ = self.task.await;
        let v = series.lock().map(|v| v.clone()).unwrap_or_default();
        v
    }
}

async fn sample(agents: &[(String, AgentClient)], vms: &[String]) -> Sample {
    let t_s = unix_now_s();
    let mut hosts = Vec::new();
    let mut views: Vec<(String, Vec<VmView>)> = Vec::new();
    for (name, agent) in agents {
        let (metrics, listed) = tokio::join!(
            tokio::time::timeout(CALL_TIMEOUT, agent.metrics()),
            tokio::time::timeout(CALL_TIMEOUT, agent.list_vms()),
        );
        hosts.push(match metrics {
            Ok(Ok(m)) => HostSample {
                name: name.clone(),
                power: m.host.power.into(),
                cpus: m.host.cpus,
                demand_cores: m.host.cpu_demand_cores,
                used_cores: m.host.cpu_used_cores,
                vms: m.host.vms,
            },
            _ => HostSample {
                name: name.clone(),
                power: Power::Unknown,
                cpus: 0.0,
                demand_cores: 0.0,
                used_cores: 0.0,
                vms: 0,
            },
        });
        if let Ok(Ok(list)) = listed {
            views.push((name.clone(), list));
        }
    }
    let seen: Vec<VmSeen<'_>> = views
        .iter()
        .flat_map(|(host, list)| list.iter().map(move |view| VmSeen { host, view }))
        .collect();
    let vms = vms.iter().filter_map(|vm| merge_vm(vm, &seen)).collect();
    Sample { t_s, hosts, vms }
}
