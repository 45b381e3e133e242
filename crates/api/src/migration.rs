//! Migrations on the wire: the request a client sends, the record the source agent keeps and
//! returns, and the agent-to-agent messages that prepare the destination.

use crate::uri::{AgentUrl, MigrationUri};
use crate::vm::VmConfig;
use drover_core::migration::{
    MigrationPlan, MigrationResult, PlanKnobs, Progress, StorageMode, Technique,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_true() -> bool {
    true
}

/// What a client asks for when migrating (`POST /v1/vms/{name}/migrations`): the destination,
/// the technique, and the operator's settings flattened in (core's `PlanKnobs`, same names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MigrationRequest {
    /// The migration's id; the agent makes one when it is absent. A caller that must never
    /// start a migration twice (the manager, after a crash) chooses it: a second request with
    /// the same id is refused (409) and the first one's record is at `/v1/migrations/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::names::MIGRATION_ID))]
    pub id: Option<String>,
    /// Destination agent base URL (`http://host:port`).
    pub to: AgentUrl,
    pub technique: Technique,
    /// Keep measuring the workload for the record's before/during/after windows (~13 s).
    #[serde(default = "default_true")]
    pub measure: bool,
    #[serde(flatten)]
    pub knobs: PlanKnobs,
}

/// Where a migration is in its life (the agent's `migrate` module has the state machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MigrationState {
    /// Planning and preparing the destination.
    Preparing,
    /// QEMU is migrating.
    Running,
    /// Migration over; sampling the workload for the record.
    Measuring,
    /// The VM runs on the destination.
    Completed,
    /// It broke; the record says where the VM is (`vm_on_destination`).
    Failed,
    /// Stopped on purpose; the VM still runs on the source.
    Cancelled,
    /// Post-copy left paused part-way (stalled, out of time, or not recovered): the guest is on
    /// the destination, the rest of its memory on the source; both QEMUs are kept.
    Paused,
    /// The agent restarted mid-migration and could not establish the outcome.
    Interrupted,
    /// A split post-copy given up by the operator (`POST /v1/migrations/{id}/abandon`) after
    /// the destination's QEMU died: the guest is lost (part of its memory existed only
    /// there); the source's QEMU was stopped and its disk file kept; `error` says so.
    Abandoned,
}

impl MigrationState {
    /// No further transition will happen.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            MigrationState::Preparing | MigrationState::Running | MigrationState::Measuring
        )
    }
}

/// A migration as the source agent keeps it (one file each) and returns it from
/// `GET /v1/migrations/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MigrationRecord {
    pub id: String,
    pub vm: String,
    pub request: MigrationRequest,
    pub state: MigrationState,
    /// The plan as run (technique chosen, and why).
    #[serde(default)]
    pub plan: Option<MigrationPlan>,
    /// The URI QEMU migrates over (made by the destination).
    #[serde(default)]
    pub uri: Option<MigrationUri>,
    /// Where the destination listens again to recover a paused post-copy (made by it, checked
    /// like `uri`): kept so that a restarted agent can still resume one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_uri: Option<MigrationUri>,
    /// Start, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// End, ms since the Unix epoch.
    #[serde(default)]
    pub ended_unix_ms: Option<u64>,
    /// Where the VM is now (true once it runs on the destination).
    #[serde(default)]
    pub vm_on_destination: bool,
    /// Live progress while running (the source QEMU's `query-migrate`).
    #[serde(default)]
    pub progress: Option<Progress>,
    /// The result record, once the migration has ended.
    #[serde(default)]
    pub result: Option<MigrationResult>,
    #[serde(default)]
    pub error: Option<String>,
    /// What happened around the migration (restarts, clean-up problems).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl MigrationRecord {
    /// The record of migration `id` of VM `vm` as `request` asks, just accepted at
    /// `started_unix_ms` (ms since the Unix epoch): preparing, nothing known yet.
    pub fn preparing(
        id: String,
        vm: String,
        request: MigrationRequest,
        started_unix_ms: u64,
    ) -> Self {
        MigrationRecord {
            id,
            vm,
            request,
            state: MigrationState::Preparing,
            plan: None,
            uri: None,
            recover_uri: None,
            started_unix_ms,
            ended_unix_ms: None,
            vm_on_destination: false,
            progress: None,
            result: None,
            error: None,
            notes: vec![],
        }
    }
}

/// `POST /v1/incoming` (agent to agent): the source asks for a destination QEMU. The
/// destination chooses where it listens: the address this request reached it on.
/// `disk_virtual_bytes` is required exactly when `config` has a disk (`disk`,
/// `disk_size_bytes` or `disk_base`), and `source_nbd` exactly with `storage: postcopy`, as
/// the schema's if/then/else state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend(
    "if" = {"properties": {"config": {"anyOf": [
        {"required": ["disk"], "properties": {"disk": {"not": {"type": "null"}}}},
        {"required": ["disk_size_bytes"], "properties": {"disk_size_bytes": {"not": {"type": "null"}}}},
        {"required": ["disk_base"], "properties": {"disk_base": {"not": {"type": "null"}}}}
    ]}}},
    "then" = {
        "required": ["disk_virtual_bytes"],
        "properties": {"disk_virtual_bytes": {"not": {"type": "null"}}}
    },
    "else" = {"not": {"required": ["disk_virtual_bytes"]}},
    "allOf" = [{
        "if": {"required": ["storage"], "properties": {"storage": {"const": "postcopy"}}},
        "then": {
            "required": ["disk_virtual_bytes", "source_nbd"],
            "properties": {"source_nbd": {"not": {"type": "null"}}}
        },
        "else": {"not": {"required": ["source_nbd"]}}
    }]
))]
pub struct IncomingRequest {
    pub config: VmConfig,
    #[schemars(regex(pattern = crate::names::MIGRATION_ID))]
    pub migration_id: String,
    /// The virtual size of the source's disk, bytes: the destination creates an empty qcow2
    /// target of exactly this size for the storage pre-copy. Required when `config` has a
    /// disk, refused without one; the guest's disk size rule (`drover_guest::fit`, 1 MiB to
    /// 16 TiB) and a multiple of 512.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "drover_core::wire::whole_opt"
    )]
    #[schemars(
        range(min = 1_048_576u64, max = 17_592_186_044_416u64),
        extend("multipleOf" = 512)
    )]
    pub disk_virtual_bytes: Option<u64>,
    /// How the disk moves: `precopy` (the default: the destination serves an NBD target the
    /// source mirrors into) or `postcopy` (the destination runs on an empty overlay of
    /// `disk_virtual_bytes` backed by `source_nbd`, and streams the disk after the
    /// switchover). `postcopy` needs a disk.
    #[serde(default, skip_serializing_if = "is_precopy")]
    #[schemars(extend("enum" = ["precopy", "postcopy"]))]
    pub storage: StorageMode,
    /// Storage post-copy: where the source's QEMU serves its disk's read-only NBD export
    /// (`IP:PORT`, a port from 1 to 65535). Required with `storage: postcopy`, refused
    /// otherwise; the destination accepts only the address its request came from (the source
    /// agent's own). The export's name is never sent: it is Drover's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::names::SOCKET_ADDRESS))]
    pub source_nbd: Option<std::net::SocketAddr>,
}

fn is_precopy(mode: &StorageMode) -> bool {
    *mode == StorageMode::Precopy
}

/// Reply to `POST /v1/incoming`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IncomingReply {
    /// Where the destination QEMU will listen for the migration.
    pub uri: MigrationUri,
    /// Where it listens again to recover a paused post-copy (a fresh port: the first may still
    /// be held by the broken connection).
    pub recover_uri: MigrationUri,
    /// Where the destination's QEMU will serve its disk's NBD export for a storage pre-copy
    /// (`IP:PORT`: the URIs' address, a port of its own); absent for a VM without a disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbd: Option<std::net::SocketAddr>,
}
