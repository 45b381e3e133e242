//! The control loop: observe, persist, act, record, sleep. Every decision is core's
//! ([`drover_core::control::step`] and the operator commands); this module only moves data
//! between the fleet, the store and core, in an order that survives a crash at any point.
//!
//! # One look ([`Daemon::look`])
//!
//! ```text
//!  fleet.observe(moves in flight) ──> control::step on a copy of the memory
//!      ──> store.record_look_and_step, one transaction: the look (samples, reachability)
//!          and the step (memory, journal, plans, moves, decision)
//!          ── fails? act on nothing, back off, look again later
//!      ──> store.put_result for each migration that ended
//!      ──> the actions, concurrently ──> control::record each outcome ──> store.save_step
//!      ──> prune final plans from the memory; compact a slice of the history when due
//!      ──> sleep until min(now + collection interval, next_look_s)
//! ```
//!
//! The memory the loop holds is always the one last stored: a step or an outcome whose save
//! failed is dropped, and the next look starts again from the stored memory and a fresh
//! observation. Nothing is ever asked of an agent that the store does not already say was
//! asked ([`drover_core::control::Move`]'s `Requested` is stored before the request goes out).
//!
//! # Crash safety
//!
//! Killed at any point, the manager restarts from the stored memory ([`Daemon::start`]):
//! - killed after the step was stored and before it acted: its moves are `Requested`; the
//!   source agent has no migration with their ids, core asks again (the same id), the
//!   migration starts once;
//! - killed after acting, before the outcomes were stored: the moves are `Requested`; the
//!   source agent reports each by its id (running or finished) and core takes that as
//!   accepted; a `Migrate` asked again is refused by the agent as a duplicate id (409), which
//!   the fleet reads as accepted: nothing starts twice;
//! - a plan whose move failed or was lost meanwhile fails with the reason; the others go on.
//!
//! # Operator commands
//!
//! [`crate::handle::Manager`] queues commands into the loop, which runs them between looks
//! with the same discipline: the changed memory and its journal are stored before any action
//! (a cancel, a wake) goes out, and the outcomes are recorded and stored after.
//!
//! # Error policy (apart from the step)
//!
//! An agent that fails a poll is a miss ([`crate::fleet::reach`]). A store write that fails
//! stops the look where it is (no action on memory that is not stored), is logged, and the
//! next look comes after a backoff (1 s, doubling to 30 s) instead of the usual interval.
//! A compaction that fails is logged and tried again at the next compaction time.

mod command;
mod look;
mod seed;

#[cfg(test)]
mod tests;

pub use look::{LookReport, LookTimes};

use crate::clock::Clock;
use crate::fleet::{AgentSight, Fleet};
use crate::handle::{Command, Manager, Shared, Status, StoreHealth};
use crate::store::{HostSpec, Look, SettingsRecord, StepRecord, Store, StoreError};
use drover_core::control::{Action, ControlSettings, ControlState, JournalEntry, Observation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use thiserror::Error;
use tokio::sync::mpsc;

/// How the loop runs: its cadences (the configuration file's `[loop]` table). The decisions'
/// settings are core's `ControlSettings`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoopConfig {
    /// Seconds between looks (each look is one sample of every host): 1.
    pub interval_s: f64,
    /// Seconds between compactions of the metric history: 60.
    pub compact_every_s: f64,
    /// Looks a compaction is spread over (1 to 3600): 50. Each look compacts one slice (the
    /// oldest due minute of about 1/`compact_slices` of the series) until nothing due is
    /// left, so that no look waits for a whole minute of samples to be rolled up.
    pub compact_slices: u32,
    /// Final plans older than this leave the loop's memory (they stay in the store), s: 600,
    /// and never less than two consolidation intervals (dry-run compares with recent plans).
    pub keep_final_plans_s: f64,
    /// First wait after a store write failed, s (doubles each failure in a row): 1.
    pub backoff_first_s: f64,
    /// Longest wait after store write failures, s: 30.
    pub backoff_max_s: f64,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            interval_s: 1.0,
            compact_every_s: 60.0,
            compact_slices: 50,
            keep_final_plans_s: 600.0,
            backoff_first_s: 1.0,
            backoff_max_s: 30.0,
        }
    }
}

/// Why the loop could not start or stopped.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("settings: {0}")]
    Settings(#[from] drover_core::control::SettingsError),
    #[error("loop: {what} is {value}: {expected}")]
    Config {
        what: &'static str,
        value: f64,
        expected: &'static str,
    },
}

/// Why a look stopped before its end.
#[derive(Debug, Error)]
pub enum LookError {
    /// A store write failed: nothing after it was done (no action on unstored memory).
    #[error("look stopped: {0}")]
    Store(#[from] StoreError),
    /// Tests: the loop was made to die here.
    #[error("crashed at {0:?} (injected)")]
    Crashed(Stage),
}

/// Where a look can be made to die, in tests of crash safety.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The step is stored; nothing was asked of the fleet yet.
    Persisted,
    /// The fleet was asked; the outcomes are not stored yet.
    Acted,
    /// The outcomes are stored.
    Recorded,
}

/// Asked at each [`Stage`] with the actions of that stage; true kills the look there.
pub(crate) type CrashHook = Box<dyn FnMut(Stage, &[Action]) -> bool + Send>;

/// What the loop needs to start.
pub struct Parts<F: Fleet> {
    pub fleet: Arc<F>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// The hosts of the inventory (the fleet's, with their agents' URLs): stored at start,
    /// and hosts stored but not listed are marked removed.
    pub inventory: Vec<HostSpec>,
    /// The settings to run with (the configuration's); stored as a new version when they
    /// differ from the stored ones.
    pub settings: ControlSettings,
    pub config: LoopConfig,
}

/// The control loop over fleet `F`.
pub struct Daemon<F: Fleet> {
    fleet: Arc<F>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: LoopConfig,
    settings: SettingsRecord,
    /// The memory as last stored.
    state: ControlState,
    /// The last observation (approve checks a proposal's premises against it).
    observation: Arc<Observation>,
    /// How each agent answered the last look.
    agents: Arc<Vec<AgentSight>>,
    /// Hosts the last look found unreachable (for the journal's lines when that changes).
    unreachable: BTreeSet<String>,
    next_look_s: f64,
    last_compaction_s: Option<f64>,
    /// A compaction is under way: the last slice left due samples.
    compaction_pending: bool,
    store_failures: u32,
    last_store_error: Option<String>,
    looks: u64,
    commands: mpsc::Receiver<Command>,
    commands_open: bool,
    shared: Arc<RwLock<Shared>>,
    crash: Option<CrashHook>,
}

fn check(
    what: &'static str,
    value: f64,
    ok: bool,
    expected: &'static str,
) -> Result<(), DaemonError> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(DaemonError::Config {
            what,
            value,
            expected,
        })
    }
}

impl LoopConfig {
    /// Every limit.
    ///
    /// # Errors
    /// [`DaemonError::Config`] naming the first value out of range.
    pub fn validate(&self) -> Result<(), DaemonError> {
        let c = self;
        check(
            "interval_s",
            c.interval_s,
            (0.05..=3600.0).contains(&c.interval_s),
            "expected 0.05 to 3600 s",
        )?;
        check(
            "compact_every_s",
            c.compact_every_s,
            (1.0..=86_400.0).contains(&c.compact_every_s),
            "expected 1 to 86400 s",
        )?;
        if !(1..=3600).contains(&c.compact_slices) {
            return Err(DaemonError::Config {
                what: "compact_slices",
                value: f64::from(c.compact_slices),
                expected: "expected 1 to 3600 looks",
            });
        }
        check(
            "keep_final_plans_s",
            c.keep_final_plans_s,
            c.keep_final_plans_s >= 0.0,
            "expected at least 0 s",
        )?;
        check(
            "backoff_first_s",
            c.backoff_first_s,
            c.backoff_first_s > 0.0,
            "expected more than 0 s",
        )?;
        check(
            "backoff_max_s",
            c.backoff_max_s,
            c.backoff_max_s >= c.backoff_first_s,
            "expected at least backoff_first_s",
        )
    }
}

impl<F: Fleet + 'static> Daemon<F> {
    /// Loads the stored memory (a fresh one for a new store), stores the inventory and the
    /// settings, tells the fleet what its hosts ran when last seen, and returns the loop and
    /// its handle. The first look is due at once.
    ///
    /// # Errors
    /// Invalid settings or loop configuration; a store that cannot be read or written.
    pub fn start(parts: Parts<F>) -> Result<(Daemon<F>, Manager), DaemonError> {
        let Parts {
            fleet,
            store,
            clock,
            inventory,
            settings,
            config,
        } = parts;
        settings.validate()?;
        config.validate()?;
        let now = clock.now_s();
        seed::inventory(store.as_ref(), &inventory, now)?;
        let settings = seed::settings(store.as_ref(), settings, now)?;
        let state = match store.control_state()? {
            Some(saved) => saved.state,
            None => ControlState {
                id_prefix: store.store_id()?,
                ..ControlState::default()
            },
        };
        fleet.remember(seed::last_seen(store.as_ref())?);
        let (tx, rx) = mpsc::channel(64);
        let shared = Arc::new(RwLock::new(Shared::new(store.location(), now)));
        let manager = Manager::new(tx, store.clone(), shared.clone());
        let daemon = Daemon {
            fleet,
            store,
            clock,
            config,
            settings,
            state,
            observation: Arc::default(),
            agents: Arc::default(),
            unreachable: BTreeSet::new(),
            next_look_s: now,
            last_compaction_s: None,
            compaction_pending: false,
            store_failures: 0,
            last_store_error: None,
            looks: 0,
            commands: rx,
            commands_open: true,
            shared,
            crash: None,
        };
        daemon.publish(None);
        Ok((daemon, manager))
    }

    /// Runs looks until [`Manager::shutdown`]: each look, then sleep until the next one is
    /// due, running operator commands as they arrive.
    pub async fn run(mut self) {
        loop {
            if let Err(e) = self.look().await {
                tracing::warn!("{e}");
            }
            let wake = self.wake_at();
            loop {
                tokio::select! {
                    biased;
                    cmd = self.commands.recv(), if self.commands_open => match cmd {
                        Some(cmd) => {
                            if self.command(cmd).await {
                                return;
                            }
                        }
                        // Every handle is gone: nothing can ask the loop to stop but the
                        // process's end; keep looking.
                        None => self.commands_open = false,
                    },
                    () = self.clock.sleep_until(wake) => break,
                }
            }
        }
    }

    /// When the next look is due: the collection interval, never past the step's
    /// `next_look_s`, or a backoff after store failures.
    pub fn wake_at(&self) -> f64 {
        let now = self.clock.now_s();
        if self.store_failures > 0 {
            let doubling = 2f64.powi(self.store_failures.saturating_sub(1).min(30) as i32);
            let wait = (self.config.backoff_first_s * doubling).min(self.config.backoff_max_s);
            return now + wait;
        }
        (now + self.config.interval_s).min(self.next_look_s.max(now))
    }

    /// Runs every command queued so far (tests drive the loop look by look with this).
    pub async fn run_commands(&mut self) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            if self.command(cmd).await {
                return true;
            }
        }
        false
    }

    /// The memory as last stored.
    pub fn state(&self) -> &ControlState {
        &self.state
    }

    #[cfg(test)]
    pub(crate) fn crash_at(&mut self, hook: CrashHook) {
        self.crash = Some(hook);
    }

    fn crash_point(&mut self, stage: Stage, actions: &[Action]) -> Result<(), LookError> {
        let die = self.crash.as_mut().is_some_and(|hook| hook(stage, actions));
        if die {
            return Err(LookError::Crashed(stage));
        }
        Ok(())
    }

    /// Stores the memory `next` (changed from the stored one at `now_s`) with `journal`
    /// and the decision, then holds it. On failure the held memory stays the stored one.
    fn commit(
        &mut self,
        next: ControlState,
        journal: Vec<JournalEntry>,
        decision: Option<drover_core::control::Decision>,
        now_s: f64,
    ) -> Result<(), StoreError> {
        self.commit_with(next, journal, decision, now_s, None)
    }

    /// [`Daemon::commit`], with the look the step was taken on stored in the same
    /// transaction when there is one.
    fn commit_with(
        &mut self,
        next: ControlState,
        journal: Vec<JournalEntry>,
        decision: Option<drover_core::control::Decision>,
        now_s: f64,
        look: Option<&Look>,
    ) -> Result<(), StoreError> {
        let record = StepRecord::changed_to(now_s, &self.state, next, journal, decision);
        let saved = match look {
            Some(look) => self.store.record_look_and_step(look, &record),
            None => self.store.save_step(&record),
        };
        match saved {
            Ok(()) => {
                self.state = record.state;
                self.store_ok();
                Ok(())
            }
            Err(e) => {
                self.store_failed(&e);
                Err(e)
            }
        }
    }

    fn store_ok(&mut self) {
        if self.store_failures > 0 {
            tracing::info!(
                "store {} writes again after {} failure(s)",
                self.store.location(),
                self.store_failures
            );
        }
        self.store_failures = 0;
    }

    fn store_failed(&mut self, e: &StoreError) {
        self.store_failures = self.store_failures.saturating_add(1);
        self.last_store_error = Some(e.to_string());
        tracing::warn!(
            "store write failed ({} in a row), nothing acted on: {e}",
            self.store_failures
        );
    }

    /// Carries `actions` out concurrently (core already kept them within the per-host
    /// limits), then records and stores their outcomes.
    async fn carry_out(
        &mut self,
        actions: &[Action],
    ) -> Result<Vec<drover_core::control::Outcome>, LookError> {
        if actions.is_empty() {
            return Ok(Vec::new());
        }
        let fleet = self.fleet.clone();
        let outcomes = futures_util::future::join_all(actions.iter().map(|a| fleet.act(a))).await;
        self.crash_point(Stage::Acted, actions)?;
        let now = self.clock.now_s();
        let mut next = self.state.clone();
        let mut journal = Vec::new();
        for o in &outcomes {
            journal.extend(drover_core::control::record(&mut next, o.clone(), now));
        }
        self.commit(next, journal, None, now)?;
        self.crash_point(Stage::Recorded, actions)?;
        Ok(outcomes)
    }

    /// Publishes what the handle reads.
    fn publish(&self, look_ms: Option<f64>) {
        let now = self.clock.now_s();
        let status = Status {
            now_s: now,
            looks: self.looks,
            last_look_ms: look_ms,
            next_look_s: self.wake_at(),
            mode: Some(self.settings.settings.mode),
            settings_version: self.settings.version,
            hosts: self.observation.hosts.len(),
            reachable: self
                .observation
                .hosts
                .iter()
                .filter(|h| h.reachable)
                .count(),
            plans_active: self
                .state
                .plans
                .values()
                .filter(|p| !p.state.is_final())
                .count(),
            moves_in_flight: self.state.in_flight().count(),
            energy_wh: self.state.energy_wh,
            store: StoreHealth {
                location: self.store.location().to_string(),
                failures_in_a_row: self.store_failures,
                last_error: self.last_store_error.clone(),
            },
            started_s: 0.0,
        };
        let mut shared = self
            .shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shared.update(
            status,
            &self.observation,
            &self.agents,
            &self.state,
            &self.settings,
        );
    }
}
