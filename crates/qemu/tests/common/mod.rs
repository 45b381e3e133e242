//! What the real-QEMU tests share: the launcher (TCG, the guest image), names a test's
//! leftovers can be found by, a boot that waits for the workload, free loopback ports, and
//! (in [`disk`]) the disk helpers of the storage tests, (in [`pair`]) a source and a destination
//! on an overlay of its export.
//!
//! Each test binary uses a part of it.
#![allow(dead_code)]

pub mod disk;
pub mod pair;

use drover_qemu::image::{ensure_image, NoProgress};
use drover_qemu::launcher::{Accel, VmSpec};
use drover_qemu::metrics::{Clock, Samples};
use drover_qemu::vm::{LocalLauncher, LocalVm};
use std::path::Path;
use std::time::Duration;

/// A TCG launcher of 1-vCPU guests of `memory_mib` on the guest image (built by
/// `scripts/setup`'s inputs).
pub fn launcher(memory_mib: u64) -> LocalLauncher {
    LocalLauncher {
        qemu_binary: "qemu-system-x86_64".into(),
        accel: Accel::Tcg,
        image: ensure_image(&NoProgress).expect("guest image (run scripts/setup)"),
        vcpus: 1,
        memory_bytes: memory_mib << 20,
        start_timeout: Duration::from_secs(20),
    }
}

/// A name carrying the test's tag (and this process's id), so leftovers can be found.
pub fn tag(test: &str) -> String {
    format!("t{}-{test}", std::process::id())
}

/// Fails if any QEMU whose command line mentions `tag` is still running.
pub fn assert_no_qemu_left(tag: &str) {
    let left: Vec<String> = drover_testkit::processes_mentioning(tag)
        .into_iter()
        .filter(|cmd| cmd.contains("qemu-system"))
        .collect();
    assert!(left.is_empty(), "QEMU processes left behind: {left:?}");
}

/// Launches `spec` in `dir` and, unless it is a migration's destination, waits (up to a
/// minute) for its workload's first report.
pub async fn boot(
    l: &LocalLauncher,
    spec: &VmSpec,
    dir: &Path,
    clock: Clock,
    samples: &Samples,
) -> LocalVm {
    let vm = l
        .launch(spec, dir, clock, samples.clone())
        .await
        .unwrap_or_else(|e| panic!("launch {}: {e}", spec.name));
    if !spec.incoming {
        samples
            .wait_for(&clock, 0, 0, Duration::from_secs(60))
            .await
            .expect("workload reports");
    }
    vm
}

/// A free loopback TCP port (the listener is closed again before QEMU binds it).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
