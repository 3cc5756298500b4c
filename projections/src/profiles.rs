//! The `profiles` projection: `user_profiles` for reads and `user_credentials` for login.

use aggregates::user::{ProfileChanges, User, UserEvent, UserStatus};
use async_trait::async_trait;
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Projection, StoredEvent};

#[derive(Clone, Copy, Debug, Default)]
pub struct ProfilesProjection;

/// One text column of a change set: whether it is present, and its new value.
fn text(change: &Option<aggregates::personal::Personal<Option<String>>>) -> (bool, Option<&str>) {
    match change {
        Some(value) => (true, value.known().and_then(|value| value.as_deref())),
        None => (false, None),
    }
}

impl ProfilesProjection {
    async fn insert(
        connection: &mut PgConnection,
        event: &StoredEvent,
        user_id: Uuid,
        email: Option<&str>,
        password_hash: Option<&str>,
        profile: &ProfileChanges,
        registered_at: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<()> {
        let metadata = profile
            .metadata
            .as_ref()
            .and_then(|metadata| metadata.known().cloned())
            .unwrap_or_default();
        sqlx::query(
            "INSERT INTO user_profiles
                (user_id, email, status, display_name, given_name, family_name, locale,
                 timezone, phone, picture_url, metadata, created_at, updated_at, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13)",
        )
        .bind(user_id)
        .bind(email)
        .bind(UserStatus::Active.as_str())
        .bind(text(&profile.display_name).1)
        .bind(text(&profile.given_name).1)
        .bind(text(&profile.family_name).1)
        .bind(text(&profile.locale).1)
        .bind(text(&profile.timezone).1)
        .bind(text(&profile.phone).1)
        .bind(text(&profile.picture_url).1)
        .bind(Value::Object(metadata))
        .bind(registered_at)
        .bind(event.sequence)
        .execute(&mut *connection)
        .await?;

        if let Some(password_hash) = password_hash {
            sqlx::query("INSERT INTO user_credentials (user_id, password_hash) VALUES ($1, $2)")
                .bind(user_id)
                .bind(password_hash)
                .execute(&mut *connection)
                .await?;
        }
        Ok(())
    }

    async fn update(
        connection: &mut PgConnection,
        event: &StoredEvent,
        user_id: Uuid,
        changes: &ProfileChanges,
        updated_at: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<()> {
        let columns = [
            text(&changes.display_name),
            text(&changes.given_name),
            text(&changes.family_name),
            text(&changes.locale),
            text(&changes.timezone),
            text(&changes.phone),
            text(&changes.picture_url),
        ];
        let metadata = changes
            .metadata
            .as_ref()
            .map(|metadata| Value::Object(metadata.known().cloned().unwrap_or_default()));

        let mut query = sqlx::query(
            "UPDATE user_profiles SET
                display_name = CASE WHEN $2 THEN $3 ELSE display_name END,
                given_name   = CASE WHEN $4 THEN $5 ELSE given_name END,
                family_name  = CASE WHEN $6 THEN $7 ELSE family_name END,
                locale       = CASE WHEN $8 THEN $9 ELSE locale END,
                timezone     = CASE WHEN $10 THEN $11 ELSE timezone END,
                phone        = CASE WHEN $12 THEN $13 ELSE phone END,
                picture_url  = CASE WHEN $14 THEN $15 ELSE picture_url END,
                metadata     = COALESCE($16, metadata),
                updated_at   = $17,
                version      = $18
              WHERE user_id = $1",
        )
        .bind(user_id);
        for (present, value) in columns {
            query = query.bind(present).bind(value);
        }
        query
            .bind(metadata)
            .bind(updated_at)
            .bind(event.sequence)
            .execute(&mut *connection)
            .await?;
        Ok(())
    }
}

impl ProfilesProjection {
    /// Records that `event` ended every session of the user but `kept`, including sessions
    /// whose login checked the password before it and whose start is appended after it.
    async fn end_sessions(
        connection: &mut PgConnection,
        event: &StoredEvent,
        user_id: Uuid,
        kept: Option<Uuid>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE user_profiles SET sessions_valid_from = $2, sessions_kept_session_id = $3
              WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(event.sequence)
        .bind(kept)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    async fn set_status(
        connection: &mut PgConnection,
        event: &StoredEvent,
        user_id: Uuid,
        status: UserStatus,
        at: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE user_profiles SET status = $2, updated_at = $3, version = $4
              WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(status.as_str())
        .bind(at)
        .bind(event.sequence)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }
}

impl ProfilesProjection {
    async fn set_mfa(
        connection: &mut PgConnection,
        event: &StoredEvent,
        user_id: Uuid,
        enabled: bool,
        at: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE user_profiles SET mfa_enabled = $2, updated_at = $3, version = $4
              WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(enabled)
        .bind(at)
        .bind(event.sequence)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    /// Keeps `version` equal to the aggregate's sequence, which `If-Match` compares against.
    async fn set_version(
        connection: &mut PgConnection,
        event: &StoredEvent,
        user_id: Uuid,
        updated_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE user_profiles SET version = $2, updated_at = COALESCE($3, updated_at)
              WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(event.sequence)
        .bind(updated_at)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Projection for ProfilesProjection {
    fn name(&self) -> &'static str {
        "profiles"
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
                Self::insert(
                    connection,
                    event,
                    user_id,
                    registered.email.known().map(String::as_str),
                    registered.password_hash.known().map(String::as_str),
                    &registered.profile,
                    registered.registered_at,
                )
                .await
            }
            UserEvent::ProfileUpdated(updated) => {
                Self::update(
                    connection,
                    event,
                    user_id,
                    &updated.changes,
                    updated.updated_at,
                )
                .await
            }
            UserEvent::UserSuspended(suspended) => {
                let at = suspended.suspended_at;
                Self::end_sessions(connection, event, user_id, None).await?;
                Self::set_status(connection, event, user_id, UserStatus::Suspended, at).await
            }
            UserEvent::UserUnsuspended(unsuspended) => {
                let at = unsuspended.unsuspended_at;
                Self::set_status(connection, event, user_id, UserStatus::Active, at).await
            }
            UserEvent::TotpEnabled(enabled) => {
                Self::set_mfa(connection, event, user_id, true, enabled.enabled_at).await
            }
            UserEvent::TotpDisabled(disabled) => {
                Self::set_mfa(connection, event, user_id, false, disabled.disabled_at).await
            }
            // The other MFA events change no profile field, but they do move the aggregate's
            // sequence, which the profile's version must follow for If-Match to work.
            UserEvent::TotpSetupStarted(_)
            | UserEvent::TotpCodeAccepted(_)
            | UserEvent::RecoveryCodeUsed(_)
            | UserEvent::RecoveryCodesRegenerated(_)
            | UserEvent::MfaChallengeIssued(_)
            | UserEvent::MfaChallengeFailed(_)
            | UserEvent::MfaChallengeCompleted(_)
            | UserEvent::EmailVerificationRequested(_)
            | UserEvent::EmailVerificationFailed(_)
            | UserEvent::PasswordResetRequested(_) => {
                Self::set_version(connection, event, user_id, None).await
            }
            UserEvent::EmailVerified(verified) => {
                sqlx::query(
                    "UPDATE user_profiles
                        SET email = $2, email_verified = true, updated_at = $3, version = $4
                      WHERE user_id = $1",
                )
                .bind(user_id)
                .bind(verified.email.known())
                .bind(verified.verified_at)
                .bind(event.sequence)
                .execute(&mut *connection)
                .await?;
                Ok(())
            }
            UserEvent::PasswordChanged(changed) => {
                if let Some(password_hash) = changed.password_hash.known() {
                    sqlx::query(
                        "UPDATE user_credentials SET password_hash = $2 WHERE user_id = $1",
                    )
                    .bind(user_id)
                    .bind(password_hash)
                    .execute(&mut *connection)
                    .await?;
                }
                Self::end_sessions(connection, event, user_id, changed.kept_session_id).await?;
                Self::set_version(connection, event, user_id, Some(changed.changed_at)).await
            }
        }
    }

    async fn reset(&self, connection: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("TRUNCATE user_profiles, user_credentials")
            .execute(&mut *connection)
            .await?;
        Ok(())
    }
}
