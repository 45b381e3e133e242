//! The manager as a process runs it: from a validated [`ManagerConfig`] to a running control
//! loop over the real agents, on the SQLite store under the state directory, on wall-clock
//! time; and back down.
//!
//! Lifecycle of a [`Service`]:
//!
//! ```text
//!  start ──> Running ──stop──> (the loop finishes its current look, answers, ends) ──> Stopped
//!              └── the loop's task panics ──> stop returns ServiceError::Loop
//! ```
//!
//! Stopping never interrupts a look between storing a step and acting on it: the shutdown is a
//! command the loop runs between looks. A process killed instead (SIGKILL) restarts from the
//! store like any crash (see [`crate::daemon`]).
//!
//! The loop calls the store synchronously (SQLite) on the runtime's worker thread: one look at
//! a time, a few milliseconds per write, so it runs on a multi-threaded runtime and keeps
//! other tasks (the API) on the other workers.

use crate::clock::WallClock;
use crate::config::{ConfigError, ManagerConfig};
use crate::daemon::{Daemon, DaemonError, Parts};
use crate::fleet::AgentFleet;
use crate::handle::Manager;
use crate::store::{SqliteStore, Store, StoreError};
use std::future::Future;
use std::sync::Arc;
use thiserror::Error;
use tokio::task::JoinHandle;

/// Why the manager could not start, or did not stop cleanly.
#[derive(Debug, Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The loop's task ended abnormally (a panic): the store holds everything up to its last
    /// stored step.
    #[error("the control loop ended abnormally: {0}")]
    Loop(String),
}

/// A running manager: its loop's task and the handle on it.
#[derive(Debug)]
pub struct Service {
    manager: Manager,
    task: JoinHandle<()>,
}

impl Service {
    /// Reads the agents' tokens, opens (or makes) the store under `config.state_dir`, stores
    /// the inventory and the settings, and starts the loop on a wall clock that never goes
    /// back past the last stored step. The first look is taken at once.
    ///
    /// # Errors
    /// [`ServiceError::Config`] (an invalid configuration, an unreadable token file),
    /// [`ServiceError::Store`] (the store cannot be opened, is newer than this build, or
    /// cannot be written), [`ServiceError::Daemon`].
    pub async fn start(config: &ManagerConfig) -> Result<Service, ServiceError> {
        config.validate()?;
        let agents = config.agent_specs()?;
        let store = SqliteStore::open_in(&config.state_dir, config.retention)?;
        let floor_s = store.control_state()?.map_or(0.0, |s| s.at_s);
        let store: Arc<dyn Store> = Arc::new(store);
        let (daemon, manager) = Daemon::start(Parts {
            fleet: Arc::new(AgentFleet::new(agents, config.poll)),
            store: store.clone(),
            clock: Arc::new(WallClock::not_before(floor_s)),
            inventory: config.inventory(),
            settings: config.control.clone(),
            config: config.cadence,
        })?;
        tracing::info!(
            store = store.location(),
            agents = config.agents.len(),
            mode = ?config.control.mode,
            interval_s = config.cadence.interval_s,
            "manager started"
        );
        Ok(Service {
            manager,
            task: tokio::spawn(daemon.run()),
        })
    }

    /// The handle on the running loop.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// Asks the loop to stop after its current look and waits for it to end.
    ///
    /// # Errors
    /// [`ServiceError::Loop`] when the loop's task had panicked.
    pub async fn stop(self) -> Result<(), ServiceError> {
        // Refused only when the loop is already gone; its task says how it ended.
        let _ = self.manager.shutdown().await;
        self.task
            .await
            .map_err(|e| ServiceError::Loop(e.to_string()))?;
        tracing::info!("manager stopped");
        Ok(())
    }
}

/// Starts the manager, runs it until `shutdown` completes, and stops it.
///
/// # Errors
/// What [`Service::start`] and [`Service::stop`] return.
pub async fn run(
    config: &ManagerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let service = Service::start(config).await?;
    shutdown.await;
    service.stop().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentEntry;
    use drover_api::AgentUrl;
    use std::time::Duration;

    /// Two agents nobody serves (a refused connection fails at once), polled every 50 ms.
    fn config(dir: &std::path::Path) -> ManagerConfig {
        let token = dir.join("token");
        std::fs::write(&token, "secret").expect("token");
        let agent = |name: &str, port: u16| AgentEntry {
            name: name.into(),
            url: AgentUrl::parse(&format!("http://127.0.0.1:{port}")).expect("url"),
            token_file: None,
        };
        let mut c = ManagerConfig {
            state_dir: dir.join("state"),
            token_file: Some(token),
            agents: vec![agent("h1", 1), agent("h2", 2)],
            ..ManagerConfig::default()
        };
        c.cadence.interval_s = 0.05;
        c.poll.miss_limit = 1;
        c
    }

    async fn looks(service: &Service, at_least: u64) {
        for _ in 0..200 {
            if service.manager().status().await.looks >= at_least {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("fewer than {at_least} looks in 5 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn starts_on_its_store_looks_stops_and_starts_again_where_it_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path());
        let service = Service::start(&c).await.expect("starts");
        looks(&service, 3).await;
        let hosts = service.manager().hosts().await;
        assert_eq!(hosts.len(), 2);
        assert!(hosts.iter().all(|h| !h.reachable && !h.answered));
        assert!(hosts[0].error.as_deref().is_some_and(|e| !e.is_empty()));
        let status = service.manager().status().await;
        assert_eq!(status.store.failures_in_a_row, 0);
        service.stop().await.expect("stops");

        let store = SqliteStore::open_in(&c.state_dir, c.retention).expect("the file");
        let names: Vec<_> = store
            .hosts()
            .expect("hosts")
            .into_iter()
            .map(|h| (h.name, h.reachable))
            .collect();
        assert_eq!(names, [("h1".into(), false), ("h2".into(), false)]);
        let saved = store.control_state().expect("read").expect("stored");
        let settings = store.settings().expect("read").expect("stored");
        assert_eq!(settings.settings, c.control);
        drop(store);

        let again = Service::start(&c).await.expect("starts again");
        looks(&again, 1).await;
        let status = again.manager().status().await;
        assert!(status.now_s >= saved.at_s, "time never goes back");
        assert_eq!(
            status.settings_version, settings.version,
            "same settings, same version"
        );
        again.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn an_unreadable_token_or_a_bad_config_starts_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = config(dir.path());
        c.token_file = Some(dir.path().join("missing"));
        let err = Service::start(&c).await.expect_err("no token");
        assert!(
            matches!(err, ServiceError::Config(ConfigError::Token { .. })),
            "{err}"
        );
        let mut c = config(dir.path());
        c.cadence.interval_s = 0.0;
        let err = Service::start(&c).await.expect_err("zero interval");
        assert!(err.to_string().contains("loop.interval_s"), "{err}");
        assert!(!c.state_dir.exists(), "no store made");
    }
}
