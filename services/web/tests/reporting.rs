//! The reporting pages against a stand-in indicators service: the official's own token reaches
//! the service on every call (the web adds no credential of its own), a refused value comes
//! back beside its field with `422`, an accepted save redirects (`303`) and sends the decimal
//! typed with a comma as `12.5`, and the service's PERMISSION_DENIED is the 403 page.

// A test crate: helpers as well as tests fail by panicking (clippy.toml allows it only inside
// #[test] functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agriportal_platform::auth::{Authenticator, Role};
use agriportal_platform::client::{self, ClientOptions, Credential};
use agriportal_platform::storage::Database;
use agriportal_platform::Config;
use agriportal_proto::indicators::v1 as ipb;
use agriportal_proto::indicators::v1::indicators_server::{Indicators, IndicatorsServer};
use agriportal_web::backend::Backend;
use agriportal_web::config::WebConfig;
use agriportal_web::http::{router, Web};
use agriportal_web::session::{self, Sessions};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tonic::{Response, Status};
use tower::ServiceExt;

type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// Answers like the indicators service would for province 79, and notes each call's
/// `authorization` and what was saved.
#[derive(Clone, Default)]
struct Fake {
    seen: Seen,
}

impl Fake {
    fn note<T>(&self, request: &tonic::Request<T>, what: String) {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.seen.lock().unwrap().push((auth, what));
    }
}

fn indicator(code: &str, name: &str) -> ipb::Indicator {
    ipb::Indicator {
        code: code.into(),
        name_vi: name.into(),
        name_en: name.into(),
        unit: "households".into(),
        period_type: ipb::PeriodType::Month as i32,
        source: ipb::Source::Province as i32,
        value_type: ipb::ValueType::Integer as i32,
        ..Default::default()
    }
}

fn draft(period: &str) -> ipb::Report {
    ipb::Report {
        province_code: "79".into(),
        period: period.into(),
        state: ipb::ReportState::Draft as i32,
        version: 1,
        deadline: "2026-12-05".into(),
        ..Default::default()
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Indicators for Fake {
    async fn list_indicators(
        &self,
        r: tonic::Request<ipb::ListIndicatorsRequest>,
    ) -> R<ipb::ListIndicatorsResponse> {
        self.note(&r, "list".into());
        Ok(Response::new(ipb::ListIndicatorsResponse {
            indicators: vec![
                indicator("TRAINED_HH", "Hộ được đào tạo"),
                indicator("EPAY_HH", "Hộ thanh toán điện tử"),
            ],
        }))
    }
    async fn save_indicator(
        &self,
        _: tonic::Request<ipb::SaveIndicatorRequest>,
    ) -> R<ipb::Indicator> {
        Err(Status::unimplemented("fake"))
    }
    async fn set_target(&self, _: tonic::Request<ipb::SetTargetRequest>) -> R<ipb::Target> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_targets(
        &self,
        _: tonic::Request<ipb::ListTargetsRequest>,
    ) -> R<ipb::ListTargetsResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn save_report(
        &self,
        r: tonic::Request<ipb::SaveReportRequest>,
    ) -> R<ipb::SaveReportResponse> {
        let values: Vec<String> = r
            .get_ref()
            .values
            .iter()
            .map(|v| format!("{}={}", v.indicator_code, v.value))
            .collect();
        self.note(&r, format!("save {}", values.join(",")));
        let rejections = r
            .get_ref()
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.value.starts_with('-'))
            .map(|(i, v)| ipb::Rejection {
                index: i as u32,
                indicator_code: v.indicator_code.clone(),
                reason: "must be at least 0".into(),
            })
            .collect();
        Ok(Response::new(ipb::SaveReportResponse {
            report: Some(draft(&r.get_ref().period)),
            rejections,
        }))
    }
    async fn submit_report(&self, r: tonic::Request<ipb::ReportRef>) -> R<ipb::Report> {
        self.note(&r, "submit".into());
        Ok(Response::new(draft(&r.get_ref().period)))
    }
    async fn approve_report(&self, _: tonic::Request<ipb::ReviewRequest>) -> R<ipb::Report> {
        Err(Status::unimplemented("fake"))
    }
    async fn return_report(&self, _: tonic::Request<ipb::ReviewRequest>) -> R<ipb::Report> {
        Err(Status::unimplemented("fake"))
    }
    async fn reopen_report(&self, _: tonic::Request<ipb::ReviewRequest>) -> R<ipb::Report> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_report(&self, r: tonic::Request<ipb::ReportRef>) -> R<ipb::Report> {
        let period = r.get_ref().period.clone();
        self.note(&r, format!("get {period}"));
        match period.as_str() {
            "202611" => Ok(Response::new(draft("202611"))),
            "202609" => Err(Status::permission_denied("not yours")),
            _ => Err(Status::not_found("no report")),
        }
    }
    async fn list_reports(
        &self,
        _: tonic::Request<ipb::ListReportsRequest>,
    ) -> R<ipb::ListReportsResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_completeness(
        &self,
        _: tonic::Request<ipb::GetCompletenessRequest>,
    ) -> R<ipb::GetCompletenessResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn import_report(
        &self,
        _: tonic::Request<ipb::ImportReportRequest>,
    ) -> R<ipb::ImportReportResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn export_report(
        &self,
        _: tonic::Request<ipb::ReportRef>,
    ) -> R<ipb::ExportReportResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_org_units(
        &self,
        _: tonic::Request<ipb::ListOrgUnitsRequest>,
    ) -> R<ipb::ListOrgUnitsResponse> {
        Err(Status::unimplemented("fake"))
    }
}

struct Harness {
    app: axum::Router,
    cookie: String,
    csrf: String,
    token: String,
    seen: Seen,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let fake = Fake::default();
    let seen = fake.seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IndicatorsServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let db = Database::connect(&Config::embedded(dir.path()), "web")
        .await
        .unwrap();
    db.migrate(&agriportal_web::migrations()).await.unwrap();
    let signer = agriportal_platform::keys::Signer::from_seed("k1", &[3u8; 32]).unwrap();
    let auth = Authenticator::signing(signer, None).unwrap();
    let options = ClientOptions {
        deadline: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    // No gateway answers here: the entry form is served without its context figures.
    let gateway = client::connect("http://127.0.0.1:9", Credential::None, options).unwrap();
    let indicators = client::connect(&format!("http://{addr}"), Credential::None, options).unwrap();
    let sessions = Sessions::new(db, Duration::from_secs(600), Duration::from_secs(3600));
    let (token, _) = auth
        .mint(
            Role::Province {
                province: "79".into(),
            },
            Duration::from_secs(3600),
        )
        .unwrap();
    let (principal, not_after) = session::principal_from_token(&auth, &token).await.unwrap();
    let id = sessions.open(&principal, &token, not_after).await.unwrap();
    let session::Found::Live(live) = sessions.find(&id, &auth).await.unwrap() else {
        panic!("the session just opened is live");
    };
    let config = WebConfig {
        gateway_url: None,
        web_indicators_url: None,
        web_session_idle_minutes: 30,
        web_session_max_hours: 12,
        web_secure: false,
        web_public_url: None,
    };
    let web = Arc::new(Web {
        backend: Backend::new(gateway, Some(indicators)),
        sessions,
        auth,
        config,
    });
    Harness {
        app: router(web),
        cookie: format!("ap_session={id}"),
        csrf: live.csrf,
        token,
        seen,
        _dir: dir,
    }
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> (StatusCode, String, String) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            location,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, String, String) {
        self.send(
            Request::get(path)
                .header("cookie", &self.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String, String) {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        self.send(
            Request::post(path)
                .header("cookie", &self.cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(body.join("&")))
                .unwrap(),
        )
        .await
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn the_entry_form_speaks_to_the_indicators_service_as_the_official() {
    let h = harness().await;
    let (status, _, body) = h.get("/reports/79/202611").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#"id="v-TRAINED_HH""#) && body.contains("Lưu nháp"));
    assert!(!body.contains(&h.token), "the token never reaches the page");
    // Every call carried the official's own token, and nothing else.
    let expected = format!("Bearer {}", h.token);
    assert!(h
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|(auth, _)| *auth == expected));
    assert!(
        h.seen
            .lock()
            .unwrap()
            .iter()
            .any(|(_, what)| what == "get 202610"),
        "last period's report"
    );

    // A value the service refuses comes back beside its field, kept; the valid one is sent too.
    let (status, _, body) = h
        .post(
            "/reports/79/202611",
            &[
                ("csrf", &h.csrf),
                ("action", "submit"),
                ("v_TRAINED_HH", "-4"),
                ("o_TRAINED_HH", ""),
                ("v_EPAY_HH", "1 234"),
                ("o_EPAY_HH", ""),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.contains(r##"href="#v-TRAINED_HH""##),
        "the summary links the field"
    );
    assert!(body.contains(r#"aria-invalid="true""#));
    assert!(body.contains("must be at least 0"));
    assert!(body.contains(r#"name="v_TRAINED_HH" value="-4""#));
    {
        let seen = h.seen.lock().unwrap();
        assert!(
            seen.iter()
                .any(|(_, w)| w == "save TRAINED_HH=-4,EPAY_HH=1234"),
            "{seen:?}"
        );
        assert!(
            !seen.iter().any(|(_, w)| w == "submit"),
            "not submitted while refused"
        );
    }

    // A decimal comma is sent with a point; an accepted save redirects back to the form.
    let (status, location, _) = h
        .post(
            "/reports/79/202611",
            &[
                ("csrf", &h.csrf),
                ("action", "save"),
                ("v_TRAINED_HH", "12,5"),
                ("o_TRAINED_HH", ""),
                ("v_EPAY_HH", "7"),
                ("o_EPAY_HH", "7"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/reports/79/202611?done=saved");
    assert!(
        h.seen
            .lock()
            .unwrap()
            .iter()
            .any(|(_, w)| w == "save TRAINED_HH=12.5"),
        "only the changed value, with a point"
    );

    // Submitting with nothing refused submits, and redirects.
    let (status, location, _) = h
        .post(
            "/reports/79/202611",
            &[("csrf", &h.csrf), ("action", "submit")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/reports/79/202611?done=submitted");

    // The service's PERMISSION_DENIED is the 403 page; a report it does not have is a new one.
    let (status, _, body) = h.get("/reports/79/202609").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("Không được phép"));
    let (status, _, body) = h.get("/reports/79/202608").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Chưa bắt đầu"));
    // Without the form's token nothing reaches the service.
    let before = h.seen.lock().unwrap().len();
    let (status, _, _) = h
        .post(
            "/reports/79/202611",
            &[("action", "save"), ("v_TRAINED_HH", "1")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(h.seen.lock().unwrap().len(), before);
}
