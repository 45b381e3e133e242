//! An agent's refusal or silence during an experiment, with what the experiment was doing: the
//! one error every experiment's run wraps (demo, traffic-sensitive, wan-hybrid).

use drover_api::ClientError;
use thiserror::Error;

/// A call to an agent that failed: `what` the experiment asked for, and the client's error.
#[derive(Debug, Error)]
#[error("{what}: {source}")]
pub struct AgentCall {
    pub what: String,
    /// Boxed: a client error is large, and this is in every run function's error.
    pub source: Box<ClientError>,
}

/// `map_err` for a call to an agent: `client.get_vm(..).await.map_err(agent_err("reading w1"))?`.
pub fn agent_err(what: impl Into<String>) -> impl FnOnce(ClientError) -> AgentCall {
    let what = what.into();
    move |source| AgentCall {
        what,
        source: Box::new(source),
    }
}
