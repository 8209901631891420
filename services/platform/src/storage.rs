//! Storage helpers: one connection handle for either backend, migrations, and the `with_db!`
//! macro through which every store writes its SQL once and gets a native PostgreSQL and a
//! native SQLite implementation of it.
//!
//! PostgreSQL: one schema per service (`search_path` is set on every connection), so a service
//! only ever sees its own tables. SQLite (embedded mode): one file per service under the data
//! directory, in WAL mode with `synchronous = FULL`, so a committed transaction survives a crash
//! or power loss.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgPool, SqlitePool};
use tokio::sync::{Mutex, MutexGuard};

use crate::config::Config;

/// A pool of either backend.
#[derive(Clone, Debug)]
pub enum Pool {
    /// PostgreSQL, `search_path` set to the service's schema.
    Postgres(PgPool),
    /// SQLite file of the service.
    Sqlite(SqlitePool),
}

/// A service's database: its pool, and the lock that serialises SQLite writers.
#[derive(Clone, Debug)]
pub struct Database {
    /// The pool.
    pub pool: Pool,
    /// The schema (PostgreSQL) or file stem (SQLite) of the owning service.
    pub schema: String,
    write_lock: Arc<Mutex<()>>,
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$db` (a `&Pool`). The body is
/// compiled once per backend, so each store has a native implementation for both from a single
/// source; SQL must use `$1`-style placeholders, which both drivers accept.
#[macro_export]
macro_rules! with_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::storage::Pool::Postgres($pool) => $body,
            $crate::storage::Pool::Sqlite($pool) => $body,
        }
    };
}

/// How long a readiness ping may take before the store counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a request waits for a connection before answering UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

impl Database {
    /// Connects the store of `schema` (a service name): PostgreSQL when `DATABASE_URL` is set,
    /// else `<data-dir>/<schema>.sqlite`. Creates the schema or file when missing.
    pub async fn connect(config: &Config, schema: &str) -> anyhow::Result<Database> {
        let pool = match &config.database_url {
            Some(url) => {
                Pool::Postgres(connect_postgres(url, schema, config.db_max_connections).await?)
            }
            None => Pool::Sqlite(
                connect_sqlite(&config.data_dir.join(format!("{schema}.sqlite"))).await?,
            ),
        };
        Ok(Database {
            pool,
            schema: schema.to_string(),
            write_lock: Arc::new(Mutex::new(())),
        })
    }

    /// True on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Serialises writers on SQLite, which allows one writer at a time and would otherwise
    /// fail a read-then-write transaction that raced another; on PostgreSQL row locks and
    /// advisory locks do this job, so no lock is taken.
    pub async fn write_guard(&self) -> Option<MutexGuard<'_, ()>> {
        match self.pool {
            Pool::Sqlite(_) => Some(self.write_lock.lock().await),
            Pool::Postgres(_) => None,
        }
    }

    /// Applies pending migrations: `postgres` on PostgreSQL, `sqlite` on SQLite.
    pub async fn migrate(&self, postgres: &Migrator, sqlite: &Migrator) -> anyhow::Result<()> {
        match &self.pool {
            Pool::Postgres(pool) => postgres.run(pool).await?,
            Pool::Sqlite(pool) => sqlite.run(pool).await?,
        }
        Ok(())
    }

    /// Checks that the database answers (readiness).
    pub async fn ping(&self) -> bool {
        // Bounded: behind a network black hole a query may never answer, and a probe that
        // hangs is worse than one that says "not ready".
        let ping = async {
            let ok: Result<i32, _> = with_db!(&self.pool, pool => {
                sqlx::query_scalar("SELECT 1").fetch_one(pool).await
            });
            ok.is_ok()
        };
        tokio::time::timeout(PING_TIMEOUT, ping)
            .await
            .unwrap_or(false)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        with_db!(&self.pool, pool => pool.close().await)
    }
}

async fn connect_postgres(url: &str, schema: &str, max: u32) -> anyhow::Result<PgPool> {
    if !schema.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        anyhow::bail!("invalid schema name {schema:?}");
    }
    let options = PgConnectOptions::from_str(url)?;
    let mut conn = sqlx::PgConnection::connect_with(&options).await?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let pool = PgPoolOptions::new()
        .max_connections(max.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // Custom plans always: a statement prepared while a table was empty would otherwise
        // keep its generic plan (a sequential scan) as the table grows to millions of rows,
        // and a batch's key lookup would cost a scan of every record (measured: 100+ ms per
        // batch after a few minutes from an empty database, serialising partners behind it).
        // Planning each execution costs well under a millisecond.
        .connect_with(options.options([
            ("search_path", schema),
            ("plan_cache_mode", "force_custom_plan"),
        ]))
        .await?;
    Ok(pool)
}

async fn connect_sqlite(path: &Path) -> anyhow::Result<SqlitePool> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// A migrator that tolerates migrations newer than itself in the database. Rolling back to
/// the previous release then just works: the older binary starts on a schema one step ahead
/// (migrations only add, see docs/operations.md), instead of refusing with "migration N was
/// previously applied but is missing". A known migration whose file changed still fails.
pub fn tolerant(mut migrator: Migrator) -> Migrator {
    migrator.set_ignore_missing(true);
    migrator
}

/// The platform's own migrations (token revocations), for schema `platform`.
pub fn platform_postgres() -> Migrator {
    tolerant(sqlx::migrate!("./migrations/postgres"))
}
/// The platform's own migrations (token revocations), for SQLite.
pub fn platform_sqlite() -> Migrator {
    tolerant(sqlx::migrate!("./migrations/sqlite"))
}

/// Opens and migrates the `platform` store.
pub async fn platform_database(config: &Config) -> anyhow::Result<Database> {
    let db = Database::connect(config, "platform").await?;
    db.migrate(&platform_postgres(), &platform_sqlite()).await?;
    Ok(db)
}

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// SQL that reads rows from one JSON array parameter (`$n`, an array of objects whose keys are
/// the column names): returns the select list and the FROM clause for the backend. Stores pass
/// a whole batch as one parameter this way, so batch size never meets a bind-parameter limit.
/// `columns` are `(name, PostgreSQL type)`; on SQLite the FROM clause ends in `WHERE true` so an
/// `ON CONFLICT` clause may follow.
pub fn json_rows(postgres: bool, param: usize, columns: &[(&str, &str)]) -> (String, String) {
    if postgres {
        let select: Vec<String> = columns.iter().map(|(n, _)| format!("x.{n}")).collect();
        let typed: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
        (
            select.join(", "),
            format!(
                "jsonb_to_recordset(${param}::jsonb) AS x({})",
                typed.join(", ")
            ),
        )
    } else {
        let select: Vec<String> = columns
            .iter()
            .map(|(n, _)| format!("json_extract(value, '$.{n}')"))
            .collect();
        (select.join(", "), format!("json_each(${param}) WHERE true"))
    }
}
