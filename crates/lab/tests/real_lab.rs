//! Real labs on this machine (root, `ip` and `tc`: a failure under CI when missing, a loud skip
//! elsewhere). Every test uses its own lab name and a guard that runs `down` even if the test
//! panics. Labs with real agents (the `drover` binary) are tested in crates/cli/tests/lab_e2e.rs,
//! where that binary is built for the tests.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cpu_seconds, in_netns, read_trim, require_lab, sh, spawn_in_cgroup, Guard};
use drover_lab::{CgroupVersion, HostState, LabError, LabState, RealSystem};

fn tcp_reachable(from: &HostState, to: &HostState, port: u16) -> Result<(), String> {
    let addr = SocketAddr::new(to.address.into(), port);
    let listener = in_netns(&to.netns, move || TcpListener::bind(addr))
        .join()
        .expect("thread");
    let listener = listener.map_err(|e| format!("bind {addr}: {e}"))?;
    // The kernel completes the handshake and buffers the bytes before accept, so the client is
    // joined first: a failed connect then returns an error instead of leaving accept waiting.
    in_netns(&from.netns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map(|mut s| s.write_all(b"hi"))
    })
    .join()
    .expect("thread")
    .map_err(|e| format!("connect {addr}: {e}"))?
    .map_err(|e| e.to_string())?;
    let (mut conn, peer) = accept_within(&listener, Duration::from_secs(3))?;
    conn.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2];
    conn.read_exact(&mut buf).map_err(|e| e.to_string())?;
    if peer.ip() != std::net::IpAddr::from(from.address) {
        return Err(format!("peer was {peer}, not {}", from.address));
    }
    Ok(())
}

/// One connection within `timeout` (a peer that never connects must not hang the test).
fn accept_within(
    listener: &TcpListener,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((conn, peer)) => {
                conn.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok((conn, peer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
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
                assert_eq!(read_trim(&find("cpu.cfs_quota_us")), quota_us.to_string());
                assert_eq!(read_trim(&find("cpu.cfs_period_us")), "100000");
                assert_eq!(
                    read_trim(&find("memory.limit_in_bytes")),
                    memory.to_string()
                );
            }
            CgroupVersion::V2 => {
                assert_eq!(read_trim(&find("cpu.max")), format!("{quota_us} 100000"));
                assert_eq!(read_trim(&find("memory.max")), memory.to_string());
            }
        }
    }
}

/// A process outside the lab's cgroups (the lab's down would not kill it), killed when dropped,
/// a failed assertion included.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Share of one CPU each process gets over the same `secs`.
fn cpu_shares<const N: usize>(pids: [u32; N], secs: f64) -> [f64; N] {
    let before = pids.map(cpu_seconds);
    std::thread::sleep(Duration::from_secs_f64(secs));
    let mut i = 0;
    pids.map(|pid| {
        let share = (cpu_seconds(pid) - before[i]) / secs;
        i += 1;
        share
    })
}

/// The least a busy loop under the 0.5-core cap must get when an uncapped loop beside it got
/// `spare`: 60% of what it could have had (the cap, or what the machine had spare).
fn floor(spare: f64) -> f64 {
    0.6 * spare.min(0.5)
}

#[test]
fn two_hosts_are_connected_shaped_and_capped_and_down_removes_everything() {
    require_lab!();
    let g = Guard::new('a');
    let spec = g
        .spec(2)
        .cpus(0.5)
        .memory(256 << 20)
        .link_rate(20_000_000)
        .expect("rate");
    let state = g.up(&spec);
    assert_eq!(state.hosts.len(), 2);
    for h in &state.hosts {
        assert!(
            Path::new("/run/netns").join(&h.netns).exists(),
            "{}",
            h.netns
        );
    }
    let (h1, h2) = (&state.hosts[0], &state.hosts[1]);
    // No ping binary is assumed; a TCP handshake proves h1 reaches h2 over the bridge.
    tcp_reachable(h1, h2, 5000).expect("h1 -> h2");
    tcp_reachable(h2, h1, 5000).expect("h2 -> h1");
    assert_tbf(&state);
    assert_cgroup_limits(&state, 50_000, 256 << 20);
    let mode = std::fs::metadata(&state.token_file)
        .map(|m| m.permissions())
        .expect("token");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // An overloaded host is real: a busy loop on a host capped at 0.5 cores gets about half a
    // CPU. The cap bounds it from above; from below it can only get what the machine has spare,
    // so an uncapped busy loop beside it, outside every lab cgroup, measures that (on a machine
    // loaded by other work both get less than half a CPU; CFS weighs the host's cgroup like
    // one task).
    let reference = Killed(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("uncapped busy loop"),
    );
    let mut busy = spawn_in_cgroup(&h1.cgroup_procs, &["sh", "-c", "while :; do :; done"]);
    std::thread::sleep(Duration::from_millis(300));
    let [share, spare] = cpu_shares([busy.id(), reference.0.id()], 3.0);
    eprintln!(
        "busy loop on a host capped at 0.5 cores got {:.0}% of a CPU (uncapped beside it: {:.0}%)",
        share * 100.0,
        spare * 100.0
    );
    // Two demanding processes share the cap: together about half a CPU.
    let mut busy2 = spawn_in_cgroup(&h1.cgroup_procs, &["sh", "-c", "while :; do :; done"]);
    std::thread::sleep(Duration::from_millis(300));
    let [a, b, spare2] = cpu_shares([busy.id(), busy2.id(), reference.0.id()], 3.0);
    eprintln!(
        "two busy loops on that host got {:.0}% and {:.0}% of a CPU (uncapped beside them: {:.0}%)",
        a * 100.0,
        b * 100.0,
        spare2 * 100.0
    );
    drop(reference);
    // A leftover "QEMU" inside the host's namespace and cgroup: down must kill it.
    let ns = h2.netns.as_str();
    let mut stray = spawn_in_cgroup(
        &h2.cgroup_procs,
        &["ip", "netns", "exec", ns, "sleep", "300"],
    );
    std::thread::sleep(Duration::from_millis(300));

    let report = g.down();
    assert!(
        stray.try_wait().expect("wait").is_some() || wait_briefly(&mut stray),
        "stray survived down"
    );
    for p in [&mut busy, &mut busy2] {
        let _ = p.kill();
        let _ = p.wait();
    }
    assert!(
        (floor(spare)..=0.70).contains(&share),
        "CPU share {share:.2} outside {:.2}..0.70 (uncapped beside it: {spare:.2})",
        floor(spare)
    );
    assert!(
        (floor(spare2)..=0.70).contains(&(a + b)),
        "two loops got {a:.2} + {b:.2}, not about 0.5 (at least {:.2}; uncapped beside them: \
         {spare2:.2})",
        floor(spare2)
    );
    // Two hosts and the traffic peer.
    assert_eq!(report.namespaces.len(), 3);
    assert_eq!(g.leftovers(), "");
    assert!(g.down().is_empty(), "second down found something");
}

fn wait_briefly(child: &mut std::process::Child) -> bool {
    for _ in 0..20 {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn down_after_a_crash_finds_everything_by_name() {
    require_lab!();
    let g = Guard::new('b');
    let state = g.up(&g.spec(2));
    // The crash: the state file is gone, the kernel objects and a process remain.
    std::fs::remove_file(g.dirs.state_file(&g.name)).expect("remove state");
    let mut stray = spawn_in_cgroup(&state.hosts[0].cgroup_procs, &["sleep", "300"]);
    std::thread::sleep(Duration::from_millis(200));

    let err = drover_lab::up(&mut RealSystem, &g.dirs, &g.spec(2), &g.layout).unwrap_err();
    assert!(matches!(err, LabError::Leftovers { .. }), "{err}");
    let report = g.down();
    // The bridge, two hosts' veths and the traffic peer's.
    assert_eq!(report.links.len(), 4, "{report:?}");
    assert!(
        wait_briefly(&mut stray),
        "process in the cgroup survived down"
    );
    assert_eq!(g.leftovers(), "");
    assert!(g.down().is_empty());
}

#[test]
fn a_failed_up_rolls_back_what_it_made() {
    require_lab!();
    let g = Guard::new('c');
    // An agent that cannot start fails `up` after the bridge and every host's namespace, veth
    // pair, qdiscs and cgroups exist. (A CPU cap the kernel rejects no longer gets this far:
    // caps are checked against 0.1 to 1024 cores first.)
    let spec = g.spec(2).cpus(0.5).agent(drover_lab::AgentLaunch {
        argv_prefix: vec!["/nonexistent/drover-agent".into()],
        port: 7700,
        health_timeout: Duration::from_secs(1),
    });
    let err = drover_lab::up(&mut RealSystem, &g.dirs, &spec, &g.layout).unwrap_err();
    let LabError::SetUp { rollback, .. } = &err else {
        panic!("{err}")
    };
    assert!(rollback.is_empty(), "{err}");
    assert!(err.to_string().contains("h1"), "{err}");
    assert_eq!(g.leftovers(), "");
}

/// Sends `bytes` from h1 to h2 and returns the receiver's measured rate in bytes per second.
fn transfer(from: &HostState, to: &HostState, bytes: usize) -> f64 {
    let addr = SocketAddr::new(to.address.into(), 5001);
    let listener = in_netns(&to.netns, move || TcpListener::bind(addr))
        .join()
        .expect("thread")
        .expect("bind");
    let sender = in_netns(&from.netns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let chunk = vec![0u8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n]).expect("send");
            left -= n;
        }
    });
    let (mut conn, _) = accept_within(&listener, Duration::from_secs(5)).expect("accept");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    let mut first = None;
    while got < bytes {
        let n = match conn.read(&mut buf) {
            // A signal meant for another test's child can interrupt the read; std retries
            // EINTR in read_exact but not in read.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other.expect("receive"),
        };
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        got += n;
    }
    let secs = first
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(f64::INFINITY);
    sender.join().expect("sender");
    assert_eq!(got, bytes, "short transfer");
    got as f64 / secs
}

#[test]
fn tbf_caps_throughput_at_the_link_rate() {
    require_lab!();
    let g = Guard::new('e');
    let rate = 20_000_000.0;
    let state = g.up(&g.spec(2).link_rate(rate as u64).expect("rate"));
    let (h1, h2) = (&state.hosts[0], &state.hosts[1]);
    // 40 MB: two seconds at the set rate, long enough that the initial burst does not matter.
    let forward = transfer(h1, h2, 40_000_000);
    let backward = transfer(h2, h1, 40_000_000);
    eprintln!(
        "tbf at 20 MB/s: h1->h2 {:.1} MB/s, h2->h1 {:.1} MB/s",
        forward / 1e6,
        backward / 1e6
    );
    for measured in [forward, backward] {
        assert!(
            (measured - rate).abs() <= 0.2 * rate,
            "measured {measured:.0} B/s vs {rate}"
        );
    }
    g.down();
    assert_eq!(g.leftovers(), "");
}
