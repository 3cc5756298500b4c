//! Events of the user aggregate, in the past tense, with explicit type and version strings.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::Profile;
use crate::personal::Personal;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered(UserRegistered),
    ProfileUpdated(ProfileUpdated),
    UserSuspended(UserSuspended),
    UserUnsuspended(UserUnsuspended),
    TotpSetupStarted(TotpSetupStarted),
    TotpEnabled(TotpEnabled),
    TotpCodeAccepted(TotpCodeAccepted),
    RecoveryCodeUsed(RecoveryCodeUsed),
    RecoveryCodesRegenerated(RecoveryCodesRegenerated),
    TotpDisabled(TotpDisabled),
    MfaChallengeIssued(MfaChallengeIssued),
    MfaChallengeFailed(MfaChallengeFailed),
    MfaChallengeCompleted(MfaChallengeCompleted),
    EmailVerificationRequested(EmailVerificationRequested),
    EmailVerificationFailed(EmailVerificationFailed),
    EmailVerified(EmailVerified),
    PasswordChanged(PasswordChanged),
    PasswordResetRequested(PasswordResetRequested),
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserRegistered(_) => "UserRegistered",
            Self::ProfileUpdated(_) => "ProfileUpdated",
            Self::UserSuspended(_) => "UserSuspended",
            Self::UserUnsuspended(_) => "UserUnsuspended",
            Self::TotpSetupStarted(_) => "TotpSetupStarted",
            Self::TotpEnabled(_) => "TotpEnabled",
            Self::TotpCodeAccepted(_) => "TotpCodeAccepted",
            Self::RecoveryCodeUsed(_) => "RecoveryCodeUsed",
            Self::RecoveryCodesRegenerated(_) => "RecoveryCodesRegenerated",
            Self::TotpDisabled(_) => "TotpDisabled",
            Self::MfaChallengeIssued(_) => "MfaChallengeIssued",
            Self::MfaChallengeFailed(_) => "MfaChallengeFailed",
            Self::MfaChallengeCompleted(_) => "MfaChallengeCompleted",
            Self::EmailVerificationRequested(_) => "EmailVerificationRequested",
            Self::EmailVerificationFailed(_) => "EmailVerificationFailed",
            Self::EmailVerified(_) => "EmailVerified",
            Self::PasswordChanged(_) => "PasswordChanged",
            Self::PasswordResetRequested(_) => "PasswordResetRequested",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// An account was opened. `email_index` is the blind index that the email claim is keyed by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub email: Personal<String>,
    pub email_index: String,
    pub password_hash: Personal<String>,
    pub profile: ProfileChanges,
    pub registered_at: DateTime<Utc>,
    /// The code mailed to verify the address. Absent from events written before mail
    /// existed, which still read as registrations without a pending verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<RegistrationVerification>,
}

/// The verification issued with a registration: a code, sealed, and its keyed hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegistrationVerification {
    pub change_request_id: Uuid,
    pub code: Personal<String>,
    pub code_hash: String,
    pub expires_at: DateTime<Utc>,
}

/// Profile fields changed. Only the fields that changed are present.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileUpdated {
    pub changes: ProfileChanges,
    pub updated_at: DateTime<Utc>,
}

/// The account was suspended; every session it had ends with this event. The operator's
/// reason may name people, so it is sealed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserSuspended {
    pub reason: Personal<Option<String>>,
    pub suspended_at: DateTime<Utc>,
}

/// The suspension was lifted; sessions ended by it stay ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserUnsuspended {
    pub unsuspended_at: DateTime<Utc>,
}

/// A TOTP secret was issued for enrolment. Nothing is enabled until a code from it verifies,
/// and the secret is sealed because it is a credential.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TotpSetupStarted {
    pub secret: Personal<String>,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A code from the pending secret verified, so TOTP is on. `step` is the time step of that
/// code, which can never be used again; the recovery codes are stored as keyed hashes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TotpEnabled {
    pub step: u64,
    pub recovery_code_hashes: Personal<Vec<String>>,
    pub enabled_at: DateTime<Utc>,
}

/// A TOTP code was accepted; codes of this time step and earlier ones are spent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TotpCodeAccepted {
    pub step: u64,
    pub accepted_at: DateTime<Utc>,
}

/// The recovery code at `index` in the current set was spent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryCodeUsed {
    pub index: usize,
    pub used_at: DateTime<Utc>,
}

/// A new set of recovery codes replaced the old one, every code of which stops working.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryCodesRegenerated {
    pub recovery_code_hashes: Personal<Vec<String>>,
    pub regenerated_at: DateTime<Utc>,
}

/// TOTP was turned off; the secret, the recovery codes and open login challenges are void.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TotpDisabled {
    pub disabled_at: DateTime<Utc>,
}

/// The password of a login was right and a second factor is now due. `challenge_hash` is the
/// SHA-256 of the MFA token handed to the client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MfaChallengeIssued {
    pub challenge_hash: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A wrong code was sent for a login challenge; `failures` counts them so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MfaChallengeFailed {
    pub challenge_hash: String,
    pub failures: u32,
    pub failed_at: DateTime<Utc>,
}

/// A login challenge was answered with a valid second factor and cannot be used again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MfaChallengeCompleted {
    pub challenge_hash: String,
    pub completed_at: DateTime<Utc>,
}

/// Why an address is being verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationPurpose {
    /// The address the account was registered with.
    Registration,
    /// A new address that replaces the current one once verified.
    EmailChange,
}

/// How the owner of an address proves it: a six-digit code or a link with a token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationMethod {
    #[default]
    EmailCode,
    EmailLink,
}

impl VerificationMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmailCode => "email_code",
            Self::EmailLink => "email_link",
        }
    }
}

/// A code or link was issued for an address; it replaces every earlier one of the account.
/// `secret` is the mailed code or token, sealed; `secret_hash` is what a submission is checked
/// against: a keyed hash of a code, or the SHA-256 of a token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmailVerificationRequested {
    pub change_request_id: Uuid,
    pub purpose: VerificationPurpose,
    pub method: VerificationMethod,
    pub new_email: Personal<String>,
    pub new_email_index: String,
    pub secret: Personal<String>,
    pub secret_hash: String,
    pub expires_at: DateTime<Utc>,
    pub requested_at: DateTime<Utc>,
}

/// A wrong code was submitted; after the fifth the request is void.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmailVerificationFailed {
    pub change_request_id: Uuid,
    pub attempts: u32,
    pub voided: bool,
    pub failed_at: DateTime<Utc>,
}

/// The address was proven. For a change, `previous_email` is the address it replaces, which
/// is released in the same transaction as this event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmailVerified {
    pub change_request_id: Uuid,
    pub purpose: VerificationPurpose,
    pub email: Personal<String>,
    pub email_index: String,
    pub previous_email: Personal<Option<String>>,
    pub previous_email_index: Option<String>,
    pub verified_at: DateTime<Utc>,
}

/// How a password came to change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordChangeMethod {
    /// The user gave the current password; the session that asked stays open.
    Change,
    /// A reset token was used; every session ends.
    Reset,
}

/// The password changed; every session other than `kept_session_id` ends with this event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PasswordChanged {
    pub password_hash: Personal<String>,
    pub method: PasswordChangeMethod,
    pub kept_session_id: Option<Uuid>,
    pub changed_at: DateTime<Utc>,
}

/// A reset token was issued and is mailed to `email`; it voids every earlier one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PasswordResetRequested {
    pub email: Personal<String>,
    pub token: Personal<String>,
    pub token_hash: String,
    pub expires_at: DateTime<Utc>,
    pub requested_at: DateTime<Utc>,
}

/// A set of profile field values; an absent field is unchanged, a `null` inside clears it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Personal<Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<Personal<Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<Personal<Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Personal<Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Personal<Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Personal<Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture_url: Option<Personal<Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Personal<Map<String, Value>>>,
}

fn apply_text(change: Option<Personal<Option<String>>>, field: &mut Option<String>) {
    if let Some(change) = change {
        *field = change.into_known().flatten();
    }
}

impl ProfileChanges {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Names of the fields present, in a fixed order.
    pub fn field_names(&self) -> Vec<&'static str> {
        [
            ("display_name", self.display_name.is_some()),
            ("given_name", self.given_name.is_some()),
            ("family_name", self.family_name.is_some()),
            ("locale", self.locale.is_some()),
            ("timezone", self.timezone.is_some()),
            ("phone", self.phone.is_some()),
            ("picture_url", self.picture_url.is_some()),
            ("metadata", self.metadata.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect()
    }

    /// Writes the present fields into `profile`; an erased value clears its field.
    pub fn apply_to(self, profile: &mut Profile) {
        apply_text(self.display_name, &mut profile.display_name);
        apply_text(self.given_name, &mut profile.given_name);
        apply_text(self.family_name, &mut profile.family_name);
        apply_text(self.locale, &mut profile.locale);
        apply_text(self.timezone, &mut profile.timezone);
        apply_text(self.phone, &mut profile.phone);
        apply_text(self.picture_url, &mut profile.picture_url);
        if let Some(metadata) = self.metadata {
            profile.metadata = metadata.into_known().unwrap_or_default();
        }
    }
}
