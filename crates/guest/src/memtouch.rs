//! memtouch: dirties a working set at a chosen rate and verifies every page it revisits.
//!
//! Each page carries stamps (in `CHECK_WORDS` words spread over the page) derived from the page's
//! index and its generation; a separate array holds the generation each page must be at. Before a
//! page is rewritten with the next generation its stamps are checked, so after a migration a page
//! that was lost (zeroed), left stale (older generation) or swapped with another (wrong index)
//! counts as an integrity error.
//!
//! `rate=N` asks for N page touches a second, evenly paced; what it cannot do within
//! [`BACKLOG_S`] is lost, not caught up. `rate=max` asks for as many as one vCPU touches flat out
//! (its full speed). Either way the reports carry the work asked for (`demanded_ops`) beside the
//! work done (`ops`). Rate, pattern and a smaller working set may be switched while it runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::live::Live;
use crate::reporter::{Counters, Gauges};
use crate::spec::{Pattern, Rate, Workload, PAGE_SIZE};
use crate::speed::{paced_demand_pct, SpeedMeter};

const WORDS_PER_PAGE: usize = PAGE_SIZE as usize / 8;
/// Checked words per page: one every 512 bytes, so a partially transferred page is caught too.
const CHECK_WORDS: usize = 8;
const CHECK_STRIDE: usize = WORDS_PER_PAGE / CHECK_WORDS;
/// Ops done between publications of the counters (and clock reads at rate=max).
const BATCH: u64 = 256;

/// Page-aligned so one logical page is exactly one guest page (what migration tracks).
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Page([u64; WORDS_PER_PAGE]);

/// The value word `slot` of page `index` must hold at generation `gen`.
fn stamp(index: u64, gen: u32, slot: usize) -> u64 {
    // Never zero in practice, and different per page, generation and slot, so zeroed, stale and
    // swapped pages all mismatch.
    splitmix64(index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((gen as u64) << 8) ^ slot as u64) | 1
}

pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seeded xorshift64* generator: tiny, fast, good enough to scatter page visits.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // xorshift must not start at zero.
        Rng(splitmix64(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n (multiply-shift, no modulo bias worth mentioning).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

pub struct WorkingSet {
    pages: Vec<Page>,
    expected: Vec<u32>,
}

impl WorkingSet {
    /// Allocates and writes every page, so the working set is resident (and non-zero) from the
    /// start: migration then has to move all of it.
    pub fn new(n_pages: usize) -> Self {
        let mut pages = Vec::with_capacity(n_pages);
        for index in 0..n_pages {
            let mut page = Page([0; WORDS_PER_PAGE]);
            // Non-zero filler (a zero page would be migrated as "zero" for free), cheap to
            // compute; only the check words need real stamps.
            let filler = ((index as u64) << 12) | 0xA5;
            page.0.fill(filler);
            for slot in 0..CHECK_WORDS {
                page.0[slot * CHECK_STRIDE] = stamp(index as u64, 0, slot);
            }
            pages.push(page);
        }
        WorkingSet {
            pages,
            expected: vec![0; n_pages],
        }
    }

    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Verifies page `index` against its expected generation, then writes the next generation.
    /// Returns whether the page was intact.
    pub fn touch(&mut self, index: usize) -> bool {
        let gen = self.expected[index];
        let next = gen.wrapping_add(1);
        let words = self.pages[index].0.as_mut_ptr();
        let mut intact = true;
        for slot in 0..CHECK_WORDS {
            // Volatile: the values can change behind the program's back (that is the point), so
            // the compiler must not reuse what it last wrote.
            // SAFETY: slot * CHECK_STRIDE < WORDS_PER_PAGE, within this page's array.
            unsafe {
                let p = words.add(slot * CHECK_STRIDE);
                intact &= std::ptr::read_volatile(p) == stamp(index as u64, gen, slot);
                std::ptr::write_volatile(p, stamp(index as u64, next, slot));
            }
        }
        self.expected[index] = next;
        intact
    }

    #[cfg(test)]
    fn page_words_mut(&mut self, index: usize) -> &mut [u64; WORDS_PER_PAGE] {
        &mut self.pages[index].0
    }
}

/// What memtouch runs with now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params {
    rate: Rate,
    pattern: Pattern,
    /// Pages touched: the first `pages` of the working set (a smaller set leaves the others
    /// as they are).
    pages: u64,
}

impl Params {
    /// The memtouch parameters of `workload` (memtouch, or a mixed workload's memory part).
    fn of(workload: &Workload, allocated: u64, current: Option<Params>) -> Option<Params> {
        match workload.memtouch_part() {
            Some(m) => Some(Params {
                rate: m.rate,
                pattern: m.pattern,
                pages: (m.wss_bytes / PAGE_SIZE).clamp(1, allocated.max(1)),
            }),
            // The switching rule keeps the kind; keep going as before if it ever changed.
            None => current,
        }
    }
}

/// Touches pages flat out for `duration` so that `meter` knows the full speed (before the
/// clock starts: these ops are not reported). Returns the integrity errors seen.
pub fn calibrate(ws: &mut WorkingSet, meter: &mut SpeedMeter, duration: Duration) -> u64 {
    let n = ws.len() as u64;
    burst(ws, meter, duration, n, &mut Rng::new(0xCA11))
}

/// Touches random pages among the first `pages` flat out for `duration`, feeding `meter`;
/// returns the integrity errors seen.
fn burst(
    ws: &mut WorkingSet,
    meter: &mut SpeedMeter,
    duration: Duration,
    pages: u64,
    rng: &mut Rng,
) -> u64 {
    let mut errors = 0;
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        for _ in 0..BATCH {
            if !ws.touch(rng.below(pages) as usize) {
                errors += 1;
            }
        }
        meter.feed(BATCH, t.elapsed());
    }
    errors
}

/// How often a paced memtouch measures its full speed again, flat out for [`PROBE`].
///
/// Why: paced at a low rate it rarely completes a [`crate::speed::WINDOW`] of busy time, so
/// its estimate would stay its boot calibration, which under TCG on a busy host read 3 to 6
/// times low; a demand given as a share of full speed (a paced raise) then asked for far
/// more than meant. The probe costs [`PROBE`] of a vCPU every [`PROBE_EVERY`] (0.5%); its
/// touches are not counted as work done or asked for.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Length of a speed probe: a little over one window of busy time.
pub const PROBE: Duration = Duration::from_millis(25);

/// Runs memtouch until `stop` is set, with the parameters `live` holds, publishing cumulative
/// ops, errors (from `errors` on) and demand into `counters`.
pub fn run(
    ws: &mut WorkingSet,
    live: &Live,
    seed: u64,
    counters: &Counters,
    meter: &mut SpeedMeter,
    stop: &AtomicBool,
    errors: u64,
) {
    let Some(mut turns) = Turns::new(live, ws.len() as u64, seed, errors) else {
        return;
    };
    run_turns(stop, || turns.turn(ws, live, meter, counters));
}

/// Takes `turn`s until `stop` is set, sleeping for as long as a turn says nothing is owed.
pub fn run_turns(stop: &AtomicBool, mut turn: impl FnMut() -> Result<(), Duration>) {
    while !stop.load(Ordering::Relaxed) {
        if let Err(wait) = turn() {
            std::thread::sleep(wait);
        }
    }
}

/// memtouch's loop, one turn at a time: alone ([`run`]) or as the memory part of a mixed
/// workload, whose loop interleaves it with the disk part's on one thread.
pub struct Turns {
    allocated: u64,
    version: u64,
    params: Params,
    rng: Rng,
    cursor: u64,
    tally: Tally,
    pace: Pace,
    probed: Instant,
    probe_rng: Rng,
}

impl Turns {
    /// The loop over a working set of `allocated` pages, with the parameters `live` holds
    /// (None: `live` runs no memtouch), counting integrity errors from `errors` on.
    pub fn new(live: &Live, allocated: u64, seed: u64, errors: u64) -> Option<Turns> {
        let version = live.version();
        let params = Params::of(&live.workload(), allocated, None)?;
        Some(Turns {
            allocated,
            version,
            params,
            rng: Rng::new(seed),
            cursor: 0,
            tally: Tally { done: 0, errors },
            pace: Pace::new(params.rate, Instant::now()),
            probed: Instant::now(),
            probe_rng: Rng::new(seed ^ 0x5EED),
        })
    }

    /// The rate asked for now.
    pub fn rate(&self) -> Rate {
        self.params.rate
    }

    /// One turn: a speed probe when one is due, the parameters re-read if `live` changed,
    /// then a batch of what is owed, published into `gauges`.
    ///
    /// # Errors
    /// Nothing is owed: the time until the next op is (no sleep here: the caller decides).
    pub fn turn(
        &mut self,
        ws: &mut WorkingSet,
        live: &Live,
        meter: &mut SpeedMeter,
        gauges: &Gauges,
    ) -> Result<(), Duration> {
        let params = &mut self.params;
        if params.rate != Rate::Max && self.probed.elapsed() >= PROBE_EVERY {
            let errors = burst(ws, meter, PROBE, params.pages, &mut self.probe_rng);
            self.tally.errors += errors;
            self.probed = Instant::now();
        }
        self.pace.advance(Instant::now(), meter.best());
        if live.version() != self.version {
            self.version = live.version();
            let next =
                Params::of(&live.workload(), self.allocated, Some(*params)).unwrap_or(*params);
            if (next.pattern, next.pages) != (params.pattern, params.pages) {
                // Another access pattern or set size runs at another speed.
                meter.restart();
            }
            if next.rate != params.rate {
                self.pace.set_rate(next.rate);
            }
            *params = next;
        }
        let (params, rng, cursor) = (*params, &mut self.rng, &mut self.cursor);
        paced_batch(
            &mut self.pace,
            meter,
            gauges,
            u64::MAX,
            &mut self.tally,
            || {
                let index = next_index(params.pattern, params.pages, rng, cursor);
                ws.touch(index as usize)
            },
        )
    }
}

/// A paced workload's running totals since it started: ops done and integrity errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// Ops done, cumulative.
    pub done: u64,
    /// Integrity errors, cumulative.
    pub errors: u64,
}

/// One batch of a paced workload (memtouch's or the disk workload's): runs `op` for a batch of
/// at most `cap` ops, each returning whether what it touched was intact, feeds the speed
/// meter with the batch's busy time and publishes demand, then the tally, into `gauges`.
/// Demand first: a reader never sees more work done than was asked for.
///
/// # Errors
/// Nothing is owed now: the demand is published and the time until the next op returned.
pub fn paced_batch(
    pace: &mut Pace,
    meter: &mut SpeedMeter,
    gauges: &Gauges,
    cap: u64,
    tally: &mut Tally,
    mut op: impl FnMut() -> bool,
) -> Result<(), Duration> {
    let batch = match pace.next_batch() {
        Ok(b) => b.min(cap),
        Err(wait) => {
            publish_demand(gauges, pace, meter);
            return Err(wait);
        }
    };
    let t = Instant::now();
    for _ in 0..batch {
        tally.errors += u64::from(!op());
    }
    meter.feed(batch, t.elapsed());
    pace.done(batch);
    tally.done += batch;
    publish_demand(gauges, pace, meter);
    gauges.publish(tally.done, tally.errors);
    Ok(())
}

/// The next of `n` units (pages, blocks) to visit: a random one, or the one after `cursor`
/// (wrapping) for a sequential sweep.
pub fn next_index(pattern: Pattern, n: u64, rng: &mut Rng, cursor: &mut u64) -> u64 {
    match pattern {
        Pattern::Random => rng.below(n),
        Pattern::Sequential => {
            if *cursor >= n {
                *cursor = 0;
            }
            let i = *cursor;
            *cursor += 1;
            i
        }
    }
}

/// Publishes a paced workload's demand (before its ops: a reader never sees more work done than
/// asked for).
pub fn publish_demand(gauges: &Gauges, pace: &Pace, meter: &SpeedMeter) {
    gauges.publish_demand(
        pace.demanded() as u64,
        pace.demand_pct(meter.best()),
        meter.best(),
    );
}

/// Most work a paced workload may owe, in seconds of its rate: what it could not do in that
/// long is lost, not caught up later (a service at a fixed rate drops what it cannot serve).
const BACKLOG_S: f64 = 0.1;

/// Pacing and demand of memtouch: at `rate=N` it owes N pages a second, at `rate=max` as many
/// as it touches flat out (its full speed).
#[derive(Debug, Clone)]
pub struct Pace {
    rate: Rate,
    last: Instant,
    /// Ops asked for since the start, cumulative.
    demanded: f64,
    /// Ops owed now (paced only), at most [`BACKLOG_S`] of the rate.
    owed: f64,
    /// Ops done since the start.
    done: u64,
}

impl Pace {
    pub fn new(rate: Rate, now: Instant) -> Self {
        Pace {
            rate,
            last: now,
            demanded: 0.0,
            owed: 0.0,
            done: 0,
        }
    }

    /// Accrues the demand up to `now`, at full speed `best` ops/s for `rate=max`.
    pub fn advance(&mut self, now: Instant, best: f64) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        match self.rate {
            Rate::Max => self.demanded += best * dt,
            Rate::PagesPerSec(r) => {
                let r = r as f64;
                self.demanded += r * dt;
                self.owed = (self.owed + r * dt).min((r * BACKLOG_S).max(1.0));
            }
        }
    }

    /// A new rate from the last `advance` on; nothing owed at the old one is carried over.
    pub fn set_rate(&mut self, rate: Rate) {
        self.rate = rate;
        self.owed = 0.0;
    }

    /// Ops to do now, or how long to wait for the next one.
    pub fn next_batch(&self) -> Result<u64, Duration> {
        match self.rate {
            Rate::Max => Ok(BATCH),
            Rate::PagesPerSec(r) => {
                if self.owed >= 1.0 {
                    return Ok((self.owed as u64).min(BATCH));
                }
                let wait = Duration::from_secs_f64((1.0 - self.owed) / r as f64);
                // Capped so that a stop request or a control line is noticed promptly.
                Err(wait.clamp(Duration::from_micros(50), Duration::from_millis(20)))
            }
        }
    }

    /// `n` ops were done.
    pub fn done(&mut self, n: u64) {
        self.owed = (self.owed - n as f64).max(0.0);
        self.done += n;
        if self.rate == Rate::Max {
            // Flat out asks for all it can do: running faster than the best speed measured so
            // far (just after a switch, before a window completes) is not more than asked.
            self.demanded = self.demanded.max(self.done as f64);
        }
    }

    /// Ops asked for since the start.
    pub fn demanded(&self) -> f64 {
        self.demanded
    }

    /// Percent of one vCPU asked for, at full speed `best` ops/s.
    pub fn demand_pct(&self, best: f64) -> f64 {
        match self.rate {
            Rate::Max => 100.0,
            Rate::PagesPerSec(r) => paced_demand_pct(r as f64, best),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fresh_and_rewritten_pages_verify() {
        let mut ws = WorkingSet::new(16);
        for round in 0..3 {
            for i in 0..16 {
                assert!(ws.touch(i), "page {i} round {round}");
            }
        }
    }

    #[test]
    fn lost_page_detected() {
        let mut ws = WorkingSet::new(4);
        ws.touch(2);
        *ws.page_words_mut(2) = [0; WORDS_PER_PAGE];
        assert!(!ws.touch(2));
        // Once rewritten, the page is good again: errors count events, not a sticky state.
        assert!(ws.touch(2));
    }

    #[test]
    fn stale_page_detected() {
        let mut ws = WorkingSet::new(4);
        ws.touch(1);
        let old = *ws.page_words_mut(1);
        ws.touch(1);
        *ws.page_words_mut(1) = old;
        assert!(!ws.touch(1));
    }

    #[test]
    fn swapped_pages_detected() {
        let mut ws = WorkingSet::new(4);
        let a = *ws.page_words_mut(0);
        let b = *ws.page_words_mut(3);
        *ws.page_words_mut(0) = b;
        *ws.page_words_mut(3) = a;
        assert!(!ws.touch(0));
        assert!(!ws.touch(3));
        assert!(ws.touch(1));
    }

    #[test]
    fn half_written_page_detected() {
        let mut ws = WorkingSet::new(2);
        ws.touch(0);
        let old = *ws.page_words_mut(0);
        ws.touch(0);
        // Only the last check word is stale.
        ws.page_words_mut(0)[WORDS_PER_PAGE - CHECK_STRIDE] = old[WORDS_PER_PAGE - CHECK_STRIDE];
        assert!(!ws.touch(0));
    }

    #[test]
    fn a_speed_probe_measures_and_stays_in_the_working_set() {
        let mut ws = WorkingSet::new(64);
        let mut meter = SpeedMeter::default();
        let errors = burst(
            &mut ws,
            &mut meter,
            Duration::from_millis(30),
            8,
            &mut Rng::new(1),
        );
        assert_eq!(errors, 0);
        assert!(meter.best() > 0.0, "a window completed");
        assert!(
            ws.expected[..8].iter().any(|g| *g > 0),
            "the set was touched"
        );
        assert!(
            ws.expected[8..].iter().all(|g| *g == 0),
            "nothing past the set"
        );
    }

    #[test]
    fn rng_stays_in_range_and_is_seeded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let x = a.below(10);
            assert!(x < 10);
            assert_eq!(x, b.below(10));
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn pacing_owes_the_rate_and_drops_what_it_could_not_do() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Pace::new(Rate::PagesPerSec(1000), t0);
        p.advance(t0 + ms(10), 0.0);
        assert_eq!(p.next_batch(), Ok(10));
        p.done(10);
        assert_eq!(p.next_batch(), Err(ms(1)));
        // Held back for a second: only 100 ms of work is still owed, the rest is lost, but
        // the demand counts all of it.
        p.advance(t0 + ms(1010), 0.0);
        assert_eq!(p.next_batch(), Ok(100));
        assert!((p.demanded() - 1010.0).abs() < 1e-6);
        assert_eq!(p.demand_pct(4000.0), 25.0);
        // A new rate starts afresh; rate=max owes its full speed.
        p.set_rate(Rate::Max);
        assert_eq!(p.next_batch(), Ok(BATCH));
        p.advance(t0 + ms(1110), 5000.0);
        assert!((p.demanded() - 1510.0).abs() < 1e-6);
        assert_eq!(p.demand_pct(5000.0), 100.0);
        let slow = Pace::new(Rate::PagesPerSec(10), t0);
        assert_eq!(slow.next_batch(), Err(ms(20)));
    }

    fn live(spec: &str) -> Live {
        Live::new(crate::spec::parse_workload(spec).unwrap())
    }

    #[test]
    fn run_respects_rate_and_stop() {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counters.clone(), stop.clone());
        let worker = std::thread::spawn(move || {
            let mut ws = WorkingSet::new(64);
            let l = live("memtouch:wss=256K,rate=2000");
            let mut meter = SpeedMeter::default();
            run(&mut ws, &l, 1, &c, &mut meter, &s, 0);
        });
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
        let (ops, errors) = counters.snapshot();
        assert_eq!(errors, 0);
        assert!((300..=900).contains(&ops), "ops {ops}");
        let demanded = counters.demand().demanded_ops;
        assert!(
            (ops..=ops + 100).contains(&demanded),
            "{ops} done, {demanded} asked"
        );
    }

    #[test]
    fn run_sequential_max() {
        let counters = Counters::default();
        let stop = AtomicBool::new(false);
        let mut ws = WorkingSet::new(8);
        let l = live("memtouch:wss=32K,rate=max,pattern=seq");
        let mut meter = SpeedMeter::default();
        std::thread::scope(|s| {
            s.spawn(|| run(&mut ws, &l, 0, &counters, &mut meter, &stop, 0));
            std::thread::sleep(Duration::from_millis(50));
            stop.store(true, Ordering::Relaxed);
        });
        let (ops, errors) = counters.snapshot();
        assert!(ops > 0);
        assert_eq!(errors, 0);
        assert_eq!(ops % BATCH, 0);
        assert_eq!(counters.demand().demand_pct, 100.0);
    }

    /// Sets the flag when dropped: a test's worker thread stops even when the test panics.
    pub(crate) struct StopOnDrop<'a>(pub(crate) &'a AtomicBool);

    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    /// Waits (30 s at most, then fails: a loaded CI host can starve the threads) until `cond`
    /// holds.
    pub(crate) fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "not reached in 30 s: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_switch_changes_rate_and_shrinks_the_set_in_place() {
        let counters = Counters::default();
        let stop = AtomicBool::new(false);
        let mut ws = WorkingSet::new(64);
        let l = live("memtouch:wss=256K,rate=100");
        let mut meter = SpeedMeter::default();
        let errors = calibrate(&mut ws, &mut meter, Duration::from_millis(40));
        assert_eq!(errors, 0);
        let full = meter.best();
        assert!(full > 0.0);
        std::thread::scope(|s| {
            s.spawn(|| run(&mut ws, &l, 3, &counters, &mut meter, &stop, errors));
            // A failed check below must stop the worker too, or the scope never ends.
            let _stop = StopOnDrop(&stop);
            wait_for("paced work", || counters.snapshot().0 >= 5);
            let paced = counters.demand();
            // The worker's meter keeps its best window, which only grows past the calibrated
            // `full` (a quicker window while it runs): the demand is at most the calibrated one.
            let calibrated = paced_demand_pct(100.0, full);
            assert!(
                paced.demand_pct > 0.0 && paced.demand_pct <= calibrated + 1e-9,
                "{} against {calibrated}",
                paced.demand_pct
            );
            assert_eq!(
                l.handle_line("set 1 memtouch:wss=16K,rate=max,pattern=seq"),
                crate::live::Handled::Applied
            );
            wait_for("the new rate", || counters.demand().demand_pct == 100.0);
            let at = counters.snapshot().0;
            // At 100 pages/s this would take 30 s.
            wait_for("3000 more ops", || counters.snapshot().0 >= at + 3000);
            stop.store(true, Ordering::Relaxed);
        });
        let (ops, errors) = counters.snapshot();
        assert!(ops <= counters.demand().demanded_ops);
        assert_eq!(errors, 0, "shrinking the set loses nothing");
        // The pages beyond the smaller set were left as they were: all still verify.
        for i in 0..64 {
            assert!(ws.touch(i), "page {i}");
        }
    }
}
