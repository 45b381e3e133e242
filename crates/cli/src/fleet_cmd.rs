//! `drover host list|drain|undrain|wake`, `drover plan list|show|approve|cancel`,
//! `drover migration list|show` and `drover manager status`: the running manager's API, addressed by `--manager URL` (or
//! `$DROVER_MANAGER`, else the lab's manager (`drover manager --lab`) as the lab records it,
//! else the manager's default listen address) with `--token-file` (or `$DROVER_TOKEN_FILE`,
//! else the lab's token). Thin: parse, call, print (a table, or the API's JSON with `--json`).

use crate::numfmt::fixed;
use anyhow::{anyhow, Context};
use drover_api::AgentUrl;
use drover_core::control::{Move, Plan};
use drover_manager::api::client::{HostCommand, ManagerClient, PlanCommand};
use drover_manager::api::DEFAULT_LISTEN;
use drover_manager::store::{MigrationQuery, MigrationRow, PlanQuery};
use serde::Serialize;
use std::path::PathBuf;

/// Where the manager is and how to authenticate.
#[derive(clap::Args, Clone)]
pub struct ManagerTarget {
    /// The manager's API, e.g. http://127.0.0.1:7800 (default: $DROVER_MANAGER, else
    /// http://127.0.0.1:7800).
    #[arg(long)]
    manager: Option<String>,
    /// The manager API's token file (default: $DROVER_TOKEN_FILE, else the lab's).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The lab whose manager (`drover manager --lab`) to ask when no URL is given.
    #[arg(long, default_value = drover_lab::name::DEFAULT_LAB)]
    lab: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
pub enum HostCmd {
    /// Every host as the manager's last look saw it.
    List(ManagerTarget),
    /// Evacuate a host and keep it empty until `undrain`.
    Drain(HostArgs),
    /// Let a drained host take VMs again.
    Undrain(HostArgs),
    /// Wake a host from standby.
    Wake(HostArgs),
}

#[derive(clap::Args)]
pub struct HostArgs {
    /// The host's name in the manager's configuration.
    name: String,
    #[command(flatten)]
    target: ManagerTarget,
}

#[derive(clap::Subcommand)]
pub enum PlanCmd {
    /// Plans, newest first.
    List {
        /// Only plans in this state (proposed, approved, running, done, failed, cancelled, ...).
        #[arg(long)]
        state: Option<String>,
        /// At most this many (1 to 10000; default the API's 100).
        #[arg(long, value_parser = crate::flags::whole::<u32>(1, 10_000))]
        limit: Option<u32>,
        #[command(flatten)]
        target: ManagerTarget,
    },
    /// One plan with its explanation: why this host, VM, destination and technique.
    Show(PlanArgs),
    /// Let a proposed plan run (recommend mode).
    Approve(PlanArgs),
    /// Cancel a plan: its moves not yet started are dropped.
    Cancel(PlanArgs),
}

#[derive(clap::Args)]
pub struct PlanArgs {
    /// The plan's id.
    id: String,
    #[command(flatten)]
    target: ManagerTarget,
}

#[derive(clap::Subcommand)]
pub enum MigrationCmd {
    /// Migration results, newest first: each move's route, state and what its source agent
    /// recorded (technique, total time, downtime).
    List {
        /// Only this VM's migrations.
        #[arg(long)]
        vm: Option<String>,
        /// At most this many (1 to 10000; default the API's 100).
        #[arg(long, value_parser = crate::flags::whole::<u32>(1, 10_000))]
        limit: Option<u32>,
        #[command(flatten)]
        target: ManagerTarget,
    },
    /// One migration's result (by its move's id), with the agent's whole record.
    Show {
        /// The move's id (as `drover plan show` and `migration list` print it).
        id: String,
        #[command(flatten)]
        target: ManagerTarget,
    },
}

fn client(t: &ManagerTarget) -> anyhow::Result<ManagerClient> {
    let (flag, url) = match (&t.manager, std::env::var("DROVER_MANAGER")) {
        (Some(u), _) => ("--manager".to_string(), u.clone()),
        (None, Ok(u)) => ("$DROVER_MANAGER".to_string(), u),
        (None, Err(_)) => match lab_manager(&t.lab)? {
            Some(u) => (format!("the manager recorded in lab '{}'", t.lab), u),
            None => (
                "the default manager address".to_string(),
                format!("http://{DEFAULT_LISTEN}"),
            ),
        },
    };
    let url = AgentUrl::parse(&url).map_err(|e| anyhow!(e.named(&flag)))?;
    // The lab is read only when no flag or variable names the token.
    let path = t
        .token_file
        .clone()
        .or_else(|| std::env::var_os("DROVER_TOKEN_FILE").map(PathBuf::from))
        .or_else(|| drover_lab::load_state(&t.lab).ok().map(|s| s.token_file))
        .context(
            "the manager needs a token: --token-file FILE (or $DROVER_TOKEN_FILE, or a lab that is up)",
        )?;
    let token = drover_api::token::read_token(&path)?;
    Ok(ManagerClient::new(url, &token))
}

/// The URL `drover manager --lab` recorded for lab `name`, if the lab is up and has one.
fn lab_manager(name: &str) -> anyhow::Result<Option<String>> {
    let lab = drover_lab::LabName::new(name).with_context(|| format!("--lab {name}"))?;
    let dirs = drover_lab::LabDirs::from_env();
    let rec = drover_lab::manager_file::load_manager(&dirs, &lab)?;
    Ok(rec.map(|r| r.url))
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    Ok(rt.block_on(f))
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn run_host(cmd: HostCmd) -> anyhow::Result<()> {
    let (args, what) = match cmd {
        HostCmd::List(t) => return host_list(&t),
        HostCmd::Drain(a) => (a, HostCommand::Drain),
        HostCmd::Undrain(a) => (a, HostCommand::Undrain),
        HostCmd::Wake(a) => (a, HostCommand::Wake),
    };
    let c = client(&args.target)?;
    let done = block_on(c.host_command(&args.name, what))??;
    if args.target.json {
        return print_json(&done);
    }
    println!("{}: {}", done.host, done.done);
    Ok(())
}

fn host_list(t: &ManagerTarget) -> anyhow::Result<()> {
    let c = client(t)?;
    let hosts = block_on(c.hosts())??;
    if t.json {
        return print_json(&hosts);
    }
    println!(
        "{:<12} {:<9} {:<10} {:>6} {:>7} {:>6} {:>4}  vms",
        "host", "reachable", "power", "cpus", "demand", "load", "hot"
    );
    for h in &hosts {
        let power = format!("{:?}", h.power).to_lowercase();
        let reach = match (h.reachable, h.drained) {
            (true, false) => "yes",
            (true, true) => "drained",
            (false, _) => "NO",
        };
        println!(
            "{:<12} {:<9} {:<10} {:>6} {:>7} {:>6} {:>4}  {}",
            h.name,
            reach,
            power,
            fixed(h.cpus, 1),
            fixed(h.cpu_demand_cores, 2),
            fixed(h.load, 2),
            h.hot_streak,
            h.vms.join(",")
        );
        if let Some(e) = &h.error {
            println!("{:<12} last error: {e}", "");
        }
    }
    Ok(())
}

pub fn run_plan(cmd: PlanCmd) -> anyhow::Result<()> {
    match cmd {
        PlanCmd::List {
            state,
            limit,
            target,
        } => {
            let c = client(&target)?;
            let q = PlanQuery {
                state,
                since_s: None,
                limit: limit.unwrap_or(0),
            };
            let plans = block_on(c.plans(&q))??;
            if target.json {
                return print_json(&plans);
            }
            println!(
                "{:<24} {:<14} {:<10} {:>10}  summary",
                "plan", "kind", "state", "made s"
            );
            for p in &plans {
                println!(
                    "{:<24} {:<14} {:<10} {:>10.0}  {}",
                    p.id,
                    format!("{:?}", p.kind).to_lowercase(),
                    p.state.name(),
                    p.created_s,
                    p.explanation.summary
                );
            }
            Ok(())
        }
        PlanCmd::Show(a) => {
            let c = client(&a.target)?;
            let (p, moves) =
                block_on(async { tokio::try_join!(c.plan(&a.id), c.plan_moves(&a.id)) })??;
            if a.target.json {
                return print_json(&p);
            }
            print!("{}", show(&p, &moves));
            Ok(())
        }
        PlanCmd::Approve(a) => plan_command(a, PlanCommand::Approve),
        PlanCmd::Cancel(a) => plan_command(a, PlanCommand::Cancel),
    }
}

fn plan_command(a: PlanArgs, cmd: PlanCommand) -> anyhow::Result<()> {
    let c = client(&a.target)?;
    let p = block_on(c.plan_command(&a.id, cmd))??;
    if a.target.json {
        return print_json(&p);
    }
    println!("plan {}: {}", p.id, p.state.name());
    Ok(())
}

pub fn run_migration(cmd: MigrationCmd) -> anyhow::Result<()> {
    match cmd {
        MigrationCmd::List { vm, limit, target } => {
            let c = client(&target)?;
            let q = MigrationQuery {
                vm,
                limit: limit.unwrap_or(0),
            };
            let rows = block_on(c.migrations(&q))??;
            if target.json {
                return print_json(&rows);
            }
            println!(
                "{:<20} {:<16} {:<20} {:<9} {:<10} {:<9} {:>9} {:>9} {:>8}",
                "move",
                "vm",
                "route",
                "move",
                "migration",
                "technique",
                "total ms",
                "down ms",
                "at s"
            );
            for r in &rows {
                println!("{}", migration_line(r));
            }
            Ok(())
        }
        MigrationCmd::Show { id, target } => {
            let c = client(&target)?;
            let row = block_on(c.migration(&id))??;
            if target.json {
                return print_json(&row);
            }
            println!("{}", migration_line(&row));
            println!("plan {}; the source agent's record:", row.plan_id);
            let record: serde_json::Value = row.record.to()?;
            print_json(&record)
        }
    }
}

/// One result as a table line. The record is the source agent's (the agent API's
/// `MigrationRecord`, or the simulator's shorter one): what it lacks shows as `-`.
fn migration_line(r: &MigrationRow) -> String {
    let rec: serde_json::Value = r.record.to().unwrap_or_default();
    let text = |p: &str| match rec.pointer(p) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => "-".to_string(),
    };
    format!(
        "{:<20} {:<16} {:<20} {:<9} {:<10} {:<9} {:>9} {:>9} {:>8.0}",
        r.move_id,
        r.vm,
        format!("{} -> {}", r.from_host, r.to_host),
        r.move_state,
        text("/state"),
        text("/result/chosen"),
        text("/result/total_ms"),
        text("/result/downtime_ms"),
        r.at_s
    )
}

/// A plan for a terminal, with each move's route, state and explanation.
fn show(p: &Plan, moves: &[Move]) -> String {
    drover_sim::replay::render::plan_text(p, |id| {
        moves.iter().find(|m| m.id == id).map(|m| {
            format!(
                "{} -> {} by {} ({})",
                m.from,
                m.to,
                m.technique.technique,
                m.state.name()
            )
        })
    })
}

/// `drover manager status`.
pub fn run_status(t: &ManagerTarget) -> anyhow::Result<()> {
    let c = client(t)?;
    let s = block_on(c.status())??;
    if t.json {
        return print_json(&s);
    }
    let mode = s.mode.map_or("not set yet".to_string(), |m| {
        format!("{m:?}").to_lowercase()
    });
    println!("mode {mode}, settings version {}", s.settings_version);
    println!(
        "looks {}, last took {}, next at {:.0} s (now {:.0} s)",
        s.looks,
        s.last_look_ms
            .map_or("-".to_string(), |ms| format!("{ms:.1} ms")),
        s.next_look_s,
        s.now_s
    );
    println!("hosts {} ({} reachable)", s.hosts, s.reachable);
    println!(
        "plans active {}, moves in flight {}",
        s.plans_active, s.moves_in_flight
    );
    println!(
        "energy {} Wh since the store was made",
        fixed(s.energy_wh, 1)
    );
    let store = if s.store.failures_in_a_row == 0 {
        "healthy".to_string()
    } else {
        format!(
            "{} writes failed in a row (acting on nothing): {}",
            s.store.failures_in_a_row,
            s.store.last_error.as_deref().unwrap_or("-")
        )
    };
    println!("store {}: {store}", s.store.location);
    Ok(())
}
