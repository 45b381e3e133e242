//! The dirty-rate model's judge is independent of what policies see: it judges every migration
//! from the VM's true dirty rate and working set, whatever the observation error model.

use drover_core::dc::PolicySpec;
use drover_core::migration::Technique;
use drover_sim::judge::{Judge, JudgeParams};
use drover_sim::observe::ObserveModel;
use drover_sim::synth::{generate, SynthSpec};
use drover_sim::{simulate, DatacenterModel, MigrationModel, Report, Workload};

fn day() -> Workload {
    generate(&SynthSpec {
        vms: 300,
        samples: 96,
        seed: 5,
    })
    .expect("synthetic day")
}

fn run(
    work: &Workload,
    policy: &str,
    observe: ObserveModel,
    technique: Option<Technique>,
) -> Report {
    let mut model = DatacenterModel::planetlab(DatacenterModel::default_hosts(work));
    let mut migration = MigrationModel::dirty_rate(technique);
    if let MigrationModel::DirtyRate { observe: o, .. } = &mut migration {
        *o = observe;
    }
    model.migration = migration;
    let spec: PolicySpec = policy.parse().expect("policy");
    let mut r = simulate(&model, work, spec, 3, None).expect("simulation");
    r.wall_ms = 0.0;
    r
}

const BLURRED: ObserveModel = ObserveModel {
    sigma: 1.0,
    lag_steps: 3,
    every_steps: 2,
};

#[test]
fn a_policy_blind_to_dirty_rates_is_judged_the_same_whatever_it_could_see() {
    // lr-mmt never reads dirty rates: if the judge used the observed figures, blurring them
    // would change its migrations' outcomes.
    let work = day();
    let exact = run(&work, "lr-mmt-1.2", ObserveModel::EXACT, None);
    assert!(exact.migrations > 0, "{exact:?}");
    assert_eq!(exact, run(&work, "lr-mmt-1.2", BLURRED, None));
}

#[test]
fn drover_decides_from_what_it_sees() {
    let work = day();
    let exact = run(&work, "drover", ObserveModel::EXACT, None);
    let blurred = run(&work, "drover", BLURRED, None);
    assert_ne!(exact, blurred);
    // Seeded: the same noise twice.
    assert_eq!(blurred, run(&work, "drover", BLURRED, None));
}

#[test]
fn only_precopy_fails_and_only_where_the_judge_says() {
    let work = day();
    // Every pre-copy that does not converge is cancelled.
    let mut strict = JudgeParams::calibrated().expect("committed parameters");
    strict.escalation_pressure = strict.convergence_pressure;
    let with = |technique| {
        let mut model = DatacenterModel::planetlab(DatacenterModel::default_hosts(&work));
        let mut migration = MigrationModel::dirty_rate(Some(technique));
        if let MigrationModel::DirtyRate { judge, .. } = &mut migration {
            *judge = Judge::Calibrated(Box::new(strict.clone()));
        }
        model.migration = migration;
        let spec: PolicySpec = "lr-mmt-1.2".parse().expect("policy");
        simulate(&model, &work, spec, 3, None).expect("simulation")
    };
    let post = with(Technique::Postcopy);
    assert!(post.migrations > 0);
    assert_eq!(post.failed_migrations, 0);
    let pre = with(Technique::Precopy);
    assert!(pre.failed_migrations > 0, "{pre:?}");
    assert!(matches!(
        MigrationModel::dirty_rate(None),
        MigrationModel::DirtyRate {
            judge: Judge::Calibrated(_),
            ..
        }
    ));
}
