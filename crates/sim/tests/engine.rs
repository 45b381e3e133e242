//! The engine against hand-computed cases.

use drover_core::dc::PolicySpec;
use drover_sim::synth::{generate, SynthSpec};
use drover_sim::{simulate, DatacenterModel, Workload};

fn workload(rows: &[&[f32]]) -> Workload {
    let samples = rows[0].len();
    let names = (0..rows.len()).map(|i| format!("vm{i}")).collect();
    Workload::new(
        "hand".into(),
        names,
        samples,
        rows.iter().flat_map(|r| r.iter().copied()).collect(),
    )
}

fn model(hosts: usize) -> DatacenterModel {
    let mut m = DatacenterModel::planetlab(hosts);
    m.sample_offset_s = 0.0;
    m
}

#[test]
fn dvfs_energy_by_hand() {
    // One 500-MIPS VM (it is the only VM, so it gets type 0: 2500 MIPS) at a constant 50% on
    // host 1 (G5: host 0 is a G4 whose cores are too small for 2500 MIPS). Utilization is
    // 1250 / 5320 = 23.5%: P = 101 + 4 * 0.3496 = 102.398 W. Decisions at 300, 600 and 900 s;
    // the first interval is start-up (off), so energy covers 600 s: 61,439 J.
    let w = workload(&[&[0.5, 0.5, 0.5, 0.5]]);
    let r = simulate(&model(2), &w, PolicySpec::Dvfs, 1, None).unwrap();
    let u: f64 = 1250.0 / 5320.0;
    let p = 101.0 + 4.0 * (u * 10.0 - 2.0);
    assert!(
        (r.energy_kwh * 3.6e6 - p * 600.0).abs() < 1e-6,
        "{}",
        r.energy_kwh * 3.6e6
    );
    assert_eq!((r.migrations, r.slatah_pct), (0, 0.0));
}

#[test]
fn npa_draws_full_power_on_every_host_from_the_start() {
    let w = workload(&[&[0.5, 0.5, 0.5, 0.5]]);
    let r = simulate(&model(2), &w, PolicySpec::Npa, 1, None).unwrap();
    assert!((r.energy_kwh * 3.6e6 - (117.0 + 135.0) * 900.0).abs() < 1e-6);
}

#[test]
fn idle_vm_leaves_and_its_host_switches_off() {
    // VM 1 drops to zero at sample 1 and leaves for good: its later demand costs no energy.
    let w = workload(&[&[0.5, 0.5, 0.5, 0.5], &[0.5, 0.0, 0.5, 0.5]]);
    let mut m = model(4);
    let r = simulate(&m, &w, PolicySpec::Dvfs, 1, None).unwrap();
    m.idle_vms_leave = false;
    let kept = simulate(&m, &w, PolicySpec::Dvfs, 1, None).unwrap();
    assert!(r.energy_kwh < kept.energy_kwh);
}

#[test]
fn a_migration_costs_time_on_target_and_ten_percent_on_the_vm() {
    // Four VMs, one per type; VMs 2 and 3 never ask for CPU and leave at once. PABFD admission
    // spreads VM 0 (2500 MIPS) and VM 1 (2000 MIPS) onto the two G5 hosts (their demand at
    // admission is their full size, too big for a G4 core). At 300 s THR 0.8 finds VM 1's host
    // the least utilized (400 of 5320 MIPS) and empties it onto VM 0's host: one migration of
    // 1740 MB, 27.84 s at 62.5 MB/s. The destination counts as violating for those 27.84 s and
    // VM 1 loses 10% of its 400 MIPS meanwhile.
    let w = workload(&[
        &[0.2, 0.2, 0.2],
        &[0.2, 0.2, 0.2],
        &[0.0, 0.0, 0.0],
        &[0.0, 0.0, 0.0],
    ]);
    let r = simulate(&model(4), &w, "thr-mmt-0.8".parse().unwrap(), 1, None).unwrap();
    assert_eq!((r.migrations, r.underload_migrations), (1, 1), "{r:?}");
    // Active host time: 2 hosts from 300 s until 327.84 s, then 1 host until 600 s.
    let active = 2.0 * 27.84 + (600.0 - 327.84);
    assert!(
        (r.slatah_pct - 100.0 * 27.84 / active).abs() < 1e-6,
        "{}",
        r.slatah_pct
    );
    // Requested: (500 + 400) MIPS for 300 s; lost: 10% of 400 MIPS for 27.84 s.
    assert!(
        (r.pdm_pct - 100.0 * 0.1 * 400.0 * 27.84 / (900.0 * 300.0)).abs() < 1e-9,
        "{}",
        r.pdm_pct
    );
    assert!((r.slav_pct - r.slatah_pct * r.pdm_pct / 100.0).abs() < 1e-12);
}

#[test]
fn synthetic_day_runs_every_policy() {
    let w = generate(&SynthSpec::day(150, 3)).unwrap();
    for name in drover_core::dc::policy::ALL {
        let r = simulate(
            &DatacenterModel::planetlab(120),
            &w,
            name.parse().unwrap(),
            3,
            None,
        )
        .unwrap();
        assert!(r.energy_kwh > 0.0, "{name}");
        assert_eq!(r.vms, 150);
    }
}

#[test]
fn default_hosts_are_the_benchmarks_for_traces_and_scale_for_synthetic_days() {
    assert_eq!(
        DatacenterModel::default_hosts(&workload(&[&[0.5, 0.5]])),
        drover_sim::model::PLANETLAB_HOSTS
    );
    assert_eq!(
        DatacenterModel::default_hosts(&generate(&SynthSpec::day(150, 3)).unwrap()),
        120
    );
    assert_eq!(
        DatacenterModel::default_hosts(&generate(&SynthSpec::day(1, 3)).unwrap()),
        1
    );
}

#[test]
fn rejected_vms_are_reported_and_mixed_admission_is_flagged() {
    // 30 VMs at 100% on one G4 host. First fit (DVFS) admits what fits by cores, CPU and
    // memory: two 1000-MIPS VMs (1740 MB each) and one 500-MIPS VM (613 MB). PABFD with THR 0.2
    // refuses a second VM whose full size alone is over 20% of the host (1000 / 3720), so it
    // admits one 1000-MIPS VM and then only 500-MIPS ones (memory for three).
    let rows: Vec<&[f32]> = vec![&[1.0, 1.0, 1.0]; 30];
    let w = workload(&rows);
    let dvfs = simulate(&model(1), &w, PolicySpec::Dvfs, 1, None).unwrap();
    assert_eq!((dvfs.vms, dvfs.vms_rejected), (30, 27));
    assert_eq!(dvfs.rejected_vms.len(), 27);
    let again = simulate(&model(1), &w, PolicySpec::Npa, 1, None).unwrap();
    let thr = simulate(&model(1), &w, "thr-mmt-0.2".parse().unwrap(), 1, None).unwrap();
    assert_eq!(thr.vms_rejected, 26);
    let days = drover_sim::compare::mixed_admission_days(&[dvfs.clone(), again.clone()]);
    assert!(days.is_empty(), "{days:?}");
    let days = drover_sim::compare::mixed_admission_days(&[dvfs, again, thr]);
    assert_eq!(
        days.into_iter().collect::<Vec<_>>(),
        vec!["hand".to_string()]
    );
}
