//! `agriportal bench scale`: a country's worth of data through the real store code, and what
//! the dashboards' reads cost at each size (issue 13). The system runs in-process as in the
//! other benchmarks; households and then sales lines go in through the partners' gRPC push
//! path (the same validation, tables, events and rollups as production, the rate limit off),
//! in batches of up to 10,000 with several in flight. At each step (`--lines`, e.g. 1 M and
//! 10 M lines in the store) it waits until the gateway shows everything acknowledged, checks
//! every figure it reads against the sums of what was acknowledged (exact: one gram off fails
//! the run), then measures each endpoint's latency at a fixed rate with `bench read`'s loops
//! while a partner keeps pushing at `--write-rate`, and reports memory and disk. The growth of
//! each p99 from the first step to the last is the figure the issue asks for.

mod expected;
mod generator;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agriportal_marketplace::Marketplace;
use agriportal_platform::auth::Role;
use agriportal_platform::backoff::Backoff;
use agriportal_platform::context::token_authenticator;
use agriportal_platform::kit::Settings;
use agriportal_platform::reference::Partner;
use anyhow::Context as _;
use clap::Args;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::bench::{peak_rss_kib, percentile, rss_kib, BenchSystem};
use crate::bench_read::{closed_loop, open_loop, year_series};
use crate::client::{partner_client, PartnerClient};
use expected::{check, headline_of, Answers, Expected};
use generator::{Batch, Generator, Kind};

/// The province whose answer is read and checked (Hồ Chí Minh City, as `bench read` reads).
const PROVINCE: &str = "79";

/// Settings of `bench scale`.
#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Sales lines in the store at each step, ascending and comma-separated; the figures are
    /// checked and the reads measured at each.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000_000u64, 10_000_000])]
    pub lines: Vec<u64>,
    /// Households onboarded (split between the partners), before the first sales line.
    #[arg(long, default_value_t = 5_000_000)]
    pub households: u64,
    /// Sales lines per second a partner pushes while the reads are measured.
    #[arg(long, default_value_t = 1_000)]
    pub write_rate: u32,
    /// Records per batch while loading (the protocol's limit is 10,000).
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: usize,
    /// Batches in flight per partner while loading.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Requests per second of each endpoint's latency loop.
    #[arg(long, default_value_t = 1_000)]
    pub read_rate: u32,
    /// Seconds of each endpoint's latency loop.
    #[arg(long, default_value_t = 5)]
    pub latency_seconds: u64,
    /// Seconds of closed-loop load per endpoint (its most requests per second); 0 skips it.
    #[arg(long, default_value_t = 3)]
    pub throughput_seconds: u64,
    /// Connections of the closed loop, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// How long a push refused as UNAVAILABLE (the server shedding load) is retried, with
    /// backoff, before the run fails.
    #[arg(long, default_value_t = 120)]
    pub retry_seconds: u64,
    /// How long the gateway may take, after the last acknowledgement of a step, to show it all.
    #[arg(long, default_value_t = 1_800)]
    pub catch_up_seconds: u64,
}

/// One endpoint's figures at one step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointFigures {
    /// Path and query.
    pub path: String,
    /// Latency at `read_rate`, 50th percentile, ms (from each request's scheduled start).
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Answers per second of the latency loop.
    pub answered_rps: f64,
    /// Answers per second of the closed loop (none when `--throughput-seconds 0`).
    pub max_rps: Option<f64>,
    /// Answers other than 200, or failed requests, in both loops.
    pub errors: u64,
}

/// What one step measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepReport {
    /// Sales lines acknowledged when the figures were checked.
    pub lines: u64,
    /// Households acknowledged.
    pub households: u64,
    /// Lines this step loaded (the rest came from earlier steps and their writes).
    pub loaded: u64,
    /// Seconds the loading took, to the last acknowledgement.
    pub load_seconds: f64,
    /// Lines acknowledged per second while loading.
    pub lines_per_second: f64,
    /// Seconds from the last acknowledgement until the gateway showed it all.
    pub catch_up_seconds: f64,
    /// Figures read from the gateway and found equal to the sums pushed (the run fails on any
    /// other outcome).
    pub figures_checked: usize,
    /// National households, grams and orders the gateway showed (and the run had pushed).
    pub national: [i64; 3],
    /// Per endpoint, as measured while writing.
    pub endpoints: Vec<EndpointFigures>,
    /// Lines pushed and acknowledged while the reads were measured.
    pub written_while_reading: u64,
    /// Their rate, lines per second.
    pub write_rate: f64,
    /// Pushes retried after UNAVAILABLE so far.
    pub retries: u64,
    /// Resident memory once the figures were checked, before the reads, MiB: the system
    /// holding the step's data, before the read loops' own requests and buffers join it.
    pub rss_before_reads_mib: f64,
    /// Resident memory at the step's end (after the reads), MiB.
    pub rss_mib: f64,
    /// Peak resident memory so far, MiB.
    pub peak_rss_mib: f64,
    /// Bytes of the embedded data directory (SQLite files and the bus), none on PostgreSQL.
    pub data_bytes: Option<u64>,
}

/// One endpoint's p99 at the last step against the first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Growth {
    /// Path (the series' dates are those of the first step).
    pub path: String,
    /// p99 at the first step, ms.
    pub first_p99_ms: f64,
    /// p99 at the last step, ms.
    pub last_p99_ms: f64,
    /// last / first.
    pub ratio: f64,
}

/// What `bench scale` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScaleReport {
    /// `embedded` or `postgres+jetstream`.
    pub mode: &'static str,
    /// Seconds the households took to load.
    pub households_seconds: f64,
    /// Records per loading batch.
    pub batch_size: usize,
    /// Requests per second of each latency loop.
    pub read_rate: u32,
    /// Lines per second asked while reading.
    pub write_rate: u32,
    /// Each step.
    pub steps: Vec<StepReport>,
    /// Per endpoint, the p99 of the last step against the first.
    pub growth: Vec<Growth>,
}

/// Runs `bench scale`.
pub async fn scale(mut settings: Settings, args: ScaleArgs) -> anyhow::Result<ScaleReport> {
    validate(&args)?;
    // One client address makes every read, and the loader is one partner at full speed: the
    // per-client and per-partner limits would measure only themselves.
    settings.platform.http_rate_per_second = 0;
    settings
        .section_mut::<Marketplace>()
        .context("the marketplace is not registered")?
        .partner_records_per_second = 0;
    let run_id = format!("scale{}", time::OffsetDateTime::now_utc().unix_timestamp());
    let system = BenchSystem::start(settings, &run_id).await?;
    let result = run(&system, &args, &run_id).await;
    let mode = system.mode();
    system.stop().await?;
    let (households_seconds, steps) = result?;
    let growth = growth(&steps);
    Ok(ScaleReport {
        mode,
        households_seconds,
        batch_size: args.batch_size,
        read_rate: args.read_rate,
        write_rate: args.write_rate,
        steps,
        growth,
    })
}

fn validate(args: &ScaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.lines.is_empty(), "--lines needs at least one size");
    anyhow::ensure!(
        args.lines.first().is_some_and(|n| *n > 0) && args.lines.windows(2).all(|w| w[0] < w[1]),
        "--lines must be ascending sizes above 0, e.g. 1000000,10000000 (got {:?})",
        args.lines
    );
    anyhow::ensure!(
        args.batch_size > 0 && args.batch_size <= 10_000,
        "--batch-size must be 1..=10000"
    );
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(args.write_rate > 0, "--write-rate must be at least 1");
    anyhow::ensure!(args.read_rate > 0, "--read-rate must be at least 1");
    anyhow::ensure!(
        args.latency_seconds > 0,
        "--latency-seconds must be at least 1"
    );
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    Ok(())
}

async fn run(
    system: &BenchSystem,
    args: &ScaleArgs,
    run_id: &str,
) -> anyhow::Result<(f64, Vec<StepReport>)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections.max(64))
        .build()?;
    let base = format!("http://{}", system.http_addr);
    let empty = get_json(&http, &format!("{base}/api/v1/national")).await?;
    anyhow::ensure!(
        headline_of(&empty) == [Some(0), Some(0), Some(0)],
        "bench scale needs an empty store, since it checks every figure against what it pushed; \
         the gateway already shows households, grams and orders {:?} (use a fresh database)",
        headline_of(&empty)
    );
    let pusher = Arc::new(Pusher::connect(system, args).await?);
    let generator = Arc::new(Mutex::new(Generator::new(run_id)));

    let started = Instant::now();
    load(&pusher, &generator, args, Kind::Households, args.households).await?;
    let households_seconds = started.elapsed().as_secs_f64();
    // Progress on standard error: a full-size run takes hours, and the report comes at its end.
    eprintln!(
        "bench scale: {} households loaded in {households_seconds:.1} s",
        args.households
    );

    let mut steps = Vec::new();
    for &target in &args.lines {
        steps.push(step(system, args, &http, &base, &pusher, &generator, target).await?);
    }
    Ok((households_seconds, steps))
}

/// Loads up to `target` lines, checks the figures, measures the reads while writing.
async fn step(
    system: &BenchSystem,
    args: &ScaleArgs,
    http: &reqwest::Client,
    base: &str,
    pusher: &Arc<Pusher>,
    generator: &Arc<Mutex<Generator>>,
    target: u64,
) -> anyhow::Result<StepReport> {
    let before = pusher.expected.lock().await.lines;
    let started = Instant::now();
    load(pusher, generator, args, Kind::Sales, target).await?;
    let load_seconds = started.elapsed().as_secs_f64();
    let expected = pusher.expected.lock().await.clone();
    let loaded = expected.lines - before;
    eprintln!(
        "bench scale: {} lines ({loaded} loaded in {load_seconds:.1} s); waiting for the gateway",
        expected.lines
    );

    let acked = Instant::now();
    let national = caught_up(
        http,
        base,
        &expected,
        Duration::from_secs(args.catch_up_seconds),
    )
    .await?;
    let catch_up_seconds = acked.elapsed().as_secs_f64();
    let today = agriportal_marketplace::domain::today_in_vietnam();
    let paths = [
        "/api/v1/national".to_string(),
        format!("/api/v1/provinces/{PROVINCE}"),
        year_series("day", today),
        year_series("month", today),
    ];
    let province = get_json(http, &format!("{base}{}", paths[1])).await?;
    let by_day = get_json(http, &format!("{base}{}", paths[2])).await?;
    let by_month = get_json(http, &format!("{base}{}", paths[3])).await?;
    let answers = Answers {
        national: &national,
        province: (PROVINCE, &province),
        by_day: &by_day,
        by_month: &by_month,
        from: today - time::Duration::days(364),
        to: today,
    };
    let figures_checked = check(&expected, &answers).map_err(|mismatches| {
        let shown: Vec<&str> = mismatches.iter().take(20).map(String::as_str).collect();
        anyhow::anyhow!(
            "at {} lines the gateway's figures differ from what was pushed ({} figures):\n  {}",
            expected.lines,
            mismatches.len(),
            shown.join("\n  ")
        )
    })?;
    let data_bytes = system.data_dir().map(dir_bytes);
    let rss_before_reads_mib = rss_kib().map_or(f64::NAN, |k| k as f64 / 1024.0);
    eprintln!(
        "bench scale: {figures_checked} figures exact {catch_up_seconds:.1} s after the last ack; measuring reads"
    );

    let writing = CancellationToken::new();
    let writer = tokio::spawn(write(
        pusher.clone(),
        generator.clone(),
        args.write_rate,
        args.batch_size,
        writing.clone(),
    ));
    let measured = measure(http, base, &paths, args).await;
    writing.cancel();
    let (written, write_seconds) = writer.await.context("the writer stopped")??;
    Ok(StepReport {
        lines: expected.lines,
        households: expected.household_records,
        loaded,
        load_seconds,
        lines_per_second: loaded as f64 / load_seconds.max(1e-9),
        catch_up_seconds,
        figures_checked,
        national: expected.headline(),
        endpoints: measured,
        written_while_reading: written,
        write_rate: written as f64 / write_seconds.max(1e-9),
        retries: pusher.retries.load(Ordering::Relaxed),
        rss_before_reads_mib,
        rss_mib: rss_kib().map_or(f64::NAN, |k| k as f64 / 1024.0),
        peak_rss_mib: peak_rss_kib().map_or(f64::NAN, |k| k as f64 / 1024.0),
        data_bytes,
    })
}

/// Each path's closed-loop throughput (unless skipped) and open-loop latency.
async fn measure(
    http: &reqwest::Client,
    base: &str,
    paths: &[String],
    args: &ScaleArgs,
) -> Vec<EndpointFigures> {
    let mut out = Vec::new();
    for path in paths {
        let url = format!("{base}{path}");
        let throughput = if args.throughput_seconds > 0 {
            let seconds = Duration::from_secs(args.throughput_seconds);
            Some(closed_loop(http, &url, args.connections, seconds).await)
        } else {
            None
        };
        let latency = open_loop(
            http,
            &url,
            args.read_rate,
            Duration::from_secs(args.latency_seconds),
        )
        .await;
        out.push(EndpointFigures {
            path: path.clone(),
            p50_ms: percentile(&latency.sorted_ms, 0.50),
            p99_ms: percentile(&latency.sorted_ms, 0.99),
            answered_rps: latency.sorted_ms.len() as f64 / latency.wall.as_secs_f64().max(1e-9),
            max_rps: throughput
                .as_ref()
                .map(|t| t.ok as f64 / t.wall.as_secs_f64().max(1e-9)),
            errors: latency.errors.values().sum::<u64>() + throughput.map_or(0, |t| t.errors()),
        });
    }
    out
}

fn growth(steps: &[StepReport]) -> Vec<Growth> {
    let (Some(first), Some(last)) = (steps.first(), steps.last()) else {
        return Vec::new();
    };
    if steps.len() < 2 {
        return Vec::new();
    }
    first
        .endpoints
        .iter()
        .zip(&last.endpoints)
        .map(|(a, b)| Growth {
            path: a.path.clone(),
            first_p99_ms: a.p99_ms,
            last_p99_ms: b.p99_ms,
            ratio: b.p99_ms / a.p99_ms,
        })
        .collect()
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<serde_json::Value> {
    let response = http.get(url).send().await?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    Ok(response.json().await?)
}

/// Polls `/api/v1/national` until it shows everything in `expected` (then returns that
/// answer), failing if it shows more (counted twice) or has not caught up within `limit`.
async fn caught_up(
    http: &reqwest::Client,
    base: &str,
    expected: &Expected,
    limit: Duration,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{base}/api/v1/national");
    let want = expected.headline().map(Some);
    let deadline = Instant::now() + limit;
    loop {
        let national = get_json(http, &url).await?;
        let got = headline_of(&national);
        if got == want {
            return Ok(national);
        }
        anyhow::ensure!(
            got.iter().zip(&want).all(|(g, w)| g <= w),
            "the gateway shows more than was pushed (households, grams, orders): {got:?} > {want:?}"
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway showed {got:?} of {want:?} (households, grams, orders) {} s after the last acknowledgement",
            limit.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Both partners' clients and the sums of everything acknowledged.
struct Pusher {
    clients: [PartnerClient; 2],
    expected: Mutex<Expected>,
    retry_for: Duration,
    retries: AtomicU64,
}

impl Pusher {
    async fn connect(system: &BenchSystem, args: &ScaleArgs) -> anyhow::Result<Self> {
        let auth = token_authenticator(&system.config)?;
        let mut clients = Vec::new();
        for partner in Partner::ALL {
            let role = Role::Partner {
                partner: partner.code().into(),
            };
            // A day: a full-size run in a debug build takes hours.
            let (token, _) = auth.mint(role, Duration::from_secs(24 * 3600))?;
            clients.push(partner_client(&system.grpc_addr, Some(&token)).await?);
        }
        let clients: [PartnerClient; 2] = clients
            .try_into()
            .map_err(|_| anyhow::anyhow!("one client per partner"))?;
        Ok(Pusher {
            clients,
            expected: Mutex::default(),
            retry_for: Duration::from_secs(args.retry_seconds),
            retries: AtomicU64::new(0),
        })
    }

    /// Pushes `batch` as `partner`, retrying UNAVAILABLE (the same batch id, so a batch that
    /// was applied before its answer was lost answers its first result), and adds it to the
    /// sums once acknowledged whole.
    async fn push(&self, partner: Partner, batch: Batch) -> anyhow::Result<u64> {
        let (id, sums) = match &batch {
            Batch::Households(b) => (&b.batch_id, Expected::of_households(partner, &b.records)?),
            Batch::Sales(b) => (&b.batch_id, Expected::of_sales(partner, &b.records)?),
        };
        let records = sums.lines + sums.household_records;
        let mut client = self.clients[usize::from(partner == Partner::Voso)].clone();
        let deadline = Instant::now() + self.retry_for;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let answer = match &batch {
                Batch::Households(b) => client.push_onboarding(b.clone()).await,
                Batch::Sales(b) => client.push_sales(b.clone()).await,
            };
            match answer {
                Ok(result) => {
                    let result = result.into_inner();
                    anyhow::ensure!(
                        result.rejected == 0,
                        "batch {id}: {} records were rejected, the first: {:?}",
                        result.rejected,
                        result.rejections.first()
                    );
                    anyhow::ensure!(
                        u64::from(result.accepted) == records,
                        "batch {id}: {} of {records} records were new (the run's keys are unique)",
                        result.accepted
                    );
                    self.expected.lock().await.merge(&sums)?;
                    return Ok(records);
                }
                Err(status)
                    if status.code() == tonic::Code::Unavailable && Instant::now() < deadline =>
                {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(status) if status.code() == tonic::Code::Unavailable => anyhow::bail!(
                    "batch {id} was still refused as UNAVAILABLE after {} s of retries: {}",
                    self.retry_for.as_secs(),
                    status.message()
                ),
                Err(status) => anyhow::bail!(
                    "batch {id} failed: {:?}: {}",
                    status.code(),
                    status.message()
                ),
            }
        }
    }
}

/// Pushes batches of `kind` until `target` records of that kind have been generated in all,
/// `concurrency` batches in flight per partner; fails at the first batch that fails.
async fn load(
    pusher: &Arc<Pusher>,
    generator: &Arc<Mutex<Generator>>,
    args: &ScaleArgs,
    kind: Kind,
    target: u64,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency * Partner::ALL.len() {
        let (pusher, generator) = (pusher.clone(), generator.clone());
        let size = args.batch_size as u64;
        tasks.spawn(async move {
            loop {
                let Some((partner, batch)) = generator.lock().await.next(kind, size, target) else {
                    return anyhow::Ok(());
                };
                pusher.push(partner, batch).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        // Dropping the set on an error aborts the other pushers.
        done.context("a pusher stopped")??;
    }
    Ok(())
}

/// Pushes sales lines at `rate` per second (batches of a tenth of a second's worth, one after
/// another) until `stop`; returns the lines acknowledged and the seconds it wrote.
async fn write(
    pusher: Arc<Pusher>,
    generator: Arc<Mutex<Generator>>,
    rate: u32,
    batch_size: usize,
    stop: CancellationToken,
) -> anyhow::Result<(u64, f64)> {
    let size = (u64::from(rate) / 10).clamp(1, batch_size as u64);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(size as f64 / f64::from(rate)));
    // A push slower than its slot delays the next one: the rate reported is the one achieved.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut written = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let Some((partner, batch)) = generator.lock().await.next(Kind::Sales, size, u64::MAX)
        else {
            break;
        };
        written += pusher.push(partner, batch).await?;
    }
    Ok((written, started.elapsed().as_secs_f64()))
}

/// The report as a table per step, then the growth of each p99.
pub fn render(r: &ScaleReport) -> String {
    let mut s = format!(
        "bench scale ({}): batches of {}; reads at {} requests/s per endpoint while writing {} lines/s\n\
         households loaded in {:.1} s\n",
        r.mode, r.batch_size, r.read_rate, r.write_rate, r.households_seconds
    );
    for step in &r.steps {
        s.push_str(&format!(
            "\nat {} lines, {} households: loaded {} lines in {:.1} s ({:.0} lines/s), shown {:.1} s after the last ack; {} figures checked, all exact\n",
            step.lines,
            step.households,
            step.loaded,
            step.load_seconds,
            step.lines_per_second,
            step.catch_up_seconds,
            step.figures_checked
        ));
        s.push_str(&format!(
            "  {:<84} {:>8} {:>8} {:>10} {:>10} {:>6}\n",
            "endpoint", "p50 ms", "p99 ms", "answered/s", "max/s", "errors"
        ));
        for e in &step.endpoints {
            s.push_str(&format!(
                "  {:<84} {:>8.2} {:>8.2} {:>10.0} {:>10} {:>6}\n",
                e.path,
                e.p50_ms,
                e.p99_ms,
                e.answered_rps,
                e.max_rps.map_or_else(|| "-".into(), |m| format!("{m:.0}")),
                e.errors
            ));
        }
        s.push_str(&format!(
            "  written while reading: {} lines ({:.0} lines/s); retries {}; RSS {:.0} MiB before the reads, {:.0} MiB after (peak {:.0} MiB); data {}\n",
            step.written_while_reading,
            step.write_rate,
            step.retries,
            step.rss_before_reads_mib,
            step.rss_mib,
            step.peak_rss_mib,
            step.data_bytes
                .map_or_else(|| "not measured (PostgreSQL)".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0))
        ));
    }
    if !r.growth.is_empty() {
        s.push_str("\np99, last step against the first:\n");
        for g in &r.growth {
            s.push_str(&format!(
                "  {:<84} {:>8.2} → {:>8.2} ms  ×{:.2}\n",
                g.path, g.first_p99_ms, g.last_p99_ms, g.ratio
            ));
        }
    }
    s
}
