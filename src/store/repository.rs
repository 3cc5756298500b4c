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

use super::{KeyRing, PERSONAL_METADATA_KEYS, SUBJECT_METADATA_KEY};

pub struct SealingRepository {
    inner: PostgresEventRepository,
    keys: Arc<KeyRing>,
}

impl SealingRepository {
    pub fn new(inner: PostgresEventRepository, keys: Arc<KeyRing>) -> Self {
        Self { inner, keys }
    }

    async fn open_all(
        &self,
        mut events: Vec<SerializedEvent>,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        for event in &mut events {
            let subject = event_subject(&event.aggregate_id, &event.metadata);
            let key = self.keys.key_for_read(&subject).await.map_err(unknown)?;
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
        self.open_all(events).await
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
        self.open_all(events).await
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
