//! The loop in virtual time against the scripted fleet: `looks` (an overload relieved, an
//! unreachable agent, recommend then approve, operator commands, store failures, the loop
//! run whole), `crash` (killed between stored and acted, between acted and recorded, at
//! every stage of a drain, and restarted on the SQLite store) and `sim` (the loop over the
//! simulator-backed fleet: an overload relieved, consolidation into standby, decisions
//! replayed). No test waits for real time: the clock is virtual, every loop is bounded.

mod crash;
mod looks;
mod sim;

use super::{Daemon, LookReport, LoopConfig, Parts};
use crate::clock::VirtualClock;
use crate::fleet::FakeFleet;
use crate::handle::{Manager, ManagerError};
use crate::store::{HostSpec, MoveQuery, PlanQuery, Store};
use drover_core::control::{Action, ControlSettings, Move, Plan, PlanState};
use std::future::Future;
use std::sync::Arc;

pub(super) const GIB: u64 = 1 << 30;

/// Looks a test may take before it gives up (virtual seconds, at one look a second).
pub(super) const MAX_LOOKS: usize = 120;

/// A cluster, its clock and its store, which outlive any one manager.
pub(super) struct Rig {
    pub clock: Arc<VirtualClock>,
    pub fleet: Arc<FakeFleet>,
    pub store: Arc<dyn Store>,
    pub settings: ControlSettings,
}

/// Three 4-core, 16 GiB hosts: h1 runs a (2 cores), b (1) and c (0.5): 87.5%, under `hot`;
/// h2 runs d (1.5); h3 is empty. Standby is off unless a test wants it.
pub(super) fn cluster(store: Arc<dyn Store>) -> Rig {
    let clock = Arc::new(VirtualClock::at(1_000.0));
    let fleet = Arc::new(FakeFleet::new(clock.clone()));
    for h in ["h1", "h2", "h3"] {
        fleet.add_host(h, 4.0, 16 * GIB);
    }
    fleet.add_vm("h1", "a", 2 * GIB, 2.0);
    fleet.add_vm("h1", "b", GIB, 1.0);
    fleet.add_vm("h1", "c", GIB, 0.5);
    fleet.add_vm("h2", "d", GIB, 1.5);
    Rig {
        clock,
        fleet,
        store,
        settings: ControlSettings {
            standby: false,
            ..ControlSettings::default()
        },
    }
}

impl Rig {
    /// A manager over the rig (a fresh one after a crash: same store, fleet and clock).
    pub fn start(&self) -> (Daemon<FakeFleet>, Manager) {
        let inventory = self
            .fleet_hosts()
            .into_iter()
            .map(|name| HostSpec {
                agent_url: format!("http://{name}.test:7300"),
                name,
                power: None,
            })
            .collect();
        Daemon::start(Parts {
            fleet: self.fleet.clone(),
            store: self.store.clone(),
            clock: self.clock.clone(),
            inventory,
            settings: self.settings.clone(),
            config: LoopConfig::default(),
        })
        .expect("the loop starts")
    }

    fn fleet_hosts(&self) -> Vec<String> {
        use crate::fleet::Fleet;
        self.fleet.hosts()
    }

    pub fn plans(&self) -> Vec<Plan> {
        let q = PlanQuery {
            limit: 100,
            ..PlanQuery::default()
        };
        let rows = self.store.plans(&q).expect("plans");
        rows.into_iter().map(|r| r.body).collect()
    }

    /// The states move `id` went through, in order, as stored.
    pub fn states(&self, id: &str) -> Vec<String> {
        let rows = self.store.transitions(id).expect("transitions");
        rows.into_iter().map(|t| t.to_state).collect()
    }

    pub fn moves(&self) -> Vec<Move> {
        let q = MoveQuery {
            limit: 100,
            ..MoveQuery::default()
        };
        let rows = self.store.moves(&q).expect("moves");
        rows.into_iter().map(|r| r.body).collect()
    }
}

/// Approves plan `id` through the handle, the loop serving the command meanwhile.
pub(super) async fn approve(
    daemon: &mut Daemon<FakeFleet>,
    manager: &Manager,
    id: &str,
) -> Result<(), ManagerError> {
    let (h, id) = (manager.clone(), id.to_string());
    call(daemon, async move { h.approve(&id).await }).await
}

/// Moves the clock to when the loop wants its next look, and looks.
pub(super) async fn next_look(
    rig: &Rig,
    daemon: &mut Daemon<FakeFleet>,
) -> Result<LookReport, super::LookError> {
    rig.clock.set(daemon.wake_at());
    daemon.look().await
}

/// Looks until `done` holds (at most [`MAX_LOOKS`]); returns the reports.
pub(super) async fn looks_until(
    rig: &Rig,
    daemon: &mut Daemon<FakeFleet>,
    mut done: impl FnMut(&Rig) -> bool,
) -> Vec<LookReport> {
    let mut reports = Vec::new();
    for _ in 0..MAX_LOOKS {
        if done(rig) {
            return reports;
        }
        reports.push(next_look(rig, daemon).await.expect("look"));
    }
    assert!(done(rig), "not done after {MAX_LOOKS} looks");
    reports
}

/// Whether every plan stored is final.
pub(super) fn all_final(rig: &Rig) -> bool {
    let plans = rig.plans();
    !plans.is_empty() && plans.iter().all(|p| p.state.is_final())
}

/// A handle's call, answered while the test drives the loop by hand: the loop runs each
/// command the call queues until the call returns (at most 10 s of real time: a call that
/// never returns fails the test instead of hanging it).
pub(super) async fn call<T: Send + 'static>(
    daemon: &mut Daemon<FakeFleet>,
    f: impl Future<Output = Result<T, ManagerError>> + Send + 'static,
) -> Result<T, ManagerError> {
    let mut task = tokio::spawn(f);
    let serve = async {
        loop {
            tokio::select! {
                answer = &mut task => return answer.expect("the call's task"),
                cmd = daemon.commands.recv() => match cmd {
                    Some(cmd) => {
                        daemon.command(cmd).await;
                    }
                    None => return (&mut task).await.expect("the call's task"),
                },
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), serve)
        .await
        .expect("the call returns")
}

/// The migrations a report asked for.
pub(super) fn migrates(r: &LookReport) -> Vec<(String, String, String)> {
    r.actions
        .iter()
        .filter_map(|a| match a {
            Action::Migrate {
                move_id, vm, to, ..
            } => Some((move_id.clone(), vm.clone(), to.clone())),
            _ => None,
        })
        .collect()
}
