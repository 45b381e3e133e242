//! Fitting the judge's parameters to measured rows, and measuring the fit's error.
//!
//! Every coefficient comes from a closed-form least-squares line (or a line through the origin)
//! over one technique's converged rows, in the order the forms chain: the baseline memory from
//! post-copy's bytes (post-copy sends each page once), then per technique the resent bytes, the
//! duration against the predicted bytes, the downtime, and the lost work beyond the downtime.
//! The convergence threshold is the pressure that misclassifies fewest pre-copy rows (the
//! geometric midpoint of the gap it falls in); the escalation threshold likewise splits the
//! rows that did not converge into completed and cancelled. A pre-copy end's figures are its
//! rows' means (an end no row shows takes the other's). The same rows give the same
//! parameters.

use super::rows::Measured;
use super::{Case, JudgeParams, PrecopyEnd, Tail, TechniqueFit};
use drover_core::migration::Technique;
use std::fmt::Write as _;
use thiserror::Error;

/// Rows that cannot determine a parameter.
#[derive(Debug, Error, PartialEq)]
pub enum FitError {
    #[error("the fit needs at least {need} {what}; the rows have {have}")]
    TooFew {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("the {technique} rows' duration falls as bytes / bandwidth grows (slope {slope}): expected it to rise")]
    Falling { technique: Technique, slope: f64 },
}

/// `(intercept, slope)` of the least-squares line through `points`; None with fewer than two
/// distinct x.
fn line_fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 1e-12 * mx.abs().max(1.0).powi(2) {
        return None;
    }
    let slope = sxy / sxx;
    Some((my - slope * mx, slope))
}

/// Slope of the least-squares line through the origin, at least 0 (every such coefficient is
/// a cost: resent bytes, lost work); 0 when no x is non-zero (the rows say nothing about it).
fn origin_fit(points: &[(f64, f64)]) -> f64 {
    let sxx: f64 = points.iter().map(|p| p.0 * p.0).sum();
    if sxx <= 0.0 {
        return 0.0;
    }
    (points.iter().map(|p| p.0 * p.1).sum::<f64>() / sxx).max(0.0)
}

/// `(intercept, slope)` with a slope of at least 0: the least-squares line, or the mean when
/// that line falls (more pending bytes never shorten a pause).
fn rising_fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    match line_fit(points) {
        Some((a, b)) if b >= 0.0 => Some((a, b)),
        _ => mean(points.iter().map(|p| p.1)).map(|m| (m, 0.0)),
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The judge's input for a measured row, reading its full pass as `min(memory, baseline + W)`.
pub fn case_of(row: &Measured, baseline_bytes: f64) -> Case {
    Case {
        pass_bytes: row
            .memory_bytes
            .min(baseline_bytes + row.wss_bytes)
            .max(0.0),
        wss_bytes: row.wss_bytes,
        dirty_bps: row.dirty_bps,
        bandwidth_bps: row.bandwidth_bps,
    }
}

fn is_precopy(t: Technique) -> bool {
    matches!(t, Technique::Precopy | Technique::Auto)
}

/// Non-zero memory beside the working set, from post-copy rows that did not send all of RAM.
fn fit_baseline(rows: &[Measured]) -> Result<f64, FitError> {
    let post: Vec<&Measured> = rows
        .iter()
        .filter(|r| r.technique == Technique::Postcopy && r.converged)
        .collect();
    let partial = post
        .iter()
        .filter(|r| r.bytes < r.memory_bytes * 0.98)
        .map(|r| r.bytes - r.wss_bytes);
    mean(partial)
        .or_else(|| mean(post.iter().map(|r| r.bytes - r.wss_bytes)))
        .map(|b| b.max(0.0))
        .ok_or(FitError::TooFew {
            what: "converged post-copy rows",
            need: 1,
            have: 0,
        })
}

fn fit_technique(
    rows: &[Measured],
    technique: Technique,
    baseline: f64,
    limit_s: f64,
) -> Result<TechniqueFit, FitError> {
    let mine: Vec<(&Measured, Case)> = rows
        .iter()
        .filter(|r| r.technique == technique && r.converged)
        .map(|r| (r, case_of(r, baseline)))
        .collect();
    let resend = origin_fit(
        &mine
            .iter()
            .map(|(r, c)| (c.redirtied(), r.bytes - c.pass_bytes))
            .collect::<Vec<_>>(),
    );
    let predicted_bytes = |c: &Case| c.pass_bytes + resend.max(0.0) * c.redirtied();
    let duration: Vec<(f64, f64)> = mine
        .iter()
        .map(|(r, c)| (predicted_bytes(c) / c.bandwidth(), r.total_s))
        .collect();
    let (fixed_s, transfer_factor) = line_fit(&duration).ok_or(FitError::TooFew {
        what: match technique {
            Technique::Postcopy => "converged post-copy rows of different sizes or bandwidths",
            Technique::Hybrid => "converged hybrid rows of different sizes or bandwidths",
            _ => "converged pre-copy rows of different sizes or bandwidths",
        },
        need: 2,
        have: mine.len(),
    })?;
    if transfer_factor <= 0.0 {
        return Err(FitError::Falling {
            technique,
            slope: transfer_factor,
        });
    }
    let pending = |c: &Case| c.pass_bytes.min(c.bandwidth() * limit_s);
    let pauses: Vec<(f64, f64)> = mine
        .iter()
        .filter_map(|(r, c)| r.downtime_s.map(|d| (pending(c), d)))
        .collect();
    let (pause_s, pause_per_byte) = rising_fit(&pauses).unwrap_or((0.0, 0.0));
    let lost: Vec<(f64, f64)> = mine
        .iter()
        .filter_map(|(r, c)| {
            let total = fixed_s + transfer_factor * predicted_bytes(c) / c.bandwidth();
            let down = (pause_s + pause_per_byte * pending(c)).clamp(0.0, total.max(0.0));
            r.lost_work_s
                .map(|l| (c.lost_regressor(technique, total.max(1e-3)), l - down))
        })
        .collect();
    Ok(TechniqueFit {
        resend,
        fixed_s,
        transfer_factor,
        pause_s,
        pause_per_byte,
        lost_coef: origin_fit(&lost),
    })
}

/// The pressure threshold misclassifying fewest `(pressure, converged)` points.
fn fit_threshold(points: &mut [(f64, bool)]) -> f64 {
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Threshold below point i: everything before i is predicted to converge.
    let mut best = (usize::MAX, 0usize);
    for i in 0..=points.len() {
        if i > 0 && i < points.len() && points[i].0 == points[i - 1].0 {
            continue;
        }
        let wrong = points[..i].iter().filter(|p| !p.1).count()
            + points[i..].iter().filter(|p| p.1).count();
        if wrong < best.0 {
            best = (wrong, i);
        }
    }
    let i = best.1;
    match (
        i.checked_sub(1).map(|j| points[j].0),
        points.get(i).map(|p| p.0),
    ) {
        (Some(lo), Some(hi)) if lo > 0.0 => (lo * hi).sqrt(),
        (Some(lo), Some(hi)) => (lo + hi) / 2.0,
        (Some(lo), None) => lo.max(1e-9) * 2.0,
        (None, Some(hi)) => (hi / 2.0).max(1e-9),
        (None, None) => 1.0,
    }
}

/// The means of the rows of one pre-copy end.
fn tail(rows: &[&Measured]) -> Option<Tail> {
    let total_s = mean(rows.iter().map(|r| r.total_s))?;
    let share = |v: Option<f64>| v.unwrap_or(0.0).clamp(0.0, 1.0);
    Some(Tail {
        total_s,
        downtime_s: mean(rows.iter().filter_map(|r| r.downtime_s)).unwrap_or(0.0),
        lost_share: share(mean(
            rows.iter()
                .filter_map(|r| r.lost_work_s.map(|l| l / r.total_s.max(1e-3))),
        )),
        link_share: share(mean(
            rows.iter()
                .map(|r| r.bytes / (r.bandwidth_bps * r.total_s.max(1e-3))),
        )),
    })
}

/// How a measured pre-copy ended.
fn measured_end(row: &Measured) -> PrecopyEnd {
    match (row.converged, row.moved) {
        (true, _) => PrecopyEnd::Converged,
        (false, true) => PrecopyEnd::Escalated,
        (false, false) => PrecopyEnd::Cancelled,
    }
}

/// Fits the judge to `rows`, with the downtime limit `downtime_limit_s` they ran with.
///
/// # Errors
/// [`FitError::TooFew`] naming the rows a parameter lacks: at least one converged post-copy
/// row, two converged rows of different `bytes / B` per technique, one pre-copy row that did
/// not converge.
pub fn fit(rows: &[Measured], downtime_limit_s: f64) -> Result<JudgeParams, FitError> {
    let baseline = fit_baseline(rows)?;
    let precopy = fit_technique(rows, Technique::Precopy, baseline, downtime_limit_s)?;
    let postcopy = fit_technique(rows, Technique::Postcopy, baseline, downtime_limit_s)?;
    let hybrid = fit_technique(rows, Technique::Hybrid, baseline, downtime_limit_s)?;
    let pre: Vec<(&Measured, f64)> = rows
        .iter()
        .filter(|r| is_precopy(r.technique))
        .map(|r| (r, case_of(r, baseline).pressure(downtime_limit_s)))
        .collect();
    let mut converging: Vec<(f64, bool)> = pre.iter().map(|(r, p)| (*p, r.converged)).collect();
    let convergence_pressure = fit_threshold(&mut converging);
    let failed: Vec<&(&Measured, f64)> = pre.iter().filter(|(r, _)| !r.converged).collect();
    let mut completing: Vec<(f64, bool)> = failed.iter().map(|(r, p)| (*p, r.moved)).collect();
    let of_end = |end| -> Vec<&Measured> {
        failed
            .iter()
            .filter(|(r, _)| measured_end(r) == end)
            .map(|(r, _)| *r)
            .collect()
    };
    let (escalated, cancelled) = (
        tail(&of_end(PrecopyEnd::Escalated)),
        tail(&of_end(PrecopyEnd::Cancelled)),
    );
    let (escalated, cancelled) = match (escalated, cancelled) {
        (Some(e), Some(c)) => (e, c),
        (Some(e), None) => (e, e),
        (None, Some(c)) => (c, c),
        (None, None) => {
            return Err(FitError::TooFew {
                what: "pre-copy rows that did not converge",
                need: 1,
                have: 0,
            })
        }
    };
    Ok(JudgeParams {
        baseline_bytes: baseline,
        downtime_limit_s,
        convergence_pressure,
        escalation_pressure: fit_threshold(&mut completing).max(convergence_pressure),
        escalated,
        cancelled,
        precopy,
        postcopy,
        hybrid,
        rows: rows.len(),
    })
}

/// A figure the judge predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Figure {
    Duration,
    Bytes,
    Downtime,
    LostWork,
}

impl Figure {
    fn name(self) -> &'static str {
        match self {
            Figure::Duration => "duration s",
            Figure::Bytes => "bytes (MB)",
            Figure::Downtime => "downtime s",
            Figure::LostWork => "lost work s",
        }
    }

    /// Rows measuring less than this are left out of the relative error (a ratio to almost
    /// nothing says nothing), not out of the absolute one.
    fn floor(self) -> f64 {
        match self {
            Figure::Duration => 1e-3,
            Figure::Bytes => 1.0,
            Figure::Downtime => 1e-3,
            Figure::LostWork => 0.05,
        }
    }

    fn scale(self) -> f64 {
        if self == Figure::Bytes {
            1e-6
        } else {
            1.0
        }
    }
}

/// One measured figure against its prediction.
#[derive(Debug, Clone, Copy)]
struct Residual {
    technique: Technique,
    figure: Figure,
    measured: f64,
    predicted: f64,
}

/// The error of one figure of one technique.
#[derive(Debug, Clone, PartialEq)]
pub struct FigureError {
    pub technique: Technique,
    pub figure: Figure,
    /// Rows compared (measured and predicted agree on whether the VM moved).
    pub rows: usize,
    /// Mean measured value, in the figure's unit.
    pub mean_measured: f64,
    /// Mean absolute error, in the figure's unit.
    pub mae: f64,
    /// Mean absolute relative error over the rows measuring at least the figure's floor;
    /// None if none does.
    pub mare: Option<f64>,
}

/// How well a judge reproduces rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Errors {
    pub figures: Vec<FigureError>,
    /// Pre-copy rows whose end (converged, completed after escalating, cancelled) it predicted
    /// right, of all pre-copy rows.
    pub convergence_right: usize,
    pub convergence_rows: usize,
}

/// Pushes `row`'s figures against their prediction (converged rows predicted to converge);
/// returns whether a pre-copy's end was predicted right (None for other techniques).
fn residuals(params: &JudgeParams, row: &Measured, out: &mut Vec<Residual>) -> Option<bool> {
    let case = case_of(row, params.baseline_bytes);
    let o = params.judge(&case, row.technique);
    let predicted_end = if is_precopy(row.technique) {
        params.precopy_end(&case)
    } else {
        PrecopyEnd::Converged
    };
    let end_right = predicted_end == measured_end(row);
    let compare = end_right && row.converged;
    let mut push = |figure, measured: Option<f64>, predicted| {
        if let (Some(measured), true) = (measured, compare) {
            out.push(Residual {
                technique: row.technique,
                figure,
                measured,
                predicted,
            });
        }
    };
    push(Figure::Duration, Some(row.total_s), o.total_s);
    push(Figure::Bytes, Some(row.bytes), o.bytes);
    push(Figure::Downtime, row.downtime_s, o.downtime_s);
    push(Figure::LostWork, row.lost_work_s, o.lost_work_s);
    is_precopy(row.technique).then_some(end_right)
}

fn summarize(res: &[Residual], convergence: &[bool]) -> Errors {
    let mut keys: Vec<(Technique, Figure)> = res.iter().map(|r| (r.technique, r.figure)).collect();
    keys.sort();
    keys.dedup();
    let figures = keys
        .into_iter()
        .map(|(technique, figure)| {
            let mine: Vec<&Residual> = res
                .iter()
                .filter(|r| r.technique == technique && r.figure == figure)
                .collect();
            let n = mine.len().max(1) as f64;
            let s = figure.scale();
            FigureError {
                technique,
                figure,
                rows: mine.len(),
                mean_measured: mine.iter().map(|r| r.measured * s).sum::<f64>() / n,
                mae: mine
                    .iter()
                    .map(|r| (r.predicted - r.measured).abs() * s)
                    .sum::<f64>()
                    / n,
                mare: mean(
                    mine.iter()
                        .filter(|r| r.measured >= figure.floor())
                        .map(|r| (r.predicted - r.measured).abs() / r.measured),
                ),
            }
        })
        .collect();
    Errors {
        figures,
        convergence_right: convergence.iter().filter(|c| **c).count(),
        convergence_rows: convergence.len(),
    }
}

/// The error of `params` on the rows it was fitted to.
pub fn in_sample(params: &JudgeParams, rows: &[Measured]) -> Errors {
    let mut res = Vec::new();
    let conv: Vec<bool> = rows
        .iter()
        .filter_map(|r| residuals(params, r, &mut res))
        .collect();
    summarize(&res, &conv)
}

/// Leave-one-out error: each row predicted by the fit to all the others. Rows whose removal
/// leaves a parameter undetermined are skipped (their count is returned beside the errors).
pub fn leave_one_out(rows: &[Measured], downtime_limit_s: f64) -> (Errors, usize) {
    let mut res = Vec::new();
    let mut conv = Vec::new();
    let mut skipped = 0;
    for i in 0..rows.len() {
        let others: Vec<Measured> = rows
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, r)| *r)
            .collect();
        match fit(&others, downtime_limit_s) {
            Ok(p) => conv.extend(residuals(&p, &rows[i], &mut res)),
            Err(_) => skipped += 1,
        }
    }
    (summarize(&res, &conv), skipped)
}

/// A Markdown table of in-sample and leave-one-out errors, figure by figure.
pub fn markdown(fitted: &Errors, loo: &Errors) -> String {
    let mut s = String::from(
        "| technique | figure | rows | mean measured | MAE | MARE | leave-one-out MAE | leave-one-out MARE |\n|---|---|---|---|---|---|---|---|\n",
    );
    let pct = |m: Option<f64>| m.map_or("-".into(), |m| format!("{:.1}%", m * 100.0));
    for f in &fitted.figures {
        let l = loo
            .figures
            .iter()
            .find(|l| l.technique == f.technique && l.figure == f.figure);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3} | {:.3} | {} | {} | {} |",
            f.technique,
            f.figure.name(),
            f.rows,
            f.mean_measured,
            f.mae,
            pct(f.mare),
            l.map_or("-".into(), |l| format!("{:.3}", l.mae)),
            l.map_or("-".into(), |l| pct(l.mare)),
        );
    }
    let _ = writeln!(
        s,
        "\nPre-copy end (converged, completed after escalating, cancelled) predicted right: {} of {} rows (leave-one-out: {} of {}).",
        fitted.convergence_right,
        fitted.convergence_rows,
        loo.convergence_right,
        loo.convergence_rows
    );
    s
}

#[cfg(test)]
#[path = "fit_tests.rs"]
mod tests;
