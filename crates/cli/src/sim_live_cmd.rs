//! `drover sim replay FILE` and `drover sim manager-bench`: thin shells over drover-sim's
//! `replay` and `manager_bench`.

use anyhow::{bail, Result};
use clap::builder::RangedU64ValueParser;
use drover_sim::limits;
use drover_sim::manager_bench::{self, BenchReport, BenchSpec, Timing};
use drover_sim::replay;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// A stored decision: core's Decision JSON (with its recorded output), or the manager
    /// store's export of a plan's decision.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print the replay as JSON (plans with explanations, actions, verdict).
    #[arg(long)]
    json: bool,
}

/// Re-runs the control step on the file's decision and prints the plans it makes; fails when
/// they are not what was recorded.
pub fn replay(a: ReplayArgs) -> Result<()> {
    let stored = replay::read(&a.file)?;
    let r = replay::replay(&stored);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", replay::render(&stored, &r));
    }
    if !r.verdict.ok() {
        bail!(
            "{}: the replay does not decide what was recorded",
            a.file.display()
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ManagerBenchArgs {
    /// Hosts (8 cores, 32 GiB each unless --host-cpus says otherwise).
    #[arg(long, default_value_t = 1000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=limits::MAX_HOSTS as u64))]
    hosts: usize,
    /// VMs (the benchmark's VM types, a seeded synthetic day with sudden overloads).
    #[arg(long, default_value_t = 10_000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=limits::MAX_VMS as u64))]
    vms: usize,
    /// Simulated hours, above 0 and at most 168 (one control pass a simulated second).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = hours)]
    hours: f64,
    /// Cores per host.
    #[arg(long, default_value_t = 8, value_parser = RangedU64ValueParser::<u32>::new().range(1..=4096))]
    host_cpus: u32,
    /// Seed of the workload, the dirty rates and the overloads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON document.
    #[arg(long)]
    json: bool,
}

/// `--hours` as typed: clap's refusal names the flag and quotes the text.
fn hours(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(h) if manager_bench::hours_ok(h) => Ok(h),
        _ => Err(format!("expected hours {}", manager_bench::HOURS_EXPECTED)),
    }
}

/// Times the control loop against the live simulation and prints the figures.
pub fn manager_bench(a: ManagerBenchArgs) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: debug build; the targets are for release builds (cargo build --release)"
        );
    }
    let spec = BenchSpec {
        hosts: a.hosts,
        vms: a.vms,
        hours: a.hours,
        seed: a.seed,
        host_cpus: f64::from(a.host_cpus),
        ..BenchSpec::default()
    };
    let bar = ProgressBar::new((a.hours.max(0.0) * 3600.0) as u64);
    if let Ok(style) =
        ProgressStyle::with_template("manager-bench [{bar:30}] {pos}/{len} s {elapsed}")
    {
        bar.set_style(style);
    }
    let mut tick = |done: usize, _total: usize| {
        if done.is_multiple_of(10) {
            bar.set_position(done as u64);
        }
    };
    let report = manager_bench::run(&spec, Some(&mut tick))?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn timing(t: &Timing) -> String {
    format!(
        "min {:.2} ms  median {:.2} ms  p99 {:.2} ms  max {:.2} ms  (mean {:.2} ms)",
        t.min_ms, t.median_ms, t.p99_ms, t.max_ms, t.mean_ms
    )
}

fn print_report(r: &BenchReport) {
    let m = &r.measures;
    println!(
        "manager bench: {} hosts, {} VMs, {} s simulated ({} passes), seed {}",
        r.hosts, r.vms, r.simulated_s, r.passes, r.seed
    );
    println!("control step alone:        {}", timing(&r.step));
    println!("step + observe/apply:      {}", timing(&r.pass));
    println!(
        "slowest pass at:           {} s of simulated time",
        r.slowest_pass_at_s
    );
    match r.peak_rss_mib {
        Some(mib) => println!("peak memory (VmHWM):       {mib:.1} MiB"),
        None => println!("peak memory (VmHWM):       unknown (no /proc)"),
    }
    print_outcome(&r.plans, r.surges, r.active_hosts_end, m);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "targets: pass under 100 ms at p99: {}; peak memory under 500 MiB: {}",
        verdict(r.pass.p99_ms < 100.0),
        r.peak_rss_mib.map_or("unknown", |mib| verdict(mib < 500.0))
    );
    println!("wall time {:.1} s", r.wall_s);
}

/// The simulated world's outcome, as both manager benchmarks print it: plans by kind,
/// surges, migrations by end, active hosts, energy, SLATAH and PDM.
pub fn print_outcome(
    plans: &std::collections::BTreeMap<String, u64>,
    surges: u64,
    active_hosts_end: usize,
    m: &drover_sim::live::Measures,
) {
    let plans: Vec<String> = plans.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let ended = m.ended();
    println!(
        "plans: {}; {} surges; migrations: {} completed, {} failed, {} cancelled, {} refused",
        if plans.is_empty() {
            "none".to_string()
        } else {
            plans.join(", ")
        },
        surges,
        ended.completed,
        ended.failed,
        ended.cancelled,
        m.refused
    );
    println!(
        "hosts active: mean {:.1}, {} at the end; energy {:.1} kWh; SLATAH {:.3}%; PDM {:.4}%",
        m.mean_active_hosts(),
        active_hosts_end,
        m.energy_wh / 1000.0,
        m.slatah() * 100.0,
        m.pdm() * 100.0
    );
}
