//! The live simulation built from the simulator's own readers: a real PlanetLab day and a CSV
//! trace, driven by the manager's control step.

mod common;

use drover_core::control::{record, step, ControlSettings, ControlState, VmPresence};
use drover_sim::live::{HostSpec, LiveSim, LiveSpec};
use drover_sim::Workload;

fn hosts(count: usize) -> Vec<HostSpec> {
    vec![HostSpec {
        count,
        cpus: 8.0,
        memory_bytes: 16 << 30,
        power: Default::default(),
    }]
}

/// Runs the control step every `every_s` until `until_s`; checks every VM runs on exactly one
/// host at every look.
fn drive(sim: &mut LiveSim, every_s: u32, until_s: u32) -> ControlState {
    let settings = sim.control_settings(ControlSettings::default());
    let mut state = ControlState::default();
    let vms = sim.workload().vms();
    for t in (every_s..=until_s).step_by(every_s as usize) {
        let now = f64::from(t);
        let obs = sim.observe(now);
        let running = obs
            .hosts
            .iter()
            .flat_map(|h| h.vms.iter())
            .filter(|v| v.presence == VmPresence::Running)
            .count();
        assert_eq!(running, vms, "at {now} s");
        let out = step(&mut state, &obs, &settings, now);
        for a in &out.actions {
            let o = sim.apply(a, now);
            record(&mut state, o, now);
        }
    }
    state
}

#[test]
fn a_planetlab_day_drives_the_manager() {
    let work = Workload::from_planetlab_dir(&common::planetlab().join("20110303"), 288)
        .expect("PlanetLab day");
    assert_eq!(work.vms(), 1052);
    let mut sim = LiveSim::new(LiveSpec::new(hosts(200)), work).expect("live");
    let state = drive(&mut sim, 10, 2 * 3600);
    let m = sim.measures();
    assert_eq!(m.elapsed_s, 7200.0);
    assert!(m.energy_wh > 0.0 && m.requested_core_s > 0.0);
    assert!(!state.plans.is_empty(), "idle hosts at least go to standby");
    assert!(m.active_hosts.len() > 1, "{:?}", m.active_hosts);
    assert_eq!(m.refused, 0);
}

#[test]
fn a_csv_trace_builds_and_runs() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("day.csv");
    let mut csv = String::from("vm,t,cpu_pct\n");
    for v in 0..6 {
        for t in 0..4 {
            csv.push_str(&format!("web{v},{t},{}\n", 10 + 20 * t));
        }
    }
    std::fs::write(&path, csv).expect("write");
    let work = Workload::from_csv(&path).expect("csv");
    let mut sim = LiveSim::new(LiveSpec::new(hosts(3)), work).expect("live");
    let obs = sim.observe(450.0);
    let web0 = obs
        .hosts
        .iter()
        .flat_map(|h| h.vms.iter())
        .find(|v| v.name == "web0")
        .expect("listed");
    // Linear between samples: 30% at 300 s, 50% at 600 s.
    assert!((web0.cpu_demand_cores - 0.4).abs() < 1e-6, "{web0:?}");
    drive(&mut sim, 5, 1200);
}
