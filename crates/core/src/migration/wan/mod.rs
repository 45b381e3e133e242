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
//! - **Copy rates** (Drover's calibration, [`BlockCopy`]): memory and the hybrid's push of
//!   disk blocks go at `B`; the storage pre-copy's mirror at `min(B, k_m/RTT)` and the
//!   storage post-copy's stream at `min(B, k_s/RTT)`, QEMU 10's block jobs keeping about one
//!   NBD request in flight (measured: `k_m` ≈ 220 kB, `k_s` ≈ 160 kB a round trip). A
//!   stretch `i` copies at its rate `Bᵢ`.
//! - **Memory ahead** (Drover's, from QEMU's hybrid): `m = 1` is pre-copy, all of memory in
//!   the rounds below; `0 < m < 1` is one pass of `m·M` bytes in address order, unrelated to
//!   hotness, lasting `A = m·M/B`, then the switch: every memory stretch is `m` sent, and of
//!   what was sent the share the guest dirtied again before the switch, `g(μA)` (`μ` the
//!   stretch's dirty rate per byte, a page sent uniformly within the pass; `g` below), stays
//!   remote with the unsent `1 - m`. So a rewritten working set stays remote whatever `m`.
//! - **Ahead rounds** (as `cost::forecast`'s pre-copy, over the disk's ahead set and, at
//!   `m = 1`, memory): round 1 sends every ahead stretch `aᵢ`; round `k+1` sends
//!   `P_{k+1,i} = min(dᵢ·t_k, aᵢ)` (`dᵢ` bytes dirtied a second; each stretch re-dirties at
//!   most all of itself in a round), `t_k = Σᵢ P_{k,i}/Bᵢ`. The rounds stop when the pending
//!   copy time is at most `downtime_limit` (converged) or after `max_rounds` (not converged:
//!   the freeze takes what is pending). Memory's partial pass follows the disk's rounds, which
//!   go on being dirtied through it (pending `+ dᵢ·A`, at most `aᵢ`). Drover's
//!   simplification: the check is at a round's end, where QEMU checks within a pass, so the
//!   ahead phase is predicted at most one short pass longer and the freeze shorter.
//!   `ahead_s = Σ t_k + A`.
//! - **Downtime** = `postcopy_switchover_s + RTT + Σᵢ Pᵢ/Bᵢ`: the device state, the
//!   destination's answer (Drover's: one round trip before it may run), the frozen bytes.
//! - **Post-copy**: both layers' remote bytes are pulled at once over the one link, memory
//!   by migration's post-copy, the disk by the stream: while both run the stream takes
//!   `min(B_s, B/2)` (its rate, at most a fair share) and memory the rest; the one left
//!   then goes at its own rate (memory `B`, the stream `B_s`). Layer `L`'s pull ends at
//!   `T_L` and the phase at `T = max T_L`. Drover's: both background pulls
//!   go in address order, unrelated to hotness, so a remote unit arrives uniformly in
//!   `[0, T_L]`. The paper's probabilistic step: a remote unit touched at Poisson rate `λ` is
//!   first touched before it arrives with probability `g(λT_L) = 1 - (1 - e^{-λT_L})/(λT_L)`;
//!   that first touch waits `c = RTT + unit/B` (request and transfer; later touches are local:
//!   copy-on-read, userfault). Expected waits `N = Σ n·g(λT_L)` over remote units; the stall
//!   density at time `t` is `σ(t) = Σ_{T_L > t} n·λ·e^{-λt}·(1 - t/T_L)·c` (seconds of
//!   waiting a second) and throughput `θ(t) = 1/(1 + σ(t))` of before. `remote_wait_share` =
//!   `N` over all accesses during `T`; `postcopy_lost_s = ∫₀ᵀ (1-θ)`.
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
//! profile when the request gives none (its memory fraction is the request's technique). The
//! block jobs' rates are calibrated on measured runs ([`BlockCopy`]); the rest is not.

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
    /// How fast QEMU's block jobs move a disk over the link's round trip.
    pub block_copy: BlockCopy,
}

/// How fast QEMU 10's block jobs copy a disk over NBD on a long round trip (Drover's
/// calibration: both jobs keep about one request in flight, so a round trip, not the link's
/// rate, bounds them; BENCHMARKS.md, "Memory and storage over a WAN", at 100 Mbit/s and a
/// 100 ms round trip: the mirror took 60.3 s to READY for 128 MiB, about 220 kB a round trip;
/// the stream 81.5 to 89.6 s for 128 MiB, one NBD request per round trip, about 160 kB).
/// The hybrid's push (`blockdev-backup` with a bitmap, QEMU's block-copy with parallel
/// requests) and memory's pages go at the link's rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BlockCopy {
    /// Bytes the storage pre-copy's mirror moves a round trip (infinite: the link's rate).
    pub mirror_bytes_per_rtt: f64,
    /// Bytes the storage post-copy's stream pulls a round trip (infinite: the link's rate).
    pub stream_bytes_per_rtt: f64,
}

impl Default for BlockCopy {
    fn default() -> Self {
        BlockCopy {
            mirror_bytes_per_rtt: 220e3,
            stream_bytes_per_rtt: 160e3,
        }
    }
}

impl BlockCopy {
    /// Both jobs at the link's rate, whatever the round trip (the uncalibrated model).
    pub const AT_LINK_RATE: BlockCopy = BlockCopy {
        mirror_bytes_per_rtt: f64::INFINITY,
        stream_bytes_per_rtt: f64::INFINITY,
    };

    /// The mirror's rate over `link`, bytes/s: `min(B, mirror_bytes_per_rtt / RTT)`.
    pub fn mirror_bps(&self, link: &WanLink) -> f64 {
        per_rtt(self.mirror_bytes_per_rtt, link)
    }

    /// The stream's rate over `link`, bytes/s: `min(B, stream_bytes_per_rtt / RTT)`.
    pub fn stream_bps(&self, link: &WanLink) -> f64 {
        per_rtt(self.stream_bytes_per_rtt, link)
    }
}

/// `min(B, bytes / RTT)`; the link's rate on a zero round trip.
fn per_rtt(bytes: f64, link: &WanLink) -> f64 {
    let bw = link.bandwidth_bps();
    if link.rtt_s > 0.0 {
        bw.min(bytes / link.rtt_s)
    } else {
        bw
    }
}

impl Default for FractionParams {
    fn default() -> Self {
        FractionParams {
            cost: CostParams::default(),
            grid_steps: 10,
            restored_share: 0.9,
            block_copy: BlockCopy::default(),
        }
    }
}

impl FractionParams {
    /// Errors: `grid_steps` (0 or above 1000), `restored_share` (outside (0, 1)),
    /// `cost.page_bytes` (0), `cost.max_rounds` (0), `cost.downtime_limit_s`,
    /// `cost.tracking_overhead`, `cost.postcopy_switchover_s` (negative or not finite),
    /// `block_copy.mirror_bytes_per_rtt`, `block_copy.stream_bytes_per_rtt` (NaN or not
    /// positive).
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
        for (field, v) in [
            (
                "block_copy.mirror_bytes_per_rtt",
                self.block_copy.mirror_bytes_per_rtt,
            ),
            (
                "block_copy.stream_bytes_per_rtt",
                self.block_copy.stream_bytes_per_rtt,
            ),
        ] {
            // Infinite is allowed: the link's rate.
            if v.is_nan() || v <= 0.0 {
                return Err(bad(
                    field,
                    "bytes > 0 (infinite: the link's rate)",
                    v.to_string(),
                ));
            }
        }
        profile::check_non_negative("cost.downtime_limit_s", self.cost.downtime_limit_s)?;
        profile::check_non_negative("cost.tracking_overhead", self.cost.tracking_overhead)?;
        profile::check_non_negative(
            "cost.postcopy_switchover_s",
            self.cost.postcopy_switchover_s,
        )
    }
}
