//! Transactional outbox.
//!
//! A service writes its state change and the events it causes in one transaction (the event
//! goes into its own `outbox` table with [`enqueue`], or folded into a larger statement with
//! [`insert_sql_from`] and [`outbox_bind!`]). The relay ([`spawn_relay`], started by the kit for
//! every service that publishes) sends unsent rows to the bus with the event id as message id
//! and marks them sent only after the bus acknowledged them, so a crash at any point re-sends
//! rather than loses; the bus drops re-sends within its de-duplication window and consumers'
//! inboxes ([`crate::consumer`]) drop the rest.
//!
//! The `outbox` table is the kit's (`migrations/kit/`), created in every service's schema.

use std::sync::Arc;
use std::time::Duration;

use agriportal_proto::{Event, Topic};
use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::bus::{Bus, Message};
use crate::storage::{now_ms, Database, Tx};
use crate::telemetry;
use crate::{with_db, with_tx};

/// An event about to be written to the outbox.
#[derive(Clone, Debug)]
pub struct OutboxEvent {
    /// Unique event id; becomes the bus message id.
    pub id: String,
    /// Relative subject, `<service>.<event>`.
    pub subject: String,
    /// Headers as JSON (`[[name, value], …]`), carrying the trace context of the request.
    pub headers: String,
    /// Encoded protobuf event.
    pub payload: Vec<u8>,
    /// When it was written.
    pub created_at_ms: i64,
}

impl OutboxEvent {
    /// `event` on `topic`, with the event's own id as message id, carrying the current span's
    /// trace context.
    pub fn new<M: Event>(topic: &Topic<M>, event: &M) -> Self {
        let headers = serde_json::to_string(&telemetry::current_context_headers())
            .unwrap_or_else(|_| "[]".into());
        OutboxEvent {
            id: event.event_id().to_string(),
            subject: topic.subject().to_string(),
            headers,
            payload: topic.encode(event),
            created_at_ms: now_ms(),
        }
    }
}

/// SQL inserting one outbox row; binds id, subject, headers, payload, created_at_ms.
pub const INSERT_SQL: &str =
    "INSERT INTO outbox (event_id, subject, headers, payload, created_at_ms) VALUES ($1, $2, $3, $4, $5)";

/// [`INSERT_SQL`] with its parameters numbered from `$first`, for a store that folds the outbox
/// row into a larger statement (one round trip instead of two); bind with [`outbox_bind!`].
pub fn insert_sql_from(first: usize) -> String {
    let params: Vec<String> = (first..first + 5).map(|n| format!("${n}")).collect();
    format!(
        "INSERT INTO outbox (event_id, subject, headers, payload, created_at_ms) VALUES ({})",
        params.join(", ")
    )
}

/// Binds an [`OutboxEvent`]'s five values to `$query`, in [`INSERT_SQL`]'s order.
#[macro_export]
macro_rules! outbox_bind {
    ($query:expr, $event:expr) => {{
        let event: &$crate::outbox::OutboxEvent = $event;
        $query
            .bind(&event.id)
            .bind(&event.subject)
            .bind(&event.headers)
            .bind(event.payload.as_slice())
            .bind(event.created_at_ms)
    }};
}

/// Writes `event` inside the caller's transaction; it is published once that commits.
pub async fn enqueue(tx: &mut Tx, event: &OutboxEvent) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        outbox_bind!(sqlx::query(INSERT_SQL), event)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

/// A service's outbox: wakes the relay after a commit that wrote events.
#[derive(Clone, Debug)]
pub struct Outbox {
    wake: Arc<Notify>,
}

impl Outbox {
    /// An outbox nobody relays (tests of a store alone).
    pub fn detached() -> Self {
        Outbox {
            wake: Arc::new(Notify::new()),
        }
    }

    /// Tells the relay that rows were committed, so they leave at once rather than at the next
    /// poll. Call after the commit.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Rows published per relay round.
const RELAY_BATCH: i64 = 256;
/// Sent rows are kept this long (for audit and debugging), then deleted.
const KEEP_SENT_MS: i64 = 24 * 3600 * 1000;

/// Starts the relay of `db`'s outbox to `bus` and returns the handle stores wake it with; the
/// relay also polls, for rows other replicas wrote.
pub fn spawn_relay(
    db: Database,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Outbox {
    let outbox = Outbox::detached();
    let wake = outbox.wake.clone();
    tasks.spawn(async move {
        let mut backoff = Backoff::default();
        let mut last_prune = 0i64;
        loop {
            match relay_once(&db, bus.as_ref()).await {
                Ok(sent) => {
                    backoff.reset();
                    if sent as i64 == RELAY_BATCH {
                        continue;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, schema = %db.schema, "outbox relay failed; will retry");
                    if backoff.wait(&shutdown).await {
                        break;
                    }
                    continue;
                }
            }
            if now_ms() - last_prune > 60_000 {
                last_prune = now_ms();
                if let Err(err) = prune(&db, &shutdown).await {
                    tracing::warn!(error = %err, "outbox prune failed");
                }
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    });
    outbox
}

/// An unsent outbox row.
#[derive(sqlx::FromRow)]
struct Unsent {
    seq: i64,
    event_id: String,
    subject: String,
    headers: String,
    payload: Vec<u8>,
}

/// Publishes one round of unsent rows; returns how many were sent.
async fn relay_once(db: &Database, bus: &dyn Bus) -> anyhow::Result<usize> {
    const SELECT: &str = "SELECT seq, event_id, subject, headers, payload FROM outbox \
                          WHERE sent_at_ms IS NULL ORDER BY seq LIMIT $1";
    // PostgreSQL: the rows stay locked while they are published, so replicas never publish the
    // same rows at once (SKIP LOCKED lets each take other rows). SQLite: read first and take
    // the writer lock only to mark them sent, so writers of the service never wait for the
    // bus's round trips; one relay per process is the only publisher of the file.
    let mut locked = None;
    let rows: Vec<Unsent> = if db.is_postgres() {
        let mut tx = db.begin().await?;
        let sql = format!("{SELECT} FOR UPDATE SKIP LOCKED");
        let rows = with_tx!(&mut tx, |conn| {
            sqlx::query_as(&sql)
                .bind(RELAY_BATCH)
                .fetch_all(&mut *conn)
                .await?
        });
        locked = Some(tx);
        rows
    } else {
        with_db!(&db.pool, |pool| {
            sqlx::query_as(SELECT)
                .bind(RELAY_BATCH)
                .fetch_all(pool)
                .await?
        })
    };
    if rows.is_empty() {
        return Ok(0);
    }
    let messages: Vec<(i64, Message)> = rows
        .into_iter()
        .map(|row| {
            let message = Message {
                subject: row.subject,
                id: row.event_id,
                headers: serde_json::from_str(&row.headers).unwrap_or_default(),
                payload: Bytes::from(row.payload),
            };
            (row.seq, message)
        })
        .collect();
    // The whole round's publishes are in flight at once (at most RELAY_BATCH: the window),
    // each awaiting its own ack, and the acked rows are then marked sent in one statement.
    // Why no event can be lost: a row is marked sent only once the bus acknowledged storing
    // its message, and rows whose publish failed (or were never confirmed, or acked after a
    // crash before the mark committed) stay unsent and go again next round under the same
    // message id, which the bus de-duplicates and consumers' inboxes drop. Marking exactly the
    // acked rows, not a prefix, lets later rows pass one that failed: consumers never rely on
    // the order (their effects commute and carry previous values, ARCHITECTURE.md §8).
    let results = bus
        .publish_all(messages.iter().map(|(_, m)| m.clone()).collect())
        .await;
    let mut sent = Vec::new();
    let mut failure = None;
    for ((seq, _), result) in messages.iter().zip(results) {
        match result {
            Ok(_) => sent.push(*seq),
            Err(err) => failure = Some(err),
        }
    }
    let now = now_ms();
    let mut tx = match locked {
        Some(tx) => tx,
        None => db.begin().await?,
    };
    for chunk in sent.chunks(500) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "UPDATE outbox SET sent_at_ms = $1 WHERE seq IN ({})",
            placeholders.join(",")
        );
        with_tx!(&mut tx, |conn| {
            let mut query = sqlx::query(&sql).bind(now);
            for seq in chunk {
                query = query.bind(*seq);
            }
            query.execute(&mut *conn).await?;
        });
    }
    tx.commit().await?;
    if let Some(err) = failure {
        count_publish_failure(&err);
        return Err(err.into());
    }
    Ok(sent.len())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, crate::metrics::EncodeLabelSet)]
struct FailureLabels {
    reason: &'static str,
}

/// Counts a relay round that failed to publish (metric `agriportal_outbox_publish_failures`,
/// by reason): `stream_full` is what the `AgriportalEventStreamFull` alert watches.
fn count_publish_failure(err: &crate::bus::BusError) {
    use crate::bus::BusError;
    static FAILURES: std::sync::OnceLock<
        crate::metrics::Family<FailureLabels, crate::metrics::Counter>,
    > = std::sync::OnceLock::new();
    let reason = match err {
        BusError::Full(_) => "stream_full",
        BusError::Unavailable(_) => "unavailable",
        BusError::Other(_) => "refused",
    };
    FAILURES
        .get_or_init(|| {
            crate::metrics::counter_family(
                "agriportal_outbox_publish_failures",
                "Outbox relay rounds whose publishing failed (the rows stay and are retried), by reason",
            )
        })
        .get_or_create(&FailureLabels { reason })
        .inc();
}

/// Sent rows, once older than [`KEEP_SENT_MS`]: unsent rows have no `sent_at_ms`, and `NULL <
/// cutoff` is never true, so they are never pruned.
const SENT: crate::retention::Prune = crate::retention::Prune {
    table: "outbox",
    key: "seq",
    time_column: "sent_at_ms",
};

/// Deletes sent rows past their keeping time, [`crate::retention::PRUNE_BATCH_ROWS`] per
/// statement: a day of a busy partner's events in one DELETE would hold the outbox's locks
/// (and the relay, and every push writing to it) for as long as it takes.
async fn prune(db: &Database, shutdown: &CancellationToken) -> crate::Result<u64> {
    SENT.all(
        db,
        now_ms() - KEEP_SENT_MS,
        crate::retention::PRUNE_BATCH_ROWS,
        shutdown,
    )
    .await
}

/// Number of outbox rows not yet published (for metrics, reconciliation and tests).
pub async fn pending(db: &Database) -> Result<i64, sqlx::Error> {
    Ok(with_db!(&db.pool, |pool| {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL")
            .fetch_one(pool)
            .await?
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream at its `max_bytes` refuses what does not fit; the relay marks sent only what the
    /// stream stored and keeps the other rows for its next round.
    #[tokio::test]
    async fn a_full_stream_leaves_the_rows_unsent() {
        use crate::bus::{stream_name, BusError, JetStreamBus};
        let Some(url) = crate::testing::nats_url("relay_full_stream").await else {
            return;
        };
        let prefix = crate::testing::unique_prefix("relayfull");
        let bus = JetStreamBus::connect(&url, &prefix, 1, 4096).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect(&crate::Config::embedded(dir.path()), "relay")
            .await
            .unwrap();
        db.migrate(&crate::storage::Migrations::kit_only())
            .await
            .unwrap();
        for i in 0..20 {
            with_db!(&db.pool, |pool| {
                sqlx::query(
                    "INSERT INTO outbox (event_id, subject, headers, payload, created_at_ms) \
                     VALUES ($1, 'test.full', '[]', $2, 0)",
                )
                .bind(format!("event-{i}"))
                .bind(vec![7u8; 512])
                .execute(pool)
                .await
                .unwrap();
            });
        }
        let err = relay_once(&db, bus.as_ref()).await.unwrap_err();
        assert!(
            matches!(err.downcast_ref::<BusError>(), Some(BusError::Full(_))),
            "{err:#}"
        );
        let left = pending(&db).await.unwrap();
        assert!(left > 0 && left < 20, "{left} rows left unsent");
        // What is marked sent is exactly what the stream holds.
        let client = async_nats::connect(url.as_str()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(stream_name(&prefix)).await.unwrap();
        let stored = stream.info().await.unwrap().state.messages;
        assert_eq!(stored, u64::try_from(20 - left).unwrap());
        // Still full: the next round sends nothing and keeps every row.
        assert!(relay_once(&db, bus.as_ref()).await.is_err());
        assert_eq!(pending(&db).await.unwrap(), left);
        js.delete_stream(stream_name(&prefix)).await.unwrap();
    }

    /// Sent rows past their keeping time go, in statements of at most a batch; unsent rows
    /// (however old) and recently sent ones stay.
    async fn sent_rows_prune(db: &Database) {
        let old = now_ms() - KEEP_SENT_MS - 60_000;
        let recent = now_ms() - 60_000;
        let batch = crate::retention::PRUNE_BATCH_ROWS;
        let old_sent = 2 * batch + 7;
        for (i, sent) in (0..old_sent)
            .map(|_| Some(old))
            .chain((0..5).map(|_| Some(recent)))
            .chain((0..5).map(|_| None))
            .enumerate()
        {
            with_db!(&db.pool, |pool| {
                sqlx::query(
                    "INSERT INTO outbox (event_id, subject, headers, payload, created_at_ms, sent_at_ms) \
                     VALUES ($1, 'test.prune', '[]', $2, $3, $4)",
                )
                .bind(format!("event-{i}"))
                .bind(vec![1u8; 8])
                .bind(old)
                .bind(sent)
                .execute(pool)
                .await
                .unwrap();
            });
        }
        let shutdown = CancellationToken::new();
        assert_eq!(
            prune(db, &shutdown).await.unwrap(),
            u64::try_from(old_sent).unwrap()
        );
        let (left, unsent): (i64, i64) = with_db!(&db.pool, |pool| {
            sqlx::query_as("SELECT COUNT(*), COUNT(*) - COUNT(sent_at_ms) FROM outbox")
                .fetch_one(pool)
                .await
                .unwrap()
        });
        assert_eq!((left, unsent), (10, 5));
        assert_eq!(prune(db, &shutdown).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn sent_rows_are_pruned_in_batches_on_each_backend() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Database::connect(&crate::Config::embedded(dir.path()), "relay")
            .await
            .unwrap();
        sqlite
            .migrate(&crate::storage::Migrations::kit_only())
            .await
            .unwrap();
        sent_rows_prune(&sqlite).await;
        let Some(url) = crate::testing::fresh_postgres("outbox_prune").await else {
            return;
        };
        let mut config = crate::Config::embedded(dir.path());
        config.database_url = Some(url);
        let postgres = Database::connect(&config, "relay").await.unwrap();
        postgres
            .migrate(&crate::storage::Migrations::kit_only())
            .await
            .unwrap();
        sent_rows_prune(&postgres).await;
    }

    #[test]
    fn renumbered_insert_is_the_same_statement() {
        assert_eq!(insert_sql_from(1), INSERT_SQL);
        assert!(insert_sql_from(9).ends_with("VALUES ($9, $10, $11, $12, $13)"));
    }
}
