//! `agriportal bench read`: the dashboards' read path against its ceiling, side by side in one
//! run. The whole system runs in-process with the demo writing (both partners pushing), and
//! beside it a bare axum server that answers each endpoint's path with the same bytes (fetched
//! once from the gateway). The endpoints: the national and provincial figures, two time series,
//! and the indicators' list and one indicator (their default views, from the snapshot too).
//! Per endpoint: closed-loop throughput over `--connections` (the most
//! each server answers on this machine), reported as the gateway's ratio to the bare handler's,
//! then the gateway's latency at a fixed open-loop rate (`--rate`, 1,000 requests/s by default),
//! timed from each request's scheduled start so a slow answer cannot hide the queue behind it.
//! Same client, same machine, same moment: a busy machine slows both sides alike. The per-client
//! rate limit is off (`--http-rate-per-second 0`: one client address makes every request), and
//! the report says how many requests the edge refused anyway (rate-limited or shed), so a
//! figure is the handler's, not the limiter's; each failed request is counted by what failed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::response::IntoResponse as _;
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bench::{percentile, BenchSystem};

/// Settings of `bench read`.
#[derive(Args, Debug, Clone)]
pub struct ReadArgs {
    /// Seconds of closed-loop load per endpoint and server (throughput).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Connections of the closed loop, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Requests per second of the open loop (latency).
    #[arg(long, default_value_t = 1_000)]
    pub rate: u32,
    /// Seconds of the open loop per endpoint.
    #[arg(long, default_value_t = 5)]
    pub latency_seconds: u64,
    /// Seconds the demo writes before the first measurement, so there are figures to read.
    #[arg(long, default_value_t = 5)]
    pub warmup_seconds: u64,
}

/// One endpoint's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointReport {
    /// Path and query.
    pub path: String,
    /// Size of the answer the bare handler repeats.
    pub bytes: usize,
    /// Gateway answers per second (closed loop).
    pub gateway_rps: f64,
    /// Bare handler answers per second (closed loop).
    pub bare_rps: f64,
    /// gateway_rps / bare_rps.
    pub ratio: f64,
    /// Gateway latency at `rate`, 50th percentile, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Requests of the open loop actually sent per second.
    pub offered_rps: f64,
    /// Answers other than 200 (or failed requests) in the closed loops, gateway and bare.
    pub errors: u64,
    /// Likewise in the open loop: a gateway slower than `rate` sheds past its concurrency cap
    /// (503) rather than queue without bound.
    pub open_loop_errors: u64,
    /// The closed loops' errors by what failed (`status 503`, `request: …`, `body: …`).
    pub error_kinds: BTreeMap<String, u64>,
    /// The open loop's errors by what failed.
    pub open_loop_error_kinds: BTreeMap<String, u64>,
}

/// What `bench read` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReadReport {
    /// `embedded` or `postgres+jetstream`.
    pub mode: &'static str,
    /// Closed-loop connections.
    pub connections: usize,
    /// Closed-loop seconds per endpoint and server.
    pub seconds: u64,
    /// Open-loop rate.
    pub rate: u32,
    /// Per endpoint.
    pub endpoints: Vec<EndpointReport>,
    /// Requests the HTTP edge refused for their client's rate during the run
    /// (`agriportal_http_rate_limited_total`): 0, or the figures measured the limiter.
    pub rate_limited: u64,
    /// Requests the edge shed at its concurrency cap during the run (`agriportal_http_shed_total`).
    pub shed: u64,
}

/// The endpoints read, as dashboards read them: the summaries, a year of national sales by day
/// and by month, the indicators' list and `indicator`'s default view.
fn endpoints(indicator: &str) -> Vec<String> {
    let today = time::OffsetDateTime::now_utc().date();
    vec![
        "/api/v1/national".into(),
        "/api/v1/provinces".into(),
        "/api/v1/provinces/79".into(),
        year_series("day", today),
        year_series("month", today),
        "/api/v1/indicators".into(),
        format!("/api/v1/indicators/{indicator}"),
    ]
}

/// The indicator whose view is measured: households onboarded (the plan's headline), else the
/// catalogue's first.
const INDICATOR: &str = "HH_ONBOARDED";

/// How long the catalogue may take to reach the gateway (the indicators service publishes it
/// at start).
const CATALOGUE_WAIT: Duration = Duration::from_secs(30);

/// The code of the indicator to read, once the gateway has the catalogue.
async fn indicator_code(client: &reqwest::Client, gateway: &str) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        let list: serde_json::Value = client
            .get(format!("{gateway}/api/v1/indicators"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let codes: Vec<&str> = list["indicators"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|i| i["indicator"]["code"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(code) = codes.iter().find(|c| **c == INDICATOR).or(codes.first()) {
            return Ok((*code).to_string());
        }
        anyhow::ensure!(
            started.elapsed() < CATALOGUE_WAIT,
            "the gateway has no indicators {} s after start (/api/v1/indicators is empty)",
            CATALOGUE_WAIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A counter of the process's own metrics (this process serves the system), 0 if absent.
fn counter(name: &str) -> u64 {
    agriportal_platform::metrics::render()
        .lines()
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == name).then(|| value.parse::<u64>().ok())?
        })
        .unwrap_or(0)
}

const RATE_LIMITED: &str = "agriportal_http_rate_limited_total";
const SHED: &str = "agriportal_http_shed_total";

/// The path of a year of national sales (grams) by `granularity`, up to `today`.
pub(crate) fn year_series(granularity: &str, today: time::Date) -> String {
    let from = today - time::Duration::days(364);
    format!(
        "/api/v1/timeseries?metric=sales_grams&granularity={granularity}&from={from}&to={today}"
    )
}

/// Runs `bench read`.
pub async fn read(
    mut settings: agriportal_platform::kit::Settings,
    args: ReadArgs,
) -> anyhow::Result<ReadReport> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1");
    anyhow::ensure!(args.seconds > 0, "--seconds must be at least 1");
    // One client address makes every request: the per-client limit would measure only itself.
    settings.platform.http_rate_per_second = 0;
    let system = BenchSystem::start(settings, "read").await?;
    let grpc: std::net::SocketAddr = system.grpc_addr.parse()?;
    crate::demo::spawn(system.config.clone(), grpc, system.shutdown.clone())?;
    tokio::time::sleep(Duration::from_secs(args.warmup_seconds)).await;
    let (limited, shed) = (counter(RATE_LIMITED), counter(SHED));
    let result = measure(&system, &args).await;
    let (limited, shed) = (counter(RATE_LIMITED) - limited, counter(SHED) - shed);
    let mode = system.mode();
    system.stop().await?;
    Ok(ReadReport {
        mode,
        connections: args.connections,
        seconds: args.seconds,
        rate: args.rate,
        endpoints: result?,
        rate_limited: limited,
        shed,
    })
}

async fn measure(system: &BenchSystem, args: &ReadArgs) -> anyhow::Result<Vec<EndpointReport>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections.max(64))
        .build()?;
    let gateway = format!("http://{}", system.http_addr);
    let endpoints = endpoints(&indicator_code(&client, &gateway).await?);
    // The bytes each endpoint answers now, for the bare handler to repeat.
    let mut answers = HashMap::new();
    for path in endpoints.clone() {
        let response = client.get(format!("{gateway}{path}")).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{path} answered {}",
            response.status()
        );
        answers.insert(path, response.bytes().await?);
    }
    let bare = BareServer::start(answers.clone()).await?;
    let mut out = Vec::new();
    for path in endpoints {
        let bytes = answers.get(&path).map_or(0, Bytes::len);
        let seconds = Duration::from_secs(args.seconds);
        let on_gateway = closed_loop(
            &client,
            &format!("{gateway}{path}"),
            args.connections,
            seconds,
        )
        .await;
        let on_bare = closed_loop(
            &client,
            &format!("http://{}{path}", bare.addr),
            args.connections,
            seconds,
        )
        .await;
        let latency = open_loop(
            &client,
            &format!("{gateway}{path}"),
            args.rate,
            Duration::from_secs(args.latency_seconds),
        )
        .await;
        let gateway_rps = on_gateway.ok as f64 / on_gateway.wall.as_secs_f64();
        let bare_rps = on_bare.ok as f64 / on_bare.wall.as_secs_f64();
        out.push(EndpointReport {
            path,
            bytes,
            gateway_rps,
            bare_rps,
            ratio: gateway_rps / bare_rps,
            p50_ms: percentile(&latency.sorted_ms, 0.50),
            p99_ms: percentile(&latency.sorted_ms, 0.99),
            offered_rps: latency.sent as f64 / latency.wall.as_secs_f64(),
            errors: on_gateway.errors() + on_bare.errors(),
            open_loop_errors: latency.errors.values().sum(),
            error_kinds: merged(&on_gateway.errors, &on_bare.errors),
            open_loop_error_kinds: latency.errors,
        });
    }
    bare.stop().await;
    Ok(out)
}

/// A bare axum server answering each known path (and query) with its bytes: the ceiling of
/// an HTTP answer on this machine, with the gateway's own HTTP stack and none of its work.
struct BareServer {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl BareServer {
    async fn start(answers: HashMap<String, Bytes>) -> anyhow::Result<BareServer> {
        let answers = Arc::new(answers);
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let answers = answers.clone();
            async move {
                let key = uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default();
                match answers.get(&key) {
                    Some(bytes) => (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        bytes.clone(),
                    )
                        .into_response(),
                    None => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::warn!(error = %err, "the bare server stopped");
            }
        });
        Ok(BareServer {
            addr,
            shutdown,
            task,
        })
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// What a loop counted.
pub(crate) struct Counted {
    /// Answers 200.
    pub(crate) ok: u64,
    /// Other answers and failed requests, by what failed.
    pub(crate) errors: BTreeMap<String, u64>,
    /// How long the loop ran.
    pub(crate) wall: Duration,
}

impl Counted {
    /// Failed requests of every kind.
    pub(crate) fn errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Two tallies of errors added up.
fn merged(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut out = a.clone();
    for (kind, n) in b {
        *out.entry(kind.clone()).or_default() += n;
    }
    out
}

/// `connections` tasks, each sending its next request when the last answer is read, for
/// `duration`.
pub(crate) async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    connections: usize,
    duration: Duration,
) -> Counted {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let client = client.clone();
        let url = url.to_string();
        tasks.spawn(async move {
            let mut ok = 0u64;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            while Instant::now() < deadline {
                match get(&client, &url).await {
                    Ok(()) => ok += 1,
                    Err(kind) => *errors.entry(kind).or_default() += 1,
                }
            }
            (ok, errors)
        });
    }
    let mut ok = 0;
    let mut errors = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((o, e)) => {
                ok += o;
                errors = merged(&errors, &e);
            }
            Err(err) => *errors.entry(format!("task: {err}")).or_default() += 1,
        }
    }
    Counted {
        ok,
        errors,
        wall: started.elapsed(),
    }
}

/// One GET, its body read whole: `Ok` for a 200, else what failed (the status, or the
/// client's error with its causes, which tells a refused connection from a reset one).
async fn get(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|err| format!("request: {}", chain(&err)))?;
    let status = response.status();
    let body = response.bytes().await;
    if status != reqwest::StatusCode::OK {
        return Err(format!("status {}", status.as_u16()));
    }
    body.map(|_| ())
        .map_err(|err| format!("body: {}", chain(&err)))
}

/// An error and its sources, `: `-separated.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Latencies of an open loop.
pub(crate) struct Latency {
    /// Latency of each 200, ms, sorted.
    pub(crate) sorted_ms: Vec<f64>,
    /// Requests started.
    pub(crate) sent: u64,
    /// Other answers and failed requests, by what failed.
    pub(crate) errors: BTreeMap<String, u64>,
    /// From the first start to the last answer.
    pub(crate) wall: Duration,
}

/// Requests started at `rate` per second for `duration` whatever the answers, each timed from
/// its scheduled start (so a stall counts against every request queued behind it).
pub(crate) async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    rate: u32,
    duration: Duration,
) -> Latency {
    let started = Instant::now();
    let total = (f64::from(rate) * duration.as_secs_f64()).ceil() as u64;
    let gap = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let scheduled = started + gap.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let client = client.clone();
        let url = url.to_string();
        tasks.spawn(async move {
            let outcome = get(&client, &url).await;
            (outcome, scheduled.elapsed())
        });
    }
    let mut sorted_ms = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((Ok(()), took)) => sorted_ms.push(took.as_secs_f64() * 1000.0),
            Ok((Err(kind), _)) => *errors.entry(kind).or_default() += 1,
            Err(err) => *errors.entry(format!("task: {err}")).or_default() += 1,
        }
    }
    sorted_ms.sort_by(f64::total_cmp);
    Latency {
        sorted_ms,
        sent: total,
        errors,
        wall: started.elapsed(),
    }
}

/// The report as a table.
pub fn render(r: &ReadReport) -> String {
    let mut s = format!(
        "bench read ({}, demo writing): closed loop {} connections × {} s per endpoint and server; latency at {} requests/s\n",
        r.mode, r.connections, r.seconds, r.rate
    );
    s.push_str(&format!(
        "  {:<84} {:>8} {:>10} {:>10} {:>7} {:>8} {:>8} {:>9} {:>6}\n",
        "endpoint", "bytes", "gateway/s", "bare/s", "ratio", "p50 ms", "p99 ms", "sent/s", "errors"
    ));
    for e in &r.endpoints {
        s.push_str(&format!(
            "  {:<84} {:>8} {:>10.0} {:>10.0} {:>7.3} {:>8.2} {:>8.2} {:>9.0} {:>6}\n",
            e.path,
            e.bytes,
            e.gateway_rps,
            e.bare_rps,
            e.ratio,
            e.p50_ms,
            e.p99_ms,
            e.offered_rps,
            e.errors + e.open_loop_errors
        ));
        for (kind, n) in merged(&e.error_kinds, &e.open_loop_error_kinds) {
            s.push_str(&format!("      {n} × {kind}\n"));
        }
    }
    s.push_str(&format!(
        "  refused by the edge during the run: {} rate-limited (the limit is off), {} shed\n",
        r.rate_limited, r.shed
    ));
    s
}
