//! The partner protocol's household fields, end to end: sales lines naming their household
//! and onboarding records with listed products and a digital address, pushed through the real
//! partner client, become the gateway's trading-households and household-stock figures
//! exactly, through corrections and unchanged re-sends, and the stocks as at each month's end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agriportal_gateway::household_facts;
use agriportal_gateway::SqlStore;
use agriportal_platform::period::{self, Period, PeriodType};
use agriportal_platform::storage::Database;
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::marketplace::v1 as pb;

use crate::support::{spawn_app, Mode, TestApp};

fn sold(id: &str, day: &str, province: &str, household: &str) -> pb::SalesRecord {
    pb::SalesRecord {
        record_id: id.into(),
        sale_date: day.into(),
        province_code: province.into(),
        commune_code: String::new(),
        category: "fruit".into(),
        quantity_grams: 1_000,
        value_vnd: 20_000,
        orders: 1,
        household_ref: household.into(),
    }
}

fn household(
    id: &str,
    province: &str,
    registered_on: &str,
    listed: Option<u32>,
    digital: Option<bool>,
) -> pb::OnboardingRecord {
    pb::OnboardingRecord {
        household_ref: id.into(),
        province_code: province.into(),
        commune_code: String::new(),
        registered_on: registered_on.into(),
        status: HouseholdStatus::Active as i32,
        categories: vec!["fruit".into()],
        listed_products: listed,
        has_digital_address: digital,
    }
}

async fn push_sales(
    client: &mut agriportal::client::PartnerClient,
    batch: &str,
    records: Vec<pb::SalesRecord>,
) -> [u32; 4] {
    let r = client
        .push_sales(pb::PushSalesRequest {
            batch_id: batch.into(),
            records,
        })
        .await
        .expect("push sales")
        .into_inner();
    [r.accepted, r.unchanged, r.corrected, r.rejected]
}

async fn push_onboarding(
    client: &mut agriportal::client::PartnerClient,
    batch: &str,
    records: Vec<pb::OnboardingRecord>,
) -> [u32; 4] {
    let r = client
        .push_onboarding(pb::PushOnboardingRequest {
            batch_id: batch.into(),
            records,
        })
        .await
        .expect("push onboarding")
        .into_inner();
    [r.accepted, r.unchanged, r.corrected, r.rejected]
}

type Figures = BTreeMap<String, i64>;

fn figures(pairs: &[(&str, i64)]) -> Option<Figures> {
    Some(pairs.iter().map(|(p, n)| (p.to_string(), *n)).collect())
}

/// The month it is in Vietnam: never before the month of a batch committed earlier, so a
/// change pushed by the test holds in it.
fn this_month() -> Period {
    let today = period::vietnam_today(time::OffsetDateTime::now_utc());
    Period::containing(PeriodType::Month, today).expect("this month")
}

/// The three functions' figures for the months the test pushed, then the two stocks now.
async fn read(store: &SqlStore) -> Vec<Option<Figures>> {
    let month = |m: u8| Period::month(2022, m).expect("month");
    let now = this_month();
    // One view for all eight: each holds a connection of the store's small pool until the
    // statement ends.
    let view = &mut store.read_view().await.expect("view");
    vec![
        household_facts::trading_households(view, month(3))
            .await
            .expect("trading"),
        household_facts::trading_households(view, month(4))
            .await
            .expect("trading"),
        household_facts::listed_products(view, month(1))
            .await
            .expect("listed"),
        household_facts::listed_products(view, month(2))
            .await
            .expect("listed"),
        household_facts::digital_address_households(
            &mut store.read_view().await.expect("view"),
            month(1),
        )
        .await
        .expect("digital"),
        household_facts::digital_address_households(
            &mut store.read_view().await.expect("view"),
            month(2),
        )
        .await
        .expect("digital"),
        household_facts::listed_products(view, now)
            .await
            .expect("listed"),
        household_facts::digital_address_households(
            &mut store.read_view().await.expect("view"),
            now,
        )
        .await
        .expect("digital"),
    ]
}

/// Polls the gateway's own store until its figures are `expected`, or fails after 15 s.
async fn wait_for(app: &TestApp, expected: &[Option<Figures>]) {
    let db = Database::connect(&app.config, "gateway")
        .await
        .expect("gateway db");
    let store = SqlStore::new(db);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = read(&store).await;
        if found == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "household figures never matched:\n found {found:?}\nwanted {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.database().close().await;
}

async fn household_figures(mode: Mode) {
    let Some(app) = spawn_app(mode, "household_facts").await else {
        return;
    };
    let mut postmart = app.partner("postmart").await;
    let mut voso = app.partner("voso").await;

    assert_eq!(
        push_onboarding(
            &mut postmart,
            "o1",
            vec![
                household("p-h1", "01", "2022-01-10", Some(10), Some(true)),
                household("p-h2", "01", "2022-02-20", Some(5), Some(false)),
                household("p-h3", "79", "2022-01-05", None, None),
                household("p-h4", "79", "2022-02-01", Some(0), Some(true)),
                household("p-h5", "79", "2022-02-02", Some(100_001), None),
            ],
        )
        .await,
        [4, 0, 0, 1],
        "too many listed products is refused"
    );
    assert_eq!(
        push_onboarding(
            &mut voso,
            "o1",
            vec![household("v-h1", "79", "2022-01-15", Some(7), Some(true))],
        )
        .await,
        [1, 0, 0, 0]
    );
    assert_eq!(
        push_sales(
            &mut postmart,
            "s1",
            vec![
                sold("s1", "2022-03-10", "01", "p-h1"),
                sold("s2", "2022-03-11", "01", "p-h1"),
                sold("s3", "2022-03-12", "01", "p-h2"),
                sold("s4", "2022-03-12", "79", "p-h4"),
                sold("s5", "2022-03-12", "79", ""),
                sold("s6", "2022-03-12", "79", &"x".repeat(65)),
            ],
        )
        .await,
        [5, 0, 0, 1],
        "a household_ref over 64 characters is refused"
    );
    // Vỏ Sò's `p-h1` is its own household, not Postmart's.
    assert_eq!(
        push_sales(
            &mut voso,
            "s1",
            vec![
                sold("v1", "2022-03-10", "79", "p-h1"),
                sold("v2", "2022-04-01", "79", "v-h1"),
            ],
        )
        .await,
        [2, 0, 0, 0]
    );
    wait_for(
        &app,
        &[
            figures(&[("01", 2), ("79", 2)]),
            figures(&[("79", 1)]),
            figures(&[("01", 10), ("79", 7)]),
            figures(&[("01", 15), ("79", 7)]),
            figures(&[("01", 1), ("79", 1)]),
            figures(&[("01", 1), ("79", 2)]),
            figures(&[("01", 15), ("79", 7)]),
            figures(&[("01", 1), ("79", 2)]),
        ],
    )
    .await;

    // Corrections: s3 was p-h1's too, and p-h2 lists more and got a digital address. The
    // same line padded is unchanged.
    assert_eq!(
        push_sales(
            &mut postmart,
            "s2",
            vec![
                sold("s1", "2022-03-10", "01", " p-h1 "),
                sold("s3", "2022-03-12", "01", "p-h1"),
            ],
        )
        .await,
        [0, 1, 1, 0]
    );
    assert_eq!(
        push_onboarding(
            &mut postmart,
            "o2",
            vec![
                household("p-h2", "01", "2022-02-20", Some(8), Some(true)),
                household("p-h3", "79", "2022-01-05", None, None),
            ],
        )
        .await,
        [0, 1, 1, 0]
    );
    // The household's change is recorded now: it holds from this month on, and February
    // 2022's stocks stay as they were at its end.
    wait_for(
        &app,
        &[
            figures(&[("01", 1), ("79", 2)]),
            figures(&[("79", 1)]),
            figures(&[("01", 10), ("79", 7)]),
            figures(&[("01", 15), ("79", 7)]),
            figures(&[("01", 1), ("79", 1)]),
            figures(&[("01", 1), ("79", 2)]),
            figures(&[("01", 18), ("79", 7)]),
            figures(&[("01", 2), ("79", 2)]),
        ],
    )
    .await;

    // p-h3 closes now: this month's active households in 79 lose it, January 2022's keep it
    // (p-h3 and v-h1; counted by their status now, it would be v-h1 alone), and it stays
    // onboarded.
    let mut closed = household("p-h3", "79", "2022-01-05", None, None);
    closed.status = HouseholdStatus::Closed as i32;
    assert_eq!(
        push_onboarding(&mut postmart, "o3", vec![closed]).await,
        [0, 0, 1, 0]
    );
    let of = |body: &serde_json::Value, code: &str| {
        body["provinces"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["code"] == code))
            .map(|p| p["value"].clone())
    };
    let now = this_month();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = app
            .get(&format!("/api/v1/indicators/HH_ACTIVE?period={now}"))
            .await;
        if status == 200 && of(&body, "79") == Some(2.into()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HH_ACTIVE never lost p-h3 in 79: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, january) = app.get("/api/v1/indicators/HH_ACTIVE?period=202201").await;
    assert_eq!(of(&january, "79"), Some(2.into()), "{january:#}");
    let (_, onboarded) = app
        .get(&format!("/api/v1/indicators/HH_ONBOARDED?period={now}"))
        .await;
    assert_eq!(of(&onboarded, "79"), Some(3.into()), "{onboarded:#}");

    // p-h1 also sold in 79 in March: one more trading household there, but still one
    // household in the nation (01 + 79 = 1 + 3 provinces' counts, 3 households).
    assert_eq!(
        push_sales(
            &mut postmart,
            "s3",
            vec![sold("s7", "2022-03-20", "79", "p-h1")],
        )
        .await,
        [1, 0, 0, 0]
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = app.get("/api/v1/indicators/HH_TRADING?period=202203").await;
        let of = |code: &str| {
            body["provinces"]
                .as_array()
                .and_then(|all| all.iter().find(|p| p["code"] == code))
                .map(|p| p["value"].clone())
        };
        if status == 200 && of("79") == Some(3.into()) {
            assert_eq!(of("01"), Some(1.into()), "{body:#}");
            assert_eq!(
                body["national"]["value"], 3,
                "distinct nationally: {body:#}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HH_TRADING never counted p-h1 in 79: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn household_figures_embedded() {
    household_figures(Mode::Embedded).await;
}

#[tokio::test]
async fn household_figures_on_postgres_and_jetstream() {
    household_figures(Mode::Distributed).await;
}
