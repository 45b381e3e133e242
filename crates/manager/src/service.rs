//! The manager as a process runs it: from a validated [`ManagerConfig`] to a running control
//! loop over the real agents, on the SQLite store under the state directory, on wall-clock
//! time, with its HTTP API ([`crate::api`]); and back down.
//!
//! Lifecycle of a [`Service`]:
//!
//! ```text
//!  start ──> Running ──stop──> API closed (requests under way finish)
//!              │                 ──> the loop finishes its current look, answers, ends ──> Stopped
//!              └── the loop's or the API's task fails ──> stop returns ServiceError::Loop / Api
//! ```
//!
//! Stopping never interrupts a look between storing a step and acting on it: the shutdown is a
//! command the loop runs between looks. A process killed instead (SIGKILL) restarts from the
//! store like any crash (see [`crate::daemon`]).
//!
//! The loop calls the store synchronously (SQLite) on the runtime's worker thread: one look at
//! a time, a few milliseconds per write, so it runs on a multi-threaded runtime and keeps
//! other tasks (the API) on the other workers.

use crate::api;
use crate::clock::WallClock;
use crate::config::{ConfigError, ManagerConfig};
use crate::daemon::{Daemon, DaemonError, Parts};
use crate::fleet::AgentFleet;
use crate::handle::Manager;
use crate::store::{SqliteStore, Store, StoreError};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::oneshot;
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
    /// The API's address cannot be listened on (in use, not ours).
    #[error("api.listen = {addr}: cannot listen: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Another manager runs on this state directory (it holds the directory's lock file): two
    /// loops on one store and one fleet would each start their own moves.
    #[error("state_dir {}: another manager runs on it (its lock file {} is held)", dir.display(), lock.display())]
    Busy { dir: PathBuf, lock: PathBuf },
    /// The state directory or its lock file cannot be made or opened.
    #[error("state_dir {}: {source}", dir.display())]
    StateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The API's server failed or its task panicked.
    #[error("the HTTP API ended abnormally: {0}")]
    Api(String),
    /// The loop's task ended abnormally (a panic): the store holds everything up to its last
    /// stored step.
    #[error("the control loop ended abnormally: {0}")]
    Loop(String),
}

/// A running manager: its loop's task, its API's task, and the handle on the loop.
#[derive(Debug)]
pub struct Service {
    manager: Manager,
    task: JoinHandle<()>,
    api_addr: SocketAddr,
    api_stop: oneshot::Sender<()>,
    api_task: JoinHandle<std::io::Result<()>>,
    /// The state directory's lock, held while the manager runs (released when dropped, and by
    /// the kernel when the process dies, even by SIGKILL).
    _lock: std::fs::File,
}

/// The lock file in a manager's state directory.
pub const LOCK_FILE: &str = "manager.lock";

/// Takes the state directory's lock, making the directory if needed.
///
/// # Errors
/// [`ServiceError::Busy`] when another process holds it; [`ServiceError::StateDir`].
fn lock_state_dir(dir: &Path) -> Result<std::fs::File, ServiceError> {
    let io = |source| ServiceError::StateDir {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let lock = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServiceError::Busy {
            dir: dir.to_path_buf(),
            lock,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

impl Service {
    /// Reads the tokens, listens on `api.listen`, opens (or makes) the store under
    /// `config.state_dir`, stores the inventory and the settings, starts the loop on a wall
    /// clock that never goes back past the last stored step (the first look is taken at once)
    /// and serves the API.
    ///
    /// # Errors
    /// [`ServiceError::Config`] (an invalid configuration, an unreadable token file),
    /// [`ServiceError::Listen`], [`ServiceError::Store`] (the store cannot be opened, is newer
    /// than this build, or cannot be written), [`ServiceError::Daemon`].
    pub async fn start(config: &ManagerConfig) -> Result<Service, ServiceError> {
        config.validate()?;
        let agents = config.agent_specs()?;
        let api_token = config.api_token()?;
        let lock = lock_state_dir(&config.state_dir)?;
        let listener = tokio::net::TcpListener::bind(config.api.listen)
            .await
            .map_err(|source| ServiceError::Listen {
                addr: config.api.listen,
                source,
            })?;
        let api_addr = listener
            .local_addr()
            .map_err(|source| ServiceError::Listen {
                addr: config.api.listen,
                source,
            })?;
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
        let task = tokio::spawn(daemon.run());
        let (api_stop, stopped) = oneshot::channel::<()>();
        let router = api::router(manager.clone(), &api_token);
        let api_task = tokio::spawn(api::serve(listener, router, async move {
            // A dropped sender stops the API too.
            let _ = stopped.await;
        }));
        tracing::info!(
            store = store.location(),
            agents = config.agents.len(),
            mode = ?config.control.mode,
            interval_s = config.cadence.interval_s,
            api = %api_addr,
            "manager started"
        );
        Ok(Service {
            manager,
            task,
            api_addr,
            api_stop,
            api_task,
            _lock: lock,
        })
    }

    /// Where the API listens (the port the system chose when `api.listen` asked for 0).
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The handle on the running loop.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// Closes the API (requests under way finish), then asks the loop to stop after its
    /// current look and waits for both to end.
    ///
    /// # Errors
    /// [`ServiceError::Api`] when the server failed; [`ServiceError::Loop`] when the loop's
    /// task had panicked. The loop is stopped either way.
    pub async fn stop(self) -> Result<(), ServiceError> {
        let _ = self.api_stop.send(());
        let api = match self.api_task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServiceError::Api(e.to_string())),
            Err(e) => Err(ServiceError::Api(e.to_string())),
        };
        // Refused only when the loop is already gone; its task says how it ended.
        let _ = self.manager.shutdown().await;
        self.task
            .await
            .map_err(|e| ServiceError::Loop(e.to_string()))?;
        api?;
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
        c.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c
    }

    /// One HTTP/1.1 request over a plain socket (the crate has no HTTP client); the whole
    /// answer, head and body.
    async fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
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
        let health = http_get(service.api_addr(), "/v1/health", None).await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        let denied = http_get(service.api_addr(), "/v1/status", None).await;
        assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
        let status = http_get(service.api_addr(), "/v1/status", Some("secret")).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert!(status.contains("\"looks\""), "{status}");
        // A second manager on the same state directory is refused before it does anything.
        let second = Service::start(&c).await.expect_err("a second manager");
        assert!(matches!(second, ServiceError::Busy { .. }), "{second}");
        assert!(second.to_string().contains("another manager"), "{second}");
        let addr = service.api_addr();
        service.stop().await.expect("stops");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the API is closed"
        );

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_api_port_fails_the_start_and_leaves_the_state_dir_free() {
        let dir = tempfile::tempdir().expect("tempdir");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let mut c = config(dir.path());
        c.api.listen = taken.local_addr().expect("addr");
        let err = Service::start(&c).await.expect_err("the port is taken");
        assert!(matches!(err, ServiceError::Listen { .. }), "{err}");
        // The lock file may stay (it is a kernel lock, released with the file handle); what
        // matters is that the next start is not refused as Busy.
        assert!(c.state_dir.join(LOCK_FILE).exists());
        drop(taken);
        let c = config(dir.path());
        let service = Service::start(&c)
            .await
            .expect("starts once the port is free");
        service.stop().await.expect("stops");
    }
}
