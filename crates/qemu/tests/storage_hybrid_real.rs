//! A real hybrid storage migration under QEMU (TCG): the source exports its 64 MiB qcow2
//! disk, the destination runs on an overlay of it and exports that overlay writable, the
//! hot set (the disk's first 16 MiB, s = 0.25 of a profile whose first region is hottest)
//! is pushed ahead, the blocks written meanwhile in rounds, what is still dirty in the
//! freeze, memory migrates (pre-copy, then again with post-copy: QEMU also stops at
//! `pre-switchover` before a post-copy switch), the rest is streamed, and the images are
//! compared. A second test cancels the memory migration after the push: it rolls back.
//!
//! Equality as in `common::pair`'s module doc: after the stream the destination's image is
//! the source's final image plus the writes the test made on the destination, replayed on a
//! copy of the source's image once both QEMUs are gone (`qemu-img compare`). The source's
//! writes are made by the test too, through QEMU's block layer on the guest's device
//! (`qemu-io` monitor command): a stream of writes inside the hot set while the push runs
//! (so rounds have dirty blocks to copy) and two writes outside it while memory migrates by
//! pre-copy (so the freeze has some; with post-copy they come before the push and are
//! pulled), never while the guest is stopped.
//!
//! Needs qemu-system-x86_64, qemu-img and qemu-io (a failure under CI when missing) and the
//! guest image inputs (run scripts/setup). QEMUs die with their `LocalVm` handles and the
//! images with the temporary directory, even on failure.

use drover_core::migration::wan::{DiskProfile, RegionCount};
use drover_core::migration::{
    EndStatus, HotSet, HybridSettings, MigrationStatus, PostcopyOutcome, StorageMode, Technique,
};
use drover_qemu::disk::DiskNodes;
use drover_qemu::driver::DriverConfig;
use drover_qemu::qmp::{BlockExt, Qmp, QmpExt};
use drover_qemu::storage_hybrid::{HybridConfig, HybridSession, HybridTarget};
use drover_qemu::vm::LocalVm;
use drover_testkit::{require, QEMU, QEMU_IMG};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod common;

use common::assert_no_qemu_left;
use common::disk::{io_live, nbd_addr, qemu_io, until_status};
use common::pair::{ends, plan, until_streamed, Pair, Source, DEST_WRITES, DISK_BYTES};

const MIB: u64 = 1 << 20;
const HOT_BYTES: u64 = 16 * MIB;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The source with its disk exported, the destination launched on an overlay of it.
async fn boot(test: &str, settings: HybridSettings) -> Pair<HybridSession> {
    let source = Source::boot(test).await;
    let target = HybridTarget {
        disk: DiskNodes::of(0),
        source_nbd: nbd_addr(),
        dest_nbd: nbd_addr(),
    };
    let config = HybridConfig {
        settings,
        ..HybridConfig::default()
    };
    let session = HybridSession::export(&source.src.qmp, &target, config)
        .await
        .unwrap_or_else(|run| panic!("source export: {run:?}"));
    let backing = session.backing();
    source.with_dest(session, backing).await
}

/// The patterns the destination's image must hold after the stream.
const READS: [&str; 5] = [
    "read -P 0x5a 0 8M",
    "read -P 0x33 16M 2M",
    "read -P 0x77 20M 1M",
    "read -P 0x66 41M 4k",
    "read -P 0x44 63M 1M",
];

/// s = 0.25 of a profile whose first of four regions took every access: the first 16 MiB.
fn hot_set() -> HotSet {
    let hot = RegionCount {
        reads: 900,
        writes: 100,
    };
    let regions = vec![
        hot,
        RegionCount::default(),
        RegionCount::default(),
        RegionCount::default(),
    ];
    let disk = DiskProfile::new(DISK_BYTES, 64 << 10, 1e6, 1e5, regions).expect("profile");
    HotSet::hottest(&disk, 0.25, 64 << 10).expect("hot set")
}

/// Writes inside the hot set on the source (through its block layer, as the guest would)
/// until the memory migration is seen active: the push rounds' dirty blocks. Returns how
/// many it made (bounded: 400).
async fn write_during_push(src: &LocalVm) -> usize {
    for i in 0..400usize {
        if let Ok(Some(s)) = src.qmp.query_migrate(0).await.map(|p| p.status) {
            if s != MigrationStatus::None && s != MigrationStatus::Setup {
                return i;
            }
        }
        let offset = 8 * MIB + (i as u64 % 8) * MIB;
        let w = format!("write -P 0x{:x} {offset} 256k", 0x20 + i % 16);
        io_live(&src.qmp, &w).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    400
}

/// The source's dirty bitmaps and block nodes besides its disk's own: none may be left.
async fn assert_source_clean(src: &LocalVm) {
    let nodes = src
        .qmp
        .execute("query-named-block-nodes", Some(json!({"flat": true})))
        .await
        .expect("nodes");
    for n in nodes.as_array().expect("list") {
        let name = n["node-name"].as_str().unwrap_or_default();
        assert!(
            ["drover-disk0", "drover-disk0-file"].contains(&name),
            "node left on the source: {name}"
        );
        let bitmaps = n["dirty-bitmaps"].as_array().map_or(0, Vec::len);
        assert_eq!(bitmaps, 0, "bitmaps left on {name}: {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_pushes_the_hot_set_freezes_and_streams_the_rest() {
    require!(QEMU, QEMU_IMG);
    let _serial = SERIAL.lock().await;
    for technique in [Technique::Precopy, Technique::Postcopy] {
        move_and_compare(technique).await;
    }
}

/// One hybrid with memory moved by `technique`: writes on the source during the push and
/// (memory pre-copy) the memory migration, or before it (post-copy switches at once), writes
/// on the destination during the stream, then the checks.
async fn move_and_compare(technique: Technique) {
    let settings = HybridSettings {
        max_rounds: 4,
        dirty_threshold_bytes: 512 << 10,
        push_timeout_ms: 60_000,
        freeze_timeout_ms: 30_000,
        // Slow enough that the writes below land while the push runs.
        push_speed_bps: Some(16 << 20),
    };
    let mut pair = boot(&format!("shy-{technique}"), settings).await;
    let (src, dst, clock) = (&pair.src, &pair.dst, pair.clock);
    let hot = hot_set();
    assert_eq!(hot.bytes(), HOT_BYTES);
    let precopy = technique == Technique::Precopy;
    if !precopy {
        // Outside the hot set and before the tracking: the stream pulls these.
        io_live(&src.qmp, "write -P 0x33 16M 2M").await;
        io_live(&src.qmp, "write -P 0x44 63M 1M").await;
    }
    let on_source = async {
        let pushed_writes = write_during_push(src).await;
        if precopy {
            if !until_status(&src.qmp, &[MigrationStatus::Active]).await {
                return None;
            }
            // Outside the hot set, while memory migrates: only the freeze can carry these.
            io_live(&src.qmp, "write -P 0x33 16M 2M").await;
            io_live(&src.qmp, "write -P 0x44 63M 1M").await;
        }
        Some(pushed_writes)
    };
    let on_dest = async {
        if !until_streamed(dst, 1).await {
            return false;
        }
        io_live(&dst.qmp, "read -P 0x33 16M 2M").await;
        for w in DEST_WRITES {
            io_live(&dst.qmp, w).await;
        }
        true
    };
    let ends = ends(src, dst);
    let started = Instant::now();
    let driver_config = DriverConfig::default();
    let scratch = pair.dir.path().to_path_buf();
    let migration = pair.session.migrate(
        &ends,
        &hot,
        &scratch,
        plan(technique),
        &driver_config,
        &clock,
        None,
    );
    let (run, wrote_src, wrote_dst) = tokio::join!(migration, on_source, on_dest);
    let elapsed = started.elapsed();
    let run = run.expect("hybrid");
    let pushed_writes = wrote_src.expect("no active migration to write during");
    assert!(wrote_dst, "no stream to write during: {run:?}");
    let memory = run.memory.clone().expect("memory migration ran");
    assert_eq!(
        memory.outcome.status,
        EndStatus::Completed,
        "{:?}",
        memory.outcome
    );
    assert_eq!(run.outcome, PostcopyOutcome::Completed, "{run:?}");
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    let s = &run.storage;
    assert_eq!(s.mode, StorageMode::Hybrid);
    assert_eq!(s.error, None, "{s:?}");
    assert_eq!(s.hot_bytes, HOT_BYTES, "{s:?}");
    assert!(s.pushed_bytes >= HOT_BYTES + s.freeze_bytes, "{s:?}");
    if precopy {
        let carried = "the freeze carries 16M+2M and 63M+1M";
        assert!(s.freeze_bytes >= 3 * MIB, "{carried}: {s:?}");
    }
    assert!(s.freeze_ms.is_some(), "{s:?}");
    let pulled = s.pulled_bytes.expect("pulled figure");
    assert!(pulled < DISK_BYTES - HOT_BYTES, "{s:?}");
    let result = memory.result(&pair.samples.snapshot());
    eprintln!(
        "storage hybrid, memory {technique}: {s:?}; source writes during the push: \
         {pushed_writes}; memory: total {} ms, downtime {:?} ms; whole run {} ms",
        result.total_ms,
        result.downtime_ms,
        elapsed.as_millis()
    );
    drop(ends);
    assert_source_clean(&pair.src).await;
    let stop = pair.src.qmp.nbd_server_stop().await;
    assert!(stop.is_err(), "the source's NBD server was still running");
    pair.assert_standalone().await;
    pair.finish(&READS).await;
}

/// The memory migration is cancelled after the push: everything rolls back, the guest runs
/// on the source with its own disk, and nothing of the push is left there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_hybrid_rolls_back_to_the_source() {
    require!(QEMU, QEMU_IMG);
    let _serial = SERIAL.lock().await;
    let mut pair = boot("shy-cancel", HybridSettings::default()).await;
    let (src, dst, clock) = (&pair.src, &pair.dst, pair.clock);
    let (tx, rx) = watch::channel(false);
    let mut slow = plan(Technique::Precopy);
    // Too slow to converge: the cancel always comes first.
    slow.max_bandwidth_bps = Some(1 << 20);
    let cancel = async {
        let active = until_status(&src.qmp, &[MigrationStatus::Active]).await;
        tx.send(true).ok();
        active
    };
    let ends = ends(src, dst);
    let driver_config = DriverConfig::default();
    let scratch = pair.dir.path().to_path_buf();
    let hot = hot_set();
    let migration = pair.session.migrate(
        &ends,
        &hot,
        &scratch,
        slow,
        &driver_config,
        &clock,
        Some(rx),
    );
    let (run, active) = tokio::join!(migration, cancel);
    let run = run.expect("hybrid");
    assert!(active, "the memory migration never started: {run:?}");
    assert_eq!(run.outcome, PostcopyOutcome::RolledBack, "{run:?}");
    assert_eq!(run.storage.hot_bytes, HOT_BYTES);
    assert!(run.storage.error.is_some(), "{:?}", run.storage);
    eprintln!(
        "cancelled hybrid: {:?}; errors {:?}",
        run.storage, run.errors
    );
    let status = src.qmp.query_status().await.expect("source status");
    assert!(status.running, "source guest: {}", status.status);
    drop(ends);
    assert_source_clean(&pair.src).await;
    // The source still writes its own disk.
    io_live(&pair.src.qmp, "write -P 0x99 30M 1M").await;
    let Pair {
        src_img,
        src,
        dst,
        tag,
        ..
    } = pair;
    src.qmp
        .execute("stop", None)
        .await
        .expect("stop the source");
    src.kill().await;
    dst.kill().await;
    assert_no_qemu_left(&tag);
    qemu_io(&src_img, "read -P 0x99 30M 1M");
    qemu_io(&src_img, "read -P 0x5a 0 8M");
}
