//! The HTTP API: routes, authentication and handlers. Handlers are thin: parse with
//! [`parse`] (pure), call the registry or the migration orchestrator, map errors with
//! [`ApiError`]. Every failure is a JSON `{"error": ...}` with a 4xx/5xx status, including
//! unknown routes, wrong methods, oversized bodies and extractor rejections, so no client input
//! reaches a panic or an HTML error page.
//!
//! Routes (all but `/v1/health` need `Authorization: Bearer <token>`):
//! - `GET /v1/health`, `GET /v1/openapi.json`
//! - `GET|POST /v1/vms`, `GET|DELETE /v1/vms/{name}`, `GET /v1/vms/{name}/samples`
//! - `POST /v1/vms/{name}/migrations`, `GET /v1/migrations`, `GET|DELETE /v1/migrations/{id}`
//! - agent to agent: `POST /v1/incoming`, `POST /v1/incoming/{name}/commit`,
//!   `DELETE /v1/incoming/{name}`, `POST /v1/vms/{name}/qmp`
//! - `GET /v1/metrics` (JSON), `GET /metrics` (Prometheus text)

pub mod error;
pub mod parse;

pub use error::ApiError;

use crate::model::{IncomingReply, VmRole, VmStatus};
use crate::AgentState;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use drover_qemu::qmp::{Qmp, QmpError};
use serde_json::json;
use std::sync::Arc;

/// Request bodies are small JSON objects; anything bigger is a mistake or an attack.
pub const BODY_LIMIT: usize = 64 * 1024;

type St = State<Arc<AgentState>>;
type ApiResult = Result<Response, ApiError>;

fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("request body over {BODY_LIMIT} bytes"))
        } else {
            ApiError::BadRequest(r.body_text())
        }
    })
}

fn path(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(s)| s)
        .map_err(|r| ApiError::BadRequest(r.body_text()))
}

fn ok<T: serde::Serialize>(status: StatusCode, v: T) -> ApiResult {
    Ok((status, Json(v)).into_response())
}

/// The router for `state`.
pub fn router(state: Arc<AgentState>) -> Router {
    let protected = Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/vms", get(list_vms).post(create_vm))
        .route("/v1/vms/{name}", get(get_vm).delete(delete_vm))
        .route("/v1/vms/{name}/samples", get(samples))
        .route("/v1/vms/{name}/qmp", post(qmp))
        .route("/v1/vms/{name}/migrations", post(migrate))
        .route("/v1/migrations", get(list_migrations))
        .route(
            "/v1/migrations/{id}",
            get(get_migration).delete(cancel_migration),
        )
        .route("/v1/incoming", post(incoming))
        .route("/v1/incoming/{name}", axum::routing::delete(abort_incoming))
        .route("/v1/incoming/{name}/commit", post(commit_incoming))
        .route("/v1/metrics", get(metrics_json))
        .route("/metrics", get(metrics_prometheus))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/v1/health", get(health))
        .merge(protected)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this route".into())
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn auth(State(st): St, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match error::check_bearer(header, &st.token) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn health(State(st): St) -> ApiResult {
    ok(
        StatusCode::OK,
        json!({"status": "ok", "vms": st.vms.list().len()}),
    )
}

async fn openapi() -> ApiResult {
    ok(StatusCode::OK, crate::openapi::document())
}

async fn list_vms(State(st): St) -> ApiResult {
    ok(StatusCode::OK, st.vms.list())
}

async fn create_vm(State(st): St, b: Result<Bytes, BytesRejection>) -> ApiResult {
    let config = parse::parse_create_vm(&body(b)?)?;
    let view = st.vms.start(config, VmRole::Running).await?;
    ok(StatusCode::CREATED, view)
}

async fn get_vm(State(st): St, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let name = parse::parse_name(&path(p)?)?;
    ok(StatusCode::OK, st.vms.get(&name).await?)
}

async fn delete_vm(State(st): St, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let name = parse::parse_name(&path(p)?)?;
    st.vms.remove(&name, false, false).await?;
    ok(StatusCode::OK, json!({"deleted": name}))
}

async fn samples(State(st): St, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let name = parse::parse_name(&path(p)?)?;
    ok(StatusCode::OK, st.vms.wall_samples(&name)?)
}

async fn qmp(
    State(st): St,
    p: Result<Path<String>, PathRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let name = parse::parse_name(&path(p)?)?;
    let cmd = parse::parse_qmp(&body(b)?)?;
    // Only a migration destination takes forwarded commands: a normal VM is nobody's business.
    let view = st.vms.get(&name).await?;
    if view.status != VmStatus::Incoming {
        return Err(ApiError::Conflict(format!(
            "VM '{name}' is not an incoming migration destination"
        )));
    }
    let q = st.vms.qmp_of(&name)?;
    match q.execute(&cmd.execute, cmd.arguments).await {
        Ok(v) => ok(StatusCode::OK, json!({"return": v})),
        Err(QmpError::Command {
            command,
            class,
            desc,
        }) => Err(ApiError::Qmp {
            command,
            class,
            desc,
        }),
        Err(e) => Err(ApiError::Internal(format!("QMP with '{name}': {e}"))),
    }
}

async fn migrate(
    State(st): St,
    p: Result<Path<String>, PathRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let name = parse::parse_name(&path(p)?)?;
    let req = parse::parse_migration(&body(b)?)?;
    let record = crate::migrate::start(&st, &name, req)?;
    ok(StatusCode::ACCEPTED, record)
}

async fn list_migrations(State(st): St) -> ApiResult {
    ok(StatusCode::OK, st.migrations.list())
}

async fn get_migration(State(st): St, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let id = path(p)?;
    ok(StatusCode::OK, crate::migrate::view(&st, &id).await?)
}

async fn cancel_migration(State(st): St, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let id = path(p)?;
    ok(StatusCode::ACCEPTED, st.migrations.cancel(&id)?)
}

/// Picks two free TCP ports on `host` for QEMU's migration and recovery listeners (both held
/// until both are known, so they differ). Racy in theory (another process may take one before
/// QEMU binds); `migrate-incoming` would then fail and the source reports the migration failed,
/// with the VM still on the source.
fn free_ports(host: &str) -> Result<(u16, u16), ApiError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let bind = || {
        std::net::TcpListener::bind((bare, 0))
            .map_err(|e| ApiError::Invalid(format!("cannot listen on '{host}' here: {e}")))
    };
    let port = |l: &std::net::TcpListener| {
        l.local_addr()
            .map(|a| a.port())
            .map_err(|e| ApiError::Internal(format!("local address: {e}")))
    };
    let (a, b) = (bind()?, bind()?);
    Ok((port(&a)?, port(&b)?))
}

async fn incoming(State(st): St, b: Result<Bytes, BytesRejection>) -> ApiResult {
    let req = parse::parse_incoming(&body(b)?)?;
    let (port, recover_port) = free_ports(&req.listen_host)?;
    let role = VmRole::Incoming {
        migration_id: req.migration_id.clone(),
    };
    st.vms.start(req.config, role).await?;
    ok(
        StatusCode::CREATED,
        IncomingReply {
            uri: format!("tcp:{}:{port}", req.listen_host),
            recover_uri: format!("tcp:{}:{recover_port}", req.listen_host),
        },
    )
}

async fn commit_incoming(State(st): St, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let name = parse::parse_name(&path(p)?)?;
    st.vms.commit(&name)?;
    ok(StatusCode::OK, json!({"committed": name}))
}

async fn abort_incoming(State(st): St, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let name = parse::parse_name(&path(p)?)?;
    st.vms.remove(&name, true, false).await?;
    ok(StatusCode::OK, json!({"deleted": name}))
}

async fn metrics_json(State(st): St) -> ApiResult {
    ok(StatusCode::OK, st.metrics.json())
}

async fn metrics_prometheus(State(st): St) -> ApiResult {
    let text = st
        .metrics
        .prometheus()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
