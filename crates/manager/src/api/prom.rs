//! `GET /metrics`: the manager in Prometheus text format, made at scrape time from what the
//! loop last published (hosts, status) and from the store (plans, newest first, and moves,
//! oldest kept first: at most [`MAX_READ`] of each, so a scrape costs one bounded read of
//! each table; retention keeps the tables smaller than that).
//!
//! | series | labels | meaning |
//! | --- | --- | --- |
//! | `drover_manager_host_load` | host | CPU demand over capacity at the last look |
//! | `drover_manager_host_demand_cores` | host | what its VMs want, cores |
//! | `drover_manager_host_reachable` | host | 1 when its agent counts as reachable |
//! | `drover_manager_host_power_state` | host, state | 1 for its current power state |
//! | `drover_manager_plans` | kind, state | stored plans |
//! | `drover_manager_moves` | technique, state | stored moves (technique as requested; `auto`: the agent chose) |
//! | `drover_manager_looks_total` | | looks since start (a counter) |
//! | `drover_manager_look_duration_seconds` | | the last look, observe to outcomes stored |
//! | `drover_manager_energy_joules_total` | | energy the hosts drew since the store was made (the power model; a counter) |
//! | `drover_manager_store_failures_in_a_row` | | store writes failed in a row (above 0 the loop acts on nothing) |

use super::ApiError;
use crate::handle::Manager;
use crate::store::{MoveQuery, PlanQuery, MAX_READ};
use drover_core::control::PowerState;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

type GaugeF = Gauge<f64, AtomicU64>;
type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// The text exposition of `manager` now.
///
/// # Errors
/// [`ApiError::Manager`] when the store cannot be read, [`ApiError::Internal`] when the
/// encoder fails.
pub async fn render(manager: &Manager) -> Result<String, ApiError> {
    let mut reg = <Registry>::default();
    let status = manager.status().await;
    let hosts = manager.hosts().await;
    let per_host = |name: &str, help: &str, f: &dyn Fn(&crate::handle::HostView) -> f64| {
        let fam = Family::<Labels, GaugeF>::default();
        for h in &hosts {
            fam.get_or_create(&labels(&[("host", &h.name)])).set(f(h));
        }
        (name.to_string(), help.to_string(), fam)
    };
    for (name, help, fam) in [
        per_host(
            "drover_manager_host_load",
            "CPU demand over capacity at the last look",
            &|h| h.load,
        ),
        per_host(
            "drover_manager_host_demand_cores",
            "What the host's VMs want, cores",
            &|h| h.cpu_demand_cores,
        ),
        per_host(
            "drover_manager_host_reachable",
            "1 when the host's agent counts as reachable",
            &|h| f64::from(u8::from(h.reachable)),
        ),
    ] {
        reg.register(name, help, fam);
    }
    let power = Family::<Labels, GaugeF>::default();
    for h in &hosts {
        for state in [PowerState::Active, PowerState::Standby, PowerState::Waking] {
            let s = format!("{state:?}").to_lowercase();
            power
                .get_or_create(&labels(&[("host", &h.name), ("state", &s)]))
                .set(if state == h.power { 1.0 } else { 0.0 });
        }
    }
    reg.register(
        "drover_manager_host_power_state",
        "1 for the host's current power state",
        power,
    );

    let plans = manager
        .plans(PlanQuery {
            limit: MAX_READ,
            ..PlanQuery::default()
        })
        .await?;
    let mut by_plan: BTreeMap<(String, &'static str), f64> = BTreeMap::new();
    for p in &plans {
        let kind = format!("{:?}", p.kind).to_lowercase();
        *by_plan.entry((kind, p.state.name())).or_default() += 1.0;
    }
    let fam = Family::<Labels, GaugeF>::default();
    for ((kind, state), n) in by_plan {
        fam.get_or_create(&labels(&[("kind", &kind), ("state", state)]))
            .set(n);
    }
    reg.register(
        "drover_manager_plans",
        "Stored plans by kind and state",
        fam,
    );

    let moves = manager
        .moves(MoveQuery {
            limit: MAX_READ,
            ..MoveQuery::default()
        })
        .await?;
    let mut by_move: BTreeMap<(String, &'static str), f64> = BTreeMap::new();
    for m in &moves {
        let t = m.technique.technique.to_string();
        *by_move.entry((t, m.state.name())).or_default() += 1.0;
    }
    let fam = Family::<Labels, GaugeF>::default();
    for ((technique, state), n) in by_move {
        fam.get_or_create(&labels(&[("technique", &technique), ("state", state)]))
            .set(n);
    }
    reg.register(
        "drover_manager_moves",
        "Stored moves by requested technique and state",
        fam,
    );

    // Looks only count up: a counter, so rate() works and a restart reads as a reset. The
    // encoder adds the `_total` suffix.
    let looks = Counter::<u64>::default();
    looks.inc_by(status.looks);
    reg.register(
        "drover_manager_looks",
        "Looks since the manager started",
        looks,
    );
    // Energy only grows too (the store keeps it across restarts): a counter in joules, the
    // base unit Prometheus names use.
    let energy = Counter::<f64, AtomicU64>::default();
    energy.inc_by(status.energy_wh.max(0.0) * 3600.0);
    reg.register(
        "drover_manager_energy_joules",
        "Energy the hosts drew since the store was made (the power model), J",
        energy,
    );
    let scalars: [(&str, &str, Option<f64>); 2] = [
        (
            "drover_manager_look_duration_seconds",
            "The last look, observe to outcomes stored, s",
            status.last_look_ms.map(|ms| ms / 1000.0),
        ),
        (
            "drover_manager_store_failures_in_a_row",
            "Store writes failed in a row",
            Some(f64::from(status.store.failures_in_a_row)),
        ),
    ];
    for (name, help, v) in scalars {
        // Unknown (no look yet): no sample rather than a misleading zero.
        let Some(v) = v else { continue };
        let g = GaugeF::default();
        g.set(v);
        reg.register(name, help, g);
    }
    let mut out = String::new();
    encode(&mut out, &reg).map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    Ok(out)
}
