//! VM NICs on the host's VM network: the network's setting ([`VmNet`]), the checks a NIC's
//! address must pass on this host ([`VmNet::admit`]), and the tap device each NIC gets (made on
//! start and on an incoming migration, removed when the VM goes: deleted, failed to start,
//! migrated away).
//!
//! The tap's name and the guest's MAC are derived from the guest's address
//! ([`drover_api::NicConfig`]), which the request carries and the shape check has already
//! passed; this module never takes a name from a client. The tap joins the bridge that carries
//! the host's own link (the lab makes one per host namespace), so every VM is on one L2
//! segment with the other hosts and keeps its address and MAC wherever it runs; after a
//! migration the destination QEMU announces the guest (RARP) so the bridges learn its new port.

use drover_api::NicConfig;
use std::net::Ipv4Addr;
use thiserror::Error;
use tokio::process::Command;

/// Why a NIC or its tap is refused or failed.
#[derive(Debug, Error)]
pub enum TapError {
    #[error("nic: this host has no VM network (the agent runs without --vm-net and --vm-bridge)")]
    NoVmNet,
    #[error("nic.address {address}: expected a host address of this host's VM network {net}")]
    Outside { address: String, net: String },
    #[error("nic.address {address}: VM '{vm}' on this host has it already")]
    Taken { address: String, vm: String },
    #[error(
        "workload's peer {peer}: expected an address of this host's VM network {net} (net \
         workloads talk only to the lab's own addresses)"
    )]
    PeerOutside { peer: Ipv4Addr, net: String },
    #[error("tap {tap}: `{cmd}` failed: {why}")]
    Command {
        tap: String,
        cmd: String,
        why: String,
    },
}

/// The host's VM network: the bridge the taps join and the IPv4 network the guests' addresses
/// come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmNet {
    pub network: Ipv4Addr,
    /// Prefix length, 8 to 30.
    pub prefix: u8,
    /// The bridge in the agent's namespace: 1 to 15 letters, digits, `-`, `_` (checked once,
    /// in [`VmNet::parse`]).
    bridge: String,
}

impl VmNet {
    /// Reads `--vm-net A.B.C.D/P` and `--vm-bridge NAME`.
    ///
    /// # Errors
    /// A message naming the flag and what it expects.
    pub fn parse(cidr: &str, bridge: &str) -> Result<VmNet, String> {
        let bad = || {
            format!(
                "--vm-net {cidr:?}: expected an IPv4 network like 198.18.0.0/24 (prefix 8 to 30)"
            )
        };
        let (addr, prefix) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let ok = !bridge.is_empty()
            && bridge.len() <= 15
            && bridge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!(
                "--vm-bridge {bridge:?}: expected an interface name of 1 to 15 letters, digits, - or _"
            ));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(VmNet {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
            bridge: bridge.to_string(),
        })
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    /// Whether `a` is a host address of this network (not its network or broadcast address).
    pub fn holds(&self, a: Ipv4Addr) -> bool {
        let (a, net, mask) = (u32::from(a), u32::from(self.network), self.mask());
        a & mask == net && a != net && a != net | !mask
    }

    /// `address/prefix`, for the guest's kernel command line.
    pub fn guest_cidr(&self, nic: &NicConfig) -> String {
        format!("{}/{}", nic.address, self.prefix)
    }

    /// Checks a NIC's address is a host address of this network (that no other VM here has
    /// it is admission's check, made with the VM's claim).
    ///
    /// # Errors
    /// [`TapError::Outside`].
    pub fn admit(&self, nic: &NicConfig) -> Result<(), TapError> {
        let inside = nic.address.parse::<Ipv4Addr>().is_ok_and(|a| self.holds(a));
        if inside {
            Ok(())
        } else {
            Err(TapError::Outside {
                address: nic.address.clone(),
                net: self.to_string(),
            })
        }
    }

    /// Checks a net workload's peer is on this network (traffic stays on the lab's own
    /// addresses).
    ///
    /// # Errors
    /// [`TapError::PeerOutside`].
    pub fn admit_peer(&self, peer: Ipv4Addr) -> Result<(), TapError> {
        if self.holds(peer) {
            Ok(())
        } else {
            Err(TapError::PeerOutside {
                peer,
                net: self.to_string(),
            })
        }
    }
}

impl std::fmt::Display for VmNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The `ip` commands that make `tap` and put it on `bridge`, up.
pub fn make_commands(tap: &str, bridge: &str) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
    vec![
        v(&["tuntap", "add", "dev", tap, "mode", "tap"]),
        v(&["link", "set", "dev", tap, "master", bridge]),
        v(&["link", "set", "dev", tap, "up"]),
    ]
}

async fn ip(tap: &str, args: &[String]) -> Result<(), TapError> {
    let failed = |why: String| TapError::Command {
        tap: tap.to_string(),
        cmd: format!("ip {}", args.join(" ")),
        why,
    };
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Makes `tap` on the network's bridge. A tap of that name left behind (an agent killed before
/// it cleaned up) is removed first; a failure part-way removes what was made.
///
/// # Errors
/// [`TapError::Command`] naming the command and `ip`'s message.
pub async fn make(net: &VmNet, tap: &str) -> Result<(), TapError> {
    remove(tap).await;
    for args in make_commands(tap, net.bridge()) {
        if let Err(e) = ip(tap, &args).await {
            remove(tap).await;
            return Err(e);
        }
    }
    Ok(())
}

/// Removes `tap` if it exists (best effort: a tap already gone is fine).
pub async fn remove(tap: &str) {
    if std::path::Path::new("/sys/class/net").join(tap).exists() {
        let args = ["link", "del", "dev", tap].map(String::from);
        if let Err(e) = ip(tap, &args).await {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(a: &str) -> NicConfig {
        NicConfig { address: a.into() }
    }

    #[test]
    fn the_network_and_its_checks() {
        let net = VmNet::parse("198.18.0.7/24", "vmbr").unwrap();
        assert_eq!(
            (net.to_string(), net.bridge()),
            ("198.18.0.0/24".into(), "vmbr")
        );
        assert!(net.holds("198.18.0.200".parse().unwrap()));
        for a in ["198.18.0.0", "198.18.0.255", "198.18.1.2", "10.0.0.1"] {
            assert!(!net.holds(a.parse().unwrap()), "{a}");
        }
        assert_eq!(net.guest_cidr(&nic("198.18.0.200")), "198.18.0.200/24");
        assert!(net.admit(&nic("198.18.0.200")).is_ok());
        let out = net.admit(&nic("198.18.5.1")).unwrap_err();
        assert!(out.to_string().contains("198.18.0.0/24"), "{out}");
        assert!(net.admit_peer("198.18.0.250".parse().unwrap()).is_ok());
        assert!(net.admit_peer("8.8.8.8".parse().unwrap()).is_err());
        for (cidr, br) in [
            ("198.18.0.0", "vmbr"),
            ("198.18.0.0/31", "vmbr"),
            ("x/24", "vmbr"),
            ("198.18.0.0/24", ""),
            ("198.18.0.0/24", "a b"),
            ("198.18.0.0/24", "a234567890123456"),
        ] {
            assert!(VmNet::parse(cidr, br).is_err(), "{cidr} {br}");
        }
    }

    #[test]
    fn tap_commands_name_only_derived_names() {
        let tap = nic("198.18.0.200").tap().unwrap();
        let cmds = make_commands(&tap, "vmbr");
        assert_eq!(cmds[0].join(" "), "tuntap add dev dvnc61200c8 mode tap");
        assert_eq!(cmds[1].join(" "), "link set dev dvnc61200c8 master vmbr");
        assert_eq!(cmds[2].join(" "), "link set dev dvnc61200c8 up");
    }
}
