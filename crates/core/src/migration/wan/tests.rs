//! The fraction model against hand-computed cases, the choice's rules, validation, and
//! monotonicity over random profiles.

use super::*;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn memory(memory_bytes: u64, wss_bytes: u64, dirty_bps: f64) -> MemoryProfile {
    // Samples around the mean: the model uses their mean.
    MemoryProfile::new(
        memory_bytes,
        wss_bytes,
        vec![0.5 * dirty_bps, dirty_bps, 1.5 * dirty_bps],
        1.0,
    )
    .expect("valid memory profile")
}

fn disk(
    virtual_bytes: u64,
    read_bps: f64,
    write_bps: f64,
    regions: Vec<RegionCount>,
) -> DiskProfile {
    DiskProfile::new(virtual_bytes, 64 * 1024, read_bps, write_bps, regions).expect("valid disk")
}

/// 100 Mbit/s, 50 ms: the WAN.
fn wan() -> WanLink {
    WanLink::new(12.5e6, 0.05).expect("valid link")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// The model with every copy at the link's rate (no block job bound by the round trip): the
/// hand computations below.
fn at_link_rate() -> FractionParams {
    FractionParams {
        block_copy: BlockCopy::AT_LINK_RATE,
        ..FractionParams::default()
    }
}

fn predict(vm: &WanProfile, link: &WanLink, m: f64, s: f64) -> FractionPrediction {
    predict_with(&at_link_rate(), vm, link, m, s)
}

fn predict_with(
    params: &FractionParams,
    vm: &WanProfile,
    link: &WanLink,
    m: f64,
    s: f64,
) -> FractionPrediction {
    predict_fractions(vm, link, params, m, s).expect("valid inputs")
}

/// `g(x)` of the module doc, written out again.
fn g(x: f64) -> f64 {
    1.0 - (1.0 - (-x).exp()) / x
}

/// Idle memory, a disk that is only read, uniformly, at 100 kB/s.
fn reader() -> WanProfile {
    WanProfile {
        memory: memory(256 * MIB, 0, 0.0),
        disk: disk(GIB, 1e5, 0.0, Vec::new()),
    }
}

#[test]
fn reader_pure_precopy_is_one_pass_and_a_bare_switch() {
    let p = predict(&reader(), &wan(), 1.0, 1.0);
    let pass = (256 * MIB + GIB) as f64 / 12.5e6;
    assert_eq!(p.rounds, 1);
    assert!(p.converges);
    assert!(close(p.ahead_s, pass), "{p:?}");
    // Switchover 50 ms plus one round trip; nothing dirty to freeze.
    assert!(close(p.downtime_s, 0.1), "{p:?}");
    assert!(close(p.total_s, pass + 0.1), "{p:?}");
    assert_eq!(p.postcopy_s, 0.0);
    assert_eq!(p.remote_waits, 0.0);
    // No writes: no tracking cost; the pause is all it loses.
    assert!(close(p.agility_s, 0.1), "{p:?}");
}

#[test]
fn reader_pure_postcopy_waits_for_the_blocks_it_reads_first() {
    let p = predict(&reader(), &wan(), 0.0, 0.0);
    let t = (256 * MIB + GIB) as f64 / 12.5e6;
    assert!(close(p.postcopy_s, t));
    assert!(close(p.total_s, 0.1 + t));
    // 16384 blocks, read 1e5/65536 blocks a second in all: each at λ = that / 16384.
    let blocks = 16384.0;
    let lambda = 1e5 / 65536.0 / blocks;
    assert!(close(p.remote_waits, blocks * g(lambda * t)), "{p:?}");
    // Each of those waits RTT + a block at the link's rate, 8.4% of the time at first:
    // throughput never falls below 90%, so agility is the pause alone.
    let sigma0 = 1e5 / 65536.0 * (0.05 + 65536.0 / 12.5e6);
    assert!(sigma0 < 1.0 / 9.0);
    assert!(close(p.agility_s, 0.1), "{p:?}");
    assert!(
        p.postcopy_lost_s > 0.0 && p.postcopy_lost_s < sigma0 * t,
        "{p:?}"
    );
    let accesses = 1e5 / 65536.0 * t;
    assert!(close(p.remote_wait_share, p.remote_waits / accesses));
}

#[test]
fn idle_vm_gets_pure_precopy() {
    let c = choose_fractions(&reader(), &wan(), &at_link_rate(), f64::INFINITY).expect("valid");
    // Memory ahead or not costs nothing (idle, never touched), but the disk's reads would wait:
    // of the equally agile candidates, the one never split between hosts.
    assert_eq!(
        (c.chosen.memory_fraction, c.chosen.storage_fraction),
        (1.0, 1.0),
        "{}",
        c.reason
    );
    assert_eq!(c.chosen, c.pure_precopy);
    assert!(c.within_budget);
    assert!(
        c.reason
            .starts_with("pure pre-copy: lowest restoration agility"),
        "{}",
        c.reason
    );
    assert!(c.pure_postcopy.remote_waits > 70.0, "{}", c.reason);
    // Ten times the reads: 84% of the time waiting at first, so post-copy is slow to recover.
    let mut busier = reader();
    busier.disk.read_rate_bps = 1e6;
    let p = predict(&busier, &wan(), 0.0, 0.0);
    assert!(p.agility_s > 1.0 && p.restored_s > 1.0, "{p:?}");
}

/// Memory: 100 MB with a 10 MB set dirtied at 5 MB/s; a small idle disk; a 10 MB/s link.
fn writer() -> WanProfile {
    WanProfile {
        memory: memory(100_000_000, 10_000_000, 5e6),
        disk: DiskProfile::new(1_000_000, 100_000, 0.0, 0.0, Vec::new()).expect("valid"),
    }
}

fn ten_mb_link() -> WanLink {
    WanLink::new(10e6, 0.05).expect("valid")
}

#[test]
fn writer_precopy_rounds_by_hand() {
    let p = predict(&writer(), &ten_mb_link(), 1.0, 1.0);
    // 101 MB in 10.1 s; then the set (10 MB, capped) in 1 s; then 5 MB in 0.5 s; then 2.5 MB
    // is dirty, under 10 MB/s x 300 ms: freeze.
    assert_eq!(p.rounds, 3);
    assert!(p.converges);
    assert!(close(p.ahead_s, 11.6), "{p:?}");
    assert!(close(p.downtime_s, 0.05 + 0.05 + 0.25), "{p:?}");
    assert!(close(p.total_s, 11.95), "{p:?}");
    assert!(close(p.transferred_bytes, 118.5e6), "{p:?}");
    // Tracking: 5% at write intensity 5/10 over the 11.6 s ahead.
    assert!(close(p.agility_s, 11.6 * 0.05 * 0.5 + 0.35), "{p:?}");
}

#[test]
fn writer_postcopy_faults_by_hand() {
    let p = predict(&writer(), &ten_mb_link(), 0.0, 0.0);
    assert!(close(p.total_s, 0.1 + 10.1), "{p:?}");
    // The set's 2441.4 pages, each touched 0.5 times a second, over 10.1 s.
    let pages = 10e6 / 4096.0;
    assert!(close(p.remote_waits, pages * g(0.5 * 10.1)), "{p:?}");
    // At first about 1220 waits a second of 50.4 ms each: throughput 1.6% of before.
    assert!(p.agility_s > 1.0, "{p:?}");
    assert!(p.restored_s > 0.1, "{p:?}");
}

#[test]
fn ahead_set_dirtied_faster_than_the_link_freezes_at_the_round_cap() {
    // A 64 MiB set rewritten at 50 MB/s over 12.5 MB/s: every round re-sends all of it.
    let vm = WanProfile {
        memory: memory(256 * MIB, 64 * MIB, 50e6),
        disk: DiskProfile::new(1_000_000, 100_000, 0.0, 0.0, Vec::new()).expect("valid"),
    };
    let p = predict(&vm, &wan(), 1.0, 1.0);
    let set = (64 * MIB) as f64;
    assert!(!p.converges);
    assert_eq!(p.rounds, FractionParams::default().cost.max_rounds);
    let first = (256 * MIB) as f64 + 1e6;
    assert!(close(p.ahead_s, (first + 29.0 * set) / 12.5e6), "{p:?}");
    assert!(close(p.downtime_s, 0.1 + set / 12.5e6), "{p:?}");
    let c = choose_fractions(&vm, &wan(), &at_link_rate(), f64::INFINITY).expect("ok");
    assert!(c.reason.contains("pure pre-copy: agility"), "{}", c.reason);
    assert!(c.chosen.agility_s < p.agility_s, "{}", c.reason);
}

#[test]
fn budget_binds_then_cannot_be_met() {
    let params = at_link_rate();
    let free = choose_fractions(&writer(), &ten_mb_link(), &params, f64::INFINITY).expect("ok");
    // Without a budget: all of memory ahead (a partial pass goes in address order and would
    // leave the rewritten set remote), the idle disk after. Its rounds by hand: 100 MB in
    // 10 s, 10 MB in 1 s, 5 MB in 0.5 s, 2.5 MB frozen; then the disk's 1 MB in 0.1 s, with
    // no waits (nothing touches it); 11.5 s of tracking at half intensity and the pause. It
    // beats pre-copy by the 0.1 s of tracking that pre-copy's pass of the disk adds.
    let c = free.chosen;
    assert_eq!(
        (c.memory_fraction, c.storage_fraction),
        (1.0, 0.0),
        "{}",
        free.reason
    );
    assert!(close(c.ahead_s, 11.5) && close(c.downtime_s, 0.35), "{c:?}");
    assert!(close(c.total_s, 11.95), "{c:?}");
    assert_eq!(c.remote_waits, 0.0);
    assert!(close(c.agility_s, 11.5 * 0.05 * 0.5 + 0.35), "{c:?}");
    assert!(
        free.reason.contains("pure pre-copy: agility 0.64s"),
        "{}",
        free.reason
    );
    // 10.5 s rules it out, and pre-copy's 11.95 s: something faster and less agile (part of
    // the working set waits).
    let tight = choose_fractions(&writer(), &ten_mb_link(), &params, 10.5).expect("ok");
    assert!(tight.within_budget);
    assert_eq!(tight.budget_s, Some(10.5));
    assert_eq!(free.budget_s, None);
    let wire = serde_json::to_string(&free).expect("serializes");
    let back: FractionChoice = serde_json::from_str(&wire).expect("round trip");
    // (serde_json may round a float's last bit.)
    assert_eq!(back.reason, free.reason);
    assert_eq!(back.budget_s, None);
    assert!(close(back.chosen.agility_s, free.chosen.agility_s));
    assert!(tight.chosen.total_s <= 10.5, "{}", tight.reason);
    assert!(tight.chosen.agility_s > c.agility_s);
    assert!(
        tight.reason.contains("within the 10.5s budget"),
        "{}",
        tight.reason
    );
    // 5 s: nothing fits; the fastest is post-copy's 10.2 s, and the reason says so.
    let none = choose_fractions(&writer(), &ten_mb_link(), &params, 5.0).expect("ok");
    assert!(!none.within_budget);
    assert!(close(none.chosen.total_s, 10.2), "{}", none.reason);
    assert!(
        none.reason.contains("no fractions fit the 5.0s budget"),
        "{}",
        none.reason
    );
}

/// A 4 GiB disk whose first 64 MiB region gets 99.9% of the reads and 99% of the writes, a
/// 16 MiB memory working set: a very hot small working set.
fn hot_spot() -> WanProfile {
    let mut regions = vec![
        RegionCount {
            reads: 1,
            writes: 10
        };
        64
    ];
    regions[0] = RegionCount {
        reads: 63_000,
        writes: 62_370,
    };
    WanProfile {
        memory: memory(256 * MIB, 16 * MIB, 4e6),
        disk: disk(4 * GIB, 20e6, 1e6, regions),
    }
}

#[test]
fn hot_set_ahead_beats_both_pure_techniques() {
    let c = choose_fractions(&hot_spot(), &wan(), &at_link_rate(), f64::INFINITY).expect("valid");
    let (m, s) = (c.chosen.memory_fraction, c.chosen.storage_fraction);
    assert!((m, s) != (1.0, 1.0) && (m, s) != (0.0, 0.0), "{}", c.reason);
    // The hot sets went ahead: the 16 MiB of 256 and the 64 MiB of 4 GiB.
    assert!(m >= 1.0 / 16.0 && s >= 1.0 / 64.0, "{}", c.reason);
    assert!(
        c.chosen.agility_s < c.pure_precopy.agility_s,
        "{}",
        c.reason
    );
    assert!(
        c.chosen.agility_s < c.pure_postcopy.agility_s,
        "{}",
        c.reason
    );
    // Pre-copy loses by tracking writes through a 6-minute mirror of the cold disk; post-copy
    // by waiting 50 ms for each hot page and block.
    assert!(c.pure_precopy.ahead_s > 360.0);
    assert!(c.pure_postcopy.remote_waits > 4000.0);
    assert!(c.reason.starts_with("hybrid with memory"), "{}", c.reason);
}

#[test]
fn block_jobs_go_a_round_trip_at_a_time() {
    // The reader over the WAN with the calibrated jobs: the mirror at 220 kB per
    // 50 ms (4.4 MB/s), the stream at 160 kB (3.2 MB/s); memory at the link's 12.5 MB/s.
    let params = FractionParams::default();
    let (mem, disk) = ((256 * MIB) as f64, GIB as f64);
    let pre = predict_with(&params, &reader(), &wan(), 1.0, 1.0);
    assert!(close(pre.ahead_s, mem / 12.5e6 + disk / 4.4e6), "{pre:?}");
    let post = predict_with(&params, &reader(), &wan(), 0.0, 0.0);
    // Both pulls at once: the phase is the slower, the stream's.
    assert!(close(post.postcopy_s, disk / 3.2e6), "{post:?}");
    // The disk's blocks stay remote longer than at the link's rate: more of them wait.
    let fast = predict(&reader(), &wan(), 0.0, 0.0);
    assert!(post.remote_waits > fast.remote_waits, "{post:?} {fast:?}");
    // A zero round trip: every job at the link's rate.
    let lan = WanLink::new(12.5e6, 0.0).expect("valid");
    let p = predict_with(&params, &reader(), &lan, 1.0, 1.0);
    assert!(close(p.ahead_s, (mem + disk) / 12.5e6), "{p:?}");
    let e = predict_fractions(
        &reader(),
        &wan(),
        &FractionParams {
            block_copy: BlockCopy {
                stream_bytes_per_rtt: 0.0,
                ..BlockCopy::default()
            },
            ..params
        },
        0.5,
        0.5,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("block_copy.stream_bytes_per_rtt: expected bytes > 0"),
        "{e}"
    );
}

#[test]
fn a_partial_memory_pass_leaves_a_rewritten_working_set_remote() {
    // The writer, half its memory sent in address order (5 s at 10 MB/s), then the switch:
    // half of each stretch unsent, and of the sent half of the working set (rewritten at
    // 0.5 of itself a second) the share g(0.5 x 5) dirtied again.
    let p = predict(&writer(), &ten_mb_link(), 0.5, 0.0);
    let again = g(0.5 * 5.0);
    let hot = 10e6 * (0.5 + 0.5 * again);
    let cold = 90e6 * 0.5;
    assert!(close(p.ahead_s, 5.0), "{p:?}");
    assert_eq!(p.rounds, 1);
    // The disk's 1 MB (idle, nothing ahead) shares the link with memory's pull: the link
    // carries both, and memory's ends last.
    let t_mem = (hot + cold + 1e6) / 10e6;
    assert!(close(p.postcopy_s, t_mem), "{p:?}");
    assert!(
        close(p.remote_waits, hot / 4096.0 * g(0.5 * t_mem)),
        "{p:?}"
    );
    assert!(close(p.transferred_bytes, 50e6 + hot + cold + 1e6), "{p:?}");
    // Most of the working set waits: nearly as bad as none of memory ahead, where pre-copy's
    // rounds put all of it there.
    let none = predict(&writer(), &ten_mb_link(), 0.0, 0.0);
    let all = predict(&writer(), &ten_mb_link(), 1.0, 0.0);
    assert!(p.remote_waits > 0.5 * none.remote_waits, "{p:?} {none:?}");
    assert_eq!(all.remote_waits, 0.0);
    assert!(p.agility_s > all.agility_s, "{p:?} {all:?}");
}

/// The WAN experiment's VM as a profile reads it: 256 MiB with a 64 MiB set dirtied at
/// 4.1 MB/s (`memtouch` at 1000 pages a second), a 128 MiB disk in 16 regions whose first four (32 MiB) take every access, 100
/// writes and 100 reads of 4 KiB a second.
fn wan_experiment_vm() -> WanProfile {
    let mut regions = vec![RegionCount::default(); 16];
    for r in regions.iter_mut().take(4) {
        *r = RegionCount {
            reads: 1000,
            writes: 1000,
        };
    }
    WanProfile {
        memory: memory(256 * MIB, 64 * MIB, 4.1e6),
        disk: DiskProfile::new(128 * MIB, 4096, 409_600.0, 409_600.0, regions).expect("valid"),
    }
}

#[test]
fn calibrated_choice_for_the_wan_experiment_is_memory_precopy_and_the_hot_disk_ahead() {
    // 100 Mbit/s and a 100 ms round trip, the experiment's link.
    let link = WanLink::new(12.5e6, 0.1).expect("valid");
    let c = choose_fractions(
        &wan_experiment_vm(),
        &link,
        &FractionParams::default(),
        f64::INFINITY,
    )
    .expect("valid");
    let chosen = c.chosen;
    // Memory all ahead (any partial pass leaves the rewritten set remote), the hot quarter
    // of the disk ahead, the cold rest streamed after.
    assert_eq!(chosen.memory_fraction, 1.0, "{}", c.reason);
    assert!(
        (0.25..1.0).contains(&chosen.storage_fraction),
        "{}",
        c.reason
    );
    assert!(chosen.agility_s < c.pure_precopy.agility_s, "{}", c.reason);
    assert!(chosen.agility_s < c.pure_postcopy.agility_s, "{}", c.reason);
    // Pre-copy's mirror of 128 MiB at 2.2 MB/s: a minute of tracking.
    assert!(c.pure_precopy.ahead_s > 60.0, "{:?}", c.pure_precopy);
}

#[test]
fn invalid_inputs_name_their_field() {
    let field = |e: WanError| match e {
        WanError::Invalid { field, .. } => field,
    };
    let e = MemoryProfile::new(0, 0, vec![0.0], 1.0).unwrap_err();
    assert_eq!(field(e), "memory.memory_bytes");
    let e = MemoryProfile::new(MIB, 2 * MIB, vec![0.0], 1.0).unwrap_err();
    assert_eq!(field(e), "memory.wss_bytes");
    let e = MemoryProfile::new(MIB, MIB, vec![1.0, f64::NAN], 1.0).unwrap_err();
    assert_eq!(field(e), "memory.dirty_rate_samples_bps[1]");
    let e = MemoryProfile::new(MIB, 0, vec![5.0], 1.0).unwrap_err();
    assert_eq!(field(e), "memory.wss_bytes");
    let e = MemoryProfile::new(MIB, MIB, vec![], 1.0).unwrap_err();
    assert_eq!(field(e), "memory.dirty_rate_samples_bps");
    let e = DiskProfile::new(MIB, 2 * MIB, 0.0, 0.0, vec![]).unwrap_err();
    assert_eq!(field(e), "disk.block_bytes");
    let e = DiskProfile::new(MIB, 64 * 1024, -1.0, 0.0, vec![]).unwrap_err();
    assert_eq!(field(e), "disk.read_rate_bps");
    let many = vec![
        RegionCount {
            reads: 0,
            writes: 0
        };
        17
    ];
    let e = DiskProfile::new(MIB, 64 * 1024, 0.0, 0.0, many).unwrap_err();
    assert_eq!(field(e), "disk.regions");
    assert_eq!(
        field(WanLink::new(0.0, 0.05).unwrap_err()),
        "link.bandwidth_bps"
    );
    assert_eq!(field(WanLink::new(1e6, -1.0).unwrap_err()), "link.rtt_s");
    let params = FractionParams::default();
    let e = predict_fractions(&reader(), &wan(), &params, 1.5, 0.0).unwrap_err();
    assert_eq!(field(e.clone()), "memory_fraction");
    assert!(e.to_string().contains("a fraction from 0 to 1"), "{e}");
    let e = choose_fractions(&reader(), &wan(), &params, 0.0).unwrap_err();
    assert_eq!(field(e), "budget_s");
    let coarse = FractionParams {
        grid_steps: 0,
        ..params
    };
    let e = choose_fractions(&reader(), &wan(), &coarse, 10.0).unwrap_err();
    assert_eq!(field(e), "grid_steps");
    // A deserialized profile is checked too.
    let mut bad = reader();
    bad.disk.virtual_bytes = 0;
    let e = predict_fractions(&bad, &wan(), &params, 0.5, 0.5).unwrap_err();
    assert_eq!(field(e), "disk.virtual_bytes");
}

fn any_profile() -> impl Strategy<Value = WanProfile> {
    (
        (64u64..4096, 0.0..1.0f64, 0.0..200e6f64),
        (64u64..8192, 0.0..50e6f64, 0.0..50e6f64),
        prop::collection::vec((0u64..1000, 0u64..1000), 0..16),
    )
        .prop_map(|((mem_mib, wss_share, dirty), (disk_mib, r, w), counts)| {
            let memory_bytes = mem_mib * MIB;
            let wss = ((memory_bytes as f64 * wss_share) as u64).max(4096);
            WanProfile {
                memory: memory(memory_bytes, wss, dirty),
                disk: disk(
                    disk_mib * MIB,
                    r,
                    w,
                    counts
                        .into_iter()
                        .map(|(reads, writes)| RegionCount { reads, writes })
                        .collect(),
                ),
            }
        })
}

const FRACTIONS: [f64; 5] = [0.0, 0.1, 0.5, 0.9, 1.0];

proptest! {
    // Seeded: the same 64 profiles every run.
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: proptest::test_runner::RngSeed::Fixed(12),
        ..ProptestConfig::default()
    })]

    #[test]
    fn more_bandwidth_never_takes_longer(
        vm in any_profile(),
        bw in 1e6..100e6f64,
        more in 1.0..4.0f64,
        rtt in 0.0..0.2f64,
    ) {
        let slow = WanLink::new(bw, rtt).expect("valid");
        let fast = WanLink::new(bw * more, rtt).expect("valid");
        for params in [at_link_rate(), FractionParams::default()] {
            for m in FRACTIONS {
                for s in FRACTIONS {
                    let a = predict_with(&params, &vm, &slow, m, s);
                    let b = predict_with(&params, &vm, &fast, m, s);
                    prop_assert!(b.total_s <= a.total_s * (1.0 + 1e-9), "m {m} s {s}: {a:?} vs {b:?}");
                }
            }
        }
    }

    #[test]
    fn more_ahead_never_waits_more(
        vm in any_profile(),
        bw in 1e6..100e6f64,
        rtt in 0.0..0.2f64,
    ) {
        let link = WanLink::new(bw, rtt).expect("valid");
        for params in [at_link_rate(), FractionParams::default()] {
            for (i, m) in FRACTIONS.iter().enumerate() {
                for (j, s) in FRACTIONS.iter().enumerate() {
                    let p = predict_with(&params, &vm, &link, *m, *s);
                    prop_assert!(p.remote_waits >= 0.0 && p.agility_s >= 0.0);
                    for m2 in &FRACTIONS[i..] {
                        for s2 in &FRACTIONS[j..] {
                            let q = predict_with(&params, &vm, &link, *m2, *s2);
                            prop_assert!(
                                q.remote_waits <= p.remote_waits * (1.0 + 1e-9) + 1e-9,
                                "({m},{s}) -> ({m2},{s2}): {p:?} vs {q:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

fn req(write: bool, offset_bytes: u64, len_bytes: u64) -> DiskRequest {
    DiskRequest {
        write,
        offset_bytes,
        len_bytes,
    }
}

#[test]
fn requests_count_by_bytes_in_the_regions_they_cover() {
    // 4 regions of 1 MiB; a write across the first boundary, a read at the end running past it.
    let counts = count_regions(
        4 * MIB,
        4,
        [
            req(true, MIB - 4096, 8192),
            req(false, 4 * MIB - 4096, 65536),
            req(false, 2 * MIB, 4096),
        ],
    );
    let reads: Vec<u64> = counts.iter().map(|c| c.reads).collect();
    let writes: Vec<u64> = counts.iter().map(|c| c.writes).collect();
    assert_eq!(writes, [4096, 4096, 0, 0]);
    assert_eq!(
        reads,
        [0, 0, 4096, 4096],
        "bytes past the end are not counted"
    );
    assert!(count_regions(4 * MIB, 0, [req(true, 0, 1)]).is_empty());
    assert!(count_regions(0, 4, [req(true, 0, 1)]).is_empty());
}

proptest! {
    /// Uneven regions (sizes that do not divide): every byte inside the disk is counted once,
    /// in the region its offset maps to.
    #[test]
    fn region_counts_add_up_to_the_bytes_inside_the_disk(
        virtual_bytes in 1u64..10_000,
        regions in 1usize..40,
        reqs in proptest::collection::vec((any::<bool>(), 0u64..12_000, 0u64..3_000), 0..20),
    ) {
        let requests: Vec<DiskRequest> = reqs.iter().map(|&(w, o, l)| req(w, o, l)).collect();
        let counts = count_regions(virtual_bytes, regions, requests.clone());
        let mut expected = vec![RegionCount::default(); regions];
        for r in &requests {
            for o in r.offset_bytes..(r.offset_bytes + r.len_bytes).min(virtual_bytes) {
                let i = (o as u128 * regions as u128 / virtual_bytes as u128) as usize;
                if r.write { expected[i].writes += 1 } else { expected[i].reads += 1 }
            }
        }
        prop_assert_eq!(counts, expected);
    }
}
