//! The plan's indicators and the provinces' reports, as the pages show them: values written
//! exactly in the reader's language, progress, report states in words, Vietnam times, the
//! entry form's parsing of what an official typed, and the error summary of a refused save.
//! Pure functions over the proto messages, so every rule here is unit-tested without a
//! backend.

use agriportal_platform::period::{Period, PeriodType};
use agriportal_proto::gateway::v1 as gpb;
use agriportal_proto::indicators::v1 as ipb;

use crate::format::{self, Lang};
use crate::i18n::Tr;

/// An indicator's name in the reader's language (the other one when it has none).
pub fn name(indicator: &ipb::Indicator, lang: Lang) -> String {
    let (first, second) = match lang {
        Lang::Vi => (&indicator.name_vi, &indicator.name_en),
        Lang::En => (&indicator.name_en, &indicator.name_vi),
    };
    if first.trim().is_empty() {
        second.clone()
    } else {
        first.clone()
    }
}

/// An indicator's unit in words (`households` → "hộ" / "households"); an unknown unit is
/// shown as the catalogue writes it.
pub fn unit(indicator: &ipb::Indicator, tr: &Tr) -> String {
    let key = format!("unit-{}", indicator.unit.trim());
    let word = tr.t(&key);
    if word == key {
        indicator.unit.clone()
    } else {
        word
    }
}

/// Exact decimal text (`1234567.5`, `-12`, as the services send values) written in the
/// reader's language: `1.234.567,5` (vi) and `1,234,567.5` (en). Text that is not a decimal
/// is shown as it came, never guessed at.
pub fn decimal_text(text: &str, lang: Lang) -> String {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return text.to_string();
    }
    let (group, point) = match lang {
        Lang::Vi => ('.', ','),
        Lang::En => (',', '.'),
    };
    // Grouped by hand, not through i64: a value may be longer than 19 digits.
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let mut out = String::new();
    if negative && (whole != "0" || fraction.is_some_and(|f| f.bytes().any(|b| b != b'0'))) {
        out.push('-');
    }
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(group);
        }
        out.push(c);
    }
    if let Some(f) = fraction {
        out.push(point);
        out.push_str(f);
    }
    out
}

/// A decimal text as an integer scaled by 10^`scale` (for the chart, which draws integers):
/// `12.5` at scale 1 is 125, `12.55` at scale 1 is 125 (the services never send more digits
/// than the indicator's scale; extra ones are cut, not rounded, so a bar is never taller than
/// its value). `None` for text that is not a decimal or does not fit.
pub fn scaled(text: &str, scale: u32) -> Option<i64> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || !(whole.bytes().all(|b| b.is_ascii_digit()))
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut fraction: String = fraction.chars().take(scale as usize).collect();
    while fraction.len() < scale as usize {
        fraction.push('0');
    }
    let n: i64 = format!("{whole}{fraction}").parse().ok()?;
    Some(if negative { -n } else { n })
}

/// A public figure in words: the value with its unit, or why there is none: "chưa có nguồn
/// số liệu" for an indicator whose source does not exist yet (Q&A), "chưa được phê duyệt"
/// for one with nothing approved. Never a 0 for a missing value.
pub fn figure_text(figure: Option<&gpb::Figure>, indicator: &ipb::Indicator, tr: &Tr) -> String {
    match figure {
        Some(f) if f.has_value => value_text(&f.value, indicator, tr),
        Some(f) => missing_text(&f.missing_reason, indicator, tr),
        None => missing_text("", indicator, tr),
    }
}

/// A value (decimal text) in words with the indicator's unit.
pub fn value_text(value: &str, indicator: &ipb::Indicator, tr: &Tr) -> String {
    format!(
        "{}{}{}",
        decimal_text(value, tr.lang()),
        format::NBSP,
        unit(indicator, tr)
    )
}

/// Why a figure is missing, in words.
pub fn missing_text(reason: &str, indicator: &ipb::Indicator, tr: &Tr) -> String {
    if reason == "no_source" || indicator.source == ipb::Source::Qa as i32 {
        tr.t("figure-no-source")
    } else {
        tr.t("figure-not-approved")
    }
}

/// A figure's target, with its unit, or "no target".
pub fn target_text(figure: Option<&gpb::Figure>, indicator: &ipb::Indicator, tr: &Tr) -> String {
    match figure.map(|f| f.target.trim()).filter(|t| !t.is_empty()) {
        Some(t) => value_text(t, indicator, tr),
        None => tr.t("target-none"),
    }
}

/// Progress in hundredths of a percent, clamped to 0–100 % for a `<progress>` bar; `None`
/// without a value and a target. The float the gateway sends is for display only: rounded
/// once here, never summed.
pub fn progress_hundredths(figure: Option<&gpb::Figure>) -> Option<i64> {
    let f = figure.filter(|f| f.has_progress && f.progress_pct.is_finite())?;
    // Two decimals of a percent: at most 10^15 or so in any real case; clamp for safety.
    let h = (f.progress_pct * 100.0).round().clamp(-1e15, 1e15);
    #[allow(clippy::cast_possible_truncation)]
    Some(h as i64)
}

/// Progress in words: "46,91 %" or "chưa tính được" without a value or a target.
pub fn progress_text(figure: Option<&gpb::Figure>, tr: &Tr) -> String {
    match progress_hundredths(figure) {
        Some(h) => format::percent(h, tr.lang()),
        None => tr.t("progress-none"),
    }
}

/// A report state in words (never colour alone).
pub fn state_text(state: i32, tr: &Tr) -> String {
    tr.t(
        match ipb::ReportState::try_from(state).unwrap_or_default() {
            ipb::ReportState::Unspecified => "state-missing",
            ipb::ReportState::Draft => "state-draft",
            ipb::ReportState::Submitted => "state-submitted",
            ipb::ReportState::Approved => "state-approved",
            ipb::ReportState::Returned => "state-returned",
        },
    )
}

/// The gateway's report state (`missing`, `draft`, …) in words; empty for indicators that
/// provinces do not report.
pub fn state_word(state: &str, tr: &Tr) -> String {
    match state {
        "" => String::new(),
        "missing" | "draft" | "submitted" | "returned" | "approved" => {
            tr.t(&format!("state-{state}"))
        }
        other => other.to_string(),
    }
}

/// The code (`missing`, `draft`, …) of a proto state, for CSS classes and sorting.
pub fn state_code(state: i32) -> &'static str {
    match ipb::ReportState::try_from(state).unwrap_or_default() {
        ipb::ReportState::Unspecified => "missing",
        ipb::ReportState::Draft => "draft",
        ipb::ReportState::Submitted => "submitted",
        ipb::ReportState::Approved => "approved",
        ipb::ReportState::Returned => "returned",
    }
}

/// A time in ms since the epoch, in Vietnam time; "—" for 0 (never happened).
pub fn time_ms(ms: i64, lang: Lang) -> String {
    if ms <= 0 {
        return "—".to_string();
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| format::date_time(t, lang))
        .unwrap_or_else(|_| "—".to_string())
}

/// A `YYYY-MM-DD` deadline, as the reader writes dates.
pub fn deadline_text(day: &str, lang: Lang) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(day.trim(), &format)
        .map(|d| format::date(d, lang))
        .unwrap_or_else(|_| day.to_string())
}

/// A period id in words: "tháng 11/2026", "quý 4/2026", "năm 2026" (vi) and "Nov 2026",
/// "Q4 2026", "2026" (en); an id that is not a period is shown as it came.
pub fn period_text(id: &str, tr: &Tr) -> String {
    let Ok(period) = Period::parse(id) else {
        return id.to_string();
    };
    let start = period.start();
    match period.kind() {
        PeriodType::Month => format::month(start.year(), start.month(), tr.lang()),
        PeriodType::Quarter => tr.with(
            "period-quarter",
            &[
                ("quarter", (u8::from(start.month()).div_ceil(3)).to_string()),
                ("year", start.year().to_string()),
            ],
        ),
        PeriodType::Year => tr.with("period-year", &[("year", start.year().to_string())]),
    }
}

/// The kind of an indicator's periods.
pub fn period_type(indicator: &ipb::Indicator) -> Option<PeriodType> {
    match ipb::PeriodType::try_from(indicator.period_type).unwrap_or_default() {
        ipb::PeriodType::Month => Some(PeriodType::Month),
        ipb::PeriodType::Quarter => Some(PeriodType::Quarter),
        ipb::PeriodType::Year => Some(PeriodType::Year),
        ipb::PeriodType::Unspecified => None,
    }
}

/// Whether provinces enter this indicator in their reports.
pub fn province_reported(indicator: &ipb::Indicator) -> bool {
    indicator.source == ipb::Source::Province as i32
}

/// What an official typed into a value field, as the decimal text the service takes.
///
/// The form accepts both decimal marks, since Vietnamese writes `12,5` and many spreadsheets
/// and phones write `12.5`; both are sent as `12.5`. Spaces (also no-break ones) are
/// grouping and dropped. With both marks, the last one is the decimal mark and the other is
/// grouping (`1.234,5` and `1,234.5` are both `1234.5`); a mark that appears more than once
/// alone is grouping (`1.234.567`). A single `.` or `,` is always the decimal mark, so
/// `1.234` is one point two three four: for an integer indicator the service refuses it with
/// its reason ("at most 0 digits after the point"), which the page shows beside the field —
/// better than silently reading a thousand. Empty means "no value" (removes it from the
/// draft). Anything else is refused here, with the reason, and not sent.
pub fn parse_value(raw: &str) -> Result<String, &'static str> {
    let compact: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\u{a0}' && *c != '\u{202f}')
        .collect();
    if compact.is_empty() {
        return Ok(String::new());
    }
    let (negative, body) = match compact.strip_prefix('-') {
        Some(rest) => (true, rest.to_string()),
        None => (false, compact.clone()),
    };
    let commas = body.matches(',').count();
    let dots = body.matches('.').count();
    let normalised = match (commas, dots) {
        (0, 0) => body,
        (_, 0) if commas == 1 => body.replace(',', "."),
        (_, 0) => body.replace(',', ""),
        (0, 1) => body,
        (0, _) => body.replace('.', ""),
        _ => {
            // Both marks: the last one is the decimal mark, the other grouping.
            let point = if body.rfind(',') > body.rfind('.') {
                ','
            } else {
                '.'
            };
            let grouping = if point == ',' { '.' } else { ',' };
            if body.matches(point).count() > 1 {
                return Err("value-not-number");
            }
            body.replace(grouping, "").replace(point, ".")
        }
    };
    let (whole, fraction) = normalised
        .split_once('.')
        .unwrap_or((normalised.as_str(), ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || normalised.ends_with('.') {
        return Err("value-not-number");
    }
    Ok(if negative {
        format!("-{normalised}")
    } else {
        normalised
    })
}

/// One field of the entry form that was refused, for the field itself and the summary at
/// the top of the form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's id (`v-HH_ONBOARDED`), the summary's link target.
    pub field: String,
    /// The indicator's name, so the summary reads without the form.
    pub label: String,
    /// Why, in words.
    pub message: String,
}

/// The id of an indicator's value field.
pub fn field_id(code: &str) -> String {
    let safe: String = code
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("v-{safe}")
}

/// The errors of a save: those found here (`local`, by code) and those the service sent
/// back (`rejections`, by code, or by their index into `sent` when the code is missing), in
/// the form's order, one per field.
pub fn field_errors(
    order: &[(String, String)],
    local: &[(String, String)],
    rejections: &[ipb::Rejection],
    sent: &[String],
) -> Vec<FieldError> {
    let mut by_code: Vec<(String, String)> = local.to_vec();
    for r in rejections {
        let code = if r.indicator_code.is_empty() {
            sent.get(r.index as usize).cloned().unwrap_or_default()
        } else {
            r.indicator_code.clone()
        };
        if !by_code.iter().any(|(c, _)| *c == code) {
            by_code.push((code, r.reason.clone()));
        }
    }
    let mut errors: Vec<FieldError> = order
        .iter()
        .filter_map(|(code, label)| {
            by_code
                .iter()
                .find(|(c, _)| c == code)
                .map(|(_, message)| FieldError {
                    field: field_id(code),
                    label: label.clone(),
                    message: message.clone(),
                })
        })
        .collect();
    // A rejection of a code not on the form (the catalogue changed meanwhile) still shows,
    // in the summary, linked to the form's first field.
    for (code, message) in &by_code {
        if !order.iter().any(|(c, _)| c == code) {
            errors.push(FieldError {
                field: order.first().map(|(c, _)| field_id(c)).unwrap_or_default(),
                label: code.clone(),
                message: message.clone(),
            });
        }
    }
    errors
}

/// The periods an official can start now for indicators of `kinds`: the latest open period
/// of each kind and the one before it (a late report), newest first, without those already
/// started (`started`).
pub fn startable(kinds: &[PeriodType], today: time::Date, started: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for kind in kinds {
        if let Some(latest) = Period::latest_open(*kind, today) {
            for p in [latest, latest.previous()] {
                let id = p.to_string();
                if !started.contains(&id) && !out.contains(&id) {
                    out.push(id);
                }
            }
        }
    }
    out
}

/// How urgent a province is on the chase list: missing, draft, returned and overdue first.
pub fn chase_rank(state: i32, overdue: bool) -> u8 {
    let base = match ipb::ReportState::try_from(state).unwrap_or_default() {
        ipb::ReportState::Unspecified => 0,
        ipb::ReportState::Draft => 1,
        ipb::ReportState::Returned => 2,
        ipb::ReportState::Submitted => 4,
        ipb::ReportState::Approved => 5,
    };
    if overdue {
        base
    } else {
        base + 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indicator(unit: &str, source: ipb::Source) -> ipb::Indicator {
        ipb::Indicator {
            code: "HH_ONBOARDED".into(),
            name_vi: "Hộ lên sàn".into(),
            name_en: "Households onboarded".into(),
            unit: unit.into(),
            source: source as i32,
            period_type: ipb::PeriodType::Month as i32,
            scale: 1,
            ..Default::default()
        }
    }

    #[test]
    fn decimal_text_is_grouped_in_the_reader_s_language_and_exact() {
        assert_eq!(decimal_text("1234567.5", Lang::Vi), "1.234.567,5");
        assert_eq!(decimal_text("1234567.5", Lang::En), "1,234,567.5");
        assert_eq!(decimal_text("-12", Lang::Vi), "-12");
        assert_eq!(decimal_text("0.50", Lang::En), "0.50");
        assert_eq!(decimal_text("-0.0", Lang::En), "0.0");
        assert_eq!(
            decimal_text("123456789012345678901234", Lang::En),
            "123,456,789,012,345,678,901,234"
        );
        assert_eq!(decimal_text("abc", Lang::Vi), "abc");
        assert_eq!(decimal_text("1.", Lang::Vi), "1.");
    }

    #[test]
    fn values_scale_to_integers_for_the_chart() {
        assert_eq!(scaled("12.5", 1), Some(125));
        assert_eq!(scaled("12", 2), Some(1200));
        assert_eq!(scaled("-3.25", 1), Some(-32));
        assert_eq!(scaled("x", 0), None);
        assert_eq!(scaled("", 0), None);
    }

    #[test]
    fn missing_figures_are_words_never_zero() {
        let vi = Tr::new(Lang::Vi);
        let en = Tr::new(Lang::En);
        let hh = indicator("households", ipb::Source::Province);
        let f = gpb::Figure {
            has_value: true,
            value: "2345678".into(),
            target: "5000000".into(),
            progress_pct: 46.91,
            has_progress: true,
            missing_reason: String::new(),
        };
        assert_eq!(figure_text(Some(&f), &hh, &en), "2,345,678\u{a0}households");
        assert_eq!(figure_text(Some(&f), &hh, &vi), "2.345.678\u{a0}hộ");
        assert_eq!(progress_text(Some(&f), &vi), "46,91\u{a0}%");
        assert_eq!(progress_hundredths(Some(&f)), Some(4691));
        let none = gpb::Figure {
            missing_reason: "not_approved".into(),
            ..Default::default()
        };
        assert_eq!(
            figure_text(Some(&none), &hh, &en),
            en.t("figure-not-approved")
        );
        assert_eq!(progress_text(Some(&none), &en), en.t("progress-none"));
        assert_eq!(target_text(Some(&none), &hh, &en), en.t("target-none"));
        let qa = indicator("hours", ipb::Source::Qa);
        let no_source = gpb::Figure {
            missing_reason: "no_source".into(),
            ..Default::default()
        };
        assert_eq!(
            figure_text(Some(&no_source), &qa, &vi),
            vi.t("figure-no-source")
        );
        assert_eq!(figure_text(None, &qa, &vi), vi.t("figure-no-source"));
        assert!(!figure_text(Some(&no_source), &qa, &vi).contains('0'));
        assert_eq!(figure_text(None, &hh, &vi), vi.t("figure-not-approved"));
        // An unknown unit is shown as written.
        assert_eq!(
            unit(&indicator("widgets", ipb::Source::Province), &en),
            "widgets"
        );
    }

    #[test]
    fn states_periods_and_times_are_words() {
        let vi = Tr::new(Lang::Vi);
        let en = Tr::new(Lang::En);
        assert_eq!(
            state_text(ipb::ReportState::Approved as i32, &en),
            en.t("state-approved")
        );
        assert_eq!(state_text(0, &vi), vi.t("state-missing"));
        assert_eq!(state_text(99, &vi), vi.t("state-missing"));
        assert_eq!(state_word("returned", &en), en.t("state-returned"));
        assert_eq!(state_word("", &en), "");
        assert_eq!(state_code(ipb::ReportState::Draft as i32), "draft");
        assert_eq!(period_text("202611", &vi), "tháng 11/2026");
        assert_eq!(period_text("202611", &en), "Nov 2026");
        assert_eq!(period_text("2026Q4", &en), "Q4 2026");
        assert_eq!(period_text("2026Q4", &vi), "quý 4/2026");
        assert_eq!(period_text("2026", &vi), "năm 2026");
        assert_eq!(period_text("nope", &vi), "nope");
        // 2026-12-01T07:05:00Z is 14:05 in Vietnam.
        assert_eq!(time_ms(1_796_108_700_000, Lang::Vi), "14:05 01/12/2026");
        assert_eq!(time_ms(0, Lang::Vi), "—");
        assert_eq!(deadline_text("2026-12-05", Lang::Vi), "05/12/2026");
        assert_eq!(deadline_text("2026-12-05", Lang::En), "5 Dec 2026");
    }

    #[test]
    fn typed_values_accept_both_decimal_marks_and_are_sent_with_a_point() {
        assert_eq!(parse_value("12,5"), Ok("12.5".into()));
        assert_eq!(parse_value("12.5"), Ok("12.5".into()));
        assert_eq!(parse_value(" 1 234 "), Ok("1234".into()));
        assert_eq!(parse_value("1\u{a0}234,5"), Ok("1234.5".into()));
        assert_eq!(parse_value("1.234,5"), Ok("1234.5".into()));
        assert_eq!(parse_value("1,234.5"), Ok("1234.5".into()));
        assert_eq!(parse_value("1.234.567"), Ok("1234567".into()));
        assert_eq!(parse_value("1,234,567"), Ok("1234567".into()));
        // A single mark is the decimal mark; the service judges the digits.
        assert_eq!(parse_value("1.234"), Ok("1.234".into()));
        assert_eq!(parse_value("-3"), Ok("-3".into()));
        assert_eq!(parse_value(""), Ok(String::new()));
        assert_eq!(parse_value("   "), Ok(String::new()));
        for bad in [
            "abc",
            "12,5,3.1.2",
            "1.",
            ",5",
            "--1",
            "1e5",
            "12 ha",
            "1.2.3,4,5",
        ] {
            assert_eq!(parse_value(bad), Err("value-not-number"), "{bad}");
        }
    }

    #[test]
    fn the_error_summary_follows_the_form_and_links_each_field() {
        let order = vec![
            ("A".to_string(), "Indicator A".to_string()),
            ("B".to_string(), "Indicator B".to_string()),
            ("C".to_string(), "Indicator C".to_string()),
        ];
        let local = vec![("C".to_string(), "not a number".to_string())];
        let rejections = vec![
            ipb::Rejection {
                index: 1,
                indicator_code: String::new(),
                reason: "too large".into(),
            },
            ipb::Rejection {
                index: 0,
                indicator_code: "GONE".into(),
                reason: "unknown".into(),
            },
        ];
        let sent = vec!["A".to_string(), "B".to_string()];
        let errors = field_errors(&order, &local, &rejections, &sent);
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0].field, "v-B");
        assert_eq!(errors[0].message, "too large");
        assert_eq!(errors[1].field, "v-C");
        assert_eq!(errors[2].label, "GONE");
        assert_eq!(errors[2].field, "v-A");
        assert_eq!(field_id("X Y\"<"), "v-X-Y--");
    }

    #[test]
    fn open_periods_and_the_chase_order() {
        let today = time::macros::date!(2026 - 12 - 02);
        let open = startable(
            &[PeriodType::Month, PeriodType::Quarter],
            today,
            &["202611".into()],
        );
        assert_eq!(open, vec!["202610", "2026Q3", "2026Q2"]);
        let mut states = [
            (ipb::ReportState::Approved as i32, false),
            (ipb::ReportState::Submitted as i32, false),
            (0, false),
            (ipb::ReportState::Draft as i32, true),
            (0, true),
        ];
        states.sort_by_key(|(s, o)| chase_rank(*s, *o));
        assert_eq!(states[0], (0, true));
        assert_eq!(states[1], (ipb::ReportState::Draft as i32, true));
        assert_eq!(states[4], (ipb::ReportState::Approved as i32, false));
    }
}
