//! cpu: burns a share of one vCPU in 100 ms periods and counts the work done.
//!
//! Work done per second is the guest-visible throughput; under contention on the host (or while
//! a post-copy migration faults pages in) it drops even though demand stays the same.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::memtouch::splitmix64;
use crate::reporter::Counters;

pub const PERIOD: Duration = Duration::from_millis(100);
/// Mixing rounds per op: small enough that the clock is checked often, big enough that the clock
/// read does not dominate.
const ROUNDS_PER_OP: u64 = 512;

/// One unit of work; the result feeds the next so the compiler cannot skip it.
pub fn work_unit(state: u64) -> u64 {
    let mut x = state;
    for _ in 0..ROUNDS_PER_OP {
        x = splitmix64(x);
    }
    std::hint::black_box(x)
}

/// How long to stay busy in each period.
pub fn busy_share(demand_pct: u8, period: Duration) -> Duration {
    period * u32::from(demand_pct.min(100)) / 100
}

pub fn run(demand_pct: u8, counters: &Counters, stop: &AtomicBool) {
    let busy = busy_share(demand_pct, PERIOD);
    let mut ops = 0u64;
    let mut state = 1u64;
    let mut period_start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        while period_start.elapsed() < busy {
            state = work_unit(state);
            ops += 1;
        }
        counters.publish(ops, 0);
        // Sleep to the end of this period; if we overran (preempted), start afresh from now
        // rather than trying to catch up, which would exceed the demand.
        let end = period_start + PERIOD;
        let now = Instant::now();
        if end > now {
            std::thread::sleep(end - now);
            period_start = end;
        } else {
            period_start = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares() {
        assert_eq!(busy_share(0, PERIOD), Duration::ZERO);
        assert_eq!(busy_share(50, PERIOD), Duration::from_millis(50));
        assert_eq!(busy_share(100, PERIOD), PERIOD);
        assert_eq!(busy_share(200, PERIOD), PERIOD);
    }

    #[test]
    fn work_is_deterministic() {
        assert_eq!(work_unit(1), work_unit(1));
        assert_ne!(work_unit(1), work_unit(2));
    }

    #[test]
    fn more_demand_more_work() {
        let measure = |pct| {
            let counters = Counters::default();
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| run(pct, &counters, &stop));
                std::thread::sleep(Duration::from_millis(350));
                stop.store(true, Ordering::Relaxed);
            });
            counters.snapshot().0
        };
        let (low, high) = (measure(20), measure(80));
        assert!(low > 0);
        assert!(high > low * 2, "20%: {low} ops, 80%: {high} ops");
        assert_eq!(measure(0), 0);
    }
}
