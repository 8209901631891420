//! The gateway's store: rollups of marketplace events, on PostgreSQL or SQLite behind one
//! trait. The inbox that makes applying events idempotent is the kit's (its consumer claims
//! each event in the same transaction as [`GatewayStore::apply`]).

use agriportal_platform::reconcile::{self, cells_from_rows, CellRow};
use agriportal_platform::reference::Partner;
use agriportal_platform::storage::{
    now_ms, BulkUpsert, Cell, ColumnType, Database, Migrations, Rows, Tx,
};
use agriportal_platform::{with_db, with_tx, Error, Result};
use agriportal_proto::marketplace::v1::{self as pb, RollupKind};
use async_trait::async_trait;
use time::Date;

use crate::domain::{Deltas, HouseholdTotal, Metric, SalesTotal, SeriesQuery};
use crate::readmodel::IndicatorChange;
use crate::series::{self, SeriesDeltas};

/// The gateway's migrations (schema `gateway`, or `gateway.sqlite`); the kit appends its own
/// tables.
pub fn migrations() -> Migrations {
    Migrations::new(
        sqlx::migrate!("./migrations/postgres"),
        sqlx::migrate!("./migrations/sqlite"),
    )
}

/// What the gateway needs from storage.
#[async_trait]
pub trait GatewayStore: Send + Sync + 'static {
    /// Adds `deltas` to the rollups inside `tx` (the consumer's transaction, which also holds
    /// the events' inbox claims).
    async fn apply(&self, tx: &mut Tx, deltas: &Deltas) -> Result<()>;
    /// Sales totals by province and partner.
    async fn sales_totals(&self) -> Result<Vec<SalesTotal>>;
    /// Household totals by province, partner and status.
    async fn household_totals(&self) -> Result<Vec<HouseholdTotal>>;
    /// Commit time (ms) of the newest event applied.
    async fn as_of_ms(&self) -> Result<Option<i64>>;
    /// Daily values of a metric within the query's range and filters, summed from the daily
    /// cells (every province, partner and category in range: a scan, kept as the reference
    /// the series rollups are checked against).
    async fn daily(&self, query: &SeriesQuery) -> Result<Vec<(Date, i64)>>;
    /// The values that answer `query` from the series rollups ([`series::plan`]): each whole
    /// period's value dated at its start, and the days of the periods covered in part, in
    /// one statement (one committed state).
    async fn series_values(&self, query: &SeriesQuery) -> Result<Vec<(Date, i64)>>;
    /// The figures of the in-memory snapshot (`snapshot.rs`): the totals, the newest event's
    /// time and the figures' version, read in one statement so they are one committed state.
    async fn figures(&self) -> Result<Figures>;
    /// The figures' version (`meta.figures_version`, bumped in every transaction that changes
    /// the rollups; 0 before the first).
    async fn figures_version(&self) -> Result<i64>;
    /// `partner`'s non-empty daily cells of `kind`, in all provinces or in one, in the shape
    /// the marketplace service recomputes them (for reconciliation).
    async fn rollup_cells(
        &self,
        partner: Partner,
        kind: RollupKind,
        province: Option<&str>,
    ) -> Result<Vec<pb::RollupCell>>;
    /// Sets each daily cell keyed like its `found` to its `wanted` figures, but only while it
    /// still holds `found`'s (an absent row holds zeros), moves the province totals and the
    /// series by the same differences and records each repair, all in one transaction (one
    /// version bump): a round that finds thousands of gaps, such as a lost stretch of the
    /// stream, repairs them in one commit rather than one each. For each cell, in order,
    /// `false` when it changed meanwhile: nothing of it is written, and the next round looks
    /// again.
    async fn repair_all(&self, cells: &[CellRepair<'_>]) -> Result<Vec<bool>>;

    /// [`Self::repair_all`] of one cell.
    async fn repair(
        &self,
        partner: Partner,
        kind: RollupKind,
        found: &pb::RollupCell,
        wanted: &pb::RollupCell,
    ) -> Result<bool> {
        let done = self
            .repair_all(&[CellRepair {
                partner,
                kind,
                found,
                wanted,
            }])
            .await?;
        Ok(done.first() == Some(&true))
    }
}

/// One cell for [`GatewayStore::repair_all`]: `partner`'s cell of `kind` as the round found it
/// and as the marketplace's records make it.
#[derive(Clone, Copy, Debug)]
pub struct CellRepair<'a> {
    /// Whose cell.
    pub partner: Partner,
    /// Sales or households.
    pub kind: RollupKind,
    /// The cell as the gateway held it (zeros when absent).
    pub found: &'a pb::RollupCell,
    /// The cell as the marketplace recomputes it.
    pub wanted: &'a pb::RollupCell,
}

use ColumnType::{BigInt as I, Text as T};

const SALES_DAILY: &[(&str, ColumnType)] = &[
    ("day", T),
    ("province_code", T),
    ("partner", T),
    ("category", T),
    ("grams", I),
    ("value_vnd", I),
    ("orders", I),
    ("lines", I),
];
const SALES_TOTALS: &[(&str, ColumnType)] = &[
    ("province_code", T),
    ("partner", T),
    ("grams", I),
    ("value_vnd", I),
    ("orders", I),
    ("lines", I),
];
const HOUSEHOLDS_DAILY: &[(&str, ColumnType)] = &[
    ("day", T),
    ("province_code", T),
    ("partner", T),
    ("status", I),
    ("households", I),
];
const HOUSEHOLD_TOTALS: &[(&str, ColumnType)] = &[
    ("province_code", T),
    ("partner", T),
    ("status", I),
    ("households", I),
];
const HOUSEHOLD_TRADING: &[(&str, ColumnType)] = &[
    ("partner", T),
    ("month", T),
    ("province_code", T),
    ("household_ref", T),
    ("lines", I),
];
const HOUSEHOLD_STOCK_DAILY: &[(&str, ColumnType)] = &[
    ("day", T),
    ("province_code", T),
    ("partner", T),
    ("listed_products", I),
    ("listed_reporting", I),
    ("digital_households", I),
    ("digital_reporting", I),
];

const SALES_COMMUNE_MONTHLY: &[(&str, ColumnType)] = &[
    ("province_code", T),
    ("month", T),
    ("commune_code", T),
    ("partner", T),
    ("grams", I),
    ("value_vnd", I),
    ("orders", I),
    ("lines", I),
];
const HOUSEHOLDS_COMMUNE_MONTHLY: &[(&str, ColumnType)] = &[
    ("province_code", T),
    ("month", T),
    ("commune_code", T),
    ("partner", T),
    ("status", I),
    ("households", I),
];

const HOUSEHOLD_ASOF: &[(&str, ColumnType)] = &[
    ("change_month", T),
    ("day", T),
    ("province_code", T),
    ("partner", T),
    ("status", I),
    ("households", I),
    ("listed_products", I),
    ("listed_reporting", I),
    ("digital_households", I),
    ("digital_reporting", I),
];

const SALES_SERIES: &[(&str, ColumnType)] = &[
    ("granularity", T),
    ("province_code", T),
    ("partner", T),
    ("period_start", T),
    ("grams", I),
    ("value_vnd", I),
    ("orders", I),
];
const HOUSEHOLDS_SERIES: &[(&str, ColumnType)] = &[
    ("granularity", T),
    ("province_code", T),
    ("partner", T),
    ("period_start", T),
    ("households", I),
];

/// The rollup tables' names, in the order every transaction writes them.
pub const ROLLUP_TABLES: [&str; ROLLUPS] = [
    "sales_daily",
    "sales_totals",
    "households_daily",
    "household_totals",
    "household_trading",
    "household_stock_daily",
    "sales_commune_monthly",
    "households_commune_monthly",
    "household_asof",
    "sales_series",
    "households_series",
];

fn overflow_counter() -> &'static agriportal_platform::metrics::Counter {
    static OVERFLOWS: std::sync::OnceLock<agriportal_platform::metrics::Counter> =
        std::sync::OnceLock::new();
    OVERFLOWS.get_or_init(|| {
        agriportal_platform::metrics::counter(
            "agriportal_gateway_rollup_overflows",
            "Changes refused (and their events parked) because a rollup total would overflow 64 bits",
        )
    })
}

/// The rollup tables in the order every transaction writes them (with rows in key order
/// within each), so concurrent appliers take row locks in one order and cannot deadlock.
pub const ROLLUPS: usize = 11;

/// An upsert that adds the bound rows' measures to what the table holds.
fn increment(table: &str, columns: &[(&str, ColumnType)], keys: usize) -> BulkUpsert {
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    let updates: Vec<String> = names[keys..]
        .iter()
        .map(|n| format!("{n} = {table}.{n} + excluded.{n}"))
        .collect();
    // A row whose sum would leave the 64-bit range is not updated (PostgreSQL would raise
    // "bigint out of range", SQLite would turn the sum into a REAL): the caller counts the
    // rows written and refuses the whole change when one is missing. `MAX - e` for e > 0 and
    // `MIN - e` for e <= 0 cannot overflow themselves.
    let guards: Vec<String> = names[keys..]
        .iter()
        .map(|n| {
            format!(
                "(CASE WHEN excluded.{n} > 0 THEN {table}.{n} <= 9223372036854775807 - excluded.{n} \
                 ELSE {table}.{n} >= -9223372036854775807 - 1 - excluded.{n} END)"
            )
        })
        .collect();
    BulkUpsert::new(
        table,
        columns,
        &format!(
            "ON CONFLICT ({}) DO UPDATE SET {} WHERE {}",
            names[..keys].join(", "),
            updates.join(", "),
            guards.join(" AND ")
        ),
    )
}

/// The gateway's store as its read-side functions take it (the household facts of
/// `household_facts`, the indicators read model).
pub type Store = SqlStore;

/// The SQL implementation of [`GatewayStore`], native on PostgreSQL and on SQLite.
pub struct SqlStore {
    db: Database,
    upserts: [BulkUpsert; ROLLUPS],
}

impl SqlStore {
    /// The store on `db` (opened and migrated by the kit).
    pub fn new(db: Database) -> Self {
        let upserts = [
            increment("sales_daily", SALES_DAILY, 4),
            increment("sales_totals", SALES_TOTALS, 2),
            increment("households_daily", HOUSEHOLDS_DAILY, 4),
            increment("household_totals", HOUSEHOLD_TOTALS, 3),
            increment("household_trading", HOUSEHOLD_TRADING, 4),
            increment("household_stock_daily", HOUSEHOLD_STOCK_DAILY, 3),
            increment("sales_commune_monthly", SALES_COMMUNE_MONTHLY, 4),
            increment("households_commune_monthly", HOUSEHOLDS_COMMUNE_MONTHLY, 5),
            increment("household_asof", HOUSEHOLD_ASOF, 5),
            increment("sales_series", SALES_SERIES, 4),
            increment("households_series", HOUSEHOLDS_SERIES, 4),
        ];
        SqlStore { db, upserts }
    }

    /// The underlying database.
    pub fn database(&self) -> &Database {
        &self.db
    }
}

/// What the daily cells' change in `d` adds to the series rollups.
fn series_of(d: &Deltas) -> Result<SeriesDeltas> {
    SeriesDeltas::of(
        d.sales_daily.iter().map(|((day, p, partner, _), v)| {
            ((day.as_str(), p.as_str(), *partner), [v[0], v[1], v[2]])
        }),
        d.households_daily
            .iter()
            .map(|((day, p, partner, _), n)| ((day.as_str(), p.as_str(), *partner), *n)),
    )
    .map_err(|overflow| Error::overflow(format!("{overflow} (a time series row)")))
}

/// The rows of the rollups for a sum of deltas and its series rows, in [`ROLLUPS`] order and
/// in key order within each (the maps' order), borrowed from them.
fn rollup_rows<'a>(d: &'a Deltas, series: &'a SeriesDeltas) -> [Rows<'a>; ROLLUPS] {
    use Cell::{Int, Text};
    let mut rows: [Rows<'a>; ROLLUPS] = Default::default();
    let [sales_daily, sales_totals, households_daily, household_totals, household_trading, household_stock_daily, sales_commune_monthly, households_commune_monthly, household_asof, sales_series, households_series] =
        &mut rows;
    for ((day, p, partner, c), v) in &d.sales_daily {
        sales_daily.push([
            Text(day),
            Text(p),
            Text(partner),
            Text(c),
            Int(v[0]),
            Int(v[1]),
            Int(v[2]),
            Int(v[3]),
        ]);
    }
    for ((p, partner), v) in &d.sales_totals {
        sales_totals.push([
            Text(p),
            Text(partner),
            Int(v[0]),
            Int(v[1]),
            Int(v[2]),
            Int(v[3]),
        ]);
    }
    for ((day, p, partner, s), n) in &d.households_daily {
        households_daily.push([Text(day), Text(p), Text(partner), Int(*s), Int(*n)]);
    }
    for ((p, partner, s), n) in &d.household_totals {
        household_totals.push([Text(p), Text(partner), Int(*s), Int(*n)]);
    }
    // A correction that keeps a line's household and month nets to zero here: nothing to
    // write (the rows read only `lines > 0` and sums, so a missing zero row is the same).
    for ((partner, month, p, household), n) in &d.household_trading {
        if *n != 0 {
            household_trading.push([
                Text(partner),
                Text(month),
                Text(p),
                Text(household),
                Int(*n),
            ]);
        }
    }
    for ((day, p, partner), v) in &d.household_stock {
        if v.iter().any(|n| *n != 0) {
            household_stock_daily.push([
                Text(day),
                Text(p),
                Text(partner),
                Int(v[0]),
                Int(v[1]),
                Int(v[2]),
                Int(v[3]),
            ]);
        }
    }
    // By commune: a correction within one commune and month that nets to zero writes nothing.
    for ((p, month, commune, partner), v) in &d.sales_commune {
        if v.iter().any(|n| *n != 0) {
            sales_commune_monthly.push([
                Text(p),
                Text(month),
                Text(commune),
                Text(partner),
                Int(v[0]),
                Int(v[1]),
                Int(v[2]),
                Int(v[3]),
            ]);
        }
    }
    for ((p, month, commune, partner, s), n) in &d.households_commune {
        if *n != 0 {
            households_commune_monthly.push([
                Text(p),
                Text(month),
                Text(commune),
                Text(partner),
                Int(*s),
                Int(*n),
            ]);
        }
    }
    // A change that keeps the figures counted here (a commune moved) nets to zero.
    for ((changed_in, day, p, partner, s), v) in &d.household_asof {
        if v.iter().any(|n| *n != 0) {
            household_asof.push([
                Text(changed_in),
                Text(day),
                Text(p),
                Text(partner),
                Int(*s),
                Int(v[0]),
                Int(v[1]),
                Int(v[2]),
                Int(v[3]),
                Int(v[4]),
            ]);
        }
    }
    for ((g, p, partner, start), v) in &series.sales {
        sales_series.push([
            Text(g),
            Text(p),
            Text(partner),
            Text(start),
            Int(v[0]),
            Int(v[1]),
            Int(v[2]),
        ]);
    }
    for ((g, p, partner, start), n) in &series.households {
        households_series.push([Text(g), Text(p), Text(partner), Text(start), Int(*n)]);
    }
    rows
}

#[async_trait]
impl GatewayStore for SqlStore {
    async fn apply(&self, tx: &mut Tx, deltas: &Deltas) -> Result<()> {
        let series = series_of(deltas)?;
        add_to_rollups(tx, &self.upserts, deltas, &series).await?;
        bump_version(tx, deltas.newest_ms).await
    }

    async fn sales_totals(&self) -> Result<Vec<SalesTotal>> {
        let rows: Vec<SalesTotalRow> = with_db!(&self.db.pool, |pool| {
            sqlx::query_as(
                "SELECT province_code, partner, grams, value_vnd, orders, lines FROM sales_totals",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| SalesTotal {
                province_code: r.province_code,
                partner: r.partner,
                cell: [r.grams, r.value_vnd, r.orders, r.lines],
            })
            .collect())
    }

    async fn household_totals(&self) -> Result<Vec<HouseholdTotal>> {
        Ok(with_db!(&self.db.pool, |pool| {
            sqlx::query_as(
                "SELECT province_code, partner, status, households FROM household_totals",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    async fn as_of_ms(&self) -> Result<Option<i64>> {
        Ok(with_db!(&self.db.pool, |pool| {
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'as_of_ms'")
                .fetch_optional(pool)
                .await?
        }))
    }

    async fn daily(&self, query: &SeriesQuery) -> Result<Vec<(Date, i64)>> {
        let (table, column) = match query.metric {
            Metric::SalesGrams => ("sales_daily", "grams"),
            Metric::SalesValueVnd => ("sales_daily", "value_vnd"),
            Metric::Orders => ("sales_daily", "orders"),
            Metric::HouseholdsOnboarded => ("households_daily", "households"),
        };
        let sql = format!(
            "SELECT day, CAST(SUM({column}) AS BIGINT) AS total FROM {table} WHERE day >= $1 AND day <= $2 \
             AND ($3 = '' OR province_code = $3) AND ($4 = '' OR partner = $4) GROUP BY day ORDER BY day"
        );
        let province = query.province.clone().unwrap_or_default();
        let partner = query.partner.map(|p| p.code()).unwrap_or_default();
        let rows: Vec<(String, i64)> = with_db!(&self.db.pool, |pool| {
            sqlx::query_as(&sql)
                .bind(query.from.to_string())
                .bind(query.to.to_string())
                .bind(&province)
                .bind(partner)
                .fetch_all(pool)
                .await?
        });
        let format = time::macros::format_description!("[year]-[month]-[day]");
        Ok(rows
            .into_iter()
            .filter_map(|(day, total)| Date::parse(&day, format).ok().map(|d| (d, total)))
            .collect())
    }

    async fn series_values(&self, query: &SeriesQuery) -> Result<Vec<(Date, i64)>> {
        let (table, column) = match query.metric {
            Metric::SalesGrams => ("sales_series", "grams"),
            Metric::SalesValueVnd => ("sales_series", "value_vnd"),
            Metric::Orders => ("sales_series", "orders"),
            Metric::HouseholdsOnboarded => ("households_series", "households"),
        };
        let plan = series::plan(query);
        // Ranges absent from the plan are bound as ("1", "0"): no day is both at or after
        // "1" and at or before "0".
        let range = |r: Option<(Date, Date)>| {
            r.map_or(("1".to_string(), "0".to_string()), |(a, b)| {
                (a.to_string(), b.to_string())
            })
        };
        let head = range(plan.days.first().copied());
        let tail = range(plan.days.get(1).copied());
        let periods = range(plan.periods);
        // One statement: the whole periods and the days around them from one committed state.
        // Every arm is a range of the primary key (granularity, province, partner, start).
        let sql = format!(
            "SELECT period_start, {column} FROM {table} WHERE granularity = 'day' \
             AND province_code = $1 AND partner = $2 \
             AND ((period_start >= $3 AND period_start <= $4) OR (period_start >= $5 AND period_start <= $6)) \
             UNION ALL SELECT period_start, {column} FROM {table} WHERE granularity = $7 \
             AND province_code = $1 AND partner = $2 AND period_start >= $8 AND period_start <= $9"
        );
        let province = query.province.clone().unwrap_or_default();
        let partner = query.partner.map(|p| p.code()).unwrap_or_default();
        let rows: Vec<(String, i64)> = with_db!(&self.db.pool, |pool| {
            sqlx::query_as(&sql)
                .bind(&province)
                .bind(partner)
                .bind(&head.0)
                .bind(&head.1)
                .bind(&tail.0)
                .bind(&tail.1)
                .bind(plan.granularity)
                .bind(&periods.0)
                .bind(&periods.1)
                .fetch_all(pool)
                .await?
        });
        let format = time::macros::format_description!("[year]-[month]-[day]");
        Ok(rows
            .into_iter()
            .filter_map(|(day, total)| Date::parse(&day, format).ok().map(|d| (d, total)))
            .collect())
    }

    async fn figures(&self) -> Result<Figures> {
        // One statement, so the version and the totals are one committed state: a snapshot
        // tagged with a version holds exactly that version's figures.
        let rows: Vec<FigureRow> = with_db!(&self.db.pool, |pool| {
            sqlx::query_as(
                "SELECT key AS kind, CAST('' AS TEXT) AS province_code, CAST('' AS TEXT) AS partner, \
                 CAST(0 AS BIGINT) AS status, value AS a, CAST(0 AS BIGINT) AS b, CAST(0 AS BIGINT) AS c, \
                 CAST(0 AS BIGINT) AS d FROM meta WHERE key IN ('figures_version', 'as_of_ms') \
                 UNION ALL SELECT 'sales', province_code, partner, CAST(0 AS BIGINT), grams, value_vnd, \
                 orders, lines FROM sales_totals \
                 UNION ALL SELECT 'households', province_code, partner, status, households, \
                 CAST(0 AS BIGINT), CAST(0 AS BIGINT), CAST(0 AS BIGINT) FROM household_totals",
            )
            .fetch_all(pool)
            .await?
        });
        let mut figures = Figures::default();
        for r in rows {
            match r.kind.as_str() {
                "figures_version" => figures.version = r.a,
                "as_of_ms" => figures.as_of_ms = Some(r.a),
                "sales" => figures.sales.push(SalesTotal {
                    province_code: r.province_code,
                    partner: r.partner,
                    cell: [r.a, r.b, r.c, r.d],
                }),
                _ => figures.households.push(HouseholdTotal {
                    province_code: r.province_code,
                    partner: r.partner,
                    status: r.status,
                    households: r.a,
                }),
            }
        }
        Ok(figures)
    }

    async fn figures_version(&self) -> Result<i64> {
        let version: Option<i64> = with_db!(&self.db.pool, |pool| {
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'figures_version'")
                .fetch_optional(pool)
                .await?
        });
        Ok(version.unwrap_or(0))
    }

    async fn rollup_cells(
        &self,
        partner: Partner,
        kind: RollupKind,
        province: Option<&str>,
    ) -> Result<Vec<pb::RollupCell>> {
        let sql = match kind {
            RollupKind::Sales => {
                "SELECT day, province_code, category, CAST(0 AS BIGINT) AS status, grams, value_vnd, orders, \
                 lines AS n FROM sales_daily WHERE partner = $1 AND ($2 = '' OR province_code = $2)"
            }
            RollupKind::Households => {
                "SELECT day, province_code, '' AS category, status, CAST(0 AS BIGINT) AS grams, \
                 CAST(0 AS BIGINT) AS value_vnd, CAST(0 AS BIGINT) AS orders, households AS n \
                 FROM households_daily WHERE partner = $1 AND ($2 = '' OR province_code = $2)"
            }
            RollupKind::Unspecified => return Err(Error::invalid("kind must be sales or households")),
        };
        let rows: Vec<CellRow> = with_db!(&self.db.pool, |pool| {
            sqlx::query_as(sql)
                .bind(partner.code())
                .bind(province.unwrap_or_default())
                .fetch_all(pool)
                .await?
        });
        cells_from_rows(rows)
    }

    async fn repair_all(&self, cells: &[CellRepair<'_>]) -> Result<Vec<bool>> {
        let mut tx = self.db.begin().await?;
        let mut totals = Deltas::default();
        let mut moved = Deltas::default();
        let mut done = Vec::with_capacity(cells.len());
        for c in cells {
            done.push(repair_cell(&mut tx, c, &mut totals, &mut moved).await?);
        }
        if done.contains(&true) {
            let series = series_of(&moved)?;
            add_to_rollups(&mut tx, &self.upserts, &totals, &series).await?;
            bump_version(&mut tx, 0).await?;
        }
        tx.commit().await?;
        Ok(done)
    }
}

/// One cell of [`GatewayStore::repair_all`] inside `tx`: the compare-and-set and the repair's
/// record; when it took, the cell's differences are added to `all_totals` (province totals)
/// and `all_moved` (the daily cells', for the series rollups).
async fn repair_cell(
    tx: &mut Tx,
    c: &CellRepair<'_>,
    all_totals: &mut Deltas,
    all_moved: &mut Deltas,
) -> Result<bool> {
    let CellRepair {
        partner,
        kind,
        found,
        wanted,
    } = *c;
    let diff = [
        wanted.quantity_grams - found.quantity_grams,
        wanted.value_vnd - found.value_vnd,
        wanted.orders - found.orders,
        wanted.count - found.count,
    ];
    let mut totals = Deltas::default();
    // The repaired cell's difference, for its series rows (the cell itself is set by the
    // compare-and-set below, not added to).
    let mut cell = Deltas::default();
    let (cas, insert, cell_key) = match kind {
        RollupKind::Sales => {
            totals
                .sales_totals
                .insert((found.province_code.clone(), partner.code()), diff);
            cell.sales_daily.insert(
                (
                    found.day.clone(),
                    found.province_code.clone(),
                    partner.code(),
                    found.category.clone(),
                ),
                diff,
            );
            (
                    "UPDATE sales_daily SET grams = $5, value_vnd = $6, orders = $7, lines = $8 \
                     WHERE day = $1 AND province_code = $2 AND partner = $3 AND category = $4 \
                     AND grams = $9 AND value_vnd = $10 AND orders = $11 AND lines = $12",
                    "INSERT INTO sales_daily (day, province_code, partner, category, grams, value_vnd, orders, lines) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (day, province_code, partner, category) DO NOTHING",
                    found.category.clone(),
                )
        }
        RollupKind::Households => {
            totals.household_totals.insert(
                (
                    found.province_code.clone(),
                    partner.code(),
                    i64::from(found.status),
                ),
                diff[3],
            );
            cell.households_daily.insert(
                (
                    found.day.clone(),
                    found.province_code.clone(),
                    partner.code(),
                    i64::from(found.status),
                ),
                diff[3],
            );
            (
                    "UPDATE households_daily SET households = $5 WHERE day = $1 AND province_code = $2 \
                     AND partner = $3 AND status = $4 AND households = $6",
                    "INSERT INTO households_daily (day, province_code, partner, status, households) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (day, province_code, partner, status) DO NOTHING",
                    found.status.to_string(),
                )
        }
        RollupKind::Unspecified => return Err(Error::invalid("kind must be sales or households")),
    };
    // Compare-and-set: the update matches only while the cell holds what the round saw;
    // an absent row (seen as zeros) is inserted instead, unless one appeared.
    let absent = reconcile::is_empty(found);
    let changed = with_tx!(tx, |conn| {
        match kind {
            RollupKind::Sales => {
                let mut changed = sqlx::query(cas)
                    .bind(&found.day)
                    .bind(&found.province_code)
                    .bind(partner.code())
                    .bind(&found.category)
                    .bind(wanted.quantity_grams)
                    .bind(wanted.value_vnd)
                    .bind(wanted.orders)
                    .bind(wanted.count)
                    .bind(found.quantity_grams)
                    .bind(found.value_vnd)
                    .bind(found.orders)
                    .bind(found.count)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if changed == 0 && absent {
                    changed = sqlx::query(insert)
                        .bind(&found.day)
                        .bind(&found.province_code)
                        .bind(partner.code())
                        .bind(&found.category)
                        .bind(wanted.quantity_grams)
                        .bind(wanted.value_vnd)
                        .bind(wanted.orders)
                        .bind(wanted.count)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                }
                changed
            }
            _ => {
                let mut changed = sqlx::query(cas)
                    .bind(&found.day)
                    .bind(&found.province_code)
                    .bind(partner.code())
                    .bind(i64::from(found.status))
                    .bind(wanted.count)
                    .bind(found.count)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if changed == 0 && absent {
                    changed = sqlx::query(insert)
                        .bind(&found.day)
                        .bind(&found.province_code)
                        .bind(partner.code())
                        .bind(i64::from(found.status))
                        .bind(wanted.count)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                }
                changed
            }
        }
    });
    if changed != 1 {
        return Ok(false);
    }
    let overflow = |_| Error::internal("a repair would overflow a total");
    all_totals.merge(&totals).map_err(overflow)?;
    all_moved.merge(&cell).map_err(overflow)?;
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO repairs (repaired_at_ms, kind, partner, day, province_code, cell_key, \
                 grams, value_vnd, orders, count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(now_ms())
        .bind(kind.as_str_name())
        .bind(partner.code())
        .bind(&found.day)
        .bind(&found.province_code)
        .bind(&cell_key)
        .bind(diff[0])
        .bind(diff[1])
        .bind(diff[2])
        .bind(diff[3])
        .execute(&mut *conn)
        .await?;
    });
    Ok(true)
}

/// Moves `meta.figures_version` on (and `as_of_ms` to `newest_ms` if that is newer) inside
/// `tx`: every transaction that changes the rollups does, so a replica that polls the version
/// knows its snapshot is behind. One statement, rows in key order (`as_of_ms` before
/// `figures_version`) like every rollup write.
async fn bump_version(tx: &mut Tx, newest_ms: i64) -> Result<()> {
    // Without an event time (a repair) `as_of_ms` is left alone, so it is never set to 0.
    with_tx!(tx, |conn| {
        if newest_ms > 0 {
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ('as_of_ms', $1), ('figures_version', 1) \
                 ON CONFLICT (key) DO UPDATE SET value = CASE WHEN meta.key = 'figures_version' \
                 THEN meta.value + 1 WHEN excluded.value > meta.value THEN excluded.value \
                 ELSE meta.value END",
            )
            .bind(newest_ms)
            .execute(&mut *conn)
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ('figures_version', 1) \
                 ON CONFLICT (key) DO UPDATE SET value = meta.value + 1",
            )
            .execute(&mut *conn)
            .await?;
        }
    });
    Ok(())
}

/// The figures of the snapshot, as [`GatewayStore::figures`] reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// `meta.figures_version` (0 before any change).
    pub version: i64,
    /// Commit time (ms) of the newest event applied.
    pub as_of_ms: Option<i64>,
    /// Sales totals by province and partner.
    pub sales: Vec<SalesTotal>,
    /// Household totals by province, partner and status.
    pub households: Vec<HouseholdTotal>,
}

/// A row of [`GatewayStore::figures`]'s statement: `kind` says which table, `a`–`d` its
/// measures.
#[derive(sqlx::FromRow)]
struct FigureRow {
    kind: String,
    province_code: String,
    partner: String,
    status: i64,
    a: i64,
    b: i64,
    c: i64,
    d: i64,
}

/// Adds a sum of deltas to the rollup tables inside `tx`, one statement per table.
async fn add_to_rollups(
    tx: &mut Tx,
    upserts: &[BulkUpsert; ROLLUPS],
    deltas: &Deltas,
    series: &SeriesDeltas,
) -> Result<()> {
    for ((upsert, rows), table) in upserts
        .iter()
        .zip(rollup_rows(deltas, series))
        .zip(ROLLUP_TABLES)
    {
        if rows.is_empty() {
            continue;
        }
        let count = rows.len() as u64;
        let written = upsert.execute(tx, &rows).await?;
        // Every row is inserted or updated, unless its sum would overflow (the upsert's
        // guard): then the change is refused whole, and the transaction rolls back.
        if written < count {
            overflow_counter().inc();
            return Err(Error::overflow(format!(
                "{} of {count} rows of {table} would leave the 64-bit range",
                count - written
            )));
        }
    }
    Ok(())
}

/// A row of `sales_totals`.
#[derive(sqlx::FromRow)]
struct SalesTotalRow {
    province_code: String,
    partner: String,
    grams: i64,
    value_vnd: i64,
    orders: i64,
    lines: i64,
}

/// A target in the read model (only set ones: a removed target is not returned).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct TargetRow {
    /// Indicator code.
    pub indicator_code: String,
    /// Year.
    pub year: i64,
    /// Province code; `''` for the nation.
    pub province_code: String,
    /// Decimal text.
    pub value: String,
}

/// A report's state in the read model.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ReportRow {
    /// Province code since 2025.
    pub province_code: String,
    /// Period id.
    pub period: String,
    /// `draft`, `submitted`, `returned` or `approved`.
    pub state: String,
    /// Version.
    pub version: i64,
    /// Sequence of the event it reflects.
    pub sequence: i64,
    /// Deadline `YYYY-MM-DD`, as the events carried it (may be empty).
    pub deadline: String,
    /// Last submission, ms; 0 if never.
    pub submitted_at_ms: i64,
    /// Approval, ms; 0 unless approved.
    pub approved_at_ms: i64,
    /// 1 when the last submission was on time.
    pub on_time: i64,
}

/// An approved value in the read model.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ValueRow {
    /// Province code since 2025.
    pub province_code: String,
    /// Period id.
    pub period: String,
    /// `''`, or the pre-2025 code it was entered under.
    pub source_province_code: String,
    /// Decimal text.
    pub value: String,
}

/// Marketplace flows of one province over a range of days.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct SalesSum {
    /// Province code.
    pub province_code: String,
    /// Grams sold.
    pub grams: i64,
    /// Đồng.
    pub value_vnd: i64,
    /// Orders.
    pub orders: i64,
}

/// Marketplace flows of a province, or of one of its communes, over a range of days.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct CommuneSalesSum {
    /// Commune code; `''` for the whole province (records with and without a commune).
    pub commune_code: String,
    /// Grams sold.
    pub grams: i64,
    /// Đồng.
    pub value_vnd: i64,
    /// Orders.
    pub orders: i64,
}

/// Households of a province, or of one of its communes, registered up to a day, by status.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct CommuneHouseholds {
    /// Commune code; `''` for the whole province (households with and without a commune).
    pub commune_code: String,
    /// `HouseholdStatus` value (their status now).
    pub status: i64,
    /// Households.
    pub households: i64,
}

#[derive(sqlx::FromRow)]
struct CatalogueRow {
    indicator: Vec<u8>,
}

impl SqlStore {
    /// Applies one indicators change inside `tx` (the consumer's transaction, with the event's
    /// inbox claim). Each kind is ordered by its own counter, so an older event arriving after
    /// a newer one changes nothing and the outcome does not depend on the order of arrival.
    pub async fn apply_indicator_change(
        &self,
        tx: &mut Tx,
        change: &IndicatorChange,
    ) -> Result<()> {
        match change {
            IndicatorChange::Catalogue(indicator) => {
                let bytes = prost::Message::encode_to_vec(indicator);
                with_tx!(tx, |conn| {
                    sqlx::query(
                        "INSERT INTO ind_catalogue (code, revision, position, indicator) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (code) DO UPDATE SET revision = excluded.revision, \
                         position = excluded.position, indicator = excluded.indicator \
                         WHERE excluded.revision > ind_catalogue.revision",
                    )
                    .bind(&indicator.code)
                    .bind(i64::from(indicator.revision))
                    .bind(i64::from(indicator.position))
                    .bind(&bytes)
                    .execute(&mut *conn)
                    .await?;
                });
            }
            IndicatorChange::Target(t) => {
                with_tx!(tx, |conn| {
                    sqlx::query(
                        "INSERT INTO ind_targets (indicator_code, year, province_code, value, set_at_ms) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (indicator_code, year, province_code) \
                         DO UPDATE SET value = excluded.value, set_at_ms = excluded.set_at_ms \
                         WHERE excluded.set_at_ms > ind_targets.set_at_ms",
                    )
                    .bind(&t.indicator_code)
                    .bind(i64::from(t.year))
                    .bind(&t.province_code)
                    .bind(t.value.trim())
                    .bind(t.set_at_ms)
                    .execute(&mut *conn)
                    .await?;
                });
            }
            IndicatorChange::Report(r) => {
                // A placeholder row first (sequence -1, older than any event), so the one
                // conditional UPDATE below decides, under the row's lock, whether this event is
                // newer than what is stored; concurrent replicas serialise on that row.
                let keep = -1i64;
                let changed = with_tx!(tx, |conn| {
                    sqlx::query(
                        "INSERT INTO ind_reports (province_code, period, state, version, sequence, deadline, \
                         submitted_at_ms, approved_at_ms, on_time) VALUES ($1, $2, 'missing', 0, -1, '', 0, 0, 0) \
                         ON CONFLICT (province_code, period) DO NOTHING",
                    )
                    .bind(&r.province_code)
                    .bind(&r.period)
                    .execute(&mut *conn)
                    .await?;
                    sqlx::query(
                        "UPDATE ind_reports SET state = $3, version = $4, sequence = $5, \
                         deadline = CASE WHEN $6 = '' THEN deadline ELSE $6 END, \
                         submitted_at_ms = CASE WHEN $7 < 0 THEN submitted_at_ms ELSE $7 END, \
                         approved_at_ms = CASE WHEN $8 < 0 THEN approved_at_ms ELSE $8 END, \
                         on_time = CASE WHEN $9 < 0 THEN on_time ELSE $9 END \
                         WHERE province_code = $1 AND period = $2 AND sequence < $5",
                    )
                    .bind(&r.province_code)
                    .bind(&r.period)
                    .bind(r.state)
                    .bind(r.version)
                    .bind(r.sequence)
                    .bind(&r.deadline)
                    .bind(r.submitted_at_ms.unwrap_or(keep))
                    .bind(r.approved_at_ms.unwrap_or(keep))
                    .bind(r.on_time.map(i64::from).unwrap_or(keep))
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                });
                if let (1, Some(values)) = (changed, &r.values) {
                    // Replaced wholesale: an approval's values are the report's whole public
                    // content, and a reopening (no values) withdraws them.
                    with_tx!(tx, |conn| {
                        sqlx::query(
                            "DELETE FROM ind_values WHERE province_code = $1 AND period = $2",
                        )
                        .bind(&r.province_code)
                        .bind(&r.period)
                        .execute(&mut *conn)
                        .await?;
                        for v in values {
                            sqlx::query(
                                "INSERT INTO ind_values (province_code, period, indicator_code, source_province_code, value) \
                                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (province_code, period, indicator_code, \
                                 source_province_code) DO UPDATE SET value = excluded.value",
                            )
                            .bind(&r.province_code)
                            .bind(&r.period)
                            .bind(&v.indicator_code)
                            .bind(&v.source_province_code)
                            .bind(&v.value)
                            .execute(&mut *conn)
                            .await?;
                        }
                    });
                }
            }
        }
        Ok(())
    }

    /// Moves `meta.figures_version` on inside `tx`, after a batch of indicator changes: the
    /// indicators' views are part of the in-memory snapshot, and a replica learns that its
    /// snapshot is behind only from this version, so an indicator change must move it as a
    /// rollup change does (`as_of_ms`, the newest marketplace event, is left alone).
    pub async fn indicators_changed(&self, tx: &mut Tx) -> Result<()> {
        bump_version(tx, 0).await
    }
}

/// One committed state of the gateway's tables, read by several statements (a read-only
/// transaction, [`Database::begin_read`]): an indicator's view is built from its catalogue
/// entry, targets, approved values, report states and marketplace rollups, read one after
/// another, and without one snapshot a view built while events commit could hold a value
/// without the target set before it, or a province's figures from two states. One view per
/// answer (per snapshot rebuild for the indicators' default views), dropped when it is built.
pub struct ReadView {
    tx: Tx,
}

impl SqlStore {
    /// A [`ReadView`] of this store.
    pub async fn read_view(&self) -> Result<ReadView> {
        Ok(ReadView {
            tx: self.db.begin_read().await?,
        })
    }
}

impl ReadView {
    /// The view's transaction, for the read model's own queries (`household_facts`).
    pub(crate) fn tx(&mut self) -> &mut Tx {
        &mut self.tx
    }

    /// The catalogue, in catalogue order (position, then code).
    pub async fn catalogue(&mut self) -> Result<Vec<agriportal_proto::indicators::v1::Indicator>> {
        let rows: Vec<CatalogueRow> = with_tx!(self.tx, |conn| {
            sqlx::query_as("SELECT indicator FROM ind_catalogue ORDER BY position, code")
                .fetch_all(&mut *conn)
                .await?
        });
        rows.iter()
            .map(|r| prost::Message::decode(r.indicator.as_slice()).map_err(Error::internal))
            .collect()
    }

    /// The targets set (not removed) of an indicator, every year and province.
    pub async fn targets(&mut self, indicator_code: &str) -> Result<Vec<TargetRow>> {
        Ok(with_tx!(self.tx, |conn| {
            sqlx::query_as(
                "SELECT indicator_code, year, province_code, value FROM ind_targets \
                 WHERE indicator_code = $1 AND value <> '' ORDER BY year, province_code",
            )
            .bind(indicator_code)
            .fetch_all(&mut *conn)
            .await?
        }))
    }

    /// Every province's report for `period` (provinces without one are absent).
    pub async fn reports(&mut self, period: &str) -> Result<Vec<ReportRow>> {
        Ok(with_tx!(self.tx, |conn| {
            sqlx::query_as(
                "SELECT province_code, period, state, version, sequence, deadline, submitted_at_ms, \
                 approved_at_ms, on_time FROM ind_reports WHERE period = $1 AND sequence >= 0 \
                 ORDER BY province_code",
            )
            .bind(period)
            .fetch_all(&mut *conn)
            .await?
        }))
    }

    /// The approved values of an indicator, every period and province.
    pub async fn approved_values(&mut self, indicator_code: &str) -> Result<Vec<ValueRow>> {
        Ok(with_tx!(self.tx, |conn| {
            sqlx::query_as(
                "SELECT province_code, period, source_province_code, value FROM ind_values \
                 WHERE indicator_code = $1 ORDER BY period, province_code, source_province_code",
            )
            .bind(indicator_code)
            .fetch_all(&mut *conn)
            .await?
        }))
    }

    /// Households registered by the end of `month` (`YYYYMM`, whose last day is `last_day`,
    /// `YYYY-MM-DD`) by province and status, as they were at that end: the current-based count
    /// plus the corrections of the changes recorded after `month` (`household_asof`), in one
    /// statement so a concurrent apply is seen whole or not at all.
    ///
    /// The current-based count is read as the totals less the days after `last_day`, which
    /// equals the sum of the days up to it (every delta and every repair moves a day's cell and
    /// its total together) but scans only the tail: the periods dashboards ask for are recent,
    /// and summing every day since 2021 for each of a chart's twelve months cost a second a
    /// month on a busy machine. The corrections are read from `month` on, a short range too.
    pub async fn households_at_end(
        &mut self,
        month: &str,
        last_day: &str,
    ) -> Result<Vec<(String, i64, i64)>> {
        Ok(with_tx!(self.tx, |conn| {
            sqlx::query_as(
                "SELECT province_code, status, CAST(SUM(households) AS BIGINT) FROM ( \
                 SELECT province_code, status, households FROM household_totals \
                 UNION ALL SELECT province_code, status, -households FROM households_daily \
                 WHERE day > $2 \
                 UNION ALL SELECT province_code, status, households FROM household_asof \
                 WHERE change_month > $1 AND day <= $2) AS counted GROUP BY province_code, status",
            )
            .bind(month)
            .bind(last_day)
            .fetch_all(&mut *conn)
            .await?
        }))
    }

    /// Sales from `first_day` to `last_day` inclusive, by province.
    pub async fn sales_between(
        &mut self,
        first_day: &str,
        last_day: &str,
    ) -> Result<Vec<SalesSum>> {
        Ok(with_tx!(self.tx, |conn| {
            sqlx::query_as(
                "SELECT province_code, CAST(SUM(grams) AS BIGINT) AS grams, \
                 CAST(SUM(value_vnd) AS BIGINT) AS value_vnd, CAST(SUM(orders) AS BIGINT) AS orders \
                 FROM sales_daily WHERE day >= $1 AND day <= $2 GROUP BY province_code",
            )
            .bind(first_day)
            .bind(last_day)
            .fetch_all(&mut *conn)
            .await?
        }))
    }

    /// Sales of `province` from `first_day` to `last_day` (`YYYY-MM-DD`, whole months:
    /// `first_month` to `last_month`, `YYYYMM`): one row for the province (`commune_code`
    /// `''`) and one per commune with records. One statement, so the province and its
    /// communes are read from one snapshot and their difference is exactly the records
    /// without a commune.
    pub async fn sales_by_commune(
        &mut self,
        province: &str,
        (first_day, last_day): (&str, &str),
        (first_month, last_month): (&str, &str),
    ) -> Result<Vec<CommuneSalesSum>> {
        Ok(with_tx!(self.tx, |conn| {
            sqlx::query_as(
                "SELECT CAST('' AS TEXT) AS commune_code, CAST(COALESCE(SUM(grams), 0) AS BIGINT) AS grams, \
                 CAST(COALESCE(SUM(value_vnd), 0) AS BIGINT) AS value_vnd, \
                 CAST(COALESCE(SUM(orders), 0) AS BIGINT) AS orders \
                 FROM sales_daily WHERE province_code = $1 AND day >= $2 AND day <= $3 \
                 UNION ALL \
                 SELECT commune_code, CAST(SUM(grams) AS BIGINT), CAST(SUM(value_vnd) AS BIGINT), \
                 CAST(SUM(orders) AS BIGINT) FROM sales_commune_monthly \
                 WHERE province_code = $1 AND month >= $4 AND month <= $5 GROUP BY commune_code",
            )
            .bind(province)
            .bind(first_day)
            .bind(last_day)
            .bind(first_month)
            .bind(last_month)
            .fetch_all(&mut *conn)
            .await?
        }))
    }

    /// Households of `province` registered on or before `last_day` (`YYYY-MM-DD`, the last
    /// day of `last_month`, `YYYYMM`), by status: rows for the province (`commune_code` `''`)
    /// and for each commune with households, from one snapshot like [`Self::sales_by_commune`].
    pub async fn households_by_commune(
        &mut self,
        province: &str,
        last_day: &str,
        last_month: &str,
    ) -> Result<Vec<CommuneHouseholds>> {
        Ok(with_tx!(self.tx, |conn| {
            sqlx::query_as(
                "SELECT CAST('' AS TEXT) AS commune_code, status, CAST(SUM(households) AS BIGINT) AS households \
                 FROM households_daily WHERE province_code = $1 AND day <= $2 GROUP BY status \
                 UNION ALL \
                 SELECT commune_code, status, CAST(SUM(households) AS BIGINT) FROM households_commune_monthly \
                 WHERE province_code = $1 AND month <= $3 GROUP BY commune_code, status",
            )
            .bind(province)
            .bind(last_day)
            .bind(last_month)
            .fetch_all(&mut *conn)
            .await?
        }))
    }

    /// The latest day with marketplace figures (a sale or a registration), if any.
    pub async fn marketplace_last_day(&mut self) -> Result<Option<String>> {
        let days: Vec<Option<String>> = with_tx!(self.tx, |conn| {
            let sales: Option<String> = sqlx::query_scalar("SELECT MAX(day) FROM sales_daily")
                .fetch_one(&mut *conn)
                .await?;
            let households: Option<String> =
                sqlx::query_scalar("SELECT MAX(day) FROM households_daily")
                    .fetch_one(&mut *conn)
                    .await?;
            vec![sales, households]
        });
        Ok(days.into_iter().flatten().max())
    }
}
