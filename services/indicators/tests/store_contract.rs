//! One contract for the indicators store, run on SQLite and on PostgreSQL (a fresh database).

// A test crate: helpers as well as tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agriportal_indicators::domain::{parse_catalogue, CATALOGUE_CSV};
use agriportal_indicators::store::{ReportRow, Store, ValueRow};
use agriportal_indicators::Indicators;
use agriportal_platform::outbox::Outbox;
use agriportal_platform::storage::Database;
use agriportal_platform::{testing, with_db};
use agriportal_proto::indicators::v1 as pb;
use prost::Message;

async fn subjects(store: &Store, subject: &str) -> Vec<Vec<u8>> {
    with_db!(&store.database().pool, |pool| {
        sqlx::query_scalar("SELECT payload FROM outbox WHERE subject = $1 ORDER BY seq")
            .bind(subject)
            .fetch_all(pool)
            .await
            .unwrap()
    })
}

fn report(province: &str, period: &str, end: &str) -> ReportRow {
    ReportRow {
        province_code: province.into(),
        period: period.into(),
        period_end: end.into(),
        state: pb::ReportState::Draft as i64,
        version: 1,
        sequence: 1,
        deadline: "2026-12-05".into(),
        submitted_at_ms: 0,
        approved_at_ms: 0,
        on_time: 0,
        review_comment: String::new(),
        updated_at_ms: 1,
    }
}

fn value(code: &str, source: &str, v: &str) -> ValueRow {
    ValueRow {
        indicator_code: code.into(),
        source_province_code: source.into(),
        value: v.into(),
        comment: String::new(),
    }
}

async fn catalogue(db: Database) {
    let store = Store::new(db, Outbox::detached());
    let seed = parse_catalogue(CATALOGUE_CSV).unwrap();
    assert_eq!(store.seed_catalogue(&seed).await.unwrap(), 18);
    // A restart (or a second replica) inserts nothing and publishes nothing.
    assert_eq!(store.seed_catalogue(&seed).await.unwrap(), 0);
    let events = subjects(&store, "indicators.catalogue_changed").await;
    assert_eq!(events.len(), 18);
    let first = pb::CatalogueChanged::decode(events[0].as_slice()).unwrap();
    assert_eq!(first.indicator.unwrap().code, "HH_ONBOARDED");
    let stored = store.indicators().await.unwrap();
    assert_eq!(stored, seed);

    // An edit keeps the position and counts a revision; an addition goes last.
    let mut edited = stored[8].clone();
    edited.name_en = "Households trained".into();
    let saved = store.save_indicator(edited).await.unwrap();
    assert_eq!((saved.revision, saved.position), (2, 9));
    let mut added = stored[8].clone();
    added.code = "NEW_ONE".into();
    let saved = store.save_indicator(added).await.unwrap();
    assert_eq!((saved.revision, saved.position), (1, 19));
    let stored = store.indicators().await.unwrap();
    assert_eq!(stored.len(), 19);
    assert_eq!(stored[8].name_en, "Households trained");
    assert_eq!(stored[18].code, "NEW_ONE");
    assert_eq!(
        subjects(&store, "indicators.catalogue_changed").await.len(),
        20
    );
    // The seed does not undo an admin's edit.
    assert_eq!(store.seed_catalogue(&seed).await.unwrap(), 0);
    assert_eq!(store.indicators().await.unwrap()[8].revision, 2);
}

#[tokio::test]
async fn catalogue_seed_is_idempotent_and_edits_count_revisions() {
    testing::each_backend::<Indicators, _, _>("indicators_catalogue", catalogue).await;
}

async fn reports(db: Database) {
    let store = Store::new(db, Outbox::detached());
    let mut tx = store.begin().await.unwrap();
    store.lock_report(&mut tx, "79", "202611").await.unwrap();
    assert_eq!(
        store.report_in(&mut tx, "79", "202611").await.unwrap(),
        None
    );
    let nov = report("79", "202611", "2026-11-30");
    store.put_report(&mut tx, &nov).await.unwrap();
    store
        .put_report(&mut tx, &report("01", "202611", "2026-11-30"))
        .await
        .unwrap();
    store
        .put_report(&mut tx, &report("79", "2026Q3", "2026-09-30"))
        .await
        .unwrap();
    store
        .put_report(&mut tx, &report("79", "202610", "2026-10-31"))
        .await
        .unwrap();
    // Two pre-2025 units of one province and the province itself: three rows.
    for v in [
        value("TRAINED_HH", "", "5"),
        value("TRAINED_HH", "74", "2"),
        value("TRAINED_HH", "77", "3"),
    ] {
        store
            .put_value(&mut tx, "79", "202611", 1, &v)
            .await
            .unwrap();
    }
    // Writing the same unit again replaces its row.
    store
        .put_value(&mut tx, "79", "202611", 1, &value("TRAINED_HH", "74", "4"))
        .await
        .unwrap();
    store
        .put_value(&mut tx, "79", "202611", 1, &value("EPAY_HH", "", "9"))
        .await
        .unwrap();
    store
        .delete_value(&mut tx, "79", "202611", 1, "EPAY_HH", "")
        .await
        .unwrap();
    let entry = pb::AuditEntry {
        at_ms: 10,
        actor: "province:79".into(),
        action: "save".into(),
        indicator_code: "TRAINED_HH".into(),
        new_value: "5".into(),
        version: 1,
        ..Default::default()
    };
    store.audit(&mut tx, "79", "202611", &entry).await.unwrap();
    let second = pb::AuditEntry {
        at_ms: 11,
        action: "submit".into(),
        ..entry.clone()
    };
    store.audit(&mut tx, "79", "202611", &second).await.unwrap();
    store.commit(tx).await.unwrap();

    let values = store.values("79", "202611", 1).await.unwrap();
    assert_eq!(
        values,
        vec![
            value("TRAINED_HH", "", "5"),
            value("TRAINED_HH", "74", "4"),
            value("TRAINED_HH", "77", "3")
        ]
    );
    assert_eq!(
        store.history("79", "202611").await.unwrap(),
        vec![entry, second]
    );

    // A new version starts as a copy; the old one is kept.
    let mut tx = store.begin().await.unwrap();
    store
        .copy_values(&mut tx, "79", "202611", 1, 2)
        .await
        .unwrap();
    store
        .put_value(&mut tx, "79", "202611", 2, &value("TRAINED_HH", "", "6"))
        .await
        .unwrap();
    let mut reopened = nov.clone();
    reopened.version = 2;
    reopened.sequence = 5;
    reopened.review_comment = "sửa số liệu".into();
    store.put_report(&mut tx, &reopened).await.unwrap();
    store.commit(tx).await.unwrap();
    assert_eq!(store.values("79", "202611", 1).await.unwrap()[0].value, "5");
    assert_eq!(store.values("79", "202611", 2).await.unwrap()[0].value, "6");
    assert_eq!(store.report("79", "202611").await.unwrap(), Some(reopened));

    // Newest period first (whatever its kind), then province; counts of the current version.
    let all = store.reports("", 0, "").await.unwrap();
    let keys: Vec<(String, i64)> = all.iter().map(|(r, n)| (r.key(), *n)).collect();
    assert_eq!(
        keys,
        vec![
            ("01/202611".to_string(), 0),
            ("79/202611".to_string(), 3),
            ("79/202610".to_string(), 0),
            ("79/2026Q3".to_string(), 0),
        ]
    );
    assert_eq!(store.reports("79", 0, "").await.unwrap().len(), 3);
    assert_eq!(store.reports("", 0, "202611").await.unwrap().len(), 2);
    let submitted = pb::ReportState::Submitted as i64;
    assert!(store.reports("", submitted, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn reports_values_per_version_and_unit_and_history() {
    testing::each_backend::<Indicators, _, _>("indicators_reports", reports).await;
}

async fn targets(db: Database) {
    let store = Store::new(db, Outbox::detached());
    let target = |code: &str, year: u32, province: &str, value: &str| pb::Target {
        indicator_code: code.into(),
        year,
        province_code: province.into(),
        value: value.into(),
        set_at_ms: 1,
        set_by: "admin".into(),
    };
    store
        .set_target(target("HH_ONBOARDED", 2026, "", "5000000"))
        .await
        .unwrap();
    store
        .set_target(target("HH_ONBOARDED", 2026, "79", "400000"))
        .await
        .unwrap();
    store
        .set_target(target("HH_ONBOARDED", 2026, "79", "450000"))
        .await
        .unwrap();
    store
        .set_target(target("TRAINED_HH", 2027, "", "100"))
        .await
        .unwrap();
    let all = store.targets("", 0).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[1].value, "450000");
    assert_eq!(store.targets("HH_ONBOARDED", 0).await.unwrap().len(), 2);
    assert_eq!(store.targets("", 2027).await.unwrap().len(), 1);
    store
        .set_target(target("TRAINED_HH", 2027, "", ""))
        .await
        .unwrap();
    assert!(store.targets("", 2027).await.unwrap().is_empty());
    let events = subjects(&store, "indicators.target_set").await;
    assert_eq!(events.len(), 5);
    let last = pb::TargetSet::decode(events[4].as_slice()).unwrap();
    assert_eq!(last.target.unwrap().value, "");
}

#[tokio::test]
async fn targets_are_set_replaced_and_removed_with_events() {
    testing::each_backend::<Indicators, _, _>("indicators_targets", targets).await;
}

async fn replicas(db: Database) {
    // Two replicas starting at once, each with its own pool handle.
    let one = Store::new(db.clone(), Outbox::detached());
    let two = Store::new(db, Outbox::detached());
    let seed = parse_catalogue(CATALOGUE_CSV).unwrap();
    let (a, b) = tokio::join!(one.seed_catalogue(&seed), two.seed_catalogue(&seed));
    assert_eq!(a.unwrap() + b.unwrap(), 18);
    assert_eq!(
        subjects(&one, "indicators.catalogue_changed").await.len(),
        18
    );
}

#[tokio::test]
async fn replicas_seeding_at_once_publish_each_indicator_once() {
    testing::each_backend::<Indicators, _, _>("indicators_replicas", replicas).await;
}
