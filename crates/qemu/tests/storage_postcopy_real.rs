//! A real storage post-copy under QEMU (TCG): the source exports its 64 MiB qcow2 disk over
//! NBD on loopback, the destination is launched on an overlay of that export, memory migrates
//! (pre-copy or post-copy), the destination streams the disk, and the images are compared.
//!
//! What equality means here: the guest keeps using its disk on the destination, so after
//! the stream the destination's image is the source's final image plus the writes made on
//! the destination after the switchover. The test makes those writes itself, at known places
//! (one whole-cluster write, one 4 KiB write inside a cluster the overlay did not have, so
//! qcow2 fills the rest of the cluster from the source), then, with both QEMUs gone, applies
//! the same writes to a copy of the source's image and requires `qemu-img compare` to find
//! that copy and the destination's image identical. The destination's guest is stopped
//! first (`stop` drains and flushes the block layer: QEMU caches the overlay's qcow2
//! metadata, which a killed QEMU would never write).
//!
//! Needs qemu-system-x86_64, qemu-img and qemu-io (a failure under CI when missing, a loud
//! skip elsewhere) and the guest image inputs (run scripts/setup). The guest runs memtouch;
//! the disk's writes go through QEMU's own `qemu-io` monitor command on the guest's device.
//! QEMUs die with their `LocalVm` handles and the images with the temporary directory, even
//! on failure; each test checks it left no QEMU behind.

use drover_core::migration::{
    EndStatus, MigrationPlan, MigrationStatus, PostcopyOutcome, PostcopySettings, StorageMode,
    Technique,
};
use drover_qemu::bench;
use drover_qemu::disk::{create_qcow2, virtual_size, DiskNodes, DiskSpec};
use drover_qemu::driver::{DriverConfig, Endpoints};
use drover_qemu::metrics::{Clock, Samples};
use drover_qemu::qmp::{BlockExt, Qmp, QmpExt};
use drover_qemu::storage::DiskTarget;
use drover_qemu::storage_postcopy::{PostcopyConfig, PostcopyRun, PostcopySession};
use drover_qemu::vm::LocalVm;
use drover_testkit::{require, QEMU, QEMU_IMG};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use common::disk::{assert_same_contents, io_live, nbd_addr, qemu_io, until_status};
use common::{assert_no_qemu_left, boot, free_port, launcher, tag};

const DISK_BYTES: u64 = 64 << 20;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The source with its disk exported and the destination launched on an overlay of it.
/// Dropped, both QEMUs go, then the directory with the images.
struct Pair {
    src_img: PathBuf,
    dst_img: PathBuf,
    src: LocalVm,
    dst: LocalVm,
    session: PostcopySession,
    clock: Clock,
    samples: Samples,
    tag: String,
    // Last: the images and run directories outlive the QEMUs using them.
    dir: tempfile::TempDir,
}

impl Pair {
    /// The source's image holds 0x5a over [0, 8M) and 0xa5 over [40M, 44M) before boot.
    async fn boot(test: &str, settings: PostcopySettings) -> Pair {
        let tag = tag(test);
        let dir = tempfile::tempdir().expect("tempdir");
        let (src_img, dst_img) = (dir.path().join("src.qcow2"), dir.path().join("dst.qcow2"));
        create_qcow2(&src_img, DISK_BYTES)
            .await
            .expect("source image");
        qemu_io(&src_img, "write -P 0x5a 0 8M");
        qemu_io(&src_img, "write -P 0xa5 40M 4M");
        let l = launcher(128);
        let (clock, samples) = (Clock::default(), Samples::default());
        let workload = "memtouch:wss=16M,rate=max";
        let mut src_spec = l.spec(&tag, workload, false);
        src_spec.disk = Some(DiskSpec::Image(src_img.clone()));
        let src = boot(&l, &src_spec, &dir.path().join("a"), clock, &samples).await;
        // The source's export first: the destination's launch opens it.
        let target = DiskTarget {
            disk: DiskNodes::of(0),
            nbd: nbd_addr(),
        };
        let config = PostcopyConfig {
            settings,
            ..PostcopyConfig::default()
        };
        let session = PostcopySession::export(&src.qmp, &target, config)
            .await
            .unwrap_or_else(|run| panic!("source export: {run:?}"));
        let size = virtual_size(&src_img).await.expect("size");
        create_qcow2(&dst_img, size).await.expect("overlay");
        let mut dst_spec = l.spec(&tag, workload, true);
        dst_spec.disk = Some(DiskSpec::Overlay {
            overlay: dst_img.clone(),
            source: session.backing(),
        });
        let dst = boot(&l, &dst_spec, &dir.path().join("b"), clock, &samples).await;
        Pair {
            src_img,
            dst_img,
            src,
            dst,
            session,
            clock,
            samples,
            tag,
            dir,
        }
    }

    /// Stops the source first and checks the destination reads its whole disk without it,
    /// then kills the destination, checks no QEMU is left and the images (see
    /// [`assert_images`]).
    async fn finish(self) {
        let Pair {
            src_img,
            dst_img,
            src,
            dst,
            tag,
            dir,
            ..
        } = self;
        src.kill().await;
        io_live(&dst.qmp, "read 0 64M").await;
        // Stopping the guest drains and flushes the block layer: the image file then holds
        // the overlay's qcow2 metadata, which QEMU caches (a kill would leave it behind).
        dst.qmp
            .execute("stop", None)
            .await
            .expect("stop the destination");
        dst.kill().await;
        assert_no_qemu_left(&tag);
        assert_images(&src_img, &dst_img, dir.path());
    }
}

fn ends<'a>(src: &'a LocalVm, dst: &'a LocalVm) -> Endpoints<'a> {
    Endpoints {
        source: &src.qmp,
        dest: &dst.qmp,
        uri: format!("tcp:127.0.0.1:{}", free_port()),
        recover_uri: format!("tcp:127.0.0.1:{}", free_port()),
    }
}

fn plan(technique: Technique) -> MigrationPlan {
    let mut plan = MigrationPlan::fixed(technique);
    plan.max_bandwidth_bps = Some(bench::UNCAPPED_BPS);
    plan
}

/// Waits (bounded, 60 s) until the destination's stream job has moved `bytes`.
async fn until_streamed(dst: &LocalVm, bytes: u64) -> bool {
    let disk = DiskNodes::of(0);
    for _ in 0..1200 {
        if let Ok(Some(job)) = dst.qmp.stream_job(&disk).await {
            if job.offset >= bytes {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The writes made on the destination during the stream, replayed on the source's copy.
const DEST_WRITES: [&str; 2] = ["write -P 0x77 20M 1M", "write -P 0x66 41M 4k"];

/// After the stream: the destination's qcow2 has no backing any more, its guest runs, and
/// it reads the whole disk without the source.
async fn assert_standalone(pair: &Pair) {
    let nodes = pair
        .dst
        .qmp
        .execute("query-named-block-nodes", None)
        .await
        .expect("nodes");
    let overlay = nodes
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|n| n["node-name"] == DiskNodes::of(0).format_node())
        })
        .cloned()
        .expect("the overlay's node");
    assert_eq!(overlay["backing_file_depth"], 0, "{overlay}");
    let status = pair.dst.qmp.query_status().await.expect("status");
    assert!(status.running, "destination guest: {}", status.status);
}

/// Checks the images once both QEMUs are gone: the destination is the source plus
/// [`DEST_WRITES`] (see the module doc), and it holds every pattern written.
fn assert_images(src_img: &Path, dst_img: &Path, dir: &Path) {
    assert!(src_img.exists(), "the source's disk is kept");
    let expected = dir.join("expected.qcow2");
    std::fs::copy(src_img, &expected).expect("copy the source's image");
    for w in DEST_WRITES {
        qemu_io(&expected, w);
    }
    for read in [
        "read -P 0x5a 0 8M",
        "read -P 0x33 16M 2M",
        "read -P 0x77 20M 1M",
        "read -P 0xa5 40M 1M",
        "read -P 0x66 41M 4k",
        "read -P 0xa5 41988k 3068k",
        "read -P 0x44 63M 1M",
        "read -P 0 8M 8M",
    ] {
        qemu_io(&expected, read);
        qemu_io(dst_img, read);
    }
    assert_same_contents(&expected, dst_img);
}

fn assert_completed(run: &PostcopyRun) {
    assert_eq!(run.outcome, PostcopyOutcome::Completed, "{run:?}");
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    let s = &run.storage;
    assert_eq!(s.mode, StorageMode::Postcopy);
    assert_eq!(s.error, None, "{s:?}");
    assert_eq!(
        (s.transferred_bytes, s.disk_bytes),
        (DISK_BYTES, DISK_BYTES)
    );
    assert!(s.stream_ms.is_some(), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_postcopy_streams_the_disk_after_memory_precopy_and_postcopy() {
    require!(QEMU, QEMU_IMG);
    let _serial = SERIAL.lock().await;
    for technique in [Technique::Precopy, Technique::Postcopy] {
        move_and_compare(technique).await;
    }
}

/// One storage post-copy with memory moved by `technique`: writes on the source before and
/// (memory pre-copy) during the memory migration, writes and a read on the destination
/// during the stream, then the checks above.
async fn move_and_compare(technique: Technique) {
    let settings = PostcopySettings {
        // Slow enough that the destination's writes land mid-stream.
        stream_speed_bps: Some(16 << 20),
        ..PostcopySettings::default()
    };
    let mut pair = Pair::boot(&format!("spc-{technique}"), settings).await;
    let (src, dst, clock) = (&pair.src, &pair.dst, pair.clock);
    if technique == Technique::Postcopy {
        // Post-copy of memory switches at once: the source's guest writes before it.
        io_live(&src.qmp, "write -P 0x33 16M 2M").await;
        io_live(&src.qmp, "write -P 0x44 63M 1M").await;
    }
    let on_source = async {
        if technique == Technique::Postcopy {
            return true;
        }
        if !until_status(&src.qmp, &[MigrationStatus::Active]).await {
            return false;
        }
        io_live(&src.qmp, "write -P 0x33 16M 2M").await;
        io_live(&src.qmp, "write -P 0x44 63M 1M").await;
        true
    };
    let on_dest = async {
        if !until_streamed(dst, 1).await {
            return false;
        }
        // A read through copy-on-read of what the source wrote during the migration, then
        // the destination's own writes.
        io_live(&dst.qmp, "read -P 0x33 16M 2M").await;
        for w in DEST_WRITES {
            io_live(&dst.qmp, w).await;
        }
        true
    };
    let ends = ends(src, dst);
    let started = Instant::now();
    let driver_config = DriverConfig::default();
    let migration = pair
        .session
        .migrate(&ends, plan(technique), &driver_config, &clock, None);
    let (run, wrote_src, wrote_dst) = tokio::join!(migration, on_source, on_dest);
    let elapsed = started.elapsed();
    let run = run.expect("storage post-copy");
    assert!(wrote_src, "no active migration to write during");
    assert!(wrote_dst, "no stream to write during: {run:?}");
    let memory = run.memory.clone().expect("memory migration ran");
    assert_eq!(
        memory.outcome.status,
        EndStatus::Completed,
        "{:?}",
        memory.outcome
    );
    assert_completed(&run);
    let result = memory.result(&pair.samples.snapshot());
    eprintln!(
        "storage post-copy, memory {technique}: {:?}; memory: total {} ms, downtime {:?} ms, \
         {} bytes; whole run {} ms",
        run.storage,
        result.total_ms,
        result.downtime_ms,
        result.transferred_bytes,
        elapsed.as_millis()
    );
    drop(ends);
    // The source may go now: the destination runs and reads everything on its own.
    let stop = pair.src.qmp.nbd_server_stop().await;
    assert!(stop.is_err(), "the source's NBD server was still running");
    assert_standalone(&pair).await;
    pair.finish().await;
}

/// The source's export stopped mid-stream (as when its NBD server is lost): the stream is
/// reported stalled, nothing is torn down, the source's disk file stays; once resumed (the
/// export comes back) the stream completes and the images match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_export_stalls_the_stream_and_resuming_completes_it_intact() {
    require!(QEMU, QEMU_IMG);
    let _serial = SERIAL.lock().await;
    let settings = PostcopySettings {
        reconnect_delay_s: 1,
        stall_ms: 5000,
        stream_speed_bps: Some(4 << 20),
    };
    let mut pair = Pair::boot("spc-lost", settings).await;
    let (src, dst, clock) = (&pair.src, &pair.dst, pair.clock);
    io_live(&src.qmp, "write -P 0x33 16M 2M").await;
    io_live(&src.qmp, "write -P 0x44 63M 1M").await;
    let cut = async {
        if !until_streamed(dst, 1).await {
            return None;
        }
        for w in DEST_WRITES {
            io_live(&dst.qmp, w).await;
        }
        if !until_streamed(dst, 8 << 20).await {
            return None;
        }
        src.qmp
            .nbd_server_stop()
            .await
            .expect("stop the source's export");
        Some(Instant::now())
    };
    let ends = ends(src, dst);
    let driver_config = DriverConfig::default();
    let migration = pair.session.migrate(
        &ends,
        plan(Technique::Precopy),
        &driver_config,
        &clock,
        None,
    );
    let (run, cut_at) = tokio::join!(migration, cut);
    let run = run.expect("storage post-copy");
    let cut_at = cut_at.expect("the stream never got going");
    let noticed_ms = cut_at.elapsed().as_millis();
    assert_eq!(run.outcome, PostcopyOutcome::Stalled, "{run:?}");
    let error = run.storage.error.clone().expect("error");
    assert!(error.contains("stalled"), "{error}");
    assert!(
        run.storage.transferred_bytes < DISK_BYTES,
        "{:?}",
        run.storage
    );
    // Nothing was torn down: the source's disk file, its QEMU (guest stopped), the job.
    assert!(pair.src_img.exists());
    let source = src.qmp.query_status().await.expect("source status");
    assert!(!source.running, "source guest: {}", source.status);
    let guest = run.dest_guest.clone().expect("destination guest state");
    eprintln!(
        "export lost: stalled after {noticed_ms} ms ({error}); destination guest {}; {:?}",
        guest.status, run.storage
    );
    let job = dst.qmp.stream_job(&DiskNodes::of(0)).await.expect("jobs");
    assert!(job.is_some(), "the stream job is kept");

    let resumed_at = Instant::now();
    let run = pair.session.resume(&ends, &clock).await;
    assert_completed(&run);
    assert_eq!(run.storage.stream_stalls, 1);
    eprintln!(
        "resumed: completed {} ms after the resume; {:?}",
        resumed_at.elapsed().as_millis(),
        run.storage
    );
    drop(ends);
    assert_standalone(&pair).await;
    pair.finish().await;
}
