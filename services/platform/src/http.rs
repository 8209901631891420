//! HTTP plumbing shared by every service: liveness, readiness, Prometheus metrics (on the admin
//! listener), JSON refusals for unknown routes and methods, the public listener's limits (time,
//! size, concurrency, per-client rate) and the drain-bounded server loop.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::config::HttpLimits;
use crate::limits::{RateLimiter, Refusal};
use crate::metrics::Counter;

use crate::service::Check;
use crate::storage::Database;
use crate::telemetry::TraceLayer;
use crate::tls::ServerTls;

/// What `/readyz` (and gRPC health) checks: every store answers, and every service's own
/// checks pass.
#[derive(Clone, Default)]
pub struct Readiness {
    databases: Vec<Database>,
    checks: Vec<Check>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("databases", &self.databases)
            .field("checks", &self.checks.len())
            .finish()
    }
}

impl Readiness {
    /// Readiness over these stores.
    pub fn new(databases: Vec<Database>) -> Self {
        Readiness {
            databases,
            checks: Vec::new(),
        }
    }

    /// The same, with the services' own checks.
    pub fn with_checks(mut self, checks: Vec<Check>) -> Self {
        self.checks.extend(checks);
        self
    }

    /// True when every store answers and every check passes.
    pub async fn ready(&self) -> bool {
        for db in &self.databases {
            if !db.ping().await {
                return false;
            }
        }
        for check in &self.checks {
            if !check().await {
                return false;
            }
        }
        true
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn admin_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::new(readiness))
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> impl IntoResponse {
    if readiness.ready().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "a store is not reachable")
    }
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(),
    )
}

/// Serves the public `router` (traced) until `shutdown`, then drains for at most `drain`, with
/// every limit of `limits`: headers must arrive within the header-read timeout, a request
/// takes at most the request timeout and reads at most the body limit, requests over the
/// concurrency cap are shed (503, `Retry-After`), and each client address has a rate (429,
/// `Retry-After`). A method a route does not accept gets a JSON error naming it, like every
/// other refusal; an unknown path gets the router's fallback (see [`not_found`]).
///
/// With `tls`, connections are TLS (HTTP/1.1 by ALPN), each handshake bounded by the
/// handshake timeout before the header-read timeout starts.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
    limits: &HttpLimits,
    tls: Option<ServerTls>,
) -> anyhow::Result<()> {
    let edge = Edge::new(limits);
    // Innermost first: the body limit and timeout bound the handler, the cap bounds how many
    // run, and the rate limit, outermost and cheapest, refuses a flooding client before it
    // takes a slot. All are per route (`Router::layer`), inside the metrics layer, so refused
    // requests are counted under their route.
    let router = router
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            edge.clone(),
            time_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(edge.clone(), shed))
        .layer(axum::middleware::from_fn_with_state(
            edge.clone(),
            rate_limit,
        ));
    let forget = edge.forget_idle_clients(shutdown.clone());
    let served = serve_router(
        listener,
        router,
        shutdown,
        drain,
        limits.header_read_timeout,
        tls,
    )
    .await;
    forget.abort();
    served
}

/// Serves the admin `router` (`/healthz`, `/readyz`, `/metrics`) until `shutdown`: the
/// header-read timeout only, since its clients are the orchestrator and Prometheus.
pub async fn serve_admin(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
    header_read_timeout: Duration,
) -> anyhow::Result<()> {
    serve_router(listener, router, shutdown, drain, header_read_timeout, None).await
}

async fn serve_router(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
    header_read_timeout: Duration,
    tls: Option<ServerTls>,
) -> anyhow::Result<()> {
    // The metrics layer goes on the router itself, after its routes and fallback, where each
    // request's matched route template is known (never the raw path, which would make a label
    // per URL anyone cares to send).
    let router = router
        .layer(crate::metrics::HttpMetricsLayer::new())
        .layer(axum::middleware::from_fn(explain_method_not_allowed))
        .layer(TraceLayer);
    let tls = match tls {
        Some(tls) => Some((tls.acceptor(crate::tls::ALPN_HTTP)?, tls)),
        None => None,
    };
    let server = accept_loop(listener, router, shutdown.clone(), header_read_timeout, tls);
    crate::grpc::bounded_drain(server, shutdown, drain).await
}

/// Accepts connections until `shutdown`, then waits for open ones to finish their requests.
/// hyper's own HTTP/1 server (axum's `serve` sets no header-read timeout: it has no timer), with
/// the peer's address put in each request as [`ConnectInfo`] for the rate limit.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    header_read_timeout: Duration,
    tls: Option<(TlsAcceptor, ServerTls)>,
) -> anyhow::Result<()> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, typically: pause rather than spin, and let
                    // open connections finish and close.
                    tracing::warn!(error = %err, "could not accept an HTTP connection");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Nagle's algorithm off, as on the gRPC port: a response in two writes must not wait
        // for the client's delayed ACK.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not turn Nagle's algorithm off");
        }
        let service = tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        );
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        // The handshake in the connection's own task, so a client that stalls it never holds
        // up the accept loop; it gets the handshake timeout, then the header-read timeout.
        tokio::spawn(async move {
            let io = match tls {
                None => Either::Left(tcp),
                Some((acceptor, tls)) => match tls.handshake(&acceptor, tcp).await {
                    Some(stream) => Either::Right(stream),
                    None => return,
                },
            };
            let connection = builder.serve_connection(
                hyper_util::rt::TokioIo::new(io),
                hyper_util::service::TowerToHyperService::new(service),
            );
            if let Err(err) = watcher.watch(connection).await {
                // A client that went away or timed out sending headers: its own business.
                tracing::debug!(error = %err, %peer, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Pause after a failed accept.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// How long a client shed by the HTTP concurrency cap is told to wait.
pub const HTTP_SHED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How often the rate limiter forgets clients whose buckets are full again.
const FORGET_PERIOD: Duration = Duration::from_secs(10);

/// The public server's limits, shared by its middleware.
#[derive(Clone)]
struct Edge {
    permits: Arc<Semaphore>,
    max_concurrent: u32,
    request_timeout: Duration,
    rate: Option<Arc<RateLimiter<IpAddr>>>,
    max_clients: usize,
    address_header: Option<http::HeaderName>,
}

impl Edge {
    fn new(limits: &HttpLimits) -> Self {
        let address_header = limits.client_address_header.as_deref().and_then(|name| {
            let parsed = http::HeaderName::try_from(name);
            if parsed.is_err() {
                tracing::warn!(
                    header = name,
                    "--http-client-address-header is not a header name; keying by peer address"
                );
            }
            parsed.ok()
        });
        Edge {
            permits: Arc::new(Semaphore::new(limits.max_concurrent_requests as usize)),
            max_concurrent: limits.max_concurrent_requests,
            request_timeout: limits.request_timeout,
            rate: RateLimiter::new(limits.rate_per_second, limits.rate_burst).map(Arc::new),
            max_clients: limits.rate_max_clients,
            address_header,
        }
    }

    /// Forgets idle clients every [`FORGET_PERIOD`] until `shutdown`.
    fn forget_idle_clients(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let rate = self.rate.clone();
        tokio::spawn(async move {
            let Some(rate) = rate else { return };
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(FORGET_PERIOD) => rate.retain_recent(Instant::now()),
                    _ = shutdown.cancelled() => return,
                }
            }
        })
    }

    /// The address a request is limited by: the last entry of the configured header when it
    /// holds one, else the peer's; IPv6 addresses by their /64, which one subscriber usually
    /// holds whole.
    fn client_of(&self, request: &axum::extract::Request) -> Option<IpAddr> {
        let forwarded = self.address_header.as_ref().and_then(|name| {
            let last = request.headers().get_all(name).iter().next_back()?;
            let entry = last.to_str().ok()?.rsplit(',').next()?.trim();
            entry.parse::<IpAddr>().ok()
        });
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        forwarded.or(peer).map(client_key)
    }
}

/// The rate limit's key for an address.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(segments))
            }
        },
    }
}

async fn rate_limit(
    State(edge): State<Edge>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // Without a rate (`--http-rate-per-second 0`) the client's address is not even looked up.
    if let Some((rate, client)) = edge
        .rate
        .as_ref()
        .and_then(|rate| Some((rate, edge.client_of(&request)?)))
    {
        let overflow = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        if let Err(refusal) = rate.try_acquire_bounded(&client, 1, edge.max_clients, &overflow) {
            let wait = match refusal {
                Refusal::RetryAfter(wait) => wait,
                Refusal::OverBurst => Duration::from_secs(1),
            };
            rate_limited_counter().inc();
            return readable_anywhere(&request, crate::Error::exhausted(format!(
                "too many requests from your address: the limit is {} per second (--http-rate-per-second); retry after {} ms",
                rate.rate(),
                wait.as_millis()
            ))
            .with_retry_after(wait));
        }
    }
    next.run(request).await
}

async fn shed(
    State(edge): State<Edge>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Ok(permit) = edge.permits.clone().try_acquire_owned() else {
        shed_counter().inc();
        return readable_anywhere(&request, crate::Error::unavailable(format!(
            "the server is at its limit of {} concurrent requests (--http-max-concurrent-requests) and refuses this one rather than queue it: retry after {} s",
            edge.max_concurrent,
            HTTP_SHED_RETRY_AFTER.as_secs()
        ))
        .with_retry_after(HTTP_SHED_RETRY_AFTER));
    };
    let response = next.run(request).await;
    // Held until the handler answered; a streamed body is then written without a slot.
    drop(permit);
    response
}

async fn time_limit(
    State(edge): State<Edge>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let cross_origin = request.headers().contains_key(http::header::ORIGIN);
    match tokio::time::timeout(edge.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let refusal = crate::Error::unavailable(format!(
                "the request took longer than {} s (--http-request-timeout-seconds); retry later",
                edge.request_timeout.as_secs()
            ))
            .with_retry_after(HTTP_SHED_RETRY_AFTER)
            .into_response();
            if cross_origin {
                with_open_cors(refusal)
            } else {
                refusal
            }
        }
    }
}

/// An edge refusal (rate limit, shedding, time limit) that a page on any origin can read. The
/// edge answers before the routes' own CORS layers run, so without this a dashboard on another
/// origin would see an opaque network error instead of a 429 and its `Retry-After`, and could
/// not back off. A refusal carries no data and credentials are never allowed, so `*` is safe.
fn readable_anywhere(
    request: &axum::extract::Request,
    refusal: crate::Error,
) -> axum::response::Response {
    let response = refusal.into_response();
    if request.headers().contains_key(http::header::ORIGIN) {
        with_open_cors(response)
    } else {
        response
    }
}

fn with_open_cors(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        http::HeaderValue::from_static("*"),
    );
    headers.insert(
        http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
        http::HeaderValue::from_static("retry-after"),
    );
    response
}

fn shed_counter() -> &'static Counter {
    static SHED: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
    SHED.get_or_init(|| {
        crate::metrics::counter(
            "agriportal_http_shed",
            "HTTP requests refused because the server was at --http-max-concurrent-requests",
        )
    })
}

fn rate_limited_counter() -> &'static Counter {
    static LIMITED: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
    LIMITED.get_or_init(|| {
        crate::metrics::counter(
            "agriportal_http_rate_limited",
            "HTTP requests refused because their client was over --http-rate-per-second",
        )
    })
}

/// The JSON 404 for a path no route matches, naming it. The kit makes it the fallback of a
/// process whose services all live under prefixes; a service that answers `/` (whatever the
/// others do not) sets its own fallback instead.
pub async fn not_found(uri: axum::http::Uri) -> crate::Error {
    let path: String = uri.path().chars().take(100).collect();
    crate::Error::not_found(format!("no such page or API route: `{path}`"))
}

/// A strong entity tag (`ETag`) of `body`: the first 96 bits of its SHA-256, in hex, quoted.
/// Derived from the exact bytes and nothing else, so every replica that serves the same bytes
/// gives the same tag (a reader balanced between replicas still gets its `304`), and any
/// change of a byte changes it. SHA-256 rather than a 64-bit hash, because a strong tag
/// promises byte-equality: a collision would hide a change; it runs on the CPU's SHA
/// instructions where there are any (sha2 detects them), a few microseconds for a dashboard's
/// JSON.
pub fn entity_tag(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(26);
    tag.push('"');
    for b in digest.iter().take(12) {
        // Writing to a String cannot fail.
        let _ = std::fmt::Write::write_fmt(&mut tag, format_args!("{b:02x}"));
    }
    tag.push('"');
    tag
}

/// Whether the request's `If-None-Match` matches `etag` (a tag from [`entity_tag`]), so the
/// answer is `304 Not Modified`: per RFC 9110 §13.1.2, `*` matches any current
/// representation, and otherwise any entity tag of the list (over every `If-None-Match` line)
/// by the weak comparison (`W/"x"` matches `"x"`, as caches that weakened a tag send it back).
/// Tags are parsed, not split on commas, since a tag may hold a comma; a malformed list
/// matches nothing, so the reader gets the full answer.
pub fn if_none_match(request: &http::HeaderMap, etag: &str) -> bool {
    let ours = etag.trim_start_matches("W/");
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|list| list_matches(list, ours))
}

/// One `If-None-Match` field value against the opaque tag `ours` (quotes included).
fn list_matches(list: &str, ours: &str) -> bool {
    if list.trim() == "*" {
        return true;
    }
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return false;
        }
        let opaque = rest.strip_prefix("W/").unwrap_or(rest);
        let Some(inner) = opaque.strip_prefix('"') else {
            return false;
        };
        let Some(end) = inner.find('"') else {
            return false;
        };
        // `opaque[..end + 2]` is the quoted tag: the opening quote, `end` bytes, the closing one.
        if &opaque[..end + 2] == ours {
            return true;
        }
        rest = &inner[end + 1..];
    }
}

/// Gives axum's own `405 Method Not Allowed` (which carries the route's `Allow` header) a JSON
/// body naming the method, the path and what is allowed, like every other refusal.
async fn explain_method_not_allowed(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().clone();
    let path: String = request.uri().path().chars().take(100).collect();
    let response = next.run(request).await;
    // Only axum's own bare 405 (no body, no type); a service that answers 405 itself (a page
    // explaining it in the reader's language, say) keeps its answer.
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let allowed = parts
        .headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = serde_json::json!({
        "error": {
            "code": "MethodNotAllowed",
            "message": format!("`{method}` is not allowed on `{path}`; it accepts {allowed}"),
        }
    });
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    axum::response::Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditional(values: &[&str]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for v in values {
            headers.append(header::IF_NONE_MATCH, v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn entity_tags_follow_the_bytes_and_if_none_match_follows_rfc_9110() {
        let tag = entity_tag(b"{\"sales\":1}");
        assert_eq!(tag, entity_tag(b"{\"sales\":1}"), "same bytes, same tag");
        assert_ne!(
            tag,
            entity_tag(b"{\"sales\":2}"),
            "one byte more, another tag"
        );
        assert!(
            tag.starts_with('"') && tag.ends_with('"') && tag.len() == 26,
            "{tag}"
        );
        assert!(http::HeaderValue::from_str(&tag).is_ok());
        let other = entity_tag(b"other");
        for (values, fresh) in [
            (vec![tag.as_str()], true),
            (vec!["*"], true),
            (vec![" * "], true),
            (vec![other.as_str()], false),
            (vec![], false),
        ] {
            assert_eq!(
                if_none_match(&conditional(&values), &tag),
                fresh,
                "{values:?}"
            );
        }
        let list = format!("{other}, W/{tag}");
        assert!(
            if_none_match(&conditional(&[&list]), &tag),
            "a list, weakly"
        );
        let lines = [other.as_str(), tag.as_str()];
        assert!(if_none_match(&conditional(&lines), &tag), "several lines");
        // A comma inside a tag does not split it; what follows is still read.
        let comma = format!("\"a,{}\", {tag}", &tag[1..25]);
        assert!(if_none_match(&conditional(&[&comma]), &tag), "{comma}");
        let inside = format!("\"x,{}", &tag[1..]);
        assert!(!if_none_match(&conditional(&[&inside]), &tag), "{inside}");
        // Without quotes it is no tag at all.
        assert!(!if_none_match(&conditional(&[&tag[1..25]]), &tag));
        assert!(!if_none_match(&conditional(&["\"unterminated"]), &tag));
    }

    fn edge(header: Option<&str>) -> Edge {
        let mut limits = crate::Config::embedded("unused").http_limits();
        limits.client_address_header = header.map(str::to_string);
        Edge::new(&limits)
    }

    fn request(peer: &str, forwarded: &[&str]) -> axum::extract::Request {
        let mut request = axum::extract::Request::new(axum::body::Body::empty());
        let peer: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        for value in forwarded {
            request
                .headers_mut()
                .append("x-forwarded-for", value.parse().unwrap());
        }
        request
    }

    #[test]
    fn clients_are_keyed_by_peer_or_the_proxys_last_entry() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // No header configured: the peer, whatever the client wrote.
        let plain = edge(None);
        assert_eq!(
            plain.client_of(&request("10.0.0.7:5000", &["203.0.113.9"])),
            Some(ip("10.0.0.7"))
        );
        // Behind a proxy: the last entry of the last header, the one the proxy added.
        let proxied = edge(Some("X-Forwarded-For"));
        assert_eq!(
            proxied.client_of(&request(
                "10.0.0.7:5000",
                &["198.51.100.1", "198.51.100.2, 203.0.113.9"]
            )),
            Some(ip("203.0.113.9"))
        );
        // An unreadable entry falls back to the peer.
        assert_eq!(
            proxied.client_of(&request("10.0.0.7:5000", &["not an address"])),
            Some(ip("10.0.0.7"))
        );
        // IPv6 by its /64; an IPv4-mapped address as the IPv4 one.
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(client_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}
