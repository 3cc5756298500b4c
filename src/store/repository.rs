//! A `PersistedEventRepository` around postgres-es that seals personal fields on the way in
//! and opens them on the way out, so that the events table never holds them in plaintext.

use std::sync::Arc;

use aggregates::sealing::{self, DataKey, SealError};
use cqrs_es::Aggregate;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::{PgPool, Row};

use super::{KeyRing, PERSONAL_METADATA_KEYS, SUBJECT_METADATA_KEY};

pub struct SealingRepository {
    inner: PostgresEventRepository,
    keys: Arc<KeyRing>,
}

impl SealingRepository {
    pub fn new(inner: PostgresEventRepository, keys: Arc<KeyRing>) -> Self {
        Self { inner, keys }
    }

    /// Returns the key ring that seals and opens this repository's events.
    pub fn keys(&self) -> Arc<KeyRing> {
        self.keys.clone()
    }
}

/// Opens the sealed fields of events read from the table, each with its subject's key.
async fn open_all(
    keys: &KeyRing,
    mut events: Vec<SerializedEvent>,
) -> Result<Vec<SerializedEvent>, PersistenceError> {
    for event in &mut events {
        let subject = event_subject(&event.aggregate_id, &event.metadata);
        let key = keys.key_for_read(&subject).await.map_err(unknown)?;
        open_event(
            &mut event.payload,
            &mut event.metadata,
            key.as_ref(),
            &subject,
        )
        .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))?;
    }
    Ok(events)
}

/// Reads the events of one aggregate with a sequence above `after`, in order, and opens them.
/// Unlike postgres-es's `get_last_events`, the sequence is a bound parameter, so the statement
/// is prepared once.
pub(crate) async fn events_after<A: Aggregate>(
    pool: &PgPool,
    keys: &KeyRing,
    aggregate_id: &str,
    after: usize,
) -> Result<Vec<SerializedEvent>, PersistenceError> {
    let rows = sqlx::query(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                metadata
           FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
          ORDER BY sequence",
    )
    .bind(A::TYPE)
    .bind(aggregate_id)
    .bind(after as i64)
    .fetch_all(pool)
    .await
    // Kept as the sqlx error, so that the command bus can tell an unreachable database.
    .map_err(|error| PersistenceError::UnknownError(Box::new(error)))?;

    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let read = |error: sqlx::Error| PersistenceError::DeserializationError(Box::new(error));
        events.push(SerializedEvent {
            aggregate_type: row.try_get("aggregate_type").map_err(read)?,
            aggregate_id: row.try_get("aggregate_id").map_err(read)?,
            sequence: row.try_get::<i64, _>("sequence").map_err(read)? as usize,
            event_type: row.try_get("event_type").map_err(read)?,
            event_version: row.try_get("event_version").map_err(read)?,
            payload: row.try_get("payload").map_err(read)?,
            metadata: row.try_get("metadata").map_err(read)?,
        });
    }
    open_all(keys, events).await
}

/// The subject whose key seals an event: the `subject` metadata entry, else the aggregate.
pub(crate) fn event_subject(aggregate_id: &str, metadata: &Value) -> String {
    metadata
        .get(SUBJECT_METADATA_KEY)
        .and_then(Value::as_str)
        .unwrap_or(aggregate_id)
        .to_owned()
}

pub(crate) fn seal_event(payload: &mut Value, metadata: &mut Value, key: &DataKey, subject: &str) {
    sealing::seal_fields(payload, key, subject.as_bytes());
    for name in PERSONAL_METADATA_KEYS {
        if let Some(Value::String(text)) = metadata.get_mut(name) {
            *text = sealing::seal_string(text, key, subject.as_bytes());
        }
    }
}

pub(crate) fn open_event(
    payload: &mut Value,
    metadata: &mut Value,
    key: Option<&DataKey>,
    subject: &str,
) -> Result<(), SealError> {
    sealing::open_fields(payload, key, subject.as_bytes())?;
    for name in PERSONAL_METADATA_KEYS {
        if let Some(Value::String(text)) = metadata.get_mut(name) {
            *text = sealing::open_string(text, key, subject.as_bytes())?;
        }
    }
    Ok(())
}

fn unknown(error: anyhow::Error) -> PersistenceError {
    PersistenceError::UnknownError(error.into())
}

impl PersistedEventRepository for SealingRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self.inner.get_events::<A>(aggregate_id).await?;
        open_all(&self.keys, events).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self
            .inner
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await?;
        open_all(&self.keys, events).await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        // Aggregates are always folded from their events: the snapshot modes of cqrs-es 0.5
        // apply new events twice before saving the snapshot.
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            return Err(unknown(anyhow::anyhow!("snapshots are not supported")));
        }
        let mut sealed = events.to_vec();
        for event in &mut sealed {
            let subject = event_subject(&event.aggregate_id, &event.metadata);
            let key = self.keys.key_for_write(&subject).await.map_err(unknown)?;
            seal_event(&mut event.payload, &mut event.metadata, &key, &subject);
        }
        self.inner.persist::<A>(&sealed, None).await
    }

    async fn stream_events<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        Err(unknown(anyhow::anyhow!(
            "streaming replays are not supported; the projector reads the stream"
        )))
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        Err(unknown(anyhow::anyhow!(
            "streaming replays are not supported; the projector reads the stream"
        )))
    }
}
