//! What a live simulation is built from ([`LiveSpec`]), checked once, and how its VMs are
//! sized and first placed.
//!
//! Modelling choices, and why:
//! - **VM size** (vCPUs, memory) comes from the VM type, assigned in blocks of equal count in
//!   the order of [`LiveSpec::vm_types`], as the benchmark simulator (and CloudSim) does, so a
//!   PlanetLab day gets the same mix of VMs in both simulators. The default types are the
//!   benchmark's four (one vCPU each, 613 to 1,740 MiB).
//! - **Dirty rate and working set** are drawn per VM from a seeded distribution, the ranges of
//!   the benchmark simulator's dirty-rate model ([`crate::MigrationModel::dirty_rate`]): the
//!   dirty rate at full CPU log-uniform in 2-200 MB/s, the working set a uniform 5-50% share of
//!   memory. A VM dirties memory in proportion to its CPU use, so its measured rate is the rate
//!   at full CPU times its utilization. PlanetLab traces hold CPU only, so there is nothing to
//!   read these from.
//! - **First placement**: PlanetLab and CSV traces carry no placement, so VMs are packed by a
//!   first fit in inventory order (memory, and CPU demand at time 0 up to a share of the host's
//!   cores), unless the caller gives one ([`Placement::Given`]).

use super::LiveError;
use crate::limits;
use crate::model::MigrationModel;
use crate::trace::Workload;
use drover_core::control::HostPower;
use drover_core::dc::rng::SplitMix64;
use drover_core::dc::VmType;
use drover_core::migration::CostParams;

/// A group of identical hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSpec {
    /// Hosts in the group.
    pub count: usize,
    /// CPU capacity, cores.
    pub cpus: f64,
    /// Memory capacity, bytes.
    pub memory_bytes: u64,
    /// Idle and peak draw, W (linear in load between them; nothing in standby).
    pub power: HostPower,
}

/// Where VMs start.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// First fit in inventory order: the first host with the memory whose CPU demand at time
    /// 0, with the VM's, stays at or under `max_load` (a share of its cores).
    FirstFit { max_load: f64 },
    /// Host index (in inventory order) of each VM, in the workload's VM order (a trace's own
    /// placement).
    Given(Vec<usize>),
}

/// Everything a live simulation is built from, besides the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSpec {
    /// Host groups, in inventory order; hosts are named `h0`, `h1`, ... (zero-padded).
    pub hosts: Vec<HostSpec>,
    /// VM types, assigned in blocks (see the module doc).
    pub vm_types: Vec<VmType>,
    /// Dirty rate at full CPU, bytes/s, drawn per VM log-uniformly from this range.
    pub dirty_bps_range: (f64, f64),
    /// Working set as a share of memory, drawn per VM uniformly from this range.
    pub wss_share_range: (f64, f64),
    /// Bandwidth between any two hosts for a migration, bytes/s (a migration's knobs may cap
    /// it lower).
    pub link_bps: f64,
    /// The cost model's tunables; each migration's knobs set its downtime limit, pre-copy
    /// deadline and hybrid switch point, as the manager's technique choice does.
    pub cost: CostParams,
    /// Time from a wake request until the host is active, s (stands for its boot).
    pub wake_delay_s: f64,
    /// Seconds between the workload's samples (300 for PlanetLab days).
    pub interval_s: f64,
    pub placement: Placement,
    /// How long an ended migration is still listed in [`super::LiveSim::observe`], s (it is
    /// found by id with [`super::LiveSim::migration`] forever, like an agent's records).
    pub keep_ended_s: f64,
    /// Seeds the dirty rates and working sets.
    pub seed: u64,
}

impl LiveSpec {
    /// The defaults around `hosts`: the benchmark's VM types and dirty-rate ranges, a 1 Gbit/s
    /// link (125 MB/s), a 60 s wake (a server resuming from suspend takes seconds, a cold boot
    /// minutes), 300 s samples, first fit up to 75% (the manager's default `target`), ended
    /// migrations listed for 10 minutes (longer than the manager ever waits between looks).
    pub fn new(hosts: Vec<HostSpec>) -> LiveSpec {
        let (dirty_bps_range, wss_share_range) = match MigrationModel::dirty_rate(None) {
            MigrationModel::DirtyRate {
                dirty_bps_range,
                wss_share_range,
                ..
            } => (dirty_bps_range, wss_share_range),
            MigrationModel::Benchmark => ((2e6, 200e6), (0.05, 0.5)),
        };
        LiveSpec {
            hosts,
            vm_types: VmType::benchmark_types(),
            dirty_bps_range,
            wss_share_range,
            link_bps: 125e6,
            cost: CostParams::default(),
            wake_delay_s: 60.0,
            interval_s: 300.0,
            placement: Placement::FirstFit { max_load: 0.75 },
            keep_ended_s: 600.0,
            seed: 1,
        }
    }

    /// Checks every number before anything is built.
    ///
    /// # Errors
    /// [`LiveError::Spec`] naming the first field out of range; [`LiveError::Limit`] for too
    /// many hosts.
    pub fn validate(&self) -> Result<(), LiveError> {
        let total = self
            .hosts
            .iter()
            .try_fold(0usize, |n, g| n.checked_add(g.count))
            .unwrap_or(usize::MAX);
        limits::check("hosts", total, &limits::HOSTS)?;
        for (i, g) in self.hosts.iter().enumerate() {
            check(
                &format!("hosts[{i}].cpus"),
                g.cpus,
                g.cpus > 0.0,
                "a positive number of cores",
            )?;
            if g.memory_bytes == 0 {
                return Err(spec(format!("hosts[{i}].memory_bytes"), 0.0, "above 0"));
            }
            let p = g.power;
            check(
                &format!("hosts[{i}].power.idle_w"),
                p.idle_w,
                p.idle_w >= 0.0,
                "at least 0 W",
            )?;
            check(
                &format!("hosts[{i}].power.peak_w"),
                p.peak_w,
                p.peak_w >= p.idle_w,
                "at least idle_w",
            )?;
        }
        if self.vm_types.is_empty() {
            return Err(spec("vm_types".into(), 0.0, "at least one VM type"));
        }
        for (i, t) in self.vm_types.iter().enumerate() {
            if t.pes == 0 || t.ram_mb == 0 {
                return Err(spec(
                    format!("vm_types[{i}]"),
                    t.pes as f64,
                    "at least one vCPU and some memory",
                ));
            }
        }
        let (lo, hi) = self.dirty_bps_range;
        check("dirty_bps_range.0", lo, lo > 0.0, "above 0")?;
        check("dirty_bps_range.1", hi, hi >= lo, "at least the low end")?;
        let (lo, hi) = self.wss_share_range;
        check("wss_share_range.0", lo, (0.0..=1.0).contains(&lo), "0..=1")?;
        check(
            "wss_share_range.1",
            hi,
            (lo..=1.0).contains(&hi),
            "the low end..=1",
        )?;
        check("link_bps", self.link_bps, self.link_bps > 0.0, "above 0")?;
        check(
            "wake_delay_s",
            self.wake_delay_s,
            self.wake_delay_s >= 0.0,
            "at least 0",
        )?;
        check(
            "interval_s",
            self.interval_s,
            self.interval_s > 0.0,
            "above 0",
        )?;
        check(
            "keep_ended_s",
            self.keep_ended_s,
            self.keep_ended_s >= 0.0,
            "at least 0",
        )?;
        if let Placement::FirstFit { max_load } = self.placement {
            check("placement.max_load", max_load, max_load > 0.0, "above 0")?;
        }
        Ok(())
    }
}

fn spec(field: String, value: f64, expected: &'static str) -> LiveError {
    LiveError::Spec {
        field,
        value: value.to_string(),
        expected,
    }
}

fn check(field: &str, v: f64, ok: bool, expected: &'static str) -> Result<(), LiveError> {
    if ok && v.is_finite() {
        Ok(())
    } else {
        Err(spec(field.to_string(), v, expected))
    }
}

/// A host as built.
pub(super) struct BuiltHost {
    pub name: String,
    pub cpus: f64,
    pub memory_bytes: u64,
    pub power: HostPower,
}

/// A VM as built.
pub(super) struct BuiltVm {
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// Dirty rate at full CPU, bytes/s.
    pub dirty_full_bps: f64,
    pub wss_bytes: u64,
    pub host: usize,
}

/// The hosts of `spec`, named in inventory order.
pub(super) fn hosts(spec: &LiveSpec) -> Vec<BuiltHost> {
    let total: usize = spec.hosts.iter().map(|g| g.count).sum();
    let width = total.saturating_sub(1).to_string().len();
    let mut out = Vec::with_capacity(total);
    for g in &spec.hosts {
        for _ in 0..g.count {
            out.push(BuiltHost {
                name: format!("h{:0width$}", out.len()),
                cpus: g.cpus,
                memory_bytes: g.memory_bytes,
                power: g.power,
            });
        }
    }
    out
}

/// The VMs of `work`, sized, drawn and placed.
///
/// # Errors
/// [`LiveError::NoRoom`] when first fit finds no host for a VM; [`LiveError::Placement`] when a
/// given placement does not match the workload or the hosts.
pub(super) fn vms(
    spec: &LiveSpec,
    work: &Workload,
    hosts: &[BuiltHost],
) -> Result<Vec<BuiltVm>, LiveError> {
    let n = work.vms();
    let per = n.div_ceil(spec.vm_types.len()).max(1);
    let mut rng = SplitMix64::new(spec.seed ^ 0x11FE_D1F7);
    let (dlo, dhi) = spec.dirty_bps_range;
    let (wlo, whi) = spec.wss_share_range;
    let mut out: Vec<BuiltVm> = (0..n)
        .map(|v| {
            // Blocks of equal count, as `DatacenterModel::vm_kind` (CloudSim) assigns types.
            let t = &spec.vm_types[(v / per).min(spec.vm_types.len() - 1)];
            let memory_bytes = u64::from(t.ram_mb) * 1024 * 1024;
            let dirty_full_bps = dlo * (dhi / dlo).powf(rng.next_f64());
            let share = wlo + (whi - wlo) * rng.next_f64();
            BuiltVm {
                vcpus: t.pes,
                memory_bytes,
                dirty_full_bps,
                wss_bytes: (share * memory_bytes as f64) as u64,
                host: 0,
            }
        })
        .collect();
    match &spec.placement {
        Placement::Given(at) => given(at, &mut out, hosts)?,
        Placement::FirstFit { max_load } => first_fit(*max_load, work, &mut out, hosts)?,
    }
    Ok(out)
}

fn given(at: &[usize], vms: &mut [BuiltVm], hosts: &[BuiltHost]) -> Result<(), LiveError> {
    if at.len() != vms.len() {
        return Err(LiveError::Placement(format!(
            "{} host indices for {} VMs",
            at.len(),
            vms.len()
        )));
    }
    let mut used = vec![0u64; hosts.len()];
    for (v, (&h, vm)) in at.iter().zip(vms.iter_mut()).enumerate() {
        let Some(host) = hosts.get(h) else {
            return Err(LiveError::Placement(format!(
                "VM {v} is placed on host {h}, past the last ({})",
                hosts.len().saturating_sub(1)
            )));
        };
        used[h] = used[h].saturating_add(vm.memory_bytes);
        if used[h] > host.memory_bytes {
            return Err(LiveError::Placement(format!(
                "the VMs placed on {} need more memory than it has",
                host.name
            )));
        }
        vm.host = h;
    }
    Ok(())
}

fn first_fit(
    max_load: f64,
    work: &Workload,
    vms: &mut [BuiltVm],
    hosts: &[BuiltHost],
) -> Result<(), LiveError> {
    let mut mem = vec![0u64; hosts.len()];
    let mut cpu = vec![0.0f64; hosts.len()];
    // Hosts before `first_open` are full by memory for the smallest VM seen so far: skipping
    // them keeps packing linear in practice at datacenter sizes.
    let smallest = vms.iter().map(|v| v.memory_bytes).min().unwrap_or(0);
    let mut first_open = 0;
    for (v, vm) in vms.iter_mut().enumerate() {
        let demand = work.at(v, 0) * f64::from(vm.vcpus);
        let fits = |h: usize| {
            mem[h] + vm.memory_bytes <= hosts[h].memory_bytes
                && cpu[h] + demand <= max_load * hosts[h].cpus + 1e-9
        };
        let Some(h) = (first_open..hosts.len()).find(|&h| fits(h)) else {
            return Err(LiveError::NoRoom {
                vm: work.names[v].clone(),
                memory_bytes: vm.memory_bytes,
                demand_cores: demand,
                max_load,
            });
        };
        mem[h] += vm.memory_bytes;
        cpu[h] += demand;
        vm.host = h;
        while first_open < hosts.len()
            && mem[first_open] + smallest > hosts[first_open].memory_bytes
        {
            first_open += 1;
        }
    }
    Ok(())
}
