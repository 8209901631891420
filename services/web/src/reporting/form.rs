//! The entry form of a province's report for a period (`/reports/{province}/{period}`): its
//! fields with last period's values, the gateway's figures for context, the history; read-only
//! once submitted or approved. What it loads and how it renders serve the save and the import
//! too, which show the form again when refused.

use std::collections::HashMap;

use agriportal_platform::period::{self, Period};
use agriportal_platform::Error;
use agriportal_proto::gateway::v1 as gpb;
use agriportal_proto::indicators::v1 as ipb;
use askama::Template;
use axum::extract::{Path, Query};
use axum::http::StatusCode;

use super::{action_word, done_notice, province_name, PeriodParams};
use crate::format::Lang;
use crate::http::{Visit, Web};
use crate::i18n::Tr;
use crate::indicators::{self as ind, FieldError};
use crate::pages::Chrome;
use crate::reader::{Answer, Official};
use crate::session::Session;

/// One value field of the entry form.
#[derive(Clone, Debug)]
pub struct EntryField {
    /// Indicator code (the field names are `v_{code}` and `c_{code}`).
    pub code: String,
    /// The input's id.
    pub id: String,
    /// Its label: the indicator's name.
    pub label: String,
    /// Unit, in words.
    pub unit: String,
    /// What is in the field: what was typed (kept when refused) or what is stored.
    pub value: String,
    /// What is stored, as sent back unchanged (so only changed values are saved).
    pub stored: String,
    /// The value's comment.
    pub comment: String,
    /// The stored comment.
    pub stored_comment: String,
    /// Last period's value, in words.
    pub previous: String,
    /// Allowed range and digits, in words.
    pub hint: String,
    /// Why it was refused.
    pub error: Option<String>,
    /// Whether the input takes decimals (`inputmode`).
    pub decimal: bool,
    /// The stored value in words with its unit, for the read-only table ("—" for none).
    pub shown: String,
}

/// A figure the gateway has for the province (marketplace or derived), beside the form.
#[derive(Clone, Debug)]
pub struct ContextRow {
    /// Indicator name.
    pub name: String,
    /// Value, or why none.
    pub value: String,
}

/// One line of the audit table.
#[derive(Clone, Debug)]
pub struct HistoryRow {
    /// When.
    pub at: String,
    /// Who.
    pub actor: String,
    /// What, in words.
    pub action: String,
    /// Which indicator.
    pub indicator: String,
    /// Before.
    pub old: String,
    /// After.
    pub new: String,
    /// Comment.
    pub comment: String,
    /// Version.
    pub version: String,
}

/// A line of an import that was refused.
#[derive(Clone, Debug)]
pub struct ImportError {
    /// Line number in the file.
    pub line: String,
    /// Indicator code as given.
    pub code: String,
    /// Why.
    pub reason: String,
}

/// `/reports/{province}/{period}`.
#[derive(Template)]
#[template(path = "report.html")]
pub struct ReportPage {
    /// Layout.
    pub chrome: Chrome,
    /// Heading.
    pub heading: String,
    /// The form's action.
    pub action: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// State in words.
    pub state: String,
    /// State code.
    pub state_code: &'static str,
    /// Version.
    pub version: String,
    /// Deadline.
    pub deadline: String,
    /// Submitted.
    pub submitted: String,
    /// Approved.
    pub approved: String,
    /// Last review comment.
    pub review_comment: String,
    /// Why the form is read-only, if it is.
    pub locked: Option<String>,
    /// The fields.
    pub fields: Vec<EntryField>,
    /// Errors, for the summary.
    pub errors: Vec<FieldError>,
    /// A refusal of the whole form (report locked, submission refused).
    pub form_error: Option<String>,
    /// A notice after a successful POST.
    pub done: Option<String>,
    /// Context figures from the gateway.
    pub context: Option<Vec<ContextRow>>,
    /// The audit table.
    pub history: Vec<HistoryRow>,
    /// The import's refused lines.
    pub import_errors: Vec<ImportError>,
    /// The import's summary.
    pub import_summary: Option<String>,
    /// What was pasted into the import field (kept when refused).
    pub import_text: String,
    /// Whether "keep the valid lines" was ticked.
    pub import_keep: bool,
    /// The report as CSV.
    pub export: String,
    /// The history as CSV.
    pub history_csv: String,
    /// The list of reports.
    pub back: String,
}

/// What the handlers of the form know about the report being filled in.
pub(super) struct Loaded {
    /// Province code.
    pub(super) province: String,
    /// The period.
    pub(super) period: Period,
    /// The fields: the indicators the province reports for this type of period.
    pub(super) indicators: Vec<ipb::Indicator>,
    /// The report, unless not started.
    pub(super) report: Option<ipb::Report>,
    /// Last period's report, if any.
    pub(super) previous: Option<ipb::Report>,
    /// The gateway's figures, unless it did not answer.
    pub(super) context: Option<Vec<ContextRow>>,
}

/// The report of `province` for `period`, with what the form shows beside it: the catalogue
/// (its fields), last period's report and the gateway's figures, asked for together.
pub(super) async fn load(me: &Official, province: String, period: Period) -> Result<Loaded, Error> {
    let (backend, bearer) = (&me.web.backend, &me.session.bearer);
    let (id, tr) = (period.to_string(), me.tr());
    // The first allowed period has none before it (`previous` saturates to itself).
    let previous_id = (period.previous() != period).then(|| period.previous().to_string());
    let (catalogue, report, previous, context) = tokio::join!(
        backend.catalogue(bearer),
        backend.report(bearer, &province, &id),
        async {
            match &previous_id {
                Some(p) => backend.report(bearer, &province, p).await.ok(),
                None => None,
            }
        },
        context(&me.web, &tr, &province, &id),
    );
    let catalogue = catalogue?;
    let report = match report {
        Ok(r) => Some(r),
        // Not started yet: the form is empty and the first save starts it.
        Err(err) if err.code == agriportal_platform::ErrorCode::NotFound => None,
        Err(err) => return Err(err),
    };
    let indicators = catalogue
        .into_iter()
        .filter(|i| ind::period_type(i) == Some(period.kind()) && ind::province_reported(i))
        .collect();
    Ok(Loaded {
        province,
        period,
        indicators,
        report,
        previous,
        context,
    })
}

/// The figures the gateway computes for the province (marketplaces', derived) for the period,
/// in one call for them all; `None` when it does not answer (the form works without them).
async fn context(web: &Web, tr: &Tr, province: &str, period: &str) -> Option<Vec<ContextRow>> {
    match web.backend.indicator_list(period, province).await {
        Ok(all) => Some(context_rows(&all, tr)),
        Err(err) => {
            tracing::warn!(error = %err, "the entry form's context figures are unavailable");
            None
        }
    }
}

/// The marketplace and derived indicators of `all` with the province's figure, in catalogue
/// position (the province's own indicators are the form's fields; the Q&A ones have no source
/// yet).
fn context_rows(all: &[gpb::IndicatorSummary], tr: &Tr) -> Vec<ContextRow> {
    let shown = [ipb::Source::Marketplace as i32, ipb::Source::Derived as i32];
    let mut rows: Vec<(u32, ContextRow)> = all
        .iter()
        .filter_map(|s| {
            let i = s.indicator.as_ref().filter(|i| shown.contains(&i.source))?;
            let figure = s.province.as_ref().and_then(|p| p.figure.as_ref());
            Some((
                i.position,
                ContextRow {
                    name: ind::name(i, tr.lang()),
                    value: ind::figure_text(figure, i, tr),
                },
            ))
        })
        .collect();
    rows.sort_by_key(|(position, _)| *position);
    rows.into_iter().map(|(_, row)| row).collect()
}

/// Stored values as the reader writes decimals (the form takes both marks).
fn stored_for_input(value: &str, lang: Lang) -> String {
    match lang {
        Lang::Vi => value.replace('.', ","),
        Lang::En => value.to_string(),
    }
}

fn hint(i: &ipb::Indicator, tr: &Tr) -> String {
    let lang = tr.lang();
    let mut parts = Vec::new();
    if !i.min_value.is_empty() {
        parts.push(tr.with(
            "hint-min",
            &[("min", ind::decimal_text(&i.min_value, lang))],
        ));
    }
    if !i.max_value.is_empty() {
        parts.push(tr.with(
            "hint-max",
            &[("max", ind::decimal_text(&i.max_value, lang))],
        ));
    }
    parts.push(if i.scale == 0 {
        tr.t("hint-integer")
    } else {
        tr.with("hint-scale", &[("scale", i.scale.to_string())])
    });
    parts.join("; ")
}

/// Typed values of a refused POST, by code: (value, comment).
pub(super) type Typed = HashMap<String, (String, String)>;

/// What the form shows besides the report: what a refused POST sent, why, or the notice
/// after one that succeeded.
#[derive(Default)]
pub(super) struct Feedback {
    /// What was typed (kept when refused).
    pub(super) typed: Option<Typed>,
    /// The refused fields.
    pub(super) errors: Vec<FieldError>,
    /// A refusal of the whole form.
    pub(super) form_error: Option<String>,
    /// The notice after a successful POST.
    pub(super) done: Option<String>,
    /// A refused import.
    pub(super) import: Option<Imported>,
}

/// A refused import as the form shows it again.
pub(super) struct Imported {
    /// Its refused lines.
    pub(super) errors: Vec<ImportError>,
    /// What happened, in words.
    pub(super) summary: String,
    /// What was pasted.
    pub(super) text: String,
    /// Whether "keep the valid lines" was ticked.
    pub(super) keep: bool,
}

/// The entry form of `loaded` for the official of `session`.
pub(super) fn report_page(
    visit: &Visit,
    session: &Session,
    loaded: &Loaded,
    feedback: Feedback,
) -> ReportPage {
    let tr = visit.tr();
    let lang = tr.lang();
    let period_id = loaded.period.to_string();
    let report = loaded.report.clone().unwrap_or_default();
    let stored = |code: &str| {
        report
            .values
            .iter()
            .find(|v| v.indicator_code == code)
            .cloned()
            .unwrap_or_default()
    };
    let previous = |i: &ipb::Indicator| {
        loaded
            .previous
            .as_ref()
            .and_then(|r| r.values.iter().find(|v| v.indicator_code == i.code))
            .map(|v| ind::value_text(&v.value, i, &tr))
            .unwrap_or_else(|| tr.t("previous-none"))
    };
    let Feedback {
        typed,
        errors,
        form_error,
        done,
        import,
    } = feedback;
    let fields = loaded
        .indicators
        .iter()
        .map(|i| {
            let saved = stored(&i.code);
            let id = ind::field_id(&i.code);
            let (value, comment) = match typed.as_ref().and_then(|t| t.get(&i.code)) {
                Some((v, c)) => (v.clone(), c.clone()),
                None => (stored_for_input(&saved.value, lang), saved.comment.clone()),
            };
            EntryField {
                code: i.code.clone(),
                error: errors
                    .iter()
                    .find(|e| e.field == id)
                    .map(|e| e.message.clone()),
                id,
                label: ind::name(i, lang),
                unit: ind::unit(i, &tr),
                value,
                comment,
                stored_comment: saved.comment.clone(),
                previous: previous(i),
                hint: hint(i, &tr),
                decimal: i.scale > 0,
                shown: if saved.value.is_empty() {
                    "—".to_string()
                } else {
                    ind::value_text(&saved.value, i, &tr)
                },
                stored: saved.value,
            }
        })
        .collect();
    let state = ipb::ReportState::try_from(report.state).unwrap_or_default();
    let locked = match state {
        ipb::ReportState::Approved => Some(tr.t("locked-approved")),
        ipb::ReportState::Submitted => Some(tr.t("locked-submitted")),
        _ => None,
    };
    let history = report
        .history
        .iter()
        .rev()
        .map(|h| HistoryRow {
            at: ind::time_ms(h.at_ms, lang),
            actor: h.actor.clone(),
            action: action_word(&h.action, &tr),
            indicator: h.indicator_code.clone(),
            old: ind::decimal_text(&h.old_value, lang),
            new: ind::decimal_text(&h.new_value, lang),
            comment: h.comment.clone(),
            version: h.version.to_string(),
        })
        .collect();
    let title = tr.with(
        "report-title",
        &[
            ("province", province_name(&loaded.province)),
            ("period", ind::period_text(&period_id, &tr)),
        ],
    );
    let (import_errors, import_summary, import_text, import_keep) = match import {
        Some(i) => (i.errors, Some(i.summary), i.text, i.keep),
        None => (Vec::new(), None, String::new(), false),
    };
    let base = format!("/reports/{}/{period_id}", loaded.province);
    let deadline = if report.deadline.is_empty() {
        loaded
            .period
            .deadline(&period::Deadlines::default())
            .to_string()
    } else {
        report.deadline.clone()
    };
    ReportPage {
        chrome: visit.chrome(&title, "account", false),
        heading: title,
        action: base.clone(),
        csrf: session.csrf.clone(),
        state: if loaded.report.is_some() {
            ind::state_text(report.state, &tr)
        } else {
            tr.t("state-not-started")
        },
        state_code: ind::state_code(report.state),
        version: if report.version == 0 {
            "—".to_string()
        } else {
            report.version.to_string()
        },
        deadline: ind::deadline_text(&deadline, lang),
        submitted: ind::time_ms(report.submitted_at_ms, lang),
        approved: ind::time_ms(report.approved_at_ms, lang),
        review_comment: report.review_comment.clone(),
        locked,
        fields,
        errors,
        form_error,
        done,
        context: loaded.context.clone(),
        history,
        import_errors,
        import_summary,
        import_text,
        import_keep,
        export: format!("{base}/export.csv"),
        history_csv: format!("{base}/history.csv"),
        back: if session.principal.is_admin() {
            format!("/reports?province={}", loaded.province)
        } else {
            "/reports".to_string()
        },
    }
}

/// `GET /reports/{province}/{period}`: the entry form (read-only once submitted or approved),
/// with last period's values, the gateway's figures for context and the history.
pub async fn report(
    me: Official,
    Path((province, period)): Path<(String, String)>,
    Query(params): Query<PeriodParams>,
) -> Answer {
    let (province, period) = me.address(&province, &period)?;
    let loaded = load(&me, province, period)
        .await
        .map_err(|err| me.failed(&err))?;
    let done = done_notice(params.done.as_deref(), &me.tr());
    let page = report_page(
        &me.visit,
        &me.session,
        &loaded,
        Feedback {
            done,
            ..Feedback::default()
        },
    );
    Ok(me.html(&page, StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit(lang: Lang) -> Visit {
        Visit {
            lang,
            lang_chosen: false,
            session: None,
            expired: false,
            cookies: String::new(),
            path: "/reports/79/202611".into(),
            query: String::new(),
            same_origin: true,
            signed_out: false,
        }
    }

    fn officer() -> Session {
        Session {
            principal: crate::session::Principal {
                subject: "t1".into(),
                role: "province".into(),
                province: Some("79".into()),
                token_id: Some("t1".into()),
            },
            bearer: crate::session::Bearer("ap1.x".into()),
            csrf: "c".repeat(64),
            expires_at_ms: 0,
        }
    }

    fn loaded(state: ipb::ReportState) -> Loaded {
        let indicator = |code: &str, name: &str, scale: u32| ipb::Indicator {
            code: code.into(),
            name_vi: name.into(),
            name_en: name.into(),
            unit: "tonnes".into(),
            period_type: ipb::PeriodType::Month as i32,
            source: ipb::Source::Province as i32,
            scale,
            min_value: "0".into(),
            ..Default::default()
        };
        let value = |code: &str, v: &str| ipb::ReportedValue {
            indicator_code: code.into(),
            value: v.into(),
            ..Default::default()
        };
        Loaded {
            province: "79".into(),
            period: Period::parse("202611").unwrap(),
            indicators: vec![
                indicator("TONNES", "Sản lượng", 1),
                indicator("SHOPS", "Gian hàng", 0),
            ],
            report: Some(ipb::Report {
                province_code: "79".into(),
                period: "202611".into(),
                state: state as i32,
                version: 1,
                values: vec![value("TONNES", "12.5")],
                deadline: "2026-12-05".into(),
                history: vec![ipb::AuditEntry {
                    at_ms: 1_796_108_700_000,
                    actor: "province:79".into(),
                    action: "save".into(),
                    indicator_code: "TONNES".into(),
                    new_value: "12.5".into(),
                    version: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            previous: Some(ipb::Report {
                values: vec![value("SHOPS", "40")],
                ..Default::default()
            }),
            context: None,
        }
    }

    #[test]
    fn a_refused_value_is_marked_beside_its_field_kept_and_listed_at_the_top() {
        let visit = visit(Lang::Vi);
        let live = officer();
        let loaded = loaded(ipb::ReportState::Draft);
        let mut typed = Typed::new();
        typed.insert("SHOPS".into(), ("-3".into(), "kiểm kê".into()));
        let errors = vec![FieldError {
            field: "v-SHOPS".into(),
            label: "Gian hàng".into(),
            message: "must be at least 0".into(),
        }];
        let feedback = Feedback {
            typed: Some(typed),
            errors,
            ..Feedback::default()
        };
        let page = report_page(&visit, &live, &loaded, feedback);
        let body = page.render().unwrap();
        assert!(
            body.contains(r##"<a href="#v-SHOPS">Gian hàng: must be at least 0</a>"##),
            "{body}"
        );
        assert!(body.contains(r#"id="v-SHOPS-error""#));
        assert!(
            body.contains(r#"aria-describedby="v-SHOPS-hint v-SHOPS-error" aria-invalid="true""#)
        );
        assert!(
            body.contains(r#"name="v_SHOPS" value="-3""#),
            "what was typed is kept"
        );
        assert!(body.contains(r#"value="kiểm kê""#));
        // The stored value is shown with the reader's decimal mark; the other field is fine.
        assert!(body.contains(r#"name="v_TONNES" value="12,5""#));
        assert!(body.contains(r#"aria-describedby="v-TONNES-hint">"#));
        assert!(!body.contains(r#"id="v-TONNES-error""#));
        // Last period's value beside the field, the buttons, the CSRF token, the history.
        assert!(body.contains("Kỳ trước: 40\u{a0}tấn"));
        assert!(body.contains("Lưu nháp") && body.contains("Nộp báo cáo"));
        assert!(body.contains(&format!(r#"name="csrf" value="{}""#, live.csrf)));
        assert!(body.contains("14:05 01/12/2026"));
        assert!(body.contains("Bản nháp"));
        assert!(body.contains(r#"action="/reports/79/202611/import""#));
        assert!(body.contains(r#"href="/reports/79/202611/export.csv""#));
        assert!(!body.contains("ap1.x"), "the token never reaches the page");
    }

    #[test]
    fn an_approved_report_is_read_only_with_the_reason() {
        let visit = visit(Lang::En);
        let page = report_page(
            &visit,
            &officer(),
            &loaded(ipb::ReportState::Approved),
            Feedback::default(),
        );
        let body = page.render().unwrap();
        assert!(body.contains(&Tr::new(Lang::En).t("locked-approved")));
        assert!(!body.contains(r#"name="v_TONNES""#));
        assert!(!body.contains("Save draft"));
        assert!(body.contains("12.5\u{a0}tonnes"));
    }

    #[test]
    fn the_context_shows_the_provinces_marketplace_and_derived_figures_in_catalogue_order() {
        let tr = Tr::new(Lang::En);
        let summary =
            |code: &str, source: ipb::Source, position: u32, value: &str| gpb::IndicatorSummary {
                indicator: Some(ipb::Indicator {
                    code: code.into(),
                    name_en: format!("Indicator {code}"),
                    unit: "tonnes".into(),
                    source: source as i32,
                    position,
                    ..Default::default()
                }),
                period: "202611".into(),
                national: Some(gpb::Figure {
                    has_value: true,
                    value: "999".into(),
                    ..Default::default()
                }),
                province: Some(gpb::ProvinceFigure {
                    code: "79".into(),
                    figure: Some(gpb::Figure {
                        has_value: !value.is_empty(),
                        value: value.into(),
                        missing_reason: if value.is_empty() { "no_data" } else { "" }.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            };
        let all = vec![
            summary("TRAINED_HH_PCT", ipb::Source::Derived, 5, ""),
            summary("TRAINED_HH", ipb::Source::Province, 1, "40"),
            summary("SALES_TONNES", ipb::Source::Marketplace, 3, "12.5"),
            summary("QA_RECEIVED", ipb::Source::Qa, 4, ""),
        ];
        let rows = context_rows(&all, &tr);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        // The province's own indicator is a field of the form, not context; no Q&A source.
        assert_eq!(
            names,
            vec!["Indicator SALES_TONNES", "Indicator TRAINED_HH_PCT"]
        );
        // The province's figure, never the nation's.
        assert_eq!(rows[0].value, "12.5\u{a0}tonnes");
        assert_eq!(rows[1].value, tr.t("figure-not-approved"));
    }
}
