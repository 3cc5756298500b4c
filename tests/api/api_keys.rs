//! API keys: the first key from the command line, scopes, revocation and expiry.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestClock, TestDatabase, assert_error, body};

async fn create_key(app: &TestApp, manager: &str, request: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api-keys"))
        .header("x-api-key", manager)
        .json(request)
        .send()
        .await
        .expect("request sent")
}

/// Creates a key over HTTP and returns its id and secret.
async fn issued_key(app: &TestApp, manager: &str, request: &Value) -> (Uuid, String) {
    let response = create_key(app, manager, request).await;
    assert_eq!(response.status(), 201);
    let data = body(response).await["data"].clone();
    let api_key_id = data["api_key_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("api_key_id");
    let key = data["key"].as_str().expect("key").to_owned();
    (api_key_id, key)
}

async fn get_user(app: &TestApp, key: &str, user_id: Uuid) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/users/{user_id}")))
        .header("x-api-key", key)
        .send()
        .await
        .expect("request sent")
}

#[tokio::test]
async fn command_line_key_manages_keys() {
    let app = TestApp::spawn().await;
    let (manager_id, manager) = app.api_key("api_keys:manage,users:read").await;

    let (reader_id, reader) = issued_key(
        &app,
        &manager,
        &json!({"name": "profile reader", "scopes": ["users:read"]}),
    )
    .await;
    let listed = app
        .client
        .get(app.url("/api-keys"))
        .header("x-api-key", &manager)
        .send()
        .await
        .expect("request sent");

    assert!(reader.starts_with("lak_"));
    assert_eq!(listed.status(), 200);
    let listed = body(listed).await;
    let keys = listed["data"]["api_keys"].as_array().expect("keys");
    let ids: Vec<&str> = keys
        .iter()
        .filter_map(|k| k["api_key_id"].as_str())
        .collect();
    assert_eq!(ids, [manager_id.to_string(), reader_id.to_string()]);
    assert!(!listed.to_string().contains(&reader), "a secret was listed");
    assert!(reader.starts_with(keys[1]["prefix"].as_str().expect("prefix")));
    app.finish().await;
}

#[tokio::test]
async fn key_reads_any_user_in_scope() {
    let app = TestApp::spawn().await;
    let (_, manager) = app.api_key("api_keys:manage,users:read").await;
    let user_id = app.register_user("ada@example.com").await;
    let (_, reader) = issued_key(
        &app,
        &manager,
        &json!({"name": "reader", "scopes": ["users:read"]}),
    )
    .await;

    let read = get_user(&app, &reader, user_id).await;
    let write = app
        .client
        .patch(app.url(&format!("/users/{user_id}")))
        .header("x-api-key", &reader)
        .json(&json!({"locale": "fr-FR"}))
        .send()
        .await
        .expect("request sent");

    assert_eq!(read.status(), 200);
    assert_eq!(body(read).await["data"]["email"], "ada@example.com");
    assert_eq!(write.status(), 403);
    assert_error(&body(write).await, "AUTH_002");
    app.finish().await;
}

#[tokio::test]
async fn key_without_scope_is_forbidden() {
    let app = TestApp::spawn().await;
    let (_, reader) = app.api_key("users:read").await;

    let response = create_key(&app, &reader, &json!({"name": "x", "scopes": ["*"]})).await;

    assert_eq!(response.status(), 403);
    assert_error(&body(response).await, "AUTH_002");
    app.finish().await;
}

#[tokio::test]
async fn session_cannot_manage_keys() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;

    let response = app
        .client
        .get(app.url("/api-keys"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), 403);
    assert_error(&body(response).await, "AUTH_002");
    app.finish().await;
}

#[tokio::test]
async fn revoked_key_fails_at_once() {
    let app = TestApp::spawn().await;
    let (_, manager) = app.api_key("api_keys:manage,users:read").await;
    let user_id = app.register_user("ada@example.com").await;
    let (reader_id, reader) = issued_key(
        &app,
        &manager,
        &json!({"name": "reader", "scopes": ["users:read"]}),
    )
    .await;
    assert_eq!(get_user(&app, &reader, user_id).await.status(), 200);

    let revoked = app
        .client
        .delete(app.url(&format!("/api-keys/{reader_id}")))
        .header("x-api-key", &manager)
        .send()
        .await
        .expect("request sent");
    let after = get_user(&app, &reader, user_id).await;

    assert_eq!(revoked.status(), 200);
    assert_eq!(after.status(), 401);
    assert_error(&body(after).await, "AUTH_001");
    app.finish().await;
}

#[tokio::test]
async fn expired_key_fails() {
    let clock = TestClock::new(Utc::now());
    let app = TestApp::spawn_with_clock(Arc::new(TestDatabase::new()), clock.clone()).await;
    let (_, manager) = app.api_key("api_keys:manage,users:read").await;
    let user_id = app.register_user("ada@example.com").await;
    let expires_at = Utc::now() + Duration::minutes(10);
    let (_, reader) = issued_key(
        &app,
        &manager,
        &json!({"name": "reader", "scopes": ["users:read"], "expires_at": expires_at}),
    )
    .await;

    let before = get_user(&app, &reader, user_id).await.status();
    clock.advance(Duration::minutes(11));
    let after = get_user(&app, &reader, user_id).await;

    assert_eq!(before, 200);
    assert_eq!(after.status(), 401);
    assert_error(&body(after).await, "AUTH_001");
    app.finish().await;
}

#[tokio::test]
async fn unknown_or_malformed_key_is_auth_001() {
    let app = TestApp::spawn().await;
    let user_id = app.register_user("ada@example.com").await;

    for key in ["lak_unknown", "not-a-key", ""] {
        let response = get_user(&app, key, user_id).await;
        assert_eq!(response.status(), 401, "key {key:?}");
        assert_error(&body(response).await, "AUTH_001");
    }
    app.finish().await;
}

#[tokio::test]
async fn unknown_scope_is_val_001() {
    let app = TestApp::spawn().await;
    let (_, manager) = app.api_key("api_keys:manage").await;

    let response = create_key(&app, &manager, &json!({"name": "x", "scopes": ["root"]})).await;

    assert_eq!(response.status(), 400);
    assert_error(&body(response).await, "VAL_001");
    app.finish().await;
}

#[tokio::test]
async fn key_lifecycle_is_in_events_without_secret() {
    let app = TestApp::spawn().await;
    let (manager_id, manager) = app.api_key("api_keys:manage,users:read").await;
    let (reader_id, reader) = issued_key(
        &app,
        &manager,
        &json!({"name": "reader", "scopes": ["users:read"]}),
    )
    .await;
    app.client
        .delete(app.url(&format!("/api-keys/{reader_id}")))
        .header("x-api-key", &manager)
        .send()
        .await
        .expect("request sent");

    let rows: Vec<(String, String, Value)> = sqlx::query_as(
        "SELECT event_type, payload::text, metadata FROM events
          WHERE aggregate_type = 'api_key' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(reader_id.to_string())
    .fetch_all(&app.pool)
    .await
    .expect("query events");

    let types: Vec<&str> = rows.iter().map(|row| row.0.as_str()).collect();
    assert_eq!(types, ["ApiKeyIssued", "ApiKeyRevoked"]);
    assert!(rows.iter().all(|row| !row.1.contains(&reader)));
    assert_eq!(rows[1].2["actor"], format!("api_key:{manager_id}"));
    app.finish().await;
}

#[tokio::test]
async fn key_grants_only_scopes_it_holds() {
    let app = TestApp::spawn().await;
    let (_, manager) = app.api_key("api_keys:manage,users:read").await;

    let wildcard = create_key(&app, &manager, &json!({"name": "root", "scopes": ["*"]})).await;
    let writer = create_key(
        &app,
        &manager,
        &json!({"name": "writer", "scopes": ["users:read", "users:write"]}),
    )
    .await;
    let reader = create_key(
        &app,
        &manager,
        &json!({"name": "reader", "scopes": ["users:read"]}),
    )
    .await;
    let unknown = create_key(
        &app,
        &manager,
        &json!({"name": "odd", "scopes": ["users:fly"]}),
    )
    .await;

    assert_eq!(wildcard.status(), 403);
    assert_error(&body(wildcard).await, "AUTH_002");
    assert_eq!(writer.status(), 403);
    assert_error(&body(writer).await, "AUTH_002");
    assert_eq!(reader.status(), 201);
    assert_eq!(unknown.status(), 400);
    assert_error(&body(unknown).await, "VAL_001");
    app.finish().await;
}

#[tokio::test]
async fn two_credentials_are_auth_001() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;
    let (_, key) = app.api_key("users:read").await;

    let with_wrong_key = app
        .client
        .get(app.url("/users/me"))
        .bearer_auth(&token)
        .header("x-api-key", "lak_wrong")
        .send()
        .await
        .expect("request sent");
    let with_both_valid = app
        .client
        .get(app.url("/users/me"))
        .bearer_auth(&token)
        .header("x-api-key", &key)
        .send()
        .await
        .expect("request sent");
    let twice_bearer = app
        .client
        .get(app.url("/users/me"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", "Bearer las_wrong")
        .send()
        .await
        .expect("request sent");

    for response in [with_wrong_key, with_both_valid, twice_bearer] {
        assert_eq!(response.status(), 401);
        assert_error(&body(response).await, "AUTH_001");
    }
    app.finish().await;
}

#[tokio::test]
async fn key_naming_malformed_user_is_user_001() {
    let app = TestApp::spawn().await;
    let (_, key) = app.api_key("users:read").await;

    let response = app
        .client
        .get(app.url("/users/abc"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), 404);
    assert_error(&body(response).await, "USER_001");
    app.finish().await;
}

#[tokio::test]
async fn key_cannot_outlive_its_issuer() {
    let app = TestApp::spawn().await;
    let (_, root) = app.api_key("api_keys:manage,users:read").await;
    let issuer_expiry = Utc::now() + Duration::hours(1);
    let (_, issuer) = issued_key(
        &app,
        &root,
        &json!({
            "name": "temporary manager",
            "scopes": ["api_keys:manage", "users:read"],
            "expires_at": issuer_expiry,
        }),
    )
    .await;

    let forever = create_key(
        &app,
        &issuer,
        &json!({"name": "forever", "scopes": ["users:read"]}),
    )
    .await;
    let later = create_key(
        &app,
        &issuer,
        &json!({
            "name": "later",
            "scopes": ["users:read"],
            "expires_at": issuer_expiry + Duration::hours(1),
        }),
    )
    .await;
    let within = create_key(
        &app,
        &issuer,
        &json!({
            "name": "within",
            "scopes": ["users:read"],
            "expires_at": issuer_expiry - Duration::minutes(30),
        }),
    )
    .await;

    assert_eq!(forever.status(), 403);
    assert_error(&body(forever).await, "AUTH_002");
    assert_eq!(later.status(), 403);
    assert_error(&body(later).await, "AUTH_002");
    assert_eq!(within.status(), 201);
    app.finish().await;
}

#[tokio::test]
async fn key_revokes_only_within_scopes() {
    let app = TestApp::spawn().await;
    let user_id = app.register_user("ada@example.com").await;
    let (manager_id, manager) = app.api_key("api_keys:manage,users:read").await;
    let (root_id, root) = app.api_key("*").await;
    let revoke = |target: Uuid, key: String| {
        app.client
            .delete(app.url(&format!("/api-keys/{target}")))
            .header("x-api-key", key)
            .send()
    };

    let refused = revoke(root_id, manager.clone()).await.expect("sent");
    assert_eq!(refused.status(), 403);
    assert_error(&body(refused).await, "AUTH_002");
    assert_eq!(get_user(&app, &root, user_id).await.status(), 200);

    let allowed = revoke(manager_id, root.clone()).await.expect("sent");
    assert_eq!(allowed.status(), 200);
    assert_eq!(get_user(&app, &manager, user_id).await.status(), 401);
    app.finish().await;
}
