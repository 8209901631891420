//! The gRPC edge's gate: who may call each gRPC service, checked from the request's headers
//! before its body is read and before it takes one of the process's request slots, and how
//! many calls each authenticated caller may have in flight.
//!
//! Each service declares its [`Access`] in its descriptor ([`crate::GrpcApi::access`]); the one
//! serve path ([`crate::grpc::serve_with`]) applies [`AccessLayer`] outside the process-wide
//! [`crate::limits::ConcurrencyLimitLayer`], so an unauthenticated flood costs a header check
//! per call (no body decoded, no slot taken), and one caller's flood holds at most its own cap
//! of the slots, never another caller's. The verified [`Claims`] ride on in the request's
//! extensions; handlers may authenticate again (defence in depth), but take no second slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{Authenticator, Claims, Role};
use crate::error::{Error, ErrorCode};
use crate::metrics::{self, Counter, EncodeLabelSet, Family};

/// How long a caller refused for having too many calls in flight is told to wait.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Who may call a gRPC service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Anyone, without a token (dashboards, the probe); health and reflection always are.
    Public,
    /// Any valid token (the service decides per rpc what each role may do).
    SignedIn,
    /// A partner marketplace's token.
    Partner,
    /// The central working group's token.
    Admin,
    /// Internal rpcs (the audit rpcs): the central working group's token, or another
    /// service's own credential addressed to the service serving it (`aud`). The only access
    /// a service credential passes; it is refused everywhere else.
    Internal,
}

/// The error for a call whose caller already has `max` calls in flight.
pub fn caller_busy(who: &str, max: u32) -> Error {
    Error::exhausted(format!(
        "{who} already has {max} calls in flight (--partner-max-concurrent-requests): \
         retry after {} ms, or wait for earlier calls to finish",
        BUSY_RETRY_AFTER.as_millis()
    ))
    .with_retry_after(BUSY_RETRY_AFTER)
}

/// The tower layer of the gate: [`Access`] per gRPC service name, and at most `per_caller`
/// calls in flight per authenticated caller.
#[derive(Clone)]
pub struct AccessLayer {
    shared: Arc<Shared>,
}

struct Shared {
    auth: Arc<Authenticator>,
    /// `/<service>/` path prefixes, their access and the target serving them (the audience a
    /// service credential must name).
    rules: Vec<(String, Access, String)>,
    per_caller: u32,
    /// One semaphore per caller ever seen. Callers are verified identities (a partner, the
    /// central group, a province: codes checked when the token was minted and signed), so the
    /// map is bounded by the reference data, never by what a client sends.
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl std::fmt::Debug for AccessLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLayer")
            .field("rules", &self.shared.rules)
            .field("per_caller", &self.shared.per_caller)
            .finish_non_exhaustive()
    }
}

impl AccessLayer {
    /// A gate over `rules` (gRPC service name, its access and the target serving it; services
    /// not named are public) verifying tokens with `auth`, each caller limited to
    /// `per_caller` calls in flight.
    pub fn new<'a>(
        auth: Arc<Authenticator>,
        rules: impl IntoIterator<Item = (&'a str, Access, &'a str)>,
        per_caller: u32,
    ) -> Self {
        AccessLayer {
            shared: Arc::new(Shared {
                auth,
                rules: rules
                    .into_iter()
                    .map(|(name, access, target)| (format!("/{name}/"), access, target.to_string()))
                    .collect(),
                per_caller: per_caller.max(1),
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The access rule for a request path, and the target serving it.
    pub fn access(&self, path: &str) -> (Access, &str) {
        self.shared
            .rules
            .iter()
            .find(|(prefix, _, _)| path.starts_with(prefix.as_str()))
            .map_or((Access::Public, ""), |(_, access, target)| {
                (*access, target.as_str())
            })
    }
}

impl Shared {
    /// Verifies the `authorization` header for `access`, then takes one of the caller's slots.
    async fn admit(
        &self,
        access: Access,
        target: &str,
        header: Option<&str>,
    ) -> Result<(Claims, OwnedSemaphorePermit), Error> {
        let claims = self.auth.authenticate(header).await?;
        if let Role::Service { service } = &claims.role {
            // A service credential opens the internal rpcs its audience names, nothing else:
            // not a partner's pushes, not what a signed-in person may read.
            if access != Access::Internal {
                return Err(Error::new(
                    ErrorCode::PermissionDenied,
                    format!("service `{service}`'s own credential is not accepted by this rpc"),
                ));
            }
        }
        match access {
            Access::Partner if claims.partner().is_none() => {
                return Err(Error::new(
                    ErrorCode::PermissionDenied,
                    "this rpc is for partner marketplaces; the token is not a partner's",
                ))
            }
            Access::Admin if claims.role != Role::Admin => {
                return Err(Error::new(
                    ErrorCode::PermissionDenied,
                    "this rpc is for the central working group; the token is not an admin's",
                ))
            }
            Access::Internal => claims.admits_internal(target)?,
            _ => {}
        }
        let (key, who) = caller(&claims.role);
        let semaphore = {
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            slots
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_caller as usize)))
                .clone()
        };
        match semaphore.try_acquire_owned() {
            Ok(permit) => Ok((claims, permit)),
            Err(_) => {
                busy_counter()
                    .get_or_create(&CallerLabels { caller: key })
                    .inc();
                Err(caller_busy(&who, self.per_caller))
            }
        }
    }
}

/// A caller's key (a metric label, from a bounded set) and how a message names it.
fn caller(role: &Role) -> (String, String) {
    match role {
        Role::Partner { partner } => (format!("partner:{partner}"), format!("partner `{partner}`")),
        Role::Admin => ("admin".into(), "the central working group".into()),
        Role::Province { province } => (
            format!("province:{province}"),
            format!("province `{province}`"),
        ),
        Role::Service { service } => (format!("service:{service}"), format!("service `{service}`")),
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessGate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AccessGate {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`AccessLayer`].
#[derive(Clone, Debug)]
pub struct AccessGate<S> {
    inner: S,
    layer: AccessLayer,
}

impl<S, B, R> tower::Service<http::Request<B>> for AccessGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let (access, target) = self.layer.access(request.uri().path());
        if access == Access::Public {
            return Box::pin(self.inner.call(request));
        }
        let target = target.to_string();
        // The inner service was made ready for this call; the clone takes its place for the
        // next one (the usual tower pattern for a call that awaits before delegating).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.layer.shared.clone();
        Box::pin(async move {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let (claims, permit) = match shared.admit(access, &target, header).await {
                Ok(admitted) => admitted,
                // Answered from the headers: the body is dropped unread.
                Err(err) => return Ok(tonic::Status::from(err).into_http()),
            };
            request.extensions_mut().insert(claims);
            let response = inner.call(request).await;
            // Held until the handler answered, as the process-wide slot is.
            drop(permit);
            response
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallerLabels {
    caller: String,
}

fn busy_counter() -> &'static Family<CallerLabels, Counter> {
    static BUSY: OnceLock<Family<CallerLabels, Counter>> = OnceLock::new();
    BUSY.get_or_init(|| {
        metrics::counter_family(
            "agriportal_grpc_caller_busy",
            "gRPC calls refused because their caller had --partner-max-concurrent-requests in flight",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Service, ServiceExt};

    /// A service that records whether it was called and whether it saw claims, and answers
    /// once `release` lets it (so tests can hold calls in flight).
    #[derive(Clone)]
    struct Inner {
        calls: Arc<std::sync::atomic::AtomicUsize>,
        release: Arc<Semaphore>,
        hold: bool,
    }

    impl tower::Service<http::Request<String>> for Inner {
        type Response = http::Response<String>;
        type Error = Infallible;
        type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, request: http::Request<String>) -> Self::Future {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let saw = request.extensions().get::<Claims>().is_some();
            let (release, hold) = (self.release.clone(), self.hold);
            Box::pin(async move {
                if hold {
                    let _released = release.acquire().await;
                }
                Ok(http::Response::new(format!("claims={saw}")))
            })
        }
    }

    fn request(path: &str, token: Option<&str>) -> http::Request<String> {
        let mut builder = http::Request::builder().uri(format!("http://x{path}"));
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.body(String::new()).unwrap()
    }

    fn code(response: &http::Response<String>) -> tonic::Code {
        tonic::Status::from_header_map(response.headers())
            .map_or(tonic::Code::Ok, |status| status.code())
    }

    fn setup(hold: bool) -> (Arc<Authenticator>, AccessGate<Inner>, Inner) {
        let signer = crate::keys::Signer::from_seed("k1", &[9u8; 32]).unwrap();
        let auth = Authenticator::signing(signer, None).unwrap();
        let inner = Inner {
            calls: Arc::default(),
            release: Arc::new(Semaphore::new(0)),
            hold,
        };
        let layer = AccessLayer::new(
            auth.clone(),
            [
                ("pkg.Ingest", Access::Partner, "market"),
                ("pkg.Admin", Access::Admin, "market"),
                ("pkg.Audit", Access::Internal, "market"),
                ("pkg.Other", Access::Internal, "other"),
                ("pkg.Reports", Access::SignedIn, "reports"),
                ("pkg.Dashboard", Access::Public, "reports"),
            ],
            2,
        );
        (auth, tower::Layer::layer(&layer, inner.clone()), inner)
    }

    #[tokio::test]
    async fn refusals_are_answered_from_the_headers_without_calling_the_service() {
        let (auth, mut gate, inner) = setup(false);
        let ttl = Duration::from_secs(60);
        let (partner, _) = auth
            .mint(
                Role::Partner {
                    partner: "voso".into(),
                },
                ttl,
            )
            .unwrap();
        let (admin, _) = auth.mint(Role::Admin, ttl).unwrap();
        let (expired, _) = auth.mint(Role::Admin, Duration::ZERO).unwrap();
        let (service, _) = auth.mint_service("gateway", "market", ttl).unwrap();
        let denied = tonic::Code::PermissionDenied;
        let cases = [
            ("/pkg.Ingest/Push", None, tonic::Code::Unauthenticated),
            (
                "/pkg.Ingest/Push",
                Some("garbage"),
                tonic::Code::Unauthenticated,
            ),
            (
                "/pkg.Ingest/Push",
                Some(expired.as_str()),
                tonic::Code::Unauthenticated,
            ),
            (
                "/pkg.Ingest/Push",
                Some(admin.as_str()),
                tonic::Code::PermissionDenied,
            ),
            (
                "/pkg.Audit/Get",
                Some(partner.as_str()),
                tonic::Code::PermissionDenied,
            ),
            ("/pkg.Reports/List", None, tonic::Code::Unauthenticated),
            ("/pkg.Admin/Do", Some(partner.as_str()), denied),
            // A service credential: no pushes, no admin or signed-in rpcs, and no internal
            // rpc of a service other than its audience.
            ("/pkg.Ingest/Push", Some(service.as_str()), denied),
            ("/pkg.Admin/Do", Some(service.as_str()), denied),
            ("/pkg.Reports/List", Some(service.as_str()), denied),
            ("/pkg.Other/Get", Some(service.as_str()), denied),
        ];
        for (path, token, want) in cases {
            let response = gate
                .ready()
                .await
                .unwrap()
                .call(request(path, token))
                .await
                .unwrap();
            assert_eq!(code(&response), want, "{path} {token:?}");
        }
        assert_eq!(inner.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Admitted calls carry their claims; public ones need none.
        for (path, token, claims) in [
            ("/pkg.Ingest/Push", Some(partner.as_str()), true),
            ("/pkg.Admin/Do", Some(admin.as_str()), true),
            ("/pkg.Audit/Get", Some(admin.as_str()), true),
            ("/pkg.Audit/Get", Some(service.as_str()), true),
            ("/pkg.Reports/List", Some(partner.as_str()), true),
            ("/pkg.Dashboard/Get", None, false),
            ("/grpc.health.v1.Health/Check", None, false),
        ] {
            let response = gate
                .ready()
                .await
                .unwrap()
                .call(request(path, token))
                .await
                .unwrap();
            assert_eq!(code(&response), tonic::Code::Ok, "{path}");
            assert_eq!(response.body(), &format!("claims={claims}"), "{path}");
        }
    }

    #[tokio::test]
    async fn a_caller_at_its_cap_is_refused_and_another_is_not() {
        let (auth, gate, inner) = setup(true);
        let ttl = Duration::from_secs(60);
        let token = |partner: &str| {
            auth.mint(
                Role::Partner {
                    partner: partner.into(),
                },
                ttl,
            )
            .unwrap()
            .0
        };
        let (postmart, voso) = (token("postmart"), token("voso"));
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut gate = gate.clone();
            let request = request("/pkg.Ingest/Push", Some(&postmart));
            held.push(tokio::spawn(async move {
                gate.ready().await.unwrap().call(request).await.unwrap()
            }));
        }
        while inner.calls.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        let mut third = gate.clone();
        let response = third
            .ready()
            .await
            .unwrap()
            .call(request("/pkg.Ingest/Push", Some(&postmart)))
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("2 calls in flight")
                && status
                    .message()
                    .contains("--partner-max-concurrent-requests"),
            "{}",
            status.message()
        );
        // The other partner has its own slots: its call reaches the service.
        let mut other = gate.clone();
        let voso_call = tokio::spawn(async move {
            other
                .ready()
                .await
                .unwrap()
                .call(request("/pkg.Ingest/Push", Some(&voso)))
                .await
                .unwrap()
        });
        while inner.calls.load(std::sync::atomic::Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        inner.release.add_permits(Semaphore::MAX_PERMITS / 2);
        for call in held {
            assert_eq!(code(&call.await.unwrap()), tonic::Code::Ok);
        }
        assert_eq!(code(&voso_call.await.unwrap()), tonic::Code::Ok);
    }
}
