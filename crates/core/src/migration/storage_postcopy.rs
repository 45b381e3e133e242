//! Post-copy storage migration: the destination runs on an overlay of the source's disk at
//! once and pulls the disk after the switchover; the phases as an explicit state machine and
//! the decisions taken on the way (the `qemu` crate's `storage_postcopy` module does the I/O).
//!
//! Order: the source starts an NBD server and exports its disk's format node read-only with
//! `allow-inactive` (without it the source cannot inactivate its disk at switchover, and the
//! switchover fails). Only then can the destination be launched, on a chain that reads that
//! export: an NBD client node (with a reconnect delay, so a short outage delays reads instead
//! of failing them), a new qcow2 overlay backed by it, a copy-on-read filter so guest reads
//! fill the overlay, the guest's device on top with `rerror`/`werror=stop` (a read that
//! cannot be served pauses the guest instead of failing in it). Memory migrates as usual,
//! pre-copy or post-copy. Once the memory migration completed with the guest running on the
//! destination (its disk active), the source activates its disk's node again
//! (`blockdev-set-active`): QEMU 10.0's NBD server answers only reads on an inactive node,
//! and the stream asks the backing's block status, which it refuses with EPERM; the source's
//! guest stays stopped and is never resumed once the guest moved, and the export is
//! read-only, so nothing writes that disk. Then the destination runs `block-stream` on the
//! overlay (`on-error: stop`: a lost source pauses the job instead of failing it), which
//! pulls every block not yet in the overlay and then drops the backing. The source QEMU stays, guest
//! stopped, disk inactive, export serving, until the stream concluded; then it stops its NBD
//! server and may be torn down. Its disk file is never deleted here.
//!
//! ```text
//!  Idle --ServerStarted--> ServerUp --Exported--> Exported --MemoryStarted--> Migrating
//!    Migrating --MemoryMoved--> Moved        Migrating --MemoryPaused--> MemoryPaused
//!    MemoryPaused --MemoryMoved--> Moved     (the agent recovered the memory post-copy)
//!    Moved --SourceActivated--> SourceActive --StreamStarted--> Streaming
//!    Streaming --StreamConcluded--> Streamed --ServerStopped--> Done
//!    Streaming --StreamStalled--> Stalled --StreamResumed--> Streaming
//!
//!  any phase but Done/Failed --Failed{step}--> Failed{step, from}
//! ```
//!
//! Every event is valid in the phases shown only; any other pairing is a typed
//! [`PostcopyError::InvalidTransition`] and leaves the phase unchanged. `StreamLooked` (a look
//! at the stream job) is valid while the job exists and only refreshes the figures.
//!
//! Failures. Before the switchover (`from` is `Idle` to `Migrating`) a failure undoes
//! everything: [`PostcopyMachine::cleanup`] stops the source's NBD server (which removes its
//! export); the destination QEMU, whose overlay holds nothing the source lacks, is the
//! caller's to discard; the guest keeps running on the source with its own disk. From the
//! switchover on nothing is ever undone: the guest's disk is split between the overlay and
//! the source's export, so both QEMUs and the source's disk are kept, and the outcome says so
//! ([`PostcopyOutcome::Held`], [`PostcopyOutcome::Stalled`], [`PostcopyOutcome::MemoryPaused`]).
//! A stalled stream resumes (the job resumed, the guest continued if a read paused it) once
//! the source's export answers again.
//!
//! While streaming, [`PostcopyMachine::judge`] decides from each `query-block-jobs` look:
//! wait, concluded, stalled (QEMU paused the job on an I/O error, or no progress for
//! [`PostcopySettings::stall_ms`]), or failed (the job ended with an error or vanished).
//! After a resume, a job that pauses again before any progress is resumed again every
//! [`RESUME_RETRY_MS`] for up to the stall limit: QEMU's NBD client fails the first request
//! after an outage while it reconnects in the background. Once the link was cut (a stall, or
//! a paused memory post-copy) the stall limit is at least [`AFTER_CUT_STALL_MS`]: progress is
//! judged by the job's offset as QEMU reports it, over a window that outlasts TCP's
//! retransmission backoff ([`PostcopyMachine::stall_limit_ms`]).

use super::storage::{MirrorJob, MirrorLook, StorageMode, StorageRecord};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How long after a resume a job that paused again is resumed once more, ms (QEMU's NBD
/// client retries its connection every second or more).
pub const RESUME_RETRY_MS: u64 = 1000;

/// The least stall limit, ms, of a stream after a cut link (a stream resumed after a stall,
/// or started after a paused memory post-copy): TCP's retransmission timer backs off during a
/// cut (1, 2, 4, 8 s ...), so the stream's first reads after the link returns can wait several
/// seconds with no progress while QEMU keeps streaming; a stall limit of a few seconds there
/// is a false stall. The limit is then the larger of this and
/// [`PostcopySettings::stall_ms`].
pub const AFTER_CUT_STALL_MS: u64 = 30_000;

/// The stream job's look is the mirror's: QEMU's `BlockJobInfo` fields Drover reads.
pub type StreamLook = MirrorLook;

/// Knobs of a storage post-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PostcopySettings {
    /// The destination's NBD client waits this long, s, for the source to come back after a
    /// lost connection before failing reads (QEMU's `reconnect-delay`; it keeps reconnecting
    /// afterwards, so reads work again once the export answers). At least 1: 0 would disable
    /// reconnecting for good.
    pub reconnect_delay_s: u32,
    /// The stream's rate limit, bytes/s (QEMU's `speed`); None: unlimited. Guest reads of
    /// blocks not yet pulled are not limited.
    pub stream_speed_bps: Option<u64>,
    /// A stream whose progress has not moved for this long, ms, while it has not concluded,
    /// is reported stalled (a source unreachable within the reconnect delay holds reads that
    /// long before they fail).
    pub stall_ms: u64,
}

impl Default for PostcopySettings {
    fn default() -> Self {
        PostcopySettings {
            reconnect_delay_s: 10,
            stream_speed_bps: None,
            stall_ms: 30_000,
        }
    }
}

impl PostcopySettings {
    /// Checks the limits.
    ///
    /// # Errors
    /// [`PostcopyError::BadSetting`] naming the field and what was expected.
    pub fn validate(&self) -> Result<(), PostcopyError> {
        let bad = |field: &'static str, expected: &'static str| {
            Err(PostcopyError::BadSetting { field, expected })
        };
        if !(1..=3600).contains(&self.reconnect_delay_s) {
            return bad("reconnect_delay_s", "from 1 to 3600 seconds");
        }
        if self
            .stream_speed_bps
            .is_some_and(|b| !(1..=super::UNCAPPED_BPS).contains(&b))
        {
            return bad(
                "stream_speed_bps",
                "a rate from 1 to 100000000000 bytes/s (100 GB/s), or none for unlimited",
            );
        }
        if self.stall_ms < 1000 {
            return bad("stall_ms", "at least 1000 ms");
        }
        Ok(())
    }
}

/// The steps of a storage post-copy, as errors and logs name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum PostcopyStep {
    /// Source `nbd-server-start`.
    ServerStart,
    /// Source `block-export-add` (read-only, `allow-inactive`).
    ExportAdd,
    /// The caller's launch of the destination on the export.
    DestinationLaunch,
    /// The memory migration.
    Memory,
    /// Source `blockdev-set-active` of its disk after the switchover.
    SourceActivate,
    /// Destination `block-stream`.
    StreamStart,
    /// Waiting for the stream job to conclude (`query-block-jobs`).
    StreamWait,
    /// Resuming a stalled stream (export, `block-job-resume`, `cont`).
    StreamResume,
    /// Source `nbd-server-stop` after the stream.
    ServerStop,
}

impl PostcopyStep {
    /// The step's name, as it appears in errors.
    pub fn name(self) -> &'static str {
        match self {
            PostcopyStep::ServerStart => "source nbd-server-start",
            PostcopyStep::ExportAdd => "source block-export-add (read-only)",
            PostcopyStep::DestinationLaunch => "destination launch on the source's export",
            PostcopyStep::Memory => "memory migration",
            PostcopyStep::SourceActivate => "source blockdev-set-active",
            PostcopyStep::StreamStart => "destination block-stream",
            PostcopyStep::StreamWait => "stream wait",
            PostcopyStep::StreamResume => "stream resume",
            PostcopyStep::ServerStop => "source nbd-server-stop",
        }
    }
}

/// The instants of a storage post-copy, ms on the driver's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamTimes {
    /// The guest first known running on the destination with its disk (memory completed).
    pub moved_ms: u64,
    /// `block-stream` accepted.
    pub started_ms: Option<u64>,
    /// The stream job seen concluded without an error.
    pub concluded_ms: Option<u64>,
}

/// Where a storage post-copy is.
#[derive(Debug, Clone, PartialEq)]
pub enum PostcopyPhase {
    Idle,
    /// The source's NBD server listens.
    ServerUp,
    /// The source exports its disk: the destination may be launched on it.
    Exported,
    /// The memory migration runs.
    Migrating,
    /// The memory post-copy ended paused: the guest is split between the two QEMUs and runs
    /// (or waits) on the destination on the source's export.
    MemoryPaused,
    /// The guest runs on the destination, reading unpulled blocks from the source's export.
    Moved {
        times: StreamTimes,
    },
    /// The source's disk node is active again: its export answers block status.
    SourceActive {
        times: StreamTimes,
    },
    /// The stream job runs.
    Streaming {
        times: StreamTimes,
        since_ms: u64,
    },
    /// The stream stalled (see [`PostcopyMachine::judge`]); the source must stay.
    Stalled {
        times: StreamTimes,
        reason: String,
    },
    /// Every block is in the overlay, which has no backing any more.
    Streamed {
        times: StreamTimes,
    },
    /// The source's NBD server stopped: the source may be torn down.
    Done {
        times: StreamTimes,
    },
    /// A step failed; `from` is the phase it failed in.
    Failed {
        step: PostcopyStep,
        message: String,
        from: Box<PostcopyPhase>,
    },
}

impl PostcopyPhase {
    /// The phase's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            PostcopyPhase::Idle => "idle",
            PostcopyPhase::ServerUp => "server-up",
            PostcopyPhase::Exported => "exported",
            PostcopyPhase::Migrating => "migrating",
            PostcopyPhase::MemoryPaused => "memory-paused",
            PostcopyPhase::Moved { .. } => "moved",
            PostcopyPhase::SourceActive { .. } => "source-active",
            PostcopyPhase::Streaming { .. } => "streaming",
            PostcopyPhase::Stalled { .. } => "stalled",
            PostcopyPhase::Streamed { .. } => "streamed",
            PostcopyPhase::Done { .. } => "done",
            PostcopyPhase::Failed { .. } => "failed",
        }
    }

    fn times(&self) -> Option<StreamTimes> {
        match self {
            PostcopyPhase::Moved { times }
            | PostcopyPhase::SourceActive { times }
            | PostcopyPhase::Streaming { times, .. }
            | PostcopyPhase::Stalled { times, .. }
            | PostcopyPhase::Streamed { times }
            | PostcopyPhase::Done { times } => Some(*times),
            PostcopyPhase::Failed { from, .. } => from.times(),
            _ => None,
        }
    }

    /// The guest left the source (its memory or disk is at least partly on the destination):
    /// from here on nothing may be undone and the source's disk and QEMU are kept.
    pub fn past_switchover(&self) -> bool {
        match self {
            PostcopyPhase::Idle
            | PostcopyPhase::ServerUp
            | PostcopyPhase::Exported
            | PostcopyPhase::Migrating => false,
            PostcopyPhase::Failed { from, .. } => from.past_switchover(),
            _ => true,
        }
    }
}

/// What a look at the stream job calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamVerdict {
    /// Keep looking.
    Wait,
    /// The job concluded without an error: dismiss it, stop the source's server.
    Concluded,
    /// Report the stream stalled (the source must stay; resume when its export answers).
    Stalled(String),
    /// A job resumed after a stall paused again before making progress: resume it again
    /// (`block-job-resume`; hand over [`PostcopyEvent::StreamResumed`]).
    ResumeAgain,
    /// The job ended with an error or vanished: fail at [`PostcopyStep::StreamWait`].
    Fail(String),
}

/// One thing to undo after a failure before the switchover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostcopyCleanup {
    /// `nbd-server-stop` on the source (it removes the export with it).
    StopSourceServer,
}

/// How a storage post-copy ended, for its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum PostcopyOutcome {
    /// Every block is on the destination and the source's export is gone: the source QEMU
    /// may be torn down (its disk file is the caller's to keep or delete).
    Completed,
    /// The stream stalled: the guest is on the destination (running, or paused on a read it
    /// could not get: report it paused), the source must stay; resume once its export
    /// answers.
    Stalled,
    /// The memory post-copy ended paused: both QEMUs and the export stay; once the memory is
    /// recovered the stream can start.
    MemoryPaused,
    /// A step failed after the switchover: nothing was undone, both QEMUs and the source's
    /// disk are kept.
    Held,
    /// A step failed before the switchover and was undone: the guest runs on the source with
    /// its own disk; the destination QEMU is the caller's to discard.
    RolledBack,
}

/// Transition and setting errors of [`PostcopyMachine`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PostcopyError {
    #[error("storage post-copy event '{event}' is not valid in phase '{phase}'")]
    InvalidTransition {
        phase: &'static str,
        event: &'static str,
    },
    #[error("storage post-copy setting '{field}': expected {expected}")]
    BadSetting {
        field: &'static str,
        expected: &'static str,
    },
}

/// Events the storage post-copy sequencing reports. Times are ms on the driver's clock.
#[derive(Debug, Clone, PartialEq)]
pub enum PostcopyEvent {
    ServerStarted,
    Exported,
    MemoryStarted,
    /// The memory migration completed and the guest runs on the destination.
    MemoryMoved {
        now_ms: u64,
    },
    /// The memory post-copy ended paused (the guest split between the QEMUs).
    MemoryPaused,
    /// The source's disk node was activated again.
    SourceActivated,
    StreamStarted {
        now_ms: u64,
    },
    /// A look at the stream job; refreshes the figures and the progress clock.
    StreamLooked(StreamLook),
    StreamStalled {
        reason: String,
    },
    StreamResumed {
        now_ms: u64,
    },
    StreamConcluded {
        now_ms: u64,
    },
    ServerStopped,
    Failed {
        step: PostcopyStep,
        message: String,
    },
}

impl PostcopyEvent {
    fn name(&self) -> &'static str {
        match self {
            PostcopyEvent::ServerStarted => "server-started",
            PostcopyEvent::Exported => "exported",
            PostcopyEvent::MemoryStarted => "memory-started",
            PostcopyEvent::MemoryMoved { .. } => "memory-moved",
            PostcopyEvent::MemoryPaused => "memory-paused",
            PostcopyEvent::SourceActivated => "source-activated",
            PostcopyEvent::StreamStarted { .. } => "stream-started",
            PostcopyEvent::StreamLooked(_) => "stream-looked",
            PostcopyEvent::StreamStalled { .. } => "stream-stalled",
            PostcopyEvent::StreamResumed { .. } => "stream-resumed",
            PostcopyEvent::StreamConcluded { .. } => "stream-concluded",
            PostcopyEvent::ServerStopped => "server-stopped",
            PostcopyEvent::Failed { .. } => "failed",
        }
    }
}

/// The storage post-copy of one disk.
#[derive(Debug, Clone)]
pub struct PostcopyMachine {
    settings: PostcopySettings,
    phase: PostcopyPhase,
    /// The last look that listed the job.
    last_job: Option<MirrorJob>,
    /// When the job's progress last moved (or the stream started or resumed), ms.
    progress_ms: u64,
    stalls: u32,
    /// After a resume, until the job makes progress: when it was resumed first and last, ms.
    resumed: Option<(u64, u64)>,
    /// The link was cut once (a stream stall or a paused memory post-copy): the stall limit is
    /// at least [`AFTER_CUT_STALL_MS`] from then on.
    after_cut: bool,
}

impl PostcopyMachine {
    pub fn new(settings: PostcopySettings) -> Self {
        PostcopyMachine {
            settings,
            phase: PostcopyPhase::Idle,
            last_job: None,
            progress_ms: 0,
            stalls: 0,
            resumed: None,
            after_cut: false,
        }
    }

    /// How long the stream may make no progress before it is stalled, ms: the settings'
    /// `stall_ms`, at least [`AFTER_CUT_STALL_MS`] once the link was cut.
    pub fn stall_limit_ms(&self) -> u64 {
        match self.after_cut {
            true => self.settings.stall_ms.max(AFTER_CUT_STALL_MS),
            false => self.settings.stall_ms,
        }
    }

    pub fn settings(&self) -> &PostcopySettings {
        &self.settings
    }

    pub fn phase(&self) -> &PostcopyPhase {
        &self.phase
    }

    /// Applies one event; on error the phase is unchanged.
    pub fn handle(&mut self, event: PostcopyEvent) -> Result<(), PostcopyError> {
        use PostcopyEvent as E;
        use PostcopyPhase as P;
        let next = match (&self.phase, &event) {
            (P::Idle, E::ServerStarted) => P::ServerUp,
            (P::ServerUp, E::Exported) => P::Exported,
            (P::Exported, E::MemoryStarted) => P::Migrating,
            (P::Migrating, E::MemoryPaused) => {
                self.after_cut = true;
                P::MemoryPaused
            }
            (P::Migrating | P::MemoryPaused, E::MemoryMoved { now_ms }) => P::Moved {
                times: StreamTimes {
                    moved_ms: *now_ms,
                    ..StreamTimes::default()
                },
            },
            (P::Moved { times }, E::SourceActivated) => P::SourceActive { times: *times },
            (P::SourceActive { times }, E::StreamStarted { now_ms }) => {
                self.progress_ms = *now_ms;
                P::Streaming {
                    times: StreamTimes {
                        started_ms: Some(*now_ms),
                        ..*times
                    },
                    since_ms: *now_ms,
                }
            }
            (P::Streaming { .. } | P::Stalled { .. }, E::StreamLooked(look)) => {
                self.looked(look);
                self.phase.clone()
            }
            (P::Streaming { times, .. }, E::StreamStalled { reason }) => {
                self.stalls += 1;
                P::Stalled {
                    times: *times,
                    reason: reason.clone(),
                }
            }
            (P::Stalled { times, .. }, E::StreamResumed { now_ms }) => {
                self.after_cut = true;
                self.progress_ms = *now_ms;
                self.resumed = Some((*now_ms, *now_ms));
                P::Streaming {
                    times: *times,
                    since_ms: *now_ms,
                }
            }
            // A resumed job that paused again, resumed once more (see `judge`).
            (P::Streaming { .. }, E::StreamResumed { now_ms }) if self.resumed.is_some() => {
                self.resumed = self.resumed.map(|(first, _)| (first, *now_ms));
                self.phase.clone()
            }
            (P::Streaming { times, .. }, E::StreamConcluded { now_ms }) => P::Streamed {
                times: StreamTimes {
                    concluded_ms: Some(*now_ms),
                    ..*times
                },
            },
            (P::Streamed { times }, E::ServerStopped) => P::Done { times: *times },
            (p, E::Failed { step, message }) if !matches!(p, P::Done { .. } | P::Failed { .. }) => {
                P::Failed {
                    step: *step,
                    message: message.clone(),
                    from: Box::new(p.clone()),
                }
            }
            (p, e) => {
                return Err(PostcopyError::InvalidTransition {
                    phase: p.name(),
                    event: e.name(),
                })
            }
        };
        self.phase = next;
        Ok(())
    }

    /// Keeps the job's figures; progress that moved restarts the stall clock.
    fn looked(&mut self, look: &StreamLook) {
        let Some(job) = &look.job else { return };
        let moved = self
            .last_job
            .as_ref()
            .is_none_or(|last| job.offset != last.offset);
        if moved {
            self.progress_ms = self.progress_ms.max(look.now_ms);
            self.resumed = None;
        }
        self.last_job = Some(job.clone());
    }

    /// Judges a look at the stream job (call after handing it to [`PostcopyMachine::handle`]).
    pub fn judge(&self, look: &StreamLook) -> StreamVerdict {
        if !matches!(self.phase, PostcopyPhase::Streaming { .. }) {
            return StreamVerdict::Fail(format!("stream judged in phase '{}'", self.phase.name()));
        }
        let Some(job) = &look.job else {
            return StreamVerdict::Fail("the stream job is gone".into());
        };
        if let Some(error) = &job.error {
            return StreamVerdict::Fail(format!("the stream failed: {error}"));
        }
        if job.concluded() {
            return StreamVerdict::Concluded;
        }
        if job.status == "paused" {
            // QEMU's NBD client reconnects in the background after a failed request, so the
            // first reads after a resume can fail again although the export is back: resume
            // again, every RESUME_RETRY_MS, for up to the stall limit since the first resume.
            if let Some((first, last)) = self.resumed {
                if look.now_ms.saturating_sub(first) < self.stall_limit_ms() {
                    if look.now_ms.saturating_sub(last) >= RESUME_RETRY_MS {
                        return StreamVerdict::ResumeAgain;
                    }
                    return StreamVerdict::Wait;
                }
            }
            return StreamVerdict::Stalled(format!(
                "the stream paused on an I/O error at {} of {} bytes (the source's export \
                 does not answer)",
                job.offset, job.len
            ));
        }
        let idle = look.now_ms.saturating_sub(self.progress_ms);
        if idle >= self.stall_limit_ms() {
            return StreamVerdict::Stalled(format!(
                "the stream made no progress for {idle} ms at {} of {} bytes",
                job.offset, job.len
            ));
        }
        StreamVerdict::Wait
    }

    /// What a failure leaves to undo: the source's export, only before the switchover; from
    /// the switchover on nothing (the guest's disk is split, everything is kept).
    pub fn cleanup(&self) -> Vec<PostcopyCleanup> {
        match &self.phase {
            PostcopyPhase::Failed { from, .. } => match from.as_ref() {
                PostcopyPhase::ServerUp | PostcopyPhase::Exported | PostcopyPhase::Migrating => {
                    vec![PostcopyCleanup::StopSourceServer]
                }
                _ => vec![],
            },
            _ => vec![],
        }
    }

    /// How the storage post-copy stands for its caller; None while it is still under way
    /// (before the memory migration ended, or streaming).
    pub fn outcome(&self) -> Option<PostcopyOutcome> {
        match &self.phase {
            PostcopyPhase::Done { .. } => Some(PostcopyOutcome::Completed),
            PostcopyPhase::Stalled { .. } => Some(PostcopyOutcome::Stalled),
            PostcopyPhase::MemoryPaused => Some(PostcopyOutcome::MemoryPaused),
            PostcopyPhase::Failed { from, .. } if from.past_switchover() => {
                Some(PostcopyOutcome::Held)
            }
            PostcopyPhase::Failed { .. } => Some(PostcopyOutcome::RolledBack),
            _ => None,
        }
    }

    /// The record so far ([`StorageMode::Postcopy`]).
    pub fn record(&self) -> StorageRecord {
        let t = self.phase.times().unwrap_or_default();
        let error = match &self.phase {
            PostcopyPhase::Failed { step, message, .. } => {
                Some(format!("storage step '{}' failed: {message}", step.name()))
            }
            PostcopyPhase::Stalled { reason, .. } => Some(format!("stream stalled: {reason}")),
            _ => None,
        };
        StorageRecord {
            mode: StorageMode::Postcopy,
            transferred_bytes: self.last_job.as_ref().map_or(0, |j| j.offset),
            disk_bytes: self.last_job.as_ref().map_or(0, |j| j.len),
            stream_ms: t
                .started_ms
                .zip(t.concluded_ms)
                .map(|(a, b)| b.saturating_sub(a)),
            stream_stalls: self.stalls,
            error,
            ..StorageRecord::default()
        }
    }
}

#[cfg(test)]
#[path = "storage_postcopy_tests.rs"]
mod tests;
