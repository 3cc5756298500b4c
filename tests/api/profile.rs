use serde_json::json;
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, assert_error, body};

#[tokio::test]
async fn profile_by_me_and_by_own_id_match() {
    let app = TestApp::spawn().await;
    let (user_id, token) = app.signed_in("ada@example.com").await;

    let by_me = body(app.get_me(&token).await).await;
    let by_id = app
        .client
        .get(app.url(&format!("/users/{user_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");

    assert_eq!(by_id.status(), 200);
    assert_eq!(by_id.headers()["etag"], "\"1\"");
    assert_eq!(body(by_id).await["data"], by_me["data"]);
    app.finish().await;
}

#[tokio::test]
async fn other_users_profile_is_auth_002() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;
    let other = app.register_user("grace@example.com").await;

    for id in [other, Uuid::now_v7()] {
        let response = app
            .client
            .get(app.url(&format!("/users/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("sent");

        assert_eq!(response.status(), 403);
        assert_error(&body(response).await, "AUTH_002");
    }
    app.finish().await;
}

#[tokio::test]
async fn patch_is_visible_on_next_get() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;

    let response = app
        .patch_me(
            &token,
            &json!({"display_name": "Countess", "metadata": {"tier": 2}}),
        )
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let patched = body(response).await;
    assert_eq!(patched["message"], "Profile updated");
    assert_eq!(patched["data"]["version"], 2);
    let read = body(app.get_me(&token).await).await;
    assert_eq!(read["data"]["display_name"], "Countess");
    assert_eq!(read["data"]["metadata"], json!({"tier": 2}));
    assert_eq!(read["data"]["version"], 2);
    app.finish().await;
}

#[tokio::test]
async fn patch_of_locale_leaves_other_fields() {
    let app = TestApp::spawn().await;
    app.register(&json!({
        "email": "ada@example.com",
        "password": PASSWORD,
        "display_name": "Ada",
        "given_name": "Augusta",
        "family_name": "King",
        "timezone": "Europe/London",
        "phone": "+447700900123",
        "picture_url": "https://cdn.example.com/ada.png",
        "metadata": {"plan": "pro"}
    }))
    .await;
    let token = app.token_for("ada@example.com").await;
    let before = body(app.get_me(&token).await).await["data"].clone();

    let response = app.patch_me(&token, &json!({"locale": "fr-FR"})).await;

    assert_eq!(response.status(), 200);
    let after = body(response).await["data"].clone();
    assert_eq!(after["locale"], "fr-FR");
    for field in [
        "email",
        "display_name",
        "given_name",
        "family_name",
        "timezone",
        "phone",
        "picture_url",
        "metadata",
        "created_at",
        "status",
    ] {
        assert_eq!(after[field], before[field], "{field} changed");
    }
    app.finish().await;
}

#[tokio::test]
async fn patch_null_clears_field() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;
    app.patch_me(&token, &json!({"display_name": "Ada"})).await;

    let response = app.patch_me(&token, &json!({"display_name": null})).await;

    assert_eq!(response.status(), 200);
    assert!(body(response).await["data"]["display_name"].is_null());
    app.finish().await;
}

#[tokio::test]
async fn patch_of_server_owned_field_is_val_001_and_appends_nothing() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;
    let events_before = app.event_count().await;

    for body_sent in [
        json!({"email": "eve@example.com"}),
        json!({"email_verified": true}),
        json!({"status": "active", "display_name": "Ada"}),
        json!({"version": 9}),
    ] {
        let response = app.patch_me(&token, &body_sent).await;

        assert_eq!(response.status(), 400, "accepted {body_sent}");
        assert_error(&body(response).await, "VAL_001");
    }
    assert_eq!(app.event_count().await, events_before);
    let profile = body(app.get_me(&token).await).await;
    assert_eq!(profile["data"]["email"], "ada@example.com");
    assert!(profile["data"]["display_name"].is_null());
    app.finish().await;
}

#[tokio::test]
async fn patch_with_invalid_value_is_val_001() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;

    for body_sent in [
        json!({"timezone": "Mars/Olympus"}),
        json!({"display_name": ""}),
        json!({"display_name": "x".repeat(101)}),
        json!({"metadata": [1, 2]}),
        json!({"locale": 42}),
        json!({"favourite_colour": "green"}),
    ] {
        let response = app.patch_me(&token, &body_sent).await;

        assert_eq!(response.status(), 400, "accepted {body_sent}");
        assert_error(&body(response).await, "VAL_001");
    }
    app.finish().await;
}

#[tokio::test]
async fn nul_characters_are_val_001() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;
    let events_before = app.event_count().await;

    let registration = app
        .register(&json!({
            "email": "eve@example.com",
            "password": PASSWORD,
            "metadata": {"note": "a\u{0}b"},
        }))
        .await;
    assert_eq!(registration.status(), 400);
    assert_error(&body(registration).await, "VAL_001");
    for body_sent in [
        json!({"metadata": {"note": "a\u{0}b"}}),
        json!({"metadata": {"list": [{"k\u{0}": 1}]}}),
        json!({"display_name": "Ada\u{0}"}),
    ] {
        let response = app.patch_me(&token, &body_sent).await;

        assert_eq!(response.status(), 400, "accepted {body_sent}");
        assert_error(&body(response).await, "VAL_001");
    }
    assert_eq!(app.event_count().await, events_before);

    let response = app.patch_me(&token, &json!({"locale": "de"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body(app.get_me(&token).await).await["data"]["locale"], "de");
    let (_, other) = app.signed_in("eve@example.com").await;
    assert_eq!(app.get_me(&other).await.status(), 200);
    app.finish().await;
}

#[tokio::test]
async fn patch_with_stale_if_match_is_conflict_001() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;
    app.patch_me(&token, &json!({"display_name": "First"}))
        .await;
    let events_before = app.event_count().await;

    let stale = app
        .client
        .patch(app.url("/users/me"))
        .bearer_auth(&token)
        .header("if-match", "\"1\"")
        .json(&json!({"display_name": "Second"}))
        .send()
        .await
        .expect("sent");
    let current = app
        .client
        .patch(app.url("/users/me"))
        .bearer_auth(&token)
        .header("if-match", "\"2\"")
        .json(&json!({"display_name": "Third"}))
        .send()
        .await
        .expect("sent");

    assert_eq!(stale.status(), 409);
    assert_error(&body(stale).await, "CONFLICT_001");
    assert_eq!(current.status(), 200);
    assert_eq!(body(current).await["data"]["display_name"], "Third");
    assert_eq!(app.event_count().await, events_before + 1);
    app.finish().await;
}

#[tokio::test]
async fn patch_without_change_keeps_version() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;
    app.patch_me(&token, &json!({"locale": "en"})).await;
    let events_before = app.event_count().await;

    let response = app.patch_me(&token, &json!({"locale": "EN"})).await;

    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await["data"]["version"], 2);
    assert_eq!(app.event_count().await, events_before);
    app.finish().await;
}
