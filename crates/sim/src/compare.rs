//! Choosing the policies to compare.

use crate::error::SimError;
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
