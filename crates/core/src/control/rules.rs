//! Placement rules, checked for every move a plan makes (relief and drain included): affinity
//! (together), anti-affinity (apart), VM-to-host (only on, or never on, some hosts). Hard rules
//! are never broken by a move; soft ones only rank destinations.
//!
//! A VM's position, for the rules, is where it will be: the destination of its live move if it
//! has one, else where it runs. For anti-affinity a VM in a live move counts on both ends,
//! since until the move is done it may end on either.
//!
//! **Units.** VMs bound by hard affinity that run on the same host move together, as one unit
//! to one destination (the plan lists a move for each, in a row): moving one alone would break
//! the rule. A partner that runs elsewhere is not part of the unit; it pins the unit's
//! destination to its host.

use super::ledger::Ledger;
use super::settings::PlacementRule;
use super::view::View;
use std::collections::HashMap;

/// The rules, indexed by VM name.
#[derive(Debug)]
pub(crate) struct Rules<'s> {
    rules: &'s [PlacementRule],
    by_vm: HashMap<&'s str, Vec<usize>>,
}

/// What the rules say about a unit going to a host.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Verdict {
    /// The first hard rule the move would break.
    pub hard: Option<String>,
    /// Soft rules the move would break.
    pub soft: u32,
}

impl<'s> Rules<'s> {
    pub fn new(rules: &'s [PlacementRule]) -> Rules<'s> {
        let mut by_vm: HashMap<&'s str, Vec<usize>> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            for vm in members(r) {
                let list = by_vm.entry(vm.as_str()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        Rules { rules, by_vm }
    }

    /// Whether any rule names `vm`.
    pub fn names(&self, vm: &str) -> bool {
        self.by_vm.contains_key(vm)
    }

    fn of(&self, vm: &str) -> impl Iterator<Item = &'s PlacementRule> + '_ {
        self.by_vm
            .get(vm)
            .into_iter()
            .flatten()
            .map(|&i| &self.rules[i])
    }

    /// The unit `vm` (an index into the view's VMs) moves with: itself and every VM on its host
    /// that hard affinity binds to it, directly or through others. Err names why it cannot move
    /// at all (a partner whose location is in doubt).
    pub fn unit(&self, view: &View, vm: usize) -> Result<Vec<usize>, String> {
        let host = view.vms[vm].host;
        let mut unit = vec![vm];
        let mut next = 0;
        while next < unit.len() {
            let name = view.vms[unit[next]].name();
            next += 1;
            for rule in self.of(name) {
                let PlacementRule::Affinity { vms, hard: true } = rule else {
                    continue;
                };
                for other in vms {
                    if view.ambiguous(other) {
                        return Err(format!(
                            "its hard-affinity partner {other} runs in two places"
                        ));
                    }
                    let Some(i) = view.locate(other) else {
                        continue;
                    };
                    if view.vms[i].host == host && !unit.contains(&i) {
                        unit.push(i);
                    }
                }
            }
        }
        Ok(unit)
    }

    /// What the rules say about `unit` (VM indices) going to host `to`.
    pub fn check(&self, view: &View, ledger: &Ledger, unit: &[usize], to: usize) -> Verdict {
        let mut v = Verdict::default();
        let to_name = view.hosts[to].name();
        for &m in unit {
            let name = view.vms[m].name();
            for rule in self.of(name) {
                let broken = match rule {
                    PlacementRule::Affinity { vms, .. } => vms
                        .iter()
                        .filter(|o| o.as_str() != name && !in_unit(view, unit, o))
                        .find(|o| final_host(view, ledger, o).is_some_and(|h| h != to))
                        .map(|o| format!("affinity: {name} goes with {o}")),
                    PlacementRule::AntiAffinity { vms, .. } => vms
                        .iter()
                        .filter(|o| o.as_str() != name)
                        .find(|o| in_unit(view, unit, o) || touches(view, ledger, o, to))
                        .map(|o| format!("anti-affinity: {name} never with {o}")),
                    PlacementRule::VmHost { hosts, allow, .. } => {
                        let listed = hosts.iter().any(|h| h == to_name);
                        (listed != *allow).then(|| {
                            let how = if *allow { "only on" } else { "never on" };
                            format!("vm-host: {name} {how} {}", hosts.join(","))
                        })
                    }
                };
                let Some(why) = broken else { continue };
                if hard(rule) {
                    v.hard.get_or_insert(why);
                } else {
                    v.soft += 1;
                }
            }
        }
        v
    }
}

fn members(r: &PlacementRule) -> &[String] {
    match r {
        PlacementRule::Affinity { vms, .. }
        | PlacementRule::AntiAffinity { vms, .. }
        | PlacementRule::VmHost { vms, .. } => vms,
    }
}

fn hard(r: &PlacementRule) -> bool {
    match r {
        PlacementRule::Affinity { hard, .. }
        | PlacementRule::AntiAffinity { hard, .. }
        | PlacementRule::VmHost { hard, .. } => *hard,
    }
}

fn in_unit(view: &View, unit: &[usize], name: &str) -> bool {
    unit.iter().any(|&i| view.vms[i].name() == name)
}

/// Where `name` will be: its live move's destination, else where it runs (None: nowhere known).
fn final_host(view: &View, ledger: &Ledger, name: &str) -> Option<usize> {
    let i = view.locate(name)?;
    Some(ledger.going[i].unwrap_or(view.vms[i].host))
}

/// Whether `name` is, or may end up, on host `h`.
fn touches(view: &View, ledger: &Ledger, name: &str, h: usize) -> bool {
    view.locate(name)
        .is_some_and(|i| view.vms[i].host == h || ledger.going[i] == Some(h))
}
