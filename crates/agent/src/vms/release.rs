//! Releasing the VMs of a split migration that was given up (`migrate::abandon`), without
//! deleting a byte of their disks.
//!
//! On the source, [`Vms::give_up`] stops the `postmigrate` QEMU (it holds only the part of
//! the guest's memory the destination had not pulled; the rest died with the destination's
//! QEMU), hands the disk the agent created over to the operator (the record then names it as
//! an operator's disk, which the agent never deletes: a later `DELETE /v1/vms/{name}` keeps
//! it) and reports the VM `lost` with the reason. On the destination, an incoming VM whose
//! guest had arrived (the migration switched) and whose QEMU then died is released by
//! `DELETE /v1/incoming/{name}` with its disk (a storage post-copy's overlay: what the guest
//! wrote there after the switch) kept and named in the reply ([`keeps_disk`]).
//!
//! The destination learns that its guest arrived from a forwarded look (the source's driver
//! asks after the switch) and from its own sampler ([`Vms::watch_arrivals`], every pass), so
//! a QEMU that dies right after the switch, before the source looks, still keeps its disk.
//! What is left: a death within one sampler pass of the switch with no look between, and an
//! agent restart (the flag is kept in memory only).

use super::{guard, kill_pid, Vms, VmsError};
use crate::lock;
use crate::model::VmRole;
use drover_qemu::qmp::QmpExt;
use std::path::PathBuf;
use std::time::Duration;

/// Whether an abort of an incoming VM keeps its disk file (pure, for tests): its QEMU is gone
/// (`qemu_gone`) after its guest had been seen here (`guest_arrived`), so the disk may hold
/// what only that guest wrote. Before the switch it holds nothing the source lacks.
pub fn keeps_disk(qemu_gone: bool, guest_arrived: bool) -> bool {
    qemu_gone && guest_arrived
}

impl Vms {
    /// Looks at every incoming VM whose guest has not been seen here yet and marks those
    /// whose QEMU says it has (running, post-copy or completed: [`guard::GuestSeen::arrived`]).
    /// Called by the sampler; a QEMU that does not answer within the look's bound is left for
    /// the next pass.
    pub async fn watch_arrivals(&self) {
        let waiting: Vec<_> = lock(&self.map)
            .iter()
            .filter(|(_, e)| {
                matches!(e.record.role, VmRole::Incoming { .. })
                    && !e.guest_arrived
                    && e.lost.is_none()
                    && !e.stopping
            })
            .filter_map(|(name, e)| e.qmp.clone().map(|q| (name.clone(), q)))
            .collect();
        for (name, qmp) in waiting {
            if guard::look(qmp.as_ref())
                .await
                .is_ok_and(|seen| seen.arrived())
            {
                tracing::info!(vm = %name, "the incoming guest runs here");
                self.mark_guest_arrived(&name);
            }
        }
    }

    /// Gives up source VM `name` (see the module doc): its QEMU stopped, its disk kept and
    /// now the operator's, the VM reported lost with `reason`. Returns the disk file kept, if
    /// it has one.
    ///
    /// # Errors
    /// [`VmsError::NotFound`]; the store's error (the QEMU is stopped by then; the VM stays
    /// registered, reported lost by the liveness check).
    pub async fn give_up(&self, name: &str, reason: &str) -> Result<Option<PathBuf>, VmsError> {
        let (record, qmp) = {
            let mut map = lock(&self.map);
            let e = map
                .get_mut(name)
                .ok_or_else(|| VmsError::NotFound(name.to_string()))?;
            e.stopping = true;
            (e.record.clone(), e.qmp.clone())
        };
        if let Some(q) = qmp {
            let _ = tokio::time::timeout(Duration::from_secs(2), q.quit()).await;
        }
        kill_pid(record.pid, name).await;
        let mut kept = record;
        let disk = kept.config.disk_file();
        if kept.config.creates_disk() {
            // The operator's from now on: never deleted by the agent.
            kept.config.disk = disk.clone();
            kept.config.disk_size_bytes = None;
            kept.config.disk_base = None;
        }
        let saved = self.store.save_vm(&kept);
        if let Some(e) = lock(&self.map).get_mut(name) {
            if saved.is_ok() {
                e.record = kept;
            }
            e.lost = Some(reason.to_string());
            e.qmp = None;
            e.reader = None;
            e.migration = None;
            e.guest_away = false;
            e.stopping = false;
        }
        saved?;
        Ok(disk.map(|d| self.store.disk_dir().join(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::keeps_disk;

    #[test]
    fn only_a_dead_incoming_vm_whose_guest_arrived_keeps_its_disk() {
        assert!(keeps_disk(true, true));
        assert!(
            !keeps_disk(true, false),
            "aborted before the switch: nothing of its own"
        );
        assert!(!keeps_disk(false, false));
        // Alive after the switch the guard refuses the abort before any disk is touched.
        assert!(!keeps_disk(false, true));
    }
}
