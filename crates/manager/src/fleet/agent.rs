//! [`AgentFleet`]: the real hosts, each through its agent's HTTP API (drover-api's typed
//! `AgentClient`). A look polls every agent at once, each within the fleet's timeout: its
//! metrics and VM list, and the record of each tracked migration it is the source of. What
//! the answers mean is decided in [`super::translate`]; who counts as reachable in
//! [`super::reach`].

use super::reach::Reach;
use super::translate;
use super::{AgentSight, Finished, Fleet, MigrateOrder, PollConfig, Sight, Tracked};
use drover_api::{AgentClient, AgentUrl, ClientError};
use drover_core::control::{HostObs, MigrationObs, Observation, Outcome};
use futures_util::future::join_all;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// One host of the inventory: its name, its agent's base URL and the bearer token that agent
/// expects (never printed: `Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct AgentSpec {
    pub name: String,
    pub url: AgentUrl,
    pub token: String,
}

impl std::fmt::Debug for AgentSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSpec")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &"<hidden>")
            .finish()
    }
}

#[derive(Debug)]
struct Agent {
    name: String,
    client: AgentClient,
}

/// The agents of the inventory, polled concurrently.
#[derive(Debug)]
pub struct AgentFleet {
    agents: Vec<Agent>,
    timeout: Duration,
    reach: Mutex<Reach>,
}

/// What one agent's poll found.
struct Polled {
    host: HostObs,
    migrations: Vec<MigrationObs>,
    finished: Vec<Finished>,
}

impl AgentFleet {
    /// The fleet of `agents` (inventory order), each called with its own token. Every call
    /// to an agent gives up after `poll.timeout_s`; an agent that misses `poll.miss_limit`
    /// polls in a row is unreachable.
    pub fn new(agents: Vec<AgentSpec>, poll: PollConfig) -> Self {
        let timeout = poll.timeout();
        AgentFleet {
            agents: agents
                .into_iter()
                .map(|a| Agent {
                    client: AgentClient::with_timeout(a.url, &a.token, timeout),
                    name: a.name,
                })
                .collect(),
            timeout,
            reach: Mutex::new(Reach::new(poll.miss_limit)),
        }
    }

    fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.name == name)
    }

    fn reach(&self) -> MutexGuard<'_, Reach> {
        // Updated by plain assignments only: a panicking holder leaves it usable.
        self.reach
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One agent's answer: all of it, or an error (a miss).
    async fn poll(agent: &Agent, tracked: Vec<&Tracked>) -> Result<Polled, String> {
        let (metrics, vms) = tokio::join!(agent.client.metrics(), agent.client.list_vms());
        let metrics = metrics.map_err(|e| e.to_string())?;
        let vms = vms.map_err(|e| e.to_string())?;
        let lookups = join_all(tracked.iter().map(|t| agent.client.migration(&t.move_id))).await;
        let mut migrations = Vec::new();
        let mut finished = Vec::new();
        for (t, found) in tracked.iter().zip(lookups) {
            match found {
                Ok(record) => {
                    migrations.push(translate::migration_obs(&record));
                    finished.extend(translate::finished(&record));
                }
                Err(ClientError::Api { status: 404, .. }) => {
                    migrations.push(translate::unknown_migration(&t.move_id));
                }
                Err(e) => return Err(format!("migration {}: {e}", t.move_id)),
            }
        }
        Ok(Polled {
            host: translate::host_obs(&agent.name, &metrics, &vms),
            migrations,
            finished,
        })
    }

    fn refused(move_id: &str, error: String) -> Outcome {
        Outcome::MigrateRefused {
            move_id: move_id.to_string(),
            error,
        }
    }
}

impl Fleet for AgentFleet {
    fn hosts(&self) -> Vec<String> {
        self.agents.iter().map(|a| a.name.clone()).collect()
    }

    fn observe(&self, tracked: &[Tracked]) -> impl Future<Output = Sight> + Send {
        let timeout = self.timeout;
        let polls = self.agents.iter().map(move |agent| {
            let mine: Vec<&Tracked> = tracked.iter().filter(|t| t.from == agent.name).collect();
            async move {
                match tokio::time::timeout(timeout, Self::poll(agent, mine)).await {
                    Ok(polled) => polled,
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                }
            }
        });
        async move {
            let polled = join_all(polls).await;
            let mut reach = self.reach();
            let mut sight = Sight {
                observation: Observation::default(),
                agents: Vec::with_capacity(self.agents.len()),
                finished: Vec::new(),
            };
            for (agent, polled) in self.agents.iter().zip(polled) {
                let (host, migrations, seen): (HostObs, Vec<MigrationObs>, AgentSight) =
                    match polled {
                        Ok(p) => {
                            sight.finished.extend(p.finished);
                            reach.answered(p.host, p.migrations)
                        }
                        Err(e) => reach.missed(&agent.name, e),
                    };
                sight.observation.hosts.push(host);
                sight.observation.migrations.extend(migrations);
                sight.agents.push(seen);
            }
            sight
        }
    }

    fn migrate(&self, order: MigrateOrder<'_>) -> impl Future<Output = Outcome> + Send {
        let from = self.agent(order.from);
        let to = self.agent(order.to).map(|a| a.client.base().clone());
        let move_id = order.move_id.to_string();
        let request = to.map(|to| translate::migrate_request(&order, to));
        let vm = order.vm.to_string();
        let (from_name, to_name) = (order.from.to_string(), order.to.to_string());
        async move {
            let Some(from) = from else {
                return Self::refused(&move_id, format!("no host {from_name} in the inventory"));
            };
            let Some(request) = request else {
                return Self::refused(&move_id, format!("no host {to_name} in the inventory"));
            };
            let answer = translate::migrate_answer(&from.client.migrate(&vm, &request).await);
            if let translate::MigrateAnswer::ReadRecord(first) = answer {
                let lookup = from.client.migration(&move_id).await;
                return translate::after_lookup(&move_id, first, &lookup);
            }
            translate::migrate_outcome(&move_id, answer)
                .unwrap_or_else(|| Self::refused(&move_id, "no answer".into()))
        }
    }

    fn cancel(&self, move_id: &str, from: &str) -> impl Future<Output = Outcome> + Send {
        let agent = self.agent(from);
        let (move_id, from) = (move_id.to_string(), from.to_string());
        async move {
            let error = match agent {
                Some(a) => translate::error_text(&a.client.cancel_migration(&move_id).await),
                None => Some(format!("no host {from} in the inventory")),
            };
            Outcome::Cancel { move_id, error }
        }
    }

    fn standby(&self, host: &str) -> impl Future<Output = Outcome> + Send {
        let agent = self.agent(host);
        let host = host.to_string();
        async move {
            let error = match agent {
                Some(a) => translate::error_text(&a.client.standby().await),
                None => Some(format!("no host {host} in the inventory")),
            };
            Outcome::Standby { host, error }
        }
    }

    fn wake(&self, host: &str) -> impl Future<Output = Outcome> + Send {
        let agent = self.agent(host);
        let host = host.to_string();
        async move {
            let error = match agent {
                Some(a) => translate::error_text(&a.client.wake().await),
                None => Some(format!("no host {host} in the inventory")),
            };
            Outcome::Wake { host, error }
        }
    }

    fn remember(&self, last_seen: Vec<HostObs>) {
        self.reach().remember(last_seen);
    }
}
