//! Names and addresses of everything a lab creates.
//!
//! Every kernel object carries the prefix `drv<lab>-`, so `down` can find a lab's leftovers by
//! scanning `ip netns list` and `ip link` even when the state file is gone. Lab names are
//! restricted to `[a-z0-9]` (no `-`), which keeps prefixes unambiguous: lab `t1` owns
//! `drvt1-*`, never `drvt12-*`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Linux limits interface names to 15 bytes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// `drv` + name + `-h99` must fit in [`IFNAME_MAX`].
pub const LAB_NAME_MAX: usize = 8;
/// Host `hN` gets address `.(10+N)` of the lab's /24; two-digit host numbers keep veth names
/// within 15 bytes.
pub const MAX_HOSTS: u32 = 99;
pub const PREFIX_LEN: u8 = 24;
/// Number of /24s in the benchmarking range 198.18.0.0/15.
pub const SUBNETS: u16 = 512;
/// Name of the host's interface inside its namespace (created there directly, so it never
/// collides with interfaces in the root namespace).
pub const NS_IFNAME: &str = "eth0";
/// The bridge inside each host's namespace: the host's link (`eth0`) and its VMs' taps are its
/// ports, the host's address is on it, so VMs share the lab's one L2 segment.
pub const VM_BRIDGE: &str = "vmbr";
/// Last octet of the traffic peer's address in the lab's /24.
pub const PEER_LAST_OCTET: u8 = 250;
/// VMs' addresses: last octets from here to [`VM_ADDR_LAST`] (below the peer's, above the
/// hosts' 11..=109).
pub const VM_ADDR_FIRST: u8 = 110;
pub const VM_ADDR_LAST: u8 = 249;
/// Top-level cgroup directory shared by all labs.
pub const CGROUP_TOP: &str = "drover";
pub const DEFAULT_LAB: &str = "drover";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("lab name {0:?} must be 1..={LAB_NAME_MAX} characters of a-z and 0-9, starting with a letter")]
    BadLabName(String),
    #[error("a lab has 1..={MAX_HOSTS} hosts, not {0}")]
    BadHostCount(u32),
}

/// A validated lab name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LabName(String);

impl LabName {
    pub fn new(name: &str) -> Result<Self, NameError> {
        let ok = !name.is_empty()
            && name.len() <= LAB_NAME_MAX
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(NameError::BadLabName(name.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Prefix of every netns and link of this lab.
    pub fn prefix(&self) -> String {
        format!("drv{}-", self.0)
    }

    pub fn bridge(&self) -> String {
        format!("drv{}-br", self.0)
    }

    /// The namespace of host `hN`; the same string names the host-side veth in the root
    /// namespace (netns and link names live in different tables).
    pub fn netns(&self, host: &HostName) -> String {
        format!("drv{}-{}", self.0, host.0)
    }

    /// The traffic peer's namespace and its veth in the root namespace (`drv<lab>-p`, within
    /// 15 bytes).
    pub fn peer_netns(&self) -> String {
        format!("drv{}-p", self.0)
    }

    pub fn veth(&self, host: &HostName) -> String {
        self.netns(host)
    }

    /// Cgroup directory of a host relative to a controller's mount point.
    pub fn cgroup_rel(&self, host: &HostName) -> PathBuf {
        self.cgroup_lab_rel().join(&host.0)
    }

    pub fn cgroup_lab_rel(&self) -> PathBuf {
        PathBuf::from(CGROUP_TOP).join(&self.0)
    }
}

impl TryFrom<String> for LabName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(&s)
    }
}

impl From<LabName> for String {
    fn from(n: LabName) -> String {
        n.0
    }
}

impl std::fmt::Display for LabName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `h1`..`h99`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostName(String);

impl HostName {
    pub fn nth(n: u32) -> Self {
        Self(format!("h{n}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The host names of an `n`-host lab.
pub fn host_names(n: u32) -> Result<Vec<HostName>, NameError> {
    if n == 0 || n > MAX_HOSTS {
        return Err(NameError::BadHostCount(n));
    }
    Ok((1..=n).map(HostName::nth).collect())
}

/// One of the 512 /24s of 198.18.0.0/15 (number 0 is 198.18.0.0/24, 256 is 198.19.0.0/24).
///
/// Each lab gets its own /24 because the bridges of all labs share the root namespace's routing
/// table: two labs on one subnet would make the root namespace (where the manager and health
/// checks run) reach only one of them. `up` picks the lowest /24 that no interface uses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Subnet(pub u16);

impl Subnet {
    fn addr(self, last: u8) -> Ipv4Addr {
        let index = self.0 % SUBNETS;
        Ipv4Addr::new(198, 18 + (index / 256) as u8, (index % 256) as u8, last)
    }

    pub fn cidr(self) -> String {
        format!("{}/{PREFIX_LEN}", self.addr(0))
    }

    pub fn bridge_addr(self) -> Ipv4Addr {
        self.addr(1)
    }

    /// The traffic peer's address.
    pub fn peer_addr(self) -> Ipv4Addr {
        self.addr(PEER_LAST_OCTET)
    }

    /// The address for VM number `n` (0-based) of the range VMs' NICs take, if in range.
    pub fn vm_addr(self, n: u32) -> Option<Ipv4Addr> {
        let last = u32::from(VM_ADDR_FIRST) + n;
        (last <= u32::from(VM_ADDR_LAST)).then(|| self.addr(last as u8))
    }

    /// Address of host number `n` (1-based).
    pub fn host_addr(self, n: u32) -> Ipv4Addr {
        // n <= MAX_HOSTS keeps 10 + n well inside the /24.
        self.addr((10 + n.min(MAX_HOSTS)) as u8)
    }

    /// The /24 of 198.18.0.0/15 that holds `a`, if any.
    pub fn containing(a: Ipv4Addr) -> Option<Self> {
        let [o1, o2, o3, _] = a.octets();
        (o1 == 198 && (o2 == 18 || o2 == 19))
            .then(|| Self(u16::from(o2 - 18) * 256 + u16::from(o3)))
    }
}

/// The lowest /24 not in `used`.
pub fn pick_subnet(used: &[Subnet]) -> Option<Subnet> {
    (0..SUBNETS).map(Subnet).find(|s| !used.contains(s))
}

/// The /24s of 198.18.0.0/15 that addresses in `ip -o -4 addr show` output fall into.
pub fn parse_used_subnets(text: &str) -> Vec<Subnet> {
    let mut out: Vec<Subnet> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            let addr = words.next()?.split('/').next()?.parse().ok()?;
            Subnet::containing(addr)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_are_validated() {
        assert!(LabName::new("drover").is_ok());
        assert!(LabName::new("t12345a").is_ok());
        for bad in ["", "Drover", "1lab", "a-b", "toolongname", "la b"] {
            assert_eq!(
                LabName::new(bad),
                Err(NameError::BadLabName(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn interface_names_fit_ifnamsiz_for_the_longest_lab_and_host() {
        let lab = LabName::new("abcdefgh").unwrap();
        let last = HostName::nth(MAX_HOSTS);
        assert!(lab.veth(&last).len() <= IFNAME_MAX, "{}", lab.veth(&last));
        assert!(lab.bridge().len() <= IFNAME_MAX);
    }

    #[test]
    fn names_share_the_lab_prefix() {
        let lab = LabName::new("drover").unwrap();
        let h2 = HostName::nth(2);
        assert_eq!(lab.bridge(), "drvdrover-br");
        assert_eq!(lab.netns(&h2), "drvdrover-h2");
        assert!(lab.veth(&h2).starts_with(&lab.prefix()));
        assert_eq!(lab.cgroup_rel(&h2), PathBuf::from("drover/drover/h2"));
    }

    #[test]
    fn addresses_follow_host_numbers() {
        let s = Subnet(0);
        assert_eq!(s.host_addr(1), Ipv4Addr::new(198, 18, 0, 11));
        assert_eq!(s.host_addr(2).to_string(), "198.18.0.12");
        assert_eq!(s.host_addr(99).to_string(), "198.18.0.109");
        assert_eq!(s.bridge_addr().to_string(), "198.18.0.1");
        assert_eq!(Subnet(3).cidr(), "198.18.3.0/24");
        assert_eq!(Subnet(257).host_addr(1).to_string(), "198.19.1.11");
    }

    #[test]
    fn subnets_in_use_are_skipped() {
        let text = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                    4: drva-br    inet 198.18.0.1/24 brd 198.18.0.255 scope global drva-br\n\
                    5: drvb-br    inet 198.18.1.1/24 scope global drvb-br\n\
                    6: eth1    inet 198.19.0.7/16 scope global eth1\n";
        let used = parse_used_subnets(text);
        assert_eq!(used, [Subnet(0), Subnet(1), Subnet(256)]);
        assert_eq!(pick_subnet(&used), Some(Subnet(2)));
        assert_eq!(pick_subnet(&[]), Some(Subnet(0)));
        let all: Vec<_> = (0..SUBNETS).map(Subnet).collect();
        assert_eq!(pick_subnet(&all), None);
        assert_eq!(Subnet::containing(Ipv4Addr::new(10, 0, 0, 1)), None);
    }

    #[test]
    fn host_counts_are_bounded() {
        assert_eq!(host_names(3).unwrap().len(), 3);
        assert_eq!(host_names(0), Err(NameError::BadHostCount(0)));
        assert_eq!(host_names(100), Err(NameError::BadHostCount(100)));
    }
}
