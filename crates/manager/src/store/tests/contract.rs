//! What every [`Store`] does: inventory, steps (atomic), transitions, queries, settings,
//! results, decisions, the journal. Each test runs against the fake and the SQLite file.

use super::*;
use drover_core::control::{
    ControlSettings, ControlState, Decision, HostObs, MoveState, PowerState,
};
use serde_json::json as j;

fn retention() -> Retention {
    Retention::default()
}

for_each_store!(
    hosts_are_added_updated_and_removed,
    a_look_records_reachability_vms_and_samples,
    a_look_naming_an_unknown_host_changes_nothing,
    samples_that_are_not_finite_are_refused,
    rates_are_kept_to_whole_bytes,
    a_step_is_stored_whole,
    a_step_with_a_bad_reference_changes_nothing,
    every_move_state_change_is_a_transition,
    plans_and_moves_are_queried,
    the_journal_is_filtered_paged_and_bounded,
    settings_are_versioned_and_conflicts_refused,
    results_are_kept_by_move,
    results_are_listed_newest_first_and_filtered,
    a_decision_is_exported_as_plain_json,
    the_store_id_is_stable,
);

fn hosts_are_added_updated_and_removed(store: &dyn Store) {
    store.add_host(&spec("h1"), 1.0).expect("add h1");
    let err = store.add_host(&spec("h1"), 2.0).expect_err("twice");
    assert!(
        matches!(err, StoreError::HostExists { ref name, .. } if name == "h1"),
        "{err}"
    );

    let mut moved = spec("h1");
    moved.agent_url = "http://10.0.0.9:7300".into();
    moved.power = Some(PowerModel {
        idle_w: 80.0,
        peak_w: 200.0,
    });
    store.put_host(&moved, 3.0).expect("update");
    store.put_host(&moved, 4.0).expect("same again");
    let h = &store.hosts().expect("hosts")[0];
    assert_eq!(
        (h.agent_url.as_str(), h.power, h.added_s),
        (moved.agent_url.as_str(), moved.power, 1.0)
    );

    store.remove_host("h1", 5.0).expect("remove");
    assert!(matches!(
        store.remove_host("h1", 6.0),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.hosts().expect("hosts")[0].removed_s, Some(5.0));
    store.add_host(&spec("h1"), 7.0).expect("added again");
    let h = &store.hosts().expect("hosts")[0];
    assert_eq!((h.removed_s, h.added_s), (None, 7.0));

    let bad = HostSpec {
        power: Some(PowerModel {
            idle_w: 300.0,
            peak_w: 200.0,
        }),
        ..spec("h2")
    };
    assert!(matches!(
        store.add_host(&bad, 8.0),
        Err(StoreError::Invalid { .. })
    ));

    let lines: Vec<String> = store
        .journal(&JournalQuery {
            subject: Some("host".into()),
            limit: 100,
            ..JournalQuery::default()
        })
        .expect("journal")
        .into_iter()
        .map(|r| format!("{} {}", r.entry.at_s, r.entry.what))
        .collect();
    assert_eq!(
        lines,
        [
            "1 added: agent http://h1:7300",
            "3 updated: agent http://10.0.0.9:7300",
            "5 removed",
            "7 added: agent http://h1:7300",
        ],
        "a repeat of the same configuration journals nothing"
    );
}

fn a_look_records_reachability_vms_and_samples(store: &dyn Store) {
    store.add_host(&spec("h1"), 0.0).expect("add");
    store.add_host(&spec("h2"), 0.0).expect("add");
    store
        .record_look(&look(10.0, &["h1", "h2"], 0.5))
        .expect("look");
    let mut second = look(11.0, &["h1"], 0.6);
    second.hosts.push(HostLook {
        name: "h2".into(),
        reachable: false,
        sample: None,
    });
    second
        .journal
        .push(entry(11.0, "host", "h2", "unreachable after 3 misses"));
    store.record_look(&second).expect("look");

    let hosts = store.hosts().expect("hosts");
    let seen: Vec<_> = hosts.iter().map(|h| (h.reachable, h.last_seen_s)).collect();
    assert_eq!(seen, [(true, Some(11.0)), (false, Some(10.0))]);
    let vms: Vec<_> = store
        .vms()
        .expect("vms")
        .into_iter()
        .map(|v| (v.name, v.host, v.first_seen_s, v.last_seen_s))
        .collect();
    assert_eq!(
        vms,
        [
            ("h1-vm".to_string(), "h1".to_string(), 10.0, 11.0),
            ("h2-vm".to_string(), "h2".to_string(), 10.0, 10.0),
        ]
    );
    let h = store
        .history(&SeriesKey::vm("h1-vm"), 0.0)
        .expect("history");
    let got: Vec<_> = h.seconds.iter().map(|p| (p.at_s, p.sample)).collect();
    assert_eq!(got, [(10.0, sample(0.25)), (11.0, sample(0.3))]);
    assert!(h.minutes.is_empty());
    let h2 = store.history(&SeriesKey::host("h2"), 0.0).expect("history");
    assert_eq!(h2.seconds.len(), 1, "no sample while unreachable");
    assert_eq!(
        store
            .history(&SeriesKey::vm("nobody"), 0.0)
            .expect("history"),
        History::default()
    );
    let journal = store.journal(&JournalQuery {
        limit: 100,
        ..JournalQuery::default()
    });
    assert!(journal
        .expect("journal")
        .iter()
        .any(|r| r.entry.what == "unreachable after 3 misses"));
}

fn a_look_naming_an_unknown_host_changes_nothing(store: &dyn Store) {
    store.add_host(&spec("h1"), 0.0).expect("add");
    let before = control_snapshot(store);
    let mut bad = look(10.0, &["h1", "ghost"], 0.5);
    bad.journal.push(entry(10.0, "host", "h1", "x"));
    let err = store.record_look(&bad).expect_err("ghost");
    assert!(err.to_string().contains("ghost"), "{err}");
    // A VM on an unknown host, the host itself not in the look.
    let mut bad = look(10.0, &["h1"], 0.5);
    bad.vms[0].host = "ghost".into();
    store.record_look(&bad).expect_err("VM on a ghost");
    assert_eq!(control_snapshot(store), before);
    assert_eq!(
        store.history(&SeriesKey::host("h1"), 0.0).expect("history"),
        History::default()
    );
}

fn samples_that_are_not_finite_are_refused(store: &dyn Store) {
    store.add_host(&spec("h1"), 0.0).expect("add");
    let mut bad = look(10.0, &["h1"], 0.5);
    bad.vms[0].sample = Some(Sample {
        rx_bps: f64::NAN,
        ..sample(0.1)
    });
    let err = store.record_look(&bad).expect_err("NaN");
    assert!(
        matches!(err, StoreError::Invalid { .. }) && err.to_string().contains("h1-vm: rx_bps"),
        "{err}"
    );
    let err = store
        .record_look(&look(-1.0, &["h1"], 0.5))
        .expect_err("negative time");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    assert!(store
        .history(&SeriesKey::host("h1"), 0.0)
        .expect("history")
        .seconds
        .is_empty());
}

fn rates_are_kept_to_whole_bytes(store: &dyn Store) {
    store.add_host(&spec("h1"), 0.0).expect("add");
    let mut l = look(10.0, &["h1"], 0.5);
    l.hosts[0].sample = Some(Sample {
        dirty_bps: Some(1234.5),
        rx_bps: 99.4,
        tx_bps: 0.6,
        ..sample(0.123_456_789)
    });
    store.record_look(&l).expect("look");
    let got = store
        .history(&SeriesKey::host("h1"), 0.0)
        .expect("history")
        .seconds[0]
        .sample;
    assert_eq!(
        got,
        Sample {
            dirty_bps: Some(1235.0),
            rx_bps: 99.0,
            tx_bps: 1.0,
            ..sample(0.123_456_789)
        },
        "load and cores exactly, bytes/s whole"
    );
}

fn a_step_is_stored_whole(store: &dyn Store) {
    assert_eq!(store.control_state().expect("state"), None);
    let mut s = step(100.0);
    s.journal = vec![
        entry(100.0, "plan", "p1", "relief of h1 proposed"),
        entry(100.0, "move", "m1", "planned"),
    ];
    s.plans = vec![plan_row("p1", "approved", 100.0)];
    s.moves = vec![move_row("m1", "p1", "vm1", "planned")];
    store.save_step(&s).expect("step");

    let saved = store.control_state().expect("state").expect("saved");
    assert_eq!((saved.at_s, saved.state), (100.0, step(100.0).state));
    assert_eq!(
        store.plan("p1").expect("plan"),
        Some(plan_row("p1", "approved", 100.0))
    );
    assert_eq!(store.plan("p9").expect("plan"), None);
    let moves = store.moves(&MoveQuery {
        limit: 10,
        ..MoveQuery::default()
    });
    assert_eq!(
        moves.expect("moves"),
        [move_row("m1", "p1", "vm1", "planned")]
    );
    let journal = store.journal(&JournalQuery {
        limit: 10,
        ..JournalQuery::default()
    });
    let whats: Vec<_> = journal
        .expect("journal")
        .into_iter()
        .map(|r| r.entry.what)
        .collect();
    assert_eq!(whats, ["relief of h1 proposed", "planned"]);

    // The next step replaces the memory and updates the plan, keeping its creation time.
    let mut s = step(101.0);
    s.plans = vec![plan_row("p1", "done", 555.0)];
    store.save_step(&s).expect("step");
    let p = store.plan("p1").expect("plan").expect("stored");
    assert_eq!((p.state.as_str(), p.created_s), ("done", 100.0));
    assert_eq!(
        store.control_state().expect("state").expect("saved").at_s,
        101.0
    );
}

fn a_step_with_a_bad_reference_changes_nothing(store: &dyn Store) {
    let mut s = step(1.0);
    s.plans = vec![plan_row("p1", "approved", 1.0)];
    s.moves = vec![move_row("m1", "p1", "vm1", "planned")];
    store.save_step(&s).expect("step");
    let before = control_snapshot(store);

    // The move is checked after the memory, the journal and the plan were written: the
    // failure must take all of those back.
    let mut bad = step(2.0);
    bad.journal = vec![entry(2.0, "plan", "p2", "made")];
    bad.plans = vec![
        plan_row("p2", "approved", 2.0),
        plan_row("p1", "failed", 1.0),
    ];
    bad.moves = vec![
        move_row("m1", "p1", "vm1", "requested"),
        move_row("m2", "p-nowhere", "vm2", "planned"),
    ];
    let err = store.save_step(&bad).expect_err("unknown plan");
    assert!(err.to_string().contains("p-nowhere"), "{err}");
    assert_eq!(control_snapshot(store), before);

    let mut bad = step(3.0);
    bad.plans = vec![plan_row("p3", "approved", 3.0)];
    bad.decision = Some(decision(3.0, &["p3", "p-nowhere"]));
    store
        .save_step(&bad)
        .expect_err("decision of an unknown plan");
    assert_eq!(control_snapshot(store), before);

    let mut bad = step(f64::INFINITY);
    bad.journal = vec![entry(1.0, "plan", "p1", "x")];
    store.save_step(&bad).expect_err("time");
    assert_eq!(control_snapshot(store), before);
}

fn every_move_state_change_is_a_transition(store: &dyn Store) {
    let mut s = step(1.0);
    s.plans = vec![plan_row("p1", "approved", 1.0)];
    s.moves = vec![move_row("m1", "p1", "vm1", "planned")];
    store.save_step(&s).expect("step");
    let failed = MoveState::Failed {
        at_s: 9.0,
        error: "post-copy stalled".into(),
        vm_on_destination: true,
    };
    for (at, state) in [
        (2.0, MoveState::Planned),
        (3.0, MoveState::Requested { at_s: 3.0 }),
        (4.0, MoveState::Running { since_s: 4.0 }),
        (5.0, MoveState::Running { since_s: 4.0 }),
        (9.0, failed),
    ] {
        let mut s = step(at);
        s.moves = vec![MoveRow::of(&a_move("m1", "p1", "vm1", state))];
        store.save_step(&s).expect("step");
    }
    let got: Vec<_> = store
        .transitions("m1")
        .expect("transitions")
        .into_iter()
        .map(|t| (t.from_state, t.to_state, t.at_s, t.detail))
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        got,
        [
            (None, s("planned"), 1.0, None),
            (Some(s("planned")), s("requested"), 3.0, None),
            (Some(s("requested")), s("running"), 4.0, None),
            (
                Some(s("running")),
                s("failed"),
                9.0,
                Some(s("post-copy stalled"))
            ),
        ]
    );
    let m = store
        .moves(&MoveQuery {
            limit: 1,
            ..MoveQuery::default()
        })
        .expect("moves");
    assert_eq!(m[0].detail.as_deref(), Some("post-copy stalled"));
    assert!(store.transitions("m-none").expect("transitions").is_empty());
}

fn plans_and_moves_are_queried(store: &dyn Store) {
    let mut s = step(1.0);
    s.plans = vec![
        plan_row("p1", "done", 10.0),
        plan_row("p2", "proposed", 20.0),
        plan_row("p3", "done", 20.0),
        plan_row("p4", "done", 30.0),
    ];
    s.moves = vec![
        move_row("m1", "p1", "vm1", "done"),
        move_row("m2", "p2", "vm2", "planned"),
        move_row("m3", "p2", "vm1", "planned"),
    ];
    store.save_step(&s).expect("step");
    let ids = |q: PlanQuery| -> Vec<String> {
        store
            .plans(&q)
            .expect("plans")
            .into_iter()
            .map(|p| p.id)
            .collect()
    };
    let all = PlanQuery {
        limit: 100,
        ..PlanQuery::default()
    };
    assert_eq!(
        ids(all.clone()),
        ["p4", "p3", "p2", "p1"],
        "newest first, ties by order"
    );
    assert_eq!(
        ids(PlanQuery {
            limit: 2,
            ..all.clone()
        }),
        ["p4", "p3"]
    );
    assert_eq!(
        ids(PlanQuery {
            state: Some("done".into()),
            ..all.clone()
        }),
        ["p4", "p3", "p1"]
    );
    assert_eq!(
        ids(PlanQuery {
            since_s: Some(20.0),
            ..all.clone()
        }),
        ["p4", "p3", "p2"]
    );
    assert!(
        ids(PlanQuery::default()).is_empty(),
        "limit 0 reads nothing"
    );

    let mids = |q: MoveQuery| -> Vec<String> {
        store
            .moves(&q)
            .expect("moves")
            .into_iter()
            .map(|m| m.id)
            .collect()
    };
    let all = MoveQuery {
        limit: 100,
        ..MoveQuery::default()
    };
    assert_eq!(mids(all.clone()), ["m1", "m2", "m3"]);
    assert_eq!(
        mids(MoveQuery {
            plan_id: Some("p2".into()),
            ..all.clone()
        }),
        ["m2", "m3"]
    );
    assert_eq!(
        mids(MoveQuery {
            vm: Some("vm1".into()),
            ..all.clone()
        }),
        ["m1", "m3"]
    );
    assert_eq!(
        mids(MoveQuery {
            state: Some("planned".into()),
            limit: 1,
            ..all
        }),
        ["m2"]
    );
}

fn the_journal_is_filtered_paged_and_bounded(store: &dyn Store) {
    let lines: Vec<JournalEntry> = (0..MAX_READ + 5)
        .map(|i| {
            let subject = if i % 2 == 0 { "plan" } else { "move" };
            entry(f64::from(i), subject, &format!("x{}", i % 3), "e")
        })
        .collect();
    store.append_journal(&lines).expect("append");
    let q = |q: JournalQuery| -> Vec<u64> {
        store
            .journal(&q)
            .expect("journal")
            .into_iter()
            .map(|r| r.seq)
            .collect()
    };
    let all = JournalQuery {
        limit: u32::MAX,
        ..JournalQuery::default()
    };
    let every = q(all.clone());
    assert_eq!(every.len(), MAX_READ as usize, "bounded whatever the limit");
    assert!(every.windows(2).all(|w| w[0] < w[1]));
    let first = every[0];
    let seq = |i: u64| first + i;

    let window = JournalQuery {
        since_s: Some(10.0),
        until_s: Some(14.0),
        ..all.clone()
    };
    assert_eq!(q(window.clone()), [seq(10), seq(11), seq(12), seq(13)]);
    let plans = JournalQuery {
        subject: Some("plan".into()),
        ..window.clone()
    };
    assert_eq!(q(plans), [seq(10), seq(12)]);
    let x1 = JournalQuery {
        id: Some("x1".into()),
        ..window.clone()
    };
    assert_eq!(q(x1), [seq(10), seq(13)]);
    let page = JournalQuery {
        after_seq: Some(seq(11)),
        limit: 1,
        ..window.clone()
    };
    assert_eq!(q(page), [seq(12)]);
    let latest = JournalQuery {
        newest_first: true,
        limit: 2,
        ..all.clone()
    };
    let n = u64::from(MAX_READ) + 4;
    assert_eq!(q(latest), [seq(n), seq(n - 1)]);
    let back = JournalQuery {
        newest_first: true,
        before_seq: Some(seq(12)),
        ..window
    };
    assert_eq!(q(back), [seq(11), seq(10)]);

    let bad = JournalQuery {
        since_s: Some(f64::NAN),
        ..all
    };
    assert!(matches!(
        store.journal(&bad),
        Err(StoreError::Invalid { .. })
    ));
}

fn settings_are_versioned_and_conflicts_refused(store: &dyn Store) {
    assert_eq!(store.settings().expect("settings"), None);
    let hot = |hot| ControlSettings {
        hot,
        ..ControlSettings::default()
    };
    let v1 = hot(0.9);
    assert_eq!(store.put_settings(&v1, 5.0, Some(0)).expect("first"), 1);
    let err = store
        .put_settings(&hot(0.8), 6.0, Some(0))
        .expect_err("stale");
    assert!(
        matches!(
            err,
            StoreError::SettingsConflict {
                expected: 0,
                found: 1,
                ..
            }
        ),
        "{err}"
    );
    let v2 = hot(0.85);
    assert_eq!(store.put_settings(&v2, 7.0, Some(1)).expect("second"), 2);
    assert_eq!(
        store.put_settings(&v2, 8.0, None).expect("unconditional"),
        3
    );
    let s = store.settings().expect("settings").expect("stored");
    assert_eq!((s.version, s.updated_s, s.settings), (3, 8.0, v2));
    let lines = store
        .journal(&JournalQuery {
            subject: Some("settings".into()),
            limit: 10,
            ..JournalQuery::default()
        })
        .expect("journal");
    let ids: Vec<_> = lines.into_iter().map(|r| r.entry.id).collect();
    assert_eq!(ids, ["1", "2", "3"]);
}

fn results_are_kept_by_move(store: &dyn Store) {
    let result = |move_id: &str, at_s: f64| MigrationResult {
        move_id: move_id.into(),
        at_s,
        body: json(j!({ "outcome": "completed", "total_ms": 1200 })),
    };
    let err = store
        .put_result(&result("m1", 5.0))
        .expect_err("no such move");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    let mut s = step(1.0);
    s.plans = vec![plan_row("p1", "approved", 1.0)];
    s.moves = vec![move_row("m1", "p1", "vm1", "running")];
    store.save_step(&s).expect("step");
    store.put_result(&result("m1", 5.0)).expect("result");
    store.put_result(&result("m1", 6.0)).expect("replaced");
    let row = store.migration("m1").expect("read").expect("stored");
    assert_eq!(
        (
            row.plan_id.as_str(),
            row.vm.as_str(),
            row.move_state.as_str()
        ),
        ("p1", "vm1", "running")
    );
    assert_eq!((row.at_s, &row.record), (6.0, &result("m1", 6.0).body));
    assert_eq!(store.migration("m2").expect("read"), None);
}

fn results_are_listed_newest_first_and_filtered(store: &dyn Store) {
    let mut s = step(1.0);
    s.plans = vec![plan_row("p1", "approved", 1.0)];
    s.moves = ["m1", "m2", "m3", "m4"]
        .iter()
        .zip(["vm1", "vm2", "vm1", "vm1"])
        .map(|(id, vm)| move_row(id, "p1", vm, "done"))
        .collect();
    store.save_step(&s).expect("step");
    // m4 has no result; m2 and m3 end at the same time (the move id breaks the tie).
    for (id, at_s) in [("m1", 5.0), ("m2", 7.0), ("m3", 7.0)] {
        let body = json(j!({ "id": id }));
        let r = MigrationResult {
            move_id: id.into(),
            at_s,
            body,
        };
        store.put_result(&r).expect("result");
    }
    let ids = |q: MigrationQuery| -> Vec<String> {
        let rows = store.migrations(&q).expect("list");
        rows.into_iter().map(|r| r.move_id).collect()
    };
    let all = MigrationQuery {
        limit: 10,
        ..MigrationQuery::default()
    };
    assert_eq!(ids(all.clone()), ["m3", "m2", "m1"]);
    let vm1 = MigrationQuery {
        vm: Some("vm1".into()),
        ..all.clone()
    };
    assert_eq!(ids(vm1.clone()), ["m3", "m1"]);
    assert_eq!(ids(MigrationQuery { limit: 1, ..vm1 }), ["m3"]);
    let none = MigrationQuery {
        vm: Some("vm9".into()),
        ..all
    };
    assert!(ids(none).is_empty());
    let row = store.migration("m2").expect("read").expect("stored");
    assert_eq!((row.vm.as_str(), row.from_host.as_str()), ("vm2", "h1"));
    assert_eq!(row.record.as_str(), r#"{"id":"m2"}"#);
}

fn a_decision_is_exported_as_plain_json(store: &dyn Store) {
    let mut s = step(50.0);
    s.plans = vec![
        plan_row("p1", "approved", 50.0),
        plan_row("p2", "approved", 50.0),
    ];
    let mut made = decision(50.0, &["p1", "p2"]);
    made.state_before.next_id = 7;
    made.settings.hot = 0.95;
    made.observation.hosts = vec![HostObs {
        name: "h1".into(),
        reachable: true,
        power: PowerState::Active,
        cpus: 4.0,
        memory_bytes: 8 << 30,
        cpu_demand_cores: 3.9,
        vms: vec![],
    }];
    s.decision = Some(made.clone());
    store.save_step(&s).expect("step");
    let mut later = step(51.0);
    later.plans = vec![plan_row("p3", "recorded", 51.0)];
    store.save_step(&later).expect("step without a decision");

    let d = store.export_decision("p2").expect("decision");
    assert_eq!(d, made);
    assert_eq!(store.export_decision("p1").expect("shared"), made);
    // The export is one JSON document with the parts as objects, ready for `sim replay`.
    let doc: serde_json::Value =
        serde_json::from_str(Json::of(&d).expect("json").as_str()).expect("parse");
    assert_eq!(doc["observation"]["hosts"][0]["name"], "h1");
    assert_eq!(doc["state_before"]["next_id"], 7);
    assert_eq!(doc["output"]["new_plans"], j!(["p1", "p2"]));
    let back: Decision = serde_json::from_value(doc).expect("read back");
    assert_eq!(back, d);

    assert!(matches!(
        store.export_decision("p3"),
        Err(StoreError::NoDecision { .. })
    ));
    assert!(matches!(
        store.export_decision("p9"),
        Err(StoreError::NotFound { .. })
    ));
}

fn the_store_id_is_stable(store: &dyn Store) {
    let id = store.store_id().expect("id");
    assert_eq!(id.len(), 6, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(store.store_id().expect("id"), id);
}

#[test]
fn the_fake_can_be_told_to_fail_writes() {
    let store = MemoryStore::new();
    store.add_host(&spec("h1"), 0.0).expect("add");
    store.fail_writes(true);
    let err = store.save_step(&step(1.0)).expect_err("injected");
    assert!(matches!(err, StoreError::Injected { .. }), "{err}");
    assert!(store.record_look(&look(1.0, &["h1"], 0.5)).is_err());
    assert_eq!(store.control_state().expect("reads work"), None);
    store.fail_writes(false);
    store.save_step(&step(2.0)).expect("works again");
}

/// A step's record holds what changed: new plans and moves, and those whose value differs
/// from the memory before; a decision only when the step made plans.
#[test]
fn a_record_holds_what_the_step_changed() {
    let mut before = ControlState::default();
    let p1 = plan("p1", "approved", 1.0);
    before.plans.insert("p1".into(), p1.clone());
    let m1 = a_move("m1", "p1", "vm1", MoveState::Planned);
    before.moves.insert("m1".into(), m1.clone());
    let mut after = before.clone();
    after.plans.insert("p2".into(), plan("p2", "proposed", 2.0));
    if let Some(m) = after.moves.get_mut("m1") {
        m.state = MoveState::Requested { at_s: 2.0 };
    }
    let r = StepRecord::changes(2.0, &before, &after, vec![], Some(decision(2.0, &[])));
    let plans: Vec<_> = r.plans.iter().map(|p| p.id.as_str()).collect();
    let moves: Vec<_> = r
        .moves
        .iter()
        .map(|m| (m.id.as_str(), m.state.as_str()))
        .collect();
    assert_eq!(plans, ["p2"]);
    assert_eq!(moves, [("m1", "requested")]);
    assert_eq!(r.decision, None, "no plan made: nothing to replay");
    let r = StepRecord::changes(2.0, &before, &after, vec![], Some(decision(2.0, &["p2"])));
    assert!(r.decision.is_some());
    assert_eq!(r.state, after);
}
