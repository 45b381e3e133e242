//! The demo's outputs: the table per technique (mean and spread over repetitions), the JSON
//! summary, and the report folder (raw series as JSON lines, `summary.json`, one SVG figure per
//! run, `index.html` linking them).

use crate::config::DemoConfig;
use crate::runner::RunOutcome;
use crate::summary::RunSummary;
use drover_core::migration::Technique;
use drover_core::units::fixed;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Mean, smallest and largest of some runs' figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Runs that had the figure.
    pub n: usize,
}

impl Spread {
    /// None when no value is given.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        Some(Spread {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: v.len(),
        })
    }

    /// `mean [min-max]` with `decimals`, the mean alone for one run, `-` for none.
    pub fn show(s: Option<Spread>, decimals: usize) -> String {
        match s {
            None => "-".into(),
            Some(s) if s.n == 1 || s.min == s.max => fixed(s.mean, decimals),
            Some(s) => format!(
                "{} [{}-{}]",
                fixed(s.mean, decimals),
                fixed(s.min, decimals),
                fixed(s.max, decimals)
            ),
        }
    }
}

/// One technique over its runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TechniqueRow {
    pub technique: Technique,
    pub runs: usize,
    pub degradation_pct: Option<Spread>,
    pub after_relief_pct: Option<Spread>,
    pub detection_s: Option<Spread>,
    pub relief_s: Option<Spread>,
    /// Runs in which h1 was relieved within the loaded phase.
    pub relieved_runs: usize,
    pub energy_wh: Option<Spread>,
    pub mean_hosts_on: Option<Spread>,
    pub repacked_runs: usize,
    pub integrity_errors: u64,
    /// Each relief migration's lost work over its floor.
    pub lost_over_floor: Option<Spread>,
}

/// The rows of the table, one per technique in `order`.
pub fn rows(order: &[Technique], runs: &[RunSummary]) -> Vec<TechniqueRow> {
    order
        .iter()
        .map(|&t| {
            let of = |r: &&RunSummary| r.technique == t;
            let mine: Vec<&RunSummary> = runs.iter().filter(of).collect();
            TechniqueRow {
                technique: t,
                runs: mine.len(),
                degradation_pct: Spread::of(mine.iter().filter_map(|r| r.degradation_pct)),
                after_relief_pct: Spread::of(mine.iter().filter_map(|r| r.after_relief_pct)),
                detection_s: Spread::of(mine.iter().filter_map(|r| r.detection_s)),
                relief_s: Spread::of(mine.iter().filter_map(|r| r.relief_s)),
                relieved_runs: mine.iter().filter(|r| r.relief_s.is_some()).count(),
                energy_wh: Spread::of(mine.iter().map(|r| r.energy_wh)),
                mean_hosts_on: Spread::of(mine.iter().filter_map(|r| r.mean_hosts_on)),
                repacked_runs: mine.iter().filter(|r| r.repacked).count(),
                integrity_errors: mine.iter().map(|r| r.integrity_errors).sum(),
                lost_over_floor: Spread::of(
                    mine.iter()
                        .flat_map(|r| &r.migrations)
                        .filter(|m| m.migration.kind.as_deref() == Some("relief"))
                        .filter_map(|m| m.lost_s.map(|l| l / m.floor_s)),
                ),
            }
        })
        .collect()
}

/// The table (a header line and a row per technique).
pub fn table(rows: &[TechniqueRow]) -> String {
    let mut out = format!(
        "{:<9} {:>4} {:>20} {:>20} {:>15} {:>15} {:>8} {:>15} {:>11} {:>8} {:>8} {:>5}\n",
        "technique",
        "runs",
        "degradation %",
        "after relief %",
        "detection s",
        "relief s",
        "relieved",
        "lost/floor",
        "energy Wh",
        "hosts on",
        "repacked",
        "integ"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<9} {:>4} {:>20} {:>20} {:>15} {:>15} {:>8} {:>15} {:>11} {:>8} {:>8} {:>5}",
            r.technique.as_str(),
            r.runs,
            Spread::show(r.degradation_pct, 1),
            Spread::show(r.after_relief_pct, 1),
            Spread::show(r.detection_s, 1),
            Spread::show(r.relief_s, 1),
            format!("{}/{}", r.relieved_runs, r.runs),
            Spread::show(r.lost_over_floor, 1),
            Spread::show(r.energy_wh, 2),
            Spread::show(r.mean_hosts_on, 2),
            format!("{}/{}", r.repacked_runs, r.runs),
            r.integrity_errors,
        );
    }
    if rows.iter().any(|r| r.after_relief_pct.is_none()) {
        // An empty window is not a zero: say why there is no number.
        let _ = writeln!(
            out,
            "after relief % '-': no relief, or relieved less than {} s before the fall (each run's \
             note says which)",
            2.0 * crate::summary::SETTLED_S
        );
    }
    out
}

/// Each run's migrations, one line each: when, what, how it ended, lost work beside floor.
pub fn migration_lines(runs: &[RunSummary]) -> String {
    let mut out = String::new();
    for r in runs {
        for m in &r.migrations {
            let g = &m.migration;
            let _ = writeln!(
                out,
                "{}-{}: {} {} {}->{} {} at +{} s, lost {} s (floor {} s){}",
                r.technique.as_str(),
                r.run,
                g.kind.as_deref().unwrap_or("?"),
                g.vm,
                g.from,
                g.to,
                g.technique,
                fixed(m.at_s, 1),
                m.lost_s.map(|l| fixed(l, 2)).unwrap_or_else(|| "-".into()),
                fixed(m.floor_s, 2),
                match (&g.state, &g.error) {
                    (s, Some(e)) => format!(", {s}: {e}"),
                    (s, None) => format!(", {s}"),
                }
            );
        }
    }
    out
}

/// Each run's notes (what the figures do not show: why a figure is missing, a VM that never
/// reported, ...), one line each.
pub fn note_lines(runs: &[RunSummary]) -> String {
    let mut out = String::new();
    for r in runs {
        for n in &r.notes {
            let _ = writeln!(out, "{}-{} note: {n}", r.technique.as_str(), r.run);
        }
    }
    out
}

/// `summary.json` (and `--json`): the sizes, every run, and the rows.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub config: &'a DemoConfig,
    pub rows: Vec<TechniqueRow>,
    pub runs: Vec<&'a RunSummary>,
}

/// Why the report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: plotting: {message}")]
    Plot { path: PathBuf, message: String },
}

/// Whether `name` is a file the demo writes in its report folder: `index.html`,
/// `summary.json`, or `<technique>-<run>.svg`, `series-<technique>-<run>.jsonl`,
/// `manager-<technique>-<run>.log|.toml`.
pub fn is_demo_file(name: &str) -> bool {
    if name == "index.html" || name == "summary.json" {
        return true;
    }
    let run_of = |rest: &str, ext: &str| {
        rest.strip_suffix(ext)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    Technique::ALL.iter().any(|t| {
        let t = format!("{}-", t.as_str());
        let after = |prefix: &str| name.strip_prefix(prefix).and_then(|r| r.strip_prefix(&t));
        name.strip_prefix(&t).is_some_and(|r| run_of(r, ".svg"))
            || after("series-").is_some_and(|r| run_of(r, ".jsonl"))
            || after("manager-").is_some_and(|r| run_of(r, ".log") || run_of(r, ".toml"))
    })
}

/// Removes what an earlier demo wrote in `dir` (only the files [`is_demo_file`] names), so
/// that a report folder used again holds one demo's files, not a mix; returns how many.
///
/// # Errors
/// [`ReportError`] naming the folder or the file.
pub fn clear_earlier(dir: &Path) -> Result<usize, ReportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let ours = entry.file_name().to_str().is_some_and(is_demo_file);
        if ours && entry.file_type().map_err(io(&entry.path()))?.is_file() {
            std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// An experiment's `index.html`: `title` and `heading`, each of `blocks` as preformatted
/// text, a link to `summary.json`, then per figure `(file stem, caption)` a heading, the
/// caption and `<stem>.svg`. Everything given is escaped.
pub(crate) fn index_html(
    title: &str,
    heading: &str,
    blocks: &[String],
    figures: &[(String, String)],
) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head><body>\n\
         <h1>{}</h1>\n",
        esc(title),
        esc(heading)
    );
    for b in blocks {
        let _ = writeln!(html, "<pre>{}</pre>", esc(b));
    }
    html.push_str("<p><a href=\"summary.json\">summary.json</a></p>\n");
    for (stem, caption) in figures {
        let stem = esc(stem);
        let _ = write!(
            html,
            "<h2>{stem}</h2>\n<p>{}</p>\n<img src=\"{stem}.svg\" alt=\"{stem}\">\n",
            esc(caption)
        );
    }
    html.push_str("</body></html>\n");
    html
}

/// Writes `text` to `path`, the error naming the file.
pub(crate) fn write(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The file stem of a run's series and figure.
pub fn stem(r: &RunSummary) -> String {
    format!("{}-{}", r.technique.as_str(), r.run)
}

/// Writes one run's series (`series-<technique>-<run>.jsonl`) and figure (`<stem>.svg`).
///
/// # Errors
/// [`ReportError`] naming the file.
pub fn write_run(dir: &Path, run: &RunOutcome, config: &DemoConfig) -> Result<(), ReportError> {
    let stem = stem(&run.summary);
    let mut lines = String::new();
    for s in &run.series {
        lines.push_str(&serde_json::to_string(s).unwrap_or_default());
        lines.push('\n');
    }
    write(&dir.join(format!("series-{stem}.jsonl")), &lines)?;
    let svg = dir.join(format!("{stem}.svg"));
    crate::plot::figure(&svg, run, config).map_err(|message| ReportError::Plot {
        path: svg.clone(),
        message,
    })
}

/// Writes `summary.json` and `index.html` (after every run's files).
///
/// # Errors
/// [`ReportError`] naming the file.
pub fn write_index(dir: &Path, summary: &Summary<'_>) -> Result<(), ReportError> {
    let json = serde_json::to_string_pretty(summary).unwrap_or_default();
    write(&dir.join("summary.json"), &json)?;
    let runs: Vec<RunSummary> = summary.runs.iter().map(|r| (*r).clone()).collect();
    let mut html = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>drover demo</title></head><body>\n\
         <h1>drover demo: reactive consolidation</h1>\n",
    );
    let _ = write!(
        html,
        "<pre>{}</pre>\n<pre>{}</pre>\n<p><a href=\"summary.json\">summary.json</a></p>\n",
        escape(&table(&summary.rows)),
        escape(&(migration_lines(&runs) + &note_lines(&runs)))
    );
    for r in &runs {
        let stem = stem(r);
        let _ = write!(
            html,
            "<h2>{stem}</h2>\n<p><a href=\"series-{stem}.jsonl\">series-{stem}.jsonl</a></p>\n\
             <img src=\"{stem}.svg\" alt=\"{stem}\">\n"
        );
    }
    html.push_str("</body></html>\n");
    write(&dir.join("index.html"), &html)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_and_their_text() {
        let s = Spread::of([4.0, 6.0, 11.0]).expect("spread");
        assert_eq!((s.mean, s.min, s.max, s.n), (7.0, 4.0, 11.0, 3));
        assert_eq!(Spread::show(Some(s), 1), "7.0 [4.0-11.0]");
        assert_eq!(Spread::show(Spread::of([2.5]), 1), "2.5");
        assert_eq!(Spread::show(None, 1), "-");
        assert_eq!(Spread::of(std::iter::empty()), None);
    }

    fn run(t: Technique, pct: f64, relief: Option<f64>, lost: f64) -> RunSummary {
        use crate::summary::{MigrationLoss, MigrationSeen, Phases};
        RunSummary {
            technique: t,
            run: 1,
            phases: Phases {
                start_s: 0.0,
                raised_s: 10.0,
                fell_s: 40.0,
                end_s: 60.0,
            },
            degradation_pct: Some(pct),
            after_relief_pct: None,
            vms: vec![],
            onset_s: Some(1.0),
            detection_s: Some(2.0),
            relief_s: relief,
            migrations: vec![MigrationLoss {
                migration: MigrationSeen {
                    id: "m".into(),
                    vm: "d1".into(),
                    from: "h1".into(),
                    to: "h2".into(),
                    kind: Some("relief".into()),
                    technique: t.as_str().into(),
                    state: "completed".into(),
                    started_s: 15.0,
                    ended_s: Some(16.0),
                    switchover_s: None,
                    downtime_ms: None,
                    transferred_bytes: None,
                    error: None,
                },
                at_s: 5.0,
                lost_s: Some(lost),
                floor_s: 0.5,
            }],
            energy_wh: 3.0,
            mean_hosts_on: Some(1.5),
            peak_hosts_on: 2,
            standby_at_end: 2,
            repacked: relief.is_some(),
            integrity_errors: 0,
            notes: vec![],
        }
    }

    #[test]
    fn rows_gather_each_techniques_runs_in_order() {
        let runs = [
            run(Technique::Postcopy, 10.0, Some(6.0), 1.0),
            run(Technique::Precopy, 30.0, None, 3.0),
            run(Technique::Postcopy, 20.0, Some(8.0), 2.0),
        ];
        let rows = rows(&[Technique::Precopy, Technique::Postcopy], &runs);
        assert_eq!(rows[0].technique, Technique::Precopy);
        assert_eq!((rows[0].runs, rows[0].relieved_runs), (1, 0));
        assert_eq!(rows[0].relief_s, None);
        let post = &rows[1];
        assert_eq!(
            (post.runs, post.relieved_runs, post.repacked_runs),
            (2, 2, 2)
        );
        assert_eq!(post.degradation_pct.map(|s| s.mean), Some(15.0));
        // Lost work over its 0.5 s floor: 2 and 4.
        assert_eq!(
            post.lost_over_floor.map(|s| (s.min, s.max)),
            Some((2.0, 4.0))
        );
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        let want = 3 + usize::from(rows.iter().any(|r| r.after_relief_pct.is_none()));
        assert_eq!(lines.len(), want, "{text}");
        if want == 4 {
            assert!(
                lines[3].starts_with("after relief % '-': no relief"),
                "{text}"
            );
        }
        assert!(
            lines[1].starts_with("precopy") && lines[1].contains("0/1"),
            "{text}"
        );
        assert!(lines[2].contains("15.0 [10.0-20.0]"), "{text}");
        let listed = migration_lines(&runs);
        assert!(listed.contains("postcopy-1: relief d1 h1->h2 postcopy at +5.0 s, lost 1.00 s (floor 0.50 s), completed"), "{listed}");
        let mut noted = runs[0].clone();
        noted.notes = vec!["after relief: h1 was not relieved before the fall".into()];
        assert_eq!(
            note_lines(&[noted]),
            format!(
                "{}-{} note: after relief: h1 was not relieved before the fall\n",
                runs[0].technique.as_str(),
                runs[0].run
            )
        );
    }

    #[test]
    fn only_the_demos_own_files_are_cleared() {
        for ours in [
            "index.html",
            "summary.json",
            "postcopy-1.svg",
            "series-auto-12.jsonl",
            "manager-precopy-3.log",
            "manager-hybrid-1.toml",
        ] {
            assert!(is_demo_file(ours), "{ours}");
        }
        for theirs in [
            "notes.txt",
            "postcopy-.svg",
            "postcopy-1.svg.bak",
            "series-x-1.jsonl",
            "manager-postcopy-a.log",
            "trx-1.svg",
            "../index.html",
        ] {
            assert!(!is_demo_file(theirs), "{theirs}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["index.html", "auto-2.svg", "notes.txt"] {
            std::fs::write(dir.path().join(f), "x").expect("write");
        }
        std::fs::create_dir(dir.path().join("summary.json")).expect("a folder so named");
        assert_eq!(clear_earlier(dir.path()).expect("cleared"), 2);
        assert!(dir.path().join("notes.txt").exists());
        assert!(dir.path().join("summary.json").is_dir());
        assert!(!dir.path().join("auto-2.svg").exists());
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("a<b>&"), "a&lt;b&gt;&amp;");
    }
}
