//! Drover's decision engine. Pure: no I/O, no async runtime, no clock but the one passed in.
//!
//! Everything Drover decides (which technique moves a VM, when a migration's watchdog escalates,
//! and, with the decision-engine modules, when/which/where to migrate) is decided here from a
//! snapshot, so the simulator today, and the cluster manager that will call the same functions,
//! make identical decisions.
//!
//! - [`units`]: size and rate parsing; [`wire`]: serde helpers for values on the wire.
//! - [`migration`]: techniques, the cost model, the convergence watchdog, the source and
//!   destination migration state machines and the result record.
//! - [`dc`]: cluster decisions: overload/underload detection, VM selection, placement, and
//!   Drover's own policy.
//! - [`control`]: the cluster manager's control step: observation in, plans and actions out,
//!   moves and plans as state machines (docs/manager-policy.md).

pub mod control;
pub mod dc;
pub mod migration;
pub mod units;
pub mod wire;
