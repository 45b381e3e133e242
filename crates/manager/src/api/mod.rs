//! The manager's HTTP API (JSON under `/v1`), over the in-process [`Manager`] handle. Every
//! route but `/v1/health` needs `Authorization: Bearer <token>`. Handlers only translate:
//! reads come from the handle's snapshot or the store, commands go through the loop (stored
//! before acted on), and [`error::ApiError`] maps the handle's errors to statuses.
//!
//! | method and path | answer |
//! | --- | --- |
//! | `GET /v1/health` | `{"status": "ok", "version", "looks", "store_failures_in_a_row"}`, no token needed |
//! | `GET /v1/status` | the loop's [`crate::handle::Status`] |
//! | `GET /v1/hosts`, `GET /v1/vms` | as the last look saw them |
//! | `GET /v1/plans?state=&since_s=&limit=` | plans, newest first |
//! | `GET /v1/plans/{id}` | one plan with its explanation |
//! | `GET /v1/plans/{id}/decision` | what the step that made it decided from, replayable |
//! | `POST /v1/plans/{id}/approve`, `POST /v1/plans/{id}/cancel` | the plan afterwards |
//! | `GET /v1/moves?plan_id=&vm=&state=&limit=` | moves, in the order planned |
//! | `GET /v1/migrations?vm=&limit=` | migration results with their moves, newest first |
//! | `GET /v1/migrations/{id}` | the result of move `id`'s migration |
//! | `POST /v1/hosts/{name}/drain`, `.../undrain`, `.../wake` | `{"host", "done"}` |
//! | `GET /v1/settings`; `PATCH /v1/settings?expected_version=N` | the settings; a JSON merge patch (RFC 7396) |
//! | `GET /v1/events?subject=&id=&since_s=&limit=&newest_first=` | the journal |
//! | `GET /metrics` | Prometheus text exposition ([`prom`]) |
//! | `GET /v1/openapi.json` | the OpenAPI document ([`openapi`]) |
//!
//! Lists answer [`DEFAULT_LIMIT`] rows unless `limit` says otherwise (1 to [`crate::store::MAX_READ`]); a
//! query string with an unknown or repeated parameter, a value that does not parse, is out of
//! range or not in its set is refused with 400 naming the parameter ([`query`]).
//!
//! Errors follow the agent's API: every failure is JSON `{"error": ...}`, unknown routes (404)
//! and wrong methods (405) included; a body over [`BODY_LIMIT`] is 413, a URI over
//! [`URI_LIMIT`] 414; a settings patch is read by drover-api's body rules (a wrong JSON type,
//! an unknown or repeated field 400; a value breaking a rule 422). A store failure is logged
//! and answered with a generic 500 (the store's message names its file).

pub mod client;
pub mod error;
pub mod openapi;
pub mod prom;
pub mod query;

use crate::handle::Manager;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use drover_api::names::MIGRATION_ID_SHAPE;
pub use drover_api::{BODY_LIMIT, URI_LIMIT};
pub use error::{check_bearer, ApiError};
use query::Params;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;

/// Rows a list answers when the query sets no limit.
pub const DEFAULT_LIMIT: u32 = 100;

/// Where the API listens when the configuration does not say: loopback only, since the API
/// can move VMs (an operator exposes it on purpose).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7800";

/// The API's configuration (the configuration file's `[api]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on: [`DEFAULT_LISTEN`].
    pub listen: std::net::SocketAddr,
    /// The bearer token file clients must present; default: the top-level `token_file`.
    pub token_file: Option<std::path::PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 7800)),
            token_file: None,
        }
    }
}

#[derive(Clone)]
struct ApiState {
    manager: Manager,
    token: Arc<str>,
}

type St = State<ApiState>;
type ApiResult = Result<Response, ApiError>;

/// The API's routes over `manager`, checking `token` on all but `/v1/health`.
pub fn router(manager: Manager, token: &str) -> Router {
    let state = ApiState {
        manager,
        token: Arc::from(token),
    };
    let guarded = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/hosts", get(hosts))
        .route("/v1/vms", get(vms))
        .route("/v1/plans", get(plans))
        .route("/v1/plans/{id}", get(plan))
        .route("/v1/plans/{id}/decision", get(decision))
        .route("/v1/plans/{id}/approve", post(approve))
        .route("/v1/plans/{id}/cancel", post(cancel))
        .route("/v1/moves", get(moves))
        .route("/v1/migrations", get(migrations))
        .route("/v1/migrations/{id}", get(migration))
        .route("/v1/hosts/{name}/drain", post(drain))
        .route("/v1/hosts/{name}/undrain", post(undrain))
        .route("/v1/hosts/{name}/wake", post(wake))
        .route("/v1/settings", get(settings).patch(patch_settings))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi_doc))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/v1/health", get(health))
        .merge(guarded)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this route".into())
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(uri_limit))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes the requests under
/// way.
///
/// # Errors
/// The listener's I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn uri_limit(req: Request, next: Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    match drover_api::uri_refusal(len) {
        Some(why) => ApiError::UriTooLong(why).into_response(),
        None => next.run(req).await,
    }
}

async fn auth(State(st): St, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match check_bearer(header, &st.token) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn ok<T: Serialize>(body: T) -> ApiResult {
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// A query string's fields (every one optional); 400 naming what did not parse.
fn query<T>(parsed: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    parsed
        .map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

type RawQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// `GET /v1/health`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
    /// Looks since the manager started.
    pub looks: u64,
    /// Store writes failed in a row (0: healthy; above 0 the loop acts on nothing).
    pub store_failures_in_a_row: u32,
}

async fn health(State(st): St) -> ApiResult {
    let s = st.manager.status().await;
    ok(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        looks: s.looks,
        store_failures_in_a_row: s.store.failures_in_a_row,
    })
}

async fn status(State(st): St) -> ApiResult {
    ok(st.manager.status().await)
}

async fn hosts(State(st): St) -> ApiResult {
    ok(st.manager.hosts().await)
}

async fn vms(State(st): St) -> ApiResult {
    ok(st.manager.vms().await)
}

async fn plans(State(st): St, raw: RawQuery) -> ApiResult {
    ok(st.manager.plans(Params::plans(raw)?).await?)
}

async fn plan(State(st): St, Path(id): Path<String>) -> ApiResult {
    ok(st.manager.plan(&id).await?)
}

async fn decision(State(st): St, Path(id): Path<String>) -> ApiResult {
    // A plan never stored is 404; one whose decision was pruned answers the store's error.
    st.manager.plan(&id).await?;
    ok(st.manager.decision(&id).await?)
}

async fn approve(State(st): St, Path(id): Path<String>) -> ApiResult {
    st.manager.approve(&id).await?;
    ok(st.manager.plan(&id).await?)
}

async fn cancel(State(st): St, Path(id): Path<String>) -> ApiResult {
    st.manager.cancel_plan(&id).await?;
    ok(st.manager.plan(&id).await?)
}

async fn moves(State(st): St, raw: RawQuery) -> ApiResult {
    ok(st.manager.moves(Params::moves(raw)?).await?)
}

async fn migrations(State(st): St, raw: RawQuery) -> ApiResult {
    ok(st.manager.migrations(Params::migrations(raw)?).await?)
}

async fn migration(State(st): St, Path(id): Path<String>) -> ApiResult {
    MIGRATION_ID_SHAPE
        .check(&id)
        .map_err(|e| ApiError::BadRequest(e.named("id")))?;
    ok(st.manager.migration(&id).await?)
}

/// The answer of a host command.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostDone {
    pub host: String,
    /// `drain`, `undrain`, `wake`.
    pub done: String,
}

fn host_done(host: String, done: &str) -> ApiResult {
    ok(HostDone {
        host,
        done: done.into(),
    })
}

async fn drain(State(st): St, Path(name): Path<String>) -> ApiResult {
    st.manager.drain(&name).await?;
    host_done(name, "drain")
}

async fn undrain(State(st): St, Path(name): Path<String>) -> ApiResult {
    st.manager.undrain(&name).await?;
    host_done(name, "undrain")
}

async fn wake(State(st): St, Path(name): Path<String>) -> ApiResult {
    st.manager.wake(&name).await?;
    host_done(name, "wake")
}

async fn openapi_doc() -> ApiResult {
    ok(openapi::document())
}

async fn metrics(State(st): St) -> ApiResult {
    let text = prom::render(&st.manager).await?;
    let kind = "text/plain; version=0.0.4; charset=utf-8";
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, kind)], text).into_response())
}

async fn settings(State(st): St) -> ApiResult {
    ok(st.manager.settings().await)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PatchQuery {
    expected_version: Option<u64>,
}

/// Media types a settings patch may be sent as: RFC 7396's own, and plain JSON.
pub const PATCH_TYPES: [&str; 2] = ["application/merge-patch+json", "application/json"];

/// The body's media type (parameters such as `charset` aside) is one of [`PATCH_TYPES`].
fn patch_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = given.split(';').next().unwrap_or("").trim();
    if PATCH_TYPES.iter().any(|t| media.eq_ignore_ascii_case(t)) {
        return Ok(());
    }
    let given: String = given.chars().take(64).collect();
    Err(ApiError::UnsupportedMediaType(format!(
        "Content-Type '{given}': expected {}",
        PATCH_TYPES.join(" or ")
    )))
}

fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(drover_api::body_refusal())
        } else {
            ApiError::BadRequest(r.body_text())
        }
    })
}

async fn patch_settings(
    State(st): St,
    raw: Result<Query<PatchQuery>, QueryRejection>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let q = query(raw)?;
    patch_type(&headers)?;
    let patch = drover_api::request::parse_merge_patch(&body(b)?, "settings patch")
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    ok(st.manager.patch_settings(patch, q.expected_version).await?)
}

async fn events(State(st): St, raw: RawQuery) -> ApiResult {
    ok(st.manager.events(Params::events(raw)?).await?)
}

#[cfg(test)]
mod schema_check;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_refusals;
