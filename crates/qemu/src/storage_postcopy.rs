//! Storage post-copy: the destination runs on an overlay of the source's disk from the
//! switchover on and pulls the disk afterwards. The phases and every decision are core's
//! [`PostcopyMachine`] (see `drover_core::migration::storage_postcopy`); this module does the
//! I/O in their order, in three calls because the caller launches the destination between
//! the first two:
//!
//! 1. [`PostcopySession::export`], source: `nbd-server-start` on its NBD address,
//!    `block-export-add` of its disk's format node, read-only, `allow-inactive`;
//! 2. the caller creates an empty overlay of the disk's virtual size
//!    ([`crate::disk::create_qcow2`]) and launches the destination on
//!    [`DiskSpec::Overlay`](crate::disk::DiskSpec) with [`PostcopySession::backing`] (or, if
//!    it cannot, calls [`PostcopySession::abandon`]);
//! 3. [`PostcopySession::migrate`]: the memory migration ([`driver::migrate`], pre-copy or
//!    post-copy of memory); once it completed with the guest running on the destination,
//!    `blockdev-set-active` of the source's disk (QEMU's NBD server answers only reads on an
//!    inactive node, and the stream asks block status; the source's guest stays stopped),
//!    `cont` of a destination guest that a read paused meanwhile (`io-error`: a copy-on-read
//!    of a block not yet local asks the inactive export for block status and fails),
//!    `block-stream` on the destination (`on-error: stop`, `auto-dismiss` off), `query-block-jobs` polled
//!    until it concluded, the job dismissed, a guest a failed read paused continued, and
//!    `nbd-server-stop` on the source. The source QEMU is the caller's to tear down after
//!    [`PostcopyOutcome::Completed`], never before; its disk file is never touched here.
//!
//! The stream starts once the memory migration completed (with memory post-copy, once every
//! page arrived), so the two never compete for the link; until then guest reads of blocks not
//! in the overlay are served on demand through the copy-on-read filter. Polling only, as in
//! [`crate::storage`]: the driver drains QEMU's events for its own pause measurement.
//!
//! Failures. Before the switchover a failure stops the source's NBD server (which removes the
//! export) and ends [`PostcopyOutcome::RolledBack`]: the guest runs on the source with its own
//! disk, and the destination QEMU (whose overlay holds nothing the source lacks) is the
//! caller's to discard. From the switchover on nothing is undone: a stream that pauses on an
//! I/O error (the source's export gone) or stops making progress ends
//! [`PostcopyOutcome::Stalled`] with the destination guest's state (`io-error` when a read it
//! could not get paused it: report the VM paused, not lost); [`PostcopySession::resume`]
//! re-exports the disk on the source if its export is gone, resumes the job, continues a
//! guest paused on an I/O error, and watches the stream again. A memory post-copy that ended
//! paused ends [`PostcopyOutcome::MemoryPaused`]; once the memory is recovered,
//! [`PostcopySession::resume`] continues a destination guest that a failed read stopped during
//! the cut (`io-error`, after re-exporting the disk if the source lost its export) and starts
//! the stream. Each look at the stream job is bounded (`LOOK_TIMEOUT`); after a cut the stall
//! limit is core's `PostcopyMachine::stall_limit_ms` (at least 30 s).

use crate::disk::{DiskNodes, NbdAddr, NbdBacking};
use crate::driver::{self, DriverConfig, DriverError, Endpoints, MigrationRun};
use crate::metrics::Clock;
use crate::qmp::{BlockExt, Qmp, QmpError, QmpExt, VmStatus};
use crate::storage::{memory_failure, DiskTarget};
use drover_core::migration::{
    EndStatus, MigrationPlan, MigrationStatus, PostcopyCleanup, PostcopyEvent, PostcopyMachine,
    PostcopyOutcome, PostcopyPhase, PostcopySettings, PostcopyStep, StorageRecord, StreamLook,
    StreamVerdict,
};
use std::time::Duration;
use tokio::sync::watch;

/// Longest wait for one look at the destination's stream job. A look that takes longer counts
/// as one the destination did not answer (a stall once they last the stall limit): over a cut
/// link the transport alone would hold it for its own timeout (the agents' HTTP client's is
/// 60 s), which made a stall be seen tens of seconds after the cut whatever the stall limit.
const LOOK_TIMEOUT: Duration = Duration::from_secs(3);

/// A storage post-copy's knobs: core's settings plus the polling interval.
#[derive(Debug, Clone)]
pub struct PostcopyConfig {
    pub settings: PostcopySettings,
    /// How often the stream job is polled.
    pub poll_interval: Duration,
}

impl Default for PostcopyConfig {
    fn default() -> Self {
        PostcopyConfig {
            settings: PostcopySettings::default(),
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// Where a storage post-copy stands after one of [`PostcopySession`]'s calls.
#[derive(Debug, Clone)]
pub struct PostcopyRun {
    /// The memory migration; None when it did not run in this call.
    pub memory: Option<MigrationRun>,
    /// The storage part's record so far; `error` names a failed step or the stall.
    pub storage: StorageRecord,
    /// How it stands for the caller (what may be torn down).
    pub outcome: PostcopyOutcome,
    /// The destination guest's state at the end (`query-status`: `running`, or `io-error`
    /// when a read the source could not serve paused it); None before the switchover or
    /// when the destination did not answer.
    pub dest_guest: Option<VmStatus>,
    /// Commands that failed without changing the outcome (clean-up, dismissing the job, a
    /// re-export while resuming).
    pub errors: Vec<String>,
}

/// One disk's storage post-copy from the source's export to the stream's end.
#[derive(Debug)]
pub struct PostcopySession {
    disk: DiskNodes,
    nbd: NbdAddr,
    config: PostcopyConfig,
    machine: PostcopyMachine,
    backing: NbdBacking,
}

type StepError = (PostcopyStep, String);

fn at<E: std::fmt::Display>(step: PostcopyStep) -> impl Fn(E) -> StepError {
    move |e| (step, e.to_string())
}

impl PostcopySession {
    /// Step 1: the source starts its NBD server on `target.nbd` and exports `target.disk`
    /// read-only with `allow-inactive`. The destination may be launched only after this.
    ///
    /// # Errors
    /// The run ([`PostcopyOutcome::RolledBack`]) when the settings are out of their limits or
    /// a command failed; what was set up is undone.
    pub async fn export(
        source: &dyn Qmp,
        target: &DiskTarget,
        config: PostcopyConfig,
    ) -> Result<Self, Box<PostcopyRun>> {
        let mut machine = PostcopyMachine::new(config.settings);
        let backing = match NbdBacking::new(target.nbd, &config.settings) {
            Ok(b) => b,
            Err(e) => {
                let failed = PostcopyEvent::Failed {
                    step: PostcopyStep::ServerStart,
                    message: e.to_string(),
                };
                machine.handle(failed).ok();
                return Err(Box::new(run_of(&machine, None, None, vec![])));
            }
        };
        let mut session = PostcopySession {
            disk: target.disk.clone(),
            nbd: target.nbd,
            config,
            machine,
            backing,
        };
        let started = async {
            source
                .nbd_server_start(&session.nbd)
                .await
                .map_err(at(PostcopyStep::ServerStart))?;
            session.advance(PostcopyStep::ServerStart, PostcopyEvent::ServerStarted)?;
            source
                .export_source_disk(&session.disk)
                .await
                .map_err(at(PostcopyStep::ExportAdd))?;
            session.advance(PostcopyStep::ExportAdd, PostcopyEvent::Exported)
        }
        .await;
        match started {
            Ok(()) => Ok(session),
            Err(failure) => {
                session.fail(failure);
                let errors = session.cleanup(source).await;
                Err(Box::new(session.run(None, None, errors)))
            }
        }
    }

    /// What the destination's launch needs to read the source's export
    /// ([`DiskSpec::Overlay`](crate::disk::DiskSpec)'s `source`).
    pub fn backing(&self) -> NbdBacking {
        self.backing
    }

    pub fn phase(&self) -> &PostcopyPhase {
        self.machine.phase()
    }

    /// The destination could not be launched on the export: undo step 1. The guest keeps
    /// running on the source with its own disk.
    pub async fn abandon(mut self, source: &dyn Qmp, reason: &str) -> PostcopyRun {
        self.roll_back(source, reason).await
    }

    /// [`PostcopySession::abandon`] in place, for a caller that keeps the session (a
    /// hybrid's push failed before the memory migration started): the source's export goes,
    /// the outcome is [`PostcopyOutcome::RolledBack`].
    pub(crate) async fn roll_back(&mut self, source: &dyn Qmp, reason: &str) -> PostcopyRun {
        self.fail((PostcopyStep::DestinationLaunch, reason.to_string()));
        let errors = self.cleanup(source).await;
        self.run(None, None, errors)
    }

    /// Step 3: the memory migration of `plan`, then the stream (see the module doc).
    ///
    /// # Errors
    /// [`DriverError::SourceLost`] as [`driver::migrate`] returns it (after the clean-up:
    /// the guest stayed on the source); every other failure is in the returned run.
    pub async fn migrate(
        &mut self,
        ends: &Endpoints<'_>,
        plan: MigrationPlan,
        driver_config: &DriverConfig,
        clock: &Clock,
        cancel: Option<watch::Receiver<bool>>,
    ) -> Result<PostcopyRun, DriverError> {
        if let Err(failure) = self.advance(PostcopyStep::Memory, PostcopyEvent::MemoryStarted) {
            // Not exported (a misuse): nothing was started here, nothing to undo.
            return Ok(self.run(None, None, vec![failure.1]));
        }
        let run = driver::migrate(ends, plan, driver_config, clock, cancel).await;
        let memory = match run {
            Err(e) => {
                self.fail((PostcopyStep::Memory, e.to_string()));
                self.cleanup(ends.source).await;
                return Err(e);
            }
            Ok(memory) => memory,
        };
        let outcome = &memory.outcome;
        if !outcome.vm_on_destination {
            self.fail((
                PostcopyStep::Memory,
                memory_failure(&Ok(memory.clone()), false),
            ));
            let errors = self.cleanup(ends.source).await;
            return Ok(self.run(Some(memory), None, errors));
        }
        if outcome.status != EndStatus::Completed {
            self.advance(PostcopyStep::Memory, PostcopyEvent::MemoryPaused)
                .ok();
            let guest = ends.dest.query_status().await.ok();
            return Ok(self.run(Some(memory), guest, vec![]));
        }
        let moved = PostcopyEvent::MemoryMoved {
            now_ms: clock.now_ms(),
        };
        let mut run = match self.advance(PostcopyStep::Memory, moved) {
            Ok(()) => self.stream(ends, clock).await,
            Err(failure) => self.run(None, None, vec![failure.1]),
        };
        run.memory = Some(memory);
        Ok(run)
    }

    /// Goes on after [`PostcopyOutcome::Stalled`] (re-exports the disk if the source lost
    /// its export, resumes a paused job, continues a guest paused on an I/O error, watches
    /// the stream again) or [`PostcopyOutcome::MemoryPaused`] (starts the stream once the
    /// destination's incoming migration completed and its guest runs). In any other phase it
    /// only reports where things stand.
    pub async fn resume(&mut self, ends: &Endpoints<'_>, clock: &Clock) -> PostcopyRun {
        match self.machine.phase() {
            PostcopyPhase::Stalled { .. } => self.resume_stalled(ends, clock).await,
            PostcopyPhase::MemoryPaused => self.resume_memory_paused(ends, clock).await,
            _ => {
                let guest = ends.dest.query_status().await.ok();
                self.run(None, guest, vec![])
            }
        }
    }

    /// After a paused memory post-copy was recovered: once the destination's incoming
    /// migration completed, a guest that a read from the source's export stopped during the
    /// cut (`io-error`: the overlay's copy-on-read could not reach the source) is continued
    /// once the export is there again (QEMU retries the failed request on `cont`), and the
    /// stream starts when the guest runs. Otherwise where things stand, with what failed.
    async fn resume_memory_paused(&mut self, ends: &Endpoints<'_>, clock: &Clock) -> PostcopyRun {
        let completed = ends.dest.query_migrate(clock.now_ms()).await.ok();
        let mut status = ends.dest.query_status().await.ok();
        if completed.and_then(|p| p.status) != Some(MigrationStatus::Completed) {
            return self.run(None, status, vec![]);
        }
        let mut errors = Vec::new();
        if status.as_ref().is_some_and(|s| s.status == "io-error") {
            if let Err(e) = self.ensure_export(ends.source).await {
                errors.push(format!("{}: {e}", PostcopyStep::StreamResume.name()));
                return self.run(None, status, errors);
            }
            errors.extend(continue_after_io_error(ends.dest).await);
            status = ends.dest.query_status().await.ok();
        }
        if !status.as_ref().is_some_and(|s| s.running) {
            return self.run(None, status, errors);
        }
        let moved = PostcopyEvent::MemoryMoved {
            now_ms: clock.now_ms(),
        };
        let mut run = match self.advance(PostcopyStep::Memory, moved) {
            Ok(()) => self.stream(ends, clock).await,
            Err(failure) => self.run(None, status, vec![failure.1]),
        };
        errors.append(&mut run.errors);
        run.errors = errors;
        run
    }

    async fn resume_stalled(&mut self, ends: &Endpoints<'_>, clock: &Clock) -> PostcopyRun {
        let mut errors = Vec::new();
        if let Err(e) = self.ensure_export(ends.source).await {
            // The export cannot come back (yet): still stalled, nothing undone.
            errors.push(format!("{}: {e}", PostcopyStep::StreamResume.name()));
            let guest = ends.dest.query_status().await.ok();
            return self.run(None, guest, errors);
        }
        let job = ends.dest.stream_job(&self.disk).await;
        if let Ok(Some(j)) = &job {
            if j.status == "paused" {
                if let Err(e) = ends.dest.resume_job(self.disk.stream_job()).await {
                    errors.push(format!("block-job-resume: {e}"));
                }
            }
        }
        errors.extend(continue_after_io_error(ends.dest).await);
        let resumed = PostcopyEvent::StreamResumed {
            now_ms: clock.now_ms(),
        };
        self.advance_and_watch(ends, clock, PostcopyStep::StreamResume, resumed, errors)
            .await
    }

    /// Records that the stream (re)started (`event`, at `step`), then watches it to its end;
    /// `errors` so far lead the run's.
    async fn advance_and_watch(
        &mut self,
        ends: &Endpoints<'_>,
        clock: &Clock,
        step: PostcopyStep,
        event: PostcopyEvent,
        mut errors: Vec<String>,
    ) -> PostcopyRun {
        if let Err(failure) = self.advance(step, event) {
            errors.push(failure.1);
            return self.run(None, None, errors);
        }
        let mut run = self.watch(ends, clock).await;
        errors.append(&mut run.errors);
        run.errors = errors;
        run
    }

    /// Re-adds the source's export if it is gone (its server restarted when needed).
    async fn ensure_export(&self, source: &dyn Qmp) -> Result<(), QmpError> {
        if source.has_export(&self.disk).await? {
            return Ok(());
        }
        // A server that still runs refuses a second start; the export add then tells.
        if let Err(e) = source.nbd_server_start(&self.nbd).await {
            tracing::info!(error = %e, "NBD server start on resume refused (already running?)");
        }
        source.export_source_disk(&self.disk).await
    }

    /// Activates the source's disk again (its export then answers the stream's block-status
    /// queries), continues a destination guest that a read paused while it was inactive,
    /// starts the stream on the destination and watches it.
    ///
    /// Why the `cont` here: until the activation a guest read of a block not yet in the
    /// overlay can fail (the copy-on-read asks the inactive export for block status), and
    /// `rerror=stop` pauses the guest on it (`io-error`). Left paused, it would wait for the
    /// whole stream (82 s for 128 MiB over a 100 ms round trip, measured in the lab); resumed
    /// now, QEMU retries the read, which the active export serves.
    async fn stream(&mut self, ends: &Endpoints<'_>, clock: &Clock) -> PostcopyRun {
        if let Err(e) = ends.source.set_disk_active(&self.disk, true).await {
            self.fail((PostcopyStep::SourceActivate, e.to_string()));
            let guest = ends.dest.query_status().await.ok();
            return self.run(None, guest, vec![]);
        }
        if let Err(failure) =
            self.advance(PostcopyStep::SourceActivate, PostcopyEvent::SourceActivated)
        {
            return self.run(None, None, vec![failure.1]);
        }
        let errors = continue_after_io_error(ends.dest).await;
        let speed = self.config.settings.stream_speed_bps;
        if let Err(e) = ends.dest.start_stream(&self.disk, speed).await {
            self.fail((PostcopyStep::StreamStart, e.to_string()));
            let guest = ends.dest.query_status().await.ok();
            return self.run(None, guest, errors);
        }
        let started = PostcopyEvent::StreamStarted {
            now_ms: clock.now_ms(),
        };
        self.advance_and_watch(ends, clock, PostcopyStep::StreamStart, started, errors)
            .await
    }

    /// Polls the stream until it concluded (then finishes), stalled or failed.
    async fn watch(&mut self, ends: &Endpoints<'_>, clock: &Clock) -> PostcopyRun {
        let mut silent_since: Option<u64> = None;
        loop {
            let now_ms = clock.now_ms();
            // Bounded: the look goes to the destination over the link that may be cut, and
            // an unbounded look would hold the stall judgement until its transport gives up.
            let look = tokio::time::timeout(LOOK_TIMEOUT, ends.dest.stream_job(&self.disk));
            let job = match look.await.unwrap_or_else(|_| {
                Err(QmpError::Timeout {
                    command: "query-block-jobs".into(),
                    ms: LOOK_TIMEOUT.as_millis() as u64,
                })
            }) {
                Ok(job) => job,
                Err(QmpError::Closed) => {
                    self.fail((PostcopyStep::StreamWait, QmpError::Closed.to_string()));
                    return self.run(None, None, vec![]);
                }
                Err(e) => {
                    // A destination that does not answer for the stall limit is a stall.
                    let since = *silent_since.get_or_insert(now_ms);
                    if now_ms.saturating_sub(since) >= self.machine.stall_limit_ms() {
                        let reason = format!("the destination does not answer: {e}");
                        self.advance(
                            PostcopyStep::StreamWait,
                            PostcopyEvent::StreamStalled { reason },
                        )
                        .ok();
                        return self.run(None, None, vec![]);
                    }
                    tokio::time::sleep(self.config.poll_interval).await;
                    continue;
                }
            };
            silent_since = None;
            let look = StreamLook { now_ms, job };
            self.advance(
                PostcopyStep::StreamWait,
                PostcopyEvent::StreamLooked(look.clone()),
            )
            .ok();
            match self.machine.judge(&look) {
                StreamVerdict::Wait => tokio::time::sleep(self.config.poll_interval).await,
                StreamVerdict::ResumeAgain => {
                    if let Err(e) = ends.dest.resume_job(self.disk.stream_job()).await {
                        tracing::info!(error = %e, "block-job-resume refused");
                    }
                    continue_after_io_error(ends.dest).await;
                    let resumed = PostcopyEvent::StreamResumed {
                        now_ms: clock.now_ms(),
                    };
                    self.advance(PostcopyStep::StreamResume, resumed).ok();
                    tokio::time::sleep(self.config.poll_interval).await;
                }
                StreamVerdict::Concluded => return self.finish(ends, now_ms).await,
                StreamVerdict::Stalled(reason) => {
                    tracing::warn!(%reason, "storage post-copy stream stalled");
                    self.advance(
                        PostcopyStep::StreamWait,
                        PostcopyEvent::StreamStalled { reason },
                    )
                    .ok();
                    let guest = ends.dest.query_status().await.ok();
                    return self.run(None, guest, vec![]);
                }
                StreamVerdict::Fail(message) => {
                    self.fail((PostcopyStep::StreamWait, message));
                    let guest = ends.dest.query_status().await.ok();
                    return self.run(None, guest, vec![]);
                }
            }
        }
    }

    /// The stream concluded: dismiss it, continue a guest an earlier failed read paused (its
    /// disk is all local now), stop the source's NBD server.
    async fn finish(&mut self, ends: &Endpoints<'_>, now_ms: u64) -> PostcopyRun {
        let mut errors = Vec::new();
        self.advance(
            PostcopyStep::StreamWait,
            PostcopyEvent::StreamConcluded { now_ms },
        )
        .ok();
        if let Err(e) = ends.dest.dismiss_job(self.disk.stream_job()).await {
            errors.push(format!("job-dismiss: {e}"));
        }
        errors.extend(continue_after_io_error(ends.dest).await);
        // A source QEMU that is gone has no server left to stop.
        match ends.source.nbd_server_stop().await {
            Ok(()) | Err(QmpError::Closed) => {
                self.advance(PostcopyStep::ServerStop, PostcopyEvent::ServerStopped)
                    .ok();
            }
            Err(e) => self.fail((PostcopyStep::ServerStop, e.to_string())),
        }
        let guest = ends.dest.query_status().await.ok();
        self.run(None, guest, errors)
    }

    fn advance(&mut self, step: PostcopyStep, event: PostcopyEvent) -> Result<(), StepError> {
        self.machine.handle(event).map_err(at(step))
    }

    fn fail(&mut self, (step, message): StepError) {
        tracing::warn!(step = step.name(), %message, "storage post-copy step failed");
        if let Err(e) = self.machine.handle(PostcopyEvent::Failed { step, message }) {
            tracing::warn!(error = %e, "storage post-copy failure not recorded");
        }
    }

    /// Undoes what the machine lists after a failure; returns the commands that failed.
    async fn cleanup(&self, source: &dyn Qmp) -> Vec<String> {
        let mut errors = Vec::new();
        for step in self.machine.cleanup() {
            let result = match step {
                PostcopyCleanup::StopSourceServer => match source.nbd_server_stop().await {
                    Err(QmpError::Closed) => Ok(()),
                    other => other,
                },
            };
            if let Err(e) = result {
                tracing::warn!(step = ?step, error = %e, "storage post-copy clean-up failed");
                errors.push(format!("{step:?}: {e}"));
            }
        }
        errors
    }

    fn run(
        &self,
        memory: Option<MigrationRun>,
        dest_guest: Option<VmStatus>,
        errors: Vec<String>,
    ) -> PostcopyRun {
        run_of(&self.machine, memory, dest_guest, errors)
    }
}

fn run_of(
    machine: &PostcopyMachine,
    memory: Option<MigrationRun>,
    dest_guest: Option<VmStatus>,
    errors: Vec<String>,
) -> PostcopyRun {
    PostcopyRun {
        memory,
        storage: machine.record(),
        // Still under way only after a misuse (e.g. `migrate` twice): nothing to undo.
        outcome: machine.outcome().unwrap_or(PostcopyOutcome::Held),
        dest_guest,
        errors,
    }
}

/// `cont` on a destination guest that a failed read paused (`io-error`); nothing otherwise.
async fn continue_after_io_error(dest: &dyn Qmp) -> Vec<String> {
    match dest.query_status().await {
        Ok(s) if s.status == "io-error" => match dest.cont().await {
            Ok(()) => vec![],
            Err(e) => vec![format!("cont after an I/O error: {e}")],
        },
        _ => vec![],
    }
}

#[cfg(test)]
#[path = "storage_postcopy_tests.rs"]
mod tests;
