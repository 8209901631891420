//! The logic the gRPC adapter calls: who may do what, then the rules (`domain`), then the
//! store, each change in one transaction with its audit entries and events.
//!
//! Rights, decided here once:
//! - admin tokens (the central working group): everything, for every province, including
//!   entering and importing values on a province's behalf;
//! - province tokens: their own province's reports only, read and write (another province's
//!   report, even to read it, is PERMISSION_DENIED naming both provinces); they may also read
//!   the chase list (`GetCompleteness`) of every province, which carries states and times but
//!   never values, so that a department sees where it stands among its peers;
//! - partner tokens: the catalogue, targets and org units only (`ListIndicators`,
//!   `ListTargets`, `ListOrgUnits`: the plan's public figures and reference data); every other
//!   rpc is PERMISSION_DENIED;
//! - no token: UNAUTHENTICATED (the adapter's authentication).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use agriportal_platform::auth::{Claims, Role};
use agriportal_platform::period::{self, Deadlines, Period, PeriodType};
use agriportal_platform::reference::{ProvinceMatch, Reference};
use agriportal_platform::storage::{now_ms, Tx};
use agriportal_platform::{Error, ErrorCode, Result};
use agriportal_proto::indicators::v1 as pb;
use pb::ReportState;
use unicode_normalization::UnicodeNormalization;

use crate::config::{MAX_COMMENT_CHARS, MAX_VALUES_PER_SAVE};
use crate::domain::{self, Action};
use crate::error;
use crate::store::{event_id, ReportRow, Store, ValueRow};

/// What a caller may act on.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    /// Every province.
    Admin,
    /// One province (its 2025 code).
    Province(String),
}

/// The token's subject, as the audit trail and targets name it.
pub fn actor(claims: &Claims) -> String {
    match &claims.role {
        Role::Admin => "admin".to_string(),
        Role::Province { province } => format!("province:{province}"),
        Role::Partner { partner } => format!("partner:{partner}"),
        Role::Service { service } => format!("service:{service}"),
    }
}

fn scope(claims: &Claims, rpc: &str) -> Result<Scope> {
    match &claims.role {
        Role::Admin => Ok(Scope::Admin),
        Role::Province { province } => Ok(Scope::Province(province.clone())),
        Role::Partner { .. } => Err(error::partner_denied(rpc)),
        Role::Service { .. } => Err(error::service_denied(rpc)),
    }
}

fn require_admin(claims: &Claims, rpc: &str) -> Result<()> {
    match &claims.role {
        Role::Admin => Ok(()),
        Role::Partner { .. } => Err(error::partner_denied(rpc)),
        Role::Province { .. } => Err(error::admin_only(rpc, claims)),
        Role::Service { .. } => Err(error::service_denied(rpc)),
    }
}

fn parse_period(text: &str) -> Result<Period> {
    // Period ids are short; a long text is quoted shortened rather than echoed whole.
    if text.trim().len() > 16 {
        return Err(Error::invalid(format!(
            "period \"{}\" is not a period id: write a month as 202611, a quarter as 2026Q4 or a year as 2026",
            domain::quote(text.trim())
        )));
    }
    Period::parse(text).map_err(Error::invalid)
}

fn check_comment(comment: &str) -> Result<String> {
    let comment: String = comment.trim().nfc().collect();
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(Error::invalid(format!(
            "a comment has at most {MAX_COMMENT_CHARS} characters; this one has {}",
            comment.chars().count()
        )));
    }
    Ok(comment)
}

/// Where a value goes: the report of `province` (2025 code) for `period`, entered for
/// `source` (a pre-2025 code, or empty).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Unit {
    province: String,
    source: String,
    period: Period,
}

impl Unit {
    fn key(&self) -> String {
        format!("{}/{}", self.province, self.period)
    }
}

/// One value to write: `None` removes it.
#[derive(Clone, Debug)]
struct Change {
    indicator_code: String,
    source: String,
    value: Option<String>,
    comment: String,
}

/// The indicators service's logic.
pub struct Reports {
    store: Arc<Store>,
    deadlines: Deadlines,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl Reports {
    /// The service over `store`, with `deadlines`, on the system clock.
    pub fn new(store: Arc<Store>, deadlines: Deadlines) -> Self {
        Reports {
            store,
            deadlines,
            clock: Arc::new(now_ms),
        }
    }

    /// The same service on another clock (ms since the Unix epoch), for tests of deadlines.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    fn today(&self) -> time::Date {
        period::vietnam_date_of_ms(self.now())
    }

    fn deadline(&self, period: Period) -> String {
        domain::iso_date(period.deadline(&self.deadlines))
    }

    /// Resolves a province code and period for writing: the period must be open, a pre-2025
    /// code is accepted only for periods before the merger, and a province token only for its
    /// own province.
    fn unit_for_write(
        &self,
        scope: &Scope,
        province_code: &str,
        period_text: &str,
    ) -> Result<Unit> {
        let period = parse_period(period_text)?;
        if !period.is_open(self.today()) {
            return Err(Error::new(
                ErrorCode::FailedPrecondition,
                format!(
                    "period {period} opens on {}: values for it can be entered from that day",
                    domain::vn_date(period.opens_on())
                ),
            ));
        }
        let code = province_code.trim();
        let (province, source) = match Reference::get().resolve_province(code) {
            None => return Err(unknown_province(code)),
            // Before the merger every code, a current one too, named a pre-2025 province (each
            // 2025 code is also the pre-2025 code of one of its parts), so history is kept per
            // old unit and a merged province's parts never count twice.
            Some(ProvinceMatch::Current(p)) if period.before_merger() => (p, code.to_string()),
            Some(ProvinceMatch::Current(p)) => (p, String::new()),
            Some(ProvinceMatch::Merged(p)) if period.before_merger() => (p, code.to_string()),
            Some(ProvinceMatch::Merged(p)) => {
                return Err(Error::invalid(format!(
                    "province code {code} is a pre-2025 code: that province merged into {} \
                     ({}) on 1 July 2025; use code {} for period {period}",
                    p.name, p.code, p.code
                )))
            }
        };
        check_scope(scope, &province.code)?;
        Ok(Unit {
            province: province.code.clone(),
            source,
            period,
        })
    }

    /// Resolves a report reference for reading or reviewing (a pre-2025 code names the
    /// province it merged into).
    fn unit_for_read(&self, scope: &Scope, province_code: &str, period_text: &str) -> Result<Unit> {
        let period = parse_period(period_text)?;
        let code = province_code.trim();
        let province = Reference::get()
            .resolve_province(code)
            .ok_or_else(|| unknown_province(code))?
            .province();
        check_scope(scope, &province.code)?;
        Ok(Unit {
            province: province.code.clone(),
            source: String::new(),
            period,
        })
    }

    async fn catalogue(&self) -> Result<HashMap<String, pb::Indicator>> {
        Ok(self
            .store
            .indicators()
            .await?
            .into_iter()
            .map(|i| (i.code.clone(), i))
            .collect())
    }

    /// The catalogue. Any signed-in caller.
    pub async fn list_indicators(&self, _claims: &Claims) -> Result<Vec<pb::Indicator>> {
        self.store.indicators().await
    }

    /// The org units under `parent` at `level`, from the reference data. Any signed-in
    /// caller, like the catalogue: it is the same public reference the pages show.
    pub fn list_org_units(
        &self,
        _claims: &Claims,
        request: &pb::ListOrgUnitsRequest,
    ) -> Result<Vec<pb::OrgUnit>> {
        let level = pb::OrgUnitLevel::try_from(request.level).map_err(|_| {
            Error::invalid(format!(
                "level {} is not an org-unit level (1 nation, 2 region, 3 province, 4 commune, \
                 5 province before 2025; 0 for every level)",
                request.level
            ))
        })?;
        domain::org_units(&request.parent, level).map_err(Error::invalid)
    }

    /// Adds or edits an indicator (admin). The value type and bounds follow from a known unit.
    pub async fn save_indicator(
        &self,
        claims: &Claims,
        request: pb::SaveIndicatorRequest,
    ) -> Result<pb::Indicator> {
        require_admin(claims, "SaveIndicator")?;
        let indicator = request
            .indicator
            .ok_or_else(|| Error::invalid("indicator is missing"))?;
        let indicator = validate_indicator(indicator)?;
        self.store.save_indicator(indicator).await
    }

    /// Sets or removes a target (admin).
    pub async fn set_target(
        &self,
        claims: &Claims,
        request: pb::SetTargetRequest,
    ) -> Result<pb::Target> {
        require_admin(claims, "SetTarget")?;
        let code = request.indicator_code.trim().to_uppercase();
        let catalogue = self.catalogue().await?;
        let indicator = catalogue.get(&code).ok_or_else(|| {
            Error::invalid(format!(
                "unknown indicator \"{code}\": see ListIndicators for the catalogue's codes"
            ))
        })?;
        let year = i32::try_from(request.year).unwrap_or(0);
        if !(period::FIRST_YEAR..=period::LAST_YEAR).contains(&year) {
            return Err(Error::invalid(format!(
                "year {} is outside {} to {}",
                request.year,
                period::FIRST_YEAR,
                period::LAST_YEAR
            )));
        }
        let province = request.province_code.trim();
        if !province.is_empty() && Reference::get().province(province).is_none() {
            return Err(Error::invalid(format!(
                "unknown province code \"{province}\": targets are set for the nation (empty) \
                 or one of the 34 provinces since 1 July 2025"
            )));
        }
        let value = match request.value.trim() {
            "" => String::new(),
            text => domain::check_value(indicator, text).map_err(Error::invalid)?,
        };
        self.store
            .set_target(pb::Target {
                indicator_code: code,
                year: request.year,
                province_code: province.to_string(),
                value,
                set_at_ms: self.now(),
                set_by: actor(claims),
            })
            .await
    }

    /// Targets. Any signed-in caller.
    pub async fn list_targets(
        &self,
        _claims: &Claims,
        request: &pb::ListTargetsRequest,
    ) -> Result<Vec<pb::Target>> {
        self.store
            .targets(&request.indicator_code.trim().to_uppercase(), request.year)
            .await
    }

    /// Checks one value for `period`: `Ok(None)` removes it.
    fn check_input(
        catalogue: &HashMap<String, pb::Indicator>,
        period: Period,
        code: &str,
        value: &str,
    ) -> std::result::Result<Option<String>, String> {
        let indicator = catalogue.get(code).ok_or_else(|| {
            format!(
                "unknown indicator \"{}\": see ListIndicators for the catalogue's codes",
                domain::quote(code)
            )
        })?;
        domain::check_reportable(indicator, period)?;
        match value.trim() {
            "" => Ok(None),
            text => domain::check_value(indicator, text).map(Some),
        }
    }

    /// Saves values into a report as a draft; each refused value gets a rejection.
    pub async fn save_report(
        &self,
        claims: &Claims,
        request: pb::SaveReportRequest,
    ) -> Result<pb::SaveReportResponse> {
        let scope = scope(claims, "SaveReport")?;
        if request.values.len() > MAX_VALUES_PER_SAVE {
            return Err(Error::exhausted(format!(
                "{} values in one call; the limit is {MAX_VALUES_PER_SAVE}: split them",
                request.values.len()
            )));
        }
        let unit = self.unit_for_write(&scope, &request.province_code, &request.period)?;
        let catalogue = self.catalogue().await?;
        let mut rejections = Vec::new();
        let mut changes = Vec::new();
        for (index, input) in request.values.iter().enumerate() {
            let code = input.indicator_code.trim().to_uppercase();
            let checked =
                Self::check_input(&catalogue, unit.period, &code, &input.value).and_then(|value| {
                    Ok((value, check_comment(&input.comment).map_err(|e| e.message)?))
                });
            match checked {
                Ok((value, comment)) => changes.push(Change {
                    indicator_code: code,
                    source: unit.source.clone(),
                    value,
                    comment,
                }),
                Err(reason) => rejections.push(pb::Rejection {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    indicator_code: input.indicator_code.clone(),
                    reason,
                }),
            }
        }
        let mut tx = self.store.begin().await?;
        let row = self
            .apply(
                &mut tx,
                &unit.province,
                unit.period,
                &changes,
                &actor(claims),
                "save",
            )
            .await?;
        self.store.commit(tx).await?;
        let report = match row {
            Some(row) => self.report_of(&row).await?,
            None => self.empty_report(&unit),
        };
        Ok(pb::SaveReportResponse {
            report: Some(report),
            rejections,
        })
    }

    fn empty_report(&self, unit: &Unit) -> pb::Report {
        pb::Report {
            province_code: unit.province.clone(),
            period: unit.period.to_string(),
            deadline: self.deadline(unit.period),
            ..Default::default()
        }
    }

    /// Writes `changes` into the report of `province` for `period` inside `tx`: creates the
    /// report (with its `ReportStarted` event) on its first value, refuses a submitted or
    /// approved one, and audits every value that changed. `None` when there was no report and
    /// nothing to write.
    async fn apply(
        &self,
        tx: &mut Tx,
        province: &str,
        period: Period,
        changes: &[Change],
        actor: &str,
        action: &str,
    ) -> Result<Option<ReportRow>> {
        let period_id = period.to_string();
        let key = format!("{province}/{period_id}");
        self.store.lock_report(tx, province, &period_id).await?;
        let existing = self.store.report_in(tx, province, &period_id).await?;
        let state = existing
            .as_ref()
            .map_or(ReportState::Unspecified, ReportRow::state);
        domain::transition(state, Action::Save, &key).map_err(error::refused)?;
        let now = self.now();
        let (mut row, created) = match existing {
            Some(row) => (row, false),
            None if changes.iter().all(|c| c.value.is_none()) => return Ok(None),
            None => (
                ReportRow {
                    province_code: province.to_string(),
                    period: period_id.clone(),
                    period_end: domain::iso_date(period.end()),
                    state: ReportState::Draft as i64,
                    version: 1,
                    sequence: 1,
                    deadline: self.deadline(period),
                    submitted_at_ms: 0,
                    approved_at_ms: 0,
                    on_time: 0,
                    review_comment: String::new(),
                    updated_at_ms: now,
                },
                true,
            ),
        };
        if created {
            self.store.put_report(tx, &row).await?;
            let event = pb::ReportStarted {
                event_id: event_id(),
                province_code: row.province_code.clone(),
                period: row.period.clone(),
                version: row.version_u32(),
                sequence: row.sequence_u64(),
                at_ms: now,
                deadline: row.deadline.clone(),
            };
            self.store.enqueue(tx, &pb::REPORT_STARTED, &event).await?;
        }
        let mut held: HashMap<(String, String), ValueRow> = self
            .store
            .values_in(tx, province, &period_id, row.version)
            .await?
            .into_iter()
            .map(|v| {
                (
                    (v.indicator_code.clone(), v.source_province_code.clone()),
                    v,
                )
            })
            .collect();
        let mut changed = 0;
        for change in changes {
            let slot = (change.indicator_code.clone(), change.source.clone());
            let old = held.get(&slot).cloned();
            let old_value = old.as_ref().map(|v| v.value.clone()).unwrap_or_default();
            match &change.value {
                None if old.is_none() => continue,
                None => {
                    self.store
                        .delete_value(tx, province, &period_id, row.version, &slot.0, &slot.1)
                        .await?;
                    held.remove(&slot);
                }
                Some(value) => {
                    let new = ValueRow {
                        indicator_code: slot.0.clone(),
                        source_province_code: slot.1.clone(),
                        value: value.clone(),
                        comment: change.comment.clone(),
                    };
                    if old.as_ref() == Some(&new) {
                        continue;
                    }
                    self.store
                        .put_value(tx, province, &period_id, row.version, &new)
                        .await?;
                    held.insert(slot.clone(), new);
                }
            }
            changed += 1;
            let entry = pb::AuditEntry {
                at_ms: now,
                actor: actor.to_string(),
                action: action.to_string(),
                indicator_code: slot.0,
                old_value,
                new_value: change.value.clone().unwrap_or_default(),
                comment: change.comment.clone(),
                version: row.version_u32(),
                source_province_code: slot.1,
            };
            self.store.audit(tx, province, &period_id, &entry).await?;
        }
        if changed > 0 && !created {
            row.sequence += 1;
            row.updated_at_ms = now;
            self.store.put_report(tx, &row).await?;
        }
        Ok(Some(row))
    }

    /// The report of `row` with its current values and history.
    async fn report_of(&self, row: &ReportRow) -> Result<pb::Report> {
        let values = self
            .store
            .values(&row.province_code, &row.period, row.version)
            .await?;
        let history = self.store.history(&row.province_code, &row.period).await?;
        Ok(pb::Report {
            province_code: row.province_code.clone(),
            period: row.period.clone(),
            state: row.state().into(),
            version: row.version_u32(),
            values: values.iter().map(ValueRow::to_proto).collect(),
            history,
            deadline: row.deadline.clone(),
            submitted_at_ms: row.submitted_at_ms,
            approved_at_ms: row.approved_at_ms,
            on_time: row.on_time != 0,
            review_comment: row.review_comment.clone(),
            updated_at_ms: row.updated_at_ms,
        })
    }

    /// Submits (province own or admin), approves, returns or reopens (admin) a report.
    pub async fn review(
        &self,
        claims: &Claims,
        province_code: &str,
        period_text: &str,
        comment: &str,
        action: Action,
    ) -> Result<pb::Report> {
        let rpc = match action {
            Action::Submit => "SubmitReport",
            Action::Approve => "ApproveReport",
            Action::Return => "ReturnReport",
            Action::Reopen => "ReopenReport",
            Action::Save => "SaveReport",
        };
        let scope = scope(claims, rpc)?;
        if !matches!(action, Action::Submit | Action::Save) {
            require_admin(claims, rpc)?;
        }
        let comment = check_comment(comment)?;
        if comment.is_empty() && matches!(action, Action::Return | Action::Reopen) {
            let what = if action == Action::Return {
                "a comment is required to return a report: say what the province must fix"
            } else {
                "a reason is required to reopen an approved report"
            };
            return Err(Error::invalid(what));
        }
        let unit = self.unit_for_read(&scope, province_code, period_text)?;
        let key = unit.key();
        let period_id = unit.period.to_string();
        let mut tx = self.store.begin().await?;
        self.store
            .lock_report(&mut tx, &unit.province, &period_id)
            .await?;
        let existing = self
            .store
            .report_in(&mut tx, &unit.province, &period_id)
            .await?;
        let state = existing
            .as_ref()
            .map_or(ReportState::Unspecified, ReportRow::state);
        let next = domain::transition(state, action, &key).map_err(error::refused)?;
        let Some(mut row) = existing else {
            return Err(error::no_report(&key));
        };
        let values = self
            .store
            .values_in(&mut tx, &unit.province, &period_id, row.version)
            .await?;
        if action == Action::Submit && values.is_empty() {
            return Err(error::refused(format!(
                "report {key} has no values: save at least one value (SaveReport) before \
                 submitting it"
            )));
        }
        let now = self.now();
        row.state = next as i64;
        row.sequence += 1;
        row.updated_at_ms = now;
        match action {
            Action::Submit => {
                row.submitted_at_ms = now;
                row.on_time =
                    i64::from(domain::on_time(now, unit.period.deadline(&self.deadlines)));
            }
            Action::Approve => {
                row.approved_at_ms = now;
                if !comment.is_empty() {
                    row.review_comment = comment.clone();
                }
            }
            Action::Return => row.review_comment = comment.clone(),
            Action::Reopen => {
                row.approved_at_ms = 0;
                row.review_comment = comment.clone();
                row.version += 1;
                self.store
                    .copy_values(
                        &mut tx,
                        &unit.province,
                        &period_id,
                        row.version - 1,
                        row.version,
                    )
                    .await?;
            }
            Action::Save => {}
        }
        self.store.put_report(&mut tx, &row).await?;
        let entry = pb::AuditEntry {
            at_ms: now,
            actor: actor(claims),
            action: action.as_str().to_string(),
            indicator_code: String::new(),
            old_value: domain::state_name(state).to_string(),
            new_value: domain::state_name(next).to_string(),
            comment: comment.clone(),
            version: row.version_u32(),
            source_province_code: String::new(),
        };
        self.store
            .audit(&mut tx, &unit.province, &period_id, &entry)
            .await?;
        self.publish(&mut tx, &row, action, now, comment, &values)
            .await?;
        self.store.commit(tx).await?;
        self.report_of(&row).await
    }

    /// The event of a workflow step, in its transaction.
    async fn publish(
        &self,
        tx: &mut Tx,
        row: &ReportRow,
        action: Action,
        now: i64,
        comment: String,
        values: &[ValueRow],
    ) -> Result<()> {
        let (province_code, period, version, sequence, deadline) = (
            row.province_code.clone(),
            row.period.clone(),
            row.version_u32(),
            row.sequence_u64(),
            row.deadline.clone(),
        );
        let id = event_id();
        match action {
            Action::Submit => {
                let event = pb::ReportSubmitted {
                    event_id: id,
                    province_code,
                    period,
                    version,
                    sequence,
                    at_ms: now,
                    on_time: row.on_time != 0,
                    deadline,
                };
                self.store.enqueue(tx, &pb::REPORT_SUBMITTED, &event).await
            }
            Action::Approve => {
                let event = pb::ReportApproved {
                    event_id: id,
                    province_code,
                    period,
                    version,
                    sequence,
                    at_ms: now,
                    values: values.iter().map(ValueRow::to_proto).collect(),
                    submitted_at_ms: row.submitted_at_ms,
                    on_time: row.on_time != 0,
                    deadline,
                };
                self.store.enqueue(tx, &pb::REPORT_APPROVED, &event).await
            }
            Action::Return => {
                let event = pb::ReportReturned {
                    event_id: id,
                    province_code,
                    period,
                    version,
                    sequence,
                    at_ms: now,
                    comment,
                    deadline,
                };
                self.store.enqueue(tx, &pb::REPORT_RETURNED, &event).await
            }
            Action::Reopen => {
                let event = pb::ReportReopened {
                    event_id: id,
                    province_code,
                    period,
                    version,
                    sequence,
                    at_ms: now,
                    reason: comment,
                    deadline,
                };
                self.store.enqueue(tx, &pb::REPORT_REOPENED, &event).await
            }
            Action::Save => Ok(()),
        }
    }

    /// One report with its values and history.
    pub async fn get_report(
        &self,
        claims: &Claims,
        reference: &pb::ReportRef,
    ) -> Result<pb::Report> {
        let scope = scope(claims, "GetReport")?;
        let unit = self.unit_for_read(&scope, &reference.province_code, &reference.period)?;
        let row = self
            .store
            .report(&unit.province, &unit.period.to_string())
            .await?
            .ok_or_else(|| error::no_report(&unit.key()))?;
        self.report_of(&row).await
    }

    /// Reports: a province token's own, or an admin's choice; newest period first.
    pub async fn list_reports(
        &self,
        claims: &Claims,
        request: &pb::ListReportsRequest,
    ) -> Result<pb::ListReportsResponse> {
        let scope = scope(claims, "ListReports")?;
        let asked = request.province_code.trim();
        let province = if asked.is_empty() {
            match &scope {
                Scope::Admin => String::new(),
                Scope::Province(own) => own.clone(),
            }
        } else {
            let p = Reference::get()
                .resolve_province(asked)
                .ok_or_else(|| unknown_province(asked))?
                .province();
            check_scope(&scope, &p.code)?;
            p.code.clone()
        };
        let period = match request.period.trim() {
            "" => String::new(),
            text => parse_period(text)?.to_string(),
        };
        let reports = self
            .store
            .reports(&province, i64::from(request.state), &period)
            .await?;
        Ok(pb::ListReportsResponse {
            reports: reports.iter().map(|(r, n)| r.summary(*n)).collect(),
        })
    }

    /// The latest month whose deadline has passed.
    fn latest_due_month(&self) -> Result<Period> {
        let today = self.today();
        let mut month = Period::latest_open(PeriodType::Month, today)
            .ok_or_else(|| Error::internal("no open month today"))?;
        while month.deadline(&self.deadlines) >= today && month.previous() != month {
            month = month.previous();
        }
        Ok(month)
    }

    /// Every province's state for a period: the chase list (admin and province tokens; states
    /// and times only, never values).
    pub async fn completeness(
        &self,
        claims: &Claims,
        request: &pb::GetCompletenessRequest,
    ) -> Result<pb::GetCompletenessResponse> {
        scope(claims, "GetCompleteness")?;
        let period = match request.period.trim() {
            "" => self.latest_due_month()?,
            text => parse_period(text)?,
        };
        let deadline = period.deadline(&self.deadlines);
        let past_deadline = self.today() > deadline;
        let rows: HashMap<String, ReportRow> = self
            .store
            .reports("", 0, &period.to_string())
            .await?
            .into_iter()
            .map(|(r, _)| (r.province_code.clone(), r))
            .collect();
        let provinces = Reference::get()
            .provinces()
            .iter()
            .map(|p| {
                let row = rows.get(&p.code);
                let state = row.map_or(ReportState::Unspecified, ReportRow::state);
                let handed_in = matches!(state, ReportState::Submitted | ReportState::Approved);
                pb::ProvinceCompleteness {
                    province_code: p.code.clone(),
                    province_name: p.name.clone(),
                    state: state.into(),
                    submitted_at_ms: row.map_or(0, |r| r.submitted_at_ms),
                    approved_at_ms: row.map_or(0, |r| r.approved_at_ms),
                    on_time: row.is_some_and(|r| r.submitted_at_ms > 0 && r.on_time != 0),
                    overdue: past_deadline && !handed_in,
                }
            })
            .collect();
        Ok(pb::GetCompletenessResponse {
            period: period.to_string(),
            deadline: domain::iso_date(deadline),
            provinces,
        })
    }

    /// Imports a CSV file, in one transaction; nothing is stored from a file with errors
    /// unless `keep_valid_lines`.
    pub async fn import(
        &self,
        claims: &Claims,
        request: pb::ImportReportRequest,
    ) -> Result<pb::ImportReportResponse> {
        let scope = scope(claims, "ImportReport")?;
        crate::csv::check_size(request.content.len()).map_err(Error::exhausted)?;
        let (text, encoding) = crate::csv::decode(&request.content);
        let (lines, bad) = crate::csv::parse(&text).map_err(|e| {
            if e.contains("lines; split") {
                Error::exhausted(e)
            } else {
                Error::invalid(e)
            }
        })?;
        let only_province = match (request.province_code.trim(), &scope) {
            ("", Scope::Province(own)) => Some(own.clone()),
            ("", Scope::Admin) => None,
            (code, _) => {
                let p = Reference::get()
                    .resolve_province(code)
                    .ok_or_else(|| unknown_province(code))?
                    .province();
                check_scope(&scope, &p.code)?;
                Some(p.code.clone())
            }
        };
        let only_period = match request.period.trim() {
            "" => None,
            text => Some(parse_period(text)?),
        };
        let catalogue = self.catalogue().await?;
        let lines_read = u32::try_from(lines.len() + bad.len()).unwrap_or(u32::MAX);
        let mut rejections: Vec<pb::Rejection> = bad
            .into_iter()
            .map(|b| pb::Rejection {
                index: b.line,
                indicator_code: String::new(),
                reason: b.reason,
            })
            .collect();
        // Lines by report, in key order (reports are locked in that order).
        type Group = (Period, Vec<(u32, String, Change)>);
        let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
        for line in &lines {
            let checked = self
                .unit_for_write(&scope, &line.province_code, &line.period)
                .map_err(|e| e.message)
                .and_then(|unit| {
                    if let Some(only) = &only_province {
                        if &unit.province != only {
                            return Err(format!(
                                "line is for province {}; this import is for province {only} only",
                                unit.province
                            ));
                        }
                    }
                    if let Some(only) = only_period {
                        if unit.period != only {
                            return Err(format!(
                                "line is for period {}; this import is for period {only} only",
                                unit.period
                            ));
                        }
                    }
                    let value = Self::check_input(
                        &catalogue,
                        unit.period,
                        &line.indicator_code,
                        &line.value,
                    )?;
                    let comment = check_comment(&line.comment).map_err(|e| e.message)?;
                    Ok((unit, value, comment))
                });
            match checked {
                Ok((unit, value, comment)) => {
                    let change = Change {
                        indicator_code: line.indicator_code.clone(),
                        source: unit.source.clone(),
                        value,
                        comment,
                    };
                    groups
                        .entry((unit.province.clone(), unit.period.to_string()))
                        .or_insert_with(|| (unit.period, Vec::new()))
                        .1
                        .push((line.line, line.indicator_code.clone(), change));
                }
                Err(reason) => rejections.push(pb::Rejection {
                    index: line.line,
                    indicator_code: line.indicator_code.clone(),
                    reason,
                }),
            }
        }
        let mut tx = self.store.begin().await?;
        // A report that cannot take values refuses each of its lines.
        let mut writable = Vec::new();
        for ((province, period_id), (period, group)) in groups {
            self.store
                .lock_report(&mut tx, &province, &period_id)
                .await?;
            let state = self
                .store
                .report_in(&mut tx, &province, &period_id)
                .await?
                .map_or(ReportState::Unspecified, |r| r.state());
            let key = format!("{province}/{period_id}");
            match domain::transition(state, Action::Save, &key) {
                Ok(_) => writable.push((province, period, group)),
                Err(reason) => {
                    rejections.extend(group.into_iter().map(|(line, code, _)| pb::Rejection {
                        index: line,
                        indicator_code: code,
                        reason: reason.clone(),
                    }))
                }
            }
        }
        rejections.sort_by_key(|r| r.index);
        if !rejections.is_empty() && !request.keep_valid_lines {
            // Dropping the transaction rolls it back: nothing from this file is stored.
            drop(tx);
            return Ok(pb::ImportReportResponse {
                stored: false,
                lines: lines_read,
                saved: 0,
                rejections,
                reports: Vec::new(),
                encoding: encoding.to_string(),
            });
        }
        let actor = actor(claims);
        let mut saved = 0u32;
        let mut written = Vec::new();
        for (province, period, group) in writable {
            let changes: Vec<Change> = group.into_iter().map(|(_, _, c)| c).collect();
            saved = saved.saturating_add(u32::try_from(changes.len()).unwrap_or(u32::MAX));
            if let Some(row) = self
                .apply(&mut tx, &province, period, &changes, &actor, "import")
                .await?
            {
                let count = self
                    .store
                    .values_in(&mut tx, &province, &row.period, row.version)
                    .await?
                    .len();
                written.push(row.summary(i64::try_from(count).unwrap_or(i64::MAX)));
            }
        }
        self.store.commit(tx).await?;
        Ok(pb::ImportReportResponse {
            stored: !written.is_empty(),
            lines: lines_read,
            saved,
            rejections,
            reports: written,
            encoding: encoding.to_string(),
        })
    }

    /// A report as a CSV file (the same rights as reading it).
    pub async fn export(
        &self,
        claims: &Claims,
        reference: &pb::ReportRef,
    ) -> Result<pb::ExportReportResponse> {
        let report = self.get_report(claims, reference).await?;
        let rows: Vec<[String; 5]> = report
            .values
            .iter()
            .map(|v| {
                let province = if v.source_province_code.is_empty() {
                    report.province_code.clone()
                } else {
                    v.source_province_code.clone()
                };
                [
                    province,
                    report.period.clone(),
                    v.indicator_code.clone(),
                    v.value.clone(),
                    v.comment.clone(),
                ]
            })
            .collect();
        let content = crate::csv::write(&rows).map_err(Error::internal)?;
        Ok(pb::ExportReportResponse {
            filename: format!("bao-cao-{}-{}.csv", report.province_code, report.period),
            content,
        })
    }
}

fn unknown_province(code: &str) -> Error {
    let code = domain::quote(code);
    Error::invalid(format!(
        "unknown province code \"{code}\": use one of the 34 codes since 1 July 2025 (or a \
         pre-2025 code for periods before then)"
    ))
}

fn check_scope(scope: &Scope, province: &str) -> Result<()> {
    match scope {
        Scope::Province(own) if own != province => Err(error::other_province(own, province)),
        _ => Ok(()),
    }
}

/// Checks an indicator an admin saves: code, names, enumerations; a known unit sets the value
/// type and bounds, an unknown one needs them given.
fn validate_indicator(mut i: pb::Indicator) -> Result<pb::Indicator> {
    i.code = i.code.trim().to_string();
    let code_ok = !i.code.is_empty()
        && i.code.len() <= 64
        && i.code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !code_ok {
        return Err(Error::invalid(format!(
            "indicator code \"{}\" must be 1 to 64 upper-case letters, digits or underscores \
             (HH_ONBOARDED)",
            i.code
        )));
    }
    i.name_vi = i.name_vi.trim().nfc().collect();
    i.name_en = i.name_en.trim().nfc().collect();
    i.unit = i.unit.trim().to_string();
    i.measure = i.measure.trim().to_string();
    i.target_basis = i.target_basis.trim().nfc().collect();
    if i.name_vi.is_empty() || i.name_en.is_empty() || i.unit.is_empty() {
        return Err(Error::invalid(format!(
            "indicator {}: name_vi, name_en and unit are required",
            i.code
        )));
    }
    let missing = |what: &str| Error::invalid(format!("indicator {}: {what} is not set", i.code));
    if i.period_type() == pb::PeriodType::Unspecified {
        return Err(missing("period_type"));
    }
    if i.source() == pb::Source::Unspecified {
        return Err(missing("source"));
    }
    if i.aggregation() == pb::Aggregation::Unspecified {
        return Err(missing("aggregation"));
    }
    if let Some(rule) = domain::rule_for_unit(&i.unit) {
        i.value_type = rule.value_type as i32;
        i.min_value = rule.min.map(|d| d.to_string()).unwrap_or_default();
        i.max_value = rule.max.map(|d| d.to_string()).unwrap_or_default();
        i.scale = rule.scale;
    } else {
        if i.value_type() == pb::ValueType::Unspecified {
            return Err(Error::invalid(format!(
                "indicator {}: unit \"{}\" is not one the catalogue knows, so value_type (and \
                 min_value, max_value, scale) must be given",
                i.code, i.unit
            )));
        }
        for bound in [&i.min_value, &i.max_value] {
            if !bound.is_empty() && domain::parse_decimal(bound).is_none() {
                return Err(Error::invalid(format!(
                    "indicator {}: bound \"{bound}\" is not a number",
                    i.code
                )));
            }
        }
        if i.value_type() == pb::ValueType::Integer {
            i.scale = 0;
        }
        if i.scale > 6 {
            return Err(Error::invalid(format!(
                "indicator {}: scale {} is more than 6 digits after the point",
                i.code, i.scale
            )));
        }
    }
    if !i.national_target.trim().is_empty() {
        i.national_target = domain::check_value(&i, &i.national_target)
            .map_err(|e| Error::invalid(format!("national_target: {e}")))?;
    } else {
        i.national_target = String::new();
    }
    Ok(i)
}
