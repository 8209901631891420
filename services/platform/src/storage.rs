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
        .foreign_keys(true);
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

/// SQLite's bound-parameter limit: `SQLITE_MAX_VARIABLE_NUMBER`, 32766 since SQLite 3.32 (the
/// bundled `libsqlite3-sys` is SQLite 3.46, compiled with the default).
pub const SQLITE_MAX_PARAMS: usize = 32_766;

/// The type of a column of [`BulkUpsert`] rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// `TEXT NOT NULL`.
    Text,
    /// `BIGINT NOT NULL`.
    BigInt,
}

impl ColumnType {
    fn array(self) -> &'static str {
        match self {
            ColumnType::Text => "text[]",
            ColumnType::BigInt => "bigint[]",
        }
    }
}

/// One value of a [`Rows`] row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell<'a> {
    /// A [`ColumnType::Text`] value.
    Text(&'a str),
    /// A [`ColumnType::BigInt`] value.
    Int(i64),
}

/// Rows for a [`BulkUpsert`], value after value, borrowed from the caller's data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rows<'a> {
    cells: Vec<Cell<'a>>,
    rows: usize,
}

impl<'a> Rows<'a> {
    /// Room for `rows` rows of `width` values.
    pub fn with_capacity(rows: usize, width: usize) -> Self {
        Rows {
            cells: Vec::with_capacity(rows * width),
            rows: 0,
        }
    }

    /// Adds a row: one value per column, in the statement's column order (checked when the
    /// rows are written).
    pub fn push<const N: usize>(&mut self, row: [Cell<'a>; N]) {
        self.cells.extend(row);
        self.rows += 1;
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

/// An `INSERT` of many rows bound as parameters, each value as its own type, followed by a
/// clause of the caller's (`ON CONFLICT … DO UPDATE …`): on PostgreSQL one array per column
/// through `UNNEST … WITH ORDINALITY`, rows inserted in their order, so a batch of any size is
/// one statement of a fixed text; on SQLite multi-row `VALUES` of anonymous `?` in chunks
/// under [`SQLITE_MAX_PARAMS`]. It replaces one JSON parameter that the database parsed again
/// for every column (SQLite's `json_extract`, PostgreSQL's `jsonb_to_recordset`).
/// Anonymous parameters on SQLite, not numbered ones: SQLite looks a numbered parameter up in
/// a list as long as the statement's parameters, once per parameter (quadratic).
#[derive(Clone, Debug)]
pub struct BulkUpsert {
    types: Vec<ColumnType>,
    /// PostgreSQL: the whole statement.
    postgres: String,
    /// SQLite: `INSERT INTO t (…) VALUES `, then the tuples, then `tail`.
    head: String,
    tuple: String,
    tail: String,
}

impl BulkUpsert {
    /// Inserts into `table`'s `columns` (name, type), then `tail` (which may name the
    /// inserted values as `excluded.<column>`).
    pub fn new(table: &str, columns: &[(&str, ColumnType)], tail: &str) -> Self {
        let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
        let names = names.join(", ");
        let arrays: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (_, t))| format!("${}::{}", i + 1, t.array()))
            .collect();
        let postgres = format!(
            "INSERT INTO {table} ({names}) SELECT {names} FROM UNNEST({}) WITH ORDINALITY \
             AS bulk_rows({names}, bulk_row_order) ORDER BY bulk_row_order {tail}",
            arrays.join(", ")
        );
        let tuple = format!("({})", vec!["?"; columns.len()].join(", "));
        BulkUpsert {
            types: columns.iter().map(|(_, t)| *t).collect(),
            postgres,
            head: format!("INSERT INTO {table} ({names}) VALUES "),
            tuple,
            tail: format!(" {tail}"),
        }
    }

    /// Rows of one SQLite statement: as many as fit under [`SQLITE_MAX_PARAMS`].
    pub fn sqlite_rows_per_statement(&self) -> usize {
        (SQLITE_MAX_PARAMS / self.types.len().max(1)).max(1)
    }

    /// The PostgreSQL statement.
    pub fn postgres_sql(&self) -> &str {
        &self.postgres
    }

    /// The SQLite statement of `rows` rows.
    pub fn sqlite_sql(&self, rows: usize) -> String {
        let mut sql = String::with_capacity(
            self.head.len() + rows * (self.tuple.len() + 2) + self.tail.len(),
        );
        sql.push_str(&self.head);
        for row in 0..rows {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&self.tuple);
        }
        sql.push_str(&self.tail);
        sql
    }

    /// Writes `rows` inside `tx`; returns the rows the statements report as written (inserted
    /// or updated: a row the tail's `WHERE` leaves alone is not counted).
    pub async fn execute(&self, tx: &mut Tx, rows: &Rows<'_>) -> crate::Result<u64> {
        let width = self.types.len();
        if rows.cells.len() != rows.rows * width {
            return Err(crate::Error::internal(format!(
                "{} values do not make {} rows of {width}",
                rows.cells.len(),
                rows.rows
            )));
        }
        if rows.is_empty() {
            return Ok(0);
        }
        match tx.inner_mut() {
            TxInner::Postgres(conn) => {
                let mut query = sqlx::query(&self.postgres);
                for (col, ty) in self.types.iter().enumerate() {
                    let values = rows.cells.iter().skip(col).step_by(width);
                    query = match ty {
                        ColumnType::Text => query.bind(
                            values
                                .map(|c| match c {
                                    Cell::Text(v) => Ok(*v),
                                    Cell::Int(_) => Err(mismatch(col)),
                                })
                                .collect::<crate::Result<Vec<&str>>>()?,
                        ),
                        ColumnType::BigInt => query.bind(
                            values
                                .map(|c| match c {
                                    Cell::Int(v) => Ok(*v),
                                    Cell::Text(_) => Err(mismatch(col)),
                                })
                                .collect::<crate::Result<Vec<i64>>>()?,
                        ),
                    };
                }
                Ok(query.execute(&mut **conn).await?.rows_affected())
            }
            TxInner::Sqlite(conn) => {
                let mut written = 0;
                let per_statement = self.sqlite_rows_per_statement();
                for chunk in rows.cells.chunks(per_statement * width) {
                    let sql = self.sqlite_sql(chunk.len() / width);
                    // Not cached: the text changes with the row count, and a cache of such
                    // statements would only push out the ones that repeat.
                    let mut query = sqlx::query(&sql).persistent(false);
                    for (i, cell) in chunk.iter().enumerate() {
                        query = match (self.types[i % width], cell) {
                            (ColumnType::Text, Cell::Text(v)) => query.bind(*v),
                            (ColumnType::BigInt, Cell::Int(v)) => query.bind(*v),
                            _ => return Err(mismatch(i % width)),
                        };
                    }
                    written += query.execute(&mut **conn).await?.rows_affected();
                }
                Ok(written)
            }
        }
    }
}

/// A value whose type is not its column's: the caller's rows and columns disagree (a bug).
fn mismatch(column: usize) -> crate::Error {
    crate::Error::internal(format!(
        "a bulk row's value in column {column} is not of the column's type"
    ))
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

    const COLUMNS: &[(&str, ColumnType)] = &[("k", ColumnType::Text), ("n", ColumnType::BigInt)];

    #[test]
    fn bulk_statements_bind_each_value_once_as_its_type() {
        let upsert = BulkUpsert::new("t", COLUMNS, "ON CONFLICT (k) DO NOTHING");
        assert_eq!(
            upsert.postgres_sql(),
            "INSERT INTO t (k, n) SELECT k, n FROM UNNEST($1::text[], $2::bigint[]) WITH ORDINALITY \
             AS bulk_rows(k, n, bulk_row_order) ORDER BY bulk_row_order ON CONFLICT (k) DO NOTHING"
        );
        assert_eq!(
            upsert.sqlite_sql(2),
            "INSERT INTO t (k, n) VALUES (?, ?), (?, ?) ON CONFLICT (k) DO NOTHING"
        );
        let rows = upsert.sqlite_rows_per_statement();
        assert!(rows * 2 <= SQLITE_MAX_PARAMS && (rows + 1) * 2 > SQLITE_MAX_PARAMS);
    }

    async fn sqlite_tx(dir: &Path) -> (Database, Tx) {
        let config = Config::embedded(dir);
        let db = Database::connect(&config, "bulk").await.unwrap();
        with_db!(&db.pool, |pool| {
            sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT NOT NULL)")
                .execute(pool)
                .await
                .unwrap();
        });
        let tx = db.begin().await.unwrap();
        (db, tx)
    }

    #[tokio::test]
    async fn more_rows_than_one_sqlite_statement_holds_are_all_written() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut tx) = sqlite_tx(dir.path()).await;
        let upsert = BulkUpsert::new(
            "t",
            COLUMNS,
            "ON CONFLICT (k) DO UPDATE SET n = t.n + excluded.n WHERE excluded.n > 0",
        );
        let keys: Vec<String> = (0..upsert.sqlite_rows_per_statement() * 2 + 7)
            .map(|i| format!("{i:06}"))
            .collect();
        let mut rows = Rows::default();
        for k in &keys {
            rows.push([Cell::Text(k), Cell::Int(1)]);
        }
        assert_eq!(
            upsert.execute(&mut tx, &rows).await.unwrap(),
            keys.len() as u64
        );
        // Updates count as written; a row the tail's WHERE leaves alone does not.
        let mut again = Rows::default();
        again.push([Cell::Text(&keys[0]), Cell::Int(2)]);
        again.push([Cell::Text(&keys[1]), Cell::Int(0)]);
        assert_eq!(upsert.execute(&mut tx, &again).await.unwrap(), 1);
        tx.commit().await.unwrap();
        let sum: i64 = with_db!(&db.pool, |pool| {
            sqlx::query_scalar("SELECT CAST(SUM(n) AS BIGINT) FROM t")
                .fetch_one(pool)
                .await
                .unwrap()
        });
        assert_eq!(sum, keys.len() as i64 + 2);
    }

    #[tokio::test]
    async fn a_value_of_the_wrong_type_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut tx) = sqlite_tx(dir.path()).await;
        let upsert = BulkUpsert::new("t", COLUMNS, "");
        let mut rows = Rows::default();
        rows.push([Cell::Int(1), Cell::Int(1)]);
        let err = upsert.execute(&mut tx, &rows).await.unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::Internal);
        let mut short = Rows::default();
        short.push([Cell::Text("a")]);
        assert!(upsert.execute(&mut tx, &short).await.is_err());
    }
}
