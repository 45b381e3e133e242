//! Dynamic resource management decisions: when to migrate, which VM, where, and how.
//!
//! Everything here is a pure function of a [`Snapshot`] (the cluster as measured at one instant)
//! plus the policy's parameters and, for randomized policies, a seeded generator. The simulator
//! builds snapshots from a modelled datacenter; a cluster manager (not built yet) will build them
//! from its agents and get the same [`Plan`] back for the same input.
//!
//! # Design
//! - [`model`]: host and VM types, SPECpower power models.
//! - [`snapshot`]: the input. Hosts list their VMs in arrival order; VMs carry their CPU history
//!   (30 samples, most recent first), memory, dirty rate and when they last moved.
//! - [`cluster`]: the *working allocation* a policy edits while planning a round, with the CPU
//!   sharing rule, free capacity and summed histories kept consistent. Plans are made by editing
//!   it and recording the edits, never by touching the snapshot.
//! - [`detect`]: overload detectors THR, IQR, MAD, LR, LRR (Beloglazov & Buyya 2012) with their
//!   safety parameters and short-history fallbacks.
//! - [`select`]: VM selection MMT, MU, MC, RS.
//! - [`place`]: PABFD placement and admission of new VMs.
//! - [`placer`]: the same PABFD choice through an index of the destination hosts (what the
//!   published policies use: the full scan is quadratic in the running hosts).
//! - [`consolidate`]: one round of the published algorithm (overload relief, then underload
//!   consolidation over every running host).
//! - `bestfit`: the running hosts by forecast, so Drover's best fit reads only hosts that can win.
//! - [`drover`]: Drover's own policy (forecast with hysteresis, cost-ranked selection, headroom
//!   placement, consolidation only when it pays, technique per VM from the cost model).
//! - [`policy`]: policies by name (`lr-mmt-1.2`, `drover`, `dvfs`, ...) and the entry point
//!   [`Policy::decide`].
//! - [`stats`]: the statistics, computed as CloudSim computes them (fidelity with the reference
//!   results depends on it, quirks included; each quirk is documented where it lives).
//! - [`rng`]: a seeded generator for random selection.
//!
//! The published policies reproduce CloudSim 3.0.3's semantics, because their numbers are only
//! comparable with the literature's if they decide exactly as CloudSim does.

mod bestfit;
pub mod cluster;
pub mod consolidate;
pub mod detect;
pub mod drover;
pub mod model;
pub mod place;
pub mod placer;
pub mod plan;
pub mod policy;
pub mod rng;
pub mod select;
pub mod snapshot;
pub mod stats;

pub use detect::{Detector, Overload};
pub use drover::DroverParams;
pub use model::{HostId, HostType, PowerModel, VmId, VmType};
pub use place::Admission;
pub use plan::{Move, MoveReason, Plan};
pub use policy::{Policy, PolicyError, PolicySpec};
pub use select::Selector;
pub use snapshot::{History, HostState, Snapshot, VmState, HISTORY_LEN};
