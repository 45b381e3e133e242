//! `drover manager bench`: a thin shell over `drover_manager::bench`.

use anyhow::Result;
use clap::builder::RangedU64ValueParser;
use drover_manager::bench::{self, BenchReport, BenchSpec, ModelSpec, Timing};
use drover_sim::limits;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Hosts (8 cores, 32 GiB each unless --host-cpus says otherwise).
    #[arg(long, default_value_t = 1000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=limits::MAX_HOSTS as u64))]
    hosts: usize,
    /// VMs (the benchmark's VM types, a seeded synthetic day with a sudden overload a minute).
    #[arg(long, default_value_t = 10_000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=limits::MAX_VMS as u64))]
    vms: usize,
    /// Simulated hours (a look every simulated second), above 0 and at most 168.
    #[arg(long, default_value_t = 1.0)]
    hours: f64,
    /// Cores per host.
    #[arg(long, default_value_t = 8, value_parser = RangedU64ValueParser::<u32>::new().range(1..=4096))]
    host_cpus: u32,
    /// Seed of the workload, the dirty rates and the overloads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to make the store's temporary directory (default: the system's temporary
    /// directory); it is removed after the run.
    #[arg(long, value_name = "DIR")]
    state_parent: Option<PathBuf>,
    /// Print the report as one JSON document.
    #[arg(long)]
    json: bool,
}

/// Runs the whole manager over the simulated datacenter and prints the figures.
pub fn run(a: BenchArgs) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: debug build; the targets are for release builds (cargo build --release)"
        );
    }
    let spec = BenchSpec {
        model: ModelSpec {
            hosts: a.hosts,
            vms: a.vms,
            hours: a.hours,
            seed: a.seed,
            host_cpus: f64::from(a.host_cpus),
            ..ModelSpec::default()
        },
        state_parent: a.state_parent,
    };
    let bar = ProgressBar::new((a.hours.max(0.0) * 3600.0) as u64);
    if let Ok(style) =
        ProgressStyle::with_template("manager bench [{bar:30}] {pos}/{len} s {elapsed}")
    {
        bar.set_style(style);
    }
    let mut tick = |done: f64, _total: f64| {
        let done = done as u64;
        if done.is_multiple_of(10) {
            bar.set_position(done);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(bench::run(&spec, Some(&mut tick)))?;
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
        "median {:7.2}  p99 {:7.2}  max {:7.2}  (mean {:.2}) ms",
        t.median_ms, t.p99_ms, t.max_ms, t.mean_ms
    )
}

fn print_report(r: &BenchReport) {
    let m = &r.measures;
    println!(
        "manager bench: the whole manager (SQLite store) over {} hosts, {} VMs, {} s simulated ({} looks), seed {}",
        r.hosts, r.vms, r.simulated_s, r.looks, r.seed
    );
    println!("whole look:   {}", timing(&r.look));
    if let Some(cpu) = &r.look_cpu {
        println!("  CPU time   {}", timing(cpu));
    }
    let s = &r.stages;
    for (name, t) in [
        ("observe", &s.observe),
        ("step", &s.step),
        ("store", &s.store),
        ("act", &s.act),
        ("upkeep", &s.upkeep),
    ] {
        println!("  {name:<10} {}", timing(t));
    }
    let w = &r.slowest;
    println!(
        "slowest look at {} s: {:.1} ms (observe {:.1}, step {:.1}, store {:.1}, act {:.1}, upkeep {:.1})",
        r.slowest_at_s, w.total_ms, w.observe_ms, w.step_ms, w.store_ms, w.act_ms, w.upkeep_ms
    );
    match r.peak_rss_mib {
        Some(mib) => println!(
            "peak memory (VmHWM): {mib:.1} MiB; store on disk at the end: {:.1} MiB",
            r.store_mib
        ),
        None => println!(
            "peak memory (VmHWM): unknown (no /proc); store on disk at the end: {:.1} MiB",
            r.store_mib
        ),
    }
    crate::sim_live_cmd::print_outcome(&r.plans, r.surges, r.active_hosts_end, m);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "targets: look under 100 ms at p99: {}, at max: {}; peak memory under 500 MiB: {}",
        verdict(r.look.p99_ms < 100.0),
        verdict(r.look.max_ms < 100.0),
        r.peak_rss_mib.map_or("unknown", |mib| verdict(mib < 500.0))
    );
    println!("wall time {:.1} s", r.wall_s);
}
