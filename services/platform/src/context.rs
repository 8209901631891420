//! What every service is started with: configuration, the bus, the authenticator, and the
//! shutdown signal with the tracker of background tasks that must finish before exit.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rand::RngCore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::bus::{Bus, InProcessBus, JetStreamBus};
use crate::config::Config;
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
    /// Connects the bus and the platform store and loads the token secret.
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
        let secret = token_secret(&config)?;
        let auth = Authenticator::new(&secret, Some(platform))?;
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

/// The token-signing secret: from configuration, or (embedded mode only) generated once into
/// `<data-dir>/token_secret` so `token mint` and `up` agree without any setup.
pub fn token_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.token_secret {
        anyhow::ensure!(
            secret.len() >= 32,
            "AGRIPORTAL_TOKEN_SECRET must be at least 32 bytes long"
        );
        return Ok(secret.as_bytes().to_vec());
    }
    anyhow::ensure!(
        config.database_url.is_none(),
        "set AGRIPORTAL_TOKEN_SECRET (at least 32 bytes): with DATABASE_URL every replica must share one signing secret"
    );
    let path = config.data_dir.join("token_secret");
    match std::fs::read_to_string(&path) {
        Ok(hex) => return Ok(hex.trim().as_bytes().to_vec()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &hex)?;
    // Read back: if another process won the race to create it, its secret is the one in use.
    Ok(std::fs::read_to_string(&path)?.trim().as_bytes().to_vec())
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(contents.as_bytes())?;
            file.sync_all()?;
            Ok(())
        }
        // Another process created it first: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err).with_context(|| format!("writing {}", path.display())),
    }
}
