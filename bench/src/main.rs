//! Load benchmark for account-ledger. It starts the release service on a fresh database,
//! measures the argon2id verify rate and pgbench on a copy of the events table as limits,
//! drives the HTTP API, and prints one markdown table that relates the two.

mod argon;
mod load;
mod pgbench;
mod report;
mod scratch;
mod service;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use report::Report;
use scratch::{PostgresServer, Scratch};
use service::Service;

#[derive(Parser, Debug)]
#[command(
    name = "ledger-bench",
    about = "Measures account-ledger's HTTP throughput and latency against argon2id and \
             pgbench limits, on a service and database that it starts and removes itself"
)]
pub struct Cli {
    /// Service binary to start. Inherited LEDGER_* variables reach it, except those that
    /// the benchmark sets itself.
    #[arg(long, default_value = "target/release/account-ledger")]
    service_binary: PathBuf,

    /// PostgreSQL server URL without a database name. The host must be a loopback address,
    /// and the role must be allowed to create databases.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres_url: String,

    /// pgbench binary.
    #[arg(long, default_value = "/usr/bin/pgbench")]
    pgbench: PathBuf,

    /// Number of concurrent HTTP workers in each phase.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,

    /// Duration of each HTTP phase, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    phase_secs: u64,

    /// Maximum number of requests sent in one HTTP phase.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_requests: u64,

    /// Number of pgbench clients.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pgbench_clients: u32,

    /// Duration of each pgbench script, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pgbench_secs: u64,

    /// Number of threads that verify argon2id hashes at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    argon2_threads: u32,

    /// Duration of the argon2id measurement, in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    argon2_secs: u64,

    /// File to write the markdown table to, in addition to stdout.
    #[arg(long)]
    output: Option<PathBuf>,

    /// File to copy the service's JSON log to before the temporary directory is removed.
    #[arg(long)]
    service_log: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(report) => match publish(&cli, &report) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("ledger-bench: {error:#}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("ledger-bench failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Creates the scratch database and directory, measures, and removes both whatever happened.
async fn run(cli: &Cli) -> anyhow::Result<Report> {
    let server = PostgresServer::parse(&cli.postgres_url)?;
    for (what, path) in [
        ("service binary", &cli.service_binary),
        ("pgbench", &cli.pgbench),
    ] {
        anyhow::ensure!(
            path.is_file(),
            "the {what} {} does not exist; build the service with \
             `cargo build --release --workspace` or pass its path",
            path.display()
        );
    }

    let scratch = Scratch::create(server).await?;
    let result = run_with_service(cli, &scratch).await;
    if let Some(copy) = &cli.service_log {
        if let Err(error) = std::fs::copy(scratch.service_log(), copy) {
            eprintln!(
                "ledger-bench: failed to copy the service log to {}: {error}",
                copy.display()
            );
        }
    }
    let removed = scratch.remove().await;
    let report = result?;
    removed?;
    Ok(report)
}

/// Starts the service, runs every measurement, and stops the service, also on error or Ctrl-C.
async fn run_with_service(cli: &Cli, scratch: &Scratch) -> anyhow::Result<Report> {
    let service = Service::start(&cli.service_binary, scratch).await?;
    let measured = tokio::select! {
        measured = measure(cli, scratch, &service) => measured,
        interrupted = tokio::signal::ctrl_c() => match interrupted {
            Ok(()) => Err(anyhow::anyhow!("interrupted by Ctrl-C")),
            Err(error) => Err(anyhow::anyhow!("failed to listen for Ctrl-C: {error}")),
        },
    };
    let log = service.stop().await;
    let mut report = measured?;
    report.service_log = Some(log?);
    Ok(report)
}

async fn measure(cli: &Cli, scratch: &Scratch, service: &Service) -> anyhow::Result<Report> {
    eprintln!(
        "measuring argon2id verification on {} threads for {} s",
        cli.argon2_threads, cli.argon2_secs
    );
    let threads = cli.argon2_threads as usize;
    let duration = Duration::from_secs(cli.argon2_secs);
    let argon2 = tokio::task::spawn_blocking(move || argon::measure_verify_rate(threads, duration))
        .await
        .context("the argon2id measurement thread failed")??;

    let pgbench = pgbench::run_all(cli, scratch).await?;

    let settings = load::Settings {
        concurrency: cli.concurrency as usize,
        phase: Duration::from_secs(cli.phase_secs),
        max_requests: cli.max_requests,
    };
    let http = load::run_all(service.api_url(), &settings).await?;

    Ok(Report::new(argon2, pgbench, http, &settings))
}

/// Prints the report to stdout and writes it to `--output` when given.
fn publish(cli: &Cli, report: &Report) -> anyhow::Result<()> {
    let markdown = report.to_markdown();
    report::print(&markdown);
    if let Some(path) = &cli.output {
        std::fs::write(path, &markdown)
            .with_context(|| format!("failed to write the report to {}", path.display()))?;
        eprintln!("wrote the report to {}", path.display());
    }
    Ok(())
}
