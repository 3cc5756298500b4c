//! `ApiError`: every failure the HTTP layer can return, each mapped to one status and code.
//! Internal causes are kept for the log and never reach the client.

use std::sync::Arc;

use aggregates::values::FieldError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::envelope::{ErrorBody, ErrorDetail, timestamp};
use crate::store::{CommandError, is_unavailable};

/// Seconds a client should wait before retrying after a 503.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 AUTH_001: missing, malformed, unknown, expired or revoked credential.
    #[error("invalid or expired credentials")]
    InvalidToken,
    /// 403 AUTH_002: the caller may not act on this resource.
    #[error("insufficient permissions")]
    Forbidden,
    /// 401 AUTH_003: wrong email, password or code; one message for all of them.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// 404 USER_001: no such user, or a withdrawn one.
    #[error("user not found")]
    UserNotFound,
    /// 403 USER_002: the account is suspended.
    #[error("account suspended")]
    Suspended,
    /// 409 USER_003: the email address belongs to another account.
    #[error("email already registered")]
    EmailTaken,
    /// 400 VAL_001: malformed body, wrong types, unknown or read-only fields, policy violations.
    #[error("invalid request: {message}")]
    Invalid { message: String, details: Value },
    /// 413 VAL_001: the body is larger than the limit.
    #[error("request body too large")]
    PayloadTooLarge { limit_bytes: usize },
    /// 400 VAL_002: required fields are missing.
    #[error("missing required fields")]
    Missing { fields: Vec<String> },
    /// 409 CONFLICT_001: `If-Match` did not match, or concurrent writes exhausted the retries.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 429 RATE_001: too many requests in the endpoint's class; `Retry-After` is set.
    #[error("rate limit exceeded")]
    RateLimited,
    /// 404 or 405 VAL_001: no endpoint matches the method and path.
    #[error("no such endpoint")]
    NoRoute(StatusCode),
    /// 500 SYS_001: a fault inside the service.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
    /// 503 SYS_002: the database is unavailable.
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
}

/// A 5xx cause attached to the response, for the request middleware to log inside its span.
#[derive(Clone)]
pub struct LoggedCause(pub Arc<anyhow::Error>);

tokio::task_local! {
    /// Id of the request being served, for error bodies built deep inside a handler.
    pub static REQUEST_ID: String;
}

impl ApiError {
    /// Builds the 503 of a request that ran past the configured request timeout.
    pub fn timed_out() -> Self {
        Self::Unavailable(anyhow::anyhow!("request timed out"))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            details: Value::Null,
        }
    }

    /// VAL_001 listing each invalid field with its reason.
    pub fn invalid_fields(errors: &[FieldError]) -> Self {
        let fields: Vec<Value> = errors
            .iter()
            .map(|error| json!({"field": error.field, "reason": error.reason}))
            .collect();
        Self::Invalid {
            message: "One or more fields are invalid".to_owned(),
            details: json!({ "fields": fields }),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidToken | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::Suspended => StatusCode::FORBIDDEN,
            Self::UserNotFound => StatusCode::NOT_FOUND,
            Self::EmailTaken | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Invalid { .. } | Self::Missing { .. } => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoRoute(status) => *status,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidToken => "AUTH_001",
            Self::Forbidden => "AUTH_002",
            Self::InvalidCredentials => "AUTH_003",
            Self::UserNotFound => "USER_001",
            Self::Suspended => "USER_002",
            Self::EmailTaken => "USER_003",
            Self::Invalid { .. } | Self::PayloadTooLarge { .. } | Self::NoRoute(_) => "VAL_001",
            Self::Missing { .. } => "VAL_002",
            Self::Conflict(_) => "CONFLICT_001",
            Self::RateLimited => "RATE_001",
            Self::Internal(_) => "SYS_001",
            Self::Unavailable(_) => "SYS_002",
        }
    }

    fn message_and_details(&self) -> (String, Value) {
        let request_id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
        match self {
            Self::InvalidToken => (
                "The access token or API key is missing, invalid, expired or revoked".to_owned(),
                Value::Null,
            ),
            Self::Forbidden => (
                "The credential does not grant access to this resource".to_owned(),
                Value::Null,
            ),
            Self::InvalidCredentials => ("Invalid credentials".to_owned(), Value::Null),
            Self::UserNotFound => ("User not found".to_owned(), Value::Null),
            Self::Suspended => ("The user account is suspended".to_owned(), Value::Null),
            Self::EmailTaken => (
                "An account with this email address already exists".to_owned(),
                Value::Null,
            ),
            Self::Invalid { message, details } => (message.clone(), details.clone()),
            Self::PayloadTooLarge { limit_bytes } => (
                format!("The request body is larger than {limit_bytes} bytes"),
                Value::Null,
            ),
            Self::Missing { fields } => (
                "Required fields are missing".to_owned(),
                json!({ "fields": fields }),
            ),
            Self::Conflict(message) => (message.clone(), Value::Null),
            Self::RateLimited => (
                "Too many requests; retry after the number of seconds in Retry-After".to_owned(),
                Value::Null,
            ),
            Self::NoRoute(_) => (
                "No endpoint matches this method and path".to_owned(),
                Value::Null,
            ),
            Self::Internal(_) => (
                "Internal server error".to_owned(),
                json!({ "request_id": request_id }),
            ),
            Self::Unavailable(_) => (
                "A dependency is unavailable; retry later".to_owned(),
                json!({ "request_id": request_id }),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (message, details) = self.message_and_details();
        let body = ErrorBody {
            success: false,
            error: ErrorDetail {
                code: self.code(),
                message,
                details,
            },
            timestamp: timestamp(),
        };
        let mut response = (self.status(), Json(body)).into_response();

        if matches!(self, Self::Unavailable(_)) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
            );
        }
        if let Self::Internal(cause) | Self::Unavailable(cause) = self {
            response
                .extensions_mut()
                .insert(LoggedCause(Arc::new(cause)));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            Self::Unavailable(error.into())
        } else {
            Self::Internal(error.into())
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        match error.downcast_ref::<sqlx::Error>() {
            Some(database) if is_unavailable(database) => Self::Unavailable(error),
            _ => Self::Internal(error),
        }
    }
}

impl ApiError {
    /// Maps the store-level failures of a command; rejections are mapped by the caller.
    pub fn from_command<E: std::error::Error>(
        error: CommandError<E>,
        rejected: impl FnOnce(E) -> ApiError,
    ) -> Self {
        match error {
            CommandError::Rejected(error) => rejected(error),
            CommandError::EmailClaimed => Self::EmailTaken,
            CommandError::Conflict => Self::Conflict(
                "The resource was modified concurrently; retry the request".to_owned(),
            ),
            CommandError::Unavailable(error) => Self::Unavailable(error),
            CommandError::Store(error) => Self::Internal(error),
        }
    }
}
