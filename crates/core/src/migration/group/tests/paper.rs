//! The scenario of issue 11's experiment, after the paper's (seed 004: co-located VMs whose
//! traffic runs mostly one way, 1 Gbit/s NICs): four VMs, two mostly sending and two mostly
//! receiving, leave one host, one at a time. Same
//! units and single-VM arithmetic as `hand`: 1 GB each, nothing dirtied, so at bandwidth B
//! pre-copy takes `1e9 / B` s (lost work 0.3 s, its stop) and post-copy `0.05 + 1e9 / B` s
//! (lost work 0.05 s).

use super::*;

const ALL: [Technique; 3] = Technique::CONCRETE;

/// out1, out2 send 80 MB/s and receive 2; in1, in2 receive 80 and send 2; all to `dst`.
pub(super) fn four() -> Group {
    Group {
        source: nic("src", GBIT, GBIT),
        destinations: vec![nic("dst", GBIT, GBIT)],
        vms: vec![
            quiet("in1", 80.0, 2.0, "dst"),
            quiet("out1", 2.0, 80.0, "dst"),
            quiet("in2", 80.0, 2.0, "dst"),
            quiet("out2", 2.0, 80.0, "dst"),
        ],
    }
}

/// 1e9 bytes at `mb` MB/s, seconds.
fn gb_at(mb: f64) -> f64 {
    1e9 / (mb * 1e6)
}

/// Traffic-sensitive (senders post-copy first, receivers pre-copy last), fair share:
/// - out1 (post): src's transmit side has out2's 80, in1's and in2's 2 and the stream: 2 and
///   2, then 121 split, 60.5 each (out2 loses 19.5). 0.05 + 1e9/60.5e6 = 16.578926 s.
/// - out2 (post): src tx has 2 + 2 + stream (121), dst rx 2 + 2 + stream: 121 MB/s,
///   0.05 + 8.264463 = 8.314463 s.
/// - in1 (pre): the same links, 121 MB/s: 8.264463 s.
/// - in2 (pre): dst's receive side has out1's and out2's 2, in1's 80 (arrived) and the stream:
///   60.5 each (in1 loses 19.5). 16.528926 s.
/// - evacuation 49.686778 s. Lost work: out2 0.05 + 19.5 * 16.578926 / 82 = 3.992552 s, in1
///   0.3 + 19.5 * 16.528926 / 82 = 4.230664 s, out1 0.05, in2 0.3: 8.573216 s.
///
/// All pre-copy, senders first: out1's stream shares src tx with both senders' 80: 121 / 3 =
/// 40.33 MB/s, 24.793388 s; out2 then at 60.5, 16.528926 s; in1 at 121, 8.264463 s; in2 at
/// 60.5, 16.528926 s: 66.115703 s.
///
/// All post-copy, senders first: out1 16.578926 s and out2 8.314463 s as above; in1 shares dst
/// rx with its own 80: 60.5, 16.578926 s; in2 with both receivers' 80: 40.33, 24.843388 s:
/// 66.315703 s.
#[test]
fn traffic_sensitive_beats_both_uniform_plans_on_the_papers_four_vms() {
    let g = four();
    let params = single_vm_weights();
    let plan = choose_group(&g, &params, &ALL).expect("plan");
    assert_eq!(plan.search.map(|s| s.coverage), Some(Coverage::Full));
    let picks: Vec<(&str, Technique)> = plan
        .vms
        .iter()
        .map(|v| (v.name.as_str(), v.technique))
        .collect();
    assert_eq!(
        picks,
        [
            ("out1", Technique::Postcopy),
            ("out2", Technique::Postcopy),
            ("in1", Technique::Precopy),
            ("in2", Technique::Precopy),
        ],
        "{}",
        plan.reason
    );
    let times = [
        0.05 + gb_at(60.5),
        0.05 + gb_at(121.0),
        gb_at(121.0),
        gb_at(60.5),
    ];
    let mut start = 0.0;
    for (v, t) in plan.vms.iter().zip(times) {
        close(v.start_s, start, &format!("{} start", v.name));
        close(v.migration_s, t, &format!("{} time", v.name));
        start += t;
    }
    close(plan.evacuation_s, 49.686778, "evacuation");
    let (out2, in1) = (vm(&plan, "out2"), vm(&plan, "in1"));
    close(out2.app_lost_bps, 19.5e6, "out2 loss");
    assert_eq!(out2.app_lost_during, ["out1"]);
    close(out2.app_lost_bytes, 19.5e6 * times[0], "out2 bytes");
    close(in1.app_lost_bps, 19.5e6, "in1 loss");
    assert_eq!(in1.app_lost_during, ["in2"]);
    for v in ["out1", "in2"] {
        assert_eq!(vm(&plan, v).app_lost_bps, 0.0);
        assert!(vm(&plan, v).app_lost_during.is_empty());
    }
    close(
        vm(&plan, "out2").lost_work_s,
        0.05 + 19.5 * times[0] / 82.0,
        "out2 lost work",
    );
    close(
        vm(&plan, "in1").lost_work_s,
        0.3 + 19.5 * times[3] / 82.0,
        "in1 lost work",
    );
    close(plan.lost_work_s, 8.573216, "lost work");

    let pre = predict_group(&g, &params, &everyone(&g, Technique::Precopy), &ALL).expect("pre");
    close(pre.evacuation_s, 66.115703, "all pre-copy");
    let post = predict_group(&g, &params, &everyone(&g, Technique::Postcopy), &ALL).expect("post");
    close(post.evacuation_s, 66.315703, "all post-copy");
    for other in [&pre, &post] {
        assert!(plan.evacuation_s < other.evacuation_s);
        assert!(plan.lost_work_s < other.lost_work_s);
        assert!(plan.objective < other.objective);
    }
}

/// Whatever order the uniform plans are given, they stay behind: in every one of the 24
/// orders, all pre-copy and all post-copy take longer than the traffic-sensitive plan.
#[test]
fn no_order_saves_a_uniform_plan() {
    let g = four();
    let params = single_vm_weights();
    let plan = choose_group(&g, &params, &ALL).expect("plan");
    let mut orders = Vec::new();
    for a in 0..4 {
        for b in (0..4).filter(|b| *b != a) {
            for c in (0..4).filter(|c| *c != a && *c != b) {
                let d = 6 - a - b - c;
                orders.push(vec![a, b, c, d]);
            }
        }
    }
    assert_eq!(orders.len(), 24);
    for order in orders {
        for t in [Technique::Precopy, Technique::Postcopy] {
            let s = Schedule {
                techniques: vec![t; 4],
                order: order.clone(),
                concurrency: 1,
            };
            let other = predict_group(&g, &params, &s, &ALL).expect("uniform");
            assert!(
                plan.evacuation_s < other.evacuation_s,
                "{t} in {order:?}: {} s",
                other.evacuation_s
            );
        }
    }
}

/// Two at a time (the source may send two migrations): the search may run them together; it
/// still picks post-copy for the senders and pre-copy for the receivers, and still beats both
/// uniform plans at their best concurrency.
#[test]
fn with_two_at_a_time_allowed() {
    let g = four();
    let params = GroupParams {
        max_concurrent: 2,
        ..single_vm_weights()
    };
    let plan = choose_group(&g, &params, &ALL).expect("plan");
    for v in &plan.vms {
        let want = if v.name.starts_with("out") {
            Technique::Postcopy
        } else {
            Technique::Precopy
        };
        assert_eq!(v.technique, want, "{}", plan.reason);
    }
    for t in [Technique::Precopy, Technique::Postcopy] {
        for k in [1, 2] {
            let s = Schedule {
                concurrency: k,
                ..everyone(&g, t)
            };
            let other = predict_group(&g, &params, &s, &ALL).expect("uniform");
            assert!(
                plan.evacuation_s < other.evacuation_s,
                "{t} x{k}: {}",
                other.evacuation_s
            );
        }
    }
}

/// The explanation names each VM's traffic, what its migration gets, and the capacities.
#[test]
fn the_explanation_names_the_traffic_figures() {
    let plan = choose_group(&four(), &single_vm_weights(), &ALL).expect("plan");
    let r = &plan.reason;
    assert!(r.contains("src transmits up to 125.0 MB/s"), "{r}");
    assert!(r.contains("dst receives up to 125.0 MB/s"), "{r}");
    assert!(r.contains("out1 sends 80.0 MB/s (receives 2.0)"), "{r}");
    assert!(r.contains("in2 receives 80.0 MB/s (sends 2.0)"), "{r}");
    assert!(r.contains("60.5 MB/s"), "{r}");
    assert!(r.contains("all pre-copy 66.1 s"), "{r}");
    assert!(r.contains("all post-copy 66.3 s"), "{r}");
    assert!(r.contains("every technique in every order"), "{r}");
    let out1 = &vm(&plan, "out1").reason;
    assert!(
        out1.contains("shares src's transmit side with in1 2.0, in2 2.0, out2 80.0 MB/s"),
        "{out1}"
    );
    let in1 = &vm(&plan, "in1").reason;
    assert!(
        in1.contains("loses up to 19.5 MB/s (24%), while in2 migrates, 322.3 MB in all (3.93 s of its 82.0 MB/s)"),
        "{in1}"
    );
}
