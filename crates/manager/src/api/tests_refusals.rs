//! What the API refuses and how, as the agent's API does: settings patches read by
//! drover-api's body rules, list queries checked against their table, JSON answers for
//! unknown routes, wrong methods and overlong URIs, store failures that never reach a client.

use super::tests::{call, get, running, until, TOKEN};
use super::*;
use crate::handle::ManagerError;
use crate::store::{StoreError, MAX_READ};
use axum::body::Body;
use axum::http::{Method, Request as HttpRequest};
use serde_json::{json, Value};
use tower::ServiceExt;

/// A request with a raw body of `content_type`; the status and the body as JSON (Null when
/// it is not JSON, which every assertion below refuses).
async fn raw(
    router: &Router,
    method: Method,
    uri: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, Value) {
    let req = HttpRequest::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_string()))
        .expect("request");
    let answer = router.clone().oneshot(req).await.expect("answer");
    let status = answer.status();
    let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

async fn settings_changes(router: &Router) -> usize {
    let (status, body) = get(router, "/v1/events?subject=settings&limit=10000").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_patch_follows_the_agents_body_rules() {
    let (router, manager, _) = running().await;
    let (_, before) = get(&router, "/v1/settings").await;
    let version = before["version"].as_u64().expect("version");
    let changes = settings_changes(&router).await;
    let json = "application/json";
    for (body, status, says) in [
        ("[]", StatusCode::BAD_REQUEST, "must be a JSON object"),
        ("5", StatusCode::BAD_REQUEST, "must be a JSON object"),
        ("", StatusCode::BAD_REQUEST, "empty"),
        (
            r#"{"mode":"auto","mode":"dry-run"}"#,
            StatusCode::BAD_REQUEST,
            "mode is given twice",
        ),
        (r#"{"mode": 5}"#, StatusCode::BAD_REQUEST, "mode"),
        (r#"{"hot": "high"}"#, StatusCode::BAD_REQUEST, "hot"),
        (
            r#"{"hott": 1}"#,
            StatusCode::BAD_REQUEST,
            "unknown field hott",
        ),
        (
            r#"{"mode": "fast"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "mode 'fast'",
        ),
        (r#"{"hot": 5.0}"#, StatusCode::UNPROCESSABLE_ENTITY, "hot"),
    ] {
        let (got, answer) = raw(&router, Method::PATCH, "/v1/settings", json, body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(error_of(&answer).contains(says), "{body}: {answer}");
    }
    // Nothing changed: the same settings and version, nothing journaled.
    for body in ["{}", r#"{"mode": "recommend"}"#] {
        let (got, answer) = raw(&router, Method::PATCH, "/v1/settings", json, body).await;
        assert_eq!(got, StatusCode::OK, "{body}: {answer}");
        assert_eq!(answer, before, "{body}");
    }
    assert_eq!(settings_changes(&router).await, changes);
    let (_, after) = get(&router, "/v1/settings").await;
    assert_eq!(after["version"].as_u64(), Some(version));

    let merge = "application/merge-patch+json";
    let (got, answer) = raw(
        &router,
        Method::PATCH,
        "/v1/settings",
        merge,
        r#"{"mode":"dry-run"}"#,
    )
    .await;
    assert_eq!(got, StatusCode::OK, "{answer}");
    assert_eq!(answer["version"].as_u64(), Some(version + 1));
    until(&router, "/v1/events?subject=settings&limit=10000", |e| {
        e.as_array().is_some_and(|a| a.len() == changes + 1)
    })
    .await;
    let (got, answer) = raw(&router, Method::PATCH, "/v1/settings", "text/plain", "{}").await;
    assert_eq!(got, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer}");
    assert!(error_of(&answer).contains(merge), "{answer}");
    let big = format!(r#"{{"mode": "{}"}}"#, "x".repeat(BODY_LIMIT));
    let (got, answer) = raw(&router, Method::PATCH, "/v1/settings", json, &big).await;
    assert_eq!(got, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    manager.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_queries_refuse_what_they_do_not_take_naming_the_parameter() {
    let (router, manager, _) = running().await;
    for (uri, says) in [
        ("/v1/events?since_s=nan", "since_s 'nan': expected a finite number"),
        ("/v1/events?until_s=inf", "until_s 'inf'"),
        ("/v1/plans?since_s=-inf", "since_s '-inf'"),
        (
            "/v1/plans?state=bogus",
            "state 'bogus': expected one of proposed, approved, recorded, done, failed, cancelled, expired",
        ),
        ("/v1/moves?state=bogus", "one of planned, requested, running"),
        (
            "/v1/events?subject=bogus",
            "subject 'bogus': expected one of plan, move, host, settings",
        ),
        ("/v1/events?newest_first=yes", "newest_first 'yes': expected true or false"),
        ("/v1/events?after_seq=-1", "after_seq '-1'"),
        ("/v1/events?id=", "id '': expected a non-empty value"),
        ("/v1/plans?limit=0", "limit '0': expected a whole number from 1 to 10000"),
        ("/v1/events?limit=-1", "from 1 to 10000"),
        ("/v1/plans?limit=1&limit=2", "limit is given twice"),
        ("/v1/events?sort=asc", "unknown query parameter sort; /v1/events takes"),
    ] {
        let (status, body) = get(&router, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(error_of(&body).contains(says), "{uri}: {body}");
    }
    for uri in [
        "/v1/plans?state=done&since_s=0&limit=1",
        "/v1/moves?state=lost&vm=a&plan_id=p&limit=10000",
        "/v1/events?subject=settings&id=1&newest_first=true&after_seq=0&until_s=1e12",
    ] {
        let (status, body) = get(&router, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    }
    manager.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_wrong_methods_and_long_uris_answer_json() {
    let (router, manager, _) = running().await;
    let long_id = "p".repeat(3000);
    let long_uri = format!("/v1/plans/{}", "p".repeat(URI_LIMIT));
    for (method, uri, status) in [
        (Method::GET, "/v1/nothing", StatusCode::NOT_FOUND),
        (Method::GET, "/", StatusCode::NOT_FOUND),
        (
            Method::DELETE,
            "/v1/settings",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (Method::POST, "/v1/plans", StatusCode::METHOD_NOT_ALLOWED),
        (Method::GET, long_uri.as_str(), StatusCode::URI_TOO_LONG),
    ] {
        let (got, body) = call(&router, method.clone(), uri, Some(TOKEN), None).await;
        assert_eq!(
            got,
            status,
            "{method} {}: {body}",
            &uri[..uri.len().min(40)]
        );
        assert!(!error_of(&body).is_empty(), "{method}: {body}");
    }
    let (status, body) = get(&router, &format!("/v1/plans/{long_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let error = error_of(&body);
    assert!(
        error.len() <= error::MESSAGE_LIMIT + 3,
        "{} bytes",
        error.len()
    );
    assert!(error.ends_with("..."), "{error}");
    manager.shutdown().await.expect("stops");
}

#[test]
fn a_store_failure_reaches_the_client_without_its_file() {
    let e = ApiError::Manager(ManagerError::Store(StoreError::Io {
        path: "/var/lib/drover/secret/manager.db".into(),
        what: "read",
        source: std::io::Error::other("disk on fire"),
    }));
    let answer = e.into_response();
    assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let bytes = rt
        .block_on(axum::body::to_bytes(answer.into_body(), 1 << 16))
        .expect("body");
    let body: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(body, json!({"error": error::STORE_FAILED}));
}

#[test]
fn the_document_lists_every_list_routes_query_parameters() {
    let doc = openapi::document();
    for (path, params) in query::LISTS {
        let listed: Vec<&str> = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        let names: Vec<&str> = params.iter().map(|p| p.name).collect();
        assert_eq!(listed, names, "{path}");
    }
    let limit = &doc["paths"]["/v1/plans"]["get"]["parameters"][2]["schema"];
    assert_eq!(limit["minimum"], 1);
    assert_eq!(limit["maximum"], MAX_READ);
    let subject = &doc["paths"]["/v1/events"]["get"]["parameters"][0]["schema"]["enum"];
    assert_eq!(subject, &json!(["plan", "move", "host", "settings"]));
}
