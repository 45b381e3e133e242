//! The disks the agent creates for its VMs, in its storage directory (`qemu::img` makes them).
//!
//! A VM configuration with `disk_size_bytes` or `disk_base` asks for a new qcow2 disk named
//! `disk` (default `<vm>.qcow2`); with a base it is a qcow2 overlay of it, not a copy (why:
//! `qemu::img`). A base must not be any VM's disk: its contents would change under the
//! overlay. The disk is made before the VM starts and removed again if it does not start.
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
        "disk_base '{base}' is the disk of VM '{vm}': a base must not change under its overlays"
    )]
    BaseInUse { base: String, vm: String },
    /// The VM's workload does not fit its disk (409).
    #[error(transparent)]
    Fit(#[from] drover_guest::fit::FitError),
    /// An operator's disk that another VM here uses, as its disk or its disk's base (409).
    #[error("disk '{disk}' is {how} VM '{vm}': two VMs must not share a disk")]
    InUse {
        disk: String,
        how: &'static str,
        vm: String,
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
            let map = lock(&self.map);
            let user = map
                .values()
                .find(|e| e.record.config.disk_file().as_deref() == Some(base.as_str()));
            if let Some(e) = user {
                return Err(DiskError::BaseInUse {
                    base: base.clone(),
                    vm: e.record.config.name.clone(),
                }
                .into());
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

    /// Checks an operator's disk `name` (not one the agent creates) before QEMU opens it: no
    /// other VM here uses it as its disk or as its disk's base, and it is a qcow2 image.
    pub(super) async fn check_operator_disk(&self, vm: &str, name: &str) -> Result<(), VmsError> {
        let user = {
            let map = lock(&self.map);
            map.values().find_map(|e| {
                let c = &e.record.config;
                if c.name == vm {
                    None
                } else if c.disk_file().as_deref() == Some(name) {
                    Some(("the disk of", c.name.clone()))
                } else if c.disk_base.as_deref() == Some(name) {
                    Some(("the base of the disk of", c.name.clone()))
                } else {
                    None
                }
            })
        };
        if let Some((how, other)) = user {
            let disk = name.to_string();
            return Err(DiskError::InUse {
                disk,
                how,
                vm: other,
            }
            .into());
        }
        let path = self.disk_path(name)?;
        let info = img::info(&self.qemu_img(), &path, name)
            .await
            .map_err(DiskError::from)?;
        if info.format != "qcow2" {
            let (disk, format) = (name.to_string(), info.format);
            return Err(DiskError::NotQcow2 { disk, format }.into());
        }
        Ok(())
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

/// Removes a disk the agent created (a missing file is fine: the end is the same).
pub fn remove(dir: &Path, name: &str) {
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => tracing::info!(disk = %name, "removed the VM's disk"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(disk = %name, error = %e, "could not remove the VM's disk"),
    }
}
