//! What a decision is made from: the cluster as measured at one instant.

use super::model::{HostId, HostType, VmId};
use crate::migration::{LinkProfile, VmProfile};
use serde::{Deserialize, Serialize};

/// Samples of CPU history kept per VM (CloudSim's `PowerVm.HISTORY_LENGTH`).
pub const HISTORY_LEN: usize = 30;

/// A VM's CPU utilization (fraction of its own capacity) at past decision instants, most recent
/// first, at most [`HISTORY_LEN`] samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct History {
    values: [f64; HISTORY_LEN],
    len: usize,
}

impl Default for History {
    fn default() -> Self {
        History {
            values: [0.0; HISTORY_LEN],
            len: 0,
        }
    }
}

impl History {
    /// Records a new most-recent sample, dropping the oldest when full.
    #[inline]
    pub fn push(&mut self, utilization: f64) {
        self.values.copy_within(0..HISTORY_LEN - 1, 1);
        self.values[0] = utilization;
        self.len = (self.len + 1).min(HISTORY_LEN);
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Recorded samples, most recent first.
    pub fn as_slice(&self) -> &[f64] {
        &self.values[..self.len]
    }

    /// All slots, unrecorded ones zero (handy for summing into a host's history).
    #[inline]
    pub fn padded(&self) -> &[f64; HISTORY_LEN] {
        &self.values
    }
}

/// One VM as the decision engine sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmState {
    /// Capacity per virtual core, MIPS.
    pub mips: f64,
    pub pes: u32,
    pub ram_mb: u32,
    /// Where it runs; `None` once it has left the cluster (or was never admitted).
    pub host: Option<HostId>,
    /// CPU it asks for now, MIPS (its utilization times its capacity).
    pub demand_mips: f64,
    pub history: History,
    /// Measured page dirty rate, bytes/s (0 when unknown: the classic benchmark ignores it).
    pub dirty_rate_bps: f64,
    /// Writable working set, bytes.
    pub wss_bytes: u64,
    /// When its last migration finished, seconds; anti-churn rules look at it.
    pub last_migration_s: Option<f64>,
}

impl VmState {
    #[inline]
    pub fn total_mips(&self) -> f64 {
        self.mips * self.pes as f64
    }

    /// Demand on one core, which must fit one physical core.
    #[inline]
    pub fn demand_per_pe(&self) -> f64 {
        self.demand_mips / self.pes.max(1) as f64
    }

    /// What the migration cost model needs to price moving this VM over a link that gives the
    /// migration `link_bytes_per_s` bytes per second (see [`Snapshot::link_bytes_per_s`]). The
    /// one conversion both the policies and the simulator use, so a move is priced and charged
    /// alike. Memory is `ram_mb` MiB.
    pub fn cost_inputs(&self, link_bytes_per_s: f64) -> (VmProfile, LinkProfile) {
        let vm = VmProfile {
            memory_bytes: self.ram_mb as u64 * 1024 * 1024,
            wss_bytes: self.wss_bytes,
            dirty_rate_bps: self.dirty_rate_bps,
        };
        let link = LinkProfile {
            bandwidth_bps: link_bytes_per_s,
        };
        (vm, link)
    }
}

/// One host as measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    /// Index into [`Snapshot::host_types`].
    pub kind: usize,
    /// Resident VMs, in arrival order (selection tie-breaks follow it).
    pub vms: Vec<VmId>,
    /// CPU actually used, MIPS, as measured at the snapshot (0 means the host is switched off).
    pub util_mips: f64,
    /// When it was last switched on, seconds.
    pub on_since_s: Option<f64>,
}

/// The cluster at one instant: everything a policy may look at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub time_s: f64,
    /// Seconds between decisions.
    pub interval_s: f64,
    pub host_types: Vec<HostType>,
    pub hosts: Vec<HostState>,
    pub vms: Vec<VmState>,
    /// Whether placement must respect host memory. The PlanetLab benchmark (CloudSim 3.0.3)
    /// checks memory only when a VM is first admitted: a running VM's requested memory comes from
    /// a null utilization model, so migrations never fail on memory there.
    pub enforce_memory: bool,
}

impl Snapshot {
    #[inline]
    pub fn host_type(&self, h: HostId) -> &HostType {
        &self.host_types[self.hosts[h].kind]
    }

    /// Measured utilization of a host, 0..=1 (CloudSim rounds 1..1.01 down to 1).
    #[inline]
    pub fn host_utilization(&self, h: HostId) -> f64 {
        let u = self.hosts[h].util_mips / self.host_type(h).total_mips();
        if u > 1.0 && u < 1.01 {
            1.0
        } else {
            u
        }
    }

    /// Measured power draw of a host, watts.
    pub fn host_power(&self, h: HostId) -> f64 {
        self.host_type(h).power.power(self.host_utilization(h))
    }

    /// Bytes per second a migration from `from` to `to` gets: the slower end's
    /// [`HostType::migration_bytes_per_s`].
    pub fn link_bytes_per_s(&self, from: HostId, to: HostId) -> f64 {
        self.host_type(from)
            .migration_bytes_per_s()
            .min(self.host_type(to).migration_bytes_per_s())
    }

    /// Whether a host is switched off: CloudSim's rule is "measured utilization is zero".
    #[inline]
    pub fn is_off(&self, h: HostId) -> bool {
        self.hosts[h].util_mips == 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_most_recent_first_and_caps() {
        let mut h = History::default();
        for i in 0..35 {
            h.push(i as f64);
        }
        assert_eq!(h.len(), HISTORY_LEN);
        assert_eq!(h.as_slice()[0], 34.0);
        assert_eq!(h.as_slice()[HISTORY_LEN - 1], 5.0);
    }

    #[test]
    fn cost_inputs_use_mib_memory_and_the_slower_link_end() {
        let mut fast = HostType::hp_ml110_g5();
        let mut slow = fast.clone();
        fast.bw_mbps = 10_000.0;
        slow.bw_mbps = 100.0;
        let host = |kind| HostState {
            kind,
            vms: vec![],
            util_mips: 0.0,
            on_since_s: None,
        };
        let snap = Snapshot {
            time_s: 0.0,
            interval_s: 300.0,
            host_types: vec![fast, slow],
            hosts: vec![host(0), host(1)],
            vms: vec![],
            enforce_memory: false,
        };
        // 100 Mbit/s NIC, half of it for migrations: 6.25e6 bytes/s, whichever way.
        assert_eq!(snap.link_bytes_per_s(0, 1), 6.25e6);
        assert_eq!(snap.link_bytes_per_s(1, 0), 6.25e6);
        assert_eq!(snap.link_bytes_per_s(0, 0), 625e6);
        let vm = VmState {
            mips: 500.0,
            pes: 1,
            ram_mb: 613,
            host: Some(0),
            demand_mips: 250.0,
            history: History::default(),
            dirty_rate_bps: 1e6,
            wss_bytes: 4096,
            last_migration_s: None,
        };
        let (profile, link) = vm.cost_inputs(6.25e6);
        assert_eq!(profile.memory_bytes, 613 << 20);
        assert_eq!((profile.wss_bytes, profile.dirty_rate_bps), (4096, 1e6));
        assert_eq!(link.bandwidth_bps, 6.25e6);
    }
}
