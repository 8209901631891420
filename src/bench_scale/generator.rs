//! The batches `bench scale` pushes: households over the 34 provinces, then sales lines over
//! a year, most naming one of their partner's households, as the demo's simulator makes them.

use agriportal_platform::reference::{Partner, Reference};
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::marketplace::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What a loading batch carries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Households,
    Sales,
}

/// A batch to push, with the partner pushing it.
pub(super) enum Batch {
    Households(pb::PushOnboardingRequest),
    Sales(pb::PushSalesRequest),
}

/// Makes both partners' batches, alternating between them: households spread over the 34
/// provinces (some in a commune), 85 % active; sales lines over the last 365 days, every
/// province and category, most naming a household of their partner (in its province and
/// commune), as the demo's simulator does.
pub(super) struct Generator {
    run: String,
    rng: StdRng,
    provinces: Vec<(&'static str, Vec<&'static str>)>,
    categories: Vec<&'static str>,
    today: time::Date,
    /// Households generated per partner (their refs are `<partner>-hh-<n>`). Record keys
    /// need no run id, since the run starts on an empty store; and kept short they keep a
    /// 10,000-line batch's event under NATS's default 1 MiB message limit (with the run id in
    /// both keys it was 1.1 MB, which JetStream refuses, and the relay retried it for ever).
    households: [u64; 2],
    /// Sales lines generated per partner.
    lines: [u64; 2],
    batches: u64,
}

impl Generator {
    pub(super) fn new(run: &str) -> Self {
        let reference = Reference::get();
        Generator {
            run: run.to_string(),
            rng: StdRng::seed_from_u64(13),
            provinces: reference
                .provinces()
                .iter()
                .map(|p| {
                    let communes = reference
                        .communes_of(&p.code)
                        .iter()
                        .map(|c| c.code.as_str())
                        .collect();
                    (p.code.as_str(), communes)
                })
                .collect(),
            categories: reference
                .categories()
                .iter()
                .map(|c| c.code.as_str())
                .collect(),
            today: agriportal_marketplace::domain::today_in_vietnam(),
            households: [0; 2],
            lines: [0; 2],
            batches: 0,
        }
    }

    /// The next batch of `kind`, at most `size` records and none past `target` records of
    /// that kind in all; none when `target` is reached.
    pub(super) fn next(&mut self, kind: Kind, size: u64, target: u64) -> Option<(Partner, Batch)> {
        let done = match kind {
            Kind::Households => self.households.iter().sum::<u64>(),
            Kind::Sales => self.lines.iter().sum::<u64>(),
        };
        let n = size.min(target.saturating_sub(done));
        if n == 0 {
            return None;
        }
        let p = (self.batches % 2) as usize;
        let partner = Partner::ALL[p];
        let batch_id = format!("{}-{}-{}", self.run, partner.code(), self.batches);
        self.batches += 1;
        let batch = match kind {
            Kind::Households => Batch::Households(pb::PushOnboardingRequest {
                batch_id,
                records: (0..n).map(|_| self.household(p)).collect(),
            }),
            Kind::Sales => Batch::Sales(pb::PushSalesRequest {
                batch_id,
                records: (0..n).map(|_| self.line(p)).collect(),
            }),
        };
        Some((partner, batch))
    }

    /// Where household `n` of partner `p` lives: derived from its number, so a sales line can
    /// name any household without the generator keeping millions of them in memory.
    fn home(&self, p: usize, n: u64) -> (&'static str, &'static str) {
        let h = splitmix64(n.wrapping_mul(2).wrapping_add(p as u64));
        let (code, communes) = &self.provinces[(h % self.provinces.len() as u64) as usize];
        let commune = if communes.is_empty() || (h >> 40) % 10 < 3 {
            ""
        } else {
            communes[((h >> 8) % communes.len() as u64) as usize]
        };
        (*code, commune)
    }

    fn household_ref(&self, p: usize, n: u64) -> String {
        format!("{}-hh-{n}", Partner::ALL[p].code())
    }

    fn household(&mut self, p: usize) -> pb::OnboardingRecord {
        let n = self.households[p];
        self.households[p] += 1;
        let (province, commune) = self.home(p, n);
        let household_ref = self.household_ref(p, n);
        let rng = &mut self.rng;
        let status = match rng.random_range(0..100) {
            0..=84 => HouseholdStatus::Active,
            85..=94 => HouseholdStatus::Suspended,
            _ => HouseholdStatus::Closed,
        };
        let categories = (0..rng.random_range(1..=3))
            .map(|_| self.categories[rng.random_range(0..self.categories.len())].to_string())
            .collect();
        // Registered over the plan's years so far (it started on 2021-07-21).
        let registered =
            (self.today - time::Duration::days(rng.random_range(0..1_000))).max(PLAN_START);
        pb::OnboardingRecord {
            household_ref,
            province_code: province.into(),
            commune_code: commune.into(),
            registered_on: registered.to_string(),
            status: status as i32,
            categories,
            listed_products: rng.random_bool(0.85).then(|| rng.random_range(0..=60)),
            has_digital_address: rng.random_bool(0.8).then(|| rng.random_bool(0.55)),
        }
    }

    fn line(&mut self, p: usize) -> pb::SalesRecord {
        let n = self.lines[p];
        self.lines[p] += 1;
        let households = self.households[p];
        let (household_ref, province, commune) = if households > 0 && self.rng.random_bool(0.85) {
            let h = self.rng.random_range(0..households);
            let (province, commune) = self.home(p, h);
            (self.household_ref(p, h), province, commune)
        } else {
            let province = self.provinces[self.rng.random_range(0..self.provinces.len())].0;
            (String::new(), province, "")
        };
        let rng = &mut self.rng;
        let grams = rng.random_range(20_000..2_000_000i64);
        let price_per_kg = rng.random_range(12_000..80_000i64);
        pb::SalesRecord {
            record_id: format!("{}-line-{n}", Partner::ALL[p].code()),
            sale_date: (self.today - time::Duration::days(rng.random_range(0..365))).to_string(),
            province_code: province.into(),
            commune_code: commune.into(),
            category: self.categories[rng.random_range(0..self.categories.len())].into(),
            quantity_grams: grams,
            value_vnd: grams * price_per_kg / 1000,
            orders: rng.random_range(1..200),
            household_ref,
        }
    }
}

/// The plan's first day: no record may be dated before it.
const PLAN_START: time::Date = time::macros::date!(2021 - 07 - 21);

/// A 64-bit mix (SplitMix64's finaliser): spreads consecutive numbers over every province.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
