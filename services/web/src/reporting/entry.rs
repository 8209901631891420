//! Saving the entry form (`POST /reports/{province}/{period}`): only the values changed are
//! sent, `action=submit` submits after the save; refused values come back beside their fields.

use std::collections::HashMap;

use agriportal_proto::indicators::v1 as ipb;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::Form;

use super::form::{load, report_page, Feedback, Typed};
use super::refused_in_form;
use crate::indicators as ind;
use crate::reader::{Answer, Official, Reader};

/// What the entry form sends: `csrf`, `action` (`save` or `submit`), and per indicator
/// `v_{code}`, `c_{code}` (typed) and `o_{code}`, `oc_{code}` (stored, unchanged).
#[derive(Debug, Default)]
pub struct EntryForm {
    /// CSRF token.
    pub csrf: String,
    /// `save` or `submit`.
    pub action: String,
    /// By code: (typed value, typed comment, stored value, stored comment).
    pub fields: HashMap<String, [String; 4]>,
}

impl EntryForm {
    /// From the form's pairs (an unknown name is ignored).
    pub fn parse(pairs: Vec<(String, String)>) -> EntryForm {
        let mut form = EntryForm::default();
        for (name, value) in pairs {
            let slot = |prefix: &str| name.strip_prefix(prefix).map(str::to_string);
            if name == "csrf" {
                form.csrf = value;
            } else if name == "action" {
                form.action = value;
            } else if let Some(code) = slot("oc_") {
                form.fields.entry(code).or_default()[3] = value;
            } else if let Some(code) = slot("o_") {
                form.fields.entry(code).or_default()[2] = value;
            } else if let Some(code) = slot("c_") {
                form.fields.entry(code).or_default()[1] = value;
            } else if let Some(code) = slot("v_") {
                form.fields.entry(code).or_default()[0] = value;
            }
        }
        form
    }

    /// The values to send (only those changed), the fields refused here, and the codes in the
    /// order sent (rejections name their index into it).
    pub fn values(
        &self,
        order: &[String],
    ) -> (Vec<ipb::ValueInput>, Vec<(String, String)>, Vec<String>) {
        let mut send = Vec::new();
        let mut refused = Vec::new();
        let mut sent = Vec::new();
        for code in order {
            let Some([typed, comment, stored, stored_comment]) = self.fields.get(code) else {
                continue;
            };
            match ind::parse_value(typed) {
                Err(key) => refused.push((code.clone(), key.to_string())),
                Ok(value) => {
                    if value != *stored || comment.trim() != stored_comment.trim() {
                        sent.push(code.clone());
                        send.push(ipb::ValueInput {
                            indicator_code: code.clone(),
                            value,
                            comment: comment.trim().to_string(),
                        });
                    }
                }
            }
        }
        (send, refused, sent)
    }
}

/// `POST /reports/{province}/{period}`: saves the typed values (and submits, for
/// `action=submit`); refused values come back beside their fields.
pub async fn save_report(
    r: Reader,
    Path((province, period)): Path<(String, String)>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Answer {
    let form = EntryForm::parse(pairs);
    let me = Official::posted(r, &form.csrf)?;
    let (province, period) = me.address(&province, &period)?;
    let tr = me.tr();
    let mut loaded = load(&me, province, period)
        .await
        .map_err(|err| me.failed(&err))?;
    let order: Vec<String> = loaded.indicators.iter().map(|i| i.code.clone()).collect();
    let labels: Vec<(String, String)> = loaded
        .indicators
        .iter()
        .map(|i| (i.code.clone(), ind::name(i, tr.lang())))
        .collect();
    let (send, refused, sent) = form.values(&order);
    let refused: Vec<(String, String)> = refused
        .into_iter()
        .map(|(code, key)| (code, tr.t(&key)))
        .collect();
    let base = format!("/reports/{}/{}", loaded.province, loaded.period);
    let bearer = &me.session.bearer;
    let mut rejections = Vec::new();
    let mut form_error = None;
    if !send.is_empty() {
        let request = ipb::SaveReportRequest {
            province_code: loaded.province.clone(),
            period: loaded.period.to_string(),
            values: send,
        };
        match me.web.backend.save(bearer, request).await {
            Ok(answer) => {
                if answer.report.is_some() {
                    loaded.report = answer.report;
                }
                rejections = answer.rejections;
            }
            Err(err) if refused_in_form(&err) => form_error = Some(err.message),
            Err(err) => return Err(me.failed(&err)),
        }
    }
    let errors = ind::field_errors(&labels, &refused, &rejections, &sent);
    if errors.is_empty() && form_error.is_none() && form.action == "submit" {
        let period_id = loaded.period.to_string();
        match me
            .web
            .backend
            .submit(bearer, &loaded.province, &period_id)
            .await
        {
            Ok(_) => return Ok(Redirect::to(&format!("{base}?done=submitted")).into_response()),
            Err(err) if refused_in_form(&err) => form_error = Some(err.message),
            Err(err) => return Err(me.failed(&err)),
        }
    }
    if errors.is_empty() && form_error.is_none() {
        return Ok(Redirect::to(&format!("{base}?done=saved")).into_response());
    }
    let typed: Typed = form
        .fields
        .into_iter()
        .map(|(code, [v, c, _, _])| (code, (v, c)))
        .collect();
    let feedback = Feedback {
        typed: Some(typed),
        errors,
        form_error,
        ..Feedback::default()
    };
    let page = report_page(&me.visit, &me.session, &loaded, feedback);
    Ok(me.html(&page, StatusCode::UNPROCESSABLE_ENTITY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_form_sends_only_changed_values_and_refuses_what_is_not_a_number() {
        let pairs = vec![
            ("csrf".to_string(), "t".to_string()),
            ("action".to_string(), "save".to_string()),
            ("v_A".to_string(), "12,5".to_string()),
            ("o_A".to_string(), "10".to_string()),
            ("v_B".to_string(), "7".to_string()),
            ("o_B".to_string(), "7".to_string()),
            ("v_C".to_string(), "abc".to_string()),
            ("v_D".to_string(), "3".to_string()),
            ("o_D".to_string(), "3".to_string()),
            ("c_D".to_string(), "source: survey".to_string()),
            ("v_E".to_string(), String::new()),
            ("o_E".to_string(), "4".to_string()),
        ];
        let form = EntryForm::parse(pairs);
        assert_eq!(form.csrf, "t");
        let order: Vec<String> = ["A", "B", "C", "D", "E", "Z"].map(String::from).to_vec();
        let (send, refused, sent) = form.values(&order);
        assert_eq!(sent, vec!["A", "D", "E"]);
        assert_eq!(send[0].value, "12.5");
        assert_eq!(send[1].comment, "source: survey");
        assert_eq!(send[2].value, "", "an emptied field removes the value");
        assert_eq!(
            refused,
            vec![("C".to_string(), "value-not-number".to_string())]
        );
    }
}
