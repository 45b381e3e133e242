//! A VM that arrived by a storage post-copy leaves again (QEMU, TCG, loopback): A boots on
//! its image and moves to B by a storage post-copy (B launched on an overlay of A's export,
//! so B's device sits on the copy-on-read filter, see `drover_qemu::disk::DiskRoot`); once
//! B's stream completed, B moves to a new C by a storage pre-copy (the mirror must start
//! from that filter: QEMU mirrors only from a root node), by a storage post-copy again (B
//! exports its format node from under the filter), or by a hybrid (B pushes its hot set with
//! `blockdev-backup` of the format node and exports it).
//!
//! The guest writes its own disk throughout (`disk` workload, half reads that verify each
//! block's generation against the guest's memory) and, during the second move, QEMU's
//! `qemu-io` writes outside its working set. Checks: the guest reports no integrity error on
//! C; with both QEMUs gone, C's image equals B's final image outside the guest's working set
//! (`qemu-img compare` after the same pattern is written over that set in copies of both:
//! the guest keeps writing it on C after the switch, and checks it itself).
//!
//! Needs qemu-system-x86_64, qemu-img and qemu-io (a failure under CI when missing, a loud
//! skip elsewhere) and the guest image inputs (run scripts/setup). QEMUs die with their
//! `LocalVm` handles and the images with the temporary directory, even on failure; each test
//! checks it left no QEMU behind.

use drover_core::migration::wan::{DiskProfile, RegionCount};
use drover_core::migration::{
    EndStatus, HotSet, HybridSettings, MigrationStatus, PostcopyOutcome, PostcopySettings,
    Technique,
};
use drover_qemu::disk::{create_qcow2, virtual_size, DiskNodes, DiskRoot, DiskSpec, NbdBacking};
use drover_qemu::driver::DriverConfig;
use drover_qemu::metrics::{Clock, Samples};
use drover_qemu::qmp::{BlockExt, Qmp, QmpExt};
use drover_qemu::storage::{migrate_with_storage, DiskTarget, StorageConfig};
use drover_qemu::storage_hybrid::{HybridConfig, HybridSession, HybridTarget};
use drover_qemu::storage_postcopy::{PostcopyConfig, PostcopySession};
use drover_qemu::vm::LocalVm;
use drover_testkit::{require, QEMU, QEMU_IMG};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use common::disk::{assert_same_contents, io_live, nbd_addr, qemu_io, until_status};
use common::pair::{ends, plan, Pair, Source, DISK_BYTES};
use common::{assert_no_qemu_left, boot, launcher};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The guest's disk workload: 8 MiB at the disk's start, half of the operations reads that
/// verify a block.
const WORKLOAD: &str = "disk:wss=8M,rate=200,read=50";

/// The guest's working set on the disk, as a `qemu-io` write over it.
const MASK_WORKING_SET: &str = "write -P 0xee 0 8M";

/// Writes on B during the second move, outside the guest's working set.
const WRITES: [&str; 2] = ["write -P 0x33 16M 2M", "write -P 0x44 63M 1M"];

/// A -> B by a storage post-copy (memory by post-copy, as the CLI repro does), stream
/// completed: B's device sits on the copy-on-read filter.
async fn arrive(test: &str) -> Pair<PostcopySession> {
    let source = Source::boot_with(test, WORKLOAD).await;
    let target = DiskTarget {
        disk: DiskNodes::of(0),
        nbd: nbd_addr(),
    };
    let config = PostcopyConfig {
        settings: PostcopySettings::default(),
        ..PostcopyConfig::default()
    };
    let session = PostcopySession::export(&source.src.qmp, &target, config)
        .await
        .unwrap_or_else(|run| panic!("source export: {run:?}"));
    let backing = session.backing();
    let mut pair = source.with_dest(session, backing).await;
    let ends = ends(&pair.src, &pair.dst);
    let run = pair
        .session
        .migrate(
            &ends,
            plan(Technique::Postcopy),
            &DriverConfig::default(),
            &pair.clock,
            None,
        )
        .await
        .expect("first storage post-copy");
    drop(ends);
    assert_eq!(run.outcome, PostcopyOutcome::Completed, "{run:?}");
    assert_eq!(run.storage.error, None, "{:?}", run.storage);
    pair.assert_standalone().await;
    let root = pair.dst.qmp.device_root(&DiskNodes::of(0)).await;
    assert_eq!(root, Ok(DiskRoot::CopyOnRead));
    eprintln!("arrived by storage post-copy: {:?}", run.storage);
    pair
}

/// C: a destination for B in the pair's directory, on `disk`, reporting into the pair's
/// samples.
async fn launch_c(pair: &Pair<PostcopySession>, disk: DiskSpec) -> LocalVm {
    let l = launcher(128);
    let mut spec = l.spec(&pair.tag, pair.workload, true);
    spec.disk = Some(disk);
    boot(
        &l,
        &spec,
        &pair.dir.path().join("c"),
        pair.clock,
        &pair.samples,
    )
    .await
}

/// C on an empty overlay (`c.qcow2`) backed by B's export (`backing`).
async fn launch_c_on_overlay(
    pair: &Pair<PostcopySession>,
    backing: NbdBacking,
) -> (LocalVm, PathBuf) {
    let c_img = pair.dir.path().join("c.qcow2");
    let size = virtual_size(&pair.dst_img).await.expect("size");
    create_qcow2(&c_img, size).await.expect("C's overlay");
    let overlay = DiskSpec::Overlay {
        overlay: c_img.clone(),
        source: backing,
    };
    (launch_c(pair, overlay).await, c_img)
}

/// Writes [`WRITES`] on B once its migration is active.
async fn write_during(b: &LocalVm) -> bool {
    if !until_status(&b.qmp, &[MigrationStatus::Active]).await {
        return false;
    }
    for w in WRITES {
        io_live(&b.qmp, w).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_storage_postcopy_the_vm_leaves_by_storage_precopy() {
    require!(QEMU, QEMU_IMG);
    let _serial = SERIAL.lock().await;
    let pair = arrive("sret-pre").await;
    let c_img = pair.dir.path().join("c.qcow2");
    let size = virtual_size(&pair.dst_img).await.expect("size");
    create_qcow2(&c_img, size).await.expect("C's image");
    let c = launch_c(&pair, DiskSpec::Image(c_img.clone())).await;
    let ends = ends(&pair.dst, &c);
    let target = DiskTarget {
        disk: DiskNodes::of(0),
        nbd: nbd_addr(),
    };
    let driver_config = DriverConfig::default();
    let config = StorageConfig::default();
    let migration = migrate_with_storage(
        &ends,
        &target,
        plan(Technique::Precopy),
        &driver_config,
        &config,
        &pair.clock,
        None,
    );
    let (run, wrote) = tokio::join!(migration, write_during(&pair.dst));
    let run = run.expect("storage pre-copy back");
    drop(ends);
    assert!(wrote, "no active migration to write during");
    assert_eq!(run.storage.error, None, "{:?}", run.storage);
    assert!(run.cleanup_errors.is_empty(), "{:?}", run.cleanup_errors);
    let memory = run.memory.expect("memory migration ran");
    assert_eq!(memory.outcome.status, EndStatus::Completed, "{memory:?}");
    // The whole disk, plus what the guest wrote again while the mirror ran.
    assert!(
        run.storage.transferred_bytes >= DISK_BYTES,
        "{:?}",
        run.storage
    );
    eprintln!("left by storage pre-copy: {:?}", run.storage);
    finish(pair, c, &c_img).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_storage_postcopy_the_vm_leaves_by_storage_postcopy() {
    require!(QEMU, QEMU_IMG);
    let _serial = SERIAL.lock().await;
    let pair = arrive("sret-post").await;
    let target = DiskTarget {
        disk: DiskNodes::of(0),
        nbd: nbd_addr(),
    };
    let mut session = PostcopySession::export(&pair.dst.qmp, &target, PostcopyConfig::default())
        .await
        .unwrap_or_else(|run| panic!("B's export: {run:?}"));
    let (c, c_img) = launch_c_on_overlay(&pair, session.backing()).await;
    let ends = ends(&pair.dst, &c);
    let driver_config = DriverConfig::default();
    let migration = session.migrate(
        &ends,
        plan(Technique::Precopy),
        &driver_config,
        &pair.clock,
        None,
    );
    let (run, wrote) = tokio::join!(migration, write_during(&pair.dst));
    let run = run.expect("storage post-copy back");
    drop(ends);
    assert!(wrote, "no active migration to write during");
    assert_eq!(run.outcome, PostcopyOutcome::Completed, "{run:?}");
    assert_eq!(run.storage.error, None, "{:?}", run.storage);
    assert_eq!(run.storage.transferred_bytes, DISK_BYTES);
    eprintln!("left by storage post-copy: {:?}", run.storage);
    finish(pair, c, &c_img).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_storage_postcopy_the_vm_leaves_by_hybrid() {
    require!(QEMU, QEMU_IMG);
    let _serial = SERIAL.lock().await;
    let pair = arrive("sret-hyb").await;
    let target = HybridTarget {
        disk: DiskNodes::of(0),
        source_nbd: nbd_addr(),
        dest_nbd: nbd_addr(),
    };
    let config = HybridConfig {
        settings: HybridSettings {
            max_rounds: 4,
            dirty_threshold_bytes: 512 << 10,
            push_timeout_ms: 60_000,
            freeze_timeout_ms: 30_000,
            push_speed_bps: None,
        },
        ..HybridConfig::default()
    };
    let mut session = HybridSession::export(&pair.dst.qmp, &target, config)
        .await
        .unwrap_or_else(|run| panic!("B's export: {run:?}"));
    let (c, c_img) = launch_c_on_overlay(&pair, session.backing()).await;
    let ends = ends(&pair.dst, &c);
    let driver_config = DriverConfig::default();
    // The guest's working set is the hot set: the disk's first quarter.
    let regions = vec![
        RegionCount {
            reads: 500,
            writes: 500,
        },
        RegionCount::default(),
        RegionCount::default(),
        RegionCount::default(),
    ];
    let profile = DiskProfile::new(DISK_BYTES, 64 << 10, 1e6, 1e5, regions).expect("profile");
    let hot = HotSet::hottest(&profile, 0.25, 64 << 10).expect("hot set");
    let scratch = pair.dir.path().to_path_buf();
    let migration = session.migrate(
        &ends,
        &hot,
        &scratch,
        plan(Technique::Precopy),
        &driver_config,
        &pair.clock,
        None,
    );
    let (run, wrote) = tokio::join!(migration, write_during(&pair.dst));
    let run = run.expect("hybrid back");
    drop(ends);
    assert!(wrote, "no active migration to write during");
    assert_eq!(run.outcome, PostcopyOutcome::Completed, "{run:?}");
    assert_eq!(run.storage.error, None, "{:?}", run.storage);
    assert!(run.storage.pushed_bytes >= 16 << 20, "{:?}", run.storage);
    eprintln!("left by hybrid: {:?}", run.storage);
    finish(pair, c, &c_img).await;
}

/// The guest runs on C with no integrity error in reports made there; then A and B go, C
/// reads its whole disk alone, stops and goes; C's image equals B's outside the working set.
async fn finish(pair: Pair<PostcopySession>, c: LocalVm, c_img: &Path) {
    assert_intact_on(&c, &pair.samples, &pair.clock).await;
    let Pair {
        src,
        dst,
        dst_img,
        tag,
        dir,
        ..
    } = pair;
    src.kill().await;
    dst.kill().await;
    io_live(&c.qmp, "read 0 64M").await;
    c.qmp.execute("stop", None).await.expect("stop C");
    c.kill().await;
    assert_no_qemu_left(&tag);
    let (b_copy, c_copy) = (
        dir.path().join("b-copy.qcow2"),
        dir.path().join("c-copy.qcow2"),
    );
    std::fs::copy(&dst_img, &b_copy).expect("copy B's image");
    std::fs::copy(c_img, &c_copy).expect("copy C's image");
    for img in [&b_copy, &c_copy] {
        qemu_io(img, MASK_WORKING_SET);
        for w in WRITES {
            qemu_io(img, &w.replace("write", "read"));
        }
    }
    assert_same_contents(&b_copy, &c_copy);
}

/// Reports from C made after now: the guest works on, and its cumulative integrity count
/// (reads checked against the generations in its memory) stays 0.
async fn assert_intact_on(c: &LocalVm, samples: &Samples, clock: &Clock) {
    let status = c.qmp.query_status().await.expect("query-status");
    assert!(status.running, "guest not running on C: {}", status.status);
    let after = clock.now_ms() + 100;
    let first = samples
        .wait_for(clock, after, 0, Duration::from_secs(30))
        .await
        .expect("reports from C");
    let later = samples
        .wait_for(clock, after, first.ops + 400, Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("the guest stopped working on C: {:?}", samples.last()));
    assert_eq!(later.integrity_errors, 0, "{later:?}");
    eprintln!(
        "on C: ops {} -> {}, integrity errors 0",
        first.ops, later.ops
    );
}
