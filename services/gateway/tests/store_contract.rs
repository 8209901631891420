//! One contract for `GatewayStore`, run on SQLite and on PostgreSQL (a fresh database).

// A test crate: helpers as well as tests fail by panicking (clippy.toml allows it only inside
// `#[test]` functions, not in the helpers they share).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

use agriportal_gateway::consumer::Rollup;
use agriportal_gateway::domain::Missing;
use agriportal_gateway::domain::{Deltas, SeriesParams};
use agriportal_gateway::household_facts;
use agriportal_gateway::readmodel::{self, IndicatorChange, IndicatorsReadModel};
use agriportal_gateway::service::{CommunesNote, CommunesView};
use agriportal_gateway::store::{CellRepair, GatewayStore, SqlStore};
use agriportal_gateway::store::{ReportRow, TargetRow};
use agriportal_gateway::{Dashboard, Gateway};
use agriportal_platform::consumer::{self, Decoded};
use agriportal_platform::period::Period;
use agriportal_platform::reference::Partner;
use agriportal_platform::storage::Database;
use agriportal_platform::testing;
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::indicators::v1 as ipb;
use agriportal_proto::marketplace::v1 as mpb;

/// The store, with events applied exactly as the kit's consumer applies them: inbox claims and
/// the rollup in one transaction.
struct Gw {
    db: Database,
    store: Arc<SqlStore>,
    rollup: Rollup,
}

impl Gw {
    fn new(db: Database) -> Self {
        let store = Arc::new(SqlStore::new(db.clone()));
        Gw {
            rollup: Rollup::new(store.clone()),
            store,
            db,
        }
    }

    /// Applies `events` once each; how many were new.
    async fn apply(&self, events: &[Decoded<Deltas>]) -> agriportal_platform::Result<usize> {
        let events: Vec<&Decoded<Deltas>> = events.iter().collect();
        Ok(consumer::apply(&self.db, &self.rollup, &events).await?.new)
    }
}

impl Deref for Gw {
    type Target = SqlStore;
    fn deref(&self) -> &SqlStore {
        &self.store
    }
}

fn figures(day: &str, province: &str, grams: i64) -> mpb::SalesFigures {
    mpb::SalesFigures {
        sale_date: day.into(),
        province_code: province.into(),
        commune_code: String::new(),
        category: "fruit".into(),
        quantity_grams: grams,
        value_vnd: grams * 3,
        orders: 2,
        household_ref: String::new(),
    }
}

fn sales_event(
    id: &str,
    partner: Partner,
    at: i64,
    changes: Vec<(Option<mpb::SalesFigures>, mpb::SalesFigures)>,
) -> Decoded<Deltas> {
    let event = mpb::SalesRecorded {
        event_id: id.into(),
        partner: partner.to_proto() as i32,
        batch_id: "b".into(),
        recorded_at_ms: at,
        changes: changes
            .into_iter()
            .enumerate()
            .map(|(i, (previous, current))| mpb::SalesChange {
                record_id: format!("r{i}"),
                previous,
                current: Some(current),
            })
            .collect(),
    };
    let mut deltas = Deltas::default();
    deltas.add_sales(&event).unwrap();
    Decoded {
        event_id: id.into(),
        event: deltas,
    }
}

fn household_event(
    id: &str,
    previous: Option<(&str, HouseholdStatus)>,
    current: (&str, HouseholdStatus),
) -> Decoded<Deltas> {
    let f = |(province, status): (&str, HouseholdStatus)| mpb::HouseholdFigures {
        province_code: province.into(),
        commune_code: String::new(),
        registered_on: "2021-12-01".into(),
        status: status as i32,
        ..Default::default()
    };
    let event = mpb::HouseholdsRecorded {
        event_id: id.into(),
        partner: Partner::Postmart.to_proto() as i32,
        batch_id: "h".into(),
        recorded_at_ms: 5,
        changes: vec![mpb::HouseholdChange {
            household_ref: "h".into(),
            previous: previous.map(f),
            current: Some(f(current)),
        }],
    };
    let mut deltas = Deltas::default();
    deltas.add_households(&event).unwrap();
    Decoded {
        event_id: id.into(),
        event: deltas,
    }
}

async fn grams(store: &SqlStore) -> i64 {
    store
        .sales_totals()
        .await
        .unwrap()
        .iter()
        .map(|t| t.cell[0])
        .sum()
}

async fn contract(db: Database) {
    let store = Gw::new(db);
    let e1 = sales_event(
        "e1",
        Partner::Voso,
        1_000,
        vec![(None, figures("2022-05-01", "79", 100))],
    );
    let e2 = sales_event(
        "e2",
        Partner::Postmart,
        900,
        vec![(None, figures("2022-05-02", "01", 50))],
    );
    assert_eq!(store.apply(&[e1.clone(), e2.clone()]).await.unwrap(), 2);
    // Redelivered, alone or mixed with a new one: applied once.
    assert_eq!(store.apply(std::slice::from_ref(&e1)).await.unwrap(), 0);
    let e3 = sales_event(
        "e3",
        Partner::Voso,
        800,
        vec![(
            Some(figures("2022-05-01", "79", 100)),
            figures("2022-05-03", "79", 130),
        )],
    );
    assert_eq!(
        store
            .apply(&[e2.clone(), e3.clone(), e3.clone()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(grams(&store).await, 180);
    // as_of is the newest commit time, whatever the order events arrive in.
    assert_eq!(store.as_of_ms().await.unwrap(), Some(1_000));

    let params = |metric: &str, partner: Option<&str>| SeriesParams {
        metric: Some(metric.into()),
        granularity: Some("day".into()),
        from: Some("2022-05-01".into()),
        to: Some("2022-05-03".into()),
        partner: partner.map(Into::into),
        ..Default::default()
    };
    let daily = store
        .daily(&params("sales_grams", None).check().unwrap())
        .await
        .unwrap();
    let values: Vec<i64> = daily.iter().map(|(_, v)| *v).collect();
    assert_eq!(
        values,
        [0, 50, 130],
        "the corrected line moved from the 1st to the 3rd"
    );
    let voso = store
        .daily(&params("orders", Some("voso")).check().unwrap())
        .await
        .unwrap();
    assert_eq!(voso.iter().map(|(_, v)| *v).sum::<i64>(), 2);

    // Households: a status change and a move leave one household.
    store
        .apply(&[household_event("h1", None, ("01", HouseholdStatus::Active))])
        .await
        .unwrap();
    store
        .apply(&[household_event(
            "h2",
            Some(("01", HouseholdStatus::Active)),
            ("24", HouseholdStatus::Suspended),
        )])
        .await
        .unwrap();
    let totals = store.household_totals().await.unwrap();
    let count = |province: &str, status: i64| {
        totals
            .iter()
            .filter(|t| t.province_code == province && t.status == status)
            .map(|t| t.households)
            .sum::<i64>()
    };
    assert_eq!(count("01", 1), 0);
    assert_eq!(count("24", 2), 1);
    assert_eq!(totals.iter().map(|t| t.households).sum::<i64>(), 1);
    let hh = store
        .daily(
            &SeriesParams {
                metric: Some("households_onboarded".into()),
                from: Some("2021-12-01".into()),
                to: Some("2021-12-01".into()),
                ..Default::default()
            }
            .check()
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(hh, vec![(time::macros::date!(2021 - 12 - 01), 1)]);

    // The stock at a month's end: nothing before the registration day, the moved household
    // under its province and status from that day on (read as totals less the later days;
    // its change was recorded in 1970, so no correction applies).
    let up_to = |day: &'static str| {
        let store = &store;
        async move {
            let month = day[..7].replace('-', "");
            let mut rows: Vec<(String, i64, i64)> = store
                .read_view()
                .await
                .unwrap()
                .households_at_end(&month, day)
                .await
                .unwrap()
                .into_iter()
                .filter(|(_, _, n)| *n != 0)
                .collect();
            rows.sort();
            rows
        }
    };
    assert_eq!(up_to("2021-11-30").await, vec![]);
    assert_eq!(up_to("2021-12-01").await, vec![("24".to_string(), 2, 1)]);
    assert_eq!(up_to("2026-12-31").await, vec![("24".to_string(), 2, 1)]);
}

/// Several replicas applying overlapping deliveries at once count each event once.
async fn concurrent_apply(db: Database) {
    let store = Arc::new(Gw::new(db));
    // Sales lines of seven households and new households with stocks, interleaved, so every
    // rollup table takes concurrent writes.
    let events: Vec<Decoded<Deltas>> = (0..40)
        .map(|i| {
            let id = format!("c{i}");
            if i % 2 == 0 {
                let household = format!("h{}", (i / 2) % 7);
                let day = sold(("2022-06-01", "92", &household));
                sales_event(&id, Partner::Voso, i, vec![(None, day)])
            } else {
                let household = format!("k{i}");
                let current = ("2022-06-02", "92", Some(3), Some(true));
                stock_event(&id, Partner::Voso, &household, None, current)
            }
        })
        .collect();
    let mut tasks = Vec::new();
    for k in 0..4 {
        let store = store.clone();
        let slice: Vec<Decoded<Deltas>> = events.iter().skip(k * 5).take(25).cloned().collect();
        tasks.push(tokio::spawn(
            async move { store.apply(&slice).await.unwrap() },
        ));
    }
    let mut applied = 0;
    for t in tasks {
        applied += t.await.unwrap();
    }
    assert_eq!(applied, 40);
    assert_eq!(grams(&store).await, 200);
    let june = Period::month(2022, 6).unwrap();
    let of = |n: i64| Some(BTreeMap::from([("92".to_string(), n)]));
    assert_eq!(
        household_facts::trading_households(&mut store.read_view().await.unwrap(), june)
            .await
            .unwrap(),
        of(7)
    );
    assert_eq!(
        household_facts::listed_products(&mut store.read_view().await.unwrap(), june)
            .await
            .unwrap(),
        of(60)
    );
    assert_eq!(
        household_facts::digital_address_households(&mut store.read_view().await.unwrap(), june)
            .await
            .unwrap(),
        of(20)
    );
}

/// Cells in the marketplace's shape, and repairs: a compare-and-set on the daily cell that
/// moves the province total by the same difference, and steps back when the cell changed.
async fn cells_and_repairs(db: Database) {
    let store = Gw::new(db);
    use mpb::RollupKind::{Households, Sales};
    store
        .apply(&[
            sales_event(
                "s1",
                Partner::Voso,
                1,
                vec![(None, figures("2022-05-01", "79", 100))],
            ),
            sales_event(
                "s2",
                Partner::Voso,
                2,
                vec![(None, figures("2022-05-02", "01", 7))],
            ),
            // A cell emptied by a correction: kept as a zero row, never reported.
            sales_event(
                "s3",
                Partner::Voso,
                3,
                vec![(None, figures("2022-05-03", "01", 5))],
            ),
            sales_event(
                "s4",
                Partner::Voso,
                4,
                vec![(
                    Some(figures("2022-05-03", "01", 5)),
                    figures("2022-05-02", "01", 5),
                )],
            ),
            household_event("h1", None, ("79", HouseholdStatus::Active)),
        ])
        .await
        .unwrap();
    let mut cells = store
        .rollup_cells(Partner::Voso, Sales, None)
        .await
        .unwrap();
    cells.sort_by(|a, b| a.day.cmp(&b.day));
    let shape: Vec<(String, String, String, [i64; 4])> = cells
        .iter()
        .map(|c| {
            (
                c.day.clone(),
                c.province_code.clone(),
                c.category.clone(),
                [c.quantity_grams, c.value_vnd, c.orders, c.count],
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (
                "2022-05-01".into(),
                "79".into(),
                "fruit".into(),
                [100, 300, 2, 1]
            ),
            (
                "2022-05-02".into(),
                "01".into(),
                "fruit".into(),
                [12, 36, 4, 2]
            ),
        ]
    );
    assert_eq!(
        store
            .rollup_cells(Partner::Voso, Sales, Some("79"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .rollup_cells(Partner::Postmart, Sales, None)
        .await
        .unwrap()
        .is_empty());
    let hh = store
        .rollup_cells(Partner::Postmart, Households, None)
        .await
        .unwrap();
    assert_eq!(hh.len(), 1);
    assert_eq!(
        (hh[0].status, hh[0].count, hh[0].category.as_str()),
        (HouseholdStatus::Active as i32, 1, "")
    );

    // Repair an existing cell: 79 / 2022-05-01 should hold 150 g.
    let found = cells[0].clone();
    let mut wanted = found.clone();
    wanted.quantity_grams = 150;
    wanted.value_vnd = 450;
    wanted.count = 2;
    assert!(store
        .repair(Partner::Voso, Sales, &found, &wanted)
        .await
        .unwrap());
    assert_eq!(grams(&store).await, 162);
    // The same repair again finds the cell changed and writes nothing.
    assert!(!store
        .repair(Partner::Voso, Sales, &found, &wanted)
        .await
        .unwrap());
    assert_eq!(grams(&store).await, 162);
    // A cell the gateway never saw (absent, seen as zeros) is inserted, and the zero row
    // left by the correction can be filled too.
    for day in ["2022-06-01", "2022-05-03"] {
        let absent = mpb::RollupCell {
            day: day.into(),
            province_code: "01".into(),
            category: "fruit".into(),
            ..Default::default()
        };
        let missing = mpb::RollupCell {
            quantity_grams: 8,
            value_vnd: 24,
            orders: 1,
            count: 1,
            ..absent.clone()
        };
        assert!(store
            .repair(Partner::Voso, Sales, &absent, &missing)
            .await
            .unwrap());
        assert!(!store
            .repair(Partner::Voso, Sales, &absent, &missing)
            .await
            .unwrap());
    }
    assert_eq!(grams(&store).await, 178);
    let totals = store.sales_totals().await.unwrap();
    let hn = totals.iter().find(|t| t.province_code == "01").unwrap();
    assert_eq!(hn.cell, [28, 84, 6, 4]);
    // A household cell that should not be there is emptied, total included.
    let gone = mpb::RollupCell {
        count: 0,
        ..hh[0].clone()
    };
    assert!(store
        .repair(Partner::Postmart, Households, &hh[0], &gone)
        .await
        .unwrap());
    assert!(store
        .rollup_cells(Partner::Postmart, Households, None)
        .await
        .unwrap()
        .is_empty());
    let households: i64 = store
        .household_totals()
        .await
        .unwrap()
        .iter()
        .map(|t| t.households)
        .sum();
    assert_eq!(households, 0);
    // Several cells in one commit: each its own compare-and-set (the stale one is skipped,
    // the others take), their differences summed into the totals, one version bump.
    let fresh = |day: &str, grams: i64| {
        let absent = mpb::RollupCell {
            day: day.into(),
            province_code: "01".into(),
            category: "fruit".into(),
            ..Default::default()
        };
        let wanted = mpb::RollupCell {
            quantity_grams: grams,
            value_vnd: 3 * grams,
            orders: 1,
            count: 1,
            ..absent.clone()
        };
        (absent, wanted)
    };
    let (a_found, a_wanted) = fresh("2022-07-01", 5);
    let (b_found, b_wanted) = fresh("2022-07-02", 7);
    let mut stale_wanted = wanted.clone();
    stale_wanted.quantity_grams = 999;
    let version = store.figures_version().await.unwrap();
    let cell = |found, wanted| CellRepair {
        partner: Partner::Voso,
        kind: Sales,
        found,
        wanted,
    };
    let done = store
        .repair_all(&[
            cell(&a_found, &a_wanted),
            cell(&found, &stale_wanted),
            cell(&b_found, &b_wanted),
        ])
        .await
        .unwrap();
    assert_eq!(done, [true, false, true]);
    assert_eq!(grams(&store).await, 178 + 5 + 7);
    let totals = store.sales_totals().await.unwrap();
    let hn = totals.iter().find(|t| t.province_code == "01").unwrap();
    assert_eq!(hn.cell, [40, 120, 8, 6]);
    assert_eq!(store.figures_version().await.unwrap(), version + 1);
    // Nothing taken, nothing written: not even the version.
    let done = store
        .repair_all(&[cell(&a_found, &a_wanted), cell(&found, &stale_wanted)])
        .await
        .unwrap();
    assert_eq!(done, [false, false]);
    assert_eq!(store.figures_version().await.unwrap(), version + 1);
    assert_eq!(grams(&store).await, 190);
    // Repairs never touch the inbox: a late event still applies once.
    assert_eq!(
        store
            .apply(&[sales_event(
                "s1",
                Partner::Voso,
                1,
                vec![(None, figures("2022-05-01", "79", 100))]
            )])
            .await
            .unwrap(),
        0
    );
}

fn indicator(
    code: &str,
    revision: u32,
    source: ipb::Source,
    aggregation: ipb::Aggregation,
) -> ipb::Indicator {
    ipb::Indicator {
        code: code.into(),
        name_vi: format!("{code} r{revision}"),
        period_type: ipb::PeriodType::Month as i32,
        source: source as i32,
        aggregation: aggregation as i32,
        revision,
        ..Default::default()
    }
}

fn catalogue(id: &str, indicator: ipb::Indicator) -> Decoded<IndicatorChange> {
    let e = ipb::CatalogueChanged {
        event_id: id.into(),
        indicator: Some(indicator),
        at_ms: 1,
    };
    readmodel::decode_event(ipb::CATALOGUE_CHANGED, &e).unwrap()
}

fn target(
    id: &str,
    code: &str,
    province: &str,
    value: &str,
    set_at_ms: i64,
) -> Decoded<IndicatorChange> {
    let e = ipb::TargetSet {
        event_id: id.into(),
        target: Some(ipb::Target {
            indicator_code: code.into(),
            year: 2021,
            province_code: province.into(),
            value: value.into(),
            set_at_ms,
            set_by: "admin".into(),
        }),
    };
    readmodel::decode_event(ipb::TARGET_SET, &e).unwrap()
}

fn approved(
    id: &str,
    province: &str,
    period: &str,
    sequence: u64,
    values: &[(&str, &str, &str)],
) -> Decoded<IndicatorChange> {
    let e = ipb::ReportApproved {
        event_id: id.into(),
        province_code: province.into(),
        period: period.into(),
        version: 1,
        sequence,
        at_ms: 2_000,
        values: values
            .iter()
            .map(|(code, source, value)| ipb::ReportedValue {
                indicator_code: code.to_string(),
                value: value.to_string(),
                comment: String::new(),
                source_province_code: source.to_string(),
            })
            .collect(),
        submitted_at_ms: 1_000,
        on_time: true,
        deadline: "2022-01-05".into(),
    };
    readmodel::decode_event(ipb::REPORT_APPROVED, &e).unwrap()
}

async fn apply_ind(
    db: &Database,
    model: &IndicatorsReadModel,
    events: &[Decoded<IndicatorChange>],
) -> usize {
    let events: Vec<&Decoded<IndicatorChange>> = events.iter().collect();
    consumer::apply(db, model, &events).await.unwrap().new
}

/// The targets of `code` as a fresh view reads them.
async fn targets_of(store: &SqlStore, code: &str) -> Vec<TargetRow> {
    store
        .read_view()
        .await
        .unwrap()
        .targets(code)
        .await
        .unwrap()
}

async fn report(store: &SqlStore, province: &str, period: &str) -> ReportRow {
    store
        .read_view()
        .await
        .unwrap()
        .reports(period)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.province_code == province)
        .unwrap()
}

/// The indicators read model: each kind ordered by its own counter whatever the arrival
/// order, redeliveries ignored, approvals replacing values wholesale, reopenings withdrawing
/// them, and merged provinces' source units each kept (and summed) once.
async fn indicators_read_model(db: Database) {
    let gw = Gw::new(db.clone());
    let model = IndicatorsReadModel::new(gw.store.clone());
    let (p, month) = ("08", "202112");

    // Catalogue: an older revision arriving late changes nothing.
    let trained = indicator(
        "TRAINED_HH",
        2,
        ipb::Source::Province,
        ipb::Aggregation::Sum,
    );
    let events = [
        catalogue("c2", trained.clone()),
        catalogue(
            "c1",
            indicator(
                "TRAINED_HH",
                1,
                ipb::Source::Province,
                ipb::Aggregation::Sum,
            ),
        ),
        catalogue(
            "c3",
            indicator(
                "TRAINED_HH_PCT",
                1,
                ipb::Source::Derived,
                ipb::Aggregation::Ratio,
            ),
        ),
        catalogue(
            "c4",
            indicator(
                "HH_ONBOARDED",
                1,
                ipb::Source::Marketplace,
                ipb::Aggregation::Sum,
            ),
        ),
        catalogue(
            "c5",
            indicator("QA_RECEIVED", 1, ipb::Source::Qa, ipb::Aggregation::Sum),
        ),
    ];
    assert_eq!(apply_ind(&db, &model, &events).await, 5);
    let cat = gw
        .store
        .read_view()
        .await
        .unwrap()
        .catalogue()
        .await
        .unwrap();
    assert_eq!(cat.len(), 4);
    assert_eq!(
        cat.iter().find(|i| i.code == "TRAINED_HH").unwrap().name_vi,
        "TRAINED_HH r2"
    );

    // Targets: the latest set_at_ms wins; a removal is kept so an older set cannot revive it.
    apply_ind(
        &db,
        &model,
        &[
            target("t2", "TRAINED_HH", "", "100", 20),
            target("t1", "TRAINED_HH", "", "50", 10),
        ],
    )
    .await;
    assert_eq!(targets_of(&gw.store, "TRAINED_HH").await[0].value, "100");
    apply_ind(&db, &model, &[target("t3", "TRAINED_HH", p, "8", 5)]).await;
    assert_eq!(targets_of(&gw.store, "TRAINED_HH").await.len(), 2);
    apply_ind(
        &db,
        &model,
        &[
            target("t4", "TRAINED_HH", p, "", 30),
            target("t5", "TRAINED_HH", p, "9", 25),
        ],
    )
    .await;
    assert_eq!(targets_of(&gw.store, "TRAINED_HH").await.len(), 1);

    // Report events out of order: the approval (sequence 3) first, then older ones.
    let approval = approved(
        "a3",
        p,
        month,
        3,
        &[
            ("TRAINED_HH", "02", "1.5"),
            ("TRAINED_HH", "08", "2"),
            ("TRAINING_SESSIONS", "", "4"),
        ],
    );
    assert_eq!(
        apply_ind(&db, &model, std::slice::from_ref(&approval)).await,
        1
    );
    let started = ipb::ReportStarted {
        event_id: "s1".into(),
        province_code: p.into(),
        period: month.into(),
        version: 1,
        sequence: 1,
        at_ms: 500,
        deadline: "2022-01-05".into(),
    };
    let submitted = ipb::ReportSubmitted {
        event_id: "s2".into(),
        province_code: p.into(),
        period: month.into(),
        version: 1,
        sequence: 2,
        at_ms: 900,
        on_time: false,
        deadline: "2022-01-05".into(),
    };
    let older = [
        readmodel::decode_event(ipb::REPORT_SUBMITTED, &submitted).unwrap(),
        readmodel::decode_event(ipb::REPORT_STARTED, &started).unwrap(),
    ];
    assert_eq!(apply_ind(&db, &model, &older).await, 2);
    let r = report(&gw.store, p, month).await;
    assert_eq!(
        (
            r.state.as_str(),
            r.sequence,
            r.submitted_at_ms,
            r.approved_at_ms,
            r.on_time
        ),
        ("approved", 3, 1_000, 2_000, 1)
    );
    // Redelivered: the inbox drops it.
    assert_eq!(
        apply_ind(&db, &model, std::slice::from_ref(&approval)).await,
        0
    );
    let values = gw
        .store
        .read_view()
        .await
        .unwrap()
        .approved_values("TRAINED_HH")
        .await
        .unwrap();
    assert_eq!(values.len(), 2, "each source unit once: {values:?}");

    // Merged source units add up once; the derived share divides by the households onboarded.
    for i in 0..4 {
        gw.apply(&[household_event(
            &format!("h{i}"),
            None,
            (p, HouseholdStatus::Active),
        )])
        .await
        .unwrap();
    }
    let dashboard = Dashboard::new(gw.store.clone());
    let view = dashboard.indicator("TRAINED_HH", month, "").await.unwrap();
    assert_eq!(view.national.value.unwrap().to_string(), "3.5");
    // The nation's 2021 target (100, the newest set) against 3.5; the province's was removed.
    assert_eq!(view.national.target.unwrap().to_string(), "100");
    assert_eq!(view.national.progress_pct, Some(3.5));
    let province = view.provinces.iter().find(|x| x.code == p).unwrap();
    assert_eq!(province.state.as_deref(), Some("approved"));
    assert_eq!(province.figure.target, None);
    assert_eq!(
        view.provinces
            .iter()
            .filter(|x| x.figure.value.is_some())
            .count(),
        1
    );
    let pct = dashboard
        .indicator("TRAINED_HH_PCT", month, "")
        .await
        .unwrap();
    assert_eq!(pct.national.value.unwrap().to_string(), "87.50");
    let onboarded = dashboard
        .indicator("HH_ONBOARDED", month, "")
        .await
        .unwrap();
    assert_eq!(onboarded.national.value.unwrap().to_string(), "4");
    let qa = dashboard.indicator("QA_RECEIVED", month, "").await.unwrap();
    assert_eq!(
        (qa.national.value, qa.national.missing),
        (None, Some(Missing::NoSource))
    );

    // Reopened (sequence 4): the values are withdrawn; the approval re-published under another
    // id (older sequence) brings nothing back.
    let reopened = ipb::ReportReopened {
        event_id: "r4".into(),
        province_code: p.into(),
        period: month.into(),
        version: 2,
        sequence: 4,
        at_ms: 3_000,
        reason: "typo".into(),
        deadline: String::new(),
    };
    apply_ind(
        &db,
        &model,
        &[readmodel::decode_event(ipb::REPORT_REOPENED, &reopened).unwrap()],
    )
    .await;
    apply_ind(
        &db,
        &model,
        &[approved(
            "a3-again",
            p,
            month,
            3,
            &[("TRAINED_HH", "", "99")],
        )],
    )
    .await;
    assert!(gw
        .store
        .read_view()
        .await
        .unwrap()
        .approved_values("TRAINED_HH")
        .await
        .unwrap()
        .is_empty());
    let r = report(&gw.store, p, month).await;
    assert_eq!(
        (
            r.state.as_str(),
            r.version,
            r.approved_at_ms,
            r.deadline.as_str()
        ),
        ("draft", 2, 0, "2022-01-05")
    );
    let view = dashboard.indicator("TRAINED_HH", month, "").await.unwrap();
    assert_eq!(
        (view.national.value, view.national.missing),
        (None, Some(Missing::NotApproved))
    );

    // Approved again (sequence 6): replaced wholesale, the old indicator's value gone.
    apply_ind(
        &db,
        &model,
        &[approved("a6", p, month, 6, &[("TRAINED_HH", "", "3")])],
    )
    .await;
    assert_eq!(
        gw.store
            .read_view()
            .await
            .unwrap()
            .approved_values("TRAINED_HH")
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(gw
        .store
        .read_view()
        .await
        .unwrap()
        .approved_values("TRAINING_SESSIONS")
        .await
        .unwrap()
        .is_empty());
    let view = dashboard.indicator("TRAINED_HH", month, p).await.unwrap();
    assert_eq!(
        view.series.last().unwrap().1.value.unwrap().to_string(),
        "3"
    );
    assert_eq!(view.series.len(), 12);

    // Completeness of the month: one province approved, 33 missing and overdue.
    let c = dashboard.completeness(month).await.unwrap();
    assert_eq!(
        (c.counts.approved, c.counts.missing, c.counts.overdue),
        (1, 33, 33)
    );
    assert_eq!(c.deadline.to_string(), "2022-01-05");
}

/// Replicas applying approvals of the same reports at once, in overlapping batches and
/// opposite orders: each report ends at its highest sequence, with that approval's values only.
async fn concurrent_read_model(db: Database) {
    let store = Arc::new(SqlStore::new(db.clone()));
    let provinces = ["01", "04", "08", "79"];
    let events: Vec<Decoded<IndicatorChange>> = (1..=10u64)
        .flat_map(|seq| {
            provinces.iter().map(move |p| {
                let value = (seq * 10).to_string();
                approved(
                    &format!("c{p}-{seq}"),
                    p,
                    "202611",
                    seq,
                    &[("TRAINED_HH", "", &value)],
                )
            })
        })
        .collect();
    let mut tasks = Vec::new();
    for k in 0..4 {
        let (db, store) = (db.clone(), store.clone());
        let mut slice: Vec<Decoded<IndicatorChange>> =
            events.iter().skip(k * 7).take(24).cloned().collect();
        if k % 2 == 1 {
            slice.reverse();
        }
        tasks.push(tokio::spawn(async move {
            let model = IndicatorsReadModel::new(store);
            let mut n = 0;
            for chunk in slice.chunks(6) {
                n += apply_ind(&db, &model, chunk).await;
            }
            n
        }));
    }
    let mut applied = 0;
    for t in tasks {
        applied += t.await.unwrap();
    }
    let model = IndicatorsReadModel::new(store.clone());
    applied += apply_ind(&db, &model, &events).await;
    assert_eq!(applied, 40);
    for p in provinces {
        assert_eq!(report(&store, p, "202611").await.sequence, 10);
    }
    let values = store
        .read_view()
        .await
        .unwrap()
        .approved_values("TRAINED_HH")
        .await
        .unwrap();
    assert_eq!(values.len(), 4, "{values:?}");
    assert!(values.iter().all(|v| v.value == "100"), "{values:?}");
}

/// A read view answers every statement from one committed state: a target and an approval
/// committed after its first read are not in it (else an indicator's view built while events
/// commit could hold an approved value without the target set before it), and a new view
/// sees both.
async fn one_state_per_read_view(db: Database) {
    let gw = Gw::new(db.clone());
    let model = IndicatorsReadModel::new(gw.store.clone());
    apply_ind(&db, &model, &[target("t1", "TRAINED_HH", "", "100", 10)]).await;
    let mut view = gw.read_view().await.unwrap();
    assert_eq!(view.targets("TRAINED_HH").await.unwrap()[0].value, "100");
    let later = [
        target("t2", "TRAINED_HH", "", "200", 20),
        approved("a1", "08", "202112", 1, &[("TRAINED_HH", "", "7")]),
    ];
    assert_eq!(apply_ind(&db, &model, &later).await, 2);
    assert_eq!(view.targets("TRAINED_HH").await.unwrap()[0].value, "100");
    assert!(view.approved_values("TRAINED_HH").await.unwrap().is_empty());
    assert!(view.reports("202112").await.unwrap().is_empty());
    drop(view);
    let mut fresh = gw.read_view().await.unwrap();
    assert_eq!(fresh.targets("TRAINED_HH").await.unwrap()[0].value, "200");
    assert_eq!(fresh.approved_values("TRAINED_HH").await.unwrap().len(), 1);
    assert_eq!(fresh.reports("202112").await.unwrap().len(), 1);
}

#[tokio::test]
async fn one_state_per_read_view_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_read_view", one_state_per_read_view).await;
}

#[tokio::test]
async fn concurrent_read_model_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_concurrent_ind", concurrent_read_model).await;
}

#[tokio::test]
async fn indicators_read_model_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_indicators", indicators_read_model).await;
}

#[tokio::test]
async fn cells_and_repairs_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_repairs", cells_and_repairs).await;
}

/// A change whose sum would leave the 64-bit range is refused whole as never applicable
/// (`InvalidArgument`, which the kit's consumer parks at once), the totals stay as they were
/// and are never wrapped nor turned into REAL (SQLite), and other events still apply.
async fn overflow(db: Database) {
    let store = Gw::new(db.clone());
    let seed = sales_event(
        "seed",
        Partner::Voso,
        1,
        vec![(None, figures("2022-05-01", "79", 1_000))],
    );
    store.apply(&[seed]).await.unwrap();
    // Totals already near the top of the range, as billions of events would leave them.
    let near = i64::MAX - 10;
    agriportal_platform::with_db!(&db.pool, |pool| {
        for table in ["sales_daily", "sales_totals"] {
            sqlx::query(&format!("UPDATE {table} SET grams = $1"))
                .bind(near)
                .execute(pool)
                .await
                .unwrap();
        }
    });
    let over = sales_event(
        "over",
        Partner::Voso,
        2,
        vec![(None, figures("2022-05-01", "79", 11))],
    );
    let err = store.apply(std::slice::from_ref(&over)).await.unwrap_err();
    assert_eq!(
        err.code,
        agriportal_platform::ErrorCode::InvalidArgument,
        "{err:?}"
    );
    assert!(err.message.contains("overflow") && err.permanent, "{err:?}");
    let totals = store.sales_totals().await.unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0].cell[0], near, "unchanged, not wrapped");
    // Nothing of the refused event was kept: its other figures (orders) neither.
    assert_eq!(totals[0].cell[2], 2);
    // A negative overflow is refused too.
    agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::query("UPDATE sales_totals SET grams = $1")
            .bind(i64::MIN + 5)
            .execute(pool)
            .await
            .unwrap();
    });
    let under = sales_event(
        "under",
        Partner::Voso,
        3,
        vec![(
            Some(figures("2022-05-01", "79", 10)),
            figures("2022-05-01", "79", 0),
        )],
    );
    assert!(store.apply(&[under]).await.is_err());
    // Another province's event, alone or after the refused one, still applies.
    let other = sales_event(
        "other",
        Partner::Voso,
        4,
        vec![(None, figures("2022-05-02", "01", 7))],
    );
    assert_eq!(store.apply(&[other]).await.unwrap(), 1);
    let totals = store.sales_totals().await.unwrap();
    assert_eq!(totals.len(), 2);
    let hanoi = totals.iter().find(|t| t.province_code == "01").unwrap();
    assert_eq!(hanoi.cell[0], 7);
    // The refused event was not claimed in the inbox: once resolved it can still apply.
    agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::query("UPDATE sales_totals SET grams = 0 WHERE province_code = '79'")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("UPDATE sales_daily SET grams = 0")
            .execute(pool)
            .await
            .unwrap();
    });
    assert_eq!(store.apply(&[over]).await.unwrap(), 1);
    // In Rust too: deltas whose sum would overflow are refused, never wrapped.
    let mut big = Deltas::default();
    big.sales_totals
        .insert(("79".into(), "voso"), [i64::MAX, 0, 0, 0]);
    let mut sum = big.clone();
    assert!(sum.merge(&big).is_err());
}

/// A fold of more daily cells than one SQLite statement binds (8 columns: 4,095 rows each):
/// every row is written, and a row that would overflow in the last statement refuses the
/// whole change, its first statements' rows too.
async fn large_fold(db: Database) {
    let store = Gw::new(db.clone());
    let start = time::Date::from_calendar_date(2020, time::Month::January, 1).unwrap();
    let day = |i: i64| (start + time::Duration::days(i)).to_string();
    let cells = 4_095 + 905;
    let lines = |id: &str, grams: i64| {
        let changes = (0..cells)
            .map(|i| (None, figures(&day(i), "79", grams)))
            .collect();
        sales_event(id, Partner::Voso, 1, changes)
    };
    assert_eq!(store.apply(&[lines("all", 1)]).await.unwrap(), 1);
    let rows = |table: &'static str| {
        let db = db.clone();
        async move {
            agriportal_platform::with_db!(&db.pool, |pool| {
                sqlx::query_scalar::<_, i64>(&format!(
                    "SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"
                ))
                .fetch_one(pool)
                .await
                .unwrap()
            })
        }
    };
    assert_eq!(rows("sales_daily").await, cells);
    assert_eq!(grams(&store).await, cells);
    // The last cell in key order (the latest day) near the top of the range.
    agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::query("UPDATE sales_daily SET grams = $1 WHERE day = $2")
            .bind(i64::MAX - 1)
            .bind(day(cells - 1))
            .execute(pool)
            .await
            .unwrap();
    });
    let err = store.apply(&[lines("over", 2)]).await.unwrap_err();
    assert!(err.message.contains("overflow") && err.permanent, "{err:?}");
    assert!(
        err.message.contains("1 of 5000 rows of sales_daily"),
        "{err:?}"
    );
    // Nothing of it was kept: not the other 4,999 cells, not the totals.
    assert_eq!(grams(&store).await, cells);
    let first: i64 = agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::query_scalar("SELECT grams FROM sales_daily WHERE day = $1")
            .bind(day(0))
            .fetch_one(pool)
            .await
            .unwrap()
    });
    assert_eq!(first, 1);
}

#[tokio::test]
async fn a_large_fold_is_written_or_refused_whole_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_large_fold", large_fold).await;
}

#[tokio::test]
async fn overflow_is_refused_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_overflow", overflow).await;
}

#[tokio::test]
async fn contract_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_contract", contract).await;
}

/// A sales line as (day, province, household).
type Sold<'a> = (&'a str, &'a str, &'a str);

fn sold((day, province, household): Sold) -> mpb::SalesFigures {
    mpb::SalesFigures {
        household_ref: household.into(),
        ..figures(day, province, 10)
    }
}

/// A sales event whose changes are (record id, previous, current).
fn trading_event(
    id: &str,
    partner: Partner,
    changes: Vec<(&str, Option<Sold>, Sold)>,
) -> Decoded<Deltas> {
    let event = mpb::SalesRecorded {
        event_id: id.into(),
        partner: partner.to_proto() as i32,
        batch_id: "b".into(),
        recorded_at_ms: 7,
        changes: changes
            .into_iter()
            .map(|(record, previous, current)| mpb::SalesChange {
                record_id: record.into(),
                previous: previous.map(sold),
                current: Some(sold(current)),
            })
            .collect(),
    };
    let mut deltas = Deltas::default();
    deltas.add_sales(&event).unwrap();
    Decoded {
        event_id: id.into(),
        event: deltas,
    }
}

/// A household as (registration day, province, listed products, digital address).
type Stock<'a> = (&'a str, &'a str, Option<u32>, Option<bool>);

fn stock_event(
    id: &str,
    partner: Partner,
    household: &str,
    previous: Option<Stock>,
    current: Stock,
) -> Decoded<Deltas> {
    let f = |(day, province, listed, digital): Stock| mpb::HouseholdFigures {
        province_code: province.into(),
        commune_code: String::new(),
        registered_on: day.into(),
        status: HouseholdStatus::Active as i32,
        listed_products: listed,
        has_digital_address: digital,
    };
    let event = mpb::HouseholdsRecorded {
        event_id: id.into(),
        partner: partner.to_proto() as i32,
        batch_id: "h".into(),
        recorded_at_ms: 9,
        changes: vec![mpb::HouseholdChange {
            household_ref: household.into(),
            previous: previous.map(f),
            current: Some(f(current)),
        }],
    };
    let mut deltas = Deltas::default();
    deltas.add_households(&event).unwrap();
    Decoded {
        event_id: id.into(),
        event: deltas,
    }
}

fn month(year: i32, month: u8) -> Period {
    Period::month(year, month).unwrap()
}

fn figures_of(pairs: &[(&str, i64)]) -> Option<BTreeMap<String, i64>> {
    Some(pairs.iter().map(|(p, n)| (p.to_string(), *n)).collect())
}

async fn trading(store: &SqlStore, m: Period) -> Option<BTreeMap<String, i64>> {
    household_facts::trading_households(&mut store.read_view().await.unwrap(), m)
        .await
        .unwrap()
}

/// Distinct trading households per month and province: exact through duplicates,
/// corrections that move a line to another household, month or province, and events applied
/// in any order.
async fn trading_households(db: Database) {
    let gw = Gw::new(db);
    let may = month(2022, 5);
    let e1 = trading_event(
        "t1",
        Partner::Voso,
        vec![
            ("r0", None, ("2022-05-03", "79", "h1")),
            ("r1", None, ("2022-05-09", "79", "h1")),
            ("r2", None, ("2022-05-10", "79", "h2")),
            ("r3", None, ("2022-05-11", "01", "h3")),
            ("r4", None, ("2022-05-12", "79", "")),
        ],
    );
    // The same key at another partner is another household.
    let e2 = trading_event(
        "t2",
        Partner::Postmart,
        vec![("r0", None, ("2022-05-03", "79", "h1"))],
    );
    assert_eq!(gw.apply(&[e1.clone(), e2.clone()]).await.unwrap(), 2);
    assert_eq!(trading(&gw, may).await, figures_of(&[("01", 1), ("79", 3)]));
    // Redelivered: nothing changes.
    assert_eq!(gw.apply(&[e1.clone(), e2]).await.unwrap(), 0);
    assert_eq!(trading(&gw, may).await, figures_of(&[("01", 1), ("79", 3)]));

    // A line moved to another household, month and province.
    let e3 = trading_event(
        "t3",
        Partner::Voso,
        vec![(
            "r2",
            Some(("2022-05-10", "79", "h2")),
            ("2022-06-01", "01", "h1"),
        )],
    );
    gw.apply(&[e3]).await.unwrap();
    assert_eq!(trading(&gw, may).await, figures_of(&[("01", 1), ("79", 2)]));
    assert_eq!(trading(&gw, month(2022, 6)).await, figures_of(&[("01", 1)]));
    // One of a household's two lines moved to a new household: both trade.
    let e4 = trading_event(
        "t4",
        Partner::Voso,
        vec![(
            "r0",
            Some(("2022-05-03", "79", "h1")),
            ("2022-05-03", "79", "h4"),
        )],
    );
    gw.apply(&[e4]).await.unwrap();
    assert_eq!(trading(&gw, may).await, figures_of(&[("01", 1), ("79", 3)]));
    // A line losing its household no longer counts it.
    let e5 = trading_event(
        "t5",
        Partner::Voso,
        vec![(
            "r3",
            Some(("2022-05-11", "01", "h3")),
            ("2022-05-11", "01", ""),
        )],
    );
    gw.apply(&[e5]).await.unwrap();
    assert_eq!(trading(&gw, may).await, figures_of(&[("79", 3)]));

    // Out of order: the correction before the line it corrects.
    let new = trading_event(
        "t6",
        Partner::Voso,
        vec![("r9", None, ("2022-07-01", "79", "h9"))],
    );
    let corrected = trading_event(
        "t7",
        Partner::Voso,
        vec![(
            "r9",
            Some(("2022-07-01", "79", "h9")),
            ("2022-07-02", "79", "h8"),
        )],
    );
    gw.apply(&[corrected]).await.unwrap();
    assert_eq!(
        trading(&gw, month(2022, 7)).await,
        figures_of(&[("79", 1)]),
        "h9 at -1 does not trade"
    );
    gw.apply(&[new]).await.unwrap();
    assert_eq!(trading(&gw, month(2022, 7)).await, figures_of(&[("79", 1)]));

    assert_eq!(trading(&gw, month(2022, 8)).await, figures_of(&[]));
    let quarter = Period::quarter(2022, 2).unwrap();
    assert_eq!(trading(&gw, quarter).await, None);
    assert_eq!(
        household_facts::listed_products(&mut gw.read_view().await.unwrap(), quarter)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        household_facts::digital_address_households(
            &mut gw.read_view().await.unwrap(),
            Period::year(2022).unwrap()
        )
        .await
        .unwrap(),
        None
    );
}

/// The two stocks at a month's end: the households registered up to it, as they last
/// reported, through corrections, duplicates and events in any order.
async fn household_stocks(db: Database) {
    let gw = Gw::new(db);
    let listed = |m: Period| {
        let store = &gw.store;
        async move {
            household_facts::listed_products(&mut store.read_view().await.unwrap(), m)
                .await
                .unwrap()
        }
    };
    let digital = |m: Period| {
        let store = &gw.store;
        async move {
            household_facts::digital_address_households(&mut store.read_view().await.unwrap(), m)
                .await
                .unwrap()
        }
    };
    let pm = Partner::Postmart;
    let events = [
        stock_event(
            "s1",
            pm,
            "h1",
            None,
            ("2022-05-10", "01", Some(10), Some(true)),
        ),
        stock_event(
            "s2",
            pm,
            "h2",
            None,
            ("2022-05-31", "01", Some(5), Some(false)),
        ),
        stock_event(
            "s3",
            Partner::Voso,
            "h1",
            None,
            ("2022-06-01", "01", Some(7), Some(true)),
        ),
        stock_event("s4", pm, "h3", None, ("2022-04-01", "79", None, None)),
    ];
    assert_eq!(gw.apply(&events).await.unwrap(), 4);
    assert_eq!(gw.apply(&events).await.unwrap(), 0, "duplicates");
    let (april, may, june) = (month(2022, 4), month(2022, 5), month(2022, 6));
    assert_eq!(listed(april).await, figures_of(&[]), "h3 reported nothing");
    assert_eq!(digital(april).await, figures_of(&[]));
    assert_eq!(listed(may).await, figures_of(&[("01", 15)]));
    assert_eq!(digital(may).await, figures_of(&[("01", 1)]));
    assert_eq!(listed(june).await, figures_of(&[("01", 22)]));
    assert_eq!(digital(june).await, figures_of(&[("01", 2)]));

    // h2 moves to 79 with no products (a reported zero) and a digital address.
    let moved = stock_event(
        "s5",
        pm,
        "h2",
        Some(("2022-05-31", "01", Some(5), Some(false))),
        ("2022-05-31", "79", Some(0), Some(true)),
    );
    gw.apply(std::slice::from_ref(&moved)).await.unwrap();
    gw.apply(&[moved]).await.unwrap();
    assert_eq!(listed(may).await, figures_of(&[("01", 10), ("79", 0)]));
    assert_eq!(digital(may).await, figures_of(&[("01", 1), ("79", 1)]));

    // Out of order: a correction of h5 before h5 itself.
    let new = stock_event("s6", pm, "h5", None, ("2022-05-01", "79", Some(3), None));
    let corrected = stock_event(
        "s7",
        pm,
        "h5",
        Some(("2022-05-01", "79", Some(3), None)),
        ("2022-05-01", "79", Some(4), Some(false)),
    );
    gw.apply(&[corrected]).await.unwrap();
    gw.apply(&[new]).await.unwrap();
    assert_eq!(listed(may).await, figures_of(&[("01", 10), ("79", 4)]));
    assert_eq!(digital(may).await, figures_of(&[("01", 1), ("79", 1)]));
    assert_eq!(listed(june).await, figures_of(&[("01", 17), ("79", 4)]));
}

/// A household as (registration day, province, status, listed products, digital address).
type Held<'a> = (&'a str, &'a str, HouseholdStatus, Option<u32>, Option<bool>);

/// Noon in Vietnam on `day` (`YYYY-MM-DD`), in ms: when a batch was recorded.
fn vietnam_noon(day: &str) -> i64 {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(day, format).unwrap();
    date.with_hms(12, 0, 0)
        .unwrap()
        .assume_offset(time::macros::offset!(+7))
        .unix_timestamp()
        * 1_000
}

fn held_event(
    id: &str,
    partner: Partner,
    household: &str,
    recorded_on: &str,
    previous: Option<Held>,
    current: Held,
) -> Decoded<Deltas> {
    let f = |(day, province, status, listed, digital): Held| mpb::HouseholdFigures {
        province_code: province.into(),
        commune_code: String::new(),
        registered_on: day.into(),
        status: status as i32,
        listed_products: listed,
        has_digital_address: digital,
    };
    let id = format!("{}-{id}", partner.code());
    let event = mpb::HouseholdsRecorded {
        event_id: id.clone(),
        partner: partner.to_proto() as i32,
        batch_id: id.clone(),
        recorded_at_ms: vietnam_noon(recorded_on),
        changes: vec![mpb::HouseholdChange {
            household_ref: household.into(),
            previous: previous.map(f),
            current: Some(f(current)),
        }],
    };
    let mut deltas = Deltas::default();
    deltas.add_households(&event).unwrap();
    Decoded {
        event_id: id,
        event: deltas,
    }
}

/// One month's household stocks: active and onboarded households, listed products and
/// households with a digital address, by province (zeros left out of the first two).
#[derive(Debug, PartialEq, Eq)]
struct AtEnd {
    active: BTreeMap<String, i64>,
    onboarded: BTreeMap<String, i64>,
    listed: BTreeMap<String, i64>,
    digital: BTreeMap<String, i64>,
}

fn at_end(
    active: &[(&str, i64)],
    onboarded: &[(&str, i64)],
    listed: &[(&str, i64)],
    digital: &[(&str, i64)],
) -> AtEnd {
    AtEnd {
        active: figures_of(active).unwrap(),
        onboarded: figures_of(onboarded).unwrap(),
        listed: figures_of(listed).unwrap(),
        digital: figures_of(digital).unwrap(),
    }
}

async fn read_at_end(store: &SqlStore, m: Period) -> AtEnd {
    let mut active = BTreeMap::new();
    let mut onboarded = BTreeMap::new();
    for (province, status, n) in store
        .read_view()
        .await
        .unwrap()
        .households_at_end(&m.to_string(), &m.end().to_string())
        .await
        .unwrap()
    {
        if status == HouseholdStatus::Active as i64 {
            *active.entry(province.clone()).or_insert(0) += n;
        }
        *onboarded.entry(province).or_insert(0) += n;
    }
    active.retain(|_, n| *n != 0);
    onboarded.retain(|_, n| *n != 0);
    AtEnd {
        active,
        onboarded,
        listed: household_facts::listed_products(&mut store.read_view().await.unwrap(), m)
            .await
            .unwrap()
            .unwrap(),
        digital: household_facts::digital_address_households(
            &mut store.read_view().await.unwrap(),
            m,
        )
        .await
        .unwrap()
        .unwrap(),
    }
}

/// Stocks as at a month's end: a change recorded in a month holds from that month on and
/// leaves the months before it as they were, through chains of changes, a moved province or
/// registration day, redeliveries and any order of events.
async fn household_stocks_as_at_month_end(db: Database) {
    let gw = Gw::new(db);
    let (active, closed, suspended) = (
        HouseholdStatus::Active,
        HouseholdStatus::Closed,
        HouseholdStatus::Suspended,
    );
    let events = |partner: Partner| {
        vec![
            // h1 onboarded active in September, closed by a change recorded in November.
            held_event(
                "h1-new",
                partner,
                "h1",
                "2026-09-10",
                None,
                ("2026-09-10", "01", active, Some(5), Some(true)),
            ),
            held_event(
                "h1-closed",
                partner,
                "h1",
                "2026-11-05",
                Some(("2026-09-10", "01", active, Some(5), Some(true))),
                ("2026-09-10", "01", closed, Some(5), Some(true)),
            ),
            // h2, back-filled (registered in August, recorded in September), then a chain of
            // two changes: moved to 01 with more products and a digital address in October,
            // moved to 08 and suspended in November.
            held_event(
                "h2-new",
                partner,
                "h2",
                "2026-09-01",
                None,
                ("2026-08-01", "79", active, Some(3), Some(false)),
            ),
            held_event(
                "h2-moved",
                partner,
                "h2",
                "2026-10-15",
                Some(("2026-08-01", "79", active, Some(3), Some(false))),
                ("2026-08-01", "01", active, Some(4), Some(true)),
            ),
            held_event(
                "h2-moved-again",
                partner,
                "h2",
                "2026-11-20",
                Some(("2026-08-01", "01", active, Some(4), Some(true))),
                ("2026-08-01", "08", suspended, Some(6), Some(true)),
            ),
            // h3 registered in October by its first record; a correction recorded in
            // November dates it back to September, which does not move September's figures.
            held_event(
                "h3-new",
                partner,
                "h3",
                "2026-10-20",
                None,
                ("2026-10-20", "79", active, None, None),
            ),
            held_event(
                "h3-redated",
                partner,
                "h3",
                "2026-11-02",
                Some(("2026-10-20", "79", active, None, None)),
                ("2026-09-25", "79", active, None, None),
            ),
        ]
    };
    let months = [
        month(2026, 7),
        month(2026, 8),
        month(2026, 9),
        month(2026, 10),
        month(2026, 11),
        month(2026, 12),
    ];
    let expected = [
        at_end(&[], &[], &[], &[]),
        at_end(&[("79", 1)], &[("79", 1)], &[("79", 3)], &[("79", 0)]),
        at_end(
            &[("01", 1), ("79", 1)],
            &[("01", 1), ("79", 1)],
            &[("01", 5), ("79", 3)],
            &[("01", 1), ("79", 0)],
        ),
        at_end(
            &[("01", 2), ("79", 1)],
            &[("01", 2), ("79", 1)],
            &[("01", 9)],
            &[("01", 2)],
        ),
        // December (after the last change) reads like November: the current figures.
        at_end(
            &[("79", 1)],
            &[("01", 1), ("08", 1), ("79", 1)],
            &[("01", 5), ("08", 6)],
            &[("01", 1), ("08", 1)],
        ),
        at_end(
            &[("79", 1)],
            &[("01", 1), ("08", 1), ("79", 1)],
            &[("01", 5), ("08", 6)],
            &[("01", 1), ("08", 1)],
        ),
    ];
    let check = |times: i64| {
        let store = &gw.store;
        let expected = &expected;
        async move {
            for (m, e) in months.iter().zip(expected) {
                let scaled = |f: &BTreeMap<String, i64>| {
                    f.iter().map(|(p, n)| (p.clone(), n * times)).collect()
                };
                let wanted = AtEnd {
                    active: scaled(&e.active),
                    onboarded: scaled(&e.onboarded),
                    listed: scaled(&e.listed),
                    digital: scaled(&e.digital),
                };
                assert_eq!(
                    read_at_end(store, *m).await,
                    wanted,
                    "{m}, {times} partner(s)"
                );
            }
        }
    };

    // In recording order, one batch at a time, then redelivered.
    let postmart = events(Partner::Postmart);
    for e in &postmart {
        assert_eq!(gw.apply(std::slice::from_ref(e)).await.unwrap(), 1);
    }
    check(1).await;
    assert_eq!(gw.apply(&postmart).await.unwrap(), 0, "redelivered");
    check(1).await;

    // The same changes at another partner, in reverse order and in one batch (each change
    // before the one it follows): the sums are the same, so every figure doubles.
    let mut voso = events(Partner::Voso);
    voso.reverse();
    assert_eq!(gw.apply(&voso).await.unwrap(), voso.len());
    check(2).await;

    // Through the indicators, as the public reads them; TRAINED_HH_PCT divides by the same
    // onboarded households.
    let model = IndicatorsReadModel::new(gw.store.clone());
    let codes = [
        "HH_ACTIVE",
        "HH_ONBOARDED",
        "PRODUCTS_LISTED",
        "DIGITAL_ADDR_HH",
    ];
    let seeded: Vec<Decoded<IndicatorChange>> = codes
        .iter()
        .map(|code| {
            catalogue(
                &format!("cat-{code}"),
                indicator(code, 1, ipb::Source::Marketplace, ipb::Aggregation::Sum),
            )
        })
        .collect();
    apply_ind(&gw.db, &model, &seeded).await;
    let dashboard = Dashboard::new(gw.store.clone());
    let national = |code: &'static str, period: &'static str| {
        let dashboard = &dashboard;
        async move {
            let view = dashboard.indicator(code, period, "").await.unwrap();
            view.national.value.unwrap().to_string()
        }
    };
    assert_eq!(national("HH_ACTIVE", "202609").await, "4");
    assert_eq!(national("HH_ACTIVE", "202610").await, "6");
    assert_eq!(national("HH_ACTIVE", "202611").await, "2");
    assert_eq!(national("HH_ONBOARDED", "202610").await, "6");
    assert_eq!(national("HH_ONBOARDED", "202611").await, "6");
    assert_eq!(national("PRODUCTS_LISTED", "202610").await, "18");
    assert_eq!(national("PRODUCTS_LISTED", "202611").await, "22");
    assert_eq!(national("DIGITAL_ADDR_HH", "202609").await, "2");
    let october = dashboard
        .indicator("HH_ACTIVE", "202610", "")
        .await
        .unwrap();
    let of = |code: &str| {
        october
            .provinces
            .iter()
            .find(|p| p.code == code)
            .and_then(|p| p.figure.value)
            .map(|v| v.to_string())
    };
    // November's move to 08 leaves October's provinces alone.
    assert_eq!(
        (of("01"), of("79"), of("08")),
        (Some("4".into()), Some("2".into()), Some("0".into()))
    );
}

#[tokio::test]
async fn household_stocks_as_at_month_end_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_asof", household_stocks_as_at_month_end).await;
}

#[tokio::test]
async fn trading_households_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_trading", trading_households).await;
}

#[tokio::test]
async fn household_stocks_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_stocks", household_stocks).await;
}

#[tokio::test]
async fn concurrent_apply_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_concurrent", concurrent_apply).await;
}

/// Rolling back: the previous release must start on a database that a newer release already
/// migrated one step further, instead of refusing the unknown migration.
async fn an_older_binary_starts_on_a_newer_schema(db: Database) {
    agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101, 'from a newer release', TRUE, $1, 1)",
        )
        .bind(vec![0u8; 48])
        .execute(pool)
        .await
        .unwrap();
    });
    let again = db.migrate(&agriportal_gateway::store::migrations()).await;
    assert!(again.is_ok(), "{:?}", again.err());
}

#[tokio::test]
async fn an_older_binary_starts_on_a_newer_schema_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_rollback", an_older_binary_starts_on_a_newer_schema)
        .await;
}

/// A sales line in Hồ Chí Minh City as (day, commune, grams); `""`: no commune.
type InCommune<'a> = (&'a str, &'a str, i64);

fn in_commune((day, commune, grams): InCommune) -> mpb::SalesFigures {
    mpb::SalesFigures {
        commune_code: commune.into(),
        ..figures(day, "79", grams)
    }
}

/// A sales event whose changes are (record id, previous, current).
fn commune_event(id: &str, changes: Vec<(&str, Option<InCommune>, InCommune)>) -> Decoded<Deltas> {
    let event = mpb::SalesRecorded {
        event_id: id.into(),
        partner: Partner::Voso.to_proto() as i32,
        batch_id: "b".into(),
        recorded_at_ms: 11,
        changes: changes
            .into_iter()
            .map(|(record, previous, current)| mpb::SalesChange {
                record_id: record.into(),
                previous: previous.map(in_commune),
                current: Some(in_commune(current)),
            })
            .collect(),
    };
    let mut deltas = Deltas::default();
    deltas.add_sales(&event).unwrap();
    Decoded {
        event_id: id.into(),
        event: deltas,
    }
}

/// A household in Hồ Chí Minh City as (registration day, commune, status).
type HouseholdIn<'a> = (&'a str, &'a str, HouseholdStatus);

fn commune_household(
    id: &str,
    household: &str,
    previous: Option<HouseholdIn>,
    current: HouseholdIn,
) -> Decoded<Deltas> {
    let f = |(day, commune, status): HouseholdIn| mpb::HouseholdFigures {
        province_code: "79".into(),
        commune_code: commune.into(),
        registered_on: day.into(),
        status: status as i32,
        ..Default::default()
    };
    let event = mpb::HouseholdsRecorded {
        event_id: id.into(),
        partner: Partner::Postmart.to_proto() as i32,
        batch_id: "h".into(),
        recorded_at_ms: 12,
        changes: vec![mpb::HouseholdChange {
            household_ref: household.into(),
            previous: previous.map(f),
            current: Some(f(current)),
        }],
    };
    let mut deltas = Deltas::default();
    deltas.add_households(&event).unwrap();
    Decoded {
        event_id: id.into(),
        event: deltas,
    }
}

/// A commune's value (or the unassigned rest, `""`) in the dashboard's answer for 79.
async fn by_commune(dashboard: &Dashboard, code: &str, period: &str) -> BTreeMap<String, String> {
    let view = dashboard
        .indicator_communes(code, period, "79")
        .await
        .unwrap();
    let CommunesView::Figures {
        communes,
        unassigned,
    } = view.communes
    else {
        panic!("{code} has no communes: {:?}", view.communes);
    };
    assert_eq!(
        communes.len(),
        168,
        "every commune of 79, with or without records"
    );
    // The communes and the unassigned rest add up to the province's figure.
    let sum: rust_decimal::Decimal = communes
        .iter()
        .map(|c| c.value)
        .sum::<rust_decimal::Decimal>()
        + unassigned;
    assert_eq!(view.province.figure.value, Some(sum), "{code} {period}");
    let mut out: BTreeMap<String, String> = communes
        .into_iter()
        .filter(|c| !c.value.is_zero())
        .map(|c| (c.code, c.value.to_string()))
        .collect();
    out.insert(String::new(), unassigned.to_string());
    out
}

fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(c, v)| (c.to_string(), v.to_string()))
        .collect()
}

/// Sales and households by commune: a correction moves a line from one commune to another, a
/// line without commune counts only in the unassigned rest, events in any order and twice.
async fn communes(db: Database) {
    let gw = Gw::new(db.clone());
    let model = IndicatorsReadModel::new(gw.store.clone());
    let dashboard = Dashboard::new(gw.store.clone());
    let marketplace = |code: &str| {
        catalogue(
            &format!("cat-{code}"),
            indicator(code, 1, ipb::Source::Marketplace, ipb::Aggregation::Sum),
        )
    };
    apply_ind(
        &db,
        &model,
        &[
            marketplace("SALES_VALUE"),
            marketplace("SALES_TONNES"),
            marketplace("ORDERS"),
            marketplace("HH_ONBOARDED"),
            marketplace("HH_ACTIVE"),
            marketplace("HH_TRADING"),
            catalogue(
                "cat-trained",
                indicator(
                    "TRAINED_HH",
                    1,
                    ipb::Source::Province,
                    ipb::Aggregation::Sum,
                ),
            ),
        ],
    )
    .await;
    let (a, b) = ("25747", "25750");
    let first = commune_event(
        "c1",
        vec![
            ("r1", None, ("2022-03-10", a, 1_000)),
            ("r2", None, ("2022-03-11", "", 500)),
            ("r3", None, ("2022-04-01", b, 7)),
        ],
    );
    // r1 moves to commune b and grows; r2 gains a commune; both in March still.
    let corrected = commune_event(
        "c2",
        vec![
            (
                "r1",
                Some(("2022-03-10", a, 1_000)),
                ("2022-03-20", b, 1_200),
            ),
            ("r2", Some(("2022-03-11", "", 500)), ("2022-03-11", a, 500)),
        ],
    );
    // Out of order, and each twice.
    assert_eq!(gw.apply(std::slice::from_ref(&corrected)).await.unwrap(), 1);
    assert_eq!(gw.apply(&[first.clone(), corrected]).await.unwrap(), 1);
    assert_eq!(gw.apply(&[first]).await.unwrap(), 0);
    // figures(): value = grams × 3, orders = 2 a line.
    assert_eq!(
        by_commune(&dashboard, "SALES_VALUE", "202203").await,
        values(&[(a, "1500"), (b, "3600"), ("", "0")])
    );
    assert_eq!(
        by_commune(&dashboard, "ORDERS", "202204").await,
        values(&[(b, "2"), ("", "0")])
    );
    // A line without commune is in the province and in no commune.
    let late = commune_event("c3", vec![("r4", None, ("2022-03-31", "", 2_500_000))]);
    gw.apply(&[late]).await.unwrap();
    assert_eq!(
        by_commune(&dashboard, "SALES_TONNES", "202203").await,
        values(&[(a, "0.001"), (b, "0.001"), ("", "2.500")])
    );
    assert_eq!(
        by_commune(&dashboard, "SALES_VALUE", "202203").await,
        values(&[(a, "1500"), (b, "3600"), ("", "7500000")])
    );

    // Households: a stock at each month's end, by registration month and status now.
    use HouseholdStatus::{Active, Suspended as Inactive};
    let events = [
        commune_household("h1", "x", None, ("2022-02-10", a, Active)),
        commune_household("h2", "y", None, ("2022-03-01", b, Inactive)),
        commune_household("h3", "z", None, ("2022-03-05", "", Active)),
        // x moves to b and becomes inactive; y gains nothing but is counted once.
        commune_household(
            "h4",
            "x",
            Some(("2022-02-10", a, Active)),
            ("2022-02-10", b, Inactive),
        ),
    ];
    assert_eq!(gw.apply(&events).await.unwrap(), 4);
    assert_eq!(gw.apply(&events).await.unwrap(), 0);
    assert_eq!(
        by_commune(&dashboard, "HH_ONBOARDED", "202202").await,
        values(&[(b, "1"), ("", "0")])
    );
    assert_eq!(
        by_commune(&dashboard, "HH_ONBOARDED", "202203").await,
        values(&[(b, "2"), ("", "1")])
    );
    assert_eq!(
        by_commune(&dashboard, "HH_ACTIVE", "202203").await,
        values(&[("", "1")])
    );

    // Indicators not kept by commune say why; without a province there is no list.
    for (code, note) in [
        ("HH_TRADING", CommunesNote::NotByCommune),
        ("TRAINED_HH", CommunesNote::ProvinceReported),
    ] {
        let view = dashboard
            .indicator_communes(code, "202203", "79")
            .await
            .unwrap();
        assert_eq!(view.communes, CommunesView::None(note), "{code}");
    }
    let national = dashboard
        .indicator("SALES_VALUE", "202203", "")
        .await
        .unwrap();
    assert_eq!(national.communes, None);
    assert!(dashboard
        .indicator_communes("SALES_VALUE", "202203", "")
        .await
        .is_err());
}

#[tokio::test]
async fn communes_on_each_backend() {
    testing::each_backend::<Gateway, _, _>("gw_communes", communes).await;
}
