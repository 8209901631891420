//! The system under test as separate processes — `serve --target marketplace`, `serve
//! --target gateway`, the test's own `nats-server`, PostgreSQL (directly or through the fault
//! proxy) — and the checks made on it: the gateway's figures against the ledger, the outbox,
//! the inbox, the stream and the durable consumer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agriportal_platform::bus::stream_name;
use agriportal_platform::testing;
use anyhow::{bail, Context as _};
use serde_json::Value;
use sqlx::PgPool;

use crate::procs::{say, token_env, NatsServer, Service, BIN};
use crate::workload::{diff, gateway_view, Ledger};

/// Full or reduced run (`AGRIPORTAL_FAULTS=full`; reduced by default, for CI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// A few minutes at most on 2 cores.
    Reduced,
    /// The figures: 200,000 sales and 50,000 onboarding records, 20+ kills.
    Full,
}

impl Size {
    /// From `AGRIPORTAL_FAULTS`.
    pub fn from_env() -> Size {
        match std::env::var("AGRIPORTAL_FAULTS") {
            Ok(v) if v.trim().eq_ignore_ascii_case("full") => Size::Full,
            _ => Size::Reduced,
        }
    }

    /// How long a test may take before it fails.
    pub fn time_limit(self) -> Duration {
        match self {
            Size::Reduced => Duration::from_secs(6 * 60),
            Size::Full => Duration::from_secs(90 * 60),
        }
    }
}

/// Prints why `test` is skipped, or fails it under `AGRIPORTAL_REQUIRE_SERVERS=1`.
pub fn skip(test: &str, why: &str) {
    if testing::require_servers() {
        panic!(
            "{test}: {why}, and {}=1 requires it",
            testing::REQUIRE_SERVERS_ENV
        );
    }
    say(format!(
        "SKIPPED {test}: {why}; set {}=1 to make this a failure",
        testing::REQUIRE_SERVERS_ENV
    ));
}

/// `url` (`postgres://user@host:port/db?…`) split into the upstream address and the same
/// URL pointing at `proxy`.
pub async fn via_proxy(url: &str) -> anyhow::Result<(SocketAddr, impl Fn(SocketAddr) -> String)> {
    let start = url.find("://").context("no scheme in the database URL")? + 3;
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    let (user, host) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    anyhow::ensure!(
        !host.is_empty(),
        "the database URL names no host (a socket path cannot be proxied)"
    );
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    };
    let upstream = tokio::net::lookup_host(&host)
        .await?
        .next()
        .with_context(|| format!("cannot resolve {host}"))?;
    let (head, user, tail) = (
        url[..start].to_string(),
        user.to_string(),
        url[end..].to_string(),
    );
    Ok((upstream, move |proxy: SocketAddr| {
        format!("{head}{user}{proxy}{tail}")
    }))
}

/// The distributed system: the test's own NATS, a fresh database, both services.
pub struct Cluster {
    /// The test's own NATS.
    pub nats: NatsServer,
    /// Bus prefix.
    pub prefix: String,
    /// `serve --target marketplace`.
    pub marketplace: Service,
    /// `serve --target gateway`.
    pub gateway: Service,
    /// Pool on the test's database for checks.
    pub pg: PgPool,
    /// Temporary directory: logs, NATS store, data dir. Last, so that it is removed after
    /// the processes using it are killed.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts NATS, migrates, starts both services (their `DATABASE_URL` is
    /// `service_database_url`, which may go through a proxy) and waits until they are ready.
    pub async fn start(
        name: &str,
        nats_binary: std::path::PathBuf,
        database_url: String,
        service_database_url: String,
    ) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("agriportal-faults-")
            .tempdir()?;
        let nats = NatsServer::start(nats_binary, dir.path()).await?;
        let prefix = testing::unique_prefix(name);
        let env = |db: &str| {
            vec![
                ("DATABASE_URL".to_string(), db.to_string()),
                ("NATS_URL".to_string(), nats.url()),
                ("AGRIPORTAL_BUS_PREFIX".to_string(), prefix.clone()),
                token_env(dir.path()),
                (
                    "AGRIPORTAL_DATA_DIR".to_string(),
                    dir.path().join("data").display().to_string(),
                ),
            ]
        };
        migrate(dir.path(), &env(&database_url))?;
        let mut marketplace = Service::new(
            "marketplace",
            dir.path(),
            &["serve", "--target", "marketplace"],
            env(&service_database_url),
        );
        // Reconciliation runs every 2 s against the marketplace process: under kills and
        // outages it must never "repair" an event that is only late, or totals would drift.
        let mut gateway_env = env(&service_database_url);
        gateway_env.push((
            "AGRIPORTAL_MARKETPLACE_URL".to_string(),
            format!("http://{}", marketplace.grpc_addr()),
        ));
        gateway_env.push((
            "AGRIPORTAL_RECONCILE_INTERVAL_SECONDS".to_string(),
            "2".to_string(),
        ));
        let mut gateway = Service::new(
            "gateway",
            dir.path(),
            &["serve", "--target", "gateway"],
            gateway_env,
        );
        marketplace.start()?;
        gateway.start()?;
        let nats_log = |e: anyhow::Error| {
            e.context(format!(
                "nats-server log:\n{}",
                crate::procs::tail(&dir.path().join("nats-server.log"), 15)
            ))
        };
        marketplace
            .wait_ready(Duration::from_secs(60))
            .await
            .map_err(nats_log)?;
        gateway
            .wait_ready(Duration::from_secs(60))
            .await
            .map_err(nats_log)?;
        let pg = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&database_url)
            .await?;
        Ok(Cluster {
            dir,
            nats,
            prefix,
            marketplace,
            gateway,
            pg,
        })
    }

    /// The JetStream stream's name.
    pub fn stream(&self) -> String {
        stream_name(&self.prefix)
    }

    /// Fails when a service exited on its own.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.marketplace.check_alive()?;
        self.gateway.check_alive()
    }

    /// Both services' log tails, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "marketplace log:\n{}\n\ngateway log:\n{}\n\nnats log:\n{}",
            crate::procs::tail(&self.marketplace.log, 25),
            crate::procs::tail(&self.gateway.log, 25),
            crate::procs::tail(&self.dir.path().join("nats-server.log"), 10),
        )
    }

    /// Outbox rows (events written) and the unsent ones.
    pub async fn outbox(&self) -> anyhow::Result<(i64, i64)> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM marketplace.outbox")
            .fetch_one(&self.pg)
            .await?;
        let unsent: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM marketplace.outbox WHERE sent_at_ms IS NULL")
                .fetch_one(&self.pg)
                .await?;
        Ok((total, unsent))
    }

    /// Events the gateway applied (inbox rows).
    pub async fn inbox(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM gateway.inbox")
            .fetch_one(&self.pg)
            .await?)
    }

    /// Waits until the running gateway has compared its rollups with the marketplace's records
    /// in `rounds` reconciliation rounds (enough for a difference to be confirmed and
    /// repaired), then returns how many cells reconciliation repaired in this test.
    pub async fn reconciled(&self, rounds: i64, limit: Duration) -> anyhow::Result<(i64, i64)> {
        let deadline = tokio::time::Instant::now() + limit;
        let url = format!("{}/metrics", self.gateway.admin_base());
        loop {
            let compared = match reqwest::get(&url).await {
                Ok(r) => r
                    .text()
                    .await
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| {
                        l.starts_with(
                            "agriportal_gateway_reconcile_rounds_total{outcome=\"compared\"}",
                        )
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
                    .sum(),
                Err(_) => 0,
            };
            if compared >= rounds {
                return Ok((compared, self.repairs().await?));
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the gateway compared only {compared} reconciliation rounds in {limit:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Cells the gateway's reconciliation repaired. Every event reaches the gateway in these
    /// scenarios, so any repair would be a false one (an event taken for lost while late).
    pub async fn repairs(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM gateway.repairs")
            .fetch_one(&self.pg)
            .await?)
    }

    /// Marks up to `n` events published before `older_than_ms` as unsent again, as a relay
    /// that crashed between publishing and marking them sent leaves them: it publishes them
    /// again. Returns how many.
    pub async fn unsend(&self, n: i64, older_than_ms: i64) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "UPDATE marketplace.outbox SET sent_at_ms = NULL WHERE seq IN \
             (SELECT seq FROM marketplace.outbox WHERE sent_at_ms IS NOT NULL AND sent_at_ms < $1 \
              ORDER BY md5(event_id) LIMIT $2)",
        )
        .bind(older_than_ms)
        .bind(n)
        .execute(&self.pg)
        .await?;
        Ok(done.rows_affected())
    }

    /// Waits until the relay published everything and the gateway's durable consumer has
    /// nothing pending or unacknowledged: after that nothing can still change the figures.
    pub async fn wait_quiet(&self, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let (_, unsent) = self.outbox().await?;
            let backlog = consumer_backlog(&self.nats.url(), &self.stream()).await;
            if let Ok((0, 0)) = backlog {
                if unsent == 0 {
                    return Ok(());
                }
            }
            if started.elapsed() > limit {
                bail!("not quiet after {limit:?}: {unsent} unsent outbox rows, consumer backlog {backlog:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn migrate(dir: &Path, env: &[(String, String)]) -> anyhow::Result<()> {
    let out = Command::new(BIN)
        .env_remove("AGRIPORTAL_BUS_PREFIX")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AGRIPORTAL_LOG", "warn")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("migrate")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

async fn jetstream(url: &str) -> anyhow::Result<async_nats::jetstream::Context> {
    let client = tokio::time::timeout(
        Duration::from_secs(5),
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(3))
            .connect(url),
    )
    .await
    .context("connecting to NATS: timed out")??;
    Ok(async_nats::jetstream::new(client))
}

/// Sets the stream's de-duplication window (the services set 2 minutes whenever they start).
pub async fn set_dedup_window(url: &str, stream: &str, window: Duration) -> anyhow::Result<()> {
    let js = jetstream(url).await?;
    let work = async {
        let mut config = js.get_stream(stream).await?.cached_info().config.clone();
        config.duplicate_window = window;
        js.update_stream(config).await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .context("updating the stream: timed out")?
}

/// Messages the stream holds.
pub async fn stream_messages(url: &str, stream: &str) -> anyhow::Result<u64> {
    let js = jetstream(url).await?;
    let work = async {
        anyhow::Ok(
            js.get_stream(stream)
                .await?
                .get_info()
                .await?
                .state
                .messages,
        )
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .context("stream info: timed out")?
}

/// Deletes the stream's newest `n` messages, as a power loss takes the tail that JetStream
/// had acknowledged but not yet written to disk. Returns their sequence numbers.
pub async fn lose_tail(url: &str, stream: &str, n: u64) -> anyhow::Result<Vec<u64>> {
    let js = jetstream(url).await?;
    let work = async {
        let stream = js.get_stream(stream).await?;
        let last = stream.cached_info().state.last_sequence;
        let mut lost = Vec::new();
        for seq in (last.saturating_sub(n) + 1)..=last {
            if stream.delete_message(seq).await? {
                lost.push(seq);
            }
        }
        anyhow::Ok(lost)
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .context("deleting messages: timed out")?
}

/// The gateway consumer's (pending, unacknowledged) messages.
pub async fn consumer_backlog(url: &str, stream: &str) -> anyhow::Result<(u64, usize)> {
    let js = jetstream(url).await?;
    let work = async {
        let info = js
            .get_stream(stream)
            .await?
            .consumer_info(agriportal_gateway::config::CONSUMER)
            .await?;
        anyhow::Ok((info.num_pending, info.num_ack_pending))
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .context("consumer info: timed out")?
}

/// The gateway's national and provincial figures at the ledger's paths.
pub async fn gateway_figures(
    http_base: &str,
    paths: &BTreeMap<String, i64>,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let national: Value = client
        .get(format!("{http_base}/api/v1/national"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let provinces: Value = client
        .get(format!("{http_base}/api/v1/provinces"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(gateway_view(&national, &provinces, paths))
}

/// Waits until every figure of the gateway equals the ledger's; returns how long it took and
/// the figures.
pub async fn wait_exact(
    http_base: &str,
    ledger: &Ledger,
    limit: Duration,
) -> anyhow::Result<(Duration, BTreeMap<String, i64>)> {
    let expected = ledger.view();
    let started = Instant::now();
    loop {
        let last = match gateway_figures(http_base, &expected).await {
            Ok(actual) if actual == expected => return Ok((started.elapsed(), expected)),
            Ok(actual) => diff(&expected, &actual, 12).join("\n  "),
            Err(e) => format!("{e:#}"),
        };
        if started.elapsed() > limit {
            bail!("the gateway's figures never equalled the ledger within {limit:?}; last differences:\n  {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Checks the figures once (no waiting).
pub async fn assert_exact(http_base: &str, ledger: &Ledger) -> anyhow::Result<()> {
    let expected = ledger.view();
    let actual = gateway_figures(http_base, &expected).await?;
    if actual != expected {
        bail!(
            "the gateway's figures moved away from the ledger:\n  {}",
            diff(&expected, &actual, 12).join("\n  ")
        );
    }
    Ok(())
}

/// The headline figures of a view, for the report.
pub fn headline(view: &BTreeMap<String, i64>) -> String {
    let g = |k: &str| view.get(k).copied().unwrap_or_default();
    format!(
        "national sales {} g, {} VND, {} orders; households onboarded {}, active {}; \
         postmart {} g / {} VND / {} orders / {} households; voso {} g / {} VND / {} orders / {} households",
        g("national.sales.grams"),
        g("national.sales.value_vnd"),
        g("national.sales.orders"),
        g("national.households.onboarded"),
        g("national.households.active"),
        g("national.sales.by_partner.postmart.grams"),
        g("national.sales.by_partner.postmart.value_vnd"),
        g("national.sales.by_partner.postmart.orders"),
        g("national.households.by_partner.postmart"),
        g("national.sales.by_partner.voso.grams"),
        g("national.sales.by_partner.voso.value_vnd"),
        g("national.sales.by_partner.voso.orders"),
        g("national.households.by_partner.voso"),
    )
}
