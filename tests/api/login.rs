use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, assert_error, body};

#[tokio::test]
async fn login_returns_bearer_session() {
    let app = TestApp::spawn().await;
    let user_id = app.register_user("ada@example.com").await;

    let response = app.login("ADA@example.com", PASSWORD).await;

    assert_eq!(response.status(), 200);
    let body = body(response).await;
    let data = &body["data"];
    assert_eq!(data["token_type"], "Bearer");
    assert_eq!(data["mfa_required"], false);
    assert_eq!(data["user_id"], user_id.to_string());
    assert!(
        data["access_token"]
            .as_str()
            .expect("token")
            .starts_with("las_")
    );
    assert!(data["session_id"].is_string());
    assert!(data["expires_at"].as_str().expect("expiry").ends_with('Z'));
    app.finish().await;
}

#[tokio::test]
async fn login_failures_share_one_answer() {
    let app = TestApp::spawn().await;
    app.register_user("ada@example.com").await;

    let wrong_password = body(
        app.login("ada@example.com", "wrong horse battery staple")
            .await,
    )
    .await;
    let unknown_email = body(app.login("nobody@example.com", PASSWORD).await).await;
    let malformed_email = body(app.login("nobody", PASSWORD).await).await;

    for answer in [&wrong_password, &unknown_email, &malformed_email] {
        assert_error(answer, "AUTH_003");
    }
    assert_eq!(wrong_password["error"], unknown_email["error"]);
    assert_eq!(unknown_email["error"], malformed_email["error"]);
    app.finish().await;
}

#[tokio::test]
async fn login_without_password_is_val_002() {
    let app = TestApp::spawn().await;

    let response = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), 400);
    assert_error(&body(response).await, "VAL_002");
    app.finish().await;
}

#[tokio::test]
async fn logout_revokes_only_that_session() {
    let app = TestApp::spawn().await;
    let (_, first) = app.signed_in("ada@example.com").await;
    let second = app.token_for("ada@example.com").await;

    let response = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&first)
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), 200);
    let revoked = app.get_me(&first).await;
    assert_eq!(revoked.status(), 401);
    assert_error(&body(revoked).await, "AUTH_001");
    assert_eq!(app.get_me(&second).await.status(), 200);
    app.finish().await;
}

#[tokio::test]
async fn bad_tokens_are_auth_001() {
    let app = TestApp::spawn().await;
    app.signed_in("ada@example.com").await;

    let missing = app
        .client
        .get(app.url("/users/me"))
        .send()
        .await
        .expect("sent");
    let unknown = app
        .get_me("las_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    let malformed = app
        .client
        .get(app.url("/users/me"))
        .header("authorization", "Basic YWRhOnB3")
        .send()
        .await
        .expect("sent");

    for response in [missing, unknown, malformed] {
        assert_eq!(response.status(), 401);
        let body: Value = body(response).await;
        assert_error(&body, "AUTH_001");
    }
    app.finish().await;
}

#[tokio::test]
async fn expired_session_is_auth_001() {
    let database = std::sync::Arc::new({
        let mut database = crate::helpers::TestDatabase::new();
        database.config.session_lifetime_secs = 1;
        database
    });
    let app = TestApp::spawn_on(database).await;
    let (_, token) = app.signed_in("ada@example.com").await;

    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let response = app.get_me(&token).await;

    assert_eq!(response.status(), 401);
    assert_error(&body(response).await, "AUTH_001");
    app.finish().await;
}

#[tokio::test]
async fn password_matches_in_any_unicode_form() {
    let app = TestApp::spawn().await;
    let composed = "caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e na\u{ef}ve";
    let decomposed = "cafe\u{301} cre\u{300}me bru\u{302}le\u{301}e nai\u{308}ve";
    let registered = app
        .register(&json!({"email": "ada@example.com", "password": composed}))
        .await;
    assert_eq!(registered.status(), 201);

    let response = app.login("ada@example.com", decomposed).await;

    assert_eq!(response.status(), 200);
    app.finish().await;
}
