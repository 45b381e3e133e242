//! A typed HTTP client for the agent API, used by the CLI and by agents talking to each other
//! (the migration source drives the destination through it), plus [`RemoteQmp`]: a [`Qmp`] whose
//! commands run on a VM behind another agent, so the migration driver works unchanged across
//! hosts.

use crate::model::{
    IncomingReply, IncomingRequest, MigrationRecord, MigrationRequest, VmView, WallSample,
};
use async_trait::async_trait;
use drover_qemu::qmp::{Qmp, QmpError, QmpEvent};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::time::Duration;
use thiserror::Error;

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
}

impl ClientError {
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
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AgentClient {
    pub fn new(base: &str, token: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        AgentClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
        if !status.is_success() {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            return Err(ClientError::Api {
                url,
                status: status.as_u16(),
                message: s("error")
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect()),
                qmp_class: s("qmp_class"),
                qmp_desc: s("qmp_desc"),
            });
        }
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
            url,
            message: e.to_string(),
        })
    }

    pub async fn health(&self) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, "/v1/health", None).await
    }

    pub async fn list_vms(&self) -> Result<Vec<VmView>, ClientError> {
        self.call(reqwest::Method::GET, "/v1/vms", None).await
    }

    pub async fn get_vm(&self, name: &str) -> Result<VmView, ClientError> {
        self.call(reqwest::Method::GET, &format!("/v1/vms/{name}"), None)
            .await
    }

    /// `body` as `POST /v1/vms` takes it (see the OpenAPI document).
    pub async fn create_vm(&self, body: &Value) -> Result<VmView, ClientError> {
        self.call(reqwest::Method::POST, "/v1/vms", Some(body))
            .await
    }

    pub async fn delete_vm(&self, name: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::DELETE, &format!("/v1/vms/{name}"), None)
            .await
    }

    pub async fn samples(&self, name: &str) -> Result<Vec<WallSample>, ClientError> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/vms/{name}/samples"),
            None,
        )
        .await
    }

    /// Starts a migration; `body` as `POST /v1/vms/{name}/migrations` takes it.
    pub async fn migrate(&self, name: &str, body: &Value) -> Result<MigrationRecord, ClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/vms/{name}/migrations"),
            Some(body),
        )
        .await
    }

    /// Starts a migration from a typed request.
    pub async fn migrate_request(
        &self,
        name: &str,
        req: &MigrationRequest,
    ) -> Result<MigrationRecord, ClientError> {
        let body = serde_json::to_value(req).map_err(|e| ClientError::Decode {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        self.migrate(name, &body).await
    }

    pub async fn migration(&self, id: &str) -> Result<MigrationRecord, ClientError> {
        self.call(reqwest::Method::GET, &format!("/v1/migrations/{id}"), None)
            .await
    }

    pub async fn migrations(&self) -> Result<Vec<MigrationRecord>, ClientError> {
        self.call(reqwest::Method::GET, "/v1/migrations", None)
            .await
    }

    pub async fn cancel_migration(&self, id: &str) -> Result<MigrationRecord, ClientError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/migrations/{id}"),
            None,
        )
        .await
    }

    /// Polls until the migration's record is final.
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

    pub async fn metrics(&self) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, "/v1/metrics", None).await
    }

    pub async fn incoming(&self, req: &IncomingRequest) -> Result<IncomingReply, ClientError> {
        let body = serde_json::to_value(req).map_err(|e| ClientError::Decode {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        self.call(reqwest::Method::POST, "/v1/incoming", Some(&body))
            .await
    }

    pub async fn commit_incoming(&self, name: &str) -> Result<Value, ClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/incoming/{name}/commit"),
            None,
        )
        .await
    }

    pub async fn abort_incoming(&self, name: &str) -> Result<Value, ClientError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/incoming/{name}"),
            None,
        )
        .await
    }

    /// Runs one allowlisted QMP command on VM `name` behind this agent.
    pub async fn qmp(
        &self,
        name: &str,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, ClientError> {
        let body = json!({ "execute": command, "arguments": arguments });
        let v: Value = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/vms/{name}/qmp"),
                Some(&body),
            )
            .await?;
        Ok(v.get("return").cloned().unwrap_or(Value::Null))
    }
}

/// QMP to a VM behind another agent (the migration destination).
pub struct RemoteQmp {
    pub client: AgentClient,
    pub vm: String,
}

#[async_trait]
impl Qmp for RemoteQmp {
    async fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        self.client
            .qmp(&self.vm, command, arguments)
            .await
            .map_err(|e| match e {
                ClientError::Api {
                    qmp_class: Some(class),
                    qmp_desc,
                    ..
                } => QmpError::Command {
                    command: command.to_string(),
                    class,
                    desc: qmp_desc.unwrap_or_default(),
                },
                // The VM vanished on the far side: to the driver that is a closed QMP connection.
                ClientError::Api {
                    status: 404 | 409, ..
                } => QmpError::Closed,
                other => QmpError::Io(other.to_string()),
            })
    }

    fn take_events(&self) -> Vec<QmpEvent> {
        // The driver polls; events are not forwarded between agents.
        Vec::new()
    }
}
