//! TOTP enrolment, the MFA login step and recovery codes, against a service whose clock the
//! test sets, so that each code is computed for a known time step.

use std::collections::HashMap;
use std::sync::Arc;

use aggregates::personal::Personal;
use aggregates::totp;
use aggregates::user::{UserEvent, UserSuspended};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::EventStore;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, TestClock, TestDatabase, assert_error, body};

const EMAIL: &str = "ada@example.com";

/// Returns the start of the current 30-second step, so that each code's step is predictable.
fn step_start() -> DateTime<Utc> {
    let now = Utc::now().timestamp();
    let start = now - now % totp::STEP_SECONDS as i64;
    Utc.timestamp_opt(start, 0).single().expect("valid time")
}

/// Computes the code an authenticator app shows for `secret` at `time`.
fn code_at(secret: &str, time: DateTime<Utc>) -> String {
    let seconds = u64::try_from(time.timestamp()).expect("time after 1970");
    totp::code_for_base32(secret, seconds).expect("base32 secret")
}

/// Starts a service with a hand-set clock, on a database whose config `configure` may change.
async fn spawn_with(configure: impl FnOnce(&mut TestDatabase)) -> (TestApp, Arc<TestClock>) {
    let mut database = TestDatabase::new();
    configure(&mut database);
    let clock = TestClock::new(step_start());
    let app = TestApp::spawn_with_clock(Arc::new(database), clock.clone()).await;
    (app, clock)
}

async fn spawn() -> (TestApp, Arc<TestClock>) {
    spawn_with(|_| {}).await
}

/// Sends a JSON POST, with a Bearer token when given, and returns the status and body.
async fn post(app: &TestApp, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut request = app.client.post(app.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    (status, crate::helpers::body(response).await)
}

async fn mfa_status(app: &TestApp, token: &str) -> Value {
    let response = app
        .client
        .get(app.url("/users/me/mfa"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    body(response).await["data"].clone()
}

/// Starts a TOTP setup and returns the secret.
async fn start_setup(app: &TestApp, token: &str) -> String {
    let (status, body) = post(
        app,
        "/users/me/mfa/totp/setup",
        Some(token),
        json!({"current_password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "setup failed: {body}");
    body["data"]["secret"]
        .as_str()
        .expect("secret in response")
        .to_owned()
}

/// A user with TOTP enabled, signed in with a session from before the enrolment.
struct Enrolled {
    user_id: Uuid,
    token: String,
    secret: String,
    recovery_codes: Vec<String>,
}

/// Registers, signs in and enrols with a code for the clock's current step.
async fn enrol(app: &TestApp, clock: &TestClock) -> Enrolled {
    let (user_id, token) = app.signed_in(EMAIL).await;
    let secret = start_setup(app, &token).await;

    let code = code_at(&secret, aggregates::services::Clock::now(clock));
    let (status, body) = post(
        app,
        "/users/me/mfa/totp/verify",
        Some(&token),
        json!({"code": code}),
    )
    .await;
    assert_eq!(status, 200, "verify failed: {body}");
    let recovery_codes = body["data"]["recovery_codes"]
        .as_array()
        .expect("recovery codes")
        .iter()
        .map(|code| code.as_str().expect("code text").to_owned())
        .collect();
    Enrolled {
        user_id,
        token,
        secret,
        recovery_codes,
    }
}

/// Logs in with the password of an enrolled user and returns the MFA token.
async fn first_step(app: &TestApp) -> String {
    let response = app.login(EMAIL, PASSWORD).await;
    assert_eq!(response.status(), 200);
    let body = body(response).await;
    assert_eq!(body["data"]["mfa_required"], true, "no MFA step: {body}");
    body["data"]["mfa_token"]
        .as_str()
        .expect("mfa_token in response")
        .to_owned()
}

async fn second_step(app: &TestApp, body: Value) -> (StatusCode, Value) {
    post(app, "/auth/login/mfa", None, body).await
}

async fn session_count(app: &TestApp, user_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&app.pool)
        .await
        .expect("count sessions")
}

/// The SHA-1 rows of RFC 6238 Appendix B, as the last six digits of the 8-digit codes.
#[test]
fn rfc_6238_vectors_match_service_totp() {
    let secret = b"12345678901234567890";
    let vectors: [(u64, &str); 6] = [
        (59, "287082"),
        (1_111_111_109, "081804"),
        (1_111_111_111, "050471"),
        (1_234_567_890, "005924"),
        (2_000_000_000, "279037"),
        (20_000_000_000, "353130"),
    ];

    for (time, expected) in vectors {
        assert_eq!(totp::code_at(secret, time), expected, "code at {time}");
    }
}

#[tokio::test]
async fn setup_returns_secret_uri_and_qr() {
    let (app, clock) = spawn().await;
    let (_, token) = app.signed_in(EMAIL).await;

    let (status, body) = post(
        &app,
        "/users/me/mfa/totp/setup",
        Some(&token),
        json!({"current_password": PASSWORD}),
    )
    .await;

    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    let secret = data["secret"].as_str().expect("secret");
    assert_eq!(secret.len(), 32, "160 bits in base32");
    let uri = data["otpauth_uri"].as_str().expect("uri");
    assert!(
        uri.starts_with("otpauth://totp/account-ledger:ada%40example.com?"),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(uri.contains("issuer=account-ledger"), "{uri}");
    let qr = data["qr_code"].as_str().expect("qr_code");
    assert!(
        qr.starts_with("data:image/png;base64,iVBORw0KGgo"),
        "not a PNG"
    );
    let expires_at: DateTime<Utc> = data["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("RFC 3339");
    let now = aggregates::services::Clock::now(clock.as_ref());
    assert_eq!(expires_at, now + Duration::minutes(10));
    assert_eq!(mfa_status(&app, &token).await["totp_enabled"], false);
    app.finish().await;
}

#[tokio::test]
async fn setup_label_can_use_user_id() {
    let (app, _) = spawn_with(|database| {
        database.config.totp_issuer = "Example Corp".to_owned();
        database.config.totp_account_label = account_ledger::config::TotpAccountLabel::UserId;
    })
    .await;
    let (user_id, token) = app.signed_in(EMAIL).await;

    let (status, body) = post(
        &app,
        "/users/me/mfa/totp/setup",
        Some(&token),
        json!({"current_password": PASSWORD}),
    )
    .await;

    assert_eq!(status, 200);
    let uri = body["data"]["otpauth_uri"].as_str().expect("uri");
    assert!(
        uri.starts_with(&format!("otpauth://totp/Example%20Corp:{user_id}?")),
        "label: {uri}"
    );
    assert!(!uri.contains("example.com"), "address in label: {uri}");
    app.finish().await;
}

#[tokio::test]
async fn setup_with_wrong_password_is_auth_003() {
    let (app, _clock) = spawn().await;
    let (_, token) = app.signed_in(EMAIL).await;

    let (status, body) = post(
        &app,
        "/users/me/mfa/totp/setup",
        Some(&token),
        json!({"current_password": "wrong horse battery staple"}),
    )
    .await;

    assert_eq!(status, 401);
    assert_error(&body, "AUTH_003");
    app.finish().await;
}

#[tokio::test]
async fn verify_enables_totp_with_ten_codes() {
    let (app, clock) = spawn().await;

    let enrolled = enrol(&app, &clock).await;

    assert_eq!(enrolled.recovery_codes.len(), 10);
    let status = mfa_status(&app, &enrolled.token).await;
    assert_eq!(status["totp_enabled"], true);
    assert_eq!(status["recovery_codes_remaining"], 10);
    assert!(status["enrolled_at"].is_string());
    let profile = body(app.get_me(&enrolled.token).await).await;
    assert_eq!(profile["data"]["mfa_enabled"], true);
    app.finish().await;
}

#[tokio::test]
async fn login_needs_code_then_accepts_each_step_once() {
    let (app, clock) = spawn().await;
    let enrolled = enrol(&app, &clock).await;
    clock.advance(Duration::seconds(30));
    let now = aggregates::services::Clock::now(clock.as_ref());
    let code = code_at(&enrolled.secret, now);

    let response = app.login(EMAIL, PASSWORD).await;
    let first = body(response).await;
    assert_eq!(first["data"]["mfa_required"], true);
    assert!(first["data"]["access_token"].is_null(), "{first}");
    let expires_at: DateTime<Utc> = first["data"]["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("RFC 3339");
    assert_eq!(expires_at, now + Duration::minutes(5));
    let mfa_token = first["data"]["mfa_token"].as_str().expect("mfa_token");
    assert!(mfa_token.starts_with("lam_"));

    let (status, accepted) = second_step(&app, json!({"mfa_token": mfa_token, "code": code})).await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["data"]["token_type"], "Bearer");
    assert_eq!(accepted["data"]["user_id"], enrolled.user_id.to_string());
    let access_token = accepted["data"]["access_token"].as_str().expect("token");
    assert_eq!(app.get_me(access_token).await.status(), 200);

    let replay_token = first_step(&app).await;
    let (status, replayed) =
        second_step(&app, json!({"mfa_token": replay_token, "code": code})).await;
    assert_eq!(status, 401);
    assert_error(&replayed, "AUTH_003");

    clock.set(now + Duration::seconds(30));
    let next = code_at(&enrolled.secret, now + Duration::seconds(30));
    let (status, next_step) =
        second_step(&app, json!({"mfa_token": replay_token, "code": next})).await;
    assert_eq!(status, 200, "{next_step}");
    app.finish().await;
}

#[tokio::test]
async fn setup_code_replayed_at_login_is_auth_003() {
    let (app, clock) = spawn().await;
    let enrolled = enrol(&app, &clock).await;
    let setup_code = code_at(
        &enrolled.secret,
        aggregates::services::Clock::now(clock.as_ref()),
    );
    let mfa_token = first_step(&app).await;

    let (status, body) =
        second_step(&app, json!({"mfa_token": mfa_token, "code": setup_code})).await;

    assert_eq!(status, 401);
    assert_error(&body, "AUTH_003");
    assert_eq!(session_count(&app, enrolled.user_id).await, 1);
    app.finish().await;
}

#[tokio::test]
async fn failed_verify_leaves_totp_off() {
    let (app, clock) = spawn().await;
    let (_, token) = app.signed_in(EMAIL).await;
    let secret = start_setup(&app, &token).await;
    let now = aggregates::services::Clock::now(clock.as_ref());
    let stale = code_at(&secret, now - Duration::minutes(5));

    let (status, body) = post(
        &app,
        "/users/me/mfa/totp/verify",
        Some(&token),
        json!({"code": stale}),
    )
    .await;

    assert_eq!(status, 401);
    assert_error(&body, "AUTH_003");
    assert_eq!(mfa_status(&app, &token).await["totp_enabled"], false);
    let login = crate::helpers::body(app.login(EMAIL, PASSWORD).await).await;
    assert_eq!(login["data"]["mfa_required"], false);
    assert!(login["data"]["access_token"].is_string(), "{login}");
    app.finish().await;
}

#[tokio::test]
async fn expired_setup_cannot_be_verified() {
    let (app, clock) = spawn().await;
    let (_, token) = app.signed_in(EMAIL).await;
    let secret = start_setup(&app, &token).await;
    clock.advance(Duration::minutes(11));
    let code = code_at(&secret, aggregates::services::Clock::now(clock.as_ref()));

    let (status, body) = post(
        &app,
        "/users/me/mfa/totp/verify",
        Some(&token),
        json!({"code": code}),
    )
    .await;

    assert_eq!(status, 400);
    assert_error(&body, "VAL_001");
    assert_eq!(mfa_status(&app, &token).await["totp_enabled"], false);
    app.finish().await;
}

#[tokio::test]
async fn new_setup_replaces_unverified_one() {
    let (app, clock) = spawn().await;
    let (_, token) = app.signed_in(EMAIL).await;
    let first = start_setup(&app, &token).await;
    let second = start_setup(&app, &token).await;
    let now = aggregates::services::Clock::now(clock.as_ref());

    let (old_status, old) = post(
        &app,
        "/users/me/mfa/totp/verify",
        Some(&token),
        json!({"code": code_at(&first, now)}),
    )
    .await;
    let (new_status, _) = post(
        &app,
        "/users/me/mfa/totp/verify",
        Some(&token),
        json!({"code": code_at(&second, now)}),
    )
    .await;

    assert_ne!(first, second);
    assert_eq!(old_status, 401);
    assert_error(&old, "AUTH_003");
    assert_eq!(new_status, 200);
    app.finish().await;
}

#[tokio::test]
async fn parallel_recovery_code_logins_one_winner() {
    // Eleven password logins to one account exceed the sensitive limit of ten a minute.
    let (app, clock) = spawn_with(|database| database.config.rate_sensitive = 100).await;
    let enrolled = enrol(&app, &clock).await;
    let mut tokens = Vec::new();
    for _ in 0..10 {
        tokens.push(first_step(&app).await);
    }
    let recovery_code = &enrolled.recovery_codes[0];

    let attempts = tokens.iter().map(|mfa_token| {
        second_step(
            &app,
            json!({"mfa_token": mfa_token, "recovery_code": recovery_code}),
        )
    });
    let results = join_all(attempts).await;

    let winners = results
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert_eq!(winners, 1, "{results:?}");
    for (status, body) in results
        .iter()
        .filter(|(status, _)| *status != StatusCode::OK)
    {
        let code = body["error"]["code"].as_str().expect("error code");
        assert!(
            (*status == StatusCode::UNAUTHORIZED && code == "AUTH_003")
                || (*status == StatusCode::CONFLICT && code == "CONFLICT_001"),
            "unexpected loser: {status} {body}"
        );
    }
    assert_eq!(session_count(&app, enrolled.user_id).await, 2);
    let status = mfa_status(&app, &enrolled.token).await;
    assert_eq!(status["recovery_codes_remaining"], 9);
    app.finish().await;
}

#[tokio::test]
async fn mfa_token_is_not_a_bearer_token() {
    let (app, clock) = spawn().await;
    let enrolled = enrol(&app, &clock).await;
    let mfa_token = first_step(&app).await;

    let me = app.get_me(&mfa_token).await;
    let status = app
        .client
        .get(app.url(&format!("/users/{}/mfa", enrolled.user_id)))
        .bearer_auth(&mfa_token)
        .send()
        .await
        .expect("sent");
    let logout = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&mfa_token)
        .send()
        .await
        .expect("sent");
    let as_api_key = app
        .client
        .get(app.url("/users/me"))
        .header("x-api-key", &mfa_token)
        .send()
        .await
        .expect("sent");

    for response in [me, status, logout, as_api_key] {
        assert_eq!(response.status(), 401);
        assert_error(&body(response).await, "AUTH_001");
    }
    assert_eq!(session_count(&app, enrolled.user_id).await, 1);
    app.finish().await;
}

#[tokio::test]
async fn regenerated_codes_void_the_old_set() {
    let (app, clock) = spawn().await;
    let enrolled = enrol(&app, &clock).await;
    clock.advance(Duration::seconds(30));
    let code = code_at(
        &enrolled.secret,
        aggregates::services::Clock::now(clock.as_ref()),
    );

    let (status, regenerated) = post(
        &app,
        "/users/me/mfa/recovery-codes",
        Some(&enrolled.token),
        json!({"code": code}),
    )
    .await;
    assert_eq!(status, 200, "{regenerated}");
    let new_codes = regenerated["data"]["recovery_codes"]
        .as_array()
        .expect("codes");
    assert_eq!(new_codes.len(), 10);

    let mfa_token = first_step(&app).await;
    let (old_status, old) = second_step(
        &app,
        json!({"mfa_token": mfa_token, "recovery_code": enrolled.recovery_codes[0]}),
    )
    .await;
    assert_eq!(old_status, 401);
    assert_error(&old, "AUTH_003");
    let (new_status, _) = second_step(
        &app,
        json!({"mfa_token": mfa_token, "recovery_code": new_codes[0]}),
    )
    .await;
    assert_eq!(new_status, 200);
    let status = mfa_status(&app, &enrolled.token).await;
    assert_eq!(status["recovery_codes_remaining"], 9);
    app.finish().await;
}

#[tokio::test]
async fn five_wrong_codes_void_the_mfa_token() {
    let (app, clock) = spawn().await;
    let enrolled = enrol(&app, &clock).await;
    let mfa_token = first_step(&app).await;
    clock.advance(Duration::seconds(30));
    let right = code_at(
        &enrolled.secret,
        aggregates::services::Clock::now(clock.as_ref()),
    );
    let wrong = format!(
        "{:06}",
        (right.parse::<u32>().expect("digits") + 1) % 1_000_000
    );

    for attempt in 1..=5 {
        let (status, body) =
            second_step(&app, json!({"mfa_token": mfa_token, "code": wrong})).await;
        assert_eq!(status, 401, "attempt {attempt}");
        assert_error(&body, "AUTH_003");
    }
    let (status, body) = second_step(&app, json!({"mfa_token": mfa_token, "code": right})).await;

    assert_eq!(status, 401);
    assert_error(&body, "AUTH_001");
    assert_eq!(session_count(&app, enrolled.user_id).await, 1);
    app.finish().await;
}

#[tokio::test]
async fn used_mfa_token_is_auth_001() {
    let (app, clock) = spawn().await;
    let enrolled = enrol(&app, &clock).await;
    let mfa_token = first_step(&app).await;
    let (status, _) = second_step(
        &app,
        json!({"mfa_token": mfa_token, "recovery_code": enrolled.recovery_codes[0]}),
    )
    .await;
    assert_eq!(status, 200);

    let (status, body) = second_step(
        &app,
        json!({"mfa_token": mfa_token, "recovery_code": enrolled.recovery_codes[1]}),
    )
    .await;

    assert_eq!(status, 401);
    assert_error(&body, "AUTH_001");
    app.finish().await;
}

#[tokio::test]
async fn expired_mfa_token_is_auth_001() {
    let (app, clock) = spawn().await;
    let enrolled = enrol(&app, &clock).await;
    let mfa_token = first_step(&app).await;
    clock.advance(Duration::minutes(5));

    let (status, body) = second_step(
        &app,
        json!({"mfa_token": mfa_token, "recovery_code": enrolled.recovery_codes[0]}),
    )
    .await;

    assert_eq!(status, 401);
    assert_error(&body, "AUTH_001");
    app.finish().await;
}

#[tokio::test]
async fn second_step_checks_its_fields() {
    let (app, clock) = spawn().await;
    enrol(&app, &clock).await;
    let mfa_token = first_step(&app).await;

    let (no_factor, no_factor_body) = second_step(&app, json!({"mfa_token": mfa_token})).await;
    let (no_token, no_token_body) = second_step(&app, json!({"code": "123456"})).await;
    let (number, number_body) =
        second_step(&app, json!({"mfa_token": mfa_token, "code": 123_456})).await;
    let (both, both_body) = second_step(
        &app,
        json!({"mfa_token": mfa_token, "code": "123456", "recovery_code": "AAAA-BBBB-CCCC"}),
    )
    .await;
    let (unknown, unknown_body) = second_step(
        &app,
        json!({"mfa_token": "lam_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "code": "123456"}),
    )
    .await;

    assert_eq!(no_factor, 400);
    assert_error(&no_factor_body, "VAL_002");
    assert_eq!(no_token, 400);
    assert_error(&no_token_body, "VAL_002");
    assert_eq!(number, 400);
    assert_error(&number_body, "VAL_001");
    assert_eq!(both, 400);
    assert_error(&both_body, "VAL_001");
    assert_eq!(unknown, 401);
    assert_error(&unknown_body, "AUTH_001");
    app.finish().await;
}

#[tokio::test]
async fn disable_needs_password_and_factor() {
    let (app, clock) = spawn().await;
    let enrolled = enrol(&app, &clock).await;
    clock.advance(Duration::seconds(30));
    let code = code_at(
        &enrolled.secret,
        aggregates::services::Clock::now(clock.as_ref()),
    );

    let (wrong_password, wrong_password_body) = post(
        &app,
        "/users/me/mfa/totp/disable",
        Some(&enrolled.token),
        json!({"current_password": "wrong horse battery staple", "code": code}),
    )
    .await;
    let (no_factor, no_factor_body) = post(
        &app,
        "/users/me/mfa/totp/disable",
        Some(&enrolled.token),
        json!({"current_password": PASSWORD}),
    )
    .await;
    let (disabled, disabled_body) = post(
        &app,
        "/users/me/mfa/totp/disable",
        Some(&enrolled.token),
        json!({"current_password": PASSWORD, "code": code}),
    )
    .await;

    assert_eq!(wrong_password, 401);
    assert_error(&wrong_password_body, "AUTH_003");
    assert_eq!(no_factor, 400);
    assert_error(&no_factor_body, "VAL_002");
    assert_eq!(disabled, 200, "{disabled_body}");
    let status = mfa_status(&app, &enrolled.token).await;
    assert_eq!(status["totp_enabled"], false);
    assert_eq!(status["recovery_codes_remaining"], 0);
    let profile = body(app.get_me(&enrolled.token).await).await;
    assert_eq!(profile["data"]["mfa_enabled"], false);
    let login = body(app.login(EMAIL, PASSWORD).await).await;
    assert!(login["data"]["access_token"].is_string(), "{login}");
    app.finish().await;
}

#[tokio::test]
async fn disable_voids_open_mfa_tokens() {
    let (app, clock) = spawn().await;
    let enrolled = enrol(&app, &clock).await;
    let mfa_token = first_step(&app).await;
    let (status, _) = post(
        &app,
        "/users/me/mfa/totp/disable",
        Some(&enrolled.token),
        json!({"current_password": PASSWORD, "recovery_code": enrolled.recovery_codes[0]}),
    )
    .await;
    assert_eq!(status, 200);

    let (status, body) = second_step(
        &app,
        json!({"mfa_token": mfa_token, "recovery_code": enrolled.recovery_codes[1]}),
    )
    .await;

    assert_eq!(status, 401);
    assert_error(&body, "AUTH_001");
    app.finish().await;
}

#[tokio::test]
async fn password_change_voids_mfa_tokens() {
    let (app, clock) = spawn().await;
    let enrolled = enrol(&app, &clock).await;
    let mfa_token = first_step(&app).await;
    let (status, body_sent) = post(
        &app,
        "/users/me/password/change",
        Some(&enrolled.token),
        json!({"current_password": PASSWORD, "new_password": "violet ostrich paints thunder"}),
    )
    .await;
    assert_eq!(status, 200, "password change failed: {body_sent}");

    let (status, body) = second_step(
        &app,
        json!({"mfa_token": mfa_token, "recovery_code": enrolled.recovery_codes[0]}),
    )
    .await;

    assert_eq!(status, 401);
    assert_error(&body, "AUTH_001");
    app.finish().await;
}

#[tokio::test]
async fn totp_secret_is_sealed_in_events() {
    let (app, clock) = spawn().await;
    let enrolled = enrol(&app, &clock).await;

    let payloads: Vec<String> = sqlx::query_scalar(
        "SELECT payload::text FROM events WHERE aggregate_id = $1 AND event_type LIKE 'Totp%'",
    )
    .bind(enrolled.user_id.to_string())
    .fetch_all(&app.pool)
    .await
    .expect("read events");

    assert!(!payloads.is_empty());
    for payload in payloads {
        assert!(!payload.contains(&enrolled.secret), "secret in {payload}");
        assert!(
            !payload.contains("$personal"),
            "unsealed field in {payload}"
        );
    }
    app.finish().await;
}

/// Suspends a user by appending the event directly, then waits for the profile to show it.
async fn suspend(app: &TestApp, user_id: Uuid) {
    let store = app.event_store();
    let context = store
        .load_aggregate(&user_id.to_string())
        .await
        .expect("load user");
    let suspension = UserEvent::UserSuspended(UserSuspended {
        reason: Personal::Known(None),
        suspended_at: Utc::now(),
    });
    store
        .commit(
            vec![suspension],
            context,
            HashMap::from([("actor".to_owned(), "test".to_owned())]),
        )
        .await
        .expect("commit suspension");

    for _ in 0..50 {
        let status: String =
            sqlx::query_scalar("SELECT status FROM user_profiles WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&app.pool)
                .await
                .expect("read status");
        if status == "suspended" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the suspension did not reach the profile");
}

#[tokio::test]
async fn suspended_user_second_step_is_user_002() {
    let (app, clock) = spawn().await;
    let enrolled = enrol(&app, &clock).await;
    let mfa_token = first_step(&app).await;
    suspend(&app, enrolled.user_id).await;

    let (status, body) = second_step(
        &app,
        json!({"mfa_token": mfa_token, "recovery_code": enrolled.recovery_codes[0]}),
    )
    .await;

    assert_eq!(status, 403);
    assert_error(&body, "USER_002");
    let sessions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(enrolled.user_id)
    .fetch_one(&app.pool)
    .await
    .expect("count sessions");
    assert_eq!(sessions, 0);
    app.finish().await;
}

#[tokio::test]
async fn openapi_document_lists_mfa_endpoints() {
    let (app, _clock) = spawn().await;

    let document: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");

    for path in [
        "/api/v1/auth/login/mfa",
        "/api/v1/users/{userId}/mfa",
        "/api/v1/users/{userId}/mfa/totp/setup",
        "/api/v1/users/{userId}/mfa/totp/verify",
        "/api/v1/users/{userId}/mfa/totp/disable",
        "/api/v1/users/{userId}/mfa/recovery-codes",
    ] {
        assert!(document["paths"].get(path).is_some(), "{path} missing");
    }
    app.finish().await;
}
