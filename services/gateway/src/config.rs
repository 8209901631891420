//! The gateway's settings (flags and environment variables of its own, flattened into the
//! command line beside the shared `agriportal_platform::Config`), names and limits.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

/// Schema (PostgreSQL) or file stem (SQLite) of this service's store, and its target name.
pub const SCHEMA: &str = "gateway";

/// Fully qualified gRPC service name, as reported by gRPC health.
pub const GRPC_SERVICE: &str = "agriportal.gateway.v1.Dashboard";

/// Durable consumer name of the rollup; every gateway replica shares it.
pub const CONSUMER: &str = "gateway-rollup";

/// Durable consumer name of the indicators read model (the indicators service's events).
pub const INDICATORS_CONSUMER: &str = "gateway-indicators";

/// The gateway's own settings.
#[derive(Args, Clone, Debug, Serialize)]
pub struct GatewayConfig {
    /// The marketplace service's gRPC address (`http://host:port`), which the gateway asks for
    /// figures recomputed from the records when it reconciles its rollups. `up` uses its own
    /// gRPC listener; `serve --target gateway` without it does not reconcile (and says so).
    #[arg(long, env = "AGRIPORTAL_MARKETPLACE_URL")]
    pub marketplace_url: Option<String>,

    /// Seconds between two reconciliation rounds of the gateway; `0` turns reconciliation
    /// off. A gap is repaired only when two consecutive rounds see it unchanged, so keep this
    /// well above the bus's redelivery time (30 s).
    #[arg(
        long,
        env = "AGRIPORTAL_RECONCILE_INTERVAL_SECONDS",
        default_value_t = DEFAULT_RECONCILE_INTERVAL_SECONDS
    )]
    pub reconcile_interval_seconds: u64,

    /// Connections of the pool that serves the public reads (the Dashboard over gRPC and the
    /// JSON API), apart from the pool of the event consumers and readiness, so that a flood of
    /// reads cannot stall the rollups or fail `/readyz`. PostgreSQL's connection budget counts
    /// it once more per gateway pod.
    #[arg(
        long,
        env = "AGRIPORTAL_GATEWAY_READ_POOL",
        default_value_t = DEFAULT_READ_POOL,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub gateway_read_pool: u32,

    /// Milliseconds between two reads of the figures' version, by which a gateway sees the
    /// events and repairs another replica applied and rebuilds its in-memory snapshot (its own
    /// commits rebuild it at once). Two replicas' figures differ by at most this plus one
    /// rebuild.
    #[arg(
        long,
        env = "AGRIPORTAL_GATEWAY_SNAPSHOT_POLL_MS",
        default_value_t = DEFAULT_SNAPSHOT_POLL_MS,
        value_parser = clap::value_parser!(u64).range(10..=60_000)
    )]
    pub gateway_snapshot_poll_ms: u64,

    /// Least milliseconds between two rebuilds of the in-memory snapshot (each phase, the
    /// figures and the indicators, apart): under a continuous stream of commits it is rebuilt
    /// at most once per interval (and a rebuild waits out the last one's duration, so a slow
    /// one is busy at most half the time), and the first change after a quiet interval at
    /// once. `0` rebuilds after every commit.
    #[arg(
        long,
        env = "AGRIPORTAL_GATEWAY_SNAPSHOT_MIN_INTERVAL_MS",
        default_value_t = DEFAULT_SNAPSHOT_MIN_INTERVAL_MS,
        value_parser = clap::value_parser!(u64).range(0..=10_000)
    )]
    pub gateway_snapshot_min_interval_ms: u64,
}

/// Default of `--gateway-snapshot-min-interval-ms`: a tenth of a second, so a stream of
/// commits costs at most ten rebuilds a second and a dashboard sees a change within that.
pub const DEFAULT_SNAPSHOT_MIN_INTERVAL_MS: u64 = 100;

/// Default of `--gateway-snapshot-poll-ms`: a quarter of a second, one small indexed read per
/// replica.
pub const DEFAULT_SNAPSHOT_POLL_MS: u64 = 250;

/// Default of `--gateway-read-pool`.
pub const DEFAULT_READ_POOL: u32 = 4;

/// Default of `--reconcile-interval-seconds`: five minutes, so a lost event is repaired
/// within about ten minutes, at the cost of one grouped scan of the records per round.
pub const DEFAULT_RECONCILE_INTERVAL_SECONDS: u64 = 300;

/// Longest time series, in days between `from` and `to`.
pub const MAX_SERIES_DAYS: i64 = 3_660;

/// Reconciliation trusts a difference only if the consumer found nothing left to apply within
/// this time (it fetches with a 1 s wait, so an idle consumer renews this every second).
pub const RECONCILE_DRAINED_WITHIN: Duration = Duration::from_secs(5);

/// Largest answer of the marketplace's audit rpc: one province's cells of one partner
/// (about 60 bytes each; years of days × categories stay far below this).
pub const RECONCILE_MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Deadline of one call of the marketplace's audit rpc (a grouped scan of a partner's records).
pub const RECONCILE_CALL_DEADLINE: Duration = Duration::from_secs(120);
