//! The indicators store: one SQL source for PostgreSQL and SQLite (`with_db!` / `with_tx!`).
//! Writes that belong together (a report, its values, its audit entries and its events) take a
//! [`Tx`] so the service composes them into one transaction; the catalogue and targets, each a
//! single change, commit their own.

use agriportal_platform::outbox::{self, Outbox, OutboxEvent};
use agriportal_platform::storage::{now_ms, Database, Migrations, Tx};
use agriportal_platform::{with_db, with_tx, Error, Result};
use agriportal_proto::indicators::v1 as pb;
use agriportal_proto::{Event, Topic};

/// The service's migrations; the kit appends its own tables (outbox, inbox, parked events).
pub fn migrations() -> Migrations {
    Migrations::new(
        sqlx::migrate!("./migrations/postgres"),
        sqlx::migrate!("./migrations/sqlite"),
    )
}

/// A report's row: its state and times, without values.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ReportRow {
    /// Province code since 2025.
    pub province_code: String,
    /// Period id.
    pub period: String,
    /// Last day of the period, `YYYY-MM-DD` (orders periods of every kind).
    pub period_end: String,
    /// `ReportState` number.
    pub state: i64,
    /// Version: 1, +1 per reopening.
    pub version: i64,
    /// Change counter, carried by every event.
    pub sequence: i64,
    /// Deadline, `YYYY-MM-DD`.
    pub deadline: String,
    /// Last submission, ms (0: never).
    pub submitted_at_ms: i64,
    /// Approval, ms (0: not approved).
    pub approved_at_ms: i64,
    /// 1 when the last submission was on time.
    pub on_time: i64,
    /// Last review comment.
    pub review_comment: String,
    /// Last change, ms.
    pub updated_at_ms: i64,
}

impl ReportRow {
    /// The state.
    pub fn state(&self) -> pb::ReportState {
        pb::ReportState::try_from(i32::try_from(self.state).unwrap_or(0))
            .unwrap_or(pb::ReportState::Unspecified)
    }

    /// `79/202611`, as messages name a report.
    pub fn key(&self) -> String {
        format!("{}/{}", self.province_code, self.period)
    }

    /// The version as the API carries it.
    pub fn version_u32(&self) -> u32 {
        u32::try_from(self.version).unwrap_or(0)
    }

    /// The sequence as events carry it.
    pub fn sequence_u64(&self) -> u64 {
        u64::try_from(self.sequence).unwrap_or(0)
    }

    /// The report in a list.
    pub fn summary(&self, value_count: i64) -> pb::ReportSummary {
        pb::ReportSummary {
            province_code: self.province_code.clone(),
            period: self.period.clone(),
            state: small(self.state),
            version: self.version_u32(),
            deadline: self.deadline.clone(),
            submitted_at_ms: self.submitted_at_ms,
            approved_at_ms: self.approved_at_ms,
            value_count: u32::try_from(value_count).unwrap_or(u32::MAX),
            updated_at_ms: self.updated_at_ms,
            review_comment: self.review_comment.clone(),
        }
    }
}

/// One stored value of a report version.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ValueRow {
    /// Indicator code.
    pub indicator_code: String,
    /// The pre-2025 province it was entered for; empty otherwise.
    pub source_province_code: String,
    /// Canonical decimal text.
    pub value: String,
    /// Comment.
    pub comment: String,
}

impl ValueRow {
    /// As the API carries it.
    pub fn to_proto(&self) -> pb::ReportedValue {
        pb::ReportedValue {
            indicator_code: self.indicator_code.clone(),
            value: self.value.clone(),
            comment: self.comment.clone(),
            source_province_code: self.source_province_code.clone(),
        }
    }
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    #[sqlx(flatten)]
    report: ReportRow,
    value_count: i64,
}

#[derive(sqlx::FromRow)]
struct IndicatorRow {
    code: String,
    position: i64,
    name_vi: String,
    name_en: String,
    unit: String,
    period_type: i64,
    source: i64,
    value_type: i64,
    national_target: String,
    measure: String,
    aggregation: i64,
    min_value: String,
    max_value: String,
    scale: i64,
    target_basis: String,
    revision: i64,
}

fn small(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(0)
}

fn unsigned(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

impl From<IndicatorRow> for pb::Indicator {
    fn from(r: IndicatorRow) -> Self {
        pb::Indicator {
            code: r.code,
            name_vi: r.name_vi,
            name_en: r.name_en,
            unit: r.unit,
            period_type: small(r.period_type),
            source: small(r.source),
            value_type: small(r.value_type),
            national_target: r.national_target,
            measure: r.measure,
            aggregation: small(r.aggregation),
            min_value: r.min_value,
            max_value: r.max_value,
            scale: unsigned(r.scale),
            target_basis: r.target_basis,
            revision: unsigned(r.revision),
            position: unsigned(r.position),
        }
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    at_ms: i64,
    actor: String,
    action: String,
    indicator_code: String,
    old_value: String,
    new_value: String,
    comment: String,
    version: i64,
    source_province_code: String,
}

#[derive(sqlx::FromRow)]
struct TargetRow {
    indicator_code: String,
    year: i64,
    province_code: String,
    value: String,
    set_at_ms: i64,
    set_by: String,
}

impl From<TargetRow> for pb::Target {
    fn from(r: TargetRow) -> Self {
        pb::Target {
            indicator_code: r.indicator_code,
            year: unsigned(r.year),
            province_code: r.province_code,
            value: r.value,
            set_at_ms: r.set_at_ms,
            set_by: r.set_by,
        }
    }
}

const INDICATOR_COLUMNS: &str = "code, position, name_vi, name_en, unit, period_type, source, \
     value_type, national_target, measure, aggregation, min_value, max_value, scale, \
     target_basis, revision";

const REPORT_COLUMNS: &str = "province_code, period, period_end, state, version, sequence, \
     deadline, submitted_at_ms, approved_at_ms, on_time, review_comment, updated_at_ms";

const INSERT_INDICATOR: &str = "INSERT INTO indicators (code, position, name_vi, name_en, unit, \
     period_type, source, value_type, national_target, measure, aggregation, min_value, \
     max_value, scale, target_basis, revision) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)";

const VALUE_WHERE: &str = "province_code = $1 AND period = $2 AND version = $3";

/// A new event id: time-ordered, unique across replicas.
pub fn event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Binds an indicator's sixteen columns in [`INDICATOR_COLUMNS`] order.
macro_rules! bind_indicator {
    ($query:expr, $i:expr) => {{
        let i: &pb::Indicator = $i;
        $query
            .bind(&i.code)
            .bind(i64::from(i.position))
            .bind(&i.name_vi)
            .bind(&i.name_en)
            .bind(&i.unit)
            .bind(i64::from(i.period_type))
            .bind(i64::from(i.source))
            .bind(i64::from(i.value_type))
            .bind(&i.national_target)
            .bind(&i.measure)
            .bind(i64::from(i.aggregation))
            .bind(&i.min_value)
            .bind(&i.max_value)
            .bind(i64::from(i.scale))
            .bind(&i.target_basis)
            .bind(i64::from(i.revision))
    }};
}

/// The indicators store.
pub struct Store {
    db: Database,
    outbox: Outbox,
}

impl Store {
    /// The store on the kit's opened database.
    pub fn new(db: Database, outbox: Outbox) -> Self {
        Store { db, outbox }
    }

    /// The database (tests read the outbox through it).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Begins a transaction.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(self.db.begin().await?)
    }

    /// Commits `tx` and wakes the outbox relay for the events it wrote.
    pub async fn commit(&self, tx: Tx) -> Result<()> {
        tx.commit().await?;
        self.outbox.wake();
        Ok(())
    }

    /// Writes `event` on `topic` inside `tx`.
    pub async fn enqueue<M: Event>(&self, tx: &mut Tx, topic: &Topic<M>, event: &M) -> Result<()> {
        outbox::enqueue(tx, &OutboxEvent::new(topic, event)).await?;
        Ok(())
    }

    /// Seeds the catalogue in one transaction: each indicator not yet stored is inserted with
    /// a `CatalogueChanged` event; stored ones are left as they are (an admin may have edited
    /// them), so restarts and replicas starting together publish each indicator once. Returns
    /// how many were inserted.
    pub async fn seed_catalogue(&self, catalogue: &[pb::Indicator]) -> Result<usize> {
        let mut tx = self.begin().await?;
        let at_ms = now_ms();
        let mut inserted = 0;
        for indicator in catalogue {
            let sql = format!("{INSERT_INDICATOR} ON CONFLICT (code) DO NOTHING");
            let rows = with_tx!(&mut tx, |conn| {
                bind_indicator!(sqlx::query(&sql), indicator)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
            });
            if rows == 1 {
                inserted += 1;
                let event = pb::CatalogueChanged {
                    event_id: event_id(),
                    indicator: Some(indicator.clone()),
                    at_ms,
                };
                self.enqueue(&mut tx, &pb::CATALOGUE_CHANGED, &event)
                    .await?;
            }
        }
        self.commit(tx).await?;
        Ok(inserted)
    }

    /// The catalogue, in position order.
    pub async fn indicators(&self) -> Result<Vec<pb::Indicator>> {
        let sql = format!("SELECT {INDICATOR_COLUMNS} FROM indicators ORDER BY position, code");
        let rows: Vec<IndicatorRow> = with_db!(&self.db.pool, |pool| {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(pb::Indicator::from).collect())
    }

    /// Adds or edits an indicator with its `CatalogueChanged` event: an edit keeps the
    /// position and takes revision + 1; a new one goes last with revision 1. Stored values are
    /// not touched.
    pub async fn save_indicator(&self, mut indicator: pb::Indicator) -> Result<pb::Indicator> {
        let mut tx = self.begin().await?;
        if tx.is_postgres() {
            // Two admins adding indicators at once must not get the same position.
            with_tx!(&mut tx, |conn| {
                sqlx::query("LOCK TABLE indicators IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *conn)
                    .await?;
            });
        }
        let existing: Option<(i64, i64)> = with_tx!(&mut tx, |conn| {
            sqlx::query_as("SELECT position, revision FROM indicators WHERE code = $1")
                .bind(&indicator.code)
                .fetch_optional(&mut *conn)
                .await?
        });
        let (position, revision) = match existing {
            Some((position, revision)) => (position, revision + 1),
            None => {
                let last: Option<i64> = with_tx!(&mut tx, |conn| {
                    sqlx::query_scalar("SELECT MAX(position) FROM indicators")
                        .fetch_one(&mut *conn)
                        .await?
                });
                (last.unwrap_or(0) + 1, 1)
            }
        };
        indicator.position = unsigned(position);
        indicator.revision = unsigned(revision);
        let sql = format!(
            "{INSERT_INDICATOR} ON CONFLICT (code) DO UPDATE SET name_vi = excluded.name_vi, \
             name_en = excluded.name_en, unit = excluded.unit, period_type = excluded.period_type, \
             source = excluded.source, value_type = excluded.value_type, \
             national_target = excluded.national_target, measure = excluded.measure, \
             aggregation = excluded.aggregation, min_value = excluded.min_value, \
             max_value = excluded.max_value, scale = excluded.scale, \
             target_basis = excluded.target_basis, revision = excluded.revision"
        );
        with_tx!(&mut tx, |conn| {
            bind_indicator!(sqlx::query(&sql), &indicator)
                .execute(&mut *conn)
                .await?;
        });
        let event = pb::CatalogueChanged {
            event_id: event_id(),
            indicator: Some(indicator.clone()),
            at_ms: now_ms(),
        };
        self.enqueue(&mut tx, &pb::CATALOGUE_CHANGED, &event)
            .await?;
        self.commit(tx).await?;
        Ok(indicator)
    }

    /// Sets a target (an empty value removes it) with its `TargetSet` event.
    pub async fn set_target(&self, target: pb::Target) -> Result<pb::Target> {
        let mut tx = self.begin().await?;
        let year = i64::from(target.year);
        with_tx!(&mut tx, |conn| {
            if target.value.is_empty() {
                sqlx::query(
                    "DELETE FROM targets WHERE indicator_code = $1 AND year = $2 AND province_code = $3",
                )
                .bind(&target.indicator_code)
                .bind(year)
                .bind(&target.province_code)
                .execute(&mut *conn)
                .await?;
            } else {
                sqlx::query(
                    "INSERT INTO targets (indicator_code, year, province_code, value, set_at_ms, set_by) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (indicator_code, year, province_code) \
                     DO UPDATE SET value = excluded.value, set_at_ms = excluded.set_at_ms, set_by = excluded.set_by",
                )
                .bind(&target.indicator_code)
                .bind(year)
                .bind(&target.province_code)
                .bind(&target.value)
                .bind(target.set_at_ms)
                .bind(&target.set_by)
                .execute(&mut *conn)
                .await?;
            }
        });
        let event = pb::TargetSet {
            event_id: event_id(),
            target: Some(target.clone()),
        };
        self.enqueue(&mut tx, &pb::TARGET_SET, &event).await?;
        self.commit(tx).await?;
        Ok(target)
    }

    /// Targets, of one indicator (`""`: all) and one year (0: all), by indicator, year and
    /// province.
    pub async fn targets(&self, indicator_code: &str, year: u32) -> Result<Vec<pb::Target>> {
        let rows: Vec<TargetRow> = with_db!(&self.db.pool, |pool| {
            sqlx::query_as(
                "SELECT indicator_code, year, province_code, value, set_at_ms, set_by FROM targets \
                 WHERE ($1 = '' OR indicator_code = $1) AND ($2 = 0 OR year = $2) \
                 ORDER BY indicator_code, year, province_code",
            )
            .bind(indicator_code)
            .bind(i64::from(year))
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(pb::Target::from).collect())
    }

    /// Serialises writers of one report until `tx` ends (PostgreSQL; SQLite's writer lock,
    /// taken by `begin`, already does).
    pub async fn lock_report(&self, tx: &mut Tx, province: &str, period: &str) -> Result<()> {
        if tx.is_postgres() {
            let key = format!("indicators/{province}/{period}");
            with_tx!(tx, |conn| {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(&key)
                    .execute(&mut *conn)
                    .await?;
            });
        }
        Ok(())
    }

    /// A report, inside `tx`.
    pub async fn report_in(
        &self,
        tx: &mut Tx,
        province: &str,
        period: &str,
    ) -> Result<Option<ReportRow>> {
        let sql = format!(
            "SELECT {REPORT_COLUMNS} FROM reports WHERE province_code = $1 AND period = $2"
        );
        Ok(with_tx!(tx, |conn| {
            sqlx::query_as(&sql)
                .bind(province)
                .bind(period)
                .fetch_optional(&mut *conn)
                .await?
        }))
    }

    /// A report.
    pub async fn report(&self, province: &str, period: &str) -> Result<Option<ReportRow>> {
        let sql = format!(
            "SELECT {REPORT_COLUMNS} FROM reports WHERE province_code = $1 AND period = $2"
        );
        Ok(with_db!(&self.db.pool, |pool| {
            sqlx::query_as(&sql)
                .bind(province)
                .bind(period)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Inserts or updates a report's row.
    pub async fn put_report(&self, tx: &mut Tx, r: &ReportRow) -> Result<()> {
        with_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO reports (province_code, period, period_end, state, version, sequence, \
                 deadline, submitted_at_ms, approved_at_ms, on_time, review_comment, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (province_code, period) DO UPDATE SET state = excluded.state, \
                 version = excluded.version, sequence = excluded.sequence, \
                 deadline = excluded.deadline, submitted_at_ms = excluded.submitted_at_ms, \
                 approved_at_ms = excluded.approved_at_ms, on_time = excluded.on_time, \
                 review_comment = excluded.review_comment, updated_at_ms = excluded.updated_at_ms",
            )
            .bind(&r.province_code)
            .bind(&r.period)
            .bind(&r.period_end)
            .bind(r.state)
            .bind(r.version)
            .bind(r.sequence)
            .bind(&r.deadline)
            .bind(r.submitted_at_ms)
            .bind(r.approved_at_ms)
            .bind(r.on_time)
            .bind(&r.review_comment)
            .bind(r.updated_at_ms)
            .execute(&mut *conn)
            .await?;
        });
        Ok(())
    }

    /// The values of one version of a report, inside `tx`, by indicator and source unit.
    pub async fn values_in(
        &self,
        tx: &mut Tx,
        province: &str,
        period: &str,
        version: i64,
    ) -> Result<Vec<ValueRow>> {
        let sql = format!(
            "SELECT indicator_code, source_province_code, value, comment FROM report_values \
             WHERE {VALUE_WHERE} ORDER BY indicator_code, source_province_code"
        );
        Ok(with_tx!(tx, |conn| {
            sqlx::query_as(&sql)
                .bind(province)
                .bind(period)
                .bind(version)
                .fetch_all(&mut *conn)
                .await?
        }))
    }

    /// The values of one version of a report, by indicator and source unit.
    pub async fn values(
        &self,
        province: &str,
        period: &str,
        version: i64,
    ) -> Result<Vec<ValueRow>> {
        let sql = format!(
            "SELECT indicator_code, source_province_code, value, comment FROM report_values \
             WHERE {VALUE_WHERE} ORDER BY indicator_code, source_province_code"
        );
        Ok(with_db!(&self.db.pool, |pool| {
            sqlx::query_as(&sql)
                .bind(province)
                .bind(period)
                .bind(version)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Inserts or replaces one value of a report version.
    pub async fn put_value(
        &self,
        tx: &mut Tx,
        province: &str,
        period: &str,
        version: i64,
        v: &ValueRow,
    ) -> Result<()> {
        with_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO report_values (province_code, period, version, indicator_code, \
                 source_province_code, value, comment) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (province_code, period, version, indicator_code, source_province_code) \
                 DO UPDATE SET value = excluded.value, comment = excluded.comment",
            )
            .bind(province)
            .bind(period)
            .bind(version)
            .bind(&v.indicator_code)
            .bind(&v.source_province_code)
            .bind(&v.value)
            .bind(&v.comment)
            .execute(&mut *conn)
            .await?;
        });
        Ok(())
    }

    /// Removes one value of a report version.
    pub async fn delete_value(
        &self,
        tx: &mut Tx,
        province: &str,
        period: &str,
        version: i64,
        indicator_code: &str,
        source_province_code: &str,
    ) -> Result<()> {
        let sql = format!(
            "DELETE FROM report_values WHERE {VALUE_WHERE} AND indicator_code = $4 \
             AND source_province_code = $5"
        );
        with_tx!(tx, |conn| {
            sqlx::query(&sql)
                .bind(province)
                .bind(period)
                .bind(version)
                .bind(indicator_code)
                .bind(source_province_code)
                .execute(&mut *conn)
                .await?;
        });
        Ok(())
    }

    /// Copies a version's values into a new version (a reopened report starts as a copy of
    /// what was approved; the approved version stays as it was).
    pub async fn copy_values(
        &self,
        tx: &mut Tx,
        province: &str,
        period: &str,
        from: i64,
        to: i64,
    ) -> Result<()> {
        with_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO report_values (province_code, period, version, indicator_code, \
                 source_province_code, value, comment) \
                 SELECT province_code, period, $4, indicator_code, source_province_code, value, comment \
                 FROM report_values WHERE province_code = $1 AND period = $2 AND version = $3",
            )
            .bind(province)
            .bind(period)
            .bind(from)
            .bind(to)
            .execute(&mut *conn)
            .await?;
        });
        Ok(())
    }

    /// Appends an audit entry to a report's history.
    pub async fn audit(
        &self,
        tx: &mut Tx,
        province: &str,
        period: &str,
        e: &pb::AuditEntry,
    ) -> Result<()> {
        with_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO report_audit (province_code, period, at_ms, actor, action, \
                 indicator_code, old_value, new_value, comment, version, source_province_code) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(province)
            .bind(period)
            .bind(e.at_ms)
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.indicator_code)
            .bind(&e.old_value)
            .bind(&e.new_value)
            .bind(&e.comment)
            .bind(i64::from(e.version))
            .bind(&e.source_province_code)
            .execute(&mut *conn)
            .await?;
        });
        Ok(())
    }

    /// A report's history, oldest first.
    pub async fn history(&self, province: &str, period: &str) -> Result<Vec<pb::AuditEntry>> {
        let rows: Vec<AuditRow> = with_db!(&self.db.pool, |pool| {
            sqlx::query_as(
                "SELECT at_ms, actor, action, indicator_code, old_value, new_value, comment, \
                 version, source_province_code FROM report_audit \
                 WHERE province_code = $1 AND period = $2 ORDER BY id",
            )
            .bind(province)
            .bind(period)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| pb::AuditEntry {
                at_ms: r.at_ms,
                actor: r.actor,
                action: r.action,
                indicator_code: r.indicator_code,
                old_value: r.old_value,
                new_value: r.new_value,
                comment: r.comment,
                version: unsigned(r.version),
                source_province_code: r.source_province_code,
            })
            .collect())
    }

    /// Reports with their current version's value count, filtered by province (`""`: all),
    /// state (0: any) and period (`""`: any); newest period first, then province code.
    pub async fn reports(
        &self,
        province: &str,
        state: i64,
        period: &str,
    ) -> Result<Vec<(ReportRow, i64)>> {
        let sql = format!(
            "SELECT {REPORT_COLUMNS}, (SELECT COUNT(*) FROM report_values v \
             WHERE v.province_code = r.province_code AND v.period = r.period \
             AND v.version = r.version) AS value_count FROM reports r \
             WHERE ($1 = '' OR province_code = $1) AND ($2 = 0 OR state = $2) \
             AND ($3 = '' OR period = $3) ORDER BY period_end DESC, period DESC, province_code"
        );
        let rows: Vec<SummaryRow> = with_db!(&self.db.pool, |pool| {
            sqlx::query_as(&sql)
                .bind(province)
                .bind(state)
                .bind(period)
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| (r.report, r.value_count))
            .collect())
    }
}

/// The error for a stored row that cannot be read back (a bug, never input).
pub fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::internal(format!("indicators store: {what}"))
}
