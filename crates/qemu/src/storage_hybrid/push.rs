//! The hybrid's copies into the destination's overlay (push rounds, the mirror of new
//! writes) and the freeze at the switchover; the session in the parent module drives them.

use super::*;

/// The mirror of new writes' granularity, bytes: a guest block. QEMU's default is the
/// target's cluster (64 KiB), so each 4 KiB write would cross the WAN as 64 KiB: a guest
/// writing 100 random blocks a second then sent 6.4 MB/s beside the memory migration, which
/// no longer converged on a 12.5 MB/s link (BENCHMARKS.md).
const MIRROR_GRANULARITY: u64 = 4096;

/// The copies into the destination's overlay, and the freeze at the switchover.
pub(super) struct Pusher<'a, 'e> {
    pub(super) ends: &'a Endpoints<'e>,
    pub(super) disk: &'a DiskNodes,
    pub(super) names: &'a PushNames,
    pub(super) config: &'a HybridConfig,
    pub(super) clock: &'a Clock,
}

impl Pusher<'_, '_> {
    /// One push round: `blockdev-backup` of `bitmap` with `mode`, waited for, dismissed.
    pub(super) async fn copy(
        &self,
        machine: &mut HybridMachine,
        bitmap: &str,
        mode: &str,
        cancel: &Option<watch::Receiver<bool>>,
    ) -> Result<(), StepError> {
        let step = HybridStep::Push;
        self.start_backup(step, bitmap, mode).await?;
        let now_ms = self.clock.now_ms();
        machine
            .handle(HybridEvent::PushStarted { now_ms })
            .map_err(at(step))?;
        let bytes = self.wait_job(machine, step, cancel).await?;
        machine
            .handle(HybridEvent::PushConcluded { bytes })
            .map_err(at(step))
    }

    /// `blockdev-backup` of `bitmap` with `mode` into the target, the push's `speed` unless it
    /// is the freeze's (the guest is stopped then).
    async fn start_backup(
        &self,
        step: HybridStep,
        bitmap: &str,
        mode: &str,
    ) -> Result<(), StepError> {
        let mut args = json!({
            "job-id": self.names.job,
            "device": self.disk.format_node(),
            "target": self.disk.target_node(),
            "sync": "bitmap",
            "bitmap": bitmap,
            "bitmap-mode": mode,
            "auto-dismiss": false,
        });
        let speed = self.config.settings.push_speed_bps;
        if let (Some(bps), false) = (speed, step == HybridStep::Freeze) {
            args["speed"] = json!(bps);
        }
        self.ends
            .source
            .execute("blockdev-backup", Some(args))
            .await
            .map(|_| ())
            .map_err(at(step))
    }

    /// Waits for the job to conclude as the machine judges it (its phase sets the bound),
    /// dismisses it, and returns the bytes it copied (its `len`).
    async fn wait_job(
        &self,
        machine: &HybridMachine,
        step: HybridStep,
        cancel: &Option<watch::Receiver<bool>>,
    ) -> Result<u64, StepError> {
        let source = self.ends.source;
        loop {
            if cancel.as_ref().is_some_and(|rx| *rx.borrow()) {
                return Err((step, "cancelled by request".into()));
            }
            let job = push_job(source, &self.names.job).await.map_err(at(step))?;
            match machine.judge(job.as_ref(), self.clock.now_ms()) {
                PushVerdict::Wait => tokio::time::sleep(self.config.poll_interval).await,
                PushVerdict::Fail(message) => return Err((step, message)),
                PushVerdict::Concluded { bytes } => {
                    source
                        .dismiss_job(&self.names.job)
                        .await
                        .map_err(at(step))?;
                    return Ok(bytes);
                }
            }
        }
    }

    /// The mirror of new writes (see the module doc): started from the device's root, then
    /// the tracking bitmap disabled. Writes made between the two are in both (harmless: each
    /// copy is of the block's contents at its time, the later one last).
    pub(super) async fn start_mirror(&self, machine: &mut HybridMachine) -> Result<(), StepError> {
        let step = HybridStep::Mirror;
        let source = self.ends.source;
        let root = source.device_root(self.disk).await.map_err(at(step))?;
        let mut args = json!({
            "job-id": self.names.job,
            "device": self.disk.root_node(root),
            "target": self.disk.target_node(),
            "sync": "none",
            "granularity": MIRROR_GRANULARITY,
            "auto-dismiss": false,
        });
        if let Some(bps) = self.config.settings.push_speed_bps {
            args["speed"] = json!(bps);
        }
        source
            .execute("blockdev-mirror", Some(args))
            .await
            .map_err(at(step))?;
        machine
            .handle(HybridEvent::MirrorStarted)
            .map_err(at(step))?;
        let disable = json!({"node": self.disk.format_node(), "name": self.names.dirty});
        source
            .execute("block-dirty-bitmap-disable", Some(disable))
            .await
            .map(|_| ())
            .map_err(at(step))
    }

    /// At the freeze: the READY mirror cancelled for its last sync, waited for, dismissed;
    /// returns the bytes it processed.
    async fn finish_mirror(&self, machine: &HybridMachine) -> Result<u64, StepError> {
        let step = HybridStep::Freeze;
        let source = self.ends.source;
        let job = push_job(source, &self.names.job).await.map_err(at(step))?;
        mirror_ready_for_freeze(job.as_ref()).map_err(|m| (step, m))?;
        let args = json!({"device": self.names.job, "force": false});
        source
            .execute("block-job-cancel", Some(args))
            .await
            .map_err(at(step))?;
        self.wait_job(machine, step, &None).await
    }

    /// Beside the memory migration: at the source's `pre-switchover`, the freeze and the
    /// release; a failure there cancels the migration (the guest resumes on the source).
    /// Returns the overlay's file size right after the release, bytes.
    pub(super) async fn at_switchover(
        &self,
        machine: &mut HybridMachine,
        done: &AtomicBool,
    ) -> Option<u64> {
        if !wait_pre_switchover(
            self.ends.source,
            self.clock,
            self.config.poll_interval,
            done,
        )
        .await
        {
            return None;
        }
        match self.freeze(machine).await {
            Ok(()) => file_size(self.ends.dest, self.disk.format_node())
                .await
                .ok(),
            Err(failure) => {
                fail(machine, failure);
                if let Err(e) = self.ends.source.migrate_cancel().await {
                    tracing::error!(error = %e, "cannot cancel the migration after a failed freeze");
                }
                None
            }
        }
    }

    async fn freeze(&self, machine: &mut HybridMachine) -> Result<(), StepError> {
        use HybridStep as S;
        let source = self.ends.source;
        let now_ms = self.clock.now_ms();
        machine
            .handle(HybridEvent::FreezeStarted { now_ms })
            .map_err(at(S::Freeze))?;
        let mirrored = self.finish_mirror(machine).await?;
        self.start_backup(S::Freeze, &self.names.dirty, "on-success")
            .await?;
        let copied = self.wait_job(machine, S::Freeze, &None).await?;
        let now_ms = self.clock.now_ms();
        machine
            .handle(HybridEvent::FreezeConcluded {
                now_ms,
                bytes: mirrored + copied,
            })
            .map_err(at(S::Freeze))?;
        source
            .delete_nbd_target(self.disk)
            .await
            .map_err(at(S::Release))?;
        remove_bitmap(source, self.disk.format_node(), &self.names.dirty)
            .await
            .map_err(at(S::Release))?;
        self.ends
            .dest
            .nbd_server_stop()
            .await
            .map_err(at(S::Release))?;
        source.migrate_continue().await.map_err(at(S::Release))?;
        machine
            .handle(HybridEvent::Released)
            .map_err(at(S::Release))
    }
}

/// Polls the source's migration until `pre-switchover` (true) or its end, or `done` (the
/// memory migration returned) (false). A source that migrated before reports that
/// migration's end until the new one starts: an end counts only once this one was seen.
async fn wait_pre_switchover(
    source: &dyn Qmp,
    clock: &Clock,
    poll: Duration,
    done: &AtomicBool,
) -> bool {
    let mut started = false;
    while !done.load(Ordering::Acquire) {
        match source.query_migrate(clock.now_ms()).await.map(|p| p.status) {
            Ok(Some(MigrationStatus::PreSwitchover)) => return true,
            Ok(Some(s)) if s.is_precopy() => started = true,
            Ok(Some(s)) if started && s != MigrationStatus::None => return false,
            _ => {}
        }
        tokio::time::sleep(poll).await;
    }
    false
}
