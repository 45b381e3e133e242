//! Admission: whether a VM fits this host, decided and claimed in one step.
//!
//! A VM costs its guest memory plus what its QEMU process takes beside it ([`vm_cost`]). The
//! check and the claim happen under one lock, the same one that claims the VM's name, and the
//! claim is held until the VM is registered (then the registry counts it) or its start fails
//! (then the claim is dropped), so concurrent creates cannot all pass the check before any of
//! them is counted. Lock order: the claims, then the registry's map; never the other way.
//!
//! # QEMU's overhead, measured
//! Under TCG on this project's machines (QEMU 10.0, q35, the Drover guest image), what a VM's
//! QEMU charged to its own v1 memory cgroup after 30-90 s, against the guest RAM it had touched
//! (`Rss` of the guest-RAM mapping in `/proc/<pid>/smaps`):
//!
//! | guest | vCPUs | workload | cgroup | guest RAM touched | QEMU beside it |
//! | --- | --- | --- | --- | --- | --- |
//! | 128 MiB | 1 | idle | 200 MiB | 114 MiB | 86 MiB |
//! | 128 MiB | 1 | memtouch 32 MiB | 217 MiB | 126 MiB | 91 MiB (5 of it a log file's cache) |
//! | 128 MiB | 1 | guest RAM all touched | 214 MiB | 128 MiB | 86 MiB |
//! | 256 MiB | 1 | guest RAM all touched | 344 MiB | 256 MiB | 88 MiB |
//! | 512 MiB | 1 | memtouch 256 MiB | 457 MiB | 368 MiB | 89 MiB |
//! | 512 MiB | 1 | guest RAM all touched | 601 MiB | 512 MiB | 89 MiB |
//! | 128 MiB | 2 | guest RAM all touched | 223 MiB | 128 MiB | 95 MiB |
//! | 256 MiB | 2 | memtouch 96 MiB | 275 MiB | 182 MiB | 93 MiB |
//!
//! About 50 MiB of it is TCG's translation cache, which grows with the code the guest runs, not
//! with its memory; the rest is QEMU's heap, firmware and device state. So the rule is a constant
//! per VM and per vCPU plus a small share of guest memory for what does scale with it (page
//! tables, dirty bitmaps during a migration): [`QEMU_OVERHEAD_BYTES`] +
//! [`QEMU_OVERHEAD_PER_VCPU_BYTES`] x vCPUs + guest / [`QEMU_OVERHEAD_SHARE`]. For 1 vCPU and
//! 128 MiB that is 106 MiB against 86-91 measured: headroom for a guest that runs more code and
//! for the agent itself, which shares the host's memory. A guest is counted as if it touched all
//! its RAM, since any guest may. The constants and [`vm_cost`] live in `drover_guest::fit`,
//! whose host floor (`MIN_HOST_MEMORY_BYTES`) is this charge for the smallest guest. KVM has no translation cache, so the rule over-reserves there by
//! about 50 MiB per VM: a refusal is better than the host's OOM killer choosing a VM.

use super::{Vms, VmsError};
use crate::lock;
use crate::model::VmRole;
use drover_api::VmConfig;

// The charge lives with the guest's size rules, so the lab's host floor (which runs without
// QEMU) and this admission use the same constants.
pub use drover_guest::fit::{
    vm_cost, QEMU_OVERHEAD_BYTES, QEMU_OVERHEAD_PER_VCPU_BYTES, QEMU_OVERHEAD_SHARE,
};

/// A VM being started: its name, the memory claimed for it, and the migration it is the
/// destination of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Claim {
    bytes: u64,
    incoming: Option<String>,
    /// The NIC's address (one VM an address on this host).
    address: Option<String>,
}

/// Refuses `need` bytes when `used` of `capacity` are taken (pure, for tests).
pub fn check_room(name: &str, need: u64, used: u64, capacity: u64) -> Result<(), VmsError> {
    let free = capacity.saturating_sub(used);
    if need > free {
        return Err(VmsError::NoRoom {
            name: name.to_string(),
            need,
            free,
            capacity,
        });
    }
    Ok(())
}

/// Releases a claim however the start ends (a registered VM's claim is already gone).
pub(super) struct Reservation<'a> {
    vms: &'a Vms,
    name: String,
}

impl std::fmt::Debug for Reservation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "claim of '{}'", self.name)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(&self.vms.claims).remove(&self.name);
    }
}

impl Vms {
    /// Claims `config`'s name and memory (and, for an incoming VM, its migration id) at once,
    /// counting every VM registered here (incoming ones included: they hold their memory once
    /// the migration arrives) and every other claim.
    pub(super) fn reserve(
        &self,
        config: &VmConfig,
        role: &VmRole,
    ) -> Result<Reservation<'_>, VmsError> {
        let name = &config.name;
        let mut claims = lock(&self.claims);
        let map = lock(&self.map);
        if map.contains_key(name) || claims.contains_key(name) {
            return Err(VmsError::Exists(name.clone()));
        }
        if let Some(id) = role.incoming_migration() {
            let registered = map.values().find(|e| {
                e.record.role.incoming_migration() == Some(id)
                    || e.record.arrived_by.as_deref() == Some(id)
            });
            let holder = registered
                .map(|e| e.record.config.name.clone())
                .or_else(|| {
                    claims
                        .iter()
                        .find(|(_, c)| c.incoming.as_deref() == Some(id))
                        .map(|(n, _)| n.clone())
                });
            if let Some(vm) = holder {
                return Err(VmsError::MigrationTaken {
                    id: id.to_string(),
                    vm,
                });
            }
        }
        let used = map
            .values()
            .filter(|e| e.lost.is_none())
            .map(|e| vm_cost(e.record.config.memory_bytes, e.record.config.vcpus))
            .chain(claims.values().map(|c| c.bytes))
            .fold(0u64, u64::saturating_add);
        let need = vm_cost(config.memory_bytes, config.vcpus);
        check_room(name, need, used, self.settings.memory_capacity_bytes)?;
        let address = config.nic.as_ref().map(|n| n.address.clone());
        if let Some(address) = &address {
            let holder = map
                .iter()
                .filter_map(|(n, e)| Some((n, &e.record.config.nic.as_ref()?.address)))
                .chain(
                    claims
                        .iter()
                        .filter_map(|(n, c)| Some((n, c.address.as_ref()?))),
                )
                .find(|(_, a)| *a == address);
            if let Some((vm, _)) = holder {
                return Err(super::tap::TapError::Taken {
                    address: address.clone(),
                    vm: vm.clone(),
                }
                .into());
            }
        }
        claims.insert(
            name.clone(),
            Claim {
                bytes: need,
                incoming: role.incoming_migration().map(str::to_string),
                address,
            },
        );
        Ok(Reservation {
            vms: self,
            name: name.clone(),
        })
    }

    /// Registers a started VM and drops its claim in one step, so it is never counted twice
    /// nor missed.
    pub(super) fn register(&self, entry: super::VmEntry) {
        let mut claims = lock(&self.claims);
        let name = entry.record.config.name.clone();
        lock(&self.map).insert(name.clone(), entry);
        claims.remove(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::vms::LaunchSettings;
    use std::sync::Arc;
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    fn vms(dir: &std::path::Path, capacity: u64) -> Vms {
        let store = Store::open(dir).expect("store");
        Vms::new(
            store,
            LaunchSettings {
                memory_capacity_bytes: capacity,
                ..LaunchSettings::for_tests()
            },
        )
    }

    fn config(name: &str, mib: u64) -> VmConfig {
        VmConfig {
            name: name.into(),
            vcpus: 1,
            memory_bytes: mib * MIB,
            workload: "idle".into(),
            disk: None,
            disk_size_bytes: None,
            disk_base: None,
            nic: None,
        }
    }

    #[test]
    fn a_vm_costs_its_guest_plus_its_qemu() {
        // The reviewer's host: 512 MiB admitted four 128 MiB VMs that each took ~215 MB.
        assert_eq!(vm_cost(128 * MIB, 1), 234 * MIB);
        assert!(vm_cost(128 * MIB, 1) > 215_000_000);
        assert_eq!(vm_cost(256 * MIB, 2), 372 * MIB);
        assert_eq!(vm_cost(u64::MAX, 64), u64::MAX);
        assert!(check_room("a", 234 * MIB, 234 * MIB, 512 * MIB).is_ok());
        let err = check_room("a", 234 * MIB, 468 * MIB, 512 * MIB).expect_err("full");
        assert!(
            matches!(err, VmsError::NoRoom { free, .. } if free == 44 * MIB),
            "{err}"
        );
    }

    /// Six creates at once on a 512 MiB host: the check and the claim are one step, so exactly
    /// as many as fit are admitted, and a failed start gives its room back.
    #[test]
    fn concurrent_claims_never_overcommit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = Arc::new(vms(dir.path(), 512 * MIB));
        let barrier = Arc::new(std::sync::Barrier::new(6));
        let admitted: Vec<bool> = (0..6)
            .map(|i| {
                let (v, barrier) = (v.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let r = v.reserve(&config(&format!("vm{i}"), 128), &VmRole::Running);
                    let ok = r.is_ok();
                    // Hold the claim as a start in progress does.
                    std::thread::sleep(Duration::from_millis(50));
                    drop(r);
                    ok
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        assert_eq!(admitted.iter().filter(|a| **a).count(), 2, "{admitted:?}");
        // Every claim was dropped (the starts "failed"): the room is free again.
        let again = v.reserve(&config("again", 128), &VmRole::Running);
        assert!(again.is_ok());
    }

    #[test]
    fn names_and_incoming_migration_ids_are_claimed_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = vms(dir.path(), 8 << 30);
        let incoming = |id: &str| VmRole::Incoming {
            migration_id: id.into(),
            uri: None,
            recover_uri: None,
            nbd: None,
            source_nbd: None,
        };
        let _a = v
            .reserve(&config("a", 128), &incoming("m1"))
            .expect("first");
        assert!(matches!(
            v.reserve(&config("a", 128), &VmRole::Running),
            Err(VmsError::Exists(_))
        ));
        let err = v
            .reserve(&config("b", 128), &incoming("m1"))
            .expect_err("same migration");
        assert_eq!(
            err.to_string(),
            "migration 'm1' already has VM 'a' on this host"
        );
        assert!(v.reserve(&config("b", 128), &incoming("m2")).is_ok());
    }

    /// One address one VM on a host, counted while VMs are still starting (claims), so two
    /// creates at once cannot both take it.
    #[test]
    fn an_address_is_claimed_with_the_vm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = vms(dir.path(), 1 << 30);
        let with = |name: &str, address: &str| VmConfig {
            nic: Some(drover_api::NicConfig {
                address: address.into(),
            }),
            ..config(name, 128)
        };
        let _a = v
            .reserve(&with("a", "198.18.0.110"), &VmRole::Running)
            .expect("a");
        let err = v
            .reserve(&with("b", "198.18.0.110"), &VmRole::Running)
            .map(|_| ())
            .expect_err("taken");
        assert_eq!(
            err.to_string(),
            "nic.address 198.18.0.110: VM 'a' on this host has it already"
        );
        assert!(v
            .reserve(&with("c", "198.18.0.111"), &VmRole::Running)
            .is_ok());
    }
}
