use super::*;
use drover_core::migration::wan::{DiskProfile, MemoryProfile, RegionCount};
use drover_core::migration::StorageMode;

const MIB: u64 = 1 << 20;

/// A 64 MiB disk whose writes all fall in its last quarter (regions 12 to 15 of 16), idle
/// memory.
fn profile() -> WanProfile {
    let mut regions = vec![RegionCount::default(); 16];
    for r in &mut regions[12..] {
        r.writes = 4 * MIB;
    }
    WanProfile {
        memory: MemoryProfile {
            memory_bytes: 256 * MIB,
            wss_bytes: 0,
            dirty_rate_samples_bps: vec![0.0],
            sample_interval_s: 1.0,
            long_window: None,
        },
        disk: DiskProfile {
            virtual_bytes: 64 * MIB,
            block_bytes: 64 << 10,
            read_rate_bps: 0.0,
            write_rate_bps: 1e6,
            regions,
        },
    }
}

fn link(bps: f64, rtt_ms: u64) -> WanLink {
    WanLink {
        link: LinkProfile { bandwidth_bps: bps },
        rtt_s: rtt_ms as f64 / 1000.0,
    }
}

#[test]
fn the_requests_fraction_wins_over_the_model() {
    let knobs = PlanKnobs {
        storage: StorageMode::Hybrid,
        storage_fraction: Some(0.25),
        ..PlanKnobs::default()
    };
    let (s, reason) = fraction(&knobs, &profile(), &link(12.5e6, 50)).expect("fraction");
    assert_eq!(s, 0.25);
    assert_eq!(reason, "the request's storage_fraction 0.25");
    // The hottest quarter is exactly the written one: the disk's last 16 MiB.
    let hot = HotSet::hottest(&profile().disk, s, granularity(64 << 10)).expect("hot set");
    assert_eq!(hot.bytes(), 16 * MIB);
    assert_eq!(hot.ranges()[0].offset, 48 * MIB);
}

#[test]
fn without_a_fraction_the_model_chooses_and_says_so() {
    let knobs = PlanKnobs {
        storage: StorageMode::Hybrid,
        ..PlanKnobs::default()
    };
    let l = link(12.5e6, 50);
    let (s, reason) = fraction(&knobs, &profile(), &l).expect("fraction");
    let model = choose_fractions(&profile(), &l, &FractionParams::default(), f64::INFINITY)
        .expect("choice");
    assert_eq!(s, model.chosen.storage_fraction);
    assert!((0.0..=1.0).contains(&s), "{s}");
    assert!(
        reason.starts_with("the WAN model's choice for 12500000 B/s and a 50 ms round trip: "),
        "{reason}"
    );
    // A profile the model refuses is an error naming it, never a guess.
    let mut bad = profile();
    bad.disk.virtual_bytes = 0;
    let err = fraction(&knobs, &bad, &l).expect_err("bad profile");
    assert!(err.starts_with("the WAN model: "), "{err}");
}

#[test]
fn the_model_assumes_the_cap_else_the_slower_link() {
    let rtt = Duration::from_millis(40);
    let capped = PlanKnobs {
        bandwidth_bps: Some(5_000_000),
        ..PlanKnobs::default()
    };
    assert_eq!(
        link_of(&capped, Some(1_000_000), rtt).link.bandwidth_bps,
        5e6
    );
    let d = PlanKnobs::default();
    assert_eq!(
        link_of(&d, Some(12_500_000), rtt).link.bandwidth_bps,
        12.5e6
    );
    assert_eq!(
        link_of(&d, None, rtt).link.bandwidth_bps,
        d.assumed_link_bps as f64
    );
    assert_eq!(link_of(&d, None, rtt).rtt_s, 0.04);
}

#[test]
fn the_granularity_is_the_clusters_when_qemu_takes_it() {
    assert_eq!(granularity(64 << 10), 64 << 10);
    assert_eq!(granularity(2 << 20), 2 << 20);
    for odd in [0, 100, 3 << 10, 256] {
        assert_eq!(granularity(odd), DEFAULT_GRANULARITY, "{odd}");
    }
}

#[test]
fn the_session_follows_the_request() {
    let knobs = PlanKnobs {
        bandwidth_bps: Some(5_000_000),
        postcopy_stall_s: 7,
        ..PlanKnobs::default()
    };
    let c = hybrid_config(&knobs);
    assert_eq!(c.settings.push_speed_bps, Some(5_000_000));
    assert_eq!(c.postcopy.settings.stream_speed_bps, Some(5_000_000));
    assert_eq!(c.postcopy.settings.stall_ms, 7000);
    assert_eq!(c.settings.validate(), Ok(()));
    let free = hybrid_config(&PlanKnobs::default());
    assert_eq!(free.settings.push_speed_bps, None);
    assert_eq!(free.settings.validate(), Ok(()));
}

#[test]
fn the_hybrids_figures_are_noted() {
    let mut r = StorageRecord {
        mode: StorageMode::Hybrid,
        transferred_bytes: 67_108_864,
        disk_bytes: 67_108_864,
        stream_ms: Some(900),
        hot_bytes: 16 << 20,
        pushed_bytes: 17 << 20,
        push_rounds: 1,
        freeze_bytes: 65536,
        freeze_ms: Some(12),
        pulled_bytes: Some(48 << 20),
        ..StorageRecord::default()
    };
    assert_eq!(
        note(&r),
        "storage hybrid: hot set 16777216 bytes; pushed ahead 17825792 bytes in 1 round(s) \
         after the hot set; freeze 65536 bytes (the mirror of new writes' included) in 12 ms; \
         pulled after the switchover 50331648 bytes; stream 67108864 of 67108864 bytes in \
         900 ms, 0 stall(s)"
    );
    r.pulled_bytes = None;
    r.freeze_ms = None;
    r.error = Some("push: cancelled by request".into());
    let n = note(&r);
    assert!(
        n.contains(
            "freeze 65536 bytes (the mirror of new writes' included) in -; pulled after the \
             switchover -;"
        ) && n.ends_with("; failed: push: cancelled by request"),
        "{n}"
    );
}

/// Every command a storage hybrid sends its destination, built by the builders the session
/// uses, passes the forwarded set and the destination's check for a hybrid destination on
/// its own NBD address, and reaches QEMU as built; the same commands on another address or
/// with another export's names are refused, naming the argument.
#[tokio::test]
async fn a_hybrid_destination_takes_exactly_what_the_session_sends() {
    use crate::vms::{check_storage_command, IncomingDisk};
    use drover_api::qmp::ForwardedQmp;
    use drover_qemu::qmp::{BlockExt, QmpExt, ScriptedQmp};
    use serde_json::{json, Value};
    let own: SocketAddr = "198.18.0.3:10809".parse().expect("addr");
    let dest = ScriptedQmp::new(move |cmd, args| {
        let forwarded = ForwardedQmp::from_parts(cmd, args)
            .map_err(|e| drover_qemu::qmp::QmpError::Protocol(e.to_string()))?;
        check_storage_command("hvm", &forwarded, IncomingDisk::Hybrid(own))
            .map_err(|e| drover_qemu::qmp::QmpError::Protocol(e.to_string()))?;
        assert_eq!(
            forwarded.arguments(),
            args.filter(|a| !a.is_null()).cloned()
        );
        Ok(match cmd {
            "query-block-jobs" | "query-named-block-nodes" => json!([]),
            "query-status" => json!({"running": true, "status": "running"}),
            "query-migrate" => json!({"status": "completed"}),
            _ => Value::Object(serde_json::Map::new()),
        })
    });
    let disk = DiskNodes::of(0);
    // The push's: the server on its own address, the overlay's writable export, the stop.
    dest.nbd_server_start(&NbdAddr::new(own).expect("nbd"))
        .await
        .expect("server on its own address");
    dest.export_disk(&disk).await.expect("Drover's export");
    dest.nbd_server_stop().await.expect("stop");
    // The pull's, and the overlay's size (the bytes pulled).
    dest.start_stream(&disk, Some(16 << 20))
        .await
        .expect("stream");
    dest.resume_job(disk.stream_job()).await.expect("resume");
    dest.dismiss_job(disk.stream_job()).await.expect("dismiss");
    dest.execute("query-named-block-nodes", Some(json!({"flat": true})))
        .await
        .expect("nodes");
    dest.cont().await.expect("cont");
    // Another address, another node's export, the mirror's job: refused.
    let elsewhere = NbdAddr::new("198.18.0.9:10809".parse().expect("addr")).expect("nbd");
    let err = dest
        .nbd_server_start(&elsewhere)
        .await
        .expect_err("foreign");
    assert!(
        err.to_string().contains(
            "arguments.addr '198.18.0.9:10809' is not valid: expected the NBD address \
             198.18.0.3:10809 this agent made for incoming VM 'hvm'"
        ),
        "{err}"
    );
    let other = DiskNodes::of(1);
    let err = dest.export_disk(&other).await.expect_err("another disk");
    assert!(err.to_string().contains("the export of its disk"), "{err}");
    assert!(dest.dismiss_job(disk.mirror_job()).await.is_err());
    // A post-copy destination still takes no NBD server; a pre-copy one no stream.
    let stop = ForwardedQmp::NbdServerStop;
    assert!(check_storage_command("hvm", &stop, IncomingDisk::Overlay).is_err());
    let nodes = ForwardedQmp::from_parts("query-named-block-nodes", Some(&json!({"flat": true})))
        .expect("nodes");
    assert!(check_storage_command("hvm", &nodes, IncomingDisk::Target(own)).is_err());
    assert!(check_storage_command("hvm", &nodes, IncomingDisk::None).is_err());
}
