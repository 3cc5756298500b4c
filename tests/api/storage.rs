use std::sync::Arc;

use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, TestDatabase, body};

#[tokio::test]
async fn events_table_holds_no_personal_plaintext() {
    let app = TestApp::spawn().await;
    app.register(&json!({
        "email": "Ada.Lovelace@Example.com",
        "password": PASSWORD,
        "display_name": "Countess Lovelace",
        "given_name": "Augusta",
        "phone": "+447700900123"
    }))
    .await;
    let login = app
        .client
        .post(app.url("/auth/login"))
        .header("user-agent", "LedgerTestAgent/1.0")
        .json(&json!({"email": "ada.lovelace@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(login.status(), 200);

    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT payload::text, metadata::text FROM events")
            .fetch_all(&app.pool)
            .await
            .expect("read events");

    assert_eq!(rows.len(), 2);
    for (payload, metadata) in rows {
        let stored = format!("{payload} {metadata}").to_lowercase();
        for secret in [
            "ada.lovelace@example.com",
            "countess lovelace",
            "augusta",
            "+447700900123",
            "ledgertestagent",
            "127.0.0.1",
            "$argon2id",
        ] {
            assert!(
                !stored.contains(secret),
                "{secret} stored in plain text: {stored}"
            );
        }
    }
    app.finish().await;
}

#[tokio::test]
async fn data_survives_restart() {
    let database = Arc::new(TestDatabase::new());
    let mut first = TestApp::spawn_on(database.clone()).await;
    let (user_id, token) = first.signed_in("ada@example.com").await;
    first
        .patch_me(&token, &json!({"display_name": "Ada"}))
        .await;
    first.stop().await;

    let second = TestApp::spawn_on(database).await;
    let profile = body(second.get_me(&token).await).await;
    let fresh_token = second.token_for("ada@example.com").await;

    assert_eq!(profile["data"]["user_id"], user_id.to_string());
    assert_eq!(profile["data"]["display_name"], "Ada");
    assert_eq!(profile["data"]["email"], "ada@example.com");
    assert_eq!(second.get_me(&fresh_token).await.status(), 200);
    second.finish().await;
}
