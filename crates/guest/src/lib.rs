//! The guest workloads' specification and control protocol, shared with the host so that a bad
//! `--workload` is refused before any VM boots and a workload change is checked and sent by the
//! same rules the guest applies. The workloads themselves are the `drover-guest` binary.

pub mod control;
pub mod fit;
pub mod net;
pub mod peer;
pub mod spec;
