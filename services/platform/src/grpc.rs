//! gRPC server plumbing shared by every service: health, reflection, tracing, size limits,
//! load shedding, the mapping of tonic's own request-decoding failures onto the platform's
//! error vocabulary, and a drain-bounded graceful shutdown.

use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::access::AccessLayer;
use crate::config::GrpcLimits;
use crate::error::Error;
use crate::http::Readiness;
use crate::limits::ConcurrencyLimitLayer;
use crate::metrics::GrpcMetricsLayer;
use crate::telemetry::TraceLayer;
use crate::tls::ServerTls;
use futures::future::Either;

/// Largest request the server decodes. Services refuse batches above their own, smaller limit
/// with a message naming it; this outer bound only protects memory.
pub const MAX_DECODED_BYTES: usize = 16 * 1024 * 1024;

/// How often the named services' gRPC health follows the stores' readiness.
const READINESS_PERIOD: Duration = Duration::from_secs(2);

/// What bounds a gRPC server. What stands between a request and the handlers, in this order:
/// the access gate (token, role and the caller's own cap, from the headers), then the
/// process-wide concurrency limit; and the time and stream limits of each connection and call.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Who may call what, and each caller's cap of calls in flight.
    pub access: AccessLayer,
    /// Requests served at once (`--max-concurrent-requests`).
    pub concurrency: ConcurrencyLimitLayer,
    /// Timeouts, keepalive, streams per connection, connection age (`--grpc-*`).
    pub connection: GrpcLimits,
    /// TLS (`--tls-cert`, `--tls-key`), or plain when `None`.
    pub tls: Option<ServerTls>,
}

impl ServerLimits {
    /// `access` with the limits `config` sets.
    pub fn new(access: AccessLayer, config: &crate::Config) -> Self {
        ServerLimits {
            access,
            concurrency: ConcurrencyLimitLayer::from_config(config),
            connection: config.grpc_limits(),
            tls: None,
        }
    }

    /// The same, serving TLS with `tls` (whose certificate may be reloaded while serving).
    pub fn with_tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls;
        self
    }
}

/// Serves `routes` plus gRPC health and reflection on `listener` (over TLS when `limits.tls`
/// is set) until `shutdown` fires, then
/// lets in-flight calls finish for at most `drain`. Calls are first checked by `limits.access`
/// (token and role from the headers, the caller's own cap of calls in flight), without reading
/// their body; requests over the concurrency limit are then shed (`RESOURCE_EXHAUSTED` with a
/// retry hint); calls, keepalive and connections are bounded in time and streams per
/// connection; and requests tonic cannot decode are answered
/// `INVALID_ARGUMENT` or `RESOURCE_EXHAUSTED` ([`DecodeStatusLayer`]).
///
/// Health: the empty service name (liveness) is SERVING while the process runs; each of
/// `services` (readiness) is SERVING only while every store of `readiness` answers, checked
/// every two seconds, so a replica that lost its database stops getting traffic without being
/// restarted. The bus is not part of it: the outbox keeps accepting while NATS is away.
pub async fn serve_with(
    listener: TcpListener,
    routes: Routes,
    services: &[&str],
    readiness: Readiness,
    shutdown: CancellationToken,
    drain: Duration,
    limits: ServerLimits,
) -> anyhow::Result<()> {
    let ServerLimits {
        access,
        concurrency: limit,
        connection: limits,
        tls,
    } = limits;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let ready = readiness.ready().await;
    for name in services {
        reporter.set_service_status(*name, serving(ready)).await;
    }
    let follow = {
        let reporter = reporter.clone();
        let names: Vec<String> = services.iter().map(|s| s.to_string()).collect();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut last = ready;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(READINESS_PERIOD) => {}
                    _ = shutdown.cancelled() => return,
                }
                let now = readiness.ready().await;
                if now != last && !shutdown.is_cancelled() {
                    tracing::warn!(
                        ready = now,
                        "gRPC readiness changed with the stores' reachability"
                    );
                    for name in &names {
                        reporter.set_service_status(name, serving(now)).await;
                    }
                    last = now;
                }
            }
        })
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(agriportal_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let routes = routes.add_service(health).add_service(reflection);

    let names: Vec<String> = std::iter::once(String::new())
        .chain(services.iter().map(|s| s.to_string()))
        .collect();
    let stopping = shutdown.clone();
    let signal = async move {
        stopping.cancelled().await;
        for name in &names {
            reporter
                .set_service_status(name, tonic_health::ServingStatus::NotServing)
                .await;
        }
    };
    // Every gRPC service name this server answers, so the metrics layer labels their calls
    // and counts anything else as `unknown` (raw paths must never become labels).
    let known: Vec<String> = services
        .iter()
        .map(|s| s.to_string())
        .chain([
            "grpc.health.v1.Health".to_string(),
            "grpc.reflection.v1.ServerReflection".to_string(),
        ])
        .collect();
    let server = tonic::transport::Server::builder()
        // Time limits: a call that never sends its body, a peer that vanished and a connection
        // kept forever all end, so none holds a request slot or a socket indefinitely.
        .timeout(limits.request_timeout)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        // At its age a connection gets GOAWAY: no new streams, and it closes once its calls
        // end, which the request timeout bounds. No `max_connection_age_grace`: in tonic
        // 0.14.9 setting it skips the GOAWAY altogether and cuts the connection at age +
        // grace, in-flight calls included (tests/integration/connections.rs shows both).
        .max_connection_age(limits.max_connection_age)
        // Advertised to the client (HTTP/2 SETTINGS) and enforced by the server's HTTP/2 layer:
        // one connection cannot take every slot of the process-wide limit.
        .max_concurrent_streams(limits.max_streams_per_connection)
        .layer(TraceLayer)
        // Outside the concurrency limit, so shed calls are counted too.
        .layer(GrpcMetricsLayer::new(known))
        // Before the process-wide limit: a call is authenticated from its headers and held to
        // its caller's share of the slots before it may take one of them.
        .layer(access)
        .layer(limit)
        .layer(DecodeStatusLayer)
        .add_routes(routes);
    // The same server either way; with TLS, connections come through the handshake first
    // (each in its own task, bounded by the handshake timeout), with HTTP/2 by ALPN.
    let server = match tls {
        None => Either::Left(server.serve_with_incoming_shutdown(incoming(listener), signal)),
        Some(tls) => Either::Right(server.serve_with_incoming_shutdown(
            tls.incoming(listener, crate::tls::ALPN_GRPC, shutdown.clone())?,
            signal,
        )),
    };
    let served = bounded_drain(server, shutdown, drain).await;
    follow.abort();
    served
}

/// Accepted connections with Nagle's algorithm off. `Server::tcp_nodelay` only applies to
/// listeners tonic binds itself; without it a response written in two pieces (headers, then
/// data and trailers) may wait for the client's delayed ACK, 40 ms on Linux.
fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

fn serving(ready: bool) -> tonic_health::ServingStatus {
    if ready {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    }
}

/// Runs a server future; once `shutdown` fires it gets `drain` to finish, then is dropped.
pub async fn bounded_drain<F, E>(
    server: F,
    shutdown: CancellationToken,
    drain: Duration,
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result.map_err(Into::into),
        _ = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
            tracing::warn!(?drain, "drain period over; dropping remaining connections");
            Ok(())
        }
    }
}

/// Rewrites the statuses tonic itself produces when it cannot decode a request, before any
/// handler runs, into the platform's vocabulary: a malformed body is the caller's mistake
/// (`INVALID_ARGUMENT`, not `INTERNAL`, which tonic answers and which tells the caller nothing
/// and pages an operator), and a message over the rpc's size limit (at most [`MAX_DECODED_BYTES`]) is a size limit
/// (`RESOURCE_EXHAUSTED` naming it, not `OUT_OF_RANGE`).
///
/// tonic answers such failures "trailers-only" (the status in the response headers), which is
/// where this layer looks; every other response passes untouched. Handlers never produce these
/// statuses themselves: their internal errors carry a generic message
/// ([`Error::internal`]), and `OUT_OF_RANGE` is not in [`crate::ErrorCode`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeStatusLayer;

impl<S> tower::Layer<S> for DecodeStatusLayer {
    type Service = DecodeStatus<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DecodeStatus { inner }
    }
}

/// The service of [`DecodeStatusLayer`].
#[derive(Clone, Debug)]
pub struct DecodeStatus<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for DecodeStatus<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let rpc = request.uri().path().to_string();
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            rewrite_decode_failure(&rpc, &mut response);
            Ok(response)
        })
    }
}

fn rewrite_decode_failure<R>(rpc: &str, response: &mut http::Response<R>) {
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return;
    };
    let Some(error) = decode_failure(rpc, status.code(), status.message()) else {
        return;
    };
    tracing::debug!(rpc, tonic = %status.message(), "request could not be decoded");
    let status = tonic::Status::from(error);
    let headers = response.headers_mut();
    headers.remove(tonic::Status::GRPC_MESSAGE);
    headers.remove(tonic::Status::GRPC_STATUS_DETAILS);
    if status.add_header(headers).is_err() {
        // Our own messages are plain text and always encodable; should one not be, the
        // original status (still in place but for its message) is better than none.
        headers.insert(
            tonic::Status::GRPC_STATUS,
            http::HeaderValue::from(status.code() as i32),
        );
    }
    response.extensions_mut().insert(status);
}

/// The platform error for a status tonic produced while decoding a request to `rpc`, or `None`
/// when the status is not one of those.
pub fn decode_failure(rpc: &str, code: tonic::Code, message: &str) -> Option<Error> {
    use tonic::Code;
    const PROTOBUF: &str = "failed to decode Protobuf message";
    const TOO_LARGE: &str = "Error, decoded message length too large";
    match code {
        Code::Internal => {
            let detail = if let Some(rest) = message.strip_prefix(PROTOBUF) {
                let rest = rest.trim_start_matches(':').trim();
                format!("is not a valid protobuf message for this rpc ({rest})")
            } else if message.starts_with("Unexpected EOF decoding stream") {
                "ends inside a gRPC message frame (the request was truncated)".to_string()
            } else if message.starts_with("Missing request message") {
                "carries no message; a unary rpc takes exactly one".to_string()
            } else if message.starts_with("protocol error: received message with") {
                let rest = message.trim_start_matches("protocol error: received message with");
                format!("has a malformed gRPC frame (message with{rest})")
            } else if message.starts_with("Error decompressing") {
                format!("could not be decompressed ({message})")
            } else {
                return None;
            };
            Some(Error::invalid(format!("the request to {rpc} {detail}")))
        }
        Code::OutOfRange if message.starts_with(TOO_LARGE) => {
            // "…: found {len} bytes, the limit is: {limit} bytes". The limit is the rpc's own
            // (an ingest rpc's is its batch size), so it is read back rather than assumed.
            let number_after = |marker: &str| {
                message
                    .split(marker)
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            };
            let found = number_after("found ").unwrap_or("more than the limit of");
            let limit = number_after("the limit is: ")
                .map(str::to_owned)
                .unwrap_or_else(|| MAX_DECODED_BYTES.to_string());
            Some(Error::exhausted(format!(
                "the request to {rpc} is a message of {found} bytes; the limit is {limit} bytes \
                 per message for this rpc: split it"
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn decode_failures_become_invalid_argument() {
        let rpc = "/agriportal.marketplace.v1.MarketplaceIngest/PushSales";
        let err = decode_failure(
            rpc,
            tonic::Code::Internal,
            "failed to decode Protobuf message: PushSalesRequest.batch_id: invalid wire type: Varint (expected LengthDelimited)",
        )
        .expect("mapped");
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.contains("PushSales") && err.message.contains("invalid wire type"));
        for message in [
            "Unexpected EOF decoding stream.",
            "Missing request message.",
            "protocol error: received message with compressed-flag but no grpc-encoding was specified",
        ] {
            let err = decode_failure(rpc, tonic::Code::Internal, message).expect(message);
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{message}");
        }
        let err = decode_failure(
            rpc,
            tonic::Code::OutOfRange,
            "Error, decoded message length too large: found 20000000 bytes, the limit is: 16777216 bytes",
        )
        .expect("mapped");
        assert_eq!(err.code, ErrorCode::ResourceExhausted);
        assert!(err.message.contains("20000000") && err.message.contains("16777216"));
        // The rpc's own limit, as tonic reports it, is the one named.
        let err = decode_failure(
            rpc,
            tonic::Code::OutOfRange,
            "Error, decoded message length too large: found 4194305 bytes, the limit is: 4194304 bytes",
        )
        .expect("mapped");
        assert!(
            err.message
                .contains("4194305 bytes; the limit is 4194304 bytes"),
            "{}",
            err.message
        );
        // Anything else is left alone, in particular our own generic internal errors.
        assert!(decode_failure(
            rpc,
            tonic::Code::Internal,
            "internal error; it has been logged"
        )
        .is_none());
        assert!(decode_failure(
            rpc,
            tonic::Code::NotFound,
            "failed to decode Protobuf message"
        )
        .is_none());
    }
}
