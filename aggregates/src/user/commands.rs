//! Commands of the user aggregate, in the imperative.

use chrono::Duration;
use secrecy::SecretString;
use uuid::Uuid;

use super::Profile;
use super::events::{ProfileChanges, VerificationMethod};
use crate::personal::Personal;
use crate::values::{Email, Locale, Metadata, Name, Phone, PictureUrl, TimeZone};

pub enum UserCommand {
    Register(RegisterUser),
    UpdateProfile(UpdateProfile),
    /// Shuts the account out of every credential until it is unsuspended.
    Suspend {
        reason: Option<String>,
    },
    Unsuspend,
    StartTotpSetup(StartTotpSetup),
    VerifyTotpSetup(VerifyTotpSetup),
    RegenerateRecoveryCodes(RegenerateRecoveryCodes),
    DisableTotp(DisableTotp),
    /// Opens the second step of a login whose password was already checked.
    IssueMfaChallenge {
        challenge_hash: String,
        /// The user's version whose password the login checked; a challenge is refused when
        /// a later event ended every session.
        credentials_version: u64,
    },
    CompleteMfaChallenge(CompleteMfaChallenge),
    /// Registers the account with a code, mailed to its address, that verifies it.
    RegisterWithVerification(RegisterUser, VerificationSecrets),
    RequestEmailChange(RequestEmailChange),
    /// Issues a new secret for the pending verification; older ones stop working.
    ResendVerification(VerificationSecrets),
    VerifyEmailCode {
        change_request_id: Uuid,
        code_hash: String,
    },
    VerifyEmailLink {
        token_hash: String,
    },
    ChangePassword(ChangePassword),
    RequestPasswordReset {
        token: String,
        token_hash: String,
        lifetime: Duration,
    },
    ConfirmPasswordReset {
        token_hash: String,
        new_password: SecretString,
    },
}

/// Issues a new TOTP secret for enrolment, replacing any unverified one.
#[derive(Clone)]
pub struct StartTotpSetup {
    /// Base32 (RFC 4648, no padding) of the random secret.
    pub secret: SecretString,
    pub current_password: SecretString,
}

/// Turns TOTP on when `code` comes from the pending secret.
#[derive(Clone)]
pub struct VerifyTotpSetup {
    pub code: String,
    /// Keyed hashes of the recovery codes the client is shown once.
    pub recovery_code_hashes: Vec<String>,
}

/// Replaces the recovery codes, after a valid TOTP code.
#[derive(Clone)]
pub struct RegenerateRecoveryCodes {
    pub code: String,
    pub recovery_code_hashes: Vec<String>,
}

/// Turns TOTP off, after the password and a second factor.
#[derive(Clone)]
pub struct DisableTotp {
    pub current_password: SecretString,
    pub factor: SecondFactor,
}

/// Answers a login challenge. A wrong factor is recorded as a failed attempt, not rejected,
/// so that the count of failures survives the command.
#[derive(Clone)]
pub struct CompleteMfaChallenge {
    pub challenge_hash: String,
    pub factor: SecondFactor,
}

/// What a user presents as the second factor.
#[derive(Clone)]
pub enum SecondFactor {
    /// A six-digit code from the authenticator app.
    Totp(String),
    /// The keyed hash of a recovery code; the code itself never reaches the aggregate.
    RecoveryCode { hash: String },
}

/// Fresh secrets for a verification: the aggregate mails the code or the token, depending on
/// the method, and keeps only the matching hash.
#[derive(Clone)]
pub struct VerificationSecrets {
    pub change_request_id: Uuid,
    pub code: String,
    /// Keyed hash of `code`.
    pub code_hash: String,
    pub token: String,
    /// SHA-256 of `token`.
    pub token_hash: String,
    pub lifetime: Duration,
}

/// Asks to move the account to `new_email`, which must be verified first.
#[derive(Clone)]
pub struct RequestEmailChange {
    pub new_email: Email,
    pub current_password: SecretString,
    pub method: VerificationMethod,
    pub secrets: VerificationSecrets,
    /// Whether another account holds `new_email` now. The claim is checked again, atomically,
    /// when the address is verified.
    pub new_email_claimed: bool,
}

/// Replaces the password, given the current one. `session_id` is the session that asked,
/// which stays open.
#[derive(Clone)]
pub struct ChangePassword {
    pub current_password: SecretString,
    pub new_password: SecretString,
    pub session_id: Option<Uuid>,
}

/// Opens an account for a new, canonical email address.
#[derive(Clone)]
pub struct RegisterUser {
    pub user_id: Uuid,
    pub email: Email,
    pub password: SecretString,
    pub profile: ProfileDraft,
}

/// Changes the sent profile fields, optionally only if the user is still at `expected_version`.
#[derive(Clone)]
pub struct UpdateProfile {
    pub patch: ProfilePatch,
    pub expected_version: Option<u64>,
}

/// Optional profile fields given at registration.
#[derive(Clone, Debug, Default)]
pub struct ProfileDraft {
    pub display_name: Option<Name>,
    pub given_name: Option<Name>,
    pub family_name: Option<Name>,
    pub locale: Option<Locale>,
    pub timezone: Option<TimeZone>,
    pub phone: Option<Phone>,
    pub picture_url: Option<PictureUrl>,
    pub metadata: Option<Metadata>,
}

/// A partial profile update: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Clone, Debug, Default)]
pub struct ProfilePatch {
    pub display_name: Option<Option<Name>>,
    pub given_name: Option<Option<Name>>,
    pub family_name: Option<Option<Name>>,
    pub locale: Option<Option<Locale>>,
    pub timezone: Option<Option<TimeZone>>,
    pub phone: Option<Option<Phone>>,
    pub picture_url: Option<Option<PictureUrl>>,
    pub metadata: Option<Option<Metadata>>,
}

fn text<T>(value: Option<T>, as_str: fn(&T) -> &str) -> Option<Personal<Option<String>>> {
    value.map(|value| Personal::Known(Some(as_str(&value).to_owned())))
}

impl ProfileDraft {
    /// Lists the fields that were given, as the registration event stores them.
    pub(crate) fn into_changes(self) -> ProfileChanges {
        ProfileChanges {
            display_name: text(self.display_name, Name::as_str),
            given_name: text(self.given_name, Name::as_str),
            family_name: text(self.family_name, Name::as_str),
            locale: text(self.locale, Locale::as_str),
            timezone: text(self.timezone, TimeZone::as_str),
            phone: text(self.phone, Phone::as_str),
            picture_url: text(self.picture_url, PictureUrl::as_str),
            metadata: self
                .metadata
                .map(|metadata| Personal::Known(metadata.into_map())),
        }
    }
}

/// Returns the change to one text field, or `None` when the new value equals the current one.
fn changed<T>(
    patch: Option<Option<T>>,
    current: &Option<String>,
    as_str: fn(&T) -> &str,
) -> Option<Personal<Option<String>>> {
    let new = patch?.map(|value| as_str(&value).to_owned());
    (new != *current).then_some(Personal::Known(new))
}

impl ProfilePatch {
    /// Compares the patch with `current` and keeps only the fields whose value changes.
    pub(crate) fn changes_from(self, current: &Profile) -> ProfileChanges {
        let metadata = self.metadata.and_then(|metadata| {
            let new = metadata.map(Metadata::into_map).unwrap_or_default();
            (new != current.metadata).then_some(Personal::Known(new))
        });
        ProfileChanges {
            display_name: changed(self.display_name, &current.display_name, Name::as_str),
            given_name: changed(self.given_name, &current.given_name, Name::as_str),
            family_name: changed(self.family_name, &current.family_name, Name::as_str),
            locale: changed(self.locale, &current.locale, Locale::as_str),
            timezone: changed(self.timezone, &current.timezone, TimeZone::as_str),
            phone: changed(self.phone, &current.phone, Phone::as_str),
            picture_url: changed(self.picture_url, &current.picture_url, PictureUrl::as_str),
            metadata,
        }
    }
}
