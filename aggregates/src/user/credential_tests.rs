//! Given/when/then tests of the credential rules: codes, links, password change and reset.

use chrono::Duration;
use secrecy::SecretString;
use uuid::Uuid;

use super::tests::{Argon2Hasher, framework, now, registered};
use super::*;
use crate::services::PasswordHasher;
use crate::values::Email;

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "violet ostrich paints thunder";

/// Builds a registration with a real password hash, so that password checks can pass.
async fn registered_with_password(user_id: Uuid) -> UserEvent {
    let hash = Argon2Hasher
        .hash(&SecretString::from(PASSWORD))
        .await
        .expect("hash");
    let UserEvent::UserRegistered(mut event) = registered(user_id) else {
        unreachable!("registered() builds a registration");
    };
    event.password_hash = Personal::Known(hash);
    UserEvent::UserRegistered(event)
}

fn secrets(change_request_id: Uuid, code_hash: &str) -> VerificationSecrets {
    VerificationSecrets {
        change_request_id,
        code: "123456".to_owned(),
        code_hash: code_hash.to_owned(),
        token: "lev_token".to_owned(),
        token_hash: format!("link-{code_hash}"),
        lifetime: Duration::hours(1),
    }
}

fn change_requested(change_request_id: Uuid, code_hash: &str) -> UserEvent {
    UserEvent::EmailVerificationRequested(EmailVerificationRequested {
        change_request_id,
        purpose: VerificationPurpose::EmailChange,
        method: VerificationMethod::EmailCode,
        new_email: Personal::Known("lovelace@example.com".to_owned()),
        new_email_index: "moc.elpmaxe@ecalevol".to_owned(),
        secret: Personal::Known("123456".to_owned()),
        secret_hash: code_hash.to_owned(),
        expires_at: now() + Duration::hours(1),
        requested_at: now(),
    })
}

fn failed(change_request_id: Uuid, attempts: u32) -> UserEvent {
    UserEvent::EmailVerificationFailed(EmailVerificationFailed {
        change_request_id,
        attempts,
        voided: attempts >= MAX_CODE_ATTEMPTS,
        failed_at: now(),
    })
}

fn reset_requested(token_hash: &str) -> UserEvent {
    UserEvent::PasswordResetRequested(PasswordResetRequested {
        email: Personal::Known("ada@example.com".to_owned()),
        token: Personal::Known(format!("lpr_{token_hash}")),
        token_hash: token_hash.to_owned(),
        expires_at: now() + Duration::hours(1),
        requested_at: now(),
    })
}

fn verify(change_request_id: Uuid, code_hash: &str) -> UserCommand {
    UserCommand::VerifyEmailCode {
        change_request_id,
        code_hash: code_hash.to_owned(),
    }
}

fn confirm(token_hash: &str) -> UserCommand {
    UserCommand::ConfirmPasswordReset {
        token_hash: token_hash.to_owned(),
        new_password: SecretString::from(NEW_PASSWORD),
    }
}

#[tokio::test]
async fn wrong_code_is_recorded_as_attempt() {
    let user_id = Uuid::now_v7();
    let request = Uuid::now_v7();

    framework()
        .given(vec![registered(user_id), change_requested(request, "good")])
        .when_async(verify(request, "bad"))
        .await
        .then_expect_events(vec![failed(request, 1)]);
}

#[tokio::test]
async fn fifth_wrong_code_voids_request() {
    let user_id = Uuid::now_v7();
    let request = Uuid::now_v7();
    let mut given = vec![registered(user_id), change_requested(request, "good")];
    given.extend((1..=4).map(|attempts| failed(request, attempts)));

    framework()
        .given(given)
        .when_async(verify(request, "bad"))
        .await
        .then_expect_events(vec![failed(request, 5)]);
}

#[tokio::test]
async fn voided_request_refuses_right_code() {
    let user_id = Uuid::now_v7();
    let request = Uuid::now_v7();
    let mut given = vec![registered(user_id), change_requested(request, "good")];
    given.extend((1..=5).map(|attempts| failed(request, attempts)));

    framework()
        .given(given)
        .when_async(verify(request, "good"))
        .await
        .then_expect_error(UserError::InvalidCode);
}

#[tokio::test]
async fn right_code_moves_address() {
    let user_id = Uuid::now_v7();
    let request = Uuid::now_v7();

    framework()
        .given(vec![registered(user_id), change_requested(request, "good")])
        .when_async(verify(request, "good"))
        .await
        .then_expect_events(vec![UserEvent::EmailVerified(EmailVerified {
            change_request_id: request,
            purpose: VerificationPurpose::EmailChange,
            email: Personal::Known("lovelace@example.com".to_owned()),
            email_index: "moc.elpmaxe@ecalevol".to_owned(),
            previous_email: Personal::Known(Some("ada@example.com".to_owned())),
            previous_email_index: Some("moc.elpmaxe@ada".to_owned()),
            verified_at: now(),
        })]);
}

#[tokio::test]
async fn resend_keeps_request_and_replaces_code() {
    let user_id = Uuid::now_v7();
    let request = Uuid::now_v7();

    let events = framework()
        .given(vec![registered(user_id), change_requested(request, "old")])
        .when_async(UserCommand::ResendVerification(secrets(Uuid::nil(), "new")))
        .await
        .inspect_result()
        .expect("resent");

    let [UserEvent::EmailVerificationRequested(event)] = events.as_slice() else {
        panic!("expected one EmailVerificationRequested, got {events:?}");
    };
    assert_eq!(event.change_request_id, request);
    assert_eq!(event.secret_hash, "new");
}

#[tokio::test]
async fn resend_without_pending_is_rejected() {
    let verified = UserEvent::EmailVerified(EmailVerified {
        change_request_id: Uuid::now_v7(),
        purpose: VerificationPurpose::Registration,
        email: Personal::Known("ada@example.com".to_owned()),
        email_index: "moc.elpmaxe@ada".to_owned(),
        previous_email: Personal::Known(None),
        previous_email_index: None,
        verified_at: now(),
    });

    framework()
        .given(vec![registered(Uuid::now_v7()), verified])
        .when_async(UserCommand::ResendVerification(secrets(Uuid::nil(), "new")))
        .await
        .then_expect_error(UserError::NoPendingVerification);
}

#[tokio::test]
async fn resend_for_unverified_address_starts_verification() {
    let user_id = Uuid::now_v7();
    let request = Uuid::now_v7();
    let reset = UserEvent::PasswordChanged(PasswordChanged {
        password_hash: Personal::Known("hash".to_owned()),
        method: PasswordChangeMethod::Reset,
        kept_session_id: None,
        changed_at: now(),
    });

    let events = framework()
        .given(vec![
            registered(user_id),
            change_requested(Uuid::now_v7(), "old"),
            reset,
        ])
        .when_async(UserCommand::ResendVerification(secrets(request, "new")))
        .await
        .inspect_result()
        .expect("a new verification");

    let [UserEvent::EmailVerificationRequested(requested)] = events.as_slice() else {
        panic!("expected one verification request, got {events:?}");
    };
    assert_eq!(requested.change_request_id, request);
    assert_eq!(requested.purpose, VerificationPurpose::Registration);
    assert_eq!(
        requested.new_email.known().map(String::as_str),
        Some("ada@example.com")
    );
}

#[tokio::test]
async fn email_change_needs_current_password() {
    let user_id = Uuid::now_v7();
    let command = UserCommand::RequestEmailChange(RequestEmailChange {
        new_email: Email::parse("lovelace@example.com").expect("valid"),
        current_password: SecretString::from("wrong horse battery"),
        method: VerificationMethod::EmailCode,
        secrets: secrets(Uuid::now_v7(), "code"),
        new_email_claimed: true,
    });

    framework()
        .given(vec![registered_with_password(user_id).await])
        .when_async(command)
        .await
        .then_expect_error(UserError::InvalidCredentials);
}

#[tokio::test]
async fn older_reset_token_is_void() {
    let user_id = Uuid::now_v7();

    framework()
        .given(vec![
            registered(user_id),
            reset_requested("first"),
            reset_requested("second"),
        ])
        .when_async(confirm("first"))
        .await
        .then_expect_error(UserError::InvalidToken);
}

#[tokio::test]
async fn password_change_voids_reset_token() {
    let user_id = Uuid::now_v7();
    let changed = UserEvent::PasswordChanged(PasswordChanged {
        password_hash: Personal::Known("hash".to_owned()),
        method: PasswordChangeMethod::Change,
        kept_session_id: None,
        changed_at: now(),
    });

    framework()
        .given(vec![registered(user_id), reset_requested("token"), changed])
        .when_async(confirm("token"))
        .await
        .then_expect_error(UserError::InvalidToken);
}

#[tokio::test]
async fn password_reset_voids_pending_change() {
    let user_id = Uuid::now_v7();
    let request = Uuid::now_v7();
    let reset = UserEvent::PasswordChanged(PasswordChanged {
        password_hash: Personal::Known("hash".to_owned()),
        method: PasswordChangeMethod::Reset,
        kept_session_id: None,
        changed_at: now(),
    });

    framework()
        .given(vec![
            registered(user_id),
            change_requested(request, "good"),
            reset,
        ])
        .when_async(verify(request, "good"))
        .await
        .then_expect_error(UserError::InvalidCode);
}

#[tokio::test]
async fn reset_of_suspended_account_is_refused() {
    let user_id = Uuid::now_v7();
    let suspended = UserEvent::UserSuspended(UserSuspended {
        reason: Personal::Known(None),
        suspended_at: now(),
    });

    framework()
        .given(vec![
            registered(user_id),
            reset_requested("token"),
            suspended,
        ])
        .when_async(confirm("token"))
        .await
        .then_expect_error(UserError::Suspended);
}

#[tokio::test]
async fn reset_confirm_ends_every_session() {
    let user_id = Uuid::now_v7();

    let events = framework()
        .given(vec![registered(user_id), reset_requested("token")])
        .when_async(confirm("token"))
        .await
        .inspect_result()
        .expect("reset");

    let [UserEvent::PasswordChanged(event)] = events.as_slice() else {
        panic!("expected one PasswordChanged, got {events:?}");
    };
    assert_eq!(event.method, PasswordChangeMethod::Reset);
    assert_eq!(event.kept_session_id, None);
}

#[tokio::test]
async fn change_to_claimed_address_is_rejected() {
    let user_id = Uuid::now_v7();
    let command = UserCommand::RequestEmailChange(RequestEmailChange {
        new_email: Email::parse("grace@example.com").expect("valid"),
        current_password: SecretString::from(PASSWORD),
        method: VerificationMethod::EmailCode,
        secrets: secrets(Uuid::now_v7(), "code"),
        new_email_claimed: true,
    });

    framework()
        .given(vec![registered_with_password(user_id).await])
        .when_async(command)
        .await
        .then_expect_error(UserError::EmailTaken);
}
