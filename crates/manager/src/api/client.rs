//! The typed client of the manager's API, for `drover host|plan|manager status` and scripts.
//! It speaks over drover-api's [`JsonTransport`] (the agent client's transport: bearer token,
//! timeouts, bounded replies, `{"error"}` bodies read into [`ClientError::Api`]) and returns the
//! types the API serves.

use super::{Health, HostDone};
use crate::handle::{HostView, Status, VmView};
use crate::store::{MigrationQuery, MigrationRow, PlanQuery};
use drover_api::transport::{JsonTransport, Method, Peer};
use drover_api::{AgentUrl, ClientError};
use drover_core::control::{Move, Plan};
use std::time::Duration;

/// How long one call may take: the manager answers reads from memory or its store, and
/// commands once its loop has run them (between looks), so a minute is generous.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// One manager, addressed by base URL and authenticated by its bearer token.
#[derive(Debug, Clone)]
pub struct ManagerClient {
    t: JsonTransport,
}

/// A host command the manager runs through its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCommand {
    /// Evacuate the host and keep it empty until undrained.
    Drain,
    /// Let the host take VMs again.
    Undrain,
    /// Wake the host from standby.
    Wake,
}

impl HostCommand {
    /// The command's name in the API's path.
    pub fn as_str(self) -> &'static str {
        match self {
            HostCommand::Drain => "drain",
            HostCommand::Undrain => "undrain",
            HostCommand::Wake => "wake",
        }
    }
}

/// A plan command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanCommand {
    /// Let a proposed plan (recommend mode) run.
    Approve,
    /// Stop a plan: its moves not yet started are dropped.
    Cancel,
}

impl PlanCommand {
    /// The command's name in the API's path.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanCommand::Approve => "approve",
            PlanCommand::Cancel => "cancel",
        }
    }
}

impl ManagerClient {
    /// A client of the manager at `base` (e.g. `http://127.0.0.1:7800`).
    pub fn new(base: AgentUrl, token: &str) -> Self {
        ManagerClient {
            t: JsonTransport::new(Peer::Manager, base, token, CALL_TIMEOUT),
        }
    }

    /// `GET /v1/health` (needs no token).
    ///
    /// # Errors
    /// [`ClientError`]: unreachable, an error answer, an unreadable reply.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.t.call(Method::GET, "/v1/health", None).await
    }

    /// The loop's state.
    ///
    /// # Errors
    /// As [`ManagerClient::health`].
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.t.call(Method::GET, "/v1/status", None).await
    }

    /// The hosts as the last look saw them.
    ///
    /// # Errors
    /// As [`ManagerClient::health`].
    pub async fn hosts(&self) -> Result<Vec<HostView>, ClientError> {
        self.t.call(Method::GET, "/v1/hosts", None).await
    }

    /// The VMs as the last look saw them.
    ///
    /// # Errors
    /// As [`ManagerClient::health`].
    pub async fn vms(&self) -> Result<Vec<VmView>, ClientError> {
        self.t.call(Method::GET, "/v1/vms", None).await
    }

    /// Plans, newest first (`state` one of core's plan state names; `limit` 0: the API's
    /// default).
    ///
    /// # Errors
    /// As [`ManagerClient::health`]; 400 for a query the API cannot read.
    pub async fn plans(&self, q: &PlanQuery) -> Result<Vec<Plan>, ClientError> {
        let mut query = Vec::new();
        if let Some(s) = &q.state {
            query.push(format!("state={}", encode(s)));
        }
        if let Some(s) = q.since_s {
            query.push(format!("since_s={s}"));
        }
        if q.limit > 0 {
            query.push(format!("limit={}", q.limit));
        }
        self.t
            .call(Method::GET, &with_query("/v1/plans", &query), None)
            .await
    }

    /// One plan with its explanation.
    ///
    /// # Errors
    /// As [`ManagerClient::health`]; 404 for an unknown plan.
    pub async fn plan(&self, id: &str) -> Result<Plan, ClientError> {
        let path = format!("/v1/plans/{}", segment("plan id", id)?);
        self.t.call(Method::GET, &path, None).await
    }

    /// Plan `id`'s moves, in the order planned.
    ///
    /// # Errors
    /// As [`ManagerClient::health`].
    pub async fn plan_moves(&self, id: &str) -> Result<Vec<Move>, ClientError> {
        let path = format!("/v1/moves?plan_id={}", segment("plan id", id)?);
        self.t.call(Method::GET, &path, None).await
    }

    /// Migration results, newest first (`vm`: only that VM's; `limit` 0: the API's default).
    ///
    /// # Errors
    /// As [`ManagerClient::health`]; 400 for a VM name of the wrong shape or a limit out of
    /// range.
    pub async fn migrations(&self, q: &MigrationQuery) -> Result<Vec<MigrationRow>, ClientError> {
        let mut query = Vec::new();
        if let Some(vm) = &q.vm {
            query.push(format!("vm={}", encode(vm)));
        }
        if q.limit > 0 {
            query.push(format!("limit={}", q.limit));
        }
        self.t
            .call(Method::GET, &with_query("/v1/migrations", &query), None)
            .await
    }

    /// The result of move `id`'s migration.
    ///
    /// # Errors
    /// As [`ManagerClient::health`]; 404 when none is stored.
    pub async fn migration(&self, id: &str) -> Result<MigrationRow, ClientError> {
        let path = format!("/v1/migrations/{}", segment("migration id", id)?);
        self.t.call(Method::GET, &path, None).await
    }

    /// Approves or cancels plan `id`; the plan afterwards.
    ///
    /// # Errors
    /// As [`ManagerClient::health`]; 404 unknown plan, 409 a plan whose state refuses it.
    pub async fn plan_command(&self, id: &str, cmd: PlanCommand) -> Result<Plan, ClientError> {
        let path = format!("/v1/plans/{}/{}", segment("plan id", id)?, cmd.as_str());
        self.t.call(Method::POST, &path, None).await
    }

    /// Drains, undrains or wakes host `name`.
    ///
    /// # Errors
    /// As [`ManagerClient::health`]; 404 unknown host, 502 the agent refused.
    pub async fn host_command(
        &self,
        name: &str,
        cmd: HostCommand,
    ) -> Result<HostDone, ClientError> {
        let path = format!("/v1/hosts/{}/{}", segment("host name", name)?, cmd.as_str());
        self.t.call(Method::POST, &path, None).await
    }
}

/// `path` with the query fields, already encoded, joined after a `?` (none: `path` alone).
fn with_query(path: &str, fields: &[String]) -> String {
    if fields.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", fields.join("&"))
    }
}

/// `text` as one path segment: refused (not sent) when empty or a dot segment, which a URL
/// parser would resolve away even percent-encoded (WHATWG URL, "double-dot path segment").
fn segment(what: &str, text: &str) -> Result<String, ClientError> {
    if text.is_empty() || text == "." || text == ".." {
        return Err(ClientError::Invalid(format!(
            "{what} '{text}': expected a name, not empty or a dot segment"
        )));
    }
    Ok(encode(text))
}

/// Percent-encodes a path segment or query value: everything but unreserved characters
/// (RFC 3986, section 2.3), so a name can neither add a path segment nor a query field.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{encode, segment};

    #[test]
    fn names_cannot_escape_their_segment() {
        assert_eq!(encode("h1"), "h1");
        assert_eq!(encode("../x"), "..%2Fx");
        assert_eq!(encode("a?b=c&d"), "a%3Fb%3Dc%26d");
        assert_eq!(encode("é"), "%C3%A9");
        for bad in ["", ".", ".."] {
            assert!(segment("host name", bad).is_err(), "{bad:?}");
        }
        assert_eq!(segment("host name", "h1").as_deref().ok(), Some("h1"));
    }
}
