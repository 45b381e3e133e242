//! Migrations between agents: the source agent orchestrates, the destination agent serves an
//! incoming QEMU, and core's driver runs unchanged with the destination's QMP forwarded over HTTP.
//!
//! # Protocol (source agent S, destination agent D, client C)
//! ```text
//! C -> S  POST /v1/vms/{vm}/migrations {to: D, technique, ...}      -> 202 record (preparing)
//! S       plan: fixed technique, or auto (dirty-rate profile + cost model)
//! S -> D  GET /v1/health  (refused if D's agent id is S's own: a host reached twice)
//! S -> D  POST /v1/incoming {config, migration_id}                  -> {uri, recover_uri}
//!         (D starts QEMU with -incoming defer, role Incoming; both URIs are tcp:ADDRESS:PORT
//!         on the address the request reached D on; recover_uri is where D listens again to
//!         recover a paused post-copy. S refuses URIs that do not point at D.)
//! S       record: running; driver::migrate(source QMP, RemoteQmp(D, vm), uri)
//! S -> D  POST /v1/vms/{vm}/qmp {execute, arguments}  (the typed forwardable set; a URI must
//!         be the one D made)
//! C -> S  GET /v1/migrations/{id}   (live progress from the source's query-migrate)
//! on success (VM runs on D):  S -> D POST /v1/incoming/{vm}/commit; S kills its QEMU
//! on failure before post-copy: S -> D DELETE /v1/incoming/{vm}; the VM stays on S
//! S       record: measuring (workload windows; D's samples via GET /v1/vms/{vm}/samples)
//! S       record: completed | failed | cancelled, with the result record; kept forever
//! ```
//!
//! # Record state machine (persisted at every transition)
//! The record changes only through [`lifecycle::apply`] (diagram there): preparing, running,
//! measuring, then completed | failed | cancelled | paused, or, after an agent restart,
//! whatever `recover` establishes from QEMU (interrupted when it cannot).
//! `preparing` fails on peer errors: the destination URL has no host, or the destination agent
//! cannot be reached or refuses the incoming VM. Planning itself cannot fail: `auto` falls back
//! to post-copy when the VM cannot be profiled.
//! The VM is marked busy on the source from `preparing` until it leaves the host or the
//! migration ends, so it cannot be deleted or migrated twice meanwhile.

pub mod lifecycle;
mod recover;
mod run;

pub use recover::{reconcile_step, DestSeen, Reconcile, SourceSeen};

use crate::store::{Store, StoreError};
use crate::vms::VmsError;
use crate::{lock, AgentState};
use drover_api::{
    unix_ms, AgentUrl, ClientError, MigrationRecord, MigrationRequest, MigrationState,
};
use drover_qemu::qmp::QmpExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::sync::watch;

#[derive(Debug, Error)]
pub enum MigrateError {
    #[error(transparent)]
    Vms(#[from] VmsError),
    #[error("no migration '{0}'")]
    NotFound(String),
    #[error("migration '{0}' has already ended")]
    Finished(String),
    #[error("destination agent: {0}")]
    Peer(#[from] ClientError),
    #[error("the destination {0} is this host")]
    ToSelf(String),
    #[error(transparent)]
    Transition(#[from] lifecycle::TransitionError),
    #[error("a migration with id '{0}' already exists")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Entry {
    record: MigrationRecord,
    cancel: Option<watch::Sender<bool>>,
}

/// Every migration this agent was the source of.
pub struct Migrations {
    store: Store,
    map: Mutex<HashMap<String, Entry>>,
    seq: AtomicU64,
}

impl Migrations {
    /// Loads the kept records; non-final ones are reconciled by [`recover_all`].
    pub fn load(store: Store) -> Result<Self, StoreError> {
        let map = store
            .load_migrations()?
            .into_iter()
            .map(|r| {
                (
                    r.id.clone(),
                    Entry {
                        record: r,
                        cancel: None,
                    },
                )
            })
            .collect();
        Ok(Migrations {
            store,
            map: Mutex::new(map),
            seq: AtomicU64::new(0),
        })
    }

    fn new_id(&self, vm: &str) -> String {
        format!(
            "{vm}-{}-{}",
            unix_ms(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    pub fn get(&self, id: &str) -> Result<MigrationRecord, MigrateError> {
        lock(&self.map)
            .get(id)
            .map(|e| e.record.clone())
            .ok_or_else(|| MigrateError::NotFound(id.to_string()))
    }

    pub fn list(&self) -> Vec<MigrationRecord> {
        let mut v: Vec<MigrationRecord> =
            lock(&self.map).values().map(|e| e.record.clone()).collect();
        v.sort_by(|a, b| {
            a.started_unix_ms
                .cmp(&b.started_unix_ms)
                .then(a.id.cmp(&b.id))
        });
        v
    }

    /// Applies `f` to a record and persists it (the record is unchanged if `f` refuses).
    fn update<E>(
        &self,
        id: &str,
        f: impl FnOnce(&mut MigrationRecord) -> Result<(), E>,
    ) -> Result<MigrationRecord, MigrateError>
    where
        MigrateError: From<E>,
    {
        let mut map = lock(&self.map);
        let e = map
            .get_mut(id)
            .ok_or_else(|| MigrateError::NotFound(id.to_string()))?;
        let mut next = e.record.clone();
        f(&mut next)?;
        self.store.save_migration(&next)?;
        e.record = next;
        if e.record.state.is_final() {
            e.cancel = None;
        }
        Ok(e.record.clone())
    }

    /// Moves a record along its state machine ([`lifecycle::apply`]) and persists it.
    ///
    /// # Errors
    /// An event its state does not allow ([`MigrateError::Transition`]), or the store's.
    pub(crate) fn apply(
        &self,
        id: &str,
        event: lifecycle::RecordEvent,
    ) -> Result<MigrationRecord, MigrateError> {
        self.update(id, |r| lifecycle::apply(r, event, unix_ms()))
    }

    /// Records a note; persistence failures are only logged (a note must not fail a migration).
    pub(crate) fn note(&self, id: &str, note: String) {
        tracing::warn!(migration = id, "{note}");
        let _ = self.update(id, |r| {
            r.notes.push(note);
            Ok::<(), MigrateError>(())
        });
    }

    /// Asks a migration to stop; refused once it has ended (and by the driver once post-copy
    /// has started, since the guest then lives on the destination).
    pub fn cancel(&self, id: &str) -> Result<MigrationRecord, MigrateError> {
        let map = lock(&self.map);
        let e = map
            .get(id)
            .ok_or_else(|| MigrateError::NotFound(id.to_string()))?;
        match &e.cancel {
            Some(tx) if !e.record.state.is_final() => {
                let _ = tx.send(true);
                Ok(e.record.clone())
            }
            _ => Err(MigrateError::Finished(id.to_string())),
        }
    }
}

/// Whether `to` names this agent: its port, and an address this host owns (one a socket can
/// be bound to). Names are resolved; an address that does not resolve is not this host.
pub async fn is_this_host(to: &AgentUrl, listen: std::net::SocketAddr) -> bool {
    if to.port() != listen.port() {
        return false;
    }
    let Ok(addrs) = tokio::net::lookup_host((to.host(), to.port())).await else {
        return false;
    };
    addrs.into_iter().any(|a| {
        if !listen.ip().is_unspecified() {
            return a.ip() == listen.ip();
        }
        a.ip().is_loopback() || std::net::UdpSocket::bind((a.ip(), 0)).is_ok()
    })
}

/// Starts migrating `vm` as `req` asks; returns the record at once (state `preparing`).
///
/// # Errors
/// The VM is unknown, lost or busy, the destination is this host, or a migration with the
/// request's id exists.
pub async fn start(
    state: &Arc<AgentState>,
    vm: &str,
    req: MigrationRequest,
) -> Result<MigrationRecord, MigrateError> {
    state.vms.record(vm)?;
    if is_this_host(&req.to, state.listen).await {
        return Err(MigrateError::ToSelf(format!(
            "{} (VM '{vm}' already runs here)",
            req.to
        )));
    }
    let id = match &req.id {
        Some(id) => id.clone(),
        None => state.migrations.new_id(vm),
    };
    let record = MigrationRecord {
        id: id.clone(),
        vm: vm.to_string(),
        request: req,
        state: MigrationState::Preparing,
        plan: None,
        uri: None,
        started_unix_ms: unix_ms(),
        ended_unix_ms: None,
        vm_on_destination: false,
        progress: None,
        result: None,
        error: None,
        notes: vec![],
    };
    let (tx, rx) = watch::channel(false);
    {
        // The id is claimed and the VM marked busy under the map's lock, so two requests with
        // one id (a manager retrying after a crash) cannot both start.
        let mut map = lock(&state.migrations.map);
        if map.contains_key(&id) {
            return Err(MigrateError::Exists(id));
        }
        state.vms.begin_migration(vm, &id)?;
        if let Err(e) = state.store.save_migration(&record) {
            state.vms.end_migration(vm);
            return Err(e.into());
        }
        map.insert(
            id.clone(),
            Entry {
                record: record.clone(),
                cancel: Some(tx),
            },
        );
    }
    let st = state.clone();
    state.spawn(async move { run::run(st, id, rx).await });
    Ok(record)
}

/// A record with live progress: while QEMU migrates, ask the source QEMU how far it got.
pub async fn view(state: &AgentState, id: &str) -> Result<MigrationRecord, MigrateError> {
    let mut record = state.migrations.get(id)?;
    if record.state == MigrationState::Running {
        if let Ok(qmp) = state.vms.qmp_of(&record.vm) {
            if let Ok(p) = qmp.query_migrate(state.vms.clock().now_ms()).await {
                record.progress = Some(p);
            }
        }
    }
    Ok(record)
}

/// After a restart: reconciles every migration that was under way when the agent died.
pub fn recover_all(state: &Arc<AgentState>) {
    for r in state
        .migrations
        .list()
        .into_iter()
        .filter(|r| !r.state.is_final())
    {
        // The VM stays busy until its migration's fate is known.
        let _ = state.vms.begin_migration(&r.vm, &r.id);
        let st = state.clone();
        state.spawn(async move { recover::recover(st, r).await });
    }
}
