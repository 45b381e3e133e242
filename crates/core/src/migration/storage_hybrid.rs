//! Hybrid storage migration (issue 12 part 2; the fractional hybrid of Zhang, Lam & Wang,
//! `seeds/002_*`, see [`super::wan`]): the hottest fraction of the disk is pushed to the
//! destination ahead of the switchover, in rounds, what is still dirty crosses in a freeze
//! while the guest is stopped, and the rest is pulled after the switchover as in a storage
//! post-copy. This module holds the push half's phases ([`HybridMachine`]), the hot set's
//! selection ([`HotSet::hottest`]) and the record; the pull half is
//! [`super::storage_postcopy::PostcopyMachine`] unchanged (the `qemu` crate's
//! `storage_hybrid` module does the I/O of both).
//!
//! Order. As in a post-copy, the source first exports its disk read-only with
//! `allow-inactive` and the destination is launched on an empty qcow2 overlay `D` backed by
//! that export under a copy-on-read filter. Then the push: the destination exports `D`
//! writable over NBD on its own address (as a storage pre-copy's destination does); the
//! source gets a disabled dirty bitmap `H` of the hot set's clusters (QMP cannot set bits:
//! built offline in a scratch image and merged in) and an enabled one `B` that records guest
//! writes from then on, and an NBD client node `T` for the destination's export. Round 0
//! copies `H` (`blockdev-backup`, sync `bitmap`, bitmap-mode `never`); each further round
//! copies `B` (bitmap-mode `on-success`: what the round copied is cleared, writes made
//! meanwhile stay) until `B` holds less than [`HybridSettings::dirty_threshold_bytes`] or
//! after [`HybridSettings::max_rounds`]. Then a mirror with `sync: none` starts into `T`
//! (it copies every write from then on, in the background: the guest keeps writing through
//! a pre-copy of memory that can take a minute over a WAN, and a freeze of all it wrote
//! would stop it for seconds; a backup would do it too, but its copy-before-write makes each
//! guest write to a block being copied wait for the WAN) and `B` is disabled (it keeps the
//! writes up to the mirror's start, which the mirror does not have). Then the memory
//! migration runs with `pause-before-switchover`; at `pre-switchover` (source guest stopped)
//! the freeze cancels the mirror (its last sync, then it concludes), copies the disabled
//! `B` once more (the current contents of the blocks written between the last round and the
//! mirror's start), `T` is deleted, the destination stops its NBD server and the migration
//! continues. Every copy into `D` is a sequential job on one writer, each newer than the last,
//! so no older copy of a block overwrites a newer one; blocks outside `H` the guest wrote
//! meanwhile are in `B` and cross too (correct, and cheap). From the switchover on, the
//! post-copy half runs: the source re-activates its disk, `block-stream` pulls what `D` does
//! not hold (a stream never overwrites `D`'s allocated clusters), and the source's server
//! stops.
//!
//! ```text
//!  Idle --DestServerStarted--> DestServerUp --DestExported--> DestExported
//!    --HotBitmapBuilt--> HotMarked --TrackingStarted--> Tracking --TargetAttached--> Attached
//!    Attached --PushStarted--> Pushing{round} --PushConcluded--> Pushed{round}
//!    Pushed --PushStarted--> Pushing{round+1}           (while `next_round` says Push)
//!    Pushed --MirrorStarted--> Mirroring --MemoryStarted--> Migrating
//!    Migrating --FreezeStarted--> Freezing --FreezeConcluded-->
//!    Frozen --Released--> Released --MemoryMoved--> Moved   (the post-copy half goes on)
//!
//!  any phase but Moved/Failed --Failed{step}--> Failed{step, from}
//! ```
//!
//! Any other pairing is a typed [`HybridError::InvalidTransition`] and leaves the phase
//! unchanged. Failures are all before the switchover here (the post-copy half owns what
//! comes after): [`HybridMachine::cleanup`] lists what the push set up, to undo in order
//! (delete `T`, drop the bitmaps, stop the destination's server); the source keeps running
//! on its own disk, which the push only reads; the post-copy half stops the source's export;
//! the destination is the caller's to discard.

use super::storage::{MirrorJob, StorageMode, StorageRecord};
use super::wan::DiskProfile;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The smallest and largest dirty-bitmap granularity QEMU takes, bytes (a power of two).
pub const GRANULARITY_RANGE: (u64, u64) = (512, 1 << 31);

/// Knobs of the push half of a hybrid storage migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HybridSettings {
    /// Rounds of re-copying what the guest dirtied after the hot set, at most (0: the hot
    /// set only, then the freeze).
    pub max_rounds: u32,
    /// Rounds stop once the dirty bitmap holds less than this, bytes: the freeze (guest
    /// stopped) copies at most about this much more.
    pub dirty_threshold_bytes: u64,
    /// Longest wait for one push job to conclude, ms; then the push fails (and is undone).
    pub push_timeout_ms: u64,
    /// Longest wait for the freeze's copy, ms (the guest is stopped meanwhile); then the
    /// memory migration is cancelled and the guest resumes on the source.
    pub freeze_timeout_ms: u64,
    /// The push jobs' rate limit before the switchover, bytes/s (QEMU's `speed`); None:
    /// unlimited. The freeze is never limited: the guest is stopped.
    pub push_speed_bps: Option<u64>,
}

impl Default for HybridSettings {
    fn default() -> Self {
        HybridSettings {
            max_rounds: 5,
            dirty_threshold_bytes: 4 << 20,
            push_timeout_ms: 600_000,
            freeze_timeout_ms: 30_000,
            push_speed_bps: None,
        }
    }
}

impl HybridSettings {
    /// Checks the limits.
    ///
    /// # Errors
    /// [`HybridError::BadSetting`] naming the field and what was expected.
    pub fn validate(&self) -> Result<(), HybridError> {
        let bad = |field: &'static str, expected: &'static str| {
            Err(HybridError::BadSetting { field, expected })
        };
        if self.max_rounds > 100 {
            return bad("max_rounds", "at most 100 rounds");
        }
        if self.push_timeout_ms < 1000 {
            return bad("push_timeout_ms", "at least 1000 ms");
        }
        if self.freeze_timeout_ms < 100 {
            return bad("freeze_timeout_ms", "at least 100 ms");
        }
        if self.push_speed_bps == Some(0) {
            return bad("push_speed_bps", "a rate above 0, or none for unlimited");
        }
        Ok(())
    }
}

/// A stretch of a disk, bytes from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ByteRange {
    pub offset: u64,
    pub len: u64,
}

impl ByteRange {
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// The blocks pushed ahead: ranges aligned to the bitmap's granularity (the last may end at
/// the disk's end), sorted, disjoint, not touching, inside the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HotSet {
    virtual_bytes: u64,
    granularity_bytes: u64,
    ranges: Vec<ByteRange>,
}

impl HotSet {
    /// The hot set of `ranges` on a disk of `virtual_bytes`, each widened to whole granules
    /// of `granularity_bytes` (a bitmap marks whole granules), merged.
    ///
    /// # Errors
    /// [`HybridError::BadHotSet`]: a granularity not a power of two in
    /// [`GRANULARITY_RANGE`], an empty disk, or a range that is empty or passes the disk's
    /// end.
    pub fn from_ranges(
        virtual_bytes: u64,
        granularity_bytes: u64,
        ranges: &[ByteRange],
    ) -> Result<Self, HybridError> {
        let (lo, hi) = GRANULARITY_RANGE;
        if !granularity_bytes.is_power_of_two() || !(lo..=hi).contains(&granularity_bytes) {
            return Err(bad_hot(format!(
                "granularity {granularity_bytes} bytes: expected a power of two from {lo} to {hi}"
            )));
        }
        if virtual_bytes == 0 {
            return Err(bad_hot("a disk of 0 bytes: expected more than 0".into()));
        }
        let mut widened = Vec::with_capacity(ranges.len());
        for r in ranges {
            if r.len == 0 || r.end() > virtual_bytes || r.offset.checked_add(r.len).is_none() {
                return Err(bad_hot(format!(
                    "range at {} of {} bytes: expected a non-empty range inside the disk's \
                     {virtual_bytes} bytes",
                    r.offset, r.len
                )));
            }
            let start = r.offset - r.offset % granularity_bytes;
            let end = r.end().div_ceil(granularity_bytes) * granularity_bytes;
            widened.push((start, end.min(virtual_bytes)));
        }
        widened.sort_unstable();
        let mut merged: Vec<ByteRange> = Vec::new();
        for (start, end) in widened {
            match merged.last_mut() {
                Some(last) if start <= last.end() => last.len = last.len.max(end - last.offset),
                _ => merged.push(ByteRange {
                    offset: start,
                    len: end - start,
                }),
            }
        }
        Ok(HotSet {
            virtual_bytes,
            granularity_bytes,
            ranges: merged,
        })
    }

    /// The hottest `fraction` of the profiled disk's bytes: its regions in the order
    /// [`DiskProfile::hottest_regions`] gives (the fraction model's), whole regions while they
    /// fit, then the head of the next one; widened to granules of `granularity_bytes`, so
    /// the set can exceed `fraction` by up to a granule per region. Region `i` holds the
    /// offsets `o` with `floor(o · n / V) == i` ([`super::wan::count_regions`]'s slices).
    /// No regions (or no counts): the disk's head.
    ///
    /// # Errors
    /// [`HybridError::BadHotSet`]: an invalid profile (the field named), a fraction outside
    /// 0..=1, or a bad granularity (as [`HotSet::from_ranges`]).
    pub fn hottest(
        disk: &DiskProfile,
        fraction: f64,
        granularity_bytes: u64,
    ) -> Result<Self, HybridError> {
        disk.validate().map_err(|e| bad_hot(e.to_string()))?;
        if !(0.0..=1.0).contains(&fraction) {
            return Err(bad_hot(format!(
                "storage fraction {fraction}: expected from 0 to 1"
            )));
        }
        let v = disk.virtual_bytes;
        let n = disk.regions.len().max(1) as u128;
        // First offset of region `r`: the least `o` with `o · n >= r · V`.
        let start_of = |r: u128| ((r * u128::from(v)).div_ceil(n)) as u64;
        let mut left = (fraction * v as f64).round() as u64;
        let mut ranges = Vec::new();
        for i in disk.hottest_regions() {
            if left == 0 {
                break;
            }
            let (start, end) = (start_of(i as u128), start_of(i as u128 + 1));
            let take = left.min(end - start);
            if take > 0 {
                ranges.push(ByteRange {
                    offset: start,
                    len: take,
                });
            }
            left -= take;
        }
        HotSet::from_ranges(v, granularity_bytes, &ranges)
    }

    pub fn virtual_bytes(&self) -> u64 {
        self.virtual_bytes
    }
    /// The dirty bitmap's granularity, bytes.
    pub fn granularity_bytes(&self) -> u64 {
        self.granularity_bytes
    }
    pub fn ranges(&self) -> &[ByteRange] {
        &self.ranges
    }
    /// Bytes in the set.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.len).sum()
    }
}

fn bad_hot(message: String) -> HybridError {
    HybridError::BadHotSet(message)
}

/// The steps of the push half, as errors and logs name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum HybridStep {
    /// The settings' check, before anything started.
    Settings,
    /// Destination `nbd-server-start`.
    DestServerStart,
    /// Destination `block-export-add` of its overlay, writable.
    DestExportAdd,
    /// The hot set's bitmap: scratch image, `blockdev-add`, `block-dirty-bitmap-add`/`-merge`.
    HotBitmap,
    /// Source `block-dirty-bitmap-add` of the tracking bitmap.
    TrackingStart,
    /// Source `blockdev-add` of the NBD client node.
    TargetAdd,
    /// A push round: `blockdev-backup` and its wait.
    Push,
    /// The memory migration up to `pre-switchover`.
    Memory,
    /// The mirror beside the memory migration: `blockdev-mirror` (`sync: none`) and
    /// `block-dirty-bitmap-disable` of the tracking bitmap.
    Mirror,
    /// The freeze's `blockdev-backup` at `pre-switchover`.
    Freeze,
    /// `blockdev-del` of the NBD node, destination `nbd-server-stop`, `migrate-continue`.
    Release,
}

impl HybridStep {
    /// The step's name, as it appears in errors.
    pub fn name(self) -> &'static str {
        match self {
            HybridStep::Settings => "settings check",
            HybridStep::DestServerStart => "destination nbd-server-start",
            HybridStep::DestExportAdd => "destination block-export-add (writable overlay)",
            HybridStep::HotBitmap => "source hot-set bitmap",
            HybridStep::TrackingStart => "source block-dirty-bitmap-add (tracking)",
            HybridStep::TargetAdd => "source blockdev-add (NBD target)",
            HybridStep::Push => "push round (blockdev-backup)",
            HybridStep::Memory => "memory migration",
            HybridStep::Mirror => "mirror of new writes (blockdev-mirror sync none)",
            HybridStep::Freeze => "freeze (blockdev-backup at pre-switchover)",
            HybridStep::Release => "release (target delete, destination server stop, continue)",
        }
    }
}

/// What the push moved so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PushFigures {
    /// Bytes in the hot set's bitmap.
    pub hot_bytes: u64,
    /// Bytes every push job copied (hot set, rounds, freeze): their `len`s.
    pub pushed_bytes: u64,
    /// Rounds after the hot set's copy.
    pub rounds: u32,
    /// Bytes the freeze copied.
    pub freeze_bytes: u64,
    /// The freeze's start, ms.
    pub freeze_started_ms: Option<u64>,
    /// The freeze job's end, ms.
    pub freeze_concluded_ms: Option<u64>,
}

/// Where the push half stands.
#[derive(Debug, Clone, PartialEq)]
pub enum HybridPhase {
    Idle,
    DestServerUp,
    /// The destination exports its overlay writable.
    DestExported,
    /// The source holds the hot set's bitmap.
    HotMarked,
    /// The source's tracking bitmap records guest writes.
    Tracking,
    /// The source's NBD client node for the destination's export exists.
    Attached,
    /// Push `round` runs (0: the hot set); since `started_ms`.
    Pushing {
        round: u32,
        started_ms: u64,
    },
    /// Push `round` concluded.
    Pushed {
        round: u32,
    },
    /// The mirror (`sync: none`) copies new writes into the target; the tracking bitmap is
    /// disabled.
    Mirroring,
    /// The memory migration runs, the mirror beside it.
    Migrating,
    /// At `pre-switchover`: the freeze's copy runs, the guest is stopped.
    Freezing,
    /// The freeze concluded.
    Frozen,
    /// The target is gone, the destination's server stopped, the migration continued.
    Released,
    /// The guest runs on the destination: the post-copy half goes on.
    Moved,
    Failed {
        step: HybridStep,
        message: String,
        from: Box<HybridPhase>,
    },
}

impl HybridPhase {
    /// The phase's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            HybridPhase::Idle => "idle",
            HybridPhase::DestServerUp => "dest-server-up",
            HybridPhase::DestExported => "dest-exported",
            HybridPhase::HotMarked => "hot-marked",
            HybridPhase::Tracking => "tracking",
            HybridPhase::Attached => "attached",
            HybridPhase::Pushing { .. } => "pushing",
            HybridPhase::Pushed { .. } => "pushed",
            HybridPhase::Mirroring => "mirroring",
            HybridPhase::Migrating => "migrating",
            HybridPhase::Freezing => "freezing",
            HybridPhase::Frozen => "frozen",
            HybridPhase::Released => "released",
            HybridPhase::Moved => "moved",
            HybridPhase::Failed { .. } => "failed",
        }
    }

    /// How far the set-up got, for the clean-up: 0 nothing, 1 the destination's server, 2
    /// its export, 3 the hot bitmap, 4 the tracking bitmap, 5 the target node, 6 released.
    fn built(&self) -> u8 {
        match self {
            HybridPhase::Idle => 0,
            HybridPhase::DestServerUp => 1,
            HybridPhase::DestExported => 2,
            HybridPhase::HotMarked => 3,
            HybridPhase::Tracking => 4,
            HybridPhase::Attached
            | HybridPhase::Pushing { .. }
            | HybridPhase::Pushed { .. }
            | HybridPhase::Mirroring
            | HybridPhase::Migrating
            | HybridPhase::Freezing
            | HybridPhase::Frozen => 5,
            HybridPhase::Released | HybridPhase::Moved => 6,
            HybridPhase::Failed { from, .. } => from.built(),
        }
    }
}

/// Events of the push half. Times are ms on the driver's clock.
#[derive(Debug, Clone, PartialEq)]
pub enum HybridEvent {
    DestServerStarted,
    DestExported,
    /// The hot set's bitmap holds `hot_bytes`.
    HotBitmapBuilt {
        hot_bytes: u64,
    },
    TrackingStarted,
    TargetAttached,
    PushStarted {
        now_ms: u64,
    },
    /// The round's job concluded without an error having copied `bytes`.
    PushConcluded {
        bytes: u64,
    },
    /// The mirror runs and the tracking bitmap is disabled.
    MirrorStarted,
    MemoryStarted,
    FreezeStarted {
        now_ms: u64,
    },
    FreezeConcluded {
        now_ms: u64,
        bytes: u64,
    },
    Released,
    MemoryMoved,
    Failed {
        step: HybridStep,
        message: String,
    },
}

impl HybridEvent {
    fn name(&self) -> &'static str {
        match self {
            HybridEvent::DestServerStarted => "dest-server-started",
            HybridEvent::DestExported => "dest-exported",
            HybridEvent::HotBitmapBuilt { .. } => "hot-bitmap-built",
            HybridEvent::TrackingStarted => "tracking-started",
            HybridEvent::TargetAttached => "target-attached",
            HybridEvent::PushStarted { .. } => "push-started",
            HybridEvent::PushConcluded { .. } => "push-concluded",
            HybridEvent::MemoryStarted => "memory-started",
            HybridEvent::MirrorStarted => "mirror-started",
            HybridEvent::FreezeStarted { .. } => "freeze-started",
            HybridEvent::FreezeConcluded { .. } => "freeze-concluded",
            HybridEvent::Released => "released",
            HybridEvent::MemoryMoved => "memory-moved",
            HybridEvent::Failed { .. } => "failed",
        }
    }
}

/// What a look at a push job calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushVerdict {
    Wait,
    /// Concluded without an error, having copied `bytes`: dismiss it.
    Concluded {
        bytes: u64,
    },
    /// Ended with an error, vanished, or over the settings' timeout.
    Fail(String),
}

/// After a push round: another, or on to the memory migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundVerdict {
    /// Copy the tracking bitmap again.
    Push,
    /// Few enough dirty bytes, or the round limit: migrate the memory (the freeze takes
    /// what is left).
    Enough,
}

/// One thing to undo after a failure before the switchover, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HybridCleanup {
    /// Source: force-cancel and dismiss a push job still listed.
    CancelPush,
    /// Source: `blockdev-del` of the NBD client node.
    DeleteTarget,
    /// Source: `block-dirty-bitmap-remove` of both bitmaps (a missing one is no error).
    DropBitmaps,
    /// Destination: `nbd-server-stop`.
    StopDestServer,
}

/// At the freeze: whether the mirror beside the memory migration (`job` as
/// `query-block-jobs` lists it) may be cancelled for its last sync. It must be READY: a
/// mirror cancelled before READY stops without a last sync, and the writes it had not copied
/// would be missing from the destination. Errors say what was found instead.
pub fn mirror_ready_for_freeze(job: Option<&MirrorJob>) -> Result<(), String> {
    match job {
        None => Err("the mirror of new writes is gone".into()),
        Some(j) if j.error.is_some() => Err(format!(
            "the mirror of new writes failed: {}",
            j.error.as_deref().unwrap_or_default()
        )),
        Some(j) if j.ready && j.status == "ready" => Ok(()),
        Some(j) => Err(format!(
            "the mirror of new writes is '{}', not READY: its cancel would skip the last sync",
            j.status
        )),
    }
}

/// Transition and setting errors of [`HybridMachine`] and [`HotSet`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HybridError {
    #[error("storage hybrid event '{event}' is not valid in phase '{phase}'")]
    InvalidTransition {
        phase: &'static str,
        event: &'static str,
    },
    #[error("storage hybrid setting '{field}': expected {expected}")]
    BadSetting {
        field: &'static str,
        expected: &'static str,
    },
    #[error("storage hybrid hot set: {0}")]
    BadHotSet(String),
}

/// The push half of one disk's hybrid storage migration.
#[derive(Debug, Clone)]
pub struct HybridMachine {
    settings: HybridSettings,
    phase: HybridPhase,
    figures: PushFigures,
}

impl HybridMachine {
    pub fn new(settings: HybridSettings) -> Self {
        HybridMachine {
            settings,
            phase: HybridPhase::Idle,
            figures: PushFigures::default(),
        }
    }

    pub fn settings(&self) -> &HybridSettings {
        &self.settings
    }
    pub fn phase(&self) -> &HybridPhase {
        &self.phase
    }
    pub fn figures(&self) -> &PushFigures {
        &self.figures
    }

    /// Applies one event; on error the phase is unchanged.
    pub fn handle(&mut self, event: HybridEvent) -> Result<(), HybridError> {
        use HybridEvent as E;
        use HybridPhase as P;
        let next = match (&self.phase, &event) {
            (P::Idle, E::DestServerStarted) => P::DestServerUp,
            (P::DestServerUp, E::DestExported) => P::DestExported,
            (P::DestExported, E::HotBitmapBuilt { hot_bytes }) => {
                self.figures.hot_bytes = *hot_bytes;
                P::HotMarked
            }
            (P::HotMarked, E::TrackingStarted) => P::Tracking,
            (P::Tracking, E::TargetAttached) => P::Attached,
            (P::Attached, E::PushStarted { now_ms }) => P::Pushing {
                round: 0,
                started_ms: *now_ms,
            },
            (P::Pushed { round }, E::PushStarted { now_ms }) => P::Pushing {
                round: round + 1,
                started_ms: *now_ms,
            },
            (P::Pushing { round, .. }, E::PushConcluded { bytes }) => {
                self.figures.pushed_bytes += bytes;
                self.figures.rounds = *round;
                P::Pushed { round: *round }
            }
            (P::Pushed { .. }, E::MirrorStarted) => P::Mirroring,
            (P::Mirroring, E::MemoryStarted) => P::Migrating,
            (P::Migrating, E::FreezeStarted { now_ms }) => {
                self.figures.freeze_started_ms = Some(*now_ms);
                P::Freezing
            }
            (P::Freezing, E::FreezeConcluded { now_ms, bytes }) => {
                self.figures.freeze_concluded_ms = Some(*now_ms);
                self.figures.freeze_bytes = *bytes;
                self.figures.pushed_bytes += bytes;
                P::Frozen
            }
            (P::Frozen, E::Released) => P::Released,
            (P::Released, E::MemoryMoved) => P::Moved,
            (p, E::Failed { step, message }) if !matches!(p, P::Moved | P::Failed { .. }) => {
                P::Failed {
                    step: *step,
                    message: message.clone(),
                    from: Box::new(p.clone()),
                }
            }
            (p, e) => {
                return Err(HybridError::InvalidTransition {
                    phase: p.name(),
                    event: e.name(),
                })
            }
        };
        self.phase = next;
        Ok(())
    }

    /// Judges a look at the running push (or freeze) job, `job` as `query-block-jobs` lists
    /// it, `now_ms` on the driver's clock: a push over `push_timeout_ms`, a freeze over
    /// `freeze_timeout_ms` fails.
    pub fn judge(&self, job: Option<&MirrorJob>, now_ms: u64) -> PushVerdict {
        let (started, limit_ms) = match &self.phase {
            HybridPhase::Pushing { started_ms, .. } => (*started_ms, self.settings.push_timeout_ms),
            HybridPhase::Freezing => (
                self.figures.freeze_started_ms.unwrap_or(now_ms),
                self.settings.freeze_timeout_ms,
            ),
            p => return PushVerdict::Fail(format!("push judged in phase '{}'", p.name())),
        };
        let Some(job) = job else {
            return PushVerdict::Fail("the push job is gone".into());
        };
        if let Some(error) = &job.error {
            return PushVerdict::Fail(format!("the push failed: {error}"));
        }
        if job.concluded() {
            return PushVerdict::Concluded { bytes: job.len };
        }
        if now_ms.saturating_sub(started) > limit_ms {
            return PushVerdict::Fail(format!(
                "the push did not conclude within {limit_ms} ms ({} of {} bytes)",
                job.offset, job.len
            ));
        }
        PushVerdict::Wait
    }

    /// After a round concluded: another one while the tracking bitmap holds
    /// `dirty_bytes` at or above the threshold and rounds are left.
    pub fn next_round(&self, dirty_bytes: u64) -> RoundVerdict {
        let HybridPhase::Pushed { round } = self.phase else {
            return RoundVerdict::Enough;
        };
        if dirty_bytes >= self.settings.dirty_threshold_bytes && round < self.settings.max_rounds {
            RoundVerdict::Push
        } else {
            RoundVerdict::Enough
        }
    }

    /// What a failure leaves to undo (empty unless failed; nothing after the release).
    pub fn cleanup(&self) -> Vec<HybridCleanup> {
        let HybridPhase::Failed { from, .. } = &self.phase else {
            return vec![];
        };
        let built = from.built();
        let mut steps = Vec::new();
        if matches!(
            from.as_ref(),
            HybridPhase::Pushing { .. }
                | HybridPhase::Mirroring
                | HybridPhase::Migrating
                | HybridPhase::Freezing
        ) {
            steps.push(HybridCleanup::CancelPush);
        }
        if built == 5 {
            steps.push(HybridCleanup::DeleteTarget);
        }
        if (3..=5).contains(&built) {
            steps.push(HybridCleanup::DropBitmaps);
        }
        if (1..=5).contains(&built) {
            steps.push(HybridCleanup::StopDestServer);
        }
        steps
    }

    /// The hybrid's record: the push's figures over the post-copy half's `pull` record
    /// (its stream's bytes, time, stalls), mode [`StorageMode::Hybrid`]; the error is the
    /// push's failure, else the pull's.
    pub fn record(&self, pull: &StorageRecord) -> StorageRecord {
        let f = &self.figures;
        let error = match &self.phase {
            HybridPhase::Failed { step, message, .. } => {
                Some(format!("storage step '{}' failed: {message}", step.name()))
            }
            _ => pull.error.clone(),
        };
        StorageRecord {
            mode: StorageMode::Hybrid,
            hot_bytes: f.hot_bytes,
            pushed_bytes: f.pushed_bytes,
            push_rounds: f.rounds,
            freeze_bytes: f.freeze_bytes,
            freeze_ms: f
                .freeze_started_ms
                .zip(f.freeze_concluded_ms)
                .map(|(a, b)| b.saturating_sub(a)),
            error,
            ..pull.clone()
        }
    }
}

#[cfg(test)]
#[path = "storage_hybrid_tests.rs"]
mod tests;
