//! The plan's indicators as the public reads them, computed from the gateway's read model
//! (catalogue, targets, reports, approved values) and its rollups on each call
//! ([`StoreReads`]): the in-memory snapshot's views are built from these, and the queries it
//! does not hold are answered by them.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use agriportal_platform::period::{self, Deadlines, Period, PeriodType, VIETNAM};
use agriportal_platform::reference::{Province, Reference, REGIONS};
use agriportal_platform::{Error, Result};
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::indicators::v1::{self as ipb, Source};
use rust_decimal::Decimal;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

use crate::domain::{self, Aggregation, CompletenessCounts, Figure, Levels, Missing};
use crate::error::unknown_province;
use crate::household_facts;
use crate::readmodel::state;
use crate::store::{ReadView, Store, TargetRow, ValueRow};
/// The indicator whose share of onboarded households is `TRAINED_HH_PCT`'s numerator.
const TRAINED_HH: &str = "TRAINED_HH";
/// The derived share of onboarded households that were trained.
const TRAINED_HH_PCT: &str = "TRAINED_HH_PCT";
/// Its denominator, from the marketplace rollups.
const HH_ONBOARDED: &str = "HH_ONBOARDED";
/// Periods in a series.
const SERIES_LENGTH: usize = 12;

/// A place's figure: a province or a region.
#[derive(Clone, Debug, PartialEq)]
pub struct PlaceFigure {
    /// Province code, or the region's name for a region.
    pub code: String,
    /// Official name (the region's name for a region).
    pub name: String,
    /// `north`, `central` or `south`.
    pub region: String,
    /// The figure.
    pub figure: Figure,
    /// Report state for the period, for indicators reported by provinces.
    pub state: Option<String>,
}

/// One indicator for a period.
#[derive(Clone, Debug, PartialEq)]
pub struct IndicatorProgressView {
    /// The indicator, as the catalogue has it.
    pub indicator: ipb::Indicator,
    /// The period.
    pub period: Period,
    /// The national figure.
    pub national: Figure,
    /// Each region, north to south.
    pub regions: Vec<PlaceFigure>,
    /// Every province, in code order.
    pub provinces: Vec<PlaceFigure>,
    /// The last twelve periods up to `period`, oldest first (national, or the province asked).
    pub series: Vec<(Period, Figure)>,
    /// The communes of the province asked, for `period`; `None` without a province (a
    /// national request stays light).
    pub communes: Option<CommunesView>,
}

/// One commune's value of a marketplace-sourced indicator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommuneFigure {
    /// Official 5-digit code.
    pub code: String,
    /// Vietnamese name.
    pub name: String,
    /// The value: 0 when none of the commune's records fall in the period (the rollups
    /// cover every record, so no row is nothing sold or registered).
    pub value: Decimal,
}

/// Why an indicator has no figures by commune.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommunesNote {
    /// Reported by provinces: a report is per province and period.
    ProvinceReported,
    /// Derived from other indicators at province level.
    Derived,
    /// From the marketplaces, but kept by province only (the household facts).
    NotByCommune,
    /// No source yet (Q&A).
    NoSource,
}

impl CommunesNote {
    /// The reason as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            CommunesNote::ProvinceReported => "province_reported",
            CommunesNote::Derived => "derived",
            CommunesNote::NotByCommune => "not_by_commune",
            CommunesNote::NoSource => "no_source",
        }
    }
}

/// A province's communes for one indicator and period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommunesView {
    /// Every commune of the province (reference order), and the province's records that name
    /// no commune (the province's value minus the communes' sum).
    Figures {
        /// The communes, in code order.
        communes: Vec<CommuneFigure>,
        /// Records without a commune code.
        unassigned: Decimal,
    },
    /// No figures by commune, and why.
    None(CommunesNote),
}

/// One indicator in one province, by commune.
#[derive(Clone, Debug, PartialEq)]
pub struct IndicatorCommunesView {
    /// The indicator.
    pub indicator: ipb::Indicator,
    /// The period.
    pub period: Period,
    /// The province's figure.
    pub province: PlaceFigure,
    /// Its communes, or why there are none.
    pub communes: CommunesView,
}

/// The marketplace-sourced indicators kept by commune.
pub const BY_COMMUNE: [&str; 5] = [
    "HH_ONBOARDED",
    "HH_ACTIVE",
    "SALES_TONNES",
    "SALES_VALUE",
    "ORDERS",
];

/// An indicator and its national figure for its latest period (or the period asked).
#[derive(Clone, Debug, PartialEq)]
pub struct IndicatorSummaryView {
    /// The indicator.
    pub indicator: ipb::Indicator,
    /// Its latest period, or the period asked.
    pub period: Period,
    /// The national figure.
    pub national: Figure,
    /// The figure of the province asked, if one was.
    pub province: Option<PlaceFigure>,
}

/// One province's reporting for a period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportingView {
    /// Province code.
    pub code: String,
    /// Official name.
    pub name: String,
    /// `missing`, `draft`, `submitted`, `returned` or `approved`.
    pub state: String,
    /// Last submission, ms; 0 if never.
    pub submitted_at_ms: i64,
    /// Approval, ms; 0 unless approved.
    pub approved_at_ms: i64,
    /// Submitted on or before the deadline.
    pub on_time: bool,
    /// Not submitted and the deadline has passed.
    pub overdue: bool,
}

/// Who has reported for a period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletenessView {
    /// The period.
    pub period: Period,
    /// Its deadline (Vietnam's date, included).
    pub deadline: Date,
    /// Every province, in code order.
    pub provinces: Vec<ReportingView>,
    /// Counts by state.
    pub counts: CompletenessCounts,
}

/// One query's reads: the one committed state it reads from (so its figures, targets and
/// report states agree with each other), and the approved values of each indicator it has
/// needed already.
struct Reads {
    view: ReadView,
    values: HashMap<String, Vec<ValueRow>>,
}

impl Reads {
    /// A query's reads of `store`, from a state committed before this call.
    async fn of(store: &Store) -> Result<Reads> {
        Ok(Reads {
            view: store.read_view().await?,
            values: HashMap::new(),
        })
    }
}

/// The period type of an indicator (unspecified reads as a month, the catalogue's default).
pub fn period_type(indicator: &ipb::Indicator) -> PeriodType {
    match ipb::PeriodType::try_from(indicator.period_type) {
        Ok(ipb::PeriodType::Quarter) => PeriodType::Quarter,
        Ok(ipb::PeriodType::Year) => PeriodType::Year,
        _ => PeriodType::Month,
    }
}

/// Today in Vietnam: the date the default periods are chosen on.
pub fn today() -> Date {
    period::vietnam_today(OffsetDateTime::now_utc())
}

fn parse_period(text: &str) -> Result<Period> {
    Period::parse(text).map_err(Error::invalid)
}

/// A time in ms as RFC 3339 in Vietnam's time (`+07:00`); `None` for 0.
pub fn vietnam_time(ms: i64) -> Option<String> {
    if ms <= 0 {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()?
        .to_offset(VIETNAM)
        .format(&Rfc3339)
        .ok()
}

fn decimal(text: &str) -> Option<Decimal> {
    Decimal::from_str(text.trim()).ok()
}

/// The indicator queries, answered from the store on each call: what the snapshot's views are
/// built from, and what answers the queries it does not hold.
#[derive(Clone)]
pub struct StoreReads {
    store: Arc<Store>,
}

/// An indicator the catalogue does not have.
pub fn unknown_indicator(code: &str) -> Error {
    let shown: String = code.chars().take(40).collect();
    Error::not_found(format!(
        "no indicator has code `{shown}`; GET /api/v1/indicators lists them"
    ))
}

impl StoreReads {
    /// Queries over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        StoreReads { store }
    }

    /// Every indicator's default view (its latest period, national series), in catalogue
    /// order, the catalogue read once: what the snapshot holds.
    pub async fn default_views(&self) -> Result<Vec<IndicatorProgressView>> {
        // One state for every view: the snapshot is one committed state, never a mix.
        let mut reads = Reads::of(&self.store).await?;
        let catalogue = reads.view.catalogue().await?;
        let mut views = Vec::with_capacity(catalogue.len());
        for indicator in &catalogue {
            views.push(
                self.progress(
                    &catalogue,
                    indicator.clone(),
                    ("", ""),
                    SERIES_LENGTH,
                    &mut reads,
                )
                .await?,
            );
        }
        Ok(views)
    }

    /// The catalogue, each indicator with its national figure for its latest period; with
    /// `period`, only the indicators of its type, at that period; with `province`, each with
    /// that province's figure too (an entry form's context in one query, not one per indicator).
    pub async fn indicators(
        &self,
        period: &str,
        province: &str,
    ) -> Result<Vec<IndicatorSummaryView>> {
        let mut reads = Reads::of(&self.store).await?;
        let catalogue = reads.view.catalogue().await?;
        let asked = match period.trim() {
            "" => None,
            text => Some(parse_period(text)?),
        };
        let province = asked_province(province)?;
        let mut out = Vec::with_capacity(catalogue.len());
        for indicator in &catalogue {
            let period = match asked {
                Some(p) if p.kind() != period_type(indicator) => continue,
                Some(p) => p,
                None => self.latest_period(indicator, &mut reads).await?,
            };
            let (levels, missing) = self
                .levels(&catalogue, indicator, period, &mut reads)
                .await?;
            let targets = reads.view.targets(&indicator.code).await?;
            let place = match province {
                Some(p) => {
                    let states = self.states(indicator, period, &mut reads).await?;
                    Some(province_figure(
                        p,
                        &levels,
                        &targets,
                        period,
                        missing,
                        states.as_ref(),
                    ))
                }
                None => None,
            };
            out.push(IndicatorSummaryView {
                national: Figure::new(
                    levels.nation,
                    national_target(indicator, &targets, period),
                    missing,
                ),
                indicator: indicator.clone(),
                period,
                province: place,
            });
        }
        Ok(out)
    }

    /// One indicator for `period` (empty: its latest), every province and region, and the
    /// series of the nation or of `province` (empty: the nation).
    pub async fn indicator(
        &self,
        code: &str,
        period: &str,
        province: &str,
    ) -> Result<IndicatorProgressView> {
        self.indicator_at(code, period, province, SERIES_LENGTH)
            .await
    }

    /// [`Self::indicator`] with a series of at most `series_length` periods (1: the period
    /// alone, for answers that do not show the series and must not pay for it).
    async fn indicator_at(
        &self,
        code: &str,
        period: &str,
        province: &str,
        series_length: usize,
    ) -> Result<IndicatorProgressView> {
        let mut reads = Reads::of(&self.store).await?;
        let catalogue = reads.view.catalogue().await?;
        let indicator = catalogue
            .iter()
            .find(|i| i.code == code.trim())
            .cloned()
            .ok_or_else(|| unknown_indicator(code))?;
        self.progress(
            &catalogue,
            indicator,
            (period, province),
            series_length,
            &mut reads,
        )
        .await
    }

    /// [`Self::indicator_at`] of an indicator of `catalogue`, for the period and province
    /// asked (each empty for the default), read through `reads`.
    async fn progress(
        &self,
        catalogue: &[ipb::Indicator],
        indicator: ipb::Indicator,
        (period, province): (&str, &str),
        series_length: usize,
        reads: &mut Reads,
    ) -> Result<IndicatorProgressView> {
        let province = asked_province(province)?.map(|p| p.code.clone());
        let kind = period_type(&indicator);
        let period = match period.trim() {
            "" => self.latest_period(&indicator, reads).await?,
            text => {
                let p = parse_period(text)?;
                if p.kind() != kind {
                    return Err(Error::invalid(format!(
                        "indicator {} is reported by {}; period \"{p}\" is a {}",
                        indicator.code,
                        kind.as_str(),
                        p.kind().as_str()
                    )));
                }
                p
            }
        };
        let targets = reads.view.targets(&indicator.code).await?;
        let (levels, missing) = self.levels(catalogue, &indicator, period, reads).await?;
        let states = self.states(&indicator, period, reads).await?;
        let provinces = Reference::get()
            .provinces()
            .iter()
            .map(|p| province_figure(p, &levels, &targets, period, missing, states.as_ref()))
            .collect();
        let regions = REGIONS
            .iter()
            .map(|r| PlaceFigure {
                code: r.to_string(),
                name: region_name(r).to_string(),
                region: r.to_string(),
                // Targets are set for the nation and provinces only.
                figure: Figure::new(levels.regions.get(r).copied(), None, missing),
                state: None,
            })
            .collect();
        let mut periods = vec![period];
        while periods.len() < series_length {
            let Some(&first) = periods.first() else { break };
            let before = first.previous();
            if before == first {
                break;
            }
            periods.insert(0, before);
        }
        let communes = match &province {
            Some(code) => Some(self.communes(&indicator, period, code, reads).await?),
            None => None,
        };
        let mut series = Vec::with_capacity(periods.len());
        for p in periods {
            let (value, target, missing) = if p == period {
                (
                    match &province {
                        Some(code) => levels.provinces.get(code).copied(),
                        None => levels.nation,
                    },
                    p,
                    missing,
                )
            } else {
                let (l, m) = self.levels(catalogue, &indicator, p, reads).await?;
                (
                    match &province {
                        Some(code) => l.provinces.get(code).copied(),
                        None => l.nation,
                    },
                    p,
                    m,
                )
            };
            let target = match &province {
                Some(code) => province_target(&targets, target, code),
                None => national_target(&indicator, &targets, target),
            };
            series.push((p, Figure::new(value, target, missing)));
        }
        Ok(IndicatorProgressView {
            national: Figure::new(
                levels.nation,
                national_target(&indicator, &targets, period),
                missing,
            ),
            indicator,
            period,
            regions,
            provinces,
            series,
            communes,
        })
    }

    /// One indicator in one province for `period` (empty: its latest), by commune: what
    /// [`Self::indicator`] answers for that province, without the rest.
    pub async fn indicator_communes(
        &self,
        code: &str,
        period: &str,
        province: &str,
    ) -> Result<IndicatorCommunesView> {
        if province.trim().is_empty() {
            return Err(Error::invalid(
                "province is required: communes are listed for one province at a time",
            ));
        }
        let view = self.indicator_at(code, period, province, 1).await?;
        let wanted = Reference::get()
            .resolve_province(province.trim())
            .map(|m| m.province().code.clone())
            .ok_or_else(|| unknown_province(province))?;
        let place = view
            .provinces
            .into_iter()
            .find(|p| p.code == wanted)
            .ok_or_else(|| unknown_province(province))?;
        let communes = view
            .communes
            .ok_or_else(|| Error::internal("a province's answer has no communes"))?;
        Ok(IndicatorCommunesView {
            indicator: view.indicator,
            period: view.period,
            province: place,
            communes,
        })
    }

    /// The communes of `province` for a marketplace indicator kept by commune, else why not.
    async fn communes(
        &self,
        indicator: &ipb::Indicator,
        period: Period,
        province: &str,
        reads: &mut Reads,
    ) -> Result<CommunesView> {
        let source = Source::try_from(indicator.source).unwrap_or(Source::Unspecified);
        let code = indicator.code.as_str();
        match source {
            Source::Marketplace if BY_COMMUNE.contains(&code) => {}
            Source::Marketplace => return Ok(CommunesView::None(CommunesNote::NotByCommune)),
            Source::Province => return Ok(CommunesView::None(CommunesNote::ProvinceReported)),
            Source::Derived => return Ok(CommunesView::None(CommunesNote::Derived)),
            Source::Qa | Source::Unspecified => {
                return Ok(CommunesView::None(CommunesNote::NoSource))
            }
        }
        let (first, last) = (period.start(), period.end());
        let month = |d: Date| format!("{:04}{:02}", d.year(), u8::from(d.month()));
        // Raw integers per commune (`''`: the whole province), converted once at the end so
        // the unassigned part is exact (tonnes are rounded per figure, never summed rounded).
        let mut raw: BTreeMap<String, i64> = BTreeMap::new();
        match code {
            "HH_ONBOARDED" | "HH_ACTIVE" => {
                let active = code == "HH_ACTIVE";
                let rows = reads
                    .view
                    .households_by_commune(province, &last.to_string(), &month(last))
                    .await?;
                for r in rows {
                    if !active || r.status == HouseholdStatus::Active as i64 {
                        *raw.entry(r.commune_code).or_default() += r.households;
                    }
                }
            }
            _ => {
                let rows = reads
                    .view
                    .sales_by_commune(
                        province,
                        (&first.to_string(), &last.to_string()),
                        (&month(first), &month(last)),
                    )
                    .await?;
                for r in rows {
                    let value = match code {
                        "SALES_TONNES" => r.grams,
                        "SALES_VALUE" => r.value_vnd,
                        _ => r.orders,
                    };
                    *raw.entry(r.commune_code).or_default() += value;
                }
            }
        }
        let as_value = |n: i64| {
            if code == "SALES_TONNES" {
                domain::tonnes(n)
            } else {
                Decimal::from(n)
            }
        };
        let total = raw.get("").copied().unwrap_or(0);
        let mut assigned = 0i64;
        let communes = Reference::get()
            .communes_of(province)
            .into_iter()
            .map(|c| {
                let n = raw.get(&c.code).copied().unwrap_or(0);
                assigned += n;
                CommuneFigure {
                    code: c.code.clone(),
                    name: c.name.clone(),
                    value: as_value(n),
                }
            })
            .collect();
        Ok(CommunesView::Figures {
            communes,
            // Records under a commune code the reference does not place in this province
            // (none pass the marketplace's checks) stay in this part too.
            unassigned: as_value(total - assigned),
        })
    }

    /// Who has reported for `period` (empty: the latest month whose default deadline has
    /// passed).
    pub async fn completeness(&self, period: &str) -> Result<CompletenessView> {
        let today = today();
        let period = match period.trim() {
            "" => latest_month_past_deadline(today)?,
            text => parse_period(text)?,
        };
        let rows = Reads::of(&self.store)
            .await?
            .view
            .reports(&period.to_string())
            .await?;
        // The deadline the indicators service gave this period's reports, else the default.
        let format = time::macros::format_description!("[year]-[month]-[day]");
        let deadline = rows
            .iter()
            .filter_map(|r| Date::parse(&r.deadline, format).ok())
            .max()
            .unwrap_or_else(|| period.deadline(&Deadlines::default()));
        let by_province: BTreeMap<&str, _> =
            rows.iter().map(|r| (r.province_code.as_str(), r)).collect();
        let mut counts = CompletenessCounts::default();
        let provinces = Reference::get()
            .provinces()
            .iter()
            .map(|p| {
                let row = by_province.get(p.code.as_str());
                let state = row.map_or(state::MISSING, |r| r.state.as_str()).to_string();
                let view = ReportingView {
                    code: p.code.clone(),
                    name: p.name.clone(),
                    overdue: domain::overdue(&state, deadline, today),
                    submitted_at_ms: row.map_or(0, |r| r.submitted_at_ms),
                    approved_at_ms: row.map_or(0, |r| r.approved_at_ms),
                    on_time: row.is_some_and(|r| r.on_time == 1 && r.submitted_at_ms > 0),
                    state,
                };
                match view.state.as_str() {
                    state::DRAFT => counts.draft += 1,
                    state::SUBMITTED => counts.submitted += 1,
                    state::RETURNED => counts.returned += 1,
                    state::APPROVED => counts.approved += 1,
                    _ => counts.missing += 1,
                }
                counts.on_time += u32::from(view.on_time);
                counts.overdue += u32::from(view.overdue);
                view
            })
            .collect();
        Ok(CompletenessView {
            period,
            deadline,
            provinces,
            counts,
        })
    }

    /// Each province's report state for `period`, for an indicator reported by provinces.
    async fn states(
        &self,
        indicator: &ipb::Indicator,
        period: Period,
        reads: &mut Reads,
    ) -> Result<Option<BTreeMap<String, String>>> {
        if indicator.source != Source::Province as i32 {
            return Ok(None);
        }
        let rows = reads.view.reports(&period.to_string()).await?;
        Ok(Some(
            rows.into_iter()
                .map(|r| (r.province_code, r.state))
                .collect(),
        ))
    }

    async fn approved<'a>(&self, code: &str, reads: &'a mut Reads) -> Result<&'a [ValueRow]> {
        if !reads.values.contains_key(code) {
            let rows = reads.view.approved_values(code).await?;
            reads.values.insert(code.to_string(), rows);
        }
        Ok(reads
            .values
            .get(code)
            .map(Vec::as_slice)
            .unwrap_or_default())
    }

    /// The latest period of an indicator's type with a public value, else the latest open.
    async fn latest_period(&self, indicator: &ipb::Indicator, reads: &mut Reads) -> Result<Period> {
        let kind = period_type(indicator);
        let today = today();
        let fallback = Period::latest_open(kind, today)
            .ok_or_else(|| Error::internal("today is outside the years periods may be in"))?;
        let source = Source::try_from(indicator.source).unwrap_or(Source::Unspecified);
        let found = match source {
            Source::Province => latest_of(self.approved(&indicator.code, reads).await?, kind),
            Source::Derived if indicator.code == TRAINED_HH_PCT => {
                latest_of(self.approved(TRAINED_HH, reads).await?, kind)
            }
            Source::Marketplace => {
                let format = time::macros::format_description!("[year]-[month]-[day]");
                let last = reads.view.marketplace_last_day().await?;
                let day = last.and_then(|d| Date::parse(&d, format).ok());
                // Never a period that has not started: a record dated ahead is not the latest.
                day.map(|d| d.min(today))
                    .and_then(|d| Period::containing(kind, d))
            }
            _ => None,
        };
        Ok(found.unwrap_or(fallback))
    }

    /// An indicator's values at every level for `period`, and why a missing one is missing.
    async fn levels(
        &self,
        catalogue: &[ipb::Indicator],
        indicator: &ipb::Indicator,
        period: Period,
        reads: &mut Reads,
    ) -> Result<(Levels, Missing)> {
        let aggregation = Aggregation::from_proto(indicator.aggregation);
        let source = Source::try_from(indicator.source).unwrap_or(Source::Unspecified);
        Ok(match source {
            Source::Province => {
                let rows = self.approved(&indicator.code, reads).await?;
                let values = province_values(rows, aggregation, period);
                (domain::levels(aggregation, values), Missing::NotApproved)
            }
            Source::Marketplace => match self.marketplace(&indicator.code, period, reads).await? {
                Some(values) => {
                    let mut levels = domain::levels(aggregation, values);
                    if indicator.measure == "flow_distinct" {
                        // A distinct count (HH_TRADING): a household that sold in two
                        // provinces is one household in its region and in the nation.
                        let overlaps = household_facts::trading_overlaps(&mut reads.view, period)
                            .await?
                            .unwrap_or_default();
                        domain::discount_overlaps(&mut levels, &overlaps);
                    }
                    (levels, Missing::NoData)
                }
                None => (Levels::default(), Missing::NoData),
            },
            Source::Derived if indicator.code == TRAINED_HH_PCT => {
                let of_numerator = catalogue
                    .iter()
                    .find(|i| i.code == TRAINED_HH)
                    .map_or(Aggregation::Sum, |i| Aggregation::from_proto(i.aggregation));
                let rows = self.approved(TRAINED_HH, reads).await?;
                let numerators = province_values(rows, of_numerator, period);
                let denominators = self.marketplace(HH_ONBOARDED, period, reads).await?;
                let levels = domain::ratio_levels(&numerators, &denominators.unwrap_or_default());
                (levels, Missing::NotApproved)
            }
            Source::Derived => (Levels::default(), Missing::NoData),
            Source::Qa | Source::Unspecified => (Levels::default(), Missing::NoSource),
        })
    }

    /// A marketplace indicator's value in every province for `period`, from the gateway's own
    /// rollups: stocks as they were at the period's last day, flows over its days. Every
    /// province has a value (the rollups cover the country: no row is none sold). `None`: no
    /// data.
    async fn marketplace(
        &self,
        code: &str,
        period: Period,
        reads: &mut Reads,
    ) -> Result<Option<BTreeMap<String, Decimal>>> {
        let (first, last) = (period.start().to_string(), period.end().to_string());
        let mut by_province: BTreeMap<String, Decimal> = Reference::get()
            .provinces()
            .iter()
            .map(|p| (p.code.clone(), Decimal::ZERO))
            .collect();
        let mut add = |province: &str, value: Decimal| {
            if let Some(v) = by_province.get_mut(province) {
                *v += value;
            }
        };
        match code {
            "HH_ONBOARDED" | "HH_ACTIVE" => {
                // Households registered by the period's end, as they were at its end (the
                // province and status of their last change recorded by then), so a later
                // change leaves the figures of the months before it alone.
                let active = code == "HH_ACTIVE";
                let Some(month) = Period::containing(PeriodType::Month, period.end()) else {
                    return Ok(None);
                };
                let counted = reads
                    .view
                    .households_at_end(&month.to_string(), &last)
                    .await?;
                for (province, status, n) in counted {
                    if !active || status == HouseholdStatus::Active as i64 {
                        add(&province, Decimal::from(n));
                    }
                }
            }
            "SALES_TONNES" | "SALES_VALUE" | "ORDERS" => {
                for s in reads.view.sales_between(&first, &last).await? {
                    let value = match code {
                        "SALES_TONNES" => domain::tonnes(s.grams),
                        "SALES_VALUE" => Decimal::from(s.value_vnd),
                        _ => Decimal::from(s.orders),
                    };
                    add(&s.province_code, value);
                }
            }
            "HH_TRADING" | "PRODUCTS_LISTED" | "DIGITAL_ADDR_HH" => {
                let facts = match code {
                    "HH_TRADING" => {
                        household_facts::trading_households(&mut reads.view, period).await?
                    }
                    "PRODUCTS_LISTED" => {
                        household_facts::listed_products(&mut reads.view, period).await?
                    }
                    _ => {
                        household_facts::digital_address_households(&mut reads.view, period).await?
                    }
                };
                let Some(facts) = facts else {
                    return Ok(None);
                };
                for (province, n) in facts {
                    add(&province, Decimal::from(n));
                }
            }
            _ => return Ok(None),
        }
        if code == "SALES_TONNES" {
            // Tonnes are written with three decimals everywhere, a province without sales too.
            for v in by_province.values_mut() {
                v.rescale(3);
            }
        }
        Ok(Some(by_province))
    }
}

/// The province a query asks about (a pre-2025 code is mapped to its province); `None` for
/// none asked.
fn asked_province(code: &str) -> Result<Option<&'static Province>> {
    match code.trim() {
        "" => Ok(None),
        p => Ok(Some(
            Reference::get()
                .resolve_province(p)
                .ok_or_else(|| unknown_province(p))?
                .province(),
        )),
    }
}

/// A province's figure of an indicator for `period`, with its report state when provinces
/// report the indicator (`states`; no row is a missing report).
fn province_figure(
    p: &Province,
    levels: &Levels,
    targets: &[TargetRow],
    period: Period,
    missing: Missing,
    states: Option<&BTreeMap<String, String>>,
) -> PlaceFigure {
    PlaceFigure {
        code: p.code.clone(),
        name: p.name.clone(),
        region: p.region.clone(),
        figure: Figure::new(
            levels.provinces.get(&p.code).copied(),
            province_target(targets, period, &p.code),
            missing,
        ),
        state: states.map(|s| {
            s.get(&p.code)
                .cloned()
                .unwrap_or_else(|| state::MISSING.to_string())
        }),
    }
}

/// A macro region's Vietnamese name, as tables and CSV files show it.
fn region_name(region: &str) -> &str {
    match region {
        "north" => "Miền Bắc",
        "central" => "Miền Trung",
        "south" => "Miền Nam",
        other => other,
    }
}

/// The latest period of `kind` among approved values.
fn latest_of(rows: &[ValueRow], kind: PeriodType) -> Option<Period> {
    rows.iter()
        .filter_map(|r| Period::parse(&r.period).ok())
        .filter(|p| p.kind() == kind)
        .max()
}

/// Each province's value of an indicator reported by provinces for `period`: its source
/// units combined (pre-2025 provinces merged into it, each once). For `latest`, each
/// province's latest period up to `period` that has a value.
fn province_values(
    rows: &[ValueRow],
    aggregation: Aggregation,
    period: Period,
) -> BTreeMap<String, Decimal> {
    let mut chosen: BTreeMap<&str, Period> = BTreeMap::new();
    for r in rows {
        let Ok(p) = Period::parse(&r.period) else {
            continue;
        };
        let wanted = if aggregation == Aggregation::Latest {
            p.kind() == period.kind() && p <= period
        } else {
            p == period
        };
        if wanted {
            let best = chosen.entry(r.province_code.as_str()).or_insert(p);
            *best = (*best).max(p);
        }
    }
    let mut units: BTreeMap<String, Vec<Decimal>> = BTreeMap::new();
    for r in rows {
        let chosen_period = chosen.get(r.province_code.as_str());
        if chosen_period.map(|p| p.to_string()) == Some(r.period.clone()) {
            if let Some(v) = decimal(&r.value) {
                units.entry(r.province_code.clone()).or_default().push(v);
            }
        }
    }
    units
        .into_iter()
        .filter_map(|(code, v)| domain::combine_units(aggregation, &v).map(|c| (code, c)))
        .collect()
}

/// The national target for `period`'s year: the one set for the nation, else the catalogue's.
fn national_target(
    indicator: &ipb::Indicator,
    targets: &[TargetRow],
    period: Period,
) -> Option<Decimal> {
    targets
        .iter()
        .find(|t| t.year == i64::from(period.year_number()) && t.province_code.is_empty())
        .and_then(|t| decimal(&t.value))
        .or_else(|| decimal(&indicator.national_target))
}

/// A province's target for `period`'s year, if one is set.
fn province_target(targets: &[TargetRow], period: Period, province: &str) -> Option<Decimal> {
    targets
        .iter()
        .find(|t| t.year == i64::from(period.year_number()) && t.province_code == province)
        .and_then(|t| decimal(&t.value))
}

/// The latest month whose default deadline has passed on `today`.
fn latest_month_past_deadline(today: Date) -> Result<Period> {
    let mut month = Period::latest_open(PeriodType::Month, today)
        .ok_or_else(|| Error::internal("today is outside the years periods may be in"))?;
    // The month just ended is still within its deadline until the 5th; one step back is
    // always past it.
    for _ in 0..2 {
        if month.deadline(&Deadlines::default()) < today {
            break;
        }
        month = month.previous();
    }
    Ok(month)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn row(province: &str, period: &str, source: &str, value: &str) -> ValueRow {
        ValueRow {
            province_code: province.into(),
            period: period.into(),
            source_province_code: source.into(),
            value: value.into(),
        }
    }

    #[test]
    fn latest_takes_each_provinces_latest_period_up_to_the_one_asked() {
        let rows = [
            row("01", "202110", "", "5"),
            row("01", "202112", "", "7"),
            row("08", "202110", "02", "1"),
            row("08", "202110", "08", "2"),
            row("08", "202201", "", "100"),
            row("04", "2021Q4", "", "9"),
        ];
        let asked = Period::parse("202111").unwrap();
        let latest = province_values(&rows, Aggregation::Latest, asked);
        // 01: October (December is after the month asked); 08: its two source units of
        // October, each once; 04 reports quarters, not months.
        assert_eq!(
            latest.get("01").map(|v| v.to_string()).as_deref(),
            Some("5")
        );
        assert_eq!(
            latest.get("08").map(|v| v.to_string()).as_deref(),
            Some("3")
        );
        assert_eq!(latest.len(), 2);
        let exact = province_values(&rows, Aggregation::Sum, asked);
        assert!(exact.is_empty());
        let december = province_values(&rows, Aggregation::Sum, Period::parse("202112").unwrap());
        assert_eq!(december.len(), 1);
    }

    #[test]
    fn the_default_completeness_month_is_past_its_deadline() {
        // November's deadline is 5 December: until it has passed, October is the default.
        assert_eq!(
            latest_month_past_deadline(date!(2026 - 12 - 02))
                .unwrap()
                .to_string(),
            "202610"
        );
        assert_eq!(
            latest_month_past_deadline(date!(2026 - 12 - 05))
                .unwrap()
                .to_string(),
            "202610"
        );
        assert_eq!(
            latest_month_past_deadline(date!(2026 - 12 - 06))
                .unwrap()
                .to_string(),
            "202611"
        );
    }

    #[test]
    fn targets_for_the_periods_year_then_the_catalogue() {
        let indicator = ipb::Indicator {
            national_target: "5000000".into(),
            ..Default::default()
        };
        let targets = [
            TargetRow {
                indicator_code: "X".into(),
                year: 2026,
                province_code: String::new(),
                value: "4000000".into(),
            },
            TargetRow {
                indicator_code: "X".into(),
                year: 2026,
                province_code: "79".into(),
                value: "300000".into(),
            },
        ];
        let nov = Period::parse("202611").unwrap();
        let next = Period::parse("202701").unwrap();
        assert_eq!(
            national_target(&indicator, &targets, nov),
            Some(Decimal::from(4_000_000))
        );
        assert_eq!(
            national_target(&indicator, &targets, next),
            Some(Decimal::from(5_000_000))
        );
        assert_eq!(
            province_target(&targets, nov, "79"),
            Some(Decimal::from(300_000))
        );
        assert_eq!(province_target(&targets, nov, "01"), None);
        assert_eq!(vietnam_time(0), None);
        assert_eq!(
            vietnam_time(1_764_547_200_000).as_deref(),
            Some("2025-12-01T07:00:00+07:00")
        );
    }
}
