//! The `verifications` projection: the open address verification of each account and its
//! working reset token, by hash, so that a token alone finds its account.

use aggregates::user::{User, UserEvent};
use async_trait::async_trait;
use cqrs_es::Aggregate;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Projection, StoredEvent};

#[derive(Clone, Copy, Debug, Default)]
pub struct VerificationsProjection;

#[async_trait]
impl Projection for VerificationsProjection {
    fn name(&self) -> &'static str {
        "verifications"
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> anyhow::Result<()> {
        if event.aggregate_type != User::TYPE {
            return Ok(());
        }
        let user_id: Uuid = event.aggregate_id.parse()?;
        let payload: UserEvent = serde_json::from_value(event.payload.clone())?;

        match payload {
            UserEvent::UserRegistered(registered) => {
                let Some(verification) = registered.verification else {
                    return Ok(());
                };
                sqlx::query(
                    "INSERT INTO email_verifications
                        (user_id, change_request_id, purpose, method, new_email, expires_at,
                         requested_at)
                     VALUES ($1, $2, 'registration', 'email_code', $3, $4, $5)",
                )
                .bind(user_id)
                .bind(verification.change_request_id)
                .bind(registered.email.known())
                .bind(verification.expires_at)
                .bind(registered.registered_at)
                .execute(&mut *connection)
                .await?;
            }
            UserEvent::EmailVerificationRequested(requested) => {
                let link = requested.method == aggregates::user::VerificationMethod::EmailLink;
                sqlx::query(
                    "INSERT INTO email_verifications
                        (user_id, change_request_id, purpose, method, new_email, token_hash,
                         expires_at, requested_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (user_id) DO UPDATE SET
                        change_request_id = EXCLUDED.change_request_id,
                        purpose = EXCLUDED.purpose, method = EXCLUDED.method,
                        new_email = EXCLUDED.new_email, token_hash = EXCLUDED.token_hash,
                        expires_at = EXCLUDED.expires_at, requested_at = EXCLUDED.requested_at",
                )
                .bind(user_id)
                .bind(requested.change_request_id)
                .bind(serde_json::to_value(requested.purpose)?.as_str())
                .bind(requested.method.as_str())
                .bind(requested.new_email.known())
                .bind(link.then_some(&requested.secret_hash))
                .bind(requested.expires_at)
                .bind(requested.requested_at)
                .execute(&mut *connection)
                .await?;
            }
            UserEvent::EmailVerificationFailed(failed) if failed.voided => {
                delete_verification(connection, user_id).await?;
            }
            UserEvent::EmailVerified(verified) => {
                delete_verification(connection, user_id).await?;
                if verified.purpose == aggregates::user::VerificationPurpose::EmailChange {
                    delete_reset(connection, user_id).await?;
                }
            }
            UserEvent::PasswordResetRequested(requested) => {
                sqlx::query(
                    "INSERT INTO password_resets (user_id, token_hash, expires_at)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (user_id) DO UPDATE SET
                        token_hash = EXCLUDED.token_hash, expires_at = EXCLUDED.expires_at",
                )
                .bind(user_id)
                .bind(&requested.token_hash)
                .bind(requested.expires_at)
                .execute(&mut *connection)
                .await?;
            }
            UserEvent::PasswordChanged(_) => {
                delete_reset(connection, user_id).await?;
                // The aggregate voids a pending change of address on a new password.
                sqlx::query(
                    "DELETE FROM email_verifications
                      WHERE user_id = $1 AND purpose = 'email_change'",
                )
                .bind(user_id)
                .execute(&mut *connection)
                .await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn reset(&self, connection: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("TRUNCATE email_verifications, password_resets")
            .execute(&mut *connection)
            .await?;
        Ok(())
    }
}

async fn delete_verification(connection: &mut PgConnection, user_id: Uuid) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM email_verifications WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

async fn delete_reset(connection: &mut PgConnection, user_id: Uuid) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM password_resets WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}
