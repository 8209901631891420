//! Storage: one connection handle for either backend, transactions, migrations (each
//! service's own plus the kit's outbox, inbox and parked-event tables), and the two macros
//! through which every store writes its SQL once and gets a native PostgreSQL and a native
//! SQLite implementation of it.
//!
//! Why macros and not a generic `Backend` trait: a function generic over `sqlx::Database` needs
//! a bound for every type it binds or decodes and for the executor of each connection type,
//! repeated on every function; a macro compiles the same body once per backend with concrete
//! types instead. Both macros take a closure-like body (`with_db!(pool, |pool| { … })`), which
//! rustfmt formats like any closure. Rows are read with `#[derive(sqlx::FromRow)]` structs,
//! which are generic over the row type and so serve both backends.
//!
//! PostgreSQL: one schema per service (`search_path` is set on every connection), so a service
//! only ever sees its own tables. SQLite (embedded mode): one file per service under the data
//! directory, in WAL mode with `synchronous = FULL`, so a committed transaction survives a crash
//! or power loss.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgPool, Postgres, Sqlite, SqlitePool};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::config::Config;

mod bulk;
pub use bulk::{BulkUpsert, Cell, ColumnType, Rows, SQLITE_MAX_PARAMS};

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

/// Runs `body` with `pool` bound to the concrete pool of `db` (a `&Pool`):
/// `with_db!(&db.pool, |pool| { sqlx::query(…).execute(pool).await? })`. The body is compiled
/// once per backend, so each store has a native implementation for both from a single source;
/// SQL must use `$1`-style placeholders, which both drivers accept. `?` and `return` inside the
/// body act on the enclosing function, as in any block.
#[macro_export]
macro_rules! with_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::storage::Pool::Postgres($pool) => $body,
            $crate::storage::Pool::Sqlite($pool) => $body,
        }
    };
}

/// Runs `body` with `conn` bound to the concrete connection of a [`Tx`] (a `&mut Tx`):
/// `with_tx!(tx, |conn| { sqlx::query(…).execute(&mut *conn).await? })`. Like [`with_db!`],
/// the body is compiled once per backend.
#[macro_export]
macro_rules! with_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx.inner_mut() {
            $crate::storage::TxInner::Postgres(tx) => {
                let $conn: &mut sqlx::PgConnection = &mut **tx;
                $body
            }
            $crate::storage::TxInner::Sqlite(tx) => {
                let $conn: &mut sqlx::SqliteConnection = &mut **tx;
                $body
            }
        }
    };
}

/// An open transaction on either backend. On SQLite it also holds the database's writer lock,
/// so a read-then-write transaction cannot fail against a concurrent writer.
#[derive(Debug)]
pub struct Tx {
    inner: TxInner,
    _writer: Option<OwnedMutexGuard<()>>,
}

/// The backend transaction inside a [`Tx`]; reach it through [`with_tx!`].
#[derive(Debug)]
pub enum TxInner {
    /// PostgreSQL.
    Postgres(sqlx::Transaction<'static, Postgres>),
    /// SQLite.
    Sqlite(sqlx::Transaction<'static, Sqlite>),
}

impl Tx {
    /// The backend transaction (for [`with_tx!`]).
    pub fn inner_mut(&mut self) -> &mut TxInner {
        &mut self.inner
    }

    /// True on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.inner, TxInner::Postgres(_))
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.inner {
            TxInner::Postgres(tx) => tx.commit().await,
            TxInner::Sqlite(tx) => tx.commit().await,
        }
    }
}

/// How long a readiness ping may take before the store counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections of a SQLite store's main pool (one writer at a time anyway).
const SQLITE_CONNECTIONS: u32 = 4;

/// How long a request waits for a connection before answering UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

impl Database {
    /// Connects the store of `schema` (a service name): PostgreSQL when `DATABASE_URL` is set,
    /// else `<data-dir>/<schema>.sqlite`. Creates the schema or file when missing.
    pub async fn connect(config: &Config, schema: &str) -> anyhow::Result<Database> {
        Self::connect_with(
            config,
            schema,
            config.db_max_connections,
            SQLITE_CONNECTIONS,
        )
        .await
    }

    /// Another pool on the store of `schema`, of at most `max` connections (on SQLite too),
    /// for work that must not take the main pool's connections: a service's public reads, so
    /// that a flood of them cannot starve its event consumer or its readiness check.
    pub async fn connect_pool(config: &Config, schema: &str, max: u32) -> anyhow::Result<Database> {
        Self::connect_with(config, schema, max, max).await
    }

    async fn connect_with(
        config: &Config,
        schema: &str,
        postgres_max: u32,
        sqlite_max: u32,
    ) -> anyhow::Result<Database> {
        let pool = match &config.database_url {
            Some(url) => Pool::Postgres(connect_postgres(url, schema, postgres_max).await?),
            None => Pool::Sqlite(
                connect_sqlite(
                    &config.data_dir.join(format!("{schema}.sqlite")),
                    sqlite_max,
                )
                .await?,
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

    /// Begins a transaction. On SQLite this first waits for the writer lock: SQLite allows one
    /// writer at a time and would fail a read-then-write transaction that raced another; on
    /// PostgreSQL row locks and advisory locks do this job, so no lock is taken.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match &self.pool {
            Pool::Postgres(pool) => Ok(Tx {
                inner: TxInner::Postgres(pool.begin().await?),
                _writer: None,
            }),
            Pool::Sqlite(pool) => {
                let writer = self.write_lock.clone().lock_owned().await;
                Ok(Tx {
                    inner: TxInner::Sqlite(pool.begin().await?),
                    _writer: Some(writer),
                })
            }
        }
    }

    /// Begins a read-only transaction whose statements all see one committed state, for an
    /// answer built from several queries that must not mix the states before and after a
    /// concurrent commit. PostgreSQL: `REPEATABLE READ READ ONLY` (one snapshot for the whole
    /// transaction; `READ COMMITTED`, the default, takes a new one per statement). SQLite: a
    /// deferred transaction, whose WAL snapshot is fixed at its first read; it takes no writer
    /// lock, so readers never wait for the consumer. Dropped without commit, it rolls back.
    pub async fn begin_read(&self) -> Result<Tx, sqlx::Error> {
        let inner = match &self.pool {
            Pool::Postgres(pool) => TxInner::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            ),
            Pool::Sqlite(pool) => TxInner::Sqlite(pool.begin().await?),
        };
        Ok(Tx {
            inner,
            _writer: None,
        })
    }

    /// Applies pending migrations: the service's own, then the kit's. On PostgreSQL nothing is
    /// run when every migration is applied already, so a service running as its runtime role
    /// (no `CREATE`: see [`crate::roles`]) starts once the migrate job, the owner, has run.
    pub async fn migrate(&self, migrations: &Migrations) -> anyhow::Result<()> {
        match &self.pool {
            Pool::Postgres(pool) => migrate_postgres(&migrations.postgres, pool).await?,
            Pool::Sqlite(pool) => migrations.sqlite.run(pool).await?,
        }
        Ok(())
    }

    /// Checks that the database answers (readiness).
    pub async fn ping(&self) -> bool {
        // Bounded: behind a network black hole a query may never answer, and a probe that
        // hangs is worse than one that says "not ready".
        let ping = async {
            let ok: Result<i32, _> = with_db!(&self.pool, |pool| {
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
        with_db!(&self.pool, |pool| pool.close().await)
    }
}

async fn connect_postgres(url: &str, schema: &str, max: u32) -> anyhow::Result<PgPool> {
    if !schema.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        anyhow::bail!("invalid schema name {schema:?}");
    }
    let options = PgConnectOptions::from_str(url)?;
    let mut conn = sqlx::PgConnection::connect_with(&options).await?;
    // Looked up first: a service's runtime role may not create schemas, and PostgreSQL checks
    // that right even for `IF NOT EXISTS` on a schema that exists.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut conn)
            .await?;
    }
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

async fn connect_sqlite(path: &Path, max: u32) -> anyhow::Result<SqlitePool> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .statement_cache_capacity(bulk::SQLITE_STATEMENT_CACHE);
    let pool = SqlitePoolOptions::new()
        .max_connections(max.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Version of the kit's first migration in every service's `_sqlx_migrations`. The kit's
/// migrations share that table with the service's own, so they live in a range of versions no
/// service uses (services number theirs from 1, or by date: at most 14 digits).
pub const KIT_VERSION_BASE: i64 = 1_000_000_000_000_000_000;

/// A service's migrations for both backends, with the kit's tables (outbox, inbox, parked
/// events) appended, so that no service copies their DDL. Tolerant of migrations newer than the
/// binary: rolling back to the previous release then just works (the older binary starts on a
/// schema one step ahead, since migrations only add, see docs/operations.md) instead of
/// refusing with "migration N was previously applied but is missing". A known migration whose
/// file changed still fails.
#[derive(Debug)]
pub struct Migrations {
    postgres: Migrator,
    sqlite: Migrator,
}

impl Migrations {
    /// The service's migrators (from `sqlx::migrate!("./migrations/postgres")` and
    /// `sqlx::migrate!("./migrations/sqlite")`), followed by the kit's.
    pub fn new(postgres: Migrator, sqlite: Migrator) -> Self {
        Migrations {
            postgres: with_kit(postgres, sqlx::migrate!("./migrations/kit/postgres")),
            sqlite: with_kit(sqlite, sqlx::migrate!("./migrations/kit/sqlite")),
        }
    }

    /// Only the kit's tables, for a service that has none of its own yet.
    pub fn kit_only() -> Self {
        Migrations::new(Migrator::DEFAULT, Migrator::DEFAULT)
    }

    /// The versions and descriptions of the PostgreSQL migrations, in the order they run.
    pub fn describe(&self) -> Vec<(i64, String)> {
        self.postgres
            .iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect()
    }
}

/// `service` then `kit` (renumbered into [`KIT_VERSION_BASE`]'s range), tolerant. The kit's run
/// after the service's own because services written before the kit create `outbox` and
/// `inbox` in their first migration (without `IF NOT EXISTS`); the kit's use `IF NOT EXISTS`.
fn with_kit(service: Migrator, kit: Migrator) -> Migrator {
    let mut migrations: Vec<sqlx::migrate::Migration> = service.migrations.into_owned();
    migrations.extend(kit.migrations.iter().map(|m| {
        let mut m = m.clone();
        m.version += KIT_VERSION_BASE;
        m.description = Cow::Owned(format!("kit {}", m.description));
        m
    }));
    Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: true,
        ..Migrator::DEFAULT
    }
}

/// The platform's own migrations (token revocations), for schema `platform`.
fn platform_migrations() -> (Migrator, Migrator) {
    let mut postgres = sqlx::migrate!("./migrations/postgres");
    let mut sqlite = sqlx::migrate!("./migrations/sqlite");
    postgres.set_ignore_missing(true);
    sqlite.set_ignore_missing(true);
    (postgres, sqlite)
}

/// Runs `migrator` unless every one of its migrations is recorded as applied already (the
/// table `_sqlx_migrations` of the schema on the search path); a role without `CREATE` meets
/// a clear error only when something is really pending.
async fn migrate_postgres(migrator: &Migrator, pool: &PgPool) -> anyhow::Result<()> {
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await?;
    if table.is_some() {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(pool)
                .await?;
        let pending = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .any(|m| !applied.contains(&m.version));
        if !pending {
            return Ok(());
        }
    }
    // The error itself stays in the chain: the kit retries the transient ones.
    migrator.run(pool).await.map_err(|e| {
        anyhow::Error::new(e).context(
            "migrating (a service's runtime role may not: run `agriportal migrate` as the owner role first)",
        )
    })
}

/// Opens and migrates the `platform` store.
pub async fn platform_database(config: &Config) -> anyhow::Result<Database> {
    let db = Database::connect(config, "platform").await?;
    let (postgres, sqlite) = platform_migrations();
    match &db.pool {
        Pool::Postgres(pool) => migrate_postgres(&postgres, pool).await?,
        Pool::Sqlite(pool) => sqlite.run(pool).await?,
    }
    Ok(db)
}

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kit_migrations_follow_the_service_s_in_their_own_range() {
        let migrations = Migrations::new(
            sqlx::migrate!("./migrations/postgres"),
            sqlx::migrate!("./migrations/sqlite"),
        );
        let described = migrations.describe();
        let (first, _) = described[0];
        assert!(first < KIT_VERSION_BASE);
        let kit: Vec<&(i64, String)> = described
            .iter()
            .filter(|(v, _)| *v > KIT_VERSION_BASE)
            .collect();
        assert!(!kit.is_empty());
        assert!(kit.iter().all(|(_, d)| d.starts_with("kit ")));
        assert_eq!(
            described.last().map(|(v, _)| *v),
            kit.last().map(|(v, _)| *v)
        );
    }
}
