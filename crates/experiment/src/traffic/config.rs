//! The traffic experiment's sizes and one check, [`TrafficConfig::validate`], whose errors name
//! the `drover experiment traffic-sensitive` flag; the VMs and the three strategies.

use crate::config::ConfigError;
use drover_core::migration::Technique;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

fn refuse(flag: &'static str, value: impl ToString, expected: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// How the group of VMs is evacuated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Every VM with pre-copy, in the traffic order.
    AllPrecopy,
    /// Every VM with post-copy, in the traffic order.
    AllPostcopy,
    /// Technique, order and concurrency from core's group choice.
    TrafficSensitive,
    /// The paper's per-VM rule (post-copy for a VM that sends more than it receives, pre-copy
    /// otherwise), in the traffic order: a reference, run with `--paper-rule`.
    PaperRule,
}

impl Strategy {
    /// The three the experiment compares, in the order each repetition runs them.
    pub const COMPARED: [Strategy; 3] = [
        Strategy::AllPrecopy,
        Strategy::AllPostcopy,
        Strategy::TrafficSensitive,
    ];

    /// Its name in the table, the files and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::AllPrecopy => "all-precopy",
            Strategy::AllPostcopy => "all-postcopy",
            Strategy::TrafficSensitive => "traffic-sensitive",
            Strategy::PaperRule => "paper-rule",
        }
    }

    /// The one technique of a uniform strategy (None: the group choice decides).
    pub fn uniform(self) -> Option<Technique> {
        match self {
            Strategy::AllPrecopy => Some(Technique::Precopy),
            Strategy::AllPostcopy => Some(Technique::Postcopy),
            Strategy::TrafficSensitive | Strategy::PaperRule => None,
        }
    }
}

/// Which way a VM's application mostly sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The guest sends to the peer (`net:dir=out`).
    Out,
    /// The peer sends to the guest (`net:dir=in`).
    In,
}

impl Role {
    /// `out` or `in`: the workload's `dir`, and how reports name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Out => "out",
            Role::In => "in",
        }
    }
}

/// One VM of the experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmPlan {
    pub name: String,
    pub role: Role,
    /// Its flow's rate, bytes/s: a whole number of KiB/s (the workload's unit), at least 1.
    pub rate_bps: u64,
}

/// One experiment: the lab, its VMs, the windows and how many repetitions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrafficConfig {
    /// Repetitions (each runs every strategy once, on a fresh lab each).
    pub repeat: u32,
    /// The strategies each repetition runs, in order.
    pub strategies: Vec<Strategy>,
    /// Link rate of each host, bytes/s each way (tbf on both ends of its veth).
    pub link_bps: u64,
    /// Guest memory of each VM, bytes.
    pub memory_bytes: u64,
    /// Rate of each outbound VM's flow, bytes/s.
    pub out_rate_bps: u64,
    /// Rate of each inbound VM's flow, bytes/s.
    pub in_rate_bps: u64,
    /// Outbound VMs (out1..), then inbound ones (in1..).
    pub out_vms: u32,
    pub in_vms: u32,
    /// Seconds between every flow running and the baseline (TCP's start and the pacers'
    /// catching up settle).
    pub settle_s: u64,
    /// Seconds of traffic measured before the evacuation (the throughput it is compared with).
    pub baseline_s: u64,
    /// Seconds observed after the last migration ends.
    pub after_s: u64,
    /// Most migrations at a time (the group choice's `max_concurrent`; the uniform strategies
    /// run at this concurrency).
    pub concurrency: u32,
    /// How often the agents measure each VM's dirty rate, s.
    pub dirty_interval_s: u64,
    /// Longest wait for one migration, s; also each pre-copy's deadline.
    pub migration_timeout_s: u64,
    /// Lab name (a-z, 0-9, at most 8).
    pub lab: String,
    /// The drover binary that runs the agents and the peer.
    #[serde(skip)]
    pub drover_bin: PathBuf,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            repeat: 1,
            strategies: Strategy::COMPARED.to_vec(),
            link_bps: 25_000_000,
            memory_bytes: 128 << 20,
            out_rate_bps: 8_000_000,
            in_rate_bps: 8_000_000,
            out_vms: 2,
            in_vms: 2,
            settle_s: 4,
            baseline_s: 8,
            after_s: 2,
            concurrency: 2,
            dirty_interval_s: 2,
            migration_timeout_s: 180,
            lab: "trx".into(),
            drover_bin: PathBuf::from("drover"),
        }
    }
}

impl TrafficConfig {
    /// Checks every flag's range.
    ///
    /// # Errors
    /// The first [`ConfigError`], naming its flag.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let count = crate::config::within;
        count("--repeat", self.repeat.into(), 1, 100)?;
        count("--out-vms", self.out_vms.into(), 0, 8)?;
        count("--in-vms", self.in_vms.into(), 0, 8)?;
        if self.out_vms + self.in_vms < 2 {
            return Err(refuse(
                "--out-vms",
                self.out_vms,
                "expected --out-vms + --in-vms of at least 2 (a group)",
            ));
        }
        count("--settle", self.settle_s, 0, 600)?;
        count("--baseline", self.baseline_s, 2, 600)?;
        count("--after", self.after_s, 0, 600)?;
        let vms = u64::from(self.out_vms + self.in_vms);
        if !(1..=vms).contains(&u64::from(self.concurrency)) {
            return Err(refuse(
                "--concurrency",
                self.concurrency,
                format!("expected 1 to {vms} (the VMs: --out-vms + --in-vms)"),
            ));
        }
        count("--dirty-interval", self.dirty_interval_s, 1, 3600)?;
        count("--migration-timeout", self.migration_timeout_s, 10, 3600)?;
        drover_core::migration::knobs::check_link_bps(self.link_bps)
            .map_err(|expected| refuse("--link", self.link_bps, expected))?;
        let rate = |flag, v: u64| {
            let (lo, hi) = (
                drover_guest::spec::MIN_NET_RATE_BPS,
                drover_guest::spec::MAX_NET_RATE_BPS.min(self.link_bps),
            );
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(refuse(
                    flag,
                    v,
                    format!("expected {lo} to {hi} bytes/s (at most the link)"),
                ))
            }
        };
        rate("--out-rate", self.out_rate_bps)?;
        rate("--in-rate", self.in_rate_bps)?;
        drover_lab::LabName::new(&self.lab)
            .map_err(|e| refuse("--lab-name", &self.lab, e.to_string()))?;
        // The size's rule alone, as the wan experiment words it (the flag names the field).
        drover_guest::fit::check_vm(1, self.memory_bytes, "idle").map_err(|e| {
            let expected = e.setting().expected().unwrap_or_else(|| e.to_string());
            refuse("--memory", self.memory_bytes, expected)
        })?;
        Ok(())
    }

    /// The VMs, outbound ones first.
    pub fn vms(&self) -> Vec<VmPlan> {
        let outs = (1..=self.out_vms).map(|i| VmPlan {
            name: format!("out{i}"),
            role: Role::Out,
            rate_bps: whole_kib(self.out_rate_bps),
        });
        let ins = (1..=self.in_vms).map(|i| VmPlan {
            name: format!("in{i}"),
            role: Role::In,
            rate_bps: whole_kib(self.in_rate_bps),
        });
        outs.chain(ins).collect()
    }
}

/// `bps` rounded down to a whole number of KiB/s, at least 1 KiB/s: the guest's `net` spec
/// takes its rate in K, M or G (binary).
fn whole_kib(bps: u64) -> u64 {
    (bps >> 10).max(1) << 10
}

impl VmPlan {
    /// Its guest workload: a paced flow with the lab's peer at `peer`.
    pub fn workload(&self, peer: std::net::Ipv4Addr) -> String {
        format!(
            "net:dir={},rate={}K,peer={peer}",
            self.role.as_str(),
            self.rate_bps >> 10
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_each_limit_names_its_flag() {
        assert_eq!(TrafficConfig::default().validate(), Ok(()));
        let d = TrafficConfig::default;
        let cases: Vec<(TrafficConfig, &str)> = vec![
            (TrafficConfig { repeat: 0, ..d() }, "--repeat"),
            (
                TrafficConfig {
                    out_vms: 1,
                    in_vms: 0,
                    ..d()
                },
                "--out-vms",
            ),
            (
                TrafficConfig {
                    concurrency: 5,
                    ..d()
                },
                "--concurrency",
            ),
            (
                TrafficConfig {
                    link_bps: 100,
                    ..d()
                },
                "--link",
            ),
            (
                TrafficConfig {
                    out_rate_bps: 30_000_000,
                    ..d()
                },
                "--out-rate",
            ),
            (
                TrafficConfig {
                    in_rate_bps: 10,
                    ..d()
                },
                "--in-rate",
            ),
            (
                TrafficConfig {
                    lab: "Bad_Name".into(),
                    ..d()
                },
                "--lab-name",
            ),
            (
                TrafficConfig {
                    memory_bytes: 16 << 20,
                    ..d()
                },
                "--memory",
            ),
        ];
        for (config, flag) in cases {
            let err = config.validate().expect_err(flag);
            assert_eq!(err.flag, flag, "{err}");
            assert!(err.to_string().starts_with(flag), "{err}");
        }
    }

    #[test]
    fn vms_and_their_workloads() {
        let vms = TrafficConfig::default().vms();
        let names: Vec<&str> = vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["out1", "out2", "in1", "in2"]);
        let peer = std::net::Ipv4Addr::new(198, 18, 0, 250);
        assert_eq!(
            vms[0].workload(peer),
            "net:dir=out,rate=7812K,peer=198.18.0.250"
        );
        assert_eq!(
            vms[3].workload(peer),
            "net:dir=in,rate=7812K,peer=198.18.0.250"
        );
        assert_eq!(vms[0].rate_bps, 7812 * 1024);
        assert_eq!(whole_kib(100), 1024);
        assert_eq!(Strategy::AllPostcopy.uniform(), Some(Technique::Postcopy));
        assert_eq!(Strategy::TrafficSensitive.as_str(), "traffic-sensitive");
    }
}
