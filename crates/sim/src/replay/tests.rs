//! Replaying decisions the control step made itself (driving the live simulation until it
//! plans), as core records them and as the manager's store exports them, and every way a file
//! can be wrong.

use super::*;
use crate::live::{HostSpec, LiveSim, LiveSpec, Placement, Surge};
use crate::trace::Workload;
use drover_core::control::{record, step, HostPower, PlanKind};
use serde_json::json;

/// The control step drives a small cluster until it makes a relief plan; that look's record.
fn decided() -> Decision {
    let names: Vec<String> = (0..6).map(|v| format!("vm{v}")).collect();
    let work = Workload::new("scripted".into(), names.clone(), 2, vec![0.1; 12]);
    let spec = LiveSpec {
        placement: Placement::Given(vec![0, 0, 0, 0, 1, 1]),
        ..LiveSpec::new(vec![HostSpec {
            count: 3,
            cpus: 4.0,
            memory_bytes: 16 << 30,
            power: HostPower::default(),
        }])
    };
    let mut sim = LiveSim::new(spec, work).expect("sim");
    sim.add_surge(&Surge {
        vms: names[..4].to_vec(),
        level: 1.0,
        start_s: 5.0,
        end_s: 500.0,
    })
    .expect("surge");
    let settings = sim.control_settings(ControlSettings::default());
    let mut state = ControlState::default();
    for t in 1..100 {
        let now = f64::from(t);
        let obs = sim.observe(now);
        let before = state.clone();
        let out = step(&mut state, &obs, &settings, now);
        let relief = out
            .new_plans
            .iter()
            .any(|id| state.plans[id].kind == PlanKind::Relief);
        if relief {
            return Decision {
                format: DECISION_FORMAT,
                now_s: now,
                observation: obs,
                state_before: before,
                settings,
                output: out,
            };
        }
        for a in &out.actions {
            let o = sim.apply(a, now);
            record(&mut state, o, now);
        }
    }
    panic!("no relief plan in 100 looks");
}

fn write(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, body).expect("write");
    p
}

#[test]
fn a_recorded_decision_reproduces_through_its_json() {
    let d = decided();
    let dir = tempfile::tempdir().expect("tmp");
    let path = write(&dir, "d.json", &serde_json::to_string(&d).expect("json"));
    let stored = read(&path).expect("reads");
    assert_eq!(stored.output.as_ref(), Some(&d.output));
    let r = replay(&stored);
    assert_eq!(r.verdict, Verdict::Reproduces, "{:?}", r.verdict);
    assert!(r.verdict.ok());
    assert_eq!(r.plans.len(), d.output.new_plans.len());
    let text = render(&stored, &r);
    for want in [
        "core decision (format 1)",
        "(relief, approved)",
        "recent loads [",
        "why this VM:",
        "why there:",
        "why this technique:",
        "forecast precopy:",
        "migrate vm",
        "reproduces the recorded output",
    ] {
        assert!(text.contains(want), "'{want}' missing from\n{text}");
    }
}

#[test]
fn a_different_output_does_not_reproduce_and_says_what_differs() {
    let mut d = decided();
    d.output.next_look_s += 1.0;
    d.output.actions.pop();
    let stored = parse(
        Path::new("d.json"),
        &serde_json::to_string(&d).expect("json"),
    )
    .expect("reads");
    let r = replay(&stored);
    let Verdict::Differs { differences } = &r.verdict else {
        panic!("{:?}", r.verdict)
    };
    assert_eq!(differences.len(), 2, "{differences:?}");
    assert!(differences[0].starts_with("actions: recorded "));
    // One readable line per side, not Rust's debug text.
    assert!(
        differences[0].contains("recorded `none`, replayed `migrate vm"),
        "{}",
        differences[0]
    );
    assert!(!differences[0].contains("Some("), "{}", differences[0]);
    assert!(differences[1].starts_with("next look: recorded "));
    assert!(!r.verdict.ok());
    assert!(render(&stored, &r).contains("DOES NOT reproduce"));
}

#[test]
fn a_store_export_makes_its_plan_again() {
    let d = decided();
    let plan_id = d.output.new_plans[0].clone();
    let export = json!({
        "plan_id": plan_id,
        "at_s": d.now_s,
        "observation": d.observation,
        "state_before": d.state_before,
        "settings": d.settings,
    });
    let stored = parse(Path::new("export.json"), &export.to_string()).expect("reads");
    assert_eq!(stored.output, None);
    let r = replay(&stored);
    assert_eq!(r.verdict, Verdict::MadePlan { plan_id });
    assert!(render(&stored, &r).contains("manager store export of plan"));

    let mut other = export.clone();
    other["plan_id"] = json!("p-999");
    let r = replay(&parse(Path::new("e.json"), &other.to_string()).expect("reads"));
    assert!(matches!(&r.verdict, Verdict::MissingPlan { made, .. } if !made.is_empty()));
    assert!(!r.verdict.ok());
}

#[test]
fn bad_files_are_named_with_what_is_wrong() {
    let d = serde_json::to_value(decided()).expect("value");
    let p = Path::new("bad.json");
    let err = |body: &str| parse(p, body).expect_err("refused").to_string();

    let e = err("{not json");
    assert!(e.starts_with("decision file bad.json is not JSON"), "{e}");
    let e = err("[1, 2]");
    assert!(e.contains("expected a JSON object, found an array"), "{e}");
    let e = err("{}");
    assert!(e.contains("neither a core decision"), "{e}");

    let mut v = d.clone();
    v["format"] = json!(7);
    let e = err(&v.to_string());
    assert!(
        e.contains("format 7, but this drover reads core decisions of format 1"),
        "{e}"
    );

    let mut v = d.clone();
    v["format"] = json!("one");
    let e = err(&v.to_string());
    assert!(
        e.contains("field `format` is not an unsigned integer"),
        "{e}"
    );

    let mut v = d.clone();
    v.as_object_mut().expect("object").remove("settings");
    let e = err(&v.to_string());
    assert!(
        e.contains("missing field `settings` (a core decision has format, now_s"),
        "{e}"
    );

    let mut v = d.clone();
    v["observation"] = json!({"hosts": 3});
    let e = err(&v.to_string());
    assert!(
        e.contains("field `observation` is not an observation"),
        "{e}"
    );

    let e = err(r#"{"plan_id": "p-1", "observation": {}}"#);
    assert!(
        e.contains("missing field `at_s` (a manager store export has plan_id"),
        "{e}"
    );

    let e = read(Path::new("/nonexistent/decision.json"))
        .expect_err("no file")
        .to_string();
    assert!(
        e.starts_with("decision file /nonexistent/decision.json: "),
        "{e}"
    );
}

/// `err` as the CLI prints it: the message and each source after it (anyhow's `{:#}`).
fn with_chain(err: &ReplayError) -> String {
    let mut s = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

#[test]
fn errors_print_their_reason_once() {
    let e = read(Path::new("/nonexistent/decision.json")).expect_err("no file");
    assert_eq!(
        with_chain(&e),
        "decision file /nonexistent/decision.json: No such file or directory (os error 2)"
    );
    let mut v = serde_json::to_value(decided()).expect("value");
    v["settings"]["bogus"] = json!(1);
    let e = parse(Path::new("d.json"), &v.to_string()).expect_err("unknown field");
    let text = with_chain(&e);
    assert!(text.contains("unknown field `bogus`"), "{text}");
    assert_eq!(text.matches("expected one of").count(), 1, "{text}");
    let e = read(Path::new("/dev/zero")).expect_err("endless");
    assert_eq!(
        with_chain(&e),
        "decision file /dev/zero: not a regular file: expected a text file"
    );
}

#[test]
fn inputs_the_manager_would_refuse_are_refused_by_field() {
    let d = serde_json::to_value(decided()).expect("value");
    let cases = [
        (
            "/settings/hot",
            json!(-1),
            "settings.hot = -1: expected a load share",
        ),
        (
            "/settings/hot_samples",
            json!(0),
            "settings.hot_samples = 0: expected 1 to 3600",
        ),
        (
            "/settings/link_bps",
            json!(1),
            "settings.link_bps = 1: expected at least 125000 bytes/s",
        ),
        (
            "/now_s",
            json!(1e308),
            "now_s = 1e308: expected a time from 0 to 1e10 s",
        ),
        ("/now_s", json!(-1.0), "now_s = -1: expected a time"),
        (
            "/observation/hosts/0/cpu_demand_cores",
            json!(-5.0),
            "observation.hosts[0].cpu_demand_cores = -5: expected a finite number of cores",
        ),
    ];
    for (at, value, want) in cases {
        let mut v = d.clone();
        *v.pointer_mut(at).expect(at) = value;
        let e = parse(Path::new("d.json"), &v.to_string()).expect_err(at);
        assert!(matches!(e, ReplayError::Invalid { .. }), "{at}: {e}");
        let text = with_chain(&e);
        assert!(
            text.starts_with(&format!("decision file d.json: {want}")),
            "{text}"
        );
    }
    let mut v = d.clone();
    let first = v["observation"]["hosts"][0]["name"].clone();
    v["observation"]["hosts"][1]["name"] = first;
    let e = parse(Path::new("d.json"), &v.to_string()).expect_err("two hosts, one name");
    assert!(
        e.to_string().contains("observation.hosts[1].name = \"h0\": expected a name no other host has (hosts[0] has it)"),
        "{e}"
    );
    // A store export's time is `at_s`.
    let mut export = d.clone();
    let obj = export.as_object_mut().expect("object");
    obj.remove("format");
    obj.remove("output");
    obj.remove("now_s");
    obj.insert("plan_id".into(), json!("p-1"));
    obj.insert("at_s".into(), json!(f64::MAX));
    let e = parse(Path::new("e.json"), &export.to_string()).expect_err("time");
    assert!(
        e.to_string().contains("at_s = 1.7976931348623157e308"),
        "{e}"
    );
}

#[test]
fn a_vm_running_on_two_hosts_is_replayed_with_a_warning() {
    let d = decided();
    let mut v = serde_json::to_value(&d).expect("value");
    let vm = v["observation"]["hosts"][0]["vms"][0].clone();
    let name = vm["name"].as_str().expect("name").to_string();
    v["observation"]["hosts"][2]["vms"]
        .as_array_mut()
        .expect("vms")
        .push(vm);
    let stored = parse(Path::new("d.json"), &v.to_string()).expect("replayed anyway");
    assert_eq!(stored.warnings.len(), 1, "{:?}", stored.warnings);
    let r = replay(&stored);
    let text = render(&stored, &r);
    let want = format!("warning: VM {name} is reported running on h0 and h2");
    assert!(text.contains(&want), "{text}");
}
