//! What policies see of a VM's memory behaviour: the agent's measurements, sampled, noisy and
//! lagging, never the engine's truth.
//!
//! The agent measures a VM's dirty rate by page sampling over a short window every so often,
//! and its working set from a longer one; the manager decides from the last measurement it
//! holds. So at decision step `k` a policy sees the measurement taken at the last sampling
//! step `s <= k` (every `every_steps` steps), which read the truth of step `s - lag_steps`
//! (the earliest step when that is before the first), times multiplicative log-normal noise
//! `exp(σ z)`, `z ~ N(0, 1)` drawn independently for the dirty rate and the working set. The
//! noise has median 1 (unbiased in log): a measurement is as likely to read half the truth as
//! twice it.
//!
//! Each draw comes from a generator seeded by (seed, VM, step, figure), so a VM's view does not
//! depend on how many other VMs there are or in which order they are observed.

use drover_core::dc::rng::SplitMix64;
use std::collections::VecDeque;
use thiserror::Error;

/// The error model's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObserveModel {
    /// Standard deviation of the log of the multiplicative noise (0: exact).
    pub sigma: f64,
    /// Decision steps between the truth a measurement reads and the step it is taken.
    pub lag_steps: usize,
    /// Steps between measurements (1: every step).
    pub every_steps: usize,
}

/// An error model that cannot be used.
#[derive(Debug, Error, PartialEq)]
pub enum ObserveError {
    #[error("observation noise sigma {0}: expected a number from 0 to 3")]
    Sigma(f64),
    #[error("observation lag {0} steps: expected 0 to 1000")]
    Lag(usize),
    #[error("observation sampling every {0} steps: expected 1 to 1000")]
    Every(usize),
}

impl ObserveModel {
    /// Policies see the truth, at once, every step (the simulator before issue 13).
    pub const EXACT: ObserveModel = ObserveModel {
        sigma: 0.0,
        lag_steps: 0,
        every_steps: 1,
    };

    /// The default: a measurement every decision step (300 s in the PlanetLab model) that reads
    /// the previous step's behaviour, within a factor of about 1.35 (σ = 0.3) two times in
    /// three. The agent's page-sampling windows are 250 ms and 1 s, so the rate a policy sees
    /// is a snapshot of a few seconds, minutes old.
    pub const AGENT: ObserveModel = ObserveModel {
        sigma: 0.3,
        lag_steps: 1,
        every_steps: 1,
    };

    /// Checks the settings' ranges.
    ///
    /// # Errors
    /// [`ObserveError`] naming the setting out of range.
    pub fn checked(self) -> Result<ObserveModel, ObserveError> {
        if !(0.0..=3.0).contains(&self.sigma) {
            return Err(ObserveError::Sigma(self.sigma));
        }
        if self.lag_steps > 1000 {
            return Err(ObserveError::Lag(self.lag_steps));
        }
        if !(1..=1000).contains(&self.every_steps) {
            return Err(ObserveError::Every(self.every_steps));
        }
        Ok(self)
    }

    /// Whether policies see the truth exactly.
    pub fn is_exact(&self) -> bool {
        self.sigma == 0.0 && self.lag_steps == 0 && self.every_steps == 1
    }
}

/// One VM's measured (dirty rate bytes/s, working set bytes).
pub type Reading = (f64, f64);

#[derive(Debug, Clone, Default)]
struct VmView {
    /// The truth of the last `lag + 1` steps observed, oldest first.
    past: VecDeque<Reading>,
    /// The last measurement taken.
    last: Option<Reading>,
}

/// The measurements of every VM, step by step.
#[derive(Debug, Clone)]
pub struct Observer {
    model: ObserveModel,
    seed: u64,
    vms: Vec<VmView>,
}

/// Which figure a draw is for.
const DIRTY: u64 = 1;
const WSS: u64 = 2;

impl Observer {
    pub fn new(model: ObserveModel, seed: u64, vms: usize) -> Observer {
        Observer {
            model,
            seed,
            vms: vec![VmView::default(); vms],
        }
    }

    /// The noise factor `exp(σ z)` for (VM, step, figure).
    fn noise(&self, vm: usize, step: u64, figure: u64) -> f64 {
        if self.model.sigma == 0.0 {
            return 1.0;
        }
        let key = self.seed
            ^ (vm as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ step.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ figure.wrapping_mul(0x1656_67B1_9E37_79F9);
        let mut rng = SplitMix64::new(key);
        // Box-Muller: two uniforms in (0, 1] and [0, 1) give one standard normal.
        let u1 = 1.0 - rng.next_f64();
        let u2 = rng.next_f64();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (self.model.sigma * z).exp()
    }

    /// Records VM `vm`'s `truth` at decision step `step` (each VM once per step, steps
    /// increasing) and returns what a policy sees of it now.
    pub fn observe(&mut self, vm: usize, step: u64, truth: Reading) -> Reading {
        let lag = self.model.lag_steps;
        let sample_now = step.is_multiple_of(self.model.every_steps as u64);
        let view = &mut self.vms[vm];
        view.past.push_back(truth);
        while view.past.len() > lag + 1 {
            view.past.pop_front();
        }
        if sample_now || view.last.is_none() {
            // The oldest kept is `lag` steps back, or the first step seen if fewer.
            let (dirty, wss) = view.past.front().copied().unwrap_or(truth);
            let reading = (
                dirty * self.noise(vm, step, DIRTY),
                wss * self.noise(vm, step, WSS),
            );
            self.vms[vm].last = Some(reading);
        }
        self.vms[vm].last.unwrap_or(truth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy(sigma: f64) -> ObserveModel {
        ObserveModel {
            sigma,
            lag_steps: 0,
            every_steps: 1,
        }
    }

    #[test]
    fn exact_sees_the_truth() {
        let mut o = Observer::new(ObserveModel::EXACT, 7, 2);
        for step in 1..5 {
            let truth = (step as f64 * 1e6, 2e8);
            assert_eq!(o.observe(1, step, truth), truth);
        }
    }

    #[test]
    fn same_seed_same_readings_whatever_the_other_vms() {
        let model = ObserveModel::AGENT;
        let mut a = Observer::new(model, 42, 1);
        let mut b = Observer::new(model, 42, 3);
        let mut c = Observer::new(model, 43, 1);
        let (mut differs, mut seen) = (false, Vec::new());
        for step in 1..50 {
            let truth = (1e7 + step as f64, 1e8);
            b.observe(2, step, (5.0, 5.0));
            let got = a.observe(0, step, truth);
            assert_eq!(got, b.observe(0, step, truth));
            differs |= got != c.observe(0, step, truth);
            seen.push(got);
        }
        assert!(differs, "another seed draws other noise");
        let mut again = Observer::new(model, 42, 1);
        for (i, step) in (1..50).enumerate() {
            assert_eq!(again.observe(0, step, (1e7 + step as f64, 1e8)), seen[i]);
        }
    }

    #[test]
    fn a_lagging_view_reads_the_truth_of_k_steps_before() {
        let model = ObserveModel {
            sigma: 0.0,
            lag_steps: 2,
            every_steps: 1,
        };
        let mut o = Observer::new(model, 1, 1);
        let truth = |s: u64| (s as f64 * 10.0, s as f64);
        // Steps 1 and 2 have no past two steps back: they read the first step seen.
        assert_eq!(o.observe(0, 1, truth(1)), truth(1));
        assert_eq!(o.observe(0, 2, truth(2)), truth(1));
        for step in 3..20 {
            assert_eq!(o.observe(0, step, truth(step)), truth(step - 2));
        }
    }

    #[test]
    fn sampling_every_n_steps_holds_the_last_measurement() {
        let model = ObserveModel {
            sigma: 0.0,
            lag_steps: 0,
            every_steps: 3,
        };
        let mut o = Observer::new(model, 1, 1);
        let truth = |s: u64| (s as f64, 0.0);
        // The first step seen is always measured; then steps 3, 6, 9...
        let seen: Vec<f64> = (1..10).map(|s| o.observe(0, s, truth(s)).0).collect();
        assert_eq!(seen, vec![1.0, 1.0, 3.0, 3.0, 3.0, 6.0, 6.0, 6.0, 9.0]);
    }

    #[test]
    fn the_noise_is_log_normal_with_the_given_sigma() {
        let sigma = 0.3;
        let mut o = Observer::new(noisy(sigma), 9, 400);
        let mut logs = Vec::new();
        for step in 1..=50 {
            for vm in 0..400 {
                let (d, w) = o.observe(vm, step, (1e7, 1e8));
                logs.push((d / 1e7).ln());
                logs.push((w / 1e8).ln());
            }
        }
        let n = logs.len() as f64;
        let mean = logs.iter().sum::<f64>() / n;
        let sd = (logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        // 40,000 draws: the mean's standard error is 0.0015, the sd's about 0.001.
        assert!(mean.abs() < 0.01, "mean of log {mean}");
        assert!((sd - sigma).abs() < 0.01, "sd of log {sd}");
        let within = logs.iter().filter(|l| l.abs() <= sigma).count() as f64 / n;
        assert!(
            (within - 0.6827).abs() < 0.01,
            "share within one sigma {within}"
        );
    }

    #[test]
    fn out_of_range_settings_are_named() {
        assert_eq!(noisy(-0.1).checked(), Err(ObserveError::Sigma(-0.1)));
        let every0 = ObserveModel {
            every_steps: 0,
            ..ObserveModel::AGENT
        };
        assert_eq!(
            every0.checked().unwrap_err().to_string(),
            "observation sampling every 0 steps: expected 1 to 1000"
        );
        assert!(ObserveModel::AGENT.checked().is_ok());
    }
}
