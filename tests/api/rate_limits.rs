//! Rate limiting: the sensitive class, client addresses behind proxies, and the headers.

use reqwest::Response;
use serde_json::json;

use crate::helpers::{TestApp, assert_error, body};

fn assert_rate_headers(response: &Response) {
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        let value = response.headers().get(name);
        assert!(value.is_some(), "{name} missing on {}", response.status());
    }
}

fn header_number(response: &Response, name: &str) -> u64 {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not a number"))
}

/// Sends an anonymous request that the standard class counts by client address.
async fn anonymous_request(app: &TestApp, forwarded_for: &str) -> Response {
    app.client
        .get(app.url("/users/me"))
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .expect("request sent")
}

#[tokio::test]
async fn eleventh_login_is_rate_limited() {
    let app = TestApp::spawn().await;
    app.register_user("ada@example.com").await;
    // Variant spellings of one address and a new forwarded address on every request, from a
    // peer that is not a trusted proxy, all count against one bucket.
    let spellings = ["ada@example.com", "ADA@example.com", " Ada@Example.COM "];

    let mut answers = Vec::new();
    for attempt in 0..11 {
        let response = app
            .client
            .post(app.url("/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.{attempt}"))
            .json(&json!({"email": spellings[attempt % 3], "password": "wrong horse battery"}))
            .send()
            .await
            .expect("request sent");
        answers.push(response);
    }

    let last = answers.pop().expect("eleven answers");
    for (attempt, answer) in answers.iter().enumerate() {
        assert_eq!(answer.status(), 401, "attempt {attempt}");
        assert_rate_headers(answer);
    }
    assert_eq!(header_number(&answers[0], "x-ratelimit-limit"), 10);
    assert_eq!(header_number(&answers[0], "x-ratelimit-remaining"), 9);
    assert_eq!(last.status(), 429);
    assert_rate_headers(&last);
    assert_eq!(header_number(&last, "x-ratelimit-remaining"), 0);
    assert!(header_number(&last, "retry-after") >= 1);
    assert_error(&body(last).await, "RATE_001");
    app.finish().await;
}

#[tokio::test]
async fn rate_limited_login_checks_no_password() {
    let app = TestApp::spawn().await;
    app.register_user("ada@example.com").await;
    for _ in 0..10 {
        app.login("ada@example.com", "wrong horse battery").await;
    }

    let right_password = app.login("ada@example.com", crate::helpers::PASSWORD).await;

    assert_eq!(right_password.status(), 429);
    app.finish().await;
}

#[tokio::test]
async fn untrusted_forwarded_for_is_ignored() {
    let app = TestApp::spawn_with(|config| config.rate_standard = 3).await;

    let mut statuses = Vec::new();
    for client in 1..=4 {
        let response = anonymous_request(&app, &format!("203.0.113.{client}")).await;
        statuses.push(response.status().as_u16());
    }

    assert_eq!(statuses, [401, 401, 401, 429]);
    app.finish().await;
}

#[tokio::test]
async fn trusted_proxy_keys_by_forwarded_client() {
    let app = TestApp::spawn_with(|config| {
        config.rate_standard = 3;
        config.trusted_proxies = vec!["127.0.0.1/32".parse().expect("network")];
    })
    .await;

    let mut first_client = Vec::new();
    for _ in 0..4 {
        let response = anonymous_request(&app, "203.0.113.1").await;
        first_client.push(response.status().as_u16());
    }
    let second_client = anonymous_request(&app, "203.0.113.2").await;

    assert_eq!(first_client, [401, 401, 401, 429]);
    assert_eq!(second_client.status(), 401);
    app.finish().await;
}

#[tokio::test]
async fn headers_on_not_found_and_unauthorized() {
    let app = TestApp::spawn().await;

    let not_found = app
        .client
        .get(app.url("/no-such-endpoint"))
        .send()
        .await
        .expect("request sent");
    let unauthorized = app
        .client
        .get(app.url("/users/me"))
        .send()
        .await
        .expect("request sent");

    assert_eq!(not_found.status(), 404);
    assert_rate_headers(&not_found);
    assert_eq!(unauthorized.status(), 401);
    assert_rate_headers(&unauthorized);
    assert_eq!(header_number(&unauthorized, "x-ratelimit-limit"), 100);
    app.finish().await;
}

#[tokio::test]
async fn bearer_requests_count_per_user() {
    let app = TestApp::spawn_with(|config| config.rate_standard = 3).await;
    let (_, ada) = app.signed_in("ada@example.com").await;
    let (_, grace) = app.signed_in("grace@example.com").await;

    let mut ada_statuses = Vec::new();
    for _ in 0..4 {
        ada_statuses.push(app.get_me(&ada).await.status().as_u16());
    }
    let grace_status = app.get_me(&grace).await.status();

    assert_eq!(ada_statuses, [200, 200, 200, 429]);
    assert_eq!(grace_status, 200);
    app.finish().await;
}

#[tokio::test]
async fn login_counts_against_named_account() {
    let app = TestApp::spawn().await;
    app.register_user("ada@example.com").await;
    let (_, eve) = app.signed_in("eve@example.com").await;
    for _ in 0..10 {
        app.login("ada@example.com", "wrong horse battery").await;
    }

    let with_token = app
        .client
        .post(app.url("/auth/login"))
        .bearer_auth(&eve)
        .json(&json!({"email": "ada@example.com", "password": crate::helpers::PASSWORD}))
        .send()
        .await
        .expect("request sent");

    assert_eq!(with_token.status(), 429);
    assert_error(&body(with_token).await, "RATE_001");
    app.finish().await;
}

#[tokio::test]
async fn client_bucket_caps_login_spraying() {
    let app = TestApp::spawn_with(|config| config.rate_standard = 5).await;

    let mut statuses = Vec::new();
    for account in 1..=6 {
        let response = app
            .client
            .post(app.url("/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.{account}"))
            .json(&json!({
                "email": format!("user{account}@example.com"),
                "password": "wrong horse battery",
            }))
            .send()
            .await
            .expect("request sent");
        statuses.push(response.status().as_u16());
    }

    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    app.finish().await;
}

#[tokio::test]
async fn decoy_body_keeps_caller_bucket() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;

    let mut statuses = Vec::new();
    for attempt in 0..11 {
        let response = app
            .client
            .post(app.url("/users/me/email/resend-verification"))
            .bearer_auth(&token)
            .json(&json!({"email": format!("decoy{attempt}@example.com")}))
            .send()
            .await
            .expect("request sent");
        statuses.push(response.status().as_u16());
    }

    assert!(
        statuses[..10].iter().all(|status| *status != 429),
        "{statuses:?}"
    );
    assert_eq!(statuses[10], 429, "{statuses:?}");
    app.finish().await;
}
