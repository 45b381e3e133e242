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

/// A flag that would be dropped beside an input it does not apply to is refused (exit 2, naming
/// both), in every command that reads inputs.
#[test]
fn flags_an_input_ignores_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    day(&d, 2, 3, 20);
    let csv = tmp.path().join("t.csv");
    fs::write(&csv, "web,0,10\nweb,1,20\n").unwrap();
    let (d, csv) = (d.to_str().unwrap(), csv.to_str().unwrap());
    for cmd in [&["sim"][..], &["sim", "compare"], &["sim", "bench"]] {
        let cases: [(&[&str], &str, &str); 3] = [
            (
                &["--trace", d, "--synthetic", "10"],
                "--trace",
                "--synthetic",
            ),
            (&["--csv", csv, "--synthetic", "10"], "--csv", "--synthetic"),
            (&["--csv", csv, "--samples", "100"], "--csv", "--samples"),
        ];
        for (flags, a, b) in cases {
            let args: Vec<&str> = cmd.iter().chain(flags).copied().collect();
            let out = drover(&args);
            let (_, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains(a) && stderr.contains(b) && stderr.contains("cannot be used"),
                "{args:?}: {stderr}"
            );
        }
    }
    // The flags still apply where they mean something.
    let out = drover(&["sim", "--trace", d, "--samples", "3", "--policy", "dvfs"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let out = drover(&[
        "sim",
        "--synthetic",
        "10",
        "--samples",
        "3",
        "--policy",
        "dvfs",
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
}

/// VM files beside a folder are refused by a single run and by compare alike, naming both, and
/// so is a FIFO (never opened: that would block).
#[test]
fn a_day_with_a_stray_folder_or_fifo_is_refused_by_both_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("day_sub");
    day(&d, 3, 3, 20);
    fs::create_dir(d.join("subdir")).unwrap();
    let fifo_day = tmp.path().join("day_fifo");
    day(&fifo_day, 3, 3, 20);
    let fifo = std::process::Command::new("mkfifo")
        .arg(fifo_day.join("vm9"))
        .status()
        .is_ok_and(|s| s.success());
    for cmd in [&["sim"][..], &["sim", "compare", "--policies", "dvfs"]] {
        let mut args = cmd.to_vec();
        args.extend(["--samples", "3", "--trace", d.to_str().unwrap()]);
        let out = drover(&args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("VM files (vm00, vm01, vm02) and folders (subdir)"),
            "{args:?}: {stderr}"
        );
        if fifo {
            *args.last_mut().unwrap() = fifo_day.to_str().unwrap();
            let out = drover(&args);
            let (_, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(stderr.contains("vm9 (a FIFO)"), "{args:?}: {stderr}");
        }
    }
}

#[test]
fn inputs_that_are_not_files_and_doubled_causes() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.csv");
    let out = drover(&["sim", "--csv", missing.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
    let out = drover(&["sim", "--csv", "/dev/zero"]);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("/dev/zero is a character device, not a regular file"),
        "{stderr}"
    );
}

#[test]
fn when_every_day_fails_there_are_no_others() {
    let out = drover(&[
        "sim",
        "compare",
        "--synthetic",
        "1000000",
        "--samples",
        "105120",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("day synthetic failed; there are no results") && !stderr.contains("others"),
        "{stderr}"
    );
    let tmp = tempfile::tempdir().unwrap();
    for d in ["a", "b"] {
        fs::create_dir_all(tmp.path().join(d)).unwrap();
        fs::write(tmp.path().join(d).join("vm"), "x\n").unwrap();
    }
    let p = tmp.path().to_str().unwrap();
    let out = drover(&["sim", "compare", "--trace", p, "--samples", "3"]);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("all 2 days failed (a, b); there are no results"),
        "{stderr}"
    );
}

/// `--plot` is checked before the comparison runs: an SVG name, in a folder that exists.
#[test]
fn a_bad_plot_path_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let compare = |path: &Path| {
        let plot = path.to_str().expect("utf-8 path");
        let args = ["sim", "compare", "--synthetic", "20", "--policies", "npa"];
        drover(&[&args[..], &["--plot", plot]].concat())
    };
    let missing = tmp.path().join("no/such/dir/p.svg");
    let png = tmp.path().join("p.png");
    let folder = tmp.path().join("d.svg");
    fs::create_dir(&folder).expect("mkdir");
    for (path, wanted) in [
        (&missing, "does not exist"),
        (&png, "give a name ending in .svg"),
        (&folder, "is a folder"),
    ] {
        let out = compare(path);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{path:?} went ahead");
        assert!(stderr.contains(wanted), "{stderr}");
        assert!(stdout.is_empty(), "ran before refusing: {stdout}");
        assert!(!path.is_file());
    }
    let good = tmp.path().join("chart.SVG");
    let out = compare(&good);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(good.exists());
}
