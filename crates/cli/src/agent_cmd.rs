//! `drover agent`: runs the per-host agent until killed. Killing it (even with -9) leaves its
//! VMs running; started again on the same state directory, it re-attaches to them.

use crate::flags::{cores, parsed, seconds, whole, Typed};
use anyhow::Context;
use drover_agent::{serve, AgentConfig, AgentError, MAX_WAKE_DELAY};
use drover_api::token::read_token;
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
    /// Seconds between dirty-rate measurements of each VM, 1 to 86400 (a VM whose pace, its
    /// guest's reported share of a vCPU or else its CPU use, moves by 0.15 of a core is measured
    /// again sooner, at most every 2 s).
    #[arg(long, default_value_t = 30, allow_negative_numbers = true,
          value_parser = whole::<u64>(1, 86_400))]
    dirty_interval: u64,
    /// This host's network link, 1 Mbit/s to 100 GB/s, e.g. 1gbit, 10MB/s or 1Gbit/s (rates
    /// as tc reads them: 300mbit is megabits/s, 300mbps megaBYTES/s; a bare number is
    /// bytes/s): `auto` never assumes a faster one when a migration sets no bandwidth cap
    /// (default: unknown, the request's assumption).
    #[arg(long, value_name = "RATE")]
    link: Option<String>,
    /// The memory cgroup directory whose OOM kills explain a dead VM (default: the agent's
    /// own, when /sys/fs/cgroup shows it).
    #[arg(long)]
    cgroup_dir: Option<PathBuf>,
    /// CPUs to report as this host's capacity, 0.1 to 1024 cores (default: cgroup quota, else
    /// all).
    #[arg(long, allow_negative_numbers = true, value_parser = cores)]
    cpus: Option<f64>,
    /// Memory to report as this host's capacity, at least 234 MiB (the smallest guest plus its
    /// QEMU's overhead), e.g. 4G (default: cgroup limit, else all).
    #[arg(long)]
    memory: Option<String>,
    /// Seconds a woken host stays `waking` (standing for its boot) before it is active again,
    /// 0 to 3600.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true,
          value_parser = seconds(MAX_WAKE_DELAY.as_secs()))]
    wake_delay: f64,
    /// The IPv4 network VMs' NICs are on, e.g. 198.18.0.0/24 (with --vm-bridge): a NIC's
    /// address and a net workload's peer must be in it. Without it VMs get no NIC.
    #[arg(long, value_name = "CIDR", requires = "vm_bridge")]
    vm_net: Option<String>,
    /// The bridge in the agent's network namespace that VMs' taps join (with --vm-net).
    #[arg(long, value_name = "NAME", requires = "vm_net")]
    vm_bridge: Option<String>,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let mut config = AgentConfig::new(args.listen, args.state_dir, String::new());
    config.qemu_binary = args.qemu;
    config.accel = parsed("--accel", &args.accel)?;
    config.dirty_interval = Duration::from_secs(args.dirty_interval);
    let link = args
        .link
        .as_deref()
        .map(|l| Typed::rate("--link", l))
        .transpose()?;
    config.link_bps = link.as_ref().map(Typed::value);
    config.cgroup_dir = args.cgroup_dir;
    config.cpus = args.cpus;
    config.wake_delay = Duration::from_secs_f64(args.wake_delay);
    if let (Some(net), Some(bridge)) = (&args.vm_net, &args.vm_bridge) {
        config.vm_net =
            Some(drover_agent::vms::tap::VmNet::parse(net, bridge).map_err(anyhow::Error::msg)?);
    }
    let memory = args
        .memory
        .as_deref()
        .map(|m| Typed::size("--memory", m))
        .transpose()?;
    config.memory_bytes = memory.as_ref().map(Typed::value);
    // The library checks its config too; here the error can name the flag and the text.
    config.validate().map_err(|e| {
        let typed = match &e {
            AgentError::Setting {
                setting: "memory_bytes",
                ..
            } => memory.as_ref(),
            AgentError::Setting {
                setting: "link_bps",
                ..
            } => link.as_ref(),
            _ => None,
        };
        match (&e, typed) {
            (AgentError::Setting { expected, .. }, Some(t)) => {
                t.refused(&format!("expected {expected}"))
            }
            (AgentError::Setting { setting, .. }, None) => {
                anyhow::anyhow!("{}: {e}", flag(setting))
            }
            _ => e.into(),
        }
    })?;
    config.token =
        read_token(&args.token_file).map_err(|e| anyhow::anyhow!("--token-file: {e}"))?;
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
