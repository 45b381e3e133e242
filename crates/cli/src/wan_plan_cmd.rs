//! `drover vm wan-plan NAME (--link RATE --rtt-ms MS | --to HOST) [--budget S] [--window S]`:
//! the agent profiles the VM and its disk for a few seconds and answers with the WAN fraction
//! plan (`POST /v1/vms/{name}/wan-plan`); printed as the choice's reason and the profile in one
//! line each, or as JSON. Nothing migrates. In a lab, `--to HOST` takes the link from the lab
//! itself ([`lab_path`]); `--link` and `--rtt-ms` given beside it override its figures.

use crate::flags::Typed;
use drover_api::wan::{WanPlan, WanPlanRequest, MAX_LINK_BYTES_PER_S, MIN_LINK_BYTES_PER_S};
use drover_core::migration::wan::RegionCount;
use drover_core::units::{format_rate, format_size};
use drover_lab::tbf::TbfParams;
use drover_lab::wan::WanLink;

/// The path between two lab hosts as a WAN plan sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabPath {
    /// The slower of the hosts' own links and their WAN's rate, bytes/s.
    pub rate_bytes_per_s: u64,
    /// Twice the WAN's one-way delay (its jitter left out), ms; 0 without a WAN (a bridge on
    /// one machine).
    pub rtt_ms: u32,
    /// Where the figures come from, for the reader.
    pub what: String,
}

/// The path from lab host `from` to `to` (names `hN`): through their WAN pair if the lab has
/// one (`--wan`), else over the lab's bridge at its hosts' link rate (`lan`, each direction).
pub fn lab_path(lan: &TbfParams, wans: &[WanLink], from: &str, to: &str) -> LabPath {
    let ends = |w: &WanLink| {
        let (a, b) = (format!("h{}", w.a), format!("h{}", w.b));
        (a == from && b == to) || (a == to && b == from)
    };
    match wans.iter().find(|w| ends(w)) {
        Some(w) => {
            let rate = w.rate.rate_bytes_per_sec.min(lan.rate_bytes_per_sec);
            let rtt_ms = u32::try_from((2 * w.delay_us).div_ceil(1000)).unwrap_or(u32::MAX);
            LabPath {
                rate_bytes_per_s: rate,
                rtt_ms,
                what: format!(
                    "the lab's WAN {}: {} each way, {} ms round trip",
                    w.pair(),
                    format_rate(rate),
                    rtt_ms
                ),
            }
        }
        None => LabPath {
            rate_bytes_per_s: lan.rate_bytes_per_sec,
            rtt_ms: 0,
            what: format!(
                "no WAN between {from} and {to}: the lab's bridge, {} each way, round trip under \
                 a millisecond",
                format_rate(lan.rate_bytes_per_sec)
            ),
        },
    }
}

/// `--link` read and ranged, bytes/s.
pub fn link_flag(link: &str) -> anyhow::Result<u64> {
    let rate = Typed::rate("--link", link)?;
    if !(MIN_LINK_BYTES_PER_S..=MAX_LINK_BYTES_PER_S).contains(&rate.value()) {
        return Err(rate.refused("expected 1Mbit/s to 100Gbit/s"));
    }
    Ok(rate.value())
}

/// The request for a link of `link_bytes_per_s` and `rtt_ms`.
pub fn request_at(
    link_bytes_per_s: u64,
    rtt_ms: u32,
    budget_s: Option<u32>,
    window_s: u32,
) -> WanPlanRequest {
    WanPlanRequest {
        link_bytes_per_s,
        rtt_ms,
        budget_s,
        window_s: Some(window_s),
    }
}

/// The plan for a reader: the choice and its reason, then what the profile measured.
/// `whither`: the `vm migrate` flags that name the lab and destination in the run line
/// (`--lab fu1 --to h2`), so that it can be pasted as printed.
pub fn print(plan: &WanPlan, whither: &str) {
    let c = &plan.choice.chosen;
    println!(
        "{}: memory {:.0}% and storage {:.0}% ahead",
        plan.vm,
        c.memory_fraction * 100.0,
        c.storage_fraction * 100.0
    );
    println!("  why: {}", plan.choice.reason);
    println!(
        "  run: {}",
        how_to_run(&plan.vm, whither, c.memory_fraction, c.storage_fraction)
    );
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

/// The `drover vm migrate` command (to `whither`, see [`print`]) that runs fractions `(m, s)`
/// of memory and disk ahead.
/// Storage: none ahead is storage post-copy, all of it with all of memory pre-copy, a part
/// (or all with memory not all ahead) the storage hybrid with that fraction (its hottest
/// blocks by the profile the agent takes as the migration starts). Memory: none ahead is
/// post-copy, all pre-copy, a part the hybrid switching to post-copy after that share of RAM
/// (QEMU sends it in address order, not the hottest first as the model assumes, so the run is
/// the nearest, not the same).
fn how_to_run(vm: &str, whither: &str, m: f64, s: f64) -> String {
    let memory = if m <= 0.0 {
        "--technique postcopy".to_string()
    } else if m >= 1.0 {
        "--technique precopy".to_string()
    } else {
        format!("--technique hybrid --hybrid-fraction {m:.2} (QEMU sends that share in address order, not hottest first)")
    };
    if s <= 0.0 {
        format!("drover vm migrate {vm} {whither} --storage postcopy {memory}")
    } else if s >= 1.0 && m >= 1.0 {
        format!("drover vm migrate {vm} {whither} --storage precopy {memory}")
    } else {
        format!(
            "drover vm migrate {vm} {whither} --storage hybrid --storage-fraction {:.2} {memory}",
            s.min(1.0)
        )
    }
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
        assert_eq!(link_flag("100Mbit/s").unwrap(), 12_500_000);
        let r = request_at(12_500_000, 50, None, 3);
        assert_eq!(
            (r.link_bytes_per_s, r.rtt_ms, r.window_s),
            (12_500_000, 50, Some(3))
        );
        for (text, says) in [
            ("10kbit/s", "expected 1Mbit/s to 100Gbit/s"),
            ("1Tbit/s", "expected 1Mbit/s to 100Gbit/s"),
            ("fast", "--link"),
        ] {
            let e = link_flag(text).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("--link"), "{text}: {e}");
        }
    }

    #[test]
    fn a_lab_path_takes_the_wan_pair_either_way_round_and_the_slower_rate() {
        let lan = TbfParams::for_rate(125_000_000).expect("lan");
        let wan = WanLink {
            a: 1,
            b: 3,
            rate: TbfParams::for_rate(12_500_000).expect("wan"),
            delay_us: 25_200,
            jitter_us: 2_000,
        };
        let wans = [wan];
        let p = lab_path(&lan, &wans, "h3", "h1");
        assert_eq!((p.rate_bytes_per_s, p.rtt_ms), (12_500_000, 51));
        assert!(p.what.contains("h1-h3"), "{}", p.what);
        assert_eq!(lab_path(&lan, &wans, "h1", "h3"), p);
        let lan_only = lab_path(&lan, &wans, "h1", "h2");
        assert_eq!(
            (lan_only.rate_bytes_per_s, lan_only.rtt_ms),
            (125_000_000, 0)
        );
        assert!(lan_only.what.contains("no WAN"), "{}", lan_only.what);
        let slow_lan = TbfParams::for_rate(1_250_000).expect("slow lan");
        assert_eq!(
            lab_path(&slow_lan, &wans, "h1", "h3").rate_bytes_per_s,
            1_250_000
        );
    }

    #[test]
    fn the_plan_says_how_to_run_it() {
        let run = |m, s| how_to_run("d1", "--to HOST", m, s);
        assert_eq!(
            how_to_run("d1", "--lab fu1 --to h2", 0.0, 0.0),
            "drover vm migrate d1 --lab fu1 --to h2 --storage postcopy --technique postcopy"
        );
        assert_eq!(
            run(0.4, 0.0),
            "drover vm migrate d1 --to HOST --storage postcopy --technique hybrid \
             --hybrid-fraction 0.40 (QEMU sends that share in address order, not hottest first)"
        );
        assert_eq!(
            run(1.0, 1.0),
            "drover vm migrate d1 --to HOST --storage precopy --technique precopy"
        );
        assert_eq!(
            run(0.0, 1.0),
            "drover vm migrate d1 --to HOST --storage hybrid --storage-fraction 1.00 \
             --technique postcopy"
        );
        assert_eq!(
            run(1.0, 0.25),
            "drover vm migrate d1 --to HOST --storage hybrid --storage-fraction 0.25 \
             --technique precopy"
        );
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
