//! `drover experiment traffic-sensitive` end to end at reduced size and length (real lab,
//! agents, QEMU, the traffic peer): one sending and one receiving VM evacuated once per
//! strategy; every migration completes, the figures are there, the report is written, and no
//! lab or peer is left; a SIGTERM in the middle stops it with 128 + 15 and also leaves nothing.
//! Needs root, `ip`, `tc` and QEMU (a failure under CI when missing, a loud skip elsewhere).

mod common;

use common::lab::{assert_no_lab, serial, terminate, Down, DROVER};
use drover_testkit::{processes_mentioning, require, Need, IP, QEMU, TC};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn lab_name(test: char) -> String {
    format!("t{test}{}", std::process::id() % 100_000)
}

/// What of the lab's peer could be left: its server's command line.
fn peer_mark(lab: &str) -> Vec<String> {
    vec![format!("--name {lab} --serve-here")]
}

/// The reduced experiment: 2 VMs of 128 MiB at 1 MB/s over 100 Mbit/s links, one at a time.
fn experiment_args(lab: &str, report: &Path) -> Vec<String> {
    [
        "experiment",
        "traffic-sensitive",
        "--out-vms",
        "1",
        "--in-vms",
        "1",
        "--memory",
        "128M",
        "--link",
        "100Mbit/s",
        "--out-rate",
        "1MB/s",
        "--in-rate",
        "1MB/s",
        "--concurrency",
        "1",
        "--baseline",
        "3",
        "--after",
        "1",
        "--json",
        "--lab-name",
        lab,
        "--report",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([report.display().to_string()])
    .collect()
}

#[test]
fn every_strategy_evacuates_measures_and_cleans_up() {
    require!(Need::Root, IP, TC, QEMU);
    let _serial = serial();
    let lab = lab_name('e');
    let _down = Down(lab.clone());
    let report = tempfile::tempdir().expect("tempdir");
    let out = Command::new(DROVER)
        .args(experiment_args(&lab, report.path()))
        .stderr(Stdio::inherit())
        .output()
        .expect("run drover experiment");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "drover experiment failed: {text}");
    let summary: Value = serde_json::from_str(&text).expect("summary JSON");
    let runs = summary["runs"].as_array().expect("runs");
    let strategies: Vec<&str> = runs.iter().filter_map(|r| r["strategy"].as_str()).collect();
    assert_eq!(
        strategies,
        ["all-precopy", "all-postcopy", "traffic-sensitive"]
    );
    for run in runs {
        assert_eq!(run["failed_migrations"], 0, "{run}");
        assert!(
            run["evacuation_s"].as_f64().is_some_and(|e| e > 0.0),
            "{run}"
        );
        assert!(run["degradation_pct"].as_f64().is_some(), "{run}");
        let vms = run["vms"].as_array().expect("vms");
        assert_eq!(vms.len(), 2, "{run}");
        for vm in vms {
            assert_eq!(vm["state"], "completed", "{vm}");
            // The flow ran before the evacuation at about its rate (1 MB/s one way).
            let before = vm["before_bps"].as_f64().unwrap_or(0.0);
            assert!((5e5..2e6).contains(&before), "{vm}");
        }
    }
    let techniques = |i: usize| -> Vec<String> {
        runs[i]["vms"]
            .as_array()
            .map(|v| v.iter().map(|x| x["technique"].to_string()).collect())
            .unwrap_or_default()
    };
    assert!(
        techniques(0).iter().all(|t| t == "\"precopy\""),
        "{:?}",
        techniques(0)
    );
    assert!(
        techniques(1).iter().all(|t| t == "\"postcopy\""),
        "{:?}",
        techniques(1)
    );
    assert_eq!(summary["rows"].as_array().map(Vec::len), Some(3));
    for file in [
        "summary.json",
        "index.html",
        "traffic-sensitive-1.svg",
        "series-traffic-sensitive-1.jsonl",
        "peer-all-precopy-1.jsonl",
    ] {
        let path = report.path().join(file);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{} missing or empty", path.display());
    }
    let svg = std::fs::read_to_string(report.path().join("traffic-sensitive-1.svg")).expect("svg");
    assert!(
        svg.contains("<svg") && svg.contains("h1 sends"),
        "not a figure"
    );
    assert_no_lab(&lab, &peer_mark(&lab));
}

#[test]
fn sigterm_mid_run_takes_the_lab_and_the_peer_down() {
    require!(Need::Root, IP, TC, QEMU);
    let _serial = serial();
    let lab = lab_name('s');
    let _down = Down(lab.clone());
    let report = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(DROVER)
        .args(experiment_args(&lab, report.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run drover experiment");
    // Once the peer serves, the lab has agents, a peer and (soon) VMs to remove.
    let start = Instant::now();
    while processes_mentioning(&peer_mark(&lab)[0]).is_empty() {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("drover experiment ended before its peer started: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "no peer within 240 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let status = terminate(&mut child, "drover experiment");
    assert_eq!(status.code(), Some(128 + 15), "{status}");
    assert_no_lab(&lab, &peer_mark(&lab));
}
