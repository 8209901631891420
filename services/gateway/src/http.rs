//! The HTTP adapter: the public JSON API, over the shared dashboard queries. The kit nests it
//! under the gateway's prefix `/api`, so the routes below are relative to it (`/v1/national` is
//! `/api/v1/national`). Errors are JSON bodies naming the problem (`{"error": {code, message}}`),
//! for unknown paths under `/api` too; the pages are the web front end's.

use std::sync::Arc;

use agriportal_platform::{csv, http, Error};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use agriportal_platform::period::Period;
use agriportal_proto::indicators::v1 as ipb;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use crate::domain::{Aggregation, Figure, Missing, SeriesParams, SeriesQuery};
use crate::error::bad_parameter;
use crate::openapi;
use crate::series::SeriesCache;
use crate::service::{
    period_type, vietnam_time, CommunesView, CompletenessView, Dashboard, IndicatorProgressView,
    IndicatorSummaryView, PlaceFigure,
};
use crate::snapshot::JsonBody;

/// Routes of the gateway's HTTP API, relative to its prefix `/api`: every answer goes through
/// [`caching`] (an `ETag`, `304`, `Cache-Control`) and [`cors`] (any origin may read it).
/// The routes and the OpenAPI document come from one list (`utoipa_axum`), so no route can be
/// served undocumented; the document is served at `/v1/openapi.json`.
pub fn router(dashboard: Dashboard) -> Router {
    let (routes, doc) = documented_routes().split_for_parts();
    let doc = openapi::finish(doc);
    // Serialised once: the document cannot change while the process runs.
    let document = OpenApiJson(match doc.to_json() {
        Ok(json) => axum::body::Bytes::from(json),
        Err(err) => {
            tracing::error!(error = %err, "serialising the OpenAPI document");
            axum::body::Bytes::new()
        }
    });
    routes
        .fallback(not_found)
        .with_state(dashboard)
        .layer(axum::Extension(document))
        .layer(axum::Extension(SeriesBodies::default()))
        // Inside CORS, so a `304` and an error carry its headers too.
        .layer(axum::middleware::from_fn(caching))
        .layer(cors())
}

/// The public API's OpenAPI 3.1 document, with the paths clients call (`/api/v1/…`).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    openapi::finish(documented_routes().split_for_parts().1)
}

fn documented_routes() -> OpenApiRouter<Dashboard> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(national))
        .routes(routes!(provinces))
        .routes(routes!(province))
        .routes(routes!(timeseries))
        .routes(routes!(indicators))
        .routes(routes!(indicator))
        .routes(routes!(completeness))
        .routes(routes!(openapi_json))
}

/// The serialised document, handed to its route as an extension.
#[derive(Clone)]
struct OpenApiJson(axum::body::Bytes);

/// Time series' bodies with their tags, serialised once per query and figures' version: a year
/// by day is 14.7 kB of JSON, which cost more than the rest of the request when serialised per
/// request. Dropped when the snapshot's version moves, like the series they are made of.
#[derive(Clone, Default)]
struct SeriesBodies(Arc<SeriesCache<SeriesQuery, JsonBody>>);

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    summary = "This API's OpenAPI 3.1 document",
    responses((status = 200, description = "The document", body = Object, content_type = "application/json")),
)]
async fn openapi_json(
    axum::Extension(doc): axum::Extension<OpenApiJson>,
) -> Result<Response, Error> {
    if doc.0.is_empty() {
        return Err(Error::internal(
            "the OpenAPI document could not be serialised",
        ));
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], doc.0).into_response())
}

/// Caching of a successful answer: dashboards poll, and figures a second old are fine. Past
/// that second a cache may still answer from its copy for 5 s while it revalidates in the
/// background (`stale-while-revalidate`, RFC 5861), so when thousands read at once a shared
/// cache asks the gateway once, conditionally, instead of holding them all; a reader
/// polling more often than every 6 s sees figures at most one poll behind. If the gateway
/// fails or sheds, a cache may go on showing the last figures for a minute
/// (`stale-if-error`) rather than an error page.
pub(crate) const CACHE_CONTROL: &str =
    "public, max-age=1, stale-while-revalidate=5, stale-if-error=60";

/// No cache keeps an error: the next request must ask again.
const NO_STORE: &str = "no-store";

/// What browsers may cache a preflight answer for (Chromium caps it at 2 hours).
const PREFLIGHT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2 * 60 * 60);

/// Cross-origin reads: any origin may `GET` and `HEAD` the public API (a preflight `OPTIONS`
/// is answered here), never with credentials (`Access-Control-Allow-Credentials` is never
/// sent, and `Allow-Headers: *` does not cover `Authorization`). `ETag` is exposed so a
/// dashboard's script can send it back; `Retry-After` and `Content-Disposition` for
/// refusals and CSV files. The answer is the same whatever the origin (`*`), so no `Vary`
/// is added: `Vary: Origin` would only split shared caches by origin.
fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::Method;
    use tower_http::cors::{Any, CorsLayer};
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD])
        .allow_headers(Any)
        .expose_headers([
            header::ETAG,
            header::RETRY_AFTER,
            header::CONTENT_DISPOSITION,
        ])
        .max_age(PREFLIGHT_MAX_AGE)
        .vary([])
}

/// Gives every successful answer a strong `ETag` of its exact bytes
/// ([`agriportal_platform::http::entity_tag`]) and [`CACHE_CONTROL`], and answers
/// `304 Not Modified` (the tag and caching, no body) when the request's `If-None-Match` has
/// it; errors get `Cache-Control: no-store` and no tag. One layer rather than each handler,
/// so no route, JSON or CSV, can forget it.
async fn caching(request: Request, next: Next) -> Response {
    // Only the `If-None-Match` lines are kept across the handler: copying the whole header
    // map cost an allocation per header on every request, and without the field (most
    // requests) an empty map allocates nothing.
    let mut conditions = axum::http::HeaderMap::new();
    for value in request.headers().get_all(header::IF_NONE_MATCH) {
        conditions.append(header::IF_NONE_MATCH, value.clone());
    }
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        let mut response = response;
        let failed = !response.status().is_success();
        let headers = response.headers_mut();
        headers.remove(header::ETAG);
        if failed {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
        }
        return response;
    }
    let cache = HeaderValue::from_static(CACHE_CONTROL);
    // An answer from the snapshot carries the tag of its bytes already (computed once per
    // change): nothing to read or hash.
    if let Some(etag) = response
        .headers()
        .get(header::ETAG)
        .and_then(|t| t.to_str().ok())
    {
        if http::if_none_match(&conditions, etag) {
            let tag = response.headers()[header::ETAG].clone();
            return not_modified(tag, cache);
        }
        let mut response = response;
        response.headers_mut().insert(header::CACHE_CONTROL, cache);
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // The handlers' bodies are already whole in memory (serialised JSON, a CSV file).
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(err) => {
            let mut refused = Error::internal(format!("reading an answer: {err}")).into_response();
            refused
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
            return refused;
        }
    };
    let etag = http::entity_tag(&bytes);
    let Ok(tag) = HeaderValue::from_str(&etag) else {
        // Hex in quotes is always a valid header value; answer uncached if it ever were not.
        return Response::from_parts(parts, Body::from(bytes));
    };
    if http::if_none_match(&conditions, &etag) {
        return not_modified(tag, cache);
    }
    parts.headers.insert(header::ETAG, tag);
    parts.headers.insert(header::CACHE_CONTROL, cache);
    Response::from_parts(parts, Body::from(bytes))
}

/// RFC 9110 §15.4.5: the fields a 200 would have had for caches (the tag, caching), no
/// representation metadata, no body.
fn not_modified(tag: HeaderValue, cache: HeaderValue) -> Response {
    let mut not_modified = StatusCode::NOT_MODIFIED.into_response();
    let headers = not_modified.headers_mut();
    headers.insert(header::ETAG, tag);
    headers.insert(header::CACHE_CONTROL, cache);
    not_modified
}

#[utoipa::path(
    get,
    path = "/v1/national",
    tag = "figures",
    summary = "National figures: households onboarded against the target, sales, by region",
    responses((status = 200, description = "The national figures", body = openapi::National)),
)]
async fn national(State(d): State<Dashboard>) -> Result<Response, Error> {
    Ok(d.national_json().await?.into_response())
}

#[utoipa::path(
    get,
    path = "/v1/provinces",
    tag = "figures",
    summary = "Every province's figures",
    responses((status = 200, description = "The 34 provinces, by code", body = openapi::Provinces)),
)]
async fn provinces(State(d): State<Dashboard>) -> Result<Response, Error> {
    Ok(d.provinces_json().await?.into_response())
}

#[utoipa::path(
    get,
    path = "/v1/provinces/{code}",
    tag = "figures",
    summary = "One province's figures",
    params(("code" = String, Path, description = "A 2025 province code, or a pre-2025 code of a province merged into it")),
    responses(
        (status = 200, description = "The province's figures", body = openapi::Province),
        (status = 400, description = "The code is not UTF-8 text", body = openapi::ErrorBody),
        (status = 404, description = "No province has this code", body = openapi::ErrorBody),
    ),
)]
async fn province(
    State(d): State<Dashboard>,
    code: Result<Path<String>, PathRejection>,
) -> Result<Response, Error> {
    // A code that is not UTF-8 once percent-decoded (`%FF`) is refused in JSON like any
    // other bad input, not with the framework's plain-text 400.
    let Path(code) = code.map_err(|_| bad_parameter("code", "is not valid UTF-8 text"))?;
    Ok(d.province_json(&code).await?.into_response())
}

/// Parses a query string into `SeriesParams`, naming the problem when it cannot.
pub fn parse_series_query(raw: Option<&str>) -> Result<SeriesParams, Error> {
    let raw = raw.unwrap_or("");
    serde_urlencoded::from_str::<SeriesParams>(raw)
        .map_err(|err| bad_parameter("query", format!("is malformed: {err}")))
}

#[utoipa::path(
    get,
    path = "/v1/timeseries",
    tag = "figures",
    summary = "A metric by day, week or month over a range of days",
    params(openapi::SeriesQuery),
    responses(
        (status = 200, description = "Every period of the range, oldest first", body = openapi::Series),
        (status = 400, description = "A parameter is missing, malformed or out of range (the message names it), or unknown", body = openapi::ErrorBody),
        (status = 404, description = "No province has this code", body = openapi::ErrorBody),
    ),
)]
async fn timeseries(
    State(d): State<Dashboard>,
    axum::Extension(bodies): axum::Extension<SeriesBodies>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let params = parse_series_query(raw.as_deref())?;
    let query = params.check()?;
    // The version before the read: the series read is at least that new (see
    // `Dashboard::series`), so its body may be kept under it.
    let version = d.snapshots().version();
    if version < 0 {
        return Ok(JsonBody::of(d.series(&params).await?.as_ref())?.into_response());
    }
    let body = bodies
        .0
        .get_or_read(version, query, || async {
            JsonBody::of(d.series(&params).await?.as_ref())
        })
        .await?;
    Ok(body.as_ref().clone().into_response())
}

/// An unknown path under `/api`: a JSON 404 naming the routes there are.
async fn not_found(uri: axum::extract::OriginalUri) -> Error {
    let path: String = uri.path().chars().take(100).collect();
    Error::not_found(format!(
        "no such API route: `{path}`; the API is under /api/v1 (national, provinces, \
         provinces/{{code}}, timeseries, indicators, indicators/{{code}}, completeness; described \
         in openapi.json)"
    ))
}

/// Query parameters of the indicator routes (each route reads the ones it names).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IndicatorQuery {
    period: Option<String>,
    province: Option<String>,
    format: Option<String>,
}

/// Whether an answer is JSON or CSV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

impl IndicatorQuery {
    fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<(IndicatorQuery, Format), Error> {
        let q: IndicatorQuery = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|err| bad_parameter("query", format!("is malformed: {err}")))?;
        if q.province.is_some() && !allowed.contains(&"province") {
            return Err(bad_parameter("province", "is not read by this route"));
        }
        if q.period.is_some() && !allowed.contains(&"period") {
            return Err(bad_parameter("period", "is not read by this route"));
        }
        if let Some(period) = q.period.as_deref().filter(|p| !p.trim().is_empty()) {
            Period::parse(period).map_err(|why| bad_parameter("period", why))?;
        }
        let format = match q.format.as_deref() {
            None | Some("") | Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some(_) => return Err(bad_parameter("format", "must be `json` or `csv`")),
        };
        Ok((q, format))
    }
}

/// A decimal as a JSON number: an integer when it has no fraction, else the nearest float
/// (the exact text travels beside it).
fn number(value: Decimal) -> Value {
    if value.scale() == 0 {
        if let Ok(n) = i64::try_from(value) {
            return Value::from(n);
        }
    }
    value
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// Writes `name` (a number or null) and, for a decimal written with a fraction, `name_text`.
fn put_decimal(out: &mut Map<String, Value>, name: &str, value: Option<Decimal>) {
    out.insert(name.to_string(), value.map_or(Value::Null, number));
    if let Some(v) = value.filter(|v| v.scale() > 0) {
        out.insert(format!("{name}_text"), Value::String(v.to_string()));
    }
}

fn figure_fields(out: &mut Map<String, Value>, f: &Figure) {
    put_decimal(out, "value", f.value);
    if let Some(missing) = f.missing {
        out.insert("missing_reason".into(), missing.as_str().into());
    }
    put_decimal(out, "target", f.target);
    out.insert(
        "progress_pct".into(),
        f.progress_pct.map_or(Value::Null, Value::from),
    );
}

fn figure_json(f: &Figure) -> Value {
    let mut out = Map::new();
    figure_fields(&mut out, f);
    Value::Object(out)
}

fn place_json(p: &PlaceFigure) -> Value {
    let mut out = Map::new();
    out.insert("code".into(), p.code.clone().into());
    out.insert("name".into(), p.name.clone().into());
    out.insert("region".into(), p.region.clone().into());
    figure_fields(&mut out, &p.figure);
    if let Some(state) = &p.state {
        out.insert("state".into(), state.clone().into());
    }
    Value::Object(out)
}

fn lower(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn indicator_json(i: &ipb::Indicator) -> Value {
    let source = ipb::Source::try_from(i.source).unwrap_or(ipb::Source::Unspecified);
    let value_type = ipb::ValueType::try_from(i.value_type).unwrap_or(ipb::ValueType::Unspecified);
    let national_target = i.national_target.trim().parse::<Decimal>().ok();
    json!({
        "code": i.code,
        "name_vi": i.name_vi,
        "name_en": i.name_en,
        "unit": i.unit,
        "period_type": period_type(i).as_str(),
        "source": lower(source.as_str_name().trim_start_matches("SOURCE_")),
        "value_type": lower(value_type.as_str_name().trim_start_matches("VALUE_TYPE_")),
        "aggregation": Aggregation::from_proto(i.aggregation).name(),
        "national_target": national_target.map_or(Value::Null, number),
    })
}

fn text(value: Option<Decimal>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn pct_text(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.2}")).unwrap_or_default()
}

/// A CSV file for spreadsheets, written by the platform's one writer (`platform::csv`: UTF-8
/// with a BOM, CRLF, formula cells neutralised, the same rules as every download of the portal).
fn csv_response(filename: &str, header: &[&str], rows: &[Vec<String>]) -> Result<Response, Error> {
    let out = csv::to_csv(header, rows).map_err(Error::internal)?;
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        [(
            header::CONTENT_DISPOSITION,
            csv::content_disposition(filename),
        )],
        out,
    )
        .into_response())
}

/// A name safe inside a file name (codes are upper-case letters, digits and `_`).
fn file_part(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(40)
        .collect::<String>()
        .to_ascii_lowercase()
}

#[utoipa::path(
    get,
    path = "/v1/indicators",
    tag = "indicators",
    summary = "The plan's indicators, each with its latest national figure",
    params(openapi::FormatQuery),
    responses(
        (status = 200, description = "The catalogue in JSON, or a CSV file (UTF-8 with a BOM)",
            content((openapi::Indicators = "application/json"), (String = "text/csv"))),
        (status = 400, description = "An unknown parameter or format", body = openapi::ErrorBody),
    ),
)]
async fn indicators(
    State(d): State<Dashboard>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let (_, format) = IndicatorQuery::parse(raw.as_deref(), &[])?;
    // From the snapshot: the view and its body, serialised once per change.
    let answer = d.indicators_answer("", "").await?;
    if format == Format::Csv {
        return indicators_csv(&answer.view);
    }
    Ok(answer.json.clone().into_response())
}

/// `GET /api/v1/indicators`'s JSON body for `list` (what the snapshot serialises once).
pub fn indicators_body(list: &[IndicatorSummaryView]) -> Value {
    let indicators: Vec<Value> = list
        .iter()
        .map(|i| {
            json!({
                "indicator": indicator_json(&i.indicator),
                "period": i.period.to_string(),
                "national": figure_json(&i.national),
            })
        })
        .collect();
    json!({ "indicators": indicators })
}

fn indicators_csv(list: &[IndicatorSummaryView]) -> Result<Response, Error> {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            vec![
                i.indicator.code.clone(),
                i.indicator.name_vi.clone(),
                i.indicator.unit.clone(),
                i.period.to_string(),
                text(i.national.value),
                text(i.national.target),
                pct_text(i.national.progress_pct),
                i.national
                    .missing
                    .map(|m| m.as_str())
                    .unwrap_or_default()
                    .to_string(),
            ]
        })
        .collect();
    csv_response(
        "chi-tieu.csv",
        &[
            "Mã chỉ tiêu",
            "Tên chỉ tiêu",
            "Đơn vị",
            "Kỳ",
            "Giá trị toàn quốc",
            "Chỉ tiêu",
            "Tỷ lệ hoàn thành (%)",
            "Lý do chưa có số liệu",
        ],
        &rows,
    )
}

#[utoipa::path(
    get,
    path = "/v1/indicators/{code}",
    tag = "indicators",
    summary = "One indicator in a period: national, by region and province, its last 12 periods; with a province, its communes",
    params(("code" = String, Path, description = "The indicator's code"), openapi::IndicatorQuery),
    responses(
        (status = 200, description = "The indicator's figures in JSON, or a CSV file (UTF-8 with a BOM)",
            content((openapi::IndicatorProgress = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A malformed or unknown parameter, or a period of another type than the indicator's", body = openapi::ErrorBody),
        (status = 404, description = "No indicator or province has this code", body = openapi::ErrorBody),
    ),
)]
async fn indicator(
    State(d): State<Dashboard>,
    code: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let Path(code) = code.map_err(|_| bad_parameter("code", "is not valid UTF-8 text"))?;
    let (q, format) = IndicatorQuery::parse(raw.as_deref(), &["period", "province"])?;
    let answer = d
        .indicator_answer(
            &code,
            q.period.as_deref().unwrap_or(""),
            q.province.as_deref().unwrap_or(""),
        )
        .await?;
    if format == Format::Csv {
        return indicator_csv(&answer.view);
    }
    Ok(answer.json.clone().into_response())
}

/// `GET /api/v1/indicators/{code}`'s JSON body for `view` (what the snapshot serialises once).
pub fn indicator_body(view: &IndicatorProgressView) -> Value {
    let series: Vec<Value> = view
        .series
        .iter()
        .map(|(p, f)| {
            let mut out = Map::new();
            out.insert("period".into(), p.to_string().into());
            figure_fields(&mut out, f);
            Value::Object(out)
        })
        .collect();
    let mut body = json!({
        "indicator": indicator_json(&view.indicator),
        "period": view.period.to_string(),
        "national": figure_json(&view.national),
        "regions": view.regions.iter().map(place_json).collect::<Vec<_>>(),
        "provinces": view.provinces.iter().map(place_json).collect::<Vec<_>>(),
        "series": series,
    });
    if let (Some(communes), Value::Object(out)) = (&view.communes, &mut body) {
        communes_fields(out, communes);
    }
    body
}

/// `communes` (every commune of the province asked, with its value), `unassigned` (the
/// province's records without a commune code); for an indicator not kept by commune both
/// null and `communes_note` says why.
fn communes_fields(out: &mut Map<String, Value>, view: &CommunesView) {
    match view {
        CommunesView::Figures {
            communes,
            unassigned,
        } => {
            let list = communes
                .iter()
                .map(|c| {
                    let mut one = Map::new();
                    one.insert("code".into(), c.code.clone().into());
                    one.insert("name".into(), c.name.clone().into());
                    put_decimal(&mut one, "value", Some(c.value));
                    Value::Object(one)
                })
                .collect();
            out.insert("communes".into(), Value::Array(list));
            put_decimal(out, "unassigned", Some(*unassigned));
        }
        CommunesView::None(note) => {
            out.insert("communes".into(), Value::Null);
            out.insert("unassigned".into(), Value::Null);
            out.insert("communes_note".into(), note.as_str().into());
        }
    }
}

fn indicator_csv(view: &IndicatorProgressView) -> Result<Response, Error> {
    let row = |code: &str, name: &str, f: &Figure, state: &str| {
        vec![
            code.to_string(),
            name.to_string(),
            view.period.to_string(),
            text(f.value),
            text(f.target),
            pct_text(f.progress_pct),
            f.missing
                .map(|m| m.as_str())
                .unwrap_or_default()
                .to_string(),
            state.to_string(),
        ]
    };
    let mut rows = vec![row("", "Toàn quốc", &view.national, "")];
    for r in &view.regions {
        rows.push(row(&r.code, &r.name, &r.figure, ""));
    }
    for p in &view.provinces {
        rows.push(row(
            &p.code,
            &p.name,
            &p.figure,
            p.state.as_deref().unwrap_or(""),
        ));
    }
    // The province asked's communes (5-digit codes), then its records without a commune.
    if let Some(CommunesView::Figures {
        communes,
        unassigned,
    }) = &view.communes
    {
        let figure = |value: Decimal| Figure::new(Some(value), None, Missing::NoData);
        for c in communes {
            rows.push(row(&c.code, &c.name, &figure(c.value), ""));
        }
        rows.push(row("", "Chưa ghi xã/phường", &figure(*unassigned), ""));
    }
    let filename = format!(
        "chi-tieu-{}-{}.csv",
        file_part(&view.indicator.code),
        view.period
    );
    csv_response(
        &filename,
        &[
            "Mã",
            "Đơn vị hành chính",
            "Kỳ",
            "Giá trị",
            "Chỉ tiêu",
            "Tỷ lệ hoàn thành (%)",
            "Lý do chưa có số liệu",
            "Trạng thái báo cáo",
        ],
        &rows,
    )
}

#[utoipa::path(
    get,
    path = "/v1/completeness",
    tag = "indicators",
    summary = "Which provinces reported a period, and on time",
    params(openapi::CompletenessQuery),
    responses(
        (status = 200, description = "Each province's report state, in JSON or a CSV file (UTF-8 with a BOM)",
            content((openapi::Completeness = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A malformed or unknown parameter", body = openapi::ErrorBody),
    ),
)]
async fn completeness(
    State(d): State<Dashboard>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let (q, format) = IndicatorQuery::parse(raw.as_deref(), &["period"])?;
    let view = d.completeness(q.period.as_deref().unwrap_or("")).await?;
    if format == Format::Csv {
        return completeness_csv(&view);
    }
    let provinces: Vec<Value> = view
        .provinces
        .iter()
        .map(|p| {
            json!({
                "code": p.code,
                "name": p.name,
                "state": p.state,
                "submitted_at": vietnam_time(p.submitted_at_ms),
                "approved_at": vietnam_time(p.approved_at_ms),
                "on_time": p.on_time,
                "overdue": p.overdue,
            })
        })
        .collect();
    let body = json!({
        "period": view.period.to_string(),
        "deadline": view.deadline.to_string(),
        "provinces": provinces,
        "counts": view.counts,
    });
    Ok(Json(body).into_response())
}

fn completeness_csv(view: &CompletenessView) -> Result<Response, Error> {
    let yes_no = |b: bool| if b { "có" } else { "không" }.to_string();
    let rows: Vec<Vec<String>> = view
        .provinces
        .iter()
        .map(|p| {
            vec![
                p.code.clone(),
                p.name.clone(),
                p.state.clone(),
                vietnam_time(p.submitted_at_ms).unwrap_or_default(),
                vietnam_time(p.approved_at_ms).unwrap_or_default(),
                yes_no(p.on_time),
                yes_no(p.overdue),
            ]
        })
        .collect();
    csv_response(
        &format!("tinh-hinh-bao-cao-{}.csv", view.period),
        &[
            "Mã tỉnh",
            "Tỉnh/thành phố",
            "Trạng thái",
            "Thời điểm nộp",
            "Thời điểm phê duyệt",
            "Đúng hạn",
            "Quá hạn",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use agriportal_platform::consumer::{self, Decoded};
    use agriportal_platform::reference::Partner;
    use agriportal_platform::storage::Database;
    use agriportal_platform::Config;
    use agriportal_proto::marketplace::v1 as mpb;
    use axum::http::{HeaderMap, Method};
    use tower::ServiceExt;

    use crate::consumer::Rollup;
    use crate::domain::Deltas;
    use crate::store::SqlStore;

    /// The API over a fresh SQLite store, and the database to change its figures in.
    /// The rollup, and the dashboard whose snapshot it refreshes after each commit (as the
    /// service's rebuild task does).
    struct Writer {
        rollup: Rollup,
        dashboard: Dashboard,
    }

    async fn api(dir: &std::path::Path) -> (Router, Database, Writer) {
        let db = Database::connect(&Config::embedded(dir), crate::config::SCHEMA)
            .await
            .unwrap();
        db.migrate(&crate::store::migrations()).await.unwrap();
        let store = Arc::new(SqlStore::new(db.clone()));
        let dashboard = Dashboard::new(store.clone());
        dashboard.refresh().await.unwrap();
        (
            router(dashboard.clone()),
            db,
            Writer {
                rollup: Rollup::new(store),
                dashboard,
            },
        )
    }

    /// A sale of `grams` in Hồ Chí Minh City, applied as the consumer applies it.
    async fn sell(db: &Database, writer: &Writer, id: &str, grams: i64) {
        let event = mpb::SalesRecorded {
            event_id: id.into(),
            partner: Partner::Postmart.to_proto() as i32,
            batch_id: "b".into(),
            recorded_at_ms: 1_700_000_000_000,
            changes: vec![mpb::SalesChange {
                record_id: id.into(),
                previous: None,
                current: Some(mpb::SalesFigures {
                    sale_date: "2026-11-02".into(),
                    province_code: "79".into(),
                    category: "fruit".into(),
                    quantity_grams: grams,
                    value_vnd: grams * 3,
                    orders: 1,
                    ..Default::default()
                }),
            }],
        };
        let mut deltas = Deltas::default();
        deltas.add_sales(&event).unwrap();
        let event = Decoded {
            event_id: id.into(),
            event: deltas,
        };
        consumer::apply(db, &writer.rollup, &[&event])
            .await
            .unwrap();
        writer.dashboard.refresh().await.unwrap();
    }

    async fn call(
        api: &Router,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = api
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, body.to_vec())
    }

    fn etag(headers: &HeaderMap) -> String {
        headers[header::ETAG].to_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn answers_carry_a_tag_of_their_bytes_and_a_matching_request_gets_304() {
        let dir = tempfile::tempdir().unwrap();
        let (api, db, writer) = api(dir.path()).await;
        sell(&db, &writer, "e1", 1_000).await;
        for path in [
            "/v1/national",
            "/v1/provinces",
            "/v1/provinces/79",
            "/v1/timeseries?metric=sales_grams&from=2026-11-01&to=2026-11-03",
            "/v1/indicators",
            "/v1/indicators?format=csv",
            "/v1/completeness?period=202611",
            "/v1/completeness?period=202611&format=csv",
        ] {
            let (status, headers, body) = call(&api, Method::GET, path, &[]).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{path}: {}",
                String::from_utf8_lossy(&body)
            );
            let tag = etag(&headers);
            assert_eq!(
                tag,
                http::entity_tag(&body),
                "{path}: the tag is of the bytes"
            );
            assert_eq!(headers[header::CACHE_CONTROL], CACHE_CONTROL, "{path}");
            let (_, again, same) = call(&api, Method::GET, path, &[]).await;
            assert_eq!((etag(&again), &same), (tag.clone(), &body), "{path}");
            let (status, head, empty) = call(&api, Method::HEAD, path, &[]).await;
            assert_eq!(
                (status, etag(&head)),
                (StatusCode::OK, tag.clone()),
                "{path}"
            );
            assert!(empty.is_empty(), "{path}: HEAD has no body");
            let list = format!("\"0123\", W/{tag}");
            for conditions in [tag.as_str(), list.as_str(), "*"] {
                let (status, headers, body) =
                    call(&api, Method::GET, path, &[("if-none-match", conditions)]).await;
                assert_eq!(status, StatusCode::NOT_MODIFIED, "{path} {conditions}");
                assert!(body.is_empty(), "{path}: a 304 has no body");
                assert_eq!(etag(&headers), tag, "{path}");
                assert_eq!(headers[header::CACHE_CONTROL], CACHE_CONTROL, "{path}");
                assert!(!headers.contains_key(header::CONTENT_TYPE), "{path}");
            }
        }
        // The figures change: a new tag, and the old one gets the new figures.
        let (_, before, old_body) = call(&api, Method::GET, "/v1/national", &[]).await;
        let old = etag(&before);
        sell(&db, &writer, "e2", 500).await;
        let (status, after, body) = call(
            &api,
            Method::GET,
            "/v1/national",
            &[("if-none-match", &old)],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(etag(&after), old);
        assert_ne!(body, old_body);
        let national: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(national["sales"]["grams"], 1_500, "{national}");
        // A province the sale was not in keeps its tag.
        let (_, hanoi, _) = call(&api, Method::GET, "/v1/provinces/01", &[]).await;
        sell(&db, &writer, "e3", 1).await;
        let (status, _, _) = call(
            &api,
            Method::GET,
            "/v1/provinces/01",
            &[("if-none-match", &etag(&hanoi))],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        // An event that changes no figure (no changes, older than the newest) moves the
        // figures' version, and the snapshot is rebuilt, but every tag stays.
        let (_, national, _) = call(&api, Method::GET, "/v1/national", &[]).await;
        let (_, all, _) = call(&api, Method::GET, "/v1/provinces", &[]).await;
        let version = writer.dashboard.snapshots().version();
        let event = Decoded {
            event_id: "empty".into(),
            event: Deltas::default(),
        };
        consumer::apply(&db, &writer.rollup, &[&event])
            .await
            .unwrap();
        writer.dashboard.refresh().await.unwrap();
        assert!(writer.dashboard.snapshots().version() > version);
        for (path, tag) in [("/v1/national", &national), ("/v1/provinces", &all)] {
            let (status, _, _) =
                call(&api, Method::GET, path, &[("if-none-match", &etag(tag))]).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{path}");
        }
        db.close().await;
    }

    /// A series' body is kept per query until the figures change: then the same query (and
    /// its old tag) gets the new figures, and a matching tag still gets `304`.
    #[tokio::test]
    async fn a_kept_series_answers_the_new_figures_once_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let (api, db, writer) = api(dir.path()).await;
        sell(&db, &writer, "e1", 1_000).await;
        let path = "/v1/timeseries?metric=sales_grams&from=2026-11-01&to=2026-11-03";
        let grams = |body: &[u8]| {
            let series: Value = serde_json::from_slice(body).unwrap();
            series["points"][1]["value"].clone()
        };
        let (status, before, body) = call(&api, Method::GET, path, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(grams(&body), 1_000, "{}", String::from_utf8_lossy(&body));
        let (_, again, same) = call(&api, Method::GET, path, &[]).await;
        assert_eq!((etag(&again), &same), (etag(&before), &body));
        let (status, _, _) = call(
            &api,
            Method::GET,
            path,
            &[("if-none-match", &etag(&before))],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        sell(&db, &writer, "e2", 500).await;
        let (status, after, body) = call(
            &api,
            Method::GET,
            path,
            &[("if-none-match", &etag(&before))],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "the kept body was dropped");
        assert_eq!(grams(&body), 1_500);
        assert_ne!(etag(&after), etag(&before));
        assert_eq!(etag(&after), http::entity_tag(&body));
        let (status, _, _) =
            call(&api, Method::GET, path, &[("if-none-match", &etag(&after))]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        // Another query of the same figures is kept apart.
        let (_, _, month) =
            call(&api, Method::GET, &format!("{path}&granularity=month"), &[]).await;
        let month: Value = serde_json::from_slice(&month).unwrap();
        assert_eq!(month["points"][0]["value"], 1_500, "{month}");
        db.close().await;
    }

    /// Applies catalogue entries for these indicators, as the read model's consumer does.
    async fn catalogue(db: &Database, codes: &[(&str, ipb::Source)]) {
        let model = crate::readmodel::IndicatorsReadModel::new(Arc::new(SqlStore::new(db.clone())));
        for (i, (code, source)) in codes.iter().enumerate() {
            let event = ipb::CatalogueChanged {
                event_id: format!("cat-{code}"),
                indicator: Some(ipb::Indicator {
                    code: code.to_string(),
                    name_vi: format!("Chỉ tiêu {code}"),
                    period_type: ipb::PeriodType::Month as i32,
                    source: *source as i32,
                    value_type: ipb::ValueType::Decimal as i32,
                    national_target: "5000".into(),
                    aggregation: ipb::Aggregation::Sum as i32,
                    revision: 1,
                    position: i as u32,
                    ..Default::default()
                }),
                at_ms: 1,
            };
            let decoded = crate::readmodel::decode_event(ipb::CATALOGUE_CHANGED, &event).unwrap();
            consumer::apply(db, &model, &[&decoded]).await.unwrap();
        }
    }

    #[tokio::test]
    async fn indicator_answers_from_the_snapshot_are_the_bytes_the_queries_serialise() {
        let dir = tempfile::tempdir().unwrap();
        let (api, db, writer) = api(dir.path()).await;
        let codes = [
            ("HH_ONBOARDED", ipb::Source::Marketplace),
            ("SALES_VALUE", ipb::Source::Marketplace),
            ("TRAINED_HH", ipb::Source::Province),
        ];
        catalogue(&db, &codes).await;
        // Refreshes both phases, as the rebuild task does after a commit.
        sell(&db, &writer, "e1", 1_000).await;
        let reads = crate::service::StoreReads::new(Arc::new(SqlStore::new(db.clone())));
        let list = reads.indicators("", "").await.unwrap();
        assert_eq!(list.len(), 3);
        let (status, headers, body) = call(&api, Method::GET, "/v1/indicators", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(body, serde_json::to_vec(&indicators_body(&list)).unwrap());
        let snapshot = writer.dashboard.snapshots().indicators().unwrap();
        assert_eq!(snapshot.list.json.bytes, body, "answered from the snapshot");
        for (code, _) in codes {
            for (query, period, province) in [
                ("", "", ""),
                ("?province=79", "", "79"),
                ("?period=202610", "202610", ""),
                ("?period=202611&province=01", "202611", "01"),
            ] {
                let path = format!("/v1/indicators/{code}{query}");
                let (status, headers, body) = call(&api, Method::GET, &path, &[]).await;
                assert_eq!(status, StatusCode::OK, "{path}");
                assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{path}");
                let fresh = reads.indicator(code, period, province).await.unwrap();
                assert_eq!(
                    body,
                    serde_json::to_vec(&indicator_body(&fresh)).unwrap(),
                    "{path}, byte for byte"
                );
                // Asked again, the same bytes (from the snapshot's cache for the three others).
                let (_, _, again) = call(&api, Method::GET, &path, &[]).await;
                assert_eq!(again, body, "{path}");
            }
        }
        assert_eq!(snapshot.cache.size().0, 9, "the other queries are kept");
        let (status, _, _) = call(&api, Method::GET, "/v1/indicators/NOPE", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // The figures change: a new snapshot with new views (an empty cache), and the list's
        // old tag gets the new list.
        let (_, before, _) = call(&api, Method::GET, "/v1/indicators", &[]).await;
        sell(&db, &writer, "e2", 500).await;
        let (status, after, body) = call(
            &api,
            Method::GET,
            "/v1/indicators",
            &[("if-none-match", &etag(&before))],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(etag(&after), etag(&before));
        let list: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(list["indicators"][1]["national"]["value"], 4_500, "{list}");
        let snapshot = writer.dashboard.snapshots().indicators().unwrap();
        assert_eq!(snapshot.cache.size().0, 0);
        db.close().await;
    }

    #[tokio::test]
    async fn errors_are_never_stored_and_any_origin_may_read() {
        let dir = tempfile::tempdir().unwrap();
        let (api, db, _) = api(dir.path()).await;
        for path in [
            "/v1/provinces/999",
            "/v1/timeseries?metric=nope",
            "/v1/indicators?format=xlsx",
            "/v2/national",
        ] {
            let (status, headers, _) =
                call(&api, Method::GET, path, &[("if-none-match", "*")]).await;
            assert!(status.is_client_error(), "{path}: {status}");
            assert_eq!(headers[header::CACHE_CONTROL], NO_STORE, "{path}");
            assert!(!headers.contains_key(header::ETAG), "{path}");
            assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*", "{path}");
        }
        // A preflight from another site: any origin, GET and HEAD, never credentials.
        let (status, headers, body) = call(
            &api,
            Method::OPTIONS,
            "/v1/national",
            &[
                ("origin", "https://example.org"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "if-none-match"),
            ],
        )
        .await;
        assert!(status.is_success(), "{status}");
        assert!(body.is_empty());
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let methods = headers[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap();
        assert!(
            methods.contains("GET") && methods.contains("HEAD"),
            "{methods}"
        );
        assert!(!methods.contains("POST"), "{methods}");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_HEADERS], "*");
        assert!(headers.contains_key(header::ACCESS_CONTROL_MAX_AGE));
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        // The read itself: the tag is exposed to the page's script; the answer does not
        // depend on the origin, so caches are not split by it.
        let (status, headers, _) = call(
            &api,
            Method::GET,
            "/v1/national",
            &[("origin", "https://example.org")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let exposed = headers[header::ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(exposed.contains("etag"), "{exposed}");
        assert!(!headers.contains_key(header::VARY), "{headers:?}");
        db.close().await;
    }

    #[tokio::test]
    async fn the_document_is_openapi_3_1_and_names_exactly_the_routes_served() {
        let doc = openapi_document();
        let json: Value = serde_json::from_str(&doc.to_json().unwrap()).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        // It reads back into utoipa's model of OpenAPI 3.1, and each schema is a valid JSON
        // Schema (2020-12, OpenAPI 3.1's dialect) whose references all resolve.
        let _: utoipa::openapi::OpenApi = serde_json::from_value(json.clone()).unwrap();
        for (name, schema) in json["components"]["schemas"].as_object().unwrap() {
            let standalone = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "components": json["components"],
                "allOf": [schema],
            });
            jsonschema::meta::validate(&standalone).unwrap_or_else(|e| panic!("{name}: {e}"));
            jsonschema::validator_for(&standalone).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let dir = tempfile::tempdir().unwrap();
        let (api, db, _) = api(dir.path()).await;
        // The routes are built from the same list as the document (`documented_routes`), so
        // none is served undocumented; each documented path is routed (not the fallback), and
        // the fallback's message names it.
        let (status, _, body) = call(&api, Method::GET, "/v1/nope", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let fallback = String::from_utf8(body).unwrap();
        let paths: Vec<&String> = doc.paths.paths.keys().collect();
        assert_eq!(paths.len(), 8, "{paths:?}");
        for path in paths {
            let relative = path.strip_prefix(openapi::PREFIX).unwrap();
            let concrete = relative.replace("{code}", "79");
            let (_, _, body) = call(&api, Method::GET, &concrete, &[]).await;
            let body = String::from_utf8_lossy(&body);
            assert!(!body.contains("no such API route"), "{path}: {body}");
            let name = relative.trim_start_matches("/v1/").replace(".json", "");
            assert!(fallback.contains(&name), "{name} in {fallback}");
            assert!(json["paths"][path]["get"]["responses"]["304"].is_object());
            assert!(json["paths"][path]["get"]["responses"]["429"].is_object());
        }
        db.close().await;
    }

    #[test]
    fn formula_cells_are_neutralised_and_decimals_keep_their_text() {
        let file = csv::to_csv(&["Tên"], &[vec!["=1+1".into()], vec!["-2".into()]]).unwrap();
        let text = String::from_utf8(file).unwrap();
        assert!(text.contains("'=1+1\r\n"), "{text}");
        assert!(
            text.contains("\r\n-2\r\n"),
            "a negative figure stays a number: {text}"
        );
        let mut out = Map::new();
        put_decimal(&mut out, "value", Some("2.500".parse().unwrap()));
        assert_eq!(out["value"], 2.5);
        assert_eq!(out["value_text"], "2.500");
        let mut out = Map::new();
        put_decimal(&mut out, "value", Some("1234".parse().unwrap()));
        assert_eq!(out["value"], 1234);
        assert!(!out.contains_key("value_text"));
        let mut out = Map::new();
        put_decimal(&mut out, "value", None);
        assert_eq!(out["value"], Value::Null);
    }

    #[test]
    fn communes_are_listed_or_say_why_not() {
        use crate::service::{CommuneFigure, CommunesNote};
        let mut out = Map::new();
        let figures = CommunesView::Figures {
            communes: vec![
                CommuneFigure {
                    code: "25747".into(),
                    name: "Phường Thủ Dầu Một".into(),
                    value: "1.250".parse().unwrap(),
                },
                CommuneFigure {
                    code: "25750".into(),
                    name: "Phường Phú Lợi".into(),
                    value: Decimal::ZERO,
                },
            ],
            unassigned: "2.5".parse().unwrap(),
        };
        communes_fields(&mut out, &figures);
        assert_eq!(
            Value::Object(out),
            json!({
                "communes": [
                    {"code": "25747", "name": "Phường Thủ Dầu Một", "value": 1.25, "value_text": "1.250"},
                    {"code": "25750", "name": "Phường Phú Lợi", "value": 0},
                ],
                "unassigned": 2.5,
                "unassigned_text": "2.5",
            })
        );
        let mut out = Map::new();
        communes_fields(
            &mut out,
            &CommunesView::None(CommunesNote::ProvinceReported),
        );
        assert_eq!(
            Value::Object(out),
            json!({"communes": null, "unassigned": null, "communes_note": "province_reported"})
        );
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        let err = |raw: &str, allowed: &[&str]| {
            IndicatorQuery::parse(Some(raw), allowed)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err("period=2026-11", &["period"]).contains("`period`"));
        assert!(err("format=xlsx", &["period"]).contains("`format`"));
        assert!(err("province=79", &["period"]).contains("`province`"));
        assert!(err("colour=red", &["period"]).contains("colour"));
        assert!(IndicatorQuery::parse(Some("period=2026Q4&format=csv"), &["period"]).is_ok());
    }
}
