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
    /// The status: 404 unknown plan, host or migration; 409 a plan whose state refuses the operation or
    /// whose premises vanished, settings changed since read; 422 invalid settings; 502 an
    /// agent refused or was unreachable; 500 the store failed; 503 the loop is not running.
    pub fn status(&self) -> StatusCode {
        use ManagerError as M;
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Manager(e) => match e {
                M::UnknownPlan(_) | M::UnknownHost(_) | M::UnknownMigration(_) => {
                    StatusCode::NOT_FOUND
                }
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

/// Checks an `Authorization` header value against the token (drover-api's one rule,
/// [`drover_api::token::bearer_matches`], the agent's too).
///
/// # Errors
/// [`ApiError::Unauthorized`] for a missing header, another scheme, or another token.
pub fn check_bearer(header: Option<&[u8]>, token: &str) -> Result<(), ApiError> {
    if drover_api::token::bearer_matches(header, token) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}
