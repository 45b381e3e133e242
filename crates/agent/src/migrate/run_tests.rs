//! Tests of the source side's pure parts (`run.rs`).

use super::*;
use drover_qemu::qmp::ScriptedQmp;
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};

/// The reviewer's lab: a 10 MB/s link, and `auto` predicted as if it were 1000 MB/s.
#[test]
fn auto_assumes_no_faster_link_than_the_hosts() {
    let vm = VmProfile {
        memory_bytes: 256 << 20,
        wss_bytes: 64 << 20,
        dirty_rate_bps: 1e6,
    };
    let knobs = PlanKnobs::default();
    let fast = plan_with_link(Technique::Auto, &knobs, Some(&vm), None);
    let slow = plan_with_link(Technique::Auto, &knobs, Some(&vm), Some(10_000_000));
    assert_eq!(fast.assumed_link_bps, 1_000_000_000);
    assert_eq!(slow.assumed_link_bps, 10_000_000);
    assert!(
        slow.reason
            .contains("assumed bandwidth 10000000 B/s: this host's link"),
        "{}",
        slow.reason
    );
    // The run's time budget follows the slower link too: 256 MiB at 10 MB/s is ~27 s.
    assert!(slow.time_budget_ms(256 << 20) > fast.time_budget_ms(256 << 20) + 40_000);
    // A request that assumes a slower link than the host's keeps its own.
    let own = PlanKnobs {
        assumed_link_bps: 5_000_000,
        ..PlanKnobs::default()
    };
    let p = plan_with_link(Technique::Auto, &own, Some(&vm), Some(10_000_000));
    assert_eq!(p.assumed_link_bps, 5_000_000);
    assert!(
        p.reason.contains("the request's assumed_link_bps"),
        "{}",
        p.reason
    );
    // A cap is the bandwidth: the link is not assumed then.
    let capped = PlanKnobs {
        bandwidth_bps: Some(50_000_000),
        ..PlanKnobs::default()
    };
    let p = plan_with_link(Technique::Auto, &capped, Some(&vm), Some(10_000_000));
    assert!(!p.reason.contains("assumed bandwidth"), "{}", p.reason);
}

/// The reviewer's case (a), at the agent: once post-copy started, by the run's own watch or
/// by the record, a failed driver never drops the destination.
#[test]
fn a_failed_driver_drops_the_destination_only_before_the_switch() {
    use crate::migrate::test_record;
    let before = test_record(MigrationState::Running, false);
    let after = test_record(MigrationState::Running, true);
    assert!(may_abort_destination(false, Some(&before)));
    assert!(!may_abort_destination(true, Some(&before)), "seen here");
    assert!(!may_abort_destination(false, Some(&after)), "recorded");
    assert!(!may_abort_destination(false, None), "unknown: kept");
}

/// A destination's NBD address is taken only for a VM with a disk, on the destination.
#[test]
fn the_nbd_address_must_point_at_the_destination() {
    let d: std::net::IpAddr = "198.18.0.3".parse().expect("ip");
    let at = |a: &str| Some(a.parse::<std::net::SocketAddr>().expect("addr"));
    let ok = check_nbd("h2", &[d], at("198.18.0.3:10809"), true).expect("ok");
    assert_eq!(ok.map(|a| a.port()), Some(10809));
    assert_eq!(check_nbd("h2", &[d], None, false), Ok(None));
    for (nbd, disk, words) in [
        (None, true, "no NBD address for the VM's disk"),
        (at("198.18.0.3:10809"), false, "for a VM without a disk"),
        (
            at("8.8.8.8:10809"),
            true,
            "does not point at the destination h2",
        ),
        (
            at("127.0.0.1:10809"),
            true,
            "does not point at the destination h2",
        ),
        (at("198.18.0.3:0"), true, "expected a port from 1 to 65535"),
    ] {
        let err = check_nbd("h2", &[d], nbd, disk).expect_err(words);
        assert!(
            err.starts_with("destination's reply refused") && err.contains(words),
            "{err}"
        );
    }
}

#[test]
fn the_storage_figures_are_noted() {
    let mut r = StorageRecord {
        transferred_bytes: 67_108_864,
        disk_bytes: 67_108_864,
        mirror_to_ready_ms: Some(1200),
        ready_to_cancel_ms: Some(3400),
        cancel_to_concluded_ms: Some(5),
        write_blocking: false,
        error: None,
        ..StorageRecord::default()
    };
    assert_eq!(
        storage_note(&r),
        "storage pre-copy: the mirror processed 67108864 bytes (the disk once, zero areas \
         included, plus what the guest rewrote meanwhile); mirror to READY 1200 ms, READY to \
         cancel 3400 ms, last sync 5 ms"
    );
    r.ready_to_cancel_ms = None;
    r.error = Some("mirror-cancel: boom".into());
    let note = storage_note(&r);
    assert!(
        note.contains("READY to cancel -") && note.ends_with("; failed: mirror-cancel: boom"),
        "{note}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_switch_is_seen_when_the_source_enters_postcopy() {
    let polls = Arc::new(AtomicU32::new(0));
    let counted = polls.clone();
    let q = ScriptedQmp::new(move |cmd, _| {
        assert_eq!(cmd, "query-migrate");
        let n = counted.fetch_add(1, Ordering::SeqCst);
        let status = if n < 3 { "active" } else { "postcopy-active" };
        Ok(json!({"status": status}))
    });
    switched(&q, SWITCH_POLL).await;
    assert_eq!(polls.load(Ordering::SeqCst), 4);
    let precopy = ScriptedQmp::new(|_, _| Ok(json!({"status": "active"})));
    let waited = tokio::time::timeout(Duration::from_secs(60), switched(&precopy, SWITCH_POLL));
    assert!(waited.await.is_err(), "a pre-copy is no switch");
}
