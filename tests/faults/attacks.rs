//! Attacks on the edge while partners push: the services run as `serve --target` on
//! PostgreSQL and the test's own NATS, the partners push the usual deterministic stream, and
//! meanwhile an attacker floods the gateway's public reads, holds hundreds of HTTP connections
//! open by trickling their headers (slowloris), pushes batches with a forged token, and opens
//! gRPC streams that send headers and never a body. A well-behaved partner's probe pushes, one
//! line each, measure its latency before and during the attacks. What must hold: every probe
//! and every workload push is acknowledged (the attacks take no partner's capacity), readiness
//! never fails (public reads have their own pool), every forged push is refused
//! UNAUTHENTICATED, and the figures equal the ledger exactly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use crate::cluster::{assert_exact, headline, wait_exact, Cluster, Size};
use crate::procs::say;
use crate::workload::{
    call, client, generate, probe, request, spawn_workers, token, Ledger, Payload, Plan, Stats,
};
use crate::{join_workers, longest, seed, settled, TEST_DEDUP_WINDOW};

/// Connections the slowloris attacker holds open at once.
const SLOWLORIS: usize = 200;
/// Tasks reading the public API as fast as they can.
const READERS: usize = 16;
/// Tasks pushing with a forged token.
const FORGERS: usize = 4;
/// gRPC streams opened with headers and no body, at once.
const STALLED: usize = 64;
/// Probe indices: each probe is one line on its own day of 2021, before any workload day.
const MAX_PROBES: u32 = 150;

/// What the attackers did.
#[derive(Default)]
struct Attempts {
    reads: AtomicU64,
    reads_refused: AtomicU64,
    slowloris_opened: AtomicU64,
    forged: AtomicU64,
    forged_not_refused: AtomicU64,
    stalled_opened: AtomicU64,
    not_ready: AtomicU64,
}

pub async fn attacks_during_ingest(cluster: &mut Cluster, size: Size) -> anyhow::Result<()> {
    let (sales, onboarding, ingest_for) = match size {
        Size::Reduced => (10_000, 2_500, Duration::from_secs(20)),
        Size::Full => (100_000, 25_000, Duration::from_secs(120)),
    };
    let mut plan = Plan {
        sales,
        onboarding,
        sales_batch: 500,
        onboarding_batch: 250,
        seed: seed(),
        pace: Duration::ZERO,
        resend_pause: TEST_DEDUP_WINDOW + Duration::from_millis(500),
    };
    let streams = generate(&plan);
    plan.pace = ingest_for / longest(&streams);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stats = Arc::new(Stats::default());
    let mut probes = Probes::new(cluster, &ledger, &stats);

    // The partner's latency with nothing else running.
    let mut quiet = Vec::new();
    for _ in 0..20 {
        quiet.push(probes.push().await?);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(Attempts::default());
    let attackers = spawn_attackers(cluster, &stop, &attempts);
    // Let the attack build up before the partners start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let give_up = Instant::now() + size.time_limit();
    let workers = spawn_workers(
        streams,
        &cluster.marketplace.grpc_addr(),
        &plan,
        &ledger,
        &stats,
        give_up,
    );
    let mut loud = Vec::new();
    while !workers.iter().all(|w| w.is_finished()) {
        cluster.check_alive()?;
        anyhow::ensure!(Instant::now() < give_up, "time limit reached during ingest");
        if probes.next < MAX_PROBES {
            loud.push(probes.push().await?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.await??;
    }
    join_workers(workers).await?;

    let snapshot = ledger.lock().expect("ledger").clone();
    let (converged, view) = wait_exact(
        &cluster.gateway.http_base(),
        &snapshot,
        Duration::from_secs(180),
    )
    .await?;
    cluster.wait_quiet(Duration::from_secs(120)).await?;
    assert_exact(&cluster.gateway.http_base(), &snapshot).await?;
    settled(cluster, &stats).await?;

    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    anyhow::ensure!(
        g(&attempts.forged) > 0 && g(&attempts.forged_not_refused) == 0,
        "{} forged pushes, {} of them not refused UNAUTHENTICATED",
        g(&attempts.forged),
        g(&attempts.forged_not_refused)
    );
    anyhow::ensure!(
        g(&attempts.not_ready) == 0,
        "the gateway was not ready {} times during the attacks",
        g(&attempts.not_ready)
    );
    anyhow::ensure!(
        g(&attempts.slowloris_opened) >= SLOWLORIS as u64 && g(&attempts.stalled_opened) > 0,
        "the attacks did not run: {} slowloris connections, {} stalled streams",
        g(&attempts.slowloris_opened),
        g(&attempts.stalled_opened)
    );
    say(format!(
        "attacks during ingest ({size:?}, seed {}): partner probe latency quiet p50 {:?} p99 {:?} \
         ({} probes), under attack p50 {:?} p99 {:?} ({} probes, all acknowledged); attacks: {} public \
         reads ({} refused 429/503), {} slowloris connections, {} forged pushes (all UNAUTHENTICATED), \
         {} stalled gRPC streams; gateway ready throughout; figures equal the ledger {converged:.1?} \
         after ingest; {}; {}",
        plan.seed,
        percentile(&quiet, 50),
        percentile(&quiet, 99),
        quiet.len(),
        percentile(&loud, 50),
        percentile(&loud, 99),
        loud.len(),
        g(&attempts.reads),
        g(&attempts.reads_refused),
        g(&attempts.slowloris_opened),
        g(&attempts.forged),
        g(&attempts.stalled_opened),
        stats.summary(),
        headline(&view)
    ));
    Ok(())
}

/// The well-behaved partner's probe pushes, each entered in the ledger once acknowledged.
struct Probes {
    client: agriportal::client::PartnerClient,
    ledger: Arc<Mutex<Ledger>>,
    stats: Arc<Stats>,
    next: u32,
}

impl Probes {
    fn new(cluster: &Cluster, ledger: &Arc<Mutex<Ledger>>, stats: &Arc<Stats>) -> Probes {
        Probes {
            client: client(&cluster.marketplace.grpc_addr(), "postmart"),
            ledger: ledger.clone(),
            stats: stats.clone(),
            next: 0,
        }
    }

    /// Pushes the next probe; it must be acknowledged at once (no retry): the attacks must
    /// not refuse or time out a partner's call.
    async fn push(&mut self) -> anyhow::Result<Duration> {
        let (batch, _, _) = probe(self.next);
        self.next += 1;
        let started = Instant::now();
        let result = call(
            &self.stats,
            "probe",
            self.client.push_sales(request(batch.clone())),
        )
        .await;
        let took = started.elapsed();
        match result {
            Ok(result) if result.accepted == 1 => {}
            other => anyhow::bail!("probe {} not acknowledged: {other:?}", self.next - 1),
        }
        self.ledger
            .lock()
            .expect("ledger")
            .apply("postmart", &Payload::Sales(batch));
        Ok(took)
    }
}

fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() - 1) * p / 100]
}

fn spawn_attackers(
    cluster: &Cluster,
    stop: &Arc<AtomicBool>,
    attempts: &Arc<Attempts>,
) -> Vec<JoinHandle<anyhow::Result<()>>> {
    let mut tasks = Vec::new();
    let http = cluster.gateway.http_base();
    let http_addr = format!("127.0.0.1:{}", cluster.gateway.http);
    let grpc_addr = cluster.marketplace.grpc_addr();
    let admin = cluster.gateway.admin_base();
    for i in 0..READERS {
        let (stop, attempts, http) = (stop.clone(), attempts.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let web = reqwest::Client::new();
            let path = if i % 2 == 0 {
                "/api/v1/national"
            } else {
                "/api/v1/timeseries?metric=sales_grams&granularity=month"
            };
            while !stop.load(Ordering::Relaxed) {
                attempts.reads.fetch_add(1, Ordering::Relaxed);
                match web.get(format!("{http}{path}")).send().await {
                    Ok(r) if r.status() == 429 || r.status() == 503 => {
                        attempts.reads_refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(r) => {
                        let _ = r.bytes().await;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            Ok(())
        }));
    }
    {
        let (stop, attempts) = (stop.clone(), attempts.clone());
        tasks.push(tokio::spawn(async move {
            slowloris(&http_addr, &stop, &attempts).await;
            Ok(())
        }));
    }
    for _ in 0..FORGERS {
        let (stop, attempts, grpc_addr) = (stop.clone(), attempts.clone(), grpc_addr.clone());
        tasks.push(tokio::spawn(async move {
            forge(&grpc_addr, &stop, &attempts).await;
            Ok(())
        }));
    }
    {
        let (stop, attempts, grpc_addr) = (stop.clone(), attempts.clone(), grpc_addr.clone());
        tasks.push(tokio::spawn(async move {
            stall(&grpc_addr, &stop, &attempts).await;
            Ok(())
        }));
    }
    {
        let (stop, attempts) = (stop.clone(), attempts.clone());
        tasks.push(tokio::spawn(async move {
            let web = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let ready = web
                    .get(format!("{admin}/readyz"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if !ready {
                    attempts.not_ready.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(())
        }));
    }
    tasks
}

/// Holds [`SLOWLORIS`] connections open, each sending one more header byte every second; a
/// connection the server closes (its header-read timeout) is replaced.
async fn slowloris(addr: &str, stop: &AtomicBool, attempts: &Attempts) {
    let mut open: Vec<tokio::net::TcpStream> = Vec::new();
    let trickle =
        b"GET /api/v1/national HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut sent = 0usize;
    while !stop.load(Ordering::Relaxed) {
        while open.len() < SLOWLORIS {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(tcp) => {
                    attempts.slowloris_opened.fetch_add(1, Ordering::Relaxed);
                    open.push(tcp);
                }
                Err(_) => break,
            }
        }
        let byte = [trickle[sent % trickle.len()]];
        sent += 1;
        let mut alive = Vec::with_capacity(open.len());
        for mut tcp in open.drain(..) {
            if tcp.write_all(&byte).await.is_ok() {
                alive.push(tcp);
            }
        }
        open = alive;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Pushes a batch under a partner's token whose signature was altered: each must be refused
/// UNAUTHENTICATED, and nothing of it stored (the ledger check at the end would see it).
async fn forge(addr: &str, stop: &AtomicBool, attempts: &Attempts) {
    // One character of the signature changed (not the last, whose low bits may be padding).
    let mut forged: Vec<char> = token("postmart").chars().collect();
    let at = forged.len().saturating_sub(5);
    forged[at] = if forged[at] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let Ok(mut client) =
        agriportal::client::partner_client_lazy(addr, Some(&forged), Duration::from_secs(10))
    else {
        attempts.forged_not_refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let (mut batch, _, _) = probe(MAX_PROBES + 10);
        batch.batch_id = format!("forged-{n}");
        n += 1;
        attempts.forged.fetch_add(1, Ordering::Relaxed);
        match client.push_sales(request(batch)).await {
            Err(status) if status.code() == tonic::Code::Unauthenticated => {}
            _ => {
                attempts.forged_not_refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens gRPC streams that send their headers and never their body, [`STALLED`] at a time on
/// one connection each (HTTP/2 written by hand, so no client library finishes them).
async fn stall(addr: &str, stop: &AtomicBool, attempts: &Attempts) {
    let mut open: Vec<tokio::net::TcpStream> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        while open.len() < STALLED {
            let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
                break;
            };
            let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            hello.extend_from_slice(&frame(0x4, 0, 0, &[]));
            hello.extend_from_slice(&frame(0x1, 0x4, 1, &stalled_headers()));
            if tcp.write_all(&hello).await.is_ok() {
                attempts.stalled_opened.fetch_add(1, Ordering::Relaxed);
                open.push(tcp);
            }
        }
        // Connections the server ended (refused, timed out) are replaced on the next round.
        open.retain(|tcp| {
            let mut probe = [0u8; 1];
            !matches!(tcp.try_read(&mut probe), Ok(0))
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK literals (no indexing, no Huffman) for a `PushSales` call without a token.
fn stalled_headers() -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (
            ":path",
            "/agriportal.marketplace.v1.MarketplaceIngest/PushSales",
        ),
        (":authority", "marketplace"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}
