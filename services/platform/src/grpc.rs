//! gRPC server plumbing shared by every service: health, reflection, tracing, size limits, and
//! a drain-bounded graceful shutdown.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::telemetry::TraceLayer;

/// Largest request the server decodes. Services refuse batches above their own, smaller limit
/// with a message naming it; this outer bound only protects memory.
pub const MAX_DECODED_BYTES: usize = 16 * 1024 * 1024;

/// Serves `routes` plus gRPC health (each of `services` and the empty name reported SERVING)
/// and reflection on `listener` until `shutdown` fires, then lets in-flight calls finish for at
/// most `drain`.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    services: &[&str],
    shutdown: CancellationToken,
    drain: Duration,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    for name in services {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
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
    let server = tonic::transport::Server::builder()
        .layer(TraceLayer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal);
    bounded_drain(server, shutdown, drain).await
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
