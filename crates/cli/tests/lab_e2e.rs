//! End to end through the `drover` binary on a real lab (network namespaces, tbf-shaped links,
//! cgroups, agents, QEMU): migrations with every technique over the shaped link, an agent killed
//! with SIGKILL and restarted, and a CPU-capped host sharing its cores. Needs root and
//! scripts/setup. Every test tears its lab down, also when it fails, and checks nothing is left.

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const DROVER: &str = env!("CARGO_BIN_EXE_drover");
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A lab that is torn down when dropped.
struct Lab {
    name: String,
}

impl Lab {
    fn up(test: char, args: &[&str]) -> Lab {
        let name = format!("e{test}{}", std::process::id() % 100_000);
        let lab = Lab { name };
        let mut argv = vec!["lab", "up", "--name", &lab.name, "--json"];
        argv.extend_from_slice(args);
        drover(&argv);
        lab
    }

    fn state(&self) -> Value {
        let text = std::fs::read_to_string(format!("/run/drover/lab/{}/lab.json", self.name))
            .expect("lab state");
        serde_json::from_str(&text).expect("lab json")
    }

    fn host(&self, name: &str) -> Value {
        let state = self.state();
        let hosts = state["hosts"].as_array().expect("hosts").clone();
        hosts.into_iter().find(|h| h["name"] == name).expect("host")
    }

    /// Runs `drover vm ...` against this lab and parses its JSON output.
    fn vm(&self, args: &[&str]) -> Value {
        let mut argv = vec!["vm"];
        argv.extend_from_slice(args);
        argv.extend(["--lab", &self.name, "--json"]);
        let out = drover(&argv);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("bad JSON from drover {argv:?}: {e}: {out}"))
    }

    fn find_vm(&self, host: &str, name: &str) -> Value {
        let list = self.vm(&["list", "--host", host]);
        let vms = list.as_array().cloned().unwrap_or_default();
        vms.into_iter()
            .find(|v| v["name"] == name)
            .unwrap_or(Value::Null)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = Command::new(DROVER)
            .args(["lab", "down", "--name", &self.name])
            .output();
        if let Ok(out) = out {
            if !out.status.success() {
                eprintln!("lab down failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let tag = format!("/lab/{}/", self.name);
        let left = processes_mentioning(&tag);
        if !std::thread::panicking() {
            assert!(left.is_empty(), "processes left after lab down: {left:?}");
            let links = Command::new("ip")
                .args(["-o", "link"])
                .output()
                .expect("ip link");
            let links = String::from_utf8_lossy(&links.stdout);
            assert!(
                !links.contains(&format!("drv{}", self.name)),
                "links left: {links}"
            );
        }
    }
}

/// A child process killed and reaped when dropped.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn processes_mentioning(tag: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(tag) {
            found.push(text);
        }
    }
    found
}

fn drover(args: &[&str]) -> String {
    let out = Command::new(DROVER)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run drover");
    assert!(
        out.status.success(),
        "drover {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn ops_per_s(vm: &Value) -> f64 {
    vm["workload_report"]["ops_per_s"]
        .as_f64()
        .or_else(|| vm["ops_per_s"].as_f64())
        .unwrap_or(0.0)
}

#[test]
fn migrations_over_a_shaped_link_with_every_technique_and_agent_restart() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up('m', &["--hosts", "2", "--link", "50MB/s"]);
    lab.vm(&[
        "create",
        "vm1",
        "--host",
        "h1",
        "--memory",
        "256M",
        "--workload",
        "memtouch:wss=64M,rate=1000",
    ]);
    wait_until("the workload to run", Duration::from_secs(60), || {
        ops_per_s(&lab.find_vm("h1", "vm1")) > 0.0
    });
    let mut host = "h1";
    for (technique, to) in [
        ("precopy", "h2"),
        ("postcopy", "h1"),
        ("hybrid", "h2"),
        ("auto", "h1"),
    ] {
        let r = lab.vm(&[
            "migrate",
            "vm1",
            "--to",
            to,
            "--technique",
            technique,
            "--no-measure",
        ]);
        assert_eq!(r["status"], "completed", "{technique}: {r}");
        assert_eq!(r["integrity_errors"], 0, "{technique}: {r}");
        let bytes = r["transferred_bytes"].as_f64().expect("bytes");
        let ms = r["total_ms"].as_f64().expect("total_ms");
        let rate = bytes * 1000.0 / ms;
        assert!(
            (rate - 50e6).abs() <= 0.2 * 50e6,
            "{technique}: measured {:.1} MB/s over a 50 MB/s link: {r}",
            rate / 1e6
        );
        assert_eq!(
            lab.find_vm(host, "vm1"),
            Value::Null,
            "{technique}: vm1 still on {host}"
        );
        host = to;
        let vm = lab.find_vm(host, "vm1");
        assert_eq!(vm["status"], "running", "{technique}: {vm}");
    }
    // kill -9 the agent that runs vm1, restart it: the VM keeps running and is listed again.
    let before = lab.find_vm(host, "vm1");
    let h = lab.host(host);
    let pid = h["agent_pid"].as_i64().expect("agent pid");
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill")
        .success());
    std::thread::sleep(Duration::from_millis(500));
    let token_file = lab.state()["token_file"]
        .as_str()
        .expect("token file")
        .to_string();
    let listen = format!("{}:7700", h["address"].as_str().expect("address"));
    let state_dir = h["state_dir"].as_str().expect("state dir").to_string();
    let netns = h["netns"].as_str().expect("netns").to_string();
    let _agent = Reaped(
        Command::new("ip")
            .args([
                "netns", "exec", &netns, DROVER, "agent", "--listen", &listen,
            ])
            .args(["--state-dir", &state_dir, "--token-file", &token_file])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("restart agent"),
    );
    wait_until(
        "the restarted agent to list vm1",
        Duration::from_secs(30),
        || {
            let out = Command::new(DROVER)
                .args(["vm", "list", "--host", host, "--lab", &lab.name, "--json"])
                .output();
            out.is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("vm1")
            })
        },
    );
    let after = lab.find_vm(host, "vm1");
    assert_eq!(
        after["pid"], before["pid"],
        "the VM must not have been restarted"
    );
    assert_eq!(after["status"], "running", "{after}");
}

#[test]
fn a_cpu_capped_host_gives_two_hungry_vms_half_of_what_they_ask() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up('c', &["--hosts", "1", "--host-cpus", "0.5"]);
    for name in ["c1", "c2"] {
        lab.vm(&[
            "create",
            name,
            "--host",
            "h1",
            "--memory",
            "128M",
            "--workload",
            "cpu:demand=50",
        ]);
    }
    let h = lab.host("h1");
    let url = h["agent_url"].as_str().expect("agent url").to_string();
    let token =
        std::fs::read_to_string(lab.state()["token_file"].as_str().expect("token")).expect("token");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = drover_agent::client::AgentClient::new(&url, token.trim());
    // Boot is slow at a quarter core each; then let the CPU figures settle.
    wait_until("both workloads to report", Duration::from_secs(180), || {
        let list = lab.vm(&["list", "--host", "h1"]);
        list.as_array()
            .is_some_and(|vms| vms.len() == 2 && vms.iter().all(|v| ops_per_s(v) > 0.0))
    });
    std::thread::sleep(Duration::from_secs(12));
    let metrics = runtime.block_on(client.metrics()).expect("metrics");
    let vms = metrics["vms"].as_array().expect("vms").clone();
    assert_eq!(vms.len(), 2, "{metrics}");
    for vm in &vms {
        let cores = vm["cpu_cores"].as_f64().expect("cpu_cores");
        // Each asks for half a core; the host has half a core for both.
        assert!(
            (0.12..=0.38).contains(&cores),
            "{}: {cores} cores: {metrics}",
            vm["name"]
        );
    }
    let total: f64 = vms.iter().filter_map(|v| v["cpu_cores"].as_f64()).sum();
    assert!(
        total <= 0.6,
        "host capped at 0.5 cores used {total}: {metrics}"
    );
}
