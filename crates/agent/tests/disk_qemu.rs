//! A VM with a disk the agent creates, under real QEMU (TCG): the guest's `disk` workload
//! writes and verifies blocks on it through virtio-blk, the image is consistent after QEMU
//! stops, and deleting the VM deletes the disk the agent made.
//!
//! Needs qemu-system-x86_64 and qemu-img (a failure under CI when missing, a loud skip
//! elsewhere) and the guest image inputs (scripts/setup).

use common::{client, run, tcg_config, vm, QemuGuard};
use drover_agent::procfs;
use drover_api::wan::WanPlanRequest;
use drover_api::{AgentClient, VmStatus, VmView};
use drover_testkit::{require, QEMU, QEMU_IMG};
use std::path::Path;
use std::time::Duration;

mod common;

/// Polls VM `name` until its guest reported at least `min_ops` ops (fresh reports); a failure
/// shows the guest's console (`console`).
async fn wait_ops(
    c: &AgentClient,
    name: &str,
    min_ops: u64,
    timeout: Duration,
    console: &Path,
) -> VmView {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = c.get_vm(name).await.expect("get vm");
        let r = &v.workload_report;
        if v.status == VmStatus::Running
            && r.last_report_age_ms.is_some_and(|a| a < 3000)
            && r.ops >= min_ops
        {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} not reporting {min_ops} ops: {v:?}\nconsole:\n{}",
            std::fs::read_to_string(console).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_disk_takes_verified_block_io_and_checks_clean() {
    require!(QEMU, QEMU_IMG);
    procfs::become_subreaper();
    let dir = tempfile::Builder::new()
        .prefix("drk")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let image = drover_qemu::image::ensure_image(&drover_qemu::image::NoProgress)
        .expect("guest image (run scripts/setup)");
    let state = dir.path().join("s");
    let _guard = QemuGuard(vec![state.clone()]);
    let (_agent, url) = run(tcg_config(&state, &image)).await;
    let c = client(&url);

    let mut config = vm("dk1", "disk:wss=16M,rate=200");
    config.disk_size_bytes = Some(64 << 20);
    let created = c.create_vm(&config).await.expect("create");
    assert_eq!(created.disk.as_deref(), Some("dk1.qcow2"));
    let disk = state.join("disks/dk1.qcow2");
    assert!(disk.is_file(), "{}", disk.display());

    // A workload the disk cannot hold is refused before anything boots, naming the rule.
    let mut big = vm("dk2", "disk:wss=128M,rate=10");
    big.disk_size_bytes = Some(64 << 20);
    let err = c.create_vm(&big).await.expect_err("too big");
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(err.to_string().contains("does not fit the VM's"), "{err}");
    assert!(
        !state.join("disks/dk2.qcow2").exists(),
        "refused VM's disk removed"
    );

    // Past the first report, then five seconds more of work: the rate and the errors over it.
    let console = state.join("run/dk1/console.log");
    let first = wait_ops(&c, "dk1", 1, Duration::from_secs(120), &console).await;
    let t0 = std::time::Instant::now();
    let v = wait_ops(
        &c,
        "dk1",
        first.workload_report.ops + 1000,
        Duration::from_secs(60),
        &console,
    )
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let r = &v.workload_report;
    let measured = (r.ops - first.workload_report.ops) as f64 / secs;
    eprintln!(
        "dk1: {} ops, ops_per_s {:.1} (reported), {measured:.1} over {secs:.1} s, integrity \
         errors {}",
        r.ops, r.ops_per_s, r.integrity_errors
    );
    assert!(r.ops_per_s > 0.0, "{v:?}");
    assert_eq!(r.integrity_errors, 0, "{v:?}");
    assert_eq!(
        r.spec.as_deref(),
        Some("disk:wss=16M,rate=200,pattern=random,read=50")
    );

    // The guest found its disk and bypasses its page cache (its console says how it writes).
    let console = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(
        console.contains("drover-guest: disk /dev/vda (67108864 bytes, Direct writes)"),
        "{console}"
    );

    wan_plan_of_the_running_vm(&c).await;

    // Stop QEMU cleanly (SIGTERM: it flushes and closes the image), then check the image.
    procfs::signal(v.pid, libc::SIGTERM).expect("SIGTERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while procfs::is_alive(v.pid, "dk1") {
        assert!(std::time::Instant::now() < deadline, "QEMU did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let check = std::process::Command::new("qemu-img")
        .args(["check", "--output=json"])
        .arg(&disk)
        .output()
        .expect("qemu-img check");
    let report = String::from_utf8_lossy(&check.stdout);
    eprintln!("qemu-img check: {report}");
    assert!(
        check.status.success(),
        "{report} {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).expect("json");
    for key in ["corruptions", "leaks", "check-errors"] {
        assert_eq!(
            report.get(key).and_then(|v| v.as_u64()).unwrap_or(0),
            0,
            "{key}: {report}"
        );
    }
    // The guest wrote its whole working set: 16 MiB allocated at least.
    let clusters = |key: &str| report[key].as_u64().unwrap_or(0);
    let allocated = clusters("allocated-clusters") * (64 << 20) / clusters("total-clusters").max(1);
    assert!(allocated >= 16 << 20, "{report}");

    // The agent owns the disk it made: deleting the VM deletes it.
    c.delete_vm("dk1").await.expect("delete");
    assert!(!disk.exists(), "the created disk is removed with its VM");
}

/// The WAN plan of dk1 (16 MiB working set at the start of a 64 MiB disk): the profile sees
/// its rates and its hot quarter, the model's choice comes with its reason; a second plan
/// while one runs is refused (409), as is a VM the agent does not have (404).
async fn wan_plan_of_the_running_vm(c: &AgentClient) {
    let req = WanPlanRequest {
        link_bytes_per_s: 12_500_000,
        rtt_ms: 50,
        budget_s: Some(600),
        window_s: Some(2),
    };
    let first = {
        let (c, req) = (c.clone(), req.clone());
        tokio::spawn(async move { c.wan_plan("dk1", &req).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = c
        .wan_plan("dk1", &req)
        .await
        .expect_err("one profile at a time");
    assert_eq!(busy.status(), Some(409), "{busy}");
    assert!(busy.to_string().contains("WAN profile"), "{busy}");
    let plan = first.await.expect("join").expect("wan plan");
    eprintln!("dk1 plan: {}", plan.choice.reason);
    let d = &plan.profile.disk;
    assert_eq!((d.virtual_bytes, d.block_bytes), (64 << 20, 64 << 10));
    assert!(d.read_rate_bps > 0.0 && d.write_rate_bps > 0.0, "{d:?}");
    let total: u64 = d.regions.iter().map(|r| r.reads + r.writes).sum();
    let quarter = d.regions.len() / 4;
    let hot: u64 = d.regions[..quarter]
        .iter()
        .map(|r| r.reads + r.writes)
        .sum();
    assert!(total > 0 && hot as f64 >= 0.99 * total as f64, "{d:?}");
    let chosen = &plan.choice.chosen;
    assert!(
        chosen.agility_s.is_finite() && chosen.total_s > 0.0,
        "{chosen:?}"
    );
    assert!(chosen.agility_s <= plan.choice.pure_precopy.agility_s + 1e-9);
    assert!(chosen.agility_s <= plan.choice.pure_postcopy.agility_s + 1e-9);
    assert!(!plan.choice.reason.is_empty());
    let missing = c.wan_plan("nope", &req).await.expect_err("no such VM");
    assert_eq!(missing.status(), Some(404), "{missing}");
}
