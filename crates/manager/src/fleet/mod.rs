//! The hosts the manager drives, behind one trait: [`Fleet`] looks at every host at once and
//! carries out core's [`Action`]s, answering with core's [`Outcome`]s. The control loop sees
//! nothing else of the hosts.
//!
//! Implementations:
//! - [`AgentFleet`]: the real agents, over drover-api's typed `AgentClient`;
//! - [`FakeFleet`]: a scripted cluster for tests (hosts, VMs, migrations that take scripted
//!   time, agents that stop answering, refusals), in the loop's virtual time;
//! - [`SimFleet`]: the simulator (`drover_sim::live`), which already produces core
//!   `Observation`s and applies core `Action`s in virtual time, so its adapter is this trait's
//!   five methods and no translation. It drives its model from the same clock the loop sleeps
//!   on (with [`crate::clock::VirtualClock`] a sleep jumps the clock; `observe` advances the
//!   model to the clock's time), keeps [`Tracked`] migrations' reports in
//!   `Observation::migrations`, and answers a repeated `migrate` with an id it knows as
//!   accepted, as an agent's 409 is.
//!
//! Rules every implementation keeps, so that the loop's crash safety holds:
//! - a migration's id is the move's id; asking again with a known id starts nothing and
//!   answers `MigrateAccepted` (the agent refuses the duplicate with 409; the fleet reads the
//!   record and takes it as accepted);
//! - an agent that cannot be reached is a miss, not an answer: after `miss_limit` misses in a
//!   row its host is `reachable: false`, with the VMs it last reported ([`reach`]);
//! - an agent's answer is all or nothing: its metrics, its VMs, and the record of each
//!   [`Tracked`] migration it is the source of (a record it does not have is reported as
//!   `MigrationPhase::Unknown`; a lookup that fails makes the whole poll a miss, since core
//!   takes a running move without a report as lost).

pub mod agent;
pub mod fake;
pub mod reach;
pub mod sim;
pub mod translate;

pub use agent::{AgentFleet, AgentSpec};
pub use fake::FakeFleet;
pub use reach::{Reach, DEFAULT_MISS_LIMIT};
pub use sim::SimFleet;

use crate::store::Json;
use drover_core::control::{Action, HostObs, MoveId, Observation, Outcome};
use drover_core::migration::{PlanKnobs, Technique};
use serde::{Deserialize, Serialize};
use std::future::Future;

/// How agents are polled (the configuration file's `[poll]` table).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollConfig {
    /// Every call to an agent gives up after this long, s (0.05 to 60): 2. A black-holed
    /// agent makes each look this long until it is unreachable (a refused connection fails
    /// at once).
    pub timeout_s: f64,
    /// Polls missed in a row that make a host unreachable (1 to 100): [`DEFAULT_MISS_LIMIT`].
    pub miss_limit: u32,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            timeout_s: 2.0,
            miss_limit: DEFAULT_MISS_LIMIT,
        }
    }
}

impl PollConfig {
    /// Every limit.
    ///
    /// # Errors
    /// `(field, why)` for the first value out of range.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.timeout_s.is_finite() && (0.05..=60.0).contains(&self.timeout_s)) {
            let why = format!("{} s: expected 0.05 to 60 s", self.timeout_s);
            return Err(("timeout_s", why));
        }
        if !(1..=100).contains(&self.miss_limit) {
            let why = format!("{}: expected 1 to 100 polls", self.miss_limit);
            return Err(("miss_limit", why));
        }
        Ok(())
    }

    /// The timeout as a duration (a tenth of a second if it is not a valid number: callers
    /// validate first).
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::try_from_secs_f64(self.timeout_s)
            .unwrap_or(std::time::Duration::from_millis(100))
    }
}

/// A migration in flight the fleet must report on: the move's id and its source host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub move_id: MoveId,
    pub from: String,
}

/// How one host's agent answered a look.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSight {
    pub host: String,
    /// It answered this look.
    pub answered: bool,
    /// Polls missed in a row (0 when it answered).
    pub misses: u32,
    /// Why the last poll failed.
    pub error: Option<String>,
}

/// A migration record the source agent reports final, kept as the agent sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub move_id: MoveId,
    /// The agent's record (drover-api's `MigrationRecord`, result included).
    pub record: Json,
}

/// One look at the fleet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sight {
    /// What core's step reads: every host in inventory order, and the tracked migrations.
    pub observation: Observation,
    /// How each agent answered, in inventory order.
    pub agents: Vec<AgentSight>,
    /// Tracked migrations whose record is final (stored as their move's result).
    pub finished: Vec<Finished>,
}

/// A `Migrate` action's fields, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct MigrateOrder<'a> {
    /// The move's id, used as the migration's id on the source agent.
    pub move_id: &'a str,
    pub vm: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub technique: Technique,
    pub knobs: &'a PlanKnobs,
}

/// The hosts, as the control loop sees them. Methods take `&self` so that one look's actions
/// run concurrently; the futures are `Send` so the loop can run on any runtime thread.
pub trait Fleet: Send + Sync {
    /// The hosts' names, in inventory order.
    fn hosts(&self) -> Vec<String>;

    /// One look at every host, concurrently, each within the fleet's timeout; `tracked`
    /// says which migrations to report.
    fn observe(&self, tracked: &[Tracked]) -> impl Future<Output = Sight> + Send;

    /// Asks `order.from` to migrate `order.vm` to `order.to` as migration `order.move_id`.
    fn migrate(&self, order: MigrateOrder<'_>) -> impl Future<Output = Outcome> + Send;

    /// Asks `from` to cancel migration `move_id`.
    fn cancel(&self, move_id: &str, from: &str) -> impl Future<Output = Outcome> + Send;

    /// Puts an empty `host` in standby.
    fn standby(&self, host: &str) -> impl Future<Output = Outcome> + Send;

    /// Wakes `host`.
    fn wake(&self, host: &str) -> impl Future<Output = Outcome> + Send;

    /// What the hosts ran when the manager last saw them (read back from the store at
    /// start): a host whose agent does not answer after a restart is reported with these
    /// VMs instead of none. Fleets that keep no such memory ignore it.
    fn remember(&self, _last_seen: Vec<HostObs>) {}

    /// Carries out one of core's actions.
    fn act<'a>(&'a self, action: &'a Action) -> impl Future<Output = Outcome> + Send + 'a {
        async move {
            match action {
                Action::Migrate {
                    move_id,
                    vm,
                    from,
                    to,
                    technique,
                    knobs,
                } => {
                    let order = MigrateOrder {
                        move_id,
                        vm,
                        from,
                        to,
                        technique: *technique,
                        knobs,
                    };
                    self.migrate(order).await
                }
                Action::Cancel { move_id, from } => self.cancel(move_id, from).await,
                Action::Standby { host } => self.standby(host).await,
                Action::Wake { host } => self.wake(host).await,
            }
        }
    }
}
