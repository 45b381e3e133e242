//! Input checks shared by every implementation, made before anything is written, so that the
//! SQLite store and the fake refuse the same things with the same errors.

use super::error::{Result, StoreError};
use super::records::{JournalEntry, StepRecord};
use super::types::{HostSpec, Look, Sample};

fn invalid(path: &str, table: &'static str, what: String) -> StoreError {
    StoreError::Invalid {
        path: path.to_string(),
        table,
        what,
    }
}

/// A time: finite and non-negative (also what makes the f64 keys of the fake and the
/// minute arithmetic sound). Returns it with -0 made +0.
pub(crate) fn time(path: &str, table: &'static str, what: &str, t: f64) -> Result<f64> {
    if t.is_finite() && t >= 0.0 {
        Ok(t + 0.0)
    } else {
        Err(invalid(
            path,
            table,
            format!("{what} {t} is not a finite non-negative time"),
        ))
    }
}

/// A name or id: not empty.
pub(crate) fn name(path: &str, table: &'static str, what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(invalid(path, table, format!("{what} is empty")));
    }
    Ok(())
}

pub(crate) fn host(path: &str, spec: &HostSpec, at_s: f64) -> Result<()> {
    name(path, "host", "host name", &spec.name)?;
    name(path, "host", "agent URL", &spec.agent_url)?;
    time(path, "host", "time", at_s)?;
    if let Some(p) = spec.power {
        let ok = p.idle_w.is_finite() && p.peak_w.is_finite() && 0.0 <= p.idle_w;
        if !ok || p.peak_w < p.idle_w {
            return Err(invalid(
                path,
                "host",
                format!(
                    "host {}: power model idle {} W, peak {} W: need 0 <= idle <= peak",
                    spec.name, p.idle_w, p.peak_w
                ),
            ));
        }
    }
    Ok(())
}

/// A sample's numbers; `who` names its series in the error (made only then: a look checks
/// 11,000 samples a second at the scale).
fn sample(path: &str, who: impl Fn() -> String, s: &Sample) -> Result<()> {
    let fields = [
        ("load", Some(s.load)),
        ("cpu_cores", Some(s.cpu_cores)),
        ("dirty_bps", s.dirty_bps),
        ("rx_bps", Some(s.rx_bps)),
        ("tx_bps", Some(s.tx_bps)),
    ];
    for (field, v) in fields {
        if let Some(v) = v {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(
                    path,
                    "sample",
                    format!("{}: {field} {v} is not a finite non-negative number", who()),
                ));
            }
        }
    }
    if i64::try_from(s.memory_bytes).is_err() {
        return Err(invalid(
            path,
            "sample",
            format!("{}: memory_bytes {} is too large", who(), s.memory_bytes),
        ));
    }
    Ok(())
}

/// A look: its time, names and samples.
pub(crate) fn look(path: &str, look: &Look) -> Result<()> {
    time(path, "sample", "look time", look.at_s)?;
    for h in &look.hosts {
        name(path, "host", "host name", &h.name)?;
        if let Some(s) = &h.sample {
            sample(path, || format!("host {}", h.name), s)?;
        }
    }
    for v in &look.vms {
        name(path, "vm", "VM name", &v.name)?;
        if v.host.is_empty() {
            name(path, "vm", &format!("VM {}'s host", v.name), &v.host)?;
        }
        if let Some(s) = &v.sample {
            sample(path, || format!("VM {}", v.name), s)?;
        }
    }
    journal(path, &look.journal)
}

/// Journal lines: their times and subjects.
pub(crate) fn journal(path: &str, entries: &[JournalEntry]) -> Result<()> {
    for e in entries {
        time(path, "journal", "journal time", e.at_s)?;
        name(path, "journal", "journal subject", &e.subject)?;
    }
    Ok(())
}

/// A step: its time, ids, and journal lines.
pub(crate) fn step(path: &str, step: &StepRecord) -> Result<()> {
    time(path, "control", "step time", step.at_s)?;
    journal(path, &step.journal)?;
    for p in &step.plans {
        name(path, "plan", "plan id", &p.id)?;
        time(
            path,
            "plan",
            &format!("plan {}'s creation time", p.id),
            p.created_s,
        )?;
    }
    if let Some(d) = &step.decision {
        time(path, "decision", "decision time", d.now_s)?;
    }
    for m in &step.moves {
        name(path, "move", "move id", &m.id)?;
        name(path, "move", &format!("move {}'s plan", m.id), &m.plan_id)?;
        name(path, "move", &format!("move {}'s state", m.id), &m.state)?;
    }
    Ok(())
}

/// An optional time bound of a query.
pub(crate) fn bound(path: &str, table: &'static str, what: &str, t: Option<f64>) -> Result<()> {
    match t {
        Some(t) if t.is_nan() => Err(invalid(path, table, format!("{what} is not a number"))),
        _ => Ok(()),
    }
}
