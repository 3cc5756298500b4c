//! The `mail_outbox` projection: one row per mail that an event asks for, written in the
//! projector's transaction, so that a crash delays a mail but never loses or repeats it. The
//! service's mail sender delivers the rows.
//!
//! A replay does not rebuild this table: mail already sent must not go out again, so `reset`
//! leaves the rows, and each row is keyed by its event so that replayed events add nothing.

use aggregates::user::{User, UserEvent, VerificationMethod, VerificationPurpose};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Projection, StoredEvent};

#[derive(Clone, Copy, Debug, Default)]
pub struct MailOutboxProjection;

/// What a mail says, which decides its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailKind {
    /// The code that verifies a newly registered address.
    RegistrationCode,
    /// The code that verifies a new address.
    EmailChangeCode,
    /// The link that verifies a new address.
    EmailChangeLink,
    /// A notice to the old address that the account moved away from it.
    EmailChanged,
    /// The link that resets the password.
    PasswordReset,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RegistrationCode => "registration_code",
            Self::EmailChangeCode => "email_change_code",
            Self::EmailChangeLink => "email_change_link",
            Self::EmailChanged => "email_changed",
            Self::PasswordReset => "password_reset",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::RegistrationCode,
            Self::EmailChangeCode,
            Self::EmailChangeLink,
            Self::EmailChanged,
            Self::PasswordReset,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

async fn enqueue(
    connection: &mut PgConnection,
    event: &StoredEvent,
    user_id: Uuid,
    kind: MailKind,
    recipient: Option<&String>,
    secret: Option<&String>,
    expires_at: Option<DateTime<Utc>>,
) -> anyhow::Result<()> {
    // An erased address has nobody to write to.
    let Some(recipient) = recipient.filter(|recipient| !recipient.is_empty()) else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO mail_outbox
            (mail_id, source_event, user_id, kind, recipient, secret, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (source_event) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(format!(
        "{}/{}/{}",
        event.aggregate_type, event.aggregate_id, event.sequence
    ))
    .bind(user_id)
    .bind(kind.as_str())
    .bind(recipient)
    .bind(secret)
    .bind(expires_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

#[async_trait]
impl Projection for MailOutboxProjection {
    fn name(&self) -> &'static str {
        "mail_outbox"
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
                enqueue(
                    connection,
                    event,
                    user_id,
                    MailKind::RegistrationCode,
                    registered.email.known(),
                    verification.code.known(),
                    Some(verification.expires_at),
                )
                .await
            }
            UserEvent::EmailVerificationRequested(requested) => {
                let kind = match (requested.purpose, requested.method) {
                    (VerificationPurpose::Registration, _) => MailKind::RegistrationCode,
                    (_, VerificationMethod::EmailCode) => MailKind::EmailChangeCode,
                    (_, VerificationMethod::EmailLink) => MailKind::EmailChangeLink,
                };
                enqueue(
                    connection,
                    event,
                    user_id,
                    kind,
                    requested.new_email.known(),
                    requested.secret.known(),
                    Some(requested.expires_at),
                )
                .await
            }
            UserEvent::EmailVerified(verified) => {
                let previous = verified.previous_email.known().and_then(Option::as_ref);
                enqueue(
                    connection,
                    event,
                    user_id,
                    MailKind::EmailChanged,
                    previous,
                    None,
                    None,
                )
                .await
            }
            UserEvent::PasswordResetRequested(requested) => {
                enqueue(
                    connection,
                    event,
                    user_id,
                    MailKind::PasswordReset,
                    requested.email.known(),
                    requested.token.known(),
                    Some(requested.expires_at),
                )
                .await
            }
            _ => Ok(()),
        }
    }

    async fn reset(&self, _connection: &mut PgConnection) -> anyhow::Result<()> {
        Ok(())
    }
}
