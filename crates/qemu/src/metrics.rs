//! Reads the guest workload's JSON-line reports from a VM's metrics serial port, and writes the
//! host's control lines to the guest on the same port (a unix socket QEMU serves, carrying both
//! directions of the serial line; the protocol is in [`crate::guest_control`]).
//!
//! Several readers (the source VM, then the destination after a migration) append to one
//! [`Samples`] series, stamped with one shared [`Clock`], so a workload's throughput can be
//! followed across hosts. Lines that are not reports (boot noise on the port) are skipped.

use crate::guest_control::{Delivery, DeliveryState};
use drover_core::migration::OpsSample;
use drover_guest::control::Unsendable;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Milliseconds since a shared origin (tokio's clock, so paused-time tests work).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: tokio::time::Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

/// One report line from the guest (fields in `drover_guest`'s reporter; a guest built before
/// the control protocol sends only the first five).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GuestReport {
    pub t_ms: u64,
    #[serde(default)]
    pub workload: String,
    pub ops: u64,
    #[serde(default)]
    pub ops_per_s: f64,
    #[serde(default)]
    pub integrity_errors: u64,
    /// The canonical spec the guest runs.
    #[serde(default)]
    pub spec: Option<String>,
    /// The last control line it handled.
    #[serde(default)]
    pub seq: Option<u64>,
    /// Percent of one vCPU the workload tries to use.
    #[serde(default)]
    pub demand_pct: Option<f64>,
    /// Work asked for, cumulative ops.
    #[serde(default)]
    pub demanded_ops: Option<u64>,
    /// Ops per second at full speed.
    #[serde(default)]
    pub full_ops_per_s: Option<f64>,
    /// Why the last control line was refused.
    #[serde(default)]
    pub refused: Option<String>,
    /// A workload of several parts' figures per part (`memtouch+disk`), in its spec's order;
    /// the fields above are then the whole workload's.
    #[serde(default)]
    pub parts: Vec<GuestPartReport>,
}

/// One part of a workload of several, as the guest reports it (each figure as in
/// [`GuestReport`], for the part alone; `ops_per_s` over the guest's last second).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GuestPartReport {
    /// The part's kind (`memtouch`, `disk`).
    pub workload: String,
    pub ops: u64,
    #[serde(default)]
    pub ops_per_s: f64,
    #[serde(default)]
    pub integrity_errors: u64,
    #[serde(default)]
    pub demand_pct: f64,
    #[serde(default)]
    pub demanded_ops: u64,
    #[serde(default)]
    pub full_ops_per_s: f64,
}

/// What the guest's latest report says beyond its counters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GuestStatus {
    /// Arrival, host clock ms.
    pub host_ms: u64,
    pub spec: Option<String>,
    pub seq: Option<u64>,
    pub demand_pct: Option<f64>,
    pub demanded_ops: Option<u64>,
    pub full_ops_per_s: Option<f64>,
    pub refused: Option<String>,
    /// A workload of several parts' figures per part.
    pub parts: Vec<GuestPartReport>,
}

impl GuestStatus {
    fn of(r: &GuestReport, host_ms: u64) -> Self {
        GuestStatus {
            host_ms,
            spec: r.spec.clone(),
            seq: r.seq,
            demand_pct: r.demand_pct.filter(|p| p.is_finite()),
            demanded_ops: r.demanded_ops,
            full_ops_per_s: r.full_ops_per_s.filter(|p| p.is_finite()),
            refused: r.refused.clone(),
            parts: r.parts.clone(),
        }
    }
}

/// One sample of the series: the counters, and the work asked for when the guest says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemandSample {
    pub sample: OpsSample,
    /// Cumulative ops asked for (None from a guest that does not say).
    pub demanded_ops: Option<u64>,
}

#[derive(Debug, Default)]
struct Series {
    samples: Vec<DemandSample>,
    status: Option<GuestStatus>,
}

/// A shared, growing series of samples, with the latest report's status.
#[derive(Debug, Clone, Default)]
pub struct Samples(Arc<Mutex<Series>>);

impl Samples {
    fn lock(&self) -> MutexGuard<'_, Series> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, s: OpsSample) {
        self.push_demand(DemandSample {
            sample: s,
            demanded_ops: None,
        });
    }

    fn push_demand(&self, s: DemandSample) {
        let mut v = self.lock();
        // Two readers may briefly overlap around a switchover; keep the series ordered.
        if v.samples
            .last()
            .is_some_and(|l| l.sample.host_ms > s.sample.host_ms)
        {
            return;
        }
        v.samples.push(s);
    }

    /// Adds a report that arrived at `host_ms`.
    pub fn push_report(&self, r: &GuestReport, host_ms: u64) {
        self.push_demand(DemandSample {
            sample: OpsSample {
                host_ms,
                ops: r.ops,
                integrity_errors: r.integrity_errors,
            },
            demanded_ops: r.demanded_ops,
        });
        self.lock().status = Some(GuestStatus::of(r, host_ms));
    }

    pub fn snapshot(&self) -> Vec<OpsSample> {
        self.lock().samples.iter().map(|s| s.sample).collect()
    }

    /// Every sample with the work asked for.
    pub fn demand_snapshot(&self) -> Vec<DemandSample> {
        self.lock().samples.clone()
    }

    pub fn last(&self) -> Option<OpsSample> {
        self.lock().samples.last().map(|s| s.sample)
    }

    /// The latest report's status (None before the first report).
    pub fn status(&self) -> Option<GuestStatus> {
        self.lock().status.clone()
    }

    /// Waits until a sample taken at or after `after_ms` with at least `min_ops` ops arrives.
    pub async fn wait_for(
        &self,
        clock: &Clock,
        after_ms: u64,
        min_ops: u64,
        timeout: Duration,
    ) -> Option<OpsSample> {
        let deadline = clock.now_ms() + timeout.as_millis() as u64;
        loop {
            if let Some(s) = self.last() {
                if s.host_ms >= after_ms && s.ops >= min_ops {
                    return Some(s);
                }
            }
            if clock.now_ms() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Parses one line; None for anything that is not a report.
pub fn parse_report(line: &str) -> Option<GuestReport> {
    let start = line.find('{')?;
    serde_json::from_str(line[start..].trim_end()).ok()
}

/// A background task feeding one VM's reports into a series and delivering control lines to
/// its guest. Stops on drop.
pub struct MetricsReader {
    task: JoinHandle<()>,
    delivery: Arc<Mutex<Delivery>>,
    outbox: mpsc::UnboundedSender<String>,
    clock: Clock,
}

impl Drop for MetricsReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock_delivery(d: &Mutex<Delivery>) -> MutexGuard<'_, Delivery> {
    // The state machine's steps are whole field updates: a panic cannot leave one half-done.
    d.lock().unwrap_or_else(|e| e.into_inner())
}

impl MetricsReader {
    /// Connects to `socket` (retrying for `wait`) and reads until the VM goes away.
    pub fn spawn(socket: PathBuf, clock: Clock, samples: Samples, wait: Duration) -> Self {
        let delivery = Arc::new(Mutex::new(Delivery::default()));
        let (outbox, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(serve(socket, clock, samples, wait, delivery.clone(), rx));
        MetricsReader {
            task,
            delivery,
            outbox,
            clock,
        }
    }

    /// Asks the guest to run `spec` (a validated spec of the same kind as the one it runs):
    /// written now if the guest has reported, else after its first report, then again until a
    /// report acknowledges it. A newer request replaces one still travelling.
    ///
    /// # Errors
    /// [`Unsendable`] for a spec that cannot travel in a control line.
    pub fn request(&self, spec: &str) -> Result<(), Unsendable> {
        let line = lock_delivery(&self.delivery).want(spec, self.clock.now_ms())?;
        if let Some(line) = line {
            // The task is gone only when the VM's port closed; the request stays recorded.
            let _ = self.outbox.send(line);
        }
        Ok(())
    }

    /// Where the last request stands.
    pub fn delivery(&self) -> DeliveryState {
        lock_delivery(&self.delivery).state().clone()
    }
}

async fn serve(
    socket: PathBuf,
    clock: Clock,
    samples: Samples,
    wait: Duration,
    delivery: Arc<Mutex<Delivery>>,
    mut outbox: mpsc::UnboundedReceiver<String>,
) {
    let deadline = tokio::time::Instant::now() + wait;
    let stream = loop {
        match UnixStream::connect(&socket).await {
            Ok(s) => break s,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => {
                tracing::warn!(socket = %socket.display(), error = %e, "metrics port unreachable");
                return;
            }
        }
    };
    // QEMU serves one client per chardev: reports and control lines share this connection.
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    loop {
        let to_write = tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { return };
                let Some(r) = parse_report(&line) else { continue };
                let now = clock.now_ms();
                samples.push_report(&r, now);
                match r.seq {
                    Some(seq) => lock_delivery(&delivery).on_report(seq, r.refused.as_deref(), now),
                    None => None,
                }
            }
            Some(line) = outbox.recv() => Some(line),
        };
        if let Some(line) = to_write {
            if let Err(e) = write.write_all(line.as_bytes()).await {
                tracing::warn!(socket = %socket.display(), error = %e, "control line not written");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixListener;

    #[test]
    fn parses_reports_and_skips_noise() {
        let r = parse_report(r#"{"t_ms":100,"workload":"memtouch","ops":5,"ops_per_s":50.0,"integrity_errors":0,"pages":10}"#)
            .expect("report");
        assert_eq!((r.ops, r.integrity_errors), (5, 0));
        assert!(parse_report("[    0.000000] Linux version").is_none());
        assert!(parse_report("\u{0}garbage{").is_none());
        assert!(parse_report("noise {\"t_ms\":1,\"ops\":2}").is_some());
        let mixed = parse_report(r#"{"t_ms":100,"workload":"memtouch+disk","ops":30,"ops_per_s":300.0,"integrity_errors":1,"pages":10,"parts":[{"workload":"memtouch","ops":20,"ops_per_s":200.0,"integrity_errors":0,"demand_pct":2.0,"demanded_ops":21,"full_ops_per_s":10000.0},{"workload":"disk","ops":10,"ops_per_s":100.0,"integrity_errors":1,"demand_pct":10.0,"demanded_ops":11,"full_ops_per_s":1000.0}]}"#)
            .expect("a mixed report");
        assert_eq!(mixed.ops, 30);
        let parts: Vec<(&str, u64, u64)> = mixed
            .parts
            .iter()
            .map(|p| (p.workload.as_str(), p.ops, p.integrity_errors))
            .collect();
        assert_eq!(parts, [("memtouch", 20, 0), ("disk", 10, 1)]);
        assert_eq!(mixed.parts[1].demanded_ops, 11);
    }

    #[tokio::test]
    async fn reader_appends_samples_until_eof() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            for i in 1..=3u64 {
                let line = format!(
                    "{{\"t_ms\":{i},\"ops\":{},\"integrity_errors\":0}}\nboot noise\n",
                    i * 10
                );
                s.write_all(line.as_bytes()).await.expect("write");
            }
        });
        let samples = Samples::default();
        let clock = Clock::default();
        let _reader = MetricsReader::spawn(path, clock, samples.clone(), Duration::from_secs(2));
        server.await.expect("server");
        let got = samples
            .wait_for(&clock, 0, 30, Duration::from_secs(2))
            .await
            .expect("samples");
        assert_eq!(got.ops, 30);
        assert_eq!(samples.snapshot().len(), 3);
    }
    /// A stand-in guest on the socket: reports with its seq, and takes the control lines the
    /// reader writes back on the same connection.
    #[tokio::test]
    async fn control_lines_go_back_on_the_report_connection_until_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let guest = tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            let (read, mut write) = s.into_split();
            let mut control = BufReader::new(read).lines();
            let report = |seq: u64, spec: &str| {
                format!(
                    "{{\"t_ms\":1,\"ops\":1,\"spec\":\"{spec}\",\"seq\":{seq},\"demand_pct\":10.0,\"demanded_ops\":2}}\n"
                )
            };
            write
                .write_all(report(3, "cpu:demand=10").as_bytes())
                .await
                .expect("report");
            let line = control.next_line().await.expect("read").expect("a line");
            write
                .write_all(report(4, "cpu:demand=90").as_bytes())
                .await
                .expect("report");
            line
        });
        let samples = Samples::default();
        let clock = Clock::default();
        let reader = MetricsReader::spawn(path, clock, samples.clone(), Duration::from_secs(2));
        assert!(reader.request("idle panic=1").is_err());
        reader.request("cpu:demand=90").expect("sendable");
        let line = guest.await.expect("guest");
        assert_eq!(line, "set 4 cpu:demand=90");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !matches!(reader.delivery(), DeliveryState::Done { .. }) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                reader.delivery()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status = samples.status().expect("a report");
        assert_eq!(
            (status.spec.as_deref(), status.seq),
            (Some("cpu:demand=90"), Some(4))
        );
        assert_eq!(samples.demand_snapshot()[0].demanded_ops, Some(2));
    }
}
