//! The in-memory snapshot and the series rollups against the store, on SQLite and PostgreSQL:
//! random sequences of events (new records, corrections that move a record's day, province
//! and status, redeliveries, events that change nothing, the indicators service's catalogue
//! changes, targets, approvals and reopenings), repairs and restarts, and after each step the
//! snapshot equals a fresh read of the store (views and JSON bytes, the indicators' list and
//! each indicator's default view too), its `ETag` changes exactly when the figures do, every
//! indicator query the snapshot caches equals a fresh read, and every time series read from
//! the rollups (through the dashboard and its cache) equals the same series summed from the
//! daily cells.

// A test crate: helpers as well as tests fail by panicking (clippy.toml allows it only inside
// `#[test]` functions, not in the helpers they share).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use agriportal_gateway::consumer::Rollup;
use agriportal_gateway::domain::{self, Deltas, SeriesParams};
use agriportal_gateway::http::{indicator_body, indicators_body};
use agriportal_gateway::readmodel::{self, IndicatorChange, IndicatorsReadModel};
use agriportal_gateway::service::StoreReads;
use agriportal_gateway::snapshot::{Snapshot, Snapshots};
use agriportal_gateway::store::{GatewayStore, SqlStore, ROLLUP_TABLES};
use agriportal_gateway::{Dashboard, Gateway};
use agriportal_platform::consumer::{self, Decoded};
use agriportal_platform::reference::Partner;
use agriportal_platform::storage::Database;
use agriportal_platform::testing;
use agriportal_proto::indicators::v1 as ipb;
use agriportal_proto::marketplace::v1 as mpb;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const PROVINCES: [&str; 4] = ["01", "79", "24", "08"];
const CATEGORIES: [&str; 2] = ["fruit", "vegetable"];
const PARTNERS: [Partner; 2] = [Partner::Postmart, Partner::Voso];
/// Indicators of each source: reported by provinces, from the marketplace rollups (so sales
/// and households move them too), and derived from both.
const INDICATORS: [(&str, ipb::Source); 4] = [
    ("TRAINED_HH", ipb::Source::Province),
    ("HH_ONBOARDED", ipb::Source::Marketplace),
    ("SALES_VALUE", ipb::Source::Marketplace),
    ("TRAINED_HH_PCT", ipb::Source::Derived),
];
/// Months of the sequences' days.
const MONTHS: [&str; 3] = ["202601", "202602", "202603"];

/// One step of a sequence.
#[derive(Clone, Debug)]
enum Step {
    /// A sales record, new or corrected (moved to another day, province or category).
    Sale {
        partner: usize,
        record: usize,
        day: i64,
        province: usize,
        category: usize,
        grams: i64,
    },
    /// A household, new or corrected (another province, status or registration day).
    Household {
        partner: usize,
        household: usize,
        day: i64,
        province: usize,
        status: i32,
    },
    /// The last event delivered again (the inbox drops it).
    Redeliver,
    /// An event that changes no figure (no changes, older than the newest).
    Nothing,
    /// A repair of a sales cell (an existing one, or one never seen) to other figures.
    Repair {
        partner: usize,
        pick: usize,
        grams: i64,
    },
    /// The process starts again: a new snapshot from the store.
    Restart,
    /// An indicator added to the catalogue, or revised (another national target; an older
    /// revision changes nothing).
    Catalogue {
        pick: usize,
        revision: u32,
        target: i64,
    },
    /// A target of TRAINED_HH set for 2026 (0: removed), for the nation or a province.
    Target { province: Option<usize>, value: i64 },
    /// A province's report of a month approved with its TRAINED_HH value, or reopened (its
    /// values withdrawn).
    Report {
        province: usize,
        month: usize,
        value: i64,
        reopen: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..2usize, 0..6usize, 0..75i64, 0..4usize, 0..2usize, 0..1_000i64).prop_map(
            |(partner, record, day, province, category, grams)| Step::Sale {
                partner, record, day, province, category, grams,
            }
        ),
        3 => (0..2usize, 0..4usize, 0..75i64, 0..4usize, 1..4i32).prop_map(
            |(partner, household, day, province, status)| Step::Household {
                partner, household, day, province, status,
            }
        ),
        1 => Just(Step::Redeliver),
        1 => Just(Step::Nothing),
        1 => (0..2usize, 0..8usize, 0..500i64)
            .prop_map(|(partner, pick, grams)| Step::Repair { partner, pick, grams }),
        1 => Just(Step::Restart),
        2 => (0..4usize, 1..4u32, 0..100i64)
            .prop_map(|(pick, revision, target)| Step::Catalogue { pick, revision, target }),
        1 => (proptest::option::of(0..4usize), 0..50i64)
            .prop_map(|(province, value)| Step::Target { province, value }),
        2 => (0..4usize, 0..3usize, 0..20i64, proptest::bool::weighted(0.2)).prop_map(
            |(province, month, value, reopen)| Step::Report { province, month, value, reopen }
        ),
    ]
}

/// A day from 2026-01-20 on: 75 days cross weeks, months and a quarter.
fn day(offset: i64) -> String {
    (time::macros::date!(2026 - 01 - 20) + time::Duration::days(offset)).to_string()
}

/// What the marketplace holds of one sequence's records (the previous figures of a
/// correction), and the ids it has used.
struct Marketplace {
    prefix: String,
    sales: BTreeMap<(usize, usize), mpb::SalesFigures>,
    households: BTreeMap<(usize, usize), mpb::HouseholdFigures>,
    sent: usize,
    at: i64,
}

impl Marketplace {
    fn id(&mut self) -> String {
        self.sent += 1;
        format!("{}-{}", self.prefix, self.sent)
    }

    fn sale(
        &mut self,
        partner: usize,
        record: usize,
        current: mpb::SalesFigures,
    ) -> Decoded<Deltas> {
        let previous = self.sales.insert((partner, record), current.clone());
        self.at += 1;
        let id = self.id();
        let event = mpb::SalesRecorded {
            event_id: id.clone(),
            partner: PARTNERS[partner].to_proto() as i32,
            batch_id: "b".into(),
            recorded_at_ms: self.at,
            changes: vec![mpb::SalesChange {
                record_id: format!("r{record}"),
                previous,
                current: Some(current),
            }],
        };
        let mut deltas = Deltas::default();
        deltas.add_sales(&event).unwrap();
        Decoded {
            event_id: id,
            event: deltas,
        }
    }

    fn household(
        &mut self,
        partner: usize,
        household: usize,
        current: mpb::HouseholdFigures,
    ) -> Decoded<Deltas> {
        let previous = self
            .households
            .insert((partner, household), current.clone());
        self.at += 1;
        let id = self.id();
        let event = mpb::HouseholdsRecorded {
            event_id: id.clone(),
            partner: PARTNERS[partner].to_proto() as i32,
            batch_id: "h".into(),
            recorded_at_ms: self.at,
            changes: vec![mpb::HouseholdChange {
                household_ref: format!("h{household}"),
                previous,
                current: Some(current),
            }],
        };
        let mut deltas = Deltas::default();
        deltas.add_households(&event).unwrap();
        Decoded {
            event_id: id,
            event: deltas,
        }
    }
}

/// The series every step compares: each metric, granularity and filter, over ranges that
/// start and end inside weeks and months, and over whole ones.
fn queries() -> Vec<SeriesParams> {
    let mut out = Vec::new();
    for metric in ["sales_grams", "orders", "households_onboarded"] {
        for granularity in ["day", "week", "month"] {
            for (from, to) in [("2026-01-01", "2026-12-31"), ("2026-01-22", "2026-03-17")] {
                for (province, partner) in [(None, None), (Some("79"), None), (None, Some("voso"))]
                {
                    out.push(SeriesParams {
                        metric: Some(metric.into()),
                        granularity: Some(granularity.into()),
                        from: Some(from.into()),
                        to: Some(to.into()),
                        province: province.map(Into::into),
                        partner: partner.map(Into::into),
                    });
                }
            }
        }
    }
    out
}

/// The snapshot equals a fresh read of the store: views and the very bytes.
async fn same_as_store(store: &SqlStore, snapshot: &Snapshot) {
    let (sales, households, as_of) = (
        store.sales_totals().await.unwrap(),
        store.household_totals().await.unwrap(),
        store.as_of_ms().await.unwrap(),
    );
    let as_of = as_of.map(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    });
    let national = domain::national(&sales, &households, as_of);
    let provinces = domain::provinces(&sales, &households);
    assert_eq!(snapshot.national, national);
    assert_eq!(snapshot.provinces, provinces);
    assert_eq!(
        snapshot.national_json.bytes,
        serde_json::to_vec(&national).unwrap(),
        "the national body, byte for byte"
    );
    assert_eq!(
        snapshot.provinces_json.bytes,
        serde_json::to_vec(&serde_json::json!({ "provinces": provinces })).unwrap()
    );
    for p in &provinces {
        assert_eq!(
            snapshot.province_json[&p.code].bytes,
            serde_json::to_vec(p).unwrap()
        );
    }
    assert_eq!(
        snapshot.version,
        store.figures_version().await.unwrap(),
        "the snapshot is of the store's version"
    );
}

/// Every series from the rollups (through the dashboard, whose cache must not answer from
/// older figures) equals the same series summed from the daily cells.
async fn series_match(store: &SqlStore, dashboard: &Dashboard) {
    for params in queries() {
        let query = params.check().unwrap();
        let expected = domain::bucket(&query, &store.daily(&query).await.unwrap());
        let got = dashboard.series(&params).await.unwrap();
        assert_eq!(got.points, expected, "{params:?}");
    }
}

/// The indicators' snapshot equals a fresh read of the store (views and the very bytes, of
/// the list and of each indicator's default view), and the queries it caches (a province's
/// view, through the dashboard) equal fresh reads too.
async fn indicators_match(store: &Arc<SqlStore>, snapshots: &Snapshots, dashboard: &Dashboard) {
    let reads = StoreReads::new(store.clone());
    let list = reads.indicators("", "").await.unwrap();
    let snapshot = snapshots
        .indicators()
        .expect("an indicators' snapshot of today");
    assert_eq!(
        snapshot.version,
        store.figures_version().await.unwrap(),
        "the indicators are of the store's version"
    );
    assert_eq!(snapshot.list.view, list);
    assert_eq!(
        snapshot.list.json.bytes,
        serde_json::to_vec(&indicators_body(&list)).unwrap(),
        "the list's body, byte for byte"
    );
    assert_eq!(snapshot.views.len(), list.len());
    for entry in &list {
        let code = &entry.indicator.code;
        let view = reads.indicator(code, "", "").await.unwrap();
        assert_eq!(snapshot.views[code].view, view, "{code}");
        assert_eq!(
            snapshot.views[code].json.bytes,
            serde_json::to_vec(&indicator_body(&view)).unwrap(),
            "{code}'s body, byte for byte"
        );
        // A query the snapshot caches, asked twice: both answers are today's.
        for _ in 0..2 {
            let cached = dashboard.indicator_answer(code, "", "79").await.unwrap();
            let fresh = reads.indicator(code, "", "79").await.unwrap();
            assert_eq!(cached.view, fresh, "{code} in 79");
        }
    }
    let cached = dashboard.indicators_answer("202602", "").await.unwrap();
    assert_eq!(cached.view, reads.indicators("202602", "").await.unwrap());
}

struct Case<'a> {
    db: &'a Database,
    store: Arc<SqlStore>,
    rollup: Rollup,
    snapshots: Arc<Snapshots>,
    dashboard: Dashboard,
    market: Marketplace,
    last: Option<Decoded<Deltas>>,
    model: IndicatorsReadModel,
    /// Each report's change counter, by (province, month).
    sequences: BTreeMap<(usize, usize), u64>,
}

impl Case<'_> {
    async fn apply(&mut self, event: Decoded<Deltas>) -> usize {
        let new = consumer::apply(self.db, &self.rollup, &[&event])
            .await
            .unwrap()
            .new;
        self.last = Some(event);
        new
    }

    async fn apply_indicator(&mut self, event: Decoded<IndicatorChange>) {
        let applied = consumer::apply(self.db, &self.model, &[&event])
            .await
            .unwrap();
        assert_eq!(applied.new, 1);
    }

    fn indicator_event<M: agriportal_proto::Event>(
        topic: agriportal_proto::Topic<M>,
        event: &M,
    ) -> Decoded<IndicatorChange> {
        readmodel::decode_event(topic, event).unwrap()
    }

    async fn run(&mut self, step: &Step) {
        let before = self.snapshots.current().unwrap();
        let mut changes_nothing = false;
        match step.clone() {
            Step::Sale {
                partner,
                record,
                day: d,
                province,
                category,
                grams,
            } => {
                let figures = mpb::SalesFigures {
                    sale_date: day(d),
                    province_code: PROVINCES[province].into(),
                    category: CATEGORIES[category].into(),
                    quantity_grams: grams,
                    value_vnd: grams * 7,
                    orders: 1 + (grams % 3) as u32,
                    ..Default::default()
                };
                let event = self.market.sale(partner, record, figures);
                assert_eq!(self.apply(event).await, 1);
            }
            Step::Household {
                partner,
                household,
                day: d,
                province,
                status,
            } => {
                let figures = mpb::HouseholdFigures {
                    province_code: PROVINCES[province].into(),
                    registered_on: day(d),
                    status,
                    ..Default::default()
                };
                let event = self.market.household(partner, household, figures);
                assert_eq!(self.apply(event).await, 1);
            }
            Step::Redeliver => {
                if let Some(event) = self.last.clone() {
                    assert_eq!(self.apply(event).await, 0, "the inbox drops it");
                }
                changes_nothing = true;
            }
            Step::Nothing => {
                let id = self.market.id();
                let event = mpb::SalesRecorded {
                    event_id: id.clone(),
                    partner: Partner::Voso.to_proto() as i32,
                    batch_id: "b".into(),
                    recorded_at_ms: 1,
                    changes: Vec::new(),
                };
                let mut deltas = Deltas::default();
                deltas.add_sales(&event).unwrap();
                assert_eq!(
                    self.apply(Decoded {
                        event_id: id,
                        event: deltas
                    })
                    .await,
                    1
                );
                // Its time is older than any other (1 ms), so it moves `as_of` only as the
                // first event applied.
                changes_nothing = before.national.as_of.is_some();
            }
            Step::Repair {
                partner,
                pick,
                grams,
            } => {
                let partner = PARTNERS[partner];
                let cells = self
                    .store
                    .rollup_cells(partner, mpb::RollupKind::Sales, None)
                    .await
                    .unwrap();
                let found = cells.get(pick).cloned().unwrap_or_else(|| mpb::RollupCell {
                    day: day(pick as i64 * 9),
                    province_code: PROVINCES[pick % 4].into(),
                    category: "grain".into(),
                    ..Default::default()
                });
                let wanted = mpb::RollupCell {
                    quantity_grams: grams,
                    value_vnd: grams * 7,
                    orders: 1,
                    count: 1,
                    ..found.clone()
                };
                self.store
                    .repair(partner, mpb::RollupKind::Sales, &found, &wanted)
                    .await
                    .unwrap();
            }
            Step::Restart => {
                let snapshots = Snapshots::new(self.store.clone());
                snapshots.refresh().await.unwrap();
                self.dashboard = Dashboard::with_snapshots(self.store.clone(), snapshots.clone());
                self.snapshots = snapshots;
                changes_nothing = true;
            }
            Step::Catalogue {
                pick,
                revision,
                target,
            } => {
                let (code, source) = INDICATORS[pick];
                let event = ipb::CatalogueChanged {
                    event_id: self.market.id(),
                    indicator: Some(ipb::Indicator {
                        code: code.into(),
                        name_vi: format!("Chỉ tiêu {code}"),
                        name_en: format!("Indicator {code}"),
                        unit: "units".into(),
                        period_type: ipb::PeriodType::Month as i32,
                        source: source as i32,
                        value_type: ipb::ValueType::Decimal as i32,
                        national_target: target.to_string(),
                        aggregation: ipb::Aggregation::Sum as i32,
                        revision,
                        position: pick as u32,
                        ..Default::default()
                    }),
                    at_ms: 1,
                };
                let decoded = Self::indicator_event(ipb::CATALOGUE_CHANGED, &event);
                self.apply_indicator(decoded).await;
            }
            Step::Target { province, value } => {
                self.market.at += 1;
                let event = ipb::TargetSet {
                    event_id: self.market.id(),
                    target: Some(ipb::Target {
                        indicator_code: "TRAINED_HH".into(),
                        year: 2026,
                        province_code: province
                            .map(|p| PROVINCES[p].to_string())
                            .unwrap_or_default(),
                        value: if value == 0 {
                            String::new()
                        } else {
                            value.to_string()
                        },
                        set_at_ms: self.market.at,
                        ..Default::default()
                    }),
                };
                let decoded = Self::indicator_event(ipb::TARGET_SET, &event);
                self.apply_indicator(decoded).await;
            }
            Step::Report {
                province,
                month,
                value,
                reopen,
            } => {
                let sequence = {
                    let s = self.sequences.entry((province, month)).or_insert(0);
                    *s += 1;
                    *s
                };
                let event_id = self.market.id();
                let decoded = if reopen {
                    let event = ipb::ReportReopened {
                        event_id,
                        province_code: PROVINCES[province].into(),
                        period: MONTHS[month].into(),
                        version: sequence as u32 + 1,
                        sequence,
                        at_ms: 2,
                        ..Default::default()
                    };
                    Self::indicator_event(ipb::REPORT_REOPENED, &event)
                } else {
                    let event = ipb::ReportApproved {
                        event_id,
                        province_code: PROVINCES[province].into(),
                        period: MONTHS[month].into(),
                        version: sequence as u32,
                        sequence,
                        at_ms: 2,
                        values: vec![ipb::ReportedValue {
                            indicator_code: "TRAINED_HH".into(),
                            value: value.to_string(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                    Self::indicator_event(ipb::REPORT_APPROVED, &event)
                };
                self.apply_indicator(decoded).await;
            }
        }
        // What the rebuild task does when another replica's version moved (this process's
        // commits rebuild unconditionally; this is the stricter path).
        self.snapshots.refresh_if_changed().await.unwrap();
        let after = self.snapshots.current().unwrap();
        same_as_store(&self.store, &after).await;
        if changes_nothing {
            assert_eq!(after.national_json, before.national_json, "{step:?}");
            assert_eq!(after.provinces_json, before.provinces_json, "{step:?}");
        }
        // The tag follows the figures exactly.
        assert_eq!(
            after.national_json.etag == before.national_json.etag,
            after.national_json.bytes == before.national_json.bytes,
            "{step:?}"
        );
        for (code, body) in &after.province_json {
            let old = &before.province_json[code];
            assert_eq!(
                body.etag == old.etag,
                body.bytes == old.bytes,
                "{code} {step:?}"
            );
        }
        indicators_match(&self.store, &self.snapshots, &self.dashboard).await;
        series_match(&self.store, &self.dashboard).await;
    }
}

static CASES: AtomicUsize = AtomicUsize::new(0);

async fn sequences(db: Database) {
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 8,
        // A failing sequence is shrunk, but not for long: each step reads the store.
        max_shrink_iters: 64,
        // The failing sequence is printed; nothing is written beside the sources.
        failure_persistence: None,
        ..Config::default()
    });
    let db = &db;
    let outcome = tokio::task::block_in_place(|| {
        runner.run(&proptest::collection::vec(step(), 1..24), |steps| {
            handle.block_on(async {
                let store = Arc::new(SqlStore::new(db.clone()));
                let store_for_model = store.clone();
                let snapshots = Snapshots::new(store.clone());
                snapshots.refresh().await.unwrap();
                let mut case = Case {
                    db,
                    rollup: Rollup::new(store.clone()).notifying(snapshots.clone()),
                    dashboard: Dashboard::with_snapshots(store.clone(), snapshots.clone()),
                    snapshots,
                    store,
                    market: Marketplace {
                        prefix: format!("c{}", CASES.fetch_add(1, Ordering::Relaxed)),
                        sales: BTreeMap::new(),
                        households: BTreeMap::new(),
                        sent: 0,
                        at: 1_000,
                    },
                    last: None,
                    model: IndicatorsReadModel::new(store_for_model),
                    sequences: BTreeMap::new(),
                };
                for step in &steps {
                    case.run(step).await;
                }
            });
            Ok(())
        })
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_and_the_series_follow_the_store_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_snapshot", sequences).await;
}

/// The series rows, non-zero ones only (an incremental correction that nets to zero within a
/// period writes no row; the backfill sums whatever daily rows exist, zeros included).
async fn series_rows(db: &Database) -> Vec<(String, String, String, String, i64, i64, i64)> {
    agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::query_as(
            "SELECT granularity, province_code, partner, period_start, grams, value_vnd, orders \
             FROM sales_series WHERE grams <> 0 OR value_vnd <> 0 OR orders <> 0 \
             UNION ALL SELECT granularity, province_code, partner, period_start, households, 0, 0 \
             FROM households_series WHERE households <> 0 ORDER BY 1, 2, 3, 4, 5",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    })
}

/// Migration 0007's backfill, run again over daily cells written by the consumer, gives the
/// rows the consumer wrote beside them.
async fn backfill(db: Database) {
    let store = Arc::new(SqlStore::new(db.clone()));
    let rollup = Rollup::new(store.clone());
    let mut market = Marketplace {
        prefix: "backfill".into(),
        sales: BTreeMap::new(),
        households: BTreeMap::new(),
        sent: 0,
        at: 1_000,
    };
    let mut events = Vec::new();
    for i in 0..40usize {
        let figures = mpb::SalesFigures {
            sale_date: day((i as i64 * 7) % 75),
            province_code: PROVINCES[i % 4].into(),
            category: CATEGORIES[i % 2].into(),
            quantity_grams: 10 + i as i64,
            value_vnd: 70 + i as i64,
            orders: 1,
            ..Default::default()
        };
        // Records 0..15, so later ones correct earlier ones (another day, province, category).
        events.push(market.sale(i % 2, i % 15, figures));
        let household = mpb::HouseholdFigures {
            province_code: PROVINCES[(i + 1) % 4].into(),
            registered_on: day((i as i64 * 5) % 75),
            status: 1 + (i % 3) as i32,
            ..Default::default()
        };
        events.push(market.household(i % 2, i % 6, household));
    }
    // A day that is not a date counts in the daily cells and in no series, both ways.
    let odd = mpb::SalesFigures {
        sale_date: "2026-02-30".into(),
        province_code: "79".into(),
        category: "fruit".into(),
        quantity_grams: 5,
        value_vnd: 5,
        orders: 1,
        ..Default::default()
    };
    events.push(market.sale(0, 99, odd));
    for event in &events {
        consumer::apply(&db, &rollup, &[event]).await.unwrap();
    }
    let written = series_rows(&db).await;
    assert!(written.len() > 100, "{}", written.len());
    let migration = if db.is_postgres() {
        include_str!("../migrations/postgres/0007_series.sql")
    } else {
        include_str!("../migrations/sqlite/0007_series.sql")
    };
    let (_, backfill) = migration.split_once("-- Backfilled").unwrap();
    agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::raw_sql(&format!(
            "DELETE FROM sales_series; DELETE FROM households_series;\n-- Backfilled{backfill}"
        ))
        .execute(pool)
        .await
        .unwrap();
    });
    assert_eq!(series_rows(&db).await, written);
}

#[tokio::test]
async fn the_migrations_backfill_equals_the_consumers_rows_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_series_backfill", backfill).await;
}

/// Every row of `table`, each value as text, in key order.
async fn table_rows(db: &Database, table: &str) -> Vec<Vec<String>> {
    use sqlx::Row;
    agriportal_platform::with_db!(&db.pool, |pool| {
        let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY 1, 2, 3, 4"))
            .fetch_all(pool)
            .await
            .unwrap();
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        row.try_get::<String, _>(i)
                            .or_else(|_| row.try_get::<i64, _>(i).map(|v| v.to_string()))
                            .unwrap()
                    })
                    .collect()
            })
            .collect()
    })
}

/// Rollup tables that still have a rowid, and whether `household_trading`'s index exists.
async fn rowid_rollups_and_index(db: &Database) -> (i64, i64) {
    agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::query_as(&format!(
            "SELECT (SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
               AND name IN ('{}') AND sql NOT LIKE '%WITHOUT ROWID'), \
             (SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' \
               AND name = 'household_trading_month')",
            ROLLUP_TABLES.join("', '")
        ))
        .fetch_one(pool)
        .await
        .unwrap()
    })
}

/// SQLite's migration 0008 keeps every rollup row (it copies each table into a `WITHOUT
/// ROWID` one): run again over tables the consumer filled, it leaves the same rows, in tables
/// without a rowid, with `household_trading`'s index back.
async fn without_rowid_keeps_the_rows(db: Database) {
    assert_eq!(rowid_rollups_and_index(&db).await, (0, 1), "as migrated");
    let store = Arc::new(SqlStore::new(db.clone()));
    let rollup = Rollup::new(store.clone());
    let mut market = Marketplace {
        prefix: "rowid".into(),
        sales: BTreeMap::new(),
        households: BTreeMap::new(),
        sent: 0,
        at: 1_000,
    };
    for i in 0..30usize {
        let figures = mpb::SalesFigures {
            sale_date: day((i as i64 * 11) % 60),
            province_code: PROVINCES[i % 4].into(),
            commune_code: format!("c{}", i % 3),
            category: CATEGORIES[i % 2].into(),
            quantity_grams: 10 + i as i64,
            value_vnd: 70 + i as i64,
            orders: 1,
            household_ref: format!("hh-{}", i % 5),
        };
        let sale = market.sale(i % 2, i % 12, figures);
        consumer::apply(&db, &rollup, &[&sale]).await.unwrap();
        let household = mpb::HouseholdFigures {
            province_code: PROVINCES[(i + 1) % 4].into(),
            commune_code: format!("c{}", i % 4),
            registered_on: day((i as i64 * 5) % 60),
            status: 1 + (i % 3) as i32,
            listed_products: Some(i as u32),
            has_digital_address: Some(i % 2 == 0),
        };
        let household = market.household(i % 2, i % 7, household);
        consumer::apply(&db, &rollup, &[&household]).await.unwrap();
    }
    let mut before = Vec::new();
    for table in ROLLUP_TABLES {
        before.push(table_rows(&db, table).await);
    }
    assert!(before.iter().all(|rows| !rows.is_empty()), "{before:?}");
    agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::raw_sql(include_str!(
            "../migrations/sqlite/0008_rollups_without_rowid.sql"
        ))
        .execute(pool)
        .await
        .unwrap();
    });
    for (table, rows) in ROLLUP_TABLES.iter().zip(&before) {
        assert_eq!(&table_rows(&db, table).await, rows, "{table}");
    }
    assert_eq!(rowid_rollups_and_index(&db).await, (0, 1));
}

/// SQLite only: PostgreSQL has no rowid, and its tables are as migration 0007 left them.
#[tokio::test]
async fn the_without_rowid_migration_keeps_every_rollup_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::connect(
        &agriportal_platform::Config::embedded(dir.path()),
        "gateway",
    )
    .await
    .unwrap();
    db.migrate(&agriportal_gateway::store::migrations())
        .await
        .unwrap();
    without_rowid_keeps_the_rows(db).await;
}
