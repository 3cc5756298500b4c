//! The one JSON envelope every response body uses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Current time as RFC 3339 in UTC with a `Z` suffix.
pub fn timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Body of a successful response.
#[derive(Serialize, ToSchema)]
pub struct SuccessBody<T> {
    pub success: bool,
    pub data: T,
    pub message: String,
    pub timestamp: String,
}

/// Body of a failed response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub success: bool,
    pub error: ErrorDetail,
    pub timestamp: String,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of the fixed codes, such as `VAL_001`.
    pub code: &'static str,
    pub message: String,
    /// A string or an object with more detail, such as the invalid fields.
    #[serde(skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Object)]
    pub details: Value,
}

/// A successful response: status, data and a short message inside the envelope.
pub struct Success<T> {
    pub status: StatusCode,
    pub message: &'static str,
    pub data: T,
}

impl<T> Success<T> {
    pub fn ok(message: &'static str, data: T) -> Self {
        Self {
            status: StatusCode::OK,
            message,
            data,
        }
    }

    pub fn created(message: &'static str, data: T) -> Self {
        Self {
            status: StatusCode::CREATED,
            message,
            data,
        }
    }
}

impl<T: Serialize> IntoResponse for Success<T> {
    fn into_response(self) -> Response {
        let body = SuccessBody {
            success: true,
            data: self.data,
            message: self.message.to_owned(),
            timestamp: timestamp(),
        };
        (self.status, Json(body)).into_response()
    }
}
