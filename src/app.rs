//! Assembly: which services run in this process, on which listeners, until when.

use std::fmt;
use std::str::FromStr;

use agriportal_gateway::Gateway;
use agriportal_marketplace::Marketplace;
use agriportal_platform::bus::BusKind;
use agriportal_platform::http::{admin_router, Readiness};
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
    let mut ctx = Context::open(config).await?;
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
    let marketplace = Marketplace::start(ctx).await?;
    let gateway = Gateway::start(ctx).await?;
    let routes =
        tonic::service::Routes::new(marketplace.grpc_service()).add_service(gateway.grpc_service());
    let readiness = Readiness::new(vec![marketplace.database(), gateway.database()]);
    let router = gateway.http_router().merge(admin_router(readiness));
    let drain = ctx.config.drain();
    let names = [
        agriportal_marketplace::GRPC_SERVICE,
        agriportal_gateway::GRPC_SERVICE,
    ];
    tokio::try_join!(
        grpc::serve(grpc_listener, routes, &names, ctx.shutdown.clone(), drain),
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
    let mut ctx = Context::open(config).await?;
    anyhow::ensure!(
        ctx.bus.kind() == BusKind::JetStream,
        "serve needs NATS JetStream (set NATS_URL)"
    );
    ctx.shutdown = shutdown;
    let result = match target {
        Target::Marketplace => match Marketplace::start(&ctx).await {
            Ok(service) => service.run(grpc_listener, http_listener).await,
            Err(err) => Err(err),
        },
        Target::Gateway => match Gateway::start(&ctx).await {
            Ok(service) => service.run(grpc_listener, http_listener).await,
            Err(err) => Err(err),
        },
    };
    ctx.stop().await;
    result
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
        &agriportal_marketplace::store::POSTGRES_MIGRATIONS,
        &agriportal_marketplace::store::SQLITE_MIGRATIONS,
    )
    .await?;
    db.close().await;
    done.push("marketplace".to_string());
    let db =
        agriportal_platform::storage::Database::connect(config, agriportal_gateway::config::SCHEMA)
            .await?;
    db.migrate(
        &agriportal_gateway::store::POSTGRES_MIGRATIONS,
        &agriportal_gateway::store::SQLITE_MIGRATIONS,
    )
    .await?;
    db.close().await;
    done.push("gateway".to_string());
    Ok(done)
}
