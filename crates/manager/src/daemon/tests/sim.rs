//! The whole loop over the simulator-backed fleet ([`SimFleet`]), in virtual time, on the
//! in-memory store and on SQLite: a sudden overload relieved, cold hosts emptied into standby,
//! every migration's result stored, and every decision the manager stored replaying to the
//! same output (core's `Decision::reproduces`, and `drover_sim::replay` on the file).

use super::super::{Daemon, LookReport, LoopConfig, Parts};
use crate::clock::{Clock, VirtualClock};
use crate::fleet::{Fleet, SimFleet};
use crate::store::{MemoryStore, MoveQuery, PlanQuery, Retention, SqliteStore, Store};
use drover_core::control::{
    ControlSettings, MoveState, Observation, PlanKind, PlanState, PowerState, VmPresence,
};
use drover_core::dc::VmType;
use drover_sim::live::{HostSpec, LiveSim, LiveSpec, Placement, Surge};
use drover_sim::Workload;
use std::sync::Arc;

const GIB: u64 = 1 << 30;

/// The overload: h0's four VMs want a whole core each (4 of h0's 4 cores) in this window, s.
const SURGE: (f64, f64) = (60.0, 400.0);

/// Virtual seconds each run lasts.
const RUN_S: f64 = 900.0;

/// Four 4-core, 16 GiB hosts, VMs of 1 vCPU and 1 GiB: h0 runs vm0-vm3 at 60% each (2.4 cores),
/// h1 vm4 and vm5 at 30%, h2 vm6 at 20%, h3 nothing. A sudden overload on h0 in [`SURGE`].
fn model() -> LiveSim {
    let spec = LiveSpec {
        vm_types: vec![VmType {
            name: "small".into(),
            mips: 1000.0,
            pes: 1,
            ram_mb: 1024,
            bw_mbps: 100.0,
        }],
        dirty_bps_range: (20e6, 20e6),
        wss_share_range: (0.25, 0.25),
        placement: Placement::Given(vec![0, 0, 0, 0, 1, 1, 2]),
        wake_delay_s: 30.0,
        ..LiveSpec::new(vec![HostSpec {
            count: 4,
            cpus: 4.0,
            memory_bytes: 16 * GIB,
            power: ControlSettings::default().default_power,
        }])
    };
    let levels = [0.6, 0.6, 0.6, 0.6, 0.3, 0.3, 0.2];
    let samples = (RUN_S / spec.interval_s) as usize + 2;
    let names = (0..levels.len()).map(|v| format!("vm{v}")).collect();
    let util = levels
        .iter()
        .flat_map(|&u| std::iter::repeat_n(u, samples))
        .collect();
    let work = Workload::new("scripted".into(), names, samples, util);
    let mut sim = LiveSim::new(spec, work).expect("a valid model");
    sim.add_surge(&Surge {
        vms: (0..4).map(|v| format!("vm{v}")).collect(),
        level: 1.0,
        start_s: SURGE.0,
        end_s: SURGE.1,
    })
    .expect("a valid surge");
    sim
}

struct SimRig {
    clock: Arc<VirtualClock>,
    fleet: Arc<SimFleet>,
    store: Arc<dyn Store>,
}

impl SimRig {
    fn new(store: Arc<dyn Store>) -> SimRig {
        let clock = Arc::new(VirtualClock::at(0.0));
        let fleet = Arc::new(SimFleet::new(model(), clock.clone()));
        SimRig {
            clock,
            fleet,
            store,
        }
    }

    fn start(&self) -> Daemon<SimFleet> {
        let settings = self.fleet.control_settings(ControlSettings {
            // Hosts may be emptied two minutes after they became active (default five).
            min_on_s: 120.0,
            ..ControlSettings::default()
        });
        let (daemon, _manager) = Daemon::start(Parts {
            fleet: self.fleet.clone(),
            store: self.store.clone(),
            clock: self.clock.clone(),
            inventory: self.fleet.inventory(),
            settings,
            config: LoopConfig::default(),
        })
        .expect("the loop starts");
        daemon
    }

    /// Looks as the loop would (each when it wants its next one) until `end_s`.
    async fn run(&self, daemon: &mut Daemon<SimFleet>, end_s: f64) -> Vec<LookReport> {
        let mut reports = Vec::new();
        while self.clock.now_s() < end_s {
            reports.push(daemon.look().await.expect("look"));
            self.clock.set(daemon.wake_at());
        }
        reports
    }

    fn observation(&self) -> Observation {
        self.fleet.with(|sim| sim.observe(sim.now_s()))
    }
}

fn each_vm_runs_once(obs: &Observation) {
    for v in 0..7 {
        let name = format!("vm{v}");
        let running = obs
            .hosts
            .iter()
            .flat_map(|h| &h.vms)
            .filter(|vm| vm.name == name && vm.presence == VmPresence::Running)
            .count();
        assert_eq!(running, 1, "{name} runs on {running} hosts");
    }
}

async fn relieves_and_consolidates(store: Arc<dyn Store>) {
    let rig = SimRig::new(store);
    let mut daemon = rig.start();
    let reports = rig.run(&mut daemon, RUN_S).await;
    assert!(reports.len() >= 600, "{} looks", reports.len());

    let plans: Vec<_> = rig
        .store
        .plans(&PlanQuery {
            limit: 1000,
            ..PlanQuery::default()
        })
        .expect("plans")
        .into_iter()
        .map(|r| r.body)
        .collect();
    // The overload: noticed after `hot_samples` looks, relieved by moving VMs off h0.
    let relief = plans
        .iter()
        .find(|p| p.kind == PlanKind::Relief)
        .unwrap_or_else(|| panic!("no relief: {plans:#?}"));
    assert_eq!(relief.explanation.host.as_deref(), Some("h0"));
    assert_eq!(relief.state, PlanState::Done, "{relief:#?}");
    assert!(
        relief.created_s >= SURGE.0 + 2.0 && relief.created_s <= SURGE.0 + 10.0,
        "relief planned at {} s",
        relief.created_s
    );
    // Consolidation: cold hosts emptied and put in standby, in virtual time.
    assert!(
        plans
            .iter()
            .any(|p| p.kind == PlanKind::Consolidation && p.state == PlanState::Done),
        "{plans:#?}"
    );
    let standby: Vec<String> = rig
        .fleet
        .hosts()
        .into_iter()
        .filter(|h| rig.fleet.with(|sim| sim.power_state(h)) == Some(PowerState::Standby))
        .collect();
    assert!(!standby.is_empty(), "no host in standby");

    let obs = rig.observation();
    each_vm_runs_once(&obs);
    for h in obs.hosts.iter().filter(|h| h.power == PowerState::Active) {
        assert!(h.load() <= 0.9, "{} at {:.2}", h.name, h.load());
    }
    for h in obs.hosts.iter().filter(|h| h.power == PowerState::Standby) {
        assert!(h.vms.is_empty(), "{} in standby runs {:?}", h.name, h.vms);
    }

    // Every move ended done, with the simulator's record stored as its result; the model
    // started each migration once and refused none.
    let moves = rig
        .store
        .moves(&MoveQuery {
            limit: 1000,
            ..MoveQuery::default()
        })
        .expect("moves");
    assert!(moves.len() >= 2, "{} moves", moves.len());
    for m in &moves {
        assert!(
            matches!(m.body.state, MoveState::Done { .. }),
            "{}: {:?}",
            m.body.id,
            m.body.state
        );
        let result = rig
            .store
            .migration(&m.body.id)
            .expect("read")
            .expect("stored");
        assert!(
            result.record.as_str().contains("\"simulator\""),
            "{result:?}"
        );
    }
    let measures = rig.fleet.with(|sim| sim.measures().clone());
    assert_eq!(measures.ended().completed as usize, moves.len());
    assert_eq!(measures.refused, 0);
    assert!(daemon.state().energy_wh > 0.0);

    // Every stored decision replays to what the manager decided.
    for p in &plans {
        let d = rig.store.export_decision(&p.id).expect("a decision");
        assert!(d.reproduces(), "plan {}'s decision", p.id);
        let text = serde_json::to_string(&d).expect("JSON");
        let path = std::path::Path::new("decision.json");
        let stored = drover_sim::replay::parse(path, &text).expect("a decision file");
        let replay = drover_sim::replay::replay(&stored);
        assert!(replay.verdict.ok(), "plan {}: {:?}", p.id, replay.verdict);
        assert!(replay.output.new_plans.contains(&p.id));
    }
}

#[tokio::test]
async fn over_the_simulator_on_the_memory_store() {
    relieves_and_consolidates(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn over_the_simulator_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open_in(dir.path(), Retention::default()).expect("open");
    relieves_and_consolidates(Arc::new(store)).await;
}

/// A manager restarted on the same store and the same (simulated) cluster picks up where it
/// stopped: nothing runs twice, the plans it left go on.
#[tokio::test]
async fn restarted_mid_relief_it_goes_on_from_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || -> Arc<dyn Store> {
        Arc::new(SqliteStore::open_in(dir.path(), Retention::default()).expect("open"))
    };
    let mut rig = SimRig::new(open());
    let mut daemon = rig.start();
    // Until the relief's first migration was asked for.
    let mut asked = None;
    while asked.is_none() && rig.clock.now_s() < SURGE.1 {
        let r = daemon.look().await.expect("look");
        asked = r.actions.iter().find_map(|a| match a {
            drover_core::control::Action::Migrate { move_id, .. } => Some(move_id.clone()),
            _ => None,
        });
        rig.clock.set(daemon.wake_at());
    }
    let asked = asked.expect("relief asked for a migration");
    drop(daemon);
    rig.store = open();
    let mut daemon = rig.start();
    rig.run(&mut daemon, SURGE.1).await;
    let m = rig
        .store
        .moves(&MoveQuery {
            limit: 1000,
            ..MoveQuery::default()
        })
        .expect("moves")
        .into_iter()
        .find(|m| m.body.id == asked)
        .expect("the move is stored");
    assert!(matches!(m.body.state, MoveState::Done { .. }), "{m:?}");
    let measures = rig.fleet.with(|sim| sim.measures().clone());
    assert_eq!(measures.refused, 0);
    each_vm_runs_once(&rig.observation());
}
