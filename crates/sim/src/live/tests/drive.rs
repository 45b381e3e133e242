//! The manager's control step driving the live simulation, one look a second, over two hours
//! of a synthetic day with a sudden overload: plans are made, migrations complete, idle hosts
//! go to standby and come back, and no VM is ever lost or in two places.

use super::*;
use crate::live::{Measures, Surge};
use crate::synth::{generate, SynthSpec};
use drover_core::control::{
    record, step, ControlSettings, ControlState, MoveState, PlanKind, PowerState,
};

struct Run {
    sim: LiveSim,
    state: ControlState,
    plans: Vec<PlanKind>,
    /// Most hosts active at once during the surge.
    peak_active: usize,
    /// Hosts in standby at each look.
    standby: Vec<usize>,
}

const SURGE: (f64, f64) = (1200.0, 2400.0);

fn run(seed: u64, hours: f64) -> Run {
    let work = generate(&SynthSpec {
        vms: 40,
        samples: (hours * 12.0) as usize + 1,
        seed,
    })
    .expect("synthetic day");
    let names = work.names.clone();
    let spec = LiveSpec {
        wake_delay_s: 20.0,
        seed,
        ..LiveSpec::new(vec![hosts(10, 4.0, 8)])
    };
    let mut sim = sim(spec, work);
    // The VMs first packed on h0 all want a whole core for 20 minutes.
    let on_h0: Vec<String> = sim.vms_on("h0").iter().map(|s| s.to_string()).collect();
    assert!(on_h0.len() >= 5, "first fit packs h0: {on_h0:?}");
    sim.add_surge(&Surge {
        vms: on_h0,
        level: 1.0,
        start_s: SURGE.0,
        end_s: SURGE.1,
    })
    .expect("surge");
    let settings = sim.control_settings(ControlSettings::default());
    let mut r = Run {
        sim,
        state: ControlState::default(),
        plans: Vec::new(),
        peak_active: 0,
        standby: Vec::new(),
    };
    let end = (hours * 3600.0) as u32;
    for t in 1..=end {
        let now = f64::from(t);
        let obs = r.sim.observe(now);
        each_vm_once(&obs, &names);
        let out = step(&mut r.state, &obs, &settings, now);
        for a in &out.actions {
            let outcome = r.sim.apply(a, now);
            record(&mut r.state, outcome, now);
        }
        for id in &out.new_plans {
            r.plans.push(r.state.plans[id].kind);
        }
        let standby = obs
            .hosts
            .iter()
            .filter(|h| h.power == PowerState::Standby)
            .count();
        r.standby.push(standby);
        if (SURGE.0..SURGE.1).contains(&now) {
            r.peak_active = r.peak_active.max(obs.hosts.len() - standby);
        }
    }
    r
}

#[test]
fn the_control_step_drives_the_live_simulation() {
    let r = run(3, 2.0);
    let m: &Measures = r.sim.measures();
    assert!(r.plans.contains(&PlanKind::Relief), "{:?}", r.plans);
    assert!(r.plans.contains(&PlanKind::Consolidation), "{:?}", r.plans);
    let done = r
        .state
        .moves
        .values()
        .filter(|mv| matches!(mv.state, MoveState::Done { .. }))
        .count();
    assert!(done >= 3, "{done} moves done");
    assert_eq!(m.ended().completed as usize, done, "{m:?}");
    assert_eq!(m.refused, 0, "the step plans only what fits");
    assert_eq!(m.in_flight, 0);
    // The empty hosts went to standby before the surge, some woke for it, and emptied hosts
    // went back to standby once the surge was over.
    let before = r.standby[SURGE.0 as usize - 2];
    assert!(before >= 2, "standby before the surge: {before}");
    let during = r.standby[SURGE.0 as usize..SURGE.1 as usize]
        .iter()
        .min()
        .copied()
        .unwrap_or(0);
    let after = *r.standby.last().expect("looks");
    assert!(
        during < before,
        "hosts woke for the surge: {during} vs {before}"
    );
    assert!(
        after > during,
        "and went back to standby: {after} vs {during}"
    );
    assert!(r.peak_active > 10 - before);
    assert!(m.slatah() > 0.0 && m.slatah() < 0.2, "{}", m.slatah());
    assert!(m.pdm() > 0.0);
    assert!(m.energy_wh > 0.0);
    // The manager's energy account (its settings' power model, charged per look) agrees with
    // the model's exact one.
    let rel = (r.state.energy_wh / m.energy_wh - 1.0).abs();
    assert!(rel < 0.02, "{} vs {}", r.state.energy_wh, m.energy_wh);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = run(5, 0.75);
    let b = run(5, 0.75);
    assert_eq!(a.sim.measures(), b.sim.measures());
    assert_eq!(a.state, b.state);
    assert_eq!(a.plans, b.plans);
}
