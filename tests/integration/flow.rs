//! The partner → dashboard flow: exact totals after duplicates, corrections, replayed
//! batches, re-published events and restarts; every rejection; authentication.

use std::collections::BTreeMap;
use std::time::Duration;

use agriportal_platform::auth::Role;
use agriportal_platform::bus::Message;
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::gateway::v1 as gpb;
use agriportal_proto::marketplace::v1 as pb;
use serde_json::Value;
use tonic::Code;

use agriportal_platform::storage::Database;

use crate::support::{self, eventually, spawn_app, Mode, TestApp};

fn line(id: &str, province: &str, grams: i64, value: i64, orders: u32) -> pb::SalesRecord {
    pb::SalesRecord {
        record_id: id.into(),
        sale_date: "2022-03-10".into(),
        province_code: province.into(),
        commune_code: String::new(),
        category: "fruit".into(),
        quantity_grams: grams,
        value_vnd: value,
        orders,
        household_ref: String::new(),
    }
}

fn household(id: &str, province: &str, status: HouseholdStatus) -> pb::OnboardingRecord {
    pb::OnboardingRecord {
        household_ref: id.into(),
        province_code: province.into(),
        commune_code: String::new(),
        registered_on: "2021-09-01".into(),
        status: status as i32,
        categories: vec!["rice_grains".into()],
        listed_products: None,
        has_digital_address: None,
    }
}

fn sales(batch: &str, records: Vec<pb::SalesRecord>) -> pb::PushSalesRequest {
    pb::PushSalesRequest {
        batch_id: batch.into(),
        records,
    }
}

fn onboarding(batch: &str, records: Vec<pb::OnboardingRecord>) -> pb::PushOnboardingRequest {
    pb::PushOnboardingRequest {
        batch_id: batch.into(),
        records,
    }
}

fn counts(r: &pb::PushResult) -> [u32; 4] {
    [r.accepted, r.unchanged, r.corrected, r.rejected]
}

/// The figures a partner's acknowledged records add up to, kept by the test itself.
#[derive(Default, Debug)]
struct Ledger {
    lines: BTreeMap<(String, String), (String, i64, i64, i64)>,
    households: BTreeMap<(String, String), (String, i32)>,
}

impl Ledger {
    fn sale(&mut self, partner: &str, r: &pb::SalesRecord, province: &str) {
        let value = (
            province.to_string(),
            r.quantity_grams,
            r.value_vnd,
            i64::from(r.orders.max(1)),
        );
        self.lines
            .insert((partner.into(), r.record_id.clone()), value);
    }
    fn household(&mut self, partner: &str, r: &pb::OnboardingRecord, province: &str) {
        self.households.insert(
            (partner.into(), r.household_ref.clone()),
            (province.into(), r.status),
        );
    }
    fn sales_of(&self, partner: Option<&str>) -> [i64; 3] {
        let mut t = [0; 3];
        for ((p, _), (_, g, v, o)) in &self.lines {
            if partner.is_none_or(|want| want == p) {
                t[0] += g;
                t[1] += v;
                t[2] += o;
            }
        }
        t
    }
    fn households_of(&self, partner: Option<&str>, active_only: bool) -> i64 {
        self.households
            .iter()
            .filter(|((p, _), (_, s))| {
                partner.is_none_or(|w| w == p)
                    && (!active_only || *s == HouseholdStatus::Active as i32)
            })
            .count() as i64
    }
    fn matches(&self, n: &Value) -> bool {
        let s = &n["sales"];
        let all = self.sales_of(None);
        let mut ok = s["grams"] == all[0] && s["value_vnd"] == all[1] && s["orders"] == all[2];
        for p in ["postmart", "voso"] {
            let t = self.sales_of(Some(p));
            let b = &s["by_partner"][p];
            ok &= b["grams"] == t[0] && b["value_vnd"] == t[1] && b["orders"] == t[2];
            ok &= n["households"]["by_partner"][p] == self.households_of(Some(p), false);
        }
        ok && n["households"]["onboarded"] == self.households_of(None, false)
            && n["households"]["active"] == self.households_of(None, true)
    }
}

async fn exact_totals(mode: Mode) {
    let Some(app) = spawn_app(mode, "exact_totals").await else {
        return;
    };
    let mut postmart = app.partner("postmart").await;
    let mut voso = app.partner("voso").await;
    let mut ledger = Ledger::default();

    let a = sales(
        "A",
        vec![
            line("a1", "01", 1_000, 50_000, 2),
            line("a2", "79", 2_500, 80_000, 0),
            line("a3", "02", 700, 9_000, 1),
        ],
    );
    let first = postmart
        .push_sales(a.clone())
        .await
        .expect("push A")
        .into_inner();
    assert_eq!(counts(&first), [3, 0, 0, 0]);
    for (r, p) in a.records.iter().zip(["01", "79", "08"]) {
        ledger.sale("postmart", r, p);
    }
    // A lost reply: the partner sends the same batch again and gets the same answer.
    let again = postmart
        .push_sales(a.clone())
        .await
        .expect("push A again")
        .into_inner();
    assert_eq!(again, first);

    let b = sales(
        "B",
        vec![
            line("b1", "79", 4_000, 120_000, 3),
            line("b2", "92", 10, 1_000, 1),
        ],
    );
    assert_eq!(
        counts(
            &voso
                .push_sales(b.clone())
                .await
                .expect("push B")
                .into_inner()
        ),
        [2, 0, 0, 0]
    );
    for r in &b.records {
        ledger.sale("voso", r, &r.province_code);
    }
    // Record ids belong to a partner: Vỏ Sò's `a1` is not Postmart's `a1`.
    let c = sales("C", vec![line("a1", "01", 300, 3_000, 1)]);
    assert_eq!(
        counts(
            &voso
                .push_sales(c.clone())
                .await
                .expect("push C")
                .into_inner()
        ),
        [1, 0, 0, 0]
    );
    ledger.sale("voso", &c.records[0], "01");

    // One unchanged, one correction, one new line.
    let mut corrected = line("a2", "79", 2_600, 82_000, 4);
    corrected.category = "vegetables".into();
    let d = sales(
        "D",
        vec![
            line("a1", "01", 1_000, 50_000, 2),
            corrected.clone(),
            line("a4", "48", 5, 500, 1),
        ],
    );
    let result = postmart
        .push_sales(d.clone())
        .await
        .expect("push D")
        .into_inner();
    assert_eq!(counts(&result), [1, 1, 1, 0]);
    ledger.sale("postmart", &corrected, "79");
    ledger.sale("postmart", &d.records[2], "48");

    // The same batch id with other content is refused whole.
    let mut tampered = d.clone();
    tampered.records[2].quantity_grams = 6;
    let err = postmart.push_sales(tampered).await.expect_err("conflict");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("batch_id"), "{}", err.message());

    // Reconciliation: a partner reads its own batches only.
    let got = postmart
        .get_batch(pb::GetBatchRequest {
            batch_id: "D".into(),
        })
        .await
        .expect("get D")
        .into_inner();
    assert_eq!(got, result);
    let err = voso
        .get_batch(pb::GetBatchRequest {
            batch_id: "D".into(),
        })
        .await
        .expect_err("not voso's");
    assert_eq!(err.code(), Code::NotFound);

    // Households: a status change and a move are updates, never a second household.
    let h = onboarding(
        "H1",
        vec![
            household("h1", "01", HouseholdStatus::Active),
            household("h2", "33", HouseholdStatus::Active),
        ],
    );
    assert_eq!(
        counts(
            &postmart
                .push_onboarding(h.clone())
                .await
                .expect("H1")
                .into_inner()
        ),
        [2, 0, 0, 0]
    );
    let h2 = onboarding(
        "H2",
        vec![
            household("h1", "01", HouseholdStatus::Suspended),
            household("h2", "79", HouseholdStatus::Active),
        ],
    );
    assert_eq!(
        counts(
            &postmart
                .push_onboarding(h2.clone())
                .await
                .expect("H2")
                .into_inner()
        ),
        [0, 0, 2, 0]
    );
    let h3 = onboarding("H3", vec![household("h1", "01", HouseholdStatus::Active)]);
    assert_eq!(
        counts(
            &voso
                .push_onboarding(h3.clone())
                .await
                .expect("H3")
                .into_inner()
        ),
        [1, 0, 0, 0]
    );
    for r in &h2.records {
        ledger.household("postmart", r, &r.province_code);
    }
    ledger.household("voso", &h3.records[0], "01");

    let national = app.wait_national(|n| ledger.matches(n)).await;
    assert_eq!(national["households"]["target"], 5_000_000);
    assert!(national["as_of"].is_string());
    check_breakdowns(&app, &ledger, &national).await;
    app.stop().await;
}

async fn check_breakdowns(app: &TestApp, ledger: &Ledger, national: &Value) {
    // Provinces add up to the nation, and each province to its own lines.
    let (status, list) = app.get("/api/v1/provinces").await;
    assert_eq!(status, 200);
    let provinces = list["provinces"].as_array().expect("provinces");
    assert_eq!(provinces.len(), 34);
    let grams: i64 = provinces
        .iter()
        .map(|p| p["sales"]["grams"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(national["sales"]["grams"], grams);
    let hcm_grams: i64 = ledger
        .lines
        .values()
        .filter(|l| l.0 == "79")
        .map(|l| l.1)
        .sum();
    let (status, hcm) = app.get("/api/v1/provinces/79").await;
    assert_eq!(status, 200);
    assert_eq!(hcm["sales"]["grams"], hcm_grams);
    assert_eq!(hcm["name"], "Thành phố Hồ Chí Minh");
    assert_eq!(hcm["households"]["onboarded"], 1);
    // A pre-2025 code finds the province it merged into (Hà Giang → Tuyên Quang).
    let (_, merged) = app.get("/api/v1/provinces/02").await;
    assert_eq!(merged["code"], "08");
    assert_eq!(merged["sales"]["grams"], 700);
    let (status, missing) = app.get("/api/v1/provinces/99").await;
    assert_eq!(status, 404);
    assert!(missing["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("99"));

    let regions: i64 = national["by_region"]
        .as_array()
        .expect("regions")
        .iter()
        .map(|r| r["grams"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(regions, grams);

    // The time series sums to the same totals.
    let (status, series) = app
        .get(
            "/api/v1/timeseries?metric=sales_grams&granularity=month&from=2022-01-01&to=2022-12-31",
        )
        .await;
    assert_eq!(status, 200, "{series}");
    let points = series["points"].as_array().expect("points");
    assert_eq!(points.len(), 12);
    let total: i64 = points
        .iter()
        .map(|p| p["value"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(total, grams);
    let (_, voso_orders) = app.get("/api/v1/timeseries?metric=orders&granularity=day&from=2022-03-10&to=2022-03-10&partner=voso").await;
    assert_eq!(
        voso_orders["points"][0]["value"],
        ledger.sales_of(Some("voso"))[2]
    );
    let (_, hh) = app.get("/api/v1/timeseries?metric=households_onboarded&granularity=week&from=2021-08-30&to=2021-09-05").await;
    assert_eq!(hh["points"][0]["value"], ledger.households_of(None, false));

    // gRPC gives the same figures as HTTP.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut dashboard = gpb::dashboard_client::DashboardClient::new(channel);
    let summary = dashboard
        .get_national_summary(gpb::GetNationalSummaryRequest {})
        .await
        .expect("summary")
        .into_inner();
    assert_eq!(
        Value::from(summary.sales.expect("sales").grams),
        national["sales"]["grams"]
    );
    assert_eq!(
        Value::from(summary.households.expect("households").onboarded),
        national["households"]["onboarded"]
    );
    let series = dashboard
        .get_time_series(gpb::GetTimeSeriesRequest {
            metric: "sales_grams".into(),
            granularity: "month".into(),
            from: "2022-01-01".into(),
            to: "2022-12-31".into(),
            ..Default::default()
        })
        .await
        .expect("series")
        .into_inner();
    assert_eq!(series.points.iter().map(|p| p.value).sum::<i64>(), grams);
    let err = dashboard
        .get_province(gpb::GetProvinceRequest { code: "xx".into() })
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn exact_totals_embedded() {
    exact_totals(Mode::Embedded).await;
}

#[tokio::test]
async fn exact_totals_on_postgres_and_jetstream() {
    exact_totals(Mode::Distributed).await;
}

/// Events published again (a relay that crashed after publishing, a re-send past the bus's
/// de-duplication window) and a restart in the middle of a stream change no total.
async fn republished_events_and_restart(mode: Mode) {
    let Some(app) = spawn_app(mode, "republish").await else {
        return;
    };
    let mut postmart = app.partner("postmart").await;
    let mut ledger = Ledger::default();
    let mut pushed = 0;
    for batch in 0..6 {
        let records: Vec<pb::SalesRecord> = (0..50)
            .map(|i| {
                line(
                    &format!("r{batch}-{i}"),
                    "37",
                    100 + i,
                    1_000 + i,
                    1 + (i as u32 % 3),
                )
            })
            .collect();
        for r in &records {
            ledger.sale("postmart", r, "37");
        }
        postmart
            .push_sales(sales(&format!("S{batch}"), records))
            .await
            .expect("push");
        pushed += 1;
    }
    assert_eq!(pushed, 6);
    app.wait_national(|n| ledger.matches(n)).await;

    // Re-publish every event the marketplace emitted, under new message ids so the bus's own
    // de-duplication cannot help: only the gateway's inbox stands between them and the totals.
    let events = outbox_events(&app).await;
    assert_eq!(events.len(), 6);
    for (subject, payload) in &events {
        let message = Message {
            subject: subject.clone(),
            id: format!("again-{}", uuid_like()),
            headers: vec![],
            payload: payload.clone().into(),
        };
        app.ctx.bus.publish(message).await.expect("republish");
    }
    // A marker pushed after the re-published events: once it shows, they were consumed.
    let marker = line("marker", "37", 1, 1, 1);
    ledger.sale("postmart", &marker, "37");
    postmart
        .push_sales(sales("marker", vec![marker]))
        .await
        .expect("marker");
    app.wait_national(|n| ledger.matches(n)).await;

    // Restart in the middle of a stream: batches pushed before the stop and after the start,
    // with a re-send of one across the restart, add up exactly.
    let app = app.restart().await;
    let mut postmart = app.partner("postmart").await;
    let resend = sales(
        "S5",
        (0..50)
            .map(|i| {
                line(
                    &format!("r5-{i}"),
                    "37",
                    100 + i,
                    1_000 + i,
                    1 + (i as u32 % 3),
                )
            })
            .collect(),
    );
    let replayed = postmart
        .push_sales(resend)
        .await
        .expect("resend")
        .into_inner();
    assert_eq!(
        counts(&replayed),
        [50, 0, 0, 0],
        "a replayed batch returns its first result"
    );
    let after = sales("after", vec![line("late", "96", 9_999, 99_999, 9)]);
    ledger.sale("postmart", &after.records[0], "96");
    postmart.push_sales(after).await.expect("after restart");
    app.wait_national(|n| ledger.matches(n)).await;
    app.stop().await;
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

/// The marketplace's outbox rows (subject, payload), read from its own store.
async fn outbox_events(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    let db = app.ctx.database("marketplace").await.expect("db");
    agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::query_as::<_, (String, Vec<u8>)>("SELECT subject, payload FROM outbox ORDER BY seq")
            .fetch_all(pool)
            .await
            .expect("outbox")
    })
}

#[tokio::test]
async fn republished_events_and_restart_embedded() {
    republished_events_and_restart(Mode::Embedded).await;
}

#[tokio::test]
async fn republished_events_and_restart_on_postgres_and_jetstream() {
    republished_events_and_restart(Mode::Distributed).await;
}

async fn rejections(mode: Mode) {
    let Some(app) = spawn_app(mode, "rejections").await else {
        return;
    };
    let mut voso = app.partner("voso").await;
    let tomorrow =
        (agriportal_marketplace::domain::today_in_vietnam() + time::Duration::days(1)).to_string();
    let mut bad: Vec<(pb::SalesRecord, &str)> = Vec::new();
    let base = line("x", "01", 10, 10, 1);
    let mut push = |f: &dyn Fn(&mut pb::SalesRecord), field: &'static str| {
        let mut r = base.clone();
        r.record_id = format!("bad-{}", bad.len());
        f(&mut r);
        bad.push((r, field));
    };
    push(&|r| r.record_id = String::new(), "record_id");
    push(&|r| r.province_code = "00".into(), "province_code");
    push(&|r| r.commune_code = "12345".into(), "commune_code");
    push(&|r| r.province_code = "79".into(), "commune_code");
    push(&|r| r.category = "gold".into(), "category");
    push(&|r| r.quantity_grams = -1, "quantity_grams");
    push(&|r| r.quantity_grams = 1_000_000_001, "quantity_grams");
    push(&|r| r.value_vnd = -1, "value_vnd");
    push(&|r| r.value_vnd = 100_000_000_001, "value_vnd");
    push(&|r| r.orders = 1_000_001, "orders");
    push(&|r| r.sale_date = tomorrow.clone(), "sale_date");
    push(&|r| r.sale_date = "2021-07-20".into(), "sale_date");
    push(&|r| r.sale_date = "2022-02-30".into(), "sale_date");
    let _ = &mut push;
    // A commune that is in its province, to show the commune check passes when right.
    let mut good = line("good", "01", 10, 10, 1);
    good.commune_code = "00004".into();
    let mut records: Vec<pb::SalesRecord> = bad.iter().map(|(r, _)| r.clone()).collect();
    records.insert(0, good);
    records[4].commune_code = "00004".into(); // `bad-3`: in 79 with a Hà Nội commune
    let result = voso
        .push_sales(sales("mixed", records.clone()))
        .await
        .expect("push")
        .into_inner();
    assert_eq!(result.accepted, 1);
    assert_eq!(result.rejected as usize, bad.len());
    for (rejection, (record, field)) in result.rejections.iter().zip(&bad) {
        assert_eq!(
            records[rejection.index as usize].record_id,
            record.record_id
        );
        assert_eq!(rejection.field, *field, "{rejection:?}");
        assert!(rejection.reason.len() > 10, "{rejection:?}");
    }
    // Onboarding rejections: status and categories.
    let mut unknown_status = household("hx", "01", HouseholdStatus::Active);
    unknown_status.status = 9;
    let mut unknown_category = household("hy", "01", HouseholdStatus::Active);
    unknown_category.categories.push("gold".into());
    let result = voso
        .push_onboarding(onboarding(
            "hb",
            vec![
                unknown_status,
                unknown_category,
                household("hz", "01", HouseholdStatus::Closed),
            ],
        ))
        .await
        .expect("onboarding")
        .into_inner();
    assert_eq!(counts(&result), [1, 0, 0, 2]);
    assert_eq!(result.rejections[0].field, "status");
    assert_eq!(result.rejections[1].field, "categories");

    // Batches over the limits are refused whole, naming the limit, and nothing is kept.
    let many: Vec<pb::SalesRecord> = (0..10_001)
        .map(|i| line(&format!("m{i}"), "01", 1, 1, 1))
        .collect();
    let err = voso
        .push_sales(sales("too-many", many))
        .await
        .expect_err("too many");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("10000"), "{}", err.message());
    let big: Vec<pb::SalesRecord> = (0..5_000)
        .map(|i| {
            let mut r = line(&format!("big{i}"), "01", 1, 1, 1);
            r.category = "x".repeat(1_000);
            r
        })
        .collect();
    let err = voso
        .push_sales(sales("too-big", big))
        .await
        .expect_err("too big");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("4194304"), "{}", err.message());
    for id in ["too-many", "too-big"] {
        let err = voso
            .get_batch(pb::GetBatchRequest {
                batch_id: id.into(),
            })
            .await
            .expect_err("not kept");
        assert_eq!(err.code(), Code::NotFound);
    }
    let err = voso
        .push_sales(sales("", vec![line("e", "01", 1, 1, 1)]))
        .await
        .expect_err("no batch id");
    assert_eq!(err.code(), Code::InvalidArgument);
    // Only the one good line and one household count.
    app.wait_national(|n| n["sales"]["grams"] == 10 && n["households"]["onboarded"] == 1)
        .await;
    app.stop().await;
}

#[tokio::test]
async fn every_rejection_is_reported_embedded() {
    rejections(Mode::Embedded).await;
}

#[tokio::test]
async fn every_rejection_is_reported_on_postgres_and_jetstream() {
    rejections(Mode::Distributed).await;
}

async fn authentication(mode: Mode) {
    let Some(app) = spawn_app(mode, "authentication").await else {
        return;
    };
    let batch = || sales("auth", vec![line("x", "01", 1, 1, 1)]);
    let mut none = app.client_with(None).await;
    let err = none.push_sales(batch()).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut garbage = app.client_with(Some("not-a-token")).await;
    assert_eq!(
        garbage
            .push_sales(batch())
            .await
            .expect_err("garbage")
            .code(),
        Code::Unauthenticated
    );
    let (foreign, _) = support::foreign_authenticator()
        .mint(
            Role::Partner {
                partner: "voso".into(),
            },
            Duration::from_secs(60),
        )
        .expect("mint");
    let mut forged = app.client_with(Some(&foreign)).await;
    assert_eq!(
        forged
            .push_sales(batch())
            .await
            .expect_err("foreign")
            .code(),
        Code::Unauthenticated
    );
    for role in [
        Role::Admin,
        Role::Province {
            province: "01".into(),
        },
    ] {
        let token = app.token(role);
        let mut client = app.client_with(Some(&token)).await;
        let err = client.push_sales(batch()).await.expect_err("not a partner");
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert_eq!(
            client
                .get_batch(pb::GetBatchRequest {
                    batch_id: "auth".into()
                })
                .await
                .expect_err("x")
                .code(),
            Code::PermissionDenied
        );
    }
    // A token minted while the system runs works at once; once revoked it stops working.
    let (token, claims) = app
        .ctx
        .auth
        .mint(
            Role::Partner {
                partner: "postmart".into(),
            },
            Duration::from_secs(60),
        )
        .expect("mint");
    let mut client = app.client_with(Some(&token)).await;
    client.push_sales(batch()).await.expect("fresh token works");
    app.ctx
        .auth
        .revoke(&claims.id, Some(claims.exp))
        .await
        .expect("revoke");
    let err = client.push_sales(batch()).await.expect_err("revoked");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"), "{}", err.message());
    app.stop().await;
}

#[tokio::test]
async fn authentication_and_permissions_embedded() {
    authentication(Mode::Embedded).await;
}

#[tokio::test]
async fn authentication_and_permissions_on_postgres_and_jetstream() {
    authentication(Mode::Distributed).await;
}

#[tokio::test]
async fn bad_dashboard_queries_get_json_errors() {
    let Some(app) = spawn_app(Mode::Embedded, "bad_queries").await else {
        return;
    };
    for (query, words) in [
        ("", "metric"),
        ("metric=orders&from=2022-01-01&to=2021-01-01", "before"),
        ("metric=orders&from=2000-01-01&to=2100-01-01", "3660"),
        ("metric=orders&from=1900-01-01&to=1901-01-01", "2000"),
        (
            "metric=orders&from=2022-01-01&to=2022-01-31&granularity=year",
            "granularity",
        ),
        (
            "metric=orders&from=2022-01-01&to=2022-01-31&partner=lazada",
            "partner",
        ),
        (
            "metric=orders&from=2022-01-01&to=2022-01-31&bogus=1",
            "bogus",
        ),
        ("metric=orders&from=%FF%FE&to=2022-01-31", "from"),
        ("metric=orders%FF&from=2022-01-01&to=2022-01-31", "metric"),
    ] {
        let (status, body) = app.get(&format!("/api/v1/timeseries?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(words), "{query}: {message}");
    }
    let page = reqwest::get(format!("http://{}/", app.http))
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    // The pages are the web front end's, Vietnamese first.
    assert!(page.contains("Tiến độ đưa hộ nông nghiệp lên sàn") && page.contains("5.000.000"));
    app.stop().await;
}

/// The W3C trace context a partner sends travels with the event: the outbox row (and so the
/// bus message) carries a `traceparent` of the same trace.
#[tokio::test]
async fn trace_context_travels_from_partner_to_the_event() {
    let Some(app) = spawn_app(Mode::Embedded, "trace").await else {
        return;
    };
    let mut quiet = app.config.clone();
    quiet.log = "error".into();
    let _telemetry =
        agriportal_platform::telemetry::init(&quiet, "agriportal-test").expect("telemetry");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let token = app.token(Role::Partner {
        partner: "voso".into(),
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = pb::marketplace_ingest_client::MarketplaceIngestClient::new(channel);
    let mut request = tonic::Request::new(sales("traced", vec![line("t1", "01", 1, 1, 1)]));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .expect("header"),
    );
    client.push_sales(request).await.expect("push");
    let db = app.ctx.database("marketplace").await.expect("db");
    let headers: String = agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::query_scalar("SELECT headers FROM outbox")
            .fetch_one(pool)
            .await
            .expect("outbox")
    });
    assert!(
        headers.contains("traceparent") && headers.contains(trace_id),
        "headers: {headers}"
    );
    app.stop().await;
}

/// What another site's dashboard relies on, over the real listener: a strong `ETag` that
/// stays while the figures do and changes when a pushed sale changes them, `304` without a
/// body for the tag it has, `no-store` on errors, and CORS for any origin without
/// credentials, on the API only (not the pages, not the admin listener).
#[tokio::test]
async fn dashboards_revalidate_with_etags_and_any_origin_reads() {
    let Some(app) = spawn_app(Mode::Embedded, "etag_cors").await else {
        return;
    };
    let http = reqwest::Client::new();
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut request = http.get(format!("http://{}{path}", app.http));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let etag = |r: &reqwest::Response| r.headers()["etag"].to_str().unwrap().to_string();
    let mut postmart = app.partner("postmart").await;
    postmart
        .push_sales(sales("E1", vec![line("e1", "79", 1_000, 5_000, 1)]))
        .await
        .expect("push");
    app.wait_national(|n| n["sales"]["grams"] == 1_000).await;

    for path in ["/api/v1/national", "/api/v1/indicators?format=csv"] {
        let first = get(path, &[]).await.expect("GET");
        assert_eq!(first.status(), 200, "{path}");
        let tag = etag(&first);
        let cache = first.headers()["cache-control"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(cache.starts_with("public, max-age=1"), "{path}: {cache}");
        let body = first.bytes().await.expect("body");
        let again = get(path, &[]).await.expect("GET");
        assert_eq!(etag(&again), tag, "{path}: same figures, same tag");
        assert_eq!(again.bytes().await.expect("body"), body, "{path}");
        let revalidated = get(path, &[("if-none-match", &tag)]).await.expect("GET");
        assert_eq!(revalidated.status(), 304, "{path}");
        assert_eq!(etag(&revalidated), tag, "{path}");
        assert!(
            revalidated.headers().contains_key("cache-control"),
            "{path}"
        );
        assert!(
            revalidated.bytes().await.expect("body").is_empty(),
            "{path}"
        );
    }

    // A sale through the real path changes the figures: a new tag, and the old one gets 200.
    let before = get("/api/v1/national", &[]).await.expect("GET");
    let old = etag(&before);
    postmart
        .push_sales(sales("E2", vec![line("e2", "79", 250, 900, 1)]))
        .await
        .expect("push");
    app.wait_national(|n| n["sales"]["grams"] == 1_250).await;
    let after = get("/api/v1/national", &[("if-none-match", &old)])
        .await
        .expect("GET");
    assert_eq!(after.status(), 200);
    assert_ne!(etag(&after), old);
    let national: Value = after.json().await.expect("json");
    assert_eq!(national["sales"]["grams"], 1_250, "{national}");

    // Errors: never stored, no tag.
    let missing = get("/api/v1/provinces/999", &[("if-none-match", "*")])
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["cache-control"], "no-store");
    assert!(!missing.headers().contains_key("etag"));

    // A preflight from another site, then its read.
    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/api/v1/national", app.http),
        )
        .header("origin", "https://example.org")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "if-none-match")
        .send()
        .await
        .expect("OPTIONS");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(!h.contains_key("access-control-allow-credentials"));
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("GET"));
    let read = get("/api/v1/national", &[("origin", "https://example.org")])
        .await
        .expect("GET");
    let h = read.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(!h.contains_key("access-control-allow-credentials"));
    assert!(h["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase()
        .contains("etag"));
    // The pages and the admin listener are not the public API: no CORS there.
    let page = get("/", &[("origin", "https://example.org")])
        .await
        .expect("GET");
    assert_eq!(page.status(), 200);
    assert!(!page.headers().contains_key("access-control-allow-origin"));
    let admin = http
        .get(format!("http://{}/healthz", app.admin))
        .header("origin", "https://example.org")
        .send()
        .await
        .expect("GET");
    assert!(!admin.headers().contains_key("access-control-allow-origin"));
    app.stop().await;
}

/// The gateway's total of sales in `province` (grams, both partners), read from its store.
async fn stored_grams(app: &TestApp, province: &str) -> i64 {
    let db = Database::connect(&app.config, "gateway")
        .await
        .expect("gateway db");
    let grams: Option<i64> = agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::query_scalar(
            "SELECT CAST(SUM(grams) AS BIGINT) FROM sales_totals WHERE province_code = $1",
        )
        .bind(province)
        .fetch_one(pool)
        .await
        .expect("grams")
    });
    db.close().await;
    grams.unwrap_or(0)
}

/// A sale that would carry a running total past 64 bits, end to end through the marketplace,
/// the bus and the gateway's consumer: its event is parked after one attempt, naming the
/// overflow; the total is left as it was (never wrapped); the events after it are applied
/// (never retried for ever).
async fn an_overflowing_total_parks_its_event(mode: Mode, name: &str) {
    let Some(app) = spawn_app(mode, name).await else {
        return;
    };
    let mut voso = app.partner("voso").await;
    let push = |batch: &str, id: &str, province: &str, grams: i64| {
        sales(batch, vec![line(id, province, grams, grams * 3, 1)])
    };
    voso.push_sales(push("OV1", "ov1", "79", 1_000))
        .await
        .expect("push OV1");
    eventually(
        "the first sale",
        || stored_grams(&app, "79"),
        |g| *g == 1_000,
    )
    .await;
    // A total near the top of the range, as far more data than this country's would leave it.
    let near = i64::MAX - 10;
    let db = Database::connect(&app.config, "gateway")
        .await
        .expect("gateway db");
    agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::query("UPDATE sales_totals SET grams = $1 WHERE province_code = '79'")
            .bind(near)
            .execute(pool)
            .await
            .expect("update");
    });
    db.close().await;

    // Acknowledged by the marketplace (its records are fine), refused by the gateway's sums.
    voso.push_sales(push("OV2", "ov2", "79", 11))
        .await
        .expect("push OV2");
    voso.push_sales(push("OV3", "ov3", "01", 7))
        .await
        .expect("push OV3");
    eventually(
        "the sale after the overflow",
        || stored_grams(&app, "01"),
        |g| *g == 7,
    )
    .await;
    let parked = eventually(
        "parking the overflowing event",
        || async {
            agriportal_platform::kit::parked(&app.registry, &app.config, Some("gateway"))
                .await
                .expect("parked")
        },
        |p| !p.is_empty(),
    )
    .await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert!(parked[0].row.reason.contains("64-bit"), "{parked:?}");
    assert_eq!(parked[0].row.attempts, 1, "parked at once: {parked:?}");
    assert_eq!(
        stored_grams(&app, "79").await,
        near,
        "unchanged, not wrapped"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_overflowing_total_parks_its_event_embedded() {
    an_overflowing_total_parks_its_event(Mode::Embedded, "overflow_parked").await;
}

#[tokio::test]
async fn an_overflowing_total_parks_its_event_on_postgres_and_jetstream() {
    an_overflowing_total_parks_its_event(Mode::Distributed, "overflow_parked_pg").await;
}
