//! `/reports`: a province's reports by period with their state, deadline and times, and the
//! periods its officer can start; for the central working group, any province's or all.

use agriportal_platform::period;
use agriportal_platform::reference::Reference;
use agriportal_proto::indicators::v1 as ipb;
use askama::Template;
use axum::extract::Query;
use axum::http::StatusCode;

use super::{away, province_name, report_row, PeriodParams, ReportRow, LIST_LIMIT};
use crate::http::private_csv;
use crate::indicators as ind;
use crate::pages::{province_filter, Chrome, Opt};
use crate::reader::{Answer, Official, Refused};

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

/// The province a request is about: the officer's own, or for an admin the one asked for
/// (possibly none). A province officer asking for another province gets the 403 page.
fn scope(me: &Official, asked: Option<&str>) -> Result<String, Refused> {
    let asked = asked.map(str::trim).unwrap_or_default();
    if me.is_admin() {
        return Ok(Reference::get()
            .province(asked)
            .map(|p| p.code.clone())
            .unwrap_or_default());
    }
    match &me.session.principal.province {
        Some(own) if asked.is_empty() || asked == own => Ok(own.clone()),
        _ => Err(me.forbidden().into()),
    }
}

/// `GET /reports`: the official's province's reports by period with their state, deadline
/// and times, and the periods they can start.
pub async fn reports(me: Official, Query(params): Query<PeriodParams>) -> Answer {
    let province = scope(&me, params.province.as_deref())?;
    let tr = me.tr();
    let backend = &me.web.backend;
    let (listed, catalogue) = tokio::join!(
        backend.reports(
            &me.session.bearer,
            &province,
            ipb::ReportState::Unspecified,
            ""
        ),
        backend.catalogue(&me.session.bearer),
    );
    let rows = match listed {
        Ok(all) => Some(
            all.iter()
                .take(LIST_LIMIT)
                .map(|r| report_row(r, &tr))
                .collect::<Vec<_>>(),
        ),
        Err(err) if away(&err) => None,
        Err(err) => return Err(me.failed(&err)),
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
    let admin = me.is_admin();
    let page = ReportsPage {
        chrome: me.chrome(&tr.t("reports-title"), "account", false),
        province: if province.is_empty() {
            String::new()
        } else {
            province_name(&province)
        },
        rows,
        startable,
        provinces: if admin {
            province_filter(&province, &tr)
        } else {
            Vec::new()
        },
        admin,
        csv: format!("/reports.csv?province={province}"),
    };
    Ok(me.html(&page, StatusCode::OK))
}

/// `GET /reports.csv`: the list of `/reports`.
pub async fn reports_csv(me: Official, Query(params): Query<PeriodParams>) -> Answer {
    let province = scope(&me, params.province.as_deref())?;
    let tr = me.tr();
    let all = me
        .web
        .backend
        .reports(
            &me.session.bearer,
            &province,
            ipb::ReportState::Unspecified,
            "",
        )
        .await
        .map_err(|err| me.failed(&err))?;
    let header = tr.all(&[
        "col-province",
        "col-period",
        "col-state",
        "col-version",
        "col-deadline",
        "col-submitted",
        "col-approved",
        "col-values",
    ]);
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
    Ok(private_csv(&header, &rows, "bao-cao.csv"))
}
