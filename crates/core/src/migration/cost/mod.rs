//! The migration cost model: predicts, for each technique, how long a migration takes, how long
//! the VM is paused, how many bytes cross the link and how much the workload suffers.
//!
//! It is deliberately simple and closed-form so that both `auto` (choosing a technique for one VM,
//! in the bench and the agent) and the simulator (thousands of migrations a step) can call it.
//!
//! Model, for a VM with RAM `M`, writable working set `W`, page dirty rate `D` (bytes/s of
//! distinct pages newly dirtied) and a link of bandwidth `B`:
//! - **pre-copy**, as QEMU runs it: passes over memory at `B`, each resending what the guest
//!   dirtied during the one before (at most `W`). QEMU stops the guest as soon as what is still
//!   pending (the rest of the current pass plus what was dirtied since its start) fits
//!   `B * downtime_limit`, which can happen part-way through a pass, but not before its first
//!   bandwidth sample (`bandwidth_sample_s`). The stop-and-copy then sends all of that pending
//!   data with QEMU's rate limit lifted, so the pause is `pending / unthrottled_bps` where QEMU's
//!   own cap is the only limit, and about `downtime_limit` on a link that is really that slow.
//!   It does not converge when passes stop shrinking (`D >= B`) or after `max_rounds`. While
//!   dirty logging is on, the workload pays `tracking_overhead` of its throughput per unit of
//!   write intensity (`min(1, D/B)`).
//! - **post-copy**: the VM moves after a short switchover (`postcopy_switchover_s`); RAM follows at
//!   `B`. Until its working set has arrived the guest stalls on remote page faults: for each page
//!   of the working set it touches meanwhile (at most `W`, at most `D` times the post-copy time)
//!   it loses that page's transfer time on the fault path (the link, or `unthrottled_bps`) plus
//!   `fault_latency_s`.
//! - **hybrid**: pre-copy until `ram_fraction` of RAM has been sent or `max_rounds` rounds, then
//!   post-copy whatever is left: the pages not yet sent plus what the working set dirtied since.
//!   Like QEMU, it still completes by stop-and-copy if the pending data fits the threshold before
//!   the switch point.
//!
//! Degradation is reported as the benchmark measures it: the share of workload throughput lost
//! over the window from migration start to `max(end, start + window_min_s)`.
//!
//! Ranking ([`Prediction::score`]) weighs lost work and pause against the post-copy phase's
//! exposure: while post-copy runs the VM's memory is split between two hosts, and losing either
//! host or the link loses the VM. `postcopy_exposure_weight` prices a second of that in points of
//! degradation, so an idle VM keeps pre-copy's safety unless post-copy saves real work.
//!
//! Files: this one holds the model's inputs ([`VmProfile`], [`LinkProfile`], [`CostParams`]) and
//! its output ([`Prediction`]); `forecast.rs` computes a technique's forecast ([`predict`]);
//! `score.rs` ranks forecasts and picks a technique ([`Prediction::score`], [`choose`], [`pick`]).

mod forecast;
mod score;

pub use forecast::predict;
pub use score::{choose, pick, Choice};

use super::knobs::PlanKnobs;
use super::technique::{HybridSwitch, Technique};
use serde::{Deserialize, Serialize};

/// What the cost model needs to know about a VM.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VmProfile {
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// Bytes of memory the guest keeps rewriting (its writable working set).
    pub wss_bytes: u64,
    /// Rate at which distinct pages get dirtied, bytes per second.
    pub dirty_rate_bps: f64,
}

/// Dirty rate under which a guest counts as idle, MB/s: about 24 pages a second, far below any
/// workload Drover runs (memtouch's slowest paced rate here, 200 pages a second, is 0.8 MB/s)
/// and above an idle guest's readings (0.0 MB/s in every window of a WAN profile).
pub const IDLE_DIRTY_MB_S: f64 = 0.1;

/// A longer window that counts under this share of the distinct pages a shorter one's rate
/// predicts shows the guest rewriting the same pages: its working set is saturated.
pub const SATURATED_SHARE: f64 = 0.7;

impl VmProfile {
    /// Builds a profile from two page-sampling dirty-rate measurements (MB/s): a short window,
    /// which sees how fast pages get dirtied, and a one-second window, which sees how much
    /// memory is hot. When the long window's rate falls well below the short one's, the guest
    /// keeps rewriting the same pages: the working set is what the long window saw. Otherwise
    /// the working set is larger than a second of dirtying shows, and is taken as all of memory
    /// (the model only uses it as a cap on what a round can dirty). A guest whose both windows
    /// stay under [`IDLE_DIRTY_MB_S`] is idle: its working set is what the long window saw,
    /// not all of memory (else sampling noise, 0 against 0.01 MB/s, flipped an idle guest's
    /// working set between nothing and all of its memory from one measurement to the next).
    pub fn from_dirty_rates(memory_bytes: u64, short_mb_s: f64, long_mb_s: f64) -> Self {
        let short = short_mb_s.max(0.0) * 1e6;
        let long = long_mb_s.max(0.0) * 1e6;
        let idle = short < IDLE_DIRTY_MB_S * 1e6 && long < IDLE_DIRTY_MB_S * 1e6;
        let saturated = idle || long < SATURATED_SHARE * short;
        let wss = if saturated {
            long.min(memory_bytes as f64)
        } else {
            memory_bytes as f64
        };
        VmProfile {
            memory_bytes,
            wss_bytes: wss as u64,
            dirty_rate_bps: short.max(long),
        }
    }
}

/// The path a migration takes.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkProfile {
    /// Usable bandwidth for migration traffic, bytes per second.
    pub bandwidth_bps: f64,
}

/// Tunables of the model. Defaults are calibrated on this project's QEMU/TCG measurements (see
/// BENCHMARKS.md); real hosts may override them from their own history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostParams {
    /// Pause allowed for pre-copy's final stop-and-copy, seconds.
    pub downtime_limit_s: f64,
    /// Rounds after which pre-copy is declared non-convergent.
    pub max_rounds: u32,
    /// Time pre-copy may run before the watchdog's deadline cancels it, seconds.
    pub precopy_deadline_s: f64,
    /// Throughput lost while dirty logging is on, at full write intensity (0..1).
    pub tracking_overhead: f64,
    /// Pause at post-copy's switchover (device state, CPU state, discard bitmap), seconds.
    pub postcopy_switchover_s: f64,
    /// Extra stall per demand-faulted page, seconds (round trip on the migration channel).
    pub fault_latency_s: f64,
    /// Bandwidth of the traffic QEMU's `max-bandwidth` does not limit, bytes/s: pre-copy's
    /// stop-and-copy (QEMU lifts its rate limit once the guest is stopped) and demand-faulted
    /// pages on postcopy-preempt's channel. None: the link's, for a link that is really that
    /// slow. Where the cap is QEMU's rather than the network's, this is the network's speed.
    pub unthrottled_bps: Option<f64>,
    /// QEMU measures the migration's bandwidth over intervals of this length, seconds, and
    /// cannot switch to stop-and-copy before the first measurement.
    pub bandwidth_sample_s: f64,
    /// Points of score charged per second that a VM spends in post-copy, its memory split
    /// between two hosts (see [`Prediction::score`]).
    pub postcopy_exposure_weight: f64,
    /// Guest page size, bytes.
    pub page_bytes: u64,
    /// Shortest window over which degradation is measured, seconds.
    pub window_min_s: f64,
    /// Hybrid's switch point.
    pub hybrid: HybridSwitch,
}

impl Default for CostParams {
    fn default() -> Self {
        let knobs = PlanKnobs::default();
        CostParams {
            downtime_limit_s: knobs.downtime_limit_ms as f64 / 1000.0,
            max_rounds: 30,
            precopy_deadline_s: knobs.deadline_s as f64,
            tracking_overhead: 0.05,
            postcopy_switchover_s: 0.05,
            fault_latency_s: 0.000_02,
            unthrottled_bps: None,
            bandwidth_sample_s: 0.1,
            postcopy_exposure_weight: 1.0,
            page_bytes: 4096,
            window_min_s: 10.0,
            hybrid: knobs.hybrid(),
        }
    }
}

/// The model's forecast for one technique.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub technique: Technique,
    /// False when pre-copy would never reach the downtime limit (hybrid and post-copy always end).
    pub converges: bool,
    /// Start to completion, seconds (the deadline when pre-copy does not converge).
    pub total_s: f64,
    /// Time the guest is paused, seconds.
    pub downtime_s: f64,
    /// Start until the guest runs on the destination, seconds (infinite if never).
    pub switchover_s: f64,
    pub transferred_bytes: f64,
    /// Pre-copy rounds including the first pass (a pass cut short by the switch counts).
    pub rounds: u32,
    /// Share of workload throughput lost over the measurement window, percent.
    pub degradation_pct: f64,
    /// Seconds in post-copy: the VM runs on the destination while part of its memory is still
    /// on the source.
    pub postcopy_s: f64,
}

#[cfg(test)]
mod fixtures {
    //! Profiles and links in the units the tests think in (MiB, MB/s).
    use super::{CostParams, LinkProfile, VmProfile};

    pub(super) const MIB: u64 = 1 << 20;

    pub(super) fn vm(memory_mib: u64, wss_mib: u64, dirty_mb_s: f64) -> VmProfile {
        VmProfile {
            memory_bytes: memory_mib * MIB,
            wss_bytes: wss_mib * MIB,
            dirty_rate_bps: dirty_mb_s * 1e6,
        }
    }

    pub(super) fn link(mb_s: f64) -> LinkProfile {
        LinkProfile {
            bandwidth_bps: mb_s * 1e6,
        }
    }

    /// The bench's situation: QEMU's cap is the only limit, the network itself is fast.
    pub(super) fn capped_by_qemu() -> CostParams {
        CostParams {
            unthrottled_bps: Some(1e9),
            ..CostParams::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::MIB;
    use super::*;

    #[test]
    fn profile_from_two_windows() {
        // A hot 128 MiB set rewritten constantly: the 1 s window saturates at the set's size.
        let hot = VmProfile::from_dirty_rates(256 * MIB, 640.0, 134.0);
        assert_eq!(hot.wss_bytes, 134_000_000);
        assert_eq!(hot.dirty_rate_bps, 640e6);
        // A slow writer over a big set: both windows agree, the set is not bounded by them.
        let slow = VmProfile::from_dirty_rates(256 * MIB, 11.0, 10.5);
        assert_eq!(slow.wss_bytes, 256 * MIB);
        assert_eq!(slow.dirty_rate_bps, 11e6);
        let idle = VmProfile::from_dirty_rates(256 * MIB, 0.0, 0.0);
        assert_eq!((idle.dirty_rate_bps, idle.wss_bytes), (0.0, 0));
        // Sampling noise on an idle guest: the same small working set either way round.
        let noisy = VmProfile::from_dirty_rates(256 * MIB, 0.0, 0.02);
        assert_eq!(noisy.wss_bytes, 20_000);
        let noisy = VmProfile::from_dirty_rates(256 * MIB, 0.02, 0.0);
        assert_eq!(noisy.wss_bytes, 0);
    }
}
