//! The command line: one binary, many roles (`up`, `serve --target`, `migrate`, `targets`,
//! `events`, `token`, `config`, `health`, `bench`). Every service's own settings are
//! flattened in from the registry ([`crate::app::registry`]).

use std::net::SocketAddr;
use std::time::Duration;

use agriportal_platform::auth::{max_ttl, unverified_claims, Authenticator, Role};
use agriportal_platform::context::token_keys;
use agriportal_platform::keys::{new_kid, Signer};
use agriportal_platform::kit::{self, Listeners, ReplayOutcome, Settings};
use agriportal_platform::storage::platform_database;
use agriportal_platform::{telemetry, Config, Registry};
use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::{bench, demo};

/// agriportal: the national portal of the plan to bring farming households onto
/// e-commerce marketplaces (Decision 1034/QĐ-BTTTT).
#[derive(Parser, Debug)]
#[command(name = "agriportal", version, about)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub config: Config,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run every service in one process (embedded SQLite and in-process bus by default).
    Up {
        /// Also run a simulator in which both partners push realistic data for all 34 provinces.
        #[arg(long)]
        demo: bool,
    },
    /// Run one service, on PostgreSQL (DATABASE_URL) and NATS JetStream (NATS_URL).
    Serve {
        /// The service to run.
        #[arg(long)]
        target: String,
    },
    /// Apply the stores' migrations (every service's, or one target's) and exit.
    Migrate {
        /// Only this target's store (and the platform's).
        #[arg(long)]
        target: Option<String>,
    },
    /// Print every target as JSON: its gRPC services, HTTP prefix, ports, events, the targets
    /// it calls, its flags and environment variables, and the settings all share.
    Targets,
    /// Events a consumer parked because it could not decode or apply them.
    Events {
        /// List or replay.
        #[command(subcommand)]
        action: EventsAction,
    },
    /// Mint or revoke bearer tokens.
    Token {
        /// Mint or revoke.
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Print the effective configuration as JSON (secrets left out).
    Config,
    /// Exit 0 when the gRPC server at --grpc reports SERVING (for container health checks).
    Health {
        /// A target name (all its gRPC services must be SERVING), a gRPC service name, or
        /// empty for the whole server.
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Benchmarks.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: bench::Which,
    },
}

/// Parked-event commands.
#[derive(Subcommand, Debug)]
pub enum EventsAction {
    /// List parked events as JSON lines: `<service>:<id>`, consumer, subject, event id, reason.
    Parked {
        /// Only this target's.
        #[arg(long)]
        target: Option<String>,
    },
    /// Ask the running service to apply a parked event again (once its cause is fixed), and
    /// wait for the outcome.
    Replay {
        /// `<service>:<id>`, as `events parked` prints it.
        id: String,
        /// How long to wait for the running consumer to pick the request up.
        #[arg(long, default_value_t = 30)]
        wait_seconds: u64,
    },
}

/// Token commands.
#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Print a new signed token, alone on standard output (its id and expiry go to standard
    /// error). Needs the private key (`--token-private-key-file`, or the embedded mode's).
    Mint {
        /// Mint a token for this partner marketplace.
        #[arg(long, value_parser = ["postmart", "voso"], conflicts_with_all = ["role", "service"])]
        partner: Option<String>,
        /// Mint a token for a role other than partner.
        #[arg(long, value_parser = ["admin", "province"], conflicts_with = "service")]
        role: Option<String>,
        /// The province (2025 code) of a `province` token.
        #[arg(long, required_if_eq("role", "province"))]
        province: Option<String>,
        /// Mint a service's own credential (`gateway`), for the service named by `--audience`.
        #[arg(long, requires = "audience")]
        service: Option<String>,
        /// The service a `--service` token is for (`marketplace`).
        #[arg(long, requires = "service")]
        audience: Option<String>,
        /// Days until the token expires; at most the role's cap (partner 366, province 90,
        /// service 90, admin 1). Default: the cap, or 365 days for a partner.
        #[arg(long, visible_alias = "days")]
        ttl_days: Option<u64>,
    },
    /// Revoke a token, by its id or its whole text (then its expiry is kept, and the
    /// revocation pruned once the token expired); it stops working within seconds, also in
    /// running services.
    Revoke {
        /// The token id printed by `token mint`, or the token itself.
        id: String,
    },
    /// Make a new signing key pair: the private key goes to `--out` (owner-only, written
    /// atomically, never replaced), the public key line (`<kid>:<base64>`) to standard output,
    /// for every service's AGRIPORTAL_TOKEN_PUBLIC_KEYS.
    Keygen {
        /// The file to write the private key to.
        #[arg(long)]
        out: std::path::PathBuf,
        /// The key id (default `k<yyyymmdd>-<random>`).
        #[arg(long)]
        kid: Option<String>,
    },
}

/// Parses the command line (with every registered service's settings) and runs it.
pub async fn main() -> anyhow::Result<()> {
    let registry = app::registry();
    let matches = registry.augment(Cli::command()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let settings = registry.settings(cli.config.clone(), &matches)?;
    run(&registry, cli, settings).await
}

/// Runs a parsed command line.
pub async fn run(registry: &Registry, cli: Cli, settings: Settings) -> anyhow::Result<()> {
    let config = cli.config;
    match cli.command {
        Command::Up { demo } => {
            let guard = telemetry::init(&config, "agriportal")?;
            let shutdown = CancellationToken::new();
            let (grpc, http, admin) = bind(&config).await?;
            let grpc_addr = grpc.local_addr()?;
            let http_addr = http.local_addr()?;
            let admin_addr = admin.local_addr()?;
            tracing::info!(%grpc_addr, %http_addr, %admin_addr, data_dir = %config.data_dir.display(),
                database = if config.database_url.is_some() { "postgresql" } else { "sqlite" },
                bus = if config.nats_url.is_some() { "jetstream" } else { "in-process" },
                "agriportal up: dashboard at http://{http_addr}/");
            tokio::spawn(stop_on_signal(shutdown.clone()));
            if demo {
                demo::spawn(config.clone(), grpc_addr, shutdown.clone())?;
            }
            let listeners = Listeners { grpc, http, admin };
            let result = kit::up(registry, settings, listeners, shutdown).await;
            guard.shutdown();
            result
        }
        Command::Serve { target } => {
            kit::check_distributed(&config)?;
            let guard = telemetry::init(&config, &format!("agriportal-{target}"))?;
            let shutdown = CancellationToken::new();
            let (grpc, http, admin) = bind(&config).await?;
            tracing::info!(%target, grpc = %grpc.local_addr()?, http = %http.local_addr()?,
                admin = %admin.local_addr()?, "serving");
            tokio::spawn(stop_on_signal(shutdown.clone()));
            let listeners = Listeners { grpc, http, admin };
            let result = kit::serve(registry, &target, settings, listeners, shutdown).await;
            guard.shutdown();
            result
        }
        Command::Migrate { target } => {
            for store in kit::migrate(registry, &config, target.as_deref()).await? {
                eprintln!("migrated {store}");
            }
            Ok(())
        }
        Command::Targets => {
            let targets = kit::targets(registry, &config);
            println!("{}", serde_json::to_string_pretty(&targets)?);
            Ok(())
        }
        Command::Events { action } => events(registry, &config, action).await,
        Command::Token { action } => token(registry, &config, action).await,
        Command::Config => {
            println!("{}", serde_json::to_string_pretty(&settings.to_json())?);
            Ok(())
        }
        Command::Health { service } => health(registry, &config, config.grpc_addr, service).await,
        Command::Bench { which } => bench::run(settings, which).await,
    }
}

async fn events(registry: &Registry, config: &Config, action: EventsAction) -> anyhow::Result<()> {
    match action {
        EventsAction::Parked { target } => {
            let parked = kit::parked(registry, config, target.as_deref()).await?;
            for event in &parked {
                let mut line = serde_json::to_value(event)?;
                if let Some(object) = line.as_object_mut() {
                    object.insert(
                        "id".into(),
                        format!("{}:{}", event.service, event.row.id).into(),
                    );
                }
                println!("{line}");
            }
            eprintln!("{} parked event(s)", parked.len());
            Ok(())
        }
        EventsAction::Replay { id, wait_seconds } => {
            let wait = Duration::from_secs(wait_seconds);
            match kit::replay(registry, config, &id, wait).await? {
                ReplayOutcome::Replayed => {
                    eprintln!("replayed {id}: applied, and no longer parked");
                    Ok(())
                }
                ReplayOutcome::FailedAgain(reason) => {
                    anyhow::bail!("{id} failed again and stays parked: {reason}")
                }
                ReplayOutcome::Pending => anyhow::bail!(
                    "{id}: no running consumer picked the request up within {wait_seconds} s (is the service running?); \
                     it stays asked for and is applied when the service next looks"
                ),
            }
        }
    }
}

async fn bind(config: &Config) -> anyhow::Result<(TcpListener, TcpListener, TcpListener)> {
    let grpc = TcpListener::bind(config.grpc_addr).await.with_context(|| {
        format!(
            "cannot listen for gRPC on {} (change it with --grpc)",
            config.grpc_addr
        )
    })?;
    let http = TcpListener::bind(config.http_addr).await.with_context(|| {
        format!(
            "cannot listen for HTTP on {} (change it with --http)",
            config.http_addr
        )
    })?;
    let admin = TcpListener::bind(config.admin_http_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen for admin HTTP on {} (change it with --admin-http)",
                config.admin_http_addr
            )
        })?;
    Ok((grpc, http, admin))
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: draining, then flushing telemetry");
    shutdown.cancel();
}

async fn token(registry: &Registry, config: &Config, action: TokenAction) -> anyhow::Result<()> {
    match action {
        TokenAction::Mint {
            partner,
            role,
            province,
            service,
            audience,
            ttl_days,
        } => {
            let role = match (partner, role.as_deref(), service.as_deref()) {
                (Some(partner), _, _) => Role::Partner { partner },
                (None, Some("admin"), _) => Role::Admin,
                (None, Some("province"), _) => {
                    Role::Province { province: province.context("--role province needs --province <code>")? }
                }
                (None, None, Some(service)) => Role::Service { service: service.into() },
                _ => anyhow::bail!("say whom the token is for: --partner postmart|voso, --role admin, --role province --province <code>, or --service <name> --audience <target>"),
            };
            let cap_days = max_ttl(&role).as_secs() / 86_400;
            let days = ttl_days.unwrap_or(cap_days.min(365));
            let ttl = Duration::from_secs(days.saturating_mul(86_400));
            let auth = Authenticator::new(token_keys(config)?, None)?;
            let (token, claims) = match (&role, audience) {
                (Role::Service { service }, Some(audience)) => {
                    check_service_call(registry, service, &audience)?;
                    auth.mint_service(service, &audience, ttl)?
                }
                _ => auth.mint(role, ttl)?,
            };
            println!("{token}");
            let expires = time::OffsetDateTime::from_unix_timestamp(claims.exp)
                .map(|t| t.date().to_string())
                .unwrap_or_default();
            eprintln!(
                "token id {} (revoke with `agriportal token revoke {}`), expires {expires}",
                claims.id, claims.id
            );
            Ok(())
        }
        TokenAction::Revoke { id } => {
            // The whole token gives its expiry; a bare id is kept for the longest lifetime.
            let (id, exp) = match unverified_claims(&id) {
                Ok(claims) => (claims.id, Some(claims.exp)),
                Err(_) => (id, None),
            };
            let auth =
                Authenticator::new(token_keys(config)?, Some(platform_database(config).await?))?;
            auth.revoke(&id, exp).await?;
            eprintln!("revoked token {id}");
            Ok(())
        }
        TokenAction::Keygen { out, kid } => {
            let signer = Signer::generate(&kid.unwrap_or_else(new_kid))?;
            anyhow::ensure!(
                signer.write_new_file(&out)?,
                "{} exists: keygen never replaces a key (choose another --out)",
                out.display()
            );
            println!("{}", signer.public());
            eprintln!(
                "private key {} written to {} (mode 0600); add the public line above to every \
                 service's AGRIPORTAL_TOKEN_PUBLIC_KEYS",
                signer.kid(),
                out.display()
            );
            Ok(())
        }
    }
}

/// A service token is minted only for a call the registry declares (`calls` of the caller's
/// descriptor), so a typo cannot make a credential no service would accept, nor one for a call
/// the design does not make.
fn check_service_call(registry: &Registry, service: &str, audience: &str) -> anyhow::Result<()> {
    let descriptors = registry.descriptors();
    let caller = descriptors
        .iter()
        .find(|d| d.name == service)
        .with_context(|| format!("no service named `{service}` (see `agriportal targets`)"))?;
    anyhow::ensure!(
        caller.calls.contains(&audience),
        "service `{service}` does not call `{audience}` (it calls: {})",
        caller.calls.join(", ")
    );
    Ok(())
}

async fn health(
    registry: &Registry,
    config: &Config,
    addr: SocketAddr,
    service: String,
) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    // A target name stands for all of its gRPC services.
    let names: Vec<String> = match registry.descriptors().iter().find(|d| d.name == service) {
        Some(descriptor) => descriptor.grpc.iter().map(|g| g.name.to_string()).collect(),
        None => vec![service],
    };
    // Over TLS when this configuration serves it, as the server does.
    let target = crate::client::Target::of(config, addr)?;
    let options = agriportal_platform::client::ClientOptions {
        connect_timeout: Duration::from_secs(3),
        deadline: Duration::from_secs(3),
    };
    let channel = target
        .channel_now(agriportal_platform::client::Credential::None, options)
        .await
        .with_context(|| format!("cannot reach {}", target.url))?;
    for name in names {
        let response = HealthClient::new(channel.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: name.clone(),
            })
            .await?
            .into_inner();
        anyhow::ensure!(
            response.status == ServingStatus::Serving as i32,
            "{addr} {name:?} is not serving"
        );
    }
    println!("SERVING");
    Ok(())
}
