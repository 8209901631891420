//! Processes the suite starts: the real `agriportal` binary (`serve --target …`, `up`) and the
//! test's own `nats-server`. Every one is owned by a guard that kills it (SIGKILL) and reaps it
//! on drop, so no exit path of a test — assertion, panic, early return — leaves one behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_agriportal");

/// Seed of the token key shared by the test and the processes it starts.
pub const KEY_SEED: [u8; 32] = [42; 32];

/// The suite's token key (id `faults`).
pub fn signer() -> agriportal_platform::keys::Signer {
    agriportal_platform::keys::Signer::from_seed("faults", &KEY_SEED).expect("key")
}

/// The environment giving a process the suite's private key, written (owner-only) into `dir`:
/// every process mints its own service credentials, as the embedded mode does.
pub fn token_env(dir: &Path) -> (String, String) {
    let path = dir.join("token_key");
    signer().write_new_file(&path).expect("write the token key");
    (
        "AGRIPORTAL_TOKEN_PRIVATE_KEY_FILE".to_string(),
        path.display().to_string(),
    )
}

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range. The processes started
/// here are restarted on their port, which stays free meanwhile: a port from the ephemeral
/// range could be taken in between by any outgoing connection on the machine, or handed to
/// another test that asks the kernel for a free port.
pub fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let low = ephemeral_low.saturating_sub(12_000).max(1_024);
    let span = ephemeral_low.saturating_sub(low).max(1);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
        ^ (u64::from(std::process::id()) << 20);
    let mut rng = crate::workload::Rng::new(seed);
    for _ in 0..200 {
        let Ok(port) = u16::try_from(low + rng.below(u64::from(span)) as u32) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Writes a line to the real standard error, which the test harness does not capture, so
/// progress and figures show without `--nocapture`.
pub fn say(line: impl AsRef<str>) {
    let mut err = std::io::stderr();
    let _ = err.write_all(format!("[faults] {}\n", line.as_ref()).as_bytes());
}

/// The last `lines` lines of a log file, for failure messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("({} unreadable)", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn log_file(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// A child process killed and reaped on drop.
struct Guard(Option<Child>);

impl Guard {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `agriportal` process (a `serve` target or `up`), restartable on the same ports, data
/// directory and environment.
pub struct Service {
    /// Name for messages (`marketplace`, `gateway`, `up`).
    pub name: &'static str,
    /// gRPC port.
    pub grpc: u16,
    /// HTTP port.
    pub http: u16,
    /// Admin HTTP port (`/readyz`, `/metrics`).
    pub admin: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Standard output and error of every run, appended.
    pub log: PathBuf,
    child: Guard,
    /// Times started.
    pub starts: u32,
    /// Times killed with SIGKILL.
    pub kills: u32,
}

impl Service {
    /// A service that runs `agriportal --grpc … --http … <args>` with `env` (and nothing of
    /// the test's own environment that the binary reads).
    pub fn new(
        name: &'static str,
        dir: &Path,
        args: &[&str],
        env: Vec<(String, String)>,
    ) -> Service {
        Service {
            name,
            grpc: free_port(),
            http: free_port(),
            admin: free_port(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env,
            log: dir.join(format!("{name}.log")),
            child: Guard(None),
            starts: 0,
            kills: 0,
        }
    }

    /// `127.0.0.1:<grpc>`.
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc)
    }

    /// `http://127.0.0.1:<http>`.
    pub fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// `http://127.0.0.1:<admin>`.
    pub fn admin_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin)
    }

    /// Starts the process (it must not be running).
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.0.is_none(), "{} is already running", self.name);
        let mut log = log_file(&self.log)?;
        writeln!(log, "---- start #{} ----", self.starts + 1)?;
        let mut command = Command::new(BIN);
        for var in [
            "DATABASE_URL",
            "NATS_URL",
            "AGRIPORTAL_TOKEN_PUBLIC_KEYS",
            "AGRIPORTAL_TOKEN_PRIVATE_KEY_FILE",
            "AGRIPORTAL_SERVICE_TOKEN_FILE",
            "AGRIPORTAL_DATA_DIR",
            "AGRIPORTAL_BUS_PREFIX",
            "AGRIPORTAL_GRPC_ADDR",
            "AGRIPORTAL_HTTP_ADDR",
            "AGRIPORTAL_ADMIN_HTTP",
            "AGRIPORTAL_MARKETPLACE_URL",
            "AGRIPORTAL_RECONCILE_INTERVAL_SECONDS",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            command.env_remove(var);
        }
        command
            .env("AGRIPORTAL_LOG", "warn")
            .env("AGRIPORTAL_DRAIN_SECONDS", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("--grpc")
            .arg(self.grpc_addr())
            .arg("--http")
            .arg(format!("127.0.0.1:{}", self.http))
            .arg("--admin-http")
            .arg(format!("127.0.0.1:{}", self.admin))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child.0 = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// `kill -9`, then reaps the process.
    pub fn kill9(&mut self) {
        if self.child.0.is_some() {
            self.child.kill();
            self.kills += 1;
        }
    }

    /// Fails when the process exited on its own (a crash the test did not cause).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.0.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.child.0 = None;
                bail!(
                    "{} exited on its own ({status}); its log ends with:\n{}",
                    self.name,
                    tail(&self.log, 30)
                );
            }
        }
        Ok(())
    }

    /// Waits until `/readyz` answers 200 (or fails after `limit`, or when the process exits).
    pub async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()?;
        let url = format!("{}/readyz", self.admin_base());
        loop {
            self.check_alive()?;
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(started.elapsed());
                }
            }
            if started.elapsed() > limit {
                bail!(
                    "{} not ready after {limit:?}; its log ends with:\n{}",
                    self.name,
                    tail(&self.log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Where the `nats-server` binary is: `AGRIPORTAL_TEST_NATS_SERVER`, `/usr/sbin/nats-server`,
/// or `nats-server` on the `PATH`.
pub fn nats_server_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("AGRIPORTAL_TEST_NATS_SERVER") {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    let fixed = PathBuf::from("/usr/sbin/nats-server");
    if fixed.exists() {
        return Some(fixed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.exists())
}

/// The test's own `nats-server`: its own port and store directory, JetStream on, restartable
/// on the same port and store.
pub struct NatsServer {
    binary: PathBuf,
    /// Client port.
    pub port: u16,
    store: PathBuf,
    log: PathBuf,
    child: Guard,
    /// Version line (`nats-server: v2.9.10`).
    pub version: String,
    /// Graceful stops (SIGTERM).
    pub stops: u32,
    /// Crashes (SIGKILL).
    pub kills: u32,
}

impl NatsServer {
    /// Starts a server with its store under `dir`.
    pub async fn start(binary: PathBuf, dir: &Path) -> anyhow::Result<NatsServer> {
        let version = Command::new(&binary)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let mut server = NatsServer {
            binary,
            port: free_port(),
            store: dir.join("nats-store"),
            log: dir.join("nats-server.log"),
            child: Guard(None),
            version,
            stops: 0,
            kills: 0,
        };
        server.run().await?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process again (after [`NatsServer::stop`]) and waits for JetStream.
    pub async fn run(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.0.is_none(), "nats-server already running");
        // Readiness must be this process's: another server on the port would answer too.
        let ready_before = std::fs::read_to_string(&self.log)
            .map(|s| s.matches("Server is ready").count())
            .unwrap_or(0);
        let log = log_file(&self.log)?;
        let child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child.0 = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.0.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child.0 = None;
                    bail!("nats-server exited ({status}): {}", tail(&self.log, 20));
                }
            }
            let ours = std::fs::read_to_string(&self.log)
                .map(|s| s.matches("Server is ready").count() > ready_before)
                .unwrap_or(false);
            if ours && jetstream_ready(&self.url()).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nats-server not ready: {}", tail(&self.log, 20));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server: SIGTERM and a clean exit when `graceful`, else `kill -9`.
    pub fn stop(&mut self, graceful: bool) {
        let Some(child) = self.child.0.as_mut() else {
            return;
        };
        if graceful {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child.0 = None;
                    self.stops += 1;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.child.kill();
        self.kills += 1;
    }
}

/// True when JetStream answers an account request.
async fn jetstream_ready(url: &str) -> bool {
    let attempt = async {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(1))
            .connect(url)
            .await
            .ok()?;
        // A raw account-info request: async-nats' typed one cannot parse NATS 2.9's answer.
        let reply = client.request("$JS.API.INFO", "".into()).await.ok()?;
        let body = String::from_utf8_lossy(&reply.payload).to_string();
        (body.contains("account_info_response") && !body.contains("\"error\"")).then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(_))
    )
}
