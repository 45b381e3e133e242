//! Choosing the policies to compare, and checking that their rows can be compared.

use crate::error::SimError;
use crate::metrics::Report;
use drover_core::dc::{policy, PolicySpec};
use std::collections::{BTreeMap, BTreeSet};

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

/// Days on which the rows did not all admit the same VMs (admission refused different ones, as
/// first fit, power-aware and packed admission may when hosts run short): their energy and SLA
/// figures cover different workloads and must not be compared as they are.
pub fn mixed_admission_days(reports: &[Report]) -> BTreeSet<String> {
    let mut sets: BTreeMap<&str, BTreeSet<&[usize]>> = BTreeMap::new();
    for r in reports {
        sets.entry(&r.day).or_default().insert(&r.rejected_vms);
    }
    sets.into_iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|(day, _)| day.to_string())
        .collect()
}
