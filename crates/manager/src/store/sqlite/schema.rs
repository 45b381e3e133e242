//! The SQLite store's schema, as an ordered list of migrations, and the code that brings a file
//! up to date: each migration in its own immediate transaction, with its row in
//! `schema_version`, so a file is always at exactly one version; a file at a newer version
//! than this build knows is refused and left untouched.

use crate::store::error::{Result, StoreError};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

/// One step of the schema. Never edit a released migration: add the next one.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
    /// Rewrites rows the SQL alone cannot (a format SQLite does not know), after `sql`, in
    /// the same transaction.
    pub convert: Option<fn(&Transaction<'_>) -> rusqlite::Result<()>>,
}

/// The schema this build writes.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: V1,
        convert: None,
    },
    Migration {
        version: 2,
        name: "decision output",
        sql: V2,
        convert: None,
    },
    Migration {
        version: 3,
        name: "present VMs",
        sql: V3,
        convert: None,
    },
    Migration {
        version: 4,
        name: "migration results by time",
        sql: V4,
        convert: None,
    },
    Migration {
        version: 5,
        name: "one row of samples a look",
        sql: V5,
        convert: Some(samples_to_frames),
    },
];

/// The version this build writes and understands.
pub fn current_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
-- Six hex digits: the control state's id prefix, so move ids (which agents keep forever)
-- never collide between two stores.
INSERT INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(3))));

CREATE TABLE host (
    name        TEXT PRIMARY KEY,
    agent_url   TEXT NOT NULL,
    idle_w      REAL,
    peak_w      REAL,
    added_s     REAL NOT NULL,
    removed_s   REAL,
    reachable   INTEGER NOT NULL DEFAULT 0,
    last_seen_s REAL
);

CREATE TABLE vm (
    name         TEXT PRIMARY KEY,
    host         TEXT NOT NULL REFERENCES host (name),
    first_seen_s REAL NOT NULL,
    last_seen_s  REAL NOT NULL
);
CREATE INDEX vm_host ON vm (host);

-- A host's or VM's metric history, by a small integer key.
CREATE TABLE series (
    id   INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('host', 'vm')),
    name TEXT NOT NULL,
    UNIQUE (kind, name)
);

-- 1 s samples, clustered by time: a look appends at the end of the tree and compaction
-- removes from its start. No index by series: it would touch a page per series per look.
-- Bytes and bytes/s are whole numbers.
CREATE TABLE sample (
    t      REAL NOT NULL,
    series INTEGER NOT NULL,
    load   REAL NOT NULL,
    cpu    REAL NOT NULL,
    mem    INTEGER NOT NULL,
    dirty  INTEGER,
    rx     INTEGER NOT NULL,
    tx     INTEGER NOT NULL,
    PRIMARY KEY (t, series)
) WITHOUT ROWID;

-- 1-minute rollups, clustered by series: a history read is one range. Bytes and bytes/s are
-- whole numbers (4 to 6 bytes on disk where a REAL takes 8).
CREATE TABLE rollup (
    series     INTEGER NOT NULL,
    start_s    INTEGER NOT NULL,
    n          INTEGER NOT NULL,
    load_mean  REAL NOT NULL,
    load_max   REAL NOT NULL,
    cpu_mean   REAL NOT NULL,
    cpu_max    REAL NOT NULL,
    mem_mean   INTEGER NOT NULL,
    mem_max    INTEGER NOT NULL,
    dirty_n    INTEGER NOT NULL,
    dirty_mean INTEGER,
    dirty_max  INTEGER,
    rx_mean    INTEGER NOT NULL,
    rx_max     INTEGER NOT NULL,
    tx_mean    INTEGER NOT NULL,
    tx_max     INTEGER NOT NULL,
    PRIMARY KEY (series, start_s)
) WITHOUT ROWID;

-- The control step's memory: one row.
CREATE TABLE control (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    at_s REAL NOT NULL,
    body TEXT NOT NULL
);

-- What a step decided from; shared by the plans it made.
CREATE TABLE decision (
    id           INTEGER PRIMARY KEY,
    at_s         REAL NOT NULL,
    observation  TEXT NOT NULL,
    state_before TEXT NOT NULL,
    settings     TEXT NOT NULL
);
CREATE INDEX decision_at ON decision (at_s);

CREATE TABLE plan (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    state       TEXT NOT NULL,
    host        TEXT,
    created_s   REAL NOT NULL,
    updated_s   REAL NOT NULL,
    decision_id INTEGER REFERENCES decision (id) ON DELETE SET NULL,
    body        TEXT NOT NULL
);
CREATE INDEX plan_created ON plan (created_s);
CREATE INDEX plan_state ON plan (state, created_s);
CREATE INDEX plan_decision ON plan (decision_id);

-- A rowid table: the rowid keeps the order moves were first stored in.
CREATE TABLE move (
    id        TEXT NOT NULL UNIQUE,
    plan_id   TEXT NOT NULL REFERENCES plan (id),
    vm        TEXT NOT NULL,
    from_host TEXT NOT NULL,
    to_host   TEXT NOT NULL,
    state     TEXT NOT NULL,
    detail    TEXT,
    updated_s REAL NOT NULL,
    body      TEXT NOT NULL
);
CREATE INDEX move_plan ON move (plan_id);
CREATE INDEX move_vm ON move (vm);
CREATE INDEX move_state ON move (state);

CREATE TABLE move_transition (
    seq        INTEGER PRIMARY KEY,
    move_id    TEXT NOT NULL REFERENCES move (id),
    from_state TEXT,
    to_state   TEXT NOT NULL,
    at_s       REAL NOT NULL,
    detail     TEXT
);
CREATE INDEX move_transition_move ON move_transition (move_id, seq);

CREATE TABLE migration_result (
    move_id TEXT PRIMARY KEY REFERENCES move (id),
    at_s    REAL NOT NULL,
    body    TEXT NOT NULL
);

CREATE TABLE settings (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    version   INTEGER NOT NULL,
    updated_s REAL NOT NULL,
    body      TEXT NOT NULL
);

-- Append-only: nothing updates or deletes a line.
CREATE TABLE journal (
    seq        INTEGER PRIMARY KEY,
    at_s       REAL NOT NULL,
    subject    TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    what       TEXT NOT NULL
);
CREATE INDEX journal_at ON journal (at_s);
CREATE INDEX journal_subject ON journal (subject, subject_id);
"#;

/// A decision also keeps what the step returned (core's `StepOutput`) and the record's format,
/// so an export is a whole `control::Decision` that replay can check. Rows from version 1 have
/// no output and export as [`StoreError::NoDecision`].
const V2: &str = r#"
ALTER TABLE decision ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
ALTER TABLE decision ADD COLUMN output TEXT;
"#;

/// A look writes a VM's row only when something about it changed: a VM in its host's last
/// answer is `present`, and its last-seen time is then its host's `answered_s` (when its agent
/// last answered; `last_seen_s` is set when the host was reachable, answered or not). Rows
/// from version 2 are not present and keep their own `last_seen_s` until a look lists them.
const V3: &str = r#"
ALTER TABLE host ADD COLUMN answered_s REAL;
ALTER TABLE vm ADD COLUMN present INTEGER NOT NULL DEFAULT 0;
"#;

/// `GET /v1/migrations` lists results newest first: an index by time makes that a walk from
/// the end instead of a sort of every result.
const V4: &str = r#"
CREATE INDEX migration_result_at ON migration_result (at_s);
"#;

/// A look's samples are one row, a frame (`sqlite::frame`), instead of a row a sample: a
/// look writes one row and a compaction deletes one a second. A rowid table (the blob spills
/// into overflow pages), found by time through its unique index. The samples of a version 4
/// file become frames ([`samples_to_frames`]). `meta` holds a compaction's progress.
///
/// A decision's observation and memory are kept packed (`sqlite::packed`) from now on:
/// `packed` 1. Older rows keep their text (`packed` 0).
const V5: &str = r#"
CREATE TABLE frame (
    t    REAL NOT NULL UNIQUE,
    body BLOB NOT NULL
);
ALTER TABLE decision ADD COLUMN packed INTEGER NOT NULL DEFAULT 0;
"#;

/// Version 5's conversion: the `sample` table's rows, read in key order (time, then series),
/// become one frame per time; then `sample` goes.
fn samples_to_frames(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    use super::frame;
    use crate::store::Sample;
    let mut insert = tx.prepare("INSERT INTO frame (t, body) VALUES (?1, ?2)")?;
    let mut read = tx.prepare(
        "SELECT t, series, load, cpu, mem, dirty, rx, tx FROM sample ORDER BY t, series",
    )?;
    let mut rows = read.query([])?;
    let mut at: Option<f64> = None;
    let mut entries: Vec<(i64, Sample)> = Vec::new();
    while let Some(r) = rows.next()? {
        let t: f64 = r.get(0)?;
        if at.is_some_and(|a| a != t) {
            insert.execute(rusqlite::params![at, frame::encode(&entries)])?;
            entries.clear();
        }
        at = Some(t);
        let sample = Sample {
            load: r.get(2)?,
            cpu_cores: r.get(3)?,
            memory_bytes: super::get_u64(r, 4)?,
            dirty_bps: r.get(5)?,
            rx_bps: r.get(6)?,
            tx_bps: r.get(7)?,
        };
        entries.push((r.get(1)?, sample));
    }
    if at.is_some() {
        insert.execute(rusqlite::params![at, frame::encode(&entries)])?;
    }
    drop(rows);
    drop(read);
    tx.execute_batch("DROP TABLE sample")
}

/// Brings the store at `path` (already opened as `conn`) to the last of `migrations`.
///
/// # Errors
/// [`StoreError::NewerSchema`] when the file is at a version past the last migration,
/// [`StoreError::NotOurs`] when it has tables but no `schema_version`,
/// [`StoreError::Migration`] when a migration fails (that migration is rolled back; the ones
/// before it stay).
pub fn migrate(conn: &mut Connection, path: &str, migrations: &[Migration]) -> Result<i64> {
    let supported = migrations.last().map_or(0, |m| m.version);
    let found = found_version(conn, path)?;
    if found > supported {
        return Err(StoreError::NewerSchema {
            path: path.to_string(),
            found,
            supported,
        });
    }
    for m in migrations.iter().filter(|m| m.version > found) {
        apply(conn, path, m)?;
    }
    Ok(supported)
}

/// The file's schema version: 0 for a new, empty file.
fn found_version(conn: &Connection, path: &str) -> Result<i64> {
    let err = |source| StoreError::Open {
        path: path.to_string(),
        source,
    };
    let has_table: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(err)?;
    if has_table.is_none() {
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if tables > 0 {
            return Err(StoreError::NotOurs {
                path: path.to_string(),
            });
        }
        return Ok(0);
    }
    conn.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )
    .map_err(err)
}

fn apply(conn: &mut Connection, path: &str, m: &Migration) -> Result<()> {
    let err = |source| StoreError::Migration {
        path: path.to_string(),
        version: m.version,
        name: m.name,
        source,
    };
    // Immediate: take the write lock first, so two managers opening one file cannot both
    // migrate it.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL DEFAULT (datetime('now'))
         )",
    )
    .map_err(err)?;
    // Another process may have migrated while this one waited for the lock.
    let done: i64 = tx
        .query_row(
            "SELECT count(*) FROM schema_version WHERE version >= ?1",
            [m.version],
            |r| r.get(0),
        )
        .map_err(err)?;
    if done > 0 {
        return tx.commit().map_err(err);
    }
    tx.execute_batch(m.sql).map_err(err)?;
    if let Some(convert) = m.convert {
        convert(&tx).map_err(err)?;
    }
    tx.execute(
        "INSERT INTO schema_version (version, name) VALUES (?1, ?2)",
        rusqlite::params![m.version, m.name],
    )
    .map_err(err)?;
    tx.commit().map_err(err)
}
