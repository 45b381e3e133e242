//! Metric history and compaction, against the fake and the SQLite file: 1 s samples older than
//! the raw window become 1-minute rollups; rollups and decisions past retention are deleted;
//! what is kept stays bounded.

use super::*;

fn retention() -> Retention {
    Retention::default()
}

for_each_store!(
    samples_older_than_ten_minutes_become_minute_rollups,
    a_late_sample_merges_into_its_minute,
    every_series_of_a_kind_is_read_at_once,
);

/// Host h1's sample at second `t`: load cycles through the minute, the dirty rate is measured
/// every other second. Its VM reports half of it.
fn look_at(t: u32) -> Look {
    let load = f64::from(t % 60) / 100.0;
    let mut l = look(f64::from(t), &["h1"], load);
    if let Some(s) = &mut l.hosts[0].sample {
        s.dirty_bps = t.is_multiple_of(2).then_some(load * 1e6);
    }
    l
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

fn samples_older_than_ten_minutes_become_minute_rollups(store: &dyn Store) {
    store.add_host(&spec("h1"), 0.0).expect("add");
    for t in 0..720 {
        store.record_look(&look_at(t)).expect("look");
    }
    // At 720 s the raw window reaches back to 120 s: minutes 0 and 1 are rolled up.
    let done = store.compact(720.0).expect("compact");
    assert_eq!(
        done,
        Compacted {
            samples_rolled: 240,
            minutes_written: 4,
            minutes_deleted: 0,
            decisions_deleted: 0,
            pending: false,
        }
    );
    assert_eq!(store.compact(720.0).expect("again"), Compacted::default());

    let h = store.history(&SeriesKey::host("h1"), 0.0).expect("history");
    let starts: Vec<f64> = h.minutes.iter().map(|m| m.start_s).collect();
    assert_eq!(starts, [0.0, 60.0]);
    assert_eq!(h.seconds.len(), 600);
    assert_eq!((h.seconds[0].at_s, h.seconds[599].at_s), (120.0, 719.0));
    let m = h.minutes[0];
    assert_eq!(m.samples, 60);
    assert!(
        close(m.load.mean, 0.295) && close(m.load.max, 0.59),
        "{m:?}"
    );
    assert!(
        close(m.cpu_cores.mean, 1.18) && close(m.cpu_cores.max, 2.36),
        "{m:?}"
    );
    assert!(close(m.memory_bytes.mean, (1u64 << 30) as f64), "{m:?}");
    let dirty = m.dirty_bps.expect("measured every other second");
    assert!(
        close(dirty.mean, 290_000.0) && close(dirty.max, 580_000.0),
        "{dirty:?}"
    );
    assert!(
        close(m.rx_bps.mean, 1000.0) && close(m.tx_bps.max, 2000.0),
        "{m:?}"
    );

    // From 60 s: the minute that ends after 60 s, and the samples.
    let h = store
        .history(&SeriesKey::host("h1"), 60.0)
        .expect("history");
    assert_eq!(h.minutes.len(), 1);
    assert_eq!(h.seconds.len(), 600);
    let h = store
        .history(&SeriesKey::vm("h1-vm"), 700.0)
        .expect("history");
    assert!(h.minutes.is_empty());
    assert_eq!(h.seconds.len(), 20);
    assert!(close(h.seconds[0].sample.load, 0.2), "{:?}", h.seconds[0]);
}

fn a_late_sample_merges_into_its_minute(store: &dyn Store) {
    store.add_host(&spec("h1"), 0.0).expect("add");
    for t in 0..60 {
        store.record_look(&look_at(t)).expect("look");
    }
    store.compact(700.0).expect("compact");
    let mut late = look(30.5, &["h1"], 0.9);
    if let Some(s) = &mut late.hosts[0].sample {
        s.dirty_bps = None;
    }
    store.record_look(&late).expect("late look");
    let done = store.compact(700.0).expect("compact");
    assert_eq!((done.samples_rolled, done.minutes_written), (2, 2));
    let h = store.history(&SeriesKey::host("h1"), 0.0).expect("history");
    assert_eq!(h.minutes.len(), 1);
    let m = h.minutes[0];
    assert_eq!(m.samples, 61);
    assert!(close(m.load.mean, (0.295 * 60.0 + 0.9) / 61.0), "{m:?}");
    assert!(close(m.load.max, 0.9), "{m:?}");
    let dirty = m.dirty_bps.expect("dirty");
    assert!(
        close(dirty.mean, 290_000.0),
        "weighed by the samples that had one: {dirty:?}"
    );
}

fn every_series_of_a_kind_is_read_at_once(store: &dyn Store) {
    store.add_host(&spec("h1"), 0.0).expect("add");
    store.add_host(&spec("h2"), 0.0).expect("add");
    for t in 0..700 {
        let hosts: &[&str] = if t < 650 { &["h1", "h2"] } else { &["h1"] };
        store
            .record_look(&look(f64::from(t), hosts, 0.5))
            .expect("look");
    }
    store.compact(700.0).expect("compact");
    for (kind, names) in [
        (SeriesKind::Host, ["h1", "h2"]),
        (SeriesKind::Vm, ["h1-vm", "h2-vm"]),
    ] {
        let all = store.histories(kind, 30.0).expect("histories");
        assert_eq!(
            all.keys().collect::<Vec<_>>(),
            names.iter().collect::<Vec<_>>()
        );
        for name in names {
            let key = SeriesKey {
                kind,
                name: name.to_string(),
            };
            assert_eq!(
                all[name],
                store.history(&key, 30.0).expect("history"),
                "{name}"
            );
        }
    }
    let h2 = &store.histories(SeriesKind::Host, 30.0).expect("histories")["h2"];
    assert_eq!((h2.minutes.len(), h2.seconds.len()), (1, 590));
    assert!(store.histories(SeriesKind::Vm, f64::NAN).is_err());
}

/// A short retention, to see it bound what is kept.
mod bounded {
    use super::*;

    fn retention() -> Retention {
        Retention {
            raw_s: 60,
            rollup_days: 1,
            decision_days: 1,
        }
    }

    for_each_store!(history_and_decisions_stay_within_retention);

    const DAY: f64 = 86_400.0;

    fn history_and_decisions_stay_within_retention(store: &dyn Store) {
        store.add_host(&spec("h1"), 0.0).expect("add");
        let mut s = step(0.0);
        s.plans = vec![plan_row("p1", "recorded", 0.0)];
        s.decision = Some(decision(0.0, &["p1"]));
        store.save_step(&s).expect("step");
        // Three days, a look every ten minutes and a compaction after each; then five minutes
        // of a look every second.
        let mut deleted = Compacted::default();
        let mut at = 0.0;
        let mut add = |c: Compacted| {
            deleted.minutes_deleted += c.minutes_deleted;
            deleted.decisions_deleted += c.decisions_deleted;
        };
        while at < 3.0 * DAY {
            store.record_look(&look(at, &["h1"], 0.5)).expect("look");
            add(store.compact(at).expect("compact"));
            at += 600.0;
        }
        let end = at + 300.0;
        while at < end {
            store.record_look(&look(at, &["h1"], 0.5)).expect("look");
            at += 1.0;
        }
        add(store.compact(at).expect("compact"));

        for series in [SeriesKey::host("h1"), SeriesKey::vm("h1-vm")] {
            let h = store.history(&series, 0.0).expect("history");
            // Within a day of now, and the oldest minute kept is the first look after that.
            let first = h.minutes.first().map_or(0.0, |m| m.start_s);
            assert!(
                first >= at - DAY && first < at - DAY + 600.0,
                "{first} at {at}"
            );
            assert!(
                h.minutes.len() <= 24 * 60 + 1,
                "{} minutes",
                h.minutes.len()
            );
            let oldest = h.seconds.first().map_or(at, |p| p.at_s);
            assert!(at - oldest <= 120.0, "samples from {oldest} at {at}");
            assert!(h.seconds.len() <= 120, "{} samples", h.seconds.len());
        }
        assert!(deleted.minutes_deleted > 0);
        assert_eq!(deleted.decisions_deleted, 1);
        assert!(matches!(
            store.export_decision("p1"),
            Err(StoreError::NoDecision { .. })
        ));
        assert!(
            store.plan("p1").expect("plan").is_some(),
            "the plan itself is kept"
        );
    }
}
