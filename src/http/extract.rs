//! Extractors whose rejections use the service's own error envelope: JSON bodies, the caller's
//! credential, the client context stored with each command, and path parameters.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sqlx::{FromRow, Row};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::strict_json::{self, StrictJsonErrorKind};
use super::users::{ProfileView, profile_columns};
use aggregates::api_key::grants;

use crate::crypto::{TokenKind, hash_token};
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
        // Bodies are read as sent, so a compressed one would be parsed as garbage.
        let encoded = request
            .headers()
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .any(|value| !value.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            return Err(ApiError::invalid(
                "Content-Encoding is not supported; send the body uncompressed",
            ));
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
    let value = strict_json::parse(bytes).map_err(|error| {
        let message = match error.kind {
            StrictJsonErrorKind::Syntax => "The request body is not valid JSON".to_owned(),
            StrictJsonErrorKind::DuplicateKey => {
                "The request body repeats a key within one object".to_owned()
            }
            StrictJsonErrorKind::TooDeep => format!(
                "The request body nests objects and arrays more than {} levels deep",
                strict_json::MAX_DEPTH
            ),
        };
        ApiError::Invalid {
            message,
            details: json!({"line": error.line, "column": error.column}),
        }
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

/// Client address as resolved by the rate limiter, trusted proxies taken into account.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub Option<IpAddr>);

/// Request id set by the request middleware.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Instant by which the request middleware returns 503 if the handler has not finished.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub tokio::time::Instant);

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
        let client_ip = match parts.extensions.get::<ClientIp>() {
            Some(ClientIp(ip)) => *ip,
            None => parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        };
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

/// An authenticated caller: a user's session, or a server-to-server API key with scopes.
#[derive(Clone, Debug)]
pub enum Caller {
    Session {
        user_id: Uuid,
        session_id: Uuid,
    },
    ApiKey {
        api_key_id: Uuid,
        scopes: Vec<String>,
        /// When the key stops working, if ever.
        expires_at: Option<DateTime<Utc>>,
    },
}

impl Caller {
    /// Actor recorded in event metadata.
    pub fn actor(&self) -> String {
        match self {
            Self::Session { user_id, .. } => format!("user:{user_id}"),
            Self::ApiKey { api_key_id, .. } => format!("api_key:{api_key_id}"),
        }
    }

    /// Key of the caller's bucket in the standard rate-limit class.
    pub fn rate_key(&self) -> String {
        match self {
            Self::Session { user_id, .. } => format!("user:{user_id}"),
            Self::ApiKey { api_key_id, .. } => format!("api_key:{api_key_id}"),
        }
    }

    /// Returns the caller's scopes: an API key's own, none for a session.
    pub fn scopes(&self) -> &[String] {
        match self {
            Self::Session { .. } => &[],
            Self::ApiKey { scopes, .. } => scopes,
        }
    }

    /// Returns the session's user and id, or `None` for an API key.
    pub fn session(&self) -> Option<(Uuid, Uuid)> {
        match self {
            Self::Session {
                user_id,
                session_id,
            } => Some((*user_id, *session_id)),
            Self::ApiKey { .. } => None,
        }
    }

    /// Accepts only an API key that has `scope`; a session is AUTH_002.
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        match self {
            Self::ApiKey { scopes, .. } if grants(scopes, scope) => Ok(()),
            _ => Err(ApiError::Forbidden),
        }
    }

    /// Resolves a `{userId}` path segment. A session may name itself, by id or as `me`. An API
    /// key may name any user if it has `scope`, and a segment that is no UUID is USER_001.
    /// Anything else is AUTH_002.
    pub fn resolve_user(&self, segment: &str, scope: &str) -> Result<Uuid, ApiError> {
        match self {
            Self::Session { user_id, .. } => {
                if segment == "me" {
                    return Ok(*user_id);
                }
                match segment.parse::<Uuid>() {
                    Ok(named) if named == *user_id => Ok(named),
                    _ => Err(ApiError::Forbidden),
                }
            }
            Self::ApiKey { scopes, .. } => {
                if !grants(scopes, scope) {
                    return Err(ApiError::Forbidden);
                }
                // No user has an id that is not a UUID.
                segment.parse::<Uuid>().map_err(|_| ApiError::UserNotFound)
            }
        }
    }
}

/// A credential that was checked and refused, kept so that the handler returns the same error.
#[derive(Clone, Copy, Debug)]
pub enum RefusedCredential {
    Invalid,
    Suspended,
}

impl From<RefusedCredential> for ApiError {
    fn from(refused: RefusedCredential) -> Self {
        match refused {
            RefusedCredential::Invalid => Self::InvalidToken,
            RefusedCredential::Suspended => Self::Suspended,
        }
    }
}

/// The outcome of checking a request's credential, stored in its extensions by the rate
/// limiter so that the handler does not look the credential up twice.
#[derive(Clone, Debug)]
pub struct CheckedCredential(pub Result<Caller, RefusedCredential>);

/// The profile of a session's user, read by the query that checked the session and stored in
/// the request's extensions, so that reading one's own profile takes no second query.
#[derive(Clone, Debug)]
pub struct SessionProfile(pub Arc<ProfileView>);

/// The outcome of a credential check and, for an accepted session, its user's profile.
pub struct CredentialCheck {
    pub outcome: Result<Caller, RefusedCredential>,
    pub profile: Option<ProfileView>,
}

impl From<Result<Caller, RefusedCredential>> for CredentialCheck {
    fn from(outcome: Result<Caller, RefusedCredential>) -> Self {
        Self {
            outcome,
            profile: None,
        }
    }
}

/// Reads a credential header's value when it has the expected prefix and a sane length.
fn credential<'a>(
    parts: &'a Parts,
    name: &header::HeaderName,
    prefix: &str,
) -> Option<Option<&'a str>> {
    let value = parts.headers.get(name)?;
    let text = value.to_str().ok().map(str::trim);
    Some(text.filter(|token| token.len() <= TOKEN_MAX_BYTES && token.starts_with(prefix)))
}

/// Reads the Bearer token: `None` when the header is absent, `Some(None)` when it is malformed.
fn bearer(parts: &Parts) -> Option<Option<&str>> {
    let value = parts.headers.get(header::AUTHORIZATION)?;
    let token = value.to_str().ok().and_then(|value| {
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        let well_formed = scheme.eq_ignore_ascii_case("bearer")
            && token.len() <= TOKEN_MAX_BYTES
            && token.starts_with(TokenKind::Session.prefix());
        well_formed.then_some(token)
    });
    Some(token)
}

/// Checks the request's Bearer token or API key. Returns `None` when neither header is sent,
/// and fails only when the database is unavailable.
pub async fn check_credential(
    state: &AppState,
    parts: &Parts,
) -> Result<Option<CredentialCheck>, ApiError> {
    let api_key_header = header::HeaderName::from_static("x-api-key");
    // A request names one credential once. Two headers, or one header twice, would make the
    // outcome depend on which of them is read, so the request is rejected.
    let sent = parts.headers.get_all(header::AUTHORIZATION).iter().count()
        + parts.headers.get_all(&api_key_header).iter().count();
    let invalid = || Ok(Some(CredentialCheck::from(Err(RefusedCredential::Invalid))));
    if sent > 1 {
        return invalid();
    }
    if let Some(token) = bearer(parts) {
        let Some(token) = token else {
            return invalid();
        };
        return check_session(state, token).await.map(Some);
    }
    if let Some(key) = credential(parts, &api_key_header, TokenKind::ApiKey.prefix()) {
        let Some(key) = key else {
            return invalid();
        };
        return check_api_key(state, key)
            .await
            .map(|outcome| Some(outcome.into()));
    }
    Ok(None)
}

/// Maximum interval between two writes of a session's last use.
const MAX_ACTIVITY_INTERVAL: chrono::Duration = chrono::Duration::seconds(60);

/// Returns how stale the stored last use of a session may get before a request writes it
/// again: a tenth of the idle timeout, at most a minute. An unused session therefore ends at
/// most that much before its idle timeout, however short the timeout is.
fn activity_interval(idle_timeout: chrono::Duration) -> chrono::Duration {
    (idle_timeout / 10).min(MAX_ACTIVITY_INTERVAL)
}

/// The session's state and its user's profile, in one row.
#[derive(sqlx::FromRow)]
struct SessionRow {
    session_id: Uuid,
    session_expires_at: DateTime<Utc>,
    revoked: bool,
    /// A password change, reset or suspension came after the user version its login checked.
    superseded: bool,
    last_seen: DateTime<Utc>,
    #[sqlx(flatten)]
    profile: ProfileView,
}

/// Expands to a scalar subquery telling whether any read model in the SQL array `$models` is
/// marked incomplete. The credential checks put it in the query that reads the credential. A
/// scalar subquery is planned inline, unlike a SQL function over a table, which cost a fifth of
/// the `GET /users/me` rate when measured with `ledger-bench`.
macro_rules! incomplete {
    ($models:literal) => {
        concat!(
            "(SELECT COALESCE(bool_or(incomplete), false) FROM projection_checkpoints
               WHERE projection = ANY(",
            $models,
            "))"
        )
    };
}
pub(crate) use incomplete;

/// Fails with 503 when any of `models` contains only part of the history, for handlers whose
/// response would otherwise miss the rest of it (a session list, a revocation).
pub async fn require_complete(state: &AppState, models: &[&str]) -> Result<(), ApiError> {
    let incomplete: bool = sqlx::query_scalar(concat!("SELECT ", incomplete!("$1::text[]")))
        .bind(models)
        .fetch_one(&state.pool)
        .await?;
    if incomplete {
        return Err(incomplete_error(&models.join(", ")));
    }
    Ok(())
}

/// Builds the 503 of a credential check whose read model contains only part of the history.
pub fn incomplete_error(model: &str) -> ApiError {
    ApiError::Unavailable(anyhow::anyhow!("the {model} read model is incomplete"))
}

async fn check_session(state: &AppState, token: &str) -> Result<CredentialCheck, ApiError> {
    // One row whatever the token, so that a partial read model returns 503 for known and
    // unknown tokens alike.
    let row = sqlx::query(concat!(
        "SELECT ",
        incomplete!("'{sessions,profiles}'"),
        " AS incomplete, s.session_id,
                s.expires_at AS session_expires_at,
                s.revoked_at IS NOT NULL AS revoked,
                COALESCE(s.credentials_version < p.sessions_valid_from
                         AND s.session_id IS DISTINCT FROM p.sessions_kept_session_id,
                         false) AS superseded,
                GREATEST(s.created_at, a.last_seen_at) AS last_seen, ",
        profile_columns!(),
        "
           FROM (SELECT 1) AS one
           LEFT JOIN (sessions s
                      JOIN user_profiles p USING (user_id)
                      LEFT JOIN session_activity a USING (session_id))
                  ON s.token_hash = $1"
    ))
    .bind(hash_token(token))
    .fetch_one(&state.pool)
    .await?;

    if row.try_get::<bool, _>("incomplete")? {
        return Err(incomplete_error("sessions"));
    }
    if row.try_get::<Option<Uuid>, _>("session_id")?.is_none() {
        return Ok(Err(RefusedCredential::Invalid).into());
    }
    let row = SessionRow::from_row(&row)?;
    let (session_id, user_id) = (row.session_id, row.profile.user_id);
    let now = state.clock.now();
    let idle_deadline = row.last_seen + state.settings.session_idle_timeout;
    if row.revoked || row.superseded || row.session_expires_at <= now || idle_deadline <= now {
        return Ok(Err(RefusedCredential::Invalid).into());
    }
    if row.profile.status != "active" {
        return Ok(Err(RefusedCredential::Suspended).into());
    }

    if now - row.last_seen >= activity_interval(state.settings.session_idle_timeout) {
        sqlx::query(
            "INSERT INTO session_activity (session_id, last_seen_at) VALUES ($1, $2)
             ON CONFLICT (session_id) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at
              WHERE session_activity.last_seen_at < EXCLUDED.last_seen_at",
        )
        .bind(session_id)
        .bind(now)
        .execute(&state.pool)
        .await?;
    }
    Ok(CredentialCheck {
        outcome: Ok(Caller::Session {
            user_id,
            session_id,
        }),
        profile: Some(row.profile),
    })
}

async fn check_api_key(
    state: &AppState,
    key: &str,
) -> Result<Result<Caller, RefusedCredential>, ApiError> {
    // One row whatever the key, as for sessions.
    let (incomplete, api_key_id, scopes, expires_at, revoked) = sqlx::query_as::<
        _,
        (
            bool,
            Option<Uuid>,
            Option<Vec<String>>,
            Option<DateTime<Utc>>,
            Option<bool>,
        ),
    >(concat!(
        "SELECT ",
        incomplete!("'{api_keys}'"),
        ", k.api_key_id, k.scopes, k.expires_at, k.revoked_at IS NOT NULL
           FROM (SELECT 1) AS one
           LEFT JOIN api_keys k ON k.key_hash = $1"
    ))
    .bind(hash_token(key))
    .fetch_one(&state.pool)
    .await?;

    if incomplete {
        return Err(incomplete_error("api_keys"));
    }
    let (Some(api_key_id), Some(scopes), Some(revoked)) = (api_key_id, scopes, revoked) else {
        return Ok(Err(RefusedCredential::Invalid));
    };
    if revoked || expires_at.is_some_and(|expires_at| expires_at <= state.clock.now()) {
        return Ok(Err(RefusedCredential::Invalid));
    }
    Ok(Ok(Caller::ApiKey {
        api_key_id,
        scopes,
        expires_at,
    }))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(CheckedCredential(checked)) = parts.extensions.get::<CheckedCredential>() {
            return checked.clone().map_err(ApiError::from);
        }
        match check_credential(state, parts).await? {
            Some(checked) => checked.outcome.map_err(ApiError::from),
            None => Err(ApiError::InvalidToken),
        }
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
