//! Transactional outbox and idempotent inbox.
//!
//! A service writes its state change and the events it causes in one transaction (the event
//! goes into its own `outbox` table with [`outbox_enqueue!`]). The [`spawn_relay`] task
//! publishes unsent rows to the bus with the event id as message id and marks them sent only
//! after the bus acknowledged them, so a crash at any point re-sends rather than loses; the
//! bus drops re-sends within its de-duplication window and consumers' inboxes drop the rest.
//!
//! Every service that emits events has, in its own migrations, the table
//! `outbox (seq <autoincrement> PRIMARY KEY, event_id TEXT UNIQUE, subject TEXT, headers TEXT,
//! payload <bytes>, created_at_ms BIGINT, sent_at_ms BIGINT NULL)`; every consumer has
//! `inbox (event_id TEXT PRIMARY KEY, applied_at_ms BIGINT)`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{Bus, Message};
use crate::storage::{now_ms, Database};
use crate::telemetry;
use crate::with_db;

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
    /// An event with a fresh id, carrying the current span's trace context.
    pub fn new(id: String, subject: impl Into<String>, payload: Vec<u8>) -> Self {
        let headers = serde_json::to_string(&telemetry::current_context_headers())
            .unwrap_or_else(|_| "[]".into());
        OutboxEvent {
            id,
            subject: subject.into(),
            headers,
            payload,
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

/// SQL recording an event in the inbox; affects no row when it was applied before.
pub const INBOX_SQL: &str =
    "INSERT INTO inbox (event_id, applied_at_ms) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING";

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

/// Writes an [`OutboxEvent`] inside the caller's transaction (`&mut *tx`).
#[macro_export]
macro_rules! outbox_enqueue {
    ($tx:expr, $event:expr) => {{
        $crate::outbox_bind!(sqlx::query($crate::outbox::INSERT_SQL), $event)
            .execute($tx)
            .await
    }};
}

/// Records an event id in the inbox inside the caller's transaction; evaluates to
/// `Ok(true)` when the event is new and must be applied, `Ok(false)` when it was applied before.
#[macro_export]
macro_rules! inbox_claim {
    ($tx:expr, $event_id:expr) => {{
        sqlx::query($crate::outbox::INBOX_SQL)
            .bind($event_id)
            .bind($crate::storage::now_ms())
            .execute($tx)
            .await
            .map(|done| done.rows_affected() == 1)
    }};
}

/// Rows published per relay round.
const RELAY_BATCH: i64 = 256;
/// Longest wait between two relay attempts while the bus or the database is down. Short, so
/// that events flow again within a couple of seconds of an outage ending (the services recover
/// within 10 s of a fault clearing); an attempt costs one query or publish.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Sent rows are kept this long (for audit and debugging), then deleted.
const KEEP_SENT_MS: i64 = 24 * 3600 * 1000;

/// Starts the relay of `db`'s outbox to `bus`. Stores call `wake.notify_one()` after a commit
/// so events leave at once; the relay also polls, for rows other replicas wrote.
pub fn spawn_relay(
    db: Database,
    bus: Arc<dyn Bus>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) {
    tasks.spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut last_prune = 0i64;
        loop {
            match relay_once(&db, bus.as_ref()).await {
                Ok(sent) => {
                    backoff = Duration::from_millis(100);
                    if sent as i64 == RELAY_BATCH {
                        continue;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, schema = %db.schema, "outbox relay failed; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                    continue;
                }
            }
            if now_ms() - last_prune > 60_000 {
                last_prune = now_ms();
                if let Err(err) = prune(&db).await {
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
}

/// Publishes one round of unsent rows; returns how many were sent.
async fn relay_once(db: &Database, bus: &dyn Bus) -> anyhow::Result<usize> {
    // On PostgreSQL the rows stay locked while they are published, so replicas never publish
    // the same rows at once (SKIP LOCKED lets each take other rows).
    let select = if db.is_postgres() {
        "SELECT seq, event_id, subject, headers, payload FROM outbox WHERE sent_at_ms IS NULL \
         ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
    } else {
        "SELECT seq, event_id, subject, headers, payload FROM outbox WHERE sent_at_ms IS NULL ORDER BY seq LIMIT $1"
    };
    with_db!(&db.pool, pool => {
        let mut tx = pool.begin().await?;
        // SQLite reads outside the (deferred, so still empty) transaction: a read snapshot held
        // while publishing would make the later UPDATE fail once a writer committed meanwhile.
        let rows = if db.is_postgres() {
            sqlx::query(select).bind(RELAY_BATCH).fetch_all(&mut *tx).await?
        } else {
            sqlx::query(select).bind(RELAY_BATCH).fetch_all(pool).await?
        };
        if rows.is_empty() {
            return Ok(0);
        }
        let mut messages = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get("seq")?;
            let headers: String = row.try_get("headers")?;
            let payload: Vec<u8> = row.try_get("payload")?;
            messages.push((seq, Message {
                subject: row.try_get("subject")?,
                id: row.try_get("event_id")?,
                headers: serde_json::from_str(&headers).unwrap_or_default(),
                payload: Bytes::from(payload),
            }));
        }
        let results = futures::future::join_all(messages.iter().map(|(_, m)| bus.publish(m.clone()))).await;
        let mut sent = Vec::new();
        let mut failure = None;
        for ((seq, _), result) in messages.iter().zip(results) {
            match result {
                Ok(_) => sent.push(*seq),
                Err(err) => failure = Some(err),
            }
        }
        let now = now_ms();
        let _guard = db.write_guard().await;
        for chunk in sent.chunks(500) {
            let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!("UPDATE outbox SET sent_at_ms = $1 WHERE seq IN ({})", placeholders.join(","));
            let mut query = sqlx::query(&sql).bind(now);
            for seq in chunk {
                query = query.bind(*seq);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        if let Some(err) = failure {
            return Err(err.into());
        }
        Ok(sent.len())
    })
}

async fn prune(db: &Database) -> anyhow::Result<()> {
    let _guard = db.write_guard().await;
    with_db!(&db.pool, pool => {
        sqlx::query("DELETE FROM outbox WHERE sent_at_ms IS NOT NULL AND sent_at_ms < $1")
            .bind(now_ms() - KEEP_SENT_MS)
            .execute(pool)
            .await?;
    });
    Ok(())
}

/// Number of outbox rows not yet published (for metrics and tests).
pub async fn pending(db: &Database) -> anyhow::Result<i64> {
    Ok(with_db!(&db.pool, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL").fetch_one(pool).await?
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renumbered_insert_is_the_same_statement() {
        assert_eq!(insert_sql_from(1), INSERT_SQL);
        assert!(insert_sql_from(9).ends_with("VALUES ($9, $10, $11, $12, $13)"));
    }
}
