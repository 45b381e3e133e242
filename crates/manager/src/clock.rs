//! The manager's clock, injected: the control loop reads the time and sleeps only through
//! [`Clock`], so tests (and a simulator-backed fleet) run it in virtual time.
//!
//! Manager time is seconds on a line that never goes back, stored with every record: plan
//! creation, cooldowns and history all compare times from before and after a restart.
//! [`WallClock`] is Unix time read once at start and advanced by the monotonic clock (a wall
//! clock stepped by NTP does not move it), never below the time last stored.
//! [`VirtualClock`] moves only when told to, or when the loop sleeps.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A future the clock returns from [`Clock::sleep_until`].
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Where the loop gets the time from.
pub trait Clock: Send + Sync {
    /// Manager time now, s. Never less than a value returned before.
    fn now_s(&self) -> f64;

    /// Returns once manager time reaches `at_s` (at once when it already has).
    fn sleep_until(&self, at_s: f64) -> Sleep<'_>;
}

/// Real time: Unix seconds at start, advanced by the monotonic clock.
#[derive(Debug, Clone)]
pub struct WallClock {
    origin_s: f64,
    origin: Instant,
}

impl WallClock {
    /// Starts at the Unix time now.
    pub fn new() -> WallClock {
        WallClock::not_before(0.0)
    }

    /// Starts at the Unix time now, or at `floor_s` if that is later (the time of the last
    /// stored step: a wall clock set back while the manager was down must not make time run
    /// backwards in its records).
    pub fn not_before(floor_s: f64) -> WallClock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let floor = if floor_s.is_finite() { floor_s } else { 0.0 };
        WallClock {
            origin_s: unix.max(floor),
            origin: Instant::now(),
        }
    }
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::new()
    }
}

impl Clock for WallClock {
    fn now_s(&self) -> f64 {
        self.origin_s + self.origin.elapsed().as_secs_f64()
    }

    fn sleep_until(&self, at_s: f64) -> Sleep<'_> {
        let wait = at_s - self.now_s();
        let wait = if wait.is_finite() && wait > 0.0 {
            Duration::from_secs_f64(wait)
        } else {
            Duration::ZERO
        };
        Box::pin(tokio::time::sleep(wait))
    }
}

/// Virtual time for tests: it moves when a test sets it, and a sleep jumps to its end at
/// once (after yielding, so other tasks run). A test driving the loop look by look never
/// waits for real time, and nothing in it depends on how fast the machine is.
#[derive(Debug, Default)]
pub struct VirtualClock {
    now_s: Mutex<f64>,
}

impl VirtualClock {
    /// A clock at `start_s`.
    pub fn at(start_s: f64) -> VirtualClock {
        VirtualClock {
            now_s: Mutex::new(start_s),
        }
    }

    /// Moves time to `at_s` (never back).
    pub fn set(&self, at_s: f64) {
        let mut now = self.lock();
        if at_s > *now {
            *now = at_s;
        }
    }

    /// Moves time on by `by_s`.
    pub fn advance(&self, by_s: f64) {
        let mut now = self.lock();
        if by_s > 0.0 {
            *now += by_s;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, f64> {
        // A plain number: a panicking holder cannot leave it half-written.
        self.now_s
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clock for VirtualClock {
    fn now_s(&self) -> f64 {
        *self.lock()
    }

    fn sleep_until(&self, at_s: f64) -> Sleep<'_> {
        self.set(at_s);
        Box::pin(tokio::task::yield_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_never_starts_before_the_floor() {
        let far = 4.0e9; // 2096
        let c = WallClock::not_before(far);
        assert!(c.now_s() >= far);
        let now = WallClock::new().now_s();
        assert!(now > 1.6e9, "Unix time: {now}");
        assert!(WallClock::not_before(f64::NAN).now_s() > 1.6e9);
    }

    #[tokio::test]
    async fn virtual_time_moves_only_forward_and_sleeps_jump() {
        let c = VirtualClock::at(10.0);
        c.set(5.0);
        assert_eq!(c.now_s(), 10.0);
        c.advance(2.5);
        assert_eq!(c.now_s(), 12.5);
        c.sleep_until(20.0).await;
        assert_eq!(c.now_s(), 20.0);
        c.sleep_until(1.0).await;
        assert_eq!(c.now_s(), 20.0);
    }
}
