//! One look at the size the manager's benchmark runs (1,000 hosts, 10,000 VMs). Ignored by
//! default (it measures, it does not check): `cargo test --release -p drover-core
//! one_look_at_datacenter_scale -- --ignored --nocapture`.

use super::rig::{Cluster, GIB};
use crate::control::{step, ControlSettings, ControlState};
use crate::dc::rng::SplitMix64;
use std::time::Instant;

#[test]
#[ignore = "measures; run by hand in release"]
fn one_look_at_datacenter_scale() {
    let mut r = SplitMix64::new(7);
    let mut cluster = Cluster::new();
    for h in 0..1000 {
        cluster = cluster.host(&format!("h{h}"), 32.0, 256);
    }
    for v in 0..10_000 {
        // Hosts 0-99 run hot; 100-399 are cold with two VMs each (consolidation candidates);
        // the rest share the other VMs.
        let h = if v < 600 {
            100 + v / 2
        } else {
            [0, 400][v % 2] + (v / 2) % [100, 600][v % 2]
        };
        let host = format!("h{h}");
        let scale = match h {
            0..=99 => 3.3,
            100..=399 => 0.5,
            _ => 1.0,
        };
        cluster = cluster.vm(&host, &format!("vm{v}"), scale * r.next_f64() * 2.0, 4);
        let vm = cluster.h(&host).vms.last_mut().expect("just added");
        vm.memory_bytes = (2 + r.below(8) as u64) * GIB;
    }
    let settings = ControlSettings {
        min_on_s: 0.0,
        ..ControlSettings::default()
    };
    let mut state = ControlState::default();
    let obs = cluster.observe(vec![]);
    for t in 1..=5 {
        let start = Instant::now();
        let out = step(&mut state, &obs, &settings, t as f64);
        eprintln!(
            "look {t}: {:?}, {} plans, {} actions",
            start.elapsed(),
            out.new_plans.len(),
            out.actions.len()
        );
    }
}
