//! The technique of each VM a plan moves off one host, when it moves more than one: core's
//! traffic-sensitive group choice ([`crate::migration::group`]) instead of each VM's single-VM
//! choice, and the plan's moves from that host in the group's order.
//!
//! When it applies: the manager chooses ([`TechniqueChooser::Manager`]), more than one
//! technique is allowed, and at least two of the VMs leaving the host are measured (a dirty
//! rate). An unmeasured VM keeps its single-VM choice (post-copy, whose time is bounded
//! whatever the VM does) and its traffic counts as the source's for the whole evacuation. A
//! group where nobody involved has traffic (the leaving VMs, the VMs staying on the source,
//! the VMs on the destinations) keeps the single-VM choices, which the group choice equals
//! there (its tests show it), without the search's cost.
//!
//! What it is told: every NIC has the link the settings assume
//! ([`ControlSettings::link_bandwidth_bps`]) each way; each VM's traffic is its agent's rx and
//! tx rate (not a sane number: 0); the bytes a VM's migration moves are what its last completed
//! migration moved (`VmMemory::moved_bytes`), else all of its memory; the VMs already on the hosts compete as residents; the
//! migrations the scheduler may run at once from the host are `max_out_per_host`. The rest are
//! the group choice's defaults: a schedule forecast to beat all pre-copy and all post-copy on
//! both evacuation time and lost work comes first (`GroupParams::beat_uniform`).
//!
//! What it changes: each grouped move's technique and reason (the group's evacuation time
//! against all pre-copy and all post-copy, then the VM's own reason naming its traffic), its
//! predicted cost (the VM's lost work in the group, contention included), and the order of
//! those moves within the plan (the positions the host's moves held are kept, so moves from
//! other hosts do not move). Each technique's single-VM forecast stays in the explanation.
//!
//! Known gap: the scheduler starts moves as slots free up, up to `max_out_per_host` at once,
//! whatever concurrency the group chose; with the default of one they agree.

use super::explain::Pick;
use super::settings::{ControlSettings, TechniqueChooser};
use super::state::VmMemory;
use super::technique::cost_params;
use super::view::{clean, View};
use crate::control::moves::TechniqueChoice;
use crate::control::observe::VmPresence;
use crate::migration::group::{
    choose_group, Group, GroupParams, GroupPlan, HostNic, LeavingVm, Traffic,
};
use crate::migration::{Technique, VmProfile};
use std::collections::BTreeMap;

/// Replaces the single-VM choices of every host's group of leaving VMs in `picks` (see the
/// module doc); picks it does not apply to are left as they are.
pub(crate) fn regroup(
    view: &View,
    remembered: &BTreeMap<String, VmMemory>,
    settings: &ControlSettings,
    picks: &mut [Pick],
) {
    if settings.technique_chooser != TechniqueChooser::Manager {
        return;
    }
    let allowed: Vec<Technique> = settings
        .techniques
        .iter()
        .copied()
        .filter(|t| *t != Technique::Auto)
        .collect();
    if settings.techniques.len() < 2 || allowed.is_empty() {
        return;
    }
    let mut sources: Vec<usize> = Vec::new();
    for p in picks.iter() {
        if !sources.contains(&p.from) {
            sources.push(p.from);
        }
    }
    for from in sources {
        let members: Vec<usize> = (0..picks.len())
            .filter(|&i| picks[i].from == from && view.vms[picks[i].vm].dirty_rate().is_some())
            .collect();
        if members.len() < 2 {
            continue;
        }
        let params = GroupParams {
            cost: cost_params(settings),
            max_concurrent: settings.max_out_per_host.max(1),
            ..GroupParams::default()
        };
        let group = build(view, remembered, settings, picks, &members);
        if !has_traffic(&group, params.idle_traffic_bps) {
            continue;
        }
        // The view and the settings are sane, so the group is; should it not be, the
        // single-VM choices stand.
        if let Ok(plan) = choose_group(&group, &params, &allowed) {
            apply(&plan, view.hosts[from].name(), view, picks, &members);
        }
    }
}

/// The group of `members` (indices into `picks`, all from one host).
fn build(
    view: &View,
    remembered: &BTreeMap<String, VmMemory>,
    settings: &ControlSettings,
    picks: &[Pick],
    members: &[usize],
) -> Group {
    let link = settings.link_bandwidth_bps() as f64;
    let from = picks[members[0]].from;
    let leaving: Vec<usize> = members.iter().map(|&i| picks[i].vm).collect();
    let nic = |h: usize| HostNic {
        host: view.hosts[h].name().to_string(),
        tx_capacity_bps: link,
        rx_capacity_bps: link,
        residents: view.hosts[h]
            .vms
            .clone()
            .filter(|v| !leaving.contains(v))
            .filter(|&v| view.vms[v].obs.presence == VmPresence::Running)
            .map(|v| traffic(view, v))
            .collect(),
    };
    let mut destinations: Vec<usize> = Vec::new();
    for &i in members {
        if !destinations.contains(&picks[i].to) {
            destinations.push(picks[i].to);
        }
    }
    let vms = members
        .iter()
        .map(|&i| {
            let vm = &view.vms[picks[i].vm];
            let memory = vm.obs.memory_bytes;
            LeavingVm {
                name: vm.name().to_string(),
                profile: VmProfile {
                    memory_bytes: memory,
                    wss_bytes: vm.obs.wss_bytes.unwrap_or(memory).min(memory),
                    dirty_rate_bps: vm.dirty_rate().unwrap_or(0.0),
                },
                moved_bytes: remembered.get(vm.name()).and_then(|m| m.moved_bytes),
                traffic: traffic(view, picks[i].vm),
                destination: view.hosts[picks[i].to].name().to_string(),
            }
        })
        .collect();
    Group {
        source: nic(from),
        destinations: destinations.into_iter().map(nic).collect(),
        vms,
    }
}

fn traffic(view: &View, vm: usize) -> Traffic {
    let obs = view.vms[vm].obs;
    Traffic {
        rx_bps: clean(obs.net_rx_bps),
        tx_bps: clean(obs.net_tx_bps),
    }
}

/// Anyone on the group's hosts sends or receives more than `idle` bytes/s.
fn has_traffic(g: &Group, idle: f64) -> bool {
    let busy = |t: &Traffic| t.total_bps() > idle;
    g.vms.iter().any(|v| busy(&v.traffic))
        || std::iter::once(&g.source)
            .chain(&g.destinations)
            .any(|h| h.residents.iter().any(busy))
}

/// Each grouped pick takes its VM's technique, reason and lost work from `plan`, and the picks
/// at `members`' positions are put in the plan's order.
fn apply(plan: &GroupPlan, host: &str, view: &View, picks: &mut [Pick], members: &[usize]) {
    let alt = |label: &str| {
        plan.alternatives
            .iter()
            .find(|a| a.label == label)
            .map_or(String::new(), |a| {
                format!(", {label} {:.1} s", a.evacuation_s)
            })
    };
    let head = format!(
        "traffic-sensitive group choice for the {} VMs leaving {}: evacuation {:.1} s{}{}",
        plan.vms.len(),
        host,
        plan.evacuation_s,
        alt("all pre-copy"),
        alt("all post-copy"),
    );
    let mut ordered: Vec<Pick> = Vec::with_capacity(members.len());
    for f in &plan.vms {
        let Some(&i) = members
            .iter()
            .find(|&&i| view.vms[picks[i].vm].name() == f.name)
        else {
            continue;
        };
        let mut pick = picks[i].clone();
        pick.priced.choice = TechniqueChoice {
            technique: f.technique,
            reason: format!("{head}. {}", f.reason),
        };
        pick.priced.cost_s = f.lost_work_s;
        ordered.push(pick);
    }
    if ordered.len() != members.len() {
        return;
    }
    for (&slot, pick) in members.iter().zip(ordered) {
        picks[slot] = pick;
    }
}
