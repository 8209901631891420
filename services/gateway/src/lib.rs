//! Gateway (cổng số liệu): consumes the marketplace events into rollups and serves national
//! figures to dashboards over gRPC (`agriportal.gateway.v1.Dashboard`) and HTTP/JSON
//! (`/api/v1/...`). The pages are the web front end's, which reads this service over gRPC.
//!
//! Files, as in every service crate: `config` (settings, names, limits), `error` (the
//! service's errors), `domain` (rules, as pure functions), `store` (storage trait and its SQL
//! implementation), `service` (the queries both adapters answer from), `grpc` (tonic
//! adapter), and this file (the service's declaration for the kit); the gateway adds
//! `consumer` (what the marketplace's events change), `reconcile` (periodic comparison with
//! the marketplace's records, and repairs) and `http`, and for the plan's indicators
//! `readmodel` (what the indicators service's events change), `household_facts` (the
//! household indicators' figures, from their rollups), `indicators` (the indicator queries,
//! read from the store) and `snapshot` with `indicator_snapshot` (the read model in memory).

pub mod config;
pub mod consumer;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod household_facts;
pub mod http;
pub mod indicator_snapshot;
pub mod indicators;
pub mod openapi;
pub mod readmodel;
pub mod reconcile;
pub mod series;
pub mod service;
pub mod snapshot;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use agriportal_platform::access::Access;
use agriportal_platform::client::ClientOptions;
use agriportal_platform::consumer::{ConsumerHealth, ConsumerOptions};
use agriportal_platform::storage::Migrations;
use agriportal_platform::{Descriptor, GrpcApi, HttpApi, Running, Service, ServiceContext};
use agriportal_proto::gateway::v1::dashboard_server::DashboardServer;
use agriportal_proto::indicators::v1 as ipb;
use agriportal_proto::marketplace::v1 as mpb;

pub use config::{GatewayConfig, GRPC_SERVICE};
pub use service::Dashboard;
pub use store::{GatewayStore, SqlStore};

/// The gateway service, as registered in the binary.
pub struct Gateway;

#[async_trait::async_trait]
impl Service for Gateway {
    type Config = GatewayConfig;

    const DESCRIPTOR: Descriptor = Descriptor {
        name: config::SCHEMA,
        about: "Gateway: national dashboards (gRPC and HTTP)",
        grpc: &[GrpcApi {
            name: GRPC_SERVICE,
            public: true,
            // Aggregate figures, meant for anyone's dashboards.
            access: Access::Public,
        }],
        http: Some(HttpApi { prefix: "/api" }),
        publishes: &[],
        consumes: &[
            mpb::SALES_RECORDED.subject(),
            mpb::HOUSEHOLDS_RECORDED.subject(),
            ipb::REPORT_STARTED.subject(),
            ipb::REPORT_SUBMITTED.subject(),
            ipb::REPORT_APPROVED.subject(),
            ipb::REPORT_RETURNED.subject(),
            ipb::REPORT_REOPENED.subject(),
            ipb::TARGET_SET.subject(),
            ipb::CATALOGUE_CHANGED.subject(),
        ],
        calls: &["marketplace"],
    };

    fn migrations() -> Migrations {
        store::migrations()
    }

    async fn start(ctx: ServiceContext<GatewayConfig>) -> anyhow::Result<Running> {
        let store = Arc::new(SqlStore::new(ctx.db.clone()));
        // The public reads on a pool of their own (see `--gateway-read-pool`). Both steps are
        // retried through an outage, like the opening of the service's own store: a
        // connection reset here used to end the process.
        let reads = ctx.open_pool(ctx.config.gateway_read_pool).await?;
        let reads = Arc::new(SqlStore::new(reads));
        // The summaries in memory, read before the service is ready and kept fresh from
        // then on (at once after this process's commits, within a poll of another's).
        let snapshots = snapshot::Snapshots::new(reads.clone());
        // The figures only: the indicators' views are built by the rebuild task once the
        // service runs (their queries are read from the store until then).
        ctx.while_starting("reading the figures for the first snapshot", || async {
            Ok(snapshots.refresh_figures().await?)
        })
        .await?;
        let health = ctx.consume(
            ConsumerOptions::new(config::CONSUMER),
            consumer::Rollup::new(store.clone()).notifying(snapshots.clone()),
        )?;
        // A durable of its own: the read model of the indicators advances (and parks) apart
        // from the marketplace rollups.
        ctx.consume(
            ConsumerOptions::new(config::INDICATORS_CONSUMER),
            readmodel::IndicatorsReadModel::new(store.clone()).notifying(snapshots.clone()),
        )?;
        let reconciliation = reconciliation(&ctx, store.clone(), health, snapshots.clone())?;
        let dashboard = Dashboard::with_snapshots(reads, snapshots.clone());
        let poll = Duration::from_millis(ctx.config.gateway_snapshot_poll_ms);
        let min_interval = Duration::from_millis(ctx.config.gateway_snapshot_min_interval_ms);
        let shutdown = ctx.shared.shutdown.clone();
        let mut running = Running::new()
            .grpc(DashboardServer::new(grpc::GrpcAdapter::new(
                dashboard.clone(),
            )))
            .http(http::router(dashboard))
            .task("snapshot", async move {
                snapshots.run(poll, min_interval, shutdown).await;
                Ok(())
            });
        if let Some(reconciliation) = reconciliation {
            running = running.task("reconciliation", reconciliation);
        }
        Ok(running)
    }
}

/// The periodic reconciliation against the marketplace service every
/// `--reconcile-interval-seconds`, at `--marketplace-url` (in `up`, this process's own
/// listener); without an address, or with an interval of 0, it stays off and says so.
fn reconciliation(
    ctx: &ServiceContext<GatewayConfig>,
    store: Arc<SqlStore>,
    health: Arc<ConsumerHealth>,
    snapshots: Arc<snapshot::Snapshots>,
) -> anyhow::Result<Option<impl std::future::Future<Output = anyhow::Result<()>>>> {
    let interval = ctx.config.reconcile_interval_seconds;
    let url = ctx.peer_url("marketplace", ctx.config.marketplace_url.as_deref())?;
    let url = match url {
        Some(url) if interval > 0 => url,
        _ => {
            tracing::warn!(
                interval_seconds = interval,
                has_marketplace_url = ctx.config.marketplace_url.is_some(),
                "reconciliation of the rollups is off: set AGRIPORTAL_MARKETPLACE_URL and a \
                 non-zero AGRIPORTAL_RECONCILE_INTERVAL_SECONDS"
            );
            return Ok(None);
        }
    };
    let options = ClientOptions {
        deadline: config::RECONCILE_CALL_DEADLINE,
        ..ClientOptions::default()
    };
    let source = reconcile::GrpcCellSource::new(ctx.peer("marketplace", &url, options)?);
    let reconciler =
        reconcile::Reconciler::new(store, Arc::new(source), health).notifying(snapshots);
    let shutdown = ctx.shared.shutdown.clone();
    let interval = Duration::from_secs(interval);
    Ok(Some(async move {
        reconcile::run(reconciler, interval, shutdown).await;
        Ok(())
    }))
}
