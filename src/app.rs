//! The application: wiring of the store, projector and router, bound to a listener before it
//! serves so that callers (and tests on port 0) learn the real address first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aggregates::services::{Clock, SessionServices, SystemClock, UserServices};
use anyhow::Context;
use axum::Router;
use postgres_es::PostgresEventRepository;
use projections::{
    ApiKeysProjection, MailOutboxProjection, MfaProjection, ProfilesProjection, Projection,
    Projector, ProjectorHandle, SessionsProjection, VerificationsProjection,
};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::crypto::{Argon2Hasher, CodeHasher, Indexer, load_master_key};
use crate::db;
use crate::http::rate_limit::{PRUNE_INTERVAL, RateLimits};
use crate::http::{AppState, Settings, router};
use crate::mail::MailSender;
use crate::mfa::MfaSettings;
use crate::store::{CommandBus, KeyRing, SealingRepository};

/// Maximum time the start waits for the projections to apply the events already stored.
const STARTUP_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Every projection the service runs.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(ProfilesProjection),
        Arc::new(SessionsProjection),
        Arc::new(ApiKeysProjection),
        Arc::new(MfaProjection),
        Arc::new(VerificationsProjection),
        Arc::new(MailOutboxProjection),
    ]
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    pool: PgPool,
    projector: ProjectorHandle,
    shutdown: CancellationToken,
    projector_shutdown: CancellationToken,
    mail_task: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Connects, migrates, starts the projectors and binds the listener.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Like [`Application::build`], with the clock that commands and expiry checks read.
    pub async fn build_with_clock(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        config.warn_unknown_variables();
        let master = load_master_key(config.master_key().as_ref(), &config.data_dir)?;

        let pool = db::connect(&config.database_url, config.db_max_connections).await?;
        db::migrate(&pool).await?;

        let keys = Arc::new(KeyRing::new(pool.clone(), &master));
        let indexer = Arc::new(Indexer::new(&master));
        let mfa = Arc::new(MfaSettings::new(
            &master,
            config.totp_issuer.clone(),
            config.totp_account_label,
        ));
        let hash_concurrency = match config.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(2, |count| count.get()),
            count => count,
        };
        let hasher = Arc::new(Argon2Hasher::new(hash_concurrency)?);
        let mail_sender = MailSender::from_config(config, pool.clone())?;

        let projector_shutdown = CancellationToken::new();
        let projector = Projector::new(
            pool.clone(),
            keys.clone(),
            projections(),
            Duration::from_millis(config.projection_poll_ms),
        )
        .spawn(projector_shutdown.clone())
        .await
        .context("failed to start the projector")?;
        let mail_task = tokio::spawn(mail_sender.run(
            projector.progress(MailOutboxProjection.name()),
            projector_shutdown.clone(),
        ));

        // Reads are served from the projections, so they catch up before the first request.
        let caught_up = projector
            .catch_up(&pool, STARTUP_CATCH_UP_TIMEOUT)
            .await
            .context("failed to read the head of the event stream")?;
        if !caught_up {
            tracing::warn!(
                timeout_secs = STARTUP_CATCH_UP_TIMEOUT.as_secs(),
                "projections are still catching up; reads may lag until they finish"
            );
        }

        let wait = Duration::from_millis(config.projection_wait_ms);
        let repository =
            || SealingRepository::new(PostgresEventRepository::new(pool.clone()), keys.clone());
        let users = CommandBus::new(
            repository(),
            UserServices {
                hasher: hasher.clone(),
                clock: clock.clone(),
                index: indexer.clone(),
            },
            pool.clone(),
            Some(projector.clone()),
            wait,
        );
        let sessions = CommandBus::new(
            repository(),
            SessionServices {
                clock: clock.clone(),
            },
            pool.clone(),
            Some(projector.clone()),
            wait,
        );
        let api_keys = CommandBus::new(
            repository(),
            SessionServices {
                clock: clock.clone(),
            },
            pool.clone(),
            Some(projector.clone()),
            wait,
        );

        let limits = Arc::new(RateLimits::new(
            config.rate_standard,
            config.rate_sensitive,
            config.rate_bulk,
            config.trusted_proxies.clone(),
        ));
        let shutdown = CancellationToken::new();
        tokio::spawn(prune_rate_limits(limits.clone(), shutdown.clone()));

        let state = AppState {
            pool: pool.clone(),
            users: Arc::new(users),
            sessions: Arc::new(sessions),
            api_keys: Arc::new(api_keys),
            hasher,
            indexer,
            limits,
            clock,
            settings: Arc::new(Settings {
                session_lifetime: chrono::Duration::seconds(i64::from(
                    config.session_lifetime_secs,
                )),
                session_idle_timeout: chrono::Duration::seconds(i64::from(
                    config.session_idle_timeout_secs,
                )),
                request_timeout: Duration::from_secs(config.request_timeout_secs),
                verification_lifetime: chrono::Duration::seconds(i64::from(
                    config.verification_ttl_secs,
                )),
                reset_lifetime: chrono::Duration::seconds(i64::from(config.reset_ttl_secs)),
            }),
            mfa,
            codes: Arc::new(CodeHasher::new(&master)),
        };

        let listener = TcpListener::bind(&config.bind)
            .await
            .with_context(|| format!("failed to listen on {}", config.bind))?;

        Ok(Self {
            listener,
            router: router(state),
            pool,
            projector,
            shutdown,
            projector_shutdown,
            mail_task,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The router, for tests that call it without a socket.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    pub fn pool(&self) -> PgPool {
        self.pool.clone()
    }

    pub fn projector(&self) -> ProjectorHandle {
        self.projector.clone()
    }

    /// Cancelling this token stops accepting, finishes open requests, then stops the service.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until shutdown is requested, then lets the projectors commit and closes the pool.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let address = self.local_addr()?;
        tracing::info!(%address, "listening");

        let shutdown = self.shutdown.clone();
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("HTTP server failed")?;

        self.projector_shutdown.cancel();
        self.projector.join().await;
        if let Err(error) = self.mail_task.await {
            tracing::error!(%error, "mail sender task failed");
        }
        self.pool.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Drops refilled rate-limit buckets every minute until shutdown.
async fn prune_rate_limits(limits: Arc<RateLimits>, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => limits.prune(),
        }
    }
}

/// Resolves when the process receives Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "failed to listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
}
