//! Rules for the account's credentials: verifying and changing the email address, and changing
//! and resetting the password.
//!
//! Codes and tokens reach the aggregate already hashed; it keeps only the newest hash of each
//! kind, so issuing a new one voids the older ones.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::{ChangePassword, RequestEmailChange, VerificationSecrets};
use super::events::{
    EmailVerificationFailed, EmailVerificationRequested, EmailVerified, PasswordChangeMethod,
    PasswordChanged, PasswordResetRequested, VerificationMethod, VerificationPurpose,
};
use super::{User, UserCommand, UserError, UserEvent, UserStatus};
use crate::personal::Personal;
use crate::services::UserServices;
use crate::values::{Email, FieldError, check_password_policy};

/// Wrong codes accepted before a verification request is void.
pub const MAX_CODE_ATTEMPTS: u32 = 5;

/// The one verification of an address that is still open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingVerification {
    pub change_request_id: Uuid,
    pub purpose: VerificationPurpose,
    pub method: VerificationMethod,
    pub new_email: Option<String>,
    pub new_email_index: String,
    pub secret_hash: String,
    pub attempts: u32,
    pub expires_at: DateTime<Utc>,
}

/// Compares two hashes without stopping at the first differing byte.
fn same_hash(left: &str, right: &str) -> bool {
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .fold(0_u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

impl User {
    pub fn email_verified(&self) -> bool {
        self.email_verified
    }

    pub fn pending_verification(&self) -> Option<&PendingVerification> {
        self.pending_verification.as_ref()
    }

    fn require_active(&self) -> Result<(), UserError> {
        if !self.is_registered() {
            return Err(UserError::NotFound);
        }
        if self.status == UserStatus::Suspended {
            return Err(UserError::Suspended);
        }
        Ok(())
    }

    /// Checks the policy against the account's address and hashes the new password.
    async fn new_password_hash(
        &self,
        field: &'static str,
        password: &SecretString,
        services: &UserServices,
    ) -> Result<String, UserError> {
        // An account whose address was erased is gone for every purpose, this one included.
        let email = self
            .email
            .as_deref()
            .and_then(|email| Email::parse(email).ok())
            .ok_or(UserError::NotFound)?;
        check_password_policy(field, password.expose_secret(), &email)
            .map_err(|error| UserError::Invalid(vec![error]))?;

        services
            .hasher
            .hash(password)
            .await
            .map_err(|error| UserError::Service(error.0))
    }

    fn verification_event(
        &self,
        purpose: VerificationPurpose,
        method: VerificationMethod,
        email: &str,
        email_index: String,
        secrets: VerificationSecrets,
        services: &UserServices,
    ) -> UserEvent {
        let now = services.clock.now();
        let (secret, secret_hash) = match method {
            VerificationMethod::EmailCode => (secrets.code, secrets.code_hash),
            VerificationMethod::EmailLink => (secrets.token, secrets.token_hash),
        };
        UserEvent::EmailVerificationRequested(EmailVerificationRequested {
            change_request_id: secrets.change_request_id,
            purpose,
            method,
            new_email: Personal::Known(email.to_owned()),
            new_email_index: email_index,
            secret: Personal::Known(secret),
            secret_hash,
            expires_at: now + secrets.lifetime,
            requested_at: now,
        })
    }

    pub(super) async fn handle_credentials(
        &mut self,
        command: UserCommand,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        let event = match command {
            UserCommand::RegisterWithVerification(registration, secrets) => {
                return self
                    .register(registration, Some(secrets), services, sink)
                    .await;
            }
            UserCommand::RequestEmailChange(command) => {
                self.request_email_change(command, services).await?
            }
            UserCommand::ResendVerification(secrets) => self.resend(secrets, services)?,
            UserCommand::VerifyEmailCode {
                change_request_id,
                code_hash,
            } => self.verify_code(change_request_id, &code_hash, services)?,
            UserCommand::VerifyEmailLink { token_hash } => {
                self.verify_link(&token_hash, services)?
            }
            UserCommand::ChangePassword(command) => self.change_password(command, services).await?,
            UserCommand::RequestPasswordReset {
                token,
                token_hash,
                lifetime,
            } => {
                self.require_active()?;
                let now = services.clock.now();
                UserEvent::PasswordResetRequested(PasswordResetRequested {
                    email: Personal::Known(self.email.clone().unwrap_or_default()),
                    token: Personal::Known(token),
                    token_hash,
                    expires_at: now + lifetime,
                    requested_at: now,
                })
            }
            UserCommand::ConfirmPasswordReset {
                token_hash,
                new_password,
            } => {
                self.confirm_reset(&token_hash, &new_password, services)
                    .await?
            }
            _ => {
                return Err(UserError::Service(
                    "command routed to the wrong handler".to_owned(),
                ));
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    async fn request_email_change(
        &self,
        command: RequestEmailChange,
        services: &UserServices,
    ) -> Result<UserEvent, UserError> {
        self.require_active()?;
        self.check_password(&command.current_password, services)
            .await?;
        if self.email.as_deref() == Some(command.new_email.as_str()) {
            return Err(UserError::Invalid(vec![FieldError::new(
                "new_email",
                "is already the account's address",
            )]));
        }
        // Checked only after the password, so the response reveals no more than registration does.
        if command.new_email_claimed {
            return Err(UserError::EmailTaken);
        }
        Ok(self.verification_event(
            VerificationPurpose::EmailChange,
            command.method,
            command.new_email.as_str(),
            services.index.email_index(&command.new_email),
            command.secrets,
            services,
        ))
    }

    fn resend(
        &self,
        secrets: VerificationSecrets,
        services: &UserServices,
    ) -> Result<UserEvent, UserError> {
        self.require_active()?;
        let Some(pending) = &self.pending_verification else {
            // An address that was never verified, and whose verification was replaced by a
            // change of address that was then voided, gets a new one.
            if self.email_verified {
                return Err(UserError::NoPendingVerification);
            }
            return Ok(self.verification_event(
                VerificationPurpose::Registration,
                VerificationMethod::EmailCode,
                self.email.as_deref().unwrap_or_default(),
                self.email_index.clone().unwrap_or_default(),
                secrets,
                services,
            ));
        };
        let secrets = VerificationSecrets {
            change_request_id: pending.change_request_id,
            ..secrets
        };
        Ok(self.verification_event(
            pending.purpose,
            pending.method,
            pending.new_email.as_deref().unwrap_or_default(),
            pending.new_email_index.clone(),
            secrets,
            services,
        ))
    }

    /// A wrong code is recorded, not refused, so that the attempt counts.
    fn verify_code(
        &self,
        change_request_id: Uuid,
        code_hash: &str,
        services: &UserServices,
    ) -> Result<UserEvent, UserError> {
        self.require_active()?;
        let now = services.clock.now();
        let pending = self
            .pending_verification
            .as_ref()
            .filter(|pending| {
                pending.change_request_id == change_request_id
                    && pending.method == VerificationMethod::EmailCode
                    && pending.expires_at > now
            })
            .ok_or(UserError::InvalidCode)?;

        if !same_hash(&pending.secret_hash, code_hash) {
            let attempts = pending.attempts + 1;
            return Ok(UserEvent::EmailVerificationFailed(
                EmailVerificationFailed {
                    change_request_id,
                    attempts,
                    voided: attempts >= MAX_CODE_ATTEMPTS,
                    failed_at: now,
                },
            ));
        }
        Ok(self.verified_event(pending, now))
    }

    fn verify_link(
        &self,
        token_hash: &str,
        services: &UserServices,
    ) -> Result<UserEvent, UserError> {
        if !self.is_registered() {
            return Err(UserError::InvalidToken);
        }
        let now = services.clock.now();
        let pending = self
            .pending_verification
            .as_ref()
            .filter(|pending| {
                pending.method == VerificationMethod::EmailLink
                    && pending.expires_at > now
                    && same_hash(&pending.secret_hash, token_hash)
            })
            .ok_or(UserError::InvalidToken)?;
        self.require_active()?;
        Ok(self.verified_event(pending, now))
    }

    fn verified_event(&self, pending: &PendingVerification, now: DateTime<Utc>) -> UserEvent {
        let change = pending.purpose == VerificationPurpose::EmailChange;
        UserEvent::EmailVerified(EmailVerified {
            change_request_id: pending.change_request_id,
            purpose: pending.purpose,
            email: Personal::Known(pending.new_email.clone().unwrap_or_default()),
            email_index: pending.new_email_index.clone(),
            previous_email: Personal::Known(self.email.clone().filter(|_| change)),
            previous_email_index: self.email_index.clone().filter(|_| change),
            verified_at: now,
        })
    }

    async fn change_password(
        &self,
        command: ChangePassword,
        services: &UserServices,
    ) -> Result<UserEvent, UserError> {
        self.require_active()?;
        self.check_password(&command.current_password, services)
            .await?;
        let password_hash = self
            .new_password_hash("new_password", &command.new_password, services)
            .await?;
        Ok(UserEvent::PasswordChanged(PasswordChanged {
            password_hash: Personal::Known(password_hash),
            method: PasswordChangeMethod::Change,
            kept_session_id: command.session_id,
            changed_at: services.clock.now(),
        }))
    }

    async fn confirm_reset(
        &self,
        token_hash: &str,
        new_password: &SecretString,
        services: &UserServices,
    ) -> Result<UserEvent, UserError> {
        let now = services.clock.now();
        let valid = self
            .password_reset
            .as_ref()
            .is_some_and(|(hash, expires_at)| *expires_at > now && same_hash(hash, token_hash));
        if !valid {
            return Err(UserError::InvalidToken);
        }
        self.require_active()?;
        let password_hash = self
            .new_password_hash("new_password", new_password, services)
            .await?;
        Ok(UserEvent::PasswordChanged(PasswordChanged {
            password_hash: Personal::Known(password_hash),
            method: PasswordChangeMethod::Reset,
            kept_session_id: None,
            changed_at: now,
        }))
    }

    pub(super) fn apply_credentials(&mut self, event: UserEvent) {
        match event {
            UserEvent::EmailVerificationRequested(event) => {
                self.pending_verification = Some(PendingVerification {
                    change_request_id: event.change_request_id,
                    purpose: event.purpose,
                    method: event.method,
                    new_email: event.new_email.into_known(),
                    new_email_index: event.new_email_index,
                    secret_hash: event.secret_hash,
                    attempts: 0,
                    expires_at: event.expires_at,
                });
            }
            UserEvent::EmailVerificationFailed(event) => {
                if event.voided {
                    self.pending_verification = None;
                } else if let Some(pending) = &mut self.pending_verification {
                    pending.attempts = event.attempts;
                }
            }
            UserEvent::EmailVerified(event) => {
                self.email = event.email.into_known();
                self.email_index = Some(event.email_index);
                self.email_verified = true;
                self.pending_verification = None;
                if event.purpose == VerificationPurpose::EmailChange {
                    self.password_reset = None;
                }
                self.updated_at = Some(event.verified_at);
            }
            UserEvent::PasswordChanged(event) => {
                self.password_hash = event.password_hash.into_known();
                self.password_reset = None;
                // A change of address asked for under the old password is void: anyone who knew
                // that password could have asked for it, and a new password is how the owner
                // takes the account back.
                if self
                    .pending_verification
                    .as_ref()
                    .is_some_and(|pending| pending.purpose == VerificationPurpose::EmailChange)
                {
                    self.pending_verification = None;
                }
                self.updated_at = Some(event.changed_at);
            }
            UserEvent::PasswordResetRequested(event) => {
                self.password_reset = Some((event.token_hash, event.expires_at));
            }
            _ => {}
        }
    }
}
