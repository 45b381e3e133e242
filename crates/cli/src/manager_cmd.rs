//! `drover manager --config FILE`: runs the cluster manager until SIGINT or SIGTERM, then
//! stops it after its current look. Killed instead (even with -9), it restarts from its store.

use anyhow::Context;
use drover_manager::{ManagerConfig, Service};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ManagerArgs {
    /// The manager's configuration file (TOML: agents, state_dir, token_file, [loop], [poll],
    /// [retention], [control]).
    #[arg(long)]
    config: PathBuf,
    /// Check the configuration and the token files, say what would run, and exit.
    #[arg(long)]
    check: bool,
}

pub fn run(args: ManagerArgs) -> anyhow::Result<()> {
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
