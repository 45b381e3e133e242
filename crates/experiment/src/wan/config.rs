//! The WAN experiment's sizes and one check, [`WanConfig::validate`], whose errors name the
//! `drover experiment wan-hybrid` flag; the three strategies and the migration request each
//! sends ([`Strategy::request`]).

use crate::config::{refuse, within as count, ConfigError};
use drover_api::wan::{WanPlanRequest, MAX_LINK_BYTES_PER_S, MAX_RTT_MS, MIN_LINK_BYTES_PER_S};
use drover_api::{AgentUrl, MigrationRequest};
use drover_core::migration::wan::FractionPrediction;
use drover_core::migration::{PlanKnobs, StorageMode, Technique};
use drover_lab::wan::WanLink;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How the VM's memory and disk cross the WAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Memory pre-copy and storage pre-copy (a mirror converging with memory).
    PurePrecopy,
    /// Memory post-copy and storage post-copy (the destination runs on the source's NBD
    /// export and streams the disk).
    PurePostcopy,
    /// The WAN model's fractions: `storage: hybrid`, memory by the technique its memory
    /// fraction means.
    ModelHybrid,
}

impl Strategy {
    /// The three, in the order each repetition runs them.
    pub const ALL: [Strategy; 3] = [
        Strategy::PurePrecopy,
        Strategy::PurePostcopy,
        Strategy::ModelHybrid,
    ];

    /// Its name in the table, the files and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::PurePrecopy => "pure-precopy",
            Strategy::PurePostcopy => "pure-postcopy",
            Strategy::ModelHybrid => "model-hybrid",
        }
    }

    /// The model's forecast for this strategy out of its plan: the pure corners, or its pick.
    pub fn predicted(
        self,
        choice: &drover_core::migration::wan::FractionChoice,
    ) -> FractionPrediction {
        match self {
            Strategy::PurePrecopy => choice.pure_precopy,
            Strategy::PurePostcopy => choice.pure_postcopy,
            Strategy::ModelHybrid => choice.chosen,
        }
    }

    /// The migration request this strategy sends to h1's agent for `predicted` (its own
    /// forecast, whose fractions the hybrid runs), to `to`, with a pre-copy deadline of
    /// `deadline_s`. The hybrid's memory: none ahead is post-copy, all of it pre-copy, a part
    /// QEMU's hybrid switching to post-copy after that share of RAM (sent in address order,
    /// not hottest first as the model assumes). Its storage is always `hybrid`: the contract
    /// has no field for the storage fraction yet, so the agent that runs the storage hybrid
    /// takes its hot set from its own profile; the fraction the model chose is reported
    /// beside the run ([`super::figures::RunResult::storage_fraction`]).
    pub fn request(
        self,
        predicted: &FractionPrediction,
        to: AgentUrl,
        deadline_s: u64,
    ) -> MigrationRequest {
        let (technique, hybrid_fraction, storage, storage_fraction) = match self {
            Strategy::PurePrecopy => (Technique::Precopy, None, StorageMode::Precopy, None),
            Strategy::PurePostcopy => (Technique::Postcopy, None, StorageMode::Postcopy, None),
            Strategy::ModelHybrid => {
                let m = predicted.memory_fraction;
                let (t, f) = if m <= 0.0 {
                    (Technique::Postcopy, None)
                } else if m >= 1.0 {
                    (Technique::Precopy, None)
                } else {
                    (Technique::Hybrid, Some(m))
                };
                // The model's storage fraction, as predicted before the run: the agent would
                // otherwise profile again and might choose differently from the prediction
                // this run is judged against.
                let s = predicted.storage_fraction.clamp(0.0, 1.0);
                (t, f, StorageMode::Hybrid, Some(s))
            }
        };
        let defaults = PlanKnobs::default();
        MigrationRequest {
            id: None,
            to,
            technique,
            // The experiment measures from its own samples; the record's windows would add
            // ~13 s of waiting to every run.
            measure: false,
            knobs: PlanKnobs {
                deadline_s,
                hybrid_fraction: hybrid_fraction.unwrap_or(defaults.hybrid_fraction),
                storage,
                storage_fraction,
                ..defaults
            },
        }
    }

    /// Whether its request leaves any of memory or disk for after the switchover (so the run
    /// has a post-copy phase to judge).
    pub fn has_postcopy(self, predicted: &FractionPrediction) -> bool {
        match self {
            Strategy::PurePrecopy => false,
            Strategy::PurePostcopy => true,
            Strategy::ModelHybrid => {
                predicted.memory_fraction < 1.0 || predicted.storage_fraction < 1.0
            }
        }
    }
}

/// One experiment: the lab's WAN, the VM, the windows and how many repetitions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WanConfig {
    /// Repetitions (each runs every strategy once, each on a fresh lab).
    pub repeat: u32,
    /// The WAN between h1 and h2: rate each way, one-way delay, jitter.
    pub wan: WanLink,
    /// Guest memory, bytes.
    pub memory_bytes: u64,
    /// The VM's local qcow2 disk (created by h1's agent), virtual bytes.
    pub disk_bytes: u64,
    /// The guest's workload: `memtouch:...+disk:...` (memory and disk both busy).
    pub workload: String,
    /// Seconds of the profile `wan-plan` takes before each migration (1 to [`drover_api::wan::MAX_WINDOW_S`], 20).
    pub window_s: u32,
    /// The model's total-time budget, s (None: none).
    pub budget_s: Option<u32>,
    /// Seconds of throughput measured before the migration (the restoration's baseline).
    pub baseline_s: u64,
    /// Seconds observed after the migration ended (restoration must show within them).
    pub after_s: u64,
    /// Longest wait for one migration, s; also the pre-copy's deadline.
    pub migration_timeout_s: u64,
    /// Lab name (a-z, 0-9, at most 8).
    pub lab: String,
    /// The drover binary that runs the agents and the delay line.
    #[serde(skip)]
    pub drover_bin: PathBuf,
}

/// The default WAN: issue 12's 100 Mbit/s with 50 ms one way.
pub const DEFAULT_WAN: &str = "100Mbit/s,50ms";
/// The default workload: memory and disk both busy (the module doc says why these rates).
pub const DEFAULT_WORKLOAD: &str = "memtouch:wss=64M,rate=1000+disk:wss=32M,rate=100,read=50";

/// Reads `--wan RATE,DELAY[,jitter=J]` as the lab's pair h1-h2.
///
/// # Errors
/// The lab's message, as a [`ConfigError`] on `--wan`.
pub fn parse_wan(text: &str) -> Result<WanLink, ConfigError> {
    WanLink::parse(&format!("h1-h2={text}")).map_err(|e| match e {
        // The pair is this experiment's, not the user's: say what the flag itself takes.
        drover_lab::wan::WanError::Shape(_) => refuse(
            "--wan",
            text,
            "expected RATE,DELAY[,jitter=JITTER], e.g. 100Mbit/s,50ms",
        ),
        // The lab takes delays up to 10 s; this experiment's model, half its longest round
        // trip: say this flag's limit, the one `validate` holds it to.
        drover_lab::wan::WanError::DurationRange {
            what: "delay",
            text: d,
        } => refuse(
            "--wan",
            text,
            format!(
                "delay '{d}': expected a one-way delay of at most {} ms",
                MAX_RTT_MS / 2
            ),
        ),
        e => refuse("--wan", text, e.to_string()),
    })
}

impl Default for WanConfig {
    fn default() -> Self {
        WanConfig {
            repeat: 3,
            // The constant parses (a unit test holds it to that).
            wan: parse_wan(DEFAULT_WAN).unwrap_or(WanLink {
                a: 1,
                b: 2,
                rate: drover_lab::tbf::TbfParams {
                    rate_bytes_per_sec: 12_500_000,
                    burst_bytes: 0,
                    limit_bytes: 0,
                },
                delay_us: 50_000,
                jitter_us: 0,
            }),
            memory_bytes: 256 << 20,
            disk_bytes: 128 << 20,
            workload: DEFAULT_WORKLOAD.into(),
            window_s: 3,
            budget_s: None,
            baseline_s: 5,
            after_s: 10,
            migration_timeout_s: 300,
            lab: "wanx".into(),
            drover_bin: PathBuf::from("drover"),
        }
    }
}

impl WanConfig {
    /// Checks every flag's range.
    ///
    /// # Errors
    /// The first [`ConfigError`], naming its flag.
    pub fn validate(&self) -> Result<(), ConfigError> {
        count("--repeat", self.repeat.into(), 1, 100)?;
        count(
            "--window",
            self.window_s.into(),
            1,
            drover_api::wan::MAX_WINDOW_S.into(),
        )?;
        if let Some(b) = self.budget_s {
            count("--budget", b.into(), 1, 86_400)?;
        }
        count("--baseline", self.baseline_s, 2, 600)?;
        count("--after", self.after_s, 2, 600)?;
        count("--migration-timeout", self.migration_timeout_s, 10, 3600)?;
        let rate = self.wan.rate.rate_bytes_per_sec;
        if !(MIN_LINK_BYTES_PER_S..=MAX_LINK_BYTES_PER_S).contains(&rate) {
            return Err(refuse(
                "--wan",
                drover_core::units::format_rate(rate),
                "expected a rate of 1Mbit/s to 100Gbit/s (the WAN model's links)",
            ));
        }
        if self.rtt_ms() > MAX_RTT_MS {
            return Err(refuse(
                "--wan",
                format!("{} us", self.wan.delay_us),
                format!("expected a one-way delay of at most {} ms", MAX_RTT_MS / 2),
            ));
        }
        drover_lab::LabName::new(&self.lab)
            .map_err(|e| refuse("--lab-name", &self.lab, e.to_string()))?;
        self.check_vm()
    }

    /// The VM's sizes and workload: memory and disk by the guest's rules, and a workload
    /// that keeps both busy and fits both.
    fn check_vm(&self) -> Result<(), ConfigError> {
        use drover_guest::fit::{self, FitError, Setting};
        let named = |e: FitError| {
            let flag = match e.setting() {
                Setting::Memory => "--memory",
                Setting::DiskSize => "--disk-size",
                _ => "--workload",
            };
            let value = match flag {
                "--memory" => drover_core::units::format_size(self.memory_bytes),
                "--disk-size" => drover_core::units::format_size(self.disk_bytes),
                _ => self.workload.clone(),
            };
            // A size is refused with its rule alone (the flag names the field); a workload
            // with the guest's reason.
            let expected = match e.setting() {
                Setting::Memory | Setting::DiskSize => e.setting().expected(),
                _ => None,
            };
            refuse(flag, value, expected.unwrap_or_else(|| e.to_string()))
        };
        let workload = fit::check_vm(1, self.memory_bytes, &self.workload).map_err(named)?;
        if workload.name() != drover_guest::spec::MIXED_NAME {
            return Err(refuse(
                "--workload",
                &self.workload,
                "expected memtouch:...+disk:... (memory and disk both busy)",
            ));
        }
        fit::check_disk_size(self.disk_bytes).map_err(named)?;
        fit::check_disk_fits(&self.workload, &workload, Some(self.disk_bytes)).map_err(named)
    }

    /// The WAN's round trip as the model takes it: twice the one-way delay (jitter left
    /// out), ms rounded up.
    pub fn rtt_ms(&self) -> u32 {
        u32::try_from((2 * self.wan.delay_us).div_ceil(1000)).unwrap_or(u32::MAX)
    }

    /// The `wan-plan` request for the lab's WAN.
    pub fn plan_request(&self) -> WanPlanRequest {
        WanPlanRequest {
            link_bytes_per_s: self.wan.rate.rate_bytes_per_sec,
            rtt_ms: self.rtt_ms(),
            budget_s: self.budget_s,
            window_s: Some(self.window_s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_each_limit_names_its_flag() {
        let d = WanConfig::default;
        assert_eq!(d().validate(), Ok(()));
        assert_eq!(d().wan, parse_wan(DEFAULT_WAN).expect("default WAN"));
        assert_eq!(
            (d().rtt_ms(), d().wan.rate.rate_bytes_per_sec),
            (100, 12_500_000)
        );
        let mut slow = d().wan;
        slow.rate.rate_bytes_per_sec = 100_000;
        assert_eq!(
            parse_wan("500kbit/s,50ms").map_err(|e| e.flag),
            Err("--wan")
        );
        let far = parse_wan("100Mbit/s,6s").expect("parses");
        let cases: Vec<(WanConfig, &str)> = vec![
            (WanConfig { repeat: 0, ..d() }, "--repeat"),
            (
                WanConfig {
                    window_s: 31,
                    ..d()
                },
                "--window",
            ),
            (
                WanConfig {
                    budget_s: Some(0),
                    ..d()
                },
                "--budget",
            ),
            (
                WanConfig {
                    baseline_s: 1,
                    ..d()
                },
                "--baseline",
            ),
            (WanConfig { after_s: 0, ..d() }, "--after"),
            (
                WanConfig {
                    migration_timeout_s: 5,
                    ..d()
                },
                "--migration-timeout",
            ),
            (WanConfig { wan: slow, ..d() }, "--wan"),
            (WanConfig { wan: far, ..d() }, "--wan"),
            (
                WanConfig {
                    lab: "Bad_Name".into(),
                    ..d()
                },
                "--lab-name",
            ),
            (
                WanConfig {
                    memory_bytes: 16 << 20,
                    ..d()
                },
                "--memory",
            ),
            (
                WanConfig {
                    disk_bytes: 0,
                    ..d()
                },
                "--disk-size",
            ),
            // The disk part's 32 MiB working set does not fit a 16 MiB disk.
            (
                WanConfig {
                    disk_bytes: 16 << 20,
                    ..d()
                },
                "--workload",
            ),
            (
                WanConfig {
                    workload: "memtouch:wss=64M,rate=1000".into(),
                    ..d()
                },
                "--workload",
            ),
            (
                WanConfig {
                    workload: "memtouch:wss=1G,rate=1+disk:wss=1M,rate=1".into(),
                    ..d()
                },
                "--workload",
            ),
            (
                WanConfig {
                    workload: "nonsense".into(),
                    ..d()
                },
                "--workload",
            ),
        ];
        for (config, flag) in cases {
            let err = config.validate().expect_err(flag);
            assert_eq!(err.flag, flag, "{err}");
            assert!(err.to_string().starts_with(flag), "{err}");
        }
        // Over the lab's 10 s or only over this flag's 5 s: the same limit is named.
        for text in ["100Mbit/s,10.5s", "100Mbit/s,99999999999999999999s"] {
            let e = parse_wan(text).expect_err(text).to_string();
            assert!(
                e.ends_with("expected a one-way delay of at most 5000 ms"),
                "{text}: {e}"
            );
        }
        let e = parse_wan("100Mbit/s").expect_err("no delay");
        assert_eq!(
            e.to_string(),
            "--wan 100Mbit/s: expected RATE,DELAY[,jitter=JITTER], e.g. 100Mbit/s,50ms"
        );
    }

    fn prediction(m: f64, s: f64) -> FractionPrediction {
        FractionPrediction {
            memory_fraction: m,
            storage_fraction: s,
            converges: true,
            rounds: 1,
            ahead_s: 1.0,
            downtime_s: 0.2,
            postcopy_s: 3.0,
            total_s: 4.2,
            transferred_bytes: 1e8,
            remote_waits: 10.0,
            remote_wait_share: 0.01,
            postcopy_lost_s: 0.5,
            restored_s: 2.0,
            agility_s: 0.7,
        }
    }

    #[test]
    fn each_strategy_sends_its_techniques_and_the_hybrid_its_fraction() {
        let to = AgentUrl::parse("http://198.18.0.2:7700").expect("url");
        let p = prediction(0.4, 0.3);
        let pre = Strategy::PurePrecopy.request(&p, to.clone(), 120);
        assert_eq!(
            (
                pre.technique,
                pre.knobs.storage,
                pre.knobs.deadline_s,
                pre.measure
            ),
            (Technique::Precopy, StorageMode::Precopy, 120, false)
        );
        let post = Strategy::PurePostcopy.request(&p, to.clone(), 120);
        assert_eq!(
            (post.technique, post.knobs.storage),
            (Technique::Postcopy, StorageMode::Postcopy)
        );
        let hybrid = Strategy::ModelHybrid.request(&p, to.clone(), 120);
        assert_eq!(
            (
                hybrid.technique,
                hybrid.knobs.hybrid_fraction,
                hybrid.knobs.storage
            ),
            (Technique::Hybrid, 0.4, StorageMode::Hybrid)
        );
        let none_ahead = Strategy::ModelHybrid.request(&prediction(0.0, 0.5), to.clone(), 120);
        assert_eq!(none_ahead.technique, Technique::Postcopy);
        let all_ahead = Strategy::ModelHybrid.request(&prediction(1.0, 0.5), to, 120);
        assert_eq!(
            (all_ahead.technique, all_ahead.knobs.storage),
            (Technique::Precopy, StorageMode::Hybrid)
        );
        assert!(!Strategy::PurePrecopy.has_postcopy(&p));
        assert!(Strategy::ModelHybrid.has_postcopy(&p));
        assert!(!Strategy::ModelHybrid.has_postcopy(&prediction(1.0, 1.0)));
        let names: Vec<&str> = Strategy::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["pure-precopy", "pure-postcopy", "model-hybrid"]);
    }
}
