//! The delay line's I/O: two packet ports (TUN devices in two hosts' namespaces), a
//! [`DelayLine`] between them, and a Unix control socket.
//!
//! Threads, not tasks: per direction one reader (port to queue) and one writer (queue to the
//! other port, sleeping on a condition variable until the head packet is due), plus the
//! control loop. A reader wakes the writers only when the head of its queue changes, so a busy
//! line costs one lock per packet and no spurious wake-ups.
//!
//! Ports are behind [`PacketPort`]: [`Tun`] attaches to a persistent TUN device (made by
//! `ip tuntap`, see [`crate::wan`]) through `/dev/net/tun` directly — one ioctl, where the `tun`
//! crates would also configure the device, which the lab does with `ip` like every other link;
//! a Unix datagram socket is a port too, which is how the line is tested without root.
//!
//! Control: one request line, one JSON answer line ([`ControlReply`]). Requests: `stats`,
//! `cut`, `restore`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::delay::{DelayLine, DirStats, LinkError, LinkState, DIRECTIONS};
use crate::wan::LineConfig;

/// Largest packet a port hands over (a TUN device's MTU is far below).
pub const MAX_PACKET: usize = 65_536;
/// The line's real-time priority (SCHED_FIFO, low in 1..=99): the kernel's own packet path runs
/// above every task, and a line that waits its turn on a busy machine adds that wait to every
/// packet (measured: 6 ms a packet at load 14 on 2 cores with nice -5). Its CPU use is bounded
/// by the link's rate, and the kernel keeps 5% of each core for ordinary tasks whatever runs.
pub const LINE_RT_PRIORITY: libc::c_int = 10;
/// How long a blocked read or an idle writer waits before checking for a stop.
const IDLE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum DelayIoError {
    #[error("namespace {netns}: {source}")]
    Netns {
        netns: String,
        source: std::io::Error,
    },
    #[error("TUN device {tun} in {netns}: {source}")]
    Tun {
        netns: String,
        tun: String,
        source: std::io::Error,
    },
    #[error("control socket {}: {source}", path.display())]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
}

/// Something that carries whole packets.
pub trait PacketPort: Send + Sync + 'static {
    /// One packet into `buf`; `Ok(None)` when none came within a short wait.
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>>;
    fn send(&self, packet: &[u8]) -> std::io::Result<()>;
}

/// A datagram socket carries packets as they are: the line's stand-in for a TUN device in
/// tests (set a read timeout, or `recv` blocks).
impl PacketPort for UnixDatagram {
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        match UnixDatagram::recv(self, buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if is_timeout(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn send(&self, packet: &[u8]) -> std::io::Result<()> {
        UnixDatagram::send(self, packet).map(drop)
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A TUN device attached by name (`IFF_TUN | IFF_NO_PI`: bare IP packets).
pub struct Tun {
    file: std::fs::File,
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (40 bytes in all).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tun {
    /// Attaches to TUN device `tun` in namespace `netns` (the open happens on a thread that
    /// joined the namespace; the descriptor then works from anywhere).
    pub fn attach(netns: &str, tun: &str) -> Result<Tun, DelayIoError> {
        let (ns, name) = (netns.to_string(), tun.to_string());
        let joined = std::thread::spawn(move || -> Result<Tun, DelayIoError> {
            enter_netns(&ns)?;
            open_tun(&name).map_err(|source| DelayIoError::Tun {
                netns: ns.clone(),
                tun: name.clone(),
                source,
            })
        })
        .join();
        joined.unwrap_or_else(|_| {
            Err(DelayIoError::Netns {
                netns: netns.into(),
                source: std::io::Error::other("the attaching thread panicked"),
            })
        })
    }
}

fn enter_netns(ns: &str) -> Result<(), DelayIoError> {
    let err = |source| DelayIoError::Netns {
        netns: ns.into(),
        source,
    };
    let file = std::fs::File::open(Path::new("/run/netns").join(ns)).map_err(err)?;
    // SAFETY: setns on a namespace descriptor changes only this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn open_tun(name: &str) -> std::io::Result<Tun> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "expected an interface name of 1 to 15 bytes",
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads a `struct ifreq`, which `IfReq` lays out (and outlives the call).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Tun { file })
}

impl PacketPort for Tun {
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the length given.
        let rc = unsafe { libc::poll(&mut pfd, 1, IDLE.as_millis() as libc::c_int) };
        match rc {
            0 => Ok(None),
            r if r < 0 => {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::Interrupted => Ok(None),
                    _ => Err(e),
                }
            }
            _ => std::io::Read::read(&mut &self.file, buf).map(Some),
        }
    }

    fn send(&self, packet: &[u8]) -> std::io::Result<()> {
        (&self.file).write_all(packet)
    }
}

/// The control socket's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlReply {
    pub state: LinkState,
    /// Direction 0 is a to b, 1 is b to a.
    pub dirs: [DirStats; DIRECTIONS],
    /// Why the request was refused (None when it was carried out).
    pub error: Option<String>,
}

impl ControlReply {
    /// Whether `request` was refused only because the link already was as it asks (`cut` on a
    /// cut link, `restore` on an up link): what an operator wanted holds, so a command line
    /// reports it and succeeds (idempotent) while the line itself still says what happened.
    pub fn already_so(&self, request: &str) -> bool {
        let wanted = match request.trim() {
            "cut" => LinkState::Cut,
            "restore" => LinkState::Up,
            _ => return false,
        };
        self.error.is_some() && self.state == wanted
    }
}

struct Shared {
    line: Mutex<DelayLine>,
    wake: Condvar,
    start: Instant,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, DelayLine> {
        // A panicked thread leaves the queue consistent (every update is one call).
        self.line.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A running line; dropping it does not stop it, [`Running::stop`] does.
pub struct Running {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// Starts the readers and writers between ports `a` and `b`.
    pub fn start<P: PacketPort>(line: DelayLine, a: P, b: P) -> Running {
        let shared = Arc::new(Shared {
            line: Mutex::new(line),
            wake: Condvar::new(),
            start: Instant::now(),
            stop: AtomicBool::new(false),
        });
        let (a, b) = (Arc::new(a), Arc::new(b));
        let threads = vec![
            spawn_reader(&shared, 0, a.clone()),
            spawn_reader(&shared, 1, b.clone()),
            spawn_writer(&shared, 0, b),
            spawn_writer(&shared, 1, a),
        ];
        Running { shared, threads }
    }

    /// Carries out one control request.
    pub fn control(&self, request: &str) -> ControlReply {
        let mut line = self.shared.lock();
        let result = match request.trim() {
            "stats" => Ok(()),
            "cut" => line.cut().map_err(|e: LinkError| e.to_string()),
            "restore" => line.restore().map_err(|e| e.to_string()),
            other => Err(format!(
                "unknown request '{other}': expected stats, cut or restore"
            )),
        };
        ControlReply {
            state: line.state(),
            dirs: line.stats(),
            error: result.err(),
        }
    }

    /// Stops every thread (each notices within [`IDLE`]) and waits for them.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn spawn_reader<P: PacketPort>(shared: &Arc<Shared>, dir: usize, port: Arc<P>) -> JoinHandle<()> {
    let shared = shared.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; MAX_PACKET];
        while !shared.stop.load(Ordering::Relaxed) {
            let n = match port.recv(&mut buf) {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(dir, error = %e, "delay line: read failed");
                    std::thread::sleep(IDLE);
                    continue;
                }
            };
            let mut line = shared.lock();
            let before = line.next_due(dir);
            // Directions 0 and 1 exist, so push cannot fail.
            let _ = line.push(dir, shared.now(), buf[..n].to_vec());
            if line.next_due(dir) != before {
                shared.wake.notify_all();
            }
        }
    })
}

fn spawn_writer<P: PacketPort>(shared: &Arc<Shared>, dir: usize, port: Arc<P>) -> JoinHandle<()> {
    let shared = shared.clone();
    std::thread::spawn(move || {
        let mut line = shared.lock();
        while !shared.stop.load(Ordering::Relaxed) {
            let now = shared.now();
            let due = line.pop_due(dir, now).unwrap_or_default();
            if due.is_empty() {
                let wait = line
                    .next_due(dir)
                    .map_or(IDLE, |d| d.saturating_sub(now).min(IDLE));
                line = match shared.wake.wait_timeout(line, wait) {
                    Ok((g, _)) => g,
                    Err(e) => e.into_inner().0,
                };
                continue;
            }
            drop(line);
            let mut sent = Vec::with_capacity(due.len());
            for q in &due {
                let ok = port.send(&q.bytes).is_ok();
                sent.push((ok, shared.now()));
            }
            line = shared.lock();
            for (q, (ok, at)) in due.iter().zip(sent) {
                // The direction exists, so recording cannot fail.
                let _ = match ok {
                    true => line.record_sent(dir, q, at),
                    false => line.record_write_error(dir),
                };
            }
        }
    })
}

/// Answers control requests on `socket` until the process ends.
pub fn serve_control(running: &Running, socket: &Path) -> Result<(), DelayIoError> {
    let err = |source| DelayIoError::Control {
        path: socket.to_path_buf(),
        source,
    };
    // A socket file left by a killed line would make bind fail.
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(socket).map_err(err)?;
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                if let Err(e) = answer(running, stream) {
                    tracing::warn!(error = %e, "delay line: control connection");
                }
            }
            Err(e) => tracing::warn!(error = %e, "delay line: accept"),
        }
    }
    Ok(())
}

fn answer(running: &Running, stream: UnixStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = String::new();
    BufReader::new(&stream).read_line(&mut request)?;
    let reply = running.control(&request);
    let text = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
    (&stream).write_all(format!("{text}\n").as_bytes())
}

/// Puts the calling thread in SCHED_FIFO at [`LINE_RT_PRIORITY`]; threads it starts inherit
/// that. Needs CAP_SYS_NICE (the lab runs as root).
pub fn realtime_priority() -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: LINE_RT_PRIORITY,
    };
    // SAFETY: a valid sched_param; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Best effort: without the privilege the line runs as it was started, and says so.
fn raise_priority() {
    if let Err(e) = realtime_priority() {
        eprintln!("delay line: no real-time priority ({e}); delays grow with the machine's load");
    }
}

/// The delay-line program: reads its config, attaches both TUN devices, forwards and answers
/// control requests until killed.
pub fn run_from_file(config: &Path) -> Result<(), DelayIoError> {
    let text = std::fs::read_to_string(config).map_err(|e| DelayIoError::Config {
        path: config.to_path_buf(),
        reason: e.to_string(),
    })?;
    let cfg: LineConfig = serde_json::from_str(&text).map_err(|e| DelayIoError::Config {
        path: config.to_path_buf(),
        reason: format!("not a delay-line config: {e}"),
    })?;
    raise_priority();
    let a = Tun::attach(&cfg.a.netns, &cfg.a.tun)?;
    let b = Tun::attach(&cfg.b.netns, &cfg.b.tun)?;
    let running = Running::start(DelayLine::new(cfg.delay), a, b);
    serve_control(&running, &cfg.control)
}

#[cfg(test)]
#[path = "delay_io_tests.rs"]
mod tests;
