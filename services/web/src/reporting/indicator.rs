//! `/indicators/{code}`: one indicator's national figure and progress, a chart of recent
//! periods with its table, and the provinces' and regions' tables (public, from the gateway).

use agriportal_platform::ErrorCode;
use agriportal_proto::gateway::v1 as gpb;
use agriportal_proto::indicators::v1 as ipb;
use askama::Template;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;

use super::{clean_period, province_name, PeriodParams};
use crate::chart::{self, Chart, Kind, Point};
use crate::http::csv_response;
use crate::i18n::Tr;
use crate::indicators as ind;
use crate::pages::{Chrome, Opt};
use crate::reader::Reader;

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
fn place_rows(
    places: &[gpb::ProvinceFigure],
    indicator: &ipb::Indicator,
    tr: &Tr,
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
pub fn indicator_block(p: &gpb::IndicatorProgress, tr: &Tr) -> Option<IndicatorBlock> {
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

/// The indicator and period of the address, or `None` when either is not one (404).
fn asked(code: &str, params: &PeriodParams) -> Option<(String, String)> {
    Some((
        clean_code(code)?,
        clean_period(params.period.as_deref()).ok()?,
    ))
}

/// `GET /indicators/{code}?period=`: the national figure and progress, a chart of recent
/// periods with its table, and the provinces' table.
pub async fn indicator(
    r: Reader,
    Path(code): Path<String>,
    Query(params): Query<PeriodParams>,
) -> Response {
    let tr = r.tr();
    let Some((code, period)) = asked(&code, &params) else {
        return r.not_found();
    };
    let (name, figures) = match r.web.backend.indicator(&code, &period, "").await {
        Ok(p) => {
            let name = p
                .indicator
                .as_ref()
                .map_or_else(|| code.clone(), |i| ind::name(i, tr.lang()));
            (name, indicator_block(&p, &tr))
        }
        Err(err) if matches!(err.code, ErrorCode::NotFound | ErrorCode::InvalidArgument) => {
            return r.not_found()
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
        chrome: r.chrome(&name, "indicators", false),
        code,
        name,
        figures,
        csv_query,
    };
    r.html(&page, StatusCode::OK)
}

/// `GET /indicators/{code}/{file}.csv`: an indicator's provinces, regions or series.
pub async fn indicator_csv(
    r: Reader,
    Path((code, file)): Path<(String, String)>,
    Query(params): Query<PeriodParams>,
) -> Response {
    let tr = r.tr();
    let Some((code, period)) = asked(&code, &params) else {
        return r.not_found();
    };
    let p = match r.web.backend.indicator(&code, &period, "").await {
        Ok(p) => p,
        Err(err) if matches!(err.code, ErrorCode::NotFound | ErrorCode::InvalidArgument) => {
            return r.not_found()
        }
        Err(_) => return r.unavailable_csv(),
    };
    let Some(block) = indicator_block(&p, &tr) else {
        return r.not_found();
    };
    let places = |rows: Vec<PlaceRow>, first: &str| {
        let header = tr.all(&[
            first,
            "col-value-generic",
            "col-target",
            "col-progress",
            "col-state",
        ]);
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
            tr.all(&["col-period", "col-value-generic"]),
            block
                .series
                .into_iter()
                .map(|(period, value)| vec![period, value])
                .collect(),
        ),
        _ => return r.not_found(),
    };
    let stem = file.trim_end_matches(".csv");
    csv_response(
        &header,
        &cells,
        &format!("{code}-{}-{stem}.csv", block.period_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Lang;

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
}
