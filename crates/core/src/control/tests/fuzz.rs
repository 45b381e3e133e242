//! Random observations, settings, outcomes and operator commands: the step never panics, never
//! starts a move to an unreachable, inactive, drained or unusable host or beyond a host's
//! memory, never plans a move to a drained host, and decides the same way twice from the same
//! input (so a recorded decision replays).

use super::rig::{Cluster, Rig, GIB};
use crate::control::{
    approve, cancel_plan, drain, record, step, Action, ControlSettings, ControlState, HostObs,
    MigrationObs, MigrationPhase, Mode, MoveState, Observation, Outcome, PlacementRule, PlanState,
    PowerState, VmObs, VmPresence,
};
use crate::dc::rng::SplitMix64;

const NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

fn pick<T: Copy>(r: &mut SplitMix64, xs: &[T]) -> T {
    xs[r.below(xs.len())]
}

/// A number that is usually sane and sometimes not.
fn wild(r: &mut SplitMix64, scale: f64) -> f64 {
    match r.below(20) {
        0 => f64::NAN,
        1 => -scale,
        2 => f64::INFINITY,
        3 => 0.0,
        _ => r.next_f64() * scale,
    }
}

fn host(r: &mut SplitMix64, name: &str) -> HostObs {
    let power = pick(
        r,
        &[
            PowerState::Active,
            PowerState::Active,
            PowerState::Active,
            PowerState::Standby,
            PowerState::Waking,
        ],
    );
    let mut vms = Vec::new();
    if power == PowerState::Active {
        for _ in 0..r.below(4) {
            vms.push(VmObs {
                name: pick(r, &NAMES).into(),
                presence: pick(
                    r,
                    &[
                        VmPresence::Running,
                        VmPresence::Running,
                        VmPresence::Incoming,
                        VmPresence::Lost,
                    ],
                ),
                vcpus: r.below(5) as u32,
                memory_bytes: (r.below(8) as u64) * GIB,
                cpu_demand_cores: wild(r, 4.0),
                dirty_rate_bps: (r.below(3) > 0).then(|| wild(r, 1e9)),
                wss_bytes: (r.below(2) > 0).then(|| r.below(8) as u64 * GIB),
                net_rx_bps: 0.0,
                net_tx_bps: 0.0,
                migration: None,
            });
        }
    }
    HostObs {
        name: name.into(),
        reachable: r.below(8) > 0,
        power,
        cpus: if r.below(10) == 0 {
            wild(r, 8.0)
        } else {
            1.0 + r.below(8) as f64
        },
        memory_bytes: (r.below(16) as u64) * GIB,
        cpu_demand_cores: wild(r, 10.0),
        vms,
    }
}

fn observation(r: &mut SplitMix64, state: &ControlState) -> Observation {
    let hosts: Vec<HostObs> = (0..2 + r.below(5))
        .map(|_| {
            let name = pick(r, &["h1", "h2", "h3", "h4", "h5"]);
            host(r, name)
        })
        .collect();
    let mut migrations = Vec::new();
    for m in state.moves.values().filter(|m| m.state.in_flight()) {
        if r.below(3) == 0 {
            continue;
        }
        migrations.push(MigrationObs {
            id: m.id.clone(),
            phase: pick(
                r,
                &[
                    MigrationPhase::Unknown,
                    MigrationPhase::Running,
                    MigrationPhase::Completed,
                    MigrationPhase::Failed,
                    MigrationPhase::Cancelled,
                    MigrationPhase::Paused,
                    MigrationPhase::Interrupted,
                ],
            ),
            vm_on_destination: r.below(2) == 0,
            error: None,
            transferred_bytes: None,
        });
    }
    Observation { hosts, migrations }
}

fn settings(r: &mut SplitMix64) -> ControlSettings {
    let rules = (0..r.below(3))
        .map(|_| {
            let vms = vec![pick(r, &NAMES).to_string(), pick(r, &NAMES).to_string()];
            let hard = r.below(2) == 0;
            match r.below(3) {
                0 => PlacementRule::Affinity { vms, hard },
                1 => PlacementRule::AntiAffinity { vms, hard },
                _ => PlacementRule::VmHost {
                    vms,
                    hosts: vec![pick(r, &["h1", "h2", "h3"]).into()],
                    allow: r.below(2) == 0,
                    hard,
                },
            }
        })
        .collect();
    ControlSettings {
        mode: pick(r, &[Mode::Auto, Mode::Auto, Mode::Recommend, Mode::DryRun]),
        hot_samples: 1 + r.below(2) as u32,
        predictive: r.below(2) == 0,
        min_on_s: 0.0,
        consolidate_every_s: 1.0 + r.below(5) as f64,
        vm_cooldown_s: r.below(20) as f64,
        max_out_per_host: 1 + r.below(2) as u32,
        max_in_per_host: 1 + r.below(2) as u32,
        standby: r.below(3) > 0,
        balance: (r.below(2) == 0).then_some(crate::control::Balance {
            spread: 0.1,
            every_s: 2.0,
        }),
        rules,
        ..ControlSettings::default()
    }
}

/// What a started move must satisfy against the observation it was started from.
fn check_starts(
    before: &ControlState,
    after: &ControlState,
    obs: &Observation,
    seed: u64,
) -> usize {
    let mut starts = 0;
    for (id, m) in &after.moves {
        let started = matches!(m.state, MoveState::Requested { .. })
            && before
                .moves
                .get(id)
                .is_none_or(|b| b.state == MoveState::Planned);
        if !started {
            continue;
        }
        starts += 1;
        let dest = obs.host(&m.to).expect("a destination that exists");
        assert!(
            dest.reachable && dest.power == PowerState::Active,
            "seed {seed}: {id} to {dest:?}"
        );
        assert!(
            !after.drained.contains(&m.to),
            "seed {seed}: {id} to drained"
        );
        assert!(
            dest.cpus > 0.0,
            "seed {seed}: {id} to a host of no capacity"
        );
        let arriving: u64 = after
            .in_flight()
            .filter(|x| x.to == m.to)
            .filter(|x| {
                !dest
                    .vms
                    .iter()
                    .any(|v| v.name == x.vm && v.presence != VmPresence::Lost)
            })
            .map(|x| x.memory_bytes)
            .fold(0, u64::saturating_add);
        let used = dest.memory_allocated().saturating_add(arriving);
        assert!(
            used <= dest.memory_bytes,
            "seed {seed}: {id} fills {} beyond memory",
            m.to
        );
    }
    for id in after
        .plans
        .keys()
        .filter(|p| !before.plans.contains_key(*p))
    {
        for m in after.plans[id].moves.iter().map(|m| &after.moves[m]) {
            assert!(
                !after.drained.contains(&m.to),
                "seed {seed}: planned to drained"
            );
        }
    }
    starts
}

fn operate(
    r: &mut SplitMix64,
    state: &mut ControlState,
    obs: &Observation,
    s: &ControlSettings,
    now: f64,
) {
    let plans: Vec<String> = state.plans.keys().cloned().collect();
    match r.below(10) {
        0 if !plans.is_empty() => {
            let id = pick(r, &plans.iter().map(String::as_str).collect::<Vec<_>>()).to_string();
            let _ = approve(state, &id, obs, s, now);
        }
        1 if !plans.is_empty() => {
            let id = pick(r, &plans.iter().map(String::as_str).collect::<Vec<_>>()).to_string();
            let _ = cancel_plan(state, &id, now);
        }
        2 => {
            let _ = drain(state, pick(r, &["h1", "h2", "h3", "x"]), now);
        }
        3 => {
            let _ = crate::control::undrain(state, pick(r, &["h1", "h2", "h3", "x"]), now);
        }
        _ => {}
    }
}

fn feed_back(r: &mut SplitMix64, state: &mut ControlState, actions: &[Action], now: f64) {
    for a in actions {
        let err = (r.below(4) == 0).then(|| "scripted failure".to_string());
        let outcome = match a {
            Action::Migrate { move_id, .. } => match r.below(3) {
                0 => Outcome::MigrateAccepted {
                    move_id: move_id.clone(),
                },
                1 => Outcome::MigrateRefused {
                    move_id: move_id.clone(),
                    error: "no".into(),
                },
                _ => Outcome::MigrateUnreachable {
                    move_id: move_id.clone(),
                    error: "timeout".into(),
                },
            },
            Action::Cancel { move_id, .. } => Outcome::Cancel {
                move_id: move_id.clone(),
                error: err,
            },
            Action::Standby { host } => Outcome::Standby {
                host: host.clone(),
                error: err,
            },
            Action::Wake { host } => Outcome::Wake {
                host: host.clone(),
                error: err,
            },
        };
        record(state, outcome, now);
    }
}

#[test]
fn random_observations_never_panic_nor_break_the_invariants() {
    let (mut starts, mut plans, mut skips) = (0, 0, 0);
    for seed in 0..300u64 {
        let mut r = SplitMix64::new(seed);
        let s = settings(&mut r);
        let mut state = ControlState::default();
        let mut now = 0.0;
        for _ in 0..40 {
            now += if r.below(10) == 0 { -0.5 } else { 1.0 };
            let obs = observation(&mut r, &state);
            operate(&mut r, &mut state, &obs, &s, now);
            let before = state.clone();
            let out = step(&mut state, &obs, &s, now);
            // Determinism: the same input decides the same way.
            let mut again = before.clone();
            assert_eq!(step(&mut again, &obs, &s, now), out, "seed {seed}");
            assert_eq!(again, state, "seed {seed}");
            assert!(
                out.next_look_s > now && out.next_look_s.is_finite(),
                "seed {seed}"
            );
            assert!(state.energy_wh.is_finite() && state.energy_wh >= 0.0);
            starts += check_starts(&before, &state, &obs, seed);
            plans += out.new_plans.len();
            skips += out
                .journal
                .iter()
                .filter(|j| j.what.contains("skipped"))
                .count();
            if s.mode == Mode::DryRun {
                assert!(out.actions.is_empty(), "seed {seed}: dry-run acted");
            }
            for p in state
                .plans
                .values()
                .filter(|p| p.state == PlanState::Approved)
            {
                assert!(!p.moves.is_empty() || !p.standby.is_empty() || !p.wake.is_empty());
            }
            feed_back(&mut r, &mut state, &out.actions, now);
        }
    }
    // The random clusters do reach every decision.
    assert!(
        starts > 100 && plans > 300 && skips > 10,
        "{starts} {plans} {skips}"
    );
}

#[test]
fn a_recorded_decision_replays() {
    // The same scripted run twice, through serde as the manager stores it: same outputs.
    let run = || {
        let cluster = Cluster::new()
            .host("h1", 4.0, 32)
            .host("h2", 4.0, 32)
            .host("h3", 8.0, 64)
            .vm("h1", "a", 2.0, 4)
            .vm("h1", "b", 1.9, 4)
            .vm("h2", "c", 0.3, 4);
        let mut rig = Rig::new(cluster, ControlSettings::default());
        rig.until(400.0);
        rig
    };
    let (one, two) = (run(), run());
    assert_eq!(one.outputs, two.outputs);
    assert_eq!(one.state, two.state);
    // A stored state and observation decide again exactly as they did.
    let stored = serde_json::to_string(&one.state).expect("serializes");
    let mut back: ControlState = serde_json::from_str(&stored).expect("parses");
    let mut same = one.state.clone();
    let obs = one.observation();
    let a = step(&mut back, &obs, &one.settings, one.now + 1.0);
    let b = step(&mut same, &obs, &one.settings, one.now + 1.0);
    assert_eq!(a, b);
}

#[test]
fn a_stored_decision_record_reproduces_its_plan() {
    use crate::control::Decision;
    let cluster = Cluster::new()
        .host("h1", 4.0, 32)
        .host("h2", 4.0, 32)
        .vm("h1", "a", 2.0, 4)
        .vm("h1", "b", 1.9, 4);
    let mut rig = Rig::new(cluster, ControlSettings::default());
    // Look until a plan is made, keeping the inputs of that look.
    let mut found = None;
    for _ in 0..20 {
        let before = rig.state.clone();
        let obs = rig.observation();
        let now = rig.now + 1.0;
        let mut state = before.clone();
        let output = step(&mut state, &obs, &rig.settings, now);
        if !output.new_plans.is_empty() {
            found = Some(Decision {
                format: crate::control::DECISION_FORMAT,
                now_s: now,
                observation: obs,
                state_before: before,
                settings: rig.settings.clone(),
                output,
            });
            break;
        }
        rig.until(now);
    }
    let decision = found.expect("a hot host makes a plan within 20 looks");
    let text = serde_json::to_string(&decision).expect("serializes");
    let back: Decision = serde_json::from_str(&text).expect("parses");
    assert!(back.reproduces(), "replay differs from the record");
    let mut altered = back.clone();
    altered.observation.hosts[0].cpu_demand_cores = 0.1;
    assert!(
        !altered.reproduces(),
        "a different observation must not reproduce the plan"
    );
}
