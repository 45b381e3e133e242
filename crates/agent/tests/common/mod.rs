//! What the agent's integration tests set up alike: one token, agents in this process on
//! loopback (with the real guest image under TCG, or with stand-in image files), a VM's
//! configuration, raw requests, VMs recorded whose QEMU is long gone, and the guard that kills
//! every QEMU a test started however it ends.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use drover_agent::model::{VmRecord, VmRole};
use drover_agent::{procfs, start, AgentConfig, RunningAgent};
use drover_api::{unix_ms, AgentClient, AgentUrl, MigrationRecord, VmConfig};
use drover_qemu::image::GuestImage;
use drover_qemu::launcher::Accel;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The bearer token of every agent and client the tests make.
pub const TOKEN: &str = "agent-tests-token-0123456789";

/// Kills every QEMU recorded in these state directories, however the test ends.
pub struct QemuGuard(pub Vec<PathBuf>);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        for dir in &self.0 {
            let Ok(store) = drover_agent::store::Store::open(dir) else {
                continue;
            };
            for vm in store.load_vms().unwrap_or_default() {
                if procfs::is_alive(vm.pid, &vm.config.name) {
                    let _ = procfs::signal(vm.pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// The guest image (built from the inputs `scripts/setup` fetches).
pub fn image() -> GuestImage {
    drover_qemu::image::ensure_image(&drover_qemu::image::NoProgress)
        .expect("guest image (run scripts/setup)")
}

/// An agent on a free loopback port keeping its state in `state`.
pub fn config(state: &Path) -> AgentConfig {
    AgentConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        state.to_path_buf(),
        TOKEN.into(),
    )
}

/// An agent that boots real guests from `image` under TCG.
pub fn tcg_config(state: &Path, image: &GuestImage) -> AgentConfig {
    let mut c = config(state);
    c.accel = Accel::Tcg;
    c.image = Some(image.clone());
    c
}

/// An agent whose state is `dir/state` and whose guest image is two stand-in files in `dir`
/// (they exist, so the agent starts; no QEMU could boot them).
pub fn stand_in_config(dir: &Path) -> AgentConfig {
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd");
    std::fs::write(&kernel, b"k").expect("write");
    std::fs::write(&initrd, b"i").expect("write");
    let mut c = config(&dir.join("state"));
    c.image = Some(GuestImage { kernel, initrd });
    c
}

/// Starts the agent `c` describes; returns it and its base URL.
pub async fn run(c: AgentConfig) -> (RunningAgent, String) {
    let a = start(c).await.expect("agent starts");
    let url = format!("http://{}", a.addr);
    (a, url)
}

/// A typed client of the agent at `url`.
pub fn client(url: &str) -> AgentClient {
    AgentClient::new(AgentUrl::parse(url).expect("agent URL"), TOKEN)
}

/// A 1-vCPU, 128 MiB VM running `workload`, without disk or NIC.
pub fn vm(name: &str, workload: &str) -> VmConfig {
    VmConfig {
        name: name.into(),
        vcpus: 1,
        memory_bytes: 128 << 20,
        workload: workload.into(),
        disk: None,
        disk_size_bytes: None,
        disk_base: None,
        nic: None,
    }
}

/// Sends `method url` with the token and an optional JSON body; returns the status and the
/// body's text.
pub async fn send(method: &str, url: &str, body: Option<&Value>) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .request(method.parse().expect("method"), url)
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// [`send`], the answer read as JSON (Null when it is not).
pub async fn send_json(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let (status, text) = send(method, url, body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The pid of a process that has exited (no QEMU of any name runs under it).
pub fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let pid = child.id();
    child.wait().expect("wait");
    pid
}

/// The record of VM `config` in role `role` whose QEMU is gone (the agent reports it `lost`).
pub fn ghost(config: VmConfig, role: VmRole, run_dir: PathBuf) -> VmRecord {
    VmRecord {
        config,
        role,
        pid: dead_pid(),
        run_dir,
        created_unix_ms: unix_ms(),
        arrived_by: None,
    }
}

/// Polls `a`'s view of migration `id` every 100 ms until `done` says so; panics with the last
/// record after `timeout`.
pub async fn wait_for(
    a: &AgentClient,
    id: &str,
    timeout: std::time::Duration,
    done: impl Fn(&MigrationRecord) -> bool,
) -> MigrationRecord {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let m = a.migration(id).await.expect("migration");
        if done(&m) {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {m:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
