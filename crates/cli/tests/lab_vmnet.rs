//! VM networking on a real lab, through the `drover` binary: a VM with a NIC on the lab's VM
//! network runs a `net` flow with the lab's traffic peer (`drover lab peer` in its namespace),
//! migrates to another host, and the same TCP connection carries on; the longest pause the peer
//! saw in the guest's bytes (the migration's gap) is printed. Needs root, `ip`, `tc` and QEMU
//! (a failure under CI when missing, a loud skip elsewhere). The lab is torn down and the peer
//! killed also when the test fails; the peer is bounded by its --duration in any case.

mod common;

use common::lab::{drover, serial, wait_until, Lab, Reaped, DROVER};
use drover_lab::name::Subnet;
use drover_testkit::{require, Need, IP, QEMU, TC};
use serde_json::Value;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The flow's rate each way, bytes/s (small: the guest runs under TCG on a shared machine).
const RATE: u64 = 256 << 10;

/// The peer's reports, as they arrive.
#[derive(Clone, Default)]
struct PeerLines(Arc<Mutex<Vec<Value>>>);

impl PeerLines {
    /// The last report's connections.
    fn conns(&self) -> Vec<Value> {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .last()
            .and_then(|l| l["conns"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl PeerLines {
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The longest time without bytes from the guest that the reports from the `from`th on
    /// saw on the first connection (sampled each report: up to one report interval short).
    fn longest_idle_since(&self, from: usize) -> u64 {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines[from.min(lines.len())..]
            .iter()
            .filter_map(|l| l["conns"][0]["rx_idle_ms"].as_u64())
            .max()
            .unwrap_or(0)
    }
}

/// Migrates vm1 to `to` with `technique` and waits until four more seconds of the flow arrived
/// on the same connection: the migration's seconds and the longest pause in the guest's bytes
/// meanwhile, ms.
fn migrate_and_resume(lab: &Lab, lines: &PeerLines, to: &str, technique: &str) -> (f64, u64) {
    let from_line = lines.len();
    let started = Instant::now();
    let r = lab.migrate("vm1", to, technique);
    assert_eq!(r["state"], "completed", "{technique}: {r}");
    let migration_s = started.elapsed().as_secs_f64();
    let moved_at = rx(&lines.conns()[0]);
    let mut after = Value::Null;
    wait_until(
        &format!("the flow to resume after the {technique} migration"),
        Duration::from_secs(60),
        || {
            after = lines.conns().first().cloned().unwrap_or(Value::Null);
            rx(&after) > moved_at + 4 * RATE
        },
    );
    let conns = lines.conns();
    assert_eq!(conns.len(), 1, "the guest reconnected: {conns:?}");
    assert_eq!(after["open"], true, "{after}");
    let gap = lines.longest_idle_since(from_line);
    eprintln!(
        "flow across a {technique} migration to {to} (migration {migration_s:.1} s): longest \
         pause in the guest's bytes {gap} ms; {after}"
    );
    assert!(gap < 30_000, "{after}");
    (migration_s, gap)
}

fn rx(c: &Value) -> u64 {
    c["rx_bytes"].as_u64().unwrap_or(0)
}

/// Whether `tap` exists in `netns` and has `mac`.
fn tap_in(netns: &str, tap: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-n", netns, "-o", "link", "show", "dev", tap])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_vm_with_a_nic_keeps_its_tcp_flow_with_the_peer_across_a_migration() {
    require!(Need::Root, IP, TC, QEMU);
    let _serial = serial();
    let lab = Lab::up('n', &["--hosts", "2", "--link", "50MB/s"]);
    let state = lab.typed_state();
    let peer = state.peer.clone().expect("the lab has a traffic peer");
    let subnet = Subnet::containing(peer.address).expect("a lab address");
    let address = subnet.vm_addr(0).expect("a VM address").to_string();

    // The peer, run directly in its namespace (`ip netns exec` execs drover, so killing the
    // child kills the server), bounded by --duration.
    let mut child = Command::new("ip")
        .args(["netns", "exec", &peer.netns, DROVER, "lab", "peer"])
        .args(["--name", &lab.name, "--serve-here", "--duration", "300"])
        .args(["--report-ms", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the peer");
    let out = child.stdout.take().expect("peer stdout");
    let _peer = Reaped(child);
    let lines = PeerLines::default();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                sink.0.lock().unwrap_or_else(|e| e.into_inner()).push(v);
            }
        }
    });

    let workload = format!("net:dir=both,rate=256K,peer={}", peer.address);
    lab.vm(&[
        "create",
        "vm1",
        "--host",
        "h1",
        "--memory",
        "256M",
        "--workload",
        &workload,
        "--address",
        &address,
    ]);
    let nic = drover_api::NicConfig {
        address: address.clone(),
    };
    let (tap, mac) = (nic.tap().expect("tap"), nic.mac().expect("mac"));
    let h1 = state.hosts[0].netns.clone();
    let h2 = state.hosts[1].netns.clone();
    let on_h1 = tap_in(&h1, &tap).expect("the tap on h1");
    assert!(on_h1.contains("master vmbr"), "{on_h1}");

    // The flow runs: the peer has one connection and gets the guest's bytes.
    let mut before = Value::Null;
    wait_until(
        "the guest's flow to reach the peer",
        Duration::from_secs(120),
        || {
            before = lines.conns().first().cloned().unwrap_or(Value::Null);
            rx(&before) > 4 * RATE
        },
    );
    let gap_before = before["max_rx_gap_ms"].as_u64().unwrap_or(0);
    eprintln!("before the migration: {before}");

    let (_, pre_gap) = migrate_and_resume(&lab, &lines, "h2", "precopy");

    // The tap on h2's bridge (its own MAC is the host side's; the guest's is checked in the
    // bridge's table below); h1's tap gone with the VM.
    let on_h2 = tap_in(&h2, &tap).expect("the tap on h2");
    assert!(on_h2.contains("master vmbr"), "{on_h2}");
    assert_eq!(tap_in(&h1, &tap), None, "h1's tap is left");
    // h2's agent reports the VM's traffic from its tap: about the rate each way (frames carry
    // headers, and each way carries the other's acknowledgements).
    let client = lab.host_client("h2");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut seen = (0.0, 0.0);
    wait_until(
        "h2's metrics to show the flow",
        Duration::from_secs(30),
        || {
            let m = runtime.block_on(client.metrics()).ok();
            let vm = m.and_then(|m| m.vms.into_iter().find(|v| v.name == "vm1"));
            seen = vm.map_or((0.0, 0.0), |v| (v.net_rx_bps, v.net_tx_bps));
            let band = 0.5 * RATE as f64..=2.0 * RATE as f64;
            band.contains(&seen.0) && band.contains(&seen.1)
        },
    );
    eprintln!(
        "h2's tap: guest rx {:.0} B/s, tx {:.0} B/s (flow rate {RATE} B/s each way)",
        seen.0, seen.1
    );
    // h2's bridge learned the guest's MAC, the same as on h1, behind the tap.
    let fdb = Command::new("bridge")
        .args(["-n", &h2, "fdb", "show", "dev", &tap])
        .output()
        .expect("bridge fdb");
    let fdb = String::from_utf8_lossy(&fdb.stdout);
    assert!(fdb.contains(&mac), "{mac} not behind {tap} on h2: {fdb}");

    // And back with post-copy: the flow still on its first connection.
    let (_, post_gap) = migrate_and_resume(&lab, &lines, "h1", "postcopy");
    assert!(tap_in(&h1, &tap).is_some(), "no tap on h1");
    assert_eq!(tap_in(&h2, &tap), None, "h2's tap is left");
    eprintln!(
        "gaps: pre-copy {pre_gap} ms, post-copy {post_gap} ms (the flow's own longest pause \
         before: {gap_before} ms)"
    );

    drover(&["vm", "delete", "vm1", "--host", "h1", "--lab", &lab.name]);
    assert_eq!(tap_in(&h1, &tap), None, "h1's tap is left after delete");
}
