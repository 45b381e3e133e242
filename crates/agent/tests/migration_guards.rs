//! A post-copy between two agents, with real QEMU (TCG) on loopback, and everything a user may
//! try on either side while the guest runs on the destination and the rest of its memory is
//! still on the source: delete either VM, abort the incoming side, commit early, migrate again,
//! cancel. None may lose the guest; the record says where it is from the moment post-copy
//! starts. Then commit, repeated, and the refusals that need no migration in flight.
//!
//! The post-copy is held open by a low bandwidth cap (about 20 s for a 128 MiB guest); the test
//! is bounded by timeouts and kills every QEMU it started however it ends.

use common::{client, image, run, send, tcg_config, vm, wait_for, QemuGuard};
use drover_agent::procfs;
use drover_api::{AgentClient, MigrationRecord, MigrationRequest, MigrationState, VmStatus};
use drover_core::migration::{PlanKnobs, Technique};
use drover_testkit::{require, QEMU};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

mod common;

const WORKLOAD: &str = "memtouch:wss=32M,pattern=seq";

#[test]
fn nothing_loses_the_guest_during_a_postcopy() {
    require!(QEMU);
    procfs::become_subreaper();
    let image = image();
    let dir = tempfile::Builder::new()
        .prefix("drg")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let (state_a, state_b) = (dir.path().join("a"), dir.path().join("b"));
    let _guard = QemuGuard(vec![state_a.clone(), state_b.clone()]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (_a, url_a) = run(tcg_config(&state_a, &image)).await;
        let (_b, url_b) = run(tcg_config(&state_b, &image)).await;
        let (a, b) = (client(&url_a), client(&url_b));
        a.create_vm(&vm("pc1", WORKLOAD)).await.expect("create");
        during_postcopy(&a, &b, &url_a, &url_b, &state_a).await;
        commits(&a, &b, &url_b).await;
        b.delete_vm("pc1")
            .await
            .expect("a committed VM is deleted normally");
    });
}

async fn during_postcopy(
    a: &AgentClient,
    b: &AgentClient,
    url_a: &str,
    url_b: &str,
    state_a: &Path,
) {
    // Let the guest boot and touch its working set, so there is memory to move.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let request = |id: &str| MigrationRequest {
        id: Some(id.into()),
        to: b.base().clone(),
        technique: Technique::Postcopy,
        measure: false,
        knobs: PlanKnobs {
            bandwidth_bps: Some(6_000_000),
            ..PlanKnobs::default()
        },
    };
    a.migrate("pc1", &request("pc1-m1"))
        .await
        .expect("accepted");
    // The record (and its live view) says where the guest is as soon as post-copy starts.
    let m = wait_for(a, "pc1-m1", Duration::from_secs(60), |m| {
        m.vm_on_destination || m.state.is_final()
    })
    .await;
    assert_eq!(
        m.state,
        MigrationState::Running,
        "still in post-copy: {m:?}"
    );
    let kept: MigrationRecord = serde_json::from_slice(
        &std::fs::read(state_a.join("migrations/pc1-m1.json")).expect("record file"),
    )
    .expect("record");
    assert!(kept.vm_on_destination, "persisted, not only at the end");

    // Destination: the incoming VM is the only running copy.
    let (s, body) = send("DELETE", &format!("{url_b}/v1/vms/pc1"), None).await;
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("pc1-m1"), "names its migration: {body}");
    let (s, body) = send("DELETE", &format!("{url_b}/v1/incoming/pc1"), None).await;
    assert_eq!(s, 409, "{body}");
    let (s, body) = send("POST", &format!("{url_b}/v1/incoming/pc1/commit"), None).await;
    assert_eq!(s, 409, "its memory is still arriving: {body}");

    // Source: holds the rest of the guest's memory; its view does not claim the guest.
    let v = a.get_vm("pc1").await.expect("source view");
    assert_eq!(v.status, VmStatus::Moved, "{v:?}");
    assert_eq!(v.migration.as_deref(), Some("pc1-m1"));
    let (s, body) = send("DELETE", &format!("{url_a}/v1/vms/pc1"), None).await;
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("pc1-m1"), "{body}");
    let again = a
        .migrate("pc1", &request("pc1-m2"))
        .await
        .expect_err("busy");
    assert_eq!(again.status(), Some(409), "{again}");
    let (s, body) = send("DELETE", &format!("{url_a}/v1/migrations/pc1-m1"), None).await;
    assert_eq!(s, 409, "{body}");
    assert!(
        body.contains(
            "cannot cancel: the migration is in post-copy and the VM already runs on the destination"
        ),
        "{body}"
    );

    let done = a
        .wait_migration("pc1-m1", Duration::from_secs(180))
        .await
        .expect("poll");
    assert_eq!(done.state, MigrationState::Completed, "{done:?}");
    assert!(done.vm_on_destination && done.error.is_none(), "{done:?}");
    assert!(
        !done.notes.iter().any(|n| n.contains("commit")),
        "the hand-over waits for the whole guest quietly: {done:?}"
    );
    assert!(
        a.list_vms().await.expect("list").is_empty(),
        "source stopped"
    );
    let on_b = b.get_vm("pc1").await.expect("destination view");
    assert_eq!(on_b.status, VmStatus::Running, "committed: {on_b:?}");
}

async fn commits(a: &AgentClient, b: &AgentClient, url_b: &str) {
    // Again on a VM that arrived by migration: harmless (the source retries on doubt).
    b.commit_incoming("pc1").await.expect("commit again");
    // The migration that delivered it cannot deliver a second VM.
    let (s, body) = send(
        "POST",
        &format!("{url_b}/v1/incoming"),
        Some(&json!({"config": vm("twin", "idle"), "migration_id": "pc1-m1"})),
    )
    .await;
    assert_eq!(s, 409, "{body}");
    // An incoming VM that never received a migration has no guest to commit; nor is it
    // deleted through /v1/vms; aborting it is fine.
    let (s, body) = send(
        "POST",
        &format!("{url_b}/v1/incoming"),
        Some(&json!({"config": vm("empty", "idle"), "migration_id": "never-1"})),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = send("POST", &format!("{url_b}/v1/incoming/empty/commit"), None).await;
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("inmigrate"), "{body}");
    let (s, body) = send("DELETE", &format!("{url_b}/v1/vms/empty"), None).await;
    assert_eq!(s, 409, "{body}");
    b.abort_incoming("empty")
        .await
        .expect("abort before any switch");
    // An ordinary VM never was incoming.
    a.create_vm(&vm("plain", "idle")).await.expect("create");
    let err = a
        .commit_incoming("plain")
        .await
        .expect_err("never incoming");
    assert_eq!(err.status(), Some(409), "{err}");
    a.delete_vm("plain").await.expect("delete");
}
