//! A real storage pre-copy under QEMU (TCG): two QEMUs on loopback, the source's qcow2 disk
//! mirrored over NBD into the destination's empty image while memory migrates, then both
//! images compared byte for byte.
//!
//! Needs qemu-system-x86_64, qemu-img and qemu-io (a failure under CI when missing, a loud skip
//! elsewhere) and the guest image inputs (run scripts/setup). The guest has no disk workload
//! yet, so the writes during the migration come from QEMU's own `qemu-io` monitor command on
//! the guest's device (they take the guest's write path through the mirror). QEMUs die with
//! their `LocalVm` handles and the images with the temporary directory, even on failure.

use drover_core::migration::{CopyMode, EndStatus, MigrationPlan, MigrationStatus, Technique};
use drover_qemu::bench;
use drover_qemu::disk::{create_qcow2, virtual_size, DiskNodes};
use drover_qemu::driver::{DriverConfig, Endpoints};
use drover_qemu::metrics::{Clock, Samples};
use drover_qemu::qmp::{Qmp, QmpExt};
use drover_qemu::storage::{migrate_with_storage, DiskTarget, StorageConfig};
use drover_qemu::vm::LocalVm;
use drover_testkit::{require, QEMU, QEMU_IMG};
use std::path::PathBuf;

mod common;

use common::disk::{assert_same_contents, io_live, nbd_addr, qemu_io, until_status};
use common::{boot, free_port, launcher};

const DISK_BYTES: u64 = 64 << 20;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits (bounded) for the source's migration to be active.
async fn until_active(qmp: &dyn Qmp) -> bool {
    until_status(qmp, &[MigrationStatus::Active]).await
}

/// Two QEMUs with disks: the source's image holds 0x5a over [0, 8M) and 0xa5 over [40M, 44M);
/// the destination's is empty, of the same virtual size. Dropped, everything goes.
struct Pair {
    src_img: PathBuf,
    dst_img: PathBuf,
    src: LocalVm,
    dst: LocalVm,
    clock: Clock,
    samples: Samples,
    // Last: the images and run directories outlive the QEMUs using them.
    _dir: tempfile::TempDir,
}

impl Pair {
    async fn boot(test: &str) -> Pair {
        let tag = format!("t{}-{test}", std::process::id());
        let dir = tempfile::tempdir().expect("tempdir");
        let (src_img, dst_img) = (dir.path().join("src.qcow2"), dir.path().join("dst.qcow2"));
        create_qcow2(&src_img, DISK_BYTES)
            .await
            .expect("source image");
        qemu_io(&src_img, "write -P 0x5a 0 8M");
        qemu_io(&src_img, "write -P 0xa5 40M 4M");
        let size = virtual_size(&src_img).await.expect("size");
        assert_eq!(size, DISK_BYTES);
        create_qcow2(&dst_img, size).await.expect("target image");
        let l = launcher(128);
        let clock = Clock::default();
        let samples = Samples::default();
        let workload = "memtouch:wss=16M,rate=max";
        let mut src_spec = l.spec(&tag, workload, false);
        src_spec.disk = Some(src_img.clone().into());
        let mut dst_spec = l.spec(&tag, workload, true);
        dst_spec.disk = Some(dst_img.clone().into());
        let src = boot(&l, &src_spec, &dir.path().join("a"), clock, &samples).await;
        let dst = boot(&l, &dst_spec, &dir.path().join("b"), clock, &samples).await;
        Pair {
            src_img,
            dst_img,
            src,
            dst,
            clock,
            samples,
            _dir: dir,
        }
    }

    fn ends(&self) -> Endpoints<'_> {
        Endpoints {
            source: &self.src.qmp,
            dest: &self.dst.qmp,
            uri: format!("tcp:127.0.0.1:{}", free_port()),
            recover_uri: format!("tcp:127.0.0.1:{}", free_port()),
        }
    }
}

fn precopy() -> MigrationPlan {
    let mut plan = MigrationPlan::fixed(Technique::Precopy);
    plan.max_bandwidth_bps = Some(bench::UNCAPPED_BPS);
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_precopy_moves_the_disk_with_the_guest_and_the_images_match() {
    require!(QEMU, QEMU_IMG);
    let _serial = SERIAL.lock().await;
    for mode in [CopyMode::Background, CopyMode::WriteBlocking] {
        move_disk_and_compare(mode).await;
    }
}

/// One storage pre-copy with the mirror in `mode`, writes during the memory migration, then
/// both images compared.
async fn move_disk_and_compare(mode: CopyMode) {
    let pair = Pair::boot(&format!("storage-{}", mode.qapi_name())).await;
    let (src, dst, clock, samples) = (&pair.src, &pair.dst, pair.clock, &pair.samples);
    let (src_img, dst_img) = (pair.src_img.clone(), pair.dst_img.clone());
    let ends = pair.ends();
    let nbd = nbd_addr();
    let plan = precopy();
    // Writes while memory migrates (the mirror is READY by then): they must reach the target.
    let writes = async {
        if !until_active(&src.qmp).await {
            return false;
        }
        io_live(&src.qmp, "write -P 0x33 16M 2M").await;
        io_live(&src.qmp, "write -P 0x44 63M 1M").await;
        true
    };
    let driver_config = DriverConfig::default();
    let mut config = StorageConfig::default();
    config.settings.copy_mode = mode;
    let target = DiskTarget {
        disk: DiskNodes::of(0),
        nbd,
    };
    let migration =
        migrate_with_storage(&ends, &target, plan, &driver_config, &config, &clock, None);
    let (run, wrote) = tokio::join!(migration, writes);
    let run = run.expect("storage migration");
    assert!(wrote, "the test found no active migration to write during");
    assert_eq!(run.storage.error, None, "{:?}", run.storage);
    assert!(run.cleanup_errors.is_empty(), "{:?}", run.cleanup_errors);
    let memory = run.memory.expect("memory migration ran");
    assert_eq!(
        memory.outcome.status,
        EndStatus::Completed,
        "{:?}",
        memory.outcome.error
    );
    let status = dst.qmp.query_status().await.expect("destination status");
    assert!(status.running, "guest not running on the destination");
    let result = memory.result(&samples.snapshot());
    assert_eq!(run.storage.write_blocking, mode == CopyMode::WriteBlocking);
    eprintln!(
        "storage pre-copy ({mode:?}): {:?}; memory: total {} ms, downtime {:?} ms, {} bytes",
        run.storage, result.total_ms, result.downtime_ms, result.transferred_bytes
    );
    drop(ends);
    let Pair { src, dst, _dir, .. } = pair;
    src.kill().await;
    dst.kill().await;

    assert_same_contents(&src_img, &dst_img);
    // And the destination holds what was written, before and during the migration.
    qemu_io(&dst_img, "read -P 0x5a 0 8M");
    qemu_io(&dst_img, "read -P 0x33 16M 2M");
    qemu_io(&dst_img, "read -P 0xa5 40M 4M");
    qemu_io(&dst_img, "read -P 0x44 63M 1M");
    qemu_io(&dst_img, "read -P 0 8M 8M");
    assert!(
        run.storage.transferred_bytes >= DISK_BYTES,
        "{:?}",
        run.storage
    );
}

/// A migration cancelled after the mirror is READY: the mirror is abandoned, the NBD node and
/// server go, the guest runs on the source with its disk untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_cancelled_after_ready_leaves_the_source_running_on_its_disk() {
    use drover_qemu::qmp::BlockExt;
    require!(QEMU, QEMU_IMG);
    let _serial = SERIAL.lock().await;
    let pair = Pair::boot("storage-cancel").await;
    let ends = pair.ends();
    let disk = DiskNodes::of(0);
    let (driver_config, config) = (DriverConfig::default(), StorageConfig::default());
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    let mut plan = precopy();
    // Slow enough that the cancel finds the memory migration still running.
    plan.max_bandwidth_bps = Some(4_000_000);
    let target = DiskTarget {
        disk: disk.clone(),
        nbd: nbd_addr(),
    };
    let migration = migrate_with_storage(
        &ends,
        &target,
        plan,
        &driver_config,
        &config,
        &pair.clock,
        Some(cancel_rx),
    );
    let cancel = async {
        let active = until_active(&pair.src.qmp).await;
        // QEMU takes the switch of the READY mirror to write-blocking (`block-job-change`).
        let switched = pair.src.qmp.mirror_write_blocking(&disk).await;
        cancel_tx.send_replace(true);
        active && switched.is_ok()
    };
    let (run, active) = tokio::join!(migration, cancel);
    let run = run.expect("storage migration");
    assert!(
        active,
        "no active migration to cancel, or block-job-change refused"
    );
    let memory = run.memory.expect("memory migration ran");
    assert_eq!(
        memory.outcome.status,
        EndStatus::Cancelled,
        "{:?}",
        memory.outcome
    );
    let error = run.storage.error.clone().expect("storage error");
    assert!(error.contains("memory migration"), "{error}");
    assert!(
        run.storage.mirror_to_ready_ms.is_some(),
        "{:?}",
        run.storage
    );
    assert!(run.cleanup_errors.is_empty(), "{:?}", run.cleanup_errors);
    eprintln!("cancelled after READY: {:?}", run.storage);
    // Nothing of the storage migration is left on either side.
    let status = pair.src.qmp.query_status().await.expect("status");
    assert!(
        status.running,
        "source guest not running: {}",
        status.status
    );
    assert_eq!(pair.src.qmp.mirror_job(&disk).await.expect("jobs"), None);
    let nodes = pair
        .src
        .qmp
        .execute("query-named-block-nodes", None)
        .await
        .expect("nodes")
        .to_string();
    assert!(!nodes.contains(disk.target_node()), "{nodes}");
    // The destination's QEMU exits when its incoming migration is cancelled (QEMU's
    // exit-on-error); if it still ran, its NBD server would be stopped already.
    let stop_again = pair.dst.qmp.nbd_server_stop().await;
    assert!(stop_again.is_err(), "the NBD server was still running");
    drop(ends);
    let Pair {
        src, dst, src_img, ..
    } = pair;
    src.kill().await;
    dst.kill().await;
    qemu_io(&src_img, "read -P 0x5a 0 8M");
    qemu_io(&src_img, "read -P 0xa5 40M 4M");
}
