//! Resuming a post-copy that the run left paused (a cut link): the source agent looks at both
//! QEMUs every [`LOOK_EVERY`] for the request's `resume_window_s` and does what core's
//! [`ResumeMachine`] decides (its module doc has the diagram): pause a destination that still
//! waits on the dead connection, `migrate-recover` it and resume the source once it answers,
//! pause a resumed post-copy that stalls again, and settle (`settle.rs`) once the source
//! completes. The record stays `paused` meanwhile, with a note at each step, and becomes
//! `completed` only through the settle, which checks that the destination has the whole guest.
//! A settle refused after the memory completed (a storage post-copy whose stream has not) is
//! noted as such, never as a completed migration: the record stays `paused`, the VM held.
//! A link that never returns leaves it `paused`, both QEMUs kept: the VM is never lost.
//!
//! After an agent restart, a paused record that holds its VM is resumed again
//! ([`resume_after_restart`], from `recover_all`), its window counted afresh, with the
//! recovery URI the record kept. An operator resumes one whose window ran out (the link came
//! back later) with `POST /v1/migrations/{id}/resume` ([`resume_on_request`]), which also
//! resumes a stalled storage post-copy's stream (`storage_pc`). One loop runs per migration
//! at a time (`Migrations::begin_resume`). A storage post-copy's settle streams the disk
//! first (`storage_pc::stream_before_settle`: a destination guest a failed read stopped on
//! `io-error` is continued once the source's export answers, then the stream starts; tried
//! [`STREAM_RESUME_ATTEMPTS`] times like a stalled stream's resume). A resumed stream that stalls again (a link
//! just back often carries a little, then stalls once more) is resumed again by the agent
//! itself, [`STREAM_RESUME_ATTEMPTS`] times in all with a doubling wait
//! ([`stream_with_retries`]), each attempt a note, before the record says it stays paused. A
//! storage post-copy whose step failed after the switchover (`Held`) is refused with what the
//! operator can do (`storage_pc::resume_refusal`). The notes of one left paused say which
//! QEMUs are kept: a destination QEMU that died leaves the guest lost, to be given up with
//! `POST /v1/migrations/{id}/abandon` (`abandon.rs`).

use super::settle::settle;
use super::MigrateError;
use crate::remote::RemoteQmp;
use crate::AgentState;
use drover_api::{AgentClient, MigrationRecord, MigrationState};
use drover_core::migration::{
    DestAnswer, PlanKnobs, ResumeAction, ResumeEnd, ResumeLook, ResumeMachine, ResumeParams,
    ResumeState,
};
use drover_qemu::qmp::{Qmp, QmpExt};
use std::sync::Arc;
use std::time::Duration;

/// How many times in all a resumed storage post-copy stream that stalls again is resumed
/// before the migration is reported paused again.
pub const STREAM_RESUME_ATTEMPTS: u32 = 3;

/// The wait before the second stream resume; doubled before each later one.
pub const STREAM_RESUME_BACKOFF: Duration = Duration::from_secs(2);

/// Least time between two asks whether a silent destination's QEMU died, ms.
const GONE_CHECK_EVERY_MS: u64 = 5_000;

/// How often both sides are looked at.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Longest wait for one side's answer in a look: a cut link must not hold the loop up.
const LOOK_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a completed source waits for the destination to say so too before the settle is
/// given up (the destination loads the last pages after the source reports completion).
const SETTLE_WAIT: Duration = Duration::from_secs(30);

/// The two QEMUs of one paused migration.
pub(super) struct PausedRun<'a> {
    pub id: &'a str,
    pub vm: &'a str,
    pub source: &'a dyn Qmp,
    pub dest: &'a AgentClient,
    /// The URI the destination made for recovery (checked against it when it replied).
    pub recover_uri: &'a str,
}

/// Resumes `run` within `params`' window (see the module doc); returns when the migration
/// completed and was settled, or was left paused, with the record saying which.
pub(super) async fn resume_paused(state: &AgentState, run: &PausedRun<'_>, params: ResumeParams) {
    if !state.migrations.begin_resume(run.id) {
        return;
    }
    let _resuming = Resuming { state, id: run.id };
    let remote = RemoteQmp {
        client: run.dest.clone(),
        vm: run.vm.to_string(),
    };
    let clock = state.vms.clock();
    let started = clock.now_ms();
    state.migrations.note(
        run.id,
        format!(
            "post-copy paused: resuming it once the destination answers again (for up to {} s)",
            params.window_ms / 1000
        ),
    );
    let mut m = ResumeMachine::new(params);
    // A resumed post-copy that keeps moving is not bound by the window (its stall watch is);
    // this bounds the loop whatever else QEMU does (a recovery handshake stuck in a state
    // migrate-pause refuses flips between resumed and waiting, and is stopped when waiting).
    let hard_stop = params.window_ms.saturating_mul(2).max(60_000);
    let mut gone_checked = 0;
    // Why the settle was refused, if it was: the memory post-copy may have completed while
    // the migration did not (a storage post-copy whose stream has not), and the notes must
    // not say otherwise.
    let mut unsettled: Option<String> = None;
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let now = clock.now_ms();
        let (source, dest) = tokio::join!(
            bounded(run.source.query_migrate(now)),
            look_at_dest(run.dest, &remote, now)
        );
        if dest == DestAnswer::Silent && now.saturating_sub(gone_checked) >= GONE_CHECK_EVERY_MS {
            // Its agent answers but its QEMU does not: a dead QEMU is no pause to wait out
            // (asked now and then: a QEMU held by a missing page is silent for a while too).
            gone_checked = now;
            let r = state.migrations.get(run.id);
            if let Ok(r) = r {
                let seen = tokio::time::timeout(
                    LOOK_TIMEOUT,
                    super::abandon::look_at_destination(state, &r),
                )
                .await
                .unwrap_or_else(|_| super::abandon::DestQemu::Unknown("no answer".into()));
                if let super::abandon::DestQemu::Gone(_) = seen {
                    let kept = super::abandon::kept_words_for(run.id, &seen);
                    state
                        .migrations
                        .note(run.id, format!("not resumed: {kept}"));
                    return;
                }
            }
        }
        let look = ResumeLook {
            now_ms: now,
            source,
            dest,
        };
        let Ok(actions) = m.observe(&look) else {
            break;
        };
        for action in actions {
            if let Err(e) = act(state, run, &remote, action).await {
                if action == ResumeAction::Settle {
                    unsettled = Some(e.clone());
                }
                let go_on = m.command_failed(action);
                let then = if go_on { "; going on" } else { "" };
                state
                    .migrations
                    .note(run.id, format!("resuming: {action:?} failed: {e}{then}"));
                if !go_on {
                    break;
                }
            }
        }
        if let ResumeState::Done(end) = m.state() {
            let secs = now.saturating_sub(started) / 1000;
            let line = match (end, &unsettled) {
                (ResumeEnd::Completed, Some(why)) => {
                    let kept = super::abandon::kept_words_of(state, run.id).await;
                    unsettled_words(run.id, secs, m.attempts(), why, &kept)
                }
                (ResumeEnd::Completed, None) => format!(
                    "post-copy resumed after the pause and completed {secs} s later \
                     ({} recover attempt(s))",
                    m.attempts()
                ),
                (ResumeEnd::NotResumable(why) | ResumeEnd::LeftPaused(why), _) => {
                    let kept = super::abandon::kept_words_of(state, run.id).await;
                    format!("not resumed after {secs} s: {why}; {kept}")
                }
            };
            state.migrations.note(run.id, line);
            return;
        }
        let resumed = matches!(m.state(), ResumeState::Resumed { .. });
        if now.saturating_sub(started) > hard_stop && !resumed {
            let kept = super::abandon::kept_words_of(state, run.id).await;
            state.migrations.note(
                run.id,
                format!(
                    "resuming stopped after {} s ({:?}); left paused, {kept}",
                    hard_stop / 1000,
                    m.state()
                ),
            );
            return;
        }
    }
}

/// The note of a resume whose memory post-copy completed but whose settle was refused (pure,
/// for tests): the migration is not completed, it stays paused with `kept`, and how it goes on.
pub(super) fn unsettled_words(id: &str, secs: u64, attempts: u32, why: &str, kept: &str) -> String {
    format!(
        "the memory post-copy completed {secs} s after the pause ({attempts} recover          attempt(s)) but the migration is not completed: {why}; it stays paused, {kept};          POST /v1/migrations/{id}/resume tries again"
    )
}

/// Runs `attempt` (one resume of a stalled storage post-copy stream) until `stalled` says its
/// run did not stall again, at most [`STREAM_RESUME_ATTEMPTS`] times, waiting
/// [`STREAM_RESUME_BACKOFF`] (doubled each time) in between; `note` gets one line per attempt
/// that stalled. Returns the last run, or None when `attempt` had nothing to resume.
pub(super) async fn stream_with_retries<R, F, Fut>(
    mut attempt: F,
    stalled: impl Fn(&R) -> Option<String>,
    note: impl Fn(String),
) -> Option<R>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<R>>,
{
    let max = STREAM_RESUME_ATTEMPTS;
    let mut wait = STREAM_RESUME_BACKOFF;
    for n in 1..=max {
        let run = attempt().await?;
        let Some(why) = stalled(&run) else {
            return Some(run);
        };
        if n == max {
            note(format!(
                "storage post-copy stream resume {n} of {max} stalled again ({why}); no more \
                 attempts: left paused"
            ));
            return Some(run);
        }
        note(format!(
            "storage post-copy stream resume {n} of {max} stalled again ({why}); resuming it \
             again in {} s",
            wait.as_secs()
        ));
        tokio::time::sleep(wait).await;
        wait = wait.saturating_mul(2);
    }
    None
}

/// Ends this agent's resume of a migration when the loop returns.
struct Resuming<'a> {
    state: &'a AgentState,
    id: &'a str,
}

impl Drop for Resuming<'_> {
    fn drop(&mut self) {
        self.state.migrations.end_resume(self.id);
    }
}

/// The destination's answer: its QEMU's incoming status; if that does not come, whether its
/// agent answers at all (a QEMU whose main loop waits for a missing page answers no in-band
/// command, while its agent does).
async fn look_at_dest(dest: &AgentClient, remote: &RemoteQmp, now: u64) -> DestAnswer {
    let (qemu, agent) = tokio::join!(bounded(remote.query_migrate(now)), bounded(dest.health()));
    match (qemu, agent) {
        (Some(p), _) => DestAnswer::Migration(p.status),
        (None, Some(_)) => DestAnswer::Silent,
        (None, None) => DestAnswer::Unreachable,
    }
}

/// Resumes paused migration `r` after an agent restart, if its request allows it (its
/// window counted from now); a record without a recovery URI (written by an older agent) or
/// whose VM has no QEMU here any more is left paused, with a note saying why.
pub async fn resume_after_restart(state: Arc<AgentState>, r: MigrationRecord) {
    if r.state != MigrationState::Paused || !r.vm_on_destination {
        return;
    }
    let Some(params) = r.request.knobs.resume() else {
        return;
    };
    if let Err(why) = resume_record(&state, &r, params).await {
        state
            .migrations
            .note(&r.id, format!("after the restart, not resumed: {why}"));
    }
}

/// Why migration `r` is no post-copy left paused with its guest on the destination, in words of
/// what became of it (`it has completed`, `it failed`), or `None` when it is one.
pub(crate) fn not_resumable(r: &MigrationRecord) -> Option<String> {
    use MigrationState as S;
    let what = match r.state {
        S::Paused if r.vm_on_destination => return None,
        S::Paused => "it is paused with its guest on the source",
        S::Preparing => "it is still preparing",
        S::Running => "it is still running",
        S::Measuring => "it is being measured, its migration over",
        S::Completed => "it has completed",
        S::Failed => "it failed",
        S::Cancelled => "it was cancelled",
        S::Interrupted => "it was interrupted (the agent restarted during it)",
        S::Abandoned => "it was abandoned (its destination QEMU died)",
    };
    Some(format!(
        "{what}; only a post-copy left paused with the guest on the destination can be"
    ))
}

/// `POST /v1/migrations/{id}/resume`: starts resuming post-copy `id`, left paused with its
/// guest on the destination, in the background, for the request's resume window counted afresh
/// from now ([`PlanKnobs`]' default window when the request's is 0).
///
/// # Errors
/// [`MigrateError::NotFound`]; [`MigrateError::NotResumable`] (409) when it is not such a
/// post-copy, has no recovery URI, its source QEMU is gone, its destination's QEMU is gone
/// (the guest is lost: `abandon.rs`), or this agent resumes it already.
pub async fn resume_on_request(
    state: &Arc<AgentState>,
    id: &str,
) -> Result<MigrationRecord, MigrateError> {
    let r = state.migrations.get(id)?;
    let refuse = |why: String| MigrateError::NotResumable {
        id: id.to_string(),
        why,
    };
    if let Some(why) = not_resumable(&r) {
        return Err(refuse(why));
    }
    if let Some(why) = super::storage_pc::resume_refusal(state, id) {
        return Err(refuse(why));
    }
    let dest = super::abandon::look_at_destination(state, &r).await;
    if let super::abandon::DestQemu::Gone(_) = dest {
        return Err(refuse(super::abandon::kept_words_for(id, &dest)));
    }
    if super::storage_pc::resumable(state, id) {
        // A stalled storage post-copy: its memory is whole on the destination, its stream
        // goes on from the session this agent kept.
        state
            .migrations
            .note(id, "storage post-copy resume asked through the API".into());
        let st = Arc::clone(state);
        state.spawn(async move { super::storage_pc::resume_stream(&st, &r).await });
        return state.migrations.get(id);
    }
    if r.recover_uri.is_none() {
        return Err(refuse(
            "the record has no recovery URI (an older agent wrote it)".into(),
        ));
    }
    state
        .vms
        .qmp_of(&r.vm)
        .map_err(|e| refuse(format!("the source QEMU: {e}")))?;
    if !state.migrations.begin_resume(id) {
        return Err(refuse("this agent is resuming it already".into()));
    }
    // Released again for the loop, which takes it itself (a restart's loop may not be running).
    state.migrations.end_resume(id);
    let default = PlanKnobs::default();
    let params = r
        .request
        .knobs
        .resume()
        .or(default.resume())
        .unwrap_or_default();
    state
        .migrations
        .note(id, "resume asked through the API".into());
    let st = Arc::clone(state);
    let record = state.migrations.get(id)?;
    state.spawn(async move {
        if let Err(why) = resume_record(&st, &record, params).await {
            st.migrations
                .note(&record.id, format!("not resumed: {why}"));
        }
    });
    state.migrations.get(id)
}

/// Runs the resume loop for record `r` with `params`.
///
/// # Errors
/// Why it could not start: no recovery URI, the source QEMU unreachable.
async fn resume_record(
    state: &AgentState,
    r: &MigrationRecord,
    params: ResumeParams,
) -> Result<(), String> {
    let Some(recover_uri) = &r.recover_uri else {
        return Err("the record has no recovery URI (an older agent wrote it)".into());
    };
    let source = state
        .vms
        .qmp_of(&r.vm)
        .map_err(|e| format!("the source QEMU cannot be reached: {e}"))?;
    let dest = AgentClient::new(r.request.to.clone(), &state.token);
    let recover_uri = recover_uri.to_string();
    let run = PausedRun {
        id: &r.id,
        vm: &r.vm,
        source: source.as_ref(),
        dest: &dest,
        recover_uri: &recover_uri,
    };
    resume_paused(state, &run, params).await;
    Ok(())
}

/// `f`'s answer, or None when it fails or takes longer than [`LOOK_TIMEOUT`].
async fn bounded<T, E>(f: impl std::future::Future<Output = Result<T, E>>) -> Option<T> {
    tokio::time::timeout(LOOK_TIMEOUT, f).await.ok()?.ok()
}

async fn act(
    state: &AgentState,
    run: &PausedRun<'_>,
    remote: &RemoteQmp,
    action: ResumeAction,
) -> Result<(), String> {
    let step = match action {
        ResumeAction::PauseDest => remote.migrate_pause().await,
        ResumeAction::RecoverDest => remote.migrate_recover(run.recover_uri).await,
        ResumeAction::ResumeSource => run.source.migrate_resume(run.recover_uri).await,
        ResumeAction::PauseSource => run.source.migrate_pause().await,
        ResumeAction::Settle => {
            // A storage post-copy streams its disk once the memory is whole, before the settle.
            let record = state.migrations.get(run.id).map_err(|e| e.to_string())?;
            super::storage_pc::stream_before_settle(state, &record, run.source).await?;
            return settle_when_whole(state, run.id).await;
        }
    };
    if step.is_ok() && action == ResumeAction::ResumeSource {
        state.migrations.note(
            run.id,
            "the destination answers again: post-copy resumed".into(),
        );
    }
    step.map_err(|e| e.to_string())
}

/// Settles the migration once the destination says it has the whole guest, asking for up to
/// [`SETTLE_WAIT`].
async fn settle_when_whole(state: &AgentState, id: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    loop {
        let record = state.migrations.get(id).map_err(|e| e.to_string())?;
        match settle(state, &record, true).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(LOOK_EVERY).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        not_resumable, stream_with_retries, STREAM_RESUME_ATTEMPTS, STREAM_RESUME_BACKOFF,
    };
    use drover_api::MigrationState as S;

    /// A resume refused says what became of the migration, in plain words.
    #[test]
    fn a_migration_not_resumable_says_what_became_of_it() {
        let why = |state, on_destination| {
            not_resumable(&crate::migrate::test_record(state, on_destination)).unwrap_or_default()
        };
        assert_eq!(
            why(S::Completed, true),
            "it has completed; only a post-copy left paused with the guest on the destination \
             can be"
        );
        assert!(why(S::Failed, true).starts_with("it failed; "));
        assert!(why(S::Cancelled, false).starts_with("it was cancelled; "));
        assert!(why(S::Paused, false).starts_with("it is paused with its guest on the source"));
        assert_eq!(why(S::Paused, true), "");
        assert!(why(S::Abandoned, true).starts_with("it was abandoned"));
    }

    type Notes = std::sync::Arc<std::sync::Mutex<Vec<String>>>;
    type Calls = std::sync::Arc<std::sync::atomic::AtomicUsize>;

    /// A script of runs: `Some(true)` stalled again, `Some(false)` went on, None nothing kept.
    fn scripted(
        runs: Vec<Option<bool>>,
    ) -> (
        Notes,
        Calls,
        impl FnMut() -> std::future::Ready<Option<bool>>,
    ) {
        let notes = Notes::default();
        let calls = Calls::default();
        let counted = calls.clone();
        let attempt = move || {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(runs.get(n).copied().flatten())
        };
        (notes, calls, attempt)
    }

    fn stalled(run: &bool) -> Option<String> {
        run.then(|| "no progress for 12 s".to_string())
    }

    /// The user's contradictory notes: the memory completed, the settle was refused. The note
    /// says the migration is not completed, what keeps it, and how it goes on.
    #[test]
    fn a_refused_settle_is_never_noted_as_completed() {
        let line = super::unsettled_words(
            "m1",
            17,
            1,
            "storage post-copy MemoryPaused: the stream has not completed",
            "both QEMUs are kept",
        );
        assert!(
            line.starts_with("the memory post-copy completed 17 s after the pause")
                && line.contains("but the migration is not completed: storage post-copy")
                && line.contains("it stays paused, both QEMUs are kept")
                && line.ends_with("POST /v1/migrations/m1/resume tries again")
                && !line.contains("and completed"),
            "{line}"
        );
    }

    /// The reviewer's WAN cut: the first resume moves a little and stalls, the second
    /// completes. The agent does the second itself, after the backoff, noting the first.
    #[tokio::test(start_paused = true)]
    async fn a_stream_that_stalls_again_after_a_resume_is_resumed_again() {
        let (notes, calls, attempt) = scripted(vec![Some(true), Some(false)]);
        let t0 = tokio::time::Instant::now();
        let n = notes.clone();
        let note = move |l: String| crate::lock(&n).push(l);
        let run = stream_with_retries(attempt, stalled, note).await;
        assert_eq!(run, Some(false));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(t0.elapsed(), STREAM_RESUME_BACKOFF);
        assert_eq!(
            *crate::lock(&notes),
            vec![
                "storage post-copy stream resume 1 of 3 stalled again (no progress for 12 s); \
                 resuming it again in 2 s"
                    .to_string()
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stream_resumes_are_bounded_and_back_off() {
        let (notes, calls, attempt) = scripted(vec![Some(true); 10]);
        let t0 = tokio::time::Instant::now();
        let n = notes.clone();
        let note = move |l: String| crate::lock(&n).push(l);
        assert_eq!(
            stream_with_retries(attempt, stalled, note).await,
            Some(true)
        );
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst) as u32,
            STREAM_RESUME_ATTEMPTS
        );
        // 2 s, then 4 s.
        assert_eq!(t0.elapsed(), STREAM_RESUME_BACKOFF * 3);
        let lines = crate::lock(&notes).clone();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[1].ends_with("again in 4 s"), "{lines:?}");
        assert!(
            lines[2].ends_with("no more attempts: left paused"),
            "{lines:?}"
        );
        // Nothing kept to resume: nothing done, no note.
        let (notes, calls, attempt) = scripted(vec![None]);
        let n = notes.clone();
        let note = move |l: String| crate::lock(&n).push(l);
        assert_eq!(stream_with_retries(attempt, stalled, note).await, None);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(crate::lock(&notes).is_empty());
    }
}
