//! What a VM's network asks of this host, checked before anything is made: its NIC's address
//! (in the host's VM network, no other VM's here) and a net workload's peer (on that network:
//! the flows stay on the lab's own addresses). The taps themselves are [`super::tap`]'s.

use super::{tap, Vms, VmsError};
use drover_api::VmConfig;

impl Vms {
    /// The VM network and NIC `config` asks for, checked for this host: the NIC's address in
    /// the network, a net workload's peer on the network (that no other VM here has the
    /// address is checked with the VM's claim, in `admission`).
    pub(super) fn admit_net(
        &self,
        config: &VmConfig,
    ) -> Result<Option<(tap::VmNet, drover_api::NicConfig)>, VmsError> {
        self.check_peer(&config.workload)?;
        let Some(nic) = &config.nic else {
            return Ok(None);
        };
        let net = self.settings.vm_net.clone().ok_or(tap::TapError::NoVmNet)?;
        net.admit(nic)?;
        Ok(Some((net, nic.clone())))
    }

    /// Checks a net workload's peer is on this host's VM network (other workloads pass).
    ///
    /// # Errors
    /// [`tap::TapError::NoVmNet`] or [`tap::TapError::PeerOutside`].
    pub(crate) fn check_peer(&self, workload: &str) -> Result<(), VmsError> {
        if let Ok(drover_guest::spec::Workload::Net { peer, .. }) =
            drover_guest::spec::parse_workload(workload)
        {
            let net = self
                .settings
                .vm_net
                .as_ref()
                .ok_or(tap::TapError::NoVmNet)?;
            net.admit_peer(peer)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::vms::LaunchSettings;
    use drover_api::NicConfig;

    fn vms(dir: &std::path::Path, vm_net: Option<tap::VmNet>) -> Vms {
        Vms::new(
            Store::open(dir).expect("store"),
            LaunchSettings {
                vm_net,
                ..LaunchSettings::for_tests()
            },
        )
    }

    fn config(workload: &str, address: Option<&str>) -> VmConfig {
        VmConfig {
            name: "a".into(),
            vcpus: 1,
            memory_bytes: 256 << 20,
            workload: workload.into(),
            disk: None,
            disk_size_bytes: None,
            disk_base: None,
            nic: address.map(|a| NicConfig { address: a.into() }),
        }
    }

    /// Without a VM network a NIC or a net workload is refused; with one, the address and the
    /// peer must be on it.
    #[test]
    fn nics_and_peers_are_checked_against_the_vm_network() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flow = "net:dir=out,rate=1M,peer=198.18.0.250";
        let none = vms(&dir.path().join("a"), None);
        for c in [config("idle", Some("198.18.0.110")), config(flow, None)] {
            let err = none.admit_net(&c).expect_err("no VM network");
            assert!(err.to_string().contains("no VM network"), "{err}");
        }
        assert!(none
            .admit_net(&config("idle", None))
            .expect("no nic")
            .is_none());
        let net = tap::VmNet::parse("198.18.0.0/24", "vmbr").expect("net");
        let on = vms(&dir.path().join("b"), Some(net));
        let ok = on
            .admit_net(&config(flow, Some("198.18.0.110")))
            .expect("fits");
        assert_eq!(ok.map(|(_, n)| n.address).as_deref(), Some("198.18.0.110"));
        let outside = on
            .admit_net(&config("idle", Some("198.18.1.110")))
            .unwrap_err();
        assert!(outside.to_string().contains("198.18.0.0/24"), "{outside}");
        let far = on
            .check_peer("net:dir=in,rate=1M,peer=10.1.2.3")
            .unwrap_err();
        assert!(far.to_string().contains("peer 10.1.2.3"), "{far}");
    }
}
