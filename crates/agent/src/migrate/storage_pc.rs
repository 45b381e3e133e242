//! Storage post-copy between agents (`storage: postcopy` for a VM with a disk), over
//! `drover_qemu::storage_postcopy::PostcopySession`:
//!
//! ```text
//! S       export: NBD server on S's own address toward D (never one from the wire), the
//!         disk's format node read-only (allow-inactive)
//! S -> D  POST /v1/incoming {config, disk_virtual_bytes, storage: postcopy, source_nbd}
//! D       source_nbd must be on the request's peer address; creates an empty qcow2 overlay of
//!         that size under the disk's name, launches on DiskSpec::Overlay (backing: the
//!         source's export under Drover's export name); replies URIs, no NBD address
//! S       PostcopySession::migrate: memory (any technique), then through the forwarded set
//!         block-stream / query-block-jobs / job-dismiss (block-job-resume, cont) on D
//! ```
//!
//! Outcomes ([`decide`]): `Completed`, the stream done and S's server stopped: hand over as
//! any migration (commit on D, S's QEMU stopped; S's disk file stays an operator's or goes
//! with the VM as its config says). `RolledBack`: the guest never left; D is discarded.
//! `Stalled`, `MemoryPaused`, `Held`: the guest is on D, part of its disk only on S: the
//! record ends `paused` with the guest on the destination, both QEMUs and S's disk kept, the
//! session kept here ([`Sessions`]). `POST /v1/migrations/{id}/resume` resumes a stalled
//! stream through [`PostcopySession::resume`] ([`resume_stream`]); a paused memory post-copy
//! is resumed by the memory resume loop, whose settle first runs the stream
//! ([`stream_before_settle`]). Nothing settles a storage post-copy whose stream has not
//! completed here ([`settle_refusal`]): after an agent restart the session is gone and such a
//! migration stays paused, both sides kept (the operator decides). Nothing deletes the source
//! VM either while its disk backs such a destination overlay ([`delete_refusal`], checked by
//! `DELETE /v1/vms/{vm}` before anything else, whatever the record or the source QEMU says: a
//! memory post-copy that completed leaves the source QEMU `completed` while the disk is still
//! lent).

use crate::remote::RemoteQmp;
use crate::{lock, AgentState};
use drover_api::{AgentClient, AgentUrl, MigrationRecord};
use drover_core::migration::{
    PlanKnobs, PostcopyOutcome, PostcopyPhase, PostcopySettings, StorageMode, StorageRecord,
};
use drover_qemu::disk::{DiskNodes, NbdAddr};
use drover_qemu::driver::Endpoints;
use drover_qemu::metrics::Clock;
use drover_qemu::qmp::Qmp;
use drover_qemu::storage::DiskTarget;
use drover_qemu::storage_hybrid::HybridSession;
use drover_qemu::storage_postcopy::{PostcopyConfig, PostcopyRun, PostcopySession};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

/// A session kept after its run: a storage post-copy's, or a storage hybrid's (whose pull
/// half is a post-copy's, resumed the same way).
pub enum Kept {
    Postcopy(Box<PostcopySession>),
    Hybrid(Box<HybridSession>),
}

impl Kept {
    /// Where its pull stands.
    fn phase(&self) -> &PostcopyPhase {
        match self {
            Kept::Postcopy(s) => s.phase(),
            Kept::Hybrid(s) => s.pull_phase(),
        }
    }

    /// Resumes its stalled or paused pull ([`PostcopySession::resume`],
    /// [`HybridSession::resume`]).
    async fn resume(&mut self, ends: &Endpoints<'_>, clock: &Clock) -> PostcopyRun {
        match self {
            Kept::Postcopy(s) => s.resume(ends, clock).await,
            Kept::Hybrid(s) => s.resume(ends, clock).await,
        }
    }

    /// The source's export the destination's overlay reads (what the incoming request
    /// carries).
    pub fn export_addr(&self) -> SocketAddr {
        let b = match self {
            Kept::Postcopy(s) => s.backing(),
            Kept::Hybrid(s) => s.backing(),
        };
        let a = b.addr();
        SocketAddr::new(a.ip(), a.port())
    }

    /// The destination could not be launched: undo the export.
    pub async fn abandon(self, source: &dyn Qmp, reason: &str) {
        match self {
            Kept::Postcopy(s) => {
                s.abandon(source, reason).await;
            }
            Kept::Hybrid(s) => {
                s.abandon(source, reason).await;
            }
        }
    }
}

/// Where one migration's storage post-copy or hybrid stands after its run, by migration id.
enum Slot {
    /// Stalled or paused: the session, to be resumed.
    Held(Kept),
    /// Being resumed right now (the session is out).
    Busy,
    /// The stream completed: the source may go.
    Streamed,
}

/// Storage post-copy sessions a run left unfinished, and those whose stream completed.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Slot>>,
}

impl Sessions {
    pub(super) fn keep(&self, id: &str, session: Kept) {
        lock(&self.map).insert(id.to_string(), Slot::Held(session));
    }

    pub(super) fn mark_streamed(&self, id: &str) {
        lock(&self.map).insert(id.to_string(), Slot::Streamed);
    }

    /// Takes migration `id`'s session out to resume it; None when there is none to resume
    /// (never kept, already streamed, or being resumed).
    fn take(&self, id: &str) -> Option<Kept> {
        let mut map = lock(&self.map);
        match map.remove(id) {
            Some(Slot::Held(s)) => {
                map.insert(id.to_string(), Slot::Busy);
                Some(s)
            }
            Some(other) => {
                map.insert(id.to_string(), other);
                None
            }
            None => None,
        }
    }

    /// Drops migration `id`'s session, whatever it was (an abandoned migration: its QEMUs are
    /// gone, nothing is left to resume).
    pub(super) fn forget(&self, id: &str) {
        lock(&self.map).remove(id);
    }

    fn is_streamed(&self, id: &str) -> bool {
        matches!(lock(&self.map).get(id), Some(Slot::Streamed))
    }
}

/// The storage mode a VM's migration runs: None without a disk, else the request's.
pub fn mode_of(config: &drover_api::VmConfig, knobs: &PlanKnobs) -> Option<StorageMode> {
    config.disk_file().map(|_| knobs.storage)
}

/// The session's settings from the request's: the stream capped like the memory migration
/// (`bandwidth_bps`), reported stalled after the post-copy stall limit.
pub fn postcopy_config(knobs: &PlanKnobs) -> PostcopyConfig {
    PostcopyConfig {
        settings: PostcopySettings {
            stream_speed_bps: knobs.bandwidth_bps,
            stall_ms: knobs.postcopy_stall_ms(),
            ..PostcopySettings::default()
        },
        ..PostcopyConfig::default()
    }
}

/// This host's address toward `to`: the one the kernel's routing picks for traffic there
/// (a UDP socket's `connect` sends nothing), so the destination sees the incoming request
/// come from it. Never taken from the wire.
///
/// # Errors
/// `to` does not resolve, or no route leads there.
pub(super) async fn own_address_toward(to: &AgentUrl) -> Result<IpAddr, String> {
    let peer = tokio::net::lookup_host((to.host(), to.port()))
        .await
        .map_err(|e| format!("cannot resolve the destination {to}: {e}"))?
        .next()
        .ok_or_else(|| format!("the destination {to} resolves to no address"))?;
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => "0.0.0.0:0",
        SocketAddr::V6(_) => "[::]:0",
    }
    .parse()
    .map_err(|e| format!("{e}"))?;
    let socket = std::net::UdpSocket::bind(any).map_err(|e| format!("no local socket: {e}"))?;
    socket
        .connect(peer)
        .map_err(|e| format!("no route to the destination {to}: {e}"))?;
    socket
        .local_addr()
        .map(|a| a.ip())
        .map_err(|e| format!("no local address toward {to}: {e}"))
}

/// Step 1 on the source: its NBD server on its own address toward `to` (a free port there),
/// the disk exported read-only.
///
/// # Errors
/// The address or the export failed; nothing is left started.
pub(super) async fn export(
    source: &dyn Qmp,
    to: &AgentUrl,
    knobs: &PlanKnobs,
) -> Result<PostcopySession, String> {
    let ip = own_address_toward(to).await?;
    let [port] = crate::api::free_ports::<1>(ip).map_err(|e| e.to_string())?;
    let nbd = NbdAddr::new(SocketAddr::new(ip, port)).map_err(|e| e.to_string())?;
    let target = DiskTarget {
        disk: DiskNodes::of(0),
        nbd,
    };
    PostcopySession::export(source, &target, postcopy_config(knobs))
        .await
        .map_err(|run| {
            format!(
                "storage post-copy: the source's export: {}{}",
                run.storage.error.as_deref().unwrap_or("failed"),
                errors_text(&run.errors)
            )
        })
}

/// Destination: `source_nbd` of an incoming request must be on `peer`, the address the
/// request came from (the source agent's own: its QEMU serves the export there). Pure.
///
/// # Errors
/// Why not, naming the field.
pub fn check_source_nbd(
    source_nbd: Option<SocketAddr>,
    peer: Option<IpAddr>,
) -> Result<(), String> {
    let Some(nbd) = source_nbd else {
        return Ok(());
    };
    match peer {
        Some(p) if p.to_canonical() == nbd.ip().to_canonical() => Ok(()),
        Some(p) => Err(format!(
            "source_nbd {nbd} is not valid: expected an address of the requesting source, {p}"
        )),
        None => Err(format!(
            "source_nbd {nbd} cannot be checked: the request's peer address is unknown"
        )),
    }
}

/// What the source does once the session's run ended (pure, for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Commit on the destination, stop the source QEMU.
    HandOver,
    /// The guest stayed on the source: discard the destination.
    Discard,
    /// The guest is on the destination, part of its disk only here: keep both QEMUs and the
    /// session, record the migration paused.
    KeepBoth,
}

/// The decision for `outcome` (see the module doc).
pub fn decide(outcome: PostcopyOutcome) -> Decision {
    match outcome {
        PostcopyOutcome::Completed => Decision::HandOver,
        PostcopyOutcome::RolledBack => Decision::Discard,
        PostcopyOutcome::Stalled | PostcopyOutcome::MemoryPaused | PostcopyOutcome::Held => {
            Decision::KeepBoth
        }
    }
}

/// A duration for the notes: `12 ms`, or `-` when not measured.
pub(super) fn ms(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v} ms"))
}

/// A storage record's failure for the notes: `; failed: WHY`, or nothing.
pub(super) fn failed(s: &StorageRecord) -> String {
    s.error
        .as_ref()
        .map_or_else(String::new, |e| format!("; failed: {e}"))
}

/// The storage post-copy's figures for the record's notes (pure, for tests).
pub fn note(s: &StorageRecord) -> String {
    format!(
        "storage post-copy: the stream processed {} of {} bytes (the whole disk once, what the \
         guest read or wrote meanwhile included); stream {}, {} stall(s){}",
        s.transferred_bytes,
        s.disk_bytes,
        ms(s.stream_ms),
        s.stream_stalls,
        failed(s),
    )
}

pub(super) fn errors_text(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!("; steps that failed: {}", errors.join("; "))
    }
}

/// Notes a run's figures and the commands that failed without changing its outcome.
pub(super) fn note_run(state: &AgentState, id: &str, run: &PostcopyRun) {
    let (figures, mode) = match run.storage.mode {
        StorageMode::Hybrid => (super::storage_hy::note(&run.storage), "storage hybrid"),
        _ => (note(&run.storage), "storage post-copy"),
    };
    state.migrations.note(id, figures);
    if !run.errors.is_empty() {
        state
            .migrations
            .note(id, format!("{mode}: {}", errors_text(&run.errors)));
    }
    if let Some(g) = &run.dest_guest {
        if !g.running {
            state.migrations.note(
                id,
                format!(
                    "the destination's guest is paused ({}): its disk waits for blocks only \
                     the source has",
                    g.status
                ),
            );
        }
    }
}

/// Why migration `r` may not be settled yet, if so: a storage post-copy or hybrid whose
/// stream has not completed here (the source's disk holds blocks the destination lacks).
pub fn settle_refusal(state: &AgentState, r: &MigrationRecord) -> Option<String> {
    // A VM without a disk ignores the mode; one that is gone here has nothing to protect.
    let disk = state
        .vms
        .record(&r.vm)
        .is_ok_and(|v| v.config.disk_file().is_some());
    let pulls = matches!(
        r.request.knobs.storage,
        StorageMode::Postcopy | StorageMode::Hybrid
    );
    let postcopy = pulls && disk;
    (postcopy && !state.migrations.postcopy.is_streamed(&r.id)).then(|| {
        "its storage post-copy has not streamed the whole disk to the destination: the \
         source's disk holds blocks the destination lacks"
            .to_string()
    })
}

/// Why VM `vm` may not be deleted here, if so: a storage post-copy or hybrid of it (of this VM, not an
/// earlier one of its name) switched to a destination whose overlay is backed by this disk,
/// and its stream has not completed here, whatever the record's state says (a completed
/// memory post-copy, a record noted completed). Only an abandoned migration (its destination
/// QEMU gone) lends the disk no more. After an agent restart the streams this agent saw
/// complete are forgotten: such a VM is refused too (its migration completed forgets the VM
/// here, so one still here was not handed over).
pub fn delete_refusal(state: &AgentState, vm: &str) -> Option<String> {
    let v = state.vms.record(vm).ok()?;
    v.config.disk_file()?;
    let records = state.migrations.list();
    disk_lent_by(v.created_unix_ms, &records, vm, |id| {
        state.migrations.postcopy.is_streamed(id)
    })
}

/// Pure part of [`delete_refusal`]: the latest of `records` that migrated VM `vm` (the
/// instance created at `created_unix_ms`) by storage post-copy or hybrid (whose destination
/// pulls the rest the same way) past the switchover, not
/// abandoned and not `streamed`, as the refusal's words.
pub fn disk_lent_by(
    created_unix_ms: u64,
    records: &[MigrationRecord],
    vm: &str,
    streamed: impl Fn(&str) -> bool,
) -> Option<String> {
    let r = records
        .iter()
        .rev()
        .find(|r| r.vm == vm && r.started_unix_ms >= created_unix_ms)?;
    let pulls = matches!(
        r.request.knobs.storage,
        StorageMode::Postcopy | StorageMode::Hybrid
    );
    let lent = pulls
        && r.vm_on_destination
        && r.state != drover_api::MigrationState::Abandoned
        && !streamed(&r.id);
    lent.then(|| {
        format!(
            "its disk backs the destination's overlay of storage post-copy {} (record {}), \
             whose stream has not completed: the destination reads the blocks it lacks from \
             this disk, the only full copy. Resume the migration (POST /v1/migrations/{}/resume) \
             until it completes; if the destination's QEMU died, abandon it (POST \
             /v1/migrations/{}/abandon), which keeps this disk",
            r.id,
            format!("{:?}", r.state).to_lowercase(),
            r.id,
            r.id
        )
    })
}

/// Runs migration `id`'s kept session on: resumes a stalled stream, or starts the stream of
/// a memory post-copy that was recovered, and watches it. Returns the run, or None when no
/// session is kept for `id` (then nothing was done).
async fn resume_session(
    state: &AgentState,
    id: &str,
    source: &dyn Qmp,
    dest: &AgentClient,
    vm: &str,
) -> Option<PostcopyRun> {
    let mut session = state.migrations.postcopy.take(id)?;
    let remote = RemoteQmp {
        client: dest.clone(),
        vm: vm.to_string(),
    };
    // Resuming reads and runs block jobs only: no memory URI is used.
    let ends = Endpoints {
        source,
        dest: &remote,
        uri: String::new(),
        recover_uri: String::new(),
    };
    let run = session.resume(&ends, &state.vms.clock()).await;
    note_run(state, id, &run);
    match run.outcome {
        PostcopyOutcome::Completed => state.migrations.postcopy.mark_streamed(id),
        _ => state.migrations.postcopy.keep(id, session),
    }
    Some(run)
}

/// Memory resume's settle: a storage post-copy streams its disk first (its session kept
/// here); only a completed stream lets the settle go on.
///
/// # Errors
/// Why the settle must wait: the stream did not complete (the session stays kept).
pub(super) async fn stream_before_settle(
    state: &AgentState,
    r: &MigrationRecord,
    source: &dyn Qmp,
) -> Result<(), String> {
    if settle_refusal(state, r).is_none() {
        return Ok(());
    }
    let dest = AgentClient::new(r.request.to.clone(), &state.token);
    state.migrations.note(
        &r.id,
        "the memory post-copy completed: starting the storage post-copy stream (a guest a \
         failed read stopped is continued first)"
            .into(),
    );
    // Right after the link returns the source's export may not answer yet (the guest stays
    // stopped on its I/O error) or the stream may stall at once: tried again, bounded.
    let attempt = || resume_session(state, &r.id, source, &dest, &r.vm);
    let again = |run: &PostcopyRun| {
        matches!(
            run.outcome,
            PostcopyOutcome::Stalled | PostcopyOutcome::MemoryPaused
        )
        .then(|| {
            let guest = run.dest_guest.as_ref().map(|g| g.status.clone());
            run.storage.error.clone().unwrap_or_else(|| {
                format!(
                    "the destination's guest is {}",
                    guest.as_deref().unwrap_or("unknown")
                )
            })
        })
    };
    let note = |line: String| state.migrations.note(&r.id, line);
    match super::resume::stream_with_retries(attempt, again, note).await {
        Some(run) if run.outcome == PostcopyOutcome::Completed => Ok(()),
        Some(run) => Err(format!(
            "storage post-copy {:?}: {}",
            run.outcome,
            run.storage
                .error
                .as_deref()
                .unwrap_or("the stream has not completed")
        )),
        None => Err(settle_refusal(state, r).unwrap_or_default()),
    }
}

/// Whether migration `id` has a stalled storage post-copy stream kept here to resume (a
/// paused memory post-copy is resumed by the memory resume loop instead).
pub fn resumable(state: &AgentState, id: &str) -> bool {
    match lock(&state.migrations.postcopy.map).get(id) {
        Some(Slot::Held(s)) => matches!(s.phase(), PostcopyPhase::Stalled { .. }),
        _ => false,
    }
}

/// `POST /v1/migrations/{id}/resume` of a stalled storage post-copy: resumes the stream and,
/// once it completed, settles the migration (commit on the destination, the source QEMU
/// stopped). A stream that stalls again is kept for another resume.
pub(super) async fn resume_stream(state: &AgentState, r: &MigrationRecord) {
    let source = match state.vms.qmp_of(&r.vm) {
        Ok(q) => q,
        Err(e) => {
            state.migrations.note(
                &r.id,
                format!("storage post-copy not resumed: the source QEMU: {e}"),
            );
            return;
        }
    };
    let dest = AgentClient::new(r.request.to.clone(), &state.token);
    // A stream that stalls again right after its link came back is resumed again here, a
    // bounded number of times (`resume::stream_with_retries`), before it is reported paused.
    let attempt = || resume_session(state, &r.id, source.as_ref(), &dest, &r.vm);
    let stalled = |run: &PostcopyRun| {
        (run.outcome == PostcopyOutcome::Stalled).then(|| {
            run.storage
                .error
                .clone()
                .unwrap_or_else(|| "stalled".into())
        })
    };
    let note = |line: String| state.migrations.note(&r.id, line);
    let Some(run) = super::resume::stream_with_retries(attempt, stalled, note).await else {
        return;
    };
    if run.outcome != PostcopyOutcome::Completed {
        let kept = super::abandon::kept_words(state, r).await;
        state.migrations.note(
            &r.id,
            format!(
                "storage post-copy resumed but not completed ({:?}): {kept}",
                run.outcome
            ),
        );
        return;
    }
    match super::settle(state, r, true).await {
        Ok(_) => {}
        Err(e) => state.migrations.note(
            &r.id,
            format!("the stream completed but the settle waits: {e}"),
        ),
    }
}

/// Why migration `id`'s kept storage post-copy cannot be resumed, if so (pure but for the
/// look at the sessions): its session is being resumed right now, or a step failed after the
/// switchover (`Held`), which no resume undoes. Says what the operator can do.
pub fn resume_refusal(state: &AgentState, id: &str) -> Option<String> {
    match lock(&state.migrations.postcopy.map).get(id) {
        Some(Slot::Busy) => Some("its storage post-copy stream is being resumed right now".into()),
        Some(Slot::Held(s)) => match s.phase() {
            PostcopyPhase::Failed {
                step,
                message,
                from,
            } if from.past_switchover() => Some(held_words(
                id,
                Some(&format!("step '{}': {message}", step.name())),
            )),
            _ => None,
        },
        _ => None,
    }
}

/// The refusal of a `Held` storage post-copy (pure, for tests): `failed` is the session's error.
pub fn held_words(id: &str, failed: Option<&str>) -> String {
    format!(
        "its storage post-copy failed after the switchover ({}) and a failed step is never \
         retried: the guest runs on the destination on its overlay, reading the blocks it lacks \
         from the source's export, so both QEMUs and the source's disk are kept. Keep both \
         running while the guest is needed (it works, with its reads from the source); if the \
         destination's QEMU died, give the migration up with POST /v1/migrations/{id}/abandon \
         (the source's disk file is kept)",
        failed.unwrap_or("no error recorded")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_completed_stream_lets_the_source_go() {
        assert_eq!(decide(PostcopyOutcome::Completed), Decision::HandOver);
        assert_eq!(decide(PostcopyOutcome::RolledBack), Decision::Discard);
        for kept in [
            PostcopyOutcome::Stalled,
            PostcopyOutcome::MemoryPaused,
            PostcopyOutcome::Held,
        ] {
            assert_eq!(decide(kept), Decision::KeepBoth, "{kept:?}");
        }
    }

    /// The source export must be on the requesting peer: anywhere else the destination's
    /// QEMU would read a disk from a host nobody chose.
    #[test]
    fn the_source_export_must_be_on_the_requesting_peer() {
        let nbd = |a: &str| Some(a.parse::<SocketAddr>().expect("addr"));
        let ip = |a: &str| Some(a.parse::<IpAddr>().expect("ip"));
        assert_eq!(check_source_nbd(None, None), Ok(()));
        assert_eq!(
            check_source_nbd(nbd("198.18.0.2:4000"), ip("198.18.0.2")),
            Ok(())
        );
        // A dual-stack socket shows an IPv4 peer mapped into IPv6.
        assert_eq!(
            check_source_nbd(nbd("198.18.0.2:4000"), ip("::ffff:198.18.0.2")),
            Ok(())
        );
        for (addr, peer, words) in [
            (
                "198.18.0.9:4000",
                ip("198.18.0.2"),
                "source_nbd 198.18.0.9:4000 is not valid: expected an address of the requesting \
                 source, 198.18.0.2",
            ),
            ("127.0.0.1:4000", ip("198.18.0.2"), "is not valid"),
            (
                "198.18.0.2:4000",
                None,
                "the request's peer address is unknown",
            ),
        ] {
            let err = check_source_nbd(nbd(addr), peer).expect_err(words);
            assert!(err.contains(words), "{err}");
        }
    }

    #[test]
    fn the_stream_figures_are_noted() {
        let mut r = StorageRecord {
            mode: StorageMode::Postcopy,
            transferred_bytes: 67_108_864,
            disk_bytes: 67_108_864,
            stream_ms: Some(2500),
            stream_stalls: 1,
            ..StorageRecord::default()
        };
        assert_eq!(
            note(&r),
            "storage post-copy: the stream processed 67108864 of 67108864 bytes (the whole disk \
             once, what the guest read or wrote meanwhile included); stream 2500 ms, 1 stall(s)"
        );
        r.stream_ms = None;
        r.error = Some("stream-wait: stalled".into());
        let n = note(&r);
        assert!(
            n.contains("stream -, 1 stall(s); failed: stream-wait: stalled"),
            "{n}"
        );
    }

    /// Every command a storage post-copy sends its destination, built by the very builders
    /// the session uses, passes the forwarded set and the destination's check for a post-copy
    /// destination, and reaches QEMU as built; the pre-copy's are refused there.
    #[tokio::test]
    async fn the_forwarded_set_takes_exactly_what_the_session_sends() {
        use crate::vms::{check_storage_command, IncomingDisk};
        use drover_api::qmp::ForwardedQmp;
        use drover_qemu::qmp::{BlockExt, QmpExt, ScriptedQmp};
        use serde_json::{json, Value};
        let dest = ScriptedQmp::new(|cmd, args| {
            let forwarded = ForwardedQmp::from_parts(cmd, args)
                .map_err(|e| drover_qemu::qmp::QmpError::Protocol(e.to_string()))?;
            check_storage_command("pvm", &forwarded, IncomingDisk::Overlay)
                .map_err(|e| drover_qemu::qmp::QmpError::Protocol(e.to_string()))?;
            // What reaches QEMU is what the session built.
            assert_eq!(
                forwarded.arguments(),
                args.filter(|a| !a.is_null()).cloned()
            );
            Ok(match cmd {
                "query-block-jobs" => json!([]),
                "query-status" => json!({"running": true, "status": "running"}),
                "query-migrate" => json!({"status": "completed"}),
                _ => Value::Object(serde_json::Map::new()),
            })
        });
        let disk = DiskNodes::of(0);
        dest.start_stream(&disk, Some(16 << 20))
            .await
            .expect("stream");
        dest.start_stream(&disk, None)
            .await
            .expect("stream, unlimited");
        assert_eq!(dest.stream_job(&disk).await.expect("jobs"), None);
        dest.resume_job(disk.stream_job()).await.expect("resume");
        dest.dismiss_job(disk.stream_job()).await.expect("dismiss");
        dest.cont().await.expect("cont");
        dest.query_status().await.expect("status");
        dest.query_migrate(0).await.expect("migrate");
        // Not a post-copy destination's: the mirror's job, the pre-copy's export.
        assert!(dest.dismiss_job(disk.mirror_job()).await.is_err());
        assert!(dest.export_disk(&disk).await.is_err());
        assert!(dest.nbd_server_stop().await.is_err());
    }

    /// The user's data loss: the memory post-copy completed after its resume, the stream had
    /// not, and a delete of the source VM removed the only full copy of the disk. Whatever the
    /// record's state, a storage post-copy of this VM past the switchover lends its disk until
    /// its stream completed here; only an abandoned one, an earlier VM of the name, a
    /// pre-copy or a migration that never switched do not.
    #[test]
    fn a_disk_backing_an_unfinished_stream_is_never_deleted() {
        use drover_api::MigrationState as S;
        let pc = |state, on_destination, started| {
            let mut r = crate::migrate::test_record(state, on_destination);
            r.request.knobs.storage = StorageMode::Postcopy;
            r.started_unix_ms = started;
            r
        };
        let none = |_: &str| false;
        for state in [S::Paused, S::Failed, S::Completed, S::Running, S::Measuring] {
            let why = disk_lent_by(1, &[pc(state, true, 5)], "vm1", none)
                .unwrap_or_else(|| panic!("{state:?} lends the disk"));
            assert!(
                why.contains("storage post-copy m1") && why.contains("/v1/migrations/m1/resume"),
                "{why}"
            );
        }
        // Streamed here: the disk is the source's own again.
        assert_eq!(
            disk_lent_by(1, &[pc(S::Paused, true, 5)], "vm1", |id| id == "m1"),
            None
        );
        let mut hybrid = pc(S::Paused, true, 5);
        hybrid.request.knobs.storage = StorageMode::Hybrid;
        assert!(
            disk_lent_by(1, &[hybrid], "vm1", none).is_some(),
            "a hybrid pulls too"
        );
        let mut precopy = pc(S::Paused, true, 5);
        precopy.request.knobs.storage = StorageMode::Precopy;
        for (records, created) in [
            (vec![pc(S::Abandoned, true, 5)], 1),
            (vec![pc(S::Failed, false, 5)], 1),
            (vec![precopy], 1),
            // An earlier VM of the name (this one was created after that migration).
            (vec![pc(S::Paused, true, 5)], 9),
            (vec![], 1),
        ] {
            assert_eq!(
                disk_lent_by(created, &records, "vm1", none),
                None,
                "{records:?}"
            );
        }
        // Another VM's migration lends nothing of this one.
        assert_eq!(
            disk_lent_by(1, &[pc(S::Paused, true, 5)], "vm2", none),
            None
        );
    }

    /// A `Held` storage post-copy is refused with what failed and what the operator can do.
    #[test]
    fn a_held_stream_is_refused_with_what_to_do() {
        let w = held_words("m1", Some("step 'block-stream': refused"));
        assert!(
            w.starts_with(
                "its storage post-copy failed after the switchover (step 'block-stream': \
                 refused) and a failed step is never retried"
            ) && w.contains("both QEMUs and the source's disk are kept")
                && w.contains("POST /v1/migrations/m1/abandon"),
            "{w}"
        );
    }

    #[test]
    fn the_session_follows_the_request() {
        let knobs = PlanKnobs {
            bandwidth_bps: Some(5_000_000),
            postcopy_stall_s: 7,
            ..PlanKnobs::default()
        };
        let c = postcopy_config(&knobs);
        assert_eq!(c.settings.stream_speed_bps, Some(5_000_000));
        assert_eq!(c.settings.stall_ms, 7000);
        assert_eq!(c.settings.validate(), Ok(()));
        assert_eq!(
            postcopy_config(&PlanKnobs::default())
                .settings
                .stream_speed_bps,
            None
        );
    }
}
