//! The lab's traffic peer as a child process (`ip netns exec <peer ns> drover lab peer
//! --serve-here`), its reports read on a thread and stamped with the time they arrived; killed
//! when dropped (`ip netns exec` execs drover, so the child is the server itself). Bounded by
//! its `--duration` in any case.

use super::series::{parse_peer_line, PeerSample};
use crate::sampler::unix_now_s;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// Milliseconds between the peer's reports.
pub const REPORT_MS: u64 = 250;

/// A running peer and what it has reported so far.
pub struct Peer {
    child: Child,
    reports: Arc<Mutex<Vec<PeerSample>>>,
}

impl Peer {
    /// Starts `bin lab peer` for lab `lab` in namespace `netns`, serving for at most
    /// `duration_s`.
    ///
    /// # Errors
    /// The spawn's error.
    pub fn start(bin: &Path, lab: &str, netns: &str, duration_s: u64) -> std::io::Result<Peer> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(bin)
            .args(["lab", "peer", "--name", lab, "--serve-here"])
            .args(["--duration", &duration_s.to_string()])
            .args(["--report-ms", &REPORT_MS.to_string(), "--max-conns", "32"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let reports: Arc<Mutex<Vec<PeerSample>>> = Arc::default();
        if let Some(out) = child.stdout.take() {
            let sink = reports.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(s) = parse_peer_line(&line, unix_now_s()) {
                        if let Ok(mut v) = sink.lock() {
                            v.push(s);
                        }
                    }
                }
            });
        }
        Ok(Peer { child, reports })
    }

    /// The reports so far.
    pub fn reports(&self) -> Vec<PeerSample> {
        self.reports.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Whether the server has stopped (its status as text).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
