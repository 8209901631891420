//! The one library every agriportal service shares: typed configuration, telemetry, gRPC and
//! HTTP plumbing, the event bus, storage helpers (outbox and inbox), authentication, reference
//! data, and the single error type with its one mapping to `tonic::Status`.
//!
//! Services depend on this crate and on `agriportal-proto`, never on each other.

pub mod auth;
pub mod bus;
pub mod config;
pub mod context;
pub mod error;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod outbox;
pub mod reconcile;
pub mod reference;
pub mod storage;
pub mod telemetry;
pub mod testing;

pub use config::Config;
pub use context::Context;
pub use error::{Error, ErrorCode, Result};
