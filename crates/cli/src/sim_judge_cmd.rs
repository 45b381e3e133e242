//! The dirty-rate model's judge and observation flags, and `drover sim calibrate` (fits the
//! judge to measured migrations): a thin shell over `drover_sim::judge` and
//! `drover_sim::observe`.

use anyhow::{bail, Context, Result};
use drover_core::migration::{PlanKnobs, Technique};
use drover_sim::judge::{fit, rows, Judge};
use drover_sim::observe::ObserveModel;
use drover_sim::MigrationModel;
use std::path::PathBuf;

/// How the dirty-rate model judges migrations and what policies see (flags of `sim`,
/// `sim compare`, `sim bench`).
#[derive(clap::Args, Clone)]
pub struct JudgeArgs {
    /// With the dirty model, who decides how migrations turn out: `calibrated` (a model fitted
    /// to measured migrations) or `cost-model` (drover-core's cost model, the one `drover`
    /// chooses techniques with) [default: calibrated].
    #[arg(long, value_name = "JUDGE")]
    judge: Option<String>,
    /// With the dirty model, the log-normal noise (σ of the log, 0 to 3) on the dirty rate and
    /// working set policies see [default: 0.3].
    #[arg(long, value_name = "SIGMA")]
    observe_sigma: Option<f64>,
    /// With the dirty model, decision steps between the behaviour measured and the step
    /// policies see it at, 0 to 1000 [default: 1].
    #[arg(long, value_name = "STEPS")]
    observe_lag: Option<usize>,
    /// With the dirty model, decision steps between measurements, 1 to 1000 [default: 1].
    #[arg(long, value_name = "STEPS")]
    observe_every: Option<usize>,
}

impl JudgeArgs {
    fn given(&self) -> Option<&'static str> {
        if self.judge.is_some() {
            Some("--judge")
        } else if self.observe_sigma.is_some() {
            Some("--observe-sigma")
        } else if self.observe_lag.is_some() {
            Some("--observe-lag")
        } else if self.observe_every.is_some() {
            Some("--observe-every")
        } else {
            None
        }
    }

    /// The migration model `--migration-model` names, with these flags applied.
    pub fn model(&self, name: &str, technique: Option<Technique>) -> Result<MigrationModel> {
        let dirty = match name {
            "benchmark" | "cloudsim" => false,
            "dirty" | "dirty-rate" => true,
            other => bail!("--migration-model '{other}': expected benchmark or dirty"),
        };
        if !dirty {
            if let Some(flag) = self.given() {
                bail!("{flag} needs --migration-model dirty (the benchmark model has no judge)");
            }
            return Ok(MigrationModel::Benchmark);
        }
        let mut model = MigrationModel::dirty_rate(technique);
        if let MigrationModel::DirtyRate { judge, observe, .. } = &mut model {
            match self.judge.as_deref() {
                None | Some("calibrated") => {}
                Some("cost-model") => *judge = Judge::CostModel(Default::default()),
                Some(other) => bail!("--judge '{other}': expected calibrated or cost-model"),
            }
            *observe = ObserveModel {
                sigma: self.observe_sigma.unwrap_or(observe.sigma),
                lag_steps: self.observe_lag.unwrap_or(observe.lag_steps),
                every_steps: self.observe_every.unwrap_or(observe.every_steps),
            }
            .checked()
            .context("--observe-sigma, --observe-lag, --observe-every")?;
        }
        Ok(model)
    }
}

#[derive(clap::Args)]
pub struct CalibrateArgs {
    /// `drover migrate-bench --json` lines to fit.
    #[arg(long, value_name = "FILE")]
    rows: PathBuf,
    /// Write the fitted parameters (JSON) here.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Fits the judge to the rows, prints the fit's error (in-sample and leave-one-out) as a
/// Markdown table, and writes the parameters with `--out`.
pub fn calibrate(a: CalibrateArgs) -> Result<()> {
    if let Some(out) = &a.out {
        crate::flags::output_file("--out", out)?;
    }
    let measured = rows::load_rows(&a.rows)?;
    let limit_s = PlanKnobs::default().downtime_limit_ms as f64 / 1000.0;
    let params =
        fit::fit(&measured, limit_s).with_context(|| format!("fitting {}", a.rows.display()))?;
    // The rows are checked one by one; this catches a fit they still leave unusable, before
    // anything is written.
    params
        .check()
        .with_context(|| format!("fitting {}", a.rows.display()))?;
    let fitted = fit::in_sample(&params, &measured);
    let (loo, skipped) = fit::leave_one_out(&measured, limit_s);
    // The rows the fit used: every row read is one (a row the fit cannot use is refused).
    println!("{} rows from {}\n", params.rows, a.rows.display());
    print!("{}", fit::markdown(&fitted, &loo));
    if skipped > 0 {
        println!(
            "({skipped} rows left out of leave-one-out: without them a parameter is undetermined)"
        );
    }
    let json = serde_json::to_string_pretty(&params)? + "\n";
    match &a.out {
        Some(path) => {
            std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("\n{json}"),
    }
    Ok(())
}
