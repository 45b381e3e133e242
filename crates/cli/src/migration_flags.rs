//! The migration settings as flags, shared by `migrate-bench` and `vm migrate`: each flag sets
//! one field of core's `PlanKnobs`; what is not given keeps `PlanKnobs::default()`, and the
//! result goes through `PlanKnobs::validate`, the same check the agent's API applies.

use anyhow::Context;
use drover_core::migration::PlanKnobs;
use drover_core::units::parse_rate;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct MigrationFlags {
    /// Migration bandwidth cap, e.g. 50MB/s, 300mbit, 1Gbit/s; a bare number is bytes/s
    /// (default: uncapped).
    #[arg(long)]
    pub bandwidth: Option<String>,
    /// Longest pause pre-copy may take at switchover, ms [default: 300].
    #[arg(long)]
    pub downtime_limit: Option<u64>,
    /// Watchdog deadline: cancel a pre-copy still running after this many seconds [default: 60].
    #[arg(long)]
    pub deadline: Option<u64>,
    /// Let the watchdog switch a stuck pre-copy to post-copy.
    #[arg(long)]
    pub allow_postcopy_switch: bool,
    /// Hybrid: switch after this fraction of RAM has been sent... [default: 1]
    #[arg(long)]
    pub hybrid_fraction: Option<f64>,
    /// ...or after this many pre-copy passes, whichever comes first [default: 1].
    #[arg(long)]
    pub hybrid_rounds: Option<u32>,
    /// Pause a post-copy that moves no byte for this many seconds (it ends `paused`, recoverable)
    /// [default: 60].
    #[arg(long)]
    pub postcopy_stall: Option<u64>,
}

impl MigrationFlags {
    /// The settings these flags give, checked like the agent's API checks them.
    pub fn knobs(&self) -> anyhow::Result<PlanKnobs> {
        let d = PlanKnobs::default();
        let bandwidth_bps = self
            .bandwidth
            .as_deref()
            .map(parse_rate)
            .transpose()
            .context("--bandwidth")?;
        let knobs = PlanKnobs {
            bandwidth_bps,
            downtime_limit_ms: self.downtime_limit.unwrap_or(d.downtime_limit_ms),
            deadline_s: self.deadline.unwrap_or(d.deadline_s),
            allow_postcopy_switch: self.allow_postcopy_switch,
            hybrid_fraction: self.hybrid_fraction.unwrap_or(d.hybrid_fraction),
            hybrid_rounds: self.hybrid_rounds.unwrap_or(d.hybrid_rounds),
            postcopy_stall_s: self.postcopy_stall.unwrap_or(d.postcopy_stall_s),
            ..d
        };
        knobs
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", flag_of(e.field)))?;
        Ok(knobs)
    }
}

/// The flag that sets a `PlanKnobs` field, for error messages.
fn flag_of(field: &str) -> &'static str {
    match field {
        "bandwidth_bps" => "--bandwidth",
        "downtime_limit_ms" => "--downtime-limit",
        "deadline_s" => "--deadline",
        "hybrid_fraction" => "--hybrid-fraction",
        "hybrid_rounds" => "--hybrid-rounds",
        "postcopy_stall_s" => "--postcopy-stall",
        _ => "migration settings",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_core_defaults_and_limits_are_core_limits() {
        assert_eq!(
            MigrationFlags::default().knobs().expect("ok"),
            PlanKnobs::default()
        );
        let e = MigrationFlags {
            downtime_limit: Some(3_000_000),
            ..MigrationFlags::default()
        }
        .knobs()
        .expect_err("too long");
        assert!(
            e.to_string()
                .starts_with("--downtime-limit: downtime_limit_ms"),
            "{e}"
        );
        let e = MigrationFlags {
            hybrid_rounds: Some(0),
            ..MigrationFlags::default()
        }
        .knobs()
        .expect_err("zero rounds is refused, not raised to 1");
        assert!(e.to_string().contains("--hybrid-rounds"), "{e}");
        let e = MigrationFlags {
            bandwidth: Some("100".into()),
            ..MigrationFlags::default()
        }
        .knobs()
        .expect_err("100 B/s");
        assert!(e.to_string().contains("bytes per second"), "{e}");
    }
}
