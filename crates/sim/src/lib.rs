//! `drover-sim`: a trace-driven datacenter simulator over drover-core's policies.
//!
//! It replays a workload (PlanetLab day folders, a `vm,t,cpu_pct` CSV, or the seeded synthetic
//! generator) on a modelled datacenter and scores a policy by energy, migrations and the
//! benchmark's SLA metrics (SLATAH, PDM, SLAV, ESV). The default model is the PlanetLab benchmark
//! with CloudSim 3.0.3's semantics, so the published policies can be checked against CloudSim's
//! own results and Drover's policy judged on the same ground; an optional dirty-rate migration
//! model makes the technique matter.
//!
//! - [`trace`]: loading workloads, with errors that name the bad file.
//! - [`synth`]: the synthetic generator.
//! - [`limits`]: the largest workloads and datacenters it takes.
//! - [`model`]: the datacenter and migration models.
//! - [`judge`]: how a migration turns out in the dirty-rate model: a model fitted to measured
//!   migrations, independent of the cost model policies choose with.
//! - [`observe`]: what policies see of a VM's dirty rate and working set (the agent's sampled,
//!   noisy, lagging measurements).
//! - [`engine`]: the event loop (hosts, migrations, accounting).
//! - [`metrics`]: the metric definitions and the report row.
//! - [`compare`]: parsing the list of policies to compare.
//! - [`fidelity`]: the rows against CloudSim 3.0.3's reference, metric by metric (mean absolute
//!   deviation per policy).
//! - [`plot`]: an SVG chart of a comparison.
//! - [`live`]: a simulated cluster the manager's control step drives in virtual time (observe,
//!   apply actions, advance), for the manager's simulator-backed fleet.
//! - [`replay`]: re-running the manager's control step on a stored decision.
//! - [`manager_bench`]: the manager's benchmark (the control step every simulated second
//!   against a live datacenter).
//!
//! Decisions are never made here: the engine builds a snapshot and asks
//! [`drover_core::dc::Policy::decide`], the same decision engine in drover-core (`dc`) that a
//! manager will call.

pub mod compare;
pub mod engine;
pub mod error;
pub mod fidelity;
pub mod judge;
pub mod limits;
pub mod live;
pub mod manager_bench;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod plot;
pub mod replay;
pub mod synth;
pub mod trace;

pub use engine::{simulate, Simulation};
pub use error::SimError;
pub use metrics::Report;
pub use model::{DatacenterModel, MigrationModel};
pub use trace::{TraceError, Workload};
