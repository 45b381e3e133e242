//! [`Manager`]: the in-process handle on a running control loop, for the HTTP API, the CLI
//! and tests. Cheap to clone; every method is async and safe to call from any task.
//!
//! - Reads of what the loop last saw (`hosts`, `vms`, `settings`, `status`) come from a
//!   snapshot the loop publishes after each look and command: no waiting for the loop.
//! - Reads of records (`plans`, `plan`, `moves`, `transitions`, `migrations`, `migration`,
//!   `decision`, `events`, `vm_history`) go to the store, on the blocking pool.
//! - Commands (`approve`, `cancel_plan`, `drain`, `undrain`, `wake`, `patch_settings`,
//!   `shutdown`) are queued into the loop, which runs them between looks under the loop's
//!   rule (stored before acted on) and answers; they wait for that answer.
//!
//! Errors ([`ManagerError`]) say what an API maps to a status: unknown plan, host or
//! migration (404),
//! a plan whose state refuses the operation or whose premises vanished (409), settings that
//! are invalid (422) or changed since read (409), the store or an agent failing (5xx), the
//! loop gone (503).

use crate::fleet::AgentSight;
use crate::store::{
    History, JournalQuery, JournalRow, MigrationQuery, MigrationRow, MoveQuery, PlanQuery,
    SeriesKey, SettingsRecord, Store, StoreError, Transition,
};
use drover_core::control::{
    ControlError, ControlState, Decision, Mode, Move, Observation, Plan, PlanError, PowerState,
    VmPresence,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// Why a handle's call failed.
#[derive(Debug, Error)]
pub enum ManagerError {
    #[error("no plan {0}")]
    UnknownPlan(String),
    #[error("no host {0}")]
    UnknownHost(String),
    /// No result stored under this move id (no such move, or its migration has not ended).
    #[error("no migration result {0} (a move's id; its result is stored once the migration ends)")]
    UnknownMigration(String),
    /// The plan's state does not allow the operation (approving a done plan).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A proposal's premises vanished: it was expired (and that is stored), not approved.
    #[error("plan {plan} no longer holds: {why}")]
    Expired { plan: String, why: String },
    /// Settings whose values break a limit or are outside their set; nothing changed.
    #[error("settings: {0}")]
    Settings(String),
    /// A settings patch of the wrong structure (a wrong JSON type, an unknown field); nothing
    /// changed.
    #[error("settings: {0}")]
    SettingsShape(String),
    /// The settings changed since the caller read them; nothing changed.
    #[error("settings are at version {found}, not {expected}: read them again")]
    SettingsConflict { expected: u64, found: u64 },
    /// The agent refused or could not be reached (the outcome is recorded).
    #[error("agent: {0}")]
    Agent(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The loop is not running (stopped, or gone).
    #[error("the manager's loop is not running")]
    Stopped,
}

impl From<ControlError> for ManagerError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::UnknownPlan(p) => ManagerError::UnknownPlan(p),
            ControlError::UnknownHost(h) => ManagerError::UnknownHost(h),
            ControlError::Plan(p) => ManagerError::Plan(p),
            ControlError::Expired { plan, why, .. } => ManagerError::Expired { plan, why },
        }
    }
}

/// A command for the loop.
pub(crate) struct Command {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Reply, ManagerError>>,
}

pub(crate) enum Op {
    Approve(String),
    CancelPlan(String),
    Drain(String),
    Undrain(String),
    Wake(String),
    PatchSettings {
        patch: serde_json::Value,
        expected_version: Option<u64>,
    },
    Shutdown,
}

pub(crate) enum Reply {
    Done,
    Settings(Box<SettingsRecord>),
}

/// The store's health as the loop sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StoreHealth {
    /// The file (or `memory`).
    pub location: String,
    /// Writes failed in a row (0: healthy); while above 0 the loop acts on nothing.
    pub failures_in_a_row: u32,
    pub last_error: Option<String>,
}

/// The loop's state, for `drover manager status` and monitoring.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Status {
    /// When the loop started, s (manager clock).
    pub started_s: f64,
    /// Manager time when this was published, s.
    pub now_s: f64,
    /// Looks since start.
    pub looks: u64,
    /// How long the last look took, ms (observe to outcomes stored).
    pub last_look_ms: Option<f64>,
    /// When the next look is due, s.
    pub next_look_s: f64,
    pub mode: Option<Mode>,
    pub settings_version: u64,
    /// Hosts in the last observation, and how many were reachable.
    pub hosts: usize,
    pub reachable: usize,
    /// Plans proposed or approved.
    pub plans_active: usize,
    /// Moves requested or running.
    pub moves_in_flight: usize,
    /// Energy the hosts drew since the store was made, Wh (the settings' power model).
    pub energy_wh: f64,
    pub store: StoreHealth,
}

/// A host as the last look saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostView {
    pub name: String,
    pub reachable: bool,
    /// Whether its agent answered the last poll, polls missed in a row, and why.
    pub answered: bool,
    pub misses: u32,
    pub error: Option<String>,
    pub power: PowerState,
    /// Capacity, cores and bytes.
    pub cpus: f64,
    pub memory_bytes: u64,
    /// What its VMs want, cores; over `cpus`: its load.
    pub cpu_demand_cores: f64,
    pub load: f64,
    /// Memory given to its VMs, bytes.
    pub memory_allocated_bytes: u64,
    /// Looks in a row above `hot`.
    pub hot_streak: u32,
    /// An operator drains it.
    pub drained: bool,
    /// The VMs it runs or receives.
    pub vms: Vec<String>,
}

/// A VM as the last look saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmView {
    pub name: String,
    pub host: String,
    pub presence: VmPresence,
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// What it wants, cores.
    pub cpu_demand_cores: f64,
    /// Measured page dirty rate, bytes/s.
    pub dirty_rate_bps: Option<f64>,
    /// The migration it takes part in.
    pub migration: Option<String>,
    /// When its last move ended, s (cooldowns count from it).
    pub last_moved_s: Option<f64>,
}

/// What the loop publishes for the handle. The views of hosts and VMs are built when they
/// are asked for, from the look the loop shares (its observation and agents, not copied) and
/// what they need of its memory: publishing costs a look next to nothing at 10,000 VMs.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    status: Status,
    obs: Arc<Observation>,
    agents: Arc<Vec<AgentSight>>,
    /// Per host of `obs`, in its order: looks in a row above `hot`.
    hot_streaks: Vec<u32>,
    drained: BTreeSet<String>,
    /// Per VM of `obs`, host by host in its order: when its last move ended, s.
    last_moved_s: Vec<Option<f64>>,
    settings: Option<SettingsRecord>,
}

impl Shared {
    pub(crate) fn new(location: &str, now_s: f64) -> Shared {
        Shared {
            status: Status {
                started_s: now_s,
                now_s,
                store: StoreHealth {
                    location: location.to_string(),
                    ..StoreHealth::default()
                },
                ..Status::default()
            },
            ..Shared::default()
        }
    }

    pub(crate) fn update(
        &mut self,
        mut status: Status,
        obs: &Arc<Observation>,
        agents: &Arc<Vec<AgentSight>>,
        state: &ControlState,
        settings: &SettingsRecord,
    ) {
        status.started_s = self.status.started_s;
        self.status = status;
        self.obs = obs.clone();
        self.agents = agents.clone();
        self.hot_streaks = obs
            .hosts
            .iter()
            .map(|h| state.hosts.get(&h.name).map_or(0, |m| m.hot_streak))
            .collect();
        self.drained.clone_from(&state.drained);
        self.last_moved_s = obs
            .hosts
            .iter()
            .flat_map(|h| &h.vms)
            .map(|v| state.vms.get(&v.name).and_then(|m| m.last_moved_s))
            .collect();
        if self.settings.as_ref() != Some(settings) {
            self.settings = Some(settings.clone());
        }
    }

    fn hosts(&self) -> Vec<HostView> {
        // Agents are in inventory order like the hosts, but look each up by name: a list
        // search per host would be quadratic in the hosts.
        let by_host: HashMap<&str, &AgentSight> =
            self.agents.iter().map(|a| (a.host.as_str(), a)).collect();
        self.obs
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let agent = by_host.get(h.name.as_str()).copied();
                HostView {
                    name: h.name.clone(),
                    reachable: h.reachable,
                    answered: agent.is_some_and(|a| a.answered),
                    misses: agent.map_or(0, |a| a.misses),
                    error: agent.and_then(|a| a.error.clone()),
                    power: h.power,
                    cpus: h.cpus,
                    memory_bytes: h.memory_bytes,
                    cpu_demand_cores: h.cpu_demand_cores,
                    load: h.load(),
                    memory_allocated_bytes: h.memory_allocated(),
                    hot_streak: self.hot_streaks.get(i).copied().unwrap_or(0),
                    drained: self.drained.contains(&h.name),
                    vms: h.vms.iter().map(|v| v.name.clone()).collect(),
                }
            })
            .collect()
    }

    fn vms(&self) -> Vec<VmView> {
        self.obs
            .hosts
            .iter()
            .flat_map(|h| h.vms.iter().map(move |v| (h, v)))
            .enumerate()
            .map(|(i, (h, v))| VmView {
                name: v.name.clone(),
                host: h.name.clone(),
                presence: v.presence,
                vcpus: v.vcpus,
                memory_bytes: v.memory_bytes,
                cpu_demand_cores: v.cpu_demand_cores,
                dirty_rate_bps: v.dirty_rate_bps,
                migration: v.migration.clone(),
                last_moved_s: self.last_moved_s.get(i).copied().flatten(),
            })
            .collect()
    }
}

/// The handle on a running loop.
#[derive(Clone)]
pub struct Manager {
    commands: mpsc::Sender<Command>,
    store: Arc<dyn Store>,
    shared: Arc<RwLock<Shared>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("store", &self.store.location())
            .finish_non_exhaustive()
    }
}

impl Manager {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        store: Arc<dyn Store>,
        shared: Arc<RwLock<Shared>>,
    ) -> Manager {
        Manager {
            commands,
            store,
            shared,
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Shared) -> T) -> T {
        // The loop replaces whole fields: a panic while it held the lock left them whole.
        f(&self
            .shared
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Runs a store read on the blocking pool (SQLite calls block).
    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ManagerError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|_| ManagerError::Stopped)?
            .map_err(ManagerError::Store)
    }

    async fn send(&self, op: Op) -> Result<Reply, ManagerError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command { op, reply })
            .await
            .map_err(|_| ManagerError::Stopped)?;
        answer.await.map_err(|_| ManagerError::Stopped)?
    }

    async fn done(&self, op: Op) -> Result<(), ManagerError> {
        self.send(op).await.map(|_| ())
    }

    /// Every host of the last look, in inventory order.
    pub async fn hosts(&self) -> Vec<HostView> {
        self.read(Shared::hosts)
    }

    /// Every VM of the last look, by host in inventory order (an incoming copy is listed on
    /// its destination too).
    pub async fn vms(&self) -> Vec<VmView> {
        self.read(Shared::vms)
    }

    /// The loop's state.
    pub async fn status(&self) -> Status {
        self.read(|s| s.status.clone())
    }

    /// The settings the loop runs with, and their version.
    pub async fn settings(&self) -> Option<SettingsRecord> {
        self.read(|s| s.settings.clone())
    }

    /// Plans, newest first ([`PlanQuery`]: state, since, limit).
    pub async fn plans(&self, query: PlanQuery) -> Result<Vec<Plan>, ManagerError> {
        let rows = self.store(move |s| s.plans(&query)).await?;
        Ok(rows.into_iter().map(|r| r.body).collect())
    }

    /// One plan, explanation included.
    pub async fn plan(&self, id: &str) -> Result<Plan, ManagerError> {
        let key = id.to_string();
        self.store(move |s| s.plan(&key))
            .await?
            .map(|r| r.body)
            .ok_or_else(|| ManagerError::UnknownPlan(id.to_string()))
    }

    /// Moves, in the order they were planned ([`MoveQuery`]: plan, VM, state, limit).
    pub async fn moves(&self, query: MoveQuery) -> Result<Vec<Move>, ManagerError> {
        let rows = self.store(move |s| s.moves(&query)).await?;
        Ok(rows.into_iter().map(|r| r.body).collect())
    }

    /// A move's state changes, in order.
    pub async fn transitions(&self, move_id: &str) -> Result<Vec<Transition>, ManagerError> {
        let id = move_id.to_string();
        self.store(move |s| s.transitions(&id)).await
    }

    /// Migration results, newest first ([`MigrationQuery`]: VM, limit), each with its move.
    pub async fn migrations(
        &self,
        query: MigrationQuery,
    ) -> Result<Vec<MigrationRow>, ManagerError> {
        self.store(move |s| s.migrations(&query)).await
    }

    /// The migration result of move `move_id`.
    pub async fn migration(&self, move_id: &str) -> Result<MigrationRow, ManagerError> {
        let key = move_id.to_string();
        self.store(move |s| s.migration(&key))
            .await?
            .ok_or_else(|| ManagerError::UnknownMigration(move_id.to_string()))
    }

    /// What the step that made plan `id` decided from, replayable.
    pub async fn decision(&self, plan_id: &str) -> Result<Decision, ManagerError> {
        let id = plan_id.to_string();
        self.store(move |s| s.export_decision(&id)).await
    }

    /// The event journal ([`JournalQuery`]: time range, subject, id, paging, limit).
    pub async fn events(&self, query: JournalQuery) -> Result<Vec<JournalRow>, ManagerError> {
        self.store(move |s| s.journal(&query)).await
    }

    /// VM `name`'s metric history since `since_s` (kept across restarts).
    pub async fn vm_history(&self, name: &str, since_s: f64) -> Result<History, ManagerError> {
        let key = SeriesKey::vm(name);
        self.store(move |s| s.history(&key, since_s)).await
    }

    /// Approves a proposed plan (recommend mode) once its premises still hold; its moves
    /// start at the next look.
    pub async fn approve(&self, plan_id: &str) -> Result<(), ManagerError> {
        self.done(Op::Approve(plan_id.to_string())).await
    }

    /// Cancels a proposed or approved plan; moves already running are asked to stop.
    pub async fn cancel_plan(&self, plan_id: &str) -> Result<(), ManagerError> {
        self.done(Op::CancelPlan(plan_id.to_string())).await
    }

    /// Drains a host: its VMs leave and none arrive until [`Manager::undrain`].
    pub async fn drain(&self, host: &str) -> Result<(), ManagerError> {
        self.done(Op::Drain(host.to_string())).await
    }

    pub async fn undrain(&self, host: &str) -> Result<(), ManagerError> {
        self.done(Op::Undrain(host.to_string())).await
    }

    /// Wakes a host in standby now.
    pub async fn wake(&self, host: &str) -> Result<(), ManagerError> {
        self.done(Op::Wake(host.to_string())).await
    }

    /// Changes settings with a JSON merge patch (`{"mode": "recommend"}`); with
    /// `expected_version`, refused unless the settings are still at that version. Returns the
    /// new settings.
    pub async fn patch_settings(
        &self,
        patch: serde_json::Value,
        expected_version: Option<u64>,
    ) -> Result<SettingsRecord, ManagerError> {
        match self
            .send(Op::PatchSettings {
                patch,
                expected_version,
            })
            .await?
        {
            Reply::Settings(s) => Ok(*s),
            Reply::Done => Err(ManagerError::Stopped),
        }
    }

    /// Switches the mode (`auto`, `recommend`, `dry-run`) from the next look on; a settings
    /// change like any other (a new version, journaled). Returns the new settings.
    ///
    /// # Errors
    /// [`ManagerError::Store`] when it cannot be stored (the mode is then unchanged);
    /// [`ManagerError::Stopped`] when the loop is not running.
    pub async fn set_mode(&self, mode: Mode) -> Result<SettingsRecord, ManagerError> {
        let patch = serde_json::json!({ "mode": mode });
        self.patch_settings(patch, None).await
    }

    /// Stops the loop after its current look (the store keeps everything).
    pub async fn shutdown(&self) -> Result<(), ManagerError> {
        self.done(Op::Shutdown).await
    }
}
