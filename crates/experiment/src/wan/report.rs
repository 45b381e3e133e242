//! The WAN experiment's outputs: the table per strategy (measured mean and spread over the
//! repetitions, the prediction and its mean error, per figure), each run's line, the verdict
//! (did the model's hybrid beat both pure techniques on agility), `summary.json` and the report
//! folder (each run's series as JSON lines and an SVG of the guest's throughput, `index.html`).

use super::config::{Strategy, WanConfig};
use super::figures::{Figure, RunResult};
use super::run::WanOutcome;
use crate::plot::{draw, Panel};
use crate::report::{index_html, write, ReportError, Spread};
use plotters::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// One figure of one strategy over its runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FigureRow {
    pub measured: Option<Spread>,
    pub predicted: Option<Spread>,
    /// Mean of the runs' signed errors, percent.
    pub error_pct: Option<Spread>,
}

impl FigureRow {
    fn of<'a>(runs: impl Iterator<Item = &'a Figure> + Clone) -> FigureRow {
        FigureRow {
            measured: Spread::of(runs.clone().filter_map(|f| f.measured)),
            predicted: Spread::of(runs.clone().filter_map(|f| f.predicted)),
            error_pct: Spread::of(runs.filter_map(|f| f.error_pct)),
        }
    }
}

/// One strategy over its runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyRow {
    pub strategy: Strategy,
    pub runs: usize,
    /// Runs whose request was refused.
    pub refused: usize,
    /// Runs that ran and did not complete.
    pub failed: usize,
    pub downtime_ms: FigureRow,
    pub total_s: FigureRow,
    pub postcopy_degradation_pct: FigureRow,
    pub agility_s: FigureRow,
    /// The longest stall in the series, s (measured only).
    pub longest_stall_s: Option<Spread>,
    pub integrity_errors: u64,
    /// The first refusal's message (the others say the same).
    pub refusal: Option<String>,
}

/// The rows, one per strategy in `order`.
pub fn rows(order: &[Strategy], runs: &[RunResult]) -> Vec<StrategyRow> {
    order
        .iter()
        .map(|&s| {
            let mine: Vec<&RunResult> = runs.iter().filter(|r| r.strategy == s).collect();
            let ran = mine.iter().filter(|r| !r.refused());
            StrategyRow {
                strategy: s,
                runs: mine.len(),
                refused: mine.iter().filter(|r| r.refused()).count(),
                failed: ran.clone().filter(|r| r.state != "completed").count(),
                downtime_ms: FigureRow::of(mine.iter().map(|r| &r.downtime_ms)),
                total_s: FigureRow::of(mine.iter().map(|r| &r.total_s)),
                postcopy_degradation_pct: FigureRow::of(
                    mine.iter().map(|r| &r.postcopy_degradation_pct),
                ),
                agility_s: FigureRow::of(mine.iter().map(|r| &r.agility_s)),
                longest_stall_s: Spread::of(mine.iter().filter_map(|r| r.longest_stall_s)),
                integrity_errors: mine.iter().map(|r| r.integrity_errors).sum(),
                refusal: mine
                    .iter()
                    .find(|r| r.refused())
                    .and_then(|r| r.error.clone()),
            }
        })
        .collect()
}

/// Whether the model's hybrid had a lower mean measured agility than both pure techniques.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// None: a mean is missing (a strategy refused, failed or never restored).
    pub hybrid_beats_both: Option<bool>,
    pub why: String,
}

pub fn verdict(rows: &[StrategyRow]) -> Verdict {
    let row = |s: Strategy| rows.iter().find(|r| r.strategy == s);
    let mean = |s: Strategy| row(s).and_then(|r| r.agility_s.measured).map(|x| x.mean);
    let (pre, post, hybrid) = (
        mean(Strategy::PurePrecopy),
        mean(Strategy::PurePostcopy),
        mean(Strategy::ModelHybrid),
    );
    match (pre, post, hybrid) {
        (Some(pre), Some(post), Some(h)) => Verdict {
            hybrid_beats_both: Some(h < pre && h < post),
            why: format!(
                "mean agility: model-hybrid {h:.2} s, pure-precopy {pre:.2} s, pure-postcopy \
                 {post:.2} s"
            ),
        },
        _ => {
            let refused = row(Strategy::ModelHybrid).filter(|r| r.refused > 0);
            Verdict {
                hybrid_beats_both: None,
                why: match refused.and_then(|r| r.refusal.clone()) {
                    Some(m) => format!("model-hybrid was refused: {m}"),
                    None => "a strategy has no measured agility (failed, or throughput not \
                             restored within the observation)"
                        .into(),
                },
            }
        }
    }
}

/// `measured (predicted, error%)` of one figure over the runs.
fn cell(f: &FigureRow, decimals: usize) -> String {
    let predicted = f
        .predicted
        .map_or_else(|| "-".into(), |p| format!("{:.decimals$}", p.mean));
    let error = f
        .error_pct
        .map_or_else(|| "-".into(), |e| format!("{:+.0}%", e.mean));
    format!(
        "{} ({predicted}, {error})",
        Spread::show(f.measured, decimals)
    )
}

/// The table: a header, a row per strategy, refusals, and the verdict.
pub fn table(rows: &[StrategyRow]) -> String {
    let mut out = String::from(
        "each figure: measured mean [min-max] (predicted mean, mean prediction error)\n",
    );
    let _ = writeln!(
        out,
        "{:<14} {:>4} {:>7} {:>32} {:>16} {:>30} {:>30} {:>30} {:>5}",
        "strategy",
        "runs",
        "refused",
        "downtime ms",
        "longest stall s",
        "total s",
        "post-copy degradation %",
        "agility s",
        "integ"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<14} {:>4} {:>7} {:>32} {:>16} {:>30} {:>30} {:>30} {:>5}",
            r.strategy.as_str(),
            r.runs,
            r.refused,
            cell(&r.downtime_ms, 0),
            Spread::show(r.longest_stall_s, 2),
            cell(&r.total_s, 1),
            cell(&r.postcopy_degradation_pct, 1),
            cell(&r.agility_s, 2),
            r.integrity_errors,
        );
    }
    for r in rows {
        if let Some(m) = &r.refusal {
            let _ = writeln!(out, "{} refused: {m}", r.strategy.as_str());
        }
    }
    let v = verdict(rows);
    let word = match v.hybrid_beats_both {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    let _ = writeln!(
        out,
        "model-hybrid beat both pure techniques on agility: {word} ({})",
        v.why
    );
    out
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.decimals$}"))
}

/// Each run in one line.
pub fn run_lines(runs: &[RunResult]) -> String {
    let mut out = String::new();
    for r in runs {
        let _ = writeln!(
            out,
            "{}-{}: {} (memory {} {:.0}% ahead, storage {} {:.0}% ahead): downtime {} ms \
             (from the {}; predicted {}), longest stall {} s, total {} s ({}), post-copy {} s \
             degradation {} % ({}), agility {} s ({}), integrity errors {}{}",
            r.strategy.as_str(),
            r.run,
            r.state,
            r.technique.as_str(),
            r.memory_fraction * 100.0,
            r.storage,
            r.storage_fraction * 100.0,
            opt(r.downtime_ms.measured, 0),
            r.downtime_from,
            opt(r.downtime_ms.predicted, 0),
            opt(r.longest_stall_s, 2),
            opt(r.total_s.measured, 1),
            opt(r.total_s.predicted, 1),
            opt(r.postcopy_s, 1),
            opt(r.postcopy_degradation_pct.measured, 1),
            opt(r.postcopy_degradation_pct.predicted, 1),
            opt(r.agility_s.measured, 2),
            opt(r.agility_s.predicted, 2),
            r.integrity_errors,
            r.error
                .as_ref()
                .map_or_else(String::new, |e| format!("; {e}")),
        );
    }
    out
}

/// `summary.json` (and `--json`): the sizes, the rows, the verdict and every run.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub config: &'a WanConfig,
    pub rows: Vec<StrategyRow>,
    pub verdict: Verdict,
    pub runs: Vec<&'a RunResult>,
}

/// The file stem of a run's files.
pub fn stem(r: &RunResult) -> String {
    format!("{}-{}", r.strategy.as_str(), r.run)
}

/// Writes one run's figures (`result-<stem>.json`), its series (`series-<stem>.jsonl`), the plan that predicted it
/// (`plan-<stem>.json`), the agent's migration record if it ran (`record-<stem>.json`) and its
/// figure (`<stem>.svg`).
///
/// # Errors
/// [`ReportError`] naming the file.
pub fn write_run(dir: &Path, run: &WanOutcome) -> Result<(), ReportError> {
    let stem = stem(&run.result);
    let lines: String = run
        .series
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default() + "\n")
        .collect();
    write(&dir.join(format!("series-{stem}.jsonl")), &lines)?;
    let result = serde_json::to_string_pretty(&run.result).unwrap_or_default();
    write(&dir.join(format!("result-{stem}.json")), &result)?;
    let plan = serde_json::to_string_pretty(&run.plan).unwrap_or_default();
    write(&dir.join(format!("plan-{stem}.json")), &plan)?;
    if let Some(record) = &run.record {
        let text = serde_json::to_string_pretty(record).unwrap_or_default();
        write(&dir.join(format!("record-{stem}.json")), &text)?;
    }
    let svg = dir.join(format!("{stem}.svg"));
    figure(&svg, run).map_err(|message| ReportError::Plot {
        path: svg.clone(),
        message,
    })
}

/// Writes `summary.json` and `index.html` (after every run's files).
///
/// # Errors
/// [`ReportError`] naming the file.
pub fn write_index(dir: &Path, summary: &Summary<'_>) -> Result<(), ReportError> {
    write(
        &dir.join("summary.json"),
        &serde_json::to_string_pretty(summary).unwrap_or_default(),
    )?;
    let runs: Vec<RunResult> = summary.runs.iter().map(|r| (*r).clone()).collect();
    let figures: Vec<(String, String)> = runs
        .iter()
        .filter(|r| !r.refused())
        .map(|r| (stem(r), r.reason.clone()))
        .collect();
    let html = index_html(
        "drover experiment wan-hybrid",
        "memory and storage over a WAN",
        &[table(&summary.rows), run_lines(&runs)],
        &figures,
    );
    write(&dir.join("index.html"), &html)
}

/// A run's figure: the guest's throughput (ops/s, each part's sum) over seconds since the
/// series began, the baseline rate and its 90% as grey lines; red marks the migration's start
/// and end, blue the switchover.
///
/// # Errors
/// plotters' message.
pub fn figure(path: &Path, run: &WanOutcome) -> Result<(), String> {
    let r = &run.result;
    let t0 = run.series.first().map_or(0.0, |s| s.t_s);
    let points: Vec<(f64, f64)> = run
        .series
        .iter()
        .filter_map(|s| s.vm(&run.vm).map(|v| (s.t_s - t0, v.ops_per_s)))
        .collect();
    let t_end = points.last().map_or(1.0, |p| p.0.max(1.0));
    let top = 1.1 * points.iter().map(|p| p.1).fold(1.0, f64::max);
    let mut marks: Vec<(f64, RGBColor)> = Vec::new();
    for t in [r.start_s, r.end_s].into_iter().flatten() {
        marks.push((t - t0, RED));
    }
    if let Some(t) = r.switch_s {
        marks.push((t - t0, BLUE));
    }
    let root = SVGBackend::new(path, (1000, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut lines = vec![(format!("{} ops/s", run.vm), points)];
    if let Some(b) = r.before_ops_s {
        lines.push((
            "90% of before".into(),
            vec![(0.0, 0.9 * b), (t_end, 0.9 * b)],
        ));
    }
    draw(
        &root,
        Panel {
            caption: format!(
                "{} run {}: guest throughput, ops/s (agility {} s, predicted {})",
                r.strategy.as_str(),
                r.run,
                opt(r.agility_s.measured, 2),
                opt(r.agility_s.predicted, 2)
            ),
            y: 0.0..top,
            lines,
            reference: r.before_ops_s,
        },
        t_end,
        &marks,
    )?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::migration::{StorageMode, Technique};

    fn result(s: Strategy, run: u32, agility: Option<f64>, refused: bool) -> RunResult {
        RunResult {
            strategy: s,
            run,
            state: if refused { "refused" } else { "completed" }.into(),
            error: refused.then(|| "storage 'hybrid': not run yet".to_string()),
            technique: Technique::Postcopy,
            storage: StorageMode::Postcopy,
            memory_fraction: 0.0,
            storage_fraction: 0.0,
            downtime_ms: Figure::new(Some(100.0), Some(150.0)),
            total_s: Figure::new(Some(10.0), Some(12.0)),
            postcopy_degradation_pct: Figure::new(None, None),
            agility_s: Figure::new(Some(1.0), agility),
            restored_s: Figure::new(Some(1.0), None),
            postcopy_s: None,
            downtime_from: "record".into(),
            longest_stall_s: None,
            before_ops_s: Some(1000.0),
            integrity_errors: 0,
            transferred_bytes: None,
            start_s: Some(10.0),
            switch_s: Some(11.0),
            end_s: Some(12.0),
            reason: "why".into(),
            notes: vec![],
        }
    }

    #[test]
    fn rows_over_repeats_errors_and_the_verdict() {
        let runs = [
            result(Strategy::PurePrecopy, 1, Some(3.0), false),
            result(Strategy::PurePrecopy, 2, Some(5.0), false),
            result(Strategy::PurePostcopy, 1, Some(2.0), false),
            result(Strategy::ModelHybrid, 1, Some(1.5), false),
        ];
        let rows = rows(&Strategy::ALL, &runs);
        let pre = &rows[0];
        assert_eq!((pre.runs, pre.refused, pre.failed), (2, 0, 0));
        let a = pre.agility_s;
        assert_eq!(
            a.measured.map(|s| (s.mean, s.min, s.max)),
            Some((4.0, 3.0, 5.0))
        );
        // +200% and +400%.
        assert_eq!(a.error_pct.map(|s| s.mean), Some(300.0));
        assert_eq!(pre.downtime_ms.error_pct.map(|s| s.mean), Some(50.0));
        let v = verdict(&rows);
        assert_eq!(v.hybrid_beats_both, Some(true), "{}", v.why);
        let text = table(&rows);
        assert!(text.contains("4.00 [3.00-5.00] (1.00, +300%)"), "{text}");
        assert!(text.trim_end().ends_with("pure-postcopy 2.00 s)"), "{text}");
        let worse = [
            result(Strategy::PurePrecopy, 1, Some(1.0), false),
            result(Strategy::PurePostcopy, 1, Some(2.0), false),
            result(Strategy::ModelHybrid, 1, Some(1.5), false),
        ];
        assert_eq!(
            verdict(&super::rows(&Strategy::ALL, &worse)).hybrid_beats_both,
            Some(false)
        );
    }

    #[test]
    fn a_refused_hybrid_is_reported_with_its_message() {
        let runs = [
            result(Strategy::PurePrecopy, 1, Some(3.0), false),
            result(Strategy::PurePostcopy, 1, Some(2.0), false),
            result(Strategy::ModelHybrid, 1, None, true),
        ];
        let rows = rows(&Strategy::ALL, &runs);
        assert_eq!((rows[2].refused, rows[2].failed), (1, 0));
        let v = verdict(&rows);
        assert_eq!(v.hybrid_beats_both, None);
        assert!(v.why.contains("refused: storage 'hybrid'"), "{}", v.why);
        let text = table(&rows);
        assert!(
            text.contains("model-hybrid refused: storage 'hybrid': not run yet"),
            "{text}"
        );
        assert!(
            run_lines(&runs).contains("model-hybrid-1: refused"),
            "{}",
            run_lines(&runs)
        );
    }
}
