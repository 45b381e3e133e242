//! `drover vm wan-plan NAME --link RATE --rtt-ms MS [--budget S] [--window S]`: the agent
//! profiles the VM and its disk for a few seconds and answers with the WAN fraction plan
//! (`POST /v1/vms/{name}/wan-plan`); printed as the choice's reason and the profile in one
//! line each, or as JSON. Nothing migrates.

use crate::flags::Typed;
use drover_api::wan::{WanPlan, WanPlanRequest, MAX_LINK_BYTES_PER_S, MIN_LINK_BYTES_PER_S};
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
    let hot = hottest_quarter_share(plan);
    println!(
        "  profile: memory {} (working set {}), dirty rate {}; disk {} ({} blocks), reads {}, writes {}, {:.0}% of its accesses in its hottest quarter",
        format_size(m.memory_bytes),
        format_size(m.wss_bytes),
        format_rate(m.dirty_rate_bps() as u64),
        format_size(d.virtual_bytes),
        format_size(d.block_bytes),
        format_rate(d.read_rate_bps as u64),
        format_rate(d.write_rate_bps as u64),
        hot * 100.0
    );
}

/// Share of the profiled bytes in the quarter of the disk's regions that saw the most (1 when
/// nothing was seen: no locality to show).
fn hottest_quarter_share(plan: &WanPlan) -> f64 {
    let mut per: Vec<u64> = plan
        .profile
        .disk
        .regions
        .iter()
        .map(|r| r.reads + r.writes)
        .collect();
    let total: u64 = per.iter().sum();
    if total == 0 {
        return 1.0;
    }
    per.sort_unstable_by(|a, b| b.cmp(a));
    let quarter = per.len().div_ceil(4);
    per[..quarter].iter().sum::<u64>() as f64 / total as f64
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
}
