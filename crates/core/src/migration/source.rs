//! The source side of a live migration as an explicit state machine.
//!
//! The driver (in the `qemu` crate) owns the QMP connections and the clock; this machine owns
//! every decision. The driver feeds it [`SourceEvent`]s and carries out the [`SourceAction`]s it
//! returns. Any event that makes no sense in the current state is a typed [`SourceError`], and
//! the state is left unchanged.
//!
//! ```text
//!  Ready --Configured--> Configured --MigrateIssued--> Precopy ----(QEMU: postcopy-active)---> Postcopy
//!                                                       |  ^ watchdog: raise downtime,           |  ^
//!                                                       |  | throttle, start postcopy            |  | RecoveryIssued
//!                                                       |                                        v  |
//!                                                       |--watchdog deadline / cancel--> Cancelling  PostcopyPaused
//!                                                       v                       v
//!                                  Done(Completed | Failed | Cancelled)  <------+
//! ```
//!
//! - **Precopy** is where every technique starts: post-copy asks QEMU to switch as soon as the
//!   migration exists; hybrid asks once its switch point (RAM fraction or rounds) is reached;
//!   pre-copy only if the watchdog's ladder allows it.
//! - **Postcopy**: the VM runs on the destination. It cannot be cancelled any more (each side
//!   holds part of the guest's memory); a network failure pauses it and the machine asks for
//!   recovery, up to the plan's `max_recoveries`.
//! - **Done** is terminal; the outcome tells whether the VM ended on the destination.

use super::plan::{MigrationPlan, ParameterUpdate};
use super::progress::{MigrationStatus, Progress};
use super::technique::Technique;
use super::watchdog::{Watchdog, WatchdogAction};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How a migration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum EndStatus {
    /// The VM runs on the destination.
    Completed,
    /// Something broke; see the error. Whether the VM survived on the source is in the outcome.
    Failed,
    /// Stopped on purpose; the VM still runs on the source.
    Cancelled,
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceAction {
    /// Start the migration (`migrate`).
    Migrate,
    /// `migrate-start-postcopy`.
    StartPostcopy,
    /// `migrate-set-parameters` with these fields.
    SetParameters(ParameterUpdate),
    /// `migrate_cancel`.
    Cancel,
    /// Resume a paused post-copy (`migrate-recover` on the destination, `migrate resume` here).
    Recover,
}

/// Events the driver reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    /// Capabilities and parameters are set on both sides; the destination listens.
    Configured,
    /// `migrate` was accepted.
    MigrateIssued { now_ms: u64 },
    /// A `query-migrate` poll.
    Progress(Progress),
    /// The operator (or a caller) wants the migration stopped.
    CancelRequested { now_ms: u64 },
    /// The driver has started post-copy recovery.
    RecoveryIssued { now_ms: u64 },
    /// A command the machine asked for failed.
    CommandFailed {
        command: String,
        message: String,
        now_ms: u64,
    },
}

impl SourceEvent {
    fn name(&self) -> &'static str {
        match self {
            SourceEvent::Configured => "configured",
            SourceEvent::MigrateIssued { .. } => "migrate-issued",
            SourceEvent::Progress(_) => "progress",
            SourceEvent::CancelRequested { .. } => "cancel-requested",
            SourceEvent::RecoveryIssued { .. } => "recovery-issued",
            SourceEvent::CommandFailed { .. } => "command-failed",
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SourceError {
    #[error("event '{event}' is not valid in state '{state}'")]
    InvalidTransition {
        state: &'static str,
        event: &'static str,
    },
    #[error(
        "cannot cancel: the migration is in post-copy and the VM already runs on the destination"
    )]
    CannotCancelInPostcopy,
    #[error("the migration has already ended")]
    AlreadyEnded,
}

/// Where a running migration stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    pub started_ms: u64,
    pub watchdog: Watchdog,
    /// When `migrate-start-postcopy` was asked for.
    pub postcopy_requested_ms: Option<u64>,
    /// When QEMU first reported post-copy.
    pub postcopy_started_ms: Option<u64>,
    pub recoveries: u32,
    /// When recovery was last started; QEMU stays "paused" for a moment after that.
    pub last_recovery_ms: Option<u64>,
    /// The last figures QEMU reported (a poll without them keeps the earlier ones).
    pub last: Progress,
}

impl Running {
    /// Folds a poll into `last` and returns the merged view: QEMU drops its RAM figures once a
    /// migration is cancelled or has failed, and the record must still say what was sent.
    fn record(&mut self, p: Progress) -> Progress {
        self.last = p.carried_from(&self.last);
        self.last.clone()
    }
}

/// How long a started recovery may take before the machine tries again.
pub const RECOVERY_GRACE_MS: u64 = 5_000;

/// What the run came to.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceOutcome {
    pub status: EndStatus,
    /// Completed within its own parameters, without any watchdog escalation.
    pub converged: bool,
    /// The VM ended up running on the destination (true once post-copy started, even if it
    /// later failed: then the guest is split and needs recovery, never a restart on the source).
    pub vm_on_destination: bool,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub postcopy_started_ms: Option<u64>,
    pub watchdog_actions: Vec<WatchdogAction>,
    pub error: Option<String>,
    /// The last figures QEMU reported, whatever the end: a cancelled or failed migration keeps
    /// what it had sent.
    pub last: Progress,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceState {
    Ready,
    Configured,
    Precopy(Running),
    Postcopy(Running),
    PostcopyPaused(Running),
    Cancelling(Running),
    Done(SourceOutcome),
}

impl SourceState {
    pub fn name(&self) -> &'static str {
        match self {
            SourceState::Ready => "ready",
            SourceState::Configured => "configured",
            SourceState::Precopy(_) => "precopy",
            SourceState::Postcopy(_) => "postcopy",
            SourceState::PostcopyPaused(_) => "postcopy-paused",
            SourceState::Cancelling(_) => "cancelling",
            SourceState::Done(_) => "done",
        }
    }
}

/// The source side's decisions for one migration.
#[derive(Debug, Clone)]
pub struct SourceMachine {
    plan: MigrationPlan,
    state: SourceState,
}

type Step = Result<Vec<SourceAction>, SourceError>;

impl SourceMachine {
    pub fn new(plan: MigrationPlan) -> Self {
        SourceMachine {
            plan,
            state: SourceState::Ready,
        }
    }

    pub fn plan(&self) -> &MigrationPlan {
        &self.plan
    }

    pub fn state(&self) -> &SourceState {
        &self.state
    }

    /// The outcome once the machine is done.
    pub fn outcome(&self) -> Option<&SourceOutcome> {
        match &self.state {
            SourceState::Done(o) => Some(o),
            _ => None,
        }
    }

    /// Applies one event. On error the state is unchanged.
    pub fn handle(&mut self, event: SourceEvent) -> Step {
        let state = std::mem::replace(&mut self.state, SourceState::Ready);
        let (next, result) = self.transition(state, event);
        self.state = next;
        result
    }

    fn transition(&self, state: SourceState, event: SourceEvent) -> (SourceState, Step) {
        use SourceEvent as E;
        use SourceState as S;
        match (state, event) {
            (S::Ready, E::Configured) => (S::Configured, Ok(vec![SourceAction::Migrate])),
            (S::Ready | S::Configured, E::CancelRequested { now_ms }) => (
                S::Done(self.never_started(EndStatus::Cancelled, now_ms, None)),
                Ok(vec![]),
            ),
            (
                S::Ready | S::Configured,
                E::CommandFailed {
                    command,
                    message,
                    now_ms,
                },
            ) => {
                let error = format!("{command}: {message}");
                (
                    S::Done(self.never_started(EndStatus::Failed, now_ms, Some(error))),
                    Ok(vec![]),
                )
            }
            (S::Configured, E::MigrateIssued { now_ms }) => self.start(now_ms),
            (S::Precopy(run), E::Progress(p)) => self.precopy_progress(run, p),
            (S::Postcopy(run), E::Progress(p)) => self.postcopy_progress(run, p),
            (S::PostcopyPaused(run), E::Progress(p)) => self.paused_progress(run, p),
            (S::Cancelling(run), E::Progress(p)) => self.cancelling_progress(run, p),
            (S::PostcopyPaused(mut run), E::RecoveryIssued { now_ms }) => {
                run.recoveries += 1;
                run.last_recovery_ms = Some(now_ms);
                (S::Postcopy(run), Ok(vec![]))
            }
            (S::Precopy(run), E::CancelRequested { .. }) => {
                (S::Cancelling(run), Ok(vec![SourceAction::Cancel]))
            }
            (s @ (S::Postcopy(_) | S::PostcopyPaused(_)), E::CancelRequested { .. }) => {
                (s, Err(SourceError::CannotCancelInPostcopy))
            }
            (s @ S::Cancelling(_), E::CancelRequested { .. }) => (s, Ok(vec![])),
            (
                S::Precopy(run) | S::Cancelling(run),
                E::CommandFailed {
                    command,
                    message,
                    now_ms,
                },
            ) => self.command_failed_precopy(run, command, message, now_ms),
            (
                S::Postcopy(run) | S::PostcopyPaused(run),
                E::CommandFailed {
                    command,
                    message,
                    now_ms,
                },
            ) => {
                // Post-copy commands failing (recovery) leave the VM on the destination, paused;
                // report it and keep the guest's memory where it is.
                let error = format!("{command}: {message}");
                (
                    S::Done(self.finish(run, EndStatus::Failed, now_ms, Some(error), true)),
                    Ok(vec![]),
                )
            }
            (s @ S::Done(_), _) => (s, Err(SourceError::AlreadyEnded)),
            (s, e) => {
                let err = SourceError::InvalidTransition {
                    state: s.name(),
                    event: e.name(),
                };
                (s, Err(err))
            }
        }
    }

    fn start(&self, now_ms: u64) -> (SourceState, Step) {
        let mut run = Running {
            started_ms: now_ms,
            watchdog: Watchdog::new(
                self.plan.watchdog.clone(),
                now_ms,
                self.plan.downtime_limit_ms,
            ),
            postcopy_requested_ms: None,
            postcopy_started_ms: None,
            recoveries: 0,
            last_recovery_ms: None,
            last: Progress {
                now_ms,
                ..Progress::default()
            },
        };
        let mut actions = Vec::new();
        if self.plan.technique == Technique::Postcopy {
            run.postcopy_requested_ms = Some(now_ms);
            actions.push(SourceAction::StartPostcopy);
        }
        (SourceState::Precopy(run), Ok(actions))
    }

    fn precopy_progress(&self, mut run: Running, p: Progress) -> (SourceState, Step) {
        let p = run.record(p);
        let now = p.now_ms;
        match p.status {
            Some(MigrationStatus::Completed) => {
                let converged = run.watchdog.fired().is_empty();
                let mut o = self.finish(run, EndStatus::Completed, now, None, true);
                o.converged = converged;
                (SourceState::Done(o), Ok(vec![]))
            }
            Some(MigrationStatus::Failed) => {
                let err = p
                    .error
                    .clone()
                    .or_else(|| Some("migration failed".to_string()));
                (
                    SourceState::Done(self.finish(run, EndStatus::Failed, now, err, false)),
                    Ok(vec![]),
                )
            }
            Some(MigrationStatus::Cancelled) => {
                let err = Some("cancelled outside Drover".to_string());
                (
                    SourceState::Done(self.finish(run, EndStatus::Cancelled, now, err, false)),
                    Ok(vec![]),
                )
            }
            Some(s) if s.is_postcopy() => {
                run.postcopy_started_ms.get_or_insert(now);
                self.postcopy_progress(run, p)
            }
            _ => self.precopy_decide(run, &p),
        }
    }

    /// Hybrid's switch point and the watchdog, while pre-copy is moving memory.
    fn precopy_decide(&self, mut run: Running, p: &Progress) -> (SourceState, Step) {
        let mut actions = Vec::new();
        if self.plan.technique == Technique::Hybrid
            && run.postcopy_requested_ms.is_none()
            && self.hybrid_due(p)
        {
            run.postcopy_requested_ms = Some(p.now_ms);
            actions.push(SourceAction::StartPostcopy);
            return (SourceState::Precopy(run), Ok(actions));
        }
        if run.postcopy_requested_ms.is_some() {
            // Waiting for QEMU to switch; the watchdog's pre-copy ladder no longer applies.
            return (SourceState::Precopy(run), Ok(actions));
        }
        let (syncs, remaining) = p.ram.map_or((0, 0), |r| (r.dirty_sync_count, r.remaining));
        match run.watchdog.observe(p.now_ms, syncs, remaining) {
            None => (SourceState::Precopy(run), Ok(actions)),
            Some(WatchdogAction::RaiseDowntime { downtime_ms }) => {
                let update = ParameterUpdate {
                    downtime_limit_ms: Some(downtime_ms),
                    ..ParameterUpdate::default()
                };
                (
                    SourceState::Precopy(run),
                    Ok(vec![SourceAction::SetParameters(update)]),
                )
            }
            Some(WatchdogAction::Throttle(kind)) => {
                let update = self.plan.throttle_parameters(kind);
                (
                    SourceState::Precopy(run),
                    Ok(vec![SourceAction::SetParameters(update)]),
                )
            }
            Some(WatchdogAction::SwitchToPostcopy) => {
                run.postcopy_requested_ms = Some(p.now_ms);
                (
                    SourceState::Precopy(run),
                    Ok(vec![SourceAction::StartPostcopy]),
                )
            }
            Some(WatchdogAction::Cancel) => {
                (SourceState::Cancelling(run), Ok(vec![SourceAction::Cancel]))
            }
        }
    }

    fn hybrid_due(&self, p: &Progress) -> bool {
        let h = self.plan.hybrid;
        let Some(ram) = p.ram else { return false };
        let completed_passes = ram.dirty_sync_count.saturating_sub(1);
        let fraction_sent = if ram.total == 0 {
            0.0
        } else {
            ram.transferred as f64 / ram.total as f64
        };
        completed_passes >= u64::from(h.max_rounds.max(1))
            || (ram.total > 0 && fraction_sent >= h.ram_fraction)
    }

    fn postcopy_progress(&self, mut run: Running, p: Progress) -> (SourceState, Step) {
        let p = run.record(p);
        let now = p.now_ms;
        run.postcopy_started_ms.get_or_insert(now);
        match p.status {
            Some(MigrationStatus::Completed) => (
                SourceState::Done(self.finish(run, EndStatus::Completed, now, None, true)),
                Ok(vec![]),
            ),
            Some(MigrationStatus::Failed) => {
                let err = p.error.or_else(|| Some("post-copy failed".to_string()));
                (
                    SourceState::Done(self.finish(run, EndStatus::Failed, now, err, true)),
                    Ok(vec![]),
                )
            }
            Some(MigrationStatus::PostcopyPaused) => self.paused_progress(run, p),
            _ => (SourceState::Postcopy(run), Ok(vec![])),
        }
    }

    fn paused_progress(&self, mut run: Running, p: Progress) -> (SourceState, Step) {
        let p = run.record(p);
        let now = p.now_ms;
        match p.status {
            Some(MigrationStatus::PostcopyPaused) => {
                if run
                    .last_recovery_ms
                    .is_some_and(|t| now.saturating_sub(t) < RECOVERY_GRACE_MS)
                {
                    return (SourceState::PostcopyPaused(run), Ok(vec![]));
                }
                if run.recoveries >= self.plan.max_recoveries {
                    let err = format!(
                        "post-copy paused and {} recoveries failed; the guest is paused on the destination and can still be recovered",
                        run.recoveries
                    );
                    return (
                        SourceState::Done(self.finish(
                            run,
                            EndStatus::Failed,
                            now,
                            Some(err),
                            true,
                        )),
                        Ok(vec![]),
                    );
                }
                (
                    SourceState::PostcopyPaused(run),
                    Ok(vec![SourceAction::Recover]),
                )
            }
            _ => self.postcopy_progress(run, p),
        }
    }

    fn cancelling_progress(&self, mut run: Running, p: Progress) -> (SourceState, Step) {
        let p = run.record(p);
        let now = p.now_ms;
        match p.status {
            Some(MigrationStatus::Cancelled) => {
                let reason = if run.watchdog.fired().last() == Some(&WatchdogAction::Cancel) {
                    "watchdog deadline reached; pre-copy did not converge"
                } else {
                    "cancelled on request"
                };
                let o = self.finish(
                    run,
                    EndStatus::Cancelled,
                    now,
                    Some(reason.to_string()),
                    false,
                );
                (SourceState::Done(o), Ok(vec![]))
            }
            // The cancel raced with completion or with the switch to post-copy: the migration won.
            Some(MigrationStatus::Completed) => self.precopy_progress(run, p),
            Some(s) if s.is_postcopy() => self.postcopy_progress(run, p),
            Some(MigrationStatus::Failed) => self.precopy_progress(run, p),
            _ => (SourceState::Cancelling(run), Ok(vec![])),
        }
    }

    fn command_failed_precopy(
        &self,
        run: Running,
        command: String,
        message: String,
        now_ms: u64,
    ) -> (SourceState, Step) {
        // A failed parameter tweak is not fatal: pre-copy goes on and the deadline still guards
        // it. A failed start, switch or cancel is: cancel what runs so the VM stays home.
        if command == "migrate-set-parameters" {
            return (SourceState::Precopy(run), Ok(vec![]));
        }
        let error = Some(format!("{command}: {message}"));
        let o = self.finish(run, EndStatus::Failed, now_ms, error, false);
        (SourceState::Done(o), Ok(vec![SourceAction::Cancel]))
    }

    fn never_started(
        &self,
        status: EndStatus,
        now_ms: u64,
        error: Option<String>,
    ) -> SourceOutcome {
        SourceOutcome {
            status,
            converged: false,
            vm_on_destination: false,
            started_ms: now_ms,
            ended_ms: now_ms,
            postcopy_started_ms: None,
            watchdog_actions: vec![],
            error,
            last: Progress::default(),
        }
    }

    fn finish(
        &self,
        run: Running,
        status: EndStatus,
        now_ms: u64,
        error: Option<String>,
        moved: bool,
    ) -> SourceOutcome {
        let in_postcopy = run.postcopy_started_ms.is_some();
        SourceOutcome {
            status,
            converged: status == EndStatus::Completed && run.watchdog.fired().is_empty(),
            vm_on_destination: moved && (status == EndStatus::Completed || in_postcopy),
            started_ms: run.started_ms,
            ended_ms: now_ms,
            postcopy_started_ms: run.postcopy_started_ms,
            watchdog_actions: run.watchdog.fired().to_vec(),
            error,
            last: run.last,
        }
    }
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
