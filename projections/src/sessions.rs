//! The `sessions` projection: one row per session, read by every Bearer request.

use aggregates::personal::Personal;
use aggregates::session::{Session, SessionEvent};
use aggregates::user::{PasswordChangeMethod, User, UserEvent};
use async_trait::async_trait;
use cqrs_es::Aggregate;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Projection, StoredEvent};

#[derive(Clone, Copy, Debug, Default)]
pub struct SessionsProjection;

fn known(value: &Personal<Option<String>>) -> Option<&str> {
    value.known().and_then(|value| value.as_deref())
}

/// Ends every open session of a user whose account was suspended.
async fn revoke_on_suspension(
    connection: &mut PgConnection,
    event: &StoredEvent,
) -> anyhow::Result<()> {
    if event.event_type != "UserSuspended" {
        return Ok(());
    }
    let user_id: Uuid = event.aggregate_id.parse()?;
    let UserEvent::UserSuspended(suspended) = serde_json::from_value(event.payload.clone())? else {
        return Ok(());
    };
    sqlx::query(
        "UPDATE sessions SET revoked_at = $2, revocation_reason = 'suspended'
          WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(suspended.suspended_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Ends the sessions of a user whose password changed: all but the one that asked for a
/// change, and all of them after a reset.
async fn revoke_on_password_change(
    connection: &mut PgConnection,
    event: &StoredEvent,
) -> anyhow::Result<()> {
    if event.event_type != "PasswordChanged" {
        return Ok(());
    }
    let user_id: Uuid = event.aggregate_id.parse()?;
    let UserEvent::PasswordChanged(changed) = serde_json::from_value(event.payload.clone())? else {
        return Ok(());
    };
    let reason = match changed.method {
        PasswordChangeMethod::Change => "password_changed",
        PasswordChangeMethod::Reset => "password_reset",
    };
    sqlx::query(
        "UPDATE sessions SET revoked_at = $2, revocation_reason = $3
          WHERE user_id = $1 AND revoked_at IS NULL
            AND session_id IS DISTINCT FROM $4",
    )
    .bind(user_id)
    .bind(changed.changed_at)
    .bind(reason)
    .bind(changed.kept_session_id)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

#[async_trait]
impl Projection for SessionsProjection {
    fn name(&self) -> &'static str {
        "sessions"
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> anyhow::Result<()> {
        if event.aggregate_type == User::TYPE {
            revoke_on_password_change(connection, event).await?;
            return revoke_on_suspension(connection, event).await;
        }
        if event.aggregate_type != Session::TYPE {
            return Ok(());
        }
        let session_id: Uuid = event.aggregate_id.parse()?;
        let payload: SessionEvent = serde_json::from_value(event.payload.clone())?;

        match payload {
            SessionEvent::SessionStarted(started) => {
                sqlx::query(
                    "INSERT INTO sessions
                        (session_id, user_id, token_hash, created_at, expires_at, last_seen_at,
                         ip_address, user_agent, credentials_version)
                     VALUES ($1, $2, $3, $4, $5, $4, $6, $7, $8)",
                )
                .bind(session_id)
                .bind(started.user_id)
                .bind(&started.token_hash)
                .bind(started.started_at)
                .bind(started.expires_at)
                .bind(known(&started.ip_address))
                .bind(known(&started.user_agent))
                .bind(started.credentials_version.map(i64::try_from).transpose()?)
                .execute(&mut *connection)
                .await?;
            }
            SessionEvent::SessionRevoked(revoked) => {
                let reason = serde_json::to_value(revoked.reason)?;
                sqlx::query(
                    "UPDATE sessions SET revoked_at = $2, revocation_reason = $3
                      WHERE session_id = $1 AND revoked_at IS NULL",
                )
                .bind(session_id)
                .bind(revoked.revoked_at)
                .bind(reason.as_str())
                .execute(&mut *connection)
                .await?;
            }
        }
        Ok(())
    }

    async fn reset(&self, connection: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("TRUNCATE sessions")
            .execute(&mut *connection)
            .await?;
        Ok(())
    }
}
