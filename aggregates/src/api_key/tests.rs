use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::*;
use crate::services::Clock;

struct FixedClock(DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
        .single()
        .expect("valid time")
}

fn framework() -> TestFramework<ApiKey> {
    TestFramework::with(SessionServices {
        clock: Arc::new(FixedClock(now())),
    })
}

fn issue(api_key_id: Uuid, scopes: &[&str]) -> ApiKeyCommand {
    ApiKeyCommand::Issue(IssueApiKey {
        api_key_id,
        name: " billing sync ".to_owned(),
        scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
        prefix: "lak_AbCdEfGh".to_owned(),
        key_hash: "cd".repeat(32),
        expires_at: Some(now() + Duration::days(30)),
    })
}

fn issued(api_key_id: Uuid) -> ApiKeyEvent {
    ApiKeyEvent::ApiKeyIssued(ApiKeyIssued {
        api_key_id,
        name: "billing sync".to_owned(),
        scopes: vec!["users:admin".to_owned(), "users:read".to_owned()],
        prefix: "lak_AbCdEfGh".to_owned(),
        key_hash: "cd".repeat(32),
        issued_at: now(),
        expires_at: Some(now() + Duration::days(30)),
    })
}

#[test]
fn issue_sorts_and_deduplicates_scopes() {
    let api_key_id = Uuid::now_v7();

    framework()
        .given_no_previous_events()
        .when(issue(
            api_key_id,
            &["users:read", "users:admin", "users:read"],
        ))
        .then_expect_events(vec![issued(api_key_id)]);
}

#[test]
fn issue_with_unknown_scope_is_rejected() {
    let result = framework()
        .given_no_previous_events()
        .when(issue(Uuid::now_v7(), &["users:root"]))
        .inspect_result();

    assert!(matches!(
        result,
        Err(ApiKeyError::Invalid {
            field: "scopes",
            ..
        })
    ));
}

#[test]
fn issue_without_scopes_is_rejected() {
    let result = framework()
        .given_no_previous_events()
        .when(issue(Uuid::now_v7(), &[]))
        .inspect_result();

    assert!(matches!(
        result,
        Err(ApiKeyError::Invalid {
            field: "scopes",
            ..
        })
    ));
}

#[test]
fn revoke_twice_is_rejected() {
    let api_key_id = Uuid::now_v7();
    let revoked = ApiKeyEvent::ApiKeyRevoked(ApiKeyRevoked { revoked_at: now() });

    framework()
        .given(vec![issued(api_key_id), revoked])
        .when(ApiKeyCommand::Revoke {
            revoker_scopes: None,
        })
        .then_expect_error(ApiKeyError::AlreadyRevoked);
}

#[test]
fn revoker_needs_every_scope() {
    let api_key_id = Uuid::now_v7();
    let revoke = |scopes: &[&str]| ApiKeyCommand::Revoke {
        revoker_scopes: Some(scopes.iter().map(|scope| (*scope).to_owned()).collect()),
    };

    framework()
        .given(vec![issued(api_key_id)])
        .when(revoke(&["api_keys:manage", "users:read"]))
        .then_expect_error(ApiKeyError::ScopeNotHeld);
    framework()
        .given(vec![issued(api_key_id)])
        .when(revoke(&["api_keys:manage", "users:admin", "users:read"]))
        .then_expect_events(vec![ApiKeyEvent::ApiKeyRevoked(ApiKeyRevoked {
            revoked_at: now(),
        })]);
    framework()
        .given(vec![issued(api_key_id)])
        .when(revoke(&["*"]))
        .then_expect_events(vec![ApiKeyEvent::ApiKeyRevoked(ApiKeyRevoked {
            revoked_at: now(),
        })]);
}

#[test]
fn wildcard_grants_every_scope() {
    let granted = vec!["*".to_owned()];

    assert!(grants(&granted, "users:admin"));
    assert!(!grants(&["users:read".to_owned()], "users:admin"));
}
