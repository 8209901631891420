//! Gateway (cổng số liệu): consumes the marketplace events into rollups and serves national
//! figures to dashboards over gRPC (`agriportal.gateway.v1.Dashboard`) and HTTP/JSON
//! (`/api/v1/...`), with a plain dashboard page at `/`.
//!
//! Files, as in every service crate: `config` (names and limits), `error` (the service's
//! errors), `domain` (rules), `store` (storage trait and SQL implementation), `grpc` (tonic
//! adapter), and this file (assembly and the `run` entry point); the gateway adds `consumer`
//! (event intake), `reconcile` (comparison with the marketplace's records, and repairs),
//! `service` (queries shared by both adapters), `http` and `page`.

pub mod config;
pub mod consumer;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod http;
pub mod page;
pub mod reconcile;
pub mod service;
pub mod store;

use std::sync::Arc;

use agriportal_platform::http::{admin_router, Readiness};
use agriportal_platform::limits::ConcurrencyLimitLayer;
use agriportal_platform::storage::Database;
use agriportal_platform::{grpc as platform_grpc, http as platform_http, Context};
use agriportal_proto::gateway::v1::dashboard_server::DashboardServer;
use tokio::net::TcpListener;

pub use config::GRPC_SERVICE;
pub use service::Dashboard;
pub use store::{GatewayStore, SqlStore};

/// A started gateway: its store is open and its consumer runs.
pub struct Gateway {
    store: Arc<SqlStore>,
    health: Arc<consumer::ConsumerHealth>,
    ctx: Context,
}

impl Gateway {
    /// Opens the store (migrating it) and starts consuming marketplace events.
    pub async fn start(ctx: &Context) -> anyhow::Result<Gateway> {
        let db = ctx.database(config::SCHEMA).await?;
        let store = Arc::new(SqlStore::open(db).await?);
        let health = Arc::new(consumer::ConsumerHealth::default());
        consumer::spawn(
            store.clone(),
            ctx.bus.clone(),
            health.clone(),
            ctx.shutdown.clone(),
            &ctx.tasks,
        );
        Ok(Gateway {
            store,
            health,
            ctx: ctx.clone(),
        })
    }

    /// Starts the periodic reconciliation against the marketplace service at `marketplace_url`
    /// (its gRPC address, `http://host:port`), every `--reconcile-interval-seconds`; `None`,
    /// or an interval of 0, leaves it off and says so in the log.
    pub fn start_reconciliation(&self, marketplace_url: Option<&str>) -> anyhow::Result<()> {
        let interval = self.ctx.config.reconcile_interval_seconds;
        let url = match marketplace_url {
            Some(url) if interval > 0 => url,
            _ => {
                tracing::warn!(
                    interval_seconds = interval,
                    has_marketplace_url = marketplace_url.is_some(),
                    "reconciliation of the rollups is off: set AGRIPORTAL_MARKETPLACE_URL and a \
                     non-zero AGRIPORTAL_RECONCILE_INTERVAL_SECONDS"
                );
                return Ok(());
            }
        };
        let source = reconcile::GrpcCellSource::new(url, self.ctx.auth.clone())?;
        self.reconcile_with(Arc::new(source), std::time::Duration::from_secs(interval));
        Ok(())
    }

    /// Starts the periodic reconciliation against any cell source (tests pass their own).
    pub fn reconcile_with(
        &self,
        source: Arc<dyn reconcile::CellSource>,
        interval: std::time::Duration,
    ) {
        let reconciler =
            reconcile::Reconciler::new(self.store.clone(), source, self.health.clone());
        reconcile::spawn(
            reconciler,
            interval,
            self.ctx.shutdown.clone(),
            &self.ctx.tasks,
        );
    }

    /// The shared queries.
    pub fn dashboard(&self) -> Dashboard {
        Dashboard::new(self.store.clone())
    }

    /// The gRPC service, to mount on a server.
    pub fn grpc_service(&self) -> DashboardServer<grpc::GrpcAdapter> {
        DashboardServer::new(grpc::GrpcAdapter::new(self.dashboard()))
    }

    /// The HTTP routes (API and page), without the admin routes.
    pub fn http_router(&self) -> axum::Router {
        http::router(self.dashboard())
    }

    /// The database, for readiness checks.
    pub fn database(&self) -> Database {
        self.store.database().clone()
    }

    /// Serves this service alone: gRPC on `grpc`, API, page, health and metrics on `http`,
    /// until the context's shutdown fires.
    pub async fn run(self, grpc: TcpListener, http: TcpListener) -> anyhow::Result<()> {
        let ctx = self.ctx.clone();
        let routes = tonic::service::Routes::new(self.grpc_service());
        let readiness = Readiness::new(vec![self.database()]);
        let router = self.http_router().merge(admin_router(readiness.clone()));
        let drain = ctx.config.drain();
        tokio::try_join!(
            platform_grpc::serve_with(
                grpc,
                routes,
                &[GRPC_SERVICE],
                readiness,
                ctx.shutdown.clone(),
                drain,
                ConcurrencyLimitLayer::from_config(&ctx.config),
            ),
            platform_http::serve(http, router, ctx.shutdown.clone(), drain),
        )?;
        Ok(())
    }
}
