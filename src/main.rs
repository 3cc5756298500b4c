use std::process::ExitCode;

use account_ledger::config::Cli;
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    account_ledger::telemetry::init(cli.config.log_format);

    match account_ledger::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "account-ledger failed");
            ExitCode::FAILURE
        }
    }
}
