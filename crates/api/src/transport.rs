//! JSON over HTTP with a bearer token: the one transport of Drover's typed clients (the agent
//! client here, the manager client in drover-manager). A call sends an optional JSON body,
//! reads the answer, and turns an error status with an `{"error": ...}` body into
//! [`ClientError::Api`], so every client reports failures the same way.

use crate::uri::AgentUrl;
use crate::ErrorBody;
pub use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use thiserror::Error;

/// Which kind of Drover server a client talks to, for its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A host's agent.
    Agent,
    /// The cluster manager.
    Manager,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Peer::Agent => "agent",
            Peer::Manager => "manager",
        })
    }
}

/// What can go wrong calling an agent or the manager.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ClientError {
    #[error("cannot reach {peer} {url}: {message}")]
    Unreachable {
        peer: Peer,
        url: String,
        message: String,
    },
    #[error("{peer} {url} answered {status}: {message}")]
    Api {
        peer: Peer,
        url: String,
        status: u16,
        message: String,
        /// QEMU's error class when the agent forwarded a QMP command that QEMU refused.
        qmp_class: Option<String>,
        qmp_desc: Option<String>,
    },
    #[error("{peer} {url} sent an unreadable reply: {message}")]
    Decode {
        peer: Peer,
        url: String,
        message: String,
    },
    /// The request breaks a rule of the API; it was not sent.
    #[error("not sent: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Connect timeout of every call (at most the call's own timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One server: its base URL, its bearer token, and an HTTP client with the call timeout.
#[derive(Debug, Clone)]
pub struct JsonTransport {
    peer: Peer,
    base: AgentUrl,
    token: String,
    http: reqwest::Client,
}

impl JsonTransport {
    /// A transport to `base` whose calls give up after `timeout`.
    pub fn new(peer: Peer, base: AgentUrl, token: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        JsonTransport {
            peer,
            base,
            token: token.to_string(),
            http,
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &AgentUrl {
        &self.base
    }

    /// `method path` with `body` (JSON bytes), the answer read as `T`.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] (no connection, timeout, reading the reply failed),
    /// [`ClientError::Api`] (an error status, with the server's message),
    /// [`ClientError::Decode`] (a success whose body is not a `T`).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let peer = self.peer;
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(bytes) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let unreachable = |e: reqwest::Error, url: &str| ClientError::Unreachable {
            peer,
            url: url.to_string(),
            message: e.to_string(),
        };
        let resp = req.send().await.map_err(|e| unreachable(e, &url))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| unreachable(e, &url))?;
        if !status.is_success() {
            let err: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
            return Err(ClientError::Api {
                peer,
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
            peer,
            url,
            message: e.to_string(),
        })
    }
}

/// A request body as JSON bytes.
///
/// # Errors
/// [`ClientError::Invalid`] when `body` does not serialize (a map with non-string keys).
pub fn json<B: Serialize>(body: &B) -> Result<Option<Vec<u8>>, ClientError> {
    serde_json::to_vec(body)
        .map(Some)
        .map_err(|e| ClientError::Invalid(e.to_string()))
}
