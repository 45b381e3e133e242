//! Stopping a command that owns processes (QEMUs, a lab, a manager) cleanly on a signal: the
//! command's future is raced against [`StopSignals::first`] and dropped when a signal wins,
//! which runs its cleanup; the process then exits with 128 + the signal's number.

/// SIGINT, SIGTERM and SIGHUP, caught instead of ending the process.
pub struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The first one to arrive, with its name and number.
    pub async fn first(&mut self) -> (&'static str, i32) {
        tokio::select! {
            _ = self.int.recv() => ("SIGINT", 2),
            _ = self.term.recv() => ("SIGTERM", 15),
            _ = self.hup.recv() => ("SIGHUP", 1),
        }
    }
}
