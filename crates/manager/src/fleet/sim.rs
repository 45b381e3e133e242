//! [`SimFleet`]: the simulator as the manager's fleet. `drover_sim::live` already speaks core's
//! control types (it reports [`Observation`]s and answers [`Action`]s with [`Outcome`]s, in
//! virtual time), so this adapter only ties the model's time to the loop's clock, reports the
//! tracked migrations as agents do, and locks the model for each call. A trace (a PlanetLab
//! day, a CSV, a synthetic day, surges for sudden overloads) then drives the whole manager,
//! store and API included, without QEMU or agents.
//!
//! - **Time**: the model's time is the clock's minus the clock's time when the fleet was made
//!   (with a [`crate::clock::VirtualClock`] at 0, the same numbers). Every call first advances
//!   the model to the clock's time ([`drover_sim::live::LiveSim::advance`]): a sleep of the
//!   loop jumps the virtual clock, the next look finds the world moved on by as much.
//!   [`SimFleet::catch_up`] does it ahead of a look, so that a benchmark times the manager
//!   and not the world it watches.
//! - **Migrations**: a migration's id is its move's id; the model keeps every migration it
//!   ever started, so a [`Tracked`] migration is reported however long ago it ended (the
//!   model's own observation lists recent ones only), an id it never saw as
//!   `MigrationPhase::Unknown`, and a repeated `migrate` with a known id starts nothing and is
//!   accepted, as an agent's 409 is read.
//! - **Reachability**: every simulated agent answers every poll.

use super::{AgentSight, Finished, Fleet, MigrateOrder, Sight, Tracked};
use crate::clock::Clock;
use crate::store::{HostSpec, Json};
use drover_core::control::{
    Action, ControlSettings, MigrationObs, MigrationPhase, Observation, Outcome,
};
use drover_sim::live::LiveSim;
use std::future::{ready, Future};
use std::sync::{Arc, Mutex, MutexGuard};

/// The scheme of the agent URL each simulated host is stored with (`sim://h0042`).
pub const URL_SCHEME: &str = "sim://";

/// The simulated cluster as the manager's fleet (see the module doc).
pub struct SimFleet {
    clock: Arc<dyn Clock>,
    /// Clock time at which the model's time was 0, s.
    origin_s: f64,
    hosts: Vec<String>,
    sim: Mutex<LiveSim>,
}

impl std::fmt::Debug for SimFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFleet")
            .field("hosts", &self.hosts.len())
            .field("origin_s", &self.origin_s)
            .finish_non_exhaustive()
    }
}

impl SimFleet {
    /// The model `sim` as a fleet on `clock`: the model's present is the clock's now.
    pub fn new(sim: LiveSim, clock: Arc<dyn Clock>) -> SimFleet {
        let origin_s = clock.now_s() - sim.now_s();
        let hosts = sim.host_names().map(str::to_string).collect();
        SimFleet {
            clock,
            origin_s,
            hosts,
            sim: Mutex::new(sim),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LiveSim> {
        // A panic while the model was borrowed leaves it between two events at worst; the
        // next call advances it from where it is.
        self.sim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The model's time for the clock's now, s.
    pub fn model_now_s(&self) -> f64 {
        self.clock.now_s() - self.origin_s
    }

    /// The model, advanced to the clock's time, for `f` to read or change (add a surge, read
    /// the measures, find a VM).
    pub fn with<R>(&self, f: impl FnOnce(&mut LiveSim) -> R) -> R {
        let now = self.model_now_s();
        let mut sim = self.lock();
        sim.advance(now);
        f(&mut sim)
    }

    /// Advances the model to the clock's time now, so that the next look finds it there.
    pub fn catch_up(&self) {
        self.with(|_| ());
    }

    /// The inventory the manager stores: every host, in the model's order, with a `sim://`
    /// agent URL and no power model of its own (see [`SimFleet::control_settings`]).
    pub fn inventory(&self) -> Vec<HostSpec> {
        self.hosts
            .iter()
            .map(|name| HostSpec {
                name: name.clone(),
                agent_url: format!("{URL_SCHEME}{name}"),
                power: None,
            })
            .collect()
    }

    /// `base` with the model's power per host and link bandwidth, so that the manager's energy
    /// account and technique choice see the hardware the model runs.
    pub fn control_settings(&self, base: ControlSettings) -> ControlSettings {
        self.lock().control_settings(base)
    }

    fn observe_now(&self, tracked: &[Tracked]) -> Sight {
        let now = self.model_now_s();
        let mut sim = self.lock();
        let Observation { hosts, .. } = sim.observe(now);
        let migrations: Vec<MigrationObs> = tracked
            .iter()
            .map(|t| {
                sim.migration(&t.move_id).unwrap_or_else(|| MigrationObs {
                    id: t.move_id.clone(),
                    phase: MigrationPhase::Unknown,
                    vm_on_destination: false,
                    error: None,
                    transferred_bytes: None,
                })
            })
            .collect();
        drop(sim);
        let finished = migrations
            .iter()
            .filter(|m| !matches!(m.phase, MigrationPhase::Running | MigrationPhase::Unknown))
            .filter_map(|m| {
                // A MigrationObs always serializes; a failure would only lose the record.
                let record = Json::of(&SimRecord::of(m)).ok()?;
                Some(Finished {
                    move_id: m.id.clone(),
                    record,
                })
            })
            .collect();
        let agents = hosts
            .iter()
            .map(|h| AgentSight {
                host: h.name.clone(),
                answered: true,
                misses: 0,
                error: None,
            })
            .collect();
        Sight {
            observation: Observation { hosts, migrations },
            agents,
            finished,
        }
    }

    fn apply_now(&self, action: &Action) -> Outcome {
        let now = self.model_now_s();
        self.lock().apply(action, now)
    }
}

/// The result record stored for a simulated migration that ended (an agent's record has more:
/// timings, bytes, the plan it ran).
#[derive(serde::Serialize)]
struct SimRecord<'a> {
    id: &'a str,
    state: MigrationPhase,
    vm_on_destination: bool,
    error: Option<&'a str>,
    /// Always `"simulator"`: this record came from `drover_sim::live`, not an agent.
    source: &'static str,
}

impl<'a> SimRecord<'a> {
    fn of(m: &'a MigrationObs) -> SimRecord<'a> {
        SimRecord {
            id: &m.id,
            state: m.phase,
            vm_on_destination: m.vm_on_destination,
            error: m.error.as_deref(),
            source: "simulator",
        }
    }
}

impl Fleet for SimFleet {
    fn hosts(&self) -> Vec<String> {
        self.hosts.clone()
    }

    fn observe(&self, tracked: &[Tracked]) -> impl Future<Output = Sight> + Send {
        ready(self.observe_now(tracked))
    }

    fn migrate(&self, order: MigrateOrder<'_>) -> impl Future<Output = Outcome> + Send {
        let action = Action::Migrate {
            move_id: order.move_id.to_string(),
            vm: order.vm.to_string(),
            from: order.from.to_string(),
            to: order.to.to_string(),
            technique: order.technique,
            knobs: order.knobs.clone(),
        };
        ready(self.apply_now(&action))
    }

    fn cancel(&self, move_id: &str, from: &str) -> impl Future<Output = Outcome> + Send {
        let action = Action::Cancel {
            move_id: move_id.to_string(),
            from: from.to_string(),
        };
        ready(self.apply_now(&action))
    }

    fn standby(&self, host: &str) -> impl Future<Output = Outcome> + Send {
        let action = Action::Standby {
            host: host.to_string(),
        };
        ready(self.apply_now(&action))
    }

    fn wake(&self, host: &str) -> impl Future<Output = Outcome> + Send {
        let action = Action::Wake {
            host: host.to_string(),
        };
        ready(self.apply_now(&action))
    }

    /// Core's action as it is: the model takes it without translation.
    fn act<'a>(&'a self, action: &'a Action) -> impl Future<Output = Outcome> + Send + 'a {
        ready(self.apply_now(action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::VirtualClock;
    use drover_core::control::{PowerState, VmPresence};
    use drover_core::dc::VmType;
    use drover_core::migration::{PlanKnobs, Technique};
    use drover_sim::live::{HostSpec as SimHost, LiveSpec, Placement};
    use drover_sim::Workload;

    /// Two 4-core hosts; `vm0` (1 vCPU, 1 GiB, half busy) on `h0`.
    fn fleet(clock: Arc<VirtualClock>) -> SimFleet {
        let spec = LiveSpec {
            vm_types: vec![VmType {
                name: "t".into(),
                mips: 1000.0,
                pes: 1,
                ram_mb: 1024,
                bw_mbps: 100.0,
            }],
            dirty_bps_range: (10e6, 10e6),
            wss_share_range: (0.25, 0.25),
            placement: Placement::Given(vec![0]),
            wake_delay_s: 20.0,
            keep_ended_s: 30.0,
            ..LiveSpec::new(vec![SimHost {
                count: 2,
                cpus: 4.0,
                memory_bytes: 16 << 30,
                power: ControlSettings::default().default_power,
            }])
        };
        let work = Workload::new("t".into(), vec!["vm0".into()], 2, vec![0.5, 0.5]);
        let sim = LiveSim::new(spec, work).expect("a valid model");
        SimFleet::new(sim, clock)
    }

    fn migrate(id: &str) -> Action {
        Action::Migrate {
            move_id: id.into(),
            vm: "vm0".into(),
            from: "h0".into(),
            to: "h1".into(),
            technique: Technique::Precopy,
            knobs: PlanKnobs::default(),
        }
    }

    #[tokio::test]
    async fn the_model_follows_the_clock_and_reports_tracked_migrations_forever() {
        let clock = Arc::new(VirtualClock::at(1_000.0));
        let f = fleet(clock.clone());
        assert_eq!(f.hosts(), ["h0", "h1"]);
        assert_eq!(f.inventory()[1].agent_url, "sim://h1");
        clock.advance(10.0);
        let s = f.observe(&[]).await;
        assert_eq!(f.with(|sim| sim.now_s()), 10.0);
        assert!(s.agents.iter().all(|a| a.answered));
        assert_eq!(s.observation.hosts[0].cpu_demand_cores, 0.5);
        assert!(s.observation.migrations.is_empty());

        let accepted = Outcome::MigrateAccepted {
            move_id: "m-1".into(),
        };
        assert_eq!(f.act(&migrate("m-1")).await, accepted);
        // Asked again (a manager restarted between acting and storing): nothing new starts.
        assert_eq!(f.act(&migrate("m-1")).await, accepted);
        let tracked = [
            Tracked {
                move_id: "m-1".into(),
                from: "h0".into(),
            },
            Tracked {
                move_id: "m-never".into(),
                from: "h0".into(),
            },
        ];
        let s = f.observe(&tracked).await;
        let phases: Vec<_> = s.observation.migrations.iter().map(|m| m.phase).collect();
        assert_eq!(phases, [MigrationPhase::Running, MigrationPhase::Unknown]);
        assert_eq!(s.observation.hosts[1].vms[0].presence, VmPresence::Incoming);
        assert!(s.finished.is_empty());

        // Long after the end (past the model's own listing of ended migrations).
        clock.advance(600.0);
        let s = f.observe(&tracked[..1]).await;
        assert_eq!(s.observation.migrations[0].phase, MigrationPhase::Completed);
        assert!(s.observation.migrations[0].vm_on_destination);
        assert_eq!(
            f.with(|sim| sim.host_of("vm0").map(str::to_string))
                .as_deref(),
            Some("h1")
        );
        assert_eq!(s.finished.len(), 1);
        let record: serde_json::Value =
            serde_json::from_str(s.finished[0].record.as_str()).expect("JSON");
        assert_eq!(record["state"], "completed");
        assert_eq!(record["source"], "simulator");
    }

    #[tokio::test]
    async fn power_and_refusals_answer_as_agents_do() {
        let clock = Arc::new(VirtualClock::at(0.0));
        let f = fleet(clock.clone());
        assert!(matches!(
            f.standby("h0").await,
            Outcome::Standby { error: Some(_), .. }
        ));
        assert_eq!(
            f.standby("h1").await,
            Outcome::Standby {
                host: "h1".into(),
                error: None
            }
        );
        assert!(matches!(
            f.act(&migrate("m-2")).await,
            Outcome::MigrateRefused { .. }
        ));
        f.wake("h1").await;
        assert_eq!(
            f.with(|sim| sim.power_state("h1")),
            Some(PowerState::Waking)
        );
        clock.advance(20.0);
        assert_eq!(
            f.with(|sim| sim.power_state("h1")),
            Some(PowerState::Active)
        );
        let knobs = PlanKnobs::default();
        let order = MigrateOrder {
            move_id: "m-3",
            vm: "vm0",
            from: "h0",
            to: "h1",
            technique: Technique::Postcopy,
            knobs: &knobs,
        };
        assert!(matches!(
            f.migrate(order).await,
            Outcome::MigrateAccepted { .. }
        ));
        assert!(matches!(
            f.cancel("m-3", "h1").await,
            Outcome::Cancel { error: Some(_), .. }
        ));
    }
}
