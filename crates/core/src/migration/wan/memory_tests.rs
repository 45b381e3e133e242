//! The working set and rate from scripted sample sequences: hand-computed cases, spikes that
//! move neither, and the same plan from noisy profiles of one steady guest.

use super::*;
use crate::migration::wan::{choose_fractions, DiskProfile, FractionParams, WanLink, WanProfile};

const MIB: u64 = 1 << 20;
const MB: f64 = 1e6;

fn window(seconds: f64, dirtied_mb: f64) -> DirtyWindow {
    DirtyWindow {
        seconds,
        dirtied_bytes: dirtied_mb * MB,
    }
}

fn profile(samples_mb_s: &[f64], long: DirtyWindow) -> MemoryProfile {
    let samples = samples_mb_s.iter().map(|mb| mb * MB).collect();
    MemoryProfile::from_windows(192 * MIB, samples, 1.0, long).expect("valid windows")
}

#[test]
fn median_of_odd_even_and_none() {
    assert_eq!(median(&[4.0, 34.0, 4.0]), 4.0);
    assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    assert_eq!(median(&[]), 0.0);
}

#[test]
fn a_spike_moves_neither_the_rate_nor_the_working_set() {
    // 32 MiB (33.55 MB) rewritten at 4 MB/s, seen over 20 s: 33.55 MB dirtied, under half of
    // the 80 MB a guest never rewriting would.
    let steady = profile(&[4.0, 4.0, 4.0], window(20.0, 33.554432));
    let spiked = profile(&[4.0, 34.0, 4.0], window(20.0, 33.554432));
    assert_eq!(steady.dirty_rate_bps(), 4.0 * MB);
    assert_eq!(spiked.dirty_rate_bps(), 4.0 * MB);
    assert_eq!(steady.wss_bytes, 32 * MIB);
    assert_eq!(spiked.wss_bytes, 32 * MIB);
    assert_eq!(spiked.dirty_rate_spread_bps(), (4.0 * MB, 34.0 * MB));
    let why = spiked.explain();
    assert!(
        why.contains("dirty rate 4.0MB/s (median of 3 samples, 4.0-34.0)"),
        "{why}"
    );
    assert!(why.contains("working set 33.6MB"), "{why}");
}

#[test]
fn no_rewriting_seen_is_all_of_memory() {
    // 3 s at 4 MB/s dirtied 12 MB: 100% of what a guest never rewriting would, so the window
    // is too short to see the working set's end.
    let p = profile(&[4.0, 5.0, 3.0], window(3.0, 12.0));
    assert_eq!(p.wss_bytes, 192 * MIB);
    assert!(
        p.explain().contains("working set all of memory"),
        "{}",
        p.explain()
    );
    // At 60% of it, not saturated either: the lab's page-sampled 3 s windows of a guest that
    // cannot saturate in 3 s read as low as that.
    assert_eq!(
        profile(&[5.2, 36.7, 4.2], window(3.0, 9.437184)).wss_bytes,
        192 * MIB
    );
}

#[test]
fn rewriting_seen_is_what_the_long_window_dirtied_at_least_one_sample() {
    // 10 MB/s for 3 s would be 30 MB; 12 MB dirtied: saturated, W = 12 MB.
    assert_eq!(
        profile(&[10.0, 10.0, 10.0], window(3.0, 12.0)).wss_bytes,
        12_000_000
    );
    // 15 MB is half: not yet.
    assert_eq!(
        profile(&[10.0, 10.0, 10.0], window(3.0, 15.0)).wss_bytes,
        192 * MIB
    );
    // A long window reading less than one sample (its own coarse resolution): one sample's
    // distinct pages, 10 MB.
    assert_eq!(
        profile(&[10.0, 10.0, 10.0], window(3.0, 4.0)).wss_bytes,
        10_000_000
    );
}

#[test]
fn an_idle_guest_keeps_what_it_dirtied() {
    assert_eq!(profile(&[0.0, 0.0, 0.0], window(3.0, 0.0)).wss_bytes, 0);
    assert_eq!(
        profile(&[0.0, 0.05, 0.0], window(3.0, 0.06)).wss_bytes,
        60_000
    );
}

#[test]
fn bad_windows_are_refused_by_field() {
    let samples = vec![MB];
    let e = MemoryProfile::from_windows(MIB, samples.clone(), 1.0, window(0.0, 1.0)).unwrap_err();
    assert!(
        e.to_string().starts_with("memory.long_window.seconds"),
        "{e}"
    );
    let e = MemoryProfile::from_windows(MIB, samples.clone(), 1.0, window(1.0, -1.0)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("memory.long_window.dirtied_bytes"),
        "{e}"
    );
    let e = MemoryProfile::from_windows(MIB, Vec::new(), 1.0, window(1.0, 1.0)).unwrap_err();
    assert!(
        e.to_string().starts_with("memory.dirty_rate_samples_bps"),
        "{e}"
    );
}

/// The guest: 192 MiB, a 16 MiB hot disk region at 400 kB/s each way, 100 Mbit/s and a
/// 40 ms round trip.
fn plan(samples_mb_s: &[f64], long: DirtyWindow) -> (f64, f64, f64) {
    let disk =
        DiskProfile::new(64 * MIB, 64 << 10, 0.2 * MB, 0.2 * MB, Vec::new()).expect("valid disk");
    let vm = WanProfile {
        memory: profile(samples_mb_s, long),
        disk,
    };
    let link = WanLink::new(12.5e6, 0.04).expect("valid link");
    let c = choose_fractions(&vm, &link, &FractionParams::default(), f64::INFINITY)
        .expect("valid inputs");
    (
        c.chosen.memory_fraction,
        c.chosen.storage_fraction,
        c.pure_precopy.total_s,
    )
}

#[test]
fn noisy_profiles_of_one_steady_guest_give_one_plan() {
    // Consecutive profiles of the same guest: coarse whole-MB readings, a spike in a different
    // sample each time, the long window off by its resolution.
    let runs = [
        (vec![4.0, 4.0, 4.0], window(3.0, 12.0)),
        (vec![4.0, 34.0, 4.0], window(3.0, 12.0)),
        (vec![34.0, 4.0, 5.0], window(3.0, 15.0)),
        (vec![3.0, 4.0, 31.0], window(3.0, 9.0)),
        (vec![5.0, 4.0, 4.0], window(3.0, 12.0)),
    ];
    let plans: Vec<_> = runs.iter().map(|(s, w)| plan(s, *w)).collect();
    let (m, s, _) = plans[0];
    for (i, p) in plans.iter().enumerate() {
        assert_eq!((p.0, p.1), (m, s), "run {i}: {plans:?}");
    }
    // Pure pre-copy's estimate moves only with the median (3, 4 or 5 MB/s), never 20x.
    let totals: Vec<f64> = plans.iter().map(|p| p.2).collect();
    let (lo, hi) = totals.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), t| {
        (lo.min(*t), hi.max(*t))
    });
    assert!(hi < 1.5 * lo, "pure pre-copy totals {totals:?}");
}
