//! What `bench scale` pushed and had acknowledged, summed exactly as the gateway must show it,
//! and the check of the gateway's answers against those sums. The check is the benchmark's
//! teeth: a latency measured over wrong figures would measure nothing, so any figure that
//! differs by a gram fails the run.

use std::collections::BTreeMap;

use agriportal_platform::reference::{Partner, Reference};
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::marketplace::v1 as pb;
use anyhow::Context as _;
use serde_json::Value;
use time::Date;

/// Sums of acknowledged records, by the cells the dashboards read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Expected {
    /// (partner, province) → [households onboarded, of them active].
    households: BTreeMap<(Partner, String), [i64; 2]>,
    /// (partner, province) → [grams, đồng, orders].
    sales: BTreeMap<(Partner, String), [i64; 3]>,
    /// Sale day → grams, every province and partner.
    grams_by_day: BTreeMap<Date, i64>,
    /// Sales lines summed.
    pub(crate) lines: u64,
    /// Households summed.
    pub(crate) household_records: u64,
}

/// `a += b`, cell by cell, refusing to wrap (the gateway refuses too, so a wrapped sum here
/// would be a false mismatch).
fn add<const N: usize>(a: &mut [i64; N], b: &[i64; N]) -> anyhow::Result<()> {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x
            .checked_add(*y)
            .context("a benchmark sum passed the 64-bit range")?;
    }
    Ok(())
}

impl Expected {
    /// The sums of one partner's sales lines.
    pub(crate) fn of_sales(partner: Partner, records: &[pb::SalesRecord]) -> anyhow::Result<Self> {
        let mut e = Expected::default();
        for r in records {
            let day = Date::parse(
                &r.sale_date,
                &time::format_description::well_known::Iso8601::DATE,
            )
            .with_context(|| format!("sale_date {:?} is not YYYY-MM-DD", r.sale_date))?;
            // The gateway counts a line of 0 orders as one order (the protocol's rule).
            let cell = [r.quantity_grams, r.value_vnd, i64::from(r.orders.max(1))];
            add(
                e.sales
                    .entry((partner, r.province_code.clone()))
                    .or_default(),
                &cell,
            )?;
            let grams = e.grams_by_day.entry(day).or_default();
            *grams = grams
                .checked_add(r.quantity_grams)
                .context("a benchmark sum passed the 64-bit range")?;
            e.lines += 1;
        }
        Ok(e)
    }

    /// The sums of one partner's onboarding records (each a new household).
    pub(crate) fn of_households(
        partner: Partner,
        records: &[pb::OnboardingRecord],
    ) -> anyhow::Result<Self> {
        let mut e = Expected::default();
        for r in records {
            let active = i64::from(r.status == HouseholdStatus::Active as i32);
            add(
                e.households
                    .entry((partner, r.province_code.clone()))
                    .or_default(),
                &[1, active],
            )?;
            e.household_records += 1;
        }
        Ok(e)
    }

    /// Adds `other`'s sums to these.
    pub(crate) fn merge(&mut self, other: &Expected) -> anyhow::Result<()> {
        for (key, cell) in &other.households {
            add(self.households.entry(key.clone()).or_default(), cell)?;
        }
        for (key, cell) in &other.sales {
            add(self.sales.entry(key.clone()).or_default(), cell)?;
        }
        for (day, grams) in &other.grams_by_day {
            let sum = self.grams_by_day.entry(*day).or_default();
            *sum = sum
                .checked_add(*grams)
                .context("a benchmark sum passed the 64-bit range")?;
        }
        self.lines += other.lines;
        self.household_records += other.household_records;
        Ok(())
    }

    /// National [households onboarded, active] of `partner` (all partners when none) and
    /// `province` (all provinces when none).
    fn households_of(&self, partner: Option<Partner>, province: Option<&str>) -> [i64; 2] {
        sum(&self.households, partner, province)
    }

    /// [grams, đồng, orders] of `partner` and `province` (all when none).
    fn sales_of(&self, partner: Option<Partner>, province: Option<&str>) -> [i64; 3] {
        sum(&self.sales, partner, province)
    }

    /// National [households onboarded, grams, orders]: what shows that the gateway has applied
    /// everything acknowledged (each only grows).
    pub(crate) fn headline(&self) -> [i64; 3] {
        let [grams, _, orders] = self.sales_of(None, None);
        [self.households_of(None, None)[0], grams, orders]
    }
}

/// Cells of `partner` and `province` summed (saturating: the cells were summed with checks, and
/// their sum can only pass the range where the gateway's would too, which then fails the check).
fn sum<const N: usize>(
    cells: &BTreeMap<(Partner, String), [i64; N]>,
    partner: Option<Partner>,
    province: Option<&str>,
) -> [i64; N] {
    let mut total = [0i64; N];
    for ((p, code), cell) in cells {
        if partner.is_some_and(|want| want != *p) || province.is_some_and(|want| want != code) {
            continue;
        }
        for (t, c) in total.iter_mut().zip(cell) {
            *t = t.saturating_add(*c);
        }
    }
    total
}

/// The headline figures of a `/api/v1/national` answer, in [`Expected::headline`]'s order.
pub(crate) fn headline_of(national: &Value) -> [Option<i64>; 3] {
    [
        national["households"]["onboarded"].as_i64(),
        national["sales"]["grams"].as_i64(),
        national["sales"]["orders"].as_i64(),
    ]
}

/// Figures compared and the ones that differed.
#[derive(Default)]
struct Checker {
    compared: usize,
    mismatches: Vec<String>,
}

impl Checker {
    fn eq(&mut self, what: impl FnOnce() -> String, got: Option<i64>, want: i64) {
        self.compared += 1;
        if got != Some(want) {
            let got = got.map_or_else(|| "nothing".to_string(), |g| g.to_string());
            self.mismatches.push(format!(
                "{}: the gateway shows {got}, pushed {want}",
                what()
            ));
        }
    }

    /// A households view (`onboarded`, `active`, `by_partner`) of `province` (or national).
    fn households(&mut self, at: &str, view: &Value, e: &Expected, province: Option<&str>) {
        let [onboarded, active] = e.households_of(None, province);
        self.eq(
            || format!("{at} households.onboarded"),
            view["onboarded"].as_i64(),
            onboarded,
        );
        self.eq(
            || format!("{at} households.active"),
            view["active"].as_i64(),
            active,
        );
        for p in Partner::ALL {
            let want = e.households_of(Some(p), province)[0];
            let got = view["by_partner"][p.code()].as_i64();
            self.eq(
                || format!("{at} households.by_partner.{}", p.code()),
                got,
                want,
            );
        }
    }

    /// A sales view (`grams`, `value_vnd`, `orders`, `by_partner`) of `province` (or national).
    fn sales(&mut self, at: &str, view: &Value, e: &Expected, province: Option<&str>) {
        const FIELDS: [&str; 3] = ["grams", "value_vnd", "orders"];
        let total = e.sales_of(None, province);
        for (field, want) in FIELDS.iter().zip(total) {
            self.eq(|| format!("{at} sales.{field}"), view[field].as_i64(), want);
        }
        for p in Partner::ALL {
            let cell = e.sales_of(Some(p), province);
            for (field, want) in FIELDS.iter().zip(cell) {
                let got = view["by_partner"][p.code()][field].as_i64();
                self.eq(
                    || format!("{at} sales.by_partner.{}.{field}", p.code()),
                    got,
                    want,
                );
            }
        }
    }

    /// `by_region[]` of the national answer: each region's provinces summed.
    fn regions(&mut self, national: &Value, e: &Expected) {
        let mut want: BTreeMap<&str, [i64; 4]> = BTreeMap::new();
        for province in Reference::get().provinces() {
            let [grams, value, orders] = e.sales_of(None, Some(&province.code));
            let households = e.households_of(None, Some(&province.code))[0];
            let cell = want.entry(province.region.as_str()).or_default();
            for (w, v) in cell.iter_mut().zip([grams, value, orders, households]) {
                *w = w.saturating_add(v);
            }
        }
        let regions = national["by_region"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        self.eq(
            || "national by_region: regions".into(),
            i64::try_from(regions.len()).ok(),
            want.len() as i64,
        );
        for (region, cell) in want {
            let view = regions
                .iter()
                .find(|r| r["region"] == region)
                .cloned()
                .unwrap_or(Value::Null);
            let fields = ["grams", "value_vnd", "orders", "households_onboarded"];
            for (field, want) in fields.iter().zip(cell) {
                let got = view[field].as_i64();
                self.eq(|| format!("national by_region {region}.{field}"), got, want);
            }
        }
    }

    /// A series answer's points against `want` (period start → value), every period present.
    fn series(&mut self, at: &str, series: &Value, want: &BTreeMap<Date, i64>) {
        let points = series["points"].as_array().cloned().unwrap_or_default();
        self.eq(
            || format!("{at}: points"),
            i64::try_from(points.len()).ok(),
            want.len() as i64,
        );
        for (start, value) in want {
            let start = start.to_string();
            let got = points
                .iter()
                .find(|p| p["period_start"] == start.as_str())
                .and_then(|p| p["value"].as_i64());
            self.eq(|| format!("{at} {start}"), got, *value);
        }
    }
}

/// Grams by day from `from` to `to` (every day present), and by month (each month's days in
/// that range; a month keyed by its first day, as the gateway answers).
fn series_of(e: &Expected, from: Date, to: Date) -> (BTreeMap<Date, i64>, BTreeMap<Date, i64>) {
    let (mut days, mut months) = (BTreeMap::new(), BTreeMap::new());
    let mut day = from;
    while day <= to {
        let grams = e.grams_by_day.get(&day).copied().unwrap_or(0);
        days.insert(day, grams);
        let month = day.replace_day(1).unwrap_or(day);
        let sum: &mut i64 = months.entry(month).or_default();
        *sum = sum.saturating_add(grams);
        match day.next_day() {
            Some(next) => day = next,
            None => break,
        }
    }
    (days, months)
}

/// The gateway's answers read at one step.
pub(crate) struct Answers<'a> {
    /// `/api/v1/national`.
    pub(crate) national: &'a Value,
    /// The province's code and its `/api/v1/provinces/{code}`.
    pub(crate) province: (&'a str, &'a Value),
    /// A year of national sales grams by day and by month, from `from` to `to`.
    pub(crate) by_day: &'a Value,
    /// Likewise by month.
    pub(crate) by_month: &'a Value,
    /// First day of the series.
    pub(crate) from: Date,
    /// Last day of the series.
    pub(crate) to: Date,
}

/// Compares every figure of `answers` with `e`: the figures compared, or every mismatch.
pub(crate) fn check(e: &Expected, answers: &Answers<'_>) -> Result<usize, Vec<String>> {
    let mut c = Checker::default();
    c.households("national", &answers.national["households"], e, None);
    c.sales("national", &answers.national["sales"], e, None);
    c.regions(answers.national, e);
    let (code, province) = answers.province;
    let at = format!("province {code}");
    c.households(&at, &province["households"], e, Some(code));
    c.sales(&at, &province["sales"], e, Some(code));
    let (days, months) = series_of(e, answers.from, answers.to);
    c.series("timeseries by day", answers.by_day, &days);
    c.series("timeseries by month", answers.by_month, &months);
    if c.mismatches.is_empty() {
        Ok(c.compared)
    } else {
        Err(c.mismatches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::date;

    fn line(province: &str, day: &str, grams: i64, value: i64, orders: u32) -> pb::SalesRecord {
        pb::SalesRecord {
            record_id: format!("{province}-{day}-{grams}"),
            sale_date: day.into(),
            province_code: province.into(),
            category: "vegetables".into(),
            quantity_grams: grams,
            value_vnd: value,
            orders,
            ..pb::SalesRecord::default()
        }
    }

    fn household(province: &str, status: HouseholdStatus) -> pb::OnboardingRecord {
        pb::OnboardingRecord {
            household_ref: format!("{province}-{status:?}"),
            province_code: province.into(),
            registered_on: "2026-01-01".into(),
            status: status as i32,
            ..pb::OnboardingRecord::default()
        }
    }

    /// Postmart: two lines in 79 (one of 0 orders, which counts as 1), a household active in
    /// 79 and one closed in 01. Vỏ Sò: one line in 01, an active household in 01.
    fn pushed() -> Expected {
        let mut e = Expected::default();
        let batches = [
            Expected::of_sales(
                Partner::Postmart,
                &[
                    line("79", "2026-01-31", 1_000, 50, 2),
                    line("79", "2026-02-01", 3_000, 70, 0),
                ],
            ),
            Expected::of_sales(Partner::Voso, &[line("01", "2026-01-31", 500, 9, 4)]),
            Expected::of_households(
                Partner::Postmart,
                &[
                    household("79", HouseholdStatus::Active),
                    household("01", HouseholdStatus::Closed),
                ],
            ),
            Expected::of_households(Partner::Voso, &[household("01", HouseholdStatus::Active)]),
        ];
        for batch in batches {
            e.merge(&batch.expect("sums")).expect("merge");
        }
        e
    }

    fn region_of(code: &str) -> String {
        Reference::get()
            .provinces()
            .iter()
            .find(|p| p.code == code)
            .map(|p| p.region.clone())
            .expect("province")
    }

    /// What a correct gateway answers for [`pushed`], written out by hand.
    fn national() -> Value {
        let mut regions: BTreeMap<String, [i64; 4]> = ["north", "central", "south"]
            .into_iter()
            .map(|r| (r.to_string(), [0; 4]))
            .collect();
        for (code, cell) in [("79", [4_000, 120, 3, 1]), ("01", [500, 9, 4, 2])] {
            let r = regions.entry(region_of(code)).or_default();
            for (x, y) in r.iter_mut().zip(cell) {
                *x += y;
            }
        }
        let by_region: Vec<Value> = regions
            .iter()
            .map(|(region, [g, v, o, h])| {
                json!({"region": region, "grams": g, "value_vnd": v, "orders": o,
                       "households_onboarded": h})
            })
            .collect();
        json!({
            "households": {"onboarded": 3, "active": 2, "by_partner": {"postmart": 2, "voso": 1}},
            "sales": {"grams": 4_500, "value_vnd": 129, "orders": 7, "by_partner": {
                "postmart": {"grams": 4_000, "value_vnd": 120, "orders": 3},
                "voso": {"grams": 500, "value_vnd": 9, "orders": 4}}},
            "by_region": by_region,
        })
    }

    fn province() -> Value {
        json!({
            "households": {"onboarded": 1, "active": 1, "by_partner": {"postmart": 1, "voso": 0}},
            "sales": {"grams": 4_000, "value_vnd": 120, "orders": 3, "by_partner": {
                "postmart": {"grams": 4_000, "value_vnd": 120, "orders": 3},
                "voso": {"grams": 0, "value_vnd": 0, "orders": 0}}},
        })
    }

    /// 2026-01-30 .. 2026-02-02 by day and by month.
    fn by_day() -> Value {
        json!({"points": [
            {"period_start": "2026-01-30", "value": 0},
            {"period_start": "2026-01-31", "value": 1_500},
            {"period_start": "2026-02-01", "value": 3_000},
            {"period_start": "2026-02-02", "value": 0}]})
    }

    fn by_month() -> Value {
        json!({"points": [
            {"period_start": "2026-01-01", "value": 1_500},
            {"period_start": "2026-02-01", "value": 3_000}]})
    }

    fn run(
        national: &Value,
        province: &Value,
        day: &Value,
        month: &Value,
    ) -> Result<usize, Vec<String>> {
        check(
            &pushed(),
            &Answers {
                national,
                province: ("79", province),
                by_day: day,
                by_month: month,
                from: date!(2026 - 01 - 30),
                to: date!(2026 - 02 - 02),
            },
        )
    }

    #[test]
    fn right_answers_pass_with_every_figure_compared() {
        let compared = run(&national(), &province(), &by_day(), &by_month()).expect("exact");
        // national: 4 household figures, 9 sales, regions 1 + 3 × 4; the province 4 + 9;
        // series: a count and 4 days, a count and 2 months.
        assert_eq!(compared, 26 + 13 + 5 + 3);
        assert_eq!(pushed().headline(), [3, 4_500, 7]);
        assert_eq!(headline_of(&national()), [Some(3), Some(4_500), Some(7)]);
    }

    /// Each answer off by one somewhere (or missing a point) fails, naming the figure.
    #[test]
    fn any_figure_off_by_one_fails_and_is_named() {
        let cases: [(&str, &str, &str); 7] = [
            ("national", "/sales/grams", "national sales.grams"),
            (
                "national",
                "/households/active",
                "national households.active",
            ),
            (
                "national",
                "/sales/by_partner/voso/orders",
                "national sales.by_partner.voso.orders",
            ),
            ("national", "/by_region/0/value_vnd", "national by_region"),
            (
                "province",
                "/households/by_partner/voso",
                "province 79 households.by_partner.voso",
            ),
            ("day", "/points/1/value", "timeseries by day 2026-01-31"),
            ("month", "/points/1/value", "timeseries by month 2026-02-01"),
        ];
        for (answer, pointer, named) in cases {
            let mut answers = [national(), province(), by_day(), by_month()];
            let i = ["national", "province", "day", "month"]
                .iter()
                .position(|a| *a == answer)
                .expect("answer");
            let v = answers[i].pointer_mut(pointer).expect(pointer);
            *v = json!(v.as_i64().expect("number") + 1);
            let [n, p, d, m] = &answers;
            let mismatches = run(n, p, d, m).expect_err(pointer);
            assert_eq!(mismatches.len(), 1, "{mismatches:?}");
            assert!(mismatches[0].starts_with(named), "{mismatches:?}");
        }
    }

    #[test]
    fn a_missing_period_or_figure_fails() {
        let mut day = by_day();
        day["points"].as_array_mut().expect("points").pop();
        let mismatches = run(&national(), &province(), &day, &by_month()).expect_err("short");
        assert_eq!(mismatches.len(), 2, "{mismatches:?}");
        let mut n = national();
        n["sales"]["by_partner"]
            .as_object_mut()
            .expect("partners")
            .remove("postmart");
        let mismatches = run(&n, &province(), &by_day(), &by_month()).expect_err("absent");
        assert!(
            mismatches.iter().all(|m| m.contains("shows nothing")),
            "{mismatches:?}"
        );
        assert_eq!(mismatches.len(), 3, "{mismatches:?}");
    }

    #[test]
    fn sums_refuse_to_wrap() {
        let mut e = Expected::of_sales(Partner::Voso, &[line("01", "2026-01-31", i64::MAX, 1, 1)])
            .expect("sums");
        let again = e.clone();
        assert!(e.merge(&again).is_err());
        assert!(Expected::of_sales(Partner::Voso, &[line("01", "2026-13-01", 1, 1, 1)]).is_err());
    }
}
