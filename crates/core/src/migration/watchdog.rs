//! The convergence watchdog: sees when pre-copy's remaining dirty memory stops shrinking and
//! escalates, one step per stall, along a ladder chosen by policy.
//!
//! A stall is judged per pass over memory, not per poll: within a pass `remaining` always falls,
//! so only its value at each dirty-bitmap sync says whether pre-copy is gaining. After
//! `stall_syncs` syncs whose remaining is no better than `min_gain` below the best seen so far,
//! the watchdog fires the next step and starts counting again. Independently, once
//! `deadline_ms` has passed since the start, it cancels (the VM stays on the source).
//!
//! The ladder's order is the issue's: raise the downtime limit, then throttle, then switch to
//! post-copy (only when the policy allows it), then give up at the deadline.
//!
//! No step weakens what the operator set: "raise the downtime limit" is in the ladder only when
//! the policy's figure is above the operator's limit (otherwise it would lower it, or do
//! nothing and waste a stall), and the throttle only ever slows the guest further than the plan
//! armed it (see `MigrationPlan::throttle_parameters`).

use serde::{Deserialize, Serialize};

/// How the guest gets slowed down when asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ThrottleKind {
    /// QEMU's auto-converge (vCPU sleep), works under TCG and KVM.
    AutoConverge,
    /// QEMU's dirty-limit (per-vCPU dirty page rate cap); needs KVM's dirty ring.
    DirtyLimit,
}

/// What the watchdog may do, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WatchdogPolicy {
    /// Syncs without progress that make a stall.
    pub stall_syncs: u32,
    /// Relative shrink of remaining (vs the best so far) that counts as progress.
    pub min_gain: f64,
    /// Step 1: raise the downtime limit to this, ms (None: skip the step; skipped as well when
    /// the operator's own limit is already at least this).
    pub raise_downtime_ms: Option<u64>,
    /// Step 2: throttle the guest (None: skip the step).
    pub throttle: Option<ThrottleKind>,
    /// Dirty-limit target, MB/s per vCPU, for [`ThrottleKind::DirtyLimit`].
    pub dirty_limit_mb_s: u64,
    /// Step 3: switch to post-copy. Off unless asked, so a pre-copy run measures pre-copy.
    pub switch_to_postcopy: bool,
    /// Give up (cancel) when the migration has run this long without finishing pre-copy.
    pub deadline_ms: u64,
}

impl Default for WatchdogPolicy {
    fn default() -> Self {
        WatchdogPolicy {
            stall_syncs: 2,
            min_gain: 0.1,
            raise_downtime_ms: Some(1000),
            throttle: Some(ThrottleKind::AutoConverge),
            dirty_limit_mb_s: 10,
            switch_to_postcopy: false,
            deadline_ms: super::knobs::PlanKnobs::default().deadline_ms(),
        }
    }
}

/// One escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum WatchdogAction {
    RaiseDowntime {
        downtime_ms: u64,
    },
    Throttle(ThrottleKind),
    SwitchToPostcopy,
    Cancel,
    /// Not the pre-copy ladder's: the post-copy stall watchdog asked QEMU to pause
    /// (`migrate-pause`) because no byte moved for the plan's stall limit.
    PauseStalled,
    /// Not the ladder's either: the run's time budget ran out in post-copy and the driver
    /// asked QEMU to pause.
    PauseOutOfTime,
}

impl WatchdogAction {
    pub fn name(&self) -> &'static str {
        match self {
            WatchdogAction::RaiseDowntime { .. } => "raise-downtime",
            WatchdogAction::Throttle(ThrottleKind::AutoConverge) => "throttle-auto-converge",
            WatchdogAction::Throttle(ThrottleKind::DirtyLimit) => "throttle-dirty-limit",
            WatchdogAction::SwitchToPostcopy => "postcopy",
            WatchdogAction::Cancel => "cancel",
            WatchdogAction::PauseStalled => "pause-stalled",
            WatchdogAction::PauseOutOfTime => "pause-out-of-time",
        }
    }
}

/// The watchdog's memory between polls.
#[derive(Debug, Clone, PartialEq)]
pub struct Watchdog {
    policy: WatchdogPolicy,
    /// The downtime limit the migration runs with, ms (the operator's).
    downtime_limit_ms: u64,
    started_ms: u64,
    last_sync: u64,
    best_remaining: Option<u64>,
    stalled_syncs: u32,
    /// Index of the next ladder step to try.
    next_step: usize,
    fired: Vec<WatchdogAction>,
}

impl Watchdog {
    /// A watchdog for a migration started at `started_ms` with the operator's downtime limit
    /// `downtime_limit_ms`.
    pub fn new(policy: WatchdogPolicy, started_ms: u64, downtime_limit_ms: u64) -> Self {
        Watchdog {
            policy,
            downtime_limit_ms,
            started_ms,
            last_sync: 0,
            best_remaining: None,
            stalled_syncs: 0,
            next_step: 0,
            fired: Vec::new(),
        }
    }

    pub fn policy(&self) -> &WatchdogPolicy {
        &self.policy
    }

    /// Every action fired so far, in order.
    pub fn fired(&self) -> &[WatchdogAction] {
        &self.fired
    }

    fn ladder(&self) -> Vec<WatchdogAction> {
        let mut steps = Vec::new();
        // Raise = max(policy, operator's limit): a step only when that is a raise.
        if let Some(ms) = self
            .policy
            .raise_downtime_ms
            .filter(|ms| *ms > self.downtime_limit_ms)
        {
            steps.push(WatchdogAction::RaiseDowntime { downtime_ms: ms });
        }
        if let Some(kind) = self.policy.throttle {
            steps.push(WatchdogAction::Throttle(kind));
        }
        if self.policy.switch_to_postcopy {
            steps.push(WatchdogAction::SwitchToPostcopy);
        }
        steps
    }

    /// Feeds one observation; returns the action to take now, if any.
    pub fn observe(
        &mut self,
        now_ms: u64,
        dirty_sync_count: u64,
        remaining: u64,
    ) -> Option<WatchdogAction> {
        if now_ms.saturating_sub(self.started_ms) >= self.policy.deadline_ms {
            return self.fire(WatchdogAction::Cancel);
        }
        if dirty_sync_count <= self.last_sync {
            return None;
        }
        self.last_sync = dirty_sync_count;
        // The first sync happens before anything is sent: nothing to judge yet.
        if dirty_sync_count < 2 {
            return None;
        }
        let progressed = match self.best_remaining {
            None => true,
            Some(best) => (remaining as f64) < (best as f64) * (1.0 - self.policy.min_gain),
        };
        if progressed {
            self.best_remaining = Some(remaining);
            self.stalled_syncs = 0;
            return None;
        }
        self.stalled_syncs += 1;
        if self.stalled_syncs < self.policy.stall_syncs {
            return None;
        }
        self.stalled_syncs = 0;
        let step = self.ladder().get(self.next_step).copied()?;
        self.next_step += 1;
        self.fire(step)
    }

    fn fire(&mut self, action: WatchdogAction) -> Option<WatchdogAction> {
        if self.fired.last() == Some(&WatchdogAction::Cancel) {
            return None;
        }
        self.fired.push(action);
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> WatchdogPolicy {
        WatchdogPolicy {
            switch_to_postcopy: true,
            deadline_ms: 100_000,
            ..WatchdogPolicy::default()
        }
    }

    /// Feeds syncs 2.. with a flat remaining and collects what fires.
    fn flat_run(policy: WatchdogPolicy, syncs: u64) -> Vec<WatchdogAction> {
        let mut w = Watchdog::new(policy, 0, 300);
        let mut out = Vec::new();
        for sync in 1..=syncs {
            if let Some(a) = w.observe(sync * 1000, sync, 100 << 20) {
                out.push(a);
            }
        }
        out
    }

    #[test]
    fn shrinking_remaining_never_fires() {
        let mut w = Watchdog::new(policy(), 0, 300);
        for sync in 1..20u64 {
            let remaining = (100u64 << 20) >> sync.min(20);
            assert_eq!(w.observe(sync * 100, sync, remaining), None);
        }
    }

    #[test]
    fn escalates_in_ladder_order_one_step_per_stall() {
        let fired = flat_run(policy(), 12);
        assert_eq!(
            fired,
            vec![
                WatchdogAction::RaiseDowntime { downtime_ms: 1000 },
                WatchdogAction::Throttle(ThrottleKind::AutoConverge),
                WatchdogAction::SwitchToPostcopy,
            ]
        );
    }

    #[test]
    fn raising_the_downtime_never_lowers_the_operators_limit() {
        for operator_ms in [1_000, 5_000] {
            let mut w = Watchdog::new(policy(), 0, operator_ms);
            let fired: Vec<_> = (1..=12u64)
                .filter_map(|sync| w.observe(sync * 1000, sync, 100 << 20))
                .collect();
            // The policy's 1000 ms would not raise it: the first stall throttles instead.
            assert_eq!(
                fired,
                vec![
                    WatchdogAction::Throttle(ThrottleKind::AutoConverge),
                    WatchdogAction::SwitchToPostcopy,
                ],
                "operator allowed {operator_ms} ms"
            );
        }
    }

    #[test]
    fn postcopy_switch_is_off_by_default() {
        let p = WatchdogPolicy {
            deadline_ms: 100_000,
            ..WatchdogPolicy::default()
        };
        let fired = flat_run(p, 30);
        assert!(
            !fired.contains(&WatchdogAction::SwitchToPostcopy),
            "{fired:?}"
        );
        assert_eq!(fired.len(), 2);
    }

    #[test]
    fn skipped_steps_are_not_fired() {
        let p = WatchdogPolicy {
            raise_downtime_ms: None,
            throttle: None,
            switch_to_postcopy: true,
            deadline_ms: 100_000,
            ..WatchdogPolicy::default()
        };
        assert_eq!(flat_run(p, 10), vec![WatchdogAction::SwitchToPostcopy]);
    }

    #[test]
    fn deadline_cancels_once() {
        let p = WatchdogPolicy {
            deadline_ms: 5_000,
            ..WatchdogPolicy::default()
        };
        let mut w = Watchdog::new(p, 1_000, 300);
        assert_eq!(w.observe(5_999, 1, 10), None);
        assert_eq!(w.observe(6_000, 1, 10), Some(WatchdogAction::Cancel));
        assert_eq!(w.observe(6_100, 2, 10), None);
        assert_eq!(w.fired(), &[WatchdogAction::Cancel]);
    }

    #[test]
    fn polls_within_a_pass_are_not_judged() {
        let mut w = Watchdog::new(policy(), 0, 300);
        // Same sync count many times: no judgement, no stall.
        for t in 0..100 {
            assert_eq!(w.observe(t, 3, 1 << 30), None);
        }
    }
}
