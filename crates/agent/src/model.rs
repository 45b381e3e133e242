//! The agent's data: what the API accepts and returns, and what the store persists.
//!
//! These types are the wire format shared by the server, the typed client and the CLI, so
//! changes here are API changes (keep `openapi.rs` in step).

use drover_core::migration::{MigrationPlan, MigrationResult, PlanKnobs, Progress, Technique};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A tap NIC attached to a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicConfig {
    /// Host tap interface (created by whoever set up the host, e.g. the lab).
    pub tap: String,
    pub mac: String,
}

/// What a VM is: everything needed to start it (or its migration destination) again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    pub name: String,
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// Guest workload spec, e.g. `memtouch:wss=32M`.
    pub workload: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic: Option<NicConfig>,
}

/// Why a VM is on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum VmRole {
    /// A normal VM.
    Running,
    /// A QEMU waiting for (or receiving) migration `migration_id`; becomes `Running` on commit.
    Incoming { migration_id: String },
}

/// One VM as persisted: one JSON file per VM in `<state>/vms/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    pub config: VmConfig,
    pub role: VmRole,
    /// The QEMU daemon's pid.
    pub pid: u32,
    /// Run directory: QMP and metrics sockets, console log, pid file.
    pub run_dir: PathBuf,
    pub created_unix_ms: u64,
}

/// A VM's state as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmStatus {
    /// QEMU runs and answers QMP.
    Running,
    /// An incoming migration destination.
    Incoming,
    /// Its QEMU is gone (found dead at re-attach or since); never restarted behind your back.
    Lost,
}

/// The guest workload's latest report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct WorkloadView {
    pub ops: u64,
    pub ops_per_s: f64,
    pub integrity_errors: u64,
    /// Milliseconds since the last report (None: no report yet).
    pub last_report_age_ms: Option<u64>,
}

/// A VM as `GET /v1/vms[/{name}]` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmView {
    pub name: String,
    pub status: VmStatus,
    pub vcpus: u32,
    pub memory_bytes: u64,
    pub workload: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic: Option<NicConfig>,
    pub pid: u32,
    /// QEMU's run state (`running`, `inmigrate`, `paused`, ...) when it answered.
    #[serde(default)]
    pub qemu_status: Option<String>,
    /// The migration this VM is the source or destination of, if one is under way.
    #[serde(default)]
    pub migration: Option<String>,
    #[serde(default)]
    pub workload_report: WorkloadView,
    /// Why the VM is lost.
    #[serde(default)]
    pub error: Option<String>,
}

/// What a client asks for when migrating (`POST /v1/vms/{name}/migrations`): the destination,
/// the technique and the operator's settings, flattened (the same field names as `PlanKnobs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationRequest {
    /// Destination agent base URL.
    pub to: String,
    pub technique: Technique,
    /// Keep measuring the workload for the record's before/during/after windows (~13 s).
    #[serde(default = "default_true")]
    pub measure: bool,
    #[serde(flatten)]
    pub knobs: PlanKnobs,
}

fn default_true() -> bool {
    true
}

/// Where a migration is in its life (see `migrate` for the state machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationState {
    /// Planning and preparing the destination.
    Preparing,
    /// QEMU is migrating.
    Running,
    /// Migration over; sampling the workload for the record.
    Measuring,
    Completed,
    Failed,
    Cancelled,
    /// The agent restarted mid-migration and could not establish the outcome.
    Interrupted,
}

impl MigrationState {
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            MigrationState::Preparing | MigrationState::Running | MigrationState::Measuring
        )
    }
}

/// A migration as persisted (one JSON file per migration in `<state>/migrations/`) and
/// returned by `GET /v1/migrations/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationRecord {
    pub id: String,
    pub vm: String,
    pub request: MigrationRequest,
    pub state: MigrationState,
    #[serde(default)]
    pub plan: Option<MigrationPlan>,
    /// The URI QEMU migrates over.
    #[serde(default)]
    pub uri: Option<String>,
    pub started_unix_ms: u64,
    #[serde(default)]
    pub ended_unix_ms: Option<u64>,
    /// Where the VM is now (true once it runs on the destination).
    #[serde(default)]
    pub vm_on_destination: bool,
    /// Live progress while running (source QEMU's `query-migrate`).
    #[serde(default)]
    pub progress: Option<Progress>,
    /// The result record, once the migration has ended.
    #[serde(default)]
    pub result: Option<MigrationResult>,
    #[serde(default)]
    pub error: Option<String>,
    /// Notes on what happened around the migration (restarts, clean-up problems).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `POST /v1/incoming`: the source agent asks for a destination QEMU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingRequest {
    pub config: VmConfig,
    pub migration_id: String,
    /// Address the destination QEMU should listen on (the host part of the destination agent's
    /// URL as the source sees it).
    pub listen_host: String,
}

/// Reply to `POST /v1/incoming`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingReply {
    /// The migration URI, e.g. `tcp:198.18.0.2:49152`.
    pub uri: String,
    /// Where the destination listens again to recover a paused post-copy.
    pub recover_uri: String,
}

/// `POST /v1/vms/{name}/qmp`: one forwarded QMP command (allowlisted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QmpCommand {
    pub execute: String,
    #[serde(default)]
    pub arguments: Option<serde_json::Value>,
}

/// A workload report with its wall-clock arrival time (agents compare series across hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WallSample {
    pub unix_ms: u64,
    pub ops: u64,
    pub integrity_errors: u64,
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
