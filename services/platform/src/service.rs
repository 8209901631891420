//! A service, declared once: what it is ([`Descriptor`]), its settings (a `clap::Args` struct
//! of its own, flattened into the command line), its migrations, and how it starts
//! ([`Service::start`], given a [`ServiceContext`], returning what it serves as [`Running`]).
//! The kit ([`crate::kit`]) does everything else the same way for every service: the store
//! (opened and migrated in the service's schema), the outbox relay, event intake, the gRPC and
//! HTTP servers with health, readiness, metrics and limits, and the CLI (`up`, `serve --target`,
//! `migrate`, `health`, `targets`, `events`).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::Serialize;
use tonic::body::Body;
use tonic::server::NamedService;

use crate::client::{self, ClientOptions, Credential, PeerChannel};
use crate::consumer::{self, ConsumerHealth, ConsumerOptions, Handler};
use crate::context::Context;
use crate::outbox::Outbox;
use crate::storage::{Database, Migrations};

/// What a service is, known without starting it: `agriportal targets` prints it, the kit
/// checks [`Running`] against it at start, and deployment checks read it.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Descriptor {
    /// Target name (`serve --target <name>`), schema (PostgreSQL) and file stem (SQLite).
    pub name: &'static str,
    /// One line on what it does.
    pub about: &'static str,
    /// Its gRPC services.
    pub grpc: &'static [GrpcApi],
    /// Its HTTP routes, if any.
    pub http: Option<HttpApi>,
    /// Subjects of the events it publishes (from its topics: `SALES_RECORDED.subject()`).
    pub publishes: &'static [&'static str],
    /// Subjects of the events it consumes.
    pub consumes: &'static [&'static str],
    /// Targets whose gRPC services it calls.
    pub calls: &'static [&'static str],
}

/// A gRPC service of a target.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GrpcApi {
    /// Fully qualified name (`agriportal.gateway.v1.Dashboard`), also its gRPC health name.
    pub name: &'static str,
    /// Whether outsiders (partners, dashboards) call it through the ingress; internal ones
    /// (audit rpcs) are reached only from inside the cluster.
    pub public: bool,
    /// Who may call it, checked from the headers before a request's body is read
    /// ([`crate::access::AccessLayer`]).
    pub access: crate::access::Access,
}

/// The HTTP routes of a target.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct HttpApi {
    /// Every route of the service starts with this (`/api`); `/` for the one service that
    /// answers everything the others do not (the web front end). The ingress routes by it.
    pub prefix: &'static str,
}

/// A service of the portal.
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// The service's own settings: a `#[derive(clap::Args)]` struct whose flags and environment
    /// variables are flattened into the command line (shared settings stay in
    /// [`crate::Config`]).
    type Config: clap::Args
        + clap::FromArgMatches
        + Clone
        + fmt::Debug
        + Serialize
        + Send
        + Sync
        + 'static;

    /// What the service is.
    const DESCRIPTOR: Descriptor;

    /// Its migrations (the kit appends its own tables).
    fn migrations() -> Migrations;

    /// Starts the service on its opened store: background work goes through `ctx` (consumers,
    /// the outbox, tasks), and what it serves is returned.
    async fn start(ctx: ServiceContext<Self::Config>) -> anyhow::Result<Running>;
}

/// A readiness check of a service beyond its store (which the kit always checks).
pub type Check = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// Adds one gRPC service to the process's routes.
pub(crate) type AddGrpc = Box<dyn FnOnce(tonic::service::Routes) -> tonic::service::Routes + Send>;

/// A background task of a service, named for the log.
pub(crate) type Task = (&'static str, BoxFuture<'static, anyhow::Result<()>>);

/// What a started service serves, and the background work it runs while it does.
#[derive(Default)]
pub struct Running {
    // Kept as adders rather than a `Routes` of its own: tonic's routes each carry a fallback,
    // and two routers with fallbacks cannot be merged, so the kit adds every service of the
    // process to one `Routes`.
    pub(crate) grpc: Vec<AddGrpc>,
    pub(crate) grpc_names: Vec<&'static str>,
    pub(crate) http: Option<axum::Router>,
    pub(crate) checks: Vec<Check>,
    pub(crate) tasks: Vec<Task>,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("grpc", &self.grpc_names)
            .field("http", &self.http.is_some())
            .field("checks", &self.checks.len())
            .field(
                "tasks",
                &self.tasks.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Running {
    /// Serves nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves a gRPC service (a generated `…Server`, possibly behind an interceptor); its
    /// name is its gRPC health name.
    pub fn grpc<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.grpc_names.push(S::NAME);
        self.grpc
            .push(Box::new(move |routes: tonic::service::Routes| {
                routes.add_service(service)
            }));
        self
    }

    /// Serves HTTP routes, every one under the descriptor's prefix (the kit nests them there,
    /// so the router's own paths are relative to it; with prefix `/` they are as written).
    pub fn http(mut self, router: axum::Router) -> Self {
        self.http = Some(router);
        self
    }

    /// Runs `task` in the background once every service of the process has started, until it
    /// ends; the process waits for it on shutdown, so it must watch `shared.shutdown`. An error
    /// it ends with is logged with the service's and the task's names.
    pub fn task<F>(mut self, name: &'static str, task: F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tasks.push((name, Box::pin(task)));
        self
    }

    /// Adds a readiness check (the store's is added by the kit).
    pub fn ready_when<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.checks.push(Arc::new(move || Box::pin(check())));
        self
    }
}

/// What a service is started with.
pub struct ServiceContext<C> {
    /// The service's own settings.
    pub config: C,
    /// What every service of the process shares: settings, bus, authenticator, shutdown.
    pub shared: Context,
    /// The service's store, opened in its schema and migrated.
    pub db: Database,
    pub(crate) descriptor: &'static Descriptor,
    pub(crate) outbox: Option<Outbox>,
    pub(crate) local_grpc: Option<String>,
}

impl<C> fmt::Debug for ServiceContext<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceContext")
            .field("service", &self.descriptor.name)
            .finish_non_exhaustive()
    }
}

impl<C> ServiceContext<C> {
    /// The service's descriptor.
    pub fn descriptor(&self) -> &'static Descriptor {
        self.descriptor
    }

    /// Runs a step of the service's start that reads a store (a second pool, a first read of
    /// its figures) with the kit's start-up retries: with PostgreSQL or NATS configured, a
    /// failure an outage explains is logged and retried with backoff, as the kit does for
    /// opening the service's own store, so a dependency down while the service starts is
    /// waited out rather than ending the process. Any other failure is returned at once; so is
    /// a shutdown that comes first.
    pub async fn while_starting<T, F, Fut>(&self, what: &str, attempt: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let config = &self.shared.config;
        let retry = config.database_url.is_some() || config.nats_url.is_some();
        crate::kit::until_started(what, retry, &self.shared.shutdown, attempt)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{what}: stopped before it could finish"))
    }

    /// A second pool of at most `max` connections on the service's own schema, for work that
    /// must not wait behind the main pool (the gateway's public reads), opened with
    /// [`ServiceContext::while_starting`]'s retries.
    pub async fn open_pool(&self, max: u32) -> anyhow::Result<Database> {
        let what = format!(
            "opening a pool of {} on the {} store",
            max, self.descriptor.name
        );
        self.while_starting(&what, || {
            Database::connect_pool(&self.shared.config, self.descriptor.name, max)
        })
        .await
    }

    /// The outbox, whose relay the kit runs for a service that publishes events; wake it after
    /// a commit that wrote some. A service whose descriptor publishes nothing gets an error.
    pub fn outbox(&self) -> anyhow::Result<Outbox> {
        self.outbox.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "service {} publishes no events (its descriptor's `publishes` is empty), so it has no outbox relay",
                self.descriptor.name
            )
        })
    }

    /// Starts consuming events for `handler` into this service's store, through the kit's
    /// consumer (inbox, ack after commit, parking); returns its health. Every subject the
    /// handler subscribes to must be in the descriptor's `consumes`.
    pub fn consume<H: Handler>(
        &self,
        options: ConsumerOptions,
        handler: H,
    ) -> anyhow::Result<Arc<ConsumerHealth>> {
        let declared = self.descriptor.consumes;
        if let Some(missing) = handler
            .subscriptions()
            .subjects()
            .into_iter()
            .find(|s| !declared.contains(s))
        {
            anyhow::bail!(
                "service {} consumes `{missing}` but its descriptor does not declare it in `consumes`",
                self.descriptor.name
            );
        }
        Ok(consumer::spawn(
            handler,
            options,
            self.db.clone(),
            self.shared.bus.clone(),
            self.shared.shutdown.clone(),
            &self.shared.tasks,
        ))
    }

    /// The gRPC address of `target`: `configured` when given, else in `up` (every service in
    /// this process) this process's own listener; `None` when neither. `target` must be in the
    /// descriptor's `calls`.
    pub fn peer_url(
        &self,
        target: &str,
        configured: Option<&str>,
    ) -> anyhow::Result<Option<String>> {
        anyhow::ensure!(
            self.descriptor.calls.contains(&target),
            "service {} calls {target} but its descriptor does not declare it in `calls`",
            self.descriptor.name
        );
        Ok(configured
            .map(str::to_string)
            .or_else(|| self.local_grpc.clone()))
    }

    /// A channel to `target` at `url`, with this service's own credential (a service token
    /// addressed to `target`), the trace context and `options`' deadline on every call.
    pub fn peer(
        &self,
        target: &str,
        url: &str,
        options: ClientOptions,
    ) -> anyhow::Result<PeerChannel> {
        let credential = client::ServiceCredential::new(
            self.descriptor.name,
            target,
            &self.shared.auth,
            self.shared.config.service_token_file.as_deref(),
        )?;
        self.peer_as(url, Credential::Service(credential), options)
    }

    /// A channel to `target` at `url` with `credential` (none, for a channel whose calls each
    /// carry their caller's own token). An `https://` address is called over TLS, trusting
    /// `--tls-ca` (or the certificates of `--tls-cert`).
    pub fn peer_as(
        &self,
        url: &str,
        credential: Credential,
        options: ClientOptions,
    ) -> anyhow::Result<PeerChannel> {
        let tls = crate::tls::ClientTls::from_config(&self.shared.config)?;
        client::connect_via(url, credential, options, tls.as_ref())
    }
}
