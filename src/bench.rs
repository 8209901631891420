//! `agriportal bench ingest`: pushes sales records over gRPC from both partners at once and
//! reports acknowledged records per second, push→dashboard freshness (time from a batch's ack
//! until `/api/v1/national` includes it) and peak RSS; in the same run it measures PostgreSQL
//! `COPY` of the same rows into a bare table, so the rate is reported as a ratio that a noisy
//! machine cannot skew much.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agriportal_platform::auth::{Authenticator, Role};
use agriportal_platform::context::token_secret;
use agriportal_platform::reference::{Partner, Reference};
use agriportal_platform::Config;
use agriportal_proto::marketplace::v1 as pb;
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
    /// Skip the COPY baseline.
    #[arg(long)]
    pub no_copy: bool,
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
    /// PostgreSQL COPY of the same rows, rows per second.
    pub copy_rate: Option<f64>,
    /// ack_rate / copy_rate.
    pub ratio_to_copy: Option<f64>,
}

/// Runs a benchmark.
pub async fn run(config: Config, which: Which) -> anyhow::Result<()> {
    match which {
        Which::Ingest(args) => {
            let report = ingest(config, args).await?;
            println!("{}", render(&report));
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}

fn render(r: &Report) -> String {
    let mut s = format!(
        "bench ingest ({}): {} records in batches of {}\n  acknowledged: {:.0} records/s\n  freshness (ack → /api/v1/national): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms\n  peak RSS: {:.0} MiB\n",
        r.mode, r.records, r.batch_size, r.ack_rate, r.freshness_p50_ms, r.freshness_p99_ms, r.freshness_max_ms, r.peak_rss_mib
    );
    match (r.copy_rate, r.ratio_to_copy) {
        (Some(copy), Some(ratio)) => s.push_str(&format!(
            "  PostgreSQL COPY of the same rows: {copy:.0} rows/s; ours is {ratio:.3} of COPY\n"
        )),
        _ => s.push_str("  PostgreSQL COPY baseline: not measured\n"),
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
    let reference = Reference::get();
    let provinces: Vec<&str> = reference
        .provinces()
        .iter()
        .map(|p| p.code.as_str())
        .collect();
    let categories: Vec<&str> = reference
        .categories()
        .iter()
        .map(|c| c.code.as_str())
        .collect();
    let today = agriportal_marketplace::domain::today_in_vietnam();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut i = 0;
    while i < records {
        let n = size.min(records - i);
        let recs = (0..n)
            .map(|k| pb::SalesRecord {
                record_id: format!("bench-{run}-{}-{}", partner.code(), i + k),
                sale_date: (today - time::Duration::days(rng.random_range(0..365))).to_string(),
                province_code: provinces[rng.random_range(0..provinces.len())].to_string(),
                commune_code: String::new(),
                category: categories[rng.random_range(0..categories.len())].to_string(),
                quantity_grams: rng.random_range(1_000..1_000_000),
                value_vnd: rng.random_range(10_000..50_000_000),
                orders: rng.random_range(1..50),
            })
            .collect();
        out.push(pb::PushSalesRequest {
            batch_id: format!("bench-{run}-{}-{}", partner.code(), out.len()),
            records: recs,
        });
        i += n;
    }
    out
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

async fn ingest(mut config: Config, args: IngestArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.batch_size > 0 && args.batch_size <= 10_000,
        "--batch-size must be 1..=10000"
    );
    let distributed = config.database_url.is_some() && config.nats_url.is_some();
    let run_id = format!("{}", time::OffsetDateTime::now_utc().unix_timestamp());
    let temp =
        std::env::temp_dir().join(format!("agriportal-bench-{run_id}-{}", std::process::id()));
    if !distributed {
        config.data_dir = temp.clone();
        config.database_url = None;
        config.nats_url = None;
    }
    config.log = "warn".into();
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = grpc.local_addr()?.to_string();
    let http_addr = http.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(crate::app::run_up(
        config.clone(),
        grpc,
        http,
        shutdown.clone(),
    ));

    let auth = Authenticator::new(&token_secret(&config)?, None)?;
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
        shutdown.cancel();
        let why = match server.await {
            Ok(Err(err)) => format!("{err:#}"),
            _ => "no answer from /api/v1/national".into(),
        };
        anyhow::bail!("the system did not come up: {why}");
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

    let started = Instant::now();
    let mut pushers = Vec::new();
    for (partner, token, partner_batches) in work {
        let queue = Arc::new(Mutex::new(partner_batches.into_iter()));
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
                    let Some(batch) = queue.lock().await.next() else {
                        return anyhow::Ok(());
                    };
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
    let pct = |p: f64| -> f64 {
        if freshness.is_empty() {
            return f64::NAN;
        }
        let i = ((freshness.len() as f64 - 1.0) * p).round() as usize;
        freshness[i.min(freshness.len() - 1)]
    };
    let peak_rss_mib = peak_rss_kib()
        .map(|k| k as f64 / 1024.0)
        .unwrap_or(f64::NAN);
    shutdown.cancel();
    server.await??;

    let copy_rate = if args.no_copy {
        None
    } else {
        let url = args
            .copy_url
            .clone()
            .or(config.database_url.clone())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
        let mut rows = Vec::new();
        for (seed, partner) in Partner::ALL.into_iter().enumerate() {
            rows.extend(batches(
                partner,
                &run_id,
                per_partner,
                args.batch_size,
                seed as u64,
            ));
        }
        match copy_baseline(&url, &rows).await {
            Ok(rate) => Some(rate),
            Err(err) => {
                eprintln!("COPY baseline skipped: {err:#}");
                None
            }
        }
    };
    if !distributed {
        let _ = std::fs::remove_dir_all(&temp);
    }
    let ack_rate = pushed as f64 / elapsed.max(1e-9);
    Ok(Report {
        mode: if distributed {
            "postgres+jetstream"
        } else {
            "embedded"
        },
        records: pushed,
        batch_size: args.batch_size,
        ack_rate,
        freshness_p50_ms: pct(0.5),
        freshness_p99_ms: pct(0.99),
        freshness_max_ms: pct(1.0),
        peak_rss_mib,
        copy_rate,
        ratio_to_copy: copy_rate.map(|c| ack_rate / c),
    })
}

/// COPY of the same rows into a bare table, rows per second.
async fn copy_baseline(url: &str, batches: &[pb::PushSalesRequest]) -> anyhow::Result<f64> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(
        "CREATE TEMP TABLE bench_copy (record_id TEXT, sale_date TEXT, province_code TEXT, commune_code TEXT, \
         category TEXT, quantity_grams BIGINT, value_vnd BIGINT, orders BIGINT)",
    )
    .execute(&mut conn)
    .await?;
    let mut text = String::new();
    let mut rows = 0usize;
    for b in batches {
        for r in &b.records {
            rows += 1;
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
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
    let started = Instant::now();
    let mut copy = conn.copy_in_raw("COPY bench_copy FROM STDIN").await?;
    copy.send(text.into_bytes()).await?;
    copy.finish().await?;
    let secs = started.elapsed().as_secs_f64();
    conn.close().await?;
    Ok(rows as f64 / secs.max(1e-9))
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
