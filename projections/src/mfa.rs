//! The `mfa` projection: `user_mfa` for the MFA status endpoint, and `mfa_challenges`, which
//! maps the hash of an MFA token to its user for the second step of a login.

use aggregates::user::{MFA_CHALLENGE_MAX_FAILURES, User, UserEvent};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Projection, StoredEvent};

#[derive(Clone, Copy, Debug, Default)]
pub struct MfaProjection;

impl MfaProjection {
    /// Sets the enrolment columns and the recovery code count of one user.
    async fn set_status(
        connection: &mut PgConnection,
        user_id: Uuid,
        enrolled_at: Option<DateTime<Utc>>,
        recovery_codes: i32,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO user_mfa
                (user_id, totp_enabled, enrolled_at, recovery_codes_remaining, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id) DO UPDATE SET
                totp_enabled = EXCLUDED.totp_enabled,
                enrolled_at = EXCLUDED.enrolled_at,
                recovery_codes_remaining = EXCLUDED.recovery_codes_remaining,
                updated_at = EXCLUDED.updated_at",
        )
        .bind(user_id)
        .bind(enrolled_at.is_some())
        .bind(enrolled_at)
        .bind(recovery_codes)
        .bind(at)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    async fn set_recovery_codes(
        connection: &mut PgConnection,
        user_id: Uuid,
        count: i32,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE user_mfa SET recovery_codes_remaining = $2, updated_at = $3
              WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(count)
        .bind(at)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    async fn spend_recovery_code(
        connection: &mut PgConnection,
        user_id: Uuid,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE user_mfa
                SET recovery_codes_remaining = GREATEST(recovery_codes_remaining - 1, 0),
                    updated_at = $2
              WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(at)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    /// Adds a challenge and drops the user's challenges that expired before it was issued.
    async fn insert_challenge(
        connection: &mut PgConnection,
        user_id: Uuid,
        challenge_hash: &str,
        issued_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM mfa_challenges WHERE user_id = $1 AND expires_at <= $2")
            .bind(user_id)
            .bind(issued_at)
            .execute(&mut *connection)
            .await?;
        sqlx::query(
            "INSERT INTO mfa_challenges (challenge_hash, user_id, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (challenge_hash) DO NOTHING",
        )
        .bind(challenge_hash)
        .bind(user_id)
        .bind(expires_at)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    async fn delete_challenge(
        connection: &mut PgConnection,
        challenge_hash: &str,
    ) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM mfa_challenges WHERE challenge_hash = $1")
            .bind(challenge_hash)
            .execute(&mut *connection)
            .await?;
        Ok(())
    }
}

/// Number of codes in a stored set; an erased set counts as none.
fn code_count(set: &aggregates::personal::Personal<Vec<String>>) -> i32 {
    set.known()
        .map_or(0, |hashes| i32::try_from(hashes.len()).unwrap_or(i32::MAX))
}

#[async_trait]
impl Projection for MfaProjection {
    fn name(&self) -> &'static str {
        "mfa"
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
            UserEvent::TotpEnabled(enabled) => {
                let count = code_count(&enabled.recovery_code_hashes);
                let at = enabled.enabled_at;
                Self::set_status(connection, user_id, Some(at), count, at).await
            }
            UserEvent::RecoveryCodeUsed(used) => {
                Self::spend_recovery_code(connection, user_id, used.used_at).await
            }
            UserEvent::RecoveryCodesRegenerated(regenerated) => {
                let count = code_count(&regenerated.recovery_code_hashes);
                let at = regenerated.regenerated_at;
                Self::set_recovery_codes(connection, user_id, count, at).await
            }
            UserEvent::TotpDisabled(disabled) => {
                sqlx::query("DELETE FROM mfa_challenges WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *connection)
                    .await?;
                Self::set_status(connection, user_id, None, 0, disabled.disabled_at).await
            }
            UserEvent::MfaChallengeIssued(issued) => {
                Self::insert_challenge(
                    connection,
                    user_id,
                    &issued.challenge_hash,
                    issued.issued_at,
                    issued.expires_at,
                )
                .await
            }
            UserEvent::MfaChallengeFailed(failed)
                if failed.failures >= MFA_CHALLENGE_MAX_FAILURES =>
            {
                Self::delete_challenge(connection, &failed.challenge_hash).await
            }
            UserEvent::MfaChallengeCompleted(completed) => {
                Self::delete_challenge(connection, &completed.challenge_hash).await
            }
            _ => Ok(()),
        }
    }

    async fn reset(&self, connection: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("TRUNCATE user_mfa, mfa_challenges")
            .execute(&mut *connection)
            .await?;
        Ok(())
    }
}
