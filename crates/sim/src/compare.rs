//! Choosing the policies to compare, running them side by side, and checking that their rows
//! can be compared.

use crate::error::SimError;
use crate::metrics::Report;
use drover_core::dc::{policy, PolicySpec};
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// Parses a comma-separated policy list; `all` expands to every benchmarked policy.
pub fn parse_policies(list: &str) -> Result<Vec<PolicySpec>, SimError> {
    let mut out: Vec<PolicySpec> = Vec::new();
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
    // The same policy twice would run twice and print two identical rows (`all` already holds
    // every benchmarked one); names differing only in case or separator are the same policy.
    let mut seen = BTreeSet::new();
    for p in &out {
        let label = p.to_string();
        if !seen.insert(label.clone()) {
            return Err(SimError::Setup(format!(
                "policy {label} is listed twice in '{list}' (`all` is {})",
                policy::ALL.join(",")
            )));
        }
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

/// Worker threads to use by default: every core the process may run on (1 if unknown).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Runs `run` on every job on up to `threads` threads (each simulation is independent and
/// deterministic, so running them side by side changes nothing but the wall time) and hands
/// each result to `done` in job order, as soon as it and every earlier one are finished: output
/// streams in the same order whatever the scheduling. `threads` is clamped to 1..=jobs.
pub fn run_ordered<J, R>(
    jobs: &[J],
    threads: usize,
    run: impl Fn(&J) -> R + Sync,
    mut done: impl FnMut(usize, R),
) where
    J: Sync,
    R: Send,
{
    let threads = threads.clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, R)>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, run) = (&next, &run);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                if tx.send((i, run(job))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut pending: Vec<Option<R>> = (0..jobs.len()).map(|_| None).collect();
        let mut emitted = 0;
        for (i, r) in rx {
            pending[i] = Some(r);
            while let Some(r) = pending.get_mut(emitted).and_then(Option::take) {
                done(emitted, r);
                emitted += 1;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_listed_twice_is_refused_by_name() {
        for (list, twice) in [
            ("all,drover", "drover"),
            ("lr-mmt-1.2,LR_MMT_1.2", "lr-mmt-1.2"),
            ("npa, npa", "npa"),
        ] {
            let e = parse_policies(list).unwrap_err().to_string();
            assert!(
                e.contains(&format!("policy {twice} is listed twice")),
                "{e}"
            );
        }
        // Different parameters, or the same number typed differently, are different labels.
        assert_eq!(parse_policies("lr-mmt-1.2,lr-mmt-1.20").unwrap().len(), 2);
        assert_eq!(parse_policies("all").unwrap().len(), policy::ALL.len());
    }

    #[test]
    fn results_come_back_in_job_order_whatever_finishes_first() {
        // Early jobs sleep longest, so with several threads they finish last.
        let jobs: Vec<u64> = (0..12).collect();
        for threads in [1, 3, 64] {
            let mut seen = Vec::new();
            run_ordered(
                &jobs,
                threads,
                |&j| {
                    std::thread::sleep(std::time::Duration::from_millis(12 - j));
                    j * 10
                },
                |i, r| seen.push((i, r)),
            );
            let want: Vec<(usize, u64)> = (0..12).map(|j| (j as usize, j * 10)).collect();
            assert_eq!(seen, want, "threads {threads}");
        }
        let mut none = 0;
        run_ordered(&[] as &[u64], 4, |&j| j, |_, _| none += 1);
        assert_eq!(none, 0);
    }
}
