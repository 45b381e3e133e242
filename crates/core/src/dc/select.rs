//! VM selection: which VM leaves an overloaded host next.
//!
//! - **MMT** (minimum migration time): the VM with the least memory (migration time is memory over
//!   bandwidth, and the bandwidth is the host's); ties go to the earliest arrival.
//! - **MU** (minimum utilization): the VM using the least CPU relative to its size.
//! - **MC** (maximum correlation): the VM whose utilization history is best explained (highest R²
//!   of a multiple regression) by the others', i.e. the one most likely to peak with them. Falls
//!   back to MMT when the histories are too short or degenerate, as CloudSim does.
//! - **RS** (random selection), seeded.

use super::cluster::Cluster;
use super::model::{HostId, VmId};
use super::rng::SplitMix64;
use super::stats;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selector {
    Mmt,
    Mu,
    Mc,
    Rs,
}

impl Selector {
    pub fn name(self) -> &'static str {
        match self {
            Selector::Mmt => "mmt",
            Selector::Mu => "mu",
            Selector::Mc => "mc",
            Selector::Rs => "rs",
        }
    }

    /// The next VM to take off `h` in the working allocation, or `None` if it has none.
    pub fn select(self, c: &Cluster, h: HostId, rng: &mut SplitMix64) -> Option<VmId> {
        let vms = &c.host(h).vms;
        if vms.is_empty() {
            return None;
        }
        match self {
            Selector::Mmt => min_by_key(vms, |v| c.vm(v).ram_mb as f64),
            Selector::Mu => min_by_key(vms, |v| c.vm(v).demand_mips / c.vm(v).total_mips()),
            Selector::Rs => Some(vms[rng.below(vms.len())]),
            Selector::Mc => {
                max_correlation(c, vms).or_else(|| min_by_key(vms, |v| c.vm(v).ram_mb as f64))
            }
        }
    }
}

/// First VM with the strictly smallest key.
fn min_by_key(vms: &[VmId], key: impl Fn(VmId) -> f64) -> Option<VmId> {
    let mut best: Option<(f64, VmId)> = None;
    for &v in vms {
        let k = key(v);
        if best.is_none_or(|(bk, _)| k < bk) {
            best = Some((k, v));
        }
    }
    best.map(|(_, v)| v)
}

/// MC's pick, or `None` when any regression cannot be computed (CloudSim then uses MMT).
fn max_correlation(c: &Cluster, vms: &[VmId]) -> Option<VmId> {
    let m = vms
        .iter()
        .map(|&v| c.vm(v).history.len())
        .min()
        .unwrap_or(0);
    let series: Vec<&[f64]> = vms
        .iter()
        .map(|&v| &c.vm(v).history.as_slice()[..m])
        .collect();
    let mut best = (f64::from_bits(1), 0usize); // Java's Double.MIN_VALUE: R² <= 0 never wins
    for i in 0..series.len() {
        let others: Vec<&[f64]> = series
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| *s)
            .collect();
        let r2 = stats::r_squared(&others, series[i]).ok()?;
        if r2 > best.0 {
            best = (r2, i);
        }
    }
    Some(vms[best.1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dc::cluster::tests::snapshot;
    use crate::dc::snapshot::History;

    #[test]
    fn mmt_takes_least_memory_first_arrival_on_ties() {
        let s = snapshot(
            &[1],
            &[
                (Some(0), 2000.0, 0.5, 1740),
                (Some(0), 2500.0, 0.5, 870),
                (Some(0), 2500.0, 0.9, 870),
            ],
            1,
        );
        let c = Cluster::new(&s);
        assert_eq!(
            Selector::Mmt.select(&c, 0, &mut SplitMix64::new(1)),
            Some(1)
        );
    }

    #[test]
    fn mu_takes_least_relative_utilization() {
        let s = snapshot(
            &[1],
            &[(Some(0), 2000.0, 0.5, 1740), (Some(0), 500.0, 0.2, 613)],
            1,
        );
        let c = Cluster::new(&s);
        assert_eq!(Selector::Mu.select(&c, 0, &mut SplitMix64::new(1)), Some(1));
    }

    #[test]
    fn rs_is_seeded_and_empty_host_has_nothing() {
        let s = snapshot(&[1, 1], &[(Some(0), 500.0, 0.2, 613); 4], 1);
        let c = Cluster::new(&s);
        let a = Selector::Rs.select(&c, 0, &mut SplitMix64::new(9));
        assert_eq!(a, Selector::Rs.select(&c, 0, &mut SplitMix64::new(9)));
        assert!(a.is_some_and(|v| v < 4));
        assert_eq!(Selector::Rs.select(&c, 1, &mut SplitMix64::new(9)), None);
    }

    #[test]
    fn mc_picks_a_vm_the_others_explain() {
        // VM 0 is noise; VM 2 tracks VM 1 (2a + 0.1 plus a little jitter), so VMs 1 and 2 explain
        // each other (R² ~ 1) and one of them goes, although MMT would take VM 0 (least memory).
        let a = [0.1, 0.5, 0.2, 0.9, 0.3, 0.7, 0.4, 0.8];
        let jitter = [0.01, -0.02, 0.0, 0.015, -0.01, 0.02, -0.005, 0.0];
        let noise = [0.3, 0.1, 0.4, 0.2, 0.6, 0.1, 0.5, 0.3];
        let tracked: Vec<f64> = a
            .iter()
            .zip(&jitter)
            .map(|(x, j)| 2.0 * x + 0.1 + j)
            .collect();
        let mut s = snapshot(
            &[1],
            &[
                (Some(0), 1000.0, 0.0, 613),
                (Some(0), 1000.0, 0.0, 1740),
                (Some(0), 1000.0, 0.0, 1740),
            ],
            0,
        );
        for (i, series) in [noise.to_vec(), a.to_vec(), tracked].iter().enumerate() {
            let mut h = History::default();
            for v in series.iter().rev() {
                h.push(*v);
            }
            s.vms[i].history = h;
        }
        let c = Cluster::new(&s);
        let picked = Selector::Mc.select(&c, 0, &mut SplitMix64::new(1));
        assert!(matches!(picked, Some(1) | Some(2)), "{picked:?}");
        assert_eq!(
            Selector::Mmt.select(&c, 0, &mut SplitMix64::new(1)),
            Some(0)
        );
    }

    #[test]
    fn mc_falls_back_to_mmt_on_short_history() {
        let s = snapshot(
            &[1],
            &[(Some(0), 1000.0, 0.3, 1740), (Some(0), 1000.0, 0.4, 613)],
            1,
        );
        let c = Cluster::new(&s);
        assert_eq!(Selector::Mc.select(&c, 0, &mut SplitMix64::new(1)), Some(1));
    }
}
