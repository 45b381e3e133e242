//! The `memtouch+disk` workload: the memory and the disk busy at once, on one thread.
//!
//! Each part keeps its own loop ([`memtouch::Turns`], [`disktouch::Turns`]): its working set,
//! pace, speed meter, integrity check, and its own counters (`Counters::parts`). One turn of
//! this loop gives each part what it owes, the disk's first and one block operation at a time
//! ([`DISK_OPS_PER_TURN`]: a block operation waits on the device, a page touch never does),
//! and sleeps only when neither owes anything, until the sooner of the two is due. So the
//! workload stays one thread, as every workload is (the agent's demand model counts one,
//! `WORKLOAD_THREADS`), and its demand is the sum of what its parts ask of that thread
//! ([`combine`]). Each part is paced (the grammar refuses `rate=max`
//! in a mixed spec), so neither starves the other; when together they ask more than the vCPU
//! does, both fall behind and each counts its own lost work (`demanded_ops` beside `ops`).
//!
//! The whole workload's figures (what a single-part workload reports) are the parts' sums:
//! ops done, ops asked for and integrity errors, so the lost-work and integrity checks read
//! as for any workload; the per-part figures say which part lost what.

use std::sync::atomic::AtomicBool;

use crate::disktouch::{self, DiskSet};
use crate::live::Live;
use crate::memtouch::{self, run_turns, WorkingSet};
use crate::reporter::{Counters, Demand};
use crate::spec::Rate;
use crate::speed::SpeedMeter;

/// Block operations the disk part does a turn. One: each holds the thread for the device's
/// latency (under TCG on a loaded 2-core host, tens of ms), and memtouch, which may owe at most
/// 0.1 s of its rate, must catch up between any two. With the disk workload's batch of 16 the
/// memory part of a real guest on a loaded host kept 228 of its 2000 pages/s; with one, 1961.
const DISK_OPS_PER_TURN: u64 = 1;

/// Mixed into the seed of the disk part, so its visits do not mirror the memory part's.
const DISK_SEED: u64 = 0xD15C;

/// What a mixed workload works on: the memory working set and the disk's, each with its own
/// speed meter (a page touch and a block operation run at unrelated speeds).
pub struct Sets {
    pub memory: WorkingSet,
    pub memory_meter: SpeedMeter,
    /// Integrity errors the memory part's calibration found.
    pub memory_errors: u64,
    pub disk: DiskSet,
    pub disk_meter: SpeedMeter,
}

/// Runs both parts until `stop` is set, with the parameters `live` holds, publishing each
/// part's figures into `counters.parts` (memtouch, disk) and their sums into `counters`.
pub fn run(sets: &mut Sets, live: &Live, seed: u64, counters: &Counters, stop: &AtomicBool) {
    let memory = memtouch::Turns::new(live, sets.memory.len() as u64, seed, sets.memory_errors);
    let disk = disktouch::Turns::new(live, sets.disk.len(), seed ^ DISK_SEED)
        .map(|d| d.with_batch(DISK_OPS_PER_TURN));
    let (Some(mut memory), Some(mut disk)) = (memory, disk) else {
        return;
    };
    let [memory_gauges, disk_gauges] = &counters.parts;
    run_turns(stop, || {
        let d = disk.turn(&mut sets.disk, live, &mut sets.disk_meter, disk_gauges);
        let ws = &mut sets.memory;
        let m = memory.turn(ws, live, &mut sets.memory_meter, memory_gauges);
        publish_whole(counters, [memory.rate(), disk.rate()]);
        match (m, d) {
            // Neither owes anything: until the sooner is due.
            (Err(a), Err(b)) => Err(a.min(b)),
            _ => Ok(()),
        }
    });
}

/// Publishes the whole workload's figures from its parts' (paced at `rates`): demand first,
/// then the work done, as every workload does.
fn publish_whole(counters: &Counters, rates: [Rate; 2]) {
    let [m, d] = &counters.parts;
    let demand = combine([(m.demand(), rates[0]), (d.demand(), rates[1])]);
    counters.publish_demand(
        demand.demanded_ops,
        demand.demand_pct,
        demand.full_ops_per_s,
    );
    let ((m_ops, m_errors), (d_ops, d_errors)) = (m.snapshot(), d.snapshot());
    counters.publish(m_ops + d_ops, m_errors + d_errors);
}

/// The whole workload's demand from its parts' (each with the rate it is paced at): the ops
/// asked for add up; the shares of the thread add up (at most 100%); the full speed is the
/// mix's flat out, its ops a second over the thread time they take, `Σ r / Σ (r / full)`,
/// so that `demand_pct` is the mix's rate over it, as for one part. While a part's full speed
/// is not known yet the demand is 100% and the full speed 0 (unknown), as for one part.
pub fn combine(parts: [(Demand, Rate); 2]) -> Demand {
    let demanded_ops = parts.iter().map(|(d, _)| d.demanded_ops).sum();
    if parts.iter().any(|(d, _)| d.full_ops_per_s <= 0.0) {
        return Demand {
            demanded_ops,
            demand_pct: 100.0,
            full_ops_per_s: 0.0,
        };
    }
    let rate = |(d, r): &(Demand, Rate)| match r {
        Rate::PagesPerSec(n) => *n as f64,
        Rate::Max => d.full_ops_per_s,
    };
    let ops: f64 = parts.iter().map(rate).sum();
    // Seconds of the thread a second of the mix takes.
    let busy: f64 = parts.iter().map(|p| rate(p) / p.0.full_ops_per_s).sum();
    Demand {
        demanded_ops,
        demand_pct: (100.0 * busy).min(100.0),
        full_ops_per_s: if busy > 0.0 { ops / busy } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disktouch::tests::TempFile;
    use crate::disktouch::Device;
    use crate::live::Handled;
    use crate::memtouch::tests::{wait_for, StopOnDrop};
    use crate::spec::{parse_workload, DISK_BLOCK_SIZE};
    use std::time::{Duration, Instant};

    fn demand(demanded_ops: u64, demand_pct: f64, full_ops_per_s: f64) -> Demand {
        Demand {
            demanded_ops,
            demand_pct,
            full_ops_per_s,
        }
    }

    #[test]
    fn the_parts_demands_add_up_on_one_thread() {
        // 2000 pages/s of 100,000 (2%) and 200 blocks/s of 1000 (20%): 22% of the thread,
        // 2200 ops/s of a mix that does 10,000 flat out.
        let d = combine([
            (demand(50, 2.0, 100_000.0), Rate::PagesPerSec(2000)),
            (demand(7, 20.0, 1000.0), Rate::PagesPerSec(200)),
        ]);
        assert_eq!(d.demanded_ops, 57);
        assert!((d.demand_pct - 22.0).abs() < 1e-9, "{d:?}");
        assert!((d.full_ops_per_s - 10_000.0).abs() < 1e-6, "{d:?}");
        // More than the thread does: 100%, never more.
        let over = combine([
            (demand(0, 80.0, 1000.0), Rate::PagesPerSec(800)),
            (demand(0, 50.0, 100.0), Rate::PagesPerSec(50)),
        ]);
        assert_eq!(over.demand_pct, 100.0);
        // A part whose speed is not measured yet: assume the worst, as one part does.
        let unknown = combine([
            (demand(1, 2.0, 100_000.0), Rate::PagesPerSec(2000)),
            (demand(2, 100.0, 0.0), Rate::PagesPerSec(200)),
        ]);
        assert_eq!(unknown, demand(3, 100.0, 0.0));
    }

    /// A mixed workload's sets: `pages` pages of memory, `blocks` blocks of a file standing in
    /// for the disk.
    fn sets(file: &TempFile, pages: usize, blocks: u64) -> Sets {
        let mut memory_meter = SpeedMeter::default();
        let mut memory = WorkingSet::new(pages);
        let memory_errors =
            memtouch::calibrate(&mut memory, &mut memory_meter, Duration::from_millis(30));
        let mut disk_meter = SpeedMeter::default();
        let dev = Device::open(&file.0, None).expect("device");
        let disk = DiskSet::new(dev, blocks, &mut disk_meter).expect("disk set");
        Sets {
            memory,
            memory_meter,
            memory_errors,
            disk,
            disk_meter,
        }
    }

    #[test]
    fn both_parts_keep_their_own_pace_on_one_thread() {
        let file = TempFile::new("mixed", 64 * DISK_BLOCK_SIZE);
        let mut s = sets(&file, 64, 64);
        let live = Live::new(
            parse_workload("memtouch:wss=256K,rate=2000+disk:wss=256K,rate=200").unwrap(),
        );
        let counters = Counters::default();
        let stop = AtomicBool::new(false);
        let t0 = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| run(&mut s, &live, 5, &counters, &stop));
            let _stop = StopOnDrop(&stop);
            std::thread::sleep(Duration::from_millis(500));
        });
        let secs = t0.elapsed().as_secs_f64();
        let [m, d] = &counters.parts;
        let ((m_ops, m_err), (d_ops, d_err)) = (m.snapshot(), d.snapshot());
        assert_eq!((m_err, d_err), (0, 0));
        // Each at its own rate (with the backlog cap: never far more, and on a loaded
        // host somewhat less).
        assert!(
            m_ops as f64 <= 2000.0 * secs + 300.0,
            "{m_ops} pages in {secs} s"
        );
        assert!(m_ops >= 300, "{m_ops} pages in {secs} s");
        assert!(
            d_ops as f64 <= 200.0 * secs + 40.0,
            "{d_ops} blocks in {secs} s"
        );
        assert!(d_ops >= 30, "{d_ops} blocks in {secs} s");
        // The whole is the parts' sum, and asked for at least what was done.
        assert_eq!(counters.snapshot(), (m_ops + d_ops, 0));
        let whole = counters.demand();
        assert_eq!(
            whole.demanded_ops,
            m.demand().demanded_ops + d.demand().demanded_ops
        );
        assert!(whole.demanded_ops >= m_ops + d_ops);
        let parts_pct = m.demand().demand_pct + d.demand().demand_pct;
        assert!(
            (whole.demand_pct - parts_pct.min(100.0)).abs() < 1e-6,
            "{whole:?}"
        );
        // Every block and page still verifies afterwards.
        assert!((0..64).all(|i| s.disk.verify(i)));
        assert!((0..64).all(|i| s.memory.touch(i)));
    }

    #[test]
    fn a_switch_changes_each_part_in_place() {
        let file = TempFile::new("mixed-switch", 64 * DISK_BLOCK_SIZE);
        let mut s = sets(&file, 64, 64);
        let live =
            Live::new(parse_workload("memtouch:wss=256K,rate=100+disk:wss=256K,rate=10").unwrap());
        let counters = Counters::default();
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| run(&mut s, &live, 9, &counters, &stop));
            let _stop = StopOnDrop(&stop);
            let [m, d] = &counters.parts;
            wait_for("both parts at work", || {
                m.snapshot().0 >= 5 && d.snapshot().0 >= 1
            });
            // A part's working set may not grow, by that part's rule.
            assert!(matches!(
                live.handle_line("set 1 memtouch:wss=256K,rate=100+disk:wss=512K,rate=10"),
                Handled::Refused(_)
            ));
            // Each part's rate and set change by its own rule.
            let next = "memtouch:wss=64K,rate=5000,pattern=seq+disk:wss=128K,rate=300,read=0";
            assert_eq!(live.handle_line(&format!("set 2 {next}")), Handled::Applied);
            let (m0, d0) = (m.snapshot().0, d.snapshot().0);
            // At the old rates this would take 30 s.
            wait_for("the new rates", || {
                m.snapshot().0 >= m0 + 3000 && d.snapshot().0 >= d0 + 300
            });
        });
        assert_eq!(counters.snapshot().1, 0, "no integrity errors");
        assert!((0..64).all(|i| s.disk.verify(i)));
        assert!((0..64).all(|i| s.memory.touch(i)));
    }
}
