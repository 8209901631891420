//! Marketplace integration (tích hợp sàn TMĐT): the partner marketplaces Postmart and Vỏ Sò
//! push household onboarding and sales statistics over gRPC; valid records are kept, each
//! batch's changes are emitted as one event through the outbox.
//!
//! Files, as in every service crate: `config` (names and limits), `error` (the service's
//! errors), `domain` (rules), `store` (storage trait and SQL implementation), `grpc` (tonic
//! adapter), and this file (assembly and the `run` entry point).

pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod store;

use std::sync::Arc;

use agriportal_platform::http::{admin_router, Readiness};
use agriportal_platform::limits::{ConcurrencyLimitLayer, RateLimiter};
use agriportal_platform::outbox::spawn_relay;
use agriportal_platform::storage::Database;
use agriportal_platform::{grpc as platform_grpc, http as platform_http, Context};
use agriportal_proto::marketplace::v1::marketplace_audit_server::MarketplaceAuditServer;
use agriportal_proto::marketplace::v1::marketplace_ingest_server::MarketplaceIngestServer;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::service::interceptor::InterceptedService;

pub use config::{Limits, AUDIT_GRPC_SERVICE, GRPC_SERVICE};
pub use store::{MarketplaceStore, SqlStore};

/// A started marketplace service: its store is open and its outbox relay runs.
pub struct Marketplace {
    store: Arc<SqlStore>,
    ctx: Context,
    /// One set of partner buckets per process, shared by every adapter built from this
    /// service, so mounting the service twice cannot double a partner's quota.
    rates: grpc::PartnerRates,
}

impl Marketplace {
    /// Opens the store (migrating it) and starts the outbox relay.
    pub async fn start(ctx: &Context) -> anyhow::Result<Marketplace> {
        let db = ctx.database(config::SCHEMA).await?;
        let wake = Arc::new(Notify::new());
        let store = Arc::new(SqlStore::open(db.clone(), wake.clone()).await?);
        spawn_relay(db, ctx.bus.clone(), wake, ctx.shutdown.clone(), &ctx.tasks);
        let rates = RateLimiter::new(
            ctx.config.partner_records_per_second,
            ctx.config.partner_burst_records,
        )
        .map(Arc::new);
        Ok(Marketplace {
            store,
            ctx: ctx.clone(),
            rates,
        })
    }

    /// The gRPC service, to mount on a server: a partner over its quota is refused before its
    /// call's body is read ([`grpc::EarlyThrottle`]), every other call goes to the adapter.
    pub fn grpc_service(
        &self,
    ) -> InterceptedService<MarketplaceIngestServer<grpc::GrpcAdapter>, grpc::EarlyThrottle> {
        let adapter =
            grpc::GrpcAdapter::new(self.store.clone(), self.ctx.auth.clone(), Limits::default())
                .with_rates(self.rates.clone());
        let server = MarketplaceIngestServer::new(adapter)
            .max_decoding_message_size(platform_grpc::MAX_DECODED_BYTES);
        InterceptedService::new(
            server,
            grpc::EarlyThrottle::new(self.ctx.auth.clone(), self.rates.clone()),
        )
    }

    /// The audit service (rollups recomputed from the records, for the gateway's
    /// reconciliation), to mount beside [`Marketplace::grpc_service`].
    pub fn audit_service(&self) -> MarketplaceAuditServer<grpc::AuditAdapter> {
        MarketplaceAuditServer::new(grpc::AuditAdapter::new(
            self.store.clone(),
            self.ctx.auth.clone(),
        ))
    }

    /// The store (tests read it).
    pub fn store(&self) -> Arc<SqlStore> {
        self.store.clone()
    }

    /// The database, for readiness checks.
    pub fn database(&self) -> Database {
        self.store.database().clone()
    }

    /// Serves this service alone: gRPC on `grpc`, health and metrics over HTTP on `http`,
    /// until the context's shutdown fires.
    pub async fn run(self, grpc: TcpListener, http: TcpListener) -> anyhow::Result<()> {
        let ctx = self.ctx.clone();
        let routes =
            tonic::service::Routes::new(self.grpc_service()).add_service(self.audit_service());
        let readiness = Readiness::new(vec![self.database()]);
        let admin = admin_router(readiness.clone());
        let drain = ctx.config.drain();
        tokio::try_join!(
            platform_grpc::serve_with(
                grpc,
                routes,
                &[GRPC_SERVICE, AUDIT_GRPC_SERVICE],
                readiness,
                ctx.shutdown.clone(),
                drain,
                ConcurrencyLimitLayer::from_config(&ctx.config),
            ),
            platform_http::serve(http, admin, ctx.shutdown.clone(), drain),
        )?;
        Ok(())
    }
}
