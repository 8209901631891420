//! A partner's gRPC client, as the demo, the benchmark and the tests use it: bearer token and
//! W3C trace context in the metadata of every call.

use agriportal_platform::telemetry::inject_metadata;
use agriportal_proto::marketplace::v1::marketplace_ingest_client::MarketplaceIngestClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Adds `authorization: Bearer <token>` and the current trace context to each request.
#[derive(Clone)]
pub struct Bearer {
    value: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Bearer {
    /// With `token`, or without any credential when `None`.
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        let value = token.map(|t| format!("Bearer {t}").parse()).transpose()?;
        Ok(Bearer { value })
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.value {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        inject_metadata(request.metadata_mut());
        Ok(request)
    }
}

/// A partner's client of `MarketplaceIngest`.
pub type PartnerClient = MarketplaceIngestClient<InterceptedService<Channel, Bearer>>;

/// Connects to the gRPC server at `addr` (`host:port`) with `token`.
pub async fn partner_client(addr: &str, token: Option<&str>) -> anyhow::Result<PartnerClient> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(60))
        .connect()
        .await?;
    Ok(
        MarketplaceIngestClient::with_interceptor(channel, Bearer::new(token)?)
            .max_encoding_message_size(64 * 1024 * 1024)
            .max_decoding_message_size(64 * 1024 * 1024),
    )
}
