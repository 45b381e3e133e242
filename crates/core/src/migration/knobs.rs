//! The operator's settings for one migration: one type for the API body (flattened into the
//! migration request), the CLI's flags, `migrate-bench`'s configuration and the stored record,
//! with its defaults and its limits in one place and one pure check, [`PlanKnobs::validate`].
//!
//! Field names carry their unit (`_bps` bytes per second, `_ms`, `_s`) and are the same on the
//! wire, in the stored record and in the code. Whole numbers written as `300.0` are accepted.

use super::technique::HybridSwitch;
use crate::wire;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// "No cap": QEMU's own default `max-bandwidth` is 128MiB/s, so uncapped runs set this instead.
pub const UNCAPPED_BPS: u64 = 100_000_000_000;

/// Slowest migration bandwidth accepted, bytes/s (1 Mbit/s). Below it even a small guest takes
/// hours, and a typo (`--bandwidth 100` is 100 B/s) would start a migration that never ends.
pub const MIN_BANDWIDTH_BPS: u64 = 125_000;

/// Longest downtime limit accepted, ms (10 minutes; QEMU's own ceiling is 2000 s).
pub const MAX_DOWNTIME_LIMIT_MS: u64 = 600_000;

/// Longest pre-copy deadline accepted, s (one day).
pub const MAX_DEADLINE_S: u64 = 86_400;

/// Most pre-copy passes a hybrid migration may run before switching.
pub const MAX_HYBRID_ROUNDS: u32 = 1_000;

/// Longest stall limit accepted, s (one hour): see `PlanKnobs::postcopy_stall_s`.
pub const MAX_POSTCOPY_STALL_S: u64 = 3_600;

/// What an operator sets for one migration. Every field has a default ([`PlanKnobs::default`]);
/// [`PlanKnobs::validate`] holds every limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct PlanKnobs {
    /// Migration bandwidth cap, bytes/s; null: uncapped (QEMU's own 128 MiB/s default is
    /// lifted). At least 125000 (1 Mbit/s).
    #[serde(deserialize_with = "wire::whole_opt")]
    #[cfg_attr(
        feature = "schema",
        schemars(range(min = 125_000u64, max = 100_000_000_000u64))
    )]
    pub bandwidth_bps: Option<u64>,
    /// Longest pause pre-copy may take at switchover, ms (QEMU's `downtime-limit`).
    #[serde(deserialize_with = "wire::whole")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 600_000)))]
    pub downtime_limit_ms: u64,
    /// Pre-copy deadline, s: a pre-copy still running after this long is cancelled and the VM
    /// stays on the source.
    #[serde(deserialize_with = "wire::whole")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 86_400)))]
    pub deadline_s: u64,
    /// Let the watchdog switch a pre-copy that does not converge to post-copy.
    pub allow_postcopy_switch: bool,
    /// Hybrid: switch to post-copy once this fraction of RAM (0..=1) has been sent...
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0, max = 1.0)))]
    pub hybrid_fraction: f64,
    /// ...or after this many pre-copy passes, whichever comes first.
    #[serde(deserialize_with = "wire::whole")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1_000)))]
    pub hybrid_rounds: u32,
    /// Bandwidth `auto` assumes when there is no cap, bytes/s.
    #[serde(deserialize_with = "wire::whole")]
    #[cfg_attr(
        feature = "schema",
        schemars(range(min = 125_000u64, max = 100_000_000_000u64))
    )]
    pub assumed_link_bps: u64,
    /// Post-copy progress watchdog, s: a post-copy that moves no byte for this long is paused
    /// (recoverable, the guest is never lost) and ends `paused` instead of being waited for.
    #[serde(deserialize_with = "wire::whole")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 3_600)))]
    pub postcopy_stall_s: u64,
}

impl Default for PlanKnobs {
    fn default() -> Self {
        PlanKnobs {
            bandwidth_bps: None,
            downtime_limit_ms: 300,
            deadline_s: 60,
            allow_postcopy_switch: false,
            hybrid_fraction: HybridSwitch::default().ram_fraction,
            hybrid_rounds: HybridSwitch::default().max_rounds,
            assumed_link_bps: 1_000_000_000,
            postcopy_stall_s: 60,
        }
    }
}

/// A setting outside its limits; names the field as the wire and the record spell it.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{field} = {value}: {expected}")]
pub struct KnobError {
    /// Field name (`bandwidth_bps`, `downtime_limit_ms`, ...).
    pub field: &'static str,
    /// The value as given.
    pub value: String,
    /// What is accepted, with the unit.
    pub expected: String,
}

fn check<T: PartialOrd + std::fmt::Display + Copy>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
    unit: &str,
) -> Result<(), KnobError> {
    if value >= min && value <= max {
        return Ok(());
    }
    Err(KnobError {
        field,
        value: value.to_string(),
        expected: format!("expected {min} to {max} {unit}"),
    })
}

/// A bandwidth: the floor, the ceiling, and the unit spelled out (a bare number is bytes/s, so
/// `100` is 100 B/s, not 100 Mbit/s).
fn check_rate(field: &'static str, bps: u64) -> Result<(), KnobError> {
    check(field, bps, MIN_BANDWIDTH_BPS, UNCAPPED_BPS, "bytes/s").map_err(|mut e| {
        e.expected = format!(
            "expected {MIN_BANDWIDTH_BPS} (1 Mbit/s) to {UNCAPPED_BPS} bytes/s; the unit is bytes per second"
        );
        e
    })
}

impl PlanKnobs {
    /// Checks every limit. Pure, so the API, the CLI and `migrate-bench` refuse the same
    /// settings with the same message, before anything boots.
    ///
    /// # Errors
    /// The first field out of range, with what is accepted.
    pub fn validate(&self) -> Result<(), KnobError> {
        if let Some(bps) = self.bandwidth_bps {
            check_rate("bandwidth_bps", bps)?;
        }
        check_rate("assumed_link_bps", self.assumed_link_bps)?;
        check(
            "downtime_limit_ms",
            self.downtime_limit_ms,
            1,
            MAX_DOWNTIME_LIMIT_MS,
            "ms",
        )?;
        check("deadline_s", self.deadline_s, 1, MAX_DEADLINE_S, "s")?;
        if !(0.0..=1.0).contains(&self.hybrid_fraction) {
            return Err(KnobError {
                field: "hybrid_fraction",
                value: self.hybrid_fraction.to_string(),
                expected: "expected a fraction of RAM from 0 to 1".into(),
            });
        }
        check(
            "hybrid_rounds",
            self.hybrid_rounds,
            1,
            MAX_HYBRID_ROUNDS,
            "passes",
        )?;
        check(
            "postcopy_stall_s",
            self.postcopy_stall_s,
            1,
            MAX_POSTCOPY_STALL_S,
            "s",
        )
    }

    /// Hybrid's switch point.
    pub fn hybrid(&self) -> HybridSwitch {
        HybridSwitch {
            ram_fraction: self.hybrid_fraction,
            max_rounds: self.hybrid_rounds,
        }
    }

    /// The pre-copy deadline in ms, as the watchdog counts it.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_s.saturating_mul(1000)
    }

    /// The post-copy stall limit in ms, as the source machine counts it.
    pub fn postcopy_stall_ms(&self) -> u64 {
        self.postcopy_stall_s.saturating_mul(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_every_limit_names_its_field() {
        assert_eq!(PlanKnobs::default().validate(), Ok(()));
        let cases: [(PlanKnobs, &str); 8] = [
            (
                PlanKnobs {
                    bandwidth_bps: Some(100),
                    ..PlanKnobs::default()
                },
                "bandwidth_bps",
            ),
            (
                PlanKnobs {
                    downtime_limit_ms: 3_000_000,
                    ..PlanKnobs::default()
                },
                "downtime_limit_ms",
            ),
            (
                PlanKnobs {
                    downtime_limit_ms: 0,
                    ..PlanKnobs::default()
                },
                "downtime_limit_ms",
            ),
            (
                PlanKnobs {
                    deadline_s: 0,
                    ..PlanKnobs::default()
                },
                "deadline_s",
            ),
            (
                PlanKnobs {
                    hybrid_fraction: f64::NAN,
                    ..PlanKnobs::default()
                },
                "hybrid_fraction",
            ),
            (
                PlanKnobs {
                    hybrid_rounds: 0,
                    ..PlanKnobs::default()
                },
                "hybrid_rounds",
            ),
            (
                PlanKnobs {
                    assumed_link_bps: 0,
                    ..PlanKnobs::default()
                },
                "assumed_link_bps",
            ),
            (
                PlanKnobs {
                    postcopy_stall_s: 0,
                    ..PlanKnobs::default()
                },
                "postcopy_stall_s",
            ),
        ];
        for (knobs, field) in cases {
            let err = knobs.validate().expect_err(field);
            assert_eq!(err.field, field);
        }
    }

    #[test]
    fn a_tiny_bandwidth_says_the_unit() {
        let err = PlanKnobs {
            bandwidth_bps: Some(100),
            ..PlanKnobs::default()
        }
        .validate()
        .expect_err("100 B/s is below the floor");
        let msg = err.to_string();
        assert!(msg.contains("bytes per second"), "{msg}");
        assert!(msg.starts_with("bandwidth_bps = 100"), "{msg}");
    }

    #[test]
    fn wire_form_uses_the_same_names_and_fills_defaults() {
        let k: PlanKnobs =
            serde_json::from_str(r#"{"deadline_s": 20.0, "bandwidth_bps": 50000000}"#)
                .expect("parses");
        assert_eq!(k.deadline_s, 20);
        assert_eq!(k.bandwidth_bps, Some(50_000_000));
        assert_eq!(k.downtime_limit_ms, 300);
        let back = serde_json::to_value(&k).expect("serializes");
        assert_eq!(back["deadline_s"], 20);
        assert!(serde_json::from_str::<PlanKnobs>(r#"{"deadline_ms": 1}"#).is_err());
    }
}
