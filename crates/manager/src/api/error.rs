//! What the API answers when a call fails: a status and `{"error": "..."}`, from the handle's
//! [`ManagerError`] in one place.

use crate::handle::ManagerError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use thiserror::Error;

/// A failed call, as the API answers it.
#[derive(Debug, Error)]
pub enum ApiError {
    /// No `Authorization: Bearer <token>`, or the wrong token: 401.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// A malformed request (a query that does not parse): 400.
    #[error("{0}")]
    BadRequest(String),
    /// What the manager refused or could not do.
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// The answer could not be made (a metrics encoder failing): 500.
    #[error("{0}")]
    Internal(String),
}

/// The body of every error answer.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: String,
}

impl ApiError {
    /// The status: 404 unknown plan or host; 409 a plan whose state refuses the operation or
    /// whose premises vanished, settings changed since read; 422 invalid settings; 502 an
    /// agent refused or was unreachable; 500 the store failed; 503 the loop is not running.
    pub fn status(&self) -> StatusCode {
        use ManagerError as M;
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Manager(e) => match e {
                M::UnknownPlan(_) | M::UnknownHost(_) => StatusCode::NOT_FOUND,
                M::Plan(_) | M::Expired { .. } | M::SettingsConflict { .. } => StatusCode::CONFLICT,
                M::Settings(_) => StatusCode::UNPROCESSABLE_ENTITY,
                M::Agent(_) => StatusCode::BAD_GATEWAY,
                M::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
                M::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.to_string(),
        };
        (self.status(), Json(body)).into_response()
    }
}

/// Compares a presented token with ours in time independent of where they differ (the
/// agent's rule, `drover_agent::api::error::token_matches`).
fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = presented.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= usize::from(p ^ e);
    }
    diff == 0
}

/// Checks an `Authorization` header value against the token: `Bearer <token>`, the scheme
/// in any case, then one or more spaces (RFC 9110, section 11.1).
///
/// # Errors
/// [`ApiError::Unauthorized`] for a missing header, another scheme, or another token (an
/// empty expected token matches nothing).
pub fn check_bearer(header: Option<&[u8]>, token: &str) -> Result<(), ApiError> {
    let value = header.ok_or(ApiError::Unauthorized)?;
    let (scheme, rest) = value.split_at(value.len().min(6));
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return Err(ApiError::Unauthorized);
    }
    let presented = rest.trim_ascii_start();
    if token.is_empty() || !token_matches(presented, token.as_bytes()) {
        return Err(ApiError::Unauthorized);
    }
    Ok(())
}
