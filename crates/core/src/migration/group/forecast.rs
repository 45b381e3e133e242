//! What the group choice answers: a schedule (technique per VM, order, concurrency) and its
//! forecast, per VM and for the group.

use crate::migration::cost::Prediction;
use crate::migration::technique::Technique;
use serde::{Deserialize, Serialize};

/// A way to evacuate the group: what [`super::choose_group`] picks and
/// [`super::predict_group`] forecasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Per VM, in the group's input order. `Auto`: the single-VM choice
    /// ([`crate::migration::cost::choose`]) at the bandwidth its migration gets.
    pub techniques: Vec<Technique>,
    /// The migrations' order, as indices into the group's VMs (a permutation).
    pub order: Vec<usize>,
    /// Migrations at a time: the order is cut into waves of this many; a wave starts when the
    /// one before has ended.
    pub concurrency: u32,
}

/// One VM's forecast within the group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmForecast {
    pub name: String,
    pub destination: String,
    /// Always concrete (an `Auto` in the schedule is resolved).
    pub technique: Technique,
    /// When its migration starts, seconds after the group's first.
    pub start_s: f64,
    /// Its migration's predicted duration, seconds (the single-VM model at `bandwidth_bps`).
    pub migration_s: f64,
    /// Bandwidth its migration gets, bytes/s: its share of the source's transmit side and of
    /// its destination's receive side (the narrower).
    pub bandwidth_bps: f64,
    /// The most of its application's throughput (rx + tx) the migrations take at once, bytes/s
    /// (in the wave named by `app_lost_during`).
    pub app_lost_bps: f64,
    /// `app_lost_bps` over its throughput (0..=1; 0 for a VM without traffic).
    pub app_lost_share: f64,
    /// The VMs migrating when it loses `app_lost_bps` (empty when it loses nothing).
    pub app_lost_during: Vec<String>,
    /// Its application's bytes not carried over the whole evacuation (its own wave and the
    /// others').
    pub app_lost_bytes: f64,
    /// Seconds of its full throughput lost: the single-VM model's lost work (pause, tracking,
    /// faults) plus `app_lost_bytes` over its throughput, plus its post-copy stall beyond the
    /// model's faults (`GroupParams::postcopy_stall_factor`).
    pub lost_work_s: f64,
    /// `lost_work_s` over the evacuation window (`max(evacuation_s, window_min_s)`), percent.
    pub degradation_pct: f64,
    /// The single-VM model's forecast at `bandwidth_bps`.
    pub prediction: Prediction,
    /// Why this technique, naming its traffic and the side of which NIC it spares.
    pub reason: String,
}

/// Another schedule the choice compared against (traffic-blind or single-technique), with its
/// forecast's headline numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    /// `all pre-copy`, `all post-copy`, `paper rule`, `single-VM choice`.
    pub label: String,
    pub schedule: Schedule,
    pub evacuation_s: f64,
    /// Seconds of full throughput lost, group VMs and residents.
    pub lost_work_s: f64,
    pub objective: f64,
}

/// How much of the space of schedules the search covered (see the module doc of [`super`]
/// for the cut-offs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coverage {
    /// Every assignment of techniques to the VMs with traffic, in every order, at every
    /// concurrency: the plan is the model's optimum (VMs without traffic on their single-VM
    /// choice or, in the uniform baselines, on one technique).
    Full,
    /// Every assignment, in the traffic order ([`super::traffic_order`]), then local search
    /// over the order (neighbour swaps) and single changes.
    Techniques,
    /// The baselines, then local search: a local optimum within the budget.
    Local,
}

/// How much searching the choice did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchStats {
    /// Schedules evaluated.
    pub evaluations: usize,
    /// Schedules it could have evaluated ([`super::GroupParams::evaluation_budget`]).
    pub budget: usize,
    pub coverage: Coverage,
    /// Whether the plan is forecast to beat all pre-copy and all post-copy on both evacuation
    /// time and lost work ([`super::GroupParams::beat_uniform`]); None when not asked (or the
    /// budget left no room to forecast them).
    #[serde(default)]
    pub beats_uniform: Option<bool>,
}

/// The forecast of one schedule for the whole group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupPlan {
    pub schedule: Schedule,
    /// One per VM, in migration order.
    pub vms: Vec<VmForecast>,
    /// Start of the first migration to the end of the last, seconds.
    pub evacuation_s: f64,
    /// Seconds of full throughput lost by the group's VMs, summed.
    pub lost_work_s: f64,
    /// Seconds of full throughput lost by the VMs that stay (or already run) on the hosts.
    pub residents_lost_s: f64,
    /// The sum of each VM's single-VM score at the bandwidth it gets ([`Prediction::score`],
    /// post-copy exposure at the group's price), plus `degradation_weight` x the seconds of
    /// throughput the migrations take from the applications (group and residents) and of
    /// post-copy stall beyond the single-VM model's, plus `evacuation_weight` x
    /// `evacuation_s`; lower is better, ties go to the shorter evacuation (the module doc of
    /// [`super`] says why).
    pub objective: f64,
    /// The schedules compared against ([`super::choose_group`] only; empty otherwise).
    pub alternatives: Vec<Alternative>,
    /// Empty from [`super::predict_group`].
    pub search: Option<SearchStats>,
    /// The order and its why, the comparison with the alternatives, each VM's reason.
    pub reason: String,
}
