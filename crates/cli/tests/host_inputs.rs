//! `drover agent` and `drover lab up` refuse capacities that cannot work, at once and naming
//! the flag, instead of starting an agent that reports -1 CPUs or waiting for one that cannot
//! start. Runs the built binary; nothing is created, so no root is needed.

use std::process::Command;

const DROVER: &str = env!("CARGO_BIN_EXE_drover");

/// Runs drover with `args` and `DROVER_STATE_DIR` in `state`; returns (success, stderr).
fn drover(args: &[&str], state: &std::path::Path) -> (bool, String) {
    let out = Command::new(DROVER)
        .args(args)
        .env("DROVER_STATE_DIR", state)
        .output()
        .expect("run drover");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn agent_refuses_impossible_capacities_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "secret\n").unwrap();
    let state = tmp.path().join("agent");
    let base = [
        "agent",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        state.to_str().unwrap(),
        "--token-file",
        token.to_str().unwrap(),
    ];
    let cases: &[(&[&str], &str)] = &[
        (&["--cpus=-1", "--memory", "0"], "--cpus"),
        (&["--cpus", "NaN"], "--cpus"),
        (&["--cpus", "inf"], "--cpus"),
        (&["--cpus", "0"], "--cpus"),
        (&["--memory", "0"], "--memory"),
        (&["--memory", "1M"], "--memory"),
        // The range, naming the flag and quoting the text.
        (
            &["--cpus", "1e300"],
            "'1e300' for '--cpus <CPUS>': expected 0.1 to 1024 cores",
        ),
        (
            &["--cpus", "0.0001"],
            "'0.0001' for '--cpus <CPUS>': expected 0.1 to 1024 cores",
        ),
        // 64 MiB was once "what one guest needs"; the smallest VM then got 409.
        (&["--memory", "64M"], "at least 234 MiB"),
        (&["--memory", "64M"], "QEMU's overhead"),
    ];
    for (extra, flag) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let (ok, stderr) = drover(&args, tmp.path());
        assert!(!ok, "{extra:?} started");
        assert!(stderr.contains(flag), "{extra:?}: {stderr}");
        assert!(!state.exists(), "{extra:?} made its state dir");
    }
}

#[test]
fn lab_up_refuses_a_lab_that_cannot_work_before_making_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--hosts", "1", "--host-memory", "0"], "--host-memory"),
        (
            &["--hosts", "1", "--host-memory", "10M"],
            "at least 234 MiB",
        ),
        (&["--hosts", "1", "--host-memory", "64M"], "QEMU's overhead"),
        (&["--hosts", "1", "--host-cpus=-1"], "--host-cpus"),
        (&["--hosts", "1", "--host-cpus", "NaN"], "--host-cpus"),
        (
            &["--hosts", "1", "--host-cpus", "1e300"],
            "expected 0.1 to 1024 cores",
        ),
        (&["--hosts", "0"], "--hosts"),
        (&["--hosts", "1000"], "--hosts"),
        (&["--hosts", "1", "--link", "0B/s"], "--link"),
        // What tc takes but the agents refuse: refused at once, in the agents' words.
        (
            &["--hosts", "1", "--link", "1kB/s"],
            "--link 1kB/s is 1000 bytes/s; expected at least 125000 bytes/s (1 Mbit/s)",
        ),
        (&["--hosts", "1", "--agent-timeout", "0"], "--agent-timeout"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["lab", "up", "--name", "inputs"];
        args.extend_from_slice(extra);
        let (ok, stderr) = drover(&args, tmp.path());
        assert!(!ok, "{extra:?} went ahead");
        assert!(stderr.contains(want), "{extra:?}: {stderr}");
        assert!(!tmp.path().join("lab").exists(), "{extra:?} made a lab dir");
    }
}
