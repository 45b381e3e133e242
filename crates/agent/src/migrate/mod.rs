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
//! whatever `recover` establishes from QEMU (interrupted when it cannot); a split post-copy
//! (failed or paused after the switch) ends `completed` when settled, or `abandoned` when the
//! operator gives it up after its destination QEMU died (`abandon.rs`).
//! `preparing` fails on peer errors: the destination URL has no host, or the destination agent
//! cannot be reached or refuses the incoming VM. Planning itself cannot fail: `auto` falls back
//! to post-copy when the VM cannot be profiled.
//! The VM is marked busy on the source from `preparing` until it leaves the host or the
//! migration ends, so it cannot be deleted or migrated twice meanwhile. Once the source QEMU
//! enters post-copy the record says `vm_on_destination` at once (persisted) and the source VM
//! shows as `moved`; a post-copy that does not complete (paused part-way, or failed after the
//! switch) keeps the source VM held, since its QEMU has the rest of the guest's memory. Cancel is
//! refused from the switch on, by the record or by what the source QEMU says.
//!
//! A post-copy the run left `paused` (a cut link) is resumed by this agent once the destination
//! answers again, measured or not (a paused run is never `measuring`: `lifecycle`), within
//! the request's `resume_window_s` (`resume.rs`, decisions in
//! `drover_core::migration::resume`): the record stays `paused` until the settle makes it
//! `completed`; a link that does not return leaves it `paused`, both QEMUs kept. One whose
//! destination QEMU died is lost in memory terms: the operator gives it up with
//! `POST /v1/migrations/{id}/abandon` (`abandon.rs`), which stops the source's QEMU, keeps
//! every disk file and records it `abandoned`.
//!
//! A VM with a disk migrates by storage pre-copy (the request's `storage: precopy`, the
//! default; `drover_qemu::storage`) with memory pre-copy only (`auto` picks it; post-copy and
//! hybrid are refused at the request), by storage post-copy (`storage: postcopy`, any
//! technique; `storage_pc.rs` has its protocol), or by the storage hybrid (`storage: hybrid`,
//! any technique: the hottest part of the disk pushed ahead, the rest pulled as in a
//! post-copy; `storage_hy.rs` has its protocol). For storage pre-copy S sends
//! its disk's virtual size in the incoming request; D creates an empty qcow2 target of that
//! size under the disk's name in its own storage directory (409 if the name is taken there,
//! never overwriting), starts the incoming QEMU on it and replies with the NBD address its
//! QEMU will serve the export on (the URIs' address, a port of its own; S refuses one that
//! does not point at D). S then runs `migrate_with_storage`: through the forwarded set, D's
//! QEMU starts the NBD server on exactly that address and exports exactly Drover's disk node;
//! S mirrors into it, and at `pre-switchover` ends the mirror before the guest moves. D's
//! target is D's agent's own: removed with an aborted incoming VM (it is incomplete), the
//! VM's disk once committed (deleted with it). Every failure leaves the VM running on S on
//! its own disk. The record's notes carry the storage figures.
//!
//! # When a QEMU stops answering
//! The driver (`drover_qemu::driver`) judges it, with core's machines. The source QEMU not
//! answering a poll, twice in a row, ends the run by what the source machine knew: before
//! post-copy was asked for, the driver errs and the destination's incoming QEMU is aborted
//! (the guest never left); from then on the run ends `failed` (or `paused`) with
//! `vm_on_destination`, as any post-copy that stopped part-way: both QEMUs kept, the source VM
//! held, settled (`settle.rs`) once the destination has the whole guest, at once if its QEMU
//! completes within the driver's settle time. The destination is never aborted once post-copy
//! started: a driver error is checked against this run's own watch of the switch and the
//! record (`run.rs`, `may_abort_destination`). A look at the destination that fails (an HTTP
//! error over a blipping link) is tolerated: only a row of them over seconds, or its QEMU gone,
//! marks the destination failed (`drover_core::migration::dest`).

pub mod abandon;
mod abort_retry;
pub mod lifecycle;
mod recover;
mod resume;
mod run;
mod settle;
pub mod storage_hy;
pub mod storage_pc;

pub use recover::{reconcile_step, DestSeen, Reconcile, SourceSeen};
pub use resume::resume_on_request;
pub use settle::{settle, split_migration_of, whole_on_destination};
pub use storage_pc::check_source_nbd;

use crate::store::{Store, StoreError};
use crate::vms::VmsError;
use crate::{lock, AgentState};
use drover_api::{
    unix_ms, AgentUrl, ClientError, MigrationRecord, MigrationRequest, MigrationState,
};
use drover_core::migration::{MigrationStatus, StorageMode, Technique};
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
    #[error(
        "VM '{vm}' has disk '{disk}': storage precopy moves a disk only with technique precopy \
         (or auto, which picks it); technique {technique} is refused (with storage postcopy \
         any technique moves it, as with storage hybrid)"
    )]
    DiskNeedsPrecopy {
        vm: String,
        disk: String,
        technique: Technique,
    },
    #[error(
        "cannot cancel: the migration is in post-copy and the VM already runs on the destination"
    )]
    Postcopy,
    #[error(
        "migration {id} left VM '{vm}' split (its post-copy ended here before it completed) and \
         cannot be settled: {why}; the source keeps the rest of the guest's memory"
    )]
    NotSettled { id: String, vm: String, why: String },
    /// A resume asked of a migration that is not a post-copy left paused with its guest on
    /// the destination, or that this agent is resuming already.
    #[error("migration '{id}' cannot be resumed: {why}")]
    NotResumable { id: String, why: String },
    /// An abandon asked of a migration that is no split post-copy whose destination QEMU is
    /// known to be gone (`abandon.rs`).
    #[error("migration '{id}' cannot be abandoned: {why}")]
    NotAbandonable { id: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Entry {
    record: MigrationRecord,
    cancel: Option<watch::Sender<bool>>,
    /// This agent's resume loop runs for it (`resume.rs`): one at a time.
    resuming: bool,
}

/// Every migration this agent was the source of.
pub struct Migrations {
    store: Store,
    map: Mutex<HashMap<String, Entry>>,
    seq: AtomicU64,
    /// Storage post-copy sessions a run left unfinished (`storage_pc`).
    pub(crate) postcopy: storage_pc::Sessions,
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
                        resuming: false,
                    },
                )
            })
            .collect();
        Ok(Migrations {
            store,
            map: Mutex::new(map),
            seq: AtomicU64::new(0),
            postcopy: storage_pc::Sessions::default(),
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

    /// Marks migration `id` as being resumed by this agent; false when it already is (or is
    /// unknown).
    pub fn begin_resume(&self, id: &str) -> bool {
        match lock(&self.map).get_mut(id) {
            Some(e) if !e.resuming => {
                e.resuming = true;
                true
            }
            _ => false,
        }
    }

    /// Ends what [`Migrations::begin_resume`] began.
    pub fn end_resume(&self, id: &str) {
        if let Some(e) = lock(&self.map).get_mut(id) {
            e.resuming = false;
        }
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
    /// Logged at info: a note says what happened (figures, steps), and the failures among them
    /// also end in the record's state and error.
    pub(crate) fn note(&self, id: &str, note: String) {
        tracing::info!(migration = id, "{note}");
        let _ = self.update(id, |r| {
            r.notes.push(note);
            Ok::<(), MigrateError>(())
        });
    }

    /// Asks a migration to stop; refused once it has ended or its post-copy has started
    /// (the guest then lives on the destination). See [`cancel`], which also asks QEMU.
    fn signal_cancel(&self, id: &str) -> Result<MigrationRecord, MigrateError> {
        let map = lock(&self.map);
        let e = map
            .get(id)
            .ok_or_else(|| MigrateError::NotFound(id.to_string()))?;
        cancel_refusal(&e.record, None)?;
        match &e.cancel {
            Some(tx) => {
                let _ = tx.send(true);
                Ok(e.record.clone())
            }
            None => Err(MigrateError::Finished(id.to_string())),
        }
    }
}

/// Why a cancel of `r` is refused, given the source QEMU's live migration status if known
/// (pure, for tests): it has ended (QEMU's part is over once measuring), or its post-copy has
/// started, by the record or by QEMU.
pub fn cancel_refusal(
    r: &MigrationRecord,
    live: Option<MigrationStatus>,
) -> Result<(), MigrateError> {
    if r.state.is_final() || r.state == MigrationState::Measuring {
        return Err(MigrateError::Finished(r.id.clone()));
    }
    let switched = live.is_some_and(|s| s.is_postcopy() || s == MigrationStatus::Completed);
    if r.vm_on_destination || switched {
        return Err(MigrateError::Postcopy);
    }
    Ok(())
}

/// Cancels migration `id` (202), unless it has ended or its post-copy has started: the
/// record is checked, and so is the source QEMU, since the record learns of a switch only
/// when it is polled.
///
/// # Errors
/// [`MigrateError::NotFound`], [`MigrateError::Finished`], [`MigrateError::Postcopy`].
pub async fn cancel(state: &AgentState, id: &str) -> Result<MigrationRecord, MigrateError> {
    let record = state.migrations.get(id)?;
    cancel_refusal(&record, None)?;
    if let Ok(qmp) = state.vms.qmp_of(&record.vm) {
        if let Ok(p) = qmp.query_migrate(0).await {
            if p.status.is_some_and(MigrationStatus::is_postcopy) {
                record_switch(state, id, &record.vm);
            }
            cancel_refusal(&record, p.status)?;
        }
    }
    state.migrations.signal_cancel(id)
}

/// The source QEMU entered post-copy: the record says the guest is on the destination from now
/// on (persisted), and the source VM shows as moved. Idempotent.
pub(crate) fn record_switch(state: &AgentState, id: &str, vm: &str) {
    state.vms.mark_guest_away(vm);
    match state.migrations.get(id) {
        Ok(r) if r.vm_on_destination || r.state != MigrationState::Running => {}
        Ok(_) => {
            if let Err(e) = state.migrations.apply(id, lifecycle::RecordEvent::Switched) {
                tracing::error!(migration = %id, error = %e, "cannot record the switch to post-copy");
            }
        }
        Err(e) => tracing::error!(migration = %id, error = %e, "switch of an unknown migration"),
    }
}

/// Releases the VM of migration `id` unless the migration still holds it
/// ([`lifecycle::holds_vm`]).
pub(crate) fn release_vm(state: &AgentState, id: &str, vm: &str) {
    match state.migrations.get(id) {
        Ok(r) if lifecycle::holds_vm(&r) => {}
        _ => state.vms.end_migration(vm),
    }
}

impl Migrations {}

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
    let config = state.vms.record(vm)?.config;
    check_disk_technique(&config, req.technique, req.knobs.storage)?;
    // A source whose QEMU is in post-copy already (a migration the record lost track of) has
    // only part of the guest: refuse before anything starts.
    state.vms.check_not_departed(vm).await?;
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
    let record = MigrationRecord::preparing(id.clone(), vm.to_string(), req, unix_ms());
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
                resuming: false,
            },
        );
    }
    let st = state.clone();
    state.spawn(async move { run::run(st, id, rx).await });
    Ok(record)
}

/// Refuses a VM with a disk moved by storage pre-copy unless `technique` is pre-copy (its
/// mirror converges with memory before the switchover) or auto, which then picks it: at the
/// request, before anything starts. Storage post-copy takes any technique.
///
/// # Errors
/// [`MigrateError::DiskNeedsPrecopy`] naming the disk and the technique asked for.
pub fn check_disk_technique(
    config: &drover_api::VmConfig,
    technique: Technique,
    storage: StorageMode,
) -> Result<(), MigrateError> {
    // A disk to be created (`disk_size_bytes`, `disk_base`) counts, named or not.
    match config.disk_file() {
        Some(disk)
            if storage == StorageMode::Precopy
                && !matches!(technique, Technique::Precopy | Technique::Auto) =>
        {
            Err(MigrateError::DiskNeedsPrecopy {
                vm: config.name.clone(),
                disk,
                technique,
            })
        }
        _ => Ok(()),
    }
}

/// The configuration an incoming VM runs with on the destination (pure, for tests): a VM with
/// a disk gets a new, empty qcow2 target of the source disk's `virtual_bytes`, under the same
/// name, created by this agent ([`crate::vms::Vms::start`] refuses a name that exists, never
/// overwriting) and so owned by it: an aborted incoming VM's incomplete target is removed with
/// it, a committed VM's disk is deleted with the VM. No base: the mirror copies the whole disk,
/// its base's blocks included.
pub fn incoming_config(
    mut config: drover_api::VmConfig,
    virtual_bytes: Option<u64>,
) -> drover_api::VmConfig {
    config.disk = config.disk_file();
    if config.disk.is_some() {
        config.disk_size_bytes = virtual_bytes;
        config.disk_base = None;
    }
    config
}

/// A record with live progress: while QEMU migrates, ask the source QEMU how far it got; a
/// post-copy status there is the switch, recorded if the record had not seen it yet.
pub async fn view(state: &AgentState, id: &str) -> Result<MigrationRecord, MigrateError> {
    let mut record = state.migrations.get(id)?;
    if record.state == MigrationState::Running {
        if let Ok(qmp) = state.vms.qmp_of(&record.vm) {
            if let Ok(p) = qmp.query_migrate(state.vms.clock().now_ms()).await {
                if p.status.is_some_and(MigrationStatus::is_postcopy) && !record.vm_on_destination {
                    record_switch(state, id, &record.vm);
                    record = state.migrations.get(id)?;
                }
                record.progress = Some(p);
            }
        }
    }
    Ok(record)
}

/// After a restart: reconciles every migration that was under way when the agent died, holds
/// again the source VMs of post-copies that did not complete, and resumes those left paused
/// (`resume::resume_after_restart`).
pub fn recover_all(state: &Arc<AgentState>) {
    for r in state
        .migrations
        .list()
        .into_iter()
        .filter(|r| r.state.is_final() && lifecycle::holds_vm(r))
    {
        if state.vms.begin_migration(&r.vm, &r.id).is_ok() {
            state.vms.mark_guest_away(&r.vm);
        }
        let st = state.clone();
        state.spawn(async move { resume::resume_after_restart(st, r).await });
    }
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

/// Migration `m1` of VM `vm1`, a measured post-copy to 198.18.0.3, in `state` (tests of
/// every module that keeps records).
#[cfg(test)]
pub(crate) fn test_record(state: MigrationState, on_destination: bool) -> MigrationRecord {
    let request = MigrationRequest {
        id: None,
        to: AgentUrl::parse("http://198.18.0.3:7700").expect("url"),
        technique: drover_core::migration::Technique::Postcopy,
        measure: true,
        knobs: drover_core::migration::PlanKnobs::default(),
    };
    MigrationRecord {
        state,
        vm_on_destination: on_destination,
        ..MigrationRecord::preparing("m1".into(), "vm1".into(), request, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::test_record as record;
    use super::*;

    /// The reviewer's cancel: 202 during post-copy, and nothing happened. The record may not
    /// know of the switch yet; QEMU does.
    #[test]
    fn no_cancel_once_the_guest_runs_on_the_destination() {
        use MigrationStatus as M;
        let running = record(MigrationState::Running, false);
        assert!(cancel_refusal(&running, None).is_ok());
        assert!(cancel_refusal(&running, Some(M::Active)).is_ok());
        for live in [
            M::PostcopyActive,
            M::PostcopyPaused,
            M::PostcopyRecover,
            M::Completed,
        ] {
            let err = cancel_refusal(&running, Some(live)).expect_err("switched");
            assert_eq!(
                err.to_string(),
                "cannot cancel: the migration is in post-copy and the VM already runs on the \
                 destination"
            );
        }
        let switched = record(MigrationState::Running, true);
        assert!(matches!(
            cancel_refusal(&switched, None),
            Err(MigrateError::Postcopy)
        ));
        for over in [
            MigrationState::Measuring,
            MigrationState::Completed,
            MigrationState::Paused,
        ] {
            assert!(matches!(
                cancel_refusal(&record(over, false), None),
                Err(MigrateError::Finished(_))
            ));
        }
    }

    #[test]
    fn a_vm_with_a_disk_migrates_by_precopy_only() {
        let mut config = drover_api::VmConfig {
            name: "db".into(),
            vcpus: 1,
            memory_bytes: 128 << 20,
            workload: "idle".into(),
            disk: Some("db.qcow2".into()),
            disk_size_bytes: None,
            disk_base: None,
            nic: None,
        };
        let pre = StorageMode::Precopy;
        assert!(check_disk_technique(&config, Technique::Precopy, pre).is_ok());
        assert!(check_disk_technique(&config, Technique::Auto, pre).is_ok());
        for t in [Technique::Postcopy, Technique::Hybrid] {
            let text = check_disk_technique(&config, t, pre)
                .expect_err("not pre-copy")
                .to_string();
            assert!(
                text.contains("'db.qcow2'")
                    && text.contains(&format!("technique {t} is refused"))
                    && text.contains("with storage postcopy any technique moves it"),
                "{text}"
            );
        }
        // Storage post-copy moves the disk after the switchover, whatever moved memory.
        for t in [
            Technique::Precopy,
            Technique::Postcopy,
            Technique::Hybrid,
            Technique::Auto,
        ] {
            assert!(check_disk_technique(&config, t, StorageMode::Postcopy).is_ok());
        }
        config.disk = None;
        assert!(check_disk_technique(&config, Technique::Postcopy, pre).is_ok());
        config.disk_size_bytes = Some(64 << 20);
        let err =
            check_disk_technique(&config, Technique::Hybrid, pre).expect_err("a disk to create");
        assert!(err.to_string().contains("'db.qcow2'"), "{err}");
    }

    /// The destination makes its own empty target of the source's virtual size under the
    /// disk's name, whatever the source's disk was (its own, an operator's, an overlay).
    #[test]
    fn an_incoming_disk_is_a_new_target_of_the_sources_size() {
        let config =
            |disk: Option<&str>, size: Option<u64>, base: Option<&str>| drover_api::VmConfig {
                name: "db".into(),
                vcpus: 1,
                memory_bytes: 128 << 20,
                workload: "idle".into(),
                disk: disk.map(str::to_string),
                disk_size_bytes: size,
                disk_base: base.map(str::to_string),
                nic: None,
            };
        for source in [
            config(Some("d.qcow2"), None, None),
            config(None, Some(32 << 20), None),
            config(Some("d.qcow2"), None, Some("base.qcow2")),
        ] {
            let name = source.disk_file();
            let target = incoming_config(source, Some(64 << 20));
            assert_eq!(target.disk, name);
            assert_eq!(target.disk_size_bytes, Some(64 << 20));
            assert_eq!(target.disk_base, None);
            assert!(target.creates_disk(), "owned by the destination's agent");
        }
        let diskless = config(None, None, None);
        assert_eq!(incoming_config(diskless.clone(), None), diskless);
    }
}
