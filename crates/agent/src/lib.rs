//! `drover agent`: the per-host daemon. It runs this host's VMs as detached QEMU processes,
//! measures them, and migrates them to and from other agents, all behind an authenticated HTTP
//! JSON API (OpenAPI document at `/v1/openapi.json`).
//!
//! Module map:
//! - [`api`]: routes, auth, pure request parsers, error mapping;
//! - [`vms`]: the VM registry and lifecycle (start, re-attach, stop, incoming/commit);
//! - [`migrate`]: migration orchestration between agents (protocol and state machine in its
//!   docs), and reconciliation after a restart;
//! - [`metrics`]: host capacity/usage and per-VM rates, JSON and Prometheus; [`demand`]: CPU
//!   demand (use plus what a VM could not get) from the guest, run delay or cgroup throttling;
//! - [`power`]: the host's power state (active, standby, waking) and what it admits;
//! - [`store`]: persistence of VMs and migration records (atomic JSON files);
//! - [`remote`]: `RemoteQmp`, the destination's QMP seen through its agent;
//! - [`model`] (what is persisted beyond the wire types), [`procfs`] (/proc, /sys, cgroups).
//!
//! The wire contract (request and response types, their validation, the OpenAPI document and
//! the typed client) is the `drover_api` crate, shared with the CLI and the manager.
//!
//! Restart safety: QEMU runs detached, so killing the agent (even with -9) leaves VMs running;
//! on start the agent re-attaches to every VM in its state directory, reports dead ones as
//! `lost`, and re-evaluates any migration that was under way from what QEMU reports.

pub mod api;
pub mod demand;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod power;
pub mod procfs;
pub mod remote;
pub mod store;
pub mod vms;
pub mod wan_plan;

use drover_qemu::image::GuestImage;
use drover_qemu::launcher::Accel;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use thiserror::Error;
use tokio::task::JoinHandle;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("the token is empty: put a secret in the token file")]
    EmptyToken,
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("re-attaching to VMs: {0}")]
    Reattach(#[from] vms::VmsError),
    #[error("cannot listen on {addr}: {message}")]
    Bind { addr: SocketAddr, message: String },
    #[error("HTTP server: {0}")]
    Serve(String),
    #[error("agent setting {setting} is {value}; expected {expected}")]
    Setting {
        /// The [`AgentConfig`] field at fault.
        setting: &'static str,
        value: String,
        expected: String,
    },
}

/// The least memory an agent may report, bytes: the smallest guest plus the QEMU overhead
/// admission charges for it (the guest's own rule, `drover_guest::fit`).
pub const MIN_HOST_MEMORY: u64 = drover_guest::fit::MIN_HOST_MEMORY_BYTES;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    /// Bearer token for clients and for the other agents (a cluster shares one).
    pub token: String,
    pub qemu_binary: String,
    pub accel: Accel,
    /// None: build or find the default guest image on first use.
    pub image: Option<GuestImage>,
    /// How often VM rates are sampled.
    pub sample_interval: Duration,
    /// How often each VM's dirty rate is measured.
    pub dirty_interval: Duration,
    pub start_timeout: Duration,
    /// This host's network link, bytes/s: `auto` never assumes a faster one (None: unknown).
    pub link_bps: Option<u64>,
    /// The memory cgroup whose OOM kills explain a dead VM (None: the agent's own, if visible).
    pub cgroup_dir: Option<PathBuf>,
    /// Host capacity to report instead of the detected one (e.g. when the agent runs where
    /// its cgroup is not visible, as under `ip netns exec`, which remounts /sys): CPUs (cores,
    /// fractions allowed) and memory in bytes.
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// How long a woken host stays `waking` (standing for its boot) before it is active.
    pub wake_delay: Duration,
    /// The VM network VMs' NICs join (`--vm-net`, `--vm-bridge`; None: no NICs here).
    pub vm_net: Option<vms::tap::VmNet>,
}

/// Longest wake delay the agent takes (a boot slower than this is a broken host).
pub const MAX_WAKE_DELAY: Duration = Duration::from_secs(3600);

impl AgentConfig {
    pub fn new(listen: SocketAddr, state_dir: PathBuf, token: String) -> Self {
        AgentConfig {
            listen,
            state_dir,
            token,
            qemu_binary: "qemu-system-x86_64".into(),
            accel: Accel::Auto,
            image: None,
            sample_interval: Duration::from_secs(2),
            dirty_interval: Duration::from_secs(30),
            start_timeout: Duration::from_secs(30),
            link_bps: None,
            cgroup_dir: None,
            cpus: None,
            memory_bytes: None,
            wake_delay: Duration::from_secs(10),
            vm_net: None,
        }
    }
}

impl AgentConfig {
    /// Refuses settings the agent could not honestly run with (a capacity of -1 or NaN CPUs,
    /// no memory, intervals of zero). [`start`] calls it, so every caller is checked, not only
    /// the command line.
    pub fn validate(&self) -> Result<(), AgentError> {
        let bad = |setting, value: String, expected: &str| {
            Err(AgentError::Setting {
                setting,
                value,
                expected: expected.to_string(),
            })
        };
        if let Some(c) = self.cpus.filter(|&c| !drover_guest::fit::host_cpus_ok(c)) {
            return bad(
                "cpus",
                c.to_string(),
                &drover_guest::fit::host_cpus_expected(),
            );
        }
        if let Some(m) = self.memory_bytes.filter(|&m| m < MIN_HOST_MEMORY) {
            return bad(
                "memory_bytes",
                format!("{m} bytes"),
                &drover_guest::fit::host_memory_expected(),
            );
        }
        if self.wake_delay > MAX_WAKE_DELAY {
            return bad(
                "wake_delay",
                format!("{} s", self.wake_delay.as_secs_f64()),
                "at most 3600 s",
            );
        }
        for (setting, d) in [
            ("sample_interval", self.sample_interval),
            ("dirty_interval", self.dirty_interval),
            ("start_timeout", self.start_timeout),
        ] {
            if d.is_zero() {
                return bad(setting, "0 s".into(), "longer than zero");
            }
        }
        if let Some(l) = self.link_bps {
            if let Err(expected) = drover_core::migration::knobs::check_link_bps(l) {
                let expected = expected.trim_start_matches("expected ");
                return bad("link_bps", format!("{l} bytes/s"), expected);
            }
        }
        Ok(())
    }
}

/// Locks `m`, tolerating poison.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections are plain map edits; a panic inside cannot leave them half-done.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything the handlers and background tasks share.
pub struct AgentState {
    pub token: String,
    /// This agent's identity (see `drover_api::Health`).
    pub agent_id: String,
    /// Where the HTTP server listens (to recognise a migration to this host).
    pub listen: SocketAddr,
    /// This host's link, bytes/s, when known (see [`AgentConfig::link_bps`]).
    pub link_bps: Option<u64>,
    pub store: store::Store,
    pub vms: vms::Vms,
    pub migrations: migrate::Migrations,
    pub metrics: metrics::MetricsHub,
    pub power: power::Power,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl AgentState {
    /// Spawns a background task owned by the agent (aborted with it).
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(tokio::spawn(fut));
    }

    /// Aborts background tasks (migrations in flight stop being driven; QEMU keeps running).
    pub fn abort_tasks(&self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

/// A started agent.
pub struct RunningAgent {
    pub addr: SocketAddr,
    pub state: Arc<AgentState>,
    pub server: JoinHandle<Result<(), AgentError>>,
}

/// Opens the state, re-attaches to VMs, reconciles migrations, binds and starts serving.
pub async fn start(config: AgentConfig) -> Result<RunningAgent, AgentError> {
    if config.token.is_empty() {
        return Err(AgentError::EmptyToken);
    }
    config.validate()?;
    let store = store::Store::open(&config.state_dir)?;
    let detected = procfs::capacity();
    let capacity = procfs::Capacity {
        cpus: config.cpus.unwrap_or(detected.cpus),
        memory_bytes: config.memory_bytes.unwrap_or(detected.memory_bytes),
    };
    let settings = vms::LaunchSettings {
        qemu_binary: config.qemu_binary.clone(),
        accel: config.accel,
        image: config.image.clone(),
        start_timeout: config.start_timeout,
        memory_capacity_bytes: capacity.memory_bytes,
        memory_cgroup: config.cgroup_dir.clone(),
        vm_net: config.vm_net.clone(),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| AgentError::Bind {
            addr: config.listen,
            message: e.to_string(),
        })?;
    let addr = listener.local_addr().map_err(|e| AgentError::Bind {
        addr: config.listen,
        message: e.to_string(),
    })?;
    let state = Arc::new(AgentState {
        token: config.token.clone(),
        agent_id: store.agent_id()?,
        listen: addr,
        link_bps: config.link_bps,
        vms: vms::Vms::new(store.clone(), settings),
        migrations: migrate::Migrations::load(store.clone())?,
        metrics: metrics::MetricsHub::new(config.dirty_interval, capacity),
        power: power::Power::load(store.clone(), config.wake_delay)?,
        store,
        tasks: Mutex::new(Vec::new()),
    });
    state.vms.reattach_all().await?;
    migrate::recover_all(&state);
    let sampler = state.clone();
    let interval = config.sample_interval;
    state.spawn(async move {
        loop {
            sampler.metrics.sample(&sampler.vms).await;
            tokio::time::sleep(interval).await;
        }
    });
    let app = api::router(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<api::Connection>(),
        )
        .await
        .map_err(|e| AgentError::Serve(e.to_string()))
    });
    tracing::info!(
        listen = %addr,
        state_dir = %config.state_dir.display(),
        cpus = capacity.cpus,
        memory_bytes = capacity.memory_bytes,
        link_bps = ?config.link_bps,
        oom_cgroup = ?state.vms.oom_dir(),
        agent_id = %state.agent_id,
        "agent started"
    );
    Ok(RunningAgent {
        addr,
        state,
        server,
    })
}

/// Runs the agent until the server stops (or the process is killed).
pub async fn serve(config: AgentConfig) -> Result<(), AgentError> {
    procfs::become_subreaper();
    let agent = start(config).await?;
    match agent.server.await {
        Ok(r) => r,
        Err(e) => Err(AgentError::Serve(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AgentConfig {
        AgentConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            "/nonexistent/drover-agent-test".into(),
            "secret".into(),
        )
    }

    #[test]
    fn capacities_must_be_real() {
        assert!(config().validate().is_ok());
        for cpus in [-1.0, 0.0, f64::NAN, f64::INFINITY, 1e300, 0.0001] {
            let mut c = config();
            c.cpus = Some(cpus);
            let e = c.validate().unwrap_err();
            assert!(
                matches!(
                    e,
                    AgentError::Setting {
                        setting: "cpus",
                        ..
                    }
                ),
                "{cpus}: {e}"
            );
        }
        let mut c = config();
        c.cpus = Some(0.5);
        c.memory_bytes = Some(0);
        let e = c.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "agent setting memory_bytes is 0 bytes; expected at least 234 MiB (245366784 bytes: \
             the smallest guest, 128 MiB, plus QEMU's overhead charged for it)"
        );
        // 64 MiB was once accepted as "what one guest needs", and then no VM fitted.
        c.memory_bytes = Some(64 << 20);
        assert!(c.validate().is_err());
        c.memory_bytes = Some(MIN_HOST_MEMORY);
        assert!(c.validate().is_ok());
        assert!(
            vms::vm_cost(drover_guest::fit::MIN_GUEST_MEMORY_BYTES, 1) <= MIN_HOST_MEMORY,
            "a host at the floor admits the smallest guest"
        );
        c.sample_interval = Duration::ZERO;
        assert!(c.validate().is_err());
        let mut c = config();
        c.wake_delay = Duration::ZERO;
        assert!(c.validate().is_ok(), "a host that boots at once");
        c.wake_delay = Duration::from_secs(3601);
        assert!(matches!(
            c.validate(),
            Err(AgentError::Setting {
                setting: "wake_delay",
                ..
            })
        ));
    }

    #[test]
    fn link_rates_are_those_a_migration_may_assume() {
        let mut c = config();
        c.link_bps = Some(10_000_000);
        assert!(c.validate().is_ok());
        c.link_bps = Some(1000);
        assert!(matches!(
            c.validate(),
            Err(AgentError::Setting {
                setting: "link_bps",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn start_refuses_a_bad_config_before_touching_the_state_dir() {
        let mut c = config();
        c.cpus = Some(-1.0);
        let Err(e) = start(c).await else {
            panic!("an agent with -1 CPUs started")
        };
        assert!(matches!(e, AgentError::Setting { .. }), "{e}");
    }
}
