//! `POST /v1/vms/{name}/wan-plan`: profiles a running VM with a disk from the host side
//! (`drover_qemu::profile::profile_wan`: dirty-rate samples, `query-blockstats`, the virtio-blk
//! trace events) and runs core's fraction model on the profile for the request's link
//! (`drover_core::migration::wan::choose_fractions`). Nothing migrates.
//!
//! The profile runs in its own task holding the VM's claim, so a client that hangs up part-way
//! never leaves the VM claimed or QEMU's trace events on; the task is bounded by twice the
//! window (its one-second samples, then one window as long for the working set) plus
//! [`PROFILE_SLACK`].

use crate::api::ApiError;
use crate::AgentState;
use drover_api::wan::{WanPlan, WanPlanRequest};
use drover_core::migration::wan::{choose_fractions, FractionParams};
use drover_qemu::disk::DiskNodes;
use drover_qemu::profile::{profile_wan, WanProfileSettings};
use std::sync::Arc;
use std::time::Duration;

/// Time a profile may take beyond its window (QMP round trips, the short dirty-rate sample,
/// reading the trace log) before it is abandoned.
pub const PROFILE_SLACK: Duration = Duration::from_secs(20);

/// Regions the disk is cut into for the model's hotness curve.
const REGIONS: usize = 64;

/// Releases the VM's profile claim when dropped.
struct Claim {
    st: Arc<AgentState>,
    name: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.st.vms.end_profile(&self.name);
    }
}

/// Profiles VM `name` for twice `req.window()` seconds and plans its WAN migration over `req`'s link.
/// Errors: the VM's (404 unknown; 409 lost, busy, incoming or without a disk); 500 when its
/// QEMU fails the profile or does not finish it in time.
pub async fn plan(
    st: &Arc<AgentState>,
    name: &str,
    req: &WanPlanRequest,
) -> Result<WanPlan, ApiError> {
    let target = st.vms.begin_profile(name)?;
    let claim = Claim {
        st: Arc::clone(st),
        name: name.to_string(),
    };
    let window = req.window();
    let settings = WanProfileSettings {
        samples: window as usize,
        regions: REGIONS,
    };
    let limit = Duration::from_secs(2 * u64::from(window)) + PROFILE_SLACK;
    let task = tokio::spawn(async move {
        let _claim = claim;
        let q = target.qmp.as_ref();
        let disk = DiskNodes::of(0);
        let run = profile_wan(q, &target.trace_log, target.memory_bytes, &disk, settings);
        match tokio::time::timeout(limit, run).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                // Abandoned mid-window: the events may still be on.
                let off = drover_qemu::disk_trace::set_events(q, false);
                let _ = tokio::time::timeout(Duration::from_secs(3), off).await;
                Err(format!("no profile within {} s", limit.as_secs()))
            }
        }
    });
    let profile = task
        .await
        .map_err(|e| ApiError::Internal(format!("the profile of VM '{name}' stopped: {e}")))?
        .map_err(|e| ApiError::Internal(format!("profiling VM '{name}': {e}")))?;
    let link = req.link();
    let choice = choose_fractions(&profile, &link, &FractionParams::default(), req.budget())
        .map_err(|e| ApiError::Internal(format!("planning VM '{name}': {e}")))?;
    Ok(WanPlan {
        vm: name.to_string(),
        profile,
        link,
        choice,
    })
}
