//! One traffic run's figures, from plain data (the series, the peer's reports, the agents'
//! migration records and the group model's forecast of the schedule that ran). Pure.
//!
//! # The figures
//! - **Evacuation time** `E`: the first migration's start to the last one's end (the agents'
//!   records), s.
//! - **Throughput before**, per VM: its application's bytes (both ways, from the peer's
//!   counters) over the `baseline_s` before the evacuation, bytes/s.
//! - **Lost work**, per VM: `(before x E - bytes moved during E) / before`, seconds of its full
//!   throughput; **degradation**: that over `max(E, window_min_s)`, percent: the group model's
//!   own definition ([`drover_core::migration::group`], `window_min_s` from its cost
//!   parameters), so that predicted and measured compare. The group's degradation is the mean
//!   over its VMs; its lost work the sum.
//! - **Throughput drop**, per VM: `1 - during / before`, percent (the plain reading).
//! - **Longest pause**: the longest time in the evacuation window in which the VM's application
//!   moved no byte (to within the peer's report interval).
//! - **Link use**: each host's mean send and receive rates over `E`, as a share of the link.

use super::config::{Role, Strategy};
use super::series::{app_rate, link_rate, longest_pause, PeerSample, TrafficSample};
use drover_core::migration::group::GroupPlan;
use drover_core::migration::Technique;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A migration as its source agent recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationDone {
    pub vm: String,
    pub technique: Technique,
    /// The record's final state (`completed`, `failed`, ...).
    pub state: String,
    pub started_s: f64,
    pub ended_s: Option<f64>,
    pub downtime_ms: Option<u64>,
    pub transferred_bytes: Option<u64>,
    pub error: Option<String>,
}

impl MigrationDone {
    pub fn completed(&self) -> bool {
        self.state == "completed"
    }

    /// Start to end, s.
    pub fn duration_s(&self) -> Option<f64> {
        self.ended_s.map(|e| e - self.started_s)
    }
}

/// Folds into `learned` what one pass over each guest's memory moved, as `migrations`
/// measured it: per VM, the least `transferred_bytes` of its completed migrations (a pre-copy
/// also resends what was dirtied meanwhile; a post-copy sends each page once; zero pages cross
/// as headers). The group model forecasts later runs with it ([`LeavingVm::moved_bytes`]).
///
/// [`LeavingVm::moved_bytes`]: drover_core::migration::group::LeavingVm::moved_bytes
pub fn learn_moved_bytes(learned: &mut BTreeMap<String, u64>, migrations: &[MigrationDone]) {
    for m in migrations.iter().filter(|m| m.completed()) {
        let Some(bytes) = m.transferred_bytes.filter(|b| *b > 0) else {
            continue;
        };
        learned
            .entry(m.vm.clone())
            .and_modify(|b| *b = (*b).min(bytes))
            .or_insert(bytes);
    }
}

/// A VM of the run as the summary needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSeen {
    pub name: String,
    pub role: Role,
    /// Its NIC's address (how the peer tells its connections).
    pub ip: String,
}

/// Everything one run recorded.
#[derive(Debug, Clone)]
pub struct RunRecord<'a> {
    pub strategy: Strategy,
    pub run: u32,
    pub vms: &'a [VmSeen],
    pub series: &'a [TrafficSample],
    pub peer: &'a [PeerSample],
    /// In the order they ran.
    pub migrations: &'a [MigrationDone],
    /// The model's forecast of the schedule that ran.
    pub predicted: &'a GroupPlan,
    pub baseline_s: f64,
    /// Each host's link rate each way, bytes/s.
    pub link_bps: f64,
    /// The degradation window's floor, s (the model's `window_min_s`).
    pub window_min_s: f64,
    /// The hosts, source first.
    pub hosts: &'a [String],
}

/// One VM's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmResult {
    pub name: String,
    pub role: Role,
    /// 1-based position in the order the migrations ran.
    pub position: usize,
    pub technique: Technique,
    pub state: String,
    pub migration_s: Option<f64>,
    pub predicted_migration_s: Option<f64>,
    pub before_bps: Option<f64>,
    pub during_bps: Option<f64>,
    pub drop_pct: Option<f64>,
    pub lost_s: Option<f64>,
    pub predicted_lost_s: Option<f64>,
    pub degradation_pct: Option<f64>,
    pub predicted_degradation_pct: Option<f64>,
    pub longest_pause_s: Option<f64>,
}

/// A host's mean link use over the evacuation, share of the link each way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkUse {
    pub host: String,
    pub tx_share: f64,
    pub rx_share: f64,
}

/// One run's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub strategy: Strategy,
    pub run: u32,
    /// Migrations at a time.
    pub concurrency: u32,
    /// Start of the evacuation, Unix s (None: no migration started).
    pub start_s: Option<f64>,
    pub evacuation_s: Option<f64>,
    pub predicted_evacuation_s: f64,
    /// Mean over the VMs, percent.
    pub degradation_pct: Option<f64>,
    pub predicted_degradation_pct: f64,
    /// Summed over the VMs, s.
    pub lost_s: Option<f64>,
    pub predicted_lost_s: f64,
    pub failed_migrations: usize,
    /// In migration order.
    pub vms: Vec<VmResult>,
    pub links: Vec<LinkUse>,
    /// The group choice's (or forecast's) explanation.
    pub reason: String,
    pub notes: Vec<String>,
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The run's figures (see the module doc).
pub fn summarize(r: &RunRecord<'_>) -> RunResult {
    let start = r
        .migrations
        .iter()
        .map(|m| m.started_s)
        .min_by(f64::total_cmp);
    let end = r
        .migrations
        .iter()
        .map(|m| m.ended_s)
        .try_fold(f64::NEG_INFINITY, |acc, e| e.map(|e| acc.max(e)));
    let window = match (start, end) {
        (Some(s), Some(e)) if e > s => Some((s, e)),
        _ => None,
    };
    let mut notes = Vec::new();
    if window.is_none() {
        notes.push("no evacuation window: a migration did not end".to_string());
    }
    let vms: Vec<VmResult> = r
        .migrations
        .iter()
        .enumerate()
        .map(|(i, m)| vm_result(r, i + 1, m, window))
        .collect();
    let degr: Vec<f64> = vms.iter().filter_map(|v| v.degradation_pct).collect();
    let lost: Vec<f64> = vms.iter().filter_map(|v| v.lost_s).collect();
    let complete = |n: usize| n == vms.len() && n > 0;
    let p = r.predicted;
    RunResult {
        strategy: r.strategy,
        run: r.run,
        concurrency: p.schedule.concurrency,
        start_s: start,
        evacuation_s: window.map(|(s, e)| e - s),
        predicted_evacuation_s: p.evacuation_s,
        degradation_pct: complete(degr.len()).then(|| mean(&degr)).flatten(),
        predicted_degradation_pct: mean(
            &p.vms.iter().map(|v| v.degradation_pct).collect::<Vec<_>>(),
        )
        .unwrap_or(0.0),
        lost_s: complete(lost.len()).then(|| lost.iter().sum()),
        predicted_lost_s: p.lost_work_s,
        failed_migrations: r.migrations.iter().filter(|m| !m.completed()).count(),
        vms,
        links: window.map_or_else(Vec::new, |(s, e)| link_use(r, s, e)),
        reason: p.reason.clone(),
        notes,
    }
}

fn vm_result(
    r: &RunRecord<'_>,
    position: usize,
    m: &MigrationDone,
    w: Option<(f64, f64)>,
) -> VmResult {
    let seen = r.vms.iter().find(|v| v.name == m.vm);
    let forecast = r.predicted.vms.iter().find(|f| f.name == m.vm);
    let ip = seen.map_or("", |v| v.ip.as_str());
    let before = w.and_then(|(s, _)| app_rate(r.peer, ip, s - r.baseline_s, s));
    let during = w.and_then(|(s, e)| app_rate(r.peer, ip, s, e));
    let (drop, lost, degr) = match (w, before, during) {
        (Some((s, e)), Some(b), Some(d)) if b > 0.0 => {
            let lost = (b - d) * (e - s) / b;
            (
                Some(100.0 * (1.0 - d / b)),
                Some(lost),
                Some(100.0 * lost / (e - s).max(r.window_min_s)),
            )
        }
        _ => (None, None, None),
    };
    VmResult {
        name: m.vm.clone(),
        role: seen.map_or(Role::Out, |v| v.role),
        position,
        technique: m.technique,
        state: m.state.clone(),
        migration_s: m.duration_s(),
        predicted_migration_s: forecast.map(|f| f.migration_s),
        before_bps: before,
        during_bps: during,
        drop_pct: drop,
        lost_s: lost,
        predicted_lost_s: forecast.map(|f| f.lost_work_s),
        degradation_pct: degr,
        predicted_degradation_pct: forecast.map(|f| f.degradation_pct),
        longest_pause_s: w.map(|(s, e)| longest_pause(r.peer, ip, s, e)),
    }
}

fn link_use(r: &RunRecord<'_>, s: f64, e: f64) -> Vec<LinkUse> {
    r.hosts
        .iter()
        .filter_map(|h| {
            let (tx, rx) = link_rate(r.series, h, s, e)?;
            Some(LinkUse {
                host: h.clone(),
                tx_share: tx / r.link_bps,
                rx_share: rx / r.link_bps,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::series::{LinkCounters, PeerConn};
    use drover_core::migration::group::{
        predict_group, Group, GroupParams, HostNic, LeavingVm, Schedule, Traffic,
    };
    use drover_core::migration::VmProfile;

    fn plan() -> GroupPlan {
        let nic = |h: &str| HostNic {
            host: h.into(),
            tx_capacity_bps: 1e6,
            rx_capacity_bps: 1e6,
            residents: vec![],
        };
        let vm = |name: &str| LeavingVm {
            name: name.into(),
            profile: VmProfile {
                memory_bytes: 4 << 20,
                wss_bytes: 1 << 20,
                dirty_rate_bps: 0.0,
            },
            moved_bytes: None,
            traffic: Traffic {
                rx_bps: 0.0,
                tx_bps: 5e5,
            },
            destination: "h2".into(),
        };
        let group = Group {
            source: nic("h1"),
            destinations: vec![nic("h2")],
            vms: vec![vm("out1"), vm("in1")],
        };
        let schedule = Schedule {
            techniques: vec![Technique::Postcopy, Technique::Precopy],
            order: vec![0, 1],
            concurrency: 1,
        };
        predict_group(&group, &GroupParams::default(), &schedule, &[]).expect("forecast")
    }

    /// Two VMs: out1 (198.18.0.10) at 1000 B/s before, 500 B/s over the evacuation (10 to 30
    /// s); in1 (198.18.0.11) at 2000 B/s throughout. h1 sends 40,000 B over the evacuation.
    fn record_parts() -> (
        Vec<VmSeen>,
        Vec<TrafficSample>,
        Vec<PeerSample>,
        Vec<MigrationDone>,
    ) {
        let vms = vec![
            VmSeen {
                name: "out1".into(),
                role: Role::Out,
                ip: "198.18.0.10".into(),
            },
            VmSeen {
                name: "in1".into(),
                role: Role::In,
                ip: "198.18.0.11".into(),
            },
        ];
        let out1 = |t: f64| {
            if t <= 10.0 {
                1000.0 * t
            } else {
                10_000.0 + 500.0 * (t - 10.0)
            }
        };
        let peer = (0..=40)
            .map(|t| {
                let t = f64::from(t);
                PeerSample {
                    t_s: t,
                    conns: vec![
                        PeerConn {
                            ip: "198.18.0.10".into(),
                            rx_bytes: out1(t) as u64,
                            tx_bytes: 0,
                        },
                        PeerConn {
                            ip: "198.18.0.11".into(),
                            rx_bytes: 0,
                            tx_bytes: (2000.0 * t) as u64,
                        },
                    ],
                }
            })
            .collect();
        let series = [0.0, 10.0, 30.0]
            .iter()
            .map(|&t| TrafficSample {
                t_s: t,
                links: vec![LinkCounters {
                    host: "h1".into(),
                    tx_bytes: (2000.0 * t) as u64,
                    rx_bytes: 0,
                }],
                vms: vec![],
            })
            .collect();
        let done = |vm: &str, s: f64, e: f64, tech| MigrationDone {
            vm: vm.into(),
            technique: tech,
            state: "completed".into(),
            started_s: s,
            ended_s: Some(e),
            downtime_ms: None,
            transferred_bytes: None,
            error: None,
        };
        let migrations = vec![
            done("out1", 10.0, 22.0, Technique::Postcopy),
            done("in1", 22.0, 30.0, Technique::Precopy),
        ];
        (vms, series, peer, migrations)
    }

    /// The least bytes of each VM's completed migrations; failed ones and missing figures
    /// teach nothing.
    #[test]
    fn moved_bytes_are_learned_from_completed_migrations() {
        let done = |vm: &str, state: &str, bytes: Option<u64>| MigrationDone {
            vm: vm.into(),
            technique: Technique::Precopy,
            state: state.into(),
            started_s: 0.0,
            ended_s: Some(1.0),
            downtime_ms: None,
            transferred_bytes: bytes,
            error: None,
        };
        let mut learned = BTreeMap::new();
        learn_moved_bytes(
            &mut learned,
            &[
                done("a", "completed", Some(100)),
                done("b", "failed", Some(10)),
                done("c", "completed", None),
            ],
        );
        learn_moved_bytes(
            &mut learned,
            &[
                done("a", "completed", Some(97)),
                done("a", "completed", Some(120)),
            ],
        );
        assert_eq!(learned, BTreeMap::from([("a".to_string(), 97)]));
    }

    /// The figures of `migrations` over [`record_parts`]'s series, as `strategy`'s run 1, with
    /// h1 and h2 as `hosts` and a 4000 B/s link.
    fn summarize_parts(
        strategy: Strategy,
        migrations: &[MigrationDone],
        hosts: &[String],
    ) -> (RunResult, GroupPlan) {
        let (vms, series, peer, _) = record_parts();
        let predicted = plan();
        let r = summarize(&RunRecord {
            strategy,
            run: 1,
            vms: &vms,
            series: &series,
            peer: &peer,
            migrations,
            predicted: &predicted,
            baseline_s: 10.0,
            link_bps: 4000.0,
            window_min_s: 10.0,
            hosts,
        });
        (r, predicted)
    }

    #[test]
    fn figures_of_a_run_by_hand() {
        let (.., migrations) = record_parts();
        let hosts = vec!["h1".to_string(), "h2".to_string()];
        let (r, predicted) = summarize_parts(Strategy::TrafficSensitive, &migrations, &hosts);
        assert_eq!(r.evacuation_s, Some(20.0));
        assert_eq!(r.start_s, Some(10.0));
        let out1 = &r.vms[0];
        assert_eq!((out1.name.as_str(), out1.position), ("out1", 1));
        assert_eq!(out1.migration_s, Some(12.0));
        assert_eq!(out1.before_bps, Some(1000.0));
        assert_eq!(out1.during_bps, Some(500.0));
        assert_eq!(out1.drop_pct, Some(50.0));
        // (1000 - 500) x 20 s / 1000 = 10 s of full throughput, over a 20 s window.
        assert_eq!(out1.lost_s, Some(10.0));
        assert_eq!(out1.degradation_pct, Some(50.0));
        let in1 = &r.vms[1];
        assert_eq!(in1.lost_s, Some(0.0));
        assert_eq!(in1.degradation_pct, Some(0.0));
        assert_eq!(in1.longest_pause_s, Some(1.0));
        assert_eq!(r.degradation_pct, Some(25.0));
        assert_eq!(r.lost_s, Some(10.0));
        assert_eq!(r.failed_migrations, 0);
        // h1 sent 40,000 B in 20 s of a 4000 B/s link; h2 has no counters.
        assert_eq!(
            r.links,
            vec![LinkUse {
                host: "h1".into(),
                tx_share: 0.5,
                rx_share: 0.0
            }]
        );
        assert_eq!(r.predicted_evacuation_s, predicted.evacuation_s);
        assert_eq!(
            out1.predicted_migration_s,
            Some(predicted.vms[0].migration_s)
        );
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    #[test]
    fn a_migration_that_never_ended_leaves_no_window() {
        let (.., mut migrations) = record_parts();
        migrations[1].ended_s = None;
        migrations[1].state = "failed".into();
        let (r, _) = summarize_parts(Strategy::AllPrecopy, &migrations, &[]);
        assert_eq!(
            (r.evacuation_s, r.degradation_pct, r.lost_s),
            (None, None, None)
        );
        assert_eq!(r.failed_migrations, 1);
        assert_eq!(r.notes.len(), 1);
        assert_eq!(r.vms[1].migration_s, None);
    }

    #[test]
    fn a_short_evacuation_is_judged_over_the_window_floor() {
        let (.., mut migrations) = record_parts();
        // One migration from 10 to 14 s: out1 moved 2000 B of 4000.
        migrations.truncate(1);
        migrations[0].ended_s = Some(14.0);
        let (r, _) = summarize_parts(Strategy::AllPostcopy, &migrations, &[]);
        assert_eq!(r.vms[0].lost_s, Some(2.0));
        // 2 s lost over max(4 s, 10 s).
        assert_eq!(r.vms[0].degradation_pct, Some(20.0));
    }
}
