//! A VM's disk as QEMU's block layer sees it: the node names Drover owns, the NBD address a
//! storage migration uses, and `qemu-img` for target images.
//!
//! The launcher attaches disk `n` as a `file` node [`DiskNodes::file_node`] under a `qcow2`
//! node [`DiskNodes::format_node`], which the guest's virtio-blk device uses; stable names let
//! block jobs and NBD exports name them. A storage migration adds, on the source, an NBD client
//! node [`DiskNodes::target_node`] and a mirror job [`DiskNodes::mirror_job`]; the destination
//! exports its format node as [`DiskNodes::export_name`].
//!
//! A storage post-copy turns this around: the source exports its format node (read-only) and
//! the destination is launched on [`DiskSpec::Overlay`]: an NBD client node
//! [`DiskNodes::remote_node`] for that export, a new qcow2 overlay (the format node, over the
//! overlay's file node) backed by it, and a copy-on-read filter [`DiskNodes::cor_node`] under
//! the guest's device; the stream job [`DiskNodes::stream_job`] later pulls the rest.
//!
//! So a disk has one of two graphs, and the node right under the device (its root,
//! [`DiskRoot`]) is the format node or the copy-on-read filter. The filter stays for the
//! VM's life on that QEMU, also after the stream: QEMU 10 has no command that moves a
//! running device to another root node, and over an overlay without a backing it copies
//! nothing (every block reads as the overlay's own). Commands that work on any node (exports,
//! `block-stream`, `blockdev-backup`, bitmaps) keep naming the format node; `blockdev-mirror`
//! takes only a root, so a storage pre-copy asks QEMU which root the device has
//! ([`crate::qmp::BlockExt::device_root`]) and accepts only one of these two names.

use drover_core::migration::PostcopySettings;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors of this module.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DiskError {
    #[error("disk image path '{path}': {expected}")]
    BadPath { path: PathBuf, expected: String },
    #[error("disk size {bytes} bytes: expected a multiple of 512 from 1 MiB up to {max} bytes")]
    BadSize { bytes: u64, max: u64 },
    #[error("disk image '{path}' already exists: refusing to overwrite it")]
    Exists { path: PathBuf },
    #[error("NBD address {addr}: {expected}")]
    BadAddr { addr: String, expected: String },
    #[error(transparent)]
    Img(#[from] crate::img::ImgError),
    #[error("{0}")]
    BadSetting(String),
}

/// The largest disk Drover creates, bytes: the guest rule's (`drover_guest::fit`).
pub use drover_guest::fit::MAX_DISK_BYTES;

/// The block-layer names of one disk (index 0 today: the launcher attaches one disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskNodes {
    file: String,
    format: String,
    device: String,
    target: String,
    job: String,
    export_id: String,
    remote: String,
    cor: String,
    stream: String,
}

impl DiskNodes {
    /// The names of disk `index`.
    pub fn of(index: u8) -> Self {
        let base = format!("drover-disk{index}");
        DiskNodes {
            file: format!("{base}-file"),
            device: format!("{base}-dev"),
            target: format!("{base}-nbd"),
            job: format!("{base}-mirror"),
            export_id: format!("{base}-export"),
            remote: format!("{base}-remote"),
            cor: format!("{base}-cor"),
            stream: format!("{base}-stream"),
            format: base,
        }
    }

    /// The protocol node over the image file.
    pub fn file_node(&self) -> &str {
        &self.file
    }
    /// The qcow2 node the guest's device uses; mirrored and exported.
    pub fn format_node(&self) -> &str {
        &self.format
    }
    /// The virtio-blk device's id (the same on both sides of a migration).
    pub fn device_id(&self) -> &str {
        &self.device
    }
    /// The source's NBD client node for the destination's export.
    pub fn target_node(&self) -> &str {
        &self.target
    }
    /// The mirror job's id.
    pub fn mirror_job(&self) -> &str {
        &self.job
    }
    /// The destination's block export id.
    pub fn export_id(&self) -> &str {
        &self.export_id
    }
    /// The NBD export name clients ask for (the format node's name).
    pub fn export_name(&self) -> &str {
        &self.format
    }
    /// Storage post-copy, destination: the NBD client node for the source's export (the
    /// overlay's backing).
    pub fn remote_node(&self) -> &str {
        &self.remote
    }
    /// Storage post-copy, destination: the copy-on-read filter the guest's device sits on.
    pub fn cor_node(&self) -> &str {
        &self.cor
    }
    /// Storage post-copy, destination: the stream job's id.
    pub fn stream_job(&self) -> &str {
        &self.stream
    }
}

/// The node right under the guest's device: what a launch of [`DiskSpec`] made it
/// ([`DiskSpec::root`]), what QEMU reports it to be ([`DiskNodes::root_named`]), what a
/// command that needs a root node names ([`DiskNodes::root_node`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskRoot {
    /// The qcow2 node ([`DiskSpec::Image`]: launched on a local image).
    Format,
    /// The copy-on-read filter over the qcow2 node ([`DiskSpec::Overlay`]: arrived by a
    /// storage post-copy or hybrid; kept after the stream, see the module doc).
    CopyOnRead,
}

impl DiskNodes {
    /// The name of `root` among this disk's nodes.
    pub fn root_node(&self, root: DiskRoot) -> &str {
        match root {
            DiskRoot::Format => self.format_node(),
            DiskRoot::CopyOnRead => self.cor_node(),
        }
    }

    /// Which root `name` is, None when it is none of this disk's two possible roots (a graph
    /// Drover did not make: nothing else is trusted as a root).
    pub fn root_named(&self, name: &str) -> Option<DiskRoot> {
        [DiskRoot::Format, DiskRoot::CopyOnRead]
            .into_iter()
            .find(|&r| self.root_node(r) == name)
    }

    /// The device's QOM path as `query-block` reports it (`qdev`) and HMP `qemu-io -d` takes
    /// it: virtio-blk-pci's block backend lives on its `virtio-backend` child.
    pub fn qdev_path(&self) -> String {
        format!("/machine/peripheral/{}/virtio-backend", self.device_id())
    }
}

/// Where a storage post-copy's destination reads the blocks it has not pulled yet: the
/// source's NBD server (its export is always [`DiskNodes::export_name`], never a peer's
/// text) and how long a lost connection may hold reads before they fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NbdBacking {
    addr: NbdAddr,
    reconnect_delay_s: u32,
}

impl NbdBacking {
    /// The source's server at `addr`, with `settings`' reconnect delay.
    ///
    /// # Errors
    /// [`DiskError::BadSetting`] when the settings are out of their limits.
    pub fn new(addr: NbdAddr, settings: &PostcopySettings) -> Result<Self, DiskError> {
        settings
            .validate()
            .map_err(|e| DiskError::BadSetting(e.to_string()))?;
        Ok(NbdBacking {
            addr,
            reconnect_delay_s: settings.reconnect_delay_s,
        })
    }
    pub fn addr(&self) -> NbdAddr {
        self.addr
    }
    /// Seconds a lost connection holds reads before they fail (QEMU's `reconnect-delay`).
    pub fn reconnect_delay_s(&self) -> u32 {
        self.reconnect_delay_s
    }
}

/// A VM's disk as the launcher attaches it (disk 0, named by [`DiskNodes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSpec {
    /// A local qcow2 image: a file node, the qcow2 node, the guest's device on it.
    Image(PathBuf),
    /// A storage post-copy's destination: `overlay` (a new, empty qcow2 image of the
    /// source's virtual size, see [`create_qcow2`]) backed by the source's export, under a
    /// copy-on-read filter so guest reads fill it. The device stops the guest on an I/O error
    /// (`rerror`/`werror=stop`): a block the source cannot serve pauses the guest, which
    /// continues once the export answers, instead of failing inside it.
    Overlay {
        overlay: PathBuf,
        source: NbdBacking,
    },
}

impl DiskSpec {
    /// The node this spec puts under the guest's device.
    pub fn root(&self) -> DiskRoot {
        match self {
            DiskSpec::Image(_) => DiskRoot::Format,
            DiskSpec::Overlay { .. } => DiskRoot::CopyOnRead,
        }
    }

    /// The image file QEMU opens (the overlay for [`DiskSpec::Overlay`]).
    pub fn path(&self) -> &Path {
        match self {
            DiskSpec::Image(path) | DiskSpec::Overlay { overlay: path, .. } => path,
        }
    }

    /// The `-blockdev` and `-device` arguments, JSON syntax for the nodes (a path needs no
    /// comma escaping). `cache.direct` on the image's nodes: the old `cache=none`. The nbd
    /// node is read-only: the source exports it so.
    pub fn argv(&self, nodes: &DiskNodes) -> Vec<String> {
        let mut blockdevs = Vec::new();
        let mut format = json!({
            "driver": "qcow2",
            "file": nodes.file_node(),
            "node-name": nodes.format_node(),
            "cache": {"direct": true},
        });
        let mut device = format!("virtio-blk-pci,drive={}", nodes.root_node(self.root()));
        if let DiskSpec::Overlay { source, .. } = self {
            let addr = source.addr();
            blockdevs.push(json!({
                "driver": "nbd",
                "node-name": nodes.remote_node(),
                "server": {"type": "inet", "host": addr.ip().to_string(),
                           "port": addr.port().to_string()},
                "export": nodes.export_name(),
                "read-only": true,
                "reconnect-delay": source.reconnect_delay_s(),
            }));
            format["backing"] = json!(nodes.remote_node());
            device.push_str(",rerror=stop,werror=stop");
        }
        blockdevs.push(json!({
            "driver": "file",
            "filename": self.path().display().to_string(),
            "node-name": nodes.file_node(),
            "cache": {"direct": true},
        }));
        blockdevs.push(format);
        if matches!(self, DiskSpec::Overlay { .. }) {
            blockdevs.push(json!({
                "driver": "copy-on-read",
                "node-name": nodes.cor_node(),
                "file": nodes.format_node(),
            }));
        }
        let mut args = Vec::new();
        for b in blockdevs {
            args.push("-blockdev".to_string());
            args.push(b.to_string());
        }
        args.push("-device".into());
        args.push(format!("{device},id={}", nodes.device_id()));
        args
    }
}

impl From<PathBuf> for DiskSpec {
    fn from(path: PathBuf) -> Self {
        DiskSpec::Image(path)
    }
}

/// Where an NBD server listens (the destination's for a storage pre-copy, the source's for a
/// post-copy): an IP address (the migration address) and a Drover-chosen, non-zero port. A
/// typed address, so nothing textual reaches QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NbdAddr(SocketAddr);

impl NbdAddr {
    /// Checks `addr`: a specific (not unspecified, not multicast) IP address and a port > 0.
    ///
    /// # Errors
    /// [`DiskError::BadAddr`] naming what was expected.
    pub fn new(addr: SocketAddr) -> Result<Self, DiskError> {
        let bad = |expected: &str| DiskError::BadAddr {
            addr: addr.to_string(),
            expected: expected.into(),
        };
        if addr.port() == 0 {
            return Err(bad("expected a port from 1 to 65535"));
        }
        if addr.ip().is_unspecified() || addr.ip().is_multicast() {
            return Err(bad("expected the destination's own unicast address"));
        }
        Ok(NbdAddr(addr))
    }

    pub fn ip(&self) -> std::net::IpAddr {
        self.0.ip()
    }
    pub fn port(&self) -> u16 {
        self.0.port()
    }
}

/// Checks an image path before it reaches `qemu-img` or QEMU, which read `proto:` prefixes
/// and `json:` filenames: absolute, and only letters, digits, `/`, `.`, `_`, `-` and `+`.
///
/// # Errors
/// [`DiskError::BadPath`] naming what was expected.
pub fn check_image_path(path: &Path) -> Result<(), DiskError> {
    let bad = |expected: &str| DiskError::BadPath {
        path: path.to_path_buf(),
        expected: expected.into(),
    };
    let Some(text) = path.to_str() else {
        return Err(bad("expected a UTF-8 path"));
    };
    if !path.is_absolute() {
        return Err(bad("expected an absolute path"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/._-+".contains(c);
    if !text.chars().all(allowed) || path.file_name().is_none() {
        return Err(bad(
            "expected a file path of letters, digits, '/', '.', '_', '-' and '+'",
        ));
    }
    Ok(())
}

/// Creates an empty qcow2 image of `virtual_bytes` at `path` (a storage migration's target,
/// the same virtual size as the source's disk), through [`crate::img::create`]: never over an
/// existing file, never half-made, refused beyond the directory's free space.
///
/// # Errors
/// [`DiskError`] for a bad path or size, an existing file, or `qemu-img` failing.
pub async fn create_qcow2(path: &Path, virtual_bytes: u64) -> Result<(), DiskError> {
    check_image_path(path)?;
    if !virtual_bytes.is_multiple_of(512)
        || drover_guest::fit::check_disk_size(virtual_bytes).is_err()
    {
        return Err(DiskError::BadSize {
            bytes: virtual_bytes,
            max: MAX_DISK_BYTES,
        });
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(DiskError::BadPath {
            path: path.to_path_buf(),
            expected: "expected a file in a directory".into(),
        });
    };
    let disk = crate::img::NewDisk {
        name,
        size_bytes: Some(virtual_bytes),
        base: None,
    };
    crate::img::create(Path::new(QEMU_IMG), dir, &disk)
        .await
        .map(|_| ())
        .map_err(|e| match e {
            crate::img::ImgError::Exists { .. } => DiskError::Exists {
                path: path.to_path_buf(),
            },
            other => DiskError::Img(other),
        })
}

/// The virtual size of the image at `path`, bytes ([`crate::img::info`]).
///
/// # Errors
/// [`DiskError`] for a bad path, or `qemu-img` failing.
pub async fn virtual_size(path: &Path) -> Result<u64, DiskError> {
    check_image_path(path)?;
    let name = path.display().to_string();
    Ok(crate::img::info(Path::new(QEMU_IMG), path, &name)
        .await?
        .virtual_size)
}

/// The `qemu-img` on `PATH` (what `scripts/setup` installs beside QEMU).
pub(crate) const QEMU_IMG: &str = "qemu-img";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_stable() {
        let d = DiskNodes::of(0);
        assert_eq!(d.file_node(), "drover-disk0-file");
        assert_eq!(d.format_node(), "drover-disk0");
        assert_eq!(d.target_node(), "drover-disk0-nbd");
        assert_eq!(d.mirror_job(), "drover-disk0-mirror");
        assert_eq!(d.remote_node(), "drover-disk0-remote");
        assert_eq!(d.cor_node(), "drover-disk0-cor");
        assert_eq!(d.stream_job(), "drover-disk0-stream");
    }

    #[test]
    fn each_spec_names_its_root_and_only_drovers_roots_are_recognised() {
        let d = DiskNodes::of(0);
        let image = DiskSpec::Image(PathBuf::from("/var/lib/drover/d.qcow2"));
        assert_eq!(image.root(), DiskRoot::Format);
        let device = image.argv(&d).last().cloned().unwrap_or_default();
        assert!(device.contains("drive=drover-disk0,"), "{device}");
        assert_eq!(d.root_named("drover-disk0"), Some(DiskRoot::Format));
        assert_eq!(d.root_named("drover-disk0-cor"), Some(DiskRoot::CopyOnRead));
        assert_eq!(d.root_node(DiskRoot::CopyOnRead), "drover-disk0-cor");
        for other in ["drover-disk0-file", "drover-disk0-remote", "#block123", ""] {
            assert_eq!(d.root_named(other), None, "{other}");
        }
        assert_eq!(
            d.qdev_path(),
            "/machine/peripheral/drover-disk0-dev/virtio-backend"
        );
    }

    fn blockdevs(args: &[String]) -> Vec<serde_json::Value> {
        args.windows(2)
            .filter(|w| w[0] == "-blockdev")
            .map(|w| serde_json::from_str(&w[1]).expect("json"))
            .collect()
    }

    #[test]
    fn an_overlay_reads_the_sources_export_through_copy_on_read() {
        let addr = NbdAddr::new("198.18.0.1:10811".parse().expect("addr")).expect("nbd");
        let settings = PostcopySettings {
            reconnect_delay_s: 7,
            ..PostcopySettings::default()
        };
        let spec = DiskSpec::Overlay {
            overlay: PathBuf::from("/var/lib/drover/disks/db.qcow2"),
            source: NbdBacking::new(addr, &settings).expect("backing"),
        };
        assert_eq!(spec.root(), DiskRoot::CopyOnRead);
        let args = spec.argv(&DiskNodes::of(0));
        let b = blockdevs(&args);
        let names: Vec<&str> = b.iter().filter_map(|n| n["node-name"].as_str()).collect();
        // Every node exists before the one that names it.
        assert_eq!(
            names,
            [
                "drover-disk0-remote",
                "drover-disk0-file",
                "drover-disk0",
                "drover-disk0-cor"
            ]
        );
        assert_eq!(b[0]["driver"], "nbd");
        assert_eq!(b[0]["server"]["host"], "198.18.0.1");
        assert_eq!(b[0]["server"]["port"], "10811");
        assert_eq!(b[0]["export"], "drover-disk0");
        assert_eq!(b[0]["read-only"], true);
        assert_eq!(b[0]["reconnect-delay"], 7);
        assert_eq!(b[1]["filename"], "/var/lib/drover/disks/db.qcow2");
        assert_eq!(b[2]["backing"], "drover-disk0-remote");
        assert_eq!(b[3]["driver"], "copy-on-read");
        assert_eq!(b[3]["file"], "drover-disk0");
        assert_eq!(
            args.last().map(String::as_str),
            Some(
                "virtio-blk-pci,drive=drover-disk0-cor,rerror=stop,werror=stop,id=drover-disk0-dev"
            )
        );
        let bad = PostcopySettings {
            reconnect_delay_s: 0,
            ..PostcopySettings::default()
        };
        let err = NbdBacking::new(addr, &bad).expect_err("no reconnect");
        assert!(err.to_string().contains("reconnect_delay_s"), "{err}");
    }

    #[test]
    fn nbd_addresses_are_checked() {
        let ok: SocketAddr = "198.18.0.2:10809".parse().expect("addr");
        assert!(NbdAddr::new(ok).is_ok());
        for bad in ["198.18.0.2:0", "0.0.0.0:10809", "224.0.0.1:10809"] {
            let addr: SocketAddr = bad.parse().expect("addr");
            let err = NbdAddr::new(addr).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn image_paths_are_checked() {
        assert!(check_image_path(Path::new("/var/lib/drover/vm-1/disk0.qcow2")).is_ok());
        for bad in ["disk.qcow2", "/x/json:{}", "/x/a,b.qcow2", "/x/a b", "/"] {
            let err = check_image_path(Path::new(bad)).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[tokio::test]
    async fn bad_sizes_and_existing_files_are_refused_before_qemu_img() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.qcow2");
        assert!(matches!(
            create_qcow2(&path, 1000).await,
            Err(DiskError::BadSize { .. })
        ));
        assert!(matches!(
            create_qcow2(&path, 0).await,
            Err(DiskError::BadSize { .. })
        ));
        std::fs::write(&path, b"x").expect("write");
        assert!(matches!(
            create_qcow2(&path, 1 << 20).await,
            Err(DiskError::Exists { .. })
        ));
    }
}
