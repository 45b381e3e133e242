//! `drover sim` as a new user meets it: too few hosts, odd policy parameters, huge sizes, files
//! saved with a byte-order mark, stray files in trace folders. Runs the built binary; no root,
//! no QEMU.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const DROVER: &str = env!("CARGO_BIN_EXE_drover");

fn drover(args: &[&str]) -> Output {
    Command::new(DROVER)
        .args(args)
        .output()
        .expect("run drover")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A PlanetLab-style day: `vms` files of `samples` lines at `pct`.
fn day(dir: &Path, vms: usize, samples: usize, pct: u32) {
    fs::create_dir_all(dir).expect("mkdir");
    for v in 0..vms {
        let body: String = (0..samples).map(|_| format!("{pct}\n")).collect();
        fs::write(dir.join(format!("vm{v:02}")), body).expect("write");
    }
}

/// The table row of `policy` (the line starting with `day` and containing `policy`).
fn row<'a>(table: &'a str, day: &str, policy: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.starts_with(day) && l.split_whitespace().nth(1) == Some(policy))
        .unwrap_or_else(|| panic!("no row for {day} {policy} in\n{table}"))
        .split_whitespace()
        .collect()
}

#[test]
fn rejected_vms_show_in_the_table_and_warn() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("full");
    day(&d, 30, 3, 100);
    let trace = d.to_str().unwrap();
    let out = drover(&["sim", "--trace", trace, "--samples", "3", "--hosts", "1"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let r = row(&stdout, "full", "lr-mmt-1.2");
    assert_eq!((r[3], r[4]), ("30", "27"), "{stdout}");
    assert!(
        stderr.contains("27 of 30 VMs found no host") && stderr.contains("--hosts"),
        "{stderr}"
    );

    // First fit (dvfs) and PABFD with THR 0.2 admit different VMs: the rows say so.
    let out = drover(&[
        "sim",
        "compare",
        "--trace",
        trace,
        "--samples",
        "3",
        "--hosts",
        "1",
        "--policies",
        "dvfs,thr-mmt-0.2",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(row(&stdout, "full", "dvfs")[4], "27*", "{stdout}");
    assert_eq!(row(&stdout, "full", "thr-mmt-0.2")[4], "26*", "{stdout}");
    assert!(
        stderr.contains("day full: the policies admitted different VMs"),
        "{stderr}"
    );
}

#[test]
fn policy_labels_keep_their_parameter() {
    let out = drover(&[
        "sim",
        "compare",
        "--synthetic",
        "20",
        "--policies",
        "lr-mmt-1.25,lr-mmt-1.2,thr-mmt-0.0001,lr-mmt-5,lr-mmt-1.20,thr-mmt-.5,lr-mmt-01.2",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    // As given: never rounded (1.25), never reformatted (5 is not 5.0, .5 not 0.5).
    for label in [
        "lr-mmt-1.25",
        "lr-mmt-1.2",
        "thr-mmt-0.0001",
        "lr-mmt-5",
        "lr-mmt-1.20",
        "thr-mmt-.5",
        "lr-mmt-01.2",
    ] {
        row(&stdout, "synthetic-20-1", label);
    }
    for reformatted in ["lr-mmt-5.0", "thr-mmt-0.5 "] {
        assert!(!stdout.contains(reformatted), "{reformatted}: {stdout}");
    }
}

#[test]
fn sizes_out_of_range_name_the_flag_and_never_panic() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["sim", "--samples", "18446744073709551615"],
            "--samples",
            "2..=105120",
        ),
        (
            &["sim", "--synthetic", "18446744073709551615"],
            "--synthetic",
            "1..=1000000",
        ),
        (
            &["sim", "--synthetic", "50000000"],
            "--synthetic",
            "1..=1000000",
        ),
        (&["sim", "--synthetic", "0"], "--synthetic", "1..=1000000"),
        (&["sim", "--hosts", "0"], "--hosts", "1..=1000000"),
        (
            &["sim", "compare", "--hosts", "99999999999"],
            "--hosts",
            "1..=1000000",
        ),
        (&["sim", "bench", "--repeat", "0"], "--repeat", "1..=1000"),
        (
            &["sim", "manager-bench", "--hours", "18446744073709551615"],
            "'18446744073709551615' for '--hours <HOURS>'",
            "expected hours above 0 and at most 168",
        ),
        (
            &["sim", "manager-bench", "--hours", "NaN"],
            "'NaN' for '--hours <HOURS>'",
            "above 0 and at most 168",
        ),
        (
            &["sim", "--synthetic", "1000000", "--samples", "105120"],
            "--synthetic 1000000 with --samples 105120",
            "VMs x samples",
        ),
    ];
    for (args, flag, range) in cases {
        let out = drover(args);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr.contains(flag) && stderr.contains(range),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_byte_order_mark_is_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("bom.csv");
    fs::write(&csv, "\u{feff}vm,t,cpu_pct\nweb,0,10\nweb,1,20\nweb,2,30\n").unwrap();
    let out = drover(&["sim", "--csv", csv.to_str().unwrap(), "--policy", "dvfs"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    row(&stdout, "bom", "dvfs");
    let d = tmp.path().join("bomday");
    day(&d, 2, 3, 20);
    fs::write(d.join("vm00"), "\u{feff}20\n20\n20\n").unwrap();
    let out = drover(&["sim", "--trace", d.to_str().unwrap(), "--samples", "3"]);
    assert!(out.status.success(), "{}", text(&out).1);
}

#[test]
fn one_bad_day_does_not_hide_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path();
    day(&parent.join("day1"), 4, 3, 30);
    day(&parent.join("day2"), 4, 3, 30);
    day(&parent.join("day3"), 4, 3, 30);
    // Hidden files are skipped; a stray README fails its day only.
    fs::write(parent.join("day1").join(".DS_Store"), "\0\0\x01Bud1").unwrap();
    fs::write(parent.join("day2").join("README.txt"), "CPU traces\n").unwrap();
    fs::write(parent.join("README.md"), "three days\n").unwrap();
    let p = parent.to_str().unwrap();
    let out = drover(&[
        "sim",
        "compare",
        "--trace",
        p,
        "--samples",
        "3",
        "--policies",
        "dvfs",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    row(&stdout, "day1", "dvfs");
    row(&stdout, "day3", "dvfs");
    assert!(!stdout.contains("day2"), "{stdout}");
    assert!(
        stderr.contains("day day2") && stderr.contains("README.txt") && stderr.contains("line 1"),
        "{stderr}"
    );
    assert!(stderr.contains("1 of 3 days failed (day2)"), "{stderr}");

    // The same folder given to a single run: it holds days, so compare is the way.
    let out = drover(&["sim", "--trace", p, "--samples", "3"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("holds day folders (day1, day2, day3)")
            && stderr.contains("drover sim compare --trace"),
        "{stderr}"
    );
}

/// Every size and count states its range in `--help`, as its refusal does.
#[test]
fn help_states_the_ranges() {
    let out = drover(&["sim", "--help"]);
    let (stdout, _) = text(&out);
    for range in ["1 to 1000000", "2 to 105120"] {
        assert!(stdout.contains(range), "{range}: {stdout}");
    }
    let out = drover(&["sim", "manager-bench", "--help"]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("above 0 and at most 168"), "{stdout}");
}
