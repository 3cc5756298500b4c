//! Test harness: a service per test on port 0 with its own database, and typed request helpers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use account_ledger::app::Application;
use account_ledger::config::{Config, LogFormat, MailTransportKind, TotpAccountLabel};
use account_ledger::crypto::{TokenKind, issue_token};
use account_ledger::store::{KeyRing, SealingRepository};
use aggregates::personal::Personal;
use aggregates::sealing::DataKey;
use aggregates::services::Clock;
use aggregates::session::{Session, SessionEvent, SessionStarted};
use aggregates::user::User;
use axum::Router;
use base64::Engine;
use chrono::{DateTime, Utc};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{EventEnvelope, EventStore};
use postgres_es::PostgresEventRepository;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A password that passes the strength policy.
pub const PASSWORD: &str = "correct horse battery staple";

/// Server that each test's database lives on; override with `LEDGER_TEST_DATABASE_URL`.
fn server_url() -> String {
    std::env::var("LEDGER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database made for one test and the settings to start services on it.
pub struct TestDatabase {
    pub name: String,
    pub config: Config,
    pub master_key: DataKey,
}

impl TestDatabase {
    pub fn new() -> Self {
        let name = format!("ledger_test_{}", Uuid::new_v4().simple());
        let master_key = DataKey::generate();
        let data_dir: PathBuf = std::env::temp_dir().join(&name);
        let config = Config {
            database_url: format!("{}/{name}", server_url()),
            bind: "127.0.0.1:0".to_owned(),
            data_dir,
            public_base_url: Some("http://127.0.0.1:8080".to_owned()),
            master_key: Some(
                base64::engine::general_purpose::STANDARD.encode(master_key.expose_bytes()),
            ),
            log_format: LogFormat::Text,
            session_lifetime_secs: 3_600,
            session_idle_timeout_secs: 1_800,
            rate_standard: 100,
            rate_sensitive: 10,
            rate_bulk: 10,
            trusted_proxies: Vec::new(),
            db_max_connections: 10,
            hash_concurrency: 2,
            projection_wait_ms: 5_000,
            projection_poll_ms: 200,
            request_timeout_secs: 30,
            totp_issuer: "account-ledger".to_owned(),
            totp_account_label: TotpAccountLabel::Email,
            mail_transport: MailTransportKind::File,
            smtp_url: None,
            mail_from: "account-ledger <no-reply@localhost>".to_owned(),
            verification_ttl_secs: 3_600,
            reset_ttl_secs: 3_600,
        };
        Self {
            name,
            config,
            master_key,
        }
    }

    /// Copies this database's settings with a change, for a second service on the same database.
    pub fn reconfigured(&self, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.config.clone();
        configure(&mut config);
        Self {
            name: self.name.clone(),
            config,
            master_key: self.master_key.clone(),
        }
    }

    /// Drops the database, closing any connection still open to it.
    pub async fn drop_database(&self) {
        let mut admin = PgConnection::connect(&format!("{}/postgres", server_url()))
            .await
            .expect("connect to the maintenance database");
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .expect("drop the test database");
        let _ = std::fs::remove_dir_all(&self.config.data_dir);
    }
}

/// A clock that tests set and move by hand; the service reads it for every expiry and code.
pub struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(start)))
    }

    pub fn set(&self, time: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = time;
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().expect("clock lock") += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

/// A running service and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub router: Router,
    pub database: Arc<TestDatabase>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts a service on a new database.
    pub async fn spawn() -> Self {
        Self::spawn_on(Arc::new(TestDatabase::new())).await
    }

    /// Starts a service on a new database with a changed configuration.
    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> Self {
        let mut database = TestDatabase::new();
        configure(&mut database.config);
        Self::spawn_on(Arc::new(database)).await
    }

    /// Starts a service on an existing test database.
    pub async fn spawn_on(database: Arc<TestDatabase>) -> Self {
        Self::spawn_with_clock(database, Arc::new(aggregates::services::SystemClock)).await
    }

    /// Starts a service on an existing test database whose commands and expiry checks read
    /// `clock`.
    pub async fn spawn_with_clock(database: Arc<TestDatabase>, clock: Arc<dyn Clock>) -> Self {
        let application = Application::build_with_clock(&database.config, clock)
            .await
            .expect("application starts");
        let address = format!("http://{}", application.local_addr().expect("bound"));
        let pool = application.pool();
        let router = application.router();
        let shutdown = application.shutdown_token();
        let server = tokio::spawn(application.run_until_stopped());
        Self {
            address,
            client: reqwest::Client::new(),
            pool,
            router,
            database,
            shutdown,
            server: Some(server),
        }
    }

    /// Opens only a pool on an existing test database, with no service or projector running.
    pub async fn pool_only(database: Arc<TestDatabase>) -> Self {
        let pool = PgPool::connect(&database.config.database_url)
            .await
            .expect("connect to the test database");
        Self {
            address: String::new(),
            client: reqwest::Client::new(),
            pool,
            router: Router::new(),
            database,
            shutdown: CancellationToken::new(),
            server: None,
        }
    }

    /// Stops the service and waits until its projectors and pool are closed.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }

    /// Stops the service and drops its database.
    pub async fn finish(mut self) {
        self.stop().await;
        self.database.drop_database().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.address)
    }

    pub async fn register(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/users"))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Registers `email` with the standard password and returns the new user's id.
    pub async fn register_user(&self, email: &str) -> Uuid {
        let response = self
            .register(&json!({"email": email, "password": PASSWORD}))
            .await;
        let status = response.status();
        let body: Value = response.json().await.expect("json body");
        assert_eq!(status, 201, "registration of {email} failed: {body}");
        body["data"]["user_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("user_id in response")
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("request sent")
    }

    /// Logs in with the standard password and returns the access token.
    pub async fn token_for(&self, email: &str) -> String {
        self.token_for_password(email, PASSWORD).await
    }

    /// Logs in with `password` and returns the access token.
    pub async fn token_for_password(&self, email: &str, password: &str) -> String {
        let response = self.login(email, password).await;
        let status = response.status();
        let body: Value = response.json().await.expect("json body");
        assert_eq!(status, 200, "login of {email} failed: {body}");
        body["data"]["access_token"]
            .as_str()
            .expect("access_token in response")
            .to_owned()
    }

    /// Registers `email` and logs in, returning the user id and a token.
    pub async fn signed_in(&self, email: &str) -> (Uuid, String) {
        let user_id = self.register_user(email).await;
        (user_id, self.token_for(email).await)
    }

    pub async fn get_me(&self, token: &str) -> reqwest::Response {
        self.client
            .get(self.url("/users/me"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn patch_me(&self, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .patch(self.url("/users/me"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Issues an API key with `scopes` through the `account-ledger api-keys create` command and
    /// waits until the running service's projector has made it usable. Returns the id and key.
    pub async fn api_key(&self, scopes: &str) -> (Uuid, String) {
        let config = &self.database.config;
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_account-ledger"))
            .args([
                "api-keys",
                "create",
                "--name",
                "test operator",
                "--scopes",
                scopes,
            ])
            .env_clear()
            .env("DATABASE_URL", &config.database_url)
            .env("LEDGER_DATA_DIR", &config.data_dir)
            .env(
                "LEDGER_MASTER_KEY",
                config.master_key.as_deref().expect("test master key"),
            )
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("run account-ledger api-keys create");
        assert!(
            output.status.success(),
            "api-keys create failed: {output:?}"
        );

        let stdout = String::from_utf8(output.stdout).expect("utf-8 output");
        let field = |name: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in {stdout}"))
        };
        let api_key_id: Uuid = field("api_key_id:").parse().expect("api_key_id is a UUID");
        let key = field("key:");

        self.wait_for_api_key(api_key_id).await;
        (api_key_id, key)
    }

    /// Waits up to five seconds for the projector to add the key to the read model.
    async fn wait_for_api_key(&self, api_key_id: Uuid) {
        for _ in 0..100 {
            let found: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE api_key_id = $1)")
                    .bind(api_key_id)
                    .fetch_one(&self.pool)
                    .await
                    .expect("query api_keys");
            if found {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("API key {api_key_id} never reached the read model");
    }

    /// Number of rows in the events table.
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .expect("count events")
    }

    /// An event store over this service's database, opened with the test's master key.
    pub fn event_store(&self) -> PersistedEventStore<SealingRepository, User> {
        let keys = Arc::new(KeyRing::new(self.pool.clone(), &self.database.master_key));
        let repository =
            SealingRepository::new(PostgresEventRepository::new(self.pool.clone()), keys);
        PersistedEventStore::new_event_store(repository)
    }

    /// Appends a session for `user_id` straight to the event store, as a login that checked
    /// the credentials at `credentials_version` would, waits until the sessions projection has
    /// it, and returns its access token.
    pub async fn append_session(&self, user_id: Uuid, credentials_version: u64) -> String {
        let keys = Arc::new(KeyRing::new(self.pool.clone(), &self.database.master_key));
        let repository =
            SealingRepository::new(PostgresEventRepository::new(self.pool.clone()), keys);
        let store = PersistedEventStore::<_, Session>::new_event_store(repository);
        let session_id = Uuid::now_v7();
        let issued = issue_token(TokenKind::Session);
        let now = Utc::now();
        let started = SessionEvent::SessionStarted(SessionStarted {
            session_id,
            user_id,
            token_hash: issued.hash.clone(),
            started_at: now,
            expires_at: now + chrono::Duration::hours(1),
            ip_address: Personal::Known(None),
            user_agent: Personal::Known(None),
            credentials_version: Some(credentials_version),
        });
        let context = store
            .load_aggregate(&session_id.to_string())
            .await
            .expect("load the new session");
        store
            .commit(vec![started], context, HashMap::new())
            .await
            .expect("append the session");
        for _ in 0..100 {
            let projected: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sessions WHERE session_id = $1)")
                    .bind(session_id)
                    .fetch_one(&self.pool)
                    .await
                    .expect("look up the session");
            if projected {
                return issued.token.expose_secret().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("session {session_id} never reached the read model");
    }

    /// The user's events, opened, in sequence order.
    pub async fn user_events(&self, user_id: Uuid) -> Vec<EventEnvelope<User>> {
        self.event_store()
            .load_events(&user_id.to_string())
            .await
            .expect("load events")
    }
}

/// Reads a response body as JSON.
pub async fn body(response: reqwest::Response) -> Value {
    response.json().await.expect("json body")
}

/// Asserts the error envelope with `code`.
pub fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["success"], false, "not an error envelope: {body}");
    assert_eq!(body["error"]["code"], code, "unexpected error: {body}");
    assert!(body["timestamp"].is_string(), "no timestamp: {body}");
}
