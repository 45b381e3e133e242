//! Standby and wake, their refusals, and the energy and SLA accounts over a scripted day.

use super::*;
use crate::live::{LiveError, Surge};
use drover_core::control::{Action, Outcome, PowerState};

fn standby(s: &mut LiveSim, host: &str, t: f64) -> Option<String> {
    match s.apply(&Action::Standby { host: host.into() }, t) {
        Outcome::Standby { error, .. } => error,
        other => panic!("{other:?}"),
    }
}

fn wake(s: &mut LiveSim, host: &str, t: f64) -> Option<String> {
    match s.apply(&Action::Wake { host: host.into() }, t) {
        Outcome::Wake { error, .. } => error,
        other => panic!("{other:?}"),
    }
}

#[test]
fn standby_only_when_empty_and_wake_after_the_delay() {
    let mut s = sim(
        LiveSpec {
            wake_delay_s: 30.0,
            ..spec(vec![hosts(2, 4.0, 16)], 1, 1024, vec![0])
        },
        work(&[&[0.2, 0.2]]),
    );
    let e = standby(&mut s, "h0", 1.0).expect("refused");
    assert!(
        e.contains("h0 is not empty: 1 VMs run here, vm0 first"),
        "{e}"
    );
    assert!(standby(&mut s, "h9", 1.0).is_some_and(|e| e.contains("no host h9")));
    assert_eq!(standby(&mut s, "h1", 1.0), None);
    assert_eq!(standby(&mut s, "h1", 2.0), None, "already in standby");
    assert_eq!(s.power_state("h1"), Some(PowerState::Standby));
    assert_eq!(
        wake(&mut s, "h0", 3.0),
        None,
        "an active host: nothing to do"
    );
    assert_eq!(wake(&mut s, "h1", 10.0), None);
    assert_eq!(wake(&mut s, "h1", 11.0), None, "already waking");
    let e = standby(&mut s, "h1", 12.0).expect("refused");
    assert!(e.contains("waking"), "{e}");
    let obs = s.observe(39.9);
    assert_eq!(obs.hosts[1].power, PowerState::Waking);
    let obs = s.observe(40.0);
    assert_eq!(obs.hosts[1].power, PowerState::Active);
    assert_eq!(
        s.measures().active_hosts,
        vec![(0.0, 2), (1.0, 1), (40.0, 2)]
    );
    // Energy: h1 drew its idle power for 1 s, nothing in standby for 9 s, idle again while
    // waking (30 s) and once active.
    let h0 = (100.0 + 100.0 * 0.05) * 40.0;
    let h1 = 100.0 * (1.0 + 30.0);
    let wh = s.measures().energy_wh;
    assert!((wh - (h0 + h1) / 3600.0).abs() < 1e-9, "{wh}");
}

#[test]
fn energy_and_slatah_over_a_scripted_day() {
    // h0 runs a 4-vCPU VM on 4 cores: half load for 300 s, then rising to full over 300 s.
    // h1 runs a 4-vCPU VM on 2 cores rising from 1 to 3 cores: over capacity half the time.
    // h2 is empty and goes to standby at 300 s.
    let mut s = sim(
        LiveSpec {
            hosts: vec![hosts(1, 4.0, 16), hosts(1, 2.0, 16), hosts(1, 4.0, 16)],
            ..spec(vec![], 4, 1024, vec![0, 1])
        },
        work(&[&[0.5, 0.5, 1.0], &[0.25, 0.75, 0.75]]),
    );
    s.advance(300.0);
    assert_eq!(standby(&mut s, "h2", 300.0), None);
    s.advance(600.0);
    let m = s.measures();
    let h0 = 150.0 * 300.0 + 175.0 * 300.0;
    // h1: load 0.5 -> 1.5 over the first 300 s (clamped at 1 from 150 s), then 1.5 (full).
    let h1 = 100.0 * 600.0 + 100.0 * ((0.5 + 1.0) / 2.0 * 150.0 + 150.0 + 300.0);
    let h2 = 100.0 * 300.0;
    assert!(
        (m.energy_wh - (h0 + h1 + h2) / 3600.0).abs() < 1e-9,
        "{m:?}"
    );
    assert_eq!(m.active_host_s, 300.0 * 3.0 + 300.0 * 2.0);
    assert!((m.overloaded_host_s - (150.0 + 300.0)).abs() < 1e-9);
    assert!((m.slatah() - 450.0 / 1500.0).abs() < 1e-12);
    let requested = (2.0 * 300.0 + 3.0 * 300.0) + (2.0 * 300.0 + 3.0 * 300.0);
    assert!((m.requested_core_s - requested).abs() < 1e-9);
    assert_eq!(m.pdm(), 0.0, "no migration");
    assert_eq!(m.elapsed_s, 600.0);
    assert!((m.mean_active_hosts() - 2.5).abs() < 1e-12);
}

#[test]
fn a_surge_overloads_its_host_while_it_lasts() {
    let mut s = sim(
        spec(vec![hosts(1, 2.0, 16)], 1, 1024, vec![0, 0, 0]),
        work(&[&[0.1, 0.1], &[0.1, 0.1], &[0.1, 0.1]]),
    );
    let surge = Surge {
        vms: vec!["vm0".into(), "vm1".into(), "vm2".into()],
        level: 1.0,
        start_s: 10.0,
        end_s: 70.0,
    };
    s.add_surge(&surge).expect("surge");
    let obs = s.observe(5.0);
    assert!((obs.hosts[0].cpu_demand_cores - 0.3).abs() < 1e-6);
    let obs = s.observe(10.0);
    assert_eq!(obs.hosts[0].cpu_demand_cores, 3.0, "over its 2 cores");
    s.advance(100.0);
    assert!((s.measures().overloaded_host_s - 60.0).abs() < 1e-9);
    let bad = Surge {
        vms: vec!["nope".into()],
        ..surge.clone()
    };
    assert!(matches!(s.add_surge(&bad), Err(LiveError::Surge(e)) if e.contains("no VM nope")));
    let bad = Surge {
        level: 2.0,
        ..surge
    };
    assert!(s.add_surge(&bad).is_err());
}

#[test]
fn specs_that_cannot_work_are_refused_with_the_field() {
    let w = || work(&[&[0.1, 0.1]]);
    let e = LiveSim::new(spec(vec![hosts(1, 0.0, 16)], 1, 1024, vec![0]), w())
        .err()
        .expect("no cores");
    assert!(e.to_string().contains("hosts[0].cpus = 0"), "{e}");
    let e = LiveSim::new(spec(vec![], 1, 1024, vec![0]), w())
        .err()
        .expect("no hosts");
    assert!(e.to_string().contains("hosts is 0"), "{e}");
    let e = LiveSim::new(spec(vec![hosts(1, 4.0, 16)], 1, 1024, vec![3]), w())
        .err()
        .expect("past the last host");
    assert!(e.to_string().contains("placed on host 3"), "{e}");
    let ff = LiveSpec {
        placement: Placement::FirstFit { max_load: 0.75 },
        ..spec(vec![hosts(1, 4.0, 1)], 1, 1024, vec![])
    };
    let e = LiveSim::new(ff, work(&[&[0.1, 0.1], &[0.1, 0.1]]))
        .err()
        .expect("one VM fits");
    assert!(
        matches!(e, LiveError::NoRoom { ref vm, .. } if vm == "vm1"),
        "{e}"
    );
}

#[test]
fn first_fit_packs_by_memory_and_demand_at_time_zero() {
    let ff = LiveSpec {
        placement: Placement::FirstFit { max_load: 0.5 },
        ..spec(vec![hosts(3, 4.0, 3)], 2, 1024, vec![])
    };
    // 2 vCPUs at 0.5: a core each; two fit a 4-core host at 50%, memory allows three.
    let rows: Vec<&[f32]> = vec![&[0.5, 0.5]; 5];
    let s = sim(ff, work(&rows));
    assert_eq!(s.vms_on("h0"), ["vm0", "vm1"]);
    assert_eq!(s.vms_on("h1"), ["vm2", "vm3"]);
    assert_eq!(s.vms_on("h2"), ["vm4"]);
}
