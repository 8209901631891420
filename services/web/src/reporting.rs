//! The plan's indicators (public, from the gateway) and the reporting workflow (signed-in
//! officials, from the indicators service with their own token): the catalogue and one
//! indicator's page, a province's reports and their entry form, the central working group's
//! review queue and chase list.
//!
//! Every form is a plain POST carrying the session's CSRF token and checked for its origin.
//! A POST that succeeds answers `303 See Other` back to the page (PRG); one that is refused
//! answers the form again with `422` and what was typed kept, each refused field marked and
//! listed in an error summary at the top (the GOV.UK pattern): a redirect would lose what the
//! official typed, and they would have to type it again.

use std::sync::Arc;

use agriportal_platform::period::{self, Period};
use agriportal_platform::reference::Reference;
use agriportal_platform::{Error, ErrorCode};
use agriportal_proto::gateway::v1 as gpb;
use agriportal_proto::indicators::v1 as ipb;
use askama::Template;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use crate::backend::Decision;
use crate::chart::{self, Chart, Kind, Point};
use crate::http::{csv_response, html, Visit, Web};
use crate::indicators::{self as ind, FieldError};
use crate::pages::{not_found_page, Chrome, ErrorPage, Opt};
use crate::session::{self, Session};

/// Most reports listed on one page (the review page's approved reports, an admin's list).
const LIST_LIMIT: usize = 200;

/// Whether a request may be served to this session: 403 page or sign-in redirect otherwise.
/// (The refusal is boxed: a `Response` is large and the happy path should not carry it.)
fn signed_in(visit: &Visit) -> Result<&Session, Box<Response>> {
    visit
        .session
        .as_ref()
        .ok_or_else(|| Box::new(Redirect::to("/signin").into_response()))
}

fn is_admin(session: &Session) -> bool {
    session.principal.role == "admin"
}

/// The 403 page, in the reader's language.
pub fn forbidden_page(visit: &Visit, headers: &HeaderMap) -> Response {
    let tr = visit.tr();
    let page = ErrorPage {
        chrome: visit.chrome(&tr.t("error-403-title"), "", false),
        heading: tr.t("error-403-title"),
        body: tr.t("error-403-body"),
    };
    html(visit, headers, &page, StatusCode::FORBIDDEN)
}

fn csrf_refused(visit: &Visit, headers: &HeaderMap) -> Response {
    let tr = visit.tr();
    let page = ErrorPage {
        chrome: visit.chrome(&tr.t("error-400-title"), "", false),
        heading: tr.t("error-400-title"),
        body: tr.t("csrf-refused"),
    };
    html(visit, headers, &page, StatusCode::FORBIDDEN)
}

/// A page for a failed call that leaves nothing to show: 403, 404, sign-in again, or the
/// "unavailable" page with the rest of the layout.
fn failed(visit: &Visit, headers: &HeaderMap, err: &Error) -> Response {
    let tr = visit.tr();
    match err.code {
        ErrorCode::PermissionDenied => forbidden_page(visit, headers),
        ErrorCode::NotFound => not_found_page(visit, headers),
        // The session outlived what its token opens (or predates kept tokens): redirecting to
        // /signin would bounce back to /account, so say what to do instead.
        ErrorCode::Unauthenticated => {
            let page = ErrorPage {
                chrome: visit.chrome(&tr.t("error-401-title"), "", false),
                heading: tr.t("error-401-title"),
                body: tr.t("error-401-body"),
            };
            html(visit, headers, &page, StatusCode::UNAUTHORIZED)
        }
        ErrorCode::InvalidArgument | ErrorCode::FailedPrecondition => {
            let page = ErrorPage {
                chrome: visit.chrome(&tr.t("error-400-title"), "", false),
                heading: tr.t("error-400-title"),
                body: err.message.clone(),
            };
            html(visit, headers, &page, StatusCode::BAD_REQUEST)
        }
        _ => {
            tracing::warn!(error = %err, "a reporting page's backend failed");
            let page = ErrorPage {
                chrome: visit.chrome(&tr.t("unavailable-title"), "", false),
                heading: tr.t("unavailable-title"),
                body: tr.t("unavailable-body"),
            };
            html(visit, headers, &page, StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

/// Whether the call failed because the backend is away (the page then shows the
/// "unavailable" partial in place of what it would have shown).
fn away(err: &Error) -> bool {
    matches!(
        err.code,
        ErrorCode::Unavailable | ErrorCode::DeadlineExceeded | ErrorCode::Internal
    )
}

fn province_name(code: &str) -> String {
    Reference::get()
        .province(code)
        .map_or_else(|| code.to_string(), |p| p.name.clone())
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("private, no-store"),
    );
    response
}

// ---------------------------------------------------------------------------------------
// Public: /indicators and /indicators/{code}

/// One indicator in the catalogue.
#[derive(Clone, Debug)]
pub struct IndicatorRow {
    /// Its page.
    pub href: String,
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Period, in words.
    pub period: String,
    /// National value, or why none.
    pub value: String,
    /// Target.
    pub target: String,
    /// Progress in words.
    pub progress: String,
    /// Progress for the bar, hundredths of a percent clamped to 0–10,000.
    pub bar: Option<i64>,
}

/// `/indicators`.
#[derive(Template)]
#[template(path = "indicators.html")]
pub struct IndicatorsPage {
    /// Layout.
    pub chrome: Chrome,
    /// The catalogue, unless the gateway did not answer.
    pub rows: Option<Vec<IndicatorRow>>,
}

fn catalogue_rows(all: &[gpb::IndicatorSummary], tr: &crate::i18n::Tr) -> Vec<IndicatorRow> {
    all.iter()
        .filter_map(|s| {
            let i = s.indicator.as_ref()?;
            Some(IndicatorRow {
                href: format!("/indicators/{}", i.code),
                code: i.code.clone(),
                name: ind::name(i, tr.lang()),
                period: ind::period_text(&s.period, tr),
                value: ind::figure_text(s.national.as_ref(), i, tr),
                target: ind::target_text(s.national.as_ref(), i, tr),
                progress: ind::progress_text(s.national.as_ref(), tr),
                bar: ind::progress_hundredths(s.national.as_ref()).map(|h| h.clamp(0, 10_000)),
            })
        })
        .collect()
}

/// `GET /indicators`: every indicator with its national figure, target and progress.
pub async fn indicators(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
    headers: HeaderMap,
) -> Response {
    let tr = visit.tr();
    let rows = match web.backend.indicator_list().await {
        Ok(all) => Some(catalogue_rows(&all, &tr)),
        Err(err) => {
            tracing::warn!(error = %err, "the indicator catalogue is unavailable");
            None
        }
    };
    let page = IndicatorsPage {
        chrome: visit.chrome(&tr.t("indicators-title"), "indicators", false),
        rows,
    };
    html(&visit, &headers, &page, StatusCode::OK)
}

/// `GET /indicators.csv`: the catalogue's table.
pub async fn indicators_csv(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
) -> Response {
    let tr = visit.tr();
    let Ok(all) = web.backend.indicator_list().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, tr.t("unavailable-body")).into_response();
    };
    let header = vec![
        tr.t("col-code"),
        tr.t("col-indicator"),
        tr.t("col-period"),
        tr.t("col-value-generic"),
        tr.t("col-target"),
        tr.t("col-progress"),
    ];
    let rows: Vec<Vec<String>> = catalogue_rows(&all, &tr)
        .into_iter()
        .map(|r| vec![r.code, r.name, r.period, r.value, r.target, r.progress])
        .collect();
    csv_response(&header, &rows, "chi-tieu.csv")
}

/// One province (or region) of an indicator's page.
#[derive(Clone, Debug)]
pub struct PlaceRow {
    /// Name.
    pub name: String,
    /// Value or why none.
    pub value: String,
    /// Target.
    pub target: String,
    /// Progress.
    pub progress: String,
    /// Report state in words (empty when provinces do not report it).
    pub state: String,
}

/// One indicator's figures.
#[derive(Clone, Debug)]
pub struct IndicatorBlock {
    /// The national value.
    pub value: String,
    /// Target.
    pub target: String,
    /// Progress.
    pub progress: String,
    /// Progress bar.
    pub bar: Option<i64>,
    /// Period, in words.
    pub period: String,
    /// Period id.
    pub period_id: String,
    /// The chart (inline SVG).
    pub svg: String,
    /// The chart's table: period, value.
    pub series: Vec<(String, String)>,
    /// Provinces.
    pub provinces: Vec<PlaceRow>,
    /// Regions.
    pub regions: Vec<PlaceRow>,
    /// Whether provinces report it (the table then has a state column).
    pub reported: bool,
    /// Periods to choose.
    pub periods: Vec<Opt>,
    /// Where its values come from, in words.
    pub source: String,
}

/// `/indicators/{code}`.
#[derive(Template)]
#[template(path = "indicator.html")]
pub struct IndicatorPage {
    /// Layout.
    pub chrome: Chrome,
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Figures, unless the gateway did not answer.
    pub figures: Option<IndicatorBlock>,
    /// The query of the CSV links (`?period=…`).
    pub csv_query: String,
}

/// `?period=` of an indicator's page.
#[derive(Debug, Default, Deserialize)]
pub struct PeriodParams {
    /// Period id.
    pub period: Option<String>,
    /// Province (the chase list's and admin's report list's filter).
    pub province: Option<String>,
    /// What the last POST did (`saved`, `submitted`, …), for the notice after PRG.
    pub done: Option<String>,
}

fn place_rows(
    places: &[gpb::ProvinceFigure],
    indicator: &ipb::Indicator,
    tr: &crate::i18n::Tr,
    region_names: bool,
) -> Vec<PlaceRow> {
    places
        .iter()
        .map(|p| PlaceRow {
            name: if region_names {
                crate::view::region_name(tr, &p.code)
            } else if p.name.is_empty() {
                province_name(&p.code)
            } else {
                p.name.clone()
            },
            value: ind::figure_text(p.figure.as_ref(), indicator, tr),
            target: ind::target_text(p.figure.as_ref(), indicator, tr),
            progress: ind::progress_text(p.figure.as_ref(), tr),
            state: ind::state_word(&p.state, tr),
        })
        .collect()
}

/// The view of one indicator's progress.
pub fn indicator_block(p: &gpb::IndicatorProgress, tr: &crate::i18n::Tr) -> Option<IndicatorBlock> {
    let i = p.indicator.as_ref()?;
    let lang = tr.lang();
    let scale = i.scale.min(6);
    let points: Vec<Point> = p
        .series
        .iter()
        .filter_map(|s| {
            let f = s.figure.as_ref().filter(|f| f.has_value)?;
            Some(Point {
                label: ind::period_text(&s.period, tr),
                value: ind::scaled(&f.value, scale)?,
            })
        })
        .collect();
    let name = ind::name(i, lang);
    let title = tr.with("indicator-chart-title", &[("name", name.clone())]);
    let description = tr.with(
        "indicator-chart-desc",
        &[
            ("count", points.len().to_string()),
            ("unit", ind::unit(i, tr)),
        ],
    );
    let empty = tr.t("chart-empty");
    let format_value = |v: i64| crate::format::decimal(v, scale, lang);
    let svg = chart::render(&Chart {
        id: "indicator-chart",
        title: &title,
        description: &description,
        points: &points,
        kind: Kind::Bars,
        format_value: &format_value,
        empty_text: &empty,
    });
    let series = p
        .series
        .iter()
        .map(|s| {
            (
                ind::period_text(&s.period, tr),
                ind::figure_text(s.figure.as_ref(), i, tr),
            )
        })
        .collect();
    let mut periods: Vec<Opt> = p
        .series
        .iter()
        .rev()
        .map(|s| Opt {
            value: s.period.clone(),
            label: ind::period_text(&s.period, tr),
            selected: s.period == p.period,
        })
        .collect();
    if !periods.iter().any(|o| o.selected) {
        periods.insert(
            0,
            Opt {
                value: p.period.clone(),
                label: ind::period_text(&p.period, tr),
                selected: true,
            },
        );
    }
    let source = tr.t(match ipb::Source::try_from(i.source).unwrap_or_default() {
        ipb::Source::Province => "source-province",
        ipb::Source::Marketplace => "source-marketplace",
        ipb::Source::Derived => "source-derived",
        ipb::Source::Qa => "source-qa",
        ipb::Source::Unspecified => "source-unknown",
    });
    Some(IndicatorBlock {
        value: ind::figure_text(p.national.as_ref(), i, tr),
        target: ind::target_text(p.national.as_ref(), i, tr),
        progress: ind::progress_text(p.national.as_ref(), tr),
        bar: ind::progress_hundredths(p.national.as_ref()).map(|h| h.clamp(0, 10_000)),
        period: ind::period_text(&p.period, tr),
        period_id: p.period.clone(),
        svg,
        series,
        provinces: place_rows(&p.provinces, i, tr, false),
        regions: place_rows(&p.regions, i, tr, true),
        reported: ind::province_reported(i),
        periods,
        source,
    })
}

fn clean_code(code: &str) -> Option<String> {
    let code = code.trim();
    (!code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then(|| code.to_string())
}

fn clean_period(period: Option<&str>) -> Result<String, ()> {
    match period.map(str::trim).filter(|p| !p.is_empty()) {
        None => Ok(String::new()),
        Some(p) => Period::parse(p).map(|p| p.to_string()).map_err(|_| ()),
    }
}

/// `GET /indicators/{code}?period=`: the national figure and progress, a chart of recent
/// periods with its table, and the provinces' table.
pub async fn indicator(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
    headers: HeaderMap,
    Path(code): Path<String>,
    Query(params): Query<PeriodParams>,
) -> Response {
    let tr = visit.tr();
    let Some(code) = clean_code(&code) else {
        return not_found_page(&visit, &headers);
    };
    let Ok(period) = clean_period(params.period.as_deref()) else {
        return not_found_page(&visit, &headers);
    };
    let (name, figures) = match web.backend.indicator(&code, &period, "").await {
        Ok(p) => {
            let name = p
                .indicator
                .as_ref()
                .map_or_else(|| code.clone(), |i| ind::name(i, tr.lang()));
            (name, indicator_block(&p, &tr))
        }
        Err(err) if err.code == ErrorCode::NotFound => return not_found_page(&visit, &headers),
        Err(err) if err.code == ErrorCode::InvalidArgument => {
            return not_found_page(&visit, &headers)
        }
        Err(err) => {
            tracing::warn!(error = %err, "an indicator's figures are unavailable");
            (code.clone(), None)
        }
    };
    let csv_query = figures
        .as_ref()
        .map(|f| format!("?period={}", f.period_id))
        .unwrap_or_default();
    let page = IndicatorPage {
        chrome: visit.chrome(&name, "indicators", false),
        code,
        name,
        figures,
        csv_query,
    };
    html(&visit, &headers, &page, StatusCode::OK)
}

/// `GET /indicators/{code}/{file}.csv`: an indicator's provinces, regions or series.
pub async fn indicator_csv(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
    headers: HeaderMap,
    Path((code, file)): Path<(String, String)>,
    Query(params): Query<PeriodParams>,
) -> Response {
    let tr = visit.tr();
    let (Some(code), Ok(period)) = (clean_code(&code), clean_period(params.period.as_deref()))
    else {
        return not_found_page(&visit, &headers);
    };
    let p = match web.backend.indicator(&code, &period, "").await {
        Ok(p) => p,
        Err(err) if matches!(err.code, ErrorCode::NotFound | ErrorCode::InvalidArgument) => {
            return not_found_page(&visit, &headers)
        }
        Err(_) => {
            return (StatusCode::SERVICE_UNAVAILABLE, tr.t("unavailable-body")).into_response()
        }
    };
    let Some(block) = indicator_block(&p, &tr) else {
        return not_found_page(&visit, &headers);
    };
    let places = |rows: Vec<PlaceRow>, first: &str| {
        let header = vec![
            tr.t(first),
            tr.t("col-value-generic"),
            tr.t("col-target"),
            tr.t("col-progress"),
            tr.t("col-state"),
        ];
        let cells: Vec<Vec<String>> = rows
            .into_iter()
            .map(|r| vec![r.name, r.value, r.target, r.progress, r.state])
            .collect();
        (header, cells)
    };
    let (header, cells) = match file.as_str() {
        "provinces.csv" => places(block.provinces, "col-province"),
        "regions.csv" => places(block.regions, "col-region"),
        "series.csv" => (
            vec![tr.t("col-period"), tr.t("col-value-generic")],
            block
                .series
                .into_iter()
                .map(|(period, value)| vec![period, value])
                .collect(),
        ),
        _ => return not_found_page(&visit, &headers),
    };
    let stem = file.trim_end_matches(".csv");
    csv_response(
        &header,
        &cells,
        &format!("{code}-{}-{stem}.csv", block.period_id),
    )
}

// ---------------------------------------------------------------------------------------
// Officials: /reports

/// One report in a list.
#[derive(Clone, Debug)]
pub struct ReportRow {
    /// The entry form.
    pub href: String,
    /// Province name.
    pub province: String,
    /// Period in words.
    pub period: String,
    /// State in words.
    pub state: String,
    /// State code (CSS).
    pub state_code: &'static str,
    /// Version.
    pub version: String,
    /// Deadline.
    pub deadline: String,
    /// Submitted at.
    pub submitted: String,
    /// Approved at.
    pub approved: String,
    /// Number of values.
    pub values: String,
    /// Province code.
    pub province_code: String,
    /// Period id.
    pub period_id: String,
    /// The last review comment.
    pub review_comment: String,
}

fn report_row(r: &ipb::ReportSummary, tr: &crate::i18n::Tr) -> ReportRow {
    let lang = tr.lang();
    ReportRow {
        href: format!("/reports/{}/{}", r.province_code, r.period),
        province: province_name(&r.province_code),
        period: ind::period_text(&r.period, tr),
        state: ind::state_text(r.state, tr),
        state_code: ind::state_code(r.state),
        version: r.version.to_string(),
        deadline: ind::deadline_text(&r.deadline, lang),
        submitted: ind::time_ms(r.submitted_at_ms, lang),
        approved: ind::time_ms(r.approved_at_ms, lang),
        values: crate::format::integer(i64::from(r.value_count), lang),
        province_code: r.province_code.clone(),
        period_id: r.period.clone(),
        review_comment: r.review_comment.clone(),
    }
}

/// A period an official can start.
#[derive(Clone, Debug)]
pub struct Startable {
    /// The entry form.
    pub href: String,
    /// Period, in words.
    pub label: String,
}

/// `/reports`.
#[derive(Template)]
#[template(path = "reports.html")]
pub struct ReportsPage {
    /// Layout.
    pub chrome: Chrome,
    /// Whose reports: the province's name, or empty for every province.
    pub province: String,
    /// The reports, unless the service did not answer.
    pub rows: Option<Vec<ReportRow>>,
    /// Periods to start.
    pub startable: Vec<Startable>,
    /// Province options (admins).
    pub provinces: Vec<Opt>,
    /// Whether the reader is an admin.
    pub admin: bool,
    /// The CSV link.
    pub csv: String,
}

fn province_options(selected: &str, tr: &crate::i18n::Tr) -> Vec<Opt> {
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
    all.insert(
        0,
        Opt {
            value: String::new(),
            label: tr.t("filter-all-provinces"),
            selected: selected.is_empty(),
        },
    );
    all
}

/// The province a request is about: the officer's own, or for an admin the one asked for
/// (possibly none). A province officer asking for another province gets `Err`.
fn scope(session: &Session, asked: Option<&str>) -> Result<String, ()> {
    let asked = asked.map(str::trim).unwrap_or_default();
    if is_admin(session) {
        return Ok(Reference::get()
            .province(asked)
            .map(|p| p.code.clone())
            .unwrap_or_default());
    }
    let own = session.principal.province.clone().ok_or(())?;
    if asked.is_empty() || asked == own {
        Ok(own)
    } else {
        Err(())
    }
}

/// `GET /reports`: the official's province's reports by period with their state, deadline
/// and times, and the periods they can start.
pub async fn reports(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
    headers: HeaderMap,
    Query(params): Query<PeriodParams>,
) -> Response {
    let live = match signed_in(&visit) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Ok(province) = scope(live, params.province.as_deref()) else {
        return forbidden_page(&visit, &headers);
    };
    let tr = visit.tr();
    let (listed, catalogue) = tokio::join!(
        web.backend
            .reports(&live.bearer, &province, ipb::ReportState::Unspecified, ""),
        web.backend.catalogue(&live.bearer),
    );
    let rows = match listed {
        Ok(all) => Some(
            all.iter()
                .take(LIST_LIMIT)
                .map(|r| report_row(r, &tr))
                .collect::<Vec<_>>(),
        ),
        Err(err) if away(&err) => None,
        Err(err) => return failed(&visit, &headers, &err),
    };
    let mut kinds: Vec<period::PeriodType> = catalogue
        .as_ref()
        .map(|all| {
            all.iter()
                .filter(|i| ind::province_reported(i))
                .filter_map(ind::period_type)
                .collect()
        })
        .unwrap_or_default();
    kinds.sort();
    kinds.dedup();
    let started: Vec<String> = rows
        .as_ref()
        .map(|all| all.iter().map(|r| r.period_id.clone()).collect())
        .unwrap_or_default();
    let today = period::vietnam_today(time::OffsetDateTime::now_utc());
    let startable = if province.is_empty() {
        Vec::new()
    } else {
        ind::startable(&kinds, today, &started)
            .into_iter()
            .map(|p| Startable {
                href: format!("/reports/{province}/{p}"),
                label: ind::period_text(&p, &tr),
            })
            .collect()
    };
    let admin = is_admin(live);
    let page = ReportsPage {
        chrome: visit.chrome(&tr.t("reports-title"), "account", false),
        province: if province.is_empty() {
            String::new()
        } else {
            province_name(&province)
        },
        rows,
        startable,
        provinces: if admin {
            province_options(&province, &tr)
        } else {
            Vec::new()
        },
        admin,
        csv: format!("/reports.csv?province={province}"),
    };
    html(&visit, &headers, &page, StatusCode::OK)
}

/// `GET /reports.csv`: the list of `/reports`.
pub async fn reports_csv(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
    headers: HeaderMap,
    Query(params): Query<PeriodParams>,
) -> Response {
    let live = match signed_in(&visit) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Ok(province) = scope(live, params.province.as_deref()) else {
        return forbidden_page(&visit, &headers);
    };
    let tr = visit.tr();
    let all = match web
        .backend
        .reports(&live.bearer, &province, ipb::ReportState::Unspecified, "")
        .await
    {
        Ok(all) => all,
        Err(err) => return failed(&visit, &headers, &err),
    };
    let header = vec![
        tr.t("col-province"),
        tr.t("col-period"),
        tr.t("col-state"),
        tr.t("col-version"),
        tr.t("col-deadline"),
        tr.t("col-submitted"),
        tr.t("col-approved"),
        tr.t("col-values"),
    ];
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|r| report_row(r, &tr))
        .map(|r| {
            vec![
                r.province,
                r.period,
                r.state,
                r.version,
                r.deadline,
                r.submitted,
                r.approved,
                r.values,
            ]
        })
        .collect();
    no_store(csv_response(&header, &rows, "bao-cao.csv"))
}

// ---------------------------------------------------------------------------------------
// The entry form: /reports/{province}/{period}

/// One value field of the entry form.
#[derive(Clone, Debug)]
pub struct EntryField {
    /// Indicator code (the field names are `v_{code}` and `c_{code}`).
    pub code: String,
    /// The input's id.
    pub id: String,
    /// Its label: the indicator's name.
    pub label: String,
    /// Unit, in words.
    pub unit: String,
    /// What is in the field: what was typed (kept when refused) or what is stored.
    pub value: String,
    /// What is stored, as sent back unchanged (so only changed values are saved).
    pub stored: String,
    /// The value's comment.
    pub comment: String,
    /// The stored comment.
    pub stored_comment: String,
    /// Last period's value, in words.
    pub previous: String,
    /// Allowed range and digits, in words.
    pub hint: String,
    /// Why it was refused.
    pub error: Option<String>,
    /// Whether the input takes decimals (`inputmode`).
    pub decimal: bool,
    /// The stored value in words with its unit, for the read-only table ("—" for none).
    pub shown: String,
}

/// A figure the gateway has for the province (marketplace or derived), beside the form.
#[derive(Clone, Debug)]
pub struct ContextRow {
    /// Indicator name.
    pub name: String,
    /// Value, or why none.
    pub value: String,
}

/// One line of the audit table.
#[derive(Clone, Debug)]
pub struct HistoryRow {
    /// When.
    pub at: String,
    /// Who.
    pub actor: String,
    /// What, in words.
    pub action: String,
    /// Which indicator.
    pub indicator: String,
    /// Before.
    pub old: String,
    /// After.
    pub new: String,
    /// Comment.
    pub comment: String,
    /// Version.
    pub version: String,
}

/// A line of an import that was refused.
#[derive(Clone, Debug)]
pub struct ImportError {
    /// Line number in the file.
    pub line: String,
    /// Indicator code as given.
    pub code: String,
    /// Why.
    pub reason: String,
}

/// `/reports/{province}/{period}`.
#[derive(Template)]
#[template(path = "report.html")]
pub struct ReportPage {
    /// Layout.
    pub chrome: Chrome,
    /// Heading.
    pub heading: String,
    /// The form's action.
    pub action: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// State in words.
    pub state: String,
    /// State code.
    pub state_code: &'static str,
    /// Version.
    pub version: String,
    /// Deadline.
    pub deadline: String,
    /// Submitted.
    pub submitted: String,
    /// Approved.
    pub approved: String,
    /// Last review comment.
    pub review_comment: String,
    /// Why the form is read-only, if it is.
    pub locked: Option<String>,
    /// The fields.
    pub fields: Vec<EntryField>,
    /// Errors, for the summary.
    pub errors: Vec<FieldError>,
    /// A refusal of the whole form (report locked, submission refused).
    pub form_error: Option<String>,
    /// A notice after a successful POST.
    pub done: Option<String>,
    /// Context figures from the gateway.
    pub context: Option<Vec<ContextRow>>,
    /// The audit table.
    pub history: Vec<HistoryRow>,
    /// The import's refused lines.
    pub import_errors: Vec<ImportError>,
    /// The import's summary.
    pub import_summary: Option<String>,
    /// What was pasted into the import field (kept when refused).
    pub import_text: String,
    /// Whether "keep the valid lines" was ticked.
    pub import_keep: bool,
    /// The report as CSV.
    pub export: String,
    /// The history as CSV.
    pub history_csv: String,
    /// The list of reports.
    pub back: String,
}

/// What the handlers of the form know about the report being filled in.
struct Loaded {
    province: String,
    period: Period,
    indicators: Vec<ipb::Indicator>,
    report: Option<ipb::Report>,
    previous: Option<ipb::Report>,
    context: Option<Vec<ContextRow>>,
}

/// The report's address checked against the session: 404 for a period that is not one, 403
/// for another province than the officer's.
fn address(
    visit: &Visit,
    headers: &HeaderMap,
    live: &Session,
    province: &str,
    period: &str,
) -> Result<(String, Period), Box<Response>> {
    let Some(found) = Reference::get().resolve_province(province.trim()) else {
        return Err(Box::new(not_found_page(visit, headers)));
    };
    let code = found.province().code.clone();
    let Ok(period) = Period::parse(period) else {
        return Err(Box::new(not_found_page(visit, headers)));
    };
    if !is_admin(live) && live.principal.province.as_deref() != Some(code.as_str()) {
        return Err(Box::new(forbidden_page(visit, headers)));
    }
    Ok((code, period))
}

async fn load(
    web: &Web,
    live: &Session,
    tr: &crate::i18n::Tr,
    province: String,
    period: Period,
) -> Result<Loaded, Error> {
    let id = period.to_string();
    // The first allowed period has none before it (`previous` saturates to itself).
    let previous_id = if period.previous() == period {
        String::new()
    } else {
        period.previous().to_string()
    };
    let (catalogue, report, previous) = tokio::join!(
        web.backend.catalogue(&live.bearer),
        web.backend.report(&live.bearer, &province, &id),
        async {
            if previous_id.is_empty() {
                Err(Error::new(ErrorCode::NotFound, "no previous period"))
            } else {
                web.backend
                    .report(&live.bearer, &province, &previous_id)
                    .await
            }
        },
    );
    let catalogue = catalogue?;
    let report = match report {
        Ok(r) => Some(r),
        // Not started yet: the form is empty and the first save starts it.
        Err(err) if err.code == ErrorCode::NotFound => None,
        Err(err) => return Err(err),
    };
    let kind = period.kind();
    let same_kind = |i: &&ipb::Indicator| ind::period_type(i) == Some(kind);
    let indicators: Vec<ipb::Indicator> = catalogue
        .iter()
        .filter(same_kind)
        .filter(|i| ind::province_reported(i))
        .cloned()
        .collect();
    // The figures the gateway computes for this province (marketplaces', derived), asked for
    // together: each is one call, and the form waits for the slowest only.
    let mut calls = tokio::task::JoinSet::new();
    for i in catalogue.iter().filter(same_kind).filter(|i| {
        i.source == ipb::Source::Marketplace as i32 || i.source == ipb::Source::Derived as i32
    }) {
        let backend = web.backend.clone();
        let (code, p, prov) = (i.code.clone(), id.clone(), province.clone());
        calls.spawn(async move { backend.indicator(&code, &p, &prov).await });
    }
    let mut context: Option<Vec<(u32, ContextRow)>> = Some(Vec::new());
    while let Some(done) = calls.join_next().await {
        match done {
            Ok(Ok(progress)) => {
                let Some(i) = progress.indicator.as_ref() else {
                    continue;
                };
                let figure = progress
                    .provinces
                    .iter()
                    .find(|p| p.code == province)
                    .and_then(|p| p.figure.as_ref());
                if let Some(rows) = context.as_mut() {
                    rows.push((
                        i.position,
                        ContextRow {
                            name: ind::name(i, tr.lang()),
                            value: ind::figure_text(figure, i, tr),
                        },
                    ));
                }
            }
            // The gateway is away: the form works without its context.
            _ => context = None,
        }
    }
    let context = context.map(|mut rows| {
        rows.sort_by_key(|(position, _)| *position);
        rows.into_iter().map(|(_, row)| row).collect()
    });
    Ok(Loaded {
        province,
        period,
        indicators,
        report,
        previous: previous.ok(),
        context,
    })
}

/// Stored values as the reader writes decimals (the form takes both marks).
fn stored_for_input(value: &str, lang: crate::format::Lang) -> String {
    match lang {
        crate::format::Lang::Vi => value.replace('.', ","),
        crate::format::Lang::En => value.to_string(),
    }
}

fn hint(i: &ipb::Indicator, tr: &crate::i18n::Tr) -> String {
    let lang = tr.lang();
    let mut parts = Vec::new();
    if !i.min_value.is_empty() {
        parts.push(tr.with(
            "hint-min",
            &[("min", ind::decimal_text(&i.min_value, lang))],
        ));
    }
    if !i.max_value.is_empty() {
        parts.push(tr.with(
            "hint-max",
            &[("max", ind::decimal_text(&i.max_value, lang))],
        ));
    }
    parts.push(if i.scale == 0 {
        tr.t("hint-integer")
    } else {
        tr.with("hint-scale", &[("scale", i.scale.to_string())])
    });
    parts.join("; ")
}

fn action_word(action: &str, tr: &crate::i18n::Tr) -> String {
    match action {
        "save" | "import" | "submit" | "approve" | "return" | "reopen" => {
            tr.t(&format!("action-{action}"))
        }
        other => other.to_string(),
    }
}

/// Typed values of a refused POST, by code: (value, comment).
type Typed = std::collections::HashMap<String, (String, String)>;

#[allow(clippy::too_many_arguments)]
fn report_page(
    visit: &Visit,
    live: &Session,
    loaded: &Loaded,
    typed: Option<&Typed>,
    errors: Vec<FieldError>,
    form_error: Option<String>,
    done: Option<String>,
    import: Option<(Vec<ImportError>, String, String, bool)>,
) -> ReportPage {
    let tr = visit.tr();
    let lang = tr.lang();
    let period_id = loaded.period.to_string();
    let report = loaded.report.clone().unwrap_or_default();
    let stored = |code: &str| {
        report
            .values
            .iter()
            .find(|v| v.indicator_code == code)
            .cloned()
            .unwrap_or_default()
    };
    let previous = |i: &ipb::Indicator| {
        loaded
            .previous
            .as_ref()
            .and_then(|r| r.values.iter().find(|v| v.indicator_code == i.code))
            .map(|v| {
                format!(
                    "{}{}{}",
                    ind::decimal_text(&v.value, lang),
                    crate::format::NBSP,
                    ind::unit(i, &tr)
                )
            })
            .unwrap_or_else(|| tr.t("previous-none"))
    };
    let fields = loaded
        .indicators
        .iter()
        .map(|i| {
            let saved = stored(&i.code);
            let id = ind::field_id(&i.code);
            let (value, comment) = match typed.and_then(|t| t.get(&i.code)) {
                Some((v, c)) => (v.clone(), c.clone()),
                None => (stored_for_input(&saved.value, lang), saved.comment.clone()),
            };
            EntryField {
                code: i.code.clone(),
                error: errors
                    .iter()
                    .find(|e| e.field == id)
                    .map(|e| e.message.clone()),
                id,
                label: ind::name(i, lang),
                unit: ind::unit(i, &tr),
                value,
                stored: saved.value.clone(),
                comment,
                stored_comment: saved.comment.clone(),
                previous: previous(i),
                hint: hint(i, &tr),
                decimal: i.scale > 0,
                shown: if saved.value.is_empty() {
                    "—".to_string()
                } else {
                    format!(
                        "{}{}{}",
                        ind::decimal_text(&saved.value, lang),
                        crate::format::NBSP,
                        ind::unit(i, &tr)
                    )
                },
            }
        })
        .collect();
    let state = ipb::ReportState::try_from(report.state).unwrap_or_default();
    let locked = match state {
        ipb::ReportState::Approved => Some(tr.t("locked-approved")),
        ipb::ReportState::Submitted => Some(tr.t("locked-submitted")),
        _ => None,
    };
    let history = report
        .history
        .iter()
        .rev()
        .map(|h| HistoryRow {
            at: ind::time_ms(h.at_ms, lang),
            actor: h.actor.clone(),
            action: action_word(&h.action, &tr),
            indicator: h.indicator_code.clone(),
            old: ind::decimal_text(&h.old_value, lang),
            new: ind::decimal_text(&h.new_value, lang),
            comment: h.comment.clone(),
            version: h.version.to_string(),
        })
        .collect();
    let name = province_name(&loaded.province);
    let (import_errors, import_summary, import_text, import_keep) = match import {
        Some((errors, summary, text, keep)) => (errors, Some(summary), text, keep),
        None => (Vec::new(), None, String::new(), false),
    };
    let base = format!("/reports/{}/{period_id}", loaded.province);
    ReportPage {
        chrome: visit.chrome(
            &tr.with(
                "report-title",
                &[
                    ("province", name.clone()),
                    ("period", ind::period_text(&period_id, &tr)),
                ],
            ),
            "account",
            false,
        ),
        heading: tr.with(
            "report-title",
            &[
                ("province", name),
                ("period", ind::period_text(&period_id, &tr)),
            ],
        ),
        action: base.clone(),
        csrf: live.csrf.clone(),
        state: if loaded.report.is_some() {
            ind::state_text(report.state, &tr)
        } else {
            tr.t("state-not-started")
        },
        state_code: ind::state_code(report.state),
        version: if report.version == 0 {
            "—".to_string()
        } else {
            report.version.to_string()
        },
        deadline: if report.deadline.is_empty() {
            ind::deadline_text(
                &loaded
                    .period
                    .deadline(&period::Deadlines::default())
                    .to_string(),
                lang,
            )
        } else {
            ind::deadline_text(&report.deadline, lang)
        },
        submitted: ind::time_ms(report.submitted_at_ms, lang),
        approved: ind::time_ms(report.approved_at_ms, lang),
        review_comment: report.review_comment.clone(),
        locked,
        fields,
        errors,
        form_error,
        done,
        context: loaded.context.clone(),
        history,
        import_errors,
        import_summary,
        import_text,
        import_keep,
        export: format!("{base}/export.csv"),
        history_csv: format!("{base}/history.csv"),
        back: if is_admin(live) {
            format!("/reports?province={}", loaded.province)
        } else {
            "/reports".to_string()
        },
    }
}

fn done_notice(done: Option<&str>, tr: &crate::i18n::Tr) -> Option<String> {
    match done? {
        d @ ("saved" | "submitted" | "imported" | "approve" | "return" | "reopen") => {
            Some(tr.t(&format!("done-{d}")))
        }
        _ => None,
    }
}

/// `GET /reports/{province}/{period}`: the entry form (read-only once submitted or approved),
/// with last period's values, the gateway's figures for context and the history.
pub async fn report(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
    headers: HeaderMap,
    Path((province, period)): Path<(String, String)>,
    Query(params): Query<PeriodParams>,
) -> Response {
    let live = match signed_in(&visit) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (province, period) = match address(&visit, &headers, live, &province, &period) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let tr = visit.tr();
    let loaded = match load(&web, live, &tr, province, period).await {
        Ok(l) => l,
        Err(err) => return failed(&visit, &headers, &err),
    };
    let page = report_page(
        &visit,
        live,
        &loaded,
        None,
        Vec::new(),
        None,
        done_notice(params.done.as_deref(), &tr),
        None,
    );
    html(&visit, &headers, &page, StatusCode::OK)
}

/// What the entry form sends: `csrf`, `action` (`save` or `submit`), and per indicator
/// `v_{code}`, `c_{code}` (typed) and `o_{code}`, `oc_{code}` (stored, unchanged).
#[derive(Debug, Default)]
pub struct EntryForm {
    /// CSRF token.
    pub csrf: String,
    /// `save` or `submit`.
    pub action: String,
    /// By code: (typed value, typed comment, stored value, stored comment).
    pub fields: std::collections::HashMap<String, [String; 4]>,
}

impl EntryForm {
    /// From the form's pairs (an unknown name is ignored).
    pub fn parse(pairs: Vec<(String, String)>) -> EntryForm {
        let mut form = EntryForm::default();
        for (name, value) in pairs {
            let slot = |prefix: &str| name.strip_prefix(prefix).map(str::to_string);
            if name == "csrf" {
                form.csrf = value;
            } else if name == "action" {
                form.action = value;
            } else if let Some(code) = slot("oc_") {
                form.fields.entry(code).or_default()[3] = value;
            } else if let Some(code) = slot("o_") {
                form.fields.entry(code).or_default()[2] = value;
            } else if let Some(code) = slot("c_") {
                form.fields.entry(code).or_default()[1] = value;
            } else if let Some(code) = slot("v_") {
                form.fields.entry(code).or_default()[0] = value;
            }
        }
        form
    }

    /// The values to send (only those changed), the fields refused here, and the codes in the
    /// order sent (rejections name their index into it).
    pub fn values(
        &self,
        order: &[String],
    ) -> (Vec<ipb::ValueInput>, Vec<(String, String)>, Vec<String>) {
        let mut send = Vec::new();
        let mut refused = Vec::new();
        let mut sent = Vec::new();
        for code in order {
            let Some([typed, comment, stored, stored_comment]) = self.fields.get(code) else {
                continue;
            };
            match ind::parse_value(typed) {
                Err(key) => refused.push((code.clone(), key.to_string())),
                Ok(value) => {
                    if value != *stored || comment.trim() != stored_comment.trim() {
                        sent.push(code.clone());
                        send.push(ipb::ValueInput {
                            indicator_code: code.clone(),
                            value,
                            comment: comment.trim().to_string(),
                        });
                    }
                }
            }
        }
        (send, refused, sent)
    }
}

fn post_checks<'a>(
    visit: &'a Visit,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<&'a Session, Box<Response>> {
    let live = signed_in(visit)?;
    if !visit.same_origin || !session::csrf_matches(csrf, &live.csrf) {
        return Err(Box::new(csrf_refused(visit, headers)));
    }
    Ok(live)
}

/// `POST /reports/{province}/{period}`: saves the typed values (and submits, for
/// `action=submit`); refused values come back beside their fields.
pub async fn save_report(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
    headers: HeaderMap,
    Path((province, period)): Path<(String, String)>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let form = EntryForm::parse(pairs);
    let live = match post_checks(&visit, &headers, &form.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (province, period) = match address(&visit, &headers, live, &province, &period) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let tr = visit.tr();
    let mut loaded = match load(&web, live, &tr, province, period).await {
        Ok(l) => l,
        Err(err) => return failed(&visit, &headers, &err),
    };
    let order: Vec<String> = loaded.indicators.iter().map(|i| i.code.clone()).collect();
    let labels: Vec<(String, String)> = loaded
        .indicators
        .iter()
        .map(|i| (i.code.clone(), ind::name(i, tr.lang())))
        .collect();
    let (send, refused, sent) = form.values(&order);
    let refused: Vec<(String, String)> = refused
        .into_iter()
        .map(|(code, key)| (code, tr.t(&key)))
        .collect();
    let typed: Typed = form
        .fields
        .iter()
        .map(|(code, [v, c, _, _])| (code.clone(), (v.clone(), c.clone())))
        .collect();
    let period_id = loaded.period.to_string();
    let mut rejections = Vec::new();
    let mut form_error = None;
    if !send.is_empty() {
        let request = ipb::SaveReportRequest {
            province_code: loaded.province.clone(),
            period: period_id.clone(),
            values: send,
        };
        match web.backend.save(&live.bearer, request).await {
            Ok(answer) => {
                if answer.report.is_some() {
                    loaded.report = answer.report;
                }
                rejections = answer.rejections;
            }
            Err(err)
                if matches!(
                    err.code,
                    ErrorCode::FailedPrecondition | ErrorCode::InvalidArgument
                ) =>
            {
                form_error = Some(err.message)
            }
            Err(err) => return failed(&visit, &headers, &err),
        }
    }
    let errors = ind::field_errors(&labels, &refused, &rejections, &sent);
    if errors.is_empty() && form_error.is_none() && form.action == "submit" {
        match web
            .backend
            .submit(&live.bearer, &loaded.province, &period_id)
            .await
        {
            Ok(_) => {
                return Redirect::to(&format!(
                    "/reports/{}/{period_id}?done=submitted",
                    loaded.province
                ))
                .into_response()
            }
            Err(err)
                if matches!(
                    err.code,
                    ErrorCode::FailedPrecondition | ErrorCode::InvalidArgument
                ) =>
            {
                form_error = Some(err.message)
            }
            Err(err) => return failed(&visit, &headers, &err),
        }
    }
    if errors.is_empty() && form_error.is_none() {
        return Redirect::to(&format!(
            "/reports/{}/{period_id}?done=saved",
            loaded.province
        ))
        .into_response();
    }
    let page = report_page(
        &visit,
        live,
        &loaded,
        Some(&typed),
        errors,
        form_error,
        None,
        None,
    );
    html(&visit, &headers, &page, StatusCode::UNPROCESSABLE_ENTITY)
}

/// The import form (`multipart/form-data`): `csrf`, `file` (the CSV file chosen), `csv` (its
/// text pasted instead, for a phone without files at hand), `keep` (checkbox).
#[derive(Debug, Default)]
pub struct ImportForm {
    /// CSRF token.
    pub csrf: String,
    /// The file's bytes as sent (UTF-8 or Windows-1258: the indicators service detects which).
    pub file: Vec<u8>,
    /// The pasted text.
    pub csv: String,
    /// "Keep the valid lines".
    pub keep: bool,
}

impl ImportForm {
    /// Reads the form's parts; an unknown part is ignored, an unreadable body is `Err`.
    pub async fn read(mut multipart: Multipart) -> Result<ImportForm, String> {
        let mut form = ImportForm::default();
        while let Some(field) = multipart.next_field().await.map_err(|e| e.to_string())? {
            let name = field.name().unwrap_or_default().to_string();
            let bytes = field.bytes().await.map_err(|e| e.to_string())?;
            match name.as_str() {
                "csrf" => form.csrf = String::from_utf8_lossy(&bytes).into_owned(),
                "file" => form.file = bytes.to_vec(),
                "csv" => form.csv = String::from_utf8_lossy(&bytes).into_owned(),
                "keep" => form.keep = !bytes.is_empty(),
                _ => {}
            }
        }
        Ok(form)
    }

    /// What to import: the file if one was chosen, else the pasted text.
    pub fn content(&self) -> Vec<u8> {
        if self.file.is_empty() {
            self.csv.clone().into_bytes()
        } else {
            self.file.clone()
        }
    }
}

/// `POST /reports/{province}/{period}/import`: imports a CSV file (or pasted lines) into the
/// report; the refused lines come back in a table, with pasted text kept.
pub async fn import_report(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
    headers: HeaderMap,
    Path((province, period)): Path<(String, String)>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let form = match multipart {
        Ok(m) => ImportForm::read(m).await,
        Err(err) => Err(err.to_string()),
    };
    let form = match form {
        Ok(f) => f,
        Err(reason) => {
            tracing::info!(%reason, "an import form could not be read");
            // Without its parts there is no CSRF token to check: refused like a forged form.
            return csrf_refused(&visit, &headers);
        }
    };
    let live = match post_checks(&visit, &headers, &form.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (province, period) = match address(&visit, &headers, live, &province, &period) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let tr = visit.tr();
    let keep = form.keep;
    let period_id = period.to_string();
    let answer = web
        .backend
        .import(
            &live.bearer,
            ipb::ImportReportRequest {
                content: form.content(),
                keep_valid_lines: keep,
                province_code: province.clone(),
                period: period_id.clone(),
            },
        )
        .await;
    let (errors, summary) = match answer {
        Ok(a) if a.rejections.is_empty() && a.stored => {
            return Redirect::to(&format!("/reports/{province}/{period_id}?done=imported"))
                .into_response()
        }
        Ok(a) => (
            a.rejections
                .iter()
                .map(|r| ImportError {
                    line: r.index.to_string(),
                    code: r.indicator_code.clone(),
                    reason: r.reason.clone(),
                })
                .collect(),
            tr.with(
                if a.stored {
                    "import-partly"
                } else {
                    "import-refused"
                },
                &[
                    ("lines", a.lines.to_string()),
                    ("saved", a.saved.to_string()),
                    ("refused", a.rejections.len().to_string()),
                ],
            ),
        ),
        Err(err)
            if matches!(
                err.code,
                ErrorCode::FailedPrecondition | ErrorCode::InvalidArgument
            ) =>
        {
            (Vec::new(), err.message)
        }
        Err(err) => return failed(&visit, &headers, &err),
    };
    let loaded = match load(&web, live, &tr, province, period).await {
        Ok(l) => l,
        Err(err) => return failed(&visit, &headers, &err),
    };
    let page = report_page(
        &visit,
        live,
        &loaded,
        None,
        Vec::new(),
        None,
        None,
        Some((errors, summary, form.csv, keep)),
    );
    html(&visit, &headers, &page, StatusCode::UNPROCESSABLE_ENTITY)
}

/// `GET /reports/{province}/{period}/export.csv`: the report as the indicators service
/// writes it (the same columns the import reads).
pub async fn export_report(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
    headers: HeaderMap,
    Path((province, period)): Path<(String, String)>,
) -> Response {
    let live = match signed_in(&visit) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (province, period) = match address(&visit, &headers, live, &province, &period) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match web
        .backend
        .export(&live.bearer, &province, &period.to_string())
        .await
    {
        Ok(file) => {
            let name = if file.filename.is_empty() {
                format!("bao-cao-{province}-{period}.csv")
            } else {
                file.filename
            };
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        agriportal_platform::csv::content_disposition(&name),
                    ),
                    (header::CACHE_CONTROL, "private, no-store".to_string()),
                ],
                file.content,
            )
                .into_response()
        }
        Err(err) => failed(&visit, &headers, &err),
    }
}

/// `GET /reports/{province}/{period}/history.csv`: the report's audit table.
pub async fn history_csv(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
    headers: HeaderMap,
    Path((province, period)): Path<(String, String)>,
) -> Response {
    let live = match signed_in(&visit) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (province, period) = match address(&visit, &headers, live, &province, &period) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let tr = visit.tr();
    let lang = tr.lang();
    let report = match web
        .backend
        .report(&live.bearer, &province, &period.to_string())
        .await
    {
        Ok(r) => r,
        Err(err) => return failed(&visit, &headers, &err),
    };
    let header = vec![
        tr.t("col-time"),
        tr.t("col-actor"),
        tr.t("col-action"),
        tr.t("col-indicator"),
        tr.t("col-old"),
        tr.t("col-new"),
        tr.t("entry-comment"),
        tr.t("col-version"),
    ];
    // Values as the service stores them (a point for decimals), so a spreadsheet or a
    // re-import reads them exactly; times in Vietnam time.
    let rows: Vec<Vec<String>> = report
        .history
        .iter()
        .map(|h| {
            vec![
                ind::time_ms(h.at_ms, lang),
                h.actor.clone(),
                action_word(&h.action, &tr),
                h.indicator_code.clone(),
                h.old_value.clone(),
                h.new_value.clone(),
                h.comment.clone(),
                h.version.to_string(),
            ]
        })
        .collect();
    no_store(csv_response(
        &header,
        &rows,
        &format!("lich-su-{province}-{period}.csv"),
    ))
}

// ---------------------------------------------------------------------------------------
// Centre: /review and /chase

/// `/review`.
#[derive(Template)]
#[template(path = "review.html")]
pub struct ReviewPage {
    /// Layout.
    pub chrome: Chrome,
    /// CSRF token.
    pub csrf: String,
    /// Submitted reports, oldest submission first, at most [`QUEUE_SHOWN`], unless the
    /// service did not answer.
    pub queue: Option<Vec<ReportRow>>,
    /// "20 of 31 shown…" when the queue is longer than what is shown.
    pub queue_more: Option<String>,
    /// Approved reports of one period (to reopen).
    pub approved: Option<Vec<ReportRow>>,
    /// The periods that have approved reports, newest first, for the period picker.
    pub approved_periods: Vec<PeriodChoice>,
    /// Errors for the summary (the comment field of one form).
    pub errors: Vec<FieldError>,
    /// What was typed into the refused form's comment.
    pub typed: String,
    /// A refusal of the whole decision.
    pub form_error: Option<String>,
    /// A notice after a decision.
    pub done: Option<String>,
}

impl ReviewPage {
    /// The id of the comment field of `action` on `row`'s form.
    pub fn comment_id(&self, action: &str, row: &ReportRow) -> String {
        format!("comment-{action}-{}-{}", row.province_code, row.period_id)
    }

    /// The error of that field, if it is the refused one.
    pub fn error_of(&self, action: &str, row: &ReportRow) -> Option<String> {
        let id = self.comment_id(action, row);
        self.errors
            .iter()
            .find(|e| e.field == id)
            .map(|e| e.message.clone())
    }
}

/// A period the approved list can show.
#[derive(Clone, Debug)]
pub struct PeriodChoice {
    /// Period id.
    pub id: String,
    /// In words.
    pub label: String,
    /// Whether it is the one shown.
    pub selected: bool,
}

/// Submitted reports shown at once: the oldest first, so the page stays light (a phone on a
/// slow network) however long the queue grows; the next ones appear as these are decided.
const QUEUE_SHOWN: usize = 20;

#[allow(clippy::too_many_arguments)]
async fn review_page(
    web: &Web,
    visit: &Visit,
    live: &Session,
    errors: Vec<FieldError>,
    typed: String,
    form_error: Option<String>,
    done: Option<String>,
    approved_period: Option<&str>,
) -> Result<ReviewPage, Error> {
    let tr = visit.tr();
    let (queue, approved) = tokio::join!(
        web.backend
            .reports(&live.bearer, "", ipb::ReportState::Submitted, ""),
        web.backend
            .reports(&live.bearer, "", ipb::ReportState::Approved, ""),
    );
    let answered = |r: Result<Vec<ipb::ReportSummary>, Error>| match r {
        Ok(all) => Ok(Some(all)),
        Err(err) if away(&err) => Ok(None),
        Err(err) => Err(err),
    };
    let (mut queue_more, mut approved_periods) = (None, Vec::new());
    let queue = answered(queue)?.map(|mut all| {
        all.sort_by_key(|r| (r.submitted_at_ms, r.province_code.clone()));
        if all.len() > QUEUE_SHOWN {
            queue_more = Some(tr.with(
                "review-queue-more",
                &[
                    ("shown", QUEUE_SHOWN.to_string()),
                    ("total", all.len().to_string()),
                ],
            ));
        }
        all.iter()
            .take(QUEUE_SHOWN)
            .map(|r| report_row(r, &tr))
            .collect::<Vec<_>>()
    });
    let approved = answered(approved)?.map(|all| {
        let mut periods: Vec<&str> = all.iter().map(|r| r.period.as_str()).collect();
        periods.sort_unstable_by(|a, b| b.cmp(a));
        periods.dedup();
        let chosen = approved_period
            .filter(|p| periods.contains(p))
            .or(periods.first().copied())
            .unwrap_or_default()
            .to_string();
        approved_periods = periods
            .iter()
            .map(|p| PeriodChoice {
                id: p.to_string(),
                label: all
                    .iter()
                    .find(|r| r.period == *p)
                    .map(|r| report_row(r, &tr).period)
                    .unwrap_or_default(),
                selected: *p == chosen,
            })
            .collect();
        all.iter()
            .filter(|r| r.period == chosen)
            .take(LIST_LIMIT)
            .map(|r| report_row(r, &tr))
            .collect::<Vec<_>>()
    });
    Ok(ReviewPage {
        chrome: visit.chrome(&tr.t("review-title"), "account", false),
        csrf: live.csrf.clone(),
        queue,
        queue_more,
        approved,
        approved_periods,
        errors,
        typed,
        form_error,
        done,
    })
}

/// `GET /review`: the review queue, with approve and return forms per report, and reopen on
/// approved reports (admins only).
pub async fn review(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
    headers: HeaderMap,
    Query(params): Query<PeriodParams>,
) -> Response {
    let live = match signed_in(&visit) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if !is_admin(live) {
        return forbidden_page(&visit, &headers);
    }
    let tr = visit.tr();
    match review_page(
        &web,
        &visit,
        live,
        Vec::new(),
        String::new(),
        None,
        done_notice(params.done.as_deref(), &tr),
        params.period.as_deref(),
    )
    .await
    {
        Ok(page) => html(&visit, &headers, &page, StatusCode::OK),
        Err(err) => failed(&visit, &headers, &err),
    }
}

/// A review decision's form.
#[derive(Debug, Default, Deserialize)]
pub struct ReviewForm {
    /// CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// `approve`, `return` or `reopen`.
    #[serde(default)]
    pub action: String,
    /// Province code.
    #[serde(default)]
    pub province: String,
    /// Period id.
    #[serde(default)]
    pub period: String,
    /// Comment (required to return or reopen).
    #[serde(default)]
    pub comment: String,
}

/// `POST /review`: approves, returns or reopens a report; a return or reopen without a
/// comment is refused beside the comment field.
pub async fn decide(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
    headers: HeaderMap,
    Form(form): Form<ReviewForm>,
) -> Response {
    let live = match post_checks(&visit, &headers, &form.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if !is_admin(live) {
        return forbidden_page(&visit, &headers);
    }
    let tr = visit.tr();
    let Some(decision) = Decision::parse(&form.action) else {
        return not_found_page(&visit, &headers);
    };
    let (Some(province), Ok(period)) = (
        Reference::get()
            .resolve_province(form.province.trim())
            .map(|p| p.province().code.clone()),
        Period::parse(&form.period),
    ) else {
        return not_found_page(&visit, &headers);
    };
    let comment = form.comment.trim().to_string();
    let field = format!("comment-{}-{province}-{period}", decision.code());
    let label = format!(
        "{} · {}",
        province_name(&province),
        ind::period_text(&period.to_string(), &tr)
    );
    let refuse = |message: String| {
        vec![FieldError {
            field: field.clone(),
            label: label.clone(),
            message,
        }]
    };
    if decision.needs_comment() && comment.is_empty() {
        let key = if decision == Decision::Return {
            "review-return-needs-comment"
        } else {
            "review-reopen-needs-reason"
        };
        let errors = refuse(tr.t(key));
        return match review_page(&web, &visit, live, errors, String::new(), None, None, None).await
        {
            Ok(page) => html(&visit, &headers, &page, StatusCode::UNPROCESSABLE_ENTITY),
            Err(err) => failed(&visit, &headers, &err),
        };
    }
    let request = ipb::ReviewRequest {
        province_code: province.clone(),
        period: period.to_string(),
        comment: comment.clone(),
    };
    match web.backend.review(&live.bearer, decision, request).await {
        Ok(_) => Redirect::to(&format!("/review?done={}", decision.code())).into_response(),
        Err(err)
            if matches!(
                err.code,
                ErrorCode::FailedPrecondition | ErrorCode::InvalidArgument
            ) =>
        {
            let errors = refuse(err.message.clone());
            match review_page(&web, &visit, live, errors, comment, None, None, None).await {
                Ok(page) => html(&visit, &headers, &page, StatusCode::UNPROCESSABLE_ENTITY),
                Err(err) => failed(&visit, &headers, &err),
            }
        }
        Err(err) => failed(&visit, &headers, &err),
    }
}

/// One province on the chase list.
#[derive(Clone, Debug)]
pub struct ChaseRow {
    /// Province name.
    pub name: String,
    /// Its report (the entry form).
    pub href: String,
    /// State in words.
    pub state: String,
    /// State code.
    pub state_code: &'static str,
    /// "Quá hạn" / "Overdue", or empty.
    pub overdue: String,
    /// Submitted at.
    pub submitted: String,
    /// On time, in words.
    pub on_time: String,
    /// Approved at.
    pub approved: String,
}

/// `/chase`.
#[derive(Template)]
#[template(path = "chase.html")]
pub struct ChasePage {
    /// Layout.
    pub chrome: Chrome,
    /// The period asked for.
    pub period_input: String,
    /// The period in words.
    pub period: String,
    /// Deadline.
    pub deadline: String,
    /// Counts in words: (label, count).
    pub counts: Vec<(String, String)>,
    /// The provinces, most urgent first, unless the service did not answer.
    pub rows: Option<Vec<ChaseRow>>,
    /// A refused period.
    pub error: Option<String>,
    /// The CSV link.
    pub csv: String,
}

/// The chase list's rows (most urgent first: missing, draft, returned when overdue, then
/// the same not yet overdue, then submitted and approved) and counts.
pub fn chase_rows(
    c: &ipb::GetCompletenessResponse,
    tr: &crate::i18n::Tr,
) -> (Vec<ChaseRow>, Vec<(String, String)>) {
    let lang = tr.lang();
    let mut provinces = c.provinces.clone();
    provinces.sort_by(|a, b| {
        ind::chase_rank(a.state, a.overdue)
            .cmp(&ind::chase_rank(b.state, b.overdue))
            .then_with(|| a.province_code.cmp(&b.province_code))
    });
    let rows = provinces
        .iter()
        .map(|p| ChaseRow {
            name: if p.province_name.is_empty() {
                province_name(&p.province_code)
            } else {
                p.province_name.clone()
            },
            href: format!("/reports/{}/{}", p.province_code, c.period),
            state: ind::state_text(p.state, tr),
            state_code: ind::state_code(p.state),
            overdue: if p.overdue {
                tr.t("chase-overdue")
            } else {
                String::new()
            },
            submitted: ind::time_ms(p.submitted_at_ms, lang),
            on_time: if p.submitted_at_ms <= 0 {
                String::new()
            } else if p.on_time {
                tr.t("chase-on-time")
            } else {
                tr.t("chase-late")
            },
            approved: ind::time_ms(p.approved_at_ms, lang),
        })
        .collect();
    let count = |f: &dyn Fn(&ipb::ProvinceCompleteness) -> bool| {
        crate::format::integer(c.provinces.iter().filter(|p| f(p)).count() as i64, lang)
    };
    let is = |s: ipb::ReportState| move |p: &ipb::ProvinceCompleteness| p.state == s as i32;
    let counts = vec![
        (
            tr.t("state-missing"),
            count(&is(ipb::ReportState::Unspecified)),
        ),
        (tr.t("state-draft"), count(&is(ipb::ReportState::Draft))),
        (
            tr.t("state-returned"),
            count(&is(ipb::ReportState::Returned)),
        ),
        (
            tr.t("state-submitted"),
            count(&is(ipb::ReportState::Submitted)),
        ),
        (
            tr.t("state-approved"),
            count(&is(ipb::ReportState::Approved)),
        ),
        (tr.t("chase-overdue"), count(&|p| p.overdue)),
    ];
    (rows, counts)
}

/// `GET /chase?period=`: every province's reporting for the period, most urgent first
/// (admins only).
pub async fn chase(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
    headers: HeaderMap,
    Query(params): Query<PeriodParams>,
) -> Response {
    let live = match signed_in(&visit) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if !is_admin(live) {
        return forbidden_page(&visit, &headers);
    }
    let tr = visit.tr();
    let asked = params.period.clone().unwrap_or_default();
    let mut page = ChasePage {
        chrome: visit.chrome(&tr.t("chase-title"), "account", false),
        period_input: asked.trim().to_string(),
        period: String::new(),
        deadline: String::new(),
        counts: Vec::new(),
        rows: None,
        error: None,
        csv: String::new(),
    };
    let Ok(period) = clean_period(Some(&asked)) else {
        page.error = Some(tr.t("chase-bad-period"));
        return html(&visit, &headers, &page, StatusCode::BAD_REQUEST);
    };
    match web.backend.completeness(&live.bearer, &period).await {
        Ok(c) => {
            let (rows, counts) = chase_rows(&c, &tr);
            page.period = ind::period_text(&c.period, &tr);
            page.deadline = ind::deadline_text(&c.deadline, tr.lang());
            page.csv = format!("/chase.csv?period={}", c.period);
            page.rows = Some(rows);
            page.counts = counts;
        }
        Err(err) if away(&err) => {}
        Err(err) => return failed(&visit, &headers, &err),
    }
    html(&visit, &headers, &page, StatusCode::OK)
}

/// `GET /chase.csv?period=`: the chase list's table.
pub async fn chase_csv(
    State(web): State<Arc<Web>>,
    Extension(visit): Extension<Visit>,
    headers: HeaderMap,
    Query(params): Query<PeriodParams>,
) -> Response {
    let live = match signed_in(&visit) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if !is_admin(live) {
        return forbidden_page(&visit, &headers);
    }
    let tr = visit.tr();
    let Ok(period) = clean_period(params.period.as_deref()) else {
        return not_found_page(&visit, &headers);
    };
    let c = match web.backend.completeness(&live.bearer, &period).await {
        Ok(c) => c,
        Err(err) => return failed(&visit, &headers, &err),
    };
    let (rows, _) = chase_rows(&c, &tr);
    let header = vec![
        tr.t("col-province"),
        tr.t("col-state"),
        tr.t("chase-overdue"),
        tr.t("col-submitted"),
        tr.t("col-on-time"),
        tr.t("col-approved"),
    ];
    let cells: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            vec![
                r.name,
                r.state,
                r.overdue,
                r.submitted,
                r.on_time,
                r.approved,
            ]
        })
        .collect();
    no_store(csv_response(
        &header,
        &cells,
        &format!("don-doc-{}.csv", c.period),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Lang;
    use crate::i18n::Tr;

    #[test]
    fn the_entry_form_sends_only_changed_values_and_refuses_what_is_not_a_number() {
        let pairs = vec![
            ("csrf".to_string(), "t".to_string()),
            ("action".to_string(), "save".to_string()),
            ("v_A".to_string(), "12,5".to_string()),
            ("o_A".to_string(), "10".to_string()),
            ("v_B".to_string(), "7".to_string()),
            ("o_B".to_string(), "7".to_string()),
            ("v_C".to_string(), "abc".to_string()),
            ("v_D".to_string(), "3".to_string()),
            ("o_D".to_string(), "3".to_string()),
            ("c_D".to_string(), "source: survey".to_string()),
            ("v_E".to_string(), String::new()),
            ("o_E".to_string(), "4".to_string()),
        ];
        let form = EntryForm::parse(pairs);
        assert_eq!(form.csrf, "t");
        let order: Vec<String> = ["A", "B", "C", "D", "E", "Z"].map(String::from).to_vec();
        let (send, refused, sent) = form.values(&order);
        assert_eq!(sent, vec!["A", "D", "E"]);
        assert_eq!(send[0].value, "12.5");
        assert_eq!(send[1].comment, "source: survey");
        assert_eq!(send[2].value, "", "an emptied field removes the value");
        assert_eq!(
            refused,
            vec![("C".to_string(), "value-not-number".to_string())]
        );
    }

    #[test]
    fn an_indicator_page_shows_words_for_missing_values_and_a_chart_with_its_table() {
        let tr = Tr::new(Lang::En);
        let indicator = ipb::Indicator {
            code: "QA_RESPONSE_HOURS".into(),
            name_en: "Q&A response time".into(),
            unit: "hours".into(),
            source: ipb::Source::Qa as i32,
            scale: 1,
            ..Default::default()
        };
        let value = |v: &str| gpb::Figure {
            has_value: true,
            value: v.into(),
            ..Default::default()
        };
        let progress = gpb::IndicatorProgress {
            indicator: Some(indicator),
            period: "202611".into(),
            national: Some(gpb::Figure {
                missing_reason: "no_source".into(),
                ..Default::default()
            }),
            provinces: vec![gpb::ProvinceFigure {
                code: "79".into(),
                name: "Thành phố Hồ Chí Minh".into(),
                figure: None,
                state: String::new(),
                region: "south".into(),
            }],
            series: vec![
                gpb::PeriodFigure {
                    period: "202610".into(),
                    figure: Some(value("12.5")),
                },
                gpb::PeriodFigure {
                    period: "202611".into(),
                    figure: Some(gpb::Figure::default()),
                },
            ],
            regions: Vec::new(),
        };
        let block = indicator_block(&progress, &tr).unwrap();
        assert_eq!(block.value, tr.t("figure-no-source"));
        assert_eq!(block.provinces[0].value, tr.t("figure-no-source"));
        assert_eq!(
            block.series[0],
            ("Oct 2026".to_string(), "12.5\u{a0}hours".to_string())
        );
        assert_eq!(block.series[1].1, tr.t("figure-no-source"));
        assert!(block.svg.contains("role=\"img\""));
        assert!(block
            .periods
            .iter()
            .any(|o| o.selected && o.value == "202611"));
        assert!(!block.reported);
    }

    fn visit(lang: Lang) -> Visit {
        Visit {
            lang,
            lang_chosen: false,
            session: None,
            expired: false,
            cookies: String::new(),
            path: "/reports/79/202611".into(),
            query: String::new(),
            same_origin: true,
            signed_out: false,
        }
    }

    fn officer() -> Session {
        Session {
            principal: session::Principal {
                subject: "t1".into(),
                role: "province".into(),
                province: Some("79".into()),
                token_id: Some("t1".into()),
            },
            bearer: session::Bearer("ap1.x".into()),
            csrf: "c".repeat(64),
            expires_at_ms: 0,
        }
    }

    fn loaded(state: ipb::ReportState) -> Loaded {
        let indicator = |code: &str, name: &str, scale: u32| ipb::Indicator {
            code: code.into(),
            name_vi: name.into(),
            name_en: name.into(),
            unit: "tonnes".into(),
            period_type: ipb::PeriodType::Month as i32,
            source: ipb::Source::Province as i32,
            scale,
            min_value: "0".into(),
            ..Default::default()
        };
        let value = |code: &str, v: &str| ipb::ReportedValue {
            indicator_code: code.into(),
            value: v.into(),
            ..Default::default()
        };
        Loaded {
            province: "79".into(),
            period: Period::parse("202611").unwrap(),
            indicators: vec![
                indicator("TONNES", "Sản lượng", 1),
                indicator("SHOPS", "Gian hàng", 0),
            ],
            report: Some(ipb::Report {
                province_code: "79".into(),
                period: "202611".into(),
                state: state as i32,
                version: 1,
                values: vec![value("TONNES", "12.5")],
                deadline: "2026-12-05".into(),
                history: vec![ipb::AuditEntry {
                    at_ms: 1_796_108_700_000,
                    actor: "province:79".into(),
                    action: "save".into(),
                    indicator_code: "TONNES".into(),
                    new_value: "12.5".into(),
                    version: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            previous: Some(ipb::Report {
                values: vec![value("SHOPS", "40")],
                ..Default::default()
            }),
            context: None,
        }
    }

    #[test]
    fn a_refused_value_is_marked_beside_its_field_kept_and_listed_at_the_top() {
        let visit = visit(Lang::Vi);
        let live = officer();
        let loaded = loaded(ipb::ReportState::Draft);
        let mut typed = Typed::new();
        typed.insert("SHOPS".into(), ("-3".into(), "kiểm kê".into()));
        let errors = vec![FieldError {
            field: "v-SHOPS".into(),
            label: "Gian hàng".into(),
            message: "must be at least 0".into(),
        }];
        let page = report_page(
            &visit,
            &live,
            &loaded,
            Some(&typed),
            errors,
            None,
            None,
            None,
        );
        let body = page.render().unwrap();
        assert!(
            body.contains(r##"<a href="#v-SHOPS">Gian hàng: must be at least 0</a>"##),
            "{body}"
        );
        assert!(body.contains(r#"id="v-SHOPS-error""#));
        assert!(
            body.contains(r#"aria-describedby="v-SHOPS-hint v-SHOPS-error" aria-invalid="true""#)
        );
        assert!(
            body.contains(r#"name="v_SHOPS" value="-3""#),
            "what was typed is kept"
        );
        assert!(body.contains(r#"value="kiểm kê""#));
        // The stored value is shown with the reader's decimal mark; the other field is fine.
        assert!(body.contains(r#"name="v_TONNES" value="12,5""#));
        assert!(body.contains(r#"aria-describedby="v-TONNES-hint">"#));
        assert!(!body.contains(r#"id="v-TONNES-error""#));
        // Last period's value beside the field, the buttons, the CSRF token, the history.
        assert!(body.contains("Kỳ trước: 40\u{a0}tấn"));
        assert!(body.contains("Lưu nháp") && body.contains("Nộp báo cáo"));
        assert!(body.contains(&format!(r#"name="csrf" value="{}""#, live.csrf)));
        assert!(body.contains("14:05 01/12/2026"));
        assert!(body.contains("Bản nháp"));
        assert!(body.contains(r#"action="/reports/79/202611/import""#));
        assert!(body.contains(r#"href="/reports/79/202611/export.csv""#));
        assert!(!body.contains("ap1.x"), "the token never reaches the page");
    }

    #[test]
    fn an_approved_report_is_read_only_with_the_reason() {
        let visit = visit(Lang::En);
        let page = report_page(
            &visit,
            &officer(),
            &loaded(ipb::ReportState::Approved),
            None,
            Vec::new(),
            None,
            None,
            None,
        );
        let body = page.render().unwrap();
        assert!(body.contains(&Tr::new(Lang::En).t("locked-approved")));
        assert!(!body.contains(r#"name="v_TONNES""#));
        assert!(!body.contains("Save draft"));
        assert!(body.contains("12.5\u{a0}tonnes"));
    }

    #[test]
    fn the_chase_list_puts_missing_and_overdue_first_and_counts_states() {
        let tr = Tr::new(Lang::Vi);
        let p = |code: &str, state: ipb::ReportState, overdue: bool| ipb::ProvinceCompleteness {
            province_code: code.into(),
            province_name: format!("P{code}"),
            state: state as i32,
            overdue,
            ..Default::default()
        };
        let c = ipb::GetCompletenessResponse {
            period: "202611".into(),
            deadline: "2026-12-05".into(),
            provinces: vec![
                p("01", ipb::ReportState::Approved, false),
                p("02", ipb::ReportState::Draft, true),
                p("04", ipb::ReportState::Unspecified, true),
                p("08", ipb::ReportState::Submitted, false),
            ],
        };
        let (rows, counts) = chase_rows(&c, &tr);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["P04", "P02", "P08", "P01"]);
        assert_eq!(rows[0].overdue, tr.t("chase-overdue"));
        assert_eq!(rows[0].href, "/reports/04/202611");
        assert_eq!(counts[0], (tr.t("state-missing"), "1".to_string()));
        assert_eq!(counts[5], (tr.t("chase-overdue"), "2".to_string()));
    }
}
