//! Claiming a VM for a WAN profile (`POST /v1/vms/{name}/wan-plan`): a profile switches QEMU's
//! trace events on and samples the dirty rate for seconds, so the VM must be running here,
//! with a disk, and not migrating; while claimed, no migration or workload change starts
//! (`guard::unclaimed` refuses them) until [`Vms::end_profile`].

use super::{guard, Vms, VmsError};
use crate::lock;
use drover_qemu::launcher::RunPaths;
use drover_qemu::qmp::QmpClient;
use std::path::PathBuf;
use std::sync::Arc;

/// What a profile needs of the VM.
#[derive(Clone)]
pub struct ProfileTarget {
    pub qmp: Arc<QmpClient>,
    /// QEMU's log (`-D`), where the disk trace events land.
    pub trace_log: PathBuf,
    pub memory_bytes: u64,
}

impl Vms {
    /// Claims running VM `name` for a WAN profile. Errors: not found, lost, busy (incoming,
    /// migrating, already being profiled), no disk ([`VmsError::NoDiskToPlan`], 409: the model
    /// needs one).
    pub fn begin_profile(&self, name: &str) -> Result<ProfileTarget, VmsError> {
        let mut map = lock(&self.map);
        let e = guard::unclaimed(&mut map, name)?;
        if e.record.config.disk.is_none() {
            return Err(VmsError::NoDiskToPlan(name.to_string()));
        }
        let qmp = e
            .qmp
            .clone()
            .ok_or_else(|| VmsError::Lost(name.to_string()))?;
        let target = ProfileTarget {
            qmp,
            trace_log: RunPaths::in_dir(&e.record.run_dir).trace_log,
            memory_bytes: e.record.config.memory_bytes,
        };
        e.profiling = true;
        Ok(target)
    }

    /// Releases VM `name` from its profile (a no-op for a VM gone meanwhile).
    pub fn end_profile(&self, name: &str) {
        if let Some(e) = lock(&self.map).get_mut(name) {
            e.profiling = false;
        }
    }
}
