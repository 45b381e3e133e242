//! Request parsing and validation, one pure function per resource (no HTTP, no state), so every
//! rule is unit-tested and a handler only ever sees validated values.
//!
//! Syntax problems (not JSON, wrong types, unknown fields) are 400; well-formed values that
//! make no sense (zero vCPUs, unknown technique) are 422.

use super::error::ApiError;
use crate::model::{IncomingRequest, MigrationRequest, NicConfig, QmpCommand, VmConfig};
use drover_core::units::parse_size;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

/// QMP commands a peer agent may forward to a VM here: what the migration driver sends to a
/// destination, and nothing that could stop, reconfigure or read the guest.
pub const QMP_ALLOWLIST: &[&str] = &[
    "migrate-set-capabilities",
    "migrate-set-parameters",
    "migrate-incoming",
    "migrate-recover",
    "query-migrate",
    "query-status",
    "query-migrate-capabilities",
];

const MAX_NAME: usize = 64;
const MIN_MEMORY: u64 = 32 << 20;
const MAX_MEMORY: u64 = 1 << 40;
const MAX_VCPUS: u32 = 64;

fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "request body is empty; expected a JSON object".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// A VM name: what QEMU, file names and the kernel command line can all carry safely.
pub fn parse_name(name: &str) -> Result<String, ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-');
    if ok {
        Ok(name.to_string())
    } else {
        Err(ApiError::Invalid(format!(
            "VM name '{}' must be 1-{MAX_NAME} letters, digits, '-' or '_', not starting with '-'",
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// A size given as bytes (number) or with a unit ("128M").
fn size(v: &Value, field: &str) -> Result<u64, ApiError> {
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            ApiError::Invalid(format!("{field} must be a positive whole number of bytes"))
        }),
        Value::String(s) => parse_size(s).map_err(|e| ApiError::Invalid(format!("{field}: {e}"))),
        _ => Err(ApiError::BadRequest(format!(
            "{field} must be a number of bytes or a string like \"128M\""
        ))),
    }
}

/// A workload spec goes onto the kernel command line: keep it to the guest grammar's characters
/// so it cannot inject other kernel parameters.
fn parse_workload(w: &str) -> Result<String, ApiError> {
    let kind = w.split(':').next().unwrap_or("");
    let chars_ok = w.len() <= 200
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":=,._-".contains(c));
    if !chars_ok || !["memtouch", "cpu", "idle"].contains(&kind) {
        return Err(ApiError::Invalid(format!(
            "workload '{}' must be memtouch:wss=SIZE[,rate=N|max][,pattern=random|seq], cpu:demand=PCT or idle",
            w.chars().take(80).collect::<String>()
        )));
    }
    Ok(w.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNic {
    tap: String,
    mac: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: String,
    #[serde(default)]
    vcpus: Option<u32>,
    memory: Value,
    #[serde(default)]
    workload: Option<String>,
    #[serde(default)]
    disk: Option<String>,
    #[serde(default)]
    nic: Option<RawNic>,
}

fn parse_nic(n: RawNic) -> Result<NicConfig, ApiError> {
    let tap_ok = !n.tap.is_empty()
        && n.tap.len() < 16
        && n.tap
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let mac_ok = n.mac.len() == 17
        && n.mac.split(':').count() == 6
        && n.mac
            .split(':')
            .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
    if !tap_ok {
        return Err(ApiError::Invalid(format!(
            "nic.tap '{}' is not a valid interface name",
            n.tap
        )));
    }
    if !mac_ok {
        return Err(ApiError::Invalid(format!(
            "nic.mac '{}' must look like 52:54:00:12:34:56",
            n.mac
        )));
    }
    Ok(NicConfig {
        tap: n.tap,
        mac: n.mac,
    })
}

fn vm_config(raw: RawVm) -> Result<VmConfig, ApiError> {
    let name = parse_name(&raw.name)?;
    let vcpus = raw.vcpus.unwrap_or(1);
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(ApiError::Invalid(format!(
            "vcpus {vcpus} must be 1..={MAX_VCPUS}"
        )));
    }
    let memory_bytes = size(&raw.memory, "memory")?;
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&memory_bytes) {
        return Err(ApiError::Invalid(format!(
            "memory {memory_bytes} bytes must be between 32MiB and 1TiB"
        )));
    }
    let workload = parse_workload(raw.workload.as_deref().unwrap_or("idle"))?;
    // The guest's own grammar, and whether the working set fits: refused here, a bad spec would
    // boot a VM whose workload never starts.
    drover_qemu::vm::validate_workload(&workload, memory_bytes)
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let disk = match raw.disk {
        None => None,
        Some(d) if d.starts_with('/') && !d.contains(',') => Some(PathBuf::from(d)),
        Some(d) => {
            return Err(ApiError::Invalid(format!(
                "disk '{d}' must be an absolute path without ','"
            )))
        }
    };
    let nic = raw.nic.map(parse_nic).transpose()?;
    Ok(VmConfig {
        name,
        vcpus,
        memory_bytes,
        workload,
        disk,
        nic,
    })
}

/// `POST /v1/vms`: `{"name", "memory": 134217728 | "128M", "vcpus"?: 1, "workload"?: "idle",
/// "disk"?: "/abs/path.qcow2", "nic"?: {"tap", "mac"}}`.
pub fn parse_create_vm(body: &[u8]) -> Result<VmConfig, ApiError> {
    vm_config(json(body)?)
}

/// An agent base URL: http(s), a host, no path beyond `/`.
pub fn parse_agent_url(url: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::Invalid(format!(
            "'{url}' must be an agent URL like http://198.18.0.2:7700"
        ))
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(bad)?;
    let host_port = rest.trim_end_matches('/');
    if host_port.is_empty()
        || host_port.contains('/')
        || host_port.contains('@')
        || host_port.contains(' ')
    {
        return Err(bad());
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The host part of an agent URL (where its QEMUs listen for migrations).
pub fn url_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let host_port = rest.trim_end_matches('/');
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().map(|h| format!("[{h}]"));
    }
    host_port
        .split(':')
        .next()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// `POST /v1/vms/{name}/migrations`: `{"to", "technique", "measure"?, ...PlanKnobs}`.
pub fn parse_migration(body: &[u8]) -> Result<MigrationRequest, ApiError> {
    let raw: serde_json::Map<String, Value> = json(body)?;
    // serde cannot deny unknown fields across a flatten: the known ones are what a request
    // serializes to.
    let known = serde_json::to_value(MigrationRequest {
        to: String::new(),
        technique: drover_core::migration::Technique::Auto,
        measure: true,
        knobs: drover_core::migration::PlanKnobs::default(),
    })
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(field) = raw.keys().find(|k| known.get(k.as_str()).is_none()) {
        return Err(ApiError::BadRequest(format!(
            "unknown field `{}` in the migration request",
            field.chars().take(64).collect::<String>()
        )));
    }
    let mut req: MigrationRequest = serde_json::from_value(Value::Object(raw))
        .map_err(|e| ApiError::BadRequest(format!("invalid migration request: {e}")))?;
    req.to = parse_agent_url(&req.to)?;
    req.knobs
        .validate()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    Ok(req)
}

/// `POST /v1/incoming` (agent to agent): the VM's config as the source has it.
pub fn parse_incoming(body: &[u8]) -> Result<IncomingRequest, ApiError> {
    let raw: IncomingRequest = json(body)?;
    let config = vm_config(RawVm {
        name: raw.config.name.clone(),
        vcpus: Some(raw.config.vcpus),
        memory: Value::from(raw.config.memory_bytes),
        workload: Some(raw.config.workload.clone()),
        disk: raw.config.disk.as_ref().map(|d| d.display().to_string()),
        nic: raw.config.nic.clone().map(|n| RawNic {
            tap: n.tap,
            mac: n.mac,
        }),
    })?;
    let id_ok = !raw.migration_id.is_empty()
        && raw.migration_id.len() <= 128
        && raw
            .migration_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
    if !id_ok {
        return Err(ApiError::Invalid(
            "migration_id must be letters, digits, '-' or '_'".into(),
        ));
    }
    let host_ok = !raw.listen_host.is_empty()
        && raw.listen_host.len() <= 255
        && raw
            .listen_host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    if !host_ok {
        return Err(ApiError::Invalid(format!(
            "listen_host '{}' is not a host name or address",
            raw.listen_host
        )));
    }
    Ok(IncomingRequest {
        config,
        migration_id: raw.migration_id,
        listen_host: raw.listen_host,
    })
}

/// `POST /v1/vms/{name}/qmp`: `{"execute", "arguments"?: {...}}`, allowlisted commands only.
pub fn parse_qmp(body: &[u8]) -> Result<QmpCommand, ApiError> {
    let cmd: QmpCommand = json(body)?;
    if !QMP_ALLOWLIST.contains(&cmd.execute.as_str()) {
        return Err(ApiError::Invalid(format!(
            "QMP command '{}' is not forwardable; allowed: {}",
            cmd.execute.chars().take(64).collect::<String>(),
            QMP_ALLOWLIST.join(", ")
        )));
    }
    match &cmd.arguments {
        None | Some(Value::Object(_)) => Ok(cmd),
        Some(Value::Null) => Ok(QmpCommand {
            execute: cmd.execute,
            arguments: None,
        }),
        Some(_) => Err(ApiError::BadRequest(
            "arguments must be a JSON object".into(),
        )),
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
