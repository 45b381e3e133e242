//! The traffic peer: the other end of the guests' `net` flows (protocol in [`crate::net`]),
//! run by the lab in its peer namespace (`drover lab peer`).
//!
//! Bounded in every way: at most [`PeerConfig::max_conns`] connections at once (more are
//! closed at once), a greeting read within [`GREETING_TIMEOUT`], each flow paced at the rate its
//! greeting asks (never above [`crate::spec::MAX_NET_RATE_BPS`]), and the whole server ends
//! after [`PeerConfig::duration`] or when its stop flag is set.
//!
//! It reports every [`PeerConfig::report_every`] one [`ConnReport`] per connection seen, with the
//! longest pause in what it received (`max_rx_gap_ms`, measured between reads that brought
//! bytes): across a migration that is the flow's gap.

use crate::net::{self, MAX_GREETING};
use crate::spec::Direction;
use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a new connection has to send its greeting.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(5);

/// Most connections a peer serves at once.
pub const MAX_CONNS: usize = 64;

/// How often the accept loop looks at its stop flag and the clock.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// A peer's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerConfig {
    /// Connections served at once (1 to [`MAX_CONNS`]).
    pub max_conns: usize,
    /// The server ends after this long.
    pub duration: Duration,
    /// Interval between reports.
    pub report_every: Duration,
}

/// One connection's figures, cumulative since it was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnReport {
    /// Order of acceptance, from 1.
    pub id: u64,
    pub from: SocketAddr,
    /// The flow's direction as the guest asked (None: no greeting yet, or a bad one).
    pub dir: Option<Direction>,
    pub rate_bps: u64,
    /// Bytes received from the guest.
    pub rx_bytes: u64,
    /// Bytes sent to the guest.
    pub tx_bytes: u64,
    /// Longest time between two reads that brought bytes, ms.
    pub max_rx_gap_ms: u64,
    /// Time since the last read that brought bytes (0 before the first), ms.
    pub rx_idle_ms: u64,
    /// Whether the connection is still open.
    pub open: bool,
}

impl ConnReport {
    /// One JSON object (hand-written: the guest crate has no dependencies; nothing in it needs
    /// escaping).
    pub fn to_json(&self) -> String {
        format!(
            "{{\"id\":{},\"from\":\"{}\",\"dir\":\"{}\",\"rate_bps\":{},\"rx_bytes\":{},\"tx_bytes\":{},\"max_rx_gap_ms\":{},\"rx_idle_ms\":{},\"open\":{}}}",
            self.id,
            self.from,
            self.dir.map_or("none", Direction::as_str),
            self.rate_bps,
            self.rx_bytes,
            self.tx_bytes,
            self.max_rx_gap_ms,
            self.rx_idle_ms,
            self.open
        )
    }
}

/// A connection's figures as its threads update them.
#[derive(Debug)]
struct Conn {
    report: ConnReport,
    last_rx: Option<Instant>,
    /// Bytes sent, counted by the sending thread as it goes.
    tx: Arc<std::sync::atomic::AtomicU64>,
}

type Table = Arc<Mutex<Vec<Conn>>>;

fn lock(t: &Table) -> std::sync::MutexGuard<'_, Vec<Conn>> {
    // Plain field updates inside: a panic cannot leave them half-done.
    t.lock().unwrap_or_else(|e| e.into_inner())
}

fn update(table: &Table, id: u64, f: impl FnOnce(&mut Conn)) {
    if let Some(c) = lock(table).iter_mut().find(|c| c.report.id == id) {
        f(c);
    }
}

/// Serves flows on `listener` until `cfg.duration` passes or `stop` is set, calling `report` with
/// every connection's figures each `cfg.report_every` and once at the end. Connections still
/// open at the end are closed.
///
/// # Errors
/// The listener's own failures (setting it non-blocking, accepting).
pub fn serve(
    listener: &TcpListener,
    cfg: PeerConfig,
    stop: &AtomicBool,
    report: &mut dyn FnMut(&[ConnReport]),
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let table: Table = Arc::default();
    let ended = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut next_report = start + cfg.report_every;
    let mut next_id = 1;
    let mut streams: Vec<TcpStream> = Vec::new();
    let mut threads = Vec::new();
    while !stop.load(Ordering::Relaxed) && start.elapsed() < cfg.duration {
        match listener.accept() {
            Ok((stream, from)) => {
                let open = lock(&table).iter().filter(|c| c.report.open).count();
                if open >= cfg.max_conns.clamp(1, MAX_CONNS) {
                    let _ = stream.shutdown(Shutdown::Both);
                    continue;
                }
                let id = next_id;
                next_id += 1;
                lock(&table).push(Conn {
                    report: ConnReport {
                        id,
                        from,
                        dir: None,
                        rate_bps: 0,
                        rx_bytes: 0,
                        tx_bytes: 0,
                        max_rx_gap_ms: 0,
                        rx_idle_ms: 0,
                        open: true,
                    },
                    last_rx: None,
                    tx: Arc::default(),
                });
                streams.push(stream.try_clone()?);
                let (table, ended) = (table.clone(), ended.clone());
                threads.push(std::thread::spawn(move || {
                    serve_conn(stream, id, &table, &ended);
                    update(&table, id, |c| c.report.open = false);
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) => return Err(e),
        }
        if Instant::now() >= next_report {
            next_report += cfg.report_every;
            report(&snapshot(&table));
        }
    }
    ended.store(true, Ordering::Relaxed);
    for s in &streams {
        let _ = s.shutdown(Shutdown::Both);
    }
    for t in threads {
        let _ = t.join();
    }
    report(&snapshot(&table));
    Ok(())
}

fn snapshot(table: &Table) -> Vec<ConnReport> {
    let now = Instant::now();
    lock(table)
        .iter()
        .map(|c| ConnReport {
            rx_idle_ms: c
                .last_rx
                .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64),
            tx_bytes: c.tx.load(Ordering::Relaxed),
            ..c.report.clone()
        })
        .collect()
}

/// Reads the greeting within [`GREETING_TIMEOUT`], byte by byte so nothing after it is eaten.
fn read_greeting(stream: &mut TcpStream) -> Option<(Direction, u64)> {
    let deadline = Instant::now() + GREETING_TIMEOUT;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_GREETING && Instant::now() < deadline {
        match stream.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) if byte[0] == b'\n' => {
                return net::parse_greeting(std::str::from_utf8(&line).ok()?)
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return None,
        }
    }
    None
}

fn serve_conn(mut stream: TcpStream, id: u64, table: &Table, ended: &AtomicBool) {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|_| stream.set_read_timeout(Some(net::POLL)))
        .and_then(|_| stream.set_write_timeout(Some(net::POLL)))
        .and_then(|_| stream.set_nodelay(true));
    if setup.is_err() {
        return;
    }
    let Some((dir, rate_bps)) = read_greeting(&mut stream) else {
        return;
    };
    let mut counter = Arc::default();
    update(table, id, |c| {
        c.report.dir = Some(dir);
        c.report.rate_bps = rate_bps;
        counter = c.tx.clone();
    });
    let Ok(mut reader) = stream.try_clone() else {
        return;
    };
    let done_flag = AtomicBool::new(false);
    let done = || ended.load(Ordering::Relaxed) || done_flag.load(Ordering::Relaxed);
    std::thread::scope(|s| {
        if dir.receives() {
            s.spawn(|| {
                net::send_paced(&mut stream, rate_bps, &counter, &done);
                done_flag.store(true, Ordering::Relaxed);
            });
        }
        // The guest's bytes are read in every direction: a guest that only receives sends
        // nothing, and reading sees its close at once.
        drain(&mut reader, id, table, &done);
        done_flag.store(true, Ordering::Relaxed);
    });
}

fn drain(reader: &mut TcpStream, id: u64, table: &Table, done: &dyn Fn() -> bool) {
    net::drain(reader, done, &mut |n| {
        let now = Instant::now();
        update(table, id, |c| {
            if let Some(last) = c.last_rx {
                let gap = now.saturating_duration_since(last).as_millis() as u64;
                c.report.max_rx_gap_ms = c.report.max_rx_gap_ms.max(gap);
            }
            c.last_rx = Some(now);
            c.report.rx_bytes += n;
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{run_flow, Flow, NetCounts};

    /// A flow each way on loopback for about a second at 200 KB/s: both ends count what the
    /// rate says (within a burst and a scheduling hiccup), and the peer's report matches the
    /// guest's counters.
    #[test]
    fn a_flow_both_ways_on_loopback_runs_at_its_rate() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = AtomicBool::new(false);
        let counts = NetCounts::default();
        let rate = 200_000u64;
        let cfg = PeerConfig {
            max_conns: 4,
            duration: Duration::from_secs(10),
            report_every: Duration::from_millis(100),
        };
        let mut last = Vec::new();
        let flow_stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let flow = Flow {
                    dir: Direction::Both,
                    rate_bps: rate,
                    peer: addr,
                };
                let t0 = Instant::now();
                run_flow(flow, &counts, &|| {
                    flow_stop.load(Ordering::Relaxed) || t0.elapsed() > Duration::from_secs(5)
                });
            });
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(1000));
                flow_stop.store(true, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(300));
                stop.store(true, Ordering::Relaxed);
            });
            serve(&listener, cfg, &stop, &mut |r| last = r.to_vec()).unwrap();
        });
        let (rx, tx) = (
            counts.rx.load(Ordering::Relaxed),
            counts.tx.load(Ordering::Relaxed),
        );
        // One second at 200 KB/s, plus at most a burst; generous below for a loaded machine.
        for (what, n) in [("rx", rx), ("tx", tx)] {
            assert!((100_000..=230_000).contains(&n), "{what} {n}");
        }
        assert_eq!(counts.connects.load(Ordering::Relaxed), 1);
        assert_eq!(last.len(), 1, "{last:?}");
        let c = &last[0];
        assert_eq!(
            (c.dir, c.rate_bps, c.open),
            (Some(Direction::Both), rate, false)
        );
        // Each side counts what it sent and got; bytes still in flight when the guest's flow
        // stops are sent but never read (a loaded CI host once left some): received never
        // exceeds sent, and the gap is under half a second at the flow's rate.
        for (what, sent, got) in [
            ("guest to peer", tx, c.rx_bytes),
            ("peer to guest", c.tx_bytes, rx),
        ] {
            assert!(
                got <= sent && sent - got <= rate / 2,
                "{what}: sent {sent}, got {got}"
            );
        }
        assert!(c.max_rx_gap_ms < 500, "{c:?}");
        assert!(c.to_json().contains("\"dir\":\"both\""), "{}", c.to_json());
    }

    /// A guest whose peer goes away reconnects when it comes back; a connection past the
    /// limit, or one that never greets, is closed.
    #[test]
    fn limits_and_reconnects() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = PeerConfig {
            max_conns: 1,
            duration: Duration::from_millis(600),
            report_every: Duration::from_millis(100),
        };
        let counts = NetCounts::default();
        let stop = AtomicBool::new(false);
        let flow_stop = AtomicBool::new(false);
        let mut seen = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                let flow = Flow {
                    dir: Direction::Out,
                    rate_bps: 50_000,
                    peer: addr,
                };
                run_flow(flow, &counts, &|| flow_stop.load(Ordering::Relaxed));
            });
            // The first server run ends after 600 ms and a second one takes the reconnection.
            serve(&listener, cfg, &stop, &mut |_| {}).unwrap();
            s.spawn(|| {
                // By now the guest has reconnected: one more is over the limit, closed at once.
                std::thread::sleep(Duration::from_millis(1200));
                let mut extra = TcpStream::connect(addr).unwrap();
                extra
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                let mut b = [0u8; 8];
                assert!(matches!(extra.read(&mut b), Ok(0) | Err(_)));
            });
            let long = PeerConfig {
                duration: Duration::from_millis(2000),
                ..cfg
            };
            serve(&listener, long, &stop, &mut |r| seen = r.to_vec()).unwrap();
            flow_stop.store(true, Ordering::Relaxed);
        });
        assert!(counts.connects.load(Ordering::Relaxed) >= 2);
        assert!(seen.iter().any(|c| c.rx_bytes > 0), "{seen:?}");
    }
}
