//! Logs and traces: `tracing` for both, exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set. The W3C trace context travels in gRPC metadata and in bus message headers, so one
//! trace runs partner → marketplace → bus → gateway.

use std::task::{Context as TaskContext, Poll};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Keeps the tracer provider alive; [`TelemetryGuard::shutdown`] flushes pending spans.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Flushes and stops the exporter; call after the servers have drained.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("telemetry flush failed: {err}");
        }
    }
}

/// Installs the global subscriber (logs to stderr, spans to OTLP when configured) and the W3C
/// propagator. Safe to call more than once (later calls keep the first subscriber).
pub fn init(config: &Config, service_name: &str) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name.to_string())
            .build(),
    );
    if let Some(endpoint) = &config.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    // The log filter applies to logs only: spans must exist at INFO for the trace context to
    // be carried along even when logs are quiet (AGRIPORTAL_LOG=warn).
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("agriportal"))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let filter = || EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(otel);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // A second init (tests starting several services) keeps the first subscriber.
    let _ = if config.log_format == "json" {
        registry.with(fmt.json().with_filter(filter())).try_init()
    } else {
        registry.with(fmt.with_filter(filter())).try_init()
    };
    Ok(TelemetryGuard { provider })
}

struct PairInjector<'a>(&'a mut Vec<(String, String)>);

impl Injector for PairInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

struct PairExtractor<'a>(&'a [(String, String)]);

impl Extractor for PairExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// The current span's trace context as headers (`traceparent`, `tracestate`).
pub fn current_context_headers() -> Vec<(String, String)> {
    let mut headers = Vec::new();
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut PairInjector(&mut headers));
    headers
}

/// Makes `span` a child of the trace context found in `headers`, if any.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &[(String, String)]) {
    let cx = TraceContextPropagator::new().extract(&PairExtractor(headers));
    let _ = span.set_parent(cx);
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Puts the current span's trace context into outgoing gRPC metadata (client side).
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    for (key, value) in current_context_headers() {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            metadata.insert(key, value);
        }
    }
}

/// Tower layer for servers: one span per request, child of the caller's W3C trace context.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service of [`TraceLayer`].
#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TraceService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The path is borrowed: the span's fields are formatted only if a subscriber records
        // them (a disabled span never reads them).
        let path = request.uri().path();
        let span = tracing::info_span!("request", otel.name = %path, path = %path);
        // Most requests carry no trace context: parsing the headers for one then only builds
        // an empty context, and a span with no parent set is a root already.
        if request.headers().contains_key("traceparent") {
            let cx = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
            let _ = span.set_parent(cx);
        }
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(future.instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_carries_its_parents_trace_into_headers() {
        let mut config = Config::embedded("unused");
        config.log = "error".into();
        let _guard = init(&config, "test").unwrap();
        let parent = vec![(
            "traceparent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        )];
        let span = tracing::info_span!("child");
        set_parent_from_headers(&span, &parent);
        let headers = span.in_scope(current_context_headers);
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "traceparent" && v.contains("4bf92f3577b34da6a3ce929d0e0e4736")),
            "{headers:?}"
        );
    }
}
