//! The demo's lab and manager, owned: [`LabRun`] brings a lab up, starts the manager as a child
//! process of the drover binary, and on drop (a run's end, an error, or its future dropped on
//! a signal) kills the manager and takes the lab down, whatever happened before.

use crate::config::DemoConfig;
use drover_api::{AgentClient, AgentUrl};
use drover_lab::{AgentLaunch, CgroupLayout, LabDirs, LabName, LabSpec, LabState, RealSystem};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use thiserror::Error;

/// Why the lab or its manager could not be set up.
#[derive(Debug, Error)]
pub enum LabRunError {
    #[error("lab: {0}")]
    Lab(#[from] drover_lab::LabError),
    #[error("lab spec: {0}")]
    Spec(#[from] drover_lab::plan::PlanError),
    #[error("lab {lab}: {what}")]
    Setup { lab: String, what: String },
    #[error("starting the manager ({bin}): {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("the manager stopped before it was ready ({status}); its log, {log}:\n{tail}")]
    ManagerDied {
        status: String,
        log: String,
        tail: String,
    },
    #[error("the manager did not record its address in the lab within {0} s")]
    ManagerSilent(u64),
}

/// A lab with its agents, and optionally its manager; both removed when dropped.
pub struct LabRun {
    pub state: LabState,
    pub token: String,
    /// (host name, its agent), h1 first.
    pub agents: Vec<(String, AgentClient)>,
    name: LabName,
    dirs: LabDirs,
    layout: CgroupLayout,
    manager: Option<Child>,
    bin: std::path::PathBuf,
}

impl LabRun {
    /// Brings up the demo's lab: `hosts` hosts with the CPU cap and link, an agent each with
    /// the demo's wake delay.
    ///
    /// # Errors
    /// [`LabRunError`]: the lab could not be made (a lab of that name is up, a leftover,
    /// no root...) or its token read.
    pub fn up(config: &DemoConfig) -> Result<LabRun, LabRunError> {
        let mut agent = AgentLaunch::drover(&config.drover_bin, Duration::from_secs(60))
            .wake_delay(config.wake_delay_s);
        if let Some(secs) = config.dirty_interval_s {
            agent = agent.dirty_interval(secs);
        }
        let spec = LabSpec::new(&config.lab, config.hosts)?
            .link_rate(config.link_bps)?
            .cpus(config.host_cpus)
            .agent(agent);
        LabRun::up_spec(&spec, &config.drover_bin)
    }

    /// Brings up the lab `spec` describes (it must start agents); `bin` is the drover binary
    /// that [`LabRun::start_manager`] runs.
    ///
    /// # Errors
    /// As [`LabRun::up`].
    pub fn up_spec(spec: &LabSpec, bin: &Path) -> Result<LabRun, LabRunError> {
        let mut sys = RealSystem;
        let dirs = LabDirs::from_env();
        let layout = drover_lab::detect_layout(&mut sys)?;
        let state = drover_lab::up(&mut sys, &dirs, spec, &layout)?;
        // From here on, dropping `run` takes the lab down.
        let mut run = LabRun {
            name: spec.name.clone(),
            state,
            token: String::new(),
            agents: Vec::new(),
            dirs,
            layout,
            manager: None,
            bin: bin.to_path_buf(),
        };
        let lab = spec.name.as_str().to_string();
        let setup = |what: String| LabRunError::Setup {
            lab: lab.clone(),
            what,
        };
        run.token = std::fs::read_to_string(&run.state.token_file)
            .map_err(|e| setup(format!("{}: {e}", run.state.token_file.display())))?
            .trim()
            .to_string();
        for h in &run.state.hosts {
            let url = h
                .agent_url
                .as_deref()
                .ok_or_else(|| setup(format!("host {} has no agent", h.name)))?;
            let url = AgentUrl::parse(url).map_err(|e| setup(format!("{}: {e}", h.name)))?;
            run.agents
                .push((h.name.clone(), AgentClient::new(url, &run.token)));
        }
        Ok(run)
    }

    /// The host whose agent listens at `url` (a migration record names its destination so).
    pub fn host_of(&self, url: &str) -> Option<&str> {
        let url = url.trim_end_matches('/');
        self.state
            .hosts
            .iter()
            .find(|h| h.agent_url.as_deref().map(|u| u.trim_end_matches('/')) == Some(url))
            .map(|h| h.name.as_str())
    }

    /// Starts `drover manager --lab NAME --config FILE`, its log in `log`, and waits until it
    /// has recorded its API address in the lab; returns that address.
    ///
    /// # Errors
    /// [`LabRunError`]: it could not start, stopped, or stayed silent for a minute.
    pub async fn start_manager(
        &mut self,
        config: &Path,
        log: &Path,
    ) -> Result<String, LabRunError> {
        let bin = self.bin.display().to_string();
        let file = std::fs::File::create(log).map_err(|source| LabRunError::Spawn {
            bin: bin.clone(),
            source,
        })?;
        let child = Command::new(&self.bin)
            .args(["manager", "--lab", self.name.as_str(), "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|source| LabRunError::Spawn { bin, source })?;
        self.manager = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(Ok(Some(status))) = self.manager.as_mut().map(Child::try_wait) {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                return Err(LabRunError::ManagerDied {
                    status: status.to_string(),
                    log: log.display().to_string(),
                    tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                });
            }
            if let Ok(Some(rec)) = drover_lab::manager_file::load_manager(&self.dirs, &self.name) {
                return Ok(rec.url);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LabRunError::ManagerSilent(60));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills the manager (if started) and takes the lab down; what failed is returned as
    /// text (teardown goes on past each failure).
    pub fn teardown(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        if let Some(mut child) = self.manager.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut sys = RealSystem;
        if let Err(e) = drover_lab::down(&mut sys, &self.dirs, &self.name, &self.layout) {
            failed.push(format!("lab down {}: {e}", self.name));
        }
        failed
    }
}

impl Drop for LabRun {
    fn drop(&mut self) {
        for f in self.teardown() {
            eprintln!("demo teardown: {f}");
        }
    }
}
