//! The partners' side: a deterministic stream of sales and onboarding batches (corrections and
//! re-sends included), pushed the way a real partner pushes — every call with a deadline, an
//! unacknowledged batch reconciled with `GetBatch` or re-sent with the same id and content —
//! and the ground-truth ledger of what was acknowledged, which the gateway's figures must
//! equal exactly in the end.
//!
//! Each (partner, kind) stream is pushed by one worker, one batch at a time: a batch is pushed
//! until it is acknowledged before the next one goes, so the order of acknowledgements is the
//! order of commits, and the ledger (keyed by partner and record key; a correction replaces the
//! values) is exactly what the marketplace holds. The two partners and the two kinds run in
//! parallel, as they do in production.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agriportal::client::{partner_client_lazy, PartnerClient};
use agriportal_platform::auth::{Authenticator, Role};
use agriportal_platform::reference::Reference;
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::marketplace::v1 as pb;
use anyhow::{bail, Context as _};
use serde_json::Value;
use tonic::{Code, Request, Status};

/// Per-call deadline of the partners' client (the real client's is 60 s; faults must answer
/// well within this).
pub const DEADLINE: Duration = Duration::from_secs(5);

/// A call still unanswered this long after its deadline is a hang, and fails the test.
pub const HANG_GRACE: Duration = Duration::from_secs(1);

/// The partners.
pub const PARTNERS: [&str; 2] = ["postmart", "voso"];

/// What to push and how.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Sales records (first pushes, corrections included), both partners together.
    pub sales: usize,
    /// Onboarding records, both partners together.
    pub onboarding: usize,
    /// Sales records per batch.
    pub sales_batch: usize,
    /// Onboarding records per batch.
    pub onboarding_batch: usize,
    /// Seed of the deterministic stream.
    pub seed: u64,
    /// Least time between two batches of one stream (to spread a stream over a fault schedule).
    pub pace: Duration,
    /// Pause before a delayed re-send (longer than the bus's de-duplication window).
    pub resend_pause: Duration,
}

impl Plan {
    /// The suite's usual plan: 500 sales and 250 onboarding records a batch, unpaced, and
    /// delayed re-sends just after the test's de-duplication window (so JetStream stores them
    /// again and the gateway's inbox must drop them).
    pub fn standard(sales: usize, onboarding: usize, seed: u64) -> Plan {
        Plan {
            sales,
            onboarding,
            sales_batch: 500,
            onboarding_batch: 250,
            seed,
            pace: Duration::ZERO,
            resend_pause: crate::TEST_DEDUP_WINDOW + Duration::from_millis(500),
        }
    }

    /// Paces the batches so that the longest of `streams` lasts about `over`.
    pub fn spread(&mut self, streams: &[Stream], over: Duration) {
        self.pace = over / crate::longest(streams);
    }
}

/// Deterministic pseudo-random numbers (SplitMix64): the same seed, the same stream.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `percent` %.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// Uniform duration in `lo..=hi`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.below(span + 1))
    }
}

/// One batch's content.
#[derive(Clone, Debug)]
pub enum Payload {
    /// A `PushSales` request.
    Sales(pb::PushSalesRequest),
    /// A `PushOnboarding` request.
    Onboarding(pb::PushOnboardingRequest),
}

impl Payload {
    fn batch_id(&self) -> &str {
        match self {
            Payload::Sales(r) => &r.batch_id,
            Payload::Onboarding(r) => &r.batch_id,
        }
    }
    fn len(&self) -> usize {
        match self {
            Payload::Sales(r) => r.records.len(),
            Payload::Onboarding(r) => r.records.len(),
        }
    }
}

/// Whether a batch is pushed again after its acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resend {
    /// Once.
    No,
    /// At once, as after a lost reply.
    Immediately,
    /// After [`Plan::resend_pause`].
    AfterPause,
}

/// A batch of the stream.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The content.
    pub payload: Payload,
    /// Re-send policy.
    pub resend: Resend,
    /// Records in it that correct an earlier record of the stream.
    pub corrections: usize,
}

/// The batches of one partner and one kind, in push order.
#[derive(Clone, Debug)]
pub struct Stream {
    /// Partner code.
    pub partner: &'static str,
    /// `sales` or `onboarding`.
    pub kind: &'static str,
    /// Batches.
    pub batches: Vec<Batch>,
}

fn date(rng: &mut Rng) -> String {
    let start = time::macros::date!(2022 - 01 - 01);
    (start + time::Duration::days(rng.below(3 * 365) as i64)).to_string()
}

/// The deterministic workload of `plan`: four streams (two partners × two kinds).
pub fn generate(plan: &Plan) -> Vec<Stream> {
    let reference = Reference::get();
    let provinces: Vec<String> = reference
        .provinces()
        .iter()
        .map(|p| p.code.clone())
        .collect();
    let categories: Vec<String> = reference
        .categories()
        .iter()
        .map(|c| c.code.clone())
        .collect();
    let mut streams = Vec::new();
    for (p, partner) in PARTNERS.into_iter().enumerate() {
        let mut rng = Rng::new(plan.seed ^ (0x5A1E_5000 + p as u64));
        let (sales_offset, onboarding_offset) = (rng.below(10), rng.below(10));
        let share = plan.sales / 2 + if p == 0 { plan.sales % 2 } else { 0 };
        let mut batches = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        let mut made = 0;
        while made < share {
            let size = plan.sales_batch.min(share - made);
            let mut records: Vec<pb::SalesRecord> = Vec::with_capacity(size);
            let mut in_batch = std::collections::HashSet::new();
            let mut corrections = 0;
            for _ in 0..size {
                let correcting = !keys.is_empty() && rng.chance(5);
                let record_id = if correcting {
                    // An earlier key not already in this batch (a key twice in one batch is
                    // refused); after a few tries, a new record instead.
                    let mut pick = None;
                    for _ in 0..8 {
                        let key = &keys[rng.below(keys.len() as u64) as usize];
                        if !in_batch.contains(key) {
                            pick = Some(key.clone());
                            break;
                        }
                    }
                    pick
                } else {
                    None
                };
                let record_id = match record_id {
                    Some(key) => {
                        corrections += 1;
                        key
                    }
                    None => {
                        let key = format!("{partner}-s-{}", keys.len());
                        keys.push(key.clone());
                        key
                    }
                };
                in_batch.insert(record_id.clone());
                records.push(pb::SalesRecord {
                    record_id,
                    sale_date: date(&mut rng),
                    province_code: provinces[rng.below(provinces.len() as u64) as usize].clone(),
                    commune_code: String::new(),
                    category: categories[rng.below(categories.len() as u64) as usize].clone(),
                    quantity_grams: 1 + rng.below(2_000_000) as i64,
                    value_vnd: 1_000 + rng.below(50_000_000) as i64,
                    orders: 1 + rng.below(40) as u32,
                    household_ref: String::new(),
                });
            }
            made += size;
            let index = batches.len();
            batches.push(Batch {
                payload: Payload::Sales(pb::PushSalesRequest {
                    batch_id: format!("{partner}-sales-{index:05}"),
                    records,
                }),
                resend: resend_policy(index, sales_offset),
                corrections,
            });
        }
        streams.push(Stream {
            partner,
            kind: "sales",
            batches,
        });

        let share = plan.onboarding / 2 + if p == 0 { plan.onboarding % 2 } else { 0 };
        let mut batches = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        let mut made = 0;
        while made < share {
            let size = plan.onboarding_batch.min(share - made);
            let mut records = Vec::with_capacity(size);
            let mut in_batch = std::collections::HashSet::new();
            let mut corrections = 0;
            for _ in 0..size {
                let mut household_ref = None;
                if !keys.is_empty() && rng.chance(5) {
                    for _ in 0..8 {
                        let key = &keys[rng.below(keys.len() as u64) as usize];
                        if !in_batch.contains(key) {
                            household_ref = Some(key.clone());
                            break;
                        }
                    }
                }
                let household_ref = match household_ref {
                    Some(key) => {
                        corrections += 1;
                        key
                    }
                    None => {
                        let key = format!("{partner}-h-{}", keys.len());
                        keys.push(key.clone());
                        key
                    }
                };
                in_batch.insert(household_ref.clone());
                let status = match rng.below(10) {
                    0 => HouseholdStatus::Closed,
                    1 | 2 => HouseholdStatus::Suspended,
                    _ => HouseholdStatus::Active,
                };
                let mut cats: Vec<String> = (0..1 + rng.below(2))
                    .map(|_| categories[rng.below(categories.len() as u64) as usize].clone())
                    .collect();
                cats.sort();
                cats.dedup();
                records.push(pb::OnboardingRecord {
                    household_ref,
                    province_code: provinces[rng.below(provinces.len() as u64) as usize].clone(),
                    commune_code: String::new(),
                    registered_on: date(&mut rng),
                    status: status as i32,
                    categories: cats,
                    listed_products: None,
                    has_digital_address: None,
                });
            }
            made += size;
            let index = batches.len();
            batches.push(Batch {
                payload: Payload::Onboarding(pb::PushOnboardingRequest {
                    batch_id: format!("{partner}-onboarding-{index:05}"),
                    records,
                }),
                resend: resend_policy(index, onboarding_offset),
                corrections,
            });
        }
        streams.push(Stream {
            partner,
            kind: "onboarding",
            batches,
        });
    }
    streams
}

/// Every tenth batch of a stream (from a random offset) is re-sent after its
/// acknowledgement, alternately at once and after a pause.
fn resend_policy(index: usize, offset: u64) -> Resend {
    let shifted = index as u64 + offset;
    match (shifted % 10, (shifted / 10) % 2) {
        (0, 0) => Resend::Immediately,
        (0, _) => Resend::AfterPause,
        _ => Resend::No,
    }
}

/// What partners' acknowledged records add up to: the ground truth.
#[derive(Default, Debug, Clone)]
pub struct Ledger {
    sales: HashMap<(&'static str, String), pb::SalesRecord>,
    households: HashMap<(&'static str, String), pb::OnboardingRecord>,
}

impl Ledger {
    /// The `[accepted, unchanged, corrected]` counts the marketplace must answer for
    /// `payload` given what is acknowledged so far.
    pub fn expect(&self, partner: &'static str, payload: &Payload) -> [u32; 3] {
        let mut counts = [0u32; 3];
        let mut count = |held: Option<bool>| match held {
            None => counts[0] += 1,
            Some(true) => counts[1] += 1,
            Some(false) => counts[2] += 1,
        };
        match payload {
            Payload::Sales(r) => {
                for record in &r.records {
                    count(
                        self.sales
                            .get(&(partner, record.record_id.clone()))
                            .map(|held| held == record),
                    );
                }
            }
            Payload::Onboarding(r) => {
                for record in &r.records {
                    count(
                        self.households
                            .get(&(partner, record.household_ref.clone()))
                            .map(|held| held == record),
                    );
                }
            }
        }
        counts
    }

    /// Records an acknowledged batch: new keys are added, known keys take the new values.
    pub fn apply(&mut self, partner: &'static str, payload: &Payload) {
        match payload {
            Payload::Sales(r) => {
                for record in &r.records {
                    self.sales
                        .insert((partner, record.record_id.clone()), record.clone());
                }
            }
            Payload::Onboarding(r) => {
                for record in &r.records {
                    self.households
                        .insert((partner, record.household_ref.clone()), record.clone());
                }
            }
        }
    }

    /// Distinct sales lines and households held.
    pub fn sizes(&self) -> (usize, usize) {
        (self.sales.len(), self.households.len())
    }

    /// Every figure the gateway publishes that this test checks, by path: national totals,
    /// per-partner totals, and every province's totals and per-partner split.
    pub fn view(&self) -> BTreeMap<String, i64> {
        let mut view = BTreeMap::new();
        let mut scopes = vec!["national".to_string()];
        scopes.extend(
            Reference::get()
                .provinces()
                .iter()
                .map(|p| format!("province.{}", p.code)),
        );
        for scope in &scopes {
            for field in ["grams", "value_vnd", "orders"] {
                view.insert(format!("{scope}.sales.{field}"), 0);
                for p in PARTNERS {
                    view.insert(format!("{scope}.sales.by_partner.{p}.{field}"), 0);
                }
            }
            for field in ["onboarded", "active"] {
                view.insert(format!("{scope}.households.{field}"), 0);
            }
            for p in PARTNERS {
                view.insert(format!("{scope}.households.by_partner.{p}"), 0);
            }
        }
        let mut add = |path: String, n: i64| *view.entry(path).or_insert(0) += n;
        for ((partner, _), r) in &self.sales {
            let figures = [
                ("grams", r.quantity_grams),
                ("value_vnd", r.value_vnd),
                ("orders", i64::from(r.orders.max(1))),
            ];
            for scope in [
                "national".to_string(),
                format!("province.{}", r.province_code),
            ] {
                for (field, n) in figures {
                    add(format!("{scope}.sales.{field}"), n);
                    add(format!("{scope}.sales.by_partner.{partner}.{field}"), n);
                }
            }
        }
        for ((partner, _), r) in &self.households {
            for scope in [
                "national".to_string(),
                format!("province.{}", r.province_code),
            ] {
                add(format!("{scope}.households.onboarded"), 1);
                if r.status == HouseholdStatus::Active as i32 {
                    add(format!("{scope}.households.active"), 1);
                }
                add(format!("{scope}.households.by_partner.{partner}"), 1);
            }
        }
        view
    }
}

/// Reads the figures at the ledger's paths from `/api/v1/national` and `/api/v1/provinces`.
pub fn gateway_view(
    national: &Value,
    provinces: &Value,
    paths: &BTreeMap<String, i64>,
) -> BTreeMap<String, i64> {
    let mut by_code: HashMap<&str, &Value> = HashMap::new();
    if let Some(list) = provinces["provinces"].as_array() {
        for p in list {
            if let Some(code) = p["code"].as_str() {
                by_code.insert(code, p);
            }
        }
    }
    let mut view = BTreeMap::new();
    for path in paths.keys() {
        let mut parts = path.split('.');
        let root = match parts.next() {
            Some("national") => Some(national),
            Some("province") => parts.next().and_then(|code| by_code.get(code).copied()),
            _ => None,
        };
        let value = root.and_then(|mut v| {
            for part in parts {
                v = v.get(part)?;
            }
            v.as_i64()
        });
        // A missing figure shows as i64::MIN, which never equals a ledger figure.
        view.insert(path.clone(), value.unwrap_or(i64::MIN));
    }
    view
}

/// The differences between two views, at most `max` of them, for messages.
pub fn diff(
    expected: &BTreeMap<String, i64>,
    actual: &BTreeMap<String, i64>,
    max: usize,
) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(path, want)| {
            let got = actual.get(path).copied().unwrap_or(i64::MIN);
            (got != *want).then(|| format!("{path}: gateway {got}, ledger {want}"))
        })
        .take(max)
        .collect()
}

/// How a call ended, in the caller's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// UNAVAILABLE: from the server, or the connection failed (the server was killed, the
    /// port was closed) — what a gRPC client reports for a server that went away.
    Unavailable,
    /// The deadline passed. tonic reports an expired deadline as CANCELLED "Timeout expired"
    /// (client or server side); both count here.
    DeadlineExceeded,
    /// NOT_FOUND (only expected from `GetBatch`).
    NotFound,
    /// RESOURCE_EXHAUSTED with a retry hint (a rate or concurrency limit): wait, then retry.
    Throttled(Duration),
    /// Anything else: a bug in a fault path.
    Other(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Unavailable => "unavailable",
            Outcome::DeadlineExceeded => "deadline_exceeded",
            Outcome::NotFound => "not_found",
            Outcome::Throttled(_) => "throttled",
            Outcome::Other(_) => "other",
        }
    }
}

fn classify(status: &Status) -> Outcome {
    match status.code() {
        Code::Unavailable => Outcome::Unavailable,
        Code::DeadlineExceeded => Outcome::DeadlineExceeded,
        Code::Cancelled if status.message().contains("Timeout expired") => {
            Outcome::DeadlineExceeded
        }
        Code::NotFound => Outcome::NotFound,
        Code::ResourceExhausted => match status
            .metadata()
            .get("retry-after-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(ms) => Outcome::Throttled(Duration::from_millis(ms)),
            None => Outcome::Other(format!("ResourceExhausted: {}", status.message())),
        },
        // A status made by the client from a transport error (it keeps the error as its
        // source; statuses sent by the server have none): the connection broke.
        _ if std::error::Error::source(status).is_some() => Outcome::Unavailable,
        code => Outcome::Other(format!("{code:?}: {}", status.message())),
    }
}

/// Counters of one run, shared by the workers and the fault injectors.
#[derive(Default, Debug)]
pub struct Stats {
    /// Batches acknowledged (counted once each).
    pub batches_acked: AtomicU64,
    /// Records in acknowledged batches (counted once per batch).
    pub records_acked: AtomicU64,
    /// Records sent, every attempt and re-send included.
    pub records_sent: AtomicU64,
    /// Records that correct an earlier record, in acknowledged batches.
    pub corrections: AtomicU64,
    /// Re-sends of batches whose push was not acknowledged.
    pub resent_unacked: AtomicU64,
    /// Acknowledged batches found by `GetBatch` after a push failed.
    pub reconciled: AtomicU64,
    /// Acknowledged batches re-sent at once.
    pub resent_at_once: AtomicU64,
    /// Acknowledged batches re-sent after a pause longer than the de-duplication window.
    pub resent_after_pause: AtomicU64,
    /// Pushes in flight now (fault injectors aim at them).
    pub in_flight: AtomicU64,
    /// How long the last acknowledged push took, in ms.
    pub last_push_ms: AtomicU64,
    outcomes: Mutex<BTreeMap<String, u64>>,
    others: Mutex<Vec<String>>,
    hangs: Mutex<Vec<String>>,
}

impl Stats {
    fn count(&self, what: &str, outcome: &Outcome) {
        let key = format!("{what}:{}", outcome.label());
        *self.outcomes.lock().expect("stats").entry(key).or_insert(0) += 1;
        if let Outcome::Other(message) = outcome {
            self.others
                .lock()
                .expect("stats")
                .push(format!("{what}: {message}"));
        }
    }

    /// Calls by rpc and outcome (`push:ok`, `push:unavailable`, …).
    pub fn outcomes(&self) -> BTreeMap<String, u64> {
        self.outcomes.lock().expect("stats").clone()
    }

    /// Calls that ended otherwise than OK / UNAVAILABLE / DEADLINE_EXCEEDED (/ NOT_FOUND for
    /// `GetBatch`), and calls that hung.
    pub fn violations(&self) -> Vec<String> {
        let mut v: Vec<String> = self.others.lock().expect("stats").clone();
        v.extend(self.hangs.lock().expect("stats").iter().cloned());
        v
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut line = format!(
            "batches acked {}, records acked {} (corrections {}), records sent {} \
             (re-sends of unacknowledged batches {}, unacknowledged batches found by GetBatch {}, \
             acknowledged batches re-sent: at once {}, after a pause {})",
            g(&self.batches_acked),
            g(&self.records_acked),
            g(&self.corrections),
            g(&self.records_sent),
            g(&self.resent_unacked),
            g(&self.reconciled),
            g(&self.resent_at_once),
            g(&self.resent_after_pause),
        );
        let _ = write!(line, "; calls {:?}", self.outcomes());
        line
    }
}

/// Runs one call with the caller's deadline (sent as `grpc-timeout`), classifying the result;
/// a call unanswered [`HANG_GRACE`] after its deadline is recorded as a hang.
pub async fn call<T, F>(stats: &Stats, what: &str, call: F) -> Result<T, Outcome>
where
    F: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let started = Instant::now();
    let outcome = match tokio::time::timeout(DEADLINE + HANG_GRACE, call).await {
        Ok(Ok(response)) => {
            stats.count(what, &Outcome::Ok);
            return Ok(response.into_inner());
        }
        Ok(Err(status)) => classify(&status),
        Err(_) => {
            stats.hangs.lock().expect("stats").push(format!(
                "{what}: no answer {:?} after a {DEADLINE:?} deadline",
                started.elapsed()
            ));
            Outcome::DeadlineExceeded
        }
    };
    stats.count(what, &outcome);
    Err(outcome)
}

/// A request carrying the caller's deadline.
pub fn request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(DEADLINE);
    request
}

/// A partner's bearer token, signed with the suite's key.
pub fn token(partner: &str) -> String {
    let auth = Authenticator::signing(crate::procs::signer(), None).expect("authenticator");
    auth.mint(
        Role::Partner {
            partner: partner.into(),
        },
        Duration::from_secs(24 * 3600),
    )
    .expect("mint")
    .0
}

/// A partner's client that connects lazily and reconnects after the server restarts.
pub fn client(grpc_addr: &str, partner: &str) -> PartnerClient {
    partner_client_lazy(grpc_addr, Some(&token(partner)), DEADLINE).expect("client")
}

async fn push_once(
    client: &mut PartnerClient,
    stats: &Stats,
    payload: &Payload,
) -> Result<pb::PushResult, Outcome> {
    stats
        .records_sent
        .fetch_add(payload.len() as u64, Ordering::Relaxed);
    let started = Instant::now();
    let _in_flight = InFlight::new(&stats.in_flight);
    let result = match payload {
        Payload::Sales(r) => call(stats, "push", client.push_sales(request(r.clone()))).await,
        Payload::Onboarding(r) => {
            call(stats, "push", client.push_onboarding(request(r.clone()))).await
        }
    };
    if result.is_ok() {
        stats
            .last_push_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    result
}

/// Counts a call in flight until dropped.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits (up to `limit`) until a push is in flight, then a random part of a push's duration,
/// so that a fault lands inside a push: before, during or after its commit.
pub async fn aim_at_push(stats: &Stats, rng: &mut Rng, limit: Duration) {
    let until = Instant::now() + limit;
    while stats.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let typical = stats.last_push_ms.load(Ordering::Relaxed).clamp(1, 2_000);
    tokio::time::sleep(Duration::from_millis(rng.below(typical + 1))).await;
}

/// Pushes a batch until it is acknowledged — by its own reply, or found by `GetBatch` after
/// a failed push — re-sending it (same id, same content) as a partner would.
pub async fn push_until_acked(
    client: &mut PartnerClient,
    stats: &Stats,
    payload: &Payload,
    give_up: Instant,
) -> anyhow::Result<pb::PushResult> {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        if !first {
            stats.resent_unacked.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        match push_once(client, stats, payload).await {
            Ok(result) => return Ok(result),
            Err(Outcome::Other(message)) => {
                bail!("push of batch {} refused: {message}", payload.batch_id())
            }
            Err(Outcome::Throttled(after)) => {
                tokio::time::sleep(after).await;
                continue;
            }
            Err(_) => {}
        }
        // The reply was lost: was the batch applied anyway? Ask (with backoff, while the
        // service is unreachable) before sending it again.
        loop {
            if Instant::now() > give_up {
                bail!(
                    "batch {} still not acknowledged at the time limit",
                    payload.batch_id()
                );
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            let asked = pb::GetBatchRequest {
                batch_id: payload.batch_id().to_string(),
            };
            match call(stats, "get_batch", client.get_batch(request(asked))).await {
                Ok(result) => {
                    stats.reconciled.fetch_add(1, Ordering::Relaxed);
                    return Ok(result);
                }
                Err(Outcome::NotFound) => break,
                Err(Outcome::Other(message)) => {
                    bail!("GetBatch of {} failed: {message}", payload.batch_id())
                }
                Err(Outcome::Throttled(after)) => tokio::time::sleep(after).await,
                Err(_) => {}
            }
        }
        backoff = Duration::from_millis(50);
    }
}

/// Pushes one stream, keeping the ledger; re-sends the batches its plan says to re-send and
/// checks that each re-send gets the first result.
pub async fn run_stream(
    stream: Stream,
    grpc_addr: String,
    plan: Plan,
    ledger: Arc<Mutex<Ledger>>,
    stats: Arc<Stats>,
    give_up: Instant,
) -> anyhow::Result<()> {
    let mut client = client(&grpc_addr, stream.partner);
    let mut delayed: Vec<(Instant, Payload, pb::PushResult)> = Vec::new();
    let started = Instant::now();
    for (index, batch) in stream.batches.iter().enumerate() {
        let due = started + plan.pace * index as u32;
        tokio::time::sleep_until(due.into()).await;
        let expected = ledger
            .lock()
            .expect("ledger")
            .expect(stream.partner, &batch.payload);
        let result = push_until_acked(&mut client, &stats, &batch.payload, give_up).await?;
        let got = [result.accepted, result.unchanged, result.corrected];
        if got != expected || result.rejected != 0 {
            bail!(
                "batch {} of {}: [accepted, unchanged, corrected] = {got:?}, rejected {}; the ledger expects {expected:?}, none rejected",
                batch.payload.batch_id(),
                stream.partner,
                result.rejected
            );
        }
        ledger
            .lock()
            .expect("ledger")
            .apply(stream.partner, &batch.payload);
        stats.batches_acked.fetch_add(1, Ordering::Relaxed);
        stats
            .records_acked
            .fetch_add(batch.payload.len() as u64, Ordering::Relaxed);
        stats
            .corrections
            .fetch_add(batch.corrections as u64, Ordering::Relaxed);
        match batch.resend {
            Resend::No => {}
            Resend::Immediately => {
                let again = push_until_acked(&mut client, &stats, &batch.payload, give_up).await?;
                check_same(&batch.payload, &result, &again)?;
                stats.resent_at_once.fetch_add(1, Ordering::Relaxed);
            }
            Resend::AfterPause => delayed.push((
                Instant::now() + plan.resend_pause,
                batch.payload.clone(),
                result,
            )),
        }
        resend_due(&mut client, &stats, &mut delayed, false, give_up).await?;
    }
    resend_due(&mut client, &stats, &mut delayed, true, give_up).await
}

async fn resend_due(
    client: &mut PartnerClient,
    stats: &Stats,
    delayed: &mut Vec<(Instant, Payload, pb::PushResult)>,
    wait: bool,
    give_up: Instant,
) -> anyhow::Result<()> {
    while let Some((due, _, _)) = delayed.first() {
        if *due > Instant::now() {
            if !wait {
                return Ok(());
            }
            tokio::time::sleep_until((*due).into()).await;
        }
        let (_, payload, first) = delayed.remove(0);
        let again = push_until_acked(client, stats, &payload, give_up).await?;
        check_same(&payload, &first, &again)?;
        stats.resent_after_pause.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn check_same(
    payload: &Payload,
    first: &pb::PushResult,
    again: &pb::PushResult,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        first == again,
        "batch {} re-sent: got {again:?}, the first push got {first:?}",
        payload.batch_id()
    );
    Ok(())
}

/// Starts a worker per stream on `grpc_addr`; they share the ledger and the counters.
pub fn spawn_workers(
    streams: Vec<Stream>,
    grpc_addr: &str,
    plan: &Plan,
    ledger: &Arc<Mutex<Ledger>>,
    stats: &Arc<Stats>,
    give_up: Instant,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<()>>> {
    streams
        .into_iter()
        .map(|stream| {
            let name = format!("{} {}", stream.partner, stream.kind);
            let run = run_stream(
                stream,
                grpc_addr.to_string(),
                plan.clone(),
                ledger.clone(),
                stats.clone(),
                give_up,
            );
            tokio::spawn(async move { run.await.with_context(|| name) })
        })
        .collect()
}

/// A probe: one new sales line on a day no workload record uses, so the gateway's daily
/// series for that day shows exactly whether the probe arrived.
pub fn probe(index: u32) -> (pb::PushSalesRequest, String, i64) {
    let day = time::macros::date!(2021 - 08 - 01) + time::Duration::days(i64::from(index));
    let grams = 1_000 + i64::from(index);
    let request = pb::PushSalesRequest {
        batch_id: format!("probe-{index:04}"),
        records: vec![pb::SalesRecord {
            record_id: format!("probe-{index:04}"),
            sale_date: day.to_string(),
            province_code: "01".into(),
            commune_code: String::new(),
            category: "fruit".into(),
            quantity_grams: grams,
            value_vnd: 10_000,
            orders: 1,
            household_ref: String::new(),
        }],
    };
    (request, day.to_string(), grams)
}
