//! The source side of one migration, from `preparing` to a final record.

use super::abort_retry;
use super::lifecycle::RecordEvent;
use crate::remote::RemoteQmp;
use crate::AgentState;
use drover_api::{
    AgentClient, IncomingReply, IncomingRequest, MigrationRecord, MigrationRequest, MigrationState,
};
use drover_core::migration::{
    paused_by_migration, CostParams, EndStatus, MigrationPlan, MigrationStatus, OpsSample,
    PlanKnobs, Technique, VmProfile,
};
use drover_core::migration::{StorageRecord, StorageSettings};
use drover_qemu::disk::{DiskNodes, NbdAddr};
use drover_qemu::driver::{self, DriverConfig, Endpoints, MigrationRun};
use drover_qemu::metrics::Clock;
use drover_qemu::qmp::{Qmp, QmpClient, QmpExt};
use drover_qemu::storage::{migrate_with_storage, DiskTarget, StorageConfig, StorageRun};
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
    let plan = match config.disk_file() {
        // Only pre-copy moves a disk (`check_disk_technique` refused the rest).
        Some(_) => {
            MigrationPlan::build_with_disk(req.technique, &req.knobs, &CostParams::default())
        }
        None => plan_for(req, state.link_bps, source.as_ref(), config.memory_bytes).await,
    };
    let dest = AgentClient::new(req.to.clone(), &state.token);
    let health = dest
        .health()
        .await
        .map_err(|e| format!("destination unreachable: {e}"))?;
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
    let incoming = IncomingRequest {
        config,
        migration_id: id.to_string(),
        disk_virtual_bytes,
    };
    let reply = match dest.incoming(&incoming).await {
        Ok(reply) => reply,
        Err(e) => {
            // An unreadable reply came with a success status: the destination may well have
            // started the incoming QEMU, so it is removed like after any refused reply.
            if matches!(e, drover_api::ClientError::Decode { .. }) {
                abort_destination(state, id, &dest, vm, source.as_ref()).await;
            }
            return Err(format!("destination could not prepare an incoming VM: {e}"));
        }
    };
    let target = match check_reply(&req.to, &reply, disk_virtual_bytes.is_some()).await {
        Ok(nbd) => nbd.map(|nbd| DiskTarget {
            disk: DiskNodes::of(0),
            nbd,
        }),
        Err(e) => {
            abort_destination(state, id, &dest, vm, source.as_ref()).await;
            return Err(e);
        }
    };
    let uri = reply.uri.to_string();
    let recover_uri = reply.recover_uri.to_string();
    state
        .migrations
        .apply(
            id,
            RecordEvent::Started {
                plan: plan.clone(),
                uri: reply.uri,
                recover_uri: reply.recover_uri,
            },
        )
        .map_err(|e| e.to_string())?;
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
    let driving = migrate(&ends, target.as_ref(), plan, &driver_config, &clock, cancel);
    tokio::pin!(driving);
    let watching = switched(source.as_ref(), SWITCH_POLL);
    tokio::pin!(watching);
    let mut seen_switch = false;
    let outcome = loop {
        tokio::select! {
            out = &mut driving => break out,
            () = &mut watching, if !seen_switch => {
                seen_switch = true;
                super::record_switch(state, id, vm);
            }
        }
    };
    let (run, storage_error) = match outcome {
        Ok(Moved { run, storage }) => {
            let error = storage.and_then(|s| {
                state.migrations.note(id, storage_note(&s.storage));
                for e in &s.cleanup_errors {
                    state
                        .migrations
                        .note(id, format!("storage clean-up step failed: {e}"));
                }
                s.storage.error
            });
            (run, error)
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
    if moved && run.outcome.status == EndStatus::Completed {
        hand_over(state, id, &dest, vm).await;
    } else if moved {
        // Post-copy stopped part-way: the source still holds part of the guest's memory.
        state.migrations.note(
            id,
            "post-copy did not complete: both QEMUs are kept (the guest is on the destination, the rest of its memory here)".into(),
        );
    } else {
        abort_destination(state, id, &dest, vm, source.as_ref()).await;
    }
    let record = state
        .migrations
        .apply(
            id,
            RecordEvent::Ended {
                status: run.outcome.status,
                vm_on_destination: moved,
                plan: run.plan.clone(),
                error: storage_error
                    .map(|e| format!("storage pre-copy: {e}"))
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
    if record.state == MigrationState::Paused && moved {
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
/// the storage pre-copy's (for a VM with a disk).
struct Moved {
    run: MigrationRun,
    storage: Option<StorageRun>,
}

/// The memory migration alone, or with the storage pre-copy of `target` (a VM with a disk).
/// A storage part that failed before the memory migration started is an error here, like a
/// driver error: the guest never left.
async fn migrate(
    ends: &Endpoints<'_>,
    target: Option<&DiskTarget>,
    plan: MigrationPlan,
    driver_config: &DriverConfig,
    clock: &Clock,
    cancel: watch::Receiver<bool>,
) -> Result<Moved, String> {
    let driver_error = |e: driver::DriverError| format!("migration driver: {e}");
    let Some(target) = target else {
        let run = driver::migrate(ends, plan, driver_config, clock, Some(cancel)).await;
        return run
            .map(|run| Moved { run, storage: None })
            .map_err(driver_error);
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
        }),
        None => Err(format!(
            "storage pre-copy: {}{}",
            done.storage.error.as_deref().unwrap_or("failed"),
            cleanup_text(&done.cleanup_errors)
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
mod tests {
    use super::*;
    use drover_qemu::qmp::ScriptedQmp;
    use serde_json::json;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The reviewer's lab: a 10 MB/s link, and `auto` predicted as if it were 1000 MB/s.
    #[test]
    fn auto_assumes_no_faster_link_than_the_hosts() {
        let vm = VmProfile {
            memory_bytes: 256 << 20,
            wss_bytes: 64 << 20,
            dirty_rate_bps: 1e6,
        };
        let knobs = PlanKnobs::default();
        let fast = plan_with_link(Technique::Auto, &knobs, Some(&vm), None);
        let slow = plan_with_link(Technique::Auto, &knobs, Some(&vm), Some(10_000_000));
        assert_eq!(fast.assumed_link_bps, 1_000_000_000);
        assert_eq!(slow.assumed_link_bps, 10_000_000);
        assert!(
            slow.reason
                .contains("assumed bandwidth 10000000 B/s: this host's link"),
            "{}",
            slow.reason
        );
        // The run's time budget follows the slower link too: 256 MiB at 10 MB/s is ~27 s.
        assert!(slow.time_budget_ms(256 << 20) > fast.time_budget_ms(256 << 20) + 40_000);
        // A request that assumes a slower link than the host's keeps its own.
        let own = PlanKnobs {
            assumed_link_bps: 5_000_000,
            ..PlanKnobs::default()
        };
        let p = plan_with_link(Technique::Auto, &own, Some(&vm), Some(10_000_000));
        assert_eq!(p.assumed_link_bps, 5_000_000);
        assert!(
            p.reason.contains("the request's assumed_link_bps"),
            "{}",
            p.reason
        );
        // A cap is the bandwidth: the link is not assumed then.
        let capped = PlanKnobs {
            bandwidth_bps: Some(50_000_000),
            ..PlanKnobs::default()
        };
        let p = plan_with_link(Technique::Auto, &capped, Some(&vm), Some(10_000_000));
        assert!(!p.reason.contains("assumed bandwidth"), "{}", p.reason);
    }

    /// The reviewer's case (a), at the agent: once post-copy started, by the run's own watch or
    /// by the record, a failed driver never drops the destination.
    #[test]
    fn a_failed_driver_drops_the_destination_only_before_the_switch() {
        use crate::migrate::test_record;
        let before = test_record(MigrationState::Running, false);
        let after = test_record(MigrationState::Running, true);
        assert!(may_abort_destination(false, Some(&before)));
        assert!(!may_abort_destination(true, Some(&before)), "seen here");
        assert!(!may_abort_destination(false, Some(&after)), "recorded");
        assert!(!may_abort_destination(false, None), "unknown: kept");
    }

    /// A destination's NBD address is taken only for a VM with a disk, on the destination.
    #[test]
    fn the_nbd_address_must_point_at_the_destination() {
        let d: std::net::IpAddr = "198.18.0.3".parse().expect("ip");
        let at = |a: &str| Some(a.parse::<std::net::SocketAddr>().expect("addr"));
        let ok = check_nbd("h2", &[d], at("198.18.0.3:10809"), true).expect("ok");
        assert_eq!(ok.map(|a| a.port()), Some(10809));
        assert_eq!(check_nbd("h2", &[d], None, false), Ok(None));
        for (nbd, disk, words) in [
            (None, true, "no NBD address for the VM's disk"),
            (at("198.18.0.3:10809"), false, "for a VM without a disk"),
            (
                at("8.8.8.8:10809"),
                true,
                "does not point at the destination h2",
            ),
            (
                at("127.0.0.1:10809"),
                true,
                "does not point at the destination h2",
            ),
            (at("198.18.0.3:0"), true, "expected a port from 1 to 65535"),
        ] {
            let err = check_nbd("h2", &[d], nbd, disk).expect_err(words);
            assert!(
                err.starts_with("destination's reply refused") && err.contains(words),
                "{err}"
            );
        }
    }

    #[test]
    fn the_storage_figures_are_noted() {
        let mut r = StorageRecord {
            transferred_bytes: 67_108_864,
            disk_bytes: 67_108_864,
            mirror_to_ready_ms: Some(1200),
            ready_to_cancel_ms: Some(3400),
            cancel_to_concluded_ms: Some(5),
            write_blocking: false,
            error: None,
            ..StorageRecord::default()
        };
        assert_eq!(
            storage_note(&r),
            "storage pre-copy: the mirror processed 67108864 bytes (the disk once, zero areas \
             included, plus what the guest rewrote meanwhile); mirror to READY 1200 ms, READY to \
             cancel 3400 ms, last sync 5 ms"
        );
        r.ready_to_cancel_ms = None;
        r.error = Some("mirror-cancel: boom".into());
        let note = storage_note(&r);
        assert!(
            note.contains("READY to cancel -") && note.ends_with("; failed: mirror-cancel: boom"),
            "{note}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_switch_is_seen_when_the_source_enters_postcopy() {
        let polls = Arc::new(AtomicU32::new(0));
        let counted = polls.clone();
        let q = ScriptedQmp::new(move |cmd, _| {
            assert_eq!(cmd, "query-migrate");
            let n = counted.fetch_add(1, Ordering::SeqCst);
            let status = if n < 3 { "active" } else { "postcopy-active" };
            Ok(json!({"status": status}))
        });
        switched(&q, SWITCH_POLL).await;
        assert_eq!(polls.load(Ordering::SeqCst), 4);
        let precopy = ScriptedQmp::new(|_, _| Ok(json!({"status": "active"})));
        let waited = tokio::time::timeout(Duration::from_secs(60), switched(&precopy, SWITCH_POLL));
        assert!(waited.await.is_err(), "a pre-copy is no switch");
    }
}
