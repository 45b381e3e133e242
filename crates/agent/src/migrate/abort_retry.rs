//! A failed migration whose destination could not be reached to drop its incoming VM (a cut
//! link, a destination agent restarting) would leave that VM there for good: its QEMU waits
//! for a migration that will never come, holds the VM's name (every later migration there is
//! refused as "already exists") and, for a VM with a disk, the empty target image. So the
//! source keeps asking, every [`RETRY_EVERY`] for at most [`RETRY_FOR`], until another
//! migration of the VM toward the same destination starts (a migration elsewhere leaves the
//! orphan on the old destination as it was, so the asking goes on); each outcome is a note on
//! the migration's record.
//!
//! Only an incoming VM the destination may still abort is removed: the destination refuses
//! (409) once its guest runs there, and that refusal ends the retries.

use drover_api::client::AgentClient;
use drover_api::migration::MigrationRecord;
use std::time::Duration;

/// Time between two requests to an unreachable destination.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

/// How long the source keeps asking before it leaves the incoming VM to the operator.
pub const RETRY_FOR: Duration = Duration::from_secs(600);

/// What one request to drop the incoming VM came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// Removed, or already gone (404).
    Gone,
    /// The destination refused with this status: it will not change by asking again.
    Refused(u16, String),
    /// Unreachable, or an error that may pass: ask again.
    Failed(String),
}

/// Whether the retries must stop because another migration of `vm` toward the destination
/// of migration `id` started on this agent since `id` failed (pure, for tests): asking that
/// destination to drop "its incoming `vm`" could then hit the new migration's incoming VM.
/// A migration toward another destination does not stop them: the orphan on `id`'s
/// destination is still there. When `id` is not among `records` its destination is unknown,
/// so any other migration of `vm` stops them (the cautious side: no request that could hit
/// a live incoming VM).
pub fn superseded(records: &[MigrationRecord], id: &str, vm: &str) -> bool {
    let to = records.iter().find(|r| r.id == id).map(|r| &r.request.to);
    records.iter().any(|r| {
        r.vm == vm && r.id != id && !r.state.is_final() && to.is_none_or(|to| *to == r.request.to)
    })
}

/// Keeps asking the destination to drop its incoming `vm` after migration `id` failed, as the
/// module doc says: `ask` is one request (the client in the agent, a script in tests),
/// `records` this agent's migrations as they are now. Returns the note for the record.
pub async fn retry<F, Fut>(
    id: &str,
    vm: &str,
    records: impl Fn() -> Vec<MigrationRecord>,
    mut ask: F,
) -> String
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Attempt>,
{
    let start = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(RETRY_EVERY).await;
        if superseded(&records(), id, vm) {
            return format!(
                "stopped asking the destination to remove its incoming VM '{vm}': another \
                 migration of it toward the same destination started"
            );
        }
        let waited = start.elapsed().as_secs();
        let last = match ask().await {
            Attempt::Gone => {
                return format!("removed the destination's incoming VM '{vm}' after {waited} s")
            }
            Attempt::Refused(status, e) => {
                return format!(
                    "the destination refused to remove its incoming VM '{vm}' ({status}: {e})"
                )
            }
            Attempt::Failed(e) => e,
        };
        if start.elapsed() >= RETRY_FOR {
            return format!(
                "gave up asking the destination to remove its incoming VM '{vm}' after {} s \
                 ({last}); remove it there with DELETE /v1/incoming/{vm}",
                RETRY_FOR.as_secs()
            );
        }
    }
}

/// One request through the agent client.
pub async fn ask_client(dest: &AgentClient, vm: &str) -> Attempt {
    match dest.abort_incoming(vm).await {
        Ok(_) => Attempt::Gone,
        Err(e) if e.status() == Some(404) => Attempt::Gone,
        Err(e) => match e.status() {
            Some(s) if (400..500).contains(&s) => Attempt::Refused(s, e.to_string()),
            _ => Attempt::Failed(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::test_record;
    use drover_api::migration::MigrationState;

    fn record(id: &str, vm: &str, state: MigrationState) -> MigrationRecord {
        let mut r = test_record(state, false);
        r.id = id.into();
        r.vm = vm.into();
        r
    }

    fn toward(mut r: MigrationRecord, to: &str) -> MigrationRecord {
        r.request.to = drover_api::AgentUrl::parse(to).expect("url");
        r
    }

    #[test]
    fn only_another_running_migration_of_the_same_vm_to_the_same_destination_supersedes() {
        let failed = record("m-1", "d1", MigrationState::Failed);
        assert!(!superseded(std::slice::from_ref(&failed), "m-1", "d1"));
        let other_vm = record("m-2", "d2", MigrationState::Running);
        assert!(!superseded(&[failed.clone(), other_vm], "m-1", "d1"));
        let ended = record("m-3", "d1", MigrationState::Cancelled);
        assert!(!superseded(&[failed.clone(), ended], "m-1", "d1"));
        let again = record("m-4", "d1", MigrationState::Preparing);
        assert!(superseded(&[failed.clone(), again.clone()], "m-1", "d1"));
        // Elsewhere: the orphan on the old destination is still there.
        let elsewhere = toward(again.clone(), "http://198.18.0.9:7700");
        assert!(!superseded(&[failed.clone(), elsewhere], "m-1", "d1"));
        // The failed record unknown: its destination is too, so any migration of the VM stops.
        let elsewhere = toward(again, "http://198.18.0.9:7700");
        assert!(superseded(&[elsewhere], "m-1", "d1"));
    }

    /// `ask` answering from a script, counting its calls.
    fn script(
        answers: Vec<Attempt>,
    ) -> (
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        impl FnMut() -> std::future::Ready<Attempt>,
    ) {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let ask = move || {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let a = answers
                .get(n)
                .or(answers.last())
                .cloned()
                .unwrap_or(Attempt::Gone);
            std::future::ready(a)
        };
        (calls, ask)
    }

    fn failed() -> Attempt {
        Attempt::Failed("cannot reach agent".into())
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_destination_is_asked_again_until_it_answers() {
        let (calls, ask) = script(vec![failed(), failed(), Attempt::Gone]);
        let note = retry("m-1", "d1", Vec::new, ask).await;
        assert_eq!(
            note,
            "removed the destination's incoming VM 'd1' after 15 s"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_ends_the_retries_and_a_silent_destination_is_left_after_the_limit() {
        let refused = Attempt::Refused(409, "its guest runs here".into());
        let (calls, ask) = script(vec![failed(), refused]);
        let note = retry("m-1", "d1", Vec::new, ask).await;
        assert!(note.contains("refused") && note.contains("409"), "{note}");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);

        let (calls, ask) = script(vec![failed()]);
        let note = retry("m-1", "d1", Vec::new, ask).await;
        assert!(
            note.contains("gave up") && note.contains("DELETE /v1/incoming/d1"),
            "{note}"
        );
        let asked = calls.load(std::sync::atomic::Ordering::SeqCst) as u64;
        assert_eq!(asked, RETRY_FOR.as_secs() / RETRY_EVERY.as_secs());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_migration_of_the_vm_stops_the_retries_before_a_request() {
        let (calls, ask) = script(vec![failed()]);
        let failed_one = record("m-1", "d1", MigrationState::Failed);
        let f = failed_one.clone();
        let again = move || vec![f.clone(), record("m-2", "d1", MigrationState::Running)];
        let note = retry("m-1", "d1", again, ask).await;
        assert!(note.contains("toward the same destination"), "{note}");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    /// The VM migrated elsewhere meanwhile: the old destination is still asked until it
    /// answers.
    #[tokio::test(start_paused = true)]
    async fn a_migration_elsewhere_does_not_stop_the_retries() {
        let (calls, ask) = script(vec![failed(), Attempt::Gone]);
        let f = record("m-1", "d1", MigrationState::Failed);
        let elsewhere = toward(
            record("m-2", "d1", MigrationState::Running),
            "http://198.18.0.9:7700",
        );
        let records = move || vec![f.clone(), elsewhere.clone()];
        let note = retry("m-1", "d1", records, ask).await;
        assert_eq!(
            note,
            "removed the destination's incoming VM 'd1' after 10 s"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
