use super::*;
use crate::series::{HostSample, VmSample};

/// One host `h1` with capacity 1 core and demand `demand`, standby hosts `h2`, and VM d1 with
/// the given counters.
fn sample(t_s: f64, demand: f64, ops: u64, demanded: u64) -> Sample {
    Sample {
        t_s,
        hosts: vec![
            HostSample {
                name: "h1".into(),
                power: Power::Active,
                cpus: 1.0,
                demand_cores: demand,
                used_cores: demand.min(1.0),
                vms: 1,
            },
            HostSample {
                name: "h2".into(),
                power: Power::Standby,
                cpus: 1.0,
                demand_cores: 0.0,
                used_cores: 0.0,
                vms: 0,
            },
        ],
        vms: vec![VmSample {
            name: "d1".into(),
            host: "h1".into(),
            ops,
            demanded_ops: Some(demanded),
            ops_per_s: 0.0,
            integrity_errors: 0,
            full_ops_per_s: None,
        }],
    }
}

/// 0-10 s: d1 asks 1000 ops/s; it does 1000/s until 4 s, 500/s from 4 to 8 s, 1000/s after.
/// h1 is over its cap from 4 s to 7 s.
fn series() -> Vec<Sample> {
    let mut done = 0;
    (0..=10)
        .map(|t| {
            let demand = if (4..=7).contains(&t) { 1.5 } else { 0.5 };
            let s = sample(t as f64, demand, done, t * 1000);
            done += if (4..8).contains(&t) { 500 } else { 1000 };
            s
        })
        .collect()
}

#[test]
fn loss_over_a_window_from_the_counters() {
    let s = series();
    // 2 to 10 s: asked 8000, did 2000 + 2000 + 2000 = 6000: 25%, 2 s of full throughput.
    let l = vm_loss(&s, "d1", 2.0, 10.0, true).expect("loss");
    assert_eq!((l.ops, l.demanded_ops), (6000, 8000));
    assert!((l.degradation_pct - 25.0).abs() < 1e-9);
    assert!((l.lost_s - 2.0).abs() < 1e-9);
    // Window ends between samples: the samples at or before them (2 s and 9 s).
    let l = vm_loss(&s, "d1", 2.5, 9.9, false).expect("loss");
    assert_eq!((l.ops, l.demanded_ops), (5000, 7000));
    assert_eq!(vm_loss(&s, "d9", 0.0, 10.0, true), None, "no such VM");
    assert_eq!(vm_loss(&s, "d1", 3.0, 3.5, true), None, "one sample");
}

#[test]
fn the_mean_is_over_the_raised_vms_only() {
    let l = |raised, pct| VmLoss {
        vm: "x".into(),
        raised,
        ops: 0,
        demanded_ops: 1,
        degradation_pct: pct,
        lost_s: 0.0,
    };
    assert_eq!(
        mean_degradation(&[l(true, 10.0), l(true, 20.0), l(false, 0.0)]),
        Some(15.0)
    );
    assert_eq!(mean_degradation(&[l(false, 5.0)]), None);
}

#[test]
fn onset_and_relief() {
    let s = series();
    assert_eq!(onset(&s, "h1", 0.0, 10.0), Some(4.0));
    assert_eq!(onset(&s, "h1", 8.0, 10.0), None);
    // Under the cap from 8 s on: 8, 9, 10 are three samples in a row.
    assert_eq!(relieved(&s, "h1", 4.0, 10.0), Some(8.0));
    // Window ends at 9 s: 8 and 9 run to its end.
    assert_eq!(relieved(&s, "h1", 4.0, 9.0), Some(8.0));
    // A single quiet sample does not count.
    let mut s = series();
    s[9].hosts[0].demand_cores = 2.0;
    assert_eq!(relieved(&s, "h1", 4.0, 10.0), Some(10.0));
    assert_eq!(relieved(&s, "h1", 4.0, 9.0), None);
}

#[test]
fn a_one_sample_blip_is_no_overload() {
    let mut s = series();
    s[1].hosts[0].demand_cores = 1.5;
    assert_eq!(onset(&s, "h1", 0.0, 3.0), None);
    assert_eq!(onset(&s, "h1", 0.0, 10.0), Some(4.0));
    // An overload still going at the window's end counts from its start.
    assert_eq!(onset(&s, "h1", 0.0, 5.0), Some(4.0));
}

#[test]
fn an_unanswered_host_is_neither_over_nor_under() {
    let mut s = series();
    s[4].hosts[0].power = Power::Unknown;
    assert_eq!(onset(&s, "h1", 0.0, 10.0), Some(5.0));
}

#[test]
fn energy_counts_hosts_on_at_their_use() {
    let s = series();
    let p = HostPower {
        idle_w: 100.0,
        peak_w: 200.0,
    };
    // h1 at use 0.5 (150 W) for 0-4 and 8-10 (6 s), at 1.0 (200 W) for 4-8 (4 s); h2 standby.
    let want = (150.0 * 6.0 + 200.0 * 4.0) / 3600.0;
    assert!((energy_wh(&s, &p, 0.0, 10.0) - want).abs() < 1e-12);
    assert_eq!(energy_wh(&s, &p, 3.0, 3.0), 0.0);
}

#[test]
fn hosts_on_over_time() {
    let mut s = series();
    for sample in &mut s[5..8] {
        sample.hosts[1].power = Power::Waking;
    }
    assert_eq!(hosts_on(&s)[4], (4.0, 1));
    assert_eq!(hosts_on(&s)[5], (5.0, 2));
    // Two hosts on during 5-8 s (3 s of 10), one otherwise.
    let mean = mean_hosts_on(&s, 0.0, 10.0).expect("mean");
    assert!((mean - 1.3).abs() < 1e-12, "{mean}");
    assert_eq!(peak_hosts_on(&s, 0.0, 10.0), 2);
    assert_eq!(standby_at(&s, 6.5), 0);
    assert_eq!(standby_at(&s, 9.0), 1);
    assert_eq!(mean_hosts_on(&s, 3.0, 3.0), None);
}

#[test]
fn integrity_errors_are_each_vms_worst() {
    let mut s = series();
    s[3].vms[0].integrity_errors = 2;
    s[6].vms[0].integrity_errors = 3;
    assert_eq!(integrity_errors(&s), 3);
}
