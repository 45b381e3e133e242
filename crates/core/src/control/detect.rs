//! Hotspot detection.
//!
//! **Reactive** (always): a reachable, active, usable host whose load (CPU demand, including what
//! its cap kept from its VMs, over its cores) was above `hot` for `hot_samples` looks in a row.
//! One noisy sample never moves a VM; a real overload is seen within `hot_samples` seconds.
//!
//! **Predictive** (`settings.predictive`): also when a straight line through its recent loads
//! (the fit the simulator's forecast and the LR detector use, [`Trend`]) passes `hot` one look
//! ahead. The line uses the newest [`PREDICT_WINDOW`] loads and needs at least
//! [`PREDICT_MIN_SAMPLES`] of them, so a host that just appeared or just came back is judged on
//! its samples, not on a line through two points.
//!
//! Drained hosts are not relieved (their drain plan moves everything anyway).

use super::ledger::Ledger;
use super::settings::ControlSettings;
use super::state::{ControlState, LOAD_WINDOW};
use super::view::View;
use crate::dc::stats::{LineFit, Trend};

/// Loads in the predictive fit (10 s at 1 s samples: the LR detector's responsiveness).
pub const PREDICT_WINDOW: usize = 10;

/// Fewest loads the predictive fit needs.
pub const PREDICT_MIN_SAMPLES: usize = 5;

/// A hot host and the evidence.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hotspot {
    pub host: usize,
    /// The loads that made it hot, oldest first.
    pub samples: Vec<f64>,
    /// The forecast one look ahead, when the prediction (and not the streak) made it hot.
    pub forecast: Option<f64>,
}

impl Hotspot {
    /// Why it is hot, one line.
    pub fn why(&self, view: &View, settings: &ControlSettings) -> String {
        let name = view.hosts[self.host].name();
        let loads: Vec<String> = self.samples.iter().map(|l| format!("{l:.2}")).collect();
        match self.forecast {
            Some(f) => format!(
                "{name} is forecast at {f:.2} > hot {:.2} one look ahead (recent loads {})",
                settings.hot,
                loads.join(", ")
            ),
            None => format!(
                "{name} was above hot {:.2} for {} looks in a row (loads {})",
                settings.hot,
                self.samples.len(),
                loads.join(", ")
            ),
        }
    }
}

/// The hot hosts this look, in inventory order.
pub(crate) fn hotspots(
    view: &View,
    state: &ControlState,
    ledger: &Ledger,
    settings: &ControlSettings,
) -> Vec<Hotspot> {
    let need = settings.hot_samples.max(1);
    let mut hot = Vec::new();
    for (h, host) in view.hosts.iter().enumerate() {
        if !host.running() || !host.usable() || ledger.drained[h] {
            continue;
        }
        let Some(mem) = state.hosts.get(host.name()) else {
            continue;
        };
        let newest = |n: usize| -> Vec<f64> {
            let skip = mem.loads.len().saturating_sub(n);
            mem.loads.iter().skip(skip).copied().collect()
        };
        if mem.hot_streak >= need {
            hot.push(Hotspot {
                host: h,
                samples: newest(need as usize),
                forecast: None,
            });
            continue;
        }
        if !settings.predictive {
            continue;
        }
        if let Some(f) = forecast(mem.loads.iter().copied()) {
            if f > settings.hot {
                hot.push(Hotspot {
                    host: h,
                    samples: newest(PREDICT_WINDOW),
                    forecast: Some(f),
                });
            }
        }
    }
    hot
}

/// The load one look ahead on a line through the newest loads (oldest first in `loads`).
pub(crate) fn forecast(loads: impl DoubleEndedIterator<Item = f64>) -> Option<f64> {
    // Newest first, as Trend reads a history; on the stack.
    let mut buf = [0.0; LOAD_WINDOW];
    let mut n = 0;
    for (slot, load) in buf.iter_mut().zip(loads.rev()) {
        *slot = load;
        n += 1;
    }
    if n < PREDICT_MIN_SAMPLES {
        return None;
    }
    let window = n.min(PREDICT_WINDOW);
    let line = Trend::fit(&buf[..n], window, LineFit::Ols)?;
    let next = line.ahead(1.0);
    next.is_finite().then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rising_line_is_forecast_one_look_ahead() {
        let loads = [0.5, 0.6, 0.7, 0.8, 0.85];
        let f = forecast(loads.iter().copied()).expect("enough samples");
        assert!(f > 0.9, "{f}");
        assert_eq!(forecast([0.5, 0.9].iter().copied()), None);
        let flat = forecast([0.5; 12].iter().copied()).expect("flat");
        assert!((flat - 0.5).abs() < 1e-12);
    }
}
