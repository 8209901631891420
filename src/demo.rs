//! `up --demo`: both partners push realistic onboarding and sales data for all 34 provinces
//! through the real gRPC API, first a backfill of history, then a live trickle with the
//! occasional correction and re-sent batch, so a new user sees a living dashboard at once.

use std::net::SocketAddr;
use std::time::Duration;

use agriportal_platform::auth::{Authenticator, Role};
use agriportal_platform::context::token_secret;
use agriportal_platform::reference::{Partner, Reference, PLAN_START};
use agriportal_platform::Config;
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::marketplace::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::Date;
use tokio_util::sync::CancellationToken;

use crate::client::{partner_client, PartnerClient};

/// Households each partner registers in the backfill.
const BACKFILL_HOUSEHOLDS: usize = 60_000;
/// Days of sales history in the backfill.
const BACKFILL_DAYS: i64 = 120;

/// Starts both partners' simulators against the gRPC server at `addr`.
pub fn spawn(config: Config, addr: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    let auth = Authenticator::new(&token_secret(&config)?, None)?;
    for (seed, partner) in Partner::ALL.into_iter().enumerate() {
        let (token, _) = auth.mint(
            Role::Partner {
                partner: partner.code().into(),
            },
            Duration::from_secs(86_400),
        )?;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut sim = Simulator::new(partner, seed as u64 + 1);
            tokio::select! {
                result = sim.run(addr, &token) => {
                    if let Err(err) = result {
                        tracing::warn!(partner = partner.code(), error = %err, "demo simulator stopped");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
        });
    }
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
                pb::OnboardingRecord {
                    household_ref: format!("{}-hh-{}", self.partner.code(), self.next_household),
                    province_code,
                    commune_code,
                    registered_on: day.to_string(),
                    status: status as i32,
                    categories: (0..n)
                        .map(|_| categories[self.rng.random_range(0..categories.len())].clone())
                        .collect(),
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
                let (province_code, commune_code) = self.pick_province();
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
                }
            })
            .collect();
        pb::PushSalesRequest {
            batch_id: self.batch_id("sales"),
            records,
        }
    }

    async fn run(&mut self, addr: SocketAddr, token: &str) -> anyhow::Result<()> {
        let mut client = connect(addr, token).await?;
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

async fn connect(addr: SocketAddr, token: &str) -> anyhow::Result<PartnerClient> {
    let mut wait = Duration::from_millis(100);
    loop {
        match partner_client(&addr.to_string(), Some(token)).await {
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
