//! A VM with a local qcow2 disk migrates between two lab agents by pre-copy, its disk moved
//! through the destination's NBD export and a mirror from the source (storage pre-copy): the
//! record completes with the storage figures in its notes, the disk workload keeps running on
//! the destination with no integrity error (its blocks were written on the source and are read
//! back and checked there), and the source has no VM left. Before that, two that fail leave
//! the VM running on the source, intact: a destination that has a file of the disk's name (never
//! overwritten), and a migration cancelled once the mirror is READY (the destination's incoming
//! VM and its incomplete disk removed). Needs root, `ip`, `tc` and QEMU (a
//! failure under CI when missing) and scripts/setup. The lab is torn down also when the test
//! fails, and checked to leave nothing.

mod common;

use common::lab::{ops_per_s, serial, wait_until, Lab};
use drover_api::{AgentUrl, MigrationRequest, MigrationState};
use drover_core::migration::{PlanKnobs, Technique};
use drover_testkit::{require, Need, IP, QEMU, TC};
use std::time::{Duration, Instant};

/// 16 MiB of 4 KiB blocks, 100 writes and reads a second, on a 64 MiB disk.
const WORKLOAD: &str = "disk:wss=16M,rate=100";
/// Operations after the move that must pass the guest's checks: ~10 s of the workload.
const ADVANCE_OPS: u64 = 1000;

#[test]
fn a_vm_with_a_local_disk_migrates_by_storage_precopy() {
    require!(Need::Root, IP, TC, QEMU);
    let _serial = serial();
    let lab = Lab::up('s', &["--hosts", "2"]);
    lab.vm(&[
        "create",
        "dvm",
        "--host",
        "h1",
        "--memory",
        "256M",
        "--workload",
        WORKLOAD,
        "--disk-size",
        "64M",
    ]);
    wait_until("the disk workload to run", Duration::from_secs(90), || {
        ops_per_s(&lab.find_vm("h1", "dvm")) > 0.0
    });
    let h1 = lab.host_client("h1");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let to = AgentUrl::parse(lab.host("h2")["agent_url"].as_str().expect("url")).expect("url");
    let request = |technique, knobs| MigrationRequest {
        id: None,
        to: to.clone(),
        technique,
        measure: false,
        knobs,
    };
    // Any other technique is refused up front with storage pre-copy, the VM untouched.
    let err = rt
        .block_on(h1.migrate("dvm", &request(Technique::Postcopy, PlanKnobs::default())))
        .expect_err("post-copy of a disk");
    assert!(
        err.to_string()
            .contains("with storage postcopy any technique moves it"),
        "{err}"
    );
    let target = std::path::PathBuf::from(lab.host("h2")["state_dir"].as_str().expect("dir"))
        .join("disks")
        .join("dvm.qcow2");

    // 1. h2 has a dvm.qcow2 already (another VM's disk): refused there, nothing overwritten.
    lab.vm(&[
        "create",
        "other",
        "--host",
        "h2",
        "--memory",
        "128M",
        "--disk",
        "dvm.qcow2",
        "--disk-size",
        "8M",
    ]);
    let before = std::fs::metadata(&target).expect("other's disk").len();
    let started = rt
        .block_on(h1.migrate("dvm", &request(Technique::Precopy, PlanKnobs::default())))
        .expect("migrate");
    let failed = final_record(&rt, &h1, &started.id);
    assert_eq!(failed.state, MigrationState::Failed, "{failed:?}");
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("'dvm.qcow2' already exists")),
        "{failed:?}"
    );
    assert_eq!(std::fs::metadata(&target).expect("kept").len(), before);
    assert!(lab.find_vm("h2", "dvm").is_null());
    rt.block_on(lab.host_client("h2").delete_vm("other"))
        .expect("delete other");
    assert!(!target.exists(), "other's disk outlived it");

    // 2. Cancelled during the memory pre-copy (slowed to 5 MB/s), the mirror READY: the VM
    //    stays on h1, h2 keeps neither an incoming VM nor a disk.
    let slow = PlanKnobs {
        bandwidth_bps: Some(5_000_000),
        ..PlanKnobs::default()
    };
    let started = rt
        .block_on(h1.migrate("dvm", &request(Technique::Precopy, slow)))
        .expect("migrate");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = rt.block_on(h1.migration(&started.id)).expect("record");
        let ram = r
            .progress
            .as_ref()
            .and_then(|p| p.ram)
            .map_or(0, |ram| ram.transferred);
        if r.state == MigrationState::Running && ram > 10_000_000 {
            break;
        }
        assert!(Instant::now() < deadline && !r.state.is_final(), "{r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    rt.block_on(h1.cancel_migration(&started.id))
        .expect("cancel");
    let cancelled = final_record(&rt, &h1, &started.id);
    eprintln!("cancelled: {:?} {:?}", cancelled.error, cancelled.notes);
    assert_eq!(cancelled.state, MigrationState::Cancelled, "{cancelled:?}");
    assert!(!cancelled.vm_on_destination);
    wait_until(
        "h2 to drop the incoming VM",
        Duration::from_secs(30),
        || lab.find_vm("h2", "dvm").is_null(),
    );
    assert!(!target.exists(), "h2 kept the incomplete disk");
    lab.assert_works_intact_on("h1", "dvm", 300);

    // 3. The migration, asked as `auto`: a VM with a disk runs pre-copy, and says why.
    let record = lab.migrate("dvm", "h2", "auto");
    eprintln!("record: {record:#}");
    assert_eq!(record["state"], "completed", "{record:#}");
    assert_eq!(record["plan"]["technique"], "precopy", "{record:#}");
    let reason = record["plan"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("local disk"), "{reason}");
    assert_eq!(record["vm_on_destination"], true, "{record:#}");
    let notes = record["notes"].as_array().cloned().unwrap_or_default();
    let storage = notes
        .iter()
        .filter_map(|n| n.as_str())
        .find(|n| n.starts_with("storage pre-copy:"))
        .unwrap_or_else(|| panic!("no storage figures in {record:#}"));
    eprintln!("{storage}");
    assert!(!storage.contains("failed"), "{storage}");
    assert!(lab.find_vm("h1", "dvm").is_null(), "dvm still on h1");
    let there = lab.assert_works_intact_on("h2", "dvm", ADVANCE_OPS);
    assert_eq!(there["status"], "running", "{there}");
}

/// Polls migration `id` until its record is final (at most a minute).
fn final_record(
    rt: &tokio::runtime::Runtime,
    client: &drover_api::AgentClient,
    id: &str,
) -> drover_api::MigrationRecord {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = rt.block_on(client.migration(id)).expect("record");
        if r.state.is_final() {
            return r;
        }
        assert!(Instant::now() < deadline, "{r:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
