//! The HTTP layer: shared state, the router with its OpenAPI document, and the middleware that
//! gives every request an id, a span, a timeout and an enveloped error on failure.

pub mod api_keys;
pub mod auth;
pub mod email;
pub mod envelope;
pub mod error;
pub mod extract;
pub mod mfa;
pub mod ops;
pub mod password;
pub mod rate_limit;
pub mod sessions;
pub mod strict_json;
pub mod users;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::api_key::ApiKey;
use aggregates::services::Clock;
use aggregates::session::Session;
use aggregates::user::User;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;
use utoipa::openapi::security::{
    ApiKey as ApiKeyScheme, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;
use uuid::Uuid;

use crate::crypto::{Argon2Hasher, CodeHasher, Indexer};
use crate::store::CommandBus;
use error::{ApiError, LoggedCause, REQUEST_ID};
use extract::{BODY_LIMIT_BYTES, Deadline, RequestId};
use rate_limit::RateLimits;

/// Header carrying the request id, echoed when the client sends a usable one.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longest client-sent request id that is echoed instead of replaced.
const REQUEST_ID_MAX_LEN: usize = 128;

/// Settings the handlers read.
#[derive(Clone, Debug)]
pub struct Settings {
    pub session_lifetime: chrono::Duration,
    pub session_idle_timeout: chrono::Duration,
    pub request_timeout: Duration,
    pub verification_lifetime: chrono::Duration,
    pub reset_lifetime: chrono::Duration,
}

/// Everything a handler can reach, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub users: Arc<CommandBus<User>>,
    pub sessions: Arc<CommandBus<Session>>,
    pub api_keys: Arc<CommandBus<ApiKey>>,
    pub hasher: Arc<Argon2Hasher>,
    pub indexer: Arc<Indexer>,
    pub limits: Arc<RateLimits>,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<Settings>,
    pub mfa: Arc<crate::mfa::MfaSettings>,
    pub codes: Arc<CodeHasher>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "account-ledger",
        description = "Event-sourced user accounts: registration, profiles and sessions. \
                       Every response body is the success or error envelope."
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "users", description = "Accounts and profiles"),
        (name = "auth", description = "Login and logout"),
        (name = "sessions", description = "Signed-in devices"),
        (name = "api-keys", description = "Server-to-server credentials"),
        (name = "mfa", description = "TOTP enrolment and recovery codes"),
        (name = "operations", description = "Health and readiness"),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKeyScheme::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// Builds the API routes and the OpenAPI document that describes them.
fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let v1 = OpenApiRouter::new()
        .routes(routes!(users::register_user))
        .routes(routes!(users::get_profile, users::update_profile))
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(users::suspend_user))
        .routes(routes!(users::unsuspend_user))
        .routes(routes!(sessions::list_sessions, sessions::revoke_sessions))
        .routes(routes!(sessions::revoke_session))
        .routes(routes!(api_keys::create_api_key, api_keys::list_api_keys))
        .routes(routes!(api_keys::revoke_api_key))
        .routes(routes!(mfa::get_mfa_status))
        .routes(routes!(mfa::start_totp_setup))
        .routes(routes!(mfa::verify_totp_setup))
        .routes(routes!(mfa::disable_totp))
        .routes(routes!(mfa::regenerate_recovery_codes))
        .routes(routes!(mfa::login_mfa))
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(email::change_email))
        .routes(routes!(email::verify_email))
        .routes(routes!(email::verify_email_link))
        .routes(routes!(email::get_email_status))
        .routes(routes!(email::resend_verification))
        .routes(routes!(password::change_password))
        .routes(routes!(password::request_password_reset))
        .routes(routes!(password::confirm_password_reset));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1)
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .split_for_parts()
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// Builds the whole application router over `state`.
pub fn router(state: AppState) -> Router {
    let timeout = state.settings.request_timeout;
    let (api, openapi) = api();

    // The documentation page returns an empty 404 of its own for an unknown file.
    let docs = Router::from(SwaggerUi::new("/docs").url("/openapi.json", openapi)).layer(
        middleware::map_response(|response: Response| async move {
            if response.status() == StatusCode::NOT_FOUND {
                ApiError::NoRoute(StatusCode::NOT_FOUND).into_response()
            } else {
                response
            }
        }),
    );
    api.merge(docs)
        .route_layer(middleware::from_fn(record_route))
        .fallback(|| async { ApiError::NoRoute(StatusCode::NOT_FOUND) })
        .method_not_allowed_fallback(|| async { ApiError::NoRoute(StatusCode::METHOD_NOT_ALLOWED) })
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::rate_limit,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("a handler panicked")).into_response()
        }))
        .layer(middleware::from_fn(move |request, next| {
            request_context(timeout, request, next)
        }))
        .with_state(state)
}

/// Takes the client's request id when it is short and plain, else makes one.
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= REQUEST_ID_MAX_LEN
                && id
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte))
        })
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned)
}

/// Records the matched route in the request span; routing has run by the time this does.
async fn record_route(request: Request, next: Next) -> Response {
    if let Some(route) = request.extensions().get::<MatchedPath>() {
        tracing::Span::current().record("route", route.as_str());
    }
    next.run(request).await
}

/// Runs a request inside its span, with its id in scope and a deadline, then logs its outcome.
async fn request_context(timeout: Duration, mut request: Request, next: Next) -> Response {
    let id = request_id(&request);
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = tracing::field::Empty,
        request_id = %id,
    );
    request.extensions_mut().insert(RequestId(id.clone()));
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started) + timeout;
    request.extensions_mut().insert(Deadline(deadline));

    // The rate-limit layer applies the same deadline to the credential check and the handler,
    // so that their 503 carries the rate-limit headers. This one covers the rest, such as
    // reading the body of a sensitive request.
    let run = REQUEST_ID.scope(id.clone(), async move {
        match tokio::time::timeout_at(deadline, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::timed_out().into_response(),
        }
    });
    let mut response = run.instrument(span.clone()).await;

    span.in_scope(|| {
        let status = response.status().as_u16();
        if let Some(LoggedCause(cause)) = response.extensions().get::<LoggedCause>() {
            // A 503 comes from an outage (a database down, a read model being rebuilt) and
            // repeats for every request while it lasts, but a 500 is a fault in the service.
            if status == StatusCode::SERVICE_UNAVAILABLE.as_u16() {
                tracing::warn!(status, error = format!("{cause:#}"), "request failed");
            } else {
                tracing::error!(status, error = format!("{cause:#}"), "request failed");
            }
        }
        tracing::debug!(
            status,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request finished"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}
