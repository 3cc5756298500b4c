//! account-ledger: an event-sourced user-account service.
//!
//! Start reading at [`app::Application`], which wires the event store ([`store`]), the
//! projector (the `projections` crate) and the HTTP layer ([`http`]).

pub mod app;
pub mod config;
pub mod crypto;
pub mod db;
pub mod http;
pub mod store;
pub mod telemetry;

use std::sync::Arc;

use config::{Cli, Command};

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
                anyhow::bail!(
                    "unknown projection {:?}; expected profiles or sessions",
                    projection.unwrap_or_default()
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
    }
}
