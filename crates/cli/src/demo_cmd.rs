//! `drover demo`: the reactive consolidation experiment on a real lab (drover-experiment's
//! crate doc has the scenario and why the default sizes). Progress on stderr; a table per
//! technique on stdout (or `--json`); the report folder with `--report DIR`. SIGINT, SIGTERM
//! and SIGHUP stop it cleanly: the run's future is dropped, which kills its manager and takes
//! its lab down; exit status 128 + the signal.

use crate::flags::{cores, whole, Typed};
use anyhow::Context;
use drover_experiment::report::{self, Summary};
use drover_experiment::{DemoConfig, RunOutcome, RunSummary};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// precopy, postcopy, hybrid, auto, or all (repeatable; each technique runs once, in the
    /// order first named, so `-t postcopy -t all` runs postcopy then the others).
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
    /// How many of them raise their demand (at most --vms; default 2, or 1 with --vms 1).
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<u32>(1, 16))]
    raise: Option<u32>,
    /// Guest memory of each VM (e.g. 320M).
    #[arg(long, allow_hyphen_values = true, default_value = "320M")]
    memory: String,
    /// Working set each VM rewrites (e.g. 192M; whole MiB).
    #[arg(long, allow_hyphen_values = true, default_value = "192M")]
    wss: String,
    /// Pages a second each VM touches while its demand is low.
    #[arg(long, default_value_t = 2000, allow_negative_numbers = true, value_parser = whole::<u64>(1, 1_000_000))]
    low_rate: u64,
    /// How hard the raised VMs work: a whole percent (1-100) of each guest's own full speed
    /// (that share of a vCPU, memory-intensive; the guest re-measures its speed every 5 s),
    /// or max (flat out: a full core each).
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "PCT|max",
        default_value = "60"
    )]
    high_demand: String,
    /// CPU cap of each host, cores.
    #[arg(long, value_name = "C", default_value = "1.2", allow_negative_numbers = true, value_parser = cores)]
    host_cpus: f64,
    /// Link rate of each host, each way (as `drover lab up --link`: 1Gbit/s, 100MB/s...).
    #[arg(long, allow_hyphen_values = true, default_value = "1Gbit/s")]
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
    /// How often the agents measure each VM's dirty rate, s (default: the agent's, 30 s; an
    /// agent measures a VM again as soon as its pace moves, a raise included).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = whole::<u64>(1, 3600))]
    dirty_interval: Option<u64>,
    /// The lab's name (a-z, 0-9, at most 8); a lab of that name must not be up.
    #[arg(long, default_value = "demo")]
    lab_name: String,
}

/// Makes the `--report` directory; an existing file (or a file on the way) is "not a
/// directory", said as such rather than as the OS's "File exists".
pub(crate) fn report_dir(d: &std::path::Path) -> anyhow::Result<()> {
    let flag = format!("--report {}", d.display());
    if let Some(file) = d.ancestors().find(|a| a.exists() && !a.is_dir()) {
        if file == d {
            anyhow::bail!("{flag}: is not a directory");
        }
        anyhow::bail!("{flag}: {} is not a directory", file.display());
    }
    std::fs::create_dir_all(d).with_context(|| flag)
}

/// `--raise` as given, else two VMs, or every VM when there are fewer.
fn raise_of(raise: Option<u32>, vms: u32) -> u32 {
    raise.unwrap_or(vms.min(2))
}

fn config(args: &DemoArgs) -> anyhow::Result<DemoConfig> {
    let memory = Typed::size("--memory", &args.memory)?;
    let wss = Typed::size("--wss", &args.wss)?;
    if wss.value() % (1 << 20) != 0 || wss.value() == 0 {
        return Err(wss.refused("expected a whole number of MiB, at least 1"));
    }
    let link = Typed::rate("--link", &args.link)?;
    let high_demand = drover_experiment::HighDemand::parse(&args.high_demand)
        .map_err(|expected| anyhow::anyhow!("--high-demand {}: {expected}", args.high_demand))?;
    let config = DemoConfig {
        techniques: crate::bench_cmd::techniques(&args.technique)?,
        repeat: args.repeat,
        hosts: args.hosts,
        vms: args.vms,
        raise: raise_of(args.raise, args.vms),
        memory_bytes: memory.value(),
        wss_bytes: wss.value(),
        low_rate: args.low_rate,
        high_demand,
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
    // The flags' own checks first, so a refusal quotes the flag and the text as typed
    // (`--link 1bit/s ...`, `--memory 64M ...`) rather than the config's field in bytes.
    drover_core::migration::knobs::check_link_bps(config.link_bps)
        .map_err(|expected| link.refused(&expected))?;
    if let Err(e) = drover_guest::fit::check_vm(1, config.memory_bytes, &config.low_workload()) {
        return Err(match e.setting() {
            drover_guest::fit::Setting::Workload => {
                anyhow::anyhow!(e.message("--wss", &args.wss, None))
            }
            _ => crate::flags::VmFlags {
                vcpus: None,
                memory: &memory,
                workload: &args.wss,
            }
            .refused(&e),
        });
    }
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
            report_dir(d)?;
            let removed =
                report::clear_earlier(d).with_context(|| format!("--report {}", d.display()))?;
            if removed > 0 {
                eprintln!(
                    "demo: removed {removed} file(s) of an earlier demo from {}",
                    d.display()
                );
            }
            d.clone()
        }
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => std::env::temp_dir(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let say = |line: &str| eprintln!("demo: {line}");
    // Every run that ended, kept outside the demo's future so a signal does not lose them.
    let ended = std::cell::RefCell::new(Vec::<RunSummary>::new());
    let on_run = |o: &RunOutcome| {
        let s = &o.summary;
        eprintln!(
            "demo: [{}-{}] degradation {} %, detection {} s, relief {} s, integrity errors {}",
            s.technique.as_str(),
            s.run,
            crate::numfmt::one_decimal_or_dash(s.degradation_pct),
            crate::numfmt::one_decimal_or_dash(s.detection_s),
            crate::numfmt::one_decimal_or_dash(s.relief_s),
            s.integrity_errors
        );
        if args.report.is_some() {
            if let Err(e) = report::write_run(&dir, o, &config) {
                eprintln!("demo: {e}");
            }
        }
        ended.borrow_mut().push(s.clone());
    };
    let outcome = crate::signals::run_or_stop(
        &runtime,
        drover_experiment::run_all(&config, &dir, &say, on_run),
    );
    let failure = match outcome.context("listening for SIGINT, SIGTERM and SIGHUP")? {
        Ok(outcome) => outcome?.failure,
        Err((name, number)) => {
            drop(runtime);
            drop(scratch);
            eprintln!("demo stopped by {name}: its manager is killed and its lab is down");
            if !ended.borrow().is_empty() {
                eprintln!("demo: the runs that ended before it follow");
                finish(&args, &config, &ended.borrow())?;
            }
            std::process::exit(128 + number);
        }
    };
    if let Some(e) = &failure {
        eprintln!("demo: {e}; the runs that ended before it follow");
    }
    finish(&args, &config, &ended.borrow())?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// The report's index (with `--report`) and the table (or `--json`) over the runs that ended.
fn finish(args: &DemoArgs, config: &DemoConfig, runs: &[RunSummary]) -> anyhow::Result<()> {
    if runs.is_empty() {
        // A table of zeros would read as a clean run.
        eprintln!("demo: no run ended, so there is no table");
        return Ok(());
    }
    let summary = Summary {
        config,
        rows: report::rows(&config.techniques, runs),
        runs: runs.iter().collect(),
    };
    if let Some(d) = &args.report {
        report::write_index(d, &summary)?;
        eprintln!("demo: report in {}", d.join("index.html").display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", report::table(&summary.rows));
        print!("{}", report::migration_lines(runs));
        print!("{}", report::note_lines(runs));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{raise_of, report_dir};
    use drover_core::migration::Technique;

    #[test]
    fn all_with_other_techniques_runs_each_once() {
        let raw = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got =
            crate::bench_cmd::techniques(&raw(&["postcopy", "all", "postcopy"])).expect("valid");
        assert_eq!(got[0], Technique::Postcopy);
        assert_eq!(got.len(), Technique::ALL.len());
    }

    #[test]
    fn a_report_naming_a_file_is_not_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("r");
        std::fs::write(&file, "").expect("file");
        let e = report_dir(&file).expect_err("a file").to_string();
        assert_eq!(
            e,
            format!("--report {}: is not a directory", file.display())
        );
        let e = report_dir(&file.join("sub"))
            .expect_err("under a file")
            .to_string();
        assert!(
            e.ends_with(&format!("{} is not a directory", file.display())),
            "{e}"
        );
        report_dir(&dir.path().join("a/b")).expect("made");
        assert!(dir.path().join("a/b").is_dir());
    }

    fn args(extra: &[&str]) -> super::DemoArgs {
        crate::flags::parse_args("demo", extra)
    }

    #[test]
    fn refusals_quote_the_flag_as_typed() {
        let e = super::config(&args(&["--link", "1bit/s"]))
            .expect_err("too slow")
            .to_string();
        assert!(e.starts_with("--link 1bit/s"), "{e}");
        assert!(e.contains("125000 bytes/s"), "{e}");
        let e = super::config(&args(&["--memory", "64M"]))
            .expect_err("too small")
            .to_string();
        assert!(e.starts_with("--memory 64M"), "{e}");
        assert!(!e.contains("memory_bytes"), "{e}");
        let e = super::config(&args(&["--memory", "-5M"]))
            .expect_err("negative")
            .to_string();
        assert!(e.starts_with("--memory '-5M' is not a size"), "{e}");
        let e = super::config(&args(&["--wss", "512M"]))
            .expect_err("does not fit")
            .to_string();
        assert!(e.starts_with("--wss"), "{e}");
        assert!(!e.contains("memory_bytes"), "{e}");
        assert_eq!(
            super::config(&args(&["--vms", "1", "--host-cpus", "0.9"]))
                .expect("valid")
                .raise,
            1
        );
        let e = super::config(&args(&["--vms", "1"]))
            .expect_err("one raised VM cannot overload a 1.2-core host")
            .to_string();
        assert!(e.starts_with("--raise 1: "), "{e}");
        let e = super::config(&args(&["--high-demand", "max"]))
            .expect_err("a VM flat out fits no 1.2-core host under the target")
            .to_string();
        assert!(e.starts_with("--high-demand max: "), "{e}");
        let e = super::config(&args(&["--high-demand", "150"]))
            .expect_err("over 100")
            .to_string();
        assert!(e.starts_with("--high-demand 150: expected"), "{e}");
        assert_eq!(
            super::config(&args(&["--high-demand", "40%"]))
                .expect("valid")
                .high_demand,
            drover_experiment::HighDemand::Pct(40)
        );
    }

    #[test]
    fn the_flags_defaults_are_the_configs() {
        let defaults = drover_experiment::DemoConfig::default();
        let mut from_flags = super::config(&args(&[])).expect("valid");
        from_flags.drover_bin = defaults.drover_bin.clone();
        assert_eq!(from_flags, defaults);
    }

    #[test]
    fn raise_defaults_to_at_most_the_vms() {
        assert_eq!(raise_of(None, 1), 1);
        assert_eq!(raise_of(None, 2), 2);
        assert_eq!(raise_of(None, 5), 2);
        assert_eq!(raise_of(Some(3), 5), 3);
    }
}
