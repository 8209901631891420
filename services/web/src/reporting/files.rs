//! A report as files: the CSV import into the entry form, the export the import reads, and
//! the audit history as CSV.

use agriportal_proto::indicators::v1 as ipb;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::form::{load, report_page, Feedback, ImportError, Imported};
use super::{action_word, refused_in_form};
use crate::http::private_csv;
use crate::indicators as ind;
use crate::reader::{Answer, Official, Reader};

/// The import form (`multipart/form-data`): `csrf`, `file` (the CSV file chosen), `csv` (its
/// text pasted instead, for a phone without files at hand), `keep` (checkbox).
#[derive(Debug, Default)]
pub struct ImportForm {
    /// CSRF token.
    pub csrf: String,
    /// The file's bytes as sent (UTF-8 or Windows-1258: the indicators service detects which).
    pub file: Vec<u8>,
    /// The pasted text.
    pub csv: String,
    /// "Keep the valid lines".
    pub keep: bool,
}

impl ImportForm {
    /// Reads the form's parts; an unknown part is ignored, an unreadable body is `Err`.
    pub async fn read(mut multipart: Multipart) -> Result<ImportForm, String> {
        let mut form = ImportForm::default();
        while let Some(field) = multipart.next_field().await.map_err(|e| e.to_string())? {
            let name = field.name().unwrap_or_default().to_string();
            let bytes = field.bytes().await.map_err(|e| e.to_string())?;
            match name.as_str() {
                "csrf" => form.csrf = String::from_utf8_lossy(&bytes).into_owned(),
                "file" => form.file = bytes.to_vec(),
                "csv" => form.csv = String::from_utf8_lossy(&bytes).into_owned(),
                "keep" => form.keep = !bytes.is_empty(),
                _ => {}
            }
        }
        Ok(form)
    }

    /// What to import: the file if one was chosen, else the pasted text.
    pub fn content(&self) -> Vec<u8> {
        if self.file.is_empty() {
            self.csv.clone().into_bytes()
        } else {
            self.file.clone()
        }
    }
}

/// `POST /reports/{province}/{period}/import`: imports a CSV file (or pasted lines) into the
/// report; the refused lines come back in a table, with pasted text kept.
pub async fn import_report(
    r: Reader,
    Path((province, period)): Path<(String, String)>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Answer {
    let form = match multipart {
        Ok(m) => ImportForm::read(m).await,
        Err(err) => Err(err.to_string()),
    };
    let form = match form {
        Ok(f) => f,
        Err(reason) => {
            tracing::info!(%reason, "an import form could not be read");
            // Without its parts there is no CSRF token to check: refused like a forged form.
            return Ok(r.csrf_refused());
        }
    };
    let me = Official::posted(r, &form.csrf)?;
    let (province, period) = me.address(&province, &period)?;
    let tr = me.tr();
    let period_id = period.to_string();
    let request = ipb::ImportReportRequest {
        content: form.content(),
        keep_valid_lines: form.keep,
        province_code: province.clone(),
        period: period_id.clone(),
    };
    let (errors, summary) = match me.web.backend.import(&me.session.bearer, request).await {
        Ok(a) if a.rejections.is_empty() && a.stored => {
            let done = format!("/reports/{province}/{period_id}?done=imported");
            return Ok(Redirect::to(&done).into_response());
        }
        Ok(a) => (
            a.rejections
                .iter()
                .map(|r| ImportError {
                    line: r.index.to_string(),
                    code: r.indicator_code.clone(),
                    reason: r.reason.clone(),
                })
                .collect(),
            tr.with(
                if a.stored {
                    "import-partly"
                } else {
                    "import-refused"
                },
                &[
                    ("lines", a.lines.to_string()),
                    ("saved", a.saved.to_string()),
                    ("refused", a.rejections.len().to_string()),
                ],
            ),
        ),
        Err(err) if refused_in_form(&err) => (Vec::new(), err.message),
        Err(err) => return Err(me.failed(&err)),
    };
    let loaded = load(&me, province, period)
        .await
        .map_err(|err| me.failed(&err))?;
    let feedback = Feedback {
        import: Some(Imported {
            errors,
            summary,
            text: form.csv,
            keep: form.keep,
        }),
        ..Feedback::default()
    };
    let page = report_page(&me.visit, &me.session, &loaded, feedback);
    Ok(me.html(&page, StatusCode::UNPROCESSABLE_ENTITY))
}

/// `GET /reports/{province}/{period}/export.csv`: the report as the indicators service
/// writes it (the same columns the import reads).
pub async fn export_report(
    me: Official,
    Path((province, period)): Path<(String, String)>,
) -> Answer {
    let (province, period) = me.address(&province, &period)?;
    let file = me
        .web
        .backend
        .export(&me.session.bearer, &province, &period.to_string())
        .await
        .map_err(|err| me.failed(&err))?;
    let name = if file.filename.is_empty() {
        format!("bao-cao-{province}-{period}.csv")
    } else {
        file.filename
    };
    Ok(attachment(&name, file.content))
}

/// A CSV file written elsewhere, as a download that no cache keeps.
fn attachment(name: &str, content: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                agriportal_platform::csv::content_disposition(name),
            ),
            (header::CACHE_CONTROL, "private, no-store".to_string()),
        ],
        content,
    )
        .into_response()
}

/// `GET /reports/{province}/{period}/history.csv`: the report's audit table.
pub async fn history_csv(me: Official, Path((province, period)): Path<(String, String)>) -> Answer {
    let (province, period) = me.address(&province, &period)?;
    let tr = me.tr();
    let lang = tr.lang();
    let report = me
        .web
        .backend
        .report(&me.session.bearer, &province, &period.to_string())
        .await
        .map_err(|err| me.failed(&err))?;
    let header = tr.all(&[
        "col-time",
        "col-actor",
        "col-action",
        "col-indicator",
        "col-old",
        "col-new",
        "entry-comment",
        "col-version",
    ]);
    // Values as the service stores them (a point for decimals), so a spreadsheet or a
    // re-import reads them exactly; times in Vietnam time.
    let rows: Vec<Vec<String>> = report
        .history
        .iter()
        .map(|h| {
            vec![
                ind::time_ms(h.at_ms, lang),
                h.actor.clone(),
                action_word(&h.action, &tr),
                h.indicator_code.clone(),
                h.old_value.clone(),
                h.new_value.clone(),
                h.comment.clone(),
                h.version.to_string(),
            ]
        })
        .collect();
    Ok(private_csv(
        &header,
        &rows,
        &format!("lich-su-{province}-{period}.csv"),
    ))
}
