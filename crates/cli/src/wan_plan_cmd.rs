//! `drover vm wan-plan NAME --link RATE --rtt-ms MS [--budget S] [--window S]`: the agent
//! profiles the VM and its disk for a few seconds and answers with the WAN fraction plan
//! (`POST /v1/vms/{name}/wan-plan`); printed as the choice's reason and the profile in one
//! line each, or as JSON. Nothing migrates.

use crate::flags::Typed;
use drover_api::wan::{WanPlan, WanPlanRequest, MAX_LINK_BYTES_PER_S, MIN_LINK_BYTES_PER_S};
use drover_core::migration::wan::RegionCount;
use drover_core::units::{format_rate, format_size};

/// The request from the flags; `--link` must lie in the API's range.
pub fn request(
    link: &str,
    rtt_ms: u32,
    budget_s: Option<u32>,
    window_s: u32,
) -> anyhow::Result<WanPlanRequest> {
    let rate = Typed::rate("--link", link)?;
    if !(MIN_LINK_BYTES_PER_S..=MAX_LINK_BYTES_PER_S).contains(&rate.value()) {
        return Err(rate.refused("expected 1Mbit/s to 100Gbit/s"));
    }
    Ok(WanPlanRequest {
        link_bytes_per_s: rate.value(),
        rtt_ms,
        budget_s,
        window_s: Some(window_s),
    })
}

/// The plan for a reader: the choice and its reason, then what the profile measured.
pub fn print(plan: &WanPlan) {
    let c = &plan.choice.chosen;
    println!(
        "{}: memory {:.0}% and storage {:.0}% ahead",
        plan.vm,
        c.memory_fraction * 100.0,
        c.storage_fraction * 100.0
    );
    println!("  why: {}", plan.choice.reason);
    let (m, d) = (&plan.profile.memory, &plan.profile.disk);
    let locality = match hottest_quarter_share(&plan.profile.disk.regions) {
        Some(hot) => format!("{:.0}% of its accesses in its hottest quarter", hot * 100.0),
        None => "no disk accesses seen in the window".to_string(),
    };
    println!(
        "  profile: memory {} (working set {}), dirty rate {}; disk {} ({} blocks), reads {}, writes {}, {}",
        format_size(m.memory_bytes),
        format_size(m.wss_bytes),
        format_rate(m.dirty_rate_bps() as u64),
        format_size(d.virtual_bytes),
        format_size(d.block_bytes),
        format_rate(d.read_rate_bps as u64),
        format_rate(d.write_rate_bps as u64),
        locality
    );
}

/// Share of the profiled bytes in the quarter of the disk's regions that saw the most (None
/// when nothing was seen: no locality to show).
fn hottest_quarter_share(regions: &[RegionCount]) -> Option<f64> {
    let mut per: Vec<u64> = regions.iter().map(|r| r.reads + r.writes).collect();
    let total: u64 = per.iter().sum();
    if total == 0 {
        return None;
    }
    per.sort_unstable_by(|a, b| b.cmp(a));
    let quarter = per.len().div_ceil(4);
    Some(per[..quarter].iter().sum::<u64>() as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_flag_is_read_and_ranged() {
        let r = request("100Mbit/s", 50, None, 3).unwrap();
        assert_eq!(
            (r.link_bytes_per_s, r.rtt_ms, r.window_s),
            (12_500_000, 50, Some(3))
        );
        for (text, says) in [
            ("10kbit/s", "expected 1Mbit/s to 100Gbit/s"),
            ("1Tbit/s", "expected 1Mbit/s to 100Gbit/s"),
            ("fast", "--link"),
        ] {
            let e = request(text, 50, None, 3).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("--link"), "{text}: {e}");
        }
    }

    #[test]
    fn locality_is_shown_only_when_the_window_saw_accesses() {
        let region = |n| RegionCount {
            reads: n,
            writes: n,
        };
        assert_eq!(hottest_quarter_share(&[region(0); 8]), None);
        let mut regions = vec![region(1); 8];
        regions[3] = region(5);
        regions[6] = region(5);
        // The two busiest of eight regions hold 20 of 32 bytes.
        assert_eq!(hottest_quarter_share(&regions), Some(20.0 / 32.0));
    }
}
