//! SQLite only: a look's samples kept as one frame. A version 4 file's sample rows become
//! frames when opened (and its decisions, plain text, still export); a second look at the same instant merges into its frame; a compaction
//! in slices that is cut off by a restart (the store dropped between two slices) ends where an
//! uninterrupted one does, nothing counted twice.

use super::*;
use crate::store::sqlite::schema::MIGRATIONS;
use crate::store::sqlite::FILE_NAME;

const HOSTS: [&str; 4] = ["h1", "h2", "h3", "h4"];

/// `v` as JSON text.
fn text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializes")
}

#[test]
fn the_sample_rows_of_a_version_4_file_become_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE_NAME);
    let v4 = SqliteStore::open_with(&path, &MIGRATIONS[..4]).expect("v4");
    v4.add_host(&spec("h1"), 0.0).expect("add");
    v4.with_conn(|c| {
        c.execute_batch(
            "INSERT INTO series (id, kind, name) VALUES (1, 'host', 'h1'), (2, 'vm', 'a');
             INSERT INTO sample (t, series, load, cpu, mem, dirty, rx, tx) VALUES
                 (10.0, 1, 0.5, 2.0, 1024, NULL, 10, 20),
                 (10.0, 2, 0.25, 0.5, 512, 7, 1, 2),
                 (11.0, 2, 0.75, 1.5, 512, 8, 3, 4);",
        )
        .expect("version 4 rows")
    });
    // A plan and its decision as version 4 kept them: plain JSON text.
    let mut made = decision(3.0, &["p1"]);
    made.state_before.next_id = 41;
    v4.save_step(&StepRecord {
        plans: vec![plan_row("p1", "recorded", 3.0)],
        ..step(3.0)
    })
    .expect("plan");
    v4.with_conn(|c| {
        c.execute(
            "INSERT INTO decision (id, at_s, observation, state_before, settings, format, output)
             VALUES (1, 3.0, ?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![
                text(&made.observation),
                text(&made.state_before),
                text(&made.settings),
                made.format,
                text(&made.output)
            ],
        )
        .expect("decision");
        c.execute("UPDATE plan SET decision_id = 1 WHERE id = 'p1'", [])
            .expect("link")
    });
    drop(v4);
    let store = SqliteStore::open_in(dir.path(), Retention::default()).expect("migrated");
    assert_eq!(
        store.export_decision("p1").expect("plain text still reads"),
        made
    );
    assert_eq!(store.schema_version().expect("version"), 5);
    let h1 = store.history(&SeriesKey::host("h1"), 0.0).expect("history");
    let points: Vec<(f64, f64, Option<f64>)> = h1
        .seconds
        .iter()
        .map(|p| (p.at_s, p.sample.load, p.sample.dirty_bps))
        .collect();
    assert_eq!(points, [(10.0, 0.5, None)]);
    let a = store.history(&SeriesKey::vm("a"), 0.0).expect("history");
    let points: Vec<(f64, f64, Option<f64>, f64)> = a
        .seconds
        .iter()
        .map(|p| {
            (
                p.at_s,
                p.sample.cpu_cores,
                p.sample.dirty_bps,
                p.sample.tx_bps,
            )
        })
        .collect();
    assert_eq!(
        points,
        [(10.0, 0.5, Some(7.0), 2.0), (11.0, 1.5, Some(8.0), 4.0)]
    );
    let tables: i64 = store.with_conn(|c| {
        c.query_row(
            "SELECT (SELECT count(*) FROM frame) * 10
                  + (SELECT count(*) FROM sqlite_schema WHERE name = 'sample')",
            [],
            |r| r.get(0),
        )
        .expect("count")
    });
    assert_eq!(tables, 20, "two frames, and no sample table left");
}

#[test]
fn a_second_look_at_one_instant_merges_into_its_frame() {
    let store = SqliteStore::open_in_memory(Retention::default()).expect("open");
    for h in ["h1", "h2"] {
        store.add_host(&spec(h), 0.0).expect("add");
    }
    store
        .record_look(&look(5.0, &["h1", "h2"], 0.4))
        .expect("first");
    store.record_look(&look(5.0, &["h2"], 0.8)).expect("second");
    let load = |key: SeriesKey| {
        let h = store.history(&key, 0.0).expect("history");
        h.seconds.iter().map(|p| p.sample.load).collect::<Vec<_>>()
    };
    assert_eq!(load(SeriesKey::host("h1")), [0.4], "kept");
    assert_eq!(load(SeriesKey::host("h2")), [0.8], "replaced");
    assert_eq!(load(SeriesKey::vm("h2-vm")), [0.4]);
}

/// Fifteen minutes of four hosts and their VMs.
fn fifteen_minutes(store: &SqliteStore) {
    for h in HOSTS {
        store.add_host(&spec(h), 0.0).expect("add");
    }
    for t in 0..900 {
        let l = look(f64::from(t), &HOSTS, f64::from(t % 60) / 100.0);
        store.record_look(&l).expect("look");
    }
}

fn all_history(store: &SqliteStore) -> Vec<History> {
    HOSTS
        .iter()
        .flat_map(|h| [SeriesKey::host(h), SeriesKey::vm(&format!("{h}-vm"))])
        .map(|k| store.history(&k, 0.0).expect("history"))
        .collect()
}

#[test]
fn a_compaction_cut_off_by_a_restart_counts_nothing_twice() {
    let whole = tempfile::tempdir().expect("tempdir");
    let reference = SqliteStore::open_in(whole.path(), Retention::default()).expect("open");
    fifteen_minutes(&reference);
    reference.compact(900.0).expect("compact");
    let expected = all_history(&reference);

    let dir = tempfile::tempdir().expect("tempdir");
    let open = || SqliteStore::open_in(dir.path(), Retention::default()).expect("open");
    let store = open();
    fifteen_minutes(&store);
    // With 4 slices a minute's 8 series are stored 3 at a time: stop after the first minute
    // is folded and its first rollups are stored, then reopen and finish.
    let mut rolled = 0;
    for _ in 0..2 {
        let c = store.compact_slice(900.0, 4).expect("slice");
        rolled += c.samples_rolled;
        assert!(c.pending);
    }
    let stored: i64 = store.with_conn(|c| {
        c.query_row("SELECT count(*) FROM rollup", [], |r| r.get(0))
            .expect("count")
    });
    assert!((1..8).contains(&stored), "{stored} rollups: cut mid-minute");
    drop(store);
    let store = open();
    loop {
        let c = store.compact_slice(900.0, 4).expect("slice");
        rolled += c.samples_rolled;
        if !c.pending {
            break;
        }
    }
    assert_eq!(all_history(&store), expected);
    assert!(rolled >= 8 * 5 * 60, "{rolled}");
    assert_eq!(
        store.compact(900.0).expect("nothing left"),
        Compacted::default()
    );
}
