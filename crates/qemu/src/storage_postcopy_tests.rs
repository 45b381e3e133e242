use super::*;
use crate::qmp::ScriptedQmp;
use crate::test_rig::{actions, args_of, refuse, status_reply};
use drover_core::migration::{StorageMode, Technique};
use serde_json::{json, Value};

/// A pretend pair of QEMUs with one disk: the source's NBD server and export, the memory
/// migration, the destination's stream job and guest.
#[derive(Default)]
struct World {
    server_up: bool,
    exported: bool,
    migrating: bool,
    migrate_polls: u64,
    cancelled: bool,
    source_paused: bool,
    stream: Option<Stream>,
    /// The destination's guest is paused on a read the source could not serve.
    dest_io_error: bool,
    // Faults.
    export_fails: bool,
    migrate_fails: bool,
    stream_start_fails: bool,
    /// The source's export vanishes once the stream reached this offset.
    export_lost_at: Option<u64>,
    /// The stream's progress never moves (a link that holds reads).
    stream_frozen: bool,
    /// The source refuses to export again (its QEMU cannot serve yet).
    re_export_fails: bool,
    /// Looks at which the job pauses again although the export is back (QEMU's NBD client
    /// fails the first request while it reconnects).
    repause: u32,
    /// A guest read failed while the source's disk was inactive: the destination's guest is
    /// paused (`io-error`) by the time the source's disk is activated.
    read_failed_while_inactive: bool,
}

struct Stream {
    offset: u64,
    paused: bool,
}

const DISK: u64 = 64 << 20;

type Shared = crate::test_rig::Shared<World>;
type Rig = crate::test_rig::Rig<World>;

fn rig(setup: impl FnOnce(&mut World)) -> Rig {
    Rig::new(setup, source, dest)
}

fn migrate_json(w: &mut World) -> Value {
    if !w.migrating {
        return json!({});
    }
    if w.cancelled {
        return json!({"status": "cancelled"});
    }
    w.migrate_polls += 1;
    let ram = json!({"transferred": 900, "remaining": 0, "total": 1000, "dirty-sync-count": 2});
    if w.migrate_fails {
        w.source_paused = true;
        return json!({"status": "failed", "error-desc": "Unable to write to socket"});
    }
    if w.migrate_polls <= 2 {
        return json!({"status": "active", "ram": ram});
    }
    w.source_paused = true;
    json!({"status": "completed", "ram": ram, "downtime": 30})
}

fn source(world: Shared) -> ScriptedQmp {
    ScriptedQmp::new(move |cmd, _| {
        let mut w = world.lock().expect("lock");
        match cmd {
            "nbd-server-start" if w.server_up => return refuse(cmd, "NBD server already running"),
            "nbd-server-start" => w.server_up = true,
            "block-export-add" if w.export_fails || w.re_export_fails || !w.server_up => {
                return refuse(cmd, "cannot export")
            }
            "block-export-add" => w.exported = true,
            "nbd-server-stop" if !w.server_up => return refuse(cmd, "NBD server not running"),
            "nbd-server-stop" => (w.server_up, w.exported) = (false, false),
            "query-block-exports" if w.exported => {
                return Ok(json!([{"id": "drover-disk0-export", "type": "nbd",
                                  "node-name": "drover-disk0", "shutting-down": false}]))
            }
            "query-block-exports" => return Ok(json!([])),
            "migrate" => w.migrating = true,
            "migrate_cancel" => w.cancelled = true,
            "query-migrate" => return Ok(migrate_json(&mut w)),
            "blockdev-set-active" if w.read_failed_while_inactive => w.dest_io_error = true,
            "query-status" => return status_reply(!w.source_paused, "postmigrate"),
            "cont" => w.source_paused = false,
            "query-migrate-capabilities" => return Ok(json!([])),
            _ => {}
        }
        Ok(json!({}))
    })
}

/// One look at the stream: it moves a quarter of the disk while the source exports, pauses
/// (and a guest read with it) when the export is gone.
fn stream_json(w: &mut World) -> Value {
    let exported = w.exported;
    let lost_at = w.export_lost_at;
    let frozen = w.stream_frozen;
    let Some(s) = w.stream.as_mut() else {
        return json!([]);
    };
    if !s.paused && s.offset < DISK {
        if exported && w.repause > 0 {
            w.repause -= 1;
            s.paused = true;
        } else if !exported {
            s.paused = true;
            w.dest_io_error = true;
        } else if !frozen {
            s.offset = (s.offset + DISK / 4).min(DISK);
            if lost_at.is_some_and(|at| s.offset >= at) {
                w.export_lost_at = None;
                (w.server_up, w.exported) = (false, false);
            }
        }
    }
    let status = match (s.paused, s.offset == DISK) {
        (true, _) => "paused",
        (false, true) => "concluded",
        (false, false) => "running",
    };
    json!([{"device": "drover-disk0-stream", "type": "stream", "offset": s.offset,
            "len": DISK, "ready": false, "status": status}])
}

fn dest(world: Shared) -> ScriptedQmp {
    ScriptedQmp::new(move |cmd, _| {
        let mut w = world.lock().expect("lock");
        let moved = w.migrating && !w.migrate_fails && !w.cancelled && w.migrate_polls > 2;
        match cmd {
            "block-stream" if w.stream_start_fails => return refuse(cmd, "no backing"),
            "block-stream" => {
                w.stream = Some(Stream {
                    offset: 0,
                    paused: false,
                })
            }
            "query-block-jobs" => return Ok(stream_json(&mut w)),
            "block-job-resume" => match w.stream.as_mut() {
                Some(s) => s.paused = false,
                None => return refuse(cmd, "no job"),
            },
            "job-dismiss" => w.stream = None,
            "cont" => w.dest_io_error = false,
            "query-migrate" if moved => return Ok(json!({"status": "completed"})),
            "query-migrate" => return Ok(json!({"status": "active"})),
            "query-status" if w.dest_io_error => return status_reply(false, "io-error"),
            "query-status" => return status_reply(moved, "inmigrate"),
            "query-migrate-capabilities" => return Ok(json!([])),
            _ => {}
        }
        Ok(json!({}))
    })
}

fn target() -> DiskTarget {
    DiskTarget {
        disk: DiskNodes::of(0),
        nbd: NbdAddr::new("127.0.0.1:10810".parse().expect("addr")).expect("nbd"),
    }
}

fn config() -> PostcopyConfig {
    let mut config = PostcopyConfig::default();
    config.settings.stall_ms = 5000;
    config.settings.stream_speed_bps = Some(8 << 20);
    config
}

async fn export(r: &Rig) -> PostcopySession {
    PostcopySession::export(&r.source, &target(), config())
        .await
        .expect("export")
}

async fn migrate(r: &Rig, session: &mut PostcopySession, technique: Technique) -> PostcopyRun {
    session
        .migrate(
            &r.ends(),
            MigrationPlan::fixed(technique),
            &DriverConfig::default(),
            &Clock::default(),
            None,
        )
        .await
        .expect("run")
}

#[tokio::test(start_paused = true)]
async fn storage_postcopy_exports_migrates_streams_then_releases_the_source() {
    let r = rig(|_| {});
    let mut session = export(&r).await;
    assert!(
        r.with(|w| w.server_up && w.exported),
        "exported before launch"
    );
    assert_eq!(session.backing().reconnect_delay_s(), 10);
    assert_eq!(session.backing().addr(), target().nbd);
    let run = migrate(&r, &mut session, Technique::Precopy).await;
    assert_eq!(run.outcome, PostcopyOutcome::Completed, "{run:?}");
    let memory = run.memory.expect("memory migration ran");
    assert_eq!(memory.outcome.status, EndStatus::Completed);
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(
        actions(&r.source),
        [
            "nbd-server-start",
            "block-export-add",
            "migrate-set-capabilities",
            "migrate-set-parameters",
            "migrate",
            "blockdev-set-active",
            "nbd-server-stop"
        ]
    );
    let active = &args_of(&r.source, "blockdev-set-active")[0];
    assert_eq!(
        active,
        &json!({"node-name": "drover-disk0", "active": true})
    );
    assert_eq!(
        actions(&r.dest),
        [
            "migrate-set-capabilities",
            "migrate-incoming",
            "block-stream",
            "job-dismiss"
        ]
    );
    let export = &args_of(&r.source, "block-export-add")[0];
    assert_eq!(export["writable"], false);
    assert_eq!(export["allow-inactive"], true);
    assert_eq!(export["node-name"], "drover-disk0");
    assert_eq!(export["name"], "drover-disk0");
    let server = &args_of(&r.source, "nbd-server-start")[0];
    assert_eq!(server["addr"]["data"]["port"], "10810");
    let stream = &args_of(&r.dest, "block-stream")[0];
    assert_eq!(stream["device"], "drover-disk0");
    assert_eq!(stream["on-error"], "stop");
    assert_eq!(stream["auto-dismiss"], false);
    assert_eq!(stream["speed"], 8 << 20);
    assert!(stream.get("base").is_none(), "the whole backing is pulled");
    let s = &run.storage;
    assert_eq!(s.mode, StorageMode::Postcopy);
    assert_eq!((s.transferred_bytes, s.disk_bytes), (DISK, DISK));
    assert!(s.stream_ms.is_some(), "{s:?}");
    assert_eq!((s.stream_stalls, s.error.as_deref()), (0, None));
    assert!(run.dest_guest.expect("guest").running);
    assert!(r.with(|w| !w.server_up && w.stream.is_none()));
}

#[tokio::test(start_paused = true)]
async fn memory_postcopy_then_the_stream() {
    let r = rig(|_| {});
    let mut session = export(&r).await;
    let run = migrate(&r, &mut session, Technique::Postcopy).await;
    assert_eq!(run.outcome, PostcopyOutcome::Completed, "{run:?}");
    let source = actions(&r.source);
    let switch = source
        .iter()
        .position(|n| n == "migrate-start-postcopy")
        .expect("post-copy of memory");
    assert_eq!(source.last().map(String::as_str), Some("nbd-server-stop"));
    assert!(switch < source.len() - 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_export_stops_the_server_and_nothing_else_runs() {
    let r = rig(|w| w.export_fails = true);
    let run = PostcopySession::export(&r.source, &target(), config())
        .await
        .expect_err("refused");
    assert_eq!(run.outcome, PostcopyOutcome::RolledBack);
    let error = run.storage.error.expect("error");
    assert!(error.contains("block-export-add"), "{error}");
    assert_eq!(
        actions(&r.source),
        ["nbd-server-start", "block-export-add", "nbd-server-stop"]
    );
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert!(r.dest.calls().is_empty());
    assert!(r.with(|w| !w.server_up));
}

#[tokio::test(start_paused = true)]
async fn bad_settings_are_refused_before_any_command() {
    let r = rig(|_| {});
    let mut config = config();
    config.settings.reconnect_delay_s = 0;
    let run = PostcopySession::export(&r.source, &target(), config)
        .await
        .expect_err("refused");
    assert_eq!(run.outcome, PostcopyOutcome::RolledBack);
    assert!(run
        .storage
        .error
        .expect("error")
        .contains("reconnect_delay_s"));
    assert!(r.source.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_destination_that_cannot_launch_undoes_the_export() {
    let r = rig(|_| {});
    let session = export(&r).await;
    let run = session.abandon(&r.source, "QEMU exited at start-up").await;
    assert_eq!(run.outcome, PostcopyOutcome::RolledBack);
    assert!(run.storage.error.expect("error").contains("QEMU exited"));
    assert_eq!(
        actions(&r.source).last().map(String::as_str),
        Some("nbd-server-stop")
    );
    assert!(r.with(|w| !w.server_up));
}

#[tokio::test(start_paused = true)]
async fn a_failed_memory_migration_keeps_the_guest_home_and_removes_the_export() {
    let r = rig(|w| w.migrate_fails = true);
    let mut session = export(&r).await;
    let run = migrate(&r, &mut session, Technique::Precopy).await;
    assert_eq!(run.outcome, PostcopyOutcome::RolledBack, "{run:?}");
    let memory = run.memory.expect("memory migration ran");
    assert!(!memory.outcome.vm_on_destination);
    assert!(run
        .storage
        .error
        .expect("error")
        .contains("memory migration"));
    let source = actions(&r.source);
    let migrate = source.iter().position(|n| n == "migrate").expect("migrate");
    // The driver resumes the guest on its own disk, then the export goes.
    assert_eq!(source[migrate + 1..], ["cont", "nbd-server-stop"]);
    assert!(!actions(&r.dest).contains(&"block-stream".to_string()));
    assert!(r.with(|w| !w.server_up && !w.source_paused));
}

#[tokio::test(start_paused = true)]
async fn a_refused_stream_holds_both_sides_and_undoes_nothing() {
    let r = rig(|w| w.stream_start_fails = true);
    let mut session = export(&r).await;
    let run = migrate(&r, &mut session, Technique::Precopy).await;
    assert_eq!(run.outcome, PostcopyOutcome::Held, "{run:?}");
    assert!(run.storage.error.expect("error").contains("block-stream"));
    assert_eq!(
        actions(&r.source).last().map(String::as_str),
        Some("blockdev-set-active")
    );
    assert!(
        r.with(|w| w.server_up && w.exported),
        "the source still serves"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_export_stalls_the_stream_and_resume_restores_it_and_completes() {
    let r = rig(|w| w.export_lost_at = Some(DISK / 2));
    let mut session = export(&r).await;
    let run = migrate(&r, &mut session, Technique::Precopy).await;
    assert_eq!(run.outcome, PostcopyOutcome::Stalled, "{run:?}");
    let guest = run.dest_guest.expect("guest state");
    assert_eq!(guest.status, "io-error", "the VM is reported paused");
    let error = run.storage.error.expect("error");
    assert!(
        error.contains("stalled") && error.contains("I/O error"),
        "{error}"
    );
    assert_eq!(run.storage.stream_stalls, 1);
    assert_eq!(run.storage.stream_ms, None);
    // Nothing was undone or torn down on either side.
    assert!(!actions(&r.dest).contains(&"job-dismiss".to_string()));
    assert_eq!(
        actions(&r.source).last().map(String::as_str),
        Some("blockdev-set-active")
    );

    r.with(|w| w.repause = 1);
    let run = session.resume(&r.ends(), &Clock::default()).await;
    assert_eq!(run.outcome, PostcopyOutcome::Completed, "{run:?}");
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert!(run.dest_guest.expect("guest").running);
    let resumes = args_of(&r.dest, "block-job-resume");
    assert_eq!(
        resumes.len(),
        2,
        "resumed again after the job paused at once"
    );
    let source = actions(&r.source);
    let migrate = source.iter().position(|n| n == "migrate").expect("migrate");
    assert_eq!(
        source[migrate + 1..],
        [
            "blockdev-set-active",
            "nbd-server-start",
            "block-export-add",
            "nbd-server-stop"
        ]
    );
    let dest = actions(&r.dest);
    let resume = dest
        .iter()
        .position(|n| n == "block-job-resume")
        .expect("resume");
    assert_eq!(
        dest[resume + 1..],
        ["cont", "block-job-resume", "job-dismiss"]
    );
    assert_eq!(run.storage.stream_stalls, 1);
    assert_eq!(run.storage.transferred_bytes, DISK);
}

#[tokio::test(start_paused = true)]
async fn a_stream_without_progress_is_stalled_and_a_failed_re_export_stays_stalled() {
    let r = rig(|w| w.stream_frozen = true);
    let mut session = export(&r).await;
    let run = migrate(&r, &mut session, Technique::Precopy).await;
    assert_eq!(run.outcome, PostcopyOutcome::Stalled, "{run:?}");
    assert!(run.storage.error.expect("error").contains("no progress"));
    assert!(run.dest_guest.expect("guest").running);
    // The export is gone and cannot come back yet: still stalled, nothing undone.
    r.with(|w| (w.server_up, w.exported, w.re_export_fails) = (false, false, true));
    let run = session.resume(&r.ends(), &Clock::default()).await;
    assert_eq!(run.outcome, PostcopyOutcome::Stalled, "{run:?}");
    assert_eq!(run.errors.len(), 1, "{:?}", run.errors);
    assert!(run.errors[0].contains("stream resume"), "{:?}", run.errors);
    // Once it can, the stream goes on.
    r.with(|w| (w.re_export_fails, w.stream_frozen) = (false, false));
    let run = session.resume(&r.ends(), &Clock::default()).await;
    assert_eq!(run.outcome, PostcopyOutcome::Completed, "{run:?}");
    assert_eq!(run.storage.stream_stalls, 1);
    // The resumes went on with the job QEMU kept streaming: never cancelled nor restarted.
    let dest = actions(&r.dest);
    assert!(!dest.contains(&"block-job-cancel".to_string()), "{dest:?}");
    assert_eq!(dest.iter().filter(|n| *n == "block-stream").count(), 1);
}

/// The user's WAN cut during a memory post-copy with storage post-copy: the overlay's reads
/// from the source's export failed meanwhile and QEMU stopped the destination's guest
/// (`io-error`). Once the memory post-copy was recovered, the resume re-exports the disk if
/// needed, continues the guest (QEMU retries the failed read) and only then starts the stream.
#[tokio::test(start_paused = true)]
async fn a_memory_pause_whose_guest_stopped_on_io_error_continues_it_then_streams() {
    let r = rig(|_| {});
    let mut session = export(&r).await;
    for event in [PostcopyEvent::MemoryStarted, PostcopyEvent::MemoryPaused] {
        session.advance(PostcopyStep::Memory, event).expect("phase");
    }
    // The memory post-copy completed after its recovery; the guest stopped on a failed read,
    // and the source's export is gone and cannot come back yet.
    r.with(|w| {
        (w.migrating, w.migrate_polls, w.source_paused) = (true, 3, true);
        w.dest_io_error = true;
        (w.server_up, w.exported, w.re_export_fails) = (false, false, true);
    });
    let run = session.resume(&r.ends(), &Clock::default()).await;
    assert_eq!(run.outcome, PostcopyOutcome::MemoryPaused, "{run:?}");
    assert!(run.errors[0].contains("stream resume"), "{:?}", run.errors);
    assert_eq!(run.dest_guest.expect("guest").status, "io-error");
    assert!(!actions(&r.dest).contains(&"cont".to_string()), "not yet");
    // The source answers again: the guest goes on, then the stream runs to the end.
    r.with(|w| w.re_export_fails = false);
    let run = session.resume(&r.ends(), &Clock::default()).await;
    assert_eq!(run.outcome, PostcopyOutcome::Completed, "{run:?}");
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    let dest = actions(&r.dest);
    let cont = dest.iter().position(|n| n == "cont").expect("cont");
    let stream = dest
        .iter()
        .position(|n| n == "block-stream")
        .expect("stream");
    assert!(cont < stream, "{dest:?}");
    assert_eq!(run.storage.transferred_bytes, DISK);
}

#[tokio::test(start_paused = true)]
async fn a_guest_paused_on_a_read_before_the_activation_is_continued_before_the_stream() {
    let r = rig(|w| w.read_failed_while_inactive = true);
    let mut session = export(&r).await;
    let run = migrate(&r, &mut session, Technique::Postcopy).await;
    assert_eq!(run.outcome, PostcopyOutcome::Completed, "{run:?}");
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    let dest = actions(&r.dest);
    let cont = dest
        .iter()
        .position(|n| n == "cont")
        .expect("guest continued");
    let stream = dest
        .iter()
        .position(|n| n == "block-stream")
        .expect("stream started");
    assert!(
        cont < stream,
        "continued before the stream, not after: {dest:?}"
    );
    assert_eq!(
        dest.iter().filter(|n| *n == "cont").count(),
        1,
        "continued once: {dest:?}"
    );
    assert!(run.dest_guest.expect("guest").running);
}
