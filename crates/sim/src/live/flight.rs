//! One migration in the model: its timeline from core's cost model, and how it reports.
//!
//! ```text
//!  start ──(post-copy, hybrid: switchover)──> VM runs on `to` ──end──> Completed
//!    │                                                   (cancel refused from here on)
//!    ├──(stop-and-copy: pre-copy, a hybrid that converged first)──end──> Completed, VM on `to`
//!    ├──(pre-copy that does not converge)──deadline──> Failed, VM stays on `from`
//!    └──cancel (before any switchover)──> Cancelled, VM stays on `from`
//! ```
//!
//! The timeline is the cost model's prediction ([`drover_core::migration::predict`]) for the
//! VM's memory, working set and dirty rate when it starts, over the model's link (capped by the
//! request's bandwidth knob), with the request's downtime limit, deadline and hybrid switch
//! point. `Auto` runs the technique the cost model chooses. Memory is held on both hosts while
//! the migration runs: on the destination from the start, on the source until the end.

use super::account::Ending;
use drover_core::control::{MigrationObs, MigrationPhase};
use drover_core::migration::{
    choose, predict, CostParams, LinkProfile, PlanKnobs, Prediction, Technique, VmProfile,
};

/// One migration, running or ended.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Flight {
    pub id: String,
    pub vm: usize,
    pub from: usize,
    pub to: usize,
    /// The technique that runs (never `Auto`).
    pub technique: Technique,
    pub start_s: f64,
    /// When the VM starts running on `to` before the end (post-copy's switchover), s.
    pub switch_s: Option<f64>,
    /// When it ends, s.
    pub end_s: f64,
    /// Whether it ends with the VM on `to` (false: a pre-copy that does not converge).
    pub succeeds: bool,
    /// Whether the VM already runs on `to`.
    pub switched: bool,
    /// The VM's demand when it started, cores (prices its lost work).
    pub demand_cores: f64,
    pub prediction: Prediction,
    /// How and when it ended (None while it runs).
    pub ended: Option<(Ending, f64)>,
    pub error: Option<String>,
}

/// What the model knows about the VM and the link when a migration starts.
pub(super) struct Start<'a> {
    pub id: &'a str,
    pub vm: usize,
    pub from: usize,
    pub to: usize,
    pub requested: Technique,
    pub knobs: &'a PlanKnobs,
    pub profile: VmProfile,
    pub link_bps: f64,
    pub cost: &'a CostParams,
    pub demand_cores: f64,
    pub now_s: f64,
}

impl Flight {
    /// Plans a migration's timeline from the cost model.
    pub fn start(s: Start) -> Flight {
        let k = s.knobs;
        let capped = k
            .bandwidth_bps
            .map_or(s.link_bps, |cap| (cap as f64).min(s.link_bps));
        let params = CostParams {
            downtime_limit_s: k.downtime_limit_ms as f64 / 1000.0,
            precopy_deadline_s: k.deadline_s as f64,
            hybrid: k.hybrid(),
            // QEMU lifts its own cap for stop-and-copy and faulted pages: the link's speed.
            unthrottled_bps: (capped < s.link_bps).then_some(s.link_bps),
            ..*s.cost
        };
        let link = LinkProfile {
            bandwidth_bps: capped,
        };
        let technique = match s.requested {
            Technique::Auto => choose(&s.profile, &link, &params, &Technique::CONCRETE).technique,
            t => t,
        };
        let p = predict(technique, &s.profile, &link, &params);
        let total = finite_or(p.total_s, params.precopy_deadline_s).max(0.0);
        let switch_s = (p.converges && p.postcopy_s > 0.0)
            .then(|| s.now_s + finite_or(p.switchover_s, 0.0).clamp(0.0, total));
        Flight {
            id: s.id.to_string(),
            vm: s.vm,
            from: s.from,
            to: s.to,
            technique,
            start_s: s.now_s,
            switch_s,
            end_s: s.now_s + total,
            succeeds: p.converges,
            switched: false,
            demand_cores: s.demand_cores,
            prediction: p,
            ended: None,
            error: None,
        }
    }

    pub fn running(&self) -> bool {
        self.ended.is_none()
    }

    /// The next thing that happens to it after `t`, s.
    pub fn next_event(&self) -> Option<f64> {
        if !self.running() {
            return None;
        }
        match self.switch_s {
            Some(s) if !self.switched => Some(s),
            _ => Some(self.end_s),
        }
    }

    /// Work lost, core-seconds, if it ends at `t`: the prediction's, or the share of it for
    /// the time it ran when cancelled.
    pub fn lost_core_s(&self, t: f64, cost: &CostParams) -> f64 {
        let p = &self.prediction;
        let window = p.total_s.max(cost.window_min_s);
        let lost_s = if window.is_finite() {
            p.degradation_pct / 100.0 * window
        } else {
            0.0
        };
        let share = match self.ended {
            Some((Ending::Cancelled, _)) if self.end_s > self.start_s => {
                ((t - self.start_s) / (self.end_s - self.start_s)).clamp(0.0, 1.0)
            }
            _ => 1.0,
        };
        lost_s * share * self.demand_cores
    }

    /// Bytes sent if it ends at `t` (pro rata when cancelled).
    pub fn sent_bytes(&self, t: f64) -> f64 {
        let all = finite_or(self.prediction.transferred_bytes, 0.0);
        match self.ended {
            Some((Ending::Cancelled, _)) if self.end_s > self.start_s => {
                all * ((t - self.start_s) / (self.end_s - self.start_s)).clamp(0.0, 1.0)
            }
            _ => all,
        }
    }

    /// How the source agent would report it.
    pub fn report(&self) -> MigrationObs {
        let (phase, on_dest) = match self.ended {
            None => (MigrationPhase::Running, self.switched),
            Some((Ending::Completed, _)) => (MigrationPhase::Completed, true),
            Some((Ending::Failed, _)) => (MigrationPhase::Failed, false),
            Some((Ending::Cancelled, _)) => (MigrationPhase::Cancelled, false),
        };
        MigrationObs {
            id: self.id.clone(),
            phase,
            vm_on_destination: on_dest,
            error: self.error.clone(),
            // As an agent reports it: the bytes of a completed migration only.
            transferred_bytes: (phase == MigrationPhase::Completed)
                .then_some(self.prediction.transferred_bytes)
                .filter(|b| b.is_finite() && *b >= 0.0)
                .map(|b| b as u64),
        }
    }
}

fn finite_or(x: f64, or: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        or
    }
}
