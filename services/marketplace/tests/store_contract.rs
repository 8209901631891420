//! One contract for `MarketplaceStore`, run on SQLite and on PostgreSQL (a fresh database).

// A test crate: helpers as well as tests fail by panicking (clippy.toml allows it only inside
// `#[test]` functions, not in the helpers they share).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use agriportal_marketplace::config::Limits;
use agriportal_marketplace::domain::{content_hash, validate_onboarding, validate_sales};
use agriportal_marketplace::store::{Batch, MarketplaceStore, SqlStore};
use agriportal_marketplace::Marketplace;
use agriportal_platform::outbox::Outbox;
use agriportal_platform::reference::Partner;
use agriportal_platform::storage::Database;
use agriportal_platform::{testing, with_db, ErrorCode};
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::marketplace::v1 as pb;
use prost::Message;

fn store(db: Database) -> SqlStore {
    SqlStore::new(db, Outbox::detached())
}

fn line(id: &str, grams: i64) -> pb::SalesRecord {
    pb::SalesRecord {
        record_id: id.into(),
        sale_date: "2023-01-02".into(),
        province_code: "31".into(),
        commune_code: String::new(),
        category: "vegetables".into(),
        quantity_grams: grams,
        value_vnd: grams * 20,
        orders: 1,
        household_ref: String::new(),
    }
}

fn batch(
    id: &str,
    records: Vec<pb::SalesRecord>,
) -> Batch<agriportal_marketplace::domain::SaleLine> {
    let request = pb::PushSalesRequest {
        batch_id: id.into(),
        records,
    };
    Batch {
        batch_id: id.into(),
        content_hash: content_hash("sales", &request),
        validated: validate_sales(&request.records, &Limits::default()),
        request: request.encode_to_vec(),
    }
}

async fn events(store: &SqlStore) -> Vec<pb::SalesRecorded> {
    let payloads: Vec<Vec<u8>> = with_db!(&store.database().pool, |pool| {
        sqlx::query_scalar(
            "SELECT payload FROM outbox WHERE subject = 'marketplace.sales_recorded' ORDER BY seq",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    });
    payloads
        .iter()
        .map(|p| pb::SalesRecorded::decode(p.as_slice()).unwrap())
        .collect()
}

async fn contract(db: Database) {
    let store = store(db);
    let p = Partner::Postmart;
    let first = store
        .push_sales(p, batch("b1", vec![line("a", 100), line("b", 200)]))
        .await
        .unwrap();
    assert_eq!(
        (first.accepted, first.unchanged, first.corrected),
        (2, 0, 0)
    );
    assert_eq!(events(&store).await.len(), 1, "one event per batch");

    // Replay: the stored result, no second event.
    let again = store
        .push_sales(p, batch("b1", vec![line("a", 100), line("b", 200)]))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(events(&store).await.len(), 1);

    // Same id, other content: refused, nothing written.
    let err = store
        .push_sales(p, batch("b1", vec![line("a", 101)]))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition);

    // Correction and unchanged: the event carries previous and current figures.
    let r = store
        .push_sales(p, batch("b2", vec![line("a", 150), line("b", 200)]))
        .await
        .unwrap();
    assert_eq!((r.accepted, r.unchanged, r.corrected), (0, 1, 1));
    let all = events(&store).await;
    assert_eq!(all.len(), 2);
    let change = &all[1].changes[0];
    assert_eq!(change.previous.as_ref().unwrap().quantity_grams, 100);
    assert_eq!(change.current.as_ref().unwrap().quantity_grams, 150);
    assert_eq!(all[1].changes.len(), 1, "unchanged lines are not announced");

    // A batch of only unchanged lines emits nothing.
    store
        .push_sales(p, batch("b3", vec![line("b", 200)]))
        .await
        .unwrap();
    assert_eq!(events(&store).await.len(), 2);

    // Keys are per partner.
    let voso = store
        .push_sales(Partner::Voso, batch("b1", vec![line("a", 5)]))
        .await
        .unwrap();
    assert_eq!(voso.accepted, 1);

    let totals = store.held_totals(p).await.unwrap();
    assert_eq!(
        (totals.lines, totals.grams, totals.value_vnd, totals.orders),
        (2, 350, 7_000, 2)
    );
    assert_eq!(store.held_totals(Partner::Voso).await.unwrap().grams, 5);
    assert_eq!(store.get_batch(p, "b2").await.unwrap(), Some(r));
    assert_eq!(store.get_batch(Partner::Voso, "b2").await.unwrap(), None);

    // Rejected records are reported and kept out.
    let rejected = store
        .push_sales(p, batch("b4", vec![line("", 1), line("c", -1)]))
        .await
        .unwrap();
    assert_eq!((rejected.accepted, rejected.rejected), (0, 2));
    assert_eq!(store.held_totals(p).await.unwrap().lines, 2);

    // The raw request is kept for audit and replay.
    let raw: Vec<u8> = with_db!(&store.database().pool, |pool| {
        sqlx::query_scalar(
            "SELECT request FROM batches WHERE partner = 'postmart' AND batch_id = 'b4'",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    });
    assert_eq!(
        pb::PushSalesRequest::decode(raw.as_slice())
            .unwrap()
            .records
            .len(),
        2
    );

    // Households: an update replaces, never adds.
    let mk = |status: HouseholdStatus, province: &str| pb::OnboardingRecord {
        household_ref: "h".into(),
        province_code: province.into(),
        commune_code: String::new(),
        registered_on: "2021-10-10".into(),
        status: status as i32,
        categories: vec![],
        ..Default::default()
    };
    for (id, record, expect) in [
        ("o1", mk(HouseholdStatus::Active, "01"), (1, 0, 0)),
        ("o2", mk(HouseholdStatus::Active, "01"), (0, 1, 0)),
        ("o3", mk(HouseholdStatus::Closed, "24"), (0, 0, 1)),
    ] {
        let request = pb::PushOnboardingRequest {
            batch_id: id.into(),
            records: vec![record],
        };
        let b = Batch {
            batch_id: id.into(),
            content_hash: content_hash("onboarding", &request),
            validated: validate_onboarding(&request.records, &Limits::default()),
            request: request.encode_to_vec(),
        };
        let r = store.push_onboarding(p, b).await.unwrap();
        assert_eq!((r.accepted, r.unchanged, r.corrected), expect, "{id}");
    }
    assert_eq!(store.held_totals(p).await.unwrap().households, 1);
    // A sales batch id reused for onboarding is a conflict, not a replay.
    let request = pb::PushOnboardingRequest {
        batch_id: "b1".into(),
        records: vec![],
    };
    let b = Batch {
        batch_id: "b1".into(),
        content_hash: content_hash("onboarding", &request),
        validated: validate_onboarding(&[], &Limits::default()),
        request: request.encode_to_vec(),
    };
    assert_eq!(
        store.push_onboarding(p, b).await.unwrap_err().code,
        ErrorCode::FailedPrecondition
    );
}

/// Concurrent batches of one partner that correct the same line: each correction's
/// `previous` is what the one before it left, so the announced differences add up.
async fn concurrent_corrections(db: Database) {
    let store = Arc::new(store(db));
    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .push_sales(
                    Partner::Voso,
                    batch(&format!("c{i}"), vec![line("same", 10 + i)]),
                )
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut net: HashMap<String, i64> = HashMap::new();
    for e in events(&store).await {
        for c in e.changes {
            *net.entry(c.record_id).or_default() += c.current.unwrap().quantity_grams
                - c.previous.map(|p| p.quantity_grams).unwrap_or(0);
        }
    }
    let held = store.held_totals(Partner::Voso).await.unwrap();
    assert_eq!(
        net["same"], held.grams,
        "announced differences add up to what is held"
    );
}

/// A batch of the largest size a partner may send is stored whole: on SQLite its rows take
/// several statements (each under the bound-parameter limit), on PostgreSQL one. Every value
/// is stored as sent, NULL where a record left out its household, and its re-sent corrections
/// are found and announced with the values they replace.
async fn largest_batches(db: Database) {
    let store = store(db);
    let p = Partner::Postmart;
    let n = Limits::default().max_records;
    let lines = |grams: i64| -> Vec<pb::SalesRecord> {
        (0..n)
            .map(|i| {
                let id = format!("big-{i}");
                let g = grams + i64::try_from(i).unwrap();
                if i % 3 == 0 {
                    sold_by(&id, g, &format!("hh-{i}"))
                } else {
                    line(&id, g)
                }
            })
            .collect()
    };
    let first = store.push_sales(p, batch("big-1", lines(1))).await.unwrap();
    assert_eq!(usize::try_from(first.accepted).unwrap(), n);
    let count = i64::try_from(n).unwrap();
    // Σ (1 + i) for i < n, and đồng 20 times that.
    let grams = count * (count + 1) / 2;
    let held = store.held_totals(p).await.unwrap();
    assert_eq!(
        (held.lines, held.grams, held.value_vnd, held.orders),
        (count, grams, 20 * grams, count)
    );
    let (with_household, first_ref): (i64, Option<String>) = with_db!(
        &store.database().pool,
        |pool| {
            sqlx::query_as(
            "SELECT COUNT(household_ref), MIN(CASE WHEN record_id = 'big-3' THEN household_ref END) \
             FROM sales_records WHERE partner = 'postmart'",
        )
        .fetch_one(pool)
        .await
        .unwrap()
        }
    );
    assert_eq!(with_household, (count + 2) / 3);
    assert_eq!(first_ref.as_deref(), Some("hh-3"));
    // Every line corrected by 5 grams: each change carries what it replaced.
    let second = store.push_sales(p, batch("big-2", lines(6))).await.unwrap();
    assert_eq!(
        (second.accepted, second.corrected),
        (0, u32::try_from(n).unwrap())
    );
    let events = events(&store).await;
    // Each batch's changes once, over as many events as keep each under the size limit.
    let changes: usize = events.iter().map(|e| e.changes.len()).sum();
    assert_eq!(changes, 2 * n);
    assert!(events.len() > 2, "the corrections do not fit one event");
    let net: i64 = events
        .iter()
        .flat_map(|e| &e.changes)
        .map(|c| {
            c.current.as_ref().unwrap().quantity_grams
                - c.previous.as_ref().map_or(0, |p| p.quantity_grams)
        })
        .sum();
    assert_eq!(net, grams + 5 * count);
    assert_eq!(store.held_totals(p).await.unwrap().grams, grams + 5 * count);
    // On PostgreSQL the raw requests and the events' payloads, far over the 2 kB past which
    // values are compressed, are compressed with lz4 (migrations 0004 and the kit's 0003).
    if store.database().is_postgres() {
        let methods: Vec<Option<String>> = with_db!(&store.database().pool, |pool| {
            sqlx::query_scalar(
                "SELECT pg_column_compression(request) FROM batches \
                 UNION ALL SELECT pg_column_compression(payload) FROM outbox",
            )
            .fetch_all(pool)
            .await
            .unwrap()
        });
        assert!(methods.len() > 2, "{methods:?}");
        assert!(
            methods.iter().all(|m| m.as_deref() == Some("lz4")),
            "{methods:?}"
        );
    }
}

#[tokio::test]
async fn largest_batches_on_each_backend() {
    testing::each_backend::<Marketplace, _, _>("mp_largest_batches", largest_batches).await;
}

/// Records folded into rollup cells the way the gateway folds events, and the outbox backlog
/// read after them.
async fn rollup_cells(db: Database) {
    let store = store(db);
    use pb::RollupKind::{Households, Sales};
    let p = Partner::Voso;
    let mut other_day = line("c", 5);
    other_day.sale_date = "2023-01-03".into();
    let mut other_province = line("d", 9);
    other_province.province_code = "01".into();
    store
        .push_sales(
            p,
            batch(
                "r1",
                vec![line("a", 100), line("b", 200), other_day, other_province],
            ),
        )
        .await
        .unwrap();
    // A correction moves `b` to Hà Nội: its old cell loses it.
    let mut moved = line("b", 50);
    moved.province_code = "01".into();
    store.push_sales(p, batch("r2", vec![moved])).await.unwrap();
    let got = store.rollup_cells(p, Sales, None).await.unwrap();
    assert_eq!(got.unsent_events, 2, "nothing relays in this test");
    let mut shape: Vec<(String, String, [i64; 4])> = got
        .cells
        .iter()
        .map(|c| {
            assert_eq!(c.category, "vegetables");
            (
                c.day.clone(),
                c.province_code.clone(),
                [c.quantity_grams, c.value_vnd, c.orders, c.count],
            )
        })
        .collect();
    shape.sort();
    assert_eq!(
        shape,
        vec![
            ("2023-01-02".into(), "01".into(), [59, 1180, 2, 2]),
            ("2023-01-02".into(), "31".into(), [100, 2000, 1, 1]),
            ("2023-01-03".into(), "31".into(), [5, 100, 1, 1]),
        ]
    );
    assert_eq!(
        store
            .rollup_cells(p, Sales, Some("01"))
            .await
            .unwrap()
            .cells
            .len(),
        1
    );
    assert!(store
        .rollup_cells(Partner::Postmart, Sales, None)
        .await
        .unwrap()
        .cells
        .is_empty());
    let request = pb::PushOnboardingRequest {
        batch_id: "h1".into(),
        records: vec![pb::OnboardingRecord {
            household_ref: "h".into(),
            province_code: "31".into(),
            commune_code: String::new(),
            registered_on: "2022-02-02".into(),
            status: HouseholdStatus::Suspended as i32,
            categories: vec!["vegetables".into()],
            ..Default::default()
        }],
    };
    store
        .push_onboarding(
            p,
            Batch {
                batch_id: "h1".into(),
                content_hash: content_hash("onboarding", &request),
                validated: validate_onboarding(&request.records, &Limits::default()),
                request: request.encode_to_vec(),
            },
        )
        .await
        .unwrap();
    let hh = store.rollup_cells(p, Households, None).await.unwrap();
    assert_eq!(hh.cells.len(), 1);
    let c = &hh.cells[0];
    assert_eq!(
        (
            c.day.as_str(),
            c.province_code.as_str(),
            c.status,
            c.count,
            c.quantity_grams
        ),
        ("2022-02-02", "31", HouseholdStatus::Suspended as i32, 1, 0)
    );
    assert_eq!(hh.unsent_events, 3);
    with_db!(&store.database().pool, |pool| {
        sqlx::query("UPDATE outbox SET sent_at_ms = 1")
            .execute(pool)
            .await
            .unwrap();
    });
    assert_eq!(
        store
            .rollup_cells(p, Households, None)
            .await
            .unwrap()
            .unsent_events,
        0
    );
    assert!(store
        .rollup_cells(p, pb::RollupKind::Unspecified, None)
        .await
        .is_err());
}

fn sold_by(id: &str, grams: i64, household: &str) -> pb::SalesRecord {
    pb::SalesRecord {
        household_ref: household.into(),
        ..line(id, grams)
    }
}

fn onboarding(
    id: &str,
    listed: Option<u32>,
    digital: Option<bool>,
) -> Batch<agriportal_marketplace::domain::Household> {
    let request = pb::PushOnboardingRequest {
        batch_id: id.into(),
        records: vec![pb::OnboardingRecord {
            household_ref: "h".into(),
            province_code: "31".into(),
            registered_on: "2022-02-02".into(),
            status: HouseholdStatus::Active as i32,
            listed_products: listed,
            has_digital_address: digital,
            ..Default::default()
        }],
    };
    Batch {
        batch_id: id.into(),
        content_hash: content_hash("onboarding", &request),
        validated: validate_onboarding(&request.records, &Limits::default()),
        request: request.encode_to_vec(),
    }
}

async fn household_events(store: &SqlStore) -> Vec<pb::HouseholdsRecorded> {
    let payloads: Vec<Vec<u8>> = with_db!(&store.database().pool, |pool| {
        sqlx::query_scalar(
            "SELECT payload FROM outbox WHERE subject = 'marketplace.households_recorded' ORDER BY seq",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    });
    payloads
        .iter()
        .map(|p| pb::HouseholdsRecorded::decode(p.as_slice()).unwrap())
        .collect()
}

/// The optional household fields: stored, compared (a different value is a correction, the
/// same one unchanged, and a record sent without them compares as before), and carried in the
/// events' previous and current figures.
async fn household_fields(db: Database) {
    let store = store(db);
    let p = Partner::Voso;
    let counts = |r: &pb::PushResult| (r.accepted, r.unchanged, r.corrected, r.rejected);

    let first = store
        .push_sales(p, batch("s1", vec![line("a", 1), sold_by("b", 2, "h1")]))
        .await
        .unwrap();
    assert_eq!(counts(&first), (2, 0, 0, 0));
    let e = events(&store).await;
    let current = |e: &pb::SalesRecorded, i: usize| e.changes[i].current.clone().unwrap();
    assert_eq!(current(&e[0], 0).household_ref, "");
    assert_eq!(current(&e[0], 1).household_ref, "h1");
    // The replayed batch is the stored result, nothing new.
    assert_eq!(
        store
            .push_sales(p, batch("s1", vec![line("a", 1), sold_by("b", 2, "h1")]))
            .await
            .unwrap(),
        first
    );

    // Same values, padded: unchanged; another household: a correction with both figures.
    let r = store
        .push_sales(p, batch("s2", vec![line("a", 1), sold_by("b", 2, " h1 ")]))
        .await
        .unwrap();
    assert_eq!(counts(&r), (0, 2, 0, 0));
    let r = store
        .push_sales(p, batch("s3", vec![sold_by("a", 1, "h2"), line("b", 2)]))
        .await
        .unwrap();
    assert_eq!(counts(&r), (0, 0, 2, 0));
    let e = events(&store).await;
    assert_eq!(e.len(), 2);
    let moved = &e[1].changes;
    assert_eq!(moved[0].previous.as_ref().unwrap().household_ref, "");
    assert_eq!(moved[0].current.as_ref().unwrap().household_ref, "h2");
    assert_eq!(moved[1].previous.as_ref().unwrap().household_ref, "h1");
    assert_eq!(moved[1].current.as_ref().unwrap().household_ref, "");
    let held: Vec<(String, Option<String>)> = with_db!(&store.database().pool, |pool| {
        sqlx::query_as(
            "SELECT record_id, household_ref FROM sales_records WHERE partner = 'voso' ORDER BY record_id",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    });
    assert_eq!(
        held,
        vec![("a".into(), Some("h2".into())), ("b".into(), None)]
    );
    // A line stored before the column existed (NULL) re-sent without the field: unchanged.
    let r = store
        .push_sales(p, batch("s4", vec![line("b", 2)]))
        .await
        .unwrap();
    assert_eq!(counts(&r), (0, 1, 0, 0));
    // Too long: rejected with the field named, the held line untouched.
    let r = store
        .push_sales(p, batch("s5", vec![sold_by("b", 2, &"x".repeat(65))]))
        .await
        .unwrap();
    assert_eq!(counts(&r), (0, 0, 0, 1));
    assert_eq!(r.rejections[0].field, "household_ref");
    assert_eq!(events(&store).await.len(), 2);

    // Households: absent, then reported, then the same (read back from the flag column on
    // each backend), then changed, then absent again.
    for (id, listed, digital, expect) in [
        ("o1", None, None, (1, 0, 0, 0)),
        ("o2", None, None, (0, 1, 0, 0)),
        ("o3", Some(5), Some(true), (0, 0, 1, 0)),
        ("o4", Some(5), Some(true), (0, 1, 0, 0)),
        ("o5", Some(5), Some(false), (0, 0, 1, 0)),
        ("o6", Some(5), Some(false), (0, 1, 0, 0)),
        ("o7", Some(0), None, (0, 0, 1, 0)),
        ("o8", Some(100_001), None, (0, 0, 0, 1)),
    ] {
        let r = store
            .push_onboarding(p, onboarding(id, listed, digital))
            .await
            .unwrap();
        assert_eq!(counts(&r), expect, "{id}");
        if expect.3 == 1 {
            assert_eq!(r.rejections[0].field, "listed_products");
        }
    }
    let e = household_events(&store).await;
    let figures: Vec<_> = e
        .iter()
        .map(|e| {
            let c = &e.changes[0];
            let f = |f: &Option<pb::HouseholdFigures>| {
                f.as_ref()
                    .map(|f| (f.listed_products, f.has_digital_address))
            };
            (f(&c.previous), f(&c.current))
        })
        .collect();
    assert_eq!(
        figures,
        vec![
            (None, Some((None, None))),
            (Some((None, None)), Some((Some(5), Some(true)))),
            (Some((Some(5), Some(true))), Some((Some(5), Some(false)))),
            (Some((Some(5), Some(false))), Some((Some(0), None))),
        ]
    );
    assert_eq!(store.held_totals(p).await.unwrap().households, 1);
}

#[tokio::test]
async fn household_fields_on_each_backend() {
    testing::each_backend::<Marketplace, _, _>("mp_household_fields", household_fields).await;
}

#[tokio::test]
async fn rollup_cells_on_each_backend() {
    testing::each_backend::<Marketplace, _, _>("mp_rollup_cells", rollup_cells).await;
}

#[tokio::test]
async fn contract_on_each_backend() {
    testing::each_backend::<Marketplace, _, _>("mp_contract", contract).await;
}

#[tokio::test]
async fn concurrent_corrections_on_each_backend() {
    testing::each_backend::<Marketplace, _, _>("mp_concurrent", concurrent_corrections).await;
}

/// Batches past their retention are pruned a few rows per statement, recent ones are kept and
/// still answer their first result; a pruned batch id sent again is applied as a new batch,
/// where the records it carries are held already (unchanged, no second event).
async fn batch_retention(db: Database) {
    use agriportal_marketplace::store::BATCHES;
    use tokio_util::sync::CancellationToken;
    let store = store(db);
    let p = Partner::Voso;
    for i in 0..5 {
        let id = format!("old{i}");
        store
            .push_sales(p, batch(&id, vec![line(&format!("r{i}"), 100)]))
            .await
            .unwrap();
    }
    store
        .push_sales(p, batch("recent", vec![line("r9", 100)]))
        .await
        .unwrap();
    // The old batches were received 40 days ago, the cut-off is 30 days.
    let day_ms = 86_400_000_i64;
    let now = agriportal_platform::storage::now_ms();
    with_db!(&store.database().pool, |pool| {
        sqlx::query("UPDATE batches SET received_at_ms = $1 WHERE batch_id LIKE 'old%'")
            .bind(now - 40 * day_ms)
            .execute(pool)
            .await
            .unwrap();
    });
    let cutoff = now - 30 * day_ms;
    // One statement deletes at most its limit.
    assert_eq!(BATCHES.once(store.database(), cutoff, 2).await.unwrap(), 2);
    let left = |store: &SqlStore| {
        let pool = store.database().pool.clone();
        async move {
            let n: i64 = with_db!(&pool, |pool| {
                sqlx::query_scalar("SELECT COUNT(*) FROM batches")
                    .fetch_one(pool)
                    .await
                    .unwrap()
            });
            n
        }
    };
    assert_eq!(left(&store).await, 4);
    // The rest go in rounds of two (2, then 1): every old batch, none of the recent one.
    let pruned = BATCHES
        .all(store.database(), cutoff, 2, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(pruned, 3);
    assert_eq!(left(&store).await, 1);
    assert!(store.get_batch(p, "old0").await.unwrap().is_none());
    let recent = store.get_batch(p, "recent").await.unwrap().unwrap();
    assert_eq!(recent.accepted, 1);
    // Within retention the same id answers its first result.
    let again = store
        .push_sales(p, batch("recent", vec![line("r9", 100)]))
        .await
        .unwrap();
    assert_eq!((again.accepted, again.unchanged), (1, 0));
    // Past it, the batch is applied as new: its records are held already, so nothing changes
    // and no event is written.
    let before = events(&store).await.len();
    let replayed = store
        .push_sales(p, batch("old0", vec![line("r0", 100)]))
        .await
        .unwrap();
    assert_eq!(
        (replayed.accepted, replayed.unchanged, replayed.corrected),
        (0, 1, 0)
    );
    assert_eq!(events(&store).await.len(), before);
    assert_eq!(store.held_totals(p).await.unwrap().lines, 6);
}

#[tokio::test]
async fn batch_retention_on_each_backend() {
    testing::each_backend::<Marketplace, _, _>("mk_batch_retention", batch_retention).await;
}
