//! The manager's state: inventory, metric history, the control step's memory, plans, moves and
//! their transitions, migration results, settings, decisions and the event journal.
//!
//! [`Store`] is the interface; [`SqliteStore`] keeps it in one SQLite file under the manager's
//! state directory ([`sqlite::FILE_NAME`]); [`MemoryStore`] is the fake other modules test
//! with. A server database can implement the same trait later (for a manager with a standby).
//! Core's control types (the step's memory, plans, moves, settings, decisions) cross it typed
//! and are kept as JSON text beside the columns they are queried by; the agents' result records
//! cross it as [`Json`], as the agent sent them.
//!
//! # Tables
//!
//! | table | holds | key, indexes |
//! | --- | --- | --- |
//! | `schema_version` | one row per migration applied | `version` |
//! | `meta` | `store_id` (the control state's id prefix); `compaction`: a minute partly rolled up | `key` |
//! | `host` | inventory: agent URL, power model, added/removed, reachable, last seen | `name` |
//! | `vm` | each VM's host, first and last seen | `name`; `host` |
//! | `series` | a host's or VM's metric series id | `id`; unique `(kind, name)` |
//! | `frame` | one look's samples (load, CPU cores, memory, dirty rate, rx, tx of every series) in one blob (`sqlite::frame`) | unique `t` |
//! | `rollup` | 1-minute mean and max of each | `(series, start_s)`, clustered by series |
//! | `control` | the step's memory (JSON), one row | |
//! | `plan` | id, kind, state, host, created, the plan (JSON) | `id`; `created_s`; `(state, created_s)`; `decision_id` |
//! | `move` | id, plan, VM, hosts, state, detail, the move (JSON) | `id`; `plan_id`; `vm`; `state` |
//! | `move_transition` | every change of a move's state: from, to, at, detail | `seq`; `(move_id, seq)` |
//! | `migration_result` | the agent's result record (JSON) by move id | `move_id`; `at_s` |
//! | `decision` | a step's observation and memory before (JSON, LZ4-packed: `sqlite::packed`), settings and output (JSON), shared by its plans | `id`; `at_s` |
//! | `settings` | the current settings (JSON), version, updated at, one row | |
//! | `journal` | append-only events: at, subject, id, what | `seq`; `at_s`; `(subject, subject_id)` |
//!
//! # Retention ([`Retention`])
//!
//! [`Store::compact`]`(now)` (the manager calls it about once a minute) rolls every whole minute
//! of samples older than `raw_s` (600 s) into one `rollup` row per series (mean and max of each
//! quantity; the dirty rate over the samples that had one) and deletes those samples (the
//! minute's frames); deletes
//! rollups older than `rollup_days` (7) and decisions older than `decision_days` (7). So the
//! samples hold at most `raw_s + 60` seconds and the rollups `rollup_days` of minutes, per
//! series. Inventory, plans, moves, transitions, results and the journal are kept: a few rows per
//! plan or move, small next to the history.
//!
//! # Transactions
//!
//! Every write is one immediate transaction (the write lock is taken at its start):
//! - a look ([`Store::record_look`]): host reachability, the VMs seen that changed (new,
//!   moved, gone), every sample (one frame row), the collector's journal lines;
//! - a step ([`Store::save_step`]): the control state, the journal lines, the plans and moves
//!   changed, a transition for each move whose state changed, the decision. All or nothing: the
//!   manager saves before it carries out any action, so after a crash the stored memory never
//!   lags what the agents were asked;
//! - a look and the step taken on it together ([`Store::record_look_and_step`]): the loop's
//!   one write a look when nothing was acted on (one commit, so one sync);
//! - a compaction or a slice of one, a settings change (with its journal line), a host added
//!   or removed (with its journal line), a migration result.
//!
//! Input is checked before the transaction starts (times finite and non-negative, names not
//! empty, every number of a sample finite and non-negative); references (a move's plan, a
//! decision's plans, a look's hosts, a result's move) are checked inside it, and a failure rolls
//! the whole transaction back.
//!
//! # Versioning
//!
//! `sqlite::schema::MIGRATIONS` is an ordered list; opening a file applies each migration past
//! its version in its own transaction, recording it in `schema_version`. A file at a newer
//! version than this build knows is refused ([`StoreError::NewerSchema`], naming the file, its
//! version and ours) and left untouched; an SQLite file with tables but no `schema_version`
//! is refused as not a Drover store. A migration may rewrite rows SQL alone cannot (its
//! `convert`, in the same transaction): version 5 turns a version 4 file's sample rows into
//! frames.
//!
//! # Sizing (1,000 hosts and 10,000 VMs reporting every second)
//!
//! A look is one transaction with the step taken on it: one frame (every sample of the look,
//! about 34 bytes a sample with SQLite's pages: 370 KB), 1,000 host updates, and only the VM
//! rows that changed (a VM new, moved, or no longer listed by its host: `sqlite::metrics`),
//! through prepared statements. Frames are keyed by time, so a look appends at the end; that
//! is why [`Store::history`] of one series reads the raw window's frames (at most `raw_s + 60`
//! seconds of them, keeping that series' entry of each; the rollups are one range). To read
//! many series, [`Store::histories`] reads that window once. Rates and bytes are whole
//! numbers (varints in a frame). The write-ahead log is checkpointed by a thread of its own,
//! so a commit only appends to the log and syncs it.
//!
//! Compaction rolls up a minute (60 frames, 660,000 samples) into 11,000 rollup rows and
//! deletes the frames: about 170 ms in one transaction, so the loop does it in slices
//! ([`Store::compact_slice`], 50 by default: 6 frames folded, or 275 rollups stored, a look)
//! until nothing due is left (`sqlite::compact`).
//!
//! Measured (`tests/sizing.rs` and `drover manager bench`, on a shared 2-core machine under a
//! load of 5 to 9): a look's frame and rows take about 16 ms to write with their commit; a
//! rollup row takes 100 bytes once a series has a day of minutes. So 11,000 samples a second
//! write about 1.3 GB an hour as frames, of which compaction keeps the last 10-11 minutes (about
//! 240 MB); it writes 11,000 rollup rows a minute (66 MB an hour, 1.6 GB a day: about 11 GB at
//! the default 7 days). Both tables are bounded by the retention, whatever the uptime. A
//! decision is about 2.9 MB of JSON, stored LZ4-packed in 0.67 MB. Reading back two minutes of samples:
//! one VM's 37 ms, every VM's 1.0 s (so about 5 s for the whole raw window after a restart;
//! ask for less when less is needed).

mod error;
mod memory;
mod records;
mod rollup;
pub mod sqlite;
mod types;
mod validate;

#[cfg(test)]
mod tests;

use drover_core::control::{ControlSettings, Decision};
pub use error::{Result, StoreError};
pub use memory::MemoryStore;
pub use records::{
    JournalEntry, JournalQuery, JournalRow, MigrationQuery, MigrationResult, MigrationRow,
    MoveQuery, MoveRow, PlanQuery, PlanRow, SavedState, SettingsRecord, StepRecord, Transition,
    MAX_READ,
};
pub use sqlite::SqliteStore;
use std::collections::BTreeMap;
pub use types::{
    Compacted, History, HostLook, HostRecord, HostSpec, Json, Look, MeanMax, Point, PowerModel,
    Retention, Rollup, Sample, SeriesKey, SeriesKind, VmLook, VmRecord,
};

/// The manager's state, wherever it is kept. Every method is one transaction; reads see only
/// committed writes. Times are the manager's clock, in seconds.
pub trait Store: Send + Sync {
    /// Where the store is, for messages (a file path, `:memory:`, `memory`).
    fn location(&self) -> &str;

    /// This store's id, made when the store was: the control state's `id_prefix`.
    fn store_id(&self) -> Result<String>;

    // Inventory.

    /// Adds a host; refused ([`StoreError::HostExists`]) if one by that name is in the
    /// inventory. A removed host may be added again (its history is kept).
    fn add_host(&self, spec: &HostSpec, at_s: f64) -> Result<()>;

    /// Adds a host, or updates its agent URL and power model (the configuration, applied at
    /// every start). Journals a change, not a repeat.
    fn put_host(&self, spec: &HostSpec, at_s: f64) -> Result<()>;

    /// Marks a host removed ([`StoreError::NotFound`] if it is not in the inventory).
    fn remove_host(&self, name: &str, at_s: f64) -> Result<()>;

    /// Every host ever added, removed ones included, by name.
    fn hosts(&self) -> Result<Vec<HostRecord>>;

    /// Every VM seen, by name.
    fn vms(&self) -> Result<Vec<VmRecord>>;

    // Metric history.

    /// Stores one look: hosts' reachability, the VMs seen and where, every sample, the
    /// collector's journal lines. A host not in the inventory refuses the whole look.
    fn record_look(&self, look: &Look) -> Result<()>;

    /// A series' history since `since_s`: rollups, then 1 s samples, oldest first. Empty for a
    /// series never recorded.
    fn history(&self, series: &SeriesKey, since_s: f64) -> Result<History>;

    /// The history since `since_s` of every series of `kind` ever recorded, by name: what
    /// [`Store::history`] of each returns, in one read (the forecasts, after a restart).
    fn histories(&self, kind: SeriesKind, since_s: f64) -> Result<BTreeMap<String, History>>;

    /// Rolls up, and deletes past retention, as of `now_s` (see the module doc).
    fn compact(&self, now_s: f64) -> Result<Compacted>;

    /// A share of [`Store::compact`], so that a large history is compacted a little at each
    /// look instead of in one long write: the oldest due minute's samples of about
    /// 1/`slices` of the series, the retention of 1/`slices` of the series' rollups (in turn),
    /// the decisions past retention. [`Compacted::pending`] says whether due samples are left.
    /// A store whose compaction costs little does it all at once (the default).
    fn compact_slice(&self, now_s: f64, slices: u32) -> Result<Compacted> {
        let _ = slices;
        self.compact(now_s)
    }

    // The control loop.

    /// Stores one step (or operation) atomically: see [`StepRecord`].
    fn save_step(&self, step: &StepRecord) -> Result<()>;

    /// Stores a look and the step taken on it in one transaction, all or nothing: what
    /// [`Store::record_look`] and [`Store::save_step`] store (SQLite: one commit, so one sync
    /// a look).
    fn record_look_and_step(&self, look: &Look, step: &StepRecord) -> Result<()>;

    /// The step's memory as last stored; None for a new store.
    fn control_state(&self) -> Result<Option<SavedState>>;

    /// Appends lines to the journal (events no step records: an operator's command).
    fn append_journal(&self, entries: &[JournalEntry]) -> Result<()>;

    fn plan(&self, id: &str) -> Result<Option<PlanRow>>;

    /// Plans, newest first, at most `query.limit` (and [`MAX_READ`]).
    fn plans(&self, query: &PlanQuery) -> Result<Vec<PlanRow>>;

    /// Moves, in the order first stored, at most `query.limit` (and [`MAX_READ`]).
    fn moves(&self, query: &MoveQuery) -> Result<Vec<MoveRow>>;

    /// A move's transitions, in order.
    fn transitions(&self, move_id: &str) -> Result<Vec<Transition>>;

    /// What the step that made `plan_id` decided from and returned, replayable
    /// ([`Decision::reproduces`]); [`StoreError::NotFound`] for an unknown plan,
    /// [`StoreError::NoDecision`] when it was pruned.
    fn export_decision(&self, plan_id: &str) -> Result<Decision>;

    /// Stores (or replaces) the agent's result record of a stored move.
    fn put_result(&self, result: &MigrationResult) -> Result<()>;

    /// The result stored for move `move_id`, with the move's columns; None when there is none
    /// (no such move, or its migration has not ended).
    fn migration(&self, move_id: &str) -> Result<Option<MigrationRow>>;

    /// Stored results, newest first (by the time stored, then by move id descending),
    /// filtered and bounded (see [`MigrationQuery`]).
    fn migrations(&self, query: &MigrationQuery) -> Result<Vec<MigrationRow>>;

    /// The current settings; None until first stored.
    fn settings(&self) -> Result<Option<SettingsRecord>>;

    /// Replaces the settings and journals it; returns the new version. With
    /// `expected_version` (0: none stored yet), refused with [`StoreError::SettingsConflict`]
    /// unless the stored version is that one.
    fn put_settings(
        &self,
        settings: &ControlSettings,
        at_s: f64,
        expected_version: Option<u64>,
    ) -> Result<u64>;

    /// Journal lines, filtered and bounded (see [`JournalQuery`]).
    fn journal(&self, query: &JournalQuery) -> Result<Vec<JournalRow>>;
}
