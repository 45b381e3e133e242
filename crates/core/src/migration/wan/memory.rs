//! Memory's half of a WAN profile from what the profiler measures: robust statistics over its
//! dirty-rate samples and a working set read from one long window.
//!
//! # Why not one short and one long sample
//! The first WAN profiler sized the working set as the single-VM cost model does
//! (`VmProfile::from_dirty_rates`: a 200 ms page-sampling window against a one-second one,
//! saturated when the long one reads under `cost::SATURATED_SHARE` of the short), and used the
//! samples' mean as the rate. On a steady guest (32 MiB rewritten at about 4 MB/s, 192 MiB of
//! RAM) consecutive plans chose 10/20, 70/100, 30/80 and 70/100 % ahead: page sampling hashes a
//! few hundred pages of a small guest, so one sampled page in a 200 ms window is over a MB/s;
//! either sample's noise flipped the rule, and the working set jumped between one second of
//! dirtying (1-4 MB) and all of memory; and one spike in three samples (4, 34, 4 MB/s) tripled
//! the mean.
//!
//! # What is measured now (Drover's)
//! - **Rate** `D`: the median of `n` one-second samples of distinct pages dirtied (QEMU's
//!   page sampling; its `dirty-bitmap` mode would count every page but reads 0 under TCG). One
//!   spike among three moves the median by nothing; the spread (least and most sample) is
//!   reported beside it.
//! - **Working set** `W`: one window of `L` seconds counts `d_L` distinct pages dirtied over it.
//!   A guest that never rewrote a page would dirty `D·L` of them; one rewriting a set of `W`
//!   bytes dirties at most `W`. So when `d_L < REWRITE_SHARE · D·L` (one half) the guest visibly rewrites
//!   the same pages and `W = d_L` (at least one sample's worth, `D · sample_interval_s`: each
//!   of those pages was distinct). Otherwise the window saw no rewriting, `W ≥ d_L` is all it
//!   shows, and the model takes all of memory, the bound a round can dirty (as the cost model
//!   does). The rule compares a median against a count over seconds of dirtying, not one
//!   200 ms reading against one of a second, and the working set only changes when `d_L`
//!   crosses half of `D·L`, far from a steady guest's 100%.
//! - **Idle**: `D` and the long window's rate both under [`IDLE_DIRTY_MB_S`]: `W = d_L` (what
//!   was dirtied, possibly nothing), never all of memory.

use super::profile::{check_non_negative, invalid, MemoryProfile};
use super::WanError;
use crate::migration::cost::IDLE_DIRTY_MB_S;
use serde::{Deserialize, Serialize};

/// The long window must count under this share of `D·L` for the working set to be what it
/// counted. Not the cost model's 70% (`cost::SATURATED_SHARE`, two single readings): a page-
/// sampled window of a few seconds itself reads 0.6 to 3 times `D·L` on a steady guest that
/// cannot saturate within it (32 MiB rewritten at 4 MB/s over 3 s, measured in a lab), so only
/// a count under half says the guest is rewriting the same pages.
pub const REWRITE_SHARE: f64 = 0.5;

/// One measurement window over which the profiler counted distinct dirtied pages.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DirtyWindow {
    /// The window's length, seconds.
    pub seconds: f64,
    /// Bytes of distinct pages dirtied over it.
    pub dirtied_bytes: f64,
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none. NaN
/// sorts last (validation refuses it before the model runs).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

impl MemoryProfile {
    /// Memory's profile from `samples_bps` (distinct bytes dirtied a second, one sample per
    /// `sample_interval_s` seconds, oldest first) and one `long` window, the working set
    /// derived as the module doc says. Errors: as [`MemoryProfile::new`], plus
    /// `memory.long_window.seconds` (not positive) and `memory.long_window.dirtied_bytes`
    /// (negative or not finite).
    pub fn from_windows(
        memory_bytes: u64,
        samples_bps: Vec<f64>,
        sample_interval_s: f64,
        long: DirtyWindow,
    ) -> Result<Self, WanError> {
        check_window(&long)?;
        let mut p = MemoryProfile {
            memory_bytes,
            wss_bytes: 0,
            dirty_rate_samples_bps: samples_bps,
            sample_interval_s,
            long_window: Some(long),
        };
        // The samples are checked with the rest below; a NaN only makes this figure wrong.
        p.wss_bytes = working_set(&p, &long);
        p.validate()?;
        Ok(p)
    }

    /// The least and the most sample, bytes/s (0 and 0 without samples): the spread the
    /// median [`MemoryProfile::dirty_rate_bps`] is robust to.
    pub fn dirty_rate_spread_bps(&self) -> (f64, f64) {
        let s = &self.dirty_rate_samples_bps;
        if s.is_empty() {
            return (0.0, 0.0);
        }
        let lo = s.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    }

    /// One line saying where the rate and the working set come from, with their figures (MB
    /// are 10^6 bytes).
    pub fn explain(&self) -> String {
        let (lo, hi) = self.dirty_rate_spread_bps();
        let mb = |b: f64| b / 1e6;
        let rate = format!(
            "dirty rate {:.1}MB/s (median of {} samples, {:.1}-{:.1})",
            mb(self.dirty_rate_bps()),
            self.dirty_rate_samples_bps.len(),
            mb(lo),
            mb(hi)
        );
        let wss = mb(self.wss_bytes as f64);
        match self.long_window {
            Some(w) if self.wss_bytes == self.memory_bytes => format!(
                "{rate}; working set all of memory ({wss:.0}MB): the {:.0}s window dirtied {:.1}MB, no rewriting seen",
                w.seconds,
                mb(w.dirtied_bytes)
            ),
            Some(w) => format!(
                "{rate}; working set {wss:.1}MB: the {:.0}s window dirtied {:.1}MB of the {:.1}MB a guest never rewriting would",
                w.seconds,
                mb(w.dirtied_bytes),
                mb(self.dirty_rate_bps() * w.seconds)
            ),
            None => format!("{rate}; working set {wss:.1}MB as given"),
        }
    }
}

fn check_window(w: &DirtyWindow) -> Result<(), WanError> {
    if !(w.seconds.is_finite() && w.seconds > 0.0) {
        return Err(invalid(
            "memory.long_window.seconds",
            "a finite number of seconds > 0",
            w.seconds,
        ));
    }
    check_non_negative("memory.long_window.dirtied_bytes", w.dirtied_bytes)
}

/// The working set, bytes, from `p`'s median rate and `long` (rules in the module doc).
fn working_set(p: &MemoryProfile, long: &DirtyWindow) -> u64 {
    let memory = p.memory_bytes as f64;
    let rate = p.dirty_rate_bps();
    let seen = long.dirtied_bytes.min(memory);
    let idle_bps = IDLE_DIRTY_MB_S * 1e6;
    if rate < idle_bps && long.dirtied_bytes / long.seconds < idle_bps {
        return seen as u64;
    }
    let never_rewriting = rate * long.seconds;
    if seen < REWRITE_SHARE * never_rewriting {
        seen.max(rate * p.sample_interval_s).min(memory).ceil() as u64
    } else {
        p.memory_bytes
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
