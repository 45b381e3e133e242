//! `drover experiment wan-hybrid [--json] [--report DIR] [--repeat N]` + size flags: a VM with
//! busy memory and a busy local disk moved from h1 to h2 over a lab WAN with pure pre-copy,
//! pure post-copy and the WAN model's hybrid, each figure beside the model's prediction
//! (drover-experiment's `wan` module has the scenario and why the default sizes). A strategy
//! whose request is refused (the model's hybrid, until the agent runs `storage: hybrid`) is
//! reported as refused with the message; the others still run.

use crate::flags::{whole, Typed};
use anyhow::{anyhow, Context};
use drover_experiment::wan::config::{parse_wan, DEFAULT_WAN, DEFAULT_WORKLOAD};
use drover_experiment::wan::report::{self, Summary};
use drover_experiment::wan::{RunResult, Strategy, WanConfig, WanOutcome};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct WanArgs {
    /// Repetitions (each runs the three strategies, each on a fresh lab), 1 to 100.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = whole::<u32>(1, 100))]
    repeat: u32,
    /// Print the summary as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Write the report here: each run's series (JSON lines) and SVG figure, summary.json,
    /// index.html.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// The WAN between h1 and h2: RATE,DELAY[,jitter=J] (as `drover lab up --wan h1-h2=...`;
    /// DELAY one way).
    #[arg(long, allow_hyphen_values = true, default_value = DEFAULT_WAN)]
    wan: String,
    /// Guest memory (e.g. 256M).
    #[arg(long, allow_hyphen_values = true, default_value = "256M")]
    memory: String,
    /// The VM's local disk, created by h1's agent (e.g. 128M).
    #[arg(long, allow_hyphen_values = true, default_value = "128M")]
    disk_size: String,
    /// The guest's workload: memtouch:...+disk:... (memory and disk both busy).
    #[arg(long, default_value = DEFAULT_WORKLOAD)]
    workload: String,
    /// Seconds the agent profiles the VM for the model's plan before each migration, 1 to 20 (twice that is spent profiling).
    #[arg(long, value_name = "SECS", default_value_t = 3, allow_negative_numbers = true, value_parser = whole::<u32>(1, drover_api::wan::MAX_WINDOW_S as u64))]
    window: u32,
    /// The model's total-time budget, 1 to 86400 s (none by default).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = whole::<u32>(1, 86_400))]
    budget: Option<u32>,
    /// Seconds of throughput measured before the migration, 2 to 600.
    #[arg(long, value_name = "SECS", default_value_t = 5, allow_negative_numbers = true, value_parser = whole::<u64>(2, 600))]
    baseline: u64,
    /// Seconds observed after the migration, 2 to 600.
    #[arg(long, value_name = "SECS", default_value_t = 10, allow_negative_numbers = true, value_parser = whole::<u64>(2, 600))]
    after: u64,
    /// Longest wait for one migration (also the pre-copy's deadline), 10 to 3600 s.
    #[arg(long, value_name = "SECS", default_value_t = 300, allow_negative_numbers = true, value_parser = whole::<u64>(10, 3600))]
    migration_timeout: u64,
    /// The lab's name (a-z, 0-9, at most 8); a lab of that name must not be up.
    #[arg(long, default_value = "wanx")]
    lab_name: String,
}

fn config(args: &WanArgs) -> anyhow::Result<WanConfig> {
    let memory = Typed::size("--memory", &args.memory)?;
    let disk = Typed::size("--disk-size", &args.disk_size)?;
    let wan = parse_wan(&args.wan).map_err(|e| anyhow!(e))?;
    let config = WanConfig {
        repeat: args.repeat,
        wan,
        memory_bytes: memory.value(),
        disk_bytes: disk.value(),
        workload: args.workload.clone(),
        window_s: args.window,
        budget_s: args.budget,
        baseline_s: args.baseline,
        after_s: args.after,
        migration_timeout_s: args.migration_timeout,
        lab: args.lab_name.clone(),
        drover_bin: std::env::current_exe().context("locating the drover binary")?,
    };
    // A refusal quotes the flag as typed (`--memory 16M ...`), not the field in bytes.
    if let Err(e) = config.validate() {
        return Err(match [&memory, &disk].iter().find(|t| t.flag == e.flag) {
            Some(t) => t.refused(&e.expected),
            None if e.flag == "--wan" => anyhow!("--wan {}: {}", args.wan, e.expected),
            None => e.into(),
        });
    }
    Ok(config)
}

fn progress(o: &WanOutcome) {
    let r = &o.result;
    let f = crate::numfmt::one_decimal_or_dash;
    eprintln!(
        "experiment: [{}-{}] {}: downtime {} ms (predicted {}), total {} s (predicted {}), \
         agility {} s (predicted {}){}",
        r.strategy.as_str(),
        r.run,
        r.state,
        f(r.downtime_ms.measured),
        f(r.downtime_ms.predicted),
        f(r.total_s.measured),
        f(r.total_s.predicted),
        f(r.agility_s.measured),
        f(r.agility_s.predicted),
        r.error
            .as_ref()
            .map_or_else(String::new, |e| format!("; {e}"))
    );
}

pub fn run(args: WanArgs) -> anyhow::Result<()> {
    let config = config(&args)?;
    if let Some(d) = &args.report {
        crate::demo_cmd::report_dir(d)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let say = |line: &str| eprintln!("experiment: {line}");
    let on_run = |o: &WanOutcome| {
        progress(o);
        if let Some(d) = &args.report {
            if let Err(e) = report::write_run(d, o) {
                eprintln!("experiment: {e}");
            }
        }
    };
    let runs = crate::experiment_cmd::run_or_exit(
        runtime,
        drover_experiment::wan::run_all(&config, &say, on_run),
        "its lab is down",
    )?;
    let results: Vec<RunResult> = runs.iter().map(|r| r.result.clone()).collect();
    let rows = report::rows(&Strategy::ALL, &results);
    let summary = Summary {
        config: &config,
        verdict: report::verdict(&rows),
        rows,
        runs: results.iter().collect(),
    };
    if let Some(d) = &args.report {
        report::write_index(d, &summary)?;
        eprintln!("experiment: report in {}", d.join("index.html").display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", report::table(&summary.rows));
        print!("{}", report::run_lines(&results));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    fn args(extra: &[&str]) -> super::WanArgs {
        crate::flags::parse_args("wan-hybrid", extra)
    }

    #[test]
    fn defaults_and_refusals_quote_the_flag_as_typed() {
        let c = super::config(&args(&[])).expect("defaults");
        assert_eq!(
            (c.repeat, c.memory_bytes, c.disk_bytes),
            (3, 256 << 20, 128 << 20)
        );
        assert_eq!(
            (c.wan.rate.rate_bytes_per_sec, c.rtt_ms()),
            (12_500_000, 100)
        );
        for (flags, starts) in [
            (vec!["--memory", "16M"], "--memory 16M"),
            (vec!["--disk-size", "0"], "--disk-size 0"),
            (vec!["--wan", "100Mbit/s"], "--wan"),
            (vec!["--wan", "500kbit/s,50ms"], "--wan 500kbit/s,50ms"),
            // Above the WAN model's fastest link, which the agent's plan would refuse.
            (vec!["--wan", "13GB/s,50ms"], "--wan 13GB/s,50ms"),
            (vec!["--workload", "memtouch:wss=64M,rate=10"], "--workload"),
            (vec!["--lab-name", "X"], "--lab-name X"),
        ] {
            let e = super::config(&args(&flags)).expect_err(starts).to_string();
            assert!(e.starts_with(starts), "{flags:?}: {e}");
        }
    }
}
