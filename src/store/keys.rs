//! Per-subject data keys, stored wrapped by the master key, with an in-memory cache.

use std::collections::HashMap;
use std::sync::Mutex;

use aggregates::sealing::{self, DataKey};
use async_trait::async_trait;
use projections::{EventOpener, StoredEvent};
use sqlx::PgPool;

use super::repository::{event_subject, open_event};
use crate::crypto::derive_key;

/// Upper bound on cached keys; the cache is cleared when it fills.
const CACHE_CAPACITY: usize = 10_000;

pub struct KeyRing {
    pool: PgPool,
    wrapping_key: DataKey,
    cache: Mutex<HashMap<String, DataKey>>,
}

impl KeyRing {
    pub fn new(pool: PgPool, master: &DataKey) -> Self {
        Self {
            pool,
            wrapping_key: derive_key(master, "data-key-wrap/v1"),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, subject: &str) -> Option<DataKey> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(subject)
            .cloned()
    }

    fn remember(&self, subject: &str, key: &DataKey) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(subject.to_owned(), key.clone());
    }

    /// Returns the subject's key, creating it on first use.
    pub async fn key_for_write(&self, subject: &str) -> anyhow::Result<DataKey> {
        if let Some(key) = self.cached(subject) {
            return Ok(key);
        }

        let fresh = DataKey::generate();
        let wrapped: Vec<u8> = sqlx::query_scalar(
            "WITH inserted AS (
                 INSERT INTO data_keys (subject_id, wrapped_key) VALUES ($1, $2)
                 ON CONFLICT (subject_id) DO NOTHING
                 RETURNING wrapped_key)
             SELECT wrapped_key FROM inserted
             UNION ALL
             SELECT wrapped_key FROM data_keys WHERE subject_id = $1
             LIMIT 1",
        )
        .bind(subject)
        .bind(self.wrapping_key.wrap(subject, &fresh))
        .fetch_one(&self.pool)
        .await?;

        let key = self.wrapping_key.unwrap_key(subject, &wrapped)?;
        self.remember(subject, &key);
        Ok(key)
    }

    /// Returns the subject's key, or `None` when it never existed or was destroyed.
    pub async fn key_for_read(&self, subject: &str) -> anyhow::Result<Option<DataKey>> {
        if let Some(key) = self.cached(subject) {
            return Ok(Some(key));
        }
        let wrapped: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT wrapped_key FROM data_keys WHERE subject_id = $1")
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?;
        let Some(wrapped) = wrapped else {
            return Ok(None);
        };
        let key = self.wrapping_key.unwrap_key(subject, &wrapped)?;
        self.remember(subject, &key);
        Ok(Some(key))
    }

    /// Seals `plain` for `subject` outside an event, for read models that keep ciphertext.
    pub async fn seal_string(&self, subject: &str, plain: &str) -> anyhow::Result<String> {
        let key = self.key_for_write(subject).await?;
        Ok(sealing::seal_string(plain, &key, subject.as_bytes()))
    }
}

#[async_trait]
impl EventOpener for KeyRing {
    async fn open(&self, event: &mut StoredEvent) -> anyhow::Result<()> {
        let subject = event_subject(&event.aggregate_id, &event.metadata);
        let key = self.key_for_read(&subject).await?;
        open_event(
            &mut event.payload,
            &mut event.metadata,
            key.as_ref(),
            &subject,
        )?;
        Ok(())
    }
}
