use super::*;
use crate::qmp::ScriptedQmp;
use drover_core::migration::{HybridStep, StorageMode};
use serde_json::json;

fn target() -> HybridTarget {
    let addr = |s: &str| NbdAddr::new(s.parse().expect("addr")).expect("nbd");
    HybridTarget {
        disk: DiskNodes::of(0),
        source_nbd: addr("127.0.0.1:10901"),
        dest_nbd: addr("127.0.0.1:10902"),
    }
}

/// Endpoints of two scripted QEMUs (no migration stream runs).
fn fake_ends<'a>(source: &'a ScriptedQmp, dest: &'a ScriptedQmp) -> Endpoints<'a> {
    Endpoints {
        source,
        dest,
        uri: "tcp:127.0.0.1:1".into(),
        recover_uri: "tcp:127.0.0.1:2".into(),
    }
}

#[test]
fn names_derive_from_the_disks_node() {
    let n = PushNames::of(&DiskNodes::of(0));
    assert_eq!(
        (
            n.hot.as_str(),
            n.dirty.as_str(),
            n.scratch.as_str(),
            n.job.as_str()
        ),
        (
            "drover-disk0-hot",
            "drover-disk0-dirty",
            "drover-disk0-hotset",
            "drover-disk0-push"
        )
    );
}

/// The destination refuses its export: the push rolls back what it set up (the
/// destination's server) and the pull half's (the source's server); no memory migration.
#[tokio::test]
async fn a_refused_destination_export_rolls_everything_back() {
    let source = ScriptedQmp::new(|_, _| Ok(json!({})));
    let dest = ScriptedQmp::new(|cmd, _| match cmd {
        "block-export-add" => Err(QmpError::Command {
            command: cmd.into(),
            class: "GenericError".into(),
            desc: "Permission conflict".into(),
        }),
        _ => Ok(json!({})),
    });
    let mut session = HybridSession::export(&source, &target(), HybridConfig::default())
        .await
        .expect("export");
    let ends = fake_ends(&source, &dest);
    let hot = HotSet::from_ranges(64 << 20, 65536, &[]).expect("hot");
    let dir = tempfile::tempdir().expect("dir");
    let run = session
        .migrate(
            &ends,
            &hot,
            dir.path(),
            MigrationPlan::fixed(drover_core::migration::Technique::Precopy),
            &DriverConfig::default(),
            &Clock::default(),
            None,
        )
        .await
        .expect("run");
    assert_eq!(run.outcome, PostcopyOutcome::RolledBack, "{run:?}");
    assert!(run.memory.is_none());
    assert_eq!(run.storage.mode, StorageMode::Hybrid);
    let error = run.storage.error.clone().expect("error");
    assert!(
        error.contains(HybridStep::DestExportAdd.name()) && error.contains("Permission"),
        "{error}"
    );
    assert_eq!(
        dest.command_names(),
        ["nbd-server-start", "block-export-add", "nbd-server-stop"]
    );
    assert_eq!(
        source.command_names(),
        ["nbd-server-start", "block-export-add", "nbd-server-stop"]
    );
    assert!(run.errors.is_empty(), "{:?}", run.errors);
}

/// `query-block` of a guest whose disk 0 sits on its format node.
fn device_on_format_node() -> serde_json::Value {
    json!([{"qdev": DiskNodes::of(0).qdev_path(), "inserted": {"node-name": "drover-disk0"}}])
}

/// A source that answers the push's commands: the hot bitmap counts `hot` bytes, the
/// tracking bitmap's count goes through `dirty`, one per look at the nodes (the first is the
/// hot bitmap's own look; the last repeats), every job is
/// concluded at once with `len` 1 MiB.
fn pushing_source(hot: u64, dirty: Vec<u64>) -> ScriptedQmp {
    let mut looks = 0usize;
    ScriptedQmp::new(move |cmd, _| match cmd {
        "query-block" => Ok(device_on_format_node()),
        "query-named-block-nodes" => {
            let d = dirty[looks.min(dirty.len() - 1)];
            looks += 1;
            Ok(json!([{"node-name": "drover-disk0", "dirty-bitmaps": [
                {"name": "drover-disk0-hot", "count": hot},
                {"name": "drover-disk0-dirty", "count": d}]}]))
        }
        "query-block-jobs" => Ok(
            json!([{"device": "drover-disk0-push", "status": "concluded",
                                         "offset": 1048576, "len": 1048576}]),
        ),
        _ => Ok(json!({})),
    })
}

fn args_of(q: &ScriptedQmp, command: &str) -> Vec<serde_json::Value> {
    q.calls()
        .into_iter()
        .filter(|c| c.command == command)
        .filter_map(|c| c.arguments)
        .collect()
}

/// The push in QMP's terms: the destination's writable export, the hot bitmap merged from
/// the scratch image, the tracking bitmap, the target, the hot set's copy (bitmap-mode
/// never, rate-limited), rounds while the tracking bitmap is over the threshold (on-success).
#[tokio::test]
async fn the_push_copies_the_hot_set_then_rounds_until_few_dirty_blocks_remain() {
    drover_testkit::require!(drover_testkit::QEMU_IMG);
    let source = pushing_source(16 << 20, vec![0, 3 << 20, 2 << 20, 100]);
    let dest = ScriptedQmp::new(|_, _| Ok(json!({})));
    let config = HybridConfig {
        settings: HybridSettings {
            max_rounds: 5,
            dirty_threshold_bytes: 1 << 20,
            push_timeout_ms: 5000,
            freeze_timeout_ms: 5000,
            push_speed_bps: Some(8 << 20),
        },
        poll_interval: Duration::from_millis(1),
        ..HybridConfig::default()
    };
    let mut session = HybridSession::export(&source, &target(), config)
        .await
        .expect("export");
    let ends = fake_ends(&source, &dest);
    let hot = HotSet::from_ranges(
        64 << 20,
        65536,
        &[drover_core::migration::ByteRange {
            offset: 0,
            len: 16 << 20,
        }],
    )
    .expect("hot");
    let dir = tempfile::tempdir().expect("dir");
    session
        .push(&ends, &hot, dir.path(), &Clock::default(), &None)
        .await
        .expect("push");
    assert_eq!(
        session.phase(),
        &HybridPhase::Mirroring,
        "hot set, then two rounds (3 MiB, 2 MiB dirty), then 100 bytes: enough; the mirror"
    );
    let mirror = &args_of(&source, "blockdev-mirror")[0];
    assert_eq!(
        (
            &mirror["sync"],
            &mirror["device"],
            &mirror["target"],
            &mirror["speed"]
        ),
        (
            &json!("none"),
            &json!("drover-disk0"),
            &json!("drover-disk0-nbd"),
            &json!(8 << 20)
        )
    );
    assert_eq!(mirror["granularity"], 4096);
    let disable = &args_of(&source, "block-dirty-bitmap-disable")[0];
    assert_eq!(disable["name"], "drover-disk0-dirty");
    let names = source.command_names();
    let at = |c: &str| names.iter().position(|n| n == c);
    assert!(
        at("blockdev-mirror") < at("block-dirty-bitmap-disable"),
        "{names:?}"
    );
    assert!(
        std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
        "the scratch image is deleted"
    );
    assert_eq!(
        dest.command_names(),
        ["nbd-server-start", "block-export-add"]
    );
    assert_eq!(args_of(&dest, "block-export-add")[0]["writable"], true);
    let adds = args_of(&source, "blockdev-add");
    assert_eq!(adds[0]["node-name"], "drover-disk0-hotset");
    assert_eq!(adds[0]["read-only"], true);
    assert_eq!(adds[1]["node-name"], "drover-disk0-nbd");
    let bitmaps = args_of(&source, "block-dirty-bitmap-add");
    assert_eq!(
        (
            &bitmaps[0]["name"],
            &bitmaps[0]["disabled"],
            &bitmaps[0]["granularity"]
        ),
        (&json!("drover-disk0-hot"), &json!(true), &json!(65536))
    );
    assert_eq!(
        (&bitmaps[1]["name"], &bitmaps[1]["disabled"]),
        (&json!("drover-disk0-dirty"), &json!(false))
    );
    let merge = &args_of(&source, "block-dirty-bitmap-merge")[0];
    assert_eq!(merge["bitmaps"][0]["node"], "drover-disk0-hotset");
    let backups = args_of(&source, "blockdev-backup");
    let modes: Vec<(&str, &str)> = backups
        .iter()
        .map(|b| {
            (
                b["bitmap"].as_str().unwrap_or_default(),
                b["bitmap-mode"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        modes,
        [
            ("drover-disk0-hot", "never"),
            ("drover-disk0-dirty", "on-success"),
            ("drover-disk0-dirty", "on-success")
        ]
    );
    assert!(backups.iter().all(|b| b["speed"] == 8 << 20
        && b["sync"] == "bitmap"
        && b["target"] == "drover-disk0-nbd"));
    let f = session.machine.figures();
    assert_eq!(
        (f.hot_bytes, f.pushed_bytes, f.rounds),
        (16 << 20, 3 << 20, 2)
    );
}

/// A freeze whose copy QEMU refuses (after the mirror's last sync) cancels the memory
/// migration (the guest resumes on the source) and leaves the machine failed with
/// everything to undo.
#[tokio::test]
async fn a_refused_freeze_cancels_the_memory_migration() {
    let source = ScriptedQmp::new(mirror_then(|cmd| match cmd {
        "query-migrate" => Ok(json!({"status": "pre-switchover"})),
        "blockdev-backup" => Err(QmpError::Command {
            command: cmd.into(),
            class: "GenericError".into(),
            desc: "Node is busy".into(),
        }),
        _ => Ok(json!({})),
    }));
    let dest = ScriptedQmp::new(|_, _| Ok(json!({})));
    let (machine, size) = freeze_with(&fake_ends(&source, &dest)).await;
    assert_eq!(size, None);
    assert_eq!(
        source.command_names(),
        [
            "query-migrate",
            "query-block-jobs",
            "block-job-cancel",
            "query-block-jobs",
            "job-dismiss",
            "blockdev-backup",
            "migrate_cancel"
        ]
    );
    assert_eq!(args_of(&source, "block-job-cancel")[0]["force"], false);
    assert!(dest.calls().is_empty(), "{:?}", dest.calls());
    assert_eq!(
        machine.cleanup(),
        [
            HybridCleanup::CancelPush,
            HybridCleanup::DeleteTarget,
            HybridCleanup::DropBitmaps,
            HybridCleanup::StopDestServer
        ]
    );
}

/// A source whose mirror of new writes is READY until cancelled, then concluded having
/// processed 5 MiB; every other command goes to `rest`.
fn mirror_then(
    mut rest: impl FnMut(&str) -> Result<serde_json::Value, QmpError> + Send + 'static,
) -> impl FnMut(&str, Option<&serde_json::Value>) -> Result<serde_json::Value, QmpError> + Send {
    let mut cancelled = false;
    move |cmd, _| match cmd {
        "query-block-jobs" if cancelled => Ok(json!([{"device": "drover-disk0-push",
            "status": "concluded", "ready": true, "offset": 5242880, "len": 5242880}])),
        "query-block-jobs" => Ok(json!([{"device": "drover-disk0-push",
            "status": "ready", "ready": true, "offset": 4194304, "len": 4194304}])),
        "block-job-cancel" => {
            cancelled = true;
            Ok(json!({}))
        }
        other => rest(other),
    }
}

/// The freeze at `pre-switchover` from a machine whose memory migration runs, the mirror
/// beside it; the machine after, and the overlay's size (None with a fake destination, which
/// has no overlay to measure, or after a failure).
async fn freeze_with(source_ends: &Endpoints<'_>) -> (HybridMachine, Option<u64>) {
    let mut machine = HybridMachine::new(HybridSettings::default());
    for e in [
        HybridEvent::DestServerStarted,
        HybridEvent::DestExported,
        HybridEvent::HotBitmapBuilt { hot_bytes: 1 },
        HybridEvent::TrackingStarted,
        HybridEvent::TargetAttached,
        HybridEvent::PushStarted { now_ms: 0 },
        HybridEvent::PushConcluded { bytes: 1 },
        HybridEvent::MirrorStarted,
        HybridEvent::MemoryStarted,
    ] {
        machine.handle(e).expect("transition");
    }
    let disk = DiskNodes::of(0);
    let config = HybridConfig {
        poll_interval: Duration::from_millis(1),
        ..HybridConfig::default()
    };
    let names = PushNames::of(&disk);
    let clock = Clock::default();
    let pusher = Pusher {
        ends: source_ends,
        disk: &disk,
        names: &names,
        config: &config,
        clock: &clock,
    };
    let size = pusher
        .at_switchover(&mut machine, &AtomicBool::new(false))
        .await;
    (machine, size)
}

/// At `pre-switchover` the freeze: the READY mirror cancelled (no force) for its last sync and
/// dismissed, then the disabled tracking bitmap copied, the node deleted, the migration
/// continued; the freeze's bytes are both jobs'. A mirror not READY there is never cancelled
/// for a sync: the migration is cancelled instead and the guest stays home.
#[tokio::test]
async fn the_freeze_ends_the_mirror_then_copies_the_tracking_bitmap() {
    let source = ScriptedQmp::new(mirror_then(|cmd| match cmd {
        "query-migrate" => Ok(json!({"status": "pre-switchover"})),
        _ => Ok(json!({})),
    }));
    let dest = ScriptedQmp::new(|_, _| Ok(json!({})));
    let ends = fake_ends(&source, &dest);
    let (machine, _) = freeze_with(&ends).await;
    assert_eq!(machine.phase(), &HybridPhase::Released);
    let names = source.command_names();
    let at = |c: &str| names.iter().position(|n| n == c);
    assert!(at("block-job-cancel") < at("blockdev-backup"), "{names:?}");
    assert!(at("blockdev-backup") < at("migrate-continue"), "{names:?}");
    assert_eq!(
        args_of(&source, "blockdev-backup")[0]["bitmap"],
        "drover-disk0-dirty"
    );
    // The mirror's 5 MiB and the backup's (the same fake job) 5 MiB.
    assert_eq!(machine.figures().freeze_bytes, 10 << 20);

    let lagging = ScriptedQmp::new(|cmd, _| match cmd {
        "query-migrate" => Ok(json!({"status": "pre-switchover"})),
        "query-block-jobs" => Ok(json!([{"device": "drover-disk0-push",
            "status": "running", "ready": false, "offset": 1, "len": 5}])),
        _ => Ok(json!({})),
    });
    let (machine, _) = freeze_with(&fake_ends(&lagging, &dest)).await;
    assert!(
        matches!(machine.phase(), HybridPhase::Failed { message, .. } if message.contains("not READY")),
        "{:?}",
        machine.phase()
    );
    assert_eq!(
        lagging.command_names(),
        ["query-migrate", "query-block-jobs", "migrate_cancel"]
    );
}

/// An earlier hybrid's push job, NBD node and both bitmaps are removed before a new one, in
/// that order; a clean source is only looked at.
#[tokio::test]
async fn leftovers_of_an_earlier_hybrid_are_swept() {
    let disk = DiskNodes::of(0);
    let left = |job: bool| {
        let nodes = json!([
            {"node-name": "drover-disk0", "dirty-bitmaps": [
                {"name": "drover-disk0-hot", "count": 65536},
                {"name": "drover-disk0-dirty", "count": 0},
                {"name": "other", "count": 1}]},
            {"node-name": "drover-disk0-nbd"}]);
        let jobs = if job {
            json!([{"device": "drover-disk0-push", "type": "backup", "len": 1, "offset": 0,
                    "status": "concluded", "ready": false, "busy": false, "paused": false,
                    "speed": 0, "io-status": "ok"}])
        } else {
            json!([])
        };
        ScriptedQmp::new(move |cmd, _| {
            Ok(match cmd {
                "query-named-block-nodes" => nodes.clone(),
                "query-block-jobs" => jobs.clone(),
                _ => json!({}),
            })
        })
    };
    let source = left(true);
    let removed = clear_leftovers(&source, &disk).await.expect("swept");
    assert_eq!(
        removed,
        [
            "push job drover-disk0-push",
            "NBD node drover-disk0-nbd",
            "dirty bitmap drover-disk0-hot",
            "dirty bitmap drover-disk0-dirty"
        ]
    );
    let changes: Vec<_> = source
        .calls()
        .into_iter()
        .map(|c| c.command)
        .filter(|c| !c.starts_with("query-"))
        .collect();
    assert_eq!(
        changes,
        [
            "job-dismiss",
            "blockdev-del",
            "block-dirty-bitmap-remove",
            "block-dirty-bitmap-remove"
        ]
    );
    let clean = ScriptedQmp::new(|cmd, _| {
        Ok(match cmd {
            "query-named-block-nodes" => json!([{"node-name": "drover-disk0"}]),
            _ => json!([]),
        })
    });
    assert!(clear_leftovers(&clean, &disk)
        .await
        .expect("clean")
        .is_empty());
    assert!(clean
        .command_names()
        .iter()
        .all(|c| c.starts_with("query-")));
    // A leftover QEMU will not remove: the error says what and to try again.
    let stuck = ScriptedQmp::new(|cmd, _| match cmd {
        "query-named-block-nodes" => Ok(json!([{"node-name": "drover-disk0-nbd"}])),
        "blockdev-del" => Err(QmpError::Command {
            command: cmd.into(),
            class: "GenericError".into(),
            desc: "Node is in use".into(),
        }),
        _ => Ok(json!([])),
    });
    let err = clear_leftovers(&stuck, &disk).await.expect_err("stuck");
    assert!(
        err.contains("left its NBD node") && err.contains("Node is in use"),
        "{err}"
    );
}
