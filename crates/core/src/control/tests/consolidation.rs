//! Consolidation into standby, wake on demand, drain.

use super::rig::{migrations, quiet, Cluster, Rig};
use crate::control::{
    drain, undrain, Action, ControlError, ControlSettings, HostPower, PlanKind, PlanState,
    PowerState,
};

fn standbys(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Standby { host } => Some(host.clone()),
            _ => None,
        })
        .collect()
}

fn wakes(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Wake { host } => Some(host.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_cold_host_is_emptied_into_standby_after_the_cold_period() {
    // h1 runs one small VM (0.05: cold); h2 is busy enough to stay (0.375 > cold 0.3); h3 runs
    // nothing.
    let cluster = Cluster::new()
        .host("h1", 8.0, 64)
        .host("h2", 8.0, 64)
        .host("h3", 8.0, 64)
        .vm("h1", "lone", 0.4, 4)
        .vm("h2", "w", 3.0, 4);
    let mut rig = Rig::new(cluster, ControlSettings::default());
    // Every host was first seen at t=1: min_on_s (300) keeps them all on until t=301, the
    // first consolidation round after it (rounds at 1, 61, ..., 301).
    let early = rig.until(300.0);
    assert!(early.is_empty(), "{early:?}");
    assert!(rig.state.plans.is_empty());
    let out = rig.look();
    assert_eq!(rig.now, 301.0);
    assert_eq!(
        migrations(&out.actions),
        vec![("lone".into(), "h1".into(), "h2".into())]
    );
    assert_eq!(
        standbys(&out.actions),
        vec!["h3".to_string()],
        "idle h3 at once"
    );
    let kinds: Vec<_> = out
        .new_plans
        .iter()
        .map(|p| rig.state.plans[p].kind)
        .collect();
    assert_eq!(
        kinds,
        vec![PlanKind::Consolidation, PlanKind::Consolidation]
    );
    let plan = &rig.state.plans[&out.new_plans[0]];
    assert_eq!(plan.standby, vec!["h1".to_string()]);
    assert!(
        plan.explanation.summary.contains("cold"),
        "{}",
        plan.explanation.summary
    );
    // The move completes two looks later; then h1 is empty and asked to stand by, once.
    let after = rig.looks(5);
    assert_eq!(standbys(&after), vec!["h1".to_string()]);
    assert_eq!(rig.cluster.h("h1").power, PowerState::Standby);
    assert!(rig.looks(120).is_empty(), "nothing more to do");
    assert_eq!(rig.plans(PlanState::Done).len(), 2);
    // Only h2 draws power now: 100 + 150 x 0.425 W.
    let e0 = rig.state.energy_wh;
    rig.look();
    let w = (rig.state.energy_wh - e0) * 3600.0;
    assert!((w - (100.0 + 150.0 * 3.4 / 8.0)).abs() < 1e-6, "{w} W");
}

#[test]
fn consolidation_only_when_it_pays() {
    let settings = ControlSettings {
        min_on_s: 0.0,
        ..ControlSettings::default()
    };
    // Four VMs cost more moves than max_moves_per_host (3).
    let mut many = Cluster::new().host("h1", 8.0, 64).host("h2", 8.0, 64);
    for i in 0..4 {
        many = many.vm("h1", &format!("v{i}"), 0.1, 1);
    }
    many = many.vm("h2", "w", 3.0, 4);
    let mut rig = Rig::new(many, settings.clone());
    assert!(migrations(&rig.looks(70)).is_empty());
    // A host whose idle draw is below min_gain_w saves too little.
    let frugal = Cluster::new()
        .host("h1", 8.0, 64)
        .host("h2", 8.0, 64)
        .vm("h1", "v", 0.1, 1)
        .vm("h2", "w", 3.0, 4);
    let mut cheap = settings.clone();
    cheap.power.insert(
        "h1".into(),
        HostPower {
            idle_w: 5.0,
            peak_w: 50.0,
        },
    );
    let mut rig = Rig::new(frugal.clone(), cheap);
    assert!(migrations(&rig.looks(70)).is_empty());
    // All or nothing: v fits nowhere under target (h2 would pass it), so nothing moves.
    let mut full = frugal;
    full.v("w").cpu_demand_cores = 5.95;
    let mut rig = Rig::new(full, settings);
    assert!(migrations(&rig.looks(70)).is_empty());
}

#[test]
fn a_host_that_receives_is_not_emptied_in_the_same_look() {
    // h1 (1 VM) and h2 (2 VMs) are cold; h3 is nearly at target, so h1's VM can only go to h2,
    // which then stays.
    let cluster = Cluster::new()
        .host("h1", 8.0, 64)
        .host("h2", 8.0, 64)
        .host("h3", 8.0, 64)
        .vm("h1", "a", 0.5, 4)
        .vm("h2", "b", 0.5, 4)
        .vm("h2", "c", 0.5, 4)
        .vm("h3", "d", 5.9, 4);
    let settings = ControlSettings {
        min_on_s: 0.0,
        ..ControlSettings::default()
    };
    let mut rig = Rig::new(cluster, settings);
    let out = rig.look();
    assert_eq!(
        migrations(&out.actions),
        vec![("a".into(), "h1".into(), "h2".into())]
    );
    assert_eq!(out.new_plans.len(), 1);
}

#[test]
fn a_standby_host_is_woken_when_nothing_running_fits_and_moves_wait_for_it() {
    // h1 hot; h2 at target; h3 and h4 in standby: h4 has the most cores per idle watt.
    let cluster = Cluster::new()
        .host("h1", 4.0, 32)
        .host("h2", 4.0, 32)
        .standby_host("h3", 4.0, 32)
        .standby_host("h4", 8.0, 32)
        .vm("h1", "a", 3.9, 4)
        .vm("h2", "b", 3.0, 4);
    let mut settings = ControlSettings {
        min_on_s: 10_000.0,
        ..ControlSettings::default()
    };
    settings.power.insert(
        "h4".into(),
        HostPower {
            idle_w: 120.0,
            peak_w: 300.0,
        },
    );
    let mut rig = Rig::new(cluster, settings);
    let first = rig.looks(3);
    assert_eq!(wakes(&first), vec!["h4".to_string()]);
    assert!(migrations(&first).is_empty(), "h4 is not active yet");
    let plan = rig.plans(PlanState::Approved)[0];
    assert_eq!(plan.wake, vec!["h4".to_string()]);
    assert!(plan.explanation.moves[0]
        .why_destination
        .contains("cores per idle watt"));
    // The rig wakes a host in three looks: h4 is active at t=6, and the move starts then.
    let mut started_at = None;
    for _ in 0..6 {
        let out = rig.look();
        if !migrations(&out.actions).is_empty() {
            assert_eq!(rig.cluster.h("h4").power, PowerState::Active);
            started_at = Some(rig.now);
            assert_eq!(
                migrations(&out.actions),
                vec![("a".into(), "h1".into(), "h4".into())]
            );
            break;
        }
    }
    assert_eq!(started_at, Some(6.0));
    assert!(wakes(&rig.looks(5)).is_empty(), "asked once");
}

#[test]
fn drain_evacuates_and_keeps_the_host_empty_until_undrain() {
    let cluster = Cluster::new()
        .host("h1", 8.0, 64)
        .host("h2", 8.0, 64)
        .host("h3", 8.0, 64)
        .vm("h1", "a", 1.0, 4)
        .vm("h1", "b", 1.0, 4)
        .vm("h2", "c", 4.0, 4)
        .vm("h3", "d", 5.9, 4);
    let mut rig = Rig::new(cluster, quiet());
    assert!(matches!(
        drain(&mut rig.state, "h1", 0.0),
        Err(ControlError::UnknownHost(_))
    ));
    rig.look();
    drain(&mut rig.state, "h1", rig.now).expect("known now");
    let out = rig.look();
    let plan = &rig.state.plans[&out.new_plans[0]];
    assert_eq!(plan.kind, PlanKind::Drain);
    assert_eq!(plan.moves.len(), 2);
    // One at a time out of h1; both to h2 (h3 has no room for either).
    let actions = rig.looks(8);
    let mut moved = migrations(&out.actions);
    moved.extend(migrations(&actions));
    assert_eq!(
        moved,
        vec![
            ("a".into(), "h1".into(), "h2".into()),
            ("b".into(), "h1".into(), "h2".into())
        ]
    );
    assert!(rig.cluster.h("h1").vms.is_empty());
    // h2 gets hot: the only host with room is drained h1, so nothing moves.
    rig.cluster.v("c").cpu_demand_cores = 5.5;
    assert!(migrations(&rig.looks(10)).is_empty());
    assert!(rig.cluster.h("h1").vms.is_empty());
    undrain(&mut rig.state, "h1", rig.now).expect("undrain");
    let back = migrations(&rig.looks(3));
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].2, "h1");
    assert!(undrain(&mut rig.state, "nope", rig.now).is_err());
}

#[test]
fn a_drained_empty_host_goes_to_standby() {
    let cluster = Cluster::new()
        .host("h1", 8.0, 64)
        .host("h2", 8.0, 64)
        .vm("h1", "a", 1.0, 4)
        .vm("h2", "b", 4.0, 4);
    let settings = ControlSettings {
        min_on_s: 10_000.0,
        ..ControlSettings::default()
    };
    let mut rig = Rig::new(cluster, settings);
    rig.look();
    drain(&mut rig.state, "h1", rig.now).expect("drain");
    let actions = rig.looks(6);
    assert_eq!(migrations(&actions).len(), 1);
    assert_eq!(standbys(&actions), vec!["h1".to_string()]);
}

#[test]
fn two_hotspots_share_one_woken_host() {
    let cluster = Cluster::new()
        .host("h1", 4.0, 32)
        .host("h2", 4.0, 32)
        .standby_host("h3", 16.0, 64)
        .standby_host("h4", 16.0, 64)
        .vm("h1", "a", 3.9, 4)
        .vm("h2", "b", 1.0, 4);
    let settings = ControlSettings {
        min_on_s: 10_000.0,
        ..ControlSettings::default()
    };
    let mut rig = Rig::new(cluster, settings);
    rig.wake_looks = 10;
    let actions = rig.looks(3);
    assert_eq!(wakes(&actions), vec!["h3".to_string()]);
    // h2 gets hot while h3 is still waking: its relief waits for h3 too, no second wake.
    rig.cluster.v("b").cpu_demand_cores = 3.9;
    let actions = rig.looks(3);
    assert_eq!(rig.cluster.h("h3").power, PowerState::Waking);
    assert!(wakes(&actions).is_empty());
    let plans = rig.plans(PlanState::Approved);
    assert_eq!(plans.len(), 2);
    assert!(plans.iter().all(|p| p.wake == vec!["h3".to_string()]));
    let later = migrations(&rig.looks(14));
    assert_eq!(later.len(), 2, "{later:?}");
    assert!(later.iter().all(|(_, _, to)| to == "h3"));
    assert_eq!(rig.cluster.h("h4").power, PowerState::Standby);
}
