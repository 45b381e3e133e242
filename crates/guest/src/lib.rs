//! The guest workloads' specification, shared with the host so that a bad `--workload` is
//! refused before any VM boots. The workloads themselves are the `drover-guest` binary.

pub mod fit;
pub mod spec;
