//! End to end with real QEMU (TCG) on loopback: two agents in this process, each on its own
//! tokio runtime so one can be "killed" (runtime shut down: every task, socket and QMP session
//! dropped at once, like a kill -9) while its QEMUs keep running.
//!
//! Needs qemu-system-x86_64 (a failure under CI when missing, a loud skip elsewhere) and the
//! guest image inputs (scripts/setup).

use common::{client, image, tcg_config, vm, QemuGuard};
use drover_agent::{procfs, start};
use drover_api::metrics::{DemandSource, VmMetrics};
use drover_api::{
    AgentClient, MigrationRecord, MigrationRequest, MigrationState, VmStatus, VmView,
};
use drover_core::migration::EndStatus;
use drover_core::migration::{PlanKnobs, Technique};
use drover_qemu::image::GuestImage;
use drover_testkit::{require, QEMU};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

mod common;

/// Real-QEMU tests share 2 cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());
/// A sequential sweep, so `WSS_PAGES` ops after a point in time mean every page of the working
/// set was verified (and rewritten) after it.
const WORKLOAD: &str = "memtouch:wss=32M,pattern=seq";
const WSS_PAGES: u64 = (32 << 20) / 4096;

/// An agent on its own runtime.
struct TestAgent {
    rt: Option<tokio::runtime::Runtime>,
    url: String,
}

impl TestAgent {
    fn start(state_dir: &Path, image: &GuestImage) -> TestAgent {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut c = tcg_config(state_dir, image);
        c.dirty_interval = Duration::from_secs(5);
        c.sample_interval = Duration::from_secs(1);
        let agent = rt.block_on(start(c)).expect("agent starts");
        TestAgent {
            url: format!("http://{}", agent.addr),
            rt: Some(rt),
        }
    }

    /// Drops everything the agent had, abruptly; its QEMUs are not told.
    fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_reporting(c: &AgentClient, name: &str, min_ops: u64, timeout: Duration) -> VmView {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = c.get_vm(name).await.expect("get vm");
        let fresh = v
            .workload_report
            .last_report_age_ms
            .is_some_and(|a| a < 3000);
        if v.status == VmStatus::Running && fresh && v.workload_report.ops >= min_ops {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} not reporting: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the agent at `c` has seen `name` do `advance` ops more than in the first report it
/// received from it, then checks the guest counted no integrity error. An agent holds only the
/// reports of its own QEMU, so all of them were made after the VM arrived there (or after the
/// agent re-attached to it); the guest's error count is cumulative since boot, so a zero here
/// also covers everything before.
async fn assert_works_intact(c: &AgentClient, name: &str, advance: u64) -> VmView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let first = loop {
        let samples = c.samples(name).await.expect("samples");
        if let Some(first) = samples.first() {
            break *first;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: no report on {}",
            c.base()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let v = wait_reporting(c, name, first.ops + advance, Duration::from_secs(60)).await;
    assert_eq!(
        v.workload_report.integrity_errors,
        0,
        "{name} on {}: {v:?}",
        c.base()
    );
    eprintln!(
        "{name} on {}: ops {} -> {}, integrity errors 0",
        c.base(),
        first.ops,
        v.workload_report.ops
    );
    v
}

async fn migrate(
    from: &AgentClient,
    to: &AgentClient,
    name: &str,
    technique: &str,
) -> MigrationRecord {
    let started = from
        .migrate(
            name,
            &MigrationRequest {
                id: None,
                to: to.base().clone(),
                technique: technique.parse().expect("technique"),
                measure: false,
                knobs: PlanKnobs::default(),
            },
        )
        .await
        .expect("migration accepted");
    // The VM is busy meanwhile.
    let err = from
        .delete_vm(name)
        .await
        .expect_err("busy VM cannot be deleted");
    assert_eq!(err.status(), Some(409), "{err}");
    let done = from
        .wait_migration(&started.id, Duration::from_secs(180))
        .await
        .expect("poll");
    assert!(done.state.is_final(), "{done:?}");
    eprintln!(
        "{technique}: {}",
        serde_json::to_string(&done).unwrap_or_default()
    );
    // Kept: listed by the source afterwards.
    assert!(from
        .migrations()
        .await
        .expect("list")
        .iter()
        .any(|m| m.id == done.id));
    done
}

#[test]
fn vm_lifecycle_migrations_both_ways_and_agent_restart() {
    require!(QEMU);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Stopped QEMUs are reaped here, not left as zombies of an init that may not reap.
    procfs::become_subreaper();
    let image = image();
    let dir = tempfile::Builder::new()
        .prefix("dra")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let _guard = QemuGuard(vec![dir_a.clone(), dir_b.clone()]);
    let mut a = TestAgent::start(&dir_a, &image);
    let b = TestAgent::start(&dir_b, &image);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let ca = client(&a.url);
        let cb = client(&b.url);
        let created = ca.create_vm(&vm("mt1", WORKLOAD)).await.expect("create");
        assert_eq!(created.status, VmStatus::Running);
        let dup = ca
            .create_vm(&vm("mt1", "idle"))
            .await
            .expect_err("duplicate");
        assert_eq!(dup.status(), Some(409));
        wait_reporting(&ca, "mt1", 1, Duration::from_secs(60)).await;

        // Pre-copy A -> B.
        let m = migrate(&ca, &cb, "mt1", "precopy").await;
        assert_eq!(m.state, MigrationState::Completed, "{m:?}");
        assert!(m.vm_on_destination);
        let r = m.result.as_ref().expect("result record");
        assert_eq!(r.status, EndStatus::Completed);
        assert!(
            ca.list_vms().await.expect("list").is_empty(),
            "source forgot the VM"
        );
        let on_b = assert_works_intact(&cb, "mt1", WSS_PAGES).await;
        assert_eq!(on_b.migration, None, "committed on the destination");

        // Post-copy B -> A.
        let m = migrate(&cb, &ca, "mt1", "postcopy").await;
        assert_eq!(m.state, MigrationState::Completed, "{m:?}");
        assert!(cb.list_vms().await.expect("list").is_empty());
        assert_works_intact(&ca, "mt1", WSS_PAGES).await;
    });

    // Kill agent A abruptly; its VM keeps running and is re-attached by a new agent.
    let pid = rt.block_on(async { client(&a.url).get_vm("mt1").await.expect("get").pid });
    a.kill();
    std::thread::sleep(Duration::from_millis(500));
    assert!(procfs::is_alive(pid, "mt1"), "QEMU died with its agent");
    let a2 = TestAgent::start(&dir_a, &image);
    rt.block_on(async {
        let ca = client(&a2.url);
        let vms = ca.list_vms().await.expect("list");
        assert_eq!(vms.len(), 1, "{vms:?}");
        assert_eq!(
            (vms[0].name.as_str(), vms[0].pid, vms[0].status),
            ("mt1", pid, VmStatus::Running)
        );
        let v = assert_works_intact(&ca, "mt1", WSS_PAGES).await;
        assert_eq!(v.qemu_status.as_deref(), Some("running"));
        // The kept migration records survived the restart too.
        assert_eq!(ca.migrations().await.expect("migrations").len(), 1);

        // The re-attached VM migrates like any other: hybrid out, auto back with the workload
        // measured across both hosts for the record.
        let cb = client(&b.url);
        let m = migrate(&ca, &cb, "mt1", "hybrid").await;
        assert_eq!(m.state, MigrationState::Completed, "{m:?}");
        assert_works_intact(&cb, "mt1", WSS_PAGES).await;
        // A full "before" window of reports on this host.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let started = cb
            .migrate(
                "mt1",
                &MigrationRequest {
                    id: None,
                    to: ca.base().clone(),
                    technique: Technique::Auto,
                    measure: true,
                    knobs: PlanKnobs {
                        bandwidth_bps: Some(200_000_000),
                        ..PlanKnobs::default()
                    },
                },
            )
            .await
            .expect("accepted");
        let m = cb
            .wait_migration(&started.id, Duration::from_secs(180))
            .await
            .expect("poll");
        eprintln!("auto: {}", serde_json::to_string(&m).unwrap_or_default());
        assert_eq!(m.state, MigrationState::Completed, "{m:?}");
        let r = m.result.as_ref().expect("result");
        assert_ne!(r.chosen, drover_core::migration::Technique::Auto);
        assert!(
            r.throughput_before.is_some_and(|t| t > 0.0)
                && r.throughput_after.is_some_and(|t| t > 0.0),
            "{r:?}"
        );
        // The record merged the destination's reports from its measurement window; the claim
        // rests on a full sweep reported by the destination itself.
        assert_eq!(r.integrity_errors, 0, "{r:?}");
        assert_works_intact(&ca, "mt1", WSS_PAGES).await;

        ca.delete_vm("mt1").await.expect("delete");
        assert!(ca.list_vms().await.expect("list").is_empty());
    });
    assert!(!procfs::is_alive(pid, "mt1"), "delete stops QEMU");
    drop(b);
}

/// Waits (60 s at most, then fails) until the agent's metrics of VM `name` satisfy `cond`.
async fn wait_metrics(
    c: &AgentClient,
    name: &str,
    what: &str,
    cond: impl Fn(&VmMetrics) -> bool,
) -> VmMetrics {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = c.metrics().await.expect("metrics");
        let vm = m.vms.into_iter().find(|v| v.name == name);
        if let Some(vm) = vm.filter(|v| cond(v)) {
            eprintln!(
                "{name}: {what}: use {:.2} cores, demand {:.2} cores ({:?}), guest {:?}%",
                vm.cpu_cores, vm.cpu_demand_cores, vm.cpu_demand_source, vm.workload_demand_pct
            );
            return vm;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: not reached in 60 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Changes the workload and waits until the guest reports running it.
async fn switch_workload(c: &AgentClient, name: &str, spec: &str) -> VmView {
    let accepted = c.set_workload(name, spec).await.expect("change accepted");
    assert_eq!(accepted.workload, spec);
    let v = c
        .wait_workload(name, Duration::from_secs(30))
        .await
        .expect("poll");
    assert!(!v.workload_pending, "the guest did not take {spec}: {v:?}");
    assert_eq!(v.workload_report.spec.as_deref(), Some(spec), "{v:?}");
    assert_eq!(v.workload_report.refused, None, "{v:?}");
    v
}

/// A cpu workload's demand raised and lowered on command, in place: the guest reports the new
/// demand and the host measures its use follow it; the change is recorded, so an agent
/// restarted in between knows it and can change it again.
#[test]
fn a_guest_changes_its_cpu_demand_on_command() {
    require!(QEMU);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    procfs::become_subreaper();
    let image = image();
    let dir = tempfile::Builder::new()
        .prefix("drd")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let state = dir.path().join("a");
    let _guard = QemuGuard(vec![state.clone()]);
    let mut a = TestAgent::start(&state, &image);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let high = rt.block_on(async {
        let c = client(&a.url);
        c.create_vm(&vm("cpu1", "cpu:demand=10"))
            .await
            .expect("create");
        wait_reporting(&c, "cpu1", 1, Duration::from_secs(60)).await;
        // The first readings after boot still carry the boot's and the calibration's work
        // (0.9 cores seen on a loaded CI host): the baseline is a reading once that has
        // passed, which for a tenth of one vCPU under TCG is well under half a core.
        let low = wait_metrics(&c, "cpu1", "demand 10%, use settled under 0.5 cores", |m| {
            m.workload_demand_pct == Some(10.0) && m.cpu_cores > 0.0 && m.cpu_cores < 0.5
        })
        .await;
        assert_eq!(low.cpu_demand_source, DemandSource::Guest);

        let v = switch_workload(&c, "cpu1", "cpu:demand=90").await;
        assert!(
            v.workload_report.control_seq.is_some_and(|s| s > 0),
            "{v:?}"
        );
        // The demand figures follow the spec within one workload period (100 ms): waited
        // for below.
        let high = wait_metrics(&c, "cpu1", "demand 90%, use up", |m| {
            m.workload_demand_pct == Some(90.0) && m.cpu_cores > low.cpu_cores + 0.2
        })
        .await;
        assert!(high.cpu_demand_cores >= 0.9, "{high:?}");
        // The guest says how much work it was asked for: never less than it did.
        let samples = c.samples("cpu1").await.expect("samples");
        let last = samples.last().expect("a sample");
        assert!(last.demanded_ops.is_some_and(|d| d >= last.ops), "{last:?}");
        // Another kind of workload is refused, and nothing changes.
        let e = c
            .set_workload("cpu1", "memtouch:wss=8M")
            .await
            .expect_err("kind change");
        assert_eq!(e.status(), Some(409), "{e}");
        assert_eq!(
            c.get_vm("cpu1").await.expect("get").workload,
            "cpu:demand=90"
        );
        high
    });

    // The agent dies; the one that re-attaches knows the recorded workload.
    a.kill();
    let a2 = TestAgent::start(&state, &image);
    rt.block_on(async {
        let c = client(&a2.url);
        let v = wait_reporting(&c, "cpu1", 1, Duration::from_secs(60)).await;
        assert_eq!(v.workload, "cpu:demand=90");
        assert!(!v.workload_pending, "{v:?}");
        switch_workload(&c, "cpu1", "cpu:demand=10").await;
        wait_metrics(&c, "cpu1", "demand 10% again, use down", |m| {
            m.workload_demand_pct == Some(10.0) && m.cpu_cores < high.cpu_cores - 0.2
        })
        .await;
        c.delete_vm("cpu1").await.expect("delete");
    });
}
