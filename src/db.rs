//! The database connection: create the database when missing, pool connections, migrate.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

/// Every migration under `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Longest wait for a free pooled connection before a request fails with 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLSTATE of `CREATE DATABASE` when another process created it first.
const DUPLICATE_DATABASE: &str = "42P04";

/// Creates the database named in `url` if it does not exist, then opens a pool to it.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid URL")?;
    let database = options.get_database().unwrap_or("postgres").to_owned();

    let exists = Postgres::database_exists(url)
        .await
        .with_context(|| format!("failed to reach PostgreSQL to look up database {database}"))?;
    if !exists {
        match Postgres::create_database(url).await {
            Ok(()) => tracing::info!(database, "created database"),
            Err(error) if is_duplicate_database(&error) => {}
            Err(error) => {
                return Err(error).with_context(|| format!("failed to create database {database}"));
            }
        }
    }

    // No ping before each checkout: it doubled the round trips of every query. A connection
    // that died fails its next query, which answers 503 and drops it from the pool.
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .with_context(|| format!("failed to connect to database {database}"))
}

fn is_duplicate_database(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|code| code == DUPLICATE_DATABASE)
}

/// Applies the embedded migrations that the database does not have yet.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("failed to apply database migrations")?;
    tracing::info!(
        migrations = MIGRATOR.iter().count(),
        "database migrations applied"
    );
    Ok(())
}
