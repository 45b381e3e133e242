//! The migration knobs shared by `migrate-bench` and `vm migrate`.

use anyhow::Context;
use drover_core::migration::{HybridSwitch, PlanKnobs};
use drover_core::units::parse_rate;

#[derive(clap::Args, Debug, Clone)]
pub struct MigrationFlags {
    /// Migration bandwidth cap, e.g. 50MB/s (default: uncapped).
    #[arg(long)]
    pub bandwidth: Option<String>,
    /// Pre-copy downtime limit, ms.
    #[arg(long, default_value_t = 300)]
    pub downtime_limit: u64,
    /// Watchdog deadline: cancel a pre-copy still running after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub deadline: u64,
    /// Let the watchdog switch a stuck pre-copy to post-copy.
    #[arg(long)]
    pub allow_postcopy_switch: bool,
    /// Hybrid: switch after this fraction of RAM has been sent...
    #[arg(long, default_value_t = 1.0)]
    pub hybrid_fraction: f64,
    /// ...or after this many pre-copy passes, whichever comes first.
    #[arg(long, default_value_t = 1)]
    pub hybrid_rounds: u32,
}

impl MigrationFlags {
    /// Checks and converts the flags.
    pub fn knobs(&self) -> anyhow::Result<PlanKnobs> {
        if !(0.0..=1.0).contains(&self.hybrid_fraction) {
            anyhow::bail!("--hybrid-fraction must be between 0 and 1");
        }
        if self.deadline == 0 {
            anyhow::bail!("--deadline must be at least 1 second");
        }
        let bandwidth_bps = self
            .bandwidth
            .as_deref()
            .map(parse_rate)
            .transpose()
            .context("--bandwidth")?;
        if bandwidth_bps == Some(0) {
            anyhow::bail!("--bandwidth must be above zero");
        }
        Ok(PlanKnobs {
            bandwidth_bps,
            downtime_limit_ms: self.downtime_limit,
            deadline_ms: self.deadline * 1000,
            allow_postcopy_switch: self.allow_postcopy_switch,
            hybrid: HybridSwitch {
                ram_fraction: self.hybrid_fraction,
                max_rounds: self.hybrid_rounds.max(1),
            },
            ..PlanKnobs::default()
        })
    }
}
