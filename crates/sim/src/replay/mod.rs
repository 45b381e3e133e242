//! `drover sim replay FILE`: runs the manager's control step again on a stored decision and
//! says whether it decides the same.
//!
//! Two documents are read (told apart by their fields):
//! - **core's [`Decision`]** (`format`, `now_s`, `observation`, `state_before`, `settings`,
//!   `output`): the step's inputs and what it returned. The replay must return the same output,
//!   field for field.
//! - **the manager store's export** of one plan's decision (`plan_id`, `at_s`, `observation`,
//!   `state_before`, `settings`; no output, no format number): the replay must make the plan
//!   with that id again (ids come from the stored state's counter, so the same inputs give the
//!   same id).
//!
//! The step is pure and iterates only in inventory or id order, so replaying is exact; the file
//! is read with serde_json's exact float parsing (`float_roundtrip`) so that the inputs are
//! bit for bit what the manager saw.
//!
//! Files are outside input: every error names the file and what is wrong with it. A file is
//! read up to [`crate::limits::MAX_FILE_BYTES`], and its inputs pass the checks the manager's
//! own pass ([`check_inputs`]: the time, the settings' limits, the observation) before the
//! step runs; a VM running on two hosts is replayed with a warning (the manager's concurrent
//! polls can record one around a migration's end).

pub mod render;

#[cfg(test)]
mod tests;

pub use render::render;

use crate::limits::{read_text, ReadError};
use drover_core::control::{
    check_inputs, ControlSettings, ControlState, Decision, InputError, Observation, Plan,
    StepOutput, DECISION_FORMAT,
};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A decision file that cannot be replayed. Each message carries the whole reason and no
/// source chain: the CLI prints an error with its chain (`{:#}`), which would repeat it.
#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("decision file {path}: {error}")]
    Io { path: PathBuf, error: ReadError },
    #[error("decision file {path} is not JSON: {error}")]
    NotJson {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("decision file {path}: expected a JSON object, found {found}")]
    NotObject { path: PathBuf, found: &'static str },
    #[error("decision file {path}: format {found}, but this drover reads core decisions of format {expected}")]
    Format {
        path: PathBuf,
        found: String,
        expected: u32,
    },
    #[error("decision file {path}: missing field `{field}` (a {kind} has {fields})")]
    Missing {
        path: PathBuf,
        field: &'static str,
        kind: &'static str,
        fields: &'static str,
    },
    #[error("decision file {path}: field `{field}` is not {what}: {error}")]
    Field {
        path: PathBuf,
        field: &'static str,
        what: &'static str,
        error: serde_json::Error,
    },
    /// Read, but not what the manager could have decided on (the same checks as its own).
    #[error("decision file {path}: {error}")]
    Invalid { path: PathBuf, error: InputError },
    #[error("decision file {path}: neither a core decision ({CORE_FIELDS}) nor a manager store export ({EXPORT_FIELDS})")]
    Unknown { path: PathBuf },
}

const CORE_FIELDS: &str = "format, now_s, observation, state_before, settings, output";
const EXPORT_FIELDS: &str = "plan_id, at_s, observation, state_before, settings";

/// Which kind of document a decision was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// Core's [`Decision`], with its recorded output.
    Decision { format: u32 },
    /// The manager store's export of the decision that made `plan_id`.
    StoreExport { plan_id: String },
}

/// A stored decision, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub source: Source,
    /// The step's time, s.
    pub now_s: f64,
    pub observation: Observation,
    pub state_before: ControlState,
    pub settings: ControlSettings,
    /// What the step returned, when the document recorded it.
    pub output: Option<StepOutput>,
    /// What is odd in the inputs but replayed anyway (a VM running on two hosts).
    pub warnings: Vec<String>,
}

/// What the replay says about the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// The step returned the recorded output, field for field.
    Reproduces,
    /// It did not; each line says what differs.
    Differs { differences: Vec<String> },
    /// A store export's plan was made again.
    MadePlan { plan_id: String },
    /// A store export's plan was not made again; `made` lists the plans that were.
    MissingPlan { plan_id: String, made: Vec<String> },
}

impl Verdict {
    /// Whether the replay decided what was recorded.
    pub fn ok(&self) -> bool {
        matches!(self, Verdict::Reproduces | Verdict::MadePlan { .. })
    }
}

/// A replay's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    pub source: Source,
    pub now_s: f64,
    /// What the step returned this time.
    pub output: StepOutput,
    /// The plans it made, with their moves' explanations.
    pub plans: Vec<Plan>,
    pub verdict: Verdict,
    /// What is odd in the inputs but was replayed anyway.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The step's memory after the look (moves' hosts and techniques; not printed in JSON).
    #[serde(skip)]
    pub state_after: ControlState,
}

/// Reads (at most [`crate::limits::MAX_FILE_BYTES`]) and checks the decision file at `path`.
///
/// # Errors
/// [`ReplayError`] naming the file and what is wrong with it.
pub fn read(path: &Path) -> Result<Stored, ReplayError> {
    let text = read_text(path).map_err(|error| ReplayError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    parse(path, &text)
}

/// Parses a decision document and checks its inputs; `path` names it in errors.
///
/// # Errors
/// [`ReplayError`] naming the file and what is wrong with it.
pub fn parse(path: &Path, text: &str) -> Result<Stored, ReplayError> {
    let (stored, time_field) = parse_document(path, text)?;
    check_inputs(
        time_field,
        stored.now_s,
        &stored.observation,
        &stored.settings,
    )
    .map_err(|error| ReplayError::Invalid {
        path: path.to_path_buf(),
        error,
    })?;
    let warnings = stored
        .observation
        .running_twice()
        .into_iter()
        .map(|(vm, hosts)| {
            format!(
                "VM {vm} is reported running on {} (the step takes it to be on {})",
                hosts.join(" and "),
                hosts[0]
            )
        })
        .collect();
    Ok(Stored { warnings, ..stored })
}

/// The document's fields, and the name of its time field.
fn parse_document(path: &Path, text: &str) -> Result<(Stored, &'static str), ReplayError> {
    let p = || path.to_path_buf();
    let value: Value = serde_json::from_str(text.trim_start_matches('\u{feff}'))
        .map_err(|error| ReplayError::NotJson { path: p(), error })?;
    let Value::Object(doc) = value else {
        return Err(ReplayError::NotObject {
            path: p(),
            found: kind_of(&value),
        });
    };
    let f = Fields { path, doc: &doc };
    if doc.contains_key("format") {
        let format: u64 = f.get("format", "an unsigned integer", CORE)?;
        if format != u64::from(DECISION_FORMAT) {
            return Err(ReplayError::Format {
                path: p(),
                found: format.to_string(),
                expected: DECISION_FORMAT,
            });
        }
        let d = Decision {
            format: DECISION_FORMAT,
            now_s: f.get("now_s", "a time in seconds", CORE)?,
            observation: f.get("observation", "an observation", CORE)?,
            state_before: f.get("state_before", "a control state", CORE)?,
            settings: f.get("settings", "control settings", CORE)?,
            output: f.get("output", "a step output", CORE)?,
        };
        let stored = Stored {
            source: Source::Decision { format: d.format },
            now_s: d.now_s,
            observation: d.observation,
            state_before: d.state_before,
            settings: d.settings,
            output: Some(d.output),
            warnings: Vec::new(),
        };
        return Ok((stored, "now_s"));
    }
    if doc.contains_key("plan_id") {
        let stored = Stored {
            source: Source::StoreExport {
                plan_id: f.get("plan_id", "a plan id", EXPORT)?,
            },
            now_s: f.get("at_s", "a time in seconds", EXPORT)?,
            observation: f.get("observation", "an observation", EXPORT)?,
            state_before: f.get("state_before", "a control state", EXPORT)?,
            settings: f.get("settings", "control settings", EXPORT)?,
            output: None,
            warnings: Vec::new(),
        };
        return Ok((stored, "at_s"));
    }
    Err(ReplayError::Unknown { path: p() })
}

/// Which document a field belongs to, for the error.
struct Kind(&'static str, &'static str);
const CORE: Kind = Kind("core decision", CORE_FIELDS);
const EXPORT: Kind = Kind("manager store export", EXPORT_FIELDS);

struct Fields<'a> {
    path: &'a Path,
    doc: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn get<T: serde::de::DeserializeOwned>(
        &self,
        field: &'static str,
        what: &'static str,
        kind: Kind,
    ) -> Result<T, ReplayError> {
        let v = self.doc.get(field).ok_or_else(|| ReplayError::Missing {
            path: self.path.to_path_buf(),
            field,
            kind: kind.0,
            fields: kind.1,
        })?;
        T::deserialize(v).map_err(|error| ReplayError::Field {
            path: self.path.to_path_buf(),
            field,
            what,
            error,
        })
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Runs the control step on the stored inputs and compares.
pub fn replay(stored: &Stored) -> Replay {
    let mut state = stored.state_before.clone();
    let output = drover_core::control::step(
        &mut state,
        &stored.observation,
        &stored.settings,
        stored.now_s,
    );
    let plans: Vec<Plan> = output
        .new_plans
        .iter()
        .filter_map(|id| state.plans.get(id).cloned())
        .collect();
    let verdict = match (&stored.source, &stored.output) {
        (_, Some(recorded)) => match differences(recorded, &output) {
            d if d.is_empty() => Verdict::Reproduces,
            differences => Verdict::Differs { differences },
        },
        (Source::StoreExport { plan_id }, None) if output.new_plans.contains(plan_id) => {
            Verdict::MadePlan {
                plan_id: plan_id.clone(),
            }
        }
        (Source::StoreExport { plan_id }, None) => Verdict::MissingPlan {
            plan_id: plan_id.clone(),
            made: output.new_plans.clone(),
        },
        (Source::Decision { .. }, None) => Verdict::Differs {
            differences: vec!["the record has no output to compare with".into()],
        },
    };
    Replay {
        source: stored.source.clone(),
        now_s: stored.now_s,
        output,
        plans,
        verdict,
        warnings: stored.warnings.clone(),
        state_after: state,
    }
}

/// What differs between the recorded output and the replayed one, one line each.
fn differences(recorded: &StepOutput, replayed: &StepOutput) -> Vec<String> {
    let mut out = Vec::new();
    if recorded.new_plans != replayed.new_plans {
        let ids = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        out.push(format!(
            "plans made: recorded {}, replayed {}",
            ids(&recorded.new_plans),
            ids(&replayed.new_plans)
        ));
    }
    list_diff(
        &mut out,
        "actions",
        &recorded.actions,
        &replayed.actions,
        render::action,
    );
    list_diff(
        &mut out,
        "journal",
        &recorded.journal,
        &replayed.journal,
        render::journal_line,
    );
    if recorded.next_look_s.to_bits() != replayed.next_look_s.to_bits() {
        out.push(format!(
            "next look: recorded {} s, replayed {} s",
            recorded.next_look_s, replayed.next_look_s
        ));
    }
    out
}

/// The first entry where two lists differ, each side in its one-line form (`none` past a
/// list's end; a note when the one-line forms agree and the difference is in what they leave
/// out, such as a migration's knobs).
fn list_diff<T: PartialEq>(
    out: &mut Vec<String>,
    what: &str,
    recorded: &[T],
    replayed: &[T],
    line: impl Fn(&T) -> String,
) {
    if recorded == replayed {
        return;
    }
    let first = recorded
        .iter()
        .zip(replayed)
        .position(|(a, b)| a != b)
        .unwrap_or(recorded.len().min(replayed.len()));
    let shown = |x: Option<&T>| x.map_or("none".to_string(), &line);
    let (a, b) = (shown(recorded.get(first)), shown(replayed.get(first)));
    let note = if a == b {
        " (they differ in details this line leaves out, such as a migration's knobs)"
    } else {
        ""
    };
    out.push(format!(
        "{what}: recorded {} entries, replayed {}; the first difference is entry {}: recorded `{a}`, replayed `{b}`{note}",
        recorded.len(),
        replayed.len(),
        first + 1,
    ));
}
