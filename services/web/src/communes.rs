//! An indicator's communes in one province (`/indicators/{code}/communes?province=…`): a
//! plain table of the province's communes (at most ~170) with their figures for the period,
//! and the records that name no commune, read from the gateway's `GetIndicatorCommunes`.
//! Only the marketplace indicators kept by commune have one; a national page never lists the
//! 3,321 communes.

use agriportal_platform::period::Period;
use agriportal_platform::reference::Reference;
use agriportal_platform::ErrorCode;
use agriportal_proto::gateway::v1 as gpb;
use askama::Template;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::http::csv_response;
use crate::i18n::Tr;
use crate::indicators as ind;
use crate::pages::{province_options, Chrome, Opt};
use crate::reader::Reader;

/// `?province=&period=` of the communes page.
#[derive(Debug, Default, Deserialize)]
pub struct CommunesParams {
    /// Province code (a pre-2025 code is mapped by the gateway).
    pub province: Option<String>,
    /// Period id; empty for the indicator's latest.
    pub period: Option<String>,
}

/// What the page shows under its province chooser.
pub enum CommunesTable {
    /// No province chosen yet.
    Choose,
    /// The indicator is not kept by commune.
    NotKept,
    /// The gateway did not answer.
    Unavailable,
    /// The communes.
    Rows {
        /// The table's caption: province and period.
        caption: String,
        /// (commune, value in words), in code order.
        rows: Vec<(String, String)>,
        /// The records that name no commune, in words.
        unassigned: String,
        /// The CSV of this table.
        csv: String,
    },
}

/// `/indicators/{code}/communes`.
#[derive(Template)]
#[template(path = "communes.html")]
pub struct CommunesPage {
    /// Layout.
    pub chrome: Chrome,
    /// Indicator code.
    pub code: String,
    /// Heading.
    pub title: String,
    /// The link back to the indicator's page.
    pub back: String,
    /// `?period=…` of that link, or empty.
    pub period_query: String,
    /// The period asked for (kept by the chooser), or empty.
    pub period: String,
    /// The 34 provinces to choose from.
    pub provinces: Vec<Opt>,
    /// The table, or why there is none.
    pub table: CommunesTable,
}

/// A code as indicator codes are written, or `None`.
fn clean_code(code: &str) -> Option<String> {
    let code = code.trim();
    (!code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then(|| code.to_string())
}

/// The query, checked: (province 2025 code or empty, period id or empty); `None` for a
/// province or period that is not one.
fn clean(params: &CommunesParams) -> Option<(String, String)> {
    let province = match params.province.as_deref().map(str::trim) {
        None | Some("") => String::new(),
        Some(p) => Reference::get()
            .resolve_province(p)?
            .province()
            .code
            .clone(),
    };
    let period = match params.period.as_deref().map(str::trim) {
        None | Some("") => String::new(),
        Some(p) => Period::parse(p).ok()?.to_string(),
    };
    Some((province, period))
}

/// A commune's value in the reader's language, with the indicator's unit.
fn value_text(value: &str, answer: &gpb::IndicatorCommunes, tr: &Tr) -> String {
    let figure = gpb::Figure {
        has_value: true,
        value: value.to_string(),
        ..Default::default()
    };
    match &answer.indicator {
        Some(i) => ind::figure_text(Some(&figure), i, tr),
        None => ind::decimal_text(value, tr.lang()),
    }
}

/// `GET /indicators/{code}/communes?province=&period=`.
pub async fn page(
    reader: Reader,
    Path(code): Path<String>,
    Query(params): Query<CommunesParams>,
) -> Response {
    let tr = reader.tr();
    let (Some(code), Some((province, period))) = (clean_code(&code), clean(&params)) else {
        return reader.not_found();
    };
    let mut name = code.clone();
    let table = if province.is_empty() {
        CommunesTable::Choose
    } else {
        match reader
            .web
            .backend
            .indicator_communes(&code, &period, &province)
            .await
        {
            Ok(answer) => {
                if let Some(i) = &answer.indicator {
                    name = ind::name(i, tr.lang());
                }
                if answer.communes_note.is_empty() {
                    let province_name = Reference::get()
                        .province(&province)
                        .map_or_else(|| province.clone(), |p| p.name.clone());
                    CommunesTable::Rows {
                        caption: tr.with(
                            "communes-caption",
                            &[
                                ("province", province_name),
                                ("period", ind::period_text(&answer.period, &tr)),
                            ],
                        ),
                        rows: answer
                            .communes
                            .iter()
                            .map(|c| (c.name.clone(), value_text(&c.value, &answer, &tr)))
                            .collect(),
                        unassigned: value_text(&answer.unassigned, &answer, &tr),
                        csv: format!(
                            "/indicators/{code}/communes.csv?province={province}&period={}",
                            answer.period
                        ),
                    }
                } else {
                    CommunesTable::NotKept
                }
            }
            Err(err) if matches!(err.code, ErrorCode::NotFound | ErrorCode::InvalidArgument) => {
                return reader.not_found()
            }
            Err(err) => {
                tracing::warn!(error = %err, "an indicator's communes are unavailable");
                CommunesTable::Unavailable
            }
        }
    };
    let title = tr.with("communes-title", &[("name", name.clone())]);
    let page = CommunesPage {
        chrome: reader.chrome(&title, "indicators", false),
        back: name,
        period_query: if period.is_empty() {
            String::new()
        } else {
            format!("?period={period}")
        },
        code,
        title,
        period,
        provinces: province_options(&province),
        table,
    };
    reader.html(&page, StatusCode::OK)
}

/// `GET /indicators/{code}/communes.csv?province=&period=`: the same table as CSV (code,
/// commune, value), the unassigned rest last.
pub async fn csv(
    reader: Reader,
    Path(code): Path<String>,
    Query(params): Query<CommunesParams>,
) -> Response {
    let tr = reader.tr();
    let (Some(code), Some((province, period))) = (clean_code(&code), clean(&params)) else {
        return reader.not_found();
    };
    if province.is_empty() {
        return reader.not_found();
    }
    let answer = match reader
        .web
        .backend
        .indicator_communes(&code, &period, &province)
        .await
    {
        Ok(a) if a.communes_note.is_empty() => a,
        Ok(_) => return reader.not_found(),
        Err(err) if matches!(err.code, ErrorCode::NotFound | ErrorCode::InvalidArgument) => {
            return reader.not_found()
        }
        Err(_) => return reader.unavailable_csv(),
    };
    let mut rows: Vec<Vec<String>> = answer
        .communes
        .iter()
        .map(|c| vec![c.code.clone(), c.name.clone(), c.value.clone()])
        .collect();
    rows.push(vec![
        String::new(),
        tr.t("communes-unassigned"),
        answer.unassigned.clone(),
    ]);
    let header = [
        tr.t("col-code"),
        tr.t("col-commune"),
        tr.t("col-value-generic"),
    ];
    let filename = format!(
        "{}-{province}-{}-communes.csv",
        code.to_lowercase(),
        answer.period
    );
    csv_response(&header, &rows, &filename)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_checked_and_old_provinces_are_mapped() {
        let q = |province: &str, period: &str| CommunesParams {
            province: Some(province.into()),
            period: Some(period.into()),
        };
        assert_eq!(
            clean(&q("79", "202203")),
            Some(("79".to_string(), "202203".to_string()))
        );
        // Hà Giang (02) is part of Tuyên Quang (08) since 2025.
        assert_eq!(clean(&q("02", "")), Some(("08".to_string(), String::new())));
        assert_eq!(clean(&q("99", "")), None);
        assert_eq!(clean(&q("79", "2022-03")), None);
        assert_eq!(clean(&CommunesParams::default()), Some(Default::default()));
        assert!(clean_code("SALES_VALUE").is_some());
        assert!(clean_code("a/b").is_none());
        assert_eq!(
            province_options("79").iter().filter(|o| o.selected).count(),
            1
        );
    }
}
