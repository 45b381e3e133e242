//! The manager on a real lab (namespaces, capped cgroups, agents, QEMU): `drover manager --lab`
//! in auto mode watches two hosts; two guests on h1 raise their demand on command until h1 is
//! hot; the manager relieves it by migrating one of them to h2, the guest's own integrity check
//! holds there, and the plan with its explanation is in the API (`drover plan list|show`).
//! When the lab goes down the manager stops by itself. Needs root, `ip`, `tc` and QEMU (a
//! failure under CI when missing, a loud skip elsewhere); the lab and the manager are removed
//! however the test ends.

mod common;

use common::lab::{drover, serial, wait_until, Lab, Reaped, DROVER};
use drover_testkit::{require, Need, IP, QEMU, TC};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Low demand: a few hundred pages a second; high: as fast as the vCPU goes.
const LOW: &str = "memtouch:wss=32M,rate=200";
const HIGH: &str = "memtouch:wss=32M,rate=max";
/// h1's load (demand over cores) the low phase must settle under before the manager starts:
/// well below the manager's `hot` (0.9).
const SETTLED: f64 = 0.7;

fn plans(lab: &Lab) -> Vec<Value> {
    let out = drover(&["plan", "list", "--lab", &lab.name, "--json"]);
    let v: Value = serde_json::from_str(&out).expect("plan list JSON");
    v.as_array().cloned().unwrap_or_default()
}

#[test]
fn the_manager_relieves_a_hot_host_by_migrating_to_the_other() {
    require!(Need::Root, IP, TC, QEMU);
    let _serial = serial();
    // 1.5 cores a host: two guests at full speed (2 cores) make h1 hot; one of them fits on
    // h2 under the relief target (0.75 x 1.5 cores).
    let lab = Lab::up('m', &["--hosts", "2", "--host-cpus", "1.5"]);
    for name in ["m1", "m2"] {
        lab.create_vm(name, "h1", "192M", LOW);
    }
    let agent = lab.host_client("h1");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        for name in ["m1", "m2"] {
            let v = agent
                .wait_workload(name, Duration::from_secs(120))
                .await
                .expect("poll");
            assert!(!v.workload_pending, "{name} never reported: {v:?}");
        }
        // The guests' boot is a burst of CPU: a manager started inside it rightly sees a hot
        // host. The premise of "no relief at low load" is a host that is low: h1's demand
        // under SETTLED of its cores for three samples in a row.
        let mut low_in_a_row = 0;
        let mut seen = Vec::new();
        let start = Instant::now();
        while low_in_a_row < 3 {
            let m = agent.metrics().await.expect("metrics");
            let load = m.host.cpu_demand_cores / m.host.cpus;
            seen.push(format!("{load:.2}"));
            low_in_a_row = if load < SETTLED { low_in_a_row + 1 } else { 0 };
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "h1 never settled under {SETTLED} of its cores at low demand: {seen:?}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        eprintln!("h1 settled at low demand, loads {seen:?}");
    });

    // With --lab the lab gives the agents: a file that lists some is refused, naming the key.
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("m.toml");
    std::fs::write(
        &file,
        "[[agents]]\nname = \"x\"\nurl = \"http://127.0.0.1:9\"\n",
    )
    .expect("cfg");
    let out = Command::new(DROVER)
        .args(["manager", "--lab", &lab.name, "--check", "--config"])
        .arg(&file)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("agents"), "{err}");
    let out = Command::new(DROVER)
        .args(["manager", "--lab", &lab.name, "--check"])
        .output()
        .expect("run");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("2 agent(s)"),
        "{said}"
    );

    let log_path = std::env::temp_dir().join(format!("{}-manager.log", lab.name));
    let log = std::fs::File::create(&log_path).expect("log");
    let manager = Reaped(
        Command::new(DROVER)
            .args(["manager", "--lab", &lab.name])
            .env_remove("DROVER_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run drover manager --lab"),
    );
    wait_until(
        "the manager to look at both hosts",
        Duration::from_secs(30),
        || {
            Command::new(DROVER)
                .args(["manager", "status", "--lab", &lab.name, "--json"])
                .output()
                .ok()
                .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
                .is_some_and(|s| s["reachable"] == 2 && s["looks"].as_u64() > Some(2))
        },
    );
    let early: Vec<Value> = plans(&lab)
        .into_iter()
        .filter(|p| p["kind"] == "relief")
        .collect();
    assert!(
        early.is_empty(),
        "no relief before the load, yet: {early:?}\nmanager log:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );

    rt.block_on(async {
        for name in ["m1", "m2"] {
            agent.set_workload(name, HIGH).await.expect("raise demand");
        }
    });
    let raised = Instant::now();
    let mut relief = Value::Null;
    wait_until(
        "a relief plan done and one VM on h2",
        Duration::from_secs(300),
        || {
            relief = plans(&lab)
                .into_iter()
                .find(|p| p["kind"] == "relief" && p["state"] == "done")
                .unwrap_or(Value::Null);
            !relief.is_null() && lab.vm_names_on("h2").len() == 1
        },
    );
    eprintln!(
        "relieved {:.0} s after the demand was raised: {relief}",
        raised.elapsed().as_secs_f64()
    );
    let moved = lab.vm_names_on("h2").remove(0);
    assert_eq!(lab.vm_names_on("h1").len(), 1, "one guest stays on h1");
    // The guest checks every page it reads: after a full sweep on h2, no error.
    lab.assert_works_intact_on("h2", &moved, (32 << 20) / 4096);

    let id = relief["id"].as_str().expect("plan id");
    let shown = drover(&["plan", "show", id, "--lab", &lab.name]);
    for part in [
        "why this VM",
        "why there",
        "why this technique",
        "h1",
        &moved,
    ] {
        assert!(shown.contains(part), "plan show lacks {part:?}:\n{shown}");
    }

    // The lab goes down: its manager stops by itself.
    let mut manager = manager;
    drop(lab);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = manager.0.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "the manager outlived its lab by 15 s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(&log_path);
}
