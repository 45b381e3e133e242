//! The one place the CLI's tables format a measured number: core's [`fixed`] (fixed places,
//! never `-0.00`), shared with the experiments' tables.

pub use drover_core::units::fixed;

/// A figure that may be missing, with one decimal (`-` when missing), as progress lines print it.
pub fn one_decimal_or_dash(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| fixed(x, 1))
}
