//! What may be done to a VM that a migration has, decided from what its QEMU says rather than
//! from the registry alone: the registry can be behind (a post-copy starts without the agent
//! being told at once), and a wrong "yes" kills the only running copy of a guest.
//!
//! The rules are pure functions of the registry entry and one look at QEMU ([`GuestSeen`]),
//! tested without QEMU; [`look`] asks QEMU.

use super::{VmEntry, VmsError};
use crate::model::VmRole;
use drover_core::migration::MigrationStatus;
use drover_qemu::qmp::{Qmp, QmpExt};
use std::collections::HashMap;
use std::time::Duration;

/// How long a look at QEMU may take before it counts as no answer.
const LOOK_TIMEOUT: Duration = Duration::from_secs(3);

/// One look at a VM's QEMU: its run state and its migration (on a destination, the incoming
/// one: QEMU reports either side in `query-migrate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSeen {
    /// `query-status`' status (`running`, `inmigrate`, `postmigrate`, ...).
    pub run_state: String,
    pub running: bool,
    pub migration: Option<MigrationStatus>,
}

impl GuestSeen {
    /// The guest has run here: post-copy began (it runs while the rest of its memory
    /// arrives), or the migration completed. Killing this QEMU now loses the guest.
    pub fn arrived(&self) -> bool {
        self.running
            || self
                .migration
                .is_some_and(|m| m.is_postcopy() || m == MigrationStatus::Completed)
    }

    /// The guest runs here with all its memory: nothing is still arriving.
    pub fn settled(&self) -> bool {
        self.running && !self.migration.is_some_and(MigrationStatus::is_postcopy)
    }

    /// A source whose guest has left for the destination part-way (post-copy, paused or not):
    /// this QEMU holds the rest of the guest's memory and is all that can complete it.
    pub fn departed(&self) -> bool {
        self.migration.is_some_and(MigrationStatus::is_postcopy)
    }

    fn describe(&self) -> String {
        let migration = self.migration.map_or("none".to_string(), qemu_name);
        format!("QEMU status {}, migration {migration}", self.run_state)
    }
}

/// QEMU's own name of a migration status (`postcopy-active`).
pub fn qemu_name(m: MigrationStatus) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{m:?}"))
}

/// What QEMU answered: None when the VM is lost (no QEMU to ask), `Err` when it did not answer.
pub type Look = Option<Result<GuestSeen, String>>;

/// Asks QEMU (bounded: a hung QEMU is an answer too).
pub async fn look(q: &dyn Qmp) -> Result<GuestSeen, String> {
    let ask = async {
        let s = q.query_status().await.map_err(|e| e.to_string())?;
        let m = q.query_migrate(0).await.map_err(|e| e.to_string())?;
        Ok(GuestSeen {
            run_state: s.status,
            running: s.running,
            migration: m.status,
        })
    };
    tokio::time::timeout(LOOK_TIMEOUT, ask)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", LOOK_TIMEOUT.as_secs())))
}

/// Who asks for a VM to be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// `DELETE /v1/vms/{name}`: a user deleting a VM of this host.
    Delete,
    /// `DELETE /v1/incoming/{name}`: the source aborting a migration that did not switch.
    AbortIncoming,
    /// The agent itself: the source stopping its QEMU once the guest runs on the destination.
    Force,
}

/// The registry's side of a removal: the VM's role and the migration it is the source of.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    pub role: &'a VmRole,
    pub migration: Option<&'a str>,
    /// The migration's guest already runs on the destination (post-copy started).
    pub guest_away: bool,
    /// The migration that delivered this VM here, once committed (the record's `arrived_by`).
    pub arrived_by: Option<&'a str>,
}

/// Whether `kind` may remove VM `name`.
///
/// # Errors
/// [`VmsError::Busy`] or [`VmsError::GuestHere`] naming why.
pub fn may_remove(kind: Removal, name: &str, held: Held<'_>, seen: &Look) -> Result<(), VmsError> {
    let busy = |why: String| {
        Err(VmsError::Busy {
            name: name.to_string(),
            why,
        })
    };
    match kind {
        Removal::Force => Ok(()),
        Removal::Delete => {
            if let Some(m) = held.role.incoming_migration() {
                return busy(format!(
                    "it is the destination of migration {m}; only that migration's source may \
                     abort it (it does so when the migration fails)"
                ));
            }
            match (held.migration, seen) {
                // Recovered by hand since: the guest is whole on the destination, this QEMU
                // is obsolete.
                (Some(_), Some(Ok(s)))
                    if held.guest_away && s.migration == Some(MigrationStatus::Completed) =>
                {
                    Ok(())
                }
                (Some(m), _) if held.guest_away => busy(away(m)),
                (Some(m), _) => busy(format!("migration {m} is under way")),
                (None, _) => not_departed(name, seen),
            }
        }
        Removal::AbortIncoming => {
            if held.role.incoming_migration().is_none() {
                return Err(match held.arrived_by {
                    Some(m) => VmsError::Committed {
                        name: name.to_string(),
                        migration: m.to_string(),
                    },
                    None => VmsError::NotIncoming(name.to_string()),
                });
            }
            match seen {
                None => Ok(()), // its QEMU is gone: nothing runs here to lose
                Some(Ok(s)) if !s.arrived() => Ok(()),
                Some(Ok(s)) => Err(VmsError::GuestHere {
                    name: name.to_string(),
                    why: format!(
                        "{}: the migration has switched, so the guest runs only here; only a \
                         migration that has not switched may be aborted",
                        s.describe()
                    ),
                }),
                Some(Err(e)) => Err(VmsError::GuestHere {
                    name: name.to_string(),
                    why: format!(
                        "its QEMU did not say whether the guest runs here ({e}); it is kept \
                         rather than risk killing the only copy"
                    ),
                }),
            }
        }
    }
}

/// Refuses a VM whose QEMU says a post-copy took its guest away (the registry may not know:
/// the migration's record was lost, or the switch is too recent).
///
/// # Errors
/// [`VmsError::Busy`] saying what QEMU reports.
pub fn not_departed(name: &str, seen: &Look) -> Result<(), VmsError> {
    match seen {
        Some(Ok(s)) if s.departed() => Err(VmsError::Busy {
            name: name.to_string(),
            why: format!(
                "{}: its guest runs on a migration's destination and this QEMU holds the rest \
                 of its memory",
                s.describe()
            ),
        }),
        _ => Ok(()),
    }
}

/// The entry of VM `name` when no migration has it and it can take a change: known, not lost,
/// not a migration's incoming VM, not the source of a migration.
///
/// # Errors
/// [`VmsError::NotFound`], [`VmsError::Lost`], or [`VmsError::Busy`] saying which migration
/// has it (and, from the post-copy switch, that its guest runs on the destination).
pub(super) fn unclaimed<'m>(
    map: &'m mut HashMap<String, VmEntry>,
    name: &str,
) -> Result<&'m mut VmEntry, VmsError> {
    let e = map
        .get_mut(name)
        .ok_or_else(|| VmsError::NotFound(name.to_string()))?;
    if e.lost.is_some() {
        return Err(VmsError::Lost(name.to_string()));
    }
    let busy = |why: String| VmsError::Busy {
        name: name.to_string(),
        why,
    };
    if let Some(migration_id) = e.record.role.incoming_migration() {
        return Err(busy(format!(
            "it is the destination of migration {migration_id}"
        )));
    }
    if let Some(m) = &e.migration {
        return Err(busy(match e.guest_away {
            true => away(m),
            false => format!("migration {m} is under way"),
        }));
    }
    if e.profiling {
        return Err(busy("a WAN profile of it is being taken".into()));
    }
    Ok(e)
}

/// Why a source VM whose guest left part-way is held.
pub fn away(migration: &str) -> String {
    format!(
        "its guest runs on the destination of migration {migration} (post-copy) and this QEMU \
         holds the rest of its memory; it can be neither deleted nor migrated until that \
         migration ends"
    )
}

/// What a commit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Make the incoming VM a normal one.
    Now,
    /// Already committed after arriving by migration: nothing to do (the source retries).
    Again,
}

/// Whether incoming VM `name` may be committed: only once QEMU says its guest runs here with
/// all its memory.
///
/// # Errors
/// [`VmsError::NeverIncoming`] for a VM that did not arrive by migration,
/// [`VmsError::NoGuest`] while no complete guest runs here, [`VmsError::Lost`].
pub fn may_commit(
    name: &str,
    role: &VmRole,
    arrived_by: Option<&str>,
    seen: &Look,
) -> Result<Commit, VmsError> {
    let no_guest = |why: String| {
        Err(VmsError::NoGuest {
            name: name.to_string(),
            why,
        })
    };
    match (role, arrived_by, seen) {
        (VmRole::Running, Some(_), _) => Ok(Commit::Again),
        (VmRole::Running, None, _) => Err(VmsError::NeverIncoming(name.to_string())),
        (VmRole::Incoming { .. }, _, None) => Err(VmsError::Lost(name.to_string())),
        (VmRole::Incoming { .. }, _, Some(Err(e))) => {
            no_guest(format!("its QEMU did not answer: {e}"))
        }
        (VmRole::Incoming { .. }, _, Some(Ok(s))) if s.settled() => Ok(Commit::Now),
        (VmRole::Incoming { .. }, _, Some(Ok(s))) if s.arrived() => {
            no_guest(format!("{}: its memory is still arriving", s.describe()))
        }
        (VmRole::Incoming { .. }, _, Some(Ok(s))) => no_guest(format!(
            "{}: no migration has delivered its guest",
            s.describe()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_qemu::qmp::{QmpError, ScriptedQmp};
    use serde_json::json;
    use MigrationStatus as M;

    fn seen(run_state: &str, migration: Option<M>) -> Look {
        Some(Ok(GuestSeen {
            run_state: run_state.into(),
            running: run_state == "running",
            migration,
        }))
    }

    fn incoming() -> VmRole {
        VmRole::Incoming {
            migration_id: "m1".into(),
            uri: None,
            recover_uri: None,
            nbd: None,
            source_nbd: None,
        }
    }

    fn held(role: &VmRole) -> Held<'_> {
        Held {
            role,
            migration: None,
            guest_away: false,
            arrived_by: None,
        }
    }

    fn status(r: Result<(), VmsError>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(VmsError::Busy { .. }) => "busy",
            Err(VmsError::GuestHere { .. }) => "guest-here",
            Err(_) => "other",
        }
    }

    /// The reviewer's case: the incoming VM of a post-copy deleted through either route.
    #[test]
    fn an_incoming_vm_is_never_deleted_and_aborted_only_before_the_switch() {
        let role = incoming();
        let err = may_remove(Removal::Delete, "vm1", held(&role), &seen("running", None))
            .expect_err("incoming");
        assert!(err.to_string().contains("migration m1"), "{err}");
        let abort = |look: Look| {
            status(may_remove(
                Removal::AbortIncoming,
                "vm1",
                held(&role),
                &look,
            ))
        };
        assert_eq!(abort(seen("inmigrate", Some(M::Active))), "ok");
        assert_eq!(abort(seen("inmigrate", None)), "ok");
        assert_eq!(abort(None), "ok", "a lost QEMU holds nothing");
        for look in [
            seen("running", Some(M::PostcopyActive)),
            seen("paused", Some(M::PostcopyPaused)),
            seen("inmigrate", Some(M::PostcopyRecover)),
            seen("running", Some(M::Completed)),
            seen("paused", Some(M::Completed)),
            seen("running", None),
            Some(Err("timeout".into())),
        ] {
            assert_eq!(abort(look.clone()), "guest-here", "{look:?}");
        }
    }

    /// Aborting "incoming" VM that never was one says so, and one committed since says that.
    #[test]
    fn an_abort_tells_a_vm_never_incoming_from_one_committed_since() {
        let abort = |arrived_by: Option<&str>| {
            let held = Held {
                arrived_by,
                ..held(&VmRole::Running)
            };
            may_remove(Removal::AbortIncoming, "vm1", held, &seen("running", None))
                .expect_err("not incoming")
                .to_string()
        };
        assert_eq!(abort(None), "VM 'vm1' is not an incoming migration");
        let committed = abort(Some("m7"));
        assert!(
            committed.contains("not an incoming migration any more")
                && committed.contains("migration m7"),
            "{committed}"
        );
    }

    #[test]
    fn a_source_whose_guest_left_part_way_is_held() {
        let role = VmRole::Running;
        let delete = |h: Held<'_>, look: Look| status(may_remove(Removal::Delete, "vm1", h, &look));
        assert_eq!(delete(held(&role), seen("running", None)), "ok");
        assert_eq!(delete(held(&role), Some(Err("hung".into()))), "ok");
        // The registry may not know yet; QEMU does.
        assert_eq!(
            delete(held(&role), seen("postmigrate", Some(M::PostcopyPaused))),
            "busy"
        );
        let paused = Held {
            role: &role,
            migration: Some("m1"),
            guest_away: true,
            arrived_by: None,
        };
        let err = may_remove(Removal::Delete, "vm1", paused, &seen("postmigrate", None))
            .expect_err("held");
        assert!(
            err.to_string().contains("destination of migration m1"),
            "{err}"
        );
        assert_eq!(
            delete(
                Held {
                    guest_away: false,
                    ..paused
                },
                seen("running", Some(M::Active))
            ),
            "busy"
        );
        assert_eq!(
            status(may_remove(Removal::Force, "vm1", paused, &None)),
            "ok"
        );
        // A paused post-copy recovered by hand: the source is obsolete and may go.
        assert_eq!(
            delete(paused, seen("postmigrate", Some(M::Completed))),
            "ok"
        );
    }

    #[test]
    fn commit_needs_a_delivered_guest_and_repeats_only_for_a_migrated_vm() {
        let role = incoming();
        let commit = |role: &VmRole, arrived: Option<&str>, look: Look| {
            may_commit("vm1", role, arrived, &look).map_err(|e| e.to_string())
        };
        assert_eq!(
            commit(&role, None, seen("running", Some(M::Completed))),
            Ok(Commit::Now)
        );
        let never = commit(&role, None, seen("inmigrate", None)).expect_err("no guest");
        assert!(never.contains("status inmigrate"), "{never}");
        assert!(commit(&role, None, seen("running", Some(M::PostcopyActive))).is_err());
        assert!(commit(&role, None, None).is_err());
        assert_eq!(
            commit(&VmRole::Running, Some("m1"), None),
            Ok(Commit::Again)
        );
        let ordinary = commit(&VmRole::Running, None, seen("running", None)).expect_err("never");
        assert!(ordinary.contains("never was"), "{ordinary}");
    }

    #[tokio::test]
    async fn look_asks_both_status_and_migration() {
        let q = ScriptedQmp::new(|cmd, _| match cmd {
            "query-status" => Ok(json!({"running": true, "status": "running"})),
            "query-migrate" => Ok(json!({"status": "postcopy-active"})),
            other => Err(QmpError::Protocol(other.into())),
        });
        let s = look(&q).await.expect("answers");
        assert!(s.arrived() && !s.settled() && s.departed(), "{s:?}");
        let broken = ScriptedQmp::new(|_, _| Err(QmpError::Closed));
        assert!(look(&broken).await.is_err());
    }
}
