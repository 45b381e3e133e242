//! The contract of Drover's host agent API: the request and response types (each with both
//! `Serialize` and `Deserialize`), the rules a request must keep ([`request`]), the OpenAPI
//! document generated from those same types ([`openapi`]), and the typed client ([`client`]).
//!
//! The agent, the CLI and the manager all use this crate; it links neither the agent server,
//! QEMU nor the guest build (only the guest's workload grammar, to check a workload spec), so
//! the manager can talk to agents without carrying them.
//!
//! Module map:
//! - [`vm`]: VM configuration (request body and stored form), views, samples, health;
//! - [`migration`]: migration request (with core's `PlanKnobs` flattened in), record, states,
//!   and the agent-to-agent incoming messages;
//! - [`uri`]: agent URLs and Drover's own migration URIs (only `tcp:`);
//! - [`qmp`]: the closed set of QMP commands one agent may run on another's incoming VM;
//! - [`metrics`]: `GET /v1/metrics` (use and demand);
//! - [`power`]: the host's power state (standby, wake);
//! - [`workload`]: changing a running VM's workload;
//! - [`token`]: the bearer token: reading its file (agent, manager, CLI), checking a presented one;
//! - [`names`]: the shapes of names, paths and specs, one regular expression each, shared by
//!   the parsers and the schema;
//! - [`request`]: pure parsers, over [`body`] (a body read so that every refusal names its
//!   field and its status); [`openapi`]: the document and the route table; [`client`].

pub mod body;
pub mod client;
pub mod metrics;
pub mod migration;
pub mod names;
pub mod openapi;
pub mod power;
pub mod qmp;
pub mod request;
pub mod token;
pub mod transport;
pub mod uri;
pub mod vm;
pub mod wan;
pub mod workload;

pub use client::{AgentClient, ClientError};
pub use migration::{
    IncomingReply, IncomingRequest, MigrationRecord, MigrationRequest, MigrationState,
};
pub use power::{Power, PowerState};
pub use uri::{AgentUrl, MigrationUri};
pub use vm::{
    Health, NicConfig, VmConfig, VmStatus, VmView, WallSample, WorkloadPartView, WorkloadView,
};
pub use workload::WorkloadChange;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every error's body: `{"error": "<message>"}`, plus QEMU's class and description when QEMU
/// refused a forwarded command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qmp_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qmp_desc: Option<String>,
}

/// Request bodies are small JSON objects; anything bigger is a mistake or an attack. The
/// agent's and the manager's API both refuse a bigger body with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Longest request URI accepted, bytes (names are at most 128 characters; this leaves ample
/// room). The agent's and the manager's API both refuse a longer one with 414.
pub const URI_LIMIT: usize = 4 * 1024;

/// Why a request URI of `len` bytes is refused (414), or None within [`URI_LIMIT`]: the
/// agent's and the manager's one rule and wording.
pub fn uri_refusal(len: usize) -> Option<String> {
    (len > URI_LIMIT).then(|| format!("request URI of {len} bytes; at most {URI_LIMIT}"))
}

/// Why a body over [`BODY_LIMIT`] is refused (413).
pub fn body_refusal() -> String {
    format!("request body over {BODY_LIMIT} bytes")
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
