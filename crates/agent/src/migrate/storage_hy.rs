//! Storage hybrid between agents (`storage: hybrid` for a VM with a disk), over
//! `drover_qemu::storage_hybrid::HybridSession`: the storage post-copy's protocol
//! (`storage_pc`) with a push of the disk's hottest blocks before the switchover.
//!
//! ```text
//! S       profile: a fresh WAN profile of the VM (PROFILE_WINDOW_S seconds: dirty rate, the
//!         disk's reads and writes per region); the fraction s of the disk to push: the
//!         request's storage_fraction, else the WAN model's choice for the link (the request's
//!         cap or assumed link, this host's if slower; the round trip of the destination's
//!         health request), no time budget; the hot set: the hottest s of the disk by the
//!         profile, in granules of the disk's cluster size
//! S       leftovers of an earlier hybrid swept (push job, NBD node, hot/tracking bitmaps)
//! S       export: as a storage post-copy's (its own address toward D, read-only)
//! S -> D  POST /v1/incoming {config, disk_virtual_bytes, storage: hybrid, source_nbd}
//! D       as for a post-copy (source_nbd on the peer; launched on the overlay), and it replies
//!         an NBD address of its own, as a pre-copy's destination does
//! S       the reply's NBD address checked to be the destination's; HybridSession::migrate:
//!         through the forwarded set on D nbd-server-start (that address only), the writable
//!         export of the overlay (Drover's names only), nbd-server-stop, then the post-copy's
//!         stream commands and query-named-block-nodes (the overlay's size: the bytes pulled)
//! ```
//!
//! Outcomes are a storage post-copy's ([`super::storage_pc::decide`]), the session kept in
//! the same [`super::storage_pc::Sessions`] for `POST /v1/migrations/{id}/resume` of a
//! stalled pull. The record's `storage` figures: hot set, bytes pushed ahead, rounds, the
//! freeze's bytes and time, bytes pulled after ([`note`]).

use super::storage_pc::{errors_text, failed, ms, own_address_toward, postcopy_config};
use crate::AgentState;
use drover_api::AgentUrl;
use drover_core::migration::wan::{choose_fractions, FractionParams, WanLink, WanProfile};
use drover_core::migration::{HotSet, HybridSettings, LinkProfile, PlanKnobs, StorageRecord};
use drover_qemu::disk::{DiskNodes, NbdAddr};
use drover_qemu::launcher::RunPaths;
use drover_qemu::profile::{profile_wan, WanProfileSettings};
use drover_qemu::qmp::Qmp;
use drover_qemu::storage_hybrid::{HybridConfig, HybridSession, HybridTarget};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Seconds of the profile taken as a hybrid starts (the `wan-plan`'s default window).
pub const PROFILE_WINDOW_S: usize = drover_api::wan::DEFAULT_WINDOW_S as usize;

/// Regions the disk is cut into for the profile's locality (as `wan-plan`'s).
const REGIONS: usize = 64;

/// Longest the profile may take beyond its window before the migration gives up.
const PROFILE_SLACK: Duration = Duration::from_secs(20);

/// The bitmap granularity when the disk's cluster size is not one QEMU takes, bytes.
const DEFAULT_GRANULARITY: u64 = 64 << 10;

/// The disk's hottest part to push, and why that much.
#[derive(Debug, Clone)]
pub struct HotChoice {
    pub hot: HotSet,
    /// The fraction of the disk asked for (the set, widened to granules, can exceed it).
    pub fraction: f64,
    /// For the record's notes: where the fraction came from.
    pub reason: String,
}

/// The fraction of the disk to push (pure, for tests): the request's `storage_fraction`
/// when given, else the WAN model's choice for `link` with no time budget (a migration has
/// none: the lowest restoration agility wins). Returns it with a reason for the notes.
///
/// # Errors
/// The model refused the profile or the link (the message names the field).
pub fn fraction(
    knobs: &PlanKnobs,
    profile: &WanProfile,
    link: &WanLink,
) -> Result<(f64, String), String> {
    if let Some(s) = knobs.storage_fraction {
        return Ok((s, format!("the request's storage_fraction {s}")));
    }
    let choice = choose_fractions(profile, link, &FractionParams::default(), f64::INFINITY)
        .map_err(|e| format!("the WAN model: {e}"))?;
    let s = choice.chosen.storage_fraction;
    Ok((
        s,
        format!(
            "the WAN model's choice for {:.0} B/s and a {:.0} ms round trip: {}",
            link.link.bandwidth_bps,
            link.rtt_s * 1000.0,
            choice.reason
        ),
    ))
}

/// The link the model assumes (pure): the request's cap, else the smaller of its assumed
/// link and this host's (`link_bps`), and the round trip measured to the destination.
pub fn link_of(knobs: &PlanKnobs, link_bps: Option<u64>, rtt: Duration) -> WanLink {
    let bps = knobs.bandwidth_bps.unwrap_or_else(|| {
        link_bps.map_or(knobs.assumed_link_bps, |l| l.min(knobs.assumed_link_bps))
    });
    WanLink {
        link: LinkProfile {
            bandwidth_bps: bps as f64,
        },
        rtt_s: rtt.as_secs_f64(),
    }
}

/// The bitmap granularity for a disk of `cluster_bytes` clusters (pure).
pub fn granularity(cluster_bytes: u64) -> u64 {
    let (lo, hi) = drover_core::migration::storage_hybrid::GRANULARITY_RANGE;
    if cluster_bytes.is_power_of_two() && (lo..=hi).contains(&cluster_bytes) {
        cluster_bytes
    } else {
        DEFAULT_GRANULARITY
    }
}

/// Profiles VM `vm` (its QEMU `source`) afresh and picks its hot set.
///
/// # Errors
/// The profile failed or took too long, or the model refused it.
pub(super) async fn hot_set(
    state: &AgentState,
    vm: &str,
    source: &dyn Qmp,
    knobs: &PlanKnobs,
    rtt: Duration,
) -> Result<HotChoice, String> {
    let record = state.vms.record(vm).map_err(|e| e.to_string())?;
    let trace_log = RunPaths::in_dir(&record.run_dir).trace_log;
    let settings = WanProfileSettings {
        samples: PROFILE_WINDOW_S,
        regions: REGIONS,
    };
    let limit = Duration::from_secs(PROFILE_WINDOW_S as u64) + PROFILE_SLACK;
    let disk = DiskNodes::of(0);
    let run = profile_wan(
        source,
        &trace_log,
        record.config.memory_bytes,
        &disk,
        settings,
    );
    let profile = match tokio::time::timeout(limit, run).await {
        Ok(p) => p.map_err(|e| format!("storage hybrid: profiling the VM: {e}"))?,
        Err(_) => {
            // Abandoned mid-window: the trace events may still be on.
            let off = drover_qemu::disk_trace::set_events(source, false);
            let _ = tokio::time::timeout(Duration::from_secs(3), off).await;
            return Err(format!(
                "storage hybrid: no profile of the VM within {} s",
                limit.as_secs()
            ));
        }
    };
    let link = link_of(knobs, state.link_bps, rtt);
    let (s, reason) = fraction(knobs, &profile, &link)?;
    let g = granularity(profile.disk.block_bytes);
    let hot = HotSet::hottest(&profile.disk, s, g)
        .map_err(|e| format!("storage hybrid: the hot set: {e}"))?;
    Ok(HotChoice {
        hot,
        fraction: s,
        reason,
    })
}

/// The session's settings from the request's: the push and the pull capped like the memory
/// migration (`bandwidth_bps`), the pull reported stalled after the post-copy stall limit.
pub fn hybrid_config(knobs: &PlanKnobs) -> HybridConfig {
    HybridConfig {
        settings: HybridSettings {
            push_speed_bps: knobs.bandwidth_bps,
            ..HybridSettings::default()
        },
        postcopy: postcopy_config(knobs),
        ..HybridConfig::default()
    }
}

/// On the source: sweeps an earlier hybrid's leftovers, then its NBD server on its own
/// address toward `to` (a free port there), the disk exported read-only. The destination's
/// NBD address is set once it replied ([`HybridSession::set_dest_nbd`]). Returns the session
/// and what was swept.
///
/// # Errors
/// A leftover could not be removed, or the address or the export failed; nothing is left
/// started.
pub(super) async fn export(
    source: &dyn Qmp,
    to: &AgentUrl,
    knobs: &PlanKnobs,
) -> Result<(HybridSession, Vec<String>), String> {
    let disk = DiskNodes::of(0);
    let swept = drover_qemu::storage_hybrid::clear_leftovers(source, &disk)
        .await
        .map_err(|e| format!("storage hybrid: {e}"))?;
    let ip = own_address_toward(to).await?;
    let [port] = crate::api::free_ports::<1>(ip).map_err(|e| e.to_string())?;
    let nbd = NbdAddr::new(SocketAddr::new(ip, port)).map_err(|e| e.to_string())?;
    let target = HybridTarget {
        disk,
        source_nbd: nbd,
        // Replaced by the destination's own once it replied; never used before.
        dest_nbd: nbd,
    };
    let session = HybridSession::export(source, &target, hybrid_config(knobs))
        .await
        .map_err(|run| {
            format!(
                "storage hybrid: the source's export: {}{}",
                run.storage.error.as_deref().unwrap_or("failed"),
                errors_text(&run.errors)
            )
        })?;
    Ok((session, swept))
}

/// Where the push's scratch image is made: the VM's own run directory (Drover's).
///
/// # Errors
/// The VM is gone.
pub(super) fn scratch_dir(state: &AgentState, vm: &str) -> Result<PathBuf, String> {
    state
        .vms
        .record(vm)
        .map(|r| r.run_dir)
        .map_err(|e| e.to_string())
}

/// The hybrid's figures for the record's notes (pure, for tests).
pub fn note(s: &StorageRecord) -> String {
    let pulled = s
        .pulled_bytes
        .map_or_else(|| "-".to_string(), |b| format!("{b} bytes"));
    format!(
        "storage hybrid: hot set {} bytes; pushed ahead {} bytes in {} round(s) after the hot \
         set; freeze {} bytes (the mirror of new writes' included) in {}; pulled after the \
         switchover {pulled}; stream {} of {} bytes in {}, {} stall(s){}",
        s.hot_bytes,
        s.pushed_bytes,
        s.push_rounds,
        s.freeze_bytes,
        ms(s.freeze_ms),
        s.transferred_bytes,
        s.disk_bytes,
        ms(s.stream_ms),
        s.stream_stalls,
        failed(s),
    )
}

#[cfg(test)]
#[path = "storage_hy_tests.rs"]
mod tests;
