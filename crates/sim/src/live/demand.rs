//! Each VM's CPU utilization over time: the workload's samples, interpolated, with surges on
//! top.
//!
//! - **Between samples demand is linear**, as in the benchmark simulator and CloudSim's
//!   PlanetLab model: a trace sampled every 300 s says nothing about when within the interval
//!   load changed, and a straight line neither invents a jump at the sample nor hides the
//!   trend from a manager that looks every second. Past the last sample it stays at the last
//!   value.
//! - **A surge** holds some VMs at a fixed utilization for a while (a sudden overload the trace
//!   does not have), replacing their trace; where surges overlap, the highest level counts.
//!
//! Within a stretch with no sample and no surge boundary every VM's utilization is linear in
//! time, so a host's demand is too, and the accounting integrates it exactly.

use crate::trace::Workload;

/// Some VMs held at `level` (a share of their vCPUs, 0..=1) from `start_s` until `end_s`.
#[derive(Debug, Clone, PartialEq)]
pub struct Surge {
    /// Names of the VMs it holds.
    pub vms: Vec<String>,
    /// Utilization, a share of each VM's vCPUs (0..=1).
    pub level: f64,
    /// When it starts, s (model time).
    pub start_s: f64,
    /// When it ends, s.
    pub end_s: f64,
}

/// A surge with its VMs resolved to indices.
#[derive(Debug, Clone)]
struct Held {
    vms: Vec<usize>,
    level: f64,
    start_s: f64,
    end_s: f64,
    active: bool,
}

/// The workload and the surges: utilization of any VM at any time.
pub(super) struct Demand {
    work: Workload,
    interval_s: f64,
    surges: Vec<Held>,
    /// Per VM: the level of the highest active surge holding it.
    held: Vec<Option<f64>>,
}

impl Demand {
    pub fn new(work: Workload, interval_s: f64) -> Demand {
        let n = work.vms();
        Demand {
            work,
            interval_s,
            surges: Vec::new(),
            held: vec![None; n],
        }
    }

    pub fn work(&self) -> &Workload {
        &self.work
    }

    /// Utilization of VM `v` at `t` by the trace alone (linear between samples).
    pub fn trace(&self, v: usize, t: f64) -> f64 {
        let x = (t / self.interval_s).max(0.0);
        let k = x.floor();
        let frac = x - k;
        let k = k as usize;
        let a = self.work.at(v, k);
        if frac == 0.0 {
            return a;
        }
        a + (self.work.at(v, k + 1) - a) * frac
    }

    /// Utilization of VM `v` at `t` under the surges active now.
    pub fn util(&self, v: usize, t: f64) -> f64 {
        match self.held[v] {
            Some(level) => level,
            None => self.trace(v, t),
        }
    }

    /// Adds a surge (its VMs resolved to indices; levels clamped to 0..=1).
    pub fn add(&mut self, vms: Vec<usize>, level: f64, start_s: f64, end_s: f64) {
        self.surges.push(Held {
            vms,
            level: level.clamp(0.0, 1.0),
            start_s,
            end_s,
            active: false,
        });
    }

    /// The first time after `t` at which some VM's utilization stops being linear: a sample,
    /// or a surge starting or ending.
    pub fn next_change(&self, t: f64) -> Option<f64> {
        let last_sample = (self.work.samples.saturating_sub(1)) as f64 * self.interval_s;
        let sample = (t < last_sample).then(|| {
            let next = ((t / self.interval_s).floor() + 1.0) * self.interval_s;
            next.min(last_sample)
        });
        let surge = self
            .surges
            .iter()
            .map(|s| if s.active { s.end_s } else { s.start_s })
            .filter(|&x| x > t)
            .min_by(f64::total_cmp);
        match (sample, surge) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts and ends the surges due at `t`; true when any did.
    pub fn surges_due(&mut self, t: f64) -> bool {
        let mut changed = false;
        for s in &mut self.surges {
            let active = s.start_s <= t && t < s.end_s;
            if active != s.active {
                s.active = active;
                changed = true;
            }
        }
        if changed {
            self.surges.retain(|s| s.active || s.start_s > t);
            self.held.iter_mut().for_each(|h| *h = None);
            for s in self.surges.iter().filter(|s| s.active) {
                for &v in &s.vms {
                    let h = &mut self.held[v];
                    *h = Some(h.map_or(s.level, |l| l.max(s.level)));
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand() -> Demand {
        let work = Workload::new("t".into(), vec!["a".into()], 3, vec![0.0, 0.5, 0.1]);
        Demand::new(work, 300.0)
    }

    #[test]
    fn linear_between_samples_and_flat_after_the_last() {
        let d = demand();
        assert_eq!(d.trace(0, 0.0), 0.0);
        assert!((d.trace(0, 150.0) - 0.25).abs() < 1e-12);
        assert!((d.trace(0, 450.0) - 0.3).abs() < 1e-6);
        assert!((d.trace(0, 9000.0) - 0.1).abs() < 1e-6);
        assert_eq!(d.next_change(10.0), Some(300.0));
        assert_eq!(d.next_change(300.0), Some(600.0));
        assert_eq!(d.next_change(600.0), None);
    }

    #[test]
    fn surges_replace_the_trace_while_they_last() {
        let mut d = demand();
        d.add(vec![0], 0.9, 100.0, 200.0);
        d.add(vec![0], 0.7, 150.0, 400.0);
        assert_eq!(d.next_change(0.0), Some(100.0));
        assert!(d.surges_due(100.0));
        assert_eq!(d.util(0, 120.0), 0.9);
        assert_eq!(d.next_change(100.0), Some(150.0));
        assert!(d.surges_due(150.0));
        assert_eq!(d.util(0, 160.0), 0.9, "the highest level counts");
        assert!(d.surges_due(200.0));
        assert_eq!(d.util(0, 210.0), 0.7);
        assert!(d.surges_due(400.0));
        assert!((d.util(0, 450.0) - 0.3).abs() < 1e-6);
        assert!(!d.surges_due(500.0));
    }
}
