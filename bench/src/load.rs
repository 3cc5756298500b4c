//! HTTP load phases against the running service: registration, login, profile reads and
//! profile updates, each bounded by a duration and a request count.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::Response;
use serde_json::{Value, json};

/// A password that passes the service's strength policy.
const PASSWORD: &str = "correct horse battery staple";
/// Maximum time for one request before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Settings {
    pub concurrency: usize,
    pub phase: Duration,
    pub max_requests: u64,
}

/// What one phase measured.
pub struct PhaseResult {
    pub label: &'static str,
    pub concurrency: usize,
    /// From the first request until the last worker finished its last request.
    pub elapsed: Duration,
    /// Latencies of the 2xx responses in microseconds, sorted.
    latencies_us: Vec<u64>,
    /// Failed requests by status and error code, or by transport failure.
    pub failures: BTreeMap<String, u64>,
}

impl PhaseResult {
    pub fn successes(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    pub fn failure_count(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Successful requests per second.
    pub fn per_second(&self) -> f64 {
        self.successes() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn mean_ms(&self) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let total: u64 = self.latencies_us.iter().sum();
        Some(total as f64 / self.latencies_us.len() as f64 / 1000.0)
    }

    /// The nearest-rank percentile `quantile` (0 to 1) of the successful requests.
    pub fn percentile_ms(&self, quantile: f64) -> Option<f64> {
        let count = self.latencies_us.len();
        if count == 0 {
            return None;
        }
        let rank = (quantile * count as f64).ceil() as usize;
        let index = rank.clamp(1, count) - 1;
        Some(self.latencies_us[index] as f64 / 1000.0)
    }

    /// The failures as `12 (409 CONFLICT_001 ×12)`, or `0`.
    pub fn failure_summary(&self) -> String {
        if self.failures.is_empty() {
            return "0".to_owned();
        }
        let kinds: Vec<String> = self
            .failures
            .iter()
            .map(|(kind, count)| format!("{kind} ×{count}"))
            .collect();
        format!("{} ({})", self.failure_count(), kinds.join(", "))
    }
}

pub struct HttpResults {
    pub register: PhaseResult,
    pub login: PhaseResult,
    pub get_profile: PhaseResult,
    pub update_profile: PhaseResult,
}

/// Client for the service's API; a request that fails returns a short label of why.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: Arc<str>,
}

/// Reads the whole body, and on a non-2xx status returns `"<status> <error code>"`.
async fn read_body(response: Result<Response, reqwest::Error>) -> Result<Vec<u8>, String> {
    let response = response.map_err(transport_failure)?;
    let status = response.status();
    let body = response.bytes().await.map_err(transport_failure)?;
    if status.is_success() {
        return Ok(body.to_vec());
    }
    let code = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|body| body["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "no error code".to_owned());
    Err(format!("{} {code}", status.as_u16()))
}

fn transport_failure(error: reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        "transport error".to_owned()
    }
}

impl Api {
    fn new(base: String, concurrency: usize) -> anyhow::Result<Self> {
        // No proxy: every request must go straight to the service on the loopback interface.
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("failed to build the HTTP client")?;
        Ok(Self {
            client,
            base: base.into(),
        })
    }

    async fn register(&self, email: &str) -> Result<(), String> {
        let body = json!({"email": email, "password": PASSWORD, "display_name": "Bench user"});
        let response = self
            .client
            .post(format!("{}/users", self.base))
            .json(&body)
            .send()
            .await;
        read_body(response).await.map(drop)
    }

    /// Logs in and returns the access token.
    async fn login(&self, email: &str) -> Result<String, String> {
        let body = json!({"email": email, "password": PASSWORD});
        let response = self
            .client
            .post(format!("{}/auth/login", self.base))
            .json(&body)
            .send()
            .await;
        let body = read_body(response).await?;
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|body| body["data"]["access_token"].as_str().map(str::to_owned))
            .ok_or_else(|| "200 without access_token".to_owned())
    }

    async fn get_profile(&self, token: &str) -> Result<(), String> {
        let response = self
            .client
            .get(format!("{}/users/me", self.base))
            .bearer_auth(token)
            .send()
            .await;
        read_body(response).await.map(drop)
    }

    async fn update_profile(&self, token: &str, display_name: &str) -> Result<(), String> {
        let response = self
            .client
            .patch(format!("{}/users/me", self.base))
            .bearer_auth(token)
            .json(&json!({"display_name": display_name}))
            .send()
            .await;
        read_body(response).await.map(drop)
    }
}

/// Runs `request(worker, sequence)` on `concurrency` workers until the phase duration has
/// passed or `max_requests` were sent. `sequence` numbers the requests of the phase from 0.
async fn run_phase<F, Fut>(label: &'static str, settings: &Settings, request: F) -> PhaseResult
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    eprintln!(
        "running {label} on {} workers for up to {} s",
        settings.concurrency,
        settings.phase.as_secs()
    );
    let request = Arc::new(request);
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + settings.phase;

    let mut workers = Vec::with_capacity(settings.concurrency);
    for worker in 0..settings.concurrency {
        let request = request.clone();
        let issued = issued.clone();
        let max_requests = settings.max_requests;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = BTreeMap::<String, u64>::new();
            while Instant::now() < deadline {
                let sequence = issued.fetch_add(1, Ordering::Relaxed);
                if sequence >= max_requests {
                    break;
                }
                let sent = Instant::now();
                let outcome = request(worker, sequence).await;
                let micros = sent.elapsed().as_micros() as u64;
                match outcome {
                    Ok(()) => latencies.push(micros),
                    Err(kind) => *failures.entry(kind).or_default() += 1,
                }
            }
            (latencies, failures)
        }));
    }

    let mut latencies_us = Vec::new();
    let mut failures = BTreeMap::<String, u64>::new();
    for worker in workers {
        match worker.await {
            Ok((latencies, worker_failures)) => {
                latencies_us.extend(latencies);
                for (kind, count) in worker_failures {
                    *failures.entry(kind).or_default() += count;
                }
            }
            Err(error) => {
                *failures
                    .entry(format!("worker failed: {error}"))
                    .or_default() += 1
            }
        }
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();

    let result = PhaseResult {
        label,
        concurrency: settings.concurrency,
        elapsed,
        latencies_us,
        failures,
    };
    eprintln!(
        "{label}: {} ok in {:.1} s ({:.1}/s), failures: {}",
        result.successes(),
        elapsed.as_secs_f64(),
        result.per_second(),
        result.failure_summary()
    );
    if result.failure_count() > 0 {
        eprintln!("warning: {label} had failed requests");
    }
    result
}

/// Runs the four phases in order. Login reuses the registered accounts, and the update phase
/// gives each worker its own account so that no two workers write to one aggregate.
pub async fn run_all(api_url: String, settings: &Settings) -> anyhow::Result<HttpResults> {
    let api = Api::new(api_url, settings.concurrency)?;

    let registered = Arc::new(Mutex::new(Vec::<String>::new()));
    let register = {
        let api = api.clone();
        let registered = registered.clone();
        run_phase("POST /api/v1/users", settings, move |_, sequence| {
            let api = api.clone();
            let registered = registered.clone();
            async move {
                let email = format!("user{sequence}@example.com");
                api.register(&email).await?;
                lock(&registered).push(email);
                Ok(())
            }
        })
        .await
    };

    let mut emails = std::mem::take(&mut *lock(&registered));
    register_missing(&api, &mut emails, settings.concurrency).await?;
    let emails = Arc::new(emails);

    let sessions = Arc::new(Mutex::new(vec![None::<String>; emails.len()]));
    let login = {
        let api = api.clone();
        let emails = emails.clone();
        let sessions = sessions.clone();
        run_phase("POST /api/v1/auth/login", settings, move |_, sequence| {
            let api = api.clone();
            let emails = emails.clone();
            let sessions = sessions.clone();
            async move {
                let index = (sequence % emails.len() as u64) as usize;
                let token = api.login(&emails[index]).await?;
                lock(&sessions)[index] = Some(token);
                Ok(())
            }
        })
        .await
    };

    let sessions = std::mem::take(&mut *lock(&sessions));
    let tokens = Arc::new(tokens_for_workers(&api, &emails, sessions, settings.concurrency).await?);

    let get_profile = {
        let api = api.clone();
        let tokens = tokens.clone();
        run_phase("GET /api/v1/users/me", settings, move |worker, _| {
            let api = api.clone();
            let tokens = tokens.clone();
            async move { api.get_profile(&tokens[worker]).await }
        })
        .await
    };

    let update_profile = {
        let api = api.clone();
        let tokens = tokens.clone();
        run_phase(
            "PATCH /api/v1/users/me",
            settings,
            move |worker, sequence| {
                let api = api.clone();
                let tokens = tokens.clone();
                async move {
                    let display_name = format!("Bench user {sequence}");
                    api.update_profile(&tokens[worker], &display_name).await
                }
            },
        )
        .await
    };

    Ok(HttpResults {
        register,
        login,
        get_profile,
        update_profile,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers accounts, outside any measurement, until there are at least `needed`.
async fn register_missing(
    api: &Api,
    emails: &mut Vec<String>,
    needed: usize,
) -> anyhow::Result<()> {
    let mut number = 0;
    while emails.len() < needed {
        let email = format!("extra{number}@example.com");
        api.register(&email)
            .await
            .map_err(|kind| anyhow::anyhow!("failed to register {email}: {kind}"))?;
        emails.push(email);
        number += 1;
    }
    Ok(())
}

/// Returns one token per worker, each of a different account, logging in outside any
/// measurement where the login phase left an account without a session.
async fn tokens_for_workers(
    api: &Api,
    emails: &[String],
    sessions: Vec<Option<String>>,
    workers: usize,
) -> anyhow::Result<Vec<String>> {
    let mut tokens = Vec::with_capacity(workers);
    for (email, session) in emails.iter().zip(sessions).take(workers) {
        let token = match session {
            Some(token) => token,
            None => api
                .login(email)
                .await
                .map_err(|kind| anyhow::anyhow!("failed to log in as {email}: {kind}"))?,
        };
        tokens.push(token);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(latencies_us: Vec<u64>) -> PhaseResult {
        PhaseResult {
            label: "test",
            concurrency: 1,
            elapsed: Duration::from_secs(2),
            latencies_us,
            failures: BTreeMap::new(),
        }
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        let result = phase((1..=100).map(|ms| ms * 1000).collect());

        assert_eq!(result.percentile_ms(0.5), Some(50.0));
        assert_eq!(result.percentile_ms(0.99), Some(99.0));
        assert_eq!(result.percentile_ms(1.0), Some(100.0));
    }

    #[test]
    fn empty_phase_has_no_latency() {
        let result = phase(Vec::new());

        assert_eq!(result.percentile_ms(0.5), None);
        assert_eq!(result.mean_ms(), None);
        assert_eq!(result.per_second(), 0.0);
    }

    #[test]
    fn failure_summary_lists_kinds() {
        let mut result = phase(vec![1000]);
        result.failures.insert("409 CONFLICT_001".to_owned(), 3);
        result.failures.insert("timed out".to_owned(), 1);

        assert_eq!(
            result.failure_summary(),
            "4 (409 CONFLICT_001 ×3, timed out ×1)"
        );
    }
}
