//! A real WAN pair (root, namespaces, TUN: a failure under CI when missing): two hosts with
//! `h1-h2=100Mbit/s,50ms`, measured from the hosts' own sockets. Traffic is bounded in bytes
//! and time; the guard takes the lab down even when an assertion fails.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{in_netns, require_lab, sh, Guard};
use drover_lab::delay_io::ControlReply;
use drover_lab::system::control_request;
use drover_lab::wan::WanLink;
use drover_lab::{HostState, LabState};

const DELAY: Duration = Duration::from_millis(50);
const RATE_BYTES: u64 = 12_500_000;
/// The bulk transfer: bounded in bytes and in time.
const BULK_BYTES: usize = 25_000_000;
const BULK_LIMIT: Duration = Duration::from_secs(40);
const PORT_ECHO: u16 = 7801;
const PORT_BULK: u16 = 7802;
const PORT_ONE_WAY: u16 = 7803;
const PORT_CUT: u16 = 7804;

fn addr(h: &HostState, port: u16) -> SocketAddr {
    SocketAddr::new(h.address.into(), port)
}

fn control(state: &LabState, request: &str) -> ControlReply {
    let answer = control_request(&state.wan[0].config.control, request).expect("control");
    serde_json::from_str(&answer).expect("control reply")
}

/// Measuring threads run at the delay line's real-time priority, so a busy machine and a
/// `nice`d test run do not add their scheduling delay to what is measured.
fn measuring_priority() {
    drover_lab::delay_io::realtime_priority().expect("real-time priority (root)");
}

fn median(mut v: Vec<Duration>) -> Duration {
    assert!(!v.is_empty(), "no samples");
    v.sort();
    v[v.len() / 2]
}

fn within_10_percent(measured: Duration, setting: Duration) -> bool {
    let (m, s) = (measured.as_secs_f64(), setting.as_secs_f64());
    (m - s).abs() <= 0.1 * s
}

/// Round trips of `n` UDP probes from `from` to an echo in `to` (each waited for up to 2 s).
fn udp_rtts(from: &HostState, to: &HostState, n: usize) -> Vec<Duration> {
    let to_addr = addr(to, PORT_ECHO);
    let echo = in_netns(&to.netns, move || {
        measuring_priority();
        let s = UdpSocket::bind(to_addr).expect("bind echo");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..n {
            let Ok((len, peer)) = s.recv_from(&mut buf) else {
                return;
            };
            let _ = s.send_to(&buf[..len], peer);
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let from_addr = addr(from, 0);
    let rtts = in_netns(&from.netns, move || {
        measuring_priority();
        let s = UdpSocket::bind(from_addr).expect("bind probe");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        for i in 0..n as u32 {
            let t = Instant::now();
            s.send_to(&i.to_be_bytes(), to_addr).expect("send probe");
            if s.recv(&mut buf).is_ok() {
                out.push(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        out
    })
    .join()
    .expect("probe thread");
    let _ = echo.join();
    rtts
}

/// One-way delays of probes sent from `from` to `to` every 20 ms while `running` (the test
/// process's threads share one clock, whatever namespace each is in).
fn one_way_probes(
    from: &HostState,
    to: &HostState,
    running: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Duration>> {
    let sent: Arc<Mutex<BTreeMap<u32, Instant>>> = Arc::default();
    let to_addr = addr(to, PORT_ONE_WAY);
    let from_addr = addr(from, 0);
    let (sent_rx, run_rx) = (sent.clone(), running.clone());
    let receiver = in_netns(&to.netns, move || {
        measuring_priority();
        let s = UdpSocket::bind(to_addr).expect("bind one-way");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4];
        while run_rx.load(Ordering::SeqCst) {
            if let Ok(4) = s.recv(&mut buf) {
                let at = Instant::now();
                let seq = u32::from_be_bytes(buf);
                if let Some(t) = sent_rx.lock().unwrap().get(&seq) {
                    out.push(at - *t);
                }
            }
        }
        out
    });
    in_netns(&from.netns, move || {
        measuring_priority();
        let s = UdpSocket::bind(from_addr).expect("bind one-way sender");
        let mut seq = 0u32;
        while running.load(Ordering::SeqCst) {
            sent.lock().unwrap().insert(seq, Instant::now());
            let _ = s.send_to(&seq.to_be_bytes(), to_addr);
            seq += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    receiver
}

/// Sends [`BULK_BYTES`] from `from` to `to` over TCP; returns the receiver's time for it.
fn bulk(from: &HostState, to: &HostState) -> Duration {
    let to_addr = addr(to, PORT_BULK);
    let listener = in_netns(&to.netns, move || TcpListener::bind(to_addr))
        .join()
        .unwrap()
        .expect("bind bulk");
    let receiver = std::thread::spawn(move || {
        measuring_priority();
        let (mut conn, _) = listener.accept().expect("accept bulk");
        conn.set_read_timeout(Some(BULK_LIMIT)).unwrap();
        let start = Instant::now();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < BULK_BYTES && start.elapsed() < BULK_LIMIT {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        (got, start.elapsed())
    });
    in_netns(&from.netns, move || {
        measuring_priority();
        let mut s = TcpStream::connect_timeout(&to_addr, Duration::from_secs(3)).expect("connect");
        s.set_write_timeout(Some(BULK_LIMIT)).unwrap();
        let chunk = vec![7u8; 1 << 16];
        let mut left = BULK_BYTES;
        while left > 0 {
            let n = left.min(chunk.len());
            if s.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n;
        }
    })
    .join()
    .expect("bulk sender");
    let (got, took) = receiver.join().expect("bulk receiver");
    assert_eq!(got, BULK_BYTES, "bulk transfer cut short after {took:?}");
    took
}

/// A TCP flow stalls while the link is cut and delivers once it is restored.
fn cut_and_restore_a_flow(state: &LabState, from: &HostState, to: &HostState) {
    let to_addr = addr(to, PORT_CUT);
    let listener = in_netns(&to.netns, move || TcpListener::bind(to_addr))
        .join()
        .unwrap()
        .expect("bind cut");
    let mut sender = in_netns(&from.netns, move || {
        TcpStream::connect_timeout(&to_addr, Duration::from_secs(3))
    })
    .join()
    .unwrap()
    .expect("connect cut");
    let (mut conn, _) = listener.accept().expect("accept cut");
    let r = control(state, "cut");
    assert_eq!(r.error, None);
    sender.write_all(b"across the cut").unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 14];
    assert!(
        conn.read(&mut buf).is_err(),
        "bytes crossed a cut link within 1 s"
    );
    assert_eq!(
        control(state, "cut").error.as_deref(),
        Some("the link is already cut")
    );
    assert!(control(state, "stats").dirs[0].dropped_cut > 0);
    assert_eq!(control(state, "restore").error, None);
    // TCP retransmits after its back-off (well within 10 s after a 1 s cut).
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.read_exact(&mut buf).expect("the flow after restore");
    assert_eq!(&buf, b"across the cut");
}

#[test]
fn a_wan_pair_delays_at_full_rate_cuts_and_restores_and_goes_away() {
    require_lab!();
    let g = Guard::new('w');
    let link = WanLink::parse("h1-h2=100Mbit/s,50ms").expect("wan");
    let line = env!("CARGO_BIN_EXE_drover-delay-line").to_string();
    let state = g.up(&g.spec(2).wan(vec![link], vec![line]));
    let (h1, h2) = (&state.hosts[0], &state.hosts[1]);
    let pid = state.wan[0].pid.expect("delay line pid");
    // Its precision rests on real-time priority (it says in its log when it cannot have it).
    let class = sh(&format!("ps -L -o cls= -p {pid}"));
    assert!(
        !class.is_empty() && class.lines().all(|c| c.trim() == "FF"),
        "the delay line's threads are not SCHED_FIFO: {class:?}"
    );

    // Idle round trip: twice the one-way delay.
    let idle_before = control(&state, "stats").dirs;
    let rtt = median(udp_rtts(h1, h2, 20));
    let idle = control(&state, "stats").dirs;
    let mean_ms = |d: usize| {
        let n = idle[d].forwarded_packets - idle_before[d].forwarded_packets;
        (idle[d].delay_sum_us - idle_before[d].delay_sum_us) as f64 / n.max(1) as f64 / 1000.0
    };
    eprintln!(
        "idle RTT h1->h2->h1: median {rtt:?}; the line's own delay {:.2} ms and {:.2} ms",
        mean_ms(0),
        mean_ms(1)
    );
    assert!(within_10_percent(rtt, 2 * DELAY), "idle RTT {rtt:?}");

    // At full rate: h1 sends bulk to h2; probes measure the delay both ways meanwhile.
    let before = control(&state, "stats").dirs;
    let running = Arc::new(AtomicBool::new(true));
    let reverse = one_way_probes(h2, h1, running.clone());
    let forward = one_way_probes(h1, h2, running.clone());
    let took = bulk(h1, h2);
    running.store(false, Ordering::SeqCst);
    let (reverse, forward) = (
        median(reverse.join().unwrap()),
        median(forward.join().unwrap()),
    );
    let after = control(&state, "stats").dirs;
    let fwd_packets = after[0].forwarded_packets - before[0].forwarded_packets;
    let line_delay =
        Duration::from_micros((after[0].delay_sum_us - before[0].delay_sum_us) / fwd_packets);
    let goodput = BULK_BYTES as f64 / took.as_secs_f64();
    eprintln!(
        "bulk {BULK_BYTES} B in {took:?}: {:.1} Mbit/s of {} Mbit/s; delay added by the line \
         h1->h2 (mean over {fwd_packets} packets) {line_delay:?}, max {} us, latest {} us; \
         one-way h2->h1 (ACK side) median {reverse:?}; h1->h2 (behind tbf's queue) median \
         {forward:?}; dropped full {}",
        goodput * 8.0 / 1e6,
        RATE_BYTES * 8 / 1_000_000,
        after[0].delay_max_us,
        after[0].late_max_us,
        after[0].dropped_full,
    );
    eprintln!(
        "h1's TUN device after the transfer: {}",
        sh(&format!("ip -n {} -s link show wan-h2", h1.netns))
    );
    assert!(within_10_percent(line_delay, DELAY), "{line_delay:?}");
    assert!(within_10_percent(reverse, DELAY), "{reverse:?}");
    // The line must not be the bottleneck: the transfer gets most of the link.
    assert!(goodput > 0.6 * RATE_BYTES as f64, "{goodput} B/s");
    assert_eq!(after[0].dropped_full, 0, "the line's queue overflowed");

    cut_and_restore_a_flow(&state, h1, h2);

    // Traffic to anyone else still takes the bridge (undelayed).
    let text = sh(&format!(
        "ip -n {} route get {}",
        h1.netns, state.bridge_address
    ));
    assert!(!text.contains("wan-"), "{text}");

    g.down();
    assert_eq!(g.leftovers(), "");
    // Killed by down and reaped by the thread that spawned it (a moment later).
    let gone = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid as i32, 0) != 0 }
    });
    assert!(gone, "delay line {pid} survived down");
}
