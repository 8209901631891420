//! What every service is started with: configuration, the bus, the authenticator, and the
//! shutdown signal with the tracker of background tasks that must finish before exit.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, Keys};
use crate::bus::{Bus, InProcessBus, JetStreamBus};
use crate::config::Config;
use crate::keys::Signer;
use crate::storage::{platform_database, Database};

/// Shared handles for the services of one process.
#[derive(Clone)]
pub struct Context {
    /// The configuration.
    pub config: Arc<Config>,
    /// The event bus (JetStream when `NATS_URL` is set, else in-process).
    pub bus: Arc<dyn Bus>,
    /// Token verification and revocation.
    pub auth: Arc<Authenticator>,
    /// Cancelled when the process starts shutting down.
    pub shutdown: CancellationToken,
    /// Background tasks (relays, consumers) awaited on shutdown.
    pub tasks: TaskTracker,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Connects the bus and the platform store and loads the token keys.
    pub async fn open(config: Config) -> anyhow::Result<Context> {
        let bus: Arc<dyn Bus> = match &config.nats_url {
            Some(url) => JetStreamBus::connect_with(
                url,
                &config.nats,
                &config.bus_prefix,
                config.bus_replicas,
                config.bus_max_bytes,
            )
            .await
            .with_context(|| format!("connecting to NATS at {url}"))?,
            None => InProcessBus::open(&config.data_dir.join("bus.sqlite"), &config.bus_prefix)
                .await
                .context("opening the in-process bus")?,
        };
        Self::with_bus(config, bus).await
    }

    /// Like [`Context::open`] with a given bus (tests share one in-process bus this way).
    pub async fn with_bus(config: Config, bus: Arc<dyn Bus>) -> anyhow::Result<Context> {
        let platform = platform_database(&config)
            .await
            .context("opening the platform store")?;
        let auth = Authenticator::new(token_keys(&config)?, Some(platform))?;
        Ok(Context {
            config: Arc::new(config),
            bus,
            auth,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    /// Connects the store of a service (its schema or SQLite file).
    pub async fn database(&self, schema: &str) -> anyhow::Result<Database> {
        Database::connect(&self.config, schema)
            .await
            .with_context(|| format!("opening the {schema} store"))
    }

    /// Signals shutdown and waits for background tasks to finish.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The token keys of this process. Public keys from `--token-public-keys`; the private key
/// from `--token-private-key-file`, or (embedded mode only, nothing configured) generated once
/// into `<data-dir>/token_key` so `token mint` and `up` agree without any setup. With
/// `DATABASE_URL` every replica must verify with the same keys, so they must be configured.
pub fn token_keys(config: &Config) -> anyhow::Result<Keys> {
    let mut keys = Keys {
        signer: None,
        public: config.token_public_keys.clone(),
    };
    if let Some(path) = &config.token_private_key_file {
        keys.signer = Some(Signer::read_file(path)?);
    } else if config.database_url.is_none() && keys.public.is_empty() {
        keys.signer = Some(embedded_key(&config.data_dir)?);
    }
    anyhow::ensure!(
        keys.signer.is_some() || !keys.public.is_empty(),
        "set AGRIPORTAL_TOKEN_PUBLIC_KEYS (`<kid>:<base64>`, from `agriportal token keygen`): \
         with DATABASE_URL every replica must verify tokens with the same keys"
    );
    Ok(keys)
}

/// An authenticator with this process's keys and no revocation store (tools minting tokens).
pub fn token_authenticator(config: &Config) -> anyhow::Result<Arc<Authenticator>> {
    Ok(Authenticator::new(token_keys(config)?, None)?)
}

/// The embedded mode's key: read, or generated and written owner-only and atomically.
fn embedded_key(data_dir: &Path) -> anyhow::Result<Signer> {
    let path = data_dir.join("token_key");
    if !path.exists() {
        // Another process may write one first: theirs is kept and read back below.
        Signer::generate(&crate::keys::new_kid())?.write_new_file(&path)?;
    }
    Signer::read_file(&path)
}
