//! Running several policies over several workloads.

use crate::engine::simulate;
use crate::error::SimError;
use crate::metrics::Report;
use crate::model::DatacenterModel;
use crate::trace::Workload;
use drover_core::dc::{policy, PolicySpec};

/// Parses a comma-separated policy list; `all` expands to every benchmarked policy.
pub fn parse_policies(list: &str) -> Result<Vec<PolicySpec>, SimError> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if name.eq_ignore_ascii_case("all") {
            for n in policy::ALL {
                out.push(n.parse()?);
            }
        } else {
            out.push(name.parse()?);
        }
    }
    if out.is_empty() {
        return Err(SimError::Setup("no policy given".into()));
    }
    Ok(out)
}

/// Runs every policy on every workload; `on_done` sees each report as it completes.
pub fn run_all(
    model: &DatacenterModel,
    days: &[Workload],
    policies: &[PolicySpec],
    seed: u64,
    mut on_done: impl FnMut(&Report),
) -> Result<Vec<Report>, SimError> {
    let mut out = Vec::new();
    for day in days {
        for p in policies {
            let r = simulate(model, day, p.clone(), seed, None)?;
            on_done(&r);
            out.push(r);
        }
    }
    Ok(out)
}
