//! memtouch: dirties a working set at a chosen rate and verifies every page it revisits.
//!
//! Each page carries stamps (in `CHECK_WORDS` words spread over the page) derived from the page's
//! index and its generation; a separate array holds the generation each page must be at. Before a
//! page is rewritten with the next generation its stamps are checked, so after a migration a page
//! that was lost (zeroed), left stale (older generation) or swapped with another (wrong index)
//! counts as an integrity error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::reporter::Counters;
use crate::spec::{Pattern, Rate, PAGE_SIZE};

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

/// Runs memtouch until `stop` is set, publishing cumulative ops and errors into `counters`.
pub fn run(
    ws: &mut WorkingSet,
    rate: Rate,
    pattern: Pattern,
    seed: u64,
    counters: &Counters,
    stop: &AtomicBool,
) {
    let n = ws.len() as u64;
    let mut rng = Rng::new(seed);
    let mut cursor = 0u64;
    let mut done = 0u64;
    let mut errors = 0u64;
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let batch = match rate {
            Rate::Max => BATCH,
            Rate::PagesPerSec(r) => match paced_batch(r, done, start.elapsed()) {
                Ok(b) => b,
                Err(wait) => {
                    std::thread::sleep(wait);
                    continue;
                }
            },
        };
        for _ in 0..batch {
            let index = match pattern {
                Pattern::Random => rng.below(n),
                Pattern::Sequential => {
                    let i = cursor;
                    cursor = if cursor + 1 == n { 0 } else { cursor + 1 };
                    i
                }
            };
            if !ws.touch(index as usize) {
                errors += 1;
            }
        }
        done += batch;
        counters.publish(done, errors);
    }
}

/// How many ops are due now at `rate` pages/s, or how long to wait for the next one.
fn paced_batch(rate: u64, done: u64, elapsed: Duration) -> Result<u64, Duration> {
    let due = (rate as u128 * elapsed.as_nanos() / 1_000_000_000) as u64;
    if due > done {
        return Ok((due - done).min(BATCH));
    }
    let next_at_ns = (done as u128 + 1) * 1_000_000_000 / rate as u128;
    let wait = Duration::from_nanos((next_at_ns.saturating_sub(elapsed.as_nanos())) as u64);
    // Cap the nap so a stop request is noticed promptly.
    Err(wait.clamp(Duration::from_micros(50), Duration::from_millis(20)))
}

#[cfg(test)]
mod tests {
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
    fn pacing() {
        assert_eq!(paced_batch(1000, 0, Duration::from_millis(10)), Ok(10));
        assert_eq!(paced_batch(1_000_000, 0, Duration::from_secs(1)), Ok(BATCH));
        let wait = paced_batch(10, 5, Duration::from_millis(500)).unwrap_err();
        assert_eq!(wait, Duration::from_millis(20));
        let wait = paced_batch(1000, 10, Duration::from_millis(10)).unwrap_err();
        assert_eq!(wait, Duration::from_millis(1));
    }

    #[test]
    fn run_respects_rate_and_stop() {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counters.clone(), stop.clone());
        let worker = std::thread::spawn(move || {
            let mut ws = WorkingSet::new(64);
            run(&mut ws, Rate::PagesPerSec(2000), Pattern::Random, 1, &c, &s);
        });
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
        let (ops, errors) = counters.snapshot();
        assert_eq!(errors, 0);
        assert!((300..=900).contains(&ops), "ops {ops}");
    }

    #[test]
    fn run_sequential_max() {
        let counters = Counters::default();
        let stop = AtomicBool::new(false);
        let mut ws = WorkingSet::new(8);
        std::thread::scope(|s| {
            s.spawn(|| run(&mut ws, Rate::Max, Pattern::Sequential, 0, &counters, &stop));
            std::thread::sleep(Duration::from_millis(50));
            stop.store(true, Ordering::Relaxed);
        });
        let (ops, errors) = counters.snapshot();
        assert!(ops > 0);
        assert_eq!(errors, 0);
        assert_eq!(ops % BATCH, 0);
    }
}
