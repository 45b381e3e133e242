//! A simulated cluster that the manager's control loop drives in virtual time, without QEMU:
//! the model behind the manager's simulator-backed fleet. It speaks core's control types only
//! ([`Observation`] in, [`Action`] and [`Outcome`]), so the manager crate wraps it without this
//! crate knowing the manager.
//!
//! ```text
//!  LiveSim::new(spec, workload)      hosts from the spec, VMs sized, drawn and first placed
//!  loop {
//!      advance(t)                    the model's time moves: demand follows the trace (and
//!                                    surges), migrations switch over and end, hosts wake,
//!                                    energy and SLA figures accumulate
//!      observe(t) -> Observation     what agents would report: hosts, VMs, migrations by id
//!      control::step(...)            the manager's decision (not here)
//!      apply(&action, t) -> Outcome  what an agent would answer: accepted, refused and why
//!  }
//!  measures()                        energy, SLATAH, PDM, migrations, hosts active over time
//! ```
//!
//! Module map: [`build`] (the spec, VM sizes, first placement), `demand` (utilization over
//! time, surges), `flight` (one migration's timeline from core's cost model), `ops` (what an
//! action does, and every refusal), [`account`] (the measures). Modelling choices are in each
//! module's doc; the main ones: demand is linear between trace samples; a VM's demand counts on
//! the host it runs on (the source until a post-copy switchover or a pre-copy's end); a
//! migration's duration, pause and bytes are the cost model's prediction when it starts, each
//! migration getting the whole link; waking hosts draw their idle power.
//!
//! Deterministic: the same spec, workload and calls give the same results (the seed draws the
//! dirty rates; everything else iterates in inventory or id order).

pub mod account;
pub mod build;
mod demand;
mod flight;
mod ops;

#[cfg(test)]
mod tests;

pub use account::{Ending, Measures, Tally};
pub use build::{HostSpec, LiveSpec, Placement};
pub use demand::Surge;
pub use ops::Refused;

use crate::limits::{self, LimitError};
use crate::trace::Workload;
use account::Stretch;
use demand::Demand;
use drover_core::control::{
    Action, ControlSettings, HostObs, HostPower, MigrationObs, Observation, Outcome, PowerState,
    VmObs, VmPresence,
};
use drover_core::migration::CostParams;
use flight::Flight;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use thiserror::Error;

/// A live simulation that cannot be built, or a surge that cannot be added.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum LiveError {
    #[error("live simulation: {field} = {value}: expected {expected}")]
    Spec {
        field: String,
        value: String,
        expected: &'static str,
    },
    #[error("live simulation: {0}")]
    Limit(LimitError),
    #[error("live simulation: no host has room for VM {vm} ({memory_bytes} bytes, {demand_cores:.2} cores at time 0; the first fit fills a host to at most {max_load} of its cores): add hosts or place fewer VMs")]
    NoRoom {
        vm: String,
        memory_bytes: u64,
        demand_cores: f64,
        /// The first fit's ceiling, a share of a host's cores.
        max_load: f64,
    },
    #[error("live simulation: placement: {0}")]
    Placement(String),
    #[error("live simulation: workload: {0}")]
    Workload(String),
    #[error("live simulation: surge: {0}")]
    Surge(String),
}

// Not `#[from]`: that would also make the cause a `source()`, printed twice in a chain.
impl From<LimitError> for LiveError {
    fn from(e: LimitError) -> Self {
        LiveError::Limit(e)
    }
}

struct Host {
    name: String,
    cpus: f64,
    memory_bytes: u64,
    power: HostPower,
    state: PowerState,
    /// When a waking host becomes active, s.
    wake_at_s: Option<f64>,
    /// VMs running here, in arrival order.
    vms: Vec<usize>,
    /// Memory of the VMs running here, bytes.
    resident_bytes: u64,
    /// Memory held for migrations: incoming VMs before their switchover, departed VMs whose
    /// migration has not ended, bytes.
    held_bytes: u64,
}

struct Vm {
    name: String,
    vcpus: u32,
    memory_bytes: u64,
    /// Dirty rate at full CPU, bytes/s.
    dirty_full_bps: f64,
    wss_bytes: u64,
    /// The host it runs on.
    host: usize,
    /// The migration it is in.
    flight: Option<String>,
}

/// The simulated cluster (see the module doc).
pub struct LiveSim {
    hosts: Vec<Host>,
    vms: Vec<Vm>,
    host_index: HashMap<String, usize>,
    vm_index: HashMap<String, usize>,
    demand: Demand,
    /// Every migration ever started, by id (ended ones too: an agent keeps its records).
    flights: BTreeMap<String, Flight>,
    running: BTreeSet<String>,
    /// Ended migrations still listed in observations: (end s, id), oldest first.
    recently_ended: VecDeque<(f64, String)>,
    link_bps: f64,
    cost: CostParams,
    wake_delay_s: f64,
    keep_ended_s: f64,
    now_s: f64,
    /// Per VM: utilization now (0..=1).
    util: Vec<f64>,
    /// Per host: demand now, cores.
    host_demand: Vec<f64>,
    scratch_util: Vec<f64>,
    scratch_demand: Vec<f64>,
    measures: Measures,
}

impl LiveSim {
    /// Builds the cluster at time 0: every host active, the VMs placed as the spec says.
    ///
    /// # Errors
    /// [`LiveError`] naming what is wrong with the spec or the workload, or the VM first fit
    /// found no room for.
    pub fn new(spec: LiveSpec, work: Workload) -> Result<LiveSim, LiveError> {
        spec.validate()?;
        limits::check("VMs", work.vms(), &limits::VMS)?;
        if work.samples == 0 {
            return Err(LiveError::Workload(format!(
                "'{}' has no samples",
                work.day
            )));
        }
        let built_hosts = build::hosts(&spec);
        let built_vms = build::vms(&spec, &work, &built_hosts)?;
        let mut hosts: Vec<Host> = built_hosts
            .into_iter()
            .map(|h| Host {
                name: h.name,
                cpus: h.cpus,
                memory_bytes: h.memory_bytes,
                power: h.power,
                state: PowerState::Active,
                wake_at_s: None,
                vms: Vec::new(),
                resident_bytes: 0,
                held_bytes: 0,
            })
            .collect();
        let mut vm_index = HashMap::with_capacity(work.vms());
        let mut vms = Vec::with_capacity(work.vms());
        for (v, b) in built_vms.into_iter().enumerate() {
            let name = work.names[v].clone();
            if vm_index.insert(name.clone(), v).is_some() {
                return Err(LiveError::Workload(format!(
                    "VM name '{name}' appears twice"
                )));
            }
            hosts[b.host].vms.push(v);
            hosts[b.host].resident_bytes += b.memory_bytes;
            vms.push(Vm {
                name,
                vcpus: b.vcpus,
                memory_bytes: b.memory_bytes,
                dirty_full_bps: b.dirty_full_bps,
                wss_bytes: b.wss_bytes,
                host: b.host,
                flight: None,
            });
        }
        let host_index = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.clone(), i))
            .collect();
        let (nv, nh) = (vms.len(), hosts.len());
        let mut sim = LiveSim {
            hosts,
            vms,
            host_index,
            vm_index,
            demand: Demand::new(work, spec.interval_s),
            flights: BTreeMap::new(),
            running: BTreeSet::new(),
            recently_ended: VecDeque::new(),
            link_bps: spec.link_bps,
            cost: spec.cost,
            wake_delay_s: spec.wake_delay_s,
            keep_ended_s: spec.keep_ended_s,
            now_s: 0.0,
            util: vec![0.0; nv],
            host_demand: vec![0.0; nh],
            scratch_util: vec![0.0; nv],
            scratch_demand: vec![0.0; nh],
            measures: Measures::default(),
        };
        sim.refresh();
        sim.measures.active_now(0.0, nh);
        Ok(sim)
    }

    /// The model's time, s.
    pub fn now_s(&self) -> f64 {
        self.now_s
    }

    /// What has been measured so far.
    pub fn measures(&self) -> &Measures {
        &self.measures
    }

    /// The workload the VMs follow.
    pub fn workload(&self) -> &Workload {
        self.demand.work()
    }

    /// Host names, in inventory order.
    pub fn host_names(&self) -> impl Iterator<Item = &str> {
        self.hosts.iter().map(|h| h.name.as_str())
    }

    /// The host VM `vm` runs on.
    pub fn host_of(&self, vm: &str) -> Option<&str> {
        let v = *self.vm_index.get(vm)?;
        Some(self.hosts[self.vms[v].host].name.as_str())
    }

    /// The VMs running on `host`, in arrival order.
    pub fn vms_on(&self, host: &str) -> Vec<&str> {
        self.host_index.get(host).map_or_else(Vec::new, |&h| {
            self.hosts[h]
                .vms
                .iter()
                .map(|&v| self.vms[v].name.as_str())
                .collect()
        })
    }

    /// `host`'s power state.
    pub fn power_state(&self, host: &str) -> Option<PowerState> {
        self.host_index.get(host).map(|&h| self.hosts[h].state)
    }

    /// The source agent's report of migration `id`, ended or not.
    pub fn migration(&self, id: &str) -> Option<MigrationObs> {
        self.flights.get(id).map(Flight::report)
    }

    /// `base` with the model's power per host and link bandwidth, so that the manager's energy
    /// account and technique choice see the same hardware the model runs.
    pub fn control_settings(&self, base: ControlSettings) -> ControlSettings {
        let mut s = base;
        s.link_bps = Some(self.link_bps.round() as u64);
        let first = self.hosts.first().map(|h| h.power);
        if let Some(p) = first.filter(|p| self.hosts.iter().all(|h| h.power == *p)) {
            s.default_power = p;
            s.power.clear();
        } else {
            s.power = self
                .hosts
                .iter()
                .map(|h| (h.name.clone(), h.power))
                .collect();
        }
        s
    }

    /// Holds some VMs at a utilization for a while (a sudden overload).
    ///
    /// # Errors
    /// [`LiveError::Surge`] for an unknown VM, a level outside 0..=1, or times that are not an
    /// interval.
    pub fn add_surge(&mut self, surge: &Surge) -> Result<(), LiveError> {
        if !(surge.level.is_finite() && (0.0..=1.0).contains(&surge.level)) {
            return Err(LiveError::Surge(format!(
                "level {} is not a share of vCPUs (0..=1)",
                surge.level
            )));
        }
        if !(surge.start_s.is_finite() && surge.end_s.is_finite() && surge.start_s < surge.end_s) {
            return Err(LiveError::Surge(format!(
                "from {} s to {} s is not an interval",
                surge.start_s, surge.end_s
            )));
        }
        let vms = surge
            .vms
            .iter()
            .map(|n| {
                self.vm_index
                    .get(n)
                    .copied()
                    .ok_or_else(|| LiveError::Surge(format!("no VM {n}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.demand
            .add(vms, surge.level, surge.start_s, surge.end_s);
        if self.demand.surges_due(self.now_s) {
            self.refresh();
        }
        Ok(())
    }

    /// Moves the model's time to `to_s` (a time not after the model's changes nothing):
    /// demand follows the workload, migrations switch over and end, waking hosts become active,
    /// and the measures accumulate.
    pub fn advance(&mut self, to_s: f64) {
        if !to_s.is_finite() {
            return;
        }
        while self.now_s < to_s {
            let next = self.next_event().map_or(to_s, |t| t.min(to_s));
            self.integrate(next);
            self.now_s = next;
            self.events_due();
        }
    }

    /// What the agents would report at `now_s`, s (the model first advances to it; an earlier
    /// time reports the model's current state).
    pub fn observe(&mut self, now_s: f64) -> Observation {
        self.advance(now_s);
        while let Some((t, _)) = self.recently_ended.front() {
            if self.now_s - t <= self.keep_ended_s {
                break;
            }
            self.recently_ended.pop_front();
        }
        let mut incoming: Vec<Vec<&Flight>> = vec![Vec::new(); self.hosts.len()];
        for f in self.running.iter().filter_map(|id| self.flights.get(id)) {
            if !f.switched {
                incoming[f.to].push(f);
            }
        }
        let hosts = self
            .hosts
            .iter()
            .zip(incoming)
            .enumerate()
            .map(|(h, (host, arriving))| self.host_obs(h, host, &arriving))
            .collect();
        let migrations = self
            .running
            .iter()
            .chain(self.recently_ended.iter().map(|(_, id)| id))
            .filter_map(|id| self.flights.get(id))
            .map(Flight::report)
            .collect();
        Observation { hosts, migrations }
    }

    fn host_obs(&self, h: usize, host: &Host, arriving: &[&Flight]) -> HostObs {
        let mut vms = Vec::with_capacity(host.vms.len() + arriving.len());
        for &v in &host.vms {
            let vm = &self.vms[v];
            let u = self.util[v];
            vms.push(VmObs {
                name: vm.name.clone(),
                presence: VmPresence::Running,
                vcpus: vm.vcpus,
                memory_bytes: vm.memory_bytes,
                cpu_demand_cores: u * f64::from(vm.vcpus),
                dirty_rate_bps: Some(vm.dirty_full_bps * u),
                wss_bytes: Some(vm.wss_bytes),
                net_rx_bps: 0.0,
                net_tx_bps: 0.0,
                migration: vm.flight.clone(),
            });
        }
        for f in arriving {
            let vm = &self.vms[f.vm];
            vms.push(VmObs {
                name: vm.name.clone(),
                presence: VmPresence::Incoming,
                vcpus: vm.vcpus,
                memory_bytes: vm.memory_bytes,
                cpu_demand_cores: 0.0,
                dirty_rate_bps: None,
                wss_bytes: None,
                net_rx_bps: 0.0,
                net_tx_bps: 0.0,
                migration: Some(f.id.clone()),
            });
        }
        HostObs {
            name: host.name.clone(),
            reachable: true,
            power: host.state,
            cpus: host.cpus,
            memory_bytes: host.memory_bytes,
            cpu_demand_cores: self.host_demand[h],
            vms,
        }
    }

    /// Carries out `action` at `now_s`, s, as an agent would (the model first advances to it;
    /// an earlier time acts at the model's current time).
    pub fn apply(&mut self, action: &Action, now_s: f64) -> Outcome {
        self.advance(now_s);
        ops::apply(self, action)
    }

    /// The first event strictly after now: a demand change, a switchover or end, a wake.
    fn next_event(&self) -> Option<f64> {
        let now = self.now_s;
        let flights = self
            .running
            .iter()
            .filter_map(|id| self.flights.get(id)?.next_event());
        let wakes = self.hosts.iter().filter_map(|h| h.wake_at_s);
        self.demand
            .next_change(now)
            .into_iter()
            .chain(flights)
            .chain(wakes)
            .filter(|&t| t > now)
            .min_by(f64::total_cmp)
    }

    /// Accounts the stretch from now to `to`, in which nothing but the trace's lines changes.
    fn integrate(&mut self, to: f64) {
        let dt = to - self.now_s;
        if dt <= 0.0 {
            return;
        }
        for v in 0..self.vms.len() {
            self.scratch_util[v] = self.demand.util(v, to);
        }
        self.sum_demand_into_scratch();
        let m = &mut self.measures;
        m.elapsed_s += dt;
        for (h, host) in self.hosts.iter().enumerate() {
            match host.state {
                PowerState::Standby => {}
                PowerState::Waking => m.energy_wh += host.power.idle_w * dt / 3600.0,
                PowerState::Active => {
                    let s = Stretch {
                        dt,
                        d0: self.host_demand[h],
                        d1: self.scratch_demand[h],
                        cpus: host.cpus,
                    };
                    m.active_host_s += dt;
                    m.overloaded_host_s += s.overloaded_s();
                    m.energy_wh += s.energy_wh(&host.power);
                    m.requested_core_s += s.requested_core_s();
                }
            }
        }
        std::mem::swap(&mut self.util, &mut self.scratch_util);
        std::mem::swap(&mut self.host_demand, &mut self.scratch_demand);
    }

    fn sum_demand_into_scratch(&mut self) {
        self.scratch_demand.iter_mut().for_each(|d| *d = 0.0);
        for (v, vm) in self.vms.iter().enumerate() {
            self.scratch_demand[vm.host] += self.scratch_util[v] * f64::from(vm.vcpus);
        }
    }

    /// Recomputes utilization and host demand now (after surges or VMs moved).
    fn refresh(&mut self) {
        for v in 0..self.vms.len() {
            self.scratch_util[v] = self.demand.util(v, self.now_s);
        }
        self.sum_demand_into_scratch();
        std::mem::swap(&mut self.util, &mut self.scratch_util);
        std::mem::swap(&mut self.host_demand, &mut self.scratch_demand);
    }

    /// Everything due now: surges, switchovers and ends (in time, then id order), wakes.
    fn events_due(&mut self) {
        let now = self.now_s;
        let mut changed = self.demand.surges_due(now);
        loop {
            let due = self
                .running
                .iter()
                .filter_map(|id| {
                    let f = self.flights.get(id)?;
                    f.next_event()
                        .filter(|&t| t <= now)
                        .map(|t| (t, id.clone()))
                })
                .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            let Some((_, id)) = due else { break };
            self.flight_event(&id);
            changed = true;
        }
        let mut woke = false;
        for host in &mut self.hosts {
            if host.wake_at_s.is_some_and(|t| t <= now) {
                host.wake_at_s = None;
                host.state = PowerState::Active;
                woke = true;
            }
        }
        if woke {
            self.note_active_hosts();
        }
        if changed {
            self.refresh();
        }
    }

    /// A running migration's next event (its switchover or its end) has come.
    fn flight_event(&mut self, id: &str) {
        let Some(f) = self.flights.get(id) else {
            return;
        };
        if f.switch_s.is_some() && !f.switched {
            self.switch_over(id);
        } else {
            let how = if f.succeeds {
                Ending::Completed
            } else {
                Ending::Failed
            };
            self.finish(id, how);
        }
    }

    /// The VM starts running on the destination; its memory is still held on the source.
    fn switch_over(&mut self, id: &str) {
        let Some(f) = self.flights.get_mut(id) else {
            return;
        };
        f.switched = true;
        let (v, from, to) = (f.vm, f.from, f.to);
        let mem = self.vms[v].memory_bytes;
        self.relocate(v, from, to);
        self.hosts[to].held_bytes = self.hosts[to].held_bytes.saturating_sub(mem);
        self.hosts[from].held_bytes += mem;
    }

    /// Moves VM `v`'s residence from `from` to `to`.
    fn relocate(&mut self, v: usize, from: usize, to: usize) {
        let mem = self.vms[v].memory_bytes;
        self.hosts[from].vms.retain(|&x| x != v);
        self.hosts[from].resident_bytes = self.hosts[from].resident_bytes.saturating_sub(mem);
        self.hosts[to].vms.push(v);
        self.hosts[to].resident_bytes += mem;
        self.vms[v].host = to;
    }

    /// Ends migration `id` now, as `how`: the VM is where it ends up, memory held for it is
    /// released, and the measures count it.
    fn finish(&mut self, id: &str, how: Ending) {
        let now = self.now_s;
        let Some(f) = self.flights.get_mut(id) else {
            return;
        };
        f.ended = Some((how, now));
        if how == Ending::Failed {
            f.error = Some(format!(
                "pre-copy did not converge within its {:.0} s deadline; the VM stays on the source",
                f.end_s - f.start_s
            ));
        }
        let f = f.clone();
        let mem = self.vms[f.vm].memory_bytes;
        if f.switched {
            let from = &mut self.hosts[f.from];
            from.held_bytes = from.held_bytes.saturating_sub(mem);
        } else {
            let to = &mut self.hosts[f.to];
            to.held_bytes = to.held_bytes.saturating_sub(mem);
            if how == Ending::Completed {
                self.relocate(f.vm, f.from, f.to);
            }
        }
        self.vms[f.vm].flight = None;
        self.running.remove(id);
        self.recently_ended.push_back((now, id.to_string()));
        let m = &mut self.measures;
        m.count(f.technique, how);
        m.in_flight = self.running.len() as u64;
        m.migration_lost_core_s += f.lost_core_s(now, &self.cost);
        m.transferred_bytes += f.sent_bytes(now);
    }

    fn note_active_hosts(&mut self) {
        let active = self
            .hosts
            .iter()
            .filter(|h| h.state == PowerState::Active)
            .count();
        self.measures.active_now(self.now_s, active);
    }
}
