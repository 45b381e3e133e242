//! The simulator's errors.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SimError {
    #[error(transparent)]
    Trace(#[from] crate::trace::TraceError),
    #[error(transparent)]
    Policy(#[from] drover_core::dc::PolicyError),
    #[error("invalid simulation setup: {0}")]
    Setup(String),
}
