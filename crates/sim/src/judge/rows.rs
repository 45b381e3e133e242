//! Measured migrations: `drover migrate-bench --json` lines read into the judge's inputs and
//! the figures it is fitted to.

use drover_core::migration::{EndStatus, Technique};
use drover_core::units::parse_size;
use serde::Deserialize;
use std::path::Path;
use thiserror::Error;

/// Bandwidth of a run without a cap: QEMU's migration thread over the local socket moves about
/// 1 GB/s on this machine (BENCHMARKS.md, "Live migration"), bytes/s.
pub const LOCAL_SOCKET_BPS: f64 = 1e9;

/// The guest's page, bytes: memtouch's `rate=N` touches N pages a second.
pub const PAGE_BYTES: f64 = 4096.0;

/// Degradation is measured over at least this window from the migration's start, seconds
/// (BENCHMARKS.md, "Live migration").
pub const DEGRADATION_WINDOW_S: f64 = 10.0;

/// A rows file or line that cannot be read.
#[derive(Debug, Error)]
pub enum RowsError {
    // The cause is in the message and not also a `source()`, which would print it twice in a
    // chain (`{:#}`); likewise in every error of this crate.
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("{path} line {line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{path}: no measured rows")]
    Empty { path: String },
}

/// The fields of a `migrate-bench --json` line the judge uses (the line has more).
#[derive(Debug, Deserialize)]
struct BenchLine {
    memory_bytes: u64,
    workload: String,
    bandwidth_bps: Option<u64>,
    chosen: Technique,
    status: EndStatus,
    converged: bool,
    total_ms: u64,
    downtime_ms: Option<u64>,
    transferred_bytes: u64,
    throughput_before: Option<f64>,
    degradation_pct: Option<f64>,
}

/// One measured migration, in the judge's terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub technique: Technique,
    /// Guest RAM, bytes.
    pub memory_bytes: f64,
    /// Working set the workload rewrites, bytes.
    pub wss_bytes: f64,
    /// Pages dirtied per second times the page size, bytes/s.
    pub dirty_bps: f64,
    /// The cap, or [`LOCAL_SOCKET_BPS`], bytes/s.
    pub bandwidth_bps: f64,
    /// Completed within its own parameters, without the watchdog's escalations.
    pub converged: bool,
    /// Completed (the VM ended on the destination), escalations or not.
    pub moved: bool,
    pub total_s: f64,
    pub downtime_s: Option<f64>,
    pub bytes: f64,
    /// Seconds of work lost (degradation over its window); None when the guest did no work.
    pub lost_work_s: Option<f64>,
}

/// (working set bytes, dirty rate bytes/s) of a workload spec: `idle`,
/// `memtouch:wss=SIZE[,rate=N|max][,pattern=P]`, or `cpu:...` (no writes). A memtouch rate is
/// the page touches a second asked for, or the fewer measured before the migration
/// (`ops_before`: what a guest on a loaded machine really did); `rate=max`, those measured.
fn workload_inputs(spec: &str, ops_before: Option<f64>) -> Result<(f64, f64), String> {
    let Some(args) = spec.strip_prefix("memtouch:") else {
        return if spec == "idle" || spec.starts_with("cpu:") {
            Ok((0.0, 0.0))
        } else {
            Err(format!(
                "workload '{spec}': expected idle, cpu:... or memtouch:..."
            ))
        };
    };
    let (mut wss, mut rate) = (None, None);
    for kv in args.split(',') {
        match kv.split_once('=') {
            Some(("wss", v)) => {
                let bytes = parse_size(v).map_err(|e| format!("workload '{spec}': wss: {e}"))?;
                wss = Some(bytes as f64);
            }
            Some(("rate", "max")) => {
                let ops = ops_before.ok_or_else(|| {
                    format!("workload '{spec}': rate=max needs throughput_before")
                })?;
                rate = Some(ops * PAGE_BYTES);
            }
            Some(("rate", v)) => {
                let n: f64 = v
                    .parse()
                    .map_err(|_| format!("workload '{spec}': rate '{v}': expected N or max"))?;
                // A guest that cannot keep up does less; one catching up a backlog briefly
                // more, which the migration does not see.
                let done = ops_before
                    .filter(|o| o.is_finite() && *o >= 0.0)
                    .unwrap_or(n);
                rate = Some(n.min(done) * PAGE_BYTES);
            }
            _ => {}
        }
    }
    let wss = wss.ok_or_else(|| format!("workload '{spec}': no wss="))?;
    Ok((wss, rate.unwrap_or(0.0)))
}

fn measured(line: &str) -> Result<Measured, String> {
    let b: BenchLine = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if b.chosen == Technique::Auto {
        return Err("chosen is auto: expected the technique that ran".into());
    }
    let (wss, dirty) = workload_inputs(&b.workload, b.throughput_before)?;
    let total_s = b.total_ms as f64 / 1000.0;
    let lost = b
        .degradation_pct
        .map(|d| d / 100.0 * total_s.max(DEGRADATION_WINDOW_S));
    Ok(Measured {
        technique: b.chosen,
        memory_bytes: b.memory_bytes as f64,
        wss_bytes: wss,
        dirty_bps: dirty,
        bandwidth_bps: b.bandwidth_bps.map_or(LOCAL_SOCKET_BPS, |b| b as f64),
        converged: b.converged,
        moved: b.status == EndStatus::Completed,
        total_s,
        downtime_s: b.downtime_ms.map(|d| d as f64 / 1000.0),
        bytes: b.transferred_bytes as f64,
        lost_work_s: lost,
    })
}

/// Reads JSON lines (blank lines and `#` comments skipped); `path` names the source in errors.
///
/// # Errors
/// [`RowsError::Line`] naming the line and what is wrong with it; [`RowsError::Empty`].
pub fn parse_rows(text: &str, path: &str) -> Result<Vec<Measured>, RowsError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        rows.push(measured(line).map_err(|reason| RowsError::Line {
            path: path.to_string(),
            line: i + 1,
            reason,
        })?);
    }
    if rows.is_empty() {
        return Err(RowsError::Empty {
            path: path.to_string(),
        });
    }
    Ok(rows)
}

/// Reads a rows file.
///
/// # Errors
/// [`RowsError`] naming the file (and line).
pub fn load_rows(path: &Path) -> Result<Vec<Measured>, RowsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|cause| RowsError::Io {
        path: shown.clone(),
        cause,
    })?;
    parse_rows(&text, &shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"run":1,"memory_bytes":268435456,"workload":"memtouch:wss=128M,rate=2500","bandwidth_bps":50000000,"technique":"precopy","chosen":"precopy","reason":"","status":"completed","converged":true,"total_ms":4614,"downtime_ms":6,"switchover_ms":4600,"transferred_bytes":247463936,"precopy_rounds":5,"postcopy_requests":0,"throughput_before":2500.0,"throughput_during":2500.0,"throughput_after":2500.0,"degradation_pct":0.1,"integrity_errors":0,"watchdog_action":"none","error":null}"#;

    #[test]
    fn a_bench_line_reads_into_the_judges_terms() {
        let rows = parse_rows(LINE, "rows.jsonl").expect("parses");
        let r = rows[0];
        assert_eq!(r.technique, Technique::Precopy);
        assert_eq!(r.wss_bytes, 128.0 * 1048576.0);
        assert_eq!(r.dirty_bps, 2500.0 * 4096.0);
        assert_eq!(r.bandwidth_bps, 50e6);
        assert!((r.total_s - 4.614).abs() < 1e-12);
        // 0.1% of the 10 s window.
        assert!((r.lost_work_s.expect("known") - 0.01).abs() < 1e-12);
    }

    #[test]
    fn rate_max_takes_the_measured_ops() {
        let line = LINE
            .replace("rate=2500", "rate=max")
            .replace(
                "\"throughput_before\":2500.0",
                "\"throughput_before\":2000000.0",
            )
            .replace("\"bandwidth_bps\":50000000", "\"bandwidth_bps\":null");
        let r = parse_rows(&line, "x").expect("parses")[0];
        assert_eq!(r.dirty_bps, 2e6 * 4096.0);
        assert_eq!(r.bandwidth_bps, LOCAL_SOCKET_BPS);
    }

    #[test]
    fn a_bad_line_is_named() {
        let text = format!("{LINE}\n\n{}", LINE.replace("wss=128M", "wss=lots"));
        let err = parse_rows(&text, "rows.jsonl").expect_err("bad wss");
        let msg = err.to_string();
        assert!(msg.starts_with("rows.jsonl line 3: "), "{msg}");
        assert!(msg.contains("wss"), "{msg}");
        let err = parse_rows("# nothing\n", "empty.jsonl").expect_err("empty");
        assert_eq!(err.to_string(), "empty.jsonl: no measured rows");
    }
}
