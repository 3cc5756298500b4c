//! API keys: issue, list and revoke server-to-server credentials (scope `api_keys:manage`).

use aggregates::api_key::ApiKey;
use aggregates::api_key::{ApiKeyCommand, ApiKeyError, IssueApiKey, SCOPES};
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::envelope::{ErrorBody, Success, SuccessBody};
use super::error::ApiError;
use super::extract::{ApiJson, Caller, ClientContext, RequestBody};
use crate::crypto::{TokenKind, issue_token};
use crate::store::{CommandBus, CommandError, CommandMetadata};

const SCOPE: &str = "api_keys:manage";

/// Characters of a key shown in listings: the kind prefix and eight more.
const VISIBLE_PREFIX_LEN: usize = 12;

/// A key as listed, without its secret.
#[derive(Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct ApiKeyView {
    pub api_key_id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A newly issued key; `key` is shown this once.
#[derive(Serialize, ToSchema)]
pub struct IssuedApiKey {
    pub api_key_id: Uuid,
    pub key: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub prefix: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Generates a key, appends its `ApiKeyIssued` event and returns the key once. Used by the
/// HTTP endpoint and by `account-ledger api-keys create`.
pub async fn issue_api_key(
    bus: &CommandBus<ApiKey>,
    name: String,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
    metadata: &CommandMetadata,
) -> Result<IssuedApiKey, CommandError<ApiKeyError>> {
    let api_key_id = Uuid::now_v7();
    let issued = issue_token(TokenKind::ApiKey);
    let key = issued.token.expose_secret().to_owned();
    let prefix: String = key.chars().take(VISIBLE_PREFIX_LEN).collect();
    let command = IssueApiKey {
        api_key_id,
        name: name.trim().to_owned(),
        scopes,
        prefix: prefix.clone(),
        key_hash: issued.hash,
        expires_at,
    };

    bus.execute(
        &api_key_id.to_string(),
        || ApiKeyCommand::Issue(command.clone()),
        metadata,
    )
    .await?;
    let mut scopes = command.scopes;
    scopes.sort();
    scopes.dedup();
    Ok(IssuedApiKey {
        api_key_id,
        key,
        name: command.name,
        scopes,
        prefix,
        expires_at,
    })
}

fn key_rejection(error: ApiKeyError) -> ApiError {
    match error {
        ApiKeyError::Invalid { field, reason } => ApiError::Invalid {
            message: "One or more fields are invalid".to_owned(),
            details: json!({"fields": [{"field": field, "reason": reason}]}),
        },
        ApiKeyError::NotFound => ApiError::invalid("No API key has this id"),
        ApiKeyError::ScopeNotHeld => ApiError::Forbidden,
        ApiKeyError::AlreadyIssued | ApiKeyError::AlreadyRevoked => {
            ApiError::Internal(error.into())
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    name: Option<String>,
    scopes: Option<Vec<String>>,
    expires_at: Option<DateTime<Utc>>,
}

impl RequestBody for CreateApiKeyRequest {
    const REQUIRED: &'static [&'static str] = &["name", "scopes"];
    const READ_ONLY: &'static [&'static str] = &["api_key_id", "key", "prefix", "created_at"];
}

/// Issues an API key. API key with `api_keys:manage` that also has every scope it grants and,
/// if it expires, expires no earlier than the new key.
#[utoipa::path(
    post, path = "/api-keys", tag = "api-keys",
    request_body = CreateApiKeyRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "The key, shown once", body = SuccessBody<IssuedApiKey>),
        (status = 400, description = "VAL_001 unknown scope or bad name, VAL_002 missing field", body = ErrorBody),
        (status = 401, description = "AUTH_001 missing or invalid credential", body = ErrorBody),
        (status = 403, description = "AUTH_002 without api_keys:manage or a requested scope", body = ErrorBody),
    )
)]
pub async fn create_api_key(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    ApiJson(request): ApiJson<CreateApiKeyRequest>,
) -> Result<Success<IssuedApiKey>, ApiError> {
    caller.require_scope(SCOPE)?;
    let scopes = request.scopes.unwrap_or_default();
    // A key grants only scopes it has itself, so `api_keys:manage` alone cannot mint a `*` key.
    // Unknown scopes pass here and are rejected as invalid by the aggregate.
    let escalates = scopes
        .iter()
        .filter(|scope| SCOPES.contains(&scope.as_str()))
        .any(|scope| caller.require_scope(scope).is_err());
    if escalates {
        tracing::info!(
            actor = %caller.actor(),
            "API key creation rejected: the caller lacks a requested scope"
        );
        return Err(ApiError::Forbidden);
    }
    // Nor does a key outlive the key that issued it.
    if let Caller::ApiKey {
        expires_at: Some(limit),
        ..
    } = &caller
    {
        if request
            .expires_at
            .is_none_or(|expires_at| expires_at > *limit)
        {
            tracing::info!(
                actor = %caller.actor(),
                "API key creation rejected: it would outlive the caller"
            );
            return Err(ApiError::Forbidden);
        }
    }
    let metadata = client.metadata(caller.actor(), None);

    let issued = issue_api_key(
        &state.api_keys,
        request.name.unwrap_or_default(),
        scopes,
        request.expires_at,
        &metadata,
    )
    .await
    .map_err(|error| ApiError::from_command(error, key_rejection))?;
    tracing::info!(api_key_id = %issued.api_key_id, actor = %caller.actor(), "API key issued");
    Ok(Success::created("API key created", issued))
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKeyView>,
}

/// Lists every key, revoked and expired ones included, without secrets.
#[utoipa::path(
    get, path = "/api-keys", tag = "api-keys",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The keys", body = SuccessBody<ApiKeyList>),
        (status = 401, description = "AUTH_001 missing or invalid credential", body = ErrorBody),
        (status = 403, description = "AUTH_002 without api_keys:manage", body = ErrorBody),
    )
)]
pub async fn list_api_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Success<ApiKeyList>, ApiError> {
    caller.require_scope(SCOPE)?;
    let api_keys = sqlx::query_as::<_, ApiKeyView>(
        "SELECT api_key_id, name, scopes, prefix, created_at, expires_at, revoked_at
           FROM api_keys ORDER BY created_at",
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Success::ok("API keys retrieved", ApiKeyList { api_keys }))
}

#[derive(Serialize, ToSchema)]
pub struct RevokedApiKey {
    pub api_key_id: Uuid,
    pub revoked: bool,
}

/// Revokes a key; it is refused from the very next request on.
#[utoipa::path(
    delete, path = "/api-keys/{apiKeyId}", tag = "api-keys",
    params(("apiKeyId" = Uuid, Path, description = "The key to revoke")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The key is revoked", body = SuccessBody<RevokedApiKey>),
        (status = 400, description = "VAL_001 no key with this id", body = ErrorBody),
        (status = 401, description = "AUTH_001 missing or invalid credential", body = ErrorBody),
        (status = 403, description = "AUTH_002 without api_keys:manage", body = ErrorBody),
    )
)]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    Path(api_key_id): Path<String>,
) -> Result<Success<RevokedApiKey>, ApiError> {
    caller.require_scope(SCOPE)?;
    let api_key_id: Uuid = api_key_id
        .parse()
        .map_err(|_| ApiError::invalid("apiKeyId must be a UUID"))?;
    let metadata = client.metadata(caller.actor(), None);

    let result = state
        .api_keys
        .execute(
            &api_key_id.to_string(),
            // As with issuing, a key acts only on keys whose scopes it has itself, so a key that
            // manages keys cannot revoke one that is more powerful than itself.
            || ApiKeyCommand::Revoke {
                revoker_scopes: Some(caller.scopes().to_vec()),
            },
            &metadata,
        )
        .await;
    match result {
        Ok(_) | Err(CommandError::Rejected(ApiKeyError::AlreadyRevoked)) => {}
        Err(CommandError::Rejected(ApiKeyError::ScopeNotHeld)) => {
            tracing::info!(
                %api_key_id,
                actor = %caller.actor(),
                "API key revocation rejected: the caller lacks a scope of the key"
            );
            return Err(ApiError::Forbidden);
        }
        Err(error) => return Err(ApiError::from_command(error, key_rejection)),
    }
    tracing::info!(%api_key_id, actor = %caller.actor(), "API key revoked");
    Ok(Success::ok(
        "API key revoked",
        RevokedApiKey {
            api_key_id,
            revoked: true,
        },
    ))
}
