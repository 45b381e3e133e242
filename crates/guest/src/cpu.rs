//! cpu: asks for a share of one vCPU's work in 100 ms periods and counts the work done.
//!
//! `demand=P` means P% of the work one vCPU does flat out (its full speed, measured by
//! [`SpeedMeter`]): each period the workload owes that many ops, works until it has done them
//! or the period is over, then sleeps. What it owed is its demand (`demanded_ops` in the
//! reports); what it did is its work (`ops`). Under contention on the host (a CPU cap, a
//! post-copy migration faulting pages in) the work falls short of the demand, and the shortfall
//! is not carried over, as a service at a fixed request rate loses the requests it cannot
//! serve in time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::live::Live;
use crate::memtouch::splitmix64;
use crate::reporter::Counters;
use crate::spec::Workload;
use crate::speed::SpeedMeter;

pub const PERIOD: Duration = Duration::from_millis(100);
/// Mixing rounds per op: small enough that the clock is checked often, big enough that the clock
/// read does not dominate.
const ROUNDS_PER_OP: u64 = 512;
/// Ops between clock reads while calibrating.
const CALIBRATION_BATCH: u64 = 64;

/// One unit of work; the result feeds the next so the compiler cannot skip it.
pub fn work_unit(state: u64) -> u64 {
    let mut x = state;
    for _ in 0..ROUNDS_PER_OP {
        x = splitmix64(x);
    }
    std::hint::black_box(x)
}

/// Ops owed in one `period` for `demand_pct` of a vCPU doing `full_ops_per_s` flat out.
pub fn period_target(demand_pct: u8, full_ops_per_s: f64, period: Duration) -> f64 {
    f64::from(demand_pct.min(100)) / 100.0 * full_ops_per_s * period.as_secs_f64()
}

/// Adds `target` ops to the cumulative `demanded` and returns the whole ops now owed: fractions
/// carry to the next period, so the work done never exceeds the work asked for.
pub fn owe(demanded: &mut f64, target: f64) -> u64 {
    let before = demanded.floor() as u64;
    *demanded += target.max(0.0);
    demanded.floor() as u64 - before
}

/// Works flat out for `duration` so that `meter` knows the full speed.
pub fn calibrate(meter: &mut SpeedMeter, duration: Duration) {
    let start = Instant::now();
    let mut state = 1u64;
    while start.elapsed() < duration {
        let t = Instant::now();
        for _ in 0..CALIBRATION_BATCH {
            state = work_unit(state);
        }
        meter.feed(CALIBRATION_BATCH, t.elapsed());
    }
}

/// The demand `live` asks for now (the last one when it is not a cpu workload, which the
/// switching rule never allows).
fn demand_of(live: &Live, current: u8) -> u8 {
    match live.workload() {
        Workload::Cpu { demand_pct } => demand_pct,
        _ => current,
    }
}

pub fn run(live: &Live, counters: &Counters, meter: &mut SpeedMeter, stop: &AtomicBool) {
    let mut version = live.version();
    let mut demand_pct = demand_of(live, 0);
    let mut demanded = 0.0f64;
    let mut ops = 0u64;
    let mut state = 1u64;
    let mut period_start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if live.version() != version {
            version = live.version();
            demand_pct = demand_of(live, demand_pct);
        }
        let owed = owe(
            &mut demanded,
            period_target(demand_pct, meter.best(), PERIOD),
        );
        let period_end = period_start + PERIOD;
        let busy_from = Instant::now();
        let mut done = 0u64;
        while done < owed && Instant::now() < period_end {
            state = work_unit(state);
            done += 1;
        }
        meter.feed(done, busy_from.elapsed());
        ops += done;
        // Demand first: a reader never sees more work than was asked for.
        counters.publish_demand(demanded as u64, f64::from(demand_pct), meter.best());
        counters.publish(ops, 0);
        // Sleep to the end of this period; if we overran (preempted), start afresh from now
        // rather than trying to catch up, which would exceed the demand.
        let now = Instant::now();
        if period_end > now {
            std::thread::sleep(period_end - now);
            period_start = period_end;
        } else {
            period_start = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_workload;

    #[test]
    fn targets() {
        assert_eq!(period_target(0, 1000.0, PERIOD), 0.0);
        assert_eq!(period_target(50, 1000.0, PERIOD), 50.0);
        assert_eq!(period_target(100, 1000.0, PERIOD), 100.0);
        assert_eq!(period_target(200, 1000.0, PERIOD), 100.0);
        assert_eq!(period_target(90, 0.0, PERIOD), 0.0);
    }

    #[test]
    fn work_is_deterministic() {
        assert_eq!(work_unit(1), work_unit(1));
        assert_ne!(work_unit(1), work_unit(2));
    }

    #[test]
    fn fractions_of_an_op_carry_over() {
        let mut demanded = 0.0;
        let owed: Vec<u64> = (0..4).map(|_| owe(&mut demanded, 2.5)).collect();
        assert_eq!(owed, [2, 3, 2, 3]);
        assert_eq!(demanded, 10.0);
        assert_eq!(owe(&mut demanded, -1.0), 0);
    }

    /// Waits (10 s at most, then fails) until `cond` holds.
    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "not reached in 10 s: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs `live`'s workload on a thread while `body` looks at its counters.
    fn while_running(live: &Live, body: impl FnOnce(&Counters)) {
        let counters = Counters::default();
        let stop = AtomicBool::new(false);
        let mut meter = SpeedMeter::default();
        calibrate(&mut meter, Duration::from_millis(40));
        assert!(meter.best() > 0.0);
        std::thread::scope(|s| {
            let worker = s.spawn(|| run(live, &counters, &mut meter, &stop));
            // Stops the worker even when `body` fails.
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = Stop(&stop);
            body(&counters);
            drop(_stop);
            let _ = worker.join();
        });
    }

    #[test]
    fn the_work_follows_the_demand_and_never_exceeds_it() {
        let idle = Live::new(parse_workload("cpu:demand=0").unwrap());
        while_running(&idle, |c| {
            wait_for("a published demand", || c.demand().full_ops_per_s > 0.0);
            assert_eq!((c.snapshot().0, c.demand().demanded_ops), (0, 0));
        });
        let half = Live::new(parse_workload("cpu:demand=50").unwrap());
        while_running(&half, |c| {
            wait_for("100 ops", || c.snapshot().0 >= 100);
            let d = c.demand();
            assert_eq!(d.demand_pct, 50.0);
            assert!(c.snapshot().0 <= d.demanded_ops, "{d:?}");
        });
    }

    #[test]
    fn a_switch_changes_the_demand_in_place() {
        let live = Live::new(parse_workload("cpu:demand=10").unwrap());
        while_running(&live, |c| {
            wait_for("work at 10%", || c.snapshot().0 > 0);
            assert_eq!(c.demand().demand_pct, 10.0);
            let before = c.demand().demanded_ops;
            assert_eq!(
                live.handle_line("set 1 cpu:demand=90"),
                crate::live::Handled::Applied
            );
            wait_for("the new demand", || c.demand().demand_pct == 90.0);
            wait_for("more demand", || c.demand().demanded_ops > before);
            assert!(c.snapshot().0 <= c.demand().demanded_ops);
        });
    }
}
