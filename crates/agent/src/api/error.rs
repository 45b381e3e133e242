//! API errors: every failure a client can see, with its HTTP status and a JSON body
//! `{"error": "<message>"}` (plus `qmp_class`/`qmp_desc` when QEMU refused a forwarded command).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum ApiError {
    /// Malformed JSON, wrong types, unknown fields: 400.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong bearer token: 401.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// No such VM, migration or route: 404.
    #[error("{0}")]
    NotFound(String),
    /// Method not allowed on this route: 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request conflicts with the current state (name taken, VM busy): 409.
    #[error("{0}")]
    Conflict(String),
    /// Body over the size limit: 413.
    #[error("{0}")]
    TooLarge(String),
    /// Request URI over the length limit: 414.
    #[error("{0}")]
    UriTooLong(String),
    /// Well-formed but invalid values: 422.
    #[error("{0}")]
    Invalid(String),
    /// QEMU refused a forwarded QMP command: 409 with QEMU's error class. The command is one
    /// of the allowlisted set with arguments of its type (anything else is 400 or 422 before
    /// QEMU sees it), so QEMU's refusal is about its own state or host: the capabilities set
    /// so far (postcopy-preempt needs postcopy-ram), its accelerator (dirty-limit needs KVM's
    /// dirty ring), an incoming migration already started, nothing to recover.
    #[error("QMP command '{command}' failed: {class}: {desc}")]
    Qmp {
        command: String,
        class: String,
        desc: String,
    },
    /// Another agent (the migration peer) failed: 502.
    #[error("{0}")]
    Upstream(String),
    /// Our own failure (QEMU would not start, disk full): 500.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Qmp { .. } => StatusCode::CONFLICT,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (qmp_class, qmp_desc) = match &self {
            ApiError::Qmp { class, desc, .. } => (Some(class.clone()), Some(desc.clone())),
            _ => (None, None),
        };
        let body = drover_api::ErrorBody {
            error: self.to_string(),
            qmp_class,
            qmp_desc,
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<drover_api::request::RequestError> for ApiError {
    fn from(e: drover_api::request::RequestError) -> Self {
        use drover_api::request::RequestError as R;
        match e {
            R::Syntax(m) => ApiError::BadRequest(m),
            R::Invalid(m) => ApiError::Invalid(m),
        }
    }
}

impl From<crate::vms::VmsError> for ApiError {
    fn from(e: crate::vms::VmsError) -> Self {
        use crate::vms::VmsError as E;
        match e {
            E::NotFound(_) => ApiError::NotFound(e.to_string()),
            // What a migration's QEMU does not allow (vms::guard), and an id taken.
            E::MigrationTaken { .. }
            | E::GuestHere { .. }
            | E::NoGuest { .. }
            | E::NeverIncoming(_) => ApiError::Conflict(e.to_string()),
            E::Exists(_)
            | E::Busy { .. }
            | E::NoDiskToPlan(_)
            | E::Lost(_)
            | E::NoRoom { .. }
            | E::NoDisk { .. }
            | E::DiskOutside { .. }
            | E::Tap(crate::vms::tap::TapError::NoVmNet)
            | E::Tap(crate::vms::tap::TapError::Outside { .. })
            | E::Tap(crate::vms::tap::TapError::Taken { .. })
            | E::Tap(crate::vms::tap::TapError::PeerOutside { .. })
            | E::NotIncoming(_)
            | E::Committed { .. }
            | E::Workload(_) => ApiError::Conflict(e.to_string()),
            // A URI that is not the one this agent made is a value that breaks a rule, like
            // one of another form (the parser's 422), whatever the VM's state.
            E::Unsendable(_) | E::ForeignUri { .. } | E::ForeignNbd { .. } => {
                ApiError::Invalid(e.to_string())
            }
            E::Disk(ref d) if d.is_conflict() => ApiError::Conflict(e.to_string()),
            E::Disk(_) => ApiError::Internal(e.to_string()),
            E::Launch(drover_qemu::launcher::LaunchError::BadSpec(_)) => {
                ApiError::Invalid(e.to_string())
            }
            E::Launch(_)
            | E::Qmp { .. }
            | E::Store(_)
            | E::Image(_)
            | E::Tap(crate::vms::tap::TapError::Command { .. }) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<crate::migrate::MigrateError> for ApiError {
    fn from(e: crate::migrate::MigrateError) -> Self {
        use crate::migrate::MigrateError as E;
        match e {
            E::Vms(v) => v.into(),
            E::NotFound(_) => ApiError::NotFound(e.to_string()),
            E::Finished(_)
            | E::ToSelf(_)
            | E::Exists(_)
            | E::DiskNeedsPrecopy { .. }
            | E::Postcopy
            | E::NotSettled { .. }
            | E::NotResumable { .. }
            | E::NotAbandonable { .. } => ApiError::Conflict(e.to_string()),
            E::Transition(_) => ApiError::Internal(e.to_string()),
            E::Peer(_) => ApiError::Upstream(e.to_string()),
            E::Store(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<crate::power::PowerError> for ApiError {
    fn from(e: crate::power::PowerError) -> Self {
        use crate::power::PowerError as E;
        match e {
            E::InStandby | E::Waking { .. } | E::Occupied(_) => ApiError::Conflict(e.to_string()),
            E::Store(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// Checks an `Authorization` header value against the token (drover-api's one rule,
/// [`drover_api::token::bearer_matches`]).
pub fn check_bearer(header: Option<&[u8]>, token: &str) -> Result<(), ApiError> {
    if drover_api::token::bearer_matches(header, token) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_checks() {
        assert_eq!(check_bearer(None, "s3cret"), Err(ApiError::Unauthorized));
        assert_eq!(
            check_bearer(Some(b"s3cret"), "s3cret"),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(
            check_bearer(Some(b"Bearer s3cre"), "s3cret"),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(
            check_bearer(Some(b"Bearer s3cret!"), "s3cret"),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(
            check_bearer(Some(b"Bearer "), ""),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(check_bearer(Some(b"Bearer s3cret"), "s3cret"), Ok(()));
        assert_eq!(check_bearer(Some(b"bearer s3cret"), "s3cret"), Ok(()));
        assert_eq!(check_bearer(Some(b"BEARER  s3cret"), "s3cret"), Ok(()));
        assert_eq!(
            check_bearer(Some(b"Bearers3cret"), "s3cret"),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(
            check_bearer(Some(b"Basic s3cret"), "s3cret"),
            Err(ApiError::Unauthorized)
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(ApiError::BadRequest("x".into()).status(), 400);
        assert_eq!(ApiError::Unauthorized.status(), 401);
        assert_eq!(ApiError::NotFound("x".into()).status(), 404);
        assert_eq!(ApiError::Conflict("x".into()).status(), 409);
        assert_eq!(ApiError::Invalid("x".into()).status(), 422);
        let e: ApiError = crate::vms::VmsError::NotFound("vm".into()).into();
        assert_eq!(e.status(), 404);
        let e: ApiError = crate::vms::VmsError::Exists("vm".into()).into();
        assert_eq!(e.status(), 409);
        let refused = ApiError::Qmp {
            command: "migrate-set-capabilities".into(),
            class: "GenericError".into(),
            desc: "Postcopy preempt requires postcopy-ram".into(),
        };
        assert_eq!(refused.status(), 409);
    }
}
