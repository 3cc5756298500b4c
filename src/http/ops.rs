//! Operational endpoints: liveness, readiness and the API description.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::envelope::{ErrorBody, Success, SuccessBody};
use super::error::ApiError;

#[derive(Serialize, ToSchema)]
pub struct HealthResponse {
    pub status: &'static str,
}

/// Answers while the process is up.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = SuccessBody<HealthResponse>))
)]
pub async fn health() -> Success<HealthResponse> {
    Success::ok("Alive", HealthResponse { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct ReadinessResponse {
    pub status: &'static str,
    pub migrations_applied: i64,
}

/// Answers 200 when the database is reachable and every embedded migration is applied.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = SuccessBody<ReadinessResponse>),
        (status = 503, description = "SYS_002 the database is unreachable or not migrated", body = ErrorBody),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<Success<ReadinessResponse>, ApiError> {
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&state.pool)
        .await
        .map_err(|error| ApiError::Unavailable(error.into()))?;
    let embedded = crate::db::MIGRATOR.iter().count() as i64;
    if applied < embedded {
        return Err(ApiError::Unavailable(anyhow::anyhow!(
            "{applied} of {embedded} migrations applied"
        )));
    }
    Ok(Success::ok(
        "Ready",
        ReadinessResponse {
            status: "ready",
            migrations_applied: applied,
        },
    ))
}
