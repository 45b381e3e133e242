//! A VM on this machine: its QEMU process, QMP session and metrics reader, owned together, plus
//! migrating it to a fresh QEMU on this machine (what `migrate-bench` and the tests do).
//!
//! Dropping a [`LocalVm`] kills its QEMU; its run directory belongs to the caller.

use crate::driver::{self, DriverConfig, DriverError, Endpoints, MigrationRun};
use crate::image::GuestImage;
use crate::launcher::{Accel, LaunchError, QemuProcess, RunPaths, VmSpec};
use crate::metrics::{Clock, MetricsReader, Samples};
use crate::qmp::{QmpClient, QmpError};
use drover_core::migration::{EndStatus, MigrationPlan};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum VmError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("QMP with '{name}': {source}")]
    Qmp { name: String, source: QmpError },
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The guest's own rules refuse the memory or the workload (the message names which).
    #[error(transparent)]
    BadWorkload(#[from] drover_guest::fit::FitError),
}

/// Refuses a workload the guest would reject or could not fit, before anything boots (the
/// rule itself is the guest's: [`drover_guest::fit::check_fits`]).
pub fn validate_workload(spec: &str, memory_bytes: u64) -> Result<(), VmError> {
    drover_guest::fit::check_fits(spec, memory_bytes)?;
    Ok(())
}

/// How VMs are started on this machine.
#[derive(Debug, Clone)]
pub struct LocalLauncher {
    pub qemu_binary: String,
    pub accel: Accel,
    pub image: GuestImage,
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// Time allowed for QEMU to open its QMP socket.
    pub start_timeout: Duration,
}

impl LocalLauncher {
    pub fn spec(&self, name: &str, workload: &str, incoming: bool) -> VmSpec {
        VmSpec {
            name: name.to_string(),
            vcpus: self.vcpus,
            memory_bytes: self.memory_bytes,
            accel: self.accel,
            kernel: self.image.kernel.clone(),
            initrd: self.image.initrd.clone(),
            append: crate::image::kernel_cmdline(workload),
            incoming,
            tap: None,
            disk: None,
        }
    }

    /// Starts a VM in `dir`, its workload reports feeding `samples`.
    pub async fn launch(
        &self,
        spec: &VmSpec,
        dir: &Path,
        clock: Clock,
        samples: Samples,
    ) -> Result<LocalVm, VmError> {
        let paths = RunPaths::in_dir(dir);
        let process =
            QemuProcess::spawn(&self.qemu_binary, spec, &paths, self.start_timeout).await?;
        let qmp = QmpClient::connect(&paths.qmp, Duration::from_secs(5), Duration::from_secs(30))
            .await
            .map_err(|source| VmError::Qmp {
                name: spec.name.clone(),
                source,
            })?;
        let metrics = MetricsReader::spawn(
            paths.metrics.clone(),
            clock,
            samples,
            Duration::from_secs(5),
        );
        Ok(LocalVm {
            process,
            qmp,
            _metrics: metrics,
            dir: dir.to_path_buf(),
            held: None,
        })
    }
}

/// A running VM on this machine.
pub struct LocalVm {
    pub process: QemuProcess,
    pub qmp: QmpClient,
    _metrics: MetricsReader,
    pub dir: PathBuf,
    /// The source of a post-copy that did not complete: it still holds part of this guest's
    /// memory, so it lives (and dies) with this VM.
    pub held: Option<Box<LocalVm>>,
}

impl LocalVm {
    /// Migrates to a new QEMU started in `dest_dir`. Returns the VM wherever it ended up (the
    /// other QEMU is killed, unless a post-copy stopped part-way: then the destination holds
    /// the source, see [`LocalVm::held`]) and what the driver saw.
    pub async fn migrate_to_new(
        mut self,
        launcher: &LocalLauncher,
        dest_spec: &VmSpec,
        dest_dir: &Path,
        plan: MigrationPlan,
        clock: Clock,
        samples: Samples,
    ) -> Result<(LocalVm, MigrationRun), VmError> {
        let mut dest = launcher.launch(dest_spec, dest_dir, clock, samples).await?;
        let uri = format!("unix:{}", dest_dir.join("migrate.sock").display());
        let ends = Endpoints {
            source: &self.qmp,
            dest: &dest.qmp,
            uri,
            recover_uri: format!("unix:{}", dest_dir.join("recover.sock").display()),
        };
        let run = driver::migrate(&ends, plan, &DriverConfig::default(), &clock, None).await;
        let run = match run {
            Ok(run) => run,
            Err(e) => {
                dest.process.kill().await;
                return Err(e.into());
            }
        };
        if run.outcome.vm_on_destination && run.outcome.status != EndStatus::Completed {
            dest.held = Some(Box::new(self));
            Ok((dest, run))
        } else if run.outcome.vm_on_destination {
            self.process.kill().await;
            Ok((dest, run))
        } else {
            dest.process.kill().await;
            Ok((self, run))
        }
    }

    /// Stops the VM (and a source it still holds).
    pub async fn kill(mut self) {
        self.process.kill().await;
        if let Some(held) = self.held.take() {
            Box::pin(held.kill()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_are_checked_before_boot() {
        assert!(validate_workload("memtouch:wss=128M,rate=max", 256 << 20).is_ok());
        assert!(validate_workload("idle", 64 << 20).is_ok());
        let err = validate_workload("bogus", 256 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        let err = validate_workload("memtouch:wss=256M", 256 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not fit"), "{err}");
        let err = validate_workload("idle", 12).unwrap_err().to_string();
        assert!(err.starts_with("memory_bytes 12: expected 64 MiB"), "{err}");
    }
}
