//! A storage and memory post-copy between two agents (real QEMU, TCG, loopback) whose
//! destination QEMU is killed after the switch: the guest is lost in memory terms, and the
//! operator gives the migration up with `POST /v1/migrations/{id}/abandon`. Nothing deletes a
//! disk file on the way: the source's disk stays (handed to the operator: deleting the lost VM
//! keeps it), the destination's overlay stays (named in the abort's `kept_disk`). Before, a
//! resume is refused and the notes do not claim both QEMUs are kept.
//!
//! The post-copy is held open by a low bandwidth cap; every wait is bounded, and every QEMU
//! the test started is killed however it ends.

use common::{client, image, run, send, tcg_config, vm, wait_for, QemuGuard};
use drover_agent::procfs;
use drover_api::{MigrationRequest, MigrationState, VmStatus};
use drover_core::migration::{PlanKnobs, StorageMode, Technique};
use drover_testkit::{require, QEMU, QEMU_IMG};
use std::time::Duration;

mod common;

#[test]
fn a_split_postcopy_whose_destination_died_is_abandoned_keeping_every_disk() {
    require!(QEMU, QEMU_IMG);
    procfs::become_subreaper();
    let image = image();
    let dir = tempfile::Builder::new()
        .prefix("drab")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let (state_a, state_b) = (dir.path().join("a"), dir.path().join("b"));
    let _guard = QemuGuard(vec![state_a.clone(), state_b.clone()]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (_a, url_a) = run(tcg_config(&state_a, &image)).await;
        let (_b, url_b) = run(tcg_config(&state_b, &image)).await;
        let (a, b) = (client(&url_a), client(&url_b));
        let mut config = vm("ab1", "memtouch:wss=32M,pattern=seq");
        config.disk_size_bytes = Some(32 << 20);
        a.create_vm(&config).await.expect("create");
        let source_disk = state_a.join("disks/ab1.qcow2");
        assert!(source_disk.exists(), "{}", source_disk.display());
        tokio::time::sleep(Duration::from_secs(4)).await;
        let request = MigrationRequest {
            id: Some("ab1-m1".into()),
            to: b.base().clone(),
            technique: Technique::Postcopy,
            measure: false,
            knobs: PlanKnobs {
                bandwidth_bps: Some(6_000_000),
                resume_window_s: 30,
                storage: StorageMode::Postcopy,
                ..PlanKnobs::default()
            },
        };
        a.migrate("ab1", &request).await.expect("accepted");
        let m = wait_for(&a, "ab1-m1", Duration::from_secs(90), |m| {
            m.vm_on_destination || m.state.is_final()
        })
        .await;
        assert_eq!(m.state, MigrationState::Running, "in post-copy: {m:?}");

        // The destination knows the guest reached it only from a look (a forwarded
        // query-status or query-migrate that says so, or its sampler's own, once a pass:
        // `VmEntry::guest_arrived`); neither may have come yet when the record shows the
        // switch. Look as the source does, so that what the destination keeps is judged on a
        // guest it saw, not on the sampler's timing. (A destination killed within a sampler
        // pass of the switch, before any look, deletes its overlay when released: the gap
        // left, documented in `vms/release.rs`.)
        let look = serde_json::json!({"execute": "query-status"});
        let mut seen = false;
        for _ in 0..60 {
            let (s, body) = send("POST", &format!("{url_b}/v1/vms/ab1/qmp"), Some(&look)).await;
            if s == 200 && body.contains("\"running\":true") {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(seen, "the destination's guest never ran");
        // The destination's QEMU dies with part of the guest's memory.
        let pid = b.get_vm("ab1").await.expect("destination view").pid;
        procfs::signal(pid, libc::SIGKILL).expect("kill the destination QEMU");
        let m = wait_for(&a, "ab1-m1", Duration::from_secs(120), |m| {
            m.state.is_final() && m.notes.iter().any(|n| n.contains("not resumed"))
        })
        .await;
        assert!(
            matches!(m.state, MigrationState::Paused | MigrationState::Failed)
                && m.vm_on_destination,
            "{m:?}"
        );
        let last = m.notes.last().cloned().unwrap_or_default();
        assert!(
            last.contains("the destination's QEMU is gone") && !last.contains("both QEMUs"),
            "{:?}",
            m.notes
        );
        let err = a
            .resume_migration("ab1-m1")
            .await
            .expect_err("nothing to resume");
        assert_eq!(err.status(), Some(409), "{err}");
        assert!(
            err.to_string().contains("abandon"),
            "says what can be done: {err}"
        );

        // Given up: the record says what died and where the disks are.
        let (s, body) = send(
            "POST",
            &format!("{url_a}/v1/migrations/ab1-m1/abandon"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{body}");
        let done = a.migration("ab1-m1").await.expect("record");
        assert_eq!(done.state, MigrationState::Abandoned, "{done:?}");
        let error = done.error.clone().unwrap_or_default();
        assert!(
            error.contains("the destination's QEMU died")
                && error.contains("the guest is lost")
                && error.contains(&source_disk.display().to_string())
                && error.contains("the destination kept its disk file"),
            "{error}"
        );
        // Source: the VM reported lost, its QEMU gone, its disk kept, also when deleted.
        let v = a.get_vm("ab1").await.expect("source view");
        assert_eq!(v.status, VmStatus::Lost, "{v:?}");
        assert!(
            v.error.as_deref().is_some_and(|e| e.contains("abandoned")),
            "{v:?}"
        );
        assert!(!procfs::is_alive(v.pid, "ab1"), "source QEMU stopped");
        a.delete_vm("ab1").await.expect("delete the lost VM");
        assert!(source_disk.exists(), "the source's disk was deleted");
        // Destination: its VM released, its overlay kept.
        assert!(b.list_vms().await.expect("list").is_empty());
        assert!(state_b.join("disks/ab1.qcow2").exists(), "overlay deleted");
        // Once only.
        let (s, body) = send(
            "POST",
            &format!("{url_a}/v1/migrations/ab1-m1/abandon"),
            None,
        )
        .await;
        assert_eq!(s, 409, "{body}");
    });
}
