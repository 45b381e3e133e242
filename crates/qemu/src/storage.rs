//! Storage pre-copy: moves a VM's local disk through QEMU's block layer alongside its memory.
//! The phases and every decision are core's [`StorageMachine`] (see
//! `drover_core::migration::storage`); this module does the I/O in their order:
//!
//! 1. destination: `nbd-server-start` on the NBD address, `block-export-add` (writable) of its
//!    empty target disk;
//! 2. source: `blockdev-add` an NBD client node for that export, `query-block` for the node
//!    the guest's device sits on (the format node, or the copy-on-read filter of a VM that
//!    arrived by a storage post-copy: see [`crate::disk::DiskRoot`]; QEMU mirrors only from
//!    that root), `blockdev-mirror` from it (sync full, the settings' copy mode,
//!    `auto-dismiss` off so the job's end can be polled);
//! 3. poll `query-block-jobs` until the mirror is READY (switching a lagging background mirror
//!    to write-blocking once, if the settings say so);
//! 4. the memory migration ([`driver::migrate`]) with `pause-before-switchover` on; beside it
//!    the source's state is polled, and at `pre-switchover` (guest stopped) the READY mirror is
//!    cancelled (its last sync leaves a point-in-time copy), dismissed once concluded, the NBD
//!    node deleted and `migrate-continue` issued;
//! 5. once the guest runs on the destination, `nbd-server-stop` there.
//!
//! Events are not used (polling only): the driver drains QEMU's event buffer for its own
//! STOP/RESUME pause measurement, and both must not consume the same events.
//!
//! Before step 1 the source is cleared of what an earlier attempt could not undo (its mirror
//! job and NBD node, left when its target was unreachable), or the run fails saying so.
//!
//! A failure at any step (a refused command, a failed or slow mirror, a memory migration that
//! fails or is cancelled) undoes what was set up, as the machine lists it: the mirror is
//! abandoned (`block-job-cancel` with force, then dismissed), the NBD node deleted, the NBD
//! server stopped. A failure at the switchover cancels the memory migration first, so the
//! guest never switches to an incomplete disk; the driver then resumes it on the source. The
//! source keeps its own disk throughout (the mirror only reads it): no failure loses the VM or
//! its data. The record's error names the step.

use crate::disk::{DiskNodes, NbdAddr};
use crate::driver::{self, DriverConfig, DriverError, Endpoints, MigrationRun};
use crate::metrics::Clock;
use crate::qmp::{BlockExt, Qmp, QmpError, QmpExt};
use drover_core::migration::{
    CleanupStep, CopyMode, MigrationPlan, MigrationStatus, MirrorLook, MirrorVerdict, StorageEvent,
    StorageMachine, StoragePhase, StorageRecord, StorageSettings, StorageStep,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// A storage pre-copy's knobs: core's settings plus the polling interval.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub settings: StorageSettings,
    /// How often the mirror job and, during the memory migration, the source's state are
    /// polled. A poll at `pre-switchover` adds up to this much to the guest's pause (it is
    /// stopped there), so keep it short.
    pub poll_interval: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            settings: StorageSettings::default(),
            poll_interval: Duration::from_millis(10),
        }
    }
}

/// What a storage pre-copy with its memory migration did.
#[derive(Debug, Clone)]
pub struct StorageRun {
    /// The memory migration; None when the storage part failed before it started.
    pub memory: Option<MigrationRun>,
    /// The storage part's record; `error` names the failed step.
    pub storage: StorageRecord,
    /// Clean-up commands that failed after a failure (empty when all went through).
    pub cleanup_errors: Vec<String>,
}

/// The disk to move and where the NBD server listens: the destination's for a storage
/// pre-copy, the source's for a post-copy.
#[derive(Debug, Clone)]
pub struct DiskTarget {
    pub disk: DiskNodes,
    pub nbd: NbdAddr,
}

type StepError = (StorageStep, String);

fn at<E: std::fmt::Display>(step: StorageStep) -> impl Fn(E) -> StepError {
    move |e| (step, e.to_string())
}

/// Runs a storage pre-copy of `target.disk` to the destination's NBD server at `target.nbd`, then the memory
/// migration of `plan` (with `pause-before-switchover` set), as the module doc describes.
///
/// # Errors
/// [`DriverError::SourceLost`] as [`driver::migrate`] returns it (after the storage clean-up);
/// every other failure is in the returned record.
pub async fn migrate_with_storage(
    ends: &Endpoints<'_>,
    target: &DiskTarget,
    mut plan: MigrationPlan,
    driver_config: &DriverConfig,
    config: &StorageConfig,
    clock: &Clock,
    cancel: Option<watch::Receiver<bool>>,
) -> Result<StorageRun, DriverError> {
    let (disk, nbd) = (&target.disk, target.nbd);
    let mut machine = StorageMachine::new(config.settings);
    if let Err(failure) = prepare(ends, disk, nbd, &mut machine, config, clock, &cancel).await {
        fail(&mut machine, failure);
        let cleanup_errors = cleanup(ends, disk, &machine, config).await;
        return Ok(StorageRun {
            memory: None,
            storage: machine.record(),
            cleanup_errors,
        });
    }
    plan.pause_before_switchover = true;
    let done = AtomicBool::new(false);
    let memory = async {
        let run = driver::migrate(ends, plan, driver_config, clock, cancel).await;
        done.store(true, Ordering::Release);
        run
    };
    let watch = switchover(ends, disk, &mut machine, config, clock, &done);
    let (run, ()) = tokio::join!(memory, watch);
    let cleanup_errors = finish(ends, disk, &mut machine, config, &run).await;
    run.map(|memory| StorageRun {
        memory: Some(memory),
        storage: machine.record(),
        cleanup_errors,
    })
}

fn fail(machine: &mut StorageMachine, (step, message): StepError) {
    tracing::warn!(step = step.name(), %message, "storage migration step failed");
    if let Err(e) = machine.handle(StorageEvent::Failed { step, message }) {
        tracing::warn!(error = %e, "storage failure not recorded");
    }
}

fn advance(
    machine: &mut StorageMachine,
    step: StorageStep,
    event: StorageEvent,
) -> Result<(), StepError> {
    machine.handle(event).map_err(at(step))
}

/// Steps 1-3: export, attach, mirror until READY.
async fn prepare(
    ends: &Endpoints<'_>,
    disk: &DiskNodes,
    nbd: NbdAddr,
    machine: &mut StorageMachine,
    config: &StorageConfig,
    clock: &Clock,
    cancel: &Option<watch::Receiver<bool>>,
) -> Result<(), StepError> {
    use StorageStep as S;
    clear_leftovers(ends.source, disk, config)
        .await
        .map_err(at(S::TargetAdd))?;
    ends.dest
        .nbd_server_start(&nbd)
        .await
        .map_err(at(S::ServerStart))?;
    advance(machine, S::ServerStart, StorageEvent::ServerStarted)?;
    ends.dest
        .export_disk(disk)
        .await
        .map_err(at(S::ExportAdd))?;
    advance(machine, S::ExportAdd, StorageEvent::Exported)?;
    ends.source
        .add_nbd_target(disk, &nbd)
        .await
        .map_err(at(S::TargetAdd))?;
    advance(machine, S::TargetAdd, StorageEvent::TargetAttached)?;
    let mode = config.settings.copy_mode;
    let root = ends
        .source
        .device_root(disk)
        .await
        .map_err(at(S::MirrorStart))?;
    ends.source
        .start_mirror(disk, root, mode)
        .await
        .map_err(at(S::MirrorStart))?;
    let started = StorageEvent::MirrorStarted {
        now_ms: clock.now_ms(),
        write_blocking: mode == CopyMode::WriteBlocking,
    };
    advance(machine, S::MirrorStart, started)?;
    wait_ready(ends.source, disk, machine, config, clock, cancel).await
}

async fn wait_ready(
    source: &dyn Qmp,
    disk: &DiskNodes,
    machine: &mut StorageMachine,
    config: &StorageConfig,
    clock: &Clock,
    cancel: &Option<watch::Receiver<bool>>,
) -> Result<(), StepError> {
    use StorageStep as S;
    loop {
        if cancel.as_ref().is_some_and(|rx| *rx.borrow()) {
            return Err((S::MirrorReady, "cancelled by request".into()));
        }
        let job = source.mirror_job(disk).await.map_err(at(S::MirrorReady))?;
        let look = MirrorLook {
            now_ms: clock.now_ms(),
            job,
        };
        advance(
            machine,
            S::MirrorReady,
            StorageEvent::MirrorLooked(look.clone()),
        )?;
        match machine.judge(&look) {
            MirrorVerdict::Ready => return Ok(()),
            MirrorVerdict::Wait => {}
            MirrorVerdict::SwitchToWriteBlocking => {
                source
                    .mirror_write_blocking(disk)
                    .await
                    .map_err(at(S::CopyModeChange))?;
                advance(
                    machine,
                    S::CopyModeChange,
                    StorageEvent::SwitchedToWriteBlocking,
                )?;
            }
            MirrorVerdict::Fail(message) => return Err((S::MirrorReady, message)),
        }
        tokio::time::sleep(config.poll_interval).await;
    }
}

/// Step 4's storage half: waits for the source's `pre-switchover` (or the memory migration's
/// end) and then ends the mirror, detaches the target and lets the migration go on. On a
/// failure there, cancels the memory migration so the guest stays on the source.
async fn switchover(
    ends: &Endpoints<'_>,
    disk: &DiskNodes,
    machine: &mut StorageMachine,
    config: &StorageConfig,
    clock: &Clock,
    memory_done: &AtomicBool,
) {
    // A source that migrated before (a failed or cancelled attempt) reports that migration's
    // end until `migrate` starts the new one: an end counts only once this one was seen going.
    let mut started = false;
    while !memory_done.load(Ordering::Acquire) {
        match ends
            .source
            .query_migrate(clock.now_ms())
            .await
            .map(|p| p.status)
        {
            Ok(Some(MigrationStatus::PreSwitchover)) => {
                if let Err(failure) = release(ends.source, disk, machine, config, clock).await {
                    fail(machine, failure);
                    if let Err(e) = ends.source.migrate_cancel().await {
                        tracing::error!(error = %e, "cannot cancel the migration after a failed storage switchover");
                    }
                }
                return;
            }
            Ok(Some(s)) if s.is_precopy() => started = true,
            Ok(Some(s)) if started && s != MigrationStatus::None => return,
            // Not started yet, pre-copy going on, or a failed look: the driver judges those.
            _ => {}
        }
        tokio::time::sleep(config.poll_interval).await;
    }
}

/// At `pre-switchover`: cancel the READY mirror, wait for its last sync, dismiss it, delete
/// the NBD node, `migrate-continue`.
async fn release(
    source: &dyn Qmp,
    disk: &DiskNodes,
    machine: &mut StorageMachine,
    config: &StorageConfig,
    clock: &Clock,
) -> Result<(), StepError> {
    use StorageStep as S;
    source
        .cancel_mirror(disk, false)
        .await
        .map_err(at(S::MirrorCancel))?;
    let reached = StorageEvent::SwitchoverReached {
        now_ms: clock.now_ms(),
    };
    advance(machine, S::MirrorCancel, reached)?;
    let look = wait_concluded(source, disk, config, clock)
        .await
        .map_err(at(S::MirrorCancel))?;
    let now_ms = look.now_ms;
    let error = look.job.as_ref().and_then(|j| j.error.clone());
    advance(machine, S::MirrorCancel, StorageEvent::MirrorLooked(look))?;
    if let Some(error) = error {
        return Err((
            S::MirrorCancel,
            format!("the mirror's last sync failed: {error}"),
        ));
    }
    advance(
        machine,
        S::MirrorCancel,
        StorageEvent::MirrorConcluded { now_ms },
    )?;
    source
        .dismiss_job(disk.mirror_job())
        .await
        .map_err(at(S::MirrorCancel))?;
    source
        .delete_nbd_target(disk)
        .await
        .map_err(at(S::TargetDelete))?;
    advance(machine, S::TargetDelete, StorageEvent::TargetDetached)?;
    source
        .migrate_continue()
        .await
        .map_err(at(S::MigrateContinue))?;
    advance(machine, S::MigrateContinue, StorageEvent::Continued)
}

/// Polls the mirror until QEMU lists it concluded, for up to the settings' cancel timeout.
async fn wait_concluded(
    source: &dyn Qmp,
    disk: &DiskNodes,
    config: &StorageConfig,
    clock: &Clock,
) -> Result<MirrorLook, String> {
    let deadline = clock.now_ms() + config.settings.cancel_timeout_ms;
    loop {
        let job = source.mirror_job(disk).await.map_err(|e| e.to_string())?;
        let now_ms = clock.now_ms();
        match &job {
            None => return Err("the mirror job vanished before it concluded".into()),
            Some(j) if j.concluded() => return Ok(MirrorLook { now_ms, job }),
            Some(j) if now_ms > deadline => {
                return Err(format!(
                    "the mirror did not conclude within {} ms (status {})",
                    config.settings.cancel_timeout_ms, j.status
                ))
            }
            Some(_) => tokio::time::sleep(config.poll_interval).await,
        }
    }
}

/// Step 5, or the clean-up: after the memory migration, stop the NBD server if the guest
/// moved with its disk, else record the failure and undo what is left.
async fn finish(
    ends: &Endpoints<'_>,
    disk: &DiskNodes,
    machine: &mut StorageMachine,
    config: &StorageConfig,
    run: &Result<MigrationRun, DriverError>,
) -> Vec<String> {
    let moved = run.as_ref().is_ok_and(|r| r.outcome.vm_on_destination);
    let continued = matches!(machine.phase(), StoragePhase::Continued { .. });
    if moved && continued {
        let _ = machine.handle(StorageEvent::MemoryMoved);
        let result = match ends.dest.nbd_server_stop().await {
            Ok(()) => machine
                .handle(StorageEvent::ServerStopped)
                .map_err(at(StorageStep::ServerStop)),
            Err(e) => Err((StorageStep::ServerStop, e.to_string())),
        };
        return match result {
            Ok(()) => vec![],
            Err(failure) => {
                let message = failure.1.clone();
                fail(machine, failure);
                vec![message]
            }
        };
    }
    if !matches!(machine.phase(), StoragePhase::Failed { .. }) {
        fail(machine, (StorageStep::Memory, memory_failure(run, moved)));
    }
    cleanup(ends, disk, machine, config).await
}

pub(crate) fn memory_failure(run: &Result<MigrationRun, DriverError>, moved: bool) -> String {
    match run {
        Err(e) => e.to_string(),
        Ok(_) if moved => {
            "the guest switched over without stopping at pre-switchover; its disk on the \
             destination may be behind"
                .into()
        }
        Ok(r) => {
            let status = format!("{:?}", r.outcome.status).to_lowercase();
            match &r.outcome.error {
                Some(e) => format!("ended {status}: {e}"),
                None => format!("ended {status}"),
            }
        }
    }
}

/// Undoes what the machine lists after a failure; returns the commands that failed.
async fn cleanup(
    ends: &Endpoints<'_>,
    disk: &DiskNodes,
    machine: &StorageMachine,
    config: &StorageConfig,
) -> Vec<String> {
    let mut errors = Vec::new();
    for step in machine.cleanup() {
        let result = match step {
            CleanupStep::CancelMirror => abandon_mirror(ends.source, disk, config).await,
            CleanupStep::DeleteTarget => ends
                .source
                .delete_nbd_target(disk)
                .await
                .map_err(|e| e.to_string()),
            // An incoming QEMU exits when its migration fails or is cancelled: a QMP
            // connection that closed leaves no server to stop.
            CleanupStep::StopServer => match ends.dest.nbd_server_stop().await {
                Err(QmpError::Closed) => Ok(()),
                other => other.map_err(|e| e.to_string()),
            },
        };
        if let Err(e) = result {
            tracing::warn!(step = ?step, error = %e, "storage clean-up step failed");
            errors.push(format!("{step:?}: {e}"));
        }
    }
    errors
}

/// Removes what an earlier storage pre-copy of this VM could not: its mirror job and NBD
/// client node. A mirror whose target became unreachable (a cut link) has a write in flight
/// that neither a forced cancel nor `blockdev-del` can end until TCP gives up or the link
/// returns, so that attempt's clean-up ran out of time and left both; the node's fixed name
/// would make this attempt's `blockdev-add` fail as a duplicate, and the VM could never be
/// moved again. Runs before anything is set up, so its failure leaves nothing to undo.
///
/// # Errors
/// The old mirror still would not conclude within the cancel timeout, or QEMU refused to
/// delete the old node: the message says so and that its target may be unreachable.
async fn clear_leftovers(
    source: &dyn Qmp,
    disk: &DiskNodes,
    config: &StorageConfig,
) -> Result<(), String> {
    let stuck = |e: String| {
        format!(
            "an earlier storage migration of this VM left its mirror and NBD node, and they \
             could not be removed ({e}); their target may still be unreachable: try again \
             once the link to it is back"
        )
    };
    if source
        .mirror_job(disk)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        tracing::warn!("an earlier storage migration left its mirror job: abandoning it");
        abandon_mirror(source, disk, config).await.map_err(stuck)?;
    }
    if source
        .has_nbd_target(disk)
        .await
        .map_err(|e| e.to_string())?
    {
        tracing::warn!("an earlier storage migration left its NBD node: deleting it");
        source
            .delete_nbd_target(disk)
            .await
            .map_err(|e| stuck(e.to_string()))?;
    }
    Ok(())
}

/// Force-cancels the mirror if it still runs, waits for it to conclude, dismisses it.
async fn abandon_mirror(
    source: &dyn Qmp,
    disk: &DiskNodes,
    config: &StorageConfig,
) -> Result<(), String> {
    let clock = Clock::default();
    match source.mirror_job(disk).await.map_err(|e| e.to_string())? {
        None => return Ok(()),
        Some(j) if !j.concluded() => source
            .cancel_mirror(disk, true)
            .await
            .map_err(|e| e.to_string())?,
        Some(_) => {}
    }
    wait_concluded(source, disk, config, &clock).await?;
    source
        .dismiss_job(disk.mirror_job())
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
