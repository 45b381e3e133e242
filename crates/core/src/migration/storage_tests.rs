use super::*;

fn job(offset: u64, ready: bool, status: &str) -> MirrorJob {
    MirrorJob {
        offset,
        len: 100,
        ready,
        status: status.into(),
        error: None,
    }
}

fn look(now_ms: u64, job: Option<MirrorJob>) -> MirrorLook {
    MirrorLook { now_ms, job }
}

/// A machine with its mirror started at 1000 ms.
fn mirroring(settings: StorageSettings) -> StorageMachine {
    let mut m = StorageMachine::new(settings);
    for e in [
        StorageEvent::ServerStarted,
        StorageEvent::Exported,
        StorageEvent::TargetAttached,
        StorageEvent::MirrorStarted {
            now_ms: 1000,
            write_blocking: false,
        },
    ] {
        m.handle(e).expect("setup");
    }
    m
}

#[test]
fn happy_path_records_the_phase_times_and_bytes() {
    let mut m = mirroring(StorageSettings::default());
    let l = look(1500, Some(job(40, false, "running")));
    m.handle(StorageEvent::MirrorLooked(l.clone()))
        .expect("look");
    assert_eq!(m.judge(&l), MirrorVerdict::Wait);
    let l = look(3000, Some(job(100, true, "ready")));
    m.handle(StorageEvent::MirrorLooked(l.clone()))
        .expect("look");
    assert_eq!(m.judge(&l), MirrorVerdict::Ready);
    for e in [
        StorageEvent::SwitchoverReached { now_ms: 9000 },
        StorageEvent::MirrorConcluded { now_ms: 9040 },
        StorageEvent::TargetDetached,
        StorageEvent::Continued,
        StorageEvent::MemoryMoved,
        StorageEvent::ServerStopped,
    ] {
        m.handle(e).expect("step");
    }
    assert_eq!(m.phase().name(), "done");
    let r = m.record();
    assert_eq!(r.transferred_bytes, 100);
    assert_eq!(r.mirror_to_ready_ms, Some(2000));
    assert_eq!(r.ready_to_cancel_ms, Some(6000));
    assert_eq!(r.cancel_to_concluded_ms, Some(40));
    assert_eq!(r.error, None);
    assert!(m.cleanup().is_empty());
}

#[test]
fn out_of_order_events_are_typed_errors_and_change_nothing() {
    let mut m = StorageMachine::new(StorageSettings::default());
    assert_eq!(
        m.handle(StorageEvent::TargetAttached),
        Err(StorageError::InvalidTransition {
            phase: "idle",
            event: "target-attached"
        })
    );
    assert_eq!(m.phase(), &StoragePhase::Idle);
    let mut m = mirroring(StorageSettings::default());
    // Not READY yet: no switchover.
    assert!(m
        .handle(StorageEvent::SwitchoverReached { now_ms: 5 })
        .is_err());
    assert_eq!(m.phase().name(), "mirroring");
}

#[test]
fn a_failed_or_vanished_job_fails_the_wait() {
    let m = mirroring(StorageSettings::default());
    let mut failed = job(10, false, "concluded");
    failed.error = Some("Connection reset".into());
    match m.judge(&look(1200, Some(failed))) {
        MirrorVerdict::Fail(msg) => assert!(msg.contains("Connection reset"), "{msg}"),
        v => panic!("{v:?}"),
    }
    assert!(matches!(m.judge(&look(1200, None)), MirrorVerdict::Fail(_)));
}

#[test]
fn a_lagging_background_mirror_switches_once_then_times_out() {
    let settings = StorageSettings {
        write_blocking_after_ms: Some(500),
        ready_timeout_ms: 2000,
        ..StorageSettings::default()
    };
    let mut m = mirroring(settings);
    assert_eq!(
        m.judge(&look(1400, Some(job(1, false, "running")))),
        MirrorVerdict::Wait
    );
    assert_eq!(
        m.judge(&look(1600, Some(job(1, false, "running")))),
        MirrorVerdict::SwitchToWriteBlocking
    );
    m.handle(StorageEvent::SwitchedToWriteBlocking)
        .expect("switch");
    assert_eq!(
        m.judge(&look(1700, Some(job(1, false, "running")))),
        MirrorVerdict::Wait
    );
    assert!(matches!(
        m.judge(&look(3100, Some(job(1, false, "running")))),
        MirrorVerdict::Fail(_)
    ));
    assert!(m.record().write_blocking);
}

#[test]
fn cleanup_undoes_exactly_what_was_set_up() {
    let fail = |m: &mut StorageMachine, step| {
        m.handle(StorageEvent::Failed {
            step,
            message: "boom".into(),
        })
        .expect("fail");
        m.cleanup()
    };
    let mut m = StorageMachine::new(StorageSettings::default());
    assert!(fail(&mut m, StorageStep::ServerStart).is_empty());

    let mut m = StorageMachine::new(StorageSettings::default());
    m.handle(StorageEvent::ServerStarted).expect("up");
    assert_eq!(
        fail(&mut m, StorageStep::ExportAdd),
        [CleanupStep::StopServer]
    );

    let mut m = mirroring(StorageSettings::default());
    assert_eq!(
        fail(&mut m, StorageStep::MirrorReady),
        [
            CleanupStep::CancelMirror,
            CleanupStep::DeleteTarget,
            CleanupStep::StopServer
        ]
    );
    let r = m.record();
    let err = r.error.expect("error");
    assert!(
        err.contains("mirror READY wait") && err.contains("boom"),
        "{err}"
    );
    // Failed is terminal.
    assert!(m.handle(StorageEvent::ServerStopped).is_err());
}

#[test]
fn a_failure_after_the_mirror_concluded_leaves_node_and_server() {
    let mut m = mirroring(StorageSettings::default());
    m.handle(StorageEvent::MirrorLooked(look(
        2000,
        Some(job(100, true, "ready")),
    )))
    .expect("ready");
    m.handle(StorageEvent::SwitchoverReached { now_ms: 3000 })
        .expect("cancel");
    m.handle(StorageEvent::MirrorConcluded { now_ms: 3010 })
        .expect("concluded");
    m.handle(StorageEvent::Failed {
        step: StorageStep::TargetDelete,
        message: "in use".into(),
    })
    .expect("fail");
    assert_eq!(
        m.cleanup(),
        [CleanupStep::DeleteTarget, CleanupStep::StopServer]
    );
    assert_eq!(m.record().cancel_to_concluded_ms, Some(10));
}

/// A cut link: the mirror's byte count stops growing; past the stall timeout it fails, long
/// before the READY deadline. Progress, however slow, keeps it going.
#[test]
fn a_mirror_that_stops_progressing_fails_after_the_stall_timeout() {
    let settings = StorageSettings {
        stall_timeout_ms: 1_000,
        ready_timeout_ms: 60_000,
        write_blocking_after_ms: None,
        ..StorageSettings::default()
    };
    let mut m = mirroring(settings);
    let at = |m: &mut StorageMachine, now: u64, offset: u64| {
        let mut j = job(1, false, "running");
        j.offset = offset;
        let l = look(now, Some(j));
        m.handle(StorageEvent::MirrorLooked(l.clone()))
            .expect("look");
        m.judge(&l)
    };
    assert_eq!(at(&mut m, 1_100, 10), MirrorVerdict::Wait);
    assert_eq!(
        at(&mut m, 1_900, 11),
        MirrorVerdict::Wait,
        "slow but moving"
    );
    assert_eq!(at(&mut m, 2_800, 11), MirrorVerdict::Wait);
    match at(&mut m, 3_000, 11) {
        MirrorVerdict::Fail(msg) => assert!(msg.contains("copied nothing for 1100 ms"), "{msg}"),
        v => panic!("{v:?}"),
    }
    assert_eq!(
        StorageSettings::within_deadline(60_000).ready_timeout_ms,
        60_000
    );
}
