//! The operator's settings for one migration: one type for the API body (flattened into the
//! migration request), the CLI's flags, `migrate-bench`'s configuration and the stored record,
//! with its defaults and its limits in one place and one pure check, [`PlanKnobs::validate`].
//!
//! Field names carry their unit (`_bps` bytes per second, `_ms`, `_s`) and are the same on the
//! wire, in the stored record and in the code. Whole numbers written as `300.0` are accepted.

use super::storage::StorageMode;
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

/// Longest resume window accepted, s (one day): see `PlanKnobs::resume_window_s`.
pub const MAX_RESUME_WINDOW_S: u64 = 86_400;

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
    /// A negative zero (`-0.0`) is read and written as 0.0 ([`fraction`]).
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0, max = 1.0)))]
    #[serde(deserialize_with = "fraction", serialize_with = "fraction_out")]
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
    /// How long the source's agent keeps trying to resume a post-copy the run left paused, s
    /// (`migration::resume`): it pauses a destination still waiting on the dead connection,
    /// then recovers and resumes once the destination answers again. 0: never (the migration
    /// stays paused until an operator acts).
    #[serde(deserialize_with = "wire::whole")]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 86_400)))]
    pub resume_window_s: u64,
    /// How a VM's local disk moves (ignored for a VM without one): `precopy` (mirrored to
    /// the destination before the switchover, with memory moved by pre-copy) or `postcopy`
    /// (the destination runs on the source's NBD export from the switchover on and streams
    /// the disk afterwards; memory by any technique) or `hybrid` (the disk's hottest blocks,
    /// `storage_fraction` of it, pushed ahead before the switchover, the rest pulled after it
    /// as in `postcopy`; memory by any technique).
    #[cfg_attr(
        feature = "schema",
        schemars(extend("enum" = ["precopy", "postcopy", "hybrid"]))
    )]
    pub storage: StorageMode,
    /// Storage hybrid: the fraction of the disk (0 to 1) pushed ahead, its hottest blocks by a
    /// profile of the VM taken when the migration starts; null: the fraction the WAN model
    /// (`migration::wan::choose_fractions`) picks from that profile for the link. Ignored by
    /// the other storage modes.
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0, max = 1.0)))]
    pub storage_fraction: Option<f64>,
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
            resume_window_s: 600,
            storage: StorageMode::Precopy,
            storage_fraction: None,
        }
    }
}

/// A fraction as read from the wire, the record or a configuration: `-0.0` (which passes the
/// 0..=1 check, being equal to 0.0) becomes 0.0, so it is neither stored nor echoed signed.
/// The one place `hybrid_fraction` enters through serde; [`fraction_out`] is its mirror for
/// values built in code (the CLI's flags).
fn fraction<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    f64::deserialize(d).map(unsigned_zero)
}

fn fraction_out<S: serde::Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(unsigned_zero(*value))
}

/// `x` with a negative zero made positive (adding 0.0 does exactly that, and nothing else).
fn unsigned_zero(x: f64) -> f64 {
    x + 0.0
}

/// A setting outside its limits; names the field as the wire and the record spell it.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{}", crate::units::refusal(field, value, None, expected))]
pub struct KnobError {
    /// Field name (`bandwidth_bps`, `downtime_limit_ms`, ...).
    pub field: &'static str,
    /// The value as given.
    pub value: String,
    /// What is accepted, with the unit (`expected 1 to 600000 ms`).
    pub expected: String,
}

impl KnobError {
    /// The refusal naming the setting as `name` (the field, or the flag that set it) with the
    /// value as typed there, and `note` saying what that text was read as
    /// ([`crate::units::Reading::note`]).
    pub fn message(&self, name: &str, typed: &str, note: Option<&str>) -> String {
        crate::units::refusal(name, typed, note, &self.expected)
    }
}

/// The limits of one whole-number setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub field: &'static str,
    pub min: u64,
    pub max: u64,
    /// The unit, for messages (`ms`, `s`, `passes`; rates are `bytes/s`).
    pub unit: &'static str,
}

const BANDWIDTH: Limit = Limit {
    field: "bandwidth_bps",
    min: MIN_BANDWIDTH_BPS,
    max: UNCAPPED_BPS,
    unit: "bytes/s",
};
const ASSUMED_LINK: Limit = Limit {
    field: "assumed_link_bps",
    ..BANDWIDTH
};
const DOWNTIME: Limit = Limit {
    field: "downtime_limit_ms",
    min: 1,
    max: MAX_DOWNTIME_LIMIT_MS,
    unit: "ms",
};
const DEADLINE: Limit = Limit {
    field: "deadline_s",
    min: 1,
    max: MAX_DEADLINE_S,
    unit: "s",
};
const HYBRID_ROUNDS: Limit = Limit {
    field: "hybrid_rounds",
    min: 1,
    max: MAX_HYBRID_ROUNDS as u64,
    unit: "passes",
};
const POSTCOPY_STALL: Limit = Limit {
    field: "postcopy_stall_s",
    min: 1,
    max: MAX_POSTCOPY_STALL_S,
    unit: "s",
};
const RESUME_WINDOW: Limit = Limit {
    field: "resume_window_s",
    min: 0,
    max: MAX_RESUME_WINDOW_S,
    unit: "s",
};

/// What `hybrid_fraction` accepts.
const FRACTION_EXPECTED: &str = "expected a fraction of RAM from 0 to 1";

/// What `storage_fraction` accepts.
const STORAGE_FRACTION_EXPECTED: &str = "expected a fraction of the disk from 0 to 1";

impl Limit {
    fn is_rate(&self) -> bool {
        self.unit == "bytes/s"
    }

    /// What is accepted, for a value that is `below` the floor or above the ceiling (`None`:
    /// unknown, as for a number too large or negative to be read at all). Rates say only the
    /// bound they break, with its size in plain words: `expected at least 125000 bytes/s (1
    /// Mbit/s)`.
    pub fn expected(&self, below: Option<bool>) -> String {
        let (min, max, unit) = (self.min, self.max, self.unit);
        match (self.is_rate(), below) {
            (true, Some(true)) => format!("expected at least {min} {unit} (1 Mbit/s)"),
            (true, Some(false)) => format!("expected at most {max} {unit} (100 GB/s)"),
            (true, None) => format!("expected {min} (1 Mbit/s) to {max} (100 GB/s) {unit}"),
            (false, _) => format!("expected {min} to {max} {unit}"),
        }
    }

    fn check(&self, value: u64) -> Result<(), KnobError> {
        if (self.min..=self.max).contains(&value) {
            return Ok(());
        }
        Err(KnobError {
            field: self.field,
            value: value.to_string(),
            expected: self.expected(Some(value < self.min)),
        })
    }
}

/// Checks a host's link rate, bytes/s: the range a migration's `assumed_link_bps` may have
/// (1 Mbit/s to 100 GB/s). The one floor of the agent's `--link` and the lab's, so a lab never
/// starts agents that refuse their link.
///
/// # Errors
/// What is accepted, with the unit (`expected at least 125000 bytes/s (1 Mbit/s)`).
pub fn check_link_bps(bps: u64) -> Result<(), String> {
    ASSUMED_LINK.check(bps).map_err(|e| e.expected)
}

impl PlanKnobs {
    /// The limits of every whole-number setting, by field name.
    pub const LIMITS: [Limit; 7] = [
        BANDWIDTH,
        ASSUMED_LINK,
        DOWNTIME,
        DEADLINE,
        HYBRID_ROUNDS,
        POSTCOPY_STALL,
        RESUME_WINDOW,
    ];

    /// What `field` accepts, as [`PlanKnobs::validate`] words it (for a value that cannot even
    /// be read as the field's type, such as a negative number).
    pub fn expected(field: &str) -> Option<String> {
        if field == "hybrid_fraction" {
            return Some(FRACTION_EXPECTED.to_string());
        }
        if field == "storage_fraction" {
            return Some(STORAGE_FRACTION_EXPECTED.to_string());
        }
        Self::LIMITS
            .iter()
            .find(|l| l.field == field)
            .map(|l| l.expected(None))
    }

    /// Checks every limit. Pure, so the API, the CLI and `migrate-bench` refuse the same
    /// settings with the same message, before anything boots.
    ///
    /// # Errors
    /// The first field out of range, with what is accepted.
    pub fn validate(&self) -> Result<(), KnobError> {
        if let Some(bps) = self.bandwidth_bps {
            BANDWIDTH.check(bps)?;
        }
        ASSUMED_LINK.check(self.assumed_link_bps)?;
        DOWNTIME.check(self.downtime_limit_ms)?;
        DEADLINE.check(self.deadline_s)?;
        if !(0.0..=1.0).contains(&self.hybrid_fraction) {
            return Err(KnobError {
                field: "hybrid_fraction",
                value: self.hybrid_fraction.to_string(),
                expected: FRACTION_EXPECTED.into(),
            });
        }
        HYBRID_ROUNDS.check(u64::from(self.hybrid_rounds))?;
        if let Some(s) = self.storage_fraction {
            if !(0.0..=1.0).contains(&s) {
                return Err(KnobError {
                    field: "storage_fraction",
                    value: s.to_string(),
                    expected: STORAGE_FRACTION_EXPECTED.into(),
                });
            }
        }
        POSTCOPY_STALL.check(self.postcopy_stall_s)?;
        RESUME_WINDOW.check(self.resume_window_s)
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

    /// How a post-copy left paused is resumed: within the resume window, paused again after
    /// the stall limit. None when the window is 0 (never resumed).
    pub fn resume(&self) -> Option<super::resume::ResumeParams> {
        (self.resume_window_s > 0).then(|| super::resume::ResumeParams {
            window_ms: self.resume_window_s.saturating_mul(1000),
            stall_ms: self.postcopy_stall_ms(),
            ..super::resume::ResumeParams::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_every_limit_names_its_field() {
        assert_eq!(PlanKnobs::default().validate(), Ok(()));
        let cases: [(PlanKnobs, &str); 9] = [
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
            (
                PlanKnobs {
                    storage: StorageMode::Hybrid,
                    storage_fraction: Some(1.5),
                    ..PlanKnobs::default()
                },
                "storage_fraction",
            ),
        ];
        let hybrid = PlanKnobs {
            storage: StorageMode::Hybrid,
            storage_fraction: Some(0.25),
            ..PlanKnobs::default()
        };
        assert_eq!(hybrid.validate(), Ok(()));
        assert_eq!(
            PlanKnobs::expected("storage_fraction").as_deref(),
            Some("expected a fraction of the disk from 0 to 1")
        );
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
        assert_eq!(
            err.to_string(),
            "bandwidth_bps 100: expected at least 125000 bytes/s (1 Mbit/s)"
        );
        assert_eq!(
            err.message("--bandwidth", "1bit/s", Some("rounds to 0 bytes/s")),
            "--bandwidth 1bit/s rounds to 0 bytes/s; expected at least 125000 bytes/s (1 Mbit/s)"
        );
        let err = PlanKnobs {
            bandwidth_bps: Some(UNCAPPED_BPS + 1),
            ..PlanKnobs::default()
        }
        .validate()
        .expect_err("above the ceiling");
        assert!(err.expected.contains("at most 100000000000"), "{err}");
    }

    #[test]
    fn the_resume_window_may_be_zero_and_at_most_a_day() {
        let with = |s| PlanKnobs {
            resume_window_s: s,
            postcopy_stall_s: 7,
            ..PlanKnobs::default()
        };
        assert_eq!(with(0).validate(), Ok(()));
        assert_eq!(with(0).resume(), None, "0: never resumed");
        let r = with(30).resume().expect("resumed");
        assert_eq!((r.window_ms, r.stall_ms), (30_000, 7_000));
        let err = with(MAX_RESUME_WINDOW_S + 1)
            .validate()
            .expect_err("too long");
        assert_eq!(err.field, "resume_window_s");
        assert_eq!(err.expected, "expected 0 to 86400 s");
    }

    /// Every numeric setting has its limits in the table the API's parser quotes for numbers
    /// it cannot even read (`"deadline_s": -1`), worded as `validate` words them.
    #[test]
    fn every_numeric_field_has_its_expected_text() {
        let fields = serde_json::to_value(PlanKnobs {
            bandwidth_bps: Some(MIN_BANDWIDTH_BPS),
            ..PlanKnobs::default()
        })
        .expect("serializes");
        for (field, value) in fields.as_object().expect("an object") {
            if value.is_number() {
                assert!(PlanKnobs::expected(field).is_some(), "{field}");
            }
        }
        let err = PlanKnobs {
            deadline_s: 0,
            ..PlanKnobs::default()
        }
        .validate()
        .expect_err("zero");
        assert_eq!(
            PlanKnobs::expected("deadline_s"),
            Some(err.expected.clone())
        );
        assert_eq!(err.to_string(), "deadline_s 0: expected 1 to 86400 s");
    }

    /// `"hybrid_fraction": -0.0` was stored and echoed as -0.0.
    #[test]
    fn a_negative_zero_fraction_is_zero() {
        let k: PlanKnobs = serde_json::from_str(r#"{"hybrid_fraction": -0.0}"#).expect("parses");
        assert!(k.hybrid_fraction.is_sign_positive());
        assert_eq!(k.validate(), Ok(()));
        let built = PlanKnobs {
            hybrid_fraction: -0.0,
            ..PlanKnobs::default()
        };
        let text = serde_json::to_string(&built).expect("serializes");
        assert!(text.contains(r#""hybrid_fraction":0.0"#), "{text}");
        let again: PlanKnobs = serde_json::from_str(&text).expect("reads back");
        assert!(again.hybrid_fraction.is_sign_positive());
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
