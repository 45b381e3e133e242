//! Hybrid storage migration: the hot set of the disk pushed ahead in rounds, a freeze at the
//! switchover, the rest pulled afterwards. The phases and decisions are core's
//! [`HybridMachine`] (push) and the post-copy machine (pull), see
//! `drover_core::migration::storage_hybrid`; this module does the I/O, reusing
//! [`PostcopySession`] for the source's export, the memory migration and the stream:
//!
//! 1. [`HybridSession::export`]: as [`PostcopySession::export`] (source `nbd-server-start`,
//!    `block-export-add` read-only with `allow-inactive`);
//! 2. the caller launches the destination on an empty overlay backed by that export
//!    ([`DiskSpec::Overlay`](crate::disk::DiskSpec) with [`HybridSession::backing`]);
//! 3. [`HybridSession::migrate`]:
//!    - destination: `nbd-server-start` on its own address, `block-export-add` of the
//!      overlay's format node, writable;
//!    - the hot set's bitmap: a scratch qcow2 of the disk's virtual size (in the caller's
//!      directory) gets a persistent bitmap (`qemu-img bitmap --add --granularity G`) and a
//!      zero write over each hot range (`qemu-io -c "write -z OFF LEN"`: the write marks the
//!      bitmap, which is stored on close); source: `blockdev-add` of the scratch, read-only,
//!      `block-dirty-bitmap-add` of the hot bitmap on the disk's node (disabled, same
//!      granularity), `block-dirty-bitmap-merge` of the scratch's into it, `blockdev-del` of
//!      the scratch, its file deleted (QMP has no command that sets chosen bits);
//!    - source: `block-dirty-bitmap-add` of the tracking bitmap (enabled: guest writes from
//!      now on), `blockdev-add` of an NBD client node for the destination's export;
//!    - round 0: `blockdev-backup` sync `bitmap` of the hot bitmap, bitmap-mode `never`,
//!      `auto-dismiss` off, polled with `query-block-jobs`, dismissed; the hot bitmap removed;
//!      rounds: the same with the tracking bitmap and bitmap-mode `on-success` while its
//!      count (`query-named-block-nodes`) is at or above the threshold and rounds are left;
//!    - the mirror of new writes: `blockdev-mirror` `sync: none` from the device's root
//!      (the same job id, `granularity` 4 KiB, `auto-dismiss` off, the push's `speed`) into
//!      the NBD node, then
//!      `block-dirty-bitmap-disable` of the tracking bitmap;
//!    - the memory migration through [`PostcopySession::migrate`] with
//!      `pause-before-switchover`; beside it the source's state is polled and at
//!      `pre-switchover` (guest stopped) the freeze: the mirror, READY, cancelled for its last
//!      sync and dismissed once concluded, a last backup of the (disabled) tracking bitmap,
//!      dismissed, the NBD node deleted, the tracking bitmap removed, the destination's NBD
//!      server stopped (nothing but the migration touches the overlay from then on),
//!      `migrate-continue`;
//!    - after the switchover the post-copy session goes on as in a storage post-copy (source
//!      `blockdev-set-active`, destination `block-stream`, source `nbd-server-stop`).
//!
//! Failures before the switchover roll back (the push's set-up undone as the machine lists
//! it, the source's export stopped, a migration stopped at `pre-switchover` cancelled so the
//! guest resumes on the source with its own disk; the destination is the caller's to
//! discard). After it, as a post-copy: nothing undone, [`PostcopyOutcome::Stalled`] or
//! [`PostcopyOutcome::MemoryPaused`] resumed by [`HybridSession::resume`].

use crate::disk::{check_image_path, create_qcow2, DiskNodes, NbdAddr, NbdBacking, QEMU_IMG};
use crate::driver::{DriverConfig, DriverError, Endpoints};
use crate::img::qemu_img;
use crate::metrics::Clock;
use crate::qmp::bitmap::{
    abandon_job, add_bitmap, bitmap_count, file_size, named_node, parse_bitmap_count, push_job,
    remove_bitmap,
};
use crate::qmp::{BlockExt, Qmp, QmpError, QmpExt};
use crate::storage::{memory_failure, DiskTarget};
use crate::storage_postcopy::{PostcopyConfig, PostcopyRun, PostcopySession};
use drover_core::migration::PostcopyPhase;
use drover_core::migration::{
    mirror_ready_for_freeze, HotSet, HybridCleanup, HybridEvent, HybridMachine, HybridPhase,
    HybridSettings, HybridStep, MigrationPlan, MigrationStatus, PostcopyOutcome, PushVerdict,
    RoundVerdict, StorageRecord,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// A hybrid's knobs: core's push settings, the post-copy half's config, the push's polling.
#[derive(Debug, Clone)]
pub struct HybridConfig {
    pub settings: HybridSettings,
    pub postcopy: PostcopyConfig,
    /// How often push jobs and, during the memory migration, the source's state are polled.
    /// A poll at `pre-switchover` adds up to this much to the guest's pause: keep it short.
    pub poll_interval: Duration,
}

impl Default for HybridConfig {
    fn default() -> Self {
        HybridConfig {
            settings: HybridSettings::default(),
            postcopy: PostcopyConfig::default(),
            poll_interval: Duration::from_millis(10),
        }
    }
}

/// The disk and both NBD servers: the source's (the overlay's backing) and the
/// destination's (its writable overlay, which the push writes).
#[derive(Debug, Clone)]
pub struct HybridTarget {
    pub disk: DiskNodes,
    pub source_nbd: NbdAddr,
    pub dest_nbd: NbdAddr,
}

/// Where a hybrid stands after one of [`HybridSession`]'s calls: the post-copy's run, its
/// record of both halves ([`StorageMode::Hybrid`](drover_core::migration::StorageMode): the
/// push's figures and the stream's; `error` names a failed step or the stall).
pub type HybridRun = PostcopyRun;

/// The block-layer names the push adds beside [`DiskNodes`]' (all derived from the disk's
/// format node name, never from a peer).
#[derive(Debug, Clone)]
struct PushNames {
    hot: String,
    dirty: String,
    scratch: String,
    job: String,
}

impl PushNames {
    fn of(disk: &DiskNodes) -> Self {
        let base = disk.format_node();
        PushNames {
            hot: format!("{base}-hot"),
            dirty: format!("{base}-dirty"),
            scratch: format!("{base}-hotset"),
            job: format!("{base}-push"),
        }
    }
}

type StepError = (HybridStep, String);

fn at<E: std::fmt::Display>(step: HybridStep) -> impl Fn(E) -> StepError {
    move |e| (step, e.to_string())
}

/// One disk's hybrid storage migration.
#[derive(Debug)]
pub struct HybridSession {
    pull: PostcopySession,
    machine: HybridMachine,
    disk: DiskNodes,
    dest_nbd: NbdAddr,
    names: PushNames,
    config: HybridConfig,
    /// The overlay's file size at the switchover, bytes (for the pulled figure).
    switchover_size: Option<u64>,
}

impl HybridSession {
    /// Step 1: the source's read-only export (see the module doc).
    ///
    /// # Errors
    /// The run ([`PostcopyOutcome::RolledBack`]) when a setting is out of its limits or a
    /// command failed; what was set up is undone.
    pub async fn export(
        source: &dyn Qmp,
        target: &HybridTarget,
        config: HybridConfig,
    ) -> Result<Self, Box<HybridRun>> {
        let mut machine = HybridMachine::new(config.settings);
        if let Err(e) = config.settings.validate() {
            let step = HybridStep::Settings;
            machine
                .handle(HybridEvent::Failed {
                    step,
                    message: e.to_string(),
                })
                .ok();
            return Err(Box::new(PostcopyRun {
                memory: None,
                storage: machine.record(&StorageRecord::default()),
                outcome: PostcopyOutcome::RolledBack,
                dest_guest: None,
                errors: vec![],
            }));
        }
        let post_target = DiskTarget {
            disk: target.disk.clone(),
            nbd: target.source_nbd,
        };
        let pull = PostcopySession::export(source, &post_target, config.postcopy.clone())
            .await
            .map_err(|run| Box::new(hybrid_run(&machine, *run)))?;
        Ok(HybridSession {
            pull,
            machine,
            disk: target.disk.clone(),
            dest_nbd: target.dest_nbd,
            names: PushNames::of(&target.disk),
            config,
            switchover_size: None,
        })
    }

    /// What the destination's launch needs to read the source's export.
    pub fn backing(&self) -> NbdBacking {
        self.pull.backing()
    }

    /// Sets the destination's NBD address the push writes to, when it is known only after
    /// step 1 (an agent learns it from the destination it launched on the export). Only
    /// before [`HybridSession::migrate`]: later it changes nothing that matters.
    pub fn set_dest_nbd(&mut self, dest_nbd: NbdAddr) {
        self.dest_nbd = dest_nbd;
    }

    pub fn phase(&self) -> &HybridPhase {
        self.machine.phase()
    }

    /// Where the pull half stands (a stalled stream is [`PostcopyPhase::Stalled`]).
    pub fn pull_phase(&self) -> &PostcopyPhase {
        self.pull.phase()
    }

    /// The destination could not be launched: undo step 1.
    pub async fn abandon(mut self, source: &dyn Qmp, reason: &str) -> HybridRun {
        let run = self.pull.roll_back(source, reason).await;
        hybrid_run(&self.machine, run)
    }

    /// Step 3: push the hot set (`hot`, on the disk's virtual size; its scratch image made
    /// in `scratch_dir`, Drover's own directory), migrate the memory of `plan` with the
    /// freeze at its switchover, then pull the rest (see the module doc).
    ///
    /// # Errors
    /// [`DriverError::SourceLost`] as the memory migration returns it (after the clean-up:
    /// the guest stayed on the source); every other failure is in the returned run.
    #[allow(clippy::too_many_arguments)]
    pub async fn migrate(
        &mut self,
        ends: &Endpoints<'_>,
        hot: &HotSet,
        scratch_dir: &Path,
        mut plan: MigrationPlan,
        driver_config: &DriverConfig,
        clock: &Clock,
        cancel: Option<watch::Receiver<bool>>,
    ) -> Result<HybridRun, DriverError> {
        if self.machine.phase() != &HybridPhase::Idle {
            // A second call (a misuse): nothing is started or undone.
            let misuse = format!("migrate called in phase '{}'", self.machine.phase().name());
            return Ok(hybrid_run(&self.machine, self.pull_run(misuse)));
        }
        if let Err(failure) = self.push(ends, hot, scratch_dir, clock, &cancel).await {
            self.fail(failure.clone());
            let mut errors = self.cleanup(ends).await;
            let mut run = self.pull.roll_back(ends.source, &failure.1).await;
            errors.append(&mut run.errors);
            run.errors = errors;
            return Ok(hybrid_run(&self.machine, run));
        }
        if let Err(failure) = self.advance(HybridStep::Memory, HybridEvent::MemoryStarted) {
            return Ok(hybrid_run(&self.machine, self.pull_run(failure.1)));
        }
        plan.pause_before_switchover = true;
        let done = AtomicBool::new(false);
        let HybridSession {
            pull,
            machine,
            disk,
            names,
            config,
            switchover_size,
            ..
        } = self;
        let memory = async {
            let run = pull.migrate(ends, plan, driver_config, clock, cancel).await;
            done.store(true, Ordering::Release);
            run
        };
        let pusher = Pusher {
            ends,
            disk,
            names,
            config,
            clock,
        };
        let watch = pusher.at_switchover(machine, &done);
        let (run, size) = tokio::join!(memory, watch);
        *switchover_size = size;
        self.after_memory(ends, run).await
    }

    /// Goes on after [`PostcopyOutcome::Stalled`] or [`PostcopyOutcome::MemoryPaused`]
    /// ([`PostcopySession::resume`]); in any other phase only reports where things stand.
    pub async fn resume(&mut self, ends: &Endpoints<'_>, clock: &Clock) -> HybridRun {
        let run = self.pull.resume(ends, clock).await;
        let run = self.pulled(ends.dest, run).await;
        hybrid_run(&self.machine, run)
    }

    /// Records how the memory migration ended: moved (the pull half has run), or rolled
    /// back (the push's set-up undone).
    async fn after_memory(
        &mut self,
        ends: &Endpoints<'_>,
        run: Result<PostcopyRun, DriverError>,
    ) -> Result<HybridRun, DriverError> {
        let moved = matches!(&run, Ok(r) if r.outcome != PostcopyOutcome::RolledBack);
        if moved && matches!(self.machine.phase(), HybridPhase::Released) {
            self.advance(HybridStep::Memory, HybridEvent::MemoryMoved)
                .ok();
        } else if !matches!(self.machine.phase(), HybridPhase::Failed { .. }) {
            let memory = run.as_ref().map(|r| r.memory.clone());
            let message = match &memory {
                Ok(Some(m)) => memory_failure(&Ok(m.clone()), moved),
                Ok(None) => "the memory migration did not run".into(),
                Err(e) => e.to_string(),
            };
            self.fail((HybridStep::Memory, message));
        }
        let cleanup_errors = self.cleanup(ends).await;
        let mut run = run?;
        run.errors.extend(cleanup_errors);
        let run = self.pulled(ends.dest, run).await;
        Ok(hybrid_run(&self.machine, run))
    }

    /// Sets the pulled figure once the stream completed: the overlay's growth since the
    /// switchover.
    async fn pulled(&self, dest: &dyn Qmp, mut run: PostcopyRun) -> PostcopyRun {
        if run.outcome == PostcopyOutcome::Completed {
            if let (Some(before), Ok(after)) = (
                self.switchover_size,
                file_size(dest, self.disk.format_node()).await,
            ) {
                run.storage.pulled_bytes = Some(after.saturating_sub(before));
            }
        }
        run
    }

    /// The push: the destination's export, both bitmaps, the target, round 0, the rounds and
    /// the mirror of new writes.
    async fn push(
        &mut self,
        ends: &Endpoints<'_>,
        hot: &HotSet,
        scratch_dir: &Path,
        clock: &Clock,
        cancel: &Option<watch::Receiver<bool>>,
    ) -> Result<(), StepError> {
        use HybridStep as S;
        ends.dest
            .nbd_server_start(&self.dest_nbd)
            .await
            .map_err(at(S::DestServerStart))?;
        self.advance(S::DestServerStart, HybridEvent::DestServerStarted)?;
        ends.dest
            .export_disk(&self.disk)
            .await
            .map_err(at(S::DestExportAdd))?;
        self.advance(S::DestExportAdd, HybridEvent::DestExported)?;
        let hot_bytes = self
            .mark_hot(ends.source, hot, scratch_dir)
            .await
            .map_err(at(S::HotBitmap))?;
        self.advance(S::HotBitmap, HybridEvent::HotBitmapBuilt { hot_bytes })?;
        let node = &self.disk.format_node().to_string();
        add_bitmap(ends.source, node, &self.names.dirty, None, false)
            .await
            .map_err(at(S::TrackingStart))?;
        self.advance(S::TrackingStart, HybridEvent::TrackingStarted)?;
        ends.source
            .add_nbd_target(&self.disk, &self.dest_nbd)
            .await
            .map_err(at(S::TargetAdd))?;
        self.advance(S::TargetAdd, HybridEvent::TargetAttached)?;
        let pusher = Pusher {
            ends,
            disk: &self.disk,
            names: &self.names,
            config: &self.config,
            clock,
        };
        let hot_name = self.names.hot.clone();
        pusher
            .copy(&mut self.machine, &hot_name, "never", cancel)
            .await?;
        remove_bitmap(ends.source, node, &hot_name)
            .await
            .map_err(at(S::Push))?;
        loop {
            let dirty = bitmap_count(ends.source, node, &self.names.dirty)
                .await
                .map_err(at(S::Push))?;
            if self.machine.next_round(dirty) == RoundVerdict::Enough {
                return pusher.start_mirror(&mut self.machine).await;
            }
            let dirty_name = self.names.dirty.clone();
            pusher
                .copy(&mut self.machine, &dirty_name, "on-success", cancel)
                .await?;
        }
    }

    /// Builds the hot bitmap on the source's disk node from a scratch image (see the module
    /// doc); returns its count, bytes. The scratch node and file go whatever happens.
    async fn mark_hot(
        &self,
        source: &dyn Qmp,
        hot: &HotSet,
        scratch_dir: &Path,
    ) -> Result<u64, String> {
        let path = scratch_dir.join(format!("{}.qcow2", self.names.scratch));
        check_image_path(&path).map_err(|e| e.to_string())?;
        // A leftover of an earlier run of this disk's hybrid (the name is the session's).
        remove_file(&path)?;
        let built = self.merge_scratch(source, hot, &path).await;
        let removed = remove_file(&path);
        let count = built?;
        removed.map(|()| count)
    }

    async fn merge_scratch(
        &self,
        source: &dyn Qmp,
        hot: &HotSet,
        path: &Path,
    ) -> Result<u64, String> {
        write_scratch(path, hot).await?;
        let node = self.disk.format_node();
        let args = json!({
            "driver": "qcow2",
            "node-name": self.names.scratch,
            "read-only": true,
            "file": {"driver": "file", "filename": path.display().to_string()},
        });
        source
            .execute("blockdev-add", Some(args))
            .await
            .map_err(|e| e.to_string())?;
        let merged = async {
            let g = hot.granularity_bytes();
            add_bitmap(source, node, &self.names.hot, Some(g), true).await?;
            let args = json!({
                "node": node,
                "target": self.names.hot,
                "bitmaps": [{"node": self.names.scratch, "name": SCRATCH_BITMAP}],
            });
            source
                .execute("block-dirty-bitmap-merge", Some(args))
                .await?;
            bitmap_count(source, node, &self.names.hot).await
        }
        .await;
        let deleted = source
            .execute(
                "blockdev-del",
                Some(json!({"node-name": self.names.scratch})),
            )
            .await;
        let count = merged.map_err(|e| e.to_string())?;
        deleted.map_err(|e| e.to_string())?;
        Ok(count)
    }

    fn pull_run(&self, message: String) -> PostcopyRun {
        PostcopyRun {
            memory: None,
            storage: StorageRecord::default(),
            outcome: PostcopyOutcome::Held,
            dest_guest: None,
            errors: vec![message],
        }
    }

    fn advance(&mut self, step: HybridStep, event: HybridEvent) -> Result<(), StepError> {
        self.machine.handle(event).map_err(at(step))
    }

    fn fail(&mut self, failure: StepError) {
        fail(&mut self.machine, failure);
    }

    /// Undoes what the machine lists after a failure; returns the commands that failed.
    async fn cleanup(&self, ends: &Endpoints<'_>) -> Vec<String> {
        let node = self.disk.format_node();
        let mut errors = Vec::new();
        for step in self.machine.cleanup() {
            let result = match step {
                HybridCleanup::CancelPush => abandon_job(ends.source, &self.names.job).await,
                HybridCleanup::DeleteTarget => ends.source.delete_nbd_target(&self.disk).await,
                HybridCleanup::DropBitmaps => {
                    // Either may be gone already (the hot one after round 0).
                    for name in [&self.names.hot, &self.names.dirty] {
                        if let Err(e) = remove_bitmap(ends.source, node, name).await {
                            tracing::info!(error = %e, bitmap = %name, "bitmap not removed");
                        }
                    }
                    Ok(())
                }
                // An incoming QEMU exits when its migration fails: nothing left to stop.
                HybridCleanup::StopDestServer => match ends.dest.nbd_server_stop().await {
                    Err(QmpError::Closed) => Ok(()),
                    other => other,
                },
            };
            if let Err(e) = result {
                tracing::warn!(step = ?step, error = %e, "storage hybrid clean-up failed");
                errors.push(format!("{step:?}: {e}"));
            }
        }
        errors
    }
}

/// Removes what an earlier hybrid of `disk` left on the source (an agent that died, or a
/// clean-up that failed): its push job, its NBD client node toward an old destination, its
/// hot and tracking bitmaps. Call it before [`HybridSession::export`]. Returns what was
/// removed, for the record's notes.
///
/// # Errors
/// A leftover that could not be removed (its target may be unreachable: the message says
/// to try again later); nothing new was started.
pub async fn clear_leftovers(source: &dyn Qmp, disk: &DiskNodes) -> Result<Vec<String>, String> {
    let names = PushNames::of(disk);
    let stuck = |what: &str, e: QmpError| {
        format!(
            "an earlier storage hybrid of this VM left its {what}, which could not be removed \
             ({e}); try again once the link to its old destination is back"
        )
    };
    let mut removed = Vec::new();
    if push_job(source, &names.job)
        .await
        .map_err(|e| stuck("push job", e))?
        .is_some()
    {
        abandon_job(source, &names.job)
            .await
            .map_err(|e| stuck("push job", e))?;
        removed.push(format!("push job {}", names.job));
    }
    if source
        .has_nbd_target(disk)
        .await
        .map_err(|e| stuck("NBD node", e))?
    {
        source
            .delete_nbd_target(disk)
            .await
            .map_err(|e| stuck("NBD node", e))?;
        removed.push(format!("NBD node {}", disk.target_node()));
    }
    let node = disk.format_node();
    let present = named_node(source, node)
        .await
        .map_err(|e| stuck("bitmaps", e))?;
    for name in [&names.hot, &names.dirty] {
        if parse_bitmap_count(&present, name).is_ok() {
            remove_bitmap(source, node, name)
                .await
                .map_err(|e| stuck("bitmaps", e))?;
            removed.push(format!("dirty bitmap {name}"));
        }
    }
    Ok(removed)
}

/// The bitmap `qemu-img bitmap --add` creates in the scratch image.
const SCRATCH_BITMAP: &str = "hot";

/// The `qemu-io` on `PATH` (installed with `qemu-img`).
const QEMU_IO: &str = "qemu-io";

/// Creates the scratch image at `path` with a persistent bitmap of `hot`'s granularity and
/// marks every hot range in it by a zero write.
async fn write_scratch(path: &Path, hot: &HotSet) -> Result<(), String> {
    create_qcow2(path, hot.virtual_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let name = path.display().to_string();
    let granularity = hot.granularity_bytes().to_string();
    let add = ["bitmap", "--add", "--granularity", &granularity];
    let mut args: Vec<std::ffi::OsString> = add.iter().map(Into::into).collect();
    args.push(path.into());
    args.push(SCRATCH_BITMAP.into());
    qemu_img(Path::new(QEMU_IMG), "bitmap --add", &name, args)
        .await
        .map_err(|e| e.to_string())?;
    if hot.ranges().is_empty() {
        return Ok(());
    }
    let mut args: Vec<std::ffi::OsString> = vec!["-f".into(), "qcow2".into()];
    for r in hot.ranges() {
        args.push("-c".into());
        args.push(format!("write -z {} {}", r.offset, r.len).into());
    }
    args.push(path.into());
    qemu_img(Path::new(QEMU_IO), "qemu-io (hot-set marks)", &name, args)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn remove_file(path: &PathBuf) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("scratch image {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

fn fail(machine: &mut HybridMachine, (step, message): StepError) {
    tracing::warn!(step = step.name(), %message, "storage hybrid step failed");
    if let Err(e) = machine.handle(HybridEvent::Failed { step, message }) {
        tracing::warn!(error = %e, "storage hybrid failure not recorded");
    }
}

/// The run of both halves: the pull half's outcome (a push failure rolled it back too),
/// the record of both.
fn hybrid_run(machine: &HybridMachine, run: PostcopyRun) -> HybridRun {
    PostcopyRun {
        storage: machine.record(&run.storage),
        ..run
    }
}

mod push;
use push::Pusher;

#[cfg(test)]
#[path = "storage_hybrid_tests.rs"]
mod tests;
