//! The pure heart of the WAN delay line: a timed packet queue per direction and the link's
//! cut/restore state machine. No I/O and no clock: every call takes `now`, the time since the
//! line started, so tests drive time by hand. [`crate::delay_io`] feeds it packets read from
//! TUN devices and writes out what [`DelayLine::pop_due`] releases.
//!
//! # Queue
//!
//! A packet that arrives at `t` is due at `t + delay + j`, where `j` is 0 without jitter and
//! uniform in `[-jitter, +jitter]` (from a seeded generator, so a run is repeatable) with it.
//! Packets leave in order of due time, ties in order of arrival: without jitter that is
//! arrival order (due times only grow), with jitter packets may overtake each other as on a
//! real path with several routes. Each direction holds at most `queue_bytes` bytes: a packet
//! that would exceed it is dropped and counted, like a router's full queue.
//!
//! # Link lifecycle
//!
//! ```text
//!   Up --cut--> Cut --restore--> Up
//! ```
//! `cut` on a cut link is [`LinkError::AlreadyCut`], `restore` on an up link is
//! [`LinkError::NotCut`]. Cutting drops what is in flight (a pulled cable loses it) and every
//! packet that arrives while cut, each counted.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_core::dc::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// One direction of the line: A to B is 0, B to A is 1.
pub const DIRECTIONS: usize = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("the link is already cut")]
    AlreadyCut,
    #[error("the link is not cut")]
    NotCut,
    #[error("direction {0} does not exist (0 or 1)")]
    Direction(usize),
}

/// Whether the link carries packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Up,
    Cut,
}

/// The delay applied to every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelaySpec {
    /// One-way delay, µs.
    pub delay_us: u64,
    /// Jitter, µs: each packet's delay is uniform in `delay ± jitter` (jitter <= delay).
    pub jitter_us: u64,
    /// Bytes each direction may hold before it drops.
    pub queue_bytes: u64,
    /// Seed of the jitter generator.
    pub seed: u64,
}

/// What one direction did, in totals since the line started (diff two readings for a window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirStats {
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    /// Dropped because the queue was full.
    pub dropped_full: u64,
    /// Dropped because the link was cut (in flight when cut, or arriving while cut).
    pub dropped_cut: u64,
    /// Sum of the delay each forwarded packet actually got (arrival to written), µs.
    pub delay_sum_us: u64,
    /// Largest such delay, µs.
    pub delay_max_us: u64,
    /// Largest lateness (written minus due), µs: how far the line fell behind its schedule.
    pub late_max_us: u64,
    /// Bytes queued now.
    pub queued_bytes: u64,
    /// Released packets the other end refused (counted, not retried: a link loses them).
    pub write_errors: u64,
}

impl DirStats {
    /// Mean delay of the packets forwarded, µs (None before the first).
    pub fn mean_delay_us(&self) -> Option<f64> {
        (self.forwarded_packets > 0)
            .then(|| self.delay_sum_us as f64 / self.forwarded_packets as f64)
    }
}

/// A packet waiting in the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub arrival: Duration,
    pub due: Duration,
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
struct Direction {
    /// Keyed by (due, arrival sequence): release order.
    queue: BTreeMap<(Duration, u64), Queued>,
    stats: DirStats,
}

/// Both directions of one link and its state.
#[derive(Debug)]
pub struct DelayLine {
    spec: DelaySpec,
    dirs: [Direction; DIRECTIONS],
    state: LinkState,
    rng: SplitMix64,
    seq: u64,
}

impl DelayLine {
    pub fn new(spec: DelaySpec) -> Self {
        let dir = || Direction {
            queue: BTreeMap::new(),
            stats: DirStats::default(),
        };
        Self {
            spec,
            dirs: [dir(), dir()],
            state: LinkState::Up,
            rng: SplitMix64::new(spec.seed),
            seq: 0,
        }
    }

    pub fn state(&self) -> LinkState {
        self.state
    }

    pub fn spec(&self) -> DelaySpec {
        self.spec
    }

    /// The delay the next packet gets: `delay` plus uniform jitter in `[-jitter, +jitter]`.
    fn draw_delay(&mut self) -> Duration {
        let (d, j) = (
            self.spec.delay_us,
            self.spec.jitter_us.min(self.spec.delay_us),
        );
        if j == 0 {
            return Duration::from_micros(d);
        }
        let offset = self.rng.below((2 * j + 1) as usize) as u64;
        Duration::from_micros(d - j + offset)
    }

    fn dir_mut(&mut self, dir: usize) -> Result<&mut Direction, LinkError> {
        self.dirs.get_mut(dir).ok_or(LinkError::Direction(dir))
    }

    /// Takes a packet that arrived at `now` in direction `dir`. Returns false if it was
    /// dropped (queue full or link cut; counted either way).
    pub fn push(&mut self, dir: usize, now: Duration, bytes: Vec<u8>) -> Result<bool, LinkError> {
        let cut = self.state == LinkState::Cut;
        let limit = self.spec.queue_bytes;
        let delay = self.draw_delay();
        self.seq += 1;
        let seq = self.seq;
        let d = self.dir_mut(dir)?;
        if cut {
            d.stats.dropped_cut += 1;
            return Ok(false);
        }
        let len = bytes.len() as u64;
        if d.stats.queued_bytes + len > limit {
            d.stats.dropped_full += 1;
            return Ok(false);
        }
        let due = now + delay;
        d.stats.queued_bytes += len;
        d.queue.insert(
            (due, seq),
            Queued {
                arrival: now,
                due,
                bytes,
            },
        );
        Ok(true)
    }

    /// When the next packet of `dir` is due (None if its queue is empty).
    pub fn next_due(&self, dir: usize) -> Option<Duration> {
        self.dirs
            .get(dir)
            .and_then(|d| d.queue.keys().next().map(|k| k.0))
    }

    /// Removes and returns every packet of `dir` due at or before `now`, in release order.
    pub fn pop_due(&mut self, dir: usize, now: Duration) -> Result<Vec<Queued>, LinkError> {
        let d = self.dir_mut(dir)?;
        let mut out = Vec::new();
        while let Some(entry) = d.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let q = entry.remove();
            d.stats.queued_bytes -= q.bytes.len() as u64;
            out.push(q);
        }
        Ok(out)
    }

    /// Records that a released packet was written at `sent`.
    pub fn record_sent(&mut self, dir: usize, q: &Queued, sent: Duration) -> Result<(), LinkError> {
        let d = self.dir_mut(dir)?;
        let s = &mut d.stats;
        let delay = sent.saturating_sub(q.arrival).as_micros() as u64;
        let late = sent.saturating_sub(q.due).as_micros() as u64;
        s.forwarded_packets += 1;
        s.forwarded_bytes += q.bytes.len() as u64;
        s.delay_sum_us += delay;
        s.delay_max_us = s.delay_max_us.max(delay);
        s.late_max_us = s.late_max_us.max(late);
        Ok(())
    }

    /// Records that a released packet could not be written.
    pub fn record_write_error(&mut self, dir: usize) -> Result<(), LinkError> {
        self.dir_mut(dir)?.stats.write_errors += 1;
        Ok(())
    }

    /// Up to Cut: everything in flight is lost (and counted).
    pub fn cut(&mut self) -> Result<(), LinkError> {
        if self.state == LinkState::Cut {
            return Err(LinkError::AlreadyCut);
        }
        self.state = LinkState::Cut;
        for d in &mut self.dirs {
            d.stats.dropped_cut += d.queue.len() as u64;
            d.stats.queued_bytes = 0;
            d.queue.clear();
        }
        Ok(())
    }

    /// Cut back to Up.
    pub fn restore(&mut self) -> Result<(), LinkError> {
        if self.state == LinkState::Up {
            return Err(LinkError::NotCut);
        }
        self.state = LinkState::Up;
        Ok(())
    }

    pub fn stats(&self) -> [DirStats; DIRECTIONS] {
        [self.dirs[0].stats, self.dirs[1].stats]
    }
}

#[cfg(test)]
#[path = "delay_tests.rs"]
mod tests;
