//! [`FakeFleet`]: a scripted cluster for the loop's tests, in the loop's (virtual) time.
//!
//! It stands for the agents and [`super::AgentFleet`] together, keeping the agents' rules:
//! a migration takes [`FakeFleet::set_migration_time`] seconds of clock time, then its VM runs
//! on the destination; a second request with a known id starts nothing and is accepted (the
//! agent's 409 read back as its record); an agent that does not answer refuses every call as
//! unreachable and misses its polls ([`super::reach`] decides when its host is unreachable);
//! a host in standby takes no VM, and is refused standby while it runs one; a wake takes
//! [`FakeFleet::set_wake_delay`] seconds. Every request is counted, so a test can assert
//! that each migration started exactly once across a manager's crashes: the fake's state
//! lives as long as the test holds it, like real agents outlive a manager.

use super::reach::Reach;
use super::{AgentSight, Finished, Fleet, MigrateOrder, Sight, Tracked};
use crate::clock::Clock;
use crate::store::Json;
use drover_core::control::{
    HostObs, MigrationObs, MigrationPhase, Observation, Outcome, PowerState, VmObs, VmPresence,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

/// One scripted migration.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeMigration {
    pub id: String,
    pub vm: String,
    pub from: String,
    pub to: String,
    pub started_s: f64,
    pub ends_s: f64,
    pub phase: MigrationPhase,
    /// Requests received with this id, the first included.
    pub requests: u32,
}

#[derive(Debug, Clone)]
struct FakeHost {
    obs: HostObs,
    answering: bool,
    ready_s: Option<f64>,
}

#[derive(Debug)]
struct Cluster {
    hosts: Vec<FakeHost>,
    migrations: BTreeMap<String, FakeMigration>,
    reach: Reach,
    migration_s: f64,
    wake_delay_s: f64,
    refusals: BTreeMap<String, String>,
    calls: Vec<String>,
}

/// The scripted cluster.
pub struct FakeFleet {
    clock: Arc<dyn Clock>,
    inner: Mutex<Cluster>,
}

impl std::fmt::Debug for FakeFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeFleet").finish_non_exhaustive()
    }
}

fn vm(name: &str, vcpus: u32, memory_bytes: u64, demand: f64) -> VmObs {
    VmObs {
        name: name.to_string(),
        presence: VmPresence::Running,
        vcpus,
        memory_bytes,
        cpu_demand_cores: demand,
        dirty_rate_bps: Some(1e6),
        wss_bytes: None,
        net_rx_bps: 0.0,
        net_tx_bps: 0.0,
        migration: None,
    }
}

impl Cluster {
    fn host(&mut self, name: &str) -> Option<&mut FakeHost> {
        self.hosts.iter_mut().find(|h| h.obs.name == name)
    }

    /// Brings migrations and wakes up to `now`.
    fn advance(&mut self, now: f64) {
        let due: Vec<String> = self
            .migrations
            .values()
            .filter(|m| m.phase == MigrationPhase::Running && now >= m.ends_s)
            .map(|m| m.id.clone())
            .collect();
        for id in due {
            let Some(m) = self.migrations.get_mut(&id) else {
                continue;
            };
            m.phase = MigrationPhase::Completed;
            let m = m.clone();
            let moved = self.host(&m.from).and_then(|h| {
                let i = h.obs.vms.iter().position(|v| v.name == m.vm)?;
                Some(h.obs.vms.remove(i))
            });
            if let (Some(mut v), Some(to)) = (moved, self.host(&m.to)) {
                to.obs.vms.retain(|x| x.name != m.vm);
                v.migration = None;
                to.obs.vms.push(v);
            }
        }
        for h in &mut self.hosts {
            if h.ready_s.is_some_and(|t| now >= t) {
                h.ready_s = None;
                h.obs.power = PowerState::Active;
            }
        }
    }

    fn start(&mut self, order: &MigrateOrder<'_>, now: f64) -> Result<(), String> {
        if let Some(why) = self.refusals.get(order.vm) {
            return Err(why.clone());
        }
        let dest_ok = self
            .host(order.to)
            .is_some_and(|h| h.obs.power == PowerState::Active);
        if !dest_ok {
            return Err(format!("{} takes no VM now", order.to));
        }
        let from = self
            .host(order.from)
            .ok_or_else(|| format!("no host {}", order.from))?;
        let v = from
            .obs
            .vms
            .iter_mut()
            .find(|v| v.name == order.vm && v.presence == VmPresence::Running)
            .ok_or_else(|| format!("no VM {} on {}", order.vm, order.from))?;
        if v.migration.is_some() {
            return Err(format!("{} is already migrating", order.vm));
        }
        v.migration = Some(order.move_id.to_string());
        let mut incoming = v.clone();
        incoming.presence = VmPresence::Incoming;
        incoming.cpu_demand_cores = 0.0;
        if let Some(to) = self.host(order.to) {
            to.obs.vms.push(incoming);
        }
        let m = FakeMigration {
            id: order.move_id.to_string(),
            vm: order.vm.to_string(),
            from: order.from.to_string(),
            to: order.to.to_string(),
            started_s: now,
            ends_s: now + self.migration_s,
            phase: MigrationPhase::Running,
            requests: 1,
        };
        self.migrations.insert(m.id.clone(), m);
        Ok(())
    }

    fn report(&self, id: &str) -> MigrationObs {
        match self.migrations.get(id) {
            Some(m) => MigrationObs {
                id: id.to_string(),
                phase: m.phase,
                vm_on_destination: m.phase == MigrationPhase::Completed,
                error: None,
                transferred_bytes: None,
            },
            None => MigrationObs {
                id: id.to_string(),
                phase: MigrationPhase::Unknown,
                vm_on_destination: false,
                error: None,
                transferred_bytes: None,
            },
        }
    }
}

impl FakeFleet {
    /// An empty cluster on `clock`: migrations take 3 s, wakes 5 s, 3 missed polls make a
    /// host unreachable.
    pub fn new(clock: Arc<dyn Clock>) -> FakeFleet {
        FakeFleet {
            clock,
            inner: Mutex::new(Cluster {
                hosts: Vec::new(),
                migrations: BTreeMap::new(),
                reach: Reach::new(super::DEFAULT_MISS_LIMIT),
                migration_s: 3.0,
                wake_delay_s: 5.0,
                refusals: BTreeMap::new(),
                calls: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cluster> {
        // Test scaffolding: a panic in a test already failed it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an active host with `cpus` cores and `memory_bytes`.
    pub fn add_host(&self, name: &str, cpus: f64, memory_bytes: u64) {
        self.lock().hosts.push(FakeHost {
            obs: HostObs {
                name: name.to_string(),
                reachable: true,
                power: PowerState::Active,
                cpus,
                memory_bytes,
                cpu_demand_cores: 0.0,
                vms: Vec::new(),
            },
            answering: true,
            ready_s: None,
        });
    }

    /// Adds a running VM wanting `demand` cores to `host`.
    pub fn add_vm(&self, host: &str, name: &str, memory_bytes: u64, demand: f64) {
        if let Some(h) = self.lock().host(host) {
            h.obs.vms.push(vm(name, 2, memory_bytes, demand));
        }
    }

    /// Deletes VM `name` wherever it runs.
    pub fn remove_vm(&self, name: &str) {
        for h in &mut self.lock().hosts {
            h.obs.vms.retain(|v| v.name != name);
        }
    }

    /// Restarts `host`'s agent as one that could not establish how its migrations ended:
    /// each running migration it is the source of is reported `interrupted`, and its VM runs
    /// on the source again (the destination's incoming copy is gone).
    pub fn restart_agent(&self, host: &str) {
        let mut c = self.lock();
        let now = self.clock.now_s();
        c.advance(now);
        let broken: Vec<(String, String, String)> = c
            .migrations
            .values_mut()
            .filter(|m| m.from == host && m.phase == MigrationPhase::Running)
            .map(|m| {
                m.phase = MigrationPhase::Interrupted;
                (m.id.clone(), m.vm.clone(), m.to.clone())
            })
            .collect();
        for (_, vm, to) in broken {
            if let Some(h) = c.host(&to) {
                h.obs.vms.retain(|v| v.name != vm);
            }
            if let Some(h) = c.host(host) {
                for v in h.obs.vms.iter_mut().filter(|v| v.name == vm) {
                    v.migration = None;
                }
            }
        }
    }

    /// Changes what VM `name` wants, cores.
    pub fn set_demand(&self, name: &str, demand: f64) {
        for h in &mut self.lock().hosts {
            for v in h.obs.vms.iter_mut().filter(|v| v.name == name) {
                if v.presence == VmPresence::Running {
                    v.cpu_demand_cores = demand;
                }
            }
        }
    }

    /// Makes `host`'s agent stop answering (`false`) or answer again.
    pub fn set_answering(&self, host: &str, answering: bool) {
        if let Some(h) = self.lock().host(host) {
            h.answering = answering;
        }
    }

    /// Misses in a row that make a host unreachable.
    pub fn set_miss_limit(&self, limit: u32) {
        self.lock().reach = Reach::new(limit);
    }

    /// How long each migration started from now on takes, s.
    pub fn set_migration_time(&self, s: f64) {
        self.lock().migration_s = s;
    }

    /// How long a wake takes, s.
    pub fn set_wake_delay(&self, s: f64) {
        self.lock().wake_delay_s = s;
    }

    /// Puts `host` in standby (it must run nothing).
    pub fn set_standby(&self, host: &str) {
        if let Some(h) = self.lock().host(host) {
            h.obs.power = PowerState::Standby;
        }
    }

    /// Every migration of VM `vm` is refused with `why` (None: accepted again).
    pub fn refuse_migrations(&self, vm: &str, why: Option<&str>) {
        let mut c = self.lock();
        match why {
            Some(why) => c.refusals.insert(vm.to_string(), why.to_string()),
            None => c.refusals.remove(vm),
        };
    }

    /// Every migration requested, by id.
    pub fn migrations(&self) -> BTreeMap<String, FakeMigration> {
        self.lock().migrations.clone()
    }

    /// The host running VM `vm`.
    pub fn host_of(&self, vm: &str) -> Option<String> {
        let now = self.clock.now_s();
        let mut c = self.lock();
        c.advance(now);
        c.hosts
            .iter()
            .find(|h| {
                h.obs
                    .vms
                    .iter()
                    .any(|v| v.name == vm && v.presence == VmPresence::Running)
            })
            .map(|h| h.obs.name.clone())
    }

    /// `host`'s power state.
    pub fn power(&self, host: &str) -> Option<PowerState> {
        let now = self.clock.now_s();
        let mut c = self.lock();
        c.advance(now);
        c.host(host).map(|h| h.obs.power)
    }

    /// Every call the fleet received, in order (`migrate m-1 a h1->h2`, `wake h3`, ...).
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    fn observe_now(&self, tracked: &[Tracked]) -> Sight {
        let now = self.clock.now_s();
        let mut c = self.lock();
        c.advance(now);
        let mut sight = Sight {
            observation: Observation::default(),
            agents: Vec::new(),
            finished: Vec::new(),
        };
        let hosts = c.hosts.clone();
        for h in hosts {
            let (obs, migrations, seen): (HostObs, Vec<MigrationObs>, AgentSight) = if h.answering {
                let mut obs = h.obs.clone();
                obs.cpu_demand_cores = obs
                    .vms
                    .iter()
                    .filter(|v| v.presence == VmPresence::Running)
                    .map(|v| v.cpu_demand_cores)
                    .sum();
                let mine: Vec<MigrationObs> = tracked
                    .iter()
                    .filter(|t| t.from == obs.name)
                    .map(|t| c.report(&t.move_id))
                    .collect();
                for m in mine.iter().filter(|m| is_final(m.phase)) {
                    let record = serde_json::json!({ "id": m.id, "state": m.phase });
                    if let Ok(record) = Json::of(&record) {
                        sight.finished.push(Finished {
                            move_id: m.id.clone(),
                            record,
                        });
                    }
                }
                c.reach.answered(obs, mine)
            } else {
                c.reach.missed(&h.obs.name, "connection refused".into())
            };
            sight.observation.hosts.push(obs);
            sight.observation.migrations.extend(migrations);
            sight.agents.push(seen);
        }
        sight
    }

    fn migrate_now(&self, order: &MigrateOrder<'_>) -> Outcome {
        let now = self.clock.now_s();
        let mut c = self.lock();
        c.advance(now);
        let move_id = order.move_id.to_string();
        c.calls.push(format!(
            "migrate {} {} {}->{}",
            order.move_id, order.vm, order.from, order.to
        ));
        if !c.host(order.from).is_some_and(|h| h.answering) {
            return Outcome::MigrateUnreachable {
                move_id,
                error: format!("cannot reach agent {}", order.from),
            };
        }
        if let Some(m) = c.migrations.get_mut(order.move_id) {
            // The agent refuses the duplicate id (409); its record says it exists: accepted.
            m.requests += 1;
            return Outcome::MigrateAccepted { move_id };
        }
        match c.start(order, now) {
            Ok(()) => Outcome::MigrateAccepted { move_id },
            Err(error) => Outcome::MigrateRefused { move_id, error },
        }
    }

    fn power_call(&self, host: &str, wake: bool) -> Option<String> {
        let now = self.clock.now_s();
        let mut c = self.lock();
        c.advance(now);
        let delay = c.wake_delay_s;
        c.calls
            .push(format!("{} {host}", if wake { "wake" } else { "standby" }));
        let Some(h) = c.host(host) else {
            return Some(format!("no host {host}"));
        };
        if !h.answering {
            return Some(format!("cannot reach agent {host}"));
        }
        match (wake, h.obs.power) {
            (true, PowerState::Standby) => {
                h.obs.power = PowerState::Waking;
                h.ready_s = Some(now + delay);
                None
            }
            (true, _) => None,
            (false, _) if !h.obs.vms.is_empty() => Some(format!("{host} runs VMs")),
            (false, _) => {
                h.obs.power = PowerState::Standby;
                h.ready_s = None;
                None
            }
        }
    }

    fn cancel_now(&self, move_id: &str, from: &str) -> Outcome {
        let now = self.clock.now_s();
        let mut c = self.lock();
        c.advance(now);
        c.calls.push(format!("cancel {move_id} {from}"));
        let error = match c.migrations.get_mut(move_id) {
            Some(m) if m.phase == MigrationPhase::Running => {
                m.phase = MigrationPhase::Cancelled;
                let (vm, to, from) = (m.vm.clone(), m.to.clone(), m.from.clone());
                if let Some(h) = c.host(&to) {
                    h.obs.vms.retain(|v| v.name != vm);
                }
                if let Some(h) = c.host(&from) {
                    for v in h.obs.vms.iter_mut().filter(|v| v.name == vm) {
                        v.migration = None;
                    }
                }
                None
            }
            Some(_) => Some(format!("migration {move_id} is over")),
            None => Some(format!("no migration {move_id}")),
        };
        Outcome::Cancel {
            move_id: move_id.to_string(),
            error,
        }
    }
}

fn is_final(p: MigrationPhase) -> bool {
    !matches!(p, MigrationPhase::Running | MigrationPhase::Unknown)
}

impl Fleet for FakeFleet {
    fn hosts(&self) -> Vec<String> {
        self.lock()
            .hosts
            .iter()
            .map(|h| h.obs.name.clone())
            .collect()
    }

    fn observe(&self, tracked: &[Tracked]) -> impl Future<Output = Sight> + Send {
        let sight = self.observe_now(tracked);
        async move { sight }
    }

    fn migrate(&self, order: MigrateOrder<'_>) -> impl Future<Output = Outcome> + Send {
        let outcome = self.migrate_now(&order);
        async move { outcome }
    }

    fn cancel(&self, move_id: &str, from: &str) -> impl Future<Output = Outcome> + Send {
        let outcome = self.cancel_now(move_id, from);
        async move { outcome }
    }

    fn standby(&self, host: &str) -> impl Future<Output = Outcome> + Send {
        let error = self.power_call(host, false);
        let host = host.to_string();
        async move { Outcome::Standby { host, error } }
    }

    fn wake(&self, host: &str) -> impl Future<Output = Outcome> + Send {
        let error = self.power_call(host, true);
        let host = host.to_string();
        async move { Outcome::Wake { host, error } }
    }

    fn remember(&self, last_seen: Vec<HostObs>) {
        self.lock().reach.remember(last_seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::VirtualClock;
    use drover_core::migration::{PlanKnobs, Technique};

    const GIB: u64 = 1 << 30;

    fn order<'a>(id: &'a str, knobs: &'a PlanKnobs) -> MigrateOrder<'a> {
        MigrateOrder {
            move_id: id,
            vm: "a",
            from: "h1",
            to: "h2",
            technique: Technique::Postcopy,
            knobs,
        }
    }

    #[tokio::test]
    async fn a_migration_takes_its_time_and_a_duplicate_starts_nothing() {
        let clock = Arc::new(VirtualClock::at(0.0));
        let f = FakeFleet::new(clock.clone());
        f.add_host("h1", 4.0, 8 * GIB);
        f.add_host("h2", 4.0, 8 * GIB);
        f.add_vm("h1", "a", GIB, 1.0);
        let knobs = PlanKnobs::default();
        let accepted = Outcome::MigrateAccepted {
            move_id: "m-1".into(),
        };
        assert_eq!(f.migrate(order("m-1", &knobs)).await, accepted);
        assert_eq!(f.migrate(order("m-1", &knobs)).await, accepted);
        assert_eq!(f.migrations()["m-1"].requests, 2);
        let tracked = [Tracked {
            move_id: "m-1".into(),
            from: "h1".into(),
        }];
        let s = f.observe(&tracked).await;
        assert_eq!(s.observation.migrations[0].phase, MigrationPhase::Running);
        assert_eq!(s.observation.hosts[1].vms[0].presence, VmPresence::Incoming);
        clock.advance(3.0);
        let s = f.observe(&tracked).await;
        assert_eq!(s.observation.migrations[0].phase, MigrationPhase::Completed);
        assert_eq!(s.finished.len(), 1);
        assert_eq!(f.host_of("a").as_deref(), Some("h2"));
        assert!(s.observation.hosts[0].vms.is_empty());
    }

    #[tokio::test]
    async fn refusals_unreachable_agents_and_power() {
        let clock = Arc::new(VirtualClock::at(0.0));
        let f = FakeFleet::new(clock.clone());
        f.add_host("h1", 4.0, 8 * GIB);
        f.add_host("h2", 4.0, 8 * GIB);
        f.add_vm("h1", "a", GIB, 1.0);
        let knobs = PlanKnobs::default();
        f.refuse_migrations("a", Some("no room"));
        assert!(matches!(
            f.migrate(order("m-1", &knobs)).await,
            Outcome::MigrateRefused { .. }
        ));
        f.refuse_migrations("a", None);
        f.set_answering("h1", false);
        assert!(matches!(
            f.migrate(order("m-2", &knobs)).await,
            Outcome::MigrateUnreachable { .. }
        ));
        let s = f.observe(&[]).await;
        assert!(!s.agents[0].answered);
        assert!(matches!(
            f.standby("h1").await,
            Outcome::Standby { error: Some(_), .. }
        ));
        assert_eq!(
            f.standby("h2").await,
            Outcome::Standby {
                host: "h2".into(),
                error: None
            }
        );
        f.set_answering("h1", true);
        assert!(matches!(
            f.migrate(order("m-3", &knobs)).await,
            Outcome::MigrateRefused { .. }
        ));
        f.set_wake_delay(5.0);
        f.wake("h2").await;
        assert_eq!(f.power("h2"), Some(PowerState::Waking));
        clock.advance(5.0);
        assert_eq!(f.power("h2"), Some(PowerState::Active));
        assert_eq!(f.calls()[0], "migrate m-1 a h1->h2");
    }
}
