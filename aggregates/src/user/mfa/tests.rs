//! Given/when/then tests of the MFA rules, with real argon2 hashes and TOTP codes computed for
//! the fixed clock of the test framework.

use chrono::Duration;
use secrecy::SecretString;
use uuid::Uuid;

use super::*;
use crate::services::PasswordHasher;
use crate::user::tests::{Argon2Hasher, framework, now, registered, suspended, unsuspended};
use crate::user::{UserCommand, UserRegistered};

const PASSWORD: &str = "correct horse battery staple";
/// Base32 of the RFC 6238 test secret "12345678901234567890".
const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const CHALLENGE: &str = "challenge-hash";

/// Builds the registration event with a real hash of [`PASSWORD`], so password checks pass.
async fn registered_with_password(user_id: Uuid) -> UserEvent {
    let hash = Argon2Hasher
        .hash(&SecretString::from(PASSWORD))
        .await
        .expect("hash");
    let UserEvent::UserRegistered(event) = registered(user_id) else {
        unreachable!("registered returns UserRegistered");
    };
    UserEvent::UserRegistered(UserRegistered {
        password_hash: Personal::Known(hash),
        ..event
    })
}

fn step_now() -> u64 {
    totp::step_at(now())
}

/// Computes the code of `step` for [`SECRET`].
fn code_of(step: u64) -> String {
    totp::code_for_base32(SECRET, step * totp::STEP_SECONDS).expect("valid secret")
}

fn hashes(prefix: &str) -> Vec<String> {
    (0..RECOVERY_CODE_COUNT)
        .map(|index| format!("{prefix}-{index}"))
        .collect()
}

fn setup_started(expires_at: DateTime<Utc>) -> UserEvent {
    UserEvent::TotpSetupStarted(TotpSetupStarted {
        secret: Personal::Known(SECRET.to_owned()),
        started_at: now(),
        expires_at,
    })
}

/// TOTP enabled with a code of the current step, recovery codes `old-0` to `old-9`.
fn enabled_history(user_id: Uuid) -> Vec<UserEvent> {
    vec![
        registered(user_id),
        setup_started(now() + TOTP_SETUP_LIFETIME),
        UserEvent::TotpEnabled(TotpEnabled {
            step: step_now(),
            recovery_code_hashes: Personal::Known(hashes("old")),
            enabled_at: now(),
        }),
    ]
}

fn challenge_issued() -> UserEvent {
    UserEvent::MfaChallengeIssued(MfaChallengeIssued {
        challenge_hash: CHALLENGE.to_owned(),
        issued_at: now(),
        expires_at: now() + MFA_CHALLENGE_LIFETIME,
    })
}

fn complete(factor: SecondFactor) -> UserCommand {
    UserCommand::CompleteMfaChallenge(CompleteMfaChallenge {
        challenge_hash: CHALLENGE.to_owned(),
        factor,
    })
}

fn failed(failures: u32) -> UserEvent {
    UserEvent::MfaChallengeFailed(MfaChallengeFailed {
        challenge_hash: CHALLENGE.to_owned(),
        failures,
        failed_at: now(),
    })
}

fn completed() -> UserEvent {
    UserEvent::MfaChallengeCompleted(MfaChallengeCompleted {
        challenge_hash: CHALLENGE.to_owned(),
        completed_at: now(),
    })
}

#[tokio::test]
async fn setup_records_sealed_secret_and_expiry() {
    let user_id = Uuid::now_v7();
    let command = UserCommand::StartTotpSetup(StartTotpSetup {
        secret: SecretString::from(SECRET),
        current_password: SecretString::from(PASSWORD),
    });

    framework()
        .given(vec![registered_with_password(user_id).await])
        .when_async(command)
        .await
        .then_expect_events(vec![setup_started(now() + Duration::minutes(10))]);
}

#[tokio::test]
async fn setup_with_wrong_password_is_rejected() {
    let user_id = Uuid::now_v7();
    let command = UserCommand::StartTotpSetup(StartTotpSetup {
        secret: SecretString::from(SECRET),
        current_password: SecretString::from("wrong horse battery staple"),
    });

    framework()
        .given(vec![registered_with_password(user_id).await])
        .when_async(command)
        .await
        .then_expect_error(UserError::InvalidCredentials);
}

#[tokio::test]
async fn setup_while_enabled_is_rejected() {
    let user_id = Uuid::now_v7();
    let mut history = enabled_history(user_id);
    history[0] = registered_with_password(user_id).await;
    let command = UserCommand::StartTotpSetup(StartTotpSetup {
        secret: SecretString::from(SECRET),
        current_password: SecretString::from(PASSWORD),
    });

    framework()
        .given(history)
        .when_async(command)
        .await
        .then_expect_error(UserError::TotpAlreadyEnabled);
}

#[tokio::test]
async fn verify_with_pending_code_enables_totp() {
    let user_id = Uuid::now_v7();
    let command = UserCommand::VerifyTotpSetup(VerifyTotpSetup {
        code: code_of(step_now()),
        recovery_code_hashes: hashes("new"),
    });

    framework()
        .given(vec![
            registered(user_id),
            setup_started(now() + TOTP_SETUP_LIFETIME),
        ])
        .when_async(command)
        .await
        .then_expect_events(vec![UserEvent::TotpEnabled(TotpEnabled {
            step: step_now(),
            recovery_code_hashes: Personal::Known(hashes("new")),
            enabled_at: now(),
        })]);
}

#[tokio::test]
async fn verify_with_wrong_code_is_rejected() {
    let user_id = Uuid::now_v7();
    let command = UserCommand::VerifyTotpSetup(VerifyTotpSetup {
        code: code_of(step_now() - 2),
        recovery_code_hashes: hashes("new"),
    });

    framework()
        .given(vec![
            registered(user_id),
            setup_started(now() + TOTP_SETUP_LIFETIME),
        ])
        .when_async(command)
        .await
        .then_expect_error(UserError::InvalidCredentials);
}

#[tokio::test]
async fn verify_after_setup_expiry_is_rejected() {
    let user_id = Uuid::now_v7();
    let command = UserCommand::VerifyTotpSetup(VerifyTotpSetup {
        code: code_of(step_now()),
        recovery_code_hashes: hashes("new"),
    });

    framework()
        .given(vec![registered(user_id), setup_started(now())])
        .when_async(command)
        .await
        .then_expect_error(UserError::NoTotpSetup);
}

#[tokio::test]
async fn challenge_needs_totp_enabled() {
    let user_id = Uuid::now_v7();

    framework()
        .given(vec![registered(user_id)])
        .when_async(UserCommand::IssueMfaChallenge {
            challenge_hash: CHALLENGE.to_owned(),
            credentials_version: 1,
        })
        .await
        .then_expect_error(UserError::TotpNotEnabled);
}

#[tokio::test]
async fn setup_code_replay_fails_the_challenge() {
    let user_id = Uuid::now_v7();
    let mut history = enabled_history(user_id);
    history.push(challenge_issued());

    framework()
        .given(history)
        .when_async(complete(SecondFactor::Totp(code_of(step_now()))))
        .await
        .then_expect_events(vec![failed(1)]);
}

#[tokio::test]
async fn next_step_code_completes_the_challenge() {
    let user_id = Uuid::now_v7();
    let mut history = enabled_history(user_id);
    history.push(challenge_issued());

    framework()
        .given(history)
        .when_async(complete(SecondFactor::Totp(code_of(step_now() + 1))))
        .await
        .then_expect_events(vec![
            UserEvent::TotpCodeAccepted(TotpCodeAccepted {
                step: step_now() + 1,
                accepted_at: now(),
            }),
            completed(),
        ]);
}

#[tokio::test]
async fn completed_challenge_cannot_be_reused() {
    let user_id = Uuid::now_v7();
    let mut history = enabled_history(user_id);
    history.extend([challenge_issued(), completed()]);

    framework()
        .given(history)
        .when_async(complete(SecondFactor::RecoveryCode {
            hash: "old-0".to_owned(),
        }))
        .await
        .then_expect_error(UserError::ChallengeInvalid);
}

#[tokio::test]
async fn fifth_failure_voids_the_challenge() {
    let user_id = Uuid::now_v7();
    let mut history = enabled_history(user_id);
    history.push(challenge_issued());
    history.extend((1..=MFA_CHALLENGE_MAX_FAILURES).map(failed));

    framework()
        .given(history)
        .when_async(complete(SecondFactor::Totp(code_of(step_now() + 1))))
        .await
        .then_expect_error(UserError::ChallengeInvalid);
}

#[tokio::test]
async fn recovery_code_is_single_use() {
    let user_id = Uuid::now_v7();
    let mut history = enabled_history(user_id);
    history.push(UserEvent::RecoveryCodeUsed(RecoveryCodeUsed {
        index: 0,
        used_at: now(),
    }));
    history.push(challenge_issued());

    framework()
        .given(history)
        .when_async(complete(SecondFactor::RecoveryCode {
            hash: "old-0".to_owned(),
        }))
        .await
        .then_expect_events(vec![failed(1)]);
}

#[tokio::test]
async fn recovery_code_completes_the_challenge() {
    let user_id = Uuid::now_v7();
    let mut history = enabled_history(user_id);
    history.push(challenge_issued());

    framework()
        .given(history)
        .when_async(complete(SecondFactor::RecoveryCode {
            hash: "old-3".to_owned(),
        }))
        .await
        .then_expect_events(vec![
            UserEvent::RecoveryCodeUsed(RecoveryCodeUsed {
                index: 3,
                used_at: now(),
            }),
            completed(),
        ]);
}

#[tokio::test]
async fn regeneration_voids_old_recovery_codes() {
    let user_id = Uuid::now_v7();
    let mut history = enabled_history(user_id);
    history.push(UserEvent::RecoveryCodesRegenerated(
        RecoveryCodesRegenerated {
            recovery_code_hashes: Personal::Known(hashes("new")),
            regenerated_at: now(),
        },
    ));
    history.push(challenge_issued());

    framework()
        .given(history)
        .when_async(complete(SecondFactor::RecoveryCode {
            hash: "old-0".to_owned(),
        }))
        .await
        .then_expect_events(vec![failed(1)]);
}

#[tokio::test]
async fn suspended_user_cannot_complete_challenge() {
    let user_id = Uuid::now_v7();
    let mut history = enabled_history(user_id);
    history.extend([challenge_issued(), suspended()]);

    framework()
        .given(history)
        .when_async(complete(SecondFactor::Totp(code_of(step_now() + 1))))
        .await
        .then_expect_error(UserError::Suspended);
}

#[tokio::test]
async fn disable_spends_factor_and_turns_totp_off() {
    let user_id = Uuid::now_v7();
    let mut history = enabled_history(user_id);
    history[0] = registered_with_password(user_id).await;
    let command = UserCommand::DisableTotp(DisableTotp {
        current_password: SecretString::from(PASSWORD),
        factor: SecondFactor::Totp(code_of(step_now() + 1)),
    });

    framework()
        .given(history)
        .when_async(command)
        .await
        .then_expect_events(vec![
            UserEvent::TotpCodeAccepted(TotpCodeAccepted {
                step: step_now() + 1,
                accepted_at: now(),
            }),
            UserEvent::TotpDisabled(TotpDisabled { disabled_at: now() }),
        ]);
}

#[test]
fn fold_tracks_enrolment_and_codes() {
    let user_id = Uuid::now_v7();
    let mut user = User::default();

    for event in enabled_history(user_id) {
        cqrs_es::Aggregate::apply(&mut user, event);
    }
    cqrs_es::Aggregate::apply(
        &mut user,
        UserEvent::RecoveryCodeUsed(RecoveryCodeUsed {
            index: 1,
            used_at: now(),
        }),
    );

    assert!(user.mfa().totp_enabled());
    assert_eq!(user.mfa().enrolled_at(), Some(now()));
    assert_eq!(
        user.mfa().recovery_codes_remaining(),
        RECOVERY_CODE_COUNT - 1
    );
}

fn password_reset() -> UserEvent {
    UserEvent::PasswordChanged(crate::user::PasswordChanged {
        password_hash: Personal::Known("new-hash".to_owned()),
        method: crate::user::PasswordChangeMethod::Reset,
        kept_session_id: None,
        changed_at: now(),
    })
}

#[tokio::test]
async fn reset_voids_open_challenges() {
    let user_id = Uuid::now_v7();
    let mut history = enabled_history(user_id);
    history.extend([challenge_issued(), password_reset()]);

    framework()
        .given(history)
        .when_async(complete(SecondFactor::Totp(code_of(step_now() + 1))))
        .await
        .then_expect_error(UserError::ChallengeInvalid);
}

#[tokio::test]
async fn stale_password_challenge_rejected() {
    let user_id = Uuid::now_v7();
    let mut history = enabled_history(user_id);
    // The login read the account as it was before the reset was appended.
    let checked_at = history.len() as u64;
    history.push(password_reset());

    framework()
        .given(history)
        .when_async(UserCommand::IssueMfaChallenge {
            challenge_hash: CHALLENGE.to_owned(),
            credentials_version: checked_at,
        })
        .await
        .then_expect_error(UserError::InvalidCredentials);
}

#[tokio::test]
async fn fresh_password_challenge_issued() {
    let user_id = Uuid::now_v7();
    let mut history = enabled_history(user_id);
    history.push(password_reset());
    let checked_at = history.len() as u64;

    let events = framework()
        .given(history)
        .when_async(UserCommand::IssueMfaChallenge {
            challenge_hash: CHALLENGE.to_owned(),
            credentials_version: checked_at,
        })
        .await
        .inspect_result()
        .expect("challenge issued");
    assert!(matches!(
        events.as_slice(),
        [UserEvent::MfaChallengeIssued(_)]
    ));
}

#[tokio::test]
async fn challenge_void_after_suspension() {
    let user_id = Uuid::now_v7();
    let mut history = enabled_history(user_id);
    history.extend([challenge_issued(), suspended(), unsuspended()]);

    framework()
        .given(history)
        .when_async(complete(SecondFactor::Totp(code_of(step_now() + 1))))
        .await
        .then_expect_error(UserError::ChallengeInvalid);
}
