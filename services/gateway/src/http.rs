//! The HTTP adapter: the JSON API under `/api/v1` and the dashboard page, over the shared
//! dashboard queries. Errors are JSON bodies naming the problem (`{"error": {code, message}}`).

use agriportal_platform::Error;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::domain::SeriesParams;
use crate::error::bad_parameter;
use crate::page;
use crate::service::Dashboard;

/// Routes of the gateway's HTTP API and page.
pub fn router(dashboard: Dashboard) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/v1/national", get(national))
        .route("/api/v1/provinces", get(provinces))
        .route("/api/v1/provinces/{code}", get(province))
        .route("/api/v1/timeseries", get(timeseries))
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

/// The gateway answers `/`, so the process's unknown paths are its to explain.
async fn not_found(uri: axum::http::Uri) -> Error {
    let path: String = uri.path().chars().take(100).collect();
    Error::not_found(format!(
        "no such page or API route: `{path}`; the API is under /api/v1 (national, provinces, \
         provinces/{{code}}, timeseries)"
    ))
}

async fn index(State(d): State<Dashboard>) -> Result<Response, Error> {
    let (national, provinces) = tokio::try_join!(d.national(), d.provinces())?;
    Ok(Html(page::render(&national, &provinces)).into_response())
}
