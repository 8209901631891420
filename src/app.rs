//! Assembly: which services run in this process, on which listeners, until when.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use agriportal_gateway::Gateway;
use agriportal_marketplace::Marketplace;
use agriportal_platform::bus::{BusError, BusKind};
use agriportal_platform::context::token_secret;
use agriportal_platform::http::{admin_router, Readiness};
use agriportal_platform::limits::ConcurrencyLimitLayer;
use agriportal_platform::{grpc, http, Config, Context};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A service that `serve --target` can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Marketplace integration: partners push statistics (gRPC).
    Marketplace,
    /// Gateway: national dashboards (gRPC and HTTP).
    Gateway,
}

impl Target {
    /// Every target, in start order.
    pub const ALL: [Target; 2] = [Target::Marketplace, Target::Gateway];

    /// The target's name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Marketplace => "marketplace",
            Target::Gateway => "gateway",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown target `{s}`"))
    }
}

/// Runs every service in one process: all gRPC services on `grpc_listener`, the gateway's HTTP
/// (API, page, health, metrics) on `http_listener`, until `shutdown` fires; then drains and
/// waits for background tasks. Embedded (SQLite + in-process bus) unless the configuration
/// names PostgreSQL and NATS.
pub async fn run_up(
    config: Config,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let retry = config.database_url.is_some() || config.nats_url.is_some();
    if retry {
        // A configuration error, not an outage: fail at once rather than retry.
        token_secret(&config)?;
    }
    let opening = until_started(
        "connecting to the stores and the bus",
        retry,
        &shutdown,
        || Context::open(config.clone()),
    );
    let Some(mut ctx) = opening.await? else {
        return Ok(());
    };
    ctx.shutdown = shutdown;
    run_context(ctx, grpc_listener, http_listener).await
}

/// [`run_up`] with an opened context (tests pass one whose bus they also hold).
pub async fn run_context(
    ctx: Context,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
) -> anyhow::Result<()> {
    let result = serve_all(&ctx, grpc_listener, http_listener).await;
    ctx.stop().await;
    result
}

async fn serve_all(
    ctx: &Context,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
) -> anyhow::Result<()> {
    let retry = ctx.config.database_url.is_some();
    let starting = until_started("starting the marketplace", retry, &ctx.shutdown, || {
        Marketplace::start(ctx)
    });
    let Some(marketplace) = starting.await? else {
        return Ok(());
    };
    let starting = until_started("starting the gateway", retry, &ctx.shutdown, || {
        Gateway::start(ctx)
    });
    let Some(gateway) = starting.await? else {
        return Ok(());
    };
    // The gateway reconciles against the marketplace mounted on this very listener.
    let own = grpc_listener.local_addr()?;
    let own = if own.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], own.port()))
    } else {
        own
    };
    let marketplace_url = ctx
        .config
        .marketplace_url
        .clone()
        .unwrap_or_else(|| format!("http://{own}"));
    gateway.start_reconciliation(Some(&marketplace_url))?;
    let routes = tonic::service::Routes::new(marketplace.grpc_service())
        .add_service(marketplace.audit_service())
        .add_service(gateway.grpc_service());
    let readiness = Readiness::new(vec![marketplace.database(), gateway.database()]);
    let router = gateway.http_router().merge(admin_router(readiness.clone()));
    let drain = ctx.config.drain();
    let names = [
        agriportal_marketplace::GRPC_SERVICE,
        agriportal_marketplace::AUDIT_GRPC_SERVICE,
        agriportal_gateway::GRPC_SERVICE,
    ];
    tokio::try_join!(
        grpc::serve_with(
            grpc_listener,
            routes,
            &names,
            readiness,
            ctx.shutdown.clone(),
            drain,
            ConcurrencyLimitLayer::from_config(&ctx.config),
        ),
        http::serve(http_listener, router, ctx.shutdown.clone(), drain),
    )?;
    Ok(())
}

/// Runs one service on PostgreSQL and NATS JetStream until `shutdown` fires. Refuses the
/// in-process bus: it cannot carry events between processes.
pub async fn run_target(
    target: Target,
    config: Config,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    check_distributed(&config)?;
    // A configuration error, not an outage: fail at once rather than retry.
    token_secret(&config)?;
    let opening = until_started("connecting to NATS and PostgreSQL", true, &shutdown, || {
        Context::open(config.clone())
    });
    let Some(mut ctx) = opening.await? else {
        return Ok(());
    };
    anyhow::ensure!(
        ctx.bus.kind() == BusKind::JetStream,
        "serve needs NATS JetStream (set NATS_URL)"
    );
    ctx.shutdown = shutdown;
    let shutdown = ctx.shutdown.clone();
    let result = match target {
        Target::Marketplace => {
            match until_started("starting the marketplace", true, &shutdown, || {
                Marketplace::start(&ctx)
            })
            .await
            {
                Ok(Some(service)) => service.run(grpc_listener, http_listener).await,
                Ok(None) => Ok(()),
                Err(err) => Err(err),
            }
        }
        Target::Gateway => {
            match until_started("starting the gateway", true, &shutdown, || {
                Gateway::start(&ctx)
            })
            .await
            {
                Ok(Some(service)) => {
                    match service.start_reconciliation(ctx.config.marketplace_url.as_deref()) {
                        Ok(()) => service.run(grpc_listener, http_listener).await,
                        Err(err) => Err(err),
                    }
                }
                Ok(None) => Ok(()),
                Err(err) => Err(err),
            }
        }
    };
    ctx.stop().await;
    result
}

/// Longest wait between two attempts to start while a dependency is down.
const START_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Bound of one attempt: a database behind a network partition may never answer a connect.
const START_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `attempt` until it succeeds, or `None` once `shutdown` fires first. With `retry`
/// (PostgreSQL or NATS configured), a failure that an outage explains (the dependency
/// unreachable, refusing connections, starting up, or not answering in time) is logged and
/// retried with backoff: a process started while NATS or PostgreSQL is down waits for it, as a
/// running one rides out the same outage, rather than exiting into a crash loop whose delays
/// grow far beyond the outage. Any other failure (a wrong password, a bad URL, a failed
/// migration) is returned at once.
async fn until_started<T, F, Fut>(
    what: &str,
    retry: bool,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    if !retry {
        return tokio::select! {
            outcome = attempt() => outcome.map(Some),
            _ = shutdown.cancelled() => Ok(None),
        };
    }
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(START_ATTEMPT_TIMEOUT, attempt()) => outcome,
            _ = shutdown.cancelled() => return Ok(None),
        };
        match outcome {
            Ok(Ok(value)) => return Ok(Some(value)),
            Ok(Err(err)) if is_outage(&err) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "{what}: a dependency is unavailable; retrying"
                );
            }
            Ok(Err(err)) => return Err(err),
            Err(_) => {
                tracing::warn!(timeout = ?START_ATTEMPT_TIMEOUT, "{what}: no answer in time; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
        backoff = (backoff * 2).min(START_BACKOFF_MAX);
    }
}

/// Whether `err` comes from a dependency being down rather than from the configuration.
fn is_outage(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        if let Some(bus) = cause.downcast_ref::<BusError>() {
            return matches!(bus, BusError::Unavailable(_));
        }
        if let Some(db) = cause.downcast_ref::<sqlx::Error>() {
            return match db {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                // cannot_connect_now (starting up or shutting down), admin_shutdown,
                // crash_shutdown, too_many_connections.
                sqlx::Error::Database(e) => matches!(
                    e.code().as_deref(),
                    Some("57P03" | "57P01" | "57P02" | "53300")
                ),
                _ => false,
            };
        }
        cause.downcast_ref::<std::io::Error>().is_some()
    })
}

/// Explains what `serve` needs when it is not configured for the distributed mode.
pub fn check_distributed(config: &Config) -> anyhow::Result<()> {
    if config.nats_url.is_none() {
        anyhow::bail!(
            "`serve` runs one service per process, and the in-process event bus cannot cross processes: \
             set NATS_URL (or --nats-url) to a NATS JetStream server, or use `agriportal up` to run everything in one process"
        );
    }
    if config.database_url.is_none() {
        anyhow::bail!(
            "`serve` runs one service per process, which share PostgreSQL: set DATABASE_URL (or --database-url), \
             or use `agriportal up` to run everything in one process on SQLite"
        );
    }
    Ok(())
}

/// Applies every store's migrations (the services' and the platform's) and returns.
pub async fn migrate(config: &Config) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let platform = agriportal_platform::storage::platform_database(config).await?;
    platform.close().await;
    done.push("platform".to_string());
    let db = agriportal_platform::storage::Database::connect(
        config,
        agriportal_marketplace::config::SCHEMA,
    )
    .await?;
    db.migrate(
        &agriportal_marketplace::store::postgres_migrations(),
        &agriportal_marketplace::store::sqlite_migrations(),
    )
    .await?;
    db.close().await;
    done.push("marketplace".to_string());
    let db =
        agriportal_platform::storage::Database::connect(config, agriportal_gateway::config::SCHEMA)
            .await?;
    db.migrate(
        &agriportal_gateway::store::postgres_migrations(),
        &agriportal_gateway::store::sqlite_migrations(),
    )
    .await?;
    db.close().await;
    done.push("gateway".to_string());
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_retried_and_configuration_errors_are_not() {
        let bus_down = anyhow::Error::new(BusError::Unavailable("connection refused".into()))
            .context("connecting to NATS");
        assert!(is_outage(&bus_down));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let db_down = anyhow::Error::new(sqlx::Error::Io(refused)).context("opening the store");
        assert!(is_outage(&db_down));
        assert!(is_outage(&anyhow::Error::new(sqlx::Error::PoolTimedOut)));

        let refused_by_bus = anyhow::Error::new(BusError::Other("bad stream config".into()));
        assert!(!is_outage(&refused_by_bus));
        let bad_url = anyhow::Error::new(sqlx::Error::Configuration("bad URL".into()));
        assert!(!is_outage(&bad_url));
        assert!(!is_outage(&anyhow::anyhow!(
            "AGRIPORTAL_TOKEN_SECRET must be at least 32 bytes long"
        )));
    }

    #[tokio::test]
    async fn startup_retries_outages_until_up_and_stops_on_shutdown() {
        let shutdown = CancellationToken::new();
        let mut attempts = 0;
        let started = until_started("test", true, &shutdown, || {
            attempts += 1;
            let n = attempts;
            async move {
                if n < 3 {
                    Err(anyhow::Error::new(BusError::Unavailable("down".into())))
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .expect("started");
        assert_eq!(started, Some(3));

        let failed = until_started("test", true, &shutdown, || async {
            Err::<(), _>(anyhow::anyhow!("wrong password"))
        })
        .await;
        assert!(failed.is_err(), "a configuration error is returned at once");

        shutdown.cancel();
        let stopped = until_started("test", true, &shutdown, || async {
            Err::<(), _>(anyhow::Error::new(BusError::Unavailable("down".into())))
        })
        .await
        .expect("no error");
        assert_eq!(stopped, None);
    }
}
