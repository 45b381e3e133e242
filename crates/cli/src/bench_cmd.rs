//! `drover migrate-bench`: real migrations on this machine, one table row (or JSON line) per run.
//!
//! SIGINT, SIGTERM and SIGHUP stop the bench cleanly: the run is dropped, which kills every
//! QEMU it started and removes its temporary directory (see `drover_qemu::bench`), then the
//! command exits with 128 + the signal's number, as a shell reports a process it killed.

use crate::flags::{parsed, whole, Typed, VmFlags};
use crate::migration_flags::MigrationFlags;
use anyhow::Context;
use drover_core::migration::{EndStatus, PlanKnobs, Technique};
use drover_core::units::{format_rate, format_size};
use drover_qemu::bench::{run_bench, BenchConfig, BenchError, BenchRow, MAX_REPEAT};
use drover_qemu::image::{ensure_image, NoProgress};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Technique to run (repeatable): precopy, postcopy, hybrid, auto or all.
    #[arg(long = "technique", short = 't', default_value = "all")]
    techniques: Vec<String>,
    /// Guest memory, 128 MiB to 1 TiB, e.g. 256M (binary), 500MB (decimal).
    #[arg(long, default_value = "256M")]
    memory: String,
    /// Workload: memtouch:wss=SIZE[,rate=N|max][,pattern=random|seq], cpu:demand=PCT, idle.
    #[arg(long, default_value = "memtouch:wss=128M,rate=max")]
    workload: String,
    /// Runs per technique, 1 to 1000.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true,
          value_parser = whole::<u32>(1, u64::from(MAX_REPEAT)))]
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

pub(crate) fn techniques(raw: &[String]) -> anyhow::Result<Vec<Technique>> {
    let mut out = Vec::new();
    for t in raw {
        if t == "all" {
            out.extend(Technique::ALL);
        } else {
            // The flag takes `all` as well, so its refusal lists it.
            let technique = t.parse::<Technique>().map_err(|_| {
                anyhow::anyhow!(
                    "--technique: unknown technique '{t}': expected precopy, postcopy, hybrid, \
                     auto or all"
                )
            })?;
            out.push(technique);
        }
    }
    // `all` with others (or a name twice) runs each technique once, where first named.
    let mut seen = Vec::with_capacity(out.len());
    out.retain(|t| {
        let first = !seen.contains(t);
        seen.push(*t);
        first
    });
    Ok(out)
}

/// The bench these flags ask for, checked by every rule the agent's API applies (so nothing
/// is built or booted for settings it would refuse), each refusal naming its flag.
fn config(args: &BenchArgs) -> anyhow::Result<BenchConfig> {
    let knobs = args.migration.knobs()?;
    let memory = Typed::size("--memory", &args.memory)?;
    let mut c = BenchConfig::new(memory.value(), &args.workload);
    c.accel = parsed("--accel", &args.accel)?;
    c.techniques = techniques(&args.techniques)?;
    c.repeat = args.repeat;
    c.knobs = PlanKnobs {
        assumed_link_bps: c.knobs.assumed_link_bps,
        ..knobs
    };
    c.validate().map_err(|e| match e {
        BenchError::Size(f) => VmFlags {
            vcpus: None,
            memory: &memory,
            workload: &args.workload,
        }
        .refused(&f),
        BenchError::Repeat(n) => anyhow::anyhow!("--repeat {n}: expected 1 to {MAX_REPEAT}"),
        other => other.into(),
    })?;
    Ok(c)
}

const HEADER: &str = "technique chosen   status     conv  total_ms switch_ms downtime  rounds  pc_req transferred  before/s  during/s   after/s  degr%  integ  watchdog";

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// A measured figure with `decimals`, or `-` when it is unknown.
fn opt_f(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}"))
        .unwrap_or_else(|| "-".into())
}

fn table_row(row: &BenchRow) -> String {
    let r = &row.result;
    let status = match r.status {
        EndStatus::Completed => "completed",
        EndStatus::Failed => "failed",
        EndStatus::Cancelled => "cancelled",
        EndStatus::Paused => "paused",
    };
    format!(
        "{:<9} {:<8} {:<10} {:<5} {:>8} {:>9} {:>8} {:>7} {:>7} {:>11} {:>9} {:>9} {:>9} {:>6} {:>6}  {}",
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
        opt_f(r.throughput_before, 0),
        opt_f(r.throughput_during, 0),
        opt_f(r.throughput_after, 0),
        opt_f(r.degradation_pct, 1),
        r.integrity_errors,
        r.watchdog_action,
    )
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    // Before the image is built or anything boots: the same checks `run_bench` applies.
    let config = config(&args)?;
    let image = ensure_image(&NoProgress).context("building the guest image")?;
    let runtime = tokio::runtime::Runtime::new()?;
    if !args.json {
        let bandwidth = match (&args.migration.bandwidth, config.knobs.bandwidth_bps) {
            (Some(typed), Some(bps)) => format!("{typed} ({})", format_rate(bps)),
            _ => "uncapped".into(),
        };
        println!(
            "memory {} workload {} bandwidth {bandwidth}",
            format_size(config.memory_bytes),
            config.workload,
        );
        println!("{HEADER}");
    }
    let json = args.json;
    let bench = run_bench(&config, &image, |row| {
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
    });
    let outcome = runtime.block_on(async {
        // Listening starts before the bench is first polled, so no QEMU exists yet that a
        // signal's default action (ending the process on the spot) would orphan.
        let mut stop = crate::signals::StopSignals::listen()?;
        Ok::<_, std::io::Error>(tokio::select! {
            r = bench => Ok(r),
            signal = stop.first() => Err(signal),
        })
    });
    match outcome.context("listening for SIGINT and SIGTERM")? {
        Ok(rows) => {
            rows?;
            Ok(())
        }
        // The bench future is dropped by now: its QEMUs are killed and its directory removed.
        Err((name, number)) => {
            drop(runtime);
            eprintln!(
                "migrate-bench stopped by {name}: its QEMUs are killed and its temporary \
                 directory removed"
            );
            std::process::exit(128 + number);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::migration::MigrationResult;

    fn row(degradation_pct: Option<f64>, throughput_before: Option<f64>) -> BenchRow {
        BenchRow {
            run: 1,
            memory_bytes: 256 << 20,
            workload: "idle".into(),
            bandwidth_bps: None,
            result: MigrationResult {
                technique: Technique::Postcopy,
                chosen: Technique::Postcopy,
                reason: "requested".into(),
                status: EndStatus::Completed,
                converged: true,
                total_ms: 600,
                downtime_ms: Some(40),
                switchover_ms: Some(120),
                transferred_bytes: 1 << 20,
                precopy_rounds: 1,
                postcopy_requests: 3,
                throughput_before,
                throughput_during: Some(900.0),
                throughput_after: Some(1000.0),
                degradation_pct,
                restored_ms: None,
                agility_s: None,
                integrity_errors: 0,
                watchdog_action: "none".into(),
                error: None,
            },
        }
    }

    #[test]
    fn unknown_figures_print_as_a_dash_not_zero() {
        let cells: Vec<String> = table_row(&row(None, None))
            .split_whitespace()
            .map(str::to_string)
            .collect();
        // before/s and degr% columns.
        assert_eq!(
            (cells[10].as_str(), cells[13].as_str()),
            ("-", "-"),
            "{cells:?}"
        );
        let known = table_row(&row(Some(10.0), Some(1000.0)));
        assert!(known.contains(" 10.0 "), "{known}");
    }
}
