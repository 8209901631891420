//! Fault-injection suite: the ingest path loses nothing and counts nothing twice under process
//! crashes, broker and database faults, and crashes of the embedded mode; and attacks on the
//! edge of both modes harm no well-behaved partner.
//!
//! The services run as separate processes of the real binary (`agriportal serve --target …`,
//! `agriportal up`) on the test's own `nats-server` (its own port and store directory,
//! JetStream on) and a fresh PostgreSQL database; the test's partners push a deterministic
//! stream of batches and keep the ground-truth ledger of what was acknowledged (see
//! `workload.rs`). At the end the gateway's national, per-partner and per-province figures must
//! equal the ledger exactly, with nothing left in flight that could still change them.
//!
//! ```sh
//! cargo test --test faults                                   # reduced (CI): about 3 min
//! AGRIPORTAL_FAULTS=full cargo test --release --test faults -- --nocapture   # full
//! ```
//!
//! `AGRIPORTAL_FAULTS_SEED=<n>` replays another deterministic stream and fault schedule.
//! Without PostgreSQL or `nats-server` the tests print `SKIPPED …`; with
//! `AGRIPORTAL_REQUIRE_SERVERS=1` they fail instead. The tests take a process-wide lock and
//! run one at a time: each one alone keeps a 2-core machine busy.

// A test crate: helpers as well as tests fail by panicking (clippy.toml allows it only inside
// `#[test]` functions, not in the helpers they share).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attacks;
mod cluster;
mod procs;
mod proxy;
mod workload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agriportal_platform::storage::now_ms;
use agriportal_platform::testing;
use agriportal_proto::gateway::v1 as gpb;
use agriportal_proto::gateway::v1::dashboard_client::DashboardClient;
use anyhow::{bail, Context as _};
use sqlx::Connection;

use crate::cluster::{
    assert_exact, consumer_backlog, headline, lose_tail, set_dedup_window, skip, stream_messages,
    via_proxy, wait_exact, Cluster, Size,
};
use crate::procs::{nats_server_binary, say, token_env, Service};
use crate::proxy::{FaultProxy, Mode};
use crate::workload::{
    aim_at_push, call, generate, probe, request, spawn_workers, Ledger, Payload, Plan, Rng, Stats,
    Stream,
};

/// One test at a time (each starts several processes).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The services must be back within this long after a fault clears.
const RECOVERY: Duration = Duration::from_secs(10);

/// The de-duplication window the tests give the stream, so that "after the window" is seconds
/// away rather than the production 2 minutes (see `README.md`, Faults and durability).
const TEST_DEDUP_WINDOW: Duration = Duration::from_secs(1);

fn seed() -> u64 {
    std::env::var("AGRIPORTAL_FAULTS_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(20_210_721)
}

fn nats_binary(test: &str) -> Option<std::path::PathBuf> {
    let found = nats_server_binary();
    if found.is_none() {
        skip(
            test,
            "no nats-server binary (set AGRIPORTAL_TEST_NATS_SERVER, or install it at /usr/sbin/nats-server)",
        );
    }
    found
}

fn batches(streams: &[Stream]) -> u64 {
    streams.iter().map(|s| s.batches.len() as u64).sum()
}

fn longest(streams: &[Stream]) -> u32 {
    streams
        .iter()
        .map(|s| s.batches.len() as u32)
        .max()
        .unwrap_or(1)
        .max(1)
}

/// `kills` points of the batch count, spread over 3–80 % of it, in order.
fn milestones(rng: &mut Rng, total: u64, kills: usize) -> Vec<u64> {
    let mut points: Vec<u64> = (0..kills)
        .map(|_| total * 3 / 100 + rng.below(total * 77 / 100 + 1))
        .collect();
    points.sort_unstable();
    points
}

async fn join_workers(
    workers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    for worker in workers {
        worker.await.context("worker panicked")??;
    }
    Ok(())
}

fn ledger_line(ledger: &Arc<Mutex<Ledger>>) -> String {
    let ledger = ledger.lock().expect("ledger");
    let (lines, households) = ledger.sizes();
    format!(
        "ledger: {lines} distinct sales lines, {households} households; {}",
        headline(&ledger.view())
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Process crashes

/// What the process tests found once everything settled.
struct Settled {
    written: i64,
    applied: i64,
    rounds: i64,
}

/// The checks both process tests end with: every event written was published and applied
/// once, every call ended OK / UNAVAILABLE / DEADLINE_EXCEEDED, and reconciliation compared at
/// least two rounds after the last restart without repairing anything (every event reached
/// the gateway, so a repair would be a late event taken for lost).
async fn settled(cluster: &Cluster, stats: &Stats) -> anyhow::Result<Settled> {
    let (written, unsent) = cluster.outbox().await?;
    let applied = cluster.inbox().await?;
    applied_once_and_calls_clean(written, unsent, applied, stats)?;
    let (rounds, repairs) = cluster.reconciled(2, Duration::from_secs(30)).await?;
    anyhow::ensure!(
        repairs == 0,
        "reconciliation repaired {repairs} cells although every event was applied\n{}",
        cluster.logs()
    );
    Ok(Settled {
        written,
        applied,
        rounds,
    })
}

/// Every event written was published and applied once, and every call ended OK /
/// UNAVAILABLE / DEADLINE_EXCEEDED without hanging.
fn applied_once_and_calls_clean(
    written: i64,
    unsent: i64,
    applied: i64,
    stats: &Stats,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        unsent == 0 && applied == written,
        "{written} events written, {unsent} unsent, {applied} applied by the gateway"
    );
    let violations = stats.violations();
    anyhow::ensure!(
        violations.is_empty(),
        "calls ended otherwise than OK / UNAVAILABLE / DEADLINE_EXCEEDED, or hung:\n{}",
        violations.join("\n")
    );
    Ok(())
}

/// A cluster whose services reach PostgreSQL directly (no fault proxy), or `None` when the
/// test is skipped for a missing server or binary.
async fn direct_cluster(name: &str) -> Option<Cluster> {
    let nats = nats_binary(name)?;
    let db = testing::fresh_postgres(name).await?;
    Some(
        Cluster::start(name, nats, db.clone(), db)
            .await
            .expect("start the cluster"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_on_the_edge_during_ingest_harm_no_partner() {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = direct_cluster("faults_attacks").await else {
        return;
    };
    let target = attacks::Target::Cluster(&mut cluster);
    if let Err(err) = attacks::attacks_during_ingest(target, Size::from_env()).await {
        panic!("{err:#}\n\n{}", cluster.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_on_the_embedded_up_during_ingest_harm_no_partner() {
    let _serial = SERIAL.lock().await;
    let (_dir, data, mut up) = embedded_up("agriportal-faults-up-attacks-");
    up.start().expect("start up");
    let run = async {
        up.wait_ready(Duration::from_secs(60)).await?;
        attacks::attacks_during_ingest(attacks::Target::Up(&mut up, &data), Size::from_env()).await
    };
    if let Err(err) = run.await {
        panic!("{err:#}\n\nup log:\n{}", crate::procs::tail(&up.log, 40));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_crashes_lose_nothing_and_count_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = direct_cluster("faults_process_crashes").await else {
        return;
    };
    if let Err(err) = process_crashes(&mut cluster, Size::from_env()).await {
        panic!("{err:#}\n\n{}", cluster.logs());
    }
}

async fn process_crashes(cluster: &mut Cluster, size: Size) -> anyhow::Result<()> {
    let started = Instant::now();
    let (sales, onboarding, kill_events) = match size {
        Size::Reduced => (20_000, 5_000, 8),
        Size::Full => (200_000, 50_000, 24),
    };
    let mut plan = Plan::standard(sales, onboarding, seed());
    let streams = generate(&plan);
    // Ingest lasts at least ~1.5 s per kill, so every kill lands during ingest.
    plan.spread(&streams, Duration::from_millis(1_500 * kill_events as u64));
    let total = batches(&streams);
    let (nats_url, stream) = (cluster.nats.url(), cluster.stream());
    set_dedup_window(&nats_url, &stream, TEST_DEDUP_WINDOW).await?;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stats = Arc::new(Stats::default());
    let give_up = Instant::now() + size.time_limit();
    let workers = spawn_workers(
        streams,
        &cluster.marketplace.grpc_addr(),
        &plan,
        &ledger,
        &stats,
        give_up,
    );
    let mut rng = Rng::new(plan.seed ^ 0x000C_4A05);
    let points = milestones(&mut rng, total, kill_events);
    let mut events = 0;
    let mut restart_times = Vec::new();
    while !workers.iter().all(|w| w.is_finished()) {
        cluster.check_alive()?;
        if events < kill_events && stats.batches_acked.load(Ordering::Relaxed) >= points[events] {
            let (market, gateway) = match rng.below(10) {
                0 => (true, true),
                1..=4 => (true, false),
                _ => (false, true),
            };
            if market {
                // Inside a push: before, during or after its commit.
                aim_at_push(&stats, &mut rng, Duration::from_secs(2)).await;
            } else {
                tokio::time::sleep(rng.between(Duration::ZERO, Duration::from_millis(300))).await;
            }
            if market {
                cluster.marketplace.kill9();
            }
            if gateway {
                cluster.gateway.kill9();
            }
            tokio::time::sleep(rng.between(Duration::ZERO, Duration::from_millis(700))).await;
            let restarted = Instant::now();
            if market {
                cluster.marketplace.start()?;
            }
            if gateway {
                cluster.gateway.start()?;
            }
            if market {
                cluster
                    .marketplace
                    .wait_ready(Duration::from_secs(60))
                    .await?;
            }
            if gateway {
                cluster.gateway.wait_ready(Duration::from_secs(60)).await?;
            }
            restart_times.push(restarted.elapsed());
            // Each service start sets the production window again.
            set_dedup_window(&nats_url, &stream, TEST_DEDUP_WINDOW).await?;
            events += 1;
        }
        anyhow::ensure!(Instant::now() < give_up, "time limit reached during ingest");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    join_workers(workers).await?;
    let ingest = started.elapsed();
    anyhow::ensure!(
        events == kill_events,
        "only {events} of {kill_events} kill events happened during ingest"
    );

    // A relay that crashed between publishing and marking sent publishes again; after the
    // de-duplication window JetStream stores the copies, and the gateway's inbox must drop them.
    tokio::time::sleep(TEST_DEDUP_WINDOW * 2).await;
    let before = stream_messages(&nats_url, &stream).await?;
    let republish = match size {
        Size::Reduced => 50,
        Size::Full => 500,
    };
    let unsent = cluster
        .unsend(
            republish,
            now_ms() - 2 * TEST_DEDUP_WINDOW.as_millis() as i64,
        )
        .await?;
    let gateway_http = cluster.gateway.http_base();
    let snapshot = ledger_snapshot(&ledger);
    let (converged, view) = wait_exact(&gateway_http, &snapshot, Duration::from_secs(180)).await?;
    cluster.wait_quiet(Duration::from_secs(120)).await?;
    let after = stream_messages(&nats_url, &stream).await?;
    anyhow::ensure!(
        after - before == unsent,
        "{unsent} events re-published after the window, but the stream grew by {}",
        after - before
    );
    assert_exact(&gateway_http, &snapshot).await?;

    // A last crash of both once everything is applied: redeliveries must change nothing.
    cluster.marketplace.kill9();
    cluster.gateway.kill9();
    cluster.marketplace.start()?;
    cluster.gateway.start()?;
    cluster
        .marketplace
        .wait_ready(Duration::from_secs(60))
        .await?;
    cluster.gateway.wait_ready(Duration::from_secs(60)).await?;
    cluster.wait_quiet(Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_exact(&gateway_http, &snapshot).await?;

    let settled = settled(cluster, &stats).await?;
    let (events_written, applied) = (settled.written, settled.applied);
    say(format!(
        "process crashes ({size:?}, seed {}): {total} batches; ingest {ingest:.1?}; kill -9: marketplace {} times, gateway {} times \
         ({kill_events} kill events, restart to ready {:?} max); {}",
        plan.seed,
        cluster.marketplace.kills.saturating_sub(1),
        cluster.gateway.kills.saturating_sub(1),
        restart_times.iter().max().copied().unwrap_or_default(),
        stats.summary()
    ));
    let rounds = settled.rounds;
    say(format!(
        "process crashes: events {events_written} written = {applied} applied; {unsent} re-published after the \
         de-duplication window (stream grew by {}), dropped by the inbox; figures equal the ledger {converged:.1?} after ingest, \
         and again after a final kill -9 of both; reconciliation every 2 s: {rounds} rounds compared since the last \
         restart, nothing repaired over the test; {}",
        after - before,
        headline(&view)
    ));
    say(ledger_line(&ledger));
    Ok(())
}

/// A copy of the ledger, so that figures are compared without holding its lock.
fn ledger_snapshot(ledger: &Arc<Mutex<Ledger>>) -> Ledger {
    ledger.lock().expect("ledger").clone()
}

// ---------------------------------------------------------------------------------------------
// 2. Broker and database faults

/// One injected fault.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// NATS stopped (SIGTERM when graceful, else SIGKILL) for a while, then started again on
    /// the same port and store; with `restart_services`, both services are killed and
    /// restarted while it is down (they must wait for it rather than exit).
    NatsDown {
        graceful: bool,
        down: Duration,
        restart_services: bool,
    },
    /// Every PostgreSQL connection reset once.
    PgReset,
    /// Every chunk to and from PostgreSQL delayed.
    PgLatency { delay: Duration, hold: Duration },
    /// PostgreSQL unreachable without an answer (a partition).
    PgBlackHole { hold: Duration },
    /// PostgreSQL refusing (reset) every connection; with `restart_marketplace`, the
    /// marketplace is killed and restarted meanwhile.
    PgDown {
        hold: Duration,
        restart_marketplace: bool,
    },
}

fn schedule(size: Size, rng: &mut Rng) -> Vec<Fault> {
    let s = Duration::from_secs;
    match size {
        Size::Reduced => vec![
            Fault::NatsDown {
                graceful: true,
                down: s(3),
                restart_services: false,
            },
            Fault::PgReset,
            // About a push's deadline over its round trips: some pushes commit just as their
            // caller gives up, and are found by GetBatch.
            Fault::PgLatency {
                delay: Duration::from_millis(250),
                hold: s(6),
            },
            // Longer than a call's deadline: calls must give up (or be refused), not hang.
            Fault::PgBlackHole { hold: s(7) },
            Fault::NatsDown {
                graceful: false,
                down: s(3),
                restart_services: true,
            },
            Fault::PgDown {
                hold: s(7),
                restart_marketplace: true,
            },
        ],
        Size::Full => {
            let mut faults = Vec::new();
            for round in 0..3 {
                faults.push(Fault::NatsDown {
                    graceful: round % 2 == 0,
                    down: rng.between(s(2), s(8)),
                    restart_services: false,
                });
                faults.push(Fault::PgReset);
                faults.push(Fault::PgLatency {
                    delay: rng.between(Duration::from_millis(50), Duration::from_millis(400)),
                    hold: rng.between(s(3), s(10)),
                });
                // One partition outlasts the gateway's ack wait (30 s): its deliveries come
                // back while it still holds them.
                faults.push(Fault::PgBlackHole {
                    hold: if round == 1 {
                        s(35)
                    } else {
                        rng.between(s(3), s(12))
                    },
                });
                faults.push(Fault::NatsDown {
                    graceful: round % 2 == 1,
                    down: rng.between(s(2), s(8)),
                    restart_services: true,
                });
                faults.push(Fault::PgReset);
                faults.push(Fault::PgDown {
                    hold: rng.between(s(2), s(8)),
                    restart_marketplace: true,
                });
            }
            faults
        }
    }
}

fn fault_time(fault: &Fault) -> Duration {
    match *fault {
        Fault::NatsDown { down, .. } => down,
        Fault::PgReset => Duration::ZERO,
        Fault::PgLatency { hold, .. }
        | Fault::PgBlackHole { hold }
        | Fault::PgDown { hold, .. } => hold,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_and_database_faults_lose_nothing_and_never_hang() {
    let _serial = SERIAL.lock().await;
    let name = "faults_broker_database";
    let Some(nats) = nats_binary(name) else {
        return;
    };
    let Some(db) = testing::fresh_postgres(name).await else {
        return;
    };
    let (upstream, through) = via_proxy(&db).await.expect("database URL");
    let proxy = FaultProxy::start(upstream).await.expect("start the proxy");
    let mut cluster = Cluster::start(name, nats, db.clone(), through(proxy.addr))
        .await
        .expect("start the cluster");
    if let Err(err) = broker_and_database_faults(&mut cluster, &proxy, Size::from_env()).await {
        proxy.set(Mode::Pass);
        panic!("{err:#}\n\n{}", cluster.logs());
    }
}

async fn broker_and_database_faults(
    cluster: &mut Cluster,
    proxy: &FaultProxy,
    size: Size,
) -> anyhow::Result<()> {
    let mut rng = Rng::new(seed() ^ 0xFA_0175);
    let faults = schedule(size, &mut rng);
    let (sales, onboarding) = match size {
        Size::Reduced => (10_000, 2_500),
        Size::Full => (200_000, 50_000),
    };
    let mut plan = Plan::standard(sales, onboarding, seed() ^ 0x2);
    let streams = generate(&plan);
    // Spread ingest over the whole fault schedule (gaps, faults, recoveries).
    let estimate: Duration = faults
        .iter()
        .map(|f| fault_time(f) + Duration::from_secs(5))
        .sum();
    plan.spread(&streams, estimate);
    let total = batches(&streams);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stats = Arc::new(Stats::default());
    let give_up = Instant::now() + size.time_limit();
    let workers = spawn_workers(
        streams,
        &cluster.marketplace.grpc_addr(),
        &plan,
        &ledger,
        &stats,
        give_up,
    );
    // A dashboard reader calling the gateway over gRPC throughout, with the same deadline.
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let (reading, stats) = (reading.clone(), stats.clone());
        let channel = tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            cluster.gateway.grpc_addr()
        ))?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
        tokio::spawn(async move {
            let mut client = DashboardClient::new(channel);
            while reading.load(Ordering::Relaxed) && Instant::now() < give_up {
                let _ = call(
                    &stats,
                    "dashboard",
                    client.get_national_summary(request(gpb::GetNationalSummaryRequest {})),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let probes = workload::client(&cluster.marketplace.grpc_addr(), "postmart");
    let mut probes = probes;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut recoveries: Vec<(String, Duration)> = Vec::new();
    let (mut nats_stops, mut nats_kills) = (0, 0);
    let mut pg_faults: std::collections::BTreeMap<&str, u32> = Default::default();
    for (index, fault) in faults.iter().enumerate() {
        tokio::time::sleep(rng.between(Duration::from_millis(500), Duration::from_secs(3))).await;
        cluster.check_alive()?;
        let label = format!("{fault:?}");
        // A caller asking the marketplace all through the fault, with the same deadline.
        let asking = Arc::new(AtomicBool::new(true));
        let asker = {
            let (asking, stats) = (asking.clone(), stats.clone());
            let mut client = workload::client(&cluster.marketplace.grpc_addr(), "voso");
            tokio::spawn(async move {
                while asking.load(Ordering::Relaxed) {
                    let asked = agriportal_proto::marketplace::v1::GetBatchRequest {
                        batch_id: "voso-sales-00000".into(),
                    };
                    let _ = call(&stats, "during_fault", client.get_batch(request(asked))).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            })
        };
        say(format!("fault {}/{}: {label}", index + 1, faults.len()));
        match *fault {
            Fault::NatsDown {
                graceful,
                down,
                restart_services,
            } => {
                let began = Instant::now();
                cluster.nats.stop(graceful);
                if graceful {
                    nats_stops += 1;
                } else {
                    nats_kills += 1;
                }
                if restart_services {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    cluster.marketplace.kill9();
                    cluster.gateway.kill9();
                    cluster.marketplace.start()?;
                    cluster.gateway.start()?;
                }
                tokio::time::sleep(down.saturating_sub(began.elapsed())).await;
                // Started while NATS was down, they must still be waiting for it.
                cluster.check_alive()?;
                cluster.nats.run().await?;
            }
            Fault::PgReset => {
                aim_at_push(&stats, &mut rng, Duration::from_secs(3)).await;
                proxy.reset_all();
                *pg_faults.entry("reset").or_default() += 1;
            }
            Fault::PgLatency { delay, hold } => {
                proxy.set(Mode::Latency(delay));
                tokio::time::sleep(hold).await;
                proxy.set(Mode::Pass);
                *pg_faults.entry("latency").or_default() += 1;
            }
            Fault::PgBlackHole { hold } => {
                proxy.set(Mode::BlackHole);
                tokio::time::sleep(hold).await;
                proxy.set(Mode::Pass);
                *pg_faults.entry("black hole").or_default() += 1;
            }
            Fault::PgDown {
                hold,
                restart_marketplace,
            } => {
                let began = Instant::now();
                proxy.set(Mode::Down);
                if restart_marketplace {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    cluster.marketplace.kill9();
                    cluster.marketplace.start()?;
                }
                tokio::time::sleep(hold.saturating_sub(began.elapsed())).await;
                cluster.check_alive()?;
                proxy.set(Mode::Pass);
                *pg_faults.entry("down (connections refused)").or_default() += 1;
            }
        }
        let cleared = Instant::now();
        asking.store(false, Ordering::Relaxed);
        asker.await.context("asker panicked")?;
        let took = recover(
            cluster,
            &mut probes,
            &http,
            &ledger,
            &stats,
            index as u32,
            cleared,
        )
        .await
        .with_context(|| format!("after {label}"))?;
        say(format!("  recovered {took:.1?} after the fault cleared"));
        recoveries.push((label, took));
    }
    join_workers(workers).await?;
    reading.store(false, Ordering::Relaxed);
    reader.await.context("reader panicked")?;

    let snapshot = ledger_snapshot(&ledger);
    let gateway_http = cluster.gateway.http_base();
    let (converged, view) = wait_exact(&gateway_http, &snapshot, Duration::from_secs(180)).await?;
    cluster.wait_quiet(Duration::from_secs(120)).await?;
    assert_exact(&gateway_http, &snapshot).await?;
    let settled = settled(cluster, &stats).await?;
    let (events_written, applied) = (settled.written, settled.applied);
    let slowest = recoveries
        .iter()
        .max_by_key(|(_, d)| *d)
        .cloned()
        .unwrap_or_default();
    say(format!(
        "broker and database faults ({size:?}, seed {}): {total} batches; NATS ({}) stopped with SIGTERM {nats_stops} times, \
         killed {nats_kills} times; PostgreSQL faults through the proxy {pg_faults:?} ({} proxied connections); \
         services killed and restarted during outages: marketplace {}, gateway {}; slowest recovery {:.1?} ({}); {}",
        plan.seed,
        cluster.nats.version,
        proxy.connections(),
        cluster.marketplace.kills,
        cluster.gateway.kills,
        slowest.1,
        slowest.0,
        stats.summary()
    ));
    let rounds = settled.rounds;
    say(format!(
        "broker and database faults: events {events_written} written = {applied} applied; figures equal the ledger \
         {converged:.1?} after ingest; reconciliation every 2 s: {rounds} rounds compared since the last restart, \
         nothing repaired over the test; {}",
        headline(&view)
    ));
    say(ledger_line(&ledger));
    Ok(())
}

/// After a fault clears: a new probe batch must be acknowledged and show in the gateway's
/// figures within [`RECOVERY`]. Returns how long that took.
async fn recover(
    cluster: &mut Cluster,
    client: &mut agriportal::client::PartnerClient,
    http: &reqwest::Client,
    ledger: &Arc<Mutex<Ledger>>,
    stats: &Stats,
    index: u32,
    cleared: Instant,
) -> anyhow::Result<Duration> {
    let (batch, day, grams) = probe(index);
    loop {
        cluster.check_alive()?;
        match call(stats, "probe", client.push_sales(request(batch.clone()))).await {
            Ok(result) => {
                anyhow::ensure!(result.accepted == 1, "probe {index}: {result:?}");
                break;
            }
            Err(workload::Outcome::Other(message)) => bail!("probe {index}: {message}"),
            Err(_) => {}
        }
        if cleared.elapsed() > RECOVERY {
            bail!("the marketplace did not acknowledge a push within {RECOVERY:?} of the fault clearing");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ledger
        .lock()
        .expect("ledger")
        .apply("postmart", &Payload::Sales(batch));
    let url = format!(
        "{}/api/v1/timeseries?metric=sales_grams&granularity=day&from={day}&to={day}&partner=postmart",
        cluster.gateway.http_base()
    );
    loop {
        cluster.check_alive()?;
        if let Ok(response) = http.get(&url).send().await {
            if let Ok(body) = response.json::<serde_json::Value>().await {
                if body["points"][0]["value"] == grams {
                    return Ok(cleared.elapsed());
                }
            }
        }
        if cleared.elapsed() > RECOVERY {
            bail!(
                "probe {index} acknowledged but not in the gateway's figures within {RECOVERY:?} of the fault clearing \
                 (consumer backlog {:?})",
                consumer_backlog(&cluster.nats.url(), &cluster.stream()).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Embedded mode

/// An `agriportal up` (not started) on a data directory of its own, in a temporary directory
/// named by `prefix` (kept as long as the returned `TempDir`).
fn embedded_up(prefix: &str) -> (tempfile::TempDir, std::path::PathBuf, Service) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("dir");
    let data = dir.path().join("data");
    let up = Service::new(
        "up",
        dir.path(),
        &["--data-dir", &data.display().to_string(), "up"],
        vec![token_env(dir.path())],
    );
    (dir, data, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_up_survives_kill_9_with_exact_totals() {
    let _serial = SERIAL.lock().await;
    let (_dir, data, mut up) = embedded_up("agriportal-faults-up-");
    if let Err(err) = embedded(&mut up, &data, Size::from_env()).await {
        panic!("{err:#}\n\nup log:\n{}", crate::procs::tail(&up.log, 40));
    }
}

async fn embedded(up: &mut Service, data: &std::path::Path, size: Size) -> anyhow::Result<()> {
    let started = Instant::now();
    let (sales, onboarding, kills) = match size {
        Size::Reduced => (10_000, 2_500, 4),
        Size::Full => (200_000, 50_000, 12),
    };
    let mut plan = Plan::standard(sales, onboarding, seed() ^ 0x3);
    let streams = generate(&plan);
    plan.spread(&streams, Duration::from_millis(1_500 * kills as u64));
    let total = batches(&streams);
    up.start()?;
    up.wait_ready(Duration::from_secs(60)).await?;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stats = Arc::new(Stats::default());
    let give_up = Instant::now() + size.time_limit();
    let workers = spawn_workers(streams, &up.grpc_addr(), &plan, &ledger, &stats, give_up);
    let mut rng = Rng::new(plan.seed ^ 0xE3B);
    let points = milestones(&mut rng, total, kills);
    let mut done = 0;
    while !workers.iter().all(|w| w.is_finished()) {
        up.check_alive()?;
        if done < kills && stats.batches_acked.load(Ordering::Relaxed) >= points[done] {
            aim_at_push(&stats, &mut rng, Duration::from_secs(2)).await;
            up.kill9();
            tokio::time::sleep(rng.between(Duration::ZERO, Duration::from_millis(500))).await;
            up.start()?;
            up.wait_ready(Duration::from_secs(60)).await?;
            done += 1;
        }
        anyhow::ensure!(Instant::now() < give_up, "time limit reached during ingest");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    join_workers(workers).await?;
    anyhow::ensure!(
        done == kills,
        "only {done} of {kills} kills happened during ingest"
    );
    let ingest = started.elapsed();
    let snapshot = ledger_snapshot(&ledger);
    let (converged, view) =
        wait_exact(&up.http_base(), &snapshot, Duration::from_secs(180)).await?;
    // Once more after everything is applied: what comes back after a crash changes nothing.
    up.kill9();
    up.start()?;
    up.wait_ready(Duration::from_secs(60)).await?;
    wait_exact(&up.http_base(), &snapshot, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_exact(&up.http_base(), &snapshot).await?;
    up.kill9();
    let (written, unsent, applied) = embedded_counts(data).await?;
    applied_once_and_calls_clean(written, unsent, applied, &stats)?;
    say(format!(
        "embedded ({size:?}, seed {}): {total} batches; ingest {ingest:.1?}; kill -9 of `up` {} times during ingest \
         (+1 after); {}",
        plan.seed,
        done,
        stats.summary()
    ));
    say(format!(
        "embedded: events {written} written = {applied} applied; figures equal the ledger {converged:.1?} after ingest \
         and after a last kill -9; {}",
        headline(&view)
    ));
    say(ledger_line(&ledger));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_messages_are_found_and_repaired_by_reconciliation() {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = direct_cluster("faults_lost_messages").await else {
        return;
    };
    if let Err(err) = lost_messages(&mut cluster).await {
        panic!("{err:#}\n\n{}", cluster.logs());
    }
}

/// Acknowledged events vanish from the stream before the gateway read them (the tail a power
/// loss takes from a JetStream that acknowledged before fsync). Nothing will ever re-send
/// them: the outbox marked them sent. Reconciliation must find the gap and close it exactly,
/// and later traffic must still count once.
async fn lost_messages(cluster: &mut Cluster) -> anyhow::Result<()> {
    let plan = Plan::standard(6_000, 1_500, seed() ^ 0x1055);
    // The gateway is down while the partners push, so the events wait in the stream.
    cluster.gateway.kill9();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stats = Arc::new(Stats::default());
    let give_up = Instant::now() + Duration::from_secs(120);
    let workers = spawn_workers(
        generate(&plan),
        &cluster.marketplace.grpc_addr(),
        &plan,
        &ledger,
        &stats,
        give_up,
    );
    join_workers(workers).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let written = loop {
        let (written, unsent) = cluster.outbox().await?;
        if unsent == 0 {
            break written;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{unsent} events never left the outbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lose = (written as u64 / 3).max(1);
    let lost = lose_tail(&cluster.nats.url(), &cluster.stream(), lose).await?;
    anyhow::ensure!(lost.len() as u64 == lose, "deleted {lost:?}, wanted {lose}");
    let started = Instant::now();
    cluster.gateway.start()?;
    cluster.gateway.wait_ready(Duration::from_secs(60)).await?;
    let snapshot = ledger_snapshot(&ledger);
    let (converged, _) = wait_exact(
        &cluster.gateway.http_base(),
        &snapshot,
        Duration::from_secs(90),
    )
    .await?;
    let repaired = cluster.repairs().await?;
    let applied = cluster.inbox().await?;
    anyhow::ensure!(
        applied == written - lost.len() as i64,
        "{applied} events applied; {written} written, {} lost",
        lost.len()
    );
    anyhow::ensure!(repaired > 0, "figures converged without any repair");
    // Later traffic still counts once, and more rounds change nothing.
    let (probe_request, _, _) = probe(1);
    let mut client = crate::workload::client(&cluster.marketplace.grpc_addr(), "voso");
    let acked = call(
        &stats,
        "probe",
        client.push_sales(request(probe_request.clone())),
    )
    .await;
    anyhow::ensure!(acked.is_ok(), "probe not acknowledged");
    ledger
        .lock()
        .expect("ledger")
        .apply("voso", &Payload::Sales(probe_request));
    let snapshot = ledger_snapshot(&ledger);
    // The figures printed below are these, after the probe, beside the ledger that has it.
    let (_, view) = wait_exact(
        &cluster.gateway.http_base(),
        &snapshot,
        Duration::from_secs(30),
    )
    .await?;
    let (rounds, repaired_after) = cluster.reconciled(4, Duration::from_secs(60)).await?;
    assert_exact(&cluster.gateway.http_base(), &snapshot).await?;
    anyhow::ensure!(
        repaired_after == repaired,
        "{} more cells repaired after the gap was closed",
        repaired_after - repaired
    );
    say(format!(
        "lost messages: {written} events written and published, the last {} deleted from the stream before the gateway \
         read them ({applied} applied); reconciliation every 2 s repaired {repaired} rollup cells and the figures equalled \
         the ledger {:.1?} after the gateway started ({converged:.1?} of waiting for the figures); a later push counted \
         once, {rounds} rounds after it repaired nothing; {}",
        lost.len(),
        started.elapsed(),
        headline(&view)
    ));
    say(ledger_line(&ledger));
    Ok(())
}

/// (outbox rows, unsent outbox rows, inbox rows) of a stopped embedded system. `up` runs every
/// service, so the gateway's inbox also holds the indicators service's events (its catalogue,
/// seeded at the first start): both producers' outboxes are counted.
async fn embedded_counts(data: &std::path::Path) -> anyhow::Result<(i64, i64, i64)> {
    let open = |file: &str| {
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(data.join(file))
            .read_only(true)
    };
    let (mut written, mut unsent) = (0, 0);
    for producer in ["marketplace.sqlite", "indicators.sqlite"] {
        let mut db = sqlx::SqliteConnection::connect_with(&open(producer)).await?;
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&mut db)
            .await?;
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL")
                .fetch_one(&mut db)
                .await?;
        written += rows;
        unsent += pending;
    }
    let mut gateway = sqlx::SqliteConnection::connect_with(&open("gateway.sqlite")).await?;
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox")
        .fetch_one(&mut gateway)
        .await?;
    Ok((written, unsent, applied))
}
