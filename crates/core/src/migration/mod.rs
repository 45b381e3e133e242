//! Live migration: techniques, cost model, watchdog, both sides' state machines, results.
//!
//! Data flow of one run: [`plan::MigrationPlan`] (technique chosen, by hand or by
//! [`cost::choose`]) -> the driver applies its capabilities/parameters -> the driver feeds QEMU's
//! progress to [`source::SourceMachine`] (which consults [`watchdog::Watchdog`]) and the
//! destination's state to [`dest::DestMachine`] -> [`result::MigrationResult`].
//!
//! A VM's local disk moves by [`storage`] (pre-copy: mirrored before the switchover) or
//! [`storage_postcopy`] (the destination runs on the source's export and streams it after) or
//! [`storage_hybrid`] (the hottest blocks pushed ahead, the rest streamed after).
//!
//! Over a WAN with local disks, [`wan`] predicts and picks the fractions of memory and disk to
//! copy ahead (fractional hybrid, restoration agility); [`storage_hybrid`] carries out a storage
//! fraction, nothing runs a plan's choice end to end yet.

pub mod agility;
pub mod cost;
pub mod dest;
pub mod group;
pub mod knobs;
pub mod plan;
pub mod progress;
pub mod result;
pub mod resume;
pub mod source;
pub mod stall;
pub mod storage;
pub mod storage_hybrid;
pub mod storage_postcopy;
pub mod technique;
pub mod wan;
pub mod watchdog;

pub use cost::{choose, pick, predict, Choice, CostParams, LinkProfile, Prediction, VmProfile};
pub use dest::{DestEvent, DestMachine, DestObservation, DestState};
pub use knobs::{KnobError, PlanKnobs, UNCAPPED_BPS};
pub use plan::{Capability, MigrationPlan, ParameterUpdate};
pub use progress::{paused_by_migration, MigrationStatus, Progress, RamProgress};
pub use result::{MigrationResult, OpsSample, RunFacts, Throughput};
pub use resume::{
    DestAnswer, ResumeAction, ResumeEnd, ResumeLook, ResumeMachine, ResumeParams, ResumeState,
};
pub use source::{EndStatus, SourceAction, SourceEvent, SourceMachine, SourceOutcome, SourceState};
pub use storage::{
    CleanupStep, CopyMode, MirrorJob, MirrorLook, MirrorVerdict, StorageError, StorageEvent,
    StorageMachine, StorageMode, StoragePhase, StorageRecord, StorageSettings, StorageStep,
};
pub use storage_hybrid::{
    mirror_ready_for_freeze, ByteRange, HotSet, HybridCleanup, HybridError, HybridEvent,
    HybridMachine, HybridPhase, HybridSettings, HybridStep, PushFigures, PushVerdict, RoundVerdict,
};
pub use storage_postcopy::{
    PostcopyCleanup, PostcopyError, PostcopyEvent, PostcopyMachine, PostcopyOutcome, PostcopyPhase,
    PostcopySettings, PostcopyStep, StreamLook, StreamTimes, StreamVerdict,
};
pub use technique::{HybridSwitch, Technique};
pub use watchdog::{ThrottleKind, Watchdog, WatchdogAction, WatchdogPolicy};
