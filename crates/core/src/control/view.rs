//! One look's index of the observation, with outside input made sane once, here, so that no
//! decision ever sees a NaN, a negative load or a name twice.
//!
//! What is made sane, and how:
//! - **Duplicate host names**: the first host in inventory order is used; later ones with the
//!   same name are ignored (their VMs are not seen at all). Two hosts cannot share a name in the
//!   manager's inventory, so a duplicate is a fleet bug, and the first is the one every lookup by
//!   name would find anyway.
//! - **Capacity** (`cpus`) that is not a positive finite number, or zero memory: the host is
//!   *unusable*: its load reads 0, it is never hot, never a destination, never consolidated;
//!   its VMs stay where they are unless an operator drains it.
//! - **Demand** (host or VM) that is NaN, infinite or negative reads 0 for a VM; for a host, the
//!   sum of its running VMs' demands replaces it.
//! - **A dirty rate** that is NaN, infinite or negative counts as not measured.
//! - **A VM running on two hosts** (or twice on one): it is located nowhere this look, so no plan
//!   moves it and no premise about it holds, until the agents agree again.
//! - **Memory sums** saturate instead of overflowing.
//! - **Duplicate migration ids**: the first report is used.

use super::observe::{HostObs, MigrationObs, Observation, PowerState, VmObs, VmPresence};
use std::collections::{HashMap, HashSet};
use std::ops::Range;

/// A number from outside made sane: finite and at least 0, else 0.
pub(crate) fn clean(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

/// One host as this look sees it.
#[derive(Debug)]
pub(crate) struct HostView<'a> {
    pub obs: &'a HostObs,
    /// Capacity, cores (0 when the reported one is unusable).
    pub cpus: f64,
    /// Demand, cores, made sane.
    pub demand: f64,
    /// Demand over capacity (0 when unusable).
    pub load: f64,
    /// Memory capacity, bytes.
    pub mem_cap: u64,
    /// Memory of the VMs listed here (running or incoming), bytes.
    pub mem_alloc: u64,
    /// Its VMs, as indices into [`View::vms`].
    pub vms: Range<usize>,
}

impl HostView<'_> {
    pub fn name(&self) -> &str {
        &self.obs.name
    }

    /// Capacity is known: it may be measured, filled and emptied.
    pub fn usable(&self) -> bool {
        self.cpus > 0.0 && self.mem_cap > 0
    }

    /// Reachable and active: runs VMs and answers.
    pub fn running(&self) -> bool {
        self.obs.reachable && self.obs.power == PowerState::Active
    }
}

/// One VM as this look sees it.
#[derive(Debug)]
pub(crate) struct VmView<'a> {
    pub obs: &'a VmObs,
    /// Index of its host in [`View::hosts`].
    pub host: usize,
    /// CPU demand, cores, made sane.
    pub demand: f64,
}

impl VmView<'_> {
    pub fn name(&self) -> &str {
        &self.obs.name
    }

    /// The measured dirty rate, bytes/s, if it is a sane number.
    pub fn dirty_rate(&self) -> Option<f64> {
        self.obs
            .dirty_rate_bps
            .filter(|d| d.is_finite() && *d >= 0.0)
    }
}

/// The observation, indexed.
#[derive(Debug)]
pub(crate) struct View<'a> {
    pub hosts: Vec<HostView<'a>>,
    pub vms: Vec<VmView<'a>>,
    by_name: HashMap<&'a str, usize>,
    /// Where each VM runs: `Some(vm index)`, or `None` when it runs in more than one place.
    running: HashMap<&'a str, Option<usize>>,
    /// Every name listed on any host (running, incoming or lost).
    listed: HashSet<&'a str>,
    migrations: HashMap<&'a str, &'a MigrationObs>,
}

impl<'a> View<'a> {
    /// Indexes `obs`: O(hosts + VMs + migrations).
    pub fn new(obs: &'a Observation) -> View<'a> {
        let mut v = View {
            hosts: Vec::with_capacity(obs.hosts.len()),
            vms: Vec::new(),
            by_name: HashMap::with_capacity(obs.hosts.len()),
            running: HashMap::new(),
            listed: HashSet::new(),
            migrations: HashMap::with_capacity(obs.migrations.len()),
        };
        for h in &obs.hosts {
            if v.by_name.contains_key(h.name.as_str()) {
                continue;
            }
            v.add_host(h);
        }
        for m in &obs.migrations {
            v.migrations.entry(m.id.as_str()).or_insert(m);
        }
        v
    }

    fn add_host(&mut self, h: &'a HostObs) {
        let index = self.hosts.len();
        self.by_name.insert(h.name.as_str(), index);
        let start = self.vms.len();
        let mut mem_alloc = 0u64;
        let mut vm_demand = 0.0;
        for vm in &h.vms {
            let demand = clean(vm.cpu_demand_cores);
            if vm.presence != VmPresence::Lost {
                mem_alloc = mem_alloc.saturating_add(vm.memory_bytes);
                self.listed.insert(vm.name.as_str());
            }
            if vm.presence == VmPresence::Running {
                vm_demand += demand;
                let at = self.vms.len();
                self.running
                    .entry(vm.name.as_str())
                    .and_modify(|slot| *slot = None)
                    .or_insert(Some(at));
            }
            self.vms.push(VmView {
                obs: vm,
                host: index,
                demand,
            });
        }
        let cpus = clean(h.cpus);
        let demand = if h.cpu_demand_cores.is_finite() && h.cpu_demand_cores >= 0.0 {
            h.cpu_demand_cores
        } else {
            vm_demand
        };
        let load = if cpus > 0.0 && h.memory_bytes > 0 {
            demand / cpus
        } else {
            0.0
        };
        self.hosts.push(HostView {
            obs: h,
            cpus: if h.memory_bytes > 0 { cpus } else { 0.0 },
            demand,
            load,
            mem_cap: h.memory_bytes,
            mem_alloc,
            vms: start..self.vms.len(),
        });
    }

    /// The index of the host named `name`.
    pub fn host_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The VM named `name` if it runs in exactly one place (its index in [`View::vms`]).
    pub fn locate(&self, name: &str) -> Option<usize> {
        self.running.get(name).copied().flatten()
    }

    /// True when `name` runs on more than one host (or twice on one).
    pub fn ambiguous(&self, name: &str) -> bool {
        matches!(self.running.get(name), Some(None))
    }

    /// True when some host lists `name` (running or incoming).
    pub fn listed_anywhere(&self, name: &str) -> bool {
        self.listed.contains(name)
    }

    /// `name`'s presence on host `h`, if listed there (lost copies ignored).
    pub fn presence_on(&self, h: usize, name: &str) -> Option<VmPresence> {
        self.hosts[h].vms.clone().find_map(|i| {
            let vm = self.vms[i].obs;
            (vm.name == name && vm.presence != VmPresence::Lost).then_some(vm.presence)
        })
    }

    /// The running VMs of host `h` (indices into [`View::vms`]), each located uniquely here.
    pub fn running_on(&self, h: usize) -> impl Iterator<Item = usize> + '_ {
        self.hosts[h]
            .vms
            .clone()
            .filter(move |&i| self.locate(self.vms[i].name()) == Some(i))
    }

    /// True when host `h` lists no VM at all (lost copies aside).
    pub fn empty(&self, h: usize) -> bool {
        self.hosts[h]
            .vms
            .clone()
            .all(|i| self.vms[i].obs.presence == VmPresence::Lost)
    }

    /// The source agent's report of migration `id`.
    pub fn migration(&self, id: &str) -> Option<&'a MigrationObs> {
        self.migrations.get(id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, demand: f64) -> VmObs {
        VmObs {
            name: name.into(),
            presence: VmPresence::Running,
            vcpus: 1,
            memory_bytes: 1 << 30,
            cpu_demand_cores: demand,
            dirty_rate_bps: Some(f64::NAN),
            wss_bytes: None,
            net_rx_bps: 0.0,
            net_tx_bps: 0.0,
            migration: None,
        }
    }

    fn host(name: &str, cpus: f64, demand: f64, vms: Vec<VmObs>) -> HostObs {
        HostObs {
            name: name.into(),
            reachable: true,
            power: PowerState::Active,
            cpus,
            memory_bytes: 8 << 30,
            cpu_demand_cores: demand,
            vms,
        }
    }

    #[test]
    fn outside_nonsense_is_made_sane() {
        let obs = Observation {
            hosts: vec![
                host("h1", 4.0, f64::NAN, vec![vm("a", 1.0), vm("b", -3.0)]),
                host("h1", 4.0, 1.0, vec![vm("c", 1.0)]),
                host("h2", 0.0, 5.0, vec![vm("a", f64::INFINITY)]),
                host("h3", f64::NAN, -1.0, vec![]),
            ],
            migrations: vec![],
        };
        let v = View::new(&obs);
        assert_eq!(v.hosts.len(), 3, "the second h1 is ignored");
        assert_eq!(v.hosts[0].demand, 1.0, "NaN host demand: its VMs' sum");
        assert_eq!(v.hosts[0].load, 0.25);
        assert_eq!(v.vms[1].demand, 0.0);
        assert!(!v.hosts[1].usable() && v.hosts[1].load == 0.0);
        assert!(!v.hosts[2].usable());
        assert_eq!(v.hosts[2].demand, 0.0, "negative host demand: its VMs' sum");
        assert!(v.ambiguous("a") && v.locate("a").is_none());
        assert_eq!(v.locate("b"), Some(1));
        assert!(
            v.locate("c").is_none(),
            "the duplicate host's VMs are not seen"
        );
        assert_eq!(v.vms[0].dirty_rate(), None);
    }
}
