//! The service under test as a child process on a free loopback port.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use rand::RngCore;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::scratch::Scratch;

/// Maximum time from spawning the service until `/readyz` returns 200.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const READY_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Requests per minute for each rate-limit class, high enough that no limiter throttles the
/// load. A service without a rate limiter warns that the variables are unknown.
const UNTHROTTLED_RATE: &str = "100000000";
const RATE_LIMIT_VARIABLES: [&str; 3] = [
    "LEDGER_RATE_STANDARD",
    "LEDGER_RATE_SENSITIVE",
    "LEDGER_RATE_BULK",
];

pub struct Service {
    child: Child,
    address: SocketAddr,
    log_path: std::path::PathBuf,
}

/// Counts of the warnings and errors that the service logged, by level and message.
#[derive(Debug, Default)]
pub struct LogSummary {
    pub entries: BTreeMap<(String, String), u64>,
    /// Lines that are not JSON log entries, such as a panic message.
    pub other_lines: u64,
}

impl Service {
    /// Spawns `binary` against the scratch database and waits until it is ready.
    pub async fn start(binary: &Path, scratch: &Scratch) -> anyhow::Result<Self> {
        let address = free_loopback_address()?;
        let log_path = scratch.service_log();
        let log = File::create(&log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;
        let log_for_stderr = log.try_clone().context("failed to share the log file")?;

        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let master_key = base64::engine::general_purpose::STANDARD.encode(key);

        let mut command = Command::new(binary);
        command
            .arg("serve")
            .env("DATABASE_URL", scratch.database_url())
            .env("LEDGER_BIND", address.to_string())
            .env("LEDGER_PUBLIC_BASE_URL", format!("http://{address}"))
            .env("LEDGER_DATA_DIR", scratch.data_dir())
            .env("LEDGER_MASTER_KEY", master_key)
            .env("LEDGER_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .kill_on_drop(true);
        for variable in RATE_LIMIT_VARIABLES {
            command.env(variable, UNTHROTTLED_RATE);
        }
        let child = command
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;
        eprintln!(
            "started {} (pid {}) on {address}",
            binary.display(),
            child.id().unwrap_or_default()
        );

        let mut service = Self {
            child,
            address,
            log_path,
        };
        if let Err(error) = service.wait_until_ready().await {
            let _ = service.child.kill().await;
            let tail = log_tail(&service.log_path, 20);
            return Err(error.context(format!("service log, last lines:\n{tail}")));
        }
        eprintln!("service is ready");
        Ok(service)
    }

    /// Base URL of the versioned API, such as `http://127.0.0.1:40123/api/v1`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v1", self.address)
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .context("failed to build the HTTP client")?;
        let url = format!("http://{}/readyz", self.address);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the service exited with {status} before it was ready");
            }
            if let Ok(response) = client.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                started.elapsed() < READY_TIMEOUT,
                "{url} did not return 200 within {} s",
                READY_TIMEOUT.as_secs()
            );
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
    }

    /// Kills the service, waits for it to exit, and summarises its log.
    pub async fn stop(mut self) -> anyhow::Result<LogSummary> {
        self.child
            .kill()
            .await
            .context("failed to kill the service")?;
        eprintln!("stopped the service");
        summarise_log(&self.log_path)
    }
}

/// Returns a loopback address whose port was free a moment ago. Another process could take the
/// port before the service binds it, which makes the start fail with a clear error.
fn free_loopback_address() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("failed to find a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?)
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn summarise_log(path: &Path) -> anyhow::Result<LogSummary> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the service log {}", path.display()))?;
    let mut summary = LogSummary::default();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            summary.other_lines += 1;
            continue;
        };
        let level = entry.get("level").and_then(Value::as_str).unwrap_or("?");
        let message = entry.get("message").and_then(Value::as_str).unwrap_or("");
        *summary
            .entries
            .entry((level.to_owned(), message.to_owned()))
            .or_default() += 1;
    }
    Ok(summary)
}
