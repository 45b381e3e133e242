//! The one place the CLI's tables format a measured number: core's [`fixed`] (fixed places,
//! never `-0.00`), shared with the experiments' tables.

pub use drover_core::units::fixed;
