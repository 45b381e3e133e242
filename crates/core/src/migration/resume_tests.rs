use super::*;
use crate::migration::progress::RamProgress;
use MigrationStatus as S;
use ResumeAction as A;

fn params() -> ResumeParams {
    ResumeParams {
        window_ms: 60_000,
        max_attempts: 3,
        stall_ms: 10_000,
        grace_ms: 5_000,
    }
}

fn source(status: S, transferred: u64) -> Option<Progress> {
    Some(Progress {
        now_ms: 0,
        status: Some(status),
        ram: Some(RamProgress {
            transferred,
            remaining: 1 << 20,
            ..RamProgress::default()
        }),
        ..Progress::default()
    })
}

fn look(now_ms: u64, src: Option<Progress>, dest: Option<S>) -> ResumeLook {
    ResumeLook {
        now_ms,
        source: src,
        dest: dest.map_or(DestAnswer::Unreachable, |s| DestAnswer::Migration(Some(s))),
    }
}

fn paused(now_ms: u64, dest: Option<S>) -> ResumeLook {
    look(now_ms, source(S::PostcopyPaused, 100), dest)
}

#[test]
fn a_cut_link_that_returns_is_paused_on_both_sides_recovered_and_completed() {
    let mut m = ResumeMachine::new(params());
    // The link is down: nothing to do but wait.
    for t in [0, 1_000, 30_000] {
        assert_eq!(m.observe(&paused(t, None)), Ok(vec![]));
        assert_eq!(m.state(), &ResumeState::Waiting);
    }
    // Back, but the destination still waits on the dead connection: pause it first.
    assert_eq!(
        m.observe(&paused(31_000, Some(S::PostcopyActive))),
        Ok(vec![A::PauseDest])
    );
    assert_eq!(
        m.observe(&paused(32_000, Some(S::PostcopyPaused))),
        Ok(vec![A::RecoverDest, A::ResumeSource])
    );
    assert_eq!(m.attempts(), 1);
    assert_eq!(
        m.state(),
        &ResumeState::Recovering {
            asked_ms: 32_000,
            blind: false
        }
    );
    let running = look(33_000, source(S::PostcopyActive, 200), None);
    assert_eq!(m.observe(&running), Ok(vec![]));
    assert!(matches!(m.state(), ResumeState::Resumed { .. }));
    let done = look(40_000, source(S::Completed, 900), Some(S::Completed));
    assert_eq!(m.observe(&done), Ok(vec![A::Settle]));
    assert_eq!(m.state(), &ResumeState::Done(ResumeEnd::Completed));
    assert!(matches!(
        m.observe(&done),
        Err(ResumeError::Finished(ResumeEnd::Completed))
    ));
}

#[test]
fn a_link_that_never_returns_leaves_it_paused_after_the_window() {
    let mut m = ResumeMachine::new(params());
    assert_eq!(m.observe(&paused(5_000, None)), Ok(vec![]));
    assert_eq!(m.observe(&paused(64_999, None)), Ok(vec![]));
    assert_eq!(m.observe(&paused(65_000, None)), Ok(vec![]));
    let ResumeState::Done(ResumeEnd::LeftPaused(why)) = m.state() else {
        panic!("{:?}", m.state())
    };
    assert!(why.contains("did not return within 60 s"), "{why}");
    assert!(why.contains("both QEMUs kept"), "{why}");
    // A silent source does not end it early either, only the window does.
    let mut m = ResumeMachine::new(params());
    assert_eq!(m.observe(&look(0, None, None)), Ok(vec![]));
    assert_eq!(m.state(), &ResumeState::Waiting);
}

#[test]
fn a_failed_attempt_is_retried_after_the_grace_and_attempts_are_bounded() {
    let mut m = ResumeMachine::new(params());
    let dest = Some(S::PostcopyPaused);
    assert_eq!(
        m.observe(&paused(0, dest)),
        Ok(vec![A::RecoverDest, A::ResumeSource])
    );
    // Still paused within the grace: the handshake is given its time.
    assert_eq!(m.observe(&paused(4_999, dest)), Ok(vec![]));
    assert_eq!(
        m.observe(&paused(5_000, dest)),
        Ok(vec![A::RecoverDest, A::ResumeSource])
    );
    // A command that failed sends it back to waiting: the next look tries again at once.
    assert!(!m.command_failed(A::RecoverDest));
    assert_eq!(m.state(), &ResumeState::Waiting);
    assert_eq!(
        m.observe(&paused(6_000, dest)),
        Ok(vec![A::RecoverDest, A::ResumeSource])
    );
    assert_eq!(m.attempts(), 3);
    assert_eq!(m.observe(&paused(11_000, dest)), Ok(vec![]));
    let ResumeState::Done(ResumeEnd::LeftPaused(why)) = m.state() else {
        panic!("{:?}", m.state())
    };
    assert!(why.contains("3 recover attempts failed"), "{why}");
}

#[test]
fn a_destination_already_listening_only_needs_the_source_resumed() {
    let mut m = ResumeMachine::new(params());
    for listening in [S::PostcopyRecover, S::PostcopyRecoverSetup] {
        let mut m2 = m.clone();
        assert_eq!(
            m2.observe(&paused(0, Some(listening))),
            Ok(vec![A::ResumeSource])
        );
    }
    assert_eq!(
        m.observe(&paused(0, Some(S::Failed))),
        Ok(vec![]),
        "a failed destination is not touched"
    );
    let ResumeState::Done(ResumeEnd::LeftPaused(why)) = m.state() else {
        panic!("{:?}", m.state())
    };
    assert!(why.contains("incoming migration is failed"), "{why}");
}

#[test]
fn a_resumed_post_copy_that_stalls_again_is_paused_and_retried() {
    let mut m = ResumeMachine::new(params());
    m.observe(&paused(0, Some(S::PostcopyPaused)))
        .expect("attempt");
    // Progress keeps it resumed, even past the window.
    for (t, bytes) in [(1_000, 200), (30_000, 300), (70_000, 400)] {
        assert_eq!(
            m.observe(&look(t, source(S::PostcopyActive, bytes), None)),
            Ok(vec![])
        );
    }
    assert!(matches!(m.state(), ResumeState::Resumed { .. }));
    // Then nothing moves for the stall limit: pause it.
    assert_eq!(
        m.observe(&look(79_999, source(S::PostcopyActive, 400), None)),
        Ok(vec![])
    );
    assert_eq!(
        m.observe(&look(80_000, source(S::PostcopyActive, 400), None)),
        Ok(vec![A::PauseSource])
    );
    assert_eq!(m.state(), &ResumeState::Waiting);
    // Past the window now, with the link down again: left paused.
    assert_eq!(m.observe(&paused(81_000, None)), Ok(vec![]));
    assert!(matches!(
        m.state(),
        ResumeState::Done(ResumeEnd::LeftPaused(_))
    ));
}

#[test]
fn a_source_that_ended_otherwise_is_not_resumed_but_settle_is_tried() {
    for (status, word) in [(S::Failed, "failed"), (S::Cancelled, "cancelled")] {
        let mut m = ResumeMachine::new(params());
        assert_eq!(
            m.observe(&look(0, source(status, 0), None)),
            Ok(vec![A::Settle])
        );
        let ResumeState::Done(ResumeEnd::NotResumable(why)) = m.state() else {
            panic!("{:?}", m.state())
        };
        assert!(why.contains(word), "{why}");
    }
    // The source paused past its last page while the destination completed: settle.
    let mut m = ResumeMachine::new(params());
    assert_eq!(
        m.observe(&paused(0, Some(S::Completed))),
        Ok(vec![A::Settle])
    );
    assert_eq!(m.state(), &ResumeState::Done(ResumeEnd::Completed));
}

#[test]
fn a_destination_whose_qemu_is_silent_is_paused_and_recovered_blind() {
    let mut m = ResumeMachine::new(params());
    let silent = ResumeLook {
        now_ms: 0,
        source: source(S::PostcopyPaused, 100),
        dest: DestAnswer::Silent,
    };
    assert_eq!(
        m.observe(&silent),
        Ok(vec![A::PauseDest, A::RecoverDest, A::ResumeSource])
    );
    // Its pause refused (it was paused already): go on with the recovery.
    assert!(m.command_failed(A::PauseDest));
    assert!(matches!(
        m.state(),
        ResumeState::Recovering { blind: true, .. }
    ));
    // The recovery refused: back to waiting, the next look tries again.
    assert!(!m.command_failed(A::RecoverDest));
    assert_eq!(m.state(), &ResumeState::Waiting);
    // A pause refused when it was the only step (a destination seen active) stops there.
    let mut m = ResumeMachine::new(params());
    assert_eq!(
        m.observe(&paused(0, Some(S::PostcopyActive))),
        Ok(vec![A::PauseDest])
    );
    assert!(!m.command_failed(A::PauseDest));
    // A destination that reports no migration at all is waited for.
    let none = ResumeLook {
        now_ms: 1_000,
        source: source(S::PostcopyPaused, 100),
        dest: DestAnswer::Migration(None),
    };
    assert_eq!(m.observe(&none), Ok(vec![]));
    assert_eq!(m.state(), &ResumeState::Waiting);
}
