//! Measures a running VM for the cost model, the way an agent would on a real host: QEMU's
//! page-sampling dirty-rate measurement (cheap: it hashes a few thousand sampled pages twice and
//! never write-protects guest memory), over a short and a one-second window; and, for the WAN
//! fraction model, memory over time with the disk's rates and locality ([`profile_wan`]): one
//! page-sampling window a second, then one long window whose count of distinct dirtied pages
//! sizes the working set (see `drover_core::migration::wan`'s memory module).

use crate::disk::DiskNodes;
use crate::disk_trace::{self, DiskTraceError};
use crate::qmp::{Qmp, QmpError, QmpExt};
use drover_core::migration::wan::{
    count_regions, DirtyWindow, DiskProfile, MemoryProfile, WanError, WanProfile,
};
use drover_core::migration::VmProfile;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// Short window: how fast pages get dirtied.
pub const SHORT_WINDOW_MS: u64 = 200;
/// Long window: how much memory is hot.
pub const LONG_WINDOW_MS: u64 = 1000;

/// Bytes in the unit of QEMU's `dirty-rate` readings: it counts dirtied pages in whole MiB
/// (`pages * page_size >> 20`) whatever the mode, though its schema says MB.
pub const DIRTY_RATE_UNIT_BYTES: f64 = (1u64 << 20) as f64;

/// One measurement over `ms` milliseconds; MB/s.
pub async fn measure_dirty_rate(qmp: &dyn Qmp, ms: u64) -> Result<f64, QmpError> {
    qmp.calc_dirty_rate(ms).await?;
    wait_for_dirty_rate(qmp, ms).await
}

/// One page-sampling measurement over `ms` milliseconds: distinct pages dirtied, bytes/s (QEMU
/// compares sampled pages' hashes at the window's two ends, so a page rewritten within it counts
/// once). Not `dirty-bitmap` mode, which counts every page: under TCG it reads 0 whatever the
/// guest writes (measured on QEMU 10 with a guest rewriting 4 MB/s).
pub async fn measure_dirtied_bps(qmp: &dyn Qmp, ms: u64) -> Result<f64, QmpError> {
    Ok(measure_dirty_rate(qmp, ms).await? * DIRTY_RATE_UNIT_BYTES)
}

/// Waits out a measurement of `ms` started just now and reads it (QEMU's unit).
async fn wait_for_dirty_rate(qmp: &dyn Qmp, ms: u64) -> Result<f64, QmpError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    for _ in 0..100 {
        if let Some(mb_s) = qmp.query_dirty_rate().await? {
            return Ok(mb_s as f64);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(QmpError::Timeout {
        command: "query-dirty-rate".into(),
        ms: ms + 5000,
    })
}

/// Both windows, combined by [`VmProfile::from_dirty_rates`].
pub async fn profile_vm(qmp: &dyn Qmp, memory_bytes: u64) -> Result<VmProfile, QmpError> {
    let short = measure_dirty_rate(qmp, SHORT_WINDOW_MS).await?;
    let long = measure_dirty_rate(qmp, LONG_WINDOW_MS).await?;
    Ok(VmProfile::from_dirty_rates(memory_bytes, short, long))
}

/// A VM's disk I/O since its QEMU started: `query-blockstats` summed over its devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStats {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ops: u64,
    pub write_ops: u64,
}

/// Sums a `query-blockstats` reply over its devices; None when it is not a list of devices with
/// `stats` (a missing counter counts 0).
pub fn parse_blockstats(v: &Value) -> Option<BlockStats> {
    let mut sum = BlockStats::default();
    for dev in v.as_array()? {
        let s = dev.get("stats")?;
        let n = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
        sum.read_bytes += n("rd_bytes");
        sum.write_bytes += n("wr_bytes");
        sum.read_ops += n("rd_operations");
        sum.write_ops += n("wr_operations");
    }
    Some(sum)
}

/// The VM's disk I/O totals now.
pub async fn query_blockstats(qmp: &dyn Qmp) -> Result<BlockStats, QmpError> {
    let v = qmp.execute("query-blockstats", None).await?;
    parse_blockstats(&v).ok_or_else(|| QmpError::Reply {
        command: "query-blockstats".into(),
        message: "not a list of devices with stats".into(),
    })
}

/// Virtual size and cluster size, bytes, of `disk`'s qcow2 node, from `query-named-block-nodes`.
pub async fn disk_geometry(qmp: &dyn Qmp, disk: &DiskNodes) -> Result<(u64, u64), QmpError> {
    let v = qmp
        .execute("query-named-block-nodes", Some(json!({"flat": true})))
        .await?;
    parse_geometry(&v, disk.format_node()).ok_or_else(|| QmpError::Reply {
        command: "query-named-block-nodes".into(),
        message: format!(
            "no node '{}' with an image's virtual-size and cluster-size",
            disk.format_node()
        ),
    })
}

fn parse_geometry(v: &Value, node: &str) -> Option<(u64, u64)> {
    let n = v
        .as_array()?
        .iter()
        .find(|n| n.get("node-name").and_then(Value::as_str) == Some(node))?;
    let image = n.get("image")?;
    let size = image.get("virtual-size")?.as_u64()?;
    let cluster = image.get("cluster-size")?.as_u64()?;
    Some((size, cluster))
}

/// Errors of a WAN profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profiling the VM: {0}")]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Trace(#[from] DiskTraceError),
    #[error("the measured profile is not usable: {0}")]
    Invalid(#[from] WanError),
}

/// How long and how finely a WAN profile looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WanProfileSettings {
    /// Dirty-rate samples of [`LONG_WINDOW_MS`] each, one after another, then one window as
    /// long as all of them for the working set: the profile takes twice this many seconds (the
    /// disk is watched over all of it), at least 1.
    pub samples: usize,
    /// Regions the disk is cut into for the read/write locality (at most one per cluster).
    pub regions: usize,
}

impl Default for WanProfileSettings {
    /// Three seconds, 64 regions.
    fn default() -> Self {
        WanProfileSettings {
            samples: 3,
            regions: 64,
        }
    }
}

/// Profiles a running VM with a disk for the WAN fraction model (`drover_core::migration::wan`):
/// memory's dirty rate over `settings.samples` one-second windows, then the distinct pages
/// dirtied over one window of `settings.samples` seconds, which sizes the working set
/// ([`MemoryProfile::from_windows`]); and, over the same time, the disk's read and write rates
/// (`query-blockstats`) and the bytes its guest read and wrote per region
/// ([`crate::disk_trace`]'s events, logged to `trace_log`). The trace events are switched off
/// again whatever happens.
pub async fn profile_wan(
    qmp: &dyn Qmp,
    trace_log: &Path,
    memory_bytes: u64,
    disk: &DiskNodes,
    settings: WanProfileSettings,
) -> Result<WanProfile, ProfileError> {
    let (virtual_bytes, cluster_bytes) = disk_geometry(qmp, disk).await?;
    let from = disk_trace::log_position(trace_log)?;
    disk_trace::set_events(qmp, true).await?;
    let watched = watch_window(qmp, settings.samples.max(1)).await;
    let off = disk_trace::set_events(qmp, false).await;
    let (samples_bps, long, io, secs) = watched?;
    off?;
    let requests = disk_trace::read_requests(trace_log, from)?;
    let regions = settings
        .regions
        .min(virtual_bytes.div_ceil(cluster_bytes.max(1)) as usize);
    let counts = count_regions(virtual_bytes, regions, requests);
    let interval_s = LONG_WINDOW_MS as f64 / 1e3;
    let memory = MemoryProfile::from_windows(memory_bytes, samples_bps, interval_s, long)?;
    let per_s = |bytes: u64| bytes as f64 / secs;
    let disk = DiskProfile::new(
        virtual_bytes,
        cluster_bytes,
        per_s(io.read_bytes),
        per_s(io.write_bytes),
        counts,
    )?;
    Ok(WanProfile { memory, disk })
}

/// The window itself: `samples` one-second dirty-rate samples (bytes/s), the long window after
/// them, the disk I/O done meanwhile and the seconds it took.
async fn watch_window(
    qmp: &dyn Qmp,
    samples: usize,
) -> Result<(Vec<f64>, DirtyWindow, BlockStats, f64), QmpError> {
    let before = query_blockstats(qmp).await?;
    let t0 = std::time::Instant::now();
    let mut rates = Vec::with_capacity(samples);
    for _ in 0..samples {
        rates.push(measure_dirtied_bps(qmp, LONG_WINDOW_MS).await?);
    }
    let long_ms = LONG_WINDOW_MS * samples as u64;
    let long_bps = measure_dirtied_bps(qmp, long_ms).await?;
    let seconds = long_ms as f64 / 1e3;
    let long = DirtyWindow {
        seconds,
        dirtied_bytes: long_bps * seconds,
    };
    let after = query_blockstats(qmp).await?;
    let secs = t0.elapsed().as_secs_f64().max(1e-3);
    let io = BlockStats {
        read_bytes: after.read_bytes.saturating_sub(before.read_bytes),
        write_bytes: after.write_bytes.saturating_sub(before.write_bytes),
        read_ops: after.read_ops.saturating_sub(before.read_ops),
        write_ops: after.write_ops.saturating_sub(before.write_ops),
    };
    Ok((rates, long, io, secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blockstats_sum_over_devices() {
        let v = json!([
            {"device": "a", "stats": {"rd_bytes": 10, "wr_bytes": 20, "rd_operations": 1, "wr_operations": 2}},
            {"device": "b", "stats": {"rd_bytes": 5}}
        ]);
        let sum = parse_blockstats(&v).unwrap();
        assert_eq!(
            (sum.read_bytes, sum.write_bytes, sum.read_ops, sum.write_ops),
            (15, 20, 1, 2)
        );
        assert_eq!(parse_blockstats(&json!({})), None);
        assert_eq!(parse_blockstats(&json!([{"device": "a"}])), None);
    }

    #[test]
    fn geometry_comes_from_the_named_qcow2_node() {
        let v = json!([
            {"node-name": "drover-disk0-file", "image": {"virtual-size": 1}},
            {"node-name": "drover-disk0", "image": {"virtual-size": 67108864, "cluster-size": 65536}}
        ]);
        assert_eq!(parse_geometry(&v, "drover-disk0"), Some((64 << 20, 65536)));
        assert_eq!(
            parse_geometry(&v, "drover-disk0-file"),
            None,
            "no cluster size"
        );
        assert_eq!(parse_geometry(&v, "other"), None);
    }
}
