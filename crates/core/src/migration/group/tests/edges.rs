//! Refusals (each a [`GroupError`] naming the field) and odd input that must never panic.

use super::*;

const ALL: [Technique; 3] = Technique::CONCRETE;

fn refused(g: &Group) -> GroupError {
    match choose_group(g, &GroupParams::default(), &ALL) {
        Ok(plan) => panic!("accepted: {}", plan.reason),
        Err(e) => e,
    }
}

#[test]
fn zero_capacity_where_a_migration_must_cross_is_refused() {
    let mut g = pair();
    g.source.tx_capacity_bps = 0.0;
    assert_eq!(
        refused(&g),
        GroupError::NoCapacity {
            host: "src".into(),
            side: "transmit"
        }
    );
    let mut g = pair();
    g.destinations[0].rx_capacity_bps = 0.0;
    let e = refused(&g);
    assert_eq!(
        e.to_string(),
        "host dst has no receive capacity: no migration can cross it"
    );
    // Sides no migration crosses may be anything finite, 0 included.
    let mut g = pair();
    g.source.rx_capacity_bps = 0.0;
    g.destinations[0].tx_capacity_bps = 0.0;
    assert!(choose_group(&g, &GroupParams::default(), &ALL).is_ok());
}

#[test]
fn nan_infinite_and_negative_numbers_are_refused_by_name() {
    let mut g = pair();
    g.vms[1].traffic.rx_bps = f64::NAN;
    let e = refused(&g);
    assert!(
        matches!(&e, GroupError::BadNumber { what, .. } if what == "vm-in.rx_bps"),
        "{e}"
    );
    let mut g = pair();
    g.source.tx_capacity_bps = f64::INFINITY;
    assert!(
        matches!(refused(&g), GroupError::BadNumber { what, .. } if what == "src.tx_capacity_bps")
    );
    let mut g = pair();
    g.vms[0].profile.dirty_rate_bps = -1.0;
    assert!(
        matches!(refused(&g), GroupError::BadNumber { what, .. } if what == "vm-out.dirty_rate_bps")
    );
    let mut g = pair();
    g.destinations[0].residents.push(Traffic {
        rx_bps: f64::NEG_INFINITY,
        tx_bps: 0.0,
    });
    assert!(
        matches!(refused(&g), GroupError::BadNumber { what, .. } if what == "dst.residents[0].rx_bps")
    );
    let params = GroupParams {
        degradation_weight: f64::NAN,
        ..GroupParams::default()
    };
    let e = choose_group(&pair(), &params, &ALL).expect_err("NaN weight");
    assert!(
        matches!(
            e,
            GroupError::Param {
                field: "degradation_weight",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn names_and_shape_are_checked() {
    let mut g = pair();
    g.vms.clear();
    assert_eq!(refused(&g), GroupError::Empty);
    let mut g = pair();
    g.vms[1].name = "vm-out".into();
    assert_eq!(refused(&g), GroupError::DuplicateVm("vm-out".into()));
    let mut g = pair();
    g.vms[0].destination = "nowhere".into();
    assert!(matches!(refused(&g), GroupError::UnknownDestination { .. }));
    let mut g = pair();
    g.vms[0].destination = "src".into();
    assert!(matches!(
        refused(&g),
        GroupError::DestinationIsSource { .. }
    ));
    let mut g = pair();
    g.destinations.push(nic("src", GBIT, GBIT));
    assert_eq!(refused(&g), GroupError::DuplicateHost("src".into()));
    let g = pair();
    let bad = [
        Schedule {
            techniques: vec![Technique::Precopy],
            order: vec![0, 1],
            concurrency: 1,
        },
        Schedule {
            techniques: vec![Technique::Precopy; 2],
            order: vec![0, 0],
            concurrency: 1,
        },
        Schedule {
            techniques: vec![Technique::Precopy; 2],
            order: vec![1],
            concurrency: 1,
        },
        Schedule {
            techniques: vec![Technique::Precopy; 2],
            order: vec![0, 7],
            concurrency: 1,
        },
        Schedule {
            techniques: vec![Technique::Precopy; 2],
            order: vec![0, 1],
            concurrency: 0,
        },
    ];
    for s in bad {
        let e = predict_group(&g, &GroupParams::default(), &s, &ALL).expect_err("bad");
        assert!(matches!(e, GroupError::Schedule(_)), "{e}");
    }
}

/// Every number of the input set, one at a time, to each odd value: an error or a plan whose
/// numbers are all finite, never a panic.
#[test]
fn odd_values_never_panic() {
    let odd = [
        f64::NAN,
        f64::INFINITY,
        -1.0,
        0.0,
        f64::MIN_POSITIVE,
        1e-300,
        1e300,
    ];
    type Set = fn(&mut Group, f64);
    let setters: [Set; 8] = [
        |g, x| g.source.tx_capacity_bps = x,
        |g, x| g.source.rx_capacity_bps = x,
        |g, x| g.destinations[0].rx_capacity_bps = x,
        |g, x| g.destinations[0].tx_capacity_bps = x,
        |g, x| g.vms[0].traffic.tx_bps = x,
        |g, x| g.vms[1].traffic.rx_bps = x,
        |g, x| g.vms[0].profile.dirty_rate_bps = x,
        |g, x| {
            g.source.residents.push(Traffic {
                rx_bps: x,
                tx_bps: x,
            })
        },
    ];
    for set in setters {
        for x in odd {
            let mut g = pair();
            set(&mut g, x);
            if let Ok(plan) = choose_group(&g, &GroupParams::default(), &ALL) {
                assert!(plan.evacuation_s.is_finite(), "{x}: {}", plan.reason);
                assert!(plan.objective.is_finite(), "{x}: {}", plan.reason);
                for v in &plan.vms {
                    assert!(
                        v.lost_work_s.is_finite() && v.bandwidth_bps > 0.0,
                        "{x}: {v:?}"
                    );
                }
            }
        }
    }
    for memory in [0, 1, u64::MAX] {
        let mut g = pair();
        g.vms[0].profile.memory_bytes = memory;
        g.vms[0].profile.wss_bytes = memory;
        let plan = choose_group(&g, &GroupParams::default(), &ALL).expect("any memory");
        assert!(plan.objective.is_finite() || memory == u64::MAX);
    }
}

#[test]
fn odd_params_never_panic() {
    let cases = [
        GroupParams {
            min_migration_share: 0.0,
            ..GroupParams::default()
        },
        GroupParams {
            migration_cap_bps: Some(f64::NAN),
            ..GroupParams::default()
        },
        GroupParams {
            max_concurrent: 0,
            ..GroupParams::default()
        },
        GroupParams {
            max_evaluations: 0,
            ..GroupParams::default()
        },
        GroupParams {
            cost: crate::migration::cost::CostParams {
                window_min_s: f64::NAN,
                ..Default::default()
            },
            ..GroupParams::default()
        },
    ];
    for p in cases {
        assert!(matches!(
            choose_group(&pair(), &p, &ALL),
            Err(GroupError::Param { .. })
        ));
    }
    // The tightest legal budget still answers (the paper's rule, evaluated once).
    let p = GroupParams {
        max_evaluations: 1,
        max_concurrent: 100,
        migration_cap_bps: Some(1.0),
        ..GroupParams::default()
    };
    let plan = choose_group(&pair(), &p, &[]).expect("plan");
    assert_eq!(plan.search.map(|s| s.evaluations), Some(1));
}
