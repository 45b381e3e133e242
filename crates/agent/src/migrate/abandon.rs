//! Giving up a split post-copy whose destination QEMU died: `POST /v1/migrations/{id}/abandon`.
//!
//! After the post-copy switch the guest runs on the destination and part of its memory (and,
//! with storage post-copy, what it wrote to its disk since) exists only there. When that QEMU
//! dies the guest is lost in memory terms: no resume or settle can bring it back, and without
//! this call the source's `postmigrate` QEMU, the VM's name and the migration stay held for
//! good. The operator gives it up explicitly; nothing here deletes a disk file:
//!
//! ```text
//! C -> S  POST /v1/migrations/{id}/abandon
//! S       refuses (409) unless the record is failed or paused with the guest on the
//!         destination, no resume of it runs, and D's agent says its VM is lost or gone
//!         ([`abandon_refusal`]); a D that cannot be asked is refused too (it may hold the
//!         guest): ask again once D answers
//! S -> D  DELETE /v1/incoming/{vm}: D releases its dead incoming VM and keeps its disk
//!         (the overlay, named in the reply's kept_disk); a failure here is a note only
//! S       stops its QEMU, keeps its disk file and hands it to the operator
//!         (`Vms::give_up`: the VM is reported lost with the reason; deleting it keeps
//!         the file); the kept storage post-copy session is dropped
//! S       record: abandoned (lifecycle's `abandoned` event), error naming what died
//!         and where the disks are
//! ```

use super::lifecycle::{self, RecordEvent};
use super::MigrateError;
use crate::AgentState;
use drover_api::{AgentClient, MigrationRecord, MigrationState, VmStatus};
use std::sync::Arc;

/// What the destination's agent says of the migration's VM there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestQemu {
    /// Its QEMU is there (the words: the VM's status and QEMU's).
    Alive(String),
    /// Its QEMU died (the VM is lost there) or the VM is not there at all.
    Gone(String),
    /// The destination agent did not answer.
    Unknown(String),
}

/// Asks the destination's agent about migration `r`'s VM.
pub async fn look_at_destination(state: &AgentState, r: &MigrationRecord) -> DestQemu {
    let dest = AgentClient::new(r.request.to.clone(), &state.token);
    match dest.get_vm(&r.vm).await {
        Ok(v) if v.status == VmStatus::Lost => DestQemu::Gone(format!(
            "its VM is lost there: {}",
            v.error.as_deref().unwrap_or("its QEMU is gone")
        )),
        Ok(v) => DestQemu::Alive(format!(
            "its VM is {:?} there (QEMU {})",
            v.status,
            v.qemu_status.as_deref().unwrap_or("status unknown")
        )),
        Err(e) if e.status() == Some(404) => DestQemu::Gone("it has no such VM".into()),
        Err(e) => DestQemu::Unknown(e.to_string()),
    }
}

/// Why split migration `r` may not be abandoned, if so (pure, for tests): it is no split
/// post-copy, or its destination QEMU may still hold the guest.
pub fn abandon_refusal(r: &MigrationRecord, dest: &DestQemu) -> Option<String> {
    let split = matches!(r.state, MigrationState::Failed | MigrationState::Paused)
        && r.vm_on_destination
        && lifecycle::holds_vm(r);
    if !split {
        return Some(format!(
            "it is {} and {}; only a post-copy that ended failed or paused after the switch, \
             its guest on the destination, can be",
            format!("{:?}", r.state).to_lowercase(),
            if r.vm_on_destination {
                "its guest left the source"
            } else {
                "its guest never left the source"
            }
        ));
    }
    match dest {
        DestQemu::Gone(_) => None,
        DestQemu::Alive(how) => Some(format!(
            "the destination's QEMU is alive ({how}) and may hold the guest: resume it \
             (POST /v1/migrations/{}/resume) or settle it (DELETE /v1/vms/{} here) instead",
            r.id, r.vm
        )),
        DestQemu::Unknown(e) => Some(format!(
            "the destination agent cannot be asked ({e}), so whether its QEMU died is not \
             known; ask again once it answers"
        )),
    }
}

/// What a paused migration keeps, in words for its notes: both QEMUs when the destination's
/// lives (or cannot be asked), else that the guest is lost and how to give it up.
pub async fn kept_words(state: &AgentState, r: &MigrationRecord) -> String {
    kept_words_for(&r.id, &look_at_destination(state, r).await)
}

/// [`kept_words`] for migration `id` (its record's error when there is none).
pub async fn kept_words_of(state: &AgentState, id: &str) -> String {
    match state.migrations.get(id) {
        Ok(r) => kept_words(state, &r).await,
        Err(e) => e.to_string(),
    }
}

/// [`kept_words`] from a look (pure, for tests).
pub fn kept_words_for(id: &str, dest: &DestQemu) -> String {
    match dest {
        DestQemu::Alive(_) => {
            "both QEMUs kept (the guest on the destination, the rest of it on the source)".into()
        }
        DestQemu::Unknown(e) => format!(
            "the source's QEMU and disk kept; the destination cannot be asked ({e}), its QEMU \
             kept there if it lives"
        ),
        DestQemu::Gone(how) => format!(
            "the destination's QEMU is gone ({how}): the guest is lost (part of its memory \
             existed only there); the source's QEMU and disk kept; give it up with \
             POST /v1/migrations/{id}/abandon (the disks are kept)"
        ),
    }
}

/// `POST /v1/migrations/{id}/abandon` (see the module doc).
///
/// # Errors
/// [`MigrateError::NotFound`]; [`MigrateError::NotAbandonable`] (409) with
/// [`abandon_refusal`]'s reason, or when a resume of it runs.
pub async fn abandon(state: &Arc<AgentState>, id: &str) -> Result<MigrationRecord, MigrateError> {
    let r = state.migrations.get(id)?;
    let refuse = |why: String| MigrateError::NotAbandonable {
        id: id.to_string(),
        why,
    };
    // Cheap checks first, without asking the destination.
    if let Some(why) = abandon_refusal(&r, &DestQemu::Gone(String::new())) {
        return Err(refuse(why));
    }
    let dest = look_at_destination(state, &r).await;
    if let Some(why) = abandon_refusal(&r, &dest) {
        return Err(refuse(why));
    }
    // Held for the rest: no resume loop may act on QEMUs being given up.
    if !state.migrations.begin_resume(id) {
        return Err(refuse("a resume of it runs on this agent".into()));
    }
    let outcome = give_up(state, &r, &dest).await;
    state.migrations.end_resume(id);
    outcome
}

async fn give_up(
    state: &AgentState,
    r: &MigrationRecord,
    dest: &DestQemu,
) -> Result<MigrationRecord, MigrateError> {
    let DestQemu::Gone(how) = dest else {
        return Err(MigrateError::NotAbandonable {
            id: r.id.clone(),
            why: "the destination's QEMU is not known to be gone".into(),
        });
    };
    state.migrations.postcopy.forget(&r.id);
    let client = AgentClient::new(r.request.to.clone(), &state.token);
    let dest_disk = match client.abort_incoming(&r.vm).await {
        Ok(d) => d
            .kept_disk
            .map(|f| format!("; the destination kept its disk file {f}")),
        Err(e) if e.status() == Some(404) => None,
        Err(e) => {
            state.migrations.note(
                &r.id,
                format!("abandon: the destination did not release its VM: {e}"),
            );
            None
        }
    };
    let reason = format!(
        "abandoned by the operator: the destination's QEMU died after the post-copy switch \
         ({how}), so the guest is lost (part of its memory existed only there)"
    );
    let source_disk = match state.vms.give_up(&r.vm, &reason).await {
        Ok(Some(p)) => format!("; the source's disk file is kept: {}", p.display()),
        Ok(None) => String::new(),
        Err(e) => format!("; the source VM: {e}"),
    };
    let reason = format!(
        "{reason}; the source's QEMU stopped{source_disk}{}",
        dest_disk.unwrap_or_default()
    );
    let record = state
        .migrations
        .apply(&r.id, RecordEvent::Abandoned { reason })?;
    super::release_vm(state, &r.id, &r.vm);
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::test_record;

    fn gone() -> DestQemu {
        DestQemu::Gone("its VM is lost there: QEMU exited".into())
    }

    #[test]
    fn only_a_split_postcopy_whose_destination_died_is_abandoned() {
        for state in [MigrationState::Paused, MigrationState::Failed] {
            assert_eq!(abandon_refusal(&test_record(state, true), &gone()), None);
        }
        let why = |state, on_dest, dest: &DestQemu| {
            abandon_refusal(&test_record(state, on_dest), dest).unwrap_or_default()
        };
        let home = why(MigrationState::Failed, false, &gone());
        assert!(
            home.starts_with("it is failed and its guest never left"),
            "{home}"
        );
        let done = why(MigrationState::Completed, true, &gone());
        assert!(
            done.starts_with("it is completed and its guest left"),
            "{done}"
        );
        let running = why(MigrationState::Running, true, &gone());
        assert!(running.starts_with("it is running"), "{running}");
        let alive = why(
            MigrationState::Paused,
            true,
            &DestQemu::Alive("its VM is Incoming there (QEMU paused)".into()),
        );
        assert!(
            alive.contains("is alive") && alive.contains("POST /v1/migrations/m1/resume"),
            "{alive}"
        );
        let unknown = why(
            MigrationState::Paused,
            true,
            &DestQemu::Unknown("connection refused".into()),
        );
        assert!(
            unknown.contains("cannot be asked (connection refused)"),
            "{unknown}"
        );
    }

    /// The reviewer's note said "both QEMUs kept" with the destination's dead.
    #[test]
    fn the_notes_say_which_qemus_are_kept() {
        assert!(kept_words_for("m1", &DestQemu::Alive("x".into())).starts_with("both QEMUs kept"));
        let dead = kept_words_for("m1", &gone());
        assert!(
            dead.starts_with("the destination's QEMU is gone (its VM is lost there")
                && dead.contains("the guest is lost")
                && dead.contains("POST /v1/migrations/m1/abandon")
                && !dead.contains("both QEMUs"),
            "{dead}"
        );
        let unknown = kept_words_for("m1", &DestQemu::Unknown("timeout".into()));
        assert!(!unknown.contains("both QEMUs"), "{unknown}");
    }
}
