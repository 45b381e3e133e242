//! The OpenAPI 3.1 document served at `/v1/openapi.json`, written by hand next to the routes it
//! describes (a test checks that every routed path appears here).

use serde_json::{json, Value};

fn op(summary: &str, ok: &str, ok_schema: Value, body: Option<Value>, errors: &[u16]) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(
        ok.to_string(),
        json!({"description": "success", "content": {"application/json": {"schema": ok_schema}}}),
    );
    for code in errors {
        responses.insert(
            code.to_string(),
            json!({"$ref": format!("#/components/responses/E{code}")}),
        );
    }
    let mut o = json!({ "summary": summary, "responses": responses });
    if let Some(schema) = body {
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": schema}}});
    }
    o
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn name_param() -> Value {
    json!([{ "name": "name", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"} }])
}

/// The document.
pub fn document() -> Value {
    let auth = [401u16];
    let size = json!({"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "examples": ["128M"]}]});
    let rate = json!({"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "examples": ["50MB/s"]}]});
    let any = json!({"type": "object"});
    let mut paths = serde_json::Map::new();
    paths.insert("/v1/health".into(), json!({"get": {
        "summary": "Liveness (no token needed)", "security": [],
        "responses": {"200": {"description": "alive", "content": {"application/json": {"schema": any}}}}}}));
    paths.insert(
        "/v1/openapi.json".into(),
        json!({"get": op("This document", "200", any.clone(), None, &auth)}),
    );
    paths.insert("/v1/vms".into(), json!({
        "get": op("List VMs", "200", json!({"type": "array", "items": r("Vm")}), None, &auth),
        "post": op("Create and start a VM", "201", r("Vm"), Some(r("CreateVm")), &[400, 401, 409, 413, 422, 500]),
    }));
    paths.insert(
        "/v1/vms/{name}".into(),
        json!({
            "parameters": name_param(),
            "get": op("One VM", "200", r("Vm"), None, &[401, 404]),
            "delete": op("Stop and delete a VM", "200", any.clone(), None, &[401, 404, 409]),
        }),
    );
    paths.insert("/v1/vms/{name}/samples".into(), json!({
        "parameters": name_param(),
        "get": op("The guest workload's reports, wall-clock stamped", "200", json!({"type": "array", "items": r("Sample")}), None, &[401, 404]),
    }));
    paths.insert("/v1/vms/{name}/qmp".into(), json!({
        "parameters": name_param(),
        "post": op("Forward one allowlisted QMP command (agent to agent, for migrations)", "200",
            json!({"type": "object", "properties": {"return": {}}}), Some(r("QmpCommand")), &[400, 401, 404, 409, 422]),
    }));
    paths.insert("/v1/vms/{name}/migrations".into(), json!({
        "parameters": name_param(),
        "post": op("Migrate this VM to another agent (runs in the background)", "202", r("Migration"), Some(r("MigrateVm")), &[400, 401, 404, 409, 422]),
    }));
    paths.insert("/v1/migrations".into(), json!({
        "get": op("Every migration this agent was the source of", "200", json!({"type": "array", "items": r("Migration")}), None, &auth),
    }));
    paths.insert("/v1/migrations/{id}".into(), json!({
        "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
        "get": op("A migration, with live progress while it runs", "200", r("Migration"), None, &[401, 404]),
        "delete": op("Cancel a migration (refused once post-copy started)", "202", r("Migration"), None, &[401, 404, 409]),
    }));
    paths.insert("/v1/incoming".into(), json!({
        "post": op("Start an incoming QEMU for a migration (agent to agent)", "201",
            json!({"type": "object", "properties": {"uri": {"type": "string"}, "recover_uri": {"type": "string"}}}), Some(r("Incoming")), &[400, 401, 409, 422, 500]),
    }));
    paths.insert("/v1/incoming/{name}".into(), json!({
        "parameters": name_param(),
        "delete": op("Drop an incoming QEMU (the migration failed)", "200", any.clone(), None, &[401, 404, 409]),
    }));
    paths.insert("/v1/incoming/{name}/commit".into(), json!({
        "parameters": name_param(),
        "post": op("Make a migrated VM a normal VM here", "200", any.clone(), None, &[401, 404]),
    }));
    paths.insert(
        "/v1/metrics".into(),
        json!({"get": op("Host and VM metrics", "200", r("Metrics"), None, &auth)}),
    );
    paths.insert("/metrics".into(), json!({"get": {
        "summary": "Prometheus text exposition of /v1/metrics",
        "responses": {"200": {"description": "metrics", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}},
                      "401": {"$ref": "#/components/responses/E401"}}}}));
    let error_schema = json!({"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"}, "qmp_class": {"type": "string"}, "qmp_desc": {"type": "string"}}});
    let mut responses = serde_json::Map::new();
    for (code, what) in [
        (
            400,
            "malformed request (not JSON, wrong types, unknown fields)",
        ),
        (401, "missing or wrong bearer token"),
        (404, "no such VM, migration or route"),
        (
            409,
            "conflicts with the current state (name taken, VM busy or lost)",
        ),
        (413, "body too large"),
        (422, "invalid values, or QEMU refused a forwarded command"),
        (500, "the agent failed (QEMU did not start, disk error)"),
    ] {
        responses.insert(
            format!("E{code}"),
            json!({"description": what, "content": {"application/json": {"schema": r("Error")}}}),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Drover host agent", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Per-host VM lifecycle, metrics and migrations between agents. All endpoints but /v1/health need `Authorization: Bearer <token>`."},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": responses,
            "schemas": {
                "Error": error_schema,
                "CreateVm": {"type": "object", "required": ["name", "memory"], "additionalProperties": false, "properties": {
                    "name": {"type": "string"}, "memory": size, "vcpus": {"type": "integer", "minimum": 1, "maximum": 64, "default": 1},
                    "workload": {"type": "string", "default": "idle", "examples": ["memtouch:wss=32M", "cpu:demand=50"]},
                    "disk": {"type": "string", "description": "absolute path of a qcow2 image"},
                    "nic": {"type": "object", "required": ["tap", "mac"], "properties": {"tap": {"type": "string"}, "mac": {"type": "string"}}}}},
                "Vm": {"type": "object", "properties": {
                    "name": {"type": "string"}, "status": {"enum": ["running", "incoming", "lost"]},
                    "vcpus": {"type": "integer"}, "memory_bytes": {"type": "integer"}, "workload": {"type": "string"},
                    "pid": {"type": "integer"}, "qemu_status": {"type": ["string", "null"]}, "migration": {"type": ["string", "null"]},
                    "workload_report": {"type": "object", "properties": {"ops": {"type": "integer"}, "ops_per_s": {"type": "number"},
                        "integrity_errors": {"type": "integer"}, "last_report_age_ms": {"type": ["integer", "null"]}}},
                    "error": {"type": ["string", "null"]}}},
                "Sample": {"type": "object", "properties": {"unix_ms": {"type": "integer"}, "ops": {"type": "integer"}, "integrity_errors": {"type": "integer"}}},
                "MigrateVm": {"type": "object", "required": ["to", "technique"], "additionalProperties": false, "properties": {
                    "to": {"type": "string", "description": "destination agent URL"},
                    "technique": {"enum": ["precopy", "postcopy", "hybrid", "auto"]},
                    "bandwidth": rate, "downtime_limit_ms": {"type": "integer", "default": 300},
                    "deadline_s": {"type": "integer", "default": 60}, "allow_postcopy_switch": {"type": "boolean", "default": false},
                    "hybrid_fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": 1},
                    "hybrid_rounds": {"type": "integer", "minimum": 1, "default": 1},
                    "measure": {"type": "boolean", "default": true, "description": "sample the workload ~13 s for the record's throughput windows"}}},
                "Migration": {"type": "object", "properties": {
                    "id": {"type": "string"}, "vm": {"type": "string"}, "request": {"type": "object"},
                    "state": {"enum": ["preparing", "running", "measuring", "completed", "failed", "cancelled", "interrupted"]},
                    "plan": {"type": ["object", "null"]}, "uri": {"type": ["string", "null"]},
                    "started_unix_ms": {"type": "integer"}, "ended_unix_ms": {"type": ["integer", "null"]},
                    "vm_on_destination": {"type": "boolean"}, "progress": {"type": ["object", "null"]},
                    "result": {"type": ["object", "null"], "description": "the migration result record"},
                    "error": {"type": ["string", "null"]}, "notes": {"type": "array", "items": {"type": "string"}}}},
                "Incoming": {"type": "object", "required": ["config", "migration_id", "listen_host"], "properties": {
                    "config": {"type": "object"}, "migration_id": {"type": "string"}, "listen_host": {"type": "string"}}},
                "QmpCommand": {"type": "object", "required": ["execute"], "properties": {
                    "execute": {"enum": crate::api::parse::QMP_ALLOWLIST}, "arguments": {"type": ["object", "null"]}}},
                "Metrics": {"type": "object", "properties": {"host": {"type": "object"}, "vms": {"type": "array", "items": {"type": "object"}}}},
            }
        }
    })
}
