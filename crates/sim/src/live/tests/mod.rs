//! The live simulation's tests: migrations against the cost model, refusals and idempotence
//! (`migrate`), standby, wake and the energy and SLA accounts (`power`), and the manager's
//! control step driving it over a short synthetic day (`drive`).

mod drive;
mod migrate;
mod power;

use super::{HostSpec, LiveSim, LiveSpec, Placement};
use crate::trace::Workload;
use drover_core::control::{HostPower, Observation, VmPresence};
use drover_core::dc::VmType;

pub const GIB: u64 = 1 << 30;

pub const POWER: HostPower = HostPower {
    idle_w: 100.0,
    peak_w: 200.0,
};

/// `n` hosts of `cpus` cores and `mem_gib` GiB.
pub fn hosts(n: usize, cpus: f64, mem_gib: u64) -> HostSpec {
    HostSpec {
        count: n,
        cpus,
        memory_bytes: mem_gib * GIB,
        power: POWER,
    }
}

/// One VM type of `vcpus` and `mem_mib`, a fixed dirty rate at full CPU and a working set of a
/// quarter of memory, VMs placed on the hosts `at`.
pub fn spec(hosts: Vec<HostSpec>, vcpus: u32, mem_mib: u32, at: Vec<usize>) -> LiveSpec {
    LiveSpec {
        vm_types: vec![VmType {
            name: "t".into(),
            mips: 1000.0,
            pes: vcpus,
            ram_mb: mem_mib,
            bw_mbps: 100.0,
        }],
        dirty_bps_range: (40e6, 40e6),
        wss_share_range: (0.25, 0.25),
        placement: Placement::Given(at),
        ..LiveSpec::new(hosts)
    }
}

/// VMs `vm0`, `vm1`, ... each following its row of utilizations (shares of its vCPUs).
pub fn work(rows: &[&[f32]]) -> Workload {
    let samples = rows.first().map_or(0, |r| r.len());
    let names = (0..rows.len()).map(|v| format!("vm{v}")).collect();
    let util = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Workload::new("scripted".into(), names, samples, util)
}

pub fn sim(spec: LiveSpec, work: Workload) -> LiveSim {
    LiveSim::new(spec, work).expect("a valid live simulation")
}

/// Every VM of `names` runs on exactly one host of `obs`, and every host's demand is its
/// running VMs' sum.
pub fn each_vm_once(obs: &Observation, names: &[String]) {
    for n in names {
        let running = obs
            .hosts
            .iter()
            .flat_map(|h| h.vms.iter())
            .filter(|v| &v.name == n && v.presence == VmPresence::Running)
            .count();
        assert_eq!(running, 1, "{n} runs on {running} hosts");
    }
    for h in &obs.hosts {
        let sum: f64 = h
            .vms
            .iter()
            .filter(|v| v.presence == VmPresence::Running)
            .map(|v| v.cpu_demand_cores)
            .sum();
        assert!((sum - h.cpu_demand_cores).abs() < 1e-9, "{}", h.name);
    }
}
