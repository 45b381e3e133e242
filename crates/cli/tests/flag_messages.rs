//! Every flag refusal quotes the flag and the text as typed, states the real range or rule
//! (never the Rust type's), and the size rules read the same from `vm create` and
//! `migrate-bench` as from the agent's API. Runs the built binary; each case fails before
//! anything is contacted, built or booted (a stand-in QEMU first on PATH would notice), so
//! neither root nor QEMU is needed.

use std::path::Path;
use std::process::Command;

const DROVER: &str = env!("CARGO_BIN_EXE_drover");

/// Runs drover with `args`, a stand-in QEMU that fails loudly first on PATH and an empty
/// state directory, and `RUST_BACKTRACE=1` (a refusal must not print a backtrace for it);
/// returns (success, stderr).
fn drover(args: &[&str], dir: &Path) -> (bool, String) {
    let fake = dir.join("qemu-system-x86_64");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'stand-in QEMU started' >&2\nexit 1\n",
    )
    .expect("fake");
    let mut perms = std::fs::metadata(&fake).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).expect("chmod");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(DROVER)
        .args(args)
        .env("PATH", path)
        .env("DROVER_STATE_DIR", dir.join("state"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run drover");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // 1: Drover's refusals; 2: clap's own (a flag's value parser).
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("error: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("backtrace"), "{args:?}: {stderr}");
    }
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn refusals_quote_the_flag_and_the_text_as_typed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let token = tmp.path().join("token");
    std::fs::write(&token, "secret\n").expect("token");
    let token = token.to_str().expect("utf-8");
    let state = tmp.path().join("agent-state");
    let state = state.to_str().expect("utf-8");
    // A disk name longer than a message quotes.
    let long_disk = "d".repeat(200);
    let cases: &[(&[&str], &str)] = &[
        // Rates: tc's units, one parser for --bandwidth and --link, and what a text became.
        (
            &["migrate-bench", "--bandwidth", "1bit/s"],
            "--bandwidth 1bit/s rounds to 0 bytes/s; expected at least 125000 bytes/s (1 Mbit/s)",
        ),
        (
            &["lab", "up", "--hosts", "1", "--link", "1bit/s"],
            "--link 1bit/s rounds to 0 bytes/s; expected at least 125000 bytes/s (1 Mbit/s)",
        ),
        (
            &["lab", "up", "--hosts", "1", "--link", "5 furlongs/s"],
            "mbps is megabytes per second, as tc reads it; write 300mbit or 300Mbit/s for megabits",
        ),
        (
            &["migrate-bench", "--bandwidth", "800Mb/s"],
            "--bandwidth '800Mb/s'",
        ),
        (
            &["agent", "--state-dir", state, "--token-file", token, "--link", "1bit/s"],
            "--link 1bit/s rounds to 0 bytes/s; expected at least 125000 bytes/s (1 Mbit/s)",
        ),
        (
            &["agent", "--state-dir", state, "--token-file", token, "--link", "1000gbps"],
            "--link 1000gbps is 1000000000000 bytes/s; expected at most 100000000000 bytes/s",
        ),
        // The flag's own choices, `all` included.
        (
            &["migrate-bench", "--technique", "bogus"],
            "--technique: unknown technique 'bogus': expected precopy, postcopy, hybrid, auto or all",
        ),
        // Beyond any size or rate: the flag, the text and the range.
        (
            &["migrate-bench", "--memory", "99999999999999999999"],
            "--memory '99999999999999999999' is out of range for a size: expected 0 to 16 EiB",
        ),
        (
            &["migrate-bench", "--bandwidth", "18446744073709551615"],
            "--bandwidth '18446744073709551615' is out of range for a rate: expected 0 to 16 EiB \
             (below 18446744073709551616 bytes/s)",
        ),
        // A negative rate is the flag's value, refused by the rate's own rule (not clap's
        // "unexpected argument").
        (
            &["experiment", "traffic-sensitive", "--out-rate", "-1"],
            "--out-rate '-1' is not a rate: expected a number followed by an optional unit",
        ),
        // A size is refused by its rule, without the API's field name.
        (
            &["experiment", "traffic-sensitive", "--memory", "1K"],
            "--memory 1K is 1024 bytes; expected 128 MiB to 1 TiB",
        ),
        // A range that depends on other flags says which.
        (
            &["experiment", "traffic-sensitive", "--concurrency", "9"],
            "--concurrency 9: expected 1 to 4 (the VMs: --out-vms + --in-vms)",
        ),
        // Numbers: the real range, negatives included.
        (
            &["vm", "create", "a", "--vcpus=-1"],
            "'-1' for '--vcpus <VCPUS>': -1 is not in 1..=64",
        ),
        (
            &["migrate-bench", "--repeat", "0"],
            "'0' for '--repeat <REPEAT>': 0 is not in 1..=1000",
        ),
        (
            &["migrate-bench", "--hybrid-fraction", "NaN"],
            "'NaN' for '--hybrid-fraction <F>': expected a fraction of RAM from 0 to 1",
        ),
        (
            &["agent", "--state-dir", state, "--token-file", token, "--wake-delay", "-1"],
            "'-1' for '--wake-delay <WAKE_DELAY>': expected seconds from 0 to 3600",
        ),
        // One rule, one message: the memory is at fault, named by its flag, as typed.
        (
            &["migrate-bench", "--memory", "48M"],
            "--memory 48M is 50331648 bytes; expected 128 MiB to 1 TiB (134217728 to 1099511627776 bytes)",
        ),
        (
            &["vm", "create", "a", "--memory", "1.5"],
            "--memory 1.5 rounds to 2 bytes; expected 128 MiB to 1 TiB",
        ),
        (
            &["vm", "create", "a", "--memory", "128M", "--workload", "memtouch:wss=100M"],
            "--workload 'memtouch:wss=100M': working set 100 MiB does not fit a 128 MiB guest",
        ),
        (
            &["migrate-bench", "--workload", "memtouch:wss=64M,rate=0"],
            "--workload 'memtouch:wss=64M,rate=0': bad value \"0\" for rate",
        ),
        (
            &["migrate-bench", "--workload", "memtouch:wss=0M"],
            "bad value \"0M\" for wss",
        ),
        // Addresses: the flag, not the API's field.
        (
            &["vm", "list", "--agent", "198.18.0.11:7700", "--token-file", token],
            "--agent '198.18.0.11:7700' is not valid: expected an agent URL",
        ),
        (
            &["vm", "migrate", "a", "--to", "198.18.0.11:7700", "--agent", "http://127.0.0.1:9", "--token-file", token],
            "--to '198.18.0.11:7700' is not valid",
        ),
        // A WAN plan needs a link: given, or the lab's own with --to.
        (
            &["vm", "wan-plan", "a", "--rtt-ms", "50"],
            "--link <LINK>",
        ),
        (
            &["vm", "wan-plan", "a", "--link", "10kbit/s", "--rtt-ms", "50"],
            "expected 1Mbit/s to 100Gbit/s",
        ),
        (
            &["sim", "--policy", "thr-mmt-NaN", "--synthetic", "10"],
            "--policy: bad parameter 'NaN' in 'thr-mmt-NaN'",
        ),
        (
            &["sim", "compare", "--policies", "lr-mmt-1.2,thr-mmt-5", "--synthetic", "10"],
            "parameter '5' in 'thr-mmt-5' is out of range: expected a utilization threshold",
        ),
        // A text too long to quote whole is cut, and the message says so.
        (
            &["vm", "create", "a", "--disk", &long_disk, "--agent", "http://127.0.0.1:9", "--token-file", token],
            "... (200 characters, first 80 shown) is not valid",
        ),
    ];
    for (args, wanted) in cases {
        let (ok, stderr) = drover(args, tmp.path());
        assert!(!ok, "{args:?} went ahead");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
        assert!(!stderr.contains("4294967295"), "{args:?}: {stderr}");
        assert!(!stderr.contains("stand-in QEMU"), "{args:?} started a QEMU");
        if args.contains(&"--memory") && wanted.contains("expected 128 MiB") {
            assert!(
                !stderr.contains("workload"),
                "blames the workload: {stderr}"
            );
        }
    }
}
