//! Email verification and change: proving the registered address, moving the account to a new
//! address with a code or a link, the status of a pending change, and resending its code.
//!
//! The current address stays in force until the new one is verified. The claim on the new
//! address is taken, and the old one released, only by the `EmailVerified` event.

use aggregates::services::BlindIndex;
use aggregates::user::{
    RequestEmailChange, User, UserCommand, UserEvent, VerificationMethod, VerificationPurpose,
    VerificationSecrets,
};
use aggregates::values::{Email, FieldError};
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::envelope::{ErrorBody, Success, SuccessBody};
use super::error::ApiError;
use super::extract::{ApiJson, Caller, ClientContext, RequestBody, UserPath};
use super::users::{load_profile, user_rejection};
use crate::crypto::{TokenKind, hash_token, issue_token};

/// Draws a fresh code and link token for a verification of `user_id`'s address.
pub(crate) fn new_secrets(
    state: &AppState,
    user_id: Uuid,
    change_request_id: Uuid,
) -> VerificationSecrets {
    let code = state.codes.generate();
    let code_hash = state.codes.hash(&user_id, &code);
    let issued = issue_token(TokenKind::EmailLink);
    VerificationSecrets {
        change_request_id,
        code,
        code_hash,
        token: issued.token.expose_secret().to_owned(),
        token_hash: issued.hash,
        lifetime: state.settings.verification_lifetime,
    }
}

/// The open verification of an account, as the status and change endpoints show it.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct PendingChange {
    pub change_request_id: Uuid,
    /// `registration` or `email_change`.
    pub purpose: String,
    pub new_email: Option<String>,
    /// `email_code` or `email_link`.
    pub verification_method: String,
    pub verification_expires_at: DateTime<Utc>,
    pub requested_at: DateTime<Utc>,
}

async fn pending_change(
    state: &AppState,
    user_id: Uuid,
) -> Result<Option<PendingChange>, ApiError> {
    let pending = sqlx::query_as::<_, PendingChange>(
        "SELECT change_request_id, purpose, new_email, method AS verification_method,
                expires_at AS verification_expires_at, requested_at
           FROM email_verifications WHERE user_id = $1 AND expires_at > $2",
    )
    .bind(user_id)
    .bind(state.clock.now())
    .fetch_optional(&state.pool)
    .await?;
    Ok(pending)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeEmailRequest {
    new_email: Option<String>,
    #[schema(value_type = String, format = Password)]
    current_password: Option<SecretString>,
    /// `email_code` (the default) or `email_link`.
    verification_method: Option<String>,
}

impl RequestBody for ChangeEmailRequest {
    const REQUIRED: &'static [&'static str] = &["new_email", "current_password"];
}

/// A change waiting for its new address to be verified.
#[derive(Serialize, ToSchema)]
pub struct EmailChangeAccepted {
    pub change_request_id: Uuid,
    /// Always `pending_verification`.
    pub status: &'static str,
    pub new_email: Option<String>,
    pub verification_method: String,
    pub verification_expires_at: DateTime<Utc>,
    /// Always true: the current address works until the new one is verified.
    pub current_email_retained: bool,
}

fn parse_method(raw: Option<&str>) -> Result<VerificationMethod, ApiError> {
    match raw {
        None | Some("email_code") => Ok(VerificationMethod::EmailCode),
        Some("email_link") => Ok(VerificationMethod::EmailLink),
        Some(_) => Err(ApiError::invalid_fields(&[FieldError::new(
            "verification_method",
            "must be email_code or email_link",
        )])),
    }
}

async fn accepted(state: &AppState, user_id: Uuid) -> Result<EmailChangeAccepted, ApiError> {
    let pending = pending_change(state, user_id).await?.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "the verification request was not projected"
        ))
    })?;
    Ok(EmailChangeAccepted {
        change_request_id: pending.change_request_id,
        status: "pending_verification",
        new_email: pending.new_email,
        verification_method: pending.verification_method,
        verification_expires_at: pending.verification_expires_at,
        current_email_retained: true,
    })
}

/// Starts moving the account to a new address and mails a code or link to it. The current
/// password is required; a newer request replaces this one. Bearer token of that user, or an
/// API key with `users:write`.
#[utoipa::path(
    post, path = "/users/{userId}/email/change", tag = "users",
    params(("userId" = String, Path, description = "The user's id, or `me`")),
    request_body = ChangeEmailRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "The new address must now be verified", body = SuccessBody<EmailChangeAccepted>),
        (status = 400, description = "VAL_001 invalid address or method, VAL_002 missing field", body = ErrorBody),
        (status = 401, description = "AUTH_001 invalid token, AUTH_003 wrong current password", body = ErrorBody),
        (status = 403, description = "AUTH_002 another user, USER_002 suspended", body = ErrorBody),
        (status = 409, description = "USER_003 another account has the address", body = ErrorBody),
    )
)]
pub async fn change_email(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    UserPath(segment): UserPath,
    ApiJson(request): ApiJson<ChangeEmailRequest>,
) -> Result<Success<EmailChangeAccepted>, ApiError> {
    let user_id = caller.resolve_user(&segment, "users:write")?;
    let new_email = Email::parse(request.new_email.as_deref().unwrap_or_default())
        .map_err(|error| ApiError::invalid_fields(&[FieldError::new("new_email", error.reason)]))?;
    let method = parse_method(request.verification_method.as_deref())?;
    let current_password = request
        .current_password
        .unwrap_or_else(|| SecretString::from(""));

    let holder: Option<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM email_claims WHERE email_index = $1")
            .bind(BlindIndex::email_index(state.indexer.as_ref(), &new_email))
            .fetch_optional(&state.pool)
            .await?;
    let new_email_claimed = holder.is_some_and(|holder| holder != user_id);

    let secrets = new_secrets(&state, user_id, Uuid::now_v7());
    let metadata = client.metadata(caller.actor(), None);
    state
        .users
        .execute(
            &user_id.to_string(),
            || {
                UserCommand::RequestEmailChange(RequestEmailChange {
                    new_email: new_email.clone(),
                    current_password: current_password.clone(),
                    method,
                    secrets: secrets.clone(),
                    new_email_claimed,
                })
            },
            &metadata,
        )
        .await
        .map_err(|error| ApiError::from_command(error, user_rejection))?;

    Ok(Success {
        status: StatusCode::ACCEPTED,
        message: "Verification sent to the new address",
        data: accepted(&state, user_id).await?,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmailRequest {
    change_request_id: Option<Uuid>,
    #[schema(value_type = String)]
    verification_code: Option<SecretString>,
}

impl RequestBody for VerifyEmailRequest {
    const REQUIRED: &'static [&'static str] = &["change_request_id", "verification_code"];
}

/// The outcome of a verified address.
#[derive(Serialize, ToSchema)]
pub struct EmailVerifiedView {
    pub email_verified: bool,
    pub new_email: Option<String>,
    pub changed_at: DateTime<Utc>,
    /// Whether a notice was queued for the address that was replaced.
    pub notification_sent: bool,
}

/// Reads what the command appended: `Ok` with the verification, or AUTH_003 when the event it
/// wrote records a wrong code. The address comes from the aggregate's state after the command,
/// not from the read model, which may not have it yet.
fn verification_outcome(events: &[UserEvent], user: &User) -> Result<EmailVerifiedView, ApiError> {
    let verified = events
        .iter()
        .find_map(|event| match event {
            UserEvent::EmailVerified(verified) => Some(verified),
            _ => None,
        })
        .ok_or(ApiError::InvalidCredentials)?;
    Ok(EmailVerifiedView {
        email_verified: true,
        new_email: user.email().map(str::to_owned),
        changed_at: verified.verified_at,
        notification_sent: verified.purpose == VerificationPurpose::EmailChange,
    })
}

/// Verifies an address with the code mailed for `change_request_id`. Five wrong codes void the
/// request. Bearer token of that user, or an API key with `users:write`.
#[utoipa::path(
    post, path = "/users/{userId}/email/verify", tag = "users",
    params(("userId" = String, Path, description = "The user's id, or `me`")),
    request_body = VerifyEmailRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The address is verified and in force", body = SuccessBody<EmailVerifiedView>),
        (status = 401, description = "AUTH_003 wrong, expired or void code", body = ErrorBody),
        (status = 409, description = "USER_003 the new address was taken meanwhile", body = ErrorBody),
    )
)]
pub async fn verify_email(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    UserPath(segment): UserPath,
    ApiJson(request): ApiJson<VerifyEmailRequest>,
) -> Result<Success<EmailVerifiedView>, ApiError> {
    let user_id = caller.resolve_user(&segment, "users:write")?;
    let change_request_id = request.change_request_id.unwrap_or_default();
    let code = request
        .verification_code
        .unwrap_or_else(|| SecretString::from(""));
    let code_hash = state.codes.hash(&user_id, code.expose_secret());

    let metadata = client.metadata(caller.actor(), None);
    let (_, events, user) = state
        .users
        .execute_with_state(
            &user_id.to_string(),
            || UserCommand::VerifyEmailCode {
                change_request_id,
                code_hash: code_hash.clone(),
            },
            &metadata,
        )
        .await
        .map_err(|error| ApiError::from_command(error, user_rejection))?;

    let verified = verification_outcome(&events, &user)?;
    Ok(Success::ok("Email address verified", verified))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyLinkRequest {
    #[schema(value_type = String)]
    token: Option<SecretString>,
}

impl RequestBody for VerifyLinkRequest {
    const REQUIRED: &'static [&'static str] = &["token"];
}

/// Verifies an address with the token from a mailed link. No credential: the token is one.
#[utoipa::path(
    post, path = "/users/email/verify-link", tag = "users",
    request_body = VerifyLinkRequest,
    responses(
        (status = 200, description = "The address is verified and in force", body = SuccessBody<EmailVerifiedView>),
        (status = 401, description = "AUTH_001 unknown, expired or void token", body = ErrorBody),
        (status = 403, description = "USER_002 the account is suspended", body = ErrorBody),
        (status = 409, description = "USER_003 the new address was taken meanwhile", body = ErrorBody),
    )
)]
pub async fn verify_email_link(
    State(state): State<AppState>,
    client: ClientContext,
    ApiJson(request): ApiJson<VerifyLinkRequest>,
) -> Result<Success<EmailVerifiedView>, ApiError> {
    let token = request.token.unwrap_or_else(|| SecretString::from(""));
    let token_hash = hash_token(token.expose_secret());
    let user_id: Option<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM email_verifications WHERE token_hash = $1")
            .bind(&token_hash)
            .fetch_optional(&state.pool)
            .await?;
    let Some(user_id) = user_id else {
        return Err(ApiError::InvalidToken);
    };

    let metadata = client.metadata("anonymous".to_owned(), Some(user_id));
    let (_, events, user) = state
        .users
        .execute_with_state(
            &user_id.to_string(),
            || UserCommand::VerifyEmailLink {
                token_hash: token_hash.clone(),
            },
            &metadata,
        )
        .await
        .map_err(|error| ApiError::from_command(error, user_rejection))?;

    let verified = verification_outcome(&events, &user)?;
    Ok(Success::ok("Email address verified", verified))
}

/// The account's address and the verification still open, if any.
#[derive(Serialize, ToSchema)]
pub struct EmailStatus {
    pub email: Option<String>,
    pub email_verified: bool,
    pub pending_change: Option<PendingChange>,
}

/// Shows the address in force and any pending verification. Bearer token of that user, or an
/// API key with `users:read`.
#[utoipa::path(
    get, path = "/users/{userId}/email/status", tag = "users",
    params(("userId" = String, Path, description = "The user's id, or `me`")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The address and the pending change", body = SuccessBody<EmailStatus>),
        (status = 401, description = "AUTH_001 missing or invalid credential", body = ErrorBody),
        (status = 403, description = "AUTH_002 another user's id", body = ErrorBody),
    )
)]
pub async fn get_email_status(
    State(state): State<AppState>,
    caller: Caller,
    UserPath(segment): UserPath,
) -> Result<Success<EmailStatus>, ApiError> {
    let user_id = caller.resolve_user(&segment, "users:read")?;
    let profile = load_profile(&state, user_id).await?;
    let pending_change = pending_change(&state, user_id).await?;
    Ok(Success::ok(
        "Email status retrieved",
        EmailStatus {
            email: profile.email,
            email_verified: profile.email_verified,
            pending_change,
        },
    ))
}

/// Mails a new code (or link) for the pending verification; every older one stops working.
/// Bearer token of that user, or an API key with `users:write`.
#[utoipa::path(
    post, path = "/users/{userId}/email/resend-verification", tag = "users",
    params(("userId" = String, Path, description = "The user's id, or `me`")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "A new code or link is mailed", body = SuccessBody<EmailChangeAccepted>),
        (status = 400, description = "VAL_001 no verification is pending", body = ErrorBody),
        (status = 401, description = "AUTH_001 missing or invalid credential", body = ErrorBody),
    )
)]
pub async fn resend_verification(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    UserPath(segment): UserPath,
) -> Result<Success<EmailChangeAccepted>, ApiError> {
    let user_id = caller.resolve_user(&segment, "users:write")?;
    // The aggregate keeps the pending request's id; this one names a new verification of an
    // address that has none pending.
    let secrets = new_secrets(&state, user_id, Uuid::now_v7());
    let metadata = client.metadata(caller.actor(), None);
    state
        .users
        .execute(
            &user_id.to_string(),
            || UserCommand::ResendVerification(secrets.clone()),
            &metadata,
        )
        .await
        .map_err(|error| ApiError::from_command(error, user_rejection))?;

    Ok(Success {
        status: StatusCode::ACCEPTED,
        message: "Verification sent again",
        data: accepted(&state, user_id).await?,
    })
}
