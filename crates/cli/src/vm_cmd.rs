//! `drover vm create|list|delete|migrate|resume|wan-plan`: VMs on agents without a manager. A host is named
//! by lab host (`--host h1`, resolved through the lab's state file, which also gives the token)
//! or by agent URL (`--agent http://...` with `--token-file`).

use crate::flags::{parsed, whole, Typed, VmFlags};
use crate::migration_flags::MigrationFlags;
use anyhow::{anyhow, bail, Context};
use drover_api::token::read_token;
use drover_api::vm::VmConfigError;
use drover_api::wan;
use drover_api::{
    AgentClient, AgentUrl, MigrationRequest, MigrationState, NicConfig, VmConfig, VmStatus, VmView,
};
use drover_core::units::format_size;
use drover_guest::fit::{Setting, MAX_VCPUS};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Clone)]
pub struct Target {
    /// Lab host (h1, h2, ...).
    #[arg(long, conflicts_with = "agent")]
    host: Option<String>,
    /// Agent URL, e.g. http://198.18.0.2:7700.
    #[arg(long)]
    agent: Option<String>,
    /// Lab whose hosts --host and --to name.
    #[arg(long, default_value = drover_lab::name::DEFAULT_LAB)]
    lab: String,
    /// Token file (default: the lab's; with --agent, $DROVER_TOKEN_FILE).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum VmCommand {
    /// Create and start a VM.
    Create {
        name: String,
        /// vCPUs, 1 to 64.
        #[arg(long, default_value_t = 1, allow_negative_numbers = true,
              value_parser = whole::<u32>(1, u64::from(MAX_VCPUS)))]
        vcpus: u32,
        /// Guest memory, 128 MiB to 1 TiB, e.g. 256M (binary), 500MB (decimal).
        #[arg(long, default_value = "256M")]
        memory: String,
        /// memtouch:wss=SIZE[,rate=N|max][,pattern=random|seq], cpu:demand=PCT,
        /// disk:wss=SIZE,rate=N|max[,pattern=random|seq][,read=PCT],
        /// net:dir=in|out|both,rate=RATE,peer=IPV4[,port=P], idle, or memory and disk at
        /// once: memtouch:wss=SIZE,rate=N[,...]+disk:wss=SIZE,rate=N[,...] (both rates paced).
        #[arg(long, default_value = "idle")]
        workload: String,
        /// qcow2 disk image: a file name in the agent's storage directory (<state>/disks/).
        /// With --disk-size or --disk-base, the name of the disk the agent creates there
        /// (default NAME.qcow2).
        #[arg(long)]
        disk: Option<String>,
        /// Have the agent create the VM's qcow2 disk of this size, 1 MiB to 16 TiB, e.g. 256M
        /// (binary), 1GB (decimal); deleting the VM deletes it.
        #[arg(long, value_name = "SIZE")]
        disk_size: Option<String>,
        /// Have the agent create the VM's disk as a qcow2 overlay of this image in its
        /// storage directory (the base is shared, never changed or deleted).
        #[arg(long, value_name = "NAME")]
        disk_base: Option<String>,
        /// Give the VM a NIC on the host's VM network with this IPv4 address (inside the
        /// agent's --vm-net; the MAC and the host's tap are derived from it, so they stay the
        /// same across migrations).
        #[arg(long, value_name = "IPV4")]
        address: Option<String>,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// List the VMs on a host.
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Stop and delete a VM.
    Delete {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Migrate a VM (found on whichever lab host runs it, or on --host/--agent) to another host.
    Migrate {
        name: String,
        /// Destination: lab host name or agent URL.
        #[arg(long)]
        to: String,
        /// precopy, postcopy, hybrid or auto.
        #[arg(long, default_value = "auto")]
        technique: String,
        #[command(flatten)]
        migration: MigrationFlags,
        /// Skip the ~13 s of workload measurement for the record's throughput windows.
        #[arg(long)]
        no_measure: bool,
        #[command(flatten)]
        target: Target,
        /// Print the migration record as JSON (its `result` holds the result, once there is
        /// one), whether the migration succeeded or not.
        #[arg(long)]
        json: bool,
    },
    /// Resume a post-copy of VM NAME left paused (its link was cut and did not return within
    /// its resume window): the source's agent resumes it once the destination answers again
    /// and completes it; waits for the outcome.
    Resume {
        name: String,
        /// Most seconds to wait for the outcome (the agent keeps trying for its resume window,
        /// default 600 s, whatever this says).
        #[arg(long, default_value_t = 660, allow_negative_numbers = true,
              value_parser = whole::<u64>(1, 86_400))]
        wait: u64,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Give up a post-copy of VM NAME whose destination QEMU died after the switch (the guest
    /// is lost): the source's QEMU is stopped, every disk file kept, the migration recorded
    /// `abandoned` (refused while the destination may still hold the guest).
    Abandon {
        name: String,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Profile a VM with a disk for a few seconds and show its WAN fraction plan: how much of
    /// its memory and disk to copy ahead over a link before post-copying the rest, with the
    /// predicted restoration agility, downtime and total time (nothing migrates).
    WanPlan {
        name: String,
        /// The lab host the VM would go to: the link's rate and round trip are the lab's own
        /// (its `--wan` pair with that host, else its bridge); --link and --rtt-ms override them.
        #[arg(long, conflicts_with = "agent")]
        to: Option<String>,
        /// The link's usable rate, 1Mbit/s to 100Gbit/s, e.g. 100Mbit/s or 12.5MB/s (needed
        /// without --to).
        #[arg(long, required_unless_present = "to", allow_hyphen_values = true)]
        link: Option<String>,
        /// The link's round-trip time, ms (0 to 10000; needed without --to).
        #[arg(long, required_unless_present = "to", allow_negative_numbers = true,
              value_parser = whole::<u32>(0, u64::from(wan::MAX_RTT_MS)))]
        rtt_ms: Option<u32>,
        /// Most seconds the whole migration may take (1 to 86400); default: no budget.
        #[arg(long, allow_negative_numbers = true, value_parser = whole::<u32>(1, u64::from(wan::MAX_BUDGET_S)))]
        budget: Option<u32>,
        /// Seconds of profiling (1 to 20; the profile takes twice as long).
        #[arg(long, default_value_t = wan::DEFAULT_WINDOW_S, allow_negative_numbers = true,
              value_parser = whole::<u32>(1, u64::from(wan::MAX_WINDOW_S)))]
        window: u32,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
}

/// An agent and how to reach every host of the lab (for searches).
struct Resolved {
    client: Option<AgentClient>,
    lab_agents: Vec<(String, AgentClient)>,
}

/// A client of the agent at `url`, which `name` gave (a flag, or the lab's state file).
fn client(name: &str, url: &str, token: &str) -> anyhow::Result<AgentClient> {
    let url = AgentUrl::parse(url).map_err(|e| anyhow!(e.named(name)))?;
    Ok(AgentClient::new(url, token))
}

fn resolve(t: &Target) -> anyhow::Result<Resolved> {
    if let Some(url) = &t.agent {
        let path = t
            .token_file
            .clone()
            .or_else(|| std::env::var_os("DROVER_TOKEN_FILE").map(PathBuf::from))
            .context("--agent needs --token-file (or DROVER_TOKEN_FILE)")?;
        let token = read_token(&path)?;
        return Ok(Resolved {
            client: Some(client("--agent", url, &token)?),
            lab_agents: vec![],
        });
    }
    let state = drover_lab::load_state(&t.lab).with_context(|| format!("--lab {}", t.lab))?;
    let token = read_token(t.token_file.as_ref().unwrap_or(&state.token_file))?;
    let lab_agents = state
        .hosts
        .iter()
        .filter_map(|h| {
            h.agent_url.as_ref().map(|u| {
                let name = format!("the agent URL of lab host {}", h.name);
                Ok((h.name.clone(), client(&name, u, &token)?))
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let client = match &t.host {
        None => None,
        Some(h) => {
            let host = drover_lab::resolve_host(&state, h)
                .with_context(|| format!("--host {h}: no such host in lab '{}'", t.lab))?;
            let url = host
                .agent_url
                .as_ref()
                .with_context(|| format!("host '{h}' runs no agent"))?;
            Some(client(
                &format!("the agent URL of lab host {h}"),
                url,
                &token,
            )?)
        }
    };
    Ok(Resolved { client, lab_agents })
}

fn one(r: &Resolved) -> anyhow::Result<&AgentClient> {
    r.client
        .as_ref()
        .context("name a host with --host or --agent")
}

/// The agent URL for `--to`: an agent URL as is, else a lab host.
fn destination(to: &str, t: &Target) -> anyhow::Result<AgentUrl> {
    if to.contains("://") || to.contains(':') {
        return AgentUrl::parse(to).map_err(|e| anyhow!(e.named("--to")));
    }
    if to.trim().is_empty() {
        bail!("--to: expected a lab host (h1, h2, ...) or an agent URL, got nothing");
    }
    if t.agent.is_some() {
        bail!(
            "--to {to}: with --agent, --to takes the destination agent's URL (e.g. \
             http://198.18.0.12:7700); a lab host name needs the lab (--host and --lab)"
        );
    }
    let state = drover_lab::load_state(&t.lab).with_context(|| format!("--lab {}", t.lab))?;
    let host = drover_lab::resolve_host(&state, to)
        .with_context(|| format!("--to {to}: no such host in lab '{}'", t.lab))?;
    let url = host
        .agent_url
        .as_deref()
        .with_context(|| format!("--to {to}: the host runs no agent"))?;
    AgentUrl::parse(url).map_err(|e| anyhow!(e.named(&format!("the agent URL of lab host {to}"))))
}

/// `vm create`'s disk flags as typed.
#[derive(Debug, Default)]
struct DiskFlags {
    name: Option<String>,
    size: Option<String>,
    base: Option<String>,
}

/// The VM `vm create`'s flags describe, checked by the API's own rules before anything is
/// sent, each refusal naming the flag and quoting it as typed.
fn vm_config(
    name: String,
    vcpus: u32,
    memory: &str,
    workload: String,
    disk: DiskFlags,
    nic: Option<NicConfig>,
) -> anyhow::Result<VmConfig> {
    let memory = Typed::size_for("--memory", memory, Setting::Memory)?;
    let disk_size_bytes = match &disk.size {
        Some(text) => {
            let size = Typed::size_for("--disk-size", text, Setting::DiskSize)?;
            drover_guest::fit::check_disk_size(size.value())
                .map_err(|e| anyhow!(e.message(size.flag, &size.text, size.note().as_deref())))?;
            Some(size.value())
        }
        None => None,
    };
    let config = VmConfig {
        name,
        vcpus,
        memory_bytes: memory.value(),
        workload,
        disk: disk.name,
        disk_size_bytes,
        disk_base: disk.base,
        nic,
    };
    config.validate().map_err(|e| match e {
        VmConfigError::Fit(f) => VmFlags {
            vcpus: Some(vcpus.to_string()),
            memory: &memory,
            workload: &config.workload,
        }
        .refused(&f),
        VmConfigError::Shape(s) => {
            let flag = match s.field {
                "name" => "NAME",
                "workload" => "--workload",
                "disk" => "--disk",
                "disk_base" => "--disk-base",
                "nic.address" => "--address",
                other => other,
            };
            anyhow!(s.named(flag))
        }
    })?;
    Ok(config)
}

/// Finds the agent that runs `name` (the named one, else every lab host's).
async fn find_vm(r: &Resolved, name: &str) -> anyhow::Result<AgentClient> {
    Ok(find_vm_at(r, name).await?.1)
}

/// [`find_vm`], with the lab host it runs on (None when the agent was named, not searched).
async fn find_vm_at(r: &Resolved, name: &str) -> anyhow::Result<(Option<String>, AgentClient)> {
    if let Some(c) = &r.client {
        return Ok((None, c.clone()));
    }
    let mut moved_from = None;
    for (host, c) in &r.lab_agents {
        match c.get_vm(name).await {
            Ok(v) if v.status == VmStatus::Running => return Ok((Some(host.clone()), c.clone())),
            Ok(v) if v.status == VmStatus::Moved => moved_from = Some(host.clone()),
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {}
            Err(e) => eprintln!("warning: {host}: {e}"),
        }
    }
    match moved_from {
        Some(host) => bail!(
            "VM '{name}' is split: its post-copy from {host} has not completed (the guest runs \
             on the destination, the rest of its memory is still on {host}); if it was left \
             paused, `drover vm resume {name}` resumes it"
        ),
        None => bail!("no lab host runs a VM named '{name}'"),
    }
}

/// The flags of a `vm migrate` that goes where a wan-plan looked: the lab, unless it is the
/// default or an agent URL was given, and `--to` as given (`HOST` when the plan had no
/// destination: `--link`/`--rtt-ms` only).
fn migrate_flags(target: &Target, to: Option<&str>) -> String {
    let lab = if target.agent.is_none() && target.lab != drover_lab::name::DEFAULT_LAB {
        format!("--lab {} ", target.lab)
    } else {
        String::new()
    };
    format!("{lab}--to {}", to.unwrap_or("HOST"))
}

/// The path from VM `name`'s lab host `from` (as found, or as `--host` named it) to lab host
/// `to` in lab `lab`.
fn lab_path_to(
    lab: &str,
    from: Option<&str>,
    name: &str,
    to: &str,
) -> anyhow::Result<crate::wan_plan_cmd::LabPath> {
    let state = drover_lab::load_state(lab).with_context(|| format!("--lab {lab}"))?;
    let to_host = drover_lab::resolve_host(&state, to)
        .with_context(|| format!("--to {to}: no such host in lab '{lab}'"))?;
    let from = from
        .and_then(|h| drover_lab::resolve_host(&state, h))
        .with_context(|| format!("--to {to}: which host of lab '{lab}' runs VM '{name}'?"))?;
    if from.name == to_host.name {
        bail!("--to {to}: VM '{name}' already runs there");
    }
    let wans: Vec<_> = state.wan.iter().map(|w| w.link).collect();
    Ok(crate::wan_plan_cmd::lab_path(
        &state.link,
        &wans,
        &from.name,
        &to_host.name,
    ))
}

/// The agent holding VM `name`'s post-copy left paused, and that migration's id: the named
/// agent, else the lab host whose records have one (the latest). When none has, the error
/// says whether any of them knows the VM at all (runs it, or has a migration of it).
async fn find_paused(r: &Resolved, name: &str) -> anyhow::Result<(AgentClient, String)> {
    find_split(r, name, &[MigrationState::Paused]).await
}

/// The agent holding a post-copy of VM `name` that ended in one of `states` after the switch,
/// and its id.
async fn find_split(
    r: &Resolved,
    name: &str,
    states: &[MigrationState],
) -> anyhow::Result<(AgentClient, String)> {
    let named = r
        .client
        .iter()
        .map(|c| ("the agent".to_string(), c.clone()));
    let lab = r.lab_agents.iter().cloned();
    let mut known = false;
    for (host, c) in named.chain(lab) {
        match c.migrations().await {
            Ok(records) => {
                known |= records.iter().any(|m| m.vm == name);
                let paused = records
                    .into_iter()
                    .rev()
                    .find(|m| m.vm == name && states.contains(&m.state) && m.vm_on_destination);
                if let Some(m) = paused {
                    return Ok((c, m.id));
                }
            }
            Err(e) => eprintln!("warning: {host}: {e}"),
        }
        match c.get_vm(name).await {
            Ok(_) => known = true,
            Err(e) if e.status() == Some(404) => {}
            Err(e) => eprintln!("warning: {host}: {e}"),
        }
    }
    bail!("{}", nothing_paused(name, known, r.client.is_some()))
}

/// Why there is nothing to resume: the VM is unknown to every agent asked (`one_agent`: the
/// one named by `--agent`), or none has a post-copy of it left paused.
fn nothing_paused(name: &str, known: bool, one_agent: bool) -> String {
    match (known, one_agent) {
        (false, true) => {
            format!("no VM named '{name}': the agent has neither it nor a migration of it")
        }
        (false, false) => format!("no VM named '{name}': no lab host has it or a migration of it"),
        (true, _) => format!("no agent has a post-copy of VM '{name}' left paused"),
    }
}

/// Refuses a VM whose name or NIC address another lab host already has: each agent checks
/// its own VMs only, and two guests with one address on the lab's one L2 segment would take
/// each other's traffic. A host that does not answer is skipped with a warning.
async fn unique_in_lab(r: &Resolved, config: &VmConfig) -> anyhow::Result<()> {
    for (host, agent) in &r.lab_agents {
        match agent.list_vms().await {
            Ok(vms) => {
                if let Some(why) = clash(config, host, &vms) {
                    bail!(why);
                }
            }
            Err(e) => eprintln!("warning: {host}: {e} (not checked for a duplicate)"),
        }
    }
    Ok(())
}

/// Why `config` clashes with the VMs `host` runs (same name, or same NIC address), if it does.
fn clash(config: &VmConfig, host: &str, vms: &[VmView]) -> Option<String> {
    if vms.iter().any(|v| v.name == config.name) {
        return Some(format!(
            "a VM named '{}' exists on lab host {host} already",
            config.name
        ));
    }
    let address = &config.nic.as_ref()?.address;
    // Compared as addresses, so another spelling of the same one is caught too.
    let same = |other: &str| match (
        address.parse::<std::net::Ipv4Addr>(),
        other.parse::<std::net::Ipv4Addr>(),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => address == other,
    };
    vms.iter()
        .find(|v| v.nic.as_ref().is_some_and(|n| same(&n.address)))
        .map(|v| {
            format!(
                "--address {address}: VM '{}' on lab host {host} has it already",
                v.name
            )
        })
}

fn print_table(vms: &[VmView]) {
    println!(
        "{:<20} {:<9} {:>5} {:>9} {:>8} {:>12} {:>6}  workload",
        "name", "status", "vcpus", "memory", "pid", "ops/s", "integ"
    );
    for v in vms {
        println!(
            "{:<20} {:<9} {:>5} {:>9} {:>8} {:>12.0} {:>6}  {}",
            v.name,
            format!("{:?}", v.status).to_lowercase(),
            v.vcpus,
            format_size(v.memory_bytes),
            v.pid,
            v.workload_report.ops_per_s,
            v.workload_report.integrity_errors,
            v.workload
        );
    }
}

pub fn run(cmd: VmCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: VmCommand) -> anyhow::Result<()> {
    match cmd {
        VmCommand::Create {
            name,
            vcpus,
            memory,
            workload,
            disk,
            disk_size,
            disk_base,
            address,
            target,
            json: as_json,
        } => {
            let nic = address.map(|address| NicConfig { address });
            let disk = DiskFlags {
                name: disk,
                size: disk_size,
                base: disk_base,
            };
            let config = vm_config(name, vcpus, &memory, workload, disk, nic)?;
            let r = resolve(&target)?;
            let agent = one(&r)?;
            unique_in_lab(&r, &config).await?;
            let vm = agent.create_vm(&config).await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&vm)?);
            } else {
                println!("created {} (pid {})", vm.name, vm.pid);
            }
        }
        VmCommand::List {
            target,
            json: as_json,
        } => {
            let r = resolve(&target)?;
            let vms = one(&r)?.list_vms().await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&vms)?);
            } else {
                print_table(&vms);
            }
        }
        VmCommand::Delete { name, target } => {
            let r = resolve(&target)?;
            one(&r)?.delete_vm(&name).await?;
            println!("deleted {name}");
        }
        VmCommand::Migrate {
            name,
            to,
            technique,
            migration,
            no_measure,
            target,
            json: as_json,
        } => {
            let knobs = migration.knobs()?;
            let technique = parsed("--technique", &technique)?;
            let dest = destination(&to, &target)?;
            let r = resolve(&target)?;
            let source = find_vm(&r, &name).await?;
            if source.base() == &dest {
                bail!("VM '{name}' already runs on {to} ({dest}): choose another destination");
            }
            let request = MigrationRequest {
                id: None,
                to: dest,
                technique,
                measure: !no_measure,
                knobs: knobs.clone(),
            };
            let started = source.migrate(&name, &request).await?;
            let timeout = Duration::from_secs(knobs.deadline_s + 600);
            let done = source.wait_migration(&started.id, timeout).await?;
            // One shape whatever happened: the record, whose `result` is there once the
            // migration produced one (a failure before that has none, and says why).
            if as_json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!(
                    "migration {}: {:?}{}",
                    done.id,
                    done.state,
                    done.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                );
            }
            if done.state == MigrationState::Paused {
                bail!(
                    "migration {} ended paused: the guest runs on the destination and the rest of \
                     it (memory, or disk blocks) is kept on the source; nothing is lost. The \
                     source's agent resumes a paused memory post-copy by itself once the \
                     destination answers again (within --resume-window); `drover vm resume \
                     {name}` resumes it now, `drover vm list` shows where it stands",
                    done.id
                );
            }
            if done.state != MigrationState::Completed {
                bail!("migration {} ended {:?}", done.id, done.state);
            }
        }
        VmCommand::Resume {
            name,
            wait,
            target,
            json: as_json,
        } => {
            let r = resolve(&target)?;
            let (agent, id) = find_paused(&r, &name).await?;
            let seen = agent.migration(&id).await?.notes.len();
            agent.resume_migration(&id).await?;
            eprintln!(
                "resuming migration {id} of {name} (waiting up to {wait} s; the agent's notes \
                 follow)"
            );
            let wait = Duration::from_secs(wait);
            let done = crate::resume_watch::wait_resumed(&agent, &id, seen, wait).await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!("migration {}: {:?}", done.id, done.state);
                for note in done.notes.iter().rev().take(2).rev() {
                    println!("  {note}");
                }
            }
            if done.state != MigrationState::Completed {
                bail!("migration {id} is still {:?}", done.state);
            }
        }
        VmCommand::Abandon {
            name,
            target,
            json: as_json,
        } => {
            let r = resolve(&target)?;
            let split = [MigrationState::Paused, MigrationState::Failed];
            let (agent, id) = find_split(&r, &name, &split).await?;
            let done = agent.abandon_migration(&id).await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!("migration {}: {:?}", done.id, done.state);
                println!("  {}", done.error.as_deref().unwrap_or_default());
            }
        }
        VmCommand::WanPlan {
            name,
            to,
            link,
            rtt_ms,
            budget,
            window,
            target,
            json: as_json,
        } => {
            let link = link
                .as_deref()
                .map(crate::wan_plan_cmd::link_flag)
                .transpose()?;
            let r = resolve(&target)?;
            let (host, agent) = find_vm_at(&r, &name).await?;
            let (link, rtt_ms) = match &to {
                None => (link, rtt_ms),
                Some(to) => {
                    let from = host.or_else(|| target.host.clone());
                    let path = lab_path_to(&target.lab, from.as_deref(), &name, to)?;
                    if !as_json {
                        println!("link: {}", path.what);
                    }
                    (
                        link.or(Some(path.rate_bytes_per_s)),
                        rtt_ms.or(Some(path.rtt_ms)),
                    )
                }
            };
            let (Some(link), Some(rtt_ms)) = (link, rtt_ms) else {
                bail!("--link and --rtt-ms are needed without --to");
            };
            let request = crate::wan_plan_cmd::request_at(link, rtt_ms, budget, window);
            let whither = migrate_flags(&target, to.as_deref());
            let plan = agent.wan_plan(&name, &request).await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                crate::wan_plan_cmd::print(&plan, &whither);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
