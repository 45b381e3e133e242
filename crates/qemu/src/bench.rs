//! `migrate-bench`: boots a VM with a workload and a destination QEMU on this machine, migrates
//! with each requested technique, and reports one [`MigrationResult`] per run.
//!
//! One run: boot source and destination -> wait for the workload to report -> (auto only)
//! measure the dirty rate and let the cost model choose -> keep 3 s of "before" samples ->
//! migrate -> keep sampling until 3 s past the measurement window -> check the guest reported
//! from where it runs after the migration -> kill both QEMUs.
//!
//! Stopping is clean at any point: every QEMU a run starts is owned by a [`LocalVm`] (killed
//! and reaped when dropped) inside the run's temporary directory (removed when dropped, after
//! the QEMUs), so an error, a panic or a caller dropping the future (the CLI does on SIGINT and
//! SIGTERM) leaves no process and no directory behind.

use crate::image::GuestImage;
use crate::launcher::Accel;
use crate::metrics::{Clock, Samples};
use crate::qmp::{Qmp, QmpError};
use crate::vm::{LocalLauncher, VmError};
use drover_core::migration::result::SIDE_WINDOW_MS;
use drover_core::migration::{
    CostParams, KnobError, MigrationPlan, MigrationResult, OpsSample, PlanKnobs, Technique,
    VmProfile,
};
use serde::Serialize;
use std::time::Duration;
use thiserror::Error;

/// Assumed migration bandwidth when no cap is set: what QEMU's migration thread moves over a
/// local unix socket under TCG on this class of machine (measured; see BENCHMARKS.md).
pub const LOCAL_LINK_BPS: u64 = 1_000_000_000;
pub use drover_core::migration::UNCAPPED_BPS;

/// Most runs per technique one bench may ask for.
pub const MAX_REPEAT: u32 = 1_000;

#[derive(Debug, Error)]
pub enum BenchError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("the guest workload did not report within {0} s; guest console ends with: {1}")]
    NoReports(u64, String),
    #[error(
        "the guest sent no report from the {host} after the migration, so its integrity count \
         would only cover the time before; guest console ends with: {console}"
    )]
    NoReportsAfterRun { host: &'static str, console: String },
    #[error("I/O error: {0}")]
    Io(String),
    /// The VM's size or workload breaks the guest's own rules.
    #[error(transparent)]
    Size(#[from] drover_guest::fit::FitError),
    #[error("repeat {0}: expected 1 to {MAX_REPEAT} runs per technique")]
    Repeat(u32),
    #[error("dirty-rate measurement failed: {0}")]
    DirtyRate(QmpError),
    /// A migration setting outside the limits the agent's API enforces too.
    #[error(transparent)]
    Knobs(#[from] KnobError),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub qemu_binary: String,
    pub accel: Accel,
    pub vcpus: u32,
    pub memory_bytes: u64,
    pub workload: String,
    pub techniques: Vec<Technique>,
    pub repeat: u32,
    /// Bandwidth cap, downtime limit, watchdog deadline, hybrid switch point.
    pub knobs: PlanKnobs,
    pub cost: CostParams,
}

impl BenchConfig {
    pub fn new(image_memory: u64, workload: &str) -> Self {
        BenchConfig {
            qemu_binary: "qemu-system-x86_64".into(),
            accel: Accel::Auto,
            vcpus: 1,
            memory_bytes: image_memory,
            workload: workload.to_string(),
            techniques: Technique::ALL.to_vec(),
            repeat: 1,
            knobs: PlanKnobs {
                assumed_link_bps: LOCAL_LINK_BPS,
                ..PlanKnobs::default()
            },
            cost: CostParams::default(),
        }
    }

    /// Every check the agent's API applies to the same settings, before anything boots: the
    /// migration knobs' limits ([`PlanKnobs::validate`]) and the VM's size with its workload
    /// (the guest's own rules, [`drover_guest::fit::check_vm`], so a memory out of range is
    /// refused as the memory's fault with the API's message), plus the run count. Pure.
    ///
    /// # Errors
    /// The first setting out of range.
    pub fn validate(&self) -> Result<(), BenchError> {
        self.knobs.validate()?;
        drover_guest::fit::check_vm(self.vcpus, self.memory_bytes, &self.workload)?;
        if !(1..=MAX_REPEAT).contains(&self.repeat) {
            return Err(BenchError::Repeat(self.repeat));
        }
        Ok(())
    }
}

/// One line of bench output: the run's conditions and its record.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub run: u32,
    pub memory_bytes: u64,
    pub workload: String,
    pub bandwidth_bps: Option<u64>,
    #[serde(flatten)]
    pub result: MigrationResult,
}

/// Runs every technique `repeat` times, calling `report` after each run.
pub async fn run_bench(
    config: &BenchConfig,
    image: &GuestImage,
    mut report: impl FnMut(&BenchRow),
) -> Result<Vec<BenchRow>, BenchError> {
    // A library caller must not boot two VMs only to have QEMU refuse a setting.
    config.validate()?;
    let mut rows = Vec::new();
    for run in 1..=config.repeat {
        for technique in &config.techniques {
            let result = run_one(config, image, *technique).await?;
            let row = BenchRow {
                run,
                memory_bytes: config.memory_bytes,
                workload: config.workload.clone(),
                bandwidth_bps: config.knobs.bandwidth_bps,
                result,
            };
            report(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

fn launcher(config: &BenchConfig, image: &GuestImage) -> LocalLauncher {
    LocalLauncher {
        qemu_binary: config.qemu_binary.clone(),
        accel: config.accel,
        image: image.clone(),
        vcpus: config.vcpus,
        memory_bytes: config.memory_bytes,
        start_timeout: Duration::from_secs(20),
    }
}

/// One migration with one technique, start to clean-up.
pub async fn run_one(
    config: &BenchConfig,
    image: &GuestImage,
    technique: Technique,
) -> Result<MigrationResult, BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("drover-bench-")
        .tempdir()
        .map_err(|e| BenchError::Io(e.to_string()))?;
    let clock = Clock::default();
    let samples = Samples::default();
    let launcher = launcher(config, image);
    let src_dir = dir.path().join("src");
    let source = launcher
        .launch(
            &launcher.spec("bench-src", &config.workload, false),
            &src_dir,
            clock,
            samples.clone(),
        )
        .await?;
    let first = samples
        .wait_for(&clock, 0, 0, Duration::from_secs(60))
        .await;
    let Some(first) = first else {
        let console = crate::launcher::log_tail(&src_dir.join("console.log"), 5);
        return Err(BenchError::NoReports(60, console));
    };
    // A slow workload's first report may still show no ops; wait for one that does (idle never
    // counts, hence the short bound).
    let first = samples
        .wait_for(&clock, 0, 1, Duration::from_secs(5))
        .await
        .unwrap_or(first);
    let plan = plan_for(config, technique, &source.qmp).await?;
    // Three full seconds of "before" after the first report.
    let before_until = first.host_ms + SIDE_WINDOW_MS + 200;
    tokio::time::sleep(Duration::from_millis(
        before_until.saturating_sub(clock.now_ms()),
    ))
    .await;
    let dest_spec = launcher.spec("bench-dst", &config.workload, true);
    let (vm, run) = source
        .migrate_to_new(
            &launcher,
            &dest_spec,
            &dir.path().join("dst"),
            plan,
            clock,
            samples.clone(),
        )
        .await?;
    let span = run.span();
    let window_end = span.samples_until_ms() + 300;
    tokio::time::sleep(Duration::from_millis(
        window_end.saturating_sub(clock.now_ms()),
    ))
    .await;
    let snapshot = samples.snapshot();
    if !reported_after(&snapshot, span.over_ms()) {
        let (host, run_dir) = match run.outcome.vm_on_destination {
            true => ("destination", dir.path().join("dst")),
            false => ("source", src_dir),
        };
        let console = crate::launcher::log_tail(&run_dir.join("console.log"), 5);
        vm.kill().await;
        return Err(BenchError::NoReportsAfterRun { host, console });
    }
    vm.kill().await;
    Ok(run.result(&snapshot))
}

/// Whether a report arrived well after the run ended at `ended_ms`. The QEMU the guest left was
/// paused (then killed) by then, so such a report comes from where the guest runs, and the
/// guest's cumulative integrity count in it covers the time after the switch too. The second of
/// margin keeps a line that was in flight from the other side from counting.
fn reported_after(samples: &[OpsSample], ended_ms: u64) -> bool {
    samples
        .last()
        .is_some_and(|s| s.host_ms > ended_ms + REPORT_MARGIN_MS)
}

const REPORT_MARGIN_MS: u64 = 1_000;

async fn plan_for(
    config: &BenchConfig,
    technique: Technique,
    source: &dyn Qmp,
) -> Result<MigrationPlan, BenchError> {
    let profile = match technique {
        Technique::Auto => Some(profile(config, source).await?),
        _ => None,
    };
    // Here the cap is QEMU's max-bandwidth, which neither the stop-and-copy nor
    // postcopy-preempt's fault channel obeys: both move at local speed.
    let cost = CostParams {
        unthrottled_bps: Some(LOCAL_LINK_BPS as f64),
        ..config.cost
    };
    Ok(MigrationPlan::build(
        technique,
        &config.knobs,
        profile.as_ref(),
        &cost,
    ))
}

/// Measures the VM for `auto` (see [`crate::profile`]).
pub async fn profile(config: &BenchConfig, qmp: &dyn Qmp) -> Result<VmProfile, BenchError> {
    crate::profile::profile_vm(qmp, config.memory_bytes)
        .await
        .map_err(BenchError::DirtyRate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_guest::fit::Setting;

    fn at(host_ms: u64) -> OpsSample {
        OpsSample {
            host_ms,
            ops: host_ms,
            integrity_errors: 0,
        }
    }

    #[test]
    fn only_a_report_well_after_the_run_counts() {
        assert!(!reported_after(&[], 5_000));
        assert!(!reported_after(&[at(1_000), at(5_900)], 5_000));
        assert!(!reported_after(&[at(6_000)], 5_000));
        assert!(reported_after(&[at(1_000), at(6_001)], 5_000));
    }

    fn config() -> BenchConfig {
        let mut c = BenchConfig::new(256 << 20, "memtouch:wss=128M,rate=max");
        // Should anything get as far as booting, it fails differently and the test says so.
        c.qemu_binary = "/nonexistent/qemu-system-x86_64".into();
        c
    }

    async fn refused(c: &BenchConfig) -> BenchError {
        let image = GuestImage {
            kernel: "/nonexistent/vmlinuz".into(),
            initrd: "/nonexistent/initrd".into(),
        };
        let mut rows = 0;
        let err = run_bench(c, &image, |_| rows += 1)
            .await
            .expect_err("refused");
        assert_eq!(rows, 0);
        err
    }

    #[tokio::test]
    async fn bad_settings_are_refused_before_anything_boots() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.knobs.downtime_limit_ms = 3_000_000;
        let err = refused(&c).await;
        assert!(
            matches!(&err, BenchError::Knobs(k) if k.field == "downtime_limit_ms"),
            "{err}"
        );
        let mut c = config();
        c.knobs.bandwidth_bps = Some(100);
        assert!(refused(&c)
            .await
            .to_string()
            .contains("at least 125000 bytes/s"));
        let mut c = config();
        c.workload = "memtouch:wss=512M".into();
        let err = refused(&c).await;
        assert!(
            matches!(&err, BenchError::Size(f) if f.setting() == Setting::Workload),
            "{err}"
        );
        let mut c = config();
        c.memory_bytes = 48 << 20;
        let err = refused(&c).await;
        assert!(
            matches!(&err, BenchError::Size(f) if f.setting() == Setting::Memory),
            "the memory is at fault, not the workload: {err}"
        );
        assert!(
            err.to_string()
                .starts_with("memory_bytes 50331648: expected 64 MiB"),
            "{err}"
        );
        let mut c = config();
        c.repeat = 0;
        assert!(matches!(refused(&c).await, BenchError::Repeat(0)));
    }
}
