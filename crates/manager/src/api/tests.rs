//! The API over a running loop (the scripted fleet, the in-memory store, wall-clock time at a
//! 20 ms interval): authentication, the plans' life through the API, host commands, settings,
//! and each error's status.

use super::*;
use crate::clock::WallClock;
use crate::daemon::{Daemon, LoopConfig, Parts};
use crate::fleet::FakeFleet;
use crate::store::{HostSpec, MemoryStore};
use axum::body::Body;
use axum::http::{Method, Request as HttpRequest};
use drover_core::control::{ControlSettings, Mode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tower::ServiceExt;

pub(super) const TOKEN: &str = "api-test-token";
const GIB: u64 = 1 << 30;

/// h1 hot (a wants 3.5 of its 4 cores), h2 empty; recommend mode; the loop running.
pub(super) async fn running() -> (Router, Manager, Arc<FakeFleet>) {
    running_in(Mode::Recommend).await
}

/// As [`running`], in `mode`.
async fn running_in(mode: Mode) -> (Router, Manager, Arc<FakeFleet>) {
    let clock = Arc::new(WallClock::new());
    let fleet = Arc::new(FakeFleet::new(clock.clone()));
    fleet.add_host("h1", 4.0, 16 * GIB);
    fleet.add_host("h2", 4.0, 16 * GIB);
    fleet.add_vm("h1", "a", 2 * GIB, 3.0);
    fleet.add_vm("h1", "b", GIB, 0.7);
    fleet.set_migration_time(0.1);
    let settings = ControlSettings {
        mode,
        standby: false,
        ..ControlSettings::default()
    };
    let inventory = ["h1", "h2"]
        .iter()
        .map(|h| HostSpec {
            name: (*h).into(),
            agent_url: format!("http://{h}.test:7300"),
            power: None,
        })
        .collect();
    let (daemon, manager) = Daemon::start(Parts {
        fleet: fleet.clone(),
        store: Arc::new(MemoryStore::new()),
        clock,
        inventory,
        settings,
        config: LoopConfig {
            interval_s: 0.05,
            ..LoopConfig::default()
        },
    })
    .expect("starts");
    tokio::spawn(daemon.run());
    (router(manager.clone(), TOKEN), manager, fleet)
}

pub(super) async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = HttpRequest::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .expect("request");
    let answer = router.clone().oneshot(req).await.expect("answer");
    let status = answer.status();
    let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20)
        .await
        .expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

pub(super) async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    call(router, Method::GET, uri, Some(TOKEN), None).await
}

async fn post(router: &Router, uri: &str) -> (StatusCode, Value) {
    call(router, Method::POST, uri, Some(TOKEN), None).await
}

/// Polls `uri` until `done` holds of its body (at most 10 s).
pub(super) async fn until(router: &Router, uri: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(router, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{uri}: never got there: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_health_needs_the_token() {
    let (router, manager, _) = running().await;
    let (status, body) = call(&router, Method::GET, "/v1/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    for token in [None, Some("wrong"), Some("")] {
        let (status, body) = call(&router, Method::GET, "/v1/status", token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("token")));
        let (status, _) = call(&router, Method::POST, "/v1/hosts/h1/drain", token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = get(&router, "/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["mode"], "recommend");
    let hosts = until(&router, "/v1/hosts", |b| {
        b.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    assert_eq!(hosts[0]["name"], "h1");
    let vms = until(&router, "/v1/vms", |b| {
        b.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    assert_eq!(vms[0]["host"], "h1");
    manager.shutdown().await.expect("stops");
    let (status, _) = post(&router, "/v1/hosts/h1/drain").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the loop is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposed_plan_is_listed_explained_approved_and_carried_out() {
    let (router, manager, fleet) = running().await;
    let plans = until(&router, "/v1/plans?state=proposed", |b| {
        b.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let id = plans[0]["id"].as_str().expect("id").to_string();
    let (status, plan) = get(&router, &format!("/v1/plans/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(plan["explanation"]["host"], "h1");
    let (status, decision) = get(&router, &format!("/v1/plans/{id}/decision")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(decision["output"]["new_plans"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p == id.as_str())));

    let (status, plan) = post(&router, &format!("/v1/plans/{id}/approve")).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["state"], "approved", "{plan}");
    let (status, body) = post(&router, &format!("/v1/plans/{id}/approve")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("approve")),
        "{body}"
    );
    let (status, _) = post(&router, "/v1/plans/p-none/approve").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&router, "/v1/plans/p-none").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    until(&router, &format!("/v1/plans/{id}"), |p| {
        p["state"] == "done"
    })
    .await;
    let moves = until(&router, &format!("/v1/moves?plan_id={id}"), |m| {
        m.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let vm = moves[0]["vm"].as_str().expect("vm");
    assert_eq!(fleet.host_of(vm).as_deref(), Some("h2"));
    let events = until(&router, &format!("/v1/events?subject=plan&id={id}"), |e| {
        e.as_array()
            .is_some_and(|a| a.iter().any(|e| e["what"] == "approved"))
    })
    .await;
    assert!(events[0]["seq"].as_u64().is_some());
    let (status, body) = get(&router, "/v1/plans?limit=many").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let text = metrics_text(&router, Some(TOKEN)).await;
    for line in [
        "drover_manager_host_load{host=\"h1\"}",
        "drover_manager_host_reachable{host=\"h2\"} 1.0",
        "drover_manager_host_power_state{host=\"h1\",state=\"active\"} 1.0",
        "drover_manager_plans{kind=\"relief\",state=\"done\"} 1.0",
        "drover_manager_looks_total ",
        "# TYPE drover_manager_looks counter",
        "drover_manager_look_duration_seconds",
        "drover_manager_energy_joules_total ",
        "# TYPE drover_manager_energy_joules counter",
    ] {
        assert!(text.contains(line), "no {line} in:\n{text}");
    }
    assert!(
        text.lines().any(|l| l.starts_with("drover_manager_moves{")
            && l.contains("state=\"done\"")
            && l.ends_with(" 1.0")),
        "{text}"
    );
    let answer = router
        .clone()
        .oneshot(
            HttpRequest::get("/metrics")
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("answer");
    assert_eq!(
        answer.status(),
        StatusCode::UNAUTHORIZED,
        "metrics need the token"
    );
    manager.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_results_are_listed_newest_first_by_vm_and_by_id() {
    let (router, manager, fleet) = running_in(Mode::Auto).await;
    let listed = until(&router, "/v1/migrations", |b| {
        b.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let row = &listed[0];
    let (id, vm) = (
        row["move_id"].as_str().expect("id"),
        row["vm"].as_str().expect("vm"),
    );
    assert_eq!(
        (row["from_host"].as_str(), row["to_host"].as_str()),
        (Some("h1"), Some("h2"))
    );
    assert_eq!(fleet.host_of(vm).as_deref(), Some("h2"));
    assert_eq!(row["record"]["id"], id, "the agent's record: {row}");
    assert!(
        row["plan_id"].as_str().is_some_and(|p| p.starts_with('p')),
        "{row}"
    );
    let (status, one) = get(&router, &format!("/v1/migrations/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["move_id"], id);
    let (status, mine) = get(&router, &format!("/v1/migrations?vm={vm}&limit=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    let (_, none) = get(&router, "/v1/migrations?vm=nobody").await;
    assert_eq!(none, json!([]));

    for (uri, names) in [
        ("/v1/migrations?limit=many", "limit"),
        (
            "/v1/migrations?limit=10001",
            "limit '10001': expected a whole number from 1 to 10000",
        ),
        ("/v1/migrations?limit=-1", "from 1 to 10000"),
        ("/v1/migrations?vm=a%20b", "vm 'a b'"),
        ("/v1/migrations?vm=", "vm ''"),
        ("/v1/migrations?vmm=a", "vmm"),
        ("/v1/plans?stat=done", "stat"),
        ("/v1/moves?limit=20000", "limit '20000'"),
        ("/v1/migrations/bad%20id", "id 'bad id'"),
    ] {
        let (status, body) = get(&router, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(names), "{uri}: {error}");
    }
    let (status, body) = get(&router, "/v1/migrations/m-none").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("m-none")),
        "{body}"
    );
    manager.shutdown().await.expect("stops");
}

/// `GET /metrics` with `token`: the text (200 asserted).
async fn metrics_text(router: &Router, token: Option<&str>) -> String {
    let mut req = HttpRequest::get("/metrics");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let answer = router
        .clone()
        .oneshot(req.body(Body::empty()).expect("req"))
        .await
        .expect("answer");
    assert_eq!(answer.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20)
        .await
        .expect("body");
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_commands_and_settings_answer_with_their_status() {
    let (router, manager, _) = running().await;
    until(&router, "/v1/hosts", |b| {
        b.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let (status, body) = post(&router, "/v1/hosts/h2/drain").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["host"].as_str(), body["done"].as_str()),
        (Some("h2"), Some("drain"))
    );
    until(&router, "/v1/hosts", |b| b[1]["drained"] == true).await;
    let (status, _) = post(&router, "/v1/hosts/h2/undrain").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post(&router, "/v1/hosts/h9/drain").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = post(&router, "/v1/hosts/h9/wake").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = get(&router, "/v1/settings").await;
    assert_eq!(status, StatusCode::OK);
    let version = body["version"].as_u64().expect("version");
    let patch = |v: Value, q: &str| {
        let uri = format!("/v1/settings{q}");
        let router = router.clone();
        async move { call(&router, Method::PATCH, &uri, Some(TOKEN), Some(v)).await }
    };
    let (status, body) = patch(
        json!({"mode": "dry-run"}),
        &format!("?expected_version={version}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["settings"]["mode"], "dry-run");
    assert_eq!(body["version"].as_u64(), Some(version + 1));
    let (status, _) = patch(json!({"hot": 0.8}), &format!("?expected_version={version}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "stale version");
    let (status, body) = patch(json!({"hot": 5.0}), "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("hot")),
        "{body}"
    );
    let (status, body) = patch(json!({"hott": 1}), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown key: {body}");
    let req = HttpRequest::builder()
        .method(Method::PATCH)
        .uri("/v1/settings")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .expect("request");
    let answer = router.clone().oneshot(req).await.expect("answer");
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let (_, status) = get(&router, "/v1/status").await;
    assert_eq!(status["mode"], "dry-run");
    manager.shutdown().await.expect("stops");
}

#[test]
fn bearer_header_rules() {
    assert!(check_bearer(Some(b"Bearer s3cret"), "s3cret").is_ok());
    assert!(check_bearer(Some(b"bearer   s3cret"), "s3cret").is_ok());
    for bad in [
        &b"s3cret"[..],
        b"Bearer s3cre",
        b"Bearer s3cret!",
        b"Basic s3cret",
        b"Bearer",
    ] {
        assert!(check_bearer(Some(bad), "s3cret").is_err());
    }
    assert!(check_bearer(None, "s3cret").is_err());
    assert!(
        check_bearer(Some(b"Bearer "), "").is_err(),
        "an empty token matches nothing"
    );
}

/// Every route of the document answers through the router (a handler's answer, JSON or the
/// metrics text, never the router's bodiless 404/405), and every documented status of a
/// route is in the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_the_routes_the_router_serves() {
    let (router, manager, _) = running().await;
    let doc = openapi::document();
    for r in openapi::ROUTES {
        let uri = r.path.replace("{id}", "p-none").replace("{name}", "h9");
        let method = match r.method {
            drover_api::openapi::Method::Get => Method::GET,
            drover_api::openapi::Method::Post => Method::POST,
            drover_api::openapi::Method::Patch => Method::PATCH,
            drover_api::openapi::Method::Delete => Method::DELETE,
        };
        let body = (r.method == drover_api::openapi::Method::Patch).then(|| json!({}));
        let mut req = HttpRequest::builder()
            .method(method)
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        let req = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                req.body(Body::from(b.to_string()))
            }
            None => req.body(Body::empty()),
        }
        .expect("request");
        let answer = router.clone().oneshot(req).await.expect("answer");
        let status = answer.status();
        let bytes = axum::body::to_bytes(answer.into_body(), 1 << 22)
            .await
            .expect("body");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        assert!(
            !bytes.is_empty(),
            "{uri}: {status} with no body: not a handler's answer"
        );
        let documented = std::iter::once(r.ok.0).chain(r.errors.iter().copied());
        assert!(
            documented.clone().any(|c| c == status.as_u16()),
            "{} {uri}: {status} not among {:?}",
            r.method.as_str(),
            documented.collect::<Vec<_>>()
        );
        let op = &doc["paths"][r.path][r.method.as_str()];
        assert!(
            op["responses"][r.ok.0.to_string()].is_object(),
            "{}",
            r.path
        );
    }
    assert!(doc["components"]["schemas"]["HostView"]["properties"]["load"].is_object());
    manager.shutdown().await.expect("stops");
}

/// The schema the document gives the 200 answer of `GET path`.
fn ok_schema<'a>(doc: &'a Value, path: &str) -> &'a Value {
    &doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
}

/// Every JSON answer of a GET, from a manager that has carried out a plan, conforms to the
/// schema the document gives it (core's plans, moves, settings and decisions included), and
/// the document names those schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_conforms_to_its_documented_schema() {
    let (router, manager, _) = running_in(Mode::Auto).await;
    let done = until(&router, "/v1/migrations", |b| {
        b.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let (plan, migration) = (&done[0]["plan_id"], &done[0]["move_id"]);
    let (plan, migration) = (
        plan.as_str().expect("plan"),
        migration.as_str().expect("id"),
    );
    let doc = openapi::document();
    let schemas = &doc["components"]["schemas"];
    for name in [
        "Plan",
        "Move",
        "MoveState",
        "Explanation",
        "ControlSettings",
        "SettingsRecord",
        "Decision",
        "Observation",
        "ControlState",
        "JournalRow",
        "MigrationRow",
    ] {
        assert!(schemas[name].is_object(), "no schema {name}");
    }
    // Generated for reading (as the agent's): an Option may be absent, so `note` is not
    // required, though serde always writes it.
    assert_eq!(
        schemas["Plan"]["required"],
        json!([
            "id",
            "kind",
            "created_s",
            "state",
            "moves",
            "wake",
            "standby",
            "explanation"
        ])
    );
    let text = doc.to_string();
    for (i, _) in text.match_indices("\"$ref\":\"#/") {
        let pointer = text[i + 9..].split('"').next().unwrap_or_default();
        assert!(doc.pointer(pointer).is_some(), "{pointer} does not resolve");
    }
    let mut checked = 0;
    for r in openapi::ROUTES
        .iter()
        .filter(|r| r.method == drover_api::openapi::Method::Get)
    {
        if r.path == "/metrics" {
            continue;
        }
        let id = if r.path.starts_with("/v1/migrations") {
            migration
        } else {
            plan
        };
        let uri = r.path.replace("{id}", id);
        let (status, body) = get(&router, &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        let bad = schema_check::violations(&doc, ok_schema(&doc, r.path), &body);
        assert!(bad.is_empty(), "{uri}: {bad:#?}\n{body:#}");
        checked += 1;
    }
    assert_eq!(checked, 13, "every GET with a JSON answer");
    manager.shutdown().await.expect("stops");
}

/// Every state a move can be in, as serde writes it, conforms to `Move`; a move whose state
/// lacks a field of its kind, or names no kind, does not.
#[test]
fn every_move_state_conforms_and_the_check_can_fail() {
    use drover_core::control::{Move, MoveState, TechniqueChoice};
    let doc = openapi::document();
    let schema = json!({"$ref": "#/components/schemas/Move"});
    let states = [
        MoveState::Planned,
        MoveState::Requested { at_s: 1.0 },
        MoveState::Running { since_s: 2.0 },
        MoveState::Done { at_s: 3.0 },
        MoveState::Failed {
            at_s: 3.0,
            error: "refused".into(),
            vm_on_destination: true,
        },
        MoveState::Cancelled {
            at_s: 3.0,
            reason: "operator".into(),
        },
        MoveState::Skipped {
            at_s: 3.0,
            reason: "VM gone".into(),
        },
        MoveState::Lost {
            at_s: 3.0,
            reason: "agent forgot".into(),
        },
    ];
    for state in states {
        let m = Move {
            id: "m-1".into(),
            plan: "p-1".into(),
            vm: "a".into(),
            from: "h1".into(),
            to: "h2".into(),
            technique: TechniqueChoice {
                technique: drover_core::migration::Technique::Postcopy,
                reason: "test".into(),
            },
            demand_cores: 1.5,
            memory_bytes: 1 << 30,
            state,
        };
        let value = serde_json::to_value(&m).expect("serializes");
        let bad = schema_check::violations(&doc, &schema, &value);
        assert!(bad.is_empty(), "{value}: {bad:?}");
        let mut broken = value.clone();
        broken["state"]["state"] = json!("flying");
        assert!(
            !schema_check::violations(&doc, &schema, &broken).is_empty(),
            "{broken}"
        );
        let mut broken = value;
        if let Some(o) = broken["state"].as_object_mut() {
            o.retain(|k, _| k == "state");
        }
        let lacks = schema_check::violations(&doc, &schema, &broken);
        assert_eq!(
            lacks.is_empty(),
            m_has_no_fields(&broken),
            "{broken}: {lacks:?}"
        );
        broken["extra"] = json!(1);
        assert!(
            !schema_check::violations(&doc, &schema, &broken).is_empty(),
            "{broken}"
        );
    }
}

/// `planned` is the one state with nothing but its name.
fn m_has_no_fields(m: &Value) -> bool {
    m["state"]["state"] == "planned"
}
