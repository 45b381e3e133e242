//! Bad trace files give errors that name the file (and line) at fault.

use drover_sim::{TraceError, Workload};
use std::fs;

fn day_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, body) in files {
        fs::write(dir.path().join(name), body).expect("write");
    }
    dir
}

fn lines(n: usize, v: u32) -> String {
    (0..n).map(|_| format!("{v}\n")).collect()
}

#[test]
fn good_folder_loads_sorted_by_name() {
    let dir = day_with(&[("b", &lines(4, 20)), ("a", &lines(4, 50))]);
    let w = Workload::from_planetlab_dir(dir.path(), 4).unwrap();
    assert_eq!(w.names, vec!["a", "b"]);
    assert_eq!(w.at(0, 0), 0.5);
    assert!((w.at(1, 3) - 0.2).abs() < 1e-6);
}

#[test]
fn missing_folder_names_it() {
    let err =
        Workload::from_planetlab_dir(std::path::Path::new("/nonexistent/day"), 288).unwrap_err();
    assert!(matches!(err, TraceError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/day"), "{err}");
    // The reason is in the message only: a source too would print it twice under `{:#}`.
    assert!(std::error::Error::source(&err).is_none(), "{err}");
}

#[test]
fn empty_folder_is_an_error() {
    let dir = day_with(&[]);
    let err = Workload::from_planetlab_dir(dir.path(), 288).unwrap_err();
    assert!(matches!(err, TraceError::EmptyFolder(_)), "{err}");
    assert!(err.to_string().contains("has no VM files"), "{err}");
}

#[test]
fn non_numeric_value_names_file_and_line() {
    let dir = day_with(&[("good", &lines(3, 10)), ("vm-bad", "10\nabc\n30\n")]);
    let err = Workload::from_planetlab_dir(dir.path(), 3).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("vm-bad") && msg.contains("line 2") && msg.contains("'abc'"),
        "{msg}"
    );
    let dir = day_with(&[("vm-neg", "10\n-5\n30\n")]);
    let msg = Workload::from_planetlab_dir(dir.path(), 3)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("vm-neg") && msg.contains("'-5'"), "{msg}");
}

#[test]
fn wrong_length_names_file_and_counts() {
    let dir = day_with(&[("ok", &lines(288, 5)), ("short", &lines(287, 5))]);
    let err = Workload::from_planetlab_dir(dir.path(), 288).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("short") && msg.contains("287 samples, expected 288"),
        "{msg}"
    );
}

#[test]
fn csv_loads_and_rejects_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("day.csv");
    fs::write(
        &good,
        "vm,t,cpu_pct\nweb,0,10\nweb,1,20.5\ndb,1,40\ndb,0,30\n",
    )
    .unwrap();
    let w = Workload::from_csv(&good).unwrap();
    assert_eq!((w.vms(), w.samples), (2, 2));
    assert_eq!(w.names, vec!["db", "web"]);
    assert!((w.at(1, 1) - 0.205).abs() < 1e-6);

    let cases = [
        ("web,0,10\nweb,x,20\n", "line 2: expected 'vm,t,cpu_pct'"),
        ("web,0,10\nweb,1,lots\n", "'lots' is not a CPU percentage"),
        ("web,0,10\nweb,1,20\ndb,0,5\n", "VM 'db' has no sample 1"),
        ("web,0,10\nweb,0,20\n", "sample 0 given twice"),
        // A file, not a folder: it has no rows.
        ("", "trace file"),
        ("vm,t,cpu_pct\n", "has no rows"),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.csv"));
        fs::write(&p, body).unwrap();
        let msg = Workload::from_csv(&p).unwrap_err().to_string();
        assert!(
            msg.contains(want) && msg.contains(&format!("bad{i}.csv")),
            "{msg}"
        );
    }
}

#[test]
fn byte_order_mark_is_skipped_in_both_formats() {
    let dir = day_with(&[
        ("a", &format!("\u{feff}{}", lines(3, 50))),
        ("b", &lines(3, 10)),
    ]);
    let w = Workload::from_planetlab_dir(dir.path(), 3).unwrap();
    assert_eq!(w.at(0, 0), 0.5);
    let csv = dir.path().join("day.csv");
    fs::write(&csv, "\u{feff}vm,t,cpu_pct\nweb,0,10\nweb,1,20\n").unwrap();
    let w = Workload::from_csv(&csv).unwrap();
    assert_eq!((w.vms(), w.samples), (1, 2));
    // Without a header, the first row is data.
    fs::write(&csv, "\u{feff}web,0,10\nweb,1,20\n").unwrap();
    assert_eq!(Workload::from_csv(&csv).unwrap().names, vec!["web"]);
}

#[test]
fn hidden_files_are_skipped_and_stray_files_are_named() {
    let dir = day_with(&[
        ("vm1", &lines(3, 10)),
        (".DS_Store", "\0\0\x01Bud1"),
        (".notes", "not a trace"),
    ]);
    let w = Workload::from_planetlab_dir(dir.path(), 3).unwrap();
    assert_eq!(w.names, vec!["vm1"]);
    fs::write(dir.path().join("README.txt"), "VM traces of one day\n").unwrap();
    let msg = Workload::from_planetlab_dir(dir.path(), 3)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("README.txt") && msg.contains("line 1"),
        "{msg}"
    );
}

#[test]
fn a_folder_of_days_is_not_a_day() {
    let parent = tempfile::tempdir().unwrap();
    for day in ["20110303", "20110306", ".git"] {
        fs::create_dir(parent.path().join(day)).unwrap();
        fs::write(parent.path().join(day).join("vm"), lines(3, 10)).unwrap();
    }
    fs::write(parent.path().join("README.md"), "notes\n").unwrap();
    let err = Workload::from_planetlab_dir(parent.path(), 3).unwrap_err();
    assert!(matches!(err, TraceError::HoldsDays { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("20110303, 20110306") && !msg.contains(".git"),
        "{msg}"
    );
    let days = drover_sim::trace::day_folders(parent.path()).unwrap();
    let names: Vec<_> = days.iter().map(|d| d.file_name().unwrap()).collect();
    assert_eq!(names, ["20110303", "20110306"]);
}

#[test]
fn counts_past_the_limits_are_errors_not_panics() {
    let dir = day_with(&[("vm1", &lines(3, 10))]);
    for samples in [0, 1, usize::MAX] {
        let msg = Workload::from_planetlab_dir(dir.path(), samples)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("samples per VM file") && msg.contains("2..=105120"),
            "{msg}"
        );
    }
    let csv = dir.path().join("far.csv");
    fs::write(&csv, "web,0,10\nweb,18446744073709551615,20\n").unwrap();
    let msg = Workload::from_csv(&csv).unwrap_err().to_string();
    assert!(
        msg.contains("far.csv, line 2") && msg.contains("sample index 18446744073709551615"),
        "{msg}"
    );
}

#[test]
fn shuffled_keeps_each_vm_with_its_samples_in_a_seeded_order() {
    let n = 20;
    let names: Vec<String> = (0..n).map(|v| format!("vm{v:02}")).collect();
    // VM v's samples are v/100 and v/200, so a row identifies its VM.
    let util: Vec<f32> = (0..n)
        .flat_map(|v| [v as f32 / 100.0, v as f32 / 200.0])
        .collect();
    let w = Workload::new("d".into(), names.clone(), 2, util);
    let a = w.shuffled(7);
    assert_eq!(a, w.shuffled(7), "same seed, same order");
    assert_ne!(
        a.names, w.names,
        "20 VMs stay in name order with odds 1/20!"
    );
    assert_ne!(a.names, w.shuffled(8).names);
    let mut sorted = a.names.clone();
    sorted.sort();
    assert_eq!(sorted, names, "a permutation: nothing lost or repeated");
    for (i, name) in a.names.iter().enumerate() {
        let v: usize = name[2..].parse().unwrap();
        assert_eq!(a.row(i), w.row(v), "{name} keeps its samples");
    }
    assert_eq!((a.day.as_str(), a.samples), ("d", 2));
}

#[test]
fn an_empty_vm_name_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("noname.csv");
    fs::write(&csv, "vm,t,cpu_pct\nweb,0,10\n,9,50\n").unwrap();
    let msg = Workload::from_csv(&csv).unwrap_err().to_string();
    assert!(
        msg.contains("noname.csv, line 3: the VM name is empty"),
        "{msg}"
    );
}

/// An error and its causes as anyhow's `{:#}` prints them, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        parts.push(s.to_string());
        next = s.source();
    }
    parts.join(": ")
}

#[test]
fn causes_are_printed_once_in_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.csv");
    let bin = dir.path().join("bin.csv");
    fs::write(&bin, b"web,0,1\n\xff\n").unwrap();
    let day = dir.path().join("day");
    fs::create_dir(&day).unwrap();
    fs::write(day.join("vm"), "1\n2\n").unwrap();
    let errors: Vec<Box<dyn std::error::Error>> = vec![
        Box::new(Workload::from_csv(&missing).unwrap_err()),
        Box::new(Workload::from_csv(&bin).unwrap_err()),
        Box::new(Workload::from_planetlab_dir(&day, 1).unwrap_err()),
        Box::new(drover_sim::SimError::from(
            Workload::from_csv(&missing).unwrap_err(),
        )),
        Box::new(drover_sim::replay::read(&missing).unwrap_err()),
        Box::new(drover_sim::judge::rows::load_rows(&missing).unwrap_err()),
        Box::new(drover_sim::judge::JudgeParams::from_json("{").unwrap_err()),
    ];
    for e in errors {
        let text = chain(e.as_ref());
        for cause in ["No such file", "UTF-8", "allowed:", "EOF"] {
            assert!(text.matches(cause).count() <= 1, "{text}");
        }
        assert!(e.source().is_none(), "{text}");
    }
}
