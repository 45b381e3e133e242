//! End to end through the `drover` binary on a real lab (network namespaces, tbf-shaped links,
//! cgroups, agents, QEMU): `drover lab up` starting a real agent per host, migrations with every
//! technique over the shaped link, an agent killed with SIGKILL and restarted, and a CPU-capped
//! host sharing its cores. Needs root, `ip`, `tc` and QEMU (a failure under CI when missing, a
//! loud skip elsewhere) and scripts/setup. Every test tears its lab down, also when it fails, and
//! checks nothing is left.

mod common;

use common::lab::{
    drover, ops_per_s, serial, wait_until, Lab, Reaped, DROVER, WORKLOAD, WSS_PAGES,
};
use drover_lab::{CgroupVersion, LabState};
use drover_testkit::{in_netns, require, Need, IP, QEMU, TC};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn migrations_over_a_shaped_link_with_every_technique_and_agent_restart() {
    require!(Need::Root, IP, TC, QEMU);
    let _serial = serial();
    let lab = Lab::up('m', &["--hosts", "2", "--link", "50MB/s"]);
    lab.create_vm("vm1", "h1", "256M", WORKLOAD);
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
        let r = lab.migrate("vm1", to, technique);
        // `vm migrate --json` prints the migration record, the result inside it.
        assert_eq!(r["state"], "completed", "{technique}: {r}");
        let result = &r["result"];
        assert_eq!(result["status"], "completed", "{technique}: {r}");
        if technique == "auto" {
            // The lab told each agent its link: `auto` predicted for 50 MB/s, not 1000.
            let reason = result["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains("assumed bandwidth 50000000 B/s: this host's link"),
                "{r}"
            );
        }
        let bytes = result["transferred_bytes"].as_f64().expect("bytes");
        let ms = result["total_ms"].as_f64().expect("total_ms");
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
        // The record's integrity count (with --no-measure) only saw the source's reports: the
        // claim of no corruption comes from a full sweep of the working set on the destination.
        lab.assert_works_intact_on(host, "vm1", WSS_PAGES);
    }
    // kill -9 the agent that runs vm1, restart it: the VM keeps running and is listed again.
    let before = lab.find_vm(host, "vm1");
    lab.kill_agent(host);
    std::thread::sleep(Duration::from_millis(500));
    let _agent = lab.restart_agent(host);
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
    let after = lab.assert_works_intact_on(host, "vm1", WSS_PAGES);
    assert_eq!(
        after["pid"], before["pid"],
        "the VM must not have been restarted"
    );
}

#[test]
fn a_cpu_capped_host_gives_two_hungry_vms_half_of_what_they_ask() {
    require!(Need::Root, IP, TC, QEMU);
    let _serial = serial();
    let lab = Lab::up('c', &["--hosts", "1", "--host-cpus", "0.5"]);
    for name in ["c1", "c2"] {
        lab.create_vm(name, "h1", "128M", "cpu:demand=50");
    }
    let client = lab.host_client("h1");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // Boot is slow at a quarter core each; then let the CPU figures settle.
    wait_until("both workloads to report", Duration::from_secs(180), || {
        let vms = lab.vms_on("h1");
        vms.len() == 2 && vms.iter().all(|v| ops_per_s(v) > 0.0)
    });
    std::thread::sleep(Duration::from_secs(12));
    let metrics = runtime.block_on(client.metrics()).expect("metrics");
    assert_eq!(metrics.vms.len(), 2, "{metrics:?}");
    for vm in &metrics.vms {
        // Each asks for half a core; the host has half a core for both.
        assert!(
            (0.12..=0.38).contains(&vm.cpu_cores),
            "{}: {} cores: {metrics:?}",
            vm.name,
            vm.cpu_cores
        );
    }
    let total: f64 = metrics.vms.iter().map(|v| v.cpu_cores).sum();
    assert!(
        total <= 0.6,
        "host capped at 0.5 cores used {total}: {metrics:?}"
    );
}

/// `GET path` over plain HTTP/1.1 from inside network namespace `netns`; the whole response.
/// A VM whose QEMU the host's OOM killer takes is reported lost, and the reason says so: the
/// agent runs under `ip netns exec` (no cgroupfs in sight) and reads its memory cgroup through
/// the descriptor the lab's wrapper hands it. To get an OOM kill past admission, this agent is
/// told it has 2 GiB while its cgroup holds 256 MiB.
#[test]
fn a_vm_the_oom_killer_takes_is_lost_and_the_reason_says_so() {
    require!(Need::Root, IP, TC, QEMU);
    let _serial = serial();
    let lab = Lab::up(
        'o',
        &["--hosts", "1", "--host-memory", "256MiB", "--no-agents"],
    );
    let state = lab.typed_state();
    let h = &state.hosts[0];
    let memory_dir = h
        .cgroup_dirs
        .iter()
        .find(|d| d.join("memory.limit_in_bytes").exists() || d.join("memory.max").exists())
        .expect("the host's memory cgroup");
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("{}:7700", h.address);
    let agent = [
        "ip",
        "netns",
        "exec",
        &h.netns,
        DROVER,
        "agent",
        "--listen",
        &listen,
        "--memory",
        "2G",
        "--cgroup-dir",
        "/proc/self/fd/3",
    ]
    .map(str::to_string);
    let mut argv = agent.to_vec();
    argv.extend([
        "--state-dir".into(),
        agent_dir.path().display().to_string(),
        "--token-file".into(),
        state.token_file.display().to_string(),
    ]);
    let argv = drover_lab::plan::in_cgroup_argv(
        &h.cgroup_procs,
        &drover_lab::plan::with_dir_fd(memory_dir, &argv),
    );
    let log = std::fs::File::create(agent_dir.path().join("agent.log")).expect("log");
    let _agent = Reaped(
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent"),
    );
    let client = lab.client(&format!("http://{listen}"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    wait_until("the agent to answer", Duration::from_secs(30), || {
        runtime.block_on(client.health()).is_ok()
    });
    let config = drover_api::VmConfig {
        name: "hog".into(),
        vcpus: 1,
        memory_bytes: 256 << 20,
        workload: "memtouch:wss=160M".into(),
        disk: None,
        disk_size_bytes: None,
        disk_base: None,
        nic: None,
    };
    runtime
        .block_on(client.create_vm(&config))
        .expect("admitted");
    let mut last = None;
    wait_until(
        "the OOM killer to take hog",
        Duration::from_secs(120),
        || {
            let v = runtime.block_on(client.get_vm("hog")).expect("hog");
            let lost = v.status == drover_api::VmStatus::Lost;
            last = Some(v);
            lost
        },
    );
    let why = last.and_then(|v| v.error).unwrap_or_default();
    assert!(why.contains("OOM-killed"), "{why}");
    assert!(why.contains("/proc/self/fd/3"), "{why}");
}

fn http_get_from(netns: &str, addr: SocketAddr, path: &str) -> Result<String, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        s.write_all(request.as_bytes())
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut response = String::new();
        s.read_to_string(&mut response)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        Ok(response)
    })
    .join()
    .expect("thread in the namespace")
}

fn assert_tbf(state: &LabState) {
    let rate = format!("rate {}Mbit", state.link.rate_bytes_per_sec * 8 / 1_000_000);
    for h in &state.hosts {
        let outside = sh(&format!("tc qdisc show dev {}", h.veth));
        let inside = sh(&format!("tc -n {} qdisc show dev eth0", h.netns));
        for (side, text) in [("host side", outside), ("namespace side", inside)] {
            assert!(
                text.contains("qdisc tbf") && text.contains(&rate),
                "{} {side}: {text}",
                h.name
            );
        }
    }
}

fn assert_cgroup_limits(state: &LabState, quota_us: u64, memory: u64) {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    };
    for h in &state.hosts {
        let find = |file: &str| {
            h.cgroup_dirs
                .iter()
                .map(|d| d.join(file))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("{} has no {file} in {:?}", h.name, h.cgroup_dirs))
        };
        match state.cgroup_version {
            CgroupVersion::V1 => {
                assert_eq!(read(&find("cpu.cfs_quota_us")), quota_us.to_string());
                assert_eq!(read(&find("cpu.cfs_period_us")), "100000");
                assert_eq!(read(&find("memory.limit_in_bytes")), memory.to_string());
            }
            CgroupVersion::V2 => {
                assert_eq!(read(&find("cpu.max")), format!("{quota_us} 100000"));
                assert_eq!(read(&find("memory.max")), memory.to_string());
            }
        }
    }
}

/// Whether `pid` exists and is not a zombie (an init that reaps late must not fail the test).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat.get(stat.rfind(')')? + 2..)?;
            Some(!rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What users run: `drover lab up` makes the hosts and starts this very binary's `agent` in each
/// host's namespace and cgroup; every agent answers health from the other hosts over the lab's
/// bridge; `drover lab down` stops the agents and removes everything.
#[test]
fn lab_up_runs_a_real_agent_per_host_reachable_over_the_lab_network() {
    require!(Need::Root, IP, TC);
    let _serial = serial();
    let lab = Lab::up(
        'a',
        &[
            "--hosts",
            "2",
            "--host-cpus",
            "0.5",
            "--host-memory",
            "512MiB",
            "--link",
            "20MB/s",
        ],
    );
    let state = lab.typed_state();
    assert_eq!(state.hosts.len(), 2);
    for h in &state.hosts {
        assert!(
            Path::new("/run/netns").join(&h.netns).exists(),
            "{}",
            h.netns
        );
    }
    assert_tbf(&state);
    assert_cgroup_limits(&state, 50_000, 512 << 20);

    let mut pids = Vec::new();
    for h in &state.hosts {
        let pid = h
            .agent_pid
            .unwrap_or_else(|| panic!("{}: no agent pid", h.name));
        pids.push(pid);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            cmdline.starts_with(&format!("{DROVER} agent --listen {}:", h.address)),
            "{}: agent {pid} runs {cmdline:?}",
            h.name
        );
        for procs in &h.cgroup_procs {
            let listed = std::fs::read_to_string(procs).expect("cgroup.procs");
            assert!(
                listed.lines().any(|l| l == pid.to_string()),
                "{}: agent {pid} not in {}: {listed}",
                h.name,
                procs.display()
            );
        }
        let in_ns = sh(&format!("ip netns pids {}", h.netns));
        assert!(
            in_ns.lines().any(|l| l == pid.to_string()),
            "{}: agent {pid} not in {}: {in_ns}",
            h.name,
            h.netns
        );
    }
    // From each host's namespace to every other host's agent: the only way out of a namespace
    // is its shaped veth onto the lab's bridge.
    for from in &state.hosts {
        for to in state.hosts.iter().filter(|h| h.name != from.name) {
            let addr = SocketAddr::new(to.address.into(), drover_lab::plan::AGENT_PORT);
            let response = http_get_from(&from.netns, addr, "/v1/health")
                .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.name, to.name));
            assert!(
                response.starts_with("HTTP/1.1 200") && response.contains(r#""status":"ok""#),
                "{} -> {} /v1/health: {response}",
                from.name,
                to.name
            );
        }
    }
    let status: Value =
        serde_json::from_str(&drover(&["lab", "status", "--name", &lab.name, "--json"]))
            .expect("status json");
    let hosts = status["hosts"].as_array().expect("status hosts");
    assert!(
        hosts.len() == 2 && hosts.iter().all(|h| h["agent_healthy"] == true),
        "{status}"
    );

    drover(&["lab", "down", "--name", &lab.name]);
    wait_until("the agents to exit", Duration::from_secs(10), || {
        pids.iter().all(|pid| !running(*pid))
    });
    let netns = sh("ip netns list");
    let links = sh("ip -o link show");
    let prefix = format!("drv{}", lab.name);
    assert!(!netns.contains(&prefix), "namespaces left: {netns}");
    assert!(!links.contains(&prefix), "links left: {links}");
    for h in &state.hosts {
        for dir in &h.cgroup_dirs {
            assert!(!dir.exists(), "cgroup left: {}", dir.display());
        }
    }
    assert!(!state.lab_dir.exists(), "{} left", state.lab_dir.display());
}
