//! A VM's WAN fraction plan (`POST /v1/vms/{name}/wan-plan`): the agent profiles the VM from the
//! host side for a few seconds (memory's dirty rate over time; its disk's read and write rates
//! and where they fall), then core's fraction model (`drover_core::migration::wan`) predicts
//! every pair of memory and storage fractions to copy ahead over the given link and picks the
//! one with the lowest restoration agility within the budget, with its reason and both pure
//! techniques for comparison. Nothing migrates: the plan is what a WAN migration of the VM
//! would be asked to do now.

use drover_core::migration::wan::{FractionChoice, WanLink, WanProfile};
use drover_core::migration::LinkProfile;
use drover_core::wire;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Slowest link a plan is made for, bytes/s (1 Mbit/s).
pub const MIN_LINK_BYTES_PER_S: u64 = 125_000;
/// Fastest link, bytes/s (100 Gbit/s).
pub const MAX_LINK_BYTES_PER_S: u64 = 12_500_000_000;
/// Longest round trip, ms.
pub const MAX_RTT_MS: u32 = 10_000;
/// Longest total-time budget, seconds (a day).
pub const MAX_BUDGET_S: u32 = 86_400;
/// Longest profiling window, seconds; and the default.
pub const MAX_WINDOW_S: u32 = 20;
pub const DEFAULT_WINDOW_S: u32 = 3;

/// The body of `POST /v1/vms/{name}/wan-plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WanPlanRequest {
    /// The link's usable rate for the migration, bytes/s (125000, 1 Mbit/s, to 12500000000,
    /// 100 Gbit/s).
    #[serde(deserialize_with = "wire::whole")]
    #[schemars(range(min = 125_000u64, max = 12_500_000_000u64))]
    pub link_bytes_per_s: u64,
    /// The link's round-trip time, ms (0 to 10000).
    #[serde(deserialize_with = "wire::whole")]
    #[schemars(range(min = 0, max = 10_000))]
    pub rtt_ms: u32,
    /// Most seconds the whole migration may take, until every byte is on the destination (1 to
    /// 86400); none: no budget.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "wire::whole_opt"
    )]
    #[schemars(range(min = 1, max = 86_400))]
    pub budget_s: Option<u32>,
    /// Seconds of profiling (1 to 20, default 3): one dirty-rate sample a second, then one
    /// window this long for the working set, so the profile takes twice this; the disk is
    /// watched throughout. At most 20 so the profile ends within the client's 60 s call.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "wire::whole_opt"
    )]
    #[schemars(range(min = 1, max = 20))]
    pub window_s: Option<u32>,
}

/// A whole-number field's range and unit, as refusals word them.
struct Limit {
    field: &'static str,
    min: u64,
    max: u64,
    unit: &'static str,
}

impl Limit {
    /// `expected 1 to 20 seconds`.
    fn expected(&self) -> String {
        format!("expected {} to {} {}", self.min, self.max, self.unit)
    }

    fn check(&self, got: u64) -> Result<(), String> {
        if (self.min..=self.max).contains(&got) {
            return Ok(());
        }
        Err(format!("{}: {}, got {got}", self.field, self.expected()))
    }
}

/// Every field's limits, in the body's order.
const LIMITS: [Limit; 4] = [
    Limit {
        field: "link_bytes_per_s",
        min: MIN_LINK_BYTES_PER_S,
        max: MAX_LINK_BYTES_PER_S,
        unit: "bytes/s",
    },
    Limit {
        field: "rtt_ms",
        min: 0,
        max: MAX_RTT_MS as u64,
        unit: "ms",
    },
    Limit {
        field: "budget_s",
        min: 1,
        max: MAX_BUDGET_S as u64,
        unit: "seconds",
    },
    Limit {
        field: "window_s",
        min: 1,
        max: MAX_WINDOW_S as u64,
        unit: "seconds",
    },
];

impl WanPlanRequest {
    /// Checks each field's range; the message names the field, quotes the value and says what
    /// is expected.
    pub fn validate(&self) -> Result<(), String> {
        let [link, rtt, budget, window] = &LIMITS;
        link.check(self.link_bytes_per_s)?;
        rtt.check(self.rtt_ms.into())?;
        if let Some(b) = self.budget_s {
            budget.check(b.into())?;
        }
        if let Some(w) = self.window_s {
            window.check(w.into())?;
        }
        Ok(())
    }

    /// What `field` accepts, as [`Self::validate`] words it (`expected 1 to 20 seconds`), for
    /// a value that cannot even be read as the field's type (negative, too large, infinite).
    pub fn expected(field: &str) -> Option<String> {
        LIMITS
            .iter()
            .find(|l| l.field == field)
            .map(Limit::expected)
    }

    /// The link as the model takes it.
    pub fn link(&self) -> WanLink {
        WanLink {
            link: LinkProfile {
                bandwidth_bps: self.link_bytes_per_s as f64,
            },
            rtt_s: f64::from(self.rtt_ms) / 1e3,
        }
    }

    /// The budget in seconds, infinite without one.
    pub fn budget(&self) -> f64 {
        self.budget_s.map_or(f64::INFINITY, f64::from)
    }

    /// The profiling window, seconds.
    pub fn window(&self) -> u32 {
        self.window_s.unwrap_or(DEFAULT_WINDOW_S)
    }
}

/// The answer: what was measured, the link, and the model's choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WanPlan {
    pub vm: String,
    /// The VM as profiled (rates in bytes/s; the disk's regions in address order, bytes read
    /// and written in each).
    pub profile: WanProfile,
    pub link: WanLink,
    /// The fractions picked, their prediction and why; both pure techniques' predictions.
    pub choice: FractionChoice,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> WanPlanRequest {
        WanPlanRequest {
            link_bytes_per_s: 12_500_000,
            rtt_ms: 50,
            budget_s: None,
            window_s: None,
        }
    }

    #[test]
    fn the_schema_states_the_ranges_the_check_applies() {
        let schema = serde_json::to_value(schemars::schema_for!(WanPlanRequest)).unwrap();
        let p = &schema["properties"];
        assert_eq!(p["link_bytes_per_s"]["minimum"], MIN_LINK_BYTES_PER_S);
        assert_eq!(p["link_bytes_per_s"]["maximum"], MAX_LINK_BYTES_PER_S);
        assert_eq!(p["rtt_ms"]["maximum"], MAX_RTT_MS);
        assert_eq!(p["budget_s"]["maximum"], MAX_BUDGET_S);
        assert_eq!(p["window_s"]["maximum"], MAX_WINDOW_S);
        let whole: WanPlanRequest = serde_json::from_str(
            r#"{"link_bytes_per_s": 125000.0, "rtt_ms": 0.0, "window_s": null}"#,
        )
        .unwrap();
        assert_eq!((whole.rtt_ms, whole.window_s), (0, None));
    }

    #[test]
    fn ranges_are_checked_and_named() {
        assert_eq!(req().validate(), Ok(()));
        assert_eq!((req().window(), req().budget()), (3, f64::INFINITY));
        let l = req().link();
        assert_eq!((l.link.bandwidth_bps, l.rtt_s), (12.5e6, 0.05));
        type Spoil = fn(&mut WanPlanRequest);
        let cases: [(Spoil, &str); 7] = [
            (
                |r| r.link_bytes_per_s = 0,
                "link_bytes_per_s: expected 125000 to",
            ),
            (|r| r.link_bytes_per_s = u64::MAX, "link_bytes_per_s"),
            (
                |r| r.rtt_ms = 10_001,
                "rtt_ms: expected 0 to 10000 ms, got 10001",
            ),
            (
                |r| r.budget_s = Some(0),
                "budget_s: expected 1 to 86400 seconds, got 0",
            ),
            (|r| r.budget_s = Some(86_401), "budget_s"),
            (
                |r| r.window_s = Some(0),
                "window_s: expected 1 to 20 seconds, got 0",
            ),
            (|r| r.window_s = Some(21), "window_s"),
        ];
        for (spoil, expected) in cases {
            let mut r = req();
            spoil(&mut r);
            let e = r.validate().unwrap_err();
            assert!(e.starts_with(expected), "{e}");
        }
    }
}
