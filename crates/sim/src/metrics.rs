//! What a run measures, with the benchmark's definitions:
//! - **energy**: each host's power integrated over time, trapezoid between successive updates; a
//!   host whose previous utilization was zero was off and draws nothing (NPA: full power always).
//! - **SLATAH**: share of active host time during which a host was allocated less CPU than its
//!   VMs requested (it was at 100%, or a VM asked for more than a core). A host receiving a
//!   migration counts the incoming VM's full demand but gives it only the reservation, so every
//!   migration also makes its destination "violate" until it completes, as in CloudSim.
//! - **PDM**: CPU requested but not allocated to VMs while they migrate, over all CPU requested.
//! - **SLAV** = SLATAH x PDM; **ESV** = energy x SLAV.
//!
//! Accumulation is streaming: each host and VM keeps its latest state entry; when an entry with a
//! later time arrives, the interval since is charged to the previous entry (an entry at the same
//! time replaces it, as CloudSim's state history does).

use serde::Serialize;

/// Running totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub energy_j: f64,
    pub active_s: f64,
    pub violation_s: f64,
    pub requested_mips_s: f64,
    pub migration_shortfall_mips_s: f64,
    pub migrations: u64,
    pub overload_moves: u64,
    pub underload_moves: u64,
    /// Pre-copy attempts cancelled at the deadline (dirty-rate model only).
    pub failed_migrations: u64,
    pub migrated_bytes: f64,
    /// Per technique: (migrations, failed, shortfall MIPS*s).
    pub by_technique: std::collections::BTreeMap<String, (u64, u64, f64)>,
    pub decisions: u64,
}

/// A host's latest state entry.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostEntry {
    pub t: Option<f64>,
    pub alloc: f64,
    pub req: f64,
    pub active: bool,
}

impl HostEntry {
    pub fn record(&mut self, t: f64, alloc: f64, req: f64, active: bool, tot: &mut Totals) {
        if let Some(prev) = self.t {
            if t > prev && self.active {
                let dt = t - prev;
                tot.active_s += dt;
                if self.alloc < self.req {
                    tot.violation_s += dt;
                }
            }
        }
        *self = HostEntry {
            t: Some(t),
            alloc,
            req,
            active,
        };
    }
}

/// A VM's latest state entry.
#[derive(Debug, Clone, Copy, Default)]
pub struct VmEntry {
    pub t: Option<f64>,
    pub alloc: f64,
    pub req: f64,
    pub migrating: bool,
}

impl VmEntry {
    /// Returns the shortfall charged to migration for the closed interval.
    pub fn record(
        &mut self,
        t: f64,
        alloc: f64,
        req: f64,
        migrating: bool,
        tot: &mut Totals,
    ) -> f64 {
        let mut shortfall = 0.0;
        if let Some(prev) = self.t {
            if t > prev {
                let dt = t - prev;
                tot.requested_mips_s += self.req * dt;
                if self.migrating && self.alloc < self.req {
                    shortfall = (self.req - self.alloc) * dt;
                    tot.migration_shortfall_mips_s += shortfall;
                }
            }
        }
        *self = VmEntry {
            t: Some(t),
            alloc,
            req,
            migrating,
        };
        shortfall
    }
}

/// One run's results; also the JSON row of `drover sim --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub policy: String,
    pub day: String,
    pub hosts: usize,
    pub vms: usize,
    pub energy_kwh: f64,
    pub migrations: u64,
    pub slatah_pct: f64,
    pub pdm_pct: f64,
    pub slav_pct: f64,
    pub esv: f64,
    pub wall_ms: f64,
    pub overload_migrations: u64,
    pub underload_migrations: u64,
    pub failed_migrations: u64,
    pub migrated_gb: f64,
    /// VMs that found no host at admission: they are left out of the whole run, so energy,
    /// migrations and the SLA metrics cover only the others.
    pub vms_rejected: usize,
    /// Which VMs those were (indices into the workload's VMs, ascending); not in the JSON row,
    /// where the names could run to megabytes. Rows of one day are comparable only when these
    /// are the same (see [`crate::compare::mixed_admission_days`]).
    #[serde(skip)]
    pub rejected_vms: Vec<usize>,
    /// Mean number of hosts on at decision instants.
    pub mean_active_hosts: f64,
    pub migration_model: String,
    /// Per technique: migrations, failed attempts, PDM share caused (percent of all CPU requested).
    pub techniques: Vec<TechniqueRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TechniqueRow {
    pub technique: String,
    pub migrations: u64,
    pub failed: u64,
    pub pdm_pct: f64,
}

impl Totals {
    pub fn slatah(&self) -> f64 {
        if self.active_s > 0.0 {
            self.violation_s / self.active_s
        } else {
            0.0
        }
    }

    pub fn pdm(&self) -> f64 {
        if self.requested_mips_s > 0.0 {
            self.migration_shortfall_mips_s / self.requested_mips_s
        } else {
            0.0
        }
    }

    pub fn energy_kwh(&self) -> f64 {
        self.energy_j / 3.6e6
    }

    pub fn technique_rows(&self) -> Vec<TechniqueRow> {
        self.by_technique
            .iter()
            .map(|(t, &(n, failed, short))| TechniqueRow {
                technique: t.clone(),
                migrations: n,
                failed,
                pdm_pct: if self.requested_mips_s > 0.0 {
                    100.0 * short / self.requested_mips_s
                } else {
                    0.0
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_entries_charge_the_previous_state_and_same_time_replaces() {
        let mut t = Totals::default();
        let mut e = HostEntry::default();
        e.record(0.0, 100.0, 100.0, true, &mut t);
        e.record(10.0, 90.0, 100.0, true, &mut t); // [0,10] fine
        e.record(10.0, 50.0, 100.0, true, &mut t); // replaces, nothing charged
        e.record(30.0, 0.0, 0.0, false, &mut t); // [10,30] violated
        e.record(50.0, 10.0, 10.0, true, &mut t); // [30,50] inactive: not counted
        assert_eq!(t.active_s, 30.0);
        assert_eq!(t.violation_s, 20.0);
        assert!((t.slatah() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn vm_entries_charge_shortfall_only_while_migrating() {
        let mut t = Totals::default();
        let mut e = VmEntry::default();
        e.record(0.0, 90.0, 100.0, true, &mut t);
        e.record(10.0, 80.0, 100.0, false, &mut t); // [0,10] migrating: 10 * 10
        e.record(20.0, 100.0, 100.0, false, &mut t); // [10,20] short but not migrating
        assert_eq!(t.requested_mips_s, 2000.0);
        assert_eq!(t.migration_shortfall_mips_s, 100.0);
        assert_eq!(t.pdm(), 0.05);
    }
}
