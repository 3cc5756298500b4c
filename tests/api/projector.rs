use std::collections::HashMap;
use std::sync::Arc;

use aggregates::personal::Personal;
use aggregates::user::{ProfileChanges, ProfileUpdated, UserEvent};
use chrono::Utc;
use cqrs_es::EventStore;
use serde_json::json;

use crate::helpers::{TestApp, TestDatabase, body};

#[tokio::test]
async fn projector_catches_up_after_restart_without_reapplying() {
    let database = Arc::new(TestDatabase::new());
    let mut first = TestApp::spawn_on(database.clone()).await;
    let (user_id, token) = first.signed_in("ada@example.com").await;
    first.stop().await;

    // Append while no projector runs, as if the service crashed right after a commit.
    let offline = TestApp::pool_only(database.clone()).await;
    let store = offline.event_store();
    let context = store
        .load_aggregate(&user_id.to_string())
        .await
        .expect("load");
    let change = UserEvent::ProfileUpdated(ProfileUpdated {
        changes: ProfileChanges {
            display_name: Some(Personal::Known(Some("Offline".to_owned()))),
            ..ProfileChanges::default()
        },
        updated_at: Utc::now(),
    });
    store
        .commit(
            vec![change],
            context,
            HashMap::from([("actor".to_owned(), "test".to_owned())]),
        )
        .await
        .expect("commit");
    let stale: Option<String> =
        sqlx::query_scalar("SELECT display_name FROM user_profiles WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&offline.pool)
            .await
            .expect("read view");
    assert_eq!(stale, None);

    let second = TestApp::spawn_on(database).await;
    let profile = body(second.get_me(&token).await).await;

    assert_eq!(profile["data"]["display_name"], "Offline");
    assert_eq!(profile["data"]["version"], 2);
    let (checkpoint, last): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT global_position FROM projection_checkpoints WHERE projection = 'profiles'),
                (SELECT max(global_position) FROM events)",
    )
    .fetch_one(&second.pool)
    .await
    .expect("positions");
    assert_eq!(checkpoint, last);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM user_profiles")
        .fetch_one(&second.pool)
        .await
        .expect("count");
    assert_eq!(rows, 1);
    let patched = second.patch_me(&token, &json!({"locale": "de"})).await;
    assert_eq!(patched.status(), 200);
    assert_eq!(body(patched).await["data"]["version"], 3);
    second.finish().await;
}

#[tokio::test]
async fn replayed_projection_rebuilds_alone() {
    let database = Arc::new(TestDatabase::new());
    let mut first = TestApp::spawn_on(database.clone()).await;
    let (user_id, token) = first.signed_in("ada@example.com").await;
    let patched = first
        .patch_me(&token, &json!({"display_name": "Ada Lovelace"}))
        .await;
    assert_eq!(patched.status(), 200);
    first.stop().await;

    let offline = TestApp::pool_only(database.clone()).await;
    projections::reset_projection(&offline.pool, &projections::ProfilesProjection)
        .await
        .expect("reset the profiles projection");
    let emptied: i64 = sqlx::query_scalar("SELECT count(*) FROM user_profiles")
        .fetch_one(&offline.pool)
        .await
        .expect("count profiles");
    assert_eq!(emptied, 0);

    let second = TestApp::spawn_on(database).await;
    let profile = body(second.get_me(&token).await).await;

    assert_eq!(profile["data"]["user_id"], user_id.to_string());
    assert_eq!(profile["data"]["display_name"], "Ada Lovelace");
    assert_eq!(profile["data"]["version"], 2);
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&second.pool)
        .await
        .expect("count sessions");
    assert_eq!(sessions, 1);
    second.finish().await;
}
