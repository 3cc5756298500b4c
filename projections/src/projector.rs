//! The checkpointed projector: reads the stream after the projections' checkpoints, applies a
//! batch to every projection that has not seen it and moves their checkpoints in one
//! transaction, and publishes how far each projection got.
//!
//! One task serves every projection, so that a batch costs one transaction however many read
//! models there are. Each projection keeps its own checkpoint. A projection that is behind
//! (reset for a replay, or new) or that failed in a shared batch runs in batches of its own
//! until it has caught up, so it never delays the others.
//!
//! Identity values are taken at insert, not at commit, so a transaction that commits late can
//! hold a lower `global_position` than one already read. The projector therefore reads in
//! `(transaction_id, global_position)` order and only rows whose transaction id is below the
//! snapshot's xmin, which are all finished.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgListener, PgRow};
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{EventOpener, Projection, StoredEvent, StreamPosition};

/// Channel the events table's trigger notifies on every insert.
pub const EVENTS_CHANNEL: &str = "ledger_events";

const BATCH_SIZE: i64 = 500;
/// Prefix of the advisory lock key of each projection, which a batch or a reset holds for the
/// projections it writes, so that instances never apply events to one projection at once.
const PROJECTION_LOCK_PREFIX: &str = "projector:";
/// Wait before reading again when finished events are held back by an older open transaction.
const HELD_BACK_RETRY: Duration = Duration::from_millis(2);
/// Wait before retrying a batch that failed.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Builds the projector for a set of projections.
pub struct Projector {
    pool: PgPool,
    opener: Arc<dyn EventOpener>,
    projections: Vec<Arc<dyn Projection>>,
    poll_interval: Duration,
}

/// Handle to a running projector: the published positions and the tasks to wait for.
#[derive(Clone)]
pub struct ProjectorHandle {
    positions: Arc<HashMap<&'static str, Published>>,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

/// What a batch found, which decides how soon the next one runs.
enum Progress {
    /// The batch was full, so more events are probably waiting: read again at once.
    FullBatch,
    /// Newer events exist but their transactions were still open: read again shortly.
    HeldBack,
    /// Everything committed is applied: wait for a notification or the poll interval.
    CaughtUp,
}

impl Projector {
    pub fn new(
        pool: PgPool,
        opener: Arc<dyn EventOpener>,
        projections: Vec<Arc<dyn Projection>>,
        poll_interval: Duration,
    ) -> Self {
        Self {
            pool,
            opener,
            projections,
            poll_interval,
        }
    }

    /// Starts the task that applies events and the one that listens for new events, both
    /// ending when `shutdown` is cancelled. A batch under way commits before its task ends.
    pub async fn spawn(self, shutdown: CancellationToken) -> anyhow::Result<ProjectorHandle> {
        let mut positions = HashMap::new();
        let mut projections = Vec::new();

        for projection in self.projections {
            ensure_checkpoint(&self.pool, projection.name()).await?;
            let start = read_checkpoint(&self.pool, projection.name()).await?;
            let (sender, receiver) = watch::channel(start);
            let behind = Arc::new(AtomicBool::new(false));
            positions.insert(
                projection.name(),
                Published {
                    position: receiver,
                    behind: behind.clone(),
                },
            );
            projections.push(Follower {
                projection,
                sender,
                behind,
                isolated: false,
                retry_at: None,
                mark_pending: false,
            });
        }

        let waker = Arc::new(Notify::new());
        let worker = Worker {
            pool: self.pool.clone(),
            opener: self.opener.clone(),
            projections,
            waker: waker.clone(),
            poll_interval: self.poll_interval,
        };
        let span = tracing::info_span!("projector");
        let mut tasks = vec![tokio::spawn(worker.run(shutdown.clone()).instrument(span))];

        let listener = PgListener::connect_with(&self.pool).await?;
        tasks.push(tokio::spawn(listen(listener, waker, shutdown)));

        Ok(ProjectorHandle {
            positions: Arc::new(positions),
            tasks: Arc::new(std::sync::Mutex::new(tasks)),
        })
    }
}

impl ProjectorHandle {
    /// Follows how far one projection has got, for work that runs after it commits.
    pub fn progress(&self, projection: &str) -> Option<watch::Receiver<StreamPosition>> {
        self.positions
            .get(projection)
            .map(|published| published.position.clone())
    }

    /// Waits until every projection that is keeping up has passed `target`, or until
    /// `timeout`. Returns whether all of them got there. A projection behind the others
    /// (being rebuilt, or failing) is not waited for, so that it does not slow every command.
    pub async fn wait_for(&self, target: StreamPosition, timeout: Duration) -> bool {
        self.wait_until(target, timeout, false).await
    }

    async fn wait_until(
        &self,
        target: StreamPosition,
        timeout: Duration,
        include_behind: bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        for published in self.positions.values() {
            let mut receiver = published.position.clone();
            let behind = &published.behind;
            let reached = tokio::time::timeout_at(
                deadline,
                receiver.wait_for(|position| {
                    *position >= target || (!include_behind && behind.load(Ordering::Acquire))
                }),
            )
            .await;
            if !matches!(reached, Ok(Ok(_))) {
                return false;
            }
        }
        true
    }

    /// Waits until every projection has applied the newest event committed before the call, or
    /// until `timeout`. Returns whether all of them got there.
    pub async fn catch_up(&self, pool: &PgPool, timeout: Duration) -> Result<bool, sqlx::Error> {
        let head = sqlx::query_as::<_, (i64, i64)>(
            "SELECT transaction_id::text::bigint, global_position FROM events
              ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
        )
        .fetch_optional(pool)
        .await?;
        let Some((transaction_id, global_position)) = head else {
            return Ok(true);
        };
        let target = StreamPosition {
            transaction_id,
            global_position,
        };
        Ok(self.wait_until(target, timeout, true).await)
    }

    /// The position each projection has reached.
    pub fn positions(&self) -> HashMap<&'static str, StreamPosition> {
        self.positions
            .iter()
            .map(|(name, published)| (*name, *published.position.borrow()))
            .collect()
    }

    /// Waits for every task to end after shutdown was requested.
    pub async fn join(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "projector task failed");
            }
        }
    }
}

async fn listen(mut listener: PgListener, waker: Arc<Notify>, shutdown: CancellationToken) {
    if let Err(error) = listener.listen(EVENTS_CHANNEL).await {
        tracing::warn!(%error, "LISTEN failed; projectors fall back to polling");
        return;
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            notification = listener.recv() => match notification {
                Ok(_) => waker.notify_one(),
                Err(error) => {
                    tracing::warn!(%error, "event notification stream failed; reconnecting");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            },
        }
    }
}

/// The published state of one projection, as the handle reads it.
struct Published {
    position: watch::Receiver<StreamPosition>,
    /// Set while the projection runs behind the others, alone.
    behind: Arc<AtomicBool>,
}

/// A projection, the channel that publishes its checkpoint, and whether it runs on its own.
struct Follower {
    projection: Arc<dyn Projection>,
    sender: watch::Sender<StreamPosition>,
    behind: Arc<AtomicBool>,
    /// Set after the projection failed inside a shared batch, so that it is retried alone and
    /// its failure no longer rolls back the others. Cleared by its next successful batch.
    isolated: bool,
    /// Earliest time a projection whose own batch failed is tried again.
    retry_at: Option<Instant>,
    /// Set when the projection was isolated and the database does not have it marked
    /// incomplete yet, so that the marking is tried again every round until it succeeds.
    mark_pending: bool,
}

impl Follower {
    /// Records whether the projection runs behind the others. Waiters are woken when it falls
    /// behind, so that a command stops waiting for it.
    fn mark_behind(&self, behind: bool) {
        if self.behind.swap(behind, Ordering::AcqRel) != behind && behind {
            self.sender.send_modify(|_| {});
        }
    }
}

/// The projections one batch applies.
#[derive(Clone, Copy)]
enum Group {
    /// Every projection at the furthest checkpoint that is not isolated: the common case, one
    /// transaction for all read models.
    Leaders,
    /// One projection behind the leaders (rebuilt by `replay`, added by an upgrade, or
    /// isolated after a failure), in a transaction of its own so that it never delays the others.
    Alone(usize),
}

struct Batch {
    progress: Progress,
    /// Projections the batch left out because they are behind or isolated.
    lagging: Vec<usize>,
}

/// A failed batch, and the projection whose `apply` failed when one did.
struct BatchError {
    projection: Option<usize>,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for BatchError {
    fn from(error: E) -> Self {
        Self {
            projection: None,
            error: error.into(),
        }
    }
}

impl Progress {
    fn pause(&self, poll_interval: Duration) -> Duration {
        match self {
            Self::FullBatch => Duration::ZERO,
            Self::HeldBack => HELD_BACK_RETRY,
            Self::CaughtUp => poll_interval,
        }
    }
}

struct Worker {
    pool: PgPool,
    opener: Arc<dyn EventOpener>,
    projections: Vec<Follower>,
    waker: Arc<Notify>,
    poll_interval: Duration,
}

impl Worker {
    async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(projections = self.projections.len(), "projector started");
        while !shutdown.is_cancelled() {
            let pause = self.run_round().await;
            if pause.is_zero() {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.waker.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!("projector stopped");
    }

    /// Runs the leaders' batch, then one batch for each projection behind them, and returns
    /// how long to wait before the next round.
    async fn run_round(&mut self) -> Duration {
        for follower in self
            .projections
            .iter_mut()
            .filter(|follower| follower.mark_pending)
        {
            let name = follower.projection.name();
            match mark_incomplete(&self.pool, name).await {
                Ok(()) => follower.mark_pending = false,
                Err(error) => {
                    tracing::error!(projection = name, %error, "failed to mark a projection incomplete");
                }
            }
        }
        let (lagging, mut pause) = match self.run_batch(Group::Leaders).await {
            Ok(batch) => {
                for (index, follower) in self.projections.iter().enumerate() {
                    follower.mark_behind(batch.lagging.contains(&index));
                }
                (batch.lagging, batch.progress.pause(self.poll_interval))
            }
            Err(BatchError {
                projection: Some(index),
                error,
            }) => {
                let follower = &mut self.projections[index];
                tracing::error!(
                    projection = follower.projection.name(),
                    error = format!("{error:#}"),
                    "projection failed in a shared batch; retrying it on its own"
                );
                follower.isolated = true;
                follower.mark_behind(true);
                follower.mark_pending = true;
                return Duration::ZERO;
            }
            Err(BatchError { error, .. }) => {
                tracing::error!(error = format!("{error:#}"), "projector batch failed");
                return ERROR_BACKOFF;
            }
        };

        for index in lagging {
            let now = Instant::now();
            if let Some(retry_at) = self.projections[index].retry_at.filter(|at| *at > now) {
                pause = pause.min(retry_at - now);
                continue;
            }
            let outcome = self.run_batch(Group::Alone(index)).await;
            let follower = &mut self.projections[index];
            match outcome {
                Ok(batch) => {
                    follower.isolated = false;
                    follower.retry_at = None;
                    pause = pause.min(batch.progress.pause(self.poll_interval));
                }
                Err(BatchError { error, .. }) => {
                    tracing::error!(
                        projection = follower.projection.name(),
                        error = format!("{error:#}"),
                        "projection batch failed"
                    );
                    follower.retry_at = Some(now + ERROR_BACKOFF);
                    pause = pause.min(ERROR_BACKOFF);
                }
            }
        }
        pause
    }

    fn names(&self) -> Vec<&'static str> {
        self.projections
            .iter()
            .map(|follower| follower.projection.name())
            .collect()
    }

    /// Applies the next events to the projections of `group` and moves their checkpoints, all
    /// in one transaction.
    async fn run_batch(&self, group: Group) -> Result<Batch, BatchError> {
        let mut transaction = self.pool.begin().await?;

        let names = self.names();
        let (members, lagging) =
            self.split(group, &read_checkpoints(&mut transaction, &names).await?.0);
        if members.is_empty() {
            transaction.commit().await?;
            return Ok(Batch {
                progress: Progress::CaughtUp,
                lagging,
            });
        }
        // The events are already durable, and the batch's read-model rows and checkpoints
        // commit or vanish together, so a batch lost in a crash is applied again on restart.
        // The commit therefore does not wait for its WAL flush.
        sqlx::query("SELECT set_config('synchronous_commit', 'off', true)")
            .execute(&mut *transaction)
            .await?;
        // Another instance's batch for any of these projections holds their locks until it
        // commits, so the checkpoints are read again once this one holds them.
        let member_names: Vec<&str> = members.iter().map(|index| names[*index]).collect();
        lock_projections(&mut transaction, &member_names).await?;
        let (checkpoints, incomplete) = read_checkpoints(&mut transaction, &names).await?;
        // How far the projections that hold the whole history got. An incomplete projection
        // is complete again once it has passed that point. A projection set aside after a
        // failure counts as incomplete here even before the database has its mark.
        let complete_head = (0..names.len())
            .filter(|index| {
                let follower = &self.projections[*index];
                !incomplete[*index] && !follower.isolated && !follower.mark_pending
            })
            .map(|index| checkpoints[index])
            .max();
        let from = members
            .iter()
            .map(|index| checkpoints[*index])
            .min()
            .unwrap_or_default();

        // Rows at or above the snapshot's xmin may follow a transaction that is still open and
        // will commit a lower position, so reading stops at the first of them.
        let rows = sqlx::query(
            "SELECT transaction_id::text::bigint AS transaction_id, global_position,
                    aggregate_type, aggregate_id, sequence, event_type, event_version,
                    payload, metadata, recorded_at,
                    transaction_id < pg_snapshot_xmin(pg_current_snapshot()) AS finished
               FROM events
              WHERE (transaction_id, global_position) > ($1::bigint::text::xid8, $2)
              ORDER BY transaction_id, global_position
              LIMIT $3",
        )
        .bind(from.transaction_id)
        .bind(from.global_position)
        .bind(BATCH_SIZE)
        .fetch_all(&mut *transaction)
        .await?;
        let mut full_batch = rows.len() as i64 == BATCH_SIZE;

        // A projection catching up alone stops at the furthest checkpoint of the others, so
        // that it lands on it and shares their batches from then on.
        let limit = match group {
            Group::Leaders => None,
            Group::Alone(index) => checkpoints
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != index)
                .map(|(_, position)| *position)
                .max()
                .filter(|head| *head > checkpoints[index]),
        };
        let mut reached = checkpoints.clone();
        let mut held_back = false;
        let mut stopped_at_limit = false;
        for row in rows {
            let position = StreamPosition {
                transaction_id: row.try_get("transaction_id")?,
                global_position: row.try_get("global_position")?,
            };
            if limit.is_some_and(|limit| position > limit) {
                full_batch = false;
                stopped_at_limit = true;
                break;
            }
            if !row.try_get::<bool, _>("finished")? {
                held_back = true;
                break;
            }
            let mut event = stored_event(&row)?;
            self.opener.open(&mut event).await?;
            for &index in &members {
                if event.position > reached[index] {
                    self.projections[index]
                        .projection
                        .apply(&mut transaction, &event)
                        .await
                        .map_err(|error| BatchError {
                            projection: Some(index),
                            error,
                        })?;
                    reached[index] = event.position;
                }
            }
        }

        // When every projection is incomplete (all of them replayed), they are complete again
        // once a batch has read to the end of the finished events.
        let at_end = !full_batch && !held_back && !stopped_at_limit;
        let level: Vec<&str> = members
            .iter()
            .filter(|index| incomplete[**index])
            .filter(|index| complete_head.map_or(at_end, |head| reached[**index] >= head))
            .map(|index| names[*index])
            .collect();
        mark_complete(&mut transaction, &level).await?;

        let moved: Vec<(&'static str, StreamPosition)> = members
            .iter()
            .filter(|index| reached[**index] > checkpoints[**index])
            .map(|index| (self.projections[*index].projection.name(), reached[*index]))
            .collect();
        write_checkpoints(&mut transaction, &moved).await?;
        transaction.commit().await?;

        if let Some((_, last)) = moved.last() {
            tracing::debug!(
                transaction_id = last.transaction_id,
                global_position = last.global_position,
                projections = moved.len(),
                "checkpoints moved"
            );
        }
        for (follower, position) in self.projections.iter().zip(reached) {
            follower
                .sender
                .send_if_modified(|published| advance(published, position));
        }
        let progress = if held_back {
            Progress::HeldBack
        } else if full_batch {
            Progress::FullBatch
        } else {
            Progress::CaughtUp
        };
        Ok(Batch { progress, lagging })
    }

    /// Splits the projections into the members of `group` and, for the leaders, those left
    /// behind.
    fn split(&self, group: Group, checkpoints: &[StreamPosition]) -> (Vec<usize>, Vec<usize>) {
        match group {
            Group::Alone(index) => (vec![index], Vec::new()),
            Group::Leaders => {
                let head = checkpoints.iter().max().copied().unwrap_or_default();
                (0..self.projections.len()).partition(|index| {
                    !self.projections[*index].isolated && checkpoints[*index] == head
                })
            }
        }
    }
}

fn advance(position: &mut StreamPosition, reached: StreamPosition) -> bool {
    if reached > *position {
        *position = reached;
        true
    } else {
        false
    }
}

fn stored_event(row: &PgRow) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        position: StreamPosition {
            transaction_id: row.try_get("transaction_id")?,
            global_position: row.try_get("global_position")?,
        },
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get::<Value, _>("payload")?,
        metadata: row.try_get::<Value, _>("metadata")?,
        recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
    })
}

/// Adds the checkpoint of a projection seen for the first time. Unless the history is empty, it
/// is marked incomplete until it has caught up.
async fn ensure_checkpoint(pool: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, incomplete)
         SELECT $1, EXISTS (SELECT 1 FROM events)
         ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .execute(pool)
    .await?;
    Ok(())
}

async fn read_checkpoint<'e, E>(executor: E, name: &str) -> Result<StreamPosition, sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    let row = sqlx::query(
        "SELECT transaction_id::text::bigint AS transaction_id, global_position
           FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(name)
    .fetch_optional(executor)
    .await?;
    match row {
        Some(row) => Ok(StreamPosition {
            transaction_id: row.try_get("transaction_id")?,
            global_position: row.try_get("global_position")?,
        }),
        None => Ok(StreamPosition::default()),
    }
}

/// Reads the checkpoints of `names`, in the same order, and whether each is incomplete.
async fn read_checkpoints(
    connection: &mut PgConnection,
    names: &[&'static str],
) -> Result<(Vec<StreamPosition>, Vec<bool>), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT projection, transaction_id::text::bigint AS transaction_id, global_position,
                incomplete
           FROM projection_checkpoints WHERE projection = ANY($1)",
    )
    .bind(names)
    .fetch_all(&mut *connection)
    .await?;

    let mut found = HashMap::new();
    for row in rows {
        let position = StreamPosition {
            transaction_id: row.try_get("transaction_id")?,
            global_position: row.try_get("global_position")?,
        };
        let incomplete: bool = row.try_get("incomplete")?;
        found.insert(
            row.try_get::<String, _>("projection")?,
            (position, incomplete),
        );
    }
    Ok(names
        .iter()
        .map(|name| found.get(*name).copied().unwrap_or_default())
        .unzip())
}

/// Takes the advisory locks of `names` for the rest of the transaction, in sorted order so
/// that two instances locking overlapping sets cannot deadlock.
async fn lock_projections(
    connection: &mut PgConnection,
    names: &[&str],
) -> Result<(), sqlx::Error> {
    // PostgreSQL's planner does not merge a subquery that has an ORDER BY into the outer query,
    // so the outer select list, and with it each lock, is evaluated row by row in that order.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended($2 || name, 0))
           FROM (SELECT name FROM unnest($1::text[]) AS name ORDER BY name) AS sorted",
    )
    .bind(names)
    .bind(PROJECTION_LOCK_PREFIX)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Marks a projection that stopped at an event it failed to apply, so that credential checks
/// stop trusting it until it has caught up.
async fn mark_incomplete(pool: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE projection_checkpoints SET incomplete = true WHERE projection = $1")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

/// Clears the incomplete mark of projections that have caught up with the others.
async fn mark_complete(connection: &mut PgConnection, names: &[&str]) -> Result<(), sqlx::Error> {
    if names.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE projection_checkpoints SET incomplete = false WHERE projection = ANY($1)")
        .bind(names)
        .execute(&mut *connection)
        .await?;
    for name in names {
        tracing::info!(projection = name, "projection caught up with the others");
    }
    Ok(())
}

/// Moves the checkpoints of the projections in `moved` in one statement.
async fn write_checkpoints(
    connection: &mut PgConnection,
    moved: &[(&'static str, StreamPosition)],
) -> Result<(), sqlx::Error> {
    if moved.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = moved.iter().map(|(name, _)| *name).collect();
    let transaction_ids: Vec<i64> = moved.iter().map(|(_, at)| at.transaction_id).collect();
    let global_positions: Vec<i64> = moved.iter().map(|(_, at)| at.global_position).collect();
    sqlx::query(
        "UPDATE projection_checkpoints AS checkpoint
            SET transaction_id = moved.transaction_id::text::xid8,
                global_position = moved.global_position, updated_at = now()
           FROM unnest($1::text[], $2::bigint[], $3::bigint[])
                AS moved (projection, transaction_id, global_position)
          WHERE checkpoint.projection = moved.projection",
    )
    .bind(names)
    .bind(transaction_ids)
    .bind(global_positions)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Empties a projection's tables, rewinds its checkpoint and marks it incomplete, so that
/// a running projector rebuilds it from the first event and the credential checks that read it
/// return 503 until it has caught up.
pub async fn reset_projection(pool: &PgPool, projection: &dyn Projection) -> anyhow::Result<()> {
    let name = projection.name();
    ensure_checkpoint(pool, name).await?;

    let mut transaction = pool.begin().await?;
    lock_projections(&mut transaction, &[name]).await?;
    projection.reset(&mut transaction).await?;
    sqlx::query(
        "UPDATE projection_checkpoints
            SET transaction_id = '0', global_position = 0, incomplete = true, updated_at = now()
          WHERE projection = $1",
    )
    .bind(name)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(())
}
