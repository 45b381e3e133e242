//! Drives one live migration through QMP: carries out what core's [`SourceMachine`] decides and
//! tracks the destination with [`DestMachine`].
//!
//! Order of operations (both QEMUs already running, the destination with `-incoming defer`):
//! 1. probe both sides for postcopy-preempt (used when both have it and post-copy may happen);
//! 2. destination: capabilities, `migrate-incoming` (it now listens);
//! 3. source: capabilities, parameters, `migrate`;
//! 4. poll both sides every `poll_interval`, feeding the machines, until the source machine is
//!    done and, on success, the destination runs the guest;
//! 5. on a failure or cancel before post-copy, make sure the guest runs on the source again
//!    (once QEMU says the migration is over without moving it); on a post-copy that ended
//!    failed or paused here, ask the destination whether it completed anyway (then the run
//!    completed).
//!
//! The destination is looked at alongside each source poll, each look bounded by
//! [`DriverConfig::dest_look_timeout`], so a cut link to the destination never holds up the
//! source's figures and the post-copy stall watchdog that judges them. A look that fails is
//! told to the [`DestMachine`] as such (`LookFailed`), which fails the destination only after
//! a row of them (a blip is not a death); a QMP connection that closed is its death at once.
//!
//! A source poll that fails is asked once more; if that fails too because QEMU is busy (a
//! timeout, or a command refused while earlier ones are unanswered) the driver waits and
//! polls on, up to [`DriverConfig::source_patience`] from the first such failure; any other
//! failure (a closed socket), or a busy QEMU past that, is the source lost
//! ([`SourceEvent::SourceLost`]) and the machine decides where the guest is: before post-copy
//! was asked for, at home, and [`migrate`] returns [`DriverError::SourceLost`] (the caller
//! drops the destination); after, on the destination (or possibly so), and the run ends
//! failed (or paused) with `vm_on_destination`, settled as completed if the destination then
//! says it has the whole guest, so no caller throws the destination's copy away.
//!
//! A cancel request arrives through a `watch` channel and is handed to the machine, which
//! refuses it once post-copy has started.
//!
//! Time: the run has a budget that follows the plan's knobs
//! ([`SourceMachine::budget_deadline_ms`]: pre-copy deadline + time to send the guest's RAM at
//! the expected rate + the post-copy stall limit + a margin). When it runs out the driver tells
//! the machine, which cancels a pre-copy (the guest is then resumed on the source) and pauses a
//! post-copy (never cancels it, never restarts the source). If QEMU confirms neither within
//! `settle_timeout`, the machine ends the run failed with the guest where it was.

use crate::metrics::Clock;
use crate::qmp::{Qmp, QmpError, QmpEvent, QmpExt};
use drover_core::migration::{
    paused_by_migration, DestEvent, DestMachine, DestObservation, EndStatus, MigrationPlan,
    MigrationStatus, Progress, SourceAction, SourceEvent, SourceMachine, SourceOutcome,
};
use std::collections::VecDeque;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::watch;

#[derive(Debug, Error)]
pub enum DriverError {
    /// The source QEMU stopped answering before post-copy was asked for: the guest is on the
    /// source (if anywhere), and the destination's incoming QEMU may go.
    #[error("source QEMU stopped answering during the migration: {0}")]
    SourceLost(QmpError),
}

/// Knobs of the driver itself (the migration's own, its time budget included, are in the plan).
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub poll_interval: Duration,
    /// How long to wait for the destination to report the guest running after completion, for
    /// QEMU to confirm a cancel or pause once the time budget ran out, and for a stopped
    /// migration to settle before the source guest is resumed.
    pub settle_timeout: Duration,
    /// Use postcopy-preempt when both sides support it.
    pub prefer_preempt: bool,
    /// How long one look at the destination may take. A look that takes longer is dropped
    /// (the destination is then unknown for that poll, not dead): between agents it is an HTTP
    /// call, which a cut link holds until TCP gives up, and the source's polls (and with them
    /// the post-copy stall watchdog) must not wait for it.
    pub dest_look_timeout: Duration,
    /// How long the source may go without answering (its QMP commands timing out, or refused
    /// because earlier ones are unanswered) before it counts as lost. Its socket still open,
    /// QEMU is busy, not gone: under TCG, a storage pre-copy over a WAN held one source's
    /// main loop for over 30 s near its switchover (BENCHMARKS.md), and calling that lost
    /// failed a migration that was going to complete. A closed socket is lost at once.
    pub source_patience: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            poll_interval: Duration::from_millis(25),
            settle_timeout: Duration::from_secs(10),
            prefer_preempt: true,
            dest_look_timeout: Duration::from_secs(1),
            source_patience: Duration::from_secs(120),
        }
    }
}

/// What the driver saw.
#[derive(Debug, Clone)]
pub struct MigrationRun {
    /// The plan as run (with preempt resolved).
    pub plan: MigrationPlan,
    pub outcome: SourceOutcome,
    /// When the destination first ran the guest (driver clock).
    pub dest_running_ms: Option<u64>,
    /// What went wrong on the destination, if anything.
    pub dest_error: Option<String>,
    /// The guest's pause at switchover, from the source's STOP event to the destination's
    /// RESUME event (both stamped by QEMU with the host clock).
    pub pause_ms: Option<u64>,
}

impl MigrationRun {
    /// The run's instants: start, guest first running on the destination, over (see
    /// `drover_core::migration::result`). Keep sampling the workload until
    /// `span().samples_until_ms()` for a complete record.
    pub fn span(&self) -> drover_core::migration::result::Span {
        drover_core::migration::result::Span::of(&self.outcome, self.dest_running_ms)
    }

    /// The run's record, with the workload samples the metrics readers collected.
    pub fn result(
        &self,
        samples: &[drover_core::migration::OpsSample],
    ) -> drover_core::migration::MigrationResult {
        drover_core::migration::MigrationResult::assemble(&drover_core::migration::RunFacts {
            requested: self.plan.requested,
            chosen: self.plan.technique,
            reason: &self.plan.reason,
            outcome: &self.outcome,
            dest_running_ms: self.dest_running_ms,
            pause_ms: self.pause_ms,
            samples,
        })
    }
}

/// The two ends of a migration and the URIs the destination listens on.
pub struct Endpoints<'a> {
    pub source: &'a dyn Qmp,
    pub dest: &'a dyn Qmp,
    pub uri: String,
    /// Where the destination listens again to recover a paused post-copy (a fresh address: the
    /// first one may still be held by the broken connection).
    pub recover_uri: String,
}

/// Runs one migration to its end.
pub async fn migrate(
    ends: &Endpoints<'_>,
    mut plan: MigrationPlan,
    config: &DriverConfig,
    clock: &Clock,
    mut cancel: Option<watch::Receiver<bool>>,
) -> Result<MigrationRun, DriverError> {
    if plan.may_postcopy() && config.prefer_preempt {
        plan.postcopy_preempt = both_support(ends, "postcopy-preempt").await;
    }
    // Events from before this migration would confuse the pause measurement.
    ends.source.take_events();
    ends.dest.take_events();
    let mut machine = SourceMachine::new(plan.clone());
    let mut dest = DestMachine::default();
    if let Err(e) = configure(ends, &plan, &mut dest).await {
        fail(&mut machine, e.0, e.1, clock);
        return Ok(finish(ends, machine, dest, plan, config, clock).await);
    }
    let actions = machine.handle(SourceEvent::Configured).unwrap_or_default();
    execute(ends, &mut machine, actions, clock).await;
    let mut clock_events = TimeEvents::default();
    let mut unanswered_since: Option<tokio::time::Instant> = None;
    while machine.outcome().is_none() {
        if let Some(event) = clock_events.due(&machine, config, clock) {
            let last = matches!(event, SourceEvent::StopUnconfirmed { .. });
            let actions = machine.handle(event).unwrap_or_default();
            execute(ends, &mut machine, actions, clock).await;
            if last {
                break; // nothing more is owed; `finish` reports whatever the machine holds
            }
            continue;
        }
        tokio::time::sleep(config.poll_interval).await;
        if cancel_requested(&mut cancel) {
            let now_ms = clock.now_ms();
            match machine.handle(SourceEvent::CancelRequested { now_ms }) {
                Ok(actions) => execute(ends, &mut machine, actions, clock).await,
                Err(e) => tracing::warn!(error = %e, "cancel refused"),
            }
        }
        // Both sides at once, the destination's look bounded: a destination behind a cut link
        // must not hold up the source's figures. The figures carry the time they arrived, so a
        // slow answer still counts in full towards a stall.
        let (progress, ()) = tokio::join!(
            look_at_source(ends.source, clock),
            look_at_dest(ends, &mut dest, config, clock)
        );
        // One failed poll may be a hiccup (a QMP timeout while QEMU is busy): ask again.
        let progress = match progress {
            Ok(p) => Ok(p),
            Err(_) => look_at_source(ends.source, clock).await,
        };
        let progress = match progress {
            Ok(p) => {
                unanswered_since = None;
                p
            }
            Err(e) if busy_within(&e, &mut unanswered_since, config.source_patience) => {
                tracing::warn!(error = %e, "the source QEMU does not answer; waiting");
                continue;
            }
            Err(e) => {
                let now_ms = clock.now_ms();
                let message = e.to_string();
                if let Err(refused) = machine.handle(SourceEvent::SourceLost { message, now_ms }) {
                    tracing::warn!(error = %refused, "source lost, the machine disagrees");
                }
                if !machine.outcome().is_some_and(|o| o.vm_on_destination) {
                    return Err(DriverError::SourceLost(e));
                }
                // The guest is (or may be) on the destination: end as a split run, asking the
                // destination whether it has every page.
                break;
            }
        };
        let actions = machine
            .handle(SourceEvent::Progress(progress))
            .unwrap_or_default();
        execute(ends, &mut machine, actions, clock).await;
    }
    settle_split(ends, &mut machine, config, clock).await;
    settle_dest(ends, &mut dest, &machine, config, clock).await;
    Ok(finish(ends, machine, dest, plan, config, clock).await)
}

/// Whether a failed look at the source is QEMU being busy (a timeout, or a command refused
/// while earlier ones are unanswered) for less than `patience` since `since` (set on the
/// first such failure); a closed socket or an error QEMU answered is never busy.
fn busy_within(e: &QmpError, since: &mut Option<tokio::time::Instant>, patience: Duration) -> bool {
    if !matches!(e, QmpError::Timeout { .. } | QmpError::Busy { .. }) {
        return false;
    }
    let first = *since.get_or_insert_with(tokio::time::Instant::now);
    first.elapsed() < patience
}

/// A post-copy that ended failed or paused here may still have completed: the source's QEMU
/// fails a migration whose `migrate-pause` caught it past its last page, and the destination
/// has every page by then. Asks the destination (for up to `settle_timeout`, while its incoming
/// side is still in post-copy) and, when its QEMU says the incoming migration completed and the
/// guest runs, tells the machine, which ends the run completed. Anything else leaves the
/// outcome as it is: the source QEMU is kept, since it may hold pages the destination lacks.
async fn settle_split(
    ends: &Endpoints<'_>,
    machine: &mut SourceMachine,
    config: &DriverConfig,
    clock: &Clock,
) {
    let split = machine
        .outcome()
        .is_some_and(|o| o.vm_on_destination && o.status != EndStatus::Completed);
    if !split {
        return;
    }
    let deadline = clock.now_ms() + config.settle_timeout.as_millis() as u64;
    while clock.now_ms() < deadline {
        let look = async {
            let status = ends.dest.query_status().await?;
            let incoming = ends.dest.query_migrate(clock.now_ms()).await?;
            Ok::<_, QmpError>((incoming.status, status.running))
        };
        match tokio::time::timeout(config.dest_look_timeout, look).await {
            Ok(Ok((Some(MigrationStatus::Completed), true))) => {
                let now_ms = clock.now_ms();
                if let Err(e) = machine.handle(SourceEvent::DestinationCompleted { now_ms }) {
                    tracing::warn!(error = %e, "destination completed, the machine disagrees");
                }
                return;
            }
            // Still receiving (or completed and about to run the guest): ask again.
            Ok(Ok((Some(MigrationStatus::PostcopyActive | MigrationStatus::Completed), _))) => {}
            // Paused, failed, or no migration there: it does not have the whole guest.
            Ok(Ok(_)) => return,
            Ok(Err(e)) => tracing::debug!(error = %e, "destination look failed; asking again"),
            Err(_) => tracing::debug!("destination look timed out; asking again"),
        }
        tokio::time::sleep(config.poll_interval).await;
    }
}

/// One poll of the source, its figures stamped with the time QEMU answered.
async fn look_at_source(source: &dyn Qmp, clock: &Clock) -> Result<Progress, QmpError> {
    let mut p = source.query_migrate(clock.now_ms()).await?;
    p.now_ms = clock.now_ms();
    Ok(p)
}

/// One bounded look at the destination (see [`DriverConfig::dest_look_timeout`]); a look that
/// takes too long tells the destination machine nothing.
async fn look_at_dest(
    ends: &Endpoints<'_>,
    dest: &mut DestMachine,
    config: &DriverConfig,
    clock: &Clock,
) {
    if tokio::time::timeout(config.dest_look_timeout, observe_dest(ends, dest, clock))
        .await
        .is_err()
    {
        tracing::debug!("destination look timed out; the source is polled regardless");
    }
}

/// The time events the driver owes the machine: the run's budget running out, then, if the
/// machine is still not done `settle_timeout` later, the stop unconfirmed.
#[derive(Debug, Default)]
struct TimeEvents {
    /// When the budget was reported spent, ms (driver clock).
    spent_at: Option<u64>,
}

impl TimeEvents {
    fn due(
        &mut self,
        machine: &SourceMachine,
        config: &DriverConfig,
        clock: &Clock,
    ) -> Option<SourceEvent> {
        let now_ms = clock.now_ms();
        match self.spent_at {
            Some(at) if now_ms > at + config.settle_timeout.as_millis() as u64 => {
                Some(SourceEvent::StopUnconfirmed { now_ms })
            }
            Some(_) => None,
            None if machine.budget_deadline_ms().is_some_and(|d| now_ms > d) => {
                self.spent_at = Some(now_ms);
                Some(SourceEvent::BudgetSpent { now_ms })
            }
            None => None,
        }
    }
}

fn cancel_requested(cancel: &mut Option<watch::Receiver<bool>>) -> bool {
    let Some(rx) = cancel else { return false };
    if rx.has_changed().unwrap_or(false) && *rx.borrow_and_update() {
        *cancel = None; // ask once
        return true;
    }
    false
}

async fn both_support(ends: &Endpoints<'_>, cap: &str) -> bool {
    let has = |caps: Result<Vec<String>, QmpError>| {
        caps.map(|c| c.iter().any(|n| n == cap)).unwrap_or(false)
    };
    has(ends.source.supported_capabilities().await) && has(ends.dest.supported_capabilities().await)
}

type StepError = (String, String);

fn step_err(command: &str) -> impl Fn(QmpError) -> StepError + '_ {
    move |e| (command.to_string(), e.to_string())
}

async fn configure(
    ends: &Endpoints<'_>,
    plan: &MigrationPlan,
    dest: &mut DestMachine,
) -> Result<(), StepError> {
    ends.dest
        .set_capabilities(&plan.shared_capabilities())
        .await
        .map_err(step_err("destination migrate-set-capabilities"))?;
    ends.dest
        .migrate_incoming(&ends.uri)
        .await
        .map_err(step_err("destination migrate-incoming"))?;
    let _ = dest.handle(DestEvent::ListenIssued);
    ends.source
        .set_capabilities(&plan.source_capabilities())
        .await
        .map_err(step_err("migrate-set-capabilities"))?;
    ends.source
        .set_parameters(&plan.initial_parameters())
        .await
        .map_err(step_err("migrate-set-parameters (initial)"))?;
    Ok(())
}

fn fail(
    machine: &mut SourceMachine,
    command: String,
    message: String,
    clock: &Clock,
) -> Vec<SourceAction> {
    machine
        .handle(SourceEvent::CommandFailed {
            command,
            message,
            now_ms: clock.now_ms(),
        })
        .unwrap_or_default()
}

/// Carries out actions; a failed command is reported back to the machine (which may ask for
/// more, e.g. a cancel), so this loops until nothing is left.
async fn execute(
    ends: &Endpoints<'_>,
    machine: &mut SourceMachine,
    actions: Vec<SourceAction>,
    clock: &Clock,
) {
    let mut queue: VecDeque<SourceAction> = actions.into();
    while let Some(action) = queue.pop_front() {
        let (name, result) = run_action(ends, &action).await;
        let followups = match result {
            Ok(()) => match action {
                SourceAction::Migrate => machine.handle(SourceEvent::MigrateIssued {
                    now_ms: clock.now_ms(),
                }),
                SourceAction::Recover => machine.handle(SourceEvent::RecoveryIssued {
                    now_ms: clock.now_ms(),
                }),
                _ => Ok(vec![]),
            }
            .unwrap_or_default(),
            Err(e) if machine.outcome().is_some() => {
                tracing::warn!(command = name, error = %e, "clean-up command failed");
                vec![]
            }
            Err(e) => fail(machine, name.to_string(), e.to_string(), clock),
        };
        queue.extend(followups);
    }
}

async fn run_action(
    ends: &Endpoints<'_>,
    action: &SourceAction,
) -> (&'static str, Result<(), QmpError>) {
    match action {
        SourceAction::Migrate => ("migrate", ends.source.migrate(&ends.uri).await),
        SourceAction::StartPostcopy => (
            "migrate-start-postcopy",
            ends.source.migrate_start_postcopy().await,
        ),
        SourceAction::SetParameters(p) => (
            "migrate-set-parameters",
            ends.source.set_parameters(p).await,
        ),
        SourceAction::Cancel => ("migrate_cancel", ends.source.migrate_cancel().await),
        SourceAction::Pause => ("migrate-pause", ends.source.migrate_pause().await),
        SourceAction::Recover => {
            if let Err(e) = ends.dest.migrate_recover(&ends.recover_uri).await {
                return ("migrate-recover", Err(e));
            }
            (
                "migrate (resume)",
                ends.source.migrate_resume(&ends.recover_uri).await,
            )
        }
    }
}

async fn observe_dest(ends: &Endpoints<'_>, dest: &mut DestMachine, clock: &Clock) {
    let status = ends.dest.query_status().await;
    let incoming = ends.dest.query_migrate(clock.now_ms()).await;
    let event = match (status, incoming) {
        (Ok(s), Ok(p)) => DestEvent::Observed(DestObservation {
            now_ms: clock.now_ms(),
            status: p.status,
            vm_running: s.running,
        }),
        // A closed connection is QEMU gone; anything else may pass (see `DestMachine`).
        (Err(e @ QmpError::Closed), _) | (_, Err(e @ QmpError::Closed)) => DestEvent::Died {
            message: e.to_string(),
        },
        (Err(e), _) | (_, Err(e)) => DestEvent::LookFailed {
            now_ms: clock.now_ms(),
            message: e.to_string(),
        },
    };
    let _ = dest.handle(event);
}

/// After success, waits for the destination to report the guest running.
async fn settle_dest(
    ends: &Endpoints<'_>,
    dest: &mut DestMachine,
    machine: &SourceMachine,
    config: &DriverConfig,
    clock: &Clock,
) {
    let moved = machine.outcome().is_some_and(|o| o.vm_on_destination);
    let deadline = clock.now_ms() + config.settle_timeout.as_millis() as u64;
    while moved && dest.running_since_ms().is_none() && clock.now_ms() < deadline {
        look_at_dest(ends, dest, config, clock).await;
        if matches!(
            dest.state(),
            drover_core::migration::DestState::Failed { .. }
        ) {
            break;
        }
        tokio::time::sleep(config.poll_interval).await;
    }
}

async fn finish(
    ends: &Endpoints<'_>,
    machine: SourceMachine,
    dest: DestMachine,
    plan: MigrationPlan,
    config: &DriverConfig,
    clock: &Clock,
) -> MigrationRun {
    let outcome = match machine.outcome() {
        Some(o) => o.clone(),
        None => unreachable_outcome(),
    };
    if outcome.status != EndStatus::Completed && !outcome.vm_on_destination {
        ensure_source_running(ends.source, config, clock).await;
    }
    let dest_error = match dest.state() {
        drover_core::migration::DestState::Failed { error, .. } => Some(error.clone()),
        _ => None,
    };
    let pause_ms = if outcome.vm_on_destination {
        let (source_events, dest_events) = (ends.source.take_events(), ends.dest.take_events());
        let pause = switchover_pause_ms(&source_events, &dest_events);
        if pause.is_none() {
            report_unknown_pause(ends.dest.forwards_events(), &source_events, &dest_events);
        }
        pause
    } else {
        None
    };
    MigrationRun {
        plan,
        outcome,
        dest_running_ms: dest.running_since_ms(),
        dest_error,
        pause_ms,
    }
}

/// Says why the switchover pause is unknown: expected (once, at debug) when the destination's
/// events are not forwarded, as between agents; a warning, naming the events seen, when they
/// are and the pair is still missing. Returns whether it warned.
fn report_unknown_pause(dest_forwards: bool, source: &[QmpEvent], dest: &[QmpEvent]) -> bool {
    static NOT_FORWARDED: std::sync::Once = std::sync::Once::new();
    if !dest_forwards {
        NOT_FORWARDED.call_once(|| {
            tracing::debug!(
                "switchover pause unknown: the destination's QEMU events (RESUME) are not \
                 forwarded between agents; the record's downtime is QEMU's own figure for \
                 pre-copy and unknown for post-copy"
            )
        });
        return false;
    }
    let names = |events: &[QmpEvent]| {
        events
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    tracing::warn!(
        source = %names(source),
        dest = %names(dest),
        "no STOP/RESUME pair: switchover pause unknown"
    );
    true
}

/// Destination RESUME minus the last source STOP before it, in ms.
pub fn switchover_pause_ms(source: &[QmpEvent], dest: &[QmpEvent]) -> Option<u64> {
    let resume = dest.iter().find(|e| e.name == "RESUME")?.timestamp_us?;
    let stop = source
        .iter()
        .filter(|e| e.name == "STOP")
        .filter_map(|e| e.timestamp_us)
        .filter(|ts| *ts <= resume)
        .max()?;
    Some((resume - stop) / 1000)
}

fn unreachable_outcome() -> SourceOutcome {
    // `finish` is only called once the machine is done; keep a truthful record if not.
    SourceOutcome {
        status: EndStatus::Failed,
        converged: false,
        vm_on_destination: false,
        started_ms: 0,
        ended_ms: 0,
        postcopy_started_ms: None,
        watchdog_actions: vec![],
        error: Some("driver ended before the migration did".into()),
        last: Default::default(),
    }
}

/// A migration that failed after QEMU stopped the guest for switchover leaves it paused on the
/// source; resume it so no VM is lost. Only once QEMU says the migration is over without moving
/// the guest: resuming while it still runs, or after it completed, would run the guest twice.
async fn ensure_source_running(source: &dyn Qmp, config: &DriverConfig, clock: &Clock) {
    let deadline = clock.now_ms() + config.settle_timeout.as_millis() as u64;
    loop {
        match source.query_migrate(clock.now_ms()).await {
            Ok(p) if p.status.is_none_or(MigrationStatus::left_guest_on_source) => break,
            Ok(p) if p.status == Some(MigrationStatus::Completed) || clock.now_ms() >= deadline => {
                tracing::error!(status = ?p.status, "the source's migration is not over without moving the guest; the source guest is left as it is");
                return;
            }
            Ok(_) => tokio::time::sleep(config.poll_interval).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot check the source's migration before resuming its guest");
                return;
            }
        }
    }
    match source.query_status().await {
        Ok(s) if paused_by_migration(&s.status) => {
            if let Err(e) = source.cont().await {
                tracing::error!(error = %e, "could not resume the guest on the source");
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot check the source guest after a failed migration")
        }
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "driver_stall_tests.rs"]
mod stall_tests;
