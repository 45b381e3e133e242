//! What QEMU reports about a migration, as plain data (the `qemu` crate parses QMP into these).

use serde::{Deserialize, Serialize};
use std::str::FromStr;
use thiserror::Error;

/// QEMU's `MigrationStatus`, both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum MigrationStatus {
    None,
    Setup,
    Active,
    PreSwitchover,
    Device,
    WaitUnplug,
    PostcopyActive,
    PostcopyPaused,
    PostcopyRecoverSetup,
    PostcopyRecover,
    Completed,
    Failed,
    Cancelling,
    Cancelled,
    Colo,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown migration status '{0}'")]
pub struct UnknownStatus(pub String);

impl FromStr for MigrationStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use MigrationStatus::*;
        Ok(match s {
            "none" => None,
            "setup" => Setup,
            "active" => Active,
            "pre-switchover" => PreSwitchover,
            "device" => Device,
            "wait-unplug" => WaitUnplug,
            "postcopy-active" => PostcopyActive,
            "postcopy-paused" => PostcopyPaused,
            "postcopy-recover-setup" => PostcopyRecoverSetup,
            "postcopy-recover" => PostcopyRecover,
            "completed" => Completed,
            "failed" => Failed,
            "cancelling" => Cancelling,
            "cancelled" => Cancelled,
            "colo" => Colo,
            other => return Err(UnknownStatus(other.to_string())),
        })
    }
}

impl MigrationStatus {
    /// Pre-copy is moving memory (the VM still runs on the source).
    pub fn is_precopy(self) -> bool {
        matches!(
            self,
            MigrationStatus::Setup
                | MigrationStatus::Active
                | MigrationStatus::PreSwitchover
                | MigrationStatus::Device
                | MigrationStatus::WaitUnplug
        )
    }
    pub fn is_postcopy(self) -> bool {
        matches!(
            self,
            MigrationStatus::PostcopyActive
                | MigrationStatus::PostcopyPaused
                | MigrationStatus::PostcopyRecoverSetup
                | MigrationStatus::PostcopyRecover
        )
    }
}

/// One poll of `query-migrate` (source side), time-stamped by the driver's clock.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Progress {
    /// Driver clock, milliseconds.
    pub now_ms: u64,
    pub status: Option<MigrationStatus>,
    /// Bytes sent so far.
    pub transferred: u64,
    /// Bytes of RAM still to send (dirty or never sent).
    pub remaining: u64,
    /// Guest RAM size.
    pub total: u64,
    /// Dirty-bitmap syncs so far: one per pass over memory.
    pub dirty_sync_count: u64,
    pub postcopy_requests: u64,
    /// QEMU's measured pause, once known.
    pub downtime_ms: Option<u64>,
    pub total_time_ms: Option<u64>,
    pub throttle_pct: Option<u64>,
    pub error: Option<String>,
}

impl MigrationStatus {
    /// Finished one way or another.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MigrationStatus::Completed | MigrationStatus::Failed | MigrationStatus::Cancelled
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_like_qemu_prints_them() {
        assert_eq!(
            "postcopy-active".parse(),
            Ok(MigrationStatus::PostcopyActive)
        );
        assert_eq!("active".parse(), Ok(MigrationStatus::Active));
        assert!("warp".parse::<MigrationStatus>().is_err());
        assert!(MigrationStatus::PostcopyPaused.is_postcopy());
        assert!(MigrationStatus::Active.is_precopy());
        assert!(MigrationStatus::Cancelled.is_terminal());
    }
}
