//! Authorization: every rpc and HTTP route against every kind of caller, written as one table
//! of expected outcomes; and isolation between partners, who can never read or change each
//! other's batches or records.
//!
//! By design the dashboards (gRPC `Dashboard`, the HTTP API and page) and reflection are
//! public (health and metrics too, but on the admin listener: the public port answers 404):
//! they carry aggregate figures meant for "dashboards, ours and others'". The ingest rpcs need a partner's credential; the indicators service needs a
//! signed-in caller for its catalogue and targets, a province's or the central working group's
//! for reports (a province its own only), and an admin's for review, targets and the catalogue.

use std::fmt;
use std::time::Duration;

use agriportal_platform::auth::Role;
use agriportal_platform::client::{Caller, Credential};
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::gateway::v1 as gpb;
use agriportal_proto::indicators::v1 as pb_ind;
use agriportal_proto::marketplace::v1 as pb;
use tonic::Code;

use crate::abuse::{channel, raw_unary, stored};
use crate::indicators::{client as indicators_client, open_month, Client as IndicatorsTestClient};
use crate::support::{self, spawn_app, Mode, TestApp};

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// No `authorization` at all.
    Nobody,
    /// Partner Postmart.
    Postmart,
    /// Partner Vỏ Sò.
    Voso,
    /// A provincial officer (Hồ Chí Minh City).
    Province,
    /// The central working group.
    Admin,
    /// A Postmart token that has been revoked.
    Revoked,
    /// A Postmart token past its expiry.
    Expired,
    /// A Postmart token signed with another key.
    Foreign,
    /// The gateway's own service credential, addressed to the marketplace (reconciliation).
    Gateway,
    /// The gateway's own service credential, addressed to another service (indicators).
    Misaddressed,
}

/// The columns of the matrix, in order.
const WHO: [Who; 10] = [
    Who::Nobody,
    Who::Postmart,
    Who::Voso,
    Who::Province,
    Who::Admin,
    Who::Revoked,
    Who::Expired,
    Who::Foreign,
    Who::Gateway,
    Who::Misaddressed,
];

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", format!("{self:?}").to_lowercase())
    }
}

/// What a cell expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The call works.
    Allowed,
    /// The call is refused with this code.
    Refused(Code),
}

const OK: Outcome = Outcome::Allowed;
const UNAUTHENTICATED: Outcome = Outcome::Refused(Code::Unauthenticated);
const DENIED: Outcome = Outcome::Refused(Code::PermissionDenied);

/// The gRPC rpcs.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    PushSales,
    PushOnboarding,
    GetBatch,
    GetRollupCells,
    GetNationalSummary,
    ListProvinces,
    GetProvince,
    GetTimeSeries,
    ListIndicatorProgress,
    GetIndicatorProgress,
    GetIndicatorCommunes,
    DashboardCompleteness,
    HealthCheck,
    ListServices,
    ListIndicators,
    ListTargets,
    ListOrgUnits,
    SaveIndicator,
    SetTarget,
    SaveReport,
    ImportReport,
    ExportReport,
    GetReport,
    ListReports,
    GetCompleteness,
    SubmitReport,
    ApproveReport,
    ReturnReport,
    ReopenReport,
}

impl Rpc {
    /// Whether the rpc is the indicators service's.
    fn is_indicators(self) -> bool {
        matches!(
            self,
            Rpc::ListIndicators
                | Rpc::ListTargets
                | Rpc::ListOrgUnits
                | Rpc::SaveIndicator
                | Rpc::SetTarget
                | Rpc::SaveReport
                | Rpc::ImportReport
                | Rpc::ExportReport
                | Rpc::GetReport
                | Rpc::ListReports
                | Rpc::GetCompleteness
                | Rpc::SubmitReport
                | Rpc::ApproveReport
                | Rpc::ReturnReport
                | Rpc::ReopenReport
        )
    }
}

/// A row of the matrix for a protected rpc, by the outcome of each valid credential:
/// the callers whose credential is missing, revoked, expired or signed with another key are
/// always UNAUTHENTICATED, and a service credential addressed to another service always
/// PERMISSION_DENIED, so only the columns that differ between rpcs are written out.
const fn protected(
    partners: Outcome,
    province_officer: Outcome,
    admin: Outcome,
    gateway_service: Outcome,
) -> [Outcome; 10] {
    [
        UNAUTHENTICATED,  // nobody
        partners,         // postmart
        partners,         // voso
        province_officer, // province officer
        admin,            // admin
        UNAUTHENTICATED,  // revoked
        UNAUTHENTICATED,  // expired
        UNAUTHENTICATED,  // signed with another key
        gateway_service,  // the gateway's service credential
        DENIED,           // a service credential addressed to another service
    ]
}

/// Ingest: partners only; a credential that is missing, revoked, expired or not ours is
/// UNAUTHENTICATED, a valid one of another role PERMISSION_DENIED.
const INGEST: [Outcome; 10] = protected(OK, DENIED, DENIED, DENIED);
/// The central working group only (indicators' review, targets and catalogue); a service's
/// own credential never.
const ADMIN_ONLY: [Outcome; 10] = protected(DENIED, DENIED, OK, DENIED);
/// Internal (the audit rpcs): the central working group, and a service's own credential
/// addressed to the marketplace (the gateway's reconciliation); one addressed elsewhere is
/// refused.
const INTERNAL: [Outcome; 10] = protected(DENIED, DENIED, OK, OK);
/// Public: whoever calls, with whatever credential (it is not looked at).
const PUBLIC: [Outcome; 10] = [OK; 10];
/// The indicator catalogue, targets and org units: the plan's public figures and reference
/// data, for any signed-in caller.
const SIGNED_IN: [Outcome; 10] = protected(OK, OK, OK, DENIED);
/// Reporting: provinces (their own province) and the central working group; never partners.
const REPORTING: [Outcome; 10] = protected(DENIED, OK, OK, DENIED);

/// The gRPC matrix. Rows run in order: `GetBatch` reads the batch `PushSales` wrote, the
/// indicator reads and `SubmitReport` the reports `SaveReport` and `ImportReport` wrote.
const GRPC_MATRIX: [(Rpc, [Outcome; 10]); 29] = [
    (Rpc::PushSales, INGEST),
    (Rpc::PushOnboarding, INGEST),
    (Rpc::GetBatch, INGEST),
    (Rpc::GetRollupCells, INTERNAL),
    (Rpc::GetNationalSummary, PUBLIC),
    (Rpc::ListProvinces, PUBLIC),
    (Rpc::GetProvince, PUBLIC),
    (Rpc::GetTimeSeries, PUBLIC),
    (Rpc::ListIndicatorProgress, PUBLIC),
    (Rpc::GetIndicatorProgress, PUBLIC),
    (Rpc::GetIndicatorCommunes, PUBLIC),
    (Rpc::DashboardCompleteness, PUBLIC),
    (Rpc::HealthCheck, PUBLIC),
    (Rpc::ListServices, PUBLIC),
    (Rpc::ListIndicators, SIGNED_IN),
    (Rpc::ListTargets, SIGNED_IN),
    (Rpc::ListOrgUnits, SIGNED_IN),
    (Rpc::SaveIndicator, ADMIN_ONLY),
    (Rpc::SetTarget, ADMIN_ONLY),
    (Rpc::SaveReport, REPORTING),
    (Rpc::ImportReport, REPORTING),
    (Rpc::ExportReport, REPORTING),
    (Rpc::GetReport, REPORTING),
    (Rpc::ListReports, REPORTING),
    (Rpc::GetCompleteness, REPORTING),
    (Rpc::SubmitReport, REPORTING),
    (Rpc::ApproveReport, ADMIN_ONLY),
    (Rpc::ReturnReport, ADMIN_ONLY),
    (Rpc::ReopenReport, ADMIN_ONLY),
];

/// The HTTP matrix: (method, path, expected status for every caller). Everything is public and
/// read-only; there is no way to write over HTTP, for anyone.
const HTTP_MATRIX: [(&str, &str, [u16; 10]); 17] = [
    ("GET", "/", [200; 10]),
    ("GET", "/api/v1/national", [200; 10]),
    ("GET", "/api/v1/provinces", [200; 10]),
    ("GET", "/api/v1/provinces/79", [200; 10]),
    (
        "GET",
        "/api/v1/timeseries?metric=orders&granularity=month&from=2022-01-01&to=2022-12-31",
        [200; 10],
    ),
    ("GET", "/api/v1/indicators", [200; 10]),
    ("GET", "/api/v1/indicators?format=csv", [200; 10]),
    ("GET", "/api/v1/completeness?period=202611", [200; 10]),
    ("GET", "/api/v1/completeness?format=csv", [200; 10]),
    // The catalogue the indicators service seeded (the matrix waits for it): public.
    ("GET", "/api/v1/indicators/HH_ONBOARDED", [200; 10]),
    (
        "GET",
        "/api/v1/indicators/SALES_VALUE?province=79",
        [200; 10],
    ),
    ("GET", "/api/v1/indicators/NO_SUCH", [404; 10]),
    // The admin routes live on the admin listener only: the public port has none of them.
    ("GET", "/healthz", [404; 10]),
    ("GET", "/readyz", [404; 10]),
    ("GET", "/metrics", [404; 10]),
    ("POST", "/api/v1/national", [405; 10]),
    ("DELETE", "/api/v1/provinces/79", [405; 10]),
];

/// Every caller's credential.
struct Credentials {
    tokens: Vec<(Who, Option<String>)>,
}

impl Credentials {
    async fn new(app: &TestApp) -> Credentials {
        let partner = |p: &str| Role::Partner { partner: p.into() };
        let (revoked, claims) = app
            .ctx
            .auth
            .mint(partner("postmart"), Duration::from_secs(3600))
            .expect("mint");
        app.ctx
            .auth
            .revoke(&claims.id, Some(claims.exp))
            .await
            .expect("revoke");
        let (expired, _) = app
            .ctx
            .auth
            .mint(partner("postmart"), Duration::ZERO)
            .expect("mint");
        let (foreign, _) = support::foreign_authenticator()
            .mint(partner("postmart"), Duration::from_secs(3600))
            .expect("mint");
        let service = |audience: &str| {
            let ttl = Duration::from_secs(3600);
            let minted = app.ctx.auth.mint_service("gateway", audience, ttl);
            minted.expect("mint").0
        };
        let tokens = WHO
            .iter()
            .map(|who| {
                let token = match who {
                    Who::Nobody => None,
                    Who::Postmart => Some(app.token(partner("postmart"))),
                    Who::Voso => Some(app.token(partner("voso"))),
                    Who::Province => Some(app.token(Role::Province {
                        province: "79".into(),
                    })),
                    Who::Admin => Some(app.token(Role::Admin)),
                    Who::Revoked => Some(revoked.clone()),
                    Who::Expired => Some(expired.clone()),
                    Who::Foreign => Some(foreign.clone()),
                    Who::Gateway => Some(service("marketplace")),
                    Who::Misaddressed => Some(service("indicators")),
                };
                (*who, token)
            })
            .collect();
        Credentials { tokens }
    }
}

fn sales_batch(who: Who) -> pb::PushSalesRequest {
    pb::PushSalesRequest {
        batch_id: format!("authz-sales-{who}"),
        records: vec![pb::SalesRecord {
            record_id: format!("authz-{who}"),
            sale_date: "2022-03-10".into(),
            province_code: "79".into(),
            commune_code: String::new(),
            category: "fruit".into(),
            quantity_grams: 1_000,
            value_vnd: 10_000,
            orders: 1,
            household_ref: String::new(),
        }],
    }
}

fn onboarding_batch(batch_id: &str, household: &str) -> pb::PushOnboardingRequest {
    pb::PushOnboardingRequest {
        batch_id: batch_id.into(),
        records: vec![pb::OnboardingRecord {
            household_ref: household.into(),
            province_code: "79".into(),
            commune_code: String::new(),
            registered_on: "2021-09-01".into(),
            status: HouseholdStatus::Active as i32,
            categories: vec!["fruit".into()],
            listed_products: None,
            has_digital_address: None,
        }],
    }
}

/// Calls `rpc` as `who`; `Ok` when it worked (and its answer is what that rpc should answer).
async fn call(app: &TestApp, rpc: Rpc, who: Who, token: Option<&str>) -> Result<(), tonic::Status> {
    let credential = token.map_or(Credential::None, |t| Credential::Bearer(t.to_string()));
    let bearer = Caller::new(credential, Duration::from_secs(10)).expect("caller");
    let mut ingest = app.client_with(token).await;
    let mut dashboard = gpb::dashboard_client::DashboardClient::with_interceptor(
        channel(app).await,
        bearer.clone(),
    );
    match rpc {
        Rpc::PushSales => {
            let result = ingest.push_sales(sales_batch(who)).await?.into_inner();
            assert_eq!(result.accepted, 1, "{who}: {result:?}");
        }
        Rpc::PushOnboarding => {
            let id = format!("authz-onboarding-{who}");
            let result = ingest
                .push_onboarding(onboarding_batch(&id, &format!("authz-{who}")))
                .await?
                .into_inner();
            assert_eq!(result.accepted, 1, "{who}: {result:?}");
        }
        Rpc::GetBatch => {
            let result = ingest
                .get_batch(pb::GetBatchRequest {
                    batch_id: format!("authz-sales-{who}"),
                })
                .await?
                .into_inner();
            assert_eq!(result.batch_id, format!("authz-sales-{who}"));
        }
        Rpc::GetRollupCells => {
            let mut audit = pb::marketplace_audit_client::MarketplaceAuditClient::with_interceptor(
                channel(app).await,
                bearer.clone(),
            );
            let cells = audit
                .get_rollup_cells(pb::GetRollupCellsRequest {
                    partner: agriportal_platform::reference::Partner::Postmart.to_proto() as i32,
                    kind: pb::RollupKind::Sales as i32,
                    province_code: String::new(),
                })
                .await?
                .into_inner();
            // Postmart's one line, pushed by the first row.
            assert_eq!(cells.provinces.len(), 1, "{who}: {cells:?}");
        }
        Rpc::GetNationalSummary => {
            let summary = dashboard
                .get_national_summary(gpb::GetNationalSummaryRequest {})
                .await?
                .into_inner();
            assert_eq!(summary.households.map(|h| h.target), Some(5_000_000));
        }
        Rpc::ListProvinces => {
            let list = dashboard
                .list_provinces(gpb::ListProvincesRequest {})
                .await?
                .into_inner();
            assert_eq!(list.provinces.len(), 34);
        }
        Rpc::GetProvince => {
            let province = dashboard
                .get_province(gpb::GetProvinceRequest { code: "79".into() })
                .await?
                .into_inner();
            assert_eq!(province.code, "79");
        }
        Rpc::GetTimeSeries => {
            let series = dashboard
                .get_time_series(gpb::GetTimeSeriesRequest {
                    metric: "orders".into(),
                    granularity: "month".into(),
                    from: "2022-01-01".into(),
                    to: "2022-12-31".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            assert_eq!(series.points.len(), 12);
        }
        Rpc::ListIndicatorProgress => {
            dashboard
                .list_indicator_progress(gpb::ListIndicatorProgressRequest::default())
                .await?;
        }
        Rpc::GetIndicatorProgress => {
            // Public: answered alike for every caller (NOT_FOUND only if the catalogue has not
            // reached the gateway yet); what matters here is that no caller is refused.
            let answer = dashboard
                .get_indicator_progress(gpb::GetIndicatorProgressRequest {
                    code: "HH_ONBOARDED".into(),
                    ..Default::default()
                })
                .await;
            match answer {
                Err(status) if status.code() == Code::NotFound => {}
                other => {
                    other?;
                }
            }
        }
        Rpc::GetIndicatorCommunes => {
            // Public like GetIndicatorProgress (NOT_FOUND only before the catalogue arrives).
            let answer = dashboard
                .get_indicator_communes(gpb::GetIndicatorCommunesRequest {
                    code: "SALES_VALUE".into(),
                    period: String::new(),
                    province: "79".into(),
                })
                .await;
            match answer {
                Err(status) if status.code() == Code::NotFound => {}
                other => {
                    assert_eq!(other?.into_inner().communes.len(), 168, "{who}");
                }
            }
        }
        Rpc::DashboardCompleteness => {
            let c = dashboard
                .get_completeness(gpb::GetCompletenessRequest {
                    period: "202611".into(),
                })
                .await?
                .into_inner();
            assert_eq!(c.provinces.len(), 34);
        }
        Rpc::HealthCheck => {
            let mut health = tonic_health::pb::health_client::HealthClient::with_interceptor(
                channel(app).await,
                bearer,
            );
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "agriportal.marketplace.v1.MarketplaceIngest".into(),
                })
                .await?
                .into_inner()
                .status;
            assert_eq!(
                status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            );
        }
        Rpc::ListServices => {
            // `ServerReflectionRequest { list_services: "" }`, field 7, by hand: the
            // reflection client types are not a dependency of this crate.
            let answer = raw_unary(
                app,
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                token,
                vec![0x3a, 0x00],
            )
            .await?;
            let text = String::from_utf8_lossy(&answer);
            for service in [
                "agriportal.marketplace.v1.MarketplaceIngest",
                "agriportal.marketplace.v1.MarketplaceAudit",
                "agriportal.gateway.v1.Dashboard",
                "agriportal.indicators.v1.Indicators",
                "grpc.health.v1.Health",
            ] {
                assert!(text.contains(service), "{who}: {text:?}");
            }
        }
        _ => indicators_call(app, rpc, who, token).await?,
    }
    Ok(())
}

/// The report a caller works on: the province officer's own (Hồ Chí Minh City), the admin's
/// another province's, so the two never meet in one report's workflow.
fn report_of(who: Who) -> pb_ind::ReportRef {
    let province = if who == Who::Admin { "01" } else { "79" };
    pb_ind::ReportRef {
        province_code: province.into(),
        period: open_month(),
    }
}

fn value(code: &str, value: &str) -> pb_ind::ValueInput {
    pb_ind::ValueInput {
        indicator_code: code.into(),
        value: value.into(),
        comment: String::new(),
    }
}

/// An indicators rpc as `who`. The admin's review rows first bring a report of their own (a
/// province no other row uses) to the state the rpc needs.
async fn indicators_call(
    app: &TestApp,
    rpc: Rpc,
    who: Who,
    token: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut c = indicators_client(app, token).await;
    let mine = report_of(who);
    let review = |province: &str| pb_ind::ReviewRequest {
        province_code: province.into(),
        period: open_month(),
        comment: "authz".into(),
    };
    let to_review = |province: &str| pb_ind::ReportRef {
        province_code: province.into(),
        period: open_month(),
    };
    async fn prepare(c: &mut IndicatorsTestClient, r: &pb_ind::ReportRef) {
        c.save_report(pb_ind::SaveReportRequest {
            province_code: r.province_code.clone(),
            period: r.period.clone(),
            values: vec![value("TRAINED_HH", "7")],
        })
        .await
        .expect("save");
        c.submit_report(r.clone()).await.expect("submit");
    }
    match rpc {
        Rpc::ListIndicators => {
            let list = c
                .list_indicators(pb_ind::ListIndicatorsRequest {})
                .await?
                .into_inner();
            assert_eq!(list.indicators.len(), 18, "{who}");
        }
        Rpc::ListTargets => {
            c.list_targets(pb_ind::ListTargetsRequest::default())
                .await?;
        }
        Rpc::ListOrgUnits => {
            let units = c
                .list_org_units(pb_ind::ListOrgUnitsRequest {
                    parent: "south".into(),
                    level: pb_ind::OrgUnitLevel::Province as i32,
                })
                .await?
                .into_inner();
            assert!(
                units.org_units.iter().any(|u| u.code == "79"),
                "{who}: {units:?}"
            );
        }
        Rpc::SaveIndicator => {
            let mut indicator = app_indicator(app, "TRAINED_HH").await;
            indicator.name_en = "Households trained in digital skills".into();
            let saved = c
                .save_indicator(pb_ind::SaveIndicatorRequest {
                    indicator: Some(indicator),
                })
                .await?
                .into_inner();
            assert_eq!(saved.revision, 2, "{who}");
        }
        Rpc::SetTarget => {
            c.set_target(pb_ind::SetTargetRequest {
                indicator_code: "TRAINED_HH".into(),
                year: 2026,
                province_code: String::new(),
                value: "1000000".into(),
            })
            .await?;
        }
        Rpc::SaveReport => {
            let saved = c
                .save_report(pb_ind::SaveReportRequest {
                    province_code: mine.province_code.clone(),
                    period: mine.period.clone(),
                    values: vec![value("TRAINED_HH", "12")],
                })
                .await?
                .into_inner();
            assert!(saved.rejections.is_empty(), "{who}: {saved:?}");
        }
        Rpc::ImportReport => {
            let file = format!(
                "province_code,period,indicator_code,value\n{},{},EPAY_HH,5\n",
                mine.province_code, mine.period
            );
            let result = c
                .import_report(pb_ind::ImportReportRequest {
                    content: file.into_bytes(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            assert!(result.stored, "{who}: {result:?}");
        }
        Rpc::ExportReport => {
            let file = c.export_report(mine.clone()).await?.into_inner();
            assert!(file.content.starts_with(b"\xEF\xBB\xBF"), "{who}");
        }
        Rpc::GetReport => {
            let report = c.get_report(mine.clone()).await?.into_inner();
            assert_eq!(report.values.len(), 2, "{who}: {report:?}");
        }
        Rpc::ListReports => {
            let list = c
                .list_reports(pb_ind::ListReportsRequest::default())
                .await?
                .into_inner();
            let expected = if who == Who::Admin { 2 } else { 1 };
            assert_eq!(list.reports.len(), expected, "{who}: {list:?}");
        }
        Rpc::GetCompleteness => {
            let list = c
                .get_completeness(pb_ind::GetCompletenessRequest {
                    period: open_month(),
                })
                .await?
                .into_inner();
            assert_eq!(list.provinces.len(), 34, "{who}");
        }
        Rpc::SubmitReport => {
            let report = c.submit_report(mine.clone()).await?.into_inner();
            assert_eq!(report.state(), pb_ind::ReportState::Submitted, "{who}");
        }
        Rpc::ApproveReport => {
            if who == Who::Admin {
                prepare(&mut c, &to_review("04")).await;
            }
            let report = c.approve_report(review("04")).await?.into_inner();
            assert_eq!(report.state(), pb_ind::ReportState::Approved, "{who}");
        }
        Rpc::ReturnReport => {
            if who == Who::Admin {
                prepare(&mut c, &to_review("08")).await;
            }
            let report = c.return_report(review("08")).await?.into_inner();
            assert_eq!(report.state(), pb_ind::ReportState::Returned, "{who}");
        }
        Rpc::ReopenReport => {
            if who == Who::Admin {
                prepare(&mut c, &to_review("11")).await;
                c.approve_report(review("11")).await.expect("approve");
            }
            let report = c.reopen_report(review("11")).await?.into_inner();
            assert_eq!(report.version, 2, "{who}");
        }
        _ => unreachable!("{rpc:?} is not an indicators rpc"),
    }
    Ok(())
}

/// An indicator of the catalogue, read with an admin token.
async fn app_indicator(app: &TestApp, code: &str) -> pb_ind::Indicator {
    let token = app.token(Role::Admin);
    indicators_client(app, Some(&token))
        .await
        .list_indicators(pb_ind::ListIndicatorsRequest {})
        .await
        .expect("catalogue")
        .into_inner()
        .indicators
        .into_iter()
        .find(|i| i.code == code)
        .expect("indicator")
}

async fn matrix(mode: Mode) {
    let Some(app) = spawn_app(mode, "authz_matrix").await else {
        return;
    };
    let credentials = Credentials::new(&app).await;
    let mut failures = Vec::new();
    for (rpc, row) in GRPC_MATRIX {
        for ((who, token), expected) in credentials.tokens.iter().zip(row) {
            let got = match call(&app, rpc, *who, token.as_deref()).await {
                Ok(()) => Outcome::Allowed,
                Err(status) => {
                    // A refusal says why, in words a partner's engineer can act on.
                    if status.code() == Code::Unauthenticated {
                        let why = status.message();
                        let named = match who {
                            Who::Nobody => why.contains("missing"),
                            Who::Revoked => why.contains("revoked"),
                            Who::Expired => why.contains("expired"),
                            // Another key under our key id, or an id we do not know.
                            Who::Foreign => {
                                why.contains("signature") || why.contains("unknown key id")
                            }
                            _ => true,
                        };
                        assert!(named, "{rpc:?} as {who}: {why}");
                    }
                    if status.code() == Code::PermissionDenied {
                        let role = if matches!(who, Who::Gateway | Who::Misaddressed) {
                            "service"
                        } else if matches!(rpc, Rpc::GetRollupCells) || rpc.is_indicators() {
                            "admin"
                        } else {
                            "partner"
                        };
                        assert!(status.message().contains(role), "{status:?}");
                    }
                    Outcome::Refused(status.code())
                }
            };
            if got != expected {
                failures.push(format!(
                    "{rpc:?} as {who}: expected {expected:?}, got {got:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The gateway learns the catalogue from the indicators service's events: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.get("/api/v1/indicators/HH_ONBOARDED").await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the catalogue never reached the gateway"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let web = reqwest::Client::new();
    for (method, path, row) in HTTP_MATRIX {
        for ((who, token), expected) in credentials.tokens.iter().zip(row) {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let mut request = web.request(method.clone(), format!("http://{}{path}", app.http));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let status = request.send().await.expect("http").status().as_u16();
            if status != expected {
                failures.push(format!(
                    "{method} {path} as {who}: expected {expected}, got {status}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Refused cells stored nothing: only the two partners' own batches exist, and the totals
    // are theirs alone.
    let (batches, sales, households) = stored(&app).await;
    let mut expected: Vec<(String, String)> = Vec::new();
    for who in [Who::Postmart, Who::Voso] {
        for kind in ["onboarding", "sales"] {
            expected.push((who.to_string(), format!("authz-{kind}-{who}")));
        }
    }
    assert_eq!(batches, expected);
    assert_eq!((sales, households), (2, 2));
    app.wait_national(|n| {
        n["sales"]["grams"] == 2_000
            && n["sales"]["by_partner"]["postmart"]["grams"] == 1_000
            && n["households"]["onboarded"] == 2
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn every_rpc_and_route_against_every_caller_embedded() {
    matrix(Mode::Embedded).await;
}

#[tokio::test]
async fn every_rpc_and_route_against_every_caller_on_postgres_and_jetstream() {
    matrix(Mode::Distributed).await;
}

/// Partner B can neither read nor change partner A's batches and records: batch ids and
/// record keys are each partner's own namespace.
async fn isolation(mode: Mode) {
    let Some(app) = spawn_app(mode, "authz_isolation").await else {
        return;
    };
    let mut postmart = app.partner("postmart").await;
    let mut voso = app.partner("voso").await;
    let record = |grams: i64| pb::SalesRecord {
        record_id: "shared-1".into(),
        sale_date: "2022-03-10".into(),
        province_code: "01".into(),
        commune_code: String::new(),
        category: "fruit".into(),
        quantity_grams: grams,
        value_vnd: grams * 10,
        orders: 1,
        household_ref: String::new(),
    };
    let batch = |id: &str, grams: i64| pb::PushSalesRequest {
        batch_id: id.into(),
        records: vec![record(grams)],
    };
    let a = postmart
        .push_sales(batch("iso-1", 100))
        .await
        .expect("A pushes")
        .into_inner();
    assert_eq!(a.accepted, 1);
    postmart
        .push_onboarding(onboarding_batch("iso-h", "hh-shared"))
        .await
        .expect("A onboards");

    // B asking for A's batch learns nothing: the same answer as for a batch nobody pushed.
    let theirs = voso
        .get_batch(pb::GetBatchRequest {
            batch_id: "iso-1".into(),
        })
        .await
        .expect_err("not B's");
    let nobodys = voso
        .get_batch(pb::GetBatchRequest {
            batch_id: "iso-0".into(),
        })
        .await
        .expect_err("nobody's");
    assert_eq!(theirs.code(), Code::NotFound);
    assert_eq!(
        theirs.message().replace("iso-1", "ID"),
        nobodys.message().replace("iso-0", "ID")
    );

    // B reusing A's batch id and record key makes B's own batch and record.
    let b = voso
        .push_sales(batch("iso-1", 7))
        .await
        .expect("B's own iso-1")
        .into_inner();
    assert_eq!((b.accepted, b.corrected, b.unchanged), (1, 0, 0), "{b:?}");
    let b = voso
        .push_onboarding(onboarding_batch("iso-h", "hh-shared"))
        .await
        .expect("B's own household")
        .into_inner();
    assert_eq!(b.accepted, 1, "{b:?}");
    // B correcting "its" record changes only its own.
    let b = voso
        .push_sales(batch("iso-2", 9))
        .await
        .expect("B corrects its own")
        .into_inner();
    assert_eq!(b.corrected, 1, "{b:?}");

    // A's batch and figures are as A left them.
    let again = postmart
        .get_batch(pb::GetBatchRequest {
            batch_id: "iso-1".into(),
        })
        .await
        .expect("A's batch")
        .into_inner();
    assert_eq!(again, a);
    app.wait_national(|n| {
        let by = &n["sales"]["by_partner"];
        by["postmart"]["grams"] == 100
            && by["voso"]["grams"] == 9
            && n["sales"]["grams"] == 109
            && n["households"]["by_partner"]["postmart"] == 1
            && n["households"]["by_partner"]["voso"] == 1
    })
    .await;
    let db = app.ctx.database("marketplace").await.expect("db");
    let rows: Vec<(String, i64)> = agriportal_platform::with_db!(&db.pool, |pool| {
        sqlx::query_as(
            "SELECT partner, quantity_grams FROM sales_records WHERE record_id = 'shared-1' ORDER BY partner",
        )
        .fetch_all(pool)
        .await
        .expect("records")
    });
    assert_eq!(
        rows,
        [("postmart".to_string(), 100), ("voso".to_string(), 9)]
    );
    app.stop().await;
}

#[tokio::test]
async fn partners_never_read_or_change_each_others_batches_embedded() {
    isolation(Mode::Embedded).await;
}

#[tokio::test]
async fn partners_never_read_or_change_each_others_batches_on_postgres_and_jetstream() {
    isolation(Mode::Distributed).await;
}
