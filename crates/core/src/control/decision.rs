//! A decision as it can be replayed: everything the control step read when it made a plan
//! (the observation, its memory before the look, the settings and the time) and what it
//! produced. The manager stores one for every look that made a plan; `drover sim replay` runs
//! [`super::step()`] on a record's inputs and checks it produces the same output.

use super::observe::Observation;
use super::settings::ControlSettings;
use super::state::ControlState;
use super::step::StepOutput;
use serde::{Deserialize, Serialize};

/// The format of [`Decision`]; bumped when a field's meaning changes.
pub const DECISION_FORMAT: u32 = 1;

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
