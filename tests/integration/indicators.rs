//! The indicators service end to end over gRPC with real tokens: a province saves and submits
//! its report, the central working group approves it, the events leave through the outbox
//! (the bus acknowledged them), and other provinces and partners are refused.

use std::time::{Duration, Instant};

use agriportal_platform::auth::Role;
use agriportal_platform::client::{Caller, Credential};
use agriportal_platform::period::{self, Period, PeriodType};
use agriportal_platform::storage::Database;
use agriportal_proto::indicators::v1 as pb;
use agriportal_proto::indicators::v1::indicators_client::IndicatorsClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

use crate::abuse::channel;
use crate::support::{spawn_app, Mode, TestApp};

pub(crate) type Client = IndicatorsClient<InterceptedService<Channel, Caller>>;

pub(crate) async fn client(app: &TestApp, token: Option<&str>) -> Client {
    let credential = token.map_or(Credential::None, |t| Credential::Bearer(t.to_string()));
    let caller = Caller::new(credential, Duration::from_secs(30)).expect("caller");
    IndicatorsClient::with_interceptor(channel(app).await, caller)
}

/// The latest month open for reporting today (Vietnam time).
pub(crate) fn open_month() -> String {
    let today = period::vietnam_today(time::OffsetDateTime::now_utc());
    Period::latest_open(PeriodType::Month, today)
        .expect("a month")
        .to_string()
}

/// Waits until the relay has published `count` events on `subject` (the bus acknowledged
/// them, so the outbox marked them sent).
async fn wait_published(db: &Database, subject: &str, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sent: i64 = agriportal_platform::with_db!(&db.pool, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM outbox WHERE subject = $1 AND sent_at_ms IS NOT NULL",
            )
            .bind(subject)
            .fetch_one(pool)
            .await
            .expect("outbox")
        });
        if sent >= count {
            assert_eq!(sent, count, "{subject}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{subject}: {sent} of {count} sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn report_flow(mode: Mode) {
    let Some(app) = spawn_app(mode, "indicators_report_flow").await else {
        return;
    };
    let month = open_month();
    let hcm_token = app.token(Role::Province {
        province: "79".into(),
    });
    let admin_token = app.token(Role::Admin);
    let hanoi_token = app.token(Role::Province {
        province: "01".into(),
    });
    let partner_token = app.token(Role::Partner {
        partner: "voso".into(),
    });
    let mut hcm = client(&app, Some(&hcm_token)).await;
    let mut admin = client(&app, Some(&admin_token)).await;

    let catalogue = hcm
        .list_indicators(pb::ListIndicatorsRequest {})
        .await
        .expect("catalogue")
        .into_inner();
    assert_eq!(catalogue.indicators.len(), 18);

    let saved = hcm
        .save_report(pb::SaveReportRequest {
            province_code: "79".into(),
            period: month.clone(),
            values: vec![
                pb::ValueInput {
                    indicator_code: "TRAINED_HH".into(),
                    value: "1250".into(),
                    comment: "Sở Nông nghiệp và Môi trường".into(),
                },
                pb::ValueInput {
                    indicator_code: "ORDERS".into(),
                    value: "3".into(),
                    comment: String::new(),
                },
            ],
        })
        .await
        .expect("save")
        .into_inner();
    assert_eq!(saved.rejections.len(), 1);
    assert!(saved.rejections[0].reason.contains("marketplaces"));
    let submitted = hcm
        .submit_report(pb::ReportRef {
            province_code: "79".into(),
            period: month.clone(),
        })
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(submitted.state(), pb::ReportState::Submitted);

    let queue = admin
        .list_reports(pb::ListReportsRequest {
            state: pb::ReportState::Submitted as i32,
            ..Default::default()
        })
        .await
        .expect("queue")
        .into_inner();
    assert_eq!(queue.reports.len(), 1);
    assert_eq!(queue.reports[0].value_count, 1);
    let approved = admin
        .approve_report(pb::ReviewRequest {
            province_code: "79".into(),
            period: month.clone(),
            comment: String::new(),
        })
        .await
        .expect("approve")
        .into_inner();
    assert_eq!(approved.state(), pb::ReportState::Approved);
    assert_eq!(approved.history.len(), 3);
    assert_eq!(approved.history[2].actor, "admin");

    // Locked now, for the province as for anyone.
    let err = hcm
        .save_report(pb::SaveReportRequest {
            province_code: "79".into(),
            period: month.clone(),
            values: vec![],
        })
        .await
        .expect_err("locked");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("approved and locked"), "{err:?}");

    // Another province may not read it; a partner may not touch reports; nobody is nobody.
    let err = client(&app, Some(&hanoi_token))
        .await
        .get_report(pb::ReportRef {
            province_code: "79".into(),
            period: month.clone(),
        })
        .await
        .expect_err("other province");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("Hồ Chí Minh"), "{err:?}");
    let mut partner = client(&app, Some(&partner_token)).await;
    let err = partner
        .list_reports(pb::ListReportsRequest::default())
        .await
        .expect_err("partner");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(partner
        .list_indicators(pb::ListIndicatorsRequest {})
        .await
        .is_ok());
    let err = client(&app, None)
        .await
        .list_indicators(pb::ListIndicatorsRequest {})
        .await
        .expect_err("nobody");
    assert_eq!(err.code(), Code::Unauthenticated);

    // The file a province downloads.
    let file = hcm
        .export_report(pb::ReportRef {
            province_code: "79".into(),
            period: month.clone(),
        })
        .await
        .expect("export")
        .into_inner();
    assert_eq!(file.filename, format!("bao-cao-79-{month}.csv"));
    assert!(file.content.starts_with(b"\xEF\xBB\xBF"));

    // Every event left through the outbox: the catalogue, then the report's steps.
    let db = app.ctx.database("indicators").await.expect("db");
    wait_published(&db, "indicators.catalogue_changed", 18).await;
    wait_published(&db, "indicators.report_started", 1).await;
    wait_published(&db, "indicators.report_submitted", 1).await;
    wait_published(&db, "indicators.report_approved", 1).await;
    db.close().await;

    // The public side, through the gateway's read model: the approved value and its progress
    // against a target the centre sets; another province's draft never shows, only its state.
    admin
        .set_target(pb::SetTargetRequest {
            indicator_code: "TRAINED_HH".into(),
            year: month[..4].parse().expect("year"),
            province_code: String::new(),
            value: "5000".into(),
        })
        .await
        .expect("target");
    let mut hanoi = client(&app, Some(&hanoi_token)).await;
    hanoi
        .save_report(pb::SaveReportRequest {
            province_code: "01".into(),
            period: month.clone(),
            values: vec![pb::ValueInput {
                indicator_code: "TRAINED_HH".into(),
                value: "777".into(),
                comment: String::new(),
            }],
        })
        .await
        .expect("hanoi draft");
    let path = format!("/api/v1/indicators/TRAINED_HH?period={month}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = app.get(&path).await;
        let hanoi_state = body["provinces"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["code"] == "01"))
            .map(|p| p["state"].clone());
        if status == 200
            && body["national"]["target"] == 5000
            && hanoi_state == Some("draft".into())
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the approval never reached the public figures: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["national"]["value"], 1250, "{body:#}");
    assert_eq!(body["national"]["progress_pct"], 25.0);
    let province = |code: &str| {
        body["provinces"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["code"] == code))
            .cloned()
            .expect("province")
    };
    assert_eq!(province("79")["value"], 1250);
    assert_eq!(province("79")["state"], "approved");
    assert_eq!(
        province("01")["value"],
        serde_json::Value::Null,
        "a draft is not public"
    );
    let (_, completeness) = app
        .get(&format!("/api/v1/completeness?period={month}"))
        .await;
    assert_eq!(completeness["counts"]["approved"], 1, "{completeness:#}");
    assert_eq!(completeness["counts"]["draft"], 1);
    assert_eq!(completeness["counts"]["missing"], 32);

    // A restart seeds nothing again.
    let app = app.restart().await;
    let db = app.ctx.database("indicators").await.expect("db");
    wait_published(&db, "indicators.catalogue_changed", 18).await;
    db.close().await;
}

#[tokio::test]
async fn report_flow_embedded() {
    report_flow(Mode::Embedded).await;
}

#[tokio::test]
async fn report_flow_on_postgres_and_jetstream() {
    report_flow(Mode::Distributed).await;
}
