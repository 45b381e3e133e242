//! Real migrations under QEMU (TCG): every technique moves a memtouch guest with its memory
//! intact, ping-pongs survive, and a guest dirtying faster than the link defeats pre-copy (the
//! watchdog acts) while post-copy completes.
//!
//! Needs qemu-system-x86_64 (a failure under CI when missing, a loud skip elsewhere) and the guest
//! image inputs (run scripts/setup). Tests run one at a time (the machine has two cores) and each
//! checks it left no QEMU behind; a failing one kills its QEMUs as its VMs drop.

use drover_core::migration::{EndStatus, MigrationPlan, MigrationResult, RunFacts, Technique};
use drover_qemu::bench;
use drover_qemu::metrics::{Clock, Samples};
use drover_qemu::qmp::QmpExt;
use drover_qemu::vm::{LocalLauncher, LocalVm};
use drover_testkit::{require, QEMU};
use std::path::Path;
use std::time::Duration;

mod common;

use common::{assert_no_qemu_left, launcher, tag};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Boots a source guest named `name` running `workload` and waits for its reports.
async fn boot(
    l: &LocalLauncher,
    name: &str,
    workload: &str,
    dir: &Path,
    clock: Clock,
    samples: &Samples,
) -> LocalVm {
    common::boot(l, &l.spec(name, workload, false), dir, clock, samples).await
}

/// Visits of a random page pattern that touch every page of a working set with near certainty:
/// after 20 x pages ops each page was missed with probability e^-20 (about 2e-9).
const RANDOM_SWEEP: u64 = 20;

/// After a run: the guest runs where it ended up and, in reports made there after the run, works
/// through its whole working set of `pages` (random pattern) with no integrity error.
///
/// When `migrate_to_new` returns, the other QEMU has been killed and its metrics reader dropped,
/// so reports stamped afterwards (with a margin for a reader that was mid-line) come from the QEMU
/// the guest runs in. The guest's error count is cumulative since boot.
async fn assert_alive_and_intact(vm: &LocalVm, samples: &Samples, clock: &Clock, pages: u64) {
    let status = vm.qmp.query_status().await.expect("query-status");
    assert!(status.running, "guest not running: {}", status.status);
    let after = clock.now_ms() + 100;
    let first = samples
        .wait_for(clock, after, 0, Duration::from_secs(30))
        .await
        .expect("reports from the QEMU the guest runs in");
    let target = first.ops + RANDOM_SWEEP * pages;
    let later = samples
        .wait_for(clock, after, target, Duration::from_secs(60))
        .await
        .unwrap_or_else(|| {
            panic!(
                "workload did not sweep its working set after the run: from {first:?} to {:?}",
                samples.last()
            )
        });
    assert_eq!(
        later.integrity_errors, 0,
        "memory integrity errors in reports made after the run: {later:?}"
    );
    eprintln!(
        "after the run: ops {} -> {}, integrity errors 0",
        first.ops, later.ops
    );
}

/// Pages of a `wss` working set.
fn pages(wss_mib: u64) -> u64 {
    (wss_mib << 20) / 4096
}

fn plan(technique: Technique) -> MigrationPlan {
    let mut p = MigrationPlan::fixed(technique);
    p.max_bandwidth_bps = Some(bench::UNCAPPED_BPS);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_technique_moves_a_memtouch_guest_intact() {
    require!(QEMU);
    let _serial = SERIAL.lock().await;
    let tag = tag("each");
    let l = launcher(128);
    let dir = tempfile::tempdir().expect("tempdir");
    for technique in Technique::CONCRETE {
        let clock = Clock::default();
        let samples = Samples::default();
        let name = format!("{tag}-{technique}");
        let src = boot(
            &l,
            &name,
            "memtouch:wss=32M,rate=max",
            &dir.path().join(format!("{technique}-a")),
            clock,
            &samples,
        )
        .await;
        let dest_spec = l.spec(&name, "memtouch:wss=32M,rate=max", true);
        let (vm, run) = src
            .migrate_to_new(
                &l,
                &dest_spec,
                &dir.path().join(format!("{technique}-b")),
                plan(technique),
                clock,
                samples.clone(),
            )
            .await
            .expect("migrate");
        assert_eq!(
            run.outcome.status,
            EndStatus::Completed,
            "{technique}: {:?}",
            run.outcome.error
        );
        assert!(run.outcome.vm_on_destination);
        assert!(
            vm.dir.ends_with(format!("{technique}-b")),
            "guest must now run on the destination"
        );
        assert!(run.dest_running_ms.is_some());
        assert_alive_and_intact(&vm, &samples, &clock, pages(32)).await;
        vm.kill().await;
    }
    assert_no_qemu_left(&tag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_ten_round_trips_per_technique() {
    require!(QEMU);
    let _serial = SERIAL.lock().await;
    let tag = tag("pingpong");
    let l = launcher(128);
    let dir = tempfile::tempdir().expect("tempdir");
    for technique in Technique::CONCRETE {
        let clock = Clock::default();
        let samples = Samples::default();
        let name = format!("{tag}-{technique}");
        let workload = "memtouch:wss=32M,rate=max";
        let mut vm = boot(
            &l,
            &name,
            workload,
            &dir.path().join(format!("{technique}-0")),
            clock,
            &samples,
        )
        .await;
        for hop in 1..=20 {
            let dest_dir = dir.path().join(format!("{technique}-{}", hop % 2));
            let (next, run) = vm
                .migrate_to_new(
                    &l,
                    &l.spec(&name, workload, true),
                    &dest_dir,
                    plan(technique),
                    clock,
                    samples.clone(),
                )
                .await
                .expect("migrate");
            assert_eq!(
                run.outcome.status,
                EndStatus::Completed,
                "{technique} hop {hop}: {:?}",
                run.outcome.error
            );
            vm = next;
        }
        assert_alive_and_intact(&vm, &samples, &clock, pages(32)).await;
        vm.kill().await;
    }
    assert_no_qemu_left(&tag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_guest_defeats_precopy_and_postcopy_completes() {
    require!(QEMU);
    let _serial = SERIAL.lock().await;
    let tag = tag("hot");
    let l = launcher(256);
    let dir = tempfile::tempdir().expect("tempdir");
    let workload = "memtouch:wss=128M,rate=max";
    let mut results: Vec<MigrationResult> = Vec::new();
    for technique in [Technique::Precopy, Technique::Postcopy] {
        let clock = Clock::default();
        let samples = Samples::default();
        let name = format!("{tag}-{technique}");
        let src = boot(
            &l,
            &name,
            workload,
            &dir.path().join(format!("{technique}-a")),
            clock,
            &samples,
        )
        .await;
        let mut p = plan(technique);
        p.max_bandwidth_bps = Some(50_000_000);
        p.watchdog.deadline_ms = 20_000;
        // Without throttling nothing can rescue pre-copy here (with it, auto-converge forces
        // convergence after ~30 s), so the outcome does not depend on the machine's speed.
        p.watchdog.throttle = None;
        let (vm, run) = src
            .migrate_to_new(
                &l,
                &l.spec(&name, workload, true),
                &dir.path().join(format!("{technique}-b")),
                p,
                clock,
                samples.clone(),
            )
            .await
            .expect("migrate");
        assert_alive_and_intact(&vm, &samples, &clock, pages(128)).await;
        let snapshot = samples.snapshot();
        results.push(MigrationResult::assemble(&RunFacts {
            requested: technique,
            chosen: technique,
            reason: "test",
            outcome: &run.outcome,
            dest_running_ms: run.dest_running_ms,
            pause_ms: run.pause_ms,
            samples: &snapshot,
        }));
        vm.kill().await;
    }
    let (pre, post) = (&results[0], &results[1]);
    assert_eq!(pre.status, EndStatus::Cancelled, "{pre:?}");
    assert!(!pre.converged);
    assert_ne!(
        pre.watchdog_action, "none",
        "the watchdog must act: {pre:?}"
    );
    assert!(pre.watchdog_action.ends_with("cancel"), "{pre:?}");
    // QEMU reports no RAM figures after the cancel; the record keeps what was sent.
    assert!(
        pre.transferred_bytes > 128 << 20 && pre.precopy_rounds > 1,
        "{pre:?}"
    );
    assert_eq!(post.status, EndStatus::Completed, "{post:?}");
    assert!(
        post.switchover_ms.is_some_and(|s| s <= post.total_ms),
        "{post:?}"
    );
    assert_no_qemu_left(&tag);
}

/// A network blip in post-copy (forced with `migrate-pause`) pauses both sides; the driver
/// recovers on a fresh socket and the guest finishes on the destination with memory intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_postcopy_is_recovered_without_losing_the_guest() {
    use drover_core::migration::MigrationStatus;
    use drover_qemu::driver::{self, DriverConfig, Endpoints};
    require!(QEMU);
    let _serial = SERIAL.lock().await;
    let tag = tag("recover");
    let l = launcher(256);
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::default();
    let samples = Samples::default();
    let workload = "memtouch:wss=128M,rate=max";
    let src = boot(&l, &tag, workload, &dir.path().join("a"), clock, &samples).await;
    let dst = l
        .launch(
            &l.spec(&tag, workload, true),
            &dir.path().join("b"),
            clock,
            samples.clone(),
        )
        .await
        .expect("launch destination");
    // migrate-recover must not wait behind a vCPU blocked on a missing page: out-of-band.
    assert!(
        dst.qmp.out_of_band() && src.qmp.out_of_band(),
        "QEMU offered no oob"
    );
    let ends = Endpoints {
        source: &src.qmp,
        dest: &dst.qmp,
        uri: format!("unix:{}", dir.path().join("b/migrate.sock").display()),
        recover_uri: format!("unix:{}", dir.path().join("b/recover.sock").display()),
    };
    let mut p = plan(Technique::Postcopy);
    // Slow enough that post-copy is still running when the blip comes.
    p.max_bandwidth_bps = Some(20_000_000);
    let config = DriverConfig {
        prefer_preempt: false,
        ..DriverConfig::default()
    };
    let blip = async {
        for _ in 0..400 {
            let status = src.qmp.query_migrate(0).await.map(|p| p.status);
            if status == Ok(Some(MigrationStatus::PostcopyActive)) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                return src.qmp.migrate_pause().await.is_ok();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    };
    let (run, paused) = tokio::join!(driver::migrate(&ends, p, &config, &clock, None), blip);
    let run = run.expect("migrate");
    assert!(paused, "the test could not pause the post-copy");
    assert_eq!(
        run.outcome.status,
        EndStatus::Completed,
        "{:?}",
        run.outcome.error
    );
    src.kill().await;
    assert_alive_and_intact(&dst, &samples, &clock, pages(128)).await;
    dst.kill().await;
    assert_no_qemu_left(&tag);
}

/// A destination QMP that stops answering on demand, as a dead link to its host would (errors
/// at once, so the driver keeps polling the source).
struct Unreachable<'a> {
    inner: &'a drover_qemu::qmp::QmpClient,
    cut: &'a std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl drover_qemu::qmp::Qmp for Unreachable<'_> {
    async fn execute(
        &self,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, drover_qemu::qmp::QmpError> {
        if self.cut.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(drover_qemu::qmp::QmpError::Io(
                "destination unreachable (test)".into(),
            ));
        }
        self.inner.execute(command, arguments).await
    }

    fn take_events(&self) -> Vec<drover_qemu::qmp::QmpEvent> {
        self.inner.take_events()
    }
}

fn signal(pid: Option<u32>, sig: &str) {
    let pid = pid.expect("destination pid").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// The destination freezes mid post-copy (its stream stops moving): the stall watchdog pauses
/// the migration and reports it paused, never cancelled; nothing is lost, and recovering it by
/// hand finishes the move with the guest's memory intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_postcopy_is_paused_and_can_still_be_recovered() {
    use drover_core::migration::MigrationStatus;
    use drover_qemu::driver::{self, DriverConfig, Endpoints};
    use std::sync::atomic::{AtomicBool, Ordering};
    require!(QEMU);
    let _serial = SERIAL.lock().await;
    let tag = tag("stall");
    let l = launcher(256);
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::default();
    let samples = Samples::default();
    let workload = "memtouch:wss=128M,rate=max";
    let src = boot(&l, &tag, workload, &dir.path().join("a"), clock, &samples).await;
    let dst = l
        .launch(
            &l.spec(&tag, workload, true),
            &dir.path().join("b"),
            clock,
            samples.clone(),
        )
        .await
        .expect("launch destination");
    let cut = AtomicBool::new(false);
    let dest = Unreachable {
        inner: &dst.qmp,
        cut: &cut,
    };
    let recover_uri = format!("unix:{}", dir.path().join("b/recover.sock").display());
    let ends = Endpoints {
        source: &src.qmp,
        dest: &dest,
        uri: format!("unix:{}", dir.path().join("b/migrate.sock").display()),
        recover_uri: recover_uri.clone(),
    };
    let mut p = plan(Technique::Postcopy);
    p.max_bandwidth_bps = Some(20_000_000);
    p.postcopy_stall_ms = 3_000;
    let config = DriverConfig {
        prefer_preempt: false,
        ..DriverConfig::default()
    };
    let dest_pid = dst.process.pid();
    let freeze = async {
        for _ in 0..400 {
            let status = src.qmp.query_migrate(0).await.map(|p| p.status);
            if status == Ok(Some(MigrationStatus::PostcopyActive)) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                cut.store(true, Ordering::SeqCst);
                signal(dest_pid, "-STOP");
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    };
    let (run, frozen) = tokio::join!(driver::migrate(&ends, p, &config, &clock, None), freeze);
    let run = run.expect("migrate");
    assert!(frozen, "the test could not freeze the post-copy");
    signal(dest_pid, "-CONT");
    cut.store(false, Ordering::SeqCst);
    let o = &run.outcome;
    assert_eq!(o.status, EndStatus::Paused, "{:?}", o.error);
    assert!(o.vm_on_destination);
    assert!(
        o.error.as_deref().unwrap_or("").contains("moved no byte"),
        "{:?}",
        o.error
    );
    // The destination was unreachable at the end, but the guest had run there: still known.
    let record = run.result(&samples.snapshot());
    assert!(
        record.switchover_ms.is_some_and(|s| s <= record.total_ms),
        "{record:?}"
    );
    let source_status = src.qmp.query_migrate(0).await.expect("source").status;
    assert_eq!(source_status, Some(MigrationStatus::PostcopyPaused));

    // Recoverable: the destination sees the cut once thawed; resume on a fresh socket.
    let mut dest_paused = false;
    for _ in 0..400 {
        let s = dst.qmp.query_migrate(0).await.expect("destination").status;
        if s == Some(MigrationStatus::PostcopyPaused) {
            dest_paused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(dest_paused, "the destination never noticed the pause");
    dst.qmp
        .migrate_recover(&recover_uri)
        .await
        .expect("recover");
    src.qmp.migrate_resume(&recover_uri).await.expect("resume");
    let mut completed = false;
    for _ in 0..2_400 {
        let s = src.qmp.query_migrate(0).await.expect("source").status;
        if s == Some(MigrationStatus::Completed) {
            completed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(completed, "the recovered post-copy did not complete");
    src.kill().await;
    assert_alive_and_intact(&dst, &samples, &clock, pages(128)).await;
    dst.kill().await;
    assert_no_qemu_left(&tag);
}
