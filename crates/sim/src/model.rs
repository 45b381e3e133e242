//! The modelled datacenter: hosts, VM types, timing, and how migrations behave.

use crate::judge::Judge;
use crate::observe::ObserveModel;
use crate::trace::Workload;
use drover_core::dc::{HostType, VmType};
use drover_core::migration::Technique;

/// How migrations behave in the simulation.
#[derive(Debug, Clone, PartialEq)]
pub enum MigrationModel {
    /// The PlanetLab benchmark's: a migration takes the VM's memory over half the destination's
    /// bandwidth and costs the VM 10% of its CPU meanwhile, whatever the technique.
    Benchmark,
    /// Dirty-rate aware: every VM gets a dirty rate and a working set, and the migration's
    /// duration, success and the VM's lost work come from `judge` for the technique the policy
    /// chose (or `technique` when set, to force one for every policy), fed the VM's true dirty
    /// rate and working set. Policies see them through `observe` (the agent's noisy, lagging
    /// measurements). Pre-copy may not converge: then the attempt is cancelled and the VM
    /// stays put.
    DirtyRate {
        judge: Judge,
        observe: ObserveModel,
        technique: Option<Technique>,
        /// Dirty rate at 100% CPU, bytes/s, drawn per VM log-uniformly from this range.
        dirty_bps_range: (f64, f64),
        /// Working set as a share of memory, drawn per VM uniformly from this range.
        wss_share_range: (f64, f64),
    },
}

impl MigrationModel {
    /// The dirty-rate model with the calibrated judge and the agent's error model
    /// ([`ObserveModel::AGENT`]); `technique` forces one for every policy.
    pub fn dirty_rate(technique: Option<Technique>) -> MigrationModel {
        MigrationModel::DirtyRate {
            judge: Judge::calibrated(),
            observe: ObserveModel::AGENT,
            technique,
            dirty_bps_range: (2e6, 200e6),
            wss_share_range: (0.05, 0.5),
        }
    }
}

/// Hosts in the PlanetLab benchmark's datacenter.
pub const PLANETLAB_HOSTS: usize = 800;

/// The datacenter a workload runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct DatacenterModel {
    /// Host `i` is of type `host_types[i % len]`.
    pub host_types: Vec<HostType>,
    pub hosts: usize,
    /// VM `i` of `n` is of type `vm_types[i / ceil(n / len)]` (blocks, as in CloudSim).
    pub vm_types: Vec<VmType>,
    /// Seconds between samples and between decisions.
    pub interval_s: f64,
    /// Decisions happen this long after each sample, seconds. CloudSim's first event comes 0.1 s
    /// after time 0, so every decision sees the workload 0.1 s past a sample (interpolated).
    pub sample_offset_s: f64,
    /// A VM whose demand is exactly zero leaves the datacenter for good, as CloudSim 3.0.3 treats
    /// such a VM as finished (its cloudlet scheduler asks for no MIPS). The reference results
    /// depend on it; about half the PlanetLab VMs leave during a day.
    pub idle_vms_leave: bool,
    /// Whether migrations must respect host memory (CloudSim checks memory only at admission).
    pub enforce_memory: bool,
    /// Share of a migrating VM's CPU the destination reserves meanwhile (CloudSim: 10%).
    pub target_reservation: f64,
    pub migration: MigrationModel,
}

impl DatacenterModel {
    /// The PlanetLab benchmark: `hosts` hosts alternating HP ML110 G4 and G5, the four EC2-like
    /// VM types, 300 s interval, CloudSim 3.0.3's semantics.
    pub fn planetlab(hosts: usize) -> DatacenterModel {
        DatacenterModel {
            host_types: vec![HostType::hp_ml110_g4(), HostType::hp_ml110_g5()],
            hosts,
            vm_types: VmType::benchmark_types(),
            interval_s: 300.0,
            sample_offset_s: 0.1,
            idle_vms_leave: true,
            enforce_memory: false,
            target_reservation: 0.1,
            migration: MigrationModel::Benchmark,
        }
    }

    /// Hosts to simulate `work` on when the user does not say: the PlanetLab benchmark's
    /// [`PLANETLAB_HOSTS`] for traces, 4 per 5 VMs for synthetic days (the benchmark's 800
    /// hosts for 900-1,500 VMs a day, kept at any size).
    pub fn default_hosts(work: &Workload) -> usize {
        if work.is_synthetic() {
            (work.vms() * 4 / 5).max(1)
        } else {
            PLANETLAB_HOSTS
        }
    }

    pub fn host_kind(&self, h: usize) -> usize {
        h % self.host_types.len().max(1)
    }

    pub fn vm_kind(&self, v: usize, n: usize) -> usize {
        let per = n.div_ceil(self.vm_types.len().max(1)).max(1);
        (v / per).min(self.vm_types.len().saturating_sub(1))
    }
}
