//! A decision as it can be replayed: everything the control step read when it made a plan
//! (the observation, its memory before the look, the settings and the time) and what it
//! produced. The manager stores one for every look that made a plan; `drover sim replay` runs
//! [`super::step()`] on a record's inputs and checks it produces the same output.

use super::observe::{Observation, ObservationError};
use super::settings::{ControlSettings, SettingsError};
use super::state::ControlState;
use super::step::StepOutput;
use crate::units::shown;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The format of [`Decision`]; bumped when a field's meaning changes.
pub const DECISION_FORMAT: u32 = 1;

/// Latest manager clock accepted, s (1e10 s: past the year 2286 as Unix time): a later one is
/// a corrupt record, and the step's sums of times would lose their seconds.
pub const MAX_TIME_S: f64 = 1e10;

/// A decision's input the step cannot take. Each variant prints its part's error after the
/// part's name, and keeps no source chain (`{:#}` would print the inner error twice).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum InputError {
    #[error("{field} = {}: expected a time from 0 to 1e10 s", shown(*.value))]
    Time { field: &'static str, value: f64 },
    #[error("settings.{0}")]
    Settings(SettingsError),
    #[error("observation.{0}")]
    Observation(ObservationError),
}

/// Checks a step's inputs as the manager's own would be: the time (`field` names it: core's
/// `now_s`, the store's `at_s`), the settings' limits ([`ControlSettings::validate`], what the
/// manager checks its configuration and every settings patch with) and the observation
/// ([`Observation::validate`]).
///
/// # Errors
/// The first input that is wrong, named by its path.
pub fn check_inputs(
    field: &'static str,
    now_s: f64,
    observation: &Observation,
    settings: &ControlSettings,
) -> Result<(), InputError> {
    if !(now_s.is_finite() && (0.0..=MAX_TIME_S).contains(&now_s)) {
        return Err(InputError::Time {
            field,
            value: now_s,
        });
    }
    settings.validate().map_err(InputError::Settings)?;
    observation.validate().map_err(InputError::Observation)
}

/// One look's inputs and output.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// [`DECISION_FORMAT`] when it was written.
    pub format: u32,
    /// Manager clock, s.
    pub now_s: f64,
    pub observation: Observation,
    /// The step's memory before the look.
    pub state_before: ControlState,
    pub settings: ControlSettings,
    /// What the step returned.
    pub output: StepOutput,
}

impl Decision {
    /// Runs the step on the record's inputs.
    pub fn replay(&self) -> StepOutput {
        let mut state = self.state_before.clone();
        super::step(&mut state, &self.observation, &self.settings, self.now_s)
    }

    /// Whether replaying gives the recorded output.
    pub fn reproduces(&self) -> bool {
        self.replay() == self.output
    }
}
