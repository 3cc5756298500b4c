//! The scratch database and temporary directory that one benchmark run owns and removes.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::{Connection, PgConnection};
use url::{Host, Url};

/// A PostgreSQL server on the loopback interface, as a URL without a database name.
#[derive(Clone, Debug)]
pub struct PostgresServer {
    url: Url,
}

impl PostgresServer {
    /// Parses `raw` and rejects any host that is not a loopback address, because the benchmark
    /// may only load servers on this machine.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let url = Url::parse(raw).context("the PostgreSQL URL is not a valid URL")?;
        let mut shown = url.clone();
        let _ = shown.set_password(None);
        anyhow::ensure!(
            matches!(url.scheme(), "postgres" | "postgresql"),
            "the PostgreSQL URL {shown} must start with postgres://"
        );
        let loopback = match url.host() {
            Some(Host::Ipv4(address)) => IpAddr::V4(address).is_loopback(),
            Some(Host::Ipv6(address)) => IpAddr::V6(address).is_loopback(),
            // `postgres://` is not a special scheme to the url crate, so an IPv4 host arrives
            // as a domain name.
            Some(Host::Domain(name)) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .parse::<IpAddr>()
                        .is_ok_and(|address| address.is_loopback())
            }
            None => false,
        };
        anyhow::ensure!(
            loopback,
            "the PostgreSQL host in {shown} is not a loopback address; use 127.0.0.1"
        );
        anyhow::ensure!(
            matches!(url.path(), "" | "/"),
            "the PostgreSQL URL {shown} names a database; pass the server URL only"
        );
        Ok(Self { url })
    }

    /// URL of `database` on this server.
    pub fn database_url(&self, database: &str) -> String {
        let mut url = self.url.clone();
        url.set_path(database);
        url.to_string()
    }

    /// URL of `database` with any password removed, for messages.
    pub fn redacted_url(&self, database: &str) -> String {
        let mut url = self.url.clone();
        url.set_path(database);
        let _ = url.set_password(None);
        url.to_string()
    }
}

/// A database and a directory created for one run, removed by [`Scratch::remove`].
pub struct Scratch {
    server: PostgresServer,
    database: String,
    directory: PathBuf,
}

impl Scratch {
    /// Creates `ledger_bench_<unix time>_<random>` on `server` and a directory of the same name
    /// under the system's temporary directory.
    pub async fn create(server: PostgresServer) -> anyhow::Result<Self> {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_secs();
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let database = format!("ledger_bench_{seconds}_{suffix}");

        let directory = std::env::temp_dir().join(&database);
        std::fs::create_dir_all(&directory).with_context(|| {
            format!(
                "failed to create the temporary directory {}",
                directory.display()
            )
        })?;

        let mut admin = connect_maintenance(&server).await?;
        let created = sqlx::query(&format!("CREATE DATABASE \"{database}\""))
            .execute(&mut admin)
            .await;
        if let Err(error) = created {
            let _ = std::fs::remove_dir_all(&directory);
            return Err(error).with_context(|| format!("failed to create database {database}"));
        }
        eprintln!("created database {database}");

        Ok(Self {
            server,
            database,
            directory,
        })
    }

    pub fn database_url(&self) -> String {
        self.server.database_url(&self.database)
    }

    /// The temporary directory, removed with the database.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The service's data directory, inside the temporary directory.
    pub fn data_dir(&self) -> PathBuf {
        self.directory.join("data")
    }

    /// File that the service's stdout and stderr go to.
    pub fn service_log(&self) -> PathBuf {
        self.directory.join("service.log")
    }

    /// Drops the database, ending any connection still open to it, and deletes the directory.
    pub async fn remove(self) -> anyhow::Result<()> {
        let dropped = async {
            let mut admin = connect_maintenance(&self.server).await?;
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.database
            ))
            .execute(&mut admin)
            .await
            .with_context(|| format!("failed to drop database {}", self.database))?;
            anyhow::Ok(())
        }
        .await;
        if dropped.is_ok() {
            eprintln!("dropped database {}", self.database);
        }

        let deleted = std::fs::remove_dir_all(&self.directory).with_context(|| {
            format!(
                "failed to delete the temporary directory {}",
                self.directory.display()
            )
        });
        dropped.and(deleted)
    }
}

async fn connect_maintenance(server: &PostgresServer) -> anyhow::Result<PgConnection> {
    PgConnection::connect(&server.database_url("postgres"))
        .await
        .with_context(|| {
            format!(
                "failed to connect to the maintenance database at {}",
                server.redacted_url("postgres")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_servers_are_accepted() {
        for url in [
            "postgres://postgres@127.0.0.1:5432",
            "postgresql://postgres@localhost",
            "postgres://postgres@[::1]:5432/",
        ] {
            assert!(PostgresServer::parse(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn other_hosts_are_rejected() {
        for url in [
            "postgres://postgres@192.0.2.10:5432",
            "postgres://postgres@db.example.com",
            "postgres://postgres@127.0.0.1:5432/ledger",
        ] {
            assert!(PostgresServer::parse(url).is_err(), "{url}");
        }
    }
}
