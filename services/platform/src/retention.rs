//! Growth bounded: rows kept only as long as they can be needed (a service's inbox ids, the
//! marketplace's raw batch requests) are deleted by a periodic task once they are older than
//! their retention, a few rows per statement, so that no single DELETE holds its locks, fills
//! the WAL or stalls the service's writers for long.

use std::sync::OnceLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::{self, Counter, EncodeLabelSet, Family};
use crate::storage::{now_ms, Database};
use crate::{with_db, Result};

/// Rows deleted per statement by a pruning task.
pub const PRUNE_BATCH_ROWS: i64 = 1_000;

/// Rows of one table that may go once older than a cut-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prune {
    /// The table, also the metric's and the log's label.
    pub table: &'static str,
    /// Its key columns, comma separated (what one row is deleted by).
    pub key: &'static str,
    /// Its column of milliseconds since the epoch the retention counts from.
    pub time_column: &'static str,
}

/// A service's inbox: the ids of events it applied, kept while the bus may deliver them again.
pub const INBOX: Prune = Prune {
    table: "inbox",
    key: "event_id",
    time_column: "applied_at_ms",
};

impl Prune {
    /// Deletes at most `limit` rows older than `cutoff_ms`; returns how many went.
    pub async fn once(&self, db: &Database, cutoff_ms: i64, limit: i64) -> Result<u64> {
        // The key subquery, not `DELETE … LIMIT`: PostgreSQL has no such form, and SQLite
        // has it only when built with an option sqlx's bundled library is not.
        let sql = format!(
            "DELETE FROM {table} WHERE ({key}) IN \
             (SELECT {key} FROM {table} WHERE {time} < $1 LIMIT $2)",
            table = self.table,
            key = self.key,
            time = self.time_column,
        );
        Ok(with_db!(&db.pool, |pool| {
            sqlx::query(&sql)
                .bind(cutoff_ms)
                .bind(limit)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// Deletes every row older than `cutoff_ms`, `limit` rows per statement (each its own
    /// transaction, so writers get their turn in between); stops early on `shutdown`.
    pub async fn all(
        &self,
        db: &Database,
        cutoff_ms: i64,
        limit: i64,
        shutdown: &CancellationToken,
    ) -> Result<u64> {
        let mut pruned = 0;
        loop {
            let n = self.once(db, cutoff_ms, limit).await?;
            pruned += n;
            if n < u64::try_from(limit).unwrap_or(0) || shutdown.is_cancelled() {
                return Ok(pruned);
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Prunes `prune`'s rows older than `retention` from `db` now and then every `interval`, until
/// `shutdown`; logs and counts what it deleted (metric `agriportal_pruned_rows`, by table). A
/// failed round is logged and tried again at the next one: pruning is never urgent.
pub async fn run(
    db: Database,
    prune: Prune,
    retention: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        let cutoff = now_ms().saturating_sub(retention_ms);
        match prune.all(&db, cutoff, PRUNE_BATCH_ROWS, &shutdown).await {
            Ok(pruned) => {
                pruned_rows(prune.table).inc_by(pruned);
                if pruned > 0 {
                    tracing::info!(schema = %db.schema, table = prune.table, pruned, "pruned rows past their retention");
                }
            }
            Err(err) => {
                tracing::warn!(schema = %db.schema, table = prune.table, error = %err, "pruning failed; will retry");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

/// The counter of rows pruned from `table`.
pub fn pruned_rows(table: &'static str) -> Counter {
    static PRUNED: OnceLock<Family<TableLabels, Counter>> = OnceLock::new();
    PRUNED
        .get_or_init(|| {
            metrics::counter_family(
                "agriportal_pruned_rows",
                "Rows deleted by the pruning tasks once past their retention, by table",
            )
        })
        .get_or_create(&TableLabels { table })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Migrations;
    use crate::{testing, Config};

    /// Inbox ids applied before the cut-off go, `limit` per statement; later ones stay.
    async fn inbox_prune(db: &Database) {
        let now = now_ms();
        let day_ms = 86_400_000_i64;
        for (id, age_days) in [("e1", 40), ("e2", 39), ("e3", 38), ("e4", 2), ("e5", 0)] {
            with_db!(&db.pool, |pool| {
                sqlx::query("INSERT INTO inbox (event_id, applied_at_ms) VALUES ($1, $2)")
                    .bind(id)
                    .bind(now - age_days * day_ms)
                    .execute(pool)
                    .await
                    .unwrap();
            });
        }
        let cutoff = now - 37 * day_ms;
        assert_eq!(INBOX.once(db, cutoff, 2).await.unwrap(), 2);
        let pruned = INBOX
            .all(db, cutoff, 2, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(pruned, 1);
        let mut left: Vec<String> = with_db!(&db.pool, |pool| {
            sqlx::query_scalar("SELECT event_id FROM inbox")
                .fetch_all(pool)
                .await
                .unwrap()
        });
        left.sort();
        assert_eq!(left, ["e4", "e5"]);
    }

    #[tokio::test]
    async fn inbox_ids_past_retention_are_pruned_on_each_backend() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Database::connect(&Config::embedded(dir.path()), "retention")
            .await
            .unwrap();
        sqlite.migrate(&Migrations::kit_only()).await.unwrap();
        inbox_prune(&sqlite).await;
        let Some(url) = testing::fresh_postgres("inbox_retention").await else {
            return;
        };
        let mut config = Config::embedded(dir.path());
        config.database_url = Some(url);
        let postgres = Database::connect(&config, "retention").await.unwrap();
        postgres.migrate(&Migrations::kit_only()).await.unwrap();
        inbox_prune(&postgres).await;
    }

    #[test]
    fn inbox_retention_must_outlast_the_stream() {
        let mut config = Config::embedded("unused");
        assert!(config.inbox_retention().unwrap().unwrap() > crate::bus::MAX_AGE);
        config.inbox_retention_days = 30;
        assert!(config.inbox_retention().is_err());
        config.inbox_retention_days = 0;
        assert!(config.inbox_retention().unwrap().is_none());
    }
}
