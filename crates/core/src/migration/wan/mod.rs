//! Fractional hybrid migration of memory AND storage over a WAN: which fraction of each to copy
//! ahead, predicted by a probabilistic model and chosen to minimise performance restoration
//! agility within a time budget (issue 12, part 4; seed: Zhang, Lam & Wang, "Adaptive Live VM
//! Migration over a WAN: Modeling and Implementation", IEEE CLOUD 2014, `seeds/002_*`).
//!
//! Only the paper's abstract is available to the project, so no section can be cited: what is
//! the paper's below is what its abstract states (three phases; a fraction of memory and
//! storage ahead, the rest post-copied; profiling plus a probabilistic model choosing the
//! fractions; the agility metric weighing downtime and post-copy slowdown). Everything else is
//! marked "Drover's", with the reasoning.
//!
//! # Phases (the paper's three)
//! For a memory fraction `m` and a storage fraction `s` (0..=1; 1 = all ahead = pure
//! pre-copy, 0 = pure post-copy):
//! 1. **ahead**: the hottest `m` of memory and the hottest `s` of the disk's blocks are
//!    copied, then re-copied in rounds as the guest dirties them (on QEMU 10: RAM by
//!    migration's passes; blocks by `blockdev-backup` with a bitmap of the hot set, see
//!    `notes/qemu-10-facts.md`).
//! 2. **freeze-and-copy**: the guest pauses while what is still dirty in the ahead sets
//!    crosses (a stale block in the destination's overlay would shadow the source's newer one,
//!    so storage must re-send it here; the paper's model does the same for memory).
//! 3. **post-copy**: the guest runs on the destination; the rest (`1-m` of memory, `1-s` of
//!    the disk) is pulled in the background (migration's post-copy, `block-stream` from the
//!    source's NBD export) and fetched on demand when the guest touches it first.
//!
//! # Formulas
//! Units: bytes, seconds, bytes/s. `B` link bandwidth, `RTT` its round trip, `M` RAM, `W`
//! working set, `D` dirty rate (the median of the profile's samples), `V` disk size, `b` block
//! size, `p` page size (`CostParams::page_bytes`), `r`, `w` disk read and write rates.
//! - **Hotness** (Drover's, from the profile): memory is two stretches, the working set
//!   (touched `D/p` pages a second, dirtied at `D`) then the rest (untouched), as
//!   `cost::forecast` assumes. The disk is its profiled regions sorted by accesses per byte,
//!   hottest first; region `i` with read share `ρᵢ` and write share `ωᵢ` gets
//!   `(r·ρᵢ + w·ωᵢ)/b` accesses a second and dirties `w·ωᵢ` bytes a second. The ahead set of
//!   fraction `f` is the hottest `f` of bytes, a region cut proportionally.
//! - **Ahead rounds** (as `cost::forecast`'s pre-copy, over the two ahead sets at once):
//!   round 1 sends `A = A_mem + A_disk`; round `k+1` sends `P_{k+1} = Σᵢ min(dᵢ·t_k, aᵢ)`
//!   over the ahead stretches `i` (`dᵢ` bytes dirtied a second, `aᵢ` bytes), `t_k = P_k/B`
//!   (each stretch re-dirties at most all of itself in a round). The rounds
//!   stop when `P ≤ B·downtime_limit_s` (converged) or after `max_rounds` (not converged: the
//!   freeze takes what is pending). Drover's simplification: the check is at a round's end,
//!   where QEMU checks within a pass, so the ahead phase is predicted at most one short pass
//!   longer and the freeze shorter. `ahead_s = Σ t_k`.
//! - **Downtime** = `postcopy_switchover_s + RTT + P_last/B`: the device state, the
//!   destination's answer (Drover's: one round trip before it may run), the frozen bytes.
//! - **Post-copy** lasts `T = R/B`, `R` the bytes not ahead. Drover's: both background pulls
//!   go in address order, unrelated to hotness, so a remote unit arrives uniformly in `[0, T]`.
//!   The paper's probabilistic step: a remote unit touched at Poisson rate `λ` is first touched
//!   before it arrives with probability `g(λT) = 1 - (1 - e^{-λT})/(λT)`; that first touch
//!   waits `c = RTT + unit/B` (request and transfer; later touches are local: copy-on-read,
//!   userfault). Expected waits `N = Σ n·g(λT)` over remote units; the stall density at time
//!   `t` is `σ(t) = Σ n·λ·e^{-λt}·(1 - t/T)·c` (seconds of waiting a second) and throughput
//!   `θ(t) = 1/(1 + σ(t))` of before. `remote_wait_share` = `N` over all accesses during `T`;
//!   `postcopy_lost_s = ∫₀ᵀ (1-θ)`.
//! - **Ahead-phase cost** (Drover's, as `cost::forecast`): dirty tracking costs
//!   `tracking_overhead · min(1, writes/B)` of throughput while the ahead phase runs, writes
//!   being those of the layers with something ahead.
//! - **Total time** = `ahead_s + downtime_s + T`: until every byte is on the destination.
//!
//! # Performance restoration agility
//! The paper's metric "considers both the downtime and VM speed degradation during the
//! post-copy phase" (abstract); its precise form is not in the abstract, so Drover defines it:
//! **agility = the guest's work lost, in seconds of its pre-migration throughput, from the start
//! of the migration until the instant after which its throughput stays at or above
//! `restored_share` (90%) of before**. The guest does no work while paused, so the downtime
//! counts in full; before it come the ahead phase's tracking losses, after it the post-copy
//! losses until `θ(t) ≥ 0.9` for good (`σ(t) ≤ 1/9`; `σ` only falls, so that instant is
//! found by bisection). Lower is better; seconds.
//!
//! # The choice
//! [`choose_fractions`] forecasts a grid of `(m, s)` (steps of `1/grid_steps`, corners
//! included) and picks the lowest agility among those whose total fits the budget (ties, which
//! are agilities within 5% of the lowest: less time in post-copy, the VM split between hosts,
//! then less total time; Drover's band, so a flat optimum does not follow a profile's noise); when none fits it
//! says so and picks the fastest. It reports both pure techniques for comparison, and where the
//! rate and working set came from (the samples' spread, the long window's count).
//!
//! Fed by the host-side profiler (`drover_qemu::profile::profile_wan`; memory's rate and
//! working set by [`MemoryProfile::from_windows`], robust to a sample's spike, see `memory.rs`;
//! region counts by [`count_regions`]) and served as an agent's WAN plan (`POST /v1/vms/{name}/wan-plan`). The
//! storage fraction's blocks are [`super::storage_hybrid::HotSet::hottest`] (the same
//! hotness order, [`DiskProfile::hottest_regions`]), which the storage hybrid pushes ahead;
//! an agent's `storage: hybrid` migration takes the chosen storage fraction from a fresh
//! profile when the request gives none (its memory fraction is the request's technique), and
//! the model is not calibrated on measured runs (issue 12 parts 2 and 5).

mod choice;
mod memory;
mod model;
mod profile;
#[cfg(test)]
mod tests;

pub use choice::{choose_fractions, FractionChoice};
pub use memory::{median, DirtyWindow};
pub use model::{predict_fractions, FractionPrediction};
pub use profile::{
    count_regions, DiskProfile, DiskRequest, MemoryProfile, RegionCount, WanLink, WanProfile,
};

use super::cost::CostParams;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A profile, link, fraction or setting the model cannot use.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum WanError {
    #[error("{field}: expected {expected}, got {got}")]
    Invalid {
        /// The field, as a path from the profile (`disk.block_bytes`, `memory_fraction`).
        field: String,
        expected: &'static str,
        got: String,
    },
}

/// Tunables of the fraction model and choice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FractionParams {
    /// The single-VM cost model's settings this model shares: `downtime_limit_s`,
    /// `max_rounds`, `tracking_overhead`, `postcopy_switchover_s`, `page_bytes`.
    pub cost: CostParams,
    /// Grid steps per axis: fractions `0, 1/n, ..., 1`.
    pub grid_steps: u32,
    /// Share of pre-migration throughput at which performance counts as restored (0..1).
    pub restored_share: f64,
}

impl Default for FractionParams {
    fn default() -> Self {
        FractionParams {
            cost: CostParams::default(),
            grid_steps: 10,
            restored_share: 0.9,
        }
    }
}

impl FractionParams {
    /// Errors: `grid_steps` (0 or above 1000), `restored_share` (outside (0, 1)),
    /// `cost.page_bytes` (0), `cost.max_rounds` (0), `cost.downtime_limit_s`,
    /// `cost.tracking_overhead`, `cost.postcopy_switchover_s` (negative or not finite).
    pub fn validate(&self) -> Result<(), WanError> {
        let bad = |field: &str, expected, got: String| WanError::Invalid {
            field: field.into(),
            expected,
            got,
        };
        if !(1..=1000).contains(&self.grid_steps) {
            return Err(bad("grid_steps", "1 to 1000", self.grid_steps.to_string()));
        }
        if !(self.restored_share > 0.0 && self.restored_share < 1.0) {
            return Err(bad(
                "restored_share",
                "a share strictly between 0 and 1",
                self.restored_share.to_string(),
            ));
        }
        if self.cost.page_bytes == 0 {
            return Err(bad("cost.page_bytes", "more than 0 bytes", "0".into()));
        }
        if self.cost.max_rounds == 0 {
            return Err(bad("cost.max_rounds", "at least 1", "0".into()));
        }
        profile::check_non_negative("cost.downtime_limit_s", self.cost.downtime_limit_s)?;
        profile::check_non_negative("cost.tracking_overhead", self.cost.tracking_overhead)?;
        profile::check_non_negative(
            "cost.postcopy_switchover_s",
            self.cost.postcopy_switchover_s,
        )
    }
}
