//! TLS of the public listeners (gRPC and HTTP), with the certificate reloaded when its files
//! change, and the trust of the clients that call other services over `https://`.
//!
//! The listeners accept TLS themselves (tokio-rustls, ring) rather than through tonic's
//! `ServerTlsConfig`, which cannot change its certificate: one [`ServerTls`] holds the current
//! certificate and key behind a [`ResolvesServerCert`], both listeners' acceptors resolve
//! through it, and [`ServerTls::watch`] swaps in a renewed pair without restarting anything.
//! New connections get the new certificate; open ones keep theirs until they close (the gRPC
//! connection age bounds that). The files are polled (their bytes hashed) rather than
//! watched by inotify: Kubernetes updates a mounted secret by swapping a symlink, which
//! polling sees whatever the mount does, and a pair read at once from two files cannot mix
//! an old certificate with a new key for longer than one poll.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::metrics::Counter;

/// ALPN of the gRPC listener: HTTP/2 only, as gRPC requires.
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];

/// ALPN of the public HTTP listener: HTTP/1.1, the protocol its server (with the header-read
/// timeout) speaks.
pub const ALPN_HTTP: &[&[u8]] = &[b"http/1.1"];

/// Where the certificate and key are, and the timings (see the `--tls-*` settings of
/// [`crate::Config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Time between two looks at the files.
    pub reload_interval: Duration,
    /// Longest a client may take to finish its handshake.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once, over every listener of this [`ServerTls`]; a
    /// connection beyond them is closed before its handshake starts.
    pub max_handshakes: usize,
}

/// The ring provider, the one every TLS of this process uses (no process-wide default is
/// installed, so nothing depends on which crate would install it first).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate served now; the resolver of every acceptor made from one [`ServerTls`].
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl Current {
    fn get(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = key;
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// What a look at the files found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what was last seen.
    Unchanged,
    /// A new, valid pair: served from now on.
    Reloaded,
    /// A changed pair that cannot be served (the reason); the previous one is still served.
    Refused(String),
}

/// The listeners' TLS: the current certificate, and how to reload it.
#[derive(Clone, Debug)]
pub struct ServerTls {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    /// Digest of the files' bytes last looked at (valid or not), so a bad pair is reported
    /// once, not at every poll.
    seen: Arc<Mutex<[u8; 32]>>,
    /// One permit per handshake in progress, shared by every clone (both listeners): without
    /// it, stalled handshakes were bounded only by their timeout, so a client opening
    /// connections faster than they time out held ever more sockets and handshake state.
    handshakes: Arc<Semaphore>,
}

impl ServerTls {
    /// Loads the pair of `settings`; an error names the file and what is wrong with it.
    pub fn load(settings: TlsSettings) -> anyhow::Result<Self> {
        let provider = provider();
        let (cert, key) = read_pair(&settings)?;
        let certified = certified_key(&settings, &cert, &key, &provider)?;
        Ok(ServerTls {
            provider,
            current: Arc::new(Current(RwLock::new(Arc::new(certified)))),
            seen: Arc::new(Mutex::new(digest(&cert, &key))),
            handshakes: Arc::new(Semaphore::new(settings.max_handshakes)),
            settings,
        })
    }

    /// An acceptor offering `alpn` (see [`ALPN_GRPC`], [`ALPN_HTTP`]) that serves whatever
    /// certificate is current at each handshake.
    pub fn acceptor(&self, alpn: &[&[u8]]) -> anyhow::Result<TlsAcceptor> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("the TLS provider supports no safe protocol version")?
            .with_no_client_auth()
            .with_cert_resolver(self.current.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The certificate chain served now (DER, leaf first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.get().cert.clone()
    }

    /// The settings it was loaded with.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Looks at the files once: a changed, valid pair becomes the served one; a changed pair
    /// that is not valid (unreadable, not PEM, key of another certificate) is refused and the
    /// previous one kept.
    pub fn reload(&self) -> Reload {
        let (cert, key) = match read_pair(&self.settings) {
            Ok(pair) => pair,
            // A file missing or unreadable: looked at again next time, reported once per error
            // (its text stands for the content, so a lasting problem is not logged every poll).
            Err(err) => {
                let reason = format!("{err:#}");
                let now = Sha256::digest(reason.as_bytes()).into();
                return self.refused(now, reason);
            }
        };
        let now = digest(&cert, &key);
        if *self.seen.lock().unwrap_or_else(|p| p.into_inner()) == now {
            return Reload::Unchanged;
        }
        match certified_key(&self.settings, &cert, &key, &self.provider) {
            Ok(certified) => {
                self.current.set(Arc::new(certified));
                *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = now;
                reloads().inc();
                tracing::info!(
                    cert = %self.settings.cert.display(),
                    fingerprint = %fingerprint(&self.chain()),
                    "TLS certificate reloaded; new connections get it"
                );
                Reload::Reloaded
            }
            Err(err) => self.refused(now, format!("{err:#}")),
        }
    }

    fn refused(&self, now: [u8; 32], reason: String) -> Reload {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen != now {
            reload_failures().inc();
            tracing::warn!(
                cert = %self.settings.cert.display(),
                key = %self.settings.key.display(),
                error = %reason,
                "the TLS certificate files changed but cannot be served; still serving the previous certificate"
            );
            *seen = now;
        }
        Reload::Refused(reason)
    }

    /// Looks at the files every reload interval until `shutdown`.
    pub async fn watch(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.reload_interval) => {}
                _ = shutdown.cancelled() => return,
            }
            // Reading two small files and hashing them: quick enough for the runtime's thread.
            self.reload();
        }
    }

    /// Finishes the TLS handshake of `tcp` within the handshake timeout, or `None` (logged
    /// and counted) when the client fails it or takes too long: a client that never finishes
    /// its handshake holds its socket no longer than that. When `--tls-max-handshakes` are
    /// already in progress, `tcp` is closed at once (dropped) without starting one.
    pub async fn handshake(
        &self,
        acceptor: &TlsAcceptor,
        tcp: TcpStream,
    ) -> Option<TlsStream<TcpStream>> {
        let peer = tcp.peer_addr().ok();
        // Taken before the handshake starts and held until it ends (done, failed or timed
        // out); never waited for: a queue of connections would hold the very sockets the
        // bound is there to limit.
        let Ok(_permit) = self.handshakes.try_acquire() else {
            handshakes_refused().inc();
            tracing::debug!(
                ?peer,
                max = self.settings.max_handshakes,
                "TLS handshakes at their limit (--tls-max-handshakes): connection closed"
            );
            return None;
        };
        match tokio::time::timeout(self.settings.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(err)) => {
                handshake_failures().inc();
                tracing::debug!(error = %err, ?peer, "TLS handshake failed");
                None
            }
            Err(_) => {
                handshake_failures().inc();
                tracing::debug!(?peer, timeout = ?self.settings.handshake_timeout, "TLS handshake timed out");
                None
            }
        }
    }

    /// The TLS connections of `listener`, for tonic's `serve_with_incoming_shutdown`:
    /// connections are accepted until `shutdown` and each handshake runs in its own task, so a
    /// client that stalls its handshake never delays another's.
    pub fn incoming(
        &self,
        listener: TcpListener,
        alpn: &[&[u8]],
        shutdown: CancellationToken,
    ) -> anyhow::Result<tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>>>
    {
        let acceptor = self.acceptor(alpn)?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(err) => {
                            // Out of file descriptors, typically: pause rather than spin.
                            tracing::warn!(error = %err, "could not accept a gRPC connection");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = shutdown.cancelled() => return,
                };
                // Nagle's algorithm off, as on the plain listener (see `grpc::incoming`).
                if let Err(err) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %err, "could not turn Nagle's algorithm off");
                }
                let (tx, tls, acceptor) = (tx.clone(), tls.clone(), acceptor.clone());
                tokio::spawn(async move {
                    if let Some(stream) = tls.handshake(&acceptor, tcp).await {
                        // The server stopped taking connections: this one is dropped.
                        let _ = tx.send(Ok(stream)).await;
                    }
                });
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// Reads both files (their bytes, hashed and parsed as read: one look at each).
fn read_pair(settings: &TlsSettings) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path)
            .with_context(|| format!("reading the TLS {what} {} (--tls-{what})", path.display()))
    };
    Ok((read(&settings.cert, "cert")?, read(&settings.key, "key")?))
}

fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update((cert.len() as u64).to_be_bytes());
    hash.update(cert);
    hash.update(key);
    hash.finalize().into()
}

/// The pair parsed and checked: at least one certificate, a key rustls can sign with, and the
/// key the leaf certificate's.
fn certified_key(
    settings: &TlsSettings,
    cert: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = certificates(cert).with_context(|| {
        format!(
            "{} (--tls-cert) is not a PEM certificate chain",
            settings.cert.display()
        )
    })?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|err| {
        anyhow::anyhow!(
            "{} (--tls-key) holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {err}",
            settings.key.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|err| {
        anyhow::anyhow!(
            "the key {} does not go with the certificate {}: {err}",
            settings.key.display(),
            settings.cert.display()
        )
    })
}

/// Every certificate of a PEM bundle; an error when it holds none or a malformed one.
pub fn certificates(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "no `-----BEGIN CERTIFICATE-----` block in it"
    );
    Ok(chain)
}

/// SHA-256 of the leaf certificate, in hex: how logs name a certificate.
pub fn fingerprint(chain: &[CertificateDer<'_>]) -> String {
    chain
        .first()
        .map(|leaf| {
            Sha256::digest(leaf.as_ref())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .unwrap_or_default()
}

/// What a client of another service trusts on `https://` addresses, and the name it checks.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// PEM bundle of the trusted CAs.
    pub ca_pem: Vec<u8>,
    /// Name the server's certificate must hold, when not the URL's host.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// From the configuration: `--tls-ca`, else the certificates of `--tls-cert`; `None` when
    /// neither is set (then `https://` peers cannot be called).
    pub fn from_config(config: &crate::Config) -> anyhow::Result<Option<ClientTls>> {
        let (path, flag) = match (&config.tls_ca, &config.tls_cert) {
            (Some(ca), _) => (ca, "--tls-ca"),
            (None, Some(cert)) => (cert, "--tls-cert"),
            (None, None) => return Ok(None),
        };
        let ca_pem = std::fs::read(path)
            .with_context(|| format!("reading the CA bundle {} ({flag})", path.display()))?;
        certificates(&ca_pem).with_context(|| {
            format!(
                "{} ({flag}) is not a PEM certificate bundle",
                path.display()
            )
        })?;
        Ok(Some(ClientTls {
            ca_pem,
            server_name: config.tls_server_name.clone(),
        }))
    }

    /// tonic's client configuration: these CAs only, this name, HTTP/2 by ALPN.
    pub fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem));
        match &self.server_name {
            Some(name) => config.domain_name(name.clone()),
            None => config,
        }
    }
}

fn reloads() -> &'static Counter {
    static C: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        crate::metrics::counter(
            "agriportal_tls_reloads",
            "times a renewed TLS certificate replaced the served one",
        )
    })
}

fn reload_failures() -> &'static Counter {
    static C: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        crate::metrics::counter(
            "agriportal_tls_reload_failures",
            "times the TLS certificate files changed into a pair that cannot be served (the previous one kept)",
        )
    })
}

fn handshake_failures() -> &'static Counter {
    static C: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        crate::metrics::counter(
            "agriportal_tls_handshake_failures",
            "TLS handshakes that failed or did not finish within --tls-handshake-timeout-seconds",
        )
    })
}

fn handshakes_refused() -> &'static Counter {
    static C: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        crate::metrics::counter(
            "agriportal_tls_handshakes_refused",
            "connections closed before their TLS handshake because --tls-max-handshakes were in progress",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn settings(dir: &Path) -> TlsSettings {
        TlsSettings {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            reload_interval: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
            max_handshakes: 8,
        }
    }

    fn write(dir: &Path, (cert, key): &(String, String)) {
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
    }

    #[test]
    fn a_bad_pair_is_refused_naming_the_file_and_the_old_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = pair("first.test");
        write(dir.path(), &first);
        let tls = ServerTls::load(settings(dir.path())).unwrap();
        let served = fingerprint(&tls.chain());
        assert_eq!(tls.reload(), Reload::Unchanged);

        // The key of another certificate.
        let other = pair("other.test");
        std::fs::write(dir.path().join("tls.key"), &other.1).unwrap();
        let Reload::Refused(reason) = tls.reload() else {
            panic!("a mismatched key was accepted")
        };
        assert!(reason.contains("does not go with"), "{reason}");
        assert_eq!(fingerprint(&tls.chain()), served, "the old pair is kept");

        // Not PEM at all.
        std::fs::write(dir.path().join("tls.crt"), "garbage").unwrap();
        let Reload::Refused(reason) = tls.reload() else {
            panic!("garbage was accepted")
        };
        assert!(
            reason.contains("tls.crt") && reason.contains("--tls-cert"),
            "{reason}"
        );

        // A file gone for a while (a secret being rewritten): refused, the old pair kept.
        std::fs::remove_file(dir.path().join("tls.key")).unwrap();
        let Reload::Refused(reason) = tls.reload() else {
            panic!("a missing key was accepted")
        };
        assert!(reason.contains("--tls-key"), "{reason}");
        assert_eq!(fingerprint(&tls.chain()), served, "the old pair is kept");

        // A good new pair is served.
        write(dir.path(), &other);
        assert_eq!(tls.reload(), Reload::Reloaded);
        assert_ne!(fingerprint(&tls.chain()), served);
        assert_eq!(tls.reload(), Reload::Unchanged);

        // And a bad first pair is an error at start, naming the file.
        std::fs::write(dir.path().join("tls.key"), "no key here").unwrap();
        let err = ServerTls::load(settings(dir.path())).unwrap_err();
        assert!(format!("{err:#}").contains("--tls-key"), "{err:#}");
    }

    #[test]
    fn tls_needs_both_files() {
        let mut config = crate::Config::embedded("unused");
        assert_eq!(config.tls().unwrap(), None);
        config.tls_cert = Some("/tls/tls.crt".into());
        let err = config.tls().unwrap_err().to_string();
        assert!(err.contains("--tls-key"), "{err}");
        config.tls_key = Some("/tls/tls.key".into());
        assert!(config.tls().unwrap().is_some());
        config.tls_cert = None;
        let err = config.tls().unwrap_err().to_string();
        assert!(err.contains("--tls-cert"), "{err}");
    }
}
