//! Request parsing and validation: one pure function per request body or path parameter, so
//! every rule is unit-tested, a handler only ever sees validated values, and a client can check
//! a request before sending it.
//!
//! The status follows one rule, for every body:
//! - [`RequestError::Syntax`] (HTTP 400): the request's structure is wrong: not JSON, nested
//!   deeper than [`crate::body::MAX_DEPTH`] levels (named at the path where it goes too deep), not a
//!   JSON object, a value of the wrong JSON type (a string for a number, `2.5` for a whole
//!   number, an array for an object), an unknown, missing or repeated field;
//! - [`RequestError::Invalid`] (HTTP 422): a well-typed value breaks a rule: a string of the
//!   wrong shape, an enum value not in the set, a number out of range, a working set that does
//!   not fit.
//!
//! Every message names the field by its path (`vcpus`, `nic.mac`, `config.memory_bytes`,
//! `arguments.capabilities[0].capability`), quotes the value as the body wrote it, and says
//! what is expected in the setting's own limits (never the range of the Rust type that holds
//! it). The body is read by [`crate::body`]; the first problem found is the one reported.

use crate::body::{path_text, typed, Located, Node, ReadError, Refusal, Step};
use crate::migration::{IncomingRequest, MigrationRequest};
use crate::names::{MIGRATION_ID_SHAPE, VM_NAME_SHAPE, WORKLOAD_SHAPE};
use crate::qmp::{
    BlockExportAdd, BlockStream, FlatArgs, ForwardedQmp, JobDevice, JobId, NbdServerStart,
    SetCapabilities, UriArgs, ALLOWED, MAX_CAPABILITIES,
};
use crate::vm::{VmConfig, VmConfigError};
use crate::wan::WanPlanRequest;
use crate::workload::WorkloadChange;
use drover_core::migration::{KnobError, PlanKnobs, StorageMode};
use drover_core::units::refusal;
use drover_guest::fit::Setting;
use thiserror::Error;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// The request's structure: 400.
    #[error("{0}")]
    Syntax(String),
    /// A well-typed value that breaks a rule: 422.
    #[error("{0}")]
    Invalid(String),
}

/// `parent.field`, or `field` at the top.
fn child(parent: &str, field: &str) -> String {
    match parent {
        "" => field.chars().take(64).collect(),
        _ => format!("{parent}.{}", field.chars().take(64).collect::<String>()),
    }
}

/// What a numeric field accepts, worded as the rule that checks it words it: the guest's size
/// rules for a VM configuration (also inside an incoming request's `config`, and an incoming
/// request's `disk_virtual_bytes`), core's limits for the migration settings, the WAN plan's
/// for its link, round trip, budget and window. Every whole-number field of a request body is
/// here, so a number that cannot even be read (negative, beyond the type, infinite) is refused
/// with the field's own limits.
fn numeric_rule(path: &[Step]) -> Option<String> {
    let field = match path {
        [Step::Key(field)] => field.as_str(),
        [Step::Key(config), Step::Key(field)] if config == "config" => {
            return match field.as_str() {
                "vcpus" => Setting::Vcpus.expected(),
                "memory_bytes" => Setting::Memory.expected(),
                "disk_size_bytes" => Setting::DiskSize.expected(),
                _ => None,
            }
        }
        _ => return None,
    };
    match field {
        "vcpus" => Setting::Vcpus.expected(),
        "memory_bytes" => Setting::Memory.expected(),
        "disk_size_bytes" | "disk_virtual_bytes" => Setting::DiskSize.expected(),
        other => PlanKnobs::expected(other).or_else(|| WanPlanRequest::expected(other)),
    }
}

/// The message of a refusal found reading `root`, named by its path.
fn refused(e: Located, root: &Node, what: &str) -> RequestError {
    let name = path_text(&e.path);
    // A field refused by name (unknown, repeated, missing) is named with its object's path;
    // serde_path_to_error ends the path with the field itself when it had read its key.
    let child = |field: &str| match e.path.last() {
        Some(Step::Key(last)) if last == field => name.clone(),
        _ => child(&name, field),
    };
    let value = root.at(&e.path);
    let got = value.map(Node::kind).unwrap_or_default();
    let subject = if name.is_empty() {
        format!("the {what}")
    } else {
        name.clone()
    };
    let message = match &e.refusal {
        Refusal::Type { expected } | Refusal::Length { expected } => {
            let limits = numeric_rule(&e.path)
                .and_then(|rule| rule.strip_prefix("expected ").map(str::to_string))
                .map(|takes| format!("; the field takes {takes}"))
                .unwrap_or_default();
            format!("{subject}: expected {expected}, got {got}{limits}")
        }
        Refusal::Missing(field) => {
            format!("{} is missing: the {what} requires it", child(field))
        }
        Refusal::Unknown { field, expected } => format!(
            "unknown field {}; expected one of {}",
            child(field),
            expected.join(", ")
        ),
        Refusal::Duplicate(field) => format!("{} is given twice", child(field)),
        Refusal::Value { expected } => match value {
            Some(Node::String(s)) => format!(
                "{subject} '{}' is not valid: expected {expected}",
                s.chars().take(80).collect::<String>()
            ),
            _ => {
                let rule = numeric_rule(&e.path).unwrap_or_else(|| format!("expected {expected}"));
                refusal(&subject, &got, None, &rule)
            }
        },
        Refusal::Variant { variant, expected } => format!(
            "{subject} '{variant}' is not valid: expected one of {}",
            expected.join(", ")
        ),
        Refusal::Custom(message) => format!("{subject}: {message}"),
    };
    if e.refusal.is_structure() {
        RequestError::Syntax(message)
    } else {
        RequestError::Invalid(message)
    }
}

/// The body as a JSON object.
fn object(body: &[u8], what: &str) -> Result<Node, RequestError> {
    if body.is_empty() {
        return Err(RequestError::Syntax(format!(
            "the {what} body is empty; expected a JSON object"
        )));
    }
    let node = Node::read(body).map_err(|e| match e {
        ReadError::Syntax(e) => RequestError::Syntax(format!("the {what} is not JSON: {e}")),
        ReadError::TooDeep { path, limit } => {
            let at = match path_text(&path) {
                p if p.is_empty() => format!("the {what}"),
                p => p,
            };
            RequestError::Syntax(format!(
                "{at}: arrays and objects nest deeper than the {limit} levels a {what} may have"
            ))
        }
    })?;
    match node {
        Node::Object(_) => Ok(node),
        other => Err(RequestError::Syntax(format!(
            "the {what} must be a JSON object, not {}",
            other.kind()
        ))),
    }
}

/// `node` (found at `at` in `root`) read as a `T`, refusals named from `root`.
fn read<T: serde::de::DeserializeOwned>(
    node: &Node,
    root: &Node,
    at: &[Step],
    what: &str,
) -> Result<T, RequestError> {
    typed(node).map_err(|mut e| {
        e.path.splice(0..0, at.iter().cloned());
        refused(e, root, what)
    })
}

/// A value as the body wrote it, or `fallback` when the body has none there.
fn as_typed(root: &Node, path: &[Step], fallback: &str) -> String {
    root.at(path)
        .map(Node::typed)
        .unwrap_or_else(|| fallback.to_string())
}

fn key(k: &str) -> Step {
    Step::Key(k.to_string())
}

/// A VM configuration's refusal, its field under `prefix` (`config.` inside an incoming
/// request) and its value as the body wrote it.
fn config_refused(e: VmConfigError, root: &Node, prefix: &[Step]) -> RequestError {
    let mut path = prefix.to_vec();
    let name = path_text(prefix);
    let name = |field: &str| child(&name, field);
    let message = match e {
        VmConfigError::Shape(s) => s.named(&name(s.field)),
        VmConfigError::Fit(f) => {
            let field = f.setting().field();
            path.push(key(field));
            f.message(&name(field), &as_typed(root, &path, &f.to_string()), None)
        }
    };
    RequestError::Invalid(message)
}

/// A migration setting's refusal, with its value as the body wrote it.
fn knob_refused(e: KnobError, root: &Node) -> RequestError {
    let typed = as_typed(root, &[key(e.field)], &e.value);
    RequestError::Invalid(e.message(e.field, &typed, None))
}

/// A VM name from a path.
///
/// # Errors
/// [`RequestError::Invalid`] naming the rule.
pub fn parse_name(name: &str) -> Result<String, RequestError> {
    VM_NAME_SHAPE
        .check(name)
        .map_err(|e| RequestError::Invalid(e.named("name")))?;
    Ok(name.to_string())
}

/// A migration id from a path (`/v1/migrations/{id}`).
///
/// # Errors
/// [`RequestError::Invalid`] naming the rule.
pub fn parse_migration_id(id: &str) -> Result<String, RequestError> {
    MIGRATION_ID_SHAPE
        .check(id)
        .map_err(|e| RequestError::Invalid(e.named("id")))?;
    Ok(id.to_string())
}

/// `POST /v1/vms`: a [`VmConfig`].
///
/// # Errors
/// See the module doc.
pub fn parse_create_vm(body: &[u8]) -> Result<VmConfig, RequestError> {
    let what = "VM configuration";
    let root = object(body, what)?;
    let config: VmConfig = read(&root, &root, &[], what)?;
    config
        .validate()
        .map_err(|e| config_refused(e, &root, &[]))?;
    Ok(config)
}

/// The names of a type's fields, as it serializes them.
fn field_names<T: serde::Serialize>(example: &T) -> Vec<String> {
    match serde_json::to_value(example) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    }
}

/// `POST /v1/vms/{name}/migrations`: a [`MigrationRequest`].
///
/// serde's derive cannot deny unknown fields across a `flatten`, nor say where a flattened
/// field failed, so the request's own fields and `PlanKnobs`' are read apart: each part is
/// a `deny_unknown_fields` type of its own, and a field of neither is refused here.
///
/// # Errors
/// See the module doc.
pub fn parse_migration(body: &[u8]) -> Result<MigrationRequest, RequestError> {
    let what = "migration request";
    let root = object(body, what)?;
    let knob_fields = field_names(&PlanKnobs::default());
    let own_fields = ["id", "to", "technique", "measure"];
    let entries = root.entries().unwrap_or_default();
    let (mut own, mut knobs) = (Vec::new(), Vec::new());
    for (k, v) in entries {
        if own_fields.contains(&k.as_str()) {
            own.push((k.clone(), v.clone()));
        } else if knob_fields.contains(k) {
            knobs.push((k.clone(), v.clone()));
        } else {
            let mut known: Vec<&str> = own_fields.to_vec();
            known.extend(knob_fields.iter().map(String::as_str));
            return Err(RequestError::Syntax(format!(
                "unknown field {}; expected one of {}",
                k.chars().take(64).collect::<String>(),
                known.join(", ")
            )));
        }
    }
    let mut req: MigrationRequest = read(&Node::Object(own), &root, &[], what)?;
    req.knobs = read(&Node::Object(knobs), &root, &[], what)?;
    if let Some(id) = &req.id {
        MIGRATION_ID_SHAPE
            .check(id)
            .map_err(|e| RequestError::Invalid(e.named("id")))?;
    }
    req.knobs.validate().map_err(|e| knob_refused(e, &root))?;
    Ok(req)
}

/// `POST /v1/incoming` (agent to agent): the VM's configuration as the source has it.
///
/// # Errors
/// See the module doc.
pub fn parse_incoming(body: &[u8]) -> Result<IncomingRequest, RequestError> {
    let what = "incoming request";
    let root = object(body, what)?;
    let req: IncomingRequest = read(&root, &root, &[], what)?;
    req.config
        .validate()
        .map_err(|e| config_refused(e, &root, &[key("config")]))?;
    MIGRATION_ID_SHAPE
        .check(&req.migration_id)
        .map_err(|e| RequestError::Invalid(e.named("migration_id")))?;
    check_disk_virtual_bytes(req.config.disk_file().as_deref(), req.disk_virtual_bytes)?;
    check_source_nbd(
        req.config.disk_file().is_some(),
        req.storage,
        req.source_nbd,
    )?;
    Ok(req)
}

/// `storage` and `source_nbd` of an incoming request: a storage post-copy or hybrid needs a disk and
/// the source's NBD address (a port from 1 to 65535); a pre-copy takes no address.
/// Whether the address is the requester's own is the agent's check (it knows the peer).
fn check_source_nbd(
    disk: bool,
    storage: StorageMode,
    nbd: Option<std::net::SocketAddr>,
) -> Result<(), RequestError> {
    let invalid = |m: String| Err(RequestError::Invalid(m));
    match (storage, nbd) {
        (StorageMode::Precopy, None) => Ok(()),
        (StorageMode::Precopy, Some(a)) => invalid(format!(
            "source_nbd {a} is given with storage precopy: expected it only with storage \
             postcopy or hybrid"
        )),
        (mode, _) if !disk => invalid(format!(
            "storage {mode} is given but config has no disk: expected precopy without a disk"
        )),
        (mode, None) => invalid(format!(
            "source_nbd is missing: storage {mode} needs the source's NBD address"
        )),
        (_, Some(a)) if a.port() == 0 => invalid(format!(
            "source_nbd {a} is not valid: expected a port from 1 to 65535"
        )),
        // Whether the address is the requester's own (so unicast) is the agent's check.
        (StorageMode::Postcopy | StorageMode::Hybrid, Some(_)) => Ok(()),
    }
}

/// `disk_virtual_bytes` of an incoming request: given exactly when the configuration has a
/// disk (`disk` names it), by the guest's disk size rule, a multiple of 512 (qcow2's sector).
fn check_disk_virtual_bytes(disk: Option<&str>, bytes: Option<u64>) -> Result<(), RequestError> {
    match (disk, bytes) {
        (None, None) => Ok(()),
        (Some(disk), None) => Err(RequestError::Invalid(format!(
            "disk_virtual_bytes is missing: config has disk '{disk}', whose virtual size the \
             destination's target must have"
        ))),
        (None, Some(_)) => Err(RequestError::Invalid(
            "disk_virtual_bytes is given but config has no disk: expected it only with a disk"
                .into(),
        )),
        (Some(_), Some(b)) => {
            drover_guest::fit::check_disk_size(b).map_err(|e| {
                RequestError::Invalid(e.message("disk_virtual_bytes", &b.to_string(), None))
            })?;
            if b % 512 != 0 {
                return Err(RequestError::Invalid(format!(
                    "disk_virtual_bytes {b}: expected a multiple of 512"
                )));
            }
            Ok(())
        }
    }
}

/// `POST /v1/vms/{name}/workload`: a [`WorkloadChange`] whose spec has the workload shape
/// (what it must keep against the VM is `workload::check_change`, answered 409).
///
/// # Errors
/// See the module doc.
pub fn parse_workload_change(body: &[u8]) -> Result<WorkloadChange, RequestError> {
    let what = "workload change";
    let root = object(body, what)?;
    let change: WorkloadChange = read(&root, &root, &[], what)?;
    WORKLOAD_SHAPE
        .check(&change.workload)
        .map_err(|e| RequestError::Invalid(e.named("workload")))?;
    Ok(change)
}

/// `POST /v1/vms/{name}/wan-plan`: the link, budget and profiling window, each in its range.
///
/// # Errors
/// See the module doc.
pub fn parse_wan_plan(body: &[u8]) -> Result<WanPlanRequest, RequestError> {
    let what = "WAN plan request";
    let root = object(body, what)?;
    let req: WanPlanRequest = read(&root, &root, &[], what)?;
    req.validate().map_err(RequestError::Invalid)?;
    Ok(req)
}

/// A request that carries nothing (`POST /v1/migrations/{id}/resume`, the `what`): no body,
/// only whitespace, or an empty JSON object `{}`.
///
/// # Errors
/// [`RequestError::Syntax`] (400) for anything else (not JSON, not an object, any field),
/// rather than ignoring what a caller may believe it asked for.
pub fn parse_no_fields(body: &[u8], what: &str) -> Result<(), RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    // `object` answers only objects.
    if let Node::Object(fields) = object(body, what)? {
        if let Some((field, _)) = fields.first() {
            return Err(RequestError::Syntax(format!(
                "unknown field {}; the {what} takes no fields: send no body or {{}}",
                child("", field)
            )));
        }
    }
    Ok(())
}

/// `POST /v1/vms/{name}/qmp`: one command of the forwardable set ([`ForwardedQmp`]).
///
/// # Errors
/// See the module doc: a command outside the set is a value that breaks a rule (422), like a
/// URI that is not Drover's; arguments of the wrong structure are 400.
pub fn parse_qmp(body: &[u8]) -> Result<ForwardedQmp, RequestError> {
    let what = "QMP command";
    let root = object(body, what)?;
    let mut execute = None;
    let mut arguments = None;
    for (k, v) in root.entries().unwrap_or_default() {
        let slot = match k.as_str() {
            "execute" => &mut execute,
            "arguments" => &mut arguments,
            other => {
                return Err(RequestError::Syntax(format!(
                    "unknown field {}; expected one of execute, arguments",
                    other.chars().take(64).collect::<String>()
                )))
            }
        };
        if slot.replace(v).is_some() {
            return Err(RequestError::Syntax(format!("{k} is given twice")));
        }
    }
    let command = match execute {
        Some(Node::String(s)) => s.as_str(),
        Some(other) => {
            return Err(RequestError::Syntax(format!(
                "execute: expected a string, got {}",
                other.kind()
            )))
        }
        None => {
            return Err(RequestError::Syntax(
                "execute is missing: the QMP command requires it".into(),
            ))
        }
    };
    // The document admits no `arguments` for the queries and an object for the others, so
    // an explicit null is refused like any other value of the wrong type.
    qmp_command(command, arguments, &root)
}

/// The forwardable command `command` with `arguments` (found in `root`).
pub(crate) fn qmp_command(
    command: &str,
    arguments: Option<&Node>,
    root: &Node,
) -> Result<ForwardedQmp, RequestError> {
    let what = "QMP command";
    let at = [key("arguments")];
    let required =
        || RequestError::Syntax(format!("arguments is missing: {command} requires them"));
    let none = |make: ForwardedQmp| match arguments {
        None => Ok(make),
        Some(a) => Err(RequestError::Syntax(format!(
            "arguments: {command} takes none, got {}",
            a.kind()
        ))),
    };
    match command {
        "migrate-set-capabilities" => {
            let args: SetCapabilities = read(arguments.ok_or_else(required)?, root, &at, what)?;
            if args.capabilities.len() > MAX_CAPABILITIES {
                return Err(RequestError::Invalid(format!(
                    "arguments.capabilities has {} items: expected at most {MAX_CAPABILITIES}",
                    args.capabilities.len()
                )));
            }
            Ok(ForwardedQmp::MigrateSetCapabilities(args))
        }
        "migrate-incoming" | "migrate-recover" => {
            let args: UriArgs = read(arguments.ok_or_else(required)?, root, &at, what)?;
            Ok(match command {
                "migrate-incoming" => ForwardedQmp::MigrateIncoming(args),
                _ => ForwardedQmp::MigrateRecover(args),
            })
        }
        "nbd-server-start" => {
            let args: NbdServerStart = read(arguments.ok_or_else(required)?, root, &at, what)?;
            if args.addr.socket_addr().is_none() {
                return Err(RequestError::Invalid(format!(
                    "arguments.addr.data.port '{}' is not valid: expected a port from 1 to 65535 \
                     in decimal",
                    args.addr.data.port.chars().take(16).collect::<String>()
                )));
            }
            Ok(ForwardedQmp::NbdServerStart(args))
        }
        "block-export-add" => {
            let args: BlockExportAdd = read(arguments.ok_or_else(required)?, root, &at, what)?;
            check_export(&args)?;
            Ok(ForwardedQmp::BlockExportAdd(args))
        }
        "block-stream" => {
            let args: BlockStream = read(arguments.ok_or_else(required)?, root, &at, what)?;
            check_stream(&args)?;
            Ok(ForwardedQmp::BlockStream(args))
        }
        "block-job-resume" => {
            let args: JobDevice = read(arguments.ok_or_else(required)?, root, &at, what)?;
            check_short_names(&[("device", &args.device)])?;
            Ok(ForwardedQmp::BlockJobResume(args))
        }
        "job-dismiss" => {
            let args: JobId = read(arguments.ok_or_else(required)?, root, &at, what)?;
            check_short_names(&[("id", &args.id)])?;
            Ok(ForwardedQmp::JobDismiss(args))
        }
        "query-block-jobs" => none(ForwardedQmp::QueryBlockJobs),
        "query-named-block-nodes" => {
            let args: FlatArgs = read(arguments.ok_or_else(required)?, root, &at, what)?;
            if !args.flat {
                return Err(RequestError::Invalid(
                    "arguments.flat false is not valid: expected true".into(),
                ));
            }
            Ok(ForwardedQmp::QueryNamedBlockNodes(args))
        }
        "cont" => none(ForwardedQmp::Cont),
        "nbd-server-stop" => none(ForwardedQmp::NbdServerStop),
        "migrate-pause" => none(ForwardedQmp::MigratePause),
        "query-migrate" => none(ForwardedQmp::QueryMigrate),
        "query-status" => none(ForwardedQmp::QueryStatus),
        "query-migrate-capabilities" => none(ForwardedQmp::QueryMigrateCapabilities),
        other => Err(RequestError::Invalid(format!(
            "execute '{}' is not valid: expected a forwardable command, one of {ALLOWED}",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

/// A forwarded export: writable (the mirror writes through it), names of Drover's shape (the
/// agent checks they are exactly its disk's).
fn check_export(args: &BlockExportAdd) -> Result<(), RequestError> {
    if !args.writable {
        return Err(RequestError::Invalid(
            "arguments.writable false is not valid: expected true (a storage pre-copy's export)"
                .into(),
        ));
    }
    check_short_names(&[
        ("id", &args.id),
        ("node-name", &args.node_name),
        ("name", &args.name),
    ])
}

/// A stream's arguments beyond their types: `auto-dismiss` off, short names.
fn check_stream(args: &BlockStream) -> Result<(), RequestError> {
    if args.auto_dismiss {
        return Err(RequestError::Invalid(
            "arguments.auto-dismiss true is not valid: expected false (a storage post-copy's \
             stream is dismissed once its end was read)"
                .into(),
        ));
    }
    if let Some(speed) = args.speed {
        let max = drover_core::migration::UNCAPPED_BPS;
        if !(1..=max).contains(&speed) {
            return Err(RequestError::Invalid(format!(
                "arguments.speed {speed} is not valid: expected 1 to {max} bytes/s (100 GB/s), \
                 or none for unlimited"
            )));
        }
    }
    check_short_names(&[("job-id", &args.job_id), ("device", &args.device)])
}

/// Node names and job ids: 1 to 64 of a-z, 0-9 and '-' (Drover's own names have this shape;
/// the agent then checks they are exactly its own).
fn check_short_names(fields: &[(&str, &String)]) -> Result<(), RequestError> {
    let short = |s: &str| {
        (1..=64).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    for (field, value) in fields {
        if !short(value) {
            return Err(RequestError::Invalid(format!(
                "arguments.{field} '{}' is not valid: expected 1 to 64 of a-z, 0-9 and '-'",
                value.chars().take(64).collect::<String>()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;

/// A JSON merge patch (RFC 7396) body, such as the manager's `PATCH /v1/settings`: a JSON
/// object, no key repeated in any object (a repeated key is ambiguous: which one wins depends
/// on the parser), read under the same size and depth rules as every other body. `what` names
/// the body in messages ("settings patch").
///
/// # Errors
/// [`RequestError::Syntax`]: not JSON, too deep, not an object, a key given twice.
pub fn parse_merge_patch(body: &[u8], what: &str) -> Result<serde_json::Value, RequestError> {
    let root = object(body, what)?;
    if let Some(path) = repeated_key(&root, &mut Vec::new()) {
        return Err(RequestError::Syntax(format!(
            "{} is given twice",
            path_text(&path)
        )));
    }
    // The body is known to be JSON by now; serde_json reads it again as a value.
    serde_json::from_slice(body)
        .map_err(|e| RequestError::Syntax(format!("the {what} is not JSON: {e}")))
}

/// The path of the first key given twice in one object, depth first.
fn repeated_key(node: &Node, at: &mut Vec<Step>) -> Option<Vec<Step>> {
    match node {
        Node::Object(entries) => {
            // A set, so a 64 KiB body of many keys costs one pass, not one per pair.
            let mut seen = std::collections::HashSet::new();
            entries.iter().find_map(|(k, v)| {
                at.push(key(k));
                let found = if seen.insert(k.as_str()) {
                    repeated_key(v, at)
                } else {
                    Some(at.clone())
                };
                at.pop();
                found
            })
        }
        Node::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            at.push(Step::Index(i));
            let found = repeated_key(v, at);
            at.pop();
            found
        }),
        _ => None,
    }
}

/// An already parsed JSON value (a merge patch applied to a stored document) read as a `T`
/// under the module's rule: a wrong type, an unknown or missing field is
/// [`RequestError::Syntax`], a value outside its set [`RequestError::Invalid`], each named by
/// its path. `what` names the document in messages ("settings").
///
/// # Errors
/// See the module doc.
pub fn read_value<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    what: &str,
) -> Result<T, RequestError> {
    let root = Node::from_value(value);
    read(&root, &root, &[], what)
}
