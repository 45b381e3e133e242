//! The QMP commands a migration source may run on its destination's QEMU, through
//! `POST /v1/vms/{name}/qmp`, as a closed, typed set.
//!
//! The set is exactly what the migration driver and the resumption of a paused post-copy send
//! to a destination: set capabilities, start listening (`migrate-incoming`), pause an incoming
//! post-copy still waiting on a dead connection (`migrate-pause`), listen again for recovery
//! (`migrate-recover`), three queries, a storage pre-copy's destination half
//! (`nbd-server-start`, `block-export-add` of the disk, `nbd-server-stop`) and a storage
//! post-copy's (`block-stream` of the disk with `on-error: stop`, `block-job-resume` and
//! `job-dismiss` of its stream, `query-block-jobs`, and `cont` of a guest a failed read
//! paused). Each command's arguments are a `deny_unknown_fields` type, so nothing QEMU would
//! also accept (`channels`, `exit-on-error`, an `exec:` URI) can be smuggled through; the
//! agent further checks that a URI or NBD address is the one it made for that VM, that an
//! export, a stream or a job is exactly Drover's for its disk, and that each storage mode's
//! commands reach only a destination of that mode. Replies are typed too: only
//! the fields the driver reads cross back.

use crate::body::Node;
use crate::uri::MigrationUri;
use drover_core::migration::Capability;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// One capability switched on or off (`migrate-set-capabilities`' list item).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilityState {
    pub capability: Capability,
    pub state: bool,
}

/// `migrate-set-capabilities` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCapabilities {
    #[schemars(length(max = MAX_CAPABILITIES))]
    pub capabilities: Vec<CapabilityState>,
}

/// `migrate-incoming` / `migrate-recover` arguments: a URI and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UriArgs {
    pub uri: MigrationUri,
}

/// The socket address type QEMU's `nbd-server-start` takes; only `inet` is forwardable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InetType {
    Inet,
}

/// An IP address and a port, as QEMU's `InetSocketAddress` spells them (the port a string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InetData {
    #[schemars(regex(pattern = crate::names::IP_ADDRESS))]
    pub host: std::net::IpAddr,
    /// A port number in decimal, 1 to 65535 (checked by the parser).
    #[schemars(regex(pattern = crate::names::PORT_TEXT))]
    pub port: String,
}

/// `SocketAddressLegacy` of type `inet`: `{"type": "inet", "data": {host, port}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LegacyInet {
    #[serde(rename = "type")]
    pub kind: InetType,
    pub data: InetData,
}

impl LegacyInet {
    /// The address, once the parser has checked the port.
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        let port: u16 = self.data.port.parse().ok().filter(|p| *p > 0)?;
        (port.to_string() == self.data.port)
            .then(|| std::net::SocketAddr::new(self.data.host, port))
    }
}

/// `nbd-server-start` arguments: where the destination's NBD server listens, nothing else (no
/// TLS settings, no connection limit: those are QEMU's defaults). The agent further checks
/// that the address is the one it made for that VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NbdServerStart {
    pub addr: LegacyInet,
}

/// The export type of `block-export-add`; only `nbd` is forwardable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportType {
    Nbd,
}

/// `block-export-add` arguments, exactly those of a storage pre-copy's export: the disk's
/// format node exported writable under its own name. The names are checked by the agent
/// against Drover's own (`drover_qemu::disk::DiskNodes`); here, that they are short names and
/// the export is writable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BlockExportAdd {
    #[serde(rename = "type")]
    pub kind: ExportType,
    #[schemars(regex(pattern = r"^[a-z0-9-]{1,64}$"))]
    pub id: String,
    #[schemars(regex(pattern = r"^[a-z0-9-]{1,64}$"))]
    pub node_name: String,
    #[schemars(regex(pattern = r"^[a-z0-9-]{1,64}$"))]
    pub name: String,
    /// Always true: the mirror writes through the export.
    #[schemars(extend("const" = true))]
    pub writable: bool,
}

/// `block-stream`'s `on-error`; only `stop` is forwardable (a read the source cannot serve
/// pauses the job, to be resumed, instead of failing it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamOnError {
    Stop,
}

/// `block-stream` arguments, exactly a storage post-copy's stream: the overlay's format node
/// pulled whole from its backing, paused on an error, kept listed once ended. The names are
/// checked by the agent against Drover's own (`drover_qemu::disk::DiskNodes`); here, that
/// they are short names and `auto-dismiss` is off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BlockStream {
    #[schemars(regex(pattern = r"^[a-z0-9-]{1,64}$"))]
    pub job_id: String,
    #[schemars(regex(pattern = r"^[a-z0-9-]{1,64}$"))]
    pub device: String,
    pub on_error: StreamOnError,
    /// Always false: the stream's end is read by polling `query-block-jobs`.
    #[schemars(extend("const" = false))]
    pub auto_dismiss: bool,
    /// The stream's rate cap, bytes/s, 1 to 100 GB/s (Drover's own range of rates, core's
    /// `UNCAPPED_BPS` at the top); absent: unlimited. A whole number, written as JSON allows
    /// (`244.0` too), like every whole number of the API.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "drover_core::wire::whole_opt"
    )]
    #[schemars(range(min = 1, max = 100_000_000_000u64))]
    pub speed: Option<u64>,
}

/// `block-job-resume` arguments: the job's id (QEMU calls it `device`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobDevice {
    #[schemars(regex(pattern = r"^[a-z0-9-]{1,64}$"))]
    pub device: String,
}

/// `job-dismiss` arguments: the job's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobId {
    #[schemars(regex(pattern = r"^[a-z0-9-]{1,64}$"))]
    pub id: String,
}

/// `query-named-block-nodes` arguments: always the flat list (each node once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlatArgs {
    /// Always true.
    #[schemars(extend("const" = true))]
    pub flat: bool,
}

/// A forwardable QMP command: `{"execute": NAME, "arguments": {...}}` (no `arguments` for the
/// queries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "execute",
    content = "arguments",
    rename_all = "kebab-case",
    deny_unknown_fields
)]
pub enum ForwardedQmp {
    MigrateSetCapabilities(SetCapabilities),
    MigrateIncoming(UriArgs),
    MigrateRecover(UriArgs),
    MigratePause,
    QueryMigrate,
    QueryStatus,
    QueryMigrateCapabilities,
    NbdServerStart(NbdServerStart),
    BlockExportAdd(BlockExportAdd),
    NbdServerStop,
    BlockStream(BlockStream),
    BlockJobResume(JobDevice),
    JobDismiss(JobId),
    QueryBlockJobs,
    Cont,
    QueryNamedBlockNodes(FlatArgs),
}

/// A command that may not be forwarded, or arguments it does not take.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QmpForwardError {
    #[error("QMP command '{0}' is not forwardable; allowed: {ALLOWED}")]
    NotAllowed(String),
    #[error("arguments of '{command}': {message}")]
    Arguments { command: String, message: String },
}

/// Most capabilities one `migrate-set-capabilities` may set (QEMU has fewer than that).
pub const MAX_CAPABILITIES: usize = 16;

/// The forwardable command names.
pub const FORWARDABLE: [&str; 16] = [
    "migrate-set-capabilities",
    "migrate-incoming",
    "migrate-recover",
    "migrate-pause",
    "query-migrate",
    "query-status",
    "query-migrate-capabilities",
    "nbd-server-start",
    "block-export-add",
    "nbd-server-stop",
    "block-stream",
    "block-job-resume",
    "job-dismiss",
    "query-block-jobs",
    "cont",
    "query-named-block-nodes",
];

/// The forwardable command names, for messages.
pub const ALLOWED: &str = "migrate-set-capabilities, migrate-incoming, migrate-recover, migrate-pause, query-migrate, query-status, query-migrate-capabilities, nbd-server-start, block-export-add, nbd-server-stop, block-stream, block-job-resume, job-dismiss, query-block-jobs, cont, query-named-block-nodes";

impl ForwardedQmp {
    /// QEMU's name for the command.
    pub fn name(&self) -> &'static str {
        match self {
            ForwardedQmp::MigrateSetCapabilities(_) => "migrate-set-capabilities",
            ForwardedQmp::MigrateIncoming(_) => "migrate-incoming",
            ForwardedQmp::MigrateRecover(_) => "migrate-recover",
            ForwardedQmp::MigratePause => "migrate-pause",
            ForwardedQmp::QueryMigrate => "query-migrate",
            ForwardedQmp::QueryStatus => "query-status",
            ForwardedQmp::QueryMigrateCapabilities => "query-migrate-capabilities",
            ForwardedQmp::NbdServerStart(_) => "nbd-server-start",
            ForwardedQmp::BlockExportAdd(_) => "block-export-add",
            ForwardedQmp::NbdServerStop => "nbd-server-stop",
            ForwardedQmp::BlockStream(_) => "block-stream",
            ForwardedQmp::BlockJobResume(_) => "block-job-resume",
            ForwardedQmp::JobDismiss(_) => "job-dismiss",
            ForwardedQmp::QueryBlockJobs => "query-block-jobs",
            ForwardedQmp::Cont => "cont",
            ForwardedQmp::QueryNamedBlockNodes(_) => "query-named-block-nodes",
        }
    }

    /// Reads a raw QMP command (as the migration driver issues it) into the typed set, by the
    /// rules a forwarded request is read by (`request::parse_qmp`).
    ///
    /// # Errors
    /// [`QmpForwardError`] for a command outside the set or arguments it does not take.
    pub fn from_parts(command: &str, arguments: Option<&Value>) -> Result<Self, QmpForwardError> {
        if !FORWARDABLE.contains(&command) {
            return Err(QmpForwardError::NotAllowed(
                command.chars().take(64).collect(),
            ));
        }
        let args = arguments.filter(|a| !a.is_null()).map(Node::from_value);
        let root = Node::Object(
            args.iter()
                .map(|a| ("arguments".to_string(), a.clone()))
                .collect(),
        );
        crate::request::qmp_command(command, args.as_ref(), &root).map_err(|e| {
            QmpForwardError::Arguments {
                command: command.to_string(),
                message: e.to_string(),
            }
        })
    }

    /// The arguments as QEMU takes them (None for the queries).
    pub fn arguments(&self) -> Option<Value> {
        let v = match self {
            ForwardedQmp::MigrateSetCapabilities(a) => serde_json::to_value(a),
            ForwardedQmp::MigrateIncoming(a) | ForwardedQmp::MigrateRecover(a) => {
                serde_json::to_value(a)
            }
            ForwardedQmp::NbdServerStart(a) => serde_json::to_value(a),
            ForwardedQmp::BlockExportAdd(a) => serde_json::to_value(a),
            ForwardedQmp::BlockStream(a) => serde_json::to_value(a),
            ForwardedQmp::BlockJobResume(a) => serde_json::to_value(a),
            ForwardedQmp::JobDismiss(a) => serde_json::to_value(a),
            ForwardedQmp::QueryNamedBlockNodes(a) => serde_json::to_value(a),
            _ => return None,
        };
        // These types always serialize (strings, bools and enums only).
        v.ok()
    }

    /// Keeps from QEMU's reply only what the driver reads, typed.
    ///
    /// # Errors
    /// A message when QEMU's reply does not have the expected shape.
    pub fn reply(&self, qemu: Value) -> Result<QmpReturn, String> {
        let typed = match self {
            ForwardedQmp::QueryStatus => serde_json::from_value(qemu).map(QmpReturn::Status),
            ForwardedQmp::QueryMigrate => serde_json::from_value(qemu).map(QmpReturn::Migrate),
            ForwardedQmp::QueryMigrateCapabilities => {
                serde_json::from_value(qemu).map(QmpReturn::Capabilities)
            }
            ForwardedQmp::QueryBlockJobs => serde_json::from_value(qemu).map(QmpReturn::BlockJobs),
            ForwardedQmp::QueryNamedBlockNodes(_) => {
                serde_json::from_value(qemu).map(QmpReturn::BlockNodes)
            }
            _ => Ok(QmpReturn::Empty(Empty {})),
        };
        typed.map_err(|e| format!("unexpected reply to {}: {e}", self.name()))
    }
}

/// `query-status`'s reply, reduced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatusReply {
    pub running: bool,
    /// QEMU's RunState name.
    pub status: String,
}

/// `query-migrate`'s RAM figures, reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct RamReply {
    #[serde(default)]
    pub transferred: u64,
    #[serde(default)]
    pub remaining: u64,
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub dirty_sync_count: u64,
    #[serde(default)]
    pub postcopy_requests: u64,
}

/// `query-migrate`'s reply, reduced to what the driver reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct MigrateReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<RamReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_percentage: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_desc: Option<String>,
}

/// One entry of `query-migrate-capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CapabilityStatus {
    /// QEMU's capability name (any, not only those Drover manages).
    pub capability: String,
    pub state: bool,
}

/// One entry of `query-block-jobs`, reduced to what a storage job's watch reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BlockJobReply {
    /// The job's id.
    pub device: String,
    /// Bytes done so far.
    #[serde(default)]
    pub offset: u64,
    /// Bytes to do in all.
    #[serde(default)]
    pub len: u64,
    #[serde(default)]
    pub ready: bool,
    /// QEMU's job status (`running`, `paused`, `concluded`, ...).
    pub status: String,
    /// Why the job failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One entry of `query-named-block-nodes`, reduced to its node name and image's file size
/// (a storage hybrid's destination: the overlay's growth is the data pulled after the
/// switchover).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct BlockNodeReply {
    pub node_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageReply>,
}

/// A node's image facts, reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ImageReply {
    /// Bytes the image file takes on its host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_size: Option<u64>,
}

/// An empty reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Empty {}

/// A forwarded command's reply, as `{"return": ...}` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum QmpReturn {
    Status(StatusReply),
    Capabilities(Vec<CapabilityStatus>),
    BlockJobs(Vec<BlockJobReply>),
    BlockNodes(Vec<BlockNodeReply>),
    Migrate(MigrateReply),
    Empty(Empty),
}

/// The body of a forwarded command's success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct QmpReply {
    #[serde(rename = "return")]
    pub ret: QmpReturn,
}

#[cfg(test)]
mod tests;
