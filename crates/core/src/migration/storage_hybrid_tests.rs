use super::*;
use crate::migration::wan::RegionCount;

const MIB: u64 = 1 << 20;

fn job(offset: u64, len: u64, status: &str, error: Option<&str>) -> MirrorJob {
    MirrorJob {
        offset,
        len,
        ready: false,
        status: status.into(),
        error: error.map(str::to_string),
    }
}

fn disk(virtual_bytes: u64, regions: Vec<RegionCount>) -> DiskProfile {
    DiskProfile::new(virtual_bytes, 64 << 10, 1e6, 1e6, regions).expect("profile")
}

fn rc(reads: u64, writes: u64) -> RegionCount {
    RegionCount { reads, writes }
}

fn range(offset: u64, len: u64) -> ByteRange {
    ByteRange { offset, len }
}

#[test]
fn ranges_are_widened_to_granules_and_merged() {
    let g = 64 << 10;
    let hot = HotSet::from_ranges(
        64 * MIB,
        g,
        &[range(10 * MIB + 1, 100), range(0, MIB), range(MIB - 5, 10)],
    )
    .expect("hot set");
    // [0, 1M) and [1M-5, 1M+5) touch after widening: one range [0, 1M+64k).
    assert_eq!(
        hot.ranges(),
        [range(0, MIB + g), range(10 * MIB, g)].as_slice()
    );
    assert_eq!(hot.bytes(), MIB + 2 * g);
    // A disk whose size is no multiple of the granule: the last range ends at its end.
    let odd = HotSet::from_ranges(MIB + 512, g, &[range(MIB, 512)]).expect("odd");
    assert_eq!(odd.ranges(), [range(MIB, 512)].as_slice());
}

#[test]
fn bad_hot_sets_are_refused_with_what_was_expected() {
    for (v, g, r, words) in [
        (64 * MIB, 3000, range(0, 1), "power of two"),
        (64 * MIB, 256, range(0, 1), "power of two"),
        (0, 4096, range(0, 1), "0 bytes"),
        (MIB, 4096, range(MIB - 1, 2), "inside the disk"),
        (MIB, 4096, range(0, 0), "non-empty"),
        (MIB, 4096, range(u64::MAX, 2), "inside the disk"),
    ] {
        let err = HotSet::from_ranges(v, g, &[r]).expect_err(words);
        assert!(err.to_string().contains(words), "{err}");
    }
    let d = disk(64 * MIB, vec![]);
    for f in [-0.1, 1.5, f64::NAN] {
        let err = HotSet::hottest(&d, f, 65536).expect_err("fraction");
        assert!(err.to_string().contains("storage fraction"), "{err}");
    }
    let mut broken = d.clone();
    broken.block_bytes = 0;
    let err = HotSet::hottest(&broken, 0.5, 65536).expect_err("profile");
    assert!(err.to_string().contains("disk.block_bytes"), "{err}");
}

#[test]
fn the_hottest_regions_go_first_and_the_last_is_cut() {
    // Four 16 MiB regions: region 2 hottest, then 0, 3, 1 (reads and writes weigh by their
    // rates: 1 MB/s each).
    let d = disk(64 * MIB, vec![rc(40, 10), rc(0, 0), rc(80, 10), rc(10, 0)]);
    assert_eq!(d.hottest_regions(), vec![2, 0, 3, 1]);
    let quarter = HotSet::hottest(&d, 0.25, 65536).expect("s = 0.25");
    assert_eq!(quarter.ranges(), [range(32 * MIB, 16 * MIB)].as_slice());
    // 0.375: region 2 whole, then the head of region 0.
    let more = HotSet::hottest(&d, 0.375, 65536).expect("s = 0.375");
    assert_eq!(
        more.ranges(),
        [range(0, 8 * MIB), range(32 * MIB, 16 * MIB)].as_slice()
    );
    assert_eq!(more.bytes(), 24 * MIB);
    assert!(HotSet::hottest(&d, 0.0, 65536)
        .expect("none")
        .ranges()
        .is_empty());
    assert_eq!(
        HotSet::hottest(&d, 1.0, 65536).expect("all").bytes(),
        64 * MIB
    );
}

#[test]
fn without_counts_the_hot_set_is_the_disks_head() {
    for regions in [vec![], vec![rc(0, 0); 8]] {
        let hot = HotSet::hottest(&disk(64 * MIB, regions), 0.25, 65536).expect("hot");
        assert_eq!(hot.ranges(), [range(0, 16 * MIB)].as_slice());
    }
}

#[test]
fn uneven_regions_follow_count_regions_slices() {
    // Three regions over 3 MiB + 1 byte: slices start at 0, ceil(V/3), ceil(2V/3).
    let v = 3 * MIB + 512;
    let d =
        DiskProfile::new(v, 512, 1.0, 0.0, vec![rc(0, 0), rc(0, 0), rc(9, 0)]).expect("profile");
    let hot = HotSet::hottest(&d, 1.0 / 3.0, 512).expect("hot");
    let start = (2 * u128::from(v)).div_ceil(3) as u64;
    let aligned = start - start % 512;
    // round(V/3) is one byte more than region 2 holds: that byte comes from the next
    // hottest (region 0, address order among equals) and takes a whole granule.
    assert_eq!(
        hot.ranges(),
        [range(0, 512), range(aligned, v - aligned)].as_slice()
    );
}

#[test]
fn among_equally_hot_regions_the_less_written_goes_first() {
    // Equal accesses (reads and writes at the same rate), region 1 less written.
    let d = disk(64 * MIB, vec![rc(0, 10), rc(10, 0)]);
    assert_eq!(d.hottest_regions(), vec![1, 0]);
}

fn settings() -> HybridSettings {
    HybridSettings {
        max_rounds: 2,
        dirty_threshold_bytes: MIB,
        push_timeout_ms: 5000,
        freeze_timeout_ms: 200,
        push_speed_bps: None,
    }
}

/// Drives a machine from Idle to `Pushed { round: 0 }`.
fn pushed_hot(m: &mut HybridMachine) {
    use HybridEvent as E;
    for e in [
        E::DestServerStarted,
        E::DestExported,
        E::HotBitmapBuilt {
            hot_bytes: 16 * MIB,
        },
        E::TrackingStarted,
        E::TargetAttached,
        E::PushStarted { now_ms: 100 },
        E::PushConcluded { bytes: 16 * MIB },
    ] {
        m.handle(e).expect("transition");
    }
}

#[test]
fn a_full_push_records_the_rounds_the_freeze_and_the_pull() {
    use HybridEvent as E;
    let mut m = HybridMachine::new(settings());
    pushed_hot(&mut m);
    assert_eq!(m.next_round(2 * MIB), RoundVerdict::Push);
    m.handle(E::PushStarted { now_ms: 200 }).expect("round 1");
    assert_eq!(
        m.phase(),
        &HybridPhase::Pushing {
            round: 1,
            started_ms: 200
        }
    );
    m.handle(E::PushConcluded { bytes: 2 * MIB }).expect("done");
    // Below the threshold: enough.
    assert_eq!(m.next_round(MIB - 1), RoundVerdict::Enough);
    for e in [
        E::MirrorStarted,
        E::MemoryStarted,
        E::FreezeStarted { now_ms: 900 },
        E::FreezeConcluded {
            now_ms: 930,
            bytes: MIB / 2,
        },
        E::Released,
        E::MemoryMoved,
    ] {
        m.handle(e).expect("transition");
    }
    assert!(m.cleanup().is_empty());
    let pull = StorageRecord {
        mode: StorageMode::Postcopy,
        transferred_bytes: 64 * MIB,
        disk_bytes: 64 * MIB,
        stream_ms: Some(400),
        pulled_bytes: Some(5 * MIB),
        ..StorageRecord::default()
    };
    let r = m.record(&pull);
    assert_eq!(r.mode, StorageMode::Hybrid);
    assert_eq!(
        (r.hot_bytes, r.pushed_bytes, r.push_rounds, r.freeze_bytes),
        (16 * MIB, 16 * MIB + 2 * MIB + MIB / 2, 1, MIB / 2)
    );
    assert_eq!(r.freeze_ms, Some(30));
    assert_eq!((r.stream_ms, r.pulled_bytes), (Some(400), Some(5 * MIB)));
    assert_eq!(r.transferred_bytes, 64 * MIB);
    assert_eq!(r.error, None);
}

#[test]
fn rounds_stop_at_the_limit() {
    use HybridEvent as E;
    let mut m = HybridMachine::new(settings());
    pushed_hot(&mut m);
    for round in 1..=2 {
        assert_eq!(m.next_round(10 * MIB), RoundVerdict::Push, "round {round}");
        m.handle(E::PushStarted { now_ms: 0 }).expect("start");
        m.handle(E::PushConcluded { bytes: MIB }).expect("end");
    }
    assert_eq!(m.next_round(10 * MIB), RoundVerdict::Enough);
    assert_eq!(m.figures().rounds, 2);
    // Outside `Pushed` there is no round to judge.
    m.handle(E::MirrorStarted).expect("mirror");
    assert_eq!(m.next_round(10 * MIB), RoundVerdict::Enough);
    m.handle(E::MemoryStarted).expect("memory");
    assert_eq!(m.next_round(10 * MIB), RoundVerdict::Enough);
}

#[test]
fn push_jobs_are_judged() {
    let mut m = HybridMachine::new(settings());
    assert!(matches!(m.judge(None, 0), PushVerdict::Fail(_)));
    pushed_hot(&mut m);
    m.handle(HybridEvent::PushStarted { now_ms: 1000 })
        .expect("round 1");
    let running = job(5, 10, "running", None);
    assert_eq!(m.judge(Some(&running), 2000), PushVerdict::Wait);
    let late = m.judge(Some(&running), 6001);
    assert!(
        matches!(&late, PushVerdict::Fail(w) if w.contains("5000 ms")),
        "{late:?}"
    );
    let done = job(10, 10, "concluded", None);
    assert_eq!(
        m.judge(Some(&done), 2000),
        PushVerdict::Concluded { bytes: 10 }
    );
    let failed = job(3, 10, "concluded", Some("Input/output error"));
    assert!(
        matches!(m.judge(Some(&failed), 2000), PushVerdict::Fail(w) if w.contains("Input/output"))
    );
    assert!(matches!(m.judge(None, 2000), PushVerdict::Fail(w) if w.contains("gone")));
    // The freeze has its own, shorter bound: the guest is stopped.
    m.handle(HybridEvent::PushConcluded { bytes: 10 })
        .expect("round 1 done");
    m.handle(HybridEvent::MirrorStarted).expect("mirror");
    m.handle(HybridEvent::MemoryStarted).expect("memory");
    m.handle(HybridEvent::FreezeStarted { now_ms: 9000 })
        .expect("freeze");
    assert_eq!(m.judge(Some(&running), 9200), PushVerdict::Wait);
    let late = m.judge(Some(&running), 9201);
    assert!(
        matches!(&late, PushVerdict::Fail(w) if w.contains("200 ms")),
        "{late:?}"
    );
}

#[test]
fn bad_transitions_are_typed_and_change_nothing() {
    let mut m = HybridMachine::new(settings());
    let err = m
        .handle(HybridEvent::PushStarted { now_ms: 0 })
        .expect_err("not attached");
    assert_eq!(
        err,
        HybridError::InvalidTransition {
            phase: "idle",
            event: "push-started"
        }
    );
    assert_eq!(m.phase(), &HybridPhase::Idle);
    pushed_hot(&mut m);
    assert!(m.handle(HybridEvent::Released).is_err());
    assert!(m.handle(HybridEvent::FreezeStarted { now_ms: 0 }).is_err());
    // The memory migration only with the mirror beside it; no freeze before it runs.
    let err = m.handle(HybridEvent::MemoryStarted).expect_err("no mirror");
    assert_eq!(
        err,
        HybridError::InvalidTransition {
            phase: "pushed",
            event: "memory-started"
        }
    );
    m.handle(HybridEvent::MirrorStarted).expect("mirror");
    assert!(m.handle(HybridEvent::FreezeStarted { now_ms: 0 }).is_err());
    assert!(m.handle(HybridEvent::PushStarted { now_ms: 0 }).is_err());
    assert_eq!(m.phase(), &HybridPhase::Mirroring);
}

fn failed_from(events: &[HybridEvent]) -> HybridMachine {
    let mut m = HybridMachine::new(settings());
    for e in events {
        m.handle(e.clone()).expect("transition");
    }
    m.handle(HybridEvent::Failed {
        step: HybridStep::Push,
        message: "boom".into(),
    })
    .expect("fail");
    m
}

#[test]
fn cleanup_undoes_exactly_what_was_set_up() {
    use HybridCleanup as C;
    use HybridEvent as E;
    let all = [
        E::DestServerStarted,
        E::DestExported,
        E::HotBitmapBuilt { hot_bytes: 1 },
        E::TrackingStarted,
        E::TargetAttached,
        E::PushStarted { now_ms: 0 },
        E::PushConcluded { bytes: 1 },
        E::MirrorStarted,
        E::MemoryStarted,
        E::FreezeStarted { now_ms: 0 },
        E::FreezeConcluded {
            now_ms: 1,
            bytes: 0,
        },
        E::Released,
    ];
    let all_four = &[
        C::CancelPush,
        C::DeleteTarget,
        C::DropBitmaps,
        C::StopDestServer,
    ][..];
    let built = &[C::DeleteTarget, C::DropBitmaps, C::StopDestServer][..];
    // A job runs while pushing, mirroring (the mirror beside the memory migration, too) and
    // freezing: it is cancelled first.
    let expect: [(usize, &[C]); 12] = [
        (0, &[]),
        (1, &[C::StopDestServer]),
        (2, &[C::StopDestServer]),
        (3, &[C::DropBitmaps, C::StopDestServer]),
        (5, built),
        (6, all_four),
        (7, built),
        (8, all_four),
        (9, all_four),
        (10, all_four),
        (11, built),
        (12, &[]),
    ];
    for (n, steps) in expect {
        let m = failed_from(&all[..n]);
        assert_eq!(m.cleanup(), steps, "after {n} events");
        let r = m.record(&StorageRecord::default());
        let error = r.error.expect("error");
        assert!(
            error.contains("push round") && error.contains("boom"),
            "{error}"
        );
    }
    // Nothing fails once moved.
    let mut moved = HybridMachine::new(settings());
    for e in all.iter().cloned().chain([E::MemoryMoved]) {
        moved.handle(e).expect("transition");
    }
    assert!(moved
        .handle(E::Failed {
            step: HybridStep::Release,
            message: "late".into()
        })
        .is_err());
}

#[test]
fn settings_are_checked() {
    assert!(HybridSettings::default().validate().is_ok());
    for (s, field) in [
        (
            HybridSettings {
                max_rounds: 101,
                ..HybridSettings::default()
            },
            "max_rounds",
        ),
        (
            HybridSettings {
                push_timeout_ms: 10,
                ..HybridSettings::default()
            },
            "push_timeout_ms",
        ),
        (
            HybridSettings {
                freeze_timeout_ms: 99,
                ..HybridSettings::default()
            },
            "freeze_timeout_ms",
        ),
        (
            HybridSettings {
                push_speed_bps: Some(0),
                ..HybridSettings::default()
            },
            "push_speed_bps",
        ),
    ] {
        let err = s.validate().expect_err(field);
        assert!(err.to_string().contains(field), "{err}");
    }
}

/// The freeze cancels the mirror for its last sync only when it is READY.
#[test]
fn the_mirror_must_be_ready_at_the_freeze() {
    let ready = MirrorJob {
        ready: true,
        ..job(5, 5, "ready", None)
    };
    assert_eq!(mirror_ready_for_freeze(Some(&ready)), Ok(()));
    let running = job(1, 5, "running", None);
    let e = mirror_ready_for_freeze(Some(&running)).expect_err("not ready");
    assert!(e.contains("'running', not READY"), "{e}");
    let failed = MirrorJob {
        ready: true,
        ..job(1, 5, "ready", Some("Input/output error"))
    };
    let e = mirror_ready_for_freeze(Some(&failed)).expect_err("failed");
    assert!(e.contains("Input/output error"), "{e}");
    let e = mirror_ready_for_freeze(None).expect_err("gone");
    assert!(e.contains("gone"), "{e}");
}
