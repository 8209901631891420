//! The HTTP adapter: the public JSON API, over the shared dashboard queries. The kit nests it
//! under the gateway's prefix `/api`, so the routes below are relative to it (`/v1/national` is
//! `/api/v1/national`). Errors are JSON bodies naming the problem (`{"error": {code, message}}`),
//! for unknown paths under `/api` too; the pages are the web front end's.

use agriportal_platform::Error;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::domain::SeriesParams;
use crate::error::bad_parameter;
use crate::service::Dashboard;

/// Routes of the gateway's HTTP API, relative to its prefix `/api`.
pub fn router(dashboard: Dashboard) -> Router {
    Router::new()
        .route("/v1/national", get(national))
        .route("/v1/provinces", get(provinces))
        .route("/v1/provinces/{code}", get(province))
        .route("/v1/timeseries", get(timeseries))
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
         provinces/{{code}}, timeseries)"
    ))
}
