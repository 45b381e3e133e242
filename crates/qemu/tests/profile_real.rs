//! The WAN profiler against a real QEMU (TCG): a guest whose disk workload keeps to the first
//! quarter of its disk is profiled from the host side only (dirty-rate sampling,
//! `query-blockstats`, the virtio-blk trace events), and the profile finds its rates and where
//! its accesses fall. Needs qemu-system-x86_64 and qemu-img (a failure under CI when missing, a
//! loud skip elsewhere); QEMU dies with its handle and the files with the temporary directory.

use drover_qemu::disk::{create_qcow2, DiskNodes, DiskSpec};
use drover_qemu::image::{ensure_image, kernel_cmdline, NoProgress};
use drover_qemu::launcher::{Accel, QemuProcess, RunPaths, VmSpec};
use drover_qemu::profile::{profile_wan, query_blockstats, WanProfileSettings};
use drover_qemu::qmp::{Qmp, QmpClient};
use drover_testkit::{require, QEMU, QEMU_IMG};
use serde_json::json;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_finds_the_disk_workloads_rates_and_its_hot_quarter() {
    require!(QEMU, QEMU_IMG);
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("disk.qcow2");
    create_qcow2(&disk, 64 * MIB)
        .await
        .expect("qemu-img create");
    let image = ensure_image(&NoProgress).expect("guest image (run scripts/setup)");
    let spec = VmSpec {
        name: "prof".into(),
        vcpus: 1,
        memory_bytes: 128 * MIB,
        accel: Accel::Tcg,
        kernel: image.kernel,
        initrd: image.initrd,
        // 16 MiB of the 64 MiB disk, 400 ops/s, half of them reads.
        append: kernel_cmdline("disk:wss=16M,rate=400,read=50"),
        incoming: false,
        tap: None,
        disk: Some(DiskSpec::Image(disk)),
    };
    let paths = RunPaths::in_dir(&dir.path().join("run"));
    let mut qemu = QemuProcess::spawn("qemu-system-x86_64", &spec, &paths, Duration::from_secs(20))
        .await
        .expect("QEMU starts");
    let qmp = QmpClient::connect(&paths.qmp, Duration::from_secs(5), Duration::from_secs(10))
        .await
        .expect("qmp");
    wait_for_writes(&qmp).await;

    let settings = WanProfileSettings {
        samples: 2,
        regions: 16,
    };
    let p = profile_wan(
        &qmp,
        &paths.trace_log,
        128 * MIB,
        &DiskNodes::of(0),
        settings,
    )
    .await
    .expect("profile");

    assert_eq!(
        (p.disk.virtual_bytes, p.disk.block_bytes),
        (64 * MIB, 64 << 10)
    );
    eprintln!(
        "profile: read {:.0} B/s, write {:.0} B/s, dirty-rate samples {:?} B/s, wss {} B, regions {:?}",
        p.disk.read_rate_bps,
        p.disk.write_rate_bps,
        p.memory.dirty_rate_samples_bps,
        p.memory.wss_bytes,
        p.disk.regions
    );
    assert_eq!(p.memory.memory_bytes, 128 * MIB);
    assert_eq!(p.memory.dirty_rate_samples_bps.len(), 2);
    // 200 writes and 200 reads of 4 KiB a second: about 800 KB/s each way, less on a slow
    // TCG guest, never far more.
    for (what, bps) in [
        ("read", p.disk.read_rate_bps),
        ("write", p.disk.write_rate_bps),
    ] {
        assert!((100e3..2e6).contains(&bps), "{what} rate {bps} B/s");
    }
    assert_eq!(p.disk.regions.len(), 16);
    let total: u64 = p.disk.regions.iter().map(|r| r.reads + r.writes).sum();
    let hot: u64 = p.disk.regions[..4].iter().map(|r| r.reads + r.writes).sum();
    assert!(total > 0, "no request traced: {:?}", p.disk.regions);
    assert!(
        hot as f64 >= 0.99 * total as f64,
        "{hot} of {total} bytes in the first quarter: {:?}",
        p.disk.regions
    );
    assert!(
        p.disk.regions[..4]
            .iter()
            .all(|r| r.reads > 0 && r.writes > 0),
        "{:?}",
        p.disk.regions
    );

    let state = qmp
        .execute(
            "trace-event-get-state",
            Some(json!({"name": "virtio_blk_handle_*"})),
        )
        .await
        .expect("trace-event-get-state");
    assert!(
        !state.to_string().contains("\"enabled\""),
        "events left on: {state}"
    );
    qemu.kill().await;
}

/// Waits (at most 90 s: a TCG boot on a loaded host) until the guest's workload writes.
async fn wait_for_writes(qmp: &dyn Qmp) {
    let start = Instant::now();
    loop {
        let io = query_blockstats(qmp).await.expect("query-blockstats");
        if io.write_ops > 50 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the disk workload never wrote: {io:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
