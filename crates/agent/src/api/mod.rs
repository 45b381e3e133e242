//! The HTTP API: routes, authentication and handlers. Handlers are thin: parse with
//! `drover_api::request` (pure, shared with every client), call the registry or the migration
//! orchestrator, map errors with [`ApiError`]. Every failure is a JSON `{"error": ...}` with a
//! 4xx/5xx status, including unknown routes, wrong methods, oversized bodies, overlong URIs and
//! extractor rejections, so no client input reaches a panic or an HTML error page.
//!
//! The routes are `drover_api::openapi::ROUTES` (a test checks the router against the table);
//! all but `/v1/health` need `Authorization: Bearer <token>`.

pub mod error;

pub use error::ApiError;

use crate::model::VmRole;
use crate::vms::Removal;
use crate::AgentState;
use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Extension, Json, Router};
use drover_api::qmp::{ForwardedQmp, QmpReply};
use drover_api::request::{
    parse_create_vm, parse_incoming, parse_migration, parse_migration_id, parse_name,
    parse_no_fields, parse_qmp, parse_wan_plan, parse_workload_change,
};
use drover_api::vm::{Committed, Deleted, Health};
use drover_api::{IncomingReply, MigrationUri};
use drover_qemu::qmp::{Qmp, QmpError};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The request limits every Drover API applies (the manager's too).
pub use drover_api::{BODY_LIMIT, URI_LIMIT};

type St = State<Arc<AgentState>>;
type ApiResult = Result<Response, ApiError>;

/// What the server knows about a connection: the local address the client reached, which is
/// where an incoming migration's QEMU listens (an address this host owns, reachable by the
/// source).
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub local: Option<SocketAddr>,
    /// The peer's address (a storage post-copy's source export must be on it).
    pub peer: Option<SocketAddr>,
}

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Connection {
            local: stream.io().local_addr().ok(),
            peer: stream.io().peer_addr().ok(),
        }
    }
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

fn path(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(s)| s)
        .map_err(|r| ApiError::BadRequest(r.body_text()))
}

fn name(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    Ok(parse_name(&path(p)?)?)
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
        .route("/v1/vms/{name}/workload", post(change_workload))
        .route("/v1/vms/{name}/qmp", post(qmp))
        .route("/v1/vms/{name}/wan-plan", post(wan_plan))
        .route("/v1/vms/{name}/migrations", post(migrate))
        .route("/v1/migrations", get(list_migrations))
        .route(
            "/v1/migrations/{id}",
            get(get_migration).delete(cancel_migration),
        )
        .route("/v1/migrations/{id}/resume", post(resume_migration))
        .route("/v1/migrations/{id}/abandon", post(abandon_migration))
        .route("/v1/incoming", post(incoming))
        .route("/v1/incoming/{name}", axum::routing::delete(abort_incoming))
        .route("/v1/incoming/{name}/commit", post(commit_incoming))
        .route("/v1/standby", post(standby))
        .route("/v1/wake", post(wake))
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
        .layer(axum::middleware::from_fn(uri_limit))
        .with_state(state)
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
    match error::check_bearer(header, &st.token) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn health(State(st): St) -> ApiResult {
    ok(
        StatusCode::OK,
        Health {
            status: "ok".into(),
            agent_id: st.agent_id.clone(),
            vms: st.vms.list().len() as u64,
            version: env!("CARGO_PKG_VERSION").into(),
            power: st.power.current().state(),
        },
    )
}

async fn openapi() -> ApiResult {
    ok(StatusCode::OK, drover_api::openapi::document())
}

async fn list_vms(State(st): St) -> ApiResult {
    ok(StatusCode::OK, st.vms.list())
}

async fn create_vm(State(st): St, b: Result<Bytes, BytesRejection>) -> ApiResult {
    let config = parse_create_vm(&body(b)?)?;
    // Held until the VM is registered (or failed), so a standby cannot slip in between.
    let _admitted = st.power.admit()?;
    let view = st.vms.start(config, VmRole::Running).await?;
    ok(StatusCode::CREATED, view)
}

async fn get_vm(State(st): St, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let name = name(p)?;
    ok(StatusCode::OK, st.vms.get(&name).await?)
}

/// Deletes a VM. A source VM held by a split migration (post-copy ended failed or paused here)
/// is deleted only by settling that migration: when the destination's QEMU says it completed
/// and runs the guest, the VM is committed there, this QEMU stopped and the record completed;
/// otherwise 409 says why (see `migrate::settle`).
async fn delete_vm(State(st): St, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let name = name(p)?;
    // Never the only full copy of a disk a destination's overlay still reads from, whatever
    // the record or the source QEMU says (defence in depth: the settle refuses it too).
    if let Some(why) = crate::migrate::storage_pc::delete_refusal(&st, &name) {
        return Err(crate::vms::VmsError::Busy { name, why }.into());
    }
    match st.vms.remove(&name, Removal::Delete).await {
        Ok(_) => {}
        Err(crate::vms::VmsError::Busy { .. })
            if crate::migrate::split_migration_of(&st, &name).is_some() =>
        {
            if let Some(r) = crate::migrate::split_migration_of(&st, &name) {
                crate::migrate::settle(&st, &r, false).await?;
            }
        }
        Err(e) => return Err(e.into()),
    }
    let deleted = Deleted {
        deleted: name,
        kept_disk: None,
    };
    ok(StatusCode::OK, deleted)
}

async fn samples(State(st): St, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let name = name(p)?;
    ok(StatusCode::OK, st.vms.wall_samples(&name)?)
}

async fn change_workload(
    State(st): St,
    p: Result<Path<String>, PathRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let name = name(p)?;
    let change = parse_workload_change(&body(b)?)?;
    let view = st.vms.change_workload(&name, &change.workload)?;
    ok(StatusCode::ACCEPTED, view)
}

async fn wan_plan(
    State(st): St,
    p: Result<Path<String>, PathRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let name = name(p)?;
    let req = parse_wan_plan(&body(b)?)?;
    ok(
        StatusCode::OK,
        crate::wan_plan::plan(&st, &name, &req).await?,
    )
}

async fn standby(State(st): St) -> ApiResult {
    let power = st.power.standby(|| crate::power::Occupancy {
        vms: st.vms.list().into_iter().map(|v| v.name).collect(),
        migrations: st
            .migrations
            .list()
            .into_iter()
            .filter(|m| !m.state.is_final())
            .map(|m| m.id)
            .collect(),
        starting: 0,
    })?;
    ok(StatusCode::OK, power)
}

async fn wake(State(st): St) -> ApiResult {
    ok(StatusCode::OK, st.power.wake()?)
}

async fn qmp(
    State(st): St,
    p: Result<Path<String>, PathRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let name = name(p)?;
    let cmd = parse_qmp(&body(b)?)?;
    // Only an incoming migration destination takes forwarded commands, and only with the URIs
    // this agent made for it.
    st.vms.check_forwarded(&name, &cmd)?;
    let q = st.vms.qmp_of(&name)?;
    let reply = run_forwarded(q.as_ref(), &name, &cmd).await?;
    if guest_seen(&reply.ret) {
        st.vms.mark_guest_arrived(&name);
    }
    ok(StatusCode::OK, reply)
}

/// Whether a forwarded look says the guest has reached this (destination) QEMU: it runs, or the
/// incoming migration switched to post-copy or completed.
fn guest_seen(ret: &drover_api::qmp::QmpReturn) -> bool {
    use drover_api::qmp::QmpReturn as R;
    match ret {
        R::Status(s) => s.running,
        R::Migrate(m) => m
            .status
            .as_deref()
            .is_some_and(|s| s == "completed" || s.starts_with("postcopy-")),
        R::Capabilities(_) | R::BlockJobs(_) | R::BlockNodes(_) | R::Empty(_) => false,
    }
}

async fn run_forwarded(q: &dyn Qmp, name: &str, cmd: &ForwardedQmp) -> Result<QmpReply, ApiError> {
    match q.execute(cmd.name(), cmd.arguments()).await {
        Ok(v) => cmd
            .reply(v)
            .map(|ret| QmpReply { ret })
            .map_err(ApiError::Upstream),
        Err(QmpError::Command {
            command,
            class,
            desc,
        }) => Err(ApiError::Qmp {
            command,
            class,
            desc,
        }),
        Err(e) => Err(ApiError::Upstream(format!("QMP with '{name}': {e}"))),
    }
}

async fn migrate(
    State(st): St,
    p: Result<Path<String>, PathRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let name = name(p)?;
    let req = parse_migration(&body(b)?)?;
    let record = crate::migrate::start(&st, &name, req).await?;
    ok(StatusCode::ACCEPTED, record)
}

async fn list_migrations(State(st): St) -> ApiResult {
    ok(StatusCode::OK, st.migrations.list())
}

async fn get_migration(State(st): St, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let id = parse_migration_id(&path(p)?)?;
    ok(StatusCode::OK, crate::migrate::view(&st, &id).await?)
}

/// `POST /v1/migrations/{id}/resume`: no body or `{}` (400 otherwise); a migration that is not
/// a post-copy left paused is refused (409) saying what became of it.
async fn resume_migration(
    State(st): St,
    p: Result<Path<String>, PathRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = parse_migration_id(&path(p)?)?;
    parse_no_fields(&body(b)?, "resume request")?;
    ok(
        StatusCode::ACCEPTED,
        crate::migrate::resume_on_request(&st, &id).await?,
    )
}

async fn abandon_migration(
    State(st): St,
    p: Result<Path<String>, PathRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = parse_migration_id(&path(p)?)?;
    parse_no_fields(&body(b)?, "abandon request")?;
    ok(
        StatusCode::OK,
        crate::migrate::abandon::abandon(&st, &id).await?,
    )
}

async fn cancel_migration(State(st): St, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let id = parse_migration_id(&path(p)?)?;
    ok(
        StatusCode::ACCEPTED,
        crate::migrate::cancel(&st, &id).await?,
    )
}

/// Picks `N` free TCP ports on `ip` for QEMU's listeners (migration, recovery and, for a VM
/// with a disk, the NBD server), all held until all are known, so they differ. Racy in theory
/// (another process may take one before QEMU binds); `migrate-incoming` or `nbd-server-start`
/// would then fail and the source reports the migration failed, with the VM still on the
/// source.
pub(crate) fn free_ports<const N: usize>(ip: IpAddr) -> Result<[u16; N], ApiError> {
    let mut held = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let l = std::net::TcpListener::bind((ip, 0))
            .map_err(|e| ApiError::Internal(format!("cannot listen on {ip} here: {e}")))?;
        *port = l
            .local_addr()
            .map_err(|e| ApiError::Internal(format!("local address: {e}")))?
            .port();
        held.push(l);
    }
    Ok(ports)
}

async fn incoming(
    State(st): St,
    conn: Option<Extension<axum::extract::ConnectInfo<Connection>>>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let req = parse_incoming(&body(b)?)?;
    let _admitted = st.power.admit()?;
    let conn = conn.map(|Extension(c)| c.0);
    // A storage post-copy's disk is read from the source's export: only on the address the
    // request came from (the source agent's own), never wherever the body says.
    let peer = conn.as_ref().and_then(|c| c.peer).map(|a| a.ip());
    crate::migrate::check_source_nbd(req.source_nbd, peer).map_err(ApiError::Invalid)?;
    // Listen where the source reached us: an address of this host that the source can reach.
    let ip = conn
        .and_then(|c| c.local)
        .map_or(st.listen.ip(), |a| a.ip());
    let [port, recover_port, nbd_port] = free_ports(ip)?;
    let config = crate::migrate::incoming_config(req.config, req.disk_virtual_bytes);
    let reply = IncomingReply {
        uri: MigrationUri::tcp(ip, port),
        recover_uri: MigrationUri::tcp(ip, recover_port),
        // A post-copy destination serves no NBD target: it reads the source's. A hybrid's
        // does both: reads the source's, and takes the push into its overlay.
        nbd: (config.disk.is_some()
            && req.storage != drover_core::migration::StorageMode::Postcopy)
            .then(|| std::net::SocketAddr::new(ip, nbd_port)),
    };
    let role = VmRole::Incoming {
        migration_id: req.migration_id,
        uri: Some(reply.uri),
        recover_uri: Some(reply.recover_uri),
        nbd: reply.nbd,
        source_nbd: req.source_nbd,
    };
    st.vms.start(config, role).await?;
    ok(StatusCode::CREATED, reply)
}

async fn commit_incoming(State(st): St, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let name = name(p)?;
    st.vms.commit(&name).await?;
    ok(StatusCode::OK, Committed { committed: name })
}

async fn abort_incoming(State(st): St, p: Result<Path<String>, PathRejection>) -> ApiResult {
    let name = name(p)?;
    let kept_disk = st.vms.remove(&name, Removal::AbortIncoming).await?;
    let deleted = Deleted {
        deleted: name,
        kept_disk,
    };
    ok(StatusCode::OK, deleted)
}

async fn metrics_json(State(st): St) -> ApiResult {
    ok(StatusCode::OK, st.metrics.json(st.power.current().state()))
}

async fn metrics_prometheus(State(st): St) -> ApiResult {
    let text = st
        .metrics
        .prometheus(st.power.current().state())
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
