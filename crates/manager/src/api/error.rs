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
    /// No such route: 404.
    #[error("{0}")]
    NotFound(String),
    /// A method the route does not take: 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A body over [`super::BODY_LIMIT`]: 413.
    #[error("{0}")]
    TooLarge(String),
    /// A request URI over [`super::URI_LIMIT`]: 414.
    #[error("{0}")]
    UriTooLong(String),
    /// A body of another media type than the route reads: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The answer could not be made (a metrics encoder failing): 500.
    #[error("{0}")]
    Internal(String),
}

/// What a client is told of a store failure: the store's own message names its file and
/// SQL, which are the operator's business (it is logged), not the client's.
pub const STORE_FAILED: &str = "the manager's store failed; see the manager's log";

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
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Manager(e) => match e {
                M::UnknownPlan(_) | M::UnknownHost(_) | M::UnknownMigration(_) => {
                    StatusCode::NOT_FOUND
                }
                M::Plan(_) | M::Expired { .. } | M::SettingsConflict { .. } => StatusCode::CONFLICT,
                M::SettingsShape(_) => StatusCode::BAD_REQUEST,
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
        let error = match &self {
            ApiError::Manager(ManagerError::Store(e)) => {
                tracing::error!(error = %e, "API call failed in the store");
                STORE_FAILED.to_string()
            }
            // Unknown ids are echoed, but never more than a name's worth of them.
            ApiError::Manager(
                e @ (ManagerError::UnknownPlan(_)
                | ManagerError::UnknownHost(_)
                | ManagerError::UnknownMigration(_)),
            ) => truncated(&e.to_string()),
            other => other.to_string(),
        };
        let status = self.status();
        let mut resp = (status, Json(ErrorBody { error })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
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

/// Longest error message echoed to a client, in characters: an id from the path is at most
/// a few hundred characters (the URI limit is 4 KiB), and a message quoting one need not be.
pub const MESSAGE_LIMIT: usize = 300;

/// `message` cut to [`MESSAGE_LIMIT`] characters, marked when cut.
fn truncated(message: &str) -> String {
    if message.chars().count() <= MESSAGE_LIMIT {
        return message.to_string();
    }
    let mut cut: String = message.chars().take(MESSAGE_LIMIT).collect();
    cut.push_str("...");
    cut
}
