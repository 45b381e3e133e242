//! Live migration: techniques, cost model, watchdog, both sides' state machines, results.

pub mod cost;
pub mod technique;

pub use cost::{choose, predict, Choice, CostParams, LinkProfile, Prediction, VmProfile};
pub use technique::{HybridSwitch, Technique};
