//! Resuming a post-copy that the run left paused (a cut link): the source agent looks at both
//! QEMUs every [`LOOK_EVERY`] for the request's `resume_window_s` and does what core's
//! [`ResumeMachine`] decides (its module doc has the diagram): pause a destination that still
//! waits on the dead connection, `migrate-recover` it and resume the source once it answers,
//! pause a resumed post-copy that stalls again, and settle (`settle.rs`) once the source
//! completes. The record stays `paused` meanwhile, with a note at each step, and becomes
//! `completed` only through the settle, which checks that the destination has the whole guest.
//! A link that never returns leaves it `paused`, both QEMUs kept: the VM is never lost.
//!
//! After an agent restart, a paused record that holds its VM is resumed again
//! ([`resume_after_restart`], from `recover_all`), its window counted afresh, with the
//! recovery URI the record kept.

use super::settle::settle;
use crate::remote::RemoteQmp;
use crate::AgentState;
use drover_api::{AgentClient, MigrationRecord, MigrationState};
use drover_core::migration::{
    DestAnswer, ResumeAction, ResumeEnd, ResumeLook, ResumeMachine, ResumeParams, ResumeState,
};
use drover_qemu::qmp::{Qmp, QmpExt};
use std::sync::Arc;
use std::time::Duration;

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
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let now = clock.now_ms();
        let (source, dest) = tokio::join!(
            bounded(run.source.query_migrate(now)),
            look_at_dest(run.dest, &remote, now)
        );
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
            let line = match end {
                ResumeEnd::Completed => format!(
                    "post-copy resumed after the pause and completed {secs} s later \
                     ({} recover attempt(s))",
                    m.attempts()
                ),
                ResumeEnd::NotResumable(why) | ResumeEnd::LeftPaused(why) => {
                    format!("not resumed after {secs} s: {why}")
                }
            };
            state.migrations.note(run.id, line);
            return;
        }
        let resumed = matches!(m.state(), ResumeState::Resumed { .. });
        if now.saturating_sub(started) > hard_stop && !resumed {
            state.migrations.note(
                run.id,
                format!(
                    "resuming stopped after {} s ({:?}); left paused, both QEMUs kept",
                    hard_stop / 1000,
                    m.state()
                ),
            );
            return;
        }
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
    let left = |why: String| {
        state
            .migrations
            .note(&r.id, format!("after the restart, not resumed: {why}"));
    };
    let Some(recover_uri) = r.recover_uri else {
        return left("the record has no recovery URI (an older agent wrote it)".into());
    };
    let source = match state.vms.qmp_of(&r.vm) {
        Ok(q) => q,
        Err(e) => return left(format!("the source QEMU cannot be reached: {e}")),
    };
    let dest = AgentClient::new(r.request.to.clone(), &state.token);
    let recover_uri = recover_uri.to_string();
    let run = PausedRun {
        id: &r.id,
        vm: &r.vm,
        source: source.as_ref(),
        dest: &dest,
        recover_uri: &recover_uri,
    };
    resume_paused(&state, &run, params).await;
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
        ResumeAction::Settle => return settle_when_whole(state, run.id).await,
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
        match settle(state, &record).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(LOOK_EVERY).await,
        }
    }
}
