//! Many rows in one statement, each value bound as its own type: the stores' batch writes
//! (a marketplace batch's records, a gateway event's rollup rows).
//!
//! It replaces one JSON parameter that the database parsed again for every column (SQLite's
//! `json_extract`, PostgreSQL's `jsonb_to_recordset`). On PostgreSQL the rows travel as one
//! array per column through `UNNEST … WITH ORDINALITY`, so a batch of any size is one statement
//! of a fixed text. On SQLite they are multi-row `VALUES` of anonymous `?`, in statements of a
//! few fixed sizes (see [`SQLITE_CHUNK_ROWS`]), each prepared once per connection and then
//! taken from its statement cache.

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Postgres, Sqlite};

use super::{Tx, TxInner};

/// SQLite's bound-parameter limit: `SQLITE_MAX_VARIABLE_NUMBER`, 32766 since SQLite 3.32 (the
/// bundled `libsqlite3-sys` is SQLite 3.46, compiled with the default).
pub const SQLITE_MAX_PARAMS: usize = 32_766;

/// Rows of the largest SQLite statement a [`BulkUpsert`] runs; a remainder is written by the
/// powers of two below it (100 rows: 64 + 32 + 4). Every statement thus has one of eight
/// texts per upsert, parsed once per connection: when the text changed with the row count,
/// parsing was about 13 % of the gateway's CPU under ingest. 128 rows amortise a statement's
/// round trip to the connection's worker thread, and keep each prepared statement small
/// enough for the cache to hold every size of every upsert.
const SQLITE_CHUNK_ROWS: usize = 128;

/// Statements each SQLite connection keeps prepared (sqlx's default is 100): the rollups
/// of the gateway alone have eleven upserts of eight sizes each, and a statement pushed out
/// is parsed again the next time.
pub(super) const SQLITE_STATEMENT_CACHE: usize = 256;

/// The type of a column of [`BulkUpsert`] rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// `TEXT NOT NULL`.
    Text,
    /// `BIGINT NOT NULL`.
    BigInt,
    /// Nullable `TEXT`.
    OptText,
    /// Nullable `BIGINT`.
    OptBigInt,
    /// Nullable `BOOLEAN` (0/1 on SQLite).
    OptBool,
}

impl ColumnType {
    fn array(self) -> &'static str {
        match self {
            ColumnType::Text | ColumnType::OptText => "text[]",
            ColumnType::BigInt | ColumnType::OptBigInt => "bigint[]",
            ColumnType::OptBool => "boolean[]",
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
    /// A [`ColumnType::OptText`] value.
    OptText(Option<&'a str>),
    /// A [`ColumnType::OptBigInt`] value.
    OptInt(Option<i64>),
    /// A [`ColumnType::OptBool`] value.
    OptBool(Option<bool>),
}

// Each value as one column type takes it (`None`: a cell of another type).
impl<'a> Cell<'a> {
    fn text(self) -> Option<&'a str> {
        match self {
            Cell::Text(v) => Some(v),
            _ => None,
        }
    }
    fn int(self) -> Option<i64> {
        match self {
            Cell::Int(v) => Some(v),
            _ => None,
        }
    }
    fn opt_text(self) -> Option<Option<&'a str>> {
        match self {
            Cell::OptText(v) => Some(v),
            _ => None,
        }
    }
    fn opt_int(self) -> Option<Option<i64>> {
        match self {
            Cell::OptInt(v) => Some(v),
            _ => None,
        }
    }
    fn opt_bool(self) -> Option<Option<bool>> {
        match self {
            Cell::OptBool(v) => Some(v),
            _ => None,
        }
    }
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

/// An `INSERT` of many rows bound as parameters, followed by a clause of the caller's
/// (`ON CONFLICT … DO UPDATE …`). Anonymous parameters on SQLite, not numbered ones: SQLite
/// looks a numbered parameter up in a list as long as the statement's parameters, once per
/// parameter (quadratic).
#[derive(Clone, Debug)]
pub struct BulkUpsert {
    types: Vec<ColumnType>,
    /// PostgreSQL: the whole statement.
    postgres: String,
    /// SQLite: the statements by row count, largest first, each half the one before.
    sqlite: Vec<(usize, String)>,
}

impl BulkUpsert {
    /// Inserts into `table`'s `columns` (name, type), then `tail` (which may name the
    /// inserted values as `excluded.<column>`).
    pub fn new(table: &str, columns: &[(&str, ColumnType)], tail: &str) -> Self {
        Self::after_parameters(table, columns, tail, 0)
    }

    /// As [`BulkUpsert::new`], for a PostgreSQL statement that binds `preceding` parameters
    /// of its own before the arrays (the upsert inside a `WITH` of a larger statement: see
    /// [`BulkUpsert::bind_arrays`]).
    pub fn after_parameters(
        table: &str,
        columns: &[(&str, ColumnType)],
        tail: &str,
        preceding: usize,
    ) -> Self {
        let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
        let names = names.join(", ");
        let arrays: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (_, t))| format!("${}::{}", preceding + i + 1, t.array()))
            .collect();
        let postgres = format!(
            "INSERT INTO {table} ({names}) SELECT {names} FROM UNNEST({}) WITH ORDINALITY \
             AS bulk_rows({names}, bulk_row_order) ORDER BY bulk_row_order {tail}",
            arrays.join(", ")
        );
        let head = format!("INSERT INTO {table} ({names}) VALUES ");
        let tuple = format!("({})", vec!["?"; columns.len()].join(", "));
        let tail = format!(" {tail}");
        let largest = largest_power_of_two_at_most(
            SQLITE_CHUNK_ROWS.min(SQLITE_MAX_PARAMS / columns.len().max(1)),
        );
        let sqlite = std::iter::successors(Some(largest), |n| (*n > 1).then_some(n / 2))
            .map(|rows| (rows, sqlite_statement(&head, &tuple, &tail, rows)))
            .collect();
        BulkUpsert {
            types: columns.iter().map(|(_, t)| *t).collect(),
            postgres,
            sqlite,
        }
    }

    /// Values per row: the columns.
    pub fn width(&self) -> usize {
        self.types.len()
    }

    /// The PostgreSQL statement.
    pub fn postgres_sql(&self) -> &str {
        &self.postgres
    }

    /// The SQLite statements' row counts, largest first.
    #[cfg(test)]
    fn sqlite_sizes(&self) -> Vec<usize> {
        self.sqlite.iter().map(|(rows, _)| *rows).collect()
    }

    /// The SQLite statement of `rows` rows, if it is one of [`BulkUpsert::sqlite_sizes`].
    #[cfg(test)]
    fn sqlite_sql(&self, rows: usize) -> Option<&str> {
        self.sqlite
            .iter()
            .find(|(n, _)| *n == rows)
            .map(|(_, sql)| sql.as_str())
    }

    /// Writes `rows` inside `tx`; returns the rows the statements report as written (inserted
    /// or updated: a row the tail's `WHERE` leaves alone is not counted).
    pub async fn execute(&self, tx: &mut Tx, rows: &Rows<'_>) -> crate::Result<u64> {
        self.check(rows)?;
        if rows.is_empty() {
            return Ok(0);
        }
        match tx.inner_mut() {
            TxInner::Postgres(conn) => {
                let query = self.bind_arrays(sqlx::query(&self.postgres), rows)?;
                Ok(query.execute(&mut **conn).await?.rows_affected())
            }
            TxInner::Sqlite(conn) => {
                let width = self.types.len();
                let mut written = 0;
                let mut rest = rows.cells.as_slice();
                // Largest first, then each smaller size at most once: the remainder's binary
                // digits.
                for (size, sql) in &self.sqlite {
                    while rest.len() >= size * width {
                        let (chunk, after) = rest.split_at(size * width);
                        rest = after;
                        let mut query = sqlx::query(sql);
                        for (i, cell) in chunk.iter().enumerate() {
                            query = bind_sqlite(query, self.types[i % width], *cell, i % width)?;
                        }
                        written += query.execute(&mut **conn).await?.rows_affected();
                    }
                }
                Ok(written)
            }
        }
    }

    /// Binds `rows` to `query` as one PostgreSQL array per column, after the parameters
    /// `query` has bound already (as many as [`BulkUpsert::after_parameters`] was told), for a
    /// statement that embeds [`BulkUpsert::postgres_sql`].
    pub fn bind_arrays<'q>(
        &self,
        mut query: Query<'q, Postgres, PgArguments>,
        rows: &Rows<'q>,
    ) -> crate::Result<Query<'q, Postgres, PgArguments>> {
        self.check(rows)?;
        let width = self.types.len();
        for (col, ty) in self.types.iter().enumerate() {
            let mut values = rows.cells.iter().skip(col).step_by(width).copied();
            query = match ty {
                ColumnType::Text => query.bind(collect(&mut values, col, Cell::text)?),
                ColumnType::BigInt => query.bind(collect(&mut values, col, Cell::int)?),
                ColumnType::OptText => query.bind(collect(&mut values, col, Cell::opt_text)?),
                ColumnType::OptBigInt => query.bind(collect(&mut values, col, Cell::opt_int)?),
                ColumnType::OptBool => query.bind(collect(&mut values, col, Cell::opt_bool)?),
            };
        }
        Ok(query)
    }

    /// Refuses rows whose values do not make whole rows of this statement's width.
    fn check(&self, rows: &Rows<'_>) -> crate::Result<()> {
        let width = self.types.len();
        if rows.cells.len() != rows.rows * width {
            return Err(crate::Error::internal(format!(
                "{} values do not make {} rows of {width}",
                rows.cells.len(),
                rows.rows
            )));
        }
        Ok(())
    }
}

/// `head`, `rows` copies of `tuple` separated by commas, then `tail`.
fn sqlite_statement(head: &str, tuple: &str, tail: &str, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * (tuple.len() + 2) + tail.len());
    sql.push_str(head);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(tuple);
    }
    sql.push_str(tail);
    sql
}

fn largest_power_of_two_at_most(n: usize) -> usize {
    match n {
        0 => 1,
        n => 1 << (usize::BITS - 1 - n.leading_zeros()),
    }
}

/// One column's values as the type `pick` takes out of each cell.
fn collect<'a, T>(
    values: &mut impl Iterator<Item = Cell<'a>>,
    col: usize,
    pick: impl Fn(Cell<'a>) -> Option<T>,
) -> crate::Result<Vec<T>> {
    values
        .map(|c| pick(c).ok_or_else(|| mismatch(col)))
        .collect()
}

fn bind_sqlite<'q>(
    query: Query<'q, Sqlite, SqliteArguments<'q>>,
    ty: ColumnType,
    cell: Cell<'q>,
    col: usize,
) -> crate::Result<Query<'q, Sqlite, SqliteArguments<'q>>> {
    Ok(match (ty, cell) {
        (ColumnType::Text, Cell::Text(v)) => query.bind(v),
        (ColumnType::BigInt, Cell::Int(v)) => query.bind(v),
        (ColumnType::OptText, Cell::OptText(v)) => query.bind(v),
        (ColumnType::OptBigInt, Cell::OptInt(v)) => query.bind(v),
        (ColumnType::OptBool, Cell::OptBool(v)) => query.bind(v),
        _ => return Err(mismatch(col)),
    })
}

/// A value whose type is not its column's: the caller's rows and columns disagree (a bug).
fn mismatch(column: usize) -> crate::Error {
    crate::Error::internal(format!(
        "a bulk row's value in column {column} is not of the column's type"
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::storage::Database;
    use crate::with_db;

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
            Some("INSERT INTO t (k, n) VALUES (?, ?), (?, ?) ON CONFLICT (k) DO NOTHING")
        );
        assert_eq!(upsert.sqlite_sizes(), vec![128, 64, 32, 16, 8, 4, 2, 1]);
        assert_eq!(upsert.sqlite_sql(3), None);
        let later = BulkUpsert::after_parameters("t", COLUMNS, "", 12);
        assert!(later
            .postgres_sql()
            .contains("UNNEST($13::text[], $14::bigint[])"));
    }

    #[test]
    fn a_wide_row_keeps_sqlite_statements_under_the_parameter_limit() {
        let wide: Vec<(String, ColumnType)> = (0..1000)
            .map(|i| (format!("c{i}"), ColumnType::BigInt))
            .collect();
        let wide: Vec<(&str, ColumnType)> = wide.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let upsert = BulkUpsert::new("t", &wide, "");
        let rows = upsert.sqlite_sizes()[0];
        assert_eq!(rows, 32);
        assert!(rows * 1000 <= SQLITE_MAX_PARAMS && 2 * rows * 1000 > SQLITE_MAX_PARAMS);
    }

    async fn sqlite_tx(dir: &Path) -> (Database, Tx) {
        let config = Config::embedded(dir);
        let db = Database::connect(&config, "bulk").await.unwrap();
        with_db!(&db.pool, |pool| {
            sqlx::query(
                "CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT NOT NULL, o TEXT, p BIGINT, q BOOLEAN)",
            )
            .execute(pool)
            .await
            .unwrap();
        });
        let tx = db.begin().await.unwrap();
        (db, tx)
    }

    #[tokio::test]
    async fn every_row_count_is_written_whole_by_the_fixed_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut tx) = sqlite_tx(dir.path()).await;
        let upsert = BulkUpsert::new(
            "t",
            COLUMNS,
            "ON CONFLICT (k) DO UPDATE SET n = t.n + excluded.n WHERE excluded.n > 0",
        );
        // Every remainder below the largest size, and more than one full statement.
        let mut expected = 0i64;
        let mut total = 0u64;
        for count in (0..=130).chain([2 * 128 + 127, 3 * 128]) {
            let keys: Vec<String> = (0..count).map(|i| format!("{count}-{i:06}")).collect();
            let mut rows = Rows::default();
            for k in &keys {
                rows.push([Cell::Text(k), Cell::Int(1)]);
            }
            assert_eq!(
                upsert.execute(&mut tx, &rows).await.unwrap(),
                count as u64,
                "{count} rows"
            );
            expected += count as i64;
            total += count as u64;
        }
        // Updates count as written; a row the tail's WHERE leaves alone does not.
        let mut again = Rows::default();
        again.push([Cell::Text("1-000000"), Cell::Int(2)]);
        again.push([Cell::Text("2-000000"), Cell::Int(0)]);
        assert_eq!(upsert.execute(&mut tx, &again).await.unwrap(), 1);
        tx.commit().await.unwrap();
        let (sum, count): (i64, i64) = with_db!(&db.pool, |pool| {
            sqlx::query_as("SELECT CAST(SUM(n) AS BIGINT), COUNT(*) FROM t")
                .fetch_one(pool)
                .await
                .unwrap()
        });
        assert_eq!(sum, expected + 2);
        assert_eq!(count as u64, total);
    }

    #[tokio::test]
    async fn nullable_values_are_stored_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut tx) = sqlite_tx(dir.path()).await;
        let columns = [
            ("k", ColumnType::Text),
            ("n", ColumnType::BigInt),
            ("o", ColumnType::OptText),
            ("p", ColumnType::OptBigInt),
            ("q", ColumnType::OptBool),
        ];
        let upsert = BulkUpsert::new("t", &columns, "");
        let mut rows = Rows::default();
        rows.push([
            Cell::Text("a"),
            Cell::Int(1),
            Cell::OptText(Some("x")),
            Cell::OptInt(Some(7)),
            Cell::OptBool(Some(true)),
        ]);
        rows.push([
            Cell::Text("b"),
            Cell::Int(2),
            Cell::OptText(None),
            Cell::OptInt(None),
            Cell::OptBool(None),
        ]);
        assert_eq!(upsert.execute(&mut tx, &rows).await.unwrap(), 2);
        tx.commit().await.unwrap();
        type Row = (String, Option<String>, Option<i64>, Option<bool>);
        let stored: Vec<Row> = with_db!(&db.pool, |pool| {
            sqlx::query_as("SELECT k, o, p, q FROM t ORDER BY k")
                .fetch_all(pool)
                .await
                .unwrap()
        });
        assert_eq!(
            stored,
            vec![
                ("a".into(), Some("x".into()), Some(7), Some(true)),
                ("b".into(), None, None, None)
            ]
        );
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
        let mut nullable = Rows::default();
        nullable.push([Cell::Text("a"), Cell::OptInt(Some(1))]);
        assert!(upsert.execute(&mut tx, &nullable).await.is_err());
        let mut short = Rows::default();
        short.push([Cell::Text("a")]);
        assert!(upsert.execute(&mut tx, &short).await.is_err());
    }
}
