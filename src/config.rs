//! Configuration from flags and environment variables, each with a documented default.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

/// Prefix of the service's own environment variables.
pub const ENV_PREFIX: &str = "LEDGER_";

#[derive(Parser)]
#[command(
    name = "account-ledger",
    version,
    about = "Event-sourced user-account service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Subcommand, Clone, Debug)]
pub enum Command {
    /// Apply migrations, start the projectors and serve HTTP (the default).
    Serve,
    /// Create the database if missing, apply migrations and exit.
    Migrate,
    /// Empty a projection's tables and rewind its checkpoint, so that `serve` rebuilds it.
    Replay {
        /// Projection to rebuild (`profiles`, `sessions`, `api_keys` or `mfa`); all when omitted.
        /// Projection to rebuild (`profiles`, `sessions`, `api_keys`, `verifications` or
        /// `mail_outbox`); all when omitted.
        projection: Option<String>,
    },
    /// Manage API keys from the command line, for example the first key of a fresh install.
    #[command(name = "api-keys", subcommand)]
    ApiKeys(ApiKeysCommand),
}

#[derive(Subcommand, Clone, Debug)]
pub enum ApiKeysCommand {
    /// Issue a key and print it once; only its hash is stored.
    Create {
        /// A name that tells operators what the key is for.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes, such as `users:read,users:admin`, or `*` for all.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Expiry as an RFC 3339 time; the key does not expire when omitted.
        #[arg(long)]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Settings shared by every subcommand. `Debug` is not derived because of the secrets.
#[derive(Args, Clone)]
pub struct Config {
    /// PostgreSQL connection URL; the database is created when it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/account_ledger",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Address and port to listen on.
    #[arg(long, env = "LEDGER_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,

    /// Directory for the first-run master key file and mail files.
    #[arg(long, env = "LEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Base URL that links in mail point at; `http://` and the bind address when unset.
    #[arg(long, env = "LEDGER_PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,

    /// Master key, base64 of 32 bytes. Without it a key file in the data directory is used.
    #[arg(long, env = "LEDGER_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,

    /// Log format: `text` or `json`.
    #[arg(long, env = "LEDGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Absolute lifetime of a session, in seconds.
    #[arg(long, env = "LEDGER_SESSION_LIFETIME_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub session_lifetime_secs: u32,

    /// Idle timeout of a session: it ends after this many seconds without a request.
    #[arg(
        long,
        env = "LEDGER_SESSION_IDLE_TIMEOUT_SECS",
        default_value_t = 1_800,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub session_idle_timeout_secs: u32,

    /// Requests per minute in the standard rate-limit class, per user, API key or client IP.
    #[arg(long, env = "LEDGER_RATE_STANDARD", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_standard: u32,

    /// Requests per minute in the sensitive class (login, password, codes), per account.
    #[arg(long, env = "LEDGER_RATE_SENSITIVE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_sensitive: u32,

    /// Requests per minute in the bulk class, per API key.
    #[arg(long, env = "LEDGER_RATE_BULK", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_bulk: u32,

    /// Comma-separated proxy addresses or CIDR ranges whose `X-Forwarded-For` is believed.
    #[arg(long, env = "LEDGER_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Largest number of database connections in the pool.
    #[arg(long, env = "LEDGER_DB_MAX_CONNECTIONS", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub db_max_connections: u32,

    /// Largest number of password hashes computed at once; 0 means one per CPU.
    #[arg(long, env = "LEDGER_HASH_CONCURRENCY", default_value_t = 0)]
    pub hash_concurrency: usize,

    /// Longest time a command's response waits for the projections, in milliseconds.
    #[arg(long, env = "LEDGER_PROJECTION_WAIT_MS", default_value_t = 5_000)]
    pub projection_wait_ms: u64,

    /// Interval at which projectors poll when no notification arrives, in milliseconds.
    #[arg(long, env = "LEDGER_PROJECTION_POLL_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub projection_poll_ms: u64,

    /// Longest time one request may take before it is answered with 503, in seconds.
    #[arg(long, env = "LEDGER_REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_secs: u64,

    /// Issuer that authenticator apps show for a TOTP entry, also the prefix of its label.
    #[arg(long, env = "LEDGER_TOTP_ISSUER", default_value = "account-ledger")]
    pub totp_issuer: String,
    /// Account name in a TOTP entry's label: `email`, or `user-id` to keep the address out of
    /// authenticator apps and their cloud backups.
    #[arg(long, env = "LEDGER_TOTP_ACCOUNT_LABEL", value_enum, default_value_t = TotpAccountLabel::Email)]
    pub totp_account_label: TotpAccountLabel,
    /// How mail leaves the service: `file` writes `.eml` files under `<data dir>/mail`, `smtp`
    /// sends through `LEDGER_SMTP_URL`.
    #[arg(long, env = "LEDGER_MAIL_TRANSPORT", value_enum, default_value_t = MailTransportKind::File)]
    pub mail_transport: MailTransportKind,

    /// SMTP server URL such as `smtp://user:password@127.0.0.1:2525`, `smtps://host:465` or
    /// `smtp://host:587?tls=required`. Required with the `smtp` transport.
    #[arg(long, env = "LEDGER_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Sender of every mail, as a mailbox.
    #[arg(
        long,
        env = "LEDGER_MAIL_FROM",
        default_value = "account-ledger <no-reply@localhost>"
    )]
    pub mail_from: String,

    /// Lifetime of an email verification code or link, in seconds.
    #[arg(long, env = "LEDGER_VERIFICATION_TTL_SECS", default_value_t = 3_600,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub verification_ttl_secs: u32,

    /// Lifetime of a password reset token, in seconds.
    #[arg(long, env = "LEDGER_RESET_TTL_SECS", default_value_t = 3_600,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub reset_ttl_secs: u32,
}

/// Account name in the label of a TOTP entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum TotpAccountLabel {
    /// The account's email address.
    #[default]
    Email,
    /// The account's user id.
    UserId,
}

/// The ways mail can leave the service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum MailTransportKind {
    /// `.eml` files in the data directory, for a first run without a mail server.
    #[default]
    File,
    Smtp,
}

/// Environment variables with the service's prefix that some setting reads.
const KNOWN_VARIABLES: &[&str] = &[
    "LEDGER_BIND",
    "LEDGER_DATA_DIR",
    "LEDGER_PUBLIC_BASE_URL",
    "LEDGER_MASTER_KEY",
    "LEDGER_LOG_FORMAT",
    "LEDGER_SESSION_LIFETIME_SECS",
    "LEDGER_SESSION_IDLE_TIMEOUT_SECS",
    "LEDGER_RATE_STANDARD",
    "LEDGER_RATE_SENSITIVE",
    "LEDGER_RATE_BULK",
    "LEDGER_TRUSTED_PROXIES",
    "LEDGER_DB_MAX_CONNECTIONS",
    "LEDGER_HASH_CONCURRENCY",
    "LEDGER_PROJECTION_WAIT_MS",
    "LEDGER_PROJECTION_POLL_MS",
    "LEDGER_REQUEST_TIMEOUT_SECS",
    "LEDGER_TOTP_ISSUER",
    "LEDGER_TOTP_ACCOUNT_LABEL",
    "LEDGER_MAIL_TRANSPORT",
    "LEDGER_SMTP_URL",
    "LEDGER_MAIL_FROM",
    "LEDGER_VERIFICATION_TTL_SECS",
    "LEDGER_RESET_TTL_SECS",
];

impl Config {
    /// Returns the base URL of links in mail: the configured one, else the bind address over
    /// HTTP, so that links name the host and port the service runs on. Production sets it to
    /// the front end that serves the link pages.
    pub fn public_base_url(&self) -> String {
        self.public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.bind))
    }

    pub fn master_key(&self) -> Option<SecretString> {
        self.master_key.clone().map(SecretString::from)
    }

    /// Logs a warning for each `LEDGER_*` variable that no setting reads, such as a typo.
    pub fn warn_unknown_variables(&self) {
        for (name, _) in std::env::vars() {
            if name.starts_with(ENV_PREFIX) && !KNOWN_VARIABLES.contains(&name.as_str()) {
                tracing::warn!(variable = %name, "unknown environment variable is ignored");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    #[test]
    fn mail_links_follow_bind_address() {
        let on_another_port =
            Cli::try_parse_from(["account-ledger", "--bind", "127.0.0.1:9090"]).expect("parses");
        let with_base = Cli::try_parse_from([
            "account-ledger",
            "--bind",
            "0.0.0.0:8080",
            "--public-base-url",
            "https://accounts.example.com",
        ])
        .expect("parses");

        assert_eq!(
            on_another_port.config.public_base_url(),
            "http://127.0.0.1:9090"
        );
        assert_eq!(
            with_base.config.public_base_url(),
            "https://accounts.example.com"
        );
    }
}
