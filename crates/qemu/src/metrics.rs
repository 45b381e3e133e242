//! Reads the guest workload's JSON-line reports from a VM's metrics serial port.
//!
//! Several readers (the source VM, then the destination after a migration) append to one
//! [`Samples`] series, stamped with one shared [`Clock`], so a workload's throughput can be
//! followed across hosts. Lines that are not reports (boot noise on the port) are skipped.

use drover_core::migration::OpsSample;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;
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

/// One report line from the guest.
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
}

/// A shared, growing series of samples.
#[derive(Debug, Clone, Default)]
pub struct Samples(Arc<Mutex<Vec<OpsSample>>>);

impl Samples {
    pub fn push(&self, s: OpsSample) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Two readers may briefly overlap around a switchover; keep the series ordered.
        if v.last().is_some_and(|l| l.host_ms > s.host_ms) {
            return;
        }
        v.push(s);
    }

    pub fn snapshot(&self) -> Vec<OpsSample> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn last(&self) -> Option<OpsSample> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .copied()
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

/// A background task feeding one VM's reports into a series. Stops on drop.
pub struct MetricsReader {
    task: JoinHandle<()>,
}

impl Drop for MetricsReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MetricsReader {
    /// Connects to `socket` (retrying for `wait`) and reads until the VM goes away.
    pub fn spawn(socket: PathBuf, clock: Clock, samples: Samples, wait: Duration) -> Self {
        let task = tokio::spawn(async move {
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
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(r) = parse_report(&line) {
                    samples.push(OpsSample {
                        host_ms: clock.now_ms(),
                        ops: r.ops,
                        integrity_errors: r.integrity_errors,
                    });
                }
            }
        });
        MetricsReader { task }
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
}
