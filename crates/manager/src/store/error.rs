//! The store's one error type. Every variant names where it happened: the store's location (its
//! file, or `memory` for the fake), the table, and what was being done.

use std::path::PathBuf;
use thiserror::Error;

/// What went wrong in the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The state directory could not be made or the file could not be opened.
    #[error("store {path}: cannot {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// SQLite refused to open the file or set it up (WAL, busy timeout, foreign keys).
    #[error("store {path}: cannot open: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },

    /// The file was written by a newer Drover: its schema is unknown here, so it is left alone.
    #[error(
        "store {path}: schema version {found} is newer than this manager's {supported}; \
         run a newer Drover or point the manager at another state directory"
    )]
    NewerSchema {
        path: String,
        found: i64,
        supported: i64,
    },

    /// An SQLite file that is not a Drover store (tables, but no `schema_version`).
    #[error("store {path}: not a Drover store (it has tables but no schema_version table)")]
    NotOurs { path: String },

    /// A schema migration failed; its transaction was rolled back, the file keeps the previous
    /// version.
    #[error("store {path}: migration to schema version {version} ({name}) failed: {source}")]
    Migration {
        path: String,
        version: i64,
        name: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// A statement failed; the transaction it was part of was rolled back.
    #[error("store {path}: table {table}: cannot {op}: {source}")]
    Sql {
        path: String,
        table: &'static str,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// A row read back does not hold what the schema promises (a negative count, a wrong
    /// kind): the file was edited or damaged.
    #[error("store {path}: table {table}: {what}")]
    Corrupt {
        path: String,
        table: &'static str,
        what: String,
    },

    /// Input refused before anything was written (a time that is not a finite non-negative
    /// number, an empty name, a row that refers to something not stored).
    #[error("store {path}: {table}: {what}")]
    Invalid {
        path: String,
        table: &'static str,
        what: String,
    },

    /// A host with this name is already in the inventory.
    #[error("store {path}: host {name} already exists")]
    HostExists { path: String, name: String },

    /// No such row.
    #[error("store {path}: {table}: no {key}")]
    NotFound {
        path: String,
        table: &'static str,
        key: String,
    },

    /// The plan exists but its decision record is gone (pruned after its retention) or was
    /// never stored.
    #[error("store {path}: plan {plan} has no stored decision (pruned after retention, or made before decisions were kept)")]
    NoDecision { path: String, plan: String },

    /// The settings changed since the caller read them (optimistic concurrency).
    #[error("store {path}: settings are at version {found}, not {expected}: read them again")]
    SettingsConflict {
        path: String,
        expected: u64,
        found: u64,
    },

    /// A value could not be turned into JSON, or JSON into the type asked for.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// The fake store was told to fail (tests of what callers do when the store fails).
    #[error("store {path}: injected failure in {op}")]
    Injected { path: String, op: &'static str },
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
