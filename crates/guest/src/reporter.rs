//! Periodic JSON-lines reports to the host.
//!
//! The workload publishes cumulative counters into atomics; a separate thread samples them every
//! interval and writes one line. Only cumulative values are reported, so a lost or late line (the
//! host side reconnecting across a migration) loses no information.
//!
//! A line: `t_ms` (since the clock started), `workload` (kind), `ops` (work done, cumulative),
//! `ops_per_s` (over the last interval), `integrity_errors` (cumulative), `pages` (working set),
//! `spec` (the canonical spec running now), `seq` (the last control line handled, 0 for none;
//! see `control`), `demand_pct` (percent of one vCPU the workload tries to use: it runs one
//! thread), `demanded_ops` (work asked for, cumulative: `1 - Δops/Δdemanded_ops` over a window
//! is the work lost in it), `full_ops_per_s` (its full speed, the yardstick of the demand), and
//! `refused` (only when the last control line was refused: a short code). A `net` workload's lines
//! add `rx_bytes`, `tx_bytes` (cumulative, seen from the guest) and `connects` (connections
//! made to its peer: more than one means the flow was broken and made again). A `memtouch+disk`
//! workload's lines add `parts`: one object per part in the spec's order (`workload`, `ops`,
//! `ops_per_s` over the last second, `integrity_errors`, `demand_pct`, `demanded_ops`,
//! `full_ops_per_s`: each as above, for that part alone), while the top-level figures stay the
//! whole workload's: `ops`, `demanded_ops` and `integrity_errors` the parts' sums (so
//! `1 - Δops/Δdemanded_ops` and the integrity check read as for any workload), `demand_pct`
//! the share of the one thread both parts ask for, `full_ops_per_s` the speed of that mix flat
//! out, and `pages` the memory part's working set. After a switch, `spec`
//! and `seq` change at once and the demand figures with the workload's next period or batch
//! (within 100 ms).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::live::{Live, Status};
#[cfg(test)]
use crate::spec::Workload;

pub const INTERVAL: Duration = Duration::from_millis(100);

/// What the workload asks of its vCPU (see `speed` and the workloads' docs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Demand {
    /// Ops asked for since the start, cumulative (the work `ops` falls short of under
    /// contention).
    pub demanded_ops: u64,
    /// Percent of one vCPU the workload tries to use now (it runs one thread).
    pub demand_pct: f64,
    /// Ops per second one vCPU does flat out (best measured).
    pub full_ops_per_s: f64,
}

/// One workload's (or one part's) published figures: cumulative ops and integrity errors, and
/// its demand.
#[derive(Default)]
pub struct Gauges {
    ops: AtomicU64,
    integrity_errors: AtomicU64,
    demanded_ops: AtomicU64,
    /// f64 bits.
    demand_pct: AtomicU64,
    /// f64 bits.
    full_ops_per_s: AtomicU64,
}

impl Gauges {
    pub fn publish(&self, ops: u64, integrity_errors: u64) {
        self.ops.store(ops, Ordering::Relaxed);
        self.integrity_errors
            .store(integrity_errors, Ordering::Relaxed);
    }

    pub fn publish_demand(&self, demanded_ops: u64, demand_pct: f64, full_ops_per_s: f64) {
        self.demanded_ops.store(demanded_ops, Ordering::Relaxed);
        self.demand_pct
            .store(demand_pct.to_bits(), Ordering::Relaxed);
        self.full_ops_per_s
            .store(full_ops_per_s.to_bits(), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.ops.load(Ordering::Relaxed),
            self.integrity_errors.load(Ordering::Relaxed),
        )
    }

    pub fn demand(&self) -> Demand {
        Demand {
            demanded_ops: self.demanded_ops.load(Ordering::Relaxed),
            demand_pct: f64::from_bits(self.demand_pct.load(Ordering::Relaxed)),
            full_ops_per_s: f64::from_bits(self.full_ops_per_s.load(Ordering::Relaxed)),
        }
    }
}

/// Parts a workload may have ([`crate::spec::Workload::Mixed`]: memtouch, disk).
pub const MAX_PARTS: usize = 2;

/// What the workload publishes for the reporter: the whole workload's gauges (what every
/// workload publishes; `Counters` derefs to them), a mixed workload's parts, a net flow's
/// counts.
#[derive(Default)]
pub struct Counters {
    overall: Gauges,
    /// A mixed workload's parts, in the spec's order (unused by other workloads).
    pub parts: [Gauges; MAX_PARTS],
    /// A net workload's flow.
    pub net: crate::net::NetCounts,
}

/// The whole workload's gauges are what single-part workloads publish into, so they read
/// as the counters themselves.
impl std::ops::Deref for Counters {
    type Target = Gauges;

    fn deref(&self) -> &Gauges {
        &self.overall
    }
}

/// One part's figures in a report (a mixed workload's).
#[derive(Debug, Clone, PartialEq)]
pub struct PartReport {
    pub workload: &'static str,
    pub ops: u64,
    /// Over the last [`PART_RATE_WINDOW`].
    pub ops_per_s: f64,
    pub integrity_errors: u64,
    pub demand: Demand,
}

impl PartReport {
    fn to_json(&self) -> String {
        format!(
            "{{\"workload\":\"{}\",\"ops\":{},\"ops_per_s\":{:.1},\"integrity_errors\":{},\"demand_pct\":{:.1},\"demanded_ops\":{},\"full_ops_per_s\":{:.1}}}",
            self.workload,
            self.ops,
            finite(self.ops_per_s),
            self.integrity_errors,
            finite(self.demand.demand_pct),
            self.demand.demanded_ops,
            finite(self.demand.full_ops_per_s),
        )
    }
}

/// The span a part's `ops_per_s` is measured over: a second, since a part paced at a few
/// hundred ops/s does a few dozen in one report interval.
pub const PART_RATE_WINDOW: Duration = Duration::from_secs(1);

/// One report line's facts (see [`Report::to_json`] for the wire form).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub t_ms: u64,
    pub workload: &'static str,
    pub ops: u64,
    pub ops_per_s: f64,
    pub integrity_errors: u64,
    pub pages: u64,
    /// The canonical spec running now.
    pub spec: String,
    /// The last control line handled (0: none).
    pub seq: u64,
    /// Why that line was refused, if it was.
    pub refused: Option<&'static str>,
    pub demand: Demand,
    /// A net workload's (rx bytes, tx bytes, connects).
    pub net: Option<(u64, u64, u64)>,
    /// A mixed workload's parts (empty for others).
    pub parts: Vec<PartReport>,
}

/// A number JSON can carry (NaN and infinities are not JSON).
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

impl Report {
    /// One JSON object, no trailing newline. Hand-written: the guest has no dependencies; the
    /// workload name, the canonical spec and the refusal code are made of characters that need
    /// no escaping (letters, digits, `:`, `=`, `,`, `-`).
    pub fn to_json(&self) -> String {
        let refused = self
            .refused
            .map(|r| format!(",\"refused\":\"{r}\""))
            .unwrap_or_default();
        let net = self
            .net
            .map(|(rx, tx, c)| format!(",\"rx_bytes\":{rx},\"tx_bytes\":{tx},\"connects\":{c}"))
            .unwrap_or_default();
        let parts = if self.parts.is_empty() {
            String::new()
        } else {
            let each: Vec<String> = self.parts.iter().map(PartReport::to_json).collect();
            format!(",\"parts\":[{}]", each.join(","))
        };
        format!(
            "{{\"t_ms\":{},\"workload\":\"{}\",\"ops\":{},\"ops_per_s\":{:.1},\"integrity_errors\":{},\"pages\":{},\"spec\":\"{}\",\"seq\":{},\"demand_pct\":{:.1},\"demanded_ops\":{},\"full_ops_per_s\":{:.1}{parts}{net}{refused}}}",
            self.t_ms,
            self.workload,
            self.ops,
            finite(self.ops_per_s),
            self.integrity_errors,
            self.pages,
            self.spec,
            self.seq,
            finite(self.demand.demand_pct),
            self.demand.demanded_ops,
            finite(self.demand.full_ops_per_s),
        )
    }
}

/// Turns successive counter samples into reports (pure, so it is testable without threads).
pub struct Sampler {
    start: Instant,
    last: Option<(Instant, u64)>,
    /// Recent samples of the parts' ops, oldest first: the first is the newest at least
    /// [`PART_RATE_WINDOW`] old (or the start).
    part_history: std::collections::VecDeque<(Instant, [u64; MAX_PARTS])>,
}

impl Sampler {
    pub fn new(start: Instant) -> Self {
        Sampler {
            start,
            last: None,
            part_history: [(start, [0; MAX_PARTS])].into(),
        }
    }

    /// The report at `now` of the workload `control` describes, from its counters. A mixed
    /// workload's `ops`, `integrity_errors` and `demanded_ops` are the sums of the parts read
    /// for this report (the whole's own gauges are published a moment after the parts', so a
    /// line would not always add up).
    pub fn sample(&mut self, now: Instant, counters: &Counters, control: &Status) -> Report {
        let parts = self.parts(now, counters, &control.workload);
        let mut demand = counters.demand();
        let (ops, integrity_errors) = if parts.is_empty() {
            counters.snapshot()
        } else {
            demand.demanded_ops = parts.iter().map(|p| p.demand.demanded_ops).sum();
            let sum = |f: fn(&PartReport) -> u64| parts.iter().map(f).sum();
            (sum(|p| p.ops), sum(|p| p.integrity_errors))
        };
        let (t0, ops0) = self.last.unwrap_or((self.start, 0));
        let ops_per_s = rate(ops0, ops, now.saturating_duration_since(t0));
        self.last = Some((now, ops));
        let net = &counters.net;
        Report {
            t_ms: now.saturating_duration_since(self.start).as_millis() as u64,
            workload: control.workload.name(),
            ops,
            ops_per_s,
            integrity_errors,
            pages: control.workload.pages(),
            spec: control.workload.to_string(),
            seq: control.seq,
            refused: control.refused,
            demand,
            net: matches!(control.workload, crate::spec::Workload::Net { .. }).then(|| {
                (
                    net.rx.load(Ordering::Relaxed),
                    net.tx.load(Ordering::Relaxed),
                    net.connects.load(Ordering::Relaxed),
                )
            }),
            parts,
        }
    }

    /// A mixed workload's parts' figures, each part's rate over the last
    /// [`PART_RATE_WINDOW`].
    fn parts(
        &mut self,
        now: Instant,
        counters: &Counters,
        workload: &crate::spec::Workload,
    ) -> Vec<PartReport> {
        if !matches!(workload, crate::spec::Workload::Mixed { .. }) {
            return Vec::new();
        }
        let snaps = counters.parts.each_ref().map(Gauges::snapshot);
        let ops = snaps.map(|(o, _)| o);
        let h = &mut self.part_history;
        h.push_back((now, ops));
        while h.len() > 2 && now.saturating_duration_since(h[1].0) >= PART_RATE_WINDOW {
            h.pop_front();
        }
        let (t0, ops0) = h[0];
        ["memtouch", "disk"]
            .into_iter()
            .enumerate()
            .map(|(i, workload)| PartReport {
                workload,
                ops: ops[i],
                ops_per_s: rate(ops0[i], ops[i], now.saturating_duration_since(t0)),
                integrity_errors: snaps[i].1,
                demand: counters.parts[i].demand(),
            })
            .collect()
    }
}

/// Ops per second from `from` to `to` cumulative ops over `dt` (0 over no time).
fn rate(from: u64, to: u64, dt: Duration) -> f64 {
    let dt = dt.as_secs_f64();
    if dt > 0.0 {
        to.saturating_sub(from) as f64 / dt
    } else {
        0.0
    }
}

/// Starts the reporter thread. It writes a line every `interval` until `stop` is set, then a final
/// line so the last counts are not lost.
pub fn spawn(
    mut out: Box<dyn Write + Send>,
    counters: Arc<Counters>,
    live: Arc<Live>,
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
                let report = sampler.sample(Instant::now(), &counters, &live.status());
                let res = writeln!(out, "{}", report.to_json()).and_then(|_| out.flush());
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
    use crate::spec::parse_workload;
    use std::sync::Mutex;

    fn status(spec: &str) -> Status {
        Status {
            workload: parse_workload(spec).unwrap(),
            seq: 0,
            refused: None,
        }
    }

    #[test]
    fn json_line_format() {
        let r = Report {
            t_ms: 1200,
            workload: "memtouch",
            ops: 5000,
            ops_per_s: 4166.666,
            integrity_errors: 0,
            pages: 8192,
            spec: "memtouch:wss=32M,rate=max,pattern=random".into(),
            seq: 3,
            refused: None,
            demand: Demand {
                demanded_ops: 5100,
                demand_pct: 100.0,
                full_ops_per_s: 4300.04,
            },
            net: None,
            parts: Vec::new(),
        };
        assert_eq!(
            r.to_json(),
            r#"{"t_ms":1200,"workload":"memtouch","ops":5000,"ops_per_s":4166.7,"integrity_errors":0,"pages":8192,"spec":"memtouch:wss=32M,rate=max,pattern=random","seq":3,"demand_pct":100.0,"demanded_ops":5100,"full_ops_per_s":4300.0}"#
        );
        let odd = Report {
            ops_per_s: f64::NAN,
            refused: Some("kind-change"),
            demand: Demand {
                demand_pct: f64::INFINITY,
                ..r.demand
            },
            ..r.clone()
        };
        let text = odd.to_json();
        assert!(text.contains("\"ops_per_s\":0.0"), "{text}");
        assert!(text.contains("\"demand_pct\":0.0"), "{text}");
        assert!(text.ends_with(",\"refused\":\"kind-change\"}"), "{text}");
        let net = Report {
            net: Some((10, 20, 1)),
            ..r.clone()
        };
        assert!(
            net.to_json()
                .ends_with(",\"rx_bytes\":10,\"tx_bytes\":20,\"connects\":1}"),
            "{}",
            net.to_json()
        );
        let part = |workload, ops| PartReport {
            workload,
            ops,
            ops_per_s: 200.04,
            integrity_errors: 1,
            demand: Demand {
                demanded_ops: ops + 1,
                demand_pct: 10.0,
                full_ops_per_s: 2000.0,
            },
        };
        let mixed = Report {
            parts: vec![part("memtouch", 7), part("disk", 8)],
            ..r
        };
        assert!(
            mixed.to_json().ends_with(
                r#""full_ops_per_s":4300.0,"parts":[{"workload":"memtouch","ops":7,"ops_per_s":200.0,"integrity_errors":1,"demand_pct":10.0,"demanded_ops":8,"full_ops_per_s":2000.0},{"workload":"disk","ops":8,"ops_per_s":200.0,"integrity_errors":1,"demand_pct":10.0,"demanded_ops":9,"full_ops_per_s":2000.0}]}"#
            ),
            "{}",
            mixed.to_json()
        );
    }

    #[test]
    fn sampler_rates_over_last_interval() {
        let start = Instant::now();
        let mut s = Sampler::new(start);
        let c = Counters::default();
        let cpu = status("cpu:demand=50");
        c.publish(100, 0);
        let r1 = s.sample(start + Duration::from_millis(100), &c, &cpu);
        assert_eq!(r1.t_ms, 100);
        assert!((r1.ops_per_s - 1000.0).abs() < 1e-6);
        assert_eq!((r1.workload, r1.spec.as_str()), ("cpu", "cpu:demand=50"));
        assert!(r1.parts.is_empty(), "one part: no parts listed");
        c.publish(500, 2);
        let r2 = s.sample(start + Duration::from_millis(300), &c, &cpu);
        assert_eq!(r2.t_ms, 300);
        assert!((r2.ops_per_s - 2000.0).abs() < 1e-6);
        assert_eq!(r2.integrity_errors, 2);
        // Same instant twice: no division by zero.
        let r3 = s.sample(start + Duration::from_millis(300), &c, &cpu);
        assert_eq!(r3.ops_per_s, 0.0);
        // The pages follow the running (possibly shrunk) working set.
        let mt = status("memtouch:wss=8M");
        assert_eq!(s.sample(start, &c, &mt).pages, 2048);
    }

    #[test]
    fn a_mixed_workloads_parts_are_reported_with_rates_over_a_second() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Sampler::new(start);
        let c = Counters::default();
        let mixed = status("memtouch:wss=8M,rate=2000+disk:wss=1M,rate=200,read=10");
        for step in 1..=15u64 {
            c.parts[0].publish(200 * step, 0);
            c.parts[1].publish(20 * step, step / 10);
            c.parts[1].publish_demand(20 * step + 1, 5.0, 4000.0);
            let r = s.sample(start + ms(100 * step), &c, &mixed);
            assert_eq!(r.parts.len(), 2);
            let (m, d) = (&r.parts[0], &r.parts[1]);
            assert_eq!((m.workload, d.workload), ("memtouch", "disk"));
            assert_eq!((m.ops, d.ops), (200 * step, 20 * step));
            // Steady rates read steady, over the start or the last second.
            assert!((m.ops_per_s - 2000.0).abs() < 1e-6, "{step}: {m:?}");
            assert!((d.ops_per_s - 200.0).abs() < 1e-6, "{step}: {d:?}");
            assert_eq!(d.integrity_errors, step / 10);
            assert_eq!(d.demand.demanded_ops, 20 * step + 1);
            // The whole adds its parts up as this line reads them, whatever its own gauges
            // said a moment earlier.
            assert_eq!(
                (r.ops, r.integrity_errors, r.demand.demanded_ops),
                (
                    m.ops + d.ops,
                    d.integrity_errors,
                    m.demand.demanded_ops + d.demand.demanded_ops
                )
            );
        }
        // Only about a second of history is kept.
        assert!(s.part_history.len() <= 12, "{}", s.part_history.len());
        // The pages are the memory part's.
        assert_eq!(s.sample(start + ms(1600), &c, &mixed).pages, 2048);
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
        let live = Arc::new(Live::new(Workload::Idle));
        let h = spawn(
            Box::new(buf.clone()),
            counters.clone(),
            live.clone(),
            Sampler::new(Instant::now()),
            Duration::from_millis(10),
            stop.clone(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(55));
        counters.publish(42, 1);
        assert_eq!(
            live.handle_line("set 9 memtouch:wss=1M"),
            crate::live::Handled::Refused(crate::control::Refusal::Switch(
                crate::control::SwitchError::KindChange {
                    from: "idle",
                    to: "memtouch"
                }
            ))
        );
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() >= 4, "{text}");
        let last = lines.last().unwrap();
        assert!(last.contains("\"ops\":42,"), "{last}");
        assert!(last.contains("\"integrity_errors\":1,"), "{last}");
        assert!(last.contains("\"seq\":9,"), "{last}");
        assert!(last.contains("\"refused\":\"kind-change\""), "{last}");
    }
}
