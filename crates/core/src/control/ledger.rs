//! What each host is committed to, this look: the load and memory its VMs take now, what moves
//! in flight will bring, what plans not started yet will bring, its migration slots, and the
//! plans about it. Built once per look from the view and the step's memory (O(hosts + VMs +
//! moves + plans)), then edited as plans are made and moves start, so a later decision in the
//! same look sees what an earlier one committed.
//!
//! Counting rules (why: a destination is never filled twice over by decisions that cannot see
//! each other):
//! - a move in flight counts at its destination at once (CPU unless the destination already
//!   reports the VM running there, memory unless it already lists it), and still counts at its
//!   source until it is done: departures free nothing until they have happened;
//! - a planned move of a proposed or approved plan counts at its destination when *planning*
//!   (two plans never promise the same room), but not when *starting* a move, which only needs
//!   the room that is really taken or arriving;
//! - moves of recorded (dry-run) plans count nowhere: nothing will carry them out.

use super::moves::{Move, MoveState};
use super::observe::{PowerState, VmPresence};
use super::plan::{PlanKind, PlanState};
use super::state::ControlState;
use super::view::View;
use std::collections::HashMap;

/// Per-host commitments and per-VM marks for one look.
#[derive(Debug)]
pub(crate) struct Ledger {
    /// Observed demand plus arrivals in flight not yet visible, cores.
    pub live_cpu: Vec<f64>,
    /// Listed memory plus arrivals in flight not yet listed, bytes.
    pub live_mem: Vec<u64>,
    /// Arrivals of planned moves not started yet (active plans and this look's), cores.
    pub plan_cpu: Vec<f64>,
    /// The same in memory, bytes.
    pub plan_mem: Vec<u64>,
    /// Moves in flight out of and into each host (its migration slots).
    pub out_flight: Vec<u32>,
    pub in_flight: Vec<u32>,
    /// Live moves (in flight, or planned in an active plan) out of and into each host.
    pub out_live: Vec<u32>,
    pub in_live: Vec<u32>,
    /// An operator drains it.
    pub drained: Vec<bool>,
    /// Standby hosts that an active plan wakes, and hosts waking now.
    pub waking: Vec<bool>,
    /// Receives VMs from a plan made this look (never emptied in the same look).
    pub receiving: Vec<bool>,
    /// Emptied by a plan made this look (never a destination in the same look).
    pub emptying: Vec<bool>,
    /// An active relief plan is about this host.
    pub relief_active: Vec<bool>,
    /// An active drain plan is about this host.
    pub drain_active: Vec<bool>,
    /// An active plan puts this host in standby once empty.
    pub standby_planned: Vec<bool>,
    /// Per VM of the view: in a live move, so never picked again.
    pub busy: Vec<bool>,
    /// Per VM of the view: where its live move takes it.
    pub going: Vec<Option<usize>>,
    /// When the latest recorded (dry-run) plan of a kind about a host was made, s.
    recorded: HashMap<(PlanKind, usize), f64>,
}

/// A planned move's effect on the ledger, kept so that it can be undone (consolidation is all or
/// nothing per host).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Booking {
    pub vm: usize,
    pub from: usize,
    pub to: usize,
    pub cpu: f64,
    pub mem: u64,
}

impl Ledger {
    /// The ledger of this look, after the moves in flight were brought up to date.
    pub fn new(view: &View, state: &ControlState) -> Ledger {
        let n = view.hosts.len();
        let mut l = Ledger {
            live_cpu: view.hosts.iter().map(|h| h.demand).collect(),
            live_mem: view.hosts.iter().map(|h| h.mem_alloc).collect(),
            plan_cpu: vec![0.0; n],
            plan_mem: vec![0; n],
            out_flight: vec![0; n],
            in_flight: vec![0; n],
            out_live: vec![0; n],
            in_live: vec![0; n],
            drained: view
                .hosts
                .iter()
                .map(|h| state.drained.contains(h.name()))
                .collect(),
            waking: view
                .hosts
                .iter()
                .map(|h| h.obs.power == PowerState::Waking)
                .collect(),
            receiving: vec![false; n],
            emptying: vec![false; n],
            relief_active: vec![false; n],
            drain_active: vec![false; n],
            standby_planned: vec![false; n],
            busy: vec![false; view.vms.len()],
            going: vec![None; view.vms.len()],
            recorded: HashMap::new(),
        };
        l.index_plans(view, state);
        for m in state.moves.values() {
            l.count_move(view, state, m);
        }
        l
    }

    fn index_plans(&mut self, view: &View, state: &ControlState) {
        for p in state.plans.values() {
            let about = p
                .explanation
                .host
                .as_deref()
                .and_then(|h| view.host_index(h));
            if p.state == PlanState::Recorded {
                if let Some(h) = about {
                    let t = self.recorded.entry((p.kind, h)).or_insert(p.created_s);
                    *t = t.max(p.created_s);
                }
                continue;
            }
            if p.state.is_final() {
                continue;
            }
            match (p.kind, about) {
                (PlanKind::Relief, Some(h)) => self.relief_active[h] = true,
                (PlanKind::Drain, Some(h)) => self.drain_active[h] = true,
                _ => {}
            }
            for h in p.wake.iter().filter_map(|h| view.host_index(h)) {
                self.waking[h] = true;
            }
            for h in p.standby.iter().filter_map(|h| view.host_index(h)) {
                self.standby_planned[h] = true;
            }
        }
    }

    /// Counts one move if it is live: in flight, or planned in a proposed or approved plan.
    fn count_move(&mut self, view: &View, state: &ControlState, m: &Move) {
        let planned_live = m.state == MoveState::Planned
            && state
                .plans
                .get(&m.plan)
                .is_some_and(|p| matches!(p.state, PlanState::Proposed | PlanState::Approved));
        let flying = m.state.in_flight();
        if !planned_live && !flying {
            return;
        }
        let (from, to) = (view.host_index(&m.from), view.host_index(&m.to));
        if let Some(vm) = view.locate(&m.vm) {
            self.busy[vm] = true;
            self.going[vm] = to;
        }
        if let Some(f) = from {
            self.out_live[f] += 1;
            self.out_flight[f] += u32::from(flying);
        }
        let Some(t) = to else { return };
        self.in_live[t] += 1;
        let demand = super::view::clean(m.demand_cores);
        if flying {
            self.in_flight[t] += 1;
            let presence = view.presence_on(t, &m.vm);
            if presence != Some(VmPresence::Running) {
                self.live_cpu[t] += demand;
            }
            if presence.is_none() {
                self.live_mem[t] = self.live_mem[t].saturating_add(m.memory_bytes);
            }
        } else {
            self.plan_cpu[t] += demand;
            self.plan_mem[t] = self.plan_mem[t].saturating_add(m.memory_bytes);
        }
    }

    /// Load of `h` if `add_cpu` more cores arrived, counting everything promised (planning).
    pub fn load_planning(&self, view: &View, h: usize, add_cpu: f64) -> f64 {
        let cpus = view.hosts[h].cpus;
        if cpus <= 0.0 {
            return f64::INFINITY;
        }
        (self.live_cpu[h] + self.plan_cpu[h] + add_cpu) / cpus
    }

    /// Whether `add_mem` more bytes fit `h`, counting everything promised (planning).
    pub fn mem_fits_planning(&self, view: &View, h: usize, add_mem: u64) -> bool {
        self.live_mem[h]
            .saturating_add(self.plan_mem[h])
            .saturating_add(add_mem)
            <= view.hosts[h].mem_cap
    }

    /// Load of `h` if `add_cpu` more cores arrived, counting only what is there or arriving
    /// (starting a move).
    pub fn load_live(&self, view: &View, h: usize, add_cpu: f64) -> f64 {
        let cpus = view.hosts[h].cpus;
        if cpus <= 0.0 {
            return f64::INFINITY;
        }
        (self.live_cpu[h] + add_cpu) / cpus
    }

    /// Whether `add_mem` more bytes fit `h`, counting only what is there or arriving.
    pub fn mem_fits_live(&self, view: &View, h: usize, add_mem: u64) -> bool {
        self.live_mem[h].saturating_add(add_mem) <= view.hosts[h].mem_cap
    }

    /// Books a planned move made this look.
    pub fn book(&mut self, b: Booking) {
        self.plan_cpu[b.to] += b.cpu;
        self.plan_mem[b.to] = self.plan_mem[b.to].saturating_add(b.mem);
        self.out_live[b.from] += 1;
        self.in_live[b.to] += 1;
        self.busy[b.vm] = true;
        self.going[b.vm] = Some(b.to);
    }

    /// Takes back a booking (the plan it was for is not made after all).
    pub fn unbook(&mut self, b: Booking) {
        self.plan_cpu[b.to] -= b.cpu;
        self.plan_mem[b.to] = self.plan_mem[b.to].saturating_sub(b.mem);
        self.out_live[b.from] = self.out_live[b.from].saturating_sub(1);
        self.in_live[b.to] = self.in_live[b.to].saturating_sub(1);
        self.busy[b.vm] = false;
        self.going[b.vm] = None;
    }

    /// A planned move starts: its room moves from promised to taken, and it holds a slot on
    /// both hosts.
    pub fn start(&mut self, view: &View, m: &Move, from: usize, to: usize) {
        let demand = super::view::clean(m.demand_cores);
        self.plan_cpu[to] = (self.plan_cpu[to] - demand).max(0.0);
        self.plan_mem[to] = self.plan_mem[to].saturating_sub(m.memory_bytes);
        let presence = view.presence_on(to, &m.vm);
        if presence != Some(VmPresence::Running) {
            self.live_cpu[to] += demand;
        }
        if presence.is_none() {
            self.live_mem[to] = self.live_mem[to].saturating_add(m.memory_bytes);
        }
        self.out_flight[from] += 1;
        self.in_flight[to] += 1;
    }

    /// A planned move will not happen (skipped, cancelled, expired): its promise is released.
    pub fn release(&mut self, view: &View, m: &Move) {
        let (Some(from), Some(to)) = (view.host_index(&m.from), view.host_index(&m.to)) else {
            return;
        };
        self.plan_cpu[to] = (self.plan_cpu[to] - super::view::clean(m.demand_cores)).max(0.0);
        self.plan_mem[to] = self.plan_mem[to].saturating_sub(m.memory_bytes);
        self.out_live[from] = self.out_live[from].saturating_sub(1);
        self.in_live[to] = self.in_live[to].saturating_sub(1);
        if let Some(vm) = view.locate(&m.vm) {
            self.busy[vm] = false;
            self.going[vm] = None;
        }
    }

    /// When the latest recorded plan of `kind` about host `h` was made, s.
    pub fn recorded_at(&self, kind: PlanKind, h: usize) -> Option<f64> {
        self.recorded.get(&(kind, h)).copied()
    }

    /// Notes a plan recorded this look.
    pub fn note_recorded(&mut self, kind: PlanKind, h: usize, now_s: f64) {
        self.recorded.insert((kind, h), now_s);
    }
}
