//! The dashboard's time series: the filters (a plain GET form: metric, granularity, partner,
//! province, dates), checked here with messages a person can act on, and the chart with its
//! data table built from the gateway's answer.

use agriportal_platform::reference::{Partner, Reference};
use agriportal_proto::gateway::v1 as pb;
use serde::Deserialize;
use time::{Date, Duration};

use crate::backend::SeriesQuery;
use crate::chart::{self, Chart, Kind, Point};
use crate::format::{self, Lang};
use crate::i18n::Tr;

/// The metrics a chart can show, in the form's order.
pub const METRICS: [&str; 4] = [
    "sales_grams",
    "sales_value_vnd",
    "orders",
    "households_onboarded",
];

/// The granularities, in the form's order.
pub const GRANULARITIES: [&str; 3] = ["day", "week", "month"];

/// Days shown when the form names no dates: about three months, by week.
const DEFAULT_DAYS: i64 = 89;

/// The filters as sent (every field optional: a first visit sends none).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct FilterParams {
    /// Metric.
    pub metric: Option<String>,
    /// Granularity.
    pub granularity: Option<String>,
    /// Partner code, or empty.
    pub partner: Option<String>,
    /// Province code, or empty.
    pub province: Option<String>,
    /// First day.
    pub from: Option<String>,
    /// Last day.
    pub to: Option<String>,
    /// How the province table is sorted.
    pub sort: Option<String>,
}

/// The filters, checked and completed with defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filters {
    /// What the gateway is asked.
    pub query: SeriesQuery,
    /// The first day.
    pub from: Date,
    /// The last day.
    pub to: Date,
}

fn date_param(value: Option<&str>, name: &str, tr: &Tr) -> Result<Option<Date>, String> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let shown: String = value.chars().take(20).collect();
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(value, format)
        .map(Some)
        .map_err(|_| match tr.lang() {
            Lang::Vi => {
                format!("ngày «{shown}» ở ô {name} không đúng dạng năm-tháng-ngày (2026-12-01)")
            }
            Lang::En => format!("the date “{shown}” in {name} is not year-month-day (2026-12-01)"),
        })
}

impl Filters {
    /// Checks `params`; `today` (in Vietnam) anchors the default range. A refusal says which
    /// field is wrong and what it should be, in the reader's language.
    pub fn check(params: &FilterParams, today: Date, tr: &Tr) -> Result<Filters, String> {
        let vi = tr.lang() == Lang::Vi;
        let pick =
            |value: &Option<String>, allowed: &[&str], default: &str, field: &str| match value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
            {
                None => Ok(default.to_string()),
                Some(v) if allowed.contains(&v) => Ok(v.to_string()),
                Some(v) => {
                    let shown: String = v.chars().take(30).collect();
                    Err(if vi {
                        format!("«{shown}» không phải là một lựa chọn của ô {field}")
                    } else {
                        format!("“{shown}” is not one of the choices for {field}")
                    })
                }
            };
        let metric = pick(
            &params.metric,
            &METRICS,
            "sales_grams",
            &tr.t("filter-metric"),
        )?;
        let granularity = pick(
            &params.granularity,
            &GRANULARITIES,
            "week",
            &tr.t("filter-granularity"),
        )?;
        let partners: Vec<&str> = Partner::ALL.iter().map(|p| p.code()).collect();
        let partner = pick(&params.partner, &partners, "", &tr.t("filter-partner"))?;
        let province = match params
            .province
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            None => String::new(),
            Some(code) => match Reference::get().resolve_province(code) {
                Some(found) => found.province().code.clone(),
                None => {
                    let shown: String = code.chars().take(10).collect();
                    return Err(if vi {
                        format!("không có tỉnh, thành phố mã «{shown}»")
                    } else {
                        format!("there is no province with code “{shown}”")
                    });
                }
            },
        };
        let to = date_param(params.to.as_deref(), &tr.t("filter-to"), tr)?.unwrap_or(today);
        let from = date_param(params.from.as_deref(), &tr.t("filter-from"), tr)?
            .unwrap_or(to - Duration::days(DEFAULT_DAYS));
        if from > to {
            return Err(if vi {
                "ngày bắt đầu phải trước ngày kết thúc".to_string()
            } else {
                "the first day must come before the last".to_string()
            });
        }
        Ok(Filters {
            query: SeriesQuery {
                metric,
                granularity,
                from: from.to_string(),
                to: to.to_string(),
                province,
                partner,
            },
            from,
            to,
        })
    }

    /// The filters as a query string (links to the CSV of the same series, language switch).
    pub fn query_string(&self) -> String {
        let q = &self.query;
        let mut parts = vec![
            format!("metric={}", q.metric),
            format!("granularity={}", q.granularity),
            format!("from={}", q.from),
            format!("to={}", q.to),
        ];
        if !q.partner.is_empty() {
            parts.push(format!("partner={}", q.partner));
        }
        if !q.province.is_empty() {
            parts.push(format!("province={}", q.province));
        }
        parts.join("&amp;")
    }
}

/// A chart and the table beside it.
#[derive(Clone, Debug)]
pub struct ChartView {
    /// The caption of both (what, by what, where, when).
    pub caption: String,
    /// The inline SVG.
    pub svg: String,
    /// Period and value, formatted.
    pub rows: Vec<(String, String)>,
    /// The same, raw, for the CSV.
    pub raw: Vec<(String, i64)>,
    /// The value column's header.
    pub unit: String,
}

/// Formats a metric's value: tonnes from grams, đồng, counts.
pub fn value_of(metric: &str, value: i64, lang: Lang) -> String {
    match metric {
        "sales_grams" => format::tonnes(value, lang),
        _ => format::integer(value, lang),
    }
}

fn axis_value(metric: &str, value: i64, lang: Lang) -> String {
    match metric {
        // The axis of tonnes counts tonnes, not grams.
        "sales_grams" => format::compact(value / 1_000_000, lang),
        _ => format::compact(value, lang),
    }
}

/// How a period reads: a day, the week starting on a day, a month.
pub fn period_label(start: &str, granularity: &str, lang: Lang) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let Ok(day) = Date::parse(start, format) else {
        return start.to_string();
    };
    match granularity {
        "month" => format::month(day.year(), day.month(), lang),
        _ => format::date(day, lang),
    }
}

/// The chart and table for `filters`, from the gateway's `series`.
pub fn chart_view(
    id: &str,
    filters: &Filters,
    series: &pb::GetTimeSeriesResponse,
    scope: &str,
    tr: &Tr,
) -> ChartView {
    let lang = tr.lang();
    let q = &filters.query;
    let metric_name = tr.t(&format!("metric-{}", q.metric));
    let caption = tr.with(
        "chart-caption",
        &[
            ("metric", metric_name.clone()),
            (
                "granularity",
                tr.t(&format!("granularity-{}", q.granularity))
                    .to_lowercase(),
            ),
            ("scope", scope.to_string()),
            ("from", format::date(filters.from, lang)),
            ("to", format::date(filters.to, lang)),
        ],
    );
    let points: Vec<Point> = series
        .points
        .iter()
        .map(|p| Point {
            label: period_label(&p.period_start, &q.granularity, lang),
            value: p.value,
        })
        .collect();
    let total = points.iter().fold(0i64, |t, p| t.saturating_add(p.value));
    let description = match points.iter().max_by_key(|p| p.value) {
        Some(max) => tr.with(
            "chart-desc",
            &[
                ("count", format::integer(points.len() as i64, lang)),
                ("max", value_of(&q.metric, max.value, lang)),
                ("maxlabel", max.label.clone()),
                ("total", value_of(&q.metric, total, lang)),
            ],
        ),
        None => tr.t("chart-empty"),
    };
    let metric = q.metric.clone();
    let format_value = move |v: i64| axis_value(&metric, v, lang);
    let empty = tr.t("chart-empty");
    let svg = chart::render(&Chart {
        id,
        title: &caption,
        description: &description,
        points: &points,
        kind: Kind::Bars,
        format_value: &format_value,
        empty_text: &empty,
    });
    let rows = points
        .iter()
        .map(|p| (p.label.clone(), value_of(&q.metric, p.value, lang)))
        .collect();
    let raw = series
        .points
        .iter()
        .map(|p| (p.period_start.clone(), p.value))
        .collect();
    ChartView {
        caption,
        svg,
        rows,
        raw,
        unit: metric_name,
    }
}

/// Today in Vietnam (UTC+7).
pub fn today() -> Date {
    time::OffsetDateTime::now_utc()
        .to_offset(format::VIETNAM)
        .date()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Date {
        time::macros::date!(2026 - 12 - 02)
    }

    #[test]
    fn no_filters_mean_about_three_months_by_week_nationwide() {
        let tr = Tr::new(Lang::Vi);
        let f = Filters::check(&FilterParams::default(), today(), &tr).unwrap();
        assert_eq!(f.query.metric, "sales_grams");
        assert_eq!(f.query.granularity, "week");
        assert_eq!(f.query.to, "2026-12-02");
        assert_eq!(f.query.from, "2026-09-04");
        assert_eq!(f.query.province, "");
    }

    #[test]
    fn bad_filters_are_refused_by_name_in_the_reader_s_language() {
        let vi = Tr::new(Lang::Vi);
        let en = Tr::new(Lang::En);
        let bad = FilterParams {
            metric: Some("<script>".into()),
            ..Default::default()
        };
        let err = Filters::check(&bad, today(), &vi).unwrap_err();
        assert!(err.contains("Số liệu"), "{err}");
        let err = Filters::check(&bad, today(), &en).unwrap_err();
        assert!(err.contains("Figure"), "{err}");
        let dates = FilterParams {
            from: Some("2026-13-01".into()),
            ..Default::default()
        };
        assert!(Filters::check(&dates, today(), &en)
            .unwrap_err()
            .contains("year-month-day"));
        let reversed = FilterParams {
            from: Some("2026-12-01".into()),
            to: Some("2026-11-01".into()),
            ..Default::default()
        };
        assert!(Filters::check(&reversed, today(), &en).is_err());
        // A pre-2025 province code finds the province it merged into.
        let old = FilterParams {
            province: Some("77".into()),
            ..Default::default()
        };
        let f = Filters::check(&old, today(), &en).unwrap();
        assert_ne!(f.query.province, "");
        assert!(Filters::check(
            &FilterParams {
                province: Some("999".into()),
                ..Default::default()
            },
            today(),
            &en
        )
        .is_err());
    }

    #[test]
    fn periods_read_as_days_and_months() {
        assert_eq!(period_label("2026-12-01", "day", Lang::Vi), "01/12/2026");
        assert_eq!(period_label("2026-12-01", "month", Lang::En), "Dec 2026");
        assert_eq!(value_of("sales_grams", 1_500_000, Lang::Vi), "1,5");
        assert_eq!(value_of("orders", 1_500_000, Lang::En), "1,500,000");
    }
}
