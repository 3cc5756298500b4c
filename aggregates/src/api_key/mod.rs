//! The API-key aggregate: one stream per server-to-server key, from issue to revocation.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::services::SessionServices;

#[cfg(test)]
mod tests;

/// Permissions a key can carry. `*` grants every scope.
pub const SCOPES: [&str; 9] = [
    "users:read",
    "users:write",
    "users:admin",
    "sessions:manage",
    "bulk",
    "events:read",
    "audit:read",
    "api_keys:manage",
    "*",
];

/// Longest key name accepted, in characters.
pub const NAME_MAX_CHARS: usize = 100;

/// Whether `granted` contains `scope` or the wildcard.
pub fn grants(granted: &[String], scope: &str) -> bool {
    granted.iter().any(|held| held == scope || held == "*")
}

pub enum ApiKeyCommand {
    Issue(IssueApiKey),
    /// Revokes the key. `revoker_scopes` are the scopes of the key asking, which must cover
    /// every scope of this one; `None` when an operator revokes it outside the API.
    Revoke {
        revoker_scopes: Option<Vec<String>>,
    },
}

/// Issues a key whose secret the caller generated; only its hash and prefix are kept.
#[derive(Clone)]
pub struct IssueApiKey {
    pub api_key_id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    /// The first characters of the key, shown in listings so that an operator can tell keys apart.
    pub prefix: String,
    /// SHA-256 of the key, hex-encoded.
    pub key_hash: String,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ApiKeyEvent {
    ApiKeyIssued(ApiKeyIssued),
    ApiKeyRevoked(ApiKeyRevoked),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyIssued {
    pub api_key_id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    pub prefix: String,
    pub key_hash: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRevoked {
    pub revoked_at: DateTime<Utc>,
}

impl DomainEvent for ApiKeyEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ApiKeyIssued(_) => "ApiKeyIssued",
            Self::ApiKeyRevoked(_) => "ApiKeyRevoked",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// Rejection of an API-key command.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("the API key already exists")]
    AlreadyIssued,
    #[error("API key not found")]
    NotFound,
    #[error("the API key is already revoked")]
    AlreadyRevoked,
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The revoking key lacks a scope of the key it would revoke.
    #[error("the caller lacks a scope of the API key")]
    ScopeNotHeld,
}

/// State of one key.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ApiKey {
    issued: bool,
    revoked: bool,
    #[serde(default)]
    scopes: Vec<String>,
}

impl ApiKey {
    fn validate(command: &IssueApiKey, now: DateTime<Utc>) -> Result<(), ApiKeyError> {
        let name = command.name.trim();
        if name.is_empty()
            || name.chars().count() > NAME_MAX_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(ApiKeyError::Invalid {
                field: "name",
                reason: format!(
                    "must be 1 to {NAME_MAX_CHARS} characters without control characters"
                ),
            });
        }
        if command.scopes.is_empty() {
            return Err(ApiKeyError::Invalid {
                field: "scopes",
                reason: "must name at least one scope".to_owned(),
            });
        }
        if let Some(unknown) = command
            .scopes
            .iter()
            .find(|scope| !SCOPES.contains(&scope.as_str()))
        {
            return Err(ApiKeyError::Invalid {
                field: "scopes",
                reason: format!(
                    "unknown scope {unknown:?}; expected one of {}",
                    SCOPES.join(", ")
                ),
            });
        }
        if command
            .expires_at
            .is_some_and(|expires_at| expires_at <= now)
        {
            return Err(ApiKeyError::Invalid {
                field: "expires_at",
                reason: "must be in the future".to_owned(),
            });
        }
        Ok(())
    }
}

impl Aggregate for ApiKey {
    const TYPE: &'static str = "api_key";
    type Command = ApiKeyCommand;
    type Event = ApiKeyEvent;
    type Error = ApiKeyError;
    type Services = SessionServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let now = services.clock.now();
        let event = match command {
            ApiKeyCommand::Issue(command) => {
                if self.issued {
                    return Err(ApiKeyError::AlreadyIssued);
                }
                Self::validate(&command, now)?;
                let mut scopes = command.scopes;
                scopes.sort();
                scopes.dedup();
                ApiKeyEvent::ApiKeyIssued(ApiKeyIssued {
                    api_key_id: command.api_key_id,
                    name: command.name.trim().to_owned(),
                    scopes,
                    prefix: command.prefix,
                    key_hash: command.key_hash,
                    issued_at: now,
                    expires_at: command.expires_at,
                })
            }
            ApiKeyCommand::Revoke { revoker_scopes } => {
                if !self.issued {
                    return Err(ApiKeyError::NotFound);
                }
                if let Some(held) = revoker_scopes {
                    if self.scopes.iter().any(|scope| !grants(&held, scope)) {
                        return Err(ApiKeyError::ScopeNotHeld);
                    }
                }
                if self.revoked {
                    return Err(ApiKeyError::AlreadyRevoked);
                }
                ApiKeyEvent::ApiKeyRevoked(ApiKeyRevoked { revoked_at: now })
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ApiKeyEvent::ApiKeyIssued(issued) => {
                self.issued = true;
                self.scopes = issued.scopes;
            }
            ApiKeyEvent::ApiKeyRevoked(_) => self.revoked = true,
        }
    }
}
