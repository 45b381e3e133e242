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
