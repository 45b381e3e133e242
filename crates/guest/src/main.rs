//! `drover-guest`: the workload that runs inside Drover's test VMs.
//!
//! Usage: `drover-guest [SPEC] [--metrics PATH|-] [--duration SECS] [--seed N]`
//!
//! Without SPEC the workload comes from `drover.workload=SPEC` on the kernel command line, and the
//! metrics port from `drover.metrics=PATH` (default `/dev/ttyS1`). Reports go to the metrics port as
//! JSON lines every 100 ms (see `reporter`). The init script puts the port in raw mode beforehand.
//! The host's control lines come back on the same port when it is a device (`-`: on stdin) and
//! switch the running workload's parameters in place (see `control`).
//! Deliberately dependency-free: `crates/qemu/build.rs` compiles this file with a bare `rustc` call.

// The hosts' half of the protocol (writing lines) is used by the hosts only.
#[allow(dead_code)]
mod control;
mod cpu;
mod disktouch;
mod idle;
mod live;
mod memtouch;
mod mixed;
// The peer's half (greetings read, not written) is the lab's.
#[allow(dead_code)]
mod net;
mod netload;
mod reporter;
mod spec;
mod speed;

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use live::Live;
use reporter::{Counters, Sampler};
use spec::Workload;
use speed::SpeedMeter;

#[derive(Debug, Default, PartialEq)]
struct Args {
    spec: Option<String>,
    metrics: Option<String>,
    duration: Option<Duration>,
    seed: Option<u64>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args::default();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--metrics" => args.metrics = Some(value("--metrics")?),
            "--duration" => {
                let v = value("--duration")?;
                let secs: f64 = v.parse().map_err(|_| format!("bad --duration {v:?}"))?;
                if !(secs.is_finite() && secs >= 0.0) {
                    return Err(format!("bad --duration {v:?}"));
                }
                args.duration = Some(Duration::from_secs_f64(secs));
            }
            "--seed" => {
                let v = value("--seed")?;
                args.seed = Some(v.parse().map_err(|_| format!("bad --seed {v:?}"))?);
            }
            "-h" | "--help" => {
                return Err(
                    "usage: drover-guest [SPEC] [--metrics PATH|-] [--duration SECS] [--seed N]"
                        .into(),
                )
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s if args.spec.is_none() => args.spec = Some(s.to_string()),
            s => return Err(format!("unexpected argument {s:?}")),
        }
    }
    Ok(args)
}

type Port = (Box<dyn Write + Send>, Option<Box<dyn Read + Send>>);

/// The metrics port, and where control lines come from: the same port when it is a device (a
/// serial line carries both ways), stdin for `-`, nothing for a plain file (reading it back
/// would read our own reports).
fn open_port(path: &str) -> std::io::Result<Port> {
    if path == "-" {
        return Ok((
            Box::new(std::io::stdout()),
            Some(Box::new(std::io::stdin())),
        ));
    }
    let is_device = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device());
    if is_device {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let input = f.try_clone()?;
        return Ok((Box::new(f), Some(Box::new(input))));
    }
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    Ok((Box::new(f), None))
}

/// Reads control lines from `input` and applies them to `live` until the input ends. Its own
/// thread: a blocking read never holds up the workload or its reports.
fn spawn_control(
    mut input: Box<dyn Read + Send>,
    live: Arc<Live>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let mut lines = control::LineBuffer::default();
            let mut buf = [0u8; 256];
            loop {
                match input.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        for line in lines.push(&buf[..n]) {
                            match live.handle_line(&line) {
                                live::Handled::Applied => {
                                    eprintln!("drover-guest: now running {}", live.workload())
                                }
                                live::Handled::Refused(r) => {
                                    eprintln!("drover-guest: refused {line:?}: {}", r.code())
                                }
                                live::Handled::Ignored => {}
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("drover-guest: reading control lines: {e}");
                        return;
                    }
                }
            }
        })
}

/// What a workload works on, made before the clock starts.
enum Prepared {
    /// memtouch's working set and the integrity errors its calibration found.
    Memory(memtouch::WorkingSet, u64),
    /// Boxed: a set holds an aligned block buffer.
    Disk(Box<disktouch::DiskSet>),
    Mixed(Box<mixed::Sets>),
    /// Nothing to allocate (cpu, net, idle).
    Nothing,
}

/// Allocates the working sets and measures the full speed (into `meter`; a mixed workload's
/// parts have their own meters) before the clock starts: ops/s measures steady state, and the
/// first report comes once the guest is actually working.
fn prepare(workload: &Workload, meter: &mut SpeedMeter) -> Result<Prepared, String> {
    let memory = |meter: &mut SpeedMeter| -> Result<(memtouch::WorkingSet, u64), String> {
        let pages = usize::try_from(workload.pages()).map_err(|_| "wss too large")?;
        let mut ws = memtouch::WorkingSet::new(pages);
        let errors = memtouch::calibrate(&mut ws, meter, speed::CALIBRATION);
        Ok((ws, errors))
    };
    Ok(match workload {
        Workload::Memtouch(_) => {
            let (ws, errors) = memory(meter)?;
            Prepared::Memory(ws, errors)
        }
        Workload::Cpu { .. } => {
            cpu::calibrate(meter, speed::CALIBRATION);
            Prepared::Nothing
        }
        // Writing the working set at generation 0 also measures the disk's speed.
        Workload::Disk(_) => Prepared::Disk(Box::new(disktouch::open_vm_disk(workload, meter)?)),
        Workload::Mixed { .. } => {
            let mut memory_meter = SpeedMeter::default();
            let (ws, memory_errors) = memory(&mut memory_meter)?;
            let mut disk_meter = SpeedMeter::default();
            let disk = disktouch::open_vm_disk(workload, &mut disk_meter)?;
            Prepared::Mixed(Box::new(mixed::Sets {
                memory: ws,
                memory_meter,
                memory_errors,
                disk,
                disk_meter,
            }))
        }
        Workload::Net { .. } | Workload::Idle => Prepared::Nothing,
    })
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed)
}

fn real_main() -> Result<(), String> {
    let args = parse_args(std::env::args().skip(1))?;
    let cmdline = if args.spec.is_none() || args.metrics.is_none() {
        std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
    } else {
        String::new()
    };
    let spec = match &args.spec {
        Some(s) => s.clone(),
        None => spec::cmdline_param(&cmdline, "drover.workload")
            .ok_or_else(|| spec::SpecError::NotOnCmdline.to_string())?
            .to_string(),
    };
    let workload = spec::parse_workload(&spec).map_err(|e| format!("workload {spec:?}: {e}"))?;
    let metrics = args
        .metrics
        .clone()
        .or_else(|| spec::cmdline_param(&cmdline, "drover.metrics").map(str::to_string))
        .unwrap_or_else(|| spec::DEFAULT_METRICS_PORT.to_string());
    let (out, input) =
        open_port(&metrics).map_err(|e| format!("opening metrics port {metrics}: {e}"))?;

    eprintln!("drover-guest: running {spec} (metrics on {metrics})");
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(Live::new(workload.clone()));
    // The working set is allocated and the full speed measured before the clock starts: ops/s
    // measures steady state, and the first report comes once the guest is actually working.
    let mut meter = SpeedMeter::default();
    let mut prepared = prepare(&workload, &mut meter)?;
    // Listening before the first report: the host sends control lines only once it has one.
    if let Some(input) = input {
        spawn_control(input, live.clone()).map_err(|e| format!("starting control thread: {e}"))?;
    }
    let reporter = reporter::spawn(
        out,
        counters.clone(),
        live.clone(),
        Sampler::new(Instant::now()),
        reporter::INTERVAL,
        stop.clone(),
    )
    .map_err(|e| format!("starting reporter thread: {e}"))?;
    if let Some(d) = args.duration {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(d);
            stop.store(true, Ordering::Relaxed);
        });
    }

    let seed = args.seed.unwrap_or_else(seed_from_clock);
    match &mut prepared {
        Prepared::Memory(ws, errors) => {
            memtouch::run(ws, &live, seed, &counters, &mut meter, &stop, *errors);
        }
        Prepared::Disk(set) => disktouch::run(set, &live, seed, &counters, &mut meter, &stop),
        Prepared::Mixed(sets) => mixed::run(sets, &live, seed, &counters, &stop),
        Prepared::Nothing => match workload {
            Workload::Cpu { .. } => cpu::run(&live, &counters, &mut meter, &stop),
            Workload::Net { .. } => netload::run(&live, &counters, &stop),
            _ => idle::run(&stop),
        },
    }
    stop.store(true, Ordering::Relaxed);
    let _ = reporter.join();
    Ok(())
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drover-guest: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn cli_args() {
        assert_eq!(args(&[]), Ok(Args::default()));
        let a = args(&[
            "cpu:demand=50",
            "--metrics",
            "-",
            "--duration",
            "1.5",
            "--seed",
            "3",
        ])
        .unwrap();
        assert_eq!(a.spec.as_deref(), Some("cpu:demand=50"));
        assert_eq!(a.metrics.as_deref(), Some("-"));
        assert_eq!(a.duration, Some(Duration::from_millis(1500)));
        assert_eq!(a.seed, Some(3));
        assert!(args(&["--metrics"]).is_err());
        assert!(args(&["--duration", "-1"]).is_err());
        assert!(args(&["idle", "idle"]).is_err());
        assert!(args(&["--bogus"]).is_err());
    }
}
