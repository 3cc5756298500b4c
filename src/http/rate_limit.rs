//! Rate limiting in three classes, with `X-RateLimit-*` headers on every response.
//!
//! - standard: per user (Bearer), per API key, or per client IP when anonymous;
//! - sensitive (login, password and code checks): on the endpoints whose body names the
//!   account (login, the MFA step, reset and its confirmation, email links), per canonical
//!   email or token hash from the body, also when a credential comes with it, so that variant
//!   spellings share one bucket; elsewhere per user. Requests not keyed by a caller also count
//!   against one bucket per client address at the standard rate, so one client cannot spread
//!   its guesses over many accounts;
//! - bulk (listings and bulk imports and exports): per API key.
//!
//! governor counts with GCRA. Keys whose bucket has refilled are pruned every minute and
//! whenever a limiter holds too many keys, so memory stays bounded under many distinct keys.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use aggregates::values::Email;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use ipnet::IpNet;
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use super::extract::{
    BODY_LIMIT_BYTES, Caller, CheckedCredential, ClientIp, Deadline, SessionProfile,
    check_credential,
};
use crate::crypto::hash_token;

type KeyedLimiter =
    RateLimiter<String, DashMapStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Keys held by one limiter before it prunes outside its regular schedule.
const MAX_KEYS: usize = 100_000;

/// Interval of the regular pruning of refilled buckets.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Standard,
    Sensitive,
    Bulk,
}

/// One limiter per class, and the proxies whose forwarding header is trusted.
pub struct RateLimits {
    standard: Limit,
    sensitive: Limit,
    /// Sensitive requests not keyed by a caller, per client address, at the standard rate.
    sensitive_per_client: Limit,
    bulk: Limit,
    trusted_proxies: Vec<IpNet>,
}

struct Limit {
    per_minute: u32,
    limiter: KeyedLimiter,
}

impl Limit {
    fn new(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        Self {
            per_minute,
            limiter: RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
        }
    }
}

/// The outcome of one check, as it is reported in headers.
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_after_secs: u64,
    /// Seconds to wait before the next request is allowed, when this one was refused.
    pub retry_after_secs: Option<u64>,
}

impl RateLimits {
    pub fn new(standard: u32, sensitive: u32, bulk: u32, trusted_proxies: Vec<IpNet>) -> Self {
        Self {
            standard: Limit::new(standard),
            sensitive: Limit::new(sensitive),
            sensitive_per_client: Limit::new(standard),
            bulk: Limit::new(bulk),
            trusted_proxies,
        }
    }

    fn limit(&self, class: Class) -> &Limit {
        match class {
            Class::Standard => &self.standard,
            Class::Sensitive => &self.sensitive,
            Class::Bulk => &self.bulk,
        }
    }

    fn limits(&self) -> [&Limit; 4] {
        [
            &self.standard,
            &self.sensitive,
            &self.sensitive_per_client,
            &self.bulk,
        ]
    }

    /// Counts one request against `key` in `class`.
    pub fn check(&self, class: Class, key: &str) -> Decision {
        Self::check_in(self.limit(class), key)
    }

    /// Counts one sensitive request that no caller identifies against its client's address.
    pub fn check_sensitive_client(&self, ip_key: &str) -> Decision {
        Self::check_in(&self.sensitive_per_client, ip_key)
    }

    fn check_in(limit: &Limit, key: &str) -> Decision {
        if limit.limiter.len() >= MAX_KEYS {
            limit.limiter.retain_recent();
        }
        let seconds_per_cell = 60.0 / f64::from(limit.per_minute);

        match limit.limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = limit.per_minute.saturating_sub(remaining);
                Decision {
                    limit: limit.per_minute,
                    remaining,
                    reset_after_secs: (f64::from(used) * seconds_per_cell).ceil() as u64,
                    retry_after_secs: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let wait_secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                Decision {
                    limit: limit.per_minute,
                    remaining: 0,
                    reset_after_secs: 60,
                    retry_after_secs: Some(wait_secs),
                }
            }
        }
    }

    /// Drops the buckets that have refilled; a dropped key starts again from a full bucket.
    pub fn prune(&self) {
        for limit in self.limits() {
            limit.limiter.retain_recent();
            limit.limiter.shrink_to_fit();
        }
    }

    /// Number of keys held across all classes.
    pub fn key_count(&self) -> usize {
        self.limits().iter().map(|limit| limit.limiter.len()).sum()
    }

    /// Resolves the client address: the socket peer, or, when the peer is a trusted proxy, the
    /// nearest address in `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|part| part.trim().parse().ok())
            .collect();
        forwarded
            .iter()
            .rev()
            .find(|ip| !trusted(ip))
            .or(forwarded.first())
            .copied()
            .or(Some(peer))
    }
}

/// Splits a path under `/api/v1` into its segments; `None` for any other path.
fn api_segments(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix("/api/v1")?;
    Some(rest.split('/').filter(|part| !part.is_empty()).collect())
}

/// Runs `future` until the request's deadline, if it has one; `None` when the deadline passed.
async fn by_deadline<T>(
    deadline: Option<tokio::time::Instant>,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, future).await.ok(),
        None => Some(future.await),
    }
}

/// The class of an endpoint, from its method and path.
pub fn classify(method: &Method, path: &str) -> Class {
    let Some(segments) = api_segments(path) else {
        return Class::Standard;
    };

    match (method, segments.as_slice()) {
        (&Method::POST, ["auth", "login"] | ["auth", "login", "mfa"]) => Class::Sensitive,
        (
            &Method::POST,
            ["users", "password", "reset"] | ["users", "password", "reset", "confirm"],
        ) => Class::Sensitive,
        (&Method::POST, ["users", "email", "verify-link"]) => Class::Sensitive,
        (&Method::POST, ["users", "bulk"]) => Class::Bulk,
        (
            &Method::POST,
            ["users", _, "password", "change"]
            | [
                "users",
                _,
                "email",
                "change" | "verify" | "resend-verification",
            ]
            | ["users", _, "withdraw"]
            | ["users", _, "mfa", "totp", "setup" | "verify" | "disable"]
            | ["users", _, "mfa", "recovery-codes"],
        ) => Class::Sensitive,
        (&Method::GET, ["users"] | ["users", "bulk", "export"]) => Class::Bulk,
        _ => Class::Standard,
    }
}

/// Tells whether the endpoint takes the account it acts on from the body (an email address or
/// a single-use token) rather than from the path and the caller's credential.
fn names_account_in_body(method: &Method, path: &str) -> bool {
    let Some(segments) = api_segments(path) else {
        return false;
    };
    *method == Method::POST
        && matches!(
            segments.as_slice(),
            ["auth", "login"]
                | ["auth", "login", "mfa"]
                | ["users", "password", "reset"]
                | ["users", "password", "reset", "confirm"]
                | ["users", "email", "verify-link"]
        )
}

/// Identifies an anonymous caller of a sensitive endpoint by the account the body names: a
/// canonical email, or the hash of a single-use token.
fn account_identifier(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    if let Some(email) = value.get("email").and_then(Value::as_str) {
        return Email::parse(email)
            .ok()
            .map(|email| format!("account:{}", email.as_str()));
    }
    ["mfa_token", "token"].iter().find_map(|field| {
        value
            .get(*field)
            .and_then(Value::as_str)
            .map(|token| format!("token:{}", hash_token(token)))
    })
}

fn insert_headers(headers: &mut HeaderMap, decision: &Decision, now_unix: u64) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(decision.remaining),
    );
    headers.insert(
        "x-ratelimit-reset",
        HeaderValue::from(now_unix + decision.reset_after_secs),
    );
    if let Some(retry_after) = decision.retry_after_secs {
        headers.insert("retry-after", HeaderValue::from(retry_after));
    }
}

/// Checks the credential once, picks the class and key, counts the request, and adds the
/// headers to the handler's response.
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let class = classify(&parts.method, parts.uri.path());

    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let client_ip = state.limits.client_ip(peer, &parts.headers);
    parts.extensions.insert(ClientIp(client_ip));
    let ip_key = client_ip.map_or_else(|| "ip:unknown".to_owned(), ip_key);

    // A credential that cannot be checked fails the request at once, so that the handler does
    // not wait for the database a second time. The request's deadline covers the check too, so
    // that a stalled check still gets the headers.
    let deadline = parts
        .extensions
        .get::<Deadline>()
        .map(|deadline| deadline.0);
    let checked = by_deadline(deadline, check_credential(&state, &parts))
        .await
        .unwrap_or_else(|| Err(ApiError::timed_out()));
    let caller = match checked {
        Ok(Some(checked)) => {
            let caller = checked.outcome.as_ref().ok().cloned();
            parts.extensions.insert(CheckedCredential(checked.outcome));
            if let Some(profile) = checked.profile {
                parts.extensions.insert(SessionProfile(Arc::new(profile)));
            }
            caller
        }
        Ok(None) => None,
        Err(error) => return with_headers(&state, class, &ip_key, error.into_response()),
    };

    let mut body = body;
    let mut client_decision = None;
    let key = if class == Class::Sensitive {
        let bytes = match to_bytes(body, BODY_LIMIT_BYTES).await {
            Ok(bytes) => bytes,
            Err(_) => {
                let error = ApiError::PayloadTooLarge {
                    limit_bytes: BODY_LIMIT_BYTES,
                };
                return with_headers(&state, class, &ip_key, error.into_response());
            }
        };
        // On the endpoints whose body names the account, that account comes first, so that a
        // caller's own credential does not move guesses at someone else's account onto the
        // caller's bucket. Elsewhere the account is the caller, whatever the body holds.
        let named = if names_account_in_body(&parts.method, parts.uri.path()) {
            account_identifier(&bytes)
        } else {
            None
        };
        let (key, keyed_by_caller) = match (named, &caller) {
            (Some(account), _) => (account, false),
            (None, Some(caller)) => (caller.rate_key(), true),
            (None, None) => (ip_key.clone(), false),
        };
        body = Body::from(bytes);
        if !keyed_by_caller {
            client_decision = Some(state.limits.check_sensitive_client(&ip_key));
        }
        key
    } else {
        caller
            .as_ref()
            .map_or_else(|| ip_key.clone(), Caller::rate_key)
    };

    let decision = stricter(state.limits.check(class, &key), client_decision);
    let now_unix = unix_now();
    if decision.retry_after_secs.is_some() {
        tracing::debug!(?class, "rate limit exceeded");
        let mut response = ApiError::RateLimited.into_response();
        insert_headers(response.headers_mut(), &decision, now_unix);
        return response;
    }

    let mut response = by_deadline(deadline, next.run(Request::from_parts(parts, body)))
        .await
        .unwrap_or_else(|| ApiError::timed_out().into_response());
    insert_headers(response.headers_mut(), &decision, now_unix);
    response
}

/// Keys an anonymous client by its address. An IPv6 client is keyed by its /64 network,
/// because one host is usually assigned a whole /64 and could otherwise use a fresh address for
/// every request.
fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let network = u128::from(v6) & !(u128::MAX >> 64);
            format!("ip:{}/64", Ipv6Addr::from(network))
        }
        IpAddr::V6(v6) => format!("ip:{}", v6.to_canonical()),
        IpAddr::V4(v4) => format!("ip:{v4}"),
    }
}

/// Picks the decision to act on and report: a refusal first, else the one with less left.
fn stricter(account: Decision, client: Option<Decision>) -> Decision {
    let Some(client) = client else {
        return account;
    };
    match (account.retry_after_secs, client.retry_after_secs) {
        (Some(_), _) => account,
        (None, Some(_)) => client,
        (None, None) if client.remaining < account.remaining => client,
        (None, None) => account,
    }
}

/// Counts a request that failed before its key could be read and adds the headers.
fn with_headers(state: &AppState, class: Class, key: &str, mut response: Response) -> Response {
    let decision = state.limits.check(class, key);
    insert_headers(response.headers_mut(), &decision, unix_now());
    response
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_endpoints_are_classified() {
        for (method, path) in [
            (Method::POST, "/api/v1/auth/login"),
            (Method::POST, "/api/v1/auth/login/mfa"),
            (Method::POST, "/api/v1/users/me/password/change"),
            (Method::POST, "/api/v1/users/password/reset"),
            (Method::POST, "/api/v1/users/0190/mfa/totp/verify"),
        ] {
            assert_eq!(classify(&method, path), Class::Sensitive, "{method} {path}");
        }
        assert_eq!(classify(&Method::GET, "/api/v1/users/me"), Class::Standard);
        assert_eq!(classify(&Method::POST, "/api/v1/users"), Class::Standard);
        assert_eq!(classify(&Method::GET, "/api/v1/users"), Class::Bulk);
        assert_eq!(classify(&Method::POST, "/api/v1/users/bulk"), Class::Bulk);
    }

    #[test]
    fn eleventh_request_is_refused() {
        let limits = RateLimits::new(100, 10, 10, Vec::new());

        let decisions: Vec<Decision> = (0..11)
            .map(|_| limits.check(Class::Sensitive, "account:ada@example.com"))
            .collect();

        assert_eq!(decisions[0].remaining, 9);
        assert_eq!(decisions[9].remaining, 0);
        assert!(decisions[9].retry_after_secs.is_none());
        assert!(decisions[10].retry_after_secs.is_some());
    }

    #[test]
    fn email_variants_share_one_key() {
        let first = account_identifier(br#"{"email": "Ada@Example.com"}"#);
        let second = account_identifier(br#"{"email": " ada@example.COM "}"#);

        assert_eq!(first.as_deref(), Some("account:ada@example.com"));
        assert_eq!(first, second);
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let first = ip_key("2001:db8:1:2::1".parse().expect("ip"));
        let second = ip_key("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().expect("ip"));
        let other = ip_key("2001:db8:1:3::1".parse().expect("ip"));
        let mapped = ip_key("::ffff:192.0.2.7".parse().expect("ip"));

        assert_eq!(first, "ip:2001:db8:1:2::/64");
        assert_eq!(first, second);
        assert_ne!(first, other);
        assert_eq!(mapped, "ip:192.0.2.7");
        assert_eq!(ip_key("192.0.2.7".parse().expect("ip")), "ip:192.0.2.7");
    }

    #[test]
    fn refilled_buckets_are_pruned() {
        let limits = RateLimits::new(60_000, 10, 10, Vec::new());
        for i in 0..5_000 {
            limits.check(Class::Standard, &format!("ip:client-{i}"));
        }
        assert_eq!(limits.key_count(), 5_000);

        std::thread::sleep(Duration::from_millis(20));
        limits.prune();

        assert_eq!(limits.key_count(), 0);
    }

    #[test]
    fn forwarded_address_is_used_only_behind_trusted_proxy() {
        let proxy: IpNet = "10.0.0.0/8".parse().expect("cidr");
        let limits = RateLimits::new(100, 10, 10, vec![proxy]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.7, 10.0.0.2"),
        );

        let via_proxy = limits.client_ip(Some("10.0.0.1".parse().expect("ip")), &headers);
        let direct = limits.client_ip(Some("198.51.100.4".parse().expect("ip")), &headers);

        assert_eq!(via_proxy, Some("203.0.113.7".parse().expect("ip")));
        assert_eq!(direct, Some("198.51.100.4".parse().expect("ip")));
    }
}
