//! The public API's OpenAPI document against the real answers of a seeded system: every
//! documented route is called (with the parameter sets dashboards use), and each JSON body is
//! validated (formats included) against the schema the document gives for its status; CSV
//! answers carry the documented type. The document's objects are closed, so a field a handler
//! adds without documenting it fails here.

use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::marketplace::v1 as pb;
use serde_json::{json, Value};

use crate::support::{spawn_app, Mode, TestApp};

/// The routes called, by documented path: each concrete request, and whether it answers 200.
fn requests() -> Vec<(&'static str, &'static str, u16)> {
    vec![
        ("/api/v1/national", "/api/v1/national", 200),
        ("/api/v1/provinces", "/api/v1/provinces", 200),
        ("/api/v1/provinces/{code}", "/api/v1/provinces/79", 200),
        ("/api/v1/provinces/{code}", "/api/v1/provinces/999", 404),
        (
            "/api/v1/timeseries",
            "/api/v1/timeseries?metric=sales_grams&granularity=day&from=2026-11-01&to=2026-11-30",
            200,
        ),
        (
            "/api/v1/timeseries",
            "/api/v1/timeseries?metric=orders&granularity=month&from=2026-01-01&to=2026-12-31&province=79&partner=postmart",
            200,
        ),
        (
            "/api/v1/timeseries",
            "/api/v1/timeseries?metric=households_onboarded&granularity=week&from=2026-10-01&to=2026-11-30",
            200,
        ),
        (
            "/api/v1/timeseries",
            "/api/v1/timeseries?metric=nope&from=2026-01-01&to=2026-01-02",
            400,
        ),
        ("/api/v1/indicators", "/api/v1/indicators", 200),
        ("/api/v1/indicators", "/api/v1/indicators?format=csv", 200),
        ("/api/v1/indicators", "/api/v1/indicators?colour=red", 400),
        (
            "/api/v1/indicators/{code}",
            "/api/v1/indicators/HH_ONBOARDED",
            200,
        ),
        (
            "/api/v1/indicators/{code}",
            "/api/v1/indicators/SALES_TONNES?province=79",
            200,
        ),
        (
            "/api/v1/indicators/{code}",
            "/api/v1/indicators/HH_ONBOARDED?format=csv",
            200,
        ),
        ("/api/v1/indicators/{code}", "/api/v1/indicators/NOPE", 404),
        ("/api/v1/completeness", "/api/v1/completeness", 200),
        (
            "/api/v1/completeness",
            "/api/v1/completeness?period=202611&format=csv",
            200,
        ),
        (
            "/api/v1/completeness",
            "/api/v1/completeness?period=2026-11",
            400,
        ),
        ("/api/v1/openapi.json", "/api/v1/openapi.json", 200),
    ]
}

/// The schema of `path`'s GET answer with `status` in `media`, as a standalone JSON Schema
/// whose `$ref`s resolve into the document's components.
fn schema_of(doc: &Value, path: &str, status: u16, media: &str) -> Option<Value> {
    let response = &doc["paths"][path]["get"]["responses"][status.to_string()];
    let response = match response["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &doc["components"]["responses"][name]
        }
        None => response,
    };
    let schema = response["content"][media]["schema"].clone();
    if schema.is_null() {
        return None;
    }
    Some(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    }))
}

async fn seed(app: &TestApp) {
    let mut partner = app.partner("postmart").await;
    let sales = (0..5)
        .map(|i| pb::SalesRecord {
            record_id: format!("openapi-s{i}"),
            sale_date: format!("2026-11-{:02}", i + 1),
            province_code: if i % 2 == 0 { "79" } else { "01" }.into(),
            category: "fruit".into(),
            quantity_grams: 1_500 + i,
            value_vnd: 30_000,
            orders: 1,
            ..Default::default()
        })
        .collect();
    partner
        .push_sales(pb::PushSalesRequest {
            batch_id: "openapi-sales".into(),
            records: sales,
        })
        .await
        .expect("push sales");
    let households = (0..3)
        .map(|i| pb::OnboardingRecord {
            household_ref: format!("openapi-h{i}"),
            province_code: "79".into(),
            registered_on: "2026-10-15".into(),
            status: HouseholdStatus::Active as i32,
            categories: vec!["fruit".into()],
            ..Default::default()
        })
        .collect();
    partner
        .push_onboarding(pb::PushOnboardingRequest {
            batch_id: "openapi-households".into(),
            records: households,
        })
        .await
        .expect("push households");
    app.wait_national(|n| n["sales"]["orders"] == 5 && n["households"]["onboarded"] == 3)
        .await;
    // The indicators service seeds its catalogue at start; the gateway learns it by events.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, body) = app.get("/api/v1/indicators").await;
        if body["indicators"].as_array().is_some_and(|list| {
            list.iter()
                .any(|i| i["indicator"]["code"] == "SALES_TONNES")
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the catalogue never reached the gateway: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_documented_answer_of_a_seeded_system_matches_its_schema() {
    let Some(app) = spawn_app(Mode::Embedded, "openapi").await else {
        return;
    };
    seed(&app).await;
    let client = reqwest::Client::new();
    let doc: Value = client
        .get(format!("http://{}/api/v1/openapi.json", app.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    let called: std::collections::BTreeSet<&str> = requests().iter().map(|r| r.0).collect();
    assert_eq!(
        documented.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        called.iter().copied().collect::<Vec<_>>(),
        "every documented route is called here"
    );
    for (path, url, expected) in requests() {
        let response = client
            .get(format!("http://{}{url}", app.http))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let media = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = response.bytes().await.unwrap();
        assert_eq!(
            status,
            expected,
            "{url}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if media.starts_with("text/csv") {
            assert!(
                schema_of(&doc, path, status, "text/csv").is_some(),
                "{url}: CSV is not documented for {status}"
            );
            assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "{url}: a BOM");
            continue;
        }
        assert!(media.starts_with("application/json"), "{url}: {media}");
        let schema = schema_of(&doc, path, status, "application/json")
            .unwrap_or_else(|| panic!("{url}: no JSON schema for {status}"));
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("{path}: the document's schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{url}: {errors:#?}\n{body:#}");
    }
    app.stop().await;
}
