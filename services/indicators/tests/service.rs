//! The service's rules over a real store (SQLite, then PostgreSQL): rights, rejections, every
//! workflow transition, locking, reopening, merged provinces, audit, import and export.

// A test crate: helpers as well as tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use agriportal_indicators::domain::Action;
use agriportal_indicators::domain::{parse_catalogue, CATALOGUE_CSV};
use agriportal_indicators::{Indicators, Reports, Store};
use agriportal_platform::auth::{Claims, Role};
use agriportal_platform::outbox::Outbox;
use agriportal_platform::period::Deadlines;
use agriportal_platform::storage::Database;
use agriportal_platform::{testing, with_db, Error, ErrorCode};
use agriportal_proto::indicators::v1 as pb;
use pb::ReportState;
use prost::Message;

/// 2 December 2026, 10:00 in Vietnam: November is open, its deadline (5 December) ahead.
const NOW_MS: i64 = 1_796_180_400_000;

fn claims(role: Role) -> Claims {
    Claims {
        id: "t".into(),
        role,
        aud: agriportal_platform::auth::PORTAL_AUDIENCE.into(),
        iat: 0,
        exp: i64::MAX,
    }
}

fn admin() -> Claims {
    claims(Role::Admin)
}

fn province(code: &str) -> Claims {
    claims(Role::Province {
        province: code.into(),
    })
}

fn partner() -> Claims {
    claims(Role::Partner {
        partner: "voso".into(),
    })
}

async fn service(db: Database) -> Reports {
    let store = Arc::new(Store::new(db, Outbox::detached()));
    store
        .seed_catalogue(&parse_catalogue(CATALOGUE_CSV).unwrap())
        .await
        .unwrap();
    Reports::new(store, Deadlines::default()).with_clock(|| NOW_MS)
}

fn input(code: &str, value: &str) -> pb::ValueInput {
    pb::ValueInput {
        indicator_code: code.into(),
        value: value.into(),
        comment: String::new(),
    }
}

fn save(province: &str, period: &str, values: Vec<pb::ValueInput>) -> pb::SaveReportRequest {
    pb::SaveReportRequest {
        province_code: province.into(),
        period: period.into(),
        values,
    }
}

fn refused(err: Error, code: ErrorCode, words: &[&str]) {
    assert_eq!(err.code, code, "{err}");
    for w in words {
        assert!(err.message.contains(w), "{w:?} not in {:?}", err.message);
    }
}

async fn events(reports: &Reports, subject: &str) -> Vec<Vec<u8>> {
    with_db!(&reports.store().database().pool, |pool| {
        sqlx::query_scalar("SELECT payload FROM outbox WHERE subject = $1 ORDER BY seq")
            .bind(subject)
            .fetch_all(pool)
            .await
            .unwrap()
    })
}

async fn review(
    r: &Reports,
    who: &Claims,
    action: Action,
    comment: &str,
) -> Result<pb::Report, Error> {
    r.review(who, "79", "202611", comment, action).await
}

async fn workflow(db: Database) {
    assert_eq!(NOW_MS % 1000, 0);
    let r = service(db).await;
    let hcm = province("79");

    // Each value on its own: the valid ones are saved, each invalid one says why.
    let saved = r
        .save_report(
            &hcm,
            save(
                "79",
                "202611",
                vec![
                    input("TRAINED_HH", "1200"),
                    input("NOPE", "1"),
                    input("HH_ONBOARDED", "5"),
                    input("OCOP_LISTED_PCT", "50"),
                    input("EPAY_HH", "12,5"),
                    input("TRAINING_SESSIONS", "-3"),
                    input("EPAY_HH", "1.5"),
                    input("TRAINING_SESSIONS", "14"),
                    input("TRAINED_HH_PCT", "50"),
                ],
            ),
        )
        .await
        .unwrap();
    let reasons: Vec<(u32, String)> = saved
        .rejections
        .iter()
        .map(|x| (x.index, x.reason.clone()))
        .collect();
    assert_eq!(reasons.len(), 7, "{reasons:?}");
    assert!(reasons[6]
        .1
        .contains("derived from other indicators: TRAINED_HH / HH_ONBOARDED"));
    assert!(reasons[0].1.contains("unknown indicator \"NOPE\""));
    assert!(reasons[1].1.contains("marketplaces"));
    assert!(reasons[2]
        .1
        .contains("by quarter: use a period like 2026Q4"));
    assert!(reasons[3].1.contains("not a number"));
    assert!(reasons[4].1.contains("at least 0"));
    assert!(reasons[5].1.contains("whole numbers"));
    let report = saved.report.unwrap();
    assert_eq!(report.state(), ReportState::Draft);
    assert_eq!(report.values.len(), 2);
    assert_eq!(report.deadline, "2026-12-05");
    assert_eq!(events(&r, "indicators.report_started").await.len(), 1);
    // Whole-call refusals.
    let err = r
        .save_report(&hcm, save("79", "202612", vec![input("TRAINED_HH", "1")]))
        .await
        .unwrap_err();
    refused(
        err,
        ErrorCode::FailedPrecondition,
        &["period 202612 opens on 01/01/2027"],
    );
    let err = r
        .save_report(&hcm, save("01", "202611", vec![input("TRAINED_HH", "1")]))
        .await
        .unwrap_err();
    refused(
        err,
        ErrorCode::PermissionDenied,
        &["79", "01", "Hồ Chí Minh", "Hà Nội"],
    );
    let err = r
        .get_report(
            &province("01"),
            &pb::ReportRef {
                province_code: "79".into(),
                period: "202611".into(),
            },
        )
        .await
        .unwrap_err();
    refused(err, ErrorCode::PermissionDenied, &["79", "01"]);
    let err = r
        .save_report(
            &admin(),
            save("99", "202611", vec![input("TRAINED_HH", "1")]),
        )
        .await
        .unwrap_err();
    refused(
        err,
        ErrorCode::InvalidArgument,
        &["unknown province code \"99\""],
    );
    let err = r
        .save_report(&admin(), save("79", "2026-11", vec![]))
        .await
        .unwrap_err();
    refused(err, ErrorCode::InvalidArgument, &["202611"]);
    let err = r
        .save_report(&partner(), save("79", "202611", vec![]))
        .await
        .unwrap_err();
    refused(err, ErrorCode::PermissionDenied, &["partner"]);

    // Transitions refused from a draft.
    for (action, comment) in [
        (Action::Approve, ""),
        (Action::Return, "x"),
        (Action::Reopen, "x"),
    ] {
        let err = review(&r, &admin(), action, comment).await.unwrap_err();
        refused(
            err,
            ErrorCode::FailedPrecondition,
            &["is draft", "SubmitReport"],
        );
    }
    let err = review(&r, &hcm, Action::Approve, "").await.unwrap_err();
    refused(
        err,
        ErrorCode::PermissionDenied,
        &["central working group", "admin"],
    );

    // Submit, then the report waits for review.
    let submitted = review(&r, &hcm, Action::Submit, "").await.unwrap();
    assert_eq!(submitted.state(), ReportState::Submitted);
    assert_eq!(submitted.submitted_at_ms, NOW_MS);
    assert!(submitted.on_time);
    let err = r
        .save_report(&hcm, save("79", "202611", vec![input("TRAINED_HH", "1")]))
        .await
        .unwrap_err();
    refused(err, ErrorCode::FailedPrecondition, &["submitted", "wait"]);
    let err = review(&r, &hcm, Action::Submit, "").await.unwrap_err();
    refused(err, ErrorCode::FailedPrecondition, &["submitted"]);
    let err = review(&r, &admin(), Action::Reopen, "x").await.unwrap_err();
    refused(
        err,
        ErrorCode::FailedPrecondition,
        &["only an approved report can be reopened"],
    );
    let err = review(&r, &admin(), Action::Return, " ").await.unwrap_err();
    refused(err, ErrorCode::InvalidArgument, &["comment is required"]);

    // Returned: editable, and submitting moves it back to review.
    let returned = review(&r, &admin(), Action::Return, "Thiếu số lớp tập huấn")
        .await
        .unwrap();
    assert_eq!(returned.state(), ReportState::Returned);
    assert_eq!(returned.review_comment, "Thiếu số lớp tập huấn");
    let edited = r
        .save_report(
            &hcm,
            save("79", "202611", vec![input("TRAINING_SESSIONS", "15")]),
        )
        .await
        .unwrap();
    assert_eq!(edited.report.unwrap().state(), ReportState::Returned);
    review(&r, &hcm, Action::Submit, "").await.unwrap();
    let approved = review(&r, &admin(), Action::Approve, "").await.unwrap();
    assert_eq!(approved.state(), ReportState::Approved);
    assert_eq!(approved.approved_at_ms, NOW_MS);

    // Approved: locked.
    let err = r
        .save_report(
            &admin(),
            save("79", "202611", vec![input("TRAINED_HH", "1")]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition);
    assert_eq!(
        err.message,
        "report 79/202611 is approved and locked; the central working group can reopen it (ReopenReport) with a reason"
    );
    let err = review(&r, &hcm, Action::Submit, "").await.unwrap_err();
    refused(err, ErrorCode::FailedPrecondition, &["approved and locked"]);
    let err = review(&r, &admin(), Action::Approve, "").await.unwrap_err();
    refused(err, ErrorCode::FailedPrecondition, &["already approved"]);
    let err = review(&r, &admin(), Action::Reopen, "").await.unwrap_err();
    refused(err, ErrorCode::InvalidArgument, &["reason is required"]);
    let err = review(&r, &hcm, Action::Reopen, "x").await.unwrap_err();
    refused(err, ErrorCode::PermissionDenied, &["admin"]);

    // Reopen: a new version starting as a copy; the approved version is kept as it was.
    let reopened = review(&r, &admin(), Action::Reopen, "Số hộ đào tạo cần sửa")
        .await
        .unwrap();
    assert_eq!(
        (reopened.state(), reopened.version),
        (ReportState::Draft, 2)
    );
    assert_eq!(reopened.values, approved.values);
    r.save_report(
        &hcm,
        save("79", "202611", vec![input("TRAINED_HH", "1300")]),
    )
    .await
    .unwrap();
    let v1 = r.store().values("79", "202611", 1).await.unwrap();
    let v2 = r.store().values("79", "202611", 2).await.unwrap();
    assert_eq!(
        v1.iter()
            .find(|v| v.indicator_code == "TRAINED_HH")
            .unwrap()
            .value,
        "1200"
    );
    assert_eq!(
        v2.iter()
            .find(|v| v.indicator_code == "TRAINED_HH")
            .unwrap()
            .value,
        "1300"
    );

    // The history names who did what, with old and new values, per version.
    let report = r
        .get_report(
            &hcm,
            &pb::ReportRef {
                province_code: "79".into(),
                period: "202611".into(),
            },
        )
        .await
        .unwrap();
    let trail: Vec<(String, String, String, String, String, u32)> = report
        .history
        .iter()
        .map(|e| {
            (
                e.actor.clone(),
                e.action.clone(),
                e.indicator_code.clone(),
                e.old_value.clone(),
                e.new_value.clone(),
                e.version,
            )
        })
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        trail,
        vec![
            (
                s("province:79"),
                s("save"),
                s("TRAINED_HH"),
                s(""),
                s("1200"),
                1
            ),
            (
                s("province:79"),
                s("save"),
                s("TRAINING_SESSIONS"),
                s(""),
                s("14"),
                1
            ),
            (
                s("province:79"),
                s("submit"),
                s(""),
                s("draft"),
                s("submitted"),
                1
            ),
            (
                s("admin"),
                s("return"),
                s(""),
                s("submitted"),
                s("returned"),
                1
            ),
            (
                s("province:79"),
                s("save"),
                s("TRAINING_SESSIONS"),
                s("14"),
                s("15"),
                1
            ),
            (
                s("province:79"),
                s("submit"),
                s(""),
                s("returned"),
                s("submitted"),
                1
            ),
            (
                s("admin"),
                s("approve"),
                s(""),
                s("submitted"),
                s("approved"),
                1
            ),
            (s("admin"), s("reopen"), s(""), s("approved"), s("draft"), 2),
            (
                s("province:79"),
                s("save"),
                s("TRAINED_HH"),
                s("1200"),
                s("1300"),
                2
            ),
        ]
    );
    assert_eq!(report.history[3].comment, "Thiếu số lớp tập huấn");

    // Events: the approved values, and a sequence that grows with every change.
    let approved = events(&r, "indicators.report_approved").await;
    let approved = pb::ReportApproved::decode(approved[0].as_slice()).unwrap();
    assert_eq!(approved.values.len(), 2);
    assert_eq!(approved.deadline, "2026-12-05");
    let reopened =
        pb::ReportReopened::decode(events(&r, "indicators.report_reopened").await[0].as_slice())
            .unwrap();
    assert!(reopened.sequence > approved.sequence);
    assert_eq!(reopened.reason, "Số hộ đào tạo cần sửa");
    assert_eq!(events(&r, "indicators.report_submitted").await.len(), 2);
    assert_eq!(events(&r, "indicators.report_returned").await.len(), 1);

    // A report with no values cannot be submitted.
    r.save_report(&hcm, save("79", "202610", vec![input("EPAY_HH", "3")]))
        .await
        .unwrap();
    r.save_report(&hcm, save("79", "202610", vec![input("EPAY_HH", "")]))
        .await
        .unwrap();
    let err = r
        .review(&hcm, "79", "202610", "", Action::Submit)
        .await
        .unwrap_err();
    refused(err, ErrorCode::FailedPrecondition, &["no values"]);
    let err = r
        .review(&hcm, "79", "202609", "", Action::Submit)
        .await
        .unwrap_err();
    refused(err, ErrorCode::FailedPrecondition, &["no report 79/202609"]);
}

#[tokio::test]
async fn every_transition_allowed_or_refused_with_its_reason() {
    testing::each_backend::<Indicators, _, _>("indicators_workflow", workflow).await;
}

async fn merged(db: Database) {
    let r = service(db).await;
    let a = admin();
    // History under the two pre-2025 provinces that merged into Hồ Chí Minh City.
    for (code, value) in [("74", "100"), ("77", "50"), ("74", "120"), ("79", "300")] {
        let saved = r
            .save_report(&a, save(code, "202506", vec![input("TRAINED_HH", value)]))
            .await
            .unwrap();
        assert!(saved.rejections.is_empty());
        assert_eq!(saved.report.unwrap().province_code, "79");
    }
    let values = r.store().values("79", "202506", 1).await.unwrap();
    let units: Vec<(&str, &str)> = values
        .iter()
        .map(|v| (v.source_province_code.as_str(), v.value.as_str()))
        .collect();
    assert_eq!(units, vec![("74", "120"), ("77", "50"), ("79", "300")]);
    // A province token of the new province enters its parts' history too.
    r.save_report(
        &province("79"),
        save("77", "202506", vec![input("EPAY_HH", "7")]),
    )
    .await
    .unwrap();
    // After the merger, a 2025 code has no source unit.
    let later = r
        .save_report(&a, save("79", "202507", vec![input("TRAINED_HH", "470")]))
        .await
        .unwrap();
    assert_eq!(later.report.unwrap().values[0].source_province_code, "");
    // After the merger, the old code is refused with the province it became.
    let err = r
        .save_report(&a, save("74", "202507", vec![input("TRAINED_HH", "1")]))
        .await
        .unwrap_err();
    refused(
        err,
        ErrorCode::InvalidArgument,
        &["merged into", "Hồ Chí Minh", "1 July 2025"],
    );
    // The export writes each unit under its own code, so it imports back unchanged.
    let file = r
        .export(
            &a,
            &pb::ReportRef {
                province_code: "79".into(),
                period: "202506".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(file.filename, "bao-cao-79-202506.csv");
    let result = r
        .import(
            &a,
            pb::ImportReportRequest {
                content: file.content,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(result.rejections.is_empty(), "{:?}", result.rejections);
    assert_eq!((result.lines, result.saved), (4, 4));
    assert_eq!(r.store().values("79", "202506", 1).await.unwrap(), {
        let mut v = values.clone();
        v.insert(
            0,
            agriportal_indicators::store::ValueRow {
                indicator_code: "EPAY_HH".into(),
                source_province_code: "77".into(),
                value: "7".into(),
                comment: String::new(),
            },
        );
        v
    });
}

#[tokio::test]
async fn merged_provinces_keep_their_parts_and_round_trip() {
    testing::each_backend::<Indicators, _, _>("indicators_merged", merged).await;
}

async fn imports(db: Database) {
    let r = service(db).await;
    let hcm = province("79");
    let text = "Mã tỉnh,Kỳ báo cáo,Mã chỉ tiêu,Giá trị,Ghi chú\r\n\
                79,202611,TRAINED_HH,10,Sở NN&MT\r\n\
                79,202611,EPAY_HH,abc,\r\n\
                01,202611,EPAY_HH,5,\r\n\
                79,202611,TRAINING_SESSIONS,3,\r\n";
    let request = |keep: bool| pb::ImportReportRequest {
        content: text.as_bytes().to_vec(),
        keep_valid_lines: keep,
        ..Default::default()
    };
    let all_or_nothing = r.import(&hcm, request(false)).await.unwrap();
    assert!(!all_or_nothing.stored);
    assert_eq!(all_or_nothing.lines, 4);
    let lines: Vec<u32> = all_or_nothing.rejections.iter().map(|x| x.index).collect();
    assert_eq!(lines, vec![3, 4]);
    assert!(all_or_nothing.rejections[1].reason.contains("province"));
    assert!(r.store().report("79", "202611").await.unwrap().is_none());

    let kept = r.import(&hcm, request(true)).await.unwrap();
    assert!(kept.stored);
    assert_eq!(kept.saved, 2);
    assert_eq!(kept.encoding, "utf-8");
    assert_eq!(kept.reports.len(), 1);
    assert_eq!(kept.reports[0].value_count, 2);
    let report = r
        .get_report(
            &hcm,
            &pb::ReportRef {
                province_code: "79".into(),
                period: "202611".into(),
            },
        )
        .await
        .unwrap();
    assert!(report.history.iter().all(|e| e.action == "import"));
    assert_eq!(report.values[0].comment, "Sở NN&MT");

    // A Windows-1258 file from Excel, read as such.
    let legacy = encoding_rs::WINDOWS_1258
        .encode("province_code,period,indicator_code,value,comment\n01,202611,EPAY_HH,5,Ha\u{300} Nô\u{323}i\n")
        .0
        .into_owned();
    let result = r
        .import(
            &admin(),
            pb::ImportReportRequest {
                content: legacy,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(result.encoding, "windows-1258");
    assert!(result.stored, "{:?}", result.rejections);
    let hn = r.store().values("01", "202611", 1).await.unwrap();
    assert_eq!(hn[0].comment, "Hà Nội");

    // Too large a file is refused as a whole.
    let big = vec![b'a'; 2 * 1024 * 1024 + 1];
    let err = r
        .import(
            &admin(),
            pb::ImportReportRequest {
                content: big,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    refused(err, ErrorCode::ResourceExhausted, &["2 MiB"]);

    // Lists and the chase list.
    let mine = r
        .list_reports(&hcm, &pb::ListReportsRequest::default())
        .await
        .unwrap();
    assert_eq!(mine.reports.len(), 1);
    let err = r
        .list_reports(
            &hcm,
            &pb::ListReportsRequest {
                province_code: "01".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    let all = r
        .list_reports(&admin(), &pb::ListReportsRequest::default())
        .await
        .unwrap();
    assert_eq!(all.reports.len(), 2);
    let chase = r
        .completeness(
            &hcm,
            &pb::GetCompletenessRequest {
                period: "202611".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(chase.provinces.len(), 34);
    assert_eq!(chase.deadline, "2026-12-05");
    let states: Vec<(String, i32)> = chase
        .provinces
        .iter()
        .filter(|p| p.state != 0)
        .map(|p| (p.province_code.clone(), p.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("01".to_string(), ReportState::Draft as i32),
            ("79".to_string(), ReportState::Draft as i32)
        ]
    );
    assert!(
        chase.provinces.iter().all(|p| !p.overdue),
        "the deadline is ahead"
    );
    // Empty: the latest month whose deadline has passed (October's, on 5 November).
    let latest = r
        .completeness(&admin(), &pb::GetCompletenessRequest::default())
        .await
        .unwrap();
    assert_eq!(latest.period, "202610");
    assert!(latest.provinces.iter().all(|p| p.overdue));
    let err = r
        .completeness(&partner(), &pb::GetCompletenessRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
}

#[tokio::test]
async fn imports_are_all_or_nothing_unless_asked_and_read_legacy_files() {
    testing::each_backend::<Indicators, _, _>("indicators_imports", imports).await;
}

async fn targets_and_catalogue(db: Database) {
    let r = service(db).await;
    let set = |code: &str, province: &str, value: &str| pb::SetTargetRequest {
        indicator_code: code.into(),
        year: 2026,
        province_code: province.into(),
        value: value.into(),
    };
    let t = r
        .set_target(&admin(), set("TRAINED_HH", "", "1000000"))
        .await
        .unwrap();
    assert_eq!((t.set_by.as_str(), t.set_at_ms), ("admin", NOW_MS));
    let err = r
        .set_target(&admin(), set("OCOP_LISTED_PCT", "79", "101"))
        .await
        .unwrap_err();
    refused(err, ErrorCode::InvalidArgument, &["from 0 to 100"]);
    let err = r
        .set_target(&admin(), set("TRAINED_HH", "74", "1"))
        .await
        .unwrap_err();
    refused(err, ErrorCode::InvalidArgument, &["34 provinces"]);
    let err = r
        .set_target(&province("79"), set("TRAINED_HH", "79", "1"))
        .await
        .unwrap_err();
    refused(err, ErrorCode::PermissionDenied, &["admin"]);
    let listed = r
        .list_targets(&partner(), &pb::ListTargetsRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);

    let mut indicator = r.list_indicators(&partner()).await.unwrap()[8].clone();
    indicator.name_en = "Households trained (digital skills)".into();
    indicator.unit = "households".into();
    let saved = r
        .save_indicator(
            &admin(),
            pb::SaveIndicatorRequest {
                indicator: Some(indicator.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(saved.revision, 2);
    let err = r
        .save_indicator(
            &province("79"),
            pb::SaveIndicatorRequest {
                indicator: Some(indicator.clone()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    indicator.code = "bad code".into();
    let err = r
        .save_indicator(
            &admin(),
            pb::SaveIndicatorRequest {
                indicator: Some(indicator),
            },
        )
        .await
        .unwrap_err();
    refused(err, ErrorCode::InvalidArgument, &["upper-case"]);
}

#[tokio::test]
async fn targets_and_catalogue_edits_are_the_admins() {
    testing::each_backend::<Indicators, _, _>(
        "indicators_targets_catalogue",
        targets_and_catalogue,
    )
    .await;
}
