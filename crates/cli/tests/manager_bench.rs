//! `drover manager bench`: the whole manager over the simulator, run small through the built
//! binary (its JSON report, and bad sizes refused naming the flag or the field).

use std::process::Command;

const DROVER: &str = env!("CARGO_BIN_EXE_drover");

fn bench(args: &[&str]) -> (bool, String, String) {
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new(DROVER)
        .args(["manager", "bench"])
        .args(args)
        .arg("--state-parent")
        .arg(state.path())
        .env_remove("DROVER_LOG")
        .output()
        .expect("run drover manager bench");
    let left = std::fs::read_dir(state.path()).map_or(0, |d| d.count());
    assert_eq!(left, 0, "the store's temporary directory is removed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_small_run_reports_every_look_as_json() {
    let (ok, out, err) = bench(&[
        "--hosts", "6", "--vms", "30", "--hours", "0.02", "--seed", "2", "--json",
    ]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(r["hosts"], 6);
    assert_eq!(r["vms"], 30);
    assert_eq!(r["simulated_s"], 72.0);
    assert!(r["looks"].as_u64().is_some_and(|n| n >= 72), "{r}");
    for stage in ["observe", "step", "store", "act", "upkeep"] {
        assert!(r["stages"][stage]["median_ms"].is_number(), "{stage}: {r}");
    }
    assert!(
        r["look"]["max_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{r}"
    );
}

#[test]
fn bad_sizes_are_refused_naming_them() {
    let (ok, _, err) = bench(&["--hours", "0"]);
    assert!(!ok);
    assert!(err.contains("hours = 0"), "{err}");
    let (ok, _, err) = bench(&["--hosts", "0"]);
    assert!(!ok);
    assert!(err.contains("--hosts"), "{err}");
}
