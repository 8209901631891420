//! The gateway's store: rollups of marketplace events and the inbox that makes applying them
//! idempotent, on PostgreSQL or SQLite behind one trait.

use agriportal_platform::storage::{json_rows, Database};
use agriportal_platform::{inbox_claim, with_db, Error, Result};
use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::Row;
use time::Date;

use crate::domain::{Deltas, HouseholdTotal, Metric, SalesTotal, SeriesQuery};

/// Migrations for PostgreSQL (schema `gateway`).
pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// Migrations for SQLite (`gateway.sqlite`).
pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// An event ready to apply: its id and the deltas it makes.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    /// Event id, recorded in the inbox.
    pub event_id: String,
    /// Its effect on the rollups.
    pub deltas: Deltas,
}

/// What the gateway needs from storage.
#[async_trait]
pub trait GatewayStore: Send + Sync + 'static {
    /// Applies events not applied before, all in one transaction; returns how many were new.
    async fn apply(&self, events: &[PendingEvent]) -> Result<usize>;
    /// Sales totals by province and partner.
    async fn sales_totals(&self) -> Result<Vec<SalesTotal>>;
    /// Household totals by province, partner and status.
    async fn household_totals(&self) -> Result<Vec<HouseholdTotal>>;
    /// Commit time (ms) of the newest event applied.
    async fn as_of_ms(&self) -> Result<Option<i64>>;
    /// Daily values of a metric within the query's range and filters.
    async fn daily(&self, query: &SeriesQuery) -> Result<Vec<(Date, i64)>>;
}

const SALES_DAILY: &[(&str, &str)] = &[
    ("day", "TEXT"),
    ("province_code", "TEXT"),
    ("partner", "TEXT"),
    ("category", "TEXT"),
    ("grams", "BIGINT"),
    ("value_vnd", "BIGINT"),
    ("orders", "BIGINT"),
    ("lines", "BIGINT"),
];
const SALES_TOTALS: &[(&str, &str)] = &[
    ("province_code", "TEXT"),
    ("partner", "TEXT"),
    ("grams", "BIGINT"),
    ("value_vnd", "BIGINT"),
    ("orders", "BIGINT"),
    ("lines", "BIGINT"),
];
const HOUSEHOLDS_DAILY: &[(&str, &str)] = &[
    ("day", "TEXT"),
    ("province_code", "TEXT"),
    ("partner", "TEXT"),
    ("status", "BIGINT"),
    ("households", "BIGINT"),
];
const HOUSEHOLD_TOTALS: &[(&str, &str)] = &[
    ("province_code", "TEXT"),
    ("partner", "TEXT"),
    ("status", "BIGINT"),
    ("households", "BIGINT"),
];

/// An upsert that adds the JSON rows' measures to what the table holds.
fn increment_sql(postgres: bool, table: &str, columns: &[(&str, &str)], keys: usize) -> String {
    let (select, from) = json_rows(postgres, 1, columns);
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    let updates: Vec<String> = names[keys..]
        .iter()
        .map(|n| format!("{n} = {table}.{n} + excluded.{n}"))
        .collect();
    format!(
        "INSERT INTO {table} ({}) SELECT {select} FROM {from} ON CONFLICT ({}) DO UPDATE SET {}",
        names.join(", "),
        names[..keys].join(", "),
        updates.join(", ")
    )
}

/// The SQL implementation of [`GatewayStore`], native on PostgreSQL and on SQLite.
pub struct SqlStore {
    db: Database,
    upserts: [String; 4],
}

impl SqlStore {
    /// Opens the store on `db`, migrating it.
    pub async fn open(db: Database) -> anyhow::Result<Self> {
        db.migrate(&POSTGRES_MIGRATIONS, &SQLITE_MIGRATIONS).await?;
        let pg = db.is_postgres();
        let upserts = [
            increment_sql(pg, "sales_daily", SALES_DAILY, 4),
            increment_sql(pg, "sales_totals", SALES_TOTALS, 2),
            increment_sql(pg, "households_daily", HOUSEHOLDS_DAILY, 4),
            increment_sql(pg, "household_totals", HOUSEHOLD_TOTALS, 3),
        ];
        Ok(SqlStore { db, upserts })
    }

    /// The underlying database.
    pub fn database(&self) -> &Database {
        &self.db
    }
}

/// The JSON rows of the four rollups for a sum of deltas.
fn rollup_rows(d: &Deltas) -> [Vec<Value>; 4] {
    let sales_daily = d
        .sales_daily
        .iter()
        .map(|((day, p, partner, c), v)| {
            json!({"day": day, "province_code": p, "partner": partner, "category": c,
                   "grams": v[0], "value_vnd": v[1], "orders": v[2], "lines": v[3]})
        })
        .collect();
    let sales_totals = d
        .sales_totals
        .iter()
        .map(|((p, partner), v)| {
            json!({"province_code": p, "partner": partner, "grams": v[0], "value_vnd": v[1], "orders": v[2], "lines": v[3]})
        })
        .collect();
    let households_daily = d
        .households_daily
        .iter()
        .map(|((day, p, partner, s), n)| {
            json!({"day": day, "province_code": p, "partner": partner, "status": s, "households": n})
        })
        .collect();
    let household_totals = d
        .household_totals
        .iter()
        .map(|((p, partner, s), n)| json!({"province_code": p, "partner": partner, "status": s, "households": n}))
        .collect();
    [
        sales_daily,
        sales_totals,
        households_daily,
        household_totals,
    ]
}

fn merge(into: &mut Deltas, from: &Deltas) {
    for (k, v) in &from.sales_daily {
        let cell = into.sales_daily.entry(k.clone()).or_default();
        cell.iter_mut().zip(v).for_each(|(a, b)| *a += b);
    }
    for (k, v) in &from.sales_totals {
        let cell = into.sales_totals.entry(k.clone()).or_default();
        cell.iter_mut().zip(v).for_each(|(a, b)| *a += b);
    }
    for (k, v) in &from.households_daily {
        *into.households_daily.entry(k.clone()).or_default() += v;
    }
    for (k, v) in &from.household_totals {
        *into.household_totals.entry(k.clone()).or_default() += v;
    }
    into.newest_ms = into.newest_ms.max(from.newest_ms);
}

#[async_trait]
impl GatewayStore for SqlStore {
    async fn apply(&self, events: &[PendingEvent]) -> Result<usize> {
        let mut ordered: Vec<&PendingEvent> = events.iter().collect();
        ordered.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        ordered.dedup_by(|a, b| a.event_id == b.event_id);
        let _guard = self.db.write_guard().await;
        with_db!(&self.db.pool, pool => {
            let mut tx = pool.begin().await?;
            let mut total = Deltas::default();
            let mut applied = 0;
            for event in ordered {
                if inbox_claim!(&mut *tx, &event.event_id)? {
                    merge(&mut total, &event.deltas);
                    applied += 1;
                }
            }
            for (sql, rows) in self.upserts.iter().zip(rollup_rows(&total)) {
                if !rows.is_empty() {
                    let json = serde_json::to_string(&rows).map_err(Error::internal)?;
                    sqlx::query(sql).bind(json).execute(&mut *tx).await?;
                }
            }
            if total.newest_ms > 0 {
                sqlx::query(
                    "INSERT INTO meta (key, value) VALUES ('as_of_ms', $1) ON CONFLICT (key) DO UPDATE \
                     SET value = CASE WHEN excluded.value > meta.value THEN excluded.value ELSE meta.value END",
                )
                .bind(total.newest_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(applied)
        })
    }

    async fn sales_totals(&self) -> Result<Vec<SalesTotal>> {
        with_db!(&self.db.pool, pool => {
            let rows = sqlx::query("SELECT province_code, partner, grams, value_vnd, orders, lines FROM sales_totals")
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(SalesTotal {
                        province_code: r.try_get("province_code")?,
                        partner: r.try_get("partner")?,
                        cell: [r.try_get("grams")?, r.try_get("value_vnd")?, r.try_get("orders")?, r.try_get("lines")?],
                    })
                })
                .collect()
        })
    }

    async fn household_totals(&self) -> Result<Vec<HouseholdTotal>> {
        with_db!(&self.db.pool, pool => {
            let rows = sqlx::query("SELECT province_code, partner, status, households FROM household_totals")
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(HouseholdTotal {
                        province_code: r.try_get("province_code")?,
                        partner: r.try_get("partner")?,
                        status: r.try_get("status")?,
                        households: r.try_get("households")?,
                    })
                })
                .collect()
        })
    }

    async fn as_of_ms(&self) -> Result<Option<i64>> {
        Ok(with_db!(&self.db.pool, pool => {
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'as_of_ms'").fetch_optional(pool).await?
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
        let rows: Vec<(String, i64)> = with_db!(&self.db.pool, pool => {
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
}
