//! `drover lab`: a cluster of hosts on this machine (a thin shell over drover-lab).
//!
//! - `drover lab up --hosts N [--host-cpus C] [--host-memory M] [--link RATE] [--name NAME]
//!   [--no-agents] [--agent-bin PATH] [--agent-timeout SECS] [--agent-wake-delay SECS]
//!   [--wan PAIR=RATE,DELAY]... [--json]`
//! - `drover lab status [--json]`
//! - `drover lab down` (safe after a crash, and twice)
//! - `drover lab wan cut|restore|stats PAIR` and `--wan` on `up`: see [`crate::wan_cmd`]
//! - `drover lab peer [--port P] [--duration S] [--max-conns N]`: the guests' `net` flows' peer,
//!   served in the lab's peer namespace; one JSON line of per-connection figures a report

use std::path::PathBuf;
use std::time::Duration;

use crate::flags::{cores, whole, Typed};
use anyhow::{anyhow, bail, Context, Result};
use drover_core::units::{format_rate, format_size};
use drover_lab::name::{NameError, DEFAULT_LAB, MAX_HOSTS};
use drover_lab::plan::PlanError;
use drover_lab::{AgentLaunch, LabDirs, LabName, LabSpec, LabState, RealSystem};

#[derive(clap::Subcommand)]
pub enum LabCommand {
    /// Create hosts h1..hN (namespaces on a bridge, shaped links, cgroups) and their agents.
    Up {
        /// Number of hosts, 1 to 99.
        #[arg(long, allow_negative_numbers = true, value_parser = whole::<u32>(1, u64::from(MAX_HOSTS)))]
        hosts: u32,
        /// CPU cap of each host, 0.1 to 1024 cores (e.g. 0.5); uncapped if absent.
        #[arg(long, value_name = "C", allow_negative_numbers = true, value_parser = cores)]
        host_cpus: Option<f64>,
        /// Memory cap of each host, at least 234 MiB: the smallest guest plus its QEMU's
        /// overhead (e.g. 2GiB); uncapped if absent.
        #[arg(long, value_name = "M")]
        host_memory: Option<String>,
        /// Link rate of each host, each direction, 1 Mbit/s (the agents' floor) to 100 GB/s. Rates as tc reads them, in
        /// any case: 300mbit is megabits/s, but 300mbps is megaBYTES/s (tc's bps is bytes); or
        /// 100MB/s, 1Gbit/s; a bare number is bytes/s.
        #[arg(long, value_name = "RATE", default_value = "1Gbit/s")]
        link: String,
        /// Lab name, used in every resource name (a-z, 0-9, at most 8).
        #[arg(long, default_value = DEFAULT_LAB)]
        name: String,
        /// Do not start agents (network, shaping and cgroups only).
        #[arg(long)]
        no_agents: bool,
        /// Agent program, run as `<bin> agent --listen ...`; defaults to this drover.
        #[arg(long, value_name = "PATH")]
        agent_bin: Option<PathBuf>,
        /// How long to wait for each agent's health endpoint, 1 to 3600 s.
        #[arg(long, value_name = "SECS", default_value_t = 30, allow_negative_numbers = true,
              value_parser = whole::<u64>(1, 3_600))]
        agent_timeout: u64,
        /// The agents' wake delay, 0 to 3600 s: how long a host woken from standby stays
        /// `waking` (the agent's own default, 10 s, standing for a boot, when absent).
        #[arg(long, value_name = "SECS", allow_negative_numbers = true,
              value_parser = whole::<u64>(0, 3_600))]
        agent_wake_delay: Option<u64>,
        /// A slow, far link between two hosts, `hA-hB=RATE,DELAY[,jitter=JITTER]` (e.g.
        /// h1-h2=100Mbit/s,50ms,jitter=5ms): RATE each way, DELAY one way (at most 10 s),
        /// jitter at most the delay. Repeat for more pairs.
        #[arg(long, value_name = "PAIR=RATE,DELAY")]
        wan: Vec<String>,
        /// Print the lab description as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cut, restore or inspect a WAN pair's link (`--wan` on `up`).
    Wan {
        #[arg(value_enum)]
        action: crate::wan_cmd::WanAction,
        /// The pair, e.g. h1-h2.
        pair: String,
        #[arg(long, default_value = DEFAULT_LAB)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Run one WAN pair's delay line (started by `lab up --wan`).
    #[command(hide = true)]
    DelayLine { config: PathBuf },
    /// Show the lab and check its namespaces and agents.
    Status {
        #[arg(long, default_value = DEFAULT_LAB)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Serve the guests' net workloads' flows in the lab's traffic peer namespace (at its
    /// address, e.g. 198.18.0.250), printing every connection's figures (bytes each way,
    /// longest pause in what it received) as one JSON line per report, until --duration.
    Peer {
        #[arg(long, default_value = DEFAULT_LAB)]
        name: String,
        /// TCP port, 1 to 65535.
        #[arg(long, default_value_t = drover_guest::spec::DEFAULT_NET_PORT,
              value_parser = whole::<u16>(1, 65_535))]
        port: u16,
        /// Seconds to serve, 1 to 86400.
        #[arg(long, default_value_t = 600, value_parser = whole::<u64>(1, 86_400))]
        duration: u64,
        /// Connections served at once, 1 to 64.
        #[arg(long, default_value_t = 16,
              value_parser = whole::<usize>(1, drover_guest::peer::MAX_CONNS as u64))]
        max_conns: usize,
        /// Milliseconds between reports, 10 to 60000.
        #[arg(long, default_value_t = 100, value_parser = whole::<u64>(10, 60_000))]
        report_ms: u64,
        /// Serve in this namespace (set when `drover lab peer` re-runs itself inside the peer
        /// namespace).
        #[arg(long, hide = true)]
        serve_here: bool,
    },
    /// Remove everything the lab made (namespaces, links, cgroups and their processes).
    Down {
        #[arg(long, default_value = DEFAULT_LAB)]
        name: String,
        #[arg(long)]
        json: bool,
    },
}

/// Serves flows at `address:port` in this namespace, one JSON line a report on stdout.
fn serve_peer(
    address: std::net::Ipv4Addr,
    port: u16,
    cfg: drover_guest::peer::PeerConfig,
) -> Result<()> {
    use std::io::Write;
    let listener = std::net::TcpListener::bind((address, port))
        .with_context(|| format!("listening on {address}:{port}"))?;
    let start = std::time::Instant::now();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut out = std::io::stdout().lock();
    drover_guest::peer::serve(&listener, cfg, &stop, &mut |conns| {
        let conns: Vec<String> = conns.iter().map(|c| c.to_json()).collect();
        let _ = writeln!(
            out,
            "{{\"t_ms\":{},\"conns\":[{}]}}",
            start.elapsed().as_millis(),
            conns.join(",")
        );
        let _ = out.flush();
    })
    .context("serving flows")?;
    Ok(())
}

pub fn run(cmd: LabCommand) -> Result<()> {
    let dirs = LabDirs::from_env();
    let mut sys = RealSystem;
    match cmd {
        LabCommand::Up {
            hosts,
            host_cpus,
            host_memory,
            link,
            name,
            no_agents,
            agent_bin,
            agent_timeout,
            agent_wake_delay,
            wan,
            json,
        } => {
            let link = Typed::rate("--link", &link)?;
            let wan = crate::wan_cmd::parse_wan_flags(&wan)?;
            let memory = host_memory
                .as_deref()
                .map(|m| Typed::size("--host-memory", m))
                .transpose()?;
            let agent = if no_agents {
                None
            } else {
                let launch = agent_launch(agent_bin, agent_timeout)?;
                Some(match agent_wake_delay {
                    Some(secs) => launch.wake_delay(secs),
                    None => launch,
                })
            };
            let memory_bytes = memory.as_ref().map(Typed::value);
            let spec = lab_spec(&name, hosts, host_cpus, memory_bytes, link.value(), agent)
                .and_then(|s| match wan.is_empty() {
                    true => Ok(s),
                    false => {
                        let s = s.wan(wan, crate::wan_cmd::delay_line_argv().unwrap_or_default());
                        s.validate().map(|()| s)
                    }
                })
                .map_err(|e| match (&e, &memory) {
                    (PlanError::Tbf(t), _) => link.refused(&t.expected()),
                    (PlanError::Memory(_), Some(m)) => m.refused(&e.expected()),
                    _ => anyhow!("{}: {e}", spec_flag(&e)),
                })?;
            let layout = drover_lab::detect_layout(&mut sys)?;
            let state = drover_lab::up(&mut sys, &dirs, &spec, &layout)?;
            print_state(&state, json);
        }
        LabCommand::Wan {
            action,
            pair,
            name,
            json,
        } => crate::wan_cmd::run_wan(&name, action, &pair, json)?,
        LabCommand::DelayLine { config } => crate::wan_cmd::run_delay_line(&config)?,
        LabCommand::Status { name, json } => {
            let name = LabName::new(&name)?;
            let st = drover_lab::status(&mut sys, &dirs, &name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print_state(&st.state, false);
                for h in &st.hosts {
                    let agent = match (h.agent_running, h.agent_healthy) {
                        (_, Some(true)) => "agent healthy",
                        (Some(true), _) => "agent running, not answering",
                        (Some(false), _) => "agent not running",
                        _ => "no agent",
                    };
                    let ns = if h.netns_present {
                        "netns present"
                    } else {
                        "NETNS MISSING"
                    };
                    println!("{:<4} {ns}, {agent}", h.name);
                }
                for w in &st.wan {
                    println!("wan  {}: {}", w.pair, crate::wan_cmd::status_line(w));
                }
                match &st.manager {
                    Some(m) if m.running => println!("manager: {} (pid {})", m.url, m.pid),
                    Some(m) => println!(
                        "manager: none running (a record names pid {} at {}, which is gone)",
                        m.pid, m.url
                    ),
                    None => println!("manager: none (start one with `drover manager --lab`)"),
                }
            }
        }
        LabCommand::Peer {
            name,
            port,
            duration,
            max_conns,
            report_ms,
            serve_here,
        } => {
            let state = drover_lab::load_state(&name)?;
            let peer = state.peer.ok_or_else(|| {
                anyhow!(
                    "lab '{name}' has no traffic peer (made by an older drover: lab down, then up)"
                )
            })?;
            let cfg = drover_guest::peer::PeerConfig {
                max_conns,
                duration: Duration::from_secs(duration),
                report_every: Duration::from_millis(report_ms),
            };
            if serve_here {
                serve_peer(peer.address, port, cfg)?;
            } else {
                let exe = std::env::current_exe().context("finding the drover binary")?;
                let status = std::process::Command::new("ip")
                    .args(["netns", "exec", &peer.netns])
                    .arg(exe)
                    .args(["lab", "peer", "--name", &name, "--serve-here"])
                    .args([
                        "--port",
                        &port.to_string(),
                        "--duration",
                        &duration.to_string(),
                    ])
                    .args(["--max-conns", &max_conns.to_string()])
                    .args(["--report-ms", &report_ms.to_string()])
                    .status()
                    .context("running ip netns exec")?;
                if !status.success() {
                    bail!("the traffic peer in {} ended with {status}", peer.netns);
                }
            }
        }
        LabCommand::Down { name, json } => {
            let name = LabName::new(&name)?;
            let layout = drover_lab::detect_layout(&mut sys)?;
            let report = drover_lab::down(&mut sys, &dirs, &name, &layout)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if report.is_empty() {
                println!("lab '{name}': nothing to remove");
            } else {
                println!(
                    "lab '{name}' removed: {} namespace(s), {} link(s), {} cgroup dir(s){}",
                    report.namespaces.len(),
                    report.links.len(),
                    report.cgroup_dirs.len(),
                    report
                        .lab_dir
                        .map(|d| format!(", {}", d.display()))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// The lab to make, checked whole (caps, counts, rates) before anything is made.
fn lab_spec(
    name: &str,
    hosts: u32,
    cpus: Option<f64>,
    memory: Option<u64>,
    link: u64,
    agent: Option<AgentLaunch>,
) -> Result<LabSpec, PlanError> {
    let mut spec = LabSpec::new(name, hosts)?.link_rate(link)?;
    spec.cpus = cpus;
    spec.memory_bytes = memory;
    spec.agent = agent;
    spec.validate()?;
    Ok(spec)
}

/// The flag a lab spec error is about.
fn spec_flag(e: &PlanError) -> &'static str {
    match e {
        PlanError::Name(NameError::BadHostCount(_)) => "--hosts",
        PlanError::Name(NameError::BadLabName(_)) => "--name",
        PlanError::Tbf(_) => "--link",
        PlanError::Cpus(_) => "--host-cpus",
        PlanError::Memory(_) => "--host-memory",
        PlanError::HealthTimeout => "--agent-timeout",
        PlanError::Cgroup(_) => "lab up",
        PlanError::Wan(_) => "--wan",
    }
}

/// The agent command, checked before any resource is made so a drover without `agent` fails
/// fast instead of after a health-check timeout.
fn agent_launch(bin: Option<PathBuf>, timeout_secs: u64) -> Result<AgentLaunch> {
    let bin = match bin {
        Some(b) => b,
        None => std::env::current_exe().context("locating the drover binary for the agents")?,
    };
    let ok = std::process::Command::new(&bin)
        .args(["agent", "--help"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!("`{} agent --help` failed: this binary cannot run agents; pass --agent-bin or --no-agents", bin.display());
    }
    Ok(AgentLaunch::drover(&bin, Duration::from_secs(timeout_secs)))
}

fn print_state(state: &LabState, json: bool) {
    if json {
        println!("{}", state.to_json());
        return;
    }
    println!(
        "lab '{}': {} host(s) on {} ({}), links {} each way, cgroup {:?}",
        state.name,
        state.hosts.len(),
        state.bridge,
        state.subnet,
        format_rate(state.link.rate_bytes_per_sec),
        state.cgroup_version,
    );
    println!("token: {}", state.token_file.display());
    println!(
        "state: {}",
        state.lab_dir.join(drover_lab::state::STATE_FILE).display()
    );
    println!(
        "{:<4} {:<13} {:<14} {:>5} {:>8}  AGENT",
        "HOST", "ADDRESS", "NETNS", "CPUS", "MEMORY"
    );
    for h in &state.hosts {
        let cpus = h.cpus.map(|c| format!("{c}")).unwrap_or_else(|| "-".into());
        let mem = h
            .memory_bytes
            .map(format_size)
            .unwrap_or_else(|| "-".into());
        let agent = match (&h.agent_url, h.agent_pid) {
            (Some(url), Some(pid)) => format!("{url} (pid {pid})"),
            (Some(url), None) => url.clone(),
            _ => "-".into(),
        };
        println!(
            "{:<4} {:<13} {:<14} {:>5} {:>8}  {agent}",
            h.name, h.address, h.netns, cpus, mem
        );
    }
    crate::wan_cmd::print_wan(state);
}
