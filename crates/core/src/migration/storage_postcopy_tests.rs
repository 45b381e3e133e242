use super::*;

fn job(offset: u64, status: &str) -> MirrorJob {
    MirrorJob {
        offset,
        len: 100,
        ready: false,
        status: status.into(),
        error: None,
    }
}

fn look(now_ms: u64, job: Option<MirrorJob>) -> StreamLook {
    StreamLook { now_ms, job }
}

fn settings() -> PostcopySettings {
    PostcopySettings {
        stall_ms: 5000,
        ..PostcopySettings::default()
    }
}

/// A machine whose memory migration is under way.
fn migrating() -> PostcopyMachine {
    let mut m = PostcopyMachine::new(settings());
    for e in [
        PostcopyEvent::ServerStarted,
        PostcopyEvent::Exported,
        PostcopyEvent::MemoryStarted,
    ] {
        m.handle(e).expect("setup");
    }
    m
}

/// A machine whose stream started at 2000 ms (guest moved at 1000 ms).
fn streaming() -> PostcopyMachine {
    let mut m = migrating();
    m.handle(PostcopyEvent::MemoryMoved { now_ms: 1000 })
        .expect("moved");
    m.handle(PostcopyEvent::SourceActivated).expect("active");
    m.handle(PostcopyEvent::StreamStarted { now_ms: 2000 })
        .expect("stream");
    m
}

/// Hands a look to the machine and judges it.
fn step(m: &mut PostcopyMachine, l: StreamLook) -> StreamVerdict {
    m.handle(PostcopyEvent::StreamLooked(l.clone()))
        .expect("look");
    m.judge(&l)
}

#[test]
fn happy_path_records_the_mode_the_stream_time_and_bytes() {
    let mut m = streaming();
    assert_eq!(m.outcome(), None);
    assert_eq!(
        step(&mut m, look(2500, Some(job(40, "running")))),
        StreamVerdict::Wait
    );
    assert_eq!(
        step(&mut m, look(4000, Some(job(100, "concluded")))),
        StreamVerdict::Concluded
    );
    m.handle(PostcopyEvent::StreamConcluded { now_ms: 4000 })
        .expect("concluded");
    assert_eq!(m.outcome(), None, "the source's server still serves");
    m.handle(PostcopyEvent::ServerStopped).expect("stopped");
    assert_eq!(m.phase().name(), "done");
    assert_eq!(m.outcome(), Some(PostcopyOutcome::Completed));
    let r = m.record();
    assert_eq!(r.mode, StorageMode::Postcopy);
    assert_eq!((r.transferred_bytes, r.disk_bytes), (100, 100));
    assert_eq!(r.stream_ms, Some(2000));
    assert_eq!(r.stream_stalls, 0);
    assert_eq!(r.error, None);
    assert_eq!(r.mirror_to_ready_ms, None);
    assert!(m.cleanup().is_empty());
}

#[test]
fn events_out_of_order_are_typed_errors_and_change_nothing() {
    let mut m = PostcopyMachine::new(settings());
    let err = m
        .handle(PostcopyEvent::StreamStarted { now_ms: 1 })
        .expect_err("stream before the export");
    assert_eq!(
        err,
        PostcopyError::InvalidTransition {
            phase: "idle",
            event: "stream-started"
        }
    );
    assert_eq!(m.phase(), &PostcopyPhase::Idle);
    // The stream never starts before the guest runs on the destination.
    let mut m = migrating();
    assert!(m
        .handle(PostcopyEvent::StreamStarted { now_ms: 1 })
        .is_err());
    // Nothing follows the end.
    let mut m = streaming();
    m.handle(PostcopyEvent::StreamConcluded { now_ms: 3 })
        .expect("concluded");
    m.handle(PostcopyEvent::ServerStopped).expect("stopped");
    let failed = PostcopyEvent::Failed {
        step: PostcopyStep::ServerStop,
        message: "late".into(),
    };
    assert!(m.handle(failed).is_err());
    assert_eq!(m.outcome(), Some(PostcopyOutcome::Completed));
}

#[test]
fn a_failure_before_the_switchover_stops_the_export_and_rolls_back() {
    for (events, owed) in [
        (vec![], vec![]),
        (
            vec![PostcopyEvent::ServerStarted],
            vec![PostcopyCleanup::StopSourceServer],
        ),
        (
            vec![PostcopyEvent::ServerStarted, PostcopyEvent::Exported],
            vec![PostcopyCleanup::StopSourceServer],
        ),
        (
            vec![
                PostcopyEvent::ServerStarted,
                PostcopyEvent::Exported,
                PostcopyEvent::MemoryStarted,
            ],
            vec![PostcopyCleanup::StopSourceServer],
        ),
    ] {
        let mut m = PostcopyMachine::new(settings());
        for e in events {
            m.handle(e).expect("setup");
        }
        m.handle(PostcopyEvent::Failed {
            step: PostcopyStep::Memory,
            message: "ended cancelled".into(),
        })
        .expect("fail");
        assert_eq!(m.cleanup(), owed);
        assert_eq!(m.outcome(), Some(PostcopyOutcome::RolledBack));
        let error = m.record().error.expect("error");
        assert!(
            error.contains("memory migration") && error.contains("cancelled"),
            "{error}"
        );
    }
}

#[test]
fn a_failure_after_the_switchover_undoes_nothing_and_holds_both_sides() {
    let moved = || {
        let mut m = migrating();
        m.handle(PostcopyEvent::MemoryMoved { now_ms: 10 })
            .expect("moved");
        m
    };
    let mut paused = migrating();
    paused.handle(PostcopyEvent::MemoryPaused).expect("paused");
    let mut stalled = streaming();
    stalled
        .handle(PostcopyEvent::StreamStalled { reason: "r".into() })
        .expect("stall");
    let mut streamed = streaming();
    streamed
        .handle(PostcopyEvent::StreamConcluded { now_ms: 3 })
        .expect("concluded");
    for mut m in [moved(), streaming(), paused, stalled, streamed] {
        let from = m.phase().name();
        m.handle(PostcopyEvent::Failed {
            step: PostcopyStep::StreamStart,
            message: "refused".into(),
        })
        .expect("fail");
        assert!(m.cleanup().is_empty(), "{from}");
        assert_eq!(m.outcome(), Some(PostcopyOutcome::Held), "{from}");
        assert!(m.phase().past_switchover());
    }
}

#[test]
fn a_paused_memory_postcopy_holds_until_recovered_then_streams() {
    let mut m = migrating();
    m.handle(PostcopyEvent::MemoryPaused).expect("paused");
    assert_eq!(m.outcome(), Some(PostcopyOutcome::MemoryPaused));
    assert!(m.cleanup().is_empty());
    m.handle(PostcopyEvent::MemoryMoved { now_ms: 50 })
        .expect("recovered");
    // The stream waits for the source's disk to answer block status.
    assert!(m
        .handle(PostcopyEvent::StreamStarted { now_ms: 55 })
        .is_err());
    m.handle(PostcopyEvent::SourceActivated).expect("active");
    m.handle(PostcopyEvent::StreamStarted { now_ms: 60 })
        .expect("stream");
    assert_eq!(m.phase().name(), "streaming");
}

#[test]
fn a_job_paused_on_an_io_error_is_stalled_and_resumes() {
    let mut m = streaming();
    assert_eq!(
        step(&mut m, look(2500, Some(job(30, "running")))),
        StreamVerdict::Wait
    );
    let verdict = step(&mut m, look(3000, Some(job(30, "paused"))));
    let StreamVerdict::Stalled(reason) = verdict else {
        panic!("{verdict:?}")
    };
    assert!(
        reason.contains("I/O error") && reason.contains("30 of 100"),
        "{reason}"
    );
    m.handle(PostcopyEvent::StreamStalled { reason })
        .expect("stall");
    assert_eq!(m.outcome(), Some(PostcopyOutcome::Stalled));
    assert!(m.record().error.expect("error").contains("stalled"));
    assert!(m.cleanup().is_empty(), "a stall undoes nothing");
    // Looks go on while stalled (the figures stay fresh) but are judged only when streaming.
    m.handle(PostcopyEvent::StreamLooked(look(
        9000,
        Some(job(30, "paused")),
    )))
    .expect("look");
    m.handle(PostcopyEvent::StreamResumed { now_ms: 20_000 })
        .expect("resume");
    // The stall clock restarts at the resume.
    assert_eq!(
        step(&mut m, look(24_000, Some(job(30, "running")))),
        StreamVerdict::Wait
    );
    assert_eq!(
        step(&mut m, look(26_000, Some(job(100, "concluded")))),
        StreamVerdict::Concluded
    );
    m.handle(PostcopyEvent::StreamConcluded { now_ms: 26_000 })
        .expect("concluded");
    let r = m.record();
    assert_eq!(r.stream_stalls, 1);
    assert_eq!(
        r.stream_ms,
        Some(24_000),
        "stalls count in the stream's time"
    );
    assert_eq!(r.error, None);
}

#[test]
fn a_stream_without_progress_for_the_stall_limit_is_stalled() {
    let mut m = streaming();
    assert_eq!(
        step(&mut m, look(3000, Some(job(10, "running")))),
        StreamVerdict::Wait
    );
    // Progress at 6000 restarts the clock: 10999 is 4999 ms later.
    assert_eq!(
        step(&mut m, look(6000, Some(job(20, "running")))),
        StreamVerdict::Wait
    );
    assert_eq!(
        step(&mut m, look(10_999, Some(job(20, "running")))),
        StreamVerdict::Wait
    );
    let verdict = step(&mut m, look(11_000, Some(job(20, "running"))));
    assert!(
        matches!(&verdict, StreamVerdict::Stalled(r) if r.contains("5000 ms")),
        "{verdict:?}"
    );
}

#[test]
fn a_failed_or_vanished_stream_fails_the_wait() {
    let mut m = streaming();
    let mut failed = job(50, "concluded");
    failed.error = Some("Input/output error".into());
    let verdict = step(&mut m, look(2500, Some(failed)));
    assert!(
        matches!(&verdict, StreamVerdict::Fail(r) if r.contains("Input/output")),
        "{verdict:?}"
    );
    let mut m = streaming();
    assert_eq!(
        step(&mut m, look(2500, None)),
        StreamVerdict::Fail("the stream job is gone".into())
    );
    // A look handed over outside the stream is refused.
    let mut m = migrating();
    assert!(m
        .handle(PostcopyEvent::StreamLooked(look(1, None)))
        .is_err());
}

#[test]
fn settings_are_checked_with_the_field_named() {
    assert_eq!(PostcopySettings::default().validate(), Ok(()));
    for (s, field) in [
        (
            PostcopySettings {
                reconnect_delay_s: 0,
                ..PostcopySettings::default()
            },
            "reconnect_delay_s",
        ),
        (
            PostcopySettings {
                stream_speed_bps: Some(0),
                ..PostcopySettings::default()
            },
            "stream_speed_bps",
        ),
        (
            PostcopySettings {
                stall_ms: 10,
                ..PostcopySettings::default()
            },
            "stall_ms",
        ),
    ] {
        let err = s.validate().expect_err(field);
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn a_resumed_job_that_pauses_again_is_resumed_again_within_the_stall_limit() {
    let mut m = streaming();
    assert_eq!(
        step(&mut m, look(2500, Some(job(30, "running")))),
        StreamVerdict::Wait
    );
    let StreamVerdict::Stalled(reason) = step(&mut m, look(3000, Some(job(30, "paused")))) else {
        panic!("not stalled")
    };
    m.handle(PostcopyEvent::StreamStalled { reason })
        .expect("stall");
    m.handle(PostcopyEvent::StreamResumed { now_ms: 10_000 })
        .expect("resume");
    // Paused again at once: wait a retry interval, then resume again.
    assert_eq!(
        step(&mut m, look(10_100, Some(job(30, "paused")))),
        StreamVerdict::Wait
    );
    assert_eq!(
        step(&mut m, look(11_000, Some(job(30, "paused")))),
        StreamVerdict::ResumeAgain
    );
    m.handle(PostcopyEvent::StreamResumed { now_ms: 11_000 })
        .expect("again");
    assert_eq!(
        step(&mut m, look(11_500, Some(job(30, "paused")))),
        StreamVerdict::Wait
    );
    // Still within the stall limit after a cut (AFTER_CUT_STALL_MS since the first resume):
    // resumed again; past it, stalled again.
    assert_eq!(
        step(&mut m, look(15_000, Some(job(30, "paused")))),
        StreamVerdict::ResumeAgain
    );
    m.handle(PostcopyEvent::StreamResumed { now_ms: 15_000 })
        .expect("again");
    assert!(matches!(
        step(
            &mut m,
            look(10_000 + AFTER_CUT_STALL_MS, Some(job(30, "paused")))
        ),
        StreamVerdict::Stalled(_)
    ));
    // Progress ends the retry window: a later pause is a new stall at once.
    let mut m = streaming();
    m.handle(PostcopyEvent::StreamStalled { reason: "r".into() })
        .expect("stall");
    m.handle(PostcopyEvent::StreamResumed { now_ms: 10_000 })
        .expect("resume");
    assert_eq!(
        step(&mut m, look(10_500, Some(job(60, "running")))),
        StreamVerdict::Wait
    );
    assert!(matches!(
        step(&mut m, look(12_000, Some(job(60, "paused")))),
        StreamVerdict::Stalled(_)
    ));
    // A resume outside a stall is refused.
    assert!(m
        .handle(PostcopyEvent::StreamResumed { now_ms: 13_000 })
        .is_err());
}

/// The user's false stall: a stream resumed after a cut moved a little, then QEMU's reads
/// waited on TCP's retransmission backoff for more than `--postcopy-stall 5` while it kept
/// streaming. After a cut the stall limit is at least AFTER_CUT_STALL_MS, judged by the job's
/// offset; before any cut the request's limit holds.
#[test]
fn after_a_cut_the_stream_is_given_the_longer_stall_limit() {
    let mut m = streaming();
    assert_eq!(m.stall_limit_ms(), 5000);
    m.handle(PostcopyEvent::StreamStalled { reason: "r".into() })
        .expect("stall");
    m.handle(PostcopyEvent::StreamResumed { now_ms: 20_000 })
        .expect("resume");
    assert_eq!(m.stall_limit_ms(), AFTER_CUT_STALL_MS);
    assert_eq!(
        step(&mut m, look(21_000, Some(job(10, "running")))),
        StreamVerdict::Wait
    );
    // 5013 ms without progress: what was declared stalled before.
    assert_eq!(
        step(&mut m, look(26_013, Some(job(10, "running")))),
        StreamVerdict::Wait
    );
    assert_eq!(
        step(&mut m, look(50_999, Some(job(10, "running")))),
        StreamVerdict::Wait
    );
    let verdict = step(&mut m, look(51_000, Some(job(10, "running"))));
    assert!(
        matches!(&verdict, StreamVerdict::Stalled(r) if r.contains("30000 ms")),
        "{verdict:?}"
    );
    // A paused memory post-copy was a cut too; a larger setting of its own is kept.
    let mut m = PostcopyMachine::new(PostcopySettings {
        stall_ms: 45_000,
        ..settings()
    });
    for e in [
        PostcopyEvent::ServerStarted,
        PostcopyEvent::Exported,
        PostcopyEvent::MemoryStarted,
    ] {
        m.handle(e).expect("setup");
    }
    m.handle(PostcopyEvent::MemoryPaused).expect("paused");
    assert_eq!(m.stall_limit_ms(), 45_000);
    let mut m = migrating();
    m.handle(PostcopyEvent::MemoryPaused).expect("paused");
    assert_eq!(m.stall_limit_ms(), AFTER_CUT_STALL_MS);
}
