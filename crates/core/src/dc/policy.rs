//! Policies by name, and the one entry point the simulator (and later the manager) calls.
//!
//! Names: `<detector>-<selector>-<parameter>` for the published policies, e.g. `lr-mmt-1.2`,
//! `iqr-mmt-1.5`, `thr-mmt-0.8`, `mad-mmt-2.5`, `lrr-mmt-1.2`, `thr-mc-0.8`, `thr-rs-0.8`
//! (detectors thr, iqr, mad, lr, lrr; selectors mmt, mc, mu, rs; `_` works as a separator too);
//! `drover` for Drover's own; and the baselines `npa` (no power management: every host at full
//! power, no migrations) and `dvfs` (power follows load, no migrations). A label prints the
//! parameter as typed (`thr-mmt-.5`, `lr-mmt-1.20`), never reformatted or rounded. THR's
//! threshold lies in (0, 1], the other detectors' safety parameter in (0, 10].

use super::consolidate;
use super::detect::{Detector, Overload};
use super::drover::{self, DroverParams};
use super::place::Admission;
use super::plan::Plan;
use super::rng::SplitMix64;
use super::select::Selector;
use super::snapshot::Snapshot;
use crate::migration::Technique;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("empty policy name")]
    Empty,
    #[error("unknown policy '{0}': expected npa, dvfs, drover or <detector>-<selector>-<parameter> such as lr-mmt-1.2")]
    Unknown(String),
    #[error(
        "unknown overload detector '{detector}' in '{name}': expected thr, iqr, mad, lr or lrr"
    )]
    Detector { name: String, detector: String },
    #[error("unknown VM selection '{selector}' in '{name}': expected mmt, mc, mu or rs")]
    Selector { name: String, selector: String },
    #[error("bad parameter '{param}' in '{name}': expected a non-negative number")]
    Parameter { name: String, param: String },
    #[error("parameter '{param}' in '{name}' is out of range: expected {expected}")]
    OutOfRange {
        name: String,
        param: String,
        expected: &'static str,
    },
}

/// The largest safety parameter IQR, MAD, LR and LRR take. The published sweeps stay within
/// 0.5-3.0; far beyond, IQR and MAD call every host with the least spread overloaded (and
/// migrate without end) while LR and LRR do so for any upward trend, so a larger value is a
/// typo rather than a policy.
pub const MAX_SAFETY: f64 = 10.0;

/// What a detector's parameter must lie in, or `None` when `value` does: THR's threshold is a
/// utilization in (0, 1] (at 0 every loaded host is overloaded, above 1 none ever is); the
/// others' safety parameters in (0, [`MAX_SAFETY`]] (at 0 no host is ever overloaded).
fn parameter_range(detector: &Overload, value: f64) -> Option<&'static str> {
    match *detector {
        Overload::Thr { .. } if !(value > 0.0 && value <= 1.0) => {
            Some("a utilization threshold above 0 and at most 1, such as 0.8")
        }
        Overload::Iqr { .. }
        | Overload::Mad { .. }
        | Overload::Lr { .. }
        | Overload::Lrr { .. }
            if !(value > 0.0 && value <= MAX_SAFETY) =>
        {
            Some(
                "a safety parameter above 0 and at most 10, such as 1.2 (LR), 1.5 (IQR), 2.5 (MAD)",
            )
        }
        _ => None,
    }
}

/// A policy as named.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicySpec {
    /// No power management: hosts always at full power, no migrations.
    Npa,
    /// Power follows load (DVFS), VMs never move.
    Dvfs,
    /// A published detector with a selector and PABFD placement.
    Published {
        detector: Overload,
        selector: Selector,
        /// The parameter as typed (`5`, `1.20`, `.5`), for the label: two names that read
        /// differently stay apart even when they are the same number.
        param: String,
    },
    Drover(DroverParams),
}

/// The policies every comparison runs, in table order.
pub const ALL: &[&str] = &[
    "npa",
    "dvfs",
    "thr-mmt-0.8",
    "thr-mmt-1.0",
    "iqr-mmt-1.5",
    "mad-mmt-2.5",
    "lr-mmt-1.2",
    "lrr-mmt-1.2",
    "drover",
];

impl FromStr for PolicySpec {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Matched in lower case; refusals quote the name as typed (`NaN`, not `nan`).
        let typed = s.trim();
        let name = typed.to_ascii_lowercase();
        match name.as_str() {
            "" => return Err(PolicyError::Empty),
            "npa" => return Ok(PolicySpec::Npa),
            "dvfs" => return Ok(PolicySpec::Dvfs),
            "drover" => return Ok(PolicySpec::Drover(DroverParams::default())),
            _ => {}
        }
        let parts: Vec<&str> = name.splitn(3, ['-', '_']).collect();
        // ASCII lower-casing keeps every byte where it was, so the typed parts line up.
        let typed_parts: Vec<&str> = typed.splitn(3, ['-', '_']).collect();
        let ([det, sel, param], [typed_det, typed_sel, typed_param]) =
            (&parts[..], &typed_parts[..])
        else {
            return Err(PolicyError::Unknown(typed.to_string()));
        };
        let value: f64 = match param.parse::<f64>() {
            // -0 is 0 (so it is not labelled "-0.0").
            Ok(v) if v.is_finite() && v == 0.0 => 0.0,
            Ok(v) if v.is_finite() && v >= 0.0 => v,
            _ => {
                return Err(PolicyError::Parameter {
                    name: typed.to_string(),
                    param: typed_param.to_string(),
                })
            }
        };
        let detector = match *det {
            "thr" => Overload::Thr { threshold: value },
            "iqr" => Overload::Iqr { safety: value },
            "mad" => Overload::Mad { safety: value },
            "lr" => Overload::Lr { safety: value },
            "lrr" => Overload::Lrr { safety: value },
            _ => {
                return Err(PolicyError::Detector {
                    name: typed.to_string(),
                    detector: typed_det.to_string(),
                })
            }
        };
        if let Some(expected) = parameter_range(&detector, value) {
            return Err(PolicyError::OutOfRange {
                name: typed.to_string(),
                param: typed_param.to_string(),
                expected,
            });
        }
        let selector = match *sel {
            "mmt" => Selector::Mmt,
            "mc" => Selector::Mc,
            "mu" => Selector::Mu,
            "rs" => Selector::Rs,
            _ => {
                return Err(PolicyError::Selector {
                    name: typed.to_string(),
                    selector: typed_sel.to_string(),
                })
            }
        };
        Ok(PolicySpec::Published {
            detector,
            selector,
            param: typed_param.trim().to_string(),
        })
    }
}

impl fmt::Display for PolicySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySpec::Npa => f.write_str("npa"),
            PolicySpec::Dvfs => f.write_str("dvfs"),
            PolicySpec::Drover(_) => f.write_str("drover"),
            PolicySpec::Published {
                detector,
                selector,
                param,
            } => {
                let d = match detector {
                    Overload::Thr { .. } => "thr",
                    Overload::Iqr { .. } => "iqr",
                    Overload::Mad { .. } => "mad",
                    Overload::Lr { .. } => "lr",
                    Overload::Lrr { .. } => "lrr",
                };
                write!(f, "{d}-{}-{param}", selector.name())
            }
        }
    }
}

/// A policy ready to decide, with whatever state it keeps between rounds.
#[derive(Debug, Clone)]
pub struct Policy {
    pub spec: PolicySpec,
    interval_s: f64,
    rng: SplitMix64,
}

impl Policy {
    /// `interval_s` is the decision interval; `seed` feeds the random choices (RS).
    pub fn new(spec: PolicySpec, interval_s: f64, seed: u64) -> Policy {
        Policy {
            spec,
            interval_s,
            rng: SplitMix64::new(seed),
        }
    }

    pub fn name(&self) -> String {
        self.spec.to_string()
    }

    /// Whether the policy ever migrates.
    pub fn migrates(&self) -> bool {
        matches!(
            self.spec,
            PolicySpec::Published { .. } | PolicySpec::Drover(_)
        )
    }

    /// How it admits new VMs.
    pub fn admission(&self) -> Admission {
        match self.spec {
            PolicySpec::Npa | PolicySpec::Dvfs => Admission::FirstFit,
            PolicySpec::Published { .. } => Admission::PowerAware,
            PolicySpec::Drover(_) => Admission::Packed,
        }
    }

    /// The detector used for admission and planning (THR 1.0 for the policies without one).
    pub fn detector(&self) -> Detector {
        let kind = match &self.spec {
            PolicySpec::Published { detector, .. } => *detector,
            _ => Overload::Thr { threshold: 1.0 },
        };
        Detector::new(kind, self.interval_s)
    }

    /// Plans one round from a snapshot.
    pub fn decide(&mut self, snap: &Snapshot) -> Plan {
        match &self.spec {
            PolicySpec::Npa | PolicySpec::Dvfs => Plan::default(),
            PolicySpec::Published { selector, .. } => {
                let det = self.detector();
                consolidate::optimize(snap, &det, *selector, &mut self.rng, Technique::Precopy)
            }
            PolicySpec::Drover(params) => drover::decide(snap, params),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_published_names_both_separators() {
        let p: PolicySpec = "lr-mmt-1.2".parse().unwrap();
        assert_eq!(
            p,
            PolicySpec::Published {
                detector: Overload::Lr { safety: 1.2 },
                selector: Selector::Mmt,
                param: "1.2".into(),
            }
        );
        assert_eq!(p.to_string(), "lr-mmt-1.2");
        let p: PolicySpec = "IQR_MC_1.5".parse().unwrap();
        assert_eq!(p.to_string(), "iqr-mc-1.5");
        assert_eq!(
            "thr-rs-0.8".parse::<PolicySpec>().unwrap().to_string(),
            "thr-rs-0.8"
        );
        for name in ALL {
            let p: PolicySpec = name.parse().unwrap();
            assert_eq!(&p.to_string(), name);
        }
    }

    #[test]
    fn labels_keep_the_parameter_unrounded_and_parse_back() {
        for (name, label) in [
            ("lr-mmt-1.25", "lr-mmt-1.25"),
            ("thr-mmt-0.0001", "thr-mmt-0.0001"),
            // The parameter as given, never reformatted.
            ("thr-mmt-1e-5", "thr-mmt-1e-5"),
            ("thr-mmt-1", "thr-mmt-1"),
            ("lr-mmt-5", "lr-mmt-5"),
            ("lr-mmt-1.20", "lr-mmt-1.20"),
            ("thr-mmt-.5", "thr-mmt-.5"),
            ("lr-mmt-01.2", "lr-mmt-01.2"),
            ("LR-MMT-1.2", "lr-mmt-1.2"),
            ("mad_mu_2.75", "mad-mu-2.75"),
        ] {
            let p: PolicySpec = name.parse().unwrap();
            assert_eq!(p.to_string(), label, "{name}");
            assert_eq!(label.parse::<PolicySpec>().unwrap(), p, "{label}");
        }
        let a: PolicySpec = "lr-mmt-1.25".parse().unwrap();
        let b: PolicySpec = "lr-mmt-1.2".parse().unwrap();
        assert_ne!(a.to_string(), b.to_string());
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let e = "xyz-mmt-1.0".parse::<PolicySpec>().unwrap_err();
        assert!(
            e.to_string().contains("unknown overload detector 'xyz'"),
            "{e}"
        );
        let e = "lr-abc-1.0".parse::<PolicySpec>().unwrap_err();
        assert!(e.to_string().contains("unknown VM selection 'abc'"), "{e}");
        let e = "lr-mmt-high".parse::<PolicySpec>().unwrap_err();
        assert!(e.to_string().contains("bad parameter 'high'"), "{e}");
        for (name, param) in [
            ("thr-mmt-5", "5"),
            ("thr-mmt-1.01", "1.01"),
            ("thr-mmt-0", "0"),
            ("lr-mmt-0", "0"),
            ("lrr-mmt-0.0", "0.0"),
            ("mad-mmt-1e9", "1e9"),
            ("iqr-mmt-1e308", "1e308"),
        ] {
            let e = name.parse::<PolicySpec>().unwrap_err().to_string();
            assert!(
                e.contains(&format!("parameter '{param}' in '{name}' is out of range")),
                "{e}"
            );
        }
        for edge in ["thr-mmt-1", "thr-mmt-1e-5", "lr-mmt-10", "iqr-mmt-0.01"] {
            assert!(edge.parse::<PolicySpec>().is_ok(), "{edge}");
        }
        let e = "lr-mmt".parse::<PolicySpec>().unwrap_err();
        assert!(e.to_string().contains("unknown policy 'lr-mmt'"), "{e}");
        assert_eq!("  ".parse::<PolicySpec>().unwrap_err(), PolicyError::Empty);
    }

    /// Names are matched in any case but quoted as typed.
    #[test]
    fn refusals_quote_the_name_as_typed() {
        let e = "thr-mmt-NaN".parse::<PolicySpec>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad parameter 'NaN' in 'thr-mmt-NaN': expected a non-negative number"
        );
        let e = "XYZ-MMT-1".parse::<PolicySpec>().unwrap_err().to_string();
        assert!(e.contains("'XYZ' in 'XYZ-MMT-1'"), "{e}");
        let e = "Lr-Abc-1".parse::<PolicySpec>().unwrap_err().to_string();
        assert!(e.contains("'Abc' in 'Lr-Abc-1'"), "{e}");
    }
}
