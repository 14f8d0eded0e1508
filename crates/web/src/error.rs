//! The API's one error type and its mapping to `{"error": {"code", "message"}}` (SPEC §10).
//!
//! Client errors carry a stable `code` and a message meant for the caller. Server errors are
//! logged with their whole cause chain and answer a fixed message: nothing internal (SQL, file
//! paths, Stripe's answers) ever reaches a 5xx body.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, error::JsonPayloadError};
use serde::Serialize;
use tributary_persistence::PersistenceError;

/// Largest JSON request body the API reads (64 KiB).
pub const JSON_LIMIT: usize = 64 * 1024;

/// Everything a handler can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, or a token that is malformed, forged, expired or of another algorithm.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The token is valid but does not grant this kind of route (admin, client portal).
    #[error("{0}")]
    Forbidden(&'static str),
    /// Unknown, or outside the token's claims: the two are indistinguishable on purpose.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A malformed request: `code` names the problem.
    #[error("{message}")]
    BadRequest {
        /// The error code of the body.
        code: &'static str,
        /// The message of the body.
        message: String,
    },
    /// The request conflicts with the current state (`not_connected`, `slug_taken`).
    #[error("{message}")]
    Conflict {
        /// The error code of the body.
        code: &'static str,
        /// The message of the body.
        message: String,
    },
    /// The body is larger than [`JSON_LIMIT`].
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// A setting the route needs is missing (`stripe.connect_client_id`, …).
    #[error("{0}")]
    NotConfigured(&'static str),
    /// The database cannot serve now (down, restarting, no free connection, SQLite's write
    /// lock held past the busy timeout): logged, answered `503 database_unavailable`, and the
    /// same request may succeed later.
    #[error("the database is unavailable")]
    DatabaseUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Anything else: logged with its cause chain, answered as an opaque 500.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A `400` with its code and message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A `409` with its code and message.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    /// A server error: `503 database_unavailable` when the database cannot serve now (see
    /// [`tributary_persistence::is_unavailable`]), an opaque 500 otherwise.
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        let err: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
        if database_unavailable(err.as_ref()) {
            Self::DatabaseUnavailable(err)
        } else {
            Self::Internal(err)
        }
    }

    /// `409 not_connected`: the business has no Stripe connection.
    pub fn not_connected() -> Self {
        Self::conflict(
            "not_connected",
            "this business has no Stripe connection; connect it first",
        )
    }

    /// The stable machine code of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::BadRequest { code, .. } | Self::Conflict { code, .. } => code,
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::NotConfigured(_) => "not_configured",
            Self::DatabaseUnavailable(_) => "database_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }
}

impl From<PersistenceError> for ApiError {
    fn from(err: PersistenceError) -> Self {
        Self::internal(err)
    }
}

/// The body of every error answer (SPEC §10): `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct Body<'a> {
    /// What went wrong.
    pub error: Detail<'a>,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
pub struct Detail<'a> {
    /// Stable and machine-readable: `unauthorized`, `forbidden`, `not_found`,
    /// `payload_too_large`, `not_configured`, `internal_error`, or the route's own
    /// (`invalid_page`, `not_connected`, `slug_taken`, …).
    pub code: &'a str,
    /// For people; 5xx messages never carry internals.
    pub message: String,
}

/// The error body of SPEC §10, for answers built outside [`ApiError`].
pub fn error_body(code: &str, message: impl Into<String>) -> serde_json::Value {
    serde_json::json!({"error": {"code": code, "message": message.into()}})
}

/// Whether a database error that cannot serve now is anywhere in `err`'s cause chain.
fn database_unavailable(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(db) = e.downcast_ref::<tributary_persistence::sea_orm::DbErr>()
            && tributary_persistence::is_unavailable(db)
        {
            return true;
        }
        next = e.source();
    }
    false
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotConfigured(_) | Self::DatabaseUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            Self::Internal(source) => {
                tracing::error!(error = %chain(source.as_ref()), "request failed");
                "something went wrong on our side; the error was logged".to_owned()
            }
            Self::DatabaseUnavailable(source) => {
                tracing::warn!(error = %chain(source.as_ref()), "request failed: database unavailable");
                "the database is unavailable or busy; nothing was changed, retry in a moment"
                    .to_owned()
            }
            Self::NotConfigured(what) => {
                tracing::error!(missing = what, "a route needs a setting that is not set");
                "this server is not configured for this request".to_owned()
            }
            other => other.to_string(),
        };
        let mut res = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized(_)) {
            res.insert_header(("WWW-Authenticate", "Bearer"));
        }
        res.json(Body {
            error: Detail {
                code: self.code(),
                message,
            },
        })
    }
}

/// Maps actix's JSON body errors: too large → 413, anything else → 400 with the reason.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    match err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => {
            ApiError::PayloadTooLarge(limit).into()
        }
        JsonPayloadError::ContentType => ApiError::bad_request(
            "invalid_json",
            "the body must be JSON (Content-Type: application/json)",
        )
        .into(),
        JsonPayloadError::Deserialize(e) => {
            ApiError::bad_request("invalid_json", format!("the JSON body is not valid: {e}")).into()
        }
        other => ApiError::bad_request(
            "invalid_json",
            format!("the body could not be read: {other}"),
        )
        .into(),
    }
}

/// Maps bad query strings to 400 `invalid_query`.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request("invalid_query", err.to_string()).into()
}

/// Maps bad path segments to 400 `invalid_path`.
pub fn path_error(err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_path", err.to_string()).into()
}

/// Unknown routes answer the JSON error shape too.
pub async fn not_found() -> HttpResponse {
    ApiError::NotFound("route").error_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body_of(err: &ApiError) -> serde_json::Value {
        let bytes = err
            .error_response()
            .into_body()
            .try_into_bytes()
            .unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    #[test]
    fn internal_errors_say_nothing_inside() {
        let err = ApiError::internal(std::io::Error::other("SELECT secret FROM table"));
        assert_eq!(err.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_of(&err);
        assert_eq!(body["error"]["code"], "internal_error");
        assert!(!body.to_string().contains("SELECT"), "{body}");
    }

    #[test]
    fn an_unavailable_database_is_a_503_anywhere_in_the_chain() {
        use tributary_persistence::sea_orm::{ConnAcquireErr, DbErr};
        let timeout = || DbErr::ConnectionAcquire(ConnAcquireErr::Timeout);
        for err in [
            ApiError::internal(timeout()),
            ApiError::from(PersistenceError::Db(timeout())),
        ] {
            assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
            let body = body_of(&err);
            assert_eq!(body["error"]["code"], "database_unavailable");
            assert!(!body.to_string().contains("pool"), "{body}");
        }
        let other = ApiError::internal(DbErr::RecordNotFound("x".into()));
        assert_eq!(other.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn client_errors_have_code_and_message() {
        let body = body_of(&ApiError::conflict("slug_taken", "the slug is taken"));
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "slug_taken", "message": "the slug is taken"}})
        );
        assert_eq!(
            body_of(&ApiError::NotFound("business"))["error"]["code"],
            "not_found"
        );
    }
}
