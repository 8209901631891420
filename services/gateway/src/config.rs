//! The gateway's settings and names. Process-wide settings live in
//! `agriportal_platform::Config`; these are the service's own identifiers and limits.

use std::time::Duration;

/// Schema (PostgreSQL) or file stem (SQLite) of this service's store.
pub const SCHEMA: &str = "gateway";

/// Fully qualified gRPC service name, as reported by gRPC health.
pub const GRPC_SERVICE: &str = "agriportal.gateway.v1.Dashboard";

/// Durable consumer name of the rollup; every gateway replica shares it.
pub const CONSUMER: &str = "gateway-rollup";

/// Subjects the rollup consumes.
pub const SUBJECTS: &str = "marketplace.>";

/// A delivered event not acked within this time is delivered again.
pub const ACK_WAIT: Duration = Duration::from_secs(30);

/// Events applied per transaction.
pub const APPLY_BATCH: usize = 256;

/// Longest time series, in days between `from` and `to`.
pub const MAX_SERIES_DAYS: i64 = 3_660;

/// Reconciliation trusts a difference only if the consumer found nothing left to apply within
/// this time (it fetches with a 1 s wait, so an idle consumer renews this every second).
pub const RECONCILE_DRAINED_WITHIN: Duration = Duration::from_secs(5);

/// Largest answer of the marketplace's audit rpc: one province's cells of one partner
/// (about 60 bytes each; years of days × categories stay far below this).
pub const RECONCILE_MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
