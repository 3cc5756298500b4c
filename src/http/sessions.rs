//! Session management: list a user's signed-in devices and end any of them.

use aggregates::session::{RevocationReason, SessionCommand, SessionError};
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::envelope::{ErrorBody, Success, SuccessBody};
use super::error::ApiError;
use super::extract::{Caller, ClientContext, require_complete};
use crate::store::CommandError;

/// Scope an API key needs to list or end a user's sessions.
const SCOPE: &str = "sessions:manage";

/// One open session.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub session_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// Last request, to the minute.
    pub last_seen_at: DateTime<Utc>,
    /// End of the absolute lifetime.
    pub expires_at: DateTime<Utc>,
    /// When the session ends without further requests.
    pub idle_expires_at: DateTime<Utc>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    /// Whether this session authenticates the request.
    pub current: bool,
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

type SessionRow = (
    Uuid,
    DateTime<Utc>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<String>,
    Option<String>,
);

/// Ids of the user's sessions that are neither revoked nor expired, newest first.
async fn open_sessions(state: &AppState, user_id: Uuid) -> Result<Vec<SessionRow>, ApiError> {
    require_complete(state, &["sessions", "profiles"]).await?;
    let now = state.clock.now();
    let idle_cutoff = now - state.settings.session_idle_timeout;
    let rows = sqlx::query_as::<_, SessionRow>(
        "SELECT s.session_id, s.created_at, GREATEST(s.created_at, a.last_seen_at),
                s.expires_at, s.ip_address, s.user_agent
           FROM sessions s
           JOIN user_profiles p USING (user_id)
           LEFT JOIN session_activity a USING (session_id)
          WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2
            AND GREATEST(s.created_at, a.last_seen_at) > $3
            AND (s.credentials_version IS NULL
                 OR s.credentials_version >= p.sessions_valid_from
                 OR s.session_id = p.sessions_kept_session_id)
          ORDER BY s.created_at DESC",
    )
    .bind(user_id)
    .bind(now)
    .bind(idle_cutoff)
    .fetch_all(&state.pool)
    .await?;
    Ok(rows)
}

/// Lists the user's open sessions. Bearer token of that user, or an API key with
/// `sessions:manage`.
#[utoipa::path(
    get, path = "/users/{userId}/sessions", tag = "sessions",
    params(("userId" = String, Path, description = "The user's id, or `me`")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Open sessions, newest first", body = SuccessBody<SessionList>),
        (status = 401, description = "AUTH_001 missing or invalid credential", body = ErrorBody),
        (status = 403, description = "AUTH_002 another user, or a key without the scope", body = ErrorBody),
    )
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Path(segment): Path<String>,
) -> Result<Success<SessionList>, ApiError> {
    let user_id = caller.resolve_user(&segment, SCOPE)?;
    let current = caller.session().map(|(_, session_id)| session_id);

    let idle = state.settings.session_idle_timeout;
    let sessions = open_sessions(&state, user_id)
        .await?
        .into_iter()
        .map(
            |(session_id, created_at, last_seen_at, expires_at, ip_address, user_agent)| {
                SessionView {
                    session_id,
                    created_at,
                    last_seen_at,
                    expires_at,
                    idle_expires_at: (last_seen_at + idle).min(expires_at),
                    ip_address,
                    user_agent,
                    current: current == Some(session_id),
                }
            },
        )
        .collect();
    Ok(Success::ok("Sessions retrieved", SessionList { sessions }))
}

#[derive(Serialize, ToSchema)]
pub struct RevokedSession {
    pub session_id: Uuid,
    pub revoked: bool,
}

/// Ends one session with a `SessionRevoked` event; an already ended one stays ended.
async fn revoke(
    state: &AppState,
    client: &ClientContext,
    caller: &Caller,
    user_id: Uuid,
    session_id: Uuid,
    reason: RevocationReason,
) -> Result<(), ApiError> {
    let metadata = client.metadata(caller.actor(), Some(user_id));
    let result = state
        .sessions
        .execute(
            &session_id.to_string(),
            || SessionCommand::Revoke { reason },
            &metadata,
        )
        .await;
    match result {
        Ok(_) | Err(CommandError::Rejected(SessionError::AlreadyRevoked)) => Ok(()),
        Err(error) => Err(ApiError::from_command(error, |rejection| match rejection {
            SessionError::NotFound => ApiError::Forbidden,
            other => ApiError::Internal(other.into()),
        })),
    }
}

/// Ends one of the user's sessions; it is refused on its very next request. A session id
/// that is not the user's is AUTH_002, and that session keeps working.
#[utoipa::path(
    delete, path = "/users/{userId}/sessions/{sessionId}", tag = "sessions",
    params(
        ("userId" = String, Path, description = "The user's id, or `me`"),
        ("sessionId" = Uuid, Path, description = "The session to end"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The session is ended", body = SuccessBody<RevokedSession>),
        (status = 401, description = "AUTH_001 missing or invalid credential", body = ErrorBody),
        (status = 403, description = "AUTH_002 not this user's session", body = ErrorBody),
    )
)]
pub async fn revoke_session(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    Path((segment, session_id)): Path<(String, String)>,
) -> Result<Success<RevokedSession>, ApiError> {
    let user_id = caller.resolve_user(&segment, SCOPE)?;
    let session_id: Uuid = session_id.parse().map_err(|_| ApiError::Forbidden)?;

    require_complete(&state, &["sessions"]).await?;
    let owner: Option<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(&state.pool)
            .await?;
    if owner != Some(user_id) {
        return Err(ApiError::Forbidden);
    }

    revoke(
        &state,
        &client,
        &caller,
        user_id,
        session_id,
        RevocationReason::Revoked,
    )
    .await?;
    Ok(Success::ok(
        "Session revoked",
        RevokedSession {
            session_id,
            revoked: true,
        },
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevokeAllQuery {
    /// Keep the session that makes this request (default true).
    keep_current: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct RevokedCount {
    pub revoked: usize,
}

/// Ends every open session of the user except, by default, the one making the request.
#[utoipa::path(
    delete, path = "/users/{userId}/sessions", tag = "sessions",
    params(("userId" = String, Path, description = "The user's id, or `me`"), RevokeAllQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Number of sessions ended", body = SuccessBody<RevokedCount>),
        (status = 400, description = "VAL_001 invalid query", body = ErrorBody),
        (status = 401, description = "AUTH_001 missing or invalid credential", body = ErrorBody),
        (status = 403, description = "AUTH_002 another user, or a key without the scope", body = ErrorBody),
    )
)]
pub async fn revoke_sessions(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    Path(segment): Path<String>,
    query: Result<Query<RevokeAllQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Success<RevokedCount>, ApiError> {
    let user_id = caller.resolve_user(&segment, SCOPE)?;
    let Query(query) =
        query.map_err(|_| ApiError::invalid("keep_current must be true or false"))?;
    let keep = match (query.keep_current.unwrap_or(true), caller.session()) {
        (true, Some((owner, session_id))) if owner == user_id => Some(session_id),
        _ => None,
    };

    let mut revoked = 0;
    for (session_id, ..) in open_sessions(&state, user_id).await? {
        if Some(session_id) == keep {
            continue;
        }
        revoke(
            &state,
            &client,
            &caller,
            user_id,
            session_id,
            RevocationReason::Revoked,
        )
        .await?;
        revoked += 1;
    }
    Ok(Success::ok("Sessions revoked", RevokedCount { revoked }))
}
