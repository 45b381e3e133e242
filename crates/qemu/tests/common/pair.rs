//! A source and a destination on an overlay of the source's export, as the storage
//! post-copy and hybrid tests use them: the source booted on its 64 MiB image (0x5a over
//! [0, 8M), 0xa5 over [40M, 44M)), the test's session exporting it, the destination launched
//! on an empty overlay backed by that export; and the checks after the stream.
//!
//! What equality means: the guest keeps using its disk on the destination, so after the
//! stream the destination's image is the source's final image plus the writes made on the
//! destination after the switchover. The tests make those writes themselves
//! ([`DEST_WRITES`], at known places: one whole-cluster write, one 4 KiB write inside a
//! cluster the overlay did not have, so qcow2 fills the rest of the cluster from the
//! source), then, with both QEMUs gone, apply the same writes to a copy of the source's image
//! and require `qemu-img compare` to find that copy and the destination's image identical.
//! The destination's guest is stopped first (`stop` drains and flushes the block layer:
//! QEMU caches the overlay's qcow2 metadata, which a killed QEMU would never write).

use super::disk::{assert_same_contents, io_live, qemu_io};
use super::{assert_no_qemu_left, boot, free_port, launcher, tag};
use drover_core::migration::{MigrationPlan, Technique};
use drover_qemu::bench;
use drover_qemu::disk::{create_qcow2, virtual_size, DiskNodes, DiskSpec, NbdBacking};
use drover_qemu::driver::Endpoints;
use drover_qemu::metrics::{Clock, Samples};
use drover_qemu::qmp::{BlockExt, Qmp, QmpExt};
use drover_qemu::vm::{LocalLauncher, LocalVm};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The disks' virtual size, bytes.
pub const DISK_BYTES: u64 = 64 << 20;

/// The writes made on the destination during the stream, replayed on the source's copy.
pub const DEST_WRITES: [&str; 2] = ["write -P 0x77 20M 1M", "write -P 0x66 41M 4k"];

/// The source booted on its image; the destination not launched yet.
pub struct Source {
    pub src: LocalVm,
    launcher: LocalLauncher,
    src_img: PathBuf,
    dst_img: PathBuf,
    clock: Clock,
    samples: Samples,
    tag: String,
    workload: &'static str,
    // Last: the images outlive the QEMU using them.
    dir: tempfile::TempDir,
}

impl Source {
    /// Boots the source (memtouch) on a new image with the patterns of the module doc.
    pub async fn boot(test: &str) -> Source {
        Source::boot_with(test, WORKLOAD).await
    }

    /// [`Source::boot`] with the guest running `workload` (a disk workload overwrites the
    /// patterns in its working set).
    pub async fn boot_with(test: &str, workload: &'static str) -> Source {
        let tag = tag(test);
        let dir = tempfile::tempdir().expect("tempdir");
        let (src_img, dst_img) = (dir.path().join("src.qcow2"), dir.path().join("dst.qcow2"));
        create_qcow2(&src_img, DISK_BYTES)
            .await
            .expect("source image");
        qemu_io(&src_img, "write -P 0x5a 0 8M");
        qemu_io(&src_img, "write -P 0xa5 40M 4M");
        let launcher = launcher(128);
        let (clock, samples) = (Clock::default(), Samples::default());
        let mut spec = launcher.spec(&tag, workload, false);
        spec.disk = Some(DiskSpec::Image(src_img.clone()));
        let src = boot(&launcher, &spec, &dir.path().join("a"), clock, &samples).await;
        Source {
            src,
            launcher,
            src_img,
            dst_img,
            clock,
            samples,
            tag,
            workload,
            dir,
        }
    }

    /// Launches the destination on an empty overlay backed by the source's export
    /// (`backing`, the session's), keeping `session` beside both.
    pub async fn with_dest<S>(self, session: S, backing: NbdBacking) -> Pair<S> {
        let size = virtual_size(&self.src_img).await.expect("size");
        create_qcow2(&self.dst_img, size).await.expect("overlay");
        let mut spec = self.launcher.spec(&self.tag, self.workload, true);
        spec.disk = Some(DiskSpec::Overlay {
            overlay: self.dst_img.clone(),
            source: backing,
        });
        let dir = self.dir.path().join("b");
        let dst = boot(&self.launcher, &spec, &dir, self.clock, &self.samples).await;
        Pair {
            src_img: self.src_img,
            dst_img: self.dst_img,
            src: self.src,
            dst,
            session,
            clock: self.clock,
            samples: self.samples,
            tag: self.tag,
            workload: self.workload,
            dir: self.dir,
        }
    }
}

const WORKLOAD: &str = "memtouch:wss=16M,rate=max";

/// Both QEMUs and the test's session. Dropped, both QEMUs go, then the directory with the
/// images.
pub struct Pair<S> {
    pub src_img: PathBuf,
    pub dst_img: PathBuf,
    pub src: LocalVm,
    pub dst: LocalVm,
    pub session: S,
    pub clock: Clock,
    pub samples: Samples,
    pub tag: String,
    pub workload: &'static str,
    // Last: the images and run directories outlive the QEMUs using them.
    pub dir: tempfile::TempDir,
}

impl<S> Pair<S> {
    /// After the stream: the destination's qcow2 has no backing any more and its guest runs.
    pub async fn assert_standalone(&self) {
        let nodes = self
            .dst
            .qmp
            .execute("query-named-block-nodes", None)
            .await
            .expect("nodes");
        let overlay = nodes
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|n| n["node-name"] == DiskNodes::of(0).format_node())
            })
            .cloned()
            .expect("the overlay's node");
        assert_eq!(overlay["backing_file_depth"], 0, "{overlay}");
        let status = self.dst.qmp.query_status().await.expect("status");
        assert!(status.running, "destination guest: {}", status.status);
    }

    /// Stops the source first and checks the destination reads its whole disk without it,
    /// then stops and kills the destination, checks no QEMU is left, and that the
    /// destination's image is the source's plus [`DEST_WRITES`] (see the module doc), and
    /// holds each pattern of `reads` (`qemu-io` read commands).
    pub async fn finish(self, reads: &[&str]) {
        let Pair {
            src_img,
            dst_img,
            src,
            dst,
            tag,
            dir,
            ..
        } = self;
        src.kill().await;
        io_live(&dst.qmp, "read 0 64M").await;
        dst.qmp
            .execute("stop", None)
            .await
            .expect("stop the destination");
        dst.kill().await;
        assert_no_qemu_left(&tag);
        assert_images(&src_img, &dst_img, dir.path(), reads);
    }
}

fn assert_images(src_img: &Path, dst_img: &Path, dir: &Path, reads: &[&str]) {
    assert!(src_img.exists(), "the source's disk is kept");
    let expected = dir.join("expected.qcow2");
    std::fs::copy(src_img, &expected).expect("copy the source's image");
    for w in DEST_WRITES {
        qemu_io(&expected, w);
    }
    for read in reads {
        qemu_io(&expected, read);
        qemu_io(dst_img, read);
    }
    assert_same_contents(&expected, dst_img);
}

/// The migration's endpoints, on fresh loopback ports.
pub fn ends<'a>(src: &'a LocalVm, dst: &'a LocalVm) -> Endpoints<'a> {
    Endpoints {
        source: &src.qmp,
        dest: &dst.qmp,
        uri: format!("tcp:127.0.0.1:{}", free_port()),
        recover_uri: format!("tcp:127.0.0.1:{}", free_port()),
    }
}

/// A fixed plan of `technique`, uncapped.
pub fn plan(technique: Technique) -> MigrationPlan {
    let mut plan = MigrationPlan::fixed(technique);
    plan.max_bandwidth_bps = Some(bench::UNCAPPED_BPS);
    plan
}

/// Waits (bounded, 60 s) until the destination's stream job has moved `bytes`.
pub async fn until_streamed(dst: &LocalVm, bytes: u64) -> bool {
    let disk = DiskNodes::of(0);
    for _ in 0..1200 {
        if let Ok(Some(job)) = dst.qmp.stream_job(&disk).await {
            if job.offset >= bytes {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
