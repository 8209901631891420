//! gRPC clients of the services: one channel type for every caller (a service calling another,
//! the web front end, a partner's client in the demo, benchmark and tests), carrying the
//! caller's credential, the W3C trace context and a deadline on every call. What the peer
//! answers comes back as [`crate::Error`] through [`Error::from_status`], the one mapping.
//!
//! A service's own credential is in one place, [`Credential::Service`]: a token of role
//! `service` whose audience is the one target called, never an admin token. A process holding
//! the private key (embedded `up`) mints its own, short-lived and renewed; one that does not
//! (`serve --target gateway` in k8s) reads it from `--service-token-file`, minted by an
//! operator with `agriportal token mint --service <name> --audience <target>`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::auth::{unverified_claims, Authenticator, Role};
use crate::error::Error;
use crate::telemetry::inject_metadata;
use crate::tls::ClientTls;

/// A channel to a service with [`Caller`] on every call; wrap it in any generated client
/// (`DashboardClient::new(channel)`).
pub type PeerChannel = InterceptedService<Channel, Caller>;

/// Who is calling.
#[derive(Clone)]
pub enum Credential {
    /// No credential (public rpcs).
    None,
    /// A bearer token given by a person or a partner (`token mint`).
    Bearer(String),
    /// This service's own credential, renewed as it nears expiry.
    Service(ServiceCredential),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself: Debug output reaches logs.
        f.write_str(match self {
            Credential::None => "Credential::None",
            Credential::Bearer(_) => "Credential::Bearer(…)",
            Credential::Service(_) => "Credential::Service",
        })
    }
}

/// A service's own credential for its calls to one target.
#[derive(Clone)]
pub struct ServiceCredential {
    service: String,
    audience: String,
    source: Source,
}

#[derive(Clone)]
enum Source {
    /// This process holds the private key: it mints.
    Mint(Arc<Authenticator>),
    /// Tokens minted by an operator, one a line, in a file mounted from a secret.
    File(PathBuf),
}

impl std::fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::Mint(_) => "minted here".to_string(),
            Source::File(path) => format!("from {}", path.display()),
        };
        f.debug_struct("ServiceCredential")
            .field("service", &self.service)
            .field("audience", &self.audience)
            .field("source", &source)
            .finish()
    }
}

impl ServiceCredential {
    /// `service`'s credential for calls to `audience`: minted by `auth` when it holds the
    /// private key, else read from `token_file`; a missing or unsuitable file is an error now,
    /// at start-up, not at the first call.
    pub fn new(
        service: &str,
        audience: &str,
        auth: &Arc<Authenticator>,
        token_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let source = match (auth.can_sign(), token_file) {
            (true, _) => Source::Mint(auth.clone()),
            (false, Some(path)) => Source::File(path.to_path_buf()),
            (false, None) => anyhow::bail!(
                "{service} calls {audience} with its own service credential: set \
                 AGRIPORTAL_SERVICE_TOKEN_FILE (--service-token-file) to a file holding \
                 `agriportal token mint --service {service} --audience {audience}`"
            ),
        };
        let credential = ServiceCredential {
            service: service.to_string(),
            audience: audience.to_string(),
            source,
        };
        credential.token().map_err(|e| anyhow::anyhow!(e.message))?;
        Ok(credential)
    }

    /// A token and how long it may be used before asking again.
    fn token(&self) -> Result<(String, Duration), Error> {
        match &self.source {
            Source::Mint(auth) => {
                let (token, _) =
                    auth.mint_service(&self.service, &self.audience, SERVICE_TOKEN_TTL)?;
                Ok((token, SERVICE_TOKEN_TTL - RENEW_BEFORE))
            }
            Source::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::unavailable(format!(
                        "reading the service token file {}: {e}",
                        path.display()
                    ))
                })?;
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let wanted = Role::Service {
                    service: self.service.clone(),
                };
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .find(|line| {
                        unverified_claims(line).is_ok_and(|claims| {
                            claims.role == wanted && claims.aud == self.audience && claims.exp > now
                        })
                    })
                    .map(|line| (line.to_string(), FILE_REREAD))
                    .ok_or_else(|| {
                        Error::unavailable(format!(
                            "{} holds no unexpired token of service `{}` for `{}`: mint one with \
                             `agriportal token mint --service {} --audience {}`",
                            path.display(),
                            self.service,
                            self.audience,
                            self.service,
                            self.audience
                        ))
                    })
            }
        }
    }
}

/// Settings of a channel.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Deadline of each call, sent to the server as `grpc-timeout` (it stops working on the
    /// call once the caller stopped waiting) and enforced here.
    pub deadline: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(10),
        }
    }
}

/// Lifetime of a service credential minted here; it is renewed when less than
/// [`RENEW_BEFORE`] is left.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(600);
const RENEW_BEFORE: Duration = Duration::from_secs(120);
/// How often a service token file is read again (a renewed secret needs no restart).
const FILE_REREAD: Duration = Duration::from_secs(60);

/// A minted service credential and when to renew it.
type CachedToken = Arc<Mutex<Option<(MetadataValue<Ascii>, Instant)>>>;

/// Adds the credential, the trace context and the deadline to each call.
#[derive(Clone)]
pub struct Caller {
    credential: Credential,
    deadline: Duration,
    cached: CachedToken,
}

impl Caller {
    /// A caller with `credential` and a per-call `deadline`.
    pub fn new(credential: Credential, deadline: Duration) -> anyhow::Result<Self> {
        let caller = Caller {
            credential,
            deadline,
            cached: Arc::new(Mutex::new(None)),
        };
        // A bearer token that is not valid metadata is the caller's mistake: say so now, not
        // at the first call.
        if let Credential::Bearer(token) = &caller.credential {
            bearer(token)?;
        }
        Ok(caller)
    }

    fn authorization(&self) -> Result<Option<MetadataValue<Ascii>>, Status> {
        match &self.credential {
            Credential::None => Ok(None),
            Credential::Bearer(token) => bearer(token)
                .map(Some)
                .map_err(|_| Status::unauthenticated("the token is not valid metadata")),
            Credential::Service(credential) => {
                let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((value, renew_at)) = cached.as_ref() {
                    if Instant::now() < *renew_at {
                        return Ok(Some(value.clone()));
                    }
                }
                let (token, valid_for) = credential.token().map_err(Status::from)?;
                let value = bearer(&token)
                    .map_err(|_| Status::internal("a service token is not valid metadata"))?;
                *cached = Some((value.clone(), Instant::now() + valid_for));
                Ok(Some(value))
            }
        }
    }
}

fn bearer(token: &str) -> anyhow::Result<MetadataValue<Ascii>> {
    Ok(format!("Bearer {token}").parse()?)
}

impl tonic::service::Interceptor for Caller {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = self.authorization()? {
            request.metadata_mut().insert("authorization", value);
        }
        inject_metadata(request.metadata_mut());
        // A deadline the caller set on this very request (a shorter one, say) stands.
        if request.metadata().get("grpc-timeout").is_none() {
            request.set_timeout(self.deadline);
        }
        Ok(request)
    }
}

/// A channel to the service at `url` (`http://host:port`), connecting lazily: a peer that is
/// down at start-up is an error of the calls, not of the start.
pub fn connect(
    url: &str,
    credential: Credential,
    options: ClientOptions,
) -> anyhow::Result<PeerChannel> {
    connect_via(url, credential, options, None)
}

/// [`connect`], trusting `tls` on an `https://` address (required for one).
pub fn connect_via(
    url: &str,
    credential: Credential,
    options: ClientOptions,
    tls: Option<&ClientTls>,
) -> anyhow::Result<PeerChannel> {
    let channel = endpoint(url, options, tls)?.connect_lazy();
    Ok(InterceptedService::new(
        channel,
        Caller::new(credential, options.deadline)?,
    ))
}

/// [`connect`], but connects now (a client that wants to fail at once when nobody listens).
pub async fn connect_now(
    url: &str,
    credential: Credential,
    options: ClientOptions,
) -> anyhow::Result<PeerChannel> {
    connect_now_via(url, credential, options, None).await
}

/// [`connect_now`], trusting `tls` on an `https://` address (required for one).
pub async fn connect_now_via(
    url: &str,
    credential: Credential,
    options: ClientOptions,
    tls: Option<&ClientTls>,
) -> anyhow::Result<PeerChannel> {
    let channel = endpoint(url, options, tls)?.connect().await?;
    Ok(InterceptedService::new(
        channel,
        Caller::new(credential, options.deadline)?,
    ))
}

fn endpoint(
    url: &str,
    options: ClientOptions,
    tls: Option<&ClientTls>,
) -> anyhow::Result<Endpoint> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let https = url.starts_with("https://");
    let endpoint = Endpoint::from_shared(url.clone())?
        .connect_timeout(options.connect_timeout)
        .timeout(options.deadline)
        .tcp_nodelay(true);
    match (https, tls) {
        (false, _) => Ok(endpoint),
        (true, Some(tls)) => Ok(endpoint.tls_config(tls.tonic())?),
        (true, None) => anyhow::bail!(
            "{url} is an https:// address, but no CA to trust is configured: set --tls-ca \
             (AGRIPORTAL_TLS_CA) to the PEM bundle that signed its certificate"
        ),
    }
}

/// Maps a failed call to `peer` (a target name) into the platform's error.
pub fn error(peer: &'static str) -> impl Fn(Status) -> Error {
    move |status| Error::from_status(peer, &status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn auth() -> Arc<Authenticator> {
        let signer = crate::keys::Signer::from_seed("k1", &[5u8; 32]).unwrap();
        Authenticator::signing(signer, None).unwrap()
    }

    #[test]
    fn a_service_credential_is_minted_once_and_verifies() {
        let auth = auth();
        let credential = ServiceCredential::new("gateway", "marketplace", &auth, None).unwrap();
        let mut caller =
            Caller::new(Credential::Service(credential), Duration::from_secs(3)).unwrap();
        let first = caller.call(Request::new(())).unwrap();
        let second = caller.call(Request::new(())).unwrap();
        let header = |r: &Request<()>| {
            r.metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        assert_eq!(
            header(&first),
            header(&second),
            "cached, not minted per call"
        );
        let token = header(&first).unwrap();
        let claims = auth
            .verify_signed(token.trim_start_matches("Bearer "))
            .unwrap();
        assert_eq!(
            claims.role,
            Role::Service {
                service: "gateway".into()
            }
        );
        assert_eq!(claims.aud, "marketplace");
        assert_eq!(
            first
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok()),
            Some("3000000u")
        );
    }

    #[test]
    fn without_a_private_key_the_credential_comes_from_the_token_file() {
        let minter = auth();
        let verifier = Authenticator::new(
            crate::auth::Keys {
                signer: None,
                public: vec![crate::keys::Signer::from_seed("k1", &[5u8; 32])
                    .unwrap()
                    .public()],
            },
            None,
        )
        .unwrap();
        let err = ServiceCredential::new("gateway", "marketplace", &verifier, None).unwrap_err();
        assert!(err.to_string().contains("--service-token-file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service_token");
        let ttl = Duration::from_secs(3600);
        let (other, _) = minter.mint_service("gateway", "indicators", ttl).unwrap();
        std::fs::write(&path, format!("{other}\n")).unwrap();
        // A file without a token for this audience is refused at start-up, naming the fix.
        let err = ServiceCredential::new("gateway", "marketplace", &verifier, Some(&path))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--service gateway --audience marketplace"),
            "{err}"
        );
        let (token, _) = minter.mint_service("gateway", "marketplace", ttl).unwrap();
        std::fs::write(&path, format!("{other}\n{token}\n")).unwrap();
        let credential =
            ServiceCredential::new("gateway", "marketplace", &verifier, Some(&path)).unwrap();
        assert!(format!("{credential:?}").contains("service_token"));
        let mut caller =
            Caller::new(Credential::Service(credential), Duration::from_secs(3)).unwrap();
        let request = caller.call(Request::new(())).unwrap();
        let sent = request.metadata().get("authorization").unwrap();
        assert_eq!(sent.to_str().unwrap(), format!("Bearer {token}"));
        assert!(verifier.verify_signed(&token).is_ok());
    }

    #[test]
    fn a_bad_bearer_token_is_refused_up_front_and_never_printed() {
        assert!(Caller::new(
            Credential::Bearer("line\nbreak".into()),
            Duration::from_secs(1)
        )
        .is_err());
        let shown = format!("{:?}", Credential::Bearer("secret-token".into()));
        assert!(!shown.contains("secret-token"));
    }
}
