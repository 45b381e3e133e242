//! `drover sim replay FILE` on decisions the control step made itself (driving the live
//! simulation until it plans), and `drover sim manager-bench` at a small size. Runs the built
//! binary; no root, no QEMU.

use drover_core::control::{
    record, step, ControlSettings, ControlState, Decision, HostPower, DECISION_FORMAT,
};
use drover_sim::live::{HostSpec, LiveSim, LiveSpec, Placement, Surge};
use drover_sim::Workload;
use std::path::Path;
use std::process::{Command, Output};

const DROVER: &str = env!("CARGO_BIN_EXE_drover");

fn drover(args: &[&str]) -> (Output, String, String) {
    let out = Command::new(DROVER)
        .args(args)
        .output()
        .expect("run drover");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// Two hosts, four VMs on the first held at full CPU: the step's first plan.
fn decided() -> Decision {
    let names: Vec<String> = (0..4).map(|v| format!("vm{v}")).collect();
    let work = Workload::new("t".into(), names.clone(), 2, vec![0.2; 8]);
    let spec = LiveSpec {
        placement: Placement::Given(vec![0, 0, 0, 0]),
        ..LiveSpec::new(vec![HostSpec {
            count: 2,
            cpus: 4.0,
            memory_bytes: 16 << 30,
            power: HostPower::default(),
        }])
    };
    let mut sim = LiveSim::new(spec, work).expect("sim");
    sim.add_surge(&Surge {
        vms: names,
        level: 1.0,
        start_s: 0.0,
        end_s: 100.0,
    })
    .expect("surge");
    let settings = sim.control_settings(ControlSettings {
        standby: false,
        ..ControlSettings::default()
    });
    let mut state = ControlState::default();
    for t in 1..60 {
        let now = f64::from(t);
        let obs = sim.observe(now);
        let before = state.clone();
        let output = step(&mut state, &obs, &settings, now);
        if !output.new_plans.is_empty() {
            return Decision {
                format: DECISION_FORMAT,
                now_s: now,
                observation: obs,
                state_before: before,
                settings,
                output,
            };
        }
        for a in &output.actions {
            let o = sim.apply(a, now);
            record(&mut state, o, now);
        }
    }
    panic!("no plan in 60 looks");
}

fn write(dir: &Path, name: &str, v: &serde_json::Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, v.to_string()).expect("write");
    p.to_string_lossy().into_owned()
}

#[test]
fn replay_prints_the_plan_and_fails_when_it_differs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = serde_json::to_value(decided()).expect("json");
    let good = write(tmp.path(), "good.json", &d);
    let (out, stdout, stderr) = drover(&["sim", "replay", &good]);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("plan p-1 (relief, approved)"), "{stdout}");
    assert!(stdout.contains("why this technique:"), "{stdout}");
    assert!(
        stdout.contains("reproduces the recorded output"),
        "{stdout}"
    );

    let (out, stdout, _) = drover(&["sim", "replay", &good, "--json"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(json["verdict"]["verdict"], "reproduces");
    assert_eq!(json["plans"][0]["id"], "p-1");

    let mut other = d.clone();
    other["output"]["next_look_s"] = serde_json::json!(12345.0);
    let bad = write(tmp.path(), "bad.json", &other);
    let (out, stdout, stderr) = drover(&["sim", "replay", &bad]);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("DOES NOT reproduce"), "{stdout}");
    assert!(
        stderr.contains("bad.json: the replay does not decide"),
        "{stderr}"
    );

    let export = serde_json::json!({
        "plan_id": "p-1",
        "at_s": d["now_s"],
        "observation": d["observation"],
        "state_before": d["state_before"],
        "settings": d["settings"],
    });
    let exported = write(tmp.path(), "export.json", &export);
    let (out, stdout, stderr) = drover(&["sim", "replay", &exported]);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("makes plan p-1 again"), "{stdout}");
}

#[test]
fn replay_names_the_file_and_what_is_wrong() {
    let tmp = tempfile::tempdir().expect("tmp");
    let junk = tmp.path().join("junk.json");
    std::fs::write(&junk, "not json").expect("write");
    let (out, _, stderr) = drover(&["sim", "replay", &junk.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("junk.json is not JSON"), "{stderr}");

    let mut d = serde_json::to_value(decided()).expect("json");
    d["format"] = serde_json::json!(2);
    let newer = write(tmp.path(), "newer.json", &d);
    let (_, _, stderr) = drover(&["sim", "replay", &newer]);
    assert!(
        stderr.contains("newer.json: format 2, but this drover reads core decisions of format 1"),
        "{stderr}"
    );
    d.as_object_mut().expect("object").remove("observation");
    d["format"] = serde_json::json!(1);
    let partial = write(tmp.path(), "partial.json", &d);
    let (_, _, stderr) = drover(&["sim", "replay", &partial]);
    assert!(stderr.contains("missing field `observation`"), "{stderr}");
}

#[test]
fn manager_bench_reports_pass_times_and_memory() {
    let (out, stdout, stderr) = drover(&[
        "sim",
        "manager-bench",
        "--hosts",
        "10",
        "--vms",
        "60",
        "--hours",
        "0.05",
        "--json",
    ]);
    assert!(out.status.success(), "{stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(r["passes"], 180);
    for key in ["min_ms", "median_ms", "p99_ms", "max_ms"] {
        assert!(
            r["step"][key].is_number() && r["pass"][key].is_number(),
            "{r}"
        );
    }
    assert!(r["peak_rss_mib"].is_number(), "{r}");
    let (out, _, stderr) = drover(&["sim", "manager-bench", "--hours", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("hours = 0"), "{stderr}");
}
