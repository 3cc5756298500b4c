use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aggregates::personal::Personal;
use aggregates::user::{ProfileChanges, ProfileUpdated, UserEvent};
use async_trait::async_trait;
use chrono::Utc;
use cqrs_es::EventStore;
use projections::{
    EventOpener, Projection, Projector, ProjectorHandle, StoredEvent, StreamPosition,
};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

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

/// Records every event it applies in `test_applied`, and fails while `failing` is set.
struct RecordingProjection {
    name: &'static str,
    failing: Arc<AtomicBool>,
}

#[async_trait]
impl Projection for RecordingProjection {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.failing.load(Ordering::SeqCst),
            "{} is set to fail",
            self.name
        );
        // The primary key turns a second application of one event into an error.
        sqlx::query("INSERT INTO test_applied (projection, global_position) VALUES ($1, $2)")
            .bind(self.name)
            .bind(event.position.global_position)
            .execute(connection)
            .await?;
        Ok(())
    }

    async fn reset(&self, connection: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM test_applied WHERE projection = $1")
            .bind(self.name)
            .execute(connection)
            .await?;
        Ok(())
    }
}

/// Leaves events as stored: the recording projections read no sealed field.
struct PlainOpener;

#[async_trait]
impl EventOpener for PlainOpener {
    async fn open(&self, _event: &mut StoredEvent) -> anyhow::Result<()> {
        Ok(())
    }
}

async fn applied_count(pool: &PgPool, projection: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM test_applied WHERE projection = $1")
        .bind(projection)
        .fetch_one(pool)
        .await
        .expect("count applied events")
}

async fn is_incomplete(pool: &PgPool, projection: &str) -> bool {
    sqlx::query_scalar("SELECT incomplete FROM projection_checkpoints WHERE projection = $1")
        .bind(projection)
        .fetch_one(pool)
        .await
        .expect("read the checkpoint")
}

async fn head_position(pool: &PgPool) -> StreamPosition {
    let (transaction_id, global_position): (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events
          ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .expect("read the head of the stream");
    StreamPosition {
        transaction_id,
        global_position,
    }
}

async fn wait_until_reached(projector: &ProjectorHandle, projection: &str, head: StreamPosition) {
    let mut progress = projector.progress(projection).expect("projection is known");
    tokio::time::timeout(
        Duration::from_secs(10),
        progress.wait_for(|position| *position >= head),
    )
    .await
    .expect("projection reaches the head in time")
    .expect("projector is running");
}

#[tokio::test]
async fn failing_projection_does_not_hold_others() {
    let database = Arc::new(TestDatabase::new());
    let mut first = TestApp::spawn_on(database.clone()).await;
    first.register_user("ada@example.com").await;
    first.stop().await;
    let pool = TestApp::pool_only(database.clone()).await.pool;
    sqlx::query(
        "CREATE TABLE test_applied (projection text, global_position bigint,
                                    PRIMARY KEY (projection, global_position))",
    )
    .execute(&pool)
    .await
    .expect("create the recording table");
    let failing = Arc::new(AtomicBool::new(true));
    let projections: Vec<Arc<dyn Projection>> = vec![
        Arc::new(RecordingProjection {
            name: "test_healthy",
            failing: Arc::new(AtomicBool::new(false)),
        }),
        Arc::new(RecordingProjection {
            name: "test_failing",
            failing: failing.clone(),
        }),
    ];
    let shutdown = CancellationToken::new();

    let projector = Projector::new(
        pool.clone(),
        Arc::new(PlainOpener),
        projections,
        Duration::from_millis(50),
    )
    .spawn(shutdown.clone())
    .await
    .expect("start the projector");
    wait_until_reached(&projector, "test_healthy", head_position(&pool).await).await;

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("count events");
    assert_eq!(applied_count(&pool, "test_healthy").await, events);
    assert_eq!(applied_count(&pool, "test_failing").await, 0);

    // New events reach the healthy projection while the other one still fails.
    let second = TestApp::spawn_on(database.clone()).await;
    second.register_user("grace@example.com").await;
    let head = head_position(&pool).await;
    wait_until_reached(&projector, "test_healthy", head).await;
    assert!(projector.positions()["test_failing"] < head);
    assert!(is_incomplete(&pool, "test_failing").await);
    assert!(!is_incomplete(&pool, "test_healthy").await);
    // A command waits only for the projections that keep up.
    let started = std::time::Instant::now();
    assert!(projector.wait_for(head, Duration::from_secs(5)).await);
    assert!(started.elapsed() < Duration::from_secs(1));

    failing.store(false, Ordering::SeqCst);
    wait_until_reached(&projector, "test_failing", head).await;
    assert!(!is_incomplete(&pool, "test_failing").await);

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("count events");
    assert_eq!(applied_count(&pool, "test_healthy").await, events);
    assert_eq!(applied_count(&pool, "test_failing").await, events);
    shutdown.cancel();
    projector.join().await;
    second.finish().await;
}

#[tokio::test]
async fn restarted_projector_applies_once() {
    let database = Arc::new(TestDatabase::new());
    let mut first = TestApp::spawn_on(database.clone()).await;
    first.signed_in("ada@example.com").await;
    first.stop().await;
    let pool = TestApp::pool_only(database.clone()).await.pool;
    sqlx::query(
        "CREATE TABLE test_applied (projection text, global_position bigint,
                                    PRIMARY KEY (projection, global_position))",
    )
    .execute(&pool)
    .await
    .expect("create the recording table");
    let start = || {
        let projection: Arc<dyn Projection> = Arc::new(RecordingProjection {
            name: "test_once",
            failing: Arc::new(AtomicBool::new(false)),
        });
        let shutdown = CancellationToken::new();
        let projector = Projector::new(
            pool.clone(),
            Arc::new(PlainOpener),
            vec![projection],
            Duration::from_millis(50),
        );
        (projector, shutdown)
    };

    let (projector, shutdown) = start();
    let running = projector.spawn(shutdown.clone()).await.expect("start");
    wait_until_reached(&running, "test_once", head_position(&pool).await).await;
    shutdown.cancel();
    running.join().await;

    // Events appended while the recording projector is stopped.
    let second = TestApp::spawn_on(database.clone()).await;
    second.signed_in("grace@example.com").await;
    let head = head_position(&pool).await;

    // A second application of any event would break the table's primary key, so the
    // projection would fail and never reach the head.
    let (projector, shutdown) = start();
    let restarted = projector.spawn(shutdown.clone()).await.expect("restart");
    wait_until_reached(&restarted, "test_once", head).await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("count events");
    assert_eq!(applied_count(&pool, "test_once").await, events);
    shutdown.cancel();
    restarted.join().await;
    second.finish().await;
}

#[tokio::test]
async fn running_service_rebuilds_replayed_projection() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com").await;
    let patched = app.patch_me(&token, &json!({"locale": "de"})).await;
    assert_eq!(patched.status(), 200);

    projections::reset_projection(&app.pool, &projections::ProfilesProjection)
        .await
        .expect("reset the profiles projection");
    let started = std::time::Instant::now();
    let mut profile = app.get_me(&token).await;
    while profile.status() != 200 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        profile = app.get_me(&token).await;
    }

    assert_eq!(profile.status(), 200);
    let profile = body(profile).await;
    assert_eq!(profile["data"]["locale"], "de");
    assert_eq!(profile["data"]["version"], 2);
    app.finish().await;
}

/// Empties `models` as `replay` does and marks them incomplete, on a connection that keeps
/// holding their advisory locks, so that the running projector cannot rebuild them until the
/// connection is closed. The locks are taken in name order, as the projector takes them.
async fn start_rebuild(connection: &mut PgConnection, models: &[&dyn Projection]) {
    let mut models = models.to_vec();
    models.sort_by_key(|projection| projection.name());
    for projection in &models {
        sqlx::query("SELECT pg_advisory_lock(hashtextextended('projector:' || $1, 0))")
            .bind(projection.name())
            .execute(&mut *connection)
            .await
            .expect("lock the projection");
    }
    let mut transaction = connection.begin().await.expect("begin");
    for projection in &models {
        projection
            .reset(&mut transaction)
            .await
            .expect("empty the read model");
        sqlx::query(
            "UPDATE projection_checkpoints
                SET transaction_id = '0', global_position = 0, incomplete = true
              WHERE projection = $1",
        )
        .bind(projection.name())
        .execute(&mut *transaction)
        .await
        .expect("rewind the checkpoint");
    }
    transaction.commit().await.expect("commit the reset");
}

async fn wait_until_complete(pool: &PgPool) {
    for _ in 0..200 {
        let incomplete: bool = sqlx::query_scalar(
            "SELECT COALESCE(bool_or(incomplete), false) FROM projection_checkpoints",
        )
        .fetch_one(pool)
        .await
        .expect("read the checkpoints");
        if !incomplete {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the read models were never rebuilt");
}

#[tokio::test]
async fn credential_checks_503_during_rebuild() {
    let app = TestApp::spawn().await;
    let (user_id, live) = app.signed_in("ada@example.com").await;
    let logged_out = app.token_for("ada@example.com").await;
    let logout = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&logged_out)
        .send()
        .await
        .expect("sent");
    assert_eq!(logout.status(), 200);
    let (_, manager) = app.api_key("sessions:manage").await;

    let mut rebuild = sqlx::PgConnection::connect(&app.database.config.database_url)
        .await
        .expect("connect");
    start_rebuild(
        &mut rebuild,
        &[
            &projections::SessionsProjection,
            &projections::ProfilesProjection,
        ],
    )
    .await;

    let me = app.get_me(&logged_out).await;
    assert_eq!(me.status(), 503);
    assert!(me.headers().contains_key("retry-after"));
    assert_eq!(body(me).await["error"]["code"], "SYS_002");
    for email in ["ada@example.com", "nobody@example.com"] {
        let login = app.login(email, crate::helpers::PASSWORD).await;
        assert_eq!(login.status(), 503, "login of {email}");
    }
    let listing = app
        .client
        .get(app.url(&format!("/users/{user_id}/sessions")))
        .header("x-api-key", &manager)
        .send()
        .await
        .expect("sent");
    assert_eq!(listing.status(), 503, "a partial session list was served");

    rebuild.close().await.expect("release the locks");
    wait_until_complete(&app.pool).await;
    assert_eq!(app.get_me(&live).await.status(), 200);
    assert_eq!(app.get_me(&logged_out).await.status(), 401);
    app.finish().await;
}

#[tokio::test]
async fn api_keys_503_during_rebuild() {
    let app = TestApp::spawn().await;
    let user_id = app.register_user("ada@example.com").await;
    let (_, key) = app.api_key("users:read").await;
    let mut rebuild = sqlx::PgConnection::connect(&app.database.config.database_url)
        .await
        .expect("connect");
    start_rebuild(&mut rebuild, &[&projections::ApiKeysProjection]).await;

    let during = app
        .client
        .get(app.url(&format!("/users/{user_id}")))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("sent");
    assert_eq!(during.status(), 503);

    rebuild.close().await.expect("release the lock");
    wait_until_complete(&app.pool).await;
    let after = app
        .client
        .get(app.url(&format!("/users/{user_id}")))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("sent");
    assert_eq!(after.status(), 200);
    app.finish().await;
}

/// Records, for each event it applies, whether its own checkpoint was marked incomplete.
struct MarkWatchingProjection {
    name: &'static str,
}

#[async_trait]
impl Projection for MarkWatchingProjection {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO test_marks (projection, global_position, incomplete)
             SELECT $1, $2, incomplete FROM projection_checkpoints WHERE projection = $1",
        )
        .bind(self.name)
        .bind(event.position.global_position)
        .execute(connection)
        .await?;
        Ok(())
    }

    async fn reset(&self, connection: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM test_marks WHERE projection = $1")
            .bind(self.name)
            .execute(connection)
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn joint_rebuild_stays_incomplete_to_end() {
    let database = Arc::new(TestDatabase::new());
    let mut first = TestApp::spawn_on(database.clone()).await;
    first.stop().await;
    let pool = TestApp::pool_only(database.clone()).await.pool;
    sqlx::query(
        "CREATE TABLE test_marks (projection text, global_position bigint, incomplete boolean,
                                  PRIMARY KEY (projection, global_position))",
    )
    .execute(&pool)
    .await
    .expect("create the recording table");
    // More events than one batch holds, so that the rebuild takes several batches.
    sqlx::query(
        "INSERT INTO events
             (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'test', 'stream', n, 'Tick', '1', '{}', '{}' FROM generate_series(1, 1200) AS n",
    )
    .execute(&pool)
    .await
    .expect("append events");
    let names = ["test_watch_a", "test_watch_b"];
    let projections: Vec<Arc<dyn Projection>> = names
        .iter()
        .map(|name| Arc::new(MarkWatchingProjection { name }) as Arc<dyn Projection>)
        .collect();
    for projection in &projections {
        projections::reset_projection(&pool, projection.as_ref())
            .await
            .expect("mark the projection for a rebuild");
    }

    let shutdown = CancellationToken::new();
    let projector = Projector::new(
        pool.clone(),
        Arc::new(PlainOpener),
        projections,
        Duration::from_millis(50),
    )
    .spawn(shutdown.clone())
    .await
    .expect("start the projector");
    let head = head_position(&pool).await;
    for name in names {
        wait_until_reached(&projector, name, head).await;
    }

    let complete_early: i64 =
        sqlx::query_scalar("SELECT count(*) FROM test_marks WHERE NOT incomplete")
            .fetch_one(&pool)
            .await
            .expect("count the events applied to a model marked complete");
    assert_eq!(
        complete_early, 0,
        "a model was marked complete before its rebuild ended"
    );
    for name in names {
        assert!(
            !is_incomplete(&pool, name).await,
            "{name} is still marked incomplete"
        );
    }
    shutdown.cancel();
    projector.join().await;
    database.drop_database().await;
}

#[tokio::test]
async fn writes_respond_during_profiles_rebuild() {
    let app = TestApp::spawn().await;
    let user_id = app.register_user("ada@example.com").await;
    let (_, key) = app.api_key("users:read,users:write,users:admin").await;
    let mut rebuild = sqlx::PgConnection::connect(&app.database.config.database_url)
        .await
        .expect("connect");
    start_rebuild(&mut rebuild, &[&projections::ProfilesProjection]).await;

    let registered = app
        .register(&json!({"email": "eve@example.com", "password": crate::helpers::PASSWORD}))
        .await;
    assert_eq!(registered.status(), 201);
    let registered = body(registered).await;
    assert_eq!(registered["data"]["email"], "eve@example.com");
    let patched = app
        .client
        .patch(app.url(&format!("/users/{user_id}")))
        .header("x-api-key", &key)
        .json(&json!({"locale": "de"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(patched.status(), 200);
    let patched = body(patched).await;
    assert_eq!(patched["data"]["locale"], "de");
    assert_eq!(patched["data"]["email"], "ada@example.com");
    let suspended = app
        .client
        .post(app.url(&format!("/users/{user_id}/suspend")))
        .header("x-api-key", &key)
        .json(&json!({}))
        .send()
        .await
        .expect("sent");
    assert_eq!(suspended.status(), 200);
    assert_eq!(body(suspended).await["data"]["status"], "suspended");

    rebuild.close().await.expect("release the lock");
    wait_until_complete(&app.pool).await;
    let read = app
        .client
        .get(app.url(&format!("/users/{user_id}")))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("sent");
    let read = body(read).await;
    assert_eq!(read["data"]["locale"], "de");
    assert_eq!(read["data"]["status"], "suspended");
    assert_eq!(
        read["data"]["version"],
        patched["data"]["version"].as_i64().expect("version") + 1
    );
    let eve = registered["data"]["user_id"].as_str().expect("user id");
    let eve_read = app
        .client
        .get(app.url(&format!("/users/{eve}")))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("sent");
    // The registration's response adds the id of its verification to the profile.
    let mut answered = registered["data"].clone();
    answered
        .as_object_mut()
        .expect("profile object")
        .remove("change_request_id");
    assert_eq!(
        body(eve_read).await["data"],
        answered,
        "the registration answered from the aggregate differs from the read model"
    );
    app.finish().await;
}

#[tokio::test]
async fn new_database_starts_complete() {
    let app = TestApp::spawn().await;

    let incomplete: bool = sqlx::query_scalar(
        "SELECT COALESCE(bool_or(incomplete), false) FROM projection_checkpoints",
    )
    .fetch_one(&app.pool)
    .await
    .expect("read the checkpoints");
    let login = app.login("ada@example.com", crate::helpers::PASSWORD).await;

    assert!(
        !incomplete,
        "an empty history left a read model marked incomplete"
    );
    assert_eq!(login.status(), 401);
    app.finish().await;
}
