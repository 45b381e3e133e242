//! What the group choice is told: the VMs leaving one host, their traffic, and the NICs of the
//! source and the destinations; and the one check of it all ([`Group::check`]).

use super::GroupError;
use crate::migration::cost::VmProfile;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// An application's traffic as its host's NIC counts it (the VM's tap), bytes/s.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Traffic {
    /// Bytes/s arriving for the VM (the host's receive side).
    pub rx_bps: f64,
    /// Bytes/s the VM sends (the host's transmit side).
    pub tx_bps: f64,
}

impl Traffic {
    /// Both directions, bytes/s: the application's throughput, against which its loss is a
    /// share.
    pub fn total_bps(&self) -> f64 {
        self.rx_bps + self.tx_bps
    }
}

/// One VM of the group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeavingVm {
    pub name: String,
    /// Memory, working set and dirty rate, as the single-VM cost model takes them.
    pub profile: VmProfile,
    /// Bytes a migration of it really moves in one pass over its memory, when measured: its
    /// non-zero pages (QEMU sends a zero page as a header of a few bytes), e.g. what its last
    /// migration moved. None: all of `profile.memory_bytes`. Above the memory it counts as
    /// the memory. Measured here: a 128 MiB guest (134 MB) moved about 97 MB, so taking all of
    /// memory over-predicted evacuations by 22-63% (BENCHMARKS.md, issue 11 part 4).
    #[serde(default)]
    pub moved_bytes: Option<u64>,
    /// Its application's traffic before the migrations start.
    pub traffic: Traffic,
    /// The host it goes to (one of [`Group::destinations`]).
    pub destination: String,
}

impl LeavingVm {
    /// The profile the model forecasts with: memory is the bytes one pass really moves
    /// ([`LeavingVm::moved_bytes`]), and the working set no larger than that.
    pub fn moving_profile(&self) -> VmProfile {
        let p = self.profile;
        let memory = self
            .moved_bytes
            .map_or(p.memory_bytes, |m| m.min(p.memory_bytes));
        VmProfile {
            memory_bytes: memory,
            wss_bytes: p.wss_bytes.min(memory),
            dirty_rate_bps: p.dirty_rate_bps,
        }
    }
}

/// One host's NIC: two independent directions (full duplex), and the traffic of the VMs on it
/// that are not in the group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostNic {
    pub host: String,
    /// Transmit capacity, bytes/s (what leaves the host: its VMs' outbound traffic and, at the
    /// source, every migration).
    pub tx_capacity_bps: f64,
    /// Receive capacity, bytes/s (what arrives: its VMs' inbound traffic and, at a
    /// destination, the migrations to it).
    pub rx_capacity_bps: f64,
    /// Traffic of each VM that stays on (or already runs on) this host; it competes with the
    /// migrations like the group's own.
    pub residents: Vec<Traffic>,
}

/// The VMs leaving one host together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// The host they leave.
    pub source: HostNic,
    /// The hosts they go to.
    pub destinations: Vec<HostNic>,
    pub vms: Vec<LeavingVm>,
}

/// The group's hosts as the model indexes them: 0 is the source, `i + 1` is destination `i`.
/// Link `2h` is host `h`'s transmit side, `2h + 1` its receive side.
pub(super) fn tx_link(host: usize) -> usize {
    2 * host
}

/// See [`tx_link`].
pub(super) fn rx_link(host: usize) -> usize {
    2 * host + 1
}

impl Group {
    /// Every host, source first.
    pub(super) fn hosts(&self) -> impl Iterator<Item = &HostNic> {
        std::iter::once(&self.source).chain(&self.destinations)
    }

    /// Checks everything once, so that the model never meets a NaN, a negative rate or a
    /// migration with nowhere to go; returns each VM's destination as a host index.
    pub(super) fn check(&self) -> Result<Vec<usize>, GroupError> {
        if self.vms.is_empty() {
            return Err(GroupError::Empty);
        }
        self.check_names()?;
        for nic in self.hosts() {
            check_nic(nic)?;
        }
        let mut dest = Vec::with_capacity(self.vms.len());
        for vm in &self.vms {
            check_vm(vm)?;
            dest.push(self.destination_of(vm)?);
        }
        if self.source.tx_capacity_bps <= 0.0 {
            return Err(no_capacity(&self.source.host, "transmit"));
        }
        for &h in &dest {
            let nic = &self.destinations[h - 1];
            if nic.rx_capacity_bps <= 0.0 {
                return Err(no_capacity(&nic.host, "receive"));
            }
        }
        Ok(dest)
    }

    fn check_names(&self) -> Result<(), GroupError> {
        let mut vms = HashSet::new();
        if let Some(dup) = self.vms.iter().find(|v| !vms.insert(v.name.as_str())) {
            return Err(GroupError::DuplicateVm(dup.name.clone()));
        }
        let mut hosts = HashSet::new();
        match self.hosts().find(|h| !hosts.insert(h.host.as_str())) {
            Some(dup) => Err(GroupError::DuplicateHost(dup.host.clone())),
            None => Ok(()),
        }
    }

    fn destination_of(&self, vm: &LeavingVm) -> Result<usize, GroupError> {
        if vm.destination == self.source.host {
            return Err(GroupError::DestinationIsSource {
                vm: vm.name.clone(),
                host: vm.destination.clone(),
            });
        }
        self.destinations
            .iter()
            .position(|d| d.host == vm.destination)
            .map(|i| i + 1)
            .ok_or_else(|| GroupError::UnknownDestination {
                vm: vm.name.clone(),
                host: vm.destination.clone(),
            })
    }
}

fn no_capacity(host: &str, side: &'static str) -> GroupError {
    GroupError::NoCapacity {
        host: host.to_string(),
        side,
    }
}

/// A rate or size from outside: finite and at least 0.
fn number(what: impl FnOnce() -> String, value: f64) -> Result<(), GroupError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(GroupError::BadNumber {
            what: what(),
            value,
        })
    }
}

fn check_traffic(owner: &str, t: &Traffic) -> Result<(), GroupError> {
    number(|| format!("{owner}.rx_bps"), t.rx_bps)?;
    number(|| format!("{owner}.tx_bps"), t.tx_bps)
}

fn check_nic(nic: &HostNic) -> Result<(), GroupError> {
    let h = &nic.host;
    number(|| format!("{h}.tx_capacity_bps"), nic.tx_capacity_bps)?;
    number(|| format!("{h}.rx_capacity_bps"), nic.rx_capacity_bps)?;
    for (i, r) in nic.residents.iter().enumerate() {
        check_traffic(&format!("{h}.residents[{i}]"), r)?;
    }
    Ok(())
}

fn check_vm(vm: &LeavingVm) -> Result<(), GroupError> {
    number(
        || format!("{}.dirty_rate_bps", vm.name),
        vm.profile.dirty_rate_bps,
    )?;
    check_traffic(&vm.name, &vm.traffic)
}
