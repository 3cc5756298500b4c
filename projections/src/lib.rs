//! Read models of account-ledger and the projector that builds them from the event stream.
//!
//! Each [`Projection`] owns some tables and one checkpoint. The [`Projector`] feeds it the
//! stream in commit order and moves the checkpoint in the same transaction as the rows, so an
//! event is applied exactly once even across crashes, and a projection can be rebuilt by
//! resetting its checkpoint.

mod api_keys;
mod mail_outbox;
mod mfa;
mod profiles;
mod projector;
mod sessions;
mod verifications;

pub use api_keys::ApiKeysProjection;
pub use mail_outbox::{MailKind, MailOutboxProjection};
pub use mfa::MfaProjection;
pub use profiles::ProfilesProjection;
pub use projector::{Projector, ProjectorHandle, reset_projection};
pub use sessions::SessionsProjection;
pub use verifications::VerificationsProjection;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

/// A point in the event stream: the writing transaction's id, then the event's identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamPosition {
    pub transaction_id: i64,
    pub global_position: i64,
}

/// One event as read from the stream, with its personal fields opened where a key exists.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub position: StreamPosition,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

/// Opens the sealed fields of an event read from the table.
#[async_trait]
pub trait EventOpener: Send + Sync {
    async fn open(&self, event: &mut StoredEvent) -> anyhow::Result<()>;
}

/// A read model built from the event stream.
#[async_trait]
pub trait Projection: Send + Sync {
    /// Stable name, used as the checkpoint key and by `replay`.
    fn name(&self) -> &'static str;

    /// Applies one event inside the batch transaction. Events of other aggregates are ignored.
    async fn apply(&self, connection: &mut PgConnection, event: &StoredEvent)
    -> anyhow::Result<()>;

    /// Deletes every row of the read model, before a replay.
    async fn reset(&self, connection: &mut PgConnection) -> anyhow::Result<()>;
}
