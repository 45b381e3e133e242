//! `drover sim calibrate` and the dirty-rate model's judge and observation flags, as a user
//! meets them. Runs the built binary; no root, no QEMU.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DROVER: &str = env!("CARGO_BIN_EXE_drover");

fn drover(args: &[&str]) -> Output {
    Command::new(DROVER)
        .args(args)
        .output()
        .expect("run drover")
}

/// `drover sim calibrate --rows ROWS [--out OUT]`.
fn calibrate(rows: &Path, out: Option<&Path>) -> Output {
    let mut args = vec![
        "sim",
        "calibrate",
        "--rows",
        rows.to_str().expect("utf-8 path"),
    ];
    if let Some(out) = out {
        args.extend(["--out", out.to_str().expect("utf-8 path")]);
    }
    drover(&args)
}

fn calibration(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sim/data/calibration")
        .join(file)
}

#[test]
fn calibrate_refits_the_committed_parameters_and_reports_the_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out_file = tmp.path().join("judge.json");
    let rows = calibration("rows.jsonl");
    let out = calibrate(&rows, Some(out_file.as_path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| precopy | duration s |"), "{stdout}");
    assert!(stdout.contains("leave-one-out"), "{stdout}");
    let written = std::fs::read_to_string(&out_file).expect("written");
    let committed = std::fs::read_to_string(calibration("judge.json")).expect("committed");
    assert_eq!(written, committed);
}

#[test]
fn a_bad_rows_file_is_named_with_its_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rows = tmp.path().join("rows.jsonl");
    std::fs::write(&rows, "{\"memory_bytes\": 1}\n").expect("write");
    let out = calibrate(&rows, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("rows.jsonl line 1: "), "{stderr}");
}

#[test]
fn an_implausible_row_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let good = std::fs::read_to_string(calibration("rows.jsonl")).expect("committed rows");
    let bad = good.replacen("\"bandwidth_bps\":50000000", "\"bandwidth_bps\":0", 1);
    let line = 1 + good
        .lines()
        .take_while(|l| !l.contains("\"bandwidth_bps\":50000000"))
        .count();
    let rows = tmp.path().join("rows.jsonl");
    std::fs::write(&rows, bad).expect("write");
    let out_file = tmp.path().join("judge.json");
    let out = calibrate(&rows, Some(out_file.as_path()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "rows.jsonl line {line}: bandwidth_bps 0: expected at least 125000 bytes/s"
        )),
        "{stderr}"
    );
    assert!(!out_file.exists(), "nothing written");
    let out = drover(&["sim", "calibrate", "--rows", "/nonexistent/rows.jsonl"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        "error: /nonexistent/rows.jsonl: No such file or directory (os error 2)"
    );
}

#[test]
fn judge_and_observation_flags_are_checked() {
    let base = ["sim", "--synthetic", "20", "--samples", "4"];
    let run = |extra: &[&str]| {
        let out = drover(&[&base[..], extra].concat());
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&["--migration-model", "dirty", "--judge", "oracle"]);
    assert!(
        !ok && err.contains("--judge 'oracle': expected calibrated or cost-model"),
        "{err}"
    );
    let (ok, err) = run(&["--judge", "calibrated"]);
    assert!(
        !ok && err.contains("--judge needs --migration-model dirty"),
        "{err}"
    );
    let (ok, err) = run(&["--migration-model", "dirty", "--observe-sigma", "5"]);
    assert!(
        !ok && err.contains("observation noise sigma 5: expected a number from 0 to 3"),
        "{err}"
    );
    let (ok, err) = run(&[
        "--migration-model",
        "dirty",
        "--observe-every",
        "3",
        "--observe-lag",
        "2",
    ]);
    assert!(ok, "{err}");
}

/// `--out` is checked before the rows are read and fitted: nothing is printed first.
#[test]
fn an_unwritable_out_is_refused_before_the_fit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rows = calibration("rows.jsonl");
    for (out, wanted) in [
        (tmp.path().join("no/dir/judge.json"), "does not exist"),
        (tmp.path().to_path_buf(), "is a folder"),
    ] {
        let run = calibrate(&rows, Some(out.as_path()));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{out:?} went ahead");
        assert!(
            stderr.contains(&format!("--out {}: ", out.display())) && stderr.contains(wanted),
            "{stderr}"
        );
        assert!(run.stdout.is_empty(), "fitted before refusing");
    }
}
