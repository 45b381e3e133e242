//! `drover agent`: runs the per-host agent until killed. Killing it (even with -9) leaves its
//! VMs running; started again on the same state directory, it re-attaches to them.

use anyhow::Context;
use drover_agent::{read_token, serve, AgentConfig, AgentError};
use drover_core::units::{parse_rate, parse_size};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// Address to serve the HTTP API on.
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// Where VM records, migration records and VM run directories live.
    #[arg(long)]
    state_dir: PathBuf,
    /// File holding the bearer token clients and other agents must present.
    #[arg(long)]
    token_file: PathBuf,
    /// QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: String,
    /// Accelerator: kvm, tcg or auto.
    #[arg(long, default_value = "auto")]
    accel: String,
    /// Seconds between dirty-rate measurements of each VM.
    #[arg(long, default_value_t = 30)]
    dirty_interval: u64,
    /// This host's network link, e.g. 10MB/s or 1Gbit/s: `auto` never assumes a faster one
    /// when a migration sets no bandwidth cap (default: unknown, the request's assumption).
    #[arg(long)]
    link: Option<String>,
    /// The memory cgroup directory whose OOM kills explain a dead VM (default: the agent's
    /// own, when /sys/fs/cgroup shows it).
    #[arg(long)]
    cgroup_dir: Option<PathBuf>,
    /// CPUs to report as this host's capacity (default: cgroup quota, else all).
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory to report as this host's capacity, e.g. 4G (default: cgroup limit, else all).
    #[arg(long)]
    memory: Option<String>,
    /// Seconds a woken host stays `waking` (standing for its boot) before it is active again.
    #[arg(long, default_value_t = 10.0)]
    wake_delay: f64,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let mut config = AgentConfig::new(args.listen, args.state_dir, String::new());
    config.qemu_binary = args.qemu;
    config.accel = args
        .accel
        .parse()
        .map_err(|e| anyhow::anyhow!("--accel: {e}"))?;
    config.dirty_interval = Duration::from_secs(args.dirty_interval.max(1));
    config.link_bps = args
        .link
        .as_deref()
        .map(parse_rate)
        .transpose()
        .context("--link")?;
    config.cgroup_dir = args.cgroup_dir;
    config.cpus = args.cpus;
    if !(args.wake_delay.is_finite() && args.wake_delay >= 0.0) {
        anyhow::bail!(
            "--wake-delay {}: expected seconds, 0 or more",
            args.wake_delay
        );
    }
    config.wake_delay = Duration::try_from_secs_f64(args.wake_delay)
        .map_err(|e| anyhow::anyhow!("--wake-delay {}: {e}", args.wake_delay))?;
    config.memory_bytes = args
        .memory
        .as_deref()
        .map(parse_size)
        .transpose()
        .context("--memory")?;
    // The library checks its config too; here the error can name the flag.
    config.validate().map_err(|e| match &e {
        AgentError::Setting { setting, .. } => anyhow::anyhow!("{}: {e}", flag(setting)),
        _ => e.into(),
    })?;
    config.token = read_token(&args.token_file)?;
    let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
    rt.block_on(async {
        tokio::select! {
            r = serve(config) => r.map_err(anyhow::Error::from),
            // Ctrl-C stops the agent only; its VMs keep running for the next start.
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

/// The flag that sets an `AgentConfig` field.
fn flag(setting: &str) -> &str {
    match setting {
        "link_bps" => "--link",
        "cpus" => "--cpus",
        "memory_bytes" => "--memory",
        "dirty_interval" => "--dirty-interval",
        "wake_delay" => "--wake-delay",
        other => other,
    }
}
