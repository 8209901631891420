//! Attacks on the edge while partners push, against both ways the portal runs: `serve
//! --target` on PostgreSQL and the test's own NATS, and the embedded `agriportal up`. The
//! partners push the usual deterministic stream, and meanwhile an attacker floods the
//! gateway's public reads, holds hundreds of HTTP connections open by trickling their headers
//! (slowloris), pushes batches with a forged token, and opens gRPC streams that send headers
//! and never a body: each attack alone for a few seconds, then all at once. A well-behaved
//! partner's probe pushes, one line each, measure its latency quiet and under each attack.
//! What must hold: every probe is acknowledged at its first call and every workload push is
//! acknowledged (the attacks take no partner's capacity), readiness never fails (public reads
//! have their own pool), every forged push is refused UNAUTHENTICATED, and the figures equal
//! the ledger exactly.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use crate::cluster::{assert_exact, headline, wait_exact, Cluster, Size};
use crate::procs::{say, Service};
use crate::workload::{
    call, client, generate, probe, request, spawn_workers, token, Ledger, Payload, Plan, Stats,
};
use crate::{applied_once_and_calls_clean, embedded_counts, join_workers, seed, settled};

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
/// How long each attack runs alone, while the partners push, before all run at once.
const PHASE: Duration = Duration::from_secs(3);
/// Time between two probes of the well-behaved partner.
const PROBE_EVERY: Duration = Duration::from_millis(150);

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

/// One kind of attack.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// [`READERS`] tasks reading the public API flat out.
    Reads,
    /// [`SLOWLORIS`] HTTP connections trickling their headers.
    Slowloris,
    /// [`FORGERS`] tasks pushing under a forged partner token.
    Forged,
    /// [`STALLED`] gRPC streams that send headers and never a body.
    Stalled,
}

const ATTACKS: [Attack; 4] = [
    Attack::Reads,
    Attack::Slowloris,
    Attack::Forged,
    Attack::Stalled,
];

/// Where the attacks are aimed.
#[derive(Clone)]
struct Edge {
    /// The marketplace's gRPC address (`host:port`).
    grpc: String,
    /// The gateway's public HTTP address (`host:port`).
    http: String,
    /// The admin listener of the process answering the gateway's readiness.
    admin: String,
}

/// The system under attack, and what "settled" means for it.
pub enum Target<'a> {
    /// `serve --target marketplace` and `gateway` on PostgreSQL and the test's NATS.
    Cluster(&'a mut Cluster),
    /// The embedded `agriportal up` (SQLite files and the in-process bus in its data
    /// directory).
    Up(&'a mut Service, &'a Path),
}

impl Target<'_> {
    fn name(&self) -> &'static str {
        match self {
            Target::Cluster(_) => "serve --target (PostgreSQL + NATS)",
            Target::Up(..) => "up (embedded)",
        }
    }

    fn edge(&self) -> Edge {
        match self {
            Target::Cluster(cluster) => Edge {
                grpc: cluster.marketplace.grpc_addr(),
                http: format!("127.0.0.1:{}", cluster.gateway.http),
                admin: cluster.gateway.admin_base(),
            },
            Target::Up(up, _) => Edge {
                grpc: up.grpc_addr(),
                http: format!("127.0.0.1:{}", up.http),
                admin: up.admin_base(),
            },
        }
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self {
            Target::Cluster(cluster) => cluster.check_alive(),
            Target::Up(up, _) => up.check_alive(),
        }
    }

    /// Waits until the figures equal the ledger with nothing left in flight, then checks that
    /// every event was applied once and every call ended cleanly. Returns how long the
    /// figures took and what they were.
    async fn settle(
        &mut self,
        ledger: &Ledger,
        stats: &Stats,
    ) -> anyhow::Result<(Duration, BTreeMap<String, i64>)> {
        let http = format!("http://{}", self.edge().http);
        let (converged, view) = wait_exact(&http, ledger, Duration::from_secs(180)).await?;
        match self {
            Target::Cluster(cluster) => {
                cluster.wait_quiet(Duration::from_secs(120)).await?;
                assert_exact(&http, ledger).await?;
                settled(cluster, stats).await?;
            }
            Target::Up(up, data) => {
                // The in-process bus has no backlog to ask about: a while, then once more.
                tokio::time::sleep(Duration::from_secs(2)).await;
                assert_exact(&http, ledger).await?;
                up.kill9();
                let (written, unsent, applied) = embedded_counts(data).await?;
                applied_once_and_calls_clean(written, unsent, applied, stats)?;
            }
        }
        Ok((converged, view))
    }
}

/// The attacks against `target` while both partners push: quiet probes first, then each
/// attack alone for [`PHASE`], then all of them at once until the partners are done.
pub async fn attacks_during_ingest(mut target: Target<'_>, size: Size) -> anyhow::Result<()> {
    let (sales, onboarding, ingest_for) = match size {
        Size::Reduced => (10_000, 2_500, Duration::from_secs(20)),
        Size::Full => (100_000, 25_000, Duration::from_secs(120)),
    };
    let mut plan = Plan::standard(sales, onboarding, seed());
    let streams = generate(&plan);
    plan.spread(&streams, ingest_for);
    let edge = target.edge();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stats = Arc::new(Stats::default());
    let mut probes = Probes::new(&edge, &ledger, &stats);

    // The partner's latency with nothing else running.
    let mut quiet = Vec::new();
    for _ in 0..20 {
        quiet.push(probes.push().await?);
        tokio::time::sleep(PROBE_EVERY).await;
    }

    let attempts = Arc::new(Attempts::default());
    let attacks_over = Arc::new(AtomicBool::new(false));
    let readiness = watch_readiness(&edge.admin, &attacks_over, &attempts);
    let give_up = Instant::now() + size.time_limit();
    let workers = spawn_workers(streams, &edge.grpc, &plan, &ledger, &stats, give_up);
    let mut phases: Vec<(String, Vec<Duration>)> = vec![("quiet".to_string(), quiet)];
    for attack in ATTACKS {
        let stop = Arc::new(AtomicBool::new(false));
        let attackers = spawn_attack(attack, &edge, &stop, &attempts);
        let mut loud = Vec::new();
        let until = Instant::now() + PHASE;
        while Instant::now() < until {
            target.check_alive()?;
            anyhow::ensure!(Instant::now() < give_up, "time limit reached during ingest");
            probes.push_into(&mut loud).await?;
            tokio::time::sleep(PROBE_EVERY).await;
        }
        stop.store(true, Ordering::Relaxed);
        for attacker in attackers {
            attacker.await??;
        }
        phases.push((format!("{attack:?}"), loud));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = ATTACKS
        .iter()
        .flat_map(|attack| spawn_attack(*attack, &edge, &stop, &attempts))
        .collect();
    let mut loud = Vec::new();
    let until = Instant::now() + PHASE;
    while Instant::now() < until || !workers.iter().all(|w| w.is_finished()) {
        target.check_alive()?;
        anyhow::ensure!(Instant::now() < give_up, "time limit reached during ingest");
        probes.push_into(&mut loud).await?;
        tokio::time::sleep(PROBE_EVERY).await;
    }
    phases.push(("all at once".to_string(), loud));
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.await??;
    }
    attacks_over.store(true, Ordering::Relaxed);
    readiness.await??;
    join_workers(workers).await?;

    let snapshot = ledger.lock().expect("ledger").clone();
    let (converged, view) = target.settle(&snapshot, &stats).await?;

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
    let latencies: Vec<String> = phases
        .iter()
        .map(|(phase, samples)| {
            format!(
                "{phase} p50 {:?} p99 {:?} ({} probes)",
                percentile(samples, 50),
                percentile(samples, 99),
                samples.len()
            )
        })
        .collect();
    say(format!(
        "attacks during ingest on {} ({size:?}, seed {}): partner probe latency (every probe acknowledged \
         at the first call) {}; attacks: {} public reads ({} refused 429/503), {} slowloris connections, \
         {} forged pushes (all UNAUTHENTICATED), {} stalled gRPC streams; gateway ready throughout; \
         figures equal the ledger {converged:.1?} after ingest; {}; {}",
        target.name(),
        plan.seed,
        latencies.join("; "),
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
    fn new(edge: &Edge, ledger: &Arc<Mutex<Ledger>>, stats: &Arc<Stats>) -> Probes {
        Probes {
            client: client(&edge.grpc, "postmart"),
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

    /// Pushes the next probe into `samples`, while probe days are left.
    async fn push_into(&mut self, samples: &mut Vec<Duration>) -> anyhow::Result<()> {
        if self.next < MAX_PROBES {
            samples.push(self.push().await?);
        }
        Ok(())
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

fn spawn_attack(
    attack: Attack,
    edge: &Edge,
    stop: &Arc<AtomicBool>,
    attempts: &Arc<Attempts>,
) -> Vec<JoinHandle<anyhow::Result<()>>> {
    let mut tasks = Vec::new();
    match attack {
        Attack::Reads => {
            for i in 0..READERS {
                let (stop, attempts) = (stop.clone(), attempts.clone());
                let http = format!("http://{}", edge.http);
                tasks.push(tokio::spawn(async move {
                    read_flat_out(&http, i, &stop, &attempts).await;
                    Ok(())
                }));
            }
        }
        Attack::Slowloris => {
            let (stop, attempts, http) = (stop.clone(), attempts.clone(), edge.http.clone());
            tasks.push(tokio::spawn(async move {
                slowloris(&http, &stop, &attempts).await;
                Ok(())
            }));
        }
        Attack::Forged => {
            for _ in 0..FORGERS {
                let (stop, attempts, grpc) = (stop.clone(), attempts.clone(), edge.grpc.clone());
                tasks.push(tokio::spawn(async move {
                    forge(&grpc, &stop, &attempts).await;
                    Ok(())
                }));
            }
        }
        Attack::Stalled => {
            let (stop, attempts, grpc) = (stop.clone(), attempts.clone(), edge.grpc.clone());
            tasks.push(tokio::spawn(async move {
                stall(&grpc, &stop, &attempts).await;
                Ok(())
            }));
        }
    }
    tasks
}

/// Reads the public API as fast as it answers (half the readers the national figures, half a
/// timeseries), backing off briefly when refused.
async fn read_flat_out(http: &str, i: usize, stop: &AtomicBool, attempts: &Attempts) {
    let web = reqwest::Client::new();
    let path = if i.is_multiple_of(2) {
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
}

/// Asks the gateway's readiness every half second until `done`, counting every answer that is
/// not 200.
fn watch_readiness(
    admin: &str,
    done: &Arc<AtomicBool>,
    attempts: &Arc<Attempts>,
) -> JoinHandle<anyhow::Result<()>> {
    let (done, attempts, url) = (done.clone(), attempts.clone(), format!("{admin}/readyz"));
    tokio::spawn(async move {
        let web = reqwest::Client::new();
        while !done.load(Ordering::Relaxed) {
            let ready = web
                .get(&url)
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
    })
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
