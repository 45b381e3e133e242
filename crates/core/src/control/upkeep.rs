//! The step's memory of each host, brought up to date with one look: its recent loads, its hot
//! streak, since when it is active, and the energy the hosts drew since the previous look.
//!
//! - A *sample* is one look: the manager calls the step once per collected observation, so
//!   `hot_samples` consecutive looks above `hot` make a hotspot.
//! - An unreachable host's figures are as last seen, so they are not a sample: no load is
//!   pushed and its streak restarts (its agent must show the overload again once it answers).
//! - A host first seen active counts as active since that look: the manager does not know how
//!   long it has been on, and `min_on_s` must then pass before it is emptied.
//! - Energy: each host's draw at this look (the power model: idle to peak, linear in load; none
//!   in standby) is charged for the time since the previous look. A clock that went backwards or
//!   is not a number charges nothing.

use super::observe::PowerState;
use super::settings::ControlSettings;
use super::state::{ControlState, HostMemory, LOAD_WINDOW};
use super::view::{HostView, View};

/// Updates every observed host's memory and the energy account.
pub(crate) fn upkeep(
    state: &mut ControlState,
    view: &View,
    settings: &ControlSettings,
    now_s: f64,
) {
    charge_energy(state, view, settings, now_s);
    for host in &view.hosts {
        let name = host.name();
        if !state.hosts.contains_key(name) {
            state.hosts.insert(name.to_string(), HostMemory::default());
        }
        if let Some(mem) = state.hosts.get_mut(name) {
            sample(mem, host, settings, now_s);
        }
    }
}

fn sample(mem: &mut HostMemory, host: &HostView, settings: &ControlSettings, now_s: f64) {
    if host.obs.reachable {
        mem.loads.push_back(host.load);
        while mem.loads.len() > LOAD_WINDOW {
            mem.loads.pop_front();
        }
    }
    let hot = host.running() && host.usable() && host.load > settings.hot;
    mem.hot_streak = if hot {
        mem.hot_streak.saturating_add(1)
    } else {
        0
    };
    if host.obs.power == PowerState::Active {
        if mem.active_since_s.is_none() {
            mem.active_since_s = Some(now_s);
        }
        // It woke: a later standby may be asked again, and a later wake too.
        mem.wake_asked_s = None;
    } else {
        mem.active_since_s = None;
    }
}

/// Draw of one host now, W.
pub(crate) fn watts(host: &HostView, settings: &ControlSettings) -> f64 {
    match host.obs.power {
        PowerState::Standby => 0.0,
        PowerState::Active | PowerState::Waking => {
            let w = settings.power_of(host.name()).watts(host.load);
            if w.is_finite() {
                w.max(0.0)
            } else {
                0.0
            }
        }
    }
}

fn charge_energy(state: &mut ControlState, view: &View, settings: &ControlSettings, now_s: f64) {
    let Some(last) = state.last_step_s else {
        return;
    };
    let dt = now_s - last;
    if !(dt.is_finite() && dt > 0.0) {
        return;
    }
    let total: f64 = view.hosts.iter().map(|h| watts(h, settings)).sum();
    state.energy_wh += total * dt / 3600.0;
}
