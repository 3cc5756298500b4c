//! Runs commands against aggregates: load, decide, append with metadata, retry on an
//! optimistic-lock conflict, then wait until the projections have applied the new events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};
use projections::{ProjectorHandle, StreamPosition};
use rand::Rng;
use sqlx::PgPool;
use uuid::Uuid;

use super::repository::events_after;
use super::{EMAIL_CLAIMED_SQLSTATE, KeyRing, SUBJECT_METADATA_KEY, SealingRepository};

/// How often a command is tried when another writer appended to the same aggregate first. Each
/// round of a race on one aggregate lets exactly one writer through, so ten parallel requests
/// on one user (one code, one token) all get their real answer instead of a conflict.
const MAX_ATTEMPTS: u32 = 10;

/// Who asked for a command and from where; stored with every event it produces.
#[derive(Clone, Debug)]
pub struct CommandMetadata {
    /// `user:<id>`, `api_key:<id>` or `anonymous`.
    pub actor: String,
    pub request_id: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// Whose data key seals the events, when it is not the aggregate's own id.
    pub subject: Option<Uuid>,
}

impl CommandMetadata {
    fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("actor".to_owned(), self.actor.clone()),
            ("request_id".to_owned(), self.request_id.clone()),
            (
                "command_time".to_owned(),
                Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
        ]);
        if let Some(ip) = &self.client_ip {
            map.insert("client_ip".to_owned(), ip.clone());
        }
        if let Some(agent) = &self.user_agent {
            map.insert("user_agent".to_owned(), agent.clone());
        }
        if let Some(subject) = self.subject {
            map.insert(SUBJECT_METADATA_KEY.to_owned(), subject.to_string());
        }
        map
    }
}

/// What a successful command left behind.
#[derive(Clone, Copy, Debug)]
pub struct CommandOutcome {
    /// The aggregate's version after the command: the sequence of its last event.
    pub version: u64,
    /// Number of events appended; zero when the command changed nothing.
    pub appended: usize,
}

/// Why a command did not produce events.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    #[error(transparent)]
    Rejected(E),
    #[error("the email address is already claimed by another account")]
    EmailClaimed,
    #[error("the aggregate kept changing; gave up after {MAX_ATTEMPTS} attempts")]
    Conflict,
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("the event store failed")]
    Store(#[source] anyhow::Error),
}

/// Upper bound on aggregates kept in memory by one bus; the cache is cleared when it fills.
const CACHE_CAPACITY: usize = 10_000;

pub struct CommandBus<A: Aggregate> {
    store: PersistedEventStore<SealingRepository, A>,
    keys: Arc<KeyRing>,
    /// The last state each aggregate was seen in, with its sequence. Events are never changed
    /// once stored, so a command loads only the events after the cached sequence (any that
    /// another writer or instance appended) instead of the whole stream.
    // NOTE: the cached states contain opened personal fields, as the key ring's cache contains
    // keys. Erasing a user's data key must clear both, or a command could still see old values.
    cache: Mutex<HashMap<String, (A, usize)>>,
    services: A::Services,
    pool: PgPool,
    /// `None` for one-shot command-line use, where no projector runs in the process.
    projector: Option<ProjectorHandle>,
    projection_wait: Duration,
}

impl<A: Aggregate + Clone> CommandBus<A> {
    pub fn new(
        repository: SealingRepository,
        services: A::Services,
        pool: PgPool,
        projector: Option<ProjectorHandle>,
        projection_wait: Duration,
    ) -> Self {
        Self {
            keys: repository.keys(),
            cache: Mutex::new(HashMap::new()),
            store: PersistedEventStore::new_event_store(repository),
            services,
            pool,
            projector,
            projection_wait,
        }
    }

    /// Runs the command built by `command` against `aggregate_id`. The builder runs again for
    /// each retry, because a command is consumed by the attempt.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: impl FnMut() -> A::Command,
        metadata: &CommandMetadata,
    ) -> Result<CommandOutcome, CommandError<A::Error>> {
        self.execute_with_events(aggregate_id, command, metadata)
            .await
            .map(|(outcome, _)| outcome)
    }

    /// Like [`CommandBus::execute`], and also returns the events this command appended, for
    /// callers whose answer depends on which outcome the aggregate recorded.
    pub async fn execute_with_events(
        &self,
        aggregate_id: &str,
        command: impl FnMut() -> A::Command,
        metadata: &CommandMetadata,
    ) -> Result<(CommandOutcome, Vec<A::Event>), CommandError<A::Error>> {
        self.execute_with_state(aggregate_id, command, metadata)
            .await
            .map(|(outcome, events, _)| (outcome, events))
    }

    /// Like [`CommandBus::execute_with_events`], and also returns the aggregate's state after
    /// the command, for responses that cannot wait for a read model.
    pub async fn execute_with_state(
        &self,
        aggregate_id: &str,
        mut command: impl FnMut() -> A::Command,
        metadata: &CommandMetadata,
    ) -> Result<(CommandOutcome, Vec<A::Event>, A), CommandError<A::Error>> {
        let mut attempt = 1;
        loop {
            match self.attempt(aggregate_id, command(), metadata).await {
                Err(CommandError::Conflict) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(aggregate_id, attempt, "optimistic-lock conflict; retrying");
                    let jitter = rand::thread_rng().gen_range(1..=5 * u64::from(attempt));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                    attempt += 1;
                }
                Err(CommandError::Conflict) => {
                    tracing::warn!(aggregate_id, attempt, "command conflicts exhausted retries");
                    return Err(CommandError::Conflict);
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<(CommandOutcome, Vec<A::Event>, A), CommandError<A::Error>> {
        let mut context = self.load(aggregate_id).await?;
        let loaded_version = context.current_sequence as u64;

        // `handle` applies the events it writes to the aggregate, and a rejected command may
        // leave it half changed, so the state to cache is taken before and folded after commit.
        let mut next = context.aggregate.clone();
        let sink = EventSink::<A>::default();
        context
            .aggregate()
            .handle(command, &self.services, &sink)
            .await
            .map_err(CommandError::Rejected)?;
        let events = sink.collect().await;
        if events.is_empty() {
            let outcome = CommandOutcome {
                version: loaded_version,
                appended: 0,
            };
            return Ok((outcome, Vec::new(), next));
        }

        let committed = self
            .store
            .commit(events, context, metadata.to_map())
            .await
            .map_err(classify)?;
        let version = committed
            .last()
            .map_or(loaded_version, |event| event.sequence as u64);
        for event in &committed {
            next.apply(event.payload.clone());
        }
        self.remember(aggregate_id, next.clone(), version as usize);

        self.wait_for_projections(aggregate_id, version).await;
        let outcome = CommandOutcome {
            version,
            appended: committed.len(),
        };
        let events = committed.into_iter().map(|event| event.payload).collect();
        Ok((outcome, events, next))
    }

    /// Loads an aggregate from its cached state and the events stored after it.
    async fn load(
        &self,
        aggregate_id: &str,
    ) -> Result<EventStoreAggregateContext<A>, CommandError<A::Error>> {
        let (mut aggregate, mut sequence) = self
            .lock_cache()
            .get(aggregate_id)
            .cloned()
            .unwrap_or_default();
        let newer = events_after::<A>(&self.pool, &self.keys, aggregate_id, sequence)
            .await
            .map_err(|error| classify(error.into()))?;

        let loaded = !newer.is_empty();
        for serialized in newer {
            let envelope =
                EventEnvelope::<A>::try_from(serialized).map_err(|error| classify(error.into()))?;
            sequence = envelope.sequence;
            aggregate.apply(envelope.payload);
        }
        if loaded {
            self.remember(aggregate_id, aggregate.clone(), sequence);
        }
        Ok(EventStoreAggregateContext {
            aggregate_id: aggregate_id.to_owned(),
            aggregate,
            current_sequence: sequence,
            current_snapshot: None,
        })
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (A, usize)>> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Caches `aggregate` at `sequence`, unless a newer state of it is cached already.
    fn remember(&self, aggregate_id: &str, aggregate: A, sequence: usize) {
        let mut cache = self.lock_cache();
        if cache
            .get(aggregate_id)
            .is_some_and(|(_, cached)| *cached >= sequence)
        {
            return;
        }
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(aggregate_id.to_owned(), (aggregate, sequence));
    }

    /// Holds the response until every projection has applied the event at `version`, so that
    /// the caller's next read sees it. Gives up after the configured wait and logs it.
    async fn wait_for_projections(&self, aggregate_id: &str, version: u64) {
        let Some(projector) = &self.projector else {
            return;
        };
        let position = sqlx::query_as::<_, (i64, i64)>(
            "SELECT transaction_id::text::bigint, global_position FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(version as i64)
        .fetch_one(&self.pool)
        .await;

        let target = match position {
            Ok((transaction_id, global_position)) => StreamPosition {
                transaction_id,
                global_position,
            },
            Err(error) => {
                tracing::warn!(%error, aggregate_id, "could not read the appended event's position");
                return;
            }
        };
        if !projector.wait_for(target, self.projection_wait).await {
            tracing::warn!(
                aggregate_id,
                wait_ms = self.projection_wait.as_millis() as u64,
                "projections did not catch up in time; a read may lag this write"
            );
        }
    }
}

/// Sorts a store failure into a taken email, a retryable conflict, a dead database, or a fault.
fn classify<E: std::error::Error>(error: AggregateError<E>) -> CommandError<E> {
    match error {
        AggregateError::UserError(error) => CommandError::Rejected(error),
        AggregateError::AggregateConflict => CommandError::Conflict,
        AggregateError::DatabaseConnectionError(error) => {
            CommandError::Unavailable(anyhow::anyhow!(error))
        }
        AggregateError::DeserializationError(error) => CommandError::Store(anyhow::anyhow!(error)),
        AggregateError::UnexpectedError(error) => {
            let Some(database) = error.downcast_ref::<sqlx::Error>() else {
                return CommandError::Store(anyhow::anyhow!(error));
            };
            if database
                .as_database_error()
                .and_then(|error| error.code())
                .is_some_and(|code| code == EMAIL_CLAIMED_SQLSTATE)
            {
                return CommandError::EmailClaimed;
            }
            if is_unavailable(database) {
                return CommandError::Unavailable(anyhow::anyhow!(error));
            }
            CommandError::Store(anyhow::anyhow!(error))
        }
    }
}

/// SQLSTATE classes and codes that mean no usable connection: connection exceptions (08),
/// insufficient resources (53), operator intervention (57P), failed authentication (28), and
/// the database missing (3D000) or not accepting connections (55000).
const UNAVAILABLE_SQLSTATES: [&str; 6] = ["08", "53", "57P", "28", "3D000", "55000"];

/// Whether a database error means the database cannot be reached, rather than a bad query.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    ) || error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|code| {
            UNAVAILABLE_SQLSTATES
                .iter()
                .any(|prefix| code.starts_with(prefix))
        })
}
