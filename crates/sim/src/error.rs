//! The simulator's errors.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SimError {
    #[error(transparent)]
    Trace(#[from] crate::trace::TraceError),
    #[error(transparent)]
    Policy(#[from] drover_core::dc::PolicyError),
    #[error(transparent)]
    Limit(#[from] crate::limits::LimitError),
    #[error("invalid simulation setup: {0}")]
    Setup(String),
}
