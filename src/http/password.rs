//! Password change and reset. A change needs the current password and ends every other
//! session. A reset needs a mailed single-use token and ends every session. It opens no new
//! session, so that it can never stand in for a second factor.

use std::time::Duration;

use aggregates::user::{ChangePassword, UserCommand, UserError};
use aggregates::values::Email;
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
use super::users::user_rejection;
use crate::crypto::{TokenKind, hash_token, issue_token};
use crate::store::CommandError;

/// Shortest time a reset request takes, whether or not the address has an account, so that
/// the response time does not reveal which.
const RESET_REQUEST_FLOOR: Duration = Duration::from_millis(400);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[schema(value_type = String, format = Password)]
    current_password: Option<SecretString>,
    #[schema(value_type = String, format = Password)]
    new_password: Option<SecretString>,
}

impl RequestBody for ChangePasswordRequest {
    const REQUIRED: &'static [&'static str] = &["current_password", "new_password"];
}

#[derive(Serialize, ToSchema)]
pub struct PasswordChangedView {
    pub password_changed: bool,
    pub changed_at: DateTime<Utc>,
}

fn secret(value: Option<SecretString>) -> SecretString {
    value.unwrap_or_else(|| SecretString::from(""))
}

/// Replaces the password, given the current one. Every other session of the user ends; the
/// calling session stays open. Bearer token of that user, or an API key with `users:write`.
#[utoipa::path(
    post, path = "/users/{userId}/password/change", tag = "auth",
    params(("userId" = String, Path, description = "The user's id, or `me`")),
    request_body = ChangePasswordRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The password is changed", body = SuccessBody<PasswordChangedView>),
        (status = 400, description = "VAL_001 the new password breaks the policy", body = ErrorBody),
        (status = 401, description = "AUTH_001 invalid token, AUTH_003 wrong current password", body = ErrorBody),
        (status = 403, description = "AUTH_002 another user, USER_002 suspended", body = ErrorBody),
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    UserPath(segment): UserPath,
    ApiJson(request): ApiJson<ChangePasswordRequest>,
) -> Result<Success<PasswordChangedView>, ApiError> {
    let user_id = caller.resolve_user(&segment, "users:write")?;
    let command = ChangePassword {
        current_password: secret(request.current_password),
        new_password: secret(request.new_password),
        session_id: caller.session().map(|(_, session_id)| session_id),
    };

    let metadata = client.metadata(caller.actor(), None);
    state
        .users
        .execute(
            &user_id.to_string(),
            || UserCommand::ChangePassword(command.clone()),
            &metadata,
        )
        .await
        .map_err(|error| ApiError::from_command(error, user_rejection))?;

    tracing::info!(%user_id, "password changed");
    Ok(Success::ok(
        "Password changed",
        PasswordChangedView {
            password_changed: true,
            changed_at: state.clock.now(),
        },
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    email: Option<String>,
}

impl RequestBody for ResetRequest {
    const REQUIRED: &'static [&'static str] = &["email"];
}

#[derive(Serialize, ToSchema)]
pub struct ResetAccepted {
    /// Always `accepted`: the response does not reveal whether the address has an account.
    pub status: &'static str,
}

/// Mails a reset link to the address if an active account has it. The response and its timing
/// are the same either way. No credential.
#[utoipa::path(
    post, path = "/users/password/reset", tag = "auth",
    request_body = ResetRequest,
    responses(
        (status = 202, description = "If the address has an account, a reset link is mailed", body = SuccessBody<ResetAccepted>),
        (status = 400, description = "VAL_001 not an email address, VAL_002 missing", body = ErrorBody),
    )
)]
pub async fn request_password_reset(
    State(state): State<AppState>,
    client: ClientContext,
    ApiJson(request): ApiJson<ResetRequest>,
) -> Result<Success<ResetAccepted>, ApiError> {
    let started = tokio::time::Instant::now();
    let email = Email::parse(request.email.as_deref().unwrap_or_default())
        .map_err(|error| ApiError::invalid_fields(&[error]))?;

    // Both paths draw a token and look the address up; only a known one appends an event.
    let issued = issue_token(TokenKind::PasswordReset);
    let user_id: Option<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM email_claims WHERE email_index = $1")
            .bind(aggregates::services::BlindIndex::email_index(
                state.indexer.as_ref(),
                &email,
            ))
            .fetch_optional(&state.pool)
            .await?;

    if let Some(user_id) = user_id {
        let metadata = client.metadata("anonymous".to_owned(), Some(user_id));
        let token = issued.token.expose_secret().to_owned();
        let result = state
            .users
            .execute(
                &user_id.to_string(),
                || UserCommand::RequestPasswordReset {
                    token: token.clone(),
                    token_hash: issued.hash.clone(),
                    lifetime: state.settings.reset_lifetime,
                },
                &metadata,
            )
            .await;
        match result {
            // A suspended or missing account gets no mail and the same response.
            Ok(_) | Err(CommandError::Rejected(_)) => {}
            Err(error) => {
                return Err(ApiError::from_command(error, user_rejection));
            }
        }
    }

    tokio::time::sleep_until(started + RESET_REQUEST_FLOOR).await;
    Ok(Success {
        status: StatusCode::ACCEPTED,
        message: "If the address belongs to an account, a reset link has been sent",
        data: ResetAccepted { status: "accepted" },
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmResetRequest {
    #[schema(value_type = String)]
    token: Option<SecretString>,
    #[schema(value_type = String, format = Password)]
    new_password: Option<SecretString>,
}

impl RequestBody for ConfirmResetRequest {
    const REQUIRED: &'static [&'static str] = &["token", "new_password"];
}

#[derive(Serialize, ToSchema)]
pub struct PasswordResetView {
    pub password_reset: bool,
    /// Always true: every session of the user has ended. Log in with the new password.
    pub sessions_revoked: bool,
}

/// Sets a new password with a mailed reset token, which then stops working. Every session
/// ends and none is opened. No credential: the token is one.
#[utoipa::path(
    post, path = "/users/password/reset/confirm", tag = "auth",
    request_body = ConfirmResetRequest,
    responses(
        (status = 200, description = "The password is reset", body = SuccessBody<PasswordResetView>),
        (status = 400, description = "VAL_001 the new password breaks the policy", body = ErrorBody),
        (status = 401, description = "AUTH_001 unknown, used, expired or replaced token", body = ErrorBody),
        (status = 403, description = "USER_002 the account is suspended", body = ErrorBody),
    )
)]
pub async fn confirm_password_reset(
    State(state): State<AppState>,
    client: ClientContext,
    ApiJson(request): ApiJson<ConfirmResetRequest>,
) -> Result<Success<PasswordResetView>, ApiError> {
    let token = secret(request.token);
    let new_password = secret(request.new_password);
    let token_hash = hash_token(token.expose_secret());
    let user_id: Option<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM password_resets WHERE token_hash = $1")
            .bind(&token_hash)
            .fetch_optional(&state.pool)
            .await?;
    let Some(user_id) = user_id else {
        return Err(ApiError::InvalidToken);
    };

    let metadata = client.metadata("anonymous".to_owned(), Some(user_id));
    state
        .users
        .execute(
            &user_id.to_string(),
            || UserCommand::ConfirmPasswordReset {
                token_hash: token_hash.clone(),
                new_password: new_password.clone(),
            },
            &metadata,
        )
        .await
        .map_err(|error| {
            ApiError::from_command(error, |rejection| match rejection {
                UserError::NotFound => ApiError::InvalidToken,
                other => user_rejection(other),
            })
        })?;

    tracing::info!(%user_id, "password reset");
    Ok(Success::ok(
        "Password reset; log in with the new password",
        PasswordResetView {
            password_reset: true,
            sessions_revoked: true,
        },
    ))
}
