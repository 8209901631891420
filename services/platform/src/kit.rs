//! The one assembly path of the services: a [`Registry`] of every [`Service`] of the binary
//! (registering one is one line), their settings flattened into the command line
//! ([`Settings`]), and the roles that run through it: [`up`] (every service in one process),
//! [`serve`] (one service, as Kubernetes runs it), [`migrate`], [`targets`] (what each target
//! serves, listens on and is configured by, as JSON), and the parked-event commands
//! ([`parked`], [`replay`]).

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgMatches, Command};
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::AccessLayer;
use crate::backoff::Backoff;
use crate::bus::{BusError, BusKind};
use crate::config::Config;
use crate::consumer::{self, ParkedRow};
use crate::context::{token_keys, Context};
use crate::http::{admin_router, Readiness};
use crate::outbox::spawn_relay;
use crate::service::{Descriptor, Running, Service, ServiceContext};
use crate::storage::{platform_database, Database, Migrations};
use crate::{grpc, http};

// ---------------------------------------------------------------------------------------------
// Registry and settings
// ---------------------------------------------------------------------------------------------

/// Every service of a binary, in start order.
#[derive(Clone, Default)]
pub struct Registry {
    entries: Vec<Arc<dyn Entry>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| e.descriptor().name))
            .finish()
    }
}

impl Registry {
    /// No services.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `S` (started after the services registered before it).
    pub fn with<S: Service>(mut self) -> Self {
        self.entries
            .push(Arc::new(Typed::<S>(std::marker::PhantomData)));
        self
    }

    /// The descriptors, in start order.
    pub fn descriptors(&self) -> Vec<&'static Descriptor> {
        self.entries.iter().map(|e| e.descriptor()).collect()
    }

    /// The target names, in start order.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.descriptor().name).collect()
    }

    fn entry(&self, name: &str) -> anyhow::Result<&Arc<dyn Entry>> {
        self.entries
            .iter()
            .find(|e| e.descriptor().name == name)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown target `{name}`; the targets are {}",
                    self.names().join(", ")
                )
            })
    }

    /// Adds every service's settings to `command` as global flags (so they may follow any
    /// subcommand), and the targets as the possible values of `serve --target`.
    pub fn augment(&self, mut command: Command) -> Command {
        for entry in &self.entries {
            let before: Vec<clap::Id> = command
                .get_arguments()
                .map(|a| a.get_id().clone())
                .collect();
            command = entry.augment(command);
            let added: Vec<clap::Id> = command
                .get_arguments()
                .map(|a| a.get_id().clone())
                .filter(|id| !before.contains(id))
                .collect();
            for id in added {
                command = command.mut_arg(id, |arg| arg.global(true));
            }
        }
        let targets: Vec<clap::builder::PossibleValue> = self
            .entries
            .iter()
            .map(|e| {
                let d = e.descriptor();
                clap::builder::PossibleValue::new(d.name).help(d.about)
            })
            .collect();
        if command.find_subcommand("serve").is_some() {
            command = command.mut_subcommand("serve", |serve| {
                serve.mut_arg("target", |arg| {
                    arg.value_parser(clap::builder::PossibleValuesParser::new(targets))
                })
            });
        }
        command
    }

    /// The settings given on the command line (and in the environment).
    pub fn settings(&self, platform: Config, matches: &ArgMatches) -> anyhow::Result<Settings> {
        let mut sections = BTreeMap::new();
        for entry in &self.entries {
            sections.insert(entry.descriptor().name, entry.parse(matches)?);
        }
        Ok(Settings { platform, sections })
    }

    /// Every service's defaults, read from no command line and no environment (tests and
    /// tools build on these, as on [`Config::embedded`]).
    pub fn default_settings(&self, platform: Config) -> anyhow::Result<Settings> {
        let mut sections = BTreeMap::new();
        for entry in &self.entries {
            sections.insert(entry.descriptor().name, entry.defaults()?);
        }
        Ok(Settings { platform, sections })
    }
}

/// The settings of a process: the shared ones and each service's own section.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What every service shares.
    pub platform: Config,
    sections: BTreeMap<&'static str, Section>,
}

impl Settings {
    /// `S`'s section; `None` when `S` is not registered.
    pub fn section<S: Service>(&self) -> Option<&S::Config> {
        self.sections
            .get(S::DESCRIPTOR.name)?
            .value
            .as_any()
            .downcast_ref()
    }

    /// `S`'s section, to change (tests tune limits this way).
    pub fn section_mut<S: Service>(&mut self) -> Option<&mut S::Config> {
        self.sections
            .get_mut(S::DESCRIPTOR.name)?
            .value
            .as_any_mut()
            .downcast_mut()
    }

    /// Every setting as JSON (`agriportal config`), secrets left out by their types' `serde`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(&self.platform).unwrap_or_default();
        let services: serde_json::Map<String, serde_json::Value> = self
            .sections
            .iter()
            .map(|(name, section)| (name.to_string(), section.value.json()))
            .collect();
        if let Some(object) = value.as_object_mut() {
            object.insert("services".into(), serde_json::Value::Object(services));
        }
        value
    }

    fn section_of(&self, name: &str) -> anyhow::Result<Section> {
        self.sections
            .get(name)
            .cloned()
            .with_context(|| format!("no settings for service {name}"))
    }
}

/// One service's settings, type-erased.
pub struct Section {
    value: Box<dyn AnySection>,
}

impl Clone for Section {
    fn clone(&self) -> Self {
        Section {
            value: self.value.clone_box(),
        }
    }
}

impl fmt::Debug for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.debug(f)
    }
}

trait AnySection: Send + Sync {
    fn clone_box(&self) -> Box<dyn AnySection>;
    fn json(&self) -> serde_json::Value;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

impl<T: Clone + fmt::Debug + Serialize + Send + Sync + 'static> AnySection for T {
    fn clone_box(&self) -> Box<dyn AnySection> {
        Box::new(self.clone())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A registered service, with its type erased.
trait Entry: Send + Sync {
    fn descriptor(&self) -> &'static Descriptor;
    fn augment(&self, command: Command) -> Command;
    fn parse(&self, matches: &ArgMatches) -> anyhow::Result<Section>;
    fn defaults(&self) -> anyhow::Result<Section>;
    fn migrations(&self) -> Migrations;
    fn start(&self, ctx: ServiceContext<Section>) -> BoxFuture<'static, anyhow::Result<Running>>;
}

struct Typed<S>(std::marker::PhantomData<fn() -> S>);

impl<S: Service> Entry for Typed<S> {
    fn descriptor(&self) -> &'static Descriptor {
        &S::DESCRIPTOR
    }

    fn augment(&self, command: Command) -> Command {
        <S::Config as clap::Args>::augment_args(command)
    }

    fn parse(&self, matches: &ArgMatches) -> anyhow::Result<Section> {
        let config = <S::Config as clap::FromArgMatches>::from_arg_matches(matches)
            .with_context(|| format!("reading the settings of {}", S::DESCRIPTOR.name))?;
        Ok(Section {
            value: Box::new(config),
        })
    }

    fn defaults(&self) -> anyhow::Result<Section> {
        // The environment is left out, so tests and tools start from the documented defaults
        // whatever the machine's environment holds.
        let command = <S::Config as clap::Args>::augment_args(Command::new(S::DESCRIPTOR.name))
            .mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from([S::DESCRIPTOR.name])
            .with_context(|| format!("{}: every setting needs a default", S::DESCRIPTOR.name))?;
        self.parse(&matches)
    }

    fn migrations(&self) -> Migrations {
        S::migrations()
    }

    fn start(&self, ctx: ServiceContext<Section>) -> BoxFuture<'static, anyhow::Result<Running>> {
        Box::pin(async move {
            let ServiceContext {
                config,
                shared,
                db,
                descriptor,
                outbox,
                local_grpc,
            } = ctx;
            let config: S::Config = config
                .value
                .as_any()
                .downcast_ref::<S::Config>()
                .cloned()
                .with_context(|| {
                    format!("the settings given to {} are not its own", descriptor.name)
                })?;
            S::start(ServiceContext {
                config,
                shared,
                db,
                descriptor,
                outbox,
                local_grpc,
            })
            .await
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Running services
// ---------------------------------------------------------------------------------------------

/// The listeners of a process.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC, shared by every service of the process.
    pub grpc: TcpListener,
    /// Public HTTP: each service's routes under its prefix, with the public limits.
    pub http: TcpListener,
    /// Admin HTTP: `/healthz`, `/readyz`, `/metrics`, never on the public port.
    pub admin: TcpListener,
}

/// Runs every service of `registry` in one process until `shutdown` fires, then drains and
/// waits for background tasks. Embedded (SQLite + in-process bus) unless the settings name
/// PostgreSQL and NATS.
pub async fn up(
    registry: &Registry,
    settings: Settings,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = settings.platform.clone();
    let retry = config.database_url.is_some() || config.nats_url.is_some();
    if retry {
        // A configuration error, not an outage: fail at once rather than retry.
        token_keys(&config)?;
    }
    let opening = until_started(
        "connecting to the stores and the bus",
        retry,
        &shutdown,
        || Context::open(config.clone()),
    );
    let Some(mut ctx) = opening.await? else {
        return Ok(());
    };
    ctx.shutdown = shutdown;
    up_with_context(registry, settings, ctx, listeners).await
}

/// [`up`] with an opened context (tests pass one whose bus they hold or wrap).
pub async fn up_with_context(
    registry: &Registry,
    settings: Settings,
    ctx: Context,
    listeners: Listeners,
) -> anyhow::Result<()> {
    let own = listeners.grpc.local_addr()?;
    let own = if own.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], own.port()))
    } else {
        own
    };
    // With TLS on, the services of this process call each other through the TLS listener.
    let scheme = if ctx.config.tls()?.is_some() {
        "https"
    } else {
        "http"
    };
    let entries: Vec<&Arc<dyn Entry>> = registry.entries.iter().collect();
    let result = run(
        &entries,
        &settings,
        &ctx,
        listeners,
        Some(format!("{scheme}://{own}")),
    )
    .await;
    ctx.stop().await;
    result
}

/// Runs the service `target` alone on PostgreSQL and NATS JetStream until `shutdown` fires.
/// Refuses the in-process bus: it cannot carry events between processes.
pub async fn serve(
    registry: &Registry,
    target: &str,
    settings: Settings,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let entry = registry.entry(target)?.clone();
    check_distributed(&settings.platform)?;
    // A configuration error, not an outage: fail at once rather than retry.
    token_keys(&settings.platform)?;
    let config = settings.platform.clone();
    let opening = until_started("connecting to NATS and PostgreSQL", true, &shutdown, || {
        Context::open(config.clone())
    });
    let Some(mut ctx) = opening.await? else {
        return Ok(());
    };
    anyhow::ensure!(
        ctx.bus.kind() == BusKind::JetStream,
        "serve needs NATS JetStream (set NATS_URL)"
    );
    ctx.shutdown = shutdown;
    let result = run(&[&entry], &settings, &ctx, listeners, None).await;
    ctx.stop().await;
    result
}

/// Opens, migrates and starts `entries` in order, then serves what they return until the
/// context's shutdown.
async fn run(
    entries: &[&Arc<dyn Entry>],
    settings: &Settings,
    ctx: &Context,
    listeners: Listeners,
    local_grpc: Option<String>,
) -> anyhow::Result<()> {
    // One certificate for both public listeners, reloaded in place when its files change;
    // loaded before any store is opened, so a bad one fails the start at once.
    let tls = match ctx.config.tls()? {
        Some(files) => {
            let tls = crate::tls::ServerTls::load(files)?;
            tracing::info!(
                cert = %tls.settings().cert.display(),
                fingerprint = %crate::tls::fingerprint(&tls.chain()),
                reload_seconds = tls.settings().reload_interval.as_secs(),
                "TLS on the gRPC and public HTTP listeners (the admin listener stays plain)"
            );
            ctx.tasks.spawn(tls.clone().watch(ctx.shutdown.clone()));
            Some(tls)
        }
        None => None,
    };
    let retry = ctx.config.database_url.is_some();
    // Revocations, once their tokens expired (every process may prune: deletes are
    // idempotent, and a revocation is useless once verification refuses its token anyway).
    if let Some(platform) = ctx.auth.store() {
        ctx.tasks.spawn(crate::retention::run(
            platform.clone(),
            crate::auth::REVOCATIONS,
            crate::auth::REVOCATION_PRUNE_LEEWAY,
            ctx.config.prune_interval(),
            ctx.shutdown.clone(),
        ));
    }
    let mut started = Vec::with_capacity(entries.len());
    for entry in entries {
        let descriptor = entry.descriptor();
        let what = format!("opening the {} store", descriptor.name);
        let opening = until_started(&what, retry, &ctx.shutdown, || {
            open_store(&ctx.config, descriptor.name, entry.migrations())
        });
        let Some(db) = opening.await? else {
            return Ok(());
        };
        let outbox = (!descriptor.publishes.is_empty()).then(|| {
            spawn_relay(
                db.clone(),
                ctx.bus.clone(),
                ctx.shutdown.clone(),
                &ctx.tasks,
            )
        });
        // Consumers' inbox ids, once the bus can no longer deliver their events again.
        if !descriptor.consumes.is_empty() {
            if let Some(retention) = ctx.config.inbox_retention()? {
                ctx.tasks.spawn(crate::retention::run(
                    db.clone(),
                    crate::retention::INBOX,
                    retention,
                    ctx.config.prune_interval(),
                    ctx.shutdown.clone(),
                ));
            }
        }
        let service_ctx = ServiceContext {
            config: settings.section_of(descriptor.name)?,
            shared: ctx.clone(),
            db: db.clone(),
            descriptor,
            outbox,
            local_grpc: local_grpc.clone(),
        };
        let running = entry
            .start(service_ctx)
            .await
            .with_context(|| format!("starting {}", descriptor.name))?;
        check_running(descriptor, &running)?;
        started.push((descriptor, db, running));
    }
    serve_started(started, ctx, listeners, tls).await
}

async fn open_store(
    config: &Config,
    name: &str,
    migrations: Migrations,
) -> anyhow::Result<Database> {
    let db = Database::connect(config, name)
        .await
        .with_context(|| format!("opening the {name} store"))?;
    db.migrate(&migrations)
        .await
        .with_context(|| format!("migrating the {name} store"))?;
    Ok(db)
}

/// A service serves exactly what its descriptor says, so `targets` (and the deployment built
/// from it) cannot drift from what runs.
fn check_running(descriptor: &Descriptor, running: &Running) -> anyhow::Result<()> {
    let declared: Vec<&str> = descriptor.grpc.iter().map(|g| g.name).collect();
    let mut served = running.grpc_names.clone();
    served.sort_unstable();
    let mut wanted = declared.clone();
    wanted.sort_unstable();
    anyhow::ensure!(
        served == wanted,
        "service {} serves gRPC {:?} but its descriptor declares {:?}",
        descriptor.name,
        running.grpc_names,
        declared
    );
    anyhow::ensure!(
        running.http.is_some() == descriptor.http.is_some(),
        "service {} {} HTTP routes but its descriptor {}",
        descriptor.name,
        if running.http.is_some() {
            "serves"
        } else {
            "has no"
        },
        if descriptor.http.is_some() {
            "declares a prefix"
        } else {
            "declares none"
        }
    );
    Ok(())
}

async fn serve_started(
    started: Vec<(&'static Descriptor, Database, Running)>,
    ctx: &Context,
    listeners: Listeners,
    tls: Option<crate::tls::ServerTls>,
) -> anyhow::Result<()> {
    let mut routes = tonic::service::Routes::default();
    let mut names = Vec::new();
    let mut http_router = axum::Router::new();
    let mut prefixes: Vec<(&str, &str)> = Vec::new();
    let mut databases = Vec::new();
    let mut checks = Vec::new();
    let mut access = Vec::new();
    for (descriptor, db, running) in started {
        access.extend(
            descriptor
                .grpc
                .iter()
                .map(|api| (api.name, api.access, descriptor.name)),
        );
        for add in running.grpc {
            routes = add(routes);
        }
        names.extend(running.grpc_names);
        if let (Some(router), Some(api)) = (running.http, descriptor.http) {
            if let Some((other, _)) = prefixes.iter().find(|(_, p)| overlaps(p, api.prefix)) {
                anyhow::bail!(
                    "services {other} and {} both claim HTTP paths under {}",
                    descriptor.name,
                    api.prefix
                );
            }
            prefixes.push((descriptor.name, api.prefix));
            http_router = if api.prefix == "/" {
                http_router.merge(router)
            } else {
                http_router.nest(api.prefix, router)
            };
        }
        databases.push(db);
        checks.extend(running.checks);
        for (task, work) in running.tasks {
            let service = descriptor.name;
            ctx.tasks.spawn(async move {
                if let Err(err) = work.await {
                    tracing::error!(
                        service,
                        task,
                        error = format!("{err:#}"),
                        "a background task failed"
                    );
                }
            });
        }
    }
    let readiness = Readiness::new(databases).with_checks(checks);
    if !prefixes.iter().any(|(_, p)| *p == "/") {
        http_router = http_router.fallback(http::not_found);
    }
    let admin = admin_router(readiness.clone()).fallback(http::not_found);
    let drain = ctx.config.drain();
    let http_limits = ctx.config.http_limits();
    tokio::try_join!(
        grpc::serve_with(
            listeners.grpc,
            routes,
            &names,
            readiness,
            ctx.shutdown.clone(),
            drain,
            grpc::ServerLimits::new(
                AccessLayer::new(
                    ctx.auth.clone(),
                    access,
                    ctx.config.partner_max_concurrent_requests,
                ),
                &ctx.config,
            )
            .with_tls(tls.clone()),
        ),
        http::serve(
            listeners.http,
            http_router,
            ctx.shutdown.clone(),
            drain,
            &http_limits,
            tls,
        ),
        http::serve_admin(
            listeners.admin,
            admin,
            ctx.shutdown.clone(),
            drain,
            http_limits.header_read_timeout,
        ),
    )?;
    Ok(())
}

/// Whether two HTTP prefixes claim some path in common (`/` claims only what no other does,
/// so it overlaps only itself).
fn overlaps(a: &str, b: &str) -> bool {
    if a == "/" || b == "/" {
        return a == b;
    }
    let under =
        |x: &str, y: &str| x == y || x.starts_with(&format!("{}/", y.trim_end_matches('/')));
    under(a, b) || under(b, a)
}

/// Explains what `serve` needs when it is not configured for the distributed mode.
pub fn check_distributed(config: &Config) -> anyhow::Result<()> {
    if config.nats_url.is_none() {
        anyhow::bail!(
            "`serve` runs one service per process, and the in-process event bus cannot cross processes: \
             set NATS_URL (or --nats-url) to a NATS JetStream server, or use `agriportal up` to run everything in one process"
        );
    }
    if config.database_url.is_none() {
        anyhow::bail!(
            "`serve` runs one service per process, which share PostgreSQL: set DATABASE_URL (or --database-url), \
             or use `agriportal up` to run everything in one process on SQLite"
        );
    }
    Ok(())
}

/// Bound of one start-up attempt: a database behind a network partition may never answer a
/// connect.
const START_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `attempt` until it succeeds, or `None` once `shutdown` fires first. With `retry`
/// (PostgreSQL or NATS configured), a failure that an outage explains (the dependency
/// unreachable, refusing connections, starting up, or not answering in time) is logged and
/// retried with backoff: a process started while NATS or PostgreSQL is down waits for it, as a
/// running one rides out the same outage, rather than exiting into a crash loop whose delays
/// grow far beyond the outage. Any other failure (a wrong password, a bad URL, a failed
/// migration) is returned at once.
pub async fn until_started<T, F, Fut>(
    what: &str,
    retry: bool,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    if !retry {
        return tokio::select! {
            outcome = attempt() => outcome.map(Some),
            _ = shutdown.cancelled() => Ok(None),
        };
    }
    let mut backoff = Backoff::default();
    loop {
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(START_ATTEMPT_TIMEOUT, attempt()) => outcome,
            _ = shutdown.cancelled() => return Ok(None),
        };
        match outcome {
            Ok(Ok(value)) => return Ok(Some(value)),
            Ok(Err(err)) if is_outage(&err) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "{what}: a dependency is unavailable; retrying"
                );
            }
            Ok(Err(err)) => return Err(err),
            Err(_) => {
                tracing::warn!(timeout = ?START_ATTEMPT_TIMEOUT, "{what}: no answer in time; retrying");
            }
        }
        if backoff.wait(shutdown).await {
            return Ok(None);
        }
    }
}

/// Whether `err` comes from a dependency being down rather than from the configuration.
fn is_outage(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        if let Some(bus) = cause.downcast_ref::<BusError>() {
            return matches!(bus, BusError::Unavailable(_));
        }
        if let Some(db) = cause.downcast_ref::<sqlx::Error>() {
            return crate::error::is_transient(db);
        }
        // A step that already mapped its database or bus error to the platform's vocabulary.
        if let Some(platform) = cause.downcast_ref::<crate::Error>() {
            return platform.code == crate::ErrorCode::Unavailable;
        }
        if let Some(migrate) = cause.downcast_ref::<sqlx::migrate::MigrateError>() {
            return matches!(migrate, sqlx::migrate::MigrateError::Execute(e) if crate::error::is_transient(e));
        }
        cause.downcast_ref::<std::io::Error>().is_some()
    })
}

// ---------------------------------------------------------------------------------------------
// Tools: migrate, targets, parked events
// ---------------------------------------------------------------------------------------------

/// Applies the platform's and the services' migrations (all, or `target`'s) and returns the
/// stores migrated. With NATS configured it first creates (or updates) the event stream, so
/// the services' NATS users need no right to manage it (`deploy/nats-auth.conf`: only the
/// migrate user has it).
pub async fn migrate(
    registry: &Registry,
    config: &Config,
    target: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    if let Some(url) = &config.nats_url {
        crate::bus::JetStreamBus::connect_with(
            url,
            &config.nats,
            &config.bus_prefix,
            config.bus_replicas,
            config.bus_max_bytes,
        )
        .await
        .with_context(|| format!("creating the event stream on NATS at {url}"))?;
        done.push(format!(
            "stream {}",
            crate::bus::stream_name(&config.bus_prefix)
        ));
    }
    let platform = platform_database(config).await?;
    platform.close().await;
    done.push("platform".to_string());
    for entry in selected(registry, target)? {
        let name = entry.descriptor().name;
        let db = open_store(config, name, entry.migrations()).await?;
        db.close().await;
        done.push(name.to_string());
    }
    if config.db_runtime_roles {
        for role in grant_runtime_roles(registry, config, target).await? {
            done.push(format!("runtime role {role}"));
        }
    }
    Ok(done)
}

/// Gives each selected service's runtime role (`--db-role-prefix` + its name) the use of its
/// own schema only ([`crate::roles`]), and returns the roles. Run as the owner, after
/// [`migrate`] (which calls it with `--db-runtime-roles`).
pub async fn grant_runtime_roles(
    registry: &Registry,
    config: &Config,
    target: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let url = config
        .database_url
        .as_deref()
        .context("--db-runtime-roles needs DATABASE_URL: runtime roles are PostgreSQL's")?;
    let mut roles = Vec::new();
    for entry in selected(registry, target)? {
        let name = entry.descriptor().name;
        let role = format!("{}{name}", config.db_role_prefix);
        crate::roles::grant_runtime_role(url, name, &role).await?;
        roles.push(role);
    }
    Ok(roles)
}

fn selected<'a>(
    registry: &'a Registry,
    target: Option<&str>,
) -> anyhow::Result<Vec<&'a Arc<dyn Entry>>> {
    Ok(match target {
        Some(name) => vec![registry.entry(name)?],
        None => registry.entries.iter().collect(),
    })
}

/// A flag and its environment variable.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Setting {
    /// `--flag`.
    pub flag: String,
    /// Its environment variable, when it has one.
    pub env: Option<String>,
}

fn settings_of(command: &Command) -> Vec<Setting> {
    command
        .get_arguments()
        .filter_map(|arg| {
            Some(Setting {
                flag: format!("--{}", arg.get_long()?),
                env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
            })
        })
        .collect()
}

/// What `agriportal targets` prints: every target with its gRPC services, HTTP prefix, ports,
/// events, peers, settings and migrations, and the settings every target shares.
pub fn targets(registry: &Registry, platform: &Config) -> serde_json::Value {
    let shared = settings_of(&<Config as clap::Args>::augment_args(Command::new(
        "shared",
    )));
    let list: Vec<serde_json::Value> = registry
        .entries
        .iter()
        .map(|entry| {
            let d = entry.descriptor();
            let own = settings_of(&entry.augment(Command::new(d.name)));
            serde_json::json!({
                "name": d.name,
                "about": d.about,
                "schema": d.name,
                "grpc_services": d.grpc,
                "http_prefix": d.http.map(|h| h.prefix),
                "ports": {"grpc": platform.grpc_addr.port(), "http": platform.http_addr.port(), "admin": platform.admin_http_addr.port()},
                "publishes": d.publishes,
                "consumes": d.consumes,
                "calls": d.calls,
                "env": own.iter().filter_map(|s| s.env.clone()).collect::<Vec<_>>(),
                "flags": own.iter().map(|s| s.flag.clone()).collect::<Vec<_>>(),
                "migrations": entry.migrations().describe().iter().map(|(v, d)| format!("{v} {d}")).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "targets": list,
        "shared": {
            "env": shared.iter().filter_map(|s| s.env.clone()).collect::<Vec<_>>(),
            "flags": shared.iter().map(|s| s.flag.clone()).collect::<Vec<_>>(),
        },
    })
}

/// A parked event and the service whose store holds it.
#[derive(Clone, Debug, Serialize)]
pub struct Parked {
    /// The service (target) name; with the row's id, `<service>:<id>` names it.
    pub service: &'static str,
    /// The row.
    #[serde(flatten)]
    pub row: ParkedRow,
}

/// Every parked event of every service (or of `target`).
pub async fn parked(
    registry: &Registry,
    config: &Config,
    target: Option<&str>,
) -> anyhow::Result<Vec<Parked>> {
    let mut all = Vec::new();
    for entry in selected(registry, target)? {
        let name = entry.descriptor().name;
        let db = open_store(config, name, entry.migrations()).await?;
        let rows = consumer::parked(&db).await?;
        db.close().await;
        all.extend(rows.into_iter().map(|row| Parked { service: name, row }));
    }
    Ok(all)
}

/// How a replay ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Applied and removed from the parked events.
    Replayed,
    /// Applied again and failed; still parked, with this reason.
    FailedAgain(String),
    /// Nobody picked the request up within the wait (the service is not running?); it stays
    /// asked for and runs when the service's consumer next looks.
    Pending,
}

/// Asks the running service to apply parked event `id` (`<service>:<n>`) again and waits up
/// to `wait` for the outcome.
pub async fn replay(
    registry: &Registry,
    config: &Config,
    id: &str,
    wait: Duration,
) -> anyhow::Result<ReplayOutcome> {
    let (service, number) = id
        .split_once(':')
        .and_then(|(s, n)| Some((s, n.parse::<i64>().ok()?)))
        .with_context(|| format!("`{id}` is not a parked event id: write <service>:<number>, as `agriportal events parked` shows"))?;
    let entry = registry.entry(service)?;
    let db = open_store(config, service, entry.migrations()).await?;
    anyhow::ensure!(
        consumer::request_replay(&db, number).await?,
        "no parked event {id}: `agriportal events parked` lists them"
    );
    let deadline = tokio::time::Instant::now() + wait;
    let outcome = loop {
        match consumer::parked_one(&db, number).await? {
            None => break ReplayOutcome::Replayed,
            Some(row) if row.replay_requested_at_ms.is_none() => {
                break ReplayOutcome::FailedAgain(row.reason)
            }
            Some(_) if tokio::time::Instant::now() >= deadline => break ReplayOutcome::Pending,
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    db.close().await;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_overlap_only_where_paths_could_meet() {
        assert!(overlaps("/api", "/api"));
        assert!(overlaps("/api", "/api/v2"));
        assert!(!overlaps("/api", "/apix"));
        assert!(!overlaps("/", "/api"));
        assert!(overlaps("/", "/"));
    }

    #[test]
    fn outages_are_retried_and_configuration_errors_are_not() {
        let bus_down = anyhow::Error::new(BusError::Unavailable("connection refused".into()))
            .context("connecting to NATS");
        assert!(is_outage(&bus_down));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let db_down = anyhow::Error::new(sqlx::Error::Io(refused)).context("opening the store");
        assert!(is_outage(&db_down));
        assert!(is_outage(&anyhow::Error::new(sqlx::Error::PoolTimedOut)));

        let refused_by_bus = anyhow::Error::new(BusError::Other("bad stream config".into()));
        assert!(!is_outage(&refused_by_bus));
        let bad_url = anyhow::Error::new(sqlx::Error::Configuration("bad URL".into()));
        assert!(!is_outage(&bad_url));
        assert!(!is_outage(&anyhow::anyhow!(
            "token public key `k1`: not 32 bytes in base64"
        )));
    }

    #[tokio::test]
    async fn startup_retries_outages_until_up_and_stops_on_shutdown() {
        let shutdown = CancellationToken::new();
        let mut attempts = 0;
        let started = until_started("test", true, &shutdown, || {
            attempts += 1;
            let n = attempts;
            async move {
                if n < 3 {
                    Err(anyhow::Error::new(BusError::Unavailable("down".into())))
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .expect("started");
        assert_eq!(started, Some(3));

        // A step that mapped its failure to the platform's UNAVAILABLE (a store read, say)
        // is an outage too; a broken pipe while connecting is one as well.
        let mut attempts = 0;
        let started = until_started("test", true, &shutdown, || {
            attempts += 1;
            let n = attempts;
            async move {
                match n {
                    1 => Err(anyhow::Error::new(crate::Error::unavailable("db down"))),
                    2 => Err(anyhow::Error::new(sqlx::Error::Io(std::io::Error::from(
                        std::io::ErrorKind::BrokenPipe,
                    )))),
                    _ => Ok(n),
                }
            }
        })
        .await
        .expect("started");
        assert_eq!(started, Some(3));
        let failed = until_started("test", true, &shutdown, || async {
            Err::<(), _>(anyhow::Error::new(crate::Error::invalid("bad setting")))
        })
        .await;
        assert!(
            failed.is_err(),
            "a platform error other than UNAVAILABLE is returned at once"
        );

        let failed = until_started("test", true, &shutdown, || async {
            Err::<(), _>(anyhow::anyhow!("wrong password"))
        })
        .await;
        assert!(failed.is_err(), "a configuration error is returned at once");

        shutdown.cancel();
        let stopped = until_started("test", true, &shutdown, || async {
            Err::<(), _>(anyhow::Error::new(BusError::Unavailable("down".into())))
        })
        .await
        .expect("no error");
        assert_eq!(stopped, None);
    }
}
