//! A real storage post-copy under QEMU (TCG): the source exports its 64 MiB qcow2 disk over
//! NBD on loopback, the destination is launched on an overlay of that export, memory migrates
//! (pre-copy or post-copy), the destination streams the disk, and the images are compared
//! (what equality means: `common::pair`'s module doc).
//!
//! Needs qemu-system-x86_64, qemu-img and qemu-io (a failure under CI when missing, a loud
//! skip elsewhere) and the guest image inputs (run scripts/setup). The guest runs memtouch;
//! the disk's writes go through QEMU's own `qemu-io` monitor command on the guest's device.
//! QEMUs die with their `LocalVm` handles and the images with the temporary directory, even
//! on failure; each test checks it left no QEMU behind.

use drover_core::migration::{
    EndStatus, MigrationStatus, PostcopyOutcome, PostcopySettings, StorageMode, Technique,
};
use drover_qemu::disk::DiskNodes;
use drover_qemu::driver::DriverConfig;
use drover_qemu::qmp::{BlockExt, QmpExt};
use drover_qemu::storage::DiskTarget;
use drover_qemu::storage_postcopy::{PostcopyConfig, PostcopyRun, PostcopySession};
use drover_testkit::{require, QEMU, QEMU_IMG};
use std::time::Instant;

mod common;

use common::disk::{io_live, nbd_addr, until_status};
use common::pair::{ends, plan, until_streamed, Pair, Source, DEST_WRITES, DISK_BYTES};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The source with its disk exported and the destination launched on an overlay of it.
async fn boot(test: &str, settings: PostcopySettings) -> Pair<PostcopySession> {
    let source = Source::boot(test).await;
    // The source's export first: the destination's launch opens it.
    let target = DiskTarget {
        disk: DiskNodes::of(0),
        nbd: nbd_addr(),
    };
    let config = PostcopyConfig {
        settings,
        ..PostcopyConfig::default()
    };
    let session = PostcopySession::export(&source.src.qmp, &target, config)
        .await
        .unwrap_or_else(|run| panic!("source export: {run:?}"));
    let backing = session.backing();
    source.with_dest(session, backing).await
}

/// The patterns the destination's image must hold after the stream.
const READS: [&str; 8] = [
    "read -P 0x5a 0 8M",
    "read -P 0x33 16M 2M",
    "read -P 0x77 20M 1M",
    "read -P 0xa5 40M 1M",
    "read -P 0x66 41M 4k",
    "read -P 0xa5 41988k 3068k",
    "read -P 0x44 63M 1M",
    "read -P 0 8M 8M",
];

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
    let mut pair = boot(&format!("spc-{technique}"), settings).await;
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
    pair.assert_standalone().await;
    pair.finish(&READS).await;
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
    let mut pair = boot("spc-lost", settings).await;
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
    pair.assert_standalone().await;
    pair.finish(&READS).await;
}
