//! Fidelity against a reference simulator: the simulator's rows next to CloudSim 3.0.3's
//! published results for the same days and policies, metric by metric.
//!
//! The reference is a CSV with the header
//! `day,policy,hosts,vms,energy_kwh,migrations,slav_pct,pdm_pct,slatah_pct`
//! (`../shared/planetlab/cloudsim-3.0.3-reference.csv`). Policy names match with `-` or `_`.
//!
//! Each metric's deviation on a day is relative: `ours / reference - 1`. Fidelity per policy is
//! the **mean absolute deviation** over the days (so a +10% day and a -10% day make 10%, not 0),
//! with the worst day beside it.
//!
//! PDM is compared against `slav_pct / slatah_pct`, not the `pdm_pct` column: CloudSim printed
//! PDM with two decimals (0.06 stands for anything in [0.055, 0.065), up to +-8% of the value),
//! while SLAV (= SLATAH x PDM) has three significant digits and SLATAH two decimals of a value
//! near 5 or 15, so their quotient recovers PDM to about 0.3%. ESV's reference is
//! `energy_kwh x slav_pct / 100`, as CloudSim defines it.

use crate::metrics::Report;
use serde::Serialize;
use std::collections::BTreeMap;
use thiserror::Error;

/// Columns the reference must have, in any order.
const COLUMNS: [&str; 7] = [
    "day",
    "policy",
    "energy_kwh",
    "migrations",
    "slav_pct",
    "pdm_pct",
    "slatah_pct",
];

#[derive(Debug, Error)]
pub enum FidelityError {
    #[error("{source_name}: the header lacks column '{column}' (expected {})", COLUMNS.join(","))]
    MissingColumn { source_name: String, column: String },
    #[error("{source_name} line {line}: {field} '{value}' is not a non-negative number")]
    BadNumber {
        source_name: String,
        line: usize,
        field: String,
        value: String,
    },
    #[error("{source_name} line {line}: {found} fields, the header has {expected}")]
    FieldCount {
        source_name: String,
        line: usize,
        found: usize,
        expected: usize,
    },
    #[error("{source_name} line {line}: day {day} policy {policy} appears twice")]
    Duplicate {
        source_name: String,
        line: usize,
        day: String,
        policy: String,
    },
    #[error("{source_name}: no rows")]
    Empty { source_name: String },
}

/// One reference row (CloudSim's figures for one policy on one day).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefRow {
    pub day: String,
    /// Normalized policy name (`_` replaced by `-`), as [`Report::policy`] spells it.
    pub policy: String,
    pub energy_kwh: f64,
    pub migrations: f64,
    pub slav_pct: f64,
    /// As printed (two decimals).
    pub pdm_pct: f64,
    pub slatah_pct: f64,
}

impl RefRow {
    /// PDM in percent recovered from SLAV / SLATAH (see the module doc); the printed column
    /// when SLATAH or SLAV is zero.
    pub fn pdm_derived_pct(&self) -> f64 {
        if self.slatah_pct > 0.0 && self.slav_pct > 0.0 {
            self.slav_pct / self.slatah_pct * 100.0
        } else {
            self.pdm_pct
        }
    }

    /// Energy x SLAV (kWh x fraction), CloudSim's ESV.
    pub fn esv(&self) -> f64 {
        self.energy_kwh * self.slav_pct / 100.0
    }
}

/// The reference rows, keyed by (day, normalized policy).
#[derive(Debug, Clone, Default)]
pub struct Reference {
    pub rows: BTreeMap<(String, String), RefRow>,
}

/// A policy name as the simulator spells it (`thr_mmt_0.8` -> `thr-mmt-0.8`).
pub fn normalize_policy(name: &str) -> String {
    name.trim().replace('_', "-").to_ascii_lowercase()
}

impl Reference {
    /// Parses the reference CSV; `source_name` (its path) names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Reference, FidelityError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err(FidelityError::Empty {
                source_name: source_name.into(),
            });
        };
        let header: Vec<&str> = header.split(',').map(str::trim).collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .ok_or_else(|| FidelityError::MissingColumn {
                    source_name: source_name.into(),
                    column: name.into(),
                })
        };
        let idx: Vec<usize> = COLUMNS.iter().map(|c| col(c)).collect::<Result<_, _>>()?;
        let mut rows = BTreeMap::new();
        for (i, line) in lines {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() != header.len() {
                return Err(FidelityError::FieldCount {
                    source_name: source_name.into(),
                    line: i + 1,
                    found: f.len(),
                    expected: header.len(),
                });
            }
            let num = |k: usize| {
                let v = f[idx[k]];
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| FidelityError::BadNumber {
                        source_name: source_name.into(),
                        line: i + 1,
                        field: COLUMNS[k].into(),
                        value: v.into(),
                    })
            };
            let row = RefRow {
                day: f[idx[0]].to_string(),
                policy: normalize_policy(f[idx[1]]),
                energy_kwh: num(2)?,
                migrations: num(3)?,
                slav_pct: num(4)?,
                pdm_pct: num(5)?,
                slatah_pct: num(6)?,
            };
            let key = (row.day.clone(), row.policy.clone());
            if rows.contains_key(&key) {
                return Err(FidelityError::Duplicate {
                    source_name: source_name.into(),
                    line: i + 1,
                    day: key.0,
                    policy: key.1,
                });
            }
            rows.insert(key, row);
        }
        if rows.is_empty() {
            return Err(FidelityError::Empty {
                source_name: source_name.into(),
            });
        }
        Ok(Reference { rows })
    }

    /// The days the reference covers, ascending.
    pub fn days(&self) -> Vec<String> {
        let mut d: Vec<String> = self.rows.keys().map(|(d, _)| d.clone()).collect();
        d.dedup();
        d
    }

    /// The policies the reference covers (normalized), ascending.
    pub fn policies(&self) -> Vec<String> {
        let mut p: Vec<String> = self.rows.keys().map(|(_, p)| p.clone()).collect();
        p.sort();
        p.dedup();
        p
    }
}

/// The metrics compared, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Energy,
    Migrations,
    Slatah,
    Pdm,
    Slav,
    Esv,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::Energy,
        Metric::Migrations,
        Metric::Slatah,
        Metric::Pdm,
        Metric::Slav,
        Metric::Esv,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Metric::Energy => "energy",
            Metric::Migrations => "migrations",
            Metric::Slatah => "SLATAH",
            Metric::Pdm => "PDM",
            Metric::Slav => "SLAV",
            Metric::Esv => "ESV",
        }
    }

    /// (ours, reference) for one row pair.
    fn values(self, r: &Report, c: &RefRow) -> (f64, f64) {
        match self {
            Metric::Energy => (r.energy_kwh, c.energy_kwh),
            Metric::Migrations => (r.migrations as f64, c.migrations),
            Metric::Slatah => (r.slatah_pct, c.slatah_pct),
            Metric::Pdm => (r.pdm_pct, c.pdm_derived_pct()),
            Metric::Slav => (r.slav_pct, c.slav_pct),
            Metric::Esv => (r.esv, c.esv()),
        }
    }
}

/// `ours / reference - 1`; zero when both are zero; `None` when only the reference is (no
/// relative deviation exists).
pub fn relative_deviation(ours: f64, reference: f64) -> Option<f64> {
    if reference != 0.0 {
        Some(ours / reference - 1.0)
    } else if ours == 0.0 {
        Some(0.0)
    } else {
        None
    }
}

/// One metric of one (day, policy) pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub ours: f64,
    pub reference: f64,
    /// `ours / reference - 1` (see [`relative_deviation`]).
    pub deviation: Option<f64>,
}

/// One (day, policy) pair with every metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairRow {
    pub day: String,
    pub policy: String,
    pub cells: BTreeMap<Metric, Cell>,
}

/// One metric of one policy over the days.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Mean of |deviation| over the days that have one.
    pub mad: f64,
    /// The largest |deviation|, signed, and its day.
    pub worst: f64,
    pub worst_day: String,
    /// Days with a deviation / days beyond the tolerance.
    pub days: usize,
    pub beyond: usize,
}

/// The comparison: every matched pair, and per policy (plus `all`) and metric the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fidelity {
    /// The tolerance `beyond` counts against (fraction, e.g. 0.15).
    pub tolerance: f64,
    pub pairs: Vec<PairRow>,
    /// (policy or `all`) -> metric -> summary.
    pub summary: BTreeMap<String, BTreeMap<Metric, Summary>>,
    /// Reference rows without a simulated row ("day policy").
    pub unmatched: Vec<String>,
}

/// Matches `reports` to the reference on (day, policy) and summarizes. Reports whose policy or
/// day the reference lacks are ignored; reference rows with no report are listed in `unmatched`.
pub fn compare(reports: &[Report], reference: &Reference, tolerance: f64) -> Fidelity {
    let mut pairs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in reports {
        let day = r.day.trim_end_matches('/');
        let day = day.rsplit('/').next().unwrap_or(day).to_string();
        let key = (day, normalize_policy(&r.policy));
        let Some(c) = reference.rows.get(&key) else {
            continue;
        };
        seen.insert(key.clone());
        let cells = Metric::ALL
            .iter()
            .map(|&m| {
                let (ours, reference) = m.values(r, c);
                let deviation = relative_deviation(ours, reference);
                (
                    m,
                    Cell {
                        ours,
                        reference,
                        deviation,
                    },
                )
            })
            .collect();
        pairs.push(PairRow {
            day: key.0,
            policy: key.1,
            cells,
        });
    }
    let unmatched = reference
        .rows
        .keys()
        .filter(|k| !seen.contains(*k))
        .map(|(d, p)| format!("{d} {p}"))
        .collect();
    let mut groups: BTreeMap<String, Vec<&PairRow>> = BTreeMap::new();
    for p in &pairs {
        groups.entry(p.policy.clone()).or_default().push(p);
        groups.entry("all".into()).or_default().push(p);
    }
    let summary = groups
        .into_iter()
        .map(|(g, rows)| {
            let per_metric = Metric::ALL
                .iter()
                .filter_map(|&m| summarize(&rows, m, tolerance).map(|s| (m, s)))
                .collect();
            (g, per_metric)
        })
        .collect();
    Fidelity {
        tolerance,
        pairs,
        summary,
        unmatched,
    }
}

/// One metric over some pairs; `None` when no pair has a deviation for it or every reference
/// value is zero (DVFS's migrations: nothing to be relative to).
fn summarize(rows: &[&PairRow], m: Metric, tolerance: f64) -> Option<Summary> {
    let devs: Vec<(f64, &str)> = rows
        .iter()
        .filter_map(|p| {
            let c = p.cells.get(&m)?;
            (c.reference != 0.0)
                .then_some(c.deviation)
                .flatten()
                .map(|d| (d, p.day.as_str()))
        })
        .collect();
    let (worst, worst_day) = devs
        .iter()
        .copied()
        .max_by(|a, b| a.0.abs().total_cmp(&b.0.abs()))?;
    Some(Summary {
        mad: devs.iter().map(|(d, _)| d.abs()).sum::<f64>() / devs.len() as f64,
        worst,
        worst_day: worst_day.to_string(),
        days: devs.len(),
        beyond: devs.iter().filter(|(d, _)| d.abs() > tolerance).count(),
    })
}

impl Fidelity {
    /// Pairs where some metric's deviation exceeds the tolerance: "day policy metric +x%".
    pub fn violations(&self, metrics: &[Metric]) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.pairs {
            for m in metrics {
                let Some(c) = p.cells.get(m) else { continue };
                match c.deviation {
                    Some(d) if d.abs() > self.tolerance => out.push(format!(
                        "{} {} {} {:+.1}%",
                        p.day,
                        p.policy,
                        m.label(),
                        d * 100.0
                    )),
                    None => out.push(format!(
                        "{} {} {}: reference is 0, ours {}",
                        p.day,
                        p.policy,
                        m.label(),
                        c.ours
                    )),
                    _ => {}
                }
            }
        }
        out
    }

    /// The per-pair table and the per-policy summary as text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "{:9} {:12} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>6} {:>8} {:>8} {:>6} {:>6}\n",
            "day", "policy", "kWh", "dE", "migr", "dM", "SLATAH", "dS", "PDM%", "cs PDM", "dP",
            "SLAV%", "cs SLAV", "dV", "dESV"
        ));
        for p in &self.pairs {
            let c = |m: Metric| p.cells.get(&m);
            let dev = |m: Metric| match c(m).map(|c| c.deviation) {
                Some(Some(d)) => format!("{:+.1}%", d * 100.0),
                Some(None) => "ref0".into(),
                None => "-".into(),
            };
            let v = |m: Metric| c(m).map_or(0.0, |c| c.ours);
            let r = |m: Metric| c(m).map_or(0.0, |c| c.reference);
            s.push_str(&format!(
                "{:9} {:12} {:>7.1} {:>6} {:>6} {:>6} {:>6.2} {:>6} {:>7.4} {:>7.4} {:>6} {:>8.5} {:>8.5} {:>6} {:>6}\n",
                p.day,
                p.policy,
                v(Metric::Energy),
                dev(Metric::Energy),
                v(Metric::Migrations),
                dev(Metric::Migrations),
                v(Metric::Slatah),
                dev(Metric::Slatah),
                v(Metric::Pdm),
                r(Metric::Pdm),
                dev(Metric::Pdm),
                v(Metric::Slav),
                r(Metric::Slav),
                dev(Metric::Slav),
                dev(Metric::Esv),
            ));
        }
        s.push_str(&format!(
            "\nmean absolute deviation over the days (worst day, signed); days beyond {:.0}%\n",
            self.tolerance * 100.0
        ));
        s.push_str(&format!("{:12}", "policy"));
        for m in Metric::ALL {
            s.push_str(&format!(" {:>19}", m.label()));
        }
        s.push('\n');
        for (g, per) in &self.summary {
            s.push_str(&format!("{g:12}"));
            for m in Metric::ALL {
                let cell = per.get(&m).map_or("n/a".to_string(), |x| {
                    format!(
                        "{:.1}% ({:+.0}%) {}/{}",
                        x.mad * 100.0,
                        x.worst * 100.0,
                        x.beyond,
                        x.days
                    )
                });
                s.push_str(&format!(" {cell:>19}"));
            }
            s.push('\n');
        }
        if !self.unmatched.is_empty() {
            s.push_str(&format!(
                "\nreference rows not simulated: {}\n",
                self.unmatched.join(", ")
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests;
