//! account-ledger: an event-sourced user-account service.
//!
//! Start reading at [`app::Application`], which wires the event store ([`store`]), the
//! projector (the `projections` crate) and the HTTP layer ([`http`]).

pub mod app;
pub mod config;
pub mod crypto;
pub mod db;
pub mod http;
pub mod mail;
pub mod mfa;
pub mod store;
pub mod telemetry;

use std::sync::Arc;

use config::{ApiKeysCommand, Cli, Command};

/// Runs the subcommand the command line names.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let application = app::Application::build(&config).await?;
            let shutdown = application.shutdown_token();
            tokio::spawn(async move {
                app::shutdown_signal().await;
                shutdown.cancel();
            });
            application.run_until_stopped().await
        }
        Command::Migrate => {
            let pool = db::connect(&config.database_url, 2).await?;
            db::migrate(&pool).await?;
            pool.close().await;
            Ok(())
        }
        Command::Replay { projection } => {
            let pool = db::connect(&config.database_url, 2).await?;
            db::migrate(&pool).await?;
            let selected: Vec<Arc<dyn projections::Projection>> = app::projections()
                .into_iter()
                .filter(|candidate| {
                    projection
                        .as_deref()
                        .is_none_or(|name| name == candidate.name())
                })
                .collect();
            if selected.is_empty() {
                let names: Vec<&str> = app::projections()
                    .iter()
                    .map(|candidate| candidate.name())
                    .collect();
                anyhow::bail!(
                    "unknown projection {:?}; expected one of {}",
                    projection.unwrap_or_default(),
                    names.join(", ")
                );
            }
            for projection in selected {
                projections::reset_projection(&pool, projection.as_ref()).await?;
                tracing::info!(
                    projection = projection.name(),
                    "projection reset; serve rebuilds it"
                );
            }
            pool.close().await;
            Ok(())
        }
        Command::ApiKeys(ApiKeysCommand::Create {
            name,
            scopes,
            expires_at,
        }) => create_api_key(&config, name, scopes, expires_at).await,
    }
}

/// Issues an API key from the command line and writes it to standard output, once.
async fn create_api_key(
    config: &config::Config,
    name: String,
    scopes: Vec<String>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<()> {
    use std::io::Write;

    use aggregates::services::{SessionServices, SystemClock};
    use postgres_es::PostgresEventRepository;
    use store::{CommandBus, CommandMetadata, KeyRing, SealingRepository};

    let master = crypto::load_master_key(config.master_key().as_ref(), &config.data_dir)?;
    let pool = db::connect(&config.database_url, 2).await?;
    db::migrate(&pool).await?;

    let keys = Arc::new(KeyRing::new(pool.clone(), &master));
    let repository = SealingRepository::new(PostgresEventRepository::new(pool.clone()), keys);
    let bus = CommandBus::new(
        repository,
        SessionServices {
            clock: Arc::new(SystemClock),
        },
        pool.clone(),
        None,
        std::time::Duration::ZERO,
    );
    let metadata = CommandMetadata {
        actor: "cli".to_owned(),
        request_id: uuid::Uuid::now_v7().to_string(),
        client_ip: None,
        user_agent: None,
        subject: None,
    };

    let issued = http::api_keys::issue_api_key(&bus, name, scopes, expires_at, &metadata)
        .await
        .map_err(|error| anyhow::anyhow!("failed to issue the API key: {error}"))?;
    pool.close().await;
    tracing::info!(api_key_id = %issued.api_key_id, "API key issued");

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "api_key_id: {}", issued.api_key_id)?;
    writeln!(stdout, "scopes: {}", issued.scopes.join(","))?;
    writeln!(stdout, "key: {}", issued.key)?;
    writeln!(stdout, "The key is shown only this once; store it now.")?;
    Ok(())
}
