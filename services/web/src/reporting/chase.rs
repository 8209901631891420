//! `/chase`: every province's reporting for a period, most urgent first, with counts by state
//! (the central working group's list of whom to chase).

use agriportal_proto::indicators::v1 as ipb;
use askama::Template;
use axum::extract::Query;
use axum::http::StatusCode;

use super::{away, clean_period, province_name, PeriodParams};
use crate::http::private_csv;
use crate::i18n::Tr;
use crate::indicators as ind;
use crate::pages::Chrome;
use crate::reader::{Answer, Official};

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
    tr: &Tr,
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
pub async fn chase(me: Official, Query(params): Query<PeriodParams>) -> Answer {
    let me = me.admin()?;
    let tr = me.tr();
    let asked = params.period.clone().unwrap_or_default();
    let mut page = ChasePage {
        chrome: me.chrome(&tr.t("chase-title"), "account", false),
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
        return Ok(me.html(&page, StatusCode::BAD_REQUEST));
    };
    match me
        .web
        .backend
        .completeness(&me.session.bearer, &period)
        .await
    {
        Ok(c) => {
            let (rows, counts) = chase_rows(&c, &tr);
            page.period = ind::period_text(&c.period, &tr);
            page.deadline = ind::deadline_text(&c.deadline, tr.lang());
            page.csv = format!("/chase.csv?period={}", c.period);
            page.rows = Some(rows);
            page.counts = counts;
        }
        Err(err) if away(&err) => {}
        Err(err) => return Err(me.failed(&err)),
    }
    Ok(me.html(&page, StatusCode::OK))
}

/// `GET /chase.csv?period=`: the chase list's table.
pub async fn chase_csv(me: Official, Query(params): Query<PeriodParams>) -> Answer {
    let me = me.admin()?;
    let tr = me.tr();
    let Ok(period) = clean_period(params.period.as_deref()) else {
        return Ok(me.not_found());
    };
    let c = me
        .web
        .backend
        .completeness(&me.session.bearer, &period)
        .await
        .map_err(|err| me.failed(&err))?;
    let (rows, _) = chase_rows(&c, &tr);
    let header = tr.all(&[
        "col-province",
        "col-state",
        "chase-overdue",
        "col-submitted",
        "col-on-time",
        "col-approved",
    ]);
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
    Ok(private_csv(
        &header,
        &cells,
        &format!("don-doc-{}.csv", c.period),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Lang;

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
