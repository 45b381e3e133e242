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

/// Runs `work` on `runtime` until it ends, or until a stop signal arrives first: then `work` is
/// dropped (which runs its cleanup) and the signal's name and number are returned as `Err`.
/// Listening starts before `work` runs, so no signal's default action can orphan what it makes.
///
/// # Errors
/// The outer error: the signals could not be listened for.
pub fn run_or_stop<F: std::future::Future>(
    runtime: &tokio::runtime::Runtime,
    work: F,
) -> std::io::Result<Result<F::Output, (&'static str, i32)>> {
    runtime.block_on(async {
        let mut stop = StopSignals::listen()?;
        Ok(tokio::select! {
            r = work => Ok(r),
            signal = stop.first() => Err(signal),
        })
    })
}
