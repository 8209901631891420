//! `/review`: the central working group's queue of submitted reports, each with approve and
//! return forms, and the approved reports of a period to reopen.

use agriportal_platform::period::Period;
use agriportal_platform::reference::Reference;
use agriportal_platform::Error;
use agriportal_proto::indicators::v1 as ipb;
use askama::Template;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use serde::Deserialize;

use super::{
    away, done_notice, province_name, refused_in_form, report_row, PeriodParams, ReportRow,
    LIST_LIMIT,
};
use crate::backend::Decision;
use crate::indicators::{self as ind, FieldError};
use crate::pages::Chrome;
use crate::reader::{Answer, Official, Reader};

/// `/review`.
#[derive(Template)]
#[template(path = "review.html")]
pub struct ReviewPage {
    /// Layout.
    pub chrome: Chrome,
    /// CSRF token.
    pub csrf: String,
    /// Submitted reports, oldest submission first, at most [`QUEUE_SHOWN`], unless the
    /// service did not answer.
    pub queue: Option<Vec<ReportRow>>,
    /// "20 of 31 shown…" when the queue is longer than what is shown.
    pub queue_more: Option<String>,
    /// Approved reports of one period (to reopen).
    pub approved: Option<Vec<ReportRow>>,
    /// The periods that have approved reports, newest first, for the period picker.
    pub approved_periods: Vec<PeriodChoice>,
    /// Errors for the summary (the comment field of one form).
    pub errors: Vec<FieldError>,
    /// What was typed into the refused form's comment.
    pub typed: String,
    /// A refusal of the whole decision.
    pub form_error: Option<String>,
    /// A notice after a decision.
    pub done: Option<String>,
}

impl ReviewPage {
    /// The id of the comment field of `action` on `row`'s form.
    pub fn comment_id(&self, action: &str, row: &ReportRow) -> String {
        format!("comment-{action}-{}-{}", row.province_code, row.period_id)
    }

    /// The error of that field, if it is the refused one.
    pub fn error_of(&self, action: &str, row: &ReportRow) -> Option<String> {
        let id = self.comment_id(action, row);
        self.errors
            .iter()
            .find(|e| e.field == id)
            .map(|e| e.message.clone())
    }
}

/// A period the approved list can show.
#[derive(Clone, Debug)]
pub struct PeriodChoice {
    /// Period id.
    pub id: String,
    /// In words.
    pub label: String,
    /// Whether it is the one shown.
    pub selected: bool,
}

/// Submitted reports shown at once: the oldest first, so the page stays light (a phone on a
/// slow network) however long the queue grows; the next ones appear as these are decided.
const QUEUE_SHOWN: usize = 20;

/// What the review page shows besides the reports: a refused decision, or the notice after
/// one.
#[derive(Default)]
struct Outcome {
    /// The refused comment field.
    errors: Vec<FieldError>,
    /// What was typed into it.
    typed: String,
    /// The notice after a decision.
    done: Option<String>,
}

async fn review_page(
    me: &Official,
    outcome: Outcome,
    approved_period: Option<&str>,
) -> Result<ReviewPage, Error> {
    let tr = me.tr();
    let (backend, bearer) = (&me.web.backend, &me.session.bearer);
    let (queue, approved) = tokio::join!(
        backend.reports(bearer, "", ipb::ReportState::Submitted, ""),
        backend.reports(bearer, "", ipb::ReportState::Approved, ""),
    );
    let answered = |r: Result<Vec<ipb::ReportSummary>, Error>| match r {
        Ok(all) => Ok(Some(all)),
        Err(err) if away(&err) => Ok(None),
        Err(err) => Err(err),
    };
    let (mut queue_more, mut approved_periods) = (None, Vec::new());
    let queue = answered(queue)?.map(|mut all| {
        all.sort_by_key(|r| (r.submitted_at_ms, r.province_code.clone()));
        if all.len() > QUEUE_SHOWN {
            queue_more = Some(tr.with(
                "review-queue-more",
                &[
                    ("shown", QUEUE_SHOWN.to_string()),
                    ("total", all.len().to_string()),
                ],
            ));
        }
        all.iter()
            .take(QUEUE_SHOWN)
            .map(|r| report_row(r, &tr))
            .collect::<Vec<_>>()
    });
    let approved = answered(approved)?.map(|all| {
        let mut periods: Vec<&str> = all.iter().map(|r| r.period.as_str()).collect();
        periods.sort_unstable_by(|a, b| b.cmp(a));
        periods.dedup();
        let chosen = approved_period
            .filter(|p| periods.contains(p))
            .or(periods.first().copied())
            .unwrap_or_default()
            .to_string();
        approved_periods = periods
            .iter()
            .map(|p| PeriodChoice {
                id: p.to_string(),
                label: ind::period_text(p, &tr),
                selected: *p == chosen,
            })
            .collect();
        all.iter()
            .filter(|r| r.period == chosen)
            .take(LIST_LIMIT)
            .map(|r| report_row(r, &tr))
            .collect::<Vec<_>>()
    });
    Ok(ReviewPage {
        chrome: me.chrome(&tr.t("review-title"), "account", false),
        csrf: me.session.csrf.clone(),
        queue,
        queue_more,
        approved,
        approved_periods,
        errors: outcome.errors,
        typed: outcome.typed,
        form_error: None,
        done: outcome.done,
    })
}

/// `GET /review`: the review queue, with approve and return forms per report, and reopen on
/// approved reports (admins only).
pub async fn review(me: Official, Query(params): Query<PeriodParams>) -> Answer {
    let me = me.admin()?;
    let outcome = Outcome {
        done: done_notice(params.done.as_deref(), &me.tr()),
        ..Outcome::default()
    };
    let page = review_page(&me, outcome, params.period.as_deref())
        .await
        .map_err(|err| me.failed(&err))?;
    Ok(me.html(&page, StatusCode::OK))
}

/// A review decision's form.
#[derive(Debug, Default, Deserialize)]
pub struct ReviewForm {
    /// CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// `approve`, `return` or `reopen`.
    #[serde(default)]
    pub action: String,
    /// Province code.
    #[serde(default)]
    pub province: String,
    /// Period id.
    #[serde(default)]
    pub period: String,
    /// Comment (required to return or reopen).
    #[serde(default)]
    pub comment: String,
}

/// `POST /review`: approves, returns or reopens a report; a return or reopen without a
/// comment is refused beside the comment field.
pub async fn decide(r: Reader, Form(form): Form<ReviewForm>) -> Answer {
    let me = Official::posted(r, &form.csrf)?.admin()?;
    let tr = me.tr();
    let Some(decision) = Decision::parse(&form.action) else {
        return Ok(me.not_found());
    };
    let (Some(province), Ok(period)) = (
        Reference::get()
            .resolve_province(form.province.trim())
            .map(|p| p.province().code.clone()),
        Period::parse(&form.period),
    ) else {
        return Ok(me.not_found());
    };
    let comment = form.comment.trim().to_string();
    // The refusal of this decision, beside its form's comment field.
    let refuse = |message: String, typed: String| {
        let errors = vec![FieldError {
            field: format!("comment-{}-{province}-{period}", decision.code()),
            label: format!(
                "{} · {}",
                province_name(&province),
                ind::period_text(&period.to_string(), &tr)
            ),
            message,
        }];
        refused_decision(&me, errors, typed)
    };
    if decision.needs_comment() && comment.is_empty() {
        let key = if decision == Decision::Return {
            "review-return-needs-comment"
        } else {
            "review-reopen-needs-reason"
        };
        return refuse(tr.t(key), String::new()).await;
    }
    let request = ipb::ReviewRequest {
        province_code: province.clone(),
        period: period.to_string(),
        comment: comment.clone(),
    };
    match me
        .web
        .backend
        .review(&me.session.bearer, decision, request)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/review?done={}", decision.code())).into_response()),
        Err(err) if refused_in_form(&err) => refuse(err.message, comment).await,
        Err(err) => Err(me.failed(&err)),
    }
}

/// The review page again with a decision refused (`422`).
async fn refused_decision(me: &Official, errors: Vec<FieldError>, typed: String) -> Answer {
    let outcome = Outcome {
        errors,
        typed,
        done: None,
    };
    let page = review_page(me, outcome, None)
        .await
        .map_err(|err| me.failed(&err))?;
    Ok(me.html(&page, StatusCode::UNPROCESSABLE_ENTITY))
}
