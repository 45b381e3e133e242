//! `drover sim`: run policies over a modelled datacenter (a thin shell over drover-sim).
//!
//! - `drover sim --trace DIR --policy P [--json]`: one policy on one day.
//! - `drover sim compare --trace DIR [--policies P1,P2,...|all] [--json] [--plot FILE.svg]
//!   [--jobs N]`: every policy on every day (DIR may hold several day folders), N at a time.
//! - `drover sim bench`: the speed benchmark (wall time per day, peak memory).
//! - `drover sim fidelity --trace DIR [--reference FILE] [--check slatah,pdm,slav]`: the
//!   reference's policies on its days, deviation per metric and day, mean absolute deviation.
//! - `drover sim replay FILE [--json]`: re-run the manager's control step on a stored decision
//!   and print the plans it makes; exits non-zero when they are not what was recorded.
//! - `drover sim manager-bench [--hosts N] [--vms N] [--hours H] [--json]`: the manager's
//!   control loop every simulated second against a live datacenter; pass times and peak memory.
//! - `drover sim calibrate --rows FILE [--out FILE]`: fit the dirty-rate model's judge to
//!   `drover migrate-bench --json` rows (see `sim_judge_cmd`).
//!
//! Without `--trace`/`--csv`, a seeded synthetic day is generated (`--synthetic N` VMs).
//!
//! Every size and count flag is range-checked by its parser against `drover_sim::limits`, so a
//! typo is an error naming the flag and its range, never a panic or an allocation abort.

use crate::sim_judge_cmd::{self, JudgeArgs};
use crate::{sim_fidelity_cmd, sim_live_cmd};
use anyhow::{bail, Context, Result};
use clap::builder::RangedU64ValueParser;
use drover_core::dc::PolicySpec;
use drover_core::migration::Technique;
use drover_sim::compare::{default_threads, mixed_admission_days, parse_policies, run_ordered};
use drover_sim::limits;
use drover_sim::synth::{generate, SynthSpec};
use drover_sim::trace::{day_folders, TraceError};
use drover_sim::{simulate, DatacenterModel, MigrationModel, Report, Workload};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A parser for a count flag that accepts only `min..=max`.
fn count(min: usize, max: usize) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(min as u64..=max as u64)
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimArgs {
    #[command(subcommand)]
    command: Option<SimCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand)]
enum SimCommand {
    /// Run several policies over one or more days, side by side.
    Compare(CompareArgs),
    /// Time one day per policy (release builds) and report peak memory.
    Bench(BenchArgs),
    /// Every policy of a reference (CloudSim 3.0.3's by default) on its days, compared metric
    /// by metric: deviation per day, mean absolute deviation per policy.
    Fidelity(sim_fidelity_cmd::FidelityArgs),
    /// Re-run the manager's control step on a stored decision and print the plans it makes
    /// (exit 1 when they differ from the recorded ones).
    Replay(sim_live_cmd::ReplayArgs),
    /// Time the manager's control loop every simulated second against a live datacenter
    /// (release builds) and report peak memory.
    ManagerBench(sim_live_cmd::ManagerBenchArgs),
    /// Fit the dirty-rate model's judge to `drover migrate-bench --json` rows and report the
    /// fit's error.
    Calibrate(sim_judge_cmd::CalibrateArgs),
}

#[derive(clap::Args, Clone)]
struct SourceArgs {
    /// PlanetLab day folder (one file per VM); for compare, also a folder of day folders.
    #[arg(long, value_name = "DIR", conflicts_with = "csv")]
    trace: Option<PathBuf>,
    /// CSV trace with lines `vm,t,cpu_pct` (t = sample index).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// VMs in the synthetic day used when no trace is given, 1 to 1000000 (not with --trace or
    /// --csv).
    // Refused beside a trace rather than dropped: the user meant one of the two.
    #[arg(long, default_value_t = 1000, value_parser = count(1, limits::MAX_VMS), conflicts_with_all = ["trace", "csv"])]
    synthetic: usize,
    /// Seed for the synthetic workload, random selection and dirty rates.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Samples per VM in a PlanetLab file (and in the synthetic day), 2 to 105120 (a year of
    /// 5-minute samples); not with --csv, whose rows give their own.
    // A CSV trace gives its own samples (its `t` column), so the flag would be dropped there.
    #[arg(long, default_value_t = 288, value_parser = count(limits::MIN_SAMPLES, limits::MAX_SAMPLES), conflicts_with = "csv")]
    samples: usize,
}

#[derive(clap::Args, Clone)]
struct ModelArgs {
    /// Hosts, 1 to 1000000 (default: 800, or 4 per 5 VMs for synthetic days).
    #[arg(long, value_parser = count(1, limits::MAX_HOSTS))]
    hosts: Option<usize>,
    /// Migration model: `benchmark` (CloudSim's) or `dirty` (dirty-rate aware, technique matters).
    #[arg(long, default_value = "benchmark")]
    migration_model: String,
    /// With the dirty model, force this technique for every policy (precopy|postcopy|hybrid|auto).
    #[arg(long)]
    technique: Option<Technique>,
    /// Keep VMs whose demand drops to zero (CloudSim treats them as finished and removes them).
    #[arg(long)]
    keep_idle_vms: bool,
    /// Make migrations respect host memory (CloudSim checks it only at admission).
    #[arg(long)]
    enforce_memory: bool,
    #[command(flatten)]
    judge: JudgeArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Policy, e.g. lr-mmt-1.2, iqr-mmt-1.5, thr-mmt-0.8, mad-mmt-2.5, drover, dvfs, npa.
    #[arg(long, default_value = "lr-mmt-1.2")]
    policy: String,
    /// Print one JSON row instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CompareArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated policies, or `all`.
    #[arg(long, default_value = "all")]
    policies: String,
    /// Print JSON rows (one per policy and day) instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write an SVG chart of the comparison here.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Simulations run at once, 1 to 1024 (default: every core). Results do not depend on it;
    /// each row's `wall_ms` does (runs share the cores).
    #[arg(long, default_value_t = default_threads(), value_parser = count(1, 1024))]
    jobs: usize,
}

#[derive(clap::Args)]
struct BenchArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated policies to time.
    #[arg(long, default_value = "lr-mmt-1.2")]
    policies: String,
    /// Runs per policy (the best is reported).
    #[arg(long, default_value_t = 3, value_parser = count(1, limits::MAX_REPEAT))]
    repeat: usize,
}

pub fn run(args: SimArgs) -> Result<()> {
    match args.command {
        Some(SimCommand::Compare(c)) => compare(c),
        Some(SimCommand::Bench(b)) => bench(b),
        Some(SimCommand::Fidelity(f)) => sim_fidelity_cmd::fidelity(f),
        Some(SimCommand::Replay(r)) => sim_live_cmd::replay(r),
        Some(SimCommand::ManagerBench(b)) => sim_live_cmd::manager_bench(b),
        Some(SimCommand::Calibrate(c)) => sim_judge_cmd::calibrate(c),
        None => single(args.run),
    }
}

fn single(a: RunArgs) -> Result<()> {
    let spec: PolicySpec = a
        .policy
        .parse()
        .map_err(|e| anyhow::anyhow!("--policy: {e}"))?;
    let work = load_one(&a.source)?;
    let model = build_model(&a.model, &work)?;
    let bar = progress_bar(
        work.samples.saturating_sub(1) as u64,
        &format!("{} {}", spec, work.day),
    );
    let mut tick = |done: usize, _total: usize| bar.set_position(done as u64);
    let report = simulate(&model, &work, spec, a.source.seed, Some(&mut tick))?;
    bar.finish_and_clear();
    let reports = [report];
    if a.json {
        println!("{}", serde_json::to_string(&reports[0])?);
    } else {
        print_table(&reports, &BTreeSet::new());
    }
    warn_rejections(&reports, &BTreeSet::new());
    Ok(())
}

/// `--plot`'s file, checked before the comparison runs (it may take minutes): an SVG chart is
/// named `.svg`, and it must be writable as a file (`flags::output_file`).
fn check_plot_path(path: &Path) -> Result<()> {
    let svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if !svg {
        bail!(
            "--plot {}: the chart is an SVG file: give a name ending in .svg",
            path.display()
        );
    }
    crate::flags::output_file("--plot", path)
}

/// Every policy on every day, run side by side on `--jobs` threads (rows come out in day, then
/// policy order whatever finishes first). A day that cannot be loaded or run is reported
/// (naming the day, and the file and line when the trace is at fault) and the others still run;
/// the command fails at the end, after the good days' results, if any day failed.
fn compare(a: CompareArgs) -> Result<()> {
    let policies = parse_policies(&a.policies).map_err(|e| anyhow::anyhow!("--policies: {e}"))?;
    if let Some(path) = &a.plot {
        check_plot_path(path)?;
    }
    let days = day_sources(&a.source)?;
    let bar = progress_bar((days.len() * policies.len()) as u64, "compare");
    let mut failed = BTreeSet::new();
    let mut loaded = Vec::new();
    for day in &days {
        let outcome = day.load(&a.source).and_then(|work| {
            let model = build_model(&a.model, &work)?;
            Ok((day.label(), work, model))
        });
        match outcome {
            Ok(l) => loaded.push(l),
            Err(e) => {
                bar.inc(policies.len() as u64);
                bar.suspend(|| eprintln!("error: day {}: {e:#}", day.label()));
                failed.insert(day.label());
            }
        }
    }
    let jobs: Vec<(usize, usize)> = (0..loaded.len())
        .flat_map(|d| (0..policies.len()).map(move |p| (d, p)))
        .collect();
    let mut reports = Vec::new();
    let run = |&(d, p): &(usize, usize)| {
        let (_, work, model) = &loaded[d];
        simulate(model, work, policies[p].clone(), a.source.seed, None)
    };
    run_ordered(&jobs, a.jobs, run, |i, outcome| {
        let (d, p) = jobs[i];
        match outcome {
            Ok(r) => {
                if a.json {
                    match serde_json::to_string(&r) {
                        Ok(line) => bar.suspend(|| println!("{line}")),
                        Err(e) => bar.suspend(|| eprintln!("error: {}: {e}", r.policy)),
                    }
                }
                reports.push(r);
            }
            Err(e) => {
                let label = &loaded[d].0;
                bar.suspend(|| eprintln!("error: day {label}: {}: {e:#}", policies[p]));
                failed.insert(label.clone());
            }
        }
        bar.inc(1);
    });
    bar.finish_and_clear();
    let mixed = mixed_admission_days(&reports);
    if !a.json && !reports.is_empty() {
        print_table(&reports, &mixed);
    }
    warn_rejections(&reports, &mixed);
    if let Some(path) = &a.plot {
        std::fs::write(path, drover_sim::plot::svg(&reports))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if !failed.is_empty() {
        let names = failed.iter().cloned().collect::<Vec<_>>().join(", ");
        // Say "the others" only when there are others: every day may have failed.
        match (reports.is_empty(), days.len()) {
            (true, 1) => bail!("day {names} failed; there are no results"),
            (true, n) => bail!("all {n} days failed ({names}); there are no results"),
            (false, n) if failed.len() == n => bail!(
                "every day had a policy fail ({names}); the results above are for the policies that ran"
            ),
            (false, n) => bail!(
                "{} of {n} days failed ({names}); the results above are for the others",
                failed.len()
            ),
        }
    }
    Ok(())
}

fn bench(a: BenchArgs) -> Result<()> {
    let policies = parse_policies(&a.policies).map_err(|e| anyhow::anyhow!("--policies: {e}"))?;
    let work = load_one(&a.source)?;
    let model = build_model(&a.model, &work)?;
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: debug build; speed targets are for release builds (cargo build --release)"
        );
    }
    println!(
        "workload {} ({} VMs, {} hosts, {} samples)",
        work.day,
        work.vms(),
        model.hosts,
        work.samples
    );
    let mut bests = Vec::new();
    for p in policies {
        let mut best: Option<Report> = None;
        for _ in 0..a.repeat {
            let r = simulate(&model, &work, p.clone(), a.source.seed, None)?;
            if best.as_ref().is_none_or(|b| r.wall_ms < b.wall_ms) {
                best = Some(r);
            }
        }
        if let Some(r) = best {
            println!(
                "{:14} best of {}: {:9.1} ms  ({} migrations, {:.2} kWh)",
                r.policy, a.repeat, r.wall_ms, r.migrations, r.energy_kwh
            );
            bests.push(r);
        }
    }
    if let Some(kb) = drover_sim::manager_bench::peak_rss_kib() {
        println!("peak memory (VmHWM): {:.1} MiB", kb as f64 / 1024.0);
    }
    warn_rejections(&bests, &BTreeSet::new());
    Ok(())
}

/// One day to compare: a PlanetLab folder, a CSV file or the synthetic day.
enum DaySource {
    Folder(PathBuf),
    Csv(PathBuf),
    Synthetic,
}

impl DaySource {
    fn label(&self) -> String {
        match self {
            DaySource::Folder(p) | DaySource::Csv(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            DaySource::Synthetic => "synthetic".into(),
        }
    }

    fn load(&self, src: &SourceArgs) -> Result<Workload> {
        match self {
            DaySource::Folder(dir) => Ok(Workload::from_planetlab_dir(dir, src.samples)?),
            DaySource::Csv(path) => Ok(Workload::from_csv(path)?),
            DaySource::Synthetic => synthetic(src),
        }
    }
}

/// The days `--trace`, `--csv` or the synthetic flags name (a trace folder may hold several).
fn day_sources(src: &SourceArgs) -> Result<Vec<DaySource>> {
    if let Some(csv) = &src.csv {
        return Ok(vec![DaySource::Csv(csv.clone())]);
    }
    let Some(dir) = &src.trace else {
        return Ok(vec![DaySource::Synthetic]);
    };
    if !dir.exists() {
        bail!("trace folder {} does not exist", dir.display());
    }
    Ok(day_folders(dir)?
        .into_iter()
        .map(DaySource::Folder)
        .collect())
}

/// The one day a single run or a benchmark uses.
fn load_one(src: &SourceArgs) -> Result<Workload> {
    if let Some(csv) = &src.csv {
        return Ok(Workload::from_csv(csv)?);
    }
    let Some(dir) = &src.trace else {
        return synthetic(src);
    };
    if !dir.exists() {
        bail!("trace folder {} does not exist", dir.display());
    }
    match Workload::from_planetlab_dir(dir, src.samples) {
        Err(TraceError::HoldsDays { days, .. }) => bail!(
            "{} holds day folders ({}), not VM files: run `drover sim compare --trace {}` for every day, or pass one day, e.g. --trace {}",
            dir.display(),
            days.join(", "),
            dir.display(),
            dir.join(days.first().map(String::as_str).unwrap_or("DAY")).display()
        ),
        other => Ok(other?),
    }
}

fn synthetic(src: &SourceArgs) -> Result<Workload> {
    let spec = SynthSpec {
        vms: src.synthetic,
        samples: src.samples,
        seed: src.seed,
    };
    generate(&spec).with_context(|| {
        format!(
            "--synthetic {} with --samples {}",
            src.synthetic, src.samples
        )
    })
}

fn build_model(a: &ModelArgs, work: &Workload) -> Result<DatacenterModel> {
    let hosts = a
        .hosts
        .unwrap_or_else(|| DatacenterModel::default_hosts(work));
    let mut m = DatacenterModel::planetlab(hosts);
    m.idle_vms_leave = !a.keep_idle_vms;
    m.enforce_memory = a.enforce_memory;
    m.migration = a.judge.model(&a.migration_model, a.technique)?;
    if a.technique.is_some() && m.migration == MigrationModel::Benchmark {
        bail!("--technique needs --migration-model dirty (the benchmark model ignores techniques)");
    }
    Ok(m)
}

fn progress_bar(len: u64, msg: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}") {
        bar.set_style(style);
    }
    bar.set_message(msg.to_string());
    bar
}

/// The results table. `rej` counts the VMs admission found no host for; a `*` marks rows of a
/// day whose policies admitted different VMs.
fn print_table(reports: &[Report], mixed: &BTreeSet<String>) {
    println!(
        "{:10} {:14} {:>6} {:>6} {:>6} {:>9} {:>7} {:>8} {:>7} {:>9} {:>10} {:>8}",
        "day",
        "policy",
        "hosts",
        "vms",
        "rej",
        "kWh",
        "migr",
        "SLATAH%",
        "PDM%",
        "SLAV%",
        "ESV",
        "ms"
    );
    for r in reports {
        let mark = if mixed.contains(&r.day) { "*" } else { "" };
        println!(
            "{:10} {:14} {:>6} {:>6} {:>6} {:>9.2} {:>7} {:>8.2} {:>7.3} {:>9.5} {:>10.3e} {:>8.1}",
            r.day,
            r.policy,
            r.hosts,
            r.vms,
            format!("{}{mark}", r.vms_rejected),
            r.energy_kwh,
            r.migrations,
            r.slatah_pct,
            r.pdm_pct,
            r.slav_pct,
            r.esv,
            r.wall_ms
        );
    }
}

/// Says, on standard error, when rows leave VMs out or cannot be compared: a run that rejected
/// most of its VMs otherwise looks like a perfect one.
fn warn_rejections(reports: &[Report], mixed: &BTreeSet<String>) {
    for r in reports.iter().filter(|r| r.vms_rejected > 0) {
        eprintln!(
            "warning: {} {}: {} of {} VMs found no host at admission and were left out; energy, migrations and SLA cover only the other {} (give more --hosts)",
            r.day,
            r.policy,
            r.vms_rejected,
            r.vms,
            r.vms - r.vms_rejected
        );
    }
    for day in mixed {
        eprintln!(
            "warning: day {day}: the policies admitted different VMs (rows marked *), so their figures cover different workloads and are not comparable"
        );
    }
}
