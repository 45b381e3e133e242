//! The post-copy stall watchdog through the driver, on the clock: a cut link to the
//! destination (whose looks then hang), a migration completing with nothing left to send, and a
//! pause QEMU turns into a failure of a migration the destination completed.

use super::*;
use crate::qmp::ScriptedQmp;
use async_trait::async_trait;
use drover_core::migration::{Technique, WatchdogAction};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

const MIB: u64 = 1 << 20;

/// How the pretend migration goes, in ms since the test's start.
#[derive(Default, Clone)]
struct Script {
    /// The link is cut over `[from, to)`: the counter stands still and the destination's looks
    /// hang (as an HTTP call over a black-holed route does).
    cut: Option<(u64, u64)>,
    /// From then on every page is sent: `remaining` 0, the counter flat...
    all_sent_ms: Option<u64>,
    /// ...until the source's QEMU reports completed.
    completed_ms: Option<u64>,
    /// The destination's incoming side completes then (default: with the source).
    dest_completed_ms: Option<u64>,
    /// `migrate-pause` catches the migration past its last page: QEMU fails it.
    pause_fails: bool,
}

#[derive(Default)]
struct World {
    postcopy: bool,
    /// When `migrate-pause` arrived, ms.
    pause_ms: Option<u64>,
}

struct Rig {
    start: Instant,
    script: Script,
    world: Arc<Mutex<World>>,
    source: ScriptedQmp,
}

fn ms_since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

impl Script {
    fn cut_at(&self, t: u64) -> bool {
        self.cut.is_some_and(|(from, to)| (from..to).contains(&t))
    }

    /// Bytes sent by `t`: 1 MiB a second while the link is up and pages are left.
    fn transferred(&self, t: u64) -> u64 {
        let end = self.all_sent_ms.map_or(t, |a| t.min(a));
        let cut = self
            .cut
            .map_or(0, |(from, to)| end.min(to).saturating_sub(from.min(end)));
        10 * MIB + (end - cut) * MIB / 1000
    }
}

fn rig(script: Script) -> Rig {
    let start = Instant::now();
    let world: Arc<Mutex<World>> = Arc::default();
    let (w, s) = (world.clone(), script.clone());
    let source = ScriptedQmp::new(move |cmd, _| {
        let t = ms_since(start);
        let mut w = w.lock().expect("lock");
        match cmd {
            "migrate-start-postcopy" => w.postcopy = true,
            "migrate-pause" => {
                w.pause_ms.get_or_insert(t);
            }
            "query-migrate" => {
                let ram = |remaining: u64| {
                    json!({"transferred": s.transferred(t), "remaining": remaining,
                           "total": 192 * MIB, "dirty-sync-count": 2})
                };
                return Ok(match (w.pause_ms, s.completed_ms) {
                    (Some(_), _) if s.pause_fails => json!({"status": "failed",
                        "error-desc": "Postcopy migration is paused by the user"}),
                    (Some(_), _) => json!({"status": "postcopy-paused", "ram": ram(MIB)}),
                    (None, Some(c)) if t >= c => json!({"status": "completed", "ram": ram(0)}),
                    _ if !w.postcopy => json!({"status": "active", "ram": ram(100 * MIB)}),
                    _ => {
                        let sent = s.all_sent_ms.is_some_and(|a| t >= a);
                        json!({"status": "postcopy-active",
                               "ram": ram(if sent { 0 } else { 100 * MIB })})
                    }
                });
            }
            _ => {}
        }
        Ok(json!({}))
    });
    Rig {
        start,
        script,
        world,
        source,
    }
}

/// The destination: the guest runs there once post-copy started; its looks hang while the
/// link is cut.
struct Dest<'a>(&'a Rig);

#[async_trait]
impl Qmp for Dest<'_> {
    async fn execute(&self, command: &str, _: Option<Value>) -> Result<Value, QmpError> {
        let r = self.0;
        if r.script.cut_at(ms_since(r.start)) {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return Err(QmpError::Io("operation timed out".into()));
        }
        let t = ms_since(r.start);
        let postcopy = r.world.lock().expect("lock").postcopy;
        let completed = r.script.dest_completed_ms.or(r.script.completed_ms);
        Ok(match command {
            "query-status" => json!({"running": postcopy, "status": "running"}),
            "query-migrate" if completed.is_some_and(|c| t >= c) => json!({"status": "completed"}),
            // A pause that worked pauses the incoming side too; one QEMU failed leaves it
            // receiving (it completes, if at all, at `dest_completed_ms`).
            "query-migrate"
                if !r.script.pause_fails && r.world.lock().expect("lock").pause_ms.is_some() =>
            {
                json!({"status": "postcopy-paused"})
            }
            "query-migrate" => json!({"status": "postcopy-active"}),
            _ => json!({}),
        })
    }

    fn take_events(&self) -> Vec<QmpEvent> {
        Vec::new()
    }
}

async fn run(r: &Rig, stall_ms: u64) -> MigrationRun {
    let dest = Dest(r);
    let ends = Endpoints {
        source: &r.source,
        dest: &dest,
        uri: "tcp:198.18.1.12:4000".into(),
        recover_uri: "tcp:198.18.1.12:4001".into(),
    };
    let mut plan = MigrationPlan::fixed(Technique::Postcopy);
    plan.postcopy_stall_ms = stall_ms;
    let config = DriverConfig {
        prefer_preempt: false,
        ..DriverConfig::default()
    };
    migrate(&ends, plan, &config, &Clock::default(), None)
        .await
        .expect("run")
}

fn pause_ms(r: &Rig) -> Option<u64> {
    r.world.lock().expect("lock").pause_ms
}

/// The reviewer's run: the link cut 14 s in for 21 s, each look at the destination hanging
/// meanwhile. The stall watchdog pauses within its limit of the cut (the old loop waited on the
/// hung look and never saw the counter flat across two polls), and the run ends paused.
#[tokio::test(start_paused = true)]
async fn a_cut_link_is_paused_within_the_stall_limit_though_the_destination_hangs() {
    let r = rig(Script {
        cut: Some((14_000, 35_000)),
        ..Script::default()
    });
    let run = run(&r, 5_000).await;
    let at = pause_ms(&r).expect("paused");
    assert!(
        (19_000..=21_000).contains(&at),
        "migrate-pause at {at} ms, the cut began at 14000 ms"
    );
    let o = &run.outcome;
    assert_eq!(o.status, EndStatus::Paused, "{:?}", o.error);
    assert!(o.vm_on_destination);
    assert_eq!(o.watchdog_actions, vec![WatchdogAction::PauseStalled]);
    assert_eq!(run.result(&[]).watchdog_action, "pause-stalled");
    let names = r.source.command_names();
    for never in ["migrate_cancel", "cont"] {
        assert!(!names.contains(&never.to_string()), "{never}: {names:?}");
    }
}

/// Every page sent, QEMU completing for longer than the stall limit: no pause, completed.
#[tokio::test(start_paused = true)]
async fn a_postcopy_completing_with_nothing_left_is_not_paused() {
    let r = rig(Script {
        all_sent_ms: Some(3_000),
        completed_ms: Some(12_000),
        ..Script::default()
    });
    let run = run(&r, 2_000).await;
    assert_eq!(pause_ms(&r), None);
    assert_eq!(
        run.outcome.status,
        EndStatus::Completed,
        "{:?}",
        run.outcome.error
    );
    assert!(run.outcome.watchdog_actions.is_empty());
}

/// The pause catches QEMU past its last page and it fails the migration ("paused by the
/// user") while the destination completes: the run is completed, the source's failure a note.
#[tokio::test(start_paused = true)]
async fn a_failed_pause_of_a_migration_the_destination_completed_is_completed() {
    let r = rig(Script {
        cut: Some((2_000, 4_000)),
        pause_fails: true,
        dest_completed_ms: Some(8_000),
        ..Script::default()
    });
    let run = run(&r, 1_000).await;
    assert!(pause_ms(&r).is_some());
    let o = &run.outcome;
    assert_eq!(o.status, EndStatus::Completed, "{:?}", o.error);
    assert!(o.vm_on_destination);
    assert_eq!(o.watchdog_actions, vec![WatchdogAction::PauseStalled]);
    let note = o.error.as_deref().unwrap_or("");
    assert!(note.contains("paused by the user"), "{note}");
    assert!(note.contains("destination's QEMU completed"), "{note}");
    assert_eq!(run.result(&[]).status, EndStatus::Completed);
}

/// The same failure with the destination still short of pages (it never completes): failed, the guest on the destination, both QEMUs kept; never a completion it lacks.
#[tokio::test(start_paused = true)]
async fn a_failed_pause_the_destination_did_not_complete_stays_failed() {
    let r = rig(Script {
        cut: Some((2_000, 4_000)),
        pause_fails: true,
        ..Script::default()
    });
    let run = run(&r, 1_000).await;
    let o = &run.outcome;
    assert_eq!(o.status, EndStatus::Failed, "{:?}", o.error);
    assert!(o.vm_on_destination);
    assert_eq!(o.watchdog_actions, vec![WatchdogAction::PauseStalled]);
    assert!(o.error.as_deref().unwrap_or("").contains("moved no byte"));
    assert!(!r.source.command_names().contains(&"cont".to_string()));
}
