//! One run's summary (the report's `summary.json` rows and the table's), built from plain data:
//! the series, the phases, the manager's relief plans and the agents' migration records.
//! Pure; the runner gathers the inputs.

use crate::metrics::{self, VmLoss};
use crate::series::Sample;
use drover_core::control::HostPower;
use drover_core::migration::Technique;
use serde::{Deserialize, Serialize};

/// When each phase began, Unix s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// The manager was watching and the sampler running.
    pub start_s: f64,
    /// The raised VMs were told to run flat out (the loaded phase begins).
    pub raised_s: f64,
    /// They were told to slow down again (the loaded phase ends).
    pub fell_s: f64,
    /// The run stopped sampling.
    pub end_s: f64,
}

/// A plan the manager made, as far as the demo needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSeen {
    pub id: String,
    /// `relief`, `consolidation`, ...
    pub kind: String,
    pub state: String,
    /// Manager time (Unix s).
    pub created_s: f64,
    /// Hosts it woke.
    pub wake: Vec<String>,
}

/// A migration as its source agent recorded it, with the plan kind that asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationSeen {
    pub id: String,
    pub vm: String,
    pub from: String,
    pub to: String,
    /// The plan kind of the manager's move (None when no plan names it).
    pub kind: Option<String>,
    /// What ran (auto's pick), else what was asked.
    pub technique: String,
    /// The record's state (`completed`, `cancelled`, `failed`, `paused`, ...).
    pub state: String,
    pub started_s: f64,
    pub ended_s: Option<f64>,
    /// Start until the guest first ran on the destination, s.
    pub switchover_s: Option<f64>,
    pub downtime_ms: Option<u64>,
    pub transferred_bytes: Option<u64>,
    pub error: Option<String>,
}

/// A migration with the work its VM lost while it ran, beside its floor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationLoss {
    #[serde(flatten)]
    pub migration: MigrationSeen,
    /// Start, s after the raise.
    pub at_s: f64,
    /// Work the VM lost from its start to its end, seconds of full throughput (contention on
    /// the source included: a pre-copy runs there).
    pub lost_s: Option<f64>,
    /// Working set over link rate, s: what a post-copy must at least fetch on demand.
    pub floor_s: f64,
}

/// One run of one technique.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub technique: Technique,
    /// 1-based repetition.
    pub run: u32,
    pub phases: Phases,
    /// Mean degradation of the raised VMs over the loaded phase, %.
    pub degradation_pct: Option<f64>,
    /// Every VM's work over the loaded phase.
    pub vms: Vec<VmLoss>,
    /// Overload onset, s after the raise (None: h1 never stayed over its cap for
    /// [`metrics::RELIEF_SAMPLES`] samples in a row).
    pub onset_s: Option<f64>,
    /// Mean degradation of the raised VMs from [`SETTLED_S`] after the relief to the fall, %:
    /// what they lose once relieved (to each other and to the rest of the machine), beside
    /// which `degradation_pct` shows what the overload and the migration cost.
    pub after_relief_pct: Option<f64>,
    /// Onset until the manager's first relief plan, s.
    pub detection_s: Option<f64>,
    /// Onset until h1 was no longer over its cap, s (None: not within the loaded phase).
    pub relief_s: Option<f64>,
    pub migrations: Vec<MigrationLoss>,
    /// Every host's draw over the run (start to end), Wh.
    pub energy_wh: f64,
    /// Time-weighted mean of hosts on over the run.
    pub mean_hosts_on: Option<f64>,
    /// Most hosts on during the loaded phase.
    pub peak_hosts_on: usize,
    /// Hosts in standby at the end.
    pub standby_at_end: usize,
    /// A consolidation plan ran after the fall and a host went back to standby.
    pub repacked: bool,
    pub integrity_errors: u64,
    /// What went wrong that the figures do not show (a VM that never reported, ...).
    pub notes: Vec<String>,
}

/// Seconds after the relief before the relieved load is counted (`after_relief_pct`): a
/// post-copy's last pages arrive in that time.
pub const SETTLED_S: f64 = 3.0;

/// What [`summarize`] reads.
#[derive(Debug, Clone)]
pub struct RunInputs<'a> {
    pub technique: Technique,
    pub run: u32,
    /// The overloaded host.
    pub host: &'a str,
    /// Every VM, with whether its demand was raised.
    pub vms: Vec<(String, bool)>,
    pub phases: Phases,
    pub series: &'a [Sample],
    pub plans: &'a [PlanSeen],
    pub migrations: &'a [MigrationSeen],
    pub power: HostPower,
    pub floor_s: f64,
}

/// The raised VMs' mean degradation once relieved (`after_relief_pct`), or why there is none.
fn after_relief(
    i: &RunInputs<'_>,
    onset: Option<f64>,
    relief: Option<f64>,
) -> Result<Option<f64>, String> {
    let p = i.phases;
    let onset = onset.ok_or(format!(
        "{} never stayed over its cap for {} samples in a row in the loaded phase",
        i.host,
        metrics::RELIEF_SAMPLES
    ))?;
    let relief = relief.ok_or(format!("{} was not relieved before the fall", i.host))?;
    let from = onset + relief + SETTLED_S;
    if from + SETTLED_S >= p.fell_s {
        return Err(format!(
            "relieved {:.1} s before the fall, too late to measure the relieved load (at least \
             {:.0} s needed)",
            p.fell_s - (onset + relief),
            2.0 * SETTLED_S
        ));
    }
    let losses: Vec<VmLoss> = i
        .vms
        .iter()
        .filter_map(|(vm, raised)| metrics::vm_loss(i.series, vm, from, p.fell_s, *raised))
        .collect();
    match metrics::mean_degradation(&losses) {
        Some(d) => Ok(Some(d)),
        None => Err("no raised VM's work was measured after the relief".into()),
    }
}

/// The run's figures (see the metrics module for each definition).
pub fn summarize(i: &RunInputs<'_>) -> RunSummary {
    let p = i.phases;
    let mut notes = Vec::new();
    let vms: Vec<VmLoss> = i
        .vms
        .iter()
        .filter_map(|(vm, raised)| {
            let l = metrics::vm_loss(i.series, vm, p.raised_s, p.fell_s, *raised);
            if l.is_none() {
                notes.push(format!("{vm}: no work measured over the loaded phase"));
            }
            l
        })
        .collect();
    for m in i.migrations.iter().filter(|m| m.started_s < p.raised_s) {
        notes.push(format!(
            "{} moved {} -> {} before the raise ({:?} plan)",
            m.vm, m.from, m.to, m.kind
        ));
    }
    let onset = metrics::onset(i.series, i.host, p.raised_s, p.fell_s);
    let detection = onset.and_then(|o| {
        i.plans
            .iter()
            .filter(|pl| pl.kind == "relief" && pl.created_s >= p.raised_s)
            .map(|pl| pl.created_s)
            .min_by(f64::total_cmp)
            .map(|c| (c - o).max(0.0))
    });
    let relief =
        onset.and_then(|o| metrics::relieved(i.series, i.host, o, p.fell_s).map(|r| r - o));
    let after_relief = after_relief(i, onset, relief).unwrap_or_else(|why| {
        notes.push(format!("after relief: {why}"));
        None
    });
    let migrations = i
        .migrations
        .iter()
        .map(|m| MigrationLoss {
            migration: m.clone(),
            at_s: m.started_s - p.raised_s,
            lost_s: m.ended_s.and_then(|end| {
                metrics::vm_loss(i.series, &m.vm, m.started_s, end, true).map(|l| l.lost_s)
            }),
            floor_s: i.floor_s,
        })
        .collect();
    let standby_at_end = metrics::standby_at(i.series, p.end_s);
    let consolidated = i
        .plans
        .iter()
        .any(|pl| pl.kind == "consolidation" && pl.created_s >= p.fell_s && pl.state == "done");
    let repacked = consolidated && standby_at_end > metrics::standby_at(i.series, p.fell_s);
    RunSummary {
        technique: i.technique,
        run: i.run,
        phases: p,
        degradation_pct: metrics::mean_degradation(&vms),
        after_relief_pct: after_relief,
        vms,
        onset_s: onset.map(|o| o - p.raised_s),
        detection_s: detection,
        relief_s: relief,
        migrations,
        energy_wh: metrics::energy_wh(i.series, &i.power, p.start_s, p.end_s),
        mean_hosts_on: metrics::mean_hosts_on(i.series, p.start_s, p.end_s),
        peak_hosts_on: metrics::peak_hosts_on(i.series, p.raised_s, p.fell_s),
        standby_at_end,
        repacked,
        integrity_errors: metrics::integrity_errors(i.series),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::{HostSample, Power, VmSample};

    /// h1 (1 core) and h2; d1 raised at 10 s asks 1000 ops/s; h1 over its cap 12-15 s; a
    /// relief plan at 14 s wakes h2; d1 migrates 16-17 s (doing nothing), runs on h2 after; the
    /// fall at 30 s; a consolidation at 35 s puts h2 back in standby at 40 s.
    fn run() -> (Vec<Sample>, Vec<PlanSeen>, Vec<MigrationSeen>) {
        let mut done = 0u64;
        let series = (0..=45)
            .map(|t| {
                let h1_over = (12..=15).contains(&t);
                let on_h2 = (17..35).contains(&t);
                let h2_power = match t {
                    14..=15 => Power::Waking,
                    16..=39 => Power::Active,
                    _ => Power::Standby,
                };
                let host = |name: &str, power, demand: f64| HostSample {
                    name: name.into(),
                    power,
                    cpus: 1.0,
                    demand_cores: demand,
                    used_cores: demand.min(1.0),
                    vms: 1,
                };
                let s = Sample {
                    t_s: t as f64,
                    hosts: vec![
                        host("h1", Power::Active, if h1_over { 1.4 } else { 0.3 }),
                        host("h2", h2_power, if on_h2 { 1.0 } else { 0.0 }),
                    ],
                    vms: vec![VmSample {
                        name: "d1".into(),
                        host: if on_h2 { "h2" } else { "h1" }.into(),
                        ops: done,
                        demanded_ops: Some(t * 1000),
                        ops_per_s: 0.0,
                        integrity_errors: 0,
                        full_ops_per_s: Some(1000.0),
                    }],
                };
                done += match t {
                    12..=15 => 700,
                    16 => 0,
                    _ => 1000,
                };
                s
            })
            .collect();
        let plan = |id: &str, kind: &str, at: f64| PlanSeen {
            id: id.into(),
            kind: kind.into(),
            state: "done".into(),
            created_s: at,
            wake: vec![],
        };
        let plans = vec![
            plan("p1", "relief", 14.0),
            plan("p2", "consolidation", 35.0),
        ];
        let migrations = vec![MigrationSeen {
            id: "m1".into(),
            vm: "d1".into(),
            from: "h1".into(),
            to: "h2".into(),
            kind: Some("relief".into()),
            technique: "postcopy".into(),
            state: "completed".into(),
            started_s: 16.0,
            ended_s: Some(17.0),
            switchover_s: Some(0.05),
            downtime_ms: Some(2),
            transferred_bytes: Some(1 << 20),
            error: None,
        }];
        (series, plans, migrations)
    }

    fn summary_with_fall_at(fell_s: f64) -> RunSummary {
        let (series, plans, migrations) = run();
        summarize(&RunInputs {
            technique: Technique::Postcopy,
            run: 1,
            host: "h1",
            vms: vec![("d1".into(), true)],
            phases: Phases {
                start_s: 0.0,
                raised_s: 10.0,
                fell_s,
                end_s: 45.0,
            },
            series: &series,
            plans: &plans,
            migrations: &migrations,
            power: HostPower {
                idle_w: 100.0,
                peak_w: 200.0,
            },
            floor_s: 0.5,
        })
    }

    #[test]
    fn a_missing_after_relief_figure_says_why() {
        // Relieved at 16 s; the fall at 20 s leaves 4 s, under the 6 s needed.
        let s = summary_with_fall_at(20.0);
        assert_eq!(s.after_relief_pct, None);
        assert_eq!(
            s.notes,
            vec![
                "after relief: relieved 4.0 s before the fall, too late to measure the relieved \
                 load (at least 6 s needed)"
                    .to_string()
            ]
        );
        // The fall at 14 s: h1 is still over its cap.
        let s = summary_with_fall_at(14.0);
        assert_eq!(
            s.notes,
            vec!["after relief: h1 was not relieved before the fall".to_string()]
        );
    }

    #[test]
    fn a_hand_computed_run() {
        let s = summary_with_fall_at(30.0);
        // 10-30 s: asked 20000; lost 4 x 300 + 1000 = 2200: 11%, 2.2 s.
        assert!((s.degradation_pct.expect("pct") - 11.0).abs() < 1e-9);
        assert!((s.vms[0].lost_s - 2.2).abs() < 1e-9);
        assert_eq!(s.onset_s, Some(2.0));
        assert_eq!(s.detection_s, Some(2.0));
        // Under the cap from 16 s: 4 s after the onset at 12 s.
        assert_eq!(s.relief_s, Some(4.0));
        // From 19 s (relief at 16 s + 3 s) to 30 s: nothing lost.
        assert_eq!(s.after_relief_pct, Some(0.0));
        let m = &s.migrations[0];
        assert_eq!((m.at_s, m.lost_s, m.floor_s), (6.0, Some(1.0), 0.5));
        assert_eq!(s.peak_hosts_on, 2);
        assert_eq!(s.standby_at_end, 1);
        assert!(s.repacked);
        assert_eq!(s.integrity_errors, 0);
        assert!(s.notes.is_empty(), "{:?}", s.notes);
        // h1: 0-12 and 16-45 at 0.3 (130 W, 41 s), 12-16 at 1.0 (200 W, 4 s); h2 on 14-40
        // (26 s): waking 14-16 at 100 W, 16-17 at 100 W, 17-35 at 200 W, 35-40 at 100 W.
        let want = (130.0 * 41.0 + 200.0 * 4.0 + 100.0 * 8.0 + 200.0 * 18.0) / 3600.0;
        assert!(
            (s.energy_wh - want).abs() < 1e-9,
            "{} vs {want}",
            s.energy_wh
        );
    }
}
