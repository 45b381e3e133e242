//! A migration plan: the technique (as asked and as chosen) plus every knob, and the QEMU
//! capabilities and parameters it implies for each side.

use super::cost::{choose, CostParams, LinkProfile, VmProfile};
use super::knobs::{PlanKnobs, UNCAPPED_BPS};
use super::technique::{HybridSwitch, Technique};
use super::watchdog::{ThrottleKind, WatchdogPolicy};
use serde::{Deserialize, Serialize};

/// QEMU migration capabilities Drover sets (`migrate-set-capabilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    PostcopyRam,
    PostcopyPreempt,
    AutoConverge,
    DirtyLimit,
    Events,
    /// Stop at QEMU's `pre-switchover` state until `migrate-continue` (storage pre-copy uses
    /// the pause to end its mirror and detach the NBD target, see [`super::storage`]).
    PauseBeforeSwitchover,
}

impl Capability {
    /// Every capability Drover manages. Each migration sets all of them, on or off: a VM that
    /// arrived by migration keeps its incoming side's capabilities, and a stale one (say,
    /// postcopy-preempt) would make its next migration fail.
    pub const ALL: [Capability; 6] = [
        Capability::Events,
        Capability::PostcopyRam,
        Capability::PostcopyPreempt,
        Capability::AutoConverge,
        Capability::DirtyLimit,
        Capability::PauseBeforeSwitchover,
    ];

    /// The name QEMU's QAPI schema uses.
    pub fn qapi_name(self) -> &'static str {
        match self {
            Capability::PostcopyRam => "postcopy-ram",
            Capability::PostcopyPreempt => "postcopy-preempt",
            Capability::AutoConverge => "auto-converge",
            Capability::DirtyLimit => "dirty-limit",
            Capability::Events => "events",
            Capability::PauseBeforeSwitchover => "pause-before-switchover",
        }
    }
}

/// A partial `migrate-set-parameters`: only the fields that are `Some` are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ParameterUpdate {
    pub max_bandwidth: Option<u64>,
    pub max_postcopy_bandwidth: Option<u64>,
    pub downtime_limit_ms: Option<u64>,
    pub cpu_throttle_initial: Option<u8>,
    pub cpu_throttle_increment: Option<u8>,
    pub max_cpu_throttle: Option<u8>,
    pub vcpu_dirty_limit_mb_s: Option<u64>,
}

/// Everything a migration run needs to know up front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MigrationPlan {
    /// What the caller asked for (may be `Auto`).
    pub requested: Technique,
    /// What will run (never `Auto`).
    pub technique: Technique,
    /// Why `technique` (the cost model's explanation for `auto`).
    pub reason: String,
    /// Cap on migration bandwidth, bytes/s (None: leave QEMU's own default, 128 MiB/s;
    /// [`MigrationPlan::build`] always sets it, to [`UNCAPPED_BPS`] for "no cap").
    pub max_bandwidth_bps: Option<u64>,
    /// Pause pre-copy may take at switchover, ms.
    pub downtime_limit_ms: u64,
    pub hybrid: HybridSwitch,
    pub watchdog: WatchdogPolicy,
    /// Use QEMU's postcopy-preempt channel (set when both sides support it).
    pub postcopy_preempt: bool,
    /// Times a paused post-copy is recovered before it is left paused and reported so.
    pub max_recoveries: u32,
    /// Post-copy progress watchdog, ms: a post-copy whose transferred bytes do not grow for
    /// this long is paused (`migrate-pause`, recoverable) and reported paused.
    #[serde(default = "default_postcopy_stall_ms")]
    pub postcopy_stall_ms: u64,
    /// The link rate the operator assumes, bytes/s; with the cap, it sizes the run's time
    /// budget ([`MigrationPlan::time_budget_ms`]).
    #[serde(default = "default_assumed_link_bps")]
    pub assumed_link_bps: u64,
    /// Stop the source at `pre-switchover` until told to go on (set by a storage pre-copy,
    /// which ends its mirror there); off for memory-only migrations.
    #[serde(default)]
    pub pause_before_switchover: bool,
}

fn default_postcopy_stall_ms() -> u64 {
    PlanKnobs::default().postcopy_stall_ms()
}

fn default_assumed_link_bps() -> u64 {
    PlanKnobs::default().assumed_link_bps
}

/// Slack in a run's time budget for set-up, the final copy and a cancel, ms.
pub const BUDGET_MARGIN_MS: u64 = 60_000;

impl MigrationPlan {
    /// A plan for a fixed technique. `Auto` is not resolved here: use [`MigrationPlan::auto`] or
    /// [`MigrationPlan::build`], which need the VM's profile.
    pub fn fixed(technique: Technique) -> Self {
        MigrationPlan {
            requested: technique,
            technique,
            reason: "requested".to_string(),
            max_bandwidth_bps: None,
            downtime_limit_ms: PlanKnobs::default().downtime_limit_ms,
            hybrid: HybridSwitch::default(),
            watchdog: WatchdogPolicy::default(),
            postcopy_preempt: false,
            max_recoveries: 3,
            postcopy_stall_ms: default_postcopy_stall_ms(),
            assumed_link_bps: default_assumed_link_bps(),
            pause_before_switchover: false,
        }
    }

    /// Lets the cost model choose among the concrete techniques for this VM and link.
    pub fn auto(vm: &VmProfile, link: &LinkProfile, params: &CostParams) -> Self {
        let choice = choose(vm, link, params, &Technique::CONCRETE);
        MigrationPlan {
            requested: Technique::Auto,
            technique: choice.technique,
            reason: choice.reason,
            downtime_limit_ms: (params.downtime_limit_s * 1000.0).round() as u64,
            hybrid: params.hybrid,
            ..MigrationPlan::fixed(Technique::Auto)
        }
    }

    /// The plan for a VM with a local disk asked to move by `technique`, `Auto` or `Precopy`
    /// (the caller refuses the others: storage moves by pre-copy only, its mirror converging
    /// with memory before the switchover). `Auto` runs pre-copy and says why; the cost model
    /// is not asked, since it has no other technique to offer.
    pub fn build_with_disk(technique: Technique, knobs: &PlanKnobs, cost: &CostParams) -> Self {
        let mut plan = MigrationPlan::build(Technique::Precopy, knobs, None, cost);
        if technique == Technique::Auto {
            plan.requested = Technique::Auto;
            plan.reason = "the VM has a local disk, which only pre-copy moves (storage \
                           pre-copy: the disk's mirror converges with memory before the \
                           switchover)"
                .into();
        }
        plan
    }

    /// The plan for `technique` with the operator's knobs. `auto` needs the VM's measured
    /// profile; without one it falls back to post-copy, whose time is bounded whatever the VM
    /// does, and says so.
    pub fn build(
        technique: Technique,
        knobs: &PlanKnobs,
        profile: Option<&VmProfile>,
        cost: &CostParams,
    ) -> Self {
        let mut plan = match (technique, profile) {
            (Technique::Auto, Some(vm)) => {
                let link = LinkProfile {
                    bandwidth_bps: knobs.bandwidth_bps.unwrap_or(knobs.assumed_link_bps) as f64,
                };
                let cost = CostParams {
                    downtime_limit_s: knobs.downtime_limit_ms as f64 / 1000.0,
                    precopy_deadline_s: knobs.deadline_s as f64,
                    hybrid: knobs.hybrid(),
                    ..*cost
                };
                MigrationPlan::auto(vm, &link, &cost)
            }
            (Technique::Auto, None) => MigrationPlan {
                requested: Technique::Auto,
                technique: Technique::Postcopy,
                reason: "dirty rate could not be measured; post-copy bounds the migration time"
                    .into(),
                ..MigrationPlan::fixed(Technique::Postcopy)
            },
            (fixed, _) => MigrationPlan::fixed(fixed),
        };
        plan.max_bandwidth_bps = Some(knobs.bandwidth_bps.unwrap_or(UNCAPPED_BPS));
        plan.downtime_limit_ms = knobs.downtime_limit_ms;
        // The plan shows what the watchdog will do: a "raise" to no more than the operator's
        // own limit is skipped (null), not shown beside a larger limit as if it would run.
        plan.watchdog.raise_downtime_ms = plan
            .watchdog
            .raise_downtime_ms
            .filter(|ms| *ms > knobs.downtime_limit_ms);
        plan.hybrid = knobs.hybrid();
        plan.watchdog.deadline_ms = knobs.deadline_ms();
        plan.watchdog.switch_to_postcopy = knobs.allow_postcopy_switch;
        plan.postcopy_stall_ms = knobs.postcopy_stall_ms();
        plan.assumed_link_bps = knobs.assumed_link_bps;
        plan
    }

    /// The longest the whole run may take before the driver stops it, ms, for a guest of
    /// `ram_bytes` (0 while unknown): the pre-copy deadline (the watchdog cancels a pre-copy,
    /// and hybrid's pre-copy phase, by then), plus twice the time to send all of RAM at the
    /// expected rate (post-copy's share, with room for its faults' round trips), plus the
    /// post-copy stall limit (so a stall is caught as a stall), plus [`BUDGET_MARGIN_MS`].
    /// The expected rate is the slower of the cap and the assumed link.
    pub fn time_budget_ms(&self, ram_bytes: u64) -> u64 {
        let cap = self.max_bandwidth_bps.unwrap_or(UNCAPPED_BPS);
        let bps = cap.min(self.assumed_link_bps).max(1);
        let send_ms = (u128::from(ram_bytes) * 1000 / u128::from(bps)) as u64;
        self.watchdog
            .deadline_ms
            .saturating_add(send_ms.saturating_mul(2))
            .saturating_add(self.postcopy_stall_ms)
            .saturating_add(BUDGET_MARGIN_MS)
    }

    /// Whether post-copy may happen at all (so its capability must be set on both sides).
    pub fn may_postcopy(&self) -> bool {
        self.technique.needs_postcopy_capability()
            || (self.technique == Technique::Precopy && self.watchdog.switch_to_postcopy)
    }

    /// Capabilities both sides must agree on (post-copy ones).
    pub fn shared_capabilities(&self) -> Vec<Capability> {
        let mut caps = vec![Capability::Events];
        if self.may_postcopy() {
            caps.push(Capability::PostcopyRam);
            if self.postcopy_preempt {
                caps.push(Capability::PostcopyPreempt);
            }
        }
        caps
    }

    /// Capabilities the source sets (shared ones plus throttling).
    pub fn source_capabilities(&self) -> Vec<Capability> {
        let mut caps = self.shared_capabilities();
        // QEMU refuses capability changes once a migration runs, so throttling the watchdog may
        // need later must be armed now; `initial_parameters` keeps it near zero until then.
        match self.watchdog.throttle {
            Some(ThrottleKind::AutoConverge) => caps.push(Capability::AutoConverge),
            Some(ThrottleKind::DirtyLimit) => caps.push(Capability::DirtyLimit),
            None => {}
        }
        if self.pause_before_switchover {
            caps.push(Capability::PauseBeforeSwitchover);
        }
        caps
    }

    /// Parameters set on the source before `migrate`.
    pub fn initial_parameters(&self) -> ParameterUpdate {
        let mut p = ParameterUpdate {
            max_bandwidth: self.max_bandwidth_bps,
            max_postcopy_bandwidth: self.max_bandwidth_bps,
            downtime_limit_ms: Some(self.downtime_limit_ms),
            ..ParameterUpdate::default()
        };
        match self.watchdog.throttle {
            Some(ThrottleKind::AutoConverge) => {
                p.cpu_throttle_initial = Some(1);
                p.cpu_throttle_increment = Some(1);
                p.max_cpu_throttle = Some(1);
            }
            Some(ThrottleKind::DirtyLimit) => p.vcpu_dirty_limit_mb_s = Some(1_000_000),
            None => {}
        }
        p
    }

    /// Parameters that put a watchdog throttle step into force.
    pub fn throttle_parameters(&self, kind: ThrottleKind) -> ParameterUpdate {
        match kind {
            ThrottleKind::AutoConverge => ParameterUpdate {
                cpu_throttle_initial: Some(20),
                cpu_throttle_increment: Some(20),
                max_cpu_throttle: Some(99),
                ..ParameterUpdate::default()
            },
            ThrottleKind::DirtyLimit => ParameterUpdate {
                vcpu_dirty_limit_mb_s: Some(self.watchdog.dirty_limit_mb_s.max(1)),
                ..ParameterUpdate::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_with_a_disk_runs_precopy_for_auto_and_says_why() {
        let knobs = PlanKnobs::default();
        let cost = CostParams::default();
        let auto = MigrationPlan::build_with_disk(Technique::Auto, &knobs, &cost);
        assert_eq!(
            (auto.requested, auto.technique),
            (Technique::Auto, Technique::Precopy)
        );
        assert!(auto.reason.contains("local disk"), "{}", auto.reason);
        let asked = MigrationPlan::build_with_disk(Technique::Precopy, &knobs, &cost);
        let plain = MigrationPlan::build(Technique::Precopy, &knobs, None, &cost);
        assert_eq!(
            asked, plain,
            "an explicit pre-copy is the plain pre-copy plan"
        );
        assert_eq!(auto.max_bandwidth_bps, plain.max_bandwidth_bps);
    }

    #[test]
    fn precopy_sets_no_postcopy_capability_unless_watchdog_may_switch() {
        let mut plan = MigrationPlan::fixed(Technique::Precopy);
        assert!(!plan
            .source_capabilities()
            .contains(&Capability::PostcopyRam));
        plan.watchdog.switch_to_postcopy = true;
        assert!(plan
            .source_capabilities()
            .contains(&Capability::PostcopyRam));
    }

    #[test]
    fn postcopy_both_sides_agree_and_preempt_only_when_supported() {
        let mut plan = MigrationPlan::fixed(Technique::Postcopy);
        assert_eq!(
            plan.shared_capabilities(),
            vec![Capability::Events, Capability::PostcopyRam]
        );
        plan.postcopy_preempt = true;
        assert!(plan
            .shared_capabilities()
            .contains(&Capability::PostcopyPreempt));
        assert!(plan
            .source_capabilities()
            .contains(&Capability::AutoConverge));
    }

    #[test]
    fn throttle_is_armed_but_negligible_until_escalation() {
        let plan = MigrationPlan::fixed(Technique::Precopy);
        let p = plan.initial_parameters();
        assert_eq!(p.max_cpu_throttle, Some(1));
        assert_eq!(
            plan.throttle_parameters(ThrottleKind::AutoConverge)
                .max_cpu_throttle,
            Some(99)
        );
    }

    #[test]
    fn throttle_steps_only_tighten_what_the_plan_armed() {
        for kind in [ThrottleKind::AutoConverge, ThrottleKind::DirtyLimit] {
            let mut plan = MigrationPlan::fixed(Technique::Precopy);
            plan.watchdog.throttle = Some(kind);
            let (armed, step) = (plan.initial_parameters(), plan.throttle_parameters(kind));
            let at_least = |a: Option<u8>, b: Option<u8>| b.is_none() || b >= a;
            assert!(at_least(
                armed.cpu_throttle_initial,
                step.cpu_throttle_initial
            ));
            assert!(at_least(armed.max_cpu_throttle, step.max_cpu_throttle));
            if let Some(limit) = step.vcpu_dirty_limit_mb_s {
                assert!(armed.vcpu_dirty_limit_mb_s.is_some_and(|a| limit <= a));
            }
            // Neither touches the operator's bandwidth cap or downtime limit.
            assert_eq!((step.max_bandwidth, step.downtime_limit_ms), (None, None));
        }
    }

    #[test]
    fn build_applies_knobs_and_falls_back_without_a_profile() {
        let knobs = PlanKnobs {
            bandwidth_bps: Some(50_000_000),
            downtime_limit_ms: 500,
            deadline_s: 20,
            allow_postcopy_switch: true,
            ..PlanKnobs::default()
        };
        let p = MigrationPlan::build(Technique::Precopy, &knobs, None, &CostParams::default());
        assert_eq!(p.max_bandwidth_bps, Some(50_000_000));
        assert_eq!((p.downtime_limit_ms, p.watchdog.deadline_ms), (500, 20_000));
        assert!(p.watchdog.switch_to_postcopy);
        assert_eq!(p.watchdog.raise_downtime_ms, Some(1000), "500 ms is raised");
        // An operator's 3000 ms is never "raised" to 1000: the plan shows the step skipped.
        let generous = PlanKnobs {
            downtime_limit_ms: 3000,
            ..PlanKnobs::default()
        };
        let p = MigrationPlan::build(Technique::Precopy, &generous, None, &CostParams::default());
        assert_eq!(p.downtime_limit_ms, 3000);
        assert_eq!(p.watchdog.raise_downtime_ms, None);
        let json = serde_json::to_value(&p).expect("json");
        assert_eq!(
            json["watchdog"]["raise_downtime_ms"],
            serde_json::Value::Null
        );
        let auto = MigrationPlan::build(
            Technique::Auto,
            &PlanKnobs::default(),
            None,
            &CostParams::default(),
        );
        assert_eq!(
            (auto.requested, auto.technique),
            (Technique::Auto, Technique::Postcopy)
        );
        assert_eq!(auto.max_bandwidth_bps, Some(UNCAPPED_BPS));
        assert!(auto.reason.contains("could not be measured"));
    }

    #[test]
    fn build_carries_the_stall_limit_and_the_budget_follows_the_knobs() {
        let knobs = PlanKnobs {
            bandwidth_bps: Some(1_000_000),
            deadline_s: 30,
            postcopy_stall_s: 20,
            ..PlanKnobs::default()
        };
        let p = MigrationPlan::build(Technique::Postcopy, &knobs, None, &CostParams::default());
        assert_eq!(p.postcopy_stall_ms, 20_000);
        // 30 s deadline + 2 x 100 s to send 100 MB at 1 MB/s + 20 s stall + the margin.
        assert_eq!(
            p.time_budget_ms(100_000_000),
            30_000 + 200_000 + 20_000 + BUDGET_MARGIN_MS
        );
        // Uncapped: the assumed link sets the pace.
        let uncapped = MigrationPlan::build(
            Technique::Postcopy,
            &PlanKnobs {
                assumed_link_bps: 10_000_000,
                ..PlanKnobs::default()
            },
            None,
            &CostParams::default(),
        );
        assert_eq!(
            uncapped.time_budget_ms(100_000_000) - uncapped.time_budget_ms(0),
            20_000
        );
    }

    #[test]
    fn plans_stored_before_the_stall_limit_existed_still_load() {
        let mut v = serde_json::to_value(MigrationPlan::fixed(Technique::Precopy)).expect("json");
        let obj = v.as_object_mut().expect("object");
        obj.remove("postcopy_stall_ms");
        obj.remove("assumed_link_bps");
        let p: MigrationPlan = serde_json::from_value(v).expect("old record");
        assert_eq!(p.postcopy_stall_ms, 60_000);
    }

    #[test]
    fn auto_plan_records_choice_and_reason() {
        let vm = VmProfile {
            memory_bytes: 256 << 20,
            wss_bytes: 128 << 20,
            dirty_rate_bps: 500e6,
        };
        let plan = MigrationPlan::auto(
            &vm,
            &LinkProfile {
                bandwidth_bps: 50e6,
            },
            &CostParams::default(),
        );
        assert_eq!(plan.requested, Technique::Auto);
        assert_ne!(plan.technique, Technique::Auto);
        assert!(!plan.reason.is_empty());
    }
}
