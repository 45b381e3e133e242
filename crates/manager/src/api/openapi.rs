//! The OpenAPI 3.1 document of the manager's API (`GET /v1/openapi.json`), built by the same
//! builder as the agent's (drover-api's `openapi::build`) from [`ROUTES`], the table the
//! router is checked against in the tests. Every body has a generated schema: the manager's
//! own types (status, hosts, VMs, health, host commands, settings record, journal rows,
//! migration results) and core's control types (plans, moves and their states, settings,
//! decisions), whose schemas core derives behind its `schema` feature from the very types
//! serde writes, so the document cannot drift from the JSON. Only a settings patch is a bare
//! object (a JSON merge patch: any part of the settings).

use crate::handle::{HostView, Status, VmView};
use crate::store::{JournalRow, MigrationRow, SettingsRecord};
use drover_api::openapi::{any_object, build, s, Api, Body, Method, Route};
use drover_core::control::{Decision, Move, Plan};
use schemars::generate::SchemaGenerator;
use schemars::Schema;
use serde_json::{json, Value};

use Method::{Get, Patch, Post};

const AUTH: u16 = 401;

/// `PATCH /v1/settings`' body: any part of the settings, as RFC 7396 merges it.
fn settings_patch(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "A JSON merge patch (RFC 7396) of ControlSettings: the keys to change, null to reset one to its default"
    })
}

/// Every operation of the manager's API.
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    Route { method: Get, path: "/v1/health", summary: "Liveness, version, looks, store failures in a row (no token needed)", request: Body::None, ok: (200, Body::Json(s::<super::Health>)), errors: &[], auth: false },
    Route { method: Get, path: "/v1/openapi.json", summary: "This document", request: Body::None, ok: (200, Body::Json(any_object)), errors: &[AUTH], auth: true },
    Route { method: Get, path: "/v1/status", summary: "The loop: mode, looks, hosts reachable, plans active, moves in flight, energy, store health", request: Body::None, ok: (200, Body::Json(s::<Status>)), errors: &[AUTH], auth: true },
    Route { method: Get, path: "/v1/hosts", summary: "Every host as the last look saw it", request: Body::None, ok: (200, Body::Json(s::<Vec<HostView>>)), errors: &[AUTH], auth: true },
    Route { method: Get, path: "/v1/vms", summary: "Every VM as the last look saw it", request: Body::None, ok: (200, Body::Json(s::<Vec<VmView>>)), errors: &[AUTH], auth: true },
    Route { method: Get, path: "/v1/plans", summary: "Plans, newest first (query state, since_s, limit 1 to 10000, default 100)", request: Body::None, ok: (200, Body::Json(s::<Vec<Plan>>)), errors: &[400, AUTH, 500], auth: true },
    Route { method: Get, path: "/v1/plans/{id}", summary: "One plan with its explanation", request: Body::None, ok: (200, Body::Json(s::<Plan>)), errors: &[AUTH, 404, 500], auth: true },
    Route { method: Get, path: "/v1/plans/{id}/decision", summary: "What the step that made the plan decided from (core's Decision, replayable by drover sim replay)", request: Body::None, ok: (200, Body::Json(s::<Decision>)), errors: &[AUTH, 404, 500], auth: true },
    Route { method: Post, path: "/v1/plans/{id}/approve", summary: "Approve a proposed plan (recommend mode); the plan afterwards", request: Body::None, ok: (200, Body::Json(s::<Plan>)), errors: &[AUTH, 404, 409, 500, 503], auth: true },
    Route { method: Post, path: "/v1/plans/{id}/cancel", summary: "Cancel a plan: its moves not yet started are dropped; the plan afterwards", request: Body::None, ok: (200, Body::Json(s::<Plan>)), errors: &[AUTH, 404, 409, 500, 503], auth: true },
    Route { method: Get, path: "/v1/moves", summary: "Moves in the order planned (query plan_id, vm, state, limit 1 to 10000, default 100)", request: Body::None, ok: (200, Body::Json(s::<Vec<Move>>)), errors: &[400, AUTH, 500], auth: true },
    Route { method: Get, path: "/v1/migrations", summary: "Migration results with their moves, newest first (the source agent's final record of each; query vm, limit 1 to 10000, default 100)", request: Body::None, ok: (200, Body::Json(s::<Vec<MigrationRow>>)), errors: &[400, AUTH, 500], auth: true },
    Route { method: Get, path: "/v1/migrations/{id}", summary: "The result of one move's migration (id: the move's, which is the migration's on its source agent)", request: Body::None, ok: (200, Body::Json(s::<MigrationRow>)), errors: &[400, AUTH, 404, 500], auth: true },
    Route { method: Post, path: "/v1/hosts/{name}/drain", summary: "Evacuate the host and keep it empty until undrained", request: Body::None, ok: (200, Body::Json(s::<super::HostDone>)), errors: &[AUTH, 404, 409, 500, 502, 503], auth: true },
    Route { method: Post, path: "/v1/hosts/{name}/undrain", summary: "Let a drained host take VMs again", request: Body::None, ok: (200, Body::Json(s::<super::HostDone>)), errors: &[AUTH, 404, 409, 500, 502, 503], auth: true },
    Route { method: Post, path: "/v1/hosts/{name}/wake", summary: "Wake the host from standby", request: Body::None, ok: (200, Body::Json(s::<super::HostDone>)), errors: &[AUTH, 404, 409, 500, 502, 503], auth: true },
    Route { method: Get, path: "/v1/settings", summary: "The control settings and their version", request: Body::None, ok: (200, Body::Json(s::<SettingsRecord>)), errors: &[AUTH], auth: true },
    Route { method: Patch, path: "/v1/settings", summary: "Change settings with a JSON merge patch (RFC 7396); query expected_version=N refuses a change made since (409)", request: Body::Json(settings_patch), ok: (200, Body::Json(s::<SettingsRecord>)), errors: &[400, AUTH, 409, 413, 415, 422, 500, 503], auth: true },
    Route { method: Get, path: "/v1/events", summary: "The journal (query subject, id, since_s, until_s, after_seq, before_seq, newest_first, limit 1 to 10000, default 100)", request: Body::None, ok: (200, Body::Json(s::<Vec<JournalRow>>)), errors: &[400, AUTH, 500], auth: true },
    Route { method: Get, path: "/metrics", summary: "Prometheus text exposition", request: Body::None, ok: (200, Body::Text), errors: &[AUTH, 500], auth: true },
];

fn error_meaning(code: u16) -> &'static str {
    match code {
        400 => "a query string or body that does not parse: an unknown or repeated parameter or field, a value of the wrong type, out of range or not in its set, a name or id of the wrong shape (the error names the parameter)",
        401 => "missing or wrong bearer token",
        404 => "no such plan, host, migration result or route",
        405 => "a method the route does not take",
        413 => "a body over 64 KiB",
        414 => "a request URI over 4 KiB",
        415 => "a settings patch sent as another media type than application/merge-patch+json or application/json",
        409 => "a plan whose state refuses the operation or whose premises vanished, or settings changed since the expected version",
        422 => "settings that break their rules (the error names the field)",
        500 => "the store failed (the manager logs why)",
        502 => "an agent refused or could not be reached",
        503 => "the control loop is not running",
        _ => "error",
    }
}

fn params(path: &str) -> Value {
    let mut out = Vec::new();
    if path.contains("{id}") {
        out.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}}));
    }
    if path.contains("{name}") {
        out.push(json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 64}}));
    }
    out.extend(
        super::query::params_of(path)
            .iter()
            .map(super::query::openapi),
    );
    Value::Array(out)
}

/// The manager API's whole document.
pub fn document() -> Value {
    build(&Api {
        title: "Drover cluster manager",
        description: "The manager's hosts, VMs, plans, moves, migration results, settings and journal, and its commands. All operations but /v1/health need `Authorization: Bearer <token>`. Every error is JSON: {\"error\": \"...\"}.",
        routes: ROUTES,
        errors: &[400, 401, 404, 405, 409, 413, 414, 415, 422, 500, 502, 503],
        error_meaning,
        params,
    })
}
