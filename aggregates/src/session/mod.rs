//! The session aggregate: one stream per signed-in device, from login to revocation.
//!
//! A session's personal fields are sealed with its user's data key, so erasing the user also
//! erases the addresses and user agents of every session they had.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::personal::Personal;
use crate::services::SessionServices;

#[cfg(test)]
mod tests;

pub enum SessionCommand {
    Start(StartSession),
    Revoke { reason: RevocationReason },
}

/// Opens a session for a user whose credentials were just checked.
#[derive(Clone)]
pub struct StartSession {
    pub session_id: Uuid,
    pub user_id: Uuid,
    /// SHA-256 of the access token, hex-encoded; the token itself is never stored.
    pub token_hash: String,
    pub lifetime: Duration,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    /// The user's version whose credentials the login checked.
    pub credentials_version: u64,
}

/// Why a session ended before it expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// The session's own token logged out.
    Logout,
    /// The user or an operator ended it from the session list.
    Revoked,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SessionEvent {
    SessionStarted(SessionStarted),
    SessionRevoked(SessionRevoked),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionStarted {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub token_hash: String,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ip_address: Personal<Option<String>>,
    pub user_agent: Personal<Option<String>>,
    /// The user's version (event sequence) whose password, second factor and status the login
    /// checked. The session is void if a later user event ended every session, even when this
    /// event was appended after that one. `None` in events written before the field existed,
    /// whose sessions that rule does not apply to.
    #[serde(default)]
    pub credentials_version: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRevoked {
    pub reason: RevocationReason,
    pub revoked_at: DateTime<Utc>,
}

impl DomainEvent for SessionEvent {
    fn event_type(&self) -> String {
        match self {
            Self::SessionStarted(_) => "SessionStarted",
            Self::SessionRevoked(_) => "SessionRevoked",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// Rejection of a session command.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the session already exists")]
    AlreadyStarted,
    #[error("session not found")]
    NotFound,
    #[error("the session is already revoked")]
    AlreadyRevoked,
}

/// State of one session.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Session {
    user_id: Option<Uuid>,
    expires_at: Option<DateTime<Utc>>,
    revoked: bool,
}

impl Session {
    pub fn user_id(&self) -> Option<Uuid> {
        self.user_id
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked
    }
}

impl Aggregate for Session {
    const TYPE: &'static str = "session";
    type Command = SessionCommand;
    type Event = SessionEvent;
    type Error = SessionError;
    type Services = SessionServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let now = services.clock.now();
        let event = match command {
            SessionCommand::Start(command) => {
                if self.user_id.is_some() {
                    return Err(SessionError::AlreadyStarted);
                }
                SessionEvent::SessionStarted(SessionStarted {
                    session_id: command.session_id,
                    user_id: command.user_id,
                    token_hash: command.token_hash,
                    started_at: now,
                    expires_at: now + command.lifetime,
                    ip_address: Personal::Known(command.ip_address),
                    user_agent: Personal::Known(command.user_agent),
                    credentials_version: Some(command.credentials_version),
                })
            }
            SessionCommand::Revoke { reason } => {
                if self.user_id.is_none() {
                    return Err(SessionError::NotFound);
                }
                if self.revoked {
                    return Err(SessionError::AlreadyRevoked);
                }
                SessionEvent::SessionRevoked(SessionRevoked {
                    reason,
                    revoked_at: now,
                })
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SessionEvent::SessionStarted(event) => {
                self.user_id = Some(event.user_id);
                self.expires_at = Some(event.expires_at);
            }
            SessionEvent::SessionRevoked(_) => self.revoked = true,
        }
    }
}
