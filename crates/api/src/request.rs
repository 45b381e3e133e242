//! Request parsing and validation: one pure function per request body or path parameter, so
//! every rule is unit-tested, a handler only ever sees validated values, and a client can check
//! a request before sending it.
//!
//! Syntax problems (not JSON, wrong types, unknown or missing fields) are
//! [`RequestError::Syntax`] (HTTP 400); well-formed values that break a rule (a working set that
//! does not fit, a bandwidth below the floor) are [`RequestError::Invalid`] (HTTP 422).

use crate::migration::{IncomingRequest, MigrationRequest};
use crate::names::{ShapeError, MIGRATION_ID_SHAPE, VM_NAME_SHAPE, WORKLOAD_SHAPE};
use crate::qmp::{ForwardedQmp, QmpForwardError};
use crate::uri::AgentUrl;
use crate::vm::{VmConfig, VmConfigError};
use crate::workload::WorkloadChange;
use drover_core::migration::{KnobError, PlanKnobs, Technique};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// Not JSON, wrong types, unknown or missing fields: 400.
    #[error("{0}")]
    Syntax(String),
    /// Well-formed but breaks a rule: 422.
    #[error("{0}")]
    Invalid(String),
}

impl From<ShapeError> for RequestError {
    fn from(e: ShapeError) -> Self {
        RequestError::Invalid(e.to_string())
    }
}

impl From<VmConfigError> for RequestError {
    fn from(e: VmConfigError) -> Self {
        RequestError::Invalid(e.to_string())
    }
}

impl From<KnobError> for RequestError {
    fn from(e: KnobError) -> Self {
        RequestError::Invalid(e.to_string())
    }
}

impl From<QmpForwardError> for RequestError {
    fn from(e: QmpForwardError) -> Self {
        RequestError::Invalid(e.to_string())
    }
}

fn json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, RequestError> {
    if body.is_empty() {
        return Err(RequestError::Syntax(format!(
            "the {what} body is empty; expected a JSON object"
        )));
    }
    serde_json::from_slice(body).map_err(|e| RequestError::Syntax(format!("invalid {what}: {e}")))
}

/// A VM name from a path.
///
/// # Errors
/// [`RequestError::Invalid`] naming the rule.
pub fn parse_name(name: &str) -> Result<String, RequestError> {
    VM_NAME_SHAPE.check(name)?;
    Ok(name.to_string())
}

/// A migration id from a path.
///
/// # Errors
/// [`RequestError::Invalid`] naming the rule.
pub fn parse_migration_id(id: &str) -> Result<String, RequestError> {
    MIGRATION_ID_SHAPE.check(id)?;
    Ok(id.to_string())
}

/// `POST /v1/vms`: a [`VmConfig`].
///
/// # Errors
/// See the module doc.
pub fn parse_create_vm(body: &[u8]) -> Result<VmConfig, RequestError> {
    let config: VmConfig = json(body, "VM configuration")?;
    config.validate()?;
    Ok(config)
}

/// The field names a migration request may carry: its own and `PlanKnobs`' (serde cannot deny
/// unknown fields across a flatten, so they are checked here, from what a request serializes
/// to).
fn migration_fields() -> Vec<String> {
    // Every optional field set, so that every field is serialized.
    let example = MigrationRequest {
        id: Some(String::new()),
        to: AgentUrl::parse("http://127.0.0.1:1").expect("a constant, valid URL"),
        technique: Technique::Auto,
        measure: true,
        knobs: PlanKnobs::default(),
    };
    match serde_json::to_value(example) {
        Ok(Value::Object(m)) => m.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    }
}

/// `POST /v1/vms/{name}/migrations`: a [`MigrationRequest`].
///
/// # Errors
/// See the module doc; unknown fields are named.
pub fn parse_migration(body: &[u8]) -> Result<MigrationRequest, RequestError> {
    let raw: serde_json::Map<String, Value> = json(body, "migration request")?;
    let known = migration_fields();
    if let Some(field) = raw.keys().find(|k| !known.contains(k)) {
        return Err(RequestError::Syntax(format!(
            "unknown field `{}` in the migration request; expected one of {}",
            field.chars().take(64).collect::<String>(),
            known.join(", ")
        )));
    }
    let req: MigrationRequest = serde_json::from_value(Value::Object(raw))
        .map_err(|e| RequestError::Syntax(format!("invalid migration request: {e}")))?;
    if let Some(id) = &req.id {
        MIGRATION_ID_SHAPE.check(id)?;
    }
    req.knobs.validate()?;
    Ok(req)
}

/// `POST /v1/incoming` (agent to agent): the VM's configuration as the source has it.
///
/// # Errors
/// See the module doc.
pub fn parse_incoming(body: &[u8]) -> Result<IncomingRequest, RequestError> {
    let req: IncomingRequest = json(body, "incoming request")?;
    req.config.validate()?;
    MIGRATION_ID_SHAPE.check(&req.migration_id)?;
    Ok(req)
}

/// `POST /v1/vms/{name}/workload`: a [`WorkloadChange`] whose spec has the workload shape
/// (what it must keep against the VM is `workload::check_change`, answered 409).
///
/// # Errors
/// See the module doc.
pub fn parse_workload_change(body: &[u8]) -> Result<WorkloadChange, RequestError> {
    let change: WorkloadChange = json(body, "workload change")?;
    WORKLOAD_SHAPE.check(&change.workload)?;
    Ok(change)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQmp {
    execute: String,
    #[serde(default)]
    arguments: Option<Value>,
}

/// `POST /v1/vms/{name}/qmp`: one command of the forwardable set ([`ForwardedQmp`]).
///
/// # Errors
/// [`RequestError::Syntax`] when the body is not `{"execute", "arguments"?}`;
/// [`RequestError::Invalid`] for a command outside the set or arguments it does not take.
pub fn parse_qmp(body: &[u8]) -> Result<ForwardedQmp, RequestError> {
    let raw: RawQmp = json(body, "QMP command")?;
    Ok(ForwardedQmp::from_parts(
        &raw.execute,
        raw.arguments.as_ref(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status<T>(r: Result<T, RequestError>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(RequestError::Syntax(_)) => 400,
            Err(RequestError::Invalid(_)) => 422,
        }
    }

    #[test]
    fn create_vm() {
        assert_eq!(
            status(parse_create_vm(br#"{"name":"a","memory_bytes":268435456}"#)),
            200
        );
        assert_eq!(status(parse_create_vm(b"")), 400);
        assert_eq!(status(parse_create_vm(b"[]")), 400);
        assert_eq!(
            status(parse_create_vm(
                br#"{"name":"a","memory_bytes":268435456,"x":1}"#
            )),
            400
        );
        assert_eq!(
            status(parse_create_vm(br#"{"name":"","memory_bytes":268435456}"#)),
            422
        );
        assert_eq!(
            status(parse_create_vm(
                br#"{"name":"a","memory_bytes":268435456,"disk":"/etc/passwd"}"#
            )),
            422
        );
        assert_eq!(
            status(parse_create_vm(
                br#"{"name":"a","memory_bytes":268435456,"workload":"idle panic=1"}"#
            )),
            422
        );
    }

    #[test]
    fn migration_requests() {
        let m = parse_migration(
            br#"{"to":"http://127.0.0.1:7701/","technique":"postcopy","bandwidth_bps":50000000,"deadline_s":30.0}"#,
        )
        .expect("valid");
        assert_eq!(m.to.as_str(), "http://127.0.0.1:7701");
        assert_eq!(m.technique, Technique::Postcopy);
        assert_eq!(
            (m.knobs.bandwidth_bps, m.knobs.deadline_s),
            (Some(50_000_000), 30)
        );
        assert!(m.measure);
        for (body, code) in [
            (&br#"{"to":"ftp://x:1","technique":"precopy"}"#[..], 400),
            (br#"{"to":"http://x","technique":"precopy"}"#, 400),
            (br#"{"to":"http://x:1/a","technique":"precopy"}"#, 400),
            (br#"{"to":"http://x:1","technique":"teleport"}"#, 400),
            (
                br#"{"to":"http://x:1","technique":"precopy","deadline_ms":5}"#,
                400,
            ),
            (br#"{"to":"http://x:1"}"#, 400),
            (
                br#"{"to":"http://x:1","technique":"precopy","hybrid_fraction":2}"#,
                422,
            ),
            (
                br#"{"to":"http://x:1","technique":"precopy","bandwidth_bps":100}"#,
                422,
            ),
            (
                br#"{"to":"http://x:1","technique":"precopy","hybrid_rounds":0}"#,
                422,
            ),
        ] {
            assert_eq!(
                status(parse_migration(body)),
                code,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn incoming_requests_carry_a_full_config() {
        assert_eq!(
            status(parse_incoming(
                br#"{"config":{"name":"a","memory_bytes":268435456},"migration_id":"a-1-0"}"#
            )),
            200
        );
        assert_eq!(
            status(parse_incoming(br#"{"config":{},"migration_id":"a-1-0"}"#)),
            400
        );
        assert_eq!(
            status(parse_incoming(
                br#"{"config":{"name":"a","memory_bytes":268435456},"migration_id":"a-1-0","listen_host":"x"}"#
            )),
            400
        );
    }

    #[test]
    fn workload_changes() {
        let c = parse_workload_change(br#"{"workload":"cpu:demand=90"}"#).expect("valid");
        assert_eq!(c.workload, "cpu:demand=90");
        assert_eq!(status(parse_workload_change(b"")), 400);
        assert_eq!(status(parse_workload_change(br#"{"spec":"idle"}"#)), 400);
        assert_eq!(
            status(parse_workload_change(br#"{"workload":"idle","extra":1}"#)),
            400
        );
        for bad in ["cpu:demand=101", "idle panic=1", "", "memtouch:wss=64"] {
            let body = serde_json::json!({ "workload": bad }).to_string();
            assert_eq!(status(parse_workload_change(body.as_bytes())), 422, "{bad}");
        }
    }

    #[test]
    fn qmp_commands() {
        assert_eq!(status(parse_qmp(br#"{"execute":"query-status"}"#)), 200);
        assert_eq!(status(parse_qmp(br#"{"execute":"quit"}"#)), 422);
        assert_eq!(
            status(parse_qmp(
                br#"{"execute":"migrate-incoming","arguments":{"uri":"exec:touch /tmp/x"}}"#
            )),
            422
        );
        assert_eq!(
            status(parse_qmp(br#"{"execute":"query-status","x":1}"#)),
            400
        );
    }
}
