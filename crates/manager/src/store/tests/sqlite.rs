//! What only the SQLite file has: schema versions (a newer file refused, an older one
//! migrated, a failed migration rolled back), a failure inside a step's transaction, and crashes
//! (a store dropped without closing, a process killed mid-transaction).

use super::*;
use crate::store::sqlite::schema::{self, Migration, MIGRATIONS};
use crate::store::sqlite::FILE_NAME;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open_in(dir, Retention::default()).expect("open the store")
}

fn file(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

#[test]
fn a_new_store_is_at_the_current_version_in_wal_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("state/manager"));
    assert_eq!(
        store.schema_version().expect("version"),
        schema::current_version()
    );
    let mode: String = store.with_conn(|c| {
        c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode")
    });
    assert_eq!(mode, "wal");
    assert!(store.location().ends_with("state/manager/manager.sqlite"));
}

#[test]
fn a_store_written_by_a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.add_host(&spec("h1"), 1.0).expect("add");
    let newer = schema::current_version() + 7;
    store.with_conn(|c| {
        c.execute(
            "INSERT INTO schema_version (version, name) VALUES (?1, 'from the future')",
            [newer],
        )
        .expect("pretend")
    });
    drop(store);

    let err = SqliteStore::open_in(dir.path(), Retention::default()).expect_err("newer");
    match &err {
        StoreError::NewerSchema {
            path,
            found,
            supported,
        } => {
            assert_eq!(*path, file(dir.path()).display().to_string());
            assert_eq!((*found, *supported), (newer, schema::current_version()));
        }
        other => panic!("{other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("manager.sqlite") && msg.contains(&newer.to_string()),
        "{msg}"
    );

    let conn = Connection::open(file(dir.path())).expect("raw open");
    let hosts: i64 = conn
        .query_row("SELECT count(*) FROM host", [], |r| r.get(0))
        .expect("count");
    assert_eq!(hosts, 1, "the file is untouched");
}

/// A later schema: what a second migration might do.
const V2: Migration = Migration {
    version: 2,
    name: "host notes",
    sql: "ALTER TABLE host ADD COLUMN note TEXT;
          CREATE TABLE host_label (host TEXT NOT NULL, label TEXT NOT NULL);",
    convert: None,
};

#[test]
fn an_older_store_is_migrated_keeping_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(dir.path());
    let v1 = SqliteStore::open_with(&path, &MIGRATIONS[..1]).expect("v1");
    v1.add_host(&spec("h1"), 1.0).expect("add");
    let id = v1.store_id().expect("id");
    drop(v1);

    let v2 = SqliteStore::open_with(&path, &[MIGRATIONS[0], V2]).expect("v2");
    assert_eq!(v2.schema_version().expect("version"), 2);
    assert_eq!(v2.hosts().expect("hosts")[0].name, "h1");
    assert_eq!(v2.store_id().expect("id"), id);
    let (versions, notes): (Vec<i64>, i64) = v2.with_conn(|c| {
        let mut st = c
            .prepare("SELECT version FROM schema_version ORDER BY version")
            .expect("prepare");
        let versions = st
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        let notes = c
            .query_row("SELECT count(note) FROM host", [], |r| r.get(0))
            .expect("the new column");
        (versions, notes)
    });
    assert_eq!((versions, notes), (vec![1, 2], 0));
}

#[test]
fn a_failed_migration_is_rolled_back_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(dir.path());
    drop(SqliteStore::open_with(&path, &MIGRATIONS[..1]).expect("v1"));
    let bad = Migration {
        version: 2,
        name: "half done",
        sql: "CREATE TABLE half (x INTEGER); INSERT INTO no_such_table VALUES (1);",
        convert: None,
    };
    let err = SqliteStore::open_with(&path, &[MIGRATIONS[0], bad]).expect_err("fails");
    assert!(
        matches!(
            err,
            StoreError::Migration {
                version: 2,
                name: "half done",
                ..
            }
        ),
        "{err}"
    );
    let conn = Connection::open(&path).expect("raw open");
    let (version, half): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT max(version) FROM schema_version),
                    (SELECT count(*) FROM sqlite_schema WHERE name = 'half')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("read");
    assert_eq!((version, half), (1, 0));
}

#[test]
fn a_file_that_is_not_a_drover_store_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = Connection::open(file(dir.path())).expect("raw open");
    conn.execute_batch("CREATE TABLE photos (id INTEGER)")
        .expect("someone else's table");
    drop(conn);
    let err = SqliteStore::open_in(dir.path(), Retention::default()).expect_err("not ours");
    assert!(matches!(err, StoreError::NotOurs { .. }), "{err}");
}

#[test]
fn a_bad_retention_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Retention {
        raw_s: 10,
        ..Retention::default()
    };
    let err = SqliteStore::open_in(dir.path(), r).expect_err("too short");
    assert!(err.to_string().contains("raw_s 10"), "{err}");
}

/// A step whose last write fails (a trigger stands in for a full disk or an I/O error):
/// nothing of the step is left, and the store goes on working.
#[test]
fn a_failure_inside_a_step_leaves_nothing_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut s = step(1.0);
    s.plans = vec![plan_row("p1", "approved", 1.0)];
    store.save_step(&s).expect("first step");
    let before = control_snapshot(&store);
    store.with_conn(|c| {
        c.execute_batch(
            "CREATE TRIGGER fail BEFORE INSERT ON move_transition
             BEGIN SELECT RAISE(ABORT, 'disk I/O error (injected)'); END",
        )
        .expect("trigger")
    });

    let mut s = step(2.0);
    s.journal = vec![entry(2.0, "move", "m1", "planned")];
    s.plans = vec![
        plan_row("p1", "failed", 1.0),
        plan_row("p2", "approved", 2.0),
    ];
    s.moves = vec![move_row("m1", "p2", "vm1", "planned")];
    let err = store.save_step(&s).expect_err("injected");
    assert!(
        matches!(
            err,
            StoreError::Sql {
                table: "move_transition",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("injected"), "{err}");
    assert_eq!(control_snapshot(&store), before);

    store.with_conn(|c| c.execute_batch("DROP TRIGGER fail").expect("drop"));
    store.save_step(&s).expect("works again");
    assert_eq!(store.transitions("m1").expect("transitions").len(), 1);
}

fn committed_state(store: &dyn Store) {
    store.add_host(&spec("h1"), 0.0).expect("add");
    store.record_look(&look(1.0, &["h1"], 0.5)).expect("look");
    let mut s = step(2.0);
    s.journal = vec![entry(2.0, "plan", "p1", "made")];
    s.plans = vec![plan_row("p1", "approved", 2.0)];
    s.moves = vec![move_row("m1", "p1", "h1-vm", "requested")];
    store.save_step(&s).expect("step");
    store
        .put_settings(&drover_core::control::ControlSettings::default(), 3.0, None)
        .expect("settings");
}

fn assert_committed(store: &dyn Store) {
    assert_eq!(store.hosts().expect("hosts").len(), 1);
    assert_eq!(
        store
            .history(&SeriesKey::vm("h1-vm"), 0.0)
            .expect("history")
            .seconds
            .len(),
        1
    );
    assert_eq!(
        store.control_state().expect("state").expect("saved").at_s,
        2.0
    );
    assert_eq!(
        store.plan("p1").expect("plan").expect("stored").state,
        "approved"
    );
    assert_eq!(store.transitions("m1").expect("transitions").len(), 1);
    assert_eq!(
        store.settings().expect("settings").expect("stored").version,
        1
    );
}

/// Dropped without closing (no checkpoint, the WAL left behind): reopening keeps every commit.
#[test]
fn a_store_never_closed_keeps_every_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    committed_state(&store);
    std::mem::forget(store);
    let wal = dir.path().join(format!("{}-wal", FILE_NAME));
    assert!(wal.exists(), "the commits are still only in the WAL");
    let store = open(dir.path());
    assert_committed(&store);
}

const CRASH_DIR: &str = "DROVER_STORE_CRASH_DIR";

/// The child of [`a_process_killed_mid_transaction_keeps_every_commit`]: commits, starts one
/// more transaction, and aborts in the middle of it. Does nothing unless run by that test.
#[test]
#[ignore = "run as a child process by a_process_killed_mid_transaction_keeps_every_commit"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    let store = open(Path::new(&dir));
    committed_state(&store);
    store.with_conn(|c| {
        // A tiny page cache, so the uncommitted pages spill into the WAL file before the crash.
        c.execute_batch(
            "PRAGMA cache_size = 8;
             BEGIN IMMEDIATE;
             INSERT INTO journal (at_s, subject, subject_id, what) VALUES (9, 'plan', 'p9', 'lost');
             UPDATE control SET at_s = 9;
             INSERT INTO plan (id, kind, state, created_s, updated_s, body)
                 VALUES ('p9', 'relief', 'approved', 9, 9, '{}');",
        )
        .expect("uncommitted writes");
        for i in 0..5_000 {
            c.execute(
                "INSERT INTO journal (at_s, subject, subject_id, what) VALUES (9, 'x', ?1, 'lost')",
                [i],
            )
            .expect("more");
        }
    });
    std::process::abort();
}

#[test]
fn a_process_killed_mid_transaction_keeps_every_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let status = std::process::Command::new(exe)
        .args([
            "--exact",
            "store::tests::sqlite::crash_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CRASH_DIR, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run the child");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(6), "the child aborts: {status}");
    assert!(file(dir.path()).exists(), "the child made the store");

    let store = open(dir.path());
    assert_committed(&store);
    assert_eq!(store.plan("p9").expect("plan"), None);
    let lost = store
        .journal(&JournalQuery {
            since_s: Some(9.0),
            limit: 10,
            ..JournalQuery::default()
        })
        .expect("journal");
    assert!(lost.is_empty(), "{lost:?}");
    // And it goes on working.
    store.save_step(&step(10.0)).expect("step");
}

/// The write-ahead log is copied into the database file by the checkpointer's thread: the
/// writer's own automatic checkpoint is set far above what these looks write.
#[test]
fn the_log_is_checkpointed_off_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open_in(dir.path(), Retention::default()).expect("open");
    let names: Vec<String> = (0..20).map(|i| format!("h{i}")).collect();
    let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
    for h in &hosts {
        store.add_host(&spec(h), 0.0).expect("add");
    }
    let db = file(dir.path());
    let size = || std::fs::metadata(&db).map_or(0, |m| m.len());
    let before = size();
    for t in 0..200 {
        store
            .record_look(&look(f64::from(t), &hosts, 0.5))
            .expect("look");
    }
    let every = crate::store::sqlite::CHECKPOINT_EVERY;
    let deadline = std::time::Instant::now() + 20 * every;
    while size() < before + (256 << 10) {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {} bytes",
            size()
        );
        std::thread::sleep(every / 5);
    }
}
