//! Periodic JSON-lines reports to the host.
//!
//! The workload publishes cumulative counters into atomics; a separate thread samples them every
//! interval and writes one line. Only cumulative values are reported, so a lost or late line (the
//! host side reconnecting across a migration) loses no information.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const INTERVAL: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct Counters {
    ops: AtomicU64,
    integrity_errors: AtomicU64,
}

impl Counters {
    pub fn publish(&self, ops: u64, integrity_errors: u64) {
        self.ops.store(ops, Ordering::Relaxed);
        self.integrity_errors
            .store(integrity_errors, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.ops.load(Ordering::Relaxed),
            self.integrity_errors.load(Ordering::Relaxed),
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub t_ms: u64,
    pub workload: &'static str,
    pub ops: u64,
    pub ops_per_s: f64,
    pub integrity_errors: u64,
    pub pages: u64,
}

impl Report {
    /// One JSON object, no trailing newline. Hand-written: the guest has no dependencies, and the
    /// workload name is a fixed identifier that needs no escaping.
    pub fn to_json(&self) -> String {
        let rate = if self.ops_per_s.is_finite() {
            self.ops_per_s
        } else {
            0.0
        };
        format!(
            "{{\"t_ms\":{},\"workload\":\"{}\",\"ops\":{},\"ops_per_s\":{:.1},\"integrity_errors\":{},\"pages\":{}}}",
            self.t_ms, self.workload, self.ops, rate, self.integrity_errors, self.pages
        )
    }
}

/// Turns successive counter samples into reports (pure, so it is testable without threads).
pub struct Sampler {
    start: Instant,
    workload: &'static str,
    pages: u64,
    last: Option<(Instant, u64)>,
}

impl Sampler {
    pub fn new(start: Instant, workload: &'static str, pages: u64) -> Self {
        Sampler {
            start,
            workload,
            pages,
            last: None,
        }
    }

    pub fn sample(&mut self, now: Instant, ops: u64, integrity_errors: u64) -> Report {
        let (t0, ops0) = self.last.unwrap_or((self.start, 0));
        let dt = now.saturating_duration_since(t0).as_secs_f64();
        let ops_per_s = if dt > 0.0 {
            ops.saturating_sub(ops0) as f64 / dt
        } else {
            0.0
        };
        self.last = Some((now, ops));
        Report {
            t_ms: now.saturating_duration_since(self.start).as_millis() as u64,
            workload: self.workload,
            ops,
            ops_per_s,
            integrity_errors,
            pages: self.pages,
        }
    }
}

/// Starts the reporter thread. It writes a line every `interval` until `stop` is set, then a final
/// line so the last counts are not lost.
pub fn spawn(
    mut out: Box<dyn Write + Send>,
    counters: Arc<Counters>,
    mut sampler: Sampler,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("reporter".into())
        .spawn(move || {
            let mut next = sampler.start + interval;
            let mut warned = false;
            loop {
                // Tick on a fixed grid (not sleep(interval)) so lines do not drift.
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                next += interval;
                let stopping = stop.load(Ordering::Relaxed);
                let (ops, errors) = counters.snapshot();
                let line = sampler.sample(Instant::now(), ops, errors).to_json();
                let res = writeln!(out, "{line}").and_then(|_| out.flush());
                if let Err(e) = res {
                    // Keep going: the port may come back, and the workload must not stop.
                    if !warned {
                        eprintln!("drover-guest: writing metrics: {e}");
                        warned = true;
                    }
                }
                if stopping {
                    return;
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn json_line_format() {
        let r = Report {
            t_ms: 1200,
            workload: "memtouch",
            ops: 5000,
            ops_per_s: 4166.666,
            integrity_errors: 0,
            pages: 8192,
        };
        assert_eq!(
            r.to_json(),
            r#"{"t_ms":1200,"workload":"memtouch","ops":5000,"ops_per_s":4166.7,"integrity_errors":0,"pages":8192}"#
        );
        let nan = Report {
            ops_per_s: f64::NAN,
            ..r
        };
        assert!(nan.to_json().contains("\"ops_per_s\":0.0"));
    }

    #[test]
    fn sampler_rates_over_last_interval() {
        let start = Instant::now();
        let mut s = Sampler::new(start, "cpu", 0);
        let r1 = s.sample(start + Duration::from_millis(100), 100, 0);
        assert_eq!(r1.t_ms, 100);
        assert!((r1.ops_per_s - 1000.0).abs() < 1e-6);
        let r2 = s.sample(start + Duration::from_millis(300), 500, 2);
        assert_eq!(r2.t_ms, 300);
        assert!((r2.ops_per_s - 2000.0).abs() < 1e-6);
        assert_eq!(r2.integrity_errors, 2);
        // Same instant twice: no division by zero.
        let r3 = s.sample(start + Duration::from_millis(300), 500, 2);
        assert_eq!(r3.ops_per_s, 0.0);
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn thread_writes_lines_and_a_final_one() {
        let buf = Shared::default();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = Sampler::new(Instant::now(), "idle", 0);
        let h = spawn(
            Box::new(buf.clone()),
            counters.clone(),
            sampler,
            Duration::from_millis(10),
            stop.clone(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(55));
        counters.publish(42, 1);
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() >= 4, "{text}");
        assert!(lines.last().unwrap().contains("\"ops\":42,"));
        assert!(lines.last().unwrap().contains("\"integrity_errors\":1,"));
    }
}
