//! What a live simulation measures, with the benchmark simulator's definitions carried over to
//! cores and seconds (see [`crate::metrics`]):
//!
//! - **energy**: each host's draw (idle to peak watts, linear in load clamped to 1; the idle
//!   draw while waking, which stands for its boot; nothing in standby) integrated over time.
//!   Between events a host's demand is linear in time, so the integral is exact.
//! - **SLATAH**: the share of active host time during which a host's demand was above its
//!   capacity (it was at 100% and its VMs got less than they asked for).
//! - **PDM**: work lost to migrations over all work requested: each migration's lost work (the
//!   cost model's predicted degradation over its window, in seconds of the VM's full
//!   throughput) times the VM's demand when it started, in core-seconds, over every VM's demand
//!   integrated over time. A cancelled migration is charged for the share of its time it ran.
//! - **SLAV** = SLATAH x PDM.
//! - migrations by technique and how they ended; migration requests refused; bytes sent.
//! - **hosts active over time**: the count of active hosts each time it changes, and its mean.

use drover_core::control::HostPower;
use drover_core::migration::Technique;
use serde::Serialize;
use std::collections::BTreeMap;

/// How a migration ended, for the tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ending {
    /// The VM runs on the destination.
    Completed,
    /// A pre-copy that did not converge by its deadline: the VM stays on the source.
    Failed,
    /// Cancelled before any switchover: the VM stays on the source.
    Cancelled,
}

/// Migrations of one technique, by how they ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Ended with the VM on the destination.
    pub completed: u64,
    /// Pre-copies cancelled at their deadline, the VM still on the source.
    pub failed: u64,
    /// Cancelled at the manager's request before any switchover.
    pub cancelled: u64,
}

/// Running totals of a live simulation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Measures {
    /// Model time covered, s.
    pub elapsed_s: f64,
    /// Energy drawn by all hosts, Wh.
    pub energy_wh: f64,
    /// Host-seconds spent active.
    pub active_host_s: f64,
    /// Host-seconds spent active with demand above capacity.
    pub overloaded_host_s: f64,
    /// CPU the VMs asked for, core-seconds.
    pub requested_core_s: f64,
    /// CPU work lost to migrations, core-seconds.
    pub migration_lost_core_s: f64,
    /// Ended migrations per technique (the concrete one that ran).
    pub migrations: BTreeMap<Technique, Tally>,
    /// Migrations still running.
    pub in_flight: u64,
    /// Migration requests refused.
    pub refused: u64,
    /// Bytes sent by migrations that ended.
    pub transferred_bytes: f64,
    /// (time s, hosts active from then on), one entry per change, the first at time 0.
    pub active_hosts: Vec<(f64, usize)>,
}

impl Measures {
    /// SLATAH: share of active host time at 100% (0..=1).
    pub fn slatah(&self) -> f64 {
        ratio(self.overloaded_host_s, self.active_host_s)
    }

    /// PDM: share of requested CPU lost to migrations (0..=1).
    pub fn pdm(&self) -> f64 {
        ratio(self.migration_lost_core_s, self.requested_core_s)
    }

    /// SLAV = SLATAH x PDM.
    pub fn slav(&self) -> f64 {
        self.slatah() * self.pdm()
    }

    /// Mean number of active hosts over the time covered.
    pub fn mean_active_hosts(&self) -> f64 {
        ratio(self.active_host_s, self.elapsed_s)
    }

    /// Ended migrations of every technique.
    pub fn ended(&self) -> Tally {
        self.migrations
            .values()
            .fold(Tally::default(), |a, t| Tally {
                completed: a.completed + t.completed,
                failed: a.failed + t.failed,
                cancelled: a.cancelled + t.cancelled,
            })
    }

    pub(super) fn count(&mut self, technique: Technique, how: Ending) {
        let t = self.migrations.entry(technique).or_default();
        match how {
            Ending::Completed => t.completed += 1,
            Ending::Failed => t.failed += 1,
            Ending::Cancelled => t.cancelled += 1,
        }
    }

    /// Notes the number of active hosts at `t` if it changed.
    pub(super) fn active_now(&mut self, t: f64, active: usize) {
        match self.active_hosts.last_mut() {
            Some((_, n)) if *n == active => {}
            Some((at, n)) if *at == t => *n = active,
            _ => self.active_hosts.push((t, active)),
        }
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// One host over a stretch `dt` s long in which its demand went linearly from `d0` to `d1`
/// cores.
pub(super) struct Stretch {
    pub dt: f64,
    pub d0: f64,
    pub d1: f64,
    pub cpus: f64,
}

impl Stretch {
    /// Seconds of the stretch with demand above capacity.
    pub fn overloaded_s(&self) -> f64 {
        let (c, d0, d1) = (self.cpus, self.d0, self.d1);
        match (d0 > c, d1 > c) {
            (true, true) => self.dt,
            (false, false) => 0.0,
            // One crossing: the line meets the capacity at `cross` s into the stretch.
            (over_first, _) => {
                let cross = (c - d0) / (d1 - d0) * self.dt;
                if over_first {
                    cross
                } else {
                    self.dt - cross
                }
            }
        }
    }

    /// Integral of the load clamped to 1 (demand over capacity), s.
    fn clamped_load_s(&self) -> f64 {
        let (l0, l1) = (self.d0 / self.cpus, self.d1 / self.cpus);
        match (l0 >= 1.0, l1 >= 1.0) {
            (true, true) => self.dt,
            (false, false) => (l0 + l1) / 2.0 * self.dt,
            (first_full, _) => {
                let cross = (1.0 - l0) / (l1 - l0) * self.dt;
                let (below_s, below_from) = if first_full {
                    (self.dt - cross, l1)
                } else {
                    (cross, l0)
                };
                (below_from + 1.0) / 2.0 * below_s + (self.dt - below_s)
            }
        }
    }

    /// Energy an active host draws over the stretch, Wh.
    pub fn energy_wh(&self, power: &HostPower) -> f64 {
        let joules = power.idle_w * self.dt + (power.peak_w - power.idle_w) * self.clamped_load_s();
        joules / 3600.0
    }

    /// Core-seconds its VMs asked for.
    pub fn requested_core_s(&self) -> f64 {
        (self.d0 + self.d1) / 2.0 * self.dt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: HostPower = HostPower {
        idle_w: 100.0,
        peak_w: 200.0,
    };

    fn s(d0: f64, d1: f64) -> Stretch {
        Stretch {
            dt: 100.0,
            d0,
            d1,
            cpus: 4.0,
        }
    }

    #[test]
    fn overload_time_is_exact_for_a_line() {
        assert_eq!(s(1.0, 2.0).overloaded_s(), 0.0);
        assert_eq!(s(5.0, 6.0).overloaded_s(), 100.0);
        assert!((s(2.0, 6.0).overloaded_s() - 50.0).abs() < 1e-9);
        assert!((s(8.0, 0.0).overloaded_s() - 50.0).abs() < 1e-9);
    }

    #[test]
    fn energy_is_exact_with_the_load_clamped_at_one() {
        // Half load throughout: 150 W for 100 s.
        assert!((s(2.0, 2.0).energy_wh(&P) - 150.0 * 100.0 / 3600.0).abs() < 1e-9);
        // 0 -> 8 cores on 4: load 0..1 over the first 50 s (mean 0.5), then 1.
        let wh = s(0.0, 8.0).energy_wh(&P);
        let expected = (100.0 * 100.0 + 100.0 * (0.5 * 50.0 + 50.0)) / 3600.0;
        assert!((wh - expected).abs() < 1e-9, "{wh} vs {expected}");
        assert_eq!(s(0.0, 8.0).requested_core_s(), 400.0);
    }

    #[test]
    fn active_hosts_keep_only_changes() {
        let mut m = Measures::default();
        m.active_now(0.0, 3);
        m.active_now(5.0, 3);
        m.active_now(7.0, 2);
        m.active_now(7.0, 1);
        assert_eq!(m.active_hosts, vec![(0.0, 3), (7.0, 1)]);
    }
}
