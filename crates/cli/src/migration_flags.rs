//! The migration settings as flags, shared by `migrate-bench` and `vm migrate`: each flag sets
//! one field of core's `PlanKnobs`; what is not given keeps `PlanKnobs::default()`, and the
//! result goes through `PlanKnobs::validate`, the same check the agent's API applies. The
//! numeric flags' ranges are core's limits, so clap refuses a number out of range at once,
//! naming the flag and the range.

use crate::flags::{whole, Typed};
use drover_core::migration::knobs::{
    MAX_DEADLINE_S, MAX_DOWNTIME_LIMIT_MS, MAX_HYBRID_ROUNDS, MAX_POSTCOPY_STALL_S,
    MAX_RESUME_WINDOW_S,
};
use drover_core::migration::{PlanKnobs, StorageMode};

/// `--hybrid-fraction`: a fraction of RAM, 0 to 1, as typed.
fn fraction(text: &str) -> Result<f64, String> {
    fraction_of(text, "hybrid_fraction")
}

/// `--storage-fraction`: as `--hybrid-fraction`, of the disk.
fn disk_fraction(text: &str) -> Result<f64, String> {
    fraction_of(text, "storage_fraction")
}

fn fraction_of(text: &str, field: &str) -> Result<f64, String> {
    let expected = || PlanKnobs::expected(field).unwrap_or_default();
    match text.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(expected()),
    }
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct MigrationFlags {
    /// Migration bandwidth cap (default: uncapped). Rates as tc reads them, in any case:
    /// 300mbit is megabits/s, but 300mbps is megaBYTES/s (tc's bps is bytes); or 50MB/s,
    /// 100MiB/s, 1Gbit/s; a bare number is bytes/s. At least 1 Mbit/s.
    #[arg(long, value_name = "RATE")]
    pub bandwidth: Option<String>,
    /// Longest pause pre-copy may take at switchover, ms, 1 to 600000 [default: 300].
    #[arg(long, value_name = "MS", allow_negative_numbers = true,
          value_parser = whole::<u64>(1, MAX_DOWNTIME_LIMIT_MS))]
    pub downtime_limit: Option<u64>,
    /// Watchdog deadline: cancel a pre-copy still running after this many seconds, 1 to 86400
    /// [default: 60].
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = whole::<u64>(1, MAX_DEADLINE_S))]
    pub deadline: Option<u64>,
    /// Let the watchdog switch a stuck pre-copy to post-copy.
    #[arg(long)]
    pub allow_postcopy_switch: bool,
    /// Hybrid: switch after this fraction of RAM (0 to 1) has been sent... [default: 1]
    #[arg(long, value_name = "F", allow_negative_numbers = true, value_parser = fraction)]
    pub hybrid_fraction: Option<f64>,
    /// ...or after this many pre-copy passes (1 to 1000), whichever comes first [default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = whole::<u32>(1, u64::from(MAX_HYBRID_ROUNDS)))]
    pub hybrid_rounds: Option<u32>,
    /// Pause a post-copy that moves no byte for this many seconds, 1 to 3600 (it ends
    /// `paused`, recoverable) [default: 60].
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = whole::<u64>(1, MAX_POSTCOPY_STALL_S))]
    pub postcopy_stall: Option<u64>,
    /// Agent migrations: keep trying to resume a post-copy left paused (a cut link) for this
    /// many seconds, once the destination answers again; 0 to 86400, 0 leaves it paused
    /// [default: 600].
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = whole::<u64>(0, MAX_RESUME_WINDOW_S))]
    pub resume_window: Option<u64>,
    /// How a VM's local disk moves: precopy (mirrored before the switchover; memory by
    /// pre-copy), postcopy (the destination runs on the source's disk over NBD and streams
    /// it afterwards; memory by any technique) or hybrid (its hottest blocks pushed ahead,
    /// the rest pulled after, as postcopy; memory by any technique) [default: precopy].
    #[arg(long, value_name = "MODE", value_parser = storage_mode)]
    pub storage: Option<StorageMode>,
    /// Storage hybrid: push this fraction of the disk (0 to 1), its hottest blocks, ahead
    /// [default: the WAN model's choice from a profile taken as the migration starts].
    #[arg(long, value_name = "F", allow_negative_numbers = true, value_parser = disk_fraction)]
    pub storage_fraction: Option<f64>,
}

/// `--storage`: a storage mode by its wire name.
fn storage_mode(text: &str) -> Result<StorageMode, String> {
    text.trim().parse()
}

impl MigrationFlags {
    /// The settings these flags give, checked like the agent's API checks them.
    ///
    /// # Errors
    /// The flag at fault, quoted as typed, with what is accepted.
    pub fn knobs(&self) -> anyhow::Result<PlanKnobs> {
        let d = PlanKnobs::default();
        let storage = self.storage.unwrap_or(d.storage);
        if let (Some(f), false) = (self.storage_fraction, storage == StorageMode::Hybrid) {
            anyhow::bail!(
                "--storage-fraction {f}: only with --storage hybrid (--storage {storage} moves \
                 the whole disk its own way)"
            );
        }
        let bandwidth = self
            .bandwidth
            .as_deref()
            .map(|text| Typed::rate("--bandwidth", text))
            .transpose()?;
        let knobs = PlanKnobs {
            bandwidth_bps: bandwidth.as_ref().map(Typed::value),
            downtime_limit_ms: self.downtime_limit.unwrap_or(d.downtime_limit_ms),
            deadline_s: self.deadline.unwrap_or(d.deadline_s),
            allow_postcopy_switch: self.allow_postcopy_switch,
            hybrid_fraction: self.hybrid_fraction.unwrap_or(d.hybrid_fraction),
            hybrid_rounds: self.hybrid_rounds.unwrap_or(d.hybrid_rounds),
            postcopy_stall_s: self.postcopy_stall.unwrap_or(d.postcopy_stall_s),
            resume_window_s: self.resume_window.unwrap_or(d.resume_window_s),
            storage,
            storage_fraction: self.storage_fraction,
            ..d
        };
        knobs.validate().map_err(|e| match (&bandwidth, e.field) {
            (Some(b), "bandwidth_bps") => b.refused(&e.expected),
            // Every other flag was range-checked by clap; this is the library's safety net.
            (_, field) => anyhow::anyhow!(e.message(flag_of(field), &e.value, None)),
        })?;
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
        "resume_window_s" => "--resume-window",
        "storage_fraction" => "--storage-fraction",
        _ => "migration settings",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        m: MigrationFlags,
    }

    fn parse(args: &[&str]) -> Result<MigrationFlags, String> {
        let mut argv = vec!["drover"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map(|c| c.m)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_core_defaults() {
        assert_eq!(
            MigrationFlags::default().knobs().expect("ok"),
            PlanKnobs::default()
        );
    }

    /// Numeric flags state their real range, negatives included, with the text as typed.
    #[test]
    fn numeric_flags_state_their_real_range() {
        for (args, wanted) in [
            (
                &["--downtime-limit", "3000000"][..],
                "3000000 is not in 1..=600000",
            ),
            (&["--downtime-limit", "-1"], "-1 is not in 1..=600000"),
            (&["--deadline=0"], "0 is not in 1..=86400"),
            (&["--hybrid-rounds", "0"], "0 is not in 1..=1000"),
            (&["--postcopy-stall", "99999"], "99999 is not in 1..=3600"),
            (&["--hybrid-fraction", "NaN"], "'NaN'"),
            (
                &["--hybrid-fraction", "1.5"],
                "expected a fraction of RAM from 0 to 1",
            ),
        ] {
            let err = parse(args).expect_err(args[0]);
            assert!(err.contains(wanted), "{args:?}: {err}");
            assert!(
                err.contains(args[0].split('=').next().unwrap_or_default()),
                "{err}"
            );
            assert!(!err.contains("4294967295"), "{err}");
        }
    }

    #[test]
    fn the_storage_flag_reads_the_wire_names_only() {
        let mode = |args: &[&str]| parse(args).map(|f| f.knobs().expect("ok").storage);
        assert_eq!(mode(&[]), Ok(StorageMode::Precopy));
        assert_eq!(mode(&["--storage", "postcopy"]), Ok(StorageMode::Postcopy));
        assert_eq!(mode(&["--storage=precopy"]), Ok(StorageMode::Precopy));
        assert_eq!(mode(&["--storage", "hybrid"]), Ok(StorageMode::Hybrid));
        let fraction = |args: &[&str]| parse(args).map(|f| f.knobs().expect("ok").storage_fraction);
        assert_eq!(fraction(&[]), Ok(None));
        let hybrid = |f: &str| fraction(&["--storage", "hybrid", "--storage-fraction", f]);
        assert_eq!(hybrid("0.25"), Ok(Some(0.25)));
        // Only the hybrid takes a fraction; the default mode is pre-copy.
        for args in [
            &["--storage-fraction", "0.25"][..],
            &["--storage", "postcopy", "--storage-fraction", "0.25"][..],
        ] {
            let err = parse(args)
                .map_err(|e| e.to_string())
                .and_then(|f| f.knobs().map_err(|e| e.to_string()))
                .expect_err("not hybrid");
            assert!(
                err.starts_with("--storage-fraction 0.25: only with --storage hybrid"),
                "{err}"
            );
        }
        let err = hybrid("1.5").expect_err("1.5");
        assert!(
            err.contains("expected a fraction of the disk from 0 to 1"),
            "{err}"
        );
        for bad in ["post-copy", "auto", ""] {
            let err = mode(&["--storage", bad]).expect_err(bad);
            assert!(
                err.contains("--storage") && err.contains("expected precopy, postcopy or hybrid"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_bandwidth_refusal_quotes_the_text_and_what_it_became() {
        let knobs = |text: &str| {
            MigrationFlags {
                bandwidth: Some(text.into()),
                ..MigrationFlags::default()
            }
            .knobs()
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            knobs("1bit/s").unwrap_err(),
            "--bandwidth 1bit/s rounds to 0 bytes/s; expected at least 125000 bytes/s (1 Mbit/s)"
        );
        let e = knobs("100").unwrap_err();
        assert!(e.contains("bytes per second"), "{e}");
        assert_eq!(
            knobs("300mbit").map(|k| k.bandwidth_bps),
            Ok(Some(37_500_000))
        );
        assert_eq!(
            knobs("300mbps").map(|k| k.bandwidth_bps),
            Ok(Some(300_000_000))
        );
        let e = knobs("300Mb/s").unwrap_err();
        assert!(e.starts_with("--bandwidth '300Mb/s'"), "{e}");
        let e = knobs("5 furlongs").unwrap_err();
        assert!(
            e.contains("mbps is megabytes per second, as tc reads it"),
            "{e}"
        );
    }
}
