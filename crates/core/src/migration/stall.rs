//! The post-copy progress watchdog.
//!
//! Post-copy cannot be cancelled (the guest already runs on the destination and each side holds
//! part of its memory), so a post-copy over a dead or starved link would otherwise wait forever
//! at any bandwidth. A post-copy whose transferred bytes have not grown for `stall_ms` is
//! stalled; the source machine then pauses it (recoverably) and reports it.

/// Watches QEMU's transferred-bytes counter while post-copy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StallWatch {
    stall_ms: u64,
    /// Since when (ms) the counter has stayed at its highest value (bytes); None until the
    /// first observation after arming.
    flat_since: Option<(u64, u64)>,
}

impl StallWatch {
    /// A watch that calls a post-copy stalled after `stall_ms` ms without a transferred byte.
    pub fn new(stall_ms: u64) -> Self {
        StallWatch {
            stall_ms,
            flat_since: None,
        }
    }

    /// The stall limit, ms.
    pub fn stall_ms(&self) -> u64 {
        self.stall_ms
    }

    /// Starts a fresh window at the next observation: post-copy has just (re)started, after a
    /// recovery or a pause that did not happen, and time spent before does not count.
    pub fn rearm(&mut self) {
        self.flat_since = None;
    }

    /// Feeds one poll (driver clock ms, QEMU's cumulative transferred bytes); true once the
    /// counter has not grown for the stall limit.
    pub fn observe(&mut self, now_ms: u64, transferred: u64) -> bool {
        match self.flat_since {
            Some((since, best)) if transferred <= best => {
                now_ms.saturating_sub(since) >= self.stall_ms
            }
            _ => {
                self.flat_since = Some((now_ms, transferred));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moving_counter_never_stalls() {
        let mut w = StallWatch::new(1_000);
        for t in 0..100u64 {
            assert!(!w.observe(t * 500, t * 4096));
        }
    }

    #[test]
    fn a_flat_counter_stalls_after_the_limit_from_its_last_growth() {
        let mut w = StallWatch::new(1_000);
        assert!(!w.observe(0, 10));
        assert!(!w.observe(400, 20));
        assert!(!w.observe(1_300, 20));
        assert!(w.observe(1_400, 20));
        // Growth starts a new window.
        assert!(!w.observe(1_500, 21));
        assert!(!w.observe(2_499, 21));
        assert!(w.observe(2_500, 21));
    }

    #[test]
    fn rearming_forgets_the_time_already_spent() {
        let mut w = StallWatch::new(1_000);
        assert!(!w.observe(0, 10));
        w.rearm();
        assert!(!w.observe(900, 10));
        assert!(!w.observe(1_800, 10));
        assert!(w.observe(1_900, 10));
    }
}
