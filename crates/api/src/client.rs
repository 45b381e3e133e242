//! The typed HTTP client of the agent API, used by the CLI, by agents talking to each other (the
//! migration source drives the destination through it) and by the manager. Every method takes
//! and returns this crate's types; requests are checked with the same rules the agent applies
//! before they are sent.

use crate::metrics::Metrics;
use crate::migration::{IncomingReply, IncomingRequest, MigrationRecord, MigrationRequest};
use crate::power::Power;
use crate::qmp::{ForwardedQmp, QmpReply, QmpReturn};
pub use crate::transport::ClientError;
use crate::transport::{json, JsonTransport, Peer};
use crate::uri::AgentUrl;
use crate::vm::{Committed, Deleted, Health, VmConfig, VmView, WallSample};
use crate::wan::{WanPlan, WanPlanRequest};
use crate::workload::WorkloadChange;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// One agent, addressed by base URL and authenticated by the shared bearer token.
#[derive(Debug, Clone)]
pub struct AgentClient {
    t: JsonTransport,
}

/// The whole-call timeout of [`AgentClient::new`].
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`AgentClient::wait_migration`] keeps polling an agent that answers none of its
/// polls: a restart or a busy spell, not an agent gone for good.
pub const UNANSWERED_GRACE: Duration = Duration::from_secs(60);

impl AgentClient {
    pub fn new(base: AgentUrl, token: &str) -> Self {
        Self::with_timeout(base, token, CALL_TIMEOUT)
    }

    /// A client whose calls give up after `timeout` (the manager polls many agents and must not
    /// wait a minute for one that hangs).
    pub fn with_timeout(base: AgentUrl, token: &str, timeout: Duration) -> Self {
        AgentClient {
            t: JsonTransport::new(Peer::Agent, base, token, timeout),
        }
    }

    pub fn base(&self) -> &AgentUrl {
        self.t.base()
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        self.t.call(method, path, body).await
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

    /// Asks the source agent to resume post-copy `id`, left paused with its guest on the
    /// destination (202: it resumes in the background; poll the record).
    pub async fn resume_migration(&self, id: &str) -> Result<MigrationRecord, ClientError> {
        let id = checked_id(id)?;
        self.call(
            reqwest::Method::POST,
            &format!("/v1/migrations/{id}/resume"),
            None,
        )
        .await
    }

    /// Asks the source agent to give up split migration `id` whose destination QEMU died
    /// (200: the record is `abandoned`, the source's QEMU stopped, its disk kept; 409 with
    /// the reason when the destination may still hold the guest).
    pub async fn abandon_migration(&self, id: &str) -> Result<MigrationRecord, ClientError> {
        let id = checked_id(id)?;
        self.call(
            reqwest::Method::POST,
            &format!("/v1/migrations/{id}/abandon"),
            None,
        )
        .await
    }

    /// Polls until the migration's record is final, or `timeout` passes (then the last record).
    ///
    /// A poll the agent does not answer ([`ClientError::Unreachable`]: refused, reset, timed
    /// out) is tried again for up to [`UNANSWERED_GRACE`] without an answer: a busy or
    /// restarting agent keeps its migrations' records, so one lost poll says nothing of the
    /// migration, while an agent gone for good is reported within that grace, not at
    /// `timeout`. Any other error is returned at once.
    pub async fn wait_migration(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<MigrationRecord, ClientError> {
        self.wait_migration_within(id, timeout, UNANSWERED_GRACE)
            .await
    }

    async fn wait_migration_within(
        &self,
        id: &str,
        timeout: Duration,
        grace: Duration,
    ) -> Result<MigrationRecord, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut unanswered_since: Option<tokio::time::Instant> = None;
        loop {
            let now = tokio::time::Instant::now();
            match self.migration(id).await {
                Ok(m) if m.state.is_final() || now >= deadline => return Ok(m),
                Ok(_) => unanswered_since = None,
                Err(e @ ClientError::Unreachable { .. }) => {
                    let since = *unanswered_since.get_or_insert(now);
                    if now >= deadline || since.elapsed() >= grace {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, "migration poll not answered; trying again");
                }
                Err(e) => return Err(e),
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

    /// Profiles VM `name` (it must have a disk) for `req.window_s` seconds and returns the WAN
    /// fraction plan for `req`'s link (checked first with the agent's rules).
    pub async fn wan_plan(&self, name: &str, req: &WanPlanRequest) -> Result<WanPlan, ClientError> {
        let name = checked_name(name)?;
        req.validate().map_err(ClientError::Invalid)?;
        self.call(
            reqwest::Method::POST,
            &format!("/v1/vms/{name}/wan-plan"),
            json(req)?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::MigrationState;
    use drover_core::migration::{PlanKnobs, Technique};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A fake agent on loopback that hangs up on the first `drops` connections without an
    /// answer, then answers every request with `record`; returns its URL and the count of
    /// connections it took.
    async fn flaky_agent(drops: usize, record: MigrationRecord) -> (AgentUrl, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        let body = serde_json::to_vec(&record).expect("record");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    if n < drops {
                        return; // dropped: the client sees the connection closed
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                });
            }
        });
        let url = AgentUrl::parse(&format!("http://{addr}")).expect("url");
        (url, seen)
    }

    fn record(state: MigrationState) -> MigrationRecord {
        let to = AgentUrl::parse("http://198.18.0.12:7700").expect("url");
        let request = MigrationRequest {
            id: None,
            to,
            technique: Technique::Precopy,
            measure: false,
            knobs: PlanKnobs::default(),
        };
        let mut r = MigrationRecord::preparing("vm1-m1".into(), "vm1".into(), request, 1);
        r.state = state;
        r
    }

    /// Polls the agent does not answer are tried again; the final record is returned.
    #[tokio::test]
    async fn a_lost_poll_is_tried_again() {
        let (url, seen) = flaky_agent(2, record(MigrationState::Completed)).await;
        let client = AgentClient::new(url, "t");
        let m = client
            .wait_migration("vm1-m1", Duration::from_secs(30))
            .await
            .expect("completed after two lost polls");
        assert_eq!(m.state, MigrationState::Completed);
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }

    /// An agent that never answers: the wait ends after the grace, well before its timeout,
    /// with the error naming the agent.
    #[tokio::test]
    async fn an_agent_gone_for_good_ends_the_wait_after_the_grace() {
        let (url, seen) = flaky_agent(usize::MAX, record(MigrationState::Completed)).await;
        let client = AgentClient::new(url.clone(), "t");
        let started = std::time::Instant::now();
        let err = client
            .wait_migration_within(
                "vm1-m1",
                Duration::from_secs(600),
                Duration::from_millis(700),
            )
            .await
            .expect_err("never answered");
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(&url.to_string()), "{err}");
        assert!(seen.load(Ordering::SeqCst) >= 2, "tried again");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ended by the grace"
        );
    }

    /// An agent that never answers: the wait ends at its timeout with the error naming it.
    #[tokio::test]
    async fn an_agent_that_never_answers_ends_the_wait_at_its_timeout() {
        let (url, seen) = flaky_agent(usize::MAX, record(MigrationState::Completed)).await;
        let client = AgentClient::new(url.clone(), "t");
        let err = client
            .wait_migration("vm1-m1", Duration::from_millis(600))
            .await
            .expect_err("never answered");
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(&url.to_string()), "{err}");
        assert!(seen.load(Ordering::SeqCst) >= 2, "tried again");
    }
}
