//! Which technique moves a VM, and what the move is predicted to cost.
//!
//! - One allowed technique (`settings.techniques`): that one, "restricted to X" (a demo fixes
//!   it so that runs compare).
//! - [`TechniqueChooser::Agent`]: `auto`; the source agent profiles the VM right before migrating
//!   and chooses.
//! - [`TechniqueChooser::Manager`]: core's cost model ([`choose`]) over the allowed concrete
//!   techniques, from the VM's memory, measured working set and dirty rate, and the link the
//!   settings assume. Every technique's forecast is kept for the explanation. A VM whose dirty
//!   rate is not measured yet gets post-copy, whose time is bounded (memory over bandwidth)
//!   whatever the VM does, as [`crate::migration::MigrationPlan::build`] does, and the reason
//!   says so.
//!
//! The *cost* of a move, which relief uses to pick the cheapest VM, is the predicted lost work
//! (seconds of the VM's full throughput) of the technique core's model would run. A VM with no
//! measurement is priced as the worst case post-copy can be (its whole memory rewritten as
//! fast as the link runs), so measured VMs are preferred when either would do.

use super::moves::TechniqueChoice;
use super::plan::TechniqueForecast;
use super::settings::{ControlSettings, TechniqueChooser};
use super::view::{View, VmView};
use crate::migration::{
    choose, predict, CostParams, LinkProfile, Prediction, Technique, VmProfile,
};
use std::collections::HashMap;

/// A VM's technique, its forecasts and its cost.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Priced {
    pub choice: TechniqueChoice,
    /// Every allowed technique's forecast (empty when the VM is not measured).
    pub forecasts: Vec<TechniqueForecast>,
    /// Predicted lost work, seconds of the VM's full throughput.
    pub cost_s: f64,
}

/// Each VM priced at most once a look (the cost model is the expensive part of planning).
#[derive(Debug, Default)]
pub(crate) struct Prices {
    cache: HashMap<usize, Priced>,
}

impl Prices {
    /// The price of the view's VM `vm`.
    pub fn get(&mut self, view: &View, vm: usize, settings: &ControlSettings) -> &Priced {
        self.cache
            .entry(vm)
            .or_insert_with(|| price(&view.vms[vm], settings))
    }
}

/// The cost model's tunables, from the migration knobs the moves will run with.
pub(crate) fn cost_params(settings: &ControlSettings) -> CostParams {
    let k = &settings.knobs;
    CostParams {
        downtime_limit_s: k.downtime_limit_ms as f64 / 1000.0,
        precopy_deadline_s: k.deadline_s as f64,
        hybrid: k.hybrid(),
        ..CostParams::default()
    }
}

fn link(settings: &ControlSettings) -> LinkProfile {
    LinkProfile {
        bandwidth_bps: settings.link_bandwidth_bps() as f64,
    }
}

/// Work lost, seconds: the model reports it as a share of its measurement window.
fn lost_work_s(p: &Prediction, params: &CostParams) -> f64 {
    let window = p.total_s.max(params.window_min_s);
    if window.is_finite() {
        p.degradation_pct / 100.0 * window
    } else {
        f64::INFINITY
    }
}

fn forecast(p: &Prediction, params: &CostParams) -> TechniqueForecast {
    TechniqueForecast {
        technique: p.technique,
        total_s: p.total_s,
        downtime_s: p.downtime_s,
        lost_work_s: lost_work_s(p, params),
        converges: p.converges,
    }
}

/// Prices and picks the technique for moving `vm`.
pub(crate) fn price(vm: &VmView, settings: &ControlSettings) -> Priced {
    let params = cost_params(settings);
    let link = link(settings);
    let memory = vm.obs.memory_bytes;
    let allowed: Vec<Technique> = settings
        .techniques
        .iter()
        .copied()
        .filter(|t| *t != Technique::Auto)
        .collect();
    let Some(dirty) = vm.dirty_rate() else {
        return unmeasured(memory, &allowed, settings, &params, &link);
    };
    let profile = VmProfile {
        memory_bytes: memory,
        wss_bytes: vm.obs.wss_bytes.unwrap_or(memory).min(memory),
        dirty_rate_bps: dirty,
    };
    let pool: &[Technique] = if allowed.is_empty() {
        &Technique::CONCRETE
    } else {
        &allowed
    };
    let model = choose(&profile, &link, &params, pool);
    let forecasts: Vec<TechniqueForecast> = model
        .predictions
        .iter()
        .map(|p| forecast(p, &params))
        .collect();
    let cost_of = |t: Technique| {
        forecasts
            .iter()
            .find(|f| f.technique == t)
            .map(|f| f.lost_work_s)
            .unwrap_or_else(|| lost_work_s(&predict(t, &profile, &link, &params), &params))
    };
    let cost_s = cost_of(model.technique);
    let choice = match (settings.techniques.as_slice(), settings.technique_chooser) {
        ([only], _) => restricted(*only),
        (_, TechniqueChooser::Agent) => agent(),
        _ if allowed.is_empty() => agent(),
        _ => TechniqueChoice {
            technique: model.technique,
            reason: model.reason,
        },
    };
    let cost_s = match choice.technique {
        Technique::Auto => cost_s,
        t => cost_of(t),
    };
    Priced {
        choice,
        forecasts,
        cost_s,
    }
}

fn restricted(t: Technique) -> TechniqueChoice {
    TechniqueChoice {
        technique: t,
        reason: format!("restricted to {t} by the settings"),
    }
}

fn agent() -> TechniqueChoice {
    TechniqueChoice {
        technique: Technique::Auto,
        reason: "the source agent profiles the VM and chooses".into(),
    }
}

fn unmeasured(
    memory: u64,
    allowed: &[Technique],
    settings: &ControlSettings,
    params: &CostParams,
    link: &LinkProfile,
) -> Priced {
    // The worst post-copy can meet: every page hot, rewritten as fast as the link runs.
    let worst = VmProfile {
        memory_bytes: memory,
        wss_bytes: memory,
        dirty_rate_bps: link.bandwidth_bps,
    };
    let cost_s = lost_work_s(&predict(Technique::Postcopy, &worst, link, params), params);
    let choice = match (settings.techniques.as_slice(), settings.technique_chooser) {
        ([only], _) => restricted(*only),
        (_, TechniqueChooser::Agent) => agent(),
        _ => {
            let bounded = [Technique::Postcopy, Technique::Hybrid]
                .into_iter()
                .find(|t| allowed.contains(t));
            match bounded {
                Some(t) => TechniqueChoice {
                    technique: t,
                    reason: format!(
                        "no dirty-rate measurement yet: {t}, whose time is bounded by memory over bandwidth whatever the VM does"
                    ),
                },
                None => match allowed.first() {
                    Some(&t) => TechniqueChoice {
                        technique: t,
                        reason: format!(
                            "no dirty-rate measurement yet, and {t} is the only technique allowed"
                        ),
                    },
                    None => agent(),
                },
            }
        }
    };
    Priced {
        choice,
        forecasts: Vec::new(),
        cost_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::observe::{VmObs, VmPresence};

    fn vm(dirty: Option<f64>) -> VmObs {
        VmObs {
            name: "a".into(),
            presence: VmPresence::Running,
            vcpus: 1,
            memory_bytes: 256 << 20,
            cpu_demand_cores: 1.0,
            dirty_rate_bps: dirty,
            wss_bytes: Some(128 << 20),
            net_rx_bps: 0.0,
            net_tx_bps: 0.0,
            migration: None,
        }
    }

    fn priced(obs: &VmObs, s: &ControlSettings) -> Priced {
        let v = VmView {
            obs,
            host: 0,
            demand: 1.0,
        };
        price(&v, s)
    }

    #[test]
    fn the_manager_uses_the_cost_model_and_keeps_every_forecast() {
        let s = ControlSettings {
            link_bps: Some(50_000_000),
            ..ControlSettings::default()
        };
        let hot = priced(&vm(Some(500e6)), &s);
        assert_ne!(hot.choice.technique, Technique::Precopy);
        assert!(hot.choice.reason.contains("would not converge"));
        assert_eq!(hot.forecasts.len(), 3);
        let idle = priced(&vm(Some(0.0)), &s);
        assert_eq!(idle.choice.technique, Technique::Precopy);
        assert!(idle.cost_s < hot.cost_s);
    }

    #[test]
    fn unmeasured_restricted_and_agent() {
        let s = ControlSettings::default();
        let p = priced(&vm(None), &s);
        assert_eq!(p.choice.technique, Technique::Postcopy);
        assert!(p.choice.reason.contains("no dirty-rate measurement"));
        assert!(p.forecasts.is_empty() && p.cost_s > 0.0);
        let only = ControlSettings {
            techniques: vec![Technique::Precopy],
            ..ControlSettings::default()
        };
        let p = priced(&vm(None), &only);
        assert_eq!(p.choice.technique, Technique::Precopy);
        assert!(p.choice.reason.contains("restricted to precopy"));
        let agent = ControlSettings {
            technique_chooser: TechniqueChooser::Agent,
            ..ControlSettings::default()
        };
        let p = priced(&vm(Some(1e6)), &agent);
        assert_eq!(p.choice.technique, Technique::Auto);
        assert!(p.choice.reason.contains("agent"));
        assert_eq!(p.forecasts.len(), 3);
    }
}
