//! The group model: one schedule in, each migration's bandwidth, each application's loss, the
//! evacuation time and the objective out. The formulas are in the module doc of
//! [`super`]; this file carries them out wave by wave.

use super::input::{rx_link, tx_link, Group};
use super::share::{allocate, Flow};
use super::{GroupError, GroupParams, Schedule};
use crate::migration::cost::{pick, predict, CostParams, LinkProfile, Prediction, VmProfile};
use crate::migration::technique::Technique;

/// The group once checked, indexed for evaluating schedules.
pub(super) struct Ctx<'a> {
    pub group: &'a Group,
    pub params: &'a GroupParams,
    /// Concrete techniques the choice may use (all three when none was given).
    pub allowed: Vec<Technique>,
    /// Each VM's destination, as a host index (0 is the source).
    pub dest: Vec<usize>,
    /// Each VM's profile as the model forecasts it ([`super::LeavingVm::moving_profile`]).
    pub profiles: Vec<VmProfile>,
    /// Each link's capacity, bytes/s (see [`tx_link`]).
    pub caps: Vec<f64>,
    /// Per VM, the share of a hybrid migration's bytes sent before its switch to post-copy,
    /// i.e. while the VM still runs on the source (0..=1).
    pub hybrid_pre: Vec<f64>,
    /// The VMs by rising transmit rate, and by rising receive rate.
    by_tx: Vec<usize>,
    by_rx: Vec<usize>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        group: &'a Group,
        params: &'a GroupParams,
        allowed: &[Technique],
    ) -> Result<Self, GroupError> {
        params.check()?;
        let dest = group.check()?;
        let caps = group
            .hosts()
            .flat_map(|h| [h.tx_capacity_bps, h.rx_capacity_bps])
            .collect();
        let rising = |rate: fn(&super::Traffic) -> f64| {
            let mut order: Vec<usize> = (0..group.vms.len()).collect();
            order.sort_by(|a, b| {
                let (x, y) = (&group.vms[*a].traffic, &group.vms[*b].traffic);
                rate(x).total_cmp(&rate(y)).then(a.cmp(b))
            });
            order
        };
        let mut ctx = Ctx {
            group,
            params,
            allowed: concrete(allowed),
            dest,
            caps,
            profiles: group.vms.iter().map(|v| v.moving_profile()).collect(),
            hybrid_pre: Vec::new(),
            by_tx: rising(|t| t.tx_bps),
            by_rx: rising(|t| t.rx_bps),
        };
        ctx.hybrid_pre = (0..group.vms.len()).map(|v| ctx.hybrid_pre(v)).collect();
        Ok(ctx)
    }

    /// A VM whose traffic is too small to matter: nothing for the direction of its migration
    /// to spare.
    pub fn idle(&self, vm: usize) -> bool {
        self.group.vms[vm].traffic.total_bps() <= self.params.idle_traffic_bps
    }

    /// The single-VM model's tunables for a migration whose uncapped traffic (stop-and-copy,
    /// faulted pages) gets `unthrottled_bps`.
    pub fn cost_at(&self, unthrottled_bps: f64) -> CostParams {
        CostParams {
            unthrottled_bps: Some(unthrottled_bps),
            ..self.params.cost
        }
    }

    /// Bandwidth of a migration with the links to itself, bytes/s.
    fn uncontended_bps(&self, vm: usize) -> f64 {
        let path = self.caps[tx_link(0)].min(self.caps[rx_link(self.dest[vm])]);
        self.params.migration_cap_bps.map_or(path, |c| c.min(path))
    }

    /// The share of a hybrid's bytes that leave before the switch, from the single-VM model at
    /// the uncontended bandwidth (computed once: it places the VM's traffic, see
    /// [`location`]).
    fn hybrid_pre(&self, vm: usize) -> f64 {
        let bw = self.uncontended_bps(vm);
        let link = LinkProfile { bandwidth_bps: bw };
        let cost = self.cost_at(self.caps[tx_link(0)]);
        let p = predict(Technique::Hybrid, &self.profiles[vm], &link, &cost);
        if p.postcopy_s <= 0.0 || p.transferred_bytes <= 0.0 {
            return 1.0;
        }
        let post = p.postcopy_s * bw.max(1.0);
        ((p.transferred_bytes - post) / p.transferred_bytes).clamp(0.0, 1.0)
    }
}

/// The concrete techniques in `allowed`, in [`Technique::CONCRETE`] order, all three if none.
fn concrete(allowed: &[Technique]) -> Vec<Technique> {
    let picked: Vec<Technique> = Technique::CONCRETE
        .into_iter()
        .filter(|t| allowed.contains(t))
        .collect();
    if picked.is_empty() {
        Technique::CONCRETE.to_vec()
    } else {
        picked
    }
}

/// How much of a migrating VM's traffic runs on the source (the rest on its destination):
/// pre-copy runs it there until switchover, post-copy on the destination from the start, a
/// hybrid for the share of its bytes sent before the switch (paper, §1).
pub(super) fn location(ctx: &Ctx, vm: usize, t: Technique) -> f64 {
    match t {
        Technique::Postcopy => 0.0,
        Technique::Hybrid => ctx.hybrid_pre[vm],
        Technique::Precopy | Technique::Auto => 1.0,
    }
}

/// Whose traffic a flow carries.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Owner {
    Vm(usize),
    Resident {
        host: usize,
        index: usize,
    },
    /// The migration of the wave's member at this position.
    Migration(usize),
}

/// One VM's part of an evaluated schedule.
#[derive(Debug, Clone)]
pub(super) struct Leg {
    pub technique: Technique,
    pub prediction: Prediction,
    pub bandwidth_bps: f64,
    /// What its uncapped traffic (stop-and-copy, faulted pages) gets, bytes/s.
    pub unthrottled_bps: f64,
    pub start_s: f64,
}

/// An evaluated schedule.
#[derive(Debug, Clone)]
pub(super) struct Outcome {
    /// Per VM, input order.
    pub legs: Vec<Leg>,
    /// Per VM: bytes of its traffic not carried over the evacuation.
    pub lost_bytes: Vec<f64>,
    /// Per VM: the most throughput the migrations take from it in any wave, bytes/s, and that
    /// wave (None: they take nothing).
    pub peak_lost_bps: Vec<f64>,
    pub peak_wave: Vec<Option<usize>>,
    /// The waves' members, in order.
    pub waves: Vec<Vec<usize>>,
    /// Per VM: seconds of full throughput lost (model's lost work plus traffic).
    pub lost_s: Vec<f64>,
    pub residents_lost_s: f64,
    pub evacuation_s: f64,
    pub objective: f64,
}

impl Outcome {
    /// Seconds of full throughput lost by the group's VMs.
    pub fn group_lost_s(&self) -> f64 {
        self.lost_s.iter().sum()
    }

    /// Seconds of full throughput lost by the group's VMs and the residents: the lost work
    /// the plans are compared on.
    pub fn lost_total_s(&self) -> f64 {
        self.group_lost_s() + self.residents_lost_s
    }

    /// The single-VM model's risk points ([`Prediction::risk`]) at the group's price of
    /// post-copy exposure ([`GroupParams::risk_cost`]), summed over the group.
    pub fn risk(&self, params: &GroupParams) -> f64 {
        let cost = params.risk_cost();
        self.legs.iter().map(|l| l.prediction.risk(&cost)).sum()
    }
}

/// Forecasts `s` (already checked against the group).
pub(super) fn evaluate(ctx: &Ctx, s: &Schedule) -> Outcome {
    let n = ctx.group.vms.len();
    let mut at_source = vec![1.0; n];
    let mut legs: Vec<Option<Leg>> = vec![None; n];
    let mut lost_bytes = vec![0.0; n];
    let mut peak = Peaks {
        bps: vec![0.0; n],
        wave: vec![None; n],
    };
    let mut waves = Vec::new();
    let mut resident_bytes: Vec<Vec<f64>> = ctx
        .group
        .hosts()
        .map(|h| vec![0.0; h.residents.len()])
        .collect();
    let mut clock = 0.0;
    for members in s.order.chunks(s.concurrency.max(1) as usize) {
        let wave = run_wave(ctx, s, members, &mut at_source);
        let mut rate = vec![0.0; n];
        for loss in &wave.losses {
            let bytes = loss.1 * wave.duration_s;
            match loss.0 {
                Owner::Vm(v) => {
                    lost_bytes[v] += bytes;
                    rate[v] += loss.1;
                }
                Owner::Resident { host, index } => resident_bytes[host][index] += bytes,
                Owner::Migration(_) => {}
            }
        }
        peak.note(&rate, waves.len());
        waves.push(members.to_vec());
        for (leg, &m) in wave.legs.into_iter().zip(members) {
            legs[m] = Some(Leg {
                start_s: clock,
                ..leg
            });
            at_source[m] = 0.0;
        }
        clock += wave.duration_s;
    }
    let legs: Vec<Leg> = legs
        .into_iter()
        .map(|l| l.unwrap_or_else(idle_leg))
        .collect();
    let mut o = finish(ctx, legs, lost_bytes, &resident_bytes, clock);
    o.peak_lost_bps = peak.bps;
    o.peak_wave = peak.wave;
    o.waves = waves;
    o
}

/// Per VM, the most the migrations take from its application in one wave.
struct Peaks {
    bps: Vec<f64>,
    wave: Vec<Option<usize>>,
}

impl Peaks {
    fn note(&mut self, rate: &[f64], wave: usize) {
        for (v, &r) in rate.iter().enumerate() {
            if r > self.bps[v] {
                self.bps[v] = r;
                self.wave[v] = Some(wave);
            }
        }
    }
}

/// A VM the order left out (a checked schedule never does): nothing moved, nothing lost.
fn idle_leg() -> Leg {
    Leg {
        technique: Technique::Precopy,
        prediction: Prediction {
            technique: Technique::Precopy,
            converges: false,
            total_s: 0.0,
            downtime_s: 0.0,
            switchover_s: f64::INFINITY,
            transferred_bytes: 0.0,
            rounds: 0,
            degradation_pct: 0.0,
            postcopy_s: 0.0,
        },
        bandwidth_bps: 0.0,
        unthrottled_bps: 0.0,
        start_s: 0.0,
    }
}

/// Lost seconds and the objective, once every wave has run.
fn finish(
    ctx: &Ctx,
    legs: Vec<Leg>,
    lost_bytes: Vec<f64>,
    resident_bytes: &[Vec<f64>],
    evacuation_s: f64,
) -> Outcome {
    let p = ctx.params;
    let cost = &p.cost;
    let contention_s: Vec<f64> = lost_bytes
        .iter()
        .zip(&ctx.group.vms)
        .map(|(bytes, vm)| per_rate(*bytes, vm.traffic))
        .collect();
    let stall_s: Vec<f64> = legs
        .iter()
        .map(|l| stall_beyond(p, &l.prediction))
        .collect();
    let lost_s: Vec<f64> = legs
        .iter()
        .zip(contention_s.iter().zip(&stall_s))
        .map(|(leg, (c, st))| leg.prediction.lost_work_s(cost) + c + st)
        .collect();
    let residents_lost_s: f64 = ctx
        .group
        .hosts()
        .zip(resident_bytes)
        .flat_map(|(h, bytes)| h.residents.iter().zip(bytes))
        .map(|(t, b)| per_rate(*b, *t))
        .sum();
    let risk_cost = p.risk_cost();
    let scores: f64 = legs.iter().map(|l| l.prediction.score(&risk_cost)).sum();
    let group_loss =
        contention_s.iter().sum::<f64>() + stall_s.iter().sum::<f64>() + residents_lost_s;
    let objective = scores + p.degradation_weight * group_loss + p.evacuation_weight * evacuation_s;
    Outcome {
        legs,
        lost_bytes,
        peak_lost_bps: Vec::new(),
        peak_wave: Vec::new(),
        waves: Vec::new(),
        lost_s,
        residents_lost_s,
        evacuation_s,
        objective,
    }
}

/// Seconds of full throughput a post-copied VM loses beyond the single-VM model's own lost
/// work: it loses at least its switchover pause plus `postcopy_stall_factor` of its post-copy
/// phase; where the model's per-page fault time already says more, that stands (0 here).
pub(super) fn stall_beyond(params: &GroupParams, p: &Prediction) -> f64 {
    if p.postcopy_s <= 0.0 {
        return 0.0;
    }
    let floor = p.downtime_s + params.postcopy_stall_factor * p.postcopy_s;
    (floor - p.lost_work_s(&params.cost)).max(0.0)
}

/// Bytes not carried, as seconds of the application's full throughput.
fn per_rate(bytes: f64, t: super::Traffic) -> f64 {
    let rate = t.total_bps();
    if rate > 0.0 {
        bytes / rate
    } else {
        0.0
    }
}

/// One wave's result: its members' legs (without start), how long it lasts, who lost what.
struct Wave {
    legs: Vec<Leg>,
    duration_s: f64,
    /// Throughput each application flow loses while the wave runs, bytes/s.
    losses: Vec<(Owner, f64)>,
}

fn run_wave(ctx: &Ctx, s: &Schedule, members: &[usize], at_source: &mut [f64]) -> Wave {
    let mut techniques: Vec<Technique> = members.iter().map(|&m| s.techniques[m]).collect();
    for (&m, &t) in members.iter().zip(&techniques) {
        at_source[m] = location(ctx, m, t);
    }
    let mut shares = Shares::compute(ctx, members, at_source);
    // `Auto` is the single-VM choice at the bandwidth it gets; if that choice moves traffic
    // (a VM with traffic left to Auto by the caller), the wave is shared out again once.
    let mut moved = false;
    for (i, &m) in members.iter().enumerate() {
        if techniques[i] != Technique::Auto {
            continue;
        }
        let link = LinkProfile {
            bandwidth_bps: shares.migration_bps[i],
        };
        let cost = ctx.cost_at(shares.unthrottled_bps[i]);
        let single = pick(&ctx.profiles[m], &link, &cost, &ctx.allowed).technique;
        techniques[i] = single;
        let place = location(ctx, m, single);
        if place != at_source[m] && ctx.group.vms[m].traffic.total_bps() > 0.0 {
            at_source[m] = place;
            moved = true;
        }
    }
    if moved {
        shares = Shares::compute(ctx, members, at_source);
    }
    let legs: Vec<Leg> = members
        .iter()
        .enumerate()
        .map(|(i, &m)| shares.leg(ctx, i, m, techniques[i]))
        .collect();
    let duration_s = legs
        .iter()
        .map(|l| l.prediction.total_s)
        .fold(0.0, f64::max);
    Wave {
        legs,
        duration_s,
        losses: shares.losses,
    }
}

/// How the links the wave's migrations cross are shared out.
struct Shares {
    /// Per member, bytes/s at QEMU's cap.
    migration_bps: Vec<f64>,
    /// Per member, bytes/s without the cap (stop-and-copy, faulted pages).
    unthrottled_bps: Vec<f64>,
    losses: Vec<(Owner, f64)>,
}

impl Shares {
    fn compute(ctx: &Ctx, members: &[usize], at_source: &[f64]) -> Self {
        let (caps, flows, owners) = flows(ctx, members, at_source);
        let split = ctx.params.split;
        let with = allocate(&caps, &flows, split);
        let apps: Vec<Flow> = flows.iter().filter(|f| !f.migration).copied().collect();
        let alone = allocate(&caps, &apps, split);
        let app_owners = owners.iter().filter(|o| !matches!(o, Owner::Migration(_)));
        let app_with = with.iter().zip(&flows).filter(|(_, f)| !f.migration);
        let losses = app_owners
            .zip(app_with)
            .zip(&alone)
            .map(|((o, (w, _)), a)| (*o, (a - w).max(0.0)))
            .collect();
        let migration_bps = member_rates(&with, &owners);
        let unthrottled_bps = if ctx.params.migration_cap_bps.is_some() {
            let uncapped: Vec<Flow> = flows
                .iter()
                .map(|f| Flow {
                    demand_bps: if f.migration {
                        f64::INFINITY
                    } else {
                        f.demand_bps
                    },
                    ..*f
                })
                .collect();
            member_rates(&allocate(&caps, &uncapped, split), &owners)
        } else {
            migration_bps.clone()
        };
        Shares {
            migration_bps,
            unthrottled_bps,
            losses,
        }
    }

    /// Member `i` (VM `m`) forecast by the single-VM model at the bandwidth it gets.
    fn leg(&self, ctx: &Ctx, i: usize, m: usize, technique: Technique) -> Leg {
        let bw = self.migration_bps[i];
        let link = LinkProfile { bandwidth_bps: bw };
        let unthrottled_bps = self.unthrottled_bps[i].max(bw);
        let cost = ctx.cost_at(unthrottled_bps);
        let prediction = predict(technique, &ctx.profiles[m], &link, &cost);
        Leg {
            technique,
            prediction,
            bandwidth_bps: bw,
            unthrottled_bps,
            start_s: 0.0,
        }
    }
}

fn member_rates(rates: &[f64], owners: &[Owner]) -> Vec<f64> {
    let mut out: Vec<(usize, f64)> = owners
        .iter()
        .zip(rates)
        .filter_map(|(o, r)| match o {
            Owner::Migration(i) => Some((*i, *r)),
            _ => None,
        })
        .collect();
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// The links the wave's migrations cross (the source's transmit side, each destination's
/// receive side) and every flow on them. Links no migration crosses lose nothing to the
/// migrations, so they are left out.
fn flows(ctx: &Ctx, members: &[usize], at_source: &[f64]) -> (Vec<f64>, Vec<Flow>, Vec<Owner>) {
    let mut links = vec![tx_link(0)];
    for &m in members {
        let rx = rx_link(ctx.dest[m]);
        if !links.contains(&rx) {
            links.push(rx);
        }
    }
    let caps: Vec<f64> = links.iter().map(|&l| ctx.caps[l]).collect();
    let local = |l: usize| links.iter().position(|x| *x == l);
    let mut b = FlowSet::default();
    // In order of rising rate, so that the share-out's sort finds them (almost) sorted.
    for &v in &ctx.by_tx {
        let tx = ctx.group.vms[v].traffic.tx_bps;
        b.app(0, at_source[v] * tx, Owner::Vm(v));
    }
    // A member running on its destination is in its post-copy phase, where it stalls on
    // faults for `postcopy_stall_factor` of the time (priced as its lost work in `finish`):
    // only the rest of its traffic is there to contend. Measured so: post-copied receivers'
    // migrations took 9-12 s, not the 15 s a full-rate flow beside them would leave.
    let running = 1.0 - ctx.params.postcopy_stall_factor;
    for &v in &ctx.by_rx {
        if let Some(there) = local(rx_link(ctx.dest[v])) {
            let rx = ctx.group.vms[v].traffic.rx_bps;
            let share = if members.contains(&v) { running } else { 1.0 };
            b.app(there, (1.0 - at_source[v]) * rx * share, Owner::Vm(v));
        }
    }
    for (i, &l) in links.iter().enumerate() {
        let host = l / 2;
        let nic = ctx.group.hosts().nth(host);
        for (index, r) in nic.map_or(&[][..], |h| &h.residents).iter().enumerate() {
            let rate = if l == tx_link(host) {
                r.tx_bps
            } else {
                r.rx_bps
            };
            b.app(i, rate, Owner::Resident { host, index });
        }
    }
    for (i, &m) in members.iter().enumerate() {
        // Every member's receive side was listed above.
        let dst = local(rx_link(ctx.dest[m])).unwrap_or(0);
        let narrowest = caps[0].min(caps[dst]);
        b.flows.push(Flow {
            first: 0,
            second: Some(dst),
            demand_bps: ctx.params.migration_cap_bps.unwrap_or(f64::INFINITY),
            migration: true,
            floor_bps: ctx.params.min_migration_share * narrowest,
        });
        b.owners.push(Owner::Migration(i));
    }
    (caps, b.flows, b.owners)
}

#[derive(Default)]
struct FlowSet {
    flows: Vec<Flow>,
    owners: Vec<Owner>,
}

impl FlowSet {
    fn app(&mut self, link: usize, demand: f64, owner: Owner) {
        if demand > 0.0 {
            self.flows.push(Flow {
                first: link,
                second: None,
                demand_bps: demand,
                migration: false,
                floor_bps: 0.0,
            });
            self.owners.push(owner);
        }
    }
}
