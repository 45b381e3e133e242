//! The forecast for one pair of fractions (formulas in the parent module's doc).

use super::profile::{DiskProfile, MemoryProfile, WanLink, WanProfile};
use super::{FractionParams, WanError};
use serde::{Deserialize, Serialize};

/// Steps of the midpoint rule integrating post-copy's lost work.
const INTEGRATION_STEPS: usize = 256;
/// Bisection steps locating the restoration instant (resolution `T / 2^60`).
const BISECTION_STEPS: usize = 60;

/// What the model predicts for memory fraction `memory_fraction` and storage fraction
/// `storage_fraction` ahead. Seconds, bytes, counts.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FractionPrediction {
    /// Share of memory copied ahead (0..=1), hottest first.
    pub memory_fraction: f64,
    /// Share of the disk's bytes copied ahead (0..=1), hottest first.
    pub storage_fraction: f64,
    /// False when the ahead rounds hit `max_rounds` before what is dirty fit
    /// `B · downtime_limit_s`: the freeze then copies all of it.
    pub converges: bool,
    /// Ahead rounds, the first pass included (0 when nothing goes ahead).
    pub rounds: u32,
    /// Ahead phase, seconds.
    pub ahead_s: f64,
    /// Guest paused, seconds.
    pub downtime_s: f64,
    /// Post-copy phase, seconds: the guest runs on the destination while part of its memory
    /// or disk is still on the source.
    pub postcopy_s: f64,
    /// Start to every byte on the destination, seconds.
    pub total_s: f64,
    /// Bytes over the link: rounds, freeze, post-copy.
    pub transferred_bytes: f64,
    /// Expected number of guest accesses that wait for a remote page or block.
    pub remote_waits: f64,
    /// Expected share of the guest's accesses during post-copy that wait (0..=1).
    pub remote_wait_share: f64,
    /// Guest work lost over the whole post-copy phase, seconds of full throughput.
    pub postcopy_lost_s: f64,
    /// Start until throughput stays at or above `restored_share` of before, seconds.
    pub restored_s: f64,
    /// Performance restoration agility: work lost from the start until `restored_s`,
    /// downtime included, seconds of full throughput (lower is better).
    pub agility_s: f64,
}

/// Sum from +0 (`Iterator::sum` of nothing is -0, which prints as "-0").
fn total(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, |a, b| a + b)
}

/// A stretch of memory or disk with uniform access: bytes, the unit that moves and waits
/// (page or block), accesses a second to the whole stretch, bytes dirtied a second.
#[derive(Debug, Clone, Copy)]
struct Stretch {
    bytes: f64,
    unit_bytes: f64,
    accesses_per_s: f64,
    dirty_bps: f64,
}

impl Stretch {
    fn scaled(self, share: f64) -> Stretch {
        Stretch {
            bytes: self.bytes * share,
            accesses_per_s: self.accesses_per_s * share,
            dirty_bps: self.dirty_bps * share,
            ..self
        }
    }

    /// Accesses a second to each unit (the Poisson rate `λ`).
    fn unit_rate(&self) -> f64 {
        if self.bytes <= 0.0 {
            return 0.0;
        }
        self.accesses_per_s * self.unit_bytes / self.bytes
    }
}

/// Memory hottest first: the working set, then the untouched rest.
fn memory_stretches(mem: &MemoryProfile, page_bytes: f64) -> Vec<Stretch> {
    let d = mem.dirty_rate_bps();
    let wss = mem.wss_bytes as f64;
    let hot = Stretch {
        bytes: wss,
        unit_bytes: page_bytes,
        accesses_per_s: d / page_bytes,
        dirty_bps: d,
    };
    let cold = Stretch {
        bytes: (mem.memory_bytes - mem.wss_bytes) as f64,
        unit_bytes: page_bytes,
        accesses_per_s: 0.0,
        dirty_bps: 0.0,
    };
    vec![hot, cold]
}

/// The disk's regions hottest first (accesses per byte; among equals, the less written: the
/// order [`DiskProfile::hottest_regions`] gives).
fn disk_stretches(disk: &DiskProfile) -> Vec<Stretch> {
    let rates = disk.region_rates();
    let n = rates.len();
    let block = disk.block_bytes as f64;
    disk.hottest_regions()
        .into_iter()
        .map(|i| Stretch {
            bytes: disk.virtual_bytes as f64 / n as f64,
            unit_bytes: block,
            accesses_per_s: rates[i].0 / block,
            dirty_bps: rates[i].1,
        })
        .collect()
}

/// Splits `layer` (hottest first) into the hottest `fraction` of its bytes and the rest.
fn split(layer: &[Stretch], fraction: f64) -> (Vec<Stretch>, Vec<Stretch>) {
    let mut left = fraction * total(layer.iter().map(|s| s.bytes));
    let (mut ahead, mut remote) = (Vec::new(), Vec::new());
    for s in layer {
        let take = left.clamp(0.0, s.bytes);
        left -= take;
        if s.bytes <= 0.0 {
            continue;
        }
        let share = take / s.bytes;
        if share > 0.0 {
            ahead.push(s.scaled(share));
        }
        if share < 1.0 {
            remote.push(s.scaled(1.0 - share));
        }
    }
    (ahead, remote)
}

/// What the ahead rounds did.
struct Ahead {
    rounds: u32,
    seconds: f64,
    bytes: f64,
    /// Dirty bytes left for the freeze.
    frozen: f64,
    converged: bool,
}

fn ahead_rounds(ahead: &[Stretch], bw: f64, params: &FractionParams) -> Ahead {
    let mut a = Ahead {
        rounds: 0,
        seconds: 0.0,
        bytes: 0.0,
        frozen: 0.0,
        converged: true,
    };
    let mut pending = total(ahead.iter().map(|s| s.bytes));
    if pending <= 0.0 {
        return a;
    }
    // Each stretch re-dirties at its own rate, at most all of its bytes a round.
    let dirtied = |t: f64| total(ahead.iter().map(|s| (s.dirty_bps * t).min(s.bytes)));
    let threshold = bw * params.cost.downtime_limit_s;
    loop {
        let t = pending / bw;
        a.seconds += t;
        a.bytes += pending;
        a.rounds += 1;
        pending = dirtied(t);
        if pending <= threshold {
            break;
        }
        if a.rounds >= params.cost.max_rounds {
            a.converged = false;
            break;
        }
    }
    a.frozen = pending;
    a
}

/// `g(x) = 1 - (1 - e^{-x})/x`: the chance that a unit touched at Poisson rate `λ` is first
/// touched before its arrival, uniform over `[0, T]`, with `x = λT`.
fn touched_before_arrival(x: f64) -> f64 {
    if x < 1e-6 {
        // Series: x/2 - x²/6; avoids the cancellation of the closed form near 0.
        return (x / 2.0 - x * x / 6.0).max(0.0);
    }
    1.0 - (1.0 - (-x).exp()) / x
}

/// Post-copy of the `remote` stretches over `T = R/B`.
struct Postcopy<'a> {
    remote: &'a [Stretch],
    seconds: f64,
    rtt_s: f64,
    bw: f64,
}

impl Postcopy<'_> {
    /// Seconds of waiting per second at `t` into the phase (`σ(t)`).
    fn stall_density(&self, t: f64) -> f64 {
        if t >= self.seconds {
            return 0.0;
        }
        let still_remote = 1.0 - t / self.seconds;
        total(self.remote.iter().map(|s| {
            let lambda = s.unit_rate();
            let units = s.bytes / s.unit_bytes;
            let wait = self.rtt_s + s.unit_bytes / self.bw;
            units * lambda * (-lambda * t).exp() * still_remote * wait
        }))
    }

    fn expected_waits(&self) -> f64 {
        total(self.remote.iter().map(|s| {
            (s.bytes / s.unit_bytes) * touched_before_arrival(s.unit_rate() * self.seconds)
        }))
    }

    /// `∫₀^until (1 - θ)`, midpoint rule.
    fn lost_until(&self, until: f64) -> f64 {
        if until <= 0.0 {
            return 0.0;
        }
        let h = until / INTEGRATION_STEPS as f64;
        total((0..INTEGRATION_STEPS).map(|i| {
            let sigma = self.stall_density((i as f64 + 0.5) * h);
            sigma / (1.0 + sigma) * h
        }))
    }

    /// First instant after which `θ ≥ restored_share`, i.e. `σ ≤ (1 - share)/share`.
    fn restored_at(&self, restored_share: f64) -> f64 {
        let limit = (1.0 - restored_share) / restored_share;
        if self.stall_density(0.0) <= limit {
            return 0.0;
        }
        let (mut lo, mut hi) = (0.0, self.seconds);
        for _ in 0..BISECTION_STEPS {
            let mid = 0.5 * (lo + hi);
            if self.stall_density(mid) <= limit {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }
}

fn check_fraction(field: &str, f: f64) -> Result<(), WanError> {
    if (0.0..=1.0).contains(&f) {
        Ok(())
    } else {
        Err(WanError::Invalid {
            field: field.into(),
            expected: "a fraction from 0 to 1",
            got: f.to_string(),
        })
    }
}

/// Forecast for copying the hottest `memory_fraction` of memory and `storage_fraction` of the
/// disk ahead over `link`. Errors: an invalid profile, link or params (see their `validate`),
/// or a fraction outside `0..=1` (`memory_fraction`, `storage_fraction`).
pub fn predict_fractions(
    vm: &WanProfile,
    link: &WanLink,
    params: &FractionParams,
    memory_fraction: f64,
    storage_fraction: f64,
) -> Result<FractionPrediction, WanError> {
    vm.validate()?;
    link.validate()?;
    params.validate()?;
    check_fraction("memory_fraction", memory_fraction)?;
    check_fraction("storage_fraction", storage_fraction)?;
    Ok(forecast(
        vm,
        link,
        params,
        memory_fraction,
        storage_fraction,
    ))
}

/// Work lost to dirty tracking over the ahead phase, seconds: `tracking_overhead` at write
/// intensity `min(1, writes/B)`, counting the writes of the layers with something ahead (only
/// those are tracked).
fn tracking_lost(
    vm: &WanProfile,
    params: &FractionParams,
    bw: f64,
    ahead_s: f64,
    memory_ahead: bool,
    disk_ahead: bool,
) -> f64 {
    let mut writes = 0.0;
    if memory_ahead {
        writes += vm.memory.dirty_rate_bps();
    }
    if disk_ahead {
        writes += vm.disk.write_rate_bps;
    }
    ahead_s * params.cost.tracking_overhead * (writes / bw).clamp(0.0, 1.0)
}

/// [`predict_fractions`] on inputs already checked.
pub(super) fn forecast(
    vm: &WanProfile,
    link: &WanLink,
    params: &FractionParams,
    m: f64,
    s: f64,
) -> FractionPrediction {
    let bw = link.bandwidth_bps();
    let memory = memory_stretches(&vm.memory, params.cost.page_bytes as f64);
    let disk = disk_stretches(&vm.disk);
    let (mem_ahead, mem_remote) = split(&memory, m);
    let (disk_ahead, disk_remote) = split(&disk, s);
    let ahead_set: Vec<Stretch> = mem_ahead.iter().chain(&disk_ahead).copied().collect();
    let remote: Vec<Stretch> = mem_remote.iter().chain(&disk_remote).copied().collect();

    let ahead = ahead_rounds(&ahead_set, bw, params);
    let ahead_lost = tracking_lost(
        vm,
        params,
        bw,
        ahead.seconds,
        !mem_ahead.is_empty(),
        !disk_ahead.is_empty(),
    );
    let downtime = params.cost.postcopy_switchover_s + link.rtt_s + ahead.frozen / bw;

    let remote_bytes = total(remote.iter().map(|s| s.bytes));
    let post = Postcopy {
        remote: &remote,
        seconds: remote_bytes / bw,
        rtt_s: link.rtt_s,
        bw,
    };
    let waits = post.expected_waits();
    let accesses = total(memory.iter().chain(&disk).map(|s| s.accesses_per_s)) * post.seconds;
    let restored_after = post.restored_at(params.restored_share);
    let switch_s = ahead.seconds + downtime;
    FractionPrediction {
        memory_fraction: m,
        storage_fraction: s,
        converges: ahead.converged,
        rounds: ahead.rounds,
        ahead_s: ahead.seconds,
        downtime_s: downtime,
        postcopy_s: post.seconds,
        total_s: switch_s + post.seconds,
        transferred_bytes: ahead.bytes + ahead.frozen + remote_bytes,
        remote_waits: waits,
        remote_wait_share: if accesses > 0.0 {
            (waits / accesses).min(1.0)
        } else {
            0.0
        },
        postcopy_lost_s: post.lost_until(post.seconds),
        restored_s: switch_s + restored_after,
        agility_s: ahead_lost + downtime + post.lost_until(restored_after),
    }
}
