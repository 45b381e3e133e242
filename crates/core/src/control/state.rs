//! The control step's memory between looks: per-host hot streaks and recent loads, per-VM
//! movement history (for cooldowns and anti-ping-pong), operator marks (drained hosts), the
//! moves and plans, and the energy account. The manager persists it before carrying out any
//! action, so a restart resumes exactly where the step left off.

use super::moves::{Move, MoveId};
use super::plan::{Plan, PlanId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Recent loads kept per host (for the explanation's samples and the optional forecast).
pub const LOAD_WINDOW: usize = 30;

/// What the step remembers about a host.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMemory {
    /// Consecutive samples above `hot`.
    pub hot_streak: u32,
    /// Recent loads, oldest first, at most [`LOAD_WINDOW`].
    pub loads: VecDeque<f64>,
    /// When the host was last seen becoming active, s.
    pub active_since_s: Option<f64>,
    /// When the step last asked it to wake, s (not asked again while it wakes).
    pub wake_asked_s: Option<f64>,
    /// When its last wake failed or timed out, s: no plan chooses it to wake for a while.
    #[serde(default)]
    pub wake_failed_s: Option<f64>,
    /// When the step last asked it to go to standby, s.
    pub standby_asked_s: Option<f64>,
}

/// What the step remembers about a VM.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmMemory {
    /// When its last move ended, s.
    pub last_moved_s: Option<f64>,
    /// The host it last left, and when.
    pub left: Option<(String, f64)>,
    /// Bytes its last completed migration moved (`MigrationObs::transferred_bytes`): the
    /// group choice's `LeavingVm::moved_bytes` for its next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_bytes: Option<u64>,
}

/// The step's whole memory.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    pub hosts: BTreeMap<String, HostMemory>,
    pub vms: BTreeMap<String, VmMemory>,
    /// Hosts an operator is draining: evacuated and kept empty until undrained.
    pub drained: BTreeSet<String>,
    pub moves: BTreeMap<MoveId, Move>,
    pub plans: BTreeMap<PlanId, Plan>,
    /// When consolidation was last considered, s.
    pub last_consolidation_s: Option<f64>,
    /// When balance was last considered, s.
    pub last_balance_s: Option<f64>,
    /// When the step last ran, s (energy is integrated between looks).
    pub last_step_s: Option<f64>,
    /// Energy drawn by the hosts since the manager started, Wh (the settings' power model).
    pub energy_wh: f64,
    /// Source of plan and move ids (never reused).
    pub next_id: u64,
    /// Makes ids unique across stores: a move's id is its migration's id on the agents, who
    /// keep their records forever (the manager sets it once, when its store is made).
    pub id_prefix: String,
}

impl ControlState {
    /// A fresh id: `prefix`, this store's `id_prefix`, a counter (`m-3f9a-12`).
    pub fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        if self.id_prefix.is_empty() {
            format!("{prefix}-{}", self.next_id)
        } else {
            format!("{prefix}-{}-{}", self.id_prefix, self.next_id)
        }
    }

    /// Forgets final plans made before `before_s`, with their moves, unless one of those moves
    /// is still in flight (a cancelled plan's running migration); returns how many plans went.
    /// The manager calls it once it has stored them: the step walks every plan and move it
    /// keeps, every look. Hosts' and VMs' memory (cooldowns) is kept.
    pub fn prune(&mut self, before_s: f64) -> usize {
        let gone: Vec<PlanId> = self
            .plans
            .values()
            .filter(|p| p.state.is_final() && p.created_s < before_s)
            .filter(|p| {
                p.moves
                    .iter()
                    .all(|m| self.moves.get(m).is_none_or(|m| !m.state.in_flight()))
            })
            .map(|p| p.id.clone())
            .collect();
        for id in &gone {
            if let Some(p) = self.plans.remove(id) {
                for m in &p.moves {
                    self.moves.remove(m);
                }
            }
        }
        gone.len()
    }

    /// Moves that hold a slot (requested or running).
    pub fn in_flight(&self) -> impl Iterator<Item = &Move> {
        self.moves.values().filter(|m| m.state.in_flight())
    }
}
