//! End to end with real QEMU (TCG) on loopback: two agents in this process, each on its own
//! tokio runtime so one can be "killed" (runtime shut down: every task, socket and QMP session
//! dropped at once, like a kill -9) while its QEMUs keep running.
//!
//! Needs qemu-system-x86_64 (a failure under CI when missing, a loud skip elsewhere) and the
//! guest image inputs (scripts/setup).

use drover_agent::{procfs, start, AgentConfig};
use drover_api::{
    AgentClient, AgentUrl, MigrationRecord, MigrationRequest, MigrationState, VmConfig, VmStatus,
    VmView,
};
use drover_core::migration::EndStatus;
use drover_core::migration::{PlanKnobs, Technique};
use drover_qemu::image::GuestImage;
use drover_qemu::launcher::Accel;
use drover_testkit::{require, QEMU};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Real-QEMU tests share 2 cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());
const TOKEN: &str = "e2e-token";
/// A sequential sweep, so `WSS_PAGES` ops after a point in time mean every page of the working
/// set was verified (and rewritten) after it.
const WORKLOAD: &str = "memtouch:wss=32M,pattern=seq";
const WSS_PAGES: u64 = (32 << 20) / 4096;

fn client(url: &str) -> AgentClient {
    AgentClient::new(AgentUrl::parse(url).expect("agent URL"), TOKEN)
}

fn vm_config(name: &str, workload: &str) -> VmConfig {
    VmConfig {
        name: name.into(),
        vcpus: 1,
        memory_bytes: 128 << 20,
        workload: workload.into(),
        disk: None,
        nic: None,
    }
}

/// Kills every QEMU recorded in the state dirs, however the test ends.
struct QemuGuard(Vec<PathBuf>);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        for dir in &self.0 {
            let Ok(store) = drover_agent::store::Store::open(dir) else {
                continue;
            };
            for vm in store.load_vms().unwrap_or_default() {
                if procfs::is_alive(vm.pid, &vm.config.name) {
                    let _ = procfs::signal(vm.pid, libc::SIGKILL);
                }
            }
        }
    }
}

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
        let mut c = AgentConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            state_dir.to_path_buf(),
            TOKEN.into(),
        );
        c.accel = Accel::Tcg;
        c.image = Some(image.clone());
        c.dirty_interval = Duration::from_secs(5);
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

fn image() -> GuestImage {
    drover_qemu::image::ensure_image(&drover_qemu::image::NoProgress)
        .expect("guest image (run scripts/setup)")
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
        let created = ca
            .create_vm(&vm_config("mt1", WORKLOAD))
            .await
            .expect("create");
        assert_eq!(created.status, VmStatus::Running);
        let dup = ca
            .create_vm(&vm_config("mt1", "idle"))
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
