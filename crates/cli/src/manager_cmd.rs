//! `drover manager --config FILE`: runs the cluster manager until SIGINT or SIGTERM, then
//! stops it after its current look. Killed instead (even with -9), it restarts from its store.
//! `drover manager bench`: the whole manager over the simulator, timed (`manager_bench_cmd`).

use crate::manager_bench_cmd;
use anyhow::{bail, Context};
use drover_lab::manager_file::{remove_manager, save_manager, ManagerRecord};
use drover_manager::{ManagerConfig, Service};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ManagerArgs {
    #[command(subcommand)]
    command: Option<ManagerCmd>,
    /// The manager's configuration file (TOML: agents, state_dir, token_file, [loop], [poll],
    /// [retention], [control], [api]).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Manage a running lab (`drover lab up`): its hosts' agents with the lab's token, the
    /// store under the lab directory, the API on a free loopback port recorded in the lab
    /// (where `drover host|plan|manager status` find it); stops when the lab goes down.
    /// With --config, the file gives everything but the agents.
    #[arg(long, num_args = 0..=1, default_missing_value = drover_lab::name::DEFAULT_LAB)]
    lab: Option<String>,
    /// Check the configuration, every token file and that the state directory is (or can be
    /// made) writable, say what would run, and exit; starts nothing.
    #[arg(long)]
    check: bool,
}

/// What to ask a running manager.
#[derive(clap::Subcommand)]
pub enum ManagerCmd {
    /// The running manager's loop: mode, looks, hosts, plans, moves, energy, store health.
    Status(crate::fleet_cmd::ManagerTarget),
    /// Time the whole manager (its loop on the SQLite store) over a simulated datacenter, one
    /// look a simulated second (release builds), and report peak memory.
    Bench(manager_bench_cmd::BenchArgs),
}

impl ManagerArgs {
    /// Whether this runs the daemon (not a subcommand such as `status` or `bench`).
    pub fn is_daemon(&self) -> bool {
        self.command.is_none()
    }
}

pub fn run(args: ManagerArgs) -> anyhow::Result<()> {
    match args.command {
        Some(ManagerCmd::Status(t)) => return crate::fleet_cmd::run_status(&t),
        Some(ManagerCmd::Bench(b)) => return manager_bench_cmd::run(b),
        None => {}
    }
    let (config, lab) = match (&args.lab, &args.config) {
        (None, None) => bail!(
            "drover manager needs --config FILE or --lab [NAME] to run (or `drover manager status|bench`)"
        ),
        (None, Some(path)) => (ManagerConfig::load(path)?, None),
        (Some(name), path) => {
            let state = drover_lab::load_state(name).with_context(|| format!("--lab {name}"))?;
            let mut config = match path {
                Some(p) => ManagerConfig::read(p)?,
                None => ManagerConfig::default(),
            };
            config.use_lab(&state)?;
            config.validate()?;
            (config, Some(state))
        }
    };
    if args.check {
        config.preflight()?;
        println!(
            "{}: {} agent(s), store in {}, mode {}, a look every {} s",
            config.source.display(),
            config.agents.len(),
            config.state_dir.display(),
            config.control.mode,
            config.cadence.interval_s
        );
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
    rt.block_on(async {
        let service = Service::start(&config).await?;
        let stop = match &lab {
            None => stop_signal().await,
            Some(state) => {
                let rec = ManagerRecord {
                    url: format!("http://{}", service.api_addr()),
                    pid: std::process::id(),
                };
                let dirs = drover_lab::LabDirs::from_env();
                if let Err(e) = save_manager(&dirs, &state.name, &rec) {
                    // Not findable, so not left running.
                    service.stop().await?;
                    return Err(e.into());
                }
                tracing::info!(target: "drover_manager", lab = %state.name, url = %rec.url, "managing the lab");
                let stop = tokio::select! {
                    s = stop_signal() => s,
                    () = lab_gone(&dirs, &state.name) => "the lab went down",
                };
                remove_manager(&dirs, &state.name, rec.pid);
                stop
            }
        };
        // Logged as the manager's own line: its default log level shows it.
        tracing::info!(target: "drover_manager", "{stop}: stopping after the current look");
        service.stop().await?;
        Ok(())
    })
}

/// Returns once lab `name`'s description is gone (`lab down` removes it), checked every
/// second: a lab's manager must not outlive its lab.
async fn lab_gone(dirs: &drover_lab::LabDirs, name: &drover_lab::LabName) {
    let file = dirs.state_file(name);
    while file.exists() {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Waits for SIGINT or SIGTERM and names it.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        // No SIGTERM handler could be installed: Ctrl-C still works.
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
