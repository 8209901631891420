//! `up --demo`: both partners push realistic onboarding and sales data for all 34 provinces
//! through the real gRPC API, first a backfill of history, then a live trickle with the
//! occasional correction and re-sent batch, so a new user sees a living dashboard at once.
//! Beside them, the provinces' indicator reports of the last four months are seeded through
//! the Indicators API with province and admin tokens ([`seed_reports`]), so the chase list and
//! the review queue show something at once.

use std::net::SocketAddr;
use std::time::Duration;

use agriportal_platform::auth::Role;
use agriportal_platform::context::token_authenticator;
use agriportal_platform::reference::{Partner, Reference, PLAN_START};
use agriportal_platform::Config;
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::marketplace::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::Date;
use tokio_util::sync::CancellationToken;

use crate::client::{PartnerClient, Target};
use agriportal_platform::client::{ClientOptions, Credential, PeerChannel};
use agriportal_platform::period::{vietnam_today, Period, PeriodType};
use agriportal_proto::gateway::v1 as gpb;
use agriportal_proto::gateway::v1::dashboard_client::DashboardClient;
use agriportal_proto::indicators::v1 as ipb;
use agriportal_proto::indicators::v1::indicators_client::IndicatorsClient;

/// Households each partner registers in the backfill.
const BACKFILL_HOUSEHOLDS: usize = 60_000;
/// Days of sales history in the backfill.
const BACKFILL_DAYS: i64 = 120;

/// Starts both partners' simulators against the gRPC server at `addr` (over TLS when the
/// configuration serves it).
pub fn spawn(config: Config, addr: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    let auth = token_authenticator(&config)?;
    let target = Target::of(&config, addr)?;
    for (seed, partner) in Partner::ALL.into_iter().enumerate() {
        let (token, _) = auth.mint(
            Role::Partner {
                partner: partner.code().into(),
            },
            Duration::from_secs(86_400),
        )?;
        let (shutdown, target) = (shutdown.clone(), target.clone());
        tokio::spawn(async move {
            let mut sim = Simulator::new(partner, seed as u64 + 1);
            tokio::select! {
                result = sim.run(&target, &token) => {
                    if let Err(err) = result {
                        tracing::warn!(partner = partner.code(), error = %err, "demo simulator stopped");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
        });
    }
    let (admin, _) = auth.mint(Role::Admin, Duration::from_secs(86_400))?;
    let mut provinces = Vec::new();
    for p in Reference::get().provinces() {
        let role = Role::Province {
            province: p.code.clone(),
        };
        let (token, _) = auth.mint(role, Duration::from_secs(86_400))?;
        provinces.push((p.code.clone(), token));
    }
    tokio::spawn(async move {
        tokio::select! {
            result = seed_reports(&target, &admin, &provinces) => {
                if let Err(err) = result {
                    tracing::warn!(error = %err, "demo reports not seeded");
                }
            }
            _ = shutdown.cancelled() => {}
        }
    });
    Ok(())
}

/// One partner's simulated marketplace.
pub struct Simulator {
    partner: Partner,
    rng: StdRng,
    next_household: u64,
    next_line: u64,
    batches: u64,
    provinces: Vec<(String, f64, Vec<String>)>,
    /// Households onboarded so far (key, province, commune): most sales lines name one of
    /// them, so the trading-households figure shows at once.
    onboarded: Vec<(String, String, String)>,
    last_sales: Option<pb::PushSalesRequest>,
}

impl Simulator {
    /// A simulator for `partner`, deterministic for a seed.
    pub fn new(partner: Partner, seed: u64) -> Self {
        let reference = Reference::get();
        let mut rng = StdRng::seed_from_u64(seed);
        let provinces = reference
            .provinces()
            .iter()
            .map(|p| {
                let communes = reference
                    .communes_of(&p.code)
                    .iter()
                    .map(|c| c.code.clone())
                    .collect();
                (p.code.clone(), rng.random_range(0.3..2.0), communes)
            })
            .collect();
        Simulator {
            partner,
            rng,
            next_household: 0,
            next_line: 0,
            batches: 0,
            provinces,
            onboarded: Vec::new(),
            last_sales: None,
        }
    }

    fn pick_province(&mut self) -> (String, String) {
        let total: f64 = self.provinces.iter().map(|p| p.1).sum();
        let mut x = self.rng.random_range(0.0..total);
        let mut index = 0;
        for (i, p) in self.provinces.iter().enumerate() {
            index = i;
            if x < p.1 {
                break;
            }
            x -= p.1;
        }
        let (code, _, communes) = &self.provinces[index];
        let commune = if communes.is_empty() || self.rng.random_bool(0.3) {
            String::new()
        } else {
            communes[self.rng.random_range(0..communes.len())].clone()
        };
        (code.clone(), commune)
    }

    fn batch_id(&mut self, kind: &str) -> String {
        self.batches += 1;
        format!(
            "demo-{}-{kind}-{}-{}",
            self.partner.code(),
            std::process::id(),
            self.batches
        )
    }

    /// Households registered between `from` and `to`, front-loaded like the plan's first wave.
    pub fn households(&mut self, count: usize, from: Date, to: Date) -> pb::PushOnboardingRequest {
        let span = (to - from).whole_days().max(0) as f64;
        let categories: Vec<String> = Reference::get()
            .categories()
            .iter()
            .map(|c| c.code.clone())
            .collect();
        let records = (0..count)
            .map(|_| {
                self.next_household += 1;
                let (province_code, commune_code) = self.pick_province();
                let skew: f64 = self.rng.random_range(0.0f64..1.0).powi(3);
                let day = from + time::Duration::days((skew * span) as i64);
                let status = match self.rng.random_range(0..100) {
                    0..=84 => HouseholdStatus::Active,
                    85..=94 => HouseholdStatus::Suspended,
                    _ => HouseholdStatus::Closed,
                };
                let n = self.rng.random_range(1..=3);
                let household_ref = format!("{}-hh-{}", self.partner.code(), self.next_household);
                self.onboarded.push((
                    household_ref.clone(),
                    province_code.clone(),
                    commune_code.clone(),
                ));
                // Most households report their listings and digital address; some partners'
                // exports leave them out, which the protocol allows.
                let listed_products = self
                    .rng
                    .random_bool(0.85)
                    .then(|| self.rng.random_range(0..=60));
                let has_digital_address = self
                    .rng
                    .random_bool(0.8)
                    .then(|| self.rng.random_bool(0.55));
                pb::OnboardingRecord {
                    household_ref,
                    province_code,
                    commune_code,
                    registered_on: day.to_string(),
                    status: status as i32,
                    categories: (0..n)
                        .map(|_| categories[self.rng.random_range(0..categories.len())].clone())
                        .collect(),
                    listed_products,
                    has_digital_address,
                }
            })
            .collect();
        pb::PushOnboardingRequest {
            batch_id: self.batch_id("onboarding"),
            records,
        }
    }

    /// Sales lines of one day, a few per province.
    pub fn sales(&mut self, count: usize, day: Date) -> pb::PushSalesRequest {
        let categories: Vec<String> = Reference::get()
            .categories()
            .iter()
            .map(|c| c.code.clone())
            .collect();
        let records = (0..count)
            .map(|_| {
                self.next_line += 1;
                // Most lines name the household that sold, in its own province and commune.
                let (household_ref, province_code, commune_code) =
                    if !self.onboarded.is_empty() && self.rng.random_bool(0.85) {
                        let i = self.rng.random_range(0..self.onboarded.len());
                        self.onboarded[i].clone()
                    } else {
                        let (province_code, commune_code) = self.pick_province();
                        (String::new(), province_code, commune_code)
                    };
                let grams = self.rng.random_range(20_000..2_000_000i64);
                let price_per_kg = self.rng.random_range(12_000..80_000i64);
                pb::SalesRecord {
                    record_id: format!("{}-line-{}", self.partner.code(), self.next_line),
                    sale_date: day.to_string(),
                    province_code,
                    commune_code,
                    category: categories[self.rng.random_range(0..categories.len())].clone(),
                    quantity_grams: grams,
                    value_vnd: grams * price_per_kg / 1000,
                    orders: self.rng.random_range(1..200),
                    household_ref,
                }
            })
            .collect();
        pb::PushSalesRequest {
            batch_id: self.batch_id("sales"),
            records,
        }
    }

    async fn run(&mut self, target: &Target, token: &str) -> anyhow::Result<()> {
        let mut client = connect(target, token).await?;
        let today = agriportal_marketplace::domain::today_in_vietnam();
        for _ in 0..(BACKFILL_HOUSEHOLDS / 5_000) {
            let batch = self.households(5_000, PLAN_START, today);
            client.push_onboarding(batch).await?;
        }
        let mut day = today - time::Duration::days(BACKFILL_DAYS);
        while day <= today {
            let batch = self.sales(100, day);
            client.push_sales(batch).await?;
            day = day.next_day().unwrap_or(today);
            if day == today {
                break;
            }
        }
        tracing::info!(
            partner = self.partner.code(),
            "demo backfill done; pushing live data"
        );
        let mut tick = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            tick += 1;
            let today = agriportal_marketplace::domain::today_in_vietnam();
            let batch = self.households(40, today, today);
            client.push_onboarding(batch).await?;
            let batch = self.sales(20, today);
            client.push_sales(batch.clone()).await?;
            if tick.is_multiple_of(5) {
                // A partner retrying a batch whose reply it lost: applied once only.
                if let Some(previous) = self.last_sales.take() {
                    client.push_sales(previous).await?;
                }
                // A correction: the same line with a new quantity replaces the old one.
                let mut fix = batch.clone();
                fix.batch_id = self.batch_id("correction");
                fix.records.truncate(1);
                if let Some(r) = fix.records.first_mut() {
                    r.quantity_grams += 1_000;
                }
                client.push_sales(fix).await?;
            }
            self.last_sales = Some(batch);
        }
    }
}

async fn connect(target: &Target, token: &str) -> anyhow::Result<PartnerClient> {
    let mut wait = Duration::from_millis(100);
    loop {
        match target.partner(Some(token)).await {
            Ok(client) => return Ok(client),
            Err(err) if wait < Duration::from_secs(10) => {
                tracing::debug!(error = %err, "waiting for the gRPC server");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(err) => return Err(err),
        }
    }
}

/// A client of the Indicators service with `token`.
fn indicators(target: &Target, token: &str) -> anyhow::Result<IndicatorsClient<PeerChannel>> {
    let options = ClientOptions {
        deadline: Duration::from_secs(30),
        ..ClientOptions::default()
    };
    let channel = target.channel(Credential::Bearer(token.to_string()), options)?;
    Ok(IndicatorsClient::new(channel))
}

/// What a province's report of one period ends up as in the demo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Missing,
    Draft,
    Submitted,
    Returned,
    Approved,
}

/// Seeds the provinces' reports of the last four months (and the latest quarter) and the 2026
/// national targets, through the Indicators API as the provinces and the central working group
/// would enter them: most older reports approved, the latest month a mix of submitted,
/// returned, draft and missing ones. Skipped when any report exists, so restarts and a second
/// `up --demo` on the same data change nothing. Reports are submitted now, so the older
/// months' submissions count as late.
pub async fn seed_reports(
    target: &Target,
    admin_token: &str,
    provinces: &[(String, String)],
) -> anyhow::Result<()> {
    let mut admin = indicators(target, admin_token)?;
    // The server starts beside this task: wait for it.
    let mut wait = Duration::from_millis(100);
    let catalogue = loop {
        match admin.list_indicators(ipb::ListIndicatorsRequest {}).await {
            Ok(list) => break list.into_inner().indicators,
            Err(status) if wait < Duration::from_secs(10) => {
                tracing::debug!(%status, "waiting for the indicators service");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(status) => return Err(status.into()),
        }
    };
    let existing = admin
        .list_reports(ipb::ListReportsRequest::default())
        .await?
        .into_inner();
    if !existing.reports.is_empty() {
        tracing::info!("demo reports already seeded");
        return Ok(());
    }
    for indicator in catalogue.iter().filter(|i| !i.national_target.is_empty()) {
        admin
            .set_target(ipb::SetTargetRequest {
                indicator_code: indicator.code.clone(),
                year: 2026,
                province_code: String::new(),
                value: indicator.national_target.clone(),
            })
            .await?;
    }
    let reported = |kind: ipb::PeriodType| -> Vec<ipb::Indicator> {
        catalogue
            .iter()
            .filter(|i| i.source() == ipb::Source::Province && i.period_type() == kind)
            .cloned()
            .collect()
    };
    let monthly = reported(ipb::PeriodType::Month);
    let quarterly = reported(ipb::PeriodType::Quarter);
    let today = vietnam_today(time::OffsetDateTime::now_utc());
    let latest = Period::latest_open(PeriodType::Month, today)
        .ok_or_else(|| anyhow::anyhow!("no open month"))?;
    let months = [
        latest.previous().previous().previous(),
        latest.previous().previous(),
        latest.previous(),
        latest,
    ];
    let quarter = Period::latest_open(PeriodType::Quarter, today)
        .ok_or_else(|| anyhow::anyhow!("no open quarter"))?;
    let mut rng = StdRng::seed_from_u64(1034);
    let mut seeded = 0usize;
    // Household figures are shares of the households the marketplaces onboarded in each
    // province, so that derived shares (trained ÷ onboarded) look like a real province's.
    let onboarded = onboarded_by_province(target).await;
    for (code, token) in provinces {
        let mut province = indicators(target, token)?;
        // Each province's size scales its figures; stocks grow month by month.
        let size = onboarded
            .get(code)
            .map_or(1.0, |n| (*n as f64 / 3_500.0).max(0.05));
        for (step, month) in months.iter().enumerate() {
            let newest = *month == latest;
            let fate = match rng.random_range(0..100) {
                n if !newest && n < 88 => Fate::Approved,
                n if !newest && n < 94 => Fate::Submitted,
                _ if !newest => Fate::Missing,
                n if n < 15 => Fate::Approved,
                n if n < 45 => Fate::Submitted,
                n if n < 55 => Fate::Returned,
                n if n < 75 => Fate::Draft,
                _ => Fate::Missing,
            };
            let growth = 1.0 + 0.04 * step as f64;
            let values = monthly
                .iter()
                .map(|i| demo_value(&mut rng, i, size * growth))
                .collect();
            seeded += 1;
            enact(
                &mut province,
                &mut admin,
                code,
                &month.to_string(),
                values,
                fate,
            )
            .await?;
        }
        let fate = if rng.random_bool(0.85) {
            Fate::Approved
        } else {
            Fate::Submitted
        };
        let values = quarterly
            .iter()
            .map(|i| demo_value(&mut rng, i, size))
            .collect();
        enact(
            &mut province,
            &mut admin,
            code,
            &quarter.to_string(),
            values,
            fate,
        )
        .await?;
    }
    tracing::info!(reports = seeded, "demo indicator reports seeded");
    Ok(())
}

/// Households the marketplaces onboarded in each province, read from the gateway once the
/// simulators' backfill has (mostly) arrived; empty if it never answers within a minute.
async fn onboarded_by_province(target: &Target) -> std::collections::HashMap<String, i64> {
    let wanted = (2 * BACKFILL_HOUSEHOLDS * 9 / 10) as i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut best = std::collections::HashMap::new();
    let Ok(channel) = target.channel(Credential::None, ClientOptions::default()) else {
        return best;
    };
    let mut dashboard = DashboardClient::new(channel);
    while tokio::time::Instant::now() < deadline {
        if let Ok(list) = dashboard.list_provinces(gpb::ListProvincesRequest {}).await {
            best = list
                .into_inner()
                .provinces
                .into_iter()
                .map(|p| (p.code, p.households.map_or(0, |h| h.onboarded)))
                .collect();
            if best.values().sum::<i64>() >= wanted {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    best
}

/// A plausible value of `indicator` for a province of relative `size` (1.0: 3,500 households
/// onboarded).
fn demo_value(rng: &mut StdRng, indicator: &ipb::Indicator, size: f64) -> ipb::ValueInput {
    let value = match (indicator.value_type(), indicator.code.as_str()) {
        (ipb::ValueType::Percent, _) => format!("{:.1}", rng.random_range(35.0..97.0f64)),
        (_, "TRAINING_SESSIONS") => format!("{}", (rng.random_range(4.0..30.0) * size) as i64),
        // Households with an e-payment account: most onboarded ones, and some others.
        (_, "EPAY_HH") => format!("{}", (rng.random_range(2_000.0..3_800.0) * size) as i64),
        // Households trained: a quarter to a half of those onboarded.
        _ => format!("{}", (rng.random_range(900.0..1_700.0) * size) as i64),
    };
    ipb::ValueInput {
        indicator_code: indicator.code.clone(),
        value,
        comment: String::new(),
    }
}

/// Brings one report to `fate`: the province saves (and submits), the admin reviews.
async fn enact(
    province: &mut IndicatorsClient<PeerChannel>,
    admin: &mut IndicatorsClient<PeerChannel>,
    code: &str,
    period: &str,
    values: Vec<ipb::ValueInput>,
    fate: Fate,
) -> anyhow::Result<()> {
    if fate == Fate::Missing {
        return Ok(());
    }
    province
        .save_report(ipb::SaveReportRequest {
            province_code: code.to_string(),
            period: period.to_string(),
            values,
        })
        .await?;
    if fate == Fate::Draft {
        return Ok(());
    }
    let reference = ipb::ReportRef {
        province_code: code.to_string(),
        period: period.to_string(),
    };
    province.submit_report(reference).await?;
    let review = |comment: &str| ipb::ReviewRequest {
        province_code: code.to_string(),
        period: period.to_string(),
        comment: comment.to_string(),
    };
    match fate {
        Fate::Approved => {
            admin.approve_report(review("")).await?;
        }
        Fate::Returned => {
            admin
                .return_report(review(
                    "Số hộ được đào tạo tăng bất thường so với tháng trước: đề nghị kiểm tra lại",
                ))
                .await?;
        }
        _ => {}
    }
    Ok(())
}
