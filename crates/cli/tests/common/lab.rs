//! The real-lab harness of the CLI's end-to-end tests: a lab brought up through the binary
//! and torn down when dropped (checking nothing is left), `drover vm ...` with JSON output,
//! waiting with a deadline, and the guest's own integrity check read on a host.
#![allow(dead_code)] // each test binary uses part of it

use drover_lab::{LabDirs, LabName, LabState};
use drover_testkit::processes_mentioning;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

pub const DROVER: &str = env!("CARGO_BIN_EXE_drover");
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The migration test's workload: a sequential sweep, so `WSS_PAGES` ops after a point in time
/// means every page of the working set was verified (and rewritten) after it.
pub const WORKLOAD: &str = "memtouch:wss=64M,rate=1000,pattern=seq";
pub const WSS_PAGES: u64 = (64 << 20) / 4096;

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A failed test must not block the others: poisoning is ignored.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A lab that is torn down when dropped.
pub struct Lab {
    pub name: String,
}

impl Lab {
    pub fn up(test: char, args: &[&str]) -> Lab {
        let name = format!("e{test}{}", std::process::id() % 100_000);
        let lab = Lab { name };
        let mut argv = vec!["lab", "up", "--name", &lab.name, "--json"];
        argv.extend_from_slice(args);
        drover(&argv);
        lab
    }

    pub fn state_file(&self) -> std::path::PathBuf {
        let name = LabName::new(&self.name).expect("lab name");
        LabDirs::from_env().state_file(&name)
    }

    pub fn state(&self) -> Value {
        let text = std::fs::read_to_string(self.state_file()).expect("lab state");
        serde_json::from_str(&text).expect("lab json")
    }

    pub fn typed_state(&self) -> LabState {
        let path = self.state_file();
        let text = std::fs::read_to_string(&path).expect("lab state");
        LabState::from_json(&text, &path).expect("lab state")
    }

    pub fn host(&self, name: &str) -> Value {
        let state = self.state();
        let hosts = state["hosts"].as_array().expect("hosts").clone();
        hosts.into_iter().find(|h| h["name"] == name).expect("host")
    }

    /// Runs `drover vm ...` against this lab and parses its JSON output.
    pub fn vm(&self, args: &[&str]) -> Value {
        let mut argv = vec!["vm"];
        argv.extend_from_slice(args);
        argv.extend(["--lab", &self.name, "--json"]);
        let out = drover(&argv);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("bad JSON from drover {argv:?}: {e}: {out}"))
    }

    /// `drover vm create NAME --host HOST --memory MEMORY --workload WORKLOAD` on this lab.
    pub fn create_vm(&self, name: &str, host: &str, memory: &str, workload: &str) -> Value {
        self.vm(&[
            "create",
            name,
            "--host",
            host,
            "--memory",
            memory,
            "--workload",
            workload,
        ])
    }

    /// `drover vm migrate VM --to TO --technique TECHNIQUE --no-measure` on this lab: the
    /// migration record.
    pub fn migrate(&self, vm: &str, to: &str, technique: &str) -> Value {
        self.vm(&[
            "migrate",
            vm,
            "--to",
            to,
            "--technique",
            technique,
            "--no-measure",
        ])
    }

    /// The VMs on `host`, as `drover vm list --json` shows them.
    pub fn vms_on(&self, host: &str) -> Vec<Value> {
        let list = self.vm(&["list", "--host", host]);
        list.as_array().cloned().unwrap_or_default()
    }

    /// The names of the VMs on `host`.
    pub fn vm_names_on(&self, host: &str) -> Vec<String> {
        let vms = self.vms_on(host);
        vms.iter()
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect()
    }

    pub fn find_vm(&self, host: &str, name: &str) -> Value {
        let vms = self.vms_on(host);
        vms.into_iter()
            .find(|v| v["name"] == name)
            .unwrap_or(Value::Null)
    }

    /// A typed client of the agent at `url`, with this lab's token.
    pub fn client(&self, url: &str) -> drover_api::AgentClient {
        let token = drover_api::token::read_token(&self.typed_state().token_file).expect("token");
        drover_api::AgentClient::new(drover_api::AgentUrl::parse(url).expect("agent URL"), &token)
    }

    /// A typed client of host `name`'s agent.
    pub fn host_client(&self, name: &str) -> drover_api::AgentClient {
        let host = self.host(name);
        self.client(host["agent_url"].as_str().expect("agent URL"))
    }

    /// Waits until `name` on `host` has done `advance` workload ops more than in the first report
    /// seen there, then checks the guest counted no integrity error. The agent on `host` only
    /// holds reports from its own QEMU, so all of them were made after the VM arrived there (or
    /// after the agent re-attached); the guest's error count is cumulative since boot, so a zero
    /// here covers everything before as well.
    pub fn assert_works_intact_on(&self, host: &str, name: &str, advance: u64) -> Value {
        let fresh = |v: &Value| {
            v["status"] == "running"
                && v["workload_report"]["last_report_age_ms"]
                    .as_u64()
                    .is_some_and(|age| age < 3000)
        };
        let ops = |v: &Value| v["workload_report"]["ops"].as_u64().unwrap_or(0);
        let mut first = Value::Null;
        wait_until(
            &format!("{name} to report on {host}"),
            Duration::from_secs(60),
            || {
                first = self.find_vm(host, name);
                fresh(&first)
            },
        );
        let target = ops(&first) + advance;
        let mut last = Value::Null;
        wait_until(
            &format!("{name} on {host} to do {advance} ops after {first}"),
            Duration::from_secs(180),
            || {
                last = self.find_vm(host, name);
                fresh(&last) && ops(&last) >= target
            },
        );
        assert_eq!(
            last["workload_report"]["integrity_errors"], 0,
            "{name} on {host}: {last}"
        );
        eprintln!(
            "{name} on {host}: ops {} -> {}, integrity errors 0",
            ops(&first),
            ops(&last)
        );
        last
    }
}

impl Lab {
    /// Kills host `host`'s agent with SIGKILL (its VMs keep running, as after a crash).
    /// VM `vm`'s disk file on `host` (the agent's storage directory).
    pub fn disk_of(&self, host: &str, vm: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(self.host(host)["state_dir"].as_str().expect("dir"))
            .join("disks")
            .join(format!("{vm}.qcow2"))
    }

    /// VM `vm`'s image on `host` has `bytes` of virtual size and no backing (`qemu-img info`;
    /// `-U`: its QEMU holds it open): a storage post-copy or hybrid has pulled all of it.
    pub fn assert_standalone_disk(&self, host: &str, vm: &str, bytes: u64) {
        let info = Command::new("qemu-img")
            .args(["info", "-U", "--output=json"])
            .arg(self.disk_of(host, vm))
            .output()
            .expect("qemu-img info");
        let info: Value = serde_json::from_slice(&info.stdout).expect("info json");
        assert_eq!(info["virtual-size"], bytes, "{info:#}");
        assert!(info.get("backing-filename").is_none(), "{info:#}");
    }

    pub fn kill_agent(&self, host: &str) {
        let pid = self.host(host)["agent_pid"].as_i64().expect("agent pid");
        assert!(Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill")
            .success());
    }

    /// Starts host `host`'s agent again on its address, state directory and token (outside the
    /// lab's cgroup, without its `--link`), killed and reaped when the result is dropped.
    pub fn restart_agent(&self, host: &str) -> Reaped {
        let h = self.host(host);
        let token_file = self.state()["token_file"]
            .as_str()
            .expect("token file")
            .to_string();
        let listen = format!("{}:7700", h["address"].as_str().expect("address"));
        let state_dir = h["state_dir"].as_str().expect("state dir").to_string();
        let netns = h["netns"].as_str().expect("netns").to_string();
        Reaped(
            Command::new("ip")
                .args([
                    "netns", "exec", &netns, DROVER, "agent", "--listen", &listen,
                ])
                .args(["--state-dir", &state_dir, "--token-file", &token_file])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("restart agent"),
        )
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

/// Takes lab `.0` down however a test that made it through another command (`drover demo`,
/// `drover experiment ...`) ends.
pub struct Down(pub String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(DROVER)
            .args(["lab", "down", "--name", &self.0])
            .output();
    }
}

/// Nothing of lab `name` is left: no state, no process mentioning its directory or any of
/// `marks`, no link.
pub fn assert_no_lab(name: &str, marks: &[String]) {
    let dirs = LabDirs::from_env();
    let lab = LabName::new(name).expect("lab name");
    assert!(
        !dirs.state_file(&lab).exists(),
        "lab {name} still described"
    );
    for mark in std::iter::once(format!("/lab/{name}/")).chain(marks.iter().cloned()) {
        let left = processes_mentioning(&mark);
        assert!(left.is_empty(), "processes left: {left:?}");
    }
    let links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains(&format!("drv{name}")),
        "links left: {links}"
    );
}

/// Sends SIGTERM to `child` and waits up to 60 s for it to end (killing it and failing
/// after that); its exit status.
pub fn terminate(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM failed");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{what} outlived SIGTERM by 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child process killed and reaped when dropped.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn drover(args: &[&str]) -> String {
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

pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn ops_per_s(vm: &Value) -> f64 {
    vm["workload_report"]["ops_per_s"]
        .as_f64()
        .or_else(|| vm["ops_per_s"].as_f64())
        .unwrap_or(0.0)
}
