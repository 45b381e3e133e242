//! A demo run's lifecycle, as an explicit state machine: the runner moves it on, and the
//! times it records become the run's [`Phases`], so a figure can never be computed over
//! phases that did not happen in order.
//!
//! ```text
//! Preparing --settle--> Settling --raise--> Loaded --fall--> Repacking --finish--> Done
//! ```
//!
//! - `Preparing`: the lab is coming up, the VMs boot, h1 quiets down, the manager starts.
//! - `Settling`: the manager watches and the sampler runs; demand is still low.
//! - `Loaded`: the raised VMs work hard (the loaded phase the degradation is measured over).
//! - `Repacking`: demand is low again; the manager may repack and put hosts in standby.
//! - `Done`: sampling stopped; [`Timeline::finish`] hands over the [`Phases`].
//!
//! A failure at any point simply drops the timeline (the lab guard tears the lab down); a
//! transition from the wrong state, or with a time before the previous one, is a
//! [`PhaseError`].

use crate::summary::Phases;
use thiserror::Error;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Preparing,
    Settling,
    Loaded,
    Repacking,
    Done,
}

/// A transition the timeline refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PhaseError {
    #[error("cannot {action} a run that is {from:?} (expected {expected:?})")]
    Order {
        action: &'static str,
        from: Phase,
        expected: Phase,
    },
    #[error("cannot {action} at {at_s} s, before the previous phase began at {previous_s} s")]
    Clock {
        action: &'static str,
        at_s: f64,
        previous_s: f64,
    },
}

/// The run's phase and when each began, Unix s.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    phase: Phase,
    /// Start times of Settling, Loaded, Repacking and Done, as far as reached.
    times: Vec<f64>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            phase: Phase::Preparing,
            times: Vec::new(),
        }
    }
}

impl Timeline {
    /// Where the run is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    fn step(
        &mut self,
        action: &'static str,
        expected: Phase,
        next: Phase,
        at_s: f64,
    ) -> Result<(), PhaseError> {
        if self.phase != expected {
            return Err(PhaseError::Order {
                action,
                from: self.phase,
                expected,
            });
        }
        if let Some(&previous_s) = self.times.last() {
            // A NaN is refused too: it is not at or after anything.
            if at_s.is_nan() || at_s < previous_s {
                return Err(PhaseError::Clock {
                    action,
                    at_s,
                    previous_s,
                });
            }
        }
        self.times.push(at_s);
        self.phase = next;
        Ok(())
    }

    /// The manager watches: Preparing -> Settling.
    ///
    /// # Errors
    /// [`PhaseError`] from any other state or with a time going back.
    pub fn settle(&mut self, at_s: f64) -> Result<(), PhaseError> {
        self.step("settle", Phase::Preparing, Phase::Settling, at_s)
    }

    /// Demand rises: Settling -> Loaded.
    ///
    /// # Errors
    /// As [`Timeline::settle`].
    pub fn raise(&mut self, at_s: f64) -> Result<(), PhaseError> {
        self.step("raise", Phase::Settling, Phase::Loaded, at_s)
    }

    /// Demand falls: Loaded -> Repacking.
    ///
    /// # Errors
    /// As [`Timeline::settle`].
    pub fn fall(&mut self, at_s: f64) -> Result<(), PhaseError> {
        self.step("fall", Phase::Loaded, Phase::Repacking, at_s)
    }

    /// Sampling stops: Repacking -> Done, with the phases' times.
    ///
    /// # Errors
    /// As [`Timeline::settle`].
    pub fn finish(&mut self, at_s: f64) -> Result<Phases, PhaseError> {
        self.step("finish", Phase::Repacking, Phase::Done, at_s)?;
        match self.times[..] {
            [start_s, raised_s, fell_s, end_s] => Ok(Phases {
                start_s,
                raised_s,
                fell_s,
                end_s,
            }),
            // Done is reached through the four steps only, each pushing one time.
            _ => unreachable!("a finished timeline has four times"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_goes_through_every_phase_in_order() {
        let mut t = Timeline::default();
        assert_eq!(t.phase(), Phase::Preparing);
        t.settle(10.0).expect("settle");
        t.raise(20.0).expect("raise");
        assert_eq!(t.phase(), Phase::Loaded);
        t.fall(50.0).expect("fall");
        let p = t.finish(70.0).expect("finish");
        assert_eq!(
            p,
            Phases {
                start_s: 10.0,
                raised_s: 20.0,
                fell_s: 50.0,
                end_s: 70.0
            }
        );
        assert_eq!(t.phase(), Phase::Done);
    }

    #[test]
    fn out_of_order_and_backward_steps_are_refused() {
        let mut t = Timeline::default();
        assert_eq!(
            t.raise(1.0),
            Err(PhaseError::Order {
                action: "raise",
                from: Phase::Preparing,
                expected: Phase::Settling
            })
        );
        t.settle(10.0).expect("settle");
        assert!(matches!(t.settle(11.0), Err(PhaseError::Order { .. })));
        assert_eq!(
            t.raise(9.0),
            Err(PhaseError::Clock {
                action: "raise",
                at_s: 9.0,
                previous_s: 10.0
            })
        );
        assert!(matches!(t.raise(f64::NAN), Err(PhaseError::Clock { .. })));
        // A refused step leaves the timeline where it was.
        assert_eq!(t.phase(), Phase::Settling);
        t.raise(10.0).expect("same second");
        assert!(matches!(t.finish(12.0), Err(PhaseError::Order { .. })));
    }
}
