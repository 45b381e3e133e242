//! The OpenAPI 3.1 document of the agent API, made from the same types the agent parses: every
//! schema is generated from this crate's types (their `deny_unknown_fields`, defaults, ranges
//! and patterns included), and the operations come from [`ROUTES`], the table the agent's
//! router is checked against.

use crate::metrics::Metrics;
use crate::migration::{IncomingReply, IncomingRequest, MigrationRecord, MigrationRequest};
use crate::power::Power;
use crate::qmp::{ForwardedQmp, QmpReply};
use crate::vm::{Committed, Deleted, Health, VmConfig, VmView, WallSample};
use crate::wan::{WanPlan, WanPlanRequest};
use crate::workload::WorkloadChange;
use crate::ErrorBody;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{json, Map, Value};

/// HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Patch => "patch",
            Method::Delete => "delete",
        }
    }
}

/// A request or response body's schema.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    None,
    Json(fn(&mut SchemaGenerator) -> Schema),
    /// Prometheus text.
    Text,
}

/// One operation of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: Method,
    /// Path with `{name}` / `{id}` parameters, as the router spells it.
    pub path: &'static str,
    pub summary: &'static str,
    pub request: Body,
    /// Success status and body.
    pub ok: (u16, Body),
    /// Every error status the operation can answer.
    pub errors: &'static [u16],
    /// False only for `/v1/health`.
    pub auth: bool,
}

/// The schema of `T`, for a route's body.
pub fn s<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

use Method::{Delete, Get, Post};

/// Status codes every authenticated operation may answer besides its own.
const AUTH: u16 = 401;

/// Every operation of the agent API.
pub const ROUTES: &[Route] = &[
    Route { method: Get, path: "/v1/health", summary: "Liveness and identity (no token needed)", request: Body::None, ok: (200, Body::Json(s::<Health>)), errors: &[], auth: false },
    Route { method: Get, path: "/v1/openapi.json", summary: "This document", request: Body::None, ok: (200, Body::Json(any_object)), errors: &[AUTH], auth: true },
    Route { method: Get, path: "/v1/vms", summary: "List VMs", request: Body::None, ok: (200, Body::Json(s::<Vec<VmView>>)), errors: &[AUTH], auth: true },
    Route { method: Post, path: "/v1/vms", summary: "Create and start a VM, creating its qcow2 disk first when disk_size_bytes or disk_base asks (the agent owns that disk: deleting the VM deletes it) (409: name taken, not enough free memory for its guest plus QEMU's overhead, disk absent, a disk to create that exists already or does not fit the storage directory's free space, a disk base absent, not qcow2, a VM's disk or larger than disk_size_bytes, an operator's disk that another VM here uses (as its disk or its disk's base) or that is not qcow2, a disk workload without a disk or larger than it, a NIC or net workload on a host without a VM network, a NIC address outside it or another VM's, a net workload's peer outside it)", request: Body::Json(s::<VmConfig>), ok: (201, Body::Json(s::<VmView>)), errors: &[400, AUTH, 409, 413, 422, 500], auth: true },
    Route { method: Get, path: "/v1/vms/{name}", summary: "One VM", request: Body::None, ok: (200, Body::Json(s::<VmView>)), errors: &[400, AUTH, 404, 422], auth: true },
    Route { method: Delete, path: "/v1/vms/{name}", summary: "Stop and delete a VM, and the disk the agent created for it (an operator-provided disk is never deleted)", request: Body::None, ok: (200, Body::Json(s::<Deleted>)), errors: &[400, AUTH, 404, 409, 422], auth: true },
    Route { method: Post, path: "/v1/vms/{name}/workload", summary: "Change a running VM's workload in place (accepted once checked and recorded; the guest applies it within a second or two: workload_pending turns false; 409: another kind, a larger working set, not fitting the VM, VM busy, lost or incoming)", request: Body::Json(s::<WorkloadChange>), ok: (202, Body::Json(s::<VmView>)), errors: &[400, AUTH, 404, 409, 413, 422, 500], auth: true },
    Route { method: Get, path: "/v1/vms/{name}/samples", summary: "The guest workload's reports, wall-clock stamped", request: Body::None, ok: (200, Body::Json(s::<Vec<WallSample>>)), errors: &[400, AUTH, 404, 422], auth: true },
    Route { method: Post, path: "/v1/vms/{name}/wan-plan", summary: "Profile a running VM with a disk from the host side for window_s seconds (dirty rate over time; its disk's read and write rates and where they fall) and return the WAN fraction plan: the memory and storage fractions to copy ahead over the given link with the lowest restoration agility within the budget, why, and both pure techniques' predictions; nothing migrates (409: no disk, VM busy, lost or incoming; 500: its QEMU failed the profile)", request: Body::Json(s::<WanPlanRequest>), ok: (200, Body::Json(s::<WanPlan>)), errors: &[400, AUTH, 404, 409, 413, 422, 500], auth: true },
    Route { method: Post, path: "/v1/vms/{name}/qmp", summary: "Run one forwardable QMP command on an incoming VM (agent to agent, for migrations; 422 naming arguments.uri when a URI is not the one this agent made for the VM, naming arguments.addr when an NBD address is not, arguments when an export is not its disk's, arguments.device, arguments.job-id or arguments.id when a stream or job is not its disk's stream, execute for a storage command to a VM without a disk or of another storage mode (a storage pre-copy's destination takes the NBD commands, a storage post-copy's the stream commands and query-named-block-nodes, a storage hybrid's both); 409 when the VM is not an incoming one or QEMU refuses the command in its state)", request: Body::Json(s::<ForwardedQmp>), ok: (200, Body::Json(s::<QmpReply>)), errors: &[400, AUTH, 404, 409, 413, 422, 502], auth: true },
    Route { method: Post, path: "/v1/vms/{name}/migrations", summary: "Migrate this VM to another agent (runs in the background; 409: busy, lost, has a disk, storage precopy and asks for technique postcopy or hybrid (storage pre-copy moves memory by pre-copy only, which auto picks; storage postcopy and hybrid take any technique), or the destination is this host)", request: Body::Json(s::<MigrationRequest>), ok: (202, Body::Json(s::<MigrationRecord>)), errors: &[400, AUTH, 404, 409, 413, 422], auth: true },
    Route { method: Get, path: "/v1/migrations", summary: "Every migration this agent was the source of", request: Body::None, ok: (200, Body::Json(s::<Vec<MigrationRecord>>)), errors: &[AUTH], auth: true },
    Route { method: Get, path: "/v1/migrations/{id}", summary: "A migration, with live progress while it runs", request: Body::None, ok: (200, Body::Json(s::<MigrationRecord>)), errors: &[400, AUTH, 404, 422], auth: true },
    Route { method: Delete, path: "/v1/migrations/{id}", summary: "Cancel a migration (refused once post-copy started)", request: Body::None, ok: (202, Body::Json(s::<MigrationRecord>)), errors: &[400, AUTH, 404, 409, 422], auth: true },
    Route { method: Post, path: "/v1/migrations/{id}/resume", summary: "Resume a post-copy left paused (its link was cut) with the guest on the destination (no body, or {}: anything else 400), in the background, for the request's resume window counted afresh from now (the default 600 s when the request's is 0), or a storage post-copy or hybrid whose stream stalled (its stream goes on, once): notes in the record say each step, and it becomes completed once the destination has the whole guest and disk (409: not such a post-copy, no recovery URI, its source QEMU gone, or being resumed already)", request: Body::None, ok: (202, Body::Json(s::<MigrationRecord>)), errors: &[400, AUTH, 404, 409, 422], auth: true },
    Route { method: Post, path: "/v1/migrations/{id}/abandon", summary: "Give up a split post-copy (ended failed or paused after the switch) whose destination QEMU died, the guest lost with it (no body, or {}: anything else 400): the destination releases its dead incoming VM keeping its disk, the source's postmigrate QEMU is stopped, its disk file kept and handed to the operator (the VM then reports lost; deleting it keeps the file), and the record becomes abandoned, its error saying what died and where the disks are; no disk file is deleted (409: not such a migration, being resumed, or the destination's QEMU alive or its agent unreachable, so it may hold the guest)", request: Body::None, ok: (200, Body::Json(s::<MigrationRecord>)), errors: &[400, AUTH, 404, 409, 422], auth: true },
    Route { method: Post, path: "/v1/incoming", summary: "Start an incoming QEMU for a migration (agent to agent); it listens on the address the request arrived on; a storage post-copy's or hybrid's source_nbd must be on the address the request came from (422 naming source_nbd otherwise)", request: Body::Json(s::<IncomingRequest>), ok: (201, Body::Json(s::<IncomingReply>)), errors: &[400, AUTH, 409, 413, 422, 500], auth: true },
    Route { method: Delete, path: "/v1/incoming/{name}", summary: "Drop an incoming QEMU (the migration failed) and the disk the agent made for it (409 once the migration switched and its QEMU runs: the guest is here; one whose QEMU died after the switch is dropped but its disk file is kept, named in kept_disk, since it may hold what only that guest wrote)", request: Body::None, ok: (200, Body::Json(s::<Deleted>)), errors: &[400, AUTH, 404, 409, 422], auth: true },
    Route { method: Post, path: "/v1/incoming/{name}/commit", summary: "Make a migrated VM a normal VM here (409 until QEMU runs its whole guest here, or for a VM that never was incoming; again after a commit: 200)", request: Body::None, ok: (200, Body::Json(s::<Committed>)), errors: &[400, AUTH, 404, 409, 422, 500], auth: true },
    Route { method: Post, path: "/v1/standby", summary: "Put the host in standby (idempotent; 409 while it runs VMs or migrations, naming them, or while it is waking): it then takes no VM, new or incoming, until woken", request: Body::None, ok: (200, Body::Json(s::<Power>)), errors: &[AUTH, 409, 500], auth: true },
    Route { method: Post, path: "/v1/wake", summary: "Wake the host (idempotent; a no-op when active): it is waking for the agent's wake delay, standing for its boot, then active", request: Body::None, ok: (200, Body::Json(s::<Power>)), errors: &[AUTH, 500], auth: true },
    Route { method: Get, path: "/v1/metrics", summary: "Host and VM metrics", request: Body::None, ok: (200, Body::Json(s::<Metrics>)), errors: &[AUTH], auth: true },
    Route { method: Get, path: "/metrics", summary: "Prometheus text exposition of /v1/metrics", request: Body::None, ok: (200, Body::Text), errors: &[AUTH], auth: true },
];

/// A body documented only as a JSON object (a type without a generated schema).
pub fn any_object(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({"type": "object"})
}

/// What each error status means.
fn error_meaning(code: u16) -> &'static str {
    match code {
        400 => "malformed request: not JSON, arrays and objects nested deeper than 32 levels (named at the path where it goes too deep), not a JSON object, a value of the wrong JSON type (a string for a number, a fraction for a whole number, an array for an object), an unknown, missing or repeated field, or a path parameter that is not UTF-8; the error names the field by its path",
        401 => "missing or wrong bearer token",
        404 => "no such VM or migration",
        409 => "conflicts with the host's state (name taken, VM busy or lost or not an incoming one, not enough free memory, disk absent or, to be created, present already or beyond the free space, a disk base that cannot be one, a disk workload its VM's disk cannot hold, a NIC address or net workload peer this host's VM network does not take, destination is this host, host in standby or waking, VMs or migrations still on a host asked to stand by, a workload change the VM's running workload cannot take), or the VM's QEMU refused a forwarded command in its state or on this host (qmp_class and qmp_desc say why)",
        413 => "body too large",
        414 => "URI too long",
        422 => "a well-typed value that breaks this document's rules (a pattern, an enum value not in the set, a number out of range, a command outside the forwardable set), or one of the two rules the schema cannot state: a memtouch working set must fit the VM's memory (see VmConfig.workload), and a forwarded migration URI must be the one this agent made for the VM (arguments.uri), as must a forwarded NBD address (arguments.addr; an export, a stream or a job must be its disk's, and a VM takes only its storage mode's commands, none without a disk), and an incoming request's source_nbd must be on the address the request came from (the source agent's own); the error names the field by its path",
        500 => "the agent failed (QEMU did not start, qemu-img failed, disk error, state not saved)",
        502 => "the VM's QEMU did not answer",
        _ => "error",
    }
}

fn params(path: &str) -> Value {
    let mut out = Vec::new();
    if path.contains("{name}") {
        out.push(json!({"name": "name", "in": "path", "required": true,
            "schema": crate::names::VM_NAME_SHAPE.schema()}));
    }
    if path.contains("{id}") {
        out.push(json!({"name": "id", "in": "path", "required": true,
            "schema": crate::names::MIGRATION_ID_SHAPE.schema()}));
    }
    Value::Array(out)
}

fn content(g: &mut SchemaGenerator, body: Body) -> Option<Value> {
    match body {
        Body::None => None,
        Body::Json(f) => Some(json!({"application/json": {"schema": f(g)}})),
        Body::Text => Some(json!({"application/openmetrics-text": {"schema": {"type": "string"}}})),
    }
}

fn operation(g: &mut SchemaGenerator, r: &Route) -> Value {
    let mut responses = Map::new();
    let mut ok = json!({"description": "success"});
    if let Some(c) = content(g, r.ok.1) {
        ok["content"] = c;
    }
    responses.insert(r.ok.0.to_string(), ok);
    for code in r.errors {
        responses.insert(
            code.to_string(),
            json!({"$ref": format!("#/components/responses/E{code}")}),
        );
    }
    let mut op = json!({"summary": r.summary, "responses": responses});
    if let Some(c) = content(g, r.request) {
        op["requestBody"] = json!({"required": true, "content": c});
    }
    if !r.auth {
        op["security"] = json!([]);
    }
    op
}

/// What an API's document is made of: its operations and what its errors and path
/// parameters mean. The agent's is [`document`]; the manager builds its own with [`build`].
#[derive(Debug, Clone, Copy)]
pub struct Api {
    pub title: &'static str,
    pub description: &'static str,
    pub routes: &'static [Route],
    /// Every error status some route answers, each described by `error_meaning`.
    pub errors: &'static [u16],
    pub error_meaning: fn(u16) -> &'static str,
    /// The path parameters of a route's path, as OpenAPI parameter objects.
    pub params: fn(&str) -> Value,
}

/// The OpenAPI 3.1 document of `api`, schemas generated from the types the routes name.
pub fn build(api: &Api) -> Value {
    let mut settings = SchemaSettings::draft2020_12().for_deserialize();
    settings.definitions_path = "/components/schemas".into();
    let mut g = settings.into_generator();
    let mut paths = Map::new();
    for r in api.routes {
        let mut op = operation(&mut g, r);
        let p = (api.params)(r.path);
        if p.as_array().is_some_and(|a| !a.is_empty()) {
            op["parameters"] = p;
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.as_str()] = op;
    }
    let error_ref = g.subschema_for::<ErrorBody>();
    let mut responses = Map::new();
    for &code in api.errors {
        responses.insert(
            format!("E{code}"),
            json!({"description": (api.error_meaning)(code),
                   "content": {"application/json": {"schema": error_ref}}}),
        );
    }
    let schemas: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": api.title,
            "version": env!("CARGO_PKG_VERSION"),
            "description": api.description,
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": responses,
            "schemas": schemas,
        }
    })
}

/// The agent API's whole document.
pub fn document() -> Value {
    build(&Api {
        title: "Drover host agent",
        description: "Per-host VM lifecycle, metrics and migrations between agents. All operations but /v1/health need `Authorization: Bearer <token>` (the scheme in any case). Every error is JSON: {\"error\": \"...\"}.",
        routes: ROUTES,
        errors: &[400, 401, 404, 409, 413, 414, 422, 500, 502],
        error_meaning,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_statuses() {
        let doc = document();
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.as_str()];
            assert!(op.is_object(), "{} {}", r.method.as_str(), r.path);
            assert!(op["responses"][r.ok.0.to_string()].is_object());
            for e in r.errors {
                assert!(op["responses"][e.to_string()].is_object(), "{} {e}", r.path);
            }
        }
    }

    #[test]
    fn request_schemas_carry_the_parsers_constraints() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let vm = &schemas["VmConfig"];
        assert_eq!(vm["additionalProperties"], false);
        assert_eq!(vm["properties"]["name"]["pattern"], crate::names::VM_NAME);
        assert_eq!(vm["properties"]["vcpus"]["maximum"], 64);
        assert_eq!(
            vm["properties"]["memory_bytes"]["minimum"],
            drover_guest::fit::MIN_GUEST_MEMORY_BYTES
        );
        let req = &schemas["MigrationRequest"];
        assert_eq!(req["additionalProperties"], false, "{req}");
        assert_eq!(req["properties"]["bandwidth_bps"]["minimum"], 125_000);
        assert_eq!(req["properties"]["deadline_s"]["maximum"], 86_400);
        let required: Vec<&str> = req["required"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(required, vec!["to", "technique"]);
        let incoming = &schemas["IncomingRequest"];
        assert!(incoming["properties"]["config"].is_object());
        let size = &incoming["properties"]["disk_virtual_bytes"];
        assert_eq!(size["minimum"], drover_guest::fit::MIN_DISK_BYTES, "{size}");
        assert_eq!(size["maximum"], drover_guest::fit::MAX_DISK_BYTES, "{size}");
        assert_eq!(size["multipleOf"], 512, "{size}");
        assert_eq!(
            incoming["then"]["required"][0], "disk_virtual_bytes",
            "{incoming}"
        );
        assert!(incoming["else"]["not"].is_object(), "{incoming}");
        let export = &schemas["BlockExportAdd"];
        assert_eq!(export["properties"]["writable"]["const"], true, "{export}");
        assert!(schemas["IncomingReply"]["properties"]["nbd"].is_object());
        let change = &schemas["WorkloadChange"];
        assert_eq!(change["additionalProperties"], false, "{change}");
        assert_eq!(
            change["properties"]["workload"]["pattern"],
            crate::names::WORKLOAD
        );
        assert_eq!(
            change["properties"]["workload"]["description"].as_str(),
            Some(crate::workload::change_rule().as_str())
        );
        let states: Vec<&Value> = schemas["PowerState"]["oneOf"]
            .as_array()
            .map(|a| a.iter().map(|v| &v["const"]).collect())
            .unwrap_or_default();
        assert_eq!(
            states,
            [&json!("active"), &json!("standby"), &json!("waking")]
        );
    }

    /// A schema-valid request is refused only for the host's state (404, 409), never for its
    /// data, but for the one documented cross-field rule: the document says which is which.
    #[test]
    fn the_document_says_which_refusals_are_about_the_data() {
        let doc = document();
        let responses = &doc["components"]["responses"];
        let conflict = responses["E409"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            conflict.contains("QEMU refused a forwarded command"),
            "{conflict}"
        );
        let invalid = responses["E422"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(invalid.contains("VmConfig.workload"), "{invalid}");
        assert!(invalid.contains("a forwarded migration URI"), "{invalid}");
        let malformed = responses["E400"]["description"]
            .as_str()
            .unwrap_or_default();
        let depth = format!("deeper than {} levels", crate::body::MAX_DEPTH);
        assert!(malformed.contains(&depth), "{malformed}");
        assert!(!conflict.contains("URI"), "{conflict}");
        assert!(!invalid.contains("QEMU"), "{invalid}");
        let qmp = &doc["paths"]["/v1/vms/{name}/qmp"]["post"]["responses"];
        assert!(qmp["409"].is_object());
        assert!(qmp["422"].is_object());
        let summary = doc["paths"]["/v1/vms/{name}/qmp"]["post"]["summary"]
            .as_str()
            .unwrap_or_default();
        assert!(summary.contains("422 naming arguments.uri"), "{summary}");
        let workload = &doc["components"]["schemas"]["VmConfig"]["properties"]["workload"];
        assert_eq!(
            workload["description"].as_str(),
            Some(crate::vm::workload_fit_rule().as_str())
        );
        let uri = &doc["components"]["schemas"]["MigrationUri"];
        assert_eq!(uri["pattern"], crate::names::MIGRATION_URI);
        assert_eq!(uri["not"]["pattern"], crate::names::MIGRATION_URI_EXCLUDED);
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for (i, _) in text.match_indices("\"$ref\":\"#/components/") {
            let rest = &text[i + 8..];
            let end = rest[1..].find('"').map_or(0, |e| e + 1);
            let pointer = &rest[1..end];
            assert!(doc.pointer(pointer).is_some(), "{pointer} does not resolve");
        }
    }
}
