//! HTTP plumbing shared by every service: liveness, readiness, Prometheus metrics, and the
//! drain-bounded server loop.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::storage::Database;
use crate::telemetry::TraceLayer;

/// What `/readyz` checks: every store answers.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    databases: Vec<Database>,
}

impl Readiness {
    /// Readiness over these stores.
    pub fn new(databases: Vec<Database>) -> Self {
        Readiness { databases }
    }
    /// True when every store answers.
    pub async fn ready(&self) -> bool {
        for db in &self.databases {
            if !db.ping().await {
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
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics().render(),
    )
}

/// Serves `router` (traced) until `shutdown`, then drains for at most `drain`. An unknown path
/// or method gets a JSON error naming it, like every other refusal.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
) -> anyhow::Result<()> {
    let stopping = shutdown.clone();
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
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

async fn not_found(uri: axum::http::Uri) -> crate::Error {
    let path: String = uri.path().chars().take(100).collect();
    crate::Error::not_found(format!(
        "no such page or API route: `{path}`; the API is under /api/v1 (national, provinces, \
         provinces/{{code}}, timeseries)"
    ))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> impl IntoResponse {
    let path: String = uri.path().chars().take(100).collect();
    let body = serde_json::json!({
        "error": {
            "code": "MethodNotAllowed",
            "message": format!("`{method}` is not allowed on `{path}`: everything here is read-only, use GET"),
        }
    });
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET, HEAD")],
        axum::Json(body),
    )
}

/// A minimal Prometheus registry of counters and gauges, enough for the services' own figures
/// without pulling a metrics framework into every crate.
#[derive(Debug, Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, String), Series>>,
}

#[derive(Debug)]
struct Series {
    help: &'static str,
    kind: &'static str,
    value: i64,
}

/// The process-wide registry.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

impl Metrics {
    /// Adds `by` to a counter; `labels` is Prometheus label syntax without braces (`partner="voso"`).
    pub fn add(&self, name: &str, labels: &str, help: &'static str, by: i64) {
        self.update(name, labels, help, "counter", |v| *v += by);
    }
    /// Sets a gauge.
    pub fn set(&self, name: &str, labels: &str, help: &'static str, value: i64) {
        self.update(name, labels, help, "gauge", |v| *v = value);
    }
    fn update(
        &self,
        name: &str,
        labels: &str,
        help: &'static str,
        kind: &'static str,
        f: impl FnOnce(&mut i64),
    ) {
        let Ok(mut series) = self.series.lock() else {
            return;
        };
        let entry = series
            .entry((name.to_string(), labels.to_string()))
            .or_insert(Series {
                help,
                kind,
                value: 0,
            });
        f(&mut entry.value);
    }
    /// The current value of a series, if it exists.
    pub fn get(&self, name: &str, labels: &str) -> Option<i64> {
        let series = self.series.lock().ok()?;
        series
            .get(&(name.to_string(), labels.to_string()))
            .map(|s| s.value)
    }
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let Ok(series) = self.series.lock() else {
            return String::new();
        };
        let mut out = String::new();
        let mut last = "";
        for ((name, labels), s) in series.iter() {
            if name != last {
                out.push_str(&format!(
                    "# HELP {name} {}\n# TYPE {name} {}\n",
                    s.help, s.kind
                ));
                last = name;
            }
            if labels.is_empty() {
                out.push_str(&format!("{name} {}\n", s.value));
            } else {
                out.push_str(&format!("{name}{{{labels}}} {}\n", s.value));
            }
        }
        out
    }
}
