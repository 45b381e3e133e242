//! `drover manager --config FILE`: runs the cluster manager until SIGINT or SIGTERM, then
//! stops it after its current look. Killed instead (even with -9), it restarts from its store.
//! `drover manager bench`: the whole manager over the simulator, timed (`manager_bench_cmd`).

use crate::manager_bench_cmd;
use anyhow::{bail, Context};
use drover_manager::{ManagerConfig, Service};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ManagerArgs {
    #[command(subcommand)]
    command: Option<ManagerCommand>,
    /// The manager's configuration file (TOML: agents, state_dir, token_file, [loop], [poll],
    /// [retention], [control]).
    #[arg(long, required = true)]
    config: Option<PathBuf>,
    /// Check the configuration and the token files, say what would run, and exit.
    #[arg(long)]
    check: bool,
}

#[derive(clap::Subcommand)]
enum ManagerCommand {
    /// Time the whole manager (its loop on the SQLite store) over a simulated datacenter, one
    /// look a simulated second (release builds), and report peak memory.
    Bench(manager_bench_cmd::BenchArgs),
}

impl ManagerArgs {
    /// Whether this runs the daemon (not a subcommand such as `bench`).
    pub fn is_daemon(&self) -> bool {
        self.command.is_none()
    }
}

pub fn run(args: ManagerArgs) -> anyhow::Result<()> {
    if let Some(ManagerCommand::Bench(b)) = args.command {
        return manager_bench_cmd::run(b);
    }
    let Some(path) = args.config else {
        bail!("--config FILE is required");
    };
    let args = Run {
        config: path,
        check: args.check,
    };
    let config = ManagerConfig::load(&args.config)?;
    if args.check {
        config.agent_specs()?;
        println!(
            "{}: {} agent(s), store in {}, mode {:?}, a look every {} s",
            args.config.display(),
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
        let stop = stop_signal().await;
        // Logged as the manager's own line: its default log level shows it.
        tracing::info!(target: "drover_manager", "{stop}: stopping after the current look");
        service.stop().await?;
        Ok(())
    })
}

/// `drover manager --config FILE [--check]`.
struct Run {
    config: PathBuf,
    check: bool,
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
