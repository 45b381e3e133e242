//! The launcher against the real QEMU binary: start-up failures are clear errors, and the
//! optional disk and tap NIC really reach the guest's machine. Needs QEMU (and root and `ip` for
//! the tap): a failure under CI when missing, a loud skip elsewhere.

use drover_qemu::image::{ensure_image, NoProgress};
use drover_qemu::launcher::{Accel, LaunchError, QemuProcess, RunPaths, TapNic, VmSpec};
use drover_qemu::qmp::{Qmp, QmpClient};
use drover_testkit::{require, Need, IP, QEMU as NEED_QEMU, QEMU_IMG};
use std::process::Command;
use std::time::Duration;

const QEMU: &str = "qemu-system-x86_64";

fn spec(name: &str) -> VmSpec {
    let image = ensure_image(&NoProgress).expect("guest image (run scripts/setup)");
    VmSpec {
        name: name.into(),
        vcpus: 1,
        memory_bytes: 128 << 20,
        accel: Accel::Tcg,
        kernel: image.kernel,
        initrd: image.initrd,
        append: drover_qemu::image::kernel_cmdline("idle"),
        incoming: false,
        tap: None,
        disk: None,
    }
}

#[tokio::test]
async fn a_corrupt_kernel_is_reported_with_qemus_own_words() {
    require!(NEED_QEMU);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = spec("badkernel");
    let bogus = dir.path().join("vmlinuz");
    std::fs::write(&bogus, b"this is not a kernel").expect("write");
    s.kernel = bogus;
    let paths = RunPaths::in_dir(&dir.path().join("run"));
    let Err(err) = QemuProcess::spawn(QEMU, &s, &paths, Duration::from_secs(20)).await else {
        panic!("a bogus kernel must not start");
    };
    let LaunchError::Exited { stderr, .. } = &err else {
        panic!("expected an early exit, got {err}");
    };
    assert!(stderr.to_lowercase().contains("kernel"), "{err}");
}

/// Removes the tap device even when the test fails.
struct Tap(String);

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[tokio::test]
async fn disk_and_tap_nic_are_attached() {
    require!(NEED_QEMU, QEMU_IMG, Need::Root, IP);
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("disk.qcow2");
    let created = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("64M")
        .status()
        .expect("qemu-img");
    assert!(created.success());
    let tap = Tap(format!("drvt{}", std::process::id() % 100_000));
    let made = Command::new("ip")
        .args(["tuntap", "add", "dev", &tap.0, "mode", "tap"])
        .status()
        .expect("ip");
    assert!(made.success(), "cannot create a tap device (needs root)");
    let mut s = spec("withdevs");
    s.disk = Some(disk.into());
    s.tap = Some(TapNic {
        ifname: tap.0.clone(),
        mac: "52:54:00:12:34:56".into(),
    });
    let paths = RunPaths::in_dir(&dir.path().join("run"));
    let mut qemu = QemuProcess::spawn(QEMU, &s, &paths, Duration::from_secs(20))
        .await
        .expect("QEMU starts with a disk and a NIC");
    let qmp = QmpClient::connect(&paths.qmp, Duration::from_secs(5), Duration::from_secs(10))
        .await
        .expect("qmp");
    let blocks = qmp
        .execute("query-block", None)
        .await
        .expect("query-block")
        .to_string();
    assert!(blocks.contains("disk.qcow2"), "{blocks}");
    let pci = qmp
        .execute("query-pci", None)
        .await
        .expect("query-pci")
        .to_string();
    // virtio-net (0x1000/0x1041) and virtio-blk (0x1001/0x1042) on the PCI bus, vendor 0x1af4.
    assert!(pci.contains("6900"), "no virtio device on the bus: {pci}");
    let carrier = std::fs::read_to_string(format!("/sys/class/net/{}/tun_flags", tap.0));
    assert!(carrier.is_ok(), "tap device vanished");
    qemu.kill().await;
}
