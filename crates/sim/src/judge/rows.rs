//! Measured migrations: `drover migrate-bench --json` lines read into the judge's inputs and
//! the figures it is fitted to.

use crate::limits::{read_text, ReadError};
use drover_core::migration::knobs::check_link_bps;
use drover_core::migration::{EndStatus, Technique};
use drover_core::units::{parse_size, shown};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
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

/// Longest duration or downtime a row may report, ms (a day): `migrate-bench` cancels a run
/// long before, so more is a corrupt or hand-edited row, which would dominate the fit.
pub const MAX_ROW_MS: u64 = 86_400_000;

/// Largest guest RAM and transferred bytes a row may report (16 TiB, QEMU's ceiling for a
/// guest's RAM on x86-64 is lower), bytes.
pub const MAX_ROW_BYTES: u64 = 16 << 40;

/// Largest page-touch rate a row may report (`rate=N`, `throughput_before`): 100 million
/// pages/s is 400 GB/s of writes, beyond any memory bus.
pub const MAX_PAGE_RATE: f64 = 1e8;

/// A rows file or line that cannot be read. Messages carry the whole reason and no source
/// chain (`{:#}` would print the reason twice).
#[derive(Debug, Error)]
pub enum RowsError {
    #[error("{path}: {error}")]
    Io { path: String, error: ReadError },
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
#[derive(Debug)]
struct BenchLine {
    /// The technique asked for (`auto` or one that ran), read as text so that an unknown one
    /// is refused by name with the accepted list.
    technique: String,
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

impl BenchLine {
    /// Reads the fields one by one, so that a value of the wrong type is named by its field
    /// (serde's own message says only "expected u64 at column 216").
    fn read(line: &str) -> Result<BenchLine, String> {
        let value: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let Value::Object(m) = value else {
            return Err("expected a JSON object (a `migrate-bench --json` line)".into());
        };
        let whole = "a whole number, at least 0";
        Ok(BenchLine {
            technique: field(&m, "technique", "a technique's name")?,
            memory_bytes: field(&m, "memory_bytes", whole)?,
            workload: field(&m, "workload", "a workload spec")?,
            bandwidth_bps: field(&m, "bandwidth_bps", "bytes/s or null (no cap)")?,
            chosen: field(&m, "chosen", "precopy, postcopy or hybrid")?,
            status: field(&m, "status", "completed, failed, cancelled or paused")?,
            converged: field(&m, "converged", "true or false")?,
            total_ms: field(&m, "total_ms", whole)?,
            downtime_ms: field(&m, "downtime_ms", "a whole number or null")?,
            transferred_bytes: field(&m, "transferred_bytes", whole)?,
            throughput_before: field(&m, "throughput_before", "pages/s or null")?,
            degradation_pct: field(&m, "degradation_pct", "a percentage or null")?,
        })
    }
}

/// Field `name` of `m` as a `T` (a missing field reads as null: an `Option` is then None).
fn field<T: DeserializeOwned>(
    m: &Map<String, Value>,
    name: &str,
    expected: &str,
) -> Result<T, String> {
    let v = m.get(name).unwrap_or(&Value::Null);
    T::deserialize(v).map_err(|_| match m.get(name) {
        None => format!("missing field `{name}`: expected {expected}"),
        Some(v) => format!("{name} {v}: expected {expected}"),
    })
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
                    .ok()
                    .filter(|n: &f64| n.is_finite() && (0.0..=MAX_PAGE_RATE).contains(n))
                    .ok_or_else(|| {
                        format!("workload '{spec}': rate '{v}': expected N (0 to {MAX_PAGE_RATE:e} pages/s) or max")
                    })?;
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

/// `field value: expected ...` unless `ok`.
fn plausible(
    ok: bool,
    field: &str,
    value: impl std::fmt::Display,
    expected: &str,
) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{field} {value}: expected {expected}"))
    }
}

/// Checks every figure of `b` the fit reads against what a measured migration can show, so a
/// corrupt row is refused by name instead of skewing every parameter (one `bandwidth_bps` of 0
/// made a transfer factor of 1e-10).
fn check_line(b: &BenchLine) -> Result<(), String> {
    let names = Technique::ALL.map(Technique::as_str).join(", ");
    let asked = b
        .technique
        .parse::<Technique>()
        .map_err(|_| format!("technique '{}': expected one of {names}", b.technique))?;
    if b.chosen == Technique::Auto {
        return Err(
            "chosen auto: expected the technique that ran (precopy, postcopy, hybrid)".into(),
        );
    }
    if asked != Technique::Auto && asked != b.chosen {
        return Err(format!(
            "technique {asked} but chosen {}: expected the technique asked for, or auto",
            b.chosen
        ));
    }
    plausible(
        (1..=MAX_ROW_BYTES).contains(&b.memory_bytes),
        "memory_bytes",
        b.memory_bytes,
        "the guest's RAM, 1 byte to 16 TiB",
    )?;
    if let Some(bps) = b.bandwidth_bps {
        check_link_bps(bps).map_err(|e| format!("bandwidth_bps {bps}: {e}"))?;
    }
    plausible(
        (1..=MAX_ROW_MS).contains(&b.total_ms),
        "total_ms",
        b.total_ms,
        "a duration of 1 ms to a day (86400000)",
    )?;
    if let Some(d) = b.downtime_ms {
        plausible(
            d <= b.total_ms,
            "downtime_ms",
            d,
            &format!("at most total_ms ({})", b.total_ms),
        )?;
    }
    plausible(
        b.transferred_bytes <= MAX_ROW_BYTES,
        "transferred_bytes",
        b.transferred_bytes,
        "at most 16 TiB",
    )?;
    if let Some(t) = b.throughput_before {
        plausible(
            t.is_finite() && (0.0..=MAX_PAGE_RATE).contains(&t),
            "throughput_before",
            shown(t),
            "pages/s, 0 to 1e8",
        )?;
    }
    if let Some(d) = b.degradation_pct {
        // Negative: the guest did more during the migration than before (measured, -187%).
        plausible(
            d.is_finite() && (-1000.0..=100.0).contains(&d),
            "degradation_pct",
            shown(d),
            "a percentage of the guest's work, -1000 to 100",
        )?;
    }
    Ok(())
}

fn measured(line: &str) -> Result<Measured, String> {
    let b = BenchLine::read(line)?;
    check_line(&b)?;
    let (wss, dirty) = workload_inputs(&b.workload, b.throughput_before)?;
    plausible(
        wss <= b.memory_bytes as f64,
        "workload wss",
        shown(wss),
        &format!("at most memory_bytes ({})", b.memory_bytes),
    )?;
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

/// Reads a rows file, at most [`crate::limits::MAX_FILE_BYTES`].
///
/// # Errors
/// [`RowsError`] naming the file (and line).
pub fn load_rows(path: &Path) -> Result<Vec<Measured>, RowsError> {
    let shown = path.display().to_string();
    let text = read_text(path).map_err(|error| RowsError::Io {
        path: shown.clone(),
        error,
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

    /// The line with `"field":old` replaced by `"field":new`.
    fn with(field: &str, new: &str) -> String {
        let start = LINE.find(&format!("\"{field}\":")).expect("field") + field.len() + 3;
        let rest = &LINE[start..];
        let end = start
            + match rest.strip_prefix('"') {
                Some(text) => text.find('"').expect("closing quote") + 2,
                None => rest.find([',', '}']).expect("end"),
            };
        format!("{}{new}{}", &LINE[..start], &LINE[end..])
    }

    #[test]
    fn implausible_figures_are_refused_by_line_field_and_expectation() {
        let cases = [
            (
                "bandwidth_bps",
                "0",
                "bandwidth_bps 0: expected at least 125000 bytes/s",
            ),
            ("bandwidth_bps", "1", "bandwidth_bps 1: expected at least"),
            (
                "memory_bytes",
                "0",
                "memory_bytes 0: expected the guest's RAM",
            ),
            (
                "total_ms",
                "18446744073709551615",
                "total_ms 18446744073709551615: expected a duration of 1 ms to a day",
            ),
            ("total_ms", "0", "total_ms 0: expected a duration"),
            (
                "downtime_ms",
                "5000",
                "downtime_ms 5000: expected at most total_ms (4614)",
            ),
            (
                "transferred_bytes",
                "18446744073709551615",
                "transferred_bytes",
            ),
            (
                "throughput_before",
                "1e300",
                "throughput_before 1e300: expected pages/s",
            ),
            (
                "throughput_before",
                "-1.0",
                "throughput_before -1: expected pages/s",
            ),
            (
                "degradation_pct",
                "1e9",
                "degradation_pct 1000000000: expected a percentage",
            ),
            (
                "degradation_pct",
                "-1e300",
                "degradation_pct -1e300: expected a percentage",
            ),
            (
                "technique",
                "\"teleport\"",
                "technique 'teleport': expected one of precopy, postcopy, hybrid, auto",
            ),
            (
                "technique",
                "\"hybrid\"",
                "technique hybrid but chosen precopy",
            ),
            (
                "chosen",
                "\"auto\"",
                "chosen auto: expected the technique that ran",
            ),
            (
                "chosen",
                "\"teleport\"",
                "chosen \"teleport\": expected precopy, postcopy or hybrid",
            ),
            (
                "total_ms",
                "-5",
                "total_ms -5: expected a whole number, at least 0",
            ),
            (
                "status",
                "\"gone\"",
                "status \"gone\": expected completed, failed",
            ),
            (
                "workload",
                "\"memtouch:wss=1G,rate=2500\"",
                "workload wss 1073741824: expected at most memory_bytes",
            ),
            (
                "workload",
                "\"memtouch:wss=128M,rate=1e300\"",
                "rate '1e300': expected N (0 to",
            ),
            ("workload", "\"memtouch:wss=128M,rate=-3\"", "rate '-3'"),
        ];
        for (field, value, want) in cases {
            let text = format!("{LINE}\n# a comment\n{}", with(field, value));
            let msg = parse_rows(&text, "rows.jsonl")
                .expect_err(field)
                .to_string();
            assert!(msg.starts_with("rows.jsonl line 3: "), "{msg}");
            assert!(msg.contains(want), "{field}={value}: {msg}");
        }
        let msg = parse_rows(&LINE.replace("\"memory_bytes\":268435456,", ""), "r")
            .expect_err("missing")
            .to_string();
        assert_eq!(
            msg,
            "r line 1: missing field `memory_bytes`: expected a whole number, at least 0"
        );
        // Asked for auto, ran pre-copy: a row like any other.
        assert!(parse_rows(&with("technique", "\"auto\""), "x").is_ok());
    }

    #[test]
    fn a_missing_or_endless_file_is_named_once() {
        let e = load_rows(Path::new("/nonexistent/rows.jsonl")).expect_err("no file");
        assert_eq!(
            e.to_string(),
            "/nonexistent/rows.jsonl: No such file or directory (os error 2)"
        );
        assert!(
            std::error::Error::source(&e).is_none(),
            "no chain to repeat"
        );
        let e = load_rows(Path::new("/dev/zero")).expect_err("endless");
        assert!(
            e.to_string().starts_with("/dev/zero: not a regular file"),
            "{e}"
        );
    }
}
