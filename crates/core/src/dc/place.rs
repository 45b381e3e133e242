//! Placement: power-aware best-fit decreasing (PABFD, Beloglazov & Buyya 2012), as CloudSim
//! 3.0.3 runs it.
//!
//! VMs are placed in decreasing order of CPU demand; each goes to the host whose power draw grows
//! the least, among hosts that are not excluded, have room (a core big enough, enough free MIPS)
//! and would not be overloaded afterwards (that test is skipped for hosts using no CPU). The
//! increase is measured from the host's *measured* power, so a host that already received VMs this
//! round looks more expensive, and a switched-off host costs only its dynamic power (CloudSim does
//! not charge for switching a host on). Ties go to the lowest-numbered host.
//!
//! The same module admits new VMs: CloudSim places a VM being created with its full capacity as
//! demand (its workload has not started yet) and checks memory and bandwidth only then.

use super::cluster::{Cluster, Load};
use super::detect::Detector;
use super::model::{HostId, HostType, VmId, VmType};
use super::snapshot::HISTORY_LEN;
use std::collections::{BTreeMap, BTreeSet};

/// Hosts a placement may not use.
#[derive(Debug, Clone)]
pub struct Exclusions {
    pub hosts: Vec<bool>,
    /// Also skip every switched-off (empty, untouched) host without looking at it.
    pub off_hosts: bool,
}

impl Exclusions {
    pub fn none(n: usize) -> Exclusions {
        Exclusions {
            hosts: vec![false; n],
            off_hosts: false,
        }
    }
}

/// PABFD's pick for one VM, or `None` if no host qualifies.
pub fn find_host(c: &Cluster, det: &Detector, vm: VmId, ex: &Exclusions) -> Option<HostId> {
    let demand = c.vm(vm).demand_mips;
    let mut best: Option<(f64, HostId)> = None;
    let mut buf = [0.0; HISTORY_LEN];
    for h in c.candidates(|h| ex.hosts[h], !ex.off_hosts) {
        if !c.fits(h, vm) {
            continue;
        }
        let t = c.host_type(h);
        let after = ((c.host(h).alloc_mips + demand) / t.total_mips()).min(1.0);
        let diff = t.power.power(after) - c.snap.host_power(h);
        // Only a strictly better host (or an equal one with a lower number) can win, so the
        // costlier overload test runs only for those.
        if best.is_some_and(|(bd, bh)| diff > bd || (diff == bd && h > bh)) {
            continue;
        }
        if c.host(h).alloc_mips != 0.0 && det.is_overloaded(&c.load_with(h, vm, &mut buf)) {
            continue;
        }
        best = Some((diff, h));
    }
    best.map(|(_, h)| h)
}

/// Sorts VMs by decreasing CPU demand, keeping the given order among equals.
pub fn sort_decreasing(c: &Cluster, vms: &mut [VmId]) {
    vms.sort_by(|&a, &b| c.vm(b).demand_mips.total_cmp(&c.vm(a).demand_mips));
}

/// How new VMs are admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// PABFD with full capacity as demand (the migration policies' `findHostForVm`).
    PowerAware,
    /// First host with room (CloudSim's `PowerVmAllocationPolicySimple`, used by DVFS and NPA).
    FirstFit,
    /// Best fit by remaining CPU: the fullest host that still fits (Drover: fewer hosts to
    /// consolidate later).
    Packed,
}

/// What admission tracks per host: reserved CPU, memory and bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Eq, Ord, Hash)]
struct AdmitKey {
    kind: usize,
    /// Reserved MIPS, in thousandths (exact for the integral benchmark sizes).
    milli_mips: u64,
    ram_mb: u64,
    milli_bw: u64,
}

fn fits_admission(t: &HostType, k: &AdmitKey, vm: &VmType) -> bool {
    let free_mips = t.total_mips() - k.milli_mips as f64 / 1000.0;
    t.mips_per_pe >= vm.mips
        && free_mips >= vm.total_mips()
        && k.ram_mb + vm.ram_mb as u64 <= t.ram_mb as u64
        && k.milli_bw as f64 / 1000.0 + vm.bw_mbps <= t.bw_mbps
}

/// Admits `vms` in order onto hosts of the given kinds; returns each VM's host (`None`: no room,
/// the VM is not created). Hosts with identical reservations are interchangeable, so each VM is
/// compared against one representative per distinct reservation: fast at 100,000 VMs.
pub fn admit(
    how: Admission,
    det: &Detector,
    host_types: &[HostType],
    host_kinds: &[usize],
    vms: &[VmType],
) -> Vec<Option<HostId>> {
    let mut keys: Vec<AdmitKey> = host_kinds
        .iter()
        .map(|&kind| AdmitKey {
            kind,
            milli_mips: 0,
            ram_mb: 0,
            milli_bw: 0,
        })
        .collect();
    let mut classes: BTreeMap<AdmitKey, BTreeSet<HostId>> = BTreeMap::new();
    for (h, k) in keys.iter().enumerate() {
        classes.entry(*k).or_default().insert(h);
    }
    let mut cursor: BTreeMap<(u64, u64, u32), HostId> = BTreeMap::new();
    let mut out = Vec::with_capacity(vms.len());
    for vm in vms {
        let chosen = match how {
            Admission::FirstFit => first_fit(&keys, host_types, vm, &mut cursor),
            _ => best_class(how, det, host_types, &classes, vm),
        };
        if let Some(h) = chosen {
            let old = keys[h];
            let new = AdmitKey {
                milli_mips: old.milli_mips + (vm.total_mips() * 1000.0).round() as u64,
                ram_mb: old.ram_mb + vm.ram_mb as u64,
                milli_bw: old.milli_bw + (vm.bw_mbps * 1000.0).round() as u64,
                ..old
            };
            if let Some(set) = classes.get_mut(&old) {
                set.remove(&h);
                if set.is_empty() {
                    classes.remove(&old);
                }
            }
            classes.entry(new).or_default().insert(h);
            keys[h] = new;
        }
        out.push(chosen);
    }
    out
}

fn first_fit(
    keys: &[AdmitKey],
    types: &[HostType],
    vm: &VmType,
    cursor: &mut BTreeMap<(u64, u64, u32), HostId>,
) -> Option<HostId> {
    // Hosts only fill up, so a host that could not take this VM shape never will: resume there.
    let shape = (
        (vm.total_mips() * 1000.0) as u64,
        (vm.bw_mbps * 1000.0) as u64,
        vm.ram_mb,
    );
    let start = cursor.get(&shape).copied().unwrap_or(0);
    let found = (start..keys.len()).find(|&h| fits_admission(&types[keys[h].kind], &keys[h], vm));
    cursor.insert(shape, found.unwrap_or(keys.len()));
    found
}

fn best_class(
    how: Admission,
    det: &Detector,
    types: &[HostType],
    classes: &BTreeMap<AdmitKey, BTreeSet<HostId>>,
    vm: &VmType,
) -> Option<HostId> {
    let zero = [0.0; HISTORY_LEN];
    let mut best: Option<(f64, HostId)> = None;
    for (k, hosts) in classes {
        let t = &types[k.kind];
        let Some(&h) = hosts.first() else { continue };
        if !fits_admission(t, k, vm) {
            continue;
        }
        let reserved = k.milli_mips as f64 / 1000.0;
        // Before their workloads start, earlier VMs ask for nothing: the detector sees the
        // newcomer alone, with no history (CloudSim's admission-time overload test).
        let load = Load {
            req_mips: vm.total_mips(),
            total_mips: t.total_mips(),
            hist: &zero,
            max_migration_s: t.migration_time_s(vm.ram_mb),
        };
        if reserved != 0.0 && det.is_overloaded(&load) {
            continue;
        }
        let score = match how {
            Admission::Packed => t.total_mips() - reserved - vm.total_mips(),
            _ => t.power.power((reserved + vm.total_mips()) / t.total_mips()) - t.power.idle(),
        };
        if best.is_none_or(|(bs, bh)| score < bs || (score == bs && h < bh)) {
            best = Some((score, h));
        }
    }
    best.map(|(_, h)| h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dc::cluster::tests::snapshot;
    use crate::dc::detect::Overload;

    fn thr(t: f64) -> Detector {
        Detector::new(Overload::Thr { threshold: t }, 300.0)
    }

    #[test]
    fn pabfd_picks_least_power_increase_by_hand() {
        // Host 0 (G4, 3720 MIPS) at 1000 MIPS: 26.9% -> adding 500 -> 40.3%.
        //   P(0.2688) = 92.6 + 3.4*0.688 = 94.94; P(0.4032) = 99.5 + 2.5*0.032 = 99.58: +4.64 W
        // Host 1 (G5, 5320 MIPS) at 1000 MIPS: 18.8% -> 28.2%.
        //   P(0.1880) = 97 + 4*0.880 = 100.52; P(0.2820) = 101 + 4*0.820 = 104.28: +3.76 W
        // Host 2 (G5, off): 0 -> 9.4%: 93.7 + 3.3*0.940 - 93.7 = +3.10 W  <- cheapest
        let s = snapshot(
            &[0, 1, 1],
            &[
                (Some(0), 2000.0, 0.5, 870),
                (Some(1), 2000.0, 0.5, 870),
                (None, 1000.0, 0.5, 613),
            ],
            1,
        );
        let c = Cluster::new(&s);
        assert_eq!(find_host(&c, &thr(0.8), 2, &Exclusions::none(3)), Some(2));
        // Without off hosts, the G5 wins over the G4.
        let ex = Exclusions {
            hosts: vec![false; 3],
            off_hosts: true,
        };
        assert_eq!(find_host(&c, &thr(0.8), 2, &ex), Some(1));
    }

    #[test]
    fn pabfd_skips_hosts_that_would_overload_or_lack_room() {
        // Host 0 G5 at 4000/5320 (75%); a 500-MIPS VM makes 84.6% > 80%: rejected by THR.
        // Host 1 G4 at 3600/3720: no room. Host 2 G4 at 1800 MIPS: 61.8% after: accepted, though
        // its power grows more (+4.77 W) than host 0's would (+3.76 W) if 90% were allowed.
        let s = snapshot(
            &[1, 0, 0],
            &[
                (Some(0), 2000.0, 1.0, 870),
                (Some(0), 2000.0, 1.0, 870),
                (Some(1), 1800.0, 1.0, 870),
                (Some(1), 1800.0, 1.0, 870),
                (Some(2), 1800.0, 1.0, 870),
                (None, 1000.0, 0.5, 613),
            ],
            1,
        );
        let c = Cluster::new(&s);
        assert_eq!(find_host(&c, &thr(0.8), 5, &Exclusions::none(3)), Some(2));
        assert_eq!(find_host(&c, &thr(0.9), 5, &Exclusions::none(3)), Some(0));
        let mut ex = Exclusions::none(3);
        ex.hosts[2] = true;
        assert_eq!(find_host(&c, &thr(0.8), 5, &ex), None);
    }

    #[test]
    fn a_core_must_fit_the_vm_demand() {
        // A 2500-MIPS VM at 80% (2000 MIPS) cannot run on a G4 core (1860 MIPS).
        let s = snapshot(&[0], &[(None, 2500.0, 0.8, 870)], 1);
        let c = Cluster::new(&s);
        assert_eq!(find_host(&c, &thr(0.8), 0, &Exclusions::none(1)), None);
    }

    #[test]
    fn power_aware_admission_spreads_first_fit_packs() {
        let types = vec![HostType::hp_ml110_g4(), HostType::hp_ml110_g5()];
        let vm_types = VmType::benchmark_types();
        let vms = vec![vm_types[3].clone(); 3];
        // PABFD: every 500-MIPS VM is cheapest on an empty G5 (+3.1 W) until they run out, then on
        // an empty G4 (+4.5 W) rather than a G5 already at 9.4% (+6.8 W over idle).
        let got = admit(
            Admission::PowerAware,
            &thr(0.8),
            &types,
            &[0, 1, 0, 1],
            &vms,
        );
        assert_eq!(got, vec![Some(1), Some(3), Some(0)]);
        let got = admit(Admission::FirstFit, &thr(0.8), &types, &[0, 1, 0, 1], &vms);
        assert_eq!(got, vec![Some(0), Some(0), Some(0)]);
        let got = admit(Admission::Packed, &thr(0.8), &types, &[1, 1], &vms);
        assert_eq!(got, vec![Some(0), Some(0), Some(0)]);
        // A 2500-MIPS VM never fits a 1860-MIPS core; memory caps admission (4096 MB / 1740).
        let big = vec![
            vm_types[0].clone(),
            vm_types[2].clone(),
            vm_types[2].clone(),
            vm_types[2].clone(),
        ];
        let got = admit(Admission::FirstFit, &thr(0.8), &types, &[0], &big);
        assert_eq!(got, vec![None, Some(0), Some(0), None]);
    }
}
