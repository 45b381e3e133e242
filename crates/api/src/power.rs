//! The host's power state: `POST /v1/standby` and `POST /v1/wake` answer it, `GET /v1/health`
//! and `GET /v1/metrics` report it.
//!
//! A host in standby stands for one powered down by the cluster manager: it runs nothing and
//! takes no VM (new or migrating in) until woken. Waking stands for its boot: it takes a delay
//! the agent is configured with (`drover agent --wake-delay SECS`), during which the host still
//! takes no VM, then the host is active again. The agent's `power` module has the state
//! machine and its rules.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a host is in its power cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// Up: takes VMs.
    #[default]
    Active,
    /// Powered down (simulated): runs no VM, takes none.
    Standby,
    /// Booting after a wake: takes no VM until `ready_at_unix_ms`.
    Waking,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::Active => "active",
            PowerState::Standby => "standby",
            PowerState::Waking => "waking",
        }
    }
}

/// The reply of `POST /v1/standby` and `POST /v1/wake`: the state after the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Power {
    pub state: PowerState,
    /// When the host entered this state, ms since the Unix epoch.
    pub since_unix_ms: u64,
    /// When a waking host becomes active, ms since the Unix epoch (None unless waking).
    #[serde(default)]
    pub ready_at_unix_ms: Option<u64>,
}
