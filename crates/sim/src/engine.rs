//! The simulation loop: a discrete-event replay of CloudSim's power datacenter.
//!
//! Time `k * interval + offset` is decision instant `k` (k = 1, 2, ...; the first interval is
//! spent starting up, with every host off as far as energy goes). At each instant every host is
//! updated (CPU shares, energy since the last update, state entries for the SLA metrics), VMs
//! record their utilization, VMs with zero demand leave (when the model says so), and the policy
//! plans from a [`Snapshot`]. Migrations start at once: the source keeps running the VM at
//! reduced speed, the destination reserves a share for it. Each migration's completion is an
//! event: hosts are updated just before it (energy and SLA up to that moment) and just after.
//! Between events, demands are linear between samples, like CloudSim's PlanetLab model.

use crate::error::SimError;
use crate::judge::Case;
use crate::limits;
use crate::metrics::{HostEntry, Report, Totals, VmEntry};
use crate::model::{DatacenterModel, MigrationModel};
use crate::observe::Observer;
use crate::trace::Workload;
use drover_core::dc::cluster::capped_mips;
use drover_core::dc::rng::SplitMix64;
use drover_core::dc::{
    place, HostState, Move, MoveReason, Policy, PolicySpec, Snapshot, VmState, VmType,
};
use drover_core::migration::Technique;

/// A migration under way.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    vm: usize,
    to: usize,
    end_s: f64,
    /// False when the attempt will be cancelled (pre-copy that does not converge).
    succeeds: bool,
}

/// What the update of a VM's host reads and writes of the VM at every event, in one 64-byte
/// record aligned to a cache line: a host's VMs are scattered over the array (VM numbers mix as
/// VMs migrate), so each VM a host update reads costs one cache line, not two or three as when
/// these fields were split between the per-VM arrays.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct VmRt {
    /// Demand at the last update, MIPS. The snapshot's record gets it (and the dirty rate it
    /// implies) at decision instants, when the policy reads it, and when the VM leaves its host
    /// ([`Simulation::remove_idle`]); between decision instants only this is current.
    demand: f64,
    /// Share of its CPU the VM loses while migrating.
    loss: f64,
    entry: VmEntry,
    pes: u32,
    /// Migrations of this VM under way (CloudSim may move a VM twice in one round).
    migrating: u32,
}

// One cache line a VM: a field added here must come from a less used one (see [`VmCold`]).
const _: () = assert!(std::mem::size_of::<VmRt>() == 64);

/// What is read of a VM only at decision instants, when a migration starts or when a migration
/// falls short, apart from [`VmRt`] so that the per-event pass does not carry it.
#[derive(Debug, Clone, Default)]
struct VmCold {
    /// The technique of its latest migration (shortfalls are charged to it).
    technique: Option<Technique>,
    /// Dirty rate at full CPU, bytes/s (dirty-rate model).
    at_full: f64,
    /// The true dirty rate at the last decision instant (or when the VM left its host),
    /// bytes/s, and working set, bytes: what the judge sees (policies see the observer's
    /// readings in the snapshot).
    bps: f64,
    wss_bytes: f64,
}

/// What the per-event pass over all VMs reads besides [`VmRt`] (it writes `VmRt::demand`),
/// kept apart from the VM's record in the snapshot (about 330 bytes, most of it the history) so
/// that the pass at each migration completion reads a few bytes each.
#[derive(Debug, Clone, Copy, Default)]
struct VmHot {
    /// Whether the VM has a host (the snapshot's `host.is_some()`).
    placed: bool,
    /// The VM's size, MIPS (`VmState::total_mips`).
    total_mips: f64,
}

#[derive(Debug, Clone, Default)]
struct HostRt {
    /// Utilization at the last update (the start of the energy trapezoid).
    util: f64,
    incoming: Vec<usize>,
    entry: HostEntry,
}

/// Progress callback: (decision instants done, total).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// One policy over one workload on one datacenter model.
pub struct Simulation<'w> {
    model: DatacenterModel,
    work: &'w Workload,
    policy: Policy,
    snap: Snapshot,
    vms: Vec<VmRt>,
    cold: Vec<VmCold>,
    hot: Vec<VmHot>,
    hosts: Vec<HostRt>,
    inflight: Vec<InFlight>,
    tot: Totals,
    last_update_s: f64,
    /// VMs admission found no host for, ascending.
    rejected: Vec<usize>,
    active_host_sum: f64,
    /// Policies' view of dirty rates and working sets (None: the truth, at every update).
    observer: Option<Observer>,
    /// The current decision step.
    step: u64,
    /// Each VM's samples at the start and end of interval `samples_at` (`work.at(v, k)` and
    /// `work.at(v, k + 1)`), read once per interval: the trace is stored VM by VM, so reading
    /// it afresh at every event touched one cache line per VM, a large share of the engine's
    /// time at 100,000 VMs. Read in VM order from here, the same values.
    samples: Vec<(f64, f64)>,
    samples_at: Option<usize>,
    /// False only for hosts found [dormant](Simulation::dormant) and not updated since (only
    /// an update can wake a host: every change to what `dormant` reads is followed by one), so
    /// the per-event pass skips them from a byte each instead of reading two host records.
    awake: Vec<bool>,
}

impl<'w> Simulation<'w> {
    pub fn new(
        model: DatacenterModel,
        work: &'w Workload,
        spec: PolicySpec,
        seed: u64,
    ) -> Result<Simulation<'w>, SimError> {
        if model.host_types.is_empty() || model.vm_types.is_empty() {
            return Err(SimError::Setup(
                "the datacenter needs host types and VM types".into(),
            ));
        }
        limits::check("hosts", model.hosts, &limits::HOSTS)?;
        limits::check("VMs", work.vms(), &limits::VMS)?;
        if work.samples < 2 {
            return Err(SimError::Setup(format!(
                "workload '{}' needs at least 2 samples",
                work.day
            )));
        }
        let policy = Policy::new(spec, model.interval_s, seed);
        let n = work.vms();
        let kinds: Vec<usize> = (0..model.hosts).map(|h| model.host_kind(h)).collect();
        let types: Vec<VmType> = (0..n)
            .map(|v| model.vm_types[model.vm_kind(v, n)].clone())
            .collect();
        let placed = place::admit(
            policy.admission(),
            &policy.detector(),
            &model.host_types,
            &kinds,
            &types,
        );
        let mut hosts: Vec<HostState> = kinds
            .iter()
            .map(|&kind| HostState {
                kind,
                vms: Vec::new(),
                util_mips: 0.0,
                on_since_s: None,
            })
            .collect();
        let mut rng = SplitMix64::new(seed ^ 0xD1F7_7A7E);
        let mut cold = Vec::with_capacity(n);
        let vms: Vec<VmState> = types
            .iter()
            .zip(&placed)
            .enumerate()
            .map(|(v, (t, &h))| {
                if let Some(h) = h {
                    hosts[h].vms.push(v);
                }
                let (dirty, wss) = draw_dirty(&model.migration, &mut rng);
                let wss_bytes = (wss * t.ram_mb as f64 * 1048576.0) as u64;
                cold.push(VmCold {
                    technique: None,
                    at_full: dirty,
                    bps: 0.0,
                    wss_bytes: wss_bytes as f64,
                });
                VmState {
                    mips: t.mips,
                    pes: t.pes,
                    ram_mb: t.ram_mb,
                    host: h,
                    demand_mips: 0.0,
                    history: Default::default(),
                    dirty_rate_bps: 0.0,
                    wss_bytes,
                    last_migration_s: None,
                }
            })
            .collect();
        let snap = Snapshot {
            time_s: 0.0,
            interval_s: model.interval_s,
            host_types: model.host_types.clone(),
            hosts,
            vms,
            enforce_memory: model.enforce_memory,
        };
        let hot = snap
            .vms
            .iter()
            .map(|vm| VmHot {
                placed: vm.host.is_some(),
                total_mips: vm.total_mips(),
            })
            .collect();
        let vms = snap
            .vms
            .iter()
            .map(|vm| VmRt {
                demand: vm.demand_mips,
                pes: vm.pes,
                ..VmRt::default()
            })
            .collect();
        let observer = match &model.migration {
            MigrationModel::DirtyRate { observe, .. } if !observe.is_exact() => {
                Some(Observer::new(*observe, seed ^ 0x0B5E_4EED, n))
            }
            _ => None,
        };
        Ok(Simulation {
            observer,
            step: 0,
            samples: vec![(0.0, 0.0); n],
            samples_at: None,
            awake: vec![true; model.hosts],
            rejected: (0..n).filter(|&v| placed[v].is_none()).collect(),
            hosts: vec![HostRt::default(); model.hosts],
            model,
            work,
            policy,
            snap,
            vms,
            cold,
            hot,
            inflight: Vec::new(),
            tot: Totals::default(),
            last_update_s: 0.0,
            active_host_sum: 0.0,
        })
    }

    /// Runs the whole workload and reports.
    pub fn run(mut self, progress: Option<Progress>) -> Report {
        let started = std::time::Instant::now();
        let horizon = self.work.samples as f64 * self.model.interval_s;
        let steps = self.work.samples;
        let mut progress = progress;
        for k in 1..steps {
            let t = k as f64 * self.model.interval_s + self.model.sample_offset_s;
            if t > horizon {
                break;
            }
            self.complete_until(t, horizon);
            self.step = k as u64;
            self.update_all(t, true);
            self.tot.decisions += 1;
            if self.policy.migrates() {
                self.snap.time_s = t;
                let plan = self.policy.decide(&self.snap);
                self.start(t, &plan.moves);
            }
            if let Some(p) = progress.as_mut() {
                p(k, steps - 1);
            }
        }
        self.complete_until(f64::INFINITY, horizon);
        self.report(started.elapsed().as_secs_f64() * 1000.0)
    }

    /// Makes `samples` hold interval `k`'s samples.
    fn load_samples(&mut self, k: usize) {
        if self.samples_at == Some(k) {
            return;
        }
        for (v, pair) in self.samples.iter_mut().enumerate() {
            *pair = (self.work.at(v, k), self.work.at(v, k + 1));
        }
        self.samples_at = Some(k);
    }

    /// Demand of VM `v` at time `t`, MIPS (linear between samples; `samples` must hold the
    /// interval `t` falls in, see [`Simulation::load_samples`]).
    fn demand(&self, v: usize, t: f64) -> f64 {
        let k = (t / self.model.interval_s).floor();
        let frac = t / self.model.interval_s - k;
        debug_assert_eq!(self.samples_at, Some(k as usize));
        let (a, b) = self.samples[v];
        let u = if frac == 0.0 { a } else { a + (b - a) * frac };
        u * self.hot[v].total_mips
    }

    /// Datacenter-wide update at `t`; `decision` also records VM histories.
    fn update_all(&mut self, t: f64, decision: bool) {
        self.load_samples((t / self.model.interval_s).floor() as usize);
        for v in 0..self.hot.len() {
            if !self.hot[v].placed {
                continue;
            }
            let d = self.demand(v, t);
            self.vms[v].demand = d;
            if decision {
                // The policy reads the snapshot now: bring its record up to date.
                self.snap.vms[v].history.push(d / self.hot[v].total_mips);
                self.sync_snapshot(v, true);
            }
        }
        let dt = t - self.last_update_s;
        let npa = matches!(self.policy.spec, PolicySpec::Npa);
        let mut active = 0usize;
        for h in 0..self.hosts.len() {
            if !npa && !self.awake[h] {
                debug_assert!(self.dormant(h), "host {h} woke without an update");
                continue;
            }
            let before = self.hosts[h].util;
            if !npa && self.dormant(h) {
                self.awake[h] = false;
                continue;
            }
            let util = self.update_host(h, t);
            let power = &self.snap.host_types[self.snap.hosts[h].kind].power;
            if npa {
                self.tot.energy_j += power.max() * dt;
            } else if before > 0.0 && dt > 0.0 {
                self.tot.energy_j += (power.power(before) + power.power(util)) / 2.0 * dt;
            }
            if util > 0.0 {
                active += 1;
                if before == 0.0 {
                    self.snap.hosts[h].on_since_s = Some(t);
                }
            }
        }
        if decision {
            self.active_host_sum += active as f64;
        }
        self.last_update_s = t;
        if self.model.idle_vms_leave {
            self.remove_idle(None);
        }
    }

    /// Writes VM `v`'s demand at the last update into its snapshot record, with the true dirty
    /// rate that follows from it and, at a decision instant (`decision`), what the observer
    /// reads (the observer is asked only then: it draws noise per decision step).
    fn sync_snapshot(&mut self, v: usize, decision: bool) {
        let d = self.vms[v].demand;
        let vm = &mut self.snap.vms[v];
        vm.demand_mips = d;
        let truth = self.cold[v].at_full * (d / vm.total_mips());
        self.cold[v].bps = truth;
        match self.observer.as_mut() {
            None => vm.dirty_rate_bps = truth,
            Some(o) if decision => {
                let wss = self.cold[v].wss_bytes;
                let (seen_dirty, seen_wss) = o.observe(v, self.step, (truth, wss));
                vm.dirty_rate_bps = seen_dirty;
                vm.wss_bytes = seen_wss as u64;
            }
            Some(_) => {}
        }
    }

    /// Whether updating host `h` would change nothing: it is switched off (no utilization at
    /// its last update, so it adds no energy), holds no VM and expects none, and its state entry
    /// is inactive (an inactive entry accrues no active or violation time, so the instant it
    /// was last renewed does not matter). Most hosts of a large consolidated datacenter are
    /// like this at any instant; skipping them leaves every result bit for bit the same.
    fn dormant(&self, h: usize) -> bool {
        let rt = &self.hosts[h];
        rt.util == 0.0
            && !rt.entry.active
            && rt.incoming.is_empty()
            && self.snap.hosts[h].vms.is_empty()
            && self.snap.hosts[h].util_mips == 0.0
    }

    /// Recomputes one host at `t` (CPU shares, state entries); returns its utilization.
    fn update_host(&mut self, h: usize, t: f64) -> f64 {
        self.awake[h] = true;
        let kind = self.snap.hosts[h].kind;
        let ht = &self.snap.host_types[kind];
        let (pe, total) = (ht.mips_per_pe, ht.total_mips());
        let reserve = self.model.target_reservation;
        let resident = &self.snap.hosts[h].vms;
        let incoming = &self.hosts[h].incoming;
        let vms = &mut self.vms;
        let capped = |rt: &VmRt| capped_mips(rt.demand, rt.pes, pe);
        let mut need: f64 = resident.iter().map(|&v| capped(&vms[v])).sum();
        need += incoming
            .iter()
            .map(|&v| capped(&vms[v]) * reserve)
            .sum::<f64>();
        let scale = if need <= total {
            None
        } else {
            Some(total / need)
        };
        let share = |mips: f64| match scale {
            None => mips,
            Some(s) => (mips * s).floor(),
        };
        let (mut util_mips, mut req) = (0.0, 0.0);
        for &v in resident {
            let rt = &mut vms[v];
            let c = capped(rt);
            let d = rt.demand;
            let migrating = rt.migrating > 0;
            let factor = if migrating { 1.0 - rt.loss } else { 1.0 };
            let alloc = match scale {
                None => c * factor,
                Some(s) => (c * s * factor).floor(),
            };
            util_mips += if migrating && factor > 0.0 {
                alloc / factor
            } else {
                alloc
            };
            req += d;
            let shortfall = rt.entry.record(t, alloc, d, migrating, &mut self.tot);
            if shortfall > 0.0 {
                if let Some(tech) = self.cold[v].technique {
                    self.tot.by_technique.entry(tech.to_string()).or_default().2 += shortfall;
                }
            }
        }
        for &v in incoming {
            util_mips += share(capped(&vms[v]) * reserve);
            req += vms[v].demand;
        }
        self.hosts[h]
            .entry
            .record(t, util_mips, req, util_mips > 0.0, &mut self.tot);
        self.snap.hosts[h].util_mips = util_mips;
        // The policies' rounding (CloudSim's), clamped for the power model and energy.
        let util = self.snap.host_utilization(h).clamp(0.0, 1.0);
        self.hosts[h].util = util;
        util
    }

    /// VMs asking for nothing leave (only those in `only`, when given).
    fn remove_idle(&mut self, only: Option<&[usize]>) {
        let check = |sim: &mut Simulation, v: usize| {
            let rt = &sim.vms[v];
            if sim.hot[v].placed && rt.demand == 0.0 && rt.migrating == 0 {
                if let Some(h) = sim.snap.vms[v].host {
                    sim.snap.hosts[h].vms.retain(|&x| x != v);
                }
                // Its record as a full update would have left it (it is not updated again).
                sim.sync_snapshot(v, false);
                sim.snap.vms[v].host = None;
                sim.hot[v].placed = false;
            }
        };
        match only {
            Some(list) => {
                for &v in list {
                    check(self, v);
                }
            }
            None => {
                for v in 0..self.hot.len() {
                    check(self, v);
                }
            }
        }
    }

    /// Starts a plan's migrations at `t`.
    fn start(&mut self, t: f64, moves: &[Move]) {
        let mut touched = Vec::new();
        for mv in moves {
            let Some(from) = self.snap.vms[mv.vm].host else {
                continue;
            };
            if from == mv.to || mv.to >= self.hosts.len() {
                continue;
            }
            let (duration, succeeds, loss, bytes, tech) = self.outcome(mv, from);
            self.tot.migrations += 1;
            match mv.reason {
                MoveReason::Overload => self.tot.overload_moves += 1,
                MoveReason::Underload => self.tot.underload_moves += 1,
            }
            self.tot.migrated_bytes += bytes;
            let entry = self.tot.by_technique.entry(tech.to_string()).or_default();
            entry.0 += 1;
            if !succeeds {
                entry.1 += 1;
                self.tot.failed_migrations += 1;
            }
            let rt = &mut self.vms[mv.vm];
            rt.migrating += 1;
            rt.loss = loss;
            self.cold[mv.vm].technique = Some(tech);
            self.hosts[mv.to].incoming.push(mv.vm);
            self.inflight.push(InFlight {
                vm: mv.vm,
                to: mv.to,
                end_s: t + duration,
                succeeds,
            });
            touched.extend([from, mv.to]);
        }
        // Completion order: by time, then by start order (a stable sort keeps it).
        self.inflight.sort_by(|a, b| a.end_s.total_cmp(&b.end_s));
        touched.sort_unstable();
        touched.dedup();
        for h in touched {
            self.update_host(h, t);
        }
    }

    /// (duration s, succeeds, CPU loss share, bytes moved, technique) for one move.
    fn outcome(&self, mv: &Move, from: usize) -> (f64, bool, f64, f64, Technique) {
        let vm = &self.snap.vms[mv.vm];
        let dest = &self.snap.host_types[self.snap.hosts[mv.to].kind];
        match &self.model.migration {
            MigrationModel::Benchmark => {
                let d = dest.migration_time_s(vm.ram_mb);
                (d, true, 0.1, vm.ram_mb as f64 * 1048576.0, mv.technique)
            }
            MigrationModel::DirtyRate {
                judge, technique, ..
            } => {
                // The judge sees the truth, never the snapshot's observed figures.
                let rt = &self.cold[mv.vm];
                let case = Case {
                    pass_bytes: vm.ram_mb as f64 * 1048576.0,
                    wss_bytes: rt.wss_bytes,
                    dirty_bps: rt.bps,
                    bandwidth_bps: self.snap.link_bytes_per_s(from, mv.to),
                };
                let (o, tech) = judge.judge(&case, technique.unwrap_or(mv.technique));
                // Cap at the interval: migrations finish before the next decision.
                let total = o.total_s.clamp(1e-3, self.model.interval_s * 0.9);
                let loss = (o.lost_work_s / total).clamp(0.0, 1.0);
                (total, o.moved, loss, o.bytes, tech)
            }
        }
    }

    /// Processes migration completions up to (and excluding) `until`, within `horizon`.
    fn complete_until(&mut self, until: f64, horizon: f64) {
        while let Some(first) = self.inflight.first().copied() {
            if first.end_s >= until || first.end_s > horizon {
                if first.end_s > horizon {
                    self.inflight.clear();
                }
                return;
            }
            let t = first.end_s;
            self.update_all(t, false);
            let n = self.inflight.iter().take_while(|m| m.end_s == t).count();
            let done: Vec<InFlight> = self.inflight.drain(..n).collect();
            let mut touched = Vec::new();
            let mut finished = Vec::new();
            for m in done {
                touched.push(m.to);
                self.hosts[m.to].incoming.retain(|&x| x != m.vm);
                if m.succeeds {
                    if let Some(cur) = self.snap.vms[m.vm].host {
                        self.snap.hosts[cur].vms.retain(|&x| x != m.vm);
                        touched.push(cur);
                    }
                    self.snap.hosts[m.to].vms.push(m.vm);
                    self.snap.vms[m.vm].host = Some(m.to);
                    self.snap.vms[m.vm].last_migration_s = Some(t);
                } else if let Some(cur) = self.snap.vms[m.vm].host {
                    touched.push(cur);
                }
                self.vms[m.vm].migrating -= 1;
                finished.push(m.vm);
            }
            touched.sort_unstable();
            touched.dedup();
            for h in touched {
                self.update_host(h, t);
            }
            if self.model.idle_vms_leave {
                self.remove_idle(Some(&finished));
            }
        }
    }

    fn report(&self, wall_ms: f64) -> Report {
        let slatah = self.tot.slatah();
        let pdm = self.tot.pdm();
        let energy = self.tot.energy_kwh();
        Report {
            policy: self.policy.name(),
            day: self.work.day.clone(),
            hosts: self.model.hosts,
            vms: self.work.vms(),
            energy_kwh: energy,
            migrations: self.tot.migrations,
            slatah_pct: slatah * 100.0,
            pdm_pct: pdm * 100.0,
            slav_pct: slatah * pdm * 100.0,
            esv: energy * slatah * pdm,
            wall_ms,
            overload_migrations: self.tot.overload_moves,
            underload_migrations: self.tot.underload_moves,
            failed_migrations: self.tot.failed_migrations,
            migrated_gb: self.tot.migrated_bytes / 1e9,
            vms_rejected: self.rejected.len(),
            rejected_vms: self.rejected.clone(),
            mean_active_hosts: self.active_host_sum / self.tot.decisions.max(1) as f64,
            migration_model: match self.model.migration {
                MigrationModel::Benchmark => "benchmark".into(),
                MigrationModel::DirtyRate { .. } => "dirty-rate".into(),
            },
            techniques: self.tot.technique_rows(),
        }
    }
}

/// A VM's dirty rate at full CPU and working-set share (zero in the benchmark model).
fn draw_dirty(model: &MigrationModel, rng: &mut SplitMix64) -> (f64, f64) {
    match model {
        MigrationModel::Benchmark => (0.0, 0.0),
        MigrationModel::DirtyRate {
            dirty_bps_range: (lo, hi),
            wss_share_range: (wlo, whi),
            ..
        } => {
            let dirty = lo * (hi / lo).powf(rng.next_f64());
            let wss = wlo + (whi - wlo) * rng.next_f64();
            (dirty, wss)
        }
    }
}

/// Runs one policy over one workload.
pub fn simulate(
    model: &DatacenterModel,
    work: &Workload,
    spec: PolicySpec,
    seed: u64,
    progress: Option<Progress>,
) -> Result<Report, SimError> {
    Ok(Simulation::new(model.clone(), work, spec, seed)?.run(progress))
}
