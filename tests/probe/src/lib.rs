//! The kit's probe: a small service that exists only in the tests. It migrates, serves gRPC
//! (with health) and an HTTP route, publishes an event through the outbox and consumes it
//! through the kit's consumer, parks a poison event, and shows up in `agriportal targets`,
//! with nothing outside this crate but its proto and its registry line in the tests.
//!
//! Files, as in every service crate: `config`, `store`, `service`, `grpc`, `http`,
//! `consumer`, and this file (the declaration for the kit).

pub mod config;
pub mod consumer;
pub mod grpc;
pub mod http;
pub mod service;
pub mod store;

use std::sync::Arc;

use agriportal_platform::consumer::ConsumerOptions;
use agriportal_platform::storage::Migrations;
use agriportal_platform::{Descriptor, GrpcApi, HttpApi, Running, Service, ServiceContext};
use agriportal_proto::probe::v1 as pb;

pub use config::ProbeConfig;

/// The probe, as a test registers it.
pub struct Probe;

#[async_trait::async_trait]
impl Service for Probe {
    type Config = ProbeConfig;

    const DESCRIPTOR: Descriptor = Descriptor {
        name: config::NAME,
        about: "The kit's probe (tests only): notes in, tallies out",
        grpc: &[GrpcApi {
            name: "agriportal.probe.v1.Probe",
            public: false,
            access: agriportal_platform::access::Access::Public,
        }],
        http: Some(HttpApi { prefix: "/probe" }),
        publishes: &[pb::NOTED.subject()],
        consumes: &[pb::NOTED.subject()],
        calls: &[],
    };

    fn migrations() -> Migrations {
        store::migrations()
    }

    async fn start(ctx: ServiceContext<ProbeConfig>) -> anyhow::Result<Running> {
        let store = Arc::new(store::Store::new(ctx.db.clone(), ctx.outbox()?));
        let mut options = ConsumerOptions::new(config::CONSUMER);
        // Quick to park in tests: a poison note fails twice, then is parked.
        options.max_attempts = 2;
        ctx.consume(options, consumer::Tally::new(store.clone()))?;
        let notes = Arc::new(service::Notes::new(store, ctx.config.probe_max_note_chars));
        Ok(Running::new()
            .grpc(grpc::server(notes.clone()))
            .http(http::router(notes)))
    }
}
