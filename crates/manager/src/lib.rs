//! Drover's cluster manager: the I/O around core's control step. It observes every host's
//! agent, persists what it saw and decided, carries the step's actions out, and serves the
//! operator's API. Every decision is core's (`drover_core::control`); this crate observes,
//! persists, executes and sleeps.
//!
//! - [`daemon`]: the control loop (observe, store, step, store, act, record) and its crash
//!   safety;
//! - [`handle`]: [`Manager`], the in-process handle on a running loop;
//! - [`api`]: the HTTP API over the handle;
//! - [`config`]: the TOML configuration; [`service`]: a configured manager started and stopped;
//! - [`fleet`]: the hosts behind one trait (the real agents, a scripted fake, the simulator);
//! - [`store`]: the state, behind one trait (SQLite, an in-memory fake);
//! - [`clock`]: wall-clock or virtual time;
//! - [`bench`]: the whole manager over the simulator at datacenter scale, timed.

pub mod api;
pub mod bench;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod fleet;
pub mod handle;
pub mod service;
pub mod store;

pub use config::{ConfigError, ManagerConfig};
pub use daemon::{Daemon, LoopConfig, Parts};
pub use handle::{Manager, ManagerError};
pub use service::{Service, ServiceError};
