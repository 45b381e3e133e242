//! The workload the guest runs now, switched in place by the host's control lines (protocol and
//! rule in [`crate::control`]).
//!
//! The control thread applies lines; the workload loop polls [`Live::version`] (one relaxed
//! load per batch or period) and re-reads the parameters when it changed; the reporter puts the
//! running spec and the last line handled into every report.

use crate::control::{parse_line, Refusal};
use crate::spec::Workload;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug)]
struct Inner {
    workload: Workload,
    /// The last control line handled (0: none yet).
    seq: u64,
    /// Why that line was refused, if it was.
    refused: Option<&'static str>,
}

/// The running workload and the control lines handled so far.
#[derive(Debug)]
pub struct Live {
    inner: Mutex<Inner>,
    version: AtomicU64,
}

/// What the reports say about control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub workload: Workload,
    pub seq: u64,
    pub refused: Option<&'static str>,
}

/// What handling a line did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Not a control line, or the line handled last (sent again).
    Ignored,
    Applied,
    Refused(Refusal),
}

impl Live {
    pub fn new(workload: Workload) -> Self {
        Live {
            inner: Mutex::new(Inner {
                workload,
                seq: 0,
                refused: None,
            }),
            version: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain field updates inside: a panic cannot leave them half-done.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bumped whenever the workload's parameters change.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn workload(&self) -> Workload {
        self.lock().workload.clone()
    }

    pub fn status(&self) -> Status {
        let inner = self.lock();
        Status {
            workload: inner.workload.clone(),
            seq: inner.seq,
            refused: inner.refused,
        }
    }

    /// Handles one line from the host.
    pub fn handle_line(&self, line: &str) -> Handled {
        let Some(control) = parse_line(line) else {
            return Handled::Ignored;
        };
        let mut inner = self.lock();
        if control.seq == inner.seq {
            return Handled::Ignored;
        }
        inner.seq = control.seq;
        match control.workload_after(&inner.workload) {
            Ok(next) => {
                inner.workload = next;
                inner.refused = None;
                self.version.fetch_add(1, Ordering::Release);
                Handled::Applied
            }
            Err(refusal) => {
                inner.refused = Some(refusal.code());
                Handled::Refused(refusal)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_workload;

    #[test]
    fn lines_switch_parameters_once_and_refusals_are_reported() {
        let live = Live::new(parse_workload("cpu:demand=10").unwrap());
        assert_eq!(live.handle_line("noise"), Handled::Ignored);
        assert_eq!(live.version(), 0);
        assert_eq!(live.handle_line("set 1 cpu:demand=90"), Handled::Applied);
        assert_eq!(live.version(), 1);
        assert_eq!(live.workload(), Workload::Cpu { demand_pct: 90 });
        // The host resends until a report acknowledges: the copy changes nothing.
        assert_eq!(live.handle_line("set 1 cpu:demand=90"), Handled::Ignored);
        assert_eq!(live.version(), 1);
        assert!(matches!(
            live.handle_line("set 2 memtouch:wss=8M"),
            Handled::Refused(_)
        ));
        assert_eq!(
            live.status(),
            Status {
                workload: Workload::Cpu { demand_pct: 90 },
                seq: 2,
                refused: Some("kind-change")
            }
        );
        // Any other seq is a new line (after a migration the host may start lower).
        assert_eq!(live.handle_line("set 1 cpu:demand=20"), Handled::Applied);
        assert_eq!(live.status().refused, None);
        assert_eq!(live.version(), 2);
    }
}
