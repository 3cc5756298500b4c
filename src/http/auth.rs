//! Login and logout. Login answers the same way, in about the same time, for an unknown
//! address and a wrong password. With TOTP enabled, a right password yields an MFA token
//! instead of a session, and `/auth/login/mfa` (in `mfa.rs`) finishes the login.

use aggregates::services::{BlindIndex, PasswordHasher};
use aggregates::session::{
    RevocationReason, SessionCommand, SessionError, SessionEvent, StartSession,
};
use aggregates::user::{UserCommand, UserError, UserEvent};
use aggregates::values::Email;
use axum::extract::State;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::envelope::{ErrorBody, Success, SuccessBody};
use super::error::ApiError;
use super::extract::{ApiJson, Caller, ClientContext, RequestBody, incomplete, incomplete_error};
use super::users::user_rejection;
use crate::crypto::{TokenKind, issue_token};
use crate::store::CommandError;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: Option<String>,
    #[schema(value_type = String, format = Password)]
    password: Option<SecretString>,
}

impl RequestBody for LoginRequest {
    const REQUIRED: &'static [&'static str] = &["email", "password"];
}

/// A successful login. `mfa_required` is false here. With a second factor enabled a login
/// returns [`MfaRequiredResponse`] instead of a session.
#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    pub expires_at: DateTime<Utc>,
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub mfa_required: bool,
}

/// The first step of a login to an account with TOTP: the token for `/auth/login/mfa`.
#[derive(Serialize, ToSchema)]
pub struct MfaRequiredResponse {
    /// Always true.
    pub mfa_required: bool,
    /// Single use, good only at `/auth/login/mfa`, shown once.
    pub mfa_token: String,
    pub expires_at: DateTime<Utc>,
}

/// Result of a right password: a session, or the second step of the login.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginOutcome {
    Session(LoginResponse),
    MfaRequired(MfaRequiredResponse),
}

struct Credentials {
    user_id: Uuid,
    password_hash: String,
    status: String,
    mfa_enabled: bool,
    /// The user's version that the other fields were read at.
    version: u64,
}

async fn find_credentials(
    state: &AppState,
    email: &Email,
) -> Result<Option<Credentials>, ApiError> {
    // One row whatever the address, so that a partial read model returns 503 for known and
    // unknown addresses alike.
    let (incomplete, user_id, password_hash, status, mfa_enabled, version) = sqlx::query_as::<
        _,
        (
            bool,
            Option<Uuid>,
            Option<String>,
            Option<String>,
            Option<bool>,
            Option<i64>,
        ),
    >(concat!(
        "SELECT ",
        incomplete!("'{profiles}'"),
        ", c.user_id, cr.password_hash, p.status, p.mfa_enabled, p.version
           FROM (SELECT 1) AS one
           LEFT JOIN (email_claims c
                      JOIN user_credentials cr USING (user_id)
                      JOIN user_profiles p USING (user_id))
                  ON c.email_index = $1"
    ))
    .bind(state.indexer.email_index(email))
    .fetch_one(&state.pool)
    .await?;
    if incomplete {
        return Err(incomplete_error("profiles"));
    }
    let (Some(user_id), Some(password_hash), Some(status), Some(mfa_enabled), Some(version)) =
        (user_id, password_hash, status, mfa_enabled, version)
    else {
        return Ok(None);
    };
    Ok(Some(Credentials {
        user_id,
        password_hash,
        status,
        mfa_enabled,
        version: u64::try_from(version).unwrap_or_default(),
    }))
}

/// Checks email and password. Without TOTP it opens a session and returns its token once;
/// with TOTP it returns `mfa_required: true` and an MFA token, and opens no session.
#[utoipa::path(
    post, path = "/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A new session, or an MFA token for the second step", body = SuccessBody<LoginOutcome>),
        (status = 400, description = "VAL_002 missing field", body = ErrorBody),
        (status = 401, description = "AUTH_003 wrong email or password", body = ErrorBody),
        (status = 403, description = "USER_002 the account is suspended", body = ErrorBody),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    client: ClientContext,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Success<LoginOutcome>, ApiError> {
    let password = request.password.unwrap_or_else(|| SecretString::from(""));
    let email = Email::parse(request.email.as_deref().unwrap_or_default()).ok();

    let credentials = match &email {
        Some(email) => find_credentials(&state, email).await?,
        None => None,
    };
    let Some(credentials) = credentials else {
        state.hasher.verify_dummy(&password).await;
        return Err(ApiError::InvalidCredentials);
    };
    let verified = state
        .hasher
        .verify(&password, &credentials.password_hash)
        .await
        .map_err(|error| ApiError::Internal(error.into()))?;
    if !verified {
        return Err(ApiError::InvalidCredentials);
    }
    if credentials.status != "active" {
        return Err(ApiError::Suspended);
    }

    if credentials.mfa_enabled {
        let challenge =
            issue_mfa_challenge(&state, &client, credentials.user_id, credentials.version).await?;
        if let Some(challenge) = challenge {
            return Ok(Success::ok(
                "Password accepted; a second factor is required",
                LoginOutcome::MfaRequired(challenge),
            ));
        }
    }

    let session = start_session(&state, &client, credentials.user_id, credentials.version).await?;
    Ok(Success::ok("Logged in", LoginOutcome::Session(session)))
}

/// Opens the second step of a login whose password was checked at `credentials_version`.
/// Returns `None` when the aggregate finds TOTP off after all (it was disabled since the read
/// model was read), so the login goes on without it.
async fn issue_mfa_challenge(
    state: &AppState,
    client: &ClientContext,
    user_id: Uuid,
    credentials_version: u64,
) -> Result<Option<MfaRequiredResponse>, ApiError> {
    let issued = issue_token(TokenKind::Mfa);
    let metadata = client.metadata(format!("user:{user_id}"), None);
    let result = state
        .users
        .execute_with_events(
            &user_id.to_string(),
            || UserCommand::IssueMfaChallenge {
                challenge_hash: issued.hash.clone(),
                credentials_version,
            },
            &metadata,
        )
        .await;

    let events = match result {
        Ok((_, events)) => events,
        Err(CommandError::Rejected(UserError::TotpNotEnabled)) => return Ok(None),
        Err(error) => return Err(ApiError::from_command(error, user_rejection)),
    };
    let expires_at = events
        .iter()
        .find_map(|event| match event {
            UserEvent::MfaChallengeIssued(issued) => Some(issued.expires_at),
            _ => None,
        })
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no MFA challenge was recorded")))?;
    tracing::info!(%user_id, "password accepted; MFA challenge issued");

    Ok(Some(MfaRequiredResponse {
        mfa_required: true,
        mfa_token: issued.token.expose_secret().to_owned(),
        expires_at,
    }))
}

/// Starts a session for a user whose credentials were all checked at the user's version
/// `credentials_version`, and returns its token. The session is void from the start if a
/// password change, reset or suspension came after that version.
pub(super) async fn start_session(
    state: &AppState,
    client: &ClientContext,
    user_id: Uuid,
    credentials_version: u64,
) -> Result<LoginResponse, ApiError> {
    let session_id = Uuid::now_v7();
    let issued = issue_token(TokenKind::Session);
    let metadata = client.metadata(format!("user:{user_id}"), Some(user_id));
    let start = StartSession {
        session_id,
        user_id,
        token_hash: issued.hash.clone(),
        lifetime: state.settings.session_lifetime,
        ip_address: client.client_ip.map(|ip| ip.to_string()),
        user_agent: client.user_agent.clone(),
        credentials_version,
    };
    let (_, events) = state
        .sessions
        .execute_with_events(
            &session_id.to_string(),
            || SessionCommand::Start(start.clone()),
            &metadata,
        )
        .await
        .map_err(|error| {
            ApiError::from_command(error, |rejection| ApiError::Internal(rejection.into()))
        })?;
    // Taken from the event, not the read model, which may be catching up after a replay.
    let expires_at = events
        .iter()
        .find_map(|event| match event {
            SessionEvent::SessionStarted(started) => Some(started.expires_at),
            SessionEvent::SessionRevoked(_) => None,
        })
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no session start was recorded")))?;
    tracing::info!(%user_id, %session_id, "session started");

    Ok(LoginResponse {
        access_token: issued.token.expose_secret().to_owned(),
        token_type: "Bearer",
        expires_at,
        session_id,
        user_id,
        mfa_required: false,
    })
}

#[derive(Serialize, ToSchema)]
pub struct LogoutResponse {
    pub session_id: Uuid,
    pub revoked: bool,
}

/// Revokes the session whose token authenticates the request.
#[utoipa::path(
    post, path = "/auth/logout", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session is revoked", body = SuccessBody<LogoutResponse>),
        (status = 401, description = "AUTH_001 missing or invalid token", body = ErrorBody),
        (status = 403, description = "AUTH_002 an API key has no session to end", body = ErrorBody),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
) -> Result<Success<LogoutResponse>, ApiError> {
    let Some((user_id, session_id)) = caller.session() else {
        return Err(ApiError::Forbidden);
    };
    let metadata = client.metadata(caller.actor(), Some(user_id));
    state
        .sessions
        .execute(
            &session_id.to_string(),
            || SessionCommand::Revoke {
                reason: RevocationReason::Logout,
            },
            &metadata,
        )
        .await
        .map_err(|error| {
            ApiError::from_command(error, |rejection| match rejection {
                SessionError::AlreadyRevoked | SessionError::NotFound => ApiError::InvalidToken,
                SessionError::AlreadyStarted => ApiError::Internal(rejection.into()),
            })
        })?;

    Ok(Success::ok(
        "Logged out",
        LogoutResponse {
            session_id,
            revoked: true,
        },
    ))
}
