use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::personal::Personal;
use aggregates::user::{UserEvent, UserSuspended};
use cqrs_es::EventStore;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, TestDatabase, assert_error, body};
use crate::mailbox::{MailDirectory, post, token_in};

const NEW_PASSWORD: &str = "violet ostrich paints thunder";

async fn request_reset(app: &TestApp, email: &str) -> reqwest::Response {
    post(app, "/users/password/reset", None, &json!({"email": email})).await
}

async fn confirm_reset(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    post(
        app,
        "/users/password/reset/confirm",
        None,
        &json!({"token": token, "new_password": password}),
    )
    .await
}

/// Requests a reset for `email` and returns the token mailed to it, passing over other mail.
async fn reset_token(app: &TestApp, mail: &mut MailDirectory, email: &str) -> String {
    assert_eq!(request_reset(app, email).await.status(), 202);
    loop {
        let message = mail.next_for(email).await;
        if message.contains("lpr_") {
            return token_in(&message, "lpr_");
        }
    }
}

async fn change_password(
    app: &TestApp,
    token: &str,
    current: &str,
    new: &str,
) -> reqwest::Response {
    post(
        app,
        "/users/me/password/change",
        Some(token),
        &json!({"current_password": current, "new_password": new}),
    )
    .await
}

#[tokio::test]
async fn password_change_revokes_other_sessions() {
    let app = TestApp::spawn().await;
    let (_, first) = app.signed_in("ada@example.com").await;
    let second = app.token_for("ada@example.com").await;

    let response = change_password(&app, &first, PASSWORD, NEW_PASSWORD).await;

    assert_eq!(response.status(), 200);
    assert_eq!(app.get_me(&first).await.status(), 200);
    let other = app.get_me(&second).await;
    assert_eq!(other.status(), 401);
    assert_error(&body(other).await, "AUTH_001");
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 401);
    assert_eq!(
        app.login("ada@example.com", NEW_PASSWORD).await.status(),
        200
    );
    app.finish().await;
}

#[tokio::test]
async fn password_change_checks_current_and_policy() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;

    let wrong_current = change_password(&app, &token, "wrong horse battery", NEW_PASSWORD).await;
    let weak = change_password(&app, &token, PASSWORD, "password1234").await;
    let has_local_part = change_password(&app, &token, PASSWORD, "ada-violet-ostrich-77").await;

    assert_eq!(wrong_current.status(), 401);
    assert_error(&body(wrong_current).await, "AUTH_003");
    assert_eq!(weak.status(), 400);
    assert_error(&body(weak).await, "VAL_001");
    assert_eq!(has_local_part.status(), 400);
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 200);
    app.finish().await;
}

#[tokio::test]
async fn reset_answers_alike_for_unknown_address() {
    let app = TestApp::spawn().await;
    app.register_user("ada@example.com").await;

    let started = Instant::now();
    let known = request_reset(&app, "ada@example.com").await;
    let known_time = started.elapsed();
    let started = Instant::now();
    let unknown = request_reset(&app, "nobody@example.com").await;
    let unknown_time = started.elapsed();

    assert_eq!(known.status(), 202);
    assert_eq!(unknown.status(), 202);
    let known: Value = body(known).await;
    let unknown: Value = body(unknown).await;
    assert_eq!(known["data"], unknown["data"]);
    assert_eq!(known["message"], unknown["message"]);
    assert!(unknown_time >= Duration::from_millis(400));
    assert!(known_time >= Duration::from_millis(400));
    app.finish().await;
}

#[tokio::test]
async fn reset_confirm_revokes_every_session() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let (_, first) = app.signed_in("ada@example.com").await;
    let second = app.token_for("ada@example.com").await;
    let token = reset_token(&app, &mut mail, "ada@example.com").await;

    let response = confirm_reset(&app, &token, NEW_PASSWORD).await;

    assert_eq!(response.status(), 200);
    let confirmed = body(response).await;
    assert!(confirmed["data"].get("access_token").is_none());
    for session in [&first, &second] {
        let after = app.get_me(session).await;
        assert_eq!(after.status(), 401);
        assert_error(&body(after).await, "AUTH_001");
    }
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 401);
    assert_eq!(
        app.login("ada@example.com", NEW_PASSWORD).await.status(),
        200
    );
    let reused = confirm_reset(&app, &token, "another violet ostrich song").await;
    assert_eq!(reused.status(), 401);
    assert_error(&body(reused).await, "AUTH_001");
    app.finish().await;
}

#[tokio::test]
async fn only_newest_reset_token_works() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    app.register_user("ada@example.com").await;
    let first = reset_token(&app, &mut mail, "ada@example.com").await;
    let second = reset_token(&app, &mut mail, "ada@example.com").await;
    let third = reset_token(&app, &mut mail, "ada@example.com").await;

    let used = confirm_reset(&app, &third, NEW_PASSWORD).await;
    let older: Vec<reqwest::Response> = vec![
        confirm_reset(&app, &first, "first violet ostrich song").await,
        confirm_reset(&app, &second, "second violet ostrich song").await,
    ];

    assert_eq!(used.status(), 200);
    for response in older {
        assert_eq!(response.status(), 401);
        assert_error(&body(response).await, "AUTH_001");
    }
    assert_eq!(
        app.login("ada@example.com", NEW_PASSWORD).await.status(),
        200
    );
    app.finish().await;
}

#[tokio::test]
async fn older_reset_token_fails_before_newest_is_used() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    app.register_user("ada@example.com").await;
    let first = reset_token(&app, &mut mail, "ada@example.com").await;
    reset_token(&app, &mut mail, "ada@example.com").await;

    let response = confirm_reset(&app, &first, NEW_PASSWORD).await;

    assert_eq!(response.status(), 401);
    assert_error(&body(response).await, "AUTH_001");
    app.finish().await;
}

#[tokio::test]
async fn password_change_voids_reset_token() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let (_, session) = app.signed_in("ada@example.com").await;
    let token = reset_token(&app, &mut mail, "ada@example.com").await;
    let changed = change_password(&app, &session, PASSWORD, NEW_PASSWORD).await;
    assert_eq!(changed.status(), 200);

    let response = confirm_reset(&app, &token, "another violet ostrich song").await;

    assert_eq!(response.status(), 401);
    assert_error(&body(response).await, "AUTH_001");
    assert_eq!(
        app.login("ada@example.com", NEW_PASSWORD).await.status(),
        200
    );
    app.finish().await;
}

#[tokio::test]
async fn parallel_confirms_of_one_token_one_wins() {
    // Ten confirms and ten logins with one token and one account exceed the sensitive
    // default of ten a minute; the rule under test is the single use, not the limit.
    let mut database = TestDatabase::new();
    database.config.rate_sensitive = 100;
    let app = TestApp::spawn_on(Arc::new(database)).await;
    let mut mail = MailDirectory::of(&app);
    app.register_user("ada@example.com").await;
    let token = reset_token(&app, &mut mail, "ada@example.com").await;
    let passwords: Vec<String> = (0..10)
        .map(|index| format!("violet ostrich paints thunder {index}"))
        .collect();

    let confirms = passwords
        .iter()
        .map(|password| confirm_reset(&app, &token, password));
    let statuses: Vec<u16> = futures::future::join_all(confirms)
        .await
        .iter()
        .map(|response| response.status().as_u16())
        .collect();

    assert_eq!(statuses.iter().filter(|status| **status == 200).count(), 1);
    assert!(
        statuses
            .iter()
            .all(|status| *status == 200 || *status == 401 || *status == 409)
    );
    let mut working = 0;
    for password in &passwords {
        if app.login("ada@example.com", password).await.status() == 200 {
            working += 1;
        }
    }
    assert_eq!(working, 1);
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 401);
    app.finish().await;
}

#[tokio::test]
async fn suspended_account_gets_no_reset() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let user_id = app.register_user("ada@example.com").await;
    mail.next_for("ada@example.com").await;
    let token = reset_token(&app, &mut mail, "ada@example.com").await;
    let store = app.event_store();
    let context = store
        .load_aggregate(&user_id.to_string())
        .await
        .expect("load");
    let suspended = UserEvent::UserSuspended(UserSuspended {
        reason: Personal::Known(None),
        suspended_at: chrono::Utc::now(),
    });
    store
        .commit(vec![suspended], context, Default::default())
        .await
        .expect("commit");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: String =
            sqlx::query_scalar("SELECT status FROM user_profiles WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&app.pool)
                .await
                .expect("status");
        if status == "suspended" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the suspension was not projected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let files_before = mail.files().len();

    let requested = request_reset(&app, "ada@example.com").await;
    let confirmed = confirm_reset(&app, &token, NEW_PASSWORD).await;

    assert_eq!(requested.status(), 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mail.files().len(), files_before);
    assert_eq!(confirmed.status(), 403);
    assert_error(&body(confirmed).await, "USER_002");
    app.finish().await;
}

#[tokio::test]
async fn late_session_rejected_after_reset() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let (user_id, token) = app.signed_in("ada@example.com").await;
    let checked_before_reset = body(app.get_me(&token).await).await["data"]["version"]
        .as_u64()
        .expect("version");
    let reset = reset_token(&app, &mut mail, "ada@example.com").await;
    assert_eq!(
        confirm_reset(&app, &reset, NEW_PASSWORD).await.status(),
        200
    );
    let fresh = app
        .token_for_password("ada@example.com", NEW_PASSWORD)
        .await;
    let checked_after_reset = body(app.get_me(&fresh).await).await["data"]["version"]
        .as_u64()
        .expect("version");

    // Appended after the reset, as by a login that read the credentials before it.
    let late = app.append_session(user_id, checked_before_reset).await;
    let current = app.append_session(user_id, checked_after_reset).await;

    let refused = app.get_me(&late).await;
    assert_eq!(refused.status(), 401);
    assert_error(&body(refused).await, "AUTH_001");
    assert_eq!(app.get_me(&current).await.status(), 200);
    let sessions = body(
        app.client
            .get(app.url("/users/me/sessions"))
            .bearer_auth(&current)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        sessions["data"]["sessions"].as_array().map(Vec::len),
        Some(2),
        "only the sessions opened with the new password are listed: {sessions}"
    );
    app.finish().await;
}

#[tokio::test]
async fn racing_logins_void_after_reset() {
    let app = Arc::new(TestApp::spawn_with(|config| config.rate_sensitive = 1_000).await);
    let mut mail = MailDirectory::of(&app);
    app.register_user("ada@example.com").await;
    let reset = reset_token(&app, &mut mail, "ada@example.com").await;

    let logins: Vec<_> = (0..12)
        .map(|attempt| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(15 * attempt)).await;
                let response = app.login("ada@example.com", PASSWORD).await;
                let answer = body(response).await;
                answer["data"]["access_token"].as_str().map(str::to_owned)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(
        confirm_reset(&app, &reset, NEW_PASSWORD).await.status(),
        200
    );
    let mut tokens = Vec::new();
    for login in logins {
        tokens.extend(login.await.expect("login task"));
    }

    for token in &tokens {
        assert_eq!(
            app.get_me(token).await.status(),
            401,
            "a session opened with the old password outlived the reset"
        );
    }
    Arc::into_inner(app).expect("sole owner").finish().await;
}
