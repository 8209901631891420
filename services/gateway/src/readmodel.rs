//! Event intake of the indicators service: its seven events, turned into the changes they make
//! to the gateway's read model of the plan's indicators (catalogue, targets, report states and
//! approved values). The kit's consumer claims each event in the inbox and calls
//! [`IndicatorsReadModel::apply`] in the same transaction, so a redelivered event changes
//! nothing; the order of events is restored by each report's `sequence` (and the catalogue's
//! `revision`, the targets' `set_at_ms`), so they may arrive in any order.

use std::sync::Arc;

use agriportal_platform::bus::Message;
use agriportal_platform::consumer::{Decoded, Handler, Subscriptions};
use agriportal_platform::period::Period;
use agriportal_platform::reference::Reference;
use agriportal_platform::storage::Tx;
use agriportal_platform::Result;
use agriportal_proto::indicators::v1 as ipb;
use agriportal_proto::{Event, Topic};
use async_trait::async_trait;
use rust_decimal::Decimal;

use crate::snapshot::Snapshots;
use crate::store::Store;

/// A report's state as the public reads it.
pub mod state {
    /// No report for the period.
    pub const MISSING: &str = "missing";
    /// Started (or reopened), not submitted.
    pub const DRAFT: &str = "draft";
    /// Waiting for review.
    pub const SUBMITTED: &str = "submitted";
    /// Sent back to the province.
    pub const RETURNED: &str = "returned";
    /// Approved: its values are public.
    pub const APPROVED: &str = "approved";
}

/// One approved value of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovedValue {
    /// Indicator code.
    pub indicator_code: String,
    /// `''`, or the pre-2025 province code the value was entered under.
    pub source_province_code: String,
    /// Exact decimal text (checked to parse).
    pub value: String,
}

/// What a report event changes: the report's state, applied only if `sequence` is newer than
/// the stored one. `None` fields keep what is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportChange {
    /// Province code since 2025.
    pub province_code: String,
    /// Period id.
    pub period: String,
    /// New state (see [`state`]).
    pub state: &'static str,
    /// Report version.
    pub version: i64,
    /// The report's change counter.
    pub sequence: i64,
    /// Deadline `YYYY-MM-DD`; empty keeps the stored one.
    pub deadline: String,
    /// Submission time, ms.
    pub submitted_at_ms: Option<i64>,
    /// Approval time, ms (0 clears it).
    pub approved_at_ms: Option<i64>,
    /// Submitted on time.
    pub on_time: Option<bool>,
    /// `Some`: the report's approved values become these (empty on reopening: withdrawn).
    pub values: Option<Vec<ApprovedValue>>,
}

/// What one indicators event changes.
#[derive(Clone, Debug, PartialEq)]
pub enum IndicatorChange {
    /// An indicator as it is now (kept only if its revision is newer).
    Catalogue(ipb::Indicator),
    /// A target set or removed (kept only if set later than the stored one).
    Target(ipb::Target),
    /// A report's new state.
    Report(ReportChange),
}

impl IndicatorChange {
    /// The row it changes: (table, key parts), for applying a batch in key order.
    fn key(&self) -> (u8, String, String, String) {
        match self {
            IndicatorChange::Catalogue(i) => (0, i.code.clone(), String::new(), String::new()),
            IndicatorChange::Target(t) => (
                1,
                t.indicator_code.clone(),
                t.year.to_string(),
                t.province_code.clone(),
            ),
            IndicatorChange::Report(r) => {
                (2, r.province_code.clone(), r.period.clone(), String::new())
            }
        }
    }
}

fn province(code: &str) -> std::result::Result<String, String> {
    Reference::get()
        .resolve_province(code)
        .map(|p| p.province().code.clone())
        .ok_or_else(|| format!("unknown province code `{code}`"))
}

fn period(id: &str) -> std::result::Result<String, String> {
    Period::parse(id).map(|p| p.to_string())
}

fn sequence(value: u64) -> std::result::Result<i64, String> {
    i64::try_from(value).map_err(|_| format!("sequence {value} is out of range"))
}

#[allow(clippy::too_many_arguments)]
fn report(
    province_code: &str,
    period_id: &str,
    state: &'static str,
    version: u32,
    seq: u64,
    deadline: &str,
    times: (Option<i64>, Option<i64>, Option<bool>),
    values: Option<Vec<ApprovedValue>>,
) -> std::result::Result<IndicatorChange, String> {
    Ok(IndicatorChange::Report(ReportChange {
        province_code: province(province_code)?,
        period: period(period_id)?,
        state,
        version: i64::from(version),
        sequence: sequence(seq)?,
        deadline: deadline.to_string(),
        submitted_at_ms: times.0,
        approved_at_ms: times.1,
        on_time: times.2,
        values,
    }))
}

fn approved_values(
    values: &[ipb::ReportedValue],
) -> std::result::Result<Vec<ApprovedValue>, String> {
    values
        .iter()
        .map(|v| {
            v.value.trim().parse::<Decimal>().map_err(|_| {
                format!(
                    "approved value `{}` of {} is not a decimal",
                    v.value, v.indicator_code
                )
            })?;
            Ok(ApprovedValue {
                indicator_code: v.indicator_code.clone(),
                source_province_code: v.source_province_code.clone(),
                value: v.value.trim().to_string(),
            })
        })
        .collect()
}

/// The indicators topics the read model reads, each turned into its change. A payload that
/// decodes but names an unknown province or period, or carries a value that is not a decimal,
/// is refused here, and so parked.
pub fn subscriptions() -> Subscriptions<IndicatorChange> {
    Subscriptions::new()
        .on(ipb::REPORT_STARTED, |e| {
            let times = (None, None, None);
            report(
                &e.province_code,
                &e.period,
                state::DRAFT,
                e.version,
                e.sequence,
                &e.deadline,
                times,
                None,
            )
        })
        .on(ipb::REPORT_SUBMITTED, |e| {
            let times = (Some(e.at_ms), Some(0), Some(e.on_time));
            report(
                &e.province_code,
                &e.period,
                state::SUBMITTED,
                e.version,
                e.sequence,
                &e.deadline,
                times,
                None,
            )
        })
        .on(ipb::REPORT_APPROVED, |e| {
            let values = approved_values(&e.values)?;
            let submitted = (e.submitted_at_ms > 0).then_some(e.submitted_at_ms);
            let times = (submitted, Some(e.at_ms), Some(e.on_time));
            report(
                &e.province_code,
                &e.period,
                state::APPROVED,
                e.version,
                e.sequence,
                &e.deadline,
                times,
                Some(values),
            )
        })
        .on(ipb::REPORT_RETURNED, |e| {
            let times = (None, Some(0), None);
            report(
                &e.province_code,
                &e.period,
                state::RETURNED,
                e.version,
                e.sequence,
                &e.deadline,
                times,
                None,
            )
        })
        .on(ipb::REPORT_REOPENED, |e| {
            // A reopened report is a new version being edited again: a draft, its values withdrawn.
            let times = (None, Some(0), None);
            report(
                &e.province_code,
                &e.period,
                state::DRAFT,
                e.version,
                e.sequence,
                &e.deadline,
                times,
                Some(Vec::new()),
            )
        })
        .on(ipb::TARGET_SET, |e| {
            let target = e.target.ok_or("a target_set event without its target")?;
            if !target.province_code.is_empty() {
                province(&target.province_code)?;
            }
            if !target.value.is_empty() && target.value.trim().parse::<Decimal>().is_err() {
                return Err(format!("target `{}` is not a decimal", target.value));
            }
            Ok(IndicatorChange::Target(target))
        })
        .on(ipb::CATALOGUE_CHANGED, |e| {
            let indicator = e
                .indicator
                .ok_or("a catalogue_changed event without its indicator")?;
            if indicator.code.is_empty() {
                return Err("a catalogue_changed event with an empty indicator code".to_string());
            }
            Ok(IndicatorChange::Catalogue(indicator))
        })
}

/// Decodes one bus message as the consumer does.
pub fn decode(message: &Message) -> std::result::Result<Decoded<IndicatorChange>, String> {
    subscriptions().decode(message)
}

/// Decodes `event` of `topic` exactly as the consumer receives it from the bus (for tests and
/// tools that hold the event rather than the message).
pub fn decode_event<M: Event>(
    topic: Topic<M>,
    event: &M,
) -> std::result::Result<Decoded<IndicatorChange>, String> {
    decode(&Message {
        subject: topic.subject().to_string(),
        id: event.event_id().to_string(),
        headers: Vec::new(),
        payload: topic.encode(event).into(),
    })
}

/// Applies the indicators service's events to the gateway's read model.
pub struct IndicatorsReadModel {
    store: Arc<Store>,
    snapshots: Option<Arc<Snapshots>>,
}

impl IndicatorsReadModel {
    /// The read model in `store`.
    pub fn new(store: Arc<Store>) -> Self {
        IndicatorsReadModel {
            store,
            snapshots: None,
        }
    }

    /// Tells `snapshots` of every commit, so the indicators' views in memory are rebuilt at
    /// once rather than at the next poll (as the rollup does for the figures).
    pub fn notifying(mut self, snapshots: Arc<Snapshots>) -> Self {
        self.snapshots = Some(snapshots);
        self
    }
}

#[async_trait]
impl Handler for IndicatorsReadModel {
    type Event = IndicatorChange;

    fn subscriptions(&self) -> Subscriptions<IndicatorChange> {
        subscriptions()
    }

    async fn apply(&self, tx: &mut Tx, events: &[&Decoded<IndicatorChange>]) -> Result<()> {
        // Rows in key order, so replicas applying overlapping batches at once lock them in the
        // same order and cannot deadlock; within one key the counters decide, not the order.
        let mut ordered: Vec<&IndicatorChange> = events.iter().map(|e| &e.event).collect();
        ordered.sort_by_cached_key(|change| change.key());
        for change in ordered {
            self.store.apply_indicator_change(tx, change).await?;
        }
        // In the same transaction: the snapshot's version moves exactly with the commit.
        self.store.indicators_changed(tx).await
    }

    fn committed(&self, _applied: usize) {
        if let Some(snapshots) = &self.snapshots {
            snapshots.changed();
        }
    }
}
