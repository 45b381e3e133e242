//! What the loop writes each look, against the fake and the SQLite file: VMs' last-seen times
//! through moves, departures and hosts that do not answer (SQLite writes only the VMs that
//! changed); a look stored with its step, or neither; compaction in slices ending where one
//! whole compaction does.

use super::*;

fn retention() -> Retention {
    Retention::default()
}

for_each_store!(
    a_vm_is_last_seen_in_the_last_look_that_listed_it,
    a_look_and_its_step_are_stored_together_or_not_at_all,
    compaction_in_slices_ends_where_a_whole_compaction_does,
);

/// A look at `at_s`: `hosts` (name, answered), and `vms` (name, host).
fn look_of(at_s: f64, hosts: &[(&str, bool)], vms: &[(&str, &str)]) -> Look {
    Look {
        at_s,
        hosts: hosts
            .iter()
            .map(|&(name, answered)| HostLook {
                name: name.into(),
                reachable: true,
                sample: answered.then(|| sample(0.5)),
            })
            .collect(),
        vms: vms
            .iter()
            .map(|&(name, host)| VmLook {
                name: name.into(),
                host: host.into(),
                sample: Some(sample(0.25)),
            })
            .collect(),
        journal: vec![],
    }
}

/// (name, host, first seen, last seen) of every VM.
fn vms_of(store: &dyn Store) -> Vec<(String, String, f64, f64)> {
    store
        .vms()
        .expect("vms")
        .into_iter()
        .map(|v| (v.name, v.host, v.first_seen_s, v.last_seen_s))
        .collect()
}

fn row(name: &str, host: &str, first: f64, last: f64) -> (String, String, f64, f64) {
    (name.into(), host.into(), first, last)
}

pub(super) fn a_vm_is_last_seen_in_the_last_look_that_listed_it(store: &dyn Store) {
    for h in ["h1", "h2", "h3"] {
        store.add_host(&spec(h), 0.0).expect("add");
    }
    let all = [("h1", true), ("h2", true), ("h3", true)];
    store
        .record_look(&look_of(
            1.0,
            &all,
            &[("a", "h1"), ("b", "h1"), ("c", "h2")],
        ))
        .expect("look 1");
    store
        .record_look(&look_of(
            2.0,
            &all,
            &[("a", "h1"), ("b", "h1"), ("c", "h2")],
        ))
        .expect("look 2");
    assert_eq!(
        vms_of(store),
        [
            row("a", "h1", 1.0, 2.0),
            row("b", "h1", 1.0, 2.0),
            row("c", "h2", 1.0, 2.0)
        ]
    );
    // b moves to h3; c's host does not answer (c is kept as last seen); a's host answers
    // without it (a was last seen at 2).
    store
        .record_look(&look_of(
            3.0,
            &[("h1", true), ("h2", false), ("h3", true)],
            &[("b", "h3")],
        ))
        .expect("look 3");
    let at_3 = [
        row("a", "h1", 1.0, 2.0),
        row("b", "h3", 1.0, 3.0),
        row("c", "h2", 1.0, 2.0),
    ];
    assert_eq!(vms_of(store), at_3);
    // A look that fails changes nothing.
    let bad = look_of(4.0, &[("h1", true), ("h9", true)], &[("a", "h1")]);
    store.record_look(&bad).expect_err("unknown host");
    assert_eq!(vms_of(store), at_3);
    // a comes back on h1; c is listed under h2, which still does not answer; b stays.
    store
        .record_look(&look_of(
            5.0,
            &[("h1", true), ("h2", false), ("h3", true)],
            &[("a", "h1"), ("c", "h2"), ("b", "h3")],
        ))
        .expect("look 5");
    store
        .record_look(&look_of(
            6.0,
            &all,
            &[("a", "h1"), ("c", "h2"), ("b", "h3")],
        ))
        .expect("look 6");
    store
        .record_look(&look_of(7.0, &[("h2", true)], &[]))
        .expect("look 7");
    assert_eq!(
        vms_of(store),
        [
            row("a", "h1", 1.0, 6.0),
            row("b", "h3", 1.0, 6.0),
            row("c", "h2", 1.0, 6.0)
        ]
    );
}

pub(super) fn a_look_and_its_step_are_stored_together_or_not_at_all(store: &dyn Store) {
    store.add_host(&spec("h1"), 0.0).expect("add");
    let mut s = step(1.0);
    s.plans = vec![plan_row("p1", "approved", 1.0)];
    store
        .record_look_and_step(&look(1.0, &["h1"], 0.5), &s)
        .expect("look and step");
    assert_eq!(store.vms().expect("vms")[0].last_seen_s, 1.0);
    let all = PlanQuery {
        limit: 10,
        ..PlanQuery::default()
    };
    assert_eq!(store.plans(&all).expect("plans").len(), 1);
    assert_eq!(
        store.control_state().expect("state").map(|s| s.at_s),
        Some(1.0)
    );

    let before = control_snapshot(store);
    let mut bad = step(2.0);
    bad.moves = vec![move_row("m2", "p-nowhere", "vm2", "planned")];
    store
        .record_look_and_step(&look(2.0, &["h1"], 0.9), &bad)
        .expect_err("unknown plan");
    assert_eq!(control_snapshot(store), before);
    assert_eq!(store.vms().expect("vms")[0].last_seen_s, 1.0);
    let h = store.history(&SeriesKey::host("h1"), 0.0).expect("history");
    assert_eq!(h.seconds.len(), 1, "the look went with the step");

    store
        .record_look_and_step(&look(3.0, &["h9"], 0.5), &step(3.0))
        .expect_err("unknown host");
    assert_eq!(control_snapshot(store), before);
}

/// Two hosts and their VMs for 15 minutes; compacted in slices (at most `slices` calls per
/// due minute, more when a call finds nothing), the history is what one compaction leaves.
pub(super) fn compaction_in_slices_ends_where_a_whole_compaction_does(store: &dyn Store) {
    let hosts = ["h1", "h2", "h3", "h4"];
    for h in hosts {
        store.add_host(&spec(h), 0.0).expect("add");
    }
    for t in 0..900 {
        let l = look(f64::from(t), &hosts, f64::from(t % 60) / 100.0);
        store.record_look(&l).expect("look");
    }
    let mut done = Compacted::default();
    let mut calls = 0;
    loop {
        let c = store.compact_slice(900.0, 3).expect("slice");
        calls += 1;
        done.samples_rolled += c.samples_rolled;
        if !c.pending {
            break;
        }
        assert!(calls < 100, "compaction does not end");
    }
    // Minutes 0 to 4 are due (the raw window reaches back to 300 s): 8 series, 60 samples.
    assert_eq!(done.samples_rolled, 8 * 5 * 60);
    assert_eq!(store.compact(900.0).expect("whole").samples_rolled, 0);
    for h in hosts {
        let hist = store.history(&SeriesKey::host(h), 0.0).expect("history");
        let starts: Vec<f64> = hist.minutes.iter().map(|m| m.start_s).collect();
        assert_eq!(starts, [0.0, 60.0, 120.0, 180.0, 240.0], "{h}");
        assert!(hist.minutes.iter().all(|m| m.samples == 60), "{h}");
        assert!((hist.minutes[0].load.mean - 0.295).abs() < 1e-9, "{h}");
        assert_eq!(hist.seconds.len(), 600, "{h}");
        let vm = store
            .history(&SeriesKey::vm(&format!("{h}-vm")), 0.0)
            .expect("history");
        assert_eq!(vm.minutes.len(), 5);
    }
}

/// SQLite only: the VMs present are known again after reopening the file.
#[test]
fn a_reopened_file_knows_which_vms_were_present() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || SqliteStore::open_in(dir.path(), Retention::default()).expect("open");
    let store = open();
    for h in ["h1", "h2"] {
        store.add_host(&spec(h), 0.0).expect("add");
    }
    let both = [("h1", true), ("h2", true)];
    store
        .record_look(&look_of(1.0, &both, &[("a", "h1"), ("b", "h2")]))
        .expect("look");
    drop(store);
    let store = open();
    store
        .record_look(&look_of(2.0, &both, &[("b", "h2")]))
        .expect("look");
    assert_eq!(
        vms_of(&store),
        [row("a", "h1", 1.0, 1.0), row("b", "h2", 1.0, 2.0)]
    );
}
