use std::sync::Arc;

use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, TestDatabase, assert_error, body};
use crate::mailbox::{MailDirectory, code_in, post, register_and_read_code, token_in, verify_code};

#[tokio::test]
async fn registration_code_verifies_address() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let (_, request_id, code) = register_and_read_code(&app, &mut mail, "ada@example.com").await;
    let token = app.token_for("ada@example.com").await;
    let before = body(app.get_me(&token).await).await;

    let wrong = verify_code(&app, &token, &request_id, &"000000x").await;
    let right = verify_code(&app, &token, &request_id, &code).await;

    assert_eq!(before["data"]["email_verified"], false);
    assert_eq!(wrong.status(), 401);
    assert_error(&body(wrong).await, "AUTH_003");
    assert_eq!(right.status(), 200);
    let verified = body(right).await;
    assert_eq!(verified["data"]["email_verified"], true);
    assert_eq!(verified["data"]["new_email"], "ada@example.com");
    assert_eq!(verified["data"]["notification_sent"], false);
    let after = body(app.get_me(&token).await).await;
    assert_eq!(after["data"]["email_verified"], true);
    app.finish().await;
}

#[tokio::test]
async fn resent_code_voids_older_code() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let (_, request_id, first) = register_and_read_code(&app, &mut mail, "ada@example.com").await;
    let token = app.token_for("ada@example.com").await;

    let resent = post(
        &app,
        "/users/me/email/resend-verification",
        Some(&token),
        &json!({}),
    )
    .await;
    assert_eq!(resent.status(), 202);
    let second = code_in(&mail.next_for("ada@example.com").await);

    let old = verify_code(&app, &token, &request_id, &first).await;
    let new = verify_code(&app, &token, &request_id, &second).await;

    assert_eq!(old.status(), 401);
    assert_error(&body(old).await, "AUTH_003");
    assert_eq!(new.status(), 200);
    app.finish().await;
}

#[tokio::test]
async fn five_wrong_codes_void_request() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let (_, request_id, code) = register_and_read_code(&app, &mut mail, "ada@example.com").await;
    let token = app.token_for("ada@example.com").await;
    let wrong = if code == "111111" { "222222" } else { "111111" };

    for _ in 0..5 {
        let response = verify_code(&app, &token, &request_id, &wrong).await;
        assert_eq!(response.status(), 401);
    }
    let right = verify_code(&app, &token, &request_id, &code).await;

    assert_eq!(right.status(), 401);
    assert_error(&body(right).await, "AUTH_003");
    app.finish().await;
}

#[tokio::test]
async fn expired_code_is_refused() {
    let mut database = TestDatabase::new();
    database.config.verification_ttl_secs = 1;
    let app = TestApp::spawn_on(Arc::new(database)).await;
    let mut mail = MailDirectory::of(&app);
    let (_, request_id, code) = register_and_read_code(&app, &mut mail, "ada@example.com").await;
    let token = app.token_for("ada@example.com").await;

    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let response = verify_code(&app, &token, &request_id, &code).await;

    assert_eq!(response.status(), 401);
    assert_error(&body(response).await, "AUTH_003");
    app.finish().await;
}

#[tokio::test]
async fn change_requires_current_password() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;

    let response = post(
        &app,
        "/users/me/email/change",
        Some(&token),
        &json!({"new_email": "lovelace@example.com", "current_password": "wrong horse battery"}),
    )
    .await;

    assert_eq!(response.status(), 401);
    assert_error(&body(response).await, "AUTH_003");
    app.finish().await;
}

#[tokio::test]
async fn completed_change_moves_address() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    register_and_read_code(&app, &mut mail, "ada@example.com").await;
    let token = app.token_for("ada@example.com").await;

    let requested = post(
        &app,
        "/users/me/email/change",
        Some(&token),
        &json!({"new_email": "Lovelace@Example.com", "current_password": PASSWORD}),
    )
    .await;
    assert_eq!(requested.status(), 202);
    let requested = body(requested).await;
    assert_eq!(requested["data"]["status"], "pending_verification");
    assert_eq!(requested["data"]["new_email"], "lovelace@example.com");
    assert_eq!(requested["data"]["verification_method"], "email_code");
    assert_eq!(requested["data"]["current_email_retained"], true);
    let code = code_in(&mail.next_for("lovelace@example.com").await);
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 200);
    let status = body(
        app.client
            .get(app.url("/users/me/email/status"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status["data"]["email"], "ada@example.com");
    assert_eq!(
        status["data"]["pending_change"]["new_email"],
        "lovelace@example.com"
    );

    let verified = verify_code(&app, &token, &requested["data"]["change_request_id"], &code).await;

    assert_eq!(verified.status(), 200);
    let verified = body(verified).await;
    assert_eq!(verified["data"]["new_email"], "lovelace@example.com");
    assert_eq!(verified["data"]["notification_sent"], true);
    let notice = mail.next_for("ada@example.com").await;
    assert!(notice.contains("Your email address was changed"));
    let old_login = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(old_login.status(), 401);
    assert_error(&body(old_login).await, "AUTH_003");
    assert_eq!(
        app.login("lovelace@example.com", PASSWORD).await.status(),
        200
    );
    let reused = app
        .register(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(reused.status(), 201);
    app.finish().await;
}

#[tokio::test]
async fn pending_change_does_not_reserve_address() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let (_, token) = app.signed_in("ada@example.com").await;
    let requested = body(
        post(
            &app,
            "/users/me/email/change",
            Some(&token),
            &json!({"new_email": "grace@example.com", "current_password": PASSWORD}),
        )
        .await,
    )
    .await;
    let code = code_in(&mail.next_for("grace@example.com").await);

    let other = app
        .register(&json!({"email": "grace@example.com", "password": PASSWORD}))
        .await;
    let verified = verify_code(&app, &token, &requested["data"]["change_request_id"], &code).await;

    assert_eq!(other.status(), 201);
    assert_eq!(verified.status(), 409);
    assert_error(&body(verified).await, "USER_003");
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 200);
    app.finish().await;
}

#[tokio::test]
async fn link_verification_changes_address_once() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let (_, token) = app.signed_in("ada@example.com").await;

    let requested = post(
        &app,
        "/users/me/email/change",
        Some(&token),
        &json!({
            "new_email": "lovelace@example.com",
            "current_password": PASSWORD,
            "verification_method": "email_link",
        }),
    )
    .await;
    assert_eq!(requested.status(), 202);
    assert_eq!(
        body(requested).await["data"]["verification_method"],
        "email_link"
    );
    let message = mail.next_for("lovelace@example.com").await;
    let link_token = token_in(&message, "lev_");
    assert!(message.contains(&format!(
        "http://127.0.0.1:8080/verify-email?token={link_token}"
    )));

    let first = post(
        &app,
        "/users/email/verify-link",
        None,
        &json!({"token": link_token}),
    )
    .await;
    let second = post(
        &app,
        "/users/email/verify-link",
        None,
        &json!({"token": link_token}),
    )
    .await;

    assert_eq!(first.status(), 200);
    assert_eq!(
        body(first).await["data"]["new_email"],
        "lovelace@example.com"
    );
    assert_eq!(second.status(), 401);
    assert_error(&body(second).await, "AUTH_001");
    assert_eq!(
        app.login("lovelace@example.com", PASSWORD).await.status(),
        200
    );
    app.finish().await;
}

#[tokio::test]
async fn newer_change_request_replaces_older() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let (_, token) = app.signed_in("ada@example.com").await;
    let change = |new_email: &'static str| {
        let app = &app;
        let token = token.clone();
        async move {
            body(
                post(
                    app,
                    "/users/me/email/change",
                    Some(&token),
                    &json!({"new_email": new_email, "current_password": PASSWORD}),
                )
                .await,
            )
            .await
        }
    };
    let first = change("first@example.com").await;
    let first_code = code_in(&mail.next_for("first@example.com").await);
    change("second@example.com").await;

    let response = verify_code(
        &app,
        &token,
        &first["data"]["change_request_id"],
        &first_code,
    )
    .await;

    assert_eq!(response.status(), 401);
    assert_error(&body(response).await, "AUTH_003");
    app.finish().await;
}

#[tokio::test]
async fn unknown_link_token_is_auth_001() {
    let app = TestApp::spawn().await;

    let response = post(
        &app,
        "/users/email/verify-link",
        None,
        &json!({"token": "lev_unknown"}),
    )
    .await;

    assert_eq!(response.status(), 401);
    assert_error(&body(response).await, "AUTH_001");
    app.finish().await;
}

#[tokio::test]
async fn change_to_taken_address_is_user_003() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;
    app.register_user("grace@example.com").await;

    let response = post(
        &app,
        "/users/me/email/change",
        Some(&token),
        &json!({"new_email": "grace@example.com", "current_password": PASSWORD}),
    )
    .await;

    assert_eq!(response.status(), 409);
    assert_error(&body(response).await, "USER_003");
    app.finish().await;
}

#[tokio::test]
async fn password_change_voids_pending_link() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let (_, token) = app.signed_in("ada@example.com").await;
    let requested = post(
        &app,
        "/users/me/email/change",
        Some(&token),
        &json!({
            "new_email": "mallory@example.com",
            "current_password": PASSWORD,
            "verification_method": "email_link",
        }),
    )
    .await;
    assert_eq!(requested.status(), 202);
    let link_token = token_in(&mail.next_for("mallory@example.com").await, "lev_");

    let changed = post(
        &app,
        "/users/me/password/change",
        Some(&token),
        &json!({"current_password": PASSWORD, "new_password": "violet ostrich paints thunder"}),
    )
    .await;
    assert_eq!(changed.status(), 200);
    let verified = post(
        &app,
        "/users/email/verify-link",
        None,
        &json!({"token": link_token}),
    )
    .await;
    let status = app
        .client
        .get(app.url("/users/me/email/status"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request sent");

    assert_eq!(verified.status(), 401);
    assert_error(&body(verified).await, "AUTH_001");
    let status = body(status).await;
    assert_eq!(status["data"]["email"], "ada@example.com");
    assert_eq!(status["data"]["pending_change"], serde_json::Value::Null);
    app.finish().await;
}

#[tokio::test]
async fn email_password_missing_and_forbidden() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;
    let other = app.register_user("eve@example.com").await;

    for (path, sent) in [
        (
            "/users/me/email/change",
            json!({"current_password": PASSWORD}),
        ),
        (
            "/users/me/email/verify",
            json!({"verification_code": "123456"}),
        ),
        (
            "/users/me/password/change",
            json!({"current_password": PASSWORD}),
        ),
        ("/users/password/reset", json!({})),
        ("/users/password/reset/confirm", json!({"token": "lpr_x"})),
        ("/users/email/verify-link", json!({})),
    ] {
        let response = post(&app, path, Some(&token), &sent).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_error(&body(response).await, "VAL_002");
    }

    let status = app
        .client
        .get(app.url(&format!("/users/{other}/email/status")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(status.status(), 403);
    assert_error(&body(status).await, "AUTH_002");
    let resend = post(
        &app,
        &format!("/users/{other}/email/resend-verification"),
        Some(&token),
        &json!({}),
    )
    .await;
    assert_eq!(resend.status(), 403);
    assert_error(&body(resend).await, "AUTH_002");
    app.finish().await;
}

#[tokio::test]
async fn resend_without_pending_is_val_001() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let (_, request_id, code) = register_and_read_code(&app, &mut mail, "ada@example.com").await;
    let token = app.token_for("ada@example.com").await;
    assert_eq!(
        verify_code(&app, &token, &request_id, &code).await.status(),
        200
    );

    let resend = post(
        &app,
        "/users/me/email/resend-verification",
        Some(&token),
        &json!({}),
    )
    .await;

    assert_eq!(resend.status(), 400);
    assert_error(&body(resend).await, "VAL_001");
    app.finish().await;
}
