use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use account_ledger::config::MailTransportKind;
use aggregates::personal::Personal;
use aggregates::user::{PasswordResetRequested, UserEvent};
use chrono::Utc;
use cqrs_es::EventStore;
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, TestDatabase, body};
use crate::mailbox::{MailDirectory, SmtpSink, code_in, post, register_and_read_code, verify_code};

/// Builds a test database whose service sends mail to `sink`.
fn smtp_database(sink: &SmtpSink) -> TestDatabase {
    let mut database = TestDatabase::new();
    database.config.mail_transport = MailTransportKind::Smtp;
    database.config.smtp_url = Some(sink.url());
    database
}

#[tokio::test]
async fn file_transport_writes_readable_eml() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);

    app.register_user("ada@example.com").await;

    let message = mail.next_for("ada@example.com").await;
    assert!(message.contains("From: account-ledger <no-reply@localhost>"));
    assert!(message.contains("To: ada@example.com"));
    assert!(message.contains("Subject: Your verification code"));
    assert!(message.contains("multipart/alternative"));
    assert!(message.contains("text/html"));
    assert_eq!(code_in(&message).len(), 6);
    assert_eq!(mail.files().len(), 1);
    app.finish().await;
}

#[tokio::test]
async fn email_change_flow_over_smtp() {
    let mut sink = SmtpSink::start().await;
    let app = TestApp::spawn_on(Arc::new(smtp_database(&sink))).await;
    let registered = body(
        app.register(&json!({"email": "ada@example.com", "password": PASSWORD}))
            .await,
    )
    .await;
    let code = code_in(&sink.next_for("ada@example.com").await);
    let token = app.token_for("ada@example.com").await;
    let verified = verify_code(
        &app,
        &token,
        &registered["data"]["change_request_id"],
        &code,
    )
    .await;
    assert_eq!(verified.status(), 200);

    let requested = body(
        post(
            &app,
            "/users/me/email/change",
            Some(&token),
            &json!({"new_email": "lovelace@example.com", "current_password": PASSWORD}),
        )
        .await,
    )
    .await;
    let code = code_in(&sink.next_for("lovelace@example.com").await);
    let changed = verify_code(&app, &token, &requested["data"]["change_request_id"], &code).await;

    assert_eq!(changed.status(), 200);
    let notice = sink.next_for("ada@example.com").await;
    assert!(notice.contains("Your email address was changed"));
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 401);
    assert_eq!(
        app.login("lovelace@example.com", PASSWORD).await.status(),
        200
    );
    let profile = body(app.get_me(&token).await).await;
    assert_eq!(profile["data"]["email"], "lovelace@example.com");
    assert_eq!(profile["data"]["email_verified"], true);
    assert_eq!(sink.all().len(), 3);
    app.finish().await;
}

#[tokio::test]
async fn mail_after_crash_is_sent_once() {
    let mut sink = SmtpSink::start().await;
    let database = Arc::new(smtp_database(&sink));
    let mut first = TestApp::spawn_on(database.clone()).await;
    let user_id = first.register_user("ada@example.com").await;
    sink.next_for("ada@example.com").await;
    first.stop().await;

    // Append while no projector or sender runs, as if the service died right after a commit.
    let offline = TestApp::pool_only(database.clone()).await;
    let store = offline.event_store();
    let context = store
        .load_aggregate(&user_id.to_string())
        .await
        .expect("load");
    let requested = UserEvent::PasswordResetRequested(PasswordResetRequested {
        email: Personal::Known("ada@example.com".to_owned()),
        token: Personal::Known("lpr_offline".to_owned()),
        token_hash: "0".repeat(64),
        expires_at: Utc::now() + chrono::Duration::hours(1),
        requested_at: Utc::now(),
    });
    store
        .commit(
            vec![requested],
            context,
            HashMap::from([("actor".to_owned(), "test".to_owned())]),
        )
        .await
        .expect("commit");
    assert_eq!(sink.all().len(), 1);

    let mut second = TestApp::spawn_on(database.clone()).await;
    let reset = sink.next_for("ada@example.com").await;
    second.stop().await;
    let third = TestApp::spawn_on(database).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    assert!(reset.contains("lpr_offline"));
    assert_eq!(sink.all().len(), 2);
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE outcome IS NULL")
        .fetch_one(&third.pool)
        .await
        .expect("count");
    assert_eq!(unsent, 0);
    third.finish().await;
}

#[tokio::test]
async fn events_hold_no_plaintext_secrets() {
    let app = TestApp::spawn().await;
    let mut mail = MailDirectory::of(&app);
    let (_, _, code) = register_and_read_code(&app, &mut mail, "ada@example.com").await;
    let reset = post(
        &app,
        "/users/password/reset",
        None,
        &json!({"email": "ada@example.com"}),
    )
    .await;
    assert_eq!(reset.status(), 202);
    let message = mail.next_for("ada@example.com").await;
    let token = crate::mailbox::token_in(&message, "lpr_");

    let payloads: Vec<String> = sqlx::query_scalar("SELECT payload::text FROM events")
        .fetch_all(&app.pool)
        .await
        .expect("payloads");

    let all = payloads.join("\n");
    assert!(!all.contains(&format!("\"{code}\"")));
    assert!(!all.contains(&token));
    assert!(!all.contains("ada@example.com"));
    let secrets: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE secret IS NOT NULL")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(secrets, 0);
    app.finish().await;
}

#[tokio::test]
async fn silent_mail_server_does_not_delay_commands() {
    // The server accepts connections and never greets, so each send waits for the SMTP timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("address").port();
    let server = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });
    let mut database = TestDatabase::new();
    database.config.mail_transport = MailTransportKind::Smtp;
    database.config.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
    let app = TestApp::spawn_on(Arc::new(database)).await;
    app.register_user("ada@example.com").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    let (_, token) = app.signed_in("grace@example.com").await;
    let elapsed = started.elapsed();

    assert!(
        elapsed < Duration::from_secs(3),
        "registration and login took {elapsed:?} while a mail was being sent"
    );
    assert_eq!(app.get_me(&token).await.status(), 200);
    server.abort();
    app.finish().await;
}

#[tokio::test]
async fn unreachable_server_keeps_mail_queued() {
    // A port that was just free: nothing listens there, so every send fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let mut database = TestDatabase::new();
    database.config.mail_transport = MailTransportKind::Smtp;
    database.config.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
    let app = TestApp::spawn_on(Arc::new(database)).await;

    app.register_user("ada@example.com").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (unsent, secret_kept, attempts, delayed): (i64, bool, i32, bool) = sqlx::query_as(
        "SELECT count(*), bool_and(secret IS NOT NULL), max(attempts),
                bool_and(claimed_until > now())
           FROM mail_outbox WHERE outcome IS NULL",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(unsent, 1);
    assert!(secret_kept);
    // The next attempt waits: a dead server does not use up the attempts within seconds.
    assert_eq!(attempts, 1);
    assert!(delayed);
    app.finish().await;
}
