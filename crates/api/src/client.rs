//! The typed HTTP client of the agent API, used by the CLI, by agents talking to each other (the
//! migration source drives the destination through it) and by the manager. Every method takes
//! and returns this crate's types; requests are checked with the same rules the agent applies
//! before they are sent.

use crate::metrics::Metrics;
use crate::migration::{IncomingReply, IncomingRequest, MigrationRecord, MigrationRequest};
use crate::power::Power;
use crate::qmp::{ForwardedQmp, QmpReply, QmpReturn};
use crate::uri::AgentUrl;
use crate::vm::{Committed, Deleted, Health, VmConfig, VmView, WallSample};
use crate::workload::WorkloadChange;
use crate::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use thiserror::Error;

/// What can go wrong calling an agent.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ClientError {
    #[error("cannot reach agent {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("agent {url} answered {status}: {message}")]
    Api {
        url: String,
        status: u16,
        message: String,
        /// QEMU's error class when the agent forwarded a QMP command that QEMU refused.
        qmp_class: Option<String>,
        qmp_desc: Option<String>,
    },
    #[error("agent {url} sent an unreadable reply: {message}")]
    Decode { url: String, message: String },
    /// The reply's body is longer than `limit` bytes ([`MAX_REPLY_BYTES`]); the client
    /// stopped reading there.
    #[error("agent {url} sent a reply over {limit} bytes; the client reads at most {limit} bytes")]
    TooLarge { url: String, limit: usize },
    /// The request breaks a rule of the API; it was not sent.
    #[error("not sent: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The HTTP status, when the agent answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One agent, addressed by base URL and authenticated by the shared bearer token.
#[derive(Debug, Clone)]
pub struct AgentClient {
    base: AgentUrl,
    token: String,
    http: reqwest::Client,
}

/// Largest reply body the client reads, bytes (8 MiB). The biggest honest reply, a VM's
/// sample history or a list of migration records, is well under 1 MiB; a peer that sends more
/// (a fake or broken agent) is cut off at this size instead of filling the caller's memory.
pub const MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;

/// Connect timeout for every call, and the whole-call timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl AgentClient {
    pub fn new(base: AgentUrl, token: &str) -> Self {
        Self::with_timeout(base, token, CALL_TIMEOUT)
    }

    /// A client whose calls give up after `timeout` (the manager polls many agents and must not
    /// wait a minute for one that hangs).
    pub fn with_timeout(base: AgentUrl, token: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        AgentClient {
            base,
            token: token.to_string(),
            http,
        }
    }

    pub fn base(&self) -> &AgentUrl {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(bytes) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status();
        let bytes = read_bounded(resp, &url, MAX_REPLY_BYTES).await?;
        if !status.is_success() {
            let err: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
            return Err(ClientError::Api {
                url,
                status: status.as_u16(),
                message: err
                    .as_ref()
                    .map(|e| e.error.clone())
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect()),
                qmp_class: err.as_ref().and_then(|e| e.qmp_class.clone()),
                qmp_desc: err.and_then(|e| e.qmp_desc),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
            message: e.to_string(),
        })
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(reqwest::Method::GET, "/v1/health", None).await
    }

    pub async fn list_vms(&self) -> Result<Vec<VmView>, ClientError> {
        self.call(reqwest::Method::GET, "/v1/vms", None).await
    }

    pub async fn get_vm(&self, name: &str) -> Result<VmView, ClientError> {
        let name = checked_name(name)?;
        self.call(reqwest::Method::GET, &format!("/v1/vms/{name}"), None)
            .await
    }

    /// Creates and starts a VM.
    pub async fn create_vm(&self, config: &VmConfig) -> Result<VmView, ClientError> {
        config
            .validate()
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.call(reqwest::Method::POST, "/v1/vms", json(config)?)
            .await
    }

    pub async fn delete_vm(&self, name: &str) -> Result<Deleted, ClientError> {
        let name = checked_name(name)?;
        self.call(reqwest::Method::DELETE, &format!("/v1/vms/{name}"), None)
            .await
    }

    /// The VM's workload reports, wall-clock stamped.
    pub async fn samples(&self, name: &str) -> Result<Vec<WallSample>, ClientError> {
        let name = checked_name(name)?;
        self.call(
            reqwest::Method::GET,
            &format!("/v1/vms/{name}/samples"),
            None,
        )
        .await
    }

    /// Starts migrating VM `name` as `req` says; returns the record at once (`preparing`).
    pub async fn migrate(
        &self,
        name: &str,
        req: &MigrationRequest,
    ) -> Result<MigrationRecord, ClientError> {
        let name = checked_name(name)?;
        req.knobs
            .validate()
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.call(
            reqwest::Method::POST,
            &format!("/v1/vms/{name}/migrations"),
            json(req)?,
        )
        .await
    }

    pub async fn migration(&self, id: &str) -> Result<MigrationRecord, ClientError> {
        let id = checked_id(id)?;
        self.call(reqwest::Method::GET, &format!("/v1/migrations/{id}"), None)
            .await
    }

    pub async fn migrations(&self) -> Result<Vec<MigrationRecord>, ClientError> {
        self.call(reqwest::Method::GET, "/v1/migrations", None)
            .await
    }

    /// Asks a migration to stop (refused once post-copy has started).
    pub async fn cancel_migration(&self, id: &str) -> Result<MigrationRecord, ClientError> {
        let id = checked_id(id)?;
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/migrations/{id}"),
            None,
        )
        .await
    }

    /// Polls until the migration's record is final, or `timeout` passes (then the last record).
    pub async fn wait_migration(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<MigrationRecord, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let m = self.migration(id).await?;
            if m.state.is_final() || tokio::time::Instant::now() >= deadline {
                return Ok(m);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Changes VM `name`'s running workload to `spec` (same kind; a memtouch working set may
    /// shrink or stay). Returns once the agent has checked and recorded it; the guest applies
    /// it soon after ([`AgentClient::wait_workload`] waits for that).
    pub async fn set_workload(&self, name: &str, spec: &str) -> Result<VmView, ClientError> {
        let name = checked_name(name)?;
        crate::names::WORKLOAD_SHAPE
            .check(spec)
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let body = WorkloadChange {
            workload: spec.to_string(),
        };
        self.call(
            reqwest::Method::POST,
            &format!("/v1/vms/{name}/workload"),
            json(&body)?,
        )
        .await
    }

    /// Polls VM `name` until its guest reports running its recorded workload, or `timeout`
    /// passes (then the last view: check `workload_pending` and `workload_report.refused`).
    pub async fn wait_workload(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<VmView, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self.get_vm(name).await?;
            let applied = !v.workload_pending && v.workload_report.spec.is_some();
            if applied || tokio::time::Instant::now() >= deadline {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Puts the host in standby (refused, 409, while it runs VMs or migrations).
    pub async fn standby(&self) -> Result<Power, ClientError> {
        self.call(reqwest::Method::POST, "/v1/standby", None).await
    }

    /// Wakes the host: `waking` for its wake delay, then `active` (a no-op when active).
    pub async fn wake(&self) -> Result<Power, ClientError> {
        self.call(reqwest::Method::POST, "/v1/wake", None).await
    }

    pub async fn metrics(&self) -> Result<Metrics, ClientError> {
        self.call(reqwest::Method::GET, "/v1/metrics", None).await
    }

    /// Agent to agent: asks for an incoming QEMU for `req.config`.
    pub async fn incoming(&self, req: &IncomingRequest) -> Result<IncomingReply, ClientError> {
        req.config
            .validate()
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.call(reqwest::Method::POST, "/v1/incoming", json(req)?)
            .await
    }

    pub async fn commit_incoming(&self, name: &str) -> Result<Committed, ClientError> {
        let name = checked_name(name)?;
        self.call(
            reqwest::Method::POST,
            &format!("/v1/incoming/{name}/commit"),
            None,
        )
        .await
    }

    pub async fn abort_incoming(&self, name: &str) -> Result<Deleted, ClientError> {
        let name = checked_name(name)?;
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/incoming/{name}"),
            None,
        )
        .await
    }

    /// Agent to agent: runs one forwardable QMP command on incoming VM `name`.
    pub async fn qmp(&self, name: &str, cmd: &ForwardedQmp) -> Result<QmpReturn, ClientError> {
        let name = checked_name(name)?;
        let reply: QmpReply = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/vms/{name}/qmp"),
                json(cmd)?,
            )
            .await?;
        Ok(reply.ret)
    }
}

/// The reply's body, read chunk by chunk and refused as soon as it passes `limit` bytes (at
/// once when its `Content-Length` says so), so a peer cannot make the caller hold more.
async fn read_bounded(
    mut resp: reqwest::Response,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, ClientError> {
    let too_large = || ClientError::TooLarge {
        url: url.to_string(),
        limit,
    };
    let announced = resp.content_length().unwrap_or(0);
    if announced > limit as u64 {
        return Err(too_large());
    }
    // The announced length is only a hint to size the buffer (at most `limit`).
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(limit).min(limit));
    loop {
        let chunk = resp.chunk().await.map_err(|e| ClientError::Unreachable {
            url: url.to_string(),
            message: e.to_string(),
        })?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if chunk.len() > limit - body.len() {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
}

fn checked_name(name: &str) -> Result<&str, ClientError> {
    crate::names::VM_NAME_SHAPE
        .check(name)
        .map(|()| name)
        .map_err(|e| ClientError::Invalid(e.to_string()))
}

fn checked_id(id: &str) -> Result<&str, ClientError> {
    crate::names::MIGRATION_ID_SHAPE
        .check(id)
        .map(|()| id)
        .map_err(|e| ClientError::Invalid(e.to_string()))
}

/// A request body as JSON bytes.
fn json<B: Serialize>(body: &B) -> Result<Option<Vec<u8>>, ClientError> {
    serde_json::to_vec(body)
        .map(Some)
        .map_err(|e| ClientError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A fake agent on loopback answering every request with a JSON body of `len` bytes,
    /// announced by Content-Length or chunked; returns its base URL.
    async fn fake_peer(len: usize, chunked: bool) -> AgentUrl {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let head = if chunked {
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         transfer-encoding: chunked\r\n\r\n"
                            .to_string()
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                             content-length: {len}\r\n\r\n"
                        )
                    };
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    // `"xxxx...x"`: a JSON string of `len` bytes, sent in 64 KiB pieces.
                    let mut left = len;
                    let piece = vec![b'x'; 64 * 1024];
                    let mut first = true;
                    while left > 0 {
                        let n = left.min(piece.len());
                        let mut data = piece[..n].to_vec();
                        if first {
                            data[0] = b'"';
                            first = false;
                        }
                        if left == n {
                            data[n - 1] = b'"';
                        }
                        let sent = if chunked {
                            let mut framed = format!("{n:x}\r\n").into_bytes();
                            framed.extend_from_slice(&data);
                            framed.extend_from_slice(b"\r\n");
                            sock.write_all(&framed).await
                        } else {
                            sock.write_all(&data).await
                        };
                        if sent.is_err() {
                            return; // the client hung up: what a bounded reader does
                        }
                        left -= n;
                    }
                    if chunked {
                        let _ = sock.write_all(b"0\r\n\r\n").await;
                    }
                });
            }
        });
        AgentUrl::parse(&format!("http://{addr}")).expect("url")
    }

    /// The reviewer's case: a peer answering /v1/health with 300 MB. Both the announced and
    /// the chunked forms are cut off at the limit, with an error naming the URL and the limit.
    #[tokio::test]
    async fn an_oversized_reply_is_cut_off_at_the_limit() {
        for chunked in [false, true] {
            let base = fake_peer(300 * 1024 * 1024, chunked).await;
            let client = AgentClient::new(base.clone(), "t");
            let err = client.health().await.expect_err("too large");
            assert_eq!(
                err,
                ClientError::TooLarge {
                    url: format!("{base}/v1/health"),
                    limit: MAX_REPLY_BYTES,
                },
                "chunked: {chunked}"
            );
            let text = err.to_string();
            assert!(
                text.contains("/v1/health") && text.contains("8388608"),
                "{text}"
            );
        }
    }

    /// A reply at the limit is read whole (and then judged as JSON, here the wrong type).
    #[tokio::test]
    async fn a_reply_at_the_limit_is_read() {
        for chunked in [false, true] {
            let base = fake_peer(MAX_REPLY_BYTES, chunked).await;
            let err = AgentClient::new(base, "t")
                .health()
                .await
                .expect_err("a string is no health");
            assert!(matches!(err, ClientError::Decode { .. }), "{err}");
        }
    }
}
