//! The plan's indicators (public, from the gateway) and the reporting workflow (signed-in
//! officials, from the indicators service with their own token): the catalogue and one
//! indicator's page, a province's reports and their entry form, the central working group's
//! review queue and chase list.
//!
//! Every form is a plain POST carrying the session's CSRF token and checked for its origin.
//! A POST that succeeds answers `303 See Other` back to the page (PRG); one that is refused
//! answers the form again with `422` and what was typed kept, each refused field marked and
//! listed in an error summary at the top (the GOV.UK pattern): a redirect would lose what the
//! official typed, and they would have to type it again.
//!
//! Files: `catalogue` (`/indicators`), `indicator` (`/indicators/{code}`), `reports`
//! (`/reports`), `form` (the entry form's page), `entry` (saving it), `files` (its CSV import,
//! export and history), `review` (`/review`), `chase` (`/chase`), and this file (what they
//! share: the official's checks, a report's row, the query).

mod catalogue;
mod chase;
mod entry;
mod files;
mod form;
mod indicator;
mod reports;
mod review;

use agriportal_platform::period::Period;
use agriportal_platform::reference::Reference;
use agriportal_platform::{Error, ErrorCode};
use agriportal_proto::indicators::v1 as ipb;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::i18n::Tr;
use crate::indicators as ind;
use crate::reader::{Official, Refused};

pub use catalogue::{indicators, indicators_csv};
pub use chase::{chase, chase_csv};
pub use entry::save_report;
pub use files::{export_report, history_csv, import_report};
pub use form::report;
pub use indicator::{indicator, indicator_csv};
pub use reports::{reports, reports_csv};
pub use review::{decide, review};

/// Most reports listed on one page (the review page's approved reports, an admin's list).
const LIST_LIMIT: usize = 200;

/// The query of the reporting pages: `?period=`, `?province=`, `?done=`.
#[derive(Debug, Default, Deserialize)]
pub struct PeriodParams {
    /// Period id.
    pub period: Option<String>,
    /// Province (the chase list's and admin's report list's filter).
    pub province: Option<String>,
    /// What the last POST did (`saved`, `submitted`, …), for the notice after PRG.
    pub done: Option<String>,
}

/// The reporting pages' answers to a failed call and to a report's address.
impl Official {
    /// A page for a failed call that leaves nothing to show: 403, 404, sign-in again, or the
    /// "unavailable" page with the rest of the layout.
    fn failed(&self, err: &Error) -> Refused {
        let tr = self.tr();
        let page = match err.code {
            ErrorCode::PermissionDenied => self.forbidden(),
            ErrorCode::NotFound => self.not_found(),
            // The session outlived what its token opens (or predates kept tokens): redirecting
            // to /signin would bounce back to /account, so say what to do instead.
            ErrorCode::Unauthenticated => self.error_page(
                StatusCode::UNAUTHORIZED,
                "error-401-title",
                tr.t("error-401-body"),
            ),
            ErrorCode::InvalidArgument | ErrorCode::FailedPrecondition => self.error_page(
                StatusCode::BAD_REQUEST,
                "error-400-title",
                err.message.clone(),
            ),
            _ => {
                tracing::warn!(error = %err, "a reporting page's backend failed");
                self.error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable-title",
                    tr.t("unavailable-body"),
                )
            }
        };
        page.into()
    }

    /// The report's address checked against the session: 404 for a period that is not one,
    /// 403 for another province than the officer's.
    fn address(&self, province: &str, period: &str) -> Result<(String, Period), Refused> {
        let Some(found) = Reference::get().resolve_province(province.trim()) else {
            return Err(self.not_found().into());
        };
        let code = found.province().code.clone();
        let Ok(period) = Period::parse(period) else {
            return Err(self.not_found().into());
        };
        if !self.is_admin() && self.session.principal.province.as_deref() != Some(code.as_str()) {
            return Err(self.forbidden().into());
        }
        Ok((code, period))
    }
}

/// Whether the call failed because the backend is away (the page then shows the
/// "unavailable" partial in place of what it would have shown).
fn away(err: &Error) -> bool {
    matches!(
        err.code,
        ErrorCode::Unavailable | ErrorCode::DeadlineExceeded | ErrorCode::Internal
    )
}

/// A refusal the form shows beside itself (a locked report, a bad import) rather than as a
/// page of its own.
fn refused_in_form(err: &Error) -> bool {
    matches!(
        err.code,
        ErrorCode::FailedPrecondition | ErrorCode::InvalidArgument
    )
}

fn province_name(code: &str) -> String {
    Reference::get()
        .province(code)
        .map_or_else(|| code.to_string(), |p| p.name.clone())
}

/// `?period=`: empty for none, `Err` for text that is not a period.
fn clean_period(period: Option<&str>) -> Result<String, ()> {
    match period.map(str::trim).filter(|p| !p.is_empty()) {
        None => Ok(String::new()),
        Some(p) => Period::parse(p).map(|p| p.to_string()).map_err(|_| ()),
    }
}

/// The notice after a successful POST (`?done=`).
fn done_notice(done: Option<&str>, tr: &Tr) -> Option<String> {
    match done? {
        d @ ("saved" | "submitted" | "imported" | "approve" | "return" | "reopen") => {
            Some(tr.t(&format!("done-{d}")))
        }
        _ => None,
    }
}

/// An audit entry's action, in words.
fn action_word(action: &str, tr: &Tr) -> String {
    match action {
        "save" | "import" | "submit" | "approve" | "return" | "reopen" => {
            tr.t(&format!("action-{action}"))
        }
        other => other.to_string(),
    }
}

/// One report in a list.
#[derive(Clone, Debug)]
pub struct ReportRow {
    /// The entry form.
    pub href: String,
    /// Province name.
    pub province: String,
    /// Period in words.
    pub period: String,
    /// State in words.
    pub state: String,
    /// State code (CSS).
    pub state_code: &'static str,
    /// Version.
    pub version: String,
    /// Deadline.
    pub deadline: String,
    /// Submitted at.
    pub submitted: String,
    /// Approved at.
    pub approved: String,
    /// Number of values.
    pub values: String,
    /// Province code.
    pub province_code: String,
    /// Period id.
    pub period_id: String,
    /// The last review comment.
    pub review_comment: String,
}

fn report_row(r: &ipb::ReportSummary, tr: &Tr) -> ReportRow {
    let lang = tr.lang();
    ReportRow {
        href: format!("/reports/{}/{}", r.province_code, r.period),
        province: province_name(&r.province_code),
        period: ind::period_text(&r.period, tr),
        state: ind::state_text(r.state, tr),
        state_code: ind::state_code(r.state),
        version: r.version.to_string(),
        deadline: ind::deadline_text(&r.deadline, lang),
        submitted: ind::time_ms(r.submitted_at_ms, lang),
        approved: ind::time_ms(r.approved_at_ms, lang),
        values: crate::format::integer(i64::from(r.value_count), lang),
        province_code: r.province_code.clone(),
        period_id: r.period.clone(),
        review_comment: r.review_comment.clone(),
    }
}
