//! Migrations: their time is the cost model's, the VM ends on the destination, ids are
//! idempotent, and every refusal says why.

use super::*;
use crate::live::Tally;
use drover_core::control::{Action, MigrationPhase, Outcome, PowerState};
use drover_core::migration::{predict, CostParams, LinkProfile, PlanKnobs, Technique, VmProfile};

fn migrate(id: &str, vm: &str, from: &str, to: &str, t: Technique) -> Action {
    Action::Migrate {
        move_id: id.into(),
        vm: vm.into(),
        from: from.into(),
        to: to.into(),
        technique: t,
        knobs: PlanKnobs::default(),
    }
}

fn accepted(o: &Outcome) -> bool {
    matches!(o, Outcome::MigrateAccepted { .. })
}

fn refusal(o: Outcome) -> String {
    match o {
        Outcome::MigrateRefused { error, .. } => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Two 4-core hosts, one 2-vCPU 1 GiB VM on h0 at half its CPU.
fn pair() -> LiveSim {
    sim(
        spec(vec![hosts(2, 4.0, 16)], 2, 1024, vec![0]),
        work(&[&[0.5, 0.5]]),
    )
}

/// What the cost model predicts for vm0 of [`pair`] with the default knobs.
fn expected(s: &mut LiveSim, t: Technique, now: f64) -> drover_core::migration::Prediction {
    let obs = s.observe(now);
    let vm = &obs.hosts[0].vms[0];
    let profile = VmProfile {
        memory_bytes: vm.memory_bytes,
        wss_bytes: vm.wss_bytes.expect("measured"),
        dirty_rate_bps: vm.dirty_rate_bps.expect("measured"),
    };
    assert_eq!(profile.dirty_rate_bps, 20e6, "40 MB/s at full CPU, at half");
    let k = PlanKnobs::default();
    let params = CostParams {
        downtime_limit_s: k.downtime_limit_ms as f64 / 1000.0,
        precopy_deadline_s: k.deadline_s as f64,
        hybrid: k.hybrid(),
        ..CostParams::default()
    };
    let link = LinkProfile {
        bandwidth_bps: 125e6,
    };
    predict(t, &profile, &link, &params)
}

#[test]
fn a_precopy_takes_the_cost_models_time_and_moves_the_vm() {
    let mut s = pair();
    let p = expected(&mut s, Technique::Precopy, 10.0);
    assert!(p.converges && p.total_s > 1.0, "{p:?}");
    assert!(accepted(&s.apply(
        &migrate("m1", "vm0", "h0", "h1", Technique::Precopy),
        10.0
    )));
    let obs = s.observe(10.0 + p.total_s - 0.01);
    assert_eq!(s.host_of("vm0"), Some("h0"), "still on the source");
    assert_eq!(obs.migrations[0].phase, MigrationPhase::Running);
    assert_eq!(obs.hosts[1].vms[0].presence, VmPresence::Incoming);
    assert_eq!(obs.hosts[0].vms[0].migration.as_deref(), Some("m1"));
    let obs = s.observe(10.0 + p.total_s + 0.01);
    assert_eq!(s.host_of("vm0"), Some("h1"));
    assert_eq!(obs.migrations[0].phase, MigrationPhase::Completed);
    assert!(obs.migrations[0].vm_on_destination);
    assert!(obs.hosts[0].vms.is_empty());
    assert_eq!(obs.hosts[1].vms[0].migration, None);
    let m = s.measures();
    assert_eq!(
        m.migrations[&Technique::Precopy],
        Tally {
            completed: 1,
            ..Tally::default()
        }
    );
    assert_eq!(m.transferred_bytes, p.transferred_bytes);
    assert!(m.migration_lost_core_s > 0.0);
}

#[test]
fn a_postcopy_switches_over_first_and_cannot_be_cancelled_after() {
    let mut s = pair();
    let p = expected(&mut s, Technique::Postcopy, 0.0);
    assert!(accepted(&s.apply(
        &migrate("m1", "vm0", "h0", "h1", Technique::Postcopy),
        0.0
    )));
    let obs = s.observe(p.switchover_s + 0.01);
    assert_eq!(s.host_of("vm0"), Some("h1"), "runs on the destination");
    assert_eq!(obs.migrations[0].phase, MigrationPhase::Running);
    assert!(obs.migrations[0].vm_on_destination);
    each_vm_once(&obs, &["vm0".into()]);
    let cancel = Action::Cancel {
        move_id: "m1".into(),
        from: "h0".into(),
    };
    let out = s.apply(&cancel, p.switchover_s + 0.02);
    assert!(
        matches!(&out, Outcome::Cancel { error: Some(e), .. } if e.contains("switched over")),
        "{out:?}"
    );
    let obs = s.observe(p.total_s + 0.01);
    assert_eq!(obs.migrations[0].phase, MigrationPhase::Completed);
    assert_eq!(s.measures().migrations[&Technique::Postcopy].completed, 1);
}

#[test]
fn a_cancelled_precopy_leaves_the_vm_and_frees_the_destination() {
    let mut s = pair();
    s.apply(&migrate("m1", "vm0", "h0", "h1", Technique::Precopy), 0.0);
    let cancel = Action::Cancel {
        move_id: "m1".into(),
        from: "h0".into(),
    };
    assert_eq!(
        s.apply(&cancel, 0.5),
        Outcome::Cancel {
            move_id: "m1".into(),
            error: None
        }
    );
    assert_eq!(
        s.apply(&cancel, 0.6),
        Outcome::Cancel {
            move_id: "m1".into(),
            error: None
        },
        "cancelling again is accepted"
    );
    let obs = s.observe(100.0);
    assert_eq!(s.host_of("vm0"), Some("h0"));
    assert_eq!(obs.migrations[0].phase, MigrationPhase::Cancelled);
    assert!(obs.hosts[1].vms.is_empty());
    assert_eq!(s.measures().migrations[&Technique::Precopy].cancelled, 1);
    let unknown = s.apply(
        &Action::Cancel {
            move_id: "m9".into(),
            from: "h0".into(),
        },
        100.0,
    );
    assert!(
        matches!(unknown, Outcome::Cancel { error: Some(e), .. } if e.contains("no migration"))
    );
    // Listed for `keep_ended_s` (600 s) after it ended; found by id for ever.
    assert!(s.observe(1000.0).migrations.is_empty());
    let kept = s.migration("m1").expect("kept");
    assert_eq!(kept.phase, MigrationPhase::Cancelled);
    assert_eq!(
        kept.error.as_deref(),
        Some("cancelled at the manager's request")
    );
}

#[test]
fn auto_runs_the_cost_models_choice_and_a_precopy_that_never_converges_fails() {
    let mut s = sim(
        LiveSpec {
            dirty_bps_range: (400e6, 400e6),
            ..spec(vec![hosts(2, 4.0, 16)], 2, 1024, vec![0])
        },
        work(&[&[1.0, 1.0]]),
    );
    s.apply(&migrate("a", "vm0", "h0", "h1", Technique::Auto), 0.0);
    s.advance(1000.0);
    let m = s.measures();
    assert_eq!(m.migrations.len(), 1);
    let (t, tally) = m.migrations.iter().next().expect("one");
    assert_ne!(*t, Technique::Precopy, "400 MB/s dirty on a 125 MB/s link");
    assert_eq!(tally.completed, 1);
    assert_eq!(s.host_of("vm0"), Some("h1"));

    s.apply(&migrate("p", "vm0", "h1", "h0", Technique::Precopy), 1000.0);
    s.advance(1000.0 + 59.0);
    assert_eq!(
        s.migration("p").map(|m| m.phase),
        Some(MigrationPhase::Running)
    );
    s.advance(1000.0 + 61.0);
    let p = s.migration("p").expect("kept");
    assert_eq!(p.phase, MigrationPhase::Failed);
    assert!(p
        .error
        .as_deref()
        .is_some_and(|e| e.contains("did not converge")));
    assert_eq!(s.host_of("vm0"), Some("h1"), "stays on the source");
    assert_eq!(s.measures().migrations[&Technique::Precopy].failed, 1);
}

#[test]
fn a_migration_id_is_idempotent() {
    let mut s = pair();
    let a = migrate("m1", "vm0", "h0", "h1", Technique::Precopy);
    assert!(accepted(&s.apply(&a, 0.0)));
    assert!(accepted(&s.apply(&a, 0.5)), "asked again while it runs");
    assert_eq!(s.measures().in_flight, 1);
    s.advance(200.0);
    assert_eq!(s.host_of("vm0"), Some("h1"));
    assert!(
        accepted(&s.apply(&a, 200.0)),
        "asked again after it ended: accepted, nothing runs"
    );
    s.advance(400.0);
    assert_eq!(s.host_of("vm0"), Some("h1"));
    assert_eq!(s.measures().ended().completed, 1);
    assert_eq!(s.measures().in_flight, 0);
}

#[test]
fn refusals_say_why_and_change_nothing() {
    let mut s = sim(
        spec(vec![hosts(3, 4.0, 2)], 1, 1536, vec![0, 1]),
        work(&[&[0.1, 0.1], &[0.1, 0.1]]),
    );
    let t = Technique::Precopy;
    let cases = [
        (migrate("a", "vm0", "h1", "h2", t), "not running on h1"),
        (migrate("b", "vm9", "h0", "h2", t), "no VM vm9"),
        (migrate("c", "vm0", "h0", "h7", t), "no host h7"),
        (
            migrate("d", "vm0", "h0", "h0", t),
            "both source and destination",
        ),
        (migrate("e", "vm0", "h0", "h1", t), "needs 1610612736"),
    ];
    for (action, why) in cases {
        let e = refusal(s.apply(&action, 1.0));
        assert!(e.contains(why), "{e} (expected '{why}')");
    }
    let bad = PlanKnobs {
        downtime_limit_ms: 0,
        ..PlanKnobs::default()
    };
    let e = refusal(s.apply(
        &Action::Migrate {
            move_id: "f".into(),
            vm: "vm0".into(),
            from: "h0".into(),
            to: "h2".into(),
            technique: t,
            knobs: bad,
        },
        1.0,
    ));
    assert!(e.starts_with("knobs: downtime_limit_ms"), "{e}");
    s.apply(&Action::Standby { host: "h2".into() }, 1.0);
    let e = refusal(s.apply(&migrate("g", "vm0", "h0", "h2", t), 1.0));
    assert!(e.contains("h2 is in standby"), "{e}");
    s.apply(&Action::Wake { host: "h2".into() }, 1.0);
    let e = refusal(s.apply(&migrate("h", "vm0", "h0", "h2", t), 2.0));
    assert!(e.contains("h2 is waking"), "{e}");
    assert_eq!(s.power_state("h2"), Some(PowerState::Waking));
    s.advance(100.0);
    assert!(accepted(
        &s.apply(&migrate("i", "vm0", "h0", "h2", t), 100.0)
    ));
    let e = refusal(s.apply(&migrate("j", "vm0", "h0", "h1", t), 100.0));
    assert!(e.contains("already in migration i"), "{e}");
    let e = refusal(s.apply(&migrate("k", "vm1", "h1", "h2", t), 100.0));
    assert!(
        e.contains("memory free"),
        "the incoming VM holds h2's memory: {e}"
    );
    assert_eq!(s.measures().refused, 10);
    assert_eq!(s.measures().in_flight, 1);
    assert!(s.migration("a").is_none(), "a refused id is not kept");
}
