use aggregates::user::{User, UserEvent};
use cqrs_es::Aggregate;
use futures::future::join_all;
use serde_json::{Value, json};

use std::sync::Arc;

use crate::helpers::{PASSWORD, TestApp, TestDatabase, assert_error, body};
use crate::mailbox::{MailDirectory, code_in, post, register_and_read_code, verify_code};

#[tokio::test]
async fn parallel_registrations_of_one_address_have_one_winner() {
    let app = TestApp::spawn().await;
    let spellings: Vec<String> = (0..20)
        .map(|i| {
            let local: String = "grace.hopper"
                .chars()
                .enumerate()
                .map(|(j, c)| {
                    if (i >> (j % 5)) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            format!("{local}@Example.com")
        })
        .collect();

    let responses = join_all(spellings.iter().map(|email| {
        let app = &app;
        async move {
            app.register(&json!({"email": email, "password": PASSWORD}))
                .await
        }
    }))
    .await;

    let mut created = 0;
    for response in responses {
        match response.status().as_u16() {
            201 => created += 1,
            409 => assert_error(&body(response).await, "USER_003"),
            other => panic!("unexpected status {other}: {}", body(response).await),
        }
    }
    assert_eq!(created, 1);
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM email_claims")
        .fetch_one(&app.pool)
        .await
        .expect("count claims");
    assert_eq!(claims, 1);
    assert_eq!(app.event_count().await, 1);
    app.finish().await;
}

#[tokio::test]
async fn parallel_patches_are_all_durable_and_fold_to_profile() {
    let app = TestApp::spawn().await;
    let (user_id, token) = app.signed_in("ada@example.com").await;

    let responses = join_all((0..20).map(|i| {
        let token = token.clone();
        let app = &app;
        async move {
            app.patch_me(
                &token,
                &json!({"display_name": format!("Name {i}"), "metadata": {"n": i}}),
            )
            .await
        }
    }))
    .await;

    let mut succeeded = 0;
    for response in responses {
        match response.status().as_u16() {
            200 => succeeded += 1,
            409 => assert_error(&body(response).await, "CONFLICT_001"),
            other => panic!("unexpected status {other}: {}", body(response).await),
        }
    }
    let events = app.user_events(user_id).await;
    let updates = events
        .iter()
        .filter(|event| matches!(event.payload, UserEvent::ProfileUpdated(_)))
        .count();
    assert_eq!(updates, succeeded);
    assert!(succeeded > 0);

    let mut folded = User::default();
    for event in events {
        folded.apply(event.payload);
    }
    let profile: Value = body(app.get_me(&token).await).await["data"].clone();
    assert_eq!(profile["version"], folded.version());
    assert_eq!(
        profile["display_name"],
        json!(folded.profile().display_name)
    );
    assert_eq!(
        profile["metadata"],
        Value::Object(folded.profile().metadata.clone())
    );
    app.finish().await;
}

#[tokio::test]
async fn instances_see_each_others_writes() {
    let database = Arc::new(TestDatabase::new());
    let first = TestApp::spawn_on(database.clone()).await;
    let mut second = TestApp::spawn_on(database).await;
    let (_, token) = first.signed_in("ada@example.com").await;
    let renamed = first
        .patch_me(&token, &json!({"display_name": "Ada"}))
        .await;
    assert_eq!(renamed.status(), 200);

    // The second instance appends an event the first one has not loaded.
    let localized = second.patch_me(&token, &json!({"locale": "de"})).await;
    assert_eq!(localized.status(), 200);
    assert_eq!(body(localized).await["data"]["version"], 3);
    let current = first
        .client
        .patch(first.url("/users/me"))
        .bearer_auth(&token)
        .header("if-match", "\"3\"")
        .json(&json!({"given_name": "Augusta"}))
        .send()
        .await
        .expect("sent");

    assert_eq!(current.status(), 200);
    let profile = body(current).await;
    assert_eq!(profile["data"]["version"], 4);
    assert_eq!(profile["data"]["display_name"], "Ada");
    assert_eq!(profile["data"]["locale"], "de");
    assert_eq!(profile["data"]["given_name"], "Augusta");
    second.stop().await;
    first.finish().await;
}

#[tokio::test]
async fn parallel_verifications_of_one_code_one_wins() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let (user_id, request_id, code) =
        register_and_read_code(&app, &mut mail, "ada@example.com").await;
    let token = app.token_for("ada@example.com").await;

    let responses = join_all((0..10).map(|_| verify_code(&app, &token, &request_id, &code))).await;

    let mut statuses = Vec::new();
    for response in responses {
        let status = response.status().as_u16();
        if status != 200 {
            assert_error(&body(response).await, "AUTH_003");
        }
        statuses.push(status);
    }
    assert_eq!(statuses.iter().filter(|status| **status == 200).count(), 1);
    assert_eq!(statuses.iter().filter(|status| **status == 401).count(), 9);
    let verified = app
        .user_events(user_id)
        .await
        .into_iter()
        .filter(|event| matches!(event.payload, UserEvent::EmailVerified(_)))
        .count();
    assert_eq!(verified, 1);
    assert_eq!(
        body(app.get_me(&token).await).await["data"]["email_verified"],
        true
    );
    app.finish().await;
}

#[tokio::test]
async fn parallel_changes_to_one_address_one_wins() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let mut requests = Vec::new();
    for email in ["ada@example.com", "grace@example.com"] {
        let (user_id, token) = app.signed_in(email).await;
        let requested = post(
            &app,
            "/users/me/email/change",
            Some(&token),
            &json!({"new_email": "shared@example.com", "current_password": PASSWORD}),
        )
        .await;
        assert_eq!(requested.status(), 202);
        let request_id = body(requested).await["data"]["change_request_id"].clone();
        let code = code_in(&mail.next_for("shared@example.com").await);
        requests.push((user_id, token, request_id, code));
    }

    let responses = join_all(
        requests
            .iter()
            .map(|(_, token, request_id, code)| verify_code(&app, token, request_id, code)),
    )
    .await;

    let statuses: Vec<u16> = responses
        .iter()
        .map(|response| response.status().as_u16())
        .collect();
    let winner = statuses
        .iter()
        .position(|status| *status == 200)
        .expect("one verification won");
    assert_eq!(statuses.iter().filter(|status| **status == 200).count(), 1);
    assert_eq!(statuses.iter().filter(|status| **status == 409).count(), 1);
    let login = app.login("shared@example.com", PASSWORD).await;
    assert_eq!(login.status(), 200);
    assert_eq!(
        body(login).await["data"]["user_id"],
        requests[winner].0.to_string()
    );
    app.finish().await;
}
