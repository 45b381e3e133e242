//! The store's tests: the contract every implementation passes (`contract`, run against the
//! fake and the SQLite file), history and compaction (`history`, same), what the loop writes
//! each look and compaction in slices (`looks`, same), what only the SQLite
//! file has (`sqlite`: schema versions, a failure inside a transaction, crashes; `frames`: a
//! look's samples as one row, their migration and compaction across a restart), and a
//! measurement at the scale (`sizing`, ignored: run by hand).

mod contract;
mod frames;
mod history;
mod looks;
mod sizing;
mod sqlite;

use super::*;
use drover_core::control::{
    ControlSettings, ControlState, Decision, Explanation, Move, MoveState, Observation, Plan,
    PlanKind, PlanState, StepOutput, TechniqueChoice, DECISION_FORMAT,
};
use drover_core::migration::Technique;

/// A fresh store of each kind for a test body; the SQLite one in a temporary state directory.
macro_rules! for_each_store {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[test]
                fn $name() {
                    let store = $crate::store::MemoryStore::with_retention(super::retention());
                    super::$name(&store);
                }
            )*
        }
        mod sqlite_store {
            $(
                #[test]
                fn $name() {
                    let dir = tempfile::tempdir().expect("temporary directory");
                    let store =
                        $crate::store::SqliteStore::open_in(dir.path(), super::retention())
                            .expect("open the store");
                    super::$name(&store);
                }
            )*
        }
    };
}
pub(crate) use for_each_store;

pub(crate) fn spec(name: &str) -> HostSpec {
    HostSpec {
        name: name.into(),
        agent_url: format!("http://{name}:7300"),
        power: None,
    }
}

pub(crate) fn sample(load: f64) -> Sample {
    Sample {
        load,
        cpu_cores: load * 4.0,
        memory_bytes: 1 << 30,
        dirty_bps: Some(load * 1e6),
        rx_bps: 1000.0,
        tx_bps: 2000.0,
    }
}

/// A look at `hosts` (all reachable) each running one VM `<host>-vm`, every sample `load`.
pub(crate) fn look(at_s: f64, hosts: &[&str], load: f64) -> Look {
    Look {
        at_s,
        hosts: hosts
            .iter()
            .map(|h| HostLook {
                name: h.to_string(),
                reachable: true,
                sample: Some(sample(load)),
            })
            .collect(),
        vms: hosts
            .iter()
            .map(|h| VmLook {
                name: format!("{h}-vm"),
                host: h.to_string(),
                sample: Some(sample(load / 2.0)),
            })
            .collect(),
        journal: vec![],
    }
}

pub(crate) fn json(v: serde_json::Value) -> Json {
    Json::of(&v).expect("json")
}

pub(crate) fn entry(at_s: f64, subject: &str, id: &str, what: &str) -> JournalEntry {
    JournalEntry {
        at_s,
        subject: subject.into(),
        id: id.into(),
        what: what.into(),
    }
}

/// A relief plan about h1 in `state` (a plan state's name).
pub(crate) fn plan(id: &str, state: &str, created_s: f64) -> Plan {
    let state: PlanState =
        serde_json::from_value(serde_json::Value::String(state.into())).expect("a plan state");
    Plan {
        id: id.into(),
        kind: PlanKind::Relief,
        created_s,
        state,
        moves: vec![],
        wake: vec![],
        standby: vec![],
        explanation: Explanation {
            summary: format!("plan {id}"),
            host: Some("h1".into()),
            samples: vec![0.95, 0.97],
            threshold: Some(0.9),
            moves: vec![],
        },
        note: None,
    }
}

pub(crate) fn plan_row(id: &str, state: &str, created_s: f64) -> PlanRow {
    PlanRow::of(&plan(id, state, created_s))
}

/// A move of `vm` from h1 to h2 in `state`.
pub(crate) fn a_move(id: &str, plan: &str, vm: &str, state: MoveState) -> Move {
    Move {
        id: id.into(),
        plan: plan.into(),
        vm: vm.into(),
        from: "h1".into(),
        to: "h2".into(),
        technique: TechniqueChoice {
            technique: Technique::Postcopy,
            reason: "test".into(),
        },
        demand_cores: 1.0,
        memory_bytes: 1 << 30,
        state,
    }
}

/// A move in a state named `state` (`planned`, `requested`, `running`, `done`).
pub(crate) fn move_row(id: &str, plan: &str, vm: &str, state: &str) -> MoveRow {
    let state = match state {
        "planned" => MoveState::Planned,
        "requested" => MoveState::Requested { at_s: 1.0 },
        "running" => MoveState::Running { since_s: 1.0 },
        "done" => MoveState::Done { at_s: 1.0 },
        other => panic!("no test move in state {other}"),
    };
    MoveRow::of(&a_move(id, plan, vm, state))
}

/// A step at `at_s` whose memory says so in `next_id`.
pub(crate) fn step(at_s: f64) -> StepRecord {
    StepRecord {
        at_s,
        state: ControlState {
            next_id: at_s as u64,
            ..ControlState::default()
        },
        journal: vec![],
        plans: vec![],
        moves: vec![],
        decision: None,
    }
}

/// A decision at `now_s` that made `plans`.
pub(crate) fn decision(now_s: f64, plans: &[&str]) -> Decision {
    Decision {
        format: DECISION_FORMAT,
        now_s,
        observation: Observation::default(),
        state_before: ControlState::default(),
        settings: ControlSettings::default(),
        output: StepOutput {
            new_plans: plans.iter().map(|p| p.to_string()).collect(),
            next_look_s: now_s + 1.0,
            ..StepOutput::default()
        },
    }
}

/// Everything a store holds about the control loop, to compare before and after a refused
/// write.
pub(crate) fn control_snapshot(store: &dyn Store) -> String {
    let all = JournalQuery {
        limit: MAX_READ,
        ..JournalQuery::default()
    };
    let plans = store
        .plans(&PlanQuery {
            limit: MAX_READ,
            ..PlanQuery::default()
        })
        .expect("plans");
    let moves = store
        .moves(&MoveQuery {
            limit: MAX_READ,
            ..MoveQuery::default()
        })
        .expect("moves");
    let transitions: Vec<_> = moves
        .iter()
        .map(|m| store.transitions(&m.id).expect("transitions"))
        .collect();
    let decisions: Vec<_> = plans
        .iter()
        .map(|p| store.export_decision(&p.id).ok())
        .collect();
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        store.control_state().expect("state"),
        store.journal(&all).expect("journal"),
        plans,
        moves,
        transitions,
        decisions,
        store.hosts().expect("hosts"),
        store.vms().expect("vms"),
    )
}
