//! Pre-copy storage migration: the phases of moving a VM's local disk ahead of its memory, as an
//! explicit state machine, and the decisions taken on the way.
//!
//! Order (libvirt's, for non-shared storage; the `qemu` crate's `storage` module does the I/O):
//! the destination starts an NBD server on the migration address and exports its empty target
//! disk writable; the source attaches an NBD client node for that export and mirrors its disk
//! into it (`blockdev-mirror`, sync full). Once the mirror is READY (source and target in step,
//! guest writes copied as they happen) the memory migration starts with `pause-before-switchover`
//! set; at QEMU's `pre-switchover` state (guest stopped) the mirror is cancelled, which finishes
//! its last sync and leaves a point-in-time copy (completing it would switch the source onto the
//! target), the NBD node is removed (a job holding write permission on the disk makes switchover
//! fail) and `migrate-continue` lets the memory migration switch over. Once it completed the
//! destination stops its NBD server.
//!
//! ```text
//!  Idle --ServerStarted--> ServerUp --Exported--> Exported --TargetAttached--> Attached
//!    --MirrorStarted--> Mirroring --MirrorPolled(ready)--> Ready --SwitchoverReached-->
//!    Cancelling --MirrorConcluded--> Concluded --TargetDetached--> Detached
//!    --Continued--> Continued --MemoryMoved--> Moved --ServerStopped--> Done
//!
//!  any phase but Done/Failed --Failed{step}--> Failed{step, from}
//! ```
//!
//! Every event is valid in one phase only; any other pairing is a typed
//! [`StorageError::InvalidTransition`] and leaves the phase unchanged. A failure at any step
//! ends in `Failed`, which remembers the phase it came from so that [`StorageMachine::cleanup`]
//! names exactly what must be undone: cancel the mirror, delete the NBD node, stop the NBD
//! server. The source keeps running on its own disk, which the mirror never writes: no failure
//! loses the VM or its data. A failure after `Continued` (the switchover itself failed) leaves
//! only the server to stop; the memory driver resumes the guest on the source.
//!
//! While mirroring, [`StorageMachine::judge`] decides from each `query-block-jobs` look: wait,
//! READY, switch a lagging background mirror to write-blocking (once), or fail (the job ended
//! with an error, vanished, or did not become READY in time).

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How the mirror treats guest writes made while it runs (QEMU's `MirrorCopyMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum CopyMode {
    /// Dirty blocks are copied in the background: guest writes run at local speed, but a busy
    /// guest can outrun the copy and the mirror never becomes READY.
    Background,
    /// Each guest write is also written to the target before it completes: the mirror
    /// converges whatever the guest does, at one round trip per guest write.
    WriteBlocking,
}

impl CopyMode {
    /// The name QEMU's QAPI schema uses.
    pub fn qapi_name(self) -> &'static str {
        match self {
            CopyMode::Background => "background",
            CopyMode::WriteBlocking => "write-blocking",
        }
    }
}

/// Knobs of a storage pre-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StorageSettings {
    /// The mirror's copy mode at start.
    pub copy_mode: CopyMode,
    /// A background mirror still not READY this long after it started, ms, is switched to
    /// write-blocking (`block-job-change`); None never switches.
    pub write_blocking_after_ms: Option<u64>,
    /// Longest wait for the mirror to become READY, ms; then the storage migration fails (and
    /// is cleaned up) before any memory moved.
    pub ready_timeout_ms: u64,
    /// A mirror not READY yet whose progress (bytes copied) has not grown for this long, ms,
    /// fails the same way: its link is down or its destination gone (a cut WAN link otherwise
    /// holds the mirror until the link returns, however long that takes).
    #[serde(default = "default_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
    /// Longest wait for the cancelled mirror's last sync at switchover, ms (the guest is
    /// stopped meanwhile); then the migration is cancelled and the guest resumes on the source.
    pub cancel_timeout_ms: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            copy_mode: CopyMode::Background,
            write_blocking_after_ms: Some(60_000),
            ready_timeout_ms: 600_000,
            stall_timeout_ms: default_stall_timeout_ms(),
            cancel_timeout_ms: 30_000,
        }
    }
}

fn default_stall_timeout_ms() -> u64 {
    30_000
}

impl StorageSettings {
    /// The default settings with the mirror's READY wait bounded by a migration's deadline,
    /// `deadline_ms` (the request's `deadline_s`, which bounds its pre-copy): the disk's copy
    /// gets the same budget as the memory's, so a storage pre-copy takes at most about twice
    /// the deadline before it is given up.
    pub fn within_deadline(deadline_ms: u64) -> Self {
        StorageSettings {
            ready_timeout_ms: deadline_ms,
            ..StorageSettings::default()
        }
    }
}

/// The steps of a storage pre-copy, as errors and logs name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum StorageStep {
    /// Destination `nbd-server-start`.
    ServerStart,
    /// Destination `block-export-add` of its disk.
    ExportAdd,
    /// Source `blockdev-add` of the NBD client node.
    TargetAdd,
    /// Source `blockdev-mirror`.
    MirrorStart,
    /// Waiting for the mirror to become READY (`query-block-jobs`).
    MirrorReady,
    /// Source `block-job-change` to write-blocking.
    CopyModeChange,
    /// The memory migration up to `pre-switchover`.
    Memory,
    /// Source `block-job-cancel` at switchover and its last sync.
    MirrorCancel,
    /// Source `blockdev-del` of the NBD client node.
    TargetDelete,
    /// Source `migrate-continue`.
    MigrateContinue,
    /// Destination `nbd-server-stop`.
    ServerStop,
}

impl StorageStep {
    /// The step's name, as it appears in errors.
    pub fn name(self) -> &'static str {
        match self {
            StorageStep::ServerStart => "destination nbd-server-start",
            StorageStep::ExportAdd => "destination block-export-add",
            StorageStep::TargetAdd => "source blockdev-add (NBD target)",
            StorageStep::MirrorStart => "source blockdev-mirror",
            StorageStep::MirrorReady => "mirror READY wait",
            StorageStep::CopyModeChange => "source block-job-change (write-blocking)",
            StorageStep::Memory => "memory migration",
            StorageStep::MirrorCancel => "source block-job-cancel at switchover",
            StorageStep::TargetDelete => "source blockdev-del (NBD target)",
            StorageStep::MigrateContinue => "source migrate-continue",
            StorageStep::ServerStop => "destination nbd-server-stop",
        }
    }
}

/// Where a storage pre-copy is. Times are ms on the driver's clock.
#[derive(Debug, Clone, PartialEq)]
pub enum StoragePhase {
    Idle,
    /// The destination's NBD server listens.
    ServerUp,
    /// The destination exports its disk.
    Exported,
    /// The source has its NBD client node.
    Attached,
    /// The mirror job runs, not yet READY.
    Mirroring {
        started_ms: u64,
        write_blocking: bool,
    },
    /// The mirror is READY; the memory migration may run.
    Ready {
        started_ms: u64,
        ready_ms: u64,
    },
    /// At `pre-switchover`: the mirror was cancelled and finishes its last sync.
    Cancelling {
        times: MirrorTimes,
    },
    /// The mirror ended; its point-in-time copy is on the destination.
    Concluded {
        times: MirrorTimes,
    },
    /// The NBD node is gone from the source.
    Detached {
        times: MirrorTimes,
    },
    /// `migrate-continue` was accepted; the memory migration switches over.
    Continued {
        times: MirrorTimes,
    },
    /// The guest runs on the destination; its NBD server is still up.
    Moved {
        times: MirrorTimes,
    },
    /// The destination's NBD server stopped: nothing of the storage migration is left.
    Done {
        times: MirrorTimes,
    },
    /// A step failed; `from` is the phase it failed in (what [`StorageMachine::cleanup`] undoes).
    Failed {
        step: StorageStep,
        message: String,
        from: Box<StoragePhase>,
    },
}

impl StoragePhase {
    /// The phase's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            StoragePhase::Idle => "idle",
            StoragePhase::ServerUp => "server-up",
            StoragePhase::Exported => "exported",
            StoragePhase::Attached => "attached",
            StoragePhase::Mirroring { .. } => "mirroring",
            StoragePhase::Ready { .. } => "ready",
            StoragePhase::Cancelling { .. } => "cancelling",
            StoragePhase::Concluded { .. } => "concluded",
            StoragePhase::Detached { .. } => "detached",
            StoragePhase::Continued { .. } => "continued",
            StoragePhase::Moved { .. } => "moved",
            StoragePhase::Done { .. } => "done",
            StoragePhase::Failed { .. } => "failed",
        }
    }

    fn times(&self) -> Option<MirrorTimes> {
        match self {
            StoragePhase::Mirroring { started_ms, .. } => Some(MirrorTimes {
                started_ms: *started_ms,
                ..MirrorTimes::default()
            }),
            StoragePhase::Ready {
                started_ms,
                ready_ms,
            } => Some(MirrorTimes {
                started_ms: *started_ms,
                ready_ms: Some(*ready_ms),
                ..MirrorTimes::default()
            }),
            StoragePhase::Cancelling { times }
            | StoragePhase::Concluded { times }
            | StoragePhase::Detached { times }
            | StoragePhase::Continued { times }
            | StoragePhase::Moved { times }
            | StoragePhase::Done { times } => Some(*times),
            StoragePhase::Failed { from, .. } => from.times(),
            _ => None,
        }
    }
}

/// The mirror's instants, ms on the driver's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MirrorTimes {
    /// `blockdev-mirror` accepted.
    pub started_ms: u64,
    /// First seen READY.
    pub ready_ms: Option<u64>,
    /// `block-job-cancel` issued (at `pre-switchover`).
    pub cancel_ms: Option<u64>,
    /// The cancelled mirror seen concluded (its last sync done).
    pub concluded_ms: Option<u64>,
}

/// One look at the mirror job (`query-block-jobs`), as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorLook {
    /// When the answer arrived, ms (driver clock).
    pub now_ms: u64,
    /// The job as QEMU lists it; None when it is not listed at all.
    pub job: Option<MirrorJob>,
}

/// The fields of QEMU's `BlockJobInfo` Drover reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorJob {
    /// Progress: bytes copied so far, re-copies of blocks the guest dirtied again included.
    pub offset: u64,
    /// Bytes the job expects to copy in all (grows while the guest dirties blocks).
    pub len: u64,
    /// Source and target are in step (QEMU's BLOCK_JOB_READY has happened).
    pub ready: bool,
    /// QEMU's `JobStatus` name, e.g. `running`, `ready`, `concluded`.
    pub status: String,
    /// Why the job failed, when it did.
    pub error: Option<String>,
}

impl MirrorJob {
    /// The job has ended (with or without an error) and waits to be dismissed.
    pub fn concluded(&self) -> bool {
        matches!(self.status.as_str(), "concluded" | "null")
    }
}

/// What to do after a look at a mirror that is not READY yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorVerdict {
    /// Keep looking.
    Wait,
    /// It became READY (the machine is now `Ready`).
    Ready,
    /// Ask QEMU to switch the job to write-blocking (`block-job-change`), then keep looking.
    SwitchToWriteBlocking,
    /// It failed, or ran out of time: fail at [`StorageStep::MirrorReady`] with this message.
    Fail(String),
}

/// One thing to undo after a failure, in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupStep {
    /// `block-job-cancel` with `force` (a READY job is abandoned at once), then wait for it to
    /// conclude and `job-dismiss` it.
    CancelMirror,
    /// `blockdev-del` of the source's NBD client node.
    DeleteTarget,
    /// `nbd-server-stop` on the destination (it removes the export too).
    StopServer,
}

/// Which storage migration ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum StorageMode {
    /// The disk mirrored to the destination before the switchover (this module).
    #[default]
    Precopy,
    /// The destination runs on an overlay of the source's NBD export and pulls the disk after
    /// the switchover (`storage_postcopy`).
    Postcopy,
    /// The hottest blocks pushed ahead in rounds and a freeze, the rest pulled after the
    /// switchover as in a post-copy (`storage_hybrid`).
    Hybrid,
}

impl StorageMode {
    /// The wire's name (`precopy`, `postcopy`, `hybrid`).
    pub fn name(self) -> &'static str {
        match self {
            StorageMode::Precopy => "precopy",
            StorageMode::Postcopy => "postcopy",
            StorageMode::Hybrid => "hybrid",
        }
    }
}

impl std::fmt::Display for StorageMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for StorageMode {
    type Err = String;

    /// Reads the wire's names; the error says what is accepted.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "precopy" => Ok(StorageMode::Precopy),
            "postcopy" => Ok(StorageMode::Postcopy),
            "hybrid" => Ok(StorageMode::Hybrid),
            _ => Err("expected precopy, postcopy or hybrid".into()),
        }
    }
}

/// What a storage migration did; part of a migration's record. The mirror's fields are a
/// pre-copy's, the stream's a post-copy's; the other mode leaves them None.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StorageRecord {
    /// Which mode ran (records from before post-copy existed read as pre-copy).
    #[serde(default)]
    pub mode: StorageMode,
    /// Bytes the block job processed, bytes: QEMU's job progress at its last look. A mirror
    /// counts the whole disk once plus every block the guest dirtied again while it ran (zero
    /// areas count in full but cross the wire as NBD write-zeroes requests, so on a sparse
    /// disk the network carries far less; NBD framing is not counted). A stream counts every
    /// byte of the disk once, whether pulled from the source or already in the overlay (read
    /// by the guest through copy-on-read, or written by it).
    pub transferred_bytes: u64,
    /// The disk's size as the job saw it at its last look (QEMU's job `len`), bytes.
    pub disk_bytes: u64,
    /// Mirror start until READY, ms (None: never READY).
    pub mirror_to_ready_ms: Option<u64>,
    /// READY until the mirror was cancelled at switchover, ms: the memory migration's pre-copy.
    pub ready_to_cancel_ms: Option<u64>,
    /// Cancel until the mirror concluded, ms: its last sync, spent inside the guest's pause.
    pub cancel_to_concluded_ms: Option<u64>,
    /// The mirror ended in write-blocking mode (started so, or switched).
    pub write_blocking: bool,
    /// Post-copy: `block-stream` accepted until the stream job concluded, ms, stalls included
    /// (None: no stream ran, or it has not ended).
    #[serde(default)]
    pub stream_ms: Option<u64>,
    /// Post-copy: times the stream stalled (paused on an I/O error, or no progress for the
    /// settings' stall limit) and was resumed or left stalled.
    #[serde(default)]
    pub stream_stalls: u32,
    /// Hybrid: bytes in the hot set's bitmap (the blocks chosen to go ahead).
    #[serde(default)]
    pub hot_bytes: u64,
    /// Hybrid: bytes every push job copied before the switchover: the hot set, each round's
    /// dirty blocks, the freeze's (their job lengths; zero areas count in full).
    #[serde(default)]
    pub pushed_bytes: u64,
    /// Hybrid: rounds of re-copying dirty blocks after the hot set.
    #[serde(default)]
    pub push_rounds: u32,
    /// Hybrid: bytes the freeze copied while the guest was stopped (the mirror of new
    /// writes' whole job, whose last sync is in the freeze, and the tracking bitmap's copy).
    #[serde(default)]
    pub freeze_bytes: u64,
    /// Hybrid: the freeze's copy, ms (inside the guest's pause).
    #[serde(default)]
    pub freeze_ms: Option<u64>,
    /// Hybrid: how much the destination's overlay file grew from the switchover to the
    /// stream's end, bytes: the data pulled after the switchover (on demand and by the
    /// stream; zero areas take no space) plus clusters the guest newly wrote there and qcow2
    /// metadata. QEMU's stream progress counts the whole disk, pulled or not; this is the
    /// figure for what actually came. None: not measured.
    #[serde(default)]
    pub pulled_bytes: Option<u64>,
    /// The step that failed and why; None when the storage migration completed.
    pub error: Option<String>,
}

/// Transition errors of [`StorageMachine`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StorageError {
    #[error("storage event '{event}' is not valid in phase '{phase}'")]
    InvalidTransition {
        phase: &'static str,
        event: &'static str,
    },
}

/// Events the storage sequencing reports.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageEvent {
    ServerStarted,
    Exported,
    TargetAttached,
    MirrorStarted {
        now_ms: u64,
        write_blocking: bool,
    },
    /// `block-job-change` to write-blocking was accepted.
    SwitchedToWriteBlocking,
    /// A look at the job; moves `Mirroring` to `Ready` once QEMU says ready. Valid in any
    /// phase where the job exists (it refreshes the record's byte counts).
    MirrorLooked(MirrorLook),
    /// The source QEMU reached `pre-switchover` and `block-job-cancel` was accepted.
    SwitchoverReached {
        now_ms: u64,
    },
    /// The cancelled job concluded without an error.
    MirrorConcluded {
        now_ms: u64,
    },
    TargetDetached,
    Continued,
    /// The memory migration completed and the guest runs on the destination.
    MemoryMoved,
    ServerStopped,
    Failed {
        step: StorageStep,
        message: String,
    },
}

impl StorageEvent {
    fn name(&self) -> &'static str {
        match self {
            StorageEvent::ServerStarted => "server-started",
            StorageEvent::Exported => "exported",
            StorageEvent::TargetAttached => "target-attached",
            StorageEvent::MirrorStarted { .. } => "mirror-started",
            StorageEvent::SwitchedToWriteBlocking => "switched-to-write-blocking",
            StorageEvent::MirrorLooked(_) => "mirror-looked",
            StorageEvent::SwitchoverReached { .. } => "switchover-reached",
            StorageEvent::MirrorConcluded { .. } => "mirror-concluded",
            StorageEvent::TargetDetached => "target-detached",
            StorageEvent::Continued => "continued",
            StorageEvent::MemoryMoved => "memory-moved",
            StorageEvent::ServerStopped => "server-stopped",
            StorageEvent::Failed { .. } => "failed",
        }
    }
}

/// The storage pre-copy of one disk.
#[derive(Debug, Clone)]
pub struct StorageMachine {
    settings: StorageSettings,
    phase: StoragePhase,
    /// The last look at the job that listed it.
    last_job: Option<MirrorJob>,
    /// The mirror's progress (bytes copied) and when it last grew, ms.
    progress: Option<(u64, u64)>,
    /// Write-blocking was asked for (at start or by a switch).
    write_blocking: bool,
}

impl StorageMachine {
    pub fn new(settings: StorageSettings) -> Self {
        StorageMachine {
            settings,
            phase: StoragePhase::Idle,
            last_job: None,
            progress: None,
            write_blocking: false,
        }
    }

    pub fn settings(&self) -> &StorageSettings {
        &self.settings
    }

    pub fn phase(&self) -> &StoragePhase {
        &self.phase
    }

    /// Applies one event; on error the phase is unchanged.
    pub fn handle(&mut self, event: StorageEvent) -> Result<(), StorageError> {
        use StorageEvent as E;
        use StoragePhase as P;
        let next = match (&self.phase, &event) {
            (P::Idle, E::ServerStarted) => P::ServerUp,
            (P::ServerUp, E::Exported) => P::Exported,
            (P::Exported, E::TargetAttached) => P::Attached,
            (
                P::Attached,
                E::MirrorStarted {
                    now_ms,
                    write_blocking,
                },
            ) => {
                self.write_blocking = *write_blocking;
                P::Mirroring {
                    started_ms: *now_ms,
                    write_blocking: *write_blocking,
                }
            }
            (P::Mirroring { started_ms, .. }, E::SwitchedToWriteBlocking) => {
                self.write_blocking = true;
                P::Mirroring {
                    started_ms: *started_ms,
                    write_blocking: true,
                }
            }
            (p, E::MirrorLooked(look)) if p.times().is_some() => self.looked(look),
            (P::Ready { .. }, E::SwitchoverReached { now_ms }) => P::Cancelling {
                times: self.times_with(|t| t.cancel_ms = Some(*now_ms)),
            },
            (P::Cancelling { .. }, E::MirrorConcluded { now_ms }) => P::Concluded {
                times: self.times_with(|t| t.concluded_ms = Some(*now_ms)),
            },
            (P::Concluded { times }, E::TargetDetached) => P::Detached { times: *times },
            (P::Detached { times }, E::Continued) => P::Continued { times: *times },
            (P::Continued { times }, E::MemoryMoved) => P::Moved { times: *times },
            (P::Moved { times }, E::ServerStopped) => P::Done { times: *times },
            (p, E::Failed { step, message }) if !matches!(p, P::Done { .. } | P::Failed { .. }) => {
                P::Failed {
                    step: *step,
                    message: message.clone(),
                    from: Box::new(p.clone()),
                }
            }
            (p, e) => {
                return Err(StorageError::InvalidTransition {
                    phase: p.name(),
                    event: e.name(),
                })
            }
        };
        self.phase = next;
        Ok(())
    }

    fn times_with(&self, set: impl FnOnce(&mut MirrorTimes)) -> MirrorTimes {
        let mut t = self.phase.times().unwrap_or_default();
        set(&mut t);
        t
    }

    /// A look keeps the job's counters; a READY job moves `Mirroring` to `Ready`.
    fn looked(&mut self, look: &MirrorLook) -> StoragePhase {
        if let Some(job) = &look.job {
            self.last_job = Some(job.clone());
            let grew = self.progress.is_none_or(|(offset, _)| job.offset > offset);
            if grew {
                self.progress = Some((job.offset, look.now_ms));
            }
        }
        match (&self.phase, &look.job) {
            (StoragePhase::Mirroring { started_ms, .. }, Some(job))
                if job.ready && !job.concluded() =>
            {
                StoragePhase::Ready {
                    started_ms: *started_ms,
                    ready_ms: look.now_ms,
                }
            }
            (p, _) => p.clone(),
        }
    }

    /// Judges a look at a mirror that is not READY yet (call after handing the look to
    /// [`StorageMachine::handle`]): READY, a failed or vanished job, a mirror that stopped
    /// progressing (the settings' stall timeout, measured over the looks handed to `handle`),
    /// the READY deadline, or the switch of a lagging background mirror to write-blocking
    /// (once).
    pub fn judge(&self, look: &MirrorLook) -> MirrorVerdict {
        let started_ms = match &self.phase {
            StoragePhase::Ready { .. } => return MirrorVerdict::Ready,
            StoragePhase::Mirroring { started_ms, .. } => *started_ms,
            other => {
                return MirrorVerdict::Fail(format!("mirror judged in phase '{}'", other.name()))
            }
        };
        let Some(job) = &look.job else {
            return MirrorVerdict::Fail("the mirror job is gone".into());
        };
        if let Some(error) = &job.error {
            return MirrorVerdict::Fail(format!("the mirror failed: {error}"));
        }
        if job.concluded() {
            return MirrorVerdict::Fail(format!("the mirror ended early ({})", job.status));
        }
        let elapsed = look.now_ms.saturating_sub(started_ms);
        if let Some((offset, since_ms)) = self.progress {
            let still = look.now_ms.saturating_sub(since_ms);
            if still > self.settings.stall_timeout_ms {
                return MirrorVerdict::Fail(format!(
                    "the mirror copied nothing for {still} ms ({offset} of {} bytes copied): \
                     the link to the destination is down or the destination is gone",
                    job.len
                ));
            }
        }
        if elapsed > self.settings.ready_timeout_ms {
            return MirrorVerdict::Fail(format!(
                "the mirror was not READY after {} ms ({} of {} bytes copied)",
                self.settings.ready_timeout_ms, job.offset, job.len
            ));
        }
        match self.settings.write_blocking_after_ms {
            Some(after) if !self.write_blocking && elapsed > after => {
                MirrorVerdict::SwitchToWriteBlocking
            }
            _ => MirrorVerdict::Wait,
        }
    }

    /// What a failure leaves to undo, in order: nothing before the server started; the mirror
    /// only while its job exists; the NBD node until it was deleted; the server always.
    pub fn cleanup(&self) -> Vec<CleanupStep> {
        let StoragePhase::Failed { from, .. } = &self.phase else {
            return vec![];
        };
        use StoragePhase as P;
        let (mirror, target, server) = match from.as_ref() {
            P::Idle => (false, false, false),
            P::ServerUp | P::Exported => (false, false, true),
            P::Attached => (false, true, true),
            P::Mirroring { .. } | P::Ready { .. } | P::Cancelling { .. } => (true, true, true),
            P::Concluded { .. } => (false, true, true),
            P::Detached { .. } | P::Continued { .. } | P::Moved { .. } => (false, false, true),
            P::Done { .. } | P::Failed { .. } => (false, false, false),
        };
        [
            (mirror, CleanupStep::CancelMirror),
            (target, CleanupStep::DeleteTarget),
            (server, CleanupStep::StopServer),
        ]
        .into_iter()
        .filter_map(|(owed, step)| owed.then_some(step))
        .collect()
    }

    /// The record so far.
    pub fn record(&self) -> StorageRecord {
        let t = self.phase.times().unwrap_or_default();
        let between = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
        let error = match &self.phase {
            StoragePhase::Failed { step, message, .. } => {
                Some(format!("storage step '{}' failed: {message}", step.name()))
            }
            _ => None,
        };
        StorageRecord {
            mode: StorageMode::Precopy,
            transferred_bytes: self.last_job.as_ref().map_or(0, |j| j.offset),
            disk_bytes: self.last_job.as_ref().map_or(0, |j| j.len),
            mirror_to_ready_ms: between(Some(t.started_ms), t.ready_ms),
            ready_to_cancel_ms: between(t.ready_ms, t.cancel_ms),
            cancel_to_concluded_ms: between(t.cancel_ms, t.concluded_ms),
            write_blocking: self.write_blocking,
            error,
            ..StorageRecord::default()
        }
    }
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
