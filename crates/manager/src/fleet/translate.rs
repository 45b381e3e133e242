//! The one place where the agents' wire units become core's and back: drover-api's
//! `Metrics`, `VmView`, `MigrationRecord` and errors to core's `HostObs`, `MigrationObs` and
//! `Outcome`; core's `Migrate` to the agent's `MigrationRequest`. Pure functions: the agent
//! fleet does the calls, these say what the answers mean.
//!
//! Units: both sides count CPU in cores, memory in bytes and rates in bytes/s, so nothing is
//! scaled; what changes is shape (VMs listed by the agent joined with their metrics by name)
//! and meaning (a VM's demand is at least its use: an agent from before CPU demand reports
//! none; a migration's `preparing`, `running` and `measuring` are all core's `Running`).

use super::{Finished, MigrateOrder};
use crate::store::Json;
use drover_api::metrics::{Metrics, VmMetrics};
use drover_api::migration::{MigrationRecord, MigrationRequest, MigrationState};
use drover_api::vm::{VmStatus, VmView};
use drover_api::{AgentUrl, ClientError};
use drover_core::control::{
    HostObs, MigrationObs, MigrationPhase, Outcome, PowerState, VmObs, VmPresence,
};
use std::collections::BTreeMap;

/// The agent's power state as core's.
pub fn power(p: drover_api::PowerState) -> PowerState {
    match p {
        drover_api::PowerState::Active => PowerState::Active,
        drover_api::PowerState::Standby => PowerState::Standby,
        drover_api::PowerState::Waking => PowerState::Waking,
    }
}

/// The agent's VM status as core's presence. A `Moved` source (its post-copy started: the
/// guest runs on the destination, this QEMU only holds memory the destination still pulls)
/// is, to core, what an incoming copy is: memory held here, no CPU demand here, not the VM's
/// location. Core then locates the VM nowhere until the migration ends, which is right: no
/// decision may move it meanwhile.
fn presence(s: VmStatus) -> VmPresence {
    match s {
        VmStatus::Running => VmPresence::Running,
        VmStatus::Incoming | VmStatus::Moved => VmPresence::Incoming,
        VmStatus::Lost => VmPresence::Lost,
    }
}

/// What a VM wants, cores: its demand, and never less than what it used.
fn demand(m: &VmMetrics) -> f64 {
    m.cpu_demand_cores.max(m.cpu_cores)
}

fn vm_obs(view: Option<&VmView>, m: Option<&VmMetrics>, name: &str) -> VmObs {
    VmObs {
        name: name.to_string(),
        presence: view.map_or(VmPresence::Running, |v| presence(v.status)),
        vcpus: view.map(|v| v.vcpus).or(m.map(|m| m.vcpus)).unwrap_or(1),
        memory_bytes: view
            .map(|v| v.memory_bytes)
            .or(m.map(|m| m.memory_bytes))
            .unwrap_or(0),
        cpu_demand_cores: m.map_or(0.0, demand),
        dirty_rate_bps: m.and_then(|m| m.dirty_rate_bps),
        // No agent measures a VM's writable working set yet: core then assumes all of its
        // memory is (the cost model's safe side).
        wss_bytes: None,
        net_rx_bps: m.map_or(0.0, |m| m.net_rx_bps),
        net_tx_bps: m.map_or(0.0, |m| m.net_tx_bps),
        migration: view.and_then(|v| v.migration.clone()),
    }
}

/// Host `name` as its agent's metrics and VM list describe it. VMs are those the agent lists
/// (its registry: running, incoming, lost), joined with their metrics by name; a VM measured
/// but not listed (created between the two calls) counts as running.
pub fn host_obs(name: &str, metrics: &Metrics, vms: &[VmView]) -> HostObs {
    let measured: BTreeMap<&str, &VmMetrics> =
        metrics.vms.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut listed: Vec<VmObs> = vms
        .iter()
        .map(|v| vm_obs(Some(v), measured.get(v.name.as_str()).copied(), &v.name))
        .collect();
    for m in &metrics.vms {
        if !vms.iter().any(|v| v.name == m.name) {
            listed.push(vm_obs(None, Some(m), &m.name));
        }
    }
    let vm_demand: f64 = listed
        .iter()
        .filter(|v| v.presence == VmPresence::Running)
        .map(|v| v.cpu_demand_cores)
        .sum();
    HostObs {
        name: name.to_string(),
        reachable: true,
        power: power(metrics.host.power),
        cpus: metrics.host.cpus,
        memory_bytes: metrics.host.memory_bytes,
        // The agent's host demand is its VMs' sum; an agent from before CPU demand reports
        // none, and then the VMs' figures (at least their use) stand for it.
        cpu_demand_cores: metrics.host.cpu_demand_cores.max(vm_demand),
        vms: listed,
    }
}

/// A migration as its source agent's record says it stands.
pub fn migration_obs(r: &MigrationRecord) -> MigrationObs {
    let phase = match r.state {
        MigrationState::Preparing | MigrationState::Running | MigrationState::Measuring => {
            MigrationPhase::Running
        }
        MigrationState::Completed => MigrationPhase::Completed,
        MigrationState::Failed => MigrationPhase::Failed,
        MigrationState::Cancelled => MigrationPhase::Cancelled,
        MigrationState::Paused => MigrationPhase::Paused,
        MigrationState::Interrupted => MigrationPhase::Interrupted,
        // Given up after the destination's QEMU died: the move failed, the guest is lost.
        MigrationState::Abandoned => MigrationPhase::Failed,
    };
    MigrationObs {
        id: r.id.clone(),
        phase,
        // An abandoned migration's guest is lost, on neither host.
        vm_on_destination: r.vm_on_destination && r.state != MigrationState::Abandoned,
        error: r.error.clone(),
        transferred_bytes: r
            .result
            .as_ref()
            .filter(|_| r.state == MigrationState::Completed)
            .map(|res| res.transferred_bytes),
    }
}

/// A migration its source agent has no record of.
pub fn unknown_migration(id: &str) -> MigrationObs {
    MigrationObs {
        id: id.to_string(),
        phase: MigrationPhase::Unknown,
        vm_on_destination: false,
        error: None,
        transferred_bytes: None,
    }
}

/// A final record, to store as its move's result.
pub fn finished(r: &MigrationRecord) -> Option<Finished> {
    if !r.state.is_final() {
        return None;
    }
    Some(Finished {
        move_id: r.id.clone(),
        record: Json::of(r).ok()?,
    })
}

/// The agent's request for core's `Migrate`: the move's id as the migration's, so that
/// asking twice starts nothing twice. `measure` is off: the workload windows around a
/// migration take about 13 s during which the move would hold its hosts' slots; the manager
/// needs where the VM is and what the migration cost, which the record has without them.
pub fn migrate_request(order: &MigrateOrder<'_>, to: AgentUrl) -> MigrationRequest {
    MigrationRequest {
        id: Some(order.move_id.to_string()),
        to,
        technique: order.technique,
        measure: false,
        knobs: order.knobs.clone(),
    }
}

/// What the agent's answer to a migration request means, before any second look.
#[derive(Debug, Clone, PartialEq)]
pub enum MigrateAnswer {
    /// It runs.
    Accepted,
    /// Refused (409), failed on its side (5xx) or answered unreadably: the migration may
    /// exist under this id (a request already made before a restart, or one it took before
    /// failing to answer): read its record by id to know.
    ReadRecord(String),
    /// Refused before anything started (the request broke a rule).
    Refused(String),
    /// Not reached: nothing is known; the move stays requested and is asked again.
    Unreachable(String),
}

/// Reads the agent's answer to `POST /v1/vms/{vm}/migrations`.
pub fn migrate_answer(result: &Result<MigrationRecord, ClientError>) -> MigrateAnswer {
    match result {
        Ok(_) => MigrateAnswer::Accepted,
        Err(e @ ClientError::Unreachable { .. }) => MigrateAnswer::Unreachable(e.to_string()),
        Err(e @ ClientError::Invalid(_)) => MigrateAnswer::Refused(e.to_string()),
        // It answered, unreadably or too long: the migration may exist.
        Err(e @ (ClientError::Decode { .. } | ClientError::TooLarge { .. })) => {
            MigrateAnswer::ReadRecord(e.to_string())
        }
        Err(e @ ClientError::Api { status, .. }) if *status == 409 || *status >= 500 => {
            MigrateAnswer::ReadRecord(e.to_string())
        }
        Err(e @ ClientError::Api { .. }) => MigrateAnswer::Refused(e.to_string()),
    }
}

/// The outcome of a migration request once the agent's record was looked up by the move's
/// id (`first`: why the request itself was not a plain acceptance).
pub fn after_lookup(
    move_id: &str,
    first: String,
    lookup: &Result<MigrationRecord, ClientError>,
) -> Outcome {
    let move_id = move_id.to_string();
    match lookup {
        // It has the migration: ours, from before (a duplicate id is refused, not restarted).
        Ok(_) => Outcome::MigrateAccepted { move_id },
        Err(ClientError::Api { status: 404, .. }) => Outcome::MigrateRefused {
            move_id,
            error: first,
        },
        Err(e) => Outcome::MigrateUnreachable {
            move_id,
            error: format!("{first}; then the record could not be read: {e}"),
        },
    }
}

/// The outcome of a migration request that needed no lookup.
pub fn migrate_outcome(move_id: &str, answer: MigrateAnswer) -> Option<Outcome> {
    let move_id = move_id.to_string();
    match answer {
        MigrateAnswer::Accepted => Some(Outcome::MigrateAccepted { move_id }),
        MigrateAnswer::Refused(error) => Some(Outcome::MigrateRefused { move_id, error }),
        MigrateAnswer::Unreachable(error) => Some(Outcome::MigrateUnreachable { move_id, error }),
        MigrateAnswer::ReadRecord(_) => None,
    }
}

/// A failed call's message, for the outcomes that carry one.
pub fn error_text<T>(result: &Result<T, ClientError>) -> Option<String> {
    result.as_ref().err().map(ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::metrics::{DemandSource, HostMetrics};
    use drover_api::vm::WorkloadView;
    use drover_core::migration::{PlanKnobs, Technique};

    fn view(name: &str, status: VmStatus, migration: Option<&str>) -> VmView {
        VmView {
            name: name.into(),
            status,
            vcpus: 2,
            memory_bytes: 512 << 20,
            workload: "idle".into(),
            workload_pending: false,
            disk: None,
            nic: None,
            pid: 1,
            qemu_status: Some("running".into()),
            migration: migration.map(str::to_string),
            workload_report: WorkloadView::default(),
            error: None,
        }
    }

    fn measured(name: &str, used: f64, wanted: f64) -> VmMetrics {
        VmMetrics {
            name: name.into(),
            cpu_cores: used,
            cpu_demand_cores: wanted,
            cpu_demand_source: DemandSource::Guest,
            vcpus: 2,
            memory_bytes: 512 << 20,
            dirty_rate_bps: Some(3e6),
            net_rx_bps: 10.0,
            net_tx_bps: 20.0,
            ..VmMetrics::default()
        }
    }

    fn metrics(vms: Vec<VmMetrics>, host_demand: f64) -> Metrics {
        Metrics {
            host: HostMetrics {
                cpus: 2.0,
                memory_bytes: 4 << 30,
                power: drover_api::PowerState::Waking,
                cpu_demand_cores: host_demand,
                ..HostMetrics::default()
            },
            vms,
        }
    }

    #[test]
    fn a_host_is_its_metrics_joined_with_its_vm_list() {
        let m = metrics(
            vec![measured("a", 0.5, 1.5), measured("late", 0.2, 0.0)],
            1.5,
        );
        let vms = [
            view("a", VmStatus::Running, Some("m-1")),
            view("in", VmStatus::Incoming, None),
        ];
        let h = host_obs("h1", &m, &vms);
        assert_eq!(
            (h.name.as_str(), h.cpus, h.memory_bytes),
            ("h1", 2.0, 4 << 30)
        );
        assert_eq!(h.power, PowerState::Waking);
        let names: Vec<_> = h
            .vms
            .iter()
            .map(|v| (v.name.as_str(), v.presence))
            .collect();
        assert_eq!(
            names,
            [
                ("a", VmPresence::Running),
                ("in", VmPresence::Incoming),
                ("late", VmPresence::Running)
            ]
        );
        let a = &h.vms[0];
        assert_eq!(
            (a.cpu_demand_cores, a.dirty_rate_bps, a.migration.as_deref()),
            (1.5, Some(3e6), Some("m-1"))
        );
        assert_eq!(
            (a.vcpus, a.memory_bytes, a.net_tx_bps),
            (2, 512 << 20, 20.0)
        );
        assert_eq!(
            h.vms[1].cpu_demand_cores, 0.0,
            "not measured: wants nothing"
        );
        assert_eq!(h.vms[2].cpu_demand_cores, 0.2, "demand is at least use");
        assert!(
            (h.cpu_demand_cores - 1.7).abs() < 1e-9,
            "the VMs' sum when larger"
        );
    }

    #[test]
    fn a_moved_source_holds_memory_but_is_not_where_the_vm_runs() {
        let m = metrics(vec![measured("a", 0.1, 0.1)], 0.0);
        let h = host_obs("h1", &m, &[view("a", VmStatus::Moved, Some("m-1"))]);
        assert_eq!(h.vms[0].presence, VmPresence::Incoming);
        assert_eq!(h.cpu_demand_cores, 0.0, "its guest runs on the destination");
        assert_eq!(
            h.memory_allocated(),
            512 << 20,
            "its memory is still held here"
        );
    }

    #[test]
    fn an_agent_without_demand_figures_counts_use() {
        let mut old = measured("a", 0.7, 0.0);
        old.cpu_demand_source = DemandSource::Use;
        let h = host_obs("h1", &metrics(vec![old], 0.0), &[]);
        assert_eq!((h.vms[0].cpu_demand_cores, h.cpu_demand_cores), (0.7, 0.7));
    }

    fn record(state: MigrationState) -> MigrationRecord {
        let to = AgentUrl::parse("http://198.18.0.12:7300").expect("url");
        let request = MigrationRequest {
            id: Some("m-1".into()),
            to,
            technique: Technique::Postcopy,
            measure: false,
            knobs: PlanKnobs::default(),
        };
        MigrationRecord {
            state,
            vm_on_destination: state == MigrationState::Paused,
            ..MigrationRecord::preparing("m-1".into(), "a".into(), request, 1)
        }
    }

    #[test]
    fn migration_states_map_to_core_phases() {
        use MigrationState as S;
        for (s, p) in [
            (S::Preparing, MigrationPhase::Running),
            (S::Running, MigrationPhase::Running),
            (S::Measuring, MigrationPhase::Running),
            (S::Completed, MigrationPhase::Completed),
            (S::Failed, MigrationPhase::Failed),
            (S::Cancelled, MigrationPhase::Cancelled),
            (S::Paused, MigrationPhase::Paused),
            (S::Interrupted, MigrationPhase::Interrupted),
        ] {
            let r = record(s);
            assert_eq!(migration_obs(&r).phase, p, "{s:?}");
            assert_eq!(finished(&r).is_some(), s.is_final(), "{s:?}");
        }
        assert!(migration_obs(&record(S::Paused)).vm_on_destination);
        assert_eq!(unknown_migration("m-2").phase, MigrationPhase::Unknown);
        let f = finished(&record(S::Completed)).expect("final");
        assert!(f.record.as_str().contains("\"completed\""));
    }

    fn api(status: u16) -> ClientError {
        ClientError::Api {
            peer: drover_api::transport::Peer::Agent,
            url: "http://h1/v1/vms/a/migrations".into(),
            status,
            message: "no".into(),
            qmp_class: None,
            qmp_desc: None,
        }
    }

    #[test]
    fn a_duplicate_id_is_accepted_once_its_record_is_found() {
        assert_eq!(
            migrate_answer(&Ok(record(MigrationState::Preparing))),
            MigrateAnswer::Accepted
        );
        for status in [409, 500, 503] {
            assert!(matches!(
                migrate_answer(&Err(api(status))),
                MigrateAnswer::ReadRecord(_)
            ));
        }
        assert!(matches!(
            migrate_answer(&Err(api(422))),
            MigrateAnswer::Refused(_)
        ));
        let gone = ClientError::Unreachable {
            peer: drover_api::transport::Peer::Agent,
            url: "x".into(),
            message: "refused".into(),
        };
        assert!(matches!(
            migrate_answer(&Err(gone.clone())),
            MigrateAnswer::Unreachable(_)
        ));
        let found = after_lookup("m-1", "409".into(), &Ok(record(MigrationState::Running)));
        assert_eq!(
            found,
            Outcome::MigrateAccepted {
                move_id: "m-1".into()
            }
        );
        let none = after_lookup("m-1", "409: busy".into(), &Err(api(404)));
        assert!(matches!(none, Outcome::MigrateRefused { ref error, .. } if error == "409: busy"));
        let unknown = after_lookup("m-1", "409".into(), &Err(gone));
        assert!(matches!(unknown, Outcome::MigrateUnreachable { .. }));
    }

    #[test]
    fn the_request_carries_the_move_id() {
        let knobs = PlanKnobs::default();
        let order = MigrateOrder {
            move_id: "m-ab12cd-7",
            vm: "a",
            from: "h1",
            to: "h2",
            technique: Technique::Hybrid,
            knobs: &knobs,
        };
        let to = AgentUrl::parse("http://198.18.0.12:7300").expect("url");
        let req = migrate_request(&order, to.clone());
        assert_eq!(req.id.as_deref(), Some("m-ab12cd-7"));
        assert_eq!(
            (req.to, req.technique, req.measure),
            (to, Technique::Hybrid, false)
        );
    }
}
