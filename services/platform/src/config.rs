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
    /// Directory for the embedded mode's SQLite files and generated token key.
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

    /// With `agriportal migrate` on PostgreSQL (the owner role): after the migrations, give
    /// each migrated service's runtime role (`--db-role-prefix` + its name) read and write use
    /// of its own schema's tables and sequences, present and future, read use of the
    /// platform's, and nothing else (no `CREATE`, no other schema); the role is created
    /// (`NOLOGIN`) if missing. The services then run with `DATABASE_URL` naming that role.
    #[arg(
        long,
        env = "AGRIPORTAL_DB_RUNTIME_ROLES",
        default_value_t = false,
        global = true
    )]
    pub db_runtime_roles: bool,

    /// Prefix of the services' runtime roles (`agriportal_gateway`, ...).
    #[arg(
        long,
        env = "AGRIPORTAL_DB_ROLE_PREFIX",
        default_value = crate::roles::DEFAULT_ROLE_PREFIX,
        global = true
    )]
    pub db_role_prefix: String,

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

    /// How this process authenticates to NATS and which TLS it uses.
    #[command(flatten)]
    #[serde(rename = "nats")]
    pub nats: NatsSecurity,

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

    /// Bytes the JetStream stream may hold. When full it refuses new messages (never drops
    /// unread ones): the outbox keeps them and the relay retries until old messages age out
    /// (30 days) or the limit is raised; each refusal counts in
    /// `agriportal_outbox_publish_failures_total{reason="stream_full"}`, which the
    /// `AgriportalEventStreamFull` alert (k8s) watches.
    /// Keep it below the NATS volume (k8s sets 16 GiB of its 20 GiB). 0, the default, sets no
    /// limit: JetStream reserves a stream's `max_bytes` from its server's store when the stream
    /// is created, and refuses one larger than what is left, so a default limit would stop the
    /// services on any NATS with a smaller store (and streams of tests add up).
    #[arg(
        long,
        env = "AGRIPORTAL_BUS_MAX_BYTES",
        default_value_t = DEFAULT_BUS_MAX_BYTES,
        global = true
    )]
    pub bus_max_bytes: u64,

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

    // --- Token keys (issue 12). Only paths and public keys here: `agriportal config`
    // prints this struct, and `Debug` reaches logs; no secret is ever a field.
    /// Public keys that bearer tokens may be signed with, `<kid>:<base64>` separated by
    /// commas (`agriportal token keygen` prints one). Several at once let a key be rotated
    /// without logging anyone out. Embedded mode needs none: it uses `<data-dir>/token_key`.
    #[arg(
        long,
        env = "AGRIPORTAL_TOKEN_PUBLIC_KEYS",
        global = true,
        value_delimiter = ','
    )]
    pub token_public_keys: Vec<crate::keys::PublicKey>,

    /// File of the private key that mints tokens (`token mint`, `token keygen`'s output;
    /// owner-only permissions, checked). Never give it to a service that faces the internet.
    #[arg(long, env = "AGRIPORTAL_TOKEN_PRIVATE_KEY_FILE", global = true)]
    pub token_private_key_file: Option<PathBuf>,

    /// File holding this service's own credential(s) for the services it calls, one token per
    /// line (`agriportal token mint --service gateway --audience marketplace`), re-read every
    /// minute so a renewed secret needs no restart. Not needed where the process holds a
    /// private key (embedded `up`): it mints its own.
    #[arg(long, env = "AGRIPORTAL_SERVICE_TOKEN_FILE", global = true)]
    pub service_token_file: Option<PathBuf>,
    // --- end of token keys.
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
    /// which bounds memory (each in-flight ingest call may hold up to one 4 MiB batch).
    #[arg(
        long,
        env = "AGRIPORTAL_MAX_CONCURRENT_REQUESTS",
        default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub max_concurrent_requests: u32,

    /// Seconds a gRPC call may take, body included, before it is ended with CANCELLED: a
    /// client that opens a call and never sends its body gives its slot back after this.
    #[arg(
        long,
        env = "AGRIPORTAL_GRPC_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub grpc_request_timeout_seconds: u64,

    /// Seconds between HTTP/2 keepalive pings on an idle gRPC connection; a peer that does not
    /// answer one within `--grpc-keepalive-timeout-seconds` is dropped (a vanished client, or
    /// one that holds connections open without reading).
    #[arg(
        long,
        env = "AGRIPORTAL_GRPC_KEEPALIVE_INTERVAL_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub grpc_keepalive_interval_seconds: u64,

    /// Seconds a keepalive ping may wait for its answer before the connection is closed.
    #[arg(
        long,
        env = "AGRIPORTAL_GRPC_KEEPALIVE_TIMEOUT_SECONDS",
        default_value_t = 20,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub grpc_keepalive_timeout_seconds: u64,

    /// Concurrent streams (calls) one gRPC connection may open (HTTP/2
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`), so one connection cannot take every request slot.
    #[arg(
        long,
        env = "AGRIPORTAL_GRPC_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub grpc_max_streams_per_connection: u32,

    /// Seconds after which a gRPC connection is asked to close (GOAWAY) and reconnect, so
    /// load spreads again over new replicas and no connection lives forever; its calls then
    /// get `--grpc-request-timeout-seconds` to finish.
    #[arg(
        long,
        env = "AGRIPORTAL_GRPC_MAX_CONNECTION_AGE_SECONDS",
        default_value_t = 1800,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub grpc_max_connection_age_seconds: u64,

    /// Address of the admin HTTP server: `/healthz`, `/readyz` and `/metrics`, never on the
    /// public port. One per process (`up` serves every service's on it).
    #[arg(
        long = "admin-http",
        env = "AGRIPORTAL_ADMIN_HTTP",
        default_value = "127.0.0.1:9090",
        global = true
    )]
    pub admin_http_addr: SocketAddr,

    /// Seconds an HTTP client may take to send a request's headers before its connection is
    /// closed (slow clients that trickle headers to hold connections).
    #[arg(
        long,
        env = "AGRIPORTAL_HTTP_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub http_header_read_timeout_seconds: u64,

    /// Seconds a public HTTP request may take, body and handler included, before it is answered
    /// 503 with a retry hint.
    #[arg(
        long,
        env = "AGRIPORTAL_HTTP_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub http_request_timeout_seconds: u64,

    /// Largest public HTTP request body read, in bytes (413 above it).
    #[arg(
        long,
        env = "AGRIPORTAL_HTTP_MAX_BODY_BYTES",
        default_value_t = 2 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub http_max_body_bytes: u64,

    /// Public HTTP requests served at once by this process; one over it is answered 503 with
    /// `Retry-After` at once, never queued.
    #[arg(
        long,
        env = "AGRIPORTAL_HTTP_MAX_CONCURRENT_REQUESTS",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub http_max_concurrent_requests: u32,

    /// Public HTTP requests per second one client address may make (a bucket refilled at this
    /// rate, holding `--http-rate-burst`); over it, 429 with `Retry-After`. 0 turns it off.
    #[arg(
        long,
        env = "AGRIPORTAL_HTTP_RATE_PER_SECOND",
        default_value_t = 50,
        global = true
    )]
    pub http_rate_per_second: u32,

    /// Requests a client may make at once above its rate (the bucket's size).
    #[arg(
        long,
        env = "AGRIPORTAL_HTTP_RATE_BURST",
        default_value_t = 200,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub http_rate_burst: u32,

    /// Client addresses the rate limiter remembers at most; past it, new addresses share one
    /// bucket until idle ones are forgotten (so a spray of addresses cannot grow memory).
    #[arg(
        long,
        env = "AGRIPORTAL_HTTP_RATE_MAX_CLIENTS",
        default_value_t = 100_000,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub http_rate_max_clients: u64,

    /// Header naming the client's address when a proxy is in front (`X-Forwarded-For` behind
    /// the ingress): its last entry, the one the proxy itself added, keys the rate limit.
    /// Unset, the connection's peer address does; set it only when every request comes
    /// through the proxy, since a client reaching the port directly could write the header.
    #[arg(long, env = "AGRIPORTAL_HTTP_CLIENT_ADDRESS_HEADER", global = true)]
    pub http_client_address_header: Option<String>,

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

    /// Days an applied event's id stays in a consuming service's inbox, which drops a second
    /// delivery of it. Must exceed the stream's maximum message age (30 days), the longest the
    /// bus can deliver a message again; the default adds a week of margin. `0` keeps ids
    /// forever.
    #[arg(
        long,
        env = "AGRIPORTAL_INBOX_RETENTION_DAYS",
        default_value_t = DEFAULT_INBOX_RETENTION_DAYS,
        global = true
    )]
    pub inbox_retention_days: u64,

    /// Seconds between two rounds of each pruning task (inbox ids, raw batch requests).
    #[arg(
        long,
        env = "AGRIPORTAL_PRUNE_INTERVAL_SECONDS",
        default_value_t = 3600,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub prune_interval_seconds: u64,

    // --- TLS of the public listeners and of the clients of other services -----------------
    /// PEM certificate chain (leaf first) served on the gRPC and public HTTP listeners; with
    /// `--tls-key`, both or neither. Re-read every `--tls-reload-seconds`, so a renewed
    /// certificate (cert-manager) is served without a restart. The admin listener stays plain.
    #[arg(long, env = "AGRIPORTAL_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "AGRIPORTAL_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,

    /// PEM bundle of the CAs a service trusts when it calls another over `https://` (the
    /// gateway and web URLs). Unset, the certificates of `--tls-cert` are trusted (a
    /// self-signed certificate, or a chain file that holds its issuer).
    #[arg(long, env = "AGRIPORTAL_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,

    /// Name the other services' certificates are checked against on `https://` calls, when it
    /// is not the host of their URL (in `up`, calls go to 127.0.0.1).
    #[arg(long, env = "AGRIPORTAL_TLS_SERVER_NAME", global = true)]
    pub tls_server_name: Option<String>,

    /// Seconds between two looks at the certificate and key files; a changed, valid pair
    /// replaces the served one for new connections, a bad one is logged and the old kept.
    #[arg(
        long,
        env = "AGRIPORTAL_TLS_RELOAD_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub tls_reload_seconds: u64,

    /// Seconds a client may take to finish its TLS handshake before its connection is closed.
    #[arg(
        long,
        env = "AGRIPORTAL_TLS_HANDSHAKE_TIMEOUT_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub tls_handshake_timeout_seconds: u64,

    /// TLS handshakes in progress at once in this process (gRPC and public HTTP together).
    /// A connection beyond it is closed at once, before its handshake starts, and counted in
    /// `agriportal_tls_handshakes_refused_total`: clients that open connections and stall
    /// their handshake hold at most this many sockets and handshake states, not one per
    /// connection for the whole handshake timeout. Established connections are not counted.
    #[arg(
        long,
        env = "AGRIPORTAL_TLS_MAX_HANDSHAKES",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub tls_max_handshakes: u32,
}

/// NATS credentials and TLS: a user and password, or a `.creds`/nkey seed file; a CA to
/// trust (with `tls://` URLs), and a client certificate for mutual TLS. Each service has its
/// own NATS user whose permissions allow only its own subjects (`deploy/nats-auth.conf`).
/// The password is left out of `Debug`, of `agriportal config` and of every log line.
#[derive(Args, Clone, Serialize)]
pub struct NatsSecurity {
    /// NATS user name (with `--nats-password`); one per service, so that NATS permissions
    /// let each publish only its own events.
    #[arg(
        id = "nats_user",
        long = "nats-user",
        env = "AGRIPORTAL_NATS_USER",
        global = true
    )]
    pub user: Option<String>,

    /// Password of `--nats-user`.
    #[arg(
        id = "nats_password",
        long = "nats-password",
        env = "AGRIPORTAL_NATS_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    #[serde(skip)]
    pub password: Option<String>,

    /// A NATS credentials file (`.creds`: user JWT and nkey seed) or a file holding only a user
    /// nkey seed (`SU…`), instead of a user and password.
    #[arg(
        id = "nats_creds",
        long = "nats-creds",
        env = "AGRIPORTAL_NATS_CREDS",
        global = true
    )]
    pub creds: Option<PathBuf>,

    /// PEM file of the CA(s) that signed the NATS servers' certificates; TLS is then required.
    #[arg(
        id = "nats_tls_ca",
        long = "nats-tls-ca",
        env = "AGRIPORTAL_NATS_TLS_CA",
        global = true
    )]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate for mutual TLS (with `--nats-tls-key`).
    #[arg(
        id = "nats_tls_cert",
        long = "nats-tls-cert",
        env = "AGRIPORTAL_NATS_TLS_CERT",
        global = true
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--nats-tls-cert`.
    #[arg(
        id = "nats_tls_key",
        long = "nats-tls-key",
        env = "AGRIPORTAL_NATS_TLS_KEY",
        global = true
    )]
    pub tls_key: Option<PathBuf>,

    /// Prefix of this process's reply subjects (JetStream acks and API answers come back on
    /// them). A per-service prefix (`_INBOX.gateway`) lets NATS permissions allow each service
    /// to subscribe to its own replies only, not to read another's.
    #[arg(
        id = "nats_inbox_prefix",
        long = "nats-inbox-prefix",
        env = "AGRIPORTAL_NATS_INBOX_PREFIX",
        default_value = DEFAULT_NATS_INBOX_PREFIX,
        global = true
    )]
    pub inbox_prefix: String,
}

/// Default of `--nats-inbox-prefix`: NATS' own.
pub const DEFAULT_NATS_INBOX_PREFIX: &str = "_INBOX";

impl Default for NatsSecurity {
    fn default() -> Self {
        NatsSecurity {
            user: None,
            password: None,
            creds: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            inbox_prefix: DEFAULT_NATS_INBOX_PREFIX.into(),
        }
    }
}

impl std::fmt::Debug for NatsSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSecurity")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("creds", &self.creds)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish()
    }
}

/// Default of `--bus-max-bytes`: no limit (deployments set theirs; k8s 16 GiB).
pub const DEFAULT_BUS_MAX_BYTES: u64 = 0;

/// Default of `--inbox-retention-days`: the stream's maximum age (30 days) and a week.
pub const DEFAULT_INBOX_RETENTION_DAYS: u64 = 37;

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

    /// The gRPC server's time and stream limits.
    pub fn grpc_limits(&self) -> GrpcLimits {
        GrpcLimits {
            request_timeout: Duration::from_secs(self.grpc_request_timeout_seconds),
            keepalive_interval: Duration::from_secs(self.grpc_keepalive_interval_seconds),
            keepalive_timeout: Duration::from_secs(self.grpc_keepalive_timeout_seconds),
            max_streams_per_connection: self.grpc_max_streams_per_connection,
            max_connection_age: Duration::from_secs(self.grpc_max_connection_age_seconds),
        }
    }

    /// The HTTP servers' time, size, concurrency and rate limits.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_secs(self.http_header_read_timeout_seconds),
            request_timeout: Duration::from_secs(self.http_request_timeout_seconds),
            max_body_bytes: usize::try_from(self.http_max_body_bytes).unwrap_or(usize::MAX),
            max_concurrent_requests: self.http_max_concurrent_requests,
            rate_per_second: self.http_rate_per_second,
            rate_burst: self.http_rate_burst,
            rate_max_clients: usize::try_from(self.http_rate_max_clients).unwrap_or(usize::MAX),
            client_address_header: self.http_client_address_header.clone(),
        }
    }

    /// The listeners' TLS (`None`: plain), or an error when only one of `--tls-cert` and
    /// `--tls-key` is set.
    pub fn tls(&self) -> anyhow::Result<Option<crate::tls::TlsSettings>> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsSettings {
                cert: cert.clone(),
                key: key.clone(),
                reload_interval: Duration::from_secs(self.tls_reload_seconds),
                handshake_timeout: Duration::from_secs(self.tls_handshake_timeout_seconds),
                max_handshakes: usize::try_from(self.tls_max_handshakes).unwrap_or(usize::MAX),
            })),
            (Some(_), None) => anyhow::bail!(
                "--tls-cert (AGRIPORTAL_TLS_CERT) is set but --tls-key (AGRIPORTAL_TLS_KEY) is not: \
                 TLS needs both the certificate and its private key"
            ),
            (None, Some(_)) => anyhow::bail!(
                "--tls-key (AGRIPORTAL_TLS_KEY) is set but --tls-cert (AGRIPORTAL_TLS_CERT) is not: \
                 TLS needs both the certificate and its private key"
            ),
        }
    }

    /// True when both PostgreSQL and NATS are configured (the mode Kubernetes runs).
    pub fn is_distributed(&self) -> bool {
        self.database_url.is_some() && self.nats_url.is_some()
    }

    /// How long inbox ids are kept (`None`: forever), or an error when that is not longer
    /// than the bus can deliver a message again (the stream's maximum age).
    pub fn inbox_retention(&self) -> anyhow::Result<Option<Duration>> {
        if self.inbox_retention_days == 0 {
            return Ok(None);
        }
        let retention = Duration::from_secs(self.inbox_retention_days.saturating_mul(86_400));
        anyhow::ensure!(
            retention > crate::bus::MAX_AGE,
            "--inbox-retention-days {} must exceed the stream's maximum age ({} days), or be 0",
            self.inbox_retention_days,
            crate::bus::MAX_AGE.as_secs() / 86_400
        );
        Ok(Some(retention))
    }

    /// Time between two rounds of each pruning task.
    pub fn prune_interval(&self) -> Duration {
        Duration::from_secs(self.prune_interval_seconds)
    }

    /// A configuration with every default and the given data directory, for tests and tools.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            database_url: None,
            db_max_connections: 10,
            db_runtime_roles: false,
            db_role_prefix: crate::roles::DEFAULT_ROLE_PREFIX.into(),
            nats_url: None,
            nats: NatsSecurity::default(),
            bus_prefix: "agriportal".into(),
            bus_replicas: 1,
            bus_max_bytes: DEFAULT_BUS_MAX_BYTES,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token_public_keys: Vec::new(),
            token_private_key_file: None,
            service_token_file: None,
            drain_seconds: 10,
            log: "info".into(),
            log_format: "text".into(),
            otlp_endpoint: None,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            grpc_request_timeout_seconds: 30,
            grpc_keepalive_interval_seconds: 60,
            grpc_keepalive_timeout_seconds: 20,
            grpc_max_streams_per_connection: 16,
            grpc_max_connection_age_seconds: 1800,
            admin_http_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            http_header_read_timeout_seconds: 10,
            http_request_timeout_seconds: 30,
            http_max_body_bytes: 2 * 1024 * 1024,
            http_max_concurrent_requests: 256,
            http_rate_per_second: 50,
            http_rate_burst: 200,
            http_rate_max_clients: 100_000,
            http_client_address_header: None,
            partner_max_concurrent_requests: DEFAULT_PARTNER_MAX_CONCURRENT_REQUESTS,
            inbox_retention_days: DEFAULT_INBOX_RETENTION_DAYS,
            prune_interval_seconds: 3600,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_server_name: None,
            tls_reload_seconds: 10,
            tls_handshake_timeout_seconds: 10,
            tls_max_handshakes: 256,
        }
    }
}

/// The gRPC server's time and stream limits (see the `--grpc-*` settings of [`Config`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Longest a call may take, body included.
    pub request_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings.
    pub keepalive_interval: Duration,
    /// How long a ping may wait for its answer.
    pub keepalive_timeout: Duration,
    /// Concurrent streams per connection.
    pub max_streams_per_connection: u32,
    /// Age after which a connection is asked to close.
    pub max_connection_age: Duration,
}

/// The HTTP servers' limits (see the `--http-*` settings of [`Config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Longest a public request may take, body and handler included.
    pub request_timeout: Duration,
    /// Largest request body read.
    pub max_body_bytes: usize,
    /// Public requests served at once.
    pub max_concurrent_requests: u32,
    /// Requests per second per client address (0: no limit).
    pub rate_per_second: u32,
    /// Bucket size of the per-client rate.
    pub rate_burst: u32,
    /// Client addresses remembered at most.
    pub rate_max_clients: usize,
    /// Header whose last entry is the client's address, behind a proxy.
    pub client_address_header: Option<String>,
}
