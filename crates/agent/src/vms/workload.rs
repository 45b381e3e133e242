//! Changing a running VM's workload in place: the change is checked against the VM (the
//! guest's switching rule and the fit rule, `drover_api::workload::check_change`), recorded in
//! the VM's configuration (so a re-attached agent and a migration's destination know it), then
//! delivered to the guest as a control line by the VM's metrics reader, which writes it again
//! until a report acknowledges it (`drover_qemu::guest_control`).
//!
//! The record says what the VM should run; the guest's reports say what it runs. The sampler
//! calls [`Vms::reconcile_workloads`] to deliver a recorded spec the guest does not run and no
//! reader is delivering (after an agent restart, or on a migration's destination when a change
//! was still on its way), once per agent lifetime and spec: a guest that refused it keeps
//! saying why in its reports (`refused`).

use super::{Vms, VmsError};
use crate::lock;
use crate::model::VmRole;
use drover_api::workload::{check_change, same_workload};
use drover_api::VmView;

impl Vms {
    /// Changes VM `name`'s workload to `spec` (shape-checked by the request parser).
    ///
    /// # Errors
    /// Not found; lost, incoming, migrating or a guest that takes no changes
    /// ([`VmsError::Busy`]); a change the running workload cannot take
    /// ([`VmsError::Workload`]); the record not saved.
    pub fn change_workload(&self, name: &str, spec: &str) -> Result<VmView, VmsError> {
        let mut map = lock(&self.map);
        // A migrating VM's configuration already went to the destination: no change then.
        let e = super::guard::unclaimed(&mut map, name)?;
        if e.samples.status().is_some_and(|s| s.spec.is_none()) {
            // It reports without naming its workload: a guest image from before the control
            // protocol, which would never apply the change.
            return Err(VmsError::Busy {
                name: name.to_string(),
                why: "its guest does not take workload changes (an image from before the \
                      control protocol)"
                    .into(),
            });
        }
        check_change(&e.record.config, spec)?;
        self.check_peer(spec)?;
        drover_guest::control::format_line(0, spec)
            .map_err(|u| VmsError::Unsendable(u.to_string()))?;
        let reader = e
            .reader
            .as_ref()
            .ok_or_else(|| VmsError::Lost(name.to_string()))?;
        let mut record = e.record.clone();
        record.config.workload = spec.to_string();
        // Recorded first: what is delivered is always what a restart would deliver again.
        self.store.save_vm(&record)?;
        e.record = record;
        reader
            .request(spec)
            .map_err(|u| VmsError::Unsendable(u.to_string()))?;
        tracing::info!(vm = %name, workload = %spec, "workload change sent");
        Ok(self.view_of(e, None))
    }

    /// Delivers each running VM's recorded workload to a guest that reports running another
    /// one, unless its reader is delivering that spec already or delivered it (called by the
    /// sampler).
    pub fn reconcile_workloads(&self) {
        let map = lock(&self.map);
        for e in map.values() {
            let (Some(reader), None, VmRole::Running) = (&e.reader, &e.migration, &e.record.role)
            else {
                continue;
            };
            if e.lost.is_some() {
                continue;
            }
            let wanted = &e.record.config.workload;
            let Some(running) = e.samples.status().and_then(|s| s.spec) else {
                continue; // no report yet, or a guest that does not take control lines
            };
            if same_workload(&running, wanted) || reader.delivery().spec() == Some(wanted) {
                continue;
            }
            match reader.request(wanted) {
                Ok(()) => tracing::info!(
                    vm = %e.record.config.name, running = %running, workload = %wanted,
                    "delivering the recorded workload"
                ),
                Err(err) => {
                    tracing::warn!(vm = %e.record.config.name, error = %err, "recorded workload not deliverable")
                }
            }
        }
    }
}
