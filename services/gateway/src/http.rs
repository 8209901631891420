//! The HTTP adapter: the public JSON API, over the shared dashboard queries. The kit nests it
//! under the gateway's prefix `/api`, so the routes below are relative to it (`/v1/national` is
//! `/api/v1/national`). Errors are JSON bodies naming the problem (`{"error": {code, message}}`),
//! for unknown paths under `/api` too; the pages are the web front end's.

use agriportal_platform::{csv, Error};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use agriportal_platform::period::Period;
use agriportal_proto::indicators::v1 as ipb;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use crate::domain::{Aggregation, Figure, Missing, SeriesParams};
use crate::error::bad_parameter;
use crate::service::{
    period_type, vietnam_time, CommunesView, CompletenessView, Dashboard, IndicatorProgressView,
    IndicatorSummaryView, PlaceFigure,
};

/// Routes of the gateway's HTTP API, relative to its prefix `/api`.
pub fn router(dashboard: Dashboard) -> Router {
    Router::new()
        .route("/v1/national", get(national))
        .route("/v1/provinces", get(provinces))
        .route("/v1/provinces/{code}", get(province))
        .route("/v1/timeseries", get(timeseries))
        .route("/v1/indicators", get(indicators))
        .route("/v1/indicators/{code}", get(indicator))
        .route("/v1/completeness", get(completeness))
        .fallback(not_found)
        .with_state(dashboard)
}

/// Short client caching: dashboards poll, and figures a second old are fine.
const CACHE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "public, max-age=1");

async fn national(State(d): State<Dashboard>) -> Result<Response, Error> {
    Ok(([CACHE], Json(d.national().await?)).into_response())
}

async fn provinces(State(d): State<Dashboard>) -> Result<Response, Error> {
    let provinces = d.provinces().await?;
    Ok(([CACHE], Json(serde_json::json!({ "provinces": provinces }))).into_response())
}

async fn province(
    State(d): State<Dashboard>,
    code: Result<Path<String>, PathRejection>,
) -> Result<Response, Error> {
    // A code that is not UTF-8 once percent-decoded (`%FF`) is refused in JSON like any
    // other bad input, not with the framework's plain-text 400.
    let Path(code) = code.map_err(|_| bad_parameter("code", "is not valid UTF-8 text"))?;
    Ok(([CACHE], Json(d.province(&code).await?)).into_response())
}

/// Parses a query string into `SeriesParams`, naming the problem when it cannot.
pub fn parse_series_query(raw: Option<&str>) -> Result<SeriesParams, Error> {
    let raw = raw.unwrap_or("");
    serde_urlencoded::from_str::<SeriesParams>(raw)
        .map_err(|err| bad_parameter("query", format!("is malformed: {err}")))
}

async fn timeseries(
    State(d): State<Dashboard>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let params = parse_series_query(raw.as_deref())?;
    Ok(([CACHE], Json(d.series(&params).await?)).into_response())
}

/// An unknown path under `/api`: a JSON 404 naming the routes there are.
async fn not_found(uri: axum::extract::OriginalUri) -> Error {
    let path: String = uri.path().chars().take(100).collect();
    Error::not_found(format!(
        "no such API route: `{path}`; the API is under /api/v1 (national, provinces, \
         provinces/{{code}}, timeseries, indicators, indicators/{{code}}, completeness)"
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
        [CACHE, (header::CONTENT_TYPE, "text/csv; charset=utf-8")],
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

async fn indicators(
    State(d): State<Dashboard>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let (_, format) = IndicatorQuery::parse(raw.as_deref(), &[])?;
    let list = d.indicators("", "").await?;
    if format == Format::Csv {
        return indicators_csv(&list);
    }
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
    Ok(([CACHE], Json(json!({ "indicators": indicators }))).into_response())
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

async fn indicator(
    State(d): State<Dashboard>,
    code: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Error> {
    let Path(code) = code.map_err(|_| bad_parameter("code", "is not valid UTF-8 text"))?;
    let (q, format) = IndicatorQuery::parse(raw.as_deref(), &["period", "province"])?;
    let view = d
        .indicator(
            &code,
            q.period.as_deref().unwrap_or(""),
            q.province.as_deref().unwrap_or(""),
        )
        .await?;
    if format == Format::Csv {
        return indicator_csv(&view);
    }
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
    Ok(([CACHE], Json(body)).into_response())
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
    Ok(([CACHE], Json(body)).into_response())
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
