use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::services::{BlindIndex, Clock, PasswordHasher, ServiceError};
use crate::values::{Email, Locale, Metadata, Name};

pub(super) struct Argon2Hasher;

#[async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &SecretString) -> Result<String, ServiceError> {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| ServiceError(error.to_string()))
    }

    async fn verify(&self, password: &SecretString, hash: &str) -> Result<bool, ServiceError> {
        let hash = PasswordHash::new(hash).map_err(|error| ServiceError(error.to_string()))?;
        Ok(Argon2::default()
            .verify_password(password.expose_secret().as_bytes(), &hash)
            .is_ok())
    }
}

struct FixedClock(DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// Indexes by reversing the address: one-way enough for rule tests, and deterministic.
struct ReversedIndex;

impl BlindIndex for ReversedIndex {
    fn email_index(&self, email: &Email) -> String {
        email.as_str().chars().rev().collect()
    }
}

pub(super) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
        .single()
        .expect("valid time")
}

pub(super) fn framework() -> TestFramework<User> {
    TestFramework::with(UserServices {
        hasher: Arc::new(Argon2Hasher),
        clock: Arc::new(FixedClock(now())),
        index: Arc::new(ReversedIndex),
    })
}

pub(super) fn registered(user_id: Uuid) -> UserEvent {
    UserEvent::UserRegistered(UserRegistered {
        user_id,
        email: Personal::Known("ada@example.com".to_owned()),
        email_index: "moc.elpmaxe@ada".to_owned(),
        password_hash: Personal::Known("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()),
        profile: ProfileChanges {
            display_name: Some(Personal::Known(Some("Ada".to_owned()))),
            locale: Some(Personal::Known(Some("en-GB".to_owned()))),
            ..ProfileChanges::default()
        },
        registered_at: now(),
        verification: None,
    })
}

fn register_command(user_id: Uuid, password: &str) -> UserCommand {
    UserCommand::Register(RegisterUser {
        user_id,
        email: Email::parse("Ada@Example.com").expect("valid"),
        password: SecretString::from(password.to_owned()),
        profile: ProfileDraft {
            display_name: Some(Name::parse("display_name", "Ada").expect("valid")),
            ..ProfileDraft::default()
        },
    })
}

fn patch(patch: ProfilePatch, expected_version: Option<u64>) -> UserCommand {
    UserCommand::UpdateProfile(UpdateProfile {
        patch,
        expected_version,
    })
}

#[tokio::test]
async fn register_stores_canonical_email_and_hash() {
    let user_id = Uuid::now_v7();

    let events = framework()
        .given_no_previous_events()
        .when_async(register_command(user_id, "correct horse battery staple"))
        .await
        .inspect_result()
        .expect("registered");

    let [UserEvent::UserRegistered(event)] = events.as_slice() else {
        panic!("expected one UserRegistered, got {events:?}");
    };
    assert_eq!(event.email, Personal::Known("ada@example.com".to_owned()));
    assert_eq!(event.email_index, "moc.elpmaxe@ada");
    assert_eq!(event.profile.field_names(), vec!["display_name"]);
    let hash = event.password_hash.known().expect("hash present");
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    assert!(
        Argon2Hasher
            .verify(&SecretString::from("correct horse battery staple"), hash)
            .await
            .expect("verify")
    );
}

#[tokio::test]
async fn register_twice_is_rejected() {
    let user_id = Uuid::now_v7();

    framework()
        .given(vec![registered(user_id)])
        .when_async(register_command(user_id, "correct horse battery staple"))
        .await
        .then_expect_error(UserError::AlreadyRegistered);
}

#[tokio::test]
async fn register_weak_password_is_rejected() {
    let result = framework()
        .given_no_previous_events()
        .when_async(register_command(Uuid::now_v7(), "password1234"))
        .await
        .inspect_result();

    let Err(UserError::Invalid(errors)) = result else {
        panic!("expected a policy rejection, got {result:?}");
    };
    assert_eq!(errors[0].field, "password");
}

#[tokio::test]
async fn update_profile_records_only_changed_fields() {
    let user_id = Uuid::now_v7();
    let command = patch(
        ProfilePatch {
            display_name: Some(Some(Name::parse("display_name", "Ada").expect("valid"))),
            locale: Some(Some(Locale::parse("fr-FR").expect("valid"))),
            ..ProfilePatch::default()
        },
        None,
    );

    framework()
        .given(vec![registered(user_id)])
        .when_async(command)
        .await
        .then_expect_events(vec![UserEvent::ProfileUpdated(ProfileUpdated {
            changes: ProfileChanges {
                locale: Some(Personal::Known(Some("fr-FR".to_owned()))),
                ..ProfileChanges::default()
            },
            updated_at: now(),
        })]);
}

#[tokio::test]
async fn update_profile_null_clears_field() {
    let user_id = Uuid::now_v7();
    let command = patch(
        ProfilePatch {
            display_name: Some(None),
            ..ProfilePatch::default()
        },
        None,
    );

    framework()
        .given(vec![registered(user_id)])
        .when_async(command)
        .await
        .then_expect_events(vec![UserEvent::ProfileUpdated(ProfileUpdated {
            changes: ProfileChanges {
                display_name: Some(Personal::Known(None)),
                ..ProfileChanges::default()
            },
            updated_at: now(),
        })]);
}

#[tokio::test]
async fn update_profile_without_change_records_nothing() {
    let user_id = Uuid::now_v7();
    let command = patch(
        ProfilePatch {
            locale: Some(Some(Locale::parse("en-GB").expect("valid"))),
            ..ProfilePatch::default()
        },
        None,
    );

    framework()
        .given(vec![registered(user_id)])
        .when_async(command)
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn update_profile_stale_version_is_rejected() {
    let user_id = Uuid::now_v7();
    let command = patch(
        ProfilePatch {
            metadata: Some(Some(
                Metadata::parse(json!({"plan": "pro"})).expect("valid"),
            )),
            ..ProfilePatch::default()
        },
        Some(3),
    );

    framework()
        .given(vec![registered(user_id)])
        .when_async(command)
        .await
        .then_expect_error(UserError::VersionMismatch {
            expected: 3,
            current: 1,
        });
}

#[tokio::test]
async fn update_profile_unregistered_is_not_found() {
    framework()
        .given_no_previous_events()
        .when_async(patch(ProfilePatch::default(), None))
        .await
        .then_expect_error(UserError::NotFound);
}

#[test]
fn fold_applies_changes_in_order() {
    let user_id = Uuid::now_v7();
    let mut user = User::default();

    user.apply(registered(user_id));
    user.apply(UserEvent::ProfileUpdated(ProfileUpdated {
        changes: ProfileChanges {
            display_name: Some(Personal::Known(None)),
            phone: Some(Personal::Known(Some("+14155550100".to_owned()))),
            ..ProfileChanges::default()
        },
        updated_at: now(),
    }));

    assert_eq!(user.version(), 2);
    assert_eq!(user.profile().display_name, None);
    assert_eq!(user.profile().locale.as_deref(), Some("en-GB"));
    assert_eq!(user.profile().phone.as_deref(), Some("+14155550100"));
}

#[test]
fn erased_fields_fold_to_empty() {
    let mut user = User::default();

    user.apply(UserEvent::UserRegistered(UserRegistered {
        user_id: Uuid::now_v7(),
        email: Personal::Erased,
        email_index: "x".to_owned(),
        password_hash: Personal::Erased,
        profile: ProfileChanges {
            display_name: Some(Personal::Erased),
            ..ProfileChanges::default()
        },
        registered_at: now(),
        verification: None,
    }));

    assert_eq!(user.email(), None);
    assert_eq!(user.profile().display_name, None);
}

pub(super) fn suspended() -> UserEvent {
    UserEvent::UserSuspended(UserSuspended {
        reason: Personal::Known(Some("chargeback".to_owned())),
        suspended_at: now(),
    })
}

pub(super) fn unsuspended() -> UserEvent {
    UserEvent::UserUnsuspended(UserUnsuspended {
        unsuspended_at: now(),
    })
}

#[tokio::test]
async fn suspend_records_reason() {
    let user_id = Uuid::now_v7();

    framework()
        .given(vec![registered(user_id)])
        .when_async(UserCommand::Suspend {
            reason: Some("chargeback".to_owned()),
        })
        .await
        .then_expect_events(vec![suspended()]);
}

#[tokio::test]
async fn suspend_of_suspended_user_records_nothing() {
    let user_id = Uuid::now_v7();

    framework()
        .given(vec![registered(user_id), suspended()])
        .when_async(UserCommand::Suspend { reason: None })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn unsuspend_restores_active_status() {
    let user_id = Uuid::now_v7();
    let mut user = User::default();
    for event in [registered(user_id), suspended()] {
        user.apply(event);
    }
    assert_eq!(user.status(), UserStatus::Suspended);

    framework()
        .given(vec![registered(user_id), suspended()])
        .when_async(UserCommand::Unsuspend)
        .await
        .then_expect_events(vec![UserEvent::UserUnsuspended(UserUnsuspended {
            unsuspended_at: now(),
        })]);
}

#[tokio::test]
async fn suspend_unregistered_is_not_found() {
    framework()
        .given_no_previous_events()
        .when_async(UserCommand::Suspend { reason: None })
        .await
        .then_expect_error(UserError::NotFound);
}
