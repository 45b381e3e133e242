//! A storage post-copy between two agents (real QEMU, TCG, loopback) whose source VM is asked
//! to be deleted again and again from the switch on: while the destination's overlay still
//! reads blocks from the source's disk (the memory post-copy completed, the stream not yet),
//! every delete is refused with 409, and the migration completes. Before, a delete after the
//! memory completed passed (the source QEMU said `completed`) and removed the only full copy
//! of the disk.
//!
//! The stream is held open by a low bandwidth cap; every wait is bounded, and every QEMU the
//! test started is killed however it ends.

use common::{client, image, run, tcg_config, vm, wait_for, QemuGuard};
use drover_agent::procfs;
use drover_api::{MigrationRequest, MigrationState};
use drover_core::migration::{PlanKnobs, StorageMode, Technique};
use drover_testkit::{require, QEMU, QEMU_IMG};
use std::time::Duration;

mod common;

#[test]
fn a_source_disk_a_stream_still_reads_is_never_deleted() {
    require!(QEMU, QEMU_IMG);
    procfs::become_subreaper();
    let image = image();
    let dir = tempfile::Builder::new()
        .prefix("drdl")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let (state_a, state_b) = (dir.path().join("a"), dir.path().join("b"));
    let _guard = QemuGuard(vec![state_a.clone(), state_b.clone()]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (_a, url_a) = run(tcg_config(&state_a, &image)).await;
        let (_b, url_b) = run(tcg_config(&state_b, &image)).await;
        let (a, b) = (client(&url_a), client(&url_b));
        let mut config = vm("dl1", "memtouch:wss=8M,pattern=seq");
        config.disk_size_bytes = Some(48 << 20);
        a.create_vm(&config).await.expect("create");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let request = MigrationRequest {
            id: Some("dl1-m1".into()),
            to: b.base().clone(),
            technique: Technique::Postcopy,
            measure: false,
            knobs: PlanKnobs {
                bandwidth_bps: Some(4_000_000),
                storage: StorageMode::Postcopy,
                ..PlanKnobs::default()
            },
        };
        a.migrate("dl1", &request).await.expect("accepted");
        let m = wait_for(&a, "dl1-m1", Duration::from_secs(90), |m| {
            m.vm_on_destination || m.state.is_final()
        })
        .await;
        assert!(m.vm_on_destination, "switched: {m:?}");
        // Delete, every 300 ms, until the migration ends (bounded): never while it runs.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
        let mut refused = 0;
        let done = loop {
            let m = a.migration("dl1-m1").await.expect("record");
            if m.state.is_final() {
                break m;
            }
            assert!(tokio::time::Instant::now() < deadline, "no end: {m:?}");
            match a.delete_vm("dl1").await {
                Err(e) if e.status() == Some(409) => refused += 1,
                // Handed over just now (the record says so a moment later).
                Err(e) if e.status() == Some(404) => {}
                other => {
                    let m = a.migration("dl1-m1").await.expect("record");
                    assert!(
                        m.state == MigrationState::Completed,
                        "deleted while the migration was {:?}: {other:?}; {m:?}",
                        m.state
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(done.state, MigrationState::Completed, "{done:?}");
        assert!(refused > 0, "no delete was tried during the migration");
        // The guest lives on the destination, on its own whole disk.
        let v = b.get_vm("dl1").await.expect("destination view");
        assert_eq!(v.qemu_status.as_deref(), Some("running"), "{v:?}");
        b.delete_vm("dl1").await.expect("delete on the destination");
    });
}
