//! `drover migrate-bench` refuses settings outside the limits the agent's API enforces before it
//! builds an image or boots anything, and names the flag (and the unit) in its message.
//!
//! A stand-in `qemu-system-x86_64` first on PATH leaves a mark if anything starts it, so "no
//! QEMU was started" is checked, not assumed. Needs neither root nor QEMU.

use std::path::PathBuf;
use std::process::{Command, Output};

const DROVER: &str = env!("CARGO_BIN_EXE_drover");

/// Runs `drover migrate-bench ARGS` with the stand-in QEMU; returns its output and whether the
/// stand-in was started.
fn bench(test: &str, args: &[&str]) -> (Output, bool) {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("drover-bench-flags-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let marker = dir.join("qemu-started");
    let fake = dir.join("qemu-system-x86_64");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display()),
    )
    .expect("stand-in qemu");
    let mut perms = std::fs::metadata(&fake).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).expect("chmod");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(DROVER)
        .arg("migrate-bench")
        .args(args)
        .env("PATH", path)
        .output()
        .expect("run drover");
    let started = marker.exists();
    let _ = std::fs::remove_dir_all(&dir);
    (out, started)
}

#[test]
fn an_out_of_range_downtime_limit_fails_naming_the_flag_and_boots_nothing() {
    let (out, started) = bench(
        "downtime",
        &["--downtime-limit", "3000000", "-t", "precopy"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--downtime-limit"), "{stderr}");
    assert!(stderr.contains("600000"), "says what is accepted: {stderr}");
    assert!(!started, "a QEMU was started");
    assert!(out.stdout.is_empty(), "no table header before the error");
}

#[test]
fn a_bare_tiny_bandwidth_fails_saying_the_unit() {
    let (out, started) = bench("bandwidth", &["--bandwidth", "100", "-t", "precopy"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--bandwidth"), "{stderr}");
    assert!(stderr.contains("bytes per second"), "{stderr}");
    assert!(!started, "a QEMU was started");
}

#[test]
fn a_workload_that_does_not_fit_fails_before_booting() {
    let (out, started) = bench(
        "workload",
        &[
            "--memory",
            "128M",
            "--workload",
            "memtouch:wss=256M",
            "-t",
            "precopy",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("does not fit"), "{stderr}");
    assert!(!started, "a QEMU was started");
}
