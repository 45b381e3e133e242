//! The store's tests: the contract every implementation passes (`contract`, run against the
//! fake and the SQLite file), history and compaction (`history`, same), what only the SQLite
//! file has (`sqlite`: schema versions, a failure inside a transaction, crashes), and a
//! measurement at the scale (`sizing`, ignored: run by hand).

mod contract;
mod history;
mod sizing;
mod sqlite;

use super::*;

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

pub(crate) fn plan_row(id: &str, state: &str, created_s: f64) -> PlanRow {
    PlanRow {
        id: id.into(),
        kind: "relief".into(),
        state: state.into(),
        host: Some("h1".into()),
        created_s,
        body: json(serde_json::json!({ "id": id, "state": state })),
    }
}

pub(crate) fn move_row(id: &str, plan: &str, vm: &str, state: &str) -> MoveRow {
    MoveRow {
        id: id.into(),
        plan_id: plan.into(),
        vm: vm.into(),
        from_host: "h1".into(),
        to_host: "h2".into(),
        state: state.into(),
        detail: None,
        body: json(serde_json::json!({ "id": id, "state": { "state": state } })),
    }
}

/// A step at `at_s` whose memory is `{"step": at_s}`.
pub(crate) fn step(at_s: f64) -> StepRecord {
    StepRecord {
        at_s,
        state: json(serde_json::json!({ "step": at_s })),
        journal: vec![],
        plans: vec![],
        moves: vec![],
        decision: None,
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
