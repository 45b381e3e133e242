//! A plan: one decision (relieve a hot host, empty a cold one, drain a host, balance), its moves
//! and power actions, and the explanation of every choice in it.
//!
//! ```text
//!  (auto)       Approved ──every move final──> Done | Failed
//!  (recommend)  Proposed ──approve──> Approved          │
//!                  │  └──premises gone──> Expired        └──cancel──> Cancelled
//!                  └──cancel──> Cancelled
//!  (dry-run)    Recorded
//! ```
//!
//! A plan is `Failed` when any of its moves failed or was lost, `Done` otherwise (skipped moves
//! are reported with their reason). Cancelling an approved plan cancels its planned moves; moves
//! already running are left to finish (a post-copy cannot be taken back).

use super::moves::MoveId;
use crate::migration::Technique;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A plan's id.
pub type PlanId = String;

/// What a plan is for.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanKind {
    /// A hot host is relieved.
    Relief,
    /// A cold host is emptied and put in standby.
    Consolidation,
    /// An operator drains a host for maintenance.
    Drain,
    /// Load is evened out between running hosts.
    Balance,
}

/// Where a plan is in its life.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanState {
    /// Waiting for an operator's approval (recommend mode).
    Proposed,
    /// Being carried out.
    Approved,
    /// Recorded only (dry-run mode).
    Recorded,
    Done,
    Failed,
    Cancelled,
    /// Its premises no longer hold (recommend mode): approving it is refused.
    Expired,
}

impl PlanState {
    /// Every state, in the order of [`PlanState::name`]'s match (lists that filter by state
    /// name the allowed values from it).
    pub const ALL: [PlanState; 7] = [
        PlanState::Proposed,
        PlanState::Approved,
        PlanState::Recorded,
        PlanState::Done,
        PlanState::Failed,
        PlanState::Cancelled,
        PlanState::Expired,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlanState::Proposed => "proposed",
            PlanState::Approved => "approved",
            PlanState::Recorded => "recorded",
            PlanState::Done => "done",
            PlanState::Failed => "failed",
            PlanState::Cancelled => "cancelled",
            PlanState::Expired => "expired",
        }
    }

    /// No further transition will happen.
    pub fn is_final(self) -> bool {
        !matches!(self, PlanState::Proposed | PlanState::Approved)
    }
}

/// One technique's forecast for a move, as the cost model made it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TechniqueForecast {
    pub technique: Technique,
    /// Predicted total migration time, s.
    pub total_s: f64,
    /// Predicted pause, s.
    pub downtime_s: f64,
    /// Predicted work the VM loses, in seconds of its full throughput.
    pub lost_work_s: f64,
    /// False when pre-copy would not converge.
    pub converges: bool,
}

/// Why one move is in the plan.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveWhy {
    pub move_id: MoveId,
    pub vm: String,
    /// Why this VM (cost rank, demand, cooldowns considered).
    pub why_vm: String,
    /// Why this destination (load after the move, rules respected, hosts ruled out and why).
    pub why_destination: String,
    /// Why this technique.
    pub why_technique: String,
    /// Each technique's forecast, when the manager chose.
    pub forecasts: Vec<TechniqueForecast>,
    /// Predicted cost of the chosen technique, seconds of lost work.
    pub predicted_cost_s: f64,
}

/// Why the plan exists.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// One line.
    pub summary: String,
    /// The host the plan is about.
    pub host: Option<String>,
    /// Its recent loads (demand over capacity), most recent last, that triggered the plan.
    pub samples: Vec<f64>,
    /// The threshold they were compared with.
    pub threshold: Option<f64>,
    pub moves: Vec<MoveWhy>,
}

/// One decision.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub id: PlanId,
    pub kind: PlanKind,
    /// When it was made, s (manager clock).
    pub created_s: f64,
    pub state: PlanState,
    /// Its moves, in the order they may start.
    pub moves: Vec<MoveId>,
    /// Hosts to wake before the moves can start.
    pub wake: Vec<String>,
    /// Hosts to put in standby once emptied.
    pub standby: Vec<String>,
    pub explanation: Explanation,
    /// Why it ended the way it did (cancelled by whom, expired because what changed).
    pub note: Option<String>,
}

/// An operation a plan's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("plan {id} is {state}: cannot {operation}")]
pub struct PlanError {
    pub id: PlanId,
    pub state: &'static str,
    pub operation: &'static str,
}

impl Plan {
    fn refuse(&self, operation: &'static str) -> PlanError {
        PlanError {
            id: self.id.clone(),
            state: self.state.name(),
            operation,
        }
    }

    /// Proposed -> Approved.
    ///
    /// # Errors
    /// [`PlanError`] unless the plan is proposed.
    pub fn approve(&mut self) -> Result<(), PlanError> {
        if self.state != PlanState::Proposed {
            return Err(self.refuse("approve"));
        }
        self.state = PlanState::Approved;
        Ok(())
    }

    /// Proposed or Approved -> Cancelled.
    ///
    /// # Errors
    /// [`PlanError`] once the plan is final.
    pub fn cancel(&mut self, why: &str) -> Result<(), PlanError> {
        if self.state.is_final() {
            return Err(self.refuse("cancel"));
        }
        self.state = PlanState::Cancelled;
        self.note = Some(why.to_string());
        Ok(())
    }

    /// Proposed -> Expired.
    ///
    /// # Errors
    /// [`PlanError`] unless the plan is proposed.
    pub fn expire(&mut self, why: &str) -> Result<(), PlanError> {
        if self.state != PlanState::Proposed {
            return Err(self.refuse("expire"));
        }
        self.state = PlanState::Expired;
        self.note = Some(why.to_string());
        Ok(())
    }

    /// Approved -> Done or Failed, once every move is final (`any_failed`: a move failed or
    /// was lost).
    ///
    /// # Errors
    /// [`PlanError`] unless the plan is approved.
    pub fn finish(&mut self, any_failed: bool) -> Result<(), PlanError> {
        if self.state != PlanState::Approved {
            return Err(self.refuse("finish"));
        }
        self.state = if any_failed {
            PlanState::Failed
        } else {
            PlanState::Done
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(state: PlanState) -> Plan {
        Plan {
            id: "p1".into(),
            kind: PlanKind::Relief,
            created_s: 0.0,
            state,
            moves: vec![],
            wake: vec![],
            standby: vec![],
            explanation: Explanation {
                summary: "test".into(),
                host: None,
                samples: vec![],
                threshold: None,
                moves: vec![],
            },
            note: None,
        }
    }

    #[test]
    fn recommend_then_approve_and_finish() {
        let mut p = plan(PlanState::Proposed);
        p.approve().expect("approve");
        assert!(p.approve().is_err(), "twice");
        p.finish(false).expect("finish");
        assert_eq!(p.state, PlanState::Done);
        assert!(p.cancel("late").is_err());
    }

    #[test]
    fn expired_and_recorded_plans_cannot_be_approved() {
        let mut p = plan(PlanState::Proposed);
        p.expire("vm1 left h1").expect("expire");
        let err = p.approve().expect_err("expired");
        assert_eq!(err.state, "expired");
        let mut r = plan(PlanState::Recorded);
        assert!(r.approve().is_err());
        assert!(r.cancel("x").is_err());
    }
}
