//! The user aggregate: one stream per account, holding its credentials and profile.

mod commands;
#[cfg(test)]
mod credential_tests;
mod credentials;
mod events;
mod mfa;
#[cfg(test)]
mod tests;

pub use commands::{
    ChangePassword, CompleteMfaChallenge, DisableTotp, ProfileDraft, ProfilePatch,
    RegenerateRecoveryCodes, RegisterUser, RequestEmailChange, SecondFactor, StartTotpSetup,
    UpdateProfile, UserCommand, VerificationSecrets, VerifyTotpSetup,
};
pub use credentials::{MAX_CODE_ATTEMPTS, PendingVerification};
pub use events::{
    EmailVerificationFailed, EmailVerificationRequested, EmailVerified, MfaChallengeCompleted,
    MfaChallengeFailed, MfaChallengeIssued, PasswordChangeMethod, PasswordChanged,
    PasswordResetRequested, ProfileChanges, ProfileUpdated, RecoveryCodeUsed,
    RecoveryCodesRegenerated, RegistrationVerification, TotpCodeAccepted, TotpDisabled,
    TotpEnabled, TotpSetupStarted, UserEvent, UserRegistered, UserSuspended, UserUnsuspended,
    VerificationMethod, VerificationPurpose,
};
pub use mfa::{
    MFA_CHALLENGE_LIFETIME, MFA_CHALLENGE_MAX_FAILURES, MfaState, RECOVERY_CODE_COUNT,
    TOTP_SETUP_LIFETIME,
};

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::personal::Personal;
use crate::services::UserServices;
use crate::values::{FieldError, check_password_policy};

/// The profile fields a user may write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    pub phone: Option<String>,
    pub picture_url: Option<String>,
    pub metadata: Map<String, Value>,
}

/// Lifecycle state of an account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    #[default]
    Active,
    Suspended,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }
}

/// Rejection of a user command.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the user is already registered")]
    AlreadyRegistered,
    #[error("user not found")]
    NotFound,
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("expected version {expected} but the user is at version {current}")]
    VersionMismatch { expected: u64, current: u64 },
    #[error("service failed: {0}")]
    Service(String),
    /// A wrong password, TOTP code or recovery code.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("TOTP is already enabled")]
    TotpAlreadyEnabled,
    #[error("TOTP is not enabled")]
    TotpNotEnabled,
    #[error("no TOTP setup is pending, or it expired")]
    NoTotpSetup,
    /// The login challenge is unknown, expired, used, or failed too often.
    #[error("the MFA challenge is invalid")]
    ChallengeInvalid,
    #[error("the account is suspended")]
    Suspended,
    #[error("the verification code is wrong, expired or void")]
    InvalidCode,
    #[error("the token is unknown, expired or void")]
    InvalidToken,
    #[error("no email verification is pending")]
    NoPendingVerification,
    #[error("the email address belongs to another account")]
    EmailTaken,
}

/// State of one account, folded from its events.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct User {
    user_id: Option<Uuid>,
    email: Option<String>,
    password_hash: Option<String>,
    profile: Profile,
    status: UserStatus,
    version: u64,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    mfa: MfaState,
    email_index: Option<String>,
    email_verified: bool,
    pending_verification: Option<PendingVerification>,
    /// SHA-256 and expiry of the one reset token that still works.
    password_reset: Option<(String, DateTime<Utc>)>,
    /// Version of the last event that ended every session (a password change or reset, a
    /// suspension). A session whose login checked the password at an older version is void,
    /// and no MFA challenge is opened for such a login.
    #[serde(default)]
    sessions_valid_from: u64,
}

impl User {
    pub fn user_id(&self) -> Option<Uuid> {
        self.user_id
    }

    pub fn is_registered(&self) -> bool {
        self.user_id.is_some()
    }

    /// The account's email address, or `None` once erased.
    pub fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }

    pub fn password_hash(&self) -> Option<&str> {
        self.password_hash.as_deref()
    }

    pub fn totp_enabled(&self) -> bool {
        self.mfa.totp_enabled()
    }

    /// Version of the last event that ended every session of the user.
    pub fn sessions_valid_from(&self) -> u64 {
        self.sessions_valid_from
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    pub fn status(&self) -> UserStatus {
        self.status
    }

    /// Number of events applied, which is the sequence of the last one.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }

    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.updated_at
    }

    async fn register(
        &mut self,
        command: RegisterUser,
        verification: Option<VerificationSecrets>,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if self.is_registered() {
            return Err(UserError::AlreadyRegistered);
        }
        check_password_policy(
            "password",
            secrecy::ExposeSecret::expose_secret(&command.password),
            &command.email,
        )
        .map_err(|error| UserError::Invalid(vec![error]))?;

        let password_hash = services
            .hasher
            .hash(&command.password)
            .await
            .map_err(|error| UserError::Service(error.0))?;

        let now = services.clock.now();
        let verification = verification.map(|secrets| RegistrationVerification {
            change_request_id: secrets.change_request_id,
            code: Personal::Known(secrets.code),
            code_hash: secrets.code_hash,
            expires_at: now + secrets.lifetime,
        });
        let event = UserRegistered {
            user_id: command.user_id,
            email_index: services.index.email_index(&command.email),
            email: Personal::Known(command.email.as_str().to_owned()),
            password_hash: Personal::Known(password_hash),
            profile: command.profile.into_changes(),
            registered_at: now,
            verification,
        };
        sink.write(UserEvent::UserRegistered(event), self).await;
        Ok(())
    }

    async fn update_profile(
        &mut self,
        command: UpdateProfile,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self.is_registered() {
            return Err(UserError::NotFound);
        }
        if let Some(expected) = command.expected_version {
            if expected != self.version {
                return Err(UserError::VersionMismatch {
                    expected,
                    current: self.version,
                });
            }
        }

        let changes = command.patch.changes_from(&self.profile);
        if changes.is_empty() {
            return Ok(());
        }
        let event = ProfileUpdated {
            changes,
            updated_at: services.clock.now(),
        };
        sink.write(UserEvent::ProfileUpdated(event), self).await;
        Ok(())
    }
}

impl User {
    /// Records that the event just applied ended every session: logins that checked the
    /// password before it give only void sessions, and open MFA challenges are dropped.
    fn end_sessions(&mut self) {
        self.sessions_valid_from = self.version;
        self.mfa.void_challenges();
    }

    /// Suspends an active account; suspending a suspended one records nothing.
    async fn suspend(
        &mut self,
        reason: Option<String>,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self.is_registered() {
            return Err(UserError::NotFound);
        }
        if self.status == UserStatus::Suspended {
            return Ok(());
        }
        let event = UserSuspended {
            reason: Personal::Known(reason),
            suspended_at: services.clock.now(),
        };
        sink.write(UserEvent::UserSuspended(event), self).await;
        Ok(())
    }

    /// Lifts a suspension; unsuspending an active account records nothing.
    async fn unsuspend(
        &mut self,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self.is_registered() {
            return Err(UserError::NotFound);
        }
        if self.status == UserStatus::Active {
            return Ok(());
        }
        let event = UserUnsuspended {
            unsuspended_at: services.clock.now(),
        };
        sink.write(UserEvent::UserUnsuspended(event), self).await;
        Ok(())
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = UserServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            UserCommand::Register(command) => self.register(command, None, services, sink).await,
            UserCommand::UpdateProfile(command) => {
                self.update_profile(command, services, sink).await
            }
            UserCommand::Suspend { reason } => self.suspend(reason, services, sink).await,
            UserCommand::Unsuspend => self.unsuspend(services, sink).await,
            UserCommand::StartTotpSetup(command) => {
                self.start_totp_setup(command, services, sink).await
            }
            UserCommand::VerifyTotpSetup(command) => {
                self.verify_totp_setup(command, services, sink).await
            }
            UserCommand::RegenerateRecoveryCodes(command) => {
                self.regenerate_recovery_codes(command, services, sink)
                    .await
            }
            UserCommand::DisableTotp(command) => self.disable_totp(command, services, sink).await,
            UserCommand::IssueMfaChallenge {
                challenge_hash,
                credentials_version,
            } => {
                self.issue_mfa_challenge(challenge_hash, credentials_version, services, sink)
                    .await
            }
            UserCommand::CompleteMfaChallenge(command) => {
                self.complete_mfa_challenge(command, services, sink).await
            }
            command => self.handle_credentials(command, services, sink).await,
        }
    }

    fn apply(&mut self, event: Self::Event) {
        self.version += 1;
        if matches!(event, UserEvent::PasswordChanged(_)) {
            self.end_sessions();
        }
        match event {
            UserEvent::UserRegistered(event) => {
                self.user_id = Some(event.user_id);
                self.email = event.email.into_known();
                self.password_hash = event.password_hash.into_known();
                self.pending_verification =
                    event.verification.map(|verification| PendingVerification {
                        change_request_id: verification.change_request_id,
                        purpose: VerificationPurpose::Registration,
                        method: VerificationMethod::EmailCode,
                        new_email: self.email.clone(),
                        new_email_index: event.email_index.clone(),
                        secret_hash: verification.code_hash,
                        attempts: 0,
                        expires_at: verification.expires_at,
                    });
                self.email_index = Some(event.email_index);
                event.profile.apply_to(&mut self.profile);
                self.created_at = Some(event.registered_at);
                self.updated_at = Some(event.registered_at);
            }
            UserEvent::ProfileUpdated(event) => {
                event.changes.apply_to(&mut self.profile);
                self.updated_at = Some(event.updated_at);
            }
            UserEvent::UserSuspended(event) => {
                self.status = UserStatus::Suspended;
                self.updated_at = Some(event.suspended_at);
                self.end_sessions();
            }
            UserEvent::UserUnsuspended(event) => {
                self.status = UserStatus::Active;
                self.updated_at = Some(event.unsuspended_at);
            }
            UserEvent::TotpEnabled(ref enabled) => {
                self.updated_at = Some(enabled.enabled_at);
                self.mfa.apply(event);
            }
            UserEvent::TotpDisabled(ref disabled) => {
                self.updated_at = Some(disabled.disabled_at);
                self.mfa.apply(event);
            }
            credential @ (UserEvent::EmailVerificationRequested(_)
            | UserEvent::EmailVerificationFailed(_)
            | UserEvent::EmailVerified(_)
            | UserEvent::PasswordChanged(_)
            | UserEvent::PasswordResetRequested(_)) => self.apply_credentials(credential),
            mfa_event => self.mfa.apply(mfa_event),
        }
    }
}
