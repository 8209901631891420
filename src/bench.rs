//! `agriportal bench ingest`: pushes sales records over gRPC from both partners at once and
//! reports acknowledged records per second, push→dashboard freshness (time from a batch's ack
//! until `/api/v1/national` includes it) and peak RSS; in the same run it measures PostgreSQL
//! `COPY` of the same rows into a logged table keyed (partner, record_id), committed (the
//! ceiling), and into a bare TEMP table, so the rate is reported as ratios that a noisy machine
//! cannot skew much. `--rate` pushes at a fixed rate instead of flat out.
//!
//! `agriportal bench read` (`bench_read.rs`): dashboard reads against a bare handler answering
//! the same bytes, and their latency at a fixed rate, while the demo writes.
//!
//! `agriportal bench scale` (`bench_scale.rs`): a country's worth of households and sales lines
//! through the real push path, every figure checked exactly, and the dashboards' read latency
//! at each size while ingest runs.
//!
//! `agriportal bench overload`: one partner floods at a multiple of its quota while the other
//! pushes steadily within its own; reports the steady partner's latency alone, beside a
//! partner at its quota, and beside the flood (same run, side by side), the flooding partner's
//! shed rate, and memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agriportal_marketplace::Marketplace;
use agriportal_platform::auth::Role;
use agriportal_platform::context::token_authenticator;
use agriportal_platform::kit::Settings;
use agriportal_platform::reference::{Partner, Reference};
use agriportal_platform::Config;
use agriportal_proto::marketplace::v1 as pb;
use anyhow::Context as _;
use clap::{Args, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::Connection;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::client::partner_client;

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum Which {
    /// Partner ingest throughput and dashboard freshness.
    Ingest(IngestArgs),
    /// One partner flooding at a multiple of its quota: the other partner's latency, the
    /// flood's shed rate, and memory.
    Overload(OverloadArgs),
    /// Dashboard reads: each endpoint's throughput as a ratio of a bare handler answering the
    /// same bytes, and its latency at a fixed rate, while the demo writes.
    Read(crate::bench_read::ReadArgs),
    /// A country's worth of data (millions of sales lines and households) through the real
    /// push path: every dashboard figure checked against the sums pushed, and read latency at
    /// each size while ingest runs.
    Scale(crate::bench_scale::ScaleArgs),
    /// The flooding client of `bench overload`, run as a child process (unless
    /// `--flood-in-process`).
    #[command(hide = true)]
    FloodClient(FloodClientArgs),
}

/// Settings of the hidden `bench flood-client`.
#[derive(Args, Debug, Clone)]
pub struct FloodClientArgs {
    /// The server's gRPC address.
    #[arg(long)]
    pub target: String,
    /// The flooding partner's token.
    #[arg(long)]
    pub token: String,
    /// Names the batches and records (unique per phase).
    #[arg(long)]
    pub run: String,
    /// Records per batch.
    #[arg(long)]
    pub batch_size: usize,
    /// Batches per second.
    #[arg(long)]
    pub batches_per_second: f64,
    /// Seconds to push for.
    #[arg(long)]
    pub seconds: u64,
}

/// Settings of `bench overload`.
#[derive(Args, Debug, Clone)]
pub struct OverloadArgs {
    /// Each partner's quota in records per second for this run (it replaces
    /// `--partner-records-per-second`, whose default is far above what one machine can flood).
    #[arg(long, default_value_t = 2_000)]
    pub quota: u32,
    /// Each partner's burst in records (replaces `--partner-burst-records`); defaults to one
    /// second of quota.
    #[arg(long)]
    pub burst: Option<u32>,
    /// How many times its quota the flooding partner (Postmart) pushes.
    #[arg(long, default_value_t = 10.0)]
    pub flood_factor: f64,
    /// The steady partner's (Vỏ Sò's) rate as a fraction of its quota.
    #[arg(long, default_value_t = 0.5)]
    pub steady_fraction: f64,
    /// Records per batch of the flooding partner (and of the steady one unless
    /// `--steady-batch-size` says otherwise).
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,
    /// Records per batch of the steady partner. Small batches give many latency samples at its
    /// fixed record rate (3,000 per phase by default), so that a p99 is not decided by a
    /// handful of calls; with 50 there are 600 and the p99 is the sixth slowest.
    #[arg(long, default_value_t = 10)]
    pub steady_batch_size: usize,
    /// Seconds each phase lasts in one round.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Rounds: each runs the three phases in turn, so that a machine whose background load
    /// drifts weighs on every phase alike; the figures are over all rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The `nice` value of the flooding partner's client, which runs as a child process: a
    /// real flood comes from another machine, while a client inside this process would run its
    /// calls on the server's own runtime, queued with the server's work, and on a small machine
    /// its CPU (building and encoding 400 batches/s) would be counted against the server.
    #[arg(long, default_value_t = 10)]
    pub flood_process_nice: i32,
    /// Run the flooding client inside this process instead (the harsher, less realistic set-up).
    #[arg(long)]
    pub flood_in_process: bool,
}

/// What one phase of `bench overload` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    /// `steady alone`, `beside a partner at its quota`, `beside a flood`.
    pub name: String,
    /// Records per second the flooding partner offered (0: it was idle).
    pub flood_records_per_second: f64,
    /// The steady partner's calls, and how they went.
    pub steady: Calls,
    /// The flooding partner's calls, and how they went.
    pub flood: Calls,
    /// Resident memory at the end of the phase's last round, MiB.
    pub rss_mib: f64,
    /// CPU this process used during the phase (server and both clients), in cores.
    pub cpu_cores: f64,
    /// CPU the flooding client's child process used, in cores (when it ran in one).
    pub flood_client_cpu_cores: Option<f64>,
    /// Seconds the phase took over all its rounds, from the first call sent to the last
    /// answer: what bounds the records a rate limit may let through (burst + quota × this).
    pub wall_seconds: f64,
}

/// Calls of one partner in one phase.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Calls {
    /// Calls made.
    pub sent: usize,
    /// Calls answered with a result.
    pub accepted: usize,
    /// Refused by the partner's rate limit.
    pub rate_limited: usize,
    /// Refused by the server's concurrency limit.
    pub shed: usize,
    /// Refused because the partner had its maximum of calls in flight.
    pub busy: usize,
    /// Any other failure.
    pub failed: usize,
    /// Fraction refused (rate limit, the partner's or the server's concurrency limit).
    pub refused_fraction: f64,
    /// Latency of answered calls, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// What `bench overload` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OverloadReport {
    /// `embedded` or `postgres+jetstream`.
    pub mode: &'static str,
    /// Quota per partner, records per second.
    pub quota: u32,
    /// Burst per partner, records.
    pub burst: u32,
    /// Records per batch of the flooding partner.
    pub batch_size: usize,
    /// Records per batch of the steady partner.
    pub steady_batch_size: usize,
    /// Rounds of the three phases.
    pub rounds: usize,
    /// Seconds per phase and round.
    pub seconds: u64,
    /// The three phases, in order.
    pub phases: Vec<Phase>,
    /// Steady partner's p99 beside the flood, relative to beside a partner at its quota.
    pub p99_rise_vs_quota: f64,
    /// Steady partner's p99 beside the flood, relative to alone.
    pub p99_rise_vs_alone: f64,
    /// 95 % bootstrap interval of `p99_rise_vs_quota`: how far sampling alone could move it.
    pub p99_rise_vs_quota_interval: (f64, f64),
    /// 95 % bootstrap interval of `p99_rise_vs_alone`.
    pub p99_rise_vs_alone_interval: (f64, f64),
    /// Peak resident memory of this process (server and both clients), MiB.
    pub peak_rss_mib: f64,
    /// The `nice` value of the flooding client's child process, when it ran in one (its CPU and
    /// memory are then not in this process's figures).
    pub flood_process_nice: Option<i32>,
}

/// Settings of `bench ingest`.
#[derive(Args, Debug, Clone)]
pub struct IngestArgs {
    /// Sales records to push in all (split between the two partners).
    #[arg(long, default_value_t = 200_000)]
    pub records: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 1_000)]
    pub batch_size: usize,
    /// Batches in flight per partner.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// PostgreSQL for the COPY baseline (defaults to DATABASE_URL, then the local test database).
    #[arg(long)]
    pub copy_url: Option<String>,
    /// Skip the COPY baselines.
    #[arg(long)]
    pub no_copy: bool,
    /// Push at this many records per second in all (split between the partners) instead of
    /// flat out, so freshness can be measured at a chosen load (half the maximum rate, say).
    #[arg(long)]
    pub rate: Option<f64>,
}

/// What the benchmark measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// `embedded` or `postgres+jetstream`.
    pub mode: &'static str,
    /// Records pushed and acknowledged.
    pub records: usize,
    /// Records per batch.
    pub batch_size: usize,
    /// Acknowledged records per second.
    pub ack_rate: f64,
    /// Freshness percentiles in milliseconds.
    pub freshness_p50_ms: f64,
    /// 99th percentile.
    pub freshness_p99_ms: f64,
    /// Largest.
    pub freshness_max_ms: f64,
    /// Peak resident memory of this process, MiB.
    pub peak_rss_mib: f64,
    /// The fixed rate asked (`--rate`), records per second; none when flat out.
    pub target_rate: Option<f64>,
    /// PostgreSQL COPY of the same rows into a bare TEMP table (no WAL, no key), rows per second.
    pub copy_rate: Option<f64>,
    /// ack_rate / copy_rate.
    pub ratio_to_copy: Option<f64>,
    /// PostgreSQL COPY of the same rows into a logged table keyed (partner, record_id) like the
    /// marketplace's records, committed: the ceiling of durable, idempotent storage.
    pub keyed_copy_rate: Option<f64>,
    /// ack_rate / keyed_copy_rate.
    pub ratio_to_keyed_copy: Option<f64>,
}

/// Runs a benchmark.
pub async fn run(settings: Settings, which: Which) -> anyhow::Result<()> {
    match which {
        Which::Ingest(args) => {
            let report = ingest(settings, args).await?;
            println!("{}", render(&report));
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Which::Overload(args) => {
            let report = overload(settings, args).await?;
            println!("{}", render_overload(&report));
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Which::Read(args) => {
            let report = crate::bench_read::read(settings, args).await?;
            println!("{}", crate::bench_read::render(&report));
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Which::Scale(args) => {
            let report = crate::bench_scale::scale(settings, args).await?;
            println!("{}", crate::bench_scale::render(&report));
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Which::FloodClient(args) => {
            let client = partner_client(&args.target, Some(&args.token)).await?;
            let maker = Arc::new(Mutex::new(BatchMaker::new(Partner::Postmart, &args.run, 1)));
            let started = cpu_time();
            let answers = open_loop(
                client,
                maker,
                args.batch_size,
                args.batches_per_second,
                Duration::from_secs(args.seconds),
            )
            .await;
            let flood = FloodOutput {
                answers,
                cpu_seconds: cpu_since(started).map(|cpu| cpu.as_secs_f64()),
            };
            println!("{}", serde_json::to_string(&flood)?);
            Ok(())
        }
    }
}

fn render(r: &Report) -> String {
    let mut s = format!(
        "bench ingest ({}): {} records in batches of {}\n  acknowledged: {:.0} records/s\n  freshness (ack → /api/v1/national): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms\n  peak RSS: {:.0} MiB\n",
        r.mode, r.records, r.batch_size, r.ack_rate, r.freshness_p50_ms, r.freshness_p99_ms, r.freshness_max_ms, r.peak_rss_mib
    );
    if let Some(rate) = r.target_rate {
        s.push_str(&format!("  pushed at a fixed {rate:.0} records/s\n"));
    }
    match (r.keyed_copy_rate, r.ratio_to_keyed_copy) {
        (Some(copy), Some(ratio)) => s.push_str(&format!(
            "  PostgreSQL COPY into a logged table keyed (partner, record_id), committed: {copy:.0} rows/s; ours is {ratio:.3} of it (the ceiling)\n"
        )),
        _ => s.push_str("  keyed COPY baseline: not measured\n"),
    }
    match (r.copy_rate, r.ratio_to_copy) {
        (Some(copy), Some(ratio)) => s.push_str(&format!(
            "  PostgreSQL COPY into a bare TEMP table: {copy:.0} rows/s; ours is {ratio:.3} of it\n"
        )),
        _ => s.push_str("  bare COPY baseline: not measured\n"),
    }
    s
}

fn batches(
    partner: Partner,
    run: &str,
    records: usize,
    size: usize,
    seed: u64,
) -> Vec<pb::PushSalesRequest> {
    let mut maker = BatchMaker::new(partner, run, seed);
    let mut out = Vec::new();
    let mut i = 0;
    while i < records {
        let n = size.min(records - i);
        out.push(maker.next(n));
        i += n;
    }
    out
}

/// Makes a partner's sales batches, with realistic records and ids unique to the run.
struct BatchMaker {
    partner: Partner,
    run: String,
    rng: StdRng,
    provinces: Vec<&'static str>,
    categories: Vec<&'static str>,
    today: time::Date,
    batches: usize,
    records: usize,
}

impl BatchMaker {
    fn new(partner: Partner, run: &str, seed: u64) -> Self {
        let reference = Reference::get();
        BatchMaker {
            partner,
            run: run.to_string(),
            rng: StdRng::seed_from_u64(seed),
            provinces: reference
                .provinces()
                .iter()
                .map(|p| p.code.as_str())
                .collect(),
            categories: reference
                .categories()
                .iter()
                .map(|c| c.code.as_str())
                .collect(),
            today: agriportal_marketplace::domain::today_in_vietnam(),
            batches: 0,
            records: 0,
        }
    }

    fn next(&mut self, n: usize) -> pb::PushSalesRequest {
        let (partner, run, start) = (self.partner.code(), &self.run, self.records);
        let rng = &mut self.rng;
        let records = (0..n)
            .map(|k| pb::SalesRecord {
                record_id: format!("bench-{run}-{partner}-{}", start + k),
                sale_date: (self.today - time::Duration::days(rng.random_range(0..365)))
                    .to_string(),
                province_code: self.provinces[rng.random_range(0..self.provinces.len())]
                    .to_string(),
                commune_code: String::new(),
                category: self.categories[rng.random_range(0..self.categories.len())].to_string(),
                quantity_grams: rng.random_range(1_000..1_000_000),
                value_vnd: rng.random_range(10_000..50_000_000),
                orders: rng.random_range(1..50),
                household_ref: String::new(),
            })
            .collect();
        let batch = pb::PushSalesRequest {
            batch_id: format!("bench-{run}-{partner}-{}", self.batches),
            records,
        };
        self.batches += 1;
        self.records += n;
        batch
    }
}

/// When the dashboard was polled, and each partner's orders above the baseline then.
type Observations = Vec<(Instant, [i64; 2])>;

#[derive(Default)]
struct Acks {
    /// (ack time, cumulative orders of this partner acknowledged so far).
    points: Vec<(Instant, i64)>,
    total: i64,
}

async fn national_orders(http: &reqwest::Client, url: &str) -> anyhow::Result<[i64; 2]> {
    let v: serde_json::Value = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let get = |p: &str| v["sales"]["by_partner"][p]["orders"].as_i64().unwrap_or(0);
    Ok([get("postmart"), get("voso")])
}

/// The system under benchmark: every service in this process on free ports, in a temporary
/// directory under `--data-dir` unless PostgreSQL and NATS are configured (then on those, with
/// a JetStream stream of the run's own).
pub(crate) struct BenchSystem {
    pub(crate) config: Config,
    pub(crate) grpc_addr: String,
    pub(crate) http_addr: std::net::SocketAddr,
    pub(crate) shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    temp: Option<std::path::PathBuf>,
}

impl BenchSystem {
    /// Starts the system and waits until `/readyz` answers (at most 20 s).
    pub(crate) async fn start(mut settings: Settings, run_id: &str) -> anyhow::Result<Self> {
        let config = &mut settings.platform;
        let distributed = config.database_url.is_some() && config.nats_url.is_some();
        // Under `--data-dir` (the disk the operator chose: `bench scale`'s 10 M lines take
        // about 9 GB, more than many machines' /tmp holds), in a directory of its own that is
        // removed afterwards, so the benchmark starts on an empty store and never touches the
        // data of an `up` there.
        let temp = (!distributed).then(|| {
            config
                .data_dir
                .join(format!("bench-{run_id}-{}", std::process::id()))
        });
        if let Some(dir) = &temp {
            config.data_dir = dir.clone();
            config.database_url = None;
            config.nats_url = None;
        } else {
            // A stream of the run's own, deleted when it stops: the default one may still
            // hold an earlier run's events (one stopped before the gateway applied them all),
            // which the fresh database's gateway would then apply on top of this run's, so
            // `bench scale` found figures above what it pushed.
            config.bus_prefix = format!(
                "{}_bench_{run_id}_{}",
                config.bus_prefix,
                std::process::id()
            );
        }
        config.log = "warn".into();
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let grpc_addr = grpc.local_addr()?.to_string();
        let http_addr = http.local_addr()?;
        let admin = TcpListener::bind("127.0.0.1:0").await?;
        let admin_addr = admin.local_addr()?;
        let shutdown = CancellationToken::new();
        let config = config.clone();
        let server = tokio::spawn(crate::app::run_up(
            settings,
            grpc,
            http,
            admin,
            shutdown.clone(),
        ));
        let system = BenchSystem {
            config,
            grpc_addr,
            http_addr,
            shutdown,
            server,
            temp,
        };
        let web = reqwest::Client::new();
        let ready = format!("http://{admin_addr}/readyz");
        for _ in 0..200 {
            if web
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(system);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        system.shutdown.cancel();
        let why = match system.server.await {
            Ok(Err(err)) => format!("{err:#}"),
            _ => "not ready within 20 s".into(),
        };
        anyhow::bail!("the system did not come up: {why}")
    }

    /// `embedded` or `postgres+jetstream`.
    pub(crate) fn mode(&self) -> &'static str {
        if self.temp.is_some() {
            "embedded"
        } else {
            "postgres+jetstream"
        }
    }

    /// The temporary data directory of the embedded mode (none on PostgreSQL).
    pub(crate) fn data_dir(&self) -> Option<&std::path::Path> {
        self.temp.as_deref()
    }

    /// Stops the system, drains it, and removes its temporary data directory or its stream.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.server.await??;
        if let Some(dir) = &self.temp {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(url) = &self.config.nats_url {
            // Cleanup, like the directory above: a stream left behind must not cost the run
            // its report, so the failure is said and the run goes on.
            if let Err(err) = delete_stream(&self.config, url).await {
                eprintln!(
                    "bench: could not delete the run's stream {} (remove it with `nats stream rm`): {err:#}",
                    agriportal_platform::bus::stream_name(&self.config.bus_prefix)
                );
            }
        }
        Ok(())
    }
}

/// Deletes the JetStream stream of a benchmark's run (`config`'s prefix) on NATS at `url`.
async fn delete_stream(config: &Config, url: &str) -> anyhow::Result<()> {
    let bus = agriportal_platform::bus::JetStreamBus::connect_with(
        url,
        &config.nats,
        &config.bus_prefix,
        config.bus_replicas,
        config.bus_max_bytes,
    )
    .await?;
    bus.delete_stream().await?;
    Ok(())
}

async fn ingest(mut settings: Settings, args: IngestArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.batch_size > 0 && args.batch_size <= 10_000,
        "--batch-size must be 1..=10000"
    );
    // The partner quota off: what is measured is the ingest path. The default quota (20,000
    // records/s per partner after a burst of 100,000) would cap any run of more than 200,000
    // records once the path is faster than it. `bench overload` measures the quota.
    settings
        .section_mut::<Marketplace>()
        .context("the marketplace is not registered")?
        .partner_records_per_second = 0;
    let run_id = format!("{}", time::OffsetDateTime::now_utc().unix_timestamp());
    let system = BenchSystem::start(settings, &run_id).await?;
    let (grpc_addr, http_addr) = (system.grpc_addr.clone(), system.http_addr);
    let config = system.config.clone();
    let auth = token_authenticator(&config)?;
    let per_partner = args.records / 2;
    let mut work = Vec::new();
    for (seed, partner) in Partner::ALL.into_iter().enumerate() {
        let (token, _) = auth.mint(
            Role::Partner {
                partner: partner.code().into(),
            },
            Duration::from_secs(3600),
        )?;
        work.push((
            partner,
            token,
            batches(partner, &run_id, per_partner, args.batch_size, seed as u64),
        ));
    }
    let national_url = format!("http://{http_addr}/api/v1/national");
    let web = reqwest::Client::new();
    let mut baseline = None;
    for _ in 0..100 {
        if let Ok(b) = national_orders(&web, &national_url).await {
            baseline = Some(b);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(baseline) = baseline else {
        system.stop().await?;
        anyhow::bail!("the dashboard did not answer /api/v1/national");
    };

    // Poll the dashboard while pushing, recording when each partner's orders grew.
    let seen: Arc<Mutex<Observations>> = Arc::default();
    let polling = CancellationToken::new();
    let poller = {
        let seen = seen.clone();
        let polling = polling.clone();
        let web = web.clone();
        let url = national_url.clone();
        tokio::spawn(async move {
            while !polling.is_cancelled() {
                if let Ok(orders) = national_orders(&web, &url).await {
                    seen.lock().await.push((
                        Instant::now(),
                        [orders[0] - baseline[0], orders[1] - baseline[1]],
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    if let Some(rate) = args.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of records per second"
        );
    }
    // With `--rate`, each partner's batch i is sent no earlier than its slot at half the rate.
    let gap = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.batch_size as f64 / (rate / 2.0)));
    let started = Instant::now();
    let mut pushers = Vec::new();
    for (partner, token, partner_batches) in work {
        let queue = Arc::new(Mutex::new(partner_batches.into_iter().enumerate()));
        let acks = Arc::new(Mutex::new(Acks::default()));
        let mut tasks = Vec::new();
        for _ in 0..args.concurrency.max(1) {
            let queue = queue.clone();
            let acks = acks.clone();
            let addr = grpc_addr.clone();
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = partner_client(&addr, Some(&token)).await?;
                loop {
                    let Some((index, batch)) = queue.lock().await.next() else {
                        return anyhow::Ok(());
                    };
                    if let Some(gap) = gap {
                        tokio::time::sleep_until((started + gap.mul_f64(index as f64)).into())
                            .await;
                    }
                    let orders: i64 = batch
                        .records
                        .iter()
                        .map(|r| i64::from(r.orders.max(1)))
                        .sum();
                    let result = client.push_sales(batch).await?.into_inner();
                    anyhow::ensure!(
                        result.rejected == 0,
                        "benchmark records were rejected: {:?}",
                        result.rejections.first()
                    );
                    let mut a = acks.lock().await;
                    a.total += orders;
                    let total = a.total;
                    a.points.push((Instant::now(), total));
                }
            }));
        }
        pushers.push((partner, acks, tasks));
    }
    let mut ack_points = Vec::new();
    let mut last_ack = started;
    for (partner, acks, tasks) in pushers {
        for task in tasks {
            task.await??;
        }
        let a = acks.lock().await;
        if let Some((t, _)) = a.points.last() {
            last_ack = last_ack.max(*t);
        }
        ack_points.push((partner, a.points.clone(), a.total));
    }
    let elapsed = last_ack.duration_since(started).as_secs_f64();
    let pushed = per_partner * 2;

    // Wait until the dashboard shows everything.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let latest = seen.lock().await.last().map(|(_, o)| *o);
        if let Some(o) = latest {
            if o[0] >= ack_points[0].2 && o[1] >= ack_points[1].2 {
                break;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the dashboard did not catch up within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    polling.cancel();
    poller.await?;
    let seen = seen.lock().await.clone();
    let mut freshness: Vec<f64> = Vec::new();
    for (index, (_, points, _)) in ack_points.iter().enumerate() {
        for (acked_at, cumulative) in points {
            if let Some((t, _)) = seen
                .iter()
                .find(|(t, o)| t >= acked_at && o[index] >= *cumulative)
            {
                freshness.push(t.duration_since(*acked_at).as_secs_f64() * 1000.0);
            }
        }
    }
    freshness.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| percentile(&freshness, p);
    let peak_rss_mib = peak_rss_kib()
        .map(|k| k as f64 / 1024.0)
        .unwrap_or(f64::NAN);
    let mode = system.mode();
    system.stop().await?;

    let (copy_rate, keyed_copy_rate) = if args.no_copy {
        (None, None)
    } else {
        let url = args
            .copy_url
            .clone()
            .or(config.database_url.clone())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
        let mut rows = Vec::new();
        for (seed, partner) in Partner::ALL.into_iter().enumerate() {
            let partner_batches =
                batches(partner, &run_id, per_partner, args.batch_size, seed as u64);
            rows.extend(partner_batches.into_iter().map(|b| (partner, b)));
        }
        let text = copy_text(&rows);
        let measure = |keyed| {
            let (url, text) = (url.clone(), text.clone());
            async move {
                match copy_baseline(&url, &text, keyed).await {
                    Ok(rate) => Some(rate),
                    Err(err) => {
                        eprintln!("COPY baseline (keyed: {keyed}) skipped: {err:#}");
                        None
                    }
                }
            }
        };
        (measure(false).await, measure(true).await)
    };
    let ack_rate = pushed as f64 / elapsed.max(1e-9);
    Ok(Report {
        mode,
        records: pushed,
        batch_size: args.batch_size,
        ack_rate,
        freshness_p50_ms: pct(0.5),
        freshness_p99_ms: pct(0.99),
        freshness_max_ms: pct(1.0),
        peak_rss_mib,
        target_rate: args.rate,
        copy_rate,
        ratio_to_copy: copy_rate.map(|c| ack_rate / c),
        keyed_copy_rate,
        ratio_to_keyed_copy: keyed_copy_rate.map(|c| ack_rate / c),
    })
}

/// How one call of `bench overload` went.
#[derive(serde::Serialize, serde::Deserialize)]
enum Answer {
    Accepted(Duration),
    RateLimited,
    Shed,
    Busy,
    Failed(String),
}

/// What the child process of `bench flood-client` reports on its last line.
#[derive(serde::Serialize, serde::Deserialize)]
struct FloodOutput {
    answers: Vec<Answer>,
    /// CPU the client used while it pushed (user + system), seconds.
    cpu_seconds: Option<f64>,
}

/// Runs the flooding client in a child process under `nice` and collects what it reports.
async fn flood_in_child(
    nice: i32,
    target: &str,
    token: &str,
    run: &str,
    batch_size: usize,
    batches_per_second: f64,
    length: Duration,
) -> FloodOutput {
    if batches_per_second <= 0.0 {
        return FloodOutput {
            answers: Vec::new(),
            cpu_seconds: None,
        };
    }
    let outcome = async {
        let exe = std::env::current_exe()?;
        let output = tokio::process::Command::new("nice")
            .arg("-n")
            .arg(nice.to_string())
            .arg(exe)
            .args(["--log", "warn", "bench", "flood-client", "--target", target])
            .args(["--token", token, "--run", run])
            .arg("--batch-size")
            .arg(batch_size.to_string())
            .arg("--batches-per-second")
            .arg(batches_per_second.to_string())
            .arg("--seconds")
            .arg(length.as_secs().to_string())
            .stdin(std::process::Stdio::null())
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "flood client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let last = String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        Ok::<_, anyhow::Error>(serde_json::from_str::<FloodOutput>(&last)?)
    };
    outcome.await.unwrap_or_else(|err| FloodOutput {
        answers: vec![Answer::Failed(err.to_string())],
        cpu_seconds: None,
    })
}

/// Pushes `partner`'s batches at `batches_per_second` for `length`, open loop: each call starts
/// on schedule whatever the previous ones are doing, so a slow server cannot lower the offered
/// load (and hide its own latency). Latency runs from the scheduled start to the answer.
async fn open_loop(
    client: crate::client::PartnerClient,
    maker: Arc<Mutex<BatchMaker>>,
    batch_size: usize,
    batches_per_second: f64,
    length: Duration,
) -> Vec<Answer> {
    if batches_per_second <= 0.0 {
        return Vec::new();
    }
    let period = Duration::from_secs_f64(1.0 / batches_per_second);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    while started.elapsed() < length {
        let scheduled = ticks.tick().await.into_std();
        let batch = maker.lock().await.next(batch_size);
        let mut client = client.clone();
        calls.spawn(async move {
            match client.push_sales(batch).await {
                Ok(_) => Answer::Accepted(scheduled.elapsed()),
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    if status.message().contains("concurrent requests") {
                        Answer::Shed
                    } else if status.message().contains("calls in flight") {
                        Answer::Busy
                    } else {
                        Answer::RateLimited
                    }
                }
                Err(status) => Answer::Failed(format!("{:?}: {}", status.code(), status.message())),
            }
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = calls.join_next().await {
        answers.push(answer.unwrap_or_else(|err| Answer::Failed(err.to_string())));
    }
    answers
}

/// One phase's measurements, summed over the rounds.
#[derive(Default)]
struct PhaseRun {
    steady: Vec<Answer>,
    flood: Vec<Answer>,
    cpu: Duration,
    wall: Duration,
    /// Resident memory after the latest round.
    rss_mib: Option<f64>,
    /// CPU of the flooding client's child process, when it ran in one.
    flood_cpu_seconds: Option<f64>,
}

fn tally(answers: &[Answer]) -> Calls {
    let mut calls = Calls {
        sent: answers.len(),
        ..Calls::default()
    };
    for answer in answers {
        match answer {
            Answer::Accepted(_) => calls.accepted += 1,
            Answer::RateLimited => calls.rate_limited += 1,
            Answer::Shed => calls.shed += 1,
            Answer::Busy => calls.busy += 1,
            Answer::Failed(why) => {
                if calls.failed == 0 {
                    eprintln!("a call failed: {why}");
                }
                calls.failed += 1;
            }
        }
    }
    let latencies = accepted_ms(answers);
    let pct = |p: f64| percentile(&latencies, p);
    calls.p50_ms = pct(0.5);
    calls.p99_ms = pct(0.99);
    calls.max_ms = pct(1.0);
    calls.refused_fraction = if calls.sent == 0 {
        0.0
    } else {
        (calls.rate_limited + calls.shed + calls.busy) as f64 / calls.sent as f64
    };
    calls
}

/// Latencies of the answered calls in milliseconds, sorted.
fn accepted_ms(answers: &[Answer]) -> Vec<f64> {
    let mut latencies: Vec<f64> = answers
        .iter()
        .filter_map(|answer| match answer {
            Answer::Accepted(latency) => Some(latency.as_secs_f64() * 1000.0),
            _ => None,
        })
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    latencies
}

/// The 95 % bootstrap interval of `p99(test) / p99(base) - 1`: both samples are drawn again
/// with replacement 1,000 times. A rise whose interval straddles a threshold is not evidence
/// either way; one whose whole interval is below it is.
fn bootstrap_p99_rise(base: &[f64], test: &[f64]) -> (f64, f64) {
    if base.is_empty() || test.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    // Fixed seed: the same latencies give the same interval.
    let mut rng = StdRng::seed_from_u64(99);
    let draw = |sample: &[f64], rng: &mut StdRng| {
        let mut again: Vec<f64> = (0..sample.len())
            .map(|_| sample[rng.random_range(0..sample.len())])
            .collect();
        again.sort_by(|a, b| a.total_cmp(b));
        percentile(&again, 0.99)
    };
    let mut rises: Vec<f64> = (0..1_000)
        .map(|_| draw(test, &mut rng) / draw(base, &mut rng) - 1.0)
        .collect();
    rises.sort_by(|a, b| a.total_cmp(b));
    (percentile(&rises, 0.025), percentile(&rises, 0.975))
}

/// The `p` quantile (0..=1) of sorted values, nearest rank; NaN when there are none.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU time this process has used since `started` (a [`cpu_time`] reading).
fn cpu_since(started: Option<Duration>) -> Option<Duration> {
    Some(cpu_time()?.saturating_sub(started?))
}

/// CPU time this process has used (user + system), from `/proc/self/stat`.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// Resident memory of this process now, KiB (`VmRSS`).
pub(crate) fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn overload(mut settings: Settings, args: OverloadArgs) -> anyhow::Result<OverloadReport> {
    anyhow::ensure!(
        args.batch_size > 0 && args.batch_size <= 10_000,
        "--batch-size must be 1..=10000"
    );
    anyhow::ensure!(
        args.steady_batch_size > 0 && args.steady_batch_size <= 10_000,
        "--steady-batch-size must be 1..=10000"
    );
    anyhow::ensure!(args.quota > 0, "--quota must be above 0");
    anyhow::ensure!(
        args.flood_factor > 0.0 && args.steady_fraction > 0.0,
        "--flood-factor and --steady-fraction must be above 0"
    );
    let burst = args.burst.unwrap_or(args.quota);
    anyhow::ensure!(
        burst as usize >= args.batch_size,
        "--burst ({burst}) must hold at least one batch (--batch-size {})",
        args.batch_size
    );
    let run_id = format!("ovl{}", time::OffsetDateTime::now_utc().unix_timestamp());
    let marketplace = settings
        .section_mut::<Marketplace>()
        .context("the marketplace is not registered")?;
    marketplace.partner_records_per_second = args.quota;
    marketplace.partner_burst_records = burst;
    let system = BenchSystem::start(settings, &run_id).await?;
    let grpc_addr = system.grpc_addr.clone();
    let config = system.config.clone();
    let auth = token_authenticator(&config)?;
    let mut clients = Vec::new();
    let mut tokens = Vec::new();
    for partner in [Partner::Postmart, Partner::Voso] {
        let (token, _) = auth.mint(
            Role::Partner {
                partner: partner.code().into(),
            },
            Duration::from_secs(3600),
        )?;
        clients.push(partner_client(&grpc_addr, Some(&token)).await?);
        tokens.push(token);
    }
    let (flooder, steady) = (clients[0].clone(), clients[1].clone());
    let flood_token = &tokens[0];
    let flood_maker = Arc::new(Mutex::new(BatchMaker::new(Partner::Postmart, &run_id, 1)));
    let steady_maker = Arc::new(Mutex::new(BatchMaker::new(Partner::Voso, &run_id, 2)));
    let per_batch = args.batch_size as f64;
    let steady_rate = f64::from(args.quota) * args.steady_fraction / args.steady_batch_size as f64;
    let length = Duration::from_secs(args.seconds.max(1));
    let flood_nice = (!args.flood_in_process).then_some(args.flood_process_nice);

    // Warm up (caches, connections, the SQLite files) before anything is measured.
    open_loop(
        steady.clone(),
        steady_maker.clone(),
        args.steady_batch_size,
        steady_rate,
        Duration::from_secs(3),
    )
    .await;

    let kinds = [
        ("steady alone", 0.0),
        ("beside a partner at its quota", 1.0),
        ("beside a flood", args.flood_factor),
    ];
    let mut runs: Vec<PhaseRun> = kinds.iter().map(|_| PhaseRun::default()).collect();
    for round in 0..args.rounds.max(1) {
        for (phase, ((_, factor), run)) in kinds.iter().zip(runs.iter_mut()).enumerate() {
            let flood_rate = f64::from(args.quota) * factor / per_batch;
            let (cpu_before, wall_before) = (cpu_time(), Instant::now());
            let flood = async {
                match flood_nice {
                    Some(nice) => {
                        flood_in_child(
                            nice,
                            &grpc_addr,
                            flood_token,
                            &format!("{run_id}-r{round}p{phase}"),
                            args.batch_size,
                            flood_rate,
                            length,
                        )
                        .await
                    }
                    None => FloodOutput {
                        answers: open_loop(
                            flooder.clone(),
                            flood_maker.clone(),
                            args.batch_size,
                            flood_rate,
                            length,
                        )
                        .await,
                        cpu_seconds: None,
                    },
                }
            };
            let (steady_answers, flood) = tokio::join!(
                open_loop(
                    steady.clone(),
                    steady_maker.clone(),
                    args.steady_batch_size,
                    steady_rate,
                    length
                ),
                flood,
            );
            run.steady.extend(steady_answers);
            run.flood.extend(flood.answers);
            if let Some(seconds) = flood.cpu_seconds {
                run.flood_cpu_seconds = Some(run.flood_cpu_seconds.unwrap_or(0.0) + seconds);
            }
            if let Some(cpu) = cpu_since(cpu_before) {
                run.cpu += cpu;
            }
            run.wall += wall_before.elapsed();
            run.rss_mib = rss_kib().map(|k| k as f64 / 1024.0);
            // Let the flooding partner's bucket refill, so phases do not leak into each other.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let phases: Vec<Phase> = kinds
        .iter()
        .zip(&runs)
        .map(|((name, factor), run)| Phase {
            name: name.to_string(),
            flood_records_per_second: f64::from(args.quota) * factor,
            steady: tally(&run.steady),
            flood: tally(&run.flood),
            rss_mib: run.rss_mib.unwrap_or(f64::NAN),
            cpu_cores: run.cpu.as_secs_f64() / run.wall.as_secs_f64().max(1e-9),
            flood_client_cpu_cores: run
                .flood_cpu_seconds
                .map(|cpu| cpu / run.wall.as_secs_f64().max(1e-9)),
            wall_seconds: run.wall.as_secs_f64(),
        })
        .collect();
    let peak_rss_mib = peak_rss_kib()
        .map(|k| k as f64 / 1024.0)
        .unwrap_or(f64::NAN);
    let mode = system.mode();
    system.stop().await?;
    let p99 = |i: usize| phases[i].steady.p99_ms;
    let latencies: Vec<Vec<f64>> = runs.iter().map(|r| accepted_ms(&r.steady)).collect();
    Ok(OverloadReport {
        mode,
        quota: args.quota,
        burst,
        batch_size: args.batch_size,
        steady_batch_size: args.steady_batch_size,
        rounds: args.rounds.max(1),
        seconds: args.seconds.max(1),
        p99_rise_vs_quota: p99(2) / p99(1) - 1.0,
        p99_rise_vs_alone: p99(2) / p99(0) - 1.0,
        p99_rise_vs_quota_interval: bootstrap_p99_rise(&latencies[1], &latencies[2]),
        p99_rise_vs_alone_interval: bootstrap_p99_rise(&latencies[0], &latencies[2]),
        phases,
        peak_rss_mib,
        flood_process_nice: flood_nice,
    })
}

fn render_overload(r: &OverloadReport) -> String {
    let mut s = format!(
        "bench overload ({}): quota {} records/s per partner (burst {}), batches of {} (steady partner {}), {} rounds of {} s per phase\n\
         steady partner voso at a fixed rate; flooding partner postmart idle, at its quota, then over it{}\n\n\
         {:<32} {:>10} {:>9} {:>9} {:>9} {:>8} | {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} | {:>8} {:>5}\n",
        r.mode,
        r.quota,
        r.burst,
        r.batch_size,
        r.steady_batch_size,
        r.rounds,
        r.seconds,
        match r.flood_process_nice {
            Some(nice) => format!(" (its client in a child process, nice {nice})"),
            None => String::new(),
        },
        "phase",
        "flood r/s",
        "voso p50",
        "voso p99",
        "voso max",
        "voso ok",
        "pm sent",
        "pm ok",
        "pm rate",
        "pm busy",
        "pm shed",
        "pm ref%",
        "RSS MiB",
        "CPU"
    );
    for p in &r.phases {
        s.push_str(&format!(
            "{:<32} {:>10.0} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>4}/{:<3} | {:>8} {:>8} {:>8} {:>8} {:>8} {:>6.1}% | {:>8.0} {:>5.2}\n",
            p.name,
            p.flood_records_per_second,
            p.steady.p50_ms,
            p.steady.p99_ms,
            p.steady.max_ms,
            p.steady.accepted,
            p.steady.sent,
            p.flood.sent,
            p.flood.accepted,
            p.flood.rate_limited,
            p.flood.busy,
            p.flood.shed,
            p.flood.refused_fraction * 100.0,
            p.rss_mib,
            p.cpu_cores
        ));
    }
    s.push_str(&format!(
        "\nvoso p99 beside the flood vs beside a partner at its quota: {:+.1}% (95% bootstrap interval {:+.1}% .. {:+.1}%)\n\
         vs alone: {:+.1}% ({:+.1}% .. {:+.1}%)\npeak RSS: {:.0} MiB\n",
        r.p99_rise_vs_quota * 100.0,
        r.p99_rise_vs_quota_interval.0 * 100.0,
        r.p99_rise_vs_quota_interval.1 * 100.0,
        r.p99_rise_vs_alone * 100.0,
        r.p99_rise_vs_alone_interval.0 * 100.0,
        r.p99_rise_vs_alone_interval.1 * 100.0,
        r.peak_rss_mib
    ));
    if let Some(cpu) = r.phases.last().and_then(|p| p.flood_client_cpu_cores) {
        s.push_str(&format!(
            "flooding client's own CPU beside the flood (child process, not in the CPU column): {cpu:.2} cores\n"
        ));
    }
    s
}

/// COPY of the same rows into a bare table, rows per second.
/// The rows of `bench ingest`'s batches as COPY text, each with its partner.
fn copy_text(batches: &[(Partner, pb::PushSalesRequest)]) -> (String, usize) {
    let mut text = String::new();
    let mut rows = 0usize;
    for (partner, b) in batches {
        for r in &b.records {
            rows += 1;
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                partner.code(),
                r.record_id,
                r.sale_date,
                r.province_code,
                r.commune_code,
                r.category,
                r.quantity_grams,
                r.value_vnd,
                r.orders
            ));
        }
    }
    (text, rows)
}

/// COPY of the rows in one transaction, timed from the COPY to its commit. `keyed`: into a
/// logged table with the marketplace's key, PRIMARY KEY (partner, record_id), and the
/// server's own `synchronous_commit`, so the commit waits for the WAL on disk as ours does;
/// else into a TEMP table (no WAL, no key), the figure earlier runs reported.
async fn copy_baseline(url: &str, text: &(String, usize), keyed: bool) -> anyhow::Result<f64> {
    let (text, rows) = text;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    // A name of this run alone, so runs beside each other do not meet.
    let table = format!(
        "bench_copy_{}_{}",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000
    );
    let columns = "partner TEXT NOT NULL, record_id TEXT NOT NULL, sale_date TEXT, \
                   province_code TEXT, commune_code TEXT, category TEXT, quantity_grams BIGINT, \
                   value_vnd BIGINT, orders BIGINT";
    let create = if keyed {
        format!("CREATE TABLE {table} ({columns}, PRIMARY KEY (partner, record_id))")
    } else {
        format!("CREATE TEMP TABLE {table} ({columns})")
    };
    sqlx::query(&create).execute(&mut conn).await?;
    let started = Instant::now();
    let copied = async {
        let mut tx = conn.begin().await?;
        let mut copy = tx.copy_in_raw(&format!("COPY {table} FROM STDIN")).await?;
        copy.send(text.clone().into_bytes()).await?;
        copy.finish().await?;
        tx.commit().await?;
        anyhow::Ok(())
    }
    .await;
    let secs = started.elapsed().as_secs_f64();
    let dropped = sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(&mut conn)
        .await;
    conn.close().await?;
    copied?;
    dropped?;
    Ok(*rows as f64 / secs.max(1e-9))
}

/// Peak resident memory of this process, KiB (`VmHWM`).
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
