//! Indicators (chỉ tiêu): provinces report the plan's key indicators by period (DHIS2-style
//! period ids), the central working group approves or returns their reports, reopens approved
//! ones and sets targets. Only this service holds drafts; every change that others must see
//! (a report started, submitted, approved, returned or reopened, a target set, the catalogue
//! changed) is published through the outbox, in the same transaction as the change.
//!
//! Files, as in every service crate: `config` (settings, names, limits), `error`, `domain`
//! (rules, as pure functions), `store` (SQL for both backends), `service` (logic and rights),
//! `grpc` (the tonic adapter), `csv` (import and export), and this file.

pub mod config;
pub mod csv;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod service;
pub mod store;

use std::sync::Arc;

use agriportal_platform::access::Access;
use agriportal_platform::storage::Migrations;
use agriportal_platform::{Descriptor, GrpcApi, Running, Service, ServiceContext};
use agriportal_proto::indicators::v1 as pb;

pub use config::{IndicatorsConfig, GRPC_SERVICE};
pub use service::Reports;
pub use store::Store;

/// The indicators service, as registered in the binary.
pub struct Indicators;

#[async_trait::async_trait]
impl Service for Indicators {
    type Config = IndicatorsConfig;

    const DESCRIPTOR: Descriptor = Descriptor {
        name: config::NAME,
        about:
            "Indicators: provinces' reports of the plan's key indicators, review and targets (gRPC)",
        grpc: &[GrpcApi {
            name: GRPC_SERVICE,
            public: true,
            // Every rpc needs a signed-in caller; which role may do what is the service's.
            access: Access::SignedIn,
        }],
        http: None,
        publishes: &[
            pb::REPORT_STARTED.subject(),
            pb::REPORT_SUBMITTED.subject(),
            pb::REPORT_APPROVED.subject(),
            pb::REPORT_RETURNED.subject(),
            pb::REPORT_REOPENED.subject(),
            pb::TARGET_SET.subject(),
            pb::CATALOGUE_CHANGED.subject(),
        ],
        consumes: &[],
        calls: &[],
    };

    fn migrations() -> Migrations {
        store::migrations()
    }

    async fn start(ctx: ServiceContext<IndicatorsConfig>) -> anyhow::Result<Running> {
        let store = Arc::new(Store::new(ctx.db.clone(), ctx.outbox()?));
        let catalogue = domain::parse_catalogue(domain::CATALOGUE_CSV)
            .map_err(|e| anyhow::anyhow!("the catalogue seed is broken: {e}"))?;
        let seeded = store.seed_catalogue(&catalogue).await?;
        if seeded > 0 {
            tracing::info!(indicators = seeded, "indicator catalogue seeded");
        }
        let reports = Arc::new(Reports::new(store, ctx.config.deadlines()));
        Ok(Running::new().grpc(grpc::server(reports, ctx.shared.auth.clone())))
    }
}
