use super::*;
use crate::qmp::ScriptedQmp;
use crate::test_rig::{actions, args_of, refuse, status_reply};
use drover_core::migration::{EndStatus, Technique};
use serde_json::{json, Value};

/// A pretend pair of QEMUs with one disk: the mirror job, the NBD pieces, the migration.
#[derive(Default)]
struct World {
    job: Option<Job>,
    target_attached: bool,
    server_up: bool,
    migrating: bool,
    continued: bool,
    migration_cancelled: bool,
    source_paused: bool,
    /// Polls of the source's migration after `migrate`.
    migrate_polls: u64,
    /// The status an earlier migration of the source left (QEMU reports it until `migrate`).
    earlier: Option<&'static str>,
    /// The node under the guest's device (None: the format node, a VM launched on its image).
    root: Option<&'static str>,
    // Faults.
    mirror_fails: bool,
    migrate_fails: bool,
    target_del_fails: bool,
    /// The mirror's target is unreachable: a cancelled job never concludes.
    mirror_stuck: bool,
}

#[derive(Clone)]
struct Job {
    offset: u64,
    cancelled: bool,
}

const DISK: u64 = 100 << 20;

type Shared = crate::test_rig::Shared<World>;

fn job_json(w: &mut World) -> Value {
    let Some(job) = w.job.as_mut() else {
        return json!([]);
    };
    if !job.cancelled {
        job.offset = (job.offset + DISK / 2).min(DISK);
    }
    let ready = job.offset == DISK;
    let mut v = json!({"device": "drover-disk0-mirror", "type": "mirror", "offset": job.offset,
                       "len": DISK, "ready": ready, "status": if ready {"ready"} else {"running"}});
    if job.cancelled && w.mirror_stuck {
        v["status"] = json!("ready");
    } else if job.cancelled {
        v["status"] = json!("concluded");
    } else if w.mirror_fails && job.offset > 0 {
        v["status"] = json!("concluded");
        v["error"] = json!("Connection reset by peer");
        v["ready"] = json!(false);
    }
    json!([v])
}

fn migrate_json(w: &mut World) -> Value {
    if !w.migrating {
        return w.earlier.map_or(json!({}), |s| json!({"status": s}));
    }
    if w.migration_cancelled {
        return json!({"status": "cancelled"});
    }
    w.migrate_polls += 1;
    let ram = json!({"transferred": 900, "remaining": 0, "total": 1000, "dirty-sync-count": 2});
    if w.migrate_fails {
        w.source_paused = true;
        return json!({"status": "failed", "error-desc": "Unable to write to socket"});
    }
    match (w.migrate_polls, w.continued) {
        (0..=2, _) => json!({"status": "active", "ram": ram}),
        (_, false) => {
            w.source_paused = true;
            json!({"status": "pre-switchover", "ram": ram})
        }
        (_, true) => json!({"status": "completed", "ram": ram, "downtime": 30}),
    }
}

fn source(world: Shared) -> ScriptedQmp {
    ScriptedQmp::new(move |cmd, args| {
        let mut w = world.lock().expect("lock");
        match cmd {
            "blockdev-add" => w.target_attached = true,
            "blockdev-mirror" => {
                w.job = Some(Job {
                    offset: 0,
                    cancelled: false,
                })
            }
            "query-block-jobs" => return Ok(job_json(&mut w)),
            "query-block" => {
                let node = w.root.unwrap_or("drover-disk0");
                return Ok(json!([{"device": "", "inserted": {"node-name": node},
                    "qdev": "/machine/peripheral/drover-disk0-dev/virtio-backend"}]));
            }
            "query-named-block-nodes" => {
                let mut nodes = vec![json!({"node-name": "drover-disk0"})];
                if w.target_attached {
                    nodes.push(json!({"node-name": "drover-disk0-nbd"}));
                }
                return Ok(json!(nodes));
            }
            "block-job-cancel" => match w.job.as_mut() {
                Some(j) => j.cancelled = true,
                None => return refuse(cmd, "refused"),
            },
            "job-dismiss" => w.job = None,
            "blockdev-del" if w.target_del_fails || w.job.is_some() => {
                return refuse(cmd, "refused")
            }
            "blockdev-del" => w.target_attached = false,
            "migrate" => w.migrating = true,
            "migrate-continue" => {
                assert_eq!(args, Some(&json!({"state": "pre-switchover"})));
                assert!(
                    !w.target_attached,
                    "continue with the NBD node still attached"
                );
                w.continued = true;
            }
            "migrate_cancel" => w.migration_cancelled = true,
            "query-migrate" => return Ok(migrate_json(&mut w)),
            "query-status" => return status_reply(!w.source_paused, "postmigrate"),
            "cont" => w.source_paused = false,
            "query-migrate-capabilities" => return Ok(json!([])),
            _ => {}
        }
        Ok(json!({}))
    })
}

fn dest(world: Shared) -> ScriptedQmp {
    ScriptedQmp::new(move |cmd, _| {
        let mut w = world.lock().expect("lock");
        let moved = w.continued && w.migrate_polls > 3;
        match cmd {
            "nbd-server-start" => w.server_up = true,
            "nbd-server-stop" => w.server_up = false,
            "query-migrate" if moved => return Ok(json!({"status": "completed"})),
            "query-migrate" => return Ok(json!({"status": "active"})),
            "query-status" => return status_reply(moved, "inmigrate"),
            "query-migrate-capabilities" => return Ok(json!([])),
            _ => {}
        }
        Ok(json!({}))
    })
}

type Rig = crate::test_rig::Rig<World>;

fn rig(setup: impl FnOnce(&mut World)) -> Rig {
    Rig::new(setup, source, dest)
}

async fn run(r: &Rig) -> StorageRun {
    let nbd = NbdAddr::new("127.0.0.1:10809".parse().expect("addr")).expect("nbd");
    let target = DiskTarget {
        disk: DiskNodes::of(0),
        nbd,
    };
    migrate_with_storage(
        &r.ends(),
        &target,
        MigrationPlan::fixed(Technique::Precopy),
        &DriverConfig::default(),
        &StorageConfig::default(),
        &Clock::default(),
        None,
    )
    .await
    .expect("run")
}

#[tokio::test(start_paused = true)]
async fn storage_precopy_mirrors_then_switches_over_in_libvirts_order() {
    let r = rig(|_| {});
    let run = run(&r).await;
    let memory = run.memory.expect("memory migration ran");
    assert_eq!(memory.outcome.status, EndStatus::Completed);
    assert_eq!(run.storage.error, None, "{:?}", run.storage);
    assert!(run.cleanup_errors.is_empty());
    assert_eq!(
        actions(&r.dest),
        [
            "nbd-server-start",
            "block-export-add",
            "migrate-set-capabilities",
            "migrate-incoming",
            "nbd-server-stop"
        ]
    );
    assert_eq!(
        actions(&r.source),
        [
            "blockdev-add",
            "blockdev-mirror",
            "migrate-set-capabilities",
            "migrate-set-parameters",
            "migrate",
            "block-job-cancel",
            "job-dismiss",
            "blockdev-del",
            "migrate-continue"
        ]
    );
    let mirror = &args_of(&r.source, "blockdev-mirror")[0];
    assert_eq!(mirror["device"], "drover-disk0");
    assert_eq!(mirror["sync"], "full");
    assert_eq!(mirror["copy-mode"], "background");
    assert_eq!(mirror["target"], "drover-disk0-nbd");
    assert_eq!(args_of(&r.source, "block-job-cancel")[0]["force"], false);
    let caps = args_of(&r.source, "migrate-set-capabilities")[0].to_string();
    assert!(
        caps.contains(r#"{"capability":"pause-before-switchover","state":true}"#),
        "{caps}"
    );
    let server = &args_of(&r.dest, "nbd-server-start")[0];
    assert_eq!(server["addr"]["data"]["port"], "10809");
    assert_eq!(args_of(&r.dest, "block-export-add")[0]["writable"], true);
    assert_eq!(run.storage.transferred_bytes, DISK);
    assert!(run.storage.mirror_to_ready_ms.is_some());
    assert!(run.storage.ready_to_cancel_ms.is_some());
    assert!(run.storage.cancel_to_concluded_ms.is_some());
    let w = r.world.lock().expect("lock");
    assert!(!w.server_up && !w.target_attached && w.job.is_none());
}

/// A VM that arrived by a storage post-copy sits on the copy-on-read filter: the mirror
/// starts from that root (QEMU refuses a non-root node: "Need a root block node").
#[tokio::test(start_paused = true)]
async fn a_vm_on_the_copy_on_read_filter_is_mirrored_from_it() {
    let r = rig(|w| w.root = Some("drover-disk0-cor"));
    let run = run(&r).await;
    assert_eq!(run.storage.error, None, "{:?}", run.storage);
    assert!(run.memory.is_some());
    let mirror = &args_of(&r.source, "blockdev-mirror")[0];
    assert_eq!(mirror["device"], "drover-disk0-cor");
    assert_eq!(mirror["target"], "drover-disk0-nbd");
}

/// A device on a node Drover did not make is refused before any mirror, and what was set up
/// is undone.
#[tokio::test(start_paused = true)]
async fn a_device_on_a_foreign_node_is_refused_before_the_mirror() {
    let r = rig(|w| w.root = Some("drover-disk0-file"));
    let run = run(&r).await;
    assert!(run.memory.is_none());
    let error = run.storage.error.expect("error");
    assert!(error.contains("'drover-disk0-file'"), "{error}");
    assert_eq!(actions(&r.source), ["blockdev-add", "blockdev-del"]);
    let w = r.world.lock().expect("lock");
    assert!(!w.server_up && !w.target_attached && w.job.is_none());
}

/// The lab's retry after a cancelled attempt: the source still says `cancelled` when the new
/// run starts, which must not end the switchover watch before the new migration pauses at
/// `pre-switchover` (it would wait there until the deadline).
#[tokio::test(start_paused = true)]
async fn an_earlier_migrations_end_does_not_end_the_switchover_watch() {
    for earlier in ["cancelled", "failed", "completed"] {
        let r = rig(|w| w.earlier = Some(earlier));
        let run = run(&r).await;
        let memory = run.memory.expect("memory migration ran");
        assert_eq!(memory.outcome.status, EndStatus::Completed, "{earlier}");
        assert_eq!(run.storage.error, None, "{earlier}: {:?}", run.storage);
        assert!(actions(&r.source).contains(&"migrate-continue".to_string()));
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_mirror_is_cleaned_up_before_any_memory_moves() {
    let r = rig(|w| w.mirror_fails = true);
    let run = run(&r).await;
    assert!(run.memory.is_none());
    let error = run.storage.error.expect("error");
    assert!(
        error.contains("mirror READY wait") && error.contains("Connection reset"),
        "{error}"
    );
    // The job ended by itself: dismissed, not cancelled; then the node and the server go.
    assert_eq!(
        actions(&r.source),
        [
            "blockdev-add",
            "blockdev-mirror",
            "job-dismiss",
            "blockdev-del"
        ]
    );
    assert_eq!(
        actions(&r.dest),
        ["nbd-server-start", "block-export-add", "nbd-server-stop"]
    );
    assert!(run.cleanup_errors.is_empty(), "{:?}", run.cleanup_errors);
    let w = r.world.lock().expect("lock");
    assert!(!w.migrating && !w.server_up && !w.target_attached && w.job.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_migration_failing_after_ready_abandons_the_mirror_and_keeps_the_source() {
    let r = rig(|w| w.migrate_fails = true);
    let run = run(&r).await;
    let memory = run.memory.expect("memory migration ran");
    assert_eq!(memory.outcome.status, EndStatus::Failed);
    assert!(!memory.outcome.vm_on_destination);
    let error = run.storage.error.expect("error");
    assert!(error.contains("memory migration"), "{error}");
    let source = actions(&r.source);
    let migrate = source.iter().position(|n| n == "migrate").expect("migrate");
    // The driver resumes the guest on the source first (it runs on its own disk, which the
    // mirror only reads), then the mirror is abandoned and its node deleted.
    assert_eq!(
        source[migrate + 1..],
        ["cont", "block-job-cancel", "job-dismiss", "blockdev-del"]
    );
    assert_eq!(args_of(&r.source, "block-job-cancel")[0]["force"], true);
    assert!(!source.contains(&"migrate-continue".to_string()));
    assert_eq!(
        actions(&r.dest).last().map(String::as_str),
        Some("nbd-server-stop")
    );
    assert!(run.cleanup_errors.is_empty(), "{:?}", run.cleanup_errors);
    let w = r.world.lock().expect("lock");
    assert!(!w.source_paused, "the guest runs on the source again");
    assert!(!w.server_up && !w.target_attached && w.job.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failed_switchover_cancels_the_migration_instead_of_continuing() {
    let r = rig(|w| w.target_del_fails = true);
    let run = run(&r).await;
    let memory = run.memory.expect("memory migration ran");
    assert!(!memory.outcome.vm_on_destination);
    let error = run.storage.error.expect("error");
    assert!(error.contains("blockdev-del"), "{error}");
    let source = actions(&r.source);
    assert!(
        !source.contains(&"migrate-continue".to_string()),
        "{source:?}"
    );
    let del = source
        .iter()
        .position(|n| n == "blockdev-del")
        .expect("del");
    assert_eq!(source[del + 1], "migrate_cancel");
    // The clean-up tries the node again (it still fails here) and stops the server.
    assert_eq!(run.cleanup_errors.len(), 1, "{:?}", run.cleanup_errors);
    assert_eq!(
        actions(&r.dest).last().map(String::as_str),
        Some("nbd-server-stop")
    );
    assert!(!r.world.lock().expect("lock").source_paused);
}

/// What an earlier attempt left when its target was unreachable: a mirror job still listed and
/// the NBD node.
fn leftovers(w: &mut World) {
    w.job = Some(Job {
        offset: DISK / 2,
        cancelled: false,
    });
    w.target_attached = true;
}

#[tokio::test(start_paused = true)]
async fn an_earlier_attempts_mirror_and_node_are_removed_before_a_new_one() {
    let r = rig(leftovers);
    let run = run(&r).await;
    assert_eq!(run.storage.error, None, "{:?}", run.storage);
    assert_eq!(
        run.memory.expect("memory migration ran").outcome.status,
        EndStatus::Completed
    );
    let source = actions(&r.source);
    assert_eq!(
        source[..4],
        [
            "block-job-cancel",
            "job-dismiss",
            "blockdev-del",
            "blockdev-add"
        ],
        "{source:?}"
    );
    assert_eq!(args_of(&r.source, "block-job-cancel")[0]["force"], true);
}

#[tokio::test(start_paused = true)]
async fn a_mirror_that_still_will_not_stop_fails_the_attempt_before_anything_is_set_up() {
    let r = rig(|w| {
        leftovers(w);
        w.mirror_stuck = true;
    });
    let run = run(&r).await;
    assert!(run.memory.is_none());
    let error = run.storage.error.expect("an error");
    assert!(
        error.contains("earlier storage migration") && error.contains("link"),
        "{error}"
    );
    assert!(actions(&r.dest).is_empty(), "{:?}", actions(&r.dest));
    assert_eq!(actions(&r.source), ["block-job-cancel"]);
    assert!(run.cleanup_errors.is_empty(), "{:?}", run.cleanup_errors);
}
