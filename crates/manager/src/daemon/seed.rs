//! What the loop reads and writes once, at start: the inventory and the settings from the
//! configuration, and what each host ran when last seen (from the stored history).

use crate::store::{HostSpec, Result, Sample, SeriesKind, SettingsRecord, Store};
use drover_core::control::{ControlSettings, HostObs, PowerState, VmObs, VmPresence};
use std::collections::BTreeMap;

/// Stores every configured host (adding or updating it) and marks removed the stored hosts
/// the configuration no longer lists.
pub(super) fn inventory(store: &dyn Store, hosts: &[HostSpec], now: f64) -> Result<()> {
    for h in hosts {
        store.put_host(h, now)?;
    }
    for old in store.hosts()? {
        if old.removed_s.is_none() && !hosts.iter().any(|h| h.name == old.name) {
            store.remove_host(&old.name, now)?;
        }
    }
    Ok(())
}

/// The settings to run with: the configuration's, stored as a new version when they differ
/// from the stored ones (the configuration file wins at start; a change made through the API
/// lasts until then).
pub(super) fn settings(
    store: &dyn Store,
    settings: ControlSettings,
    now: f64,
) -> Result<SettingsRecord> {
    if let Some(stored) = store.settings()? {
        if stored.settings == settings {
            return Ok(stored);
        }
    }
    let version = store.put_settings(&settings, now, None)?;
    Ok(SettingsRecord {
        version,
        updated_s: now,
        settings,
    })
}

/// What each host of the inventory ran when its agent last answered, from the store: the
/// VMs it reported then, each with its last sample. Capacity is not stored; a host known
/// only from this is unreachable anyway (nothing is placed on it until its agent answers).
pub(super) fn last_seen(store: &dyn Store) -> Result<Vec<HostObs>> {
    let hosts: Vec<_> = store
        .hosts()?
        .into_iter()
        .filter(|h| h.removed_s.is_none())
        .filter_map(|h| h.last_seen_s.map(|t| (h.name, t)))
        .collect();
    let Some(oldest) = hosts.iter().map(|(_, t)| *t).reduce(f64::min) else {
        return Ok(Vec::new());
    };
    let vms = store.vms()?;
    let history = store.histories(SeriesKind::Vm, oldest)?;
    let mut out = Vec::new();
    for (host, seen_s) in hosts {
        let mut obs = HostObs {
            name: host.clone(),
            reachable: false,
            power: PowerState::Active,
            cpus: 0.0,
            memory_bytes: 0,
            cpu_demand_cores: 0.0,
            vms: Vec::new(),
        };
        for vm in vms
            .iter()
            .filter(|v| v.host == host && v.last_seen_s >= seen_s)
        {
            obs.vms.push(vm_as_last_seen(&vm.name, &history));
        }
        obs.cpu_demand_cores = obs.vms.iter().map(|v| v.cpu_demand_cores).sum();
        out.push(obs);
    }
    Ok(out)
}

fn vm_as_last_seen(name: &str, history: &BTreeMap<String, crate::store::History>) -> VmObs {
    // The last second if it is still raw, else the last minute's means.
    let last = history.get(name).and_then(|h| {
        h.seconds.last().map(|p| p.sample).or_else(|| {
            h.minutes.last().map(|r| Sample {
                load: r.load.mean,
                cpu_cores: r.cpu_cores.mean,
                memory_bytes: r.memory_bytes.mean as u64,
                dirty_bps: r.dirty_bps.map(|d| d.mean),
                rx_bps: r.rx_bps.mean,
                tx_bps: r.tx_bps.mean,
            })
        })
    });
    let vcpus = last.filter(|s| s.load > 0.0).map_or(1, |s| {
        (s.cpu_cores / s.load).round().clamp(1.0, 1024.0) as u32
    });
    VmObs {
        name: name.to_string(),
        presence: VmPresence::Running,
        vcpus,
        memory_bytes: last.map_or(0, |s| s.memory_bytes),
        cpu_demand_cores: last.map_or(0.0, |s| s.cpu_cores),
        dirty_rate_bps: last.and_then(|s| s.dirty_bps),
        wss_bytes: None,
        net_rx_bps: last.map_or(0.0, |s| s.rx_bps),
        net_tx_bps: last.map_or(0.0, |s| s.tx_bps),
        migration: None,
    }
}
