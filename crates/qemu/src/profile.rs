//! Measures a running VM for the cost model, the way an agent would on a real host: QEMU's
//! page-sampling dirty-rate measurement (cheap: it hashes a few thousand sampled pages twice and
//! never write-protects guest memory), over a short and a one-second window.

use crate::qmp::{Qmp, QmpError, QmpExt};
use drover_core::migration::VmProfile;
use std::time::Duration;

/// Short window: how fast pages get dirtied.
pub const SHORT_WINDOW_MS: u64 = 200;
/// Long window: how much memory is hot.
pub const LONG_WINDOW_MS: u64 = 1000;

/// One measurement over `ms` milliseconds; MB/s.
pub async fn measure_dirty_rate(qmp: &dyn Qmp, ms: u64) -> Result<f64, QmpError> {
    qmp.calc_dirty_rate(ms).await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    for _ in 0..100 {
        if let Some(mb_s) = qmp.query_dirty_rate().await? {
            return Ok(mb_s as f64);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(QmpError::Timeout {
        command: "query-dirty-rate".into(),
        ms: ms + 5000,
    })
}

/// Both windows, combined by [`VmProfile::from_dirty_rates`].
pub async fn profile_vm(qmp: &dyn Qmp, memory_bytes: u64) -> Result<VmProfile, QmpError> {
    let short = measure_dirty_rate(qmp, SHORT_WINDOW_MS).await?;
    let long = measure_dirty_rate(qmp, LONG_WINDOW_MS).await?;
    Ok(VmProfile::from_dirty_rates(memory_bytes, short, long))
}
