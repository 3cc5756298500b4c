//! Multi-factor endpoints: TOTP enrolment and removal, recovery codes, the MFA status, and the
//! second step of a login at `/auth/login/mfa`.
//!
//! Enrolment and removal act on the caller's own account only, so they take a session and
//! reject API keys. Every wrong password, TOTP code or recovery code is the same AUTH_003.
//!
//! NOTE: no operator endpoint resets MFA for a user who lost both the device and the recovery
//! codes.

use aggregates::user::{
    CompleteMfaChallenge, DisableTotp, RegenerateRecoveryCodes, SecondFactor, StartTotpSetup,
    UserCommand, UserEvent, VerifyTotpSetup,
};
use axum::extract::State;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::{LoginResponse, start_session};
use super::envelope::{ErrorBody, Success, SuccessBody};
use super::error::ApiError;
use super::extract::{ApiJson, Caller, ClientContext, RequestBody, UserPath};
use super::users::{load_profile, user_rejection};
use crate::config::TotpAccountLabel;
use crate::crypto::{TokenKind, hash_token};
use crate::mfa::{generate_secret, qr_code_data_uri};

/// Longest MFA token looked up, in bytes. Issued tokens are 47 bytes long.
const MFA_TOKEN_MAX_BYTES: usize = 128;

/// Resolves `{userId}` for a caller acting on their own account: a session only.
fn own_account(caller: &Caller, segment: &str) -> Result<Uuid, ApiError> {
    if caller.session().is_none() {
        return Err(ApiError::Forbidden);
    }
    caller.resolve_user(segment, "users:write")
}

/// Builds the second factor from a body that must carry exactly one of `code` and
/// `recovery_code`.
fn second_factor(
    state: &AppState,
    code: Option<String>,
    recovery_code: Option<SecretString>,
) -> Result<SecondFactor, ApiError> {
    match (code, recovery_code) {
        (Some(code), None) => Ok(SecondFactor::Totp(code)),
        (None, Some(recovery_code)) => Ok(SecondFactor::RecoveryCode {
            hash: state.mfa.recovery_code_hash(recovery_code.expose_secret()),
        }),
        (None, None) => Err(ApiError::Missing {
            fields: vec!["code".to_owned(), "recovery_code".to_owned()],
        }),
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "Send either code or recovery_code, not both",
        )),
    }
}

/// MFA status of an account.
#[derive(Serialize, ToSchema)]
pub struct MfaStatus {
    pub totp_enabled: bool,
    pub enrolled_at: Option<DateTime<Utc>>,
    pub recovery_codes_remaining: i32,
}

/// Returns whether TOTP is on and how many recovery codes are left. Bearer token of that user
/// (`{userId}` may be `me`), or an API key with `users:read`.
#[utoipa::path(
    get, path = "/users/{userId}/mfa", tag = "mfa",
    params(("userId" = String, Path, description = "The user's id, or `me`")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The MFA status", body = SuccessBody<MfaStatus>),
        (status = 401, description = "AUTH_001 missing or invalid token", body = ErrorBody),
        (status = 403, description = "AUTH_002 another user's id, USER_002 suspended", body = ErrorBody),
        (status = 404, description = "USER_001 no such user", body = ErrorBody),
    )
)]
pub async fn get_mfa_status(
    State(state): State<AppState>,
    caller: Caller,
    UserPath(segment): UserPath,
) -> Result<Success<MfaStatus>, ApiError> {
    let user_id = caller.resolve_user(&segment, "users:read")?;
    let row = sqlx::query_as::<_, (Option<bool>, Option<DateTime<Utc>>, Option<i32>)>(
        "SELECT m.totp_enabled, m.enrolled_at, m.recovery_codes_remaining
           FROM user_profiles p LEFT JOIN user_mfa m USING (user_id)
          WHERE p.user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(&state.pool)
    .await?;

    let Some((enabled, enrolled_at, remaining)) = row else {
        return Err(ApiError::UserNotFound);
    };
    Ok(Success::ok(
        "MFA status retrieved",
        MfaStatus {
            totp_enabled: enabled.unwrap_or(false),
            enrolled_at,
            recovery_codes_remaining: remaining.unwrap_or(0),
        },
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpSetupRequest {
    #[schema(value_type = String, format = Password)]
    current_password: Option<SecretString>,
}

impl RequestBody for TotpSetupRequest {
    const REQUIRED: &'static [&'static str] = &["current_password"];
}

/// A new TOTP secret, shown once, in the three forms authenticator apps take.
#[derive(Serialize, ToSchema)]
pub struct TotpSetupResponse {
    /// Base32 (RFC 4648, no padding), for typing into an app.
    pub secret: String,
    pub otpauth_uri: String,
    /// The `otpauth_uri` as a QR code, a `data:image/png;base64,` URI.
    pub qr_code: String,
    /// After this the setup is void and must be started again.
    pub expires_at: DateTime<Utc>,
}

/// Starts TOTP enrolment: issues a secret that counts only after `/mfa/totp/verify` accepts a
/// code from it. A new setup replaces an unverified one; a setup expires after 10 minutes.
/// Bearer token of that user.
#[utoipa::path(
    post, path = "/users/{userId}/mfa/totp/setup", tag = "mfa",
    params(("userId" = String, Path, description = "The user's id, or `me`")),
    request_body = TotpSetupRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new secret", body = SuccessBody<TotpSetupResponse>),
        (status = 400, description = "VAL_001 TOTP already enabled or wrong type, VAL_002 missing field", body = ErrorBody),
        (status = 401, description = "AUTH_001 missing or invalid token, AUTH_003 wrong password", body = ErrorBody),
        (status = 403, description = "AUTH_002 another user or an API key, USER_002 suspended", body = ErrorBody),
    )
)]
pub async fn start_totp_setup(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    UserPath(segment): UserPath,
    ApiJson(request): ApiJson<TotpSetupRequest>,
) -> Result<Success<TotpSetupResponse>, ApiError> {
    let user_id = own_account(&caller, &segment)?;
    let current_password = request
        .current_password
        .unwrap_or_else(|| SecretString::from(""));
    let secret = generate_secret();

    let metadata = client.metadata(caller.actor(), None);
    let (_, events) = state
        .users
        .execute_with_events(
            &user_id.to_string(),
            || {
                UserCommand::StartTotpSetup(StartTotpSetup {
                    secret: secret.clone(),
                    current_password: current_password.clone(),
                })
            },
            &metadata,
        )
        .await
        .map_err(|error| ApiError::from_command(error, user_rejection))?;
    let expires_at = events
        .iter()
        .find_map(|event| match event {
            UserEvent::TotpSetupStarted(started) => Some(started.expires_at),
            _ => None,
        })
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no TOTP setup was recorded")))?;

    let account = match state.mfa.account_label() {
        TotpAccountLabel::Email => load_profile(&state, user_id)
            .await?
            .email
            .unwrap_or_else(|| user_id.to_string()),
        TotpAccountLabel::UserId => user_id.to_string(),
    };
    let otpauth_uri = state.mfa.otpauth_uri(&account, secret.expose_secret());
    let qr_code = qr_code_data_uri(&otpauth_uri)?;
    tracing::info!(%user_id, "TOTP setup started");

    Ok(Success::ok(
        "Scan the QR code, then verify a code to enable TOTP",
        TotpSetupResponse {
            secret: secret.expose_secret().to_owned(),
            otpauth_uri,
            qr_code,
            expires_at,
        },
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCodeRequest {
    /// Six digits from the authenticator app.
    code: Option<String>,
}

impl RequestBody for TotpCodeRequest {
    const REQUIRED: &'static [&'static str] = &["code"];
}

/// TOTP is on; the recovery codes are shown this once.
#[derive(Serialize, ToSchema)]
pub struct TotpEnabledResponse {
    pub totp_enabled: bool,
    pub recovery_codes: Vec<String>,
}

/// Enables TOTP when `code` comes from the pending secret; that code cannot be used again.
/// Returns ten single-use recovery codes, shown once. Bearer token of that user.
#[utoipa::path(
    post, path = "/users/{userId}/mfa/totp/verify", tag = "mfa",
    params(("userId" = String, Path, description = "The user's id, or `me`")),
    request_body = TotpCodeRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "TOTP is enabled", body = SuccessBody<TotpEnabledResponse>),
        (status = 400, description = "VAL_001 no pending setup or wrong type, VAL_002 missing field", body = ErrorBody),
        (status = 401, description = "AUTH_001 missing or invalid token, AUTH_003 wrong code", body = ErrorBody),
        (status = 403, description = "AUTH_002 another user or an API key, USER_002 suspended", body = ErrorBody),
    )
)]
pub async fn verify_totp_setup(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    UserPath(segment): UserPath,
    ApiJson(request): ApiJson<TotpCodeRequest>,
) -> Result<Success<TotpEnabledResponse>, ApiError> {
    let user_id = own_account(&caller, &segment)?;
    let code = request.code.unwrap_or_default();
    let recovery_codes = state.mfa.generate_recovery_codes();

    let metadata = client.metadata(caller.actor(), None);
    state
        .users
        .execute(
            &user_id.to_string(),
            || {
                UserCommand::VerifyTotpSetup(VerifyTotpSetup {
                    code: code.clone(),
                    recovery_code_hashes: recovery_codes.hashes.clone(),
                })
            },
            &metadata,
        )
        .await
        .map_err(|error| ApiError::from_command(error, user_rejection))?;
    tracing::info!(%user_id, "TOTP enabled");

    Ok(Success::ok(
        "TOTP enabled; store the recovery codes now, they are not shown again",
        TotpEnabledResponse {
            totp_enabled: true,
            recovery_codes: recovery_codes.codes,
        },
    ))
}

/// A new set of recovery codes, shown once.
#[derive(Serialize, ToSchema)]
pub struct RecoveryCodesResponse {
    pub recovery_codes: Vec<String>,
}

/// Replaces the recovery codes after a valid TOTP code; every code of the old set stops
/// working. Bearer token of that user.
#[utoipa::path(
    post, path = "/users/{userId}/mfa/recovery-codes", tag = "mfa",
    params(("userId" = String, Path, description = "The user's id, or `me`")),
    request_body = TotpCodeRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new recovery codes", body = SuccessBody<RecoveryCodesResponse>),
        (status = 400, description = "VAL_001 TOTP not enabled or wrong type, VAL_002 missing field", body = ErrorBody),
        (status = 401, description = "AUTH_001 missing or invalid token, AUTH_003 wrong code", body = ErrorBody),
        (status = 403, description = "AUTH_002 another user or an API key, USER_002 suspended", body = ErrorBody),
    )
)]
pub async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    UserPath(segment): UserPath,
    ApiJson(request): ApiJson<TotpCodeRequest>,
) -> Result<Success<RecoveryCodesResponse>, ApiError> {
    let user_id = own_account(&caller, &segment)?;
    let code = request.code.unwrap_or_default();
    let recovery_codes = state.mfa.generate_recovery_codes();

    let metadata = client.metadata(caller.actor(), None);
    state
        .users
        .execute(
            &user_id.to_string(),
            || {
                UserCommand::RegenerateRecoveryCodes(RegenerateRecoveryCodes {
                    code: code.clone(),
                    recovery_code_hashes: recovery_codes.hashes.clone(),
                })
            },
            &metadata,
        )
        .await
        .map_err(|error| ApiError::from_command(error, user_rejection))?;
    tracing::info!(%user_id, "recovery codes regenerated");

    Ok(Success::ok(
        "Recovery codes replaced; the old ones no longer work",
        RecoveryCodesResponse {
            recovery_codes: recovery_codes.codes,
        },
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpDisableRequest {
    #[schema(value_type = String, format = Password)]
    current_password: Option<SecretString>,
    /// A TOTP code; send this or `recovery_code`.
    code: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    recovery_code: Option<SecretString>,
}

impl RequestBody for TotpDisableRequest {
    const REQUIRED: &'static [&'static str] = &["current_password"];
}

#[derive(Serialize, ToSchema)]
pub struct TotpDisabledResponse {
    /// Always false.
    pub totp_enabled: bool,
}

/// Turns TOTP off after the password and a TOTP or recovery code; the secret, the recovery
/// codes and open MFA tokens become void. Bearer token of that user.
#[utoipa::path(
    post, path = "/users/{userId}/mfa/totp/disable", tag = "mfa",
    params(("userId" = String, Path, description = "The user's id, or `me`")),
    request_body = TotpDisableRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "TOTP is disabled", body = SuccessBody<TotpDisabledResponse>),
        (status = 400, description = "VAL_001 TOTP not enabled, both factors or wrong type, VAL_002 missing field", body = ErrorBody),
        (status = 401, description = "AUTH_001 missing or invalid token, AUTH_003 wrong password or code", body = ErrorBody),
        (status = 403, description = "AUTH_002 another user or an API key, USER_002 suspended", body = ErrorBody),
    )
)]
pub async fn disable_totp(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    UserPath(segment): UserPath,
    ApiJson(request): ApiJson<TotpDisableRequest>,
) -> Result<Success<TotpDisabledResponse>, ApiError> {
    let user_id = own_account(&caller, &segment)?;
    let factor = second_factor(&state, request.code, request.recovery_code)?;
    let current_password = request
        .current_password
        .unwrap_or_else(|| SecretString::from(""));

    let metadata = client.metadata(caller.actor(), None);
    state
        .users
        .execute(
            &user_id.to_string(),
            || {
                UserCommand::DisableTotp(DisableTotp {
                    current_password: current_password.clone(),
                    factor: factor.clone(),
                })
            },
            &metadata,
        )
        .await
        .map_err(|error| ApiError::from_command(error, user_rejection))?;
    tracing::info!(%user_id, "TOTP disabled");

    Ok(Success::ok(
        "TOTP disabled",
        TotpDisabledResponse {
            totp_enabled: false,
        },
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaLoginRequest {
    /// The token from `/auth/login`.
    #[schema(value_type = String, format = Password)]
    mfa_token: Option<SecretString>,
    /// A TOTP code; send this or `recovery_code`.
    code: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    recovery_code: Option<SecretString>,
}

impl RequestBody for MfaLoginRequest {
    const REQUIRED: &'static [&'static str] = &["mfa_token"];
}

/// Finds the user whose open login challenge has this token.
async fn challenge_owner(state: &AppState, token: &str) -> Result<Uuid, ApiError> {
    let well_formed =
        token.len() <= MFA_TOKEN_MAX_BYTES && token.starts_with(TokenKind::Mfa.prefix());
    if !well_formed {
        return Err(ApiError::InvalidToken);
    }
    sqlx::query_scalar("SELECT user_id FROM mfa_challenges WHERE challenge_hash = $1")
        .bind(hash_token(token))
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::InvalidToken)
}

/// Finishes a login with the MFA token from `/auth/login` and a TOTP or recovery code, and
/// returns what a full login returns. The token is single use and void after five wrong codes or
/// five minutes. No credential header is needed: the MFA token is the credential.
#[utoipa::path(
    post, path = "/auth/login/mfa", tag = "auth",
    request_body = MfaLoginRequest,
    responses(
        (status = 200, description = "A new session", body = SuccessBody<LoginResponse>),
        (status = 400, description = "VAL_001 both factors or wrong type, VAL_002 missing field", body = ErrorBody),
        (status = 401, description = "AUTH_001 invalid, expired or used MFA token, AUTH_003 wrong code", body = ErrorBody),
        (status = 403, description = "USER_002 the account is suspended", body = ErrorBody),
        (status = 409, description = "CONFLICT_001 too many concurrent attempts; retry", body = ErrorBody),
    )
)]
pub async fn login_mfa(
    State(state): State<AppState>,
    client: ClientContext,
    ApiJson(request): ApiJson<MfaLoginRequest>,
) -> Result<Success<LoginResponse>, ApiError> {
    let factor = second_factor(&state, request.code, request.recovery_code)?;
    let token = request.mfa_token.unwrap_or_else(|| SecretString::from(""));
    let user_id = challenge_owner(&state, token.expose_secret()).await?;
    let challenge_hash = hash_token(token.expose_secret());

    let metadata = client.metadata(format!("user:{user_id}"), None);
    let (outcome, events) = state
        .users
        .execute_with_events(
            &user_id.to_string(),
            || {
                UserCommand::CompleteMfaChallenge(CompleteMfaChallenge {
                    challenge_hash: challenge_hash.clone(),
                    factor: factor.clone(),
                })
            },
            &metadata,
        )
        .await
        .map_err(|error| ApiError::from_command(error, user_rejection))?;

    // The command records a wrong factor as a failed attempt instead of rejecting it, so that
    // the failure counts. Only a completed challenge opens a session.
    let completed = events
        .iter()
        .any(|event| matches!(event, UserEvent::MfaChallengeCompleted(_)));
    if !completed {
        tracing::info!(%user_id, "wrong second factor at login");
        return Err(ApiError::InvalidCredentials);
    }

    // The aggregate checked the factor and the account at this version, and the challenge was
    // issued for a password that no later change or suspension had voided.
    let session = start_session(&state, &client, user_id, outcome.version).await?;
    Ok(Success::ok("Logged in", session))
}
