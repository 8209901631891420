//! HTTP plumbing shared by every service: liveness, readiness, Prometheus metrics, JSON
//! refusals for unknown routes and methods, and the drain-bounded server loop.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::service::Check;
use crate::storage::Database;
use crate::telemetry::TraceLayer;

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

/// Serves `router` (traced) until `shutdown`, then drains for at most `drain`. A method a route
/// does not accept gets a JSON error naming it, like every other refusal; an unknown path gets
/// the router's fallback (see [`not_found`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
) -> anyhow::Result<()> {
    let stopping = shutdown.clone();
    // The metrics layer goes on the router itself, after its routes and fallback, where each
    // request's matched route template is known (never the raw path, which would make a label
    // per URL anyone cares to send).
    let router = router
        .layer(crate::metrics::HttpMetricsLayer::new())
        .layer(axum::middleware::from_fn(explain_method_not_allowed));
    // Nagle's algorithm off, as on the gRPC port: a response in two writes must not wait for
    // the client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not turn Nagle's algorithm off");
        }
    });
    let server = axum::serve(listener, router.layer(TraceLayer))
        .with_graceful_shutdown(async move { stopping.cancelled().await })
        .into_future();
    crate::grpc::bounded_drain(server, shutdown, drain).await
}

/// The JSON 404 for a path no route matches, naming it. The kit makes it the fallback of a
/// process whose services all live under prefixes; a service that answers `/` (whatever the
/// others do not) sets its own fallback instead.
pub async fn not_found(uri: axum::http::Uri) -> crate::Error {
    let path: String = uri.path().chars().take(100).collect();
    crate::Error::not_found(format!("no such page or API route: `{path}`"))
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
