//! The one library every agriportal service shares, and the kit a service is built with: a
//! service is declared once ([`service::Service`]) and registered in one line
//! ([`kit::Registry::with`]); the kit opens and migrates its store, relays its outbox, feeds
//! its consumers ([`consumer`]), serves its gRPC and HTTP with health, readiness, metrics and
//! limits, and runs it in `up` or `serve --target` ([`kit`]). Beside it: shared settings,
//! telemetry, the event bus, storage, authentication, gRPC clients of other services
//! ([`client`]), reference data, and the single error type with its one mapping to
//! `tonic::Status` and back.
//!
//! Services depend on this crate and on `agriportal-proto`, never on each other.

pub mod access;
pub mod auth;
pub mod backoff;
pub mod bus;
pub mod client;
pub mod config;
pub mod consumer;
pub mod context;
pub mod csv;
pub mod error;
pub mod grpc;
pub mod http;
pub mod keys;
pub mod kit;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod period;
pub mod reconcile;
pub mod reference;
pub mod retention;
pub mod roles;
pub mod service;
pub mod storage;
pub mod telemetry;
pub mod testing;
pub mod tls;

pub use config::Config;
pub use context::Context;
pub use error::{Error, ErrorCode, Result};
pub use kit::Registry;
pub use service::{Descriptor, GrpcApi, HttpApi, Running, Service, ServiceContext};
