//! The rules of the indicators service, as pure functions: the catalogue seed and what a unit
//! means for a value, checking one value, aggregating source units, and the report workflow.

use std::str::FromStr;

use agriportal_platform::period::{self, Period};
use agriportal_platform::reference::{Reference, REGIONS};
use agriportal_proto::indicators::v1 as pb;
use pb::{Aggregation, PeriodType, ReportState, Source, ValueType};
use rust_decimal::Decimal;

/// The catalogue seed: the plan's indicators (same file as the platform's reference data).
pub const CATALOGUE_CSV: &str = include_str!("../../platform/reference/indicators.csv");

/// What a value of an indicator may be: its type, bounds and digits after the point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueRule {
    /// Integer, decimal or percent.
    pub value_type: ValueType,
    /// Smallest allowed value, if any.
    pub min: Option<Decimal>,
    /// Largest allowed value, if any.
    pub max: Option<Decimal>,
    /// Digits allowed after the point.
    pub scale: u32,
}

/// The rule a unit implies: percent → 0–100 with 2 decimals; counts and đồng → whole numbers
/// ≥ 0; tonnes and hours → ≥ 0 with 3 decimals. `None` for a unit the plan does not use.
pub fn rule_for_unit(unit: &str) -> Option<ValueRule> {
    let rule = |value_type, max: Option<i64>, scale| ValueRule {
        value_type,
        min: Some(Decimal::ZERO),
        max: max.map(Decimal::from),
        scale,
    };
    match unit {
        "percent" => Some(rule(ValueType::Percent, Some(100), 2)),
        "households" | "accounts" | "products" | "orders" | "sessions" | "questions" | "VND" => {
            Some(rule(ValueType::Integer, None, 0))
        }
        "tonnes" | "hours" => Some(rule(ValueType::Decimal, None, 3)),
        _ => None,
    }
}

/// The rule stored on an indicator (its type, bounds and scale).
pub fn rule_of(indicator: &pb::Indicator) -> ValueRule {
    let bound = |text: &str| Decimal::from_str(text).ok();
    ValueRule {
        value_type: indicator.value_type(),
        min: bound(&indicator.min_value),
        max: bound(&indicator.max_value),
        scale: indicator.scale,
    }
}

/// Parses an aggregation as the catalogue writes it; `derived` is a ratio of other indicators.
pub fn parse_aggregation(text: &str) -> Option<Aggregation> {
    Some(match text {
        "sum" => Aggregation::Sum,
        "average" => Aggregation::Average,
        "latest" => Aggregation::Latest,
        "ratio" | "derived" => Aggregation::Ratio,
        "median" => Aggregation::Median,
        _ => return None,
    })
}

/// Parses a source as the catalogue writes it.
pub fn parse_source(text: &str) -> Option<Source> {
    Some(match text {
        "province" => Source::Province,
        "marketplace" => Source::Marketplace,
        "derived" => Source::Derived,
        "qa" => Source::Qa,
        _ => return None,
    })
}

/// The proto period type of a platform period kind.
pub fn period_type_of(kind: period::PeriodType) -> PeriodType {
    match kind {
        period::PeriodType::Month => PeriodType::Month,
        period::PeriodType::Quarter => PeriodType::Quarter,
        period::PeriodType::Year => PeriodType::Year,
    }
}

/// The platform period kind of a proto period type.
pub fn kind_of(period_type: PeriodType) -> Option<period::PeriodType> {
    match period_type {
        PeriodType::Month => Some(period::PeriodType::Month),
        PeriodType::Quarter => Some(period::PeriodType::Quarter),
        PeriodType::Year => Some(period::PeriodType::Year),
        PeriodType::Unspecified => None,
    }
}

/// Parses the catalogue seed. The file is ours, so an error names the line to fix.
pub fn parse_catalogue(text: &str) -> Result<Vec<pb::Indicator>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| format!("indicators.csv line {line}: {e}"))?;
        let field = |n: usize| record.get(n).unwrap_or("").trim().to_string();
        let code = field(0);
        let unit = field(3);
        let bad = |what: &str| format!("indicators.csv line {line} ({code}): unknown {what}");
        let rule = rule_for_unit(&unit).ok_or_else(|| bad("unit"))?;
        let aggregation = parse_aggregation(&field(5)).ok_or_else(|| bad("aggregation"))?;
        let source = parse_source(&field(6)).ok_or_else(|| bad("source"))?;
        let kind = period::PeriodType::parse(&field(7)).ok_or_else(|| bad("period type"))?;
        let target = field(8);
        if !target.is_empty() && Decimal::from_str(&target).is_err() {
            return Err(bad("national target (not a number)"));
        }
        out.push(pb::Indicator {
            code,
            name_vi: field(1),
            name_en: field(2),
            unit,
            period_type: period_type_of(kind) as i32,
            source: source as i32,
            value_type: rule.value_type as i32,
            national_target: target,
            measure: field(4),
            aggregation: aggregation as i32,
            min_value: rule.min.map(|d| d.to_string()).unwrap_or_default(),
            max_value: rule.max.map(|d| d.to_string()).unwrap_or_default(),
            scale: rule.scale,
            target_basis: field(9),
            revision: 1,
            position: u32::try_from(i + 1).unwrap_or(u32::MAX),
        });
    }
    Ok(out)
}

/// Parses decimal text strictly: an optional minus, digits, optionally a point and digits.
/// Thousands separators, commas and exponents are refused, so `1.234` never means 1234.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    Decimal::from_str(text).ok()
}

/// Digits after the point once trailing zeros are dropped (`12.50` has 1).
fn decimals(value: Decimal) -> u32 {
    value.normalize().scale()
}

/// `text` as messages quote it: at most 40 characters, so a huge input never makes a huge
/// answer.
pub fn quote(text: &str) -> String {
    if text.chars().count() <= 40 {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(40).collect::<String>())
    }
}

/// Checks one value of `indicator` against its rule and returns it as canonical decimal text
/// (trailing zeros after the point dropped), or the reason it is refused.
pub fn check_value(indicator: &pb::Indicator, text: &str) -> Result<String, String> {
    let code = &indicator.code;
    let raw = text.trim();
    let text = quote(raw);
    let Some(value) = parse_decimal(raw) else {
        let hint = if text.contains(',') {
            "; write decimals with a point and no thousands separator (1234 or 12.5)"
        } else {
            ": write digits, with a point for decimals (1234 or 12.5)"
        };
        return Err(format!("{code}: \"{text}\" is not a number{hint}"));
    };
    let rule = rule_of(indicator);
    let scale = decimals(value);
    if scale > rule.scale {
        return Err(if rule.scale == 0 {
            format!(
                "{code} takes whole numbers ({}): {text} has digits after the point",
                indicator.unit
            )
        } else {
            format!(
                "{code}: {text} has {scale} digits after the point; at most {} are allowed",
                rule.scale
            )
        });
    }
    let below = rule.min.is_some_and(|min| value < min);
    let above = rule.max.is_some_and(|max| value > max);
    if below || above {
        let bounds = match (rule.min, rule.max) {
            (Some(min), Some(max)) => format!("from {min} to {max}"),
            (Some(min), None) => format!("at least {min}"),
            (None, Some(max)) => format!("at most {max}"),
            (None, None) => String::new(),
        };
        return Err(format!(
            "{code}: {text} is out of bounds: values are {bounds} ({})",
            indicator.unit
        ));
    }
    Ok(value.normalize().to_string())
}

/// Why `indicator` cannot be entered in a province's report for `period`, if it cannot.
pub fn check_reportable(indicator: &pb::Indicator, period: Period) -> Result<(), String> {
    let code = &indicator.code;
    match indicator.source() {
        Source::Province => {}
        Source::Marketplace => {
            return Err(format!(
                "{code} is not reported by provinces (it comes from the marketplaces' statistics)"
            ))
        }
        Source::Derived => {
            let formula = indicator
                .target_basis
                .split_once("= ")
                .map(|(_, f)| format!(": {}", f.trim()))
                .unwrap_or_default();
            return Err(format!(
                "{code} is not reported by provinces (it is derived from other indicators{formula})"
            ));
        }
        Source::Qa => {
            return Err(format!(
                "{code} is not reported by provinces (it comes from the Q&A service)"
            ))
        }
        Source::Unspecified => {
            return Err(format!(
                "{code} has no source in the catalogue; it cannot be entered"
            ))
        }
    }
    let Some(kind) = kind_of(indicator.period_type()) else {
        return Err(format!("{code} has no period type in the catalogue"));
    };
    if kind != period.kind() {
        let example = Period::containing(kind, period.start())
            .map(|p| p.to_string())
            .unwrap_or_default();
        return Err(format!(
            "{code} is reported by {}: use a period like {example}",
            kind.as_str()
        ));
    }
    Ok(())
}

/// The aggregate of one indicator's values over its source units (two pre-2025 provinces that
/// merged into one): sum → the exact sum, average → the mean, latest/ratio/median → as named.
/// `None` for no values.
pub fn aggregate(aggregation: Aggregation, values: &[Decimal]) -> Option<Decimal> {
    if values.is_empty() {
        return None;
    }
    let sum = || values.iter().fold(Decimal::ZERO, |acc, v| acc + v);
    Some(match aggregation {
        Aggregation::Average => {
            let n = Decimal::from(values.len());
            (sum() / n).normalize()
        }
        Aggregation::Median => {
            let mut sorted = values.to_vec();
            sorted.sort();
            let mid = sorted.len() / 2;
            if sorted.len() % 2 == 1 {
                sorted[mid]
            } else {
                ((sorted[mid - 1] + sorted[mid]) / Decimal::TWO).normalize()
            }
        }
        // A ratio's parts are summed before dividing; a stock read as `latest` is one value
        // per unit for the same period, so its units add up too.
        Aggregation::Sum | Aggregation::Ratio | Aggregation::Latest | Aggregation::Unspecified => {
            sum()
        }
    })
}

/// What can be done to a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Save values (draft).
    Save,
    /// Submit for review.
    Submit,
    /// Approve (admin).
    Approve,
    /// Return with a comment (admin).
    Return,
    /// Reopen an approved report (admin).
    Reopen,
}

impl Action {
    /// As the audit trail names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Save => "save",
            Action::Submit => "submit",
            Action::Approve => "approve",
            Action::Return => "return",
            Action::Reopen => "reopen",
        }
    }
}

/// A state in words.
pub fn state_name(state: ReportState) -> &'static str {
    match state {
        ReportState::Unspecified => "missing",
        ReportState::Draft => "draft",
        ReportState::Submitted => "submitted",
        ReportState::Approved => "approved",
        ReportState::Returned => "returned",
    }
}

/// The state after `action` on a report in `state` (`key` names the report, `79/202611`), or
/// why it is refused, naming the state and what it allows.
pub fn transition(state: ReportState, action: Action, key: &str) -> Result<ReportState, String> {
    use ReportState as S;
    let locked = || {
        format!(
            "report {key} is approved and locked; the central working group can reopen it \
             (ReopenReport) with a reason"
        )
    };
    match (state, action) {
        (S::Draft | S::Returned | S::Unspecified, Action::Save) => Ok(if state == S::Returned {
            S::Returned
        } else {
            S::Draft
        }),
        (S::Draft | S::Returned, Action::Submit) => Ok(S::Submitted),
        (S::Submitted, Action::Approve) => Ok(S::Approved),
        (S::Submitted, Action::Return) => Ok(S::Returned),
        (S::Approved, Action::Reopen) => Ok(S::Draft),
        (S::Approved, Action::Save | Action::Submit) => Err(locked()),
        (S::Submitted, Action::Save | Action::Submit) => Err(format!(
            "report {key} is submitted and waiting for review; wait for the central working \
             group to approve or return it"
        )),
        (S::Unspecified, _) => Err(format!(
            "there is no report {key} yet: save values into it first (SaveReport)"
        )),
        (S::Draft | S::Returned, _) => Err(format!(
            "report {key} is {}: it can be edited and submitted (SubmitReport); only a \
             submitted report can be approved or returned, only an approved one reopened",
            state_name(state)
        )),
        (S::Submitted, Action::Reopen) => Err(format!(
            "report {key} is submitted, not approved: approve or return it (ApproveReport, \
             ReturnReport); only an approved report can be reopened"
        )),
        (S::Approved, _) => Err(format!(
            "report {key} is already approved; it can only be reopened (ReopenReport) with a \
             reason"
        )),
    }
}

/// Whether a submission at `submitted_ms` is on time for `deadline` (Vietnam's date; the
/// deadline day is included).
pub fn on_time(submitted_ms: i64, deadline: time::Date) -> bool {
    period::vietnam_date_of_ms(submitted_ms) <= deadline
}

/// `DD/MM/YYYY`, as Vietnamese officials write dates.
pub fn vn_date(date: time::Date) -> String {
    format!(
        "{:02}/{:02}/{:04}",
        date.day(),
        u8::from(date.month()),
        date.year()
    )
}

/// `YYYY-MM-DD`.
pub fn iso_date(date: time::Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

// ---------------------------------------------------------------------------------------------
// Org units: the hierarchy values are reported and read for, from the reference data.

/// The nation's org-unit code.
pub const NATION: &str = "VN";

/// A macro region's Vietnamese name (the code is the region as the reference writes it).
fn region_name(region: &str) -> &str {
    match region {
        "north" => "Miền Bắc",
        "central" => "Miền Trung",
        "south" => "Miền Nam",
        other => other,
    }
}

/// Every org unit, by level (nation, regions north to south, provinces, communes by province,
/// provinces before 2025), each level in code order.
pub fn all_org_units() -> Vec<pb::OrgUnit> {
    use pb::OrgUnitLevel as L;
    let reference = Reference::get();
    let unit = |code: &str, name: &str, level: L, parent: &str| pb::OrgUnit {
        code: code.to_string(),
        name: name.to_string(),
        level: level as i32,
        parent_code: parent.to_string(),
        merged_into: String::new(),
    };
    let mut units = vec![unit(NATION, "Việt Nam", L::Nation, "")];
    for region in REGIONS {
        units.push(unit(region, region_name(region), L::Region, NATION));
    }
    for p in reference.provinces() {
        units.push(unit(&p.code, &p.name, L::Province, &p.region));
    }
    for p in reference.provinces() {
        for c in reference.communes_of(&p.code) {
            units.push(unit(&c.code, &c.name, L::Commune, &p.code));
        }
    }
    for old in reference.provinces_before_2025() {
        units.push(pb::OrgUnit {
            merged_into: old.merged_into.clone(),
            ..unit(&old.code, &old.name, L::ProvincePre2025, NATION)
        });
    }
    units
}

/// The org units under `parent` (empty: any) at `level` (unspecified: any). A parent that is
/// no unit's code is refused by name, so a typo is not answered with an empty list.
pub fn org_units(parent: &str, level: pb::OrgUnitLevel) -> Result<Vec<pb::OrgUnit>, String> {
    let parent = parent.trim();
    let all = all_org_units();
    if !parent.is_empty() && !all.iter().any(|u| u.code == parent) {
        return Err(format!(
            "no org unit has code \"{}\": the nation is VN, regions north, central and south, \
             provinces and communes their official codes",
            quote(parent)
        ));
    }
    let wanted = |u: &pb::OrgUnit| {
        (parent.is_empty() || u.parent_code == parent)
            && (level == pb::OrgUnitLevel::Unspecified || u.level == level as i32)
    };
    Ok(all.into_iter().filter(wanted).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_units_are_the_reference_hierarchy() {
        use pb::OrgUnitLevel as L;
        let count = |parent: &str, level: L| org_units(parent, level).unwrap().len();
        assert_eq!(count("", L::Nation), 1);
        assert_eq!(count("", L::Region), 3);
        assert_eq!(count("", L::Province), 34);
        assert_eq!(count("", L::Commune), 3_321);
        assert_eq!(count("", L::ProvincePre2025), 63);
        assert_eq!(count("", L::Unspecified), 1 + 3 + 34 + 3_321 + 63);
        // Children: the nation's regions and historical provinces, a region's provinces, a
        // province's communes.
        assert_eq!(count("VN", L::Region), 3);
        assert_eq!(count("VN", L::Unspecified), 3 + 63);
        let south = org_units("south", L::Unspecified).unwrap();
        assert!(south.iter().all(|u| u.level == L::Province as i32));
        assert!(south.iter().any(|u| u.code == "79"));
        let hcmc = org_units("79", L::Unspecified).unwrap();
        assert_eq!(hcmc.len(), 168);
        assert!(hcmc.windows(2).all(|w| w[0].code < w[1].code), "code order");
        assert!(hcmc
            .iter()
            .all(|u| u.parent_code == "79" && u.level == L::Commune as i32));
        // Every commune's province and every province's region is itself a unit.
        let all = all_org_units();
        for u in &all {
            if !u.parent_code.is_empty() {
                assert!(all.iter().any(|p| p.code == u.parent_code), "{u:?}");
            }
        }
        // History: Hà Giang (02) merged into Tuyên Quang (08); it has no children.
        let old = org_units("", L::ProvincePre2025).unwrap();
        let ha_giang = old.iter().find(|u| u.code == "02").unwrap();
        assert_eq!(
            (ha_giang.merged_into.as_str(), ha_giang.parent_code.as_str()),
            ("08", "VN")
        );
        assert!(org_units("02", L::Unspecified).unwrap().is_empty());
        let err = org_units("7 9", L::Unspecified).unwrap_err();
        assert!(err.contains("7 9"), "{err}");
    }

    fn catalogue() -> Vec<pb::Indicator> {
        parse_catalogue(CATALOGUE_CSV).unwrap()
    }

    fn indicator(code: &str) -> pb::Indicator {
        catalogue().into_iter().find(|i| i.code == code).unwrap()
    }

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn the_seed_parses_with_rules_from_units() {
        let all = catalogue();
        assert_eq!(all.len(), 18);
        let pct = indicator("TRAINED_HH_PCT");
        assert_eq!(pct.aggregation(), Aggregation::Ratio);
        assert_eq!(pct.source(), Source::Derived);
        assert_eq!(pct.value_type(), ValueType::Percent);
        assert_eq!(
            (pct.min_value.as_str(), pct.max_value.as_str(), pct.scale),
            ("0", "100", 2)
        );
        let hh = indicator("TRAINED_HH");
        assert_eq!(hh.value_type(), ValueType::Integer);
        assert_eq!(
            (hh.min_value.as_str(), hh.max_value.as_str(), hh.scale),
            ("0", "", 0)
        );
        let tonnes = indicator("SALES_TONNES");
        assert_eq!((tonnes.value_type(), tonnes.scale), (ValueType::Decimal, 3));
        assert_eq!(
            indicator("OCOP_LISTED_PCT").period_type(),
            PeriodType::Quarter
        );
        assert_eq!(
            indicator("QA_MEDIAN_HOURS").aggregation(),
            Aggregation::Median
        );
        assert_eq!(indicator("HH_ONBOARDED").national_target, "5000000");
        assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    }

    #[test]
    fn integer_values() {
        let hh = indicator("TRAINED_HH");
        assert_eq!(check_value(&hh, " 1234 ").unwrap(), "1234");
        assert_eq!(check_value(&hh, "0").unwrap(), "0");
        assert_eq!(check_value(&hh, "12.0").unwrap(), "12");
        assert!(check_value(&hh, "12.5")
            .unwrap_err()
            .contains("whole numbers"));
        assert!(check_value(&hh, "-1").unwrap_err().contains("at least 0"));
        assert!(check_value(&hh, "abc")
            .unwrap_err()
            .contains("not a number"));
        assert!(check_value(&hh, "1,234")
            .unwrap_err()
            .contains("with a point"));
        assert!(check_value(&hh, "1e5")
            .unwrap_err()
            .contains("not a number"));
        assert!(check_value(&hh, "").unwrap_err().contains("not a number"));
        let huge = check_value(&hh, &"9".repeat(100_000)).unwrap_err();
        assert!(huge.len() < 200, "{huge}");
    }

    #[test]
    fn percent_and_decimal_values() {
        let pct = indicator("OCOP_LISTED_PCT");
        assert_eq!(check_value(&pct, "45.50").unwrap(), "45.5");
        assert_eq!(check_value(&pct, "100").unwrap(), "100");
        let err = check_value(&pct, "100.01").unwrap_err();
        assert!(err.contains("from 0 to 100"), "{err}");
        let err = check_value(&pct, "12.345").unwrap_err();
        assert!(
            err.contains("3 digits") && err.contains("at most 2"),
            "{err}"
        );
        let tonnes = indicator("SALES_TONNES");
        assert_eq!(check_value(&tonnes, "12.345").unwrap(), "12.345");
        assert!(check_value(&tonnes, "1.2345").is_err());
    }

    #[test]
    fn only_province_indicators_in_their_period_type() {
        let nov = Period::parse("202611").unwrap();
        let q4 = Period::parse("2026Q4").unwrap();
        assert!(check_reportable(&indicator("TRAINED_HH"), nov).is_ok());
        let err = check_reportable(&indicator("HH_ONBOARDED"), nov).unwrap_err();
        assert!(err.contains("marketplaces"), "{err}");
        let err = check_reportable(&indicator("TRAINED_HH_PCT"), nov).unwrap_err();
        assert!(
            err.contains("derived") && err.contains("TRAINED_HH / HH_ONBOARDED"),
            "{err}"
        );
        let err = check_reportable(&indicator("QA_RECEIVED"), nov).unwrap_err();
        assert!(err.contains("Q&A"), "{err}");
        let err = check_reportable(&indicator("OCOP_LISTED_PCT"), nov).unwrap_err();
        assert_eq!(
            err,
            "OCOP_LISTED_PCT is reported by quarter: use a period like 2026Q4"
        );
        let err = check_reportable(&indicator("TRAINED_HH"), q4).unwrap_err();
        assert!(err.contains("by month: use a period like 202610"), "{err}");
    }

    #[test]
    fn source_units_aggregate_exactly() {
        let values = [d("0.1"), d("0.2"), d("1000000000000.7")];
        assert_eq!(
            aggregate(Aggregation::Sum, &values),
            Some(d("1000000000001.0"))
        );
        assert_eq!(
            aggregate(Aggregation::Average, &[d("40"), d("45")]),
            Some(d("42.5"))
        );
        assert_eq!(
            aggregate(Aggregation::Average, &[d("1"), d("2"), d("2")]).map(|v| v.round_dp(4)),
            Some(d("1.6667"))
        );
        assert_eq!(
            aggregate(Aggregation::Median, &[d("3"), d("1"), d("2")]),
            Some(d("2"))
        );
        assert_eq!(
            aggregate(Aggregation::Median, &[d("1"), d("4")]),
            Some(d("2.5"))
        );
        assert_eq!(aggregate(Aggregation::Sum, &[]), None);
    }

    #[test]
    fn the_workflow() {
        use ReportState as S;
        let k = "79/202611";
        assert_eq!(transition(S::Unspecified, Action::Save, k), Ok(S::Draft));
        assert_eq!(transition(S::Draft, Action::Save, k), Ok(S::Draft));
        assert_eq!(transition(S::Returned, Action::Save, k), Ok(S::Returned));
        assert_eq!(transition(S::Draft, Action::Submit, k), Ok(S::Submitted));
        assert_eq!(transition(S::Returned, Action::Submit, k), Ok(S::Submitted));
        assert_eq!(
            transition(S::Submitted, Action::Approve, k),
            Ok(S::Approved)
        );
        assert_eq!(transition(S::Submitted, Action::Return, k), Ok(S::Returned));
        assert_eq!(transition(S::Approved, Action::Reopen, k), Ok(S::Draft));
        let err = transition(S::Approved, Action::Save, k).unwrap_err();
        assert_eq!(err, "report 79/202611 is approved and locked; the central working group can reopen it (ReopenReport) with a reason");
        assert!(transition(S::Submitted, Action::Save, k)
            .unwrap_err()
            .contains("wait"));
        assert!(transition(S::Draft, Action::Approve, k)
            .unwrap_err()
            .contains("is draft"));
        assert!(transition(S::Submitted, Action::Reopen, k)
            .unwrap_err()
            .contains("only an approved"));
        assert!(transition(S::Approved, Action::Approve, k)
            .unwrap_err()
            .contains("already approved"));
        assert!(transition(S::Unspecified, Action::Submit, k)
            .unwrap_err()
            .contains("no report"));
    }

    #[test]
    fn on_time_counts_the_deadline_day_in_vietnam() {
        let deadline = time::macros::date!(2026 - 12 - 05);
        // 2026-12-05 16:59 UTC is 23:59 in Vietnam: on time; 17:00 UTC is the 6th.
        let at = |h: u8, m: u8| {
            time::macros::datetime!(2026-12-05 00:00 UTC)
                .replace_time(time::Time::from_hms(h, m, 0).unwrap())
                .unix_timestamp()
                * 1000
        };
        assert!(on_time(at(16, 59), deadline));
        assert!(!on_time(at(17, 0), deadline));
        assert_eq!(vn_date(deadline), "05/12/2026");
        assert_eq!(iso_date(deadline), "2026-12-05");
    }
}
