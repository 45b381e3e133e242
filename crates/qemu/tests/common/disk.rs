//! Disk helpers of the storage tests: `qemu-io` on a stopped image or through a running
//! QEMU's block layer, `qemu-img compare`, loopback NBD addresses, waiting for a migration.

use drover_core::migration::MigrationStatus;
use drover_qemu::disk::{DiskNodes, NbdAddr};
use drover_qemu::qmp::{Qmp, QmpExt};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs `qemu-io` on a stopped image; panics with its output when it fails.
pub fn qemu_io(image: &Path, command: &str) -> String {
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", command])
        .arg(image)
        .output()
        .expect("run qemu-io");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !text.contains("fail") && !text.contains("Pattern verification"),
        "qemu-io '{command}' on {}: {text} {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// An I/O through the running QEMU's block layer on the guest's device (HMP `qemu-io`), so
/// it takes the guest's path (the mirror's, the copy-on-read filter's).
pub async fn io_live(qmp: &dyn Qmp, command: &str) {
    let device = DiskNodes::of(0).qdev_path();
    let line = format!("qemu-io -d {device} \"{command}\"");
    let out = qmp
        .execute("human-monitor-command", Some(json!({"command-line": line})))
        .await
        .expect("human-monitor-command");
    let text = out.as_str().unwrap_or_default();
    assert!(
        !text.contains("fail") && !text.contains("rror"),
        "{line}: {text}"
    );
}

/// `qemu-img compare` of two qcow2 images; panics with its output when they differ.
pub fn assert_same_contents(a: &Path, b: &Path) {
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "qcow2"])
        .args([a, b])
        .output()
        .expect("run qemu-img compare");
    assert!(
        cmp.status.success(),
        "images differ: {}{}",
        String::from_utf8_lossy(&cmp.stdout),
        String::from_utf8_lossy(&cmp.stderr)
    );
}

/// A loopback NBD address on a free port.
pub fn nbd_addr() -> NbdAddr {
    NbdAddr::new(
        format!("127.0.0.1:{}", super::free_port())
            .parse()
            .expect("addr"),
    )
    .expect("nbd address")
}

/// Waits (bounded, 20 s) for the source's migration to be in `wanted`.
pub async fn until_status(qmp: &dyn Qmp, wanted: &[MigrationStatus]) -> bool {
    for _ in 0..4000 {
        if let Ok(Some(s)) = qmp.query_migrate(0).await.map(|p| p.status) {
            if wanted.contains(&s) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}
