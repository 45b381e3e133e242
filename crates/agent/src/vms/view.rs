//! The registry's read side: a VM's view (its record, QEMU's run state, its workload's
//! reports turned into rates), lookups by name, and the list the metrics sampler walks.

use super::{LiveVm, VmEntry, Vms, VmsError};
use crate::lock;
use crate::model::{VmRecord, VmRole};
use drover_api::workload::same_workload;
use drover_api::{VmView, WallSample, WorkloadPartView, WorkloadView};
use drover_qemu::metrics::Samples;
use drover_qemu::qmp::{QmpClient, QmpExt};
use std::sync::Arc;

/// A part of a workload of several as the API shows it (figures that are not finite, which
/// JSON cannot carry, read as 0).
fn part_view(p: drover_qemu::metrics::GuestPartReport) -> WorkloadPartView {
    let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
    WorkloadPartView {
        workload: p.workload,
        ops: p.ops,
        ops_per_s: finite(p.ops_per_s),
        integrity_errors: p.integrity_errors,
        demand_pct: finite(p.demand_pct),
        demanded_ops: p.demanded_ops,
        full_ops_per_s: finite(p.full_ops_per_s),
    }
}

impl Vms {
    pub(super) fn view_of(&self, e: &VmEntry, qemu_status: Option<String>) -> VmView {
        let samples = e.samples.snapshot();
        let now = self.clock.now_ms();
        let status = e.samples.status();
        let workload_report = match samples.last() {
            None => WorkloadView::default(),
            Some(last) => {
                // Rate over the last ~2 s of reports (one report may be late).
                let from = samples
                    .iter()
                    .rev()
                    .find(|s| last.host_ms.saturating_sub(s.host_ms) >= 2000)
                    .or(samples.first());
                let ops_per_s = from
                    .filter(|f| last.host_ms > f.host_ms)
                    .map(|f| {
                        (last.ops.saturating_sub(f.ops)) as f64 * 1000.0
                            / (last.host_ms - f.host_ms) as f64
                    })
                    .unwrap_or(0.0);
                let status = status.clone().unwrap_or_default();
                WorkloadView {
                    ops: last.ops,
                    ops_per_s,
                    integrity_errors: drover_core::migration::result::integrity_errors(&samples),
                    last_report_age_ms: Some(now.saturating_sub(last.host_ms)),
                    spec: status.spec,
                    demand_pct: status.demand_pct,
                    demanded_ops: status.demanded_ops,
                    full_ops_per_s: status.full_ops_per_s,
                    control_seq: status.seq,
                    refused: status.refused,
                    parts: status.parts.into_iter().map(part_view).collect(),
                }
            }
        };
        let workload_pending = status
            .and_then(|s| s.spec)
            .is_some_and(|running| !same_workload(&running, &e.record.config.workload));
        let c = &e.record.config;
        VmView {
            name: c.name.clone(),
            status: e.status(),
            vcpus: c.vcpus,
            memory_bytes: c.memory_bytes,
            workload: c.workload.clone(),
            workload_pending,
            disk: c.disk.clone(),
            nic: c.nic.clone(),
            pid: e.record.pid,
            qemu_status,
            migration: e.migration.clone().or(e
                .record
                .role
                .incoming_migration()
                .map(str::to_string)),
            workload_report,
            error: e.lost.clone(),
        }
    }

    /// One VM, with QEMU's run state asked live.
    pub async fn get(&self, name: &str) -> Result<VmView, VmsError> {
        let qmp = self.qmp_of(name).ok();
        let status = match qmp {
            Some(q) => q.query_status().await.ok().map(|s| s.status),
            None => None,
        };
        let map = lock(&self.map);
        let e = map
            .get(name)
            .ok_or_else(|| VmsError::NotFound(name.to_string()))?;
        Ok(self.view_of(e, status))
    }

    pub fn list(&self) -> Vec<VmView> {
        let map = lock(&self.map);
        let mut out: Vec<VmView> = map.values().map(|e| self.view_of(e, None)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn record(&self, name: &str) -> Result<VmRecord, VmsError> {
        lock(&self.map)
            .get(name)
            .map(|e| e.record.clone())
            .ok_or_else(|| VmsError::NotFound(name.to_string()))
    }

    /// The VM's QMP session (not for lost VMs).
    pub fn qmp_of(&self, name: &str) -> Result<Arc<QmpClient>, VmsError> {
        let map = lock(&self.map);
        let e = map
            .get(name)
            .ok_or_else(|| VmsError::NotFound(name.to_string()))?;
        e.qmp
            .clone()
            .ok_or_else(|| VmsError::Lost(name.to_string()))
    }

    /// The VM's workload reports, stamped with wall-clock time.
    pub fn wall_samples(&self, name: &str) -> Result<Vec<WallSample>, VmsError> {
        let map = lock(&self.map);
        let e = map
            .get(name)
            .ok_or_else(|| VmsError::NotFound(name.to_string()))?;
        Ok(e.samples
            .demand_snapshot()
            .iter()
            .map(|s| WallSample {
                unix_ms: self.to_unix_ms(s.sample.host_ms),
                ops: s.sample.ops,
                integrity_errors: s.sample.integrity_errors,
                demanded_ops: s.demanded_ops,
            })
            .collect())
    }

    pub fn samples_of(&self, name: &str) -> Result<Samples, VmsError> {
        let map = lock(&self.map);
        map.get(name)
            .map(|e| e.samples.clone())
            .ok_or_else(|| VmsError::NotFound(name.to_string()))
    }

    /// Every VM whose QEMU is attached, for the metrics sampler.
    pub fn live(&self) -> Vec<LiveVm> {
        lock(&self.map)
            .values()
            .filter_map(|e| {
                let c = &e.record.config;
                Some(LiveVm {
                    name: c.name.clone(),
                    pid: e.record.pid,
                    vcpus: c.vcpus,
                    memory_bytes: c.memory_bytes,
                    tap: c.nic.as_ref().and_then(|n| n.tap()),
                    has_disk: c.disk.is_some(),
                    qmp: e.qmp.clone()?,
                    migrating: e.migration.is_some(),
                    incoming: matches!(e.record.role, VmRole::Incoming { .. }),
                    guest_away: e.guest_away,
                })
            })
            .collect()
    }
}
