//! Which agents count as reachable: the one rule every fleet applies to its polls.
//!
//! An agent that misses a poll (no answer, a timeout, an error) is not written off at once: a
//! busy host or a lost packet would otherwise make its host unreachable for a look, and every
//! move to or from it would wait. Below `limit` misses in a row its host is reported as last
//! seen (its VMs and its migrations' last reports: core takes a running move without a report
//! as lost, so the report must not vanish with one missed poll). At `limit` misses its host is
//! `reachable: false`: core moves nothing to it and does not presume its VMs dead, and the VMs
//! it last reported stay in the observation. A host never seen (nor remembered from before a
//! restart) is reported unreachable, with no capacity and no VM.
//!
//! The price of the grace period: a missed poll repeats the host's last load as a sample, so
//! a hot streak may count up to `limit - 1` repeated samples.

use super::AgentSight;
use drover_core::control::{HostObs, MigrationObs, PowerState};
use std::collections::BTreeMap;

/// Polls an agent may miss in a row before its host is unreachable (3 one-second polls: long
/// enough to ride out a busy agent, short enough that nothing is sent to a dead one for long).
pub const DEFAULT_MISS_LIMIT: u32 = 3;

/// What is remembered of one host.
#[derive(Debug, Clone, Default)]
struct Memory {
    misses: u32,
    last: Option<HostObs>,
    migrations: Vec<MigrationObs>,
}

/// Reachability of every host, from its polls.
#[derive(Debug, Clone)]
pub struct Reach {
    limit: u32,
    hosts: BTreeMap<String, Memory>,
}

impl Reach {
    /// `limit`: misses in a row that make a host unreachable (at least 1).
    pub fn new(limit: u32) -> Reach {
        Reach {
            limit: limit.max(1),
            hosts: BTreeMap::new(),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Hosts as last seen before a restart: unreachable until their agent answers, with these
    /// VMs meanwhile. A host already seen in this run keeps what it has.
    pub fn remember(&mut self, last_seen: Vec<HostObs>) {
        for h in last_seen {
            let m = self.hosts.entry(h.name.clone()).or_default();
            if m.last.is_none() {
                m.misses = self.limit;
                m.last = Some(h);
            }
        }
    }

    /// `host` answered with `obs` (its name is `obs.name`) and the reports of the tracked
    /// migrations it is the source of.
    pub fn answered(
        &mut self,
        mut obs: HostObs,
        migrations: Vec<MigrationObs>,
    ) -> (HostObs, Vec<MigrationObs>, AgentSight) {
        obs.reachable = true;
        let m = self.hosts.entry(obs.name.clone()).or_default();
        m.misses = 0;
        m.last = Some(obs.clone());
        m.migrations = migrations.clone();
        let sight = AgentSight {
            host: obs.name.clone(),
            answered: true,
            misses: 0,
            error: None,
        };
        (obs, migrations, sight)
    }

    /// `host` did not answer (`error` says why).
    pub fn missed(
        &mut self,
        host: &str,
        error: String,
    ) -> (HostObs, Vec<MigrationObs>, AgentSight) {
        let limit = self.limit;
        let m = self.hosts.entry(host.to_string()).or_default();
        m.misses = m.misses.saturating_add(1);
        let reachable = m.misses < limit && m.last.is_some();
        let mut obs = m.last.clone().unwrap_or_else(|| unseen(host));
        obs.reachable = reachable;
        // Unreachable: core waits for its moves whatever their report; reachable for a grace
        // period: the last reports stand.
        let migrations = if reachable {
            m.migrations.clone()
        } else {
            Vec::new()
        };
        let sight = AgentSight {
            host: host.to_string(),
            answered: false,
            misses: m.misses,
            error: Some(error),
        };
        (obs, migrations, sight)
    }
}

/// A host nothing is known of.
fn unseen(host: &str) -> HostObs {
    HostObs {
        name: host.to_string(),
        reachable: false,
        power: PowerState::Active,
        cpus: 0.0,
        memory_bytes: 0,
        cpu_demand_cores: 0.0,
        vms: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::control::{MigrationPhase, VmObs, VmPresence};

    fn host(name: &str, vms: &[&str]) -> HostObs {
        HostObs {
            name: name.into(),
            reachable: true,
            power: PowerState::Active,
            cpus: 4.0,
            memory_bytes: 8 << 30,
            cpu_demand_cores: 1.0,
            vms: vms
                .iter()
                .map(|v| VmObs {
                    name: v.to_string(),
                    presence: VmPresence::Running,
                    vcpus: 1,
                    memory_bytes: 1 << 30,
                    cpu_demand_cores: 1.0,
                    dirty_rate_bps: None,
                    wss_bytes: None,
                    net_rx_bps: 0.0,
                    net_tx_bps: 0.0,
                    migration: None,
                })
                .collect(),
        }
    }

    fn running(id: &str) -> MigrationObs {
        MigrationObs {
            id: id.into(),
            phase: MigrationPhase::Running,
            vm_on_destination: false,
            error: None,
            transferred_bytes: None,
        }
    }

    #[test]
    fn unreachable_after_the_limit_with_its_last_vms_then_back() {
        let mut r = Reach::new(3);
        r.answered(host("h1", &["a", "b"]), vec![running("m1")]);
        for miss in 1..=2 {
            let (obs, migs, sight) = r.missed("h1", "timeout".into());
            assert!(obs.reachable, "miss {miss} is within the grace period");
            assert_eq!(migs, [running("m1")], "the last report stands");
            assert_eq!((sight.answered, sight.misses), (false, miss));
        }
        let (obs, migs, sight) = r.missed("h1", "timeout".into());
        assert!(!obs.reachable);
        assert_eq!(obs.vms.len(), 2, "its VMs are kept as last seen");
        assert!(migs.is_empty());
        assert_eq!(sight.error.as_deref(), Some("timeout"));
        let (obs, _, sight) = r.answered(host("h1", &["a"]), vec![]);
        assert!(obs.reachable && sight.answered);
        assert_eq!(sight.misses, 0);
        let (obs, _, _) = r.missed("h1", "x".into());
        assert_eq!((obs.reachable, obs.vms.len()), (true, 1));
    }

    #[test]
    fn a_host_never_seen_is_unreachable_and_empty() {
        let mut r = Reach::new(3);
        let (obs, _, _) = r.missed("h9", "refused".into());
        assert!(!obs.reachable);
        assert_eq!((obs.cpus, obs.vms.len()), (0.0, 0));
    }

    #[test]
    fn remembered_hosts_are_unreachable_until_they_answer() {
        let mut r = Reach::new(2);
        r.remember(vec![host("h1", &["a"])]);
        let (obs, _, _) = r.missed("h1", "down".into());
        assert!(!obs.reachable);
        assert_eq!(obs.vms[0].name, "a");
        let (obs, _, _) = r.answered(host("h1", &[]), vec![]);
        assert!(obs.reachable);
        r.remember(vec![host("h1", &["stale"])]);
        let (obs, _, _) = r.missed("h1", "x".into());
        assert!(
            obs.vms.is_empty(),
            "a host seen in this run keeps what it has"
        );
    }

    #[test]
    fn the_limit_is_at_least_one() {
        let mut r = Reach::new(0);
        r.answered(host("h1", &[]), vec![]);
        assert!(!r.missed("h1", "x".into()).0.reachable);
    }
}
