use super::*;
use crate::qmp::ScriptedQmp;
use crate::test_rig::{refuse, status_reply};
use serde_json::{json, Value};

/// A pretend pair of QEMUs sharing one migration.
#[derive(Default)]
struct World {
    migrating: bool,
    polls: u64,
    postcopy: bool,
    cancelled: bool,
    done: bool,
    /// Remaining never shrinks: pre-copy cannot converge.
    hot: bool,
    incoming_fails: bool,
    source_paused: bool,
    source_dies_after: Option<u64>,
    fail_at_poll: Option<u64>,
    /// The destination resumes the guest only after this many looks past completion.
    dest_lag: u64,
    dest_looks_after_done: u64,
    /// Post-copy never completes: its byte counter stays flat (a dead link)...
    postcopy_flat: bool,
    /// ...or keeps creeping (a starved one).
    postcopy_endless: bool,
    /// QEMU ignores `migrate-start-postcopy` (pre-copy goes on, unwatched by the ladder).
    never_switches: bool,
    /// `migrate-pause` took effect: QEMU reports postcopy-paused.
    paused: bool,
    ignores_pause: bool,
    ignores_cancel: bool,
    /// The cancel catches the guest stopped for the final copy and leaves it stopped.
    cancel_stops_source: bool,
    /// From this poll on, the source's `query-migrate` times out (a hung QEMU)...
    source_hangs_from: Option<u64>,
    /// ...or only this poll does (a hiccup)...
    source_hiccup_at: Option<u64>,
    /// ...or these polls, from..=to, are refused unsent (a busy QEMU: earlier commands
    /// unanswered).
    source_busy: Option<(u64, u64)>,
    /// Looks at the destination so far (`query-status`), and the ones that fail (an I/O
    /// error, as a blipping link between agents gives), from..to.
    dest_looks: u64,
    dest_fails: Option<(u64, u64)>,
    /// The destination's incoming side says `postcopy-active` while in post-copy, and
    /// completes on its own after this many looks (the source need not answer).
    dest_postcopy: bool,
    dest_completes_after: Option<u64>,
}

type Shared = crate::test_rig::Shared<World>;

fn caps() -> Value {
    json!([{"capability": "postcopy-ram", "state": false}, {"capability": "postcopy-preempt", "state": false}])
}

fn source(world: Shared) -> ScriptedQmp {
    ScriptedQmp::new(move |cmd, _args| {
        let mut w = world.lock().expect("lock");
        match cmd {
            "query-migrate-capabilities" => Ok(caps()),
            "migrate" => {
                w.migrating = true;
                Ok(json!({}))
            }
            "migrate-start-postcopy" => {
                w.postcopy = !w.never_switches;
                Ok(json!({}))
            }
            "migrate_cancel" => {
                w.cancelled = !w.ignores_cancel;
                w.source_paused |= w.cancel_stops_source;
                Ok(json!({}))
            }
            "migrate-pause" => {
                w.paused = w.postcopy && !w.ignores_pause;
                Ok(json!({}))
            }
            "query-migrate" => {
                w.polls += 1;
                if w.source_dies_after.is_some_and(|n| w.polls > n) {
                    return Err(QmpError::Closed);
                }
                if w.source_busy
                    .is_some_and(|(a, b)| (a..=b).contains(&w.polls))
                {
                    return Err(QmpError::Busy {
                        command: cmd.into(),
                        unanswered: 4,
                    });
                }
                let hung = w.source_hangs_from.is_some_and(|n| w.polls >= n);
                if hung || w.source_hiccup_at == Some(w.polls) {
                    return Err(QmpError::Timeout {
                        command: cmd.into(),
                        ms: 10_000,
                    });
                }
                if w.fail_at_poll.is_some_and(|n| w.polls >= n) {
                    w.source_paused = true;
                    return Ok(
                        json!({"status": "failed", "error-desc": "Unable to write to socket"}),
                    );
                }
                Ok(progress(&mut w))
            }
            "query-status" => status_reply(!w.source_paused, "postmigrate"),
            "cont" => {
                w.source_paused = false;
                Ok(json!({}))
            }
            _ => Ok(json!({})),
        }
    })
}

fn progress(w: &mut World) -> Value {
    let sync = w.polls;
    if w.cancelled {
        return json!({"status": "cancelled"});
    }
    if w.paused {
        return json!({"status": "postcopy-paused", "ram": {"transferred": 100, "remaining": 150, "total": 256, "dirty-sync-count": 2}});
    }
    if w.postcopy && w.polls >= 2 && (w.postcopy_flat || w.postcopy_endless) {
        let sent = if w.postcopy_endless {
            100 + w.polls
        } else {
            100
        };
        return json!({"status": "postcopy-active", "ram": {"transferred": sent, "remaining": 150, "total": 256, "dirty-sync-count": 2}});
    }
    if w.postcopy && w.polls >= 2 {
        if w.polls >= 6 {
            w.done = true;
            return json!({"status": "completed", "downtime": 40, "total-time": 500, "ram": {"transferred": 300, "remaining": 0, "total": 256, "dirty-sync-count": 2, "postcopy-requests": 12}});
        }
        return json!({"status": "postcopy-active", "ram": {"transferred": 100, "remaining": 150, "total": 256, "dirty-sync-count": 2}});
    }
    if !w.hot && w.polls >= 5 {
        w.done = true;
        return json!({"status": "completed", "downtime": 20, "ram": {"transferred": 260, "remaining": 0, "total": 256, "dirty-sync-count": sync}});
    }
    let remaining = if w.hot { 200 } else { 200 / sync };
    json!({"status": "active", "ram": {"transferred": 50 * sync, "remaining": remaining, "total": 256, "dirty-sync-count": sync}})
}

fn dest(world: Shared) -> ScriptedQmp {
    ScriptedQmp::new(move |cmd, _args| {
        let mut w = world.lock().expect("lock");
        match cmd {
            "query-migrate-capabilities" => Ok(caps()),
            "migrate-incoming" if w.incoming_fails => {
                refuse(cmd, "Failed to bind socket: Address already in use")
            }
            "query-status" => {
                w.dest_looks += 1;
                let look = w.dest_looks;
                if w.dest_fails
                    .is_some_and(|(from, to)| (from..to).contains(&look))
                {
                    return Err(QmpError::Io("connection reset by peer".into()));
                }
                if w.dest_completes_after.is_some_and(|n| look >= n) {
                    w.done = true;
                }
                if w.done {
                    w.dest_looks_after_done += 1;
                }
                let resumed = w.done && w.dest_looks_after_done > w.dest_lag;
                Ok(
                    json!({"running": resumed || (w.postcopy && w.polls >= 2), "status": "inmigrate"}),
                )
            }
            "query-migrate" => Ok(
                json!({"status": match (w.done, w.dest_postcopy && w.postcopy) {
                    (true, _) => "completed",
                    (false, true) => "postcopy-active",
                    (false, false) => "active",
                }}),
            ),
            _ => Ok(json!({})),
        }
    })
}

type Rig = crate::test_rig::Rig<World>;

fn rig(setup: impl FnOnce(&mut World)) -> Rig {
    Rig::new(setup, source, dest)
}

async fn run(
    r: &Rig,
    plan: MigrationPlan,
    cancel: Option<watch::Receiver<bool>>,
) -> Result<MigrationRun, DriverError> {
    migrate(
        &r.ends(),
        plan,
        &DriverConfig::default(),
        &Clock::default(),
        cancel,
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn precopy_runs_the_protocol_in_order() {
    let r = rig(|_| {});
    let run = run(&r, MigrationPlan::fixed(Technique::Precopy), None)
        .await
        .expect("run");
    assert_eq!(run.outcome.status, EndStatus::Completed);
    assert!(run.outcome.converged);
    assert!(run.dest_running_ms.is_some());
    assert_eq!(
        r.dest.command_names()[..2],
        [
            "migrate-set-capabilities".to_string(),
            "migrate-incoming".to_string()
        ]
    );
    let names = r.source.command_names();
    assert_eq!(
        names[..4],
        [
            "migrate-set-capabilities",
            "migrate-set-parameters",
            "migrate",
            "query-migrate"
        ]
    );
    assert!(!names.contains(&"migrate-start-postcopy".to_string()));
}

use drover_core::migration::Technique;

#[tokio::test(start_paused = true)]
async fn postcopy_uses_preempt_and_switches_at_once() {
    let r = rig(|_| {});
    let run = run(&r, MigrationPlan::fixed(Technique::Postcopy), None)
        .await
        .expect("run");
    assert_eq!(run.outcome.status, EndStatus::Completed);
    assert!(run.plan.postcopy_preempt);
    let caps = r
        .dest
        .calls()
        .into_iter()
        .find(|c| c.command == "migrate-set-capabilities")
        .expect("caps");
    let text = caps.arguments.expect("args").to_string();
    assert!(
        text.contains("postcopy-ram") && text.contains("postcopy-preempt"),
        "{text}"
    );
    let names = r.source.command_names();
    let migrate = names.iter().position(|n| n == "migrate").expect("migrate");
    assert_eq!(names[migrate + 1], "migrate-start-postcopy");
}

#[tokio::test(start_paused = true)]
async fn non_converging_precopy_escalates_then_cancels_and_vm_stays() {
    let r = rig(|w| w.hot = true);
    let mut plan = MigrationPlan::fixed(Technique::Precopy);
    plan.watchdog.deadline_ms = 2_000;
    let run = run(&r, plan, None).await.expect("run");
    assert_eq!(run.outcome.status, EndStatus::Cancelled);
    assert!(!run.outcome.vm_on_destination);
    let names: Vec<_> = run
        .outcome
        .watchdog_actions
        .iter()
        .map(|a| a.name())
        .collect();
    assert_eq!(
        names,
        ["raise-downtime", "throttle-auto-converge", "cancel"]
    );
    assert!(r.world.lock().expect("lock").cancelled);
    // QEMU's reply after the cancel has no RAM figures; the record keeps the last ones.
    let ram = run.outcome.last.ram.expect("figures kept");
    assert!(ram.transferred > 0 && ram.dirty_sync_count > 1, "{ram:?}");
}

#[tokio::test(start_paused = true)]
async fn destination_refusing_to_listen_never_starts_the_migration() {
    let r = rig(|w| w.incoming_fails = true);
    let run = run(&r, MigrationPlan::fixed(Technique::Precopy), None)
        .await
        .expect("run");
    assert_eq!(run.outcome.status, EndStatus::Failed);
    assert!(run
        .outcome
        .error
        .as_deref()
        .unwrap_or("")
        .contains("Address already in use"));
    assert!(!r.source.command_names().contains(&"migrate".to_string()));
}

#[tokio::test(start_paused = true)]
async fn source_vanishing_is_an_error() {
    let r = rig(|w| w.source_dies_after = Some(2));
    let err = run(&r, MigrationPlan::fixed(Technique::Precopy), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DriverError::SourceLost(QmpError::Closed)),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_request_is_honoured_in_precopy() {
    let r = rig(|w| w.hot = true);
    let (tx, rx) = watch::channel(false);
    tx.send(true).expect("send");
    let run = run(&r, MigrationPlan::fixed(Technique::Precopy), Some(rx))
        .await
        .expect("run");
    assert_eq!(run.outcome.status, EndStatus::Cancelled);
    assert_eq!(run.outcome.error.as_deref(), Some("cancelled on request"));
}

#[tokio::test(start_paused = true)]
async fn failure_after_stop_resumes_the_guest_on_the_source() {
    let r = rig(|w| {
        w.hot = true;
        w.fail_at_poll = Some(3);
    });
    let run = run(&r, MigrationPlan::fixed(Technique::Precopy), None)
        .await
        .expect("run");
    assert_eq!(run.outcome.status, EndStatus::Failed);
    assert!(r.source.command_names().contains(&"cont".to_string()));
    assert!(!r.world.lock().expect("lock").source_paused);
}

fn event(name: &str, ts: u64) -> QmpEvent {
    QmpEvent {
        name: name.into(),
        data: json!({}),
        timestamp_us: Some(ts),
    }
}

#[test]
fn pause_is_resume_minus_last_stop_before_it() {
    let source = [
        event("STOP", 1_000_000),
        event("RESUME", 1_100_000),
        event("STOP", 2_000_000),
    ];
    let dest = [event("RESUME", 2_045_000)];
    assert_eq!(switchover_pause_ms(&source, &dest), Some(45));
    assert_eq!(switchover_pause_ms(&source, &[]), None);
    assert_eq!(switchover_pause_ms(&[], &dest), None);
}

#[tokio::test(start_paused = true)]
async fn switchover_never_exceeds_total_when_the_destination_resumes_late() {
    let r = rig(|w| w.dest_lag = 3);
    let run = run(&r, MigrationPlan::fixed(Technique::Precopy), None)
        .await
        .expect("run");
    let o = &run.outcome;
    let seen = run.dest_running_ms.expect("destination ran the guest");
    assert!(
        seen > o.ended_ms,
        "the lag must show: {seen} vs {}",
        o.ended_ms
    );
    let record = run.result(&[]);
    let switchover = record.switchover_ms.expect("switchover");
    assert!(switchover <= record.total_ms, "{record:?}");
    assert_eq!(record.total_ms, seen - o.started_ms);
}

/// Commands the source received, every repeat included.
fn source_commands(r: &Rig) -> Vec<String> {
    r.source.calls().into_iter().map(|c| c.command).collect()
}

fn stall_plan(stall_ms: u64) -> MigrationPlan {
    let mut plan = MigrationPlan::fixed(Technique::Postcopy);
    plan.postcopy_stall_ms = stall_ms;
    plan
}

#[tokio::test(start_paused = true)]
async fn a_stalled_postcopy_is_paused_never_cancelled_and_reported_paused() {
    let r = rig(|w| w.postcopy_flat = true);
    let run = run(&r, stall_plan(2_000), None).await.expect("run");
    let o = &run.outcome;
    assert_eq!(o.status, EndStatus::Paused, "{:?}", o.error);
    assert!(o.vm_on_destination);
    assert!(o
        .error
        .as_deref()
        .unwrap_or("")
        .contains("moved no byte for 2 s"));
    let names = source_commands(&r);
    assert!(names.contains(&"migrate-pause".to_string()), "{names:?}");
    for never in ["migrate_cancel", "cont"] {
        assert!(!names.contains(&never.to_string()), "{never}: {names:?}");
    }
    // No recovery of our own pause.
    assert!(!r
        .dest
        .command_names()
        .contains(&"migrate-recover".to_string()));
    assert_eq!(run.result(&[]).status, EndStatus::Paused);
}

#[tokio::test(start_paused = true)]
async fn a_postcopy_out_of_time_is_paused_not_cancelled() {
    // Bytes keep creeping, so the stall watchdog never fires; the budget does.
    let r = rig(|w| w.postcopy_endless = true);
    let plan = stall_plan(60_000);
    let budget = plan.time_budget_ms(256);
    let run = run(&r, plan, None).await.expect("run");
    let o = &run.outcome;
    assert_eq!(o.status, EndStatus::Paused, "{:?}", o.error);
    assert!(o.error.as_deref().unwrap_or("").contains("time budget"));
    assert!(
        o.ended_ms > budget,
        "not before the budget: {} vs {budget}",
        o.ended_ms
    );
    let names = source_commands(&r);
    assert!(names.contains(&"migrate-pause".to_string()));
    assert!(!names.contains(&"migrate_cancel".to_string()));
    assert!(!names.contains(&"cont".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_precopy_out_of_time_is_cancelled_and_the_driver_resumes_the_source() {
    // Post-copy asked for but QEMU never switches: only the budget ends it.
    let r = rig(|w| {
        w.hot = true;
        w.never_switches = true;
        w.cancel_stops_source = true;
    });
    let run = run(&r, MigrationPlan::fixed(Technique::Postcopy), None)
        .await
        .expect("run");
    let o = &run.outcome;
    assert_eq!(o.status, EndStatus::Cancelled, "{:?}", o.error);
    assert!(!o.vm_on_destination);
    assert!(o.error.as_deref().unwrap_or("").contains("time budget"));
    let names = source_commands(&r);
    assert!(names.contains(&"migrate_cancel".to_string()));
    assert!(names.contains(&"cont".to_string()), "{names:?}");
    assert!(!r.world.lock().expect("lock").source_paused);
}

#[tokio::test(start_paused = true)]
async fn an_unconfirmed_cancel_never_resumes_a_source_still_migrating() {
    let r = rig(|w| {
        w.hot = true;
        w.never_switches = true;
        w.ignores_cancel = true;
        w.cancel_stops_source = true;
    });
    let run = run(&r, MigrationPlan::fixed(Technique::Postcopy), None)
        .await
        .expect("run");
    let o = &run.outcome;
    assert_eq!(o.status, EndStatus::Failed);
    assert!(!o.vm_on_destination);
    assert!(o.error.as_deref().unwrap_or("").contains("did not confirm"));
    assert!(!source_commands(&r).contains(&"cont".to_string()));
}

#[tokio::test(start_paused = true)]
async fn an_unconfirmed_pause_leaves_the_guest_on_the_destination() {
    let r = rig(|w| {
        w.postcopy_endless = true;
        w.ignores_pause = true;
    });
    let run = run(&r, stall_plan(60_000), None).await.expect("run");
    let o = &run.outcome;
    assert_eq!(o.status, EndStatus::Failed);
    assert!(o.vm_on_destination);
    let names = source_commands(&r);
    assert!(!names.contains(&"migrate_cancel".to_string()));
    assert!(!names.contains(&"cont".to_string()));
}

/// Between agents the destination's events are not forwarded: a missing STOP/RESUME pair is
/// expected there and no warning (it used to warn, with every event dumped, on each migration).
#[test]
fn an_unknown_pause_warns_only_where_events_are_forwarded() {
    assert!(!report_unknown_pause(false, &[], &[]));
    assert!(!report_unknown_pause(false, &[], &[]), "and says so once");
    assert!(report_unknown_pause(true, &[], &[]));
}

/// The reviewer's case (a): the source QEMU stops answering in the middle of a post-copy.
/// The guest runs on the destination: the run ends failed with it there, both QEMUs kept,
/// nothing cancelled or resumed on the source, and no error that would make a caller drop
/// the destination.
#[tokio::test(start_paused = true)]
async fn a_source_lost_in_postcopy_keeps_the_guest_on_the_destination() {
    let r = rig(|w| {
        w.postcopy_endless = true;
        w.dest_postcopy = true;
        w.source_hangs_from = Some(4);
    });
    let run = run(&r, stall_plan(60_000), None)
        .await
        .expect("not an error: the guest is on the destination");
    let o = &run.outcome;
    assert_eq!((o.status, o.vm_on_destination), (EndStatus::Failed, true));
    let error = o.error.as_deref().unwrap_or("");
    assert!(
        error.contains("stopped answering") && error.contains("timed out"),
        "{error}"
    );
    assert!(run.dest_running_ms.is_some());
    let names = source_commands(&r);
    for never in ["migrate_cancel", "cont", "migrate-pause"] {
        assert!(!names.contains(&never.to_string()), "{never}: {names:?}");
    }
    // The failed poll was asked again before the source was given up.
    let polls = names.iter().filter(|n| *n == "query-migrate").count();
    assert!(polls >= 5, "{names:?}");
}

/// ...and when the destination then completes on its own (it pulls the last pages from a
/// source QEMU whose monitor hangs but whose migration runs), the run is completed.
#[tokio::test(start_paused = true)]
async fn a_source_lost_in_postcopy_completes_when_the_destination_does() {
    let r = rig(|w| {
        w.postcopy_endless = true;
        w.dest_postcopy = true;
        w.source_hangs_from = Some(4);
        w.dest_completes_after = Some(10);
    });
    let run = run(&r, stall_plan(60_000), None).await.expect("run");
    let o = &run.outcome;
    assert_eq!(
        (o.status, o.vm_on_destination),
        (EndStatus::Completed, true)
    );
    assert!(
        o.error
            .as_deref()
            .unwrap_or("")
            .contains("stopped answering"),
        "the source's end is kept as a note: {:?}",
        o.error
    );
}

/// A source that misses one poll and then answers is no loss: the migration goes on.
#[tokio::test(start_paused = true)]
async fn one_missed_source_poll_is_asked_again() {
    let r = rig(|w| w.source_hiccup_at = Some(3));
    let run = run(&r, MigrationPlan::fixed(Technique::Postcopy), None)
        .await
        .expect("run");
    assert_eq!(
        run.outcome.status,
        EndStatus::Completed,
        "{:?}",
        run.outcome.error
    );
    assert_eq!(run.outcome.error, None);
}

/// A source busy for a while (its commands refused unsent, ~2 s of polls) is waited for,
/// within the driver's patience: the pre-copy goes on and completes.
#[tokio::test(start_paused = true)]
async fn a_busy_source_is_waited_for() {
    let r = rig(|w| w.source_busy = Some((3, 80)));
    let run = run(&r, MigrationPlan::fixed(Technique::Precopy), None)
        .await
        .expect("run");
    assert_eq!(
        run.outcome.status,
        EndStatus::Completed,
        "{:?}",
        run.outcome.error
    );
    assert!(r.world.lock().expect("lock").polls > 80);
}

/// A pre-copy whose source stops answering before post-copy was asked for leaves the guest
/// home: the driver says so with an error, so the caller removes the destination.
#[tokio::test(start_paused = true)]
async fn a_source_lost_in_precopy_is_still_an_error() {
    let r = rig(|w| {
        w.hot = true;
        w.source_hangs_from = Some(3);
    });
    let err = run(&r, MigrationPlan::fixed(Technique::Precopy), None)
        .await
        .expect_err("lost before post-copy");
    assert!(
        matches!(err, DriverError::SourceLost(QmpError::Timeout { .. })),
        "{err}"
    );
}

/// The reviewer's case (b): a few failed looks at the destination (a blip) do not mark it
/// failed for the rest of the run: its guest is still seen running and the record has no
/// destination error.
#[tokio::test(start_paused = true)]
async fn a_destination_blip_is_not_its_death() {
    let r = rig(|w| w.dest_fails = Some((2, 5)));
    let run = run(&r, MigrationPlan::fixed(Technique::Precopy), None)
        .await
        .expect("run");
    assert_eq!(run.outcome.status, EndStatus::Completed);
    assert_eq!(run.dest_error, None);
    assert!(run.dest_running_ms.is_some(), "the guest is seen running");
}

/// A destination that stops answering for good is failed, but only after a row of failed
/// looks spanning `LOST_AFTER_MS`.
#[tokio::test(start_paused = true)]
async fn a_destination_that_never_answers_again_is_failed_after_a_while() {
    use drover_core::migration::dest::{LOOKS_BEFORE_LOST, LOST_AFTER_MS};
    let r = rig(|w| w.dest_fails = Some((2, u64::MAX)));
    let clock = Clock::default();
    let run = run(&r, MigrationPlan::fixed(Technique::Precopy), None)
        .await
        .expect("run");
    let error = run.dest_error.expect("the destination failed");
    assert!(error.contains("looks in a row"), "{error}");
    assert!(run.dest_running_ms.is_none());
    let looks = r.world.lock().expect("lock").dest_looks;
    assert!(looks > u64::from(LOOKS_BEFORE_LOST), "{looks}");
    assert!(clock.now_ms() >= LOST_AFTER_MS, "{} ms", clock.now_ms());
}
