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

/// Whether a guest in this QEMU run state (`query-status`'s `status`) was stopped by a
/// migration and may be resumed with `cont` once the migration is known not to have moved it:
/// `finish-migrate` (stopped for the final copy), `postmigrate` (the final copy was sent) or
/// `paused` (what QEMU restores when a switchover fails). Any other state, `running` included,
/// needs nothing. Never ask this after post-copy started: then the source holds only part of
/// the guest's memory and must never run it again.
pub fn paused_by_migration(run_state: &str) -> bool {
    matches!(run_state, "finish-migrate" | "postmigrate" | "paused")
}

/// QEMU's `ram` block of a `query-migrate` reply. QEMU leaves the block out before the
/// migration has started and, in 10.0, once it has been cancelled or has failed, so a missing
/// block means "not reported", never "nothing sent".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RamProgress {
    /// Bytes sent so far, over every channel (cumulative for the whole migration).
    pub transferred: u64,
    /// Bytes of RAM still to send (dirty or never sent).
    pub remaining: u64,
    /// Guest RAM size, bytes.
    pub total: u64,
    /// Dirty-bitmap syncs so far: one per pass over memory (cumulative).
    pub dirty_sync_count: u64,
    /// Pages the destination asked for during post-copy (cumulative).
    pub postcopy_requests: u64,
}

impl RamProgress {
    /// This report, with the cumulative counters never below `earlier`'s: a migration's
    /// counters only grow, so a smaller figure is a reporting artefact, not news.
    pub fn not_below(self, earlier: &RamProgress) -> RamProgress {
        RamProgress {
            transferred: self.transferred.max(earlier.transferred),
            dirty_sync_count: self.dirty_sync_count.max(earlier.dirty_sync_count),
            postcopy_requests: self.postcopy_requests.max(earlier.postcopy_requests),
            ..self
        }
    }
}

/// One poll of `query-migrate` (source side), time-stamped by the driver's clock.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Progress {
    /// Driver clock, milliseconds.
    pub now_ms: u64,
    pub status: Option<MigrationStatus>,
    /// The RAM figures, when QEMU reported them (flattened: the wire keeps QEMU's flat names).
    #[serde(flatten)]
    pub ram: Option<RamProgress>,
    /// QEMU's measured pause, ms, once known.
    pub downtime_ms: Option<u64>,
    /// QEMU's own elapsed time for the migration, ms.
    pub total_time_ms: Option<u64>,
    /// Auto-converge's current vCPU throttle, percent.
    pub throttle_pct: Option<u64>,
    pub error: Option<String>,
}

impl Progress {
    /// This poll, keeping what `earlier` polls reported and this one left out: the RAM block
    /// (with its counters never going backwards), the downtime and QEMU's elapsed time. The
    /// status, the time stamp and the error are this poll's own.
    pub fn carried_from(self, earlier: &Progress) -> Progress {
        let ram = match (self.ram, earlier.ram) {
            (Some(now), Some(before)) => Some(now.not_below(&before)),
            (now, before) => now.or(before),
        };
        Progress {
            ram,
            downtime_ms: self.downtime_ms.or(earlier.downtime_ms),
            total_time_ms: self.total_time_ms.or(earlier.total_time_ms),
            throttle_pct: self.throttle_pct.or(earlier.throttle_pct),
            ..self
        }
    }

    /// Bytes sent so far (0 until QEMU reports any).
    pub fn transferred(&self) -> u64 {
        self.ram.map_or(0, |r| r.transferred)
    }
}

impl MigrationStatus {
    /// The migration is over (or never ran) and did not move the guest: the source may run it
    /// again. Not `completed` (the destination has it) and nothing still in flight.
    pub fn left_guest_on_source(self) -> bool {
        matches!(
            self,
            MigrationStatus::None | MigrationStatus::Cancelled | MigrationStatus::Failed
        )
    }

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
        assert!(MigrationStatus::Failed.left_guest_on_source());
        for busy in [
            MigrationStatus::Completed,
            MigrationStatus::Cancelling,
            MigrationStatus::Active,
            MigrationStatus::PostcopyPaused,
        ] {
            assert!(!busy.left_guest_on_source(), "{busy:?}");
        }
    }

    fn ram(transferred: u64, remaining: u64, syncs: u64) -> Option<RamProgress> {
        Some(RamProgress {
            transferred,
            remaining,
            total: 1000,
            dirty_sync_count: syncs,
            postcopy_requests: 0,
        })
    }

    #[test]
    fn only_the_stopped_states_a_migration_leaves_count_as_paused_by_it() {
        for state in ["finish-migrate", "postmigrate", "paused"] {
            assert!(paused_by_migration(state), "{state}");
        }
        for state in [
            "running",
            "inmigrate",
            "shutdown",
            "internal-error",
            "prelaunch",
            "",
        ] {
            assert!(!paused_by_migration(state), "{state}");
        }
    }

    #[test]
    fn a_poll_without_figures_keeps_the_last_ones() {
        let active = Progress {
            now_ms: 10,
            status: Some(MigrationStatus::Active),
            ram: ram(900, 300, 4),
            downtime_ms: None,
            total_time_ms: Some(10),
            ..Progress::default()
        };
        let cancelled = Progress {
            now_ms: 20,
            status: Some(MigrationStatus::Cancelled),
            ..Progress::default()
        }
        .carried_from(&active);
        assert_eq!(cancelled.status, Some(MigrationStatus::Cancelled));
        assert_eq!((cancelled.now_ms, cancelled.ram), (20, active.ram));
        assert_eq!(cancelled.total_time_ms, Some(10));
    }

    #[test]
    fn counters_never_go_backwards_but_remaining_follows_qemu() {
        let earlier = Progress {
            ram: ram(900, 300, 4),
            ..Progress::default()
        };
        let later = Progress {
            ram: ram(100, 250, 1),
            ..Progress::default()
        }
        .carried_from(&earlier);
        let r = later.ram.expect("figures");
        assert_eq!((r.transferred, r.dirty_sync_count), (900, 4));
        assert_eq!(r.remaining, 250);
    }

    #[test]
    fn the_wire_form_stays_flat_and_a_missing_block_reads_back_as_none() {
        let p = Progress {
            ram: ram(5, 6, 7),
            ..Progress::default()
        };
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(
            (v["transferred"].as_u64(), v["dirty_sync_count"].as_u64()),
            (Some(5), Some(7))
        );
        assert_eq!(serde_json::from_value::<Progress>(v).expect("back"), p);
        let none: Progress =
            serde_json::from_str(r#"{"now_ms": 3, "status": "cancelled"}"#).expect("parses");
        assert_eq!(none.ram, None);
    }
}
