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

fn framework() -> TestFramework<Session> {
    TestFramework::with(SessionServices {
        clock: Arc::new(FixedClock(now())),
    })
}

fn started(session_id: Uuid, user_id: Uuid) -> SessionEvent {
    SessionEvent::SessionStarted(SessionStarted {
        session_id,
        user_id,
        token_hash: "ab".repeat(32),
        started_at: now(),
        expires_at: now() + Duration::hours(24),
        ip_address: Personal::Known(Some("127.0.0.1".to_owned())),
        user_agent: Personal::Known(None),
        credentials_version: Some(3),
    })
}

#[test]
fn start_records_expiry_from_lifetime() {
    let (session_id, user_id) = (Uuid::now_v7(), Uuid::now_v7());

    framework()
        .given_no_previous_events()
        .when(SessionCommand::Start(StartSession {
            session_id,
            user_id,
            token_hash: "ab".repeat(32),
            lifetime: Duration::hours(24),
            ip_address: Some("127.0.0.1".to_owned()),
            user_agent: None,
            credentials_version: 3,
        }))
        .then_expect_events(vec![started(session_id, user_id)]);
}

#[test]
fn revoke_ends_started_session() {
    let (session_id, user_id) = (Uuid::now_v7(), Uuid::now_v7());

    framework()
        .given(vec![started(session_id, user_id)])
        .when(SessionCommand::Revoke {
            reason: RevocationReason::Logout,
        })
        .then_expect_events(vec![SessionEvent::SessionRevoked(SessionRevoked {
            reason: RevocationReason::Logout,
            revoked_at: now(),
        })]);
}

#[test]
fn revoke_twice_is_rejected() {
    let (session_id, user_id) = (Uuid::now_v7(), Uuid::now_v7());
    let revoked = SessionEvent::SessionRevoked(SessionRevoked {
        reason: RevocationReason::Logout,
        revoked_at: now(),
    });

    framework()
        .given(vec![started(session_id, user_id), revoked])
        .when(SessionCommand::Revoke {
            reason: RevocationReason::Logout,
        })
        .then_expect_error(SessionError::AlreadyRevoked);
}

#[test]
fn revoke_unknown_session_is_not_found() {
    framework()
        .given_no_previous_events()
        .when(SessionCommand::Revoke {
            reason: RevocationReason::Logout,
        })
        .then_expect_error(SessionError::NotFound);
}

#[test]
fn missing_credentials_version_reads_none() {
    let mut event = serde_json::to_value(started(Uuid::now_v7(), Uuid::now_v7())).expect("json");
    event["SessionStarted"]
        .as_object_mut()
        .expect("object")
        .remove("credentials_version");

    let SessionEvent::SessionStarted(read) = serde_json::from_value(event).expect("reads") else {
        panic!("not a SessionStarted");
    };
    assert_eq!(read.credentials_version, None);
}
