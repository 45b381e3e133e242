//! `drover demo`: the reactive consolidation experiment on a real lab (drover-experiment's
//! crate doc has the scenario and why the default sizes). Progress on stderr; a table per
//! technique on stdout (or `--json`); the report folder with `--report DIR`. SIGINT, SIGTERM
//! and SIGHUP stop it cleanly: the run's future is dropped, which kills its manager and takes
//! its lab down; exit status 128 + the signal.

use crate::flags::{cores, whole, Typed};
use anyhow::Context;
use drover_experiment::report::{self, Summary};
use drover_experiment::{DemoConfig, RunOutcome};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// precopy, postcopy, hybrid, auto, or all (repeatable).
    #[arg(long, short = 't', default_value = "all")]
    technique: Vec<String>,
    /// Runs per technique, 1 to 100.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = whole::<u32>(1, 100))]
    repeat: u32,
    /// Print the summary as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Write the report here: series (JSON lines), summary.json, SVG figures, index.html.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Lab hosts, 2 to 9 (h1 holds the VMs; the others start in standby).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = whole::<u32>(2, 9))]
    hosts: u32,
    /// VMs packed on h1, 1 to 16.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole::<u32>(1, 16))]
    vms: u32,
    /// How many of them raise their demand (at most --vms).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole::<u32>(1, 16))]
    raise: u32,
    /// Guest memory of each VM (e.g. 256M).
    #[arg(long, default_value = "256M")]
    memory: String,
    /// Working set each VM rewrites (e.g. 64M; whole MiB).
    #[arg(long, default_value = "64M")]
    wss: String,
    /// Pages a second each VM touches while its demand is low.
    #[arg(long, default_value_t = 2000, allow_negative_numbers = true, value_parser = whole::<u64>(1, 1_000_000))]
    low_rate: u64,
    /// CPU cap of each host, cores.
    #[arg(long, value_name = "C", default_value = "1.5", allow_negative_numbers = true, value_parser = cores)]
    host_cpus: f64,
    /// Link rate of each host, each way (as `drover lab up --link`: 1Gbit/s, 100MB/s...).
    #[arg(long, default_value = "1Gbit/s")]
    link: String,
    /// Seconds between the VMs reporting and the raise.
    #[arg(long, value_name = "SECS", default_value_t = 10, allow_negative_numbers = true, value_parser = whole::<u64>(1, 3600))]
    settle: u64,
    /// Seconds the raised demand holds (the loaded phase).
    #[arg(long, value_name = "SECS", default_value_t = 30, allow_negative_numbers = true, value_parser = whole::<u64>(5, 3600))]
    hold: u64,
    /// Longest wait after the fall for the repack and a host back in standby, s.
    #[arg(long, value_name = "SECS", default_value_t = 60, allow_negative_numbers = true, value_parser = whole::<u64>(0, 3600))]
    repack_wait: u64,
    /// The agents' wake delay, s: standing for resume from suspend-to-RAM.
    #[arg(long, value_name = "SECS", default_value_t = 2, allow_negative_numbers = true, value_parser = whole::<u64>(0, 3600))]
    wake_delay: u64,
    /// How often the agents measure each VM's dirty rate, s (the agent's default is 30 s: the
    /// manager would price a VM raised since by its rate at low demand).
    #[arg(long, value_name = "SECS", default_value_t = 2, allow_negative_numbers = true, value_parser = whole::<u64>(1, 3600))]
    dirty_interval: u64,
    /// The lab's name (a-z, 0-9, at most 8); a lab of that name must not be up.
    #[arg(long, default_value = "demo")]
    lab_name: String,
}

fn config(args: &DemoArgs) -> anyhow::Result<DemoConfig> {
    let memory = Typed::size("--memory", &args.memory)?;
    let wss = Typed::size("--wss", &args.wss)?;
    if wss.value() % (1 << 20) != 0 || wss.value() == 0 {
        return Err(wss.refused("expected a whole number of MiB, at least 1"));
    }
    let link = Typed::rate("--link", &args.link)?;
    let config = DemoConfig {
        techniques: crate::bench_cmd::techniques(&args.technique)?,
        repeat: args.repeat,
        hosts: args.hosts,
        vms: args.vms,
        raise: args.raise,
        memory_bytes: memory.value(),
        wss_bytes: wss.value(),
        low_rate: args.low_rate,
        host_cpus: args.host_cpus,
        link_bps: link.value(),
        settle_s: args.settle,
        hold_s: args.hold,
        repack_wait_s: args.repack_wait,
        wake_delay_s: args.wake_delay,
        dirty_interval_s: args.dirty_interval,
        lab: args.lab_name.clone(),
        drover_bin: std::env::current_exe().context("locating the drover binary")?,
    };
    config.validate()?;
    Ok(config)
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let config = config(&args)?;
    // Without --report the manager's configuration and log go to a directory removed at the end.
    let scratch = match &args.report {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("a temporary directory")?),
    };
    let dir = match (&args.report, &scratch) {
        (Some(d), _) => {
            std::fs::create_dir_all(d).with_context(|| format!("--report {}", d.display()))?;
            d.clone()
        }
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => std::env::temp_dir(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let say = |line: &str| eprintln!("demo: {line}");
    let on_run = |o: &RunOutcome| {
        let s = &o.summary;
        eprintln!(
            "demo: [{}-{}] degradation {} %, detection {} s, relief {} s, integrity errors {}",
            s.technique.as_str(),
            s.run,
            opt(s.degradation_pct),
            opt(s.detection_s),
            opt(s.relief_s),
            s.integrity_errors
        );
        if args.report.is_some() {
            if let Err(e) = report::write_run(&dir, o, &config) {
                eprintln!("demo: {e}");
            }
        }
    };
    let outcome = runtime.block_on(async {
        // Listening starts before any lab exists, so no signal's default action can orphan one.
        let mut stop = crate::signals::StopSignals::listen()?;
        Ok::<_, std::io::Error>(tokio::select! {
            r = drover_experiment::run_all(&config, &dir, &say, on_run) => Ok(r),
            signal = stop.first() => Err(signal),
        })
    });
    let runs = match outcome.context("listening for SIGINT, SIGTERM and SIGHUP")? {
        Ok(runs) => runs?,
        Err((name, number)) => {
            drop(runtime);
            drop(scratch);
            eprintln!("demo stopped by {name}: its manager is killed and its lab is down");
            std::process::exit(128 + number);
        }
    };
    let summaries: Vec<&drover_experiment::RunSummary> = runs.iter().map(|r| &r.summary).collect();
    let owned: Vec<drover_experiment::RunSummary> =
        summaries.iter().map(|s| (*s).clone()).collect();
    let summary = Summary {
        config: &config,
        rows: report::rows(&config.techniques, &owned),
        runs: summaries,
    };
    if let Some(d) = &args.report {
        report::write_index(d, &summary)?;
        eprintln!("demo: report in {}", d.join("index.html").display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", report::table(&summary.rows));
        print!("{}", report::migration_lines(&owned));
    }
    Ok(())
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into())
}
