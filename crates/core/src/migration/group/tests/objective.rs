//! The defaults' objective and predictions (set from issue 11's measurement, BENCHMARKS.md):
//! the bytes a migration really moves, post-copy's stalls priced as lost work, evacuation
//! time charged by the second, post-copy exposure at a tenth of the single-VM price. Units as
//! in `hand`: MB/s = 1e6 bytes/s, quiet VMs of 1 GB that dirty nothing, so at bandwidth B
//! pre-copy takes `size / B` s with a 0.3 s stop, post-copy `0.05 + size / B` s.

use super::*;

const ALL: [Technique; 3] = Technique::CONCRETE;

fn alone(vm: LeavingVm) -> Group {
    Group {
        source: nic("src", GBIT, GBIT),
        destinations: vec![nic("dst", GBIT, GBIT)],
        vms: vec![vm],
    }
}

/// A guest that moves half its memory: one pass of 0.5 GB at 125 MB/s, 4 s. A figure above the
/// memory counts as the memory (8 s); none, all of it (8 s).
#[test]
fn a_migration_moves_the_bytes_measured_not_the_whole_memory() {
    let params = GroupParams::default();
    let time = |moved: Option<u64>| {
        let mut v = quiet("half", 0.0, 0.0, "dst");
        v.moved_bytes = moved;
        let g = alone(v);
        let plan =
            predict_group(&g, &params, &everyone(&g, Technique::Precopy), &ALL).expect("plan");
        plan.evacuation_s
    };
    close(time(Some(GB / 2)), 4.0, "half moved");
    close(time(Some(2 * GB)), 8.0, "more than memory");
    close(time(None), 8.0, "unmeasured");
    // The working set is bounded by what moves.
    let mut v = quiet("half", 0.0, 0.0, "dst");
    v.profile.wss_bytes = GB;
    v.moved_bytes = Some(GB / 4);
    assert_eq!(v.moving_profile().wss_bytes, GB / 4);
    assert_eq!(v.moving_profile().memory_bytes, GB / 4);
    // Older inputs without the field still read.
    let json = r#"{"name":"x","profile":{"memory_bytes":1,"wss_bytes":0,"dirty_rate_bps":0.0},
        "traffic":{"rx_bps":0.0,"tx_bps":0.0},"destination":"dst"}"#;
    let old: LeavingVm = serde_json::from_str(json).expect("reads");
    assert_eq!(old.moved_bytes, None);
}

/// Post-copy alone at 125 MB/s: 0.05 + 8 s. The single-VM model's lost work is its 0.05 s
/// switchover (nothing dirtied, nothing faults); the group's floor is 0.05 + 0.7 x 8 = 5.65 s,
/// so 5.6 s more. Objective: risk 10 x 0.05 + 0.1 x 8 = 1.3, the model's degradation
/// 100 x 0.05 / 10 = 0.5, 0.01 x 8.05, 10 x 5.6 for the stall, 1 x 8.05 for the evacuation:
/// 65.9305. Pre-copy: 8 s, its 0.3 s stop: 10 x 0.3 + 100 x 0.3 / 10 + 0.01 x 8 + 8 = 14.08,
/// the choice.
#[test]
fn post_copy_pays_for_its_stalls() {
    let g = alone(quiet("solo", 0.0, 0.0, "dst"));
    let params = GroupParams::default();
    let post = predict_group(&g, &params, &everyone(&g, Technique::Postcopy), &ALL).expect("p");
    let f = &post.vms[0];
    close(f.migration_s, 8.05, "post time");
    close(f.lost_work_s, 5.65, "post lost work");
    close(f.degradation_pct, 100.0 * 5.65 / 10.0, "post degradation");
    close(post.objective, 65.9305, "post objective");
    assert!(
        f.reason.contains(
            "waiting on its pages over the link for 8.0 s of post-copy costs it 5.60 s more"
        ),
        "{}",
        f.reason
    );
    let plan = choose_group(&g, &params, &ALL).expect("plan");
    assert_eq!(plan.vms[0].technique, Technique::Precopy, "{}", plan.reason);
    close(plan.objective, 14.08, "pre objective");
    // With the factor at 0 only the model's own 0.05 s is left.
    let unstalled = GroupParams {
        postcopy_stall_factor: 0.0,
        ..GroupParams::default()
    };
    let p = predict_group(&g, &unstalled, &everyone(&g, Technique::Postcopy), &ALL).expect("p");
    close(p.vms[0].lost_work_s, 0.05, "unstalled lost work");
}

/// vm-fill receives 125 MB/s. Post-copied, it runs on dst while its memory arrives, stalled
/// 0.7 of the time: only 0.3 x 125 = 37.5 MB/s of its traffic shares dst's receive side, and
/// its migration gets the other 87.5 (not the 62.5 of a full-rate flow): 0.05 + 1e9 / 87.5e6
/// = 11.478571 s; it loses nothing to contention, 0.05 + 0.7 x 11.428571 = 8.05 s to stalls.
#[test]
fn a_stalled_guest_leaves_its_link_to_its_migration() {
    let g = alone(quiet("vm-fill", 125.0, 0.0, "dst"));
    let params = GroupParams::default();
    let post = predict_group(&g, &params, &everyone(&g, Technique::Postcopy), &ALL).expect("p");
    let f = &post.vms[0];
    close(f.bandwidth_bps, 87.5e6, "bandwidth");
    close(f.migration_s, 0.05 + 1e9 / 87.5e6, "time");
    assert_eq!(f.app_lost_bps, 0.0);
    close(f.lost_work_s, 0.05 + 0.7 * 1e9 / 87.5e6, "lost work");
}

/// Two quiet VMs without traffic, src transmitting up to 200 MB/s, each to its own
/// destination receiving up to 125. One at a time each gets 125 MB/s: 8 s each, evacuation
/// 16 s; two at a time they split the source, 100 each: 10 s, evacuation 10 s.
/// - With no charge per second of evacuation (the weights before issue 11's measurement), one
///   at a time wins on each VM's 0.01 a second: 2 x (3 + 3 + 0.08) = 12.16 against 12.2.
/// - With the defaults' 1 point a second: 12.16 + 16 = 28.16 against 12.2 + 10 = 22.2, so both
///   slots are used and the evacuation is 6 s shorter, with nothing more lost.
#[test]
fn evacuation_time_counts_so_every_slot_is_used() {
    let g = Group {
        source: nic("src", 200e6, GBIT),
        destinations: vec![nic("d1", GBIT, GBIT), nic("d2", GBIT, GBIT)],
        vms: vec![quiet("a", 0.0, 0.0, "d1"), quiet("b", 0.0, 0.0, "d2")],
    };
    let two = |p: GroupParams| GroupParams {
        max_concurrent: 2,
        ..p
    };
    let old = choose_group(&g, &two(single_vm_weights()), &ALL).expect("old");
    assert_eq!(old.schedule.concurrency, 1, "{}", old.reason);
    close(old.evacuation_s, 16.0, "one at a time");
    close(old.objective, 12.16, "one at a time, weight 0");
    let new = choose_group(&g, &two(GroupParams::default()), &ALL).expect("new");
    assert_eq!(new.schedule.concurrency, 2, "{}", new.reason);
    close(new.evacuation_s, 10.0, "two at a time");
    close(new.objective, 22.2, "two at a time, defaults");
    close(new.lost_work_s, old.lost_work_s, "lost work");
    for v in &new.vms {
        assert_eq!(v.technique, Technique::Precopy);
        close(v.bandwidth_bps, 100e6, "each");
    }
}

#[test]
fn the_new_tunables_are_checked() {
    let g = alone(quiet("solo", 0.0, 0.0, "dst"));
    for (params, field) in [
        (
            GroupParams {
                postcopy_stall_factor: 1.5,
                ..GroupParams::default()
            },
            "postcopy_stall_factor",
        ),
        (
            GroupParams {
                postcopy_stall_factor: f64::NAN,
                ..GroupParams::default()
            },
            "postcopy_stall_factor",
        ),
        (
            GroupParams {
                postcopy_exposure_weight: -1.0,
                ..GroupParams::default()
            },
            "postcopy_exposure_weight",
        ),
    ] {
        match choose_group(&g, &params, &ALL) {
            Err(GroupError::Param { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

/// The experiment's setting (issue 11 part 4): 25 MB/s links each way, four 128 MiB guests
/// that move 97 MB (as measured) and dirty 2 MB/s, two sending and two receiving 8 MB/s, two
/// migrations at a time.
fn lab() -> Group {
    let guest = |name: &str, rx: f64, tx: f64| LeavingVm {
        name: name.into(),
        profile: VmProfile {
            memory_bytes: 128 << 20,
            wss_bytes: 128 << 20,
            dirty_rate_bps: 2e6,
        },
        moved_bytes: Some(97_000_000),
        traffic: Traffic {
            rx_bps: rx,
            tx_bps: tx,
        },
        destination: "h2".into(),
    };
    Group {
        source: nic("h1", 25e6, 25e6),
        destinations: vec![nic("h2", 25e6, 25e6)],
        vms: vec![
            guest("out1", 0.2e6, 8e6),
            guest("out2", 0.2e6, 8e6),
            guest("in1", 8e6, 0.2e6),
            guest("in2", 8e6, 0.2e6),
        ],
    }
}

/// Not hand-computed: the model against what was measured in that setting (3 repetitions,
/// BENCHMARKS.md). All post-copy two at a time: evacuation 19.1-20.9 s, 23.5-26.9 s of work
/// lost in all; the weights' own choice (pre-copy and hybrids one at a time): 29.4-30.7 s.
/// Before, the model forecast 32.3 s / 17% and 37.2 s. Each within a fifth. In the runs no
/// schedule was forecast to beat both uniform plans, so the defaults chose by the weights; in
/// this rounded setting (2 MB/s dirtied by every guest) the paper's rule two at a time just
/// is (17.3 s against 17.8, 11.9 s lost against 12.6), hence `beat_uniform` off here.
#[test]
fn the_lab_setting_forecasts_what_was_measured() {
    let g = lab();
    let params = GroupParams {
        max_concurrent: 2,
        beat_uniform: false,
        ..GroupParams::default()
    };
    let within = |got: f64, measured: f64, what: &str| {
        assert!(
            (got / measured - 1.0).abs() <= 0.2,
            "{what}: forecast {got:.1}, measured {measured:.1}"
        );
    };
    let post = Schedule {
        concurrency: 2,
        ..everyone(&g, Technique::Postcopy)
    };
    let post = predict_group(&g, &params, &post, &ALL).expect("post");
    within(post.evacuation_s, 19.8, "all post-copy evacuation");
    within(post.lost_work_s, 24.8, "all post-copy lost work");
    let plan = choose_group(&g, &params, &ALL).expect("plan");
    within(plan.evacuation_s, 30.4, "the choice's evacuation");
    // Post-copy's stalls outweigh the seconds it saves here: no VM is post-copied, and the
    // choice loses a tenth of what all post-copy does.
    assert!(
        plan.vms.iter().all(|v| v.technique != Technique::Postcopy),
        "{}",
        plan.reason
    );
    assert!(
        plan.lost_work_s < post.lost_work_s / 10.0,
        "{}",
        plan.reason
    );
    assert_eq!(plan.search.and_then(|s| s.beats_uniform), None);
}

/// The senders at 11 MB/s (88% of h1's transmit side between them). By the weights alone the
/// choice loses to all post-copy on evacuation time (what was measured with this setting:
/// 26.2 s against 19.9, BENCHMARKS.md); with `beat_uniform` (the default) it takes a schedule
/// forecast to beat all pre-copy and all post-copy, two at a time, on both evacuation time and
/// lost work: both senders post-copied, so that h1's transmit side carries only migrations.
#[test]
fn beating_both_uniform_plans_comes_before_the_weights() {
    let mut g = lab();
    for v in &mut g.vms[..2] {
        v.traffic.tx_bps = 11e6;
    }
    let params = GroupParams {
        max_concurrent: 2,
        ..GroupParams::default()
    };
    let uniform = |t: Technique| {
        let s = Schedule {
            concurrency: 2,
            ..everyone(&g, t)
        };
        predict_group(&g, &params, &s, &ALL).expect("uniform")
    };
    let (pre, post) = (uniform(Technique::Precopy), uniform(Technique::Postcopy));
    // A given schedule's reasons do not speak of a search that never ran.
    for f in pre.vms.iter().chain(&post.vms) {
        assert!(!f.reason.contains("budget ran out"), "{}", f.reason);
    }
    assert!(
        pre.vms
            .iter()
            .any(|f| f.reason.contains("this schedule was given, not chosen")),
        "{}",
        pre.reason
    );
    let plan = choose_group(&g, &params, &ALL).expect("plan");
    assert_eq!(plan.search.and_then(|s| s.beats_uniform), Some(true));
    assert!(plan.evacuation_s < pre.evacuation_s.min(post.evacuation_s));
    assert!(plan.lost_work_s < pre.lost_work_s.min(post.lost_work_s));
    for sender in ["out1", "out2"] {
        let f = plan.vms.iter().find(|v| v.name == sender).expect("listed");
        assert_eq!(f.technique, Technique::Postcopy, "{}", plan.reason);
    }
    assert!(
        plan.reason.contains("forecast to beat all pre-copy and all post-copy (2 at a time) on both evacuation time and lost work"),
        "{}",
        plan.reason
    );
    // By the weights alone: a lower objective, but slower than all post-copy.
    let weights = GroupParams {
        beat_uniform: false,
        ..params.clone()
    };
    let by_weights = choose_group(&g, &weights, &ALL).expect("plan");
    assert!(by_weights.objective < plan.objective);
    assert!(
        by_weights.evacuation_s > post.evacuation_s,
        "{}",
        by_weights.reason
    );
    assert_eq!(by_weights.search.and_then(|s| s.beats_uniform), None);
}
