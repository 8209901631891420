//! The settings every service shares: every setting is a flag and an environment variable,
//! read once at startup by clap. A service's own settings are a `clap::Args` struct in its
//! crate (see [`crate::service::Service::Config`]), flattened beside these. Nothing else in
//! the code base reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

/// The settings every service shares. Flags win over environment variables; defaults give the
/// embedded mode (SQLite under `--data-dir`, in-process bus), which needs no configuration.
#[derive(Args, Clone, Debug, Serialize)]
pub struct Config {
    /// Directory for the embedded mode's SQLite files and generated token secret.
    #[arg(
        long,
        env = "AGRIPORTAL_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// PostgreSQL URL (`postgres://user@host/db`). When set, every store uses PostgreSQL,
    /// one schema per service; otherwise SQLite files under `--data-dir`.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    #[serde(skip)]
    pub database_url: Option<String>,

    /// Maximum PostgreSQL connections per service pool.
    #[arg(
        long,
        env = "AGRIPORTAL_DB_MAX_CONNECTIONS",
        default_value_t = 10,
        global = true
    )]
    pub db_max_connections: u32,

    /// NATS URL (`nats://host:4222`). When set, events go through NATS JetStream; otherwise
    /// through the in-process bus, which only works inside one process (`up`).
    #[arg(long, env = "NATS_URL", global = true)]
    pub nats_url: Option<String>,

    /// Prefix of every event subject (`<prefix>.<service>.<event>`); the JetStream stream is
    /// named after it. Distinct prefixes keep deployments (and tests) apart on one NATS server.
    #[arg(
        long,
        env = "AGRIPORTAL_BUS_PREFIX",
        default_value = "agriportal",
        global = true
    )]
    pub bus_prefix: String,

    /// JetStream replicas of the event stream (3 on a 3-node cluster).
    #[arg(
        long,
        env = "AGRIPORTAL_BUS_REPLICAS",
        default_value_t = 1,
        global = true
    )]
    pub bus_replicas: usize,

    /// Address of the gRPC server (all gRPC services share it).
    #[arg(
        long = "grpc",
        env = "AGRIPORTAL_GRPC_ADDR",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP server (gateway JSON API and dashboard page; health and metrics).
    #[arg(
        long = "http",
        env = "AGRIPORTAL_HTTP_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub http_addr: SocketAddr,

    /// Secret that signs bearer tokens (at least 32 bytes). In embedded mode it is generated
    /// once into `<data-dir>/token_secret` when not set.
    #[arg(
        long,
        env = "AGRIPORTAL_TOKEN_SECRET",
        global = true,
        hide_env_values = true
    )]
    #[serde(skip)]
    pub token_secret: Option<String>,

    /// Seconds to let in-flight requests finish on shutdown before telemetry is flushed.
    #[arg(
        long,
        env = "AGRIPORTAL_DRAIN_SECONDS",
        default_value_t = 10,
        global = true
    )]
    pub drain_seconds: u64,

    /// Log filter, in `tracing` env-filter syntax.
    #[arg(long, env = "AGRIPORTAL_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Log format: `text` or `json`.
    #[arg(
        long,
        env = "AGRIPORTAL_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: String,

    /// OTLP/gRPC endpoint for traces (`http://collector:4317`); tracing export is off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,

    /// gRPC requests served at once by this process (health checks excepted); a request over
    /// it is refused at once with RESOURCE_EXHAUSTED and a retry hint instead of being queued,
    /// which bounds memory (each in-flight ingest call may hold up to 16 MiB).
    #[arg(
        long,
        env = "AGRIPORTAL_MAX_CONCURRENT_REQUESTS",
        default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub max_concurrent_requests: u32,

    /// gRPC calls one authenticated caller (a partner, the central working group, a province)
    /// may have in flight in this process; more are refused at once with RESOURCE_EXHAUSTED and
    /// a retry hint, from the headers, before their body is read or a slot of
    /// `--max-concurrent-requests` is taken, so one partner's flood never takes the slots
    /// another partner's calls need.
    #[arg(
        long,
        env = "AGRIPORTAL_PARTNER_MAX_CONCURRENT_REQUESTS",
        default_value_t = DEFAULT_PARTNER_MAX_CONCURRENT_REQUESTS,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub partner_max_concurrent_requests: u32,
}

/// Default of `--partner-max-concurrent-requests`: a quarter of the default process limit (64),
/// so both partners at their cap still leave half of it free.
pub const DEFAULT_PARTNER_MAX_CONCURRENT_REQUESTS: u32 = 16;

/// Default of `--max-concurrent-requests`.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: u32 = 64;

impl Config {
    /// The drain period as a duration.
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }

    /// True when both PostgreSQL and NATS are configured (the mode Kubernetes runs).
    pub fn is_distributed(&self) -> bool {
        self.database_url.is_some() && self.nats_url.is_some()
    }

    /// A configuration with every default and the given data directory, for tests and tools.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            database_url: None,
            db_max_connections: 10,
            nats_url: None,
            bus_prefix: "agriportal".into(),
            bus_replicas: 1,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token_secret: None,
            drain_seconds: 10,
            log: "info".into(),
            log_format: "text".into(),
            otlp_endpoint: None,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            partner_max_concurrent_requests: DEFAULT_PARTNER_MAX_CONCURRENT_REQUESTS,
        }
    }
}
