//! The source side of a live migration as an explicit state machine.
//!
//! The driver (in the `qemu` crate) owns the QMP connections and the clock; this machine owns
//! every decision. The driver feeds it [`SourceEvent`]s and carries out the [`SourceAction`]s it
//! returns. Any event that makes no sense in the current state is a typed [`SourceError`], and
//! the state is left unchanged.
//!
//! ```text
//!  Ready --Configured--> Configured --MigrateIssued--> Precopy
//!                                                        |  watchdog: raise downtime, throttle,
//!                                                        |  start post-copy; hybrid: switch point
//!       +--- deadline / cancel / budget spent -----------+------ (QEMU: postcopy-*) ------+
//!       v                                                                                  v
//!   Cancelling                                        +------ RecoveryIssued ---------> Postcopy
//!       |                                             |                                 |     |
//!       |                                             |           (QEMU: postcopy-      |     | stall /
//!       |                                       PostcopyPaused <---------- paused) -----+     | budget spent
//!       |                                             |                                       v
//!       |                      recoveries used up /   |                                    Pausing
//!       |                      budget spent           |                                       | (QEMU: postcopy-
//!       v                                             v                                       v    paused)
//!  Done(Cancelled)                               Done(Paused) <-------------------------------+
//!
//!  QEMU reporting completed / failed ends any running state Done(Completed | Failed); before
//!  post-copy a failure leaves the guest on the source, after it on the destination.
//!  Done(Failed | Paused) after the switch --DestinationCompleted--> Done(Completed): the
//!  destination's QEMU completed the incoming side and runs the guest (every page arrived).
//! ```
//!
//! - **Precopy** is where every technique starts: post-copy asks QEMU to switch as soon as the
//!   migration exists; hybrid asks once its switch point (RAM fraction or rounds) is reached;
//!   pre-copy only if the watchdog's ladder allows it.
//! - **Cancelling**: `migrate_cancel` was asked for (watchdog deadline, a request, or the run's
//!   time budget spent); QEMU's answer decides: cancelled (the guest stays on the source), or
//!   completed / post-copy if the migration won the race.
//! - **Postcopy**: the VM runs on the destination. It cannot be cancelled any more (each side
//!   holds part of the guest's memory); a network failure pauses it and the machine asks for
//!   recovery, up to the plan's `max_recoveries`. The post-copy progress watchdog
//!   ([`super::stall`]) and the run's time budget stop it by pausing it instead.
//! - **Pausing**: `migrate-pause` was asked for; QEMU's `postcopy-paused` ends the run
//!   [`EndStatus::Paused`] (completion, if it wins the race, ends it completed). If QEMU
//!   refuses the pause, post-copy goes on under a fresh stall window.
//! - **Done** is terminal; the outcome tells whether the VM ended on the destination.
//!
//! The driver reports the run's time budget ([`SourceMachine::budget_deadline_ms`]) as
//! [`SourceEvent::BudgetSpent`] and, if QEMU then confirms neither the cancel nor the pause, as
//! [`SourceEvent::StopUnconfirmed`]: the machine ends failed, with the guest where it was.
//!
//! A source QEMU that stops answering (`query-migrate` timed out twice, or its QMP connection
//! closed) is [`SourceEvent::SourceLost`]: before post-copy was asked for the run fails with
//! the guest on the source (QEMU never switches on its own); once it was asked for, the guest
//! is, or may be, on the destination, whose QEMU then holds the only running copy, so the run
//! ends failed (paused, if post-copy was paused) with `vm_on_destination` and both QEMUs kept.

use super::plan::{MigrationPlan, ParameterUpdate};
use super::progress::{MigrationStatus, Progress};
use super::stall::StallWatch;
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
    /// Post-copy was stopped part-way and left paused (QEMU's `postcopy-paused`): stalled,
    /// out of time, or not recoverable within `max_recoveries`. The guest is on the
    /// destination (running, or waiting for pages), the rest of its memory on the source.
    /// Nothing is lost: both QEMUs must be kept, and the migration resumes with
    /// `migrate-recover` on the destination and `migrate` with `resume` on the source. The
    /// guest is never restarted on the source.
    Paused,
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
    /// `migrate-pause`: stop a post-copy's stream, recoverably (QEMU goes `postcopy-paused`).
    Pause,
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
    /// The run's time budget ([`SourceMachine::budget_deadline_ms`]) ran out.
    BudgetSpent { now_ms: u64 },
    /// After the budget ran out, QEMU confirmed neither the cancel nor the pause in the
    /// driver's grace period.
    StopUnconfirmed { now_ms: u64 },
    /// After a post-copy ended failed or paused here, the destination's QEMU says its incoming
    /// migration completed and it runs the guest: every page arrived, so the migration did
    /// complete whatever the source's QEMU says (see [`SourceMachine::handle`]).
    DestinationCompleted { now_ms: u64 },
    /// The source QEMU stopped answering: `message` says how (see the module doc).
    SourceLost { message: String, now_ms: u64 },
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
            SourceEvent::BudgetSpent { .. } => "budget-spent",
            SourceEvent::StopUnconfirmed { .. } => "stop-unconfirmed",
            SourceEvent::DestinationCompleted { .. } => "destination-completed",
            SourceEvent::SourceLost { .. } => "source-lost",
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
    #[error("the destination cannot hold the whole guest: post-copy never started, or the migration completed already")]
    NotSplit,
}

/// Why a pre-copy is being cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The watchdog's deadline.
    Watchdog,
    /// The operator or a caller asked.
    Request,
    /// The run's time budget ran out (say, QEMU never switched to a requested post-copy).
    Budget { budget_ms: u64 },
}

/// Why a post-copy is being paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    /// No byte moved for the plan's stall limit.
    Stalled { stall_ms: u64 },
    /// The run's time budget ran out.
    Budget { budget_ms: u64 },
}

impl PauseReason {
    /// The stop as the record's `watchdog_action` names it.
    pub fn action(self) -> WatchdogAction {
        match self {
            PauseReason::Stalled { .. } => WatchdogAction::PauseStalled,
            PauseReason::Budget { .. } => WatchdogAction::PauseOutOfTime,
        }
    }

    /// Why, in words.
    pub fn cause(self) -> String {
        match self {
            PauseReason::Stalled { stall_ms } => {
                format!("post-copy moved no byte for {} s", stall_ms / 1000)
            }
            PauseReason::Budget { budget_ms } => format!(
                "the run's time budget of {} s ran out in post-copy",
                budget_ms / 1000
            ),
        }
    }
}

/// Where a running migration stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    /// Driver clock when `migrate` was accepted, ms.
    pub started_ms: u64,
    pub watchdog: Watchdog,
    /// The post-copy progress watchdog.
    pub stall: StallWatch,
    /// When `migrate-start-postcopy` was asked for, ms.
    pub postcopy_requested_ms: Option<u64>,
    /// When QEMU first reported post-copy, ms.
    pub postcopy_started_ms: Option<u64>,
    pub recoveries: u32,
    /// When recovery was last started, ms; QEMU stays "paused" for a moment after that.
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

/// How long a started recovery may take before the machine tries again, ms.
pub const RECOVERY_GRACE_MS: u64 = 5_000;

/// What the run came to.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceOutcome {
    pub status: EndStatus,
    /// Completed within its own parameters, without any watchdog escalation.
    pub converged: bool,
    /// The VM ended up running on the destination (true once post-copy started, even if it
    /// later failed or was paused: then the guest is split and needs recovery, never a restart
    /// on the source).
    pub vm_on_destination: bool,
    /// Driver clock, ms.
    pub started_ms: u64,
    /// Driver clock when the source's end was known, ms.
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
    Pausing(Running, PauseReason),
    Cancelling(Running, CancelReason),
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
            SourceState::Pausing(..) => "pausing",
            SourceState::Cancelling(..) => "cancelling",
            SourceState::Done(_) => "done",
        }
    }

    /// The running migration, in any state that has one.
    fn running(&self) -> Option<&Running> {
        match self {
            SourceState::Precopy(r)
            | SourceState::Postcopy(r)
            | SourceState::PostcopyPaused(r)
            | SourceState::Pausing(r, _)
            | SourceState::Cancelling(r, _) => Some(r),
            SourceState::Ready | SourceState::Configured | SourceState::Done(_) => None,
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
type Next = (SourceState, Step);

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

    /// When the run's time budget runs out, ms on the driver clock: the start plus
    /// [`MigrationPlan::time_budget_ms`] for the guest's RAM as QEMU reports it. None before
    /// `migrate` and after the end.
    pub fn budget_deadline_ms(&self) -> Option<u64> {
        let run = self.state.running()?;
        Some(run.started_ms.saturating_add(self.budget_ms(run)))
    }

    fn budget_ms(&self, run: &Running) -> u64 {
        self.plan
            .time_budget_ms(run.last.ram.map_or(0, |r| r.total))
    }

    /// Applies one event. On error the state is unchanged.
    pub fn handle(&mut self, event: SourceEvent) -> Step {
        let state = std::mem::replace(&mut self.state, SourceState::Ready);
        let (next, result) = self.transition(state, event);
        self.state = next;
        result
    }

    fn transition(&self, state: SourceState, event: SourceEvent) -> Next {
        use SourceEvent as E;
        use SourceState as S;
        match (state, event) {
            (S::Ready, E::Configured) => (S::Configured, Ok(vec![SourceAction::Migrate])),
            (S::Configured, E::MigrateIssued { now_ms }) => self.start(now_ms),
            (s @ (S::Ready | S::Configured), e) => self.before_start(s, e),
            (S::Precopy(run), E::Progress(p)) => self.precopy_progress(run, p),
            (S::Postcopy(run), E::Progress(p)) => self.postcopy_progress(run, p),
            (S::PostcopyPaused(run), E::Progress(p)) => self.paused_progress(run, p),
            (S::Pausing(run, why), E::Progress(p)) => self.pausing_progress(run, why, p),
            (S::Cancelling(run, why), E::Progress(p)) => self.cancelling_progress(run, why, p),
            (S::PostcopyPaused(mut run), E::RecoveryIssued { now_ms }) => {
                run.recoveries += 1;
                run.last_recovery_ms = Some(now_ms);
                run.stall.rearm();
                (S::Postcopy(run), Ok(vec![]))
            }
            (S::Precopy(run), E::CancelRequested { .. }) => (
                S::Cancelling(run, CancelReason::Request),
                Ok(vec![SourceAction::Cancel]),
            ),
            (
                s @ (S::Postcopy(_) | S::PostcopyPaused(_) | S::Pausing(..)),
                E::CancelRequested { .. },
            ) => (s, Err(SourceError::CannotCancelInPostcopy)),
            (s @ S::Cancelling(..), E::CancelRequested { .. }) => (s, Ok(vec![])),
            (
                S::Precopy(run),
                E::CommandFailed {
                    command,
                    message,
                    now_ms,
                },
            ) => self.command_failed_precopy(run, command, message, now_ms),
            (
                S::Cancelling(run, why),
                E::CommandFailed {
                    command,
                    message,
                    now_ms,
                },
            ) => self.command_failed_cancelling(run, why, command, message, now_ms),
            (
                s @ (S::Postcopy(_) | S::PostcopyPaused(_) | S::Pausing(..)),
                E::CommandFailed {
                    command,
                    message,
                    now_ms,
                },
            ) => self.command_failed_postcopy(s, command, message, now_ms),
            (s, E::BudgetSpent { now_ms }) if s.running().is_some() => self.budget_spent(s, now_ms),
            (s, E::StopUnconfirmed { now_ms }) if s.running().is_some() => {
                self.stop_unconfirmed(s, now_ms)
            }
            (s, E::SourceLost { message, now_ms }) if s.running().is_some() => {
                self.source_lost(s, message, now_ms)
            }
            (S::Done(o), E::DestinationCompleted { now_ms }) => Self::settled(o, now_ms),
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

    /// Events before `migrate` was accepted: nothing runs in QEMU yet, so nothing to undo.
    fn before_start(&self, state: SourceState, event: SourceEvent) -> Next {
        let (status, now_ms, error) = match event {
            SourceEvent::CancelRequested { now_ms } => (EndStatus::Cancelled, now_ms, None),
            SourceEvent::CommandFailed {
                command,
                message,
                now_ms,
            } => (
                EndStatus::Failed,
                now_ms,
                Some(format!("{command}: {message}")),
            ),
            SourceEvent::BudgetSpent { now_ms } => (
                EndStatus::Failed,
                now_ms,
                Some("the time budget ran out before the migration started".to_string()),
            ),
            e => {
                let err = SourceError::InvalidTransition {
                    state: state.name(),
                    event: e.name(),
                };
                return (state, Err(err));
            }
        };
        (
            SourceState::Done(self.never_started(status, now_ms, error)),
            Ok(vec![]),
        )
    }

    fn start(&self, now_ms: u64) -> Next {
        let mut run = Running {
            started_ms: now_ms,
            watchdog: Watchdog::new(
                self.plan.watchdog.clone(),
                now_ms,
                self.plan.downtime_limit_ms,
            ),
            stall: StallWatch::new(self.plan.postcopy_stall_ms),
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

    fn precopy_progress(&self, mut run: Running, p: Progress) -> Next {
        let p = run.record(p);
        let now = p.now_ms;
        match p.status {
            Some(MigrationStatus::Completed) => {
                let o = self.finish(run, EndStatus::Completed, now, None, true);
                (SourceState::Done(o), Ok(vec![]))
            }
            Some(MigrationStatus::Failed) => {
                let err = p.error.or_else(|| Some("migration failed".to_string()));
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
            Some(s) if s.is_postcopy() => self.postcopy_progress(run, p),
            _ => self.precopy_decide(run, &p),
        }
    }

    /// Hybrid's switch point and the watchdog, while pre-copy is moving memory.
    fn precopy_decide(&self, mut run: Running, p: &Progress) -> Next {
        if self.plan.technique == Technique::Hybrid
            && run.postcopy_requested_ms.is_none()
            && self.hybrid_due(p)
        {
            run.postcopy_requested_ms = Some(p.now_ms);
            return (
                SourceState::Precopy(run),
                Ok(vec![SourceAction::StartPostcopy]),
            );
        }
        if run.postcopy_requested_ms.is_some() {
            // Waiting for QEMU to switch; the watchdog's pre-copy ladder no longer applies (the
            // run's time budget still does).
            return (SourceState::Precopy(run), Ok(vec![]));
        }
        let (syncs, remaining) = p.ram.map_or((0, 0), |r| (r.dirty_sync_count, r.remaining));
        let action = match run.watchdog.observe(p.now_ms, syncs, remaining) {
            None => return (SourceState::Precopy(run), Ok(vec![])),
            Some(WatchdogAction::RaiseDowntime { downtime_ms }) => {
                SourceAction::SetParameters(ParameterUpdate {
                    downtime_limit_ms: Some(downtime_ms),
                    ..ParameterUpdate::default()
                })
            }
            Some(WatchdogAction::Throttle(kind)) => {
                SourceAction::SetParameters(self.plan.throttle_parameters(kind))
            }
            Some(WatchdogAction::SwitchToPostcopy) => {
                run.postcopy_requested_ms = Some(p.now_ms);
                SourceAction::StartPostcopy
            }
            Some(WatchdogAction::Cancel) => {
                return (
                    SourceState::Cancelling(run, CancelReason::Watchdog),
                    Ok(vec![SourceAction::Cancel]),
                )
            }
            // Post-copy's stops; the pre-copy ladder never takes them.
            Some(WatchdogAction::PauseStalled | WatchdogAction::PauseOutOfTime) => {
                return (SourceState::Precopy(run), Ok(vec![]))
            }
        };
        (SourceState::Precopy(run), Ok(vec![action]))
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

    fn cancelling_progress(&self, mut run: Running, why: CancelReason, p: Progress) -> Next {
        let p = run.record(p);
        match p.status {
            Some(MigrationStatus::Cancelled) => {
                let reason = match why {
                    CancelReason::Watchdog => {
                        "watchdog deadline reached; pre-copy did not converge".to_string()
                    }
                    CancelReason::Request => "cancelled on request".to_string(),
                    CancelReason::Budget { budget_ms } => format!(
                        "the run's time budget of {} s ran out; cancelled, the guest stays on the source",
                        budget_ms / 1000
                    ),
                };
                let o = self.finish(run, EndStatus::Cancelled, p.now_ms, Some(reason), false);
                (SourceState::Done(o), Ok(vec![]))
            }
            // The cancel raced with completion or with the switch to post-copy: the migration won.
            Some(MigrationStatus::Completed | MigrationStatus::Failed) => {
                self.precopy_progress(run, p)
            }
            Some(s) if s.is_postcopy() => self.postcopy_progress(run, p),
            _ => (SourceState::Cancelling(run, why), Ok(vec![])),
        }
    }

    /// The run's time budget ran out: a pre-copy is cancelled (the guest stays home), a
    /// post-copy is paused (never cancelled: the guest already runs on the destination).
    fn budget_spent(&self, state: SourceState, now_ms: u64) -> Next {
        let budget_ms = state.running().map_or(0, |run| self.budget_ms(run));
        match state {
            SourceState::Precopy(run) => (
                SourceState::Cancelling(run, CancelReason::Budget { budget_ms }),
                Ok(vec![SourceAction::Cancel]),
            ),
            SourceState::Postcopy(run) => (
                SourceState::Pausing(run, PauseReason::Budget { budget_ms }),
                Ok(vec![SourceAction::Pause]),
            ),
            SourceState::PostcopyPaused(run) => {
                let error = format!(
                    "the run's time budget of {} s ran out while post-copy was paused; {}",
                    budget_ms / 1000,
                    LEFT_PAUSED
                );
                let o = self.finish(run, EndStatus::Paused, now_ms, Some(error), true);
                (SourceState::Done(o), Ok(vec![]))
            }
            // Already stopping: the driver's grace period decides what comes next.
            s => (s, Ok(vec![])),
        }
    }

    /// The budget ran out and QEMU has not confirmed the stop within the driver's grace: end,
    /// with the guest where it was (home before post-copy, on the destination after).
    fn stop_unconfirmed(&self, state: SourceState, now_ms: u64) -> Next {
        let (run, status, moved, error) = match state {
            SourceState::Precopy(run) | SourceState::Cancelling(run, _) => (
                run,
                EndStatus::Failed,
                false,
                "the run's time budget ran out and QEMU did not confirm the cancel; the guest is left as QEMU has it".to_string(),
            ),
            SourceState::Postcopy(run) | SourceState::Pausing(run, _) => (
                run,
                EndStatus::Failed,
                true,
                "the run's time budget ran out in post-copy and QEMU did not confirm migrate-pause; both QEMUs are left running: the guest is on the destination, the rest of its memory on the source".to_string(),
            ),
            SourceState::PostcopyPaused(run) => (
                run,
                EndStatus::Paused,
                true,
                format!("the run's time budget ran out while post-copy was paused; {LEFT_PAUSED}"),
            ),
            s => return (s, Ok(vec![])),
        };
        let o = self.finish(run, status, now_ms, Some(error), moved);
        (SourceState::Done(o), Ok(vec![]))
    }

    fn command_failed_precopy(
        &self,
        run: Running,
        command: String,
        message: String,
        now_ms: u64,
    ) -> Next {
        // A failed parameter tweak is not fatal: pre-copy goes on and the deadline still guards
        // it. A failed start, switch or cancel is: cancel what runs so the VM stays home.
        if command == "migrate-set-parameters" {
            return (SourceState::Precopy(run), Ok(vec![]));
        }
        let error = Some(format!("{command}: {message}"));
        let o = self.finish(run, EndStatus::Failed, now_ms, error, false);
        (SourceState::Done(o), Ok(vec![SourceAction::Cancel]))
    }

    fn command_failed_cancelling(
        &self,
        run: Running,
        why: CancelReason,
        command: String,
        message: String,
        now_ms: u64,
    ) -> Next {
        if command == "migrate-set-parameters" {
            return (SourceState::Cancelling(run, why), Ok(vec![]));
        }
        self.command_failed_precopy(run, command, message, now_ms)
    }

    /// A post-copy that ended failed or paused here, which the destination completed: the
    /// guest is whole there, so the outcome is completed and the source's end a note.
    fn settled(o: SourceOutcome, now_ms: u64) -> Next {
        if !o.vm_on_destination || o.status == EndStatus::Completed {
            return (SourceState::Done(o), Err(SourceError::NotSplit));
        }
        let source_end = format!(
            "the source's QEMU ended the migration {}{}; the destination's QEMU completed it \
             and runs the guest",
            if o.status == EndStatus::Paused {
                "paused"
            } else {
                "failed"
            },
            o.error
                .as_deref()
                .map_or(String::new(), |e| format!(" ({e})"))
        );
        let o = SourceOutcome {
            status: EndStatus::Completed,
            converged: false,
            ended_ms: o.ended_ms.max(now_ms),
            error: Some(source_end),
            ..o
        };
        (SourceState::Done(o), Ok(vec![]))
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

/// What a paused post-copy means for the operator, appended to every [`EndStatus::Paused`]
/// reason.
pub const LEFT_PAUSED: &str = "left paused: the guest is on the destination, the rest of its memory on the source; keep both QEMUs and recover with migrate-recover (destination) and migrate resume (source)";

#[path = "source_postcopy.rs"]
mod postcopy;

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "source_stall_tests.rs"]
mod stall_tests;
