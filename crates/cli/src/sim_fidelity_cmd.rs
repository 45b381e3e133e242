//! `drover sim fidelity`: every policy of a reference file on every day it covers, on the
//! benchmark model, compared metric by metric with the reference (see `drover_sim::fidelity`).

use anyhow::{bail, Result};
use drover_core::dc::PolicySpec;
use drover_sim::fidelity::{compare, Metric, Reference};
use drover_sim::trace::day_folders;
use drover_sim::{simulate, DatacenterModel, Report, Workload};
use std::path::PathBuf;

/// The reference's file name inside the trace folder, used when `--reference` is not given.
const DEFAULT_REFERENCE: &str = "cloudsim-3.0.3-reference.csv";

/// Samples in a PlanetLab day file (24 h at 5 minutes).
const SAMPLES_PER_DAY: usize = 288;

#[derive(clap::Args)]
pub struct FidelityArgs {
    /// Folder of PlanetLab day folders (the reference's days are taken from it).
    #[arg(long, value_name = "DIR")]
    trace: PathBuf,
    /// Reference results CSV (default: DIR/cloudsim-3.0.3-reference.csv).
    #[arg(long, value_name = "FILE")]
    reference: Option<PathBuf>,
    /// Tolerance a day's deviation is judged against, percent (0 to 1000).
    #[arg(long, default_value_t = 15.0, value_parser = tolerance)]
    tolerance: f64,
    /// Fail (exit 1) when a day of these metrics is beyond the tolerance, e.g.
    /// `slatah,pdm,slav` (energy, migrations, slatah, pdm, slav, esv).
    #[arg(long, value_delimiter = ',', value_parser = metric)]
    check: Vec<Metric>,
    /// Seed (the benchmark model draws nothing from it; kept for the same runs as `compare`).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Pair traces with VM types in this seeded random order instead of by file name (CloudSim
    /// used its folder's unspecified listing order; this measures what the pairing moves).
    #[arg(long, value_name = "SEED")]
    shuffle: Option<u64>,
    /// Print the comparison as one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

fn tolerance(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1000.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}': expected a percentage from 0 to 1000")),
    }
}

fn metric(s: &str) -> Result<Metric, String> {
    Metric::ALL
        .into_iter()
        .find(|m| m.label().eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| format!("'{s}': expected one of energy, migrations, slatah, pdm, slav, esv"))
}

pub fn fidelity(a: FidelityArgs) -> Result<()> {
    let ref_path = a
        .reference
        .clone()
        .unwrap_or_else(|| a.trace.join(DEFAULT_REFERENCE));
    // Capped like every file the simulator reads whole (`/dev/zero` would fill memory).
    let text = drover_sim::limits::read_text(&ref_path)
        .map_err(|e| anyhow::anyhow!("reading the reference {}: {e}", ref_path.display()))?;
    let reference = Reference::parse(&text, &ref_path.display().to_string())?;
    let policies: Vec<PolicySpec> = reference
        .policies()
        .iter()
        .map(|p| {
            p.parse()
                .map_err(|e| anyhow::anyhow!("{}: policy {p}: {e}", ref_path.display()))
        })
        .collect::<Result<_>>()?;
    if !a.trace.is_dir() {
        bail!("--trace {}: not a folder", a.trace.display());
    }
    let wanted = reference.days();
    let mut reports: Vec<Report> = Vec::new();
    for dir in day_folders(&a.trace)? {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        if !name.as_ref().is_some_and(|n| wanted.contains(n)) {
            continue;
        }
        let mut work = Workload::from_planetlab_dir(&dir, SAMPLES_PER_DAY)?;
        if let Some(seed) = a.shuffle {
            work = work.shuffled(seed);
        }
        let model = DatacenterModel::planetlab(DatacenterModel::default_hosts(&work));
        for p in &policies {
            eprintln!("{} {p}", work.day);
            reports.push(simulate(&model, &work, p.clone(), a.seed, None)?);
        }
    }
    if reports.is_empty() {
        bail!(
            "--trace {}: no day folder named after a reference day ({})",
            a.trace.display(),
            wanted.join(", ")
        );
    }
    let f = compare(&reports, &reference, a.tolerance / 100.0);
    if a.json {
        println!("{}", serde_json::to_string(&f)?);
    } else {
        print!("{}", f.render());
    }
    let bad = f.violations(&a.check);
    if !bad.is_empty() {
        bail!(
            "{} day(s) beyond {}% on the checked metrics: {}",
            bad.len(),
            a.tolerance,
            bad.join("; ")
        );
    }
    Ok(())
}
