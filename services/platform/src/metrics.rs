//! Prometheus metrics for every service, built on `prometheus-client`: one process-wide
//! registry, metrics declared once (name and help in one place) as typed handles, the text
//! exposition for `/metrics`, and tower layers that count and time every gRPC call and HTTP
//! request.
//!
//! # Declaring metrics
//!
//! A service declares each of its metrics once, usually in a `OnceLock`, and keeps the handles:
//!
//! ```
//! use std::sync::OnceLock;
//! use agriportal_platform::metrics::{self, Counter, EncodeLabelSet, Family};
//!
//! #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
//! struct PartnerLabels {
//!     partner: &'static str,
//! }
//!
//! struct MarketplaceMetrics {
//!     rate_limited: Family<PartnerLabels, Counter>,
//! }
//!
//! fn marketplace_metrics() -> &'static MarketplaceMetrics {
//!     static M: OnceLock<MarketplaceMetrics> = OnceLock::new();
//!     M.get_or_init(|| MarketplaceMetrics {
//!         rate_limited: metrics::counter_family(
//!             "agriportal_marketplace_rate_limited",
//!             "Partner calls refused by the per-partner rate limit",
//!         ),
//!     })
//! }
//!
//! marketplace_metrics().rate_limited.get_or_create(&PartnerLabels { partner: "voso" }).inc();
//! assert!(metrics::render()
//!     .contains("agriportal_marketplace_rate_limited_total{partner=\"voso\"} 1\n"));
//! ```
//!
//! Registration is idempotent by exposed name: a second declaration of the same name and type
//! (another test in the same process, a second replica of a service in `agriportal up`) gets
//! a handle to the same series, and the exposition lists the metric once. The first help text
//! and buckets win. A second declaration of the same name with another type cannot be
//! exported; it is logged and gets a handle that records into nothing, rather than a panic.
//!
//! # The derive macros need `prometheus-client` as a direct dependency
//!
//! [`EncodeLabelSet`] and [`EncodeLabelValue`] are re-exported here (trait and derive macro
//! alike), but the derives expand to absolute paths (`::prometheus_client::encoding::…`),
//! which resolve only in a crate that depends on `prometheus-client` itself. A service crate
//! that derives label sets therefore adds `prometheus-client.workspace = true` to its
//! `[dependencies]`; going through the workspace keeps it the same version, hence the same
//! traits, as this crate. Without the derive no dependency is needed: arrays and vectors of
//! `(key, value)` pairs are label sets too (`Family<[(&'static str, &'static str); 1], Counter>`).
//!
//! # Names and values
//!
//! - Counter names are given without `_total`: the encoder appends it, so
//!   `counter("agriportal_grpc_shed", …)` is exposed as `agriportal_grpc_shed_total`, the name
//!   the code base already uses. A trailing `_total` is stripped here, because
//!   `prometheus-client` panics in debug builds on a counter registered with it.
//! - `prometheus-client` appends a full stop to every help text; a help text that already ends
//!   with one loses it here so it is not doubled.
//! - [`Counter`] counts in `u64` and [`Gauge`] in `i64`, and both render as integers
//!   (`agriportal_gateway_reconcile_rounds_total{outcome="compared"} 3`), which is what tests
//!   that parse the exposition expect. A float counter would render `3.0`.
//! - A family with no series yet is left out of the exposition altogether (no `HELP` either):
//!   `prometheus-client` skips empty metrics. A plain counter or gauge always has its one series.
//!
//! # Exposition format: Prometheus text 0.0.4, not OpenMetrics
//!
//! `prometheus-client`'s default encoder (`encoding::text`) writes OpenMetrics text, where
//! `HELP` and `TYPE` name a counter family without `_total` (`# TYPE x counter`, samples
//! `x_total`) and the output ends in `# EOF`. Debian's `promtool` (2.42, `promtool check
//! metrics`) parses its input as Prometheus text 0.0.4, so it sees every counter sample without
//! help and exits 3 (`x_total no help text`). Since 0.26 the crate also has
//! `encoding::prometheus_text`, which writes the 0.0.4 format (`HELP`/`TYPE` on `x_total`, no
//! `# UNIT`, no `# EOF`, histogram buckets before `_sum`/`_count`); `promtool` accepts that
//! without remark. [`render`] therefore writes the 0.0.4 text and [`CONTENT_TYPE`] is its
//! content type (`text/plain; version=0.0.4; charset=utf-8`), which Prometheus scrapes as is.
//!
//! # Request metrics
//!
//! [`GrpcMetricsLayer`] (for `tonic::transport::Server::builder().layer(…)`) and
//! [`HttpMetricsLayer`] (for axum's `Router::layer`) count and time every call; their docs say
//! where to put them and how label cardinality stays bounded.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::registry::{Metric, Registry};
use tonic::Code;

pub use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;

/// The content type of [`render`]'s output: the Prometheus text format 0.0.4, the one format
/// both Prometheus and Debian's `promtool check metrics` accept as written (see the module
/// docs for why not OpenMetrics).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Histogram buckets, in seconds, for request durations from 1 ms to 10 s: roughly three per
/// decade, fine enough to tell a fast read from a slow batch, few enough to keep each series
/// small. Slower calls fall into the implicit `+Inf` bucket.
pub const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A family of histograms sharing one set of buckets, as [`histogram_family`] returns it.
pub type HistogramFamily<L> = Family<L, Histogram, Buckets>;

/// The bucket bounds a [`HistogramFamily`] gives each new series. A named type, rather than a
/// closure, so that the family's type can be written in a struct field.
#[derive(Clone, Debug)]
pub struct Buckets(Arc<[f64]>);

impl Buckets {
    /// Buckets with these upper bounds (seconds, bytes, …; ascending).
    pub fn new(bounds: &[f64]) -> Self {
        Buckets(bounds.into())
    }
}

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// The registry and, by exposed name, a handle to each metric registered in it: the handles
/// are what makes registration idempotent (the registry itself cannot be searched).
struct State {
    registry: Registry,
    handles: HashMap<String, Box<dyn Any + Send + Sync>>,
}

fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    // A poisoned lock only means a panic elsewhere while registering or rendering; the
    // registry is still consistent (a metric is pushed whole), and metrics that stop working
    // for the rest of the process would be worse.
    STATE
        .get_or_init(|| {
            Mutex::new(State {
                registry: Registry::default(),
                handles: HashMap::new(),
            })
        })
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Registers `make()` as `name` unless a metric is already exposed as `exposed`, and returns a
/// handle sharing the registered metric's storage.
fn register<M>(name: &str, exposed: String, help: &str, make: impl FnOnce() -> M) -> M
where
    M: Metric + Clone,
{
    let mut state = state();
    if let Some(existing) = state.handles.get(&exposed) {
        if let Some(handle) = existing.downcast_ref::<M>() {
            return handle.clone();
        }
        tracing::error!(
            metric = %exposed,
            "a metric is declared twice with different types; the second declaration is not exported"
        );
        return make();
    }
    let metric = make();
    let help = help.strip_suffix('.').unwrap_or(help);
    state.registry.register(name, help, metric.clone());
    state.handles.insert(exposed, Box::new(metric.clone()));
    metric
}

/// `name` without a trailing `_total`, and the name the counter is exposed as.
fn counter_names(name: &str) -> (&str, String) {
    let base = name.strip_suffix("_total").unwrap_or(name);
    (base, format!("{base}_total"))
}

/// Declares a counter without labels (exposed as `<name>_total`) and returns its handle.
pub fn counter(name: &'static str, help: &'static str) -> Counter {
    let (base, exposed) = counter_names(name);
    register(base, exposed, help, Counter::default)
}

/// Declares a gauge without labels and returns its handle.
pub fn gauge(name: &'static str, help: &'static str) -> Gauge {
    register(name, name.to_owned(), help, Gauge::default)
}

/// Declares a histogram without labels with these bucket bounds (see [`DURATION_BUCKETS`]) and
/// returns its handle. `name` carries the unit (`…_duration_seconds`).
pub fn histogram(name: &'static str, help: &'static str, buckets: &[f64]) -> Histogram {
    register(name, name.to_owned(), help, || {
        Histogram::new(buckets.iter().copied())
    })
}

/// Declares a family of counters, one per label set `L` (exposed as `<name>_total{…}`), and
/// returns its handle. Label values must come from a bounded set: each distinct set is a
/// series kept for the life of the process.
pub fn counter_family<L>(name: &'static str, help: &'static str) -> Family<L, Counter>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let (base, exposed) = counter_names(name);
    register(base, exposed, help, Family::default)
}

/// Declares a family of gauges, one per label set `L`, and returns its handle.
pub fn gauge_family<L>(name: &'static str, help: &'static str) -> Family<L, Gauge>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    register(name, name.to_owned(), help, Family::default)
}

/// Declares a family of histograms, one per label set `L`, each with these bucket bounds, and
/// returns its handle.
pub fn histogram_family<L>(
    name: &'static str,
    help: &'static str,
    buckets: &[f64],
) -> HistogramFamily<L>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    register(name, name.to_owned(), help, || {
        Family::new_with_constructor(Buckets::new(buckets))
    })
}

/// Every registered metric in the Prometheus text format 0.0.4, to be served as
/// [`CONTENT_TYPE`].
pub fn render() -> String {
    let state = state();
    let mut out = String::new();
    // Writing into a `String` cannot fail; should the encoder ever report an error, what was
    // written is still the best answer a scraper can get.
    if let Err(err) = prometheus_text::encode(&mut out, &state.registry) {
        tracing::warn!(error = %err, "encoding the metrics failed part way");
    }
    out
}

/// The canonical upper-snake name of a gRPC status code (`OK`, `INVALID_ARGUMENT`, …), as the
/// gRPC specification and other languages' metrics spell it; tonic's `description()` is prose.
pub fn grpc_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The label value for whatever cannot be named without unbounded cardinality.
const UNKNOWN: &str = "unknown";

/// The route label of an HTTP request no route matched.
const UNMATCHED: &str = "unmatched";

/// How many distinct method names a service given by name alone may get as labels before the
/// rest are `unknown`: far above any real service, small enough that a flood of made-up
/// method names cannot grow the exposition.
const MAX_LEARNED_METHODS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcCallLabels {
    service: String,
    method: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcMethodLabels {
    service: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpRequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpRouteLabels {
    route: String,
    method: &'static str,
}

/// The layers' own metrics, declared through the same functions as any service's.
struct LayerMetrics {
    grpc_requests: Family<GrpcCallLabels, Counter>,
    grpc_duration: HistogramFamily<GrpcMethodLabels>,
    http_requests: Family<HttpRequestLabels, Counter>,
    http_duration: HistogramFamily<HttpRouteLabels>,
}

fn layer_metrics() -> &'static LayerMetrics {
    static METRICS: OnceLock<LayerMetrics> = OnceLock::new();
    METRICS.get_or_init(|| LayerMetrics {
        grpc_requests: counter_family(
            "agriportal_grpc_server_requests",
            "gRPC calls handled, by service, method and status code",
        ),
        grpc_duration: histogram_family(
            "agriportal_grpc_server_duration_seconds",
            "Time from receiving a gRPC call to its final status, by service and method",
            &DURATION_BUCKETS,
        ),
        http_requests: counter_family(
            "agriportal_http_server_requests",
            "HTTP requests answered, by route template, method and status",
        ),
        http_duration: histogram_family(
            "agriportal_http_server_duration_seconds",
            "Time from receiving an HTTP request to its response headers, by route template and method",
            &DURATION_BUCKETS,
        ),
    })
}

/// Which methods of a known gRPC service get their own label.
#[derive(Debug)]
enum Methods {
    /// Exactly these (given as `service/Method`).
    Listed(HashSet<String>),
    /// Any well-formed name a call answered with something else than `UNIMPLEMENTED`, up to
    /// [`MAX_LEARNED_METHODS`] (the service was given by name alone).
    Learned(Mutex<HashSet<String>>),
}

/// The gRPC services (and methods) a server knows: everything else is `unknown`.
#[derive(Debug, Default)]
struct KnownServices {
    services: HashMap<String, Methods>,
}

impl KnownServices {
    fn new(known: Vec<String>) -> Self {
        let mut services: HashMap<String, Methods> = HashMap::new();
        for entry in known {
            let entry = entry.trim_start_matches('/');
            match entry.split_once('/') {
                Some((service, method)) => {
                    let methods = services
                        .entry(service.to_owned())
                        .or_insert_with(|| Methods::Listed(HashSet::new()));
                    // A service also given by name alone already accepts every method.
                    if let Methods::Listed(listed) = methods {
                        listed.insert(method.to_owned());
                    }
                }
                None => {
                    services.insert(
                        entry.to_owned(),
                        Methods::Learned(Mutex::new(HashSet::new())),
                    );
                }
            }
        }
        KnownServices { services }
    }

    /// The service and method of `path` (`/<service>/<method>`) when the service is known.
    fn target(&self, path: &str) -> Option<(String, String)> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        if method.is_empty() || method.contains('/') || !self.services.contains_key(service) {
            return None;
        }
        Some((service.to_owned(), method.to_owned()))
    }

    /// The `service` and `method` labels of a call to `target` that ended with `code`. Decided
    /// at the end of the call, because only then is it known whether the method exists.
    fn labels(&self, target: Option<(String, String)>, code: Code) -> (String, String) {
        let unknown = || (UNKNOWN.to_owned(), UNKNOWN.to_owned());
        let Some((service, method)) = target else {
            return unknown();
        };
        let Some(methods) = self.services.get(&service) else {
            return unknown();
        };
        let named = match methods {
            Methods::Listed(listed) => listed.contains(&method),
            Methods::Learned(seen) => {
                let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                if seen.contains(&method) {
                    true
                } else if code != Code::Unimplemented
                    && seen.len() < MAX_LEARNED_METHODS
                    && is_identifier(&method)
                {
                    seen.insert(method.clone());
                    true
                } else {
                    false
                }
            }
        };
        if named {
            (service, method)
        } else {
            (service, UNKNOWN.to_owned())
        }
    }
}

/// A protobuf identifier, as every real method name is: short, ASCII letters, digits and `_`.
fn is_identifier(name: &str) -> bool {
    name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `grpc-status` in `headers`, if any: in the response headers of a "trailers-only"
/// response, or in the trailers at the end of the body.
fn status_in(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get(tonic::Status::GRPC_STATUS)
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// The code a client infers for a response that ends without any `grpc-status`, following
/// gRPC's HTTP-to-gRPC status mapping as tonic's client does.
fn status_from_http(status: http::StatusCode) -> Code {
    match status {
        http::StatusCode::BAD_REQUEST => Code::Internal,
        http::StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        http::StatusCode::FORBIDDEN => Code::PermissionDenied,
        http::StatusCode::NOT_FOUND => Code::Unimplemented,
        http::StatusCode::TOO_MANY_REQUESTS
        | http::StatusCode::BAD_GATEWAY
        | http::StatusCode::SERVICE_UNAVAILABLE
        | http::StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The code of a service error: tonic's server answers a `tonic::Status` error (bare or boxed)
/// with that status; any other error aborts the stream, which a client sees as no status.
fn status_of_error<E: 'static>(err: &E) -> Code {
    let any: &dyn Any = err;
    if let Some(status) = any.downcast_ref::<tonic::Status>() {
        return status.code();
    }
    if let Some(boxed) = any.downcast_ref::<Box<dyn std::error::Error + Send + Sync>>() {
        if let Some(status) = boxed.downcast_ref::<tonic::Status>() {
            return status.code();
        }
    }
    Code::Unknown
}

/// One gRPC call in flight, recorded exactly once: when its status is known, or as
/// `CANCELLED` when it is dropped before that (the client went away, or the server dropped
/// the response).
#[derive(Debug)]
struct GrpcCall {
    known: Arc<KnownServices>,
    target: Option<(String, String)>,
    started: Instant,
    http_status: http::StatusCode,
    recorded: bool,
}

impl GrpcCall {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let (service, method) = self.known.labels(self.target.take(), code);
        let metrics = layer_metrics();
        metrics
            .grpc_duration
            .get_or_create(&GrpcMethodLabels {
                service: service.clone(),
                method: method.clone(),
            })
            .observe(self.started.elapsed().as_secs_f64());
        metrics
            .grpc_requests
            .get_or_create(&GrpcCallLabels {
                service,
                method,
                code: grpc_code_name(code),
            })
            .inc();
    }
}

impl Drop for GrpcCall {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// Counts and times every gRPC call:
/// `agriportal_grpc_server_requests_total{service,method,code}` and
/// `agriportal_grpc_server_duration_seconds{service,method}`, recorded when the call ends.
///
/// The status is read where gRPC puts it: in the response headers of a "trailers-only"
/// response (errors tonic produces before a body, and the load-shedding layer's refusals), or
/// else in the `grpc-status` trailer at the end of the body, which is why the response body is
/// wrapped ([`GrpcMetricsBody`]; its frames pass through untouched). A body that ends without
/// a status gets the code a client would infer (HTTP 200 without status: `UNKNOWN`); a body
/// error aborts the stream (`INTERNAL`); a call dropped before its status is `CANCELLED`.
///
/// Label cardinality is bounded by the services passed to [`GrpcMetricsLayer::new`]: a path
/// that is not `/<known service>/<method>` is `service="unknown", method="unknown"`. Put the
/// layer outside (before) the load-shedding layer so that shed calls are counted too.
#[derive(Clone, Debug, Default)]
pub struct GrpcMetricsLayer {
    known: Arc<KnownServices>,
}

impl GrpcMetricsLayer {
    /// A layer for a server of these services. An entry is either a full service name
    /// (`agriportal.marketplace.v1.MarketplaceIngest`): its methods are labelled by name,
    /// except those answered `UNIMPLEMENTED` (a method it does not have) and beyond 64
    /// distinct names; or `service/Method`: exactly the methods so listed are labelled, the
    /// service's other methods are `method="unknown"`.
    pub fn new(known: Vec<String>) -> Self {
        GrpcMetricsLayer {
            known: Arc::new(KnownServices::new(known)),
        }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            known: self.known.clone(),
        }
    }
}

/// The service of [`GrpcMetricsLayer`].
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    known: Arc<KnownServices>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: 'static,
    ResBody: Body,
{
    type Response = http::Response<GrpcMetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = GrpcMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = GrpcCall {
            target: self.known.target(request.uri().path()),
            known: self.known.clone(),
            started: Instant::now(),
            http_status: http::StatusCode::OK,
            recorded: false,
        };
        GrpcMetricsFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

pin_project! {
    /// The response future of [`GrpcMetrics`].
    #[derive(Debug)]
    pub struct GrpcMetricsFuture<F> {
        #[pin]
        inner: F,
        call: Option<GrpcCall>,
    }
}

impl<F, ResBody, E> Future for GrpcMetricsFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Body,
    E: 'static,
{
    type Output = Result<http::Response<GrpcMetricsBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        match result {
            Ok(response) => {
                if let Some(call) = call.as_mut() {
                    call.http_status = response.status();
                    if let Some(code) = status_in(response.headers()) {
                        // Trailers-only: the status is final, whatever the (empty) body does.
                        call.finish(code);
                    } else if response.body().is_end_stream() {
                        // Nothing will poll an ended body: the call is over without a status.
                        call.finish(status_from_http(response.status()));
                    }
                }
                let call = call.filter(|call| !call.recorded);
                Poll::Ready(Ok(response.map(|inner| GrpcMetricsBody { inner, call })))
            }
            Err(err) => {
                if let Some(call) = call.as_mut() {
                    call.finish(status_of_error(&err));
                }
                Poll::Ready(Err(err))
            }
        }
    }
}

pin_project! {
    /// A gRPC response body that records its call when the status trailer passes, the body
    /// ends, or it is dropped; every frame passes through unchanged.
    #[derive(Debug)]
    pub struct GrpcMetricsBody<B> {
        #[pin]
        inner: B,
        call: Option<GrpcCall>,
    }
}

impl<B: Default> Default for GrpcMetricsBody<B> {
    /// An empty body that records nothing, so that layers which build their own responses
    /// (they need `Default` bodies) still compose with this one.
    fn default() -> Self {
        GrpcMetricsBody {
            inner: B::default(),
            call: None,
        }
    }
}

impl<B: Body> Body for GrpcMetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(call) = this.call.as_mut() {
            let code = match &frame {
                Some(Ok(frame)) => match frame.trailers_ref() {
                    Some(trailers) => {
                        Some(status_in(trailers).unwrap_or(status_from_http(call.http_status)))
                    }
                    // hyper stops polling once a body says it ended, so this data frame
                    // may be the last thing seen of it.
                    None if this.inner.is_end_stream() => Some(status_from_http(call.http_status)),
                    None => None,
                },
                Some(Err(_)) => Some(Code::Internal),
                None => Some(status_from_http(call.http_status)),
            };
            if let Some(code) = code {
                call.finish(code);
                *this.call = None;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts and times every HTTP request:
/// `agriportal_http_server_requests_total{route,method,status}` and
/// `agriportal_http_server_duration_seconds{route,method}`, recorded when the response headers
/// are ready (the services' handlers answer with whole bodies). The response passes
/// through untouched; a request dropped before its response is not counted.
///
/// `route` is axum's [`MatchedPath`], the route template (`/api/v1/provinces/{code}`), and
/// `unmatched` for a request no route matched, so raw paths never become labels; methods
/// outside the standard nine are `other`. The matched path exists only after routing: add the
/// layer with [`axum::Router::layer`] (which wraps every route and the fallback, after
/// routing), and after the routes *and* the fallbacks, since routes added later are not
/// wrapped (in `crate::http::serve`, after its `fallback`). Wrapped around the whole router
/// from outside (`ServiceBuilder::new().layer(…).service(router)`) it would run before
/// routing and label everything `unmatched`; added with `Router::route_layer` it would skip
/// the fallback and never count an unmatched request. axum sets the matched path only with its
/// `matched-path` feature, which this crate's `Cargo.toml` enables.
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpMetricsLayer;

impl HttpMetricsLayer {
    /// The layer; it has no settings.
    pub fn new() -> Self {
        HttpMetricsLayer
    }
}

impl<S> tower::Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics { inner }
    }
}

/// The service of [`HttpMetricsLayer`].
#[derive(Clone, Debug)]
pub struct HttpMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for HttpMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = HttpMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| UNMATCHED.to_owned(), |path| path.as_str().to_owned());
        let request_labels = HttpRouteLabels {
            route,
            method: method_label(request.method()),
        };
        HttpMetricsFuture {
            inner: self.inner.call(request),
            labels: Some(request_labels),
            started: Instant::now(),
        }
    }
}

/// The method label: one of the nine standard methods, or `other` (extension methods are
/// arbitrary tokens a client chooses).
fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

pin_project! {
    /// The response future of [`HttpMetrics`].
    #[derive(Debug)]
    pub struct HttpMetricsFuture<F> {
        #[pin]
        inner: F,
        labels: Option<HttpRouteLabels>,
        started: Instant,
    }
}

impl<F, ResBody, E> Future for HttpMetricsFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        // An error has no status to label; axum's routes cannot fail (their error type is
        // `Infallible`), so only responses are counted.
        if let (Some(labels), Ok(response)) = (this.labels.take(), &result) {
            let metrics = layer_metrics();
            metrics
                .http_duration
                .get_or_create(&labels)
                .observe(this.started.elapsed().as_secs_f64());
            metrics
                .http_requests
                .get_or_create(&HttpRequestLabels {
                    route: labels.route,
                    method: labels.method,
                    status: response.status().as_u16(),
                })
                .inc();
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    /// Lines of `text` that start with `prefix`.
    fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .collect()
    }

    /// The value of the sample line `series` (name and labels exactly), parsed as the tests of
    /// the code base do: split on the last space, parse an integer.
    fn sample(text: &str, series: &str) -> Option<u64> {
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<u64>().ok())?
        })
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct OutcomeLabels {
        outcome: &'static str,
    }

    #[test]
    fn declared_metrics_render_with_help_and_type_once() {
        let rounds = counter_family::<OutcomeLabels>(
            "agriportal_test_render_rounds",
            "Reconcile rounds, by outcome.",
        );
        let shed = counter("agriportal_test_render_shed_total", "Calls shed");
        let mismatched = gauge("agriportal_test_render_mismatched", "Cells that differ");
        let depth = gauge_family::<OutcomeLabels>("agriportal_test_render_depth", "Queue depth");
        let latency = histogram(
            "agriportal_test_render_latency_seconds",
            "Latency",
            &DURATION_BUCKETS,
        );
        let by_outcome = histogram_family::<OutcomeLabels>(
            "agriportal_test_render_by_outcome_seconds",
            "Latency by outcome",
            &[0.1, 1.0],
        );
        rounds
            .get_or_create(&OutcomeLabels {
                outcome: "compared",
            })
            .inc_by(3);
        shed.inc();
        mismatched.set(-2);
        depth.get_or_create(&OutcomeLabels { outcome: "a" }).set(7);
        latency.observe(0.003);
        by_outcome
            .get_or_create(&OutcomeLabels { outcome: "a" })
            .observe(0.5);

        let text = render();
        for (name, kind, help) in [
            (
                "agriportal_test_render_rounds_total",
                "counter",
                "Reconcile rounds, by outcome.",
            ),
            (
                "agriportal_test_render_shed_total",
                "counter",
                "Calls shed.",
            ),
            (
                "agriportal_test_render_mismatched",
                "gauge",
                "Cells that differ.",
            ),
            ("agriportal_test_render_depth", "gauge", "Queue depth."),
            (
                "agriportal_test_render_latency_seconds",
                "histogram",
                "Latency.",
            ),
            (
                "agriportal_test_render_by_outcome_seconds",
                "histogram",
                "Latency by outcome.",
            ),
        ] {
            assert_eq!(
                lines_starting(&text, &format!("# HELP {name} ")),
                vec![format!("# HELP {name} {help}")],
                "{text}"
            );
            assert_eq!(
                lines_starting(&text, &format!("# TYPE {name} ")),
                vec![format!("# TYPE {name} {kind}")],
                "{text}"
            );
        }
        // Counters and gauges are integers, as the code base's tests parse them.
        assert_eq!(
            sample(
                &text,
                "agriportal_test_render_rounds_total{outcome=\"compared\"}"
            ),
            Some(3)
        );
        assert_eq!(sample(&text, "agriportal_test_render_shed_total"), Some(1));
        assert!(
            text.contains("\nagriportal_test_render_mismatched -2\n"),
            "{text}"
        );
        assert_eq!(
            sample(&text, "agriportal_test_render_depth{outcome=\"a\"}"),
            Some(7)
        );
        assert_eq!(
            sample(
                &text,
                "agriportal_test_render_latency_seconds_bucket{le=\"0.005\"}"
            ),
            Some(1)
        );
        assert_eq!(
            sample(&text, "agriportal_test_render_latency_seconds_count"),
            Some(1)
        );
        assert_eq!(
            sample(
                &text,
                "agriportal_test_render_by_outcome_seconds_bucket{outcome=\"a\",le=\"0.1\"}"
            ),
            Some(0)
        );
        assert_eq!(
            sample(
                &text,
                "agriportal_test_render_by_outcome_seconds_bucket{outcome=\"a\",le=\"+Inf\"}"
            ),
            Some(1)
        );
        assert!(!text.contains("# EOF"), "Prometheus text, not OpenMetrics");
        assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn registering_a_name_again_returns_the_same_metric() {
        let first = counter_family::<OutcomeLabels>("agriportal_test_idem_rounds", "First help");
        // As a second test (or a second service instance) initialising its metrics would.
        let second = counter_family::<OutcomeLabels>("agriportal_test_idem_rounds", "Other help");
        // With the suffix the encoder adds: still the same metric, and no debug-build panic.
        let third =
            counter_family::<OutcomeLabels>("agriportal_test_idem_rounds_total", "Third help");
        let labels = OutcomeLabels { outcome: "x" };
        first.get_or_create(&labels).inc();
        second.get_or_create(&labels).inc();
        third.get_or_create(&labels).inc();
        assert_eq!(first.get_or_create(&labels).get(), 3);

        let plain = counter("agriportal_test_idem_plain", "Plain");
        counter("agriportal_test_idem_plain", "Plain").inc_by(2);
        assert_eq!(plain.get(), 2);
        let hist = histogram("agriportal_test_idem_seconds", "H", &[1.0]);
        histogram("agriportal_test_idem_seconds", "H", &[1.0, 2.0]).observe(0.5);
        hist.observe(0.25);

        // The same name with another type: not exported, but no panic either.
        let clash = gauge_family::<OutcomeLabels>("agriportal_test_idem_plain_total", "Clash");
        clash.get_or_create(&labels).set(5);

        let text = render();
        assert_eq!(
            lines_starting(&text, "# HELP agriportal_test_idem_rounds_total "),
            vec!["# HELP agriportal_test_idem_rounds_total First help."]
        );
        assert_eq!(
            lines_starting(&text, "# TYPE agriportal_test_idem_plain_total ").len(),
            1
        );
        assert_eq!(sample(&text, "agriportal_test_idem_plain_total"), Some(2));
        assert!(
            !text.contains("agriportal_test_idem_plain_total{"),
            "{text}"
        );
        assert_eq!(
            lines_starting(&text, "# TYPE agriportal_test_idem_seconds ").len(),
            1
        );
        assert_eq!(sample(&text, "agriportal_test_idem_seconds_count"), Some(2));
        // The first declaration's buckets.
        assert!(
            !text.contains("agriportal_test_idem_seconds_bucket{le=\"2\"}"),
            "{text}"
        );
    }

    #[test]
    fn grpc_code_names_are_canonical() {
        assert_eq!(grpc_code_name(Code::Ok), "OK");
        assert_eq!(grpc_code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(
            grpc_code_name(Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
        assert_eq!(grpc_code_name(Code::Unauthenticated), "UNAUTHENTICATED");
        for i in 0..=16 {
            let name = grpc_code_name(Code::from_i32(i));
            assert!(name.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        }
    }

    type TestBody = tonic::body::Body;

    /// The calls counted for `service`/`method` ending with `code`.
    fn grpc_calls(service: &str, method: &str, code: &'static str) -> u64 {
        layer_metrics()
            .grpc_requests
            .get(&GrpcCallLabels {
                service: service.into(),
                method: method.into(),
                code,
            })
            .map_or(0, |c| c.get())
    }

    /// The durations observed for `service`/`method` (read from the exposition: a
    /// histogram's count is not public outside `prometheus-client`'s test builds).
    fn grpc_durations(service: &str, method: &str) -> u64 {
        sample(
            &render(),
            &format!(
                "agriportal_grpc_server_duration_seconds_count{{service=\"{service}\",method=\"{method}\"}}"
            ),
        )
        .unwrap_or(0)
    }

    fn grpc_request(path: &str) -> http::Request<TestBody> {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .body(TestBody::empty())
            .unwrap_or_else(|err| panic!("request: {err}"))
    }

    /// A body of one empty gRPC message followed by these trailers.
    fn body_with_trailers(trailers: http::HeaderMap) -> TestBody {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
            Ok(Frame::trailers(trailers)),
        ];
        TestBody::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    fn grpc_trailers(code: Code) -> http::HeaderMap {
        let mut trailers = http::HeaderMap::new();
        trailers.insert(
            tonic::Status::GRPC_STATUS,
            http::HeaderValue::from(code as i32),
        );
        trailers
    }

    /// A hand-built gRPC service answering by path: `/…/TrailersOnly` a trailers-only
    /// `INVALID_ARGUMENT`, `/…/Exhausted` a body ending in a `RESOURCE_EXHAUSTED` trailer,
    /// `/…/NoStatus` a body that ends without one, anything else a body ending in `OK`.
    fn hand_built() -> impl tower::Service<
        http::Request<TestBody>,
        Response = http::Response<TestBody>,
        Error = Infallible,
    > + Clone {
        tower::service_fn(|request: http::Request<TestBody>| async move {
            let path = request.uri().path().to_owned();
            let response = if path.ends_with("/TrailersOnly") {
                tonic::Status::invalid_argument("bad batch").into_http::<TestBody>()
            } else if path.ends_with("/Exhausted") {
                http::Response::new(body_with_trailers(grpc_trailers(Code::ResourceExhausted)))
            } else if path.ends_with("/NoStatus") {
                http::Response::new(TestBody::new(http_body_util::Full::new(
                    Bytes::from_static(&[0, 0, 0, 0, 0]),
                )))
            } else {
                http::Response::new(body_with_trailers(grpc_trailers(Code::Ok)))
            };
            Ok::<_, Infallible>(response)
        })
    }

    #[tokio::test]
    async fn grpc_layer_records_trailers_only_and_trailer_statuses() {
        const SERVICE: &str = "agriportal.test.v1.Layered";
        let layer = GrpcMetricsLayer::new(vec![SERVICE.into()]);
        let service = tower::Layer::layer(&layer, hand_built());

        // (a) Trailers-only error: the status is in the response headers.
        let response = service
            .clone()
            .oneshot(grpc_request(&format!("/{SERVICE}/TrailersOnly")))
            .await
            .unwrap_or_else(|err| match err {});
        assert_eq!(
            response.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );
        assert_eq!(grpc_calls(SERVICE, "TrailersOnly", "INVALID_ARGUMENT"), 1);
        assert_eq!(grpc_durations(SERVICE, "TrailersOnly"), 1);
        let collected = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(collected.to_bytes().is_empty());
        assert_eq!(grpc_durations(SERVICE, "TrailersOnly"), 1, "recorded once");

        // (b) A normal body with `grpc-status: 0` in its trailers: recorded when they pass,
        // and passed on unchanged.
        let response = service
            .clone()
            .oneshot(grpc_request(&format!("/{SERVICE}/PushSales")))
            .await
            .unwrap_or_else(|err| match err {});
        assert_eq!(grpc_calls(SERVICE, "PushSales", "OK"), 0, "not over yet");
        let collected = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(collected.trailers(), Some(&grpc_trailers(Code::Ok)));
        assert_eq!(&collected.to_bytes()[..], &[0, 0, 0, 0, 0]);
        assert_eq!(grpc_calls(SERVICE, "PushSales", "OK"), 1);
        assert_eq!(grpc_durations(SERVICE, "PushSales"), 1);

        // An error status in the trailers.
        let response = service
            .clone()
            .oneshot(grpc_request(&format!("/{SERVICE}/Exhausted")))
            .await
            .unwrap_or_else(|err| match err {});
        let _ = response.into_body().collect().await;
        assert_eq!(grpc_calls(SERVICE, "Exhausted", "RESOURCE_EXHAUSTED"), 1);

        // A body that ends without a status: what a client infers from HTTP 200.
        let response = service
            .clone()
            .oneshot(grpc_request(&format!("/{SERVICE}/NoStatus")))
            .await
            .unwrap_or_else(|err| match err {});
        let _ = response.into_body().collect().await;
        assert_eq!(grpc_calls(SERVICE, "NoStatus", "UNKNOWN"), 1);

        // A body dropped before its trailers: the client went away.
        let response = service
            .clone()
            .oneshot(grpc_request(&format!("/{SERVICE}/Dropped")))
            .await
            .unwrap_or_else(|err| match err {});
        let mut body = response.into_body();
        let first = body.frame().await;
        assert!(matches!(first, Some(Ok(ref frame)) if frame.is_data()));
        drop(body);
        assert_eq!(grpc_calls(SERVICE, "Dropped", "CANCELLED"), 1);
        assert_eq!(grpc_calls(SERVICE, "Dropped", "OK"), 0);
    }

    #[tokio::test]
    async fn grpc_layer_bounds_service_and_method_labels() {
        const LEARNED: &str = "agriportal.test.v1.Learned";
        const LISTED: &str = "agriportal.test.v1.Listed";
        let layer = GrpcMetricsLayer::new(vec![LEARNED.into(), format!("/{LISTED}/Only")]);
        let unimplemented = tower::service_fn(|_: http::Request<TestBody>| async {
            Ok::<_, Infallible>(tonic::Status::unimplemented("").into_http::<TestBody>())
        });
        let service = tower::Layer::layer(&layer, hand_built());
        for path in [
            "/agriportal.test.v1.Stranger/PushSales".to_owned(),
            "/metrics".to_owned(),
            format!("/{LEARNED}/"),
            format!("/{LEARNED}/A/B"),
        ] {
            let response = service
                .clone()
                .oneshot(grpc_request(&path))
                .await
                .unwrap_or_else(|err| match err {});
            let _ = response.into_body().collect().await;
        }
        assert_eq!(grpc_calls(UNKNOWN, UNKNOWN, "OK"), 4);

        let response = service
            .clone()
            .oneshot(grpc_request(&format!("/{LEARNED}/Real")))
            .await
            .unwrap_or_else(|err| match err {});
        let _ = response.into_body().collect().await;
        assert_eq!(grpc_calls(LEARNED, "Real", "OK"), 1);

        // A method the service does not have is answered UNIMPLEMENTED: not a new series.
        let missing = tower::Layer::layer(&layer, unimplemented);
        for method in ["Made", "Up"] {
            let _ = missing
                .clone()
                .oneshot(grpc_request(&format!("/{LEARNED}/{method}")))
                .await;
        }
        assert_eq!(grpc_calls(LEARNED, UNKNOWN, "UNIMPLEMENTED"), 2);
        assert_eq!(grpc_calls(LEARNED, "Made", "UNIMPLEMENTED"), 0);

        // Listed methods only.
        for method in ["Only", "Other"] {
            let response = service
                .clone()
                .oneshot(grpc_request(&format!("/{LISTED}/{method}")))
                .await
                .unwrap_or_else(|err| match err {});
            let _ = response.into_body().collect().await;
        }
        assert_eq!(grpc_calls(LISTED, "Only", "OK"), 1);
        assert_eq!(grpc_calls(LISTED, UNKNOWN, "OK"), 1);
        assert_eq!(grpc_calls(LISTED, "Other", "OK"), 0);
    }

    /// A gRPC request to `path` carrying one message.
    fn grpc_message_request(path: &str, message: &impl prost::Message) -> http::Request<TestBody> {
        let encoded = message.encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(
            &u32::try_from(encoded.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        framed.extend_from_slice(&encoded);
        let mut request = grpc_request(path);
        *request.body_mut() = TestBody::new(http_body_util::Full::new(Bytes::from(framed)));
        request
            .headers_mut()
            .insert("te", http::HeaderValue::from_static("trailers"));
        request
    }

    #[tokio::test]
    async fn grpc_layer_counts_a_tonic_services_calls() {
        // A real tonic service (health) behind the layer: tonic answers a handler's error
        // trailers-only and a success with a `grpc-status` trailer.
        const HEALTH: &str = "grpc.health.v1.Health";
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let layer = GrpcMetricsLayer::new(vec![HEALTH.into()]);

        // The layer fits `Server::builder().layer(…)` (this only type-checks the server).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|err| panic!("bind: {err}"));
        let server = tonic::transport::Server::builder()
            .layer(layer.clone())
            .layer(crate::limits::ConcurrencyLimitLayer::new(4))
            .add_service(health.clone())
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        drop(server);

        let service = tower::Layer::layer(&layer, tonic::service::Routes::new(health));
        let path = format!("/{HEALTH}/Check");
        let ok = service
            .clone()
            .oneshot(grpc_message_request(
                &path,
                &tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                },
            ))
            .await
            .unwrap_or_else(|err| match err {});
        assert_eq!(ok.status(), http::StatusCode::OK);
        assert!(
            ok.headers().get("grpc-status").is_none(),
            "status in trailers"
        );
        assert_eq!(
            grpc_calls(HEALTH, "Check", "OK"),
            0,
            "not over before the trailers"
        );
        let collected = ok
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            collected
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
        assert_eq!(grpc_calls(HEALTH, "Check", "OK"), 1);

        let missing = service
            .clone()
            .oneshot(grpc_message_request(
                &path,
                &tonic_health::pb::HealthCheckRequest {
                    service: "no.such.Service".into(),
                },
            ))
            .await
            .unwrap_or_else(|err| match err {});
        assert_eq!(
            missing.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"5"[..]),
            "trailers-only"
        );
        let _ = missing.into_body().collect().await;
        assert_eq!(grpc_calls(HEALTH, "Check", "NOT_FOUND"), 1);

        let text = render();
        assert_eq!(
            sample(
                &text,
                "agriportal_grpc_server_requests_total{service=\"grpc.health.v1.Health\",method=\"Check\",code=\"OK\"}"
            ),
            Some(1)
        );
        assert_eq!(
            sample(
                &text,
                "agriportal_grpc_server_duration_seconds_count{service=\"grpc.health.v1.Health\",method=\"Check\"}"
            ),
            Some(2)
        );
    }

    /// The requests counted for `route`/`method`/`status`.
    fn http_requests(route: &str, method: &'static str, status: u16) -> u64 {
        layer_metrics()
            .http_requests
            .get(&HttpRequestLabels {
                route: route.into(),
                method,
                status,
            })
            .map_or(0, |c| c.get())
    }

    #[tokio::test]
    async fn http_layer_labels_routes_by_template_and_the_rest_unmatched() {
        const ROUTE: &str = "/metrics-test/v1/provinces/{code}";
        let router = axum::Router::new()
            .route(
                ROUTE,
                axum::routing::get(|| async { ([("x-test", "kept")], "province") }),
            )
            .layer(HttpMetricsLayer::new());
        let request = |method: &str, path: &str| {
            http::Request::builder()
                .method(method)
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap_or_else(|err| panic!("request: {err}"))
        };

        for code in ["01", "79"] {
            let response = router
                .clone()
                .oneshot(request(
                    "GET",
                    &format!("/metrics-test/v1/provinces/{code}"),
                ))
                .await
                .unwrap_or_else(|err| match err {});
            // The response is the handler's, untouched.
            assert_eq!(response.status(), http::StatusCode::OK);
            assert_eq!(
                response.headers().get("x-test").map(|v| v.as_bytes()),
                Some(&b"kept"[..])
            );
            let body = response
                .into_body()
                .collect()
                .await
                .unwrap_or_else(|err| panic!("{err}"))
                .to_bytes();
            assert_eq!(&body[..], b"province");
        }
        let response = router
            .clone()
            .oneshot(request("GET", "/metrics-test/nowhere/12345"))
            .await
            .unwrap_or_else(|err| match err {});
        assert_eq!(response.status(), http::StatusCode::NOT_FOUND);
        let response = router
            .clone()
            .oneshot(request("PURGE", "/metrics-test/v1/provinces/01"))
            .await
            .unwrap_or_else(|err| match err {});
        assert_eq!(response.status(), http::StatusCode::METHOD_NOT_ALLOWED);

        assert_eq!(http_requests(ROUTE, "GET", 200), 2);
        assert_eq!(http_requests(UNMATCHED, "GET", 404), 1);
        assert_eq!(http_requests(ROUTE, "other", 405), 1);
        let text = render();
        assert_eq!(
            sample(
                &text,
                "agriportal_http_server_duration_seconds_count{route=\"/metrics-test/v1/provinces/{code}\",method=\"GET\"}"
            ),
            Some(2)
        );
        assert!(!text.contains("/metrics-test/v1/provinces/01"), "{text}");
        assert!(!text.contains("nowhere"), "{text}");
        assert_eq!(
            sample(
                &text,
                "agriportal_http_server_requests_total{route=\"/metrics-test/v1/provinces/{code}\",method=\"GET\",status=\"200\"}"
            ),
            Some(2)
        );
    }

    #[test]
    fn promtool_accepts_the_exposition() {
        // Every kind of metric, with and without labels, and label values that need escaping.
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct PartnerLabels {
            partner: String,
            kind: &'static str,
        }
        let records = counter_family::<PartnerLabels>(
            "agriportal_test_promtool_records",
            "Records stored, by partner and kind",
        );
        records
            .get_or_create(&PartnerLabels {
                partner: "quote\" backslash\\ newline\n".into(),
                kind: "sales",
            })
            .inc_by(12);
        counter("agriportal_test_promtool_shed", "Calls shed").inc();
        gauge("agriportal_test_promtool_cells", "Cells that differ").set(4);
        gauge_family::<OutcomeLabels>("agriportal_test_promtool_depth", "Depth")
            .get_or_create(&OutcomeLabels { outcome: "x" })
            .set(-1);
        histogram(
            "agriportal_test_promtool_duration_seconds",
            "Duration",
            &DURATION_BUCKETS,
        )
        .observe(0.2);
        histogram_family::<OutcomeLabels>(
            "agriportal_test_promtool_step_seconds",
            "Step duration",
            &DURATION_BUCKETS,
        )
        .get_or_create(&OutcomeLabels { outcome: "x" })
        .observe(3.0);
        // The layers' own metrics, with a series each.
        let mut call = GrpcCall {
            known: Arc::new(KnownServices::new(vec![
                "agriportal.test.v1.Promtool".into()
            ])),
            target: Some(("agriportal.test.v1.Promtool".into(), "Check".into())),
            started: Instant::now(),
            http_status: http::StatusCode::OK,
            recorded: false,
        };
        call.finish(Code::Ok);
        let metrics = layer_metrics();
        let labels = HttpRouteLabels {
            route: "/promtool/{id}".into(),
            method: "GET",
        };
        metrics.http_duration.get_or_create(&labels).observe(0.01);
        metrics
            .http_requests
            .get_or_create(&HttpRequestLabels {
                route: labels.route,
                method: labels.method,
                status: 200,
            })
            .inc();

        crate::testing::promtool_check("promtool_accepts_the_exposition", &render());
    }
}
