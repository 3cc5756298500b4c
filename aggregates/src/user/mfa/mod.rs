//! Multi-factor rules of the user aggregate: TOTP enrolment, recovery codes, and the second
//! step of a login.
//!
//! Every accepted TOTP code records its time step, and a code is accepted only for a step
//! later than the last recorded one. The command bus appends with an optimistic lock on the
//! aggregate's sequence and retries on conflict. So of two parallel submissions of one code,
//! the second is decided on a state that already contains the first one's step, and loses.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::commands::{
    CompleteMfaChallenge, DisableTotp, RegenerateRecoveryCodes, SecondFactor, StartTotpSetup,
    VerifyTotpSetup,
};
use super::events::{
    MfaChallengeCompleted, MfaChallengeFailed, MfaChallengeIssued, RecoveryCodeUsed,
    RecoveryCodesRegenerated, TotpCodeAccepted, TotpDisabled, TotpEnabled, TotpSetupStarted,
    UserEvent,
};
use super::{User, UserError, UserStatus};
use crate::personal::Personal;
use crate::services::UserServices;
use crate::totp;

#[cfg(test)]
mod tests;

/// How long an unverified TOTP setup stays usable.
pub const TOTP_SETUP_LIFETIME: Duration = Duration::minutes(10);
/// How long the second step of a login may take.
pub const MFA_CHALLENGE_LIFETIME: Duration = Duration::minutes(5);
/// Wrong codes after which a login challenge is void.
pub const MFA_CHALLENGE_MAX_FAILURES: u32 = 5;
/// Recovery codes in one set.
pub const RECOVERY_CODE_COUNT: usize = 10;

/// A TOTP secret waiting for its first code.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PendingSetup {
    /// `None` once the user's data key is erased.
    secret: Option<String>,
    expires_at: DateTime<Utc>,
}

/// The second step of one login.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Challenge {
    hash: String,
    expires_at: DateTime<Utc>,
    failures: u32,
    completed: bool,
}

impl Challenge {
    fn is_open(&self, now: DateTime<Utc>) -> bool {
        !self.completed && self.failures < MFA_CHALLENGE_MAX_FAILURES && now < self.expires_at
    }
}

/// Multi-factor state of an account, folded from its MFA events.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MfaState {
    pending: Option<PendingSetup>,
    /// Base32 secret of the enabled TOTP; `None` while off or once erased.
    secret: Option<String>,
    enrolled_at: Option<DateTime<Utc>>,
    /// Time step of the last accepted code of the enabled secret.
    last_step: Option<u64>,
    /// Keyed hash of each recovery code of the current set; `None` once that code is spent.
    recovery_codes: Vec<Option<String>>,
    challenges: Vec<Challenge>,
}

impl MfaState {
    pub fn totp_enabled(&self) -> bool {
        self.enrolled_at.is_some()
    }

    pub fn enrolled_at(&self) -> Option<DateTime<Utc>> {
        self.enrolled_at
    }

    pub fn recovery_codes_remaining(&self) -> usize {
        self.recovery_codes.iter().flatten().count()
    }

    /// Finds the unspent step of `code` for the enabled secret.
    fn accept_code(&self, code: &str, now: DateTime<Utc>) -> Option<u64> {
        let secret = self.secret.as_deref()?;
        totp::matching_step(secret, code, now, self.last_step)
    }

    /// Finds the position of an unspent recovery code with this hash.
    fn find_recovery_code(&self, hash: &str) -> Option<usize> {
        self.recovery_codes
            .iter()
            .position(|stored| stored.as_deref() == Some(hash))
    }

    /// Returns the event that spends `factor`, or `None` when it is wrong or already spent.
    fn spend(&self, factor: &SecondFactor, now: DateTime<Utc>) -> Option<UserEvent> {
        match factor {
            SecondFactor::Totp(code) => self.accept_code(code, now).map(|step| {
                UserEvent::TotpCodeAccepted(TotpCodeAccepted {
                    step,
                    accepted_at: now,
                })
            }),
            SecondFactor::RecoveryCode { hash } => self.find_recovery_code(hash).map(|index| {
                UserEvent::RecoveryCodeUsed(RecoveryCodeUsed {
                    index,
                    used_at: now,
                })
            }),
        }
    }

    pub(super) fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::TotpSetupStarted(event) => {
                self.pending = Some(PendingSetup {
                    secret: event.secret.into_known(),
                    expires_at: event.expires_at,
                });
            }
            UserEvent::TotpEnabled(event) => {
                self.secret = self.pending.take().and_then(|pending| pending.secret);
                self.enrolled_at = Some(event.enabled_at);
                self.last_step = Some(event.step);
                self.recovery_codes = hashes(event.recovery_code_hashes);
            }
            UserEvent::TotpCodeAccepted(event) => self.last_step = Some(event.step),
            UserEvent::RecoveryCodeUsed(event) => {
                if let Some(code) = self.recovery_codes.get_mut(event.index) {
                    *code = None;
                }
            }
            UserEvent::RecoveryCodesRegenerated(event) => {
                self.recovery_codes = hashes(event.recovery_code_hashes);
            }
            UserEvent::TotpDisabled(_) => *self = Self::default(),
            UserEvent::MfaChallengeIssued(event) => {
                // Challenges that can no longer be completed are dropped here, so the state
                // contains only the open ones.
                let issued_at = event.issued_at;
                self.challenges
                    .retain(|challenge| challenge.is_open(issued_at));
                self.challenges.push(Challenge {
                    hash: event.challenge_hash,
                    expires_at: event.expires_at,
                    failures: 0,
                    completed: false,
                });
            }
            UserEvent::MfaChallengeFailed(event) => {
                if let Some(challenge) = self.challenge_mut(&event.challenge_hash) {
                    challenge.failures = event.failures;
                }
            }
            UserEvent::MfaChallengeCompleted(event) => {
                if let Some(challenge) = self.challenge_mut(&event.challenge_hash) {
                    challenge.completed = true;
                }
            }
            _ => {}
        }
    }

    /// Drops every open login challenge, so that no MFA token issued so far completes.
    pub(super) fn void_challenges(&mut self) {
        self.challenges.clear();
    }

    fn challenge_mut(&mut self, hash: &str) -> Option<&mut Challenge> {
        self.challenges
            .iter_mut()
            .find(|challenge| challenge.hash == hash)
    }
}

/// Converts a stored set of hashes into unspent codes. An erased set has no usable codes.
fn hashes(set: Personal<Vec<String>>) -> Vec<Option<String>> {
    set.into_known()
        .unwrap_or_default()
        .into_iter()
        .map(Some)
        .collect()
}

impl User {
    pub fn mfa(&self) -> &MfaState {
        &self.mfa
    }

    /// Checks `password` against the stored hash; an erased hash matches nothing.
    pub(super) async fn check_password(
        &self,
        password: &SecretString,
        services: &UserServices,
    ) -> Result<(), UserError> {
        let Some(hash) = self.password_hash.as_deref() else {
            return Err(UserError::InvalidCredentials);
        };
        let verified = services
            .hasher
            .verify(password, hash)
            .await
            .map_err(|error| UserError::Service(error.0))?;
        if verified {
            Ok(())
        } else {
            Err(UserError::InvalidCredentials)
        }
    }

    pub(super) async fn start_totp_setup(
        &mut self,
        command: StartTotpSetup,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self.is_registered() {
            return Err(UserError::NotFound);
        }
        self.check_password(&command.current_password, services)
            .await?;
        if self.mfa.totp_enabled() {
            return Err(UserError::TotpAlreadyEnabled);
        }

        let now = services.clock.now();
        let event = TotpSetupStarted {
            secret: Personal::Known(command.secret.expose_secret().to_owned()),
            started_at: now,
            expires_at: now + TOTP_SETUP_LIFETIME,
        };
        sink.write(UserEvent::TotpSetupStarted(event), self).await;
        Ok(())
    }

    pub(super) async fn verify_totp_setup(
        &mut self,
        command: VerifyTotpSetup,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self.is_registered() {
            return Err(UserError::NotFound);
        }
        if self.mfa.totp_enabled() {
            return Err(UserError::TotpAlreadyEnabled);
        }
        let now = services.clock.now();
        let Some(pending) = self
            .mfa
            .pending
            .as_ref()
            .filter(|pending| now < pending.expires_at)
        else {
            return Err(UserError::NoTotpSetup);
        };
        let Some(secret) = pending.secret.as_deref() else {
            return Err(UserError::NoTotpSetup);
        };

        let Some(step) = totp::matching_step(secret, &command.code, now, None) else {
            return Err(UserError::InvalidCredentials);
        };
        let event = TotpEnabled {
            step,
            recovery_code_hashes: Personal::Known(command.recovery_code_hashes),
            enabled_at: now,
        };
        sink.write(UserEvent::TotpEnabled(event), self).await;
        Ok(())
    }

    pub(super) async fn regenerate_recovery_codes(
        &mut self,
        command: RegenerateRecoveryCodes,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self.is_registered() {
            return Err(UserError::NotFound);
        }
        if !self.mfa.totp_enabled() {
            return Err(UserError::TotpNotEnabled);
        }
        let now = services.clock.now();
        let Some(step) = self.mfa.accept_code(&command.code, now) else {
            return Err(UserError::InvalidCredentials);
        };

        let accepted = TotpCodeAccepted {
            step,
            accepted_at: now,
        };
        sink.write(UserEvent::TotpCodeAccepted(accepted), self)
            .await;
        let regenerated = RecoveryCodesRegenerated {
            recovery_code_hashes: Personal::Known(command.recovery_code_hashes),
            regenerated_at: now,
        };
        sink.write(UserEvent::RecoveryCodesRegenerated(regenerated), self)
            .await;
        Ok(())
    }

    pub(super) async fn disable_totp(
        &mut self,
        command: DisableTotp,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self.is_registered() {
            return Err(UserError::NotFound);
        }
        self.check_password(&command.current_password, services)
            .await?;
        if !self.mfa.totp_enabled() {
            return Err(UserError::TotpNotEnabled);
        }
        let now = services.clock.now();
        let Some(spent) = self.mfa.spend(&command.factor, now) else {
            return Err(UserError::InvalidCredentials);
        };

        sink.write(spent, self).await;
        let disabled = TotpDisabled { disabled_at: now };
        sink.write(UserEvent::TotpDisabled(disabled), self).await;
        Ok(())
    }

    /// Opens a login challenge for a password that was checked at `credentials_version`. A
    /// password change, reset or suspension since then makes that check void.
    pub(super) async fn issue_mfa_challenge(
        &mut self,
        challenge_hash: String,
        credentials_version: u64,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self.is_registered() {
            return Err(UserError::NotFound);
        }
        if self.status == UserStatus::Suspended {
            return Err(UserError::Suspended);
        }
        if credentials_version < self.sessions_valid_from() {
            return Err(UserError::InvalidCredentials);
        }
        if !self.mfa.totp_enabled() {
            return Err(UserError::TotpNotEnabled);
        }

        let now = services.clock.now();
        let event = MfaChallengeIssued {
            challenge_hash,
            issued_at: now,
            expires_at: now + MFA_CHALLENGE_LIFETIME,
        };
        sink.write(UserEvent::MfaChallengeIssued(event), self).await;
        Ok(())
    }

    /// Completes the challenge with a valid factor, or records one more failure. A challenge
    /// that is unknown, expired, completed or failed too often is rejected without an event.
    pub(super) async fn complete_mfa_challenge(
        &mut self,
        command: CompleteMfaChallenge,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if self.status == UserStatus::Suspended {
            return Err(UserError::Suspended);
        }
        let now = services.clock.now();
        let Some(challenge) = self
            .mfa
            .challenges
            .iter()
            .find(|challenge| challenge.hash == command.challenge_hash)
            .filter(|challenge| challenge.is_open(now))
            .cloned()
        else {
            return Err(UserError::ChallengeInvalid);
        };
        if !self.mfa.totp_enabled() {
            return Err(UserError::ChallengeInvalid);
        }

        let Some(spent) = self.mfa.spend(&command.factor, now) else {
            let failed = MfaChallengeFailed {
                challenge_hash: challenge.hash,
                failures: challenge.failures + 1,
                failed_at: now,
            };
            sink.write(UserEvent::MfaChallengeFailed(failed), self)
                .await;
            return Ok(());
        };
        sink.write(spent, self).await;
        let completed = MfaChallengeCompleted {
            challenge_hash: challenge.hash,
            completed_at: now,
        };
        sink.write(UserEvent::MfaChallengeCompleted(completed), self)
            .await;
        Ok(())
    }
}
