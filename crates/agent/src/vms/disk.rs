//! The disks the agent creates for its VMs, in its storage directory (`qemu::img` makes them).
//!
//! A VM configuration with `disk_size_bytes` or `disk_base` asks for a new qcow2 disk named
//! `disk` (default `<vm>.qcow2`); with a base it is a qcow2 overlay of it, not a copy (why:
//! `qemu::img`). A base must not be any VM's disk: its contents would change under the
//! overlay. The disk is made before the VM starts and removed again if it does not start.
//!
//! "The same disk" means the same file, not the same name: a hard link or a symbolic link in
//! the directory is another name for a VM's disk, and QEMU would refuse the second opener its
//! write lock. Files are compared by device and inode (symbolic links followed) against every
//! disk and base the VMs here use.
//!
//! A `disk` workload's working set must fit the VM's disk, whoever made it: its virtual size is
//! read from the image (409 otherwise: the size is the host's file's, not the request's).
//!
//! The agent owns a disk it created: removing the VM removes it (`Vms::remove`). An operator's
//! disk (`disk` alone) is never deleted, and a base never is.

use super::{Vms, VmsError};
use crate::lock;
use drover_api::VmConfig;
use drover_qemu::img::{self, ImgError, NewDisk};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a VM's disk cannot be made or used.
#[derive(Debug, Error)]
pub enum DiskError {
    /// `qemu-img`, the directory's contents or its file system.
    #[error(transparent)]
    Img(#[from] ImgError),
    /// The base is a VM's disk (409).
    #[error(
        "disk_base '{base}' is the disk of VM '{vm}'{same}: a base must not change under its \
         overlays"
    )]
    BaseInUse {
        base: String,
        vm: String,
        /// `" (the same file as 'NAME')"` when the VM uses the file by another name, else empty.
        same: String,
    },
    /// The VM's workload does not fit its disk (409).
    #[error(transparent)]
    Fit(#[from] drover_guest::fit::FitError),
    /// An operator's disk that another VM here uses, as its disk or its disk's base (409).
    #[error("disk '{disk}' is {how} VM '{vm}'{same}: two VMs must not share a disk")]
    InUse {
        disk: String,
        how: &'static str,
        vm: String,
        /// `" (the same file as 'NAME')"` when the VM uses the file by another name, else empty.
        same: String,
    },
    /// An operator's disk that is not a qcow2 image (409).
    #[error("disk '{disk}' is a {format} image, expected qcow2")]
    NotQcow2 { disk: String, format: String },
}

impl DiskError {
    /// Whether the host's state is at fault (409), rather than the agent (500).
    pub fn is_conflict(&self) -> bool {
        match self {
            DiskError::Img(e) => e.is_conflict(),
            DiskError::BaseInUse { .. }
            | DiskError::Fit(_)
            | DiskError::InUse { .. }
            | DiskError::NotQcow2 { .. } => true,
        }
    }
}

impl Vms {
    /// Creates the disk `name` for `config` (its names shape-checked, the VM's name claimed).
    pub(super) async fn create_disk(
        &self,
        config: &VmConfig,
        name: &str,
    ) -> Result<String, VmsError> {
        if let Some(base) = &config.disk_base {
            // A missing base is `img::create`'s to refuse, naming the field.
            if let Some(path) = self.resolve_disk("disk_base", base)? {
                // Overlays may share a base; a base must not be a VM's disk.
                if let Some(u) = self.user_of(&path, &config.name, &[DISK_OF]) {
                    let same = u.same(base);
                    let (base, vm) = (base.clone(), u.vm);
                    return Err(DiskError::BaseInUse { base, vm, same }.into());
                }
            }
        }
        let new = NewDisk {
            name,
            size_bytes: config.disk_size_bytes,
            base: config.disk_base.as_deref(),
        };
        img::create(&self.qemu_img(), &self.store.disk_dir(), &new)
            .await
            .map_err(DiskError::from)?;
        Ok(name.to_string())
    }

    /// Checks an operator's disk `name` (not one the agent creates) before QEMU opens it: it is
    /// a file inside the storage directory, no other VM here uses that file (by any name) as
    /// its disk or as its disk's base, and it is a qcow2 image.
    pub(super) async fn check_operator_disk(&self, vm: &str, name: &str) -> Result<(), VmsError> {
        let uses = [DISK_OF, BASE_OF];
        // By name first: a VM here uses that name even when its file is missing.
        let by_name = self
            .uses_except(vm, &uses)
            .into_iter()
            .find(|u| u.name == name);
        if let Some(u) = by_name {
            return Err(u.refusal(name));
        }
        let path = self.disk_path(name)?;
        if let Some(u) = self.user_of(&path, vm, &uses) {
            return Err(u.refusal(name));
        }
        let info = img::info(&self.qemu_img(), &path, name)
            .await
            .map_err(DiskError::from)?;
        if info.format != "qcow2" {
            let (disk, format) = (name.to_string(), info.format);
            return Err(DiskError::NotQcow2 { disk, format }.into());
        }
        Ok(())
    }

    /// The first VM other than `except` that uses the file at `path` in one of the ways
    /// `uses` lists ([`DISK_OF`], [`BASE_OF`]), compared by device and inode, whatever names
    /// lead to it.
    fn user_of(&self, path: &Path, except: &str, uses: &[&str]) -> Option<DiskUse> {
        let wanted = file_id(path)?;
        // Names under the lock, files outside it: a stat may block.
        let dir = self.store.disk_dir();
        self.uses_except(except, uses)
            .into_iter()
            .find(|u| file_id(&dir.join(&u.name)) == Some(wanted))
    }

    /// Every use, of the kinds `uses` lists, that VMs other than `except` make of files of the
    /// storage directory, by the names they use.
    fn uses_except(&self, except: &str, uses: &[&str]) -> Vec<DiskUse> {
        lock(&self.map)
            .values()
            .map(|e| &e.record.config)
            .filter(|c| c.name != except)
            .flat_map(|c| {
                let disk = c.disk_file().map(|d| (DISK_OF, d));
                let base = c.disk_base.clone().map(|b| (BASE_OF, b));
                [disk, base]
                    .into_iter()
                    .flatten()
                    .map(|(how, name)| DiskUse {
                        vm: c.name.clone(),
                        how,
                        name,
                    })
            })
            .filter(|u| uses.contains(&u.how))
            .collect()
    }

    /// `config` if its workload fits its disk: the working set of a workload with a disk part
    /// (`disk:`, or `memtouch+disk`'s) within the disk's virtual size (read from the image,
    /// whoever made it).
    pub(super) async fn check_disk_fit(&self, config: VmConfig) -> Result<VmConfig, VmsError> {
        let spec = drover_guest::spec::parse_workload(&config.workload);
        if !spec.is_ok_and(|w| w.disk_part().is_some()) {
            return Ok(config);
        }
        let size = match &config.disk {
            Some(name) => {
                let path = self.disk_path(name)?;
                let info = img::info(&self.qemu_img(), &path, name)
                    .await
                    .map_err(DiskError::from)?;
                Some(info.virtual_size)
            }
            None => None,
        };
        drover_api::vm::check_disk_workload(&config, size).map_err(DiskError::from)?;
        Ok(config)
    }

    /// The virtual size of disk `name` in the storage directory, bytes (what a storage
    /// pre-copy's target must have).
    ///
    /// # Errors
    /// [`VmsError::NoDisk`] when it is not there; `qemu-img` failing.
    pub async fn disk_virtual_size(&self, name: &str) -> Result<u64, VmsError> {
        let path = self.disk_path(name)?;
        let info = img::info(&self.qemu_img(), &path, name)
            .await
            .map_err(DiskError::from)?;
        Ok(info.virtual_size)
    }

    fn qemu_img(&self) -> PathBuf {
        img::qemu_img_for(&self.settings.qemu_binary)
    }
}

/// How a VM uses a file of the storage directory.
const DISK_OF: &str = "the disk of";
const BASE_OF: &str = "the base of the disk of";

/// A VM's use of a file, by the name it uses.
struct DiskUse {
    vm: String,
    /// [`DISK_OF`] or [`BASE_OF`].
    how: &'static str,
    name: String,
}

impl DiskUse {
    /// The 409 for a request that asked for this file as `disk`.
    fn refusal(self, disk: &str) -> VmsError {
        let same = self.same(disk);
        DiskError::InUse {
            disk: disk.to_string(),
            how: self.how,
            vm: self.vm,
            same,
        }
        .into()
    }

    /// What a refusal adds when the request named the file otherwise than the VM does.
    fn same(&self, asked: &str) -> String {
        if self.name == asked {
            String::new()
        } else {
            format!(" (the same file as '{}')", self.name)
        }
    }
}

/// A file's identity, symbolic links followed: (device, inode); `None` if it cannot be read.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Removes a disk the agent created (a missing file is fine: the end is the same).
pub fn remove(dir: &Path, name: &str) {
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => tracing::info!(disk = %name, "removed the VM's disk"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(disk = %name, error = %e, "could not remove the VM's disk"),
    }
}
