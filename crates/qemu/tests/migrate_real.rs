//! Real migrations under QEMU (TCG): every technique moves a memtouch guest with its memory
//! intact, ping-pongs survive, and a guest dirtying faster than the link defeats pre-copy (the
//! watchdog acts) while post-copy completes.
//!
//! Needs qemu-system-x86_64 and the guest image inputs (run scripts/setup). Tests run one at a
//! time (the machine has two cores) and each checks it left no QEMU behind.

use drover_core::migration::{EndStatus, MigrationPlan, MigrationResult, RunFacts, Technique};
use drover_qemu::bench;
use drover_qemu::image::{ensure_image, GuestImage, NoProgress};
use drover_qemu::launcher::Accel;
use drover_qemu::metrics::{Clock, Samples};
use drover_qemu::qmp::QmpExt;
use drover_qemu::vm::{LocalLauncher, LocalVm};
use std::path::Path;
use std::time::Duration;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn image() -> GuestImage {
    ensure_image(&NoProgress).expect("guest image (run scripts/setup)")
}

fn launcher(memory_mib: u64) -> LocalLauncher {
    LocalLauncher {
        qemu_binary: "qemu-system-x86_64".into(),
        accel: Accel::Tcg,
        image: image(),
        vcpus: 1,
        memory_bytes: memory_mib << 20,
        start_timeout: Duration::from_secs(20),
    }
}

/// Names carry the test's tag so leftovers can be found.
fn tag(test: &str) -> String {
    format!("t{}-{test}", std::process::id())
}

/// Fails if any QEMU whose command line mentions `tag` is still running.
fn assert_no_qemu_left(tag: &str) {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains("qemu-system") && text.contains(tag) {
            left.push(text);
        }
    }
    assert!(left.is_empty(), "QEMU processes left behind: {left:?}");
}

async fn boot(
    l: &LocalLauncher,
    name: &str,
    workload: &str,
    dir: &Path,
    clock: Clock,
    samples: &Samples,
) -> LocalVm {
    let vm = l
        .launch(&l.spec(name, workload, false), dir, clock, samples.clone())
        .await
        .expect("launch source");
    samples
        .wait_for(&clock, 0, 0, Duration::from_secs(60))
        .await
        .expect("workload reports");
    vm
}

/// After a run: the guest runs where it should and keeps working with intact memory.
async fn assert_alive_and_intact(vm: &LocalVm, samples: &Samples, clock: &Clock) {
    let status = vm.qmp.query_status().await.expect("query-status");
    assert!(status.running, "guest not running: {}", status.status);
    let now = clock.now_ms();
    let before = samples.last().expect("samples").ops;
    let later = samples
        .wait_for(clock, now + 500, before + 1, Duration::from_secs(10))
        .await
        .expect("workload keeps making progress");
    assert!(later.ops > before);
    let errors = samples
        .snapshot()
        .iter()
        .map(|s| s.integrity_errors)
        .max()
        .unwrap_or(0);
    assert_eq!(errors, 0, "memory integrity errors after migration");
}

fn plan(technique: Technique) -> MigrationPlan {
    let mut p = MigrationPlan::fixed(technique);
    p.max_bandwidth_bps = Some(bench::UNCAPPED_BPS);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_technique_moves_a_memtouch_guest_intact() {
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
        assert_alive_and_intact(&vm, &samples, &clock).await;
        vm.kill().await;
    }
    assert_no_qemu_left(&tag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_ten_round_trips_per_technique() {
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
        assert_alive_and_intact(&vm, &samples, &clock).await;
        vm.kill().await;
    }
    assert_no_qemu_left(&tag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_guest_defeats_precopy_and_postcopy_completes() {
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
        assert_alive_and_intact(&vm, &samples, &clock).await;
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
    assert_eq!(post.status, EndStatus::Completed, "{post:?}");
    assert!(post.switchover_ms.is_some());
    assert_no_qemu_left(&tag);
}

/// A network blip in post-copy (forced with `migrate-pause`) pauses both sides; the driver
/// recovers on a fresh socket and the guest finishes on the destination with memory intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_postcopy_is_recovered_without_losing_the_guest() {
    use drover_core::migration::MigrationStatus;
    use drover_qemu::driver::{self, DriverConfig, Endpoints};
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
    assert_alive_and_intact(&dst, &samples, &clock).await;
    dst.kill().await;
    assert_no_qemu_left(&tag);
}
