//! Suspension: every session ends, login answers USER_002, and unsuspension lets the user in.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, assert_error, body};

async fn post_admin(app: &TestApp, key: &str, path: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("x-api-key", key)
        .json(&json!({"reason": "chargeback"}))
        .send()
        .await
        .expect("request sent")
}

async fn suspend(app: &TestApp, key: &str, user_id: Uuid) -> reqwest::Response {
    post_admin(app, key, &format!("/users/{user_id}/suspend")).await
}

#[tokio::test]
async fn suspension_ends_sessions_and_login() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.api_key("users:admin").await;
    let (user_id, first) = app.signed_in("ada@example.com").await;
    let second = app.token_for("ada@example.com").await;

    let suspended = suspend(&app, &admin, user_id).await;

    assert_eq!(suspended.status(), 200);
    assert_eq!(body(suspended).await["data"]["status"], "suspended");
    for token in [&first, &second] {
        let response = app.get_me(token).await;
        assert_eq!(response.status(), 401);
        assert_error(&body(response).await, "AUTH_001");
    }
    let login = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(login.status(), 403);
    assert_error(&body(login).await, "USER_002");
    app.finish().await;
}

#[tokio::test]
async fn unsuspended_user_logs_in_again() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.api_key("users:admin").await;
    let (user_id, old_token) = app.signed_in("ada@example.com").await;
    suspend(&app, &admin, user_id).await;

    let lifted = post_admin(&app, &admin, &format!("/users/{user_id}/unsuspend")).await;

    assert_eq!(lifted.status(), 200);
    assert_eq!(body(lifted).await["data"]["status"], "active");
    let token = app.token_for("ada@example.com").await;
    assert_eq!(app.get_me(&token).await.status(), 200);
    assert_eq!(app.get_me(&old_token).await.status(), 401);
    app.finish().await;
}

#[tokio::test]
async fn wrong_password_of_suspended_is_auth_003() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.api_key("users:admin").await;
    let user_id = app.register_user("ada@example.com").await;
    suspend(&app, &admin, user_id).await;

    let login = app
        .login("ada@example.com", "wrong horse battery staple")
        .await;

    assert_eq!(login.status(), 401);
    assert_error(&body(login).await, "AUTH_003");
    app.finish().await;
}

#[tokio::test]
async fn suspension_needs_admin_scope() {
    let app = TestApp::spawn().await;
    let (_, reader) = app.api_key("users:read").await;
    let (user_id, token) = app.signed_in("ada@example.com").await;

    let by_key = suspend(&app, &reader, user_id).await;
    let by_session = app
        .client
        .post(app.url("/users/me/suspend"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .expect("request sent");

    assert_eq!(by_key.status(), 403);
    assert_error(&body(by_key).await, "AUTH_002");
    assert_eq!(by_session.status(), 403);
    assert_error(&body(by_session).await, "AUTH_002");
    assert_eq!(app.get_me(&token).await.status(), 200);
    app.finish().await;
}

#[tokio::test]
async fn suspending_unknown_user_is_user_001() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.api_key("users:admin").await;

    let response = suspend(&app, &admin, Uuid::now_v7()).await;

    assert_eq!(response.status(), 404);
    assert_error(&body(response).await, "USER_001");
    app.finish().await;
}

#[tokio::test]
async fn suspension_reason_is_sealed() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.api_key("users:admin").await;
    let user_id = app.register_user("ada@example.com").await;

    suspend(&app, &admin, user_id).await;

    let payload: String = sqlx::query_scalar(
        "SELECT payload::text FROM events
          WHERE aggregate_id = $1 AND event_type = 'UserSuspended'",
    )
    .bind(user_id.to_string())
    .fetch_one(&app.pool)
    .await
    .expect("suspension event");
    assert!(
        !payload.contains("chargeback"),
        "reason stored in clear: {payload}"
    );
    app.finish().await;
}

#[tokio::test]
async fn control_characters_in_reason_are_val_001() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.api_key("users:admin").await;
    let user_id = app.register_user("ada@example.com").await;
    let events_before = app.event_count().await;

    let response = app
        .client
        .post(app.url(&format!("/users/{user_id}/suspend")))
        .header("x-api-key", &admin)
        .json(&json!({"reason": "fraud\u{0}\u{1b}[2J"}))
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), 400);
    assert_error(&body(response).await, "VAL_001");
    assert_eq!(app.event_count().await, events_before);
    app.finish().await;
}

#[tokio::test]
async fn racing_logins_void_after_unsuspension() {
    let app = Arc::new(TestApp::spawn_with(|config| config.rate_sensitive = 1_000).await);
    let (_, admin) = app.api_key("users:admin").await;
    let user_id = app.register_user("ada@example.com").await;

    let logins: Vec<_> = (0..12)
        .map(|attempt| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(15 * attempt)).await;
                let answer = body(app.login("ada@example.com", PASSWORD).await).await;
                answer["data"]["access_token"].as_str().map(str::to_owned)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(suspend(&app, &admin, user_id).await.status(), 200);
    let mut tokens = Vec::new();
    for login in logins {
        tokens.extend(login.await.expect("login task"));
    }
    let lifted = post_admin(&app, &admin, &format!("/users/{user_id}/unsuspend")).await;
    assert_eq!(lifted.status(), 200);

    for token in &tokens {
        assert_eq!(
            app.get_me(token).await.status(),
            401,
            "a session opened before the suspension took effect came back with unsuspension"
        );
    }
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 200);
    Arc::into_inner(app).expect("sole owner").finish().await;
}

#[tokio::test]
async fn late_session_void_after_suspension() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.api_key("users:admin").await;
    let (user_id, token) = app.signed_in("ada@example.com").await;
    let read_before_suspension = body(app.get_me(&token).await).await["data"]["version"]
        .as_u64()
        .expect("version");
    assert_eq!(suspend(&app, &admin, user_id).await.status(), 200);

    // Appended after the suspension, as by a login that read the account before it.
    let late = app.append_session(user_id, read_before_suspension).await;
    let lifted = post_admin(&app, &admin, &format!("/users/{user_id}/unsuspend")).await;
    assert_eq!(lifted.status(), 200);
    let read_after = body(lifted).await["data"]["version"]
        .as_u64()
        .expect("version");
    let current = app.append_session(user_id, read_after).await;

    let refused = app.get_me(&late).await;
    assert_eq!(refused.status(), 401);
    assert_error(&body(refused).await, "AUTH_001");
    assert_eq!(app.get_me(&current).await.status(), 200);
    app.finish().await;
}
