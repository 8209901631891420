//! The command line: one binary, many roles (`up`, `serve --target`, `migrate`, `token`,
//! `config`, `health`, `bench`).

use std::net::SocketAddr;
use std::time::Duration;

use agriportal_platform::auth::{Authenticator, Role};
use agriportal_platform::context::token_secret;
use agriportal_platform::storage::platform_database;
use agriportal_platform::{telemetry, Config};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{self, Target};
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
        #[arg(long, value_enum)]
        target: Target,
    },
    /// Apply every store's migrations and exit.
    Migrate,
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
        /// gRPC service name to check; empty for the whole server.
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

/// Token commands.
#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Print a new signed token, alone on standard output (its id and expiry go to standard error).
    Mint {
        /// Mint a token for this partner marketplace.
        #[arg(long, value_parser = ["postmart", "voso"], conflicts_with = "role")]
        partner: Option<String>,
        /// Mint a token for a role other than partner.
        #[arg(long, value_parser = ["admin", "province"])]
        role: Option<String>,
        /// The province (2025 code) of a `province` token.
        #[arg(long, required_if_eq("role", "province"))]
        province: Option<String>,
        /// Days until the token expires.
        #[arg(long, default_value_t = 365)]
        ttl_days: u64,
    },
    /// Revoke a token by id; it stops working within seconds, also in running services.
    Revoke {
        /// The token id printed by `token mint`.
        id: String,
    },
}

/// Parses the command line and runs it.
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    run(cli).await
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    match cli.command {
        Command::Up { demo } => {
            let guard = telemetry::init(&config, "agriportal")?;
            let shutdown = CancellationToken::new();
            let (grpc, http) = bind(&config).await?;
            let grpc_addr = grpc.local_addr()?;
            let http_addr = http.local_addr()?;
            tracing::info!(%grpc_addr, %http_addr, data_dir = %config.data_dir.display(),
                database = if config.database_url.is_some() { "postgresql" } else { "sqlite" },
                bus = if config.nats_url.is_some() { "jetstream" } else { "in-process" },
                "agriportal up: dashboard at http://{http_addr}/");
            tokio::spawn(stop_on_signal(shutdown.clone()));
            if demo {
                demo::spawn(config.clone(), grpc_addr, shutdown.clone())?;
            }
            let result = app::run_up(config, grpc, http, shutdown).await;
            guard.shutdown();
            result
        }
        Command::Serve { target } => {
            app::check_distributed(&config)?;
            let guard = telemetry::init(&config, &format!("agriportal-{target}"))?;
            let shutdown = CancellationToken::new();
            let (grpc, http) = bind(&config).await?;
            tracing::info!(%target, grpc = %grpc.local_addr()?, http = %http.local_addr()?, "serving");
            tokio::spawn(stop_on_signal(shutdown.clone()));
            let result = app::run_target(target, config, grpc, http, shutdown).await;
            guard.shutdown();
            result
        }
        Command::Migrate => {
            for store in app::migrate(&config).await? {
                eprintln!("migrated {store}");
            }
            Ok(())
        }
        Command::Token { action } => token(&config, action).await,
        Command::Config => {
            println!("{}", serde_json::to_string_pretty(&config)?);
            Ok(())
        }
        Command::Health { service } => health(config.grpc_addr, service).await,
        Command::Bench { which } => bench::run(config, which).await,
    }
}

async fn bind(config: &Config) -> anyhow::Result<(TcpListener, TcpListener)> {
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
    Ok((grpc, http))
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

async fn token(config: &Config, action: TokenAction) -> anyhow::Result<()> {
    match action {
        TokenAction::Mint {
            partner,
            role,
            province,
            ttl_days,
        } => {
            let role = match (partner, role.as_deref()) {
                (Some(partner), _) => Role::Partner { partner },
                (None, Some("admin")) => Role::Admin,
                (None, Some("province")) => {
                    Role::Province { province: province.context("--role province needs --province <code>")? }
                }
                _ => anyhow::bail!("say whom the token is for: --partner postmart|voso, --role admin, or --role province --province <code>"),
            };
            let auth = Authenticator::new(&token_secret(config)?, None)?;
            let (token, claims) =
                auth.mint(role, Duration::from_secs(ttl_days.saturating_mul(86_400)))?;
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
            let auth = Authenticator::new(
                &token_secret(config)?,
                Some(platform_database(config).await?),
            )?;
            auth.revoke(&id).await?;
            eprintln!("revoked token {id}");
            Ok(())
        }
    }
}

async fn health(addr: SocketAddr, service: String) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .timeout(Duration::from_secs(3));
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach {addr}"))?;
    let response = HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.clone(),
        })
        .await?
        .into_inner();
    anyhow::ensure!(
        response.status == ServingStatus::Serving as i32,
        "{addr} {service:?} is not serving"
    );
    println!("SERVING");
    Ok(())
}
