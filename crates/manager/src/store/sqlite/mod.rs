//! The SQLite store: one file under the manager's state directory, in WAL mode, brought up to
//! date by [`schema::migrate`] when opened. One connection behind a mutex: the manager writes
//! from one loop, and SQLite serializes writers anyway; a second one, on a thread of its own,
//! checkpoints the write-ahead log (`Checkpointer`).

mod compact;
mod control;
pub mod frame;
mod history;
mod inventory;
mod metrics;
mod packed;
mod results;
pub mod schema;

use super::error::{Result, StoreError};
use super::records::{
    JournalEntry, JournalQuery, JournalRow, MigrationQuery, MigrationResult, MigrationRow,
    MoveQuery, MoveRow, PlanQuery, PlanRow, SavedState, SettingsRecord, StepRecord, Transition,
};
use super::types::{
    Compacted, History, HostRecord, HostSpec, Look, Retention, SeriesKey, SeriesKind, VmRecord,
};
use super::validate;
use super::Store;
use drover_core::control::{ControlSettings, Decision};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The store's file name inside the manager's state directory.
pub const FILE_NAME: &str = "manager.sqlite";

/// How long a statement waits for another process's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Above this the WAL file is truncated after a checkpoint, so one large compaction does not
/// leave a large file behind.
const WAL_LIMIT_BYTES: i64 = 64 << 20;

/// How often the checkpointer copies the write-ahead log into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Pages of write-ahead log past which the writing connection checkpoints by itself, should
/// the checkpointer fall behind (SQLite's default is 1,000 pages, which the manager's looks
/// pass every few seconds at the scale: checkpoints are the checkpointer's job).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// The SQLite implementation of [`Store`].
#[derive(Debug)]
pub struct SqliteStore {
    path: String,
    retention: Retention,
    inner: Mutex<Inner>,
    /// Checkpoints a file's write-ahead log off the writer's thread (None in memory).
    _checkpointer: Option<Checkpointer>,
}

/// A thread with its own connection that checkpoints the write-ahead log every
/// [`CHECKPOINT_EVERY`] (`PRAGMA wal_checkpoint(PASSIVE)`: it copies what it can without
/// waiting for the writer, who goes on appending meanwhile). Copying the log into the
/// database and syncing it is then no part of a look's commit, which only appends to the log
/// and syncs it. Stopped and joined when the store is dropped.
#[derive(Debug)]
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the file at `path`; None when a second connection cannot be
    /// opened (the writer's own automatic checkpoints still bound the log).
    fn start(path: &Path) -> Option<Checkpointer> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).ok()?;
        // A checkpoint syncs the database file before the log may be reused.
        conn.pragma_update(None, "synchronous", "FULL").ok()?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    // Busy (another checkpoint) or failing: the next round tries again.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!("checkpoint: {e}");
                    }
                }
            })
            .ok()?;
        Some(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            // A checkpointer that panicked has nothing left to clean up.
            let _ = t.join();
        }
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub conn: Connection,
    /// Series ids already known (ids are never reused or deleted); filled only after the
    /// transaction that made them committed.
    pub series: metrics::SeriesIds,
    /// The VMs present and when hosts answered, as committed (see `metrics`); loaded by the
    /// first look.
    pub seen: Option<metrics::Seen>,
    /// The next series whose rollups a compaction slice checks for retention.
    pub retention_cursor: i64,
    /// The minute compaction slices are rolling up (see `compact`).
    pub folding: Option<compact::Folding>,
}

impl Inner {
    fn new(conn: Connection) -> Inner {
        Inner {
            conn,
            series: metrics::SeriesIds::default(),
            seen: None,
            retention_cursor: 1,
            folding: None,
        }
    }
}

/// Turns an SQLite error into [`StoreError::Sql`] naming the store, the table and the
/// operation.
pub(crate) fn sql<'a>(
    path: &'a str,
    table: &'static str,
    op: &'static str,
) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::Sql {
        path: path.to_string(),
        table,
        op,
        source,
    }
}

/// Every row `query` answers for `params`, each read by `read`; a failure at any step (the
/// statement, the query, a row) is `err`'s (see [`sql`]).
pub(crate) fn all_rows<T>(
    conn: &Connection,
    query: &str,
    params: impl rusqlite::Params,
    err: impl Fn(rusqlite::Error) -> StoreError,
    read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut st = conn.prepare_cached(query).map_err(&err)?;
    let rows = st.query_map(params, read).map_err(&err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(&err)
}

/// Column `i` of `r` as a u64 (SQLite integers are signed; a negative one is an error).
pub(crate) fn get_u64(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let v: i64 = r.get(i)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v))
}

impl SqliteStore {
    /// Opens (or makes) the store in `state_dir` ([`FILE_NAME`]), making the directory if
    /// needed.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directory cannot be made, else as [`SqliteStore::open`].
    pub fn open_in(state_dir: &Path, retention: Retention) -> Result<SqliteStore> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Io {
            path: state_dir.to_path_buf(),
            what: "make the state directory",
            source,
        })?;
        SqliteStore::open(&state_dir.join(FILE_NAME), retention)
    }

    /// Opens (or makes) the store at `path` and migrates it to this build's schema.
    ///
    /// # Errors
    /// [`StoreError::Open`], [`StoreError::NewerSchema`], [`StoreError::NotOurs`],
    /// [`StoreError::Migration`], or [`StoreError::Invalid`] for a bad `retention`.
    pub fn open(path: &Path, retention: Retention) -> Result<SqliteStore> {
        let shown = path.display().to_string();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?;
        let mut store = SqliteStore::setup(conn, shown, retention, true)?;
        store._checkpointer = Checkpointer::start(path);
        Ok(store)
    }

    /// A store in memory (SQLite's `:memory:`): the real schema and SQL, nothing on disk.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub fn open_in_memory(retention: Retention) -> Result<SqliteStore> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: ":memory:".into(),
            source,
        })?;
        SqliteStore::setup(conn, ":memory:".into(), retention, false)
    }

    #[cfg(test)]
    pub(crate) fn open_with(path: &Path, migrations: &[schema::Migration]) -> Result<SqliteStore> {
        let shown = path.display().to_string();
        let mut conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?;
        schema::migrate(&mut conn, &shown, migrations)?;
        Ok(SqliteStore {
            path: shown,
            retention: Retention::default(),
            inner: Mutex::new(Inner::new(conn)),
            _checkpointer: None,
        })
    }

    fn setup(
        mut conn: Connection,
        path: String,
        retention: Retention,
        file: bool,
    ) -> Result<SqliteStore> {
        retention.validate().map_err(|what| StoreError::Invalid {
            path: path.clone(),
            table: "retention",
            what,
        })?;
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        if file {
            // WAL: readers never block the writer, a commit is one append. FULL: a commit
            // survives power loss too (a few commits a second, so the fsyncs cost little).
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
                .map_err(open_err)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Invalid {
                    path,
                    table: "journal_mode",
                    what: format!("SQLite runs it in {mode} mode, not WAL"),
                });
            }
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(open_err)?;
            conn.pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES)
                .map_err(open_err)?;
            conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
                .map_err(open_err)?;
        }
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        schema::migrate(&mut conn, &path, schema::MIGRATIONS)?;
        Ok(SqliteStore {
            path,
            retention,
            inner: Mutex::new(Inner::new(conn)),
            _checkpointer: None,
        })
    }

    /// The schema version of the open file.
    ///
    /// # Errors
    /// [`StoreError::Sql`] when it cannot be read.
    pub fn schema_version(&self) -> Result<i64> {
        let inner = self.lock();
        inner
            .conn
            .query_row(
                "SELECT coalesce(max(version), 0) FROM schema_version",
                [],
                |r| r.get(0),
            )
            .map_err(sql(&self.path, "schema_version", "read the version"))
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held dropped its transaction, which rolled back: the
        // connection is as the last commit left it, so the poison carries no meaning here.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(crate) fn with_conn<R>(&self, f: impl FnOnce(&Connection) -> R) -> R {
        f(&self.lock().conn)
    }
}

impl Store for SqliteStore {
    fn location(&self) -> &str {
        &self.path
    }

    fn store_id(&self) -> Result<String> {
        inventory::store_id(&self.lock().conn, &self.path)
    }

    fn add_host(&self, spec: &HostSpec, at_s: f64) -> Result<()> {
        inventory::add_host(&mut self.lock().conn, &self.path, spec, at_s, false)
    }

    fn put_host(&self, spec: &HostSpec, at_s: f64) -> Result<()> {
        inventory::add_host(&mut self.lock().conn, &self.path, spec, at_s, true)
    }

    fn remove_host(&self, name: &str, at_s: f64) -> Result<()> {
        inventory::remove_host(&mut self.lock().conn, &self.path, name, at_s)
    }

    fn hosts(&self) -> Result<Vec<HostRecord>> {
        inventory::hosts(&self.lock().conn, &self.path)
    }

    fn vms(&self) -> Result<Vec<VmRecord>> {
        inventory::vms(&self.lock().conn, &self.path)
    }

    fn record_look(&self, look: &Look) -> Result<()> {
        metrics::record_look(&mut self.lock(), &self.path, look)
    }

    fn history(&self, series: &SeriesKey, since_s: f64) -> Result<History> {
        history::history(&self.lock().conn, &self.path, series, since_s)
    }

    fn histories(&self, kind: SeriesKind, since_s: f64) -> Result<BTreeMap<String, History>> {
        history::histories(&self.lock().conn, &self.path, kind, since_s)
    }

    fn compact(&self, now_s: f64) -> Result<Compacted> {
        compact::compact(&mut self.lock(), &self.path, self.retention, now_s)
    }

    fn compact_slice(&self, now_s: f64, slices: u32) -> Result<Compacted> {
        compact::compact_slice(&mut self.lock(), &self.path, self.retention, now_s, slices)
    }

    fn save_step(&self, step: &StepRecord) -> Result<()> {
        control::save_step(&mut self.lock().conn, &self.path, step)
    }

    fn record_look_and_step(&self, look: &Look, step: &StepRecord) -> Result<()> {
        validate::look(&self.path, look)?;
        validate::step(&self.path, step)?;
        let mut inner = self.lock();
        metrics::ready(&mut inner, &self.path)?;
        let changes = {
            let Inner {
                conn, series, seen, ..
            } = &mut *inner;
            let seen = seen.get_or_insert_with(metrics::Seen::default);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql(&self.path, "sample", "begin a look and its step"))?;
            let changes = metrics::write_look(&tx, &self.path, series, seen, look)?;
            control::write_step(&tx, &self.path, step)?;
            tx.commit()
                .map_err(sql(&self.path, "control", "commit a look and its step"))?;
            changes
        };
        inner.committed(changes);
        Ok(())
    }

    fn control_state(&self) -> Result<Option<SavedState>> {
        control::control_state(&self.lock().conn, &self.path)
    }

    fn append_journal(&self, entries: &[JournalEntry]) -> Result<()> {
        control::append_journal(&mut self.lock().conn, &self.path, entries)
    }

    fn plan(&self, id: &str) -> Result<Option<PlanRow>> {
        control::plan(&self.lock().conn, &self.path, id)
    }

    fn plans(&self, query: &PlanQuery) -> Result<Vec<PlanRow>> {
        control::plans(&self.lock().conn, &self.path, query)
    }

    fn moves(&self, query: &MoveQuery) -> Result<Vec<MoveRow>> {
        control::moves(&self.lock().conn, &self.path, query)
    }

    fn transitions(&self, move_id: &str) -> Result<Vec<Transition>> {
        control::transitions(&self.lock().conn, &self.path, move_id)
    }

    fn export_decision(&self, plan_id: &str) -> Result<Decision> {
        control::export_decision(&self.lock().conn, &self.path, plan_id)
    }

    fn put_result(&self, result: &MigrationResult) -> Result<()> {
        results::put_result(&mut self.lock().conn, &self.path, result)
    }

    fn migration(&self, move_id: &str) -> Result<Option<MigrationRow>> {
        results::migration(&self.lock().conn, &self.path, move_id)
    }

    fn migrations(&self, query: &MigrationQuery) -> Result<Vec<MigrationRow>> {
        results::migrations(&self.lock().conn, &self.path, query)
    }

    fn settings(&self) -> Result<Option<SettingsRecord>> {
        control::settings(&self.lock().conn, &self.path)
    }

    fn put_settings(
        &self,
        settings: &ControlSettings,
        at_s: f64,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        control::put_settings(
            &mut self.lock().conn,
            &self.path,
            settings,
            at_s,
            expected_version,
        )
    }

    fn journal(&self, query: &JournalQuery) -> Result<Vec<JournalRow>> {
        control::journal(&self.lock().conn, &self.path, query)
    }
}
