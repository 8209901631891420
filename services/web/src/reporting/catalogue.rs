//! `/indicators`: the plan's indicators, each with its national figure, target and progress
//! (public, from the gateway).

use agriportal_proto::gateway::v1 as gpb;
use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

use crate::http::csv_response;
use crate::i18n::Tr;
use crate::indicators as ind;
use crate::pages::Chrome;
use crate::reader::Reader;

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

fn catalogue_rows(all: &[gpb::IndicatorSummary], tr: &Tr) -> Vec<IndicatorRow> {
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
pub async fn indicators(r: Reader) -> Response {
    let tr = r.tr();
    let rows = match r.web.backend.indicator_list("", "").await {
        Ok(all) => Some(catalogue_rows(&all, &tr)),
        Err(err) => {
            tracing::warn!(error = %err, "the indicator catalogue is unavailable");
            None
        }
    };
    let page = IndicatorsPage {
        chrome: r.chrome(&tr.t("indicators-title"), "indicators", false),
        rows,
    };
    r.html(&page, StatusCode::OK)
}

/// `GET /indicators.csv`: the catalogue's table.
pub async fn indicators_csv(r: Reader) -> Response {
    let tr = r.tr();
    let Ok(all) = r.web.backend.indicator_list("", "").await else {
        return r.unavailable_csv();
    };
    let header = tr.all(&[
        "col-code",
        "col-indicator",
        "col-period",
        "col-value-generic",
        "col-target",
        "col-progress",
    ]);
    let rows: Vec<Vec<String>> = catalogue_rows(&all, &tr)
        .into_iter()
        .map(|r| vec![r.code, r.name, r.period, r.value, r.target, r.progress])
        .collect();
    csv_response(&header, &rows, "chi-tieu.csv")
}
