//! How one NIC direction is split between the flows that want it: max-min fair sharing by
//! progressive filling, in priority stages (see [`super::Split`]).
//!
//! Progressive filling (Bertsekas & Gallager, *Data Networks*, on max-min fairness): every active flow's
//! rate rises together; a flow stops when it reaches its demand or when a link it crosses is
//! full. The result is the max-min fair allocation: no flow can get more without taking from a
//! flow that has no more than it. It is what long-lived TCP flows with similar round trips
//! converge to on a shared bottleneck, which is why it is the default split. A flow crosses one
//! link (a VM's traffic on its host's NIC) or two (a migration: the source's transmit side and
//! the destination's receive side), so one migration held back at a busy destination leaves
//! room at the source for the others.

use super::Split;

/// A flow wanting a share of one or two links.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Flow {
    /// Index of the first link it crosses.
    pub first: usize,
    /// The second, for a migration (source transmit, then destination receive).
    pub second: Option<usize>,
    /// Rate it would take with the links to itself, bytes/s (infinite: as much as it gets).
    pub demand_bps: f64,
    /// A migration (served by the split's rule) rather than an application's traffic.
    pub migration: bool,
    /// Least rate a migration gets under [`Split::ApplicationFirst`], bytes/s.
    pub floor_bps: f64,
}

/// Each flow's rate, bytes/s, over links of capacities `caps` (bytes/s), split by `split`.
pub(super) fn allocate(caps: &[f64], flows: &[Flow], split: Split) -> Vec<f64> {
    let mut residual: Vec<f64> = caps.iter().map(|c| c.max(0.0)).collect();
    let mut rate = vec![0.0; flows.len()];
    let want = |pick: &dyn Fn(&Flow) -> Option<f64>| -> Vec<f64> {
        flows.iter().map(|f| pick(f).unwrap_or(0.0)).collect()
    };
    let stages: Vec<Vec<f64>> = match split {
        Split::FairShare => vec![want(&|f| Some(f.demand_bps))],
        Split::MigrationFirst => vec![
            want(&|f| f.migration.then_some(f.demand_bps)),
            want(&|f| (!f.migration).then_some(f.demand_bps)),
        ],
        Split::ApplicationFirst => vec![
            want(&|f| f.migration.then_some(f.floor_bps.min(f.demand_bps))),
            want(&|f| (!f.migration).then_some(f.demand_bps)),
            want(&|f| {
                f.migration
                    .then_some((f.demand_bps - f.floor_bps.min(f.demand_bps)).max(0.0))
            }),
        ],
    };
    for demand in stages {
        let got = fill(&mut residual, caps, flows, &demand);
        for (r, g) in rate.iter_mut().zip(got) {
            *r += g;
        }
    }
    rate
}

/// One stage of progressive filling over what is left of each link; `residual` is updated.
fn fill(residual: &mut [f64], caps: &[f64], flows: &[Flow], demand: &[f64]) -> Vec<f64> {
    if fits(residual, flows, demand) {
        // Nobody is short (the usual case without migrations): every flow gets its demand.
        let rate: Vec<f64> = demand.iter().map(|d| d.max(0.0)).collect();
        subtract(residual, flows, &rate);
        return rate;
    }
    let mut f = Filler::new(residual, flows, demand);
    // Every round stops at least one flow (the one whose demand or link set the level).
    for _ in 0..=flows.len() + residual.len() {
        if f.remaining == 0 {
            break;
        }
        let Some(next) = f.next_level() else {
            break;
        };
        f.level = f.level.max(next);
        f.stop_satisfied();
        f.stop_at_full_links(caps);
    }
    subtract(residual, flows, &f.rate);
    f.rate
}

/// Whether every link has room for all the demands on it.
fn fits(residual: &[f64], flows: &[Flow], demand: &[f64]) -> bool {
    let mut want = vec![0.0; residual.len()];
    for (flow, d) in flows.iter().zip(demand).filter(|(_, d)| **d > 0.0) {
        want[flow.first] += d;
        if let Some(s) = flow.second {
            want[s] += d;
        }
    }
    want.iter().zip(residual).all(|(w, r)| w <= r)
}

fn subtract(residual: &mut [f64], flows: &[Flow], rate: &[f64]) {
    for (flow, r) in flows.iter().zip(rate) {
        residual[flow.first] -= r;
        if let Some(s) = flow.second {
            residual[s] -= r;
        }
    }
}

fn tol(x: f64) -> f64 {
    1e-9 * x.abs().max(1.0)
}

/// A flow rising at `level` has met its demand (never an unbounded one).
fn reached(demand: f64, level: f64) -> bool {
    demand.is_finite() && demand <= level + tol(demand)
}

/// Progressive filling as events: every flow still rising holds the same rate, `level`, so
/// only the next demand met or the next link filled needs finding (a sort, then linear).
struct Filler<'a> {
    flows: &'a [Flow],
    demand: &'a [f64],
    /// What each link had when the stage began, bytes/s.
    start: Vec<f64>,
    rate: Vec<f64>,
    level: f64,
    /// Per link: its one-link flows by rising demand, and how many of them have stopped.
    singles: Vec<Vec<usize>>,
    cursor: Vec<usize>,
    /// Two-link flows (migrations) still rising.
    multi: Vec<usize>,
    /// Per link: flows still rising on it, and the rates of those stopped.
    rising: Vec<usize>,
    stopped_bps: Vec<f64>,
    remaining: usize,
}

impl<'a> Filler<'a> {
    fn new(residual: &[f64], flows: &'a [Flow], demand: &'a [f64]) -> Self {
        let links = residual.len();
        let mut f = Filler {
            flows,
            demand,
            start: residual.to_vec(),
            rate: vec![0.0; flows.len()],
            level: 0.0,
            singles: vec![Vec::new(); links],
            cursor: vec![0; links],
            multi: Vec::new(),
            rising: vec![0; links],
            stopped_bps: vec![0.0; links],
            remaining: 0,
        };
        for (i, flow) in flows.iter().enumerate().filter(|(i, _)| demand[*i] > 0.0) {
            f.remaining += 1;
            f.rising[flow.first] += 1;
            match flow.second {
                None => f.singles[flow.first].push(i),
                Some(s) => {
                    f.rising[s] += 1;
                    f.multi.push(i);
                }
            }
        }
        for list in &mut f.singles {
            // Stable and adaptive: the model lists flows nearly sorted already.
            list.sort_by(|a, b| demand[*a].total_cmp(&demand[*b]));
        }
        f
    }

    /// The level at which the next flow stops: a demand met or a link full.
    fn next_level(&self) -> Option<f64> {
        let mut next = f64::INFINITY;
        for l in 0..self.start.len() {
            if self.rising[l] > 0 {
                next = next.min((self.start[l] - self.stopped_bps[l]) / self.rising[l] as f64);
            }
            if let Some(&i) = self.singles[l].get(self.cursor[l]) {
                next = next.min(self.demand[i]);
            }
        }
        for &i in &self.multi {
            next = next.min(self.demand[i]);
        }
        next.is_finite().then_some(next)
    }

    fn stop(&mut self, i: usize, rate: f64) {
        self.rate[i] = rate;
        self.remaining -= 1;
        let flow = self.flows[i];
        for l in std::iter::once(flow.first).chain(flow.second) {
            self.rising[l] -= 1;
            self.stopped_bps[l] += rate;
        }
    }

    fn stop_satisfied(&mut self) {
        for l in 0..self.start.len() {
            while let Some(&i) = self.singles[l].get(self.cursor[l]) {
                if !reached(self.demand[i], self.level) {
                    break;
                }
                self.stop(i, self.demand[i]);
                self.cursor[l] += 1;
            }
        }
        let mut j = 0;
        while let Some(&i) = self.multi.get(j) {
            if reached(self.demand[i], self.level) {
                self.multi.swap_remove(j);
                self.stop(i, self.demand[i]);
            } else {
                j += 1;
            }
        }
    }

    fn stop_at_full_links(&mut self, caps: &[f64]) {
        for (l, &cap) in caps.iter().enumerate().take(self.start.len()) {
            let left = self.start[l] - self.stopped_bps[l] - self.rising[l] as f64 * self.level;
            if self.rising[l] == 0 || left > tol(cap) {
                continue;
            }
            while let Some(&i) = self.singles[l].get(self.cursor[l]) {
                self.stop(i, self.level);
                self.cursor[l] += 1;
            }
            let mut j = 0;
            while let Some(&i) = self.multi.get(j) {
                let f = self.flows[i];
                if f.first == l || f.second == Some(l) {
                    self.multi.swap_remove(j);
                    self.stop(i, self.level);
                } else {
                    j += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(link: usize, demand: f64) -> Flow {
        Flow {
            first: link,
            second: None,
            demand_bps: demand,
            migration: false,
            floor_bps: 0.0,
        }
    }

    fn mig(src: usize, dst: usize, floor: f64) -> Flow {
        Flow {
            first: src,
            second: Some(dst),
            demand_bps: f64::INFINITY,
            migration: true,
            floor_bps: floor,
        }
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-3, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn fair_share_water_fills() {
        // 125 on one link: the 2 MB/s sender gets its 2, the other two split the rest,
        // 61.5 each, the 80 MB/s sender capped below its demand.
        let flows = [app(0, 80.0), app(0, 2.0), mig(0, 1, 6.25)];
        let r = allocate(&[125.0, 125.0], &flows, Split::FairShare);
        close(&r, &[61.5, 2.0, 61.5]);
    }

    #[test]
    fn a_migration_held_back_at_its_destination_leaves_room_at_the_source() {
        // Two migrations from link 0 (250) to links 1 (50) and 2 (250): the first stops at 50,
        // the second takes the other 200 of the source.
        let flows = [mig(0, 1, 0.0), mig(0, 2, 0.0)];
        let r = allocate(&[250.0, 50.0, 250.0], &flows, Split::FairShare);
        close(&r, &[50.0, 200.0]);
    }

    #[test]
    fn priority_stages() {
        let flows = [app(0, 125.0), mig(0, 1, 6.25)];
        let caps = [125.0, 125.0];
        close(&allocate(&caps, &flows, Split::FairShare), &[62.5, 62.5]);
        close(
            &allocate(&caps, &flows, Split::MigrationFirst),
            &[0.0, 125.0],
        );
        close(
            &allocate(&caps, &flows, Split::ApplicationFirst),
            &[118.75, 6.25],
        );
        // A link the applications leave room on: the migration takes the rest after them.
        let light = [app(0, 25.0), mig(0, 1, 6.25)];
        close(
            &allocate(&caps, &light, Split::ApplicationFirst),
            &[25.0, 100.0],
        );
    }

    #[test]
    fn zero_capacity_and_no_flows() {
        let r = allocate(
            &[0.0, 125.0],
            &[app(0, 10.0), mig(0, 1, 0.0)],
            Split::FairShare,
        );
        close(&r, &[0.0, 0.0]);
        assert!(allocate(&[125.0], &[], Split::FairShare).is_empty());
    }
}
