//! Drover's best-fit search over the running hosts without reading every one of them.
//!
//! Drover sends a VM to the running host it would leave fullest by forecast, `(forecast of the
//! host + forecast of the VM) / capacity`, among those that take it under `target`; ties go to
//! the lowest host number. Reading every running host for every VM placed is quadratic in the
//! running hosts per round (a 100,000-VM day spent most of its time there). Here the running
//! hosts of each type are kept ordered by forecast, and a type is read from the fullest host
//! that could still take the VM downwards, only while a host could still equal the best found:
//! with one capacity per type, `(x + v) / capacity` never decreases with `x` (floating-point
//! addition and division round monotonically), so once a host's value falls below the best,
//! every host after it in the order does too. Hosts read are tested exactly as the full scan
//! tests them, so the choice is the same (the unit tests compare the two on random clusters).

use super::model::HostId;
use super::placer::order_key;
use std::collections::BTreeSet;

/// How far past `target` (MIPS) a host's forecast may sit and still be read: the exact test
/// decides; this only keeps rounding from hiding a host that passes it.
const SLACK_MIPS: f64 = 1e-6;

/// The running hosts of each type, ordered by forecast demand.
#[derive(Debug, Clone)]
pub(super) struct FitIndex {
    by_type: Vec<BTreeSet<(u64, HostId)>>,
    /// Each host's key while it is indexed.
    key: Vec<Option<u64>>,
}

impl FitIndex {
    /// The index of `hosts`, given as (type, forecast MIPS, running) per host number; only
    /// running hosts are indexed. Built in bulk: it is rebuilt every round.
    pub fn new(
        host_types: usize,
        hosts: impl ExactSizeIterator<Item = (usize, f64, bool)>,
    ) -> Self {
        let mut key = vec![None; hosts.len()];
        let mut lists: Vec<Vec<(u64, HostId)>> = vec![Vec::new(); host_types];
        for (h, (kind, pred, running)) in hosts.enumerate() {
            if running {
                let k = order_key(pred);
                lists[kind].push((k, h));
                key[h] = Some(k);
            }
        }
        FitIndex {
            by_type: lists.into_iter().map(BTreeSet::from_iter).collect(),
            key,
        }
    }

    /// Indexes host `h` of type `kind` at forecast `pred` (MIPS), or drops it when `running`
    /// is false.
    pub fn set(&mut self, h: HostId, kind: usize, pred: f64, running: bool) {
        if let Some(k) = self.key[h].take() {
            self.by_type[kind].remove(&(k, h));
        }
        if running {
            let k = order_key(pred);
            self.by_type[kind].insert((k, h));
            self.key[h] = Some(k);
        }
    }

    /// The indexed hosts of type `kind` whose forecast is at most `max_pred` (plus the slack),
    /// fullest first.
    pub fn fullest_below(&self, kind: usize, max_pred: f64) -> impl Iterator<Item = HostId> + '_ {
        let upper = order_key(max_pred + SLACK_MIPS.max(max_pred.abs() * 1e-12));
        self.by_type[kind]
            .range(..=(upper, HostId::MAX))
            .rev()
            .map(|&(_, h)| h)
    }
}
