//! `spawn_app`: the whole system in-process on port 0, through the same entry point the
//! binary uses, with its own data directory or its own PostgreSQL database and bus prefix.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agriportal::client::{partner_client, PartnerClient};
use agriportal_platform::auth::{Authenticator, Role};
use agriportal_platform::bus::Bus;
use agriportal_platform::keys::Signer;
use agriportal_platform::kit::{self, Listeners, Settings};
use agriportal_platform::testing;
use agriportal_platform::Registry;
use agriportal_platform::{Config, Context};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Where the system keeps its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// SQLite files and the persisted in-process bus.
    Embedded,
    /// PostgreSQL (a fresh database) and NATS JetStream (a fresh prefix).
    Distributed,
}

/// A running system.
pub struct TestApp {
    pub config: Config,
    pub settings: Settings,
    pub registry: Registry,
    pub grpc: String,
    pub http: String,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics`.
    pub admin: String,
    pub ctx: Context,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Arc<tempfile::TempDir>,
}

/// Configuration for a fresh system, or `None` when the servers it needs are missing (the
/// testing module prints the skip, or fails under AGRIPORTAL_REQUIRE_SERVERS=1).
pub async fn config_for(mode: Mode, name: &str) -> Option<(Settings, Arc<tempfile::TempDir>)> {
    config_on(&agriportal::app::registry(), mode, name).await
}

/// [`config_for`] for the services of `registry`.
pub async fn config_on(
    registry: &Registry,
    mode: Mode,
    name: &str,
) -> Option<(Settings, Arc<tempfile::TempDir>)> {
    let dir = Arc::new(tempfile::tempdir().ok()?);
    let mut config = Config::embedded(dir.path());
    config.log = "warn".into();
    config.drain_seconds = 2;
    if mode == Mode::Distributed {
        config.database_url = Some(testing::fresh_postgres(name).await?);
        config.nats_url = Some(testing::nats_url(name).await?);
        config.bus_prefix = testing::unique_prefix(name);
        // As in a deployment: the key pair is configured, not generated into the data dir.
        let key = dir.path().join("test_token_key");
        Signer::generate("test").ok()?.write_new_file(&key).ok()?;
        config.token_private_key_file = Some(key);
    }
    let settings = registry.default_settings(config).expect("default settings");
    Some((settings, dir))
}

/// An authenticator with a key no system of the tests trusts (forged tokens).
pub fn foreign_authenticator() -> Arc<Authenticator> {
    let signer = Signer::from_seed("test", &[9u8; 32]).expect("key");
    Authenticator::signing(signer, None).expect("auth")
}

/// Starts the system for `mode`; `None` when skipped.
pub async fn spawn_app(mode: Mode, name: &str) -> Option<TestApp> {
    spawn_app_on(agriportal::app::registry(), mode, name).await
}

/// Starts the services of `registry` (the binary's, with a test's service added) through the
/// same assembly path as `up`.
pub async fn spawn_app_on(registry: Registry, mode: Mode, name: &str) -> Option<TestApp> {
    let (settings, dir) = config_on(&registry, mode, name).await?;
    Some(start_wrapped(registry, settings, dir, |bus| bus).await)
}

/// [`spawn_app`] with the settings changed by `tune` first (small limits, for example).
pub async fn spawn_app_with(
    mode: Mode,
    name: &str,
    tune: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    let (mut config, dir) = config_for(mode, name).await?;
    tune(&mut config);
    Some(start(config, dir).await)
}

/// [`spawn_app_with`], with the bus wrapped by `wrap` (a bus that loses messages, say).
pub async fn spawn_app_with_bus(
    mode: Mode,
    name: &str,
    tune: impl FnOnce(&mut Settings),
    wrap: impl FnOnce(Arc<dyn Bus>) -> Arc<dyn Bus>,
) -> Option<TestApp> {
    let (mut config, dir) = config_for(mode, name).await?;
    tune(&mut config);
    Some(start_wrapped(agriportal::app::registry(), config, dir, wrap).await)
}

async fn start(settings: Settings, dir: Arc<tempfile::TempDir>) -> TestApp {
    start_wrapped(agriportal::app::registry(), settings, dir, |bus| bus).await
}

async fn start_wrapped(
    registry: Registry,
    settings: Settings,
    dir: Arc<tempfile::TempDir>,
    wrap: impl FnOnce(Arc<dyn Bus>) -> Arc<dyn Bus>,
) -> TestApp {
    let config = settings.platform.clone();
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let grpc_addr = grpc.local_addr().expect("addr").to_string();
    let http_addr = http.local_addr().expect("addr").to_string();
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let admin_addr = admin.local_addr().expect("addr").to_string();
    let mut ctx = Context::open(config.clone()).await.expect("open context");
    ctx.bus = wrap(ctx.bus.clone());
    let handle = tokio::spawn({
        let (registry, settings, ctx) = (registry.clone(), settings.clone(), ctx.clone());
        async move {
            let listeners = Listeners { grpc, http, admin };
            kit::up_with_context(&registry, settings, ctx, listeners).await
        }
    });
    let app = TestApp {
        config,
        settings,
        registry,
        grpc: grpc_addr,
        http: http_addr,
        admin: admin_addr,
        ctx,
        handle: Some(handle),
        _dir: dir,
    };
    app.wait_ready().await;
    app
}

impl TestApp {
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("http://{}/readyz", self.admin)).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the system did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Mints a token with the system's key.
    pub fn token(&self, role: Role) -> String {
        let ttl = Duration::from_secs(3600);
        self.ctx.auth.mint(role, ttl).expect("mint").0
    }

    /// A partner's client.
    pub async fn partner(&self, partner: &str) -> PartnerClient {
        let token = self.token(Role::Partner {
            partner: partner.into(),
        });
        partner_client(&self.grpc, Some(&token))
            .await
            .expect("connect")
    }

    /// A client with an arbitrary token (or none).
    pub async fn client_with(&self, token: Option<&str>) -> PartnerClient {
        partner_client(&self.grpc, token).await.expect("connect")
    }

    /// GET a JSON document from the gateway.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::get(format!("http://{}{path}", self.http))
            .await
            .expect("http");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls `/api/v1/national` until `done` holds, or fails after 15 s showing the last body.
    pub async fn wait_national(&self, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, body) = self.get("/api/v1/national").await;
            if done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "national figures never matched; last: {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the system (drain, tasks) and returns its settings and data directory.
    pub async fn stop(mut self) -> (Settings, Arc<tempfile::TempDir>) {
        self.ctx.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("join").expect("run");
        }
        (self.settings.clone(), self._dir.clone())
    }

    /// Stops and starts again on the same state.
    pub async fn restart(self) -> TestApp {
        let registry = self.registry.clone();
        let (settings, dir) = self.stop().await;
        start_wrapped(registry, settings, dir, |bus| bus).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.ctx.shutdown.cancel();
    }
}

/// A free TCP port on 127.0.0.1 (for a child process that binds it itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process killed (and reaped) when dropped, so a failed assertion stops it too.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// SIGTERM, then a clean exit within 20 s.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Polls `probe` until `done` holds, or fails after 20 s showing the last value.
pub async fn eventually<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    what: &str,
    mut probe: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = probe().await;
        if done(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened; last: {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
