//! `drover experiment traffic-sensitive`: a group of network-bound VMs evacuated from h1 to h2
//! of a 2-host lab with all pre-copy, all post-copy and core's traffic-sensitive group choice
//! (drover-experiment's `traffic` module has the scenario and why the default sizes).
//! `drover experiment wan-hybrid`: a VM with busy memory and a busy local disk moved from h1 to
//! h2 over a lab WAN with pure pre-copy, pure post-copy and the WAN model's hybrid
//! (drover-experiment's `wan` module). Progress on stderr; a table on stdout (or `--json`); the
//! report folder with `--report DIR`. SIGINT, SIGTERM and SIGHUP stop it cleanly: the run's
//! future is dropped, which kills the peer and takes the lab down; exit status 128 + the signal.

use crate::flags::{whole, Typed};
use anyhow::Context;
use drover_experiment::traffic::report::{self, Summary};
use drover_experiment::traffic::{RunResult, Strategy, TrafficConfig, TrafficOutcome};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum ExperimentCmd {
    /// Evacuate co-located network-bound VMs (half sending, half receiving) over shaped links
    /// with all pre-copy, all post-copy and the traffic-sensitive group choice; measured
    /// against predicted.
    TrafficSensitive(TrafficArgs),
    /// Move a VM whose memory and local disk are both busy over a lab WAN (default 100 Mbit/s,
    /// 50 ms) with pure pre-copy, pure post-copy and the WAN model's hybrid: downtime, total
    /// time, post-copy degradation and restoration agility, measured against predicted.
    WanHybrid(crate::wan_exp_cmd::WanArgs),
}

#[derive(clap::Args)]
pub struct TrafficArgs {
    /// Repetitions (each runs the three strategies on a fresh lab), 1 to 100.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = whole::<u32>(1, 100))]
    repeat: u32,
    /// Print the summary as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Write the report here: series and peer reports (JSON lines), summary.json, SVG figures,
    /// index.html.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Link rate of each host, each way (as `drover lab up --link`: 200Mbit/s, 25MB/s...).
    #[arg(long, default_value = "200Mbit/s", allow_hyphen_values = true)]
    link: String,
    /// Guest memory of each VM (e.g. 256M).
    #[arg(long, default_value = "128M", allow_hyphen_values = true)]
    memory: String,
    /// Rate of each sending VM's flow (e.g. 8MB/s; a bare number is bytes/s; rounded down to
    /// whole KiB/s).
    #[arg(long, default_value = "8MB/s", allow_hyphen_values = true)]
    out_rate: String,
    /// Rate of each receiving VM's flow.
    #[arg(long, default_value = "8MB/s", allow_hyphen_values = true)]
    in_rate: String,
    /// Sending VMs (out1..), 0 to 8.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole::<u32>(0, 8))]
    out_vms: u32,
    /// Receiving VMs (in1..), 0 to 8.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole::<u32>(0, 8))]
    in_vms: u32,
    /// Most migrations at a time, 1 to the number of VMs.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole::<u32>(1, 16))]
    concurrency: u32,
    /// Seconds between every flow running and the baseline, 0 to 600.
    #[arg(long, value_name = "SECS", default_value_t = 4, allow_negative_numbers = true, value_parser = whole::<u64>(0, 600))]
    settle: u64,
    /// Also run the paper's per-VM rule (post-copy for senders, pre-copy for receivers) in
    /// each repetition, after the three compared strategies.
    #[arg(long)]
    paper_rule: bool,
    /// Seconds of traffic measured before the evacuation, 2 to 600.
    #[arg(long, value_name = "SECS", default_value_t = 8, allow_negative_numbers = true, value_parser = whole::<u64>(2, 600))]
    baseline: u64,
    /// Seconds observed after the last migration, 0 to 600.
    #[arg(long, value_name = "SECS", default_value_t = 2, allow_negative_numbers = true, value_parser = whole::<u64>(0, 600))]
    after: u64,
    /// Longest wait for one migration (also each pre-copy's deadline), 10 to 3600 s.
    #[arg(long, value_name = "SECS", default_value_t = 180, allow_negative_numbers = true, value_parser = whole::<u64>(10, 3600))]
    migration_timeout: u64,
    /// The lab's name (a-z, 0-9, at most 8); a lab of that name must not be up.
    #[arg(long, default_value = "trx")]
    lab_name: String,
}

fn config(args: &TrafficArgs) -> anyhow::Result<TrafficConfig> {
    let memory = Typed::size("--memory", &args.memory)?;
    let link = Typed::rate("--link", &args.link)?;
    let out_rate = Typed::rate("--out-rate", &args.out_rate)?;
    let in_rate = Typed::rate("--in-rate", &args.in_rate)?;
    let mut strategies = Strategy::COMPARED.to_vec();
    if args.paper_rule {
        strategies.push(Strategy::PaperRule);
    }
    let config = TrafficConfig {
        repeat: args.repeat,
        strategies,
        link_bps: link.value(),
        memory_bytes: memory.value(),
        out_rate_bps: out_rate.value(),
        in_rate_bps: in_rate.value(),
        out_vms: args.out_vms,
        in_vms: args.in_vms,
        settle_s: args.settle,
        baseline_s: args.baseline,
        after_s: args.after,
        concurrency: args.concurrency,
        migration_timeout_s: args.migration_timeout,
        lab: args.lab_name.clone(),
        drover_bin: std::env::current_exe().context("locating the drover binary")?,
        ..TrafficConfig::default()
    };
    // A refusal quotes the flag as typed (`--link 1bit/s ...`), not the field in bytes.
    if let Err(e) = config.validate() {
        let typed = [&link, &memory, &out_rate, &in_rate];
        return Err(match typed.iter().find(|t| t.flag == e.flag) {
            Some(t) => t.refused(&e.expected),
            None => e.into(),
        });
    }
    Ok(config)
}

pub fn run(cmd: ExperimentCmd) -> anyhow::Result<()> {
    match cmd {
        ExperimentCmd::TrafficSensitive(args) => run_traffic(args),
        ExperimentCmd::WanHybrid(args) => crate::wan_exp_cmd::run(args),
    }
}

fn run_traffic(args: TrafficArgs) -> anyhow::Result<()> {
    let config = config(&args)?;
    if let Some(d) = &args.report {
        crate::demo_cmd::report_dir(d)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let say = |line: &str| eprintln!("experiment: {line}");
    let on_run = |o: &TrafficOutcome| {
        let r = &o.result;
        eprintln!(
            "experiment: [{}-{}] evacuation {} s (predicted {:.1}), degradation {} % \
             (predicted {:.1}), failed migrations {}",
            r.strategy.as_str(),
            r.run,
            crate::numfmt::one_decimal_or_dash(r.evacuation_s),
            r.predicted_evacuation_s,
            crate::numfmt::one_decimal_or_dash(r.degradation_pct),
            r.predicted_degradation_pct,
            r.failed_migrations
        );
        if let Some(d) = &args.report {
            if let Err(e) = report::write_run(d, o, &config) {
                eprintln!("experiment: {e}");
            }
        }
    };
    let runs = run_or_exit(
        runtime,
        drover_experiment::traffic::run_all(&config, &say, on_run),
        "its peer is killed and its lab is down",
    )?;
    let results: Vec<RunResult> = runs.iter().map(|r| r.result.clone()).collect();
    let rows = report::rows(&config.strategies, &results);
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
        print!("{}", report::vm_lines(&results));
    }
    Ok(())
}

/// Runs an experiment's `work` on `runtime` until it ends or a signal stops it; stopped, the
/// work is dropped (its lab taken down: `left` says what), the runtime too, and the process
/// exits with 128 + the signal.
///
/// # Errors
/// The experiment's, or the signals' that could not be listened for.
pub fn run_or_exit<T, E>(
    runtime: tokio::runtime::Runtime,
    work: impl std::future::Future<Output = Result<T, E>>,
    left: &str,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let outcome = crate::signals::run_or_stop(&runtime, work);
    match outcome.context("listening for SIGINT, SIGTERM and SIGHUP")? {
        Ok(runs) => Ok(runs?),
        Err((name, number)) => {
            drop(runtime);
            eprintln!("experiment stopped by {name}: {left}");
            std::process::exit(128 + number);
        }
    }
}

#[cfg(test)]
mod tests {
    fn args(extra: &[&str]) -> super::TrafficArgs {
        crate::flags::parse_args("traffic-sensitive", extra)
    }

    #[test]
    fn refusals_quote_the_flag_as_typed() {
        let c = super::config(&args(&[])).expect("defaults");
        assert_eq!((c.link_bps, c.out_rate_bps), (25_000_000, 8_000_000));
        let e = super::config(&args(&["--link", "1bit/s"]))
            .expect_err("slow")
            .to_string();
        assert!(e.starts_with("--link 1bit/s"), "{e}");
        let e = super::config(&args(&["--out-rate", "30MB/s"]))
            .expect_err("above")
            .to_string();
        assert!(e.starts_with("--out-rate 30MB/s"), "{e}");
        assert!(e.contains("at most the link"), "{e}");
        let e = super::config(&args(&["--memory", "64M"]))
            .expect_err("small")
            .to_string();
        assert!(e.starts_with("--memory 64M"), "{e}");
        let e = super::config(&args(&["--concurrency", "5"]))
            .expect_err("5 of 4")
            .to_string();
        assert!(e.starts_with("--concurrency 5"), "{e}");
        let e = super::config(&args(&["--lab-name", "X"]))
            .expect_err("name")
            .to_string();
        assert!(e.starts_with("--lab-name X"), "{e}");
    }
}
