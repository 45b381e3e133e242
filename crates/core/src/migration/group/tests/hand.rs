//! Cases worked out by hand. Units: MB/s = 1e6 bytes/s; every VM has 1 GB (1e9 bytes) and,
//! unless said otherwise, dirties nothing, so the single-VM model gives, at bandwidth B:
//! pre-copy `1e9 / B` s, of which a 0.3 s stop (QEMU stops the guest once the rest fits
//! `B * 0.3 s`, and sends that rest at B), lost work 0.3 s; post-copy `0.05 + 1e9 / B` s, a
//! 0.05 s switchover, lost work 0.05 s, post-copy phase `1e9 / B` s.

use super::*;
use crate::migration::cost::{choose, predict, CostParams, LinkProfile};

const ALL: [Technique; 3] = Technique::CONCRETE;

/// Two VMs on 1 Gbit/s (125 MB/s each way), both to `dst`, one at a time, fair share:
/// vm-out sends 80 and receives 2, vm-in receives 80 and sends 2.
///
/// Traffic-sensitive (vm-out post-copy first, then vm-in pre-copy):
/// - vm-out's wave: it runs on dst, so src's transmit side carries vm-in's 2 MB/s and the
///   migration (gets 123), dst's receive side vm-out's own 2 and the migration (123): 123 MB/s,
///   0.05 + 1e9/123e6 = 8.180081 s; nobody loses anything.
/// - vm-in's wave: on src until switchover: src tx has vm-in's 2 + migration (123); dst rx has
///   vm-out's 2 + migration (123): 1e9/123e6 = 8.130081 s.
/// - evacuation 16.310163 s; lost work 0.05 + 0.3 = 0.35 s.
/// - objective = each VM's single-VM score (risk + degradation % of a 10 s window + 0.01 a
///   second), nothing lost to contention: vm-out 10 * 0.05 + 8.130081 (post-copy phase) +
///   100 * 0.05 / 10 + 0.01 * 8.180081 = 9.211882; vm-in 10 * 0.3 + 100 * 0.3 / 10 + 0.01 *
///   8.130081 = 6.081301; 15.293183.
///
/// All pre-copy (vm-out first, the traffic order, which is also its best):
/// - vm-out's wave: src tx has vm-out's 80, vm-in's 2 and the migration: vm-in keeps its 2,
///   the other two split 123: 61.5 each. 1e9/61.5e6 = 16.260163 s; vm-out loses 80 - 61.5 =
///   18.5 MB/s, 18.5e6 * 16.260163 = 300.813 MB, i.e. 300.813 / 82 = 3.668453 s of its
///   82 MB/s.
/// - vm-in's wave as above: 8.130081 s.
/// - evacuation 24.390244 s; lost work 0.3 + 3.668453 + 0.3 = 4.268453 s.
///
/// All post-copy (vm-out first):
/// - vm-out's wave as in traffic-sensitive: 8.180081 s.
/// - vm-in's wave: it runs on dst, whose receive side has vm-out's 2, vm-in's 80 and the
///   migration: 61.5 each for the last two. 0.05 + 16.260163 = 16.310163 s; vm-in loses 18.5
///   MB/s, 18.5e6 * 16.310163 / 82e6 = 3.679732 s.
/// - evacuation 24.490244 s; lost work 0.05 + 0.05 + 3.679732 = 3.779732 s.
#[test]
fn traffic_sensitive_beats_all_precopy_and_all_postcopy() {
    let g = pair();
    let params = single_vm_weights();
    let plan = choose_group(&g, &params, &ALL).expect("plan");
    assert_eq!(plan.schedule.concurrency, 1);
    let names: Vec<&str> = plan.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["vm-out", "vm-in"]);
    let (out, inb) = (vm(&plan, "vm-out"), vm(&plan, "vm-in"));
    assert_eq!(out.technique, Technique::Postcopy);
    assert_eq!(inb.technique, Technique::Precopy);
    close(out.bandwidth_bps, 123e6, "vm-out bandwidth");
    close(inb.bandwidth_bps, 123e6, "vm-in bandwidth");
    close(out.migration_s, 8.180081, "vm-out time");
    close(inb.start_s, 8.180081, "vm-in start");
    close(inb.migration_s, 8.130081, "vm-in time");
    close(plan.evacuation_s, 16.310163, "evacuation");
    close(plan.lost_work_s, 0.35, "lost work");
    close(plan.objective, 15.293183, "objective");
    assert_eq!(out.app_lost_bps, 0.0);
    assert_eq!(inb.app_lost_bps, 0.0);
    // Over the 16.31 s evacuation: 0.05 s and 0.3 s lost.
    close(
        out.degradation_pct,
        100.0 * 0.05 / 16.310163,
        "vm-out degradation",
    );
    close(
        inb.degradation_pct,
        100.0 * 0.3 / 16.310163,
        "vm-in degradation",
    );

    let pre = predict_group(&g, &params, &everyone(&g, Technique::Precopy), &ALL).expect("pre");
    close(
        vm(&pre, "vm-out").bandwidth_bps,
        61.5e6,
        "pre: vm-out bandwidth",
    );
    close(vm(&pre, "vm-out").app_lost_bps, 18.5e6, "pre: vm-out loss");
    close(
        vm(&pre, "vm-out").app_lost_share,
        18.5 / 82.0,
        "pre: vm-out share",
    );
    close(pre.evacuation_s, 24.390244, "pre: evacuation");
    close(pre.lost_work_s, 4.268453, "pre: lost work");

    let post = predict_group(&g, &params, &everyone(&g, Technique::Postcopy), &ALL).expect("post");
    close(
        vm(&post, "vm-in").bandwidth_bps,
        61.5e6,
        "post: vm-in bandwidth",
    );
    close(vm(&post, "vm-in").app_lost_bps, 18.5e6, "post: vm-in loss");
    close(post.evacuation_s, 24.490244, "post: evacuation");
    close(post.lost_work_s, 3.779732, "post: lost work");

    for other in [&pre, &post] {
        assert!(plan.evacuation_s < other.evacuation_s);
        assert!(plan.lost_work_s < other.lost_work_s);
        // Per VM too, in seconds of full throughput (percentages are over each plan's own
        // evacuation window, so a longer evacuation dilutes them).
        for v in &plan.vms {
            assert!(v.lost_work_s <= vm(other, &v.name).lost_work_s + 1e-9);
        }
    }
    // The alternatives the plan reports are the same forecasts.
    let alt = |label: &str| {
        plan.alternatives
            .iter()
            .find(|a| a.label == label)
            .unwrap_or_else(|| panic!("{label}"))
    };
    close(alt("all pre-copy").evacuation_s, 24.390244, "alt pre");
    close(alt("all post-copy").evacuation_s, 24.490244, "alt post");
    close(alt("paper rule").evacuation_s, 16.310163, "alt rule");
}

#[test]
fn the_reason_names_the_traffic_figures() {
    let plan = choose_group(&pair(), &single_vm_weights(), &ALL).expect("plan");
    let out = &vm(&plan, "vm-out").reason;
    assert!(out.contains("vm-out sends 80.0 MB/s"), "{out}");
    assert!(out.contains("stays off src's"), "{out}");
    assert!(out.contains("123.0 MB/s"), "{out}");
    let inb = &vm(&plan, "vm-in").reason;
    assert!(inb.contains("vm-in receives 80.0 MB/s"), "{inb}");
    assert!(inb.contains("dst's receive side"), "{inb}");
    assert!(plan.reason.contains("net senders first"), "{}", plan.reason);
    assert!(
        plan.reason.contains("all pre-copy 24.4 s"),
        "{}",
        plan.reason
    );
    assert!(plan.reason.contains(out.as_str()), "{}", plan.reason);
}

#[test]
fn the_paper_rule_as_a_baseline() {
    let mut g = pair();
    g.vms.push(quiet("vm-idle", 0.0, 0.0, "dst"));
    let rule = paper_rule(&g, &single_vm_weights(), &ALL).expect("rule");
    assert_eq!(
        rule,
        [Technique::Postcopy, Technique::Precopy, Technique::Auto]
    );
    // Post-copy not allowed: the sender gets the single-VM choice.
    let rule = paper_rule(&g, &single_vm_weights(), &[Technique::Precopy]).expect("rule");
    assert_eq!(rule[0], Technique::Auto);
    assert_eq!(traffic_order(&g), [0, 2, 1]);
}

/// Without traffic, nothing contends: each migration gets the whole 125 MB/s, and each VM's
/// technique is exactly what the single-VM model picks at 125 MB/s.
#[test]
fn idle_vms_fall_back_to_the_single_vm_choice() {
    let mib = 1u64 << 20;
    let profiles = [
        (0, 0.0),           // nothing dirty: pre-copy
        (256 * mib, 20e6),  // moderate: pre-copy converges, post-copy would fault
        (512 * mib, 500e6), // hot: pre-copy never converges
    ];
    let mut g = Group {
        source: nic("src", GBIT, GBIT),
        destinations: vec![nic("dst", GBIT, GBIT)],
        vms: Vec::new(),
    };
    for (i, (wss, dirty)) in profiles.iter().enumerate() {
        let mut v = quiet(&format!("idle{i}"), 0.0, 0.0, "dst");
        v.profile.wss_bytes = *wss;
        v.profile.dirty_rate_bps = *dirty;
        g.vms.push(v);
    }
    let params = single_vm_weights();
    let plan = choose_group(&g, &params, &ALL).expect("plan");
    let link = LinkProfile {
        bandwidth_bps: GBIT,
    };
    let cost = CostParams {
        unthrottled_bps: Some(GBIT),
        ..params.cost
    };
    let mut picked = Vec::new();
    for v in &g.vms {
        let single = choose(&v.profile, &link, &cost, &ALL);
        let f = vm(&plan, &v.name);
        assert_eq!(f.technique, single.technique, "{}", f.reason);
        close(f.bandwidth_bps, GBIT, "bandwidth");
        let p = predict(single.technique, &v.profile, &link, &cost);
        close(f.migration_s, p.total_s, "time");
        assert!(f.reason.contains("single-VM choice"), "{}", f.reason);
        picked.push(f.technique);
    }
    assert_eq!(picked[0], Technique::Precopy);
    assert_ne!(picked[2], Technique::Precopy);
}

/// vm-full sends 125 MB/s: src's transmit side is full before any migration.
/// - pre-copy, fair share: it and the migration get 62.5 each; 1e9 / 62.5e6 = 16 s; it loses
///   62.5 MB/s (50%).
/// - post-copy: it sends from dst (whose transmit side no migration uses); the migration has
///   src's transmit side to itself: 125 MB/s, 0.05 + 8 = 8.05 s, nothing lost.
/// - application first: pre-copy gets its floor, 5% of 125 = 6.25 MB/s: 160 s, and takes
///   those 6.25 MB/s (5%) from it.
/// - migration first: pre-copy takes all 125 MB/s: 8 s, and all of vm-full's traffic (100%).
#[test]
fn a_link_fully_used_in_one_direction() {
    let g = Group {
        source: nic("src", GBIT, GBIT),
        destinations: vec![nic("dst", GBIT, GBIT)],
        vms: vec![quiet("vm-full", 0.0, 125.0, "dst")],
    };
    let fair = single_vm_weights();
    let plan = choose_group(&g, &fair, &ALL).expect("plan");
    let f = vm(&plan, "vm-full");
    assert_eq!(f.technique, Technique::Postcopy, "{}", f.reason);
    close(f.bandwidth_bps, 125e6, "post bandwidth");
    close(f.migration_s, 8.05, "post time");
    assert_eq!(f.app_lost_bps, 0.0);

    let pre = |split: Split| {
        let params = GroupParams {
            split,
            ..single_vm_weights()
        };
        let s = everyone(&g, Technique::Precopy);
        let plan = predict_group(&g, &params, &s, &ALL).expect("pre");
        plan.vms[0].clone()
    };
    let f = pre(Split::FairShare);
    close(f.bandwidth_bps, 62.5e6, "fair bandwidth");
    close(f.migration_s, 16.0, "fair time");
    close(f.app_lost_bps, 62.5e6, "fair loss");
    close(f.app_lost_share, 0.5, "fair share");
    let f = pre(Split::ApplicationFirst);
    close(f.bandwidth_bps, 6.25e6, "app-first bandwidth");
    close(f.migration_s, 160.0, "app-first time");
    close(f.app_lost_share, 0.05, "app-first share");
    let f = pre(Split::MigrationFirst);
    close(f.bandwidth_bps, 125e6, "migration-first bandwidth");
    close(f.migration_s, 8.0, "migration-first time");
    close(f.app_lost_share, 1.0, "migration-first share");
}

/// The mirror image: vm-fill receives 125 MB/s. Post-copy would run it on dst, whose receive
/// side its migration needs: 62.5 each, 0.05 + 16 s. Pre-copy keeps its traffic on src's
/// receive side, which no migration uses: 125 MB/s, 8 s.
#[test]
fn a_receive_side_fully_used_keeps_the_vm_on_precopy() {
    let g = Group {
        source: nic("src", GBIT, GBIT),
        destinations: vec![nic("dst", GBIT, GBIT)],
        vms: vec![quiet("vm-fill", 125.0, 0.0, "dst")],
    };
    let params = single_vm_weights();
    let plan = choose_group(&g, &params, &ALL).expect("plan");
    assert_eq!(plan.vms[0].technique, Technique::Precopy);
    close(plan.evacuation_s, 8.0, "pre time");
    let post = predict_group(&g, &params, &everyone(&g, Technique::Postcopy), &ALL).expect("p");
    close(post.vms[0].bandwidth_bps, 62.5e6, "post bandwidth");
    close(post.evacuation_s, 16.05, "post time");
}

/// Two idle VMs to two destinations whose receive sides (1 Gbit/s) are narrower than the
/// source's transmit side (10 Gbit/s): one at a time, 8 s + 8 s; two at a time, both at
/// 125 MB/s at once, 8 s.
#[test]
fn concurrency_pays_when_the_destinations_are_the_bottleneck() {
    let g = Group {
        source: nic("src", 10.0 * GBIT, 10.0 * GBIT),
        destinations: vec![nic("d1", GBIT, GBIT), nic("d2", GBIT, GBIT)],
        vms: vec![quiet("a", 0.0, 0.0, "d1"), quiet("b", 0.0, 0.0, "d2")],
    };
    let one = choose_group(&g, &single_vm_weights(), &ALL).expect("one");
    assert_eq!(one.schedule.concurrency, 1);
    close(one.evacuation_s, 16.0, "one at a time");
    let params = GroupParams {
        max_concurrent: 2,
        ..single_vm_weights()
    };
    let two = choose_group(&g, &params, &ALL).expect("two");
    assert_eq!(two.schedule.concurrency, 2);
    close(two.evacuation_s, 8.0, "two at a time");
    for v in &two.vms {
        close(v.bandwidth_bps, GBIT, "each");
        assert_eq!(v.start_s, 0.0);
    }
}

/// A receiver the rule would pre-copy, but whose 500 MB/s of dirtying never lets pre-copy
/// converge at 123 MB/s: the search moves it another way and says what the rule would cost.
#[test]
fn a_hot_receiver_goes_against_the_rule_and_says_why() {
    let mut g = pair();
    g.vms[1].profile.wss_bytes = 512 << 20;
    g.vms[1].profile.dirty_rate_bps = 500e6;
    let plan = choose_group(&g, &single_vm_weights(), &ALL).expect("plan");
    let hot = vm(&plan, "vm-in");
    assert_ne!(hot.technique, Technique::Precopy);
    assert!(hot.prediction.converges);
    assert!(
        hot.reason.contains("vm-in receives 80.0 MB/s"),
        "{}",
        hot.reason
    );
    assert!(hot.reason.contains(", yet "), "{}", hot.reason);
    assert!(
        hot.reason.contains("precopy would not converge"),
        "{}",
        hot.reason
    );
}
