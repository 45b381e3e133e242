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
    /// The reply's body is longer than `limit` bytes ([`MAX_REPLY_BYTES`]); the client
    /// stopped reading there.
    #[error(
        "{peer} {url} sent a reply over {limit} bytes; the client reads at most {limit} bytes"
    )]
    TooLarge {
        peer: Peer,
        url: String,
        limit: usize,
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

/// Largest reply body a client reads, bytes (8 MiB). The biggest honest reply, a VM's sample
/// history or a list of migration records or plans, is well under 1 MiB; a peer that sends
/// more (a fake or broken one) is cut off at this size instead of filling the caller's memory.
pub const MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;

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
        let bytes = read_bounded(peer, resp, &url, MAX_REPLY_BYTES).await?;
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

/// The reply's body, read chunk by chunk and refused as soon as it passes `limit` bytes (at
/// once when its `Content-Length` says so), so a peer cannot make the caller hold more.
async fn read_bounded(
    peer: Peer,
    mut resp: reqwest::Response,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, ClientError> {
    let too_large = || ClientError::TooLarge {
        peer,
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
            peer,
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

/// A request body as JSON bytes.
///
/// # Errors
/// [`ClientError::Invalid`] when `body` does not serialize (a map with non-string keys).
pub fn json<B: Serialize>(body: &B) -> Result<Option<Vec<u8>>, ClientError> {
    serde_json::to_vec(body)
        .map(Some)
        .map_err(|e| ClientError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::AgentClient;
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
                    peer: Peer::Agent,
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
