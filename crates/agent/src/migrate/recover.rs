//! After a restart: finding out truthfully what became of migrations that were under way.
//!
//! The driver died with the old agent, but QEMU did not: the source QEMU's `query-migrate`
//! says how far the migration got, and the destination agent says whether the guest runs there.
//! [`reconcile_step`] turns one such observation into a decision; [`recover`] loops until the
//! decision is final. A pre-copy still running has nobody to steer it (no watchdog, no switch to
//! post-copy), so it is cancelled and the VM stays; a post-copy cannot be cancelled (the guest
//! already runs on the destination) and is waited for. What cannot be established is reported
//! `interrupted` with the reason, never guessed.

use super::lifecycle::RecordEvent;
use super::run::{abort_destination, hand_over};
use crate::vms::VmsError;
use crate::AgentState;
use drover_api::{AgentClient, MigrationRecord, MigrationState, VmStatus};
use drover_core::migration::MigrationStatus;
use drover_qemu::qmp::QmpExt;
use std::sync::Arc;
use std::time::Duration;

/// How long a migration QEMU continues on its own is waited for before giving up.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(600);

/// What the source side shows.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSeen {
    /// The VM is no longer registered here (the handover had already stopped it).
    Gone,
    /// The VM's QEMU is dead.
    Lost,
    /// QEMU does not answer as expected.
    Unknown(String),
    Migration(MigrationStatus),
}

/// What the destination side shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestSeen {
    /// The destination agent has the VM and its guest runs.
    Running,
    /// No such VM there, or its guest does not run.
    NotRunning,
    Unreachable,
}

/// The decision for one observation.
#[derive(Debug, Clone, PartialEq)]
pub enum Reconcile {
    /// QEMU is still migrating (post-copy, or a cancel in progress): look again shortly.
    Wait,
    /// A pre-copy runs without its driver: cancel it; the VM stays on the source.
    Cancel,
    /// The VM runs on the destination: commit it there, stop the source.
    Moved,
    /// The VM stayed on the source; the migration ended in this state.
    Stayed(MigrationState),
    /// The outcome cannot be established.
    Interrupted(String),
}

/// Decides from one observation (pure; see the module doc).
pub fn reconcile_step(phase: MigrationState, source: &SourceSeen, dest: DestSeen) -> Reconcile {
    use MigrationStatus as M;
    match source {
        SourceSeen::Lost => Reconcile::Interrupted(
            "the source QEMU died while the agent was down; whether the guest survived on the destination is unknown".into(),
        ),
        SourceSeen::Unknown(why) => Reconcile::Interrupted(format!("the source QEMU cannot be queried: {why}")),
        SourceSeen::Gone if dest == DestSeen::Running => Reconcile::Moved,
        SourceSeen::Gone => Reconcile::Interrupted(
            "the source VM is gone and the destination does not report it running".into(),
        ),
        // `migrate` was never issued before the agent died.
        SourceSeen::Migration(_) if phase == MigrationState::Preparing => Reconcile::Stayed(MigrationState::Failed),
        SourceSeen::Migration(s) if s.is_precopy() => Reconcile::Cancel,
        SourceSeen::Migration(M::Cancelling) => Reconcile::Wait,
        SourceSeen::Migration(s) if s.is_postcopy() => Reconcile::Wait,
        SourceSeen::Migration(M::Completed) => match dest {
            DestSeen::Running => Reconcile::Moved,
            DestSeen::NotRunning => Reconcile::Interrupted(
                "the source QEMU completed the migration but the destination does not run the guest".into(),
            ),
            DestSeen::Unreachable => Reconcile::Interrupted(
                "the source QEMU completed the migration but the destination agent is unreachable".into(),
            ),
        },
        SourceSeen::Migration(M::Failed | M::None) => Reconcile::Stayed(MigrationState::Failed),
        SourceSeen::Migration(M::Cancelled) => Reconcile::Stayed(MigrationState::Cancelled),
        SourceSeen::Migration(other) => Reconcile::Interrupted(format!("unexpected migration status {other:?}")),
    }
}

async fn observe_source(state: &AgentState, vm: &str) -> SourceSeen {
    match state.vms.qmp_of(vm) {
        Err(VmsError::NotFound(_)) => SourceSeen::Gone,
        Err(_) => SourceSeen::Lost,
        Ok(qmp) => match qmp.query_migrate(0).await {
            Ok(p) => SourceSeen::Migration(p.status.unwrap_or(MigrationStatus::None)),
            Err(e) => SourceSeen::Unknown(e.to_string()),
        },
    }
}

async fn observe_dest(dest: &AgentClient, vm: &str) -> DestSeen {
    match dest.get_vm(vm).await {
        Ok(v) if v.status != VmStatus::Lost && v.qemu_status.as_deref() == Some("running") => {
            DestSeen::Running
        }
        Ok(_) => DestSeen::NotRunning,
        Err(e) if e.status() == Some(404) => DestSeen::NotRunning,
        Err(_) => DestSeen::Unreachable,
    }
}

/// Reconciles one migration found non-final at start-up.
pub async fn recover(state: Arc<AgentState>, r: MigrationRecord) {
    let id = r.id.clone();
    if r.state == MigrationState::Measuring {
        // The migration itself had ended and its record was kept; only the after-window is cut.
        state.migrations.note(
            &id,
            "agent restarted while measuring: throughput windows may be incomplete".into(),
        );
        if let Err(e) = state.migrations.apply(&id, RecordEvent::MeasureCut) {
            tracing::error!(migration = %id, error = %e, "cannot close the record");
        }
        super::release_vm(&state, &id, &r.vm);
        return;
    }
    let dest = AgentClient::new(r.request.to.clone(), &state.token);
    let deadline = tokio::time::Instant::now() + RECOVER_TIMEOUT;
    let mut cancelled = false;
    loop {
        let source = observe_source(&state, &r.vm).await;
        let needs_dest = matches!(
            source,
            SourceSeen::Gone | SourceSeen::Migration(MigrationStatus::Completed)
        );
        let dest_seen = if needs_dest {
            observe_dest(&dest, &r.vm).await
        } else {
            DestSeen::Unreachable
        };
        if matches!(source, SourceSeen::Migration(s) if s.is_postcopy()) {
            super::record_switch(&state, &id, &r.vm);
        }
        let decision = reconcile_step(r.state, &source, dest_seen);
        let finish = |s: MigrationState, on_dest: bool, error: Option<String>, note: String| {
            state.migrations.note(&id, note);
            let event = RecordEvent::Reconciled {
                state: s,
                vm_on_destination: on_dest,
                error,
            };
            if let Err(e) = state.migrations.apply(&id, event) {
                tracing::error!(migration = %id, error = %e, "cannot close the record");
            }
        };
        match decision {
            Reconcile::Wait if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Reconcile::Wait => finish(
                MigrationState::Interrupted,
                false,
                Some(format!(
                    "still migrating {} s after an agent restart ({source:?})",
                    RECOVER_TIMEOUT.as_secs()
                )),
                "re-evaluated after agent restart".into(),
            ),
            Reconcile::Cancel => {
                if let Ok(qmp) = state.vms.qmp_of(&r.vm) {
                    if let Err(e) = qmp.migrate_cancel().await {
                        state
                            .migrations
                            .note(&id, format!("cancel after restart failed: {e}"));
                    }
                }
                cancelled = true;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Reconcile::Moved => {
                if source != SourceSeen::Gone {
                    hand_over(&state, &id, &dest, &r.vm).await;
                } else {
                    let _ = dest.commit_incoming(&r.vm).await;
                }
                finish(
                    MigrationState::Completed,
                    true,
                    None,
                    "agent restarted during the migration; QEMU completed it and the VM runs on the destination".into(),
                );
            }
            // After the post-copy switch the source holds only part of the guest: it is never
            // resumed here and the destination is never aborted (a split, settled later).
            Reconcile::Stayed(s)
                if state
                    .migrations
                    .get(&id)
                    .map_or(true, |now| now.vm_on_destination) =>
            {
                let kept = super::abandon::kept_words(&state, &r).await;
                finish(
                    s,
                    true,
                    Some(format!(
                        "agent restarted after the post-copy switch and QEMU ended the migration \
                         {s:?} here: {kept}; DELETE /v1/vms/{} settles it once the destination \
                         owns the guest",
                        r.vm
                    )),
                    "re-evaluated after agent restart".into(),
                );
            }
            Reconcile::Stayed(s) => {
                if let Ok(qmp) = state.vms.qmp_of(&r.vm) {
                    abort_destination(&state, &id, &dest, &r.vm, qmp.as_ref()).await;
                }
                let why = if cancelled {
                    "agent restarted during pre-copy; the unsteered migration was cancelled and the VM stays on the source"
                } else {
                    "agent restarted during the migration; it did not complete and the VM stays on the source"
                };
                finish(
                    s,
                    false,
                    Some(why.into()),
                    "re-evaluated after agent restart".into(),
                );
            }
            Reconcile::Interrupted(why) => finish(
                MigrationState::Interrupted,
                false,
                Some(why),
                "re-evaluated after agent restart".into(),
            ),
        }
        break;
    }
    super::release_vm(&state, &id, &r.vm);
}

#[cfg(test)]
mod tests {
    use super::*;
    use MigrationState as S;
    use MigrationStatus as M;

    fn step(phase: S, s: SourceSeen, d: DestSeen) -> Reconcile {
        reconcile_step(phase, &s, d)
    }

    #[test]
    fn unsteered_precopy_is_cancelled_and_then_stays() {
        assert_eq!(
            step(
                S::Running,
                SourceSeen::Migration(M::Active),
                DestSeen::Unreachable
            ),
            Reconcile::Cancel
        );
        assert_eq!(
            step(
                S::Running,
                SourceSeen::Migration(M::Cancelling),
                DestSeen::Unreachable
            ),
            Reconcile::Wait
        );
        assert_eq!(
            step(
                S::Running,
                SourceSeen::Migration(M::Cancelled),
                DestSeen::Unreachable
            ),
            Reconcile::Stayed(S::Cancelled)
        );
    }

    #[test]
    fn postcopy_is_waited_for_and_completion_needs_the_destination() {
        assert_eq!(
            step(
                S::Running,
                SourceSeen::Migration(M::PostcopyActive),
                DestSeen::Running
            ),
            Reconcile::Wait
        );
        assert_eq!(
            step(
                S::Running,
                SourceSeen::Migration(M::Completed),
                DestSeen::Running
            ),
            Reconcile::Moved
        );
        assert!(matches!(
            step(
                S::Running,
                SourceSeen::Migration(M::Completed),
                DestSeen::Unreachable
            ),
            Reconcile::Interrupted(_)
        ));
        assert!(matches!(
            step(
                S::Running,
                SourceSeen::Migration(M::Completed),
                DestSeen::NotRunning
            ),
            Reconcile::Interrupted(_)
        ));
    }

    #[test]
    fn failures_stay_and_unknowns_are_interrupted() {
        assert_eq!(
            step(
                S::Running,
                SourceSeen::Migration(M::Failed),
                DestSeen::Unreachable
            ),
            Reconcile::Stayed(S::Failed)
        );
        assert_eq!(
            step(
                S::Preparing,
                SourceSeen::Migration(M::None),
                DestSeen::Unreachable
            ),
            Reconcile::Stayed(S::Failed)
        );
        assert!(matches!(
            step(S::Running, SourceSeen::Lost, DestSeen::Running),
            Reconcile::Interrupted(_)
        ));
        assert!(matches!(
            step(
                S::Running,
                SourceSeen::Unknown("x".into()),
                DestSeen::Running
            ),
            Reconcile::Interrupted(_)
        ));
        assert_eq!(
            step(S::Running, SourceSeen::Gone, DestSeen::Running),
            Reconcile::Moved
        );
        assert!(matches!(
            step(S::Running, SourceSeen::Gone, DestSeen::Unreachable),
            Reconcile::Interrupted(_)
        ));
    }
}
