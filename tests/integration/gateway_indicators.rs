//! The gateway's indicators read model end to end: the indicators service's events published
//! on the system's bus (as its outbox relay would), partners' real pushes through the
//! marketplace, and what the public reads back over HTTP (JSON and CSV) and gRPC.

use std::time::{Duration, Instant};

use agriportal_platform::bus::Message;
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::gateway::v1 as gpb;
use agriportal_proto::indicators::v1 as ipb;
use agriportal_proto::marketplace::v1 as pb;
use agriportal_proto::{Event, Topic};
use serde_json::Value;

use crate::abuse::channel;
use agriportal_platform::Registry;

use crate::support::{spawn_app_on, Mode, TestApp};

async fn publish<M: Event>(app: &TestApp, topic: Topic<M>, event: &M) {
    let message = Message {
        subject: topic.subject().to_string(),
        id: event.event_id().to_string(),
        headers: vec![],
        payload: topic.encode(event).into(),
    };
    app.ctx.bus.publish(message).await.expect("publish");
}

fn indicator(code: &str, source: ipb::Source, target: &str) -> ipb::Indicator {
    ipb::Indicator {
        code: code.into(),
        name_vi: format!("Chỉ tiêu {code}"),
        name_en: format!("Indicator {code}"),
        unit: "units".into(),
        period_type: ipb::PeriodType::Month as i32,
        source: source as i32,
        value_type: ipb::ValueType::Decimal as i32,
        national_target: target.into(),
        aggregation: ipb::Aggregation::Sum as i32,
        revision: 1,
        ..Default::default()
    }
}

fn sale(id: &str, grams: i64, value: i64, orders: u32) -> pb::SalesRecord {
    pb::SalesRecord {
        record_id: id.into(),
        sale_date: "2022-03-10".into(),
        province_code: "79".into(),
        category: "fruit".into(),
        quantity_grams: grams,
        value_vnd: value,
        orders,
        ..Default::default()
    }
}

fn household(id: &str, status: HouseholdStatus) -> pb::OnboardingRecord {
    pb::OnboardingRecord {
        household_ref: id.into(),
        province_code: "79".into(),
        registered_on: "2021-09-01".into(),
        status: status as i32,
        categories: vec!["fruit".into()],
        ..Default::default()
    }
}

/// Polls `path` until `done` holds, or fails after 60 s showing the last body. Only the bound
/// of a busy machine: the indicators trail a commit by up to two of their snapshot's rebuilds,
/// which take seconds each in a debug build while other builds share the cores.
async fn wait(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = app.get(path).await;
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never matched; last: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn province<'a>(body: &'a Value, code: &str) -> &'a Value {
    body["provinces"]
        .as_array()
        .expect("provinces")
        .iter()
        .find(|p| p["code"] == code)
        .expect("province")
}

async fn indicators_end_to_end(mode: Mode) {
    // The marketplace and the gateway alone: this test plays the indicators service, publishing
    // its catalogue and report events itself (the real one would seed its own catalogue).
    let registry = Registry::new()
        .with::<agriportal_marketplace::Marketplace>()
        .with::<agriportal_gateway::Gateway>();
    let Some(app) = spawn_app_on(registry, mode, "gw_indicators").await else {
        return;
    };
    // The catalogue and a target, as the indicators service publishes them.
    for (i, (code, source, target)) in [
        ("TRAINED_HH", ipb::Source::Province, "1000"),
        ("HH_ONBOARDED", ipb::Source::Marketplace, "5000000"),
        ("HH_ACTIVE", ipb::Source::Marketplace, ""),
        ("SALES_TONNES", ipb::Source::Marketplace, ""),
        ("SALES_VALUE", ipb::Source::Marketplace, ""),
        ("ORDERS", ipb::Source::Marketplace, ""),
        ("HH_TRADING", ipb::Source::Marketplace, ""),
        ("QA_RECEIVED", ipb::Source::Qa, ""),
    ]
    .into_iter()
    .enumerate()
    {
        let mut ind = indicator(code, source, target);
        ind.position = i as u32;
        let event = ipb::CatalogueChanged {
            event_id: format!("cat-{code}"),
            indicator: Some(ind),
            at_ms: 1,
        };
        publish(&app, ipb::CATALOGUE_CHANGED, &event).await;
    }
    let target = ipb::TargetSet {
        event_id: "target-1".into(),
        target: Some(ipb::Target {
            indicator_code: "TRAINED_HH".into(),
            year: 2022,
            province_code: String::new(),
            value: "200".into(),
            set_at_ms: 10,
            set_by: "admin".into(),
        }),
    };
    publish(&app, ipb::TARGET_SET, &target).await;
    // Out of order: the approval (sequence 2) before the submission (sequence 1).
    let approved = ipb::ReportApproved {
        event_id: "approved-79".into(),
        province_code: "79".into(),
        period: "202203".into(),
        version: 1,
        sequence: 2,
        at_ms: 1_648_000_000_000,
        values: vec![ipb::ReportedValue {
            indicator_code: "TRAINED_HH".into(),
            value: "12.5".into(),
            ..Default::default()
        }],
        submitted_at_ms: 1_647_000_000_000,
        on_time: true,
        deadline: "2022-04-05".into(),
    };
    publish(&app, ipb::REPORT_APPROVED, &approved).await;
    let submitted = ipb::ReportSubmitted {
        event_id: "submitted-79".into(),
        province_code: "79".into(),
        period: "202203".into(),
        version: 1,
        sequence: 1,
        at_ms: 1_647_000_000_000,
        on_time: true,
        deadline: "2022-04-05".into(),
    };
    publish(&app, ipb::REPORT_SUBMITTED, &submitted).await;
    // Redelivered: changes nothing.
    publish(&app, ipb::REPORT_APPROVED, &approved).await;

    // Value and target together: the view reads targets, then values, in statements of their
    // own, so while the events commit one answer can hold the value without the target.
    let body = wait(&app, "/api/v1/indicators/TRAINED_HH?period=202203", |b| {
        b["national"]["value"] == 12.5 && b["national"]["target"] == 200
    })
    .await;
    assert_eq!(body["national"]["value_text"], "12.5");
    assert_eq!(body["national"]["target"], 200);
    assert_eq!(body["national"]["progress_pct"], 6.25);
    assert_eq!(body["indicator"]["source"], "province");
    assert_eq!(body["indicator"]["national_target"], 1000);
    let hcm = province(&body, "79");
    assert_eq!(
        (hcm["state"].as_str(), hcm["value"].as_f64()),
        (Some("approved"), Some(12.5))
    );
    let other = province(&body, "01");
    assert_eq!(other["state"], "missing");
    assert_eq!(other["value"], Value::Null);
    assert_eq!(other["missing_reason"], "not_approved");
    assert_eq!(body["series"].as_array().map(Vec::len), Some(12));
    assert_eq!(body["regions"].as_array().map(Vec::len), Some(3));

    // Marketplace figures from real pushes, including a correction.
    let mut postmart = app.partner("postmart").await;
    let first = vec![
        sale("s1", 1_234_567, 10_000, 2),
        sale("s2", 500_000, 4_000, 1),
    ];
    postmart
        .push_sales(pb::PushSalesRequest {
            batch_id: "ind-s1".into(),
            records: first,
        })
        .await
        .expect("push");
    let corrected = postmart
        .push_sales(pb::PushSalesRequest {
            batch_id: "ind-s2".into(),
            records: vec![sale("s1", 2_000_000, 25_000, 3)],
        })
        .await
        .expect("push")
        .into_inner();
    assert_eq!(corrected.corrected, 1);
    postmart
        .push_onboarding(pb::PushOnboardingRequest {
            batch_id: "ind-h1".into(),
            records: vec![
                household("h1", HouseholdStatus::Active),
                household("h2", HouseholdStatus::Active),
                household("h3", HouseholdStatus::Suspended),
            ],
        })
        .await
        .expect("push");
    let tonnes = wait(&app, "/api/v1/indicators/SALES_TONNES?period=202203", |b| {
        b["national"]["value_text"] == "2.500"
    })
    .await;
    assert_eq!(province(&tonnes, "79")["value_text"], "2.500");
    assert_eq!(province(&tonnes, "01")["value_text"], "0.000");
    let value = wait(&app, "/api/v1/indicators/SALES_VALUE?period=202203", |b| {
        b["national"]["value"] == 29_000
    })
    .await;
    assert_eq!(province(&value, "79")["value"], 29_000);
    let (_, orders) = app.get("/api/v1/indicators/ORDERS?period=202203").await;
    assert_eq!(orders["national"]["value"], 4);
    let onboarded = wait(&app, "/api/v1/indicators/HH_ONBOARDED?period=202203", |b| {
        b["national"]["value"] == 3
    })
    .await;
    assert_eq!(onboarded["national"]["target"], 5_000_000);
    let (_, active) = app.get("/api/v1/indicators/HH_ACTIVE?period=202203").await;
    assert_eq!(active["national"]["value"], 2);
    // Before the households registered, none.
    let (_, before) = app
        .get("/api/v1/indicators/HH_ONBOARDED?period=202108")
        .await;
    assert_eq!(before["national"]["value"], 0);
    // No sales line named the household that sold: no trading household (a figure, 0); and a
    // source that does not exist yet (no figure at all).
    let (_, trading) = app.get("/api/v1/indicators/HH_TRADING?period=202203").await;
    assert_eq!(trading["national"]["value"], 0, "{trading:#}");
    let (_, qa) = app
        .get("/api/v1/indicators/QA_RECEIVED?period=202203")
        .await;
    assert_eq!(
        (&qa["national"]["value"], &qa["national"]["missing_reason"]),
        (&Value::Null, &Value::from("no_source"))
    );

    // The catalogue with national progress at each one's latest period. The list is the
    // in-memory snapshot's, rebuilt after the commits above (paced, and after the figures):
    // it catches up within a rebuild or two, so it is polled like the events' effects.
    let list = wait(&app, "/api/v1/indicators", |b| {
        b["indicators"].as_array().is_some_and(|all| {
            all.iter()
                .any(|i| i["indicator"]["code"] == "TRAINED_HH" && i["period"] == "202203")
        })
    })
    .await;
    let list = list["indicators"].as_array().expect("list").clone();
    assert_eq!(list.len(), 8);
    let trained = list
        .iter()
        .find(|i| i["indicator"]["code"] == "TRAINED_HH")
        .expect("trained");
    assert_eq!(trained["period"], "202203");
    assert_eq!(trained["national"]["value"], 12.5);

    // Completeness.
    let (status, c) = app.get("/api/v1/completeness?period=202203").await;
    assert_eq!(status, 200, "{c:#}");
    assert_eq!(c["deadline"], "2022-04-05");
    assert_eq!(c["counts"]["approved"], 1);
    assert_eq!(c["counts"]["missing"], 33);
    assert_eq!(c["counts"]["overdue"], 33);
    let hcm = province(&c, "79");
    assert_eq!(hcm["state"], "approved");
    assert_eq!(hcm["on_time"], true);
    assert!(
        hcm["submitted_at"]
            .as_str()
            .expect("time")
            .ends_with("+07:00"),
        "{hcm}"
    );
    assert_eq!(province(&c, "01")["submitted_at"], Value::Null);

    // CSV: BOM, CRLF, Vietnamese headers, an attachment.
    for (path, header) in [
        ("/api/v1/completeness?period=202203&format=csv", "Mã tỉnh"),
        (
            "/api/v1/indicators/TRAINED_HH?period=202203&format=csv",
            "Đơn vị hành chính",
        ),
        ("/api/v1/indicators?format=csv", "Mã chỉ tiêu"),
    ] {
        let r = reqwest::get(format!("http://{}{path}", app.http))
            .await
            .expect("http");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let disposition = r.headers()["content-disposition"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(
            disposition.starts_with("attachment; filename=\""),
            "{disposition}"
        );
        let bytes = r.bytes().await.expect("body");
        assert!(bytes.starts_with("\u{feff}".as_bytes()), "{path}");
        let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
        assert!(
            text.contains(header) && text.contains("\r\n"),
            "{path}: {text}"
        );
    }

    // Bad queries name the parameter; unknown indicators are 404.
    for (path, status, named) in [
        (
            "/api/v1/indicators/TRAINED_HH?period=2022-03",
            400,
            "period",
        ),
        (
            "/api/v1/indicators/TRAINED_HH?period=2022Q1",
            400,
            "TRAINED_HH",
        ),
        ("/api/v1/indicators/TRAINED_HH?format=xml", 400, "format"),
        ("/api/v1/completeness?colour=red", 400, "colour"),
        ("/api/v1/indicators/NOPE", 404, "NOPE"),
    ] {
        let (got, body) = app.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{path}: {body}");
    }

    // gRPC answers the same.
    let mut dashboard = gpb::dashboard_client::DashboardClient::new(channel(&app).await);
    let progress = dashboard
        .get_indicator_progress(gpb::GetIndicatorProgressRequest {
            code: "TRAINED_HH".into(),
            period: "202203".into(),
            province: "79".into(),
        })
        .await
        .expect("rpc")
        .into_inner();
    let national = progress.national.expect("national");
    assert_eq!(
        (
            national.has_value,
            national.value.as_str(),
            national.target.as_str()
        ),
        (true, "12.5", "200")
    );
    assert_eq!(
        progress
            .series
            .last()
            .and_then(|p| p.figure.as_ref())
            .map(|f| f.value.as_str()),
        Some("12.5")
    );
    let bad = dashboard
        .get_indicator_progress(gpb::GetIndicatorProgressRequest {
            code: "TRAINED_HH".into(),
            period: "2022Q1".into(),
            province: String::new(),
        })
        .await
        .expect_err("wrong period type");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let missing = dashboard
        .get_indicator_progress(gpb::GetIndicatorProgressRequest {
            code: "NOPE".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(missing.message().contains("NOPE"));
    let completeness = dashboard
        .get_completeness(gpb::GetCompletenessRequest {
            period: "202203".into(),
        })
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(completeness.counts.map(|c| c.approved), Some(1));
    let list = list_for(&mut dashboard, "", "").await.expect("rpc");
    assert_eq!(list.indicators.len(), 8);
    assert!(list.indicators.iter().all(|i| i.province.is_none()));
    // An entry form's context in one call: every monthly indicator at the month asked, each
    // with the province's figure (Bình Dương's pre-2025 code is Hồ Chí Minh City now).
    let context = list_for(&mut dashboard, "202203", "74").await.expect("rpc");
    assert_eq!(context.indicators.len(), 8);
    assert!(context.indicators.iter().all(|i| i.period == "202203"));
    let of = |code: &str| {
        let place = province_figure(&context, code);
        assert_eq!(place.code, "79", "{code}");
        (place.figure.unwrap_or_default(), place.state)
    };
    let (tonnes, state) = of("SALES_TONNES");
    assert_eq!((tonnes.value.as_str(), state.as_str()), ("2.500", ""));
    assert_eq!(of("HH_ONBOARDED").0.value, "3");
    let (trained, state) = of("TRAINED_HH");
    assert_eq!(
        (trained.value.as_str(), state.as_str()),
        ("12.5", "approved")
    );
    // The Q&A indicators have no source yet: no figure, and it says why.
    let (qa, _) = of("QA_RECEIVED");
    assert_eq!(
        (qa.has_value, qa.missing_reason.as_str()),
        (false, "no_source")
    );
    // Another province's figure is its own, not the nation's; the month before the
    // households registered has its own figures (none), not the latest period's.
    for (period, province, code, value) in [
        ("202203", "01", "SALES_TONNES", "0.000"),
        ("202108", "79", "HH_ONBOARDED", "0"),
    ] {
        let list = list_for(&mut dashboard, period, province)
            .await
            .expect("rpc");
        let place = province_figure(&list, code);
        assert_eq!(
            (place.code.as_str(), place.figure.unwrap_or_default().value),
            (province, value.to_string()),
            "{period} {province} {code}"
        );
    }
    // No indicator is reported by quarter here; a bad period or province is refused.
    let quarter = list_for(&mut dashboard, "2022Q1", "").await.expect("rpc");
    assert!(quarter.indicators.is_empty());
    for (period, province, code) in [
        ("2022-03", "", tonic::Code::InvalidArgument),
        ("202203", "99", tonic::Code::NotFound),
    ] {
        let refused = list_for(&mut dashboard, period, province)
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), code, "{period} {province}");
    }
    app.stop().await;
}

/// `ListIndicatorProgress` for `period` and `province`.
async fn list_for(
    dashboard: &mut gpb::dashboard_client::DashboardClient<tonic::transport::Channel>,
    period: &str,
    province: &str,
) -> Result<gpb::ListIndicatorProgressResponse, tonic::Status> {
    let request = gpb::ListIndicatorProgressRequest {
        period: period.into(),
        province: province.into(),
    };
    Ok(dashboard
        .list_indicator_progress(request)
        .await?
        .into_inner())
}

/// The province's figure of indicator `code` in a list asked for a province.
fn province_figure(list: &gpb::ListIndicatorProgressResponse, code: &str) -> gpb::ProvinceFigure {
    list.indicators
        .iter()
        .find(|i| i.indicator.as_ref().is_some_and(|x| x.code == code))
        .and_then(|i| i.province.clone())
        .unwrap_or_else(|| panic!("no province figure of {code}"))
}

#[tokio::test]
async fn indicators_end_to_end_embedded() {
    indicators_end_to_end(Mode::Embedded).await;
}

#[tokio::test]
async fn indicators_end_to_end_on_postgres_and_jetstream() {
    indicators_end_to_end(Mode::Distributed).await;
}
