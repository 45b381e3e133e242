//! How fast the workload runs when nothing holds it back, and the demand it puts on its vCPU.
//!
//! A workload's demand is only measurable against its full speed: a cpu workload asked for 90%
//! of its vCPU means 90% of the work one vCPU does per second, and a memtouch workload paced at
//! N pages/s asks for N over what it touches flat out. The full speed is the best rate seen
//! over windows of [`WINDOW`] of busy time (a calibration burst at start, then every stretch of
//! work): a window in which the vCPU was not preempted shows the true speed, and a contended
//! host (a CPU cap, a post-copy fault) only lowers the windows it touches, which the maximum
//! ignores. The estimate can therefore only err high by a window's noise, and low when the
//! guest never ran unhindered since it started (or since a memtouch pattern or working-set
//! change, which restarts it because they change the speed).

use std::time::Duration;

/// Busy time per measurement window.
pub const WINDOW: Duration = Duration::from_millis(20);

/// How long the guest runs flat out before its clock starts, to know its full speed.
pub const CALIBRATION: Duration = Duration::from_millis(200);

/// The best ops/s seen over windows of busy time.
#[derive(Debug, Clone, Default)]
pub struct SpeedMeter {
    ops: u64,
    busy: Duration,
    best: f64,
    /// The next window replaces `best` instead of competing with it.
    restart: bool,
}

impl SpeedMeter {
    /// Counts `ops` done in `busy` time spent working (never time spent sleeping).
    pub fn feed(&mut self, ops: u64, busy: Duration) {
        self.ops += ops;
        self.busy += busy;
        if self.busy < WINDOW {
            return;
        }
        let rate = self.ops as f64 / self.busy.as_secs_f64();
        self.best = if self.restart {
            rate
        } else {
            self.best.max(rate)
        };
        self.restart = false;
        self.ops = 0;
        self.busy = Duration::ZERO;
    }

    /// The workload's speed changed (another pattern or working set): the next window sets it.
    pub fn restart(&mut self) {
        self.restart = true;
        self.ops = 0;
        self.busy = Duration::ZERO;
    }

    /// Full speed, ops per second of busy time (0 until a window is complete).
    pub fn best(&self) -> f64 {
        self.best
    }
}

/// Percent of one vCPU a workload paced at `rate` ops/s asks for, at full speed `best` ops/s
/// (100 when the speed is not known yet: assume the worst).
pub fn paced_demand_pct(rate: f64, best: f64) -> f64 {
    if best > 0.0 {
        (100.0 * rate / best).min(100.0)
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn best_window_wins_and_short_stretches_add_up() {
        let mut m = SpeedMeter::default();
        m.feed(500, 10 * MS);
        assert_eq!(m.best(), 0.0, "half a window");
        m.feed(500, 10 * MS);
        assert_eq!(m.best(), 50_000.0);
        // A contended window (preempted half the time) does not lower it.
        m.feed(500, 20 * MS);
        assert_eq!(m.best(), 50_000.0);
        m.feed(1200, 20 * MS);
        assert_eq!(m.best(), 60_000.0);
    }

    #[test]
    fn a_restart_lets_a_slower_speed_replace_the_best() {
        let mut m = SpeedMeter::default();
        m.feed(2000, 20 * MS);
        m.restart();
        m.feed(10, 5 * MS);
        assert_eq!(m.best(), 100_000.0, "kept until a new window completes");
        // The partial window after the restart counts towards the next one.
        m.feed(200, 20 * MS);
        assert_eq!(m.best(), 8_400.0);
        m.feed(100, 20 * MS);
        assert_eq!(m.best(), 8_400.0, "then the maximum again");
    }

    #[test]
    fn paced_demand() {
        assert_eq!(paced_demand_pct(500.0, 1000.0), 50.0);
        assert_eq!(paced_demand_pct(5000.0, 1000.0), 100.0);
        assert_eq!(paced_demand_pct(5.0, 0.0), 100.0);
    }
}
