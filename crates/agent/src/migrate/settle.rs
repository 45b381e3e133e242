//! Settling a split migration: a post-copy that ended `failed` or `paused` here after the
//! switch, whose destination nonetheless has the whole guest (its QEMU says the incoming
//! migration completed and the guest runs). The source's QEMU fails a migration whose
//! `migrate-pause` caught it past its last page, while the destination completes; the driver
//! settles that at the end of the run when the destination completes within its settle time,
//! and `DELETE /v1/vms/{vm}` on the source settles it later. Settling commits the VM on the
//! destination, stops the source's QEMU, forgets the source VM and records the migration
//! `completed`. The guest is never lost: nothing is stopped unless the destination says it has
//! every page and runs the guest (its VM committed and running, the commit being refused until
//! its QEMU has the whole guest; or, still incoming, its QEMU's incoming migration completed and
//! the guest running), and never a storage post-copy whose stream has not completed (the
//! source's disk holds blocks the destination lacks: `storage_pc::settle_refusal`).

use super::lifecycle::{self, RecordEvent};
use super::run::hand_over;
use super::MigrateError;
use crate::remote::RemoteQmp;
use crate::AgentState;
use drover_api::{AgentClient, MigrationRecord, MigrationState, VmStatus};
use drover_core::migration::MigrationStatus;
use drover_qemu::qmp::QmpExt;
use std::time::Duration;

/// Whether the destination's QEMU holds the whole guest, from its incoming migration status
/// and whether the guest runs (pure, for tests): only `completed` and running does.
///
/// # Errors
/// Why not, in words, otherwise.
pub fn whole_on_destination(
    incoming: Option<MigrationStatus>,
    running: bool,
) -> Result<(), String> {
    match (incoming, running) {
        (Some(MigrationStatus::Completed), true) => Ok(()),
        (Some(MigrationStatus::Completed), false) => {
            Err("its QEMU completed the incoming migration but the guest does not run".into())
        }
        (s, _) => Err(format!(
            "its QEMU's incoming migration is {}, not completed: it may lack pages only the \
             source has",
            s.map_or("unknown".to_string(), |s| format!("{s:?}").to_lowercase())
        )),
    }
}

/// The migration holding `vm` split, if one does: ended failed or paused after the switch.
pub fn split_migration_of(state: &AgentState, vm: &str) -> Option<MigrationRecord> {
    state.migrations.list().into_iter().rev().find(|r| {
        r.vm == vm
            && matches!(r.state, MigrationState::Failed | MigrationState::Paused)
            && r.vm_on_destination
            && lifecycle::holds_vm(r)
    })
}

/// Settles split migration `r` if the destination has the whole guest; otherwise changes
/// nothing. `completed_now`: the caller just saw it complete (a resumed post-copy), so the
/// record's end and total time move to now.
///
/// # Errors
/// [`MigrateError::NotSettled`] when the destination does not say it has the whole guest (or
/// cannot be asked); the record's own errors.
pub async fn settle(
    state: &AgentState,
    r: &MigrationRecord,
    completed_now: bool,
) -> Result<MigrationRecord, MigrateError> {
    let dest = AgentClient::new(r.request.to.clone(), &state.token);
    let remote = RemoteQmp {
        client: dest.clone(),
        vm: r.vm.clone(),
    };
    let not_settled = |why: String| MigrateError::NotSettled {
        id: r.id.clone(),
        vm: r.vm.clone(),
        why,
    };
    if let Some(why) = super::storage_pc::settle_refusal(state, r) {
        return Err(not_settled(why));
    }
    let view = dest
        .get_vm(&r.vm)
        .await
        .map_err(|e| not_settled(format!("the destination cannot be asked: {e}")))?;
    match view.status {
        // Committed there already (the destination commits only a whole guest): it must run.
        VmStatus::Running if view.qemu_status.as_deref() == Some("running") => {}
        VmStatus::Incoming => {
            let ask = |e: drover_qemu::qmp::QmpError| {
                not_settled(format!("the destination cannot be asked: {e}"))
            };
            let running = remote.query_status().await.map_err(ask)?.running;
            let incoming = remote.query_migrate(0).await.map_err(ask)?.status;
            whole_on_destination(incoming, running)
                .map_err(|why| not_settled(format!("the destination: {why}")))?;
        }
        other => {
            return Err(not_settled(format!(
                "the destination's VM is {other:?} (QEMU {})",
                view.qemu_status.as_deref().unwrap_or("unknown")
            )))
        }
    }
    // The source QEMU's final count (before hand-over stops it): after a resumed post-copy
    // it covers what was sent after the pause too.
    let transferred_bytes = match state.vms.qmp_of(&r.vm) {
        Ok(q) => tokio::time::timeout(Duration::from_secs(3), q.query_migrate(0))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|p| p.transferred()),
        Err(_) => None,
    };
    hand_over(state, &r.id, &dest, &r.vm).await;
    let record = state.migrations.apply(
        &r.id,
        RecordEvent::Settled {
            how: "the destination's QEMU completed the incoming migration and runs the guest; \
                  committed there, the source's QEMU stopped"
                .into(),
            completed_now,
            transferred_bytes,
        },
    )?;
    super::release_vm(state, &r.id, &r.vm);
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_completed_running_destination_holds_the_whole_guest() {
        assert_eq!(
            whole_on_destination(Some(MigrationStatus::Completed), true),
            Ok(())
        );
        for (status, running) in [
            (Some(MigrationStatus::Completed), false),
            (Some(MigrationStatus::PostcopyActive), true),
            (Some(MigrationStatus::PostcopyPaused), true),
            (Some(MigrationStatus::Failed), true),
            (None, true),
        ] {
            assert!(
                whole_on_destination(status, running).is_err(),
                "{status:?} running {running}"
            );
        }
    }
}
