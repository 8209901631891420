//! The gateway's rules: how marketplace events change the rollups, how the rollups become
//! national and provincial figures, and how a time-series query is read and bucketed.

use std::collections::BTreeMap;

use agriportal_platform::period;
use agriportal_platform::reference::{Partner, Reference, HOUSEHOLD_TARGET, REGIONS};
use agriportal_platform::Result;
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::marketplace::v1 as mpb;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use time::{Date, Duration, Month};

use crate::config::MAX_SERIES_DAYS;
use crate::error::{bad_parameter, unknown_province};

/// Sales figures of a rollup cell: grams, đồng, orders, lines.
pub type SalesCell = [i64; 4];

/// Household stocks of a rollup cell: listed products, households that reported them,
/// households with a digital address, households that reported whether they have one. The
/// reporting counts tell "zero" from "nobody said".
pub type StockCell = [i64; 4];

/// A household stock correction: households, then the four figures of a [`StockCell`].
pub type AsOfCell = [i64; 5];

/// The changes a set of events makes to the rollups, summed per cell before writing so a
/// batch of events is a handful of upserts. Keys are ordered, so concurrent writers lock rows
/// in the same order and cannot deadlock.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deltas {
    /// (day, province, partner, category) → sales change.
    pub sales_daily: BTreeMap<(String, String, &'static str, String), SalesCell>,
    /// (province, partner) → sales change.
    pub sales_totals: BTreeMap<(String, &'static str), SalesCell>,
    /// (day, province, partner, status) → households change.
    pub households_daily: BTreeMap<(String, String, &'static str, i64), i64>,
    /// (province, partner, status) → households change.
    pub household_totals: BTreeMap<(String, &'static str, i64), i64>,
    /// (partner, month `YYYYMM`, province, household_ref) → change in the household's sales
    /// lines that month; a household trades in a month while its count is above zero.
    pub household_trading: BTreeMap<(&'static str, String, String, String), i64>,
    /// (registration day, province, partner) → change in the household stocks.
    pub household_stock: BTreeMap<(String, String, &'static str), StockCell>,
    /// (province, month `YYYYMM`, commune, partner) → sales change, for lines that name a
    /// commune only.
    pub sales_commune: BTreeMap<(String, String, String, &'static str), SalesCell>,
    /// (province, registration month `YYYYMM`, commune, partner, status) → households
    /// change, for households that name a commune only.
    pub households_commune: BTreeMap<(String, String, String, &'static str, i64), i64>,
    /// (month `YYYYMM` the change was recorded in, registration day, province, partner,
    /// status) → correction that turns the current-based stocks of the months before it back
    /// into what they were then: +previous figures, −current figures of each changed
    /// household (a new household has none: it counts from its registration day).
    pub household_asof: BTreeMap<(String, String, String, &'static str, i64), AsOfCell>,
    /// Newest commit time among the events, ms since the epoch.
    pub newest_ms: i64,
}

impl Deltas {
    /// Adds a sales event: every change removes its previous figures and adds its current ones.
    pub fn add_sales(&mut self, event: &mpb::SalesRecorded) -> Result<(), String> {
        let partner = event_partner(event.partner)?;
        // Checked before anything is added, so a refused event leaves no partial change.
        for change in &event.changes {
            for figures in change.previous.iter().chain(change.current.iter()) {
                check_sales(figures)?;
                check_household_ref(figures)?;
                check_commune_day(&figures.commune_code, &figures.sale_date)?;
            }
        }
        for change in &event.changes {
            if let Some(previous) = &change.previous {
                self.sales(partner, previous, -1)
                    .map_err(|e| e.to_string())?;
            }
            match &change.current {
                Some(current) => self.sales(partner, current, 1).map_err(|e| e.to_string())?,
                None => {
                    return Err(format!(
                        "sales change {} has no current figures",
                        change.record_id
                    ))
                }
            }
        }
        self.newest_ms = self.newest_ms.max(event.recorded_at_ms);
        Ok(())
    }

    fn sales(
        &mut self,
        partner: &'static str,
        f: &mpb::SalesFigures,
        sign: i64,
    ) -> Result<(), Overflow> {
        let cell = [
            f.quantity_grams * sign,
            f.value_vnd * sign,
            i64::from(f.orders) * sign,
            sign,
        ];
        let daily = self
            .sales_daily
            .entry((
                f.sale_date.clone(),
                f.province_code.clone(),
                partner,
                f.category.clone(),
            ))
            .or_default();
        add(daily, &cell)?;
        add(
            self.sales_totals
                .entry((f.province_code.clone(), partner))
                .or_default(),
            &cell,
        )?;
        // A line without a household counts in the sales but not among trading households.
        if let Some(month) = sale_month(f) {
            let lines = self
                .household_trading
                .entry((
                    partner,
                    month,
                    f.province_code.clone(),
                    f.household_ref.clone(),
                ))
                .or_default();
            checked_add(lines, sign)?;
        }
        // A line without a commune counts in its province only (its "unassigned" part).
        if let Some(month) = commune_month(&f.commune_code, &f.sale_date) {
            add(
                self.sales_commune
                    .entry((
                        f.province_code.clone(),
                        month,
                        f.commune_code.clone(),
                        partner,
                    ))
                    .or_default(),
                &cell,
            )?;
        }
        Ok(())
    }

    /// Adds a households event: a changed household leaves its old cell and joins its new one.
    pub fn add_households(&mut self, event: &mpb::HouseholdsRecorded) -> Result<(), String> {
        let partner = event_partner(event.partner)?;
        // Checked before anything is added, so a refused event leaves no partial change.
        for change in &event.changes {
            for figures in change.previous.iter().chain(change.current.iter()) {
                check_commune_day(&figures.commune_code, &figures.registered_on)?;
            }
        }
        let changed_in = recorded_month(event.recorded_at_ms);
        for change in &event.changes {
            let Some(current) = &change.current else {
                return Err(format!(
                    "household change {} has no current figures",
                    change.household_ref
                ));
            };
            if let Some(previous) = &change.previous {
                self.household(partner, previous, -1);
                self.as_of(&changed_in, partner, previous, 1);
                self.as_of(&changed_in, partner, current, -1);
            }
            self.household(partner, current, 1);
        }
        self.newest_ms = self.newest_ms.max(event.recorded_at_ms);
        Ok(())
    }

    fn household(&mut self, partner: &'static str, f: &mpb::HouseholdFigures, sign: i64) {
        let status = i64::from(f.status);
        *self
            .households_daily
            .entry((
                f.registered_on.clone(),
                f.province_code.clone(),
                partner,
                status,
            ))
            .or_default() += sign;
        *self
            .household_totals
            .entry((f.province_code.clone(), partner, status))
            .or_default() += sign;
        if let Some(month) = commune_month(&f.commune_code, &f.registered_on) {
            *self
                .households_commune
                .entry((
                    f.province_code.clone(),
                    month,
                    f.commune_code.clone(),
                    partner,
                    status,
                ))
                .or_default() += sign;
        }
        // The stocks, by registration day like `households_daily`: a stock at a month's end
        // is the sum over the days up to it. A household that reported neither adds nothing.
        if f.listed_products.is_some() || f.has_digital_address.is_some() {
            let cell = stock_cell(f, sign);
            let stock = self
                .household_stock
                .entry((f.registered_on.clone(), f.province_code.clone(), partner))
                .or_default();
            // Figures of one household are bounded (u32 products), as are an event's
            // changes, so this cannot overflow within one event; checked all the same.
            if add(stock, &cell).is_err() {
                tracing::warn!("household stock delta overflowed within one event; not added");
            }
        }
    }

    /// Adds a household's figures with `sign` to the corrections of the months before
    /// `changed_in`.
    fn as_of(
        &mut self,
        changed_in: &str,
        partner: &'static str,
        f: &mpb::HouseholdFigures,
        sign: i64,
    ) {
        let [listed, listed_reporting, digital, digital_reporting] = stock_cell(f, sign);
        let cell = self
            .household_asof
            .entry((
                changed_in.to_string(),
                f.registered_on.clone(),
                f.province_code.clone(),
                partner,
                i64::from(f.status),
            ))
            .or_default();
        let by = [sign, listed, listed_reporting, digital, digital_reporting];
        for (a, b) in cell.iter_mut().zip(by) {
            *a += b;
        }
    }

    /// Adds `from`'s deltas to these (a batch of events folds into one write per table).
    /// Checked: a sum that would overflow is refused (whole, these deltas then being partly
    /// merged, so the caller drops them), never wrapped.
    pub fn merge(&mut self, from: &Deltas) -> Result<(), Overflow> {
        let one = |a: &mut i64, b: &i64| checked_add(a, *b);
        merge_map(&mut self.sales_daily, &from.sales_daily, add)?;
        merge_map(&mut self.sales_totals, &from.sales_totals, add)?;
        merge_map(&mut self.households_daily, &from.households_daily, one)?;
        merge_map(&mut self.household_totals, &from.household_totals, one)?;
        merge_map(&mut self.household_trading, &from.household_trading, one)?;
        merge_map(&mut self.household_stock, &from.household_stock, add)?;
        merge_map(&mut self.sales_commune, &from.sales_commune, add)?;
        merge_map(&mut self.households_commune, &from.households_commune, one)?;
        merge_map(&mut self.household_asof, &from.household_asof, |a, b| {
            let mut sum = *a;
            for (x, y) in sum.iter_mut().zip(b) {
                checked_add(x, *y)?;
            }
            *a = sum;
            Ok(())
        })?;
        self.newest_ms = self.newest_ms.max(from.newest_ms);
        Ok(())
    }

    /// True when applying would change nothing.
    pub fn is_empty(&self) -> bool {
        self.sales_daily.is_empty()
            && self.households_daily.is_empty()
            && self.household_trading.is_empty()
            && self.household_stock.is_empty()
            && self.sales_commune.is_empty()
            && self.households_commune.is_empty()
            && self.household_asof.is_empty()
            && self.newest_ms == 0
    }
}

/// A household's stock figures with `sign`: zeros for what it did not report.
fn stock_cell(f: &mpb::HouseholdFigures, sign: i64) -> StockCell {
    let listed = f.listed_products.map(i64::from);
    let digital = f.has_digital_address;
    [
        listed.unwrap_or(0) * sign,
        i64::from(listed.is_some()) * sign,
        i64::from(digital == Some(true)) * sign,
        i64::from(digital.is_some()) * sign,
    ]
}

/// The month `YYYYMM`, in Vietnam's time, of a commit time in ms: the month from which a
/// household change holds. A time outside the calendar (only a corrupt event has one) reads
/// as year 0, before every month, so the change holds for all of history, as the
/// current-based rollups alone would count it.
pub fn recorded_month(ms: i64) -> String {
    let day = period::vietnam_date_of_ms(ms);
    format!(
        "{:04}{:02}",
        day.year().clamp(0, 9999),
        u8::from(day.month())
    )
}

/// Figures outside what the marketplace accepts can only come from a corrupt or foreign event:
/// refusing them keeps the sums' arithmetic far from overflow.
fn check_sales(f: &mpb::SalesFigures) -> Result<(), String> {
    const MAX: i64 = 1_000_000_000_000;
    if !(0..=MAX).contains(&f.quantity_grams) || !(0..=MAX).contains(&f.value_vnd) {
        return Err(format!(
            "sales figures out of range: {} g, {} đồng",
            f.quantity_grams, f.value_vnd
        ));
    }
    Ok(())
}

/// The month `YYYYMM` of a sales line that names its household (`None` without one).
fn sale_month(f: &mpb::SalesFigures) -> Option<String> {
    if f.household_ref.is_empty() {
        return None;
    }
    let year = f.sale_date.get(0..4)?;
    let month = f.sale_date.get(5..7)?;
    Some(format!("{year}{month}"))
}

/// Whether `day` is written `YYYY-MM-DD` (digits where digits go), as the marketplace sends it.
fn is_day(day: &str) -> bool {
    let bytes = day.as_bytes();
    bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit())
}

/// The month `YYYYMM` under which a record naming `commune` is kept by commune (`None`
/// without a commune, or without a day to take the month from, which the checks refuse).
fn commune_month(commune: &str, day: &str) -> Option<String> {
    if commune.is_empty() || !is_day(day) {
        return None;
    }
    Some(format!("{}{}", day.get(0..4)?, day.get(5..7)?))
}

/// A record naming a commune must have a day to take its month from, like a line naming a
/// household: anything but `YYYY-MM-DD` is a corrupt or foreign event.
fn check_commune_day(commune: &str, day: &str) -> Result<(), String> {
    if commune.is_empty() || is_day(day) {
        return Ok(());
    }
    Err(format!(
        "record in commune {} has no day YYYY-MM-DD ({})",
        commune.chars().take(16).collect::<String>(),
        day.chars().take(16).collect::<String>()
    ))
}

/// A line naming a household must have a day to take its month from; the marketplace only
/// sends `YYYY-MM-DD`, so anything else is a corrupt or foreign event.
fn check_household_ref(f: &mpb::SalesFigures) -> Result<(), String> {
    if f.household_ref.is_empty() {
        return Ok(());
    }
    if !is_day(&f.sale_date) {
        return Err(format!(
            "sales line of household {} has no day YYYY-MM-DD ({})",
            f.household_ref.chars().take(64).collect::<String>(),
            f.sale_date.chars().take(16).collect::<String>()
        ));
    }
    Ok(())
}

/// A sum of figures that does not fit in 64 bits: it is refused, never wrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow;

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a rollup figure would overflow a 64-bit total")
    }
}

/// Adds `from`'s cells to `into`'s by `add`; a key is cloned only when `into` lacks it (a
/// fold of many events meets the same cells again and again).
fn merge_map<K: Ord + Clone, V: Copy + Default>(
    into: &mut BTreeMap<K, V>,
    from: &BTreeMap<K, V>,
    add: impl Fn(&mut V, &V) -> Result<(), Overflow>,
) -> Result<(), Overflow> {
    for (k, v) in from {
        match into.get_mut(k) {
            Some(cell) => add(cell, v)?,
            None => {
                let mut cell = V::default();
                add(&mut cell, v)?;
                into.insert(k.clone(), cell);
            }
        }
    }
    Ok(())
}

fn checked_add(a: &mut i64, b: i64) -> Result<(), Overflow> {
    *a = a.checked_add(b).ok_or(Overflow)?;
    Ok(())
}

/// Adds `by` to `cell`, all or nothing.
fn add(cell: &mut [i64; 4], by: &[i64; 4]) -> Result<(), Overflow> {
    let mut sum = *cell;
    for (a, b) in sum.iter_mut().zip(by) {
        checked_add(a, *b)?;
    }
    *cell = sum;
    Ok(())
}

fn event_partner(value: i32) -> Result<&'static str, String> {
    Partner::from_proto(value)
        .map(Partner::code)
        .ok_or_else(|| format!("event names no known partner ({value})"))
}

/// One row of `sales_totals`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SalesTotal {
    /// Province code.
    pub province_code: String,
    /// Partner code.
    pub partner: String,
    /// Grams, đồng, orders, lines.
    pub cell: SalesCell,
}

/// One row of `household_totals`.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct HouseholdTotal {
    /// Province code.
    pub province_code: String,
    /// Partner code.
    pub partner: String,
    /// `HouseholdStatus` value.
    pub status: i64,
    /// Households.
    pub households: i64,
}

/// Sales figures as shown to dashboards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SalesView {
    /// Grams sold.
    pub grams: i64,
    /// Tonnes sold (grams / 1,000,000), for display; sums use `grams`.
    pub tonnes: f64,
    /// Đồng sold.
    pub value_vnd: i64,
    /// Orders.
    pub orders: i64,
}

/// Sales of one partner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PartnerSales {
    /// Grams sold.
    pub grams: i64,
    /// Đồng sold.
    pub value_vnd: i64,
    /// Orders.
    pub orders: i64,
}

/// Household figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HouseholdsView {
    /// Distinct households registered, any status.
    pub onboarded: i64,
    /// Households whose account is active.
    pub active: i64,
    /// The national target; absent for a province.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<i64>,
    /// Onboarded as a percentage of the target, two decimals; absent for a province.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_pct: Option<f64>,
    /// Onboarded households by partner code.
    pub by_partner: BTreeMap<&'static str, i64>,
}

/// Sales with the partner split.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SalesWithPartners {
    /// Totals.
    #[serde(flatten)]
    pub total: SalesView,
    /// By partner code.
    pub by_partner: BTreeMap<&'static str, PartnerSales>,
}

/// Figures of one macro region.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RegionView {
    /// `north`, `central` or `south`.
    pub region: &'static str,
    /// Grams sold.
    pub grams: i64,
    /// Đồng sold.
    pub value_vnd: i64,
    /// Orders.
    pub orders: i64,
    /// Households onboarded.
    pub households_onboarded: i64,
}

/// `GET /api/v1/national`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NationalView {
    /// RFC 3339 time of the newest event applied, or null.
    pub as_of: Option<String>,
    /// Households.
    pub households: HouseholdsView,
    /// Sales.
    pub sales: SalesWithPartners,
    /// By macro region, north to south.
    pub by_region: Vec<RegionView>,
}

/// One province in `GET /api/v1/provinces[/{code}]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProvinceView {
    /// Official code since 1 July 2025.
    pub code: String,
    /// Official name.
    pub name: String,
    /// Macro region.
    pub region: String,
    /// Households.
    pub households: HouseholdsView,
    /// Sales.
    pub sales: SalesWithPartners,
}

fn empty_households(target: Option<i64>) -> HouseholdsView {
    HouseholdsView {
        target,
        progress_pct: target.map(|_| 0.0),
        by_partner: Partner::ALL.iter().map(|p| (p.code(), 0)).collect(),
        ..HouseholdsView::default()
    }
}

fn empty_sales() -> SalesWithPartners {
    SalesWithPartners {
        total: SalesView::default(),
        by_partner: Partner::ALL
            .iter()
            .map(|p| (p.code(), PartnerSales::default()))
            .collect(),
    }
}

fn add_sales(view: &mut SalesWithPartners, partner: &str, cell: &SalesCell) {
    view.total.grams = view.total.grams.saturating_add(cell[0]);
    view.total.value_vnd = view.total.value_vnd.saturating_add(cell[1]);
    view.total.orders = view.total.orders.saturating_add(cell[2]);
    view.total.tonnes = view.total.grams as f64 / 1_000_000.0;
    if let Some(p) = Partner::from_code(partner) {
        let entry = view.by_partner.entry(p.code()).or_default();
        entry.grams = entry.grams.saturating_add(cell[0]);
        entry.value_vnd = entry.value_vnd.saturating_add(cell[1]);
        entry.orders = entry.orders.saturating_add(cell[2]);
    }
}

fn add_households(view: &mut HouseholdsView, partner: &str, status: i64, households: i64) {
    view.onboarded = view.onboarded.saturating_add(households);
    if status == HouseholdStatus::Active as i64 {
        view.active = view.active.saturating_add(households);
    }
    if let Some(p) = Partner::from_code(partner) {
        let n = view.by_partner.entry(p.code()).or_default();
        *n = n.saturating_add(households);
    }
    if let Some(target) = view.target.filter(|t| *t > 0) {
        view.progress_pct =
            Some((view.onboarded as f64 * 10_000.0 / target as f64).round() / 100.0);
    }
}

/// Every province's figures from the totals tables, in code order.
pub fn provinces(sales: &[SalesTotal], households: &[HouseholdTotal]) -> Vec<ProvinceView> {
    let reference = Reference::get();
    let mut views: BTreeMap<&str, ProvinceView> = reference
        .provinces()
        .iter()
        .map(|p| {
            let view = ProvinceView {
                code: p.code.clone(),
                name: p.name.clone(),
                region: p.region.clone(),
                households: empty_households(None),
                sales: empty_sales(),
            };
            (p.code.as_str(), view)
        })
        .collect();
    for row in sales {
        if let Some(view) = views.get_mut(row.province_code.as_str()) {
            add_sales(&mut view.sales, &row.partner, &row.cell);
        }
    }
    for row in households {
        if let Some(view) = views.get_mut(row.province_code.as_str()) {
            add_households(
                &mut view.households,
                &row.partner,
                row.status,
                row.households,
            );
        }
    }
    views.into_values().collect()
}

/// National figures from the totals tables.
pub fn national(
    sales: &[SalesTotal],
    households: &[HouseholdTotal],
    as_of: Option<String>,
) -> NationalView {
    let mut view = NationalView {
        as_of,
        households: empty_households(Some(HOUSEHOLD_TARGET)),
        sales: empty_sales(),
        by_region: REGIONS
            .iter()
            .map(|r| RegionView {
                region: r,
                ..RegionView::default()
            })
            .collect(),
    };
    for row in sales {
        add_sales(&mut view.sales, &row.partner, &row.cell);
    }
    for row in households {
        add_households(
            &mut view.households,
            &row.partner,
            row.status,
            row.households,
        );
    }
    for province in provinces(sales, households) {
        if let Some(region) = view
            .by_region
            .iter_mut()
            .find(|r| r.region == province.region)
        {
            region.grams = region.grams.saturating_add(province.sales.total.grams);
            region.value_vnd = region
                .value_vnd
                .saturating_add(province.sales.total.value_vnd);
            region.orders = region.orders.saturating_add(province.sales.total.orders);
            region.households_onboarded = region
                .households_onboarded
                .saturating_add(province.households.onboarded);
        }
    }
    view
}

/// What a time series measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Grams sold.
    SalesGrams,
    /// Đồng sold.
    SalesValueVnd,
    /// Orders.
    Orders,
    /// Households by registration day.
    HouseholdsOnboarded,
}

impl Metric {
    /// The name used in queries.
    pub fn name(self) -> &'static str {
        match self {
            Metric::SalesGrams => "sales_grams",
            Metric::SalesValueVnd => "sales_value_vnd",
            Metric::Orders => "orders",
            Metric::HouseholdsOnboarded => "households_onboarded",
        }
    }
}

/// Period of a time-series point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// Calendar day.
    Day,
    /// ISO week, starting Monday.
    Week,
    /// Calendar month.
    Month,
}

impl Granularity {
    /// The name used in queries.
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
        }
    }

    /// First day of the period containing `day`.
    pub fn start_of(self, day: Date) -> Date {
        match self {
            Granularity::Day => day,
            Granularity::Week => {
                day - Duration::days(i64::from(day.weekday().number_days_from_monday()))
            }
            Granularity::Month => day.replace_day(1).unwrap_or(day),
        }
    }

    fn next(self, start: Date) -> Option<Date> {
        match self {
            Granularity::Day => start.next_day(),
            Granularity::Week => start.checked_add(Duration::days(7)),
            Granularity::Month => {
                let (year, month) = if start.month() == Month::December {
                    (start.year() + 1, Month::January)
                } else {
                    (start.year(), start.month().next())
                };
                Date::from_calendar_date(year, month, 1).ok()
            }
        }
    }
}

/// A checked time-series query.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesQuery {
    /// The metric.
    pub metric: Metric,
    /// The period.
    pub granularity: Granularity,
    /// First day, inclusive.
    pub from: Date,
    /// Last day, inclusive.
    pub to: Date,
    /// Province (2025 code), if filtered.
    pub province: Option<String>,
    /// Partner, if filtered.
    pub partner: Option<Partner>,
}

/// Raw, unchecked time-series parameters (HTTP query string or gRPC request).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    /// Metric name.
    pub metric: Option<String>,
    /// Granularity name.
    pub granularity: Option<String>,
    /// `YYYY-MM-DD`.
    pub from: Option<String>,
    /// `YYYY-MM-DD`.
    pub to: Option<String>,
    /// Province code.
    pub province: Option<String>,
    /// Partner code.
    pub partner: Option<String>,
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

fn parse_day(name: &str, value: Option<&str>) -> Result<Date> {
    let value = value.ok_or_else(|| bad_parameter(name, "is required (YYYY-MM-DD)"))?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = Date::parse(value, format).map_err(|_| {
        let shown: String = value.chars().take(20).collect();
        bad_parameter(
            name,
            format!("`{shown}` is not a date in the form YYYY-MM-DD"),
        )
    })?;
    // The programme's figures start in 2021; a year far outside any dashboard's range is a
    // mistake (a typo, a negative year), answered as such rather than with an empty series.
    if !(SERIES_YEARS.0..=SERIES_YEARS.1).contains(&day.year()) {
        return Err(bad_parameter(
            name,
            format!(
                "`{value}` is outside the years {} to {}",
                SERIES_YEARS.0, SERIES_YEARS.1
            ),
        ));
    }
    Ok(day)
}

/// Years a time series may start or end in.
pub const SERIES_YEARS: (i32, i32) = (2000, 2100);

impl SeriesParams {
    /// Checks the parameters; every problem gets an error naming the parameter.
    pub fn check(&self) -> Result<SeriesQuery> {
        let metric = match non_empty(&self.metric) {
            Some("sales_grams") => Metric::SalesGrams,
            Some("sales_value_vnd") => Metric::SalesValueVnd,
            Some("orders") => Metric::Orders,
            Some("households_onboarded") => Metric::HouseholdsOnboarded,
            _ => {
                return Err(bad_parameter(
                    "metric",
                    "must be one of sales_grams, sales_value_vnd, orders, households_onboarded",
                ))
            }
        };
        let granularity = match non_empty(&self.granularity).unwrap_or("day") {
            "day" => Granularity::Day,
            "week" => Granularity::Week,
            "month" => Granularity::Month,
            _ => return Err(bad_parameter("granularity", "must be day, week or month")),
        };
        let from = parse_day("from", non_empty(&self.from))?;
        let to = parse_day("to", non_empty(&self.to))?;
        if to < from {
            return Err(bad_parameter(
                "to",
                format!("({to}) is before `from` ({from})"),
            ));
        }
        if (to - from).whole_days() > MAX_SERIES_DAYS {
            return Err(bad_parameter(
                "to",
                format!(
                    "is more than {MAX_SERIES_DAYS} days after `from`; ask for a shorter range"
                ),
            ));
        }
        let province = match non_empty(&self.province) {
            Some(code) => Some(
                Reference::get()
                    .resolve_province(code)
                    .map(|m| m.province().code.clone())
                    .ok_or_else(|| unknown_province(code))?,
            ),
            None => None,
        };
        let partner = match non_empty(&self.partner) {
            Some(code) => Some(
                Partner::from_code(code)
                    .ok_or_else(|| bad_parameter("partner", "must be postmart or voso"))?,
            ),
            None => None,
        };
        Ok(SeriesQuery {
            metric,
            granularity,
            from,
            to,
            province,
            partner,
        })
    }
}

/// One point of a series.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Point {
    /// First day of the period.
    pub period_start: String,
    /// Value over the period (within the query's range).
    pub value: i64,
}

/// Buckets daily values into the query's periods; every period in range is present.
pub fn bucket(query: &SeriesQuery, daily: &[(Date, i64)]) -> Vec<Point> {
    let mut sums: BTreeMap<Date, i64> = BTreeMap::new();
    let mut start = query.granularity.start_of(query.from);
    while start <= query.to {
        sums.insert(start, 0);
        match query.granularity.next(start) {
            Some(next) => start = next,
            None => break,
        }
    }
    for (day, value) in daily {
        if *day >= query.from && *day <= query.to {
            *sums.entry(query.granularity.start_of(*day)).or_default() += value;
        }
    }
    sums.into_iter()
        .map(|(d, value)| Point {
            period_start: d.to_string(),
            value,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Indicators: values of a province, aggregation up the hierarchy, targets and progress.

/// How values add up the hierarchy (the catalogue's `aggregation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregation {
    /// Sum of the provinces' values.
    Sum,
    /// Mean of the provinces that have a value.
    Average,
    /// Each province's latest value up to the period (a stock), summed.
    Latest,
    /// Ratio of two sums, computed at each level.
    Ratio,
    /// Median of the provinces that have a value.
    Median,
}

impl Aggregation {
    /// From the protobuf enum value (unspecified reads as a sum, the catalogue's default).
    pub fn from_proto(value: i32) -> Aggregation {
        use agriportal_proto::indicators::v1::Aggregation as A;
        match A::try_from(value).unwrap_or(A::Sum) {
            A::Average => Aggregation::Average,
            A::Latest => Aggregation::Latest,
            A::Ratio => Aggregation::Ratio,
            A::Median => Aggregation::Median,
            A::Sum | A::Unspecified => Aggregation::Sum,
        }
    }

    /// Lower-case name, as the public API writes it.
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Sum => "sum",
            Aggregation::Average => "average",
            Aggregation::Latest => "latest",
            Aggregation::Ratio => "ratio",
            Aggregation::Median => "median",
        }
    }
}

/// Combines the values of one province's source units (pre-2025 provinces merged into it):
/// a mean for averages, a sum otherwise (counts and stocks of the parts add up). `None` when
/// there are none.
pub fn combine_units(aggregation: Aggregation, units: &[Decimal]) -> Option<Decimal> {
    match aggregation {
        Aggregation::Average | Aggregation::Median => mean(units),
        _ => sum(units),
    }
}

fn sum(values: &[Decimal]) -> Option<Decimal> {
    if values.is_empty() {
        return None;
    }
    values
        .iter()
        .try_fold(Decimal::ZERO, |a, v| a.checked_add(*v))
}

/// The mean, rounded to two decimals more than the most precise input's (at least two): an
/// exact mean of a few values can need 28 digits, which no reader wants.
fn mean(values: &[Decimal]) -> Option<Decimal> {
    let n = Decimal::from(values.len());
    let scale = values.iter().map(Decimal::scale).max().unwrap_or(0).max(2);
    let mean = sum(values)?.checked_div(n)?;
    Some(mean.round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero))
}

fn median(values: &[Decimal]) -> Option<Decimal> {
    let mut sorted = values.to_vec();
    sorted.sort();
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => sorted.get(mid).copied(),
        _ => mean(&[*sorted.get(mid - 1)?, *sorted.get(mid)?]),
    }
}

/// Aggregates provinces' values (those present) to one figure of a region or the nation.
/// `Latest` sums: each province's value is already its latest. `Ratio` is not aggregated
/// from values (see [`ratio_levels`]); here it sums, which callers never ask for.
pub fn aggregate(aggregation: Aggregation, values: &[Decimal]) -> Option<Decimal> {
    match aggregation {
        Aggregation::Average => mean(values),
        Aggregation::Median => median(values),
        Aggregation::Sum | Aggregation::Latest | Aggregation::Ratio => sum(values),
    }
}

/// An indicator's values at each level for one period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Levels {
    /// Province code → value, for provinces that have one.
    pub provinces: BTreeMap<String, Decimal>,
    /// Region → value, for regions with any province value.
    pub regions: BTreeMap<&'static str, Decimal>,
    /// The nation's value.
    pub nation: Option<Decimal>,
}

/// The region of each province code, from the reference data.
fn region_of(code: &str) -> Option<&'static str> {
    let region = &Reference::get().province(code)?.region;
    REGIONS.iter().copied().find(|r| *r == region.as_str())
}

/// Values up the hierarchy from the provinces' values, per `aggregation`.
pub fn levels(aggregation: Aggregation, provinces: BTreeMap<String, Decimal>) -> Levels {
    let mut by_region: BTreeMap<&'static str, Vec<Decimal>> = BTreeMap::new();
    for (code, value) in &provinces {
        if let Some(region) = region_of(code) {
            by_region.entry(region).or_default().push(*value);
        }
    }
    let regions = by_region
        .iter()
        .filter_map(|(r, v)| aggregate(aggregation, v).map(|a| (*r, a)))
        .collect();
    let all: Vec<Decimal> = provinces.values().copied().collect();
    Levels {
        nation: aggregate(aggregation, &all),
        regions,
        provinces,
    }
}

/// Makes a distinct count's region and nation distinct: `overlaps` lists, for each household
/// counted in more than one province (it sold in several in the period), those provinces. The
/// provinces' sums counted it once per province; a region or the nation counts it once.
pub fn discount_overlaps(levels: &mut Levels, overlaps: &[Vec<String>]) {
    for provinces in overlaps {
        let extra = provinces.len().saturating_sub(1);
        if let Some(nation) = levels.nation.as_mut() {
            *nation -= Decimal::from(extra);
        }
        let mut per_region: BTreeMap<&'static str, usize> = BTreeMap::new();
        for code in provinces {
            if let Some(region) = region_of(code) {
                *per_region.entry(region).or_default() += 1;
            }
        }
        for (region, n) in per_region {
            if let Some(value) = levels.regions.get_mut(region) {
                *value -= Decimal::from(n.saturating_sub(1));
            }
        }
    }
}

/// `numerator ÷ denominator × 100`, two decimals; `None` for a zero denominator.
pub fn percent(numerator: Decimal, denominator: Decimal) -> Option<Decimal> {
    if denominator.is_zero() {
        return None;
    }
    let pct = numerator
        .checked_mul(Decimal::ONE_HUNDRED)?
        .checked_div(denominator)?;
    Some(round2(pct))
}

/// Two decimals, always written (`12.50`): percentages are read side by side.
fn round2(value: Decimal) -> Decimal {
    let mut rounded = value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(2);
    rounded
}

/// A ratio indicator (a percentage) at each level: the ratio of the sums of the provinces that
/// have both parts, so a province missing either part does not skew its region or the nation.
/// A level whose denominator sums to zero has no value.
pub fn ratio_levels(
    numerators: &BTreeMap<String, Decimal>,
    denominators: &BTreeMap<String, Decimal>,
) -> Levels {
    let mut provinces = BTreeMap::new();
    let mut regions: BTreeMap<&'static str, (Decimal, Decimal)> = BTreeMap::new();
    let mut nation = (Decimal::ZERO, Decimal::ZERO);
    let mut any = false;
    for (code, num) in numerators {
        let Some(den) = denominators.get(code) else {
            continue;
        };
        if let Some(pct) = percent(*num, *den) {
            provinces.insert(code.clone(), pct);
        }
        if let Some(region) = region_of(code) {
            let r = regions.entry(region).or_default();
            r.0 += *num;
            r.1 += *den;
        }
        nation.0 += *num;
        nation.1 += *den;
        any = true;
    }
    Levels {
        provinces,
        regions: regions
            .into_iter()
            .filter_map(|(r, (n, d))| percent(n, d).map(|p| (r, p)))
            .collect(),
        nation: if any {
            percent(nation.0, nation.1)
        } else {
            None
        },
    }
}

/// Grams as tonnes, exact decimal with three decimals.
pub fn tonnes(grams: i64) -> Decimal {
    let mut t =
        Decimal::new(grams, 6).round_dp_with_strategy(3, RoundingStrategy::MidpointAwayFromZero);
    t.rescale(3);
    t
}

/// `value ÷ target × 100`, two decimals, when the target is positive.
pub fn progress_pct(value: Option<Decimal>, target: Option<Decimal>) -> Option<f64> {
    let (value, target) = (value?, target?);
    if target <= Decimal::ZERO {
        return None;
    }
    percent(value, target).and_then(|p| p.to_string().parse().ok())
}

/// Why a figure has no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// The source service does not exist yet (Q&A).
    NoSource,
    /// Nothing approved for this place and period.
    NotApproved,
    /// The source has no data yet (marketplace facts the partner protocol does not carry yet).
    NoData,
}

impl Missing {
    /// The reason as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Missing::NoSource => "no_source",
            Missing::NotApproved => "not_approved",
            Missing::NoData => "no_data",
        }
    }
}

/// A public figure: a value (approved or derived only), its target and progress.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// The value, exact.
    pub value: Option<Decimal>,
    /// The target, if one is set.
    pub target: Option<Decimal>,
    /// value ÷ target × 100, two decimals, when both exist and the target is positive.
    pub progress_pct: Option<f64>,
    /// Why there is no value.
    pub missing: Option<Missing>,
}

impl Figure {
    /// A figure of `value` against `target`; without a value, `missing` says why.
    pub fn new(value: Option<Decimal>, target: Option<Decimal>, missing: Missing) -> Figure {
        Figure {
            progress_pct: progress_pct(value, target),
            missing: value.is_none().then_some(missing),
            value,
            target,
        }
    }
}

/// Counts of provinces by reporting state for a period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CompletenessCounts {
    /// No report.
    pub missing: u32,
    /// Started, not submitted.
    pub draft: u32,
    /// Waiting for review.
    pub submitted: u32,
    /// Sent back.
    pub returned: u32,
    /// Approved.
    pub approved: u32,
    /// Submitted on time.
    pub on_time: u32,
    /// Overdue.
    pub overdue: u32,
}

/// Whether a province's report is overdue: nothing awaiting review or approved (missing, a
/// draft, or returned and not submitted again) and `today` (Vietnam) is past the deadline.
pub fn overdue(state: &str, deadline: Date, today: Date) -> bool {
    matches!(state, "missing" | "draft" | "returned") && today > deadline
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(grams: i64) -> mpb::SalesFigures {
        mpb::SalesFigures {
            sale_date: "2022-01-03".into(),
            province_code: "79".into(),
            commune_code: String::new(),
            category: "fruit".into(),
            quantity_grams: grams,
            value_vnd: grams * 10,
            orders: 1,
            household_ref: String::new(),
        }
    }

    #[test]
    fn a_sale_moved_to_another_household_and_month_moves_its_trading_count() {
        let mut d = Deltas::default();
        let sold = |day: &str, household: &str| mpb::SalesFigures {
            sale_date: day.into(),
            household_ref: household.into(),
            ..figures(5)
        };
        let event = mpb::SalesRecorded {
            partner: Partner::Voso.to_proto() as i32,
            changes: vec![
                mpb::SalesChange {
                    record_id: "a".into(),
                    previous: Some(sold("2022-01-03", "h1")),
                    current: Some(sold("2022-02-01", "h2")),
                },
                mpb::SalesChange {
                    record_id: "b".into(),
                    previous: None,
                    current: Some(sold("2022-01-09", "")),
                },
            ],
            ..Default::default()
        };
        d.add_sales(&event).unwrap();
        let key = |m: &str, h: &str| ("voso", m.to_string(), "79".to_string(), h.to_string());
        assert_eq!(
            d.household_trading.len(),
            2,
            "a line without household adds none"
        );
        assert_eq!(d.household_trading[&key("202201", "h1")], -1);
        assert_eq!(d.household_trading[&key("202202", "h2")], 1);
        // A day that gives no month is refused before anything is added.
        let mut bad = Deltas::default();
        let event = mpb::SalesRecorded {
            partner: Partner::Voso.to_proto() as i32,
            changes: vec![mpb::SalesChange {
                record_id: "a".into(),
                previous: None,
                current: Some(sold("2022/1/3", "h1")),
            }],
            ..Default::default()
        };
        assert!(bad.add_sales(&event).is_err());
        assert!(bad.is_empty());
    }

    #[test]
    fn a_line_moved_to_another_commune_leaves_the_first_and_joins_the_second() {
        let in_commune = |commune: &str, day: &str| mpb::SalesFigures {
            commune_code: commune.into(),
            sale_date: day.into(),
            ..figures(5)
        };
        let event = mpb::SalesRecorded {
            partner: Partner::Voso.to_proto() as i32,
            changes: vec![
                mpb::SalesChange {
                    record_id: "a".into(),
                    previous: Some(in_commune("26734", "2022-01-03")),
                    current: Some(in_commune("26740", "2022-02-01")),
                },
                mpb::SalesChange {
                    record_id: "b".into(),
                    previous: None,
                    current: Some(in_commune("", "2022-01-09")),
                },
            ],
            ..Default::default()
        };
        let mut d = Deltas::default();
        d.add_sales(&event).unwrap();
        let key = |m: &str, c: &str| ("79".to_string(), m.to_string(), c.to_string(), "voso");
        assert_eq!(d.sales_commune.len(), 2, "a line without commune adds none");
        assert_eq!(d.sales_commune[&key("202201", "26734")], [-5, -50, -1, -1]);
        assert_eq!(d.sales_commune[&key("202202", "26740")], [5, 50, 1, 1]);
        // A commune line without a day to take its month from is refused whole.
        let bad = mpb::SalesRecorded {
            partner: Partner::Voso.to_proto() as i32,
            changes: vec![mpb::SalesChange {
                record_id: "a".into(),
                previous: None,
                current: Some(in_commune("26734", "3/1/2022")),
            }],
            ..Default::default()
        };
        let mut refused = Deltas::default();
        assert!(refused.add_sales(&bad).is_err());
        assert!(refused.is_empty());
        // Households: by registration month and their status now.
        let hh = |commune: &str, status: HouseholdStatus| mpb::HouseholdFigures {
            province_code: "79".into(),
            commune_code: commune.into(),
            registered_on: "2022-03-04".into(),
            status: status as i32,
            ..Default::default()
        };
        let event = mpb::HouseholdsRecorded {
            partner: Partner::Postmart.to_proto() as i32,
            changes: vec![mpb::HouseholdChange {
                household_ref: "h".into(),
                previous: Some(hh("26734", HouseholdStatus::Active)),
                current: Some(hh("", HouseholdStatus::Active)),
            }],
            ..Default::default()
        };
        let mut d = Deltas::default();
        d.add_households(&event).unwrap();
        let active = HouseholdStatus::Active as i64;
        let key = (
            "79".to_string(),
            "202203".to_string(),
            "26734".to_string(),
            "postmart",
            active,
        );
        assert_eq!(d.households_commune.len(), 1);
        assert_eq!(d.households_commune[&key], -1);
    }

    #[test]
    fn a_changed_household_corrects_the_months_before_its_change() {
        // 2026-10-31 23:30 in Vietnam is still October; 2026-10-31 18:00 UTC is November there.
        assert_eq!(recorded_month(1_793_464_200_000), "202610");
        assert_eq!(recorded_month(1_793_469_600_000), "202611");
        assert_eq!(recorded_month(i64::MIN), "000001", "before every month");
        let f =
            |province: &str, status: HouseholdStatus, listed: Option<u32>| mpb::HouseholdFigures {
                province_code: province.into(),
                registered_on: "2026-09-10".into(),
                status: status as i32,
                listed_products: listed,
                ..Default::default()
            };
        let event = mpb::HouseholdsRecorded {
            partner: Partner::Postmart.to_proto() as i32,
            recorded_at_ms: 1_793_469_600_000,
            changes: vec![
                mpb::HouseholdChange {
                    household_ref: "new".into(),
                    previous: None,
                    current: Some(f("79", HouseholdStatus::Active, None)),
                },
                mpb::HouseholdChange {
                    household_ref: "closed".into(),
                    previous: Some(f("01", HouseholdStatus::Active, Some(4))),
                    current: Some(f("01", HouseholdStatus::Closed, Some(6))),
                },
                mpb::HouseholdChange {
                    household_ref: "commune moved".into(),
                    previous: Some(f("08", HouseholdStatus::Active, None)),
                    current: Some(mpb::HouseholdFigures {
                        commune_code: "26734".into(),
                        ..f("08", HouseholdStatus::Active, None)
                    }),
                },
            ],
            ..Default::default()
        };
        let mut d = Deltas::default();
        d.add_households(&event).unwrap();
        let key = |province: &str, status: HouseholdStatus| {
            (
                "202611".to_string(),
                "2026-09-10".to_string(),
                province.to_string(),
                "postmart",
                status as i64,
            )
        };
        // A new household corrects nothing; a changed one adds its previous figures and
        // takes away its current ones; one whose counted figures stay nets to zero.
        assert_eq!(d.household_asof.len(), 3, "{:?}", d.household_asof);
        assert_eq!(
            d.household_asof[&key("01", HouseholdStatus::Active)],
            [1, 4, 1, 0, 0]
        );
        assert_eq!(
            d.household_asof[&key("01", HouseholdStatus::Closed)],
            [-1, -6, -1, 0, 0]
        );
        assert_eq!(
            d.household_asof[&key("08", HouseholdStatus::Active)],
            [0; 5]
        );
        let mut twice = d.clone();
        twice.merge(&d).unwrap();
        assert_eq!(
            twice.household_asof[&key("01", HouseholdStatus::Closed)],
            [-2, -12, -2, 0, 0]
        );
    }

    #[test]
    fn household_stocks_count_reported_values_only() {
        let f = |listed: Option<u32>, digital: Option<bool>| mpb::HouseholdFigures {
            province_code: "01".into(),
            registered_on: "2022-03-04".into(),
            status: HouseholdStatus::Active as i32,
            listed_products: listed,
            has_digital_address: digital,
            ..Default::default()
        };
        let mut d = Deltas::default();
        let event = mpb::HouseholdsRecorded {
            partner: Partner::Postmart.to_proto() as i32,
            changes: vec![
                mpb::HouseholdChange {
                    household_ref: "a".into(),
                    previous: Some(f(Some(3), Some(false))),
                    current: Some(f(Some(10), Some(true))),
                },
                mpb::HouseholdChange {
                    household_ref: "b".into(),
                    previous: None,
                    current: Some(f(None, None)),
                },
                mpb::HouseholdChange {
                    household_ref: "c".into(),
                    previous: None,
                    current: Some(f(Some(0), None)),
                },
            ],
            ..Default::default()
        };
        d.add_households(&event).unwrap();
        let key = ("2022-03-04".to_string(), "01".to_string(), "postmart");
        assert_eq!(d.household_stock[&key], [7, 1, 1, 0]);
        let mut merged = Deltas::default();
        merged.merge(&d).unwrap();
        merged.merge(&d).unwrap();
        assert_eq!(merged.household_stock[&key], [14, 2, 2, 0]);
    }

    #[test]
    fn a_correction_applies_only_the_difference() {
        let mut d = Deltas::default();
        let event = mpb::SalesRecorded {
            partner: Partner::Voso.to_proto() as i32,
            changes: vec![mpb::SalesChange {
                record_id: "a".into(),
                previous: Some(figures(100)),
                current: Some(figures(130)),
            }],
            ..Default::default()
        };
        d.add_sales(&event).unwrap();
        assert_eq!(d.sales_totals[&("79".to_string(), "voso")], [30, 300, 0, 0]);
    }

    #[test]
    fn out_of_range_figures_are_refused_not_overflowed() {
        let mut d = Deltas::default();
        let event = mpb::SalesRecorded {
            partner: Partner::Voso.to_proto() as i32,
            changes: vec![mpb::SalesChange {
                record_id: "a".into(),
                previous: Some(mpb::SalesFigures {
                    quantity_grams: i64::MIN,
                    ..figures(1)
                }),
                current: Some(figures(1)),
            }],
            ..Default::default()
        };
        assert!(d.add_sales(&event).is_err());
        assert!(d.sales_totals.is_empty());
    }

    #[test]
    fn events_without_partner_are_refused() {
        let mut d = Deltas::default();
        assert!(d.add_sales(&mpb::SalesRecorded::default()).is_err());
    }

    #[test]
    fn national_sums_regions_and_progress() {
        let sales = vec![
            SalesTotal {
                province_code: "01".into(),
                partner: "postmart".into(),
                cell: [2_000_000, 5, 2, 1],
            },
            SalesTotal {
                province_code: "79".into(),
                partner: "voso".into(),
                cell: [1_000_000, 7, 3, 1],
            },
        ];
        let households = vec![
            HouseholdTotal {
                province_code: "01".into(),
                partner: "postmart".into(),
                status: 1,
                households: 1_000_000,
            },
            HouseholdTotal {
                province_code: "79".into(),
                partner: "voso".into(),
                status: 3,
                households: 250_000,
            },
        ];
        let n = national(&sales, &households, None);
        assert_eq!(n.sales.total.grams, 3_000_000);
        assert_eq!(n.sales.total.tonnes, 3.0);
        assert_eq!(n.sales.by_partner["voso"].orders, 3);
        assert_eq!(n.households.onboarded, 1_250_000);
        assert_eq!(n.households.active, 1_000_000);
        assert_eq!(n.households.progress_pct, Some(25.0));
        assert_eq!(n.by_region[0].region, "north");
        assert_eq!(n.by_region[0].grams, 2_000_000);
        assert_eq!(n.by_region[2].households_onboarded, 250_000);
    }

    fn params(metric: &str, granularity: &str, from: &str, to: &str) -> SeriesParams {
        SeriesParams {
            metric: Some(metric.into()),
            granularity: Some(granularity.into()),
            from: Some(from.into()),
            to: Some(to.into()),
            ..Default::default()
        }
    }

    #[test]
    fn series_parameters_are_checked_by_name() {
        assert!(params("x", "day", "2022-01-01", "2022-01-02")
            .check()
            .unwrap_err()
            .message
            .contains("metric"));
        assert!(params("orders", "year", "2022-01-01", "2022-01-02")
            .check()
            .unwrap_err()
            .message
            .contains("granularity"));
        assert!(params("orders", "day", "2022-13-01", "2022-01-02")
            .check()
            .unwrap_err()
            .message
            .contains("from"));
        assert!(params("orders", "day", "2022-01-05", "2022-01-02")
            .check()
            .unwrap_err()
            .message
            .contains("before"));
        assert!(params("orders", "day", "2000-01-01", "2030-01-02")
            .check()
            .unwrap_err()
            .message
            .contains("3660"));
        let mut p = params("orders", "day", "2022-01-01", "2022-01-02");
        p.province = Some("02".into());
        assert_eq!(p.check().unwrap().province.as_deref(), Some("08"));
    }

    #[test]
    fn weeks_and_months_are_zero_filled() {
        let q = params("orders", "week", "2022-01-01", "2022-01-20")
            .check()
            .unwrap();
        let day = |s: &str| {
            Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).unwrap()
        };
        let points = bucket(
            &q,
            &[
                (day("2022-01-04"), 2),
                (day("2022-01-09"), 3),
                (day("2021-12-31"), 100),
            ],
        );
        let starts: Vec<&str> = points.iter().map(|p| p.period_start.as_str()).collect();
        assert_eq!(
            starts,
            ["2021-12-27", "2022-01-03", "2022-01-10", "2022-01-17"]
        );
        assert_eq!(points[1].value, 5);
        assert_eq!(points[0].value, 0);
        let q = params("orders", "month", "2021-11-15", "2022-02-01")
            .check()
            .unwrap();
        assert_eq!(bucket(&q, &[]).len(), 4);
    }

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn provinces(values: &[(&str, &str)]) -> BTreeMap<String, Decimal> {
        values.iter().map(|(c, v)| (c.to_string(), d(v))).collect()
    }

    #[test]
    fn source_units_combine_by_aggregation() {
        // Two pre-2025 provinces merged into one: counts add exactly, shares average.
        let units = [d("0.1"), d("0.2")];
        assert_eq!(combine_units(Aggregation::Sum, &units), Some(d("0.3")));
        assert_eq!(combine_units(Aggregation::Latest, &units), Some(d("0.3")));
        assert_eq!(
            combine_units(Aggregation::Average, &[d("50"), d("75.5")])
                .unwrap()
                .to_string(),
            "62.75"
        );
        assert_eq!(combine_units(Aggregation::Sum, &[]), None);
    }

    #[test]
    fn provinces_aggregate_to_regions_and_the_nation() {
        let reference = Reference::get();
        let north = reference
            .provinces()
            .iter()
            .find(|p| p.region == "north")
            .unwrap();
        let south = reference
            .provinces()
            .iter()
            .find(|p| p.region == "south")
            .unwrap();
        let values = provinces(&[(&north.code, "10.5"), (&south.code, "20")]);
        let sum = levels(Aggregation::Sum, values.clone());
        assert_eq!(sum.nation, Some(d("30.5")));
        assert_eq!(sum.regions.get("north"), Some(&d("10.5")));
        assert_eq!(sum.regions.get("central"), None);
        let avg = levels(Aggregation::Average, values.clone());
        // The mean of the provinces that have a value, not of all 34.
        assert_eq!(avg.nation.unwrap().to_string(), "15.25");
        assert_eq!(
            levels(Aggregation::Median, values)
                .nation
                .unwrap()
                .to_string(),
            "15.25"
        );
        assert_eq!(levels(Aggregation::Sum, BTreeMap::new()).nation, None);
    }

    #[test]
    fn ratios_are_ratios_of_sums_at_each_level() {
        let reference = Reference::get();
        let north: Vec<&str> = reference
            .provinces()
            .iter()
            .filter(|p| p.region == "north")
            .map(|p| p.code.as_str())
            .take(2)
            .collect();
        let num = provinces(&[(north[0], "1"), (north[1], "30")]);
        let den = provinces(&[(north[0], "4"), (north[1], "60")]);
        let l = ratio_levels(&num, &den);
        assert_eq!(l.provinces[north[0]].to_string(), "25.00");
        assert_eq!(l.provinces[north[1]].to_string(), "50.00");
        // (1 + 30) / (4 + 60), not the mean of 25 % and 50 %.
        assert_eq!(l.nation.unwrap().to_string(), "48.44");
        assert_eq!(l.regions["north"].to_string(), "48.44");
        // A zero denominator, or a missing part, gives no value rather than a wrong one.
        let zero = ratio_levels(
            &provinces(&[(north[0], "5")]),
            &provinces(&[(north[0], "0")]),
        );
        assert_eq!((zero.nation, zero.provinces.len()), (None, 0));
        let missing = ratio_levels(&provinces(&[(north[0], "5")]), &BTreeMap::new());
        assert_eq!(missing.nation, None);
    }

    #[test]
    fn tonnes_progress_and_missing_reasons() {
        assert_eq!(tonnes(1_234_567_890).to_string(), "1234.568");
        assert_eq!(tonnes(1_500_000).to_string(), "1.500");
        assert_eq!(tonnes(0).to_string(), "0.000");
        assert_eq!(
            progress_pct(Some(d("1250000")), Some(d("5000000"))),
            Some(25.0)
        );
        assert_eq!(progress_pct(Some(d("1")), Some(d("3"))), Some(33.33));
        assert_eq!(progress_pct(Some(d("1")), Some(d("0"))), None);
        assert_eq!(progress_pct(None, Some(d("3"))), None);
        let f = Figure::new(None, Some(d("100")), Missing::NoSource);
        assert_eq!((f.missing, f.progress_pct), (Some(Missing::NoSource), None));
        let f = Figure::new(Some(d("0")), None, Missing::NoSource);
        assert_eq!(f.missing, None);
        assert_eq!(Missing::NoData.as_str(), "no_data");
    }

    #[test]
    fn overdue_means_not_submitted_after_the_deadline() {
        let deadline = time::macros::date!(2026 - 12 - 05);
        let after = time::macros::date!(2026 - 12 - 06);
        assert!(overdue("missing", deadline, after));
        assert!(overdue("draft", deadline, after));
        assert!(!overdue("missing", deadline, deadline));
        assert!(!overdue("submitted", deadline, after));
        assert!(!overdue("approved", deadline, after));
    }

    #[test]
    fn a_household_trading_in_two_provinces_counts_once_above_them() {
        // 79 (south) and 01 (north) and 80 (south): one household sold in 79 and 80, one in
        // 79 and 01.
        let provinces: BTreeMap<String, Decimal> = [("01", 5), ("79", 10), ("80", 4)]
            .into_iter()
            .map(|(c, n)| (c.to_string(), Decimal::from(n)))
            .collect();
        let mut levels = levels(Aggregation::Sum, provinces);
        assert_eq!(levels.nation, Some(Decimal::from(19)));
        let overlaps = vec![
            vec!["79".to_string(), "80".to_string()],
            vec!["01".to_string(), "79".to_string()],
        ];
        discount_overlaps(&mut levels, &overlaps);
        assert_eq!(levels.nation, Some(Decimal::from(17)));
        assert_eq!(levels.regions.get("south"), Some(&Decimal::from(13)));
        assert_eq!(levels.regions.get("north"), Some(&Decimal::from(5)));
        assert_eq!(
            levels.provinces["79"],
            Decimal::from(10),
            "provinces unchanged"
        );
    }
}
