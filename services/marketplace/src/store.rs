//! The marketplace's store: partners' records, batches, and the outbox, on PostgreSQL or SQLite
//! behind one trait. One transaction per batch writes the records, the batch's result and raw
//! request, and the event, so a batch is applied whole, with its event, or not at all.

use std::collections::HashMap;

use agriportal_platform::outbox::{self, Outbox, OutboxEvent};
use agriportal_platform::reference::Partner;
use agriportal_platform::retention::Prune;
use agriportal_platform::storage::{
    now_ms, BulkUpsert, Cell, ColumnType, Database, Migrations, Rows, TxInner,
};
use agriportal_platform::{outbox_bind, with_db, with_tx, Error, Result};
use agriportal_proto::marketplace::v1 as pb;
use async_trait::async_trait;
use prost::Message;
use serde::{de::DeserializeOwned, Serialize};

use agriportal_platform::reconcile::{cells_from_rows, CellRow};

use crate::domain::{classify, Change, Household, Keyed, SaleLine, Validated};
use crate::error;

/// The marketplace's migrations (schema `marketplace`, or `marketplace.sqlite`); the kit
/// appends its own tables.
pub fn migrations() -> Migrations {
    Migrations::new(
        sqlx::migrate!("./migrations/postgres"),
        sqlx::migrate!("./migrations/sqlite"),
    )
}

/// The batches table, pruned by age (`--marketplace-batch-retention-days`).
pub const BATCHES: Prune = Prune {
    table: "batches",
    key: "partner, batch_id",
    time_column: "received_at_ms",
};

/// A validated batch, ready to apply.
#[derive(Debug)]
pub struct Batch<T> {
    /// The partner's idempotency key.
    pub batch_id: String,
    /// Hash of the content (see `domain::content_hash`).
    pub content_hash: String,
    /// The request as received, kept for audit and replay.
    pub request: Vec<u8>,
    /// Valid records and rejections.
    pub validated: Validated<T>,
}

/// Figures of the records held for one partner, for reconciliation and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldTotals {
    /// Sales lines held.
    pub lines: i64,
    /// Grams over all lines.
    pub grams: i64,
    /// Đồng over all lines.
    pub value_vnd: i64,
    /// Orders over all lines.
    pub orders: i64,
    /// Households held.
    pub households: i64,
}

/// What the marketplace service needs from storage.
#[async_trait]
pub trait MarketplaceStore: Send + Sync + 'static {
    /// Applies a sales batch of `partner` (or returns the result of its earlier identical push).
    async fn push_sales(&self, partner: Partner, batch: Batch<SaleLine>) -> Result<pb::PushResult>;
    /// Applies an onboarding batch of `partner` (or returns the earlier result).
    async fn push_onboarding(
        &self,
        partner: Partner,
        batch: Batch<Household>,
    ) -> Result<pb::PushResult>;
    /// The result of an earlier batch of `partner`.
    async fn get_batch(&self, partner: Partner, batch_id: &str) -> Result<Option<pb::PushResult>>;
    /// Totals of what is held for `partner`.
    async fn held_totals(&self, partner: Partner) -> Result<HeldTotals>;
    /// `partner`'s records of `kind` folded into the gateway's rollup cells (all provinces, or
    /// one), then the outbox backlog, read in that order: a zero backlog means every event
    /// behind the cells had been published.
    async fn rollup_cells(
        &self,
        partner: Partner,
        kind: pb::RollupKind,
        province: Option<&str>,
    ) -> Result<RollupCells>;
}

/// Cells recomputed from the records, with the outbox backlog read after them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RollupCells {
    /// Non-empty cells.
    pub cells: Vec<pb::RollupCell>,
    /// Events committed but not yet published.
    pub unsent_events: i64,
}

/// How one kind of record is stored and announced.
trait RecordKind: Keyed + Serialize + DeserializeOwned + PartialEq + Clone + Send + Sync {
    /// Batch kind, also part of the content hash.
    const KIND: &'static str;
    /// Table holding the records.
    const TABLE: &'static str;
    /// Columns after `partner`, the key first, with their types.
    const COLUMNS: &'static [(&'static str, ColumnType)];
    /// Appends this record's row to `rows`: `partner`, one value per entry of
    /// [`Self::COLUMNS`] in that order, then `batch_id` and `now` (the columns of
    /// [`KindSql::new`]'s upsert).
    fn push_row<'a>(&'a self, rows: &mut Rows<'a>, partner: &'a str, batch_id: &'a str, now: i64);
    /// Builds the event for a batch's changes.
    fn event(
        partner: Partner,
        batch_id: &str,
        event_id: &str,
        changes: &[Change<Self>],
    ) -> OutboxEvent;
}

impl RecordKind for SaleLine {
    const KIND: &'static str = "sales";
    const TABLE: &'static str = "sales_records";
    const COLUMNS: &'static [(&'static str, ColumnType)] = &[
        ("record_id", ColumnType::Text),
        ("sale_date", ColumnType::Text),
        ("province_code", ColumnType::Text),
        ("commune_code", ColumnType::Text),
        ("category", ColumnType::Text),
        ("quantity_grams", ColumnType::BigInt),
        ("value_vnd", ColumnType::BigInt),
        ("orders", ColumnType::BigInt),
        // Nullable (migration 0002): lines stored before it, or sent without it, hold NULL.
        ("household_ref", ColumnType::OptText),
    ];
    fn push_row<'a>(&'a self, rows: &mut Rows<'a>, partner: &'a str, batch_id: &'a str, now: i64) {
        rows.push([
            Cell::Text(partner),
            Cell::Text(&self.record_id),
            Cell::Text(&self.sale_date),
            Cell::Text(&self.province_code),
            Cell::Text(&self.commune_code),
            Cell::Text(&self.category),
            Cell::Int(self.quantity_grams),
            Cell::Int(self.value_vnd),
            Cell::Int(self.orders),
            Cell::OptText(self.household_ref.as_deref()),
            Cell::Text(batch_id),
            Cell::Int(now),
        ]);
    }
    fn event(
        partner: Partner,
        batch_id: &str,
        event_id: &str,
        changes: &[Change<Self>],
    ) -> OutboxEvent {
        let changes = changes
            .iter()
            .map(|c| match c {
                Change::New(current) => pb::SalesChange {
                    record_id: current.record_id.clone(),
                    previous: None,
                    current: Some(current.figures()),
                },
                Change::Corrected { previous, current } => pb::SalesChange {
                    record_id: current.record_id.clone(),
                    previous: Some(previous.figures()),
                    current: Some(current.figures()),
                },
            })
            .collect();
        let event = pb::SalesRecorded {
            event_id: event_id.to_string(),
            partner: partner.to_proto() as i32,
            batch_id: batch_id.to_string(),
            recorded_at_ms: now_ms(),
            changes,
        };
        OutboxEvent::new(&pb::SALES_RECORDED, &event)
    }
}

impl RecordKind for Household {
    const KIND: &'static str = "onboarding";
    const TABLE: &'static str = "households";
    const COLUMNS: &'static [(&'static str, ColumnType)] = &[
        ("household_ref", ColumnType::Text),
        ("province_code", ColumnType::Text),
        ("commune_code", ColumnType::Text),
        ("registered_on", ColumnType::Text),
        ("status", ColumnType::BigInt),
        ("categories", ColumnType::Text),
        // Nullable (migration 0002): NULL when the partner did not say. The flag is BOOLEAN on
        // PostgreSQL and 0/1 on SQLite (a bound `bool`); the domain reads both.
        ("listed_products", ColumnType::OptBigInt),
        ("has_digital_address", ColumnType::OptBool),
    ];
    fn push_row<'a>(&'a self, rows: &mut Rows<'a>, partner: &'a str, batch_id: &'a str, now: i64) {
        rows.push([
            Cell::Text(partner),
            Cell::Text(&self.household_ref),
            Cell::Text(&self.province_code),
            Cell::Text(&self.commune_code),
            Cell::Text(&self.registered_on),
            Cell::Int(i64::from(self.status)),
            Cell::Text(&self.categories),
            Cell::OptInt(self.listed_products),
            Cell::OptBool(self.has_digital_address),
            Cell::Text(batch_id),
            Cell::Int(now),
        ]);
    }
    fn event(
        partner: Partner,
        batch_id: &str,
        event_id: &str,
        changes: &[Change<Self>],
    ) -> OutboxEvent {
        let changes = changes
            .iter()
            .map(|c| match c {
                Change::New(current) => pb::HouseholdChange {
                    household_ref: current.household_ref.clone(),
                    previous: None,
                    current: Some(current.figures()),
                },
                Change::Corrected { previous, current } => pb::HouseholdChange {
                    household_ref: current.household_ref.clone(),
                    previous: Some(previous.figures()),
                    current: Some(current.figures()),
                },
            })
            .collect();
        let event = pb::HouseholdsRecorded {
            event_id: event_id.to_string(),
            partner: partner.to_proto() as i32,
            batch_id: batch_id.to_string(),
            recorded_at_ms: now_ms(),
            changes,
        };
        OutboxEvent::new(&pb::HOUSEHOLDS_RECORDED, &event)
    }
}

/// SQL of one record kind for one backend. The changed records are bound as parameters, each
/// value as its own type ([`BulkUpsert`]): on PostgreSQL one array per column, so a batch of any
/// size is one statement of a fixed text; on SQLite multi-row `VALUES` of a few fixed sizes.
struct KindSql {
    /// The earlier batch of this id (a row with `kind` set) and the records the batch's keys
    /// hold (rows with `record`, each a JSON object): one round trip for both reads.
    select_earlier_and_held: String,
    /// The records' upsert (SQLite runs it alone; PostgreSQL inside [`KindSql::write_all`]).
    upsert: BulkUpsert,
    /// PostgreSQL only: the upsert, the outbox row and the batch row in one statement (one
    /// round trip instead of three; SQLite has no data-modifying `WITH`).
    write_all: String,
}

/// SQL inserting a batch row; binds partner, batch_id, kind, content_hash, result, request, now.
const INSERT_BATCH: &str =
    "INSERT INTO batches (partner, batch_id, kind, content_hash, result, request, received_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Parameters of [`KindSql::write_all`] before the upsert's arrays: $1 partner, $2 batch_id,
/// $3 now, $4 kind, $5 content_hash, $6 result, $7 request, $8..$12 the outbox row.
const WRITE_ALL_FIXED: usize = 12;

impl KindSql {
    fn new<K: RecordKind>(postgres: bool) -> Self {
        let key = K::COLUMNS[0].0;
        let names: Vec<&str> = K::COLUMNS.iter().map(|(n, _)| *n).collect();
        // `= ANY(ARRAY(…))` on PostgreSQL, not `IN (SELECT …)`: the array is computed once
        // and both key columns become the index condition whatever the statistics say. With
        // `IN` and statistics older than the table's growth the planner chose a hash join over
        // every record of the partner (11 ms for 10 keys at 33,000 records, growing with the
        // table; the other partner's p99 went from 9 to 47-86 ms under `bench overload`).
        let (key_match, object, as_text) = if postgres {
            (
                format!("{key} = ANY(ARRAY(SELECT jsonb_array_elements_text($3::jsonb)))"),
                "json_build_object",
                "::text",
            )
        } else {
            (
                format!("{key} IN (SELECT value FROM json_each($3))"),
                "json_object",
                "",
            )
        };
        let fields: Vec<String> = names.iter().map(|n| format!("'{n}', {n}")).collect();
        let select_earlier_and_held = format!(
            "SELECT kind, content_hash, result, NULL{as_text} AS record FROM batches WHERE partner = $1 AND batch_id = $2 \
             UNION ALL \
             SELECT NULL, NULL, NULL, {object}({fields}){as_text} FROM {table} WHERE partner = $1 AND {key_match}",
            fields = fields.join(", "),
            table = K::TABLE,
        );
        let updates: Vec<String> = names[1..]
            .iter()
            .chain(["batch_id", "updated_at_ms"].iter())
            .map(|n| format!("{n} = excluded.{n}"))
            .collect();
        let columns: Vec<(&str, ColumnType)> = std::iter::once(("partner", ColumnType::Text))
            .chain(K::COLUMNS.iter().copied())
            .chain([
                ("batch_id", ColumnType::Text),
                ("updated_at_ms", ColumnType::BigInt),
            ])
            .collect();
        let upsert = BulkUpsert::after_parameters(
            K::TABLE,
            &columns,
            &format!(
                "ON CONFLICT (partner, {key}) DO UPDATE SET {updates}",
                updates = updates.join(", "),
            ),
            WRITE_ALL_FIXED,
        );
        let write_all = format!(
            "WITH upserted AS ({upsert}), \
             queued AS ({outbox}) \
             INSERT INTO batches (partner, batch_id, kind, content_hash, result, request, received_at_ms) \
             VALUES ($1, $2, $4, $5, $6, $7, $3)",
            upsert = upsert.postgres_sql(),
            outbox = agriportal_platform::outbox::insert_sql_from(8),
        );
        KindSql {
            select_earlier_and_held,
            upsert,
            write_all,
        }
    }
}

fn partner_index(partner: Partner) -> usize {
    match partner {
        Partner::Postmart => 0,
        Partner::Voso => 1,
    }
}

/// The earlier batch of an id (`kind` set) or a record its keys hold (`record` set): the
/// two kinds of rows of [`KindSql::select_earlier_and_held`].
#[derive(sqlx::FromRow)]
struct EarlierOrHeld {
    kind: Option<String>,
    content_hash: Option<String>,
    result: Option<Vec<u8>>,
    record: Option<String>,
}

/// Totals of one partner's sales lines.
#[derive(sqlx::FromRow)]
struct SalesHeld {
    lines: i64,
    grams: i64,
    value_vnd: i64,
    orders: i64,
}

/// The SQL implementation of [`MarketplaceStore`], native on PostgreSQL and on SQLite.
pub struct SqlStore {
    db: Database,
    sales: KindSql,
    households: KindSql,
    outbox: Outbox,
    /// One turn per partner in this process, taken before a connection is borrowed: a
    /// partner's batches queue here rather than in PostgreSQL's advisory lock, where every
    /// waiter would hold a pooled connection and a flooding partner could take the whole pool
    /// from the other one.
    turns: [tokio::sync::Mutex<()>; 2],
}

impl SqlStore {
    /// The store on `db` (opened and migrated by the kit); wakes `outbox` after each commit
    /// that wrote an event.
    pub fn new(db: Database, outbox: Outbox) -> Self {
        let postgres = db.is_postgres();
        SqlStore {
            sales: KindSql::new::<SaleLine>(postgres),
            households: KindSql::new::<Household>(postgres),
            db,
            outbox,
            turns: [tokio::sync::Mutex::new(()), tokio::sync::Mutex::new(())],
        }
    }

    /// The underlying database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    async fn push<K: RecordKind>(
        &self,
        sql: &KindSql,
        partner: Partner,
        batch: Batch<K>,
    ) -> Result<pb::PushResult> {
        let Batch {
            batch_id,
            content_hash,
            request,
            validated,
        } = batch;
        let Validated {
            records,
            rejections,
        } = validated;
        let keys = serde_json::to_string(&records.iter().map(|r| r.key()).collect::<Vec<_>>())
            .map_err(Error::internal)?;
        let _turn = self.turns[partner_index(partner)].lock().await;
        let mut tx = self.db.begin().await?;
        let rows: Vec<EarlierOrHeld> = with_tx!(&mut tx, |conn| {
            if self.db.is_postgres() {
                // Serialises a partner's batches so the values a correction replaces are the
                // values held when it commits; the two partners still ingest in parallel.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(format!("marketplace:{}", partner.code()))
                    .execute(&mut *conn)
                    .await?;
            }
            sqlx::query_as(&sql.select_earlier_and_held)
                .bind(partner.code())
                .bind(&batch_id)
                .bind(&keys)
                .fetch_all(&mut *conn)
                .await?
        });
        let mut held: HashMap<String, K> = HashMap::with_capacity(rows.len());
        for row in rows {
            // `kind` is set only on the earlier batch's row, `record` only on held records;
            // the store always writes the earlier batch's hash and result, so a NULL there
            // fails loudly rather than decoding as empty.
            if let Some(kind) = row.kind {
                let hash = row
                    .content_hash
                    .ok_or_else(|| Error::internal("a batch row without its content hash"))?;
                if hash != content_hash || kind != K::KIND {
                    return Err(error::batch_conflict(&batch_id));
                }
                let result = row
                    .result
                    .ok_or_else(|| Error::internal("a batch row without its result"))?;
                return pb::PushResult::decode(result.as_slice()).map_err(Error::internal);
            }
            let record = row
                .record
                .ok_or_else(|| Error::internal("a held-record row without its record"))?;
            let record: K = serde_json::from_str(&record).map_err(Error::internal)?;
            held.insert(record.key().to_string(), record);
        }
        let (changes, [accepted, unchanged, corrected]) = classify(records, &held);
        let now = now_ms();
        let result = pb::PushResult {
            batch_id: batch_id.clone(),
            accepted,
            unchanged,
            corrected,
            rejected: u32::try_from(rejections.len()).unwrap_or(u32::MAX),
            rejections,
        };
        let encoded = result.encode_to_vec();
        // The changed records' rows, and their event.
        let mut rows = Rows::with_capacity(changes.len(), sql.upsert.width());
        for change in &changes {
            match change {
                Change::New(r) | Change::Corrected { current: r, .. } => {
                    r.push_row(&mut rows, partner.code(), &batch_id, now)
                }
            }
        }
        let events = events_of(partner, &batch_id, &changes);
        let wrote_event = !events.is_empty();
        match events.split_first() {
            // PostgreSQL: records, (first) event and batch row in one statement.
            Some((event, more)) if tx.is_postgres() => {
                let TxInner::Postgres(conn) = tx.inner_mut() else {
                    return Err(Error::internal("a PostgreSQL transaction that is not"));
                };
                let query = sqlx::query(&sql.write_all)
                    .bind(partner.code())
                    .bind(&batch_id)
                    .bind(now)
                    .bind(K::KIND)
                    .bind(&content_hash)
                    .bind(&encoded)
                    .bind(&request);
                let query = sql.upsert.bind_arrays(outbox_bind!(query, &event), &rows)?;
                query.execute(&mut **conn).await?;
                for event in more {
                    outbox::enqueue(&mut tx, event).await?;
                }
            }
            events => {
                if let Some((first, more)) = events {
                    sql.upsert.execute(&mut tx, &rows).await?;
                    for event in std::iter::once(first).chain(more) {
                        outbox::enqueue(&mut tx, event).await?;
                    }
                }
                with_tx!(&mut tx, |conn| {
                    sqlx::query(INSERT_BATCH)
                        .bind(partner.code())
                        .bind(&batch_id)
                        .bind(K::KIND)
                        .bind(&content_hash)
                        .bind(&encoded)
                        .bind(&request)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                });
            }
        }
        tx.commit().await?;
        if wrote_event {
            self.outbox.wake();
        }
        Ok(result)
    }
}

/// Largest encoded event the marketplace writes. NATS refuses a message over its server's
/// `max_payload` (1 MiB by default, headers included), and the relay retried such an event
/// for ever, holding back every event behind it; a full batch of 10,000 records with long
/// keys encodes to several MiB. Half the limit leaves room for headers and a server set lower.
pub const MAX_EVENT_BYTES: usize = 512 * 1024;

/// The events announcing a batch's `changes`: one, or as many as keep each under
/// [`MAX_EVENT_BYTES`], the changes in order and each in exactly one event (consumers add
/// changes, so how a batch is split does not change what they sum). None without changes.
fn events_of<K: RecordKind>(
    partner: Partner,
    batch_id: &str,
    changes: &[Change<K>],
) -> Vec<OutboxEvent> {
    if changes.is_empty() {
        return Vec::new();
    }
    let event_id = uuid::Uuid::now_v7().to_string();
    let event = K::event(partner, batch_id, &event_id, changes);
    if event.payload.len() <= MAX_EVENT_BYTES || changes.len() < 2 {
        return vec![event];
    }
    // Halving re-encodes each change once per level: a few levels for the largest batches.
    let (first, second) = changes.split_at(changes.len() / 2);
    let mut events = events_of(partner, batch_id, first);
    events.extend(events_of(partner, batch_id, second));
    events
}

#[async_trait]
impl MarketplaceStore for SqlStore {
    async fn push_sales(&self, partner: Partner, batch: Batch<SaleLine>) -> Result<pb::PushResult> {
        self.push(&self.sales, partner, batch).await
    }

    async fn push_onboarding(
        &self,
        partner: Partner,
        batch: Batch<Household>,
    ) -> Result<pb::PushResult> {
        self.push(&self.households, partner, batch).await
    }

    async fn get_batch(&self, partner: Partner, batch_id: &str) -> Result<Option<pb::PushResult>> {
        let result: Option<Vec<u8>> = with_db!(&self.db.pool, |pool| {
            sqlx::query_scalar("SELECT result FROM batches WHERE partner = $1 AND batch_id = $2")
                .bind(partner.code())
                .bind(batch_id)
                .fetch_optional(pool)
                .await?
        });
        result
            .map(|bytes| pb::PushResult::decode(bytes.as_slice()).map_err(Error::internal))
            .transpose()
    }

    async fn held_totals(&self, partner: Partner) -> Result<HeldTotals> {
        let (sales, households): (SalesHeld, i64) = with_db!(&self.db.pool, |pool| {
            let sales = sqlx::query_as(
                "SELECT COUNT(*) AS lines, CAST(COALESCE(SUM(quantity_grams), 0) AS BIGINT) AS grams, \
                 CAST(COALESCE(SUM(value_vnd), 0) AS BIGINT) AS value_vnd, \
                 CAST(COALESCE(SUM(orders), 0) AS BIGINT) AS orders \
                 FROM sales_records WHERE partner = $1",
            )
            .bind(partner.code())
            .fetch_one(pool)
            .await?;
            let households =
                sqlx::query_scalar("SELECT COUNT(*) FROM households WHERE partner = $1")
                    .bind(partner.code())
                    .fetch_one(pool)
                    .await?;
            (sales, households)
        });
        Ok(HeldTotals {
            lines: sales.lines,
            grams: sales.grams,
            value_vnd: sales.value_vnd,
            orders: sales.orders,
            households,
        })
    }

    async fn rollup_cells(
        &self,
        partner: Partner,
        kind: pb::RollupKind,
        province: Option<&str>,
    ) -> Result<RollupCells> {
        // The same folding as the gateway's: sales by (sale day, province, category) with
        // grams, đồng, orders and lines; households by (registration day, province, status).
        let sql = match kind {
            pb::RollupKind::Sales => {
                "SELECT sale_date AS day, province_code, category, CAST(0 AS BIGINT) AS status, \
                 CAST(SUM(quantity_grams) AS BIGINT) AS grams, CAST(SUM(value_vnd) AS BIGINT) AS value_vnd, \
                 CAST(SUM(orders) AS BIGINT) AS orders, COUNT(*) AS n FROM sales_records \
                 WHERE partner = $1 AND ($2 = '' OR province_code = $2) GROUP BY sale_date, province_code, category"
            }
            pb::RollupKind::Households => {
                "SELECT registered_on AS day, province_code, '' AS category, status, CAST(0 AS BIGINT) AS grams, \
                 CAST(0 AS BIGINT) AS value_vnd, CAST(0 AS BIGINT) AS orders, COUNT(*) AS n FROM households \
                 WHERE partner = $1 AND ($2 = '' OR province_code = $2) GROUP BY registered_on, province_code, status"
            }
            pb::RollupKind::Unspecified => return Err(Error::invalid("kind must be sales or households")),
        };
        let rows: Vec<CellRow> = with_db!(&self.db.pool, |pool| {
            sqlx::query_as(sql)
                .bind(partner.code())
                .bind(province.unwrap_or_default())
                .fetch_all(pool)
                .await?
        });
        // Read after the cells: zero means every event behind them had been published.
        let unsent_events = outbox::pending(&self.db).await?;
        Ok(RollupCells {
            cells: cells_from_rows(rows)?,
            unsent_events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agriportal_platform::{testing, Config};

    /// A full batch of corrections with the longest keys a partner may send: the events stay
    /// under the limit NATS sets (1 MiB by default), every change in exactly one of them, in
    /// order; a small batch stays one event.
    #[test]
    fn a_batch_s_changes_are_split_over_events_under_the_size_limit() {
        use prost::Message as _;
        let key = |i: usize| format!("{i:0>128}");
        let line = |i: usize, grams: i64| SaleLine {
            record_id: key(i),
            sale_date: "2025-08-01".into(),
            province_code: "79".into(),
            commune_code: "26734".into(),
            category: "vegetables".into(),
            quantity_grams: grams,
            value_vnd: grams * 31,
            orders: 1,
            household_ref: Some(format!("h{}", key(i))),
        };
        let changes: Vec<Change<SaleLine>> = (0..10_000)
            .map(|i| Change::Corrected {
                previous: line(i, 1_000),
                current: line(i, 2_000),
            })
            .collect();
        let one = SaleLine::event(Partner::Voso, "b", "e", &changes);
        assert!(one.payload.len() > 2 * 1024 * 1024, "the case is large");

        let events = events_of(Partner::Voso, "b", &changes);
        assert!(events.len() >= 5, "{} events", events.len());
        let mut ids = Vec::new();
        let mut seen = Vec::new();
        for event in &events {
            assert!(
                event.payload.len() <= MAX_EVENT_BYTES,
                "{}",
                event.payload.len()
            );
            let decoded = pb::SalesRecorded::decode(event.payload.as_slice()).unwrap();
            assert_eq!(decoded.batch_id, "b");
            ids.push(decoded.event_id);
            seen.extend(decoded.changes.into_iter().map(|c| c.record_id));
        }
        let wanted: Vec<String> = (0..10_000).map(key).collect();
        assert_eq!(seen, wanted);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), events.len(), "each event its own id");

        assert_eq!(events_of(Partner::Voso, "b", &changes[..10]).len(), 1);
        assert!(events_of::<SaleLine>(Partner::Voso, "b", &[]).is_empty());
    }

    /// The lookup of a batch's held records must use the primary key for both columns even
    /// when the table's statistics are missing or stale (autovacuum has not caught up with a
    /// partner's growth). With `IN (SELECT …)` the planner chose a hash join over every record
    /// of the partner there.
    #[tokio::test]
    async fn held_records_are_looked_up_by_key_whatever_the_statistics() {
        let Some(url) = testing::fresh_postgres("held_lookup_plan").await else {
            return;
        };
        let mut config = Config::embedded("unused");
        config.database_url = Some(url);
        let db = Database::connect(&config, "marketplace").await.unwrap();
        db.migrate(&migrations()).await.unwrap();
        let store = SqlStore::new(db, Outbox::detached());
        let agriportal_platform::storage::Pool::Postgres(pool) = &store.database().pool else {
            panic!("expected PostgreSQL");
        };
        sqlx::raw_sql(
            "ALTER TABLE sales_records SET (autovacuum_enabled = false); \
             INSERT INTO sales_records SELECT 'voso', 'r' || g, '2024-01-01', '31', '', \
             'vegetables', 1, 1, 1, 'b', 0 FROM generate_series(1, 50000) AS g",
        )
        .execute(pool)
        .await
        .unwrap();
        let keys = serde_json::to_string(&["r1", "r2", "r3", "r4", "r5", "r6", "r7"]).unwrap();
        let run = |sql: String| {
            let keys = keys.clone();
            async move {
                sqlx::query(&sql)
                    .bind("voso")
                    .bind("some-batch")
                    .bind(keys)
                    .fetch_all(pool)
                    .await
                    .unwrap()
            }
        };
        let plan: Vec<String> = run(format!("EXPLAIN {}", store.sales.select_earlier_and_held))
            .await
            .iter()
            .map(|row| sqlx::Row::get::<String, _>(row, 0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.lines()
                .any(|l| l.contains("Index Cond") && l.contains("record_id = ANY")),
            "held records are not looked up by key:\n{plan}"
        );
        // And the statement finds what is there.
        let found = run(store.sales.select_earlier_and_held.clone()).await;
        assert_eq!(found.len(), 7);
    }
}
