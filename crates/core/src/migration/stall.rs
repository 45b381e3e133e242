//! The post-copy progress watchdog.
//!
//! Post-copy cannot be cancelled (the guest already runs on the destination and each side holds
//! part of its memory), so a post-copy over a dead or starved link would otherwise wait forever
//! at any bandwidth. A post-copy whose transferred bytes have not grown for `stall_ms` is
//! stalled; the source machine then pauses it (recoverably) and reports it.
//!
//! A post-copy with nothing left to send (`remaining` 0) is never stalled: QEMU has put every
//! page on the wire and is completing (the destination loads the last pages and acknowledges),
//! a phase in which the counter stands still by nature. Pausing it then breaks a migration that
//! has in fact finished (QEMU fails it with "Postcopy migration is paused by the user" while the
//! destination completes). The run's time budget still bounds that phase.
//!
//! Time is the driver's clock when QEMU's answer arrived, so a poll that took long (a slow
//! QMP, a blocked destination look) still counts in full.

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

    /// Feeds one poll (driver clock ms, QEMU's cumulative transferred bytes, its remaining
    /// bytes when reported); true once the counter has not grown for the stall limit while
    /// something was left to send.
    pub fn observe(&mut self, now_ms: u64, transferred: u64, remaining: Option<u64>) -> bool {
        if remaining == Some(0) {
            // Everything sent: completing, not stalled. A window starts afresh should pages
            // become due again.
            self.flat_since = None;
            return false;
        }
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
            assert!(!w.observe(t * 500, t * 4096, Some(1)));
        }
    }

    #[test]
    fn a_flat_counter_stalls_after_the_limit_from_its_last_growth() {
        let mut w = StallWatch::new(1_000);
        assert!(!w.observe(0, 10, Some(1)));
        assert!(!w.observe(400, 20, Some(1)));
        assert!(!w.observe(1_300, 20, Some(1)));
        assert!(w.observe(1_400, 20, Some(1)));
        // Growth starts a new window.
        assert!(!w.observe(1_500, 21, Some(1)));
        assert!(!w.observe(2_499, 21, Some(1)));
        assert!(w.observe(2_500, 21, Some(1)));
    }

    #[test]
    fn rearming_forgets_the_time_already_spent() {
        let mut w = StallWatch::new(1_000);
        assert!(!w.observe(0, 10, Some(1)));
        w.rearm();
        assert!(!w.observe(900, 10, Some(1)));
        assert!(!w.observe(1_800, 10, Some(1)));
        assert!(w.observe(1_900, 10, Some(1)));
    }

    /// The reviewer's run: the link came back, every page went out, and QEMU sat completing
    /// (counter flat, nothing remaining) past the limit. That is no stall.
    #[test]
    fn nothing_left_to_send_is_never_a_stall() {
        let mut w = StallWatch::new(1_000);
        assert!(!w.observe(0, 10, Some(5)));
        assert!(!w.observe(900, 10, Some(0)));
        assert!(!w.observe(5_000, 10, Some(0)));
        // Pages due again (the guest dirtied nothing, but say a figure came back): a fresh
        // window, not the time spent completing.
        assert!(!w.observe(5_100, 10, Some(4)));
        assert!(!w.observe(6_000, 10, Some(4)));
        assert!(w.observe(6_100, 10, Some(4)));
        // No figure at all is not "nothing left".
        let mut w = StallWatch::new(1_000);
        assert!(!w.observe(0, 10, None));
        assert!(w.observe(1_000, 10, None));
    }
}
