//! The manager's settings that the control step reads: thresholds, intervals, mode, technique
//! policy, placement rules and the power model. One `deny_unknown_fields` type, read from the
//! manager's TOML and patched through its API, with every default here and every limit in
//! [`ControlSettings::validate`].
//!
//! Defaults, and why:
//! - `hot` 0.9 for `hot_samples` 3 at 1 s samples: a host whose VMs want more than 90% of its
//!   CPUs for three seconds in a row is overloaded, not momentarily busy; three samples keep one
//!   noisy reading from moving a VM, and still detect within seconds (the source papers relieve
//!   sudden overloads in seconds).
//! - `target` 0.75: relief brings a host down to, and fills a destination up to, 75%. The gap
//!   to `hot` is the hysteresis that stops a VM bouncing between two hosts.
//! - `cold` 0.3, `consolidate_every_s` 60, `min_on_s` 300: a host below 30% that has been on for
//!   five minutes is emptied if all its VMs fit elsewhere under `target`; consolidation runs once
//!   a minute, since standby saves watts over minutes, not seconds.
//! - `vm_cooldown_s` 300: a VM that moved is not moved again for consolidation or balance within
//!   five minutes, and never sent back to the host it left within that time.
//! - one migration out and one in per host at a time: concurrent migrations share the link and
//!   each runs slower (and pre-copy may stop converging).
//! - `min_gain_w` 10, `max_moves_per_host` 3: a host whose idle draw is below 10 W is not worth
//!   emptying, and a host's idle power is worth a few migrations, not many.
//! - `standby` on: empty hosts draw nothing (the source papers' point); `technique_chooser`
//!   manager: the cost model picks from measured dirty rate and working set, and the plan keeps
//!   every technique's forecast; `predictive` and `balance` off: reactive detection is what the
//!   papers evaluate, and balancing adds moves that consolidation and relief do not need.
//!
//! docs/manager-policy.md describes how the control step uses each setting.

use super::observe::HostObs;
use crate::migration::knobs::check_link_bps;
use crate::migration::{KnobError, PlanKnobs, Technique};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// What the manager does with its decisions.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Carries plans out at once.
    Auto,
    /// Proposes plans; an operator approves each.
    Recommend,
    /// Records plans only.
    DryRun,
}

impl Mode {
    /// The mode as the config file and the API spell it (`auto`, `recommend`, `dry-run`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Recommend => "recommend",
            Mode::DryRun => "dry-run",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who picks each migration's technique.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TechniqueChooser {
    /// The manager, with core's cost model, from the VM's measured dirty rate, working set,
    /// memory and the link's bandwidth.
    Manager,
    /// The source agent's `auto` (it profiles the VM right before migrating).
    Agent,
}

/// A host's power draw: idle when on and doing nothing, peak at full CPU, linear between;
/// nothing in standby.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPower {
    pub idle_w: f64,
    pub peak_w: f64,
}

impl Default for HostPower {
    fn default() -> Self {
        // A typical 2-socket server.
        HostPower {
            idle_w: 100.0,
            peak_w: 250.0,
        }
    }
}

impl HostPower {
    /// Watts at `load` (0..=1, clamped).
    pub fn watts(&self, load: f64) -> f64 {
        self.idle_w + (self.peak_w - self.idle_w) * load.clamp(0.0, 1.0)
    }
}

/// A placement rule. Hard rules are never broken by a move (relief included); soft ones are
/// kept when some destination keeps them.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PlacementRule {
    /// These VMs run on the same host.
    Affinity { vms: Vec<String>, hard: bool },
    /// These VMs run on different hosts.
    AntiAffinity { vms: Vec<String>, hard: bool },
    /// These VMs run only on these hosts (`allow`), or never on them (`!allow`).
    VmHost {
        vms: Vec<String>,
        hosts: Vec<String>,
        allow: bool,
        hard: bool,
    },
}

/// Load balancing between running hosts (off unless set).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balance {
    /// Balance when the most and the least loaded running host differ by more than this share.
    pub spread: f64,
    /// How often, s.
    pub every_s: f64,
}

/// Everything the control step reads besides the observation and its own memory.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlSettings {
    pub mode: Mode,
    /// Load (demand over capacity) above which a host counts a hot sample.
    pub hot: f64,
    /// Consecutive hot samples that make a hotspot.
    pub hot_samples: u32,
    /// Also call a host hot when core's forecast of its load one interval ahead passes `hot`.
    pub predictive: bool,
    /// Relief brings hosts down to, and fills destinations up to, this load.
    pub target: f64,
    /// Hosts below this load may be emptied.
    pub cold: f64,
    /// How often consolidation is considered, s.
    pub consolidate_every_s: f64,
    /// A host is not emptied until it has been active this long, s.
    pub min_on_s: f64,
    /// Least power a consolidation must save, W (an emptied host's idle draw counts).
    pub min_gain_w: f64,
    /// Most moves spent to empty one host.
    pub max_moves_per_host: u32,
    /// A VM is not moved again (consolidation, balance) or sent back to a host it left within
    /// this time, s.
    pub vm_cooldown_s: f64,
    /// Migrations leaving one host at a time.
    pub max_out_per_host: u32,
    /// Migrations arriving at one host at a time.
    pub max_in_per_host: u32,
    /// Put emptied hosts in standby, and wake them when relief finds no room.
    pub standby: bool,
    /// Who picks each migration's technique.
    pub technique_chooser: TechniqueChooser,
    /// Techniques moves may use (a demo restricts the manager to one so that runs compare).
    pub techniques: Vec<Technique>,
    /// Migration settings sent with every move.
    pub knobs: PlanKnobs,
    /// Bandwidth between hosts the cost model assumes, bytes/s (None: the knobs' cap, else
    /// their assumed link). At least 125000 (1 Mbit/s), as a migration's bandwidth.
    pub link_bps: Option<u64>,
    pub rules: Vec<PlacementRule>,
    /// Load balancing; None: off.
    pub balance: Option<Balance>,
    /// Power model per host name; hosts not listed use `default_power`.
    pub power: BTreeMap<String, HostPower>,
    pub default_power: HostPower,
}

impl Default for ControlSettings {
    fn default() -> Self {
        ControlSettings {
            mode: Mode::Auto,
            hot: 0.9,
            hot_samples: 3,
            predictive: false,
            target: 0.75,
            cold: 0.3,
            consolidate_every_s: 60.0,
            min_on_s: 300.0,
            min_gain_w: 10.0,
            max_moves_per_host: 3,
            vm_cooldown_s: 300.0,
            max_out_per_host: 1,
            max_in_per_host: 1,
            standby: true,
            technique_chooser: TechniqueChooser::Manager,
            techniques: Technique::CONCRETE.to_vec(),
            knobs: PlanKnobs::default(),
            link_bps: None,
            rules: Vec::new(),
            balance: None,
            power: BTreeMap::new(),
            default_power: HostPower::default(),
        }
    }
}

/// A setting outside its limits, named as the config file and the API spell it.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SettingsError {
    #[error("{field} = {value}: {expected}")]
    Range {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A setting whose name or limit is built at run time (a host's power model, a rate).
    #[error("{field} = {value}: {expected}")]
    Named {
        field: String,
        value: String,
        expected: String,
    },
    #[error("knobs.{0}")]
    Knobs(#[from] KnobError),
    #[error("rules[{index}]: {why}")]
    Rule { index: usize, why: String },
}

fn range(
    field: &'static str,
    v: f64,
    ok: bool,
    expected: &'static str,
) -> Result<(), SettingsError> {
    if ok && v.is_finite() {
        return Ok(());
    }
    Err(SettingsError::Range {
        field,
        value: crate::units::shown(v),
        expected,
    })
}

impl ControlSettings {
    /// Checks every limit and that the thresholds are ordered (cold < target < hot).
    ///
    /// # Errors
    /// The first setting out of range, named.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let frac = "expected a load share above 0 and at most 2";
        range("hot", self.hot, self.hot > 0.0 && self.hot <= 2.0, frac)?;
        range(
            "target",
            self.target,
            self.target > 0.0 && self.target < self.hot,
            "expected above 0 and below hot",
        )?;
        range(
            "cold",
            self.cold,
            self.cold >= 0.0 && self.cold < self.target,
            "expected at least 0 and below target",
        )?;
        let n = self.hot_samples as f64;
        range(
            "hot_samples",
            n,
            (1.0..=3600.0).contains(&n),
            "expected 1 to 3600 samples",
        )?;
        let secs = "expected 0 to 86400 s";
        range(
            "consolidate_every_s",
            self.consolidate_every_s,
            (1.0..=86_400.0).contains(&self.consolidate_every_s),
            "expected 1 to 86400 s",
        )?;
        range(
            "min_on_s",
            self.min_on_s,
            (0.0..=86_400.0).contains(&self.min_on_s),
            secs,
        )?;
        range(
            "vm_cooldown_s",
            self.vm_cooldown_s,
            (0.0..=86_400.0).contains(&self.vm_cooldown_s),
            secs,
        )?;
        range(
            "min_gain_w",
            self.min_gain_w,
            self.min_gain_w >= 0.0,
            "expected at least 0 W",
        )?;
        let slots = "expected 1 to 64";
        for (field, v) in [
            ("max_moves_per_host", self.max_moves_per_host),
            ("max_out_per_host", self.max_out_per_host),
            ("max_in_per_host", self.max_in_per_host),
        ] {
            range(field, v as f64, (1..=64).contains(&v), slots)?;
        }
        if self.techniques.is_empty() {
            return Err(SettingsError::Range {
                field: "techniques",
                value: "[]".into(),
                expected: "expected at least one of precopy, postcopy, hybrid, auto",
            });
        }
        self.knobs.validate()?;
        if let Some(bps) = self.link_bps {
            // The same floor and ceiling as a migration's bandwidth and the agent's `--link`.
            check_link_bps(bps).map_err(|expected| SettingsError::Named {
                field: "link_bps".into(),
                value: bps.to_string(),
                expected,
            })?;
        }
        if let Some(b) = self.balance {
            range(
                "balance.spread",
                b.spread,
                b.spread > 0.0 && b.spread <= 2.0,
                "expected a load share above 0 and at most 2",
            )?;
            range(
                "balance.every_s",
                b.every_s,
                (1.0..=86_400.0).contains(&b.every_s),
                "expected 1 to 86400 s",
            )?;
        }
        for (field, p) in self
            .power
            .iter()
            .map(|(h, p)| (format!("power.{h}"), p))
            .chain([("default_power".to_string(), &self.default_power)])
        {
            let named = |what: &str, v: f64, ok: bool, expected: &str| {
                if ok && v.is_finite() {
                    return Ok(());
                }
                Err(SettingsError::Named {
                    field: format!("{field}.{what}"),
                    value: crate::units::shown(v),
                    expected: expected.to_string(),
                })
            };
            named("idle_w", p.idle_w, p.idle_w >= 0.0, "expected at least 0 W")?;
            named(
                "peak_w",
                p.peak_w,
                p.peak_w >= p.idle_w,
                "expected at least idle_w",
            )?;
        }
        for (index, rule) in self.rules.iter().enumerate() {
            let vms = match rule {
                PlacementRule::Affinity { vms, .. } | PlacementRule::AntiAffinity { vms, .. } => {
                    vms
                }
                PlacementRule::VmHost { vms, hosts, .. } => {
                    if hosts.is_empty() {
                        return Err(SettingsError::Rule {
                            index,
                            why: "names no host".into(),
                        });
                    }
                    vms
                }
            };
            if vms.is_empty() {
                return Err(SettingsError::Rule {
                    index,
                    why: "names no VM".into(),
                });
            }
        }
        Ok(())
    }

    /// The power model of host `name`.
    pub fn power_of(&self, name: &str) -> HostPower {
        self.power.get(name).copied().unwrap_or(self.default_power)
    }

    /// A host's draw now, W: nothing in standby.
    pub fn watts(&self, host: &HostObs) -> f64 {
        match host.power {
            super::observe::PowerState::Standby => 0.0,
            _ => self.power_of(&host.name).watts(host.load()),
        }
    }

    /// Bandwidth the cost model assumes between hosts, bytes/s.
    pub fn link_bandwidth_bps(&self) -> u64 {
        self.link_bps
            .or(self.knobs.bandwidth_bps)
            .unwrap_or(self.knobs.assumed_link_bps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ordered() {
        assert_eq!(ControlSettings::default().validate(), Ok(()));
        let s = ControlSettings {
            cold: 0.8,
            ..ControlSettings::default()
        };
        assert!(matches!(
            s.validate(),
            Err(SettingsError::Range { field: "cold", .. })
        ));
        let s = ControlSettings {
            hot: f64::NAN,
            ..ControlSettings::default()
        };
        assert!(s.validate().is_err());
    }

    #[test]
    fn link_bps_has_the_migration_bandwidth_floor() {
        for bps in [0, 1, crate::migration::knobs::MIN_BANDWIDTH_BPS - 1] {
            let s = ControlSettings {
                link_bps: Some(bps),
                ..ControlSettings::default()
            };
            let e = s.validate().expect_err("below 1 Mbit/s").to_string();
            assert_eq!(
                e,
                format!("link_bps = {bps}: expected at least 125000 bytes/s (1 Mbit/s)")
            );
        }
        let s = ControlSettings {
            link_bps: Some(crate::migration::knobs::MIN_BANDWIDTH_BPS),
            ..ControlSettings::default()
        };
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn balance_and_power_are_checked_and_named() {
        let bal = |spread, every_s| ControlSettings {
            balance: Some(Balance { spread, every_s }),
            ..ControlSettings::default()
        };
        assert_eq!(bal(0.2, 60.0).validate(), Ok(()));
        assert!(matches!(
            bal(0.0, 60.0).validate(),
            Err(SettingsError::Range {
                field: "balance.spread",
                ..
            })
        ));
        assert!(matches!(
            bal(0.2, 0.0).validate(),
            Err(SettingsError::Range {
                field: "balance.every_s",
                ..
            })
        ));
        let mut s = ControlSettings::default();
        s.power.insert(
            "h2".into(),
            HostPower {
                idle_w: 100.0,
                peak_w: 50.0,
            },
        );
        assert_eq!(
            s.validate().expect_err("peak below idle").to_string(),
            "power.h2.peak_w = 50: expected at least idle_w"
        );
    }

    #[test]
    fn unknown_keys_are_refused_and_missing_ones_default() {
        let s: ControlSettings =
            serde_json::from_str(r#"{"hot": 0.95, "mode": "recommend"}"#).expect("parses");
        assert_eq!((s.hot, s.mode, s.hot_samples), (0.95, Mode::Recommend, 3));
        assert!(serde_json::from_str::<ControlSettings>(r#"{"hott": 1}"#).is_err());
    }

    #[test]
    fn a_mode_prints_as_the_file_spells_it() {
        for m in [Mode::Auto, Mode::Recommend, Mode::DryRun] {
            let wire = serde_json::to_value(m).expect("serialises");
            assert_eq!(wire, serde_json::Value::from(m.to_string()));
        }
        assert_eq!(Mode::Auto.to_string(), "auto");
    }

    #[test]
    fn power_is_linear_and_nothing_in_standby() {
        let p = HostPower {
            idle_w: 100.0,
            peak_w: 200.0,
        };
        assert_eq!(p.watts(0.5), 150.0);
        assert_eq!(p.watts(3.0), 200.0);
    }
}
