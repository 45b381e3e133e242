//! QEMU processes: keeping the zombie reaper off a launch's own child, and stopping a QEMU.

use crate::procfs;
use std::time::Duration;

/// Keeps the periodic zombie reaper off the QEMU processes a launch is still waiting for.
///
/// `-daemonize` leaves exited QEMU processes named `drover-<vm>` to the agent (a subreaper);
/// the sampler reaps them. But the process a launch waits on has that name too: reaped first,
/// the launch's own wait fails (ECHILD), the create answers 500 and the daemon it started runs
/// on unrecorded. Launches hold a read guard while they wait; a reaping pass needs the write
/// side and is skipped (until the next pass) while any launch waits.
///
/// The zombies are the process's, not one agent's: every `Vms` in a process (tests run two
/// agents in one) must share one gate, [`LAUNCHES`], or one agent's reaper takes the other's
/// launching child.
pub(super) struct LaunchGate(tokio::sync::RwLock<()>);

/// The process's one launch gate (see [`LaunchGate`]).
pub(super) static LAUNCHES: LaunchGate = LaunchGate::new();

impl LaunchGate {
    pub(super) const fn new() -> Self {
        Self(tokio::sync::RwLock::const_new(()))
    }

    pub(super) async fn launching(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.0.read().await
    }

    /// Runs `reap` unless a launch is waiting for its child; whether it ran.
    pub(super) fn reap_unless_launching(&self, reap: impl FnOnce()) -> bool {
        match self.0.try_write() {
            Ok(_no_launch) => {
                reap();
                true
            }
            Err(_) => false,
        }
    }
}

/// Kills `pid` if it is still `name`'s QEMU: SIGTERM, then SIGKILL after 3 s.
pub async fn kill_pid(pid: u32, name: &str) {
    if !procfs::is_alive(pid, name) {
        procfs::reap(pid);
        return;
    }
    let _ = procfs::signal(pid, libc::SIGTERM);
    for _ in 0..60 {
        if !procfs::is_alive(pid, name) {
            procfs::reap(pid);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = procfs::signal(pid, libc::SIGKILL);
    for _ in 0..20 {
        if !procfs::is_alive(pid, name) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    procfs::reap(pid);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_reaping_while_a_launch_waits_for_its_qemu() {
        let gate = LaunchGate::new();
        let launching = gate.launching().await;
        let second = gate.launching().await;
        let mut reaped = false;
        assert!(!gate.reap_unless_launching(|| reaped = true));
        assert!(!reaped, "reaped a launch's own child");
        drop(launching);
        assert!(!gate.reap_unless_launching(|| reaped = true));
        drop(second);
        assert!(gate.reap_unless_launching(|| reaped = true));
        assert!(reaped);
    }
}
