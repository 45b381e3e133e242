//! The source side of one migration, from `preparing` to a final record.

use super::abort_retry;
use super::lifecycle::RecordEvent;
use super::storage_hy;
use super::storage_pc::{self, Kept};
use crate::remote::RemoteQmp;
use crate::AgentState;
use drover_api::{
    AgentClient, IncomingReply, IncomingRequest, MigrationRecord, MigrationRequest, MigrationState,
};
use drover_core::migration::HotSet;
use drover_core::migration::{
    paused_by_migration, CostParams, EndStatus, MigrationPlan, MigrationStatus, OpsSample,
    PlanKnobs, Technique, VmProfile,
};
use drover_core::migration::{PostcopyOutcome, StorageMode, StorageRecord, StorageSettings};
use drover_qemu::disk::{DiskNodes, NbdAddr};
use drover_qemu::driver::{self, DriverConfig, Endpoints, MigrationRun};
use drover_qemu::metrics::Clock;
use drover_qemu::qmp::{Qmp, QmpClient, QmpExt};
use drover_qemu::storage::{migrate_with_storage, DiskTarget, StorageConfig, StorageRun};
use drover_qemu::storage_hybrid::HybridSession;
use drover_qemu::storage_postcopy::{PostcopyRun, PostcopySession};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the source QEMU is asked whether post-copy has started (the driver does not say
/// until it ends).
const SWITCH_POLL: Duration = Duration::from_millis(200);

/// Runs the migration and always leaves a final record (or a non-final one only if the agent
/// dies meanwhile, which `recover` handles).
pub async fn run(state: Arc<AgentState>, id: String, cancel: watch::Receiver<bool>) {
    let Ok(record) = state.migrations.get(&id) else {
        return;
    };
    let vm = record.vm.clone();
    if let Err(error) = drive(&state, &id, &vm, &record.request, cancel).await {
        if let Err(e) = state.migrations.apply(&id, RecordEvent::Failed { error }) {
            tracing::error!(migration = %id, error = %e, "cannot record the failure");
        }
    }
    super::release_vm(&state, &id, &vm);
}

/// Returns once the source QEMU reports a post-copy status: from then on the guest runs on the
/// destination.
pub(super) async fn switched(source: &dyn Qmp, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Ok(p) = source.query_migrate(0).await {
            if p.status.is_some_and(MigrationStatus::is_postcopy) {
                return;
            }
        }
    }
}

async fn drive(
    state: &Arc<AgentState>,
    id: &str,
    vm: &str,
    req: &MigrationRequest,
    cancel: watch::Receiver<bool>,
) -> Result<(), String> {
    let source = state.vms.qmp_of(vm).map_err(|e| e.to_string())?;
    let config = state.vms.record(vm).map_err(|e| e.to_string())?.config;
    let storage = storage_pc::mode_of(&config, &req.knobs);
    let plan = match storage {
        // Storage pre-copy moves a disk with memory pre-copy only (`check_disk_technique`
        // refused the rest); storage post-copy with any.
        Some(StorageMode::Precopy) => {
            MigrationPlan::build_with_disk(req.technique, &req.knobs, &CostParams::default())
        }
        // Storage post-copy and hybrid move memory by any technique.
        Some(StorageMode::Postcopy | StorageMode::Hybrid) | None => {
            plan_for(req, state.link_bps, source.as_ref(), config.memory_bytes).await
        }
    };
    let dest = AgentClient::new(req.to.clone(), &state.token);
    let asked = std::time::Instant::now();
    let health = dest
        .health()
        .await
        .map_err(|e| format!("destination unreachable: {e}"))?;
    // One request's round trip: the hybrid's model takes it as the link's.
    let rtt = asked.elapsed();
    if health.agent_id == state.agent_id {
        return Err(format!("the destination {} is this host", req.to));
    }
    let disk_virtual_bytes = match config.disk_file() {
        Some(disk) => Some(
            state
                .vms
                .disk_virtual_size(&disk)
                .await
                .map_err(|e| format!("cannot read the size of disk '{disk}': {e}"))?,
        ),
        None => None,
    };
    // Storage hybrid: the hot set from a fresh profile, before anything is set up.
    let scratch = storage_hy::scratch_dir(state, vm)?;
    let hot = match storage {
        Some(StorageMode::Hybrid) => {
            let c = storage_hy::hot_set(state, vm, source.as_ref(), &req.knobs, rtt).await?;
            state.migrations.note(
                id,
                format!(
                    "storage hybrid: pushing {:.0}% of the disk ahead ({} bytes, the hottest by \
                     a {} s profile): {}",
                    c.fraction * 100.0,
                    c.hot.bytes(),
                    storage_hy::PROFILE_WINDOW_S,
                    c.reason
                ),
            );
            Some(c.hot)
        }
        _ => None,
    };
    // Storage post-copy and hybrid: the source's export exists before the destination opens
    // it.
    let mut session = match storage {
        Some(StorageMode::Postcopy) => Some(Kept::Postcopy(Box::new(
            storage_pc::export(source.as_ref(), &req.to, &req.knobs).await?,
        ))),
        Some(StorageMode::Hybrid) => {
            let (s, swept) = storage_hy::export(source.as_ref(), &req.to, &req.knobs).await?;
            for leftover in swept {
                state.migrations.note(
                    id,
                    format!("storage hybrid: an earlier attempt's {leftover} removed"),
                );
            }
            Some(Kept::Hybrid(Box::new(s)))
        }
        _ => None,
    };
    let incoming = IncomingRequest {
        config,
        migration_id: id.to_string(),
        disk_virtual_bytes,
        storage: storage.unwrap_or_default(),
        source_nbd: session.as_ref().map(Kept::export_addr),
    };
    let target =
        prepare_destination(state, id, req, &dest, source.as_ref(), &incoming, &plan).await;
    let (reply, target) = match target {
        Ok(ready) => ready,
        Err(e) => {
            if let Some(s) = session.take() {
                s.abandon(source.as_ref(), &e).await;
            }
            return Err(e);
        }
    };
    let uri = reply.uri.to_string();
    let recover_uri = reply.recover_uri.to_string();
    let remote = RemoteQmp {
        client: dest.clone(),
        vm: vm.to_string(),
    };
    let ends = Endpoints {
        source: source.as_ref(),
        dest: &remote,
        uri,
        recover_uri,
    };
    let clock = state.vms.clock();
    let samples = state.vms.samples_of(vm).map_err(|e| e.to_string())?;
    let driver_config = DriverConfig::default();
    let disk = match (target.as_ref(), session.as_mut(), hot.as_ref()) {
        // A hybrid's destination serves an NBD target too: the push's.
        (Some(t), Some(Kept::Hybrid(s)), Some(hot)) => {
            s.set_dest_nbd(t.nbd);
            Disk::Hybrid {
                session: s,
                hot,
                scratch: &scratch,
            }
        }
        (Some(t), None, _) => Disk::Precopy(t),
        (None, Some(Kept::Postcopy(s)), _) => Disk::Postcopy(s),
        (None, None, _) => Disk::None,
        _ => return Err("the storage migration's parts do not match (a bug)".into()),
    };
    let mut seen_switch = false;
    let outcome = {
        // In a block: the run borrows the session, which is kept afterwards.
        let driving = migrate(&ends, disk, plan, &driver_config, &clock, cancel);
        tokio::pin!(driving);
        let watching = switched(source.as_ref(), SWITCH_POLL);
        tokio::pin!(watching);
        loop {
            tokio::select! {
                out = &mut driving => break out,
                () = &mut watching, if !seen_switch => {
                    seen_switch = true;
                    super::record_switch(state, id, vm);
                }
            }
        }
    };
    let (run, storage_error, postcopy) = match outcome {
        Ok(Moved {
            run,
            storage,
            postcopy,
        }) => {
            let error = storage.and_then(|s| {
                state.migrations.note(id, storage_note(&s.storage));
                for e in &s.cleanup_errors {
                    state
                        .migrations
                        .note(id, format!("storage clean-up step failed: {e}"));
                }
                s.storage.error.map(|e| format!("storage pre-copy: {e}"))
            });
            if let Some(p) = &postcopy {
                storage_pc::note_run(state, id, p);
            }
            let error = error.or_else(|| {
                postcopy.as_ref().and_then(|p| {
                    let mode = match p.storage.mode {
                        StorageMode::Hybrid => "storage hybrid",
                        _ => "storage post-copy",
                    };
                    p.storage.error.as_ref().map(|e| format!("{mode}: {e}"))
                })
            });
            (run, error, postcopy.map(|p| p.outcome))
        }
        Err(e) => {
            let recorded = state.migrations.get(id).ok();
            if !may_abort_destination(seen_switch, recorded.as_ref()) {
                // The driver errs only before post-copy was asked for, but the switch was seen
                // here: the destination runs the guest, so it is kept, and so is the source.
                super::record_switch(state, id, vm);
                return Err(format!(
                    "{e}; post-copy had started, so the guest runs on the destination: both \
                     QEMUs are kept"
                ));
            }
            abort_destination(state, id, &dest, vm, source.as_ref()).await;
            return Err(e);
        }
    };
    let moved = run.outcome.vm_on_destination;
    let mut status = run.outcome.status;
    let decision = postcopy.map(storage_pc::decide);
    if decision == Some(storage_pc::Decision::KeepBoth) {
        // The guest runs on the destination; part of its disk is only here.
        super::record_switch(state, id, vm);
        if let Some(s) = session.take() {
            state.migrations.postcopy.keep(id, s);
        }
        let kept = super::abandon::kept_words_of(state, id).await;
        let mode = match storage {
            Some(StorageMode::Hybrid) => "storage hybrid",
            _ => "storage post-copy",
        };
        state.migrations.note(
            id,
            format!(
                "{mode} did not complete: {kept}; the source's disk holds blocks the \
                 destination lacks; a stalled stream resumes with POST /v1/migrations/{id}/resume"
            ),
        );
        status = EndStatus::Paused;
    } else if moved && run.outcome.status == EndStatus::Completed {
        if decision == Some(storage_pc::Decision::HandOver) {
            state.migrations.postcopy.mark_streamed(id);
        }
        hand_over(state, id, &dest, vm).await;
    } else if moved {
        // Post-copy stopped part-way: the source still holds part of the guest's memory.
        let kept = super::abandon::kept_words_of(state, id).await;
        state
            .migrations
            .note(id, format!("post-copy did not complete: {kept}"));
    } else {
        abort_destination(state, id, &dest, vm, source.as_ref()).await;
    }
    let record = state
        .migrations
        .apply(
            id,
            RecordEvent::Ended {
                status,
                vm_on_destination: moved,
                plan: run.plan.clone(),
                error: storage_error
                    .or(run.outcome.error.clone())
                    .or(run.dest_error.clone()),
                result: run.result(&samples.snapshot()),
                measure: req.measure,
            },
        )
        .map_err(|e| e.to_string())?;
    // The VM's fate is settled (unless a post-copy stopped part-way, which keeps it held): it
    // may be migrated or deleted again while we measure.
    super::release_vm(state, id, vm);
    // A stalled stream waits for an operator's resume; a paused memory post-copy is resumed
    // here (its settle streams the disk first).
    let stalled = matches!(
        postcopy,
        Some(PostcopyOutcome::Stalled | PostcopyOutcome::Held)
    );
    if record.state == MigrationState::Paused && req.measure {
        state.migrations.note(
            id,
            "not measured: the migration paused (a paused record is resumed, not measured)".into(),
        );
    }
    if record.state == MigrationState::Paused && moved && !stalled {
        if let Some(params) = req.knobs.resume() {
            let paused = super::resume::PausedRun {
                id,
                vm,
                source: source.as_ref(),
                dest: &dest,
                recover_uri: &ends.recover_uri,
            };
            super::resume::resume_paused(state, &paused, params).await;
        }
    }
    if record.state == MigrationState::Measuring {
        let window_end = run.span().samples_until_ms() + 300;
        tokio::time::sleep(Duration::from_millis(
            window_end.saturating_sub(clock.now_ms()),
        ))
        .await;
        let mut all = samples.snapshot();
        if moved {
            match dest.samples(vm).await {
                Ok(remote) => all.extend(remote.iter().map(|s| OpsSample {
                    host_ms: state.vms.from_unix_ms(s.unix_ms),
                    ops: s.ops,
                    integrity_errors: s.integrity_errors,
                })),
                Err(e) => state
                    .migrations
                    .note(id, format!("destination samples unavailable: {e}")),
            }
        }
        all.sort_by_key(|s| s.host_ms);
        let result = run.result(&all);
        state
            .migrations
            .apply(id, RecordEvent::Measured { result })
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// How long the hand-over waits for the destination to accept the commit.
const COMMIT_WAIT: Duration = Duration::from_secs(15);

/// The VM now runs on the destination: make it a normal VM there, then stop ours. The
/// destination commits only once its QEMU says the whole guest is there (a post-copy's last
/// pages may still be arriving when the source reports completion): until then it answers 409
/// and the commit is asked again, quietly.
pub(super) async fn hand_over(state: &AgentState, id: &str, dest: &AgentClient, vm: &str) {
    let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
    let mut committed = false;
    for attempt in 1.. {
        match dest.commit_incoming(vm).await {
            Ok(_) => {
                committed = true;
                break;
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                state.migrations.note(
                    id,
                    format!("commit on destination failed (attempt {attempt}, giving up): {e}"),
                );
                break;
            }
            Err(e) if e.status() == Some(409) => {}
            Err(e) => state.migrations.note(
                id,
                format!("commit on destination failed (attempt {attempt}): {e}"),
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !committed {
        state.migrations.note(
            id,
            "the VM runs on the destination but is still marked incoming there".into(),
        );
    }
    if let Err(e) = state.vms.remove(vm, crate::vms::Removal::Force).await {
        state
            .migrations
            .note(id, format!("could not stop the source QEMU: {e}"));
    }
}

/// Whether a migration whose driver failed may drop the destination's incoming QEMU (pure,
/// for tests): only when nothing says post-copy started, neither this run's own watch of the
/// source (`seen_switch`) nor the record (unreadable counts as started: when in doubt the
/// destination, which may hold the only running copy, is kept).
pub(super) fn may_abort_destination(seen_switch: bool, record: Option<&MigrationRecord>) -> bool {
    !seen_switch && record.is_some_and(|r| !r.vm_on_destination)
}

/// The VM stays here: drop the destination's incoming QEMU and make sure ours runs. A
/// destination that cannot be reached now is asked again in the background
/// (`abort_retry`), so its incoming VM does not stay there for good.
pub(super) async fn abort_destination(
    state: &Arc<AgentState>,
    id: &str,
    dest: &AgentClient,
    vm: &str,
    source: &dyn Qmp,
) {
    match abort_retry::ask_client(dest, vm).await {
        abort_retry::Attempt::Gone => {}
        abort_retry::Attempt::Refused(status, e) => state.migrations.note(
            id,
            format!("the destination refused to remove its incoming VM ({status}): {e}"),
        ),
        abort_retry::Attempt::Failed(e) => {
            state.migrations.note(
                id,
                format!(
                    "could not remove the destination's incoming VM: {e}; asking again every \
                     {} s for {} s",
                    abort_retry::RETRY_EVERY.as_secs(),
                    abort_retry::RETRY_FOR.as_secs()
                ),
            );
            let (st, id, vm, dest) = (state.clone(), id.to_string(), vm.to_string(), dest.clone());
            state.spawn(async move {
                let records = || st.migrations.list();
                let ask = || abort_retry::ask_client(&dest, &vm);
                let note = abort_retry::retry(&id, &vm, records, ask).await;
                tracing::info!(migration = %id, "{note}");
                st.migrations.note(&id, note);
            });
        }
    }
    if let Ok(s) = source.query_status().await {
        if paused_by_migration(&s.status) {
            if let Err(e) = source.cont().await {
                state
                    .migrations
                    .note(id, format!("could not resume the VM on the source: {e}"));
            }
        }
    }
}

/// Asks the destination for its incoming VM and checks its reply; records the run started.
/// Returns the reply and, for a storage pre-copy or hybrid, the destination's NBD target. A failure
/// after the destination may have started its QEMU removes it again.
async fn prepare_destination(
    state: &Arc<AgentState>,
    id: &str,
    req: &MigrationRequest,
    dest: &AgentClient,
    source: &dyn Qmp,
    incoming: &IncomingRequest,
    plan: &MigrationPlan,
) -> Result<(IncomingReply, Option<DiskTarget>), String> {
    let vm = incoming.config.name.as_str();
    let reply = match dest.incoming(incoming).await {
        Ok(reply) => reply,
        Err(e) => {
            // An unreadable reply came with a success status: the destination may well have
            // started the incoming QEMU, so it is removed like after any refused reply.
            if matches!(e, drover_api::ClientError::Decode { .. }) {
                abort_destination(state, id, dest, vm, source).await;
            }
            return Err(format!("destination could not prepare an incoming VM: {e}"));
        }
    };
    // A storage pre-copy's and a hybrid's destination serve an NBD target.
    let wants_nbd =
        incoming.disk_virtual_bytes.is_some() && incoming.storage != StorageMode::Postcopy;
    let target = match check_reply(&req.to, &reply, wants_nbd).await {
        Ok(nbd) => nbd.map(|nbd| DiskTarget {
            disk: DiskNodes::of(0),
            nbd,
        }),
        Err(e) => {
            abort_destination(state, id, dest, vm, source).await;
            return Err(e);
        }
    };
    let started = RecordEvent::Started {
        plan: plan.clone(),
        uri: reply.uri,
        recover_uri: reply.recover_uri,
    };
    if let Err(e) = state.migrations.apply(id, started) {
        abort_destination(state, id, dest, vm, source).await;
        return Err(e.to_string());
    }
    Ok((reply, target))
}

/// Refuses URIs (and an NBD address) that do not point at the destination this agent chose:
/// QEMU would connect wherever they say. A VM with a disk (`disk`) needs an NBD address, a
/// diskless one must get none. Returns the NBD address.
async fn check_reply(
    to: &drover_api::AgentUrl,
    reply: &IncomingReply,
    disk: bool,
) -> Result<Option<NbdAddr>, String> {
    let addrs: Vec<std::net::IpAddr> = tokio::net::lookup_host((to.host(), to.port()))
        .await
        .map_err(|e| format!("cannot resolve the destination {to}: {e}"))?
        .map(|a| a.ip())
        .collect();
    for uri in [reply.uri, reply.recover_uri] {
        uri.check_host(to.host(), &addrs)
            .map_err(|e| format!("destination's reply refused: {e}"))?;
    }
    check_nbd(to.host(), &addrs, reply.nbd, disk)
}

/// The reply's NBD address, checked like its URIs (pure, for tests): present exactly for a VM
/// with a disk, on one of the destination's `addrs` (what `host` resolves to).
fn check_nbd(
    host: &str,
    addrs: &[std::net::IpAddr],
    nbd: Option<std::net::SocketAddr>,
    disk: bool,
) -> Result<Option<NbdAddr>, String> {
    let refused = |why: String| format!("destination's reply refused: {why}");
    match (nbd, disk) {
        (None, false) => Ok(None),
        (None, true) => Err(refused(
            "no NBD address for the VM's disk: expected one (does the destination's agent \
             know storage migration?)"
                .into(),
        )),
        (Some(a), false) => Err(refused(format!(
            "NBD address {a} for a VM without a disk: expected none"
        ))),
        (Some(a), true) if !addrs.contains(&a.ip()) => Err(refused(format!(
            "NBD address {a} does not point at the destination {host}"
        ))),
        (Some(a), true) => NbdAddr::new(a)
            .map(Some)
            .map_err(|e| refused(e.to_string())),
    }
}

/// What a migration that ended without a driver error gives: the memory migration's run, and
/// the storage pre-copy's or post-copy's (for a VM with a disk).
struct Moved {
    run: MigrationRun,
    storage: Option<StorageRun>,
    postcopy: Option<PostcopyRun>,
}

/// How a VM's disk moves in this run.
enum Disk<'a> {
    None,
    /// Storage pre-copy into the destination's NBD target.
    Precopy(&'a DiskTarget),
    /// Storage post-copy from the source's export (exported already).
    Postcopy(&'a mut PostcopySession),
    /// Storage hybrid: `hot` pushed into the destination's NBD target (its address set),
    /// the rest pulled from the source's export (exported already); the push's scratch
    /// image in `scratch`.
    Hybrid {
        session: &'a mut HybridSession,
        hot: &'a HotSet,
        scratch: &'a std::path::Path,
    },
}

/// The memory migration alone, or with the storage migration of `disk` (a VM with a disk).
/// A storage part that failed before the memory migration started is an error here, like a
/// driver error: the guest never left.
async fn migrate(
    ends: &Endpoints<'_>,
    disk: Disk<'_>,
    plan: MigrationPlan,
    driver_config: &DriverConfig,
    clock: &Clock,
    cancel: watch::Receiver<bool>,
) -> Result<Moved, String> {
    let driver_error = |e: driver::DriverError| format!("migration driver: {e}");
    let target = match disk {
        Disk::None => {
            let run = driver::migrate(ends, plan, driver_config, clock, Some(cancel)).await;
            return run
                .map(|run| Moved {
                    run,
                    storage: None,
                    postcopy: None,
                })
                .map_err(driver_error);
        }
        Disk::Postcopy(session) => {
            let done = session
                .migrate(ends, plan, driver_config, clock, Some(cancel))
                .await
                .map_err(driver_error)?;
            return pulled("storage post-copy", done);
        }
        Disk::Hybrid {
            session,
            hot,
            scratch,
        } => {
            let done = session
                .migrate(ends, hot, scratch, plan, driver_config, clock, Some(cancel))
                .await
                .map_err(driver_error)?;
            return pulled("storage hybrid", done);
        }
        Disk::Precopy(target) => target,
    };
    // The request's deadline bounds the mirror's copy too (a cut link: its stall watch).
    let config = StorageConfig {
        settings: StorageSettings::within_deadline(plan.watchdog.deadline_ms),
        ..StorageConfig::default()
    };
    let done = migrate_with_storage(
        ends,
        target,
        plan,
        driver_config,
        &config,
        clock,
        Some(cancel),
    )
    .await
    .map_err(driver_error)?;
    match done.memory.clone() {
        Some(run) => Ok(Moved {
            run,
            storage: Some(done),
            postcopy: None,
        }),
        None => Err(format!(
            "storage pre-copy: {}{}",
            done.storage.error.as_deref().unwrap_or("failed"),
            cleanup_text(&done.cleanup_errors)
        )),
    }
}

/// A storage post-copy's or hybrid's run (`mode` names it): moved, or an error when its
/// storage part failed before the memory migration started.
fn pulled(mode: &str, done: PostcopyRun) -> Result<Moved, String> {
    match done.memory.clone() {
        Some(run) => Ok(Moved {
            run,
            storage: None,
            postcopy: Some(done),
        }),
        None => Err(format!(
            "{mode}: {}{}",
            done.storage.error.as_deref().unwrap_or("failed"),
            cleanup_text(&done.errors)
        )),
    }
}

fn cleanup_text(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!("; clean-up steps failed: {}", errors.join("; "))
    }
}

/// The storage pre-copy's figures for the record's notes (pure, for tests).
fn storage_note(s: &StorageRecord) -> String {
    let ms = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| format!("{v} ms"));
    format!(
        "storage pre-copy: the mirror processed {} bytes (the disk once, zero areas included, plus \
         what the guest rewrote meanwhile); mirror to READY {}, READY to cancel {}, last sync \
         {}{}{}",
        s.transferred_bytes,
        ms(s.mirror_to_ready_ms),
        ms(s.ready_to_cancel_ms),
        ms(s.cancel_to_concluded_ms),
        if s.write_blocking {
            "; write-blocking"
        } else {
            ""
        },
        s.error
            .as_ref()
            .map_or_else(String::new, |e| format!("; failed: {e}")),
    )
}

/// The plan for a request: fixed, or the cost model's pick from a dirty-rate profile.
async fn plan_for(
    req: &MigrationRequest,
    link_bps: Option<u64>,
    source: &QmpClient,
    memory_bytes: u64,
) -> MigrationPlan {
    let profile = match req.technique {
        Technique::Auto => profile(source, memory_bytes).await,
        _ => None,
    };
    plan_with_link(req.technique, &req.knobs, profile.as_ref(), link_bps)
}

/// The plan for `technique` on a host whose link is `link_bps` (pure, for tests). Without a
/// bandwidth cap, `auto` (and the run's time budget) assume the smaller of the request's
/// `assumed_link_bps` and this host's link, and the plan's reason says which.
pub fn plan_with_link(
    technique: Technique,
    knobs: &PlanKnobs,
    profile: Option<&VmProfile>,
    link_bps: Option<u64>,
) -> MigrationPlan {
    let (knobs, note) = match link_bps {
        Some(link) if knobs.bandwidth_bps.is_none() && link < knobs.assumed_link_bps => (
            PlanKnobs {
                assumed_link_bps: link,
                ..knobs.clone()
            },
            Some(format!(
                "assumed bandwidth {link} B/s: this host's link, below the request's \
                 assumed_link_bps {}",
                knobs.assumed_link_bps
            )),
        ),
        Some(link) if knobs.bandwidth_bps.is_none() => (
            knobs.clone(),
            Some(format!(
                "assumed bandwidth {} B/s: the request's assumed_link_bps (this host's link \
                 is {link} B/s)",
                knobs.assumed_link_bps
            )),
        ),
        _ => (knobs.clone(), None),
    };
    let mut plan = MigrationPlan::build(technique, &knobs, profile, &CostParams::default());
    if let (Some(note), Technique::Auto) = (note, technique) {
        plan.reason = format!("{}; {note}", plan.reason);
    }
    plan
}

/// The cost model's view of the VM (see `drover_qemu::profile`).
async fn profile(qmp: &QmpClient, memory_bytes: u64) -> Option<VmProfile> {
    drover_qemu::profile::profile_vm(qmp, memory_bytes)
        .await
        .ok()
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
