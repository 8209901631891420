//! `agriportal bench read`: the dashboards' read path against its ceiling, side by side in one
//! run. The whole system runs in-process with the demo writing (both partners pushing), and
//! beside it a bare axum server that answers each endpoint's path with the same bytes (fetched
//! once from the gateway). Per endpoint: closed-loop throughput over `--connections` (the most
//! each server answers on this machine), reported as the gateway's ratio to the bare handler's,
//! then the gateway's latency at a fixed open-loop rate (`--rate`, 1,000 requests/s by default),
//! timed from each request's scheduled start so a slow answer cannot hide the queue behind it.
//! Same client, same machine, same moment: a busy machine slows both sides alike.

use std::collections::HashMap;
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
}

/// The endpoints read, as dashboards read them: a year of national sales by day and by month.
fn endpoints() -> Vec<String> {
    let today = time::OffsetDateTime::now_utc().date();
    vec![
        "/api/v1/national".into(),
        "/api/v1/provinces".into(),
        "/api/v1/provinces/79".into(),
        year_series("day", today),
        year_series("month", today),
    ]
}

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
    let result = measure(&system, &args).await;
    let mode = system.mode();
    system.stop().await?;
    Ok(ReadReport {
        mode,
        connections: args.connections,
        seconds: args.seconds,
        rate: args.rate,
        endpoints: result?,
    })
}

async fn measure(system: &BenchSystem, args: &ReadArgs) -> anyhow::Result<Vec<EndpointReport>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections.max(64))
        .build()?;
    let gateway = format!("http://{}", system.http_addr);
    // The bytes each endpoint answers now, for the bare handler to repeat.
    let mut answers = HashMap::new();
    for path in endpoints() {
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
    for path in endpoints() {
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
            errors: on_gateway.errors + on_bare.errors,
            open_loop_errors: latency.errors,
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
    /// Other answers and failed requests.
    pub(crate) errors: u64,
    /// How long the loop ran.
    pub(crate) wall: Duration,
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
            let (mut ok, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                match get(&client, &url).await {
                    true => ok += 1,
                    false => errors += 1,
                }
            }
            (ok, errors)
        });
    }
    let (mut ok, mut errors) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        if let Ok((o, e)) = done {
            ok += o;
            errors += e;
        }
    }
    Counted {
        ok,
        errors,
        wall: started.elapsed(),
    }
}

/// One GET, its body read whole; true for a 200.
async fn get(client: &reqwest::Client, url: &str) -> bool {
    match client.get(url).send().await {
        Ok(response) => {
            let ok = response.status() == reqwest::StatusCode::OK;
            response.bytes().await.is_ok() && ok
        }
        Err(_) => false,
    }
}

/// Latencies of an open loop.
pub(crate) struct Latency {
    /// Latency of each 200, ms, sorted.
    pub(crate) sorted_ms: Vec<f64>,
    /// Requests started.
    pub(crate) sent: u64,
    /// Other answers and failed requests.
    pub(crate) errors: u64,
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
            let ok = get(&client, &url).await;
            (ok, scheduled.elapsed())
        });
    }
    let mut sorted_ms = Vec::new();
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((true, took)) => sorted_ms.push(took.as_secs_f64() * 1000.0),
            _ => errors += 1,
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
    }
    s
}
