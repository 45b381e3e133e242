//! The `net` workload's TCP flow, both ends: the guest's client ([`run_flow`]) and the pacing
//! and greeting it shares with the lab's traffic peer (`crate::peer`).
//!
//! # Protocol
//! The guest connects to the peer and sends one greeting line, ASCII:
//!
//! ```text
//! drover-net <dir> <rate_bps>\n
//! ```
//!
//! `dir` is the spec's `in`, `out` or `both` (seen from the guest), `rate_bps` bytes per second
//! each way. Then the guest sends (out, both) and the peer sends (in, both), each paced by a
//! [`Pacer`] at the rate; the receiving end reads and discards. Either end closes when it is
//! done; the guest reconnects after [`RETRY`] when the connection fails (a reset, the peer
//! gone), but not on a slow write or read: a flow held up by a migration's switchover keeps its
//! connection, which is what the gap measurement is about.
//!
//! Everything is bounded: the rate by [`crate::spec::MAX_NET_RATE_BPS`], a burst after a stall
//! by [`BURST`] worth of the rate (a paced sender does not catch up on what it missed), a
//! greeting by [`MAX_GREETING`] bytes.

use crate::spec::{Direction, MAX_NET_RATE_BPS, MIN_NET_RATE_BPS};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Wait before reconnecting after a failed connection or connect.
pub const RETRY: Duration = Duration::from_millis(500);

/// Longest a connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Socket read/write timeout: how often a blocked end looks at its stop flag.
pub const POLL: Duration = Duration::from_millis(100);

/// Most of the rate a sender may send at once after a stall (a tenth of a second's worth).
pub const BURST: Duration = Duration::from_millis(100);

/// Longest greeting line, bytes.
pub const MAX_GREETING: usize = 64;

/// The greeting a guest sends for a flow `dir` at `rate_bps`.
pub fn greeting(dir: Direction, rate_bps: u64) -> String {
    format!("drover-net {} {rate_bps}\n", dir.as_str())
}

/// Reads a greeting line (without its newline): the direction and the rate, or None when it is
/// not one (wrong words, a rate outside the spec's bounds).
pub fn parse_greeting(line: &str) -> Option<(Direction, u64)> {
    let mut words = line.split(' ');
    if words.next()? != "drover-net" {
        return None;
    }
    let dir = Direction::parse(words.next()?)?;
    let rate: u64 = words.next()?.parse().ok()?;
    if words.next().is_some() || !(MIN_NET_RATE_BPS..=MAX_NET_RATE_BPS).contains(&rate) {
        return None;
    }
    Some((dir, rate))
}

/// Paces a sender at a rate: how many bytes it may send now. Pure (the caller passes the time).
#[derive(Debug, Clone)]
pub struct Pacer {
    rate_bps: u64,
    start: Instant,
    sent: u64,
}

impl Pacer {
    pub fn new(rate_bps: u64, start: Instant) -> Self {
        Pacer {
            rate_bps,
            start,
            sent: 0,
        }
    }

    /// Bytes one write sends: a fiftieth of a second's worth, 512 B to 64 KiB.
    pub fn chunk(&self) -> usize {
        (self.rate_bps / 50).clamp(512, 64 << 10) as usize
    }

    /// Bytes that may go at `now`: the rate times the time since the start, less what was sent,
    /// never more than [`BURST`] worth (a sender that fell behind forgets the rest, so the
    /// start moves forward).
    pub fn allowance(&mut self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        let due = (self.rate_bps as f64 * elapsed) as u64;
        let burst = ((self.rate_bps as f64 * BURST.as_secs_f64()) as u64).max(self.chunk() as u64);
        let owed = due.saturating_sub(self.sent);
        if owed > burst {
            self.sent = due - burst;
            return burst;
        }
        owed
    }

    /// Counts `n` bytes sent.
    pub fn sent(&mut self, n: u64) {
        self.sent += n;
    }

    /// How long until a chunk is due, from a state with `allowance` bytes due now.
    pub fn wait_for_chunk(&self, allowance: u64) -> Duration {
        let missing = (self.chunk() as u64).saturating_sub(allowance);
        Duration::from_secs_f64(missing as f64 / self.rate_bps.max(1) as f64)
    }
}

/// A flow's cumulative figures, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct NetCounts {
    /// Bytes the guest received.
    pub rx: AtomicU64,
    /// Bytes the guest sent.
    pub tx: AtomicU64,
    /// Connections made (the first, then each reconnect).
    pub connects: AtomicU64,
}

/// Whether an I/O error is only a timeout (the flow is slow, not broken).
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// Sends at `rate_bps` on `stream` until `done()` or a failure; adds what went to `counter`.
pub fn send_paced(
    stream: &mut TcpStream,
    rate_bps: u64,
    counter: &AtomicU64,
    done: &dyn Fn() -> bool,
) {
    let mut pacer = Pacer::new(rate_bps, Instant::now());
    let buf = vec![0x5au8; pacer.chunk()];
    while !done() {
        let allowed = pacer.allowance(Instant::now());
        if allowed < buf.len() as u64 {
            std::thread::sleep(pacer.wait_for_chunk(allowed).min(POLL));
            continue;
        }
        match stream.write(&buf) {
            Ok(0) => return,
            Ok(n) => {
                pacer.sent(n as u64);
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

/// Reads and discards from `stream` until `done()`, end of stream or a failure; calls `got`
/// with each read's size.
pub fn drain(stream: &mut TcpStream, done: &dyn Fn() -> bool, got: &mut dyn FnMut(u64)) {
    let mut buf = vec![0u8; 64 << 10];
    while !done() {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => got(n as u64),
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

/// One flow's settings, as the guest runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub dir: Direction,
    pub rate_bps: u64,
    pub peer: SocketAddr,
}

/// Runs `flow` with its peer until `stop()`: connects, greets, sends and receives as `flow.dir`
/// says, and reconnects after [`RETRY`] when a connection fails or ends.
pub fn run_flow(flow: Flow, counts: &NetCounts, stop: &(dyn Fn() -> bool + Sync)) {
    while !stop() {
        if let Err(e) = one_connection(flow, counts, stop) {
            eprintln!("drover-guest: net flow to {}: {e}", flow.peer);
        }
        let until = Instant::now() + RETRY;
        while !stop() && Instant::now() < until {
            std::thread::sleep(POLL.min(RETRY));
        }
    }
}

fn one_connection(
    flow: Flow,
    counts: &NetCounts,
    stop: &(dyn Fn() -> bool + Sync),
) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&flow.peer, CONNECT_TIMEOUT)?;
    counts.connects.fetch_add(1, Ordering::Relaxed);
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(POLL))?;
    stream.write_all(greeting(flow.dir, flow.rate_bps).as_bytes())?;
    let mut reader = stream.try_clone()?;
    // One end ending (the peer closing, an error) ends the other.
    let ended = std::sync::atomic::AtomicBool::new(false);
    let done = || stop() || ended.load(Ordering::Relaxed);
    std::thread::scope(|s| {
        if flow.dir.receives() {
            s.spawn(|| {
                drain(&mut reader, &done, &mut |n| {
                    counts.rx.fetch_add(n, Ordering::Relaxed);
                });
                ended.store(true, Ordering::Relaxed);
            });
        }
        if flow.dir.sends() {
            send_paced(&mut stream, flow.rate_bps, &counts.tx, &done);
            ended.store(true, Ordering::Relaxed);
        }
    });
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_round_trip_and_bad_ones_are_refused() {
        let g = greeting(Direction::Both, 4096);
        assert_eq!(g, "drover-net both 4096\n");
        assert_eq!(parse_greeting(g.trim_end()), Some((Direction::Both, 4096)));
        for bad in [
            "",
            "drover-net",
            "drover-net up 4096",
            "drover-net in 10",
            "drover-net in 99999999999",
            "drover-net in 4096 x",
            "hello in 4096",
        ] {
            assert_eq!(parse_greeting(bad), None, "{bad}");
        }
    }

    #[test]
    fn pacer_follows_the_rate_and_forgets_a_stall() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100_000, t0);
        assert_eq!(p.chunk(), 2000);
        assert_eq!(p.allowance(t0), 0);
        assert_eq!(p.allowance(t0 + Duration::from_millis(50)), 5000);
        p.sent(5000);
        assert_eq!(p.allowance(t0 + Duration::from_millis(60)), 1000);
        assert_eq!(p.wait_for_chunk(1000), Duration::from_millis(10));
        // Ten seconds stalled: only a burst (100 ms worth) may go, not ten seconds' worth.
        let late = t0 + Duration::from_secs(10);
        assert_eq!(p.allowance(late), 10_000);
        p.sent(10_000);
        assert_eq!(p.allowance(late), 0);
        assert_eq!(p.allowance(late + Duration::from_millis(10)), 1000);
        // Slow rates still send whole chunks.
        assert_eq!(Pacer::new(1024, t0).chunk(), 512);
    }
}
