//! `drover migrate-bench`: real migrations on this machine, one table row (or JSON line) per run.

use crate::migration_flags::MigrationFlags;
use anyhow::Context;
use drover_core::migration::{EndStatus, PlanKnobs, Technique};
use drover_core::units::{format_size, parse_size};
use drover_qemu::bench::{run_bench, BenchConfig, BenchRow};
use drover_qemu::image::{ensure_image, NoProgress};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Technique to run (repeatable): precopy, postcopy, hybrid, auto or all.
    #[arg(long = "technique", short = 't', default_value = "all")]
    techniques: Vec<String>,
    /// Guest memory, e.g. 256M.
    #[arg(long, default_value = "256M")]
    memory: String,
    /// Workload: memtouch:wss=SIZE[,rate=N|max][,pattern=random|seq], cpu:demand=PCT, idle.
    #[arg(long, default_value = "memtouch:wss=128M,rate=max")]
    workload: String,
    /// Runs per technique.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Accelerator: kvm, tcg or auto.
    #[arg(long, default_value = "auto")]
    accel: String,
    #[command(flatten)]
    migration: MigrationFlags,
    /// One JSON object per run instead of a table.
    #[arg(long)]
    json: bool,
}

fn techniques(raw: &[String]) -> anyhow::Result<Vec<Technique>> {
    let mut out = Vec::new();
    for t in raw {
        if t == "all" {
            out.extend(Technique::ALL);
        } else {
            out.push(t.parse()?);
        }
    }
    out.dedup();
    Ok(out)
}

fn config(args: &BenchArgs) -> anyhow::Result<BenchConfig> {
    let knobs = args.migration.knobs()?;
    let memory = parse_size(&args.memory).context("--memory")?;
    let mut c = BenchConfig::new(memory, &args.workload);
    c.accel = args.accel.parse()?;
    c.techniques = techniques(&args.techniques)?;
    c.repeat = args.repeat.max(1);
    c.knobs = PlanKnobs {
        assumed_link_bps: c.knobs.assumed_link_bps,
        ..knobs
    };
    Ok(c)
}

const HEADER: &str = "technique chosen   status     conv  total_ms switch_ms downtime  rounds  pc_req transferred  before/s  during/s   after/s  degr%  integ  watchdog";

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn table_row(row: &BenchRow) -> String {
    let r = &row.result;
    let status = match r.status {
        EndStatus::Completed => "completed",
        EndStatus::Failed => "failed",
        EndStatus::Cancelled => "cancelled",
    };
    format!(
        "{:<9} {:<8} {:<10} {:<5} {:>8} {:>9} {:>8} {:>7} {:>7} {:>11} {:>9.0} {:>9.0} {:>9.0} {:>6.1} {:>6}  {}",
        r.technique.as_str(),
        r.chosen.as_str(),
        status,
        if r.converged { "yes" } else { "no" },
        r.total_ms,
        opt(r.switchover_ms),
        opt(r.downtime_ms),
        r.precopy_rounds,
        r.postcopy_requests,
        format_size(r.transferred_bytes),
        r.throughput_before,
        r.throughput_during,
        r.throughput_after,
        r.degradation_pct,
        r.integrity_errors,
        r.watchdog_action,
    )
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config = config(&args)?;
    drover_qemu::vm::validate_workload(&config.workload, config.memory_bytes)?;
    let image = ensure_image(&NoProgress).context("building the guest image")?;
    let runtime = tokio::runtime::Runtime::new()?;
    if !args.json {
        println!(
            "memory {} workload {} bandwidth {}",
            format_size(config.memory_bytes),
            config.workload,
            args.migration.bandwidth.as_deref().unwrap_or("uncapped")
        );
        println!("{HEADER}");
    }
    let json = args.json;
    runtime.block_on(run_bench(&config, &image, |row| {
        if json {
            match serde_json::to_string(row) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("cannot encode result: {e}"),
            }
        } else {
            println!("{}", table_row(row));
            if let Some(e) = &row.result.error {
                println!("          note: {e}");
            }
        }
    }))?;
    Ok(())
}
