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
    /// Share of memory copied ahead (0..=1): all of it in pre-copy rounds at 1, else one pass
    /// in address order (QEMU's hybrid), what it dirties again pulled after the switch.
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
/// (page or block), accesses a second to the whole stretch, bytes dirtied a second, and the
/// rate it is copied at (bytes/s: the link's for memory and the hybrid's push, the block
/// job's for a mirror or a stream, [`super::BlockCopy`]).
#[derive(Debug, Clone, Copy)]
struct Stretch {
    bytes: f64,
    unit_bytes: f64,
    accesses_per_s: f64,
    dirty_bps: f64,
    copy_bps: f64,
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

    fn copied_at(self, copy_bps: f64) -> Stretch {
        Stretch { copy_bps, ..self }
    }

    /// Accesses a second to each unit (the Poisson rate `λ`).
    fn unit_rate(&self) -> f64 {
        if self.bytes <= 0.0 {
            return 0.0;
        }
        self.accesses_per_s * self.unit_bytes / self.bytes
    }

    /// Seconds to copy `bytes` of this stretch.
    fn copy_s(&self, bytes: f64) -> f64 {
        bytes / self.copy_bps
    }
}

/// Memory hottest first: the working set, then the untouched rest; copied at the link's rate.
fn memory_stretches(mem: &MemoryProfile, page_bytes: f64, bw: f64) -> Vec<Stretch> {
    let d = mem.dirty_rate_bps();
    let wss = mem.wss_bytes as f64;
    let hot = Stretch {
        bytes: wss,
        unit_bytes: page_bytes,
        accesses_per_s: d / page_bytes,
        dirty_bps: d,
        copy_bps: bw,
    };
    let cold = Stretch {
        bytes: (mem.memory_bytes - mem.wss_bytes) as f64,
        unit_bytes: page_bytes,
        accesses_per_s: 0.0,
        dirty_bps: 0.0,
        copy_bps: bw,
    };
    vec![hot, cold]
}

/// The disk's regions hottest first (accesses per byte; among equals, the less written: the
/// order [`DiskProfile::hottest_regions`] gives); the copy rate is set by the caller.
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
            copy_bps: f64::INFINITY,
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

/// Memory's one partial pass for `0 < m < 1` (QEMU's hybrid: pre-copy in address order until
/// `m` of RAM is sent, then post-copy; see the module doc): the pass's seconds, its bytes, and
/// what stays remote, every stretch's unsent `1 - m` plus the share of its sent `m` dirtied
/// again before the switch, `g(μ·A)` for a page sent uniformly within the pass of `A`
/// seconds, `μ` the stretch's dirty rate per byte.
fn memory_pass(memory: &[Stretch], m: f64) -> (f64, f64, Vec<Stretch>) {
    let bytes = m * total(memory.iter().map(|s| s.bytes));
    let seconds = total(memory.iter().map(|s| s.copy_s(m * s.bytes)));
    let remote = memory
        .iter()
        .filter(|s| s.bytes > 0.0)
        .map(|s| {
            let redirtied = touched_before_arrival(s.dirty_bps / s.bytes * seconds);
            s.scaled((1.0 - m) + m * redirtied)
        })
        .collect();
    (seconds, bytes, remote)
}

/// What the ahead rounds did.
struct Ahead {
    rounds: u32,
    seconds: f64,
    bytes: f64,
    /// Dirty bytes left for the freeze, per ahead stretch.
    frozen: Vec<f64>,
    converged: bool,
}

impl Ahead {
    fn frozen_bytes(&self) -> f64 {
        total(self.frozen.iter().copied())
    }

    /// Seconds the freeze takes to copy what is dirty, each stretch at its own rate.
    fn frozen_s(&self, ahead: &[Stretch]) -> f64 {
        total(ahead.iter().zip(&self.frozen).map(|(s, b)| s.copy_s(*b)))
    }

    /// The ahead sets keep being dirtied for `seconds` more (memory's partial pass after the
    /// disk's rounds), each stretch at most all of itself.
    fn dirtied_for(&mut self, ahead: &[Stretch], seconds: f64) {
        for (f, s) in self.frozen.iter_mut().zip(ahead) {
            *f = (*f + s.dirty_bps * seconds).min(s.bytes);
        }
    }
}

fn ahead_rounds(ahead: &[Stretch], params: &FractionParams) -> Ahead {
    let mut pending: Vec<f64> = ahead.iter().map(|s| s.bytes).collect();
    let mut a = Ahead {
        rounds: 0,
        seconds: 0.0,
        bytes: 0.0,
        frozen: vec![0.0; ahead.len()],
        converged: true,
    };
    if total(pending.iter().copied()) <= 0.0 {
        return a;
    }
    let copy_s = |p: &[f64]| total(ahead.iter().zip(p).map(|(s, b)| s.copy_s(*b)));
    loop {
        let t = copy_s(&pending);
        a.seconds += t;
        a.bytes += total(pending.iter().copied());
        a.rounds += 1;
        // Each stretch re-dirties at its own rate, at most all of its bytes a round.
        pending = ahead
            .iter()
            .map(|s| (s.dirty_bps * t).min(s.bytes))
            .collect();
        if copy_s(&pending) <= params.cost.downtime_limit_s {
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

/// A remote stretch and its layer's pull: its units arrive uniformly in `[0, arrive_s]`.
#[derive(Debug, Clone, Copy)]
struct Remote {
    stretch: Stretch,
    arrive_s: f64,
}

/// How long each layer's pull lasts when both run at once over one link of `bw` bytes/s:
/// `(T_mem, T_disk)` for `mem` and `disk` remote bytes, the stream at most `stream_bps`.
/// While both run the stream takes `min(stream_bps, bw/2)` (at most its fair share) and
/// memory the rest; the one left then goes at its own rate (memory `bw`, the stream
/// `stream_bps`). Either is 0 when its layer has nothing remote.
fn pull_times(mem: f64, disk: f64, bw: f64, stream_bps: f64) -> (f64, f64) {
    if mem <= 0.0 || disk <= 0.0 {
        return (mem.max(0.0) / bw, disk.max(0.0) / stream_bps);
    }
    let shared = stream_bps.min(bw / 2.0);
    let (mem_rate, disk_rate) = (bw - shared, shared);
    let (mem_done, disk_done) = (mem / mem_rate, disk / disk_rate);
    if mem_done <= disk_done {
        (
            mem_done,
            mem_done + (disk - disk_rate * mem_done) / stream_bps,
        )
    } else {
        (disk_done + (mem - mem_rate * disk_done) / bw, disk_done)
    }
}

/// The remote stretches of both layers with their arrival spans ([`pull_times`]).
fn pulls(memory: &[Stretch], disk: &[Stretch], bw: f64, stream_bps: f64) -> Vec<Remote> {
    let bytes = |l: &[Stretch]| total(l.iter().map(|s| s.bytes));
    let (t_mem, t_disk) = pull_times(bytes(memory), bytes(disk), bw, stream_bps);
    let with = |l: &[Stretch], arrive_s: f64| -> Vec<Remote> {
        l.iter()
            .filter(|s| s.bytes > 0.0)
            .map(|s| Remote {
                stretch: *s,
                arrive_s,
            })
            .collect()
    };
    let mut all = with(memory, t_mem);
    all.extend(with(disk, t_disk));
    all
}

/// Post-copy of the `remote` stretches, until the slowest pull ends.
struct Postcopy<'a> {
    remote: &'a [Remote],
    seconds: f64,
    rtt_s: f64,
    bw: f64,
}

impl<'a> Postcopy<'a> {
    fn new(remote: &'a [Remote], rtt_s: f64, bw: f64) -> Self {
        let seconds = remote.iter().map(|r| r.arrive_s).fold(0.0, f64::max);
        Postcopy {
            remote,
            seconds,
            rtt_s,
            bw,
        }
    }

    /// Seconds of waiting per second at `t` into the phase (`σ(t)`).
    fn stall_density(&self, t: f64) -> f64 {
        total(self.remote.iter().filter(|r| t < r.arrive_s).map(|r| {
            let s = &r.stretch;
            let lambda = s.unit_rate();
            let units = s.bytes / s.unit_bytes;
            let wait = self.rtt_s + s.unit_bytes / self.bw;
            units * lambda * (-lambda * t).exp() * (1.0 - t / r.arrive_s) * wait
        }))
    }

    fn expected_waits(&self) -> f64 {
        total(self.remote.iter().map(|r| {
            let s = &r.stretch;
            (s.bytes / s.unit_bytes) * touched_before_arrival(s.unit_rate() * r.arrive_s)
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

/// The layers split for `(m, s)`: what goes ahead in rounds, memory's partial pass (`m < 1`)
/// and what is pulled after the switch, each with its copy rate.
struct Layers {
    memory: Vec<Stretch>,
    disk: Vec<Stretch>,
    /// Copied ahead in rounds: all of memory when `m = 1`, the disk's hottest `s`.
    rounds: Vec<Stretch>,
    /// Memory's partial pass: seconds, bytes (0 unless `0 < m < 1`).
    pass_s: f64,
    pass_bytes: f64,
    memory_remote: Vec<Stretch>,
    disk_remote: Vec<Stretch>,
}

fn layers(vm: &WanProfile, link: &WanLink, params: &FractionParams, m: f64, s: f64) -> Layers {
    let bw = link.bandwidth_bps();
    let copy = &params.block_copy;
    let memory = memory_stretches(&vm.memory, params.cost.page_bytes as f64, bw);
    let disk = disk_stretches(&vm.disk);
    // All of the disk ahead is the storage pre-copy's mirror; part of it, the hybrid's push.
    let ahead_bps = if s >= 1.0 { copy.mirror_bps(link) } else { bw };
    let (disk_ahead, disk_remote) = split(&disk, s);
    let mut rounds: Vec<Stretch> = disk_ahead.iter().map(|d| d.copied_at(ahead_bps)).collect();
    let disk_remote = disk_remote
        .iter()
        .map(|d| d.copied_at(copy.stream_bps(link)))
        .collect();
    let (pass_s, pass_bytes, memory_remote) = if m >= 1.0 {
        rounds.extend(memory.iter().copied());
        (0.0, 0.0, Vec::new())
    } else {
        memory_pass(&memory, m)
    };
    Layers {
        memory,
        disk,
        rounds,
        pass_s,
        pass_bytes,
        memory_remote,
        disk_remote,
    }
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
    let l = layers(vm, link, params, m, s);
    let mut ahead = ahead_rounds(&l.rounds, params);
    // The disk's rounds come first; it is dirtied on through memory's pass, as far as the freeze.
    ahead.dirtied_for(&l.rounds, l.pass_s);
    let ahead_s = ahead.seconds + l.pass_s;
    let ahead_lost = tracking_lost(vm, params, bw, ahead_s, m > 0.0, s > 0.0);
    let downtime = params.cost.postcopy_switchover_s + link.rtt_s + ahead.frozen_s(&l.rounds);

    let remote = pulls(
        &l.memory_remote,
        &l.disk_remote,
        bw,
        params.block_copy.stream_bps(link),
    );
    let remote_bytes = total(remote.iter().map(|r| r.stretch.bytes));
    let post = Postcopy::new(&remote, link.rtt_s, bw);
    let waits = post.expected_waits();
    let accesses = total(l.memory.iter().chain(&l.disk).map(|s| s.accesses_per_s)) * post.seconds;
    let restored_after = post.restored_at(params.restored_share);
    let switch_s = ahead_s + downtime;
    FractionPrediction {
        memory_fraction: m,
        storage_fraction: s,
        converges: ahead.converged,
        rounds: ahead.rounds + u32::from(l.pass_s > 0.0),
        ahead_s,
        downtime_s: downtime,
        postcopy_s: post.seconds,
        total_s: switch_s + post.seconds,
        transferred_bytes: ahead.bytes + l.pass_bytes + ahead.frozen_bytes() + remote_bytes,
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
