//! Marketplace integration (tích hợp sàn TMĐT): the partner marketplaces Postmart and Vỏ Sò
//! push household onboarding and sales statistics over gRPC; valid records are kept, each
//! batch's changes are emitted as one event through the outbox.
//!
//! Files, as in every service crate: `config` (settings, names, limits), `error` (the
//! service's errors), `domain` (rules, as pure functions), `store` (storage trait and its SQL
//! implementation), `service` (the logic the adapters call), `grpc` (tonic adapters), and this
//! file (the service's declaration for the kit).

pub mod codec;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod service;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use agriportal_platform::access::Access;
use agriportal_platform::limits::RateLimiter;
use agriportal_platform::storage::Migrations;
use agriportal_platform::{Descriptor, GrpcApi, Running, Service, ServiceContext};
use agriportal_proto::marketplace::v1 as pb;

pub use config::{Limits, MarketplaceConfig, AUDIT_GRPC_SERVICE, GRPC_SERVICE};
pub use service::Ingest;
pub use store::{MarketplaceStore, SqlStore};

/// The marketplace service, as registered in the binary.
pub struct Marketplace;

#[async_trait::async_trait]
impl Service for Marketplace {
    type Config = MarketplaceConfig;

    const DESCRIPTOR: Descriptor = Descriptor {
        name: config::SCHEMA,
        about: "Marketplace integration: partners push onboarding and sales statistics (gRPC)",
        grpc: &[
            GrpcApi {
                name: GRPC_SERVICE,
                public: true,
                access: Access::Partner,
            },
            GrpcApi {
                name: AUDIT_GRPC_SERVICE,
                public: false,
                access: Access::Internal,
            },
        ],
        http: None,
        publishes: &[
            pb::SALES_RECORDED.subject(),
            pb::HOUSEHOLDS_RECORDED.subject(),
        ],
        consumes: &[],
        calls: &[],
    };

    fn migrations() -> Migrations {
        store::migrations()
    }

    async fn start(ctx: ServiceContext<MarketplaceConfig>) -> anyhow::Result<Running> {
        let store = Arc::new(SqlStore::new(ctx.db.clone(), ctx.outbox()?));
        let rates = RateLimiter::new(
            ctx.config.partner_records_per_second,
            ctx.config.partner_burst_records,
        )
        .map(Arc::new);
        let ingest = Arc::new(Ingest::new(store, Limits::default(), rates));
        let auth = ctx.shared.auth.clone();
        let mut running = Running::new()
            .grpc(grpc::ingest_server(ingest.clone(), auth.clone()))
            .grpc(grpc::audit_server(ingest, auth));
        let days = ctx.config.marketplace_batch_retention_days;
        if days > 0 {
            running = running.task(
                "batch retention",
                agriportal_platform::retention::run(
                    ctx.db.clone(),
                    store::BATCHES,
                    Duration::from_secs(days.saturating_mul(86_400)),
                    ctx.shared.config.prune_interval(),
                    ctx.shared.shutdown.clone(),
                ),
            );
        }
        Ok(running)
    }
}
