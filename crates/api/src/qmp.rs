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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn the_drivers_commands_round_trip() {
        let caps = json!({"capabilities": [{"capability": "postcopy-ram", "state": true}]});
        let c = ForwardedQmp::from_parts("migrate-set-capabilities", Some(&caps)).expect("ok");
        assert_eq!(c.arguments(), Some(caps));
        let inc = json!({"uri": "tcp:198.18.0.3:4000"});
        let c = ForwardedQmp::from_parts("migrate-incoming", Some(&inc)).expect("ok");
        assert_eq!(c.arguments(), Some(inc));
        assert_eq!(
            ForwardedQmp::from_parts("query-status", None),
            Ok(ForwardedQmp::QueryStatus)
        );
        let pause = ForwardedQmp::from_parts("migrate-pause", None).expect("pause");
        assert_eq!((pause.name(), pause.arguments()), ("migrate-pause", None));
        assert!(ForwardedQmp::from_parts("migrate-pause", Some(&json!({"x": 1}))).is_err());
        let wire = serde_json::to_value(&c).expect("json");
        assert_eq!(wire["execute"], "migrate-incoming");
        let back: ForwardedQmp = serde_json::from_value(wire).expect("reads back");
        assert_eq!(back, c);
    }

    /// What `drover_qemu::storage` sends a destination, as `qmp::block` spells it.
    #[test]
    fn the_storage_commands_round_trip() {
        let start =
            json!({"addr": {"type": "inet", "data": {"host": "198.18.0.3", "port": "10809"}}});
        let c = ForwardedQmp::from_parts("nbd-server-start", Some(&start)).expect("start");
        assert_eq!(c.arguments(), Some(start));
        let ForwardedQmp::NbdServerStart(a) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(
            a.addr.socket_addr(),
            Some("198.18.0.3:10809".parse().expect("addr"))
        );
        let export = json!({"type": "nbd", "id": "drover-disk0-export", "node-name": "drover-disk0",
                            "name": "drover-disk0", "writable": true});
        let c = ForwardedQmp::from_parts("block-export-add", Some(&export)).expect("export");
        assert_eq!(c.arguments(), Some(export));
        let stop = ForwardedQmp::from_parts("nbd-server-stop", None).expect("stop");
        assert_eq!((stop.name(), stop.arguments()), ("nbd-server-stop", None));
    }

    /// What `drover_qemu::storage_postcopy` sends a destination, as `qmp::block` spells it.
    #[test]
    fn the_stream_commands_round_trip() {
        let stream = json!({"job-id": "drover-disk0-stream", "device": "drover-disk0",
                            "on-error": "stop", "auto-dismiss": false});
        let mut capped = stream.clone();
        capped["speed"] = json!(16_777_216);
        for (cmd, args) in [
            ("block-stream", Some(stream.clone())),
            ("block-stream", Some(capped)),
            (
                "block-job-resume",
                Some(json!({"device": "drover-disk0-stream"})),
            ),
            ("job-dismiss", Some(json!({"id": "drover-disk0-stream"}))),
            ("query-block-jobs", None),
            ("cont", None),
        ] {
            let c = ForwardedQmp::from_parts(cmd, args.as_ref()).expect(cmd);
            assert_eq!((c.name(), c.arguments()), (cmd, args));
        }
        // A whole number written with a fraction of zero, as JSON allows (schemathesis did).
        let mut written = stream.clone();
        written["speed"] = json!(244.0);
        let c = ForwardedQmp::from_parts("block-stream", Some(&written)).expect("244.0");
        assert_eq!(c.arguments().expect("args")["speed"], json!(244));
        let jobs = json!([{"device": "drover-disk0-stream", "type": "stream", "offset": 4096,
                           "len": 8192, "ready": false, "status": "running", "busy": true,
                           "paused": false, "speed": 0, "io-status": "ok",
                           "auto-finalize": true, "auto-dismiss": false}]);
        let reply = ForwardedQmp::QueryBlockJobs.reply(jobs).expect("jobs");
        let QmpReturn::BlockJobs(list) = &reply else {
            panic!("{reply:?}")
        };
        assert_eq!((list[0].offset, list[0].len), (4096, 8192));
        // What crosses back reads as a job list again on the source's side.
        let wire = serde_json::to_value(QmpReply { ret: reply.clone() }).expect("json");
        let back: QmpReply = serde_json::from_value(wire).expect("reads back");
        assert_eq!(back.ret, reply);
    }

    /// A storage hybrid reads the destination overlay's file size: the flat node list, its
    /// reply reduced to names and sizes, read back as such on the source's side.
    #[test]
    fn the_node_list_is_reduced_to_names_and_sizes() {
        let flat = json!({"flat": true});
        let c = ForwardedQmp::from_parts("query-named-block-nodes", Some(&flat)).expect("nodes");
        assert_eq!(c.arguments(), Some(flat));
        for bad in [
            None,
            Some(json!({"flat": false})),
            Some(json!({"flat": true, "x": 1})),
        ] {
            assert!(
                ForwardedQmp::from_parts("query-named-block-nodes", bad.as_ref()).is_err(),
                "{bad:?}"
            );
        }
        let nodes = json!([{"node-name": "drover-disk0", "drv": "qcow2", "file": "/x",
                            "image": {"actual-size": 1_048_576, "virtual-size": 67_108_864,
                                      "filename": "/x"}},
                           {"node-name": "drover-disk0-file", "drv": "file"}]);
        let reply = c.reply(nodes).expect("nodes");
        let QmpReturn::BlockNodes(list) = &reply else {
            panic!("{reply:?}")
        };
        assert_eq!(list[0].node_name, "drover-disk0");
        assert_eq!(list[0].image.and_then(|i| i.actual_size), Some(1_048_576));
        assert_eq!(list[1].image, None);
        let wire = serde_json::to_value(QmpReply { ret: reply.clone() }).expect("json");
        assert!(
            wire.to_string().contains("\"actual-size\":1048576"),
            "{wire}"
        );
        assert!(!wire.to_string().contains("filename"), "{wire}");
        let back: QmpReply = serde_json::from_value(wire).expect("reads back");
        assert_eq!(back.ret, reply);
    }

    #[test]
    fn stream_attacks_are_refused() {
        let stream = |extra: (&str, Value)| {
            let mut e = json!({"job-id": "drover-disk0-stream", "device": "drover-disk0",
                               "on-error": "stop", "auto-dismiss": false});
            e[extra.0] = extra.1;
            e
        };
        for (cmd, args) in [
            ("block-stream", stream(("on-error", json!("ignore")))),
            ("block-stream", stream(("on-error", json!("report")))),
            ("block-stream", stream(("auto-dismiss", json!(true)))),
            ("block-stream", stream(("base", json!("drover-disk0-file")))),
            (
                "block-stream",
                stream(("backing-file", json!("/etc/passwd"))),
            ),
            ("block-stream", stream(("bottom", json!("x")))),
            ("block-stream", stream(("device", json!("json:{}")))),
            ("block-stream", stream(("speed", json!(-1)))),
            // Drover's rates are 1 to 100 GB/s: 0 and beyond are none of its own.
            ("block-stream", stream(("speed", json!(0)))),
            ("block-stream", stream(("speed", json!(100_000_000_001u64)))),
            (
                "block-stream",
                stream(("speed", json!(198_320_810_655_014_912_524_288.0))),
            ),
            ("block-job-resume", json!({"device": "x", "force": true})),
            ("block-job-resume", json!({"device": "../x"})),
            ("job-dismiss", json!({"id": ""})),
            ("cont", json!({"x": 1})),
            ("query-block-jobs", json!({"x": 1})),
            ("block-job-cancel", json!({"device": "drover-disk0-stream"})),
            (
                "block-job-complete",
                json!({"device": "drover-disk0-stream"}),
            ),
            ("stop", json!({})),
        ] {
            assert!(
                ForwardedQmp::from_parts(cmd, Some(&args)).is_err(),
                "{cmd} {args}"
            );
        }
    }

    #[test]
    fn storage_attacks_are_refused() {
        let inet = |host: Value, port: Value| json!({"addr": {"type": "inet", "data": {"host": host, "port": port}}});
        let export = |extra: (&str, Value)| {
            let mut e = json!({"type": "nbd", "id": "drover-disk0-export",
                               "node-name": "drover-disk0", "name": "drover-disk0", "writable": true});
            e[extra.0] = extra.1;
            e
        };
        for (cmd, args) in [
            // A unix socket, an fd, a vsock: only inet.
            (
                "nbd-server-start",
                json!({"addr": {"type": "unix", "data": {"path": "/tmp/x"}}}),
            ),
            (
                "nbd-server-start",
                json!({"addr": {"type": "fd", "data": {"str": "3"}}}),
            ),
            ("nbd-server-start", inet(json!("not-an-ip"), json!("10809"))),
            ("nbd-server-start", inet(json!("198.18.0.3"), json!("0"))),
            (
                "nbd-server-start",
                inet(json!("198.18.0.3"), json!("010809")),
            ),
            (
                "nbd-server-start",
                inet(json!("198.18.0.3"), json!("65536")),
            ),
            ("nbd-server-start", inet(json!("198.18.0.3"), json!(10809))),
            ("nbd-server-start", inet(json!("198.18.0.3"), json!("nbd"))),
            (
                "nbd-server-start",
                json!({"addr": {"type": "inet", "data": {"host": "198.18.0.3", "port": "10809", "ipv6": true}}}),
            ),
            (
                "nbd-server-start",
                json!({"addr": {"type": "inet", "data": {"host": "198.18.0.3", "port": "10809"}}, "tls-creds": "x"}),
            ),
            (
                "nbd-server-start",
                json!({"addr": {"type": "inet", "data": {"host": "198.18.0.3", "port": "10809"}}, "max-connections": 0}),
            ),
            ("block-export-add", export(("writable", json!(false)))),
            ("block-export-add", export(("type", json!("fuse")))),
            (
                "block-export-add",
                export(("type", json!("vhost-user-blk"))),
            ),
            ("block-export-add", export(("node-name", json!("json:{}")))),
            ("block-export-add", export(("name", json!("")))),
            ("block-export-add", export(("id", json!("A".repeat(65))))),
            ("block-export-add", export(("bitmaps", json!(["b"])))),
            ("block-export-add", export(("allow-inactive", json!(true)))),
            ("block-export-add", export(("iothread", json!("io0")))),
            ("block-export-add", export(("mountpoint", json!("/etc")))),
            ("nbd-server-stop", json!({"x": 1})),
            (
                "nbd-server-add",
                json!({"device": "drover-disk0", "writable": true}),
            ),
            ("block-export-del", json!({"id": "drover-disk0-export"})),
            (
                "blockdev-add",
                json!({"driver": "file", "filename": "/etc/shadow", "node-name": "x"}),
            ),
            (
                "blockdev-mirror",
                json!({"device": "drover-disk0", "target": "x", "sync": "full"}),
            ),
        ] {
            assert!(
                ForwardedQmp::from_parts(cmd, Some(&args)).is_err(),
                "{cmd} {args}"
            );
        }
    }

    #[test]
    fn the_forwardable_list_is_the_message() {
        assert_eq!(FORWARDABLE.join(", "), ALLOWED);
    }

    #[test]
    fn attacks_are_refused() {
        for (cmd, args) in [
            ("migrate-incoming", json!({"uri": "exec:touch /tmp/pwned"})),
            ("migrate-recover", json!({"uri": "exec:id"})),
            (
                "migrate-incoming",
                json!({"uri": "tcp:1.2.3.4:5", "exit-on-error": false}),
            ),
            (
                "migrate-incoming",
                json!({"channels": [{"channel-type": "main", "addr": {"transport": "exec", "args": ["sh"]}}]}),
            ),
            (
                "migrate-set-capabilities",
                json!({"capabilities": [{"capability": "x-colo", "state": true}]}),
            ),
            ("migrate-set-parameters", json!({"downtime-limit": 1})),
            ("human-monitor-command", json!({"command-line": "info"})),
            ("quit", json!({})),
            ("query-status", json!({"x": 1})),
        ] {
            assert!(
                ForwardedQmp::from_parts(cmd, Some(&args)).is_err(),
                "{cmd} {args}"
            );
        }
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "(exec:|tcp:|unix:|fd:)?[ -~]{0,24}".prop_map(Value::from),
            prop::sample::select(vec![
                "postcopy-ram",
                "events",
                "x-colo",
                "tcp:127.0.0.1:1",
                "exec:sh"
            ])
            .prop_map(Value::from),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "uri",
                        "capabilities",
                        "capability",
                        "state",
                        "channels",
                        "exit-on-error",
                        "resume",
                        "x"
                    ]),
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        /// Whatever arguments come in, what goes out to QEMU is only ever a tcp URI or a list
        /// of Drover's capabilities, under the command's own keys.
        #[test]
        fn only_allowed_arguments_ever_reach_qemu(
            cmd in prop::sample::select(vec![
                "migrate-set-capabilities", "migrate-incoming", "migrate-recover",
                "migrate-pause", "query-migrate", "query-status", "query-migrate-capabilities",
                "migrate", "quit", "migrate-set-parameters", "nbd-server-start",
                "block-export-add", "nbd-server-stop", "block-stream", "block-job-resume",
                "job-dismiss", "query-block-jobs", "cont",
            ]),
            args in json_value(),
        ) {
            if let Ok(c) = ForwardedQmp::from_parts(cmd, Some(&args)) {
                prop_assert_eq!(c.name(), cmd);
                match c.arguments() {
                    None => prop_assert!(
                        cmd.starts_with("query-")
                            || ["migrate-pause", "nbd-server-stop", "cont"].contains(&cmd)
                    ),
                    Some(Value::Object(m)) => {
                        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
                        match cmd {
                            "migrate-set-capabilities" => prop_assert_eq!(keys, vec!["capabilities"]),
                            "nbd-server-start" => prop_assert_eq!(keys, vec!["addr"]),
                            "block-stream" => {
                                prop_assert_eq!(&m["on-error"], &Value::from("stop"));
                                prop_assert_eq!(&m["auto-dismiss"], &Value::Bool(false));
                            }
                            "block-job-resume" => prop_assert_eq!(keys, vec!["device"]),
                            "job-dismiss" => prop_assert_eq!(keys, vec!["id"]),
                            "block-export-add" => {
                                prop_assert_eq!(keys, vec!["id", "name", "node-name", "type", "writable"]);
                                prop_assert_eq!(&m["writable"], &Value::Bool(true));
                            }
                            _ => {
                                prop_assert_eq!(keys, vec!["uri"]);
                                let uri = m["uri"].as_str().unwrap_or_default();
                                prop_assert!(uri.starts_with("tcp:"), "{}", uri);
                                prop_assert!(uri.parse::<MigrationUri>().is_ok());
                            }
                        }
                    }
                    Some(other) => prop_assert!(false, "arguments {other} are not an object"),
                }
            }
        }
    }
}
