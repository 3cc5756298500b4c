//! Extractors whose rejections use the service's own error envelope: JSON bodies, the caller's
//! credential, the client context stored with each command, and path parameters.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::crypto::hash_token;
use crate::store::CommandMetadata;

/// Largest request body accepted, in bytes.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
/// Longest user agent stored with a command, in bytes.
const USER_AGENT_MAX_BYTES: usize = 512;
/// Longest access token accepted before any lookup, in bytes.
const TOKEN_MAX_BYTES: usize = 128;

/// A JSON request body type, with the fields that must be present and those a client may
/// read but never write.
pub trait RequestBody: DeserializeOwned {
    const REQUIRED: &'static [&'static str] = &[];
    const READ_ONLY: &'static [&'static str] = &[];
}

/// A JSON body, parsed and checked field by field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: RequestBody> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::invalid("Content-Type must be application/json"));
        }

        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge {
                        limit_bytes: BODY_LIMIT_BYTES,
                    }
                } else {
                    ApiError::invalid("The request body could not be read")
                }
            })?;
        parse_body(&bytes).map(Self)
    }
}

/// Parses `bytes` as a JSON object, then reports missing, read-only and invalid fields.
pub fn parse_body<T: RequestBody>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|error| ApiError::Invalid {
        message: "The request body is not valid JSON".to_owned(),
        details: json!({"line": error.line(), "column": error.column()}),
    })?;
    let Value::Object(object) = &value else {
        return Err(ApiError::invalid("The request body must be a JSON object"));
    };

    let read_only: Vec<Value> = T::READ_ONLY
        .iter()
        .filter(|field| object.contains_key(**field))
        .map(|field| json!({"field": field, "reason": "is read-only"}))
        .collect();
    if !read_only.is_empty() {
        return Err(ApiError::Invalid {
            message: "The request sets fields that only the server may change".to_owned(),
            details: json!({ "fields": read_only }),
        });
    }

    let missing: Vec<String> = T::REQUIRED
        .iter()
        .filter(|field| object.get(**field).is_none_or(Value::is_null))
        .map(|field| (*field).to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::Missing { fields: missing });
    }

    serde_path_to_error::deserialize(value).map_err(|error| {
        let field = error.path().to_string();
        ApiError::Invalid {
            message: "A field has the wrong type or is not allowed".to_owned(),
            details: json!({"fields": [{"field": field, "reason": error.inner().to_string()}]}),
        }
    })
}

/// Where a request came from, as stored in the metadata of the events it causes.
#[derive(Clone, Debug)]
pub struct ClientContext {
    pub request_id: String,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// Request id set by the request middleware.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl ClientContext {
    pub fn metadata(&self, actor: String, subject: Option<Uuid>) -> CommandMetadata {
        CommandMetadata {
            actor,
            request_id: self.request_id.clone(),
            client_ip: self.client_ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent.clone(),
            subject,
        }
    }
}

fn truncate(mut text: String, max_bytes: usize) -> String {
    if text.len() > max_bytes {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

impl<S: Send + Sync> FromRequestParts<S> for ClientContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|id| id.0.clone())
            .unwrap_or_default();
        let client_ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(|agent| truncate(agent.to_owned(), USER_AGENT_MAX_BYTES));
        Ok(Self {
            request_id,
            client_ip,
            user_agent,
        })
    }
}

/// A caller authenticated by a session's Bearer token.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

impl Caller {
    /// Actor recorded in event metadata.
    pub fn actor(&self) -> String {
        format!("user:{}", self.user_id)
    }

    /// Resolves a `{userId}` path segment: `me` or the caller's own id; any other is AUTH_002.
    pub fn resolve_user(&self, segment: &str) -> Result<Uuid, ApiError> {
        if segment == "me" {
            return Ok(self.user_id);
        }
        match segment.parse::<Uuid>() {
            Ok(user_id) if user_id == self.user_id => Ok(user_id),
            _ => Err(ApiError::Forbidden),
        }
    }
}

/// Reads the Bearer token from the `Authorization` header, or `None` when absent or malformed.
fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let well_formed = scheme.eq_ignore_ascii_case("bearer")
        && token.len() <= TOKEN_MAX_BYTES
        && token.starts_with("las_");
    well_formed.then_some(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).ok_or(ApiError::InvalidToken)?;

        let row = sqlx::query_as::<_, (Uuid, Uuid, DateTime<Utc>, bool, String)>(
            "SELECT s.session_id, s.user_id, s.expires_at, s.revoked_at IS NOT NULL, p.status
               FROM sessions s JOIN user_profiles p USING (user_id)
              WHERE s.token_hash = $1",
        )
        .bind(hash_token(token))
        .fetch_optional(&state.pool)
        .await?;

        let Some((session_id, user_id, expires_at, revoked, status)) = row else {
            return Err(ApiError::InvalidToken);
        };
        if revoked || expires_at <= Utc::now() {
            return Err(ApiError::InvalidToken);
        }
        if status != "active" {
            return Err(ApiError::Suspended);
        }
        Ok(Self {
            user_id,
            session_id,
        })
    }
}

/// The `{userId}` path segment, still unresolved.
pub struct UserPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for UserPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(segment) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("The path parameter is invalid"))?;
        Ok(Self(segment))
    }
}
