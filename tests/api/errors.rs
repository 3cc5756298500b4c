//! Bad input, unknown routes and a dead database, mostly through the router without a socket.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::Connection;
use tower::ServiceExt;

use crate::helpers::{PASSWORD, TestApp, assert_error, body};

async fn call(app: &TestApp, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = app
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("body is not JSON: {}", String::from_utf8_lossy(&bytes)));
    (status, headers, value)
}

fn post_users(body: impl Into<Body>) -> Request<Body> {
    Request::post("/api/v1/users")
        .header("content-type", "application/json")
        .body(body.into())
        .expect("request")
}

#[tokio::test]
async fn malformed_bodies_are_val_001_and_write_nothing() {
    let app = TestApp::spawn().await;
    let mut invalid_utf8 = br#"{"email": "ada@example.com", "password": ""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8.extend_from_slice(b"\"}");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated JSON", br#"{"email": "ada@example.com""#.to_vec()),
        ("not an object", b"[1, 2, 3]".to_vec()),
        ("wrong type", json!({"email": 5, "password": PASSWORD}).to_string().into_bytes()),
        (
            "unknown field",
            json!({"email": "ada@example.com", "password": PASSWORD, "role": "admin"})
                .to_string()
                .into_bytes(),
        ),
        ("invalid UTF-8", invalid_utf8),
        (
            "repeated key",
            format!(
                r#"{{"email": "ada@example.com", "email": "eve@example.com", "password": "{PASSWORD}"}}"#
            )
            .into_bytes(),
        ),
        (
            "deep nesting",
            format!(
                r#"{{"email": "ada@example.com", "password": "{PASSWORD}", "metadata": {}0{}}}"#,
                "[".repeat(3000),
                "]".repeat(3000)
            )
            .into_bytes(),
        ),
        (
            "huge string",
            json!({"email": "ada@example.com", "password": PASSWORD, "display_name": "x".repeat(60_000)})
                .to_string()
                .into_bytes(),
        ),
    ];

    for (case, bytes) in cases {
        let (status, _, body) = call(&app, post_users(bytes)).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}");
        assert_error(&body, "VAL_001");
    }
    assert_eq!(app.event_count().await, 0);
    app.finish().await;
}

#[tokio::test]
async fn compressed_body_is_val_001() {
    let app = TestApp::spawn().await;
    let request = Request::post("/api/v1/users")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Body::from(
            json!({"email": "ada@example.com", "password": PASSWORD}).to_string(),
        ))
        .expect("request");

    let (status, _, body) = call(&app, request).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "VAL_001");
    assert_eq!(app.event_count().await, 0);
    app.finish().await;
}

#[tokio::test]
async fn oversized_body_is_413_val_001() {
    let app = TestApp::spawn().await;
    let padding = "x".repeat(70 * 1024);
    let bytes =
        json!({"email": "ada@example.com", "password": PASSWORD, "metadata": {"pad": padding}})
            .to_string();

    let (status, _, body) = call(&app, post_users(bytes)).await;

    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&body, "VAL_001");
    assert_eq!(app.event_count().await, 0);
    app.finish().await;
}

#[tokio::test]
async fn non_json_content_type_is_val_001() {
    let app = TestApp::spawn().await;
    let request = Request::post("/api/v1/users")
        .header("content-type", "text/plain")
        .body(Body::from(
            json!({"email": "ada@example.com", "password": PASSWORD}).to_string(),
        ))
        .expect("request");

    let (status, _, body) = call(&app, request).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "VAL_001");
    app.finish().await;
}

#[tokio::test]
async fn unknown_route_and_method_use_envelope() {
    let app = TestApp::spawn().await;

    let (missing, _, missing_body) = call(
        &app,
        Request::get("/api/v1/nothing")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    let (wrong_method, _, wrong_method_body) = call(
        &app,
        Request::builder()
            .method(Method::DELETE)
            .uri("/api/v1/auth/login")
            .body(Body::empty())
            .expect("request"),
    )
    .await;

    let (missing_doc, _, missing_doc_body) = call(
        &app,
        Request::get("/docs/nothing.js")
            .body(Body::empty())
            .expect("request"),
    )
    .await;

    assert_eq!(missing, StatusCode::NOT_FOUND);
    assert_error(&missing_body, "VAL_001");
    assert_eq!(missing_doc, StatusCode::NOT_FOUND);
    assert_error(&missing_doc_body, "VAL_001");
    assert_eq!(wrong_method, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&wrong_method_body, "VAL_001");
    app.finish().await;
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let app = TestApp::spawn().await;

    let (_, echoed, _) = call(
        &app,
        Request::get("/healthz")
            .header("x-request-id", "client-42")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    let (_, generated, _) = call(
        &app,
        Request::get("/healthz")
            .header("x-request-id", "bad id with spaces")
            .body(Body::empty())
            .expect("request"),
    )
    .await;

    assert_eq!(echoed["x-request-id"], "client-42");
    let generated = generated["x-request-id"].to_str().expect("ascii");
    assert!(generated.parse::<uuid::Uuid>().is_ok(), "{generated}");
    app.finish().await;
}

#[tokio::test]
async fn openapi_document_lists_endpoints() {
    let app = TestApp::spawn().await;

    let document: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let docs = app
        .client
        .get(format!("{}/docs/", app.address))
        .send()
        .await
        .expect("sent");

    for path in [
        "/api/v1/users",
        "/api/v1/users/{userId}",
        "/api/v1/auth/login",
        "/api/v1/auth/logout",
    ] {
        assert!(document["paths"].get(path).is_some(), "{path} missing");
    }
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.expect("html").contains("swagger"));
    app.finish().await;
}

#[tokio::test]
async fn dead_database_is_503_sys_002() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;
    let mut admin = sqlx::PgConnection::connect(
        &app.database
            .config
            .database_url
            .replace(&app.database.name, "postgres"),
    )
    .await
    .expect("admin connection");
    let name = &app.database.name;
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&mut admin)
        .await
        .expect("close database");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .execute(&mut admin)
        .await
        .expect("terminate backends");

    let started = std::time::Instant::now();
    let response = app.get_me(&token).await;
    // One wait for a connection (five seconds), not one in the credential check and another
    // in the handler.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(response.headers().contains_key("x-ratelimit-limit"));
    let body = body(response).await;
    assert_error(&body, "SYS_002");
    assert!(
        !body.to_string().contains("sqlx"),
        "internal text leaked: {body}"
    );
    assert_eq!(ready.status(), 503);
    app.finish().await;
}

#[tokio::test]
async fn timed_out_handler_keeps_rate_headers() {
    // The account is set up under the default timeout, so that a slow setup on a busy machine
    // does not run into the short one that the check needs.
    let mut setup = TestApp::spawn().await;
    let (user_id, token) = setup.signed_in("ada@example.com").await;
    setup.stop().await;
    let database = Arc::new(
        setup
            .database
            .reconfigured(|config| config.request_timeout_secs = 1),
    );
    let app = TestApp::spawn_on(database).await;
    let mut blocker = sqlx::PgConnection::connect(&app.database.config.database_url)
        .await
        .expect("blocking connection");
    let mut lock = blocker.begin().await.expect("begin");
    sqlx::query("LOCK TABLE user_mfa IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock the MFA read model");

    let started = std::time::Instant::now();
    let response = app
        .client
        .get(app.url(&format!("/users/{user_id}/mfa")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    let elapsed = started.elapsed();
    lock.rollback().await.expect("release the lock");

    assert_eq!(response.status(), 503);
    assert!(
        elapsed < std::time::Duration::from_secs(8),
        "took {elapsed:?}"
    );
    for header in [
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(response.headers().contains_key(header), "{header} missing");
    }
    assert_error(&body(response).await, "SYS_002");
    app.finish().await;
}

#[tokio::test]
async fn stalled_credential_check_keeps_rate_headers() {
    let mut setup = TestApp::spawn().await;
    let (_, token) = setup.signed_in("ada@example.com").await;
    setup.stop().await;
    let database = Arc::new(
        setup
            .database
            .reconfigured(|config| config.request_timeout_secs = 1),
    );
    let app = TestApp::spawn_on(database).await;
    let mut blocker = sqlx::PgConnection::connect(&app.database.config.database_url)
        .await
        .expect("blocking connection");
    let mut lock = blocker.begin().await.expect("begin");
    sqlx::query("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock the sessions read model");

    let response = app.get_me(&token).await;
    lock.rollback().await.expect("release the lock");

    assert_eq!(response.status(), 503);
    for header in ["retry-after", "x-ratelimit-limit", "x-ratelimit-remaining"] {
        assert!(response.headers().contains_key(header), "{header} missing");
    }
    assert_error(&body(response).await, "SYS_002");
    app.finish().await;
}

#[tokio::test]
async fn health_stays_up_after_bad_input() {
    let app = TestApp::spawn().await;
    call(&app, post_users(vec![0xff_u8; 10])).await;

    let response = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("sent");
    let ready = app
        .client
        .get(format!("{}/api/v1/readyz", app.address))
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), 200);
    assert_eq!(ready.status(), 200);
    assert_eq!(body(ready).await["data"]["status"], "ready");
    app.finish().await;
}

#[tokio::test]
async fn docs_page_is_served_from_the_binary() {
    let app = TestApp::spawn().await;

    let page = app
        .client
        .get(format!("{}/docs/", app.address))
        .send()
        .await
        .expect("request sent");
    let stylesheet = app
        .client
        .get(format!("{}/docs/swagger-ui.css", app.address))
        .send()
        .await
        .expect("request sent");

    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("page").contains("swagger-ui"));
    assert_eq!(stylesheet.status(), 200);
    app.finish().await;
}

#[tokio::test]
async fn internal_fault_is_sys_001() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;
    sqlx::query("DROP TABLE user_mfa")
        .execute(&app.pool)
        .await
        .expect("drop a read-model table");

    let response = app
        .client
        .get(app.url("/users/me/mfa"))
        .bearer_auth(&token)
        .header("x-request-id", "fault-1")
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), 500);
    let body = body(response).await;
    assert_error(&body, "SYS_001");
    assert_eq!(body["error"]["details"]["request_id"], "fault-1");
    let text = body.to_string();
    for internal in ["user_mfa", "relation", "sqlx", "does not exist"] {
        assert!(
            !text.contains(internal),
            "internal text {internal:?} leaked: {text}"
        );
    }
    app.finish().await;
}
