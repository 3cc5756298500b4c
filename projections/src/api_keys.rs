//! The `api_keys` projection: one row per key, read by every `X-API-Key` request.

use aggregates::api_key::{ApiKey, ApiKeyEvent};
use async_trait::async_trait;
use cqrs_es::Aggregate;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Projection, StoredEvent};

#[derive(Clone, Copy, Debug, Default)]
pub struct ApiKeysProjection;

#[async_trait]
impl Projection for ApiKeysProjection {
    fn name(&self) -> &'static str {
        "api_keys"
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> anyhow::Result<()> {
        if event.aggregate_type != ApiKey::TYPE {
            return Ok(());
        }
        let api_key_id: Uuid = event.aggregate_id.parse()?;
        let payload: ApiKeyEvent = serde_json::from_value(event.payload.clone())?;

        match payload {
            ApiKeyEvent::ApiKeyIssued(issued) => {
                sqlx::query(
                    "INSERT INTO api_keys
                        (api_key_id, name, scopes, prefix, key_hash, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(api_key_id)
                .bind(&issued.name)
                .bind(&issued.scopes)
                .bind(&issued.prefix)
                .bind(&issued.key_hash)
                .bind(issued.issued_at)
                .bind(issued.expires_at)
                .execute(&mut *connection)
                .await?;
            }
            ApiKeyEvent::ApiKeyRevoked(revoked) => {
                sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE api_key_id = $1")
                    .bind(api_key_id)
                    .bind(revoked.revoked_at)
                    .execute(&mut *connection)
                    .await?;
            }
        }
        Ok(())
    }

    async fn reset(&self, connection: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("TRUNCATE api_keys")
            .execute(&mut *connection)
            .await?;
        Ok(())
    }
}
