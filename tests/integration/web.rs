//! The web front end over HTTP, as a browser without JavaScript sees it: languages, headers,
//! caching, redirects, CSV downloads, sign-in with sessions and CSRF, and pages that stay up
//! when the gateway does not answer. (The pages in a real browser, with axe-core, are in
//! `browser.rs`.)

use std::time::{Duration, Instant};

use agriportal_platform::auth::Role;
use agriportal_platform::kit::{self, Listeners};
use agriportal_platform::storage::Database;
use agriportal_platform::with_db;
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::marketplace::v1 as pb;
use agriportal_web::Web;
use reqwest::header;
use reqwest::redirect::Policy;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{config_on, spawn_app, Mode, TestApp};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// Figures for the pages: households in two provinces, a few sales lines.
async fn seed(app: &TestApp) {
    let mut postmart = app.partner("postmart").await;
    let households = (0..6)
        .map(|i| pb::OnboardingRecord {
            household_ref: format!("h{i}"),
            province_code: if i < 4 { "79" } else { "01" }.into(),
            commune_code: String::new(),
            registered_on: "2026-11-01".into(),
            status: HouseholdStatus::Active as i32,
            categories: vec!["fruit".into()],
            listed_products: None,
            has_digital_address: None,
        })
        .collect();
    postmart
        .push_onboarding(pb::PushOnboardingRequest {
            batch_id: "web-h".into(),
            records: households,
        })
        .await
        .expect("onboarding");
    let today = agriportal_marketplace::domain::today_in_vietnam();
    let lines = (0..3)
        .map(|i| pb::SalesRecord {
            record_id: format!("s{i}"),
            sale_date: (today - time::Duration::days(i)).to_string(),
            province_code: "79".into(),
            commune_code: String::new(),
            category: "fruit".into(),
            quantity_grams: 1_500_000,
            value_vnd: 1_234_567,
            orders: 3,
            household_ref: String::new(),
        })
        .collect();
    postmart
        .push_sales(pb::PushSalesRequest {
            batch_id: "web-s".into(),
            records: lines,
        })
        .await
        .expect("sales");
    app.wait_national(|n| n["households"]["onboarded"] == 6 && n["sales"]["orders"] == 9)
        .await;
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(format!("http://{}{path}", app.http));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("GET")
}

async fn text(response: reqwest::Response) -> String {
    response.text().await.expect("body")
}

#[tokio::test]
async fn pages_speak_vietnamese_first_and_english_on_request() {
    let Some(app) = spawn_app(Mode::Embedded, "web_lang").await else {
        return;
    };
    seed(&app).await;
    // No preference: Vietnamese, with Vietnamese numbers.
    let home = text(get(&app, "/", &[]).await).await;
    assert!(home.contains("<html lang=\"vi\">"), "{home}");
    assert!(home.contains("Hộ đã lên sàn") && home.contains("5.000.000"));
    assert!(
        !home.contains("http-equiv=\"refresh\""),
        "no page reloads itself"
    );
    // The browser's language when it asks for English.
    let en = text(get(&app, "/", &[("accept-language", "en-GB,en;q=0.9")]).await).await;
    assert!(en.contains("<html lang=\"en\">") && en.contains("5,000,000"));
    // ?lang= wins, and is remembered in a cookie.
    let chosen = get(&app, "/dashboard?lang=en", &[("accept-language", "vi")]).await;
    let cookie = chosen
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("ap_lang="))
        .expect("language cookie")
        .to_string();
    assert!(cookie.starts_with("ap_lang=en") && cookie.contains("SameSite=Lax"));
    assert!(text(chosen).await.contains("<html lang=\"en\">"));
    let remembered = text(get(&app, "/", &[("cookie", "ap_lang=en")]).await).await;
    assert!(remembered.contains("<html lang=\"en\">"));
    // The switch links to the same page in the other language.
    assert!(home.contains("href=\"/?lang=en\""), "{home}");
    // Times in Vietnam's time zone, never raw RFC 3339.
    assert!(home.contains("Cập nhật lúc"), "{home}");
    assert!(!home.contains("T0") || !home.contains("+00:00"));
    app.stop().await;
}

#[tokio::test]
async fn headers_caching_redirects_and_errors() {
    let Some(app) = spawn_app(Mode::Embedded, "web_headers").await else {
        return;
    };
    seed(&app).await;
    let home = get(&app, "/", &[]).await;
    assert_eq!(home.status(), 200);
    let h = home.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(h.contains_key("referrer-policy"));
    assert!(
        !h.contains_key("strict-transport-security"),
        "no HSTS on plain HTTP"
    );
    let etag = h["etag"].to_str().unwrap().to_string();
    assert!(h["cache-control"].to_str().unwrap().contains("max-age"));
    let again = get(&app, "/", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status(), 304);
    // The widget is the one page any origin may frame.
    let widget = get(&app, "/embed/province/79", &[]).await;
    assert_eq!(widget.status(), 200);
    let csp = widget.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("frame-ancestors *"), "{csp}");
    assert!(!widget.headers().contains_key("x-frame-options"));
    // A pre-2025 code finds the province it merged into, permanently.
    let old = get(&app, "/provinces/77", &[]).await;
    assert_eq!(old.status(), 308);
    let to = old.headers()["location"].to_str().unwrap().to_string();
    assert!(
        to.starts_with("/provinces/") && to != "/provinces/77",
        "{to}"
    );
    assert_eq!(get(&app, &to, &[]).await.status(), 200);
    // Errors are pages in the reader's language, never a stack trace.
    let missing = get(&app, "/provinces/999", &[]).await;
    assert_eq!(missing.status(), 404);
    assert!(text(missing).await.contains("Không tìm thấy trang"));
    let missing = get(&app, "/nope", &[("cookie", "ap_lang=en")]).await;
    assert_eq!(missing.status(), 404);
    assert!(text(missing).await.contains("Page not found"));
    // The API's own errors stay JSON under /api.
    let api = get(&app, "/api/v9", &[]).await;
    assert_eq!(api.status(), 404);
    assert!(api.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("json"));
    // No GET changes state: sign-out is POST only.
    assert_eq!(get(&app, "/signout", &[]).await.status(), 405);
    // Assets under hashed names, cached for a year; anything else is not there.
    let page = text(get(&app, "/", &[]).await).await;
    let css = page
        .split("href=\"")
        .find_map(|s| s.strip_prefix("/static/style."))
        .and_then(|s| s.split('"').next())
        .expect("stylesheet link");
    let asset = get(&app, &format!("/static/style.{css}"), &[]).await;
    assert_eq!(asset.status(), 200);
    assert!(asset.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert_eq!(get(&app, "/static/style.css", &[]).await.status(), 404);
    // A filter that makes no sense is explained beside the form, and the rest is served.
    let bad = text(get(&app, "/dashboard?metric=%3Cscript%3E", &[]).await).await;
    assert!(bad.contains("Không xem được số liệu"), "{bad}");
    assert!(!bad.contains("<script>"), "input is escaped");
    assert!(bad.contains("Các tỉnh, thành phố"));
    app.stop().await;
}

#[tokio::test]
async fn csv_downloads_open_in_a_spreadsheet_with_vietnamese_intact() {
    let Some(app) = spawn_app(Mode::Embedded, "web_csv").await else {
        return;
    };
    seed(&app).await;
    let csv = get(&app, "/dashboard/provinces.csv", &[]).await;
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(csv.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("attachment"));
    let bytes = csv.bytes().await.expect("body");
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "UTF-8 BOM first");
    let body = std::str::from_utf8(&bytes[3..]).expect("utf-8");
    assert!(body.contains("\r\n"), "CRLF line ends");
    let first = body.lines().next().unwrap();
    assert!(
        first.contains("Tỉnh, thành phố") && first.contains("Hộ đã lên sàn"),
        "{first}"
    );
    assert_eq!(body.lines().count(), 35, "a header and 34 provinces");
    assert!(body.contains("Thành phố Hồ Chí Minh"), "{body}");
    let series = get(
        &app,
        "/dashboard/series.csv?metric=orders&granularity=day&province=79",
        &[("cookie", "ap_lang=en")],
    )
    .await;
    assert_eq!(series.status(), 200);
    let body = series.text().await.expect("body");
    assert!(body.contains("Orders") && body.contains(",3\r\n"), "{body}");
    let bad = get(&app, "/dashboard/series.csv?metric=nope", &[]).await;
    assert_eq!(bad.status(), 400);
    // The province page's partner table has its CSV too: the same columns as the table (no
    // "active" column, which the table does not show), one row per partner and the total.
    let partners = get(&app, "/provinces/79/partners.csv", &[]).await;
    assert_eq!(partners.status(), 200);
    let body = partners.text().await.expect("body");
    let lines: Vec<&str> = body.trim_start_matches('\u{feff}').lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "a header, two partners and the total: {body}"
    );
    assert_eq!(lines[0].split(',').count(), 5, "{}", lines[0]);
    assert!(
        lines[1].starts_with("Postmart,") && lines[2].starts_with("Vỏ Sò,"),
        "{body}"
    );
    assert!(lines[3].starts_with("Thành phố Hồ Chí Minh,"), "{body}");
    let national = get(&app, "/dashboard/partners.csv", &[]).await;
    let body = national.text().await.expect("body");
    assert_eq!(
        body.lines().count(),
        4,
        "two partners and the total: {body}"
    );
    assert_eq!(
        get(&app, "/provinces/99/partners.csv", &[]).await.status(),
        404
    );
    let snippets = get(&app, "/embed/snippets.csv", &[]).await;
    let body = snippets.text().await.expect("body");
    assert_eq!(
        body.lines().count(),
        35,
        "a header and 34 provinces: {body}"
    );
    assert!(body.contains("/embed/province/79?lang=vi"), "{body}");
    app.stop().await;
}

/// Form fields and the cookies a sign-in page set.
struct Form {
    csrf: String,
    cookie: String,
}

async fn signin_form(app: &TestApp) -> Form {
    let page = get(app, "/signin", &[]).await;
    assert!(page.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("no-store"));
    let cookie = page
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("ap_csrf="))
        .expect("csrf cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body = text(page).await;
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf field")
        .to_string();
    Form { csrf, cookie }
}

async fn post(
    app: &TestApp,
    path: &str,
    cookie: &str,
    fields: &[(&str, &str)],
    origin: Option<&str>,
) -> reqwest::Response {
    let mut request = client()
        .post(format!("http://{}{path}", app.http))
        .header("cookie", cookie)
        .form(fields);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.expect("POST")
}

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("ap_session="))
        .map(str::to_string)
}

#[tokio::test]
async fn officials_sign_in_and_out_and_forms_need_their_csrf_token() {
    let Some(app) = spawn_app(Mode::Embedded, "web_signin").await else {
        return;
    };
    let admin = app.token(Role::Admin);
    // Without the form's token, or with another one: refused, nothing opened.
    let form = signin_form(&app).await;
    for (csrf, cookie) in [
        ("", form.cookie.as_str()),
        ("forged", form.cookie.as_str()),
        (form.csrf.as_str(), ""),
    ] {
        let refused = post(
            &app,
            "/signin",
            cookie,
            &[("csrf", csrf), ("token", &admin)],
            None,
        )
        .await;
        assert_eq!(refused.status(), 403);
        assert!(session_cookie(&refused).is_none());
        assert!(text(refused).await.contains("Biểu mẫu đã hết hạn"));
    }
    // From another site's page: refused too.
    let foreign = post(
        &app,
        "/signin",
        &form.cookie,
        &[("csrf", &form.csrf), ("token", &admin)],
        Some("http://evil.example"),
    )
    .await;
    assert_eq!(foreign.status(), 403);
    // A partner's token does not open the officials' pages; garbage says what it is.
    let partner = app.token(Role::Partner {
        partner: "voso".into(),
    });
    let form = signin_form(&app).await;
    let refused = post(
        &app,
        "/signin",
        &form.cookie,
        &[("csrf", &form.csrf), ("token", &partner)],
        None,
    )
    .await;
    assert_eq!(refused.status(), 403);
    assert!(text(refused).await.contains("marketplace"));
    let form = signin_form(&app).await;
    let refused = post(
        &app,
        "/signin",
        &form.cookie,
        &[("csrf", &form.csrf), ("token", "ap1.nonsense")],
        None,
    )
    .await;
    assert_eq!(refused.status(), 401);

    // A province official signs in and sees who they are.
    let official = app.token(Role::Province {
        province: "79".into(),
    });
    let form = signin_form(&app).await;
    let signed = post(
        &app,
        "/signin",
        &form.cookie,
        &[("csrf", &form.csrf), ("token", &official)],
        Some(&format!("http://{}", app.http)),
    )
    .await;
    assert_eq!(signed.status(), 303);
    assert_eq!(signed.headers()["location"], "/account");
    let set = session_cookie(&signed).expect("session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && !set.contains("Secure"),
        "{set}"
    );
    let session = set.split(';').next().unwrap().to_string();
    let account = get(&app, "/account", &[("cookie", &session)]).await;
    assert_eq!(account.status(), 200);
    assert!(account.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("no-store"));
    let page = text(account).await;
    assert!(
        page.contains("Cán bộ tỉnh, thành phố") && page.contains("Thành phố Hồ Chí Minh"),
        "{page}"
    );
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("sign-out form")
        .to_string();
    // Sign-out needs the session's own token.
    let refused = post(&app, "/signout", &session, &[("csrf", "nope")], None).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        get(&app, "/account", &[("cookie", &session)])
            .await
            .status(),
        200
    );
    let out = post(&app, "/signout", &session, &[("csrf", &csrf)], None).await;
    assert_eq!(out.status(), 303);
    assert!(session_cookie(&out).unwrap().contains("Max-Age=0"));
    let after = get(&app, "/account", &[("cookie", &session)]).await;
    assert_eq!(after.status(), 303, "signed out: back to the sign-in page");
    app.stop().await;
}

async fn sign_in(app: &TestApp, token: &str) -> String {
    let form = signin_form(app).await;
    let signed = post(
        app,
        "/signin",
        &form.cookie,
        &[("csrf", &form.csrf), ("token", token)],
        None,
    )
    .await;
    assert_eq!(signed.status(), 303);
    session_cookie(&signed)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn sessions_end_when_idle_and_when_their_token_is_revoked() {
    let Some(app) = spawn_app(Mode::Embedded, "web_expiry").await else {
        return;
    };
    let (token, claims) = app
        .ctx
        .auth
        .mint(Role::Admin, Duration::from_secs(3600))
        .unwrap();
    let session = sign_in(&app, &token).await;
    assert_eq!(
        get(&app, "/account", &[("cookie", &session)])
            .await
            .status(),
        200
    );
    // An hour without a request (the idle limit is 30 minutes): the next page says so.
    let db = Database::connect(&app.config, "web").await.unwrap();
    with_db!(&db.pool, |pool| {
        sqlx::query("UPDATE sessions SET last_seen_ms = last_seen_ms - 3600000")
            .execute(pool)
            .await
            .unwrap();
    });
    let expired = get(&app, "/", &[("cookie", &session)]).await;
    assert!(
        session_cookie(&expired).unwrap().contains("Max-Age=0"),
        "the dead cookie is cleared"
    );
    assert!(text(expired).await.contains("Phiên làm việc đã hết hạn"));
    assert_eq!(
        get(&app, "/account", &[("cookie", &session)])
            .await
            .status(),
        303
    );
    // A revoked token ends its sessions within seconds.
    let session = sign_in(&app, &token).await;
    app.ctx
        .auth
        .revoke(&claims.id, Some(claims.exp))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = get(&app, "/account", &[("cookie", &session)])
            .await
            .status();
        if status == 303 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revoked token's session lives on"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.close().await;
    app.stop().await;
}

/// With the gateway not answering, pages still come, with a notice where their figures were.
#[tokio::test]
async fn pages_stay_up_when_the_gateway_does_not_answer() {
    let registry = agriportal::app::registry();
    let Some((mut settings, _dir)) = config_on(&registry, Mode::Distributed, "web_alone").await
    else {
        return;
    };
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    settings.section_mut::<Web>().unwrap().gateway_url = Some(format!("http://{dead}"));
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", http.local_addr().unwrap());
    let admin_base = format!("http://{}", admin.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            kit::serve(
                &registry,
                "web",
                settings,
                Listeners { grpc, http, admin },
                shutdown,
            )
            .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let home = loop {
        if let Ok(r) = client().get(format!("{base}/")).send().await {
            break r;
        }
        assert!(Instant::now() < deadline, "web did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(home.status(), 200);
    let page = home.text().await.unwrap();
    assert!(
        page.contains("Số liệu tạm thời chưa hiển thị được"),
        "{page}"
    );
    assert!(page.contains("<nav"), "the rest of the page is there");
    let dashboard = client()
        .get(format!("{base}/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status(), 200);
    let page = dashboard.text().await.unwrap();
    assert!(
        page.contains("Số liệu tạm thời chưa hiển thị được") && page.contains("<form"),
        "{page}"
    );
    assert_eq!(
        client()
            .get(format!("{admin_base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "web itself is ready"
    );
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// The session's CSRF token, from a signed-in page's forms.
async fn session_csrf(app: &TestApp, session: &str) -> String {
    let body = text(get(app, "/account", &[("cookie", session)]).await).await;
    body.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf field")
        .to_string()
}

#[tokio::test]
async fn reporting_pages_need_a_signed_in_official_of_the_right_role_and_province() {
    let Some(app) = spawn_app(Mode::Embedded, "web_reporting").await else {
        return;
    };
    // Public: the catalogue is a page for everyone, in the navigation (its figures, or the
    // "unavailable" notice while the gateway has none: the page itself is always served).
    let catalogue = get(&app, "/indicators", &[]).await;
    assert_eq!(catalogue.status(), 200);
    let body = text(catalogue).await;
    assert!(body.contains(r#"<a href="/indicators" aria-current="page">Chỉ tiêu</a>"#));
    let english = text(get(&app, "/indicators?lang=en", &[]).await).await;
    assert!(english.contains("Key indicators of the plan"));
    assert_eq!(get(&app, "/indicators/bad%20code", &[]).await.status(), 404);
    assert_eq!(
        get(&app, "/indicators/HH_ONBOARDED?period=nope", &[])
            .await
            .status(),
        404
    );

    // Signed out: every reporting page sends the reader to sign in.
    for path in [
        "/reports",
        "/reports.csv",
        "/reports/79/202611",
        "/reports/79/202611/export.csv",
        "/review",
        "/chase",
        "/chase.csv",
    ] {
        let page = get(&app, path, &[]).await;
        assert_eq!(page.status(), 303, "{path}");
        assert_eq!(page.headers()["location"], "/signin", "{path}");
    }

    // A province officer: their own province's reports, nothing of the centre's.
    let officer = sign_in(
        &app,
        &app.token(Role::Province {
            province: "79".into(),
        }),
    )
    .await;
    let account = text(get(&app, "/account", &[("cookie", &officer)]).await).await;
    assert!(account.contains(r#"href="/reports""#));
    assert!(!account.contains(r#"href="/review""#));
    for path in [
        "/review",
        "/chase",
        "/chase.csv",
        "/reports/01/202611",
        "/reports?province=01",
    ] {
        let page = get(&app, path, &[("cookie", &officer)]).await;
        assert_eq!(page.status(), 403, "{path}");
        let body = text(page).await;
        assert!(body.contains("Không được phép"), "{path}: {body}");
    }
    let english = get(&app, "/review?lang=en", &[("cookie", &officer)]).await;
    assert_eq!(english.status(), 403);
    assert!(text(english).await.contains("Not allowed"));
    assert_eq!(
        get(&app, "/reports/79/not-a-period", &[("cookie", &officer)])
            .await
            .status(),
        404
    );
    assert_eq!(
        get(&app, "/reports/99/202611", &[("cookie", &officer)])
            .await
            .status(),
        404
    );

    // Forms need the session's token and this site's origin; nothing is sent otherwise.
    let csrf = session_csrf(&app, &officer).await;
    for (path, fields) in [
        ("/reports/79/202611", vec![("action", "save"), ("v_X", "1")]),
        ("/reports/79/202611/import", vec![("csv", "a,b")]),
        (
            "/review",
            vec![
                ("action", "approve"),
                ("province", "79"),
                ("period", "202611"),
            ],
        ),
    ] {
        let refused = post(&app, path, &officer, &fields, None).await;
        assert_eq!(refused.status(), 403, "{path} without a token");
        assert!(text(refused).await.contains("Biểu mẫu đã hết hạn"));
        let mut with = fields.clone();
        with.push(("csrf", csrf.as_str()));
        let foreign = post(&app, path, &officer, &with, Some("https://evil.example")).await;
        assert_eq!(foreign.status(), 403, "{path} from another site");
    }
    // With its token, a province officer still may not decide on reports.
    let decided = post(
        &app,
        "/review",
        &officer,
        &[
            ("csrf", csrf.as_str()),
            ("action", "approve"),
            ("province", "79"),
            ("period", "202611"),
        ],
        None,
    )
    .await;
    assert_eq!(decided.status(), 403);

    // The centre: review and chase are theirs; a return needs a comment, refused beside it.
    let admin = sign_in(&app, &app.token(Role::Admin)).await;
    let account = text(get(&app, "/account", &[("cookie", &admin)]).await).await;
    assert!(account.contains(r#"href="/review""#) && account.contains(r#"href="/chase""#));
    let csrf = session_csrf(&app, &admin).await;
    let refused = post(
        &app,
        "/review",
        &admin,
        &[
            ("csrf", csrf.as_str()),
            ("action", "return"),
            ("province", "79"),
            ("period", "202611"),
            ("comment", "   "),
        ],
        None,
    )
    .await;
    assert_eq!(refused.status(), 422);
    let body = text(refused).await;
    assert!(body.contains("error-summary"), "{body}");
    assert!(body.contains("Hãy ghi lý do trả lại"), "{body}");
    assert_eq!(
        get(&app, "/chase?period=nope", &[("cookie", &admin)])
            .await
            .status(),
        400
    );
    app.stop().await;
}
