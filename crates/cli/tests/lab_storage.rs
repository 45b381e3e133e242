//! A VM with a local qcow2 disk migrates between two lab agents by pre-copy, its disk moved
//! through the destination's NBD export and a mirror from the source (storage pre-copy): the
//! record completes with the storage figures in its notes, the disk workload keeps running on
//! the destination with no integrity error (its blocks were written on the source and are read
//! back and checked there), and the source has no VM left. Needs root, `ip`, `tc` and QEMU (a
//! failure under CI when missing) and scripts/setup. The lab is torn down also when the test
//! fails, and checked to leave nothing.

mod common;

use common::lab::{ops_per_s, serial, wait_until, Lab};
use drover_testkit::{require, Need, IP, QEMU, TC};
use std::time::Duration;

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
    // Any other technique is refused up front, the VM untouched.
    let refused = lab.host_client("h1");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let to = drover_api::AgentUrl::parse(lab.host("h2")["agent_url"].as_str().expect("url"))
        .expect("agent url");
    let postcopy = drover_api::MigrationRequest {
        id: None,
        to,
        technique: drover_core::migration::Technique::Postcopy,
        measure: false,
        knobs: drover_core::migration::PlanKnobs::default(),
    };
    let err = rt
        .block_on(refused.migrate("dvm", &postcopy))
        .expect_err("post-copy of a disk");
    assert!(
        err.to_string()
            .contains("storage post-copy is not built yet"),
        "{err}"
    );

    let record = lab.migrate("dvm", "h2", "precopy");
    eprintln!("record: {record:#}");
    assert_eq!(record["state"], "completed", "{record:#}");
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
