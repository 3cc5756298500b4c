use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, assert_error, body};

#[tokio::test]
async fn registration_returns_profile_in_envelope() {
    let app = TestApp::spawn().await;

    let response = app
        .register(&json!({
            "email": "  Ada@Example.com ",
            "password": PASSWORD,
            "display_name": "Ada",
            "locale": "en_gb",
            "timezone": "Europe/London",
            "phone": "+447700900123",
            "metadata": {"plan": "pro"}
        }))
        .await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(response.headers()["etag"], "\"1\"");
    let body = body(response).await;
    assert_eq!(body["success"], true);
    assert_eq!(body["message"], "User registered");
    assert!(
        body["timestamp"]
            .as_str()
            .expect("timestamp")
            .ends_with('Z')
    );
    let data = &body["data"];
    assert_eq!(
        location,
        format!("/api/v1/users/{}", data["user_id"].as_str().expect("id"))
    );
    assert_eq!(data["email"], "ada@example.com");
    assert_eq!(data["email_verified"], false);
    assert_eq!(data["status"], "active");
    assert_eq!(data["display_name"], "Ada");
    assert_eq!(data["locale"], "en-GB");
    assert_eq!(data["timezone"], "Europe/London");
    assert_eq!(data["phone"], "+447700900123");
    assert_eq!(data["metadata"], json!({"plan": "pro"}));
    assert_eq!(data["mfa_enabled"], false);
    assert_eq!(data["version"], 1);
    assert!(data.get("password").is_none());
    app.finish().await;
}

#[tokio::test]
async fn registration_of_taken_address_is_user_003() {
    let app = TestApp::spawn().await;
    app.register_user("ada@example.com").await;
    let events_before = app.event_count().await;

    let response = app
        .register(&json!({"email": "ADA@example.COM", "password": PASSWORD}))
        .await;

    assert_eq!(response.status(), 409);
    assert_error(&body(response).await, "USER_003");
    assert_eq!(app.event_count().await, events_before);
    app.finish().await;
}

#[tokio::test]
async fn taken_address_variants_are_rejected() {
    let app = TestApp::spawn().await;
    app.register_user("bob@xn--exmple-cua.com").await;
    let events_before = app.event_count().await;

    let unicode_domain = app
        .register(&json!({"email": "bob@exämple.com", "password": PASSWORD}))
        .await;
    let quoted = app
        .register(&json!({"email": "\"bob\"@xn--exmple-cua.com", "password": PASSWORD}))
        .await;
    let invisible = app
        .register(&json!({"email": "b\u{200b}ob@xn--exmple-cua.com", "password": PASSWORD}))
        .await;

    assert_eq!(unicode_domain.status(), 409);
    assert_error(&body(unicode_domain).await, "USER_003");
    assert_eq!(quoted.status(), 400);
    assert_error(&body(quoted).await, "VAL_001");
    assert_eq!(invisible.status(), 400);
    assert_error(&body(invisible).await, "VAL_001");
    assert_eq!(app.event_count().await, events_before);
    app.finish().await;
}

#[tokio::test]
async fn registration_without_password_is_val_002() {
    let app = TestApp::spawn().await;

    let response = app.register(&json!({"email": "ada@example.com"})).await;

    assert_eq!(response.status(), 400);
    let body = body(response).await;
    assert_error(&body, "VAL_002");
    assert_eq!(body["error"]["details"]["fields"], json!(["password"]));
    app.finish().await;
}

#[tokio::test]
async fn registration_with_weak_password_is_val_001() {
    let app = TestApp::spawn().await;

    for password in ["short", "passwordpassword", "ada-lovelace-1815-x"] {
        let response = app
            .register(&json!({"email": "ada-lovelace@example.com", "password": password}))
            .await;

        assert_eq!(response.status(), 400, "accepted {password:?}");
        let body = body(response).await;
        assert_error(&body, "VAL_001");
        assert_eq!(body["error"]["details"]["fields"][0]["field"], "password");
    }
    assert_eq!(app.event_count().await, 0);
    app.finish().await;
}

#[tokio::test]
async fn registration_with_invalid_fields_lists_each() {
    let app = TestApp::spawn().await;

    let response = app
        .register(&json!({
            "email": "not-an-address",
            "password": PASSWORD,
            "locale": "klingon-empire",
            "phone": "555-0100",
            "picture_url": "javascript:alert(1)"
        }))
        .await;

    assert_eq!(response.status(), 400);
    let body = body(response).await;
    assert_error(&body, "VAL_001");
    let fields: Vec<&str> = body["error"]["details"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|field| field["field"].as_str().expect("name"))
        .collect();
    assert_eq!(fields, ["email", "locale", "phone", "picture_url"]);
    app.finish().await;
}

#[tokio::test]
async fn registration_with_server_owned_field_is_val_001() {
    let app = TestApp::spawn().await;

    let response = app
        .register(
            &json!({"email": "ada@example.com", "password": PASSWORD, "email_verified": true}),
        )
        .await;

    assert_eq!(response.status(), 400);
    let body = body(response).await;
    assert_error(&body, "VAL_001");
    assert_eq!(
        body["error"]["details"]["fields"][0]["field"],
        "email_verified"
    );
    assert_eq!(app.event_count().await, 0);
    app.finish().await;
}
