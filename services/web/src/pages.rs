//! The pages: each handler asks the gateway for what it needs, formats it in the reader's
//! language (`view`), and renders a compiled template (askama: checked at compile time, HTML
//! escaped by default). A backend that does not answer costs the page its figures, never the
//! page: the rest is served with a notice.

use agriportal_platform::reference::{Partner, Reference};
use askama::Template;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use crate::format;
use crate::http::{append_cookies, csv_response, Web};
use crate::i18n::Tr;
use crate::reader::{Answer, Official, Reader};
use crate::series::{self, ChartView, FilterParams, Filters, GRANULARITIES, METRICS};
use crate::session::{self, CSRF_COOKIE, SESSION_COOKIE};
use crate::view::{self, Progress, Row, Sort};

/// What every page's layout shows: language, title, assets, navigation, who is signed in.
#[derive(Clone, Debug)]
pub struct Chrome {
    /// The reader's messages.
    pub tr: Tr,
    /// `vi` or `en`.
    pub lang_code: &'static str,
    /// The other language's code.
    pub other_lang_code: &'static str,
    /// This page in the other language.
    pub other_lang_href: String,
    /// The page's title.
    pub title: String,
    /// Hashed asset paths.
    pub css: String,
    /// The favicon.
    pub icon: String,
    /// The enhancing script.
    pub js: String,
    /// Which navigation item is this page.
    pub current: &'static str,
    /// Who is signed in.
    pub principal: Option<session::Principal>,
    /// A notice for the top of the page (signed out, session expired).
    pub notice: Option<String>,
    /// Whether the live-figures script is loaded.
    pub live: bool,
}

impl Chrome {
    /// The message `key` in the reader's language.
    pub fn t(&self, key: &str) -> String {
        self.tr.t(key)
    }
}

/// One option of a `<select>`.
#[derive(Clone, Debug)]
pub struct Opt {
    /// Its value.
    pub value: String,
    /// What it shows.
    pub label: String,
    /// Whether it is chosen.
    pub selected: bool,
}

/// A table of figure rows, rendered on its own so each page places as many as it needs.
#[derive(Template)]
#[template(path = "rows.html")]
pub struct RowsTable {
    /// Messages.
    pub tr: Tr,
    /// Caption (and the region's label).
    pub caption: String,
    /// The first column's header.
    pub first: String,
    /// Rows.
    pub rows: Vec<Row>,
    /// A total row.
    pub total: Option<Row>,
    /// A CSV link.
    pub csv: Option<String>,
}

fn table(
    tr: &Tr,
    caption: &str,
    first: &str,
    rows: Vec<Row>,
    total: Option<Row>,
    csv: Option<&str>,
) -> String {
    RowsTable {
        tr: tr.clone(),
        caption: tr.t(caption),
        first: tr.t(first),
        rows,
        total,
        csv: csv.map(str::to_string),
    }
    .render()
    .unwrap_or_default()
}

/// The filters of a chart.
#[derive(Template)]
#[template(path = "filters.html")]
pub struct FilterForm {
    /// Messages.
    pub tr: Tr,
    /// Where the form goes.
    pub action: String,
    /// Metric options.
    pub metrics: Vec<Opt>,
    /// Granularity options.
    pub granularities: Vec<Opt>,
    /// Partner options.
    pub partners: Vec<Opt>,
    /// Province options (none on a province's own page).
    pub provinces: Vec<Opt>,
    /// First day.
    pub from: String,
    /// Last day.
    pub to: String,
}

/// A chart and its table, or why it is not there.
#[derive(Template)]
#[template(path = "chart.html")]
pub struct ChartBlock {
    /// Messages.
    pub tr: Tr,
    /// The chart.
    pub chart: Option<ChartView>,
    /// Why the filters were refused.
    pub error: Option<String>,
    /// The gateway did not answer.
    pub unavailable: bool,
    /// CSV link.
    pub csv: Option<String>,
}

/// National figures as the home page and the dashboard show them.
#[derive(Clone, Debug)]
pub struct NationalBlock {
    /// "Updated at …".
    pub updated: String,
    /// The same with `{t}` where the live script puts the time of newer figures.
    pub updated_template: String,
    /// Progress to the target.
    pub progress: Progress,
    /// The nation's row.
    pub total: Row,
    /// By partner, as HTML.
    pub partners_table: String,
    /// By region, as HTML.
    pub regions_table: String,
}

/// `/`.
#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    /// Layout.
    pub chrome: Chrome,
    /// The figures, unless the gateway did not answer.
    pub figures: Option<NationalBlock>,
}

/// `/dashboard`.
#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    /// Layout.
    pub chrome: Chrome,
    /// The filters, as HTML.
    pub filters: String,
    /// The chart, as HTML.
    pub chart: String,
    /// National figures.
    pub national: Option<NationalBlock>,
    /// The province table, as HTML.
    pub provinces: Option<String>,
    /// Sort options.
    pub sorts: Vec<Opt>,
    /// The chart's filters, kept when the table is sorted.
    pub keep: Vec<(String, String)>,
}

/// A province's figures on its page.
#[derive(Clone, Debug)]
pub struct ProvinceBlock {
    /// Its row.
    pub row: Row,
    /// Its rank, in words.
    pub rank: Option<String>,
    /// By partner, as HTML.
    pub partners_table: String,
}

/// `/provinces/{code}`.
#[derive(Template)]
#[template(path = "province.html")]
pub struct ProvincePage {
    /// Layout.
    pub chrome: Chrome,
    /// Official name.
    pub name: String,
    /// Its region, in words.
    pub region: String,
    /// Figures.
    pub figures: Option<ProvinceBlock>,
    /// Filters, as HTML.
    pub filters: String,
    /// Chart, as HTML.
    pub chart: String,
}

/// `/embed/province/{code}`.
#[derive(Template)]
#[template(path = "embed_province.html")]
pub struct EmbedProvincePage {
    /// Layout (only language, title, stylesheet).
    pub chrome: Chrome,
    /// Name.
    pub name: String,
    /// Figures.
    pub figures: Option<Row>,
    /// Value sold, short ("21,7 tỷ đồng"): the frame is small, the portal has the exact figure.
    pub value: String,
    /// "Updated at …".
    pub updated: String,
    /// The province's page on the portal.
    pub portal_href: String,
}

/// One province's embed snippet.
#[derive(Clone, Debug)]
pub struct Snippet {
    /// Name.
    pub name: String,
    /// The `<iframe>` to paste.
    pub snippet: String,
    /// Its `src`.
    pub src: String,
    /// Its `title`.
    pub title: String,
}

/// `/embed`.
#[derive(Template)]
#[template(path = "embed.html")]
pub struct EmbedPage {
    /// Layout.
    pub chrome: Chrome,
    /// Province options.
    pub provinces: Vec<Opt>,
    /// The chosen province's snippet and preview.
    pub chosen: Option<Snippet>,
    /// Every province's snippet.
    pub all: Vec<Snippet>,
}

/// `/signin`.
#[derive(Template)]
#[template(path = "signin.html")]
pub struct SigninPage {
    /// Layout.
    pub chrome: Chrome,
    /// The form's CSRF token.
    pub csrf: String,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

/// `/account`.
#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    /// Layout.
    pub chrome: Chrome,
    /// Role, in words.
    pub role: String,
    /// Province, by name.
    pub province: Option<String>,
    /// When the session ends.
    pub expires: String,
    /// The sign-out form's CSRF token.
    pub csrf: String,
    /// The official's work, by role: (link, label).
    pub links: Vec<(String, String)>,
}

fn national_block(n: &agriportal_proto::gateway::v1::NationalSummary, tr: &Tr) -> NationalBlock {
    let lang = tr.lang();
    let figures = view::national_figures(n);
    let total = Row::new(tr.t("total"), None, figures.clone(), lang);
    NationalBlock {
        updated: view::updated(&n.as_of, tr),
        updated_template: tr.with("updated-at", &[("time", "{t}".to_string())]),
        progress: view::progress(figures.households, tr),
        partners_table: table(
            tr,
            "by-partner-caption",
            "col-partner",
            view::partner_rows(n.households.as_ref(), n.sales_by_partner.as_ref(), lang),
            Some(total.clone()),
            Some("/dashboard/partners.csv"),
        ),
        regions_table: table(
            tr,
            "by-region-caption",
            "col-region",
            view::region_rows(n, tr),
            Some(total.clone()),
            Some("/dashboard/regions.csv"),
        ),
        total,
    }
}

/// `GET /`: progress to 5,000,000 households, tonnes, value and orders by partner and region.
pub async fn home(r: Reader) -> Response {
    let national = r.web.backend.national().await;
    let tr = r.tr();
    let figures = national.as_ref().ok().map(|n| national_block(n, &tr));
    let page = HomePage {
        chrome: r.chrome(&tr.t("home-title"), "home", figures.is_some()),
        figures,
    };
    r.html(&page, StatusCode::OK)
}

fn options(values: &[&str], selected: &str, label: impl Fn(&str) -> String) -> Vec<Opt> {
    values
        .iter()
        .map(|v| Opt {
            value: v.to_string(),
            label: label(v),
            selected: *v == selected,
        })
        .collect()
}

fn filter_form(tr: &Tr, action: &str, filters: Option<&Filters>, with_provinces: bool) -> String {
    let q = filters.map(|f| f.query.clone()).unwrap_or_default();
    let mut partners = vec![Opt {
        value: String::new(),
        label: tr.t("filter-all-partners"),
        selected: q.partner.is_empty(),
    }];
    partners.extend(Partner::ALL.iter().map(|p| Opt {
        value: p.code().to_string(),
        label: p.name().to_string(),
        selected: q.partner == p.code(),
    }));
    let provinces = if with_provinces {
        province_filter(&q.province, tr)
    } else {
        Vec::new()
    };
    FilterForm {
        tr: tr.clone(),
        action: action.to_string(),
        metrics: options(&METRICS, &q.metric, |m| tr.t(&format!("metric-{m}"))),
        granularities: options(&GRANULARITIES, &q.granularity, |g| {
            tr.t(&format!("granularity-{g}"))
        }),
        partners,
        provinces,
        from: q.from,
        to: q.to,
    }
    .render()
    .unwrap_or_default()
}

/// The provinces by name, `selected` chosen.
/// The 34 provinces as choices, by name, `selected` chosen.
pub fn province_options(selected: &str) -> Vec<Opt> {
    let mut all: Vec<Opt> = Reference::get()
        .provinces()
        .iter()
        .map(|p| Opt {
            value: p.code.clone(),
            label: p.name.clone(),
            selected: p.code == selected,
        })
        .collect();
    all.sort_by(|a, b| a.label.cmp(&b.label));
    all
}

/// A province filter: "every province" (chosen when `selected` is empty), then the provinces.
pub fn province_filter(selected: &str, tr: &Tr) -> Vec<Opt> {
    let mut all = vec![Opt {
        value: String::new(),
        label: tr.t("filter-all-provinces"),
        selected: selected.is_empty(),
    }];
    all.extend(province_options(selected));
    all
}

/// The chart block for `params` (on the dashboard, or fixed to one province).
async fn chart_block(
    web: &Web,
    tr: &Tr,
    params: &FilterParams,
    scope: &str,
    csv_base: &str,
) -> (String, Option<Filters>) {
    let checked = Filters::check(params, series::today(), tr);
    let (chart, error, unavailable, filters) = match checked {
        Err(reason) => (
            None,
            Some(tr.with("bad-filter", &[("reason", reason)])),
            false,
            None,
        ),
        Ok(filters) => match web.backend.series(&filters.query).await {
            Ok(series) => (
                Some(series::chart_view("chart", &filters, &series, scope, tr)),
                None,
                false,
                Some(filters),
            ),
            Err(err) if err.code == agriportal_platform::ErrorCode::InvalidArgument => (
                None,
                Some(tr.with("bad-filter", &[("reason", err.message)])),
                false,
                Some(filters),
            ),
            Err(_) => (None, None, true, Some(filters)),
        },
    };
    let csv = filters
        .as_ref()
        .map(|f| format!("{csv_base}?{}", f.query_string()));
    let html = ChartBlock {
        tr: tr.clone(),
        chart,
        error,
        unavailable,
        csv,
    }
    .render()
    .unwrap_or_default();
    (html, filters)
}

fn scope_name(tr: &Tr, province: &str) -> String {
    if province.is_empty() {
        return tr.t("total").to_lowercase();
    }
    Reference::get()
        .province(province)
        .map(|p| p.name.clone())
        .unwrap_or_default()
}

/// `GET /dashboard`: the chart following the filters, regions, partners, and the province
/// table sorted by `?sort=`.
pub async fn dashboard(r: Reader, Query(params): Query<FilterParams>) -> Response {
    let tr = r.tr();
    let scope = scope_name(&tr, params.province.as_deref().unwrap_or_default().trim());
    let (national, provinces, (chart, filters)) = tokio::join!(
        r.web.backend.national(),
        r.web.backend.provinces(),
        chart_block(&r.web, &tr, &params, &scope, "/dashboard/series.csv"),
    );
    let sort = Sort::parse(params.sort.as_deref());
    let provinces = provinces.ok().map(|all| {
        let rows = view::province_rows(&all, sort, tr.lang());
        table(
            &tr,
            "provinces-caption",
            "col-province",
            rows,
            None,
            Some(&format!("/dashboard/provinces.csv?sort={}", sort.code())),
        )
    });
    let keep = filters
        .map(|f| {
            let q = f.query;
            vec![
                ("metric".to_string(), q.metric),
                ("granularity".to_string(), q.granularity),
                ("partner".to_string(), q.partner),
                ("province".to_string(), q.province),
                ("from".to_string(), q.from),
                ("to".to_string(), q.to),
            ]
        })
        .unwrap_or_default();
    let checked = Filters::check(&params, series::today(), &tr).ok();
    let page = DashboardPage {
        chrome: r.chrome(&tr.t("dashboard-title"), "dashboard", false),
        filters: filter_form(&tr, "/dashboard", checked.as_ref(), true),
        chart,
        national: national.ok().map(|n| national_block(&n, &tr)),
        provinces,
        sorts: Sort::ALL
            .iter()
            .map(|s| Opt {
                value: s.code().to_string(),
                label: s.label(&tr),
                selected: *s == sort,
            })
            .collect(),
        keep,
    };
    r.html(&page, StatusCode::OK)
}

/// `GET /provinces/{code}`: one province's figures, rank and chart; a pre-2025 code redirects
/// (permanently) to the province it merged into.
pub async fn province(
    r: Reader,
    Path(code): Path<String>,
    Query(mut params): Query<FilterParams>,
) -> Response {
    let tr = r.tr();
    let Some((code_2025, name, region, merged)) = view::find_province(&code) else {
        return r.not_found();
    };
    if merged {
        return Redirect::permanent(&format!("/provinces/{code_2025}")).into_response();
    }
    params.province = Some(code_2025.clone());
    let csv_base = format!("/provinces/{code_2025}/series.csv");
    let (provinces, (chart, filters)) = tokio::join!(
        r.web.backend.provinces(),
        chart_block(&r.web, &tr, &params, &name, &csv_base),
    );
    let lang = tr.lang();
    let figures = provinces.ok().and_then(|all| {
        let mine = all.iter().find(|p| p.code == code_2025)?;
        let row = Row::new(name.clone(), None, view::province_figures(mine), lang);
        let rank = view::ranks(&code_2025, &all).map(|(households, value)| {
            tr.with(
                "province-rank",
                &[
                    ("households", format::integer(households as i64, lang)),
                    ("value", format::integer(value as i64, lang)),
                ],
            )
        });
        Some(ProvinceBlock {
            partners_table: table(
                &tr,
                "by-partner-caption",
                "col-partner",
                view::partner_rows(
                    mine.households.as_ref(),
                    mine.sales_by_partner.as_ref(),
                    lang,
                ),
                Some(row.clone()),
                Some(&format!("/provinces/{code_2025}/partners.csv")),
            ),
            row,
            rank,
        })
    });
    let page = ProvincePage {
        chrome: r.chrome(&name, "dashboard", false),
        region: tr.with(
            "province-region",
            &[("region", view::region_name(&tr, &region))],
        ),
        name,
        figures,
        filters: filter_form(
            &tr,
            &format!("/provinces/{code_2025}"),
            filters.as_ref(),
            false,
        ),
        chart,
    };
    r.html(&page, StatusCode::OK)
}

/// `GET /embed/province/{code}`: a small page for an `<iframe>` on a provincial site (the one
/// page any origin may frame).
pub async fn embed_province(r: Reader, Path(code): Path<String>) -> Response {
    let tr = r.tr();
    let Some((code_2025, name, _, merged)) = view::find_province(&code) else {
        return r.not_found();
    };
    if merged {
        return Redirect::permanent(&format!("/embed/province/{code_2025}")).into_response();
    }
    let (provinces, national) = tokio::join!(r.web.backend.provinces(), r.web.backend.national());
    let figures = provinces.ok().and_then(|all| {
        let mine = all.iter().find(|p| p.code == code_2025)?;
        Some(Row::new(
            name.clone(),
            None,
            view::province_figures(mine),
            tr.lang(),
        ))
    });
    let value = figures
        .as_ref()
        .map(|row| view::short_money(row.raw.value_vnd, tr.lang()))
        .unwrap_or_default();
    let updated = national
        .map(|n| view::updated(&n.as_of, &tr))
        .unwrap_or_default();
    let page = EmbedProvincePage {
        chrome: r.chrome(
            &tr.with("embed-frame-title", &[("name", name.clone())]),
            "embed",
            false,
        ),
        portal_href: format!(
            "{}/provinces/{code_2025}?lang={}",
            r.web.public_base(&r.headers),
            tr.lang().code()
        ),
        name,
        figures,
        value,
        updated,
    };
    r.html(&page, StatusCode::OK)
}

/// `?province=` of `/embed`.
#[derive(Debug, Default, Deserialize)]
pub struct EmbedParams {
    /// The chosen province.
    pub province: Option<String>,
}

/// `GET /embed`: the copy-and-paste snippet of each province.
pub async fn embed(r: Reader, Query(params): Query<EmbedParams>) -> Response {
    let tr = r.tr();
    let base = r.web.public_base(&r.headers);
    let snippet = |code: &str, name: &str| {
        let src = format!("{base}/embed/province/{code}?lang={}", tr.lang().code());
        let title = tr.with("embed-frame-title", &[("name", name.to_string())]);
        Snippet {
            name: name.to_string(),
            snippet: embed_snippet(&src, &title),
            src: format!("/embed/province/{code}?lang={}", tr.lang().code()),
            title,
        }
    };
    let chosen_code = params
        .province
        .as_deref()
        .and_then(view::find_province)
        .map(|(code, name, _, _)| (code, name));
    let selected = chosen_code
        .as_ref()
        .map(|(c, _)| c.clone())
        .unwrap_or_default();
    let provinces = province_options(&selected);
    let all = provinces
        .iter()
        .map(|o| snippet(&o.value, &o.label))
        .collect();
    let page = EmbedPage {
        chrome: r.chrome(&tr.t("embed-title"), "embed", false),
        provinces,
        chosen: chosen_code.map(|(code, name)| snippet(&code, &name)),
        all,
    };
    r.html(&page, StatusCode::OK)
}

/// `GET /embed/snippets.csv`: the embed code of every province, the table of `/embed` as CSV
/// (a department's web team can take its line from a spreadsheet).
pub async fn embed_snippets_csv(r: Reader) -> Response {
    let tr = r.tr();
    let base = r.web.public_base(&r.headers);
    let rows: Vec<Vec<String>> = province_options("")
        .iter()
        .map(|o| {
            let src = format!(
                "{base}/embed/province/{}?lang={}",
                o.value,
                tr.lang().code()
            );
            let title = tr.with("embed-frame-title", &[("name", o.label.clone())]);
            vec![o.label.clone(), embed_snippet(&src, &title)]
        })
        .collect();
    let header = vec![tr.t("col-province"), tr.t("col-snippet")];
    csv_response(&header, &rows, "ma-nhung.csv")
}

/// The `<iframe>` a provincial site pastes to show the widget at `src`.
fn embed_snippet(src: &str, title: &str) -> String {
    format!(
        "<iframe src=\"{src}\" title=\"{}\" width=\"320\" height=\"240\" loading=\"lazy\"></iframe>",
        title.replace('"', "&quot;")
    )
}

/// `GET /signin`: the token form, with a pre-session CSRF token in a cookie and the form.
pub async fn signin_form(r: Reader) -> Response {
    if r.visit.session.is_some() {
        return Redirect::to("/account").into_response();
    }
    signin_page(&r, None, StatusCode::OK)
}

fn signin_page(r: &Reader, error: Option<String>, status: StatusCode) -> Response {
    let tr = r.tr();
    let csrf = session::random_token();
    let page = SigninPage {
        chrome: r.chrome(&tr.t("signin-title"), "signin", false),
        csrf: csrf.clone(),
        error,
    };
    let mut response = r.html(&page, status);
    let cookie = session::set_cookie(CSRF_COOKIE, &csrf, None, r.web.secure());
    append_cookies(&mut response, [cookie]);
    response
}

/// The sign-in form's fields.
#[derive(Debug, Deserialize)]
pub struct SigninForm {
    /// The pasted token.
    #[serde(default)]
    pub token: String,
    /// The form's CSRF token.
    #[serde(default)]
    pub csrf: String,
}

/// `POST /signin`: checks the CSRF token and the bearer token, opens a session.
pub async fn signin(r: Reader, Form(form): Form<SigninForm>) -> Response {
    let tr = r.tr();
    let expected = r.visit.cookie(CSRF_COOKIE).unwrap_or_default();
    if !r.visit.same_origin || !session::csrf_matches(&form.csrf, &expected) {
        return signin_page(&r, Some(tr.t("csrf-refused")), StatusCode::FORBIDDEN);
    }
    let web = &r.web;
    match session::principal_from_token(&web.auth, &form.token).await {
        Err(err) => {
            let status = match err.code {
                agriportal_platform::ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                agriportal_platform::ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            let reason = tr.with("signin-failed", &[("reason", err.message)]);
            signin_page(&r, Some(reason), status)
        }
        Ok((principal, not_after_ms)) => match web
            .sessions
            .open(&principal, &form.token, not_after_ms)
            .await
        {
            Ok(id) => {
                tracing::info!(subject = %principal.subject, role = %principal.role, "an official signed in");
                let mut response = Redirect::to("/account").into_response();
                let cookies = [
                    session::set_cookie(SESSION_COOKIE, &id, None, web.secure()),
                    session::set_cookie(
                        CSRF_COOKIE,
                        "",
                        Some(std::time::Duration::ZERO),
                        web.secure(),
                    ),
                ];
                append_cookies(&mut response, cookies);
                response
            }
            Err(err) => r.server_error(&err),
        },
    }
}

/// The sign-out form's field.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: String,
}

/// `POST /signout`: ends the session (CSRF-checked).
pub async fn signout(r: Reader, Form(form): Form<CsrfForm>) -> Answer {
    let me = Official::posted(r, &form.csrf)?;
    if let Some(id) = me.visit.cookie(SESSION_COOKIE) {
        if let Err(err) = me.web.sessions.close(&id).await {
            return Ok(me.server_error(&err));
        }
    }
    let mut response = Redirect::to("/?signed_out=1").into_response();
    let cookie = session::set_cookie(
        SESSION_COOKIE,
        "",
        Some(std::time::Duration::ZERO),
        me.web.secure(),
    );
    append_cookies(&mut response, [cookie]);
    Ok(response)
}

/// `GET /account`: who is signed in, with their role and province.
pub async fn account(me: Official) -> Response {
    let tr = me.tr();
    let live = &me.session;
    let role = tr.t(match live.principal.role.as_str() {
        "admin" => "role-admin",
        "province" => "role-province",
        _ => "role-partner",
    });
    let province = live.principal.province.as_deref().map(|code| {
        Reference::get()
            .province(code)
            .map_or_else(|| code.to_string(), |p| p.name.clone())
    });
    let expires = time::OffsetDateTime::from_unix_timestamp(live.expires_at_ms / 1000)
        .map(|t| format::date_time(t, tr.lang()))
        .unwrap_or_default();
    let links: Vec<(String, String)> = match live.principal.role.as_str() {
        "admin" => vec![
            ("/review".to_string(), tr.t("review-title")),
            ("/chase".to_string(), tr.t("chase-title")),
            ("/reports".to_string(), tr.t("reports-title-admin")),
        ],
        "province" => vec![("/reports".to_string(), tr.t("reports-title"))],
        _ => Vec::new(),
    };
    let page = AccountPage {
        chrome: me.chrome(&tr.t("account-title"), "account", false),
        role,
        province,
        expires,
        csrf: live.csrf.clone(),
        links,
    };
    me.html(&page, StatusCode::OK)
}

/// Fallback: the HTML 404 for a path no route matches.
pub async fn fallback(r: Reader) -> Response {
    r.not_found()
}

/// `GET /dashboard/{table}.csv`: the provinces, regions or partners table as CSV.
pub async fn dashboard_csv(
    r: Reader,
    Path(file): Path<String>,
    Query(params): Query<FilterParams>,
) -> Response {
    let tr = r.tr();
    let lang = tr.lang();
    let (first, rows, name) = match file.as_str() {
        "provinces.csv" => match r.web.backend.provinces().await {
            Ok(all) => (
                "col-province",
                view::province_rows(&all, Sort::parse(params.sort.as_deref()), lang),
                "tinh-thanh",
            ),
            Err(_) => return r.unavailable_csv(),
        },
        "regions.csv" | "partners.csv" => match r.web.backend.national().await {
            Ok(n) => {
                // As in the tables, the national total is the last row.
                let total = Row::new(tr.t("total"), None, view::national_figures(&n), lang);
                let (first, mut rows, name) = if file == "regions.csv" {
                    ("col-region", view::region_rows(&n, &tr), "vung")
                } else {
                    let rows = view::partner_rows(
                        n.households.as_ref(),
                        n.sales_by_partner.as_ref(),
                        lang,
                    );
                    ("col-partner", rows, "san")
                };
                rows.push(total);
                (first, rows, name)
            }
            Err(_) => return r.unavailable_csv(),
        },
        "series.csv" => return series_csv(&r, &params).await,
        _ => return r.not_found(),
    };
    let header = view::row_headers(&tr, first);
    let cells: Vec<Vec<String>> = rows.iter().map(|r| r.cells(lang)).collect();
    csv_response(&header, &cells, &format!("{name}.csv"))
}

/// `GET /provinces/{code}/partners.csv`: a province's partner table as CSV, the same columns
/// as the table beside which it is offered, with the province's total as the last row.
pub async fn province_partners_csv(r: Reader, Path(code): Path<String>) -> Response {
    let tr = r.tr();
    let lang = tr.lang();
    let Some((code_2025, name, ..)) = view::find_province(&code) else {
        return r.not_found();
    };
    let all = match r.web.backend.provinces().await {
        Ok(all) => all,
        Err(_) => return r.unavailable_csv(),
    };
    let Some(mine) = all.iter().find(|p| p.code == code_2025) else {
        return r.unavailable_csv();
    };
    let mut rows = view::partner_rows(
        mine.households.as_ref(),
        mine.sales_by_partner.as_ref(),
        lang,
    );
    rows.push(Row::new(name, None, view::province_figures(mine), lang));
    let header = view::row_headers(&tr, "col-partner");
    let cells: Vec<Vec<String>> = rows.iter().map(|r| r.cells(lang)).collect();
    csv_response(&header, &cells, &format!("san-{code_2025}.csv"))
}

/// `GET /provinces/{code}/series.csv`: a province's chart as CSV.
pub async fn province_series_csv(
    r: Reader,
    Path(code): Path<String>,
    Query(mut params): Query<FilterParams>,
) -> Response {
    let Some((code_2025, ..)) = view::find_province(&code) else {
        return r.not_found();
    };
    params.province = Some(code_2025);
    series_csv(&r, &params).await
}

async fn series_csv(r: &Reader, params: &FilterParams) -> Response {
    let tr = &r.tr();
    let filters = match Filters::check(params, series::today(), tr) {
        Ok(f) => f,
        Err(reason) => {
            return (
                StatusCode::BAD_REQUEST,
                tr.with("bad-filter", &[("reason", reason)]),
            )
                .into_response()
        }
    };
    let series = match r.web.backend.series(&filters.query).await {
        Ok(s) => s,
        Err(_) => return r.unavailable_csv(),
    };
    let lang = tr.lang();
    let metric = filters.query.metric.clone();
    let rows: Vec<Vec<String>> = series
        .points
        .iter()
        .map(|p| {
            vec![
                series::period_label(&p.period_start, &filters.query.granularity, lang),
                match metric.as_str() {
                    "sales_grams" => view::plain_tonnes(p.value, lang),
                    _ => p.value.to_string(),
                },
            ]
        })
        .collect();
    let header = vec![tr.t("col-period"), tr.t(&format!("metric-{metric}"))];
    csv_response(
        &header,
        &rows,
        &format!("{metric}-{}-{}.csv", filters.query.from, filters.query.to),
    )
}
