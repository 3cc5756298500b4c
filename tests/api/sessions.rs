//! Session listing and revocation, idle timeout and absolute lifetime.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, TestClock, TestDatabase, assert_error, body};

async fn list_sessions(app: &TestApp, token: &str) -> Value {
    let response = app
        .client
        .get(app.url("/users/me/sessions"))
        .bearer_auth(token)
        .header("user-agent", "ledger-tests/1.0")
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    body(response).await
}

async fn session_id_of(app: &TestApp, token: &str) -> Uuid {
    let listed = list_sessions(app, token).await;
    let sessions = listed["data"]["sessions"].as_array().expect("sessions");
    let current = sessions
        .iter()
        .find(|session| session["current"] == true)
        .expect("a current session");
    current["session_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("session id")
}

async fn revoke_session(app: &TestApp, token: &str, session_id: Uuid) -> reqwest::Response {
    app.client
        .delete(app.url(&format!("/users/me/sessions/{session_id}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent")
}

#[tokio::test]
async fn session_list_shows_devices() {
    let app = TestApp::spawn().await;
    let (_, first) = app.signed_in("ada@example.com").await;
    let second = app.token_for("ada@example.com").await;

    let listed = list_sessions(&app, &first).await;

    let sessions = listed["data"]["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2);
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    for session in sessions {
        assert_eq!(session["ip_address"], "127.0.0.1");
        for field in ["created_at", "last_seen_at", "expires_at", "session_id"] {
            assert!(session[field].is_string(), "{field} missing: {session}");
        }
    }
    assert_ne!(
        session_id_of(&app, &first).await,
        session_id_of(&app, &second).await
    );
    app.finish().await;
}

#[tokio::test]
async fn revoked_session_fails_others_work() {
    let app = TestApp::spawn().await;
    let (_, first) = app.signed_in("ada@example.com").await;
    let second = app.token_for("ada@example.com").await;
    let third = app.token_for("ada@example.com").await;
    let second_id = session_id_of(&app, &second).await;

    let response = revoke_session(&app, &first, second_id).await;

    assert_eq!(response.status(), 200);
    assert_error(&body(app.get_me(&second).await).await, "AUTH_001");
    assert_eq!(app.get_me(&first).await.status(), 200);
    assert_eq!(app.get_me(&third).await.status(), 200);
    app.finish().await;
}

#[tokio::test]
async fn other_users_session_is_forbidden() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada@example.com").await;
    let (_, grace) = app.signed_in("grace@example.com").await;
    let grace_session = session_id_of(&app, &grace).await;

    let response = revoke_session(&app, &ada, grace_session).await;

    assert_eq!(response.status(), 403);
    assert_error(&body(response).await, "AUTH_002");
    assert_eq!(app.get_me(&grace).await.status(), 200);
    app.finish().await;
}

#[tokio::test]
async fn other_users_session_list_is_forbidden() {
    let app = TestApp::spawn().await;
    let (_, ada) = app.signed_in("ada@example.com").await;
    let grace_id = app.register_user("grace@example.com").await;

    let response = app
        .client
        .get(app.url(&format!("/users/{grace_id}/sessions")))
        .bearer_auth(&ada)
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), 403);
    assert_error(&body(response).await, "AUTH_002");
    app.finish().await;
}

#[tokio::test]
async fn revoke_all_keeps_current_by_default() {
    let app = TestApp::spawn().await;
    let (_, first) = app.signed_in("ada@example.com").await;
    let second = app.token_for("ada@example.com").await;
    let third = app.token_for("ada@example.com").await;

    let response = app
        .client
        .delete(app.url("/users/me/sessions"))
        .bearer_auth(&first)
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await["data"]["revoked"], 2);
    assert_eq!(app.get_me(&first).await.status(), 200);
    assert_eq!(app.get_me(&second).await.status(), 401);
    assert_eq!(app.get_me(&third).await.status(), 401);
    app.finish().await;
}

#[tokio::test]
async fn revoke_all_can_end_current() {
    let app = TestApp::spawn().await;
    let (_, first) = app.signed_in("ada@example.com").await;
    let second = app.token_for("ada@example.com").await;

    let response = app
        .client
        .delete(app.url("/users/me/sessions?keep_current=false"))
        .bearer_auth(&first)
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await["data"]["revoked"], 2);
    assert_eq!(app.get_me(&first).await.status(), 401);
    assert_eq!(app.get_me(&second).await.status(), 401);
    app.finish().await;
}

#[tokio::test]
async fn revocation_is_an_event() {
    let app = TestApp::spawn().await;
    let (_, first) = app.signed_in("ada@example.com").await;
    let second = app.token_for("ada@example.com").await;
    let second_id = session_id_of(&app, &second).await;

    revoke_session(&app, &first, second_id).await;

    let event_types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(second_id.to_string())
    .fetch_all(&app.pool)
    .await
    .expect("query events");
    assert_eq!(event_types, ["SessionStarted", "SessionRevoked"]);
    app.finish().await;
}

#[tokio::test]
async fn idle_session_expires() {
    let clock = TestClock::new(Utc::now());
    let app = TestApp::spawn_with_clock(Arc::new(TestDatabase::new()), clock.clone()).await;
    let (_, active) = app.signed_in("ada@example.com").await;
    let idle = app.token_for("ada@example.com").await;

    // The test configuration has a 30-minute idle timeout and a one-hour lifetime.
    clock.advance(Duration::minutes(29));
    let first_use = app.get_me(&active).await.status();
    clock.advance(Duration::minutes(29));
    let second_use = app.get_me(&active).await.status();
    let idle_use = app.get_me(&idle).await;

    assert_eq!(first_use, 200);
    assert_eq!(second_use, 200);
    assert_eq!(idle_use.status(), 401);
    assert_error(&body(idle_use).await, "AUTH_001");
    app.finish().await;
}

#[tokio::test]
async fn short_idle_timeout_spares_active_session() {
    let clock = TestClock::new(Utc::now());
    let mut database = TestDatabase::new();
    database.config.session_idle_timeout_secs = 10;
    let app = TestApp::spawn_with_clock(Arc::new(database), clock.clone()).await;
    let (_, token) = app.signed_in("ada@example.com").await;

    // A request every 6 seconds, for half a minute, within the 10-second idle timeout.
    for _ in 0..5 {
        clock.advance(Duration::seconds(6));
        assert_eq!(app.get_me(&token).await.status(), 200);
    }
    clock.advance(Duration::seconds(11));
    let after_idle = app.get_me(&token).await;

    assert_eq!(after_idle.status(), 401);
    assert_error(&body(after_idle).await, "AUTH_001");
    app.finish().await;
}

#[tokio::test]
async fn session_ends_at_absolute_lifetime() {
    let clock = TestClock::new(Utc::now());
    let app = TestApp::spawn_with_clock(Arc::new(TestDatabase::new()), clock.clone()).await;
    let (_, token) = app.signed_in("ada@example.com").await;

    // Requests every 20 minutes keep the session from idling; the lifetime is one hour.
    for _ in 0..2 {
        clock.advance(Duration::minutes(20));
        assert_eq!(app.get_me(&token).await.status(), 200);
    }
    clock.advance(Duration::minutes(19));
    let before_lifetime = app.get_me(&token).await.status();
    clock.advance(Duration::minutes(2));
    let after_lifetime = app.get_me(&token).await;

    assert_eq!(before_lifetime, 200);
    assert_eq!(after_lifetime.status(), 401);
    assert_error(&body(after_lifetime).await, "AUTH_001");
    app.finish().await;
}

#[tokio::test]
async fn last_seen_is_written_coarsely() {
    let clock = TestClock::new(Utc::now());
    let app = TestApp::spawn_with_clock(Arc::new(TestDatabase::new()), clock.clone()).await;
    let (_, token) = app.signed_in("ada@example.com").await;
    let events_before = app.event_count().await;

    for _ in 0..5 {
        assert_eq!(app.get_me(&token).await.status(), 200);
    }
    let writes_within_a_minute: i64 = sqlx::query_scalar("SELECT count(*) FROM session_activity")
        .fetch_one(&app.pool)
        .await
        .expect("count activity");
    clock.advance(Duration::seconds(90));
    assert_eq!(app.get_me(&token).await.status(), 200);
    let listed = list_sessions(&app, &token).await;

    assert_eq!(writes_within_a_minute, 0);
    assert_eq!(app.event_count().await, events_before);
    let session = &listed["data"]["sessions"][0];
    assert_ne!(session["last_seen_at"], session["created_at"]);
    app.finish().await;
}
