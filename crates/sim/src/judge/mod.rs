//! The judge: how a migration in the simulation turns out, from a model fitted to measured
//! migrations, independent of drover-core's cost model that policies choose techniques with.
//!
//! A judge that shared the chooser's model, its parameters and its inputs would make per-VM
//! choice win by construction. This one has its own functional forms, its parameters are fitted
//! to `drover migrate-bench --json` rows measured on this project's QEMU (kept beside the fitted
//! parameters in `crates/sim/data/calibration/`), and it is fed each VM's true dirty rate and
//! working set while policies see the agent's noisy, lagging measurements ([`crate::observe`]).
//!
//! Forms, for a migration that sends `F` bytes of non-zero memory in a full pass, with writable
//! working set `W`, dirty rate `D` (bytes/s) over a link of `B` bytes/s, `ρ = D / B`, and
//! QEMU's downtime limit `T`:
//! - **pre-copy converges** iff its pressure `P = min(ρ, W / (B T))` is below the fitted
//!   threshold `p*`: passes shrink when `ρ < 1`, and a working set that fits `B T` is sent in the
//!   pause whatever the rate. Otherwise the watchdog escalates (raises the downtime limit, then
//!   throttles the guest): below a second fitted threshold `q*` that still completes, the VM
//!   moves; from `q*` on the attempt is cancelled and the VM stays. Each of these two outcomes
//!   has its measured mean duration, downtime, share of the guest's work lost and share of the
//!   link used ([`Tail`]). Post-copy and hybrid always move the VM.
//! - **bytes** = `F + resend · min(W, ρ F)`: a full pass plus the re-dirtied pages resent
//!   (pre-copy's later passes, hybrid's post-copy phase).
//! - **duration** = `fixed_s + transfer_factor · bytes / B`.
//! - **downtime** = `pause_s + pause_per_byte · min(F, B T)`: what is pending at the switch, at
//!   most a downtime limit's worth of the link, flushed with the guest stopped.
//! - **lost work** (seconds of the guest's full-speed work) = `downtime + lost_coef · x`, with
//!   `x` pre-copy's dirty tracking `min(1, ρ) · duration`, post-copy's remote faults
//!   `min(W, D F / B) / B` (the working set it touches while memory follows, fetched over the
//!   link) and hybrid's post-copy phase `min(W, ρ F) / B`.
//!
//! Files: this one holds the parameters and the prediction; `rows.rs` reads measured rows;
//! `fit.rs` fits the parameters and measures the fit's error.

pub mod fit;
pub mod rows;

use drover_core::migration::{choose, predict, CostParams, LinkProfile, Technique, VmProfile};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What the judge needs to know about one migration. Bytes, bytes/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Case {
    /// Non-zero memory a full pass sends, bytes (`F`): QEMU skips zero pages.
    pub pass_bytes: f64,
    /// Writable working set, bytes (`W`).
    pub wss_bytes: f64,
    /// Distinct pages dirtied per second, bytes/s (`D`).
    pub dirty_bps: f64,
    /// Migration bandwidth, bytes/s (`B`).
    pub bandwidth_bps: f64,
}

impl Case {
    fn bandwidth(&self) -> f64 {
        self.bandwidth_bps.max(1.0)
    }

    /// `ρ = D / B`.
    fn ratio(&self) -> f64 {
        self.dirty_bps.max(0.0) / self.bandwidth()
    }

    fn wss(&self) -> f64 {
        self.wss_bytes.clamp(0.0, self.pass_bytes.max(0.0))
    }

    /// Pre-copy's pressure `P = min(ρ, W / (B T))`.
    pub fn pressure(&self, downtime_limit_s: f64) -> f64 {
        let fits = self.wss() / (self.bandwidth() * downtime_limit_s.max(1e-6));
        self.ratio().min(fits)
    }

    /// The re-dirtied bytes `min(W, ρ F)`.
    fn redirtied(&self) -> f64 {
        self.wss().min(self.ratio() * self.pass_bytes)
    }

    /// The lost-work regressor `x` of `technique` for a migration lasting `total_s`.
    fn lost_regressor(&self, technique: Technique, total_s: f64) -> f64 {
        let b = self.bandwidth();
        match technique {
            Technique::Postcopy => {
                self.wss()
                    .min(self.dirty_bps.max(0.0) * self.pass_bytes / b)
                    / b
            }
            Technique::Hybrid => self.redirtied() / b,
            Technique::Precopy | Technique::Auto => self.ratio().min(1.0) * total_s,
        }
    }
}

/// One technique's fitted coefficients (forms in the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TechniqueFit {
    /// Resent bytes per re-dirtied byte `min(W, ρ F)`.
    pub resend: f64,
    /// Duration's fixed part, seconds (setup, first bandwidth sample, completion handshake).
    pub fixed_s: f64,
    /// Seconds of duration per second of the link's nominal transfer time `bytes / B`.
    pub transfer_factor: f64,
    /// Downtime's fixed part, seconds.
    pub pause_s: f64,
    /// Downtime per pending byte `min(F, B T)`, seconds/byte.
    pub pause_per_byte: f64,
    /// Seconds of work lost per unit of the technique's lost-work regressor.
    pub lost_coef: f64,
}

/// The judge's parameters, fitted by [`fit::fit`] and stored as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeParams {
    /// Non-zero memory of the measured guests beside their working set, bytes: reads a measured
    /// row's `F` as `min(memory, baseline + W)`. The simulator takes `F` as the VM's whole RAM.
    pub baseline_bytes: f64,
    /// QEMU's downtime limit the rows ran with, seconds (`T`; a setting, not fitted).
    pub downtime_limit_s: f64,
    /// Pre-copy converges iff its pressure is below this (`p*`).
    pub convergence_pressure: f64,
    /// A pre-copy that does not converge still completes, after the watchdog's escalations,
    /// iff its pressure is below this (`q*`, at least `p*`).
    pub escalation_pressure: f64,
    /// A pre-copy that completed only after escalating.
    pub escalated: Tail,
    /// A pre-copy cancelled (the VM stays).
    pub cancelled: Tail,
    pub precopy: TechniqueFit,
    pub postcopy: TechniqueFit,
    pub hybrid: TechniqueFit,
    /// Rows the parameters were fitted to.
    pub rows: usize,
}

/// The measured means of a pre-copy that did not converge.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tail {
    /// Start to end, seconds.
    pub total_s: f64,
    /// Guest paused, seconds.
    pub downtime_s: f64,
    /// Share of its work the guest lost meanwhile (0..1).
    pub lost_share: f64,
    /// Bytes sent as a share of `B` times the duration (0..1).
    pub link_share: f64,
}

/// The parameters fitted to the rows in `crates/sim/data/calibration/` (see BENCHMARKS.md).
pub const CALIBRATED_JSON: &str = include_str!("../../data/calibration/judge.json");

/// A judge's parameters that cannot be used. The message carries the whole reason and no
/// source chain (`{:#}` would print the JSON error twice).
#[derive(Debug, Error)]
pub enum JudgeError {
    #[error("judge parameters: {0}")]
    Parse(serde_json::Error),
    #[error("judge parameters: {field} is {value}: expected {expected}")]
    Field {
        field: &'static str,
        value: f64,
        expected: &'static str,
    },
}

// Not `#[from]`: that would also make the cause a `source()`, printed twice in a chain.
impl From<serde_json::Error> for JudgeError {
    fn from(e: serde_json::Error) -> Self {
        JudgeError::Parse(e)
    }
}

/// How a pre-copy ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrecopyEnd {
    /// Within its own downtime limit, no escalation.
    Converged,
    /// Completed after the watchdog raised the downtime limit or throttled the guest.
    Escalated,
    /// Cancelled: the VM stays on the source.
    Cancelled,
}

/// How one migration turned out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Whether the VM ended on the destination (false: a pre-copy cancelled, the VM stays).
    pub moved: bool,
    /// Start to end, seconds.
    pub total_s: f64,
    /// Guest paused, seconds.
    pub downtime_s: f64,
    /// Bytes over the link.
    pub bytes: f64,
    /// Guest work lost, seconds at full speed.
    pub lost_work_s: f64,
}

impl JudgeParams {
    /// The parameters committed with the simulator.
    ///
    /// # Errors
    /// [`JudgeError`] if the committed JSON does not parse or holds an unusable value.
    pub fn calibrated() -> Result<JudgeParams, JudgeError> {
        Self::from_json(CALIBRATED_JSON)
    }

    /// Reads and checks parameters written by `drover sim calibrate`.
    ///
    /// # Errors
    /// [`JudgeError`] naming the field that is out of range.
    pub fn from_json(text: &str) -> Result<JudgeParams, JudgeError> {
        let p: JudgeParams = serde_json::from_str(text).map_err(JudgeError::Parse)?;
        p.check()?;
        Ok(p)
    }

    /// Checks that every parameter is usable (what [`JudgeParams::from_json`] checks; `drover
    /// sim calibrate` checks a fit with it before writing it).
    ///
    /// # Errors
    /// [`JudgeError::Field`] naming the first unusable parameter.
    pub fn check(&self) -> Result<(), JudgeError> {
        let positive = [
            ("downtime_limit_s", self.downtime_limit_s),
            ("convergence_pressure", self.convergence_pressure),
            ("escalation_pressure", self.escalation_pressure),
            ("escalated.total_s", self.escalated.total_s),
            ("cancelled.total_s", self.cancelled.total_s),
        ];
        for (field, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(JudgeError::Field {
                    field,
                    value,
                    expected: "a positive number",
                });
            }
        }
        let shares = [
            ("escalated.lost_share", self.escalated.lost_share),
            ("escalated.link_share", self.escalated.link_share),
            ("cancelled.lost_share", self.cancelled.lost_share),
            ("cancelled.link_share", self.cancelled.link_share),
        ];
        for (field, value) in shares {
            if !(0.0..=1.0).contains(&value) {
                return Err(JudgeError::Field {
                    field,
                    value,
                    expected: "a share from 0 to 1",
                });
            }
        }
        for (field, fit) in [
            ("precopy.transfer_factor", &self.precopy),
            ("postcopy.transfer_factor", &self.postcopy),
            ("hybrid.transfer_factor", &self.hybrid),
        ] {
            if !(fit.transfer_factor.is_finite() && fit.transfer_factor > 0.0) {
                return Err(JudgeError::Field {
                    field,
                    value: fit.transfer_factor,
                    expected: "a positive number",
                });
            }
        }
        Ok(())
    }

    /// The coefficients of `technique` (`auto` is judged as pre-copy: it never reaches here,
    /// policies resolve it).
    pub fn technique(&self, technique: Technique) -> &TechniqueFit {
        match technique {
            Technique::Postcopy => &self.postcopy,
            Technique::Hybrid => &self.hybrid,
            Technique::Precopy | Technique::Auto => &self.precopy,
        }
    }

    /// Whether a pre-copy of `case` converges.
    pub fn converges(&self, case: &Case) -> bool {
        case.pressure(self.downtime_limit_s) < self.convergence_pressure
    }

    /// How a pre-copy of `case` ends.
    pub fn precopy_end(&self, case: &Case) -> PrecopyEnd {
        let p = case.pressure(self.downtime_limit_s);
        if p < self.convergence_pressure {
            PrecopyEnd::Converged
        } else if p < self.escalation_pressure {
            PrecopyEnd::Escalated
        } else {
            PrecopyEnd::Cancelled
        }
    }

    /// How migrating `case` with `technique` turns out (forms in the module doc). Every figure
    /// is finite and non-negative.
    pub fn judge(&self, case: &Case, technique: Technique) -> Outcome {
        let precopy = matches!(technique, Technique::Precopy | Technique::Auto);
        let b = case.bandwidth();
        let end = if precopy {
            self.precopy_end(case)
        } else {
            PrecopyEnd::Converged
        };
        if end != PrecopyEnd::Converged {
            let tail = if end == PrecopyEnd::Escalated {
                &self.escalated
            } else {
                &self.cancelled
            };
            return Outcome {
                moved: end == PrecopyEnd::Escalated,
                total_s: tail.total_s,
                downtime_s: tail.downtime_s,
                bytes: tail.link_share * b * tail.total_s,
                lost_work_s: tail.lost_share * tail.total_s,
            };
        }
        let fit = self.technique(technique);
        let bytes = case.pass_bytes.max(0.0) + fit.resend.max(0.0) * case.redirtied();
        let total_s = (fit.fixed_s + fit.transfer_factor * bytes / b).max(1e-3);
        let pending = case.pass_bytes.max(0.0).min(b * self.downtime_limit_s);
        let downtime_s = (fit.pause_s + fit.pause_per_byte * pending).clamp(0.0, total_s);
        let lost = downtime_s + fit.lost_coef * case.lost_regressor(technique, total_s);
        Outcome {
            moved: true,
            total_s,
            downtime_s,
            bytes,
            lost_work_s: lost.clamp(0.0, total_s.max(downtime_s)),
        }
    }
}

/// Who decides how a migration turns out in the dirty-rate model.
#[derive(Debug, Clone, PartialEq)]
pub enum Judge {
    /// drover-core's cost model with these parameters: the model `drover` chooses with, so
    /// kept only to compare with the results before issue 13.
    CostModel(CostParams),
    /// The model fitted to measured migrations (this module).
    Calibrated(Box<JudgeParams>),
}

impl Judge {
    /// The committed calibration.
    ///
    /// # Panics
    /// Never in a build whose tests pass: `the_committed_parameters_load` checks the JSON that
    /// is compiled in.
    pub fn calibrated() -> Judge {
        Judge::Calibrated(Box::new(
            JudgeParams::calibrated()
                .expect("crates/sim/data/calibration/judge.json is checked by the tests"),
        ))
    }

    /// The judge's name in reports: `calibrated` or `cost-model`.
    pub fn name(&self) -> &'static str {
        match self {
            Judge::CostModel(_) => "cost-model",
            Judge::Calibrated(_) => "calibrated",
        }
    }

    /// How migrating `case` with `technique` turns out, and the technique that ran. `auto` is
    /// resolved as the agent resolves it when the migration starts: core's cost model (default
    /// parameters) on the VM's figures measured then, here its true ones.
    pub fn judge(&self, case: &Case, technique: Technique) -> (Outcome, Technique) {
        let vm = VmProfile {
            memory_bytes: case.pass_bytes.max(0.0) as u64,
            wss_bytes: case.wss_bytes.max(0.0) as u64,
            dirty_rate_bps: case.dirty_bps,
        };
        let link = LinkProfile {
            bandwidth_bps: case.bandwidth_bps,
        };
        match self {
            Judge::Calibrated(p) => {
                let ran = if technique == Technique::Auto {
                    choose(&vm, &link, &CostParams::default(), &Technique::CONCRETE).technique
                } else {
                    technique
                };
                (p.judge(case, ran), ran)
            }
            Judge::CostModel(cost) => {
                let p = predict(technique, &vm, &link, cost);
                let window = p.total_s.max(cost.window_min_s);
                let outcome = Outcome {
                    moved: p.converges,
                    total_s: p.total_s,
                    downtime_s: p.downtime_s,
                    bytes: p.transferred_bytes,
                    lost_work_s: p.degradation_pct / 100.0 * window,
                };
                (outcome, p.technique)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Parameters of the size the measurements give, for tests that need known values.
    use super::{JudgeParams, Tail, TechniqueFit};

    pub(crate) const MIB: f64 = 1048576.0;

    pub(crate) fn known() -> JudgeParams {
        let fit = |resend, fixed_s, factor, pause_s, per_byte, lost| TechniqueFit {
            resend,
            fixed_s,
            transfer_factor: factor,
            pause_s,
            pause_per_byte: per_byte,
            lost_coef: lost,
        };
        JudgeParams {
            baseline_bytes: 70.0 * MIB,
            downtime_limit_s: 0.3,
            convergence_pressure: 0.8,
            escalation_pressure: 3.0,
            escalated: Tail {
                total_s: 30.0,
                downtime_s: 1.0,
                lost_share: 0.1,
                link_share: 0.8,
            },
            cancelled: Tail {
                total_s: 62.0,
                downtime_s: 0.0,
                lost_share: 0.4,
                link_share: 0.9,
            },
            precopy: fit(1.6, 0.25, 1.1, 0.004, 4e-10, 0.05),
            postcopy: fit(0.0, 0.08, 1.05, 0.002, 0.0, 0.7),
            hybrid: fit(0.9, 0.3, 1.15, 0.006, 2e-10, 0.5),
            rows: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{known, MIB};
    use super::*;

    #[test]
    fn the_committed_parameters_are_the_fit_of_the_committed_rows() {
        let p = JudgeParams::calibrated().expect("committed judge.json");
        let text = include_str!("../../data/calibration/rows.jsonl");
        let rows = rows::parse_rows(text, "rows.jsonl").expect("committed rows");
        let limit_s = drover_core::migration::PlanKnobs::default().downtime_limit_ms as f64 / 1e3;
        assert_eq!(fit::fit(&rows, limit_s).expect("fits"), p);
    }

    #[test]
    fn a_bad_field_is_named() {
        let mut p = known();
        p.cancelled.lost_share = 1.5;
        let text = serde_json::to_string(&p).expect("encodes");
        let err = JudgeParams::from_json(&text).expect_err("out of range");
        assert!(err.to_string().contains("cancelled.lost_share"), "{err}");
    }

    #[test]
    fn precopy_fails_only_above_the_pressure_threshold() {
        let p = known();
        let mib = MIB;
        let slow = Case {
            pass_bytes: 1024.0 * mib,
            wss_bytes: 512.0 * mib,
            dirty_bps: 1e6,
            bandwidth_bps: 100e6,
        };
        assert!(p.judge(&slow, Technique::Precopy).moved);
        let hot = Case {
            dirty_bps: 1e9,
            ..slow
        };
        assert_eq!(p.precopy_end(&hot), PrecopyEnd::Cancelled);
        let out = p.judge(&hot, Technique::Precopy);
        assert!(!out.moved);
        assert_eq!(out.total_s, p.cancelled.total_s);
        assert!(p.judge(&hot, Technique::Postcopy).moved);
        assert!(p.judge(&hot, Technique::Hybrid).moved);
        let warm = Case {
            dirty_bps: 150e6,
            ..slow
        };
        assert_eq!(p.precopy_end(&warm), PrecopyEnd::Escalated);
        let out = p.judge(&warm, Technique::Precopy);
        assert!(out.moved);
        assert_eq!(out.downtime_s, p.escalated.downtime_s);
    }

    #[test]
    fn auto_is_resolved_to_a_technique_that_moves_memory() {
        let judge = Judge::Calibrated(Box::new(known()));
        let case = Case {
            pass_bytes: 1024.0 * MIB,
            wss_bytes: 512.0 * MIB,
            dirty_bps: 150e6,
            bandwidth_bps: 100e6,
        };
        let (out, ran) = judge.judge(&case, Technique::Auto);
        assert!(Technique::CONCRETE.contains(&ran), "{ran}");
        assert_eq!(out, known().judge(&case, ran));
    }
}
