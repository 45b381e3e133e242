//! The traffic experiment's outputs: the table per strategy (mean and spread over repetitions,
//! measured beside predicted), each run's per-VM lines, the verdict, `summary.json` and the
//! report folder (series and peer reports as JSON lines, one SVG figure per run, `index.html`).

use super::config::{Strategy, TrafficConfig};
use super::run::TrafficOutcome;
use super::series::{app_rates, link_rates};
use super::summary::RunResult;
use crate::plot::{draw, Panel};
use crate::report::{index_html, write, ReportError, Spread};
use plotters::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// One strategy over its runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyRow {
    pub strategy: Strategy,
    pub runs: usize,
    pub evacuation_s: Option<Spread>,
    pub predicted_evacuation_s: Option<Spread>,
    pub degradation_pct: Option<Spread>,
    pub predicted_degradation_pct: Option<Spread>,
    pub lost_s: Option<Spread>,
    pub predicted_lost_s: Option<Spread>,
    pub failed_migrations: usize,
}

/// The rows, one per strategy in `order`.
pub fn rows(order: &[Strategy], runs: &[RunResult]) -> Vec<StrategyRow> {
    order
        .iter()
        .map(|&s| {
            let mine: Vec<&RunResult> = runs.iter().filter(|r| r.strategy == s).collect();
            StrategyRow {
                strategy: s,
                runs: mine.len(),
                evacuation_s: Spread::of(mine.iter().filter_map(|r| r.evacuation_s)),
                predicted_evacuation_s: Spread::of(mine.iter().map(|r| r.predicted_evacuation_s)),
                degradation_pct: Spread::of(mine.iter().filter_map(|r| r.degradation_pct)),
                predicted_degradation_pct: Spread::of(
                    mine.iter().map(|r| r.predicted_degradation_pct),
                ),
                lost_s: Spread::of(mine.iter().filter_map(|r| r.lost_s)),
                predicted_lost_s: Spread::of(mine.iter().map(|r| r.predicted_lost_s)),
                failed_migrations: mine.iter().map(|r| r.failed_migrations).sum(),
            }
        })
        .collect()
}

/// Whether traffic-sensitive's mean beat both uniform strategies' means, on evacuation time, on
/// degradation and on lost work (None: a figure is missing).
///
/// Degradation is each VM's lost work over its own strategy's evacuation (at least 10 s), so a
/// strategy that takes longer spreads the same loss thinner: at 11 MB/s senders, all pre-copy
/// lost 35.5 s of work over 60.9 s (14.6 %), the paper's rule 10.8 s over 17.3 s (15.6 %).
/// Lost work (seconds of full throughput, the group's sum) compares the applications' loss
/// itself, as a common window would; both are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub evacuation: Option<bool>,
    pub degradation: Option<bool>,
    pub lost_work: Option<bool>,
}

pub fn verdict(rows: &[StrategyRow]) -> Verdict {
    let mean = |s: Strategy, f: fn(&StrategyRow) -> Option<Spread>| {
        rows.iter()
            .find(|r| r.strategy == s)
            .and_then(f)
            .map(|x| x.mean)
    };
    let beats = |f: fn(&StrategyRow) -> Option<Spread>| {
        let t = mean(Strategy::TrafficSensitive, f)?;
        let pre = mean(Strategy::AllPrecopy, f)?;
        let post = mean(Strategy::AllPostcopy, f)?;
        Some(t < pre && t < post)
    };
    Verdict {
        evacuation: beats(|r| r.evacuation_s),
        degradation: beats(|r| r.degradation_pct),
        lost_work: beats(|r| r.lost_s),
    }
}

/// What the table's figures are, printed under it.
const LEGEND: &str = "evacuation: first migration's start to the last one's end; lost s: seconds of full throughput the VMs' applications lost, summed; degradation: each VM's lost work over its strategy's evacuation (at least 10 s), mean of the VMs; predicted: the group model's forecast (mean)\n";

/// The table: a header, a row per strategy, the legend and the verdict.
pub fn table(rows: &[StrategyRow]) -> String {
    let mut out = format!(
        "{:<17} {:>4} {:>20} {:>12} {:>20} {:>12} {:>18} {:>12} {:>6}\n",
        "strategy",
        "runs",
        "evacuation s",
        "predicted s",
        "degradation %",
        "predicted %",
        "lost s",
        "predicted s",
        "failed"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<17} {:>4} {:>20} {:>12} {:>20} {:>12} {:>18} {:>12} {:>6}",
            r.strategy.as_str(),
            r.runs,
            Spread::show(r.evacuation_s, 1),
            Spread::show(r.predicted_evacuation_s.map(|s| Spread { n: 1, ..s }), 1),
            Spread::show(r.degradation_pct, 1),
            Spread::show(r.predicted_degradation_pct.map(|s| Spread { n: 1, ..s }), 1),
            Spread::show(r.lost_s, 1),
            Spread::show(r.predicted_lost_s.map(|s| Spread { n: 1, ..s }), 1),
            r.failed_migrations,
        );
    }
    let word = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    let v = verdict(rows);
    out.push_str(LEGEND);
    let _ = writeln!(
        out,
        "traffic-sensitive beat both all-precopy and all-postcopy (means over the runs): evacuation {}, degradation {}, lost work {}",
        word(v.evacuation),
        word(v.degradation),
        word(v.lost_work)
    );
    out
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.decimals$}"))
}

/// Each run's VMs, one line each, in migration order.
pub fn vm_lines(runs: &[RunResult]) -> String {
    let mut out = String::new();
    for r in runs {
        for v in &r.vms {
            let _ = writeln!(
                out,
                "{}-{}: #{} {} ({}) {} {}: migration {} s (predicted {}), throughput {} -> {} \
                 B/s, degradation {} % (predicted {}), longest pause {} s",
                r.strategy.as_str(),
                r.run,
                v.position,
                v.name,
                v.role.as_str(),
                v.technique.as_str(),
                v.state,
                opt(v.migration_s, 1),
                opt(v.predicted_migration_s, 1),
                opt(v.before_bps, 0),
                opt(v.during_bps, 0),
                opt(v.degradation_pct, 1),
                opt(v.predicted_degradation_pct, 1),
                opt(v.longest_pause_s, 2),
            );
        }
    }
    out
}

/// `summary.json` (and `--json`): the sizes, every run, the rows and the verdict.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub config: &'a TrafficConfig,
    pub rows: Vec<StrategyRow>,
    pub verdict: Verdict,
    pub runs: Vec<&'a RunResult>,
}

/// The file stem of a run's files.
pub fn stem(r: &RunResult) -> String {
    format!("{}-{}", r.strategy.as_str(), r.run)
}

fn json_lines<T: Serialize>(items: &[T]) -> String {
    items
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default() + "\n")
        .collect()
}

/// Writes one run's series (`series-<stem>.jsonl`), peer reports (`peer-<stem>.jsonl`) and
/// figure (`<stem>.svg`).
///
/// # Errors
/// [`ReportError`] naming the file.
pub fn write_run(
    dir: &Path,
    run: &TrafficOutcome,
    config: &TrafficConfig,
) -> Result<(), ReportError> {
    let stem = stem(&run.result);
    write(
        &dir.join(format!("series-{stem}.jsonl")),
        &json_lines(&run.series),
    )?;
    write(
        &dir.join(format!("peer-{stem}.jsonl")),
        &json_lines(&run.peer),
    )?;
    let svg = dir.join(format!("{stem}.svg"));
    figure(&svg, run, config).map_err(|message| ReportError::Plot {
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
    let figures: Vec<(String, String)> = runs.iter().map(|r| (stem(r), r.reason.clone())).collect();
    let html = index_html(
        "drover experiment traffic-sensitive",
        "traffic-sensitive evacuation",
        &[table(&summary.rows), vm_lines(&runs)],
        &figures,
    );
    write(&dir.join("index.html"), &html)
}

/// A run's figure: each VM's application throughput (top) and each host's link use each way
/// (bottom), MB/s over seconds since the baseline began, the link's rate as a grey line; red
/// lines mark each migration's start and end.
///
/// # Errors
/// plotters' message.
pub fn figure(path: &Path, run: &TrafficOutcome, config: &TrafficConfig) -> Result<(), String> {
    let t0 = run.t0_s;
    let mb = |v: f64| v / 1e6;
    let marks = migration_marks(run);
    let vms: Vec<(String, Vec<(f64, f64)>)> = run
        .vms
        .iter()
        .map(|v| {
            let points = app_rates(&run.peer, &v.ip)
                .into_iter()
                .map(|(t, r)| (t - t0, mb(r)))
                .filter(|(t, _)| *t >= 0.0)
                .collect();
            (v.name.clone(), points)
        })
        .collect();
    let mut links = Vec::new();
    for h in ["h1", "h2"] {
        let rates = link_rates(&run.series, h);
        let pick = |tx: bool| -> Vec<(f64, f64)> {
            rates
                .iter()
                .map(|&(t, x, r)| (t - t0, mb(if tx { x } else { r })))
                .filter(|(t, _)| *t >= 0.0)
                .collect()
        };
        links.push((format!("{h} sends"), pick(true)));
        links.push((format!("{h} receives"), pick(false)));
    }
    let t_end = vms
        .iter()
        .chain(&links)
        .flat_map(|(_, p)| p.iter().map(|(t, _)| *t))
        .fold(1.0, f64::max);
    let top = |lines: &[(String, Vec<(f64, f64)>)], floor: f64| {
        1.1 * lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .fold(floor, f64::max)
    };
    let link_mb = mb(config.link_bps as f64);
    let root = SVGBackend::new(path, (1000, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (upper, lower) = root.split_vertically(360);
    let r = &run.result;
    draw(
        &upper,
        Panel {
            caption: format!(
                "{} run {}: each VM's application throughput, MB/s (peer's bytes, both ways)",
                r.strategy.as_str(),
                r.run
            ),
            y: 0.0..top(&vms, 0.1),
            lines: vms,
            reference: None,
        },
        t_end,
        &marks,
    )?;
    draw(
        &lower,
        Panel {
            caption: format!("link use, MB/s (link {link_mb:.1} MB/s each way)"),
            y: 0.0..top(&links, link_mb),
            lines: links,
            reference: Some(link_mb),
        },
        t_end,
        &marks,
    )?;
    root.present().map_err(|e| e.to_string())
}

/// Each migration's start and end, s since the run's zero.
fn migration_marks(run: &TrafficOutcome) -> Vec<(f64, RGBColor)> {
    run.migrations
        .iter()
        .flat_map(|m| std::iter::once(m.started_s).chain(m.ended_s))
        .map(|t| (t - run.t0_s, RED))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::summary::RunResult;

    fn result(s: Strategy, evac: f64, degr: f64) -> RunResult {
        RunResult {
            strategy: s,
            run: 1,
            concurrency: 2,
            start_s: Some(0.0),
            evacuation_s: Some(evac),
            predicted_evacuation_s: evac + 1.0,
            degradation_pct: Some(degr),
            predicted_degradation_pct: 5.0,
            lost_s: Some(degr / 10.0),
            predicted_lost_s: 0.5,
            failed_migrations: 0,
            vms: vec![],
            links: vec![],
            reason: String::new(),
            notes: vec![],
        }
    }

    #[test]
    fn rows_spreads_and_the_verdict() {
        let runs = [
            result(Strategy::AllPrecopy, 20.0, 10.0),
            result(Strategy::AllPostcopy, 18.0, 12.0),
            result(Strategy::TrafficSensitive, 15.0, 11.0),
            result(Strategy::TrafficSensitive, 17.0, 7.0),
        ];
        let rows = rows(&Strategy::COMPARED, &runs);
        assert_eq!(rows.len(), 3);
        let t = &rows[2];
        assert_eq!(t.runs, 2);
        assert_eq!(
            t.evacuation_s.map(|s| (s.mean, s.min, s.max)),
            Some((16.0, 15.0, 17.0))
        );
        assert_eq!(t.degradation_pct.map(|s| s.mean), Some(9.0));
        // 16 < 18 and 20; 9 < 10 and 12.
        assert_eq!(
            verdict(&rows),
            Verdict {
                evacuation: Some(true),
                degradation: Some(true),
                lost_work: Some(true)
            }
        );
        let worse = [
            result(Strategy::AllPrecopy, 20.0, 8.0),
            result(Strategy::AllPostcopy, 18.0, 12.0),
            result(Strategy::TrafficSensitive, 19.0, 9.0),
        ];
        assert_eq!(
            verdict(&super::rows(&Strategy::COMPARED, &worse)),
            Verdict {
                evacuation: Some(false),
                degradation: Some(false),
                lost_work: Some(false)
            }
        );
        assert_eq!(
            verdict(&super::rows(&Strategy::COMPARED, &runs[..2])).evacuation,
            None
        );
        let text = table(&rows);
        assert!(
            text.lines().nth(3).is_some_and(
                |l| l.starts_with("traffic-sensitive") && l.contains("16.0 [15.0-17.0]")
            ),
            "{text}"
        );
        assert!(
            text.ends_with("evacuation yes, degradation yes, lost work yes\n"),
            "{text}"
        );
        // The legend says what each figure is; predicted lost work sits beside the measured.
        assert!(
            text.contains("lost s: seconds of full throughput"),
            "{text}"
        );
        assert_eq!(t.predicted_lost_s.map(|s| s.mean), Some(0.5));
    }
}
