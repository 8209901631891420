//! Communes end to end: sales and households pushed with commune codes through the partner
//! client become the gateway's figures by commune (`/api/v1/indicators/{code}?province=…`,
//! JSON and CSV, and gRPC `GetIndicatorCommunes`), through a correction that moves a line
//! to another commune; the indicators service lists the org-unit hierarchy.

use std::time::{Duration, Instant};

use agriportal_platform::auth::Role;
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::gateway::v1 as gpb;
use agriportal_proto::indicators::v1 as ipb;
use agriportal_proto::marketplace::v1 as pb;
use serde_json::Value;

use crate::abuse::channel;
use crate::indicators::client as indicators_client;
use crate::support::{spawn_app, Mode, TestApp};

/// Two communes of Hồ Chí Minh City (79) and one of Hà Nội (01).
const THU_DAU_MOT: &str = "25747";
const PHU_LOI: &str = "25750";
const BA_DINH: &str = "00004";

fn sale(id: &str, commune: &str, value: i64) -> pb::SalesRecord {
    pb::SalesRecord {
        record_id: id.into(),
        sale_date: "2022-03-10".into(),
        province_code: "79".into(),
        commune_code: commune.into(),
        category: "fruit".into(),
        quantity_grams: 1_000,
        value_vnd: value,
        orders: 1,
        household_ref: String::new(),
    }
}

async fn push(app: &TestApp, batch: &str, records: Vec<pb::SalesRecord>) -> [u32; 4] {
    let r = app
        .partner("postmart")
        .await
        .push_sales(pb::PushSalesRequest {
            batch_id: batch.into(),
            records,
        })
        .await
        .expect("push sales")
        .into_inner();
    [r.accepted, r.unchanged, r.corrected, r.rejected]
}

/// The non-zero communes and the unassigned rest (`""`) of `body`, checking that every
/// commune of the province is listed and that they add up to the province's value.
fn by_commune(body: &Value) -> Vec<(String, i64)> {
    let communes = body["communes"].as_array().expect("communes");
    assert_eq!(communes.len(), 168, "every commune of 79");
    let province = body["provinces"]
        .as_array()
        .expect("provinces")
        .iter()
        .find(|p| p["code"] == "79")
        .expect("79");
    let unassigned = body["unassigned"].as_i64().expect("unassigned");
    let sum: i64 = communes
        .iter()
        .map(|c| c["value"].as_i64().expect("value"))
        .sum();
    assert_eq!(province["value"].as_i64(), Some(sum + unassigned), "{body}");
    let mut out: Vec<(String, i64)> = communes
        .iter()
        .filter(|c| c["value"] != 0)
        .map(|c| {
            (
                c["code"].as_str().expect("code").to_string(),
                c["value"].as_i64().expect("value"),
            )
        })
        .collect();
    out.push((String::new(), unassigned));
    out
}

/// A page of the web front end: its status and body.
async fn page(app: &TestApp, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{}{path}", app.http))
        .await
        .expect("http");
    (r.status().as_u16(), r.text().await.expect("body"))
}

/// Whether `body`'s communes and unassigned rest add up to province 79's value. A response can
/// straddle an apply: the province's figures and its communes are two reads, and an event
/// committed between them makes the pair disagree for that one response; the next agrees.
fn adds_up(body: &Value) -> bool {
    let province = body["provinces"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["code"] == "79"))
        .and_then(|p| p["value"].as_i64());
    let communes: Option<i64> = body["communes"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["value"].as_i64()).sum());
    match (province, communes, body["unassigned"].as_i64()) {
        (Some(p), Some(c), Some(u)) => p == c + u,
        _ => false,
    }
}

/// Polls `path` until its communes are `expected` (and add up to the province), or fails
/// after 30 s.
async fn wait_communes(app: &TestApp, path: &str, expected: &[(&str, i64)]) -> Value {
    let expected: Vec<(String, i64)> = expected.iter().map(|(c, v)| (c.to_string(), *v)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = app.get(path).await;
        // NOT_FOUND until the catalogue has reached the gateway.
        if status == 200 && adds_up(&body) && by_commune(&body) == expected {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never matched {expected:?}; last: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn communes_end_to_end(mode: Mode) {
    let Some(app) = spawn_app(mode, "communes").await else {
        return;
    };
    assert_eq!(
        push(
            &app,
            "c1",
            vec![
                sale("s1", THU_DAU_MOT, 100),
                sale("s2", THU_DAU_MOT, 20),
                sale("s3", PHU_LOI, 3),
                sale("s4", "", 4_000),
                sale("s5", BA_DINH, 9),
            ],
        )
        .await,
        [4, 0, 0, 1],
        "a commune of another province is refused"
    );
    let path = "/api/v1/indicators/SALES_VALUE?period=202203&province=79";
    wait_communes(&app, path, &[(THU_DAU_MOT, 120), (PHU_LOI, 3), ("", 4_000)]).await;
    // s1 moves to Phú Lợi; s4 gains a commune and leaves the unassigned rest.
    assert_eq!(
        push(
            &app,
            "c2",
            vec![sale("s1", PHU_LOI, 100), sale("s4", THU_DAU_MOT, 4_000)],
        )
        .await,
        [0, 0, 2, 0]
    );
    let body = wait_communes(&app, path, &[(THU_DAU_MOT, 4_020), (PHU_LOI, 103), ("", 0)]).await;
    let thu_dau_mot = body["communes"]
        .as_array()
        .expect("communes")
        .iter()
        .find(|c| c["code"] == THU_DAU_MOT)
        .expect("commune");
    assert_eq!(thu_dau_mot["name"], "Phường Thủ Dầu Một");
    let orders = wait_communes(
        &app,
        "/api/v1/indicators/ORDERS?period=202203&province=79",
        &[(THU_DAU_MOT, 2), (PHU_LOI, 2), ("", 0)],
    )
    .await;
    assert!(orders.get("communes_note").is_none(), "{orders}");

    // Households: a stock at the month's end, one without commune in the rest.
    let onboarding = app
        .partner("voso")
        .await
        .push_onboarding(pb::PushOnboardingRequest {
            batch_id: "h1".into(),
            records: [("h1", PHU_LOI), ("h2", "")]
                .into_iter()
                .map(|(id, commune)| pb::OnboardingRecord {
                    household_ref: id.into(),
                    province_code: "79".into(),
                    commune_code: commune.into(),
                    registered_on: "2022-02-01".into(),
                    status: HouseholdStatus::Active as i32,
                    categories: vec!["fruit".into()],
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .expect("push onboarding")
        .into_inner();
    assert_eq!(onboarding.accepted, 2);
    wait_communes(
        &app,
        "/api/v1/indicators/HH_ONBOARDED?period=202203&province=79",
        &[(PHU_LOI, 1), ("", 1)],
    )
    .await;

    // Not kept by commune: null with the reason; a national request has no list at all.
    let (status, trained) = app
        .get("/api/v1/indicators/TRAINED_HH?period=202203&province=79")
        .await;
    assert_eq!(status, 200, "{trained}");
    assert_eq!(trained["communes"], Value::Null);
    assert_eq!(trained["communes_note"], "province_reported");
    let (_, national) = app
        .get("/api/v1/indicators/SALES_VALUE?period=202203")
        .await;
    assert!(national.get("communes").is_none(), "{national}");

    // CSV lists the communes, then the unassigned rest.
    let csv = reqwest::get(format!("http://{}{path}&format=csv", app.http))
        .await
        .expect("http")
        .text()
        .await
        .expect("body");
    assert!(
        csv.contains(&format!("{THU_DAU_MOT},Phường Thủ Dầu Một,202203,4020,")),
        "{csv}"
    );
    assert!(csv.contains(",Chưa ghi xã/phường,202203,0,"), "{csv}");

    // gRPC answers the same.
    let mut dashboard = gpb::dashboard_client::DashboardClient::new(channel(&app).await);
    let answer = dashboard
        .get_indicator_communes(gpb::GetIndicatorCommunesRequest {
            code: "SALES_VALUE".into(),
            period: "202203".into(),
            province: "79".into(),
        })
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(answer.communes.len(), 168);
    let value_of = |code: &str| {
        answer
            .communes
            .iter()
            .find(|c| c.code == code)
            .map(|c| c.value.clone())
    };
    assert_eq!(value_of(THU_DAU_MOT).as_deref(), Some("4020"));
    assert_eq!(value_of(PHU_LOI).as_deref(), Some("103"));
    assert_eq!(answer.unassigned, "0");
    let province = answer.province.expect("province").figure.expect("figure");
    assert_eq!(province.value, "4123");
    let refused = dashboard
        .get_indicator_communes(gpb::GetIndicatorCommunesRequest {
            code: "SALES_VALUE".into(),
            period: "202203".into(),
            province: String::new(),
        })
        .await
        .expect_err("a province is required");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // The page: the province's communes in a plain table, its CSV, and a link from the
    // indicator's page; an indicator not kept by commune says so.
    let (status, html) = page(
        &app,
        "/indicators/SALES_VALUE/communes?province=79&period=202203",
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Phường Thủ Dầu Một"), "{html}");
    assert!(
        html.contains("4.020"),
        "the value as Vietnamese write it: {html}"
    );
    assert!(html.contains("Chưa ghi xã, phường"), "{html}");
    assert!(
        html.contains("/indicators/SALES_VALUE/communes.csv?province=79&#38;period=202203"),
        "{html}"
    );
    let (status, csv) = page(
        &app,
        "/indicators/SALES_VALUE/communes.csv?province=79&period=202203",
    )
    .await;
    assert_eq!(status, 200, "{csv}");
    assert!(csv.starts_with('\u{feff}'), "BOM");
    assert!(
        csv.contains(&format!("{THU_DAU_MOT},Phường Thủ Dầu Một,4020\r\n")),
        "{csv}"
    );
    let (_, indicator_page) = page(&app, "/indicators/SALES_VALUE?period=202203").await;
    assert!(
        indicator_page.contains("/indicators/SALES_VALUE/communes?period=202203"),
        "{indicator_page}"
    );
    let (status, not_kept) = page(&app, "/indicators/TRAINED_HH/communes?province=79").await;
    assert_eq!(status, 200);
    assert!(
        not_kept.contains("không có số liệu theo xã, phường"),
        "{not_kept}"
    );

    // The org units, from the indicators service.
    let token = app.token(Role::Province {
        province: "79".into(),
    });
    let mut indicators = indicators_client(&app, Some(&token)).await;
    let units = indicators
        .list_org_units(ipb::ListOrgUnitsRequest {
            parent: "79".into(),
            level: ipb::OrgUnitLevel::Commune as i32,
        })
        .await
        .expect("org units")
        .into_inner()
        .org_units;
    assert_eq!(units.len(), 168);
    assert!(units
        .iter()
        .any(|u| u.code == THU_DAU_MOT && u.parent_code == "79"));
    let old = indicators
        .list_org_units(ipb::ListOrgUnitsRequest {
            parent: String::new(),
            level: ipb::OrgUnitLevel::ProvincePre2025 as i32,
        })
        .await
        .expect("old provinces")
        .into_inner()
        .org_units;
    assert_eq!(old.len(), 63);
    let unknown = indicators
        .list_org_units(ipb::ListOrgUnitsRequest {
            parent: "999".into(),
            level: 0,
        })
        .await
        .expect_err("unknown parent");
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
    assert!(unknown.message().contains("999"), "{unknown:?}");
    app.stop().await;
}

#[tokio::test]
async fn communes_end_to_end_embedded() {
    communes_end_to_end(Mode::Embedded).await;
}

#[tokio::test]
async fn communes_end_to_end_on_postgres_and_jetstream() {
    communes_end_to_end(Mode::Distributed).await;
}
